//! `dsrs_stream_*` and `dsrs_event_*`.

use std::ffi::c_void;
use std::sync::Arc;

use super::accelerator::accel_arg;
use super::handle::{get, insert, remove};
use super::status::dsrs_status::*;
use super::{FfiError, Out, dsrs_accelerator, dsrs_event, dsrs_graph, dsrs_status, dsrs_stream};
use crate::accelerator::{Accelerator, Event, Graph, Stream};
use crate::{dsrs_warn, ffi_body};

/// What a `dsrs_stream` handle holds: the stream and the accelerator that made it.
pub struct StreamObject {
    pub(crate) accel: Arc<dyn Accelerator>,
    pub(crate) stream: Arc<dyn Stream>,
}

/// What a `dsrs_graph` handle holds.
pub struct GraphObject {
    pub(crate) accel: Arc<dyn Accelerator>,
    pub(crate) graph: Arc<dyn Graph>,
}

/// What a `dsrs_event` handle holds.
pub struct EventObject {
    pub(crate) accel: Arc<dyn Accelerator>,
    pub(crate) event: Arc<dyn Event>,
}

/// An optional stream argument: NULL means "the current stream" (`None`); a stream of
/// another accelerator is refused.
pub(crate) fn opt_stream_arg(
    p: *mut dsrs_stream,
    accel: &Arc<dyn Accelerator>,
) -> Result<Option<Arc<dyn Stream>>, FfiError> {
    if p.is_null() {
        return Ok(None);
    }
    let s = get(p, "stream")?;
    if s.accel.id() != accel.id() {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!(
                "argument 'stream' belongs to another accelerator instance ({} #{}) than the one used ({} #{})",
                s.accel.name(),
                s.accel.id(),
                accel.name(),
                accel.id()
            ),
        ));
    }
    Ok(Some(Arc::clone(&s.stream)))
}

fn stream_handle(
    accel: Arc<dyn Accelerator>,
    stream: Arc<dyn Stream>,
) -> Result<*mut dsrs_stream, FfiError> {
    insert(Arc::new(StreamObject { accel, stream }))
}

/// A new stream on the current device. Free with `dsrs_stream_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_new(
    accel: *mut dsrs_accelerator,
    out: *mut *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        let s = a.new_stream()?;
        out.write(stream_handle(a, s)?);
        Ok(())
    }
}

/// A handle to the current device's default stream (free the handle with
/// `dsrs_stream_free`; the stream itself lives as long as the accelerator).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_default_stream(
    accel: *mut dsrs_accelerator,
    out: *mut *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        let s = a.default_stream()?;
        out.write(stream_handle(a, s)?);
        Ok(())
    }
}

/// A handle to the calling thread's current stream (the default stream until set).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_current_stream(
    accel: *mut dsrs_accelerator,
    out: *mut *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        let s = a.current_stream()?;
        out.write(stream_handle(a, s)?);
        Ok(())
    }
}

/// Makes `stream` (of this accelerator) the calling thread's current stream, and its
/// device the current device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_accelerator_set_current_stream(
    accel: *mut dsrs_accelerator,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let a = accel_arg(accel, "accel")?;
        if stream.is_null() {
            return Err(FfiError::null("stream"));
        }
        let s = opt_stream_arg(stream, &a)?.expect("non-NULL stream");
        a.set_current_stream(s)?;
        Ok(())
    }
}

/// Releases a stream handle (NULL: no-op; stale: error, logged).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_free(stream: *mut dsrs_stream) -> dsrs_status {
    ffi_body! {
        remove(stream, "stream").inspect_err(|e| dsrs_warn!("ffi", "dsrs_stream_free: {}", e.message))
    }
}

/// Blocks until all work submitted to the stream has finished.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_synchronize(stream: *mut dsrs_stream) -> dsrs_status {
    ffi_body! {
        get(stream, "stream")?.stream.synchronize()?;
        Ok(())
    }
}

/// Whether all work submitted to the stream has finished.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_query(
    stream: *const dsrs_stream,
    out: *mut bool,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let idle = get(stream, "stream")?.stream.query()?;
        out.write(idle);
        Ok(())
    }
}

/// Makes later work on `stream` wait until `event` has completed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_wait_event(
    stream: *mut dsrs_stream,
    event: *mut dsrs_event,
) -> dsrs_status {
    ffi_body! {
        let s = get(stream, "stream")?;
        let e = get(event, "event")?;
        s.stream.wait_event(e.event.as_ref())?;
        Ok(())
    }
}

/// The native stream (`cudaStream_t` on CUDA) as `void*`, NULL on host accelerators.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_native_handle(
    stream: *const dsrs_stream,
    out: *mut *mut c_void,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(get(stream, "stream")?.stream.native_handle());
        Ok(())
    }
}

