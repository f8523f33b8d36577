//! The C ABI: the only `extern "C"` code in the crate.
//!
//! Every exported function follows the conventions of `docs/c-api.md`:
//! * it returns [`dsrs_status`] (0 = OK) — except `dsrs_version`, `dsrs_abi_version` and
//!   `dsrs_status_str`, which cannot fail;
//! * its body runs inside one panic boundary ([`ffi_body!`](crate::ffi_body)): a panic
//!   becomes `DSRS_STATUS_PANIC`;
//! * on failure it sets the calling thread's last-error message, which names the function
//!   and the argument, value or file at fault;
//! * every pointer is null-checked, every handle validated (the `handle` module);
//! * out-parameters are written only on success (the size of a two-call output is also
//!   written on `DSRS_STATUS_BUFFER_TOO_SMALL`, so the caller can retry).

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // the safety contract of every function is in docs/c-api.md

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Error;

pub mod accelerator;
pub mod buffer;
pub mod common;
pub mod engine;
pub(crate) mod handle;
pub mod ops;
pub mod optim;
pub mod quantizer;
pub mod status;
pub mod stream;

pub use status::dsrs_status;
use status::dsrs_status::*;

/// A failure at the C boundary: the status to return and the message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfiError {
    /// The status the function returns.
    pub status: dsrs_status,
    /// The last-error message (the function name is prefixed when it is stored).
    pub message: String,
}

impl FfiError {
    /// A failure with a status and message.
    pub fn new(status: dsrs_status, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            message: message.into(),
        }
    }

    /// `argument '<arg>' is NULL`.
    pub fn null(arg: &str) -> FfiError {
        FfiError::new(
            DSRS_STATUS_NULL_ARGUMENT,
            format!("argument '{arg}' is NULL"),
        )
    }

    /// An out-of-range value of argument `arg`.
    pub fn range(arg: &str, detail: impl std::fmt::Display) -> FfiError {
        FfiError::new(
            DSRS_STATUS_OUT_OF_RANGE,
            format!("argument '{arg}' {detail}"),
        )
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError::new(e.kind().into(), e.to_string())
    }
}

/// The result of an exported function's body.
pub type FfiResult = Result<(), FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<Option<(dsrs_status, String)>> = const { RefCell::new(None) };
}

/// The calling thread's last error, if any.
pub fn last_error() -> Option<(dsrs_status, String)> {
    LAST_ERROR.with(|e| e.borrow().clone())
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

fn set_last_error(status: dsrs_status, message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some((status, message)));
}

/// The C function name from the type path of a function item declared inside it.
fn function_name(path: &'static str) -> &'static str {
    let mut parts = path.rsplit("::");
    parts.next();
    parts.next().unwrap_or(path)
}

#[doc(hidden)]
pub fn type_name_of<T>(_: T) -> &'static str {
    std::any::type_name::<T>()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into())
}

/// Runs an exported function's body: catches panics, records failures.
#[doc(hidden)]
#[inline]
pub fn run(path: &'static str, body: impl FnOnce() -> FfiResult) -> dsrs_status {
    let error = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return DSRS_STATUS_OK,
        Ok(Err(e)) => e,
        Err(payload) => FfiError::new(
            DSRS_STATUS_PANIC,
            format!(
                "panic: {} (this is a bug in deepspeed_rs; please report it)",
                panic_message(&*payload)
            ),
        ),
    };
    fail(path, error)
}

#[cold]
fn fail(path: &'static str, e: FfiError) -> dsrs_status {
    let message = format!("{}: {}", function_name(path), e.message);
    // Log before storing, so a log callback that calls into the library cannot clobber it.
    crate::dsrs_debug!("ffi", "{message} [{}]", e.status.name());
    set_last_error(e.status, message);
    e.status
}

/// Wraps an exported function's body in the panic boundary. The body evaluates to
/// [`FfiResult`]; the enclosing function's name prefixes error messages.
#[macro_export]
#[doc(hidden)]
macro_rules! ffi_body {
    ($($body:tt)*) => {{
        fn __dsrs_here() {}
        $crate::ffi::run(
            $crate::ffi::type_name_of(__dsrs_here),
            move || -> $crate::ffi::FfiResult { $($body)* },
        )
    }};
}

// ---------------------------------------------------------------------------------------
// Argument helpers.

/// A checked, non-NULL out-parameter; written once, at the end of a successful call.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    pub(crate) fn new(p: *mut T, arg: &str) -> Result<Out<T>, FfiError> {
        if p.is_null() {
            Err(FfiError::null(arg))
        } else {
            Ok(Out(p))
        }
    }

    pub(crate) fn write(self, v: T) {
        // SAFETY: non-NULL checked; the caller of the C function promises a valid pointer.
        unsafe { self.0.write(v) }
    }
}

/// A reference from a non-NULL pointer.
pub(crate) fn arg_ref<'a, T>(p: *const T, arg: &str) -> Result<&'a T, FfiError> {
    // SAFETY: non-NULL checked; validity is the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| FfiError::null(arg))
}

