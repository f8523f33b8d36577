//! `dsrs_accelerator_*`: selecting accelerators and using their devices, memory, dtypes,
//! random numbers and profiling ranges.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::handle::{get, insert, remove};
use super::{
    FfiError, Out, arg_device, arg_opt_str, arg_ref, arg_slice, arg_str, dsrs_accelerator,
    dsrs_status, dsrs_stream, write_bytes_out, write_str_out,
};
use crate::accelerator::{self, Accelerator, Distribution};
use crate::dlpack::{DLDataType, DLTensor, TensorRef};
use crate::dtype::DType;
use crate::{dsrs_warn, ffi_body};

/// Distribution of `dsrs_accelerator_rng_fill`.
pub type dsrs_distribution = i32;
/// Uniform in `[a, b)` (a = low, b = high).
pub const DSRS_DISTRIBUTION_UNIFORM: dsrs_distribution = 0;
/// Normal (a = mean, b = standard deviation ≥ 0).
pub const DSRS_DISTRIBUTION_NORMAL: dsrs_distribution = 1;
/// The generator's raw bits (uint32/int32/uint64/int64 tensors; a and b ignored).
pub const DSRS_DISTRIBUTION_BITS: dsrs_distribution = 2;

pub(crate) fn accel_arg(
    p: *const dsrs_accelerator,
    arg: &str,
) -> Result<Arc<dyn Accelerator>, FfiError> {
    get(p, arg)
}

/// The process-wide current accelerator, selected on first use: `DSRS_ACCELERATOR` if set
/// (an unknown or unavailable name fails with a message listing the valid ones), else the
/// first available of registered plugins, CUDA, CPU. `*out` receives a new handle (a new
/// reference) that the caller frees with `dsrs_accelerator_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_get(out: *mut *mut dsrs_accelerator) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accelerator::current()?;
        out.write(insert(a)?);
        Ok(())
    }
}

/// Makes `accel` the process-wide current accelerator (DeepSpeed's `set_accelerator`). The
/// caller keeps its handle. Objects made from the previous accelerator stay valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_set(accel: *mut dsrs_accelerator) -> dsrs_status {
    ffi_body! {
        accelerator::set_current(accel_arg(accel, "accel")?);
        Ok(())
    }
}

/// Creates a new accelerator by name (`"cpu"`, `"cuda"`, a plugin's name; case-insensitive)
/// with options given as a JSON object (NULL or `""` for defaults; the CPU accelerator takes
/// `devices`, `memory_limit`, `seed`). It is not made current. Free with
/// `dsrs_accelerator_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_new(
    name: *const c_char,
    options_json: *const c_char,
    out: *mut *mut dsrs_accelerator,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let name = arg_str(name, "name")?;
        let options = arg_opt_str(options_json, "options_json")?;
        let a = accelerator::create(name, options)?;
        out.write(insert(a)?);
        Ok(())
    }
}

/// Releases a handle. NULL is a no-op; a stale or foreign handle returns an error (and is
/// logged) without touching anything.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_free(accel: *mut dsrs_accelerator) -> dsrs_status {
    ffi_body! {
        remove(accel, "accel").inspect_err(|e| dsrs_warn!("ffi", "dsrs_accelerator_free: {}", e.message))
    }
}

/// The names of every accelerator, comma-separated, in detection order (two-call pattern).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_names(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! { write_str_out(&accelerator::names().join(","), buf, len, needed) }
}

/// The accelerator's name (`"cpu"`, ...) (two-call pattern).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_name(
    accel: *const dsrs_accelerator,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        write_str_out(a.name(), buf, len, needed)
    }
}

/// A JSON description: name, devices (name, total and available memory), current device,
/// communication backend, dtype support, memory statistics, backend details (two-call
/// pattern; live figures may change length between calls — retry on BUFFER_TOO_SMALL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_info_json(
    accel: *const dsrs_accelerator,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        write_str_out(&a.describe().to_string(), buf, len, needed)
    }
}