/// A new event; `enable_timing` makes `dsrs_event_elapsed_ms` usable. Free with
/// `dsrs_event_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_event_new(
    accel: *mut dsrs_accelerator,
    enable_timing: bool,
    out: *mut *mut dsrs_event,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        let event = a.new_event(enable_timing)?;
        out.write(insert(Arc::new(EventObject { accel: a, event }))?);
        Ok(())
    }
}

/// Releases an event handle (NULL: no-op; stale: error, logged).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_event_free(event: *mut dsrs_event) -> dsrs_status {
    ffi_body! {
        remove(event, "event").inspect_err(|e| dsrs_warn!("ffi", "dsrs_event_free: {}", e.message))
    }
}

/// Records the event on `stream` (NULL: the current stream of the event's accelerator).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_event_record(
    event: *mut dsrs_event,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let e = get(event, "event")?;
        let s = match opt_stream_arg(stream, &e.accel)? {
            Some(s) => s,
            None => e.accel.current_stream()?,
        };
        e.event.record(s.as_ref())?;
        Ok(())
    }
}

/// Blocks until the work recorded before the event has finished (returns at once if the
/// event was never recorded).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_event_synchronize(event: *mut dsrs_event) -> dsrs_status {
    ffi_body! {
        get(event, "event")?.event.synchronize()?;
        Ok(())
    }
}

/// Whether the work recorded before the event has finished (true if never recorded).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_event_query(event: *const dsrs_event, out: *mut bool) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let done = get(event, "event")?.event.query()?;
        out.write(done);
        Ok(())
    }
}

/// Milliseconds between two recorded timing events of the same accelerator (negative if
/// `end` was recorded first). `DSRS_STATUS_INVALID_STATE` names the event that was not
/// recorded or was created without timing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_event_elapsed_ms(
    start: *const dsrs_event,
    end: *const dsrs_event,
    out: *mut f64,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let s = get(start, "start")?;
        let e = get(end, "end")?;
        let ms = s.event.elapsed_ms(e.event.as_ref())?;
        out.write(ms);
        Ok(())
    }
}

/// Wraps a stream the host created — a `cudaStream_t`/`CUstream` passed as `void*` — on
/// the current device, so deepspeed_rs work can be ordered on it. The stream is borrowed:
/// `dsrs_stream_free` releases the handle but never destroys the stream, and the host keeps
/// it alive while the handle is used. NULL wraps the device's default stream. Accelerators
/// without native streams (cpu, most plugins) return `DSRS_STATUS_UNSUPPORTED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_wrap(
    accel: *mut dsrs_accelerator,
    native: *mut c_void,
    out: *mut *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        // SAFETY: the caller passes a live native stream of the current device.
        let s = unsafe { a.wrap_stream(native) }?;
        out.write(stream_handle(a, s)?);
        Ok(())
    }
}

/// Starts capturing the work submitted to `stream` (by this thread) into a graph: nothing
/// runs until the graph is replayed. Capture needs a stream from `dsrs_stream_new` (not the
/// default stream); copies to or from host memory cannot be captured. Accelerators without
/// graphs (cpu, plugins) return `DSRS_STATUS_UNSUPPORTED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_begin_capture(stream: *mut dsrs_stream) -> dsrs_status {
    ffi_body! {
        let s = get(stream, "stream")?;
        s.accel.begin_capture(s.stream.as_ref())?;
        Ok(())
    }
}

/// Ends the capture begun on `stream` and returns the instantiated graph in `*out` (free it
/// with `dsrs_graph_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_stream_end_capture(
    stream: *mut dsrs_stream,
    out: *mut *mut dsrs_graph,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let s = get(stream, "stream")?;
        let graph = s.accel.end_capture(Arc::clone(&s.stream))?;
        out.write(insert(Arc::new(GraphObject { accel: Arc::clone(&s.accel), graph }))?);
        Ok(())
    }
}

/// Launches the captured work again, on `stream` (NULL: the stream it was captured on).
/// Returns once the launch is queued.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_graph_replay(
    graph: *mut dsrs_graph,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let g = get(graph, "graph")?;
        let s = opt_stream_arg(stream, &g.accel)?;
        g.graph.replay(s.as_deref())?;
        Ok(())
    }
}

/// The number of nodes (kernels, copies, fills) in a graph.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_graph_node_count(
    graph: *const dsrs_graph,
    out: *mut usize,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let g = get(graph, "graph")?;
        out.write(g.graph.node_count()?);
        Ok(())
    }
}

/// Releases a graph (NULL: no-op; stale: error, logged).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_graph_free(graph: *mut dsrs_graph) -> dsrs_status {
    ffi_body! {
        remove(graph, "graph").inspect_err(|e| dsrs_warn!("ffi", "dsrs_graph_free: {}", e.message))
    }
}
