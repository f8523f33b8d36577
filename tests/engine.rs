//! The training engine through its Rust API, against independent references: DeepSpeed's
//! documented formulas evaluated in f64, the pure-Rust optimizer reference, and twin runs.
//!
//! Random inputs come from a seeded generator; a failure prints the seed, and
//! `DSRS_TEST_SEED=<n>` replays it.

use std::sync::Arc;

use deepspeed_rs::accelerator::{self, Accelerator};
use deepspeed_rs::engine::{Engine, ParamData};
use deepspeed_rs::ops::optim::{AdamParams, Backend, Exec, GradsRef, ParamsMut, reference};

struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> (Rng, u64) {
        let seed = std::env::var("DSRS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        (Rng(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)), seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn normal(&mut self) -> f64 {
        let u1 = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * scale) as f32).collect()
    }
}

fn cpu() -> Arc<dyn Accelerator> {
    accelerator::create("cpu", None).expect("the cpu accelerator")
}

fn engine(config: &str) -> Engine {
    Engine::from_json_str(cpu(), config).unwrap_or_else(|e| panic!("{e}\nconfig: {config}"))
}

/// Registers `shapes` with random initial values; returns the values.
fn register(e: &mut Engine, rng: &mut Rng, shapes: &[(&str, Vec<i64>)]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for (name, shape) in shapes {
        let n: i64 = shape.iter().product();
        let v = rng.vec(n as usize, 0.5);
        e.register_param(name, shape, ParamData::f32(&v), true)
            .unwrap();
        out.push(v);
    }
    e.finalize().unwrap();
    out
}

fn add_grad(e: &mut Engine, i: usize, g: &[f32]) {
    for (d, s) in e.grad_f32_mut(i).unwrap().iter_mut().zip(g) {
        *d += *s;
    }
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

const SHAPES: fn() -> Vec<(&'static str, Vec<i64>)> = || {
    vec![
        ("w1", vec![17, 33]),
        ("b1", vec![33]),
        ("w2", vec![33, 5]),
        ("scalar", vec![]),
    ]
};

/// fp32 AdamW through the engine equals the pure-Rust reference bit for bit, and
/// DeepSpeed's formula in f64 within a few ulp.
#[test]
fn adamw_step_matches_reference_and_f64_formula() {
    let (mut rng, seed) = Rng::new(1);
    let cfg = r#"{
        "train_batch_size": 8,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.01, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.1}},
    }"#;
    let mut e = engine(cfg);
    let init = register(&mut e, &mut rng, &SHAPES());
    let mut refp = init.clone();
    let mut m: Vec<Vec<f32>> = init.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut v = m.clone();
    let mut p64: Vec<Vec<f64>> = init
        .iter()
        .map(|x| x.iter().map(|&y| y as f64).collect())
        .collect();
    let mut m64: Vec<Vec<f64>> = init.iter().map(|x| vec![0.0; x.len()]).collect();
    let mut v64 = m64.clone();
    for step in 1..=5u64 {
        let grads: Vec<Vec<f32>> = init.iter().map(|x| rng.vec(x.len(), 1.0)).collect();
        for (i, g) in grads.iter().enumerate() {
            add_grad(&mut e, i, g);
        }
        let r = e.step().unwrap();
        assert!(r.boundary && r.applied && !r.overflow, "{r:?}");
        assert_eq!(r.global_step, step);
        let hp = AdamParams {
            lr: 0.01,
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-6,
            weight_decay: 0.1,
            adamw_mode: true,
            bias_correction: true,
            step,
            grad_scale: 1.0,
        };
        let mut sumsq = 0f64;
        for i in 0..init.len() {
            reference::adam_step(
                &hp,
                ParamsMut::F32(&mut refp[i]),
                GradsRef::F32(&grads[i]),
                &mut m[i],
                &mut v[i],
                None,
            )
            .unwrap();
            // DeepSpeed's AdamW in f64: p -= lr*wd*p; m, v; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
            let (b1, b2) = (0.8f64, 0.95f64);
            let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
            for j in 0..init[i].len() {
                let g = grads[i][j] as f64;
                sumsq += g * g;
                let p = &mut p64[i][j];
                *p -= 0.01 * 0.1 * *p;
                m64[i][j] = b1 * m64[i][j] + (1.0 - b1) * g;
                v64[i][j] = b2 * v64[i][j] + (1.0 - b2) * g * g;
                *p -= 0.01 / bc1 * m64[i][j] / (v64[i][j].sqrt() / bc2.sqrt() + 1e-6);
            }
        }
        let norm = sumsq.sqrt();
        assert!(
            (r.grad_norm - norm).abs() <= 1e-12 * norm,
            "seed {seed}: grad_norm {} vs f64 {norm}",
            r.grad_norm
        );
        for i in 0..init.len() {
            let got = e.param_values(i).unwrap();
            let want: Vec<f64> = refp[i].iter().map(|&x| x as f64).collect();
            assert_eq!(
                bits(&got),
                bits(&want),
                "seed {seed}: param {i} step {step} vs reference"
            );
            let exp_avg = e.state_values(i, "exp_avg").unwrap();
            assert_eq!(exp_avg, m[i].iter().map(|&x| x as f64).collect::<Vec<_>>());
            for (j, (&g, &w)) in got.iter().zip(&p64[i]).enumerate() {
                let tol = 16.0 * f32::EPSILON as f64 * w.abs().max(0.05);
                assert!(
                    (g - w).abs() <= tol,
                    "seed {seed}: param {i}[{j}] step {step}: {g} vs f64 {w}"
                );
            }
            // The gradients are zeroed after the step.
            assert!(e.grad_f32_mut(i).unwrap().iter().all(|&x| x == 0.0));
        }
    }
}