/// Whether the accelerator is usable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_is_available(
    accel: *const dsrs_accelerator,
    out: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.is_available());
        Ok(())
    }
}

/// The DLPack device type of the accelerator's device memory (`kDLCPU`, `kDLCUDA`, ...).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_device_type(
    accel: *const dsrs_accelerator,
    out: *mut i32,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.dlpack_device_type());
        Ok(())
    }
}

/// The collective-communication engine for this accelerator (`"mpi"`, `"nccl"`) (two-call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_communication_backend(
    accel: *const dsrs_accelerator,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        write_str_out(a.communication_backend_name(), buf, len, needed)
    }
}

/// DeepSpeed's `is_synchronized_device`: work completes when it is submitted (CPU).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_is_synchronized_device(
    accel: *const dsrs_accelerator,
    out: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.is_synchronized_device());
        Ok(())
    }
}

/// Number of devices.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_device_count(
    accel: *const dsrs_accelerator,
    out: *mut u32,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        out.write(u32::try_from(a.device_count()).unwrap_or(u32::MAX));
        Ok(())
    }
}

/// A device's name (the CPU model, the GPU's name); `device = -1` is the current device
/// (two-call pattern).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_device_name(
    accel: *const dsrs_accelerator,
    device: i32,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        let name = a.device_name(arg_device(device, "device")?)?;
        write_str_out(&name, buf, len, needed)
    }
}

/// A device's properties as a JSON object (two-call pattern): `index`, `name`, `uuid`
/// (`"GPU-…"` on CUDA, else null), `compute_capability` (`[major, minor]` on CUDA, else
/// null), `multiprocessors`, `total_memory`, `pci_bus_id`. `device` is -1 for the current
/// device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_device_properties_json(
    accel: *const dsrs_accelerator,
    device: i32,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        let p = a.device_properties(arg_device(device, "device")?)?;
        let text = serde_json::to_string(&p).map_err(|e| FfiError::from(crate::Error::Internal(e.to_string())))?;
        write_str_out(&text, buf, len, needed)
    }
}

/// Loads an accelerator plugin — a shared library exporting
/// `dsrs_accelerator_plugin_entry` that returns a `dsrs_accelerator_plugin_v1` table — and
/// registers its accelerator: it joins detection (before cuda and cpu) and can be created
/// by name or chosen with `DSRS_ACCELERATOR`. Loading the same file twice is a no-op. A
/// file that is not such a plugin, declares another plugin ABI version, or leaves a
/// required entry NULL fails with `DSRS_STATUS_PLUGIN_INVALID` naming the file and the
/// problem. Plugins are never unloaded. `DSRS_ACCELERATOR_PLUGINS=path:path` does the same
/// on first use of the factory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_load_plugin(path: *const c_char) -> dsrs_status {
    ffi_body! {
        let path = arg_str(path, "path")?;
        accelerator::plugin::load_plugin(path)?;
        Ok(())
    }
}

/// Makes `device` the calling thread's current device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_set_device(
    accel: *mut dsrs_accelerator,
    device: i32,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        if device < 0 {
            return Err(FfiError::range("device", format_args!("must be >= 0, got {device}")));
        }
        a.set_device(device as usize)?;
        Ok(())
    }
}

/// The calling thread's current device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_current_device(
    accel: *const dsrs_accelerator,
    out: *mut i32,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.current_device() as i32);
        Ok(())
    }
}

/// Waits for all work on `device` (-1: current device).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_synchronize(
    accel: *const dsrs_accelerator,
    device: i32,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        a.synchronize(arg_device(device, "device")?)?;
        Ok(())
    }
}

/// Shared body of the memory getters below.
fn memory_getter(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
    get: impl FnOnce(&dyn Accelerator, Option<usize>) -> crate::Result<u64>,
) -> super::FfiResult {
    let out = Out::new(out, "out")?;
    let a = accel_arg(accel, "accel")?;
    let v = get(a.as_ref(), arg_device(device, "device")?)?;
    out.write(v);
    Ok(())
}

