//! `fused_adam`: Adam/AdamW on the GPU over many tensors per launch (multi-tensor apply),
//! fp32, fp16 or bf16 parameters, fp32 or parameter-dtype gradients, fp32 states, vectorized
//! loads; compiled by NVRTC for the device's compute capability. Driven by
//! `ops::optim::cuda::adam_step`.
//!
//! Kernels: `dsrs_fused_adam_<params>_<grads>` for every supported dtype pair (see
//! `kernels/cuda/fused_adam.cu`).

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("fused_adam"),
    kind: OpKind::Cuda,
    description: s("Adam/AdamW on the GPU, multi-tensor, fp32/fp16/bf16 parameters, fp32 states"),
    sources: Cow::Borrowed(&[src(
        "cuda/fused_adam.cu",
        include_str!("../../../kernels/cuda/fused_adam.cu"),
    )]),
    headers: Cow::Borrowed(&[]),
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
