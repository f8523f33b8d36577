"""Ops through the C ABI (dsrs_op_*): defining ops at run time, building, caching and
loading them, the built-in cpu_adam kernel, and every op error status.

Each test builds into its own private cache directory (``cache_dir=`` under tmp_path), and
DSRS_CACHE_DIR points into tmp_path too, so nothing here touches ~/.cache. Op names carry
a random suffix: ops defined at run time are process-wide and live as long as the process.
A cold C++ build takes about a second (cpu_adam: a few).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import re
import stat
import uuid
from ctypes import c_char_p, c_double, c_float, c_int32, c_int64, c_uint64, c_void_p
from pathlib import Path

import numpy as np
import pytest

import deepspeed_rs as ds
from deepspeed_rs import errors
from deepspeed_rs._lib import lib

BUILTIN_OPS = (
    "cpu_adam",
    "cpu_adagrad",
    "cpu_lion",
    "cpu_quantizer",
    "fused_adam",
    "fused_lamb",
    "fused_lion",
    "cuda_quantizer",
    "philox_random",
)
SIMD_LEVELS = ("avx512", "avx2", "neon", "scalar")


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path, monkeypatch):
    """The default cache (DSRS_CACHE_DIR) of every test is private to it as well."""
    monkeypatch.setenv("DSRS_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def cache(tmp_path) -> str:
    """This test's op cache directory (created private by the library on first use)."""
    return str(tmp_path / "cache")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def cpu_op(name: str, source: str, symbols, **extra) -> dict:
    """A CPU op spec with one source; ``@NAME@`` in the source becomes the op's name."""
    spec = {
        "name": name,
        "sources": [{"name": f"{name}.cpp", "text": source.replace("@NAME@", name)}],
        "symbols": [s.replace("@NAME@", name) for s in symbols],
    }
    spec.update(extra)
    return spec


def returns_one(name: str) -> dict:
    """The smallest op: ``int <name>_one(void)`` returning 1."""
    return cpu_op(name, '#include "dsrs_op.h"\nDSRS_OP_EXPORT int @NAME@_one(void) { return 1; }\n',
                  ["@NAME@_one"])


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------------------
# 1. An op defined at run time: built, called, cached across processes.

BLAS_SOURCE = r"""
#include <cstdint>
#include "dsrs_op.h"
#include "@NAME@_util.h"

DSRS_OP_EXPORT void @NAME@_saxpy(double a, const double* DSRS_RESTRICT x, double* DSRS_RESTRICT y,
                                 uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) y[i] = axpy1(a, x[i], y[i]);
}

DSRS_OP_EXPORT double @NAME@_dot(const double* x, const double* y, uint64_t n) {
    double s = 0.0;
    for (uint64_t i = 0; i < n; ++i) s += x[i] * y[i];
    return s;
}

DSRS_OP_EXPORT int @NAME@_version(void) { return OP_VERSION; }

DSRS_OP_EXPORT const char* @NAME@_simd(void) { return DSRS_SIMD_LEVEL; }
"""


def blas_spec(name: str) -> dict:
    spec = cpu_op(name, BLAS_SOURCE,
                  ["@NAME@_saxpy", "@NAME@_dot", "@NAME@_version", "@NAME@_simd"],
                  defines={"OP_VERSION": "3"}, description="saxpy and dot over doubles")
    spec["headers"] = [{
        "name": f"{name}_util.h",
        "text": "#pragma once\nstatic inline double axpy1(double a, double x, double y) "
                "{ return a * x + y; }\n",
    }]
    return spec


CACHED_CHILD = r"""
import ctypes, json, os
import deepspeed_rs as ds
name = ds.define_op(os.environ["T_SPEC"])
with ds.load_op(name, cache_dir=os.environ["T_CACHE"], force_rebuild=False) as op:
    dot = op.function(name + "_dot", ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.c_uint64)
    x = (ctypes.c_double * 3)(1.0, 2.0, 3.0)
    y = (ctypes.c_double * 3)(4.0, 5.0, 6.0)
    print(json.dumps({"info": op.info, "dot": dot(x, y, 3)}))
"""


