//! Group-wise quantization (DeepSpeed's quantizer op) for every group size: int8 and packed
//! int4, symmetric and asymmetric, rounding to nearest (ties to even) or stochastically
//! (Philox4x32-10, the accelerators' generator), quantize and dequantize, fp32 / fp16 /
//! bf16 data with fp32 scales and offsets.
//!
//! Three implementations agree bit for bit: the `cpu_quantizer` op (SIMD + OpenMP, called
//! by [`quantize`] and [`dequantize`] on host slices), the `cuda_quantizer` op ([`cuda`],
//! on a CUDA stream) and the pure-Rust [`reference`](mod@reference) (used when the CPU op
//! cannot be built, and by the tests). `docs/quantizer.md` is the specification: byte
//! layout, formulas, rounding, error bounds and the Philox keying.
//!
//! Layout in brief: `n` elements form [`num_groups`]`(n, group_size)` groups of
//! `group_size` consecutive elements (the last may be partial), each with one fp32 scale
//! (and, asymmetric, one fp32 offset, the group's minimum). `q` holds one byte per element
//! (int8) or two elements per byte (int4, element `2i` in the low nibble), over the whole
//! flattened tensor: [`packed_len`]`(n, bits)` bytes.

pub mod cuda;
pub mod reference;

use std::ffi::c_void;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

pub use crate::ops::optim::{Backend, Exec, Ran};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::kernels::{self, EntryPoints};

/// How values are rounded to integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// To nearest, ties to even: `|x - deq(q(x))| <= scale / 2` (plus float slack).
    #[default]
    Nearest,
    /// `floor(v + u)` with `u` uniform in [0, 1) from Philox4x32-10: unbiased in mean,
    /// `|x - deq(q(x))| < scale` (plus float slack). Element `i` (of the flattened tensor)
    /// takes word `i % 4` of block `offset + i / 4` under key `seed`, so a call uses
    /// [`philox_blocks`]`(n)` blocks starting at `offset`; advance `offset` by that much
    /// for the next call.
    Stochastic {
        /// The Philox key.
        seed: u64,
        /// The first Philox block.
        offset: u64,
    },
}

/// What to quantize to and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeParams {
    /// 8 (int8, one byte per element) or 4 (int4, two elements per byte).
    pub bits: u32,
    /// Symmetric (`q in [-qmax, qmax]`, scales only) or asymmetric (`q in [0, 2^bits - 1]`,
    /// scales and offsets).
    pub symmetric: bool,
    /// Elements per group, >= 1; any value (the last group may be partial).
    pub group_size: usize,
    /// Rounding.
    pub rounding: Rounding,
}

impl Default for QuantizeParams {
    fn default() -> QuantizeParams {
        QuantizeParams {
            bits: 8,
            symmetric: true,
            group_size: 2048,
            rounding: Rounding::Nearest,
        }
    }
}

impl QuantizeParams {
    /// Checks every field; the error (out of range) names the field and its value.
    pub fn validate(&self) -> Result<()> {
        if self.bits != 8 && self.bits != 4 {
            return Err(Error::range(format!(
                "quantize: bits = {} is out of range: it must be 8 (int8) or 4 (packed int4)",
                self.bits
            )));
        }
        if self.group_size == 0 {
            return Err(Error::range(
                "quantize: group_size = 0 is out of range: it must be >= 1",
            ));
        }
        if u64::try_from(self.group_size).is_err() {
            return Err(Error::range(format!(
                "quantize: group_size = {} is out of range: it must fit in 64 bits",
                self.group_size
            )));
        }
        Ok(())
    }

    /// The smallest quantized value: `-127` / `-7` symmetric, `0` asymmetric.
    pub fn qmin(&self) -> i32 {
        if self.symmetric { -self.qmax() } else { 0 }
    }

    /// The largest quantized value: `127` / `7` symmetric, `255` / `15` asymmetric.
    pub fn qmax(&self) -> i32 {
        match (self.symmetric, self.bits) {
            (true, 8) => 127,
            (true, _) => 7,
            (false, 8) => 255,
            (false, _) => 15,
        }
    }

    /// Bytes of `q` for `n` elements ([`packed_len`]).
    pub fn q_len(&self, n: usize) -> usize {
        packed_len(n, self.bits)
    }

    /// Groups of `n` elements ([`num_groups`]).
    pub fn num_groups(&self, n: usize) -> usize {
        num_groups(n, self.group_size)
    }

    /// Whether rounding is stochastic.
    pub fn is_stochastic(&self) -> bool {
        matches!(self.rounding, Rounding::Stochastic { .. })
    }
}

