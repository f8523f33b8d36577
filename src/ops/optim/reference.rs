//! The pure-Rust reference of each CPU optimizer: the same float operations, in the same
//! order, as the kernels (`docs/optimizers.md`), one element at a time. It is the fallback
//! when an op cannot be built (no C++ compiler) and the reference the kernels are tested
//! against, bit for bit. Nothing here uses fused multiply-add: Rust never contracts `a * b
//! + c` on its own.

// `x = x + y` spelled out: the code mirrors the kernels' formulas term by term.
#![allow(clippy::assign_op_pattern)]

use half::{bf16, f16};

use super::{
    AdagradParams, AdamParams, CopyMut, GradsRef, LionParams, ParamsMut, check_dtypes, check_len,
    inv_grad_scale,
};
use crate::error::Result;

/// An element type the optimizers load as f32 and store rounded to nearest even.
pub trait Elem: Copy {
    /// Widens to f32 (exact).
    fn load(self) -> f32;
    /// Rounds an f32 to this type (nearest, ties to even; NaN stays NaN).
    fn store(x: f32) -> Self;
}

impl Elem for f32 {
    #[inline]
    fn load(self) -> f32 {
        self
    }
    #[inline]
    fn store(x: f32) -> f32 {
        x
    }
}

impl Elem for f16 {
    #[inline]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn store(x: f32) -> f16 {
        f16::from_f32(x)
    }
}

impl Elem for bf16 {
    #[inline]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn store(x: f32) -> bf16 {
        bf16::from_f32(x)
    }
}

/// Where the updated parameter goes besides the parameters themselves.
trait CopyOut {
    fn put(&mut self, i: usize, p: f32);
}

struct NoCopy;

impl CopyOut for NoCopy {
    #[inline]
    fn put(&mut self, _: usize, _: f32) {}
}

impl<T: Elem> CopyOut for &mut [T] {
    #[inline]
    fn put(&mut self, i: usize, p: f32) {
        self[i] = T::store(p);
    }
}

