//! The pure-Rust reference of the quantizer: plain scalar code that evaluates exactly the
//! operations `docs/quantizer.md` specifies, in the same order, so the `cpu_quantizer` and
//! `cuda_quantizer` kernels match it bit for bit. It runs when the CPU op cannot be built
//! (`Backend::Auto`) or is asked for (`Backend::Reference`), and is what the tests compare
//! the kernels with.
//!
//! Per group: `A = max (bits(x) & 0x7fffffff)`; a group holding an Inf or NaN
//! (`A >= 0x7f800000`) gets scale (and offset) NaN and q = 0. Otherwise, symmetric:
//! `scale = f32(f64(A) / qmax)`; asymmetric: `mn = min x + 0`, `mx = max x + 0`,
//! `scale = f32((f64(mx) - f64(mn)) / qmax)`, `offset = mn`. A group whose scale is not
//! `> 0` gets q = 0. Per element: `v = x / scale` or `(x - mn) / scale` (f32); nearest:
//! `rint(v)` clamped in f32; stochastic: `floor(f64(v) + u)` clamped in f64. Dequantize:
//! `y = f32(q) * scale [+ offset]`, NaN made canonical, rounded to the output type.

use half::{bf16, f16};

use super::{Floats, FloatsMut, QuantizeParams, Rounding, check_lengths};
use crate::accelerator::rng::philox4x32_10;
use crate::error::Result;

/// The bits of the canonical NaN every implementation stores (scales, offsets, dequantized
/// values). (Not a `pub const`: cbindgen would copy it into the C header.)
const NAN_BITS: u32 = 0x7fc0_0000;

/// The canonical NaN every implementation stores (bits `0x7fc00000`).
pub fn canonical_nan() -> f32 {
    f32::from_bits(NAN_BITS)
}

const TWO_M24: f64 = 1.0 / 16_777_216.0;

