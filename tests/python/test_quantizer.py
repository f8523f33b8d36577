"""The quantizer through the binding (deepspeed_rs.quantize, dequantize, quantize_sizes;
docs/quantizer.md) on numpy arrays.

The reference is numpy, written from the documented formulas: the group statistics and
the scale in float64 (``scale = f32(f64(A) / qmax)``, ``f32((f64(mx) - f64(mn)) / qmax)``),
the quotient ``v`` in float32 (numpy's float32 division is correctly rounded), ``rint`` to
nearest even in float32, ``floor(f64(v) + u)`` in float64 for stochastic rounding with the
Philox words of philox_ref.py (an independent Philox4x32-10, keyed as documented), and
``y = f32(q) * scale (+ offset)`` in float32. The doc says these operations are exact, so
the library must equal the reference bit for bit: codes, scales, offsets and dequantized
values, with the kernel and the pure-Rust reference backend alike.

Independently, in float64 against the exact inputs, the documented error bounds: rounding
to nearest ``|x - y| <= scale/2 + 2^-20 A``, stochastic ``|x - y| < scale + 2^-20 A`` (A the
group's largest magnitude; for normal scales), plus half an ulp of the output type when
dequantizing to float16 / bfloat16; rounding to nearest gives the float64-rounded quotient
wherever the quotient is not within 1e-3 of a tie, stochastic rounding its floor or floor
+ 1 wherever it is not within 1e-3 of an integer.

The op cache (cpu_quantizer is JIT-built on first use) is a private directory of this
module (DSRS_CACHE_DIR).
"""

from __future__ import annotations

import numpy as np
import pytest

import deepspeed_rs as ds
import philox_ref
from bits_ref import assert_same_bits, from_bf16, raises, to_bf16
from deepspeed_rs import errors

F = np.float32
NAN_BITS = 0x7FC00000
LENGTHS = (1, 7, 1023, 100003)
GROUP_SIZES = (1, 7, 64, 4096, "n")


# The ops are JIT-built into a cache private to this module (conftest.py).
pytestmark = pytest.mark.usefixtures("private_op_cache")


# --------------------------------------------------------------------------------------
# dtypes.


class Data:
    """Input data of one kind ("fp32", "fp16", "bf16"): the array passed to the binding,
    and its values widened (exactly) to float32."""

    def __init__(self, values: np.ndarray, kind: str):
        self.kind = kind
        if kind == "fp32":
            self.array = values.astype(np.float32)
            self.x = self.array
        elif kind == "fp16":
            self.array = values.astype(np.float16)
            self.x = self.array.astype(np.float32)
        else:
            self.array = to_bf16(values.astype(np.float32))
            self.x = from_bf16(self.array)

    @property
    def arg(self):
        return (self.array, "bfloat16") if self.kind == "bf16" else self.array