def test_custom_cpu_op_builds_computes_and_is_cached_for_other_processes(cache, rng, run_python):
    name = unique("blas")
    spec = blas_spec(name)
    assert ds.define_op(spec) == name
    listed = {o["name"]: o for o in ds.list_ops(cache_dir=cache)}
    assert listed[name]["builtin"] is False and listed[name]["kind"] == "cpu"
    assert listed[name]["description"] == "saxpy and dot over doubles"
    assert listed[name]["cached"] is False and listed[name]["incompatible"] == []

    with ds.load_op(name, cache_dir=cache) as op:
        info = op.info
        assert op.name == info["name"] == name and op.kind == "cpu"
        assert op.origin == info["origin"] == "built"
        assert info["symbols"] == spec["symbols"]
        level = op.function(f"{name}_simd", c_char_p)().decode()
        assert level in SIMD_LEVELS and info["target"] == f"native:{level}"
        assert op.function(f"{name}_version", c_int32)() == 3  # from "defines"

        saxpy = op.function(f"{name}_saxpy", None, c_double, c_void_p, c_void_p, c_uint64)
        dot = op.function(f"{name}_dot", c_double, c_void_p, c_void_p, c_uint64)
        for n in (0, 1, 5, 1000, 4099):
            x, y = rng.standard_normal(n), rng.standard_normal(n)
            a = float(rng.standard_normal())
            want = a * x + y
            got = y.copy()
            saxpy(a, ptr(x), ptr(got), n)
            # One rounding per element (two if the compiler does not contract to an FMA).
            tol = 2 * np.finfo(np.float64).eps * (np.abs(a * x) + np.abs(y))
            assert np.all(np.abs(got - want) <= tol), n
            d = dot(ptr(x), ptr(y), n)
            bound = n * np.finfo(np.float64).eps * float(np.sum(np.abs(x * y)))
            assert abs(d - float(np.dot(x, y))) <= bound, n

        manifest = info["manifest"]
        artifact = Path(info["dir"]) / manifest["artifact"]
        data = artifact.read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
        assert len(data) == manifest["size"]
        assert manifest["op"] == name and manifest["key"] == info["key"]
        assert "-DOP_VERSION=3" in manifest["command"]
        assert Path(info["dir"]).is_relative_to(cache)
        assert mode_of(cache) & 0o077 == 0  # created private

    # A new process finds the verified build in the cache and compiles nothing.
    r = run_python(CACHED_CHILD, env={"T_SPEC": json.dumps(spec), "T_CACHE": cache})
    assert r.returncode == 0, r.stderr
    child = json.loads(r.stdout.strip().splitlines()[-1])
    assert child["dot"] == 32.0
    cinfo = child["info"]
    assert cinfo["origin"] == "cached"
    assert (cinfo["key"], cinfo["dir"]) == (info["key"], info["dir"])
    assert cinfo["manifest"] == manifest  # the same build, not a new one
    assert {o["name"]: o for o in ds.list_ops(cache_dir=cache)}[name]["cached"] is True


ONE_CHILD = r"""
import ctypes, json, os
import deepspeed_rs as ds
name = ds.define_op(os.environ["T_SPEC"])
with ds.load_op(name, cache_dir=os.environ["T_CACHE"]) as op:
    print(json.dumps({"info": op.info, "one": op.function(name + "_one", ctypes.c_int)()}))
"""


def test_a_tampered_artifact_is_rebuilt_not_loaded(cache, run_python):
    name = unique("tamper")
    spec = returns_one(name)
    ds.define_op(spec)
    with ds.load_op(name, cache_dir=cache) as op:
        info = op.info
    artifact = Path(info["dir"]) / info["manifest"]["artifact"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    r = run_python(ONE_CHILD, env={"T_SPEC": json.dumps(spec), "T_CACHE": cache,
                                   "DSRS_LOG": "warn"})
    assert r.returncode == 0, r.stderr
    child = json.loads(r.stdout.strip().splitlines()[-1])
    assert child["one"] == 1
    assert child["info"]["origin"] == "built" and child["info"]["key"] == info["key"]
    assert "SHA-256" in r.stderr  # the warning says why it was rebuilt
    fresh = artifact.read_bytes()
    assert hashlib.sha256(fresh).hexdigest() == child["info"]["manifest"]["sha256"]


def test_concurrent_processes_build_once(cache, run_python):
    import subprocess
    import sys

    name = unique("race")
    spec = json.dumps(returns_one(name))
    code = ("import deepspeed_rs as ds, os\nn = ds.define_op(os.environ['T_SPEC'])\n"
            "print(ds.load_op(n, cache_dir=os.environ['T_CACHE']).origin)\n")
    env = dict(os.environ, T_SPEC=spec, T_CACHE=cache)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    origins = sorted(o.strip() for o, _ in outs)
    assert origins == ["built", "cached", "cached"]


def test_each_op_loads_its_own_code(cache):
    """Several ops built in one process, and an op redefined with new source, each run
    their own code (not a library that was loaded before)."""
    names = [unique("own") for _ in range(2)]
    for i, name in enumerate(names):
        ds.define_op(cpu_op(name, '#include "dsrs_op.h"\n'
                            f"DSRS_OP_EXPORT int @NAME@_id(void) {{ return {i + 10}; }}\n",
                            ["@NAME@_id"]))
    for i, name in enumerate(names):
        with ds.load_op(name, cache_dir=cache) as op:
            assert op.function(f"{name}_id", c_int32)() == i + 10
    ds.define_op(cpu_op(names[0], '#include "dsrs_op.h"\n'
                        "DSRS_OP_EXPORT int @NAME@_id(void) { return 99; }\n", ["@NAME@_id"]))
    with ds.load_op(names[0], cache_dir=cache) as op:
        assert op.origin == "built"
        assert op.function(f"{names[0]}_id", c_int32)() == 99


# --------------------------------------------------------------------------------------
# 2. cpu_adam against the formula.


class AdamConfig(ctypes.Structure):
    """``dsrs_cpu_adam_config`` (kernels/include/dsrs_cpu_adam.h)."""

    _fields_ = [
        ("lr", c_float),
        ("beta1", c_float),
        ("beta2", c_float),
        ("eps", c_float),
        ("weight_decay", c_float),
        ("adamw_mode", c_int32),
        ("bias_correction", c_int32),
        ("step", c_int64),
        ("grad_scale", c_float),
        ("num_threads", c_int32),
    ]


assert ctypes.sizeof(AdamConfig) == 48 and ctypes.alignment(AdamConfig) == 8
assert AdamConfig.step.offset == 32 and AdamConfig.grad_scale.offset == 40
assert AdamConfig.num_threads.offset == 44

HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, grad_scale=2.0)


