//! `dsrs_status`: the result of every C ABI function.

use crate::error::ErrorKind;

/// The result of a deepspeed_rs C function. 0 is success; failures are grouped in ranges:
/// 1xx arguments, 2xx handles and object state, 3xx configuration and data, 4xx accelerators
/// and devices, 5xx kernel builds, 6xx communication, 7xx training, 9xx internal. Values are
/// stable: they are never renumbered or reused. `dsrs_last_error_message` explains the most
/// recent failure on the calling thread.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum dsrs_status {
    /// Success.
    DSRS_STATUS_OK = 0,
    /// A required pointer argument is NULL.
    DSRS_STATUS_NULL_ARGUMENT = 100,
    /// An argument has an invalid value.
    DSRS_STATUS_INVALID_ARGUMENT = 101,
    /// An index, size, offset or enumeration value is out of range.
    DSRS_STATUS_OUT_OF_RANGE = 102,
    /// A string argument is not valid UTF-8.
    DSRS_STATUS_INVALID_UTF8 = 103,
    /// An output buffer is too small; the size out-parameter holds the size needed.
    DSRS_STATUS_BUFFER_TOO_SMALL = 104,
    /// A handle was not issued by this library (garbage or corrupted pointer).
    DSRS_STATUS_INVALID_HANDLE = 200,
    /// A handle was already freed (use after free, double free).
    DSRS_STATUS_STALE_HANDLE = 201,
    /// A handle of another type was passed (a buffer where an accelerator is expected).
    DSRS_STATUS_WRONG_HANDLE_TYPE = 202,
    /// The operation is not valid in the object's current state.
    DSRS_STATUS_INVALID_STATE = 203,
    /// A JSON document could not be parsed.
    DSRS_STATUS_INVALID_JSON = 300,
    /// A configuration or options document is invalid.
    DSRS_STATUS_INVALID_CONFIG = 301,
    /// A file could not be read or written.
    DSRS_STATUS_IO = 302,
    /// Serialized data is corrupt or in the wrong format.
    DSRS_STATUS_FORMAT = 303,
    /// No accelerator has that name.
    DSRS_STATUS_UNKNOWN_ACCELERATOR = 400,
    /// The accelerator, or a library it needs, is not available on this machine.
    DSRS_STATUS_UNAVAILABLE = 401,
    /// Out of memory, or a memory limit was reached.
    DSRS_STATUS_OUT_OF_MEMORY = 402,
    /// The operation or data type is not supported by this accelerator.
    DSRS_STATUS_UNSUPPORTED = 403,
    /// A device or driver call failed.
    DSRS_STATUS_DEVICE_ERROR = 404,
    /// An accelerator plugin could not be loaded or failed validation: not a shared
    /// library, no `dsrs_accelerator_plugin_entry`, another plugin ABI version, a table too
    /// small, a required entry NULL.
    DSRS_STATUS_PLUGIN_INVALID = 405,
    /// An op failed to compile; the message has the command, the compiler's first lines of
    /// output and the path of the full log.
    DSRS_STATUS_BUILD_FAILED = 500,
    /// An op cannot be built or loaded here (no C++ compiler, compiler too old, no NVRTC,
    /// compute capability too low); the message lists every reason.
    DSRS_STATUS_OP_INCOMPATIBLE = 501,
    /// No op has that name.
    DSRS_STATUS_UNKNOWN_OP = 502,
    /// A built op could not be loaded (dlopen failed, wrong op ABI version, a declared
    /// symbol missing).
    DSRS_STATUS_LOAD_FAILED = 503,
    /// The op cache directory is not private (owned by another user, or writable by others).
    DSRS_STATUS_UNSAFE_CACHE = 504,
    /// The op has no such symbol.
    DSRS_STATUS_SYMBOL_NOT_FOUND = 505,
    /// Waiting for another process's build of the same op timed out.
    DSRS_STATUS_LOCK_TIMEOUT = 506,
    /// An internal invariant was violated (a bug: please report it).
    DSRS_STATUS_INTERNAL = 900,
    /// A Rust panic was caught at the C boundary (a bug: please report it).
    DSRS_STATUS_PANIC = 901,
}

use dsrs_status::*;

