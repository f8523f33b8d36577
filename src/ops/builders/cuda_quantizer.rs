//! `cuda_quantizer`: group-wise int8 / packed int4 quantization and dequantization on CUDA
//! (NVRTC), bit-identical to the `cpu_quantizer` op and the pure-Rust reference
//! (`docs/quantizer.md`). One block per group with a block-wide reduction that loops over
//! the group, so every group size works.
//!
//! Kernels are listed in `kernels/cuda/quantizer.cu`.

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("cuda_quantizer"),
    kind: OpKind::Cuda,
    description: s(
        "group-wise int8/int4 quantization on CUDA, bit-identical to cpu_quantizer, any group size",
    ),
    sources: Cow::Borrowed(&[src(
        "cuda/quantizer.cu",
        include_str!("../../../kernels/cuda/quantizer.cu"),
    )]),
    headers: Cow::Borrowed(super::philox_random::PHILOX_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_quantizer_quantize_f32"),
        s("dsrs_quantizer_quantize_f16"),
        s("dsrs_quantizer_quantize_bf16"),
        s("dsrs_quantizer_fixup_f32"),
        s("dsrs_quantizer_fixup_f16"),
        s("dsrs_quantizer_fixup_bf16"),
        s("dsrs_quantizer_dequantize_f32"),
        s("dsrs_quantizer_dequantize_f16"),
        s("dsrs_quantizer_dequantize_bf16"),
    ]),
    min_compute_capability: (7, 0),
};
