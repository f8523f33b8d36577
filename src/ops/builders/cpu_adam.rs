//! `cpu_adam`: DeepSpeed's CPU Adam/AdamW step (ZeRO-Offload's optimizer), fp32 parameters
//! and states, SIMD through the compiler at the machine's level, OpenMP threads.
//!
//! Exports `dsrs_cpu_adam_step_f32`, `dsrs_cpu_adam_simd_level` and
//! `dsrs_cpu_adam_max_threads`; the signatures are in `kernels/include/dsrs_cpu_adam.h`.

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("cpu_adam"),
    kind: OpKind::Cpu,
    description: s("Adam/AdamW step on the CPU (DeepSpeed semantics), fp32, SIMD + OpenMP"),
    sources: Cow::Borrowed(&[src(
        "cpu/cpu_adam.cpp",
        include_str!("../../../kernels/cpu/cpu_adam.cpp"),
    )]),
    headers: Cow::Borrowed(&[src(
        "include/dsrs_cpu_adam.h",
        include_str!("../../../kernels/include/dsrs_cpu_adam.h"),
    )]),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_cpu_adam_step_f32"),
        s("dsrs_cpu_adam_simd_level"),
        s("dsrs_cpu_adam_max_threads"),
    ]),
    min_compute_capability: (0, 0),
};