def gen_values(rng, n: int, emin: int, emax: int) -> np.ndarray:
    """Runs of 37 elements share a magnitude 2^e (e in [emin, emax]); a quarter of the runs
    are shifted away from zero; 1/64 exact zeros. Never all zero."""
    runs = -(-n // 37)
    mag = np.repeat(2.0 ** rng.integers(emin, emax + 1, size=runs), 37)[:n]
    shift = np.repeat(np.where(rng.random(runs) < 0.25, 1.5 * rng.uniform(-1, 1, runs), 0.0),
                      37)[:n]
    x = mag * (shift + rng.uniform(-1, 1, n))
    x[rng.random(n) < 1 / 64] = 0.0
    if n and x[0] == 0:
        x[0] = 1.0
    return x


# --------------------------------------------------------------------------------------
# The reference (docs/quantizer.md).


def qrange(bits: int, symmetric: bool):
    qmax = (127 if bits == 8 else 7) if symmetric else (255 if bits == 8 else 15)
    return (-qmax if symmetric else 0), qmax


def ref_groups(x: np.ndarray, bits: int, symmetric: bool, gs: int):
    """(scales, offsets) of the groups of float32 x (offsets all 0 when symmetric)."""
    starts = np.arange(0, x.size, gs)
    amax = np.maximum.reduceat(x.view(np.uint32) & np.uint32(0x7FFFFFFF), starts)
    _, qmax = qrange(bits, symmetric)
    with np.errstate(invalid="ignore", over="ignore"):
        if symmetric:
            scales = (amax.view(np.float32).astype(np.float64) / qmax).astype(np.float32)
            offsets = np.zeros_like(scales)
        else:
            mn = np.minimum.reduceat(x, starts) + F(0)  # -0 -> +0
            mx = np.maximum.reduceat(x, starts) + F(0)
            scales = ((mx.astype(np.float64) - mn.astype(np.float64)) / qmax).astype(np.float32)
            offsets = mn.astype(np.float32)
    bad = amax >= 0x7F800000
    scales[bad] = np.uint32(NAN_BITS).view(np.float32)
    offsets[bad] = np.uint32(NAN_BITS).view(np.float32)
    return scales, offsets


def ref_codes(x: np.ndarray, bits: int, symmetric: bool, gs: int, rounding: str,
              seed: int = 0, offset: int = 0):
    """(codes as int64, scales, offsets)."""
    n = x.size
    scales, offsets = ref_groups(x, bits, symmetric, gs)
    g = np.arange(n, dtype=np.int64) // gs
    sc, of = scales[g], offsets[g]
    lo, hi = qrange(bits, symmetric)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        v = (x if symmetric else x - of) / sc  # float32
        if rounding == "nearest":
            r = np.rint(v)
            r = np.where(r > F(lo), r, F(lo))
            r = np.where(r < F(hi), r, F(hi))
        else:
            w = philox_ref.words_np(seed, offset, n)
            u = (w >> np.uint32(8)).astype(np.float64) * 2.0**-24
            r = np.floor(v.astype(np.float64) + u)
            r = np.where(r > lo, r, float(lo))
            r = np.where(r < hi, r, float(hi))
        codes = np.where(sc > 0, r, 0).astype(np.int64)
    return codes, scales, offsets


def pack(codes: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """The bytes of q (uint8)."""
    if bits == 8:
        return codes.astype(np.int8 if symmetric else np.uint8).view(np.uint8)
    nib = (codes & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return nib[0::2] | (nib[1::2] << np.uint8(4))


def unpacked(q: np.ndarray, n: int, bits: int, symmetric: bool) -> np.ndarray:
    """The codes stored in q (int64), written here independently of ds.quantizer."""
    b = q.reshape(-1).view(np.uint8).astype(np.int64)
    if bits == 8:
        return (b ^ 0x80) - 0x80 if symmetric else b
    nib = np.empty(2 * b.size, np.int64)
    nib[0::2], nib[1::2] = b & 0xF, b >> 4
    nib = nib[:n]
    return (nib ^ 8) - 8 if symmetric else nib


def ref_dequantize(q, scales, offsets, n, bits, symmetric, gs, kind="fp32") -> np.ndarray:
    codes = unpacked(q, n, bits, symmetric)
    g = np.arange(n, dtype=np.int64) // gs
    with np.errstate(invalid="ignore", over="ignore"):
        y = codes.astype(np.float32) * scales[g]
        if not symmetric:
            y = y + offsets[g]
    y[np.isnan(y)] = np.uint32(NAN_BITS).view(np.float32)
    if kind == "fp16":
        return y.astype(np.float16)
    if kind == "bf16":
        return to_bf16(y)
    return y


def half_ulp(y: np.ndarray, kind: str) -> np.ndarray:
    """Half an ulp of the output type at |y| (0 for fp32 output)."""
    if kind == "fp32":
        return np.zeros_like(y, dtype=np.float64)
    frac_bits, min_exp = (10, -14) if kind == "fp16" else (7, -126)
    a = np.abs(y.astype(np.float64))
    _, e = np.frexp(a)  # |y| in [2^(e-1), 2^e)
    e = np.maximum(e - 1, min_exp)
    return np.where(a == 0, 0.0, np.ldexp(1.0, e - frac_bits - 1))


def check_bounds(x, q, scales, offsets, y, n, bits, symmetric, gs, rounding, out_kind):
    """The documented bounds in float64; returns the largest |x - y| / bound."""
    xd = x.astype(np.float64)
    starts = np.arange(0, n, gs)
    g = np.arange(n, dtype=np.int64) // gs
    with np.errstate(invalid="ignore"):
        A = np.maximum.reduceat(np.abs(xd), starts)
        rng_ = np.maximum.reduceat(xd, starts) - np.minimum.reduceat(xd, starts)
    lo, hi = qrange(bits, symmetric)
    need = hi * 2.0**-126
    ok_group = np.isfinite(A) & ((A >= need) if symmetric else (rng_ >= need))
    ok_group &= scales >= np.finfo(np.float32).tiny
    m = ok_group[g]
    if not m.any():
        return 0.0
    sc = scales[g].astype(np.float64)
    yd = (from_bf16(y) if out_kind == "bf16" else y.astype(np.float32)).astype(np.float64)
    y32 = ref_dequantize(q, scales, offsets, n, bits, symmetric, gs, "fp32").astype(np.float64)
    slack = 2.0**-20 * A[g]
    bound = (sc if rounding == "stochastic" else sc / 2) + slack + half_ulp(y32, out_kind)
    err = np.abs(xd - yd)
    within = err < bound if rounding == "stochastic" else err <= bound
    bad = np.flatnonzero(m & ~within)
    assert bad.size == 0, (
        f"{bad.size} elements beyond the bound, first [{bad[0]}]: x {xd[bad[0]]!r} y "
        f"{yd[bad[0]]!r} error {err[bad[0]]:.3g} bound {bound[bad[0]]:.3g}")
    # The codes against the quotient in float64.
    codes = unpacked(q, n, bits, symmetric)
    with np.errstate(invalid="ignore", divide="ignore"):  # (groups outside m)
        vd = (xd if symmetric else xd - offsets[g].astype(np.float64)) / sc
        frac = vd - np.floor(vd)
    if rounding == "nearest":
        away = m & (np.abs(frac - 0.5) > 1e-3)
        want = np.clip(np.rint(vd), lo, hi)
        assert np.array_equal(codes[away], want[away]), "nearest: not the rounded quotient"
    else:
        away = m & (frac > 1e-3) & (frac < 1 - 1e-3)
        f0 = np.clip(np.floor(vd), lo, hi)
        f1 = np.clip(np.floor(vd) + 1, lo, hi)
        c = codes[away]
        assert np.all((c == f0[away]) | (c == f1[away])), "stochastic: not floor or floor + 1"
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.max(np.where(m, err / bound, 0.0)))


# --------------------------------------------------------------------------------------
# The matrix.


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False)],
                         ids=["int8-sym", "int8-asym", "int4-sym", "int4-asym"])