/// Total memory of `device` (-1: current) in bytes (the OS's figure, tightened by
/// cgroup and `memory_limit`, on the CPU).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_total_memory(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! { memory_getter(accel, device, out, |a, d| a.total_memory(d)) }
}

/// Memory available for new allocations on `device` (-1: current), in bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_available_memory(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! { memory_getter(accel, device, out, |a, d| a.available_memory(d)) }
}

/// Bytes the library currently has allocated on `device` (-1: current).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_memory_allocated(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! { memory_getter(accel, device, out, |a, d| a.memory_allocated(d)) }
}

/// Peak of `dsrs_accelerator_memory_allocated` since creation or the last reset.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_max_memory_allocated(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! { memory_getter(accel, device, out, |a, d| a.max_memory_allocated(d)) }
}

/// Bytes reserved from the system on `device` (-1: current); equals allocated on the CPU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_memory_reserved(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! { memory_getter(accel, device, out, |a, d| a.memory_reserved(d)) }
}

/// Peak of `dsrs_accelerator_memory_reserved` since creation or the last reset.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_max_memory_reserved(
    accel: *const dsrs_accelerator,
    device: i32,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! { memory_getter(accel, device, out, |a, d| a.max_memory_reserved(d)) }
}

/// Resets the peak memory statistics of `device` (-1: current) to the current values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_reset_peak_memory_stats(
    accel: *mut dsrs_accelerator,
    device: i32,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        a.reset_peak_memory_stats(arg_device(device, "device")?)?;
        Ok(())
    }
}

/// Returns cached, unused memory to the system.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_empty_cache(accel: *mut dsrs_accelerator) -> dsrs_status {
    ffi_body! {
        accel_arg(accel, "accel")?.empty_cache()?;
        Ok(())
    }
}

/// Memory statistics of `device` (-1: current) as a JSON object with PyTorch's key names
/// (`"allocated_bytes.all.current"`, `"allocated_bytes.all.peak"`, ...) plus
/// `"total_bytes"` and `"available_bytes"` (two-call pattern; retry on BUFFER_TOO_SMALL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_memory_stats_json(
    accel: *const dsrs_accelerator,
    device: i32,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        let stats = a.memory_stats_json(arg_device(device, "device")?)?;
        write_str_out(&stats.to_string(), buf, len, needed)
    }
}

/// Whether `dtype` is supported (buffers and kernels accept it) and native (the hardware
/// computes in or converts it efficiently). `dtype.lanes` must be 1.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_dtype_supported(
    accel: *const dsrs_accelerator,
    dtype: DLDataType,
    supported: *mut bool,
    native: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let supported = Out::new(supported, "supported")?;
        let native = Out::new(native, "native")?;
        let a = accel_arg(accel, "accel")?;
        let t = DType::from_dl(dtype)?;
        let s = a.dtype_support(t);
        supported.write(s.supported);
        native.write(s.native);
        Ok(())
    }
}

/// DeepSpeed's `is_bf16_supported`: bf16 is native (on the CPU: AVX-512 BF16, AMX-BF16 or
/// Arm BF16).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_is_bf16_supported(
    accel: *const dsrs_accelerator,
    out: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.is_bf16_supported());
        Ok(())
    }
}

/// DeepSpeed's `is_fp16_supported`: fp16 is native (on the CPU: F16C, AVX-512 FP16 or Arm
/// FP16).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_is_fp16_supported(
    accel: *const dsrs_accelerator,
    out: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.is_fp16_supported());
        Ok(())
    }
}

/// Seeds the current device's Philox generator and resets its offset to 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_manual_seed(
    accel: *mut dsrs_accelerator,
    seed: u64,
) -> dsrs_status {
    ffi_body! {
        accel_arg(accel, "accel")?.manual_seed(seed)?;
        Ok(())
    }
}

