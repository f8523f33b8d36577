//! Library-wide functions: versions, status names, the last error, logging, the report.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;

use super::status::dsrs_status::*;
use super::{FfiError, Out, arg_opt_str, dsrs_status, write_str_out};
use crate::ffi_body;
use crate::log::{self, Level};

/// Major version of deepspeed_rs.
pub const DSRS_VERSION_MAJOR: u32 = 0;
/// Minor version of deepspeed_rs.
pub const DSRS_VERSION_MINOR: u32 = 1;
/// Patch version of deepspeed_rs.
pub const DSRS_VERSION_PATCH: u32 = 0;
/// The C ABI version this header describes; compare with `dsrs_abi_version()` at run time.
pub const DSRS_ABI_VERSION: u32 = 1;

/// A log level, and the level filter of `dsrs_set_log_level`.
pub type dsrs_log_level = i32;
/// Logging off (filter only).
pub const DSRS_LOG_OFF: dsrs_log_level = 0;
/// Failures.
pub const DSRS_LOG_ERROR: dsrs_log_level = 1;
/// Suspicious situations that did not fail.
pub const DSRS_LOG_WARN: dsrs_log_level = 2;
/// Choices the library makes (which accelerator, which kernel).
pub const DSRS_LOG_INFO: dsrs_log_level = 3;
/// Details for debugging a host, including every failed call.
pub const DSRS_LOG_DEBUG: dsrs_log_level = 4;
/// Very detailed tracing.
pub const DSRS_LOG_TRACE: dsrs_log_level = 5;

/// Receives log records. `target` is the library area (`"accelerator"`, `"ffi"`, ...);
/// both strings are NUL-terminated UTF-8, valid only during the call. May be called on any
/// thread, concurrently; it may call deepspeed_rs functions (records it causes on the same
/// thread are dropped rather than recursing).
pub type dsrs_log_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: dsrs_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// The version of the loaded library, e.g. `"0.1.0"` (static storage; never fails).
#[unsafe(no_mangle)]
pub extern "C" fn dsrs_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The C ABI version of the loaded library. Compare it with `DSRS_ABI_VERSION` from the
/// header you compiled against; they must be equal (never fails).
#[unsafe(no_mangle)]
pub extern "C" fn dsrs_abi_version() -> u32 {
    crate::ABI_VERSION
}

/// The name of a status value, e.g. `"DSRS_STATUS_OUT_OF_RANGE"`, or
/// `"DSRS_STATUS_UNKNOWN"` for a value that is not a status (static storage; never fails).
#[unsafe(no_mangle)]
pub extern "C" fn dsrs_status_str(status: i32) -> *const c_char {
    match dsrs_status::from_i32(status) {
        Some(s) => s.name_with_nul().as_ptr().cast(),
        None => c"DSRS_STATUS_UNKNOWN".as_ptr(),
    }
}

/// Copies the calling thread's last error message (UTF-8, NUL-terminated) into `buf`.
/// The message names the failing function and the argument, value or file at fault; it is
/// empty when no call has failed on this thread since it started or since
/// `dsrs_clear_last_error`. Two-call pattern: `(NULL, 0)` stores the size needed (including
/// the NUL) in `*needed`; a too-small `buf` gets `DSRS_STATUS_BUFFER_TOO_SMALL` and
/// `*needed`. This function never changes the stored message, even when it fails.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_last_error_message(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    let message = super::last_error().map(|(_, m)| m).unwrap_or_default();
    // Not ffi_body!: failures here must not replace the message being read.
    let r = std::panic::catch_unwind(|| write_str_out(&message, buf, len, needed));
    match r {
        Ok(Ok(())) => DSRS_STATUS_OK,
        Ok(Err(e)) => e.status,
        Err(_) => DSRS_STATUS_PANIC,
    }
}

/// The status of the calling thread's last failure (`DSRS_STATUS_OK` if none) in `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_last_error_status(out: *mut dsrs_status) -> dsrs_status {
    if out.is_null() {
        return DSRS_STATUS_NULL_ARGUMENT; // deliberately leaves the stored error in place
    }
    let s = super::last_error().map_or(DSRS_STATUS_OK, |(s, _)| s);
    // SAFETY: non-NULL checked.
    unsafe { out.write(s) };
    DSRS_STATUS_OK
}

/// Forgets the calling thread's last error.
#[unsafe(no_mangle)]
pub extern "C" fn dsrs_clear_last_error() -> dsrs_status {
    super::clear_last_error();
    DSRS_STATUS_OK
}

