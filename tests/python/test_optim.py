"""Optimizer steps through the binding (deepspeed_rs.optim: adam_step, adagrad_step,
lion_step, lamb_step) on numpy arrays.

Two kinds of reference:

* numpy float32 implementations with the library's exact operation order
  (src/ops/optim/reference.rs, lamb.rs). numpy's float32 ufuncs round every operation
  correctly and never fuse a multiply-add, so the library's results must equal them bit
  for bit, with both the kernel and the pure-Rust reference backend. Stores to fp16 are
  numpy's round-to-nearest-even; to bf16 the same rounding on the bits (``to_bf16``).
  LAMB's sums of squares are float64 sums in element order: ``np.cumsum`` (sequential,
  unlike ``np.sum``'s pairwise sums) of exact float64 products.
* numpy float64 implementations of the textbook formulas, one step at a time from the
  float32 state. Tolerance: twice a first-order bound of the float32 path's rounding
  errors, u = 2^-24 of the magnitude of every rounded term (see ``adam64``): a few ulp of
  the largest term, with the cancellation in ``m = beta1 * m + (1 - beta1) * g`` accounted
  for through the magnitudes of its terms rather than of its result.

The op cache (the kernels are JIT-built on first use) is a private directory of this
module (DSRS_CACHE_DIR).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import bits_ref
import deepspeed_rs as ds
from bits_ref import from_bf16, raises, to_bf16
from deepspeed_rs import errors

U = 2.0 ** -24
F = np.float32
LENGTHS = (1, 7, 1023, 100003)


# The ops are JIT-built into a cache private to this module (conftest.py).
pytestmark = pytest.mark.usefixtures("private_op_cache")


# --------------------------------------------------------------------------------------
# dtypes: bf16 as uint16 bits.


def load(a: np.ndarray, kind: str) -> np.ndarray:
    """The float32 values of an array of `kind` ("fp32", "fp16", "bf16")."""
    return from_bf16(a) if kind == "bf16" else a.astype(np.float32)


def store(x: np.ndarray, kind: str) -> np.ndarray:
    return {"fp32": lambda: x.astype(np.float32), "fp16": lambda: x.astype(np.float16),
            "bf16": lambda: to_bf16(x)}[kind]()


def make(values: np.ndarray, kind: str) -> np.ndarray:
    """An array of `kind` holding `values` rounded."""
    return store(values.astype(np.float32), kind)


def arg(a: np.ndarray, kind: str):
    """The binding's argument for an array of `kind` (bf16: the (bits, "bfloat16") pair)."""
    return (a, "bfloat16") if kind == "bf16" else a


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """The same dtype and shape, bit for bit."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    bits_ref.assert_same_bits(got, want, what)


class State:
    """One parameter: params/grads of some dtypes, fp32 states, an optional copy."""

    def __init__(self, rng, n, pkind="fp32", gkind="fp32", m=True, v=True, copy=None):
        self.n, self.pkind, self.gkind, self.ckind = n, pkind, gkind, copy
        self.p = make(rng.uniform(-1, 1, n), pkind)
        self.g = make(np.zeros(n), gkind)
        self.m = (0.1 * rng.uniform(-1, 1, n)).astype(np.float32) if m else None
        self.v = (0.01 * rng.uniform(0, 1, n)).astype(np.float32) if v else None
        self.c = make(np.full(n, -7.0), copy) if copy else None

    def grads(self, rng, scale):
        self.g[...] = make(scale * rng.uniform(-1, 1, self.n), self.gkind)

    def clone(self) -> "State":
        c = object.__new__(State)
        c.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v)
                           for k, v in self.__dict__.items()})
        return c

    def args(self):
        return (arg(self.p, self.pkind), arg(self.g, self.gkind),
                None if self.c is None else arg(self.c, self.ckind))

    def assert_same(self, other: "State", what: str) -> None:
        for name in ("p", "m", "v", "c"):
            a, b = getattr(self, name), getattr(other, name)
            if a is not None:
                assert_same_bits(a, b, f"{what}: {name}")


# --------------------------------------------------------------------------------------
# float32 references (the library's operation order) and float64 references.


def inv_scale(gs) -> np.float32:
    return F(1.0 / float(F(gs)))


def adam_bias(beta1, beta2, step, bias_correction):
    if not bias_correction:
        return F(1), F(1)
    b1, b2 = float(F(beta1)), float(F(beta2))
    return F(1.0 - math.pow(b1, step)), F(1.0 / math.sqrt(1.0 - math.pow(b2, step)))


def adam32(s: State, *, lr, betas, eps, weight_decay, adamw_mode, bias_correction, step,
           grad_scale):
    b1, b2 = F(betas[0]), F(betas[1])
    bc1, bc2 = adam_bias(b1, b2, step, bias_correction)
    lr, wd, eps = F(lr), F(weight_decay), F(eps)
    p, g = load(s.p, s.pkind), load(s.g, s.gkind) * inv_scale(grad_scale)
    if wd > 0 and not adamw_mode:
        g = g + wd * p
    m = b1 * s.m + (F(1) - b1) * g
    v = b2 * s.v + ((F(1) - b2) * g) * g
    denom = np.sqrt(v) * bc2 + eps
    if wd > 0 and adamw_mode:
        p = p + (-lr * wd) * p
    p = p + (-lr / bc1) * (m / denom)
    s.m[...], s.v[...] = m, v
    s.p[...] = store(p, s.pkind)
    if s.c is not None:
        s.c[...] = store(p, s.ckind)


def adagrad32(s: State, *, lr, eps, weight_decay, grad_scale):
    lr, eps, wd = F(lr), F(eps), F(weight_decay)
    p = load(s.p, s.pkind)
    g0 = load(s.g, s.gkind) * inv_scale(grad_scale)
    g = g0 + wd * p if wd > 0 else g0
    v = s.v + g * g
    p = p + (-lr) * (g0 / (np.sqrt(v) + eps))
    s.v[...] = v
    s.p[...] = store(p, s.pkind)
    if s.c is not None:
        s.c[...] = store(p, s.ckind)


def lion32(s: State, *, lr, betas, weight_decay, grad_scale):
    lr, wd, b1, b2 = F(lr), F(weight_decay), F(betas[0]), F(betas[1])
    p = load(s.p, s.pkind)
    g = load(s.g, s.gkind) * inv_scale(grad_scale)
    c = b1 * s.m + (F(1) - b1) * g
    u = np.copysign(lr, c).astype(np.float32)
    p = p * (F(1) - lr * wd) - u if wd > 0 else p - u
    s.m[...] = b2 * s.m + (F(1) - b2) * g
    s.p[...] = store(p, s.pkind)
    if s.c is not None:
        s.c[...] = store(p, s.ckind)


def lamb_direction(p, m, v, eps, wd, inside):
    denom = np.sqrt(v + eps) if inside else np.sqrt(v) + eps
    u = m / denom
    return u + wd * p if wd > 0 else u


def lamb32(s: State, *, lr, betas, eps, weight_decay, bias_correction, step, max_coeff,
           min_coeff, eps_inside_sqrt, grad_scale):
    b1, b2, eps, wd = F(betas[0]), F(betas[1]), F(eps), F(weight_decay)
    old = load(s.p, s.pkind)
    g = load(s.g, s.gkind) * inv_scale(grad_scale)
    m = b1 * s.m + (F(1) - b1) * g
    v = b2 * s.v + ((F(1) - b2) * g) * g
    u = lamb_direction(old, m, v, eps, wd, eps_inside_sqrt)
    # float64 sums of exact products, in element order (cumsum is sequential).
    sp = float(np.cumsum(old.astype(np.float64) ** 2)[-1]) if s.n else 0.0
    su = float(np.cumsum(u.astype(np.float64) ** 2)[-1]) if s.n else 0.0
    ratio = F(1)
    if math.sqrt(sp) != 0 and math.sqrt(su) != 0:
        ratio = F(math.sqrt(sp) / math.sqrt(su))
        ratio = min(ratio, F(max_coeff))
        ratio = max(ratio, F(min_coeff))
    step_size = F(lr)
    if bias_correction:
        bb1, bb2 = float(F(betas[0])), float(F(betas[1]))
        bc1, bc2 = 1.0 - math.pow(bb1, step), 1.0 - math.pow(bb2, step)
        step_size = F(float(F(lr)) * math.sqrt(bc2) / bc1)
    scale = F(step_size * ratio)
    p = old - scale * lamb_direction(old, m, v, eps, wd, eps_inside_sqrt)
    s.m[...], s.v[...] = m, v
    s.p[...] = store(p, s.pkind)


def adam64(s: State, *, lr, betas, eps, weight_decay, adamw_mode, bias_correction, step,
           grad_scale):
    """(p, m, v, bound_p, bound_m, bound_v) of a float64 Adam step from the float32 state
    of `s`, the bounds first-order estimates of the float32 path's rounding errors: every
    rounded operation contributes u times the magnitude of its result (sums: of their
    terms), propagated through the later operations."""
    b1, b2 = float(F(betas[0])), float(F(betas[1]))
    lr, wd, eps, gs = float(F(lr)), float(F(weight_decay)), float(F(eps)), float(F(grad_scale))
    p = load(s.p, s.pkind).astype(np.float64)
    g = load(s.g, s.gkind).astype(np.float64) / gs
    eg = (2 * U if gs != 1 else 0.0) * np.abs(g)
    if wd > 0 and not adamw_mode:
        t = wd * p
        eg = eg + 3 * U * (np.abs(g) + np.abs(t))
        g = g + t
    m0, v0 = s.m.astype(np.float64), s.v.astype(np.float64)
    m = b1 * m0 + (1 - b1) * g
    em = (1 - b1) * eg + 3 * U * (np.abs(b1 * m0) + np.abs((1 - b1) * g))
    v = b2 * v0 + (1 - b2) * g * g
    ev = (1 - b2) * 2 * np.abs(g) * eg + 4 * U * v
    bc1 = 1 - b1 ** step if bias_correction else 1.0
    bc2 = 1 / math.sqrt(1 - b2 ** step) if bias_correction else 1.0
    denom = np.sqrt(v) * bc2 + eps
    upd = lr / bc1 * (m / denom)
    rel = np.divide(ev, 2 * v, out=np.zeros_like(v), where=v > 0) + 8 * U
    eupd = lr / bc1 * em / denom + np.abs(upd) * rel
    ep = np.zeros_like(p)
    if wd > 0 and adamw_mode:
        t = lr * wd * p
        p = p - t
        ep = 2 * U * np.abs(t) + U * np.abs(p)
    p = p - upd
    ep = ep + eupd + U * np.abs(p)
    return p, m, v, ep, em, ev


def assert_within(got: np.ndarray, want: np.ndarray, bound: np.ndarray, what: str) -> float:
    """|got - want| <= 2 * bound everywhere; returns the largest |got - want| / (2 bound)."""
    err = np.abs(got.astype(np.float64) - want)
    tol = 2 * bound + 1e-37
    ratio = err / tol
    i = int(np.argmax(ratio)) if ratio.size else 0
    assert not ratio.size or ratio[i] <= 1, (
        f"{what}: [{i}] {got.flat[i]!r} vs {want.flat[i]!r}, error {err.flat[i]:.3g} > "
        f"2 * bound {bound.flat[i]:.3g}")
    return float(ratio.max()) if ratio.size else 0.0


# --------------------------------------------------------------------------------------
# Adam.


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("adamw_mode", [True, False])
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("grad_scale", [1.0, 3.0])
def test_adam_fp32_matches_float32_bits_and_float64(rng, n, adamw_mode, bias_correction,
                                                     grad_scale):
    hp = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
              adamw_mode=adamw_mode, bias_correction=bias_correction, grad_scale=grad_scale)
    k = State(rng, n)
    r, f = k.clone(), k.clone()
    worst = 0.0
    for step in range(1, 6):
        k.grads(rng, grad_scale)
        r.g[...] = f.g[...] = k.g
        before = k.clone()
        ds.adam_step(k.p, k.g, k.m, k.v, step=step, backend="kernel", **hp)
        ds.adam_step(r.p, r.g, r.m, r.v, step=step, backend="reference", **hp)
        adam32(f, step=step, **hp)
        k.assert_same(f, f"step {step}, kernel")
        r.assert_same(f, f"step {step}, reference backend")
        p, m, v, ep, em, ev = adam64(before, step=step, **hp)
        worst = max(worst, assert_within(k.p, p, ep, f"step {step} p"),
                    assert_within(k.m, m, em, f"step {step} m"),
                    assert_within(k.v, v, ev, f"step {step} v"))
    print(f"max |float32 - float64| / (2 * bound) = {worst:.3f}")


def test_adam_defaults_auto_backend_and_threads(rng):
    """The signature's defaults are DeepSpeed's; "auto" runs the kernel; num_threads does
    not change the bits."""
    s = State(rng, 4099)
    s.grads(rng, 1.0)
    outs = []
    for backend, threads in (("auto", 0), ("kernel", 1), ("KERNEL", 3), (1, 2)):
        c = s.clone()
        ds.adam_step(c.p, c.g, c.m, c.v, step=3, backend=backend, num_threads=threads)
        outs.append(c)
    f = s.clone()
    adam32(f, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, adamw_mode=True,
           bias_correction=True, step=3, grad_scale=1.0)
    for c in outs:
        c.assert_same(f, "defaults")


MIXED = [
    ("bf16", "fp32", None), ("bf16", "bf16", None), ("fp16", "fp16", None),
    ("fp16", "fp32", None), ("fp32", "bf16", None), ("fp32", "fp16", None),
    ("fp32", "fp32", "bf16"), ("fp32", "fp32", "fp16"), ("fp32", "bf16", "bf16"),
]


@pytest.mark.parametrize("pkind,gkind,copy", MIXED)
@pytest.mark.parametrize("n", LENGTHS)
def test_adam_low_precision_params_grads_and_copy(rng, pkind, gkind, copy, n):
    for hp in (dict(lr=0.01, weight_decay=0.01, adamw_mode=True, bias_correction=True,
                    grad_scale=3.0),
               dict(lr=1e-3, weight_decay=0.1, adamw_mode=False, bias_correction=False,
                    grad_scale=1.0)):
        hp.update(betas=(0.9, 0.999), eps=1e-8)
        k = State(rng, n, pkind, gkind, copy=copy)
        r, f = k.clone(), k.clone()
        for step in range(1, 4):
            k.grads(rng, hp["grad_scale"])
            r.g[...] = f.g[...] = k.g
            for s, backend in ((k, "kernel"), (r, "reference")):
                p, g, c = s.args()
                ds.adam_step(p, g, s.m, s.v, step=step, backend=backend, param_copy=c, **hp)
            adam32(f, step=step, **hp)
            k.assert_same(f, f"{pkind}/{gkind}/{copy} step {step}, kernel")
            r.assert_same(f, f"{pkind}/{gkind}/{copy} step {step}, reference backend")
        if copy:  # the copy is the updated fp32 parameters rounded
            assert_same_bits(k.c, store(k.p, copy), "param_copy")


def test_ml_dtypes_bfloat16_arrays_are_accepted(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    s = State(rng, 1023, "bf16", "fp32")
    s.grads(rng, 1.0)
    f = s.clone()
    ds.adam_step(s.p.view(ml_dtypes.bfloat16), s.g, s.m, s.v, step=1)
    adam32(f, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, adamw_mode=True,
           bias_correction=True, step=1, grad_scale=1.0)
    s.assert_same(f, "ml_dtypes.bfloat16 params")


# --------------------------------------------------------------------------------------
# Adagrad and Lion.

SMALL = [("fp32", "fp32", None), ("bf16", "bf16", None), ("fp16", "fp32", None),
         ("fp32", "fp32", "bf16"), ("fp32", "fp16", "fp16")]


@pytest.mark.parametrize("pkind,gkind,copy", SMALL)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("grad_scale", [1.0, 3.0])
def test_adagrad_matches_float32_bits(rng, pkind, gkind, copy, n, weight_decay, grad_scale):
    hp = dict(lr=0.01, eps=1e-10, weight_decay=weight_decay, grad_scale=grad_scale)
    k = State(rng, n, pkind, gkind, m=False, copy=copy)
    r, f = k.clone(), k.clone()
    for step in range(3):
        k.grads(rng, grad_scale)
        r.g[...] = f.g[...] = k.g
        for s, backend in ((k, "kernel"), (r, "reference")):
            p, g, c = s.args()
            ds.adagrad_step(p, g, s.v, backend=backend, param_copy=c, **hp)
        adagrad32(f, **hp)
        k.assert_same(f, f"step {step}, kernel")
        r.assert_same(f, f"step {step}, reference backend")


@pytest.mark.parametrize("pkind,gkind,copy", SMALL)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("grad_scale", [1.0, 3.0])
def test_lion_matches_float32_bits(rng, pkind, gkind, copy, n, weight_decay, grad_scale):
    hp = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=weight_decay, grad_scale=grad_scale)
    k = State(rng, n, pkind, gkind, v=False, copy=copy)
    r, f = k.clone(), k.clone()
    for step in range(3):
        k.grads(rng, grad_scale)
        if n >= 4:  # c = +0 or -0: the step is -lr or +lr (copysign of a signed zero)
            k.g[:4] = make(np.array([0.0, -0.0, 0.0, -0.0]), gkind)
            k.m[:2] = np.array([0.0, -0.0], np.float32)
            r.m[:2] = f.m[:2] = k.m[:2]
        r.g[...] = f.g[...] = k.g
        for s, backend in ((k, "kernel"), (r, "reference")):
            p, g, c = s.args()
            ds.lion_step(p, g, s.m, backend=backend, param_copy=c, **hp)
        lion32(f, **hp)
        k.assert_same(f, f"step {step}, kernel")
        r.assert_same(f, f"step {step}, reference backend")


def test_adagrad_and_lion_against_float64(rng):
    """One step each against float64 formulas (tolerance: 2 * a first-order bound, as
    adam64's)."""
    n = 100003
    s = State(rng, n, m=False)
    s.grads(rng, 3.0)
    p0, v0 = s.p.astype(np.float64), s.v.astype(np.float64)
    g = s.g.astype(np.float64) / float(F(3.0))
    wd, lr, eps = float(F(0.1)), float(F(0.01)), float(F(1e-10))
    ds.adagrad_step(s.p, s.g, s.v, lr=0.01, weight_decay=0.1, grad_scale=3.0)
    gd = g + wd * p0
    egd = 2 * U * np.abs(g) + U * np.abs(wd * p0) + U * np.abs(gd)  # cancellation included
    v = v0 + gd * gd
    ev = U * gd * gd + U * v + 2 * np.abs(gd) * egd
    q = g / (np.sqrt(v) + eps)
    eq = np.abs(q) * (5 * U + ev / (2 * v))
    p = p0 - lr * q
    assert_within(s.v, v, ev, "adagrad v")
    assert_within(s.p, p, lr * eq + lr * np.abs(q) * U + U * np.abs(p), "adagrad p")

    s = State(rng, n, v=False)
    s.grads(rng, 1.0)
    p0, g, m0 = s.p.astype(np.float64), s.g.astype(np.float64), s.m.astype(np.float64)
    b1, b2, lr = float(F(0.9)), float(F(0.99)), float(F(1e-3))
    c = b1 * m0 + (1 - b1) * g
    # Where c is within float32 rounding of 0, its sign is not the float64 one's business.
    clear = np.abs(c) > 4 * U * (np.abs(b1 * m0) + np.abs((1 - b1) * g))
    ds.lion_step(s.p, s.g, s.m, lr=1e-3, weight_decay=0.0)
    p = p0 - lr * np.sign(c)
    assert clear.mean() > 0.99
    assert_within(s.p[clear], p[clear], U * np.abs(p[clear]), "lion p")
    m = b2 * m0 + (1 - b2) * g
    assert_within(s.m, m, 3 * U * (np.abs(b2 * m0) + np.abs((1 - b2) * g)), "lion m")


# --------------------------------------------------------------------------------------
# LAMB.

LAMB_CASES = {
    "defaults": dict(lr=1e-3, weight_decay=0.0, bias_correction=True, eps_inside_sqrt=False,
                     grad_scale=1.0, max_coeff=10.0),
    "wd gs=3": dict(lr=0.01, weight_decay=0.01, bias_correction=True, eps_inside_sqrt=False,
                    grad_scale=3.0, max_coeff=10.0),
    "inside sqrt, no bc": dict(lr=0.01, weight_decay=0.0, bias_correction=False,
                               eps_inside_sqrt=True, grad_scale=1.0, max_coeff=10.0),
    "clamped": dict(lr=0.01, weight_decay=0.1, bias_correction=True, eps_inside_sqrt=False,
                    grad_scale=1024.0, max_coeff=0.3),
}


def lamb64(s: State, *, lr, betas, eps, weight_decay, bias_correction, step, max_coeff,
           min_coeff, eps_inside_sqrt, grad_scale):
    """A float64 LAMB step from the float32 state of `s`, and the bound of p (see adam64;
    the trust ratio's relative error is bounded by sum |u_i| e_i / ||u||^2 + 2u)."""
    b1, b2 = float(F(betas[0])), float(F(betas[1]))
    eps, wd, gs = float(F(eps)), float(F(weight_decay)), float(F(grad_scale))
    p0 = load(s.p, s.pkind).astype(np.float64)
    g = load(s.g, s.gkind).astype(np.float64) / gs
    eg = (2 * U if gs != 1 else 0.0) * np.abs(g)
    m0, v0 = s.m.astype(np.float64), s.v.astype(np.float64)
    m = b1 * m0 + (1 - b1) * g
    em = (1 - b1) * eg + 3 * U * (np.abs(b1 * m0) + np.abs((1 - b1) * g))
    v = b2 * v0 + (1 - b2) * g * g
    ev = (1 - b2) * 2 * np.abs(g) * eg + 4 * U * v
    den = np.sqrt(v + eps) if eps_inside_sqrt else np.sqrt(v) + eps
    q = m / den
    u = q + (wd * p0 if wd > 0 else 0.0)
    rel_den = np.divide(ev, 2 * v, out=np.zeros_like(v), where=v > 0) + 3 * U
    eu = em / den + np.abs(q) * (rel_den + U) + (2 * U * np.abs(wd * p0) + U * np.abs(u) if wd > 0 else 0)
    pn, un = math.sqrt(float(np.sum(p0 * p0))), math.sqrt(float(np.sum(u * u)))
    ratio, rel_ratio = 1.0, 0.0
    if pn and un:
        ratio = min(max(pn / un, float(F(min_coeff))), float(F(max_coeff)))
        rel_ratio = float(np.sum(np.abs(u) * eu)) / (un * un) + 2 * U
    step_size = float(F(lr))
    if bias_correction:
        step_size *= math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
    delta = step_size * ratio * u
    p = p0 - delta
    ep = np.abs(delta) * (rel_ratio + 4 * U) + step_size * ratio * eu + U * np.abs(p)
    return p, m, v, ep, em, ev


@pytest.mark.parametrize("case", LAMB_CASES)
@pytest.mark.parametrize("n", LENGTHS)
def test_lamb_matches_float32_bits_and_float64(rng, case, n):
    hp = dict(LAMB_CASES[case], betas=(0.9, 0.999), eps=1e-8, min_coeff=0.01)
    hp["min_coeff"] = min(hp["min_coeff"], hp["max_coeff"])
    k = State(rng, n)
    r, f = k.clone(), k.clone()
    for step in range(1, 4):
        k.grads(rng, hp["grad_scale"])
        r.g[...] = f.g[...] = k.g
        before = k.clone()
        ds.lamb_step(k.p, k.g, k.m, k.v, step=step, **hp)
        ds.lamb_step(r.p, r.g, r.m, r.v, step=step, backend="reference", **hp)
        lamb32(f, step=step, **hp)
        k.assert_same(f, f"step {step}")
        r.assert_same(f, f"step {step}, reference backend")
        p, m, v, ep, em, ev = lamb64(before, step=step, **hp)
        assert_within(k.p, p, ep, f"step {step} p")
        assert_within(k.m, m, em, f"step {step} m")
        assert_within(k.v, v, ev, f"step {step} v")


@pytest.mark.parametrize("pkind,gkind", [("bf16", "fp32"), ("fp16", "fp16"), ("fp32", "bf16")])
def test_lamb_low_precision(rng, pkind, gkind):
    hp = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, bias_correction=True,
              max_coeff=10.0, min_coeff=0.01, eps_inside_sqrt=False, grad_scale=1.0)
    k = State(rng, 4099, pkind, gkind)
    f = k.clone()
    for step in range(1, 4):
        k.grads(rng, 1.0)
        f.g[...] = k.g
        p, g, _ = k.args()
        ds.lamb_step(p, g, k.m, k.v, step=step, **hp)
        lamb32(f, step=step, **hp)
        k.assert_same(f, f"{pkind}/{gkind} step {step}")


