//! The quantizer end to end (`docs/quantizer.md`): the `cpu_quantizer` kernel against the
//! pure-Rust reference bit for bit over lengths, group sizes (1 to more than 2^20), int8 /
//! int4, symmetric / asymmetric, nearest / stochastic and every data type; the error
//! against a float64 computation within the documented bounds; stochastic rounding
//! unbiased and reproducible; the scalar (portable) and AVX2 builds equal to the native
//! one; thread counts; non-finite groups; the C ABI with hand-made `DLTensor`s and its
//! errors; the CUDA op compiled by NVRTC (skipped without NVRTC unless
//! `DSRS_REQUIRE_NVRTC=1`) and, on a GPU (skipped without one unless `DSRS_REQUIRE_GPU=1`),
//! CPU and CUDA results equal bit for bit.
//!
//! Timing: `cargo test --release --test quantizer -- --ignored --nocapture throughput`.

use std::ffi::c_void;
use std::ptr;

use deepspeed_rs::dlpack::{
    DLDataType, DLDevice, DLTensor, kDLBfloat, kDLCPU, kDLCUDA, kDLFloat, kDLInt, kDLUInt,
};
use deepspeed_rs::ffi::quantizer::{
    DSRS_QUANTIZE_BACKEND_KERNEL, DSRS_QUANTIZE_BACKEND_REFERENCE, DSRS_ROUNDING_NEAREST,
    DSRS_ROUNDING_STOCHASTIC, dsrs_dequantize, dsrs_quantize, dsrs_quantize_config,
    dsrs_quantize_sizes,
};
use deepspeed_rs::ffi::status::dsrs_status;
use deepspeed_rs::ops::quantizer::{
    self, Backend, Exec, Floats, FloatsMut, KernelConfig, QuantizeParams, Ran, Rounding, reference,
};
use deepspeed_rs::ops::{self, BuildOptions};
use half::{bf16, f16};

// ---- data ---------------------------------------------------------------------------------------

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random values of varied magnitudes (1e-2 .. 1e2, both signs), with some exact zeros,
/// repeats, a constant run and a zero run, so constant and all-zero groups occur for small
/// group sizes — but the data are never all zero.
fn random_data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v: Vec<f32> = (0..n)
        .map(|_| {
            let u = r.unit();
            if u < 0.03 {
                0.0
            } else {
                let mag = 10f64.powf(r.unit() * 4.0 - 2.0);
                let s = if r.unit() < 0.5 { -1.0 } else { 1.0 };
                (s * mag) as f32
            }
        })
        .collect();
    if n > 200 {
        v[64..128].fill(1.5);
        v[128..192].fill(0.0);
        v[192] = -0.0;
    }
    if n > 1 && v.iter().all(|&x| x == 0.0) {
        v[0] = 0.75;
    }
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dt {
    F32,
    F16,
    BF16,
}

const DTYPES: [Dt; 3] = [Dt::F32, Dt::F16, Dt::BF16];

/// Data in one of the three types; `exact` is each element widened to f32.
struct Data {
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
    dt: Dt,
}

impl Data {
    fn new(x: &[f32], dt: Dt) -> Data {
        let mut d = Data {
            f32: Vec::new(),
            f16: Vec::new(),
            bf16: Vec::new(),
            dt,
        };
        match dt {
            Dt::F32 => d.f32 = x.to_vec(),
            Dt::F16 => d.f16 = x.iter().map(|&v| f16::from_f32(v)).collect(),
            Dt::BF16 => d.bf16 = x.iter().map(|&v| bf16::from_f32(v)).collect(),
        }
        d
    }
    fn floats(&self) -> Floats<'_> {
        match self.dt {
            Dt::F32 => Floats::F32(&self.f32),
            Dt::F16 => Floats::F16(&self.f16),
            Dt::BF16 => Floats::BF16(&self.bf16),
        }
    }
    fn exact(&self) -> Vec<f32> {
        let f = self.floats();
        (0..f.len()).map(|i| f.get(i)).collect()
    }
}

/// Quantized arrays.
#[derive(Debug, Clone, PartialEq)]
struct Quantized {
    q: Vec<u8>,
    scales: Vec<u32>,
    offsets: Option<Vec<u32>>,
}

fn quantize_with(p: &QuantizeParams, data: &Data, exec: &Exec) -> (Quantized, Ran) {
    let n = data.floats().len();
    let mut q = vec![0xAAu8; p.q_len(n)];
    let mut scales = vec![-1.0f32; p.num_groups(n)];
    let mut offsets = (!p.symmetric).then(|| vec![-1.0f32; p.num_groups(n)]);
    let ran = quantizer::quantize(
        p,
        data.floats(),
        &mut q,
        &mut scales,
        offsets.as_deref_mut(),
        exec,
    )
    .unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect();
    (
        Quantized {
            q,
            scales: bits(scales),
            offsets: offsets.map(bits),
        },
        ran,
    )
}

/// Dequantized output as raw bits (u32 for f32, u16 widened for f16/bf16).
fn dequantize_with(p: &QuantizeParams, qz: &Quantized, n: usize, dt: Dt, exec: &Exec) -> Vec<u32> {
    let scales: Vec<f32> = qz.scales.iter().map(|&b| f32::from_bits(b)).collect();
    let offsets: Option<Vec<f32>> = qz
        .offsets
        .as_ref()
        .map(|o| o.iter().map(|&b| f32::from_bits(b)).collect());
    match dt {
        Dt::F32 => {
            let mut y = vec![0f32; n];
            quantizer::dequantize(
                p,
                &qz.q,
                &scales,
                offsets.as_deref(),
                FloatsMut::F32(&mut y),
                exec,
            )
            .unwrap();
            y.into_iter().map(f32::to_bits).collect()
        }
        Dt::F16 => {
            let mut y = vec![f16::ZERO; n];
            quantizer::dequantize(
                p,
                &qz.q,
                &scales,
                offsets.as_deref(),
                FloatsMut::F16(&mut y),
                exec,
            )
            .unwrap();
            y.into_iter().map(|v| u32::from(v.to_bits())).collect()
        }
        Dt::BF16 => {
            let mut y = vec![bf16::ZERO; n];
            quantizer::dequantize(
                p,
                &qz.q,
                &scales,
                offsets.as_deref(),
                FloatsMut::BF16(&mut y),
                exec,
            )
            .unwrap();
            y.into_iter().map(|v| u32::from(v.to_bits())).collect()
        }
    }
}

