//! The CPU optimizer ops (`cpu_adam`, `cpu_adagrad`, `cpu_lion`) against the pure-Rust
//! reference (bit for bit) and against float64 formulas written here from DeepSpeed's
//! documented semantics (within stated tolerances), on random inputs of odd lengths, every
//! dtype combination, several steps, at the machine's SIMD level, at AVX2 (when the machine
//! has AVX-512) and with the scalar path forced (`portable`).

use std::path::PathBuf;
use std::sync::OnceLock;

use deepspeed_rs::dtype::DType;
use deepspeed_rs::ops::BuildOptions;
use deepspeed_rs::ops::optim::{
    AdagradParams, AdamParams, Backend, CopyMut, Exec, GradsRef, LionParams, ParamsMut, Ran, cpu,
    reference,
};
use half::{bf16, f16};

fn cache_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("optim-cpu-cache");
        std::fs::create_dir_all(&d).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        d
    })
    .clone()
}

/// The build variants every test runs: the machine's level, AVX2 below AVX-512, scalar.
fn levels() -> Vec<(&'static str, BuildOptions)> {
    let base = BuildOptions {
        cache_dir: Some(cache_dir()),
        prebuilt: false,
        simd: None,
        portable: false,
        ..BuildOptions::default()
    };
    let native = deepspeed_rs::accelerator::cpu::cpu_info().simd.name();
    let mut v = vec![("native", base.clone())];
    if native == "avx512" {
        v.push((
            "avx2",
            BuildOptions {
                simd: Some("avx2".into()),
                ..base.clone()
            },
        ));
    }
    v.push((
        "scalar",
        BuildOptions {
            portable: true,
            ..base
        },
    ));
    v
}

fn exec(build: &BuildOptions, threads: usize) -> Exec {
    Exec {
        backend: Backend::Kernel,
        num_threads: threads,
        build: build.clone(),
    }
}

/// splitmix64 → uniform floats.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    fn sym(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym(a)).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    F32,
    F16,
    BF16,
}

/// Typed storage for params / grads / copies.
#[derive(Clone, Debug, PartialEq)]
enum Arr {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Arr {
    fn from(t: Ty, v: &[f32]) -> Arr {
        match t {
            Ty::F32 => Arr::F32(v.to_vec()),
            Ty::F16 => Arr::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Ty::BF16 => Arr::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }
    fn zeros(t: Ty, n: usize) -> Arr {
        Arr::from(t, &vec![0.0; n])
    }
    fn params(&mut self) -> ParamsMut<'_> {
        match self {
            Arr::F32(v) => ParamsMut::F32(v),
            Arr::F16(v) => ParamsMut::F16(v),
            Arr::BF16(v) => ParamsMut::BF16(v),
        }
    }
    fn grads(&self) -> GradsRef<'_> {
        match self {
            Arr::F32(v) => GradsRef::F32(v),
            Arr::F16(v) => GradsRef::F16(v),
            Arr::BF16(v) => GradsRef::BF16(v),
        }
    }
    fn copy(&mut self) -> CopyMut<'_> {
        match self {
            Arr::F16(v) => CopyMut::F16(v),
            Arr::BF16(v) => CopyMut::BF16(v),
            Arr::F32(_) => panic!("no f32 copies"),
        }
    }
    fn to_f64(&self) -> Vec<f64> {
        match self {
            Arr::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Arr::F16(v) => v.iter().map(|&x| f64::from(x.to_f32())).collect(),
            Arr::BF16(v) => v.iter().map(|&x| f64::from(x.to_f32())).collect(),
        }
    }
    /// The first index where the bits differ.
    fn first_diff(&self, o: &Arr) -> Option<usize> {
        match (self, o) {
            (Arr::F32(a), Arr::F32(b)) => a
                .iter()
                .zip(b)
                .position(|(x, y)| x.to_bits() != y.to_bits()),
            (Arr::F16(a), Arr::F16(b)) => a
                .iter()
                .zip(b)
                .position(|(x, y)| x.to_bits() != y.to_bits()),
            (Arr::BF16(a), Arr::BF16(b)) => a
                .iter()
                .zip(b)
                .position(|(x, y)| x.to_bits() != y.to_bits()),
            _ => Some(0),
        }
    }
}

fn first_diff_f32(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}

