//! `dsrs_buffer_*`: accelerator memory, copies, fills, and DLPack views and exports.

use std::ffi::c_void;
use std::sync::Arc;

use super::accelerator::accel_arg;
use super::handle::{get, insert, remove};
use super::status::dsrs_status::*;
use super::stream::opt_stream_arg;
use super::{
    FfiError, Out, arg_ref, arg_slice, arg_slice_mut, dsrs_accelerator, dsrs_buffer, dsrs_status,
    dsrs_stream, host_bytes, host_bytes_mut,
};
use crate::accelerator::{Buffer, MemoryKind};
use crate::dlpack::{
    DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLPACK_MAJOR_VERSION,
    DLPACK_MINOR_VERSION, DLPackVersion, DLTensor, MAX_NDIM, TensorRef, kDLCPU, kDLCUDAHost,
};
use crate::dtype::DType;
use crate::{dsrs_warn, ffi_body};

/// Kind of memory of a `dsrs_buffer`.
pub type dsrs_memory_kind = i32;
/// The accelerator's device memory (host memory on the CPU accelerator).
pub const DSRS_MEMORY_DEVICE: dsrs_memory_kind = 0;
/// Pageable host memory, allocated and tracked by the accelerator.
pub const DSRS_MEMORY_HOST: dsrs_memory_kind = 1;
/// Page-locked host memory (fast device transfers; `mlock`ed on the CPU).
pub const DSRS_MEMORY_PINNED: dsrs_memory_kind = 2;

fn kind_arg(kind: dsrs_memory_kind) -> Result<MemoryKind, FfiError> {
    match kind {
        DSRS_MEMORY_DEVICE => Ok(MemoryKind::Device),
        DSRS_MEMORY_HOST => Ok(MemoryKind::Host),
        DSRS_MEMORY_PINNED => Ok(MemoryKind::Pinned),
        k => Err(FfiError::range(
            "kind",
            format_args!(
                "must be DSRS_MEMORY_DEVICE (0), DSRS_MEMORY_HOST (1) or DSRS_MEMORY_PINNED (2), got {k}"
            ),
        )),
    }
}

fn kind_value(kind: MemoryKind) -> dsrs_memory_kind {
    match kind {
        MemoryKind::Device => DSRS_MEMORY_DEVICE,
        MemoryKind::Host => DSRS_MEMORY_HOST,
        MemoryKind::Pinned => DSRS_MEMORY_PINNED,
    }
}

fn buf_arg(p: *const dsrs_buffer, arg: &str) -> Result<Arc<Buffer>, FfiError> {
    get(p, arg)
}

/// Allocates `size` bytes of `kind` memory on the accelerator's current device, zeroed,
/// aligned to `alignment` (a power of two; 0 = 256). The bytes count in the accelerator's
/// memory statistics until the buffer is freed. `size` 0 is valid (data pointer NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_new(
    accel: *mut dsrs_accelerator,
    size: usize,
    alignment: usize,
    kind: dsrs_memory_kind,
    out: *mut *mut dsrs_buffer,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let a = accel_arg(accel, "accel")?;
        let kind = kind_arg(kind)?;
        let b = Buffer::new(&a, size, alignment, kind)?;
        out.write(insert(Arc::new(b))?);
        Ok(())
    }
}

/// Releases a buffer handle (NULL: no-op; stale: error, logged). The memory is freed when
/// the last DLPack export of it is deleted as well.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_free(buf: *mut dsrs_buffer) -> dsrs_status {
    ffi_body! {
        remove(buf, "buf").inspect_err(|e| dsrs_warn!("ffi", "dsrs_buffer_free: {}", e.message))
    }
}

/// Size in bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_size(buf: *const dsrs_buffer, out: *mut usize) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(buf_arg(buf, "buf")?.size());
        Ok(())
    }
}

/// Address of the first byte: a host pointer for host memory, a device address for device
/// memory (NULL for an empty buffer). Valid while the buffer (or an export of it) lives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_data(
    buf: *const dsrs_buffer,
    out: *mut *mut c_void,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(buf_arg(buf, "buf")?.ptr() as *mut c_void);
        Ok(())
    }
}

/// Kind of memory (`DSRS_MEMORY_*`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_kind(
    buf: *const dsrs_buffer,
    out: *mut dsrs_memory_kind,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(kind_value(buf_arg(buf, "buf")?.kind()));
        Ok(())
    }
}