fn kernel(build: BuildOptions, num_threads: usize) -> Exec {
    Exec {
        backend: Backend::Kernel,
        num_threads,
        build,
    }
}

fn reference_exec() -> Exec {
    Exec {
        backend: Backend::Reference,
        ..Exec::default()
    }
}

/// Every (bits, symmetric, rounding) combination.
fn modes(group_size: usize) -> Vec<QuantizeParams> {
    let mut v = Vec::new();
    for bits in [8, 4] {
        for symmetric in [true, false] {
            for rounding in [
                Rounding::Nearest,
                Rounding::Stochastic {
                    seed: 0x5eed_0000_0000_0001 ^ group_size as u64,
                    offset: 12_345,
                },
            ] {
                v.push(QuantizeParams {
                    bits,
                    symmetric,
                    group_size,
                    rounding,
                });
            }
        }
    }
    v
}

fn first_diff<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at {i}: {:?} vs {:?}", a[i], b[i]),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

fn assert_same(what: &str, a: &Quantized, b: &Quantized) {
    assert!(a.q == b.q, "{what}: q differs, {}", first_diff(&a.q, &b.q));
    assert!(
        a.scales == b.scales,
        "{what}: scales differ, {}",
        first_diff(&a.scales, &b.scales)
    );
    assert_eq!(a.offsets.is_some(), b.offsets.is_some());
    if let (Some(x), Some(y)) = (&a.offsets, &b.offsets) {
        assert!(x == y, "{what}: offsets differ, {}", first_diff(x, y));
    }
}

// ---- bounds against float64 -----------------------------------------------------------------------

/// The documented bounds (docs/quantizer.md, "Error bounds"), checked in float64 against
/// the exact inputs: nearest |x - y| <= scale/2 + 2^-20 A, stochastic |x - y| < scale +
/// 2^-20 A (A = the group's max |x|, y the float32 dequantized value); and q against the
/// float64 quotient (nearest: the rounded quotient away from ties; stochastic: floor or
/// floor + 1).
fn check_bounds(p: &QuantizeParams, x: &[f32], qz: &Quantized, y_bits: &[u32]) {
    let gs = p.group_size;
    let slack = 2f64.powi(-20);
    for (g, &sb) in qz.scales.iter().enumerate() {
        let scale = f64::from(f32::from_bits(sb));
        let off = qz
            .offsets
            .as_ref()
            .map_or(0.0, |o| f64::from(f32::from_bits(o[g])));
        let (s, e) = (g * gs, (g * gs + gs).min(x.len()));
        let a = x[s..e].iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        for i in s..e {
            let xi = f64::from(x[i]);
            let y = f64::from(f32::from_bits(y_bits[i]));
            let err = (xi - y).abs();
            let qi = f64::from(reference::q_at(p, &qz.q, i));
            if scale == 0.0 {
                assert_eq!(y, xi, "{p:?}: element {i} of a constant group");
                continue;
            }
            let v = (xi - off) / scale;
            let (lo, hi) = (f64::from(p.qmin()), f64::from(p.qmax()));
            match p.rounding {
                Rounding::Nearest => {
                    assert!(
                        err <= scale / 2.0 + slack * a,
                        "{p:?}: element {i}: x = {xi:e}, y = {y:e}, error {err:e} > scale/2 = {:e}",
                        scale / 2.0
                    );
                    let frac = v - v.floor();
                    if (frac - 0.5).abs() > 1e-3 {
                        let want = v.round().clamp(lo, hi);
                        assert_eq!(qi, want, "{p:?}: element {i}: x = {xi:e}, v = {v}");
                    }
                }
                Rounding::Stochastic { .. } => {
                    assert!(
                        err < scale + slack * a,
                        "{p:?}: element {i}: x = {xi:e}, y = {y:e}, error {err:e} >= scale = {scale:e}"
                    );
                    let f = v.floor();
                    let near_int = (v - v.round()).abs() < 1e-3;
                    let ok = if near_int {
                        (qi - v.round()).abs() <= 1.0
                    } else {
                        qi == f.clamp(lo, hi) || qi == (f + 1.0).clamp(lo, hi)
                    };
                    assert!(ok, "{p:?}: element {i}: v = {v}, q = {qi}");
                }
            }
        }
    }
}

// ---- kernel == reference --------------------------------------------------------------------------

const LENGTHS: [usize; 4] = [1, 7, 1023, 1_000_003];
const GROUP_SIZES: [usize; 6] = [1, 7, 64, 4096, 1_000_003, (1 << 20) + 3];

/// One length: every group size, mode and dtype; kernel == reference for quantize and for
/// dequantize into the input's dtype and float32; float32 results within the bounds.
fn kernel_matches_reference_for(n: usize) {
    let x = random_data(n, n as u64);
    let exec = kernel(BuildOptions::default(), 0);
    let refx = reference_exec();
    let mut combos = Vec::new();
    for gs in GROUP_SIZES {
        for p in modes(gs) {
            for dt in DTYPES {
                combos.push((p, dt));
            }
        }
    }
    let worker = |part: &[(QuantizeParams, Dt)]| {
        for (p, dt) in part {
            let data = Data::new(&x, *dt);
            let what = format!("n = {n}, {p:?}, {dt:?}");
            let (k, ran) = quantize_with(p, &data, &exec);
            assert!(matches!(ran, Ran::Kernel(_)), "{ran:?}");
            let (r, ran) = quantize_with(p, &data, &refx);
            assert_eq!(ran, Ran::Reference);
            assert_same(&what, &k, &r);
            for out in [Dt::F32, *dt] {
                let yk = dequantize_with(p, &k, n, out, &exec);
                let yr = dequantize_with(p, &k, n, out, &refx);
                assert!(
                    yk == yr,
                    "{what}: dequantize to {out:?} differs, {}",
                    first_diff(&yk, &yr)
                );
                if out == Dt::F32 {
                    check_bounds(p, &data.exact(), &k, &yk);
                }
            }
        }
    };
    let half = combos.len() / 2;
    std::thread::scope(|s| {
        s.spawn(|| worker(&combos[..half]));
        worker(&combos[half..]);
    });
}

#[test]
fn kernel_matches_reference_short() {
    for n in &LENGTHS[..3] {
        kernel_matches_reference_for(*n);
    }
}

#[test]
fn kernel_matches_reference_1m() {
    kernel_matches_reference_for(LENGTHS[3]);
}

