//! `cpu_adam`: DeepSpeed's CPU Adam/AdamW step (ZeRO-Offload's optimizer): fp32, fp16 or
//! bf16 parameters with fp32 states, an optional fp16/bf16 copy of the updated parameters,
//! SIMD at the machine's level (AVX-512 / AVX2+F16C / NEON / scalar), OpenMP threads.
//!
//! Exports `dsrs_cpu_adam_step`, `dsrs_cpu_adam_step_f32`, `dsrs_cpu_adam_simd_level` and
//! `dsrs_cpu_adam_max_threads`; the signatures are in `kernels/include/dsrs_cpu_adam.h`.

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The headers every CPU optimizer op compiles with.
pub const OPTIM_HEADERS: &[super::super::spec::SourceFile] = &[
    src(
        "include/dsrs_simd.h",
        include_str!("../../../kernels/include/dsrs_simd.h"),
    ),
    src(
        "include/dsrs_cpu_optim.h",
        include_str!("../../../kernels/include/dsrs_cpu_optim.h"),
    ),
    src(
        "include/dsrs_cpu_adam.h",
        include_str!("../../../kernels/include/dsrs_cpu_adam.h"),
    ),
    src(
        "include/dsrs_cpu_adagrad.h",
        include_str!("../../../kernels/include/dsrs_cpu_adagrad.h"),
    ),
    src(
        "include/dsrs_cpu_lion.h",
        include_str!("../../../kernels/include/dsrs_cpu_lion.h"),
    ),
];

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("cpu_adam"),
    kind: OpKind::Cpu,
    description: s(
        "Adam/AdamW step on the CPU (DeepSpeed semantics), fp32/fp16/bf16 params, SIMD + OpenMP",
    ),
    sources: Cow::Borrowed(&[src(
        "cpu/cpu_adam.cpp",
        include_str!("../../../kernels/cpu/cpu_adam.cpp"),
    )]),
    headers: Cow::Borrowed(OPTIM_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[
        s("dsrs_cpu_adam_step"),
        s("dsrs_cpu_adam_step_f32"),
        s("dsrs_cpu_adam_simd_level"),
        s("dsrs_cpu_adam_max_threads"),
    ]),
    min_compute_capability: (0, 0),
};
