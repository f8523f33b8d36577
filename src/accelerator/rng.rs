//! Philox4x32-10, the counter-based generator every accelerator uses, and the exact rules
//! that turn its output into numbers — so the CPU and a GPU produce the same bits for the
//! same seed and offset (`docs/accelerators.md`, "Random numbers", is the specification).
//!
//! * Key: `[seed as u32, (seed >> 32) as u32]`. Block `b` (a `u64`) is the counter
//!   `[b as u32, (b >> 32) as u32, 0, 0]` and yields four 32-bit words.
//! * A fill starts at block `offset`, reads words in order, and afterwards advances `offset`
//!   by the number of blocks it touched (unused words of the last block are discarded).
//!   Element `i` therefore depends only on `(seed, offset, i)`, which a GPU kernel can
//!   compute independently per thread.
//! * Uniform (float16/bfloat16/float32): one word `w` per element, `u = (w >> 8)·2⁻²⁴`;
//!   float64: two words `(w0, w1)`, `u = ((w0·2³² + w1) >> 11)·2⁻⁵³`; the value is
//!   `low + (high − low)·u` in f64 (no fused multiply-add), rounded to the element type.
//! * Normal: elements `2k, 2k+1` share a Box–Muller pair from words `2k, 2k+1` (float64:
//!   `4k..4k+3`): `u1 = ((w0 >> 8) + 1)·2⁻²⁴ ∈ (0, 1]`, `u2 = (w1 >> 8)·2⁻²⁴`,
//!   `r = sqrt(−2 ln u1)`, `z0 = r cos 2πu2`, `z1 = r sin 2πu2`, value `mean + std·z` in f64,
//!   rounded to the element type.
//! * Bits: uint32/int32 take one word per element; uint64/int64 take `w0 | w1 << 32`.

use half::f16;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The default seed, the same as PyTorch's default generator seed.
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 block with 10 rounds.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A generator's state: its seed and the next unused block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The seed (the Philox key).
    pub seed: u64,
    /// The next unused block.
    pub offset: u64,
}

/// Magic prefix of a serialized [`State`].
pub const STATE_MAGIC: &[u8; 8] = b"DSRSPHX1";
/// Length of a serialized [`State`].
pub const STATE_BYTES: usize = 24;

impl State {
    /// A state at offset 0.
    pub fn new(seed: u64) -> State {
        State { seed, offset: 0 }
    }

    /// `DSRSPHX1`, then the seed and the offset as little-endian `u64`s (24 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATE_BYTES);
        v.extend_from_slice(STATE_MAGIC);
        v.extend_from_slice(&self.seed.to_le_bytes());
        v.extend_from_slice(&self.offset.to_le_bytes());
        v
    }

    /// Parses [`State::to_bytes`]' format; errors say what is wrong with the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<State> {
        if bytes.len() != STATE_BYTES {
            return Err(Error::Format(format!(
                "an RNG state is {STATE_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        if &bytes[..8] != STATE_MAGIC {
            return Err(Error::Format(
                "the RNG state does not start with \"DSRSPHX1\" (not a deepspeed_rs Philox state)"
                    .into(),
            ));
        }
        let seed = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let offset = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        Ok(State { seed, offset })
    }

    /// Reserves the counter blocks a fill of `n` elements of `dtype` uses (after checking the
    /// distribution against the type): returns the first block and advances the offset past
    /// them. Device backends pass the first block to their kernel; on failure the caller
    /// restores the previous offset.
    pub fn take(&mut self, dist: Distribution, dtype: DType, n: usize) -> Result<u64> {
        dist.validate(dtype)?;
        let blocks = dist.words(dtype, n as u64).div_ceil(4);
        let start = self.offset;
        self.offset = start.checked_add(blocks).ok_or_else(|| {
            Error::InvalidState("the RNG offset would overflow; reseed the generator".into())
        })?;
        Ok(start)
    }

    fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }
}

/// What a random fill produces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Uniform in `[low, high)` (rounding to a narrow type may reach `high`).
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (≥ 0).
        std: f64,
    },
    /// The generator's raw bits (32- and 64-bit integer types).
    Bits,
}