/// Results do not depend on the thread count (tiles, the two-phase path for large groups,
/// and the per-group parallel reduction).
#[test]
fn thread_counts_give_the_same_bits() {
    let n = 700_001;
    let x = random_data(n, 99);
    for gs in [5, 4096, 300_001] {
        for p in modes(gs) {
            let data = Data::new(&x, Dt::BF16);
            let (one, _) = quantize_with(&p, &data, &kernel(BuildOptions::default(), 1));
            for t in [2, 3] {
                let (many, _) = quantize_with(&p, &data, &kernel(BuildOptions::default(), t));
                assert_same(&format!("{p:?} threads {t}"), &one, &many);
                let a = dequantize_with(&p, &one, n, Dt::F16, &kernel(BuildOptions::default(), 1));
                let b = dequantize_with(&p, &one, n, Dt::F16, &kernel(BuildOptions::default(), t));
                assert!(a == b);
            }
        }
    }
}

/// The portable build (scalar code) equals the native SIMD build.
#[test]
fn scalar_build_equals_native_build() {
    // JIT-built (not an op compiled in by DSRS_BUILD_OPS=1, which would take precedence).
    let portable = kernel(
        BuildOptions {
            portable: true,
            prebuilt: false,
            ..BuildOptions::default()
        },
        0,
    );
    let native = kernel(BuildOptions::default(), 0);
    let n = 100_003;
    let x = random_data(n, 7);
    let mut levels = (String::new(), String::new());
    for gs in [1, 7, 64, 4096, 70_001] {
        for p in modes(gs) {
            for dt in DTYPES {
                let data = Data::new(&x, dt);
                let (a, ra) = quantize_with(&p, &data, &portable);
                let (b, rb) = quantize_with(&p, &data, &native);
                assert_same(&format!("portable vs native {p:?} {dt:?}"), &a, &b);
                let ya = dequantize_with(&p, &a, n, dt, &portable);
                let yb = dequantize_with(&p, &a, n, dt, &native);
                assert!(ya == yb, "{p:?} {dt:?}: {}", first_diff(&ya, &yb));
                if let (Ran::Kernel(a), Ran::Kernel(b)) = (ra, rb) {
                    levels = (a, b);
                }
            }
        }
    }
    assert_eq!(levels.0, "scalar");
    eprintln!("native SIMD level: {}", levels.1);
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

/// The AVX2 code path (forced through DSRS_QUANTIZER_FORCE_AVX2 in an op defined at run
/// time from the same sources) equals the reference, on machines that have AVX2.
#[test]
fn avx2_path_equals_reference() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c")) {
            eprintln!("skipped: no AVX2 + F16C on this CPU");
            return;
        }
        let spec = &ops::builders::cpu_quantizer::SPEC;
        let name = format!("test_quantizer_avx2_{}", std::process::id());
        let def = serde_json::json!({
            "name": name, "kind": "cpu",
            "sources": [{"name": "quantizer.cpp", "text": spec.sources[0].text}],
            "headers": [{"name": "dsrs_quantizer.h", "text": spec.headers[0].text}],
            "defines": {"DSRS_QUANTIZER_FORCE_AVX2": "1"},
            "symbols": ["dsrs_quantizer_quantize", "dsrs_quantizer_dequantize", "dsrs_quantizer_simd_level"],
        });
        ops::define_json(&def.to_string()).unwrap();
        let op = ops::load(&name, &BuildOptions::default()).unwrap();
        let fq: QuantizeFn =
            unsafe { std::mem::transmute(op.symbol("dsrs_quantizer_quantize", 0).unwrap()) };
        let fd: DequantizeFn =
            unsafe { std::mem::transmute(op.symbol("dsrs_quantizer_dequantize", 0).unwrap()) };
        let lvl: unsafe extern "C" fn() -> *const std::ffi::c_char =
            unsafe { std::mem::transmute(op.symbol("dsrs_quantizer_simd_level", 0).unwrap()) };
        let lvl = unsafe { std::ffi::CStr::from_ptr(lvl()) }.to_str().unwrap();
        assert_eq!(lvl, "avx2");
        let n = 50_007;
        let x = random_data(n, 3);
        for gs in [1, 7, 64, 4096, 30_001] {
            for p in modes(gs) {
                for (code, dt) in [(0, Dt::F32), (1, Dt::F16), (2, Dt::BF16)] {
                    let data = Data::new(&x, dt);
                    let (r, _) = quantize_with(&p, &data, &reference_exec());
                    let cfg = KernelConfig::new(&p, 1).unwrap();
                    let mut q = vec![0u8; p.q_len(n)];
                    let mut scales = vec![0f32; p.num_groups(n)];
                    let mut offsets = vec![0f32; p.num_groups(n)];
                    let input: *const c_void = match data.floats() {
                        Floats::F32(s) => s.as_ptr().cast(),
                        Floats::F16(s) => s.as_ptr().cast(),
                        Floats::BF16(s) => s.as_ptr().cast(),
                    };
                    let s = unsafe {
                        fq(
                            &cfg,
                            code,
                            input,
                            n as u64,
                            q.as_mut_ptr(),
                            scales.as_mut_ptr(),
                            offsets.as_mut_ptr(),
                        )
                    };
                    assert_eq!(s, 0);
                    let k = Quantized {
                        q,
                        scales: scales.iter().map(|v| v.to_bits()).collect(),
                        offsets: (!p.symmetric)
                            .then(|| offsets.iter().map(|v| v.to_bits()).collect()),
                    };
                    assert_same(&format!("avx2 {p:?} {dt:?}"), &k, &r);
                    let want = dequantize_with(&p, &r, n, dt, &reference_exec());
                    let mut out = vec![0u32; n]; // room for any dtype
                    let s = unsafe {
                        fd(
                            &cfg,
                            k.q.as_ptr(),
                            scales.as_ptr(),
                            offsets.as_ptr(),
                            n as u64,
                            code,
                            out.as_mut_ptr().cast(),
                        )
                    };
                    assert_eq!(s, 0);
                    let got: Vec<u32> = match dt {
                        Dt::F32 => out,
                        _ => {
                            let h: &[u16] =
                                unsafe { std::slice::from_raw_parts(out.as_ptr().cast(), n) };
                            h.iter().map(|&v| u32::from(v)).collect()
                        }
                    };
                    assert!(
                        got == want,
                        "avx2 dequantize {p:?} {dt:?}: {}",
                        first_diff(&got, &want)
                    );
                }
            }
        }
    }
}