@pytest.mark.parametrize("gs", GROUP_SIZES, ids=lambda g: f"gs{g}")
@pytest.mark.parametrize("n", LENGTHS, ids=lambda n: f"n{n}")
def test_matches_the_documented_formulas_and_bounds(rng, n, gs, bits, symmetric):
    gs = n if gs == "n" else gs
    worst = 0.0
    for kind, (emin, emax) in (("fp32", (-20, 20)), ("fp16", (-12, 10)), ("bf16", (-20, 20))):
        d = Data(gen_values(rng, n, emin, emax), kind)
        for rounding in ("nearest", "stochastic"):
            seed = int(rng.integers(0, 2**63)) * 2 + 1
            offset = int(rng.integers(0, 2**63))
            codes, scales, offsets = ref_codes(d.x, bits, symmetric, gs, rounding, seed, offset)
            want_q = pack(codes, bits, symmetric)
            assert ds.quantize_sizes(n, bits=bits, group_size=gs) == (want_q.size, scales.size)
            what = f"{kind} {rounding}"
            results = []
            for backend, threads in (("kernel", n % 4), ("reference", 0)):
                q, s, o = ds.quantize(d.arg, bits=bits, symmetric=symmetric, group_size=gs,
                                      rounding=rounding, seed=seed, offset=offset,
                                      num_threads=threads, backend=backend)
                assert q.dtype == (np.int8 if bits == 8 and symmetric else np.uint8)
                assert s.dtype == np.float32 and (o is None) == symmetric
                assert_same_bits(q, want_q, f"{what} {backend}: q")
                assert_same_bits(s, scales, f"{what} {backend}: scales")
                if not symmetric:
                    assert_same_bits(o, offsets, f"{what} {backend}: offsets")
                results.append((q, s, o))
            q, s, o = results[0]
            for out_kind in ("fp32", kind):
                want_y = ref_dequantize(want_q, scales, offsets, n, bits, symmetric, gs, out_kind)
                for backend in ("kernel", "reference"):
                    y = ds.dequantize(q, s, o, n=n, bits=bits, symmetric=symmetric,
                                      group_size=gs, dtype={"fp32": np.float32,
                                                            "fp16": np.float16,
                                                            "bf16": "bfloat16"}[out_kind],
                                      backend=backend)
                    assert_same_bits(y, want_y, f"{what} dequantize to {out_kind} ({backend})")
                worst = max(worst, check_bounds(d.x, want_q, scales, offsets, want_y, n, bits,
                                                symmetric, gs, rounding, out_kind))
    assert worst <= 1.0


# --------------------------------------------------------------------------------------
# Format details.


def test_the_documented_int4_example():
    x = np.array([0.35, -1.4, 0.7, 2.0, -0.5, 1.0, 3.0], np.float32)
    q, s, o = ds.quantize(x, bits=4, symmetric=True, group_size=3)
    assert o is None and q.dtype == np.uint8
    assert q.tobytes() == bytes([0x92, 0x74, 0x3E, 0x07])
    assert_same_bits(s, np.array([0.2, 0.2857143, 0.42857143], np.float32), "scales")
    assert ds.quantizer.unpack_int4(q, 7, symmetric=True).tolist() == [2, -7, 4, 7, -2, 3, 7]


