"""The demo dataset: three interleaved spiral arms in the plane, generated from a seed.

Bit-identical to ``examples/c/spiral_data.h`` (the C demo's generator): both use only
IEEE-754 double additions, subtractions, multiplications, divisions and ``floor`` (no
``libm`` sine, cosine or logarithm, whose last bits may differ between libraries), in the
same order, so the float32 points are the same bits everywhere. ``examples/README.md``
states the algorithm and the FNV-1a hash of the default dataset.

>>> x_train, y_train, x_test, y_test = make_dataset()
>>> x_train.shape, y_train.shape, x_test.shape
((3000, 2), (3000,), (1000, 2))
"""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np

#: The default seed of the demos.
SEED = 20240607
#: Points in the training set and in the held-out set.
N_TRAIN = 3000
N_TEST = 1000
#: Classes (spiral arms).
CLASSES = 3
#: Standard deviation of the noise added to the angle (radians) and to each coordinate.
ANGLE_NOISE = 0.3
XY_NOISE = 0.02
#: How far each arm turns from the centre to the rim (radians).
TURN = 10.0

_MASK = (1 << 64) - 1
_TWO_PI = 6.283185307179586
_SQRT3 = 1.7320508075688772


class SplitMix64:
    """Sebastiano Vigna's splitmix64 generator (the seeding generator of xoshiro)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A double in [0, 1): the top 53 bits times 2^-53."""
        return float(self.next_u64() >> 11) * (1.0 / 9007199254740992.0)

    def normal(self) -> float:
        """An approximately standard normal double: the Irwin-Hall sum of four uniforms,
        centred and scaled to unit variance, ``(u1 + u2 + u3 + u4 - 2) * sqrt(3)``."""
        s = self.uniform()
        s = s + self.uniform()
        s = s + self.uniform()
        s = s + self.uniform()
        return (s - 2.0) * _SQRT3


def _sin_cos(x: float) -> Tuple[float, float]:
    """sin and cos of x from their Taylor series after reducing x to [-pi, pi] (17 terms
    each: exact to about 1e-16 there), in a fixed operation order."""
    k = float(np.floor(x / _TWO_PI + 0.5))
    r = x - k * _TWO_PI
    r2 = r * r
    s = r
    c = 1.0
    ts = r
    tc = 1.0
    for n in range(1, 18):
        ts = ts * -r2 / float((2 * n) * (2 * n + 1))
        tc = tc * -r2 / float((2 * n - 1) * (2 * n))
        s = s + ts
        c = c + tc
    return s, c


def points(seed: int = SEED, count: int = N_TRAIN + N_TEST) -> Iterator[Tuple[float, float, int]]:
    """The points one by one: ``(x, y, label)`` with x and y rounded to float32 values."""
    rng = SplitMix64(seed)
    for i in range(count):
        label = i % CLASSES
        r = 0.05 + 0.95 * rng.uniform()
        angle = label * (_TWO_PI / CLASSES) + TURN * r + ANGLE_NOISE * rng.normal()
        s, c = _sin_cos(angle)
        x = r * c + XY_NOISE * rng.normal()
        y = r * s + XY_NOISE * rng.normal()
        yield float(np.float32(x)), float(np.float32(y)), label


def make_dataset(seed: int = SEED, n_train: int = N_TRAIN,
                 n_test: int = N_TEST) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: float32 ``[n, 2]`` points and int32 labels;
    the first ``n_train`` points of the stream train, the next ``n_test`` are held out."""
    pts = list(points(seed, n_train + n_test))
    xy = np.array([(p[0], p[1]) for p in pts], dtype=np.float32).reshape(-1, 2)
    labels = np.array([p[2] for p in pts], dtype=np.int32)
    return xy[:n_train], labels[:n_train], xy[n_train:], labels[n_train:]


def fnv1a64(*arrays: np.ndarray) -> int:
    """FNV-1a (64-bit) of the arrays' bytes (little-endian, C order), one after another."""
    h = 0xCBF29CE484222325
    for a in arrays:
        for b in np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes():
            h = ((h ^ b) * 0x100000001B3) & _MASK
    return h


def dataset_hash(seed: int = SEED) -> int:
    """The FNV-1a hash of the default-sized dataset: x_train, y_train, x_test, y_test."""
    return fnv1a64(*make_dataset(seed))


if __name__ == "__main__":
    print(f"dataset fnv1a64 0x{dataset_hash():016x}")
