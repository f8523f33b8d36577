"""Status codes become the right exception classes, with the library's messages."""

from __future__ import annotations

import ctypes
import pickle
import threading

import numpy as np
import pytest

import deepspeed_rs as ds
from deepspeed_rs import errors
from deepspeed_rs._lib import lib

BUILTIN = {
    100: ValueError, 101: ValueError, 102: (ValueError, IndexError), 103: ValueError,
    104: ValueError, 200: ValueError, 201: ValueError, 202: TypeError, 203: RuntimeError,
    300: ValueError, 301: ValueError, 302: OSError, 303: ValueError, 400: ValueError,
    401: RuntimeError, 402: MemoryError, 403: TypeError, 404: RuntimeError, 405: RuntimeError,
    500: RuntimeError, 501: RuntimeError, 502: ValueError, 503: RuntimeError,
    504: PermissionError, 505: AttributeError, 506: TimeoutError,
    900: RuntimeError, 901: RuntimeError,
}


def test_one_class_per_status():
    classes = set()
    for code, name in errors.STATUS_NAMES.items():
        if code == 0:
            continue
        cls = errors.error_class(code)
        assert cls is not ds.DsrsError and cls.STATUS == code
        classes.add(cls)
        bases = BUILTIN[code] if isinstance(BUILTIN[code], tuple) else (BUILTIN[code],)
        e = cls("some message", code)
        assert isinstance(e, ds.DsrsError)
        for b in bases:
            assert isinstance(e, b), (cls, b)
        assert e.status == code and e.status_name == name
        assert "some message" in str(e) and name in str(e)
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is cls and again.status == code and again.message == "some message"
    assert len(classes) == len(errors.STATUS_NAMES) - 1
    assert errors.error_class(12345) is ds.DsrsError


def test_check_reads_the_thread_message():
    assert errors.check(0) is None
    st = lib.dsrs_accelerator_new(b"bogus-accel", None, ctypes.byref(ctypes.c_void_p()))
    assert st == 400
    with pytest.raises(ds.UnknownAcceleratorError) as ei:
        errors.check(st)
    assert "dsrs_accelerator_new" in ei.value.message
    assert ds.last_error().status == 400
    ds.clear_last_error()
    assert ds.last_error() is None


def test_unknown_accelerator_names_the_valid_ones(rng):
    name = "bogus" + "".join(rng.choice(list("abcxyz"), size=6))
    with pytest.raises(ds.UnknownAcceleratorError) as ei:
        ds.Accelerator(name)
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.status == 400 and e.status_name == "DSRS_STATUS_UNKNOWN_ACCELERATOR"
    assert name in e.message and "cpu" in e.message


def test_accelerator_names_are_case_insensitive():
    with ds.Accelerator("CPU") as a:
        assert a.name == "cpu"


def test_invalid_json_options():
    with pytest.raises(ds.InvalidJsonError) as ei:
        ds.Accelerator.from_json("cpu", "{devices: 2")
    assert ei.value.status == 300 and "dsrs_accelerator_new" in ei.value.message


