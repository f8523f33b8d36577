//! `dsrs_op_*`: the op registry and JIT — define ops at run time, build and load them
//! (prebuilt, cached or compiled), and get their symbols.

use std::ffi::{c_char, c_void};

use super::handle::{get, insert, remove};
use super::{FfiError, Out, arg_opt_str, arg_str, dsrs_op, dsrs_status, write_str_out};
use crate::ops::{self, BuildOptions, OpKind};
use crate::{dsrs_warn, ffi_body};

/// Defines (or redefines) an op at run time from a JSON description, so a host can build
/// and load its own kernels through the same cache and ABI as the built-in ops:
///
/// ```json
/// { "name": "my_op", "kind": "cpu",
///   "sources": [ { "name": "my_op.cpp", "text": "..." }, { "path": "/abs/other.cpp" } ],
///   "headers": [ { "name": "my_op.h", "text": "..." } ],
///   "include_dirs": ["/abs/include"], "defines": { "N": "4" }, "flags": ["-ffast-math"],
///   "symbols": ["my_op_run"], "min_compute_capability": "8.0" }
/// ```
/// Only `name` (lowercase letters, digits, `_`) and `sources` are required; `kind` is
/// `"cpu"` (default) or `"cuda"` (one source). Sources may `#include "dsrs_op.h"` for
/// `DSRS_OP_EXPORT` and `DSRS_SIMD_LEVEL`; every symbol listed in `symbols` must be
/// exported (`extern "C"`), which is checked after each build. Built-in ops cannot be
/// redefined. Errors: `DSRS_STATUS_INVALID_JSON`, `DSRS_STATUS_INVALID_CONFIG` (naming the
/// field).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_define(spec_json: *const c_char) -> dsrs_status {
    ffi_body! {
        let spec = arg_str(spec_json, "spec_json")?;
        ops::define_json(spec)?;
        Ok(())
    }
}

/// Loads op `name`, building it if needed, and writes a new handle to `*out` (free it with
/// `dsrs_op_free`). In order of preference: the op compiled into the library
/// (`DSRS_BUILD_OPS=1`) when this CPU can run it; the cache's build after its SHA-256 is
/// verified (a tampered artifact is rebuilt with a warning); a fresh build under a per-key
/// lock (concurrent processes compile once). `options_json` may be NULL or an object with
/// any of: `portable`, `debug`, `force_rebuild`, `prebuilt` (booleans), `simd` (`"avx2"`, `"scalar"`: a lower SIMD level than the machine's), `cuda_arch`
/// (`"sm_90"`, `"compute_80"`), `nvcc` (boolean), `lock_timeout_s` (number), `cache_dir`
/// (absolute path). Errors: `DSRS_STATUS_UNKNOWN_OP`, `DSRS_STATUS_OP_INCOMPATIBLE` (every
/// reason, e.g. the C++ compiler named by `CXX` is missing), `DSRS_STATUS_BUILD_FAILED`
/// (the command, the compiler's first lines of output, the full log's path),
/// `DSRS_STATUS_UNSAFE_CACHE`, `DSRS_STATUS_LOAD_FAILED`, `DSRS_STATUS_LOCK_TIMEOUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_load(
    name: *const c_char,
    options_json: *const c_char,
    out: *mut *mut dsrs_op,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let name = arg_str(name, "name")?;
        let options = BuildOptions::from_json(arg_opt_str(options_json, "options_json")?)?;
        let op = ops::load(name, &options)?;
        out.write(insert(op)?);
        Ok(())
    }
}

/// Releases an op handle. The op's code stays loaded for the life of the process, so
/// symbol addresses obtained from it remain valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_free(op: *mut dsrs_op) -> dsrs_status {
    ffi_body! {
        remove(op, "op").inspect_err(|e| dsrs_warn!("ffi", "dsrs_op_free: {}", e.message))
    }
}

