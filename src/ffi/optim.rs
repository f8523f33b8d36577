//! `dsrs_adam_step`, `dsrs_adagrad_step`, `dsrs_lion_step`, `dsrs_lamb_step`: optimizer
//! steps on DLPack tensors. Host tensors (`kDLCPU`, `kDLCUDAHost`) run the CPU ops
//! (`cpu_adam`, `cpu_adagrad`, `cpu_lion`; LAMB on the host runs the pure-Rust reference)
//! on the calling thread; CUDA tensors (`kDLCUDA`) run the multi-tensor fused kernels
//! (`fused_adam`, `fused_lamb`, `fused_lion`) on the given stream. Formulas:
//! `docs/optimizers.md`.

use std::sync::Arc;

use super::handle::get;
use super::status::dsrs_status::*;
use super::stream::StreamObject;
use super::{FfiError, arg_ref, dsrs_status, dsrs_stream, host_slice, host_slice_mut};
use crate::accelerator::Stream;
use crate::accelerator::cuda::CudaStream;
use crate::dlpack::{DLTensor, TensorRef, kDLCPU, kDLCUDA, kDLCUDAHost};
use crate::dtype::DType;
use crate::ffi_body;
use crate::ops::optim::{
    self, AdagradParams, AdamParams, Backend, CopyMut, Exec, GradsRef, LionParams, ParamsMut, Ran,
    cuda::CudaTensors,
    lamb::{self, LambParams},
};

/// How an optimizer step is run (the `backend` field of the configs).
pub type dsrs_optim_backend = i32;
/// The op's kernel; when the op cannot be built (no C++ compiler), the pure-Rust reference,
/// with one warning per process.
pub const DSRS_OPTIM_BACKEND_AUTO: dsrs_optim_backend = 0;
/// The op's kernel only: a failed build is an error (`DSRS_STATUS_OP_INCOMPATIBLE`,
/// `DSRS_STATUS_BUILD_FAILED`, ...).
pub const DSRS_OPTIM_BACKEND_KERNEL: dsrs_optim_backend = 1;
/// The pure-Rust reference implementation (host tensors only; never builds anything).
pub const DSRS_OPTIM_BACKEND_REFERENCE: dsrs_optim_backend = 2;

/// Adam / AdamW hyper-parameters (DeepSpeed's `DeepSpeedCPUAdam` / `FusedAdam`). The
/// fields are those of the cpu_adam op's `dsrs_cpu_adam_config`, with `backend` appended
/// (56 bytes on 64-bit targets).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dsrs_adam_config {
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
    /// 1: decoupled weight decay (AdamW); 0: L2 added to the gradient (Adam).
    pub adamw_mode: i32,
    /// 1: divide the moments by 1 - beta^step; 0: do not.
    pub bias_correction: i32,
    /// The step being taken, counted from 1.
    pub step: i64,
    /// The gradients are divided by this inside the step (multiplied by its reciprocal, as
    /// DeepSpeed unscales): the loss scale times the accumulation steps; 1 for none.
    pub grad_scale: f32,
    /// Host tensors: threads (0: the OpenMP default). Ignored for CUDA tensors.
    pub num_threads: i32,
    /// A `DSRS_OPTIM_BACKEND_*` value.
    pub backend: dsrs_optim_backend,
}

/// Adagrad hyper-parameters (DeepSpeed's `DeepSpeedCPUAdagrad`: the weight-decayed gradient
/// feeds the accumulator, the raw gradient the step). Host tensors only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dsrs_adagrad_config {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// Finite and > 0.
    pub eps: f32,
    /// Finite and >= 0.
    pub weight_decay: f32,
    /// As in `dsrs_adam_config`.
    pub grad_scale: f32,
    /// Threads (0: the OpenMP default).
    pub num_threads: i32,
    /// A `DSRS_OPTIM_BACKEND_*` value.
    pub backend: dsrs_optim_backend,
}

