//! The quantizer on CUDA: the `cuda_quantizer` op's kernels (NVRTC, loaded once per build
//! options) launched on a [`CudaStream`], bit-identical to the CPU op and the reference.
//!
//! Quantize is one launch of `dsrs_quantizer_quantize_<dtype>` (one block per group,
//! grid-stride over groups, a block-wide reduction looping over the group), plus, for int4
//! with an odd group size, `dsrs_quantizer_fixup_<dtype>` for the bytes two groups share.
//! Dequantize is one element-wise launch. Launches are asynchronous on the stream; the
//! arrays must stay valid until the stream has run them.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys;
use parking_lot::Mutex;

use super::{QuantizeParams, Ran, Rounding, dtype_code};
use crate::accelerator::cuda::CudaStream;
use crate::accelerator::cuda::driver::check;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{self, BuildOptions, LoadedOp};

/// Device addresses of one quantization's arrays (all on the stream's device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceArrays {
    /// The float data: the input of a quantization, the output of a dequantization.
    pub data: u64,
    /// Its element type: float32, float16 or bfloat16.
    pub dtype: DType,
    /// Its element count.
    pub n: usize,
    /// The quantized bytes ([`packed_len`](super::packed_len)`(n, bits)`).
    pub q: u64,
    /// One float32 scale per group.
    pub scales: u64,
    /// One float32 offset per group (asymmetric), `None` when symmetric.
    pub offsets: Option<u64>,
}

type Memo = Mutex<HashMap<String, Arc<LoadedOp>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// The `cuda_quantizer` op for `build`, loaded (built) once per build options.
pub fn load(build: &BuildOptions) -> Result<Arc<LoadedOp>> {
    let key = serde_json::to_string(build).unwrap_or_default();
    if let Some(op) = memo().lock().get(&key) {
        return Ok(op.clone());
    }
    let op = ops::load("cuda_quantizer", build).map_err(|e| match e.kind() {
        crate::error::ErrorKind::Incompatible => Error::Unsupported(format!(
            "quantizing CUDA tensors needs the cuda_quantizer op, which cannot be built here: {e}"
        )),
        _ => e,
    })?;
    memo().lock().insert(key, op.clone());
    Ok(op)
}

fn suffix(dtype: DType) -> Result<&'static str> {
    dtype_code(dtype)?;
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        _ => "bf16",
    })
}

fn check_arrays(params: &QuantizeParams, a: &DeviceArrays) -> Result<()> {
    params.validate()?;
    dtype_code(a.dtype)?;
    match (params.symmetric, a.offsets) {
        (true, Some(_)) => {
            return Err(Error::invalid(
                "quantize: offsets are given but the quantization is symmetric (symmetric groups have no offset)",
            ));
        }
        (false, None) => {
            return Err(Error::invalid(
                "quantize: offsets are required for asymmetric quantization (one per group)",
            ));
        }
        _ => {}
    }
    if a.n > 0 {
        for (name, p) in [
            ("data", a.data),
            ("q", a.q),
            ("scales", a.scales),
            ("offsets", a.offsets.unwrap_or(1)),
        ] {
            if p == 0 {
                return Err(Error::invalid(format!(
                    "quantize: the device address of {name} is NULL"
                )));
            }
        }
    }
    Ok(())
}

/// Makes the stream's context current and launches `f`.
///
/// # Safety
/// `args` must match the kernel's parameters exactly.
unsafe fn launch(
    f: sys::CUfunction,
    name: &str,
    grid: u32,
    block: u32,
    stream: &CudaStream,
    args: &mut [*mut c_void],
) -> Result<()> {
    let ctx = stream.ctx.0;
    check(
        || "cuCtxSetCurrent".into(),
        // SAFETY: the stream's context is a retained primary context.
        || unsafe { sys::cuCtxSetCurrent(ctx) },
    )?;
    check(
        || format!("launching {name} on CUDA device {}", stream.device),
        // SAFETY: the caller guarantees `args` matches the kernel's parameters.
        || unsafe {
            sys::cuLaunchKernel(
                f,
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                stream.handle.0,
                args.as_mut_ptr(),
                ptr::null_mut(),
            )
        },
    )
}

/// Threads per block of the quantize kernel: enough for one pass over the group's quads
/// (4 elements each), a power of two in 32..=256.
fn quantize_block(group_size: usize) -> u32 {
    let quads = (group_size / 4 + 1).min(256);
    (quads.next_power_of_two() as u32).clamp(32, 256)
}

fn grid_for(items: u64, per_block: u64, max: u64) -> u32 {
    items.div_ceil(per_block).clamp(1, max) as u32
}

