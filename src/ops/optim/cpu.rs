//! The CPU optimizer ops (`cpu_adam`, `cpu_adagrad`, `cpu_lion`) called from Rust: load
//! once per build options, call through the op's C entry points, or fall back to the
//! [`reference`](mod@super::reference).
//!
//! The entry points and the structs they take are declared in
//! `kernels/include/dsrs_cpu_{optim,adam,adagrad,lion}.h`; the `#[repr(C)]` mirrors here
//! are checked against the documented layouts by unit tests.

use std::ffi::c_void;

use super::{
    AdagradParams, AdamParams, CopyMut, Exec, GradsRef, LionParams, ParamsMut, Ran, StepGrads,
    reference,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::kernels::{self, EntryPoints};

/// `DSRS_OPTIM_ZERO_GRADS` (dsrs_cpu_optim.h): the kernel zeroes the gradients after the
/// step has read them.
pub const ZERO_GRADS: i32 = 1;

/// `dsrs_cpu_optim_buffers` (dsrs_cpu_optim.h), 64 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KernelBuffers {
    /// Parameters, updated in place.
    pub params: *mut c_void,
    /// Gradients.
    pub grads: *const c_void,
    /// First state (Adam's `exp_avg`, Lion's momentum) or NULL.
    pub exp_avg: *mut f32,
    /// Second state (Adam's `exp_avg_sq`, Adagrad's sum of squares) or NULL.
    pub exp_avg_sq: *mut f32,
    /// The low-precision copy, or NULL.
    pub param_copy: *mut c_void,
    /// Elements.
    pub n: u64,
    /// `DSRS_OPTIM_*` of the parameters.
    pub params_dtype: i32,
    /// `DSRS_OPTIM_*` of the gradients.
    pub grads_dtype: i32,
    /// `DSRS_OPTIM_*` of the copy.
    pub copy_dtype: i32,
    /// 0, or [`ZERO_GRADS`]: zero the gradients after reading them.
    pub flags: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct AdamConfig {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    adamw_mode: i32,
    bias_correction: i32,
    step: i64,
    grad_scale: f32,
    num_threads: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct AdagradConfig {
    lr: f32,
    eps: f32,
    weight_decay: f32,
    grad_scale: f32,
    num_threads: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct LionConfig {
    lr: f32,
    beta1: f32,
    beta2: f32,
    weight_decay: f32,
    grad_scale: f32,
    num_threads: i32,
}

/// The dtype code of the optimizer ABI (`DSRS_OPTIM_F32` = 0, `F16` = 1, `BF16` = 2).
pub fn dtype_code(d: DType) -> Result<i32> {
    match d {
        DType::F32 => Ok(0),
        DType::F16 => Ok(1),
        DType::BF16 => Ok(2),
        other => Err(Error::Unsupported(format!(
            "optimizer tensors must be float32, float16 or bfloat16, got {}",
            other.name()
        ))),
    }
}

/// One optimizer op's entry point and SIMD level, resolved once.
#[derive(Clone)]
struct Kernel {
    step: usize,
    simd: String,
}

/// Which op: its name, step symbol and SIMD-level symbol.
#[derive(Clone, Copy)]
struct OpNames {
    op: &'static str,
    step: &'static str,
    level: &'static str,
}

const ADAM: OpNames = OpNames {
    op: "cpu_adam",
    step: "dsrs_cpu_adam_step",
    level: "dsrs_cpu_adam_simd_level",
};
const ADAGRAD: OpNames = OpNames {
    op: "cpu_adagrad",
    step: "dsrs_cpu_adagrad_step",
    level: "dsrs_cpu_adagrad_simd_level",
};
const LION: OpNames = OpNames {
    op: "cpu_lion",
    step: "dsrs_cpu_lion_step",
    level: "dsrs_cpu_lion_simd_level",
};

/// The optimizer ops' entry points, per op and build options.
static KERNELS: EntryPoints<Kernel> = EntryPoints::new("dsrs::optim");

/// The kernel for `exec`, or `None` to run the reference (see [`EntryPoints::get`]).
fn kernel_for(names: OpNames, exec: &Exec) -> Result<Option<Kernel>> {
    KERNELS.get(names.op, exec, |op| {
        let step = op.symbol(names.step, 0)? as usize;
        // SAFETY: the symbol is the op's `const char* dsrs_cpu_*_simd_level(void)`.
        let simd = unsafe { kernels::simd_level(op, names.level)? };
        Ok(Kernel { step, simd })
    })
}

fn status(op: &str, s: i32) -> Result<()> {
    match s {
        0 => Ok(()),
        1 => Err(Error::Internal(format!(
            "{op}: the kernel reported a NULL array"
        ))),
        2 => Err(Error::Internal(format!(
            "{op}: the kernel refused a configuration value that passed validation"
        ))),
        3 => Err(Error::Internal(format!(
            "{op}: the kernel refused a dtype combination that passed validation"
        ))),
        other => Err(Error::Internal(format!(
            "{op}: the kernel returned unknown status {other}"
        ))),
    }
}

fn threads(exec: &Exec) -> Result<i32> {
    i32::try_from(exec.num_threads)
        .map_err(|_| Error::range(format!("num_threads = {} is too large", exec.num_threads)))
}

fn buffers(
    params: &mut ParamsMut<'_>,
    grads: &GradsRef<'_>,
    exp_avg: Option<&mut [f32]>,
    exp_avg_sq: Option<&mut [f32]>,
    copy: &mut Option<CopyMut<'_>>,
) -> Result<KernelBuffers> {
    Ok(KernelBuffers {
        params: params.as_mut_ptr().cast(),
        grads: grads.as_ptr().cast(),
        exp_avg: exp_avg.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()),
        exp_avg_sq: exp_avg_sq.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()),
        param_copy: copy
            .as_mut()
            .map_or(std::ptr::null_mut(), |c| c.as_mut_ptr().cast()),
        n: params.len() as u64,
        params_dtype: dtype_code(params.dtype())?,
        grads_dtype: dtype_code(grads.dtype())?,
        copy_dtype: copy.as_ref().map_or(Ok(0), |c| dtype_code(c.dtype()))?,
        flags: 0,
    })
}

/// The two fp32 state arrays of a step (`exp_avg`, `exp_avg_sq`); `None` where the
/// optimizer has no such state.
type States<'a> = [Option<&'a mut [f32]>; 2];