/// Four micro batches of B samples accumulate to the same step as one batch of 4B
/// (linear least squares: per-sample gradients are computed here).
#[test]
fn accumulation_of_four_micro_batches_equals_one_big_batch() {
    let (mut rng, seed) = Rng::new(2);
    let (dim, b) = (24usize, 8usize);
    let x: Vec<Vec<f64>> = (0..4 * b)
        .map(|_| (0..dim).map(|_| rng.normal()).collect())
        .collect();
    let y: Vec<f64> = (0..4 * b).map(|_| rng.normal()).collect();
    let w0 = rng.vec(dim, 0.3);
    let mk = |micro: usize| {
        let cfg = format!(
            r#"{{"train_batch_size": {}, "train_micro_batch_size_per_gpu": {micro},
                "optimizer": {{"type": "Adam", "params": {{"lr": 0.05}}}},
                "gradient_clipping": 0.5}}"#,
            4 * b
        );
        let mut e = engine(&cfg);
        e.register_param("w", &[dim as i64], ParamData::f32(&w0), true)
            .unwrap();
        e.finalize().unwrap();
        e
    };
    // Gradient of the mean squared error over samples lo..hi at the engine's current w.
    let grad = |e: &Engine, lo: usize, hi: usize| -> Vec<f32> {
        let w = e.param_values(0).unwrap();
        let mut g = vec![0f64; dim];
        for s in lo..hi {
            let r: f64 = x[s].iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() - y[s];
            for k in 0..dim {
                g[k] += 2.0 * r * x[s][k] / (hi - lo) as f64;
            }
        }
        g.iter().map(|&v| v as f32).collect()
    };
    let mut small = mk(b);
    let mut big = mk(4 * b);
    assert_eq!(small.batch_sizes(), (32, 8, 4));
    assert_eq!(big.batch_sizes(), (32, 32, 1));
    for step in 0..6 {
        for k in 0..4 {
            let g = grad(&small, k * b, (k + 1) * b);
            add_grad(&mut small, 0, &g);
            let r = small.step().unwrap();
            assert_eq!(r.boundary, k == 3);
        }
        let g = grad(&big, 0, 4 * b);
        add_grad(&mut big, 0, &g);
        let r = big.step().unwrap();
        let rs = small.last_step_record().unwrap();
        assert!(
            (r.grad_norm - rs.grad_norm).abs() <= 1e-5 * r.grad_norm,
            "seed {seed} step {step}: norms {} vs {}",
            r.grad_norm,
            rs.grad_norm
        );
        let (a, c) = (small.param_values(0).unwrap(), big.param_values(0).unwrap());
        for j in 0..dim {
            assert!(
                (a[j] - c[j]).abs() <= 1e-5 * c[j].abs().max(1e-2),
                "seed {seed} step {step}: w[{j}] {} (4 x {b}) vs {} (1 x {})",
                a[j],
                c[j],
                4 * b
            );
        }
    }
}

fn snapshot(e: &Engine, states: &[&str]) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    for i in 0..e.num_params() {
        out.push(bits(&e.param_values(i).unwrap()));
        for s in states {
            out.push(bits(&e.state_values(i, s).unwrap()));
        }
    }
    out
}