# --------------------------------------------------------------------------------------
# Several parameters in one call.


@pytest.mark.parametrize("opt", ["adam", "adagrad", "lion", "lamb"])
def test_multi_tensor_calls_equal_one_reference_per_entry(rng, opt):
    has_m, has_v = opt != "adagrad", opt != "lion"
    copy = "bf16" if opt != "lamb" else None
    states = [State(rng, 7, m=has_m, v=has_v), State(rng, 1023, "bf16", "fp32", m=has_m, v=has_v),
              State(rng, 4099, "fp32", "fp16", m=has_m, v=has_v, copy=copy)]
    refs = [s.clone() for s in states]
    for step in range(1, 4):
        for s, f in zip(states, refs):
            s.grads(rng, 3.0)
            f.g[...] = s.g
        ps = [arg(s.p, s.pkind) for s in states]
        gs = [arg(s.g, s.gkind) for s in states]
        ms = [s.m for s in states]
        vs = [s.v for s in states]
        cs = [None if s.c is None else arg(s.c, s.ckind) for s in states]
        if opt == "adam":
            hp = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, adamw_mode=True,
                      bias_correction=True, step=step, grad_scale=3.0)
            ds.adam_step(ps, gs, ms, vs, param_copy=cs, **hp)
            for f in refs:
                adam32(f, **hp)
        elif opt == "adagrad":
            hp = dict(lr=0.01, eps=1e-10, weight_decay=0.1, grad_scale=3.0)
            ds.adagrad_step(ps, gs, vs, param_copy=cs, **hp)
            for f in refs:
                adagrad32(f, **hp)
        elif opt == "lion":
            hp = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_scale=3.0)
            ds.lion_step(ps, gs, tuple(ms), param_copy=cs, **hp)
            for f in refs:
                lion32(f, **hp)
        else:
            hp = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                      bias_correction=True, step=step, max_coeff=10.0, min_coeff=0.01,
                      eps_inside_sqrt=False, grad_scale=3.0)
            ds.lamb_step(ps, gs, ms, vs, **hp)
            for f in refs:  # one trust ratio per entry
                lamb32(f, **hp)
        for i, (s, f) in enumerate(zip(states, refs)):
            s.assert_same(f, f"{opt} step {step} entry {i}")