/// The arrays of one step (`G`: the gradients, read only for the reference).
struct Arrays<'a, G = GradsRef<'a>> {
    params: ParamsMut<'a>,
    grads: G,
    states: States<'a>,
    copy: Option<CopyMut<'a>>,
}

/// Runs one step: the op's kernel (config from `cfg(num_threads)`), or `reference` when
/// `exec` says so or the op cannot be used under `Backend::Auto`. Checks dtypes and lengths
/// before the kernel sees anything.
fn run<C>(
    names: OpNames,
    exec: &Exec,
    cfg: impl FnOnce(i32) -> C,
    arrays: Arrays<'_, StepGrads<'_>>,
    reference: impl FnOnce(Arrays<'_>) -> Result<()>,
) -> Result<Ran> {
    let nt = threads(exec)?;
    let Arrays {
        mut params,
        grads: mut step_grads,
        states,
        mut copy,
    } = arrays;
    let Some(k) = kernel_for(names, exec)? else {
        reference(Arrays {
            params,
            grads: step_grads.as_ref(),
            states,
            copy,
        })?;
        if let StepGrads::ReadAndZero(g) = &mut step_grads {
            g.zero();
        }
        return Ok(Ran::Reference);
    };
    let zero = step_grads.zeroes();
    let grads = step_grads.as_ref();
    let what = names.op.trim_start_matches("cpu_");
    super::check_dtypes(
        what,
        params.dtype(),
        grads.dtype(),
        copy.as_ref().map(|c| c.dtype()),
    )?;
    let n = params.len();
    super::check_len(what, n, &[("grads", grads.len())])?;
    let [m, v] = states;
    for (name, s) in [("exp_avg", &m), ("exp_avg_sq", &v)] {
        if let Some(s) = s {
            super::check_len(what, n, &[(name, s.len())])?;
        }
    }
    if let Some(c) = &copy {
        super::check_len(what, n, &[("param_copy", c.len())])?;
    }
    let mut b = buffers(&mut params, &grads, m, v, &mut copy)?;
    if zero {
        // The kernel writes zeros through `grads` after reading: `step_grads` holds the
        // gradients mutably for the call (ReadAndZero), so nothing else can observe them.
        b.flags = ZERO_GRADS;
    }
    let cfg = cfg(nt);
    // SAFETY: the symbol is `int32_t dsrs_cpu_<op>_step(const <config>*, const
    // dsrs_cpu_optim_buffers*)` with `C` the config's #[repr(C)] mirror; the buffers point
    // into slices of n elements that Rust's borrows keep alive and disjoint for the call.
    let s = unsafe {
        let f: unsafe extern "C" fn(*const C, *const KernelBuffers) -> i32 =
            std::mem::transmute(k.step);
        f(&cfg, &b)
    };
    status(names.op, s)?;
    Ok(Ran::Kernel(k.simd))
}

/// One Adam/AdamW step on host memory (see [`reference::adam_step`] for the formula).
pub fn adam_step<'g>(
    hp: &AdamParams,
    params: ParamsMut<'_>,
    grads: impl Into<StepGrads<'g>>,
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    copy: Option<CopyMut<'_>>,
    exec: &Exec,
) -> Result<Ran> {
    hp.validate()?;
    let cfg = |num_threads| AdamConfig {
        lr: hp.lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        eps: hp.eps,
        weight_decay: hp.weight_decay,
        adamw_mode: i32::from(hp.adamw_mode),
        bias_correction: i32::from(hp.bias_correction),
        step: hp.step as i64,
        grad_scale: hp.grad_scale,
        num_threads,
    };
    run(
        ADAM,
        exec,
        cfg,
        Arrays {
            params,
            grads: grads.into(),
            states: [Some(exp_avg), Some(exp_avg_sq)],
            copy,
        },
        |a| {
            let [m, v] = a.states;
            reference::adam_step(hp, a.params, a.grads, m.unwrap(), v.unwrap(), a.copy)
        },
    )
}

