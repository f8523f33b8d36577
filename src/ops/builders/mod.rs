//! The built-in ops (DeepSpeed's `ALL_OPS`): one file per op, each a `const` [`OpSpec`]
//! whose sources live under `kernels/` and are embedded in the library.
//!
//! To add an op: write its sources under `kernels/cpu/` or `kernels/cuda/`, add a file here
//! with its `SPEC`, and list it in [`ALL`]. The build script reads this module too, to
//! compile the CPU ops ahead of time (`DSRS_BUILD_OPS=1`), so these files must use nothing
//! but `std` and [`super::spec`].

pub mod cpu_adagrad;
pub mod cpu_adam;
pub mod cpu_lion;
pub mod cpu_quantizer;
pub mod cuda_quantizer;
pub mod fused_adam;
pub mod fused_lamb;
pub mod fused_lion;
pub mod philox_random;

#[allow(unused_imports)]
use super::spec::OpSpec;

/// Every built-in op, in `dsrs report` order.
pub const ALL: &[&OpSpec] = &[
    &cpu_adam::SPEC,
    &cpu_adagrad::SPEC,
    &cpu_lion::SPEC,
    &cpu_quantizer::SPEC,
    &fused_adam::SPEC,
    &fused_lamb::SPEC,
    &fused_lion::SPEC,
    &cuda_quantizer::SPEC,
    &philox_random::SPEC,
];