/// Bytes of quantized data for `n` elements: `n` for 8 bits, `ceil(n / 2)` for 4 (any other
/// `bits` is treated as 8; [`QuantizeParams::validate`] refuses them).
pub fn packed_len(n: usize, bits: u32) -> usize {
    if bits == 4 { n / 2 + n % 2 } else { n }
}

/// Groups of `n` elements: `ceil(n / group_size)` (0 for `n == 0`; `group_size` 0 gives 0).
pub fn num_groups(n: usize, group_size: usize) -> usize {
    if group_size == 0 {
        return 0;
    }
    n / group_size + usize::from(n % group_size != 0)
}

/// Philox blocks a stochastic quantization of `n` elements uses: `ceil(n / 4)`.
pub fn philox_blocks(n: usize) -> u64 {
    (n as u64).div_ceil(4)
}

/// Input data: fp32, fp16 or bf16.
#[derive(Debug, Clone, Copy)]
pub enum Floats<'a> {
    /// fp32.
    F32(&'a [f32]),
    /// fp16.
    F16(&'a [f16]),
    /// bf16.
    BF16(&'a [bf16]),
}

/// Output data of a dequantization: fp32, fp16 or bf16.
#[derive(Debug)]
pub enum FloatsMut<'a> {
    /// fp32.
    F32(&'a mut [f32]),
    /// fp16.
    F16(&'a mut [f16]),
    /// bf16.
    BF16(&'a mut [bf16]),
}

impl Floats<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Floats::F32(s) => s.len(),
            Floats::F16(s) => s.len(),
            Floats::BF16(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Floats::F32(_) => DType::F32,
            Floats::F16(_) => DType::F16,
            Floats::BF16(_) => DType::BF16,
        }
    }

    /// Element `i` widened to f32 (exact).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Floats::F32(s) => s[i],
            Floats::F16(s) => s[i].to_f32(),
            Floats::BF16(s) => s[i].to_f32(),
        }
    }

    fn as_ptr(&self) -> *const c_void {
        match self {
            Floats::F32(s) => s.as_ptr().cast(),
            Floats::F16(s) => s.as_ptr().cast(),
            Floats::BF16(s) => s.as_ptr().cast(),
        }
    }
}

impl FloatsMut<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            FloatsMut::F32(s) => s.len(),
            FloatsMut::F16(s) => s.len(),
            FloatsMut::BF16(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            FloatsMut::F32(_) => DType::F32,
            FloatsMut::F16(_) => DType::F16,
            FloatsMut::BF16(_) => DType::BF16,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut c_void {
        match self {
            FloatsMut::F32(s) => s.as_mut_ptr().cast(),
            FloatsMut::F16(s) => s.as_mut_ptr().cast(),
            FloatsMut::BF16(s) => s.as_mut_ptr().cast(),
        }
    }
}

/// The dtype code of the quantizer kernels (`DSRS_QUANTIZER_F32` = 0, `F16` = 1,
/// `BF16` = 2); other types are unsupported (the error names the type).
pub fn dtype_code(d: DType) -> Result<i32> {
    match d {
        DType::F32 => Ok(0),
        DType::F16 => Ok(1),
        DType::BF16 => Ok(2),
        other => Err(Error::Unsupported(format!(
            "quantize: data must be float32, float16 or bfloat16, got {}",
            other.name()
        ))),
    }
}

/// Checks the lengths of the quantized arrays for `n` elements; the error names the array
/// and the expected length.
pub fn check_lengths(
    params: &QuantizeParams,
    n: usize,
    q: usize,
    scales: usize,
    offsets: Option<usize>,
) -> Result<()> {
    params.validate()?;
    let want_q = params.q_len(n);
    if q != want_q {
        return Err(Error::invalid(format!(
            "quantize: q has {q} bytes but {n} elements at {} bits need {want_q}",
            params.bits
        )));
    }
    let groups = params.num_groups(n);
    if scales != groups {
        return Err(Error::invalid(format!(
            "quantize: scales has {scales} elements but {n} elements in groups of {} make {groups} groups",
            params.group_size
        )));
    }
    match (params.symmetric, offsets) {
        (true, Some(_)) => Err(Error::invalid(
            "quantize: offsets are given but the quantization is symmetric (symmetric groups have no offset)",
        )),
        (false, None) => Err(Error::invalid(
            "quantize: offsets are required for asymmetric quantization (one per group)",
        )),
        (false, Some(o)) if o != groups => Err(Error::invalid(format!(
            "quantize: offsets has {o} elements but {n} elements in groups of {} make {groups} groups",
            params.group_size
        ))),
        _ => Ok(()),
    }
}

