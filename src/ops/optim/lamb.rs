//! LAMB (DeepSpeed's `FusedLamb`): hyper-parameters and a pure-Rust reference of the step
//! the `fused_lamb` CUDA op takes ([`super::cuda::lamb_step`]).
//!
//! The semantics follow DeepSpeed's `deepspeed/ops/lamb/fused_lamb.py` and
//! `csrc/lamb/fused_lamb_cuda_kernel.cu`. For one tensor, with `g = grad * inv_grad_scale`:
//!
//! ```text
//! m = beta1 * m + (1 - beta1) * g
//! v = beta2 * v + ((1 - beta2) * g) * g
//! denom = eps_inside_sqrt ? sqrt(v + eps) : sqrt(v) + eps
//! u = m / denom                     (+ weight_decay * p when weight_decay > 0)
//! ratio = ||p|| / ||u||, clamped to [min_coeff, max_coeff]; 1 when either norm is 0
//! p = p - (step_size * ratio) * u
//! ```
//!
//! * The moments are *not* bias-corrected one by one: bias correction is folded into the
//!   step size, `step_size = lr * sqrt(1 - beta2^step) / (1 - beta1^step)` (`lr` without
//!   bias correction), as DeepSpeed does. `eps` is added to the raw `v` (inside the square
//!   root, `eps_inside_sqrt`, DeepSpeed's `eps_mode` 0) or to its square root (the default,
//!   `eps_mode` 1).
//! * Weight decay is L2 folded into the update direction before the norms, so it is scaled
//!   by the step size and the trust ratio too. DeepSpeed always adds `decay * p`; here it is
//!   added only when `weight_decay > 0` (the same numbers except for the sign of a zero and
//!   `0 * inf`).
//! * `||p||` is the norm of the parameters before the step. When either norm is 0 the ratio
//!   is exactly 1 and is not clamped; a NaN norm gives a NaN ratio. DeepSpeed's defaults are
//!   `max_coeff = 10`, `min_coeff = 0.01`.
//! * DeepSpeed divides the gradient by the loss scale; every implementation here multiplies
//!   by [`super::inv_grad_scale`], as the other optimizers do. DeepSpeed's global gradient
//!   clipping (`max_grad_norm`) belongs to the caller (fold it into `grad_scale`).
//!
//! The sums of squares are accumulated in f64 of exact f32 products: the reference in
//! element order, the kernel per thread, per block (a fixed tree) and per tensor (a fixed
//! tree over the blocks), so the kernel is deterministic run to run but its sums may differ
//! from the reference's in the last bits of the f64 (a relative difference below about
//! `n * 2^-53` for `n` elements). The ratio is then computed in f64 and rounded once to f32,
//! so it equals the reference's except, rarely, by 1 ulp of f32 (relative 2^-23), and the
//! parameters then differ by at most about that relative amount of the update (`|Δp|`) plus
//! one rounding of the parameter dtype. The moments never depend on the ratio and agree
//! bit for bit.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use super::{GradsRef, ParamsMut, check_dtypes, check_len, inv_grad_scale};
use crate::error::{Error, Result};

/// LAMB hyper-parameters for one step (DeepSpeed's `FusedLamb`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LambParams {
    /// Learning rate, finite and >= 0 (default 1e-3).
    pub lr: f32,
    /// In [0, 1) (default 0.9).
    pub beta1: f32,
    /// In [0, 1) (default 0.999).
    pub beta2: f32,
    /// Finite and > 0 (default 1e-8).
    pub eps: f32,
    /// L2 weight decay folded into the update direction, finite and >= 0 (default 0).
    pub weight_decay: f32,
    /// Fold `sqrt(1 - beta2^step) / (1 - beta1^step)` into the step size (default true).
    pub bias_correction: bool,
    /// The step being taken, 1-based.
    pub step: u64,
    /// Upper clamp of the trust ratio, finite and > 0 (default 10).
    pub max_coeff: f32,
    /// Lower clamp of the trust ratio, finite, >= 0 and <= `max_coeff` (default 0.01).
    pub min_coeff: f32,
    /// Add `eps` to `v` under the square root instead of to the square root (default false,
    /// DeepSpeed's `eps_inside_sqrt`).
    pub eps_inside_sqrt: bool,
    /// As [`super::AdamParams::grad_scale`].
    pub grad_scale: f32,
}