/// Lion hyper-parameters (DeepSpeed's `DeepSpeedCPULion` / `FusedLion`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dsrs_lion_config {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// In [0, 1].
    pub beta1: f32,
    /// In [0, 1].
    pub beta2: f32,
    /// Decoupled weight decay, finite and >= 0.
    pub weight_decay: f32,
    /// As in `dsrs_adam_config`.
    pub grad_scale: f32,
    /// Host tensors: threads (0: the OpenMP default).
    pub num_threads: i32,
    /// A `DSRS_OPTIM_BACKEND_*` value.
    pub backend: dsrs_optim_backend,
}

/// LAMB hyper-parameters (DeepSpeed's `FusedLamb`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dsrs_lamb_config {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// In [0, 1).
    pub beta1: f32,
    /// In [0, 1).
    pub beta2: f32,
    /// Finite and > 0.
    pub eps: f32,
    /// Finite and >= 0 (added to the update, as DeepSpeed).
    pub weight_decay: f32,
    /// Upper clamp of the trust ratio (DeepSpeed's default 10).
    pub max_coeff: f32,
    /// Lower clamp of the trust ratio (DeepSpeed's default 0.01).
    pub min_coeff: f32,
    /// As in `dsrs_adam_config`.
    pub grad_scale: f32,
    /// 1: divide the moments by 1 - beta^step.
    pub bias_correction: i32,
    /// 1: eps inside the square root (DeepSpeed's `eps_inside_sqrt`).
    pub eps_inside_sqrt: i32,
    /// The step being taken, counted from 1.
    pub step: i64,
    /// A `DSRS_OPTIM_BACKEND_*` value (host tensors always run the reference).
    pub backend: dsrs_optim_backend,
    /// Must be 0.
    pub reserved: i32,
}

/// The tensors of one parameter for an optimizer step. All have the same number of
/// elements and must be contiguous; `params` is fp32, fp16 or bf16; `grads` fp32 or the
/// parameters' dtype (fp32 parameters also take fp16/bf16 gradients); the states are fp32.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dsrs_optim_tensors {
    /// The parameters, updated in place.
    pub params: *mut DLTensor,
    /// The gradients (read only).
    pub grads: *const DLTensor,
    /// Adam's first moment, Lion's momentum, LAMB's first moment; NULL for Adagrad.
    pub exp_avg: *mut DLTensor,
    /// Adam's second moment, Adagrad's sum of squares, LAMB's second moment; NULL for
    /// Lion.
    pub exp_avg_sq: *mut DLTensor,
    /// Host steps of fp32 parameters only: NULL, or an fp16/bf16 tensor that receives the
    /// updated parameters rounded (DeepSpeed's param copy for ZeRO-Offload).
    pub param_copy: *mut DLTensor,
}

/// Where a step's tensors live.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    Host,
    Cuda(i32),
}

struct Entry {
    params: TensorRef,
    grads: TensorRef,
    exp_avg: Option<TensorRef>,
    exp_avg_sq: Option<TensorRef>,
    copy: Option<TensorRef>,
}

fn place_of(t: &TensorRef, what: &str) -> Result<Place, FfiError> {
    match t.device.device_type {
        x if x == kDLCPU || x == kDLCUDAHost => Ok(Place::Host),
        x if x == kDLCUDA => Ok(Place::Cuda(t.device.device_id)),
        other => Err(FfiError::new(
            DSRS_STATUS_UNSUPPORTED,
            format!(
                "{what} is on DLPack device type {other}; optimizer steps take kDLCPU, kDLCUDAHost or kDLCUDA tensors"
            ),
        )),
    }
}

fn tensor(
    p: *const DLTensor,
    what: &str,
    required: bool,
    forbidden: Option<&str>,
) -> Result<Option<TensorRef>, FfiError> {
    if p.is_null() {
        if required {
            return Err(FfiError::null(what));
        }
        return Ok(None);
    }
    if let Some(why) = forbidden {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!("{what} must be NULL: {why}"),
        ));
    }
    // SAFETY: a non-NULL DLTensor's shape/strides validity is the caller's contract.
    let t = unsafe { TensorRef::from_raw(&*p, what) }?;
    if !t.contiguous {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!("{what} is not contiguous (strides must be NULL or compact row-major)"),
        ));
    }
    let align = t.dtype.size().max(1);
    if t.numel > 0 && t.ptr % align != 0 {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!(
                "{what} is misaligned: data + byte_offset = {:#x} is not a multiple of {align} bytes ({})",
                t.ptr,
                t.dtype.name()
            ),
        ));
    }
    Ok(Some(t))
}