/// A NaN or inf gradient skips the step under fp32, bf16 and fp16: parameters, optimizer
/// state (master weights included) and the LR schedule stay bit-identical, and the run
/// then continues exactly like a twin that never saw the bad window.
#[test]
fn non_finite_gradient_skips_the_step_bit_identically() {
    for (precision, states) in [
        ("", vec!["exp_avg", "exp_avg_sq"]),
        (
            r#""bf16": {"enabled": true},"#,
            vec!["exp_avg", "exp_avg_sq", "master"],
        ),
        (
            r#""fp16": {"enabled": true, "loss_scale": 0, "initial_scale_power": 8, "hysteresis": 2},"#,
            vec!["exp_avg", "exp_avg_sq", "master"],
        ),
    ] {
        for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (mut rng, seed) = Rng::new(3);
            let cfg = format!(
                r#"{{"train_batch_size": 4, "gradient_accumulation_steps": 2, {precision}
                    "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01, "weight_decay": 0.01}}}},
                    "scheduler": {{"type": "WarmupLR", "params": {{"warmup_max_lr": 0.01, "warmup_num_steps": 10}}}},
                    "gradient_clipping": 1.0}}"#
            );
            let mut a = engine(&cfg);
            let mut b = engine(&cfg);
            let shapes = SHAPES();
            let mut rng_b = Rng(rng.0);
            register(&mut a, &mut rng, &shapes);
            register(&mut b, &mut rng_b, &shapes);
            let gdtype = a.grad_dtype();
            let feed = |e: &mut Engine, gs: &[Vec<f32>]| {
                let scale = e.loss_scale() as f32;
                for (i, g) in gs.iter().enumerate() {
                    let v = e.grad_tensor(i).unwrap();
                    for (j, &x) in g.iter().enumerate() {
                        // SAFETY: inside the view; the test is the only user.
                        unsafe {
                            match v.dtype {
                                deepspeed_rs::dtype::DType::F32 => {
                                    *(v.ptr as *mut f32).add(j) += x * scale
                                }
                                _ => {
                                    let p = (v.ptr as *mut half::f16).add(j);
                                    *p = half::f16::from_f32((*p).to_f32() + x * scale);
                                }
                            }
                        }
                    }
                }
            };
            let window = |rng: &mut Rng| -> Vec<Vec<Vec<f32>>> {
                (0..2)
                    .map(|_| {
                        shapes
                            .iter()
                            .map(|(_, s)| rng.vec(s.iter().product::<i64>() as usize, 0.2))
                            .collect()
                    })
                    .collect()
            };
            for _ in 0..3 {
                let w = window(&mut rng);
                for micro in &w {
                    feed(&mut a, micro);
                    feed(&mut b, micro);
                    let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
                    assert_eq!(ra, rb);
                }
            }
            let before = snapshot(&a, &states);
            let lr_before = a.lr();
            let it_before = a.lr_scheduler().unwrap().last_batch_iteration();
            let scale_before = a.loss_scale();
            // The poisoned window: a bad value at a random place in one micro batch.
            let mut w = window(&mut rng);
            let pi = (rng.next() % shapes.len() as u64) as usize;
            let pj = (rng.next() % w[1][pi].len() as u64) as usize;
            w[1][pi][pj] = poison;
            feed(&mut a, &w[0]);
            assert!(!a.step().unwrap().boundary);
            feed(&mut a, &w[1]);
            let r = a.step().unwrap();
            let what = format!(
                "seed {seed}, {precision} grads {}, {poison} at {pi}[{pj}]",
                gdtype.name()
            );
            assert!(r.boundary && r.overflow && !r.applied, "{what}: {r:?}");
            assert!(r.grad_norm.is_nan(), "{what}");
            assert_eq!(r.skipped_steps, 1, "{what}");
            assert_eq!(r.global_step, 4, "{what}");
            assert_eq!(
                snapshot(&a, &states),
                before,
                "{what}: state changed by a skipped step"
            );
            assert_eq!(a.lr().to_bits(), lr_before.to_bits(), "{what}");
            assert_eq!(
                a.lr_scheduler().unwrap().last_batch_iteration(),
                it_before,
                "{what}"
            );
            for i in 0..a.num_params() {
                let v = a.grad_tensor(i).unwrap();
                let zero = match v.dtype {
                    deepspeed_rs::dtype::DType::F32 => {
                        a.grad_f32_mut(i).unwrap().iter().all(|&x| x == 0.0)
                    }
                    _ => (0..v.numel).all(|j| unsafe { *(v.ptr as *const u16).add(j) } == 0),
                };
                assert!(zero, "{what}: gradients not zeroed after a skipped step");
            }
            if precision.contains("fp16") {
                // Hysteresis 2: the first overflow does not change the scale.
                assert_eq!(a.loss_scale(), scale_before, "{what}");
            }
            // Both continue with the same clean windows and stay bit-identical.
            for _ in 0..2 {
                let w = window(&mut rng);
                for micro in &w {
                    feed(&mut a, micro);
                    feed(&mut b, micro);
                    a.step().unwrap();
                    b.step().unwrap();
                }
            }
            assert_eq!(
                snapshot(&a, &states),
                snapshot(&b, &states),
                "{what}: diverged from the twin"
            );
        }
    }
}

