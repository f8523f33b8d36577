//! `fused_lion`: Lion on the GPU over many tensors per launch (multi-tensor apply, DeepSpeed's
//! `cpu_lion` semantics), fp32, fp16 or bf16 parameters, fp32 or parameter-dtype gradients,
//! an fp32 momentum, vectorized loads; compiled by NVRTC for the device's compute
//! capability. Driven by `ops::optim::cuda::lion_step`.
//!
//! Kernels: `dsrs_fused_lion_<params>_<grads>` for every supported dtype pair (see
//! `kernels/cuda/fused_lion.cu`).

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("fused_lion"),
    kind: OpKind::Cuda,
    description: s("Lion on the GPU, multi-tensor, fp32/fp16/bf16 parameters, fp32 momentum"),
    sources: Cow::Borrowed(&[src(
        "cuda/fused_lion.cu",
        include_str!("../../../kernels/cuda/fused_lion.cu"),
    )]),
    headers: Cow::Borrowed(super::fused_adam::MT_APPLY_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_fused_lion_f32_f32"),
        s("dsrs_fused_lion_f32_f16"),
        s("dsrs_fused_lion_f32_bf16"),
        s("dsrs_fused_lion_f16_f16"),
        s("dsrs_fused_lion_f16_f32"),
        s("dsrs_fused_lion_bf16_bf16"),
        s("dsrs_fused_lion_bf16_f32"),
    ]),
    min_compute_capability: (7, 0),
};
