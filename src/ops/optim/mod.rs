//! Optimizer steps: Adam/AdamW, Adagrad and Lion on the CPU (the `cpu_adam`, `cpu_adagrad`
//! and `cpu_lion` ops), Adam, LAMB and Lion on CUDA (the multi-tensor `fused_adam`,
//! `fused_lamb` and `fused_lion` ops), and a pure-Rust [`reference`](mod@reference) of each, used when an
//! op cannot be built and as the reference of the tests.
//!
//! Every implementation of one optimizer evaluates the same IEEE float operations in the
//! same order (no fused multiply-add), so the kernels at every SIMD level, the CUDA kernels
//! and the reference agree bit for bit (the exception, bf16 subnormals on AVX-512 BF16
//! hardware, is in `docs/optimizers.md`, with the formulas).
//!
//! Parameters are fp32, fp16 or bf16; optimizer states are always fp32. On the CPU a step
//! can also write a low-precision copy of the updated parameters (DeepSpeed's "param
//! copy" for ZeRO-Offload) in the same pass, and every step divides the gradients by a
//! `grad_scale` (the loss scale times the accumulation steps) inside the pass, so unscaling
//! costs no extra pass over memory.

pub mod cpu;
pub mod cuda;
pub mod lamb;
pub mod reference;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::BuildOptions;

/// Which implementation runs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The op's kernel; when the op cannot be built, the pure-Rust reference (with one
    /// warning per op and process).
    #[default]
    Auto,
    /// The op's kernel only: a build failure is an error.
    Kernel,
    /// The pure-Rust reference only (never builds anything).
    Reference,
}

/// What actually ran a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// The op's kernel, with its SIMD level (`avx512`, `avx2`, `neon`, `scalar`) or CUDA
    /// target (`sm_90`).
    Kernel(String),
    /// The pure-Rust reference.
    Reference,
}

/// How a CPU step is executed.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    /// Kernel, reference, or kernel with the reference as fallback.
    pub backend: Backend,
    /// Threads for the kernel (0: the OpenMP default, `OMP_NUM_THREADS` or all CPUs).
    pub num_threads: usize,
    /// How the op is built and loaded (SIMD level, cache, ...).
    pub build: BuildOptions,
}

/// Adam / AdamW hyper-parameters for one step (DeepSpeed's `DeepSpeedCPUAdam` and
/// `FusedAdam`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamParams {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// In [0, 1).
    pub beta1: f32,
    /// In [0, 1).
    pub beta2: f32,
    /// Finite and > 0.
    pub eps: f32,
    /// Finite and >= 0.
    pub weight_decay: f32,
    /// Decoupled weight decay (AdamW) instead of L2 added to the gradient.
    pub adamw_mode: bool,
    /// Divide the moments by `1 - beta^step`.
    pub bias_correction: bool,
    /// The step being taken, 1-based.
    pub step: u64,
    /// The gradients are divided by this (multiplied by its reciprocal rounded to float, as
    /// DeepSpeed unscales); finite and > 0, 1 for none.
    pub grad_scale: f32,
}

impl Default for AdamParams {
    fn default() -> AdamParams {
        AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            adamw_mode: true,
            bias_correction: true,
            step: 1,
            grad_scale: 1.0,
        }
    }
}

/// Adagrad hyper-parameters (DeepSpeed's `DeepSpeedCPUAdagrad`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdagradParams {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// Finite and > 0.
    pub eps: f32,
    /// L2 weight decay (added to the gradient that feeds the accumulator), finite and >= 0.
    pub weight_decay: f32,
    /// As [`AdamParams::grad_scale`].
    pub grad_scale: f32,
}

impl Default for AdagradParams {
    fn default() -> AdagradParams {
        AdagradParams {
            lr: 1e-2,
            eps: 1e-10,
            weight_decay: 0.0,
            grad_scale: 1.0,
        }
    }
}

/// Lion hyper-parameters (DeepSpeed's `DeepSpeedCPULion` and `FusedLion`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LionParams {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// In [0, 1].
    pub beta1: f32,
    /// In [0, 1].
    pub beta2: f32,
    /// Decoupled weight decay, finite and >= 0.
    pub weight_decay: f32,
    /// As [`AdamParams::grad_scale`].
    pub grad_scale: f32,
}

impl Default for LionParams {
    fn default() -> LionParams {
        LionParams {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
            grad_scale: 1.0,
        }
    }
}

fn check(
    ok: bool,
    what: &str,
    field: &str,
    value: impl std::fmt::Display,
    rule: &str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what}: {field} = {value} is out of range: it must be {rule}"
        )))
    }
}

pub(crate) fn check_lr(what: &str, lr: f32) -> Result<()> {
    check(
        lr.is_finite() && lr >= 0.0,
        what,
        "lr",
        lr,
        "finite and >= 0",
    )
}

