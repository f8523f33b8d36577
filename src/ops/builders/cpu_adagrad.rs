//! `cpu_adagrad`: DeepSpeed's CPU Adagrad step: fp32, fp16 or bf16 parameters with fp32 state,
//! an optional fp16/bf16 copy of the updated parameters, SIMD at the machine's level,
//! OpenMP threads.
//!
//! Exports `dsrs_cpu_adagrad_step` and `dsrs_cpu_adagrad_simd_level`; the signatures are in
//! `kernels/include/dsrs_cpu_adagrad.h`.

use std::borrow::Cow;

use super::super::spec::{OpKind, OpSpec, s, src};

/// The op's description.
pub const SPEC: OpSpec = OpSpec {
    name: s("cpu_adagrad"),
    kind: OpKind::Cpu,
    description: s(
        "Adagrad step on the CPU (DeepSpeed semantics), fp32/fp16/bf16 params, SIMD + OpenMP",
    ),
    sources: Cow::Borrowed(&[src(
        "cpu/cpu_adagrad.cpp",
        include_str!("../../../kernels/cpu/cpu_adagrad.cpp"),
    )]),
    headers: Cow::Borrowed(super::cpu_adam::OPTIM_HEADERS),
    include_dirs: Cow::Borrowed(&[]),
    defines: Cow::Borrowed(&[]),
    flags: Cow::Borrowed(&[]),
    symbols: Cow::Borrowed(&[s("dsrs_cpu_adagrad_step"), s("dsrs_cpu_adagrad_simd_level")]),
    min_compute_capability: (0, 0),
};
