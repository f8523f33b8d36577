//! NVTX profiling ranges, when the NVTX library is present.
//!
//! Looked up once: `DSRS_NVTX_LIB` (a path), else `libnvToolsExt.so.1` and
//! `libnvToolsExt.so` (CUDA ≤ 12 ship it; Nsight Systems picks the ranges up). Without it,
//! ranges are still tracked on the host (and logged with their duration).

use std::ffi::{CString, c_char, c_int};
use std::sync::OnceLock;

/// The resolved NVTX entry points.
pub(crate) struct Nvtx {
    /// Where the library was loaded from.
    pub path: String,
    push: unsafe extern "C" fn(*const c_char) -> c_int,
    pop: unsafe extern "C" fn() -> c_int,
    _lib: libloading::Library,
}

/// The NVTX library, or why it is absent.
pub(crate) fn get() -> Result<&'static Nvtx, &'static str> {
    static NVTX: OnceLock<Result<Nvtx, String>> = OnceLock::new();
    NVTX.get_or_init(load).as_ref().map_err(|e| e.as_str())
}

fn load() -> Result<Nvtx, String> {
    let candidates: Vec<String> = match std::env::var("DSRS_NVTX_LIB") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["libnvToolsExt.so.1".into(), "libnvToolsExt.so".into()],
    };
    let mut errors = Vec::new();
    for c in &candidates {
        // SAFETY: loading NVTX runs no initialisation code with preconditions.
        match unsafe { libloading::Library::new(c) } {
            Ok(lib) => {
                // SAFETY: the signatures are NVTX's C API.
                let syms = unsafe {
                    lib.get::<unsafe extern "C" fn(*const c_char) -> c_int>(b"nvtxRangePushA\0")
                        .map(|s| *s)
                        .and_then(|push| {
                            lib.get::<unsafe extern "C" fn() -> c_int>(b"nvtxRangePop\0")
                                .map(|pop| (push, *pop))
                        })
                };
                match syms {
                    Ok((push, pop)) => {
                        return Ok(Nvtx {
                            path: c.clone(),
                            push,
                            pop,
                            _lib: lib,
                        });
                    }
                    Err(e) => errors.push(format!("{c}: {e}")),
                }
            }
            Err(e) => errors.push(format!("{c}: {e}")),
        }
    }
    Err(format!(
        "the NVTX library was not found ({}); ranges are tracked on the host only",
        errors.join("; ")
    ))
}

impl Nvtx {
    /// Opens a range.
    pub(crate) fn push(&self, name: &str) {
        let c = CString::new(name.replace('\0', " ")).unwrap_or_default();
        // SAFETY: c is a valid NUL-terminated string for the call.
        unsafe { (self.push)(c.as_ptr()) };
    }

    /// Closes the innermost range.
    pub(crate) fn pop(&self) {
        // SAFETY: no arguments.
        unsafe { (self.pop)() };
    }
}