/// A NUL-terminated UTF-8 string.
pub(crate) fn arg_str<'a>(p: *const c_char, arg: &str) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::null(arg));
    }
    // SAFETY: non-NULL; NUL termination is the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        FfiError::new(
            DSRS_STATUS_INVALID_UTF8,
            format!(
                "argument '{arg}' is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// An optional NUL-terminated UTF-8 string (NULL means absent).
pub(crate) fn arg_opt_str<'a>(p: *const c_char, arg: &str) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        Ok(None)
    } else {
        arg_str(p, arg).map(Some)
    }
}

/// A slice from pointer and length; `(NULL, 0)` is the empty slice.
pub(crate) fn arg_slice<'a, T>(p: *const T, len: usize, arg: &str) -> Result<&'a [T], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(FfiError::new(
            DSRS_STATUS_NULL_ARGUMENT,
            format!("argument '{arg}' is NULL but its length is {len}"),
        ));
    }
    // SAFETY: non-NULL; `len` readable elements is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A mutable slice from pointer and length; `(NULL, 0)` is the empty slice.
pub(crate) fn arg_slice_mut<'a, T>(
    p: *mut T,
    len: usize,
    arg: &str,
) -> Result<&'a mut [T], FfiError> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(FfiError::new(
            DSRS_STATUS_NULL_ARGUMENT,
            format!("argument '{arg}' is NULL but its length is {len}"),
        ));
    }
    // SAFETY: non-NULL; `len` writable elements is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// A device index: `-1` is the current device, `0..` a device; others are out of range.
pub(crate) fn arg_device(device: i32, arg: &str) -> Result<Option<usize>, FfiError> {
    match device {
        -1 => Ok(None),
        d if d >= 0 => Ok(Some(d as usize)),
        d => Err(FfiError::range(
            arg,
            format_args!("must be -1 (current device) or a device index >= 0, got {d}"),
        )),
    }
}

/// The elements of a validated host tensor (contiguous, aligned for `T`, `numel` elements),
/// as a slice. An empty tensor may have a NULL or unaligned `data` (DLPack allows it), which
/// `slice::from_raw_parts` does not: it gives `&[]`.
///
/// # Safety
/// For `numel > 0`, `t.ptr` points to `numel` readable `T`s valid for `'a` (the caller's
/// DLTensor contract).
pub(crate) unsafe fn host_slice<'a, T>(t: &crate::dlpack::TensorRef) -> &'a [T] {
    if t.numel == 0 {
        return &[];
    }
    // SAFETY: the function's contract.
    unsafe { std::slice::from_raw_parts(t.ptr as *const T, t.numel) }
}

/// As [`host_slice`], writable.
///
/// # Safety
/// As [`host_slice`], and the memory is writable and aliased by nothing else for `'a`.
pub(crate) unsafe fn host_slice_mut<'a, T>(t: &crate::dlpack::TensorRef) -> &'a mut [T] {
    if t.numel == 0 {
        return &mut [];
    }
    // SAFETY: the function's contract.
    unsafe { std::slice::from_raw_parts_mut(t.ptr as *mut T, t.numel) }
}

/// The bytes of a validated contiguous host tensor (`nbytes` of them; `&[]` when empty,
/// whatever `data` is).
///
/// # Safety
/// As [`host_slice`].
pub(crate) unsafe fn host_bytes<'a>(t: &crate::dlpack::TensorRef) -> &'a [u8] {
    if t.nbytes == 0 {
        return &[];
    }
    // SAFETY: the function's contract.
    unsafe { std::slice::from_raw_parts(t.ptr as *const u8, t.nbytes) }
}

/// As [`host_bytes`], writable.
///
/// # Safety
/// As [`host_slice_mut`].
pub(crate) unsafe fn host_bytes_mut<'a>(t: &crate::dlpack::TensorRef) -> &'a mut [u8] {
    if t.nbytes == 0 {
        return &mut [];
    }
    // SAFETY: the function's contract.
    unsafe { std::slice::from_raw_parts_mut(t.ptr as *mut u8, t.nbytes) }
}

/// The two-call output of bytes: with `(NULL, 0)` only `*needed` is written (a size
/// query); a too-small buffer gets `DSRS_STATUS_BUFFER_TOO_SMALL` and `*needed`.
pub(crate) fn write_bytes_out(
    data: &[u8],
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
    nul: bool,
) -> FfiResult {
    let needed = Out::new(needed, "needed")?;
    let n = data.len() + usize::from(nul);
    if buf.is_null() {
        if len != 0 {
            return Err(FfiError::new(
                DSRS_STATUS_NULL_ARGUMENT,
                format!("argument 'buf' is NULL but its length is {len}"),
            ));
        }
        needed.write(n);
        return Ok(());
    }
    if len < n {
        needed.write(n);
        return Err(FfiError::new(
            DSRS_STATUS_BUFFER_TOO_SMALL,
            format!(
                "argument 'buf' holds {len} bytes but {n} are needed{}",
                if nul { " (including the NUL)" } else { "" }
            ),
        ));
    }
    // SAFETY: buf holds at least n bytes (caller's contract for `len`).
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        if nul {
            *buf.add(data.len()) = 0;
        }
    }
    needed.write(n);
    Ok(())
}

