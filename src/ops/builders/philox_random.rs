//! `philox_random`: the accelerators' Philox4x32-10 generator on the GPU, producing the same
//! bits as the CPU accelerator for the same seed and offset (`docs/accelerators.md`).
//!
//! Kernels are listed in `kernels/cuda/philox_random.cu`.

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, SourceFile, s, src};

/// The header every CUDA op that draws from the accelerators' Philox4x32-10 generator
/// (`philox_random`, `cuda_quantizer`) compiles with: the generator's block function.
pub const PHILOX_HEADERS: &[SourceFile] = &[src(
    "include/dsrs_philox.cuh",
    include_str!("../../../kernels/include/dsrs_philox.cuh"),
)];

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("philox_random"),
    kind: OpKind::Cuda,
    description: s("Philox4x32-10 random fills on the GPU, bit-identical to the CPU generator"),
    sources: Cow::Borrowed(&[src(
        "cuda/philox_random.cu",
        include_str!("../../../kernels/cuda/philox_random.cu"),
    )]),
    headers: Cow::Borrowed(PHILOX_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_philox_bits_u32"),
        s("dsrs_philox_bits_u64"),
        s("dsrs_philox_uniform_f32"),
        s("dsrs_philox_uniform_f64"),
        s("dsrs_philox_uniform_f16"),
        s("dsrs_philox_uniform_bf16"),
        s("dsrs_philox_normal_f32"),
        s("dsrs_philox_normal_f64"),
        s("dsrs_philox_normal_f16"),
        s("dsrs_philox_normal_bf16"),
    ]),
    min_compute_capability: (7, 0),
};