def adam_step_fn(op):
    f32p = ctypes.POINTER(c_float)
    return op.function("dsrs_cpu_adam_step_f32", c_int32, f32p, f32p, f32p, f32p, c_uint64,
                       ctypes.POINTER(AdamConfig))


def as_f32p(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(c_float))


def adam_reference_f64(p, g, m, v, step, adamw, bias_correction, lr, beta1, beta2, eps,
                       weight_decay, grad_scale):
    """The documented step in float64 (the hyperparameters as the kernel sees them: fp32)."""
    g = g / grad_scale
    if weight_decay > 0 and not adamw:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bc1 = 1 - beta1 ** step if bias_correction else 1.0
    bc2 = 1 / math.sqrt(1 - beta2 ** step) if bias_correction else 1.0
    denom = np.sqrt(v) * bc2 + eps
    if weight_decay > 0 and adamw:
        p = p + -lr * weight_decay * p
    p = p + (-lr / bc1) * (m / denom)
    return p, m, v


def adam_emulate_f32(p, g, m, v, step, adamw, bias_correction, lr, beta1, beta2, eps,
                     weight_decay, grad_scale):
    """The header's exact order of fp32 operations (no FMA), one IEEE rounding each."""
    f = np.float32
    lr, beta1, beta2, eps, wd, gs = map(f, (lr, beta1, beta2, eps, weight_decay, grad_scale))
    one = f(1)
    if bias_correction:
        bc1 = f(1.0 - float(beta1) ** step)  # in double, then rounded to float
        bc2 = f(1.0 / math.sqrt(1.0 - float(beta2) ** step))
    else:
        bc1 = bc2 = one
    if gs != one:
        g = g / gs
    if wd > 0 and not adamw:
        g = g + wd * p
    m = beta1 * m + (one - beta1) * g
    v = beta2 * v + ((one - beta2) * g) * g
    denom = np.sqrt(v) * bc2 + eps
    if wd > 0 and adamw:
        p = p + (-lr * wd) * p
    p = p + (-lr / bc1) * (m / denom)
    return p, m, v


@pytest.mark.parametrize("adamw", [1, 0], ids=["adamw", "l2"])
@pytest.mark.parametrize("n", [1, 7, 1023, 100003])
def test_cpu_adam_matches_the_formula(cache, rng, n, adamw):
    with ds.load_op("cpu_adam", cache_dir=cache) as op:
        step_fn = adam_step_fn(op)
    # Hyperparameters as the kernel sees them (fp32), for both references.
    hyper = {k: float(np.float32(v)) for k, v in HYPER.items()}
    p = rng.standard_normal(n).astype(np.float32)
    m = (0.1 * rng.standard_normal(n)).astype(np.float32)
    v = (0.01 * rng.random(n)).astype(np.float32)
    p64, m64, v64 = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    pe, me, ve = p.copy(), m.copy(), v.copy()
    cfg = AdamConfig(adamw_mode=adamw, bias_correction=1, num_threads=0, **hyper)
    for step in range(1, 6):
        g = (2.0 * rng.standard_normal(n)).astype(np.float32)
        cfg.step = step
        assert step_fn(as_f32p(p), as_f32p(g), as_f32p(m), as_f32p(v), n, ctypes.byref(cfg)) == 0
        p64, m64, v64 = adam_reference_f64(p64, g.astype(np.float64), m64, v64, step, adamw,
                                           True, **hyper)
        pe, me, ve = adam_emulate_f32(pe, g, me, ve, step, adamw, True, **hyper)

    # Against float64. Per step fp32 rounds p to 6e-8 of |p|, and the update (of size
    # about lr) to a few ulps of lr, so after 5 steps every element stays within 1e-5 of
    # |p| + lr (measured: about 5e-7). The moments are sums of rounded terms of the size of
    # the largest moment, so they are compared normwise (v: all terms >= 0, elementwise).
    rel_p = np.max(np.abs(p - p64) / (np.abs(p64) + hyper["lr"]))
    assert rel_p < 1e-5, rel_p
    rel_m = np.max(np.abs(m - m64)) / np.max(np.abs(m64))
    assert rel_m < 1e-5, rel_m
    rel_v = np.max(np.abs(v - v64) / v64)
    assert rel_v < 1e-5, rel_v
    # The header promises exactly this sequence of fp32 operations at every SIMD level:
    # bit-identical to the emulation.
    for got, want in ((p, pe), (m, me), (v, ve)):
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
            int(np.sum(got != want))


