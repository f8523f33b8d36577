//! DLPack (v1.1) structures: how tensors cross the C ABI.
//!
//! These `#[repr(C)]` types have exactly the layout of `dlpack/dlpack.h`, so numpy, PyTorch,
//! CuPy and JAX exchange memory with deepspeed_rs without copies. Enumerations that come in
//! from C (`DLDeviceType`, `DLDataTypeCode`) are plain integers here: a foreign caller may
//! pass any value, and a Rust `enum` must never hold an invalid one.
//!
//! [`TensorRef`] is the validated, read-only view the rest of the crate works with.

#![allow(non_upper_case_globals)]

use std::ffi::c_void;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// DLPack major version implemented.
pub const DLPACK_MAJOR_VERSION: u32 = 1;
/// DLPack minor version implemented.
pub const DLPACK_MINOR_VERSION: u32 = 1;

/// `kDLCPU`: host memory.
pub const kDLCPU: i32 = 1;
/// `kDLCUDA`: CUDA device memory.
pub const kDLCUDA: i32 = 2;
/// `kDLCUDAHost`: page-locked host memory from the CUDA driver.
pub const kDLCUDAHost: i32 = 3;
/// `kDLCUDAManaged`: CUDA managed memory.
pub const kDLCUDAManaged: i32 = 13;
/// `kDLExtDev`: reserved for extension devices (used by plugin accelerators).
pub const kDLExtDev: i32 = 12;

/// `kDLInt`.
pub const kDLInt: u8 = 0;
/// `kDLUInt`.
pub const kDLUInt: u8 = 1;
/// `kDLFloat`.
pub const kDLFloat: u8 = 2;
/// `kDLOpaqueHandle`.
pub const kDLOpaqueHandle: u8 = 3;
/// `kDLBfloat`.
pub const kDLBfloat: u8 = 4;
/// `kDLComplex`.
pub const kDLComplex: u8 = 5;
/// `kDLBool`.
pub const kDLBool: u8 = 6;
/// Highest type code DLPack 1.1 defines (`kDLFloat4_e2m1fn`).
pub const DL_MAX_TYPE_CODE: u8 = 17;

/// `DLPACK_FLAG_BITMASK_READ_ONLY`.
pub const DLPACK_FLAG_BITMASK_READ_ONLY: u64 = 1 << 0;
/// `DLPACK_FLAG_BITMASK_IS_COPIED`.
pub const DLPACK_FLAG_BITMASK_IS_COPIED: u64 = 1 << 1;

/// DLPack's version pair.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLPackVersion {
    /// Major version (layout changes).
    pub major: u32,
    /// Minor version (new enumeration values).
    pub minor: u32,
}

/// A device: type (`kDL*`) and index.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DLDevice {
    /// One of the `kDL*` device types.
    pub device_type: i32,
    /// The device index (0 for host memory).
    pub device_id: i32,
}

/// An element type: type code, bits, lanes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DLDataType {
    /// One of the `kDL*` type codes.
    pub code: u8,
    /// Bits per lane.
    pub bits: u8,
    /// Number of lanes (1 for scalars).
    pub lanes: u16,
}

/// A tensor that does not own its memory.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DLTensor {
    /// Base pointer (host or device address).
    pub data: *mut c_void,
    /// Where the memory lives.
    pub device: DLDevice,
    /// Number of dimensions.
    pub ndim: i32,
    /// Element type.
    pub dtype: DLDataType,
    /// `ndim` extents.
    pub shape: *mut i64,
    /// `ndim` strides in elements, or NULL for compact row-major.
    pub strides: *mut i64,
    /// Offset in bytes from `data` to the first element.
    pub byte_offset: u64,
}

/// The legacy owning tensor (`DLManagedTensor`); `deleter` releases it.
#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensor {
    /// The tensor.
    pub dl_tensor: DLTensor,
    /// The producer's context.
    pub manager_ctx: *mut c_void,
    /// Releases the tensor and `self`.
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// The versioned owning tensor (`DLManagedTensorVersioned`, DLPack ≥ 1.0).
#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensorVersioned {
    /// DLPack version of this struct.
    pub version: DLPackVersion,
    /// The producer's context.
    pub manager_ctx: *mut c_void,
    /// Releases the tensor and `self`.
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    /// `DLPACK_FLAG_BITMASK_*` flags.
    pub flags: u64,
    /// The tensor.
    pub dl_tensor: DLTensor,
}

/// Most dimensions a tensor crossing the ABI may have.
pub const MAX_NDIM: i32 = 32;

/// A validated view of a [`DLTensor`]: element type known, shape checked, byte extent
/// computed without overflow.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// Address of the first element (`data + byte_offset`).
    pub ptr: usize,
    /// The tensor's device.
    pub device: DLDevice,
    /// Element type.
    pub dtype: DType,
    /// Extents.
    pub shape: Vec<i64>,
    /// Whether the elements are stored compactly in row-major order.
    pub contiguous: bool,
    /// Number of elements.
    pub numel: usize,
    /// `numel * dtype.size()`.
    pub nbytes: usize,
}