def test_empty_lists_are_a_no_op():
    ds.adam_step([], [], [], [], step=1)
    ds.adagrad_step([], [], [])
    ds.lion_step([], [], [])
    ds.lamb_step([], [], [], [], step=1)


# --------------------------------------------------------------------------------------
# In place, no copies.


def test_the_step_updates_the_callers_arrays_in_place(rng):
    base = rng.uniform(-1, 1, 64).astype(np.float32)
    p = base[16:48]  # a contiguous view into a larger array
    assert p.base is base
    g = rng.uniform(-1, 1, 32).astype(np.float32)
    m = np.zeros((4, 8), np.float32)  # any shapes with the same number of elements
    v = np.zeros((2, 16), np.float32)
    ids = (id(p), id(m), id(v))
    ptrs = (p.ctypes.data, m.ctypes.data, v.ctypes.data)
    before = base.copy()
    g0 = g.copy()
    assert ds.adam_step(p, g, m, v, lr=0.1, step=1) is None
    assert (id(p), id(m), id(v)) == ids and (p.ctypes.data, m.ctypes.data, v.ctypes.data) == ptrs
    assert np.all(base[16:48] != before[16:48])  # written through the view
    assert np.array_equal(base[:16], before[:16]) and np.array_equal(base[48:], before[48:])
    assert np.all(m != 0) and np.all(v > 0)
    assert_same_bits(g, g0, "grads are read only")
    # bf16 bits and the param copy are written in place too.
    pb = to_bf16(rng.uniform(-1, 1, 32).astype(np.float32))
    pb_before, pb_ptr = pb.copy(), pb.ctypes.data
    ds.lion_step((pb, "bfloat16"), g, np.zeros(32, np.float32), lr=0.5)
    assert pb.ctypes.data == pb_ptr and np.all(pb != pb_before)
    c = np.zeros(32, np.float16)
    p32 = rng.uniform(-1, 1, 32).astype(np.float32)
    ds.adagrad_step(p32, g, np.zeros(32, np.float32), param_copy=c)
    assert_same_bits(c, p32.astype(np.float16), "param_copy")


