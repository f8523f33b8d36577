//! Allocation counters shared by every accelerator: live, peak and total allocations and
//! bytes, pinned bytes, refused allocations — the figures behind [`MemoryStats`] — and a
//! set of address ranges for `is_pinned`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use super::MemoryStats;
use crate::error::{Error, Result};

/// Counters over live and past allocations. Thread-safe; every update is lock-free.
#[derive(Debug, Default)]
pub struct Counters {
    allocated: AtomicU64,
    peak_allocated: AtomicU64,
    allocations: AtomicU64,
    peak_allocations: AtomicU64,
    allocations_total: AtomicU64,
    frees_total: AtomicU64,
    allocated_bytes_total: AtomicU64,
    freed_bytes_total: AtomicU64,
    pinned: AtomicU64,
    peak_pinned: AtomicU64,
    ooms: AtomicU64,
}

impl Counters {
    /// Accounts for an allocation of `size` bytes, or fails (counting an OOM) when the
    /// allocated total would pass `limit`. `who` names the accelerator in the message.
    pub fn reserve(&self, size: u64, limit: Option<u64>, who: &str) -> Result<()> {
        let max = limit.unwrap_or(u64::MAX);
        let update = self.allocated.fetch_update(Relaxed, Relaxed, |cur| {
            cur.checked_add(size).filter(|&n| n <= max)
        });
        match update {
            Ok(prev) => {
                self.peak_allocated.fetch_max(prev + size, Relaxed);
                let live = self.allocations.fetch_add(1, Relaxed) + 1;
                self.peak_allocations.fetch_max(live, Relaxed);
                self.allocations_total.fetch_add(1, Relaxed);
                self.allocated_bytes_total.fetch_add(size, Relaxed);
                Ok(())
            }
            Err(cur) => {
                self.note_oom();
                Err(Error::OutOfMemory(format!(
                    "cannot allocate {size} bytes: the {who} accelerator's memory_limit is {max} bytes and {cur} are allocated"
                )))
            }
        }
    }

    /// Undoes [`Counters::reserve`] for a freed (or failed) allocation.
    pub fn release(&self, size: u64) {
        self.allocated.fetch_sub(size, Relaxed);
        self.allocations.fetch_sub(1, Relaxed);
        self.frees_total.fetch_add(1, Relaxed);
        self.freed_bytes_total.fetch_add(size, Relaxed);
    }

    /// Counts an allocation the system refused.
    pub fn note_oom(&self) {
        self.ooms.fetch_add(1, Relaxed);
    }

    /// Counts `size` more bytes of page-locked memory.
    pub fn add_pinned(&self, size: u64) {
        let now = self.pinned.fetch_add(size, Relaxed) + size;
        self.peak_pinned.fetch_max(now, Relaxed);
    }

    /// Counts `size` fewer bytes of page-locked memory.
    pub fn sub_pinned(&self, size: u64) {
        self.pinned.fetch_sub(size, Relaxed);
    }

    /// A snapshot. Reserved equals allocated (no caching); backends with a caching
    /// allocator overwrite the reserved figures.
    pub fn stats(&self, limit: Option<u64>) -> MemoryStats {
        let allocated = self.allocated.load(Relaxed);
        let peak = self.peak_allocated.load(Relaxed);
        MemoryStats {
            allocated_bytes: allocated,
            peak_allocated_bytes: peak,
            reserved_bytes: allocated,
            peak_reserved_bytes: peak,
            allocations: self.allocations.load(Relaxed),
            peak_allocations: self.peak_allocations.load(Relaxed),
            allocations_total: self.allocations_total.load(Relaxed),
            frees_total: self.frees_total.load(Relaxed),
            allocated_bytes_total: self.allocated_bytes_total.load(Relaxed),
            freed_bytes_total: self.freed_bytes_total.load(Relaxed),
            pinned_bytes: self.pinned.load(Relaxed),
            peak_pinned_bytes: self.peak_pinned.load(Relaxed),
            num_ooms: self.ooms.load(Relaxed),
            limit_bytes: limit,
        }
    }

    /// Resets the peaks to the current values.
    pub fn reset_peaks(&self) {
        self.peak_allocated
            .store(self.allocated.load(Relaxed), Relaxed);
        self.peak_allocations
            .store(self.allocations.load(Relaxed), Relaxed);
        self.peak_pinned.store(self.pinned.load(Relaxed), Relaxed);
    }
}

/// Address ranges (start → length), for "does this pointer lie in one of our allocations".
#[derive(Debug, Default)]
pub struct Ranges(Mutex<BTreeMap<usize, usize>>);

impl Ranges {
    /// Adds `[start, start + len)`.
    pub fn insert(&self, start: usize, len: usize) {
        self.0.lock().insert(start, len);
    }

    /// Removes the range starting at `start`; returns its length.
    pub fn remove(&self, start: usize) -> Option<usize> {
        self.0.lock().remove(&start)
    }

    /// Whether `ptr` lies inside a range.
    pub fn contains(&self, ptr: usize) -> bool {
        self.0
            .lock()
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&start, &len)| ptr < start + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_their_bytes_only() {
        let r = Ranges::default();
        r.insert(100, 10);
        r.insert(200, 1);
        assert!(r.contains(100) && r.contains(109) && r.contains(200));
        assert!(!r.contains(99) && !r.contains(110) && !r.contains(201));
        assert_eq!(r.remove(100), Some(10));
        assert!(!r.contains(105));
    }

    #[test]
    fn the_limit_names_the_accelerator() {
        let c = Counters::default();
        c.reserve(10, Some(15), "demo").unwrap();
        let e = c.reserve(10, Some(15), "demo").unwrap_err();
        assert!(
            e.to_string()
                .contains("the demo accelerator's memory_limit is 15 bytes and 10 are allocated"),
            "{e}"
        );
        assert_eq!(c.stats(None).num_ooms, 1);
        c.release(10);
        assert_eq!(c.stats(None).peak_allocated_bytes, 10);
        c.reset_peaks();
        assert_eq!(c.stats(None).peak_allocated_bytes, 0);
    }
}