/// The DLPack device of the memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_device(
    buf: *const dsrs_buffer,
    out: *mut DLDevice,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        out.write(buf_arg(buf, "buf")?.dl_device());
        Ok(())
    }
}

/// A new handle to the accelerator that owns the buffer (free with `dsrs_accelerator_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_accelerator(
    buf: *const dsrs_buffer,
    out: *mut *mut dsrs_accelerator,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let b = buf_arg(buf, "buf")?;
        out.write(insert(Arc::clone(b.accelerator()))?);
        Ok(())
    }
}

/// Copies `n` bytes from host memory `src` into the buffer at `offset`, on `stream` (NULL:
/// current stream). The range must lie inside the buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_write(
    buf: *mut dsrs_buffer,
    offset: usize,
    src: *const c_void,
    n: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let b = buf_arg(buf, "buf")?;
        let data = arg_slice(src as *const u8, n, "src")?;
        let s = opt_stream_arg(stream, b.accelerator())?;
        b.write_on(offset, data, s.as_deref())?;
        Ok(())
    }
}

/// Copies `n` bytes from the buffer at `offset` into host memory `dst`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_read(
    buf: *const dsrs_buffer,
    offset: usize,
    dst: *mut c_void,
    n: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let b = buf_arg(buf, "buf")?;
        let out = arg_slice_mut(dst as *mut u8, n, "dst")?;
        let s = opt_stream_arg(stream, b.accelerator())?;
        b.read_on(offset, out, s.as_deref())?;
        Ok(())
    }
}

/// Copies `n` bytes between buffers (the same buffer and overlapping ranges are allowed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_copy(
    dst: *mut dsrs_buffer,
    dst_offset: usize,
    src: *const dsrs_buffer,
    src_offset: usize,
    n: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let d = buf_arg(dst, "dst")?;
        let s = buf_arg(src, "src")?;
        let st = opt_stream_arg(stream, d.accelerator())?;
        d.copy_from(dst_offset, &s, src_offset, n, st.as_deref())?;
        Ok(())
    }
}

/// Fills `n` bytes from `offset` with repetitions of a 1-, 2-, 4- or 8-byte pattern
/// (`n` a multiple of `pattern_size`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_fill(
    buf: *mut dsrs_buffer,
    offset: usize,
    n: usize,
    pattern: *const c_void,
    pattern_size: usize,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let b = buf_arg(buf, "buf")?;
        if pattern.is_null() {
            return Err(FfiError::null("pattern"));
        }
        let p = arg_slice(pattern as *const u8, pattern_size, "pattern")?;
        let s = opt_stream_arg(stream, b.accelerator())?;
        b.fill(offset, n, p, s.as_deref())?;
        Ok(())
    }
}

/// Checked geometry of a typed view: element type, shape copy, byte size, address.
struct ViewGeometry {
    dtype: DType,
    shape: Vec<i64>,
    address: usize,
}

fn view_geometry(
    b: &Buffer,
    byte_offset: u64,
    dtype: DLDataType,
    shape: *const i64,
    ndim: i32,
) -> Result<ViewGeometry, FfiError> {
    if !(0..=MAX_NDIM).contains(&ndim) {
        return Err(FfiError::range(
            "ndim",
            format_args!("must be in 0..={MAX_NDIM}, got {ndim}"),
        ));
    }
    let dt = DType::from_dl(dtype)?;
    let shape = arg_slice(shape, ndim as usize, "shape")?.to_vec();
    let mut numel: usize = 1;
    for (i, &d) in shape.iter().enumerate() {
        if d < 0 {
            return Err(FfiError::new(
                DSRS_STATUS_INVALID_ARGUMENT,
                format!("argument 'shape' has a negative extent shape[{i}] = {d}"),
            ));
        }
        numel = numel.checked_mul(d as usize).ok_or_else(|| {
            FfiError::range(
                "shape",
                format_args!("{shape:?} overflows the element count"),
            )
        })?;
    }
    let offset = usize::try_from(byte_offset).map_err(|_| {
        FfiError::range(
            "byte_offset",
            format_args!("{byte_offset} does not fit the address space"),
        )
    })?;
    if offset % dt.size() != 0 {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!(
                "argument 'byte_offset' ({offset}) is not a multiple of the {dt} element size ({})",
                dt.size()
            ),
        ));
    }
    let nbytes = numel.checked_mul(dt.size()).ok_or_else(|| {
        FfiError::range(
            "shape",
            format_args!("{shape:?} of {dt} overflows the byte size"),
        )
    })?;
    let address = b.check_range("view", offset, nbytes).map_err(|e| {
        FfiError::new(
            DSRS_STATUS_OUT_OF_RANGE,
            format!("{e} ({dt} shape {shape:?})"),
        )
    })?;
    Ok(ViewGeometry {
        dtype: dt,
        shape,
        // DLPack: the data pointer of an empty tensor is NULL.
        address: if nbytes == 0 { 0 } else { address },
    })
}

