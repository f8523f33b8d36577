"""Loading, versions, ABI checks, declarations and library-wide functions."""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

import pytest

import deepspeed_rs as ds
from deepspeed_rs import _lib, errors

HEADER = Path(__file__).resolve().parents[2] / "include" / "deepspeed_rs.h"


def test_versions():
    assert re.fullmatch(r"\d+\.\d+\.\d+", ds.version())
    assert ds.version() == ds.__version__
    assert ds.abi_version() == ds.ABI_VERSION == _lib.EXPECTED_ABI_VERSION == 1


def test_library_path_is_the_requested_one():
    want = os.environ.get("DSRS_LIBRARY")
    if want:
        assert ds.library_path() == want
    assert os.path.basename(ds.library_path()).startswith("libdeepspeed_rs")


def test_abi_mismatch_is_refused(monkeypatch):
    assert _lib.check_abi(_lib.lib, "lib") == 1
    monkeypatch.setattr(_lib, "EXPECTED_ABI_VERSION", 2)
    with pytest.raises(ds.AbiMismatchError) as ei:
        _lib.check_abi(_lib.lib, "/some/libdeepspeed_rs.so")
    e = ei.value
    assert isinstance(e, ImportError)
    assert (e.expected, e.found) == (2, 1)
    assert "ABI version 1" in str(e) and "ABI version 2" in str(e)
    assert "/some/libdeepspeed_rs.so" in str(e)