def test_read_only_grads_are_accepted(rng):
    p = rng.uniform(-1, 1, 10).astype(np.float32)
    g = rng.uniform(-1, 1, 10).astype(np.float32)
    g.flags.writeable = False
    ds.adam_step(p, g, np.zeros(10, np.float32), np.zeros(10, np.float32), step=1)


# --------------------------------------------------------------------------------------
# Errors: the right class, the field in the message, nothing written.


class Fixture:
    """Two valid fp32 entries of 17 elements and their snapshots."""

    def __init__(self, rng):
        self.s = [State(rng, 17), State(rng, 17)]
        for s in self.s:
            s.grads(rng, 1.0)
        self.snap = [s.clone() for s in self.s]

    def lists(self):
        return ([s.p for s in self.s], [s.g for s in self.s], [s.m for s in self.s],
                [s.v for s in self.s])

    def unchanged(self):
        for s, t in zip(self.s, self.snap):
            s.assert_same(t, "after a failing call")
            assert_same_bits(s.g, t.g, "grads after a failing call")


def test_errors_from_the_library_name_the_field_and_write_nothing(rng):
    x = Fixture(rng)
    p, g, m, v = x.lists()
    short = np.zeros(16, np.float32)
    cases = [
        (errors.InvalidArgumentError, ("tensors[0].exp_avg", "16", "17"),
         lambda: ds.adam_step(p, g, [short, m[1]], v, step=1)),
        (errors.InvalidArgumentError, ("tensors[1].grads",),
         lambda: ds.adam_step(p, [g[0], np.zeros(18, np.float32)], m, v, step=1)),
        (errors.UnsupportedError, ("tensors[0].exp_avg", "float32"),
         lambda: ds.adam_step(p, g, [m[0].astype(np.float16), m[1]], v, step=1)),
        (errors.UnsupportedError, ("tensors[1].exp_avg_sq", "float32"),
         lambda: ds.adagrad_step(p, g, [v[0], v[1].astype(np.float64)])),
        (errors.InvalidArgumentError, ("tensors[0].params and tensors[0].grads overlap",),
         lambda: ds.adam_step(p, [p[0], g[1]], m, v, step=1)),
        (errors.InvalidArgumentError, ("tensors[1].exp_avg and tensors[1].exp_avg_sq overlap",),
         lambda: ds.lamb_step(p, g, m, [v[0], m[1]], step=1)),
        (errors.InvalidConfigError, ("beta1", "[0, 1)"),
         lambda: ds.adam_step(p, g, m, v, step=1, betas=(1.0, 0.999))),
        (errors.InvalidConfigError, ("beta2",),
         lambda: ds.lamb_step(p, g, m, v, step=1, betas=(0.9, float("nan")))),
        (errors.InvalidConfigError, ("lr",), lambda: ds.lion_step(p, g, m, lr=-1.0)),
        (errors.InvalidConfigError, ("eps",), lambda: ds.adagrad_step(p, g, v, eps=0.0)),
        (errors.InvalidConfigError, ("weight_decay",),
         lambda: ds.adam_step(p, g, m, v, step=1, weight_decay=-0.5)),
        (errors.InvalidConfigError, ("grad_scale",),
         lambda: ds.adam_step(p, g, m, v, step=1, grad_scale=0.0)),
        (errors.InvalidConfigError, ("step",), lambda: ds.adam_step(p, g, m, v, step=0)),
        (errors.InvalidConfigError, ("min_coeff",),
         lambda: ds.lamb_step(p, g, m, v, step=1, min_coeff=20.0)),
        (errors.OutOfRangeError, ("config->adamw_mode", "2"),
         lambda: ds.adam_step(p, g, m, v, step=1, adamw_mode=2)),
        (errors.OutOfRangeError, ("config->eps_inside_sqrt",),
         lambda: ds.lamb_step(p, g, m, v, step=1, eps_inside_sqrt=-1)),
        (errors.OutOfRangeError, ("config->backend", "7"),
         lambda: ds.adam_step(p, g, m, v, step=1, backend=7)),
        (errors.OutOfRangeError, ("config->num_threads",),
         lambda: ds.lion_step(p, g, m, num_threads=-2)),
        (errors.UnsupportedError, ("tensors[0].grads is bfloat16 but tensors[0].params is float16",),
         lambda: ds.adam_step([p[0].astype(np.float16), p[1]],
                              [(to_bf16(g[0]), "bfloat16"), g[1]], m, v, step=1)),
        (errors.UnsupportedError, ("tensors[1].param_copy", "needs float32 parameters"),
         lambda: ds.adam_step([p[0], (to_bf16(p[1]), "bf16")], g, m, v, step=1,
                              param_copy=[None, (to_bf16(p[1]), "bf16")])),
        (errors.UnsupportedError, ("int32",),
         lambda: ds.adagrad_step([p[0], p[1].view(np.int32)], [g[0], g[1].view(np.int32)], v)),
        (errors.UnsupportedError, ("tensors[0].param_copy is float32", "float16 or bfloat16"),
         lambda: ds.adam_step(p, g, m, v, step=1, param_copy=[np.zeros(17, np.float32), None])),
        (errors.UnsupportedError, ("no CPU kernel",),
         lambda: ds.lamb_step(p, g, m, v, step=1, backend="kernel")),
    ]
    for cls, needles, call in cases:
        with raises(cls, *needles) as info:
            call()
        assert info.value.message.split(": ")[0] in (
            "dsrs_adam_step", "dsrs_adagrad_step", "dsrs_lion_step", "dsrs_lamb_step"), info.value
        x.unchanged()