/// Describes `ndim` dims of `shape` of `dtype`, starting `byte_offset` bytes into the
/// buffer, as a `DLTensor` in `*out` (compact row-major: `strides` is NULL). `out->shape`
/// points at the caller's `shape` array, so the view is valid while both the array and the
/// buffer live. The view must fit in the buffer; `byte_offset` must be a multiple of the
/// element size.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_view(
    buf: *const dsrs_buffer,
    byte_offset: u64,
    dtype: DLDataType,
    shape: *const i64,
    ndim: i32,
    out: *mut DLTensor,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let b = buf_arg(buf, "buf")?;
        let g = view_geometry(&b, byte_offset, dtype, shape, ndim)?;
        out.write(DLTensor {
            data: g.address as *mut c_void,
            device: b.dl_device(),
            ndim,
            dtype: g.dtype.to_dl(),
            shape: if ndim == 0 { std::ptr::null_mut() } else { shape as *mut i64 },
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        });
        Ok(())
    }
}

/// Owns what a DLPack export needs: the buffer reference and the shape and strides arrays.
struct Export {
    _buffer: Arc<Buffer>,
    shape: Box<[i64]>,
    strides: Box<[i64]>,
}

/// Validates a typed view and builds what an owning DLPack export needs: the context that
/// keeps the buffer and the shape/strides arrays alive, and the tensor pointing into them.
/// The tensor's pointers stay valid when the context is moved into a `Box` (the arrays are
/// heap allocations of their own).
fn export(
    b: &Arc<Buffer>,
    byte_offset: u64,
    dtype: DLDataType,
    shape: *const i64,
    ndim: i32,
) -> Result<(Export, DLTensor), FfiError> {
    let g = view_geometry(b, byte_offset, dtype, shape, ndim)?;
    let mut ex = Export {
        strides: compact_strides(&g.shape),
        shape: g.shape.clone().into_boxed_slice(),
        _buffer: Arc::clone(b),
    };
    let empty = g.shape.is_empty();
    let tensor = DLTensor {
        data: g.address as *mut c_void,
        device: b.dl_device(),
        ndim: g.shape.len() as i32,
        dtype: g.dtype.to_dl(),
        shape: if empty {
            std::ptr::null_mut()
        } else {
            ex.shape.as_mut_ptr()
        },
        strides: if empty {
            std::ptr::null_mut()
        } else {
            ex.strides.as_mut_ptr()
        },
        byte_offset: 0,
    };
    Ok((ex, tensor))
}

fn compact_strides(shape: &[i64]) -> Box<[i64]> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides.into_boxed_slice()
}

#[repr(C)]
struct ManagedExport {
    tensor: DLManagedTensor, // first: the DLManagedTensor* is the ManagedExport*
    export: Export,
}

unsafe extern "C" fn delete_managed(p: *mut DLManagedTensor) {
    if p.is_null() {
        return;
    }
    // SAFETY: p came from Box::into_raw of a ManagedExport in dsrs_buffer_to_dlpack.
    let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(p as *mut ManagedExport) }));
}

/// Exports a typed view of the buffer as a legacy DLPack `DLManagedTensor` (what
/// `__dlpack__` capsules named `"dltensor"` carry), zero-copy. The export keeps the buffer's
/// memory alive until the consumer calls `(*out)->deleter(*out)`, even if the buffer handle
/// is freed first. Geometry rules as in `dsrs_buffer_view`; strides are explicit.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_to_dlpack(
    buf: *const dsrs_buffer,
    byte_offset: u64,
    dtype: DLDataType,
    shape: *const i64,
    ndim: i32,
    out: *mut *mut DLManagedTensor,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let b = buf_arg(buf, "buf")?;
        let (export, tensor) = export(&b, byte_offset, dtype, shape, ndim)?;
        let boxed = Box::new(ManagedExport {
            tensor: DLManagedTensor { dl_tensor: tensor, manager_ctx: std::ptr::null_mut(), deleter: Some(delete_managed) },
            export,
        });
        let raw = Box::into_raw(boxed);
        // SAFETY: raw is a valid, uniquely owned ManagedExport.
        unsafe { (*raw).tensor.manager_ctx = raw as *mut c_void };
        out.write(raw as *mut DLManagedTensor);
        Ok(())
    }
}

