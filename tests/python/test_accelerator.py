"""The Accelerator wrapper: DeepSpeed's accelerator surface on the CPU accelerator."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import deepspeed_rs as ds


def test_current_accelerator():
    with ds.Accelerator.current() as a, ds.Accelerator.current() as b:
        assert a.name in ds.accelerator_names()
        assert a.name == b.name
        assert a.handle != b.handle, "each call returns a new reference"
        assert a.is_available()


def test_basic_properties(rng):
    devices = int(rng.integers(1, 9))
    with ds.Accelerator("cpu", devices=devices) as a:
        assert a.name == "cpu"
        assert a.device_count() == devices
        assert a.device_type == 1  # kDLCPU
        assert a.communication_backend_name() == "mpi"
        assert a.is_synchronized_device() is True
        assert isinstance(a.device_name(), str) and a.device_name()
        assert all(a.device_name(d) == a.device_name() for d in range(devices))
        assert repr(a) == f"<deepspeed_rs.Accelerator 'cpu' devices={devices}>"
    assert "closed" in repr(a)


def test_devices_are_per_thread(rng):
    with ds.Accelerator("cpu", devices=4) as a:
        assert a.current_device() == 0
        d = int(rng.integers(1, 4))
        a.set_device(d)
        assert a.current_device() == d
        seen = []
        t = threading.Thread(target=lambda: seen.append(a.current_device()))
        t.start()
        t.join()
        assert seen == [0]
        with a.buffer(8) as b:  # host memory is DLPack device 0 whatever the device
            assert b.device == (1, 0)
        assert a.memory_stats()["device"] == d
        assert a.memory_stats(0)["device"] == 0


def test_device_properties(rng):
    devices = int(rng.integers(2, 9))
    limit = int(rng.integers(1 << 20, 1 << 30))
    with ds.Accelerator("cpu", devices=devices, memory_limit=limit) as a:
        for d in range(devices):
            p = a.device_properties(d)
            assert set(p) == {"index", "name", "uuid", "compute_capability", "multiprocessors",
                              "total_memory", "pci_bus_id"}
            assert p["index"] == d and p["name"] == a.device_name(d)
            assert p["total_memory"] == limit == a.total_memory(d)
            assert p["uuid"] is None and p["compute_capability"] is None
            assert p["multiprocessors"] >= 1
        assert a.device_properties() == a.device_properties(-1) == a.device_properties(0)
        d = int(rng.integers(1, devices))
        a.set_device(d)
        assert a.device_properties()["index"] == d
        assert [x["index"] for x in a.info()["devices"]] == list(range(devices))
        with pytest.raises(ds.OutOfRangeError):
            a.device_properties(devices)
        with pytest.raises(ds.OutOfRangeError):
            a.device_properties(-2)


def test_memory_figures(rng):
    limit = int(rng.integers(1 << 20, 1 << 24))
    with ds.Accelerator("cpu", memory_limit=limit) as a:
        assert a.total_memory() == limit == a.total_memory(0)
        assert 0 < a.available_memory() <= limit
        size = int(rng.integers(1, 1 << 19))
        with a.buffer(size):
            assert a.memory_allocated() == size == a.memory_reserved()
            assert a.available_memory() <= limit - size
            stats = a.memory_stats()
            assert stats["total_bytes"] == limit and stats["limit_bytes"] == limit
            assert stats["allocated_bytes.all.current"] == size
        a.empty_cache()
        assert a.memory_allocated() == 0 and a.max_memory_allocated() == size
        a.reset_peak_memory_stats()
        assert a.max_memory_allocated() == 0
    with ds.Accelerator("cpu") as a:
        assert a.total_memory() >= a.available_memory() > 0


def test_dtype_support_agrees_with_info(cpu):
    info = cpu.info()
    assert info["name"] == "cpu" and info["device_count"] == 2
    by_name = {d["name"]: d for d in info["dtypes"]}
    for name, d in by_name.items():
        s = cpu.dtype_support(name)
        assert (s.supported, s.native) == (d["supported"], d["native"]), name
        assert cpu.dtype_supported(name) == d["supported"]
    assert cpu.dtype_supported(np.float32) and cpu.dtype_supported("fp16")
    assert cpu.is_bf16_supported() == by_name["bfloat16"]["native"] == info["bf16_supported"]
    assert cpu.is_fp16_supported() == by_name["float16"]["native"] == info["fp16_supported"]
    assert set(cpu.supported_dtypes()) == {n for n, d in by_name.items() if d["supported"]}
    with pytest.raises(ValueError):
        cpu.dtype_supported("float8")


def test_set_accelerator_changes_the_current_one(run_python):
    code = (
        "import deepspeed_rs as ds\n"
        "a = ds.Accelerator('cpu', devices=3)\n"
        "a.make_current()\n"
        "a.close()\n"
        "c = ds.Accelerator.current()\n"
        "print(c.name, c.device_count())\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cpu", "3"]


def test_DSRS_ACCELERATOR_bogus_makes_current_fail(run_python):
    code = (
        "import deepspeed_rs as ds\n"
        "try:\n"
        "    ds.Accelerator.current()\n"
        "except ds.UnknownAcceleratorError as e:\n"
        "    print('RAISED', e.status, e.message)\n"
        "print('REPORT_ERROR', 'error' in repr(ds.report()))\n"
        "with ds.Accelerator('cpu') as a:\n"  # explicit creation is unaffected
        "    print('EXPLICIT', a.name)\n"
    )
    r = run_python(code, env={"DSRS_ACCELERATOR": "bogus"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "RAISED 400" in out and "bogus" in out and "cpu" in out.split("RAISED")[1]
    assert "DSRS_ACCELERATOR" in out
    assert "REPORT_ERROR True" in out
    assert "EXPLICIT cpu" in out


def test_DSRS_ACCELERATOR_cpu_selects_it(run_python):
    r = run_python("import deepspeed_rs as ds; print(ds.Accelerator.current().name)",
                   env={"DSRS_ACCELERATOR": "CPU"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cpu"


def test_objects_keep_their_accelerator_alive(rng):
    a = ds.Accelerator("cpu", devices=2)
    b = a.buffer(1000)
    s = a.stream()
    e = a.event()
    data = rng.bytes(1000)
    a.close()
    b.write(data, stream=s)
    e.record(s)
    assert b.read() == data
    with b.accelerator as again:
        assert again.device_count() == 2 and again.memory_allocated() == 1000
    for o in (b, s, e):
        o.close()


def test_garbage_collection_frees_handles(rng):
    with ds.Accelerator("cpu") as a:
        for _ in range(50):
            a.buffer(int(rng.integers(1, 10_000)))  # dropped at once
            a.stream()
            a.event()
        gc.collect()
        assert a.memory_allocated() == 0
        assert a.memory_stats()["allocation.all.current"] == 0


def test_concurrent_use_from_threads(rng):
    seeds = [int(s) for s in rng.integers(0, 2**62, size=4)]
    failures = []

    def worker(seed):
        try:
            local = np.random.default_rng(seed)
            with ds.Accelerator("cpu") as a:
                for _ in range(20):
                    n = int(local.integers(1, 4096))
                    data = local.bytes(n)
                    with a.buffer(n) as b:
                        b.write(data)
                        assert b.read() == data
                        v = b.numpy()
                        assert v.tobytes() == data
                        del v
        except BaseException as e:  # pragma: no cover
            failures.append(e)

    with ds.Accelerator("cpu") as shared:
        threads = [threading.Thread(target=worker, args=(s,)) for s in seeds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert shared.memory_allocated() == 0
    assert failures == []