def test_errors_found_by_the_binding(rng):
    x = Fixture(rng)
    p, g, m, v = x.lists()
    strided = np.zeros(34, np.float32)[::2]
    unaligned = np.frombuffer(bytearray(4 * 17 + 1), dtype=np.float32, offset=1, count=17)
    assert unaligned.flags.c_contiguous and unaligned.flags.writeable
    assert not unaligned.flags.aligned
    ro = p[0].copy()
    ro.flags.writeable = False
    cases = [
        (errors.InvalidArgumentError, ("tensors[1].exp_avg", "not contiguous"),
         lambda: ds.adam_step(p, g, [m[0], strided], v, step=1)),
        (errors.InvalidArgumentError, ("tensors[1].params", "not aligned"),
         lambda: ds.adam_step([p[0], unaligned], g, m, v, step=1, backend="reference")),
        (errors.InvalidArgumentError, ("tensors[0].params", "read-only"),
         lambda: ds.adam_step([ro, p[1]], g, m, v, step=1)),
        (errors.UnsupportedError, ("tensors[0].params", "uint16", "bfloat16"),
         lambda: ds.adam_step([to_bf16(p[0]), p[1]], g, m, v, step=1)),
        (errors.InvalidArgumentError, ("bfloat16",),
         lambda: ds.adam_step([(p[0], "bfloat16"), p[1]], g, m, v, step=1)),
        (errors.InvalidArgumentError, ("exp_avg has 1 entries but params has 2",),
         lambda: ds.adam_step(p, g, m[:1], v, step=1)),
        (TypeError, ("grads must be a list",), lambda: ds.adam_step(p, g[0], m, v, step=1)),
        (TypeError, ("exp_avg is a list",), lambda: ds.adam_step(p[0], g[0], m, v[0], step=1)),
        (TypeError, ("tensors[0].grads", "numpy.ndarray"),
         lambda: ds.adam_step(p[0], 3.0, m[0], v[0], step=1)),
        (TypeError, ("step",), lambda: ds.adam_step(p, g, m, v, step=1.5)),
        (TypeError, ("lr",), lambda: ds.adam_step(p, g, m, v, step=1, lr="0.1")),
        (TypeError, ("betas",), lambda: ds.adam_step(p, g, m, v, step=1, betas=0.9)),
        (TypeError, ("adamw_mode",), lambda: ds.adam_step(p, g, m, v, step=1, adamw_mode="yes")),
        (ValueError, ("unknown backend", "reference"),
         lambda: ds.adam_step(p, g, m, v, step=1, backend="fast")),
        (errors.OutOfRangeError, ("step",), lambda: ds.adam_step(p, g, m, v, step=1 << 63)),
        (TypeError, ("step",), lambda: ds.adam_step(p, g, m, v)),  # step is required
        (TypeError, (), lambda: ds.adam_step(p, g, m, v, 1)),  # and keyword-only
    ]
    for cls, needles, call in cases:
        with raises(cls, *needles):
            call()
        x.unchanged()


def test_error_classes_are_also_builtin_exceptions(rng):
    x = Fixture(rng)
    p, g, m, v = x.lists()
    with pytest.raises(ValueError):  # InvalidConfigError
        ds.adam_step(p, g, m, v, step=1, betas=(1.0, 0.5))
    with pytest.raises(TypeError):  # UnsupportedError
        ds.adam_step(p, g, [m[0].astype(np.float16), m[1]], v, step=1)
    with pytest.raises(IndexError):  # OutOfRangeError
        ds.adam_step(p, g, m, v, step=1, backend=9)
    x.unchanged()