/// Clipping: `g * max_norm / (||g|| + 1e-6)` when the norm exceeds max_norm, with the
/// norm of the averaged, unscaled gradients (SGD with lr 1 exposes the clipped gradient).
#[test]
fn clipping_matches_f64_reference() {
    for (precision, gas, max_norm, grad_scale) in [
        ("", 1, 1.0, 3.0),
        ("", 3, 0.25, 0.01),
        (
            r#""fp16": {"enabled": true, "loss_scale": 1024},"#,
            2,
            2.0,
            1.0,
        ),
        ("", 2, 1e9, 1.0),
    ] {
        let (mut rng, seed) = Rng::new(4);
        let cfg = format!(
            r#"{{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": {gas}, {precision}
                "optimizer": {{"type": "SGD", "params": {{"lr": 1.0}}}},
                "gradient_clipping": {max_norm}}}"#
        );
        let mut e = engine(&cfg);
        let init = register(&mut e, &mut rng, &SHAPES());
        let fp16 = precision.contains("fp16");
        let scale = e.loss_scale();
        let mut sum: Vec<Vec<f64>> = init.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut r = None;
        for _ in 0..gas {
            for (i, v) in init.iter().enumerate() {
                let g = rng.vec(v.len(), grad_scale);
                let view = e.grad_tensor(i).unwrap();
                for (j, &x) in g.iter().enumerate() {
                    // Under fp16 the host's gradients carry the loss scale and are fp16.
                    let xs = if fp16 {
                        half::f16::from_f64(x as f64 * scale)
                    } else {
                        half::f16::ZERO
                    };
                    unsafe {
                        if fp16 {
                            // The fp16 buffer rounds each accumulation: mirror it.
                            let p = (view.ptr as *mut half::f16).add(j);
                            *p = half::f16::from_f32((*p).to_f32() + xs.to_f32());
                            sum[i][j] = (*p).to_f64();
                        } else {
                            let p = (view.ptr as *mut f32).add(j);
                            *p += x;
                            sum[i][j] = *p as f64;
                        }
                    }
                }
            }
            r = Some(e.step().unwrap());
        }
        let r = r.unwrap();
        let avg: Vec<Vec<f64>> = sum
            .iter()
            .map(|g| g.iter().map(|x| x / (gas as f64 * scale)).collect())
            .collect();
        let norm = avg.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
        let what = format!("seed {seed} {precision} gas {gas} max_norm {max_norm}");
        assert!(
            (r.grad_norm - norm).abs() <= 1e-9 * norm,
            "{what}: {} vs {norm}",
            r.grad_norm
        );
        let coef = if norm + 1e-6 > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        };
        let mut clipped_sq = 0.0;
        for (i, v) in init.iter().enumerate() {
            let got = if fp16 {
                e.state_values(i, "master").unwrap()
            } else {
                e.param_values(i).unwrap()
            };
            let p0: Vec<f64> = if fp16 {
                v.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect()
            } else {
                v.iter().map(|&x| x as f64).collect()
            };
            for j in 0..v.len() {
                let want = p0[j] - avg[i][j] * coef;
                let tol = 4.0 * f32::EPSILON as f64 * (p0[j].abs() + (avg[i][j] * coef).abs());
                assert!(
                    (got[j] - want).abs() <= tol,
                    "{what}: p{i}[{j}] {} vs f64 {want}",
                    got[j]
                );
                clipped_sq += (p0[j] - got[j]).powi(2);
            }
        }
        if coef < 1.0 {
            let clipped = clipped_sq.sqrt();
            assert!(
                (clipped - max_norm).abs() <= 1e-5 * max_norm,
                "{what}: clipped norm {clipped}"
            );
        }
    }
}

/// The LR the steps use follows the schedule's formula, and the schedule does not advance
/// on a skipped step.
#[test]
fn lr_follows_warmup_decay_and_set_lr() {
    let cfg = r#"{"train_batch_size": 1,
        "optimizer": {"type": "Adam", "params": {"lr": 0.1}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.02,
            "warmup_num_steps": 10, "total_num_steps": 40, "warmup_type": "linear"}}}"#;
    let (mut rng, _) = Rng::new(5);
    let mut e = engine(cfg);
    register(&mut e, &mut rng, &SHAPES());
    // DeepSpeed's schedules start at last_batch_iteration = -1 (the value written at
    // construction: warmup_min_lr) and step after each applied optimizer step.
    let mut t = -1i64;
    for k in 0..45 {
        let want = if t < 0 {
            0.0
        } else if t < 10 {
            0.02 * t as f64 / 10.0
        } else {
            0.02 * ((40 - t) as f64 / 30.0).max(0.0)
        };
        assert!(
            (e.lr() - want).abs() <= 1e-12,
            "step {k} (t={t}): {} vs {want}",
            e.lr()
        );
        let poison = k == 17;
        for i in 0..e.num_params() {
            let n = e.grad_f32_mut(i).unwrap().len();
            let mut g = rng.vec(n, 1.0);
            if poison && i == 0 {
                g[0] = f32::NAN;
            }
            add_grad(&mut e, i, &g);
        }
        let r = e.step().unwrap();
        assert!((r.lr - want).abs() <= 1e-12);
        assert_eq!(r.applied, !poison);
        if !poison {
            t += 1;
        }
    }
    e.set_lr(0.5).unwrap();
    assert_eq!(e.lr(), 0.5);
    assert!(e.set_lr(f64::NAN).is_err());
    assert!(e.set_lr(-1.0).is_err());
}

