//! CUDA streams, events and graphs over the driver API.

use std::any::Any;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cudarc::driver::sys;
use parking_lot::Mutex;

use super::driver::{Raw, check, query};
use crate::accelerator::{Event, Graph, Stream, check_elapsed};
use crate::error::{Error, Result};

/// Who owns a stream's `CUstream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// The legacy default stream (NULL): never destroyed.
    Default,
    /// Created by us: destroyed when the last reference goes.
    Owned,
    /// The host's (`dsrs_stream_wrap`): never destroyed.
    Borrowed,
}

/// A CUDA stream.
#[derive(Debug)]
pub struct CudaStream {
    pub(crate) accelerator_id: u64,
    pub(crate) device: usize,
    pub(crate) ctx: Raw<sys::CUcontext>,
    pub(crate) handle: Raw<sys::CUstream>,
    pub(crate) ownership: Ownership,
}

/// Makes `ctx` current on the calling thread.
pub(crate) fn bind(ctx: Raw<sys::CUcontext>) -> Result<()> {
    check(
        || "cuCtxSetCurrent".into(),
        // SAFETY: ctx is a retained primary context.
        || unsafe { sys::cuCtxSetCurrent(ctx.0) },
    )
}

impl CudaStream {
    /// A new non-blocking stream on `device`.
    pub(crate) fn create(
        accelerator_id: u64,
        device: usize,
        ctx: Raw<sys::CUcontext>,
    ) -> Result<CudaStream> {
        bind(ctx)?;
        let mut s = ptr::null_mut();
        check(
            || format!("creating a stream on CUDA device {device}"),
            // SAFETY: s is a valid out-pointer; the context is current.
            || unsafe {
                sys::cuStreamCreate(&mut s, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32)
            },
        )?;
        Ok(CudaStream {
            accelerator_id,
            device,
            ctx,
            handle: Raw(s),
            ownership: Ownership::Owned,
        })
    }

    /// The raw `CUstream` (NULL for the legacy default stream).
    pub fn handle(&self) -> sys::CUstream {
        self.handle.0
    }

    /// Whether the stream is capturing a graph now.
    pub(crate) fn is_capturing(&self) -> Result<bool> {
        if self.ownership == Ownership::Default {
            return Ok(false);
        }
        let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        check(
            || "cuStreamIsCapturing".into(),
            // SAFETY: the stream is live; status is a valid out-pointer.
            || unsafe { sys::cuStreamIsCapturing(self.handle.0, &mut status) },
        )?;
        Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    }
}

impl Drop for CudaStream {
    fn drop(&mut self) {
        if self.ownership == Ownership::Owned {
            let _ = bind(self.ctx);
            // SAFETY: we created the stream and nobody else destroys it.
            let _ = check(
                || "cuStreamDestroy".into(),
                || unsafe { sys::cuStreamDestroy_v2(self.handle.0) },
            );
        }
    }
}

/// The CUDA stream behind a `dyn Stream` of accelerator `accelerator_id`.
pub(crate) fn downcast(stream: &dyn Stream, accelerator_id: u64) -> Result<&CudaStream> {
    match stream.as_any().downcast_ref::<CudaStream>() {
        Some(s) if s.accelerator_id == accelerator_id => Ok(s),
        _ => Err(Error::invalid(
            "the stream belongs to a different accelerator",
        )),
    }
}