def test_nibble_order():
    # Asymmetric, one group 0..15: scale 1, offset 0, q_i = i; element 2i in the low nibble.
    x = np.arange(16, dtype=np.float32)
    q, s, o = ds.quantize(x, bits=4, symmetric=False, group_size=16)
    assert q.tobytes() == bytes([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE])
    assert s.tolist() == [1.0] and o.tolist() == [0.0]
    # Odd n: the last byte's high nibble stays 0.
    x = np.array([15] + list(range(14)), np.float32)
    q, _, _ = ds.quantize(x, bits=4, symmetric=False, group_size=15)
    assert q.size == 8 and q[-1] == 0x0D and q[0] == 0x0F
    # Symmetric: two's complement nibbles; group size 1 (bytes span groups).
    q, _, _ = ds.quantize(np.array([-7, 7, -1, 1], np.float32), bits=4, group_size=4)
    assert q.tobytes() == bytes([0x79, 0x1F])
    q, s, _ = ds.quantize(np.array([2, -3, 5], np.float32), bits=4, group_size=1)
    assert q.tobytes() == bytes([0x97, 0x07])
    assert ds.quantizer.unpack_int4(q, 3, symmetric=True).tolist() == [7, -7, 7]
    # int8: two's complement symmetric (int8 array), unsigned asymmetric (uint8 array).
    q, _, _ = ds.quantize(np.array([-127, 127, -1, 0], np.float32), group_size=4)
    assert q.dtype == np.int8 and q.tolist() == [-127, 127, -1, 0]
    q, s, o = ds.quantize(np.array([-10, 245, 0], np.float32), symmetric=False, group_size=3)
    assert q.dtype == np.uint8 and q.tolist() == [0, 255, 10]
    assert s.tolist() == [1.0] and o.tolist() == [-10.0]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_zero_constant_and_non_finite_groups(rng, bits, symmetric, rounding):
    c = F(rng.uniform(0.1, 100.0))
    x = np.concatenate([np.zeros(5), np.full(5, c), np.full(5, -0.0), [0.0, -0.0] * 2 + [0.0],
                        [1.0, np.nan, 2.0, 3.0, 4.0], [1.0, 2.0, np.inf, 3.0, 4.0],
                        [1.0, 2.0, 3.0, 4.0, -np.inf], rng.uniform(-5, 5, 5), [-c] * 3])
    x = x.astype(np.float32)
    clean = np.where(np.isfinite(x), x, F(0.5))
    kw = dict(bits=bits, symmetric=symmetric, group_size=5, rounding=rounding, seed=11,
              offset=3)
    q, s, o = ds.quantize(x, **kw)
    qc, sc, oc = ds.quantize(clean, **kw)
    codes, codes_clean = unpacked(q, x.size, bits, symmetric), unpacked(qc, x.size, bits, symmetric)
    sb = s.view(np.uint32)
    for g in (0, 2, 3):  # all +0, all -0, mixed: scale +0 (offset +0), codes 0
        assert sb[g] == 0 and np.all(codes[5 * g:5 * g + 5] == 0)
        if not symmetric:
            assert o.view(np.uint32)[g] == 0
    for g in (4, 5, 6):  # NaN, +Inf, -Inf: scale (offset) NaN, codes 0
        assert sb[g] == NAN_BITS and np.all(codes[5 * g:5 * g + 5] == 0)
        if not symmetric:
            assert o.view(np.uint32)[g] == NAN_BITS
    for g in (1, 7, 8):  # the neighbours are as without the non-finite values
        assert sb[g] == sc.view(np.uint32)[g]
        assert np.array_equal(codes[5 * g:5 * g + 5], codes_clean[5 * g:5 * g + 5])
    y = ds.dequantize(q, s, o, n=x.size, bits=bits, symmetric=symmetric, group_size=5)
    h = ds.dequantize(q, s, o, n=x.size, bits=bits, symmetric=symmetric, group_size=5,
                      dtype=np.float16)
    b = ds.dequantize(q, s, o, n=x.size, bits=bits, symmetric=symmetric, group_size=5,
                      dtype="bf16")
    assert np.all(y[0:5] == 0) and np.all(y[10:20] == 0)
    assert np.all(y[20:35].view(np.uint32) == NAN_BITS)
    assert np.all(h[20:35].view(np.uint16) == 0x7E00)
    assert np.all(b.view(np.uint16)[20:35] == 0x7FC0)
    assert np.all(np.isfinite(y[35:]))
    if symmetric:
        # A constant c != 0 has A = |c|: scale |c| / qmax, codes +-qmax, and y = qmax *
        # f32(|c| / qmax), within the documented slack of c (not always c itself).
        qmax = 127 if bits == 8 else 7
        assert np.all(codes[5:10] == qmax) and np.all(codes[-3:] == -qmax)
        assert np.all(np.abs(y[5:10].astype(np.float64) - c) <= 2.0**-20 * c)
    else:
        # Asymmetric constant groups: scale 0, offset c, codes 0, dequantized exactly.
        assert s[1] == 0 and o[1] == c and s[-1] == 0 and o[-1] == -c
        assert np.all(y[5:10] == c) and np.all(y[-3:] == -c)


def test_unpack_int4_matches_the_packing(rng):
    for n in (1, 2, 7, 64):
        codes = rng.integers(-7, 8, n)
        assert ds.quantizer.unpack_int4(pack(codes, 4, True), n, symmetric=True).tolist() == \
            codes.tolist()
        codes = rng.integers(0, 16, n)
        assert ds.quantizer.unpack_int4(pack(codes, 4, False), n, symmetric=False).tolist() == \
            codes.tolist()
    with pytest.raises(ValueError):
        ds.quantizer.unpack_int4(np.zeros(3, np.uint8), 7, symmetric=True)