/// Any stored byte (int8 -128, int4 nibble 8, any scale, NaN and Inf scales) dequantizes
/// identically in the kernel and the reference.
#[test]
fn arbitrary_codes_dequantize_identically() {
    let n = 10_001;
    let mut r = Rng(42);
    for p in modes(33) {
        let q: Vec<u8> = (0..p.q_len(n)).map(|_| r.next_u64() as u8).collect();
        let g = p.num_groups(n);
        let mut scales: Vec<u32> = (0..g)
            .map(|_| ((r.unit() * 4.0 - 2.0) as f32).to_bits())
            .collect();
        scales[0] = f32::NAN.to_bits();
        scales[1] = f32::INFINITY.to_bits();
        scales[2] = 0;
        let offsets = (!p.symmetric).then(|| {
            (0..g)
                .map(|_| ((r.unit() * 8.0 - 4.0) as f32).to_bits())
                .collect()
        });
        let qz = Quantized { q, scales, offsets };
        for dt in DTYPES {
            let a = dequantize_with(&p, &qz, n, dt, &kernel(BuildOptions::default(), 0));
            let b = dequantize_with(&p, &qz, n, dt, &reference_exec());
            assert!(a == b, "{p:?} {dt:?}: {}", first_diff(&a, &b));
        }
    }
}

/// A group holding an Inf or NaN gets scale (and offset) NaN and q = 0, in every
/// implementation, and dequantizes to NaN; its neighbours are unaffected.
#[test]
fn non_finite_groups_are_flagged_identically() {
    let n = 1000;
    let mut x = random_data(n, 5);
    x[10] = f32::NAN;
    x[300] = f32::INFINITY;
    x[555] = f32::NEG_INFINITY;
    x[999] = f32::from_bits(0xffc0_1234); // a NaN with a payload
    for p in modes(100) {
        for dt in DTYPES {
            let data = Data::new(&x, dt);
            let (k, _) = quantize_with(&p, &data, &kernel(BuildOptions::default(), 0));
            let (r, _) = quantize_with(&p, &data, &reference_exec());
            assert_same(&format!("{p:?} {dt:?}"), &k, &r);
            for g in [0, 3, 5, 9] {
                assert_eq!(k.scales[g], 0x7fc0_0000, "group {g}");
            }
            assert_ne!(k.scales[1], 0x7fc0_0000);
            let y = dequantize_with(&p, &k, n, Dt::F32, &kernel(BuildOptions::default(), 0));
            assert!(y[..100].iter().all(|&b| b == 0x7fc0_0000));
            assert!(y[100..200].iter().all(|&b| !f32::from_bits(b).is_nan()));
        }
    }
}

// ---- stochastic rounding ---------------------------------------------------------------------------

/// E[q] = v: for several fractional parts, the mean of q over 2^20 elements with the same
/// v is within 0.005 of v (the standard error is at most 0.5 / 2^10 ~ 0.0005, so the
/// tolerance is > 9 standard errors); every q is floor(v) or floor(v) + 1.
#[test]
fn stochastic_rounding_is_unbiased() {
    let n = 1 << 20;
    for (bits, symmetric) in [(8, true), (8, false), (4, true), (4, false)] {
        let p = QuantizeParams {
            bits,
            symmetric,
            group_size: n,
            rounding: Rounding::Stochastic {
                seed: 2024,
                offset: 7,
            },
        };
        // scale = 1/64 exactly: symmetric, max |x| = qmax / 64; asymmetric, min 0 and
        // max qmax / 64.
        let qmax = p.qmax() as f32;
        for target in [0.1f32, 0.5, 0.9, 0.25, -2.7] {
            let v = if symmetric {
                target + (qmax / 2.0).floor() * target.signum()
            } else {
                target.abs() + 3.0
            };
            let mut x = vec![v / 64.0; n];
            x[0] = qmax / 64.0;
            if !symmetric {
                x[1] = 0.0;
            }
            let data = Data::new(&x, Dt::F32);
            let (k, _) = quantize_with(&p, &data, &kernel(BuildOptions::default(), 0));
            assert_eq!(f32::from_bits(k.scales[0]), 1.0 / 64.0);
            let vals: Vec<f64> = (2..n)
                .map(|i| f64::from(reference::q_at(&p, &k.q, i)))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let vf = f64::from(v);
            assert!((mean - vf).abs() < 0.005, "{p:?}: v = {v}, mean {mean}");
            assert!(
                vals.iter()
                    .all(|&q| q == vf.floor() || q == vf.floor() + 1.0)
            );
        }
    }
}

/// The same seed and offset give the same bits; another seed or offset other bits; and
/// offset + 1 is the same stream shifted by four elements (one Philox block).
#[test]
fn stochastic_rounding_is_reproducible_and_keyed_as_documented() {
    let n = 4096;
    let x = vec![0.3f32; n];
    let p = |seed, offset| QuantizeParams {
        bits: 8,
        symmetric: true,
        group_size: n,
        rounding: Rounding::Stochastic { seed, offset },
    };
    let mut xs = x.clone();
    xs[0] = 1.0; // scale 1/127: v = 38.1
    let data = Data::new(&xs, Dt::F32);
    let run = |s, o| quantize_with(&p(s, o), &data, &kernel(BuildOptions::default(), 0)).0;
    let a = run(1, 100);
    assert_eq!(a, run(1, 100));
    assert_ne!(a.q, run(2, 100).q);
    let shifted = run(1, 101);
    assert_eq!(
        &shifted.q[4..n - 4],
        &a.q[8..n],
        "offset + 1 skips one block of 4 words"
    );
    // The words are the accelerators' float32 uniform fill from (seed, offset).
    for i in [5u64, 6, 7, 1000] {
        let u = reference::unit(reference::philox_word(1, 100, i));
        let v = f64::from(0.3f32 / f32::from_bits(a.scales[0]));
        assert_eq!(f64::from(a.q[i as usize] as i8), (v + u).floor());
    }
}

// ---- C ABI ------------------------------------------------------------------------------------------

struct T {
    t: DLTensor,
    _shape: Box<[i64; 1]>,
}

fn dl(data: *mut c_void, n: usize, code: u8, bits: u8, device_type: i32) -> T {
    let mut shape = Box::new([n as i64]);
    let t = DLTensor {
        data,
        device: DLDevice {
            device_type,
            device_id: 0,
        },
        ndim: 1,
        dtype: DLDataType {
            code,
            bits,
            lanes: 1,
        },
        shape: shape.as_mut_ptr(),
        strides: ptr::null_mut(),
        byte_offset: 0,
    };
    T { t, _shape: shape }
}

