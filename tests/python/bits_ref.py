"""Helpers of the tests that compare numpy arrays bit for bit (test_optim.py,
test_quantizer.py): bfloat16 as uint16 bits, bit comparison, and ``raises``."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even (NaN stays a quiet NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def from_bf16(b: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32, exactly."""
    return (b.astype(np.uint32) << 16).view(np.float32)


def bits(a: np.ndarray) -> np.ndarray:
    """The elements of a 1-, 2- or 4-byte array as unsigned integers of that size."""
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """The same number of elements of the same size, bit for bit (read flattened)."""
    got, want = np.asarray(got).reshape(-1), np.asarray(want).reshape(-1)
    assert got.dtype.itemsize == want.dtype.itemsize and got.shape == want.shape, (
        f"{what}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}")
    diff = np.flatnonzero(bits(got) != bits(want))
    if diff.size:
        i = diff[0]
        pytest.fail(f"{what}: {diff.size} of {got.size} elements differ, first [{i}]: "
                    f"{got[i]!r} ({int(bits(got)[i]):#x}) vs {want[i]!r} ({int(bits(want)[i]):#x})")


@contextlib.contextmanager
def raises(cls, *needles):
    """pytest.raises for `cls` whose message contains every needle."""
    with pytest.raises(cls) as info:
        yield info
    for n in needles:
        assert n in str(info.value), f"{n!r} not in {info.value}"