pub(crate) fn check_beta(what: &str, field: &str, b: f32, closed: bool) -> Result<()> {
    if closed {
        check((0.0..=1.0).contains(&b), what, field, b, "in [0, 1]")
    } else {
        check((0.0..1.0).contains(&b), what, field, b, "in [0, 1)")
    }
}

pub(crate) fn check_eps(what: &str, eps: f32) -> Result<()> {
    check(
        eps.is_finite() && eps > 0.0,
        what,
        "eps",
        eps,
        "finite and > 0",
    )
}

pub(crate) fn check_wd(what: &str, wd: f32) -> Result<()> {
    check(
        wd.is_finite() && wd >= 0.0,
        what,
        "weight_decay",
        wd,
        "finite and >= 0",
    )
}

pub(crate) fn check_grad_scale(what: &str, s: f32) -> Result<()> {
    check(
        s.is_finite() && s > 0.0,
        what,
        "grad_scale",
        s,
        "finite and > 0 (1 for no scaling)",
    )
}

impl AdamParams {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        let w = "adam";
        check_lr(w, self.lr)?;
        check_beta(w, "beta1", self.beta1, false)?;
        check_beta(w, "beta2", self.beta2, false)?;
        check_eps(w, self.eps)?;
        check_wd(w, self.weight_decay)?;
        check(
            self.step >= 1 && self.step <= i64::MAX as u64,
            w,
            "step",
            self.step,
            ">= 1 (steps are counted from 1)",
        )?;
        check_grad_scale(w, self.grad_scale)
    }

    /// The bias corrections `(bc1, bc2)` as every implementation derives them: in double,
    /// `bc1 = 1 - beta1^step` and `bc2 = 1 / sqrt(1 - beta2^step)` (both 1 without bias
    /// correction), then rounded to float.
    pub fn bias_corrections(&self) -> (f32, f32) {
        if !self.bias_correction {
            return (1.0, 1.0);
        }
        let step = self.step as f64;
        let bc1 = 1.0 - f64::from(self.beta1).powf(step);
        let bc2 = 1.0 / (1.0 - f64::from(self.beta2).powf(step)).sqrt();
        (bc1 as f32, bc2 as f32)
    }
}

impl AdagradParams {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        let w = "adagrad";
        check_lr(w, self.lr)?;
        check_eps(w, self.eps)?;
        check_wd(w, self.weight_decay)?;
        check_grad_scale(w, self.grad_scale)
    }
}

impl LionParams {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        let w = "lion";
        check_lr(w, self.lr)?;
        check_beta(w, "beta1", self.beta1, true)?;
        check_beta(w, "beta2", self.beta2, true)?;
        check_wd(w, self.weight_decay)?;
        check_grad_scale(w, self.grad_scale)
    }
}

/// The multiplier every implementation applies to the gradients: `1 / grad_scale`,
/// computed in double and rounded to float (exactly 1 for a scale of 1, exact for powers
/// of two).
pub fn inv_grad_scale(grad_scale: f32) -> f32 {
    (1.0 / f64::from(grad_scale)) as f32
}

