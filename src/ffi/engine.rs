//! `dsrs_engine_*` and `dsrs_config_*`: the training engine and ds_config helpers.

use std::ffi::c_char;
use std::sync::Arc;

use parking_lot::Mutex;

use super::accelerator::accel_arg;
use super::handle::{get, insert, remove};
use super::status::dsrs_status::*;
use super::stream::opt_stream_arg;
use super::{
    FfiError, Out, arg_ref, arg_str, dsrs_accelerator, dsrs_engine, dsrs_status, dsrs_stream,
    host_bytes, write_str_out,
};
use crate::dlpack::{DLTensor, TensorRef, kDLCPU, kDLCUDAHost};
use crate::engine::config::{self, DsConfig, ParseOptions};
use crate::engine::engine::{Engine, ParamData, StepRecord, TensorView};
use crate::{dsrs_warn, ffi_body};

/// The object behind a `dsrs_engine` handle.
pub struct EngineObject {
    engine: Mutex<Engine>,
}

/// What one `dsrs_engine_step` did.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dsrs_step_record {
    /// Optimizer steps so far, applied and skipped (DeepSpeed's `global_steps`), after
    /// this call.
    pub global_step: u64,
    /// Micro steps so far, after this call.
    pub micro_step: u64,
    /// Skipped optimizer steps so far.
    pub skipped_steps: u64,
    /// 1 when this call ended a gradient-accumulation window.
    pub boundary: i32,
    /// 1 when the optimizer step was applied (0 off the boundary and when skipped).
    pub applied: i32,
    /// 1 when non-finite gradients were found: the step was skipped, and parameters,
    /// optimizer state and LR schedule are unchanged.
    pub overflow: i32,
    /// Always 0.
    pub reserved: i32,
    /// The loss scale this window's gradients carried (1 without fp16).
    pub loss_scale: f64,
    /// The learning rate the step used (off the boundary: the current one).
    pub lr: f64,
    /// Global L2 norm of the averaged, unscaled gradients before clipping; NaN when they
    /// were not finite; -1 off the boundary.
    pub grad_norm: f64,
}

impl From<StepRecord> for dsrs_step_record {
    fn from(r: StepRecord) -> Self {
        dsrs_step_record {
            global_step: r.global_step,
            micro_step: r.micro_step,
            skipped_steps: r.skipped_steps,
            boundary: i32::from(r.boundary),
            applied: i32::from(r.applied),
            overflow: i32::from(r.overflow),
            reserved: 0,
            loss_scale: r.loss_scale,
            lr: r.lr,
            grad_norm: r.grad_norm,
        }
    }
}

fn engine_arg(p: *const dsrs_engine, arg: &str) -> Result<Arc<EngineObject>, FfiError> {
    get(p, arg)
}

fn accel_or_current(
    accel: *mut dsrs_accelerator,
) -> Result<Arc<dyn crate::accelerator::Accelerator>, FfiError> {
    if accel.is_null() {
        Ok(crate::accelerator::current()?)
    } else {
        accel_arg(accel, "accel")
    }
}

fn new_handle(engine: Engine, out: Out<*mut dsrs_engine>) -> Result<(), FfiError> {
    out.write(insert(Arc::new(EngineObject {
        engine: Mutex::new(engine),
    }))?);
    Ok(())
}

fn dl_view(v: &TensorView<'_>) -> DLTensor {
    DLTensor {
        data: v.ptr as *mut std::ffi::c_void,
        device: v.device,
        ndim: v.shape.len() as i32,
        dtype: v.dtype.to_dl(),
        shape: v.shape.as_ptr() as *mut i64,
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    }
}