struct UserData(*mut c_void);
// SAFETY: the host promises that its callback may be invoked from any thread with this
// user_data (documented on dsrs_set_log_callback).
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

impl UserData {
    // A method (not `.0`) so closures capture the Send + Sync wrapper, not the raw pointer.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// Installs `cb` as the log sink, replacing standard error; `cb = NULL` restores the
/// standard-error sink. `user_data` is passed to every call; it must stay valid until the
/// callback is replaced (a record already being delivered on another thread may still
/// use the old pair briefly after this returns). Records are filtered by
/// `dsrs_set_log_level` (default: the `DSRS_LOG` environment variable, else `DSRS_LOG_WARN`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_set_log_callback(
    cb: dsrs_log_callback,
    user_data: *mut c_void,
) -> dsrs_status {
    ffi_body! {
        match cb {
            None => log::set_sink(None),
            Some(f) => {
                let ud = UserData(user_data);
                log::set_sink(Some(Arc::new(move |level: Level, target: &str, message: &str| {
                    let t = c_string(target);
                    let m = c_string(message);
                    // SAFETY: the host supplied the function and user_data for this purpose.
                    unsafe { f(ud.get(), level as i32, t.as_ptr(), m.as_ptr()) };
                })));
            }
        }
        Ok(())
    }
}

/// Sets the log level filter: `DSRS_LOG_OFF` (0) to `DSRS_LOG_TRACE` (5). Overrides the
/// `DSRS_LOG` environment variable.
#[unsafe(no_mangle)]
pub extern "C" fn dsrs_set_log_level(level: dsrs_log_level) -> dsrs_status {
    ffi_body! {
        let filter = match level {
            0 => None,
            l => Some(Level::from_i32(l).ok_or_else(|| {
                FfiError::range("level", format_args!("must be DSRS_LOG_OFF (0) to DSRS_LOG_TRACE (5), got {l}"))
            })?),
        };
        log::set_max_level(filter);
        Ok(())
    }
}

/// The current log level filter in `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_get_log_level(out: *mut dsrs_log_level) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(log::max_level().map_or(DSRS_LOG_OFF, |l| l as i32));
        Ok(())
    }
}

/// Emits one log record through the library's sink (for hosts that want their messages
/// interleaved with the library's). `target` may be NULL (`"host"`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_log(
    level: dsrs_log_level,
    target: *const c_char,
    message: *const c_char,
) -> dsrs_status {
    ffi_body! {
        let lvl = Level::from_i32(level).ok_or_else(|| {
            FfiError::range("level", format_args!("must be DSRS_LOG_ERROR (1) to DSRS_LOG_TRACE (5), got {level}"))
        })?;
        let target = arg_opt_str(target, "target")?.unwrap_or("host");
        let message = super::arg_str(message, "message")?;
        log::log(lvl, target, format_args!("{message}"));
        Ok(())
    }
}

/// Writes the environment report (what `dsrs report --json` prints) as JSON into `buf`,
/// two-call pattern. The report contains live figures (free memory), so its length can
/// change between calls: retry while the result is `DSRS_STATUS_BUFFER_TOO_SMALL`.
/// Selects the current accelerator if none is yet; the selection error, if any, is in the
/// report's `"error"` field rather than the status.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_report_json(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> dsrs_status {
    ffi_body! {
        if needed.is_null() {
            return Err(FfiError::null("needed"));
        }
        let text = crate::report::Report::gather().to_json().to_string();
        write_str_out(&text, buf, len, needed)
    }
}

/// Panics inside the library, on purpose, with `message` (or a default text when NULL).
/// Lets hosts and bindings check their handling of `DSRS_STATUS_PANIC`; the library stays
/// usable afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_debug_panic(message: *const c_char) -> dsrs_status {
    ffi_body! {
        let m = arg_opt_str(message, "message")?.unwrap_or("dsrs_debug_panic called");
        panic!("{m}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo_toml() {
        assert_eq!(
            DSRS_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            DSRS_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            DSRS_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        assert_eq!(DSRS_ABI_VERSION, crate::ABI_VERSION);
        let v = unsafe { std::ffi::CStr::from_ptr(dsrs_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn status_names_cover_unknown_values() {
        let s = |v| {
            unsafe { std::ffi::CStr::from_ptr(dsrs_status_str(v)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(s(0), "DSRS_STATUS_OK");
        assert_eq!(s(901), "DSRS_STATUS_PANIC");
        assert_eq!(s(-7), "DSRS_STATUS_UNKNOWN");
    }
}