/// Parameters updated in place: fp32, fp16 or bf16.
#[derive(Debug)]
pub enum ParamsMut<'a> {
    /// fp32.
    F32(&'a mut [f32]),
    /// fp16.
    F16(&'a mut [f16]),
    /// bf16.
    BF16(&'a mut [bf16]),
}

/// Gradients: fp32, fp16 or bf16.
#[derive(Debug, Clone, Copy)]
pub enum GradsRef<'a> {
    /// fp32.
    F32(&'a [f32]),
    /// fp16.
    F16(&'a [f16]),
    /// bf16.
    BF16(&'a [bf16]),
}

/// Gradients a step may zero after reading them: fp32, fp16 or bf16.
#[derive(Debug)]
pub enum GradsMut<'a> {
    /// fp32.
    F32(&'a mut [f32]),
    /// fp16.
    F16(&'a mut [f16]),
    /// bf16.
    BF16(&'a mut [bf16]),
}

impl GradsMut<'_> {
    /// A shared view of the same gradients.
    pub fn as_ref(&self) -> GradsRef<'_> {
        match self {
            GradsMut::F32(s) => GradsRef::F32(s),
            GradsMut::F16(s) => GradsRef::F16(s),
            GradsMut::BF16(s) => GradsRef::BF16(s),
        }
    }

    /// Sets every gradient to zero.
    pub fn zero(&mut self) {
        match self {
            GradsMut::F32(s) => s.fill(0.0),
            GradsMut::F16(s) => s.fill(f16::ZERO),
            GradsMut::BF16(s) => s.fill(bf16::ZERO),
        }
    }
}

/// The gradients of a CPU step: only read, or read and then zeroed in the same pass (the
/// training engine's `zero_grad` fused into the step: each tile is zeroed right after the
/// kernel read it, while it is in cache). The step's results are the same either way.
#[derive(Debug)]
pub enum StepGrads<'a> {
    /// Read only.
    Read(GradsRef<'a>),
    /// Read, then set to zero.
    ReadAndZero(GradsMut<'a>),
}

impl<'a> From<GradsRef<'a>> for StepGrads<'a> {
    fn from(g: GradsRef<'a>) -> Self {
        StepGrads::Read(g)
    }
}

impl<'a> From<GradsMut<'a>> for StepGrads<'a> {
    fn from(g: GradsMut<'a>) -> Self {
        StepGrads::ReadAndZero(g)
    }
}

impl StepGrads<'_> {
    /// A shared view of the gradients.
    pub fn as_ref(&self) -> GradsRef<'_> {
        match self {
            StepGrads::Read(g) => *g,
            StepGrads::ReadAndZero(g) => g.as_ref(),
        }
    }

    /// Whether the step zeroes them.
    pub fn zeroes(&self) -> bool {
        matches!(self, StepGrads::ReadAndZero(_))
    }
}

/// The low-precision copy of the updated parameters a CPU step may write.
#[derive(Debug)]
pub enum CopyMut<'a> {
    /// fp16.
    F16(&'a mut [f16]),
    /// bf16.
    BF16(&'a mut [bf16]),
}

impl ParamsMut<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            ParamsMut::F32(s) => s.len(),
            ParamsMut::F16(s) => s.len(),
            ParamsMut::BF16(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            ParamsMut::F32(_) => DType::F32,
            ParamsMut::F16(_) => DType::F16,
            ParamsMut::BF16(_) => DType::BF16,
        }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            ParamsMut::F32(s) => s.as_mut_ptr().cast(),
            ParamsMut::F16(s) => s.as_mut_ptr().cast(),
            ParamsMut::BF16(s) => s.as_mut_ptr().cast(),
        }
    }
}

impl GradsRef<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            GradsRef::F32(s) => s.len(),
            GradsRef::F16(s) => s.len(),
            GradsRef::BF16(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            GradsRef::F32(_) => DType::F32,
            GradsRef::F16(_) => DType::F16,
            GradsRef::BF16(_) => DType::BF16,
        }
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        match self {
            GradsRef::F32(s) => s.as_ptr().cast(),
            GradsRef::F16(s) => s.as_ptr().cast(),
            GradsRef::BF16(s) => s.as_ptr().cast(),
        }
    }
}

impl CopyMut<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            CopyMut::F16(s) => s.len(),
            CopyMut::BF16(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CopyMut::F16(_) => DType::F16,
            CopyMut::BF16(_) => DType::BF16,
        }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            CopyMut::F16(s) => s.as_mut_ptr().cast(),
            CopyMut::BF16(s) => s.as_mut_ptr().cast(),
        }
    }
}

/// The dtype combinations the optimizer kernels take: gradients in the parameters' dtype
/// or fp32 (fp32 parameters also take fp16/bf16 gradients, the mixed-precision master
/// weights' case); a copy only of fp32 parameters, in fp16 or bf16.
pub fn check_dtypes(what: &str, params: DType, grads: DType, copy: Option<DType>) -> Result<()> {
    let floats = [DType::F32, DType::F16, DType::BF16];
    if !floats.contains(&params) {
        return Err(Error::Unsupported(format!(
            "{what}: parameters of dtype {} are not supported (float32, float16 or bfloat16)",
            params.name()
        )));
    }
    let grads_ok =
        grads == params || grads == DType::F32 || (params == DType::F32 && floats.contains(&grads));
    if !grads_ok {
        return Err(Error::Unsupported(format!(
            "{what}: {} gradients with {} parameters are not supported (gradients must be fp32 or the parameters' dtype)",
            grads.name(),
            params.name()
        )));
    }
    if let Some(c) = copy {
        if params != DType::F32 {
            return Err(Error::Unsupported(format!(
                "{what}: a parameter copy needs fp32 parameters (the copy is the low-precision image of fp32 master weights), got {} parameters",
                params.name()
            )));
        }
        if c != DType::F16 && c != DType::BF16 {
            return Err(Error::Unsupported(format!(
                "{what}: a parameter copy must be fp16 or bf16, got {}",
                c.name()
            )));
        }
    }
    Ok(())
}

/// Checks that every array has `n` elements; names the first that does not.
pub(crate) fn check_len(what: &str, n: usize, arrays: &[(&str, usize)]) -> Result<()> {
    for (name, len) in arrays {
        if *len != n {
            return Err(Error::invalid(format!(
                "{what}: {name} has {len} elements but the parameters have {n}"
            )));
        }
    }
    Ok(())
}