# --------------------------------------------------------------------------------------
# Stochastic rounding.


def test_stochastic_rounding_is_reproducible_and_keyed(rng):
    n, gs = 4096, 64
    x = gen_values(rng, n, -3, 3).astype(np.float32)
    kw = dict(bits=8, symmetric=False, group_size=gs, rounding="stochastic")
    q1, s1, o1 = ds.quantize(x, seed=42, offset=7, **kw)
    q2, s2, o2 = ds.quantize(x, seed=42, offset=7, **kw)
    assert_same_bits(q2, q1, "same seed and offset")
    q3, s3, _ = ds.quantize(x, seed=43, offset=7, **kw)
    q4, s4, _ = ds.quantize(x, seed=42, offset=8, **kw)
    assert not np.array_equal(q3, q1) and not np.array_equal(q4, q1)
    assert_same_bits(s3, s1, "scales do not depend on the seed")
    assert_same_bits(s4, s1, "scales do not depend on the offset")
    # Element i uses word i % 4 of block offset + i / 4: x[64:] with offset + 16 gives q[64:].
    q5, _, _ = ds.quantize(x[64:], seed=42, offset=7 + 16, **kw)
    assert_same_bits(q5, q1[64:], "a call on x[64:] with offset + 16")
    # The offset wraps around 2^64.
    q6, _, _ = ds.quantize(x, seed=42, offset=2**64 - 3, **kw)
    codes, _, _ = ref_codes(x, 8, False, gs, "stochastic", 42, 2**64 - 3)
    assert_same_bits(q6, pack(codes, 8, False), "offset 2^64 - 3")
    assert ds.quantizer.philox_blocks(n) == n // 4 and ds.quantizer.philox_blocks(5) == 2
    assert ds.quantizer.philox_blocks(0) == 0


def test_stochastic_rounding_is_unbiased(rng):
    # Scale 1 (x[0] = 127); every other value v = 10.3f: the mean code is v within 6
    # standard errors.
    x = np.full(1 << 16, 10.3, np.float32)
    x[0] = 127
    q, s, _ = ds.quantize(x, group_size=x.size, rounding="stochastic",
                          seed=int(rng.integers(0, 2**63)))
    assert s[0] == 1.0
    v = float(F(10.3))
    f = v - 10
    se = np.sqrt(f * (1 - f) / (x.size - 1))
    assert abs(q[1:].astype(np.float64).mean() - v) < 6 * se


# --------------------------------------------------------------------------------------
# Arrays: out=, shapes, dtypes, layouts.


def test_out_arrays_are_written_in_place(rng):
    n, gs = 1023, 64
    x = gen_values(rng, n, -4, 4).astype(np.float32)
    q_bytes, groups = ds.quantize_sizes(n, bits=4, group_size=gs)
    arena = np.full(q_bytes + 32, 0x5A, np.uint8)  # q is a slice of a larger buffer
    q = arena[16:16 + q_bytes]
    s = np.full(groups, np.nan, np.float32)
    o = np.full(groups, np.nan, np.float32)
    ret = ds.quantize(x, bits=4, symmetric=False, group_size=gs, out=(q, s, o))
    assert ret[0] is q and ret[1] is s and ret[2] is o
    assert np.all(arena[:16] == 0x5A) and np.all(arena[16 + q_bytes:] == 0x5A)
    codes, scales, offsets = ref_codes(x, 4, False, gs, "nearest")
    assert_same_bits(q, pack(codes, 4, False), "q written in place")
    assert_same_bits(s, scales, "scales written in place")
    assert_same_bits(o, offsets, "offsets written in place")
    # int8 q may be int8 or uint8; symmetric out may leave offsets out or pass None.
    q8 = np.zeros(n, np.uint8)
    s8 = np.zeros(groups, np.float32)
    for out in ((q8, s8), (q8.view(np.int8), s8, None)):
        ret = ds.quantize(x, group_size=gs, out=out)
        assert ret[0] is out[0] and ret[2] is None
        codes, scales, _ = ref_codes(x, 8, True, gs, "nearest")
        assert_same_bits(out[0], pack(codes, 8, True), "int8 q in place")
    # Dequantize into a 2-D float16 array and a bf16 (bits, marker) pair.
    y = np.zeros((3, 341), np.float16)
    assert ds.dequantize(q, s, o, bits=4, symmetric=False, group_size=gs, out=y) is y
    assert_same_bits(y, ref_dequantize(q, s, o, n, 4, False, gs, "fp16"), "fp16 out")
    yb = np.zeros(n, np.uint16)
    assert ds.dequantize(q, s, o, n=n, bits=4, symmetric=False, group_size=gs,
                         out=(yb, "bfloat16")) is not None
    assert_same_bits(yb, ref_dequantize(q, s, o, n, 4, False, gs, "bf16"), "bf16 out")