def test_abi_mismatch_refuses_import(run_python):
    """The real import path: the expected version is patched before the package loads."""
    code = (
        "import sys, deepspeed_rs._lib as L\n"
        "L.EXPECTED_ABI_VERSION = 7\n"
        "try:\n"
        "    L.check_abi(L.lib, L.library_path)\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("AbiMismatchError") and "version 7" in r.stdout


def test_a_wrong_DSRS_LIBRARY_fails_clearly(run_python, tmp_path):
    missing = tmp_path / "nope" / "libdeepspeed_rs.so"
    r = run_python("import deepspeed_rs", env={"DSRS_LIBRARY": str(missing)})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and str(missing) in r.stderr


def test_not_found_lists_what_was_tried(run_python, tmp_path):
    # Run from an empty directory with no DSRS_LIBRARY and no loader paths: unless the
    # library is installed system-wide, every place fails and all are listed.
    code = (
        "import ctypes.util, sys\n"
        "if ctypes.util.find_library('deepspeed_rs'):\n"
        "    print('SKIP installed'); sys.exit(0)\n"
        "import deepspeed_rs\n"
    )
    r = run_python(code, unset=("DSRS_LIBRARY", "LD_LIBRARY_PATH"))
    if "SKIP" in r.stdout:
        pytest.skip("libdeepspeed_rs is installed system-wide")
    pkg_dir = Path(ds.__file__).parent
    if list(pkg_dir.glob("libdeepspeed_rs.so*")):
        assert r.returncode == 0  # the copy next to the package is used
        return
    assert r.returncode != 0
    for part in ("DSRS_LIBRARY", "find_library", "libdeepspeed_rs.so.0.1", "next to the package"):
        assert part in r.stderr, r.stderr


def test_every_header_function_is_declared():
    text = HEADER.read_text()
    names = set(re.findall(r"^(?:dsrs_status|const char \*|uint32_t)\s*(dsrs_\w+)\(", text, re.M))
    assert len(names) > 60
    declared = set(_lib.PROTOTYPES)
    assert names - declared == set(), "functions of the header the binding does not declare"
    assert declared - names == set(), "declared functions that the header lacks"
    for name in names:
        fn = getattr(_lib.lib, name)
        assert fn.restype is not None or name == "dsrs_version"
        assert fn.argtypes is not None, name


def test_header_status_values_match_errors_module():
    text = HEADER.read_text()
    values = {name: int(v) for name, v in re.findall(r"(DSRS_STATUS_\w+) = (\d+)", text)}
    assert values == {name: code for code, name in errors.STATUS_NAMES.items()}


def test_header_abi_version_matches_binding():
    m = re.search(r"#define DSRS_ABI_VERSION (\d+)", HEADER.read_text())
    assert m and int(m.group(1)) == _lib.EXPECTED_ABI_VERSION


def test_dlpack_struct_layouts_match_the_header():
    assert ctypes.sizeof(_lib.DLDevice) == 8
    assert ctypes.sizeof(_lib.DLDataType) == 4
    assert ctypes.sizeof(_lib.DLPackVersion) == 8
    assert ctypes.sizeof(_lib.DLTensor) == 48
    assert [(_lib.DLTensor.data.offset), _lib.DLTensor.device.offset, _lib.DLTensor.ndim.offset,
            _lib.DLTensor.dtype.offset, _lib.DLTensor.shape.offset,
            _lib.DLTensor.strides.offset, _lib.DLTensor.byte_offset.offset] == [0, 8, 16, 20, 24, 32, 40]
    assert ctypes.sizeof(_lib.DLManagedTensor) == 64
    assert _lib.DLManagedTensor.manager_ctx.offset == 48
    assert _lib.DLManagedTensor.deleter.offset == 56
    v = _lib.DLManagedTensorVersioned
    assert [v.version.offset, v.manager_ctx.offset, v.deleter.offset, v.flags.offset,
            v.dl_tensor.offset] == [0, 8, 16, 24, 32]
    assert ctypes.sizeof(v) == 80


def test_status_names_agree_with_the_library(rng):
    for code, name in errors.STATUS_NAMES.items():
        assert ds.status_name(code) == name
        assert errors.status_name(code) == name
    for code in rng.integers(-(2**31), 2**31, size=50):
        code = int(code)
        if code not in errors.STATUS_NAMES:
            assert ds.status_name(code) == "DSRS_STATUS_UNKNOWN"
            assert errors.status_name(code) == "DSRS_STATUS_UNKNOWN"


def test_accelerator_names():
    names = ds.accelerator_names()
    assert "cpu" in names
    assert len(names) == len(set(names))
    assert all(n and n == n.strip() and "," not in n for n in names)


def test_report_is_json_with_versions():
    r = ds.report()
    assert isinstance(r, dict) and r
    text = repr(r)
    assert ds.version() in text
    assert "cpu" in text


def test_report_is_stable_across_retries():
    # Live figures change length between the size query and the copy; the binding retries.
    for _ in range(20):
        assert isinstance(ds.report(), dict)


def _package_copy(tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "site"
    shutil.copytree(Path(ds.__file__).parent, root / "deepspeed_rs",
                    ignore=shutil.ignore_patterns("__pycache__", "libdeepspeed_rs*"))
    return root


def test_library_next_to_the_package_is_found(run_python, tmp_path):
    import shutil

    root = _package_copy(tmp_path)
    target = root / "deepspeed_rs" / "libdeepspeed_rs.so.0.1"
    shutil.copy(ds.library_path(), target)
    r = run_python("import deepspeed_rs as ds; print(ds.library_path()); print(ds.version())",
                   env={"PYTHONPATH": str(root)}, unset=("DSRS_LIBRARY",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(target), ds.version()]


def test_library_on_the_loader_path_is_found_by_soname(run_python, tmp_path):
    import shutil

    root = _package_copy(tmp_path)
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copy(ds.library_path(), libdir / "libdeepspeed_rs.so.0.1")
    r = run_python("import deepspeed_rs as ds; print(ds.library_path())",
                   env={"PYTHONPATH": str(root), "LD_LIBRARY_PATH": str(libdir)},
                   unset=("DSRS_LIBRARY",))
    assert r.returncode == 0, r.stderr
    assert os.path.basename(r.stdout.strip()).startswith("libdeepspeed_rs.so")


def test_two_call_outputs_through_the_raw_abi():
    lib = _lib.lib
    needed = ctypes.c_size_t(0)
    assert lib.dsrs_accelerator_names(None, 0, ctypes.byref(needed)) == 0
    full = ",".join(ds.accelerator_names())
    assert needed.value == len(full) + 1  # with the NUL
    small = ctypes.create_string_buffer(b"\x7f" * 3, 3)
    needed.value = 0
    assert lib.dsrs_accelerator_names(small, 3, ctypes.byref(needed)) == 104
    assert needed.value == len(full) + 1 and small.raw == b"\x7f" * 3  # untouched
    # Reading the message never changes it, even when the read itself fails.
    msg = errors.last_error_message()
    assert "dsrs_accelerator_names" in msg
    tiny = ctypes.create_string_buffer(2)
    assert lib.dsrs_last_error_message(tiny, 2, ctypes.byref(needed)) == 104
    assert errors.last_error_message() == msg


def test_two_call_helper_retries_while_the_output_grows():
    texts = [b"short", b"a longer text", b"the longest text of all"]
    calls = []

    def fake(buf, n, needed):
        text = texts[min(len(calls), 2)] + b"\0"  # grows on every call
        calls.append(n)
        needed._obj.value = len(text)
        if buf is None:
            return 0
        if n < len(text):
            return 104
        ctypes.memmove(buf, text, len(text))
        return 0

    assert _lib.read_string(fake) == "the longest text of all"
    assert calls == [0, 6, 14, 24]


def test_exit_with_live_objects_is_clean(run_python):
    code = (
        "import numpy as np, deepspeed_rs as ds\n"
        "a = ds.Accelerator('cpu'); b = a.buffer(1024)\n"
        "arr = b.numpy('float32'); ai = b.numpy(via='array_interface')\n"
        "cap = b.view().__dlpack__(); capv = b.view().__dlpack__(max_version=(1, 0))\n"
        "s = a.stream(); e = a.event(); e.record()\n"
        "ds.set_log_level('trace'); ds.set_log_callback(lambda *r: None)\n"
        "class H: pass\n"
        "h = H(); h.me = h; h.buf = a.buffer(10); h.cap = b.view().__dlpack__()\n"
        "print('done')\n"
    )
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.strip() == "done" and r.stderr == "", r.stderr
