//! `fused_lamb`: LAMB on the GPU over many tensors per launch (multi-tensor apply,
//! DeepSpeed's `FusedLamb` semantics: a per-tensor trust ratio `||p|| / ||update||` clamped
//! to `[min_coeff, max_coeff]`), fp32, fp16 or bf16 parameters, fp32 or parameter-dtype
//! gradients, fp32 states; the norms are reduced deterministically in double. Compiled by
//! NVRTC for the device's compute capability; driven by `ops::optim::cuda::lamb_step`.
//!
//! Kernels (see `kernels/cuda/fused_lamb.cu`): `dsrs_fused_lamb_moments_<params>_<grads>`
//! (moments and per-chunk sums of squares), `dsrs_fused_lamb_ratios` (trust ratios),
//! `dsrs_fused_lamb_apply_<params>` (the parameter update).

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("fused_lamb"),
    kind: OpKind::Cuda,
    description: s(
        "LAMB on the GPU, multi-tensor, per-tensor trust ratios, fp32/fp16/bf16 parameters",
    ),
    sources: Cow::Borrowed(&[src(
        "cuda/fused_lamb.cu",
        include_str!("../../../kernels/cuda/fused_lamb.cu"),
    )]),
    headers: Cow::Borrowed(super::fused_adam::MT_APPLY_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_fused_lamb_moments_f32_f32"),
        s("dsrs_fused_lamb_moments_f32_f16"),
        s("dsrs_fused_lamb_moments_f32_bf16"),
        s("dsrs_fused_lamb_moments_f16_f16"),
        s("dsrs_fused_lamb_moments_f16_f32"),
        s("dsrs_fused_lamb_moments_bf16_bf16"),
        s("dsrs_fused_lamb_moments_bf16_f32"),
        s("dsrs_fused_lamb_ratios"),
        s("dsrs_fused_lamb_apply_f32"),
        s("dsrs_fused_lamb_apply_f16"),
        s("dsrs_fused_lamb_apply_bf16"),
    ]),
    min_compute_capability: (7, 0),
};
