//! The one door to the CUDA driver: every call goes through [`check`], which turns a
//! `CUresult` into our error type and a cudarc panic (a library or symbol missing) into an
//! error too, so nothing below can abort the host process.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::driver::sys::{self, CUresult};

use crate::error::{Error, Result};

/// The driver's name for a result (`CUDA_ERROR_OUT_OF_MEMORY`) and its description.
pub(crate) fn describe(r: CUresult) -> String {
    let e = cudarc::driver::DriverError(r);
    let name = catch_unwind(|| e.error_name().map(|s| s.to_string_lossy().into_owned()))
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_else(|| format!("{r:?}"));
    let text = catch_unwind(|| e.error_string().map(|s| s.to_string_lossy().into_owned()))
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    if text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    }
}

pub(crate) fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs one driver call. `what` names the operation for the message
/// ("allocating 4096 bytes on CUDA device 0").
pub(crate) fn check(what: impl FnOnce() -> String, f: impl FnOnce() -> CUresult) -> Result<()> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(CUresult::CUDA_SUCCESS) => Ok(()),
        Ok(r) => Err(error(what(), r)),
        Err(p) => Err(Error::Device(format!(
            "{}: the CUDA driver library is missing a function this build needs ({}); the installed driver is probably older than CUDA 12.0",
            what(),
            panic_text(p)
        ))),
    }
}

/// Like [`check`], but reports `CUDA_ERROR_NOT_READY` as `Ok(false)` (queries).
pub(crate) fn query(what: impl FnOnce() -> String, f: impl FnOnce() -> CUresult) -> Result<bool> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(CUresult::CUDA_SUCCESS) => Ok(true),
        Ok(CUresult::CUDA_ERROR_NOT_READY) => Ok(false),
        Ok(r) => Err(error(what(), r)),
        Err(p) => Err(Error::Device(format!("{}: {}", what(), panic_text(p)))),
    }
}

/// A driver error with context; out-of-memory keeps its own kind.
pub(crate) fn error(what: String, r: CUresult) -> Error {
    let msg = format!("{what}: {}", describe(r));
    match r {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory(msg),
        CUresult::CUDA_ERROR_INVALID_VALUE => Error::invalid(msg),
        CUresult::CUDA_ERROR_NOT_SUPPORTED | CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED => {
            Error::Unsupported(msg)
        }
        CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        | CUresult::CUDA_ERROR_STREAM_CAPTURE_UNMATCHED
        | CUresult::CUDA_ERROR_STREAM_CAPTURE_UNJOINED
        | CUresult::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD
        | CUresult::CUDA_ERROR_ILLEGAL_STATE => Error::InvalidState(msg),
        _ => Error::Device(msg),
    }
}

/// A driver handle (context, stream, event, pool, graph) that may cross threads: the
/// driver API is thread-safe for all of them except where noted at the use site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw<T>(pub T);
// SAFETY: CUDA driver handles are plain identifiers usable from any thread.
unsafe impl<T> Send for Raw<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Raw<T> {}

/// One integer attribute of a device.
pub(crate) fn attribute(dev: sys::CUdevice, attr: sys::CUdevice_attribute) -> Result<i32> {
    let mut v = 0;
    check(
        || format!("cuDeviceGetAttribute({attr:?})"),
        // SAFETY: v is a valid out-pointer.
        || unsafe { sys::cuDeviceGetAttribute(&mut v, attr, dev) },
    )?;
    Ok(v)
}

/// The driver's CUDA version (`12080` for 12.8).
pub(crate) fn driver_version() -> Result<i32> {
    let mut v = 0;
    check(
        || "cuDriverGetVersion".into(),
        // SAFETY: v is a valid out-pointer.
        || unsafe { sys::cuDriverGetVersion(&mut v) },
    )?;
    Ok(v)
}