/// The dtype combinations the ops take: (params, grads, copy).
const COMBOS: &[(Ty, Ty, Option<Ty>)] = &[
    (Ty::F32, Ty::F32, None),
    (Ty::F32, Ty::F32, Some(Ty::F16)),
    (Ty::F32, Ty::F32, Some(Ty::BF16)),
    (Ty::F32, Ty::F16, None),
    (Ty::F32, Ty::BF16, Some(Ty::BF16)),
    (Ty::F16, Ty::F16, None),
    (Ty::F16, Ty::F32, None),
    (Ty::BF16, Ty::BF16, None),
    (Ty::BF16, Ty::F32, None),
];

const LENGTHS: &[usize] = &[1, 7, 1023, 4099];

#[derive(Clone, Copy, Debug)]
enum Opt {
    Adam(AdamParams),
    Adagrad(AdagradParams),
    Lion(LionParams),
}

struct State {
    p: Arr,
    m: Vec<f32>,
    v: Vec<f32>,
    copy: Option<Arr>,
}

fn init(seed: u64, n: usize, pt: Ty, ct: Option<Ty>) -> State {
    let mut r = Rng(seed);
    State {
        p: Arr::from(pt, &r.vec(n, 1.0)),
        m: r.vec(n, 0.01),
        v: r.vec(n, 1e-4).iter().map(|x| x.abs()).collect(),
        copy: ct.map(|t| Arr::zeros(t, n)),
    }
}

fn run(o: Opt, s: &mut State, g: &Arr, kernel: Option<&Exec>) -> Option<Ran> {
    let copy = s.copy.as_mut().map(|c| c.copy());
    match (o, kernel) {
        (Opt::Adam(h), Some(e)) => {
            Some(cpu::adam_step(&h, s.p.params(), g.grads(), &mut s.m, &mut s.v, copy, e).unwrap())
        }
        (Opt::Adam(h), None) => {
            reference::adam_step(&h, s.p.params(), g.grads(), &mut s.m, &mut s.v, copy).unwrap();
            None
        }
        (Opt::Adagrad(h), Some(e)) => {
            Some(cpu::adagrad_step(&h, s.p.params(), g.grads(), &mut s.v, copy, e).unwrap())
        }
        (Opt::Adagrad(h), None) => {
            reference::adagrad_step(&h, s.p.params(), g.grads(), &mut s.v, copy).unwrap();
            None
        }
        (Opt::Lion(h), Some(e)) => {
            Some(cpu::lion_step(&h, s.p.params(), g.grads(), &mut s.m, copy, e).unwrap())
        }
        (Opt::Lion(h), None) => {
            reference::lion_step(&h, s.p.params(), g.grads(), &mut s.m, copy).unwrap();
            None
        }
    }
}

fn with_step(o: Opt, step: u64) -> Opt {
    match o {
        Opt::Adam(h) => Opt::Adam(AdamParams { step, ..h }),
        other => other,
    }
}

/// Runs `steps` steps with the kernel and with the reference from the same random state
/// and asserts every output is bit-identical after each step.
fn kernel_equals_reference(
    label: &str,
    o: Opt,
    n: usize,
    combo: (Ty, Ty, Option<Ty>),
    e: &Exec,
    steps: u64,
) {
    let (pt, gt, ct) = combo;
    let seed = n as u64 * 31 + pt as u64 * 7 + gt as u64 * 3;
    let mut k = init(seed, n, pt, ct);
    let mut r = init(seed, n, pt, ct);
    let mut rng = Rng(seed ^ 0xABCD);
    for step in 1..=steps {
        let g = Arr::from(gt, &rng.vec(n, 0.1));
        let o = with_step(o, step);
        let ran = run(o, &mut k, &g, Some(e)).unwrap();
        assert!(matches!(ran, Ran::Kernel(_)), "{label}: ran {ran:?}");
        run(o, &mut r, &g, None);
        let ctx = format!("{label} {o:?} n={n} {combo:?} step {step}");
        if let Some(i) = k.p.first_diff(&r.p) {
            panic!(
                "{ctx}: params differ at {i}: kernel {:?} vs reference {:?}",
                k.p.to_f64()[i],
                r.p.to_f64()[i]
            );
        }
        if let Some(i) = first_diff_f32(&k.m, &r.m) {
            panic!("{ctx}: exp_avg differs at {i}: {} vs {}", k.m[i], r.m[i]);
        }
        if let Some(i) = first_diff_f32(&k.v, &r.v) {
            panic!("{ctx}: exp_avg_sq differs at {i}: {} vs {}", k.v[i], r.v[i]);
        }
        if let (Some(a), Some(b)) = (&k.copy, &r.copy) {
            if let Some(i) = a.first_diff(b) {
                panic!("{ctx}: param_copy differs at {i}");
            }
            // the copy is the updated fp32 parameters rounded
            let want = Arr::from(
                match a {
                    Arr::F16(_) => Ty::F16,
                    _ => Ty::BF16,
                },
                &match &k.p {
                    Arr::F32(v) => v.clone(),
                    _ => unreachable!(),
                },
            );
            assert_eq!(
                a.first_diff(&want),
                None,
                "{ctx}: the copy is not the rounded parameters"
            );
        }
    }
}

