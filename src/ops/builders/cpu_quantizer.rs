//! `cpu_quantizer`: group-wise int8 / packed int4 quantization and dequantization of fp32,
//! fp16 and bf16 tensors on the CPU, symmetric or asymmetric, rounding to nearest or
//! stochastically (Philox), for any group size; SIMD at the machine's level (AVX-512,
//! AVX2, scalar), OpenMP threads. Bit-identical to the `cuda_quantizer` op and to the
//! pure-Rust reference (`docs/quantizer.md`).
//!
//! Exports `dsrs_quantizer_quantize`, `dsrs_quantizer_dequantize`,
//! `dsrs_quantizer_simd_level` and `dsrs_quantizer_max_threads`; the signatures are in
//! `kernels/include/dsrs_quantizer.h`.

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("cpu_quantizer"),
    kind: OpKind::Cpu,
    description: s(
        "group-wise int8/int4 quantization on the CPU (symmetric/asymmetric, nearest/stochastic), SIMD + OpenMP",
    ),
    sources: Cow::Borrowed(&[src(
        "cpu/quantizer.cpp",
        include_str!("../../../kernels/cpu/quantizer.cpp"),
    )]),
    headers: Cow::Borrowed(&[src(
        "include/dsrs_quantizer.h",
        include_str!("../../../kernels/include/dsrs_quantizer.h"),
    )]),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_quantizer_quantize"),
        s("dsrs_quantizer_dequantize"),
        s("dsrs_quantizer_simd_level"),
        s("dsrs_quantizer_max_threads"),
    ]),
    min_compute_capability: (0, 0),
};