impl Default for LambParams {
    fn default() -> LambParams {
        LambParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            bias_correction: true,
            step: 1,
            max_coeff: 10.0,
            min_coeff: 0.01,
            eps_inside_sqrt: false,
            grad_scale: 1.0,
        }
    }
}

fn out_of_range(field: &str, value: impl std::fmt::Display, rule: &str) -> Error {
    Error::config(format!(
        "lamb: {field} = {value} is out of range: it must be {rule}"
    ))
}

impl LambParams {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        let w = "lamb";
        super::check_lr(w, self.lr)?;
        super::check_beta(w, "beta1", self.beta1, false)?;
        super::check_beta(w, "beta2", self.beta2, false)?;
        super::check_eps(w, self.eps)?;
        super::check_wd(w, self.weight_decay)?;
        if !(self.step >= 1 && self.step <= i64::MAX as u64) {
            return Err(out_of_range(
                "step",
                self.step,
                ">= 1 (steps are counted from 1)",
            ));
        }
        if !(self.max_coeff.is_finite() && self.max_coeff > 0.0) {
            return Err(out_of_range("max_coeff", self.max_coeff, "finite and > 0"));
        }
        if !(self.min_coeff.is_finite() && self.min_coeff >= 0.0) {
            return Err(out_of_range("min_coeff", self.min_coeff, "finite and >= 0"));
        }
        if self.min_coeff > self.max_coeff {
            return Err(out_of_range(
                "min_coeff",
                self.min_coeff,
                &format!("<= max_coeff ({})", self.max_coeff),
            ));
        }
        super::check_grad_scale(w, self.grad_scale)
    }

    /// The step size every implementation uses: in f64,
    /// `lr * sqrt(1 - beta2^step) / (1 - beta1^step)` with bias correction, else `lr`,
    /// rounded once to f32.
    pub fn step_size(&self) -> f32 {
        if !self.bias_correction {
            return self.lr;
        }
        let step = self.step as f64;
        let bc1 = 1.0 - f64::from(self.beta1).powf(step);
        let bc2 = 1.0 - f64::from(self.beta2).powf(step);
        (f64::from(self.lr) * bc2.sqrt() / bc1) as f32
    }

    /// The trust ratio from the sums of squares of the parameters and of the update
    /// direction, as every implementation computes it: in f64 `w = sqrt(sum_p2)`,
    /// `u = sqrt(sum_u2)`; 1 when either is 0, else `w / u` rounded to f32 and clamped to
    /// `[min_coeff, max_coeff]` (a NaN stays NaN).
    pub fn trust_ratio(&self, sum_p2: f64, sum_u2: f64) -> f32 {
        let w = sum_p2.sqrt();
        let u = sum_u2.sqrt();
        if w == 0.0 || u == 0.0 {
            return 1.0;
        }
        let mut r = (w / u) as f32;
        if r > self.max_coeff {
            r = self.max_coeff;
        }
        if r < self.min_coeff {
            r = self.min_coeff;
        }
        r
    }
}

/// The f32 constants of a step, derived once (the CUDA host code passes the same values).
struct Consts {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    use_weight_decay: bool,
    eps_inside_sqrt: bool,
    inv_grad_scale: f32,
}

impl Consts {
    fn new(p: &LambParams) -> Consts {
        Consts {
            beta1: p.beta1,
            one_minus_beta1: 1.0 - p.beta1,
            beta2: p.beta2,
            one_minus_beta2: 1.0 - p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            use_weight_decay: p.weight_decay > 0.0,
            eps_inside_sqrt: p.eps_inside_sqrt,
            inv_grad_scale: inv_grad_scale(p.grad_scale),
        }
    }