/// One Adagrad step on host memory (see [`reference::adagrad_step`]).
pub fn adagrad_step<'g>(
    hp: &AdagradParams,
    params: ParamsMut<'_>,
    grads: impl Into<StepGrads<'g>>,
    exp_avg_sq: &mut [f32],
    copy: Option<CopyMut<'_>>,
    exec: &Exec,
) -> Result<Ran> {
    hp.validate()?;
    let cfg = |num_threads| AdagradConfig {
        lr: hp.lr,
        eps: hp.eps,
        weight_decay: hp.weight_decay,
        grad_scale: hp.grad_scale,
        num_threads,
    };
    run(
        ADAGRAD,
        exec,
        cfg,
        Arrays {
            params,
            grads: grads.into(),
            states: [None, Some(exp_avg_sq)],
            copy,
        },
        |a| {
            let [_, v] = a.states;
            reference::adagrad_step(hp, a.params, a.grads, v.unwrap(), a.copy)
        },
    )
}

/// One Lion step on host memory (see [`reference::lion_step`]).
pub fn lion_step<'g>(
    hp: &LionParams,
    params: ParamsMut<'_>,
    grads: impl Into<StepGrads<'g>>,
    exp_avg: &mut [f32],
    copy: Option<CopyMut<'_>>,
    exec: &Exec,
) -> Result<Ran> {
    hp.validate()?;
    let cfg = |num_threads| LionConfig {
        lr: hp.lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        weight_decay: hp.weight_decay,
        grad_scale: hp.grad_scale,
        num_threads,
    };
    run(
        LION,
        exec,
        cfg,
        Arrays {
            params,
            grads: grads.into(),
            states: [Some(exp_avg), None],
            copy,
        },
        |a| {
            let [m, _] = a.states;
            reference::lion_step(hp, a.params, a.grads, m.unwrap(), a.copy)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_headers() {
        assert_eq!(size_of::<KernelBuffers>(), 64);
        assert_eq!(offset_of!(KernelBuffers, n), 40);
        assert_eq!(offset_of!(KernelBuffers, flags), 60);
        assert_eq!(size_of::<AdamConfig>(), 48);
        assert_eq!(offset_of!(AdamConfig, step), 32);
        assert_eq!(offset_of!(AdamConfig, num_threads), 44);
        assert_eq!(size_of::<AdagradConfig>(), 20);
        assert_eq!(size_of::<LionConfig>(), 24);
        assert_eq!(offset_of!(LionConfig, num_threads), 20);
    }
}
