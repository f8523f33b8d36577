"""Independent references for the library's random numbers (written from the
specification in src/accelerator/rng.rs' module docs, not from its code).

* Philox4x32-10 (Salmon et al., Random123): key = (seed & 0xffffffff, seed >> 32); block b
  is the counter (b & 0xffffffff, b >> 32, 0, 0) and yields 4 words, used in order.
* A fill starts at block `offset` and advances the offset by the blocks it touched.
* uniform, 32-bit types: u = (w >> 8) * 2**-24; float64: u = ((w0 << 32 | w1) >> 11) * 2**-53;
  value = low + (high - low) * u in float64, rounded to the element type.
* normal: Box-Muller on word pairs (float64: quadruples); see `normal_from_words`.
"""

from __future__ import annotations

import math
import struct
from typing import List, Sequence, Tuple

import numpy as np

M0 = 0xD2511F53
M1 = 0xCD9E8D57
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF

#: Random123's known-answer vectors (kat_vectors, "philox4x32 10").
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox4x32_10(counter: Sequence[int], key: Sequence[int]) -> Tuple[int, int, int, int]:
    """One Philox4x32 block, 10 rounds, in plain Python integers."""
    c0, c1, c2, c3 = (int(x) & MASK32 for x in counter)
    k0, k1 = (int(x) & MASK32 for x in key)
    for rnd in range(10):
        if rnd:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        p0 = M0 * c0
        p1 = M1 * c2
        hi0, lo0 = p0 >> 32, p0 & MASK32
        hi1, lo1 = p1 >> 32, p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def key_of(seed: int) -> Tuple[int, int]:
    return seed & MASK32, (seed >> 32) & MASK32


def words_py(seed: int, offset: int, n: int) -> List[int]:
    """The first `n` words of a fill starting at block `offset` (pure Python)."""
    key = key_of(seed)
    out: List[int] = []
    block = offset
    while len(out) < n:
        out.extend(philox4x32_10((block & MASK32, block >> 32, 0, 0), key))
        block += 1
    return out[:n]


def words_np(seed: int, offset: int, n: int) -> np.ndarray:
    """Like `words_py`, vectorized with numpy (uint32 array of `n` words)."""
    nblocks = (n + 3) // 4
    blocks = np.arange(nblocks, dtype=np.uint64) + np.uint64(offset)
    c0 = blocks & np.uint64(MASK32)
    c1 = blocks >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = key_of(seed)
    m0, m1, mask = np.uint64(M0), np.uint64(M1), np.uint64(MASK32)
    for rnd in range(10):
        if rnd:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        p0 = m0 * c0
        p1 = m1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & mask
        hi1, lo1 = p1 >> np.uint64(32), p1 & mask
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    out = np.stack([c0, c1, c2, c3], axis=1).reshape(-1).astype(np.uint32)
    return out[:n]


def blocks_used(words: int) -> int:
    return (words + 3) // 4


def unit24(w: np.ndarray) -> np.ndarray:
    return (w >> np.uint32(8)).astype(np.float64) * 2.0**-24


def unit53(w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    x = (w0.astype(np.uint64) << np.uint64(32)) | w1.astype(np.uint64)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def uniform_f64_values(seed: int, offset: int, n: int, low: float, high: float,
                       wide: bool) -> np.ndarray:
    """Uniform values in float64 before rounding to the element type."""
    if wide:
        w = words_np(seed, offset, 2 * n)
        u = unit53(w[0::2], w[1::2])
    else:
        u = unit24(words_np(seed, offset, n))
    return low + (high - low) * u


def normal_f64_values(seed: int, offset: int, n: int, mean: float, std: float,
                      wide: bool) -> np.ndarray:
    """Box-Muller normal values in float64 before rounding (pairs share two words, or
    four for float64: u1 = (bits + 1) * 2**-k in (0, 1], u2 = bits * 2**-k in [0, 1))."""
    pairs = (n + 1) // 2
    if wide:
        w = words_np(seed, offset, 4 * pairs)
        a = (w[0::4].astype(np.uint64) << np.uint64(32)) | w[1::4].astype(np.uint64)
        u1 = ((a >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
        u2 = unit53(w[2::4], w[3::4])
    else:
        w = words_np(seed, offset, 2 * pairs)
        u1 = ((w[0::2] >> np.uint32(8)).astype(np.float64) + 1.0) * 2.0**-24
        u2 = unit24(w[1::2])
    r = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * math.pi * u2
    z = np.empty(2 * pairs)
    z[0::2] = r * np.cos(theta)
    z[1::2] = r * np.sin(theta)
    return mean + std * z[:n]


def normal_words(n: int, wide: bool) -> int:
    return ((n + 1) // 2) * (4 if wide else 2)


def f64_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Correctly rounded (to nearest, ties to even) float64 -> bfloat16 bit patterns, for
    finite values in bfloat16's normal range (or zero)."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)  # x = m * 2**e, 0.5 <= |m| < 1
    r = np.rint(m * 256.0)  # 8 significant bits, ties to even
    v = np.ldexp(r, e - 8).astype(np.float32)  # exact: representable in bfloat16
    return (v.view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def parse_state(state: bytes) -> Tuple[int, int]:
    """(seed, offset) from the 24-byte generator state."""
    assert len(state) == 24 and state[:8] == b"DSRSPHX1", state
    seed, offset = struct.unpack("<QQ", state[8:])
    return seed, offset