/// The two-call output of a string, NUL-terminated.
pub(crate) fn write_str_out(
    s: &str,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> FfiResult {
    write_bytes_out(s.as_bytes(), buf as *mut u8, len, needed, true)
}

// ---------------------------------------------------------------------------------------
// Handle types.

// The opaque types are declared plainly (cbindgen does not expand macros); the macro adds
// their registries.

/// An accelerator (CPU, CUDA, a plugin). Under the hood an `Arc`: each handle is one
/// reference, released by `dsrs_accelerator_free`; objects made from it (buffers, streams,
/// events) keep it alive. Thread-safe.
pub struct dsrs_accelerator {
    _private: [u8; 0],
}

/// Memory owned by an accelerator; freed with `dsrs_buffer_free` (DLPack exports made from
/// it keep the memory alive until their deleters run). Thread-safe.
pub struct dsrs_buffer {
    _private: [u8; 0],
}

/// A stream of an accelerator; freed with `dsrs_stream_free`. Thread-safe.
pub struct dsrs_stream {
    _private: [u8; 0],
}

/// An event of an accelerator; freed with `dsrs_event_free`. Thread-safe.
pub struct dsrs_event {
    _private: [u8; 0],
}

/// A loaded op (built-in or defined at run time), from `dsrs_op_load`; freed with
/// `dsrs_op_free`. The op's code stays loaded for the life of the process. Thread-safe.
pub struct dsrs_op {
    _private: [u8; 0],
}

/// A training engine (DeepSpeed's engine for one process), from `dsrs_engine_new`; freed
/// with `dsrs_engine_free`. Calls on one engine are serialised; views it hands out are
/// plain memory the host must not use during `dsrs_engine_step`. Thread-safe.
pub struct dsrs_engine {
    _private: [u8; 0],
}

/// A captured CUDA graph, from `dsrs_stream_end_capture`; freed with `dsrs_graph_free`.
/// Replays are serialised per graph. Thread-safe.
pub struct dsrs_graph {
    _private: [u8; 0],
}

macro_rules! handle_registry {
    ($name:ident, $target:ty, $tag:expr, $registry:ident) => {
        static $registry: handle::Registry<$target> = handle::Registry::new();
        impl handle::Handle for $name {
            type Target = $target;
            const TAG: u8 = $tag;
            const NAME: &'static str = stringify!($name);
            fn registry() -> &'static handle::Registry<$target> {
                &$registry
            }
        }
    };
}

handle_registry!(
    dsrs_accelerator,
    dyn crate::accelerator::Accelerator,
    0xA1,
    ACCELERATORS
);
handle_registry!(dsrs_buffer, crate::accelerator::Buffer, 0xA2, BUFFERS);
handle_registry!(dsrs_stream, stream::StreamObject, 0xA3, STREAMS);
handle_registry!(dsrs_event, stream::EventObject, 0xA4, EVENTS);
handle_registry!(dsrs_op, crate::ops::LoadedOp, 0xA5, OPS);
handle_registry!(dsrs_graph, stream::GraphObject, 0xA6, GRAPHS);
handle_registry!(dsrs_engine, engine::EngineObject, 0xA7, ENGINES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_come_from_the_enclosing_fn() {
        fn dsrs_example() -> &'static str {
            fn __dsrs_here() {}
            function_name(type_name_of(__dsrs_here))
        }
        assert_eq!(dsrs_example(), "dsrs_example");
    }

    #[test]
    fn panics_become_status_and_message() {
        fn dsrs_boom() -> dsrs_status {
            ffi_body! { panic!("kaboom {}", 7) }
        }
        assert_eq!(dsrs_boom(), DSRS_STATUS_PANIC);
        let (status, msg) = last_error().unwrap();
        assert_eq!(status, DSRS_STATUS_PANIC);
        assert!(msg.starts_with("dsrs_boom: panic: kaboom 7"), "{msg}");
    }

    #[test]
    fn two_call_outputs_report_the_size_and_keep_the_buffer_on_failure() {
        let mut needed = 0usize;
        write_str_out("hello", std::ptr::null_mut(), 0, &mut needed).unwrap();
        assert_eq!(needed, 6);
        let mut small = [b'x' as c_char; 3];
        let e = write_str_out("hello", small.as_mut_ptr(), 3, &mut needed).unwrap_err();
        assert_eq!(e.status, DSRS_STATUS_BUFFER_TOO_SMALL);
        assert_eq!(small, [b'x' as c_char; 3]);
        let mut buf = [0 as c_char; 6];
        write_str_out("hello", buf.as_mut_ptr(), 6, &mut needed).unwrap();
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            "hello"
        );
    }
}