def test_shapes_layouts_and_dtypes(rng):
    x = gen_values(rng, 12 * 35, -3, 3).astype(np.float32).reshape(12, 35)
    q, s, _ = ds.quantize(x, group_size=10)  # read flattened, row-major
    q1, s1, _ = ds.quantize(x.reshape(-1), group_size=10)
    assert q.shape == (420,) and s.shape == (42,)
    assert_same_bits(q, q1, "2-D input")
    # Non-contiguous and unaligned inputs are copied first: same result as a copy.
    xt = x.T  # Fortran order
    qt, st, _ = ds.quantize(xt, group_size=10)
    q2, s2, _ = ds.quantize(np.ascontiguousarray(xt), group_size=10)
    assert_same_bits(qt, q2, "transposed input")
    raw = bytearray(4 * 420 + 1)
    unaligned = np.frombuffer(raw, np.float32, count=420, offset=1)
    unaligned[...] = x.reshape(-1)
    assert not unaligned.flags.aligned
    qu, su, _ = ds.quantize(unaligned, group_size=10)
    assert_same_bits(qu, q1, "unaligned input")
    qs, _, _ = ds.quantize(x[:, ::5], group_size=7)
    q3, _, _ = ds.quantize(np.ascontiguousarray(x[:, ::5]), group_size=7)
    assert_same_bits(qs, q3, "strided input")
    # Dequantize inputs may be strided too.
    y = ds.dequantize(np.repeat(q1, 2)[::2], s1, n=420, bits=8, symmetric=True, group_size=10)
    assert_same_bits(y, ref_dequantize(q1, s1, None, 420, 8, True, 10), "strided q")
    # Empty input.
    q0, s0, o0 = ds.quantize(np.zeros(0, np.float16), bits=4, symmetric=False, group_size=3)
    assert q0.size == 0 and s0.size == 0 and o0.size == 0
    assert ds.dequantize(q0, s0, o0, n=0, bits=4, symmetric=False, group_size=3).size == 0
    # A 0-d array is one element.
    q, s, _ = ds.quantize(np.array(2.5, np.float32), group_size=1)
    assert q.tolist() == [127] and s.tolist() == [F(2.5 / 127)]


def test_concurrent_calls_from_threads(rng):
    """The calls release the GIL: threads quantizing at once get the reference's bits."""
    import threading

    x = gen_values(rng, 100003, -5, 5).astype(np.float32)
    kw = dict(bits=4, symmetric=False, group_size=77, rounding="stochastic", seed=5, offset=9)
    codes, scales, offsets = ref_codes(x, 4, False, 77, "stochastic", 5, 9)
    want = pack(codes, 4, False)
    results, failures = [None] * 6, []

    def run(i):
        try:
            results[i] = ds.quantize(x, num_threads=i % 3, backend="kernel", **kw)
        except Exception as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    for q, s, o in results:
        assert_same_bits(q, want, "q from a thread")
        assert_same_bits(s, scales, "scales from a thread")
        assert_same_bits(o, offsets, "offsets from a thread")