fn adam_variants() -> Vec<Opt> {
    let mut v = Vec::new();
    for (adamw, bc, wd, gs) in [
        (true, true, 0.01, 1.0),
        (false, true, 0.05, 1024.0),
        (true, false, 0.0, 3.0),
        (false, false, 0.0, 1.0),
    ] {
        v.push(Opt::Adam(AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: wd,
            adamw_mode: adamw,
            bias_correction: bc,
            step: 1,
            grad_scale: gs,
        }));
    }
    v
}

fn all_variants() -> Vec<Opt> {
    let mut v = adam_variants();
    v.push(Opt::Adagrad(AdagradParams {
        lr: 1e-2,
        eps: 1e-10,
        weight_decay: 0.0,
        grad_scale: 1.0,
    }));
    v.push(Opt::Adagrad(AdagradParams {
        lr: 5e-3,
        eps: 1e-8,
        weight_decay: 0.1,
        grad_scale: 6.0,
    }));
    v.push(Opt::Lion(LionParams {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.99,
        weight_decay: 0.0,
        grad_scale: 1.0,
    }));
    v.push(Opt::Lion(LionParams {
        lr: 3e-4,
        beta1: 0.95,
        beta2: 0.98,
        weight_decay: 0.1,
        grad_scale: 256.0,
    }));
    v
}

#[test]
fn every_kernel_level_equals_the_reference_bit_for_bit() {
    for (label, b) in levels() {
        for threads in [1, 2] {
            let e = exec(&b, threads);
            for o in all_variants() {
                for &combo in COMBOS {
                    for &n in LENGTHS {
                        kernel_equals_reference(&format!("{label}/{threads}t"), o, n, combo, &e, 3);
                    }
                }
            }
        }
    }
}

#[test]
fn a_million_and_three_elements_equal_the_reference() {
    let (_, b) = levels().remove(0);
    let e = exec(&b, 2);
    for o in [
        adam_variants()[0],
        adam_variants()[1],
        all_variants()[5],
        all_variants()[7],
    ] {
        for combo in [
            (Ty::F32, Ty::F32, Some(Ty::BF16)),
            (Ty::BF16, Ty::BF16, None),
        ] {
            kernel_equals_reference("native/2t", o, 1_000_003, combo, &e, 2);
        }
    }
}

/// Unaligned views: every array offset by one element from its allocation.
#[test]
fn unaligned_arrays_give_the_same_bits() {
    let (_, b) = levels().remove(0);
    let e = exec(&b, 1);
    let n = 1000;
    let hp = adam_variants()[0];
    let Opt::Adam(hp) = hp else { unreachable!() };
    let mut rng = Rng(5);
    let p0 = rng.vec(n + 1, 1.0);
    let g = rng.vec(n + 1, 0.1);
    let (mut p1, mut m1, mut v1) = (p0.clone(), vec![0.0f32; n + 1], vec![0.0f32; n + 1]);
    let (mut p2, mut m2, mut v2) = (p0[1..].to_vec(), vec![0.0f32; n], vec![0.0f32; n]);
    cpu::adam_step(
        &hp,
        ParamsMut::F32(&mut p1[1..]),
        GradsRef::F32(&g[1..]),
        &mut m1[1..],
        &mut v1[1..],
        None,
        &e,
    )
    .unwrap();
    cpu::adam_step(
        &hp,
        ParamsMut::F32(&mut p2),
        GradsRef::F32(&g[1..]),
        &mut m2,
        &mut v2,
        None,
        &e,
    )
    .unwrap();
    assert_eq!(first_diff_f32(&p1[1..], &p2), None);
    assert_eq!(p1[0], p0[0], "the element before the view is untouched");
}

// ---- float64 references, written from the formulas ---------------------------------------

fn ulp_f32(x: f64) -> f64 {
    let x = (x as f32).abs();
    if x == 0.0 {
        f64::from(f32::from_bits(1))
    } else {
        f64::from(f32::from_bits(x.to_bits() + 1) - x)
    }
}

