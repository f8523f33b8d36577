//! Tracked host allocations for the CPU accelerator: aligned, zeroed, optionally
//! page-locked, counted in [`MemoryStats`].

use std::alloc::Layout;

use super::sysinfo::{memlock_limit, page_size};
use crate::accelerator::counters::{Counters, Ranges};
use crate::accelerator::{Allocation, MemoryKind, MemoryStats};
use crate::error::{Error, Result};

/// Counters over live and past allocations, with an optional byte limit.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    limit: Option<u64>,
    counters: Counters,
    /// Page-locked ranges.
    pinned_ranges: Ranges,
}

impl Tracker {
    pub(super) fn new(limit: Option<u64>) -> Tracker {
        Tracker {
            limit,
            ..Tracker::default()
        }
    }

    pub(super) fn limit(&self) -> Option<u64> {
        self.limit
    }

    fn reserve(&self, size: u64) -> Result<()> {
        self.counters.reserve(size, self.limit, "cpu")
    }

    fn release(&self, size: u64) {
        self.counters.release(size)
    }

    pub(super) fn stats(&self) -> MemoryStats {
        self.counters.stats(self.limit)
    }

    pub(super) fn reset_peaks(&self) {
        self.counters.reset_peaks()
    }

    /// Whether `ptr` lies inside a page-locked allocation.
    pub(super) fn is_pinned(&self, ptr: usize) -> bool {
        self.pinned_ranges.contains(ptr)
    }

    /// Allocates zeroed host memory of `kind` (Device and Host are the same on the CPU).
    pub(super) fn allocate(
        &self,
        size: usize,
        align: usize,
        kind: MemoryKind,
        device: usize,
    ) -> Result<Allocation> {
        let (layout, align) = layout_for(size, align, kind)?;
        self.reserve(size as u64)?;
        let ptr = match alloc_layout(layout) {
            Ok(p) => p,
            Err(e) => {
                self.release(size as u64);
                self.counters.note_oom();
                return Err(e);
            }
        };
        if kind == MemoryKind::Pinned && layout.size() > 0 {
            if let Err(e) = lock_pages(ptr, layout.size()) {
                // SAFETY: allocated above with this layout.
                unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
                self.release(size as u64);
                self.counters.note_oom();
                return Err(e);
            }
            self.pinned_ranges.insert(ptr, layout.size());
            self.counters.add_pinned(size as u64);
        }
        Ok(Allocation {
            ptr,
            size,
            align,
            kind,
            device,
        })
    }

    /// Frees an allocation from [`Tracker::allocate`].
    ///
    /// # Safety
    /// `a` must come from `allocate` on this tracker and not have been freed.
    pub(super) unsafe fn deallocate(&self, a: &Allocation) {
        let Ok((layout, _)) = layout_for(a.size, a.align, a.kind) else {
            return; // unreachable: the same computation succeeded at allocation time
        };
        if a.ptr != 0 {
            if a.kind == MemoryKind::Pinned {
                self.pinned_ranges.remove(a.ptr);
                unlock_pages(a.ptr, layout.size());
                self.counters.sub_pinned(a.size as u64);
            }
            // SAFETY: the caller guarantees `a` came from `allocate` with this layout.
            unsafe { std::alloc::dealloc(a.ptr as *mut u8, layout) };
        }
        self.release(a.size as u64);
    }
}

/// Zeroed memory for `layout` (0 for an empty layout).
fn alloc_layout(layout: Layout) -> Result<usize> {
    if layout.size() == 0 {
        return Ok(0);
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(Error::OutOfMemory(format!(
            "the system could not allocate {} bytes of host memory",
            layout.size()
        )));
    }
    Ok(p as usize)
}

/// Zeroed pageable host memory of `size` bytes aligned to `align` (0 for size 0), untracked:
/// for accelerators whose `MemoryKind::Host` buffers are ordinary host memory.
pub(crate) fn alloc_host(size: usize, align: usize) -> Result<usize> {
    alloc_layout(layout_for(size, align, MemoryKind::Host)?.0)
}

/// Frees memory from [`alloc_host`].
///
/// # Safety
/// `ptr`, `size` and `align` must be those of one live [`alloc_host`] allocation.
pub(crate) unsafe fn free_host(ptr: usize, size: usize, align: usize) {
    if ptr != 0
        && let Ok((layout, _)) = layout_for(size, align, MemoryKind::Host)
    {
        // SAFETY: allocated by alloc_host with this layout.
        unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
    }
}