impl Distribution {
    /// Checks the parameters and that `dtype` can hold this distribution.
    pub fn validate(&self, dtype: DType) -> Result<()> {
        match *self {
            Distribution::Uniform { low, high } => {
                if !low.is_finite() || !high.is_finite() {
                    return Err(Error::invalid(format!(
                        "uniform bounds must be finite, got low={low}, high={high}"
                    )));
                }
                if low > high {
                    return Err(Error::invalid(format!(
                        "uniform bounds need low <= high, got low={low}, high={high}"
                    )));
                }
                if !(high - low).is_finite() {
                    return Err(Error::invalid(format!(
                        "uniform bounds span high - low overflows float64 (low={low}, high={high})"
                    )));
                }
                let max = max_finite(dtype);
                if dtype.is_float() && (low.abs() > max || high.abs() > max) {
                    return Err(Error::range(format!(
                        "uniform bounds must lie within {dtype}'s range (±{max:e}), got low={low}, high={high}"
                    )));
                }
            }
            Distribution::Normal { mean, std } => {
                if !mean.is_finite() || !std.is_finite() || std < 0.0 {
                    return Err(Error::invalid(format!(
                        "normal parameters need a finite mean and a finite std >= 0, got mean={mean}, std={std}"
                    )));
                }
                let max = max_finite(dtype);
                if dtype.is_float() && (mean.abs() > max || std > max) {
                    return Err(Error::range(format!(
                        "normal parameters must lie within {dtype}'s range (±{max:e}), got mean={mean}, std={std}"
                    )));
                }
            }
            Distribution::Bits => {
                return match dtype {
                    DType::U32 | DType::I32 | DType::U64 | DType::I64 => Ok(()),
                    _ => Err(Error::Unsupported(format!(
                        "random bits cannot fill a tensor of {dtype}; use uint32, int32, uint64 or int64"
                    ))),
                };
            }
        }
        if !dtype.is_float() {
            return Err(Error::Unsupported(format!(
                "{} numbers cannot fill a tensor of {dtype}; use float16, bfloat16, float32 or float64",
                self.label()
            )));
        }
        Ok(())
    }

    fn label(&self) -> &'static str {
        match self {
            Distribution::Uniform { .. } => "uniform",
            Distribution::Normal { .. } => "normal",
            Distribution::Bits => "random bits",
        }
    }

    /// Words of generator output consumed by `n` elements of `dtype`.
    pub fn words(&self, dtype: DType, n: u64) -> u64 {
        let wide = matches!(dtype, DType::F64 | DType::U64 | DType::I64);
        match self {
            Distribution::Uniform { .. } | Distribution::Bits => n * if wide { 2 } else { 1 },
            Distribution::Normal { .. } => n.div_ceil(2) * if wide { 4 } else { 2 },
        }
    }
}

/// Sequential words from a key, starting at a block.
struct Words {
    key: [u32; 2],
    block: u64,
    buf: [u32; 4],
    used: usize,
}

impl Words {
    fn new(state: &State) -> Words {
        Words {
            key: state.key(),
            block: state.offset,
            buf: [0; 4],
            used: 4,
        }
    }

    #[inline]
    fn next(&mut self) -> u32 {
        if self.used == 4 {
            self.buf = philox4x32_10(
                [self.block as u32, (self.block >> 32) as u32, 0, 0],
                self.key,
            );
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        let w = self.buf[self.used];
        self.used += 1;
        w
    }
}

const TWO_M24: f64 = 1.0 / 16_777_216.0;
const TWO_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

#[inline]
fn unit24(w: u32) -> f64 {
    f64::from(w >> 8) * TWO_M24
}

#[inline]
fn unit53(w0: u32, w1: u32) -> f64 {
    (((u64::from(w0) << 32) | u64::from(w1)) >> 11) as f64 * TWO_M53
}

#[inline]
fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * u2;
    (r * theta.cos(), r * theta.sin())
}

/// Rounds to f32 "to odd": truncate toward zero, then set the last bit if anything was
/// lost. Rounding that result to nearest-even at a precision at least two bits narrower
/// (float16: 11 bits, bfloat16: 8, against float32's 24) equals rounding the f64 directly,
/// so narrow types are correctly rounded without double-rounding errors.
#[inline]
fn f32_round_to_odd(v: f64) -> f32 {
    let f = v as f32;
    if f.is_nan() || f64::from(f) == v {
        return f;
    }
    let mut bits = f.to_bits();
    if f64::from(f).abs() > v.abs() {
        bits -= 1; // one step toward zero (the magnitude bits are monotonic)
    }
    f32::from_bits(bits | 1)
}