/// Creates a training engine on `accel` (NULL: the current accelerator, as
/// `dsrs_accelerator_get` selects it) from a ds_config JSON document. The document may have
/// `//`, `#` and C-style block comments and trailing commas (DeepSpeed's hjson reader accepts
/// them). Every error of the document is reported at once, one `path: message` per line
/// (DSRS_STATUS_INVALID_CONFIG); unknown top-level keys are warnings with a suggestion;
/// `"auto"` values must be filled first (`dsrs_config_fill_auto`). The config must have an
/// `optimizer` block. In this version the engine runs on host-memory accelerators (cpu);
/// others give DSRS_STATUS_UNSUPPORTED. Free with `dsrs_engine_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_new(
    accel: *mut dsrs_accelerator,
    config_json: *const c_char,
    out: *mut *mut dsrs_engine,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let text = arg_str(config_json, "config_json")?;
        let a = accel_or_current(accel)?;
        new_handle(Engine::from_json_str(a, text)?, out)
    }
}

/// Like `dsrs_engine_new`, reading the ds_config from the file at `path` (errors name the
/// file).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_new_from_file(
    accel: *mut dsrs_accelerator,
    path: *const c_char,
    out: *mut *mut dsrs_engine,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let path = arg_str(path, "path")?;
        let a = accel_or_current(accel)?;
        new_handle(Engine::from_file(a, std::path::Path::new(path))?, out)
    }
}

/// Frees an engine and its buffers (NULL: no-op; stale or already freed: error, logged).
/// Views obtained from it become invalid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_free(engine: *mut dsrs_engine) -> dsrs_status {
    ffi_body! {
        remove(engine, "engine").inspect_err(|e| dsrs_warn!("ffi", "dsrs_engine_free: {}", e.message))
    }
}

/// Registers a parameter before `dsrs_engine_finalize`: a unique name, and its initial
/// values as a contiguous host tensor (kDLCPU or kDLCUDAHost) of any float dtype, whose
/// shape becomes the parameter's. Trainable parameters (`trainable` = 1) are stored in the
/// training precision (fp32, or fp16/bf16 when the config enables it; values are rounded to
/// nearest even), frozen ones (0) keep their dtype and get no gradient. The values are
/// copied. `*index_out` (may be NULL) receives the parameter's index.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_register_param(
    engine: *mut dsrs_engine,
    name: *const c_char,
    initial: *const DLTensor,
    trainable: i32,
    index_out: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        let name = arg_str(name, "name")?;
        let t = arg_ref(initial, "initial")?;
        let trainable = match trainable {
            0 => false,
            1 => true,
            v => return Err(FfiError::range("trainable", format_args!("must be 0 or 1, got {v}"))),
        };
        // SAFETY: the caller's DLTensor contract (shape/strides readable).
        let t = unsafe { TensorRef::from_raw(t, "initial") }?;
        if t.device.device_type != kDLCPU && t.device.device_type != kDLCUDAHost {
            return Err(FfiError::new(
                DSRS_STATUS_INVALID_ARGUMENT,
                format!(
                    "argument 'initial' is on DLPack device type {}; initial values are read on the host (kDLCPU or kDLCUDAHost)",
                    t.device.device_type
                ),
            ));
        }
        if !t.contiguous {
            return Err(FfiError::new(
                DSRS_STATUS_INVALID_ARGUMENT,
                "argument 'initial' is not contiguous (row-major, compact strides)",
            ));
        }
        // SAFETY: a validated contiguous host tensor (caller's contract); bytes need no
        // alignment.
        let bytes = unsafe { host_bytes(&t) };
        let index = e.engine.lock().register_param(
            name,
            &t.shape,
            ParamData { dtype: t.dtype, bytes },
            trainable,
        )?;
        if !index_out.is_null() {
            // SAFETY: non-NULL out-parameter (caller's contract).
            unsafe { *index_out = index };
        }
        Ok(())
    }
}

/// Lays the registered parameters out in flat buffers on the accelerator (aligned offsets,
/// ready for ZeRO partitioning), creates the fp32 master weights under fp16/bf16 and the
/// optimizer state (zero), and zeroes the gradients. After this, views are available and
/// no more parameters can be registered.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_finalize(engine: *mut dsrs_engine) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        e.engine.lock().finalize()?;
        Ok(())
    }
}

/// The number of registered parameters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_num_params(
    engine: *const dsrs_engine,
    out: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        out.write(e.engine.lock().num_params());
        Ok(())
    }
}