/// The Philox word of element `i`: word `i % 4` of block `offset + i / 4` (wrapping) under
/// key `seed` (counter `[block lo, block hi, 0, 0]`, key `[seed lo, seed hi]`).
pub fn philox_word(seed: u64, offset: u64, i: u64) -> u32 {
    let block = offset.wrapping_add(i / 4);
    let w = philox4x32_10(
        [block as u32, (block >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    w[(i % 4) as usize]
}

/// The uniform value of stochastic rounding for a word: `(w >> 8) * 2^-24`, in [0, 1).
pub fn unit(word: u32) -> f64 {
    f64::from(word >> 8) * TWO_M24
}

/// One group's quantization parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    /// The scale (NaN for a group holding an Inf or NaN).
    pub scale: f32,
    /// The offset (the group's minimum; 0 when symmetric; NaN as the scale).
    pub offset: f32,
}

/// The scale and offset of a group of values (the specification's formulas).
pub fn group_params(params: &QuantizeParams, values: impl IntoIterator<Item = f32>) -> Group {
    let mut amax = 0u32;
    let mut mn = f32::INFINITY;
    let mut mx = f32::NEG_INFINITY;
    for x in values {
        let a = x.to_bits() & 0x7fff_ffff;
        amax = amax.max(a);
        mn = if x < mn { x } else { mn };
        mx = if x > mx { x } else { mx };
    }
    if amax >= 0x7f80_0000 {
        let nan = f32::from_bits(NAN_BITS);
        return Group {
            scale: nan,
            offset: nan,
        };
    }
    let qmax = f64::from(params.qmax());
    if params.symmetric {
        Group {
            scale: (f64::from(f32::from_bits(amax)) / qmax) as f32,
            offset: 0.0,
        }
    } else {
        let mn = mn + 0.0; // -0 -> +0
        let mx = mx + 0.0;
        Group {
            scale: ((f64::from(mx) - f64::from(mn)) / qmax) as f32,
            offset: mn,
        }
    }
}

/// The quantized value of `x` in a group with `group`'s parameters; `word` is the element's
/// Philox word (ignored when rounding to nearest).
pub fn quantize_value(params: &QuantizeParams, x: f32, group: Group, word: u32) -> i32 {
    // Not `> 0`: zero (a constant group) or NaN (a group holding an Inf or NaN).
    if group.scale.is_nan() || group.scale <= 0.0 {
        return 0;
    }
    let t = if params.symmetric {
        x
    } else {
        x - group.offset
    };
    let v = t / group.scale;
    let (lo, hi) = (params.qmin() as f32, params.qmax() as f32);
    match params.rounding {
        Rounding::Nearest => {
            let mut r = v.round_ties_even();
            r = if r > lo { r } else { lo };
            r = if r < hi { r } else { hi };
            r as i32
        }
        Rounding::Stochastic { .. } => {
            let s = f64::from(v) + unit(word);
            let mut r = s.floor();
            r = if r > f64::from(lo) { r } else { f64::from(lo) };
            r = if r < f64::from(hi) { r } else { f64::from(hi) };
            r as i32
        }
    }
}

/// The dequantized value (f32) of `q` in a group with `group`'s parameters; a NaN result
/// is the canonical NaN.
pub fn dequantize_value(params: &QuantizeParams, q: i32, group: Group) -> f32 {
    let mut y = q as f32 * group.scale;
    if !params.symmetric {
        y += group.offset;
    }
    if y.is_nan() {
        f32::from_bits(NAN_BITS)
    } else {
        y
    }
}

/// float -> float16, round to nearest even; NaN -> `sign | 0x7e00 | top payload bits`.
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = (x >> 16) & 0x8000;
    let ax = x & 0x7fff_ffff;
    if ax > 0x7f80_0000 {
        return (sign | 0x7e00 | ((ax & 0x007f_ffff) >> 13)) as u16;
    }
    if ax >= 0x477f_f000 {
        return (sign | 0x7c00) as u16;
    }
    if ax >= 0x3880_0000 {
        let r = ax - 0x3800_0000;
        return (sign | ((r + 0x0fff + ((r >> 13) & 1)) >> 13)) as u16;
    }
    if ax <= 0x3300_0000 {
        return sign as u16;
    }
    let e = ax >> 23;
    let mant = (ax & 0x007f_ffff) | 0x0080_0000;
    let shift = 126 - e;
    let mut q = mant >> shift;
    let rest = mant & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    if rest > half || (rest == half && q & 1 == 1) {
        q += 1;
    }
    (sign | q) as u16
}

/// float -> bfloat16, round to nearest even; NaN stays a quiet NaN (`(bits >> 16) | 0x40`).
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    let b = f.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The quantized value stored at element `i` of `q` (sign-extended when symmetric).
pub fn q_at(params: &QuantizeParams, q: &[u8], i: usize) -> i32 {
    if params.bits == 8 {
        if params.symmetric {
            i32::from(q[i] as i8)
        } else {
            i32::from(q[i])
        }
    } else {
        let nib = u32::from(q[i / 2] >> ((i % 2) * 4)) & 0xf;
        if params.symmetric {
            (nib ^ 8) as i32 - 8
        } else {
            nib as i32
        }
    }
}

/// Quantizes `input` (see the module docs); argument checks as
/// [`quantize`](super::quantize). Nothing is written when an argument is refused.
pub fn quantize(
    params: &QuantizeParams,
    input: Floats<'_>,
    q: &mut [u8],
    scales: &mut [f32],
    mut offsets: Option<&mut [f32]>,
) -> Result<()> {
    let n = input.len();
    check_lengths(
        params,
        n,
        q.len(),
        scales.len(),
        offsets.as_ref().map(|o| o.len()),
    )?;
    let (seed, offset) = match params.rounding {
        Rounding::Nearest => (0, 0),
        Rounding::Stochastic { seed, offset } => (seed, offset),
    };
    let stochastic = params.is_stochastic();
    let gs = params.group_size;
    if params.bits == 4 {
        q.fill(0);
    }
    let mut cached_block = None;
    let mut words = [0u32; 4];
    for (g, scale) in scales.iter_mut().enumerate() {
        let s = g * gs;
        let e = n.min(s.saturating_add(gs));
        let grp = group_params(params, (s..e).map(|i| input.get(i)));
        *scale = grp.scale;
        if let Some(o) = offsets.as_deref_mut() {
            o[g] = grp.offset;
        }
        for i in s..e {
            let word = if stochastic {
                let block = offset.wrapping_add(i as u64 / 4);
                if cached_block != Some(block) {
                    words = philox4x32_10(
                        [block as u32, (block >> 32) as u32, 0, 0],
                        [seed as u32, (seed >> 32) as u32],
                    );
                    cached_block = Some(block);
                }
                words[i % 4]
            } else {
                0
            };
            let v = quantize_value(params, input.get(i), grp, word) as u32;
            if params.bits == 8 {
                q[i] = v as u8;
            } else {
                q[i / 2] |= ((v & 0xf) << ((i % 2) * 4)) as u8;
            }
        }
    }
    Ok(())
}

/// Dequantizes into `output` (see the module docs); argument checks as
/// [`dequantize`](super::dequantize).
pub fn dequantize(
    params: &QuantizeParams,
    q: &[u8],
    scales: &[f32],
    offsets: Option<&[f32]>,
    output: FloatsMut<'_>,
) -> Result<()> {
    let n = output.len();
    check_lengths(params, n, q.len(), scales.len(), offsets.map(|o| o.len()))?;
    let value = |i: usize| {
        let g = i / params.group_size;
        let grp = Group {
            scale: scales[g],
            offset: offsets.map_or(0.0, |o| o[g]),
        };
        dequantize_value(params, q_at(params, q, i), grp)
    };
    match output {
        FloatsMut::F32(out) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = value(i);
            }
        }
        FloatsMut::F16(out) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16::from_bits(f32_to_f16_bits(value(i)));
            }
        }
        FloatsMut::BF16(out) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = bf16::from_bits(f32_to_bf16_bits(value(i)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bits: u32, symmetric: bool, group_size: usize, rounding: Rounding) -> QuantizeParams {
        QuantizeParams {
            bits,
            symmetric,
            group_size,
            rounding,
        }
    }

    #[test]
    fn conversions_match_half() {
        let mut x = 0x1234_5678u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let f = f32::from_bits(x);
            if !f.is_nan() {
                assert_eq!(f32_to_f16_bits(f), f16::from_f32(f).to_bits(), "{f:e}");
                assert_eq!(f32_to_bf16_bits(f), bf16::from_f32(f).to_bits(), "{f:e}");
            }
        }
        assert_eq!(f32_to_f16_bits(f32::from_bits(NAN_BITS)), 0x7e00);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(NAN_BITS)), 0x7fc0);
    }

    /// The example of docs/quantizer.md, "Format".
    #[test]
    fn the_documented_int4_example() {
        let params = p(4, true, 3, Rounding::Nearest);
        let x = [0.35f32, -1.4, 0.7, 2.0, -0.5, 1.0, 3.0];
        let mut q = [0u8; 4];
        let mut scales = [0f32; 3];
        quantize(&params, Floats::F32(&x), &mut q, &mut scales, None).unwrap();
        assert_eq!(scales, [0.2, 0.285_714_3, 0.428_571_43]);
        let vals: Vec<i32> = (0..7).map(|i| q_at(&params, &q, i)).collect();
        assert_eq!(vals, [2, -7, 4, 7, -2, 3, 7]);
        assert_eq!(q, [0x92, 0x74, 0x3E, 0x07]);
    }

    #[test]
    fn constant_and_non_finite_groups() {
        let params = p(8, false, 4, Rounding::Nearest);
        let x = [2.5f32, 2.5, 2.5, 2.5, 1.0, f32::NAN, 0.0, 3.0];
        let mut q = [9u8; 8];
        let (mut scales, mut offsets) = ([0f32; 2], [0f32; 2]);
        quantize(
            &params,
            Floats::F32(&x),
            &mut q,
            &mut scales,
            Some(&mut offsets),
        )
        .unwrap();
        assert_eq!((scales[0], offsets[0]), (0.0, 2.5));
        assert_eq!(scales[1].to_bits(), NAN_BITS);
        assert_eq!(offsets[1].to_bits(), NAN_BITS);
        assert_eq!(q, [0; 8]);
        let mut y = [0f32; 8];
        dequantize(&params, &q, &scales, Some(&offsets), FloatsMut::F32(&mut y)).unwrap();
        assert_eq!(&y[..4], &[2.5; 4], "a constant group dequantizes exactly");
        assert!(y[4..].iter().all(|v| v.to_bits() == NAN_BITS));
    }

    #[test]
    fn stochastic_words_follow_the_rng_layout() {
        use crate::accelerator::rng::{Distribution, State, fill};
        use crate::dtype::DType;
        let (seed, offset) = (0xdead_beef_1234, 17);
        let mut st = State { seed, offset };
        let mut u = [0f32; 11];
        unsafe {
            fill(
                &mut st,
                Distribution::Uniform {
                    low: 0.0,
                    high: 1.0,
                },
                DType::F32,
                u.as_mut_ptr().cast(),
                11,
            )
        }
        .unwrap();
        for (i, &ui) in u.iter().enumerate() {
            assert_eq!(unit(philox_word(seed, offset, i as u64)) as f32, ui);
        }
        assert_eq!(st.offset, offset + super::super::philox_blocks(11));
    }
}
