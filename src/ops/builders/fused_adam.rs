//! `fused_adam`: Adam/AdamW on the GPU, fp32 and bf16 parameters with fp32 states,
//! vectorized loads; compiled by NVRTC for the device's compute capability.
//!
//! Kernels: `dsrs_fused_adam_f32`, `dsrs_fused_adam_bf16` (see `kernels/cuda/fused_adam.cu`).

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("fused_adam"),
    kind: OpKind::Cuda,
    description: s("Adam/AdamW on the GPU, fp32/bf16 parameters, fp32 states"),
    sources: Cow::Borrowed(&[src(
        "cuda/fused_adam.cu",
        include_str!("../../../kernels/cuda/fused_adam.cu"),
    )]),
    headers: Cow::Borrowed(&[]),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[s("dsrs_fused_adam_f32"), s("dsrs_fused_adam_bf16")]),
    min_compute_capability: (7, 0),
};