def test_cpu_adam_without_bias_correction_and_grad_scale_one(cache, rng):
    with ds.load_op("cpu_adam", cache_dir=cache) as op:
        step_fn = adam_step_fn(op)
    n = 257
    hyper = {k: float(np.float32(v)) for k, v in HYPER.items()}
    hyper.update(grad_scale=1.0, weight_decay=0.0)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    want = adam_emulate_f32(p.copy(), g, m.copy(), v.copy(), 3, 1, False, **hyper)
    cfg = AdamConfig(adamw_mode=1, bias_correction=0, step=3, **hyper)
    assert step_fn(as_f32p(p), as_f32p(g), as_f32p(m), as_f32p(v), n, ctypes.byref(cfg)) == 0
    for got, w in zip((p, m, v), want):
        assert np.array_equal(got, w)


def test_cpu_adam_simd_level_and_invalid_config(cache, rng):
    with ds.load_op("cpu_adam", cache_dir=cache) as op:
        level = op.function("dsrs_cpu_adam_simd_level", c_char_p)().decode()
        info = op.info
        step_fn = adam_step_fn(op)
        threads = op.function("dsrs_cpu_adam_max_threads", c_int32)()
    assert level in SIMD_LEVELS
    if info["origin"] != "prebuilt":
        assert info["target"] == f"native:{level}"
    assert threads >= 1

    n = 16
    arrays = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    arrays.append(rng.random(n).astype(np.float32))
    p, g, m, v = arrays
    before = [a.copy() for a in arrays]
    good = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, adamw_mode=1,
                bias_correction=1, step=1, grad_scale=1.0)
    # DSRS_OP_ERR_CONFIG (2) for a field out of range, and nothing written.
    for bad in (dict(eps=0.0), dict(eps=float("nan")), dict(beta1=1.0), dict(step=0),
                dict(lr=-1.0), dict(grad_scale=0.0), dict(adamw_mode=2), dict(num_threads=-1)):
        cfg = AdamConfig(**{**good, **bad})
        assert step_fn(as_f32p(p), as_f32p(g), as_f32p(m), as_f32p(v), n,
                       ctypes.byref(cfg)) == 2, bad
    # DSRS_OP_ERR_NULL (1) for a NULL config or array.
    assert step_fn(as_f32p(p), as_f32p(g), as_f32p(m), as_f32p(v), n, None) == 1
    cfg = AdamConfig(**good)
    assert step_fn(None, as_f32p(g), as_f32p(m), as_f32p(v), n, ctypes.byref(cfg)) == 1
    for a, b in zip(arrays, before):
        assert np.array_equal(a, b)
    assert step_fn(None, None, None, None, 0, ctypes.byref(cfg)) == 0  # n == 0: no-op


def test_cpu_adam_portable_build_is_scalar_and_bit_identical(cache, rng):
    n = 1000
    hyper = {k: float(np.float32(v)) for k, v in HYPER.items()}
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    results = []
    for portable in (False, True):
        with ds.load_op("cpu_adam", cache_dir=cache, portable=portable, prebuilt=False) as op:
            level = op.function("dsrs_cpu_adam_simd_level", c_char_p)().decode()
            if portable:
                assert op.info["target"] == "portable:scalar" and level == "scalar"
            p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
            cfg = AdamConfig(adamw_mode=1, bias_correction=1, step=1, **hyper)
            assert adam_step_fn(op)(as_f32p(p), as_f32p(g), as_f32p(m), as_f32p(v), n,
                                    ctypes.byref(cfg)) == 0
            results.append(p)
    assert np.array_equal(results[0], results[1])


# --------------------------------------------------------------------------------------
# 3, 4. Build and load failures.