/// float32 → bfloat16, round to nearest, ties to even.
#[inline]
fn bf16_bits_rne(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x0040) as u16; // keep it a (quiet) NaN
    }
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// The element type's largest finite magnitude, for the float types.
fn max_finite(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 65_504.0,
        DType::BF16 => f64::from(half::bf16::MAX),
        DType::F32 => f64::from(f32::MAX),
        _ => f64::MAX,
    }
}

/// Writes one f64 value as `dtype` at element `i` of `out`.
/// (`half`'s `from_f64` is not correctly rounded — it drops low bits first — so narrow
/// types go through [`f32_round_to_odd`].)
///
/// # Safety
/// `out` must be valid for `(i + 1) * dtype.size()` bytes.
#[inline]
unsafe fn store(out: *mut u8, dtype: DType, i: usize, v: f64) {
    // SAFETY: guaranteed by the caller; unaligned writes make any address acceptable.
    unsafe {
        match dtype {
            DType::F32 => (out as *mut f32).add(i).write_unaligned(v as f32),
            DType::F64 => (out as *mut f64).add(i).write_unaligned(v),
            DType::F16 => (out as *mut u16)
                .add(i)
                .write_unaligned(f16::from_f32(f32_round_to_odd(v)).to_bits()),
            DType::BF16 => (out as *mut u16)
                .add(i)
                .write_unaligned(bf16_bits_rne(f32_round_to_odd(v))),
            _ => unreachable!("validated float type"),
        }
    }
}

