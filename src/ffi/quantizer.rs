//! `dsrs_quantize`, `dsrs_dequantize` and `dsrs_quantize_sizes`: group-wise int8 / packed
//! int4 quantization of DLPack tensors (`docs/quantizer.md`).
//!
//! Tensors in host memory (`kDLCPU`, `kDLCUDAHost`) run on the CPU (the `cpu_quantizer`
//! op, or the pure-Rust reference); tensors on a CUDA device (`kDLCUDA`) run the
//! `cuda_quantizer` op on a stream of the CUDA accelerator. Results are bit-identical
//! either way.

use std::sync::Arc;

use half::{bf16, f16};

use super::handle::get;
use super::status::dsrs_status::*;
use super::{FfiError, Out, arg_ref, dsrs_status, dsrs_stream};
use crate::accelerator::cuda::CudaStream;
use crate::accelerator::{self, Stream};
use crate::dlpack::{DLTensor, TensorRef, kDLCPU, kDLCUDA, kDLCUDAHost};
use crate::dtype::DType;
use crate::ffi_body;
use crate::ops::BuildOptions;
use crate::ops::quantizer::{
    self, Backend, Exec, Floats, FloatsMut, QuantizeParams, Rounding, cuda::DeviceArrays,
};

/// Rounding of `dsrs_quantize_config`.
pub type dsrs_rounding = i32;
/// Round to nearest, ties to even.
pub const DSRS_ROUNDING_NEAREST: dsrs_rounding = 0;
/// Stochastic: `floor(v + u)`, `u` uniform in [0, 1) from Philox (seed, offset).
pub const DSRS_ROUNDING_STOCHASTIC: dsrs_rounding = 1;

/// Which implementation runs a quantization of host tensors (`dsrs_quantize_config`).
pub type dsrs_quantize_backend = i32;
/// The `cpu_quantizer` op; when it cannot be built, the pure-Rust reference (one warning).
pub const DSRS_QUANTIZE_BACKEND_AUTO: dsrs_quantize_backend = 0;
/// The op only: a build failure is an error.
pub const DSRS_QUANTIZE_BACKEND_KERNEL: dsrs_quantize_backend = 1;
/// The pure-Rust reference only (host tensors only; never builds anything).
pub const DSRS_QUANTIZE_BACKEND_REFERENCE: dsrs_quantize_backend = 2;

/// How to quantize. Layout (C, natural alignment; 48 bytes, align 8): 0 `bits`,
/// 4 `symmetric` (int32), 8 `group_size` (uint64), 16 `rounding` (int32), 20: 4 bytes of
/// padding, 24 `seed`, 32 `offset` (uint64), 40 `num_threads`, 44 `backend` (int32).
/// Zero-initialize it and set the fields. Every field is checked on entry; a bad one is
/// `DSRS_STATUS_OUT_OF_RANGE` naming it (`config->bits must be 8 (int8) or 4 ...`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct dsrs_quantize_config {
    /// 8 (int8, one byte per element) or 4 (packed int4: element 2i in the low nibble of
    /// byte i, 2i+1 in the high nibble, over the whole flattened tensor).
    pub bits: i32,
    /// 1: symmetric (q in [-127, 127] / [-7, 7], scales only); 0: asymmetric (q in
    /// [0, 255] / [0, 15], scales and offsets).
    pub symmetric: i32,
    /// Elements per group, >= 1 (any value; the last group may be partial).
    pub group_size: u64,
    /// `DSRS_ROUNDING_NEAREST` or `DSRS_ROUNDING_STOCHASTIC`.
    pub rounding: dsrs_rounding,
    /// Stochastic rounding: the Philox key.
    pub seed: u64,
    /// Stochastic rounding: the first Philox block; element i uses word i % 4 of block
    /// offset + i / 4, so a call uses ceil(n / 4) blocks (advance by that much).
    pub offset: u64,
    /// CPU threads (0: the OpenMP default). Ignored for CUDA tensors.
    pub num_threads: i32,
    /// `DSRS_QUANTIZE_BACKEND_*` (0, AUTO, is the default).
    pub backend: dsrs_quantize_backend,
}