def test_ml_dtypes_bfloat16_arrays_are_accepted(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    d = Data(gen_values(rng, 100, -3, 3), "bf16")
    q, s, o = ds.quantize(d.array.view(ml_dtypes.bfloat16), bits=4, symmetric=False,
                          group_size=9)
    codes, scales, offsets = ref_codes(d.x, 4, False, 9, "nearest")
    assert_same_bits(q, pack(codes, 4, False), "ml_dtypes input")
    y = ds.dequantize(q, s, o, n=100, bits=4, symmetric=False, group_size=9,
                      dtype=ml_dtypes.bfloat16)
    assert y.dtype == ml_dtypes.bfloat16
    assert_same_bits(y, ref_dequantize(q, s, o, 100, 4, False, 9, "bf16"), "ml_dtypes output")


def test_quantize_sizes():
    for n in (0, 1, 2, 7, 1023, 2**40 + 1):
        for gs in (1, 3, 64, 2**40, 2**64 - 1):
            assert ds.quantize_sizes(n, bits=8, group_size=gs) == (n, -(-n // gs))
            assert ds.quantize_sizes(n, bits=4, group_size=gs) == ((n + 1) // 2, -(-n // gs))
    with raises(errors.OutOfRangeError, "dsrs_quantize_sizes", "config->bits", "got 3"):
        ds.quantize_sizes(8, bits=3, group_size=2)
    with raises(errors.OutOfRangeError, "dsrs_quantize_sizes", "config->group_size", "got 0"):
        ds.quantize_sizes(8, group_size=0)
    with raises(errors.OutOfRangeError, "n"):
        ds.quantize_sizes(-1, group_size=2)
    with pytest.raises(TypeError):
        ds.quantize_sizes(8)  # group_size is required


# --------------------------------------------------------------------------------------
# Errors.


class Outs:
    """Output arrays for 19 elements in groups of 4, full of sentinels, and their snapshot."""

    def __init__(self, rng):
        self.x = rng.uniform(-4, 4, 19).astype(np.float32)
        self.q8 = np.full(19, 0x5A, np.uint8)
        self.q4 = np.full(10, 0x5A, np.uint8)
        self.s = np.full(5, 1.25, np.float32)
        self.o = np.full(5, -0.5, np.float32)
        self.y = np.full(19, 7.0, np.float32)
        self.snap = [a.copy() for a in (self.x, self.q8, self.q4, self.s, self.o, self.y)]

    def unchanged(self):
        for a, b in zip((self.x, self.q8, self.q4, self.s, self.o, self.y), self.snap):
            assert_same_bits(a, b, "after a failing call")


def test_errors_from_the_library_name_the_argument_and_write_nothing(rng):
    t = Outs(rng)
    x, q8, q4, s, o, y = t.x, t.q8, t.q4, t.s, t.o, t.y
    big = np.zeros(128, np.uint8)
    Q, D = "dsrs_quantize", "dsrs_dequantize"
    cases = [
        (errors.OutOfRangeError, (Q, "config->bits", "got 3"),
         lambda: ds.quantize(x, bits=3, group_size=4, out=(q8, s))),
        (errors.OutOfRangeError, (D, "config->bits", "16"),
         lambda: ds.dequantize(q8, s, n=19, bits=16, symmetric=True, group_size=4, out=y)),
        (errors.OutOfRangeError, (Q, "config->group_size", "got 0"),
         lambda: ds.quantize(x, group_size=0, out=(q8, s))),
        (errors.OutOfRangeError, (Q, "config->symmetric", "got 2"),
         lambda: ds.quantize(x, symmetric=2, group_size=4, out=(q8, s))),
        (errors.OutOfRangeError, (Q, "config->rounding", "got 5"),
         lambda: ds.quantize(x, group_size=4, rounding=5, out=(q8, s))),
        (errors.OutOfRangeError, (Q, "config->num_threads", "-1"),
         lambda: ds.quantize(x, group_size=4, num_threads=-1, out=(q8, s))),
        (errors.OutOfRangeError, (D, "config->backend", "got 9"),
         lambda: ds.dequantize(q8, s, bits=8, symmetric=True, group_size=4, backend=9, out=y)),
        (errors.UnsupportedError, (Q, "argument 'input'", "float64"),
         lambda: ds.quantize(x.astype(np.float64), group_size=4, out=(q8, s))),
        (errors.UnsupportedError, (D, "argument 'output'", "int32"),
         lambda: ds.dequantize(q8, s, bits=8, symmetric=True, group_size=4,
                               out=y.view(np.int32))),
        (errors.InvalidArgumentError, (Q, "argument 'q' has 18 elements but 19 are expected"),
         lambda: ds.quantize(x, group_size=4, out=(q8[:18], s))),
        (errors.InvalidArgumentError, (Q, "argument 'q' has 19 elements but 10", "two per byte"),
         lambda: ds.quantize(x, bits=4, group_size=4, out=(q8, s))),
        (errors.InvalidArgumentError, (Q, "argument 'scales' has 4 elements but 5"),
         lambda: ds.quantize(x, group_size=4, out=(q8, s[:4]))),
        (errors.InvalidArgumentError, (Q, "argument 'offsets' has 3 elements but 5"),
         lambda: ds.quantize(x, bits=4, symmetric=False, group_size=4, out=(q4, s, o[:3]))),
        (errors.InvalidArgumentError, (Q, "argument 'q' must be int8 or uint8, got int32"),
         lambda: ds.quantize(x, group_size=4, out=(np.zeros(19, np.int32), s))),
        (errors.InvalidArgumentError, (Q, "argument 'scales' must be float32, got float16"),
         lambda: ds.quantize(x, group_size=4, out=(q8, np.zeros(5, np.float16)))),
        (errors.InvalidArgumentError, (Q, "argument 'offsets' must be NULL", "symmetric"),
         lambda: ds.quantize(x, group_size=4, out=(q8, s, o))),
        (errors.NullArgumentError, (Q, "argument 'offsets' is NULL", "asymmetric"),
         lambda: ds.quantize(x, symmetric=False, group_size=4, out=(q8, s))),
        (errors.NullArgumentError, (D, "argument 'offsets' is NULL"),
         lambda: ds.dequantize(q4, s, None, n=19, bits=4, symmetric=False, group_size=4,
                               out=y)),
        (errors.InvalidArgumentError, (D, "argument 'scales' must be float32, got float64"),
         lambda: ds.dequantize(q8, s.astype(np.float64), n=19, bits=8, symmetric=True,
                               group_size=4, out=y)),
        (errors.InvalidArgumentError, (D, "argument 'q' has 10 elements but 19"),
         lambda: ds.dequantize(q4, s, n=19, bits=8, symmetric=True, group_size=4, out=y)),
        (errors.InvalidArgumentError, (Q, "arguments 'q' and 'scales' overlap"),
         lambda: ds.quantize(x, group_size=4, out=(big[:19], big[16:36].view(np.float32)))),
        (errors.InvalidArgumentError, (D, "arguments 'output' and 'scales' overlap"),
         lambda: ds.dequantize(q8, big.view(np.float32)[10:15], bits=8, symmetric=True,
                               group_size=4, out=big.view(np.float32)[:19])),
    ]
    for cls, needles, call in cases:
        with raises(cls, *needles) as info:
            call()
        assert info.value.message.split(": ")[0] in (Q, D), info.value
        t.unchanged()
        assert np.all(big == 0)


def test_errors_found_by_the_binding(rng):
    t = Outs(rng)
    x, q8, s = t.x, t.q8, t.s
    strided = np.zeros(38, np.uint8)[::2]
    ro = np.zeros(19, np.uint8)
    ro.flags.writeable = False
    unaligned = np.frombuffer(bytearray(4 * 5 + 1), np.float32, count=5, offset=1)
    cases = [
        (errors.InvalidArgumentError, ("'q'", "not contiguous"),
         lambda: ds.quantize(x, group_size=4, out=(strided, s))),
        (errors.InvalidArgumentError, ("'q'", "read-only"),
         lambda: ds.quantize(x, group_size=4, out=(ro, s))),
        (errors.InvalidArgumentError, ("'scales'", "not aligned"),
         lambda: ds.quantize(x, group_size=4, out=(q8, unaligned))),
        (errors.InvalidArgumentError, ("'output'", "not contiguous"),
         lambda: ds.dequantize(q8, s, bits=8, symmetric=True, group_size=4,
                               out=np.zeros(38, np.float32)[::2])),
        (errors.InvalidArgumentError, ("'output'", "38 elements", "n = 19"),
         lambda: ds.dequantize(q8, s, n=19, bits=8, symmetric=True, group_size=4,
                               out=np.zeros(38, np.float32))),
        (errors.UnsupportedError, ("'input'", "uint16", "bfloat16"),
         lambda: ds.quantize(x.astype(np.float16).view(np.uint16), group_size=4, out=(q8, s))),
        (errors.InvalidArgumentError, ("bfloat16",),
         lambda: ds.quantize((x, "bfloat16"), group_size=4, out=(q8, s))),
        (errors.OutOfRangeError, ("seed",),
         lambda: ds.quantize(x, group_size=4, rounding="stochastic", seed=-1, out=(q8, s))),
        (errors.OutOfRangeError, ("offset",),
         lambda: ds.quantize(x, group_size=4, offset=2**64, out=(q8, s))),
        (errors.OutOfRangeError, ("group_size",),
         lambda: ds.quantize(x, group_size=-4, out=(q8, s))),
        (errors.OutOfRangeError, ("bits",), lambda: ds.quantize(x, bits=2**31, group_size=4)),
        (ValueError, ("unknown rounding", "stochastic"),
         lambda: ds.quantize(x, group_size=4, rounding="up", out=(q8, s))),
        (ValueError, ("unknown backend", "reference"),
         lambda: ds.quantize(x, group_size=4, backend="fast", out=(q8, s))),
        (TypeError, ("numpy.ndarray",), lambda: ds.quantize([1.0, 2.0], group_size=4)),
        (TypeError, ("'q'", "numpy.ndarray"), lambda: ds.quantize(x, group_size=4, out=(b"q", s))),
        (TypeError, ("out must be a tuple",), lambda: ds.quantize(x, group_size=4, out=q8)),
        (TypeError, ("symmetric",), lambda: ds.quantize(x, symmetric="yes", group_size=4)),
        (TypeError, ("group_size",), lambda: ds.quantize(x, group_size=4.0)),
        (TypeError, ("n=",), lambda: ds.dequantize(q8, s, bits=8, symmetric=True, group_size=4)),
        (TypeError, (), lambda: ds.quantize(x)),  # group_size is required
        (TypeError, (), lambda: ds.quantize(x, 8, True, 4)),  # and keyword-only
        (TypeError, (), lambda: ds.dequantize(q8, s, n=19, group_size=4)),  # bits, symmetric
    ]
    for cls, needles, call in cases:
        with raises(cls, *needles):
            call()
        t.unchanged()


def test_error_classes_are_also_builtin_exceptions(rng):
    x = rng.uniform(-1, 1, 8).astype(np.float32)
    with pytest.raises(IndexError):  # OutOfRangeError
        ds.quantize(x, bits=5, group_size=2)
    with pytest.raises(ValueError):  # InvalidArgumentError
        ds.quantize(x, group_size=2, out=(np.zeros(7, np.int8), np.zeros(4, np.float32)))
    with pytest.raises(TypeError):  # UnsupportedError
        ds.quantize(x.astype(np.float64), group_size=2)
    with pytest.raises(ValueError):  # NullArgumentError
        ds.quantize(x, symmetric=False, group_size=2,
                    out=(np.zeros(8, np.uint8), np.zeros(4, np.float32)))