/// The address of exported symbol `symbol` of a CPU op (a function or a variable; cast it
/// to its real type). Valid for the life of the process. Errors:
/// `DSRS_STATUS_SYMBOL_NOT_FOUND` (the message lists the op's declared symbols),
/// `DSRS_STATUS_INVALID_ARGUMENT` for a CUDA op (use `dsrs_op_kernel`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_symbol(
    op: *const dsrs_op,
    symbol: *const c_char,
    out: *mut *mut c_void,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let op = get(op, "op")?;
        let symbol = arg_str(symbol, "symbol")?;
        if op.kind() == OpKind::Cuda {
            return Err(FfiError::new(
                dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
                format!("op '{}' is a CUDA op: get its kernels with dsrs_op_kernel", op.name()),
            ));
        }
        out.write(op.symbol(symbol, 0)?);
        Ok(())
    }
}

/// The kernel `symbol` of a CUDA op as a `CUfunction` (written as `void*`) in the primary
/// context of CUDA device `device`, loading the op's module there on first use; launch it
/// with `cuLaunchKernel`. Errors: `DSRS_STATUS_UNAVAILABLE` without a CUDA device,
/// `DSRS_STATUS_SYMBOL_NOT_FOUND`, `DSRS_STATUS_INVALID_ARGUMENT` for a CPU op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_kernel(
    op: *const dsrs_op,
    device: i32,
    symbol: *const c_char,
    out: *mut *mut c_void,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let op = get(op, "op")?;
        let symbol = arg_str(symbol, "symbol")?;
        if device < 0 {
            return Err(FfiError::range("device", format_args!("must be a CUDA device index >= 0, got {device}")));
        }
        if op.kind() != OpKind::Cuda {
            return Err(FfiError::new(
                dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
                format!("op '{}' is a CPU op: get its functions with dsrs_op_symbol", op.name()),
            ));
        }
        out.write(op.symbol(symbol, device as usize)?);
        Ok(())
    }
}

/// The compiled image of a CUDA op (CUBIN, or PTX text without a NUL), for hosts that load
/// modules themselves. `*data` stays valid for the life of the process. Errors:
/// `DSRS_STATUS_INVALID_ARGUMENT` for a CPU op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_image(
    op: *const dsrs_op,
    data: *mut *const u8,
    len: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let data = Out::new(data, "data")?;
        let len = Out::new(len, "len")?;
        let op = get(op, "op")?;
        let image = op.cuda_image().ok_or_else(|| {
            FfiError::new(
                dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
                format!("op '{}' is a CPU op: it has no CUDA image", op.name()),
            )
        })?;
        // The LoadedOp lives in the process-wide table of loaded ops, so the bytes never move.
        data.write(image.as_ptr());
        len.write(image.len());
        Ok(())
    }
}

/// A JSON description of a loaded op: `name`, `kind`, `origin` (`"prebuilt"`, `"cached"`
/// or `"built"`), `key`, `target` (`"native:avx512"`, `"sm_90"`, ...), `dir`, `manifest`
/// (with the artifact's SHA-256 and the build command), `symbols`, `load_ms`. Two-call
/// output, as `dsrs_report_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_info_json(
    op: *const dsrs_op,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let op = get(op, "op")?;
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        write_str_out(&op.describe().to_string(), buf, len, needed)
    }
}

/// Every registered op (built-in, then defined at run time) as a JSON array of objects
/// with `name`, `kind`, `builtin`, `description`, `prebuilt`, `incompatible` (the reasons;
/// empty when compatible), `cached` and `key`, for the build options in `options_json`
/// (NULL: defaults). Two-call output.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_list_json(
    options_json: *const c_char,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        let options = BuildOptions::from_json(arg_opt_str(options_json, "options_json")?)?;
        let list = serde_json::to_string(&ops::status_all(&options))
            .map_err(|e| FfiError::new(dsrs_status::DSRS_STATUS_INTERNAL, e.to_string()))?;
        write_str_out(&list, buf, len, needed)
    }
}

/// The op cache directory in force (`DSRS_CACHE_DIR`, else `$XDG_CACHE_HOME/deepspeed_rs`,
/// else `~/.cache/deepspeed_rs`), created private if missing. Errors:
/// `DSRS_STATUS_UNSAFE_CACHE` when it is owned by someone else or writable by others (the
/// message says how to fix it). Two-call output.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_op_cache_dir(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        let cache = ops::Cache::open_default()?;
        write_str_out(&cache.root().to_string_lossy(), buf, len, needed)
    }
}
