"""Streams, events (timing a known sleep) and profiling ranges."""

from __future__ import annotations

import time

import numpy as np
import pytest

import deepspeed_rs as ds


def test_events_time_a_known_sleep(cpu, rng):
    for _ in range(3):
        ms = float(rng.uniform(20, 60))
        start, end = cpu.event(), cpu.event()
        with start, end:
            t0 = time.perf_counter()
            start.record()
            time.sleep(ms / 1000)
            end.record()
            wall = (time.perf_counter() - t0) * 1000
            end.synchronize()
            assert start.query() and end.query()
            elapsed = start.elapsed_time(end)
            assert ms <= elapsed <= wall + 1.0, (ms, elapsed, wall)
            assert end.elapsed_time(start) == pytest.approx(-elapsed)


def test_events_on_explicit_streams(cpu):
    with cpu.stream() as s, cpu.event() as e1, cpu.event() as e2:
        e1.record(s)
        time.sleep(0.01)
        e2.record(cpu.default_stream())
        assert e1.elapsed_time(e2) >= 10.0
        s.wait_event(e1)
        s.synchronize()
        assert s.query()


def test_event_misuse(cpu):
    with cpu.event() as recorded, cpu.event() as never, cpu.event(timing=False) as untimed:
        recorded.record()
        untimed.record()
        assert never.query()  # never recorded: complete
        never.synchronize()
        with pytest.raises(ds.InvalidStateError) as ei:
            recorded.elapsed_time(never)
        assert "end" in ei.value.message
        with pytest.raises(ds.InvalidStateError):
            untimed.elapsed_time(recorded)
        with pytest.raises(TypeError):
            recorded.elapsed_time(5)
    with ds.Accelerator("cpu") as other, other.stream() as foreign, cpu.event() as e:
        with pytest.raises(ds.InvalidArgumentError):
            e.record(foreign)


def test_streams(cpu, rng):
    with cpu.default_stream() as d, cpu.stream() as s:
        assert d.native_handle is None and s.native_handle is None  # host accelerator
        assert d.query() and s.query()
        s.synchronize()
        data = rng.bytes(100)
        with cpu.buffer(100) as b:
            b.write(data, stream=s)
            assert b.read(stream=s) == data
            b.fill(b"\x01\x02", stream=d)
            assert b.read(4, stream=d) == b"\x01\x02\x01\x02"


def test_current_stream_is_per_thread_and_restored(cpu):
    import threading

    with cpu.stream() as s:
        with cpu.use_stream(s):
            with cpu.current_stream() as cur, cpu.event() as e:
                e.record()  # on the current stream: s
                assert cur.query()
            seen = {}

            def other_thread():
                with cpu.current_stream() as c:
                    seen["current"] = c.query()
                    seen["device"] = cpu.current_device()

            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
            assert seen == {"current": True, "device": 0}
        with pytest.raises(TypeError):
            cpu.set_current_stream("s")
    with ds.Accelerator("cpu") as other, other.stream() as foreign:
        with pytest.raises(ds.InvalidArgumentError):
            cpu.set_current_stream(foreign)
        with cpu.buffer(8) as b:
            with pytest.raises(ds.InvalidArgumentError):
                b.write(b"x", stream=foreign)


def test_ranges(cpu, restore_logging):
    records = []
    ds.set_log_level("info")
    ds.set_log_callback(lambda lvl, tgt, msg: records.append((lvl, tgt, msg)))
    with cpu.range("outer"):
        with cpu.range("inner step"):
            time.sleep(0.002)
    cpu.range_push("manual")
    cpu.range_pop()
    with pytest.raises(ds.InvalidStateError):
        cpu.range_pop()
    names = [m for lvl, tgt, m in records if tgt == "range"]
    assert len(names) == 3
    assert '"inner step"' in names[0] and '"outer"' in names[1] and '"manual"' in names[2]
    assert all(" ms" in m for m in names)
    with pytest.raises(ValueError):
        cpu.range_push("nul\0inside")


def test_synchronize_every_device(cpu):
    for d in range(cpu.device_count()):
        cpu.synchronize(d)
    cpu.synchronize()


def test_rng_fill_on_a_stream(cpu):
    x = np.zeros(16, np.float32)
    with cpu.stream() as s:
        cpu.fill_uniform(x, 1.0, 2.0, stream=s)
        s.synchronize()
    assert np.all((x >= 1.0) & (x < 2.0))