def test_a_syntax_error_raises_build_failed_with_the_compiler_output(cache):
    name = unique("broken")
    ident = f"undeclared_{uuid.uuid4().hex[:8]}"
    ds.define_op(cpu_op(name, '#include "dsrs_op.h"\n'
                        f"DSRS_OP_EXPORT int @NAME@_f(void) {{ return {ident} + 1; }}\n",
                        ["@NAME@_f"]))
    with pytest.raises(ds.BuildFailedError) as ei:
        ds.load_op(name, cache_dir=cache)
    e = ei.value
    assert isinstance(e, RuntimeError) and e.status == 500
    assert e.status_name == "DSRS_STATUS_BUILD_FAILED"
    msg = e.message
    assert msg.startswith("dsrs_op_load") and f"'{name}'" in msg
    assert any("error" in line and ident in line for line in msg.splitlines()), msg
    command = re.search(r"command: (.+)", msg)
    assert command and f"{name}.cpp" in command.group(1) and "-shared" in command.group(1)
    log = re.search(r"full log: (\S+)", msg)
    assert log, msg
    log_path = Path(log.group(1))
    assert log_path.is_file() and log_path.is_relative_to(cache)
    assert ident in log_path.read_text()
    # Nothing half-built is left to be loaded later.
    op_dir = Path(cache) / "ops-v1" / name
    assert not [p for p in op_dir.iterdir() if p.is_dir()]
    assert {o["name"]: o for o in ds.list_ops(cache_dir=cache)}[name]["cached"] is False


def test_a_declared_symbol_that_is_not_exported_fails_to_load(cache):
    name = unique("missing")
    ds.define_op(cpu_op(name, '#include "dsrs_op.h"\n'
                        "DSRS_OP_EXPORT int @NAME@_here(void) { return 1; }\n"
                        "int @NAME@_hidden(void) { return 2; }\n",  # not exported
                        ["@NAME@_here", "@NAME@_hidden"]))
    with pytest.raises(ds.LoadFailedError) as ei:
        ds.load_op(name, cache_dir=cache)
    e = ei.value
    assert e.status == 503 and isinstance(e, RuntimeError)
    assert f"'{name}_hidden'" in e.message and "export" in e.message
    assert f"'{name}_here'" not in e.message


# --------------------------------------------------------------------------------------
# 5. Unknown ops, bad definitions, bad options.


def test_unknown_op_lists_the_known_ones(cache):
    name = unique("nosuchop")
    with pytest.raises(ds.UnknownOpError) as ei:
        ds.load_op(name, cache_dir=cache)
    e = ei.value
    assert e.status == 502 and isinstance(e, ValueError)
    assert name in e.message
    for op in BUILTIN_OPS:
        assert op in e.message


SRC = [{"name": "a.cpp", "text": "int x;"}]


J, C = ds.InvalidJsonError, ds.InvalidConfigError
BAD_DEFINITIONS = {
    "not-json": ("{not json", J, "line 1"),
    "not-an-object": ("[1, 2]", C, "JSON object"),
    "unknown-field": ({"name": "NAME", "sources": SRC, "bogus_field": 1}, C, "bogus_field"),
    "no-sources": ({"name": "NAME"}, C, "sources"),
    "name-with-space": ({"name": "Bad Name", "sources": SRC}, C, "Bad Name"),
    "name-with-digit-first": ({"name": "9lives", "sources": SRC}, C, "9lives"),
    "builtin-name": ({"name": "cpu_adam", "sources": SRC}, C, "built in"),
    "empty-sources": ({"name": "NAME", "sources": []}, C, "'sources' is empty"),
    "kind": ({"name": "NAME", "kind": "tpu", "sources": SRC}, C, "tpu"),
    "text-without-name": ({"name": "NAME", "sources": [{"text": "int x;"}]}, C, "sources[0]"),
    "header-without-text": ({"name": "NAME", "sources": SRC, "headers": [{"name": "h.h"}]}, C,
                            "headers[0]"),
    "dotdot-source": ({"name": "NAME", "sources": [{"name": "../a.cpp", "text": ""}]}, C,
                      "../a.cpp"),
    "missing-path": ({"name": "NAME", "sources": [{"path": "/nonexistent/dir/a.cpp"}]}, C,
                     "/nonexistent/dir/a.cpp"),
    "symbol": ({"name": "NAME", "sources": SRC, "symbols": ["a b"]}, C, "a b"),
    "define": ({"name": "NAME", "sources": SRC, "defines": {"A-B": "1"}}, C, "A-B"),
    "include-dir": ({"name": "NAME", "sources": SRC, "include_dirs": ["rel/inc"]}, C,
                    "include_dirs"),
    "compute-capability": ({"name": "NAME", "sources": SRC, "min_compute_capability": "eight"},
                           C, "min_compute_capability"),
    "cuda-two-sources": ({"name": "NAME", "kind": "cuda", "sources": SRC * 2}, C,
                         "exactly one source"),
}


@pytest.mark.parametrize("spec, exc, word", list(BAD_DEFINITIONS.values()),
                         ids=list(BAD_DEFINITIONS))