/// Which state tensors an optimizer uses.
#[derive(Clone, Copy)]
struct Needs {
    name: &'static str,
    exp_avg: bool,
    exp_avg_sq: bool,
}

fn entries(
    tensors: *const dsrs_optim_tensors,
    count: usize,
    needs: Needs,
) -> Result<(Vec<Entry>, Place), FfiError> {
    if count == 0 {
        return Ok((Vec::new(), Place::Host));
    }
    if tensors.is_null() {
        return Err(FfiError::null("tensors"));
    }
    // SAFETY: the caller passes `count` readable entries.
    let list = unsafe { std::slice::from_raw_parts(tensors, count) };
    let mut out = Vec::with_capacity(count);
    let mut place: Option<Place> = None;
    for (i, t) in list.iter().enumerate() {
        let name = |f: &str| format!("tensors[{i}].{f}");
        let params = tensor(t.params, &name("params"), true, None)?.unwrap();
        let grads = tensor(t.grads, &name("grads"), true, None)?.unwrap();
        let exp_avg = tensor(
            t.exp_avg,
            &name("exp_avg"),
            needs.exp_avg,
            (!needs.exp_avg).then_some(match needs.name {
                "adagrad" => "Adagrad keeps one state, exp_avg_sq",
                _ => "this optimizer has no first moment",
            }),
        )?;
        let exp_avg_sq = tensor(
            t.exp_avg_sq,
            &name("exp_avg_sq"),
            needs.exp_avg_sq,
            (!needs.exp_avg_sq).then_some("Lion keeps one state, exp_avg"),
        )?;
        let copy = tensor(t.param_copy, &name("param_copy"), false, None)?;
        let n = params.numel;
        let mut check = |r: &TensorRef, what: String, state: bool| -> Result<(), FfiError> {
            if r.numel != n {
                return Err(FfiError::new(
                    DSRS_STATUS_INVALID_ARGUMENT,
                    format!(
                        "{what} has {} elements but tensors[{i}].params has {n}",
                        r.numel
                    ),
                ));
            }
            if state && r.dtype != DType::F32 {
                return Err(FfiError::new(
                    DSRS_STATUS_UNSUPPORTED,
                    format!("{what} is {}; optimizer states are float32", r.dtype.name()),
                ));
            }
            let p = place_of(r, &what)?;
            match place {
                None => place = Some(p),
                Some(q) if q != p => {
                    return Err(FfiError::new(
                        DSRS_STATUS_INVALID_ARGUMENT,
                        format!(
                            "{what} is on {p:?} but the step's other tensors are on {q:?}: one step runs on one device"
                        ),
                    ));
                }
                _ => {}
            }
            Ok(())
        };
        check(&params, name("params"), false)?;
        check(&grads, name("grads"), false)?;
        if let Some(r) = &exp_avg {
            check(r, name("exp_avg"), true)?;
        }
        if let Some(r) = &exp_avg_sq {
            check(r, name("exp_avg_sq"), true)?;
        }
        if let Some(r) = &copy {
            check(r, name("param_copy"), false)?;
        }
        let floats = [DType::F32, DType::F16, DType::BF16];
        for (field, r) in [("params", Some(&params)), ("grads", Some(&grads))] {
            if let Some(r) = r
                && !floats.contains(&r.dtype)
            {
                return Err(FfiError::new(
                    DSRS_STATUS_UNSUPPORTED,
                    format!(
                        "tensors[{i}].{field} is {}; it must be float32, float16 or bfloat16",
                        r.dtype.name()
                    ),
                ));
            }
        }
        if grads.dtype != params.dtype && grads.dtype != DType::F32 && params.dtype != DType::F32 {
            return Err(FfiError::new(
                DSRS_STATUS_UNSUPPORTED,
                format!(
                    "tensors[{i}].grads is {} but tensors[{i}].params is {}: gradients must be float32 or the parameters' dtype",
                    grads.dtype.name(),
                    params.dtype.name()
                ),
            ));
        }
        if let Some(c) = &copy {
            if params.dtype != DType::F32 {
                return Err(FfiError::new(
                    DSRS_STATUS_UNSUPPORTED,
                    format!(
                        "tensors[{i}].param_copy needs float32 parameters (the copy is the low-precision image of fp32 master weights), but tensors[{i}].params is {}",
                        params.dtype.name()
                    ),
                ));
            }
            if c.dtype != DType::F16 && c.dtype != DType::BF16 {
                return Err(FfiError::new(
                    DSRS_STATUS_UNSUPPORTED,
                    format!(
                        "tensors[{i}].param_copy is {}; it must be float16 or bfloat16",
                        c.dtype.name()
                    ),
                ));
            }
        }
        optim::check_dtypes(
            &format!("{} tensors[{i}]", needs.name),
            params.dtype,
            grads.dtype,
            copy.as_ref().map(|c| c.dtype),
        )?;
        // The arrays of one entry must not overlap (a step reads and writes them at once).
        let ranges: Vec<(&str, &TensorRef)> = [
            Some(("params", &params)),
            Some(("grads", &grads)),
            exp_avg.as_ref().map(|r| ("exp_avg", r)),
            exp_avg_sq.as_ref().map(|r| ("exp_avg_sq", r)),
            copy.as_ref().map(|r| ("param_copy", r)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for a in 0..ranges.len() {
            for b in a + 1..ranges.len() {
                let (x, y) = (ranges[a].1, ranges[b].1);
                if x.nbytes > 0
                    && y.nbytes > 0
                    && x.ptr < y.ptr + y.nbytes
                    && y.ptr < x.ptr + x.nbytes
                {
                    return Err(FfiError::new(
                        DSRS_STATUS_INVALID_ARGUMENT,
                        format!(
                            "tensors[{i}].{} and tensors[{i}].{} overlap in memory",
                            ranges[a].0, ranges[b].0
                        ),
                    ));
                }
            }
        }
        out.push(Entry {
            params,
            grads,
            exp_avg,
            exp_avg_sq,
            copy,
        });
    }
    Ok((out, place.unwrap_or(Place::Host)))
}

fn backend(b: dsrs_optim_backend) -> Result<Backend, FfiError> {
    match b {
        DSRS_OPTIM_BACKEND_AUTO => Ok(Backend::Auto),
        DSRS_OPTIM_BACKEND_KERNEL => Ok(Backend::Kernel),
        DSRS_OPTIM_BACKEND_REFERENCE => Ok(Backend::Reference),
        other => Err(FfiError::range(
            "config->backend",
            format_args!(
                "must be DSRS_OPTIM_BACKEND_AUTO (0), _KERNEL (1) or _REFERENCE (2), got {other}"
            ),
        )),
    }
}

fn step_arg(step: i64) -> Result<u64, FfiError> {
    u64::try_from(step).ok().filter(|&s| s >= 1).ok_or_else(|| {
        FfiError::new(
            DSRS_STATUS_INVALID_CONFIG,
            format!("config->step = {step} is out of range: steps are counted from 1"),
        )
    })
}

fn flag(v: i32, field: &str) -> Result<bool, FfiError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(FfiError::range(
            field,
            format_args!("must be 0 or 1, got {other}"),
        )),
    }
}