fn params_of(cfg: &dsrs_quantize_config) -> Result<(QuantizeParams, Exec), FfiError> {
    if cfg.bits != 8 && cfg.bits != 4 {
        return Err(FfiError::range(
            "config->bits",
            format_args!("must be 8 (int8) or 4 (packed int4), got {}", cfg.bits),
        ));
    }
    if cfg.symmetric != 0 && cfg.symmetric != 1 {
        return Err(FfiError::range(
            "config->symmetric",
            format_args!(
                "must be 1 (symmetric) or 0 (asymmetric), got {}",
                cfg.symmetric
            ),
        ));
    }
    let group_size = usize::try_from(cfg.group_size)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| {
            FfiError::range(
                "config->group_size",
                format_args!("must be >= 1, got {}", cfg.group_size),
            )
        })?;
    let rounding = match cfg.rounding {
        DSRS_ROUNDING_NEAREST => Rounding::Nearest,
        DSRS_ROUNDING_STOCHASTIC => Rounding::Stochastic {
            seed: cfg.seed,
            offset: cfg.offset,
        },
        r => {
            return Err(FfiError::range(
                "config->rounding",
                format_args!(
                    "must be DSRS_ROUNDING_NEAREST (0) or DSRS_ROUNDING_STOCHASTIC (1), got {r}"
                ),
            ));
        }
    };
    let num_threads = usize::try_from(cfg.num_threads).map_err(|_| {
        FfiError::range(
            "config->num_threads",
            format_args!("must be >= 0 (0: the default), got {}", cfg.num_threads),
        )
    })?;
    let backend = match cfg.backend {
        DSRS_QUANTIZE_BACKEND_AUTO => Backend::Auto,
        DSRS_QUANTIZE_BACKEND_KERNEL => Backend::Kernel,
        DSRS_QUANTIZE_BACKEND_REFERENCE => Backend::Reference,
        b => {
            return Err(FfiError::range(
                "config->backend",
                format_args!(
                    "must be DSRS_QUANTIZE_BACKEND_AUTO (0), _KERNEL (1) or _REFERENCE (2), got {b}"
                ),
            ));
        }
    };
    let params = QuantizeParams {
        bits: cfg.bits as u32,
        symmetric: cfg.symmetric == 1,
        group_size,
        rounding,
    };
    let exec = Exec {
        backend,
        num_threads,
        build: BuildOptions::default(),
    };
    Ok((params, exec))
}

fn invalid(msg: impl Into<String>) -> FfiError {
    FfiError::new(DSRS_STATUS_INVALID_ARGUMENT, msg)
}

/// Where a tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Host,
    Cuda(i32),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Host => write!(f, "host memory"),
            Place::Cuda(d) => write!(f, "CUDA device {d}"),
        }
    }
}

/// A validated, contiguous tensor argument.
struct Arg {
    name: &'static str,
    t: TensorRef,
    place: Place,
}

fn tensor_arg(p: *const DLTensor, name: &'static str) -> Result<Arg, FfiError> {
    let d = arg_ref(p, name)?;
    // SAFETY: shape/strides validity is the caller's contract for a DLTensor.
    let t = unsafe { TensorRef::from_raw(d, name) }?;
    if !t.contiguous {
        return Err(invalid(format!(
            "argument '{name}' is not contiguous (strides must be NULL or compact row-major)"
        )));
    }
    let place = match t.device.device_type {
        kDLCPU | kDLCUDAHost => Place::Host,
        kDLCUDA => Place::Cuda(t.device.device_id),
        other => {
            return Err(FfiError::new(
                DSRS_STATUS_UNSUPPORTED,
                format!(
                    "argument '{name}' is on DLPack device type {other}; the quantizer takes kDLCPU (1), kDLCUDAHost (3) or kDLCUDA (2) tensors"
                ),
            ));
        }
    };
    Ok(Arg { name, t, place })
}

fn check_dtype(a: &Arg, allowed: &[DType], what: &str) -> Result<(), FfiError> {
    if allowed.contains(&a.t.dtype) {
        Ok(())
    } else {
        Err(invalid(format!(
            "argument '{}' must be {what}, got {}",
            a.name,
            a.t.dtype.name()
        )))
    }
}

fn check_numel(a: &Arg, want: usize, why: impl std::fmt::Display) -> Result<(), FfiError> {
    if a.t.numel == want {
        Ok(())
    } else {
        Err(invalid(format!(
            "argument '{}' has {} elements but {want} are expected ({why})",
            a.name, a.t.numel
        )))
    }
}