fn cfg(bits: i32, symmetric: bool, group_size: u64, stochastic: bool) -> dsrs_quantize_config {
    dsrs_quantize_config {
        bits,
        symmetric: i32::from(symmetric),
        group_size,
        rounding: if stochastic {
            DSRS_ROUNDING_STOCHASTIC
        } else {
            DSRS_ROUNDING_NEAREST
        },
        seed: 77,
        offset: 3,
        num_threads: 0,
        backend: DSRS_QUANTIZE_BACKEND_KERNEL,
    }
}

fn last_message() -> String {
    deepspeed_rs::ffi::last_error()
        .map(|e| e.1)
        .unwrap_or_default()
}

#[test]
fn c_abi_matches_the_rust_api_and_sizes() {
    let n = 1001usize;
    let x = random_data(n, 11);
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    for (bits, symmetric, stochastic) in [
        (8, true, false),
        (4, false, true),
        (4, true, false),
        (8, false, true),
    ] {
        let c = cfg(bits, symmetric, 10, stochastic);
        let (mut qb, mut g) = (0u64, 0u64);
        assert_eq!(
            unsafe { dsrs_quantize_sizes(n as u64, &c, &mut qb, &mut g) },
            dsrs_status::DSRS_STATUS_OK
        );
        assert_eq!((qb, g), (if bits == 4 { 501 } else { 1001 }, 101));
        let mut q = vec![0u8; qb as usize];
        let mut scales = vec![0f32; g as usize];
        let mut offsets = vec![0f32; g as usize];
        let input = dl(xb.as_ptr() as *mut c_void, n, kDLBfloat, 16, kDLCPU);
        let mut tq = dl(q.as_mut_ptr().cast(), q.len(), kDLUInt, 8, kDLCPU);
        let mut ts = dl(
            scales.as_mut_ptr().cast(),
            scales.len(),
            kDLFloat,
            32,
            kDLCPU,
        );
        let mut to = dl(
            offsets.as_mut_ptr().cast(),
            offsets.len(),
            kDLFloat,
            32,
            kDLCPU,
        );
        let to_ptr: *mut DLTensor = if symmetric {
            ptr::null_mut()
        } else {
            &mut to.t
        };
        let s =
            unsafe { dsrs_quantize(&c, &input.t, &mut tq.t, &mut ts.t, to_ptr, ptr::null_mut()) };
        assert_eq!(s, dsrs_status::DSRS_STATUS_OK, "{}", last_message());
        let p = QuantizeParams {
            bits: bits as u32,
            symmetric,
            group_size: 10,
            rounding: if stochastic {
                Rounding::Stochastic {
                    seed: 77,
                    offset: 3,
                }
            } else {
                Rounding::Nearest
            },
        };
        let (r, _) = quantize_with(&p, &Data::new(&x, Dt::BF16), &reference_exec());
        let got = Quantized {
            q: q.clone(),
            scales: scales.iter().map(|v| v.to_bits()).collect(),
            offsets: (!symmetric).then(|| offsets.iter().map(|v| v.to_bits()).collect()),
        };
        assert_same("C ABI", &got, &r);
        // Dequantize through the C ABI (into fp16, with the reference backend) too.
        let mut y = vec![f16::ZERO; n];
        let mut ty = dl(y.as_mut_ptr().cast(), n, kDLFloat, 16, kDLCPU);
        let mut c2 = c;
        c2.backend = DSRS_QUANTIZE_BACKEND_REFERENCE;
        let to_c: *const DLTensor = if symmetric { ptr::null() } else { &to.t };
        let s = unsafe { dsrs_dequantize(&c2, &tq.t, &ts.t, to_c, &mut ty.t, ptr::null_mut()) };
        assert_eq!(s, dsrs_status::DSRS_STATUS_OK, "{}", last_message());
        let want = dequantize_with(&p, &r, n, Dt::F16, &kernel(BuildOptions::default(), 0));
        let got: Vec<u32> = y.iter().map(|v| u32::from(v.to_bits())).collect();
        assert!(got == want);
    }
}