fn exec(num_threads: i32, b: dsrs_optim_backend) -> Result<Exec, FfiError> {
    if num_threads < 0 {
        return Err(FfiError::range(
            "config->num_threads",
            format_args!("must be >= 0 (0: the OpenMP default), got {num_threads}"),
        ));
    }
    Ok(Exec {
        backend: backend(b)?,
        num_threads: num_threads as usize,
        build: Default::default(),
    })
}

/// The CUDA stream of a CUDA step.
fn cuda_stream(stream: *mut dsrs_stream, device: i32) -> Result<Arc<StreamObject>, FfiError> {
    if stream.is_null() {
        return Err(FfiError::new(
            DSRS_STATUS_NULL_ARGUMENT,
            format!(
                "argument 'stream' is NULL, but the tensors are on CUDA device {device}: pass a stream of the cuda accelerator (dsrs_stream_new or dsrs_stream_wrap)"
            ),
        ));
    }
    let s = get(stream, "stream")?;
    let Some(cs) = s.stream.as_any().downcast_ref::<CudaStream>() else {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!(
                "argument 'stream' belongs to the {} accelerator, but the tensors are on CUDA device {device}",
                s.accel.name()
            ),
        ));
    };
    if cs.device() as i32 != device {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!(
                "argument 'stream' is on CUDA device {}, but the tensors are on CUDA device {device}",
                cs.device()
            ),
        ));
    }
    Ok(s)
}