/// Every status, in numeric order.
pub(crate) const ALL_STATUSES: [dsrs_status; 29] = [
    DSRS_STATUS_OK,
    DSRS_STATUS_NULL_ARGUMENT,
    DSRS_STATUS_INVALID_ARGUMENT,
    DSRS_STATUS_OUT_OF_RANGE,
    DSRS_STATUS_INVALID_UTF8,
    DSRS_STATUS_BUFFER_TOO_SMALL,
    DSRS_STATUS_INVALID_HANDLE,
    DSRS_STATUS_STALE_HANDLE,
    DSRS_STATUS_WRONG_HANDLE_TYPE,
    DSRS_STATUS_INVALID_STATE,
    DSRS_STATUS_INVALID_JSON,
    DSRS_STATUS_INVALID_CONFIG,
    DSRS_STATUS_IO,
    DSRS_STATUS_FORMAT,
    DSRS_STATUS_UNKNOWN_ACCELERATOR,
    DSRS_STATUS_UNAVAILABLE,
    DSRS_STATUS_OUT_OF_MEMORY,
    DSRS_STATUS_UNSUPPORTED,
    DSRS_STATUS_DEVICE_ERROR,
    DSRS_STATUS_PLUGIN_INVALID,
    DSRS_STATUS_BUILD_FAILED,
    DSRS_STATUS_OP_INCOMPATIBLE,
    DSRS_STATUS_UNKNOWN_OP,
    DSRS_STATUS_LOAD_FAILED,
    DSRS_STATUS_UNSAFE_CACHE,
    DSRS_STATUS_SYMBOL_NOT_FOUND,
    DSRS_STATUS_LOCK_TIMEOUT,
    DSRS_STATUS_INTERNAL,
    DSRS_STATUS_PANIC,
];

impl dsrs_status {
    /// The status for a C integer, if it is one.
    pub fn from_i32(v: i32) -> Option<dsrs_status> {
        ALL_STATUSES.into_iter().find(|s| *s as i32 == v)
    }

    /// The constant's name, NUL-terminated (`"DSRS_STATUS_OK\0"`).
    pub fn name_with_nul(self) -> &'static str {
        match self {
            DSRS_STATUS_OK => "DSRS_STATUS_OK\0",
            DSRS_STATUS_NULL_ARGUMENT => "DSRS_STATUS_NULL_ARGUMENT\0",
            DSRS_STATUS_INVALID_ARGUMENT => "DSRS_STATUS_INVALID_ARGUMENT\0",
            DSRS_STATUS_OUT_OF_RANGE => "DSRS_STATUS_OUT_OF_RANGE\0",
            DSRS_STATUS_INVALID_UTF8 => "DSRS_STATUS_INVALID_UTF8\0",
            DSRS_STATUS_BUFFER_TOO_SMALL => "DSRS_STATUS_BUFFER_TOO_SMALL\0",
            DSRS_STATUS_INVALID_HANDLE => "DSRS_STATUS_INVALID_HANDLE\0",
            DSRS_STATUS_STALE_HANDLE => "DSRS_STATUS_STALE_HANDLE\0",
            DSRS_STATUS_WRONG_HANDLE_TYPE => "DSRS_STATUS_WRONG_HANDLE_TYPE\0",
            DSRS_STATUS_INVALID_STATE => "DSRS_STATUS_INVALID_STATE\0",
            DSRS_STATUS_INVALID_JSON => "DSRS_STATUS_INVALID_JSON\0",
            DSRS_STATUS_INVALID_CONFIG => "DSRS_STATUS_INVALID_CONFIG\0",
            DSRS_STATUS_IO => "DSRS_STATUS_IO\0",
            DSRS_STATUS_FORMAT => "DSRS_STATUS_FORMAT\0",
            DSRS_STATUS_UNKNOWN_ACCELERATOR => "DSRS_STATUS_UNKNOWN_ACCELERATOR\0",
            DSRS_STATUS_UNAVAILABLE => "DSRS_STATUS_UNAVAILABLE\0",
            DSRS_STATUS_OUT_OF_MEMORY => "DSRS_STATUS_OUT_OF_MEMORY\0",
            DSRS_STATUS_UNSUPPORTED => "DSRS_STATUS_UNSUPPORTED\0",
            DSRS_STATUS_DEVICE_ERROR => "DSRS_STATUS_DEVICE_ERROR\0",
            DSRS_STATUS_PLUGIN_INVALID => "DSRS_STATUS_PLUGIN_INVALID\0",
            DSRS_STATUS_BUILD_FAILED => "DSRS_STATUS_BUILD_FAILED\0",
            DSRS_STATUS_OP_INCOMPATIBLE => "DSRS_STATUS_OP_INCOMPATIBLE\0",
            DSRS_STATUS_UNKNOWN_OP => "DSRS_STATUS_UNKNOWN_OP\0",
            DSRS_STATUS_LOAD_FAILED => "DSRS_STATUS_LOAD_FAILED\0",
            DSRS_STATUS_UNSAFE_CACHE => "DSRS_STATUS_UNSAFE_CACHE\0",
            DSRS_STATUS_SYMBOL_NOT_FOUND => "DSRS_STATUS_SYMBOL_NOT_FOUND\0",
            DSRS_STATUS_LOCK_TIMEOUT => "DSRS_STATUS_LOCK_TIMEOUT\0",
            DSRS_STATUS_INTERNAL => "DSRS_STATUS_INTERNAL\0",
            DSRS_STATUS_PANIC => "DSRS_STATUS_PANIC\0",
        }
    }

    /// The constant's name (`"DSRS_STATUS_OK"`).
    pub fn name(self) -> &'static str {
        let n = self.name_with_nul();
        &n[..n.len() - 1]
    }
}