/// fp32 Adam after 5 steps against float64: every output within `k` ulp of the f64 value
/// (where cancellation makes a value tiny, within k ulp of the largest term).
#[test]
fn fp32_adam_is_within_a_few_ulp_of_float64() {
    let (_, b) = levels().remove(0);
    let e = exec(&b, 1);
    let n = 1023;
    for o in adam_variants() {
        let Opt::Adam(hp) = o else { unreachable!() };
        let mut rng = Rng(77);
        let mut p = rng.vec(n, 1.0);
        let p_start = p.clone();
        let mut m = vec![0.0f32; n];
        let mut v = vec![0.0f32; n];
        let (mut p64, mut m64, mut v64): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            p.iter().map(|&x| x.into()).collect(),
            vec![0.0; n],
            vec![0.0; n],
        );
        for step in 1..=5u64 {
            let g = rng.vec(n, 0.1);
            let h = AdamParams { step, ..hp };
            cpu::adam_step(
                &h,
                ParamsMut::F32(&mut p),
                GradsRef::F32(&g),
                &mut m,
                &mut v,
                None,
                &e,
            )
            .unwrap();
            let (b1, b2, lr, wd, eps) = (
                f64::from(h.beta1),
                f64::from(h.beta2),
                f64::from(h.lr),
                f64::from(h.weight_decay),
                f64::from(h.eps),
            );
            let t = step as f64;
            let (c1, c2) = if h.bias_correction {
                (1.0 - b1.powf(t), 1.0 - b2.powf(t))
            } else {
                (1.0, 1.0)
            };
            for i in 0..n {
                let mut gi = f64::from(g[i]) / f64::from(h.grad_scale);
                if !h.adamw_mode {
                    gi += wd * p64[i];
                }
                m64[i] = b1 * m64[i] + (1.0 - b1) * gi;
                v64[i] = b2 * v64[i] + (1.0 - b2) * gi * gi;
                if h.adamw_mode {
                    p64[i] -= lr * wd * p64[i];
                }
                p64[i] -= lr / c1 * m64[i] / (v64[i].sqrt() / c2.sqrt() + eps);
            }
        }
        for i in 0..n {
            // p: each step adds at most ~1 ulp of p of rounding; 5 steps, plus the
            // propagated relative error of the update (the update is ~1e-3 of p).
            // Scaled by the largest value p took: its start, its end, or 5 updates of
            // about lr each.
            let big = p64[i]
                .abs()
                .max(f64::from(p_start[i]).abs())
                .max(5.0 * f64::from(hp.lr));
            let dp = (f64::from(p[i]) - p64[i]).abs();
            assert!(
                dp <= 8.0 * ulp_f32(big),
                "{hp:?}: p[{i}] = {} vs {} ({} ulp)",
                p[i],
                p64[i],
                dp / ulp_f32(big)
            );
            // m can cancel to near zero: scale by its largest term, (1 - beta1) * |g|.
            let scale_m = m64[i].abs().max(0.1 * 0.1 / f64::from(hp.grad_scale));
            assert!(
                (f64::from(m[i]) - m64[i]).abs() <= 16.0 * ulp_f32(scale_m),
                "{hp:?}: m[{i}] = {} vs {}",
                m[i],
                m64[i]
            );
            assert!(
                (f64::from(v[i]) - v64[i]).abs() <= 16.0 * ulp_f32(v64[i]),
                "{hp:?}: v[{i}] = {} vs {}",
                v[i],
                v64[i]
            );
        }
    }
}