/// Validates the quantized arrays against `n` data elements and returns them with the
/// place all tensors share.
fn check_quantized(
    params: &QuantizeParams,
    data: &Arg,
    q: &Arg,
    scales: &Arg,
    offsets: Option<&Arg>,
) -> Result<Place, FfiError> {
    let n = data.t.numel;
    if quantizer::dtype_code(data.t.dtype).is_err() {
        return Err(FfiError::new(
            DSRS_STATUS_UNSUPPORTED,
            format!(
                "argument '{}' must be float32, float16 or bfloat16, got {}",
                data.name,
                data.t.dtype.name()
            ),
        ));
    }
    check_dtype(q, &[DType::I8, DType::U8], "int8 or uint8")?;
    check_dtype(scales, &[DType::F32], "float32")?;
    check_numel(
        q,
        params.q_len(n),
        format_args!(
            "'{}' has {n} elements; at {} bits{}",
            data.name,
            params.bits,
            if params.bits == 4 {
                ", two per byte"
            } else {
                ""
            }
        ),
    )?;
    let groups = params.num_groups(n);
    let why = format_args!(
        "one per group: the {n} elements of '{}' in groups of {} make {groups}",
        data.name, params.group_size
    )
    .to_string();
    check_numel(scales, groups, &why)?;
    match (params.symmetric, offsets) {
        (true, Some(_)) => {
            return Err(invalid(
                "argument 'offsets' must be NULL for symmetric quantization (config->symmetric = 1)",
            ));
        }
        (false, None) => {
            return Err(FfiError::new(
                DSRS_STATUS_NULL_ARGUMENT,
                "argument 'offsets' is NULL but asymmetric quantization (config->symmetric = 0) needs one offset per group",
            ));
        }
        (false, Some(o)) => {
            check_dtype(o, &[DType::F32], "float32")?;
            check_numel(o, groups, &why)?;
        }
        (true, None) => {}
    }
    let mut all = vec![data, q, scales];
    all.extend(offsets);
    for a in &all[1..] {
        if a.place != data.place {
            return Err(invalid(format!(
                "argument '{}' is in {} but '{}' is in {}; all tensors must be on one device",
                a.name, a.place, data.name, data.place
            )));
        }
    }
    // Host and device alike: a misaligned device pointer would fault in the kernel and
    // poison the CUDA context.
    for a in &all {
        if a.t.numel > 0 && a.t.ptr % a.t.dtype.size() != 0 {
            return Err(invalid(format!(
                "argument '{}' (data + byte_offset = {:#x}) is not aligned to its element size ({} bytes)",
                a.name,
                a.t.ptr,
                a.t.dtype.size()
            )));
        }
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let overlap = a.t.nbytes > 0
                && b.t.nbytes > 0
                && a.t.ptr < b.t.ptr + b.t.nbytes
                && b.t.ptr < a.t.ptr + a.t.nbytes;
            if overlap {
                return Err(invalid(format!(
                    "arguments '{}' and '{}' overlap in memory",
                    a.name, b.name
                )));
            }
        }
    }
    Ok(data.place)
}

/// # Safety
/// `a` is a validated host tensor of `T`s (aligned, `numel` elements).
unsafe fn host_slice<'a, T>(a: &Arg) -> &'a [T] {
    // SAFETY: the caller's contract.
    unsafe { super::host_slice(&a.t) }
}

/// # Safety
/// As [`host_slice`], and the memory is writable and overlaps no other argument.
unsafe fn host_slice_mut<'a, T>(a: &Arg) -> &'a mut [T] {
    // SAFETY: the caller's contract; overlaps were refused.
    unsafe { super::host_slice_mut(&a.t) }
}

/// # Safety
/// As [`host_slice`].
unsafe fn floats<'a>(a: &Arg) -> Floats<'a> {
    // SAFETY: the caller's contract.
    unsafe {
        match a.t.dtype {
            DType::F32 => Floats::F32(host_slice::<f32>(a)),
            DType::F16 => Floats::F16(host_slice::<f16>(a)),
            _ => Floats::BF16(host_slice::<bf16>(a)),
        }
    }
}

/// # Safety
/// As [`host_slice_mut`].
unsafe fn floats_mut<'a>(a: &Arg) -> FloatsMut<'a> {
    // SAFETY: the caller's contract.
    unsafe {
        match a.t.dtype {
            DType::F32 => FloatsMut::F32(host_slice_mut::<f32>(a)),
            DType::F16 => FloatsMut::F16(host_slice_mut::<f16>(a)),
            _ => FloatsMut::BF16(host_slice_mut::<bf16>(a)),
        }
    }
}