#[test]
fn c_abi_refuses_bad_arguments_and_writes_nothing() {
    let n = 100usize;
    let x = random_data(n, 12);
    let mut q = vec![0x55u8; n];
    let mut scales = vec![9f32; 10];
    let mut offsets = vec![9f32; 10];
    let input = dl(x.as_ptr() as *mut c_void, n, kDLFloat, 32, kDLCPU);
    let mut tq = dl(q.as_mut_ptr().cast(), n, kDLInt, 8, kDLCPU);
    let mut ts = dl(scales.as_mut_ptr().cast(), 10, kDLFloat, 32, kDLCPU);
    let mut to = dl(offsets.as_mut_ptr().cast(), 10, kDLFloat, 32, kDLCPU);
    let good = cfg(8, true, 10, false);
    let call =
        |c: *const dsrs_quantize_config,
         inp: *const DLTensor,
         q: *mut DLTensor,
         s: *mut DLTensor,
         o: *mut DLTensor| unsafe { dsrs_quantize(c, inp, q, s, o, ptr::null_mut()) };
    let expect = |status: dsrs_status, got: dsrs_status, words: &[&str]| {
        assert_eq!(got, status, "{}", last_message());
        let m = last_message();
        assert!(m.starts_with("dsrs_quantize"), "{m}");
        for w in words {
            assert!(m.contains(w), "{m:?} should mention {w:?}");
        }
    };

    // bits = 3
    let mut c = good;
    c.bits = 3;
    expect(
        dsrs_status::DSRS_STATUS_OUT_OF_RANGE,
        call(&c, &input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["config->bits", "got 3"],
    );
    let mut c = good;
    c.rounding = 7;
    expect(
        dsrs_status::DSRS_STATUS_OUT_OF_RANGE,
        call(&c, &input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["config->rounding", "got 7"],
    );
    let mut c = good;
    c.group_size = 0;
    expect(
        dsrs_status::DSRS_STATUS_OUT_OF_RANGE,
        call(&c, &input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["config->group_size"],
    );
    // NULLs
    expect(
        dsrs_status::DSRS_STATUS_NULL_ARGUMENT,
        call(ptr::null(), &input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["'config'"],
    );
    expect(
        dsrs_status::DSRS_STATUS_NULL_ARGUMENT,
        call(&good, ptr::null(), &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["'input'"],
    );
    expect(
        dsrs_status::DSRS_STATUS_NULL_ARGUMENT,
        call(&good, &input.t, ptr::null_mut(), &mut ts.t, ptr::null_mut()),
        &["'q'"],
    );
    // wrong q length: int4 needs 50 bytes
    let c4 = cfg(4, true, 10, false);
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&c4, &input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["'q'", "100 elements", "50 are expected"],
    );
    // wrong scales length
    let mut short = dl(scales.as_mut_ptr().cast(), 9, kDLFloat, 32, kDLCPU);
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&good, &input.t, &mut tq.t, &mut short.t, ptr::null_mut()),
        &["'scales'", "10 are expected"],
    );
    // wrong dtypes
    let mut qf = dl(q.as_mut_ptr().cast(), n / 4, kDLFloat, 32, kDLCPU);
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&good, &input.t, &mut qf.t, &mut ts.t, ptr::null_mut()),
        &["'q'", "int8 or uint8", "float32"],
    );
    let int_input = dl(x.as_ptr() as *mut c_void, n, kDLInt, 32, kDLCPU);
    expect(
        dsrs_status::DSRS_STATUS_UNSUPPORTED,
        call(&good, &int_input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["'input'", "int32"],
    );
    // offsets: forbidden when symmetric, required when asymmetric
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&good, &input.t, &mut tq.t, &mut ts.t, &mut to.t),
        &["'offsets'", "symmetric"],
    );
    let asym = cfg(8, false, 10, false);
    expect(
        dsrs_status::DSRS_STATUS_NULL_ARGUMENT,
        call(&asym, &input.t, &mut tq.t, &mut ts.t, ptr::null_mut()),
        &["'offsets'"],
    );
    // mixed devices
    let mut qcuda = dl(q.as_mut_ptr().cast(), n, kDLInt, 8, kDLCUDA);
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&good, &input.t, &mut qcuda.t, &mut ts.t, ptr::null_mut()),
        &["'q'", "CUDA device 0", "host memory"],
    );
    // overlapping outputs
    let mut s_over_q = dl(q.as_mut_ptr().cast(), 10, kDLFloat, 32, kDLCPU);
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&good, &input.t, &mut tq.t, &mut s_over_q.t, ptr::null_mut()),
        &["overlap"],
    );
    // non-contiguous
    let mut strided = dl(q.as_mut_ptr().cast(), n, kDLInt, 8, kDLCPU);
    let mut st = [2i64];
    strided.t.strides = st.as_mut_ptr();
    expect(
        dsrs_status::DSRS_STATUS_INVALID_ARGUMENT,
        call(&good, &input.t, &mut strided.t, &mut ts.t, ptr::null_mut()),
        &["'q'", "contiguous"],
    );
    // nothing was written by any refused call
    assert!(q.iter().all(|&b| b == 0x55));
    assert!(scales.iter().all(|&v| v == 9.0) && offsets.iter().all(|&v| v == 9.0));
    // CUDA tensors without a CUDA stream
    if deepspeed_rs::accelerator::cuda::probe().device_count == 0 {
        let cin = dl(x.as_ptr() as *mut c_void, n, kDLFloat, 32, kDLCUDA);
        let mut cq = dl(q.as_mut_ptr().cast(), n, kDLInt, 8, kDLCUDA);
        let mut cs = dl(scales.as_mut_ptr().cast(), 10, kDLFloat, 32, kDLCUDA);
        let s = call(&good, &cin.t, &mut cq.t, &mut cs.t, ptr::null_mut());
        assert_ne!(s, dsrs_status::DSRS_STATUS_OK);
        let m = last_message();
        assert!(m.contains("CUDA"), "{m}");
    }
    // sizes: NULL out-parameters and bad config
    let mut a = 0u64;
    assert_eq!(
        unsafe { dsrs_quantize_sizes(5, &good, ptr::null_mut(), &mut a) },
        dsrs_status::DSRS_STATUS_NULL_ARGUMENT
    );
    let mut c = good;
    c.bits = 3;
    let mut b = 0u64;
    assert_eq!(
        unsafe { dsrs_quantize_sizes(5, &c, &mut a, &mut b) },
        dsrs_status::DSRS_STATUS_OUT_OF_RANGE
    );
    // dequantize: the output's length decides n, and q must match it
    let mut y = vec![0f32; n + 1];
    let mut ty = dl(y.as_mut_ptr().cast(), n + 1, kDLFloat, 32, kDLCPU);
    let s =
        unsafe { dsrs_dequantize(&good, &tq.t, &ts.t, ptr::null(), &mut ty.t, ptr::null_mut()) };
    assert_eq!(s, dsrs_status::DSRS_STATUS_INVALID_ARGUMENT);
    assert!(
        last_message().starts_with("dsrs_dequantize")
            && last_message().contains("101 are expected"),
        "{}",
        last_message()
    );
    assert!(y.iter().all(|&v| v == 0.0));
}

// ---- CUDA ------------------------------------------------------------------------------------------

fn nvrtc_or_skip(test: &str) -> bool {
    match ops::nvrtc::info() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("DSRS_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
                panic!("{test}: DSRS_REQUIRE_NVRTC=1 but {e}");
            }
            eprintln!("{test}: SKIPPED: {e} (scripts/ensure-nvrtc.sh, then DSRS_NVRTC_LIB)");
            false
        }
    }
}

