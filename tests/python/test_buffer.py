"""Buffers: copies, fills, memory statistics, and zero-copy numpy views through DLPack."""

from __future__ import annotations

import ctypes
import gc
import weakref

import numpy as np
import pytest

import deepspeed_rs as ds
from deepspeed_rs import _dlpack
from deepspeed_rs._lib import DLPACK_FLAG_BITMASK_IS_COPIED, DLPACK_FLAG_BITMASK_READ_ONLY, kDLCPU

KINDS = ["device", "host", "pinned"]


def allocated(a: ds.Accelerator) -> int:
    return a.memory_allocated()


@pytest.mark.parametrize("kind", KINDS)
def test_write_read_round_trip(cpu, rng, kind):
    for _ in range(20):
        size = int(rng.integers(1, 5000))
        with cpu.buffer(size, kind=kind) as b:
            assert b.nbytes == len(b) == size and b.kind == kind
            assert b.read() == bytes(size), "buffers start zeroed"
            data = rng.bytes(size)
            assert b.write(data) == size
            assert b.read() == data
            off = int(rng.integers(0, size))
            n = int(rng.integers(0, size - off + 1))
            chunk = rng.bytes(n)
            b.write(bytearray(chunk), offset=off)
            expect = data[:off] + chunk + data[off + n:]
            assert b.read() == expect
            assert b.read(n, offset=off) == chunk
            ro = int(rng.integers(0, size))
            assert b.read(offset=ro) == expect[ro:]


def test_write_accepts_bytes_likes_and_arrays(cpu, rng):
    with cpu.buffer(4096) as b:
        arr = rng.standard_normal(64).astype(np.float64)
        b.write(arr)  # dsrs_buffer_copy_from_tensor
        assert b.read(arr.nbytes) == arr.tobytes()
        m = rng.integers(0, 2**31, size=(8, 6), dtype=np.int32)
        b.write(m.T, offset=1024)  # non-contiguous: copied in row-major order first
        assert b.read(m.nbytes, 1024) == np.ascontiguousarray(m.T).tobytes()
        f16 = rng.standard_normal(33).astype(np.float16)
        b.write(memoryview(f16), offset=7)
        assert b.read(f16.nbytes, 7) == f16.tobytes()
        big_endian = np.arange(5, dtype=">u4")
        b.write(big_endian, offset=100)  # raw bytes, whatever the byte order
        assert b.read(20, 100) == big_endian.tobytes()
        with pytest.raises(TypeError):
            b.write("text")


def test_read_into(cpu, rng):
    data = rng.bytes(256)
    with cpu.buffer(256) as b:
        b.write(data)
        out = np.empty(32, np.float64)
        b.read_into(out)  # dsrs_buffer_copy_to_tensor
        assert out.tobytes() == data
        ba = bytearray(100)
        b.read_into(ba, offset=50)
        assert bytes(ba) == data[50:150]
        with pytest.raises(ds.OutOfRangeError):
            b.read_into(np.empty(33, np.float64))
        with pytest.raises(ValueError):
            b.read_into(np.empty((8, 8), np.float32).T)


def test_out_of_bounds_is_refused_and_leaves_the_buffer(cpu, rng):
    data = rng.bytes(64)
    with cpu.buffer(64) as b:
        b.write(data)
        with pytest.raises(ds.OutOfRangeError) as ei:
            b.write(b"123", offset=62)
        assert "dsrs_buffer_write" in ei.value.message
        with pytest.raises(ds.OutOfRangeError):
            b.read(65)
        with pytest.raises(ds.OutOfRangeError):
            b.read(1, offset=64)
        assert b.read() == data


def test_copy_between_and_within_buffers(cpu, rng):
    for _ in range(30):
        size = int(rng.integers(1, 2000))
        src_data = np.frombuffer(rng.bytes(size), np.uint8)
        with cpu.buffer(size) as src, cpu.buffer(size, kind="host") as dst:
            src.write(src_data)
            dst_data = np.frombuffer(rng.bytes(size), np.uint8).copy()
            dst.write(dst_data)
            so = int(rng.integers(0, size))
            do = int(rng.integers(0, size))
            n = int(rng.integers(0, min(size - so, size - do) + 1))
            dst.copy_from(src, dst_offset=do, src_offset=so, n=n)
            dst_data[do:do + n] = src_data[so:so + n]
            assert dst.read() == dst_data.tobytes()
            # Overlapping copy within one buffer behaves like memmove.
            ref = src_data.copy()
            ref[do:do + n] = src_data[so:so + n].copy()
            src.copy_from(src, dst_offset=do, src_offset=so, n=n)
            assert src.read() == ref.tobytes()