impl From<ErrorKind> for dsrs_status {
    fn from(kind: ErrorKind) -> dsrs_status {
        match kind {
            ErrorKind::InvalidArgument => DSRS_STATUS_INVALID_ARGUMENT,
            ErrorKind::OutOfRange => DSRS_STATUS_OUT_OF_RANGE,
            ErrorKind::InvalidState => DSRS_STATUS_INVALID_STATE,
            ErrorKind::InvalidJson => DSRS_STATUS_INVALID_JSON,
            ErrorKind::InvalidConfig => DSRS_STATUS_INVALID_CONFIG,
            ErrorKind::Io => DSRS_STATUS_IO,
            ErrorKind::Format => DSRS_STATUS_FORMAT,
            ErrorKind::UnknownAccelerator => DSRS_STATUS_UNKNOWN_ACCELERATOR,
            ErrorKind::Unavailable => DSRS_STATUS_UNAVAILABLE,
            ErrorKind::OutOfMemory => DSRS_STATUS_OUT_OF_MEMORY,
            ErrorKind::Unsupported => DSRS_STATUS_UNSUPPORTED,
            ErrorKind::Device => DSRS_STATUS_DEVICE_ERROR,
            ErrorKind::PluginInvalid => DSRS_STATUS_PLUGIN_INVALID,
            ErrorKind::BuildFailed => DSRS_STATUS_BUILD_FAILED,
            ErrorKind::Incompatible => DSRS_STATUS_OP_INCOMPATIBLE,
            ErrorKind::UnknownOp => DSRS_STATUS_UNKNOWN_OP,
            ErrorKind::LoadFailed => DSRS_STATUS_LOAD_FAILED,
            ErrorKind::UnsafeCache => DSRS_STATUS_UNSAFE_CACHE,
            ErrorKind::SymbolNotFound => DSRS_STATUS_SYMBOL_NOT_FOUND,
            ErrorKind::LockTimeout => DSRS_STATUS_LOCK_TIMEOUT,
            ErrorKind::Internal => DSRS_STATUS_INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stable_and_names_match() {
        for s in ALL_STATUSES {
            assert_eq!(dsrs_status::from_i32(s as i32), Some(s));
            assert!(s.name().starts_with("DSRS_STATUS_"));
            assert!(!s.name().contains('\0'));
        }
        // Pinned values: changing one is an ABI break.
        assert_eq!(DSRS_STATUS_NULL_ARGUMENT as i32, 100);
        assert_eq!(DSRS_STATUS_STALE_HANDLE as i32, 201);
        assert_eq!(DSRS_STATUS_UNKNOWN_ACCELERATOR as i32, 400);
        assert_eq!(DSRS_STATUS_PANIC as i32, 901);
        assert_eq!(dsrs_status::from_i32(12345), None);
    }
}