/// Runs `body(i, p, g) -> new p` over every element, for every dtype combination.
fn each<F>(params: ParamsMut<'_>, grads: GradsRef<'_>, copy: Option<CopyMut<'_>>, body: F)
where
    F: FnMut(usize, f32, f32) -> f32,
{
    fn inner<P: Elem, G: Elem, C: CopyOut, F: FnMut(usize, f32, f32) -> f32>(
        p: &mut [P],
        g: &[G],
        mut c: C,
        mut body: F,
    ) {
        for (i, (pi, gi)) in p.iter_mut().zip(g).enumerate() {
            let np = body(i, pi.load(), gi.load());
            *pi = P::store(np);
            c.put(i, np);
        }
    }
    fn with_grads<P: Elem, C: CopyOut, F: FnMut(usize, f32, f32) -> f32>(
        p: &mut [P],
        g: GradsRef<'_>,
        c: C,
        body: F,
    ) {
        match g {
            GradsRef::F32(g) => inner(p, g, c, body),
            GradsRef::F16(g) => inner(p, g, c, body),
            GradsRef::BF16(g) => inner(p, g, c, body),
        }
    }
    fn with_copy<P: Elem, F: FnMut(usize, f32, f32) -> f32>(
        p: &mut [P],
        g: GradsRef<'_>,
        c: Option<CopyMut<'_>>,
        body: F,
    ) {
        match c {
            None => with_grads(p, g, NoCopy, body),
            Some(CopyMut::F16(c)) => with_grads(p, g, c, body),
            Some(CopyMut::BF16(c)) => with_grads(p, g, c, body),
        }
    }
    match params {
        ParamsMut::F32(p) => with_copy(p, grads, copy, body),
        ParamsMut::F16(p) => with_copy(p, grads, copy, body),
        ParamsMut::BF16(p) => with_copy(p, grads, copy, body),
    }
}

fn check_common(
    what: &str,
    params: &ParamsMut<'_>,
    grads: &GradsRef<'_>,
    copy: &Option<CopyMut<'_>>,
    states: &[(&str, usize)],
) -> Result<()> {
    check_dtypes(
        what,
        params.dtype(),
        grads.dtype(),
        copy.as_ref().map(|c| c.dtype()),
    )?;
    let n = params.len();
    check_len(what, n, &[("grads", grads.len())])?;
    check_len(what, n, states)?;
    if let Some(c) = copy {
        check_len(what, n, &[("param_copy", c.len())])?;
    }
    Ok(())
}

/// One Adam/AdamW step (DeepSpeed's CPU Adam), per element:
///
/// ```text
/// g = grad * inv_grad_scale
/// if weight_decay > 0 && !adamw_mode:  g = g + weight_decay * p
/// m = beta1 * m + (1 - beta1) * g
/// v = beta2 * v + ((1 - beta2) * g) * g
/// denom = sqrt(v) * bc2 + eps
/// if weight_decay > 0 && adamw_mode:   p = p + (-lr * weight_decay) * p
/// p = p + (-lr / bc1) * (m / denom)
/// ```
/// with `(bc1, bc2)` from [`AdamParams::bias_corrections`].
pub fn adam_step(
    hp: &AdamParams,
    params: ParamsMut<'_>,
    grads: GradsRef<'_>,
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    copy: Option<CopyMut<'_>>,
) -> Result<()> {
    hp.validate()?;
    check_common(
        "adam",
        &params,
        &grads,
        &copy,
        &[("exp_avg", exp_avg.len()), ("exp_avg_sq", exp_avg_sq.len())],
    )?;
    let (bc1, bc2) = hp.bias_corrections();
    let inv = inv_grad_scale(hp.grad_scale);
    let b1 = hp.beta1;
    let b2 = hp.beta2;
    let omb1 = 1.0f32 - b1;
    let omb2 = 1.0f32 - b2;
    let step_size = -hp.lr / bc1;
    let wd = hp.weight_decay;
    let l2 = wd > 0.0 && !hp.adamw_mode;
    let decoupled = wd > 0.0 && hp.adamw_mode;
    let decay = -hp.lr * wd;
    let eps = hp.eps;
    each(params, grads, copy, |i, mut p, g| {
        let mut g = g * inv;
        if l2 {
            g = g + wd * p;
        }
        let m = b1 * exp_avg[i] + omb1 * g;
        let v = b2 * exp_avg_sq[i] + (omb2 * g) * g;
        let denom = v.sqrt() * bc2 + eps;
        if decoupled {
            p = p + decay * p;
        }
        p = p + step_size * (m / denom);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        p
    });
    Ok(())
}

/// One Adagrad step (DeepSpeed's CPU Adagrad), per element:
///
/// ```text
/// g0 = grad * inv_grad_scale
/// g  = weight_decay > 0 ? g0 + weight_decay * p : g0
/// v  = v + g * g
/// p  = p + (-lr) * (g0 / (sqrt(v) + eps))
/// ```
/// As in DeepSpeed, the weight-decayed gradient feeds the accumulator and the raw gradient
/// the step (torch's Adagrad uses the decayed gradient in both).
pub fn adagrad_step(
    hp: &AdagradParams,
    params: ParamsMut<'_>,
    grads: GradsRef<'_>,
    exp_avg_sq: &mut [f32],
    copy: Option<CopyMut<'_>>,
) -> Result<()> {
    hp.validate()?;
    check_common(
        "adagrad",
        &params,
        &grads,
        &copy,
        &[("exp_avg_sq", exp_avg_sq.len())],
    )?;
    let inv = inv_grad_scale(hp.grad_scale);
    let wd = hp.weight_decay;
    let neg_lr = -hp.lr;
    let eps = hp.eps;
    each(params, grads, copy, |i, p, g| {
        let g0 = g * inv;
        let g = if wd > 0.0 { g0 + wd * p } else { g0 };
        let v = exp_avg_sq[i] + g * g;
        exp_avg_sq[i] = v;
        p + neg_lr * (g0 / (v.sqrt() + eps))
    });
    Ok(())
}

/// One Lion step (DeepSpeed's CPU Lion), per element:
///
/// ```text
/// g = grad * inv_grad_scale
/// c = beta1 * m + (1 - beta1) * g
/// u = copysign(lr, c)                       (a zero c steps by -lr or +lr with its sign)
/// p = weight_decay > 0 ? p * (1 - lr * weight_decay) - u : p - u
/// m = beta2 * m + (1 - beta2) * g
/// ```
pub fn lion_step(
    hp: &LionParams,
    params: ParamsMut<'_>,
    grads: GradsRef<'_>,
    exp_avg: &mut [f32],
    copy: Option<CopyMut<'_>>,
) -> Result<()> {
    hp.validate()?;
    check_common(
        "lion",
        &params,
        &grads,
        &copy,
        &[("exp_avg", exp_avg.len())],
    )?;
    let inv = inv_grad_scale(hp.grad_scale);
    let b1 = hp.beta1;
    let b2 = hp.beta2;
    let omb1 = 1.0f32 - b1;
    let omb2 = 1.0f32 - b2;
    let lr = hp.lr;
    let wd = hp.weight_decay;
    let after_decay = 1.0f32 - lr * wd;
    each(params, grads, copy, |i, p, g| {
        let g = g * inv;
        let m = exp_avg[i];
        let c = b1 * m + omb1 * g;
        let u = lr.copysign(c);
        let p = if wd > 0.0 { p * after_decay - u } else { p - u };
        exp_avg[i] = b2 * m + omb2 * g;
        p
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A float64 Adam written from the formula (not from the code above).
    fn adam64(hp: &AdamParams, p: f64, g: f64, m: f64, v: f64) -> (f64, f64, f64) {
        let g = g / f64::from(hp.grad_scale);
        let wd = f64::from(hp.weight_decay);
        let g = if hp.adamw_mode { g } else { g + wd * p };
        let m = f64::from(hp.beta1) * m + (1.0 - f64::from(hp.beta1)) * g;
        let v = f64::from(hp.beta2) * v + (1.0 - f64::from(hp.beta2)) * g * g;
        let t = hp.step as f64;
        let (c1, c2) = if hp.bias_correction {
            (
                1.0 - f64::from(hp.beta1).powf(t),
                1.0 - f64::from(hp.beta2).powf(t),
            )
        } else {
            (1.0, 1.0)
        };
        let mut p = p;
        if hp.adamw_mode {
            p -= f64::from(hp.lr) * wd * p;
        }
        p -= f64::from(hp.lr) / c1 * m / (v.sqrt() / c2.sqrt() + f64::from(hp.eps));
        (p, m, v)
    }

    #[test]
    fn adam_one_step_matches_float64() {
        for adamw in [false, true] {
            let hp = AdamParams {
                weight_decay: 0.1,
                adamw_mode: adamw,
                grad_scale: 3.0,
                step: 2,
                ..AdamParams::default()
            };
            let mut p = [0.5f32, -1.25];
            let g = [0.3f32, -2.0];
            let mut m = [0.01f32, 0.2];
            let mut v = [0.001f32, 0.03];
            let want: Vec<_> = (0..2)
                .map(|i| adam64(&hp, p[i].into(), g[i].into(), m[i].into(), v[i].into()))
                .collect();
            adam_step(
                &hp,
                ParamsMut::F32(&mut p),
                GradsRef::F32(&g),
                &mut m,
                &mut v,
                None,
            )
            .unwrap();
            for i in 0..2 {
                let rel = |a: f32, b: f64| ((f64::from(a) - b) / b).abs();
                assert!(
                    rel(p[i], want[i].0) < 1e-6,
                    "p[{i}] {} vs {}",
                    p[i],
                    want[i].0
                );
                assert!(rel(m[i], want[i].1) < 1e-6, "m[{i}]");
                assert!(rel(v[i], want[i].2) < 1e-6, "v[{i}]");
            }
        }
    }

    #[test]
    fn lion_steps_by_lr_with_the_sign() {
        let hp = LionParams {
            lr: 0.25,
            ..LionParams::default()
        };
        let mut p = [1.0f32, 1.0, 1.0];
        let g = [2.0f32, -3.0, 0.0];
        let mut m = [0.0f32, 0.0, 0.0];
        lion_step(&hp, ParamsMut::F32(&mut p), GradsRef::F32(&g), &mut m, None).unwrap();
        assert_eq!(p, [0.75, 1.25, 0.75]);
        assert_eq!(m[0], (1.0 - 0.99f32) * 2.0);
    }

    #[test]
    fn adagrad_uses_the_raw_gradient_in_the_step() {
        let hp = AdagradParams {
            lr: 0.5,
            eps: 1e-10,
            weight_decay: 1.0,
            grad_scale: 1.0,
        };
        let mut p = [2.0f32];
        let g = [1.0f32];
        let mut v = [0.0f32];
        adagrad_step(&hp, ParamsMut::F32(&mut p), GradsRef::F32(&g), &mut v, None).unwrap();
        // decayed gradient 3 feeds v = 9; the step is 0.5 * 1 / 3
        assert_eq!(v[0], 9.0);
        assert!((p[0] - (2.0 - 0.5 / 3.0)).abs() < 1e-6);
    }

    #[test]
    fn mismatched_lengths_and_dtypes_are_refused() {
        let hp = AdamParams::default();
        let mut p = [0.0f32; 3];
        let g = [0.0f32; 2];
        let (mut m, mut v) = ([0.0f32; 3], [0.0f32; 3]);
        let e = adam_step(
            &hp,
            ParamsMut::F32(&mut p),
            GradsRef::F32(&g),
            &mut m,
            &mut v,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("grads has 2 elements"), "{e}");
        let mut ph = [f16::ZERO; 3];
        let gb = [bf16::ZERO; 3];
        let e = adam_step(
            &hp,
            ParamsMut::F16(&mut ph),
            GradsRef::BF16(&gb),
            &mut m,
            &mut v,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("bfloat16 gradients with float16 parameters"),
            "{e}"
        );
        let bad = AdamParams { beta2: 1.0, ..hp };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("beta2 = 1"), "{e}");
    }
}