/// bf16 and fp16 parameters against float64 (which keeps the parameters in high
/// precision): within the type's precision per step.
#[test]
fn half_precision_parameters_are_within_their_precision_of_float64() {
    let (_, b) = levels().remove(0);
    let e = exec(&b, 1);
    let n = 4099;
    for (t, rel) in [(Ty::BF16, 2f64.powi(-8)), (Ty::F16, 2f64.powi(-11))] {
        let hp = AdamParams {
            lr: 1e-2,
            weight_decay: 0.01,
            ..AdamParams::default()
        };
        let mut rng = Rng(9);
        let p0 = rng.vec(n, 1.0);
        let mut p = Arr::from(t, &p0);
        let mut p64 = p.to_f64();
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
        let steps = 4u64;
        for step in 1..=steps {
            let g = rng.vec(n, 0.1);
            let h = AdamParams { step, ..hp };
            cpu::adam_step(&h, p.params(), GradsRef::F32(&g), &mut m, &mut v, None, &e).unwrap();
            let t = step as f64;
            let (b1, b2, lr, wd, eps) = (
                f64::from(h.beta1),
                f64::from(h.beta2),
                f64::from(h.lr),
                f64::from(h.weight_decay),
                f64::from(h.eps),
            );
            let (c1, c2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
            for i in 0..n {
                let gi = f64::from(g[i]);
                m64[i] = b1 * m64[i] + (1.0 - b1) * gi;
                v64[i] = b2 * v64[i] + (1.0 - b2) * gi * gi;
                p64[i] -= lr * wd * p64[i];
                p64[i] -= lr / c1 * m64[i] / (v64[i].sqrt() / c2.sqrt() + eps);
            }
        }
        let got = p.to_f64();
        for i in 0..n {
            // each step rounds once to the type: at most half an ulp (rel/2 of |p|) per step
            // Each step rounds once to the type (half an ulp, rel/2 relative) of a value at
            // most the largest p took: its start, its end, or one update of about lr.
            let big = p64[i].abs().max(f64::from(p0[i]).abs()).max(1e-2);
            let tol = steps as f64 * rel * big;
            assert!(
                (got[i] - p64[i]).abs() <= tol,
                "{t:?}: p[{i}] = {} vs {} (tol {tol})",
                got[i],
                p64[i]
            );
        }
    }
}

#[test]
fn lion_and_adagrad_match_their_float64_formulas() {
    let (_, b) = levels().remove(0);
    let e = exec(&b, 1);
    let n = 1023;
    let mut rng = Rng(11);
    let p0 = rng.vec(n, 1.0);
    let g = rng.vec(n, 0.1);
    // Lion: one step from m = 0; wd 0.1
    let hp = LionParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.99,
        weight_decay: 0.1,
        grad_scale: 1.0,
    };
    let mut p = p0.clone();
    let mut m = vec![0.0f32; n];
    cpu::lion_step(
        &hp,
        ParamsMut::F32(&mut p),
        GradsRef::F32(&g),
        &mut m,
        None,
        &e,
    )
    .unwrap();
    for i in 0..n {
        let (lr, b1, b2, wd) = (
            f64::from(hp.lr),
            f64::from(hp.beta1),
            f64::from(hp.beta2),
            f64::from(hp.weight_decay),
        );
        let c = (1.0 - b1) * f64::from(g[i]);
        let want = f64::from(p0[i]) * (1.0 - lr * wd) - lr * c.signum();
        assert!(
            (f64::from(p[i]) - want).abs()
                <= 2.0 * ulp_f32(want.abs().max(f64::from(p0[i]).abs()).max(lr)),
            "lion p[{i}] = {} vs {want}",
            p[i]
        );
        let want_m = (1.0 - b2) * f64::from(g[i]);
        assert!(
            (f64::from(m[i]) - want_m).abs() <= 4.0 * ulp_f32(want_m),
            "lion m[{i}]"
        );
    }
    // Adagrad: two steps, wd 0.02 feeding the accumulator only (DeepSpeed). The gradients
    // are 0.05..0.1 in magnitude so g + wd * p (|wd * p| <= 0.02) cannot cancel: the f64
    // comparison then measures the kernel's rounding, not the problem's conditioning.
    let hp = AdagradParams {
        lr: 1e-2,
        eps: 1e-10,
        weight_decay: 0.02,
        grad_scale: 1.0,
    };
    let g: Vec<f32> = g
        .iter()
        .map(|&x| (0.05 + x.abs() / 2.0).copysign(x))
        .collect();
    let mut p = p0.clone();
    let mut v = vec![0.0f32; n];
    let mut p64: Vec<f64> = p0.iter().map(|&x| x.into()).collect();
    let mut v64 = vec![0.0f64; n];
    for _ in 0..2 {
        cpu::adagrad_step(
            &hp,
            ParamsMut::F32(&mut p),
            GradsRef::F32(&g),
            &mut v,
            None,
            &e,
        )
        .unwrap();
        for i in 0..n {
            let gd = f64::from(g[i]) + f64::from(hp.weight_decay) * p64[i];
            v64[i] += gd * gd;
            p64[i] -= f64::from(hp.lr) * f64::from(g[i]) / (v64[i].sqrt() + f64::from(hp.eps));
        }
    }
    for i in 0..n {
        assert!(
            (f64::from(p[i]) - p64[i]).abs() <= 4.0 * ulp_f32(p64[i]),
            "adagrad p[{i}] = {} vs {}",
            p[i],
            p64[i]
        );
        assert!(
            // g + wd * p can cancel: scale by its terms' magnitude, squared, twice
            (f64::from(v[i]) - v64[i]).abs()
                <= 8.0
                    * ulp_f32(
                        v64[i].max(
                            2.0 * (f64::from(g[i]).abs()
                                + f64::from(hp.weight_decay) * p64[i].abs())
                            .powi(2)
                        )
                    ),
            "adagrad v[{i}] = {} vs {}",
            v[i],
            v64[i]
        );
    }
}

