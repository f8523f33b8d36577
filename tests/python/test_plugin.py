"""Accelerator plugins through the C ABI: the example plugin examples/plugin_hostmem (device
memory in host RAM behind its own caching allocator, DLPack device kDLExtDev), its broken
variants, a minimal plugin that leaves every optional entry NULL, and the
DSRS_ACCELERATOR_PLUGINS / DSRS_ACCELERATOR environment variables. Also the CUDA-only
additions of the same ABI version (device properties, wrapped streams, graphs), which the
CPU and plugin accelerators refuse.

The plugins are compiled once per session with the C compiler (CC, else cc, gcc or clang);
without one the tests are skipped. Loading a plugin registers it for the rest of the
process, so the in-process tests first pin the current accelerator (selected as it would be
without plugins), and the environment-variable tests run in fresh interpreters.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

import deepspeed_rs as ds
from deepspeed_rs import _dlpack, _lib
from deepspeed_rs._lib import lib

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "include"
HOSTMEM_SRC = ROOT / "examples" / "plugin_hostmem" / "hostmem_plugin.c"

kDLCPU = 1
kDLExtDev = 12
GRANULE = 512  # the hostmem allocator rounds every allocation up to this
DEFAULT_CAPACITY = 1 << 30

# A minimal plugin: only the required entries, memory from the C heap that the host may
# address (DSRS_PLUGIN_HOST_MEMORY), work done at submission (DSRS_PLUGIN_SYNCHRONOUS, so no
# synchronize). The TINY_* macros break it in the ways validation must catch.
TINY_SRC = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include "deepspeed_rs.h"

#ifndef TINY_NAME
#define TINY_NAME "tiny"
#endif

static int32_t t_init(const char *options, void **state) {
    (void)options;
    *state = malloc(1);
    return *state ? 0 : DSRS_STATUS_OUT_OF_MEMORY;
}
static void t_destroy(void *state) { free(state); }
static int32_t t_device_count(void *state, uint32_t *out) { (void)state; *out = 1; return 0; }
static int32_t t_memory_info(void *state, uint32_t device, uint64_t *total, uint64_t *available) {
    (void)state; (void)device;
    *total = 1u << 20;
    *available = 1u << 20;
    return 0;
}
static int32_t t_allocate(void *state, uint32_t device, size_t size, size_t align, int32_t kind,
                          void **out) {
    (void)state; (void)device; (void)kind;
    void *p = NULL;
    if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) != 0)
        return DSRS_STATUS_OUT_OF_MEMORY;
    memset(p, 0, size);
    *out = p;
    return 0;
}
static int32_t t_deallocate(void *state, uint32_t device, void *ptr, size_t size, int32_t kind) {
    (void)state; (void)device; (void)size; (void)kind;
    free(ptr);
    return 0;
}
static int32_t t_copy(void *state, uint32_t device, void *dst, bool dst_on_device, const void *src,
                      bool src_on_device, size_t n, void *stream) {
    (void)state; (void)device; (void)dst_on_device; (void)src_on_device; (void)stream;
    memmove(dst, src, n);
    return 0;
}
#ifdef TINY_HALF_STREAMS
static int32_t t_stream_create(void *state, uint32_t device, void **out) {
    (void)state; (void)device; *out = NULL; return 0;
}
#endif

static const dsrs_accelerator_plugin_v1 table = {
    .abi_version = DSRS_ACCELERATOR_PLUGIN_ABI_VERSION,
#ifdef TINY_STRUCT_SIZE
    .struct_size = TINY_STRUCT_SIZE,
#else
    .struct_size = sizeof(dsrs_accelerator_plugin_v1),
#endif
    .name = TINY_NAME,
#ifdef TINY_NOT_SYNCHRONOUS
    .flags = DSRS_PLUGIN_HOST_MEMORY,
#else
    .flags = DSRS_PLUGIN_HOST_MEMORY | DSRS_PLUGIN_SYNCHRONOUS,
#endif
    .dlpack_device_type = kDLCPU,
    .init = t_init,
    .destroy = t_destroy,
    .device_count = t_device_count,
    .memory_info = t_memory_info,
#ifndef TINY_NO_ALLOCATE
    .allocate = t_allocate,
#endif
    .deallocate = t_deallocate,
    .copy = t_copy,
#ifdef TINY_HALF_STREAMS
    .stream_create = t_stream_create,
#endif
};

__attribute__((visibility("default")))
const dsrs_accelerator_plugin_v1 *dsrs_accelerator_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version;
#ifdef TINY_NULL_TABLE
    return NULL;
#else
    return &table;
#endif
}
"""

NOT_A_PLUGIN_SRC = "int not_a_deepspeed_rs_plugin(void) { return 42; }\n"