/// The dynamic loss scale through the engine: 2^initial_scale_power, unchanged by the
/// first overflow (hysteresis 2), halved by the second, doubled after loss_scale_window
/// clean steps.
#[test]
fn fp16_dynamic_loss_scale_through_the_engine() {
    let cfg = r#"{"train_batch_size": 1,
        "fp16": {"enabled": true, "initial_scale_power": 10, "loss_scale_window": 3, "hysteresis": 2},
        "optimizer": {"type": "Adam", "params": {"lr": 0.001}}}"#;
    let (mut rng, _) = Rng::new(6);
    let mut e = engine(cfg);
    register(&mut e, &mut rng, &[("w", vec![10])]);
    assert_eq!(e.compute_dtype(), deepspeed_rs::dtype::DType::F16);
    assert_eq!(e.grad_dtype(), deepspeed_rs::dtype::DType::F16);
    let step = |e: &mut Engine, bad: bool| {
        let v = e.grad_tensor(0).unwrap();
        let bits = if bad {
            0x7C00u16
        } else {
            half::f16::from_f32(0.5).to_bits()
        };
        unsafe { *(v.ptr as *mut u16) = bits };
        e.step().unwrap()
    };
    assert_eq!(e.loss_scale(), 1024.0);
    let r = step(&mut e, true);
    assert!(r.overflow && r.loss_scale == 1024.0);
    assert_eq!(
        e.loss_scale(),
        1024.0,
        "hysteresis 2: the first overflow keeps the scale"
    );
    step(&mut e, true);
    assert_eq!(e.loss_scale(), 512.0);
    for _ in 0..2 {
        step(&mut e, false);
        assert_eq!(e.loss_scale(), 512.0);
    }
    step(&mut e, false);
    assert_eq!(
        e.loss_scale(),
        1024.0,
        "doubled after loss_scale_window clean steps"
    );
    // A static scale never changes and never errors; steps at the minimum of a dynamic
    // scale with the hysteresis used up are an error naming the cause.
    let cfg = r#"{"train_batch_size": 1,
        "fp16": {"enabled": true, "initial_scale_power": 0, "hysteresis": 1, "min_loss_scale": 1},
        "optimizer": {"type": "Adam", "params": {"lr": 0.001}}}"#;
    let mut e = engine(cfg);
    register(&mut e, &mut rng, &[("w", vec![10])]);
    let before = e.param_values(0).unwrap();
    let vp = e.grad_tensor(0).unwrap().ptr;
    unsafe { *(vp as *mut u16) = 0x7E00 };
    let err = e.step().unwrap_err().to_string();
    assert!(
        err.starts_with("Current loss scale already at minimum (1)"),
        "{err}"
    );
    assert_eq!(bits(&e.param_values(0).unwrap()), bits(&before));
    assert_eq!(
        unsafe { *(vp as *const u16) },
        0,
        "gradients zeroed after the error"
    );
}