#[repr(C)]
struct VersionedExport {
    tensor: DLManagedTensorVersioned,
    export: Export,
}

unsafe extern "C" fn delete_versioned(p: *mut DLManagedTensorVersioned) {
    if p.is_null() {
        return;
    }
    // SAFETY: p came from Box::into_raw of a VersionedExport in dsrs_buffer_to_dlpack_versioned.
    let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(p as *mut VersionedExport) }));
}

/// Like `dsrs_buffer_to_dlpack`, as a DLPack 1.x `DLManagedTensorVersioned` (capsules named
/// `"dltensor_versioned"`). `read_only` sets `DLPACK_FLAG_BITMASK_READ_ONLY`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_to_dlpack_versioned(
    buf: *const dsrs_buffer,
    byte_offset: u64,
    dtype: DLDataType,
    shape: *const i64,
    ndim: i32,
    read_only: bool,
    out: *mut *mut DLManagedTensorVersioned,
) -> dsrs_status {
    ffi_body! {
        let out = Out::new(out, "out")?;
        let b = buf_arg(buf, "buf")?;
        let (export, tensor) = export(&b, byte_offset, dtype, shape, ndim)?;
        let boxed = Box::new(VersionedExport {
            tensor: DLManagedTensorVersioned {
                version: DLPackVersion { major: DLPACK_MAJOR_VERSION, minor: DLPACK_MINOR_VERSION },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_versioned),
                flags: if read_only { crate::dlpack::DLPACK_FLAG_BITMASK_READ_ONLY } else { 0 },
                dl_tensor: tensor,
            },
            export,
        });
        let raw = Box::into_raw(boxed);
        // SAFETY: raw is a valid, uniquely owned VersionedExport.
        unsafe { (*raw).tensor.manager_ctx = raw as *mut c_void };
        out.write(raw as *mut DLManagedTensorVersioned);
        Ok(())
    }
}

fn host_tensor(t: &DLTensor, arg: &str) -> Result<TensorRef, FfiError> {
    // SAFETY: shape/strides validity is the caller's DLTensor contract.
    let r = unsafe { TensorRef::from_raw(t, arg) }?;
    if !matches!(r.device.device_type, kDLCPU | kDLCUDAHost) {
        return Err(FfiError::new(
            DSRS_STATUS_UNSUPPORTED,
            format!(
                "argument '{arg}' lives on DLPack device type {}; only host tensors are supported here",
                r.device.device_type
            ),
        ));
    }
    if !r.contiguous {
        return Err(FfiError::new(
            DSRS_STATUS_INVALID_ARGUMENT,
            format!(
                "argument '{arg}' is not contiguous (strides must be NULL or compact row-major)"
            ),
        ));
    }
    Ok(r)
}

/// Copies a contiguous host tensor (any dtype, e.g. a numpy array) into the buffer at
/// `offset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_copy_from_tensor(
    buf: *mut dsrs_buffer,
    offset: usize,
    src: *const DLTensor,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let b = buf_arg(buf, "buf")?;
        let t = host_tensor(arg_ref(src, "src")?, "src")?;
        let s = opt_stream_arg(stream, b.accelerator())?;
        // SAFETY: the tensor's memory is the caller's contract; nbytes was validated.
        let data = unsafe { host_bytes(&t) };
        b.write_on(offset, data, s.as_deref())?;
        Ok(())
    }
}

/// Copies bytes from the buffer at `offset` into a contiguous host tensor (its byte size
/// decides how many).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_buffer_copy_to_tensor(
    buf: *const dsrs_buffer,
    offset: usize,
    dst: *const DLTensor,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let b = buf_arg(buf, "buf")?;
        let t = host_tensor(arg_ref(dst, "dst")?, "dst")?;
        let s = opt_stream_arg(stream, b.accelerator())?;
        // SAFETY: the tensor's memory is the caller's contract; nbytes was validated.
        let out = unsafe { host_bytes_mut(&t) };
        b.read_on(offset, out, s.as_deref())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(&*compact_strides(&[2, 3, 4]), &[12, 4, 1]);
        assert_eq!(&*compact_strides(&[5]), &[1]);
        assert_eq!(&*compact_strides(&[2, 0, 3]), &[3, 3, 1]);
    }
}