    /// The update direction of one element (the kernel's `dsrs_lamb_direction`).
    fn direction(&self, p: f32, m: f32, v: f32) -> f32 {
        let denom = if self.eps_inside_sqrt {
            (v + self.eps).sqrt()
        } else {
            v.sqrt() + self.eps
        };
        let mut u = m / denom;
        if self.use_weight_decay {
            u += self.weight_decay * p;
        }
        u
    }
}

fn params_as_f32(params: &ParamsMut<'_>) -> Vec<f32> {
    match params {
        ParamsMut::F32(s) => s.to_vec(),
        ParamsMut::F16(s) => s.iter().map(|x| x.to_f32()).collect(),
        ParamsMut::BF16(s) => s.iter().map(|x| x.to_f32()).collect(),
    }
}

fn grads_as_f32(grads: GradsRef<'_>) -> Vec<f32> {
    match grads {
        GradsRef::F32(s) => s.to_vec(),
        GradsRef::F16(s) => s.iter().map(|x| x.to_f32()).collect(),
        GradsRef::BF16(s) => s.iter().map(|x| x.to_f32()).collect(),
    }
}

/// One LAMB step over one tensor in pure Rust, with the same f32 operations in the same
/// order as the `fused_lamb` kernels (no fused multiply-add), the sums of squares in f64
/// (see the module docs for how far the kernel's trust ratio may differ). Returns the trust
/// ratio used. Parameters are fp32, fp16 or bf16 (stored rounded to nearest even), gradients
/// fp32 or the parameters' dtype (fp32 parameters also take fp16/bf16 gradients).
pub fn lamb_step_reference(
    p: &LambParams,
    mut params: ParamsMut<'_>,
    grads: GradsRef<'_>,
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
) -> Result<f32> {
    let what = "lamb";
    p.validate()?;
    check_dtypes(what, params.dtype(), grads.dtype(), None)?;
    let n = params.len();
    check_len(
        what,
        n,
        &[
            ("the gradients", grads.len()),
            ("exp_avg", exp_avg.len()),
            ("exp_avg_sq", exp_avg_sq.len()),
        ],
    )?;
    let c = Consts::new(p);
    let old = params_as_f32(&params);
    let g = grads_as_f32(grads);

    // Pass 1: moments, and the sums of squares of p and of the update direction.
    let (mut sum_p2, mut sum_u2) = (0.0f64, 0.0f64);
    for i in 0..n {
        let gi = g[i] * c.inv_grad_scale;
        let m = c.beta1 * exp_avg[i] + c.one_minus_beta1 * gi;
        let v = c.beta2 * exp_avg_sq[i] + (c.one_minus_beta2 * gi) * gi;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        let u = f64::from(c.direction(old[i], m, v));
        let pd = f64::from(old[i]);
        sum_p2 += pd * pd;
        sum_u2 += u * u;
    }
    let ratio = p.trust_ratio(sum_p2, sum_u2);
    let scale = p.step_size() * ratio;

    // Pass 2: the update, recomputed from the stored moments and the old parameters.
    let new = |i: usize| old[i] - scale * c.direction(old[i], exp_avg[i], exp_avg_sq[i]);
    match &mut params {
        ParamsMut::F32(s) => s.iter_mut().enumerate().for_each(|(i, x)| *x = new(i)),
        ParamsMut::F16(s) => s
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = f16::from_f32(new(i))),
        ParamsMut::BF16(s) => s
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = bf16::from_f32(new(i))),
    }
    Ok(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// An independent f64 LAMB step (the textbook formulas of DeepSpeed's kernel, evaluated
    /// in f64 from the f32 inputs): returns (p, m, v, ratio).
    #[allow(clippy::type_complexity)]
    fn lamb_f64(
        h: &LambParams,
        p: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, f64) {
        let (b1, b2) = (f64::from(h.beta1), f64::from(h.beta2));
        let eps = f64::from(h.eps);
        let wd = f64::from(h.weight_decay);
        let scale = 1.0 / f64::from(h.grad_scale);
        let m: Vec<f64> = (0..p.len())
            .map(|i| b1 * f64::from(m[i]) + (1.0 - b1) * f64::from(g[i]) * scale)
            .collect();
        let v: Vec<f64> = (0..p.len())
            .map(|i| {
                let gi = f64::from(g[i]) * scale;
                b2 * f64::from(v[i]) + (1.0 - b2) * gi * gi
            })
            .collect();
        let u: Vec<f64> = (0..p.len())
            .map(|i| {
                let denom = if h.eps_inside_sqrt {
                    (v[i] + eps).sqrt()
                } else {
                    v[i].sqrt() + eps
                };
                m[i] / denom + wd * f64::from(p[i])
            })
            .collect();
        let pn = p.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        let ratio = if pn == 0.0 || un == 0.0 {
            1.0
        } else {
            (pn / un).clamp(f64::from(h.min_coeff), f64::from(h.max_coeff))
        };
        let t = h.step as f64;
        let step_size = if h.bias_correction {
            f64::from(h.lr) * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t))
        } else {
            f64::from(h.lr)
        };
        let newp = (0..p.len())
            .map(|i| f64::from(p[i]) - step_size * ratio * u[i])
            .collect();
        (newp, m, v, ratio)
    }

    fn close(a: f32, b: f64, rel: f64, abs: f64) -> bool {
        (f64::from(a) - b).abs() <= rel * b.abs() + abs
    }

    #[test]
    fn reference_matches_an_independent_f64_formula() {
        let n = 4099;
        let cases = [
            LambParams::default(),
            LambParams {
                weight_decay: 0.01,
                step: 7,
                grad_scale: 1024.0,
                ..LambParams::default()
            },
            LambParams {
                eps_inside_sqrt: true,
                eps: 1e-6,
                bias_correction: false,
                lr: 0.01,
                step: 3,
                grad_scale: 3.0,
                ..LambParams::default()
            },
        ];
        for (k, h) in cases.iter().enumerate() {
            let p0 = random(n, 1 + k as u64, 1.0);
            let g = random(n, 100 + k as u64, 8.0);
            let m0 = random(n, 200 + k as u64, 0.1);
            let v0: Vec<f32> = random(n, 300 + k as u64, 0.1)
                .iter()
                .map(|x| x * x)
                .collect();
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            let ratio =
                lamb_step_reference(h, ParamsMut::F32(&mut p), GradsRef::F32(&g), &mut m, &mut v)
                    .unwrap();
            let (ep, em, ev, er) = lamb_f64(h, &p0, &g, &m0, &v0);
            assert!(
                close(ratio, er, 1e-5, 0.0),
                "case {k}: ratio {ratio} vs {er}"
            );
            let inv = 1.0 / f64::from(h.grad_scale);
            for i in 0..n {
                // Cancellation in m: the tolerance follows the size of its terms.
                let terms = f64::from(m0[i]).abs() + f64::from(g[i]).abs() * inv;
                assert!(close(m[i], em[i], 1e-6, 1e-6 * terms), "case {k} m[{i}]");
                assert!(close(v[i], ev[i], 1e-6, 0.0), "case {k} v[{i}]");
                // The update is small against p: compare the change with a tolerance
                // relative to the update, plus one rounding of p.
                let delta = (ep[i] - f64::from(p0[i])).abs();
                assert!(
                    close(p[i], ep[i], 2e-7, 1e-4 * delta + 1e-12),
                    "case {k} p[{i}]: {} vs {}",
                    p[i],
                    ep[i]
                );
            }
        }
    }

    #[test]
    fn the_trust_ratio_is_clamped_and_is_one_for_a_zero_norm() {
        let h = LambParams::default();
        // Zero parameters: ||p|| = 0, ratio 1 (not clamped).
        let n = 64;
        let g = random(n, 5, 1.0);
        let (mut p, mut m, mut v) = (vec![0.0f32; n], vec![0.0; n], vec![0.0; n]);
        let r = lamb_step_reference(
            &h,
            ParamsMut::F32(&mut p),
            GradsRef::F32(&g),
            &mut m,
            &mut v,
        )
        .unwrap();
        assert_eq!(r, 1.0);
        // Step 1 with zero moments: |u| is about 1 per element, so ||u|| ~ sqrt(n); huge
        // parameters give a ratio far above max_coeff, tiny ones far below min_coeff.
        for (scale, want) in [(1e4f32, h.max_coeff), (1e-6, h.min_coeff)] {
            let mut p: Vec<f32> = random(n, 6, scale);
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            let r = lamb_step_reference(
                &h,
                ParamsMut::F32(&mut p),
                GradsRef::F32(&g),
                &mut m,
                &mut v,
            )
            .unwrap();
            assert_eq!(r, want, "scale {scale}");
        }
        // Zero gradients and zero moments: ||u|| = 0, ratio 1 and p unchanged.
        let p0 = random(n, 7, 1.0);
        let mut p = p0.clone();
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let r = lamb_step_reference(
            &h,
            ParamsMut::F32(&mut p),
            GradsRef::F32(&vec![0.0; n]),
            &mut m,
            &mut v,
        )
        .unwrap();
        assert_eq!(r, 1.0);
        assert_eq!(p, p0);
        assert_eq!(h.trust_ratio(4.0, 1.0), 2.0);
        assert!(h.trust_ratio(f64::NAN, 1.0).is_nan());
    }

    #[test]
    fn low_precision_parameters_are_the_f32_step_rounded() {
        let n = 1001;
        let h = LambParams {
            weight_decay: 0.05,
            ..LambParams::default()
        };
        let p32: Vec<f32> = random(n, 11, 1.0);
        let g = random(n, 12, 1.0);
        for dtype in ["f16", "bf16"] {
            // The low-precision values, widened, are the f32 inputs of the same step.
            let widened: Vec<f32> = match dtype {
                "f16" => p32.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
                _ => p32.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
            };
            let mut pf = widened.clone();
            let (mut m1, mut v1) = (vec![0.0; n], vec![0.0; n]);
            let r1 = lamb_step_reference(
                &h,
                ParamsMut::F32(&mut pf),
                GradsRef::F32(&g),
                &mut m1,
                &mut v1,
            )
            .unwrap();
            let (mut m2, mut v2) = (vec![0.0; n], vec![0.0; n]);
            let r2 = match dtype {
                "f16" => {
                    let mut ph: Vec<f16> = widened.iter().map(|&x| f16::from_f32(x)).collect();
                    let gh: Vec<f16> = g.iter().map(|&x| f16::from_f32(x)).collect();
                    let gw: Vec<f32> = gh.iter().map(|x| x.to_f32()).collect();
                    // fp16 gradients are widened exactly: the same as passing them widened.
                    let mut pf2 = widened.clone();
                    let (mut m3, mut v3) = (vec![0.0; n], vec![0.0; n]);
                    lamb_step_reference(
                        &h,
                        ParamsMut::F32(&mut pf2),
                        GradsRef::F32(&gw),
                        &mut m3,
                        &mut v3,
                    )
                    .unwrap();
                    lamb_step_reference(
                        &h,
                        ParamsMut::F16(&mut ph),
                        GradsRef::F16(&gh),
                        &mut m2,
                        &mut v2,
                    )
                    .unwrap();
                    for i in 0..n {
                        assert_eq!(ph[i], f16::from_f32(pf2[i]), "{dtype} p[{i}]");
                    }
                    assert_eq!((m2.clone(), v2.clone()), (m3, v3));
                    // And fp32 gradients with fp16 parameters.
                    let (mut m4, mut v4) = (vec![0.0; n], vec![0.0; n]);
                    let mut ph2: Vec<f16> = widened.iter().map(|&x| f16::from_f32(x)).collect();
                    let r4 = lamb_step_reference(
                        &h,
                        ParamsMut::F16(&mut ph2),
                        GradsRef::F32(&g),
                        &mut m4,
                        &mut v4,
                    )
                    .unwrap();
                    assert_eq!(r4, r1);
                    assert_eq!((m4, v4), (m1.clone(), v1.clone()));
                    for i in 0..n {
                        assert_eq!(ph2[i], f16::from_f32(pf[i]), "{dtype} p[{i}]");
                    }
                    r4
                }
                _ => {
                    let mut pb: Vec<bf16> = widened.iter().map(|&x| bf16::from_f32(x)).collect();
                    let r = lamb_step_reference(
                        &h,
                        ParamsMut::BF16(&mut pb),
                        GradsRef::F32(&g),
                        &mut m2,
                        &mut v2,
                    )
                    .unwrap();
                    assert_eq!((m2.clone(), v2.clone()), (m1.clone(), v1.clone()));
                    for i in 0..n {
                        assert_eq!(pb[i], bf16::from_f32(pf[i]), "{dtype} p[{i}]");
                    }
                    r
                }
            };
            assert_eq!(r1, r2, "{dtype}");
        }
    }

    #[test]
    fn bad_fields_and_shapes_are_named() {
        let ok = LambParams::default();
        ok.validate().unwrap();
        let bad = [
            (LambParams { lr: -1.0, ..ok }, "lr"),
            (LambParams { beta1: 1.0, ..ok }, "beta1"),
            (
                LambParams {
                    beta2: f32::NAN,
                    ..ok
                },
                "beta2",
            ),
            (LambParams { eps: 0.0, ..ok }, "eps"),
            (
                LambParams {
                    weight_decay: -0.1,
                    ..ok
                },
                "weight_decay",
            ),
            (LambParams { step: 0, ..ok }, "step"),
            (
                LambParams {
                    max_coeff: 0.0,
                    ..ok
                },
                "max_coeff",
            ),
            (
                LambParams {
                    min_coeff: -1.0,
                    ..ok
                },
                "min_coeff",
            ),
            (
                LambParams {
                    min_coeff: 20.0,
                    ..ok
                },
                "min_coeff = 20",
            ),
            (
                LambParams {
                    grad_scale: 0.0,
                    ..ok
                },
                "grad_scale",
            ),
        ];
        for (p, field) in bad {
            let e = p.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
        let (mut p, g, mut m, mut v) =
            (vec![0.0f32; 4], vec![0.0f32; 3], vec![0.0; 4], vec![0.0; 4]);
        let e = lamb_step_reference(
            &ok,
            ParamsMut::F32(&mut p),
            GradsRef::F32(&g),
            &mut m,
            &mut v,
        )
        .unwrap_err();
        assert!(e.to_string().contains("gradients"), "{e}");
        let mut ph = vec![f16::ZERO; 4];
        let gb = vec![bf16::ZERO; 4];
        let e = lamb_step_reference(
            &ok,
            ParamsMut::F16(&mut ph),
            GradsRef::BF16(&gb),
            &mut m,
            &mut v,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    }

    #[test]
    fn step_size_folds_the_bias_corrections() {
        let h = LambParams {
            lr: 0.5,
            step: 2,
            ..LambParams::default()
        };
        let (b1, b2) = (f64::from(0.9f32), f64::from(0.999f32));
        let want = 0.5 * (1.0 - b2 * b2).sqrt() / (1.0 - b1 * b1);
        assert_eq!(h.step_size(), want as f32);
        let off = LambParams {
            bias_correction: false,
            ..h
        };
        assert_eq!(off.step_size(), 0.5);
    }
}