/// A fixed-seed training run (a two-layer MLP on a 3-class problem, forward and backward
/// here in f64/f32) whose loss falls below 0.15 from about 1.1, under fp32 and bf16.
#[test]
fn training_run_loss_falls_below_threshold() {
    for precision in ["", r#""bf16": {"enabled": true},"#] {
        let mut rng = Rng(42);
        let (n, d_in, hidden, classes) = (384usize, 4usize, 32usize, 3usize);
        // Labels: which of three fixed directions has the largest projection.
        let dirs: Vec<Vec<f64>> = (0..classes)
            .map(|_| (0..d_in).map(|_| rng.normal()).collect())
            .collect();
        let xs: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..d_in).map(|_| rng.normal()).collect())
            .collect();
        let ys: Vec<usize> = xs
            .iter()
            .map(|x| {
                (0..classes)
                    .max_by(|&a, &b| {
                        let pa: f64 = x.iter().zip(&dirs[a]).map(|(p, q)| p * q).sum();
                        let pb: f64 = x.iter().zip(&dirs[b]).map(|(p, q)| p * q).sum();
                        pa.total_cmp(&pb)
                    })
                    .unwrap()
            })
            .collect();
        let cfg = format!(
            r#"{{"train_batch_size": 32, "train_micro_batch_size_per_gpu": 16, {precision}
                "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01, "weight_decay": 0.0001}}}},
                "scheduler": {{"type": "WarmupLR", "params": {{"warmup_max_lr": 0.01, "warmup_num_steps": 20}}}},
                "gradient_clipping": 1.0}}"#
        );
        let mut e = engine(&cfg);
        let w1: Vec<f32> = rng.vec(d_in * hidden, (2.0 / d_in as f64).sqrt());
        let w2: Vec<f32> = rng.vec(hidden * classes, (2.0 / hidden as f64).sqrt());
        e.register_param(
            "w1",
            &[d_in as i64, hidden as i64],
            ParamData::f32(&w1),
            true,
        )
        .unwrap();
        e.register_param(
            "b1",
            &[hidden as i64],
            ParamData::f32(&vec![0.0; hidden]),
            true,
        )
        .unwrap();
        e.register_param(
            "w2",
            &[hidden as i64, classes as i64],
            ParamData::f32(&w2),
            true,
        )
        .unwrap();
        e.register_param(
            "b2",
            &[classes as i64],
            ParamData::f32(&vec![0.0; classes]),
            true,
        )
        .unwrap();
        e.finalize().unwrap();
        let (_, mb, _) = e.batch_sizes();
        let mb = mb as usize;
        let mut epoch_loss = 0.0;
        let mut first_loss = None;
        for _epoch in 0..25 {
            epoch_loss = 0.0;
            for batch in 0..n / mb {
                let p: Vec<Vec<f64>> = (0..4).map(|i| e.param_values(i).unwrap()).collect();
                let mut g: Vec<Vec<f64>> = p.iter().map(|v| vec![0.0; v.len()]).collect();
                let mut loss = 0.0;
                for s in batch * mb..(batch + 1) * mb {
                    let x = &xs[s];
                    let mut h = vec![0.0; hidden];
                    for k in 0..hidden {
                        h[k] =
                            p[1][k] + (0..d_in).map(|i| x[i] * p[0][i * hidden + k]).sum::<f64>();
                    }
                    let a: Vec<f64> = h.iter().map(|&v| v.max(0.0)).collect();
                    let mut z = vec![0.0; classes];
                    for c in 0..classes {
                        z[c] = p[3][c]
                            + (0..hidden)
                                .map(|k| a[k] * p[2][k * classes + c])
                                .sum::<f64>();
                    }
                    let mx = z.iter().cloned().fold(f64::MIN, f64::max);
                    let ez: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
                    let se: f64 = ez.iter().sum();
                    loss += -(ez[ys[s]] / se).ln() / mb as f64;
                    let dz: Vec<f64> = (0..classes)
                        .map(|c| (ez[c] / se - if c == ys[s] { 1.0 } else { 0.0 }) / mb as f64)
                        .collect();
                    let mut da = vec![0.0; hidden];
                    for k in 0..hidden {
                        for c in 0..classes {
                            g[2][k * classes + c] += a[k] * dz[c];
                            da[k] += p[2][k * classes + c] * dz[c];
                        }
                    }
                    for c in 0..classes {
                        g[3][c] += dz[c];
                    }
                    for k in 0..hidden {
                        let dh = if h[k] > 0.0 { da[k] } else { 0.0 };
                        g[1][k] += dh;
                        for i in 0..d_in {
                            g[0][i * hidden + k] += x[i] * dh;
                        }
                    }
                }
                for (i, gi) in g.iter().enumerate() {
                    let gi: Vec<f32> = gi.iter().map(|&v| v as f32).collect();
                    add_grad(&mut e, i, &gi);
                }
                e.report_loss(loss);
                e.step().unwrap();
                epoch_loss += loss / (n / mb) as f64;
            }
            first_loss.get_or_insert(epoch_loss);
        }
        let first = first_loss.unwrap();
        assert!(
            first > 0.5,
            "{precision}: the first epoch's loss {first} is suspiciously low"
        );
        assert!(
            epoch_loss < 0.15,
            "{precision}: the last epoch's loss {epoch_loss} is not below 0.15 (first {first})"
        );
        assert_eq!(e.global_steps(), 25 * (n as u64 / 32));
        assert_eq!(e.skipped_steps(), 0);
    }
}