impl TensorRef {
    /// Validates `t` (named `what` in errors).
    ///
    /// # Safety
    /// `t.shape` and `t.strides` (when non-NULL) must point to `t.ndim` readable `i64`s.
    pub unsafe fn from_raw(t: &DLTensor, what: &str) -> Result<TensorRef> {
        if t.ndim < 0 || t.ndim > MAX_NDIM {
            return Err(Error::range(format!(
                "{what}->ndim must be in 0..={MAX_NDIM}, got {}",
                t.ndim
            )));
        }
        let dtype =
            DType::from_dl(t.dtype).map_err(|e| Error::range(format!("{what}->dtype: {e}")))?;
        let ndim = t.ndim as usize;
        let shape: Vec<i64> = if ndim == 0 {
            Vec::new()
        } else {
            if t.shape.is_null() {
                return Err(Error::invalid(format!(
                    "{what}->shape is NULL but ndim is {ndim}"
                )));
            }
            // SAFETY: the caller promises `ndim` readable elements.
            unsafe { std::slice::from_raw_parts(t.shape, ndim) }.to_vec()
        };
        let mut numel: usize = 1;
        for (i, &d) in shape.iter().enumerate() {
            if d < 0 {
                return Err(Error::invalid(format!(
                    "{what}->shape[{i}] is negative ({d})"
                )));
            }
            numel = numel.checked_mul(d as usize).ok_or_else(|| {
                Error::range(format!(
                    "{what}: the element count overflows (shape {shape:?})"
                ))
            })?;
        }
        let nbytes = numel.checked_mul(dtype.size()).ok_or_else(|| {
            Error::range(format!("{what}: the byte size overflows (shape {shape:?})"))
        })?;
        let contiguous = if t.strides.is_null() || numel <= 1 {
            true
        } else {
            // SAFETY: as for shape.
            let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
            let mut expected: i64 = 1;
            let mut ok = true;
            for i in (0..ndim).rev() {
                if shape[i] != 1 && strides[i] != expected {
                    ok = false;
                    break;
                }
                expected = expected.saturating_mul(shape[i]);
            }
            ok
        };
        if numel > 0 && t.data.is_null() {
            return Err(Error::invalid(format!(
                "{what}->data is NULL but the tensor has {numel} elements"
            )));
        }
        let ptr = (t.data as usize)
            .checked_add(t.byte_offset as usize)
            .ok_or_else(|| Error::range(format!("{what}->byte_offset overflows the address")))?;
        Ok(TensorRef {
            ptr,
            device: t.device,
            dtype,
            shape,
            contiguous,
            numel,
            nbytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_dlpack_h_on_64_bit_targets() {
        assert_eq!(size_of::<DLDataType>(), 4);
        assert_eq!(size_of::<DLDevice>(), 8);
        if size_of::<usize>() == 8 {
            assert_eq!(offset_of!(DLTensor, device), 8);
            assert_eq!(offset_of!(DLTensor, ndim), 16);
            assert_eq!(offset_of!(DLTensor, dtype), 20);
            assert_eq!(offset_of!(DLTensor, shape), 24);
            assert_eq!(offset_of!(DLTensor, strides), 32);
            assert_eq!(offset_of!(DLTensor, byte_offset), 40);
            assert_eq!(size_of::<DLTensor>(), 48);
            assert_eq!(size_of::<DLManagedTensor>(), 64);
            assert_eq!(offset_of!(DLManagedTensorVersioned, flags), 24);
            assert_eq!(offset_of!(DLManagedTensorVersioned, dl_tensor), 32);
        }
    }

    fn tensor(shape: &mut [i64], strides: Option<&mut [i64]>, data: usize) -> DLTensor {
        DLTensor {
            data: data as *mut c_void,
            device: DLDevice {
                device_type: kDLCPU,
                device_id: 0,
            },
            ndim: shape.len() as i32,
            dtype: DType::F32.to_dl(),
            shape: shape.as_mut_ptr(),
            strides: strides.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()),
            byte_offset: 0,
        }
    }

    #[test]
    fn contiguity_and_sizes_are_computed() {
        let mut shape = [3, 4];
        let t = tensor(&mut shape, None, 64);
        let r = unsafe { TensorRef::from_raw(&t, "t") }.unwrap();
        assert_eq!((r.numel, r.nbytes, r.contiguous), (12, 48, true));

        let mut shape = [3, 4];
        let mut strides = [4, 1];
        let t = tensor(&mut shape, Some(&mut strides), 64);
        assert!(unsafe { TensorRef::from_raw(&t, "t") }.unwrap().contiguous);

        let mut shape = [3, 4];
        let mut strides = [1, 3]; // column-major
        let t = tensor(&mut shape, Some(&mut strides), 64);
        assert!(!unsafe { TensorRef::from_raw(&t, "t") }.unwrap().contiguous);
    }

    #[test]
    fn bad_tensors_name_the_field() {
        let mut shape = [3, -4];
        let t = tensor(&mut shape, None, 64);
        let e = unsafe { TensorRef::from_raw(&t, "x") }.unwrap_err();
        assert!(
            e.to_string().contains("x->shape[1] is negative (-4)"),
            "{e}"
        );

        let mut shape = [2];
        let t = tensor(&mut shape, None, 0);
        let e = unsafe { TensorRef::from_raw(&t, "x") }.unwrap_err();
        assert!(e.to_string().contains("x->data is NULL"), "{e}");

        let mut shape = [i64::MAX, 4];
        let t = tensor(&mut shape, None, 64);
        let e = unsafe { TensorRef::from_raw(&t, "x") }.unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