def test_bad_definitions_name_the_field(cache, spec, exc, word):
    """Text that is not JSON is InvalidJsonError; JSON that is not a valid definition
    (not an object, unknown or missing fields, bad values) is InvalidConfigError, as for
    accelerator and build options. The message names the field or value at fault."""
    name = unique("bad")
    if isinstance(spec, dict):
        spec = {k: (name if v == "NAME" else v) for k, v in spec.items()}
    with pytest.raises(exc) as ei:
        ds.define_op(spec)
    assert type(ei.value) is exc
    assert word in ei.value.message and ei.value.message.startswith("dsrs_op_define")
    # A refused definition registers nothing.
    with pytest.raises(ds.UnknownOpError):
        ds.load_op(name, cache_dir=cache)


def test_define_op_checks_its_argument_in_python():
    with pytest.raises(TypeError):
        ds.define_op(42)
    with pytest.raises(ValueError):
        ds.define_op('{"name": "a\0b"}')


@pytest.mark.parametrize(
    "options, word",
    [
        ({"lock_timeout_s": -1}, "lock_timeout_s"),
        ({"no_such_option": 1}, "no_such_option"),
        ({"portable": "yes"}, "portable"),
        ({"cache_dir": "relative/dir"}, "cache_dir"),
        ({"cuda_arch": "sm_x"}, "sm_x"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(cache, options, word):
    options = {"cache_dir": cache, **options}
    for call in (lambda: ds.load_op("cpu_adam", **options), lambda: ds.list_ops(**options)):
        with pytest.raises(ds.InvalidConfigError) as ei:
            call()
        assert ei.value.status == 301 and word in ei.value.message


def test_options_must_be_json(cache):
    with pytest.raises(ValueError):  # not JSON: refused by the binding
        ds.load_op("cpu_adam", cache_dir=cache, lock_timeout_s=float("inf"))
    with pytest.raises(TypeError):
        ds.list_ops(cache_dir=cache, portable=object())


def test_options_accept_path_objects(tmp_path):
    listed = ds.list_ops(cache_dir=tmp_path / "pathlike")
    assert [o["name"] for o in listed[: len(BUILTIN_OPS)]] == list(BUILTIN_OPS)
    # Listing only looks: a cache that does not exist yet is not created.
    assert not (tmp_path / "pathlike").exists()
    op = ds.load_op("cpu_adam", cache_dir=tmp_path / "pathlike", prebuilt=False)
    assert op.info["dir"].startswith(str(tmp_path / "pathlike"))


# --------------------------------------------------------------------------------------
# 6. The cache must be private.


@pytest.mark.parametrize("mode, word", [(0o777, "world-writable"), (0o770, "group-writable"),
                                        (0o720, "group-writable")])
def test_a_shared_cache_is_refused_with_the_fix(tmp_path, monkeypatch, mode, word):
    shared = tmp_path / "shared-cache"
    shared.mkdir(mode=0o700)
    name = unique("unsafe")
    ds.define_op(returns_one(name))
    os.chmod(shared, mode)
    try:
        for op in (name, "cpu_adam"):
            with pytest.raises(ds.UnsafeCacheError) as ei:
                ds.load_op(op, cache_dir=str(shared), prebuilt=False)
            e = ei.value
            assert e.status == 504 and isinstance(e, PermissionError)
            assert word in e.message and "chmod 700" in e.message and str(shared) in e.message
        monkeypatch.setenv("DSRS_CACHE_DIR", str(shared))
        with pytest.raises(ds.UnsafeCacheError) as ei:
            ds.cache_dir()
        assert word in ei.value.message
        assert not any(shared.iterdir())  # nothing was written into it
    finally:
        os.chmod(shared, 0o700)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to give the directory away")
def test_a_cache_owned_by_someone_else_is_refused(tmp_path):
    other = tmp_path / "others-cache"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.raises(ds.UnsafeCacheError) as ei:
        ds.load_op("cpu_adam", cache_dir=str(other), prebuilt=False)
    assert "owned by uid 65534" in ei.value.message


def test_cache_dir_follows_the_environment_and_is_created_private(tmp_path, monkeypatch):
    want = tmp_path / "a" / "b" / "dsrs-cache"
    monkeypatch.setenv("DSRS_CACHE_DIR", str(want))
    assert ds.cache_dir() == str(want)
    assert want.is_dir() and mode_of(want) == 0o700
    monkeypatch.setenv("DSRS_CACHE_DIR", "relative/cache")
    with pytest.raises(ds.InvalidConfigError) as ei:
        ds.cache_dir()
    assert "DSRS_CACHE_DIR" in ei.value.message
    monkeypatch.delenv("DSRS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ds.cache_dir() == str(tmp_path / "xdg" / "deepspeed_rs")


def test_lock_timeout_names_the_lock(cache):
    import fcntl

    name = unique("locked")
    ds.define_op(returns_one(name))
    key = {o["name"]: o for o in ds.list_ops(cache_dir=cache)}[name]["key"]
    op_dir = Path(cache) / "ops-v1" / name
    Path(cache).mkdir(mode=0o700, exist_ok=True)
    op_dir.parent.mkdir(mode=0o700)
    op_dir.mkdir(mode=0o700)
    lock = op_dir / f"{key}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another builder would hold it
        with pytest.raises(ds.LockTimeoutError) as ei:
            ds.load_op(name, cache_dir=cache, lock_timeout_s=0.2)
        e = ei.value
        assert e.status == 506 and isinstance(e, TimeoutError)
        assert str(lock) in e.message and "4242" in e.message
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# 7. Symbols and handles.


def test_symbols_and_stale_handles(cache):
    op = ds.load_op("cpu_adam", cache_dir=cache)
    assert op.symbol("dsrs_cpu_adam_step_f32") != 0
    with pytest.raises(ds.SymbolNotFoundError) as ei:
        op.symbol("dsrs_cpu_adam_nope")
    e = ei.value
    assert e.status == 505 and isinstance(e, AttributeError)
    assert "dsrs_cpu_adam_nope" in e.message and "dsrs_cpu_adam_step_f32" in e.message
    for bad in ("", "a\0b"):
        with pytest.raises(ValueError):
            op.symbol(bad)
    with pytest.raises(ds.InvalidArgumentError) as ei:  # a CPU op has no CUDA side
        op.kernel(0, "dsrs_cpu_adam_step_f32")
    assert "dsrs_op_symbol" in ei.value.message
    with pytest.raises(ds.InvalidArgumentError):
        op.image()
    with pytest.raises(ds.OutOfRangeError):
        op.kernel(-3, "k")

    simd = op.function("dsrs_cpu_adam_simd_level", c_char_p)
    raw = op.handle
    assert "cpu_adam" in repr(op)
    op.close()
    op.close()  # idempotent
    assert op.closed and "closed" in repr(op) and op.name == "cpu_adam"
    for use in (lambda: op.symbol("dsrs_cpu_adam_step_f32"), lambda: op.info,
                lambda: op.origin, lambda: op.image(), lambda: op.kernel(0, "k")):
        with pytest.raises(ds.StaleHandleError):
            use()
    with pytest.raises(ds.StaleHandleError):
        with op:
            pass
    # The code stays loaded: functions taken before close() still work.
    assert simd().decode() in SIMD_LEVELS
    # The library itself refuses the freed handle (what the binding's check avoids).
    out = c_void_p()
    assert lib.dsrs_op_symbol(raw, b"dsrs_cpu_adam_step_f32", ctypes.byref(out)) == 201
    assert "stale" in errors.last_error_message()
    assert lib.dsrs_op_free(raw) == 201
    assert lib.dsrs_op_free(None) == 0  # free(NULL) is a no-op
    assert lib.dsrs_op_symbol(None, b"x", ctypes.byref(out)) == 100
    assert lib.dsrs_op_symbol(0x1234, b"x", ctypes.byref(out)) == 200


def test_op_handles_are_typed(cache):
    with ds.load_op("cpu_adam", cache_dir=cache) as op, ds.Accelerator("cpu") as accel:
        n = ctypes.c_uint32()
        assert lib.dsrs_accelerator_device_count(op.handle, ctypes.byref(n)) == 202
        out = c_void_p()
        assert lib.dsrs_op_symbol(accel.handle, b"x", ctypes.byref(out)) == 202
        with pytest.raises(ds.WrongHandleTypeError):
            errors.check(lib.dsrs_op_free(accel.handle))
        assert accel.device_count() >= 1  # untouched by the refused free


def test_garbage_collected_ops_release_their_handles(cache):
    op = ds.load_op("cpu_adam", cache_dir=cache)
    raw = op.handle
    del op
    out = c_void_p()
    assert lib.dsrs_op_symbol(raw, b"dsrs_cpu_adam_step_f32", ctypes.byref(out)) == 201


def test_cuda_op_kernels_and_image(cache):
    """Runs where NVRTC and a GPU make the CUDA ops buildable; skipped elsewhere."""
    entry = {o["name"]: o for o in ds.list_ops(cache_dir=cache)}["philox_random"]
    if entry["incompatible"]:
        pytest.skip("philox_random cannot be built here: " + "; ".join(entry["incompatible"]))
    with ds.load_op("philox_random", cache_dir=cache) as op:
        assert op.kind == "cuda" and op.origin in ("built", "cached")
        image = op.image()
        assert isinstance(image, bytes) and len(image) > 0
        assert op.kernel(0, "dsrs_philox_bits_u32") != 0
        with pytest.raises(ds.SymbolNotFoundError):
            op.kernel(0, "dsrs_philox_no_such_kernel")
        with pytest.raises(ds.InvalidArgumentError):
            op.symbol("dsrs_philox_bits_u32")


# --------------------------------------------------------------------------------------
# 8. The op list.


def test_list_ops_describes_every_op_and_sees_the_cache(cache, tmp_path, monkeypatch):
    keys = {"name", "kind", "builtin", "description", "prebuilt", "incompatible", "cached",
            "key"}
    monkeypatch.setenv("DSRS_CACHE_DIR", str(tmp_path / "env-cache"))
    for listed in (ds.list_ops(), ds.list_ops(cache_dir=cache)):
        assert [o["name"] for o in listed[: len(BUILTIN_OPS)]] == list(BUILTIN_OPS)
        for o in listed:
            assert keys <= set(o), o
            assert o["kind"] in ("cpu", "cuda") and isinstance(o["incompatible"], list)
            assert o["builtin"] is (o["name"] in BUILTIN_OPS)
        by_name = {o["name"]: o for o in listed}
        assert by_name["cpu_adam"]["kind"] == "cpu"
        assert by_name["fused_adam"]["kind"] == by_name["philox_random"]["kind"] == "cuda"
        assert by_name["cpu_adam"]["cached"] is False

    # force_rebuild: this process may already hold a cpu_adam from another cache.
    with ds.load_op("cpu_adam", cache_dir=cache, prebuilt=False, force_rebuild=True) as op:
        info = op.info
    assert info["origin"] == "built" and Path(info["dir"]).is_relative_to(cache)
    entry = {o["name"]: o for o in ds.list_ops(cache_dir=cache)}["cpu_adam"]
    assert entry["cached"] is True and entry["key"] == info["key"]
    # Another build configuration is another cache entry.
    assert {o["name"]: o for o in ds.list_ops(cache_dir=cache, debug=True)}["cpu_adam"][
        "cached"] is False
    assert {o["name"]: o for o in ds.list_ops()}["cpu_adam"]["cached"] is False


# --------------------------------------------------------------------------------------
# 9. No compiler.

NO_COMPILER_CHILD = r"""
import json, os
import deepspeed_rs as ds
cache = os.environ["T_CACHE"]
out = {}
try:
    ds.load_op("cpu_adam", cache_dir=cache, force_rebuild=True, prebuilt=False)
    out["load"] = "loaded"
except ds.DsrsError as e:
    out["load"] = [type(e).__name__, e.status, e.message]
name = ds.define_op(json.loads(os.environ["T_SPEC"]))
try:
    ds.load_op(name, cache_dir=cache)
    out["custom"] = "loaded"
except ds.DsrsError as e:
    out["custom"] = [type(e).__name__, e.status, e.message]
out["list"] = {o["name"]: o["incompatible"] for o in ds.list_ops(cache_dir=cache, prebuilt=False)}
print(json.dumps(out))
"""


def test_a_missing_compiler_makes_cpu_ops_incompatible(cache, run_python):
    name = unique("nocxx")
    r = run_python(NO_COMPILER_CHILD, env={"CXX": "/nonexistent", "T_CACHE": cache,
                                           "T_SPEC": json.dumps(returns_one(name))})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for what, op in (("load", "cpu_adam"), ("custom", name)):
        cls, status, message = out[what]
        assert (cls, status) == ("OpIncompatibleError", 501), out[what]
        assert "'/nonexistent'" in message and f"'{op}'" in message and "CXX" in message
    assert any("/nonexistent" in reason for reason in out["list"]["cpu_adam"])
    assert any("/nonexistent" in reason for reason in out["list"][name])


# --------------------------------------------------------------------------------------
# The new statuses in the binding.

NEW_STATUSES = {
    500: ("DSRS_STATUS_BUILD_FAILED", ds.BuildFailedError, RuntimeError),
    501: ("DSRS_STATUS_OP_INCOMPATIBLE", ds.OpIncompatibleError, RuntimeError),
    502: ("DSRS_STATUS_UNKNOWN_OP", ds.UnknownOpError, ValueError),
    503: ("DSRS_STATUS_LOAD_FAILED", ds.LoadFailedError, RuntimeError),
    504: ("DSRS_STATUS_UNSAFE_CACHE", ds.UnsafeCacheError, PermissionError),
    505: ("DSRS_STATUS_SYMBOL_NOT_FOUND", ds.SymbolNotFoundError, AttributeError),
    506: ("DSRS_STATUS_LOCK_TIMEOUT", ds.LockTimeoutError, TimeoutError),
}


@pytest.mark.parametrize("code", sorted(NEW_STATUSES))
def test_op_statuses_have_their_own_classes(code):
    import pickle

    name, cls, builtin = NEW_STATUSES[code]
    assert errors.STATUS_NAMES[code] == name == ds.status_name(code)
    assert getattr(errors, name) == code
    assert errors.error_class(code) is cls and cls.STATUS == code
    e = cls("some message", code)
    assert isinstance(e, ds.DsrsError) and isinstance(e, builtin)
    assert e.status_name == name and "some message" in str(e) and name in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is cls and again.status == code and again.message == "some message"