fn cuda_tensors(list: &[Entry]) -> Vec<CudaTensors> {
    list.iter()
        .map(|e| CudaTensors {
            params: e.params.ptr as u64,
            params_dtype: e.params.dtype,
            grads: e.grads.ptr as u64,
            grads_dtype: e.grads.dtype,
            exp_avg: e.exp_avg.as_ref().map_or(0, |t| t.ptr as u64),
            exp_avg_sq: e.exp_avg_sq.as_ref().map_or(0, |t| t.ptr as u64),
            len: e.params.numel,
        })
        .collect()
}

// Host views of validated tensors. SAFETY (for all three): the tensor was validated
// (contiguous, `numel` elements of its dtype, host-accessible); the arrays of one entry do
// not overlap; the memory's validity for the call is the caller's contract.
unsafe fn params_view<'a>(t: &TensorRef) -> ParamsMut<'a> {
    unsafe {
        match t.dtype {
            DType::F16 => ParamsMut::F16(host_slice_mut(t)),
            DType::BF16 => ParamsMut::BF16(host_slice_mut(t)),
            _ => ParamsMut::F32(host_slice_mut(t)),
        }
    }
}

unsafe fn grads_view<'a>(t: &TensorRef) -> GradsRef<'a> {
    unsafe {
        match t.dtype {
            DType::F16 => GradsRef::F16(host_slice(t)),
            DType::BF16 => GradsRef::BF16(host_slice(t)),
            _ => GradsRef::F32(host_slice(t)),
        }
    }
}

unsafe fn state_view<'a>(t: &TensorRef) -> &'a mut [f32] {
    unsafe { host_slice_mut(t) }
}

unsafe fn copy_view<'a>(t: &TensorRef) -> CopyMut<'a> {
    unsafe {
        match t.dtype {
            DType::F16 => CopyMut::F16(host_slice_mut(t)),
            _ => CopyMut::BF16(host_slice_mut(t)),
        }
    }
}

fn no_copy_on_cuda(list: &[Entry]) -> Result<(), FfiError> {
    if let Some(i) = list.iter().position(|e| e.copy.is_some()) {
        return Err(FfiError::new(
            DSRS_STATUS_UNSUPPORTED,
            format!(
                "tensors[{i}].param_copy: CUDA steps do not write a parameter copy (train in the parameters' dtype, or copy after the step)"
            ),
        ));
    }
    Ok(())
}

/// A CUDA step: the stream and the tensors' device descriptions.
type CudaStep<'a> = &'a dyn Fn(&CudaStream, &[CudaTensors]) -> crate::Result<Ran>;