/// Host tensors: a given stream is synchronized first, so work queued on it finishes.
fn sync_host_stream(stream: *mut dsrs_stream) -> Result<(), FfiError> {
    if !stream.is_null() {
        get(stream, "stream")?.stream.synchronize()?;
    }
    Ok(())
}

/// The CUDA stream to launch on for tensors on CUDA device `device`.
fn cuda_stream(stream: *mut dsrs_stream, device: i32) -> Result<Arc<dyn Stream>, FfiError> {
    let s: Arc<dyn Stream> = if stream.is_null() {
        let acc = accelerator::current()?;
        if acc.name() != "cuda" {
            return Err(invalid(format!(
                "the tensors are on CUDA device {device}, so a stream of the CUDA accelerator is needed: argument 'stream' is NULL and the current accelerator is {}",
                acc.name()
            )));
        }
        acc.current_stream()?
    } else {
        let obj = get(stream, "stream")?;
        Arc::clone(&obj.stream)
    };
    let Some(cs) = s.as_any().downcast_ref::<CudaStream>() else {
        return Err(invalid(format!(
            "the tensors are on CUDA device {device} but argument 'stream' is not a stream of the CUDA accelerator"
        )));
    };
    if i32::try_from(cs.device).ok() != Some(device) {
        return Err(invalid(format!(
            "the tensors are on CUDA device {device} but argument 'stream' belongs to CUDA device {}",
            cs.device
        )));
    }
    Ok(s)
}

fn cuda_backend_ok(exec: &Exec) -> Result<(), FfiError> {
    if exec.backend == Backend::Reference {
        return Err(FfiError::new(
            DSRS_STATUS_UNSUPPORTED,
            "config->backend is DSRS_QUANTIZE_BACKEND_REFERENCE, which runs on host memory only; the tensors are on a CUDA device",
        ));
    }
    Ok(())
}

/// `*q_bytes` receives the size of the quantized data for `n` elements (`n` for 8 bits,
/// `ceil(n / 2)` for 4) and `*num_groups` the number of scales (and offsets):
/// `ceil(n / group_size)`. Only `bits` and `group_size` of `config` are read (and checked).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_quantize_sizes(
    n: u64,
    config: *const dsrs_quantize_config,
    q_bytes: *mut u64,
    num_groups: *mut u64,
) -> dsrs_status {
    ffi_body! {
        let cfg = arg_ref(config, "config")?;
        let q_bytes = Out::new(q_bytes, "q_bytes")?;
        let num_groups = Out::new(num_groups, "num_groups")?;
        // Only the layout fields matter here: check those alone.
        let layout = dsrs_quantize_config {
            bits: cfg.bits,
            group_size: cfg.group_size,
            symmetric: 1,
            rounding: DSRS_ROUNDING_NEAREST,
            seed: 0,
            offset: 0,
            num_threads: 0,
            backend: DSRS_QUANTIZE_BACKEND_AUTO,
        };
        let (params, _) = params_of(&layout)?;
        let n = usize::try_from(n)
            .map_err(|_| FfiError::range("n", format_args!("{n} does not fit in size_t")))?;
        q_bytes.write(params.q_len(n) as u64);
        num_groups.write(params.num_groups(n) as u64);
        Ok(())
    }
}