@pytest.mark.parametrize("psize", [1, 2, 4, 8])
def test_fill_patterns(cpu, rng, psize):
    with cpu.buffer(512) as b:
        base = rng.bytes(512)
        b.write(base)
        pattern = rng.bytes(psize)
        off = int(rng.integers(0, 512 // psize)) * psize
        count = int(rng.integers(0, (512 - off) // psize + 1))
        b.fill(pattern, offset=off, n=count * psize)
        assert b.read() == base[:off] + pattern * count + base[off + count * psize:]
        b.fill(pattern)
        assert b.read() == pattern * (512 // psize)
    with cpu.buffer(9) as b:
        b.fill(0xAB)
        assert b.read() == b"\xab" * 9
        with pytest.raises(ds.DsrsError):
            b.fill(b"abc")  # 3-byte patterns are not allowed
        with pytest.raises(ds.DsrsError):
            b.fill(b"ab")  # 9 bytes are not a multiple of 2


def test_alignment_and_pointers(cpu, rng):
    for align in [0, 1, 8, 64, 256, 4096]:
        with cpu.buffer(int(rng.integers(1, 100)), alignment=align) as b:
            assert b.ptr != 0 and b.ptr % max(align, 256 if align == 0 else 1) == 0
            assert b.device == (kDLCPU, 0)
    with pytest.raises(ds.DsrsError):
        cpu.buffer(10, alignment=3)
    with cpu.buffer(0) as empty:
        assert empty.nbytes == 0 and empty.ptr == 0 and empty.read() == b""
        assert empty.numpy("float32").shape == (0,)


def test_buffer_knows_its_accelerator(cpu):
    with cpu.buffer(8) as b:
        a = b.accelerator
        try:
            assert a.name == "cpu" and a.device_count() == 2
            assert a.handle != cpu.handle  # a new reference
        finally:
            a.close()


@pytest.mark.parametrize("kind", KINDS)
def test_memory_statistics_move_by_exactly_the_allocated_bytes(kind, rng):
    with ds.Accelerator("cpu") as a:
        assert allocated(a) == 0
        sizes = [int(s) for s in rng.integers(1, 100_000, size=8)]
        bufs = []
        total = 0
        for s in sizes:
            bufs.append(a.buffer(s, kind=kind))
            total += s
            assert allocated(a) == total
            assert a.memory_reserved() == total
            assert a.max_memory_allocated() == total
        stats = a.memory_stats()
        assert stats["allocated_bytes.all.current"] == total
        assert stats["allocation.all.current"] == len(sizes)
        if kind == "pinned":
            assert stats["pinned_bytes.all.current"] == total
            assert all(a.is_pinned(b) for b in bufs)
        else:
            assert stats["pinned_bytes.all.current"] == 0
            assert not any(a.is_pinned(b) for b in bufs)
        peak = total
        order = rng.permutation(len(bufs))
        for i in order:
            bufs[i].close()
            total -= sizes[i]
            assert allocated(a) == total
        assert a.max_memory_allocated() == peak
        a.reset_peak_memory_stats()
        assert a.max_memory_allocated() == 0 == a.max_memory_reserved()
        stats = a.memory_stats()
        assert stats["allocation.all.allocated"] == stats["allocation.all.freed"] == len(sizes)
        assert stats["allocated_bytes.all.allocated"] == sum(sizes)


def test_is_pinned_inside_pinned_ranges(cpu, rng):
    with cpu.buffer(10_000, kind="pinned") as p, cpu.buffer(10_000) as d:
        for _ in range(10):
            i = int(rng.integers(0, 10_000))
            assert cpu.is_pinned(p.ptr + i)
            assert not cpu.is_pinned(d.ptr + i)
        assert cpu.is_pinned(p.numpy()[17:])
        assert not cpu.is_pinned(np.zeros(10))
        assert not cpu.is_pinned(0)


def test_memory_limit_is_enforced(rng):
    limit = int(rng.integers(10_000, 100_000))
    with ds.Accelerator("cpu", memory_limit=limit) as a:
        assert a.total_memory() == limit
        first = int(rng.integers(1, limit))
        b1 = a.buffer(first)
        assert a.available_memory() == limit - first
        with pytest.raises(ds.OutOfMemoryError) as ei:
            a.buffer(limit - first + 1)
        assert str(limit) in ei.value.message
        assert a.memory_stats()["num_ooms"] == 1
        assert allocated(a) == first
        b2 = a.buffer(limit - first)  # exactly up to the limit
        assert a.available_memory() == 0
        with pytest.raises(ds.OutOfMemoryError):
            a.buffer(1)
        b1.close()
        a.buffer(first).close()
        b2.close()
        assert allocated(a) == 0


# ---------------------------------------------------------------------------------------
# numpy views


@pytest.mark.parametrize("via", ["dlpack", "array_interface"])
def test_numpy_view_is_zero_copy_both_ways(cpu, rng, via):
    with cpu.buffer(8192) as b:
        x = b.numpy("float32", shape=(16, 32), offset=1024, via=via)
        assert x.shape == (16, 32) and x.dtype == np.float32 and x.flags.writeable
        assert x.ctypes.data == b.ptr + 1024
        values = rng.standard_normal((16, 32)).astype(np.float32)
        x[...] = values  # write through numpy ...
        assert b.read(values.nbytes, offset=1024) == values.tobytes()  # ... read through C
        raw = rng.bytes(256)
        b.write(raw, offset=1024 + 512)  # write through C ...
        assert x.reshape(-1)[128:192].tobytes() == raw  # ... seen by numpy
        whole = b.numpy(via=via)  # uint8, everything
        assert whole.shape == (8192,) and whole.tobytes() == b.read()


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
              "float16", "float32", "float64", "complex64", "complex128", "bool"]
)
def test_numpy_view_dtypes(cpu, rng, dtype):
    nd = np.dtype(dtype)
    count = int(rng.integers(1, 50))
    raw = rng.bytes(count * nd.itemsize)
    if dtype == "bool":
        raw = bytes(x & 1 for x in raw)
    with cpu.buffer(len(raw)) as b:
        b.write(raw)
        v = b.numpy(dtype)
        assert v.dtype == nd and v.shape == (count,)
        np.testing.assert_array_equal(v, np.frombuffer(raw, nd))


def test_numpy_view_geometry_is_checked(cpu):
    with cpu.buffer(100) as b:
        with pytest.raises(ds.OutOfRangeError):
            b.numpy("float32", shape=(26,))
        with pytest.raises(ds.InvalidArgumentError):
            b.numpy("float32", shape=(2,), offset=2)  # not a multiple of the element size
        with pytest.raises(TypeError):
            b.numpy("bfloat16")  # numpy has no bfloat16
        assert b.numpy("float32", shape=()).shape == ()
        assert b.numpy("int16", shape=(0, 5)).shape == (0, 5)


def test_capsules_legacy_and_versioned(cpu, rng):
    with cpu.buffer(64) as b:
        view = b.view("float64", (2, 4))
        legacy = view.__dlpack__()
        assert _dlpack.capsule_name(legacy) == "dltensor"
        versioned = view.__dlpack__(max_version=(1, 1))
        assert _dlpack.capsule_name(versioned) == "dltensor_versioned"
        assert _dlpack.capsule_name(view.__dlpack__(max_version=(0, 8))) == "dltensor"
        p = _dlpack.capsule_pointer(versioned)
        mtv = ctypes.cast(p, ctypes.POINTER(ds._lib.DLManagedTensorVersioned)).contents
        assert (mtv.version.major, mtv.version.minor) == (1, 1)
        assert mtv.flags & DLPACK_FLAG_BITMASK_READ_ONLY == 0
        t = mtv.dl_tensor
        assert t.data == b.ptr and t.ndim == 2 and (t.dtype.code, t.dtype.bits) == (2, 64)
        assert [t.shape[0], t.shape[1]] == [2, 4] and [t.strides[0], t.strides[1]] == [4, 1]
        del legacy, versioned
        a = np.from_dlpack(view)
        assert a.shape == (2, 4)
        assert view.__dlpack_device__() == b.__dlpack_device__() == (kDLCPU, 0)
        with pytest.raises(BufferError):
            view.__dlpack__(dl_device=(2, 0))
        with pytest.raises(BufferError):
            view.__dlpack__(stream=1)
        assert _dlpack.capsule_name(view.__dlpack__(dl_device=(kDLCPU, 0))) == "dltensor"


def test_numpy_consumes_and_renames_the_capsule(cpu, rng):
    with cpu.buffer(32) as b:
        view = b.view("int32")
        handed_out = []

        class Spy:
            def __dlpack__(self, **kw):
                handed_out.append(view.__dlpack__(**kw))
                return handed_out[-1]

            def __dlpack_device__(self):
                return view.__dlpack_device__()

        arr = np.from_dlpack(Spy())
        assert arr.shape == (8,) and len(handed_out) == 1
        assert _dlpack.capsule_name(handed_out[0]).startswith("used_dltensor")
        del handed_out[:]  # consumed: its destructor must not free the export numpy owns
        gc.collect()
        values = rng.integers(-(2**31), 2**31, size=8, dtype=np.int32)
        b.write(values)
        np.testing.assert_array_equal(arr, values)
        if arr.flags.writeable:  # numpy >= 2 imports writable arrays
            arr[:] = values[::-1]
            assert b.read() == values[::-1].tobytes()


def test_unconsumed_capsules_release_their_export():
    with ds.Accelerator("cpu") as a:
        b = a.buffer(4096)
        caps = [b.view("uint8").__dlpack__(max_version=v) for v in (None, (1, 0))] * 3
        b.close()
        assert allocated(a) == 4096, "exports keep the memory"
        del caps
        gc.collect()
        assert allocated(a) == 0


@pytest.mark.parametrize("via", ["dlpack", "array_interface"])
def test_array_outlives_the_buffer(rng, via):
    with ds.Accelerator("cpu") as a:
        size = int(rng.integers(1000, 100_000)) * 8
        b = a.buffer(size)
        x = b.numpy("float64", via=via)
        values = rng.standard_normal(x.shape)
        x[:] = values
        y = x[5:]  # a view of the view keeps it alive too
        b.close()
        assert allocated(a) == size, "memory stays while an array uses it"
        np.testing.assert_array_equal(x, values)
        x[:] = -values  # still writable, still valid
        del x
        gc.collect()
        assert allocated(a) == size
        np.testing.assert_array_equal(y, -values[5:])
        ref = weakref.ref(y.base) if y.base is not None else None
        del y
        gc.collect()
        assert ref is None or ref() is None
        assert allocated(a) == 0, "freed once the last array is collected"


def test_readonly_views(cpu, rng):
    data = rng.bytes(40)
    with cpu.buffer(40) as b:
        b.write(data)
        for via in ("dlpack", "array_interface"):
            r = b.numpy("uint32", readonly=True, via=via)
            assert not r.flags.writeable
            with pytest.raises(ValueError):
                r[0] = 1
            assert r.tobytes() == data
        cap = b.view("uint8").__dlpack__  # sanity: the buffer itself is writable
        assert cap is not None
        p_cap = ds.buffer._ReadOnlyProducer(b.view("uint8")).__dlpack__(max_version=(1, 0))
        mtv = ctypes.cast(_dlpack.capsule_pointer(p_cap),
                          ctypes.POINTER(ds._lib.DLManagedTensorVersioned)).contents
        assert mtv.flags & DLPACK_FLAG_BITMASK_READ_ONLY


def test_copy_true_exports_an_independent_copy(rng):
    with ds.Accelerator("cpu") as a, a.buffer(64) as b:
        data = rng.bytes(64)
        b.write(data)
        view = b.view("uint8", (32,), offset=16)
        cap = view.__dlpack__(max_version=(1, 0), copy=True)
        mtv = ctypes.cast(_dlpack.capsule_pointer(cap),
                          ctypes.POINTER(ds._lib.DLManagedTensorVersioned)).contents
        assert mtv.flags & DLPACK_FLAG_BITMASK_IS_COPIED
        assert mtv.dl_tensor.data != b.ptr + 16
        assert allocated(a) == 64 + 32
        del mtv
        try:
            c = np.from_dlpack(view, copy=True)
        except TypeError:  # numpy < 2.1: no copy keyword
            c = np.from_dlpack(type("P", (), {
                "__dlpack__": lambda self, **kw: view.__dlpack__(copy=True),
                "__dlpack_device__": lambda self: view.__dlpack_device__()})())
        assert c.tobytes() == data[16:48]
        assert c.ctypes.data != b.ptr + 16
        b.fill(0)
        assert c.tobytes() == data[16:48]
        del cap, c
        gc.collect()
        assert allocated(a) == 64


def test_numpy_from_dlpack_on_the_buffer_itself(cpu, rng):
    data = rng.bytes(77)
    with cpu.buffer(77) as b:
        b.write(data)
        v = np.from_dlpack(b)
        assert v.dtype == np.uint8 and v.tobytes() == data


def test_empty_and_scalar_views_through_the_array_interface(cpu, rng):
    with cpu.buffer(0) as empty:
        assert empty.numpy("float64", via="array_interface").shape == (0,)
    with cpu.buffer(8) as b:
        value = float(rng.standard_normal())
        b.write(np.float64(value).tobytes())
        s = b.numpy("float64", shape=(), via="array_interface")
        assert s.shape == () and float(s) == value


def test_a_rejected_capsule_is_still_released(monkeypatch):
    """numpy refuses bfloat16 after taking the capsule and drops it with its error set:
    the capsule destructor still releases the export (see deepspeed_rs._dlpack)."""
    reported = []
    monkeypatch.setattr("sys.unraisablehook", reported.append)
    with ds.Accelerator("cpu") as a:
        b = a.buffer(64)
        with pytest.raises(Exception):
            np.from_dlpack(b.view("bfloat16"))
        b.close()
        gc.collect()
        assert allocated(a) == 0
    assert reported and "DLPack capsule" in reported[0].err_msg
