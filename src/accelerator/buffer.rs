//! [`Buffer`]: memory owned by an accelerator.

use std::sync::Arc;

use parking_lot::RwLock;

use super::{Accelerator, Allocation, Distribution, MemoryKind, Stream};
use crate::dlpack::{DLDevice, TensorRef};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Default alignment of buffers: 256 bytes, as CUDA allocations and DLPack recommend.
pub const DEFAULT_ALIGNMENT: usize = 256;
/// Largest alignment accepted.
pub const MAX_ALIGNMENT: usize = 1 << 30;

/// Memory allocated by an accelerator, freed when the last reference goes away.
///
/// Operations through `Buffer` are bounds-checked and serialised per buffer (writes are
/// exclusive, reads shared). Memory handed out as a raw pointer or a DLPack tensor is not
/// covered by that lock: synchronising such access is the caller's job, as with any device
/// memory.
pub struct Buffer {
    accel: Arc<dyn Accelerator>,
    alloc: Allocation,
    access: RwLock<()>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("accelerator", &self.accel.name())
            .field("allocation", &self.alloc)
            .finish()
    }
}

impl Buffer {
    /// Allocates `size` bytes of `kind` memory on the current device of `accel`.
    /// `align` is a power of two, or 0 for [`DEFAULT_ALIGNMENT`].
    pub fn new(
        accel: &Arc<dyn Accelerator>,
        size: usize,
        align: usize,
        kind: MemoryKind,
    ) -> Result<Buffer> {
        let align = if align == 0 { DEFAULT_ALIGNMENT } else { align };
        if !align.is_power_of_two() || align > MAX_ALIGNMENT {
            return Err(Error::invalid(format!(
                "alignment must be a power of two no larger than {MAX_ALIGNMENT}, got {align}"
            )));
        }
        let alloc = accel.allocate(size, align, kind)?;
        Ok(Buffer {
            accel: Arc::clone(accel),
            alloc,
            access: RwLock::new(()),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.alloc.size
    }

    /// Address of the first byte (a device address for device memory; 0 when empty).
    pub fn ptr(&self) -> usize {
        self.alloc.ptr
    }

    /// Alignment in bytes.
    pub fn alignment(&self) -> usize {
        self.alloc.align
    }

    /// Kind of memory.
    pub fn kind(&self) -> MemoryKind {
        self.alloc.kind
    }

    /// Device index.
    pub fn device(&self) -> usize {
        self.alloc.device
    }

    /// The accelerator that owns the memory.
    pub fn accelerator(&self) -> &Arc<dyn Accelerator> {
        &self.accel
    }

    /// The DLPack device of the memory.
    pub fn dl_device(&self) -> DLDevice {
        self.accel.dlpack_device(self.alloc.kind, self.alloc.device)
    }

    /// Whether the host CPU can access the bytes directly.
    pub fn host_accessible(&self) -> bool {
        self.alloc.kind.host_accessible(self.accel.is_host())
    }

    fn on_device(&self) -> bool {
        !self.host_accessible()
    }

    /// Checks that `[offset, offset + len)` lies inside the buffer; returns the address.
    pub fn check_range(&self, what: &str, offset: usize, len: usize) -> Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.alloc.size => Ok(self.alloc.ptr + offset),
            _ => Err(Error::range(format!(
                "{what}: bytes [{offset}, {offset} + {len}) exceed the buffer's {} bytes",
                self.alloc.size
            ))),
        }
    }

    fn check_stream(&self, stream: Option<&dyn Stream>) -> Result<()> {
        if let Some(s) = stream {
            if s.accelerator_id() != self.accel.id() {
                return Err(Error::invalid(format!(
                    "the stream belongs to a different accelerator than the buffer ({})",
                    self.accel.name()
                )));
            }
        }
        Ok(())
    }

