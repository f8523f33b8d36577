"""The log sink: Python callbacks, levels, re-entrancy, threads."""

from __future__ import annotations

import threading

import pytest

import deepspeed_rs as ds


def test_log_levels_round_trip(restore_logging, rng):
    for _ in range(10):
        level = ds.LogLevel(int(rng.integers(0, 6)))
        ds.set_log_level(level)
        assert ds.get_log_level() == level
    ds.set_log_level("Debug")
    assert ds.get_log_level() is ds.LogLevel.DEBUG
    with pytest.raises(ds.OutOfRangeError):
        ds.set_log_level(6)
    with pytest.raises(ds.OutOfRangeError):
        ds.set_log_level(-1)
    with pytest.raises(ValueError):
        ds.set_log_level("loud")
    assert ds.get_log_level() is ds.LogLevel.DEBUG


def test_callback_receives_host_records(restore_logging, rng):
    records = []
    ds.set_log_level(ds.LogLevel.TRACE)
    ds.set_log_callback(lambda *r: records.append(r))
    text = "message " + rng.bytes(8).hex() + " ünïcødé"
    ds.log(ds.LogLevel.WARN, text, target="pytest")
    ds.log("info", "no target")
    assert (int(ds.LogLevel.WARN), "pytest", text) in records
    assert (int(ds.LogLevel.INFO), "host", "no target") in records
    records.clear()
    ds.set_log_level("error")
    ds.log("warn", "filtered out")
    assert records == []
    with pytest.raises(ds.OutOfRangeError):
        ds.log(0, "OFF is a filter, not a level")


def test_failed_calls_are_logged_at_debug(restore_logging):
    records = []
    ds.set_log_level("debug")
    ds.set_log_callback(lambda *r: records.append(r))
    with pytest.raises(ds.UnknownAcceleratorError):
        ds.Accelerator("not-an-accelerator")
    assert any(lvl == ds.LogLevel.DEBUG and "not-an-accelerator" in msg
               for lvl, tgt, msg in records), records


def test_callback_may_call_into_the_library(restore_logging):
    seen = []

    def callback(level, target, message):
        # Re-entrant calls: queries, a failing call, an allocation, a log record of its own.
        seen.append((message, ds.version(), ds.accelerator_names()))
        with ds.Accelerator("cpu") as a, a.buffer(16) as b:
            b.write(b"x" * 16)
        try:
            ds.Accelerator("bogus-in-callback")
        except ds.UnknownAcceleratorError:
            pass
        ds.log("error", "from inside the callback")  # dropped: no recursion

    ds.set_log_level("trace")
    ds.set_log_callback(callback)
    ds.log("warn", "outer record")
    ds.set_log_callback(None)
    outer = [s for s in seen if s[0] == "outer record"]
    assert len(outer) == 1 and outer[0][1] == ds.version() and "cpu" in outer[0][2]
    assert not any(s[0] == "from inside the callback" for s in seen)
    # The failing call inside the callback did not clobber this thread's error state
    # for the next failure.
    with pytest.raises(ds.UnknownAcceleratorError) as ei:
        ds.Accelerator("after-callback")
    assert "after-callback" in ei.value.message


def test_callback_errors_do_not_break_the_library(restore_logging, recwarn):
    calls = []

    def broken(level, target, message):
        calls.append(message)
        raise RuntimeError("callback failure")

    ds.set_log_level("info")
    ds.set_log_callback(broken)
    ds.log("warn", "one")
    ds.log("warn", "two")
    assert calls == ["one", "two"]
    assert ds.version()


def test_none_restores_stderr(restore_logging, run_python):
    code = (
        "import deepspeed_rs as ds\n"
        "got = []\n"
        "ds.set_log_callback(lambda *r: got.append(r))\n"
        "ds.log('error', 'to the callback')\n"
        "ds.set_log_callback(None)\n"
        "ds.log('error', 'to stderr')\n"
        "print(len(got), got[0][2])\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1 to the callback"
    assert "to stderr" in r.stderr and "to the callback" not in r.stderr
    with pytest.raises(TypeError):
        ds.set_log_callback("not callable")


def test_records_from_other_threads(restore_logging):
    records = []
    lock = threading.Lock()

    def callback(level, target, message):
        with lock:
            records.append((threading.get_ident(), message))

    ds.set_log_level("info")
    ds.set_log_callback(callback)
    barrier = threading.Barrier(4)  # all alive at once: distinct thread idents

    def worker(i):
        barrier.wait()
        for k in range(20):
            ds.log("info", f"t{i}-{k}")
        barrier.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = {m for _, m in records}
    assert messages >= {f"t{i}-{k}" for i in range(4) for k in range(20)}
    assert len({tid for tid, m in records if m.startswith("t")}) == 4
