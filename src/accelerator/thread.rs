//! Per-thread, per-accelerator state shared by the backends: the current device and stream
//! (DeepSpeed's `set_device`/`current_stream` are per host thread, as in CUDA) and the open
//! profiling ranges.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::Stream;

/// One thread's state for one accelerator instance.
#[derive(Default)]
pub(crate) struct ThreadState {
    /// The current device.
    pub device: usize,
    /// The current stream, when one was set (else the device's default stream).
    pub stream: Option<Arc<dyn Stream>>,
    /// Open profiling ranges, innermost last.
    pub ranges: Vec<(String, Instant)>,
}

thread_local! {
    static THREAD: RefCell<HashMap<u64, ThreadState>> = RefCell::new(HashMap::new());
}

/// Runs `f` on the calling thread's state for accelerator `id`.
pub(crate) fn with_thread<R>(id: u64, f: impl FnOnce(&mut ThreadState) -> R) -> R {
    THREAD.with(|t| f(t.borrow_mut().entry(id).or_default()))
}

/// Sets the calling thread's device; a current stream of another device is forgotten.
pub(crate) fn set_device(id: u64, device: usize) {
    with_thread(id, |t| {
        if t.device != device {
            t.stream = None;
        }
        t.device = device;
    })
}

/// Sets the calling thread's current stream and, with it, its device.
pub(crate) fn set_stream(id: u64, stream: Arc<dyn Stream>) {
    with_thread(id, |t| {
        t.device = stream.device();
        t.stream = Some(stream);
    })
}

/// Opens a profiling range on the calling thread.
pub(crate) fn push_range(id: u64, name: &str) {
    with_thread(id, |t| t.ranges.push((name.to_string(), Instant::now())))
}

/// Closes the innermost range; returns its name and duration in milliseconds.
pub(crate) fn pop_range(id: u64) -> crate::error::Result<(String, f64)> {
    let (name, start) = with_thread(id, |t| t.ranges.pop()).ok_or_else(|| {
        crate::error::Error::InvalidState(
            "range_pop without a matching range_push on this thread".into(),
        )
    })?;
    Ok((name, start.elapsed().as_secs_f64() * 1e3))
}

/// The number of open ranges on the calling thread.
pub(crate) fn range_depth(id: u64) -> usize {
    with_thread(id, |t| t.ranges.len())
}