/// The seed of the current device's generator.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_initial_seed(
    accel: *const dsrs_accelerator,
    out: *mut u64,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.initial_seed());
        Ok(())
    }
}

/// The generator's state as bytes (24 bytes: `"DSRSPHX1"`, seed, offset; little-endian),
/// two-call pattern. Restore it with `dsrs_accelerator_set_rng_state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_rng_state(
    accel: *const dsrs_accelerator,
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        write_bytes_out(&a.rng_state()?, buf, len, needed, false)
    }
}

/// Restores a state from `dsrs_accelerator_rng_state`; malformed bytes are refused
/// (`DSRS_STATUS_FORMAT`) and the generator is left unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_set_rng_state(
    accel: *mut dsrs_accelerator,
    state: *const u8,
    len: usize,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        let bytes = arg_slice(state, len, "state")?;
        a.set_rng_state(bytes)?;
        Ok(())
    }
}

/// Fills a contiguous tensor (float16, bfloat16, float32, float64 for UNIFORM and NORMAL;
/// 32/64-bit integers for BITS) with numbers from the accelerator's Philox generator, on
/// `stream` (NULL: the current stream), and advances the generator. The tensor must live
/// on this accelerator (or in host memory for the CPU accelerator). The same seed gives the
/// same numbers on every accelerator (docs/accelerators.md, "Random numbers").
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_rng_fill(
    accel: *mut dsrs_accelerator,
    tensor: *const DLTensor,
    distribution: dsrs_distribution,
    a: f64,
    b: f64,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let acc = accel_arg(accel, "accel")?;
        let t = arg_ref(tensor, "tensor")?;
        let dist = match distribution {
            DSRS_DISTRIBUTION_UNIFORM => Distribution::Uniform { low: a, high: b },
            DSRS_DISTRIBUTION_NORMAL => Distribution::Normal { mean: a, std: b },
            DSRS_DISTRIBUTION_BITS => Distribution::Bits,
            d => {
                return Err(FfiError::range(
                    "distribution",
                    format_args!("must be DSRS_DISTRIBUTION_UNIFORM (0), _NORMAL (1) or _BITS (2), got {d}"),
                ));
            }
        };
        // SAFETY: shape/strides validity is the caller's contract for a DLTensor.
        let t = unsafe { TensorRef::from_raw(t, "tensor") }?;
        if !t.contiguous {
            return Err(FfiError::new(
                super::status::dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
                "argument 'tensor' is not contiguous (strides must be NULL or compact row-major)",
            ));
        }
        let s = super::stream::opt_stream_arg(stream, &acc)?;
        // SAFETY: the DLTensor's memory is the caller's contract.
        unsafe { acc.rng_fill(&t, dist, s.as_deref()) }?;
        Ok(())
    }
}

/// Opens a named profiling range on the calling thread (NVTX on CUDA; a log record with
/// its duration on the CPU when `dsrs_accelerator_range_pop` closes it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_range_push(
    accel: *mut dsrs_accelerator,
    name: *const c_char,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        a.range_push(arg_str(name, "name")?)?;
        Ok(())
    }
}

/// Closes the innermost range of the calling thread; `DSRS_STATUS_INVALID_STATE` if none
/// is open.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_range_pop(accel: *mut dsrs_accelerator) -> dsrs_status {
    ffi_body! {
        accel_arg(accel, "accel")?.range_pop()?;
        Ok(())
    }
}

/// Whether `ptr` lies in page-locked host memory allocated by this accelerator
/// (`DSRS_MEMORY_PINNED` buffers). Any pointer value is accepted; it is not dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_is_pinned(
    accel: *const dsrs_accelerator,
    ptr: *const c_void,
    out: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(accel_arg(accel, "accel")?.is_pinned(ptr as usize));
        Ok(())
    }
}