/// The CUDA op compiles with NVRTC for sm_90 (CUBIN) and as PTX, and the PTX declares
/// every kernel the op lists.
#[test]
fn cuda_op_compiles_for_sm_90() {
    if !nvrtc_or_skip("cuda_op_compiles_for_sm_90") {
        return;
    }
    let opts = BuildOptions {
        cuda_arch: Some("sm_90".into()),
        ..BuildOptions::default()
    };
    let op = ops::load("cuda_quantizer", &opts).unwrap();
    assert_eq!(op.target(), "sm_90");
    assert!(op.cuda_image().unwrap().starts_with(b"\x7fELF"));
    let spec = &ops::builders::cuda_quantizer::SPEC;
    let work = std::env::temp_dir().join(format!("dsrs-qz-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let (ptx, _) = ops::nvrtc::compile(spec, "compute_90", &work, false).unwrap();
    let ptx = String::from_utf8_lossy(&ptx);
    for s in spec.symbols.iter() {
        assert!(
            ptx.contains(&format!(".entry {s}(")),
            "{s} missing from the PTX"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// On a GPU: the CUDA kernels give the CPU kernel's bits, for every mode and dtype and
/// group sizes from 1 to more than 2^20 (including odd int4 sizes, which need the fixup
/// kernel), through the Rust API and the C ABI.
#[test]
fn cuda_matches_cpu_on_a_gpu() {
    use deepspeed_rs::accelerator::cuda::CudaStream;
    use deepspeed_rs::accelerator::{self, Buffer, MemoryKind};
    use deepspeed_rs::ops::quantizer::cuda::{self as qcuda, DeviceArrays};
    let probe = accelerator::cuda::probe();
    if let Some(reason) = &probe.reason {
        if std::env::var("DSRS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("DSRS_REQUIRE_GPU=1 but CUDA is unavailable: {reason}");
        }
        eprintln!("skipped: CUDA unavailable: {reason}");
        return;
    }
    let acc = accelerator::create("cuda", None).unwrap();
    let stream = acc.default_stream().unwrap();
    let cs = stream.as_any().downcast_ref::<CudaStream>().unwrap();
    let build = BuildOptions::default();
    for n in [1usize, 7, 1023, 1_000_003] {
        let x = random_data(n, 1000 + n as u64);
        for gs in GROUP_SIZES {
            for p in modes(gs) {
                for dt in DTYPES {
                    let data = Data::new(&x, dt);
                    let (cpu, _) = quantize_with(&p, &data, &kernel(BuildOptions::default(), 0));
                    let bytes: &[u8] = match data.floats() {
                        Floats::F32(s) => unsafe {
                            std::slice::from_raw_parts(s.as_ptr().cast(), n * 4)
                        },
                        Floats::F16(s) => unsafe {
                            std::slice::from_raw_parts(s.as_ptr().cast(), n * 2)
                        },
                        Floats::BF16(s) => unsafe {
                            std::slice::from_raw_parts(s.as_ptr().cast(), n * 2)
                        },
                    };
                    let g = p.num_groups(n);
                    let din = Buffer::new(&acc, bytes.len(), 0, MemoryKind::Device).unwrap();
                    din.write(0, bytes).unwrap();
                    let dq = Buffer::new(&acc, p.q_len(n), 0, MemoryKind::Device).unwrap();
                    let dsc = Buffer::new(&acc, g * 4, 0, MemoryKind::Device).unwrap();
                    let doff = Buffer::new(&acc, g * 4, 0, MemoryKind::Device).unwrap();
                    let arrays = DeviceArrays {
                        data: din.ptr() as u64,
                        dtype: data.floats().dtype(),
                        n,
                        q: dq.ptr() as u64,
                        scales: dsc.ptr() as u64,
                        offsets: (!p.symmetric).then(|| doff.ptr() as u64),
                    };
                    unsafe { qcuda::quantize(&p, &arrays, cs, &build) }.unwrap();
                    stream.synchronize().unwrap();
                    let mut q = vec![0u8; p.q_len(n)];
                    dq.read(0, &mut q).unwrap();
                    let mut sc = vec![0u8; g * 4];
                    dsc.read(0, &mut sc).unwrap();
                    let mut of = vec![0u8; g * 4];
                    doff.read(0, &mut of).unwrap();
                    let words = |b: &[u8]| {
                        b.chunks(4)
                            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                            .collect::<Vec<_>>()
                    };
                    let gpu = Quantized {
                        q,
                        scales: words(&sc),
                        offsets: (!p.symmetric).then(|| words(&of)),
                    };
                    let what = format!("CUDA n = {n} {p:?} {dt:?}");
                    assert_same(&what, &gpu, &cpu);
                    // Dequantize on the GPU into the data buffer, compare with the CPU.
                    unsafe { qcuda::dequantize(&p, &arrays, cs, &build) }.unwrap();
                    stream.synchronize().unwrap();
                    let mut out = vec![0u8; bytes.len()];
                    din.read(0, &mut out).unwrap();
                    let got: Vec<u32> = match dt {
                        Dt::F32 => words(&out),
                        _ => out
                            .chunks(2)
                            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                            .collect(),
                    };
                    let want =
                        dequantize_with(&p, &cpu, n, dt, &kernel(BuildOptions::default(), 0));
                    assert!(
                        got == want,
                        "{what}: dequantize {}",
                        first_diff(&got, &want)
                    );
                }
            }
        }
    }
}

/// On a GPU, through the C ABI: device buffers viewed as `kDLCUDA` tensors, quantized and
/// dequantized on a stream handle, equal to the CPU; a stream of the CPU accelerator is
/// refused for CUDA tensors.
#[test]
fn cuda_c_abi_on_a_gpu() {
    use deepspeed_rs::ffi::accelerator::{dsrs_accelerator_free, dsrs_accelerator_new};
    use deepspeed_rs::ffi::buffer::{
        DSRS_MEMORY_DEVICE, dsrs_buffer_free, dsrs_buffer_new, dsrs_buffer_read, dsrs_buffer_view,
        dsrs_buffer_write,
    };
    use deepspeed_rs::ffi::stream::{dsrs_stream_free, dsrs_stream_new, dsrs_stream_synchronize};
    use deepspeed_rs::ffi::{dsrs_accelerator, dsrs_buffer, dsrs_stream};
    const OK: dsrs_status = dsrs_status::DSRS_STATUS_OK;
    let probe = deepspeed_rs::accelerator::cuda::probe();
    if let Some(reason) = &probe.reason {
        if std::env::var("DSRS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("DSRS_REQUIRE_GPU=1 but CUDA is unavailable: {reason}");
        }
        eprintln!("skipped: CUDA unavailable: {reason}");
        return;
    }
    unsafe {
        let mut acc: *mut dsrs_accelerator = ptr::null_mut();
        assert_eq!(
            dsrs_accelerator_new(c"cuda".as_ptr(), ptr::null(), &mut acc),
            OK
        );
        let mut stream: *mut dsrs_stream = ptr::null_mut();
        assert_eq!(dsrs_stream_new(acc, &mut stream), OK);
        let alloc = |bytes: usize| {
            let mut b: *mut dsrs_buffer = ptr::null_mut();
            assert_eq!(
                dsrs_buffer_new(acc, bytes.max(1), 0, DSRS_MEMORY_DEVICE, &mut b),
                OK
            );
            b
        };
        let view = |b: *mut dsrs_buffer, n: usize, code: u8, bits: u8, shape: &mut [i64; 1]| {
            shape[0] = n as i64;
            let mut t = std::mem::zeroed::<DLTensor>();
            let dtype = DLDataType {
                code,
                bits,
                lanes: 1,
            };
            assert_eq!(dsrs_buffer_view(b, 0, dtype, shape.as_ptr(), 1, &mut t), OK);
            t
        };
        let n = 300_001usize;
        let x = random_data(n, 4242);
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        for (bits, symmetric, gs, stochastic) in [
            (4, false, 333, true),
            (8, true, 4096, false),
            (4, true, 1_000_003, true),
        ] {
            let c = cfg(bits, symmetric, gs, stochastic);
            let p = QuantizeParams {
                bits: bits as u32,
                symmetric,
                group_size: gs as usize,
                rounding: if stochastic {
                    Rounding::Stochastic {
                        seed: 77,
                        offset: 3,
                    }
                } else {
                    Rounding::Nearest
                },
            };
            let (cpu, _) = quantize_with(
                &p,
                &Data::new(&x, Dt::BF16),
                &kernel(BuildOptions::default(), 0),
            );
            let g = p.num_groups(n);
            let (bin, bq, bs, bo) = (alloc(n * 2), alloc(p.q_len(n)), alloc(g * 4), alloc(g * 4));
            assert_eq!(
                dsrs_buffer_write(bin, 0, xb.as_ptr().cast(), n * 2, stream),
                OK
            );
            let mut shapes = [[0i64; 1]; 4];
            let [s0, s1, s2, s3] = &mut shapes;
            let tin = view(bin, n, kDLBfloat, 16, s0);
            let mut tq = view(bq, p.q_len(n), kDLInt, 8, s1);
            let mut ts = view(bs, g, kDLFloat, 32, s2);
            let mut to = view(bo, g, kDLFloat, 32, s3);
            let to_ptr: *mut DLTensor = if symmetric { ptr::null_mut() } else { &mut to };
            let st = dsrs_quantize(&c, &tin, &mut tq, &mut ts, to_ptr, stream);
            assert_eq!(st, OK, "{}", last_message());
            assert_eq!(dsrs_stream_synchronize(stream), OK);
            let mut q = vec![0u8; p.q_len(n)];
            let mut sc = vec![0f32; g];
            let mut of = vec![0f32; g];
            assert_eq!(
                dsrs_buffer_read(bq, 0, q.as_mut_ptr().cast(), q.len(), stream),
                OK
            );
            assert_eq!(
                dsrs_buffer_read(bs, 0, sc.as_mut_ptr().cast(), g * 4, stream),
                OK
            );
            assert_eq!(
                dsrs_buffer_read(bo, 0, of.as_mut_ptr().cast(), g * 4, stream),
                OK
            );
            let gpu = Quantized {
                q,
                scales: sc.iter().map(|v| v.to_bits()).collect(),
                offsets: (!symmetric).then(|| of.iter().map(|v| v.to_bits()).collect()),
            };
            assert_same(&format!("C ABI on CUDA {p:?}"), &gpu, &cpu);
            // Dequantize into the input buffer as float16 (the first half of it).
            let mut s4 = [0i64; 1];
            let mut tout = view(bin, n, kDLFloat, 16, &mut s4);
            let to_c: *const DLTensor = if symmetric { ptr::null() } else { &to };
            let st = dsrs_dequantize(&c, &tq, &ts, to_c, &mut tout, stream);
            assert_eq!(st, OK, "{}", last_message());
            let mut y = vec![0u16; n];
            assert_eq!(
                dsrs_buffer_read(bin, 0, y.as_mut_ptr().cast(), n * 2, stream),
                OK
            );
            let got: Vec<u32> = y.iter().map(|&v| u32::from(v)).collect();
            let want = dequantize_with(&p, &cpu, n, Dt::F16, &kernel(BuildOptions::default(), 0));
            assert!(
                got == want,
                "C ABI dequantize on CUDA {p:?}: {}",
                first_diff(&got, &want)
            );
            // A stream of the CPU accelerator cannot run CUDA tensors.
            let mut cpu_acc: *mut dsrs_accelerator = ptr::null_mut();
            assert_eq!(
                dsrs_accelerator_new(c"cpu".as_ptr(), ptr::null(), &mut cpu_acc),
                OK
            );
            let mut cpu_stream: *mut dsrs_stream = ptr::null_mut();
            assert_eq!(dsrs_stream_new(cpu_acc, &mut cpu_stream), OK);
            let st = dsrs_quantize(&c, &tin, &mut tq, &mut ts, to_ptr, cpu_stream);
            assert_eq!(st, dsrs_status::DSRS_STATUS_INVALID_ARGUMENT);
            assert!(last_message().contains("not a stream of the CUDA accelerator"));
            assert_eq!(dsrs_stream_free(cpu_stream), OK);
            assert_eq!(dsrs_accelerator_free(cpu_acc), OK);
            for b in [bin, bq, bs, bo] {
                assert_eq!(dsrs_buffer_free(b), OK);
            }
        }
        assert_eq!(dsrs_stream_free(stream), OK);
        assert_eq!(dsrs_accelerator_free(acc), OK);
    }
}

// ---- timing ------------------------------------------------------------------------------------------

/// Quantize throughput of 1e7 fp32 elements on one thread (input bytes per second), group
/// size 2048, int8 symmetric, nearest and stochastic; also int4 asymmetric.
#[test]
#[ignore]
fn throughput() {
    let n = 10_000_000;
    let x = random_data(n, 1);
    let data = Data::new(&x, Dt::F32);
    let exec = kernel(BuildOptions::default(), 1);
    for (bits, symmetric, rounding) in [
        (8, true, Rounding::Nearest),
        (8, true, Rounding::Stochastic { seed: 1, offset: 0 }),
        (4, false, Rounding::Nearest),
    ] {
        let p = QuantizeParams {
            bits,
            symmetric,
            group_size: 2048,
            rounding,
        };
        let mut q = vec![0u8; p.q_len(n)];
        let mut s = vec![0f32; p.num_groups(n)];
        let mut o = vec![0f32; p.num_groups(n)];
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            quantizer::quantize(
                &p,
                data.floats(),
                &mut q,
                &mut s,
                (!symmetric).then_some(&mut o[..]),
                &exec,
            )
            .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        let mut y = vec![0f32; n];
        let mut dbest = f64::INFINITY;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            quantizer::dequantize(
                &p,
                &q,
                &s,
                (!symmetric).then_some(&o[..]),
                FloatsMut::F32(&mut y),
                &exec,
            )
            .unwrap();
            dbest = dbest.min(t.elapsed().as_secs_f64());
        }
        println!(
            "bits {bits} symmetric {symmetric} {rounding:?}: quantize {:.2} GB/s ({:.1} ms), dequantize {:.2} GB/s of fp32 output",
            (n * 4) as f64 / best / 1e9,
            best * 1e3,
            (n * 4) as f64 / dbest / 1e9
        );
    }
}