impl Stream for CudaStream {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn device(&self) -> usize {
        self.device
    }
    fn is_default(&self) -> bool {
        self.ownership == Ownership::Default
    }
    fn synchronize(&self) -> Result<()> {
        bind(self.ctx)?;
        check(
            || format!("synchronizing a stream of CUDA device {}", self.device),
            // SAFETY: the stream is live.
            || unsafe { sys::cuStreamSynchronize(self.handle.0) },
        )
    }
    fn query(&self) -> Result<bool> {
        bind(self.ctx)?;
        query(
            || "cuStreamQuery".into(),
            // SAFETY: the stream is live.
            || unsafe { sys::cuStreamQuery(self.handle.0) },
        )
    }
    fn wait_event(&self, event: &dyn Event) -> Result<()> {
        let e = event
            .as_any()
            .downcast_ref::<CudaEvent>()
            .filter(|e| e.accelerator_id == self.accelerator_id)
            .ok_or_else(|| Error::invalid("the event belongs to a different accelerator"))?;
        bind(self.ctx)?;
        check(
            || "cuStreamWaitEvent".into(),
            // SAFETY: both handles are live.
            || unsafe { sys::cuStreamWaitEvent(self.handle.0, e.handle.0, 0) },
        )
    }
    fn native_handle(&self) -> *mut std::ffi::c_void {
        self.handle.0 as *mut std::ffi::c_void
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A CUDA event.
#[derive(Debug)]
pub struct CudaEvent {
    accelerator_id: u64,
    ctx: Raw<sys::CUcontext>,
    handle: Raw<sys::CUevent>,
    timing: bool,
    recorded: AtomicBool,
}

impl CudaEvent {
    pub(crate) fn create(
        accelerator_id: u64,
        ctx: Raw<sys::CUcontext>,
        timing: bool,
    ) -> Result<CudaEvent> {
        bind(ctx)?;
        let flags = if timing {
            sys::CUevent_flags::CU_EVENT_DEFAULT
        } else {
            sys::CUevent_flags::CU_EVENT_DISABLE_TIMING
        };
        let mut e = ptr::null_mut();
        check(
            || "cuEventCreate".into(),
            // SAFETY: e is a valid out-pointer; the context is current.
            || unsafe { sys::cuEventCreate(&mut e, flags as u32) },
        )?;
        Ok(CudaEvent {
            accelerator_id,
            ctx,
            handle: Raw(e),
            timing,
            recorded: AtomicBool::new(false),
        })
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        let _ = bind(self.ctx);
        // SAFETY: we created the event.
        let _ = check(
            || "cuEventDestroy".into(),
            || unsafe { sys::cuEventDestroy_v2(self.handle.0) },
        );
    }
}

impl Event for CudaEvent {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn record(&self, stream: &dyn Stream) -> Result<()> {
        let s = downcast(stream, self.accelerator_id)?;
        bind(s.ctx)?;
        check(
            || "cuEventRecord".into(),
            // SAFETY: both handles are live.
            || unsafe { sys::cuEventRecord(self.handle.0, s.handle.0) },
        )?;
        self.recorded.store(true, Ordering::Release);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        bind(self.ctx)?;
        check(
            || "cuEventSynchronize".into(),
            // SAFETY: the event is live.
            || unsafe { sys::cuEventSynchronize(self.handle.0) },
        )
    }
    fn query(&self) -> Result<bool> {
        bind(self.ctx)?;
        query(
            || "cuEventQuery".into(),
            // SAFETY: the event is live.
            || unsafe { sys::cuEventQuery(self.handle.0) },
        )
    }
    fn elapsed_ms(&self, end: &dyn Event) -> Result<f64> {
        let end = end
            .as_any()
            .downcast_ref::<CudaEvent>()
            .filter(|e| e.accelerator_id == self.accelerator_id)
            .ok_or_else(|| Error::invalid("the end event belongs to a different accelerator"))?;
        check_elapsed(
            [self.timing, end.timing],
            [
                self.recorded.load(Ordering::Acquire),
                end.recorded.load(Ordering::Acquire),
            ],
        )?;
        bind(self.ctx)?;
        let mut ms = 0f32;
        check(
            || "cuEventElapsedTime (are both events complete?)".into(),
            // SAFETY: both events are live; ms is a valid out-pointer.
            || unsafe { sys::cuEventElapsedTime(&mut ms, self.handle.0, end.handle.0) },
        )?;
        Ok(f64::from(ms))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A captured and instantiated CUDA graph.
#[derive(Debug)]
pub struct CudaGraph {
    accelerator_id: u64,
    ctx: Raw<sys::CUcontext>,
    graph: Raw<sys::CUgraph>,
    /// The executable graph; launches of one instance are serialised.
    exec: Mutex<Raw<sys::CUgraphExec>>,
    /// The stream it was captured on: the default place to replay it.
    stream: Arc<dyn Stream>,
}

impl CudaGraph {
    /// Ends the capture on `stream` and instantiates the graph.
    pub(crate) fn end_capture(stream: Arc<dyn Stream>, accelerator_id: u64) -> Result<CudaGraph> {
        let s = downcast(stream.as_ref(), accelerator_id)?;
        bind(s.ctx)?;
        let mut graph = ptr::null_mut();
        check(
            || "ending the graph capture (cuStreamEndCapture)".into(),
            // SAFETY: the stream is live; graph is a valid out-pointer.
            || unsafe { sys::cuStreamEndCapture(s.handle.0, &mut graph) },
        )?;
        let mut exec = ptr::null_mut();
        let inst = check(
            || "instantiating the captured graph".into(),
            // SAFETY: graph came from the capture.
            || unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) },
        );
        if let Err(e) = inst {
            // SAFETY: the graph is ours and not instantiated.
            let _ = check(String::new, || unsafe { sys::cuGraphDestroy(graph) });
            return Err(e);
        }
        let ctx = s.ctx;
        Ok(CudaGraph {
            accelerator_id,
            ctx,
            graph: Raw(graph),
            exec: Mutex::new(Raw(exec)),
            stream,
        })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        let _ = bind(self.ctx);
        let exec = *self.exec.get_mut();
        // SAFETY: both handles are ours.
        let _ = check(String::new, || unsafe { sys::cuGraphExecDestroy(exec.0) });
        let _ = check(String::new, || unsafe { sys::cuGraphDestroy(self.graph.0) });
    }
}

impl Graph for CudaGraph {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn replay(&self, stream: Option<&dyn Stream>) -> Result<()> {
        let s = match stream {
            Some(s) => downcast(s, self.accelerator_id)?,
            None => downcast(self.stream.as_ref(), self.accelerator_id)?,
        };
        bind(s.ctx)?;
        let exec = self.exec.lock();
        check(
            || "replaying a graph (cuGraphLaunch)".into(),
            // SAFETY: exec and the stream are live; launches are serialised by the lock.
            || unsafe { sys::cuGraphLaunch(exec.0, s.handle.0) },
        )
    }
    fn node_count(&self) -> Result<usize> {
        bind(self.ctx)?;
        let mut n = 0usize;
        check(
            || "cuGraphGetNodes".into(),
            // SAFETY: the graph is live; a NULL node array asks for the count.
            || unsafe { sys::cuGraphGetNodes(self.graph.0, ptr::null_mut(), &mut n) },
        )?;
        Ok(n)
    }
}
