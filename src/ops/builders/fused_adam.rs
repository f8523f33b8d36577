//! `fused_adam`: Adam/AdamW on the GPU over many tensors per launch (multi-tensor apply),
//! fp32, fp16 or bf16 parameters, fp32 or parameter-dtype gradients, fp32 states, vectorized
//! loads; compiled by NVRTC for the device's compute capability. Driven by
//! `ops::optim::cuda::adam_step`.
//!
//! Kernels: `dsrs_fused_adam_<params>_<grads>` for every supported dtype pair (see
//! `kernels/cuda/fused_adam.cu`).

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, SourceFile, s, src};

/// The header every multi-tensor CUDA optimizer op (`fused_adam`, `fused_lamb`,
/// `fused_lion`) compiles with: the argument block, fp16/bf16 conversions and chunk loop
/// they share.
pub const MT_APPLY_HEADERS: &[SourceFile] = &[src(
    "include/dsrs_mt_apply.cuh",
    include_str!("../../../kernels/include/dsrs_mt_apply.cuh"),
)];

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("fused_adam"),
    kind: OpKind::Cuda,
    description: s("Adam/AdamW on the GPU, multi-tensor, fp32/fp16/bf16 parameters, fp32 states"),
    sources: Cow::Borrowed(&[src(
        "cuda/fused_adam.cu",
        include_str!("../../../kernels/cuda/fused_adam.cu"),
    )]),
    headers: Cow::Borrowed(MT_APPLY_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_fused_adam_f32_f32"),
        s("dsrs_fused_adam_f32_f16"),
        s("dsrs_fused_adam_f32_bf16"),
        s("dsrs_fused_adam_f16_f16"),
        s("dsrs_fused_adam_f16_f32"),
        s("dsrs_fused_adam_bf16_bf16"),
        s("dsrs_fused_adam_bf16_f32"),
    ]),
    min_compute_capability: (7, 0),
};