/// The layout used for an allocation; page-locked memory is whole pages.
fn layout_for(size: usize, align: usize, kind: MemoryKind) -> Result<(Layout, usize)> {
    let (size, align) = if kind == MemoryKind::Pinned {
        let page = page_size();
        let rounded = size
            .checked_next_multiple_of(page)
            .ok_or_else(|| too_big(size))?;
        (rounded, align.max(page))
    } else {
        (size, align)
    };
    let layout = Layout::from_size_align(size, align).map_err(|_| too_big(size))?;
    Ok((layout, align))
}

fn too_big(size: usize) -> Error {
    Error::OutOfMemory(format!(
        "cannot allocate {size} bytes: larger than the address space allows"
    ))
}

#[cfg(unix)]
fn lock_pages(ptr: usize, len: usize) -> Result<()> {
    // SAFETY: the range is a live allocation of `len` bytes.
    if unsafe { libc::mlock(ptr as *const libc::c_void, len) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let limit = match memlock_limit() {
        Some(l) => format!("RLIMIT_MEMLOCK is {l} bytes"),
        None => "RLIMIT_MEMLOCK is unlimited".to_string(),
    };
    Err(Error::OutOfMemory(format!(
        "cannot pin {len} bytes of host memory: mlock failed ({err}); {limit} — raise it (ulimit -l) or use pageable memory"
    )))
}

#[cfg(unix)]
fn unlock_pages(ptr: usize, len: usize) {
    // SAFETY: the range was locked by lock_pages and is still allocated.
    unsafe { libc::munlock(ptr as *const libc::c_void, len) };
}

#[cfg(not(unix))]
fn lock_pages(_ptr: usize, len: usize) -> Result<()> {
    Err(Error::Unsupported(format!(
        "cannot pin {len} bytes: page locking is not implemented on this platform"
    )))
}

#[cfg(not(unix))]
fn unlock_pages(_ptr: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_track_live_and_total_allocations() {
        let t = Tracker::new(None);
        let a = t.allocate(1000, 64, MemoryKind::Device, 0).unwrap();
        let b = t.allocate(24, 8, MemoryKind::Host, 0).unwrap();
        assert_eq!(a.ptr % 64, 0);
        let s = t.stats();
        assert_eq!(
            (s.allocated_bytes, s.allocations, s.peak_allocated_bytes),
            (1024, 2, 1024)
        );
        unsafe { t.deallocate(&a) };
        let s = t.stats();
        assert_eq!(
            (
                s.allocated_bytes,
                s.peak_allocated_bytes,
                s.freed_bytes_total
            ),
            (24, 1024, 1000)
        );
        t.reset_peaks();
        assert_eq!(t.stats().peak_allocated_bytes, 24);
        unsafe { t.deallocate(&b) };
        assert_eq!(t.stats().allocated_bytes, 0);
        assert_eq!(t.stats().allocations_total, 2);
    }

    #[test]
    fn the_limit_is_enforced_and_counted() {
        let t = Tracker::new(Some(4096));
        let a = t.allocate(4000, 64, MemoryKind::Device, 0).unwrap();
        let e = t.allocate(200, 64, MemoryKind::Device, 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("memory_limit is 4096 bytes and 4000 are allocated"),
            "{e}"
        );
        assert_eq!(t.stats().num_ooms, 1);
        unsafe { t.deallocate(&a) };
        let b = t.allocate(4096, 64, MemoryKind::Device, 0).unwrap();
        unsafe { t.deallocate(&b) };
    }

    #[test]
    fn pinned_memory_is_page_locked_and_known() {
        let t = Tracker::new(None);
        let a = match t.allocate(10_000, 64, MemoryKind::Pinned, 0) {
            Ok(a) => a,
            // A tight RLIMIT_MEMLOCK is a legitimate environment; the error must say so.
            Err(e) => {
                assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
                return;
            }
        };
        assert_eq!(a.ptr % page_size(), 0);
        assert!(t.is_pinned(a.ptr) && t.is_pinned(a.ptr + 9_999));
        assert!(!t.is_pinned(a.ptr.wrapping_sub(1)));
        assert_eq!(t.stats().pinned_bytes, 10_000);
        unsafe { t.deallocate(&a) };
        assert!(!t.is_pinned(a.ptr));
        assert_eq!(t.stats().pinned_bytes, 0);
    }

    #[test]
    fn absurd_sizes_fail_cleanly() {
        let t = Tracker::new(None);
        let e = t
            .allocate(usize::MAX, 64, MemoryKind::Device, 0)
            .unwrap_err();
        assert!(e.to_string().contains("address space"), "{e}");
        assert_eq!(t.stats().allocated_bytes, 0);
    }
}