/// Views: shapes, dtypes, aligned offsets in flat buffers, frozen parameters, errors.
#[test]
fn views_layout_and_errors() {
    let cfg = r#"{"train_batch_size": 2, "bf16": {"enabled": true},
        "optimizer": {"type": "Lion", "params": {"lr": 0.001}}}"#;
    let mut e = engine(cfg);
    let v: Vec<f32> = (0..30).map(|i| i as f32 * 0.25).collect();
    assert!(e.param_tensor(0).is_err());
    e.register_param("a", &[5, 6], ParamData::f32(&v), true)
        .unwrap();
    e.register_param("frozen", &[3], ParamData::f64(&[1.0, 2.0, 3.0]), false)
        .unwrap();
    e.register_param("b", &[7], ParamData::f32(&v[..7]), true)
        .unwrap();
    assert!(
        e.register_param("a", &[1], ParamData::f32(&[0.0]), true)
            .unwrap_err()
            .to_string()
            .contains("already registered")
    );
    assert!(
        e.register_param("c", &[2, 2], ParamData::f32(&[0.0; 3]), true)
            .is_err()
    );
    assert!(
        e.register_param("", &[1], ParamData::f32(&[0.0]), true)
            .is_err()
    );
    assert!(e.step().unwrap_err().to_string().contains("not finalized"));
    e.finalize().unwrap();
    assert!(e.finalize().is_err());
    assert!(
        e.register_param("late", &[1], ParamData::f32(&[0.0]), true)
            .unwrap_err()
            .to_string()
            .contains("finalized")
    );
    let a = e.param_tensor(0).unwrap();
    assert_eq!(a.dtype, deepspeed_rs::dtype::DType::BF16);
    assert_eq!(a.shape, &[5, 6]);
    let b = e.param_tensor(2).unwrap();
    assert_eq!((b.ptr - a.ptr) % (64 * 2), 0);
    assert_eq!(b.ptr - a.ptr, 64 * 2, "offsets are aligned to 64 elements");
    assert_eq!(
        e.param_values(0).unwrap(),
        v.iter().map(|&x| x as f64).collect::<Vec<_>>()
    );
    let f = e.param_tensor(1).unwrap();
    assert_eq!(f.dtype, deepspeed_rs::dtype::DType::F64);
    assert_eq!(e.param_values(1).unwrap(), vec![1.0, 2.0, 3.0]);
    assert!(e.grad_tensor(1).unwrap_err().to_string().contains("frozen"));
    assert_eq!(
        e.grad_tensor(0).unwrap().dtype,
        deepspeed_rs::dtype::DType::F32
    );
    assert!(e.state_tensor(0, "exp_avg").is_ok());
    assert!(
        e.state_tensor(0, "exp_avg_sq")
            .unwrap_err()
            .to_string()
            .contains("exp_avg")
    );
    assert!(e.state_tensor(0, "master").is_ok());
    assert!(e.param_tensor(3).is_err());
    assert_eq!(e.param_index("b").unwrap(), 2);
    assert!(e.param_index("nope").is_err());
}

/// The optimizer runs through the op registry's kernel unless the reference is asked for;
/// the kernel zeroes the gradients in its own pass (one thread, several threads) and the
/// reference after it, with bit-identical results.
#[test]
fn optimizer_backends_agree_and_zero_the_gradients() {
    let cfg = r#"{"train_batch_size": 1, "bf16": {"enabled": true},
        "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "weight_decay": 0.1}}}"#;
    let (mut rng, seed) = Rng::new(7);
    let n = 3 * 8192 + 77; // several kernel tiles and a partial one
    let init = rng.vec(n, 0.5);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, 1.0)).collect();
    let mut results = Vec::new();
    for (backend, threads) in [
        (Backend::Reference, 0),
        (Backend::Auto, 1),
        (Backend::Auto, 0),
    ] {
        let mut e = engine(cfg);
        e.set_exec(Exec {
            backend,
            num_threads: threads,
            ..Exec::default()
        });
        e.register_param("w", &[n as i64], ParamData::f32(&init), true)
            .unwrap();
        e.finalize().unwrap();
        for g in &grads {
            add_grad(&mut e, 0, g);
            e.step().unwrap();
            assert!(
                e.grad_f32_mut(0).unwrap().iter().all(|&x| x == 0.0),
                "{backend:?} {threads} threads: gradients not zeroed"
            );
        }
        let s = e.stats_json();
        let imp = s["optimizer"]["implementation"]
            .as_str()
            .unwrap()
            .to_string();
        match backend {
            Backend::Reference => assert_eq!(imp, "reference (pure Rust)"),
            _ => assert!(
                imp.starts_with("kernel (") || imp.starts_with("reference"),
                "{imp}"
            ),
        }
        assert_eq!(s["global_steps"], 3);
        results.push(snapshot(&e, &["exp_avg", "exp_avg_sq", "master"]));
    }
    assert_eq!(
        results[0], results[1],
        "seed {seed}: kernel (1 thread) vs reference"
    );
    assert_eq!(
        results[0], results[2],
        "seed {seed}: kernel (threads) vs reference"
    );
}