/// Runs a step where its tensors live: `host` once per entry on the calling thread, or
/// `cuda` once for all entries on the stream (`None`: the optimizer has no CUDA kernel).
fn dispatch(
    name: &str,
    list: &[Entry],
    place: Place,
    backend: Backend,
    stream: *mut dsrs_stream,
    mut host: impl FnMut(&Entry) -> crate::Result<Ran>,
    cuda: Option<CudaStep<'_>>,
) -> Result<(), FfiError> {
    match place {
        Place::Host => {
            for e in list {
                host(e)?;
            }
        }
        Place::Cuda(dev) => {
            let Some(cuda) = cuda else {
                return Err(FfiError::new(
                    DSRS_STATUS_UNSUPPORTED,
                    format!(
                        "{name} has no CUDA kernel; the tensors are on CUDA device {dev} (use host tensors, as DeepSpeed's CPU {name})"
                    ),
                ));
            };
            if backend == Backend::Reference {
                return Err(FfiError::new(
                    DSRS_STATUS_UNSUPPORTED,
                    format!(
                        "config->backend is DSRS_OPTIM_BACKEND_REFERENCE, which runs on host memory only; the tensors are on CUDA device {dev}"
                    ),
                ));
            }
            no_copy_on_cuda(list)?;
            let s = cuda_stream(stream, dev)?;
            let cs = s.stream.as_any().downcast_ref::<CudaStream>().unwrap();
            cuda(cs, &cuda_tensors(list))?;
        }
    }
    Ok(())
}

/// One Adam / AdamW step over `count` parameters (DeepSpeed's semantics; the formula is in
/// docs/optimizers.md). Host tensors run the cpu_adam op on the calling thread (one call
/// per entry; `stream` is ignored and may be NULL); CUDA tensors run the fused_adam op's
/// multi-tensor kernels on `stream` (required: a stream of the cuda accelerator on the
/// tensors' device), asynchronously. Every tensor and hyper-parameter is checked before
/// anything is written; errors name the entry and field (`tensors[2].exp_avg has 7
/// elements but tensors[2].params has 8`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_adam_step(
    config: *const dsrs_adam_config,
    tensors: *const dsrs_optim_tensors,
    count: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let c = arg_ref(config, "config")?;
        let hp = AdamParams {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            adamw_mode: flag(c.adamw_mode, "config->adamw_mode")?,
            bias_correction: flag(c.bias_correction, "config->bias_correction")?,
            step: step_arg(c.step)?,
            grad_scale: c.grad_scale,
        };
        hp.validate()?;
        let ex = exec(c.num_threads, c.backend)?;
        let (list, place) = entries(tensors, count, Needs { name: "adam", exp_avg: true, exp_avg_sq: true })?;
        // SAFETY (both closures): the entries are validated tensors of their place (see the
        // view functions); their memory is the caller's contract.
        dispatch("adam", &list, place, ex.backend, stream, |e| unsafe {
            optim::cpu::adam_step(
                &hp,
                params_view(&e.params),
                grads_view(&e.grads),
                state_view(e.exp_avg.as_ref().unwrap()),
                state_view(e.exp_avg_sq.as_ref().unwrap()),
                e.copy.as_ref().map(|t| copy_view(t)),
                &ex,
            )
        }, Some(&|cs, t| unsafe { optim::cuda::adam_step(cs, &hp, t, &ex.build) }))?;
        Ok(())
    }
}

/// One Adagrad step over `count` parameters (DeepSpeed's CPU Adagrad). Host tensors only
/// (there is no CUDA Adagrad kernel): the cpu_adagrad op on the calling thread; `stream` is
/// ignored. `exp_avg` must be NULL and `exp_avg_sq` holds the sum of squares.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_adagrad_step(
    config: *const dsrs_adagrad_config,
    tensors: *const dsrs_optim_tensors,
    count: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let _ = stream;
        let c = arg_ref(config, "config")?;
        let hp = AdagradParams {
            lr: c.lr,
            eps: c.eps,
            weight_decay: c.weight_decay,
            grad_scale: c.grad_scale,
        };
        hp.validate()?;
        let ex = exec(c.num_threads, c.backend)?;
        let (list, place) = entries(tensors, count, Needs { name: "adagrad", exp_avg: false, exp_avg_sq: true })?;
        // SAFETY: as in dsrs_adam_step.
        dispatch("adagrad", &list, place, ex.backend, stream, |e| unsafe {
            optim::cpu::adagrad_step(
                &hp,
                params_view(&e.params),
                grads_view(&e.grads),
                state_view(e.exp_avg_sq.as_ref().unwrap()),
                e.copy.as_ref().map(|t| copy_view(t)),
                &ex,
            )
        }, None)?;
        Ok(())
    }
}