/// Fills `n` elements of `dtype` at `out` from `state` and advances it.
///
/// # Safety
/// `out` must be valid for writes of `n * dtype.size()` bytes.
pub unsafe fn fill(
    state: &mut State,
    dist: Distribution,
    dtype: DType,
    out: *mut u8,
    n: usize,
) -> Result<()> {
    dist.validate(dtype)?;
    let blocks = dist.words(dtype, n as u64).div_ceil(4);
    let next_offset = state.offset.checked_add(blocks).ok_or_else(|| {
        Error::InvalidState("the RNG offset would overflow; reseed the generator".into())
    })?;
    let mut words = Words::new(state);
    let wide = dtype == DType::F64;
    // SAFETY (all stores below): i < n and the caller guarantees n elements.
    match dist {
        Distribution::Uniform { low, high } => {
            let span = high - low;
            for i in 0..n {
                let u = if wide {
                    let (a, b) = (words.next(), words.next());
                    unit53(a, b)
                } else {
                    unit24(words.next())
                };
                let prod = span * u;
                unsafe { store(out, dtype, i, low + prod) };
            }
        }
        Distribution::Normal { mean, std } => {
            let mut i = 0;
            while i < n {
                let (u1, u2) = if wide {
                    let (a, b, c, d) = (words.next(), words.next(), words.next(), words.next());
                    (
                        (((u64::from(a) << 32 | u64::from(b)) >> 11) as f64 + 1.0) * TWO_M53,
                        unit53(c, d),
                    )
                } else {
                    let (a, b) = (words.next(), words.next());
                    ((f64::from(a >> 8) + 1.0) * TWO_M24, unit24(b))
                };
                let (z0, z1) = box_muller(u1, u2);
                let p0 = std * z0;
                unsafe { store(out, dtype, i, mean + p0) };
                if i + 1 < n {
                    let p1 = std * z1;
                    unsafe { store(out, dtype, i + 1, mean + p1) };
                }
                i += 2;
            }
        }
        Distribution::Bits => {
            for i in 0..n {
                unsafe {
                    match dtype {
                        DType::U32 | DType::I32 => {
                            (out as *mut u32).add(i).write_unaligned(words.next())
                        }
                        _ => {
                            let lo = u64::from(words.next());
                            let hi = u64::from(words.next());
                            (out as *mut u64).add(i).write_unaligned(lo | hi << 32)
                        }
                    }
                }
            }
        }
    }
    state.offset = next_offset;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123 (`tests/kat_vectors`, "philox4x32 10" lines).
    #[test]
    fn philox_matches_random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0; 4],
                [0; 2],
                [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
            ),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want);
        }
    }

    fn fill_vec<T: Copy + Default>(
        state: &mut State,
        dist: Distribution,
        dtype: DType,
        n: usize,
    ) -> Vec<T> {
        let mut v = vec![T::default(); n];
        unsafe { fill(state, dist, dtype, v.as_mut_ptr() as *mut u8, n) }.unwrap();
        v
    }

    #[test]
    fn bits_are_the_block_words_in_order_and_offsets_advance_by_blocks() {
        let mut s = State::new(0x1234_5678_9abc_def0);
        let v: Vec<u32> = fill_vec(&mut s, Distribution::Bits, DType::U32, 6);
        let b0 = philox4x32_10([0, 0, 0, 0], [0x9abc_def0, 0x1234_5678]);
        let b1 = philox4x32_10([1, 0, 0, 0], [0x9abc_def0, 0x1234_5678]);
        assert_eq!(&v[..4], &b0);
        assert_eq!(&v[4..], &b1[..2]);
        assert_eq!(s.offset, 2, "the half-used block is not reused");
        let w: Vec<u32> = fill_vec(&mut s, Distribution::Bits, DType::U32, 1);
        assert_eq!(
            w[0],
            philox4x32_10([2, 0, 0, 0], [0x9abc_def0, 0x1234_5678])[0]
        );
    }

    #[test]
    fn uniform_follows_the_documented_formula() {
        let mut s = State::new(42);
        let v: Vec<f32> = fill_vec(
            &mut s,
            Distribution::Uniform {
                low: -2.0,
                high: 3.0,
            },
            DType::F32,
            9,
        );
        let mut raw = State::new(42);
        let bits: Vec<u32> = fill_vec(&mut raw, Distribution::Bits, DType::U32, 9);
        for (x, w) in v.iter().zip(&bits) {
            let want = (-2.0 + 5.0 * (f64::from(w >> 8) / 16_777_216.0)) as f32;
            assert_eq!(x.to_bits(), want.to_bits());
        }
        assert_eq!(s, raw);
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let n = 200_000;
        let mut s = State::new(7);
        let u: Vec<f64> = fill_vec(
            &mut s,
            Distribution::Uniform {
                low: 1.0,
                high: 5.0,
            },
            DType::F64,
            n,
        );
        let mean = u.iter().sum::<f64>() / n as f64;
        let var = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(u.iter().all(|&x| (1.0..5.0).contains(&x)));
        // mean 3, variance 16/12; tolerances are > 6 standard errors.
        assert!((mean - 3.0).abs() < 0.02, "{mean}");
        assert!((var - 16.0 / 12.0).abs() < 0.02, "{var}");

        let z: Vec<f32> = fill_vec(
            &mut s,
            Distribution::Normal {
                mean: -1.0,
                std: 2.0,
            },
            DType::F32,
            n + 1,
        );
        let m = z.iter().map(|&x| f64::from(x)).sum::<f64>() / z.len() as f64;
        let v = z.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / z.len() as f64;
        assert!((m + 1.0).abs() < 0.03, "{m}");
        assert!((v - 4.0).abs() < 0.08, "{v}");
        let within_1sd = z
            .iter()
            .filter(|&&x| (f64::from(x) + 1.0).abs() < 2.0)
            .count() as f64
            / z.len() as f64;
        assert!((within_1sd - 0.6827).abs() < 0.01, "{within_1sd}");
    }

    /// Correct rounding by brute force: of the representable codes near `v` (decoded to f64
    /// exactly), the nearest wins; ties go to the even code.
    fn reference_rne(v: f64, guess: u16, decode: impl Fn(u16) -> f64) -> u16 {
        let mut best = guess;
        let mut best_err = f64::INFINITY;
        for d in -3i32..=3 {
            let c = (i32::from(guess) + d) as u16;
            let x = decode(c);
            if x.is_nan() || (x != 0.0 && x.signum() != v.signum()) {
                continue;
            }
            let err = (x - v).abs();
            if err < best_err || (err == best_err && c & 1 == 0) {
                best = c;
                best_err = err;
            }
        }
        best
    }

    #[test]
    fn narrow_types_are_correctly_rounded_from_f64() {
        let f16_of = |c: u16| f16::from_bits(c).to_f64();
        let bf16_of = |c: u16| half::bf16::from_bits(c).to_f64();
        let mut s = State::new(12_345);
        let mut cases: Vec<f64> = fill_vec(
            &mut s,
            Distribution::Uniform {
                low: -3.0,
                high: 5.5,
            },
            DType::F64,
            200_000,
        );
        // Just above, below and at halfway points: where truncating conversions go wrong.
        for k in 0..2000 {
            let h = 1.0 + f64::from(2 * k + 1) * 2f64.powi(-11); // float16 in [1, 2)
            cases.extend([h, h + 2f64.powi(-40), h - 2f64.powi(-40), -h]);
            let hb = 1.0 + f64::from(2 * (k % 128) + 1) * 2f64.powi(-8); // bfloat16
            cases.extend([hb, hb + 2f64.powi(-45), hb - 2f64.powi(-45)]);
        }
        for &v in &cases {
            let got = f16::from_f32(f32_round_to_odd(v)).to_bits();
            assert_eq!(
                got,
                reference_rne(v, f16::from_f64(v).to_bits(), f16_of),
                "float16 of {v:e}"
            );
            let got = bf16_bits_rne(f32_round_to_odd(v));
            let guess = half::bf16::from_f64(v).to_bits();
            assert_eq!(got, reference_rne(v, guess, bf16_of), "bfloat16 of {v:e}");
        }
    }

    #[test]
    fn the_case_found_by_the_python_tests_rounds_correctly() {
        // seed 12345, uniform(-3, 5.5), float16, element 4219: -0x1.0ba001p+0.
        let v = -(1.0 + f64::from(0x0ba001u32) * 2f64.powi(-24));
        assert_eq!(f16::from_f32(f32_round_to_odd(v)).to_f64(), -1.0458984375);
    }

    #[test]
    fn bounds_beyond_float64_or_the_element_type_are_refused() {
        let mut s = State::new(1);
        let mut buf = [0u8; 16];
        let p = buf.as_mut_ptr();
        let wide = Distribution::Uniform {
            low: -1.7e308,
            high: 1.7e308,
        };
        let e = unsafe { fill(&mut s, wide, DType::F64, p, 2) }.unwrap_err();
        assert!(e.to_string().contains("overflows float64"), "{e}");
        let big = Distribution::Uniform {
            low: -1e6,
            high: 1e6,
        };
        let e = unsafe { fill(&mut s, big, DType::F16, p, 4) }.unwrap_err();
        assert!(e.to_string().contains("within float16's range"), "{e}");
        assert!(unsafe { fill(&mut s, big, DType::F32, p, 4) }.is_ok());
        let far = Distribution::Normal {
            mean: 1e39,
            std: 1.0,
        };
        assert!(unsafe { fill(&mut s, far, DType::F32, p, 4) }.is_err());
    }

    #[test]
    fn state_round_trips_and_bad_bytes_are_named() {
        let s = State {
            seed: 99,
            offset: 12345,
        };
        assert_eq!(State::from_bytes(&s.to_bytes()).unwrap(), s);
        let e = State::from_bytes(&[0; 5]).unwrap_err();
        assert!(e.to_string().contains("24 bytes, got 5"));
        let mut bad = s.to_bytes();
        bad[0] = b'X';
        assert!(
            State::from_bytes(&bad)
                .unwrap_err()
                .to_string()
                .contains("DSRSPHX1")
        );
    }

    #[test]
    fn invalid_parameters_and_types_are_refused() {
        let mut s = State::new(1);
        let mut buf = [0u8; 16];
        let e = unsafe {
            fill(
                &mut s,
                Distribution::Uniform {
                    low: 2.0,
                    high: 1.0,
                },
                DType::F32,
                buf.as_mut_ptr(),
                4,
            )
        };
        assert!(e.unwrap_err().to_string().contains("low <= high"));
        let e = unsafe {
            fill(
                &mut s,
                Distribution::Normal {
                    mean: 0.0,
                    std: f64::NAN,
                },
                DType::F32,
                buf.as_mut_ptr(),
                4,
            )
        };
        assert!(e.is_err());
        let e = unsafe {
            fill(
                &mut s,
                Distribution::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                DType::I8,
                buf.as_mut_ptr(),
                4,
            )
        };
        assert!(e.unwrap_err().to_string().contains("int8"));
        assert_eq!(s.offset, 0, "failed fills do not advance the generator");
    }
}
