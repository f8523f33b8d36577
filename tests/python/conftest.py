"""Fixtures of the Python binding's tests.

The library under test is the one the binding finds (scripts/test-python.sh sets
DSRS_LIBRARY). Random inputs come from numpy's default_rng with a fixed seed, printed in
the test header; set DSRS_TEST_SEED to reproduce or vary a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, Optional

import numpy as np
import pytest

import deepspeed_rs as ds

SEED = int(os.environ.get("DSRS_TEST_SEED", "20251121"))


def pytest_report_header(config):
    return [
        f"deepspeed_rs library: {ds.library_path()} (version {ds.version()}, ABI {ds.abi_version()})",
        f"random seed: DSRS_TEST_SEED={SEED}",
    ]


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from SEED and the test's name (stable per test, independent of
    the order tests run in)."""
    name = request.node.nodeid.encode()
    return np.random.default_rng([SEED, int.from_bytes(name[-16:], "little") % (1 << 63)])


@pytest.fixture(scope="module")
def private_op_cache(request, tmp_path_factory):
    """DSRS_CACHE_DIR set to a new directory for the whole module, so that the ops it
    JIT-builds go to a cache private to it. A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("private_op_cache")``."""
    name = request.module.__name__.rpartition(".")[2]
    name = name[len("test_"):] if name.startswith("test_") else name
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSRS_CACHE_DIR", str(tmp_path_factory.mktemp(f"{name}-cache")))
        yield


@pytest.fixture
def cpu():
    """A fresh CPU accelerator (its own memory statistics and generator), 2 devices."""
    with ds.Accelerator("cpu", devices=2) as a:
        yield a


@pytest.fixture
def restore_logging():
    """Restores the log sink and level after a test that changes them."""
    level = ds.get_log_level()
    yield
    ds.set_log_callback(None)
    ds.set_log_level(level)


def _run_python(code: str, env: Optional[Dict[str, str]] = None, unset=()) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    for k in unset:
        e.pop(k, None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def run_python():
    """run_python(code, env=None, unset=()) runs `code` in a fresh interpreter, so that
    process-wide state (the current accelerator, the log sink) stays untouched here."""
    return _run_python