/// The index of the parameter called `name` (DSRS_STATUS_INVALID_ARGUMENT if none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_param_index(
    engine: *const dsrs_engine,
    name: *const c_char,
    out: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        let name = arg_str(name, "name")?;
        out.write(e.engine.lock().param_index(name)?);
        Ok(())
    }
}

/// The name of parameter `index` (two-call string output).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_param_name(
    engine: *const dsrs_engine,
    index: usize,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        let g = e.engine.lock();
        write_str_out(g.param_name(index)?, buf, len, needed)
    }
}

/// A zero-copy view of parameter `index` in its compute dtype (after finalize). `shape`
/// points into the engine (valid until `dsrs_engine_free`); `strides` is NULL (compact
/// row-major). The host reads it for its forward pass; the engine writes it during
/// `dsrs_engine_step`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_param(
    engine: *const dsrs_engine,
    index: usize,
    out: *mut DLTensor,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        let g = e.engine.lock();
        out.write(dl_view(&g.param_tensor(index)?));
        Ok(())
    }
}

/// A zero-copy view of the gradient of trainable parameter `index` (after finalize). The
/// host ADDS (`+=`) each micro batch's gradients into it — under fp16, of the loss
/// multiplied by `dsrs_engine_loss_scale` — and the engine averages, unscales and zeroes
/// them at each accumulation boundary. Its dtype is fp32 under fp32 and bf16 training,
/// fp16 under fp16 (or `data_types.grad_accum_dtype`). Frozen parameters have none
/// (DSRS_STATUS_INVALID_ARGUMENT).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_grad(
    engine: *const dsrs_engine,
    index: usize,
    out: *mut DLTensor,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        let g = e.engine.lock();
        out.write(dl_view(&g.grad_tensor(index)?));
        Ok(())
    }
}

/// A view (fp32, for reading) of optimizer state `state` of trainable parameter `index`:
/// `"exp_avg"`, `"exp_avg_sq"` (Adam, LAMB; Lion has `exp_avg`, Adagrad `exp_avg_sq`),
/// `"momentum_buffer"` (SGD with momentum) or `"master"` (the fp32 master weights under
/// fp16/bf16). A state the optimizer does not keep is DSRS_STATUS_INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_optimizer_state(
    engine: *const dsrs_engine,
    index: usize,
    state: *const c_char,
    out: *mut DLTensor,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        let state = arg_str(state, "state")?;
        let g = e.engine.lock();
        out.write(dl_view(&g.state_tensor(index, state)?));
        Ok(())
    }
}

/// One micro step (see docs/engine.md). Off the accumulation boundary it only counts. At
/// the boundary: the gradients' global norm and overflow check in one pass, then either a
/// skipped step (non-finite gradients, under fp16, bf16 and fp32 alike: parameters,
/// optimizer state and LR schedule unchanged, the dynamic loss scale backs off) or the
/// optimizer step with averaging, unscaling and clipping folded in, the LR schedule step,
/// the copy to the compute dtype; the gradients are zeroed either way. `stream` (may be
/// NULL): a stream of the engine's accelerator that the host's backward ran on; it is
/// synchronized before the gradients are read. `*out` (may be NULL) receives the record.
/// A failure changes nothing (counters, gradients, parameters, optimizer state,
/// schedules), so the host can fix the cause and call again — except fp16's overflow at
/// the minimum loss scale, DSRS_STATUS_INVALID_STATE (DeepSpeed's "Current loss scale
/// already at minimum"), after which that window's gradients are zeroed and the
/// parameters unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_step(
    engine: *mut dsrs_engine,
    stream: *mut dsrs_stream,
    out: *mut dsrs_step_record,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        let mut g = e.engine.lock();
        if let Some(s) = opt_stream_arg(stream, g.accelerator())? {
            s.synchronize()?;
        }
        let r = g.step()?;
        if !out.is_null() {
            // SAFETY: non-NULL out-parameter (caller's contract).
            unsafe { *out = r.into() };
        }
        Ok(())
    }
}

/// The loss scale: the host multiplies its loss by it before backward (1 without fp16).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_loss_scale(
    engine: *const dsrs_engine,
    out: *mut f64,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        out.write(e.engine.lock().loss_scale());
        Ok(())
    }
}