#[test]
fn bad_inputs_are_refused_naming_the_field_and_nothing_is_written() {
    let (_, b) = levels().remove(0);
    let e = exec(&b, 1);
    let mut p = vec![1.0f32; 8];
    let g = vec![0.5f32; 8];
    let (mut m, mut v) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    let bad = AdamParams {
        eps: 0.0,
        ..AdamParams::default()
    };
    let err = cpu::adam_step(
        &bad,
        ParamsMut::F32(&mut p),
        GradsRef::F32(&g),
        &mut m,
        &mut v,
        None,
        &e,
    )
    .unwrap_err();
    assert!(err.to_string().contains("eps = 0"), "{err}");
    let mut short = vec![0.0f32; 7];
    let err = cpu::adam_step(
        &AdamParams::default(),
        ParamsMut::F32(&mut p),
        GradsRef::F32(&g),
        &mut m,
        &mut short,
        None,
        &e,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("exp_avg_sq has 7 elements"),
        "{err}"
    );
    let mut c = vec![f16::ZERO; 8];
    let mut ph = vec![f16::ONE; 8];
    let err = cpu::adam_step(
        &AdamParams::default(),
        ParamsMut::F16(&mut ph),
        GradsRef::F32(&g),
        &mut m,
        &mut v,
        Some(CopyMut::F16(&mut c)),
        &e,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("parameter copy needs fp32 parameters"),
        "{err}"
    );
    assert!(
        p.iter().all(|&x| x == 1.0) && m.iter().all(|&x| x == 0.0),
        "nothing written"
    );
    let bad_lion = LionParams {
        beta1: f32::NAN,
        ..LionParams::default()
    };
    let err = cpu::lion_step(
        &bad_lion,
        ParamsMut::F32(&mut p),
        GradsRef::F32(&g),
        &mut m,
        None,
        &e,
    )
    .unwrap_err();
    assert!(err.to_string().contains("beta1 = NaN"), "{err}");
    assert_eq!(DType::F32.size(), 4);
}

#[test]
fn the_reference_backend_never_builds_and_auto_prefers_the_kernel() {
    let (_, b) = levels().remove(0);
    let mut p = vec![1.0f32; 4];
    let g = vec![0.5f32; 4];
    let (mut m, mut v) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let r = cpu::adam_step(
        &AdamParams::default(),
        ParamsMut::F32(&mut p),
        GradsRef::F32(&g),
        &mut m,
        &mut v,
        None,
        &Exec {
            backend: Backend::Reference,
            num_threads: 0,
            build: b.clone(),
        },
    )
    .unwrap();
    assert_eq!(r, Ran::Reference);
    let r = cpu::adam_step(
        &AdamParams::default(),
        ParamsMut::F32(&mut p),
        GradsRef::F32(&g),
        &mut m,
        &mut v,
        None,
        &Exec {
            backend: Backend::Auto,
            num_threads: 0,
            build: b,
        },
    )
    .unwrap();
    assert!(matches!(r, Ran::Kernel(_)), "{r:?}");
}

#[test]
fn a_simd_level_the_cpu_cannot_run_is_refused() {
    let e = BuildOptions::from_json(Some(r#"{"simd": "avx1024"}"#)).unwrap_err();
    assert!(
        e.to_string()
            .contains("simd \"avx1024\" is not a SIMD level"),
        "{e}"
    );
    let native = deepspeed_rs::accelerator::cpu::cpu_info().simd.name();
    let foreign = if native == "neon" { "avx2" } else { "neon" };
    let e = BuildOptions::from_json(Some(&format!(r#"{{"simd": "{foreign}"}}"#))).unwrap_err();
    assert!(e.to_string().contains("cannot run on this CPU"), "{e}");
    let ok = BuildOptions::from_json(Some(r#"{"simd": "scalar"}"#)).unwrap();
    assert_eq!(ok.simd.as_deref(), Some("scalar"));
}