/// Quantizes `input` (float32, float16 or bfloat16; any shape, read flattened) group-wise
/// into `q` (int8 or uint8, `dsrs_quantize_sizes` bytes), `scales` (float32, one per
/// group) and, when asymmetric, `offsets` (float32, one per group; must be NULL when
/// symmetric). All tensors must be contiguous, non-overlapping and on one device: host
/// memory (`kDLCPU`, `kDLCUDAHost`) runs on the CPU (a non-NULL `stream` is synchronized
/// first), a CUDA device (`kDLCUDA`) runs the CUDA kernels asynchronously on `stream`,
/// which must be a stream of the CUDA accelerator on that device (NULL: the current
/// stream of the current accelerator, which must then be CUDA). The format and formulas
/// are in docs/quantizer.md; CPU and CUDA results are identical bit for bit.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_quantize(
    config: *const dsrs_quantize_config,
    input: *const DLTensor,
    q: *mut DLTensor,
    scales: *mut DLTensor,
    offsets: *mut DLTensor,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let cfg = arg_ref(config, "config")?;
        let (params, exec) = params_of(cfg)?;
        let input = tensor_arg(input, "input")?;
        let q = tensor_arg(q, "q")?;
        let scales = tensor_arg(scales, "scales")?;
        let offsets = if offsets.is_null() { None } else { Some(tensor_arg(offsets, "offsets")?) };
        let place = check_quantized(&params, &input, &q, &scales, offsets.as_ref())?;
        match place {
            Place::Host => {
                sync_host_stream(stream)?;
                // SAFETY: validated host tensors (dtype, length, alignment, no overlap).
                unsafe {
                    quantizer::quantize(
                        &params,
                        floats(&input),
                        host_slice_mut::<u8>(&q),
                        host_slice_mut::<f32>(&scales),
                        offsets.as_ref().map(|o| host_slice_mut::<f32>(o)),
                        &exec,
                    )
                }?;
            }
            Place::Cuda(device) => {
                cuda_backend_ok(&exec)?;
                let s = cuda_stream(stream, device)?;
                let cs = s.as_any().downcast_ref::<CudaStream>().expect("checked CUDA stream");
                let arrays = DeviceArrays {
                    data: input.t.ptr as u64,
                    dtype: input.t.dtype,
                    n: input.t.numel,
                    q: q.t.ptr as u64,
                    scales: scales.t.ptr as u64,
                    offsets: offsets.as_ref().map(|o| o.t.ptr as u64),
                };
                // SAFETY: validated device tensors; their memory is the caller's contract.
                unsafe { quantizer::cuda::quantize(&params, &arrays, cs, &exec.build) }?;
            }
        }
        Ok(())
    }
}

/// Dequantizes `q`, `scales` and (asymmetric) `offsets` into `output` (float32, float16 or
/// bfloat16; its element count is the count that was quantized). Tensors, devices and
/// `stream` as for `dsrs_quantize`; `config->rounding`, `seed` and `offset` are ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dsrs_dequantize(
    config: *const dsrs_quantize_config,
    q: *const DLTensor,
    scales: *const DLTensor,
    offsets: *const DLTensor,
    output: *mut DLTensor,
    stream: *mut dsrs_stream,
) -> dsrs_status {
    ffi_body! {
        let cfg = arg_ref(config, "config")?;
        let (params, exec) = params_of(cfg)?;
        let q = tensor_arg(q, "q")?;
        let scales = tensor_arg(scales, "scales")?;
        let offsets = if offsets.is_null() { None } else { Some(tensor_arg(offsets, "offsets")?) };
        let output = tensor_arg(output, "output")?;
        let place = check_quantized(&params, &output, &q, &scales, offsets.as_ref())?;
        match place {
            Place::Host => {
                sync_host_stream(stream)?;
                // SAFETY: validated host tensors (dtype, length, alignment, no overlap).
                unsafe {
                    quantizer::dequantize(
                        &params,
                        host_slice::<u8>(&q),
                        host_slice::<f32>(&scales),
                        offsets.as_ref().map(|o| host_slice::<f32>(o)),
                        floats_mut(&output),
                        &exec,
                    )
                }?;
            }
            Place::Cuda(device) => {
                cuda_backend_ok(&exec)?;
                let s = cuda_stream(stream, device)?;
                let cs = s.as_any().downcast_ref::<CudaStream>().expect("checked CUDA stream");
                let arrays = DeviceArrays {
                    data: output.t.ptr as u64,
                    dtype: output.t.dtype,
                    n: output.t.numel,
                    q: q.t.ptr as u64,
                    scales: scales.t.ptr as u64,
                    offsets: offsets.as_ref().map(|o| o.t.ptr as u64),
                };
                // SAFETY: validated device tensors; their memory is the caller's contract.
                unsafe { quantizer::cuda::dequantize(&params, &arrays, cs, &exec.build) }?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn config_matches_the_documented_layout() {
        assert_eq!(size_of::<dsrs_quantize_config>(), 48);
        assert_eq!(offset_of!(dsrs_quantize_config, symmetric), 4);
        assert_eq!(offset_of!(dsrs_quantize_config, group_size), 8);
        assert_eq!(offset_of!(dsrs_quantize_config, rounding), 16);
        assert_eq!(offset_of!(dsrs_quantize_config, seed), 24);
        assert_eq!(offset_of!(dsrs_quantize_config, offset), 32);
        assert_eq!(offset_of!(dsrs_quantize_config, num_threads), 40);
        assert_eq!(offset_of!(dsrs_quantize_config, backend), 44);
    }
}
