//! CUDA detection through cudarc, loaded at run time.
//!
//! Nothing links against CUDA: cudarc `dlopen`s the driver library (`libcuda.so`,
//! `libcuda.so.1`, ...) on first use. cudarc panics when the library is missing, so the
//! probe checks for it first and keeps every call inside `catch_unwind`; a machine with no
//! driver, or a driver but no device, gets a reason — never a panic or an abort.
//!
//! [`CudaAccelerator`] drives the devices: primary contexts, stream-ordered memory pools,
//! pinned memory, streams, events, graphs, NVTX ranges and the Philox kernels.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::Serialize;

mod accel;
pub(crate) mod driver;
mod nvtx;
mod stream;

pub use accel::{CudaAccelerator, CudaOptions, MIN_DRIVER_VERSION};
pub use stream::{CudaEvent, CudaGraph, CudaStream};

/// What the CUDA probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CudaProbe {
    /// The driver library could be loaded.
    pub driver_loaded: bool,
    /// The driver's CUDA version as `major * 1000 + minor * 10` (e.g. 12080), when known.
    pub driver_version: Option<i32>,
    /// Number of CUDA devices the driver reports.
    pub device_count: usize,
    /// Why CUDA cannot be used, or `None` when devices are present.
    pub reason: Option<String>,
}

impl CudaProbe {
    /// `"12.8"` for 12080.
    pub fn driver_version_string(&self) -> Option<String> {
        self.driver_version
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
    }
}

/// The probe result, computed once per process.
pub fn probe() -> &'static CudaProbe {
    static PROBE: OnceLock<CudaProbe> = OnceLock::new();
    PROBE.get_or_init(probe_uncached)
}

use driver::panic_text;

/// Probes the CUDA driver now (no caching).
pub fn probe_uncached() -> CudaProbe {
    // SAFETY: only tries to dlopen the candidate library names and closes them again.
    let present =
        catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false);
    if !present {
        return CudaProbe {
            driver_loaded: false,
            driver_version: None,
            device_count: 0,
            reason: Some(
                "the CUDA driver library (libcuda.so.1) was not found; install the NVIDIA driver or add its directory to LD_LIBRARY_PATH"
                    .into(),
            ),
        };
    }
    let count = catch_unwind(AssertUnwindSafe(cudarc::driver::CudaContext::device_count));
    let (device_count, reason) = match count {
        Ok(Ok(n)) if n > 0 => (n as usize, None),
        Ok(Ok(_)) => (
            0,
            Some("the CUDA driver loaded but reports no CUDA device".to_string()),
        ),
        Ok(Err(e)) => (
            0,
            Some(format!(
                "the CUDA driver loaded but reports no usable device: {} ({})",
                e.error_string()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                e.error_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )),
        ),
        Err(p) => (
            0,
            Some(format!(
                "the CUDA driver library could not be used: {}",
                panic_text(p)
            )),
        ),
    };
    // Ask the version only of a driver that works (a stand-in library may lack the symbol).
    let driver_version = if device_count > 0 {
        catch_unwind(|| {
            let mut v: std::ffi::c_int = 0;
            // SAFETY: v is a valid out-pointer; the library is loaded.
            let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
            (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
        })
        .ok()
        .flatten()
    } else {
        None
    };
    let reason = match (reason, driver_version) {
        (None, Some(v)) if v < MIN_DRIVER_VERSION => Some(format!(
            "the CUDA driver supports CUDA {}.{}, older than the oldest supported, 12.0; update the NVIDIA driver to R525 or newer",
            v / 1000,
            v % 1000 / 10
        )),
        (r, _) => r,
    };
    CudaProbe {
        driver_loaded: true,
        driver_version,
        device_count,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_never_panics_and_is_consistent() {
        let p = probe_uncached();
        assert_eq!(p.reason.is_none(), p.device_count > 0, "{p:?}");
        if !p.driver_loaded {
            assert!(p.reason.as_deref().unwrap().contains("libcuda"));
        }
        assert_eq!(&p, probe());
    }
}