/// A finalize that runs out of memory loses nothing: after memory is freed it resumes, and
/// the parameters hold their initial values.
#[test]
fn finalize_resumes_after_out_of_memory() {
    let accel = accelerator::create("cpu", Some(r#"{"memory_limit": 4000000}"#)).unwrap();
    let cfg = r#"{"train_batch_size": 1, "optimizer": {"type": "Adam", "params": {"lr": 0.001}}}"#;
    let mut e = Engine::from_json_str(Arc::clone(&accel), cfg).unwrap();
    let v: Vec<f32> = (0..200_000).map(|i| (i % 97) as f32 * 0.01).collect();
    e.register_param("w", &[200_000], ParamData::f32(&v), true)
        .unwrap();
    // 16 B/param = 3.2 MB of 4 MB; hold 2 MB so the optimizer state does not fit.
    let hog = deepspeed_rs::accelerator::Buffer::new(
        &accel,
        2_000_000,
        0,
        deepspeed_rs::accelerator::MemoryKind::Device,
    )
    .unwrap();
    let err = e.finalize().unwrap_err();
    assert_eq!(
        err.kind(),
        deepspeed_rs::error::ErrorKind::OutOfMemory,
        "{err}"
    );
    assert!(
        e.register_param("late", &[1], ParamData::f32(&[0.0]), true)
            .is_err()
    );
    drop(hog);
    e.finalize().unwrap();
    assert_eq!(
        e.param_values(0).unwrap(),
        v.iter().map(|&x| x as f64).collect::<Vec<_>>()
    );
    assert!(
        e.state_values(0, "exp_avg")
            .unwrap()
            .iter()
            .all(|&x| x == 0.0)
    );
}

/// A step the optimizer refuses (here: an op that must be built and cannot) changes
/// nothing; the retried step equals a twin's.
#[test]
fn failed_step_changes_nothing_and_can_be_retried() {
    let cfg = r#"{"train_batch_size": 2, "train_micro_batch_size_per_gpu": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5}}}"#;
    let (mut rng, seed) = Rng::new(8);
    let mut rng_b = Rng(rng.0);
    let (mut a, mut b) = (engine(cfg), engine(cfg));
    register(&mut a, &mut rng, &[("w", vec![300])]);
    register(&mut b, &mut rng_b, &[("w", vec![300])]);
    for _ in 0..3 {
        let g = rng.vec(300, 1.0);
        add_grad(&mut a, 0, &g);
        add_grad(&mut b, 0, &g);
        a.step().unwrap();
        b.step().unwrap();
    }
    let before = snapshot(&a, &["exp_avg", "exp_avg_sq"]);
    let grads_before = a.grad_f32_mut(0).unwrap().to_vec();
    let (micro, lr) = (a.micro_steps(), a.lr());
    let mut bad = Exec {
        backend: Backend::Kernel,
        ..Exec::default()
    };
    // A cache directory that cannot be created: the op cannot be built or loaded.
    bad.build.cache_dir = Some("/proc/dsrs-no-such-cache".into());
    a.set_exec(bad);
    assert!(a.step().is_err(), "seed {seed}");
    assert_eq!(snapshot(&a, &["exp_avg", "exp_avg_sq"]), before);
    assert_eq!(a.grad_f32_mut(0).unwrap().to_vec(), grads_before);
    assert_eq!((a.micro_steps(), a.lr()), (micro, lr));
    a.set_exec(Exec::default());
    let (ra, rb) = (a.step().unwrap(), b.step().unwrap());
    assert_eq!(ra, rb);
    assert_eq!(
        snapshot(&a, &["exp_avg", "exp_avg_sq"]),
        snapshot(&b, &["exp_avg", "exp_avg_sq"])
    );
}

/// csv_monitor writes DeepSpeed's files: `<output_path>/<job_name>/Train_Samples_<tag>.csv`,
/// a `step,<tag>` header, rows `<global_samples>,<value>` in Python's float format, CRLF.
#[test]
fn csv_monitor_files_as_deepspeed_writes_them() {
    let dir = std::env::temp_dir().join(format!("dsrs-csv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = format!(
        r#"{{"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2,
            "fp16": {{"enabled": true, "initial_scale_power": 4}},
            "optimizer": {{"type": "Adam", "params": {{"lr": 0.001}}}},
            "csv_monitor": {{"enabled": true, "output_path": "{}", "job_name": "job"}}}}"#,
        dir.display()
    );
    let mut e = engine(&cfg);
    let (mut rng, _) = Rng::new(9);
    register(&mut e, &mut rng, &[("w", vec![8])]);
    for k in 0..4 {
        e.report_loss(0.5 + k as f64);
        e.step().unwrap();
    }
    let read = |f: &str| std::fs::read_to_string(dir.join("job").join(f)).unwrap();
    assert_eq!(
        read("Train_Samples_train_loss.csv"),
        "step,train_loss\r\n4,1.0\r\n8,3.0\r\n"
    );
    assert_eq!(
        read("Train_Samples_lr.csv"),
        "step,lr\r\n4,0.001\r\n8,0.001\r\n"
    );
    assert_eq!(
        read("Train_Samples_loss_scale.csv"),
        "step,loss_scale\r\n4,16.0\r\n8,16.0\r\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not a test: times the engine's phases at 10M parameters (`cargo test --release --test
/// engine -- --ignored --nocapture phase_times`).
#[test]
#[ignore]
fn phase_times() {
    let cfg = r#"{"train_batch_size": 1, "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "weight_decay": 0.01}}}"#;
    let mut e = engine(cfg);
    let v = vec![0.01f32; 1_000_000];
    for i in 0..10 {
        e.register_param(&format!("p{i}"), &[1_000_000], ParamData::f32(&v), true)
            .unwrap();
    }
    e.finalize().unwrap();
    for _ in 0..30 {
        for i in 0..10 {
            e.grad_f32_mut(i).unwrap().fill(1e-3);
        }
        e.step().unwrap();
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&e.stats_json()["timers_ms"]).unwrap()
    );
}
