//! Streams and events with host semantics: work runs when it is submitted, so a stream is
//! always idle and an event's time is the host clock at `record`. Used by the CPU
//! accelerator and available to host-memory plugin accelerators.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::{Event, Stream};
use crate::error::{Error, Result};

static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// A stream whose work runs synchronously on the submitting thread.
#[derive(Debug)]
pub struct HostStream {
    accelerator_id: u64,
    device: usize,
    id: u64,
    default: bool,
}

impl HostStream {
    /// A new stream of accelerator `accelerator_id` on `device`.
    pub fn new(accelerator_id: u64, device: usize, default: bool) -> HostStream {
        HostStream {
            accelerator_id,
            device,
            id: NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed),
            default,
        }
    }

    /// A process-unique identifier.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Stream for HostStream {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn device(&self) -> usize {
        self.device
    }
    fn is_default(&self) -> bool {
        self.default
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn query(&self) -> Result<bool> {
        Ok(true)
    }
    fn wait_event(&self, event: &dyn Event) -> Result<()> {
        if event.accelerator_id() != self.accelerator_id {
            return Err(Error::invalid(
                "the event belongs to a different accelerator than the stream",
            ));
        }
        event.synchronize()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An event that records the host clock.
#[derive(Debug)]
pub struct HostEvent {
    accelerator_id: u64,
    timing: bool,
    recorded: Mutex<Option<Instant>>,
}

impl HostEvent {
    /// A new, unrecorded event; `timing` enables [`Event::elapsed_ms`].
    pub fn new(accelerator_id: u64, timing: bool) -> HostEvent {
        HostEvent {
            accelerator_id,
            timing,
            recorded: Mutex::new(None),
        }
    }

    fn recorded_at(&self, which: &str) -> Result<Instant> {
        if !self.timing {
            return Err(Error::InvalidState(format!(
                "the {which} event was created without timing"
            )));
        }
        self.recorded
            .lock()
            .ok_or_else(|| Error::InvalidState(format!("the {which} event has not been recorded")))
    }
}

impl Event for HostEvent {
    fn accelerator_id(&self) -> u64 {
        self.accelerator_id
    }
    fn record(&self, stream: &dyn Stream) -> Result<()> {
        if stream.accelerator_id() != self.accelerator_id {
            return Err(Error::invalid(
                "the stream belongs to a different accelerator than the event",
            ));
        }
        *self.recorded.lock() = Some(Instant::now());
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn query(&self) -> Result<bool> {
        Ok(true)
    }
    fn elapsed_ms(&self, end: &dyn Event) -> Result<f64> {
        let end = end
            .as_any()
            .downcast_ref::<HostEvent>()
            .filter(|e| e.accelerator_id == self.accelerator_id)
            .ok_or_else(|| {
                Error::invalid(
                    "the end event belongs to a different accelerator than the start event",
                )
            })?;
        let start_at = self.recorded_at("start")?;
        let end_at = end.recorded_at("end")?;
        let ms = if end_at >= start_at {
            (end_at - start_at).as_secs_f64() * 1e3
        } else {
            -((start_at - end_at).as_secs_f64() * 1e3)
        };
        Ok(ms)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_follows_the_host_clock() {
        let s = HostStream::new(7, 0, true);
        let a = HostEvent::new(7, true);
        let b = HostEvent::new(7, true);
        assert!(
            a.elapsed_ms(&b)
                .unwrap_err()
                .to_string()
                .contains("start event has not been recorded")
        );
        a.record(&s).unwrap();
        let t0 = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        b.record(&s).unwrap();
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let ms = a.elapsed_ms(&b).unwrap();
        assert!(ms >= 20.0 && ms <= wall + 1.0, "{ms} ms vs {wall} ms wall");
        assert!((b.elapsed_ms(&a).unwrap() + ms).abs() < 1e-9);
    }

    #[test]
    fn events_refuse_foreign_streams_and_untimed_use() {
        let s = HostStream::new(1, 0, true);
        let e = HostEvent::new(2, true);
        assert!(e.record(&s).is_err());
        let untimed = HostEvent::new(1, false);
        untimed.record(&s).unwrap();
        assert!(
            untimed
                .elapsed_ms(&untimed)
                .unwrap_err()
                .to_string()
                .contains("without timing")
        );
    }
}