/// One Lion step over `count` parameters (DeepSpeed's semantics). Host tensors run the
/// cpu_lion op on the calling thread; CUDA tensors the fused_lion op's multi-tensor kernel
/// on `stream`. `exp_avg` holds the momentum and `exp_avg_sq` must be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_lion_step(
    config: *const dsrs_lion_config,
    tensors: *const dsrs_optim_tensors,
    count: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let c = arg_ref(config, "config")?;
        let hp = LionParams {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            weight_decay: c.weight_decay,
            grad_scale: c.grad_scale,
        };
        hp.validate()?;
        let ex = exec(c.num_threads, c.backend)?;
        let (list, place) = entries(tensors, count, Needs { name: "lion", exp_avg: true, exp_avg_sq: false })?;
        // SAFETY: as in dsrs_adam_step.
        dispatch("lion", &list, place, ex.backend, stream, |e| unsafe {
            optim::cpu::lion_step(
                &hp,
                params_view(&e.params),
                grads_view(&e.grads),
                state_view(e.exp_avg.as_ref().unwrap()),
                e.copy.as_ref().map(|t| copy_view(t)),
                &ex,
            )
        }, Some(&|cs, t| unsafe { optim::cuda::lion_step(cs, &hp, t, &ex.build) }))?;
        Ok(())
    }
}

/// One LAMB step over `count` parameters (DeepSpeed's FusedLamb: Adam's moments, the
/// weight decay added to the update, and a per-tensor trust ratio `||p|| / ||update||`
/// clamped to [min_coeff, max_coeff]). CUDA tensors run the fused_lamb op's kernels on
/// `stream`; host tensors run the pure-Rust reference on the calling thread (there is no
/// CPU LAMB kernel; `backend` must then be AUTO or REFERENCE). `param_copy` must be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_lamb_step(
    config: *const dsrs_lamb_config,
    tensors: *const dsrs_optim_tensors,
    count: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let c = arg_ref(config, "config")?;
        if c.reserved != 0 {
            return Err(FfiError::range("config->reserved", format_args!("must be 0, got {}", c.reserved)));
        }
        let hp = LambParams {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            bias_correction: flag(c.bias_correction, "config->bias_correction")?,
            step: step_arg(c.step)?,
            max_coeff: c.max_coeff,
            min_coeff: c.min_coeff,
            eps_inside_sqrt: flag(c.eps_inside_sqrt, "config->eps_inside_sqrt")?,
            grad_scale: c.grad_scale,
        };
        hp.validate()?;
        let b = backend(c.backend)?;
        let (list, place) = entries(tensors, count, Needs { name: "lamb", exp_avg: true, exp_avg_sq: true })?;
        if let Some(i) = list.iter().position(|e| e.copy.is_some()) {
            return Err(FfiError::new(
                DSRS_STATUS_UNSUPPORTED,
                format!("tensors[{i}].param_copy: LAMB steps do not write a parameter copy"),
            ));
        }
        if place == Place::Host && b == Backend::Kernel {
            return Err(FfiError::new(
                DSRS_STATUS_UNSUPPORTED,
                "lamb has no CPU kernel: host tensors run the reference (backend AUTO or REFERENCE)",
            ));
        }
        // SAFETY: as in dsrs_adam_step.
        dispatch("lamb", &list, place, b, stream, |e| unsafe {
            lamb::lamb_step_reference(
                &hp,
                params_view(&e.params),
                grads_view(&e.grads),
                state_view(e.exp_avg.as_ref().unwrap()),
                state_view(e.exp_avg_sq.as_ref().unwrap()),
            )
            .map(|_| Ran::Reference)
        }, Some(&|cs, t| unsafe { optim::cuda::lamb_step(cs, &hp, t, &Default::default()) }))?;
        Ok(())
    }
}