    /// Copies host bytes into the buffer at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.write_on(offset, data, None)
    }

    /// [`Buffer::write`] on a stream (the current stream for `None`).
    pub fn write_on(&self, offset: usize, data: &[u8], stream: Option<&dyn Stream>) -> Result<()> {
        let dst = self.check_range("write", offset, data.len())?;
        self.check_stream(stream)?;
        if data.is_empty() {
            return Ok(());
        }
        let _guard = self.access.write();
        // SAFETY: dst..dst+len is inside our allocation; data is a valid slice.
        unsafe {
            self.accel.copy(
                dst,
                self.on_device(),
                data.as_ptr() as usize,
                false,
                data.len(),
                stream,
            )
        }
    }

    /// Copies bytes at `offset` out into `out`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.read_on(offset, out, None)
    }

    /// [`Buffer::read`] on a stream.
    pub fn read_on(
        &self,
        offset: usize,
        out: &mut [u8],
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        let src = self.check_range("read", offset, out.len())?;
        self.check_stream(stream)?;
        if out.is_empty() {
            return Ok(());
        }
        let _guard = self.access.read();
        // SAFETY: src range is inside our allocation; out is a valid mutable slice.
        unsafe {
            self.accel.copy(
                out.as_mut_ptr() as usize,
                false,
                src,
                self.on_device(),
                out.len(),
                stream,
            )
        }
    }

    /// Copies `n` bytes from `src` at `src_offset` to `self` at `dst_offset`. The buffers may
    /// be the same and the ranges may overlap. Both must belong to accelerators of the same
    /// device type.
    pub fn copy_from(
        &self,
        dst_offset: usize,
        src: &Buffer,
        src_offset: usize,
        n: usize,
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        let dst_addr = self.check_range("copy destination", dst_offset, n)?;
        let src_addr = src.check_range("copy source", src_offset, n)?;
        self.check_stream(stream)?;
        if n == 0 {
            return Ok(());
        }
        if src.accel.id() != self.accel.id() && src.on_device() && self.on_device() {
            // Device memory of two accelerator instances: neither can address the other's
            // memory in general (two plugin instances, two vendors), so stage on the host.
            let mut staged = vec![0u8; n];
            src.read_on(src_offset, &mut staged, None)?;
            return self.write_on(dst_offset, &staged, stream);
        }
        let same = std::ptr::eq(self, src);
        // Lock in address order so two opposite copies cannot deadlock.
        let (_a, _b);
        if same {
            _a = Some(self.access.write());
            _b = None;
        } else if (self as *const Buffer) < (src as *const Buffer) {
            _a = Some(self.access.write());
            _b = Some(src.access.read());
        } else {
            _b = Some(src.access.read());
            _a = Some(self.access.write());
        }
        // SAFETY: both ranges were checked against their allocations.
        unsafe {
            self.accel.copy(
                dst_addr,
                self.on_device(),
                src_addr,
                src.on_device(),
                n,
                stream,
            )
        }
    }

    /// Fills `n` bytes from `offset` with repetitions of `pattern` (1, 2, 4 or 8 bytes;
    /// `n` must be a multiple of its length).
    pub fn fill(
        &self,
        offset: usize,
        n: usize,
        pattern: &[u8],
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        if !matches!(pattern.len(), 1 | 2 | 4 | 8) {
            return Err(Error::invalid(format!(
                "pattern_size must be 1, 2, 4 or 8 bytes, got {}",
                pattern.len()
            )));
        }
        if n % pattern.len() != 0 {
            return Err(Error::invalid(format!(
                "the fill length ({n} bytes) is not a multiple of pattern_size ({})",
                pattern.len()
            )));
        }
        let dst = self.check_range("fill", offset, n)?;
        self.check_stream(stream)?;
        if n == 0 {
            return Ok(());
        }
        let _guard = self.access.write();
        // SAFETY: range checked.
        unsafe { self.accel.fill(dst, self.on_device(), n, pattern, stream) }
    }

    /// Fills `count` elements of `dtype` from byte `offset` with random numbers from the
    /// accelerator's generator.
    pub fn fill_random(
        &self,
        offset: usize,
        dtype: DType,
        count: usize,
        dist: Distribution,
        stream: Option<&dyn Stream>,
    ) -> Result<()> {
        let nbytes = count.checked_mul(dtype.size()).ok_or_else(|| {
            Error::range(format!(
                "{count} elements of {dtype} overflow the byte size"
            ))
        })?;
        let ptr = self.check_range("random fill", offset, nbytes)?;
        self.check_stream(stream)?;
        let tensor = TensorRef {
            ptr,
            device: self.dl_device(),
            dtype,
            shape: vec![count as i64],
            contiguous: true,
            numel: count,
            nbytes,
        };
        let _guard = self.access.write();
        // SAFETY: the range is inside our allocation.
        unsafe { self.accel.rng_fill(&tensor, dist, stream) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the allocation came from this accelerator and is freed exactly once here.
        unsafe { self.accel.deallocate(&self.alloc) }
    }
}