/// Quantizes `a.n` elements at `a.data` on `stream` (see the module docs); returns
/// `Ran::Kernel(<target>)`.
///
/// # Safety
/// Every address in `a` must be device memory of the stream's device (or memory the device
/// can access) holding the array's size, valid until the stream has run the kernels, and
/// the outputs must not overlap the input.
pub unsafe fn quantize(
    params: &QuantizeParams,
    a: &DeviceArrays,
    stream: &CudaStream,
    build: &BuildOptions,
) -> Result<Ran> {
    check_arrays(params, a)?;
    let op = load(build)?;
    let ran = Ran::Kernel(op.target().to_string());
    if a.n == 0 {
        return Ok(ran);
    }
    let sfx = suffix(a.dtype)?;
    let device = stream.device;
    let qname = format!("dsrs_quantizer_quantize_{sfx}");
    let fq = op.symbol(&qname, device)? as sys::CUfunction;
    let (stochastic, seed, offset) = match params.rounding {
        Rounding::Nearest => (0i32, 0u64, 0u64),
        Rounding::Stochastic { seed, offset } => (1, seed, offset),
    };
    let mut input = a.data;
    let mut n = a.n as u64;
    let mut gs = params.group_size as u64;
    let mut q = a.q;
    let mut scales = a.scales;
    let mut offsets = a.offsets.unwrap_or(0);
    let mut bits = params.bits as i32;
    let mut sym = i32::from(params.symmetric);
    let mut stoch = stochastic;
    let mut seed = seed;
    let mut offset = offset;
    let mut args: [*mut c_void; 11] = [
        &mut input as *mut u64 as *mut c_void,
        &mut n as *mut u64 as *mut c_void,
        &mut gs as *mut u64 as *mut c_void,
        &mut q as *mut u64 as *mut c_void,
        &mut scales as *mut u64 as *mut c_void,
        &mut offsets as *mut u64 as *mut c_void,
        &mut bits as *mut i32 as *mut c_void,
        &mut sym as *mut i32 as *mut c_void,
        &mut stoch as *mut i32 as *mut c_void,
        &mut seed as *mut u64 as *mut c_void,
        &mut offset as *mut u64 as *mut c_void,
    ];
    let groups = params.num_groups(a.n) as u64;
    // SAFETY: the parameter list is the kernel's (quantizer.cu); the memory is the caller's.
    unsafe {
        launch(
            fq,
            &qname,
            grid_for(groups, 1, 65_535),
            quantize_block(params.group_size),
            stream,
            &mut args,
        )?;
    }
    if params.bits == 4 && params.group_size % 2 == 1 && groups > 1 {
        let fname = format!("dsrs_quantizer_fixup_{sfx}");
        let ff = op.symbol(&fname, device)? as sys::CUfunction;
        // SAFETY: the fixup kernel takes the quantize kernel's parameters.
        unsafe {
            launch(
                ff,
                &fname,
                grid_for(groups / 2, 256, 4096),
                256,
                stream,
                &mut args,
            )?;
        }
    }
    Ok(ran)
}

/// Dequantizes into `a.n` elements at `a.data` on `stream`; `params.rounding` is ignored.
///
/// # Safety
/// As [`quantize`].
pub unsafe fn dequantize(
    params: &QuantizeParams,
    a: &DeviceArrays,
    stream: &CudaStream,
    build: &BuildOptions,
) -> Result<Ran> {
    check_arrays(params, a)?;
    let op = load(build)?;
    let ran = Ran::Kernel(op.target().to_string());
    if a.n == 0 {
        return Ok(ran);
    }
    let name = format!("dsrs_quantizer_dequantize_{}", suffix(a.dtype)?);
    let f = op.symbol(&name, stream.device)? as sys::CUfunction;
    let mut q = a.q;
    let mut scales = a.scales;
    let mut offsets = a.offsets.unwrap_or(0);
    let mut n = a.n as u64;
    let mut gs = params.group_size as u64;
    let mut out = a.data;
    let mut bits = params.bits as i32;
    let mut sym = i32::from(params.symmetric);
    let mut args: [*mut c_void; 8] = [
        &mut q as *mut u64 as *mut c_void,
        &mut scales as *mut u64 as *mut c_void,
        &mut offsets as *mut u64 as *mut c_void,
        &mut n as *mut u64 as *mut c_void,
        &mut gs as *mut u64 as *mut c_void,
        &mut out as *mut u64 as *mut c_void,
        &mut bits as *mut i32 as *mut c_void,
        &mut sym as *mut i32 as *mut c_void,
    ];
    // SAFETY: the parameter list is the kernel's (quantizer.cu); the memory is the caller's.
    unsafe {
        launch(
            f,
            &name,
            grid_for(a.n as u64, 256, 8192),
            256,
            stream,
            &mut args,
        )
    }?;
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_fit_the_group() {
        assert_eq!(quantize_block(1), 32);
        assert_eq!(quantize_block(4096), 256);
        assert_eq!(quantize_block(200), 64);
        assert_eq!(quantize_block(usize::MAX), 256);
        assert_eq!(grid_for(0, 256, 10), 1);
        assert_eq!(grid_for(1 << 40, 1, 65_535), 65_535);
    }
}