/// The learning rate the next optimizer step uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_get_lr(
    engine: *const dsrs_engine,
    out: *mut f64,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let e = engine_arg(engine, "engine")?;
        out.write(e.engine.lock().lr());
        Ok(())
    }
}

/// Sets the learning rate (finite, >= 0). Without a scheduler it stays; with one it holds
/// until the scheduler's next step.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_set_lr(engine: *mut dsrs_engine, lr: f64) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        e.engine.lock().set_lr(lr)?;
        Ok(())
    }
}

/// Records a micro batch's (unscaled) loss; the engine averages it over the accumulation
/// window for progress lines and csv_monitor's `Train/Samples/train_loss`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_report_loss(
    engine: *mut dsrs_engine,
    loss: f64,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        e.engine.lock().report_loss(loss);
        Ok(())
    }
}

/// The resolved batch sizes: `train_batch_size`, `train_micro_batch_size_per_gpu` and
/// `gradient_accumulation_steps` (any out-parameter may be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_batch_sizes(
    engine: *const dsrs_engine,
    train_batch_size: *mut u64,
    micro_batch_size: *mut u64,
    gradient_accumulation_steps: *mut u64,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        let (tb, mb, gas) = e.engine.lock().batch_sizes();
        for (p, v) in [(train_batch_size, tb), (micro_batch_size, mb), (gradient_accumulation_steps, gas)] {
            if !p.is_null() {
                // SAFETY: non-NULL out-parameter (caller's contract).
                unsafe { *p = v };
            }
        }
        Ok(())
    }
}

/// The resolved ds_config as JSON (two-call string output).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_config_json(
    engine: *const dsrs_engine,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        let text = e.engine.lock().config().to_json().to_string();
        write_str_out(&text, buf, len, needed)
    }
}

/// The engine's counters, loss-scaler and LR-scheduler state, timers (ms) and the
/// optimizer implementation that ran, as JSON (two-call string output).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_engine_stats_json(
    engine: *const dsrs_engine,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let e = engine_arg(engine, "engine")?;
        let text = e.engine.lock().stats_json().to_string();
        write_str_out(&text, buf, len, needed)
    }
}

/// Validates a ds_config for `world_size` data-parallel ranks (0 is taken as 1) and
/// writes the resolved configuration as JSON (two-call string output). Errors:
/// DSRS_STATUS_INVALID_JSON for unparsable text, DSRS_STATUS_INVALID_CONFIG with every
/// error, one `path: message` per line.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_config_check(
    config_json: *const c_char,
    world_size: u64,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let text = arg_str(config_json, "config_json")?;
        let opts = ParseOptions { world_size: world_size.max(1) };
        let c = DsConfig::load(text, "config_json", &opts)?;
        write_str_out(&c.to_json().to_string(), buf, len, needed)
    }
}

/// The JSON paths of every `"auto"` value in a ds_config, as a JSON array of strings
/// (two-call string output).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_config_auto_paths(
    config_json: *const c_char,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let text = arg_str(config_json, "config_json")?;
        let doc = config::read_lenient_json(text, "config_json")?;
        let paths = serde_json::to_string(&config::auto_paths(&doc)).map_err(|e| crate::Error::Internal(e.to_string()))?;
        write_str_out(&paths, buf, len, needed)
    }
}

/// Replaces the `"auto"` at `path` (dotted, `[i]` for array elements, e.g.
/// `optimizer.params.betas[0]`) by the JSON value `value_json`, and writes the whole
/// document back as JSON (two-call string output; comments are not kept). An error if the
/// path does not hold `"auto"`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_config_fill_auto(
    config_json: *const c_char,
    path: *const c_char,
    value_json: *const c_char,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let text = arg_str(config_json, "config_json")?;
        let path = arg_str(path, "path")?;
        let value = arg_str(value_json, "value_json")?;
        let mut doc = config::read_lenient_json(text, "config_json")?;
        let value = config::read_lenient_json(value, "value_json")?;
        config::fill_auto(&mut doc, path, value)?;
        write_str_out(&doc.to_string(), buf, len, needed)
    }
}