// ---- the CPU op ---------------------------------------------------------------------------------

/// `dsrs_quantizer_config` (kernels/include/dsrs_quantizer.h), 40 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelConfig {
    /// 8 or 4.
    pub bits: i32,
    /// 1 symmetric, 0 asymmetric.
    pub symmetric: i32,
    /// Elements per group, >= 1.
    pub group_size: u64,
    /// 0 nearest, 1 stochastic.
    pub rounding: i32,
    /// 0: the OpenMP default.
    pub num_threads: i32,
    /// Philox key.
    pub seed: u64,
    /// First Philox block.
    pub offset: u64,
}

impl KernelConfig {
    /// The kernel's view of `params` with `num_threads` threads.
    pub fn new(params: &QuantizeParams, num_threads: usize) -> Result<KernelConfig> {
        params.validate()?;
        let (rounding, seed, offset) = match params.rounding {
            Rounding::Nearest => (0, 0, 0),
            Rounding::Stochastic { seed, offset } => (1, seed, offset),
        };
        Ok(KernelConfig {
            bits: params.bits as i32,
            symmetric: i32::from(params.symmetric),
            group_size: params.group_size as u64,
            rounding,
            num_threads: i32::try_from(num_threads).map_err(|_| {
                Error::range(format!(
                    "quantize: num_threads = {num_threads} is too large"
                ))
            })?,
            seed,
            offset,
        })
    }
}

type QuantizeFn = unsafe extern "C" fn(
    *const KernelConfig,
    i32,
    *const c_void,
    u64,
    *mut u8,
    *mut f32,
    *mut f32,
) -> i32;

type DequantizeFn = unsafe extern "C" fn(
    *const KernelConfig,
    *const u8,
    *const f32,
    *const f32,
    u64,
    i32,
    *mut c_void,
) -> i32;

/// The `cpu_quantizer` entry points, resolved once per build options.
#[derive(Clone)]
struct Kernel {
    quantize: QuantizeFn,
    dequantize: DequantizeFn,
    simd: String,
}

/// The `cpu_quantizer` entry points, per build options.
static KERNELS: EntryPoints<Kernel> = EntryPoints::new("dsrs::quantizer");

/// The kernel for `exec`, or `None` to run the reference (see [`EntryPoints::get`]).
fn kernel_for(exec: &Exec) -> Result<Option<Kernel>> {
    KERNELS.get("cpu_quantizer", exec, |op| {
        let q = op.symbol("dsrs_quantizer_quantize", 0)?;
        let d = op.symbol("dsrs_quantizer_dequantize", 0)?;
        // SAFETY: the symbols are the op's functions with the signatures of dsrs_quantizer.h
        // (the op's ABI version and symbol list were checked by the loader).
        unsafe {
            Ok(Kernel {
                quantize: std::mem::transmute::<*mut c_void, QuantizeFn>(q),
                dequantize: std::mem::transmute::<*mut c_void, DequantizeFn>(d),
                simd: kernels::simd_level(op, "dsrs_quantizer_simd_level")?,
            })
        }
    })
}

fn status(what: &str, s: i32) -> Result<()> {
    match s {
        0 => Ok(()),
        1 => Err(Error::Internal(format!(
            "{what}: the cpu_quantizer kernel reported a NULL array"
        ))),
        2 => Err(Error::Internal(format!(
            "{what}: the cpu_quantizer kernel refused a configuration that passed validation"
        ))),
        other => Err(Error::Internal(format!(
            "{what}: the cpu_quantizer kernel returned unknown status {other}"
        ))),
    }
}

/// Quantizes `input` into `q` ([`packed_len`] bytes), `scales` ([`num_groups`] values) and,
/// asymmetric, `offsets` (one per group; `None` when symmetric), on the CPU: the
/// `cpu_quantizer` op, or the [`reference`](mod@reference) as `exec.backend` says. Returns
/// what ran. Nothing is written when an argument is refused.
pub fn quantize(
    params: &QuantizeParams,
    input: Floats<'_>,
    q: &mut [u8],
    scales: &mut [f32],
    mut offsets: Option<&mut [f32]>,
    exec: &Exec,
) -> Result<Ran> {
    let n = input.len();
    check_lengths(
        params,
        n,
        q.len(),
        scales.len(),
        offsets.as_ref().map(|o| o.len()),
    )?;
    let cfg = KernelConfig::new(params, exec.num_threads)?;
    let Some(k) = kernel_for(exec)? else {
        reference::quantize(params, input, q, scales, offsets)?;
        return Ok(Ran::Reference);
    };
    if n == 0 {
        return Ok(Ran::Kernel(k.simd));
    }
    let offsets_ptr = offsets
        .as_mut()
        .map_or(std::ptr::null_mut(), |o| o.as_mut_ptr());
    // SAFETY: lengths checked above (q, scales, offsets for n elements); the slices do not
    // overlap (Rust borrows); cfg outlives the call.
    let s = unsafe {
        (k.quantize)(
            &cfg,
            dtype_code(input.dtype())?,
            input.as_ptr(),
            n as u64,
            q.as_mut_ptr(),
            scales.as_mut_ptr(),
            offsets_ptr,
        )
    };
    status("quantize", s)?;
    Ok(Ran::Kernel(k.simd))
}