def _compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _build(cc: str, src: Path, out: Path, *defines: str) -> Path:
    cmd = [cc, "-std=c11", "-O2", "-fPIC", "-shared", "-I", str(INCLUDE), *defines,
           "-o", str(out), str(src), "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"building {out.name} failed:\n{' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return out


@pytest.fixture(scope="session")
def plugins(tmp_path_factory):
    """Paths of the compiled plugins (a SimpleNamespace)."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (CC, cc, gcc or clang) to build the example plugins with")
    d = tmp_path_factory.mktemp("plugins")
    tiny_src = d / "tiny_plugin.c"
    tiny_src.write_text(TINY_SRC)
    not_src = d / "not_a_plugin.c"
    not_src.write_text(NOT_A_PLUGIN_SRC)
    p = types.SimpleNamespace(dir=d)
    p.hostmem = _build(cc, HOSTMEM_SRC, d / "libdsrs_hostmem.so")
    p.abi99 = _build(cc, HOSTMEM_SRC, d / "libdsrs_hostmem_abi99.so", "-DHOSTMEM_ABI_VERSION=99")
    p.broken = _build(cc, HOSTMEM_SRC, d / "libdsrs_hostmem_broken.so", "-DHOSTMEM_FAIL_INIT",
                      '-DHOSTMEM_NAME="hostmem_broken"')
    p.other = _build(cc, HOSTMEM_SRC, d / "libdsrs_other.so", '-DHOSTMEM_NAME="other"')
    p.not_a_plugin = _build(cc, not_src, d / "libnot_a_plugin.so")
    p.tiny = _build(cc, tiny_src, d / "libdsrs_tiny.so")
    p.tiny_small = _build(cc, tiny_src, d / "libdsrs_tiny_small.so", "-DTINY_STRUCT_SIZE=16",
                          '-DTINY_NAME="tiny_small"')
    p.tiny_no_alloc = _build(cc, tiny_src, d / "libdsrs_tiny_no_alloc.so", "-DTINY_NO_ALLOCATE",
                             '-DTINY_NAME="tiny_no_alloc"')
    p.tiny_no_sync = _build(cc, tiny_src, d / "libdsrs_tiny_no_sync.so", "-DTINY_NOT_SYNCHRONOUS",
                            '-DTINY_NAME="tiny_no_sync"')
    p.tiny_half_streams = _build(cc, tiny_src, d / "libdsrs_tiny_half.so", "-DTINY_HALF_STREAMS",
                                 '-DTINY_NAME="tiny_half"')
    p.tiny_null = _build(cc, tiny_src, d / "libdsrs_tiny_null.so", "-DTINY_NULL_TABLE",
                         '-DTINY_NAME="tiny_null"')
    p.tiny_bad_name = _build(cc, tiny_src, d / "libdsrs_tiny_bad_name.so",
                             '-DTINY_NAME="bad name!"')
    return p


@pytest.fixture(scope="session")
def loaded(plugins):
    """hostmem, then other, loaded into this process (the current accelerator is selected
    first, so that later tests see the same one as without plugins)."""
    ds.Accelerator.current().close()
    ds.load_accelerator_plugin(plugins.hostmem)
    ds.load_accelerator_plugin(str(plugins.other))
    return plugins


@pytest.fixture
def hm(loaded):
    """A fresh hostmem accelerator (its own allocator and statistics), 2 devices."""
    with ds.Accelerator("hostmem") as a:
        yield a


def rounded(n: int) -> int:
    return (n + GRANULE - 1) // GRANULE * GRANULE


def real(p) -> str:
    return os.path.realpath(str(p))


# ---------------------------------------------------------------------------------------
# Loading and registration.


def test_loading_registers_the_accelerator_before_the_builtin_ones(loaded):
    ds.load_accelerator_plugin(loaded.hostmem)  # again: a no-op
    ds.load_accelerator_plugin(str(loaded.hostmem))
    ds.load_accelerator_plugin(os.path.relpath(loaded.hostmem))  # same file, another spelling
    names = ds.accelerator_names()
    assert names.count("hostmem") == 1 and names.count("other") == 1
    assert names[-2:] == ["cuda", "cpu"]
    assert names.index("hostmem") < names.index("other") < names.index("cuda")


def test_loading_does_not_change_the_current_accelerator(loaded):
    with ds.Accelerator.current() as a:
        if not os.environ.get("DSRS_ACCELERATOR"):
            assert a.name in ("cuda", "cpu")


def test_create_with_options(loaded, rng):
    devices = int(rng.integers(1, 17))
    capacity = int(rng.integers(1 << 12, 1 << 24))
    with ds.Accelerator("HostMem", devices=devices, capacity=capacity) as a:  # case-insensitive
        assert a.name == "hostmem"
        assert a.device_count() == devices
        assert a.total_memory() == capacity == a.total_memory(devices - 1)
        assert a.available_memory() == capacity
        assert a.is_available()
    with ds.Accelerator.from_json("hostmem", None) as a:
        assert a.device_count() == 2 and a.total_memory() == DEFAULT_CAPACITY
    with ds.Accelerator("other", devices=3) as a:
        assert a.name == "other" and a.device_count() == 3


def test_invalid_options_fail_with_the_plugin_message(loaded):
    # The plugin's init refuses the options with DSRS_STATUS_INVALID_CONFIG, which keeps
    # its meaning (as the CPU accelerator's invalid options do).
    for options, word in (({"devices": 0}, "options.devices"), ({"devices": 17}, "options.devices"),
                          ({"capacity": "lots"}, "options.capacity")):
        with pytest.raises(ds.InvalidConfigError) as ei:
            ds.Accelerator("hostmem", **options)
        m = ei.value.message
        assert word in m and "init failed with status 301" in m and "dsrs_accelerator_new" in m
    with pytest.raises(ds.InvalidJsonError):
        ds.Accelerator.from_json("hostmem", "{devices: 2")


def test_identity_and_devices(hm):
    assert repr(hm) == "<deepspeed_rs.Accelerator 'hostmem' devices=2>"
    assert hm.device_type == kDLExtDev
    assert hm.communication_backend_name() == "gloo"
    assert hm.is_synchronized_device() is False  # flags 0: work is "queued"
    for d in range(2):
        assert hm.device_name(d) == f"hostmem device {d} (host RAM)"
    assert hm.device_name() == hm.device_name(0)
    with pytest.raises(ds.OutOfRangeError):
        hm.device_name(2)
    hm.set_device(1)
    assert hm.current_device() == 1 and hm.device_name() == hm.device_name(1)
    seen = []
    t = threading.Thread(target=lambda: seen.append(hm.current_device()))
    t.start()
    t.join()
    assert seen == [0]  # the current device is per thread
    hm.synchronize()
    hm.synchronize(0)
    with pytest.raises(ds.OutOfRangeError):
        hm.set_device(2)


def test_device_properties(hm, loaded):
    keys = {"index", "name", "uuid", "compute_capability", "multiprocessors", "total_memory",
            "pci_bus_id"}
    for d in range(2):
        p = hm.device_properties(d)
        assert set(p) == keys
        assert p["index"] == d and p["name"] == hm.device_name(d)
        assert p["total_memory"] == DEFAULT_CAPACITY == hm.total_memory(d)
        assert p["uuid"] is None and p["compute_capability"] is None and p["pci_bus_id"] is None
    assert hm.device_properties() == hm.device_properties(-1) == hm.device_properties(0)
    hm.set_device(1)
    assert hm.device_properties()["index"] == 1
    with pytest.raises(ds.OutOfRangeError):
        hm.device_properties(2)
    with pytest.raises(ds.OutOfRangeError):
        hm.device_properties(-2)
    info = hm.info()
    assert info["devices"][1]["name"] == hm.device_name(1)
    assert info["details"]["plugin_abi_version"] == 1
    assert real(info["details"]["plugin_path"]) == real(loaded.hostmem)
    assert info["details"]["host_memory"] is False


# ---------------------------------------------------------------------------------------
# Memory.


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "uint8", "int64"])
def test_round_trip_with_random_data(hm, rng, dtype):
    n = int(rng.integers(1, 5000))
    data = (rng.standard_normal(n) * 1000).astype(dtype)
    with hm.buffer(data.nbytes + 64) as b:
        assert b.kind == "device" and b.nbytes == data.nbytes + 64
        assert b.write(data, offset=64) == data.nbytes
        back = b.read_into(np.empty(n, dtype), offset=64)
        np.testing.assert_array_equal(back, data)
        assert b.read(64) == bytes(64)  # zeroed at allocation
        assert b.read(offset=64) == data.tobytes()
        raw = rng.bytes(32)
        b.write(raw, offset=16)
        assert b.read(32, offset=16) == raw
        with pytest.raises(ds.OutOfRangeError):
            b.read(65, offset=data.nbytes)
        with pytest.raises(ds.OutOfRangeError):
            b.write(b"x", offset=b.nbytes)


def test_device_to_device_copies(hm, rng):
    n = int(rng.integers(64, 4096))
    data = rng.bytes(n)
    with hm.buffer(n) as src, hm.buffer(n) as dst:
        src.write(data)
        dst.copy_from(src)
        assert dst.read() == data
        k = int(rng.integers(1, n // 2))
        dst.copy_from(src, dst_offset=0, src_offset=k, n=n - k)
        assert dst.read() == data[k:] + data[n - k:]
        # Overlapping copy inside one buffer (memmove semantics).
        src.copy_from(src, dst_offset=k, src_offset=0, n=n - k)
        assert src.read() == data[:k] + data[:n - k]
        with pytest.raises(ds.OutOfRangeError):
            dst.copy_from(src, src_offset=1, n=n)
    # Between host memory of the CPU accelerator and device memory of the plugin.
    with ds.Accelerator("cpu") as cpu, cpu.buffer(n) as host, hm.buffer(n) as dev:
        host.write(data)
        dev.copy_from(host)
        assert dev.read() == data
        host.fill(0)
        host.copy_from(dev)
        assert host.read() == data


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_fills(hm, rng, width):
    n = width * int(rng.integers(1, 500))
    pattern = rng.bytes(width)
    with hm.buffer(n + 16) as b:
        b.write(rng.bytes(n + 16))
        before = b.read()
        b.fill(pattern, offset=8, n=n)
        assert b.read() == before[:8] + pattern * (n // width) + before[8 + n:]
        b.fill(0xAB)
        assert b.read() == b"\xab" * (n + 16)
        if width > 1:
            with pytest.raises(ds.InvalidArgumentError):
                b.fill(pattern, n=width + 1)
        with pytest.raises(ds.OutOfRangeError):
            b.fill(pattern, offset=16, n=n + width)


def test_memory_statistics_follow_the_caching_allocator(loaded, rng):
    with ds.Accelerator("hostmem") as a:
        assert (a.memory_allocated(), a.memory_reserved()) == (0, 0)
        n1, n2 = int(rng.integers(1, 5000)), int(rng.integers(1, 5000))
        r1, r2 = rounded(n1), rounded(n2)
        b1 = a.buffer(n1)
        assert a.memory_allocated() == r1 == a.memory_reserved() == a.max_memory_allocated()
        b2 = a.buffer(n2)
        assert a.memory_allocated() == r1 + r2 == a.memory_reserved()
        stats = a.memory_stats()
        assert stats["allocated_bytes.all.current"] == r1 + r2
        assert stats["allocation.all.current"] == 2
        assert stats["reserved_bytes.all.current"] == r1 + r2
        assert stats["available_bytes"] == DEFAULT_CAPACITY - (r1 + r2) == a.available_memory()
        assert a.memory_allocated(1) == 0 and a.memory_reserved(1) == 0  # per device
        b1.close()
        # Freed memory stays reserved (cached) until empty_cache.
        assert a.memory_allocated() == r2 and a.memory_reserved() == r1 + r2
        assert a.max_memory_allocated() == r1 + r2
        b3 = a.buffer(r1)  # the same rounded size: the cached block is reused
        assert a.memory_allocated() == r1 + r2 and a.memory_reserved() == r1 + r2
        a.reset_peak_memory_stats()
        assert a.max_memory_allocated() == r1 + r2 == a.max_memory_reserved()
        b2.close()
        b3.close()
        assert a.memory_allocated() == 0 and a.memory_reserved() == r1 + r2
        assert a.memory_stats()["allocation.all.current"] == 0
        a.reset_peak_memory_stats()
        assert a.max_memory_allocated() == 0 and a.max_memory_reserved() == r1 + r2
        a.empty_cache()
        assert a.memory_reserved() == 0 and a.max_memory_reserved() == r1 + r2
        assert a.available_memory() == a.total_memory()
        a.reset_peak_memory_stats()
        assert a.max_memory_reserved() == 0
        # Device 1 has its own allocator.
        a.set_device(1)
        with a.buffer(1) as b:
            assert b.device == (kDLExtDev, 1)
            assert a.memory_allocated(1) == GRANULE and a.memory_allocated(0) == 0


def test_out_of_memory_past_the_capacity(loaded, rng):
    capacity = GRANULE * int(rng.integers(2, 16))
    with ds.Accelerator("hostmem", capacity=capacity) as a:
        with pytest.raises(ds.OutOfMemoryError) as ei:
            a.buffer(capacity + 1)
        e = ei.value
        assert isinstance(e, MemoryError) and e.status == 402
        assert "dsrs_buffer_new" in e.message and "accelerator plugin 'hostmem'" in e.message
        assert (f"hostmem: out of device memory: {capacity + 1} bytes requested, "
                f"0 of {capacity} reserved") in e.message
        assert a.memory_stats()["num_ooms"] == 1
        assert a.memory_allocated() == 0 and a.memory_reserved() == 0
        # The whole capacity can be allocated; freed, it stays reserved and only a request
        # of the same size reuses it until empty_cache.
        with a.buffer(capacity):
            assert a.available_memory() == 0
        with pytest.raises(ds.OutOfMemoryError) as ei:
            a.buffer(1)
        assert f"1 bytes requested, {capacity} of {capacity} reserved" in ei.value.message
        assert a.memory_stats()["num_ooms"] == 2
        with a.buffer(capacity - GRANULE + 1):  # rounds up to the cached size
            pass
        a.empty_cache()
        with a.buffer(1):
            assert a.memory_reserved() == GRANULE


def test_memory_kinds(hm, rng):
    with pytest.raises(ds.UnsupportedError) as ei:  # the plugin has device memory only
        hm.buffer(16, kind="pinned")
    assert "memory kind 2 is not supported" in ei.value.message
    data = rng.bytes(100)
    with hm.buffer(100, kind="host") as h:  # pageable host memory is the library's own
        assert h.device == (kDLCPU, 0)
        h.write(data)
        assert h.numpy().tobytes() == data
        with hm.buffer(100) as dev:
            dev.copy_from(h)
            assert dev.read() == data
    with hm.buffer(0) as empty:
        assert empty.nbytes == 0 and empty.read() == b"" and empty.ptr == 0


def test_dlpack_device_type_is_extdev(hm, rng):
    hm.set_device(1)
    with hm.buffer(64) as b1:
        assert b1.device == b1.__dlpack_device__() == (kDLExtDev, 1)
    hm.set_device(0)
    b = hm.buffer(64)
    assert b.device == b.__dlpack_device__() == (kDLExtDev, 0)
    view = b.view("float32", (4, 4))
    assert view.__dlpack_device__() == (kDLExtDev, 0)
    cap = view.__dlpack__(max_version=(1, 1))
    assert _dlpack.capsule_name(cap) == "dltensor_versioned"
    mtv = ctypes.cast(_dlpack.capsule_pointer(cap),
                      ctypes.POINTER(_lib.DLManagedTensorVersioned)).contents
    t = mtv.dl_tensor
    assert (t.device.device_type, t.device.device_id) == (kDLExtDev, 0)
    assert t.data == b.ptr and t.ndim == 2 and (t.dtype.code, t.dtype.bits) == (2, 32)
    legacy = b.__dlpack__()
    mt = ctypes.cast(_dlpack.capsule_pointer(legacy), ctypes.POINTER(_lib.DLManagedTensor)).contents
    assert mt.dl_tensor.device.device_type == kDLExtDev
    # numpy cannot address the plugin's memory.
    with pytest.raises(TypeError) as ei:
        b.numpy()
    assert "(12, 0)" in str(ei.value)
    with pytest.raises(TypeError):
        view.__array_interface__
    # Exports keep the plugin allocation alive after the buffer is closed.
    b.close()
    assert hm.memory_allocated() == GRANULE
    del mtv, mt, t, cap
    assert hm.memory_allocated() == GRANULE
    del legacy
    assert hm.memory_allocated() == 0


# ---------------------------------------------------------------------------------------
# Streams, events, ranges.


def _work_count(stream: ds.Stream) -> int:
    # A hostmem stream is a counter of the copies and fills submitted to it.
    return ctypes.c_ulonglong.from_address(stream.native_handle).value


def test_streams_carry_the_work(hm, rng):
    with hm.default_stream() as d:
        assert d.native_handle is None and d.query()
    data = rng.bytes(256)
    with hm.stream() as s, hm.buffer(256) as b:
        assert s.native_handle and _work_count(s) == 0
        b.write(data, stream=s)
        b.fill(b"\x01\x02", offset=0, n=4, stream=s)
        assert _work_count(s) == 2
        assert b.read(stream=s) == b"\x01\x02\x01\x02" + data[4:]
        assert _work_count(s) == 3
        b.write(data)  # the current stream: the default one
        assert _work_count(s) == 3
        with hm.use_stream(s):
            b.fill(7)
            with hm.current_stream() as cur:
                assert cur.native_handle == s.native_handle
        assert _work_count(s) == 4
        hm.fill_uniform(b, dtype="float32", stream=s)
        assert _work_count(s) == 5
        s.synchronize()
        assert s.query()
        with ds.Accelerator("hostmem") as other, other.stream() as foreign:
            with pytest.raises(ds.InvalidArgumentError):
                b.write(b"x", stream=foreign)


def test_events_time_a_known_sleep(hm, rng):
    with hm.stream() as s:
        for _ in range(2):
            ms = float(rng.uniform(20, 50))
            with hm.event() as start, hm.event() as end:
                t0 = time.perf_counter()
                start.record(s)
                time.sleep(ms / 1000)
                end.record()
                wall = (time.perf_counter() - t0) * 1000
                end.synchronize()
                assert start.query() and end.query()
                elapsed = start.elapsed_time(end)
                assert ms <= elapsed <= wall + 1.0, (ms, elapsed, wall)
                assert end.elapsed_time(start) == pytest.approx(-elapsed)
                s.wait_event(start)
    with hm.event() as recorded, hm.event() as never, hm.event(timing=False) as untimed:
        recorded.record()
        untimed.record()
        assert never.query()
        never.synchronize()
        with pytest.raises(ds.InvalidStateError):
            recorded.elapsed_time(never)
        with pytest.raises(ds.InvalidStateError):
            untimed.elapsed_time(recorded)
    with ds.Accelerator("cpu") as cpu, cpu.event() as foreign, hm.event() as e, hm.stream() as s:
        foreign.record()
        e.record()
        with pytest.raises(ds.InvalidArgumentError):
            e.elapsed_time(foreign)
        with pytest.raises(ds.InvalidArgumentError):
            s.wait_event(foreign)


def test_ranges(hm, restore_logging):
    records = []
    ds.set_log_level("info")
    ds.set_log_callback(lambda lvl, tgt, msg: records.append((tgt, msg)))
    with hm.range("outer"):
        with hm.range("inner"):
            time.sleep(0.001)
    hm.range_push("manual")
    hm.range_pop()
    with pytest.raises(ds.InvalidStateError):
        hm.range_pop()
    names = [m for tgt, m in records if tgt == "range"]
    assert len(names) == 3
    assert '"inner"' in names[0] and '"outer"' in names[1] and '"manual"' in names[2]


# ---------------------------------------------------------------------------------------
# Random numbers: the plugin generates on the host and copies, so it matches the CPU.


def _random_seed(rng) -> int:
    return int(rng.integers(0, 2**64, dtype=np.uint64))


CASES = [
    ("fill_normal", "float32", (0.5, 2.0)),
    ("fill_uniform", "float64", (-3.0, 7.0)),
    ("fill_uniform", "float16", (0.0, 1.0)),
    ("fill_normal", "bfloat16", (0.0, 1.0)),
    ("fill_bits", "uint32", ()),
    ("fill_bits", "int64", ()),
]


def test_rng_is_bit_identical_to_the_cpu_accelerator(hm, rng):
    with ds.Accelerator("cpu") as cpu:
        for _ in range(3):
            seed = _random_seed(rng)
            hm.manual_seed(seed)
            cpu.manual_seed(seed)
            assert hm.initial_seed() == seed
            for method, dtype, args in CASES:
                np_dtype = "uint16" if dtype == "bfloat16" else dtype
                n = int(rng.integers(1, 3000))
                want = getattr(cpu, method)(np.empty(n, np_dtype), *args,
                                            dtype="bfloat16" if dtype == "bfloat16" else None)
                with hm.buffer(n * np.dtype(np_dtype).itemsize) as b:
                    getattr(hm, method)(b, *args, dtype=dtype)
                    got = b.read_into(np.empty(n, np_dtype))
                np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
                assert hm.get_rng_state() == cpu.get_rng_state()  # same offset afterwards
            # Host arrays are filled in place, from the same stream of numbers.
            np.testing.assert_array_equal(hm.fill_normal(np.empty(100, np.float32)),
                                          cpu.fill_normal(np.empty(100, np.float32)))


def test_rng_state_round_trip_and_offsets(hm, rng):
    seed = _random_seed(rng)
    offset = int(rng.integers(0, 2**40))
    state = b"DSRSPHX1" + seed.to_bytes(8, "little") + offset.to_bytes(8, "little")
    with ds.Accelerator("cpu") as cpu, hm.buffer(4 * 1000) as b:
        hm.set_rng_state(state)
        cpu.set_rng_state(state)
        hm.fill_uniform(b, -1, 1, dtype="float32")
        want = cpu.fill_uniform(np.empty(1000, np.float32), -1, 1)
        np.testing.assert_array_equal(b.read_into(np.empty(1000, np.float32)), want)
        saved = hm.get_rng_state()
        hm.fill_bits(b, dtype="uint32")
        first = b.read()
        hm.set_rng_state(saved)
        hm.fill_bits(b, dtype="uint32")
        assert b.read() == first
        with pytest.raises(ds.FormatError):
            hm.set_rng_state(b"garbage")
        # Each device has its own generator.
        hm.set_device(1)
        hm.manual_seed(seed ^ 1)
        assert hm.initial_seed() == seed ^ 1
        hm.set_device(0)
        assert hm.initial_seed() == seed


# ---------------------------------------------------------------------------------------
# Data types.


def test_dtype_support(hm):
    assert hm.dtype_support("complex64") == (False, False)
    assert hm.dtype_support("complex128") == (False, False)
    assert hm.dtype_support("float16") == (True, False)  # stored, computed in float32
    assert hm.dtype_support("bfloat16") == (True, False)
    for name in ("float32", "float64", "int8", "int32", "uint64", "bool"):
        assert hm.dtype_support(name) == (True, True), name
    assert hm.is_fp16_supported() is False and hm.is_bf16_supported() is False
    supported = hm.supported_dtypes()
    assert "complex64" not in supported and "float16" in supported and "float32" in supported
    by_name = {d["name"]: d for d in hm.info()["dtypes"]}
    for name, d in by_name.items():
        assert tuple(hm.dtype_support(name)) == (d["supported"], d["native"]), name


# ---------------------------------------------------------------------------------------
# CUDA-only functions: wrapped streams and graphs are refused by the CPU and plugins.


def test_wrap_stream_and_graphs_are_unsupported(hm):
    with ds.Accelerator("cpu") as cpu:
        for a in (cpu, hm):
            for native in (None, 0x1234, ctypes.c_void_p(0x1234),
                           types.SimpleNamespace(cuda_stream=0x1234)):
                with pytest.raises(ds.UnsupportedError) as ei:
                    a.wrap_stream(native)
                assert "dsrs_stream_wrap" in ei.value.message
                assert f"the {a.name} accelerator has no native streams" in ei.value.message
            with a.stream() as s:
                with pytest.raises(ds.UnsupportedError) as ei:
                    s.begin_capture()
                assert "does not support graph capture" in ei.value.message
                with pytest.raises(ds.UnsupportedError):
                    s.end_capture()
                with pytest.raises(ds.UnsupportedError):
                    with s.capture():
                        pass  # pragma: no cover
                s.synchronize()  # the stream is still usable
            assert a.info()["graphs"] is False


def test_wrap_stream_argument_checks(cpu):
    with pytest.raises(TypeError):
        cpu.wrap_stream("stream")
    with pytest.raises(TypeError):
        cpu.wrap_stream(True)
    with pytest.raises(ds.OutOfRangeError):
        cpu.wrap_stream(-1)
    with pytest.raises(ds.OutOfRangeError):
        cpu.wrap_stream(1 << 64)


def test_graph_functions_through_the_raw_abi(cpu):
    n = ctypes.c_size_t()
    assert lib.dsrs_graph_free(None) == 0
    assert lib.dsrs_graph_node_count(None, ctypes.byref(n)) == 100
    assert lib.dsrs_graph_replay(None, None) == 100
    assert lib.dsrs_graph_node_count(0x1234, ctypes.byref(n)) == 200
    with cpu.stream() as s:
        assert lib.dsrs_graph_node_count(s.handle, ctypes.byref(n)) == 202  # a stream
        assert lib.dsrs_graph_free(s.handle) == 202
        assert lib.dsrs_stream_end_capture(s.handle, None) == 100
        out = ctypes.c_void_p()
        assert lib.dsrs_stream_end_capture(s.handle, ctypes.byref(out)) == 403
        assert out.value is None  # written only on success
    assert lib.dsrs_stream_wrap(cpu.handle, None, None) == 100
    assert lib.dsrs_stream_begin_capture(None) == 100


def test_device_properties_two_call_through_the_raw_abi(cpu):
    needed = ctypes.c_size_t(0)
    assert lib.dsrs_accelerator_device_properties_json(cpu.handle, 0, None, 0,
                                                       ctypes.byref(needed)) == 0
    full = json.dumps(cpu.device_properties(0), separators=(",", ":"))
    small = ctypes.create_string_buffer(4)
    assert lib.dsrs_accelerator_device_properties_json(cpu.handle, 0, small, 4,
                                                       ctypes.byref(needed)) == 104
    buf = ctypes.create_string_buffer(needed.value)
    assert lib.dsrs_accelerator_device_properties_json(cpu.handle, 0, buf, needed.value,
                                                       ctypes.byref(needed)) == 0
    assert json.loads(buf.value) == json.loads(full)
    assert lib.dsrs_accelerator_device_properties_json(cpu.handle, 5, buf, needed.value,
                                                       ctypes.byref(needed)) == 102
    assert lib.dsrs_accelerator_device_properties_json(None, 0, buf, needed.value,
                                                       ctypes.byref(needed)) == 100


def _cuda_or_skip():
    try:
        return ds.Accelerator("cuda")
    except (ds.UnavailableError, ds.UnknownAcceleratorError) as e:
        pytest.skip(f"no CUDA accelerator: {e.message}")


def test_cuda_wrap_stream_and_graph_replay(rng):
    with _cuda_or_skip() as g, g.stream() as s:
        native = s.native_handle
        assert native
        with g.wrap_stream(native) as w:
            assert w.native_handle == native
            w.synchronize()
        s.synchronize()  # closing the wrapper did not destroy the stream
        n = 4096
        data = rng.bytes(n)
        with g.buffer(n) as src, g.buffer(n) as dst:
            src.write(data)
            s.synchronize()
            with s.capture() as cap:
                dst.copy_from(src, stream=s)
                dst.fill(b"\x5a", offset=0, n=16, stream=s)
            with cap.graph as graph:
                assert graph.node_count >= 2
                assert "Graph" in repr(graph)
                g.synchronize()
                assert dst.read() == bytes(n)  # captured, not run
                graph.replay()
                s.synchronize()
                assert dst.read() == b"\x5a" * 16 + data[16:]
                dst.fill(0)
                g.synchronize()
                graph.replay(s)
                s.synchronize()
                assert dst.read() == b"\x5a" * 16 + data[16:]
            assert graph.closed
            with pytest.raises(ds.StaleHandleError):
                graph.replay()


# ---------------------------------------------------------------------------------------
# Invalid plugins.


def test_a_plugin_of_another_abi_version_is_refused(plugins):
    before = ds.accelerator_names()
    with pytest.raises(ds.PluginInvalidError) as ei:
        ds.load_accelerator_plugin(plugins.abi99)
    e = ei.value
    assert isinstance(e, RuntimeError) and e.status == 405
    assert e.status_name == "DSRS_STATUS_PLUGIN_INVALID"
    assert "dsrs_accelerator_load_plugin" in e.message
    assert real(plugins.abi99) in e.message or str(plugins.abi99) in e.message
    assert "plugin ABI version 99" in e.message and "implements version 1" in e.message
    assert ds.accelerator_names() == before
    with pytest.raises(ds.PluginInvalidError):  # refused again, not remembered as loaded
        ds.load_accelerator_plugin(plugins.abi99)


def test_a_failing_init_loads_but_cannot_be_created(plugins):
    ds.load_accelerator_plugin(plugins.broken)
    assert "hostmem_broken" in ds.accelerator_names()
    for _ in range(2):  # the failure is not cached
        with pytest.raises(ds.UnavailableError) as ei:
            ds.Accelerator("hostmem_broken")
        m = ei.value.message
        assert ei.value.status == 401 and "dsrs_accelerator_new" in m
        assert "failed to initialize" in m and "init failed with status 404" in m
        assert ("hostmem_broken: the device did not answer its reset (simulated fault, "
                "code 0x2a)") in m


@pytest.mark.parametrize("which", ["missing", "text", "not_a_plugin", "directory"])
def test_files_that_are_not_plugins(plugins, which, tmp_path):
    if which == "missing":
        path = tmp_path / "no_such_plugin.so"
        words = ["cannot load accelerator plugin", "no_such_plugin.so"]
    elif which == "text":
        path = tmp_path / "text.so"
        path.write_text("not an ELF file\n")
        words = ["cannot load accelerator plugin", "text.so"]
    elif which == "not_a_plugin":
        path = plugins.not_a_plugin
        words = ["does not export dsrs_accelerator_plugin_entry", "libnot_a_plugin.so"]
    else:
        path = tmp_path
        words = ["cannot load accelerator plugin"]
    before = ds.accelerator_names()
    with pytest.raises(ds.PluginInvalidError) as ei:
        ds.load_accelerator_plugin(path)
    for w in words:
        assert w in ei.value.message, ei.value.message
    assert ds.accelerator_names() == before


@pytest.mark.parametrize("which, words", [
    ("tiny_small", ["its table is 16 bytes", "struct_size"]),
    ("tiny_no_alloc", ["required entries are NULL: allocate"]),
    ("tiny_no_sync", ["synchronize (required unless flags has DSRS_PLUGIN_SYNCHRONOUS)"]),
    ("tiny_half_streams", ["the stream entries come together", "stream_destroy",
                           "stream_synchronize"]),
    ("tiny_null", ["returned NULL"]),
    ("tiny_bad_name", ['name "bad name!"']),
])
def test_incomplete_tables_are_refused(plugins, which, words):
    path = getattr(plugins, which)
    with pytest.raises(ds.PluginInvalidError) as ei:
        ds.load_accelerator_plugin(path)
    assert os.path.basename(path) in ei.value.message
    for w in words:
        assert w in ei.value.message, ei.value.message


def test_a_second_plugin_with_a_registered_name_is_refused(loaded, tmp_path):
    copy = tmp_path / "libdsrs_hostmem_copy.so"
    shutil.copy(loaded.hostmem, copy)
    with pytest.raises(ds.PluginInvalidError) as ei:
        ds.load_accelerator_plugin(copy)
    assert "already registered" in ei.value.message and "hostmem" in ei.value.message
    assert ds.accelerator_names().count("hostmem") == 1


def test_load_argument_checks(loaded):
    with pytest.raises(TypeError):
        ds.load_accelerator_plugin(42)
    with pytest.raises(ValueError):
        ds.load_accelerator_plugin("a\0b")
    assert lib.dsrs_accelerator_load_plugin(None) == 100
    assert lib.dsrs_accelerator_load_plugin(b"\xff\xfe.so") == 103


def test_unavailable_plugin_says_why(loaded, monkeypatch):
    monkeypatch.setenv("HOSTMEM_UNAVAILABLE", "1")
    with pytest.raises(ds.UnavailableError) as ei:
        ds.Accelerator("hostmem")
    m = ei.value.message
    assert "HOSTMEM_UNAVAILABLE is set" in m and "available accelerators:" in m
    assert "hostmem," not in m.split("available accelerators:")[1]
    monkeypatch.delenv("HOSTMEM_UNAVAILABLE")
    with ds.Accelerator("hostmem") as a:
        assert a.is_available()


# ---------------------------------------------------------------------------------------
# A plugin with no optional entries: the library's fall-backs.


def test_minimal_plugin_uses_the_library_defaults(plugins, rng):
    ds.load_accelerator_plugin(plugins.tiny)
    with ds.Accelerator("tiny") as a, ds.Accelerator("cpu") as cpu:
        assert a.device_count() == 1 and a.device_name(0) == "tiny:0"
        assert a.communication_backend_name() == "mpi"
        assert a.is_synchronized_device() is True and a.device_type == kDLCPU
        assert a.dtype_support("float16") == (True, False)
        assert a.dtype_support("complex64") == (True, True)
        assert a.device_properties(0)["total_memory"] == 1 << 20
        n = int(rng.integers(1, 1000))
        data = rng.bytes(n)
        with a.buffer(n) as b:
            assert a.memory_allocated() == n  # counted by the library (no memory_stats)
            assert b.device == (kDLCPU, 0)
            b.write(data)
            assert b.numpy().tobytes() == data  # host memory: zero-copy views work
            v = b.numpy()
            v[:] = 7
            assert b.read() == b"\x07" * n
            del v  # the view's export keeps the memory allocated
        assert a.memory_allocated() == 0 and a.max_memory_allocated() == n
        with a.stream() as s, a.default_stream() as d:  # host streams
            assert s.native_handle is None and d.native_handle is None and s.query()
        with a.event() as e1, a.event() as e2:  # events read the host clock
            e1.record()
            time.sleep(0.01)
            e2.record()
            assert e1.elapsed_time(e2) >= 10.0
        with a.range("r"):  # no range entries: the library's own ranges
            pass
        seed = _random_seed(rng)
        a.manual_seed(seed)
        cpu.manual_seed(seed)
        with a.buffer(4 * 64) as b:
            a.fill_normal(b, dtype="float32")
            np.testing.assert_array_equal(b.numpy("float32"),
                                          cpu.fill_normal(np.empty(64, np.float32)))


# ---------------------------------------------------------------------------------------
# DSRS_ACCELERATOR_PLUGINS and DSRS_ACCELERATOR, in fresh interpreters.

REPORT_CODE = r"""
import json, deepspeed_rs as ds
out = {"names": ds.accelerator_names()}
try:
    with ds.Accelerator.current() as a:
        out["current"] = a.name
        out["device_type"] = a.device_type
        out["devices"] = a.device_count()
        with a.buffer(1000) as b:
            b.write(b"x" * 1000)
            out["round_trip"] = b.read() == b"x" * 1000
            out["allocated"] = a.memory_allocated()
except ds.DsrsError as e:
    out["error"] = [type(e).__name__, e.status, e.message]
r = ds.report()
out["selection"] = r["selection"]
out["report_error"] = r["error"]
out["candidates"] = r["candidates"]
print("JSON" + json.dumps(out))
"""


def _run_report(run_python, env, unset=("DSRS_ACCELERATOR",)):
    r = run_python(REPORT_CODE, env=env, unset=unset)
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("JSON")][-1]
    return json.loads(line[4:]), r.stderr


def test_env_plugins_and_DSRS_ACCELERATOR_select_the_plugin(plugins, run_python):
    out, _ = _run_report(run_python, {
        "DSRS_ACCELERATOR_PLUGINS": f"{plugins.other}:{plugins.hostmem}",
        "DSRS_ACCELERATOR": "hostmem",
    }, unset=())
    assert out["names"][:2] == ["other", "hostmem"] and out["names"][-2:] == ["cuda", "cpu"]
    assert out["current"] == "hostmem" and out["device_type"] == kDLExtDev
    assert out["devices"] == 2 and out["round_trip"] and out["allocated"] == 1024
    assert out["selection"]["method"] == "override" and out["selection"]["name"] == "hostmem"
    assert "DSRS_ACCELERATOR=hostmem" in out["selection"]["reason"]
    assert out["report_error"] is None


def test_env_plugins_come_first_in_detection(plugins, run_python, tmp_path):
    missing = tmp_path / "missing_plugin.so"
    out, stderr = _run_report(run_python, {
        "DSRS_ACCELERATOR_PLUGINS":
            f"{plugins.broken}:{plugins.abi99}:{missing}::{plugins.hostmem}",
    })
    # hostmem_broken probes available but fails to initialize: detection goes on to hostmem.
    assert out["current"] == "hostmem"
    sel = out["selection"]
    assert sel["method"] == "detected"
    assert "hostmem_broken" in sel["reason"] and "failed to initialize" in sel["reason"]
    assert "simulated fault" in sel["reason"]
    cands = out["candidates"]
    names = [c["name"] for c in cands]
    assert names[:4] == ["hostmem_broken", "hostmem", "cuda", "cpu"]
    assert [c["order"] for c in cands] == list(range(len(cands)))
    assert [c["builtin"] for c in cands[:4]] == [False, False, True, True]
    failed = {c["name"]: c for c in cands[4:]}
    assert set(failed) == {f"plugin:{plugins.abi99}", f"plugin:{missing}"}
    bad = failed[f"plugin:{plugins.abi99}"]
    assert bad["available"] is False and bad["builtin"] is False
    assert "declares plugin ABI version 99" in bad["detail"]
    assert failed[f"plugin:{missing}"]["available"] is False
    assert "cannot load accelerator plugin" in failed[f"plugin:{missing}"]["detail"]
    hm = cands[1]
    assert hm["available"] and "host RAM behind a caching allocator" in hm["detail"]
    assert "DSRS_ACCELERATOR_PLUGINS" in stderr and "version 99" in stderr  # a warning


def test_DSRS_ACCELERATOR_naming_a_broken_plugin_fails(plugins, run_python):
    out, _ = _run_report(run_python, {
        "DSRS_ACCELERATOR_PLUGINS": f"{plugins.broken}",
        "DSRS_ACCELERATOR": "hostmem_broken",
    }, unset=())
    name, status, message = out["error"]
    assert (name, status) == ("UnavailableError", 401)
    assert "simulated fault" in message
    assert "simulated fault" in out["report_error"]
    assert out["selection"] is None


def test_DSRS_ACCELERATOR_naming_an_unavailable_plugin_fails(plugins, run_python):
    out, _ = _run_report(run_python, {
        "DSRS_ACCELERATOR_PLUGINS": f"{plugins.hostmem}",
        "DSRS_ACCELERATOR": "HOSTMEM",
        "HOSTMEM_UNAVAILABLE": "1",
    }, unset=())
    name, status, message = out["error"]
    assert (name, status) == ("UnavailableError", 401)
    assert "HOSTMEM_UNAVAILABLE is set" in message and "DSRS_ACCELERATOR=HOSTMEM" in message
    hm = [c for c in out["candidates"] if c["name"] == "hostmem"][0]
    assert hm["available"] is False and "HOSTMEM_UNAVAILABLE is set" in hm["detail"]


def test_without_DSRS_ACCELERATOR_an_unavailable_plugin_is_skipped(plugins, run_python):
    out, _ = _run_report(run_python, {
        "DSRS_ACCELERATOR_PLUGINS": f"{plugins.hostmem}",
        "HOSTMEM_UNAVAILABLE": "1",
    })
    assert out["current"] in ("cuda", "cpu")
    assert "hostmem unavailable: HOSTMEM_UNAVAILABLE is set" in out["selection"]["reason"]


def test_unknown_DSRS_ACCELERATOR_lists_the_plugins(plugins, run_python):
    out, _ = _run_report(run_python, {
        "DSRS_ACCELERATOR_PLUGINS": f"{plugins.hostmem}:{plugins.other}",
        "DSRS_ACCELERATOR": "nosuch",
    }, unset=())
    name, status, message = out["error"]
    assert (name, status) == ("UnknownAcceleratorError", 400)
    assert "hostmem" in message and "other" in message and "cpu" in message


# ---------------------------------------------------------------------------------------
# Buffers of several devices: operations go to the device that owns the memory.


def test_a_buffer_is_usable_whatever_the_current_device(hm, rng):
    data0, data1 = rng.bytes(256), rng.bytes(256)
    hm.set_device(1)
    b1 = hm.buffer(256)
    b1.write(data1)
    hm.set_device(0)
    b0 = hm.buffer(256)
    b0.write(data0)
    with b0, b1:
        assert b1.device == (kDLExtDev, 1) and b0.device == (kDLExtDev, 0)
        assert b1.read() == data1  # current device 0, memory on device 1
        b1.write(data0[:16], offset=8)
        assert b1.read(32) == data1[:8] + data0[:16] + data1[24:32]
        b1.fill(b"\x11\x22\x33\x44", offset=0, n=8)
        assert b1.read(8) == b"\x11\x22\x33\x44" * 2
        b1.write(data1)
        # Between the two devices' allocators.
        b0.copy_from(b1, n=128)
        assert b0.read() == data1[:128] + data0[128:]
        b1.copy_from(b0, src_offset=128, dst_offset=128, n=128)
        assert b1.read() == data1[:128] + data0[128:]
        # From a thread whose current device is 0 too.
        seen = []
        t = threading.Thread(target=lambda: seen.append(b1.read(16)))
        t.start()
        t.join()
        assert seen == [data1[:16]]
        # Random numbers into device 1 memory come from device 1's generator (as PyTorch
        # uses the generator of the tensor's device); device 0's is untouched.
        seed = _random_seed(rng)
        hm.manual_seed(seed ^ 1)
        state0 = hm.get_rng_state()
        hm.set_device(1)
        hm.manual_seed(seed)
        hm.set_device(0)
        with ds.Accelerator("cpu") as cpu:
            cpu.manual_seed(seed)
            hm.fill_uniform(b1, dtype="float32")
            np.testing.assert_array_equal(b1.read_into(np.empty(64, np.float32)),
                                          cpu.fill_uniform(np.empty(64, np.float32)))
            assert hm.get_rng_state() == state0
            hm.set_device(1)
            assert hm.get_rng_state() == cpu.get_rng_state()
            hm.set_device(0)
        assert hm.memory_allocated(1) == GRANULE == hm.memory_allocated(0)