@pytest.mark.parametrize(
    "options, word",
    [
        ({"memory_limit": "lots"}, "memory_limit"),
        ({"devices": -1}, "devices"),
        ({"devices": 0}, "devices"),
        ({"seed": 1.5}, "seed"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_options(options, word):
    with pytest.raises(ds.InvalidConfigError) as ei:
        ds.Accelerator("cpu", **options)
    assert ei.value.status == 301 and word in ei.value.message


def test_options_must_be_an_object():
    with pytest.raises(ds.InvalidConfigError):
        ds.Accelerator.from_json("cpu", "[1, 2]")
    with ds.Accelerator.from_json("cpu", "") as a:  # empty: defaults
        assert a.name == "cpu"


def test_use_after_close_raises_and_the_library_reports_stale(cpu):
    a = ds.Accelerator("cpu")
    raw = a.handle
    a.close()
    a.close()  # idempotent
    assert a.closed
    with pytest.raises(ds.StaleHandleError) as ei:
        a.device_count()
    assert "closed" in str(ei.value) and isinstance(ei.value, ValueError)
    with pytest.raises(ds.StaleHandleError):
        a.name
    # What the binding avoids: the C library itself refuses the freed handle.
    n = ctypes.c_uint32()
    assert lib.dsrs_accelerator_device_count(raw, ctypes.byref(n)) == 201
    assert "stale" in errors.last_error_message()
    assert lib.dsrs_accelerator_free(raw) == 201  # double free
    with pytest.raises(ds.StaleHandleError) as ei:
        errors.check(lib.dsrs_accelerator_free(raw))
    assert "already freed" in ei.value.message

    b = cpu.buffer(16)
    b.close()
    for op in (lambda: b.read(), lambda: b.write(b"x"), lambda: b.nbytes, lambda: b.numpy()):
        with pytest.raises(ds.StaleHandleError):
            op()
    s, e = cpu.stream(), cpu.event()
    s.close()
    e.close()
    with pytest.raises(ds.StaleHandleError):
        s.synchronize()
    with pytest.raises(ds.StaleHandleError):
        e.record()
    with pytest.raises(ds.StaleHandleError):
        with b:
            pass


def test_wrong_and_garbage_handles(cpu):
    with cpu.buffer(8) as b:
        n = ctypes.c_uint32()
        st = lib.dsrs_accelerator_device_count(b.handle, ctypes.byref(n))
        assert st == 202
        with pytest.raises(ds.WrongHandleTypeError) as ei:
            errors.check(st)
        assert "dsrs_buffer" in ei.value.message and isinstance(ei.value, TypeError)
    local = ctypes.c_uint64(5)
    st = lib.dsrs_accelerator_device_count(ctypes.addressof(local), ctypes.byref(n))
    assert st in (200, 202)
    st = lib.dsrs_accelerator_device_count(0x1234, ctypes.byref(n))
    assert st == 200
    with pytest.raises(ds.InvalidHandleError):
        errors.check(st)
    assert lib.dsrs_accelerator_device_count(None, ctypes.byref(n)) == 100
    with pytest.raises(ds.NullArgumentError):
        errors.check(100)


def test_panic_is_caught_and_the_library_keeps_working(cpu, rng):
    with pytest.raises(ds.PanicError) as ei:
        ds.debug_panic("boom from the python tests")
    assert ei.value.status == 901 and "boom from the python tests" in ei.value.message
    with pytest.raises(ds.PanicError):
        ds.debug_panic()
    data = rng.bytes(100)
    with cpu.buffer(100) as b:
        b.write(data)
        assert b.read() == data
    assert ds.version()


def test_out_of_range_device(cpu):
    with pytest.raises(ds.OutOfRangeError) as ei:
        cpu.device_name(2)
    assert isinstance(ei.value, IndexError) and isinstance(ei.value, ValueError)
    with pytest.raises(ds.OutOfRangeError):
        cpu.set_device(5)
    with pytest.raises(ds.OutOfRangeError):
        cpu.synchronize(-2)
    with pytest.raises(ds.OutOfRangeError):  # checked in Python: ctypes would truncate
        cpu.set_device(2**40)


def test_python_side_argument_checks(cpu):
    with pytest.raises(ds.OutOfRangeError):
        cpu.buffer(-1)
    with pytest.raises(ds.OutOfRangeError):
        cpu.manual_seed(-1)
    with pytest.raises(ds.OutOfRangeError):
        cpu.manual_seed(2**64)
    with pytest.raises(TypeError):
        cpu.buffer(1.5)
    with pytest.raises(ValueError):
        cpu.buffer(8, kind="gpu")
    with pytest.raises(ValueError):
        ds.Accelerator("cp\0u")


def test_range_pop_without_push(cpu):
    with pytest.raises(ds.InvalidStateError) as ei:
        cpu.range_pop()
    assert "range_pop" in ei.value.message


def test_out_of_memory_is_a_memory_error():
    with ds.Accelerator("cpu", memory_limit=1000) as a:
        with pytest.raises(ds.OutOfMemoryError) as ei:
            a.buffer(1001)
        assert isinstance(ei.value, MemoryError) and "1000" in ei.value.message


def test_unsupported_is_a_type_error(cpu):
    with pytest.raises(ds.UnsupportedError) as ei:
        cpu.fill_bits(np.zeros(8, np.float32))
    assert isinstance(ei.value, TypeError)
    with pytest.raises(ds.UnsupportedError):
        cpu.fill_uniform(np.zeros(8, np.int32))


def test_errors_are_per_thread(cpu):
    """Each thread reads its own last-error message."""
    results = {}
    barrier = threading.Barrier(2)

    def worker(kind):
        try:
            barrier.wait()
            for _ in range(50):
                try:
                    if kind == "range":
                        cpu.device_name(9)
                    else:
                        ds.Accelerator("nope-" + kind)
                except ds.DsrsError as e:
                    results.setdefault(kind, set()).add((type(e).__name__, e.message.split(":")[0]))
        except BaseException as e:  # pragma: no cover
            results[kind] = e

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("range", "name")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["range"] == {("OutOfRangeError", "dsrs_accelerator_device_name")}
    assert results["name"] == {("UnknownAcceleratorError", "dsrs_accelerator_new")}