/// Dequantizes `q`, `scales` and (asymmetric) `offsets` into `output` (its length is the
/// element count), on the CPU as `exec.backend` says. Returns what ran. `params.rounding`
/// is ignored.
pub fn dequantize(
    params: &QuantizeParams,
    q: &[u8],
    scales: &[f32],
    offsets: Option<&[f32]>,
    mut output: FloatsMut<'_>,
    exec: &Exec,
) -> Result<Ran> {
    let n = output.len();
    check_lengths(params, n, q.len(), scales.len(), offsets.map(|o| o.len()))?;
    let cfg = KernelConfig::new(params, exec.num_threads)?;
    let Some(k) = kernel_for(exec)? else {
        reference::dequantize(params, q, scales, offsets, output)?;
        return Ok(Ran::Reference);
    };
    if n == 0 {
        return Ok(Ran::Kernel(k.simd));
    }
    let dtype = dtype_code(output.dtype())?;
    // SAFETY: lengths checked above; the output does not overlap the inputs (Rust borrows).
    let s = unsafe {
        (k.dequantize)(
            &cfg,
            q.as_ptr(),
            scales.as_ptr(),
            offsets.map_or(std::ptr::null(), |o| o.as_ptr()),
            n as u64,
            dtype,
            output.as_mut_ptr(),
        )
    };
    status("dequantize", s)?;
    Ok(Ran::Kernel(k.simd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn kernel_config_matches_the_documented_layout() {
        assert_eq!(size_of::<KernelConfig>(), 40);
        assert_eq!(offset_of!(KernelConfig, symmetric), 4);
        assert_eq!(offset_of!(KernelConfig, group_size), 8);
        assert_eq!(offset_of!(KernelConfig, rounding), 16);
        assert_eq!(offset_of!(KernelConfig, num_threads), 20);
        assert_eq!(offset_of!(KernelConfig, seed), 24);
        assert_eq!(offset_of!(KernelConfig, offset), 32);
    }

    #[test]
    fn layout_helpers() {
        assert_eq!(packed_len(0, 4), 0);
        assert_eq!(packed_len(7, 4), 4);
        assert_eq!(packed_len(8, 4), 4);
        assert_eq!(packed_len(7, 8), 7);
        assert_eq!(num_groups(0, 3), 0);
        assert_eq!(num_groups(7, 3), 3);
        assert_eq!(num_groups(6, 3), 2);
        assert_eq!(num_groups(5, 100), 1);
        assert_eq!(philox_blocks(9), 3);
    }

    #[test]
    fn validate_names_the_field() {
        let p = QuantizeParams {
            bits: 3,
            ..Default::default()
        };
        let e = p.validate().unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::OutOfRange);
        assert!(e.to_string().contains("bits = 3"), "{e}");
        let p = QuantizeParams {
            group_size: 0,
            ..Default::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("group_size = 0")
        );
        assert_eq!(
            QuantizeParams {
                bits: 4,
                symmetric: false,
                ..Default::default()
            }
            .qmax(),
            15
        );
    }

    #[test]
    fn lengths_name_the_array() {
        let p = QuantizeParams {
            bits: 4,
            symmetric: false,
            group_size: 3,
            rounding: Rounding::Nearest,
        };
        assert!(check_lengths(&p, 7, 4, 3, Some(3)).is_ok());
        let e = check_lengths(&p, 7, 7, 3, Some(3)).unwrap_err().to_string();
        assert!(e.contains("q has 7 bytes") && e.contains("need 4"), "{e}");
        let e = check_lengths(&p, 7, 4, 2, Some(3)).unwrap_err().to_string();
        assert!(e.contains("scales has 2"), "{e}");
        let e = check_lengths(&p, 7, 4, 3, None).unwrap_err().to_string();
        assert!(e.contains("offsets are required"), "{e}");
        let sym = QuantizeParams {
            symmetric: true,
            ..p
        };
        let e = check_lengths(&sym, 7, 4, 3, Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("symmetric"), "{e}");
    }
}
