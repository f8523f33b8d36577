#!/usr/bin/env python3
"""One GPU Adam(W) step: deepspeed_rs's fused Adam (`dsrs_adam_step`, C ABI) against
torch.optim.AdamW(fused=True), with the device's copy bandwidth as the anchor.

  ours    dsrs_adam_step from libdeepspeed_rs.so through ctypes: kDLCUDA DLTensors built from
          torch tensors' data_ptr(), on torch's current stream wrapped with dsrs_stream_wrap,
          backend KERNEL (the fused_adam op's multi-tensor kernels, JIT-built with NVRTC;
          never the Rust reference). Asynchronous, like torch.
  torch   torch.optim.AdamW(fused=True). Its states take the parameters' dtype, so with bf16
          parameters it keeps bf16 moments (ours keeps fp32 moments).

Both: AdamW, lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01, bias correction; the
gradients have the parameters' dtype.

Cases (each for every --dtypes entry): one flat parameter of N elements for N in --sizes
(default 1e8 and 1e9), and the --multi cases (default 1e8 elements split into 256 tensors of
log-uniformly varied sizes, each its own allocation) for the multi-tensor apply.

Method: per case both implementations' tensors are allocated (when they fit together;
otherwise one at a time, and the row says "sequential"), each is warmed up (--warmup steps,
then K is chosen so that K steps take about --target-ms), then R rounds (--rounds, default 7),
each timing K consecutive steps of every implementation and one block of --copy-reps
device-to-device copies, in an order that rotates between rounds; CUDA events on the stream
around each block. A figure is the median over rounds of the per-step time (min..max beside
it). Achieved bandwidth counts the fewest bytes a step must move, each array read once and
written once:

  fp32 params, fp32 grads, fp32 states (both)           28 B/param  (read p g m v, write p m v)
  bf16 params, bf16 grads, fp32 states (ours)           22 B/param  (p 2+2, g 2, m 4+4, v 4+4)
  bf16 params, bf16 grads, bf16 states (torch)          14 B/param

The copy anchor is `dst.copy_(src)` of two --copy-gib GiB buffers (bytes read + written,
i.e. 2 x the buffer), run inside every round so it sees the same clocks; "%copy" divides a
row's GB/s by its case's median copy GB/s (an H100's is about 3.0 TB/s). Target (issue):
ours >= 85 % of the copy bandwidth (PASS/MISS on our rows). "vs torch" is torch's time over
ours (> 1: ours is faster).

Correctness (before the timings): at --check-n (1e6) elements, flat and split into
--check-tensors tensors (views into one buffer at odd offsets, so misaligned, plus a few
tiny ones), 3 steps (--check-steps) with fresh gradients from an identical random state
(m, v not zero):
  * ours on the GPU vs ours on the CPU (the same steps through dsrs_adam_step on host copies:
    the cpu_adam op, or the Rust reference if no C++ compiler is there): bit-identical,
    PASS/FAIL (the kernels are designed to give the same bits);
  * max |ours - torch| of p, m, v;
  * ours and torch against a float64 reference computed by torch on the GPU (with the
    float32-rounded hyper-parameters ours receives): ||p - ref|| / ||ref - p0|| (error relative
    to the update), ||m - ref|| / ||ref|| and the same for v; for bf16 parameters the
    reference is also rounded to bf16 after every step and p is compared in bf16 ulps.
  Sanity thresholds (ours): fp32 p < 1e-2 of the update; m, v < 1e-5; bf16 p <= 2 ulp.

Run it with a python that has torch with CUDA (the device machine's python3):
  python3 benches/gpu_adam_peers.py --lib .gpu/libdeepspeed_rs.so --json $OUT/gpu_adam_peers.json
benches/gpu_adam_peers.sh builds and stages the library and prints the device call.

NVRTC: the kernels are compiled at run time by NVRTC (libnvrtc.so). Unless --nvrtc or
DSRS_NVRTC_LIB names one, the script looks for libnvrtc.so.N under /usr/local/cuda*/ and in
the nvidia wheels next to torch (nvidia/cuda_nvrtc/lib, nvidia/cu*/lib), sets DSRS_NVRTC_LIB
to it (the library loads that file itself, any version suffix). --use-nvcc compiles with
the toolkit's nvcc instead (DSRS_USE_NVCC=1).

Exit status: 0 ran (whatever the speed numbers); 1 an error (library not loadable, a step
failed, a CUDA error); 2 cannot run here (no torch, no CUDA GPU visible to torch, the
library's cuda accelerator unavailable, NVRTC/kernel build unavailable); 3 a correctness
check failed (bits differ from the CPU kernel, non-finite values, or a sanity threshold).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import math
import os
import platform
import random
import re
import statistics
import struct
import subprocess
import sys
import time
import traceback
from ctypes import (POINTER, Structure, byref, c_bool, c_char, c_char_p, c_float, c_int32, c_int64, c_size_t,
                    c_uint8, c_uint16, c_uint32, c_uint64, c_void_p)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIB = os.path.join(ROOT, "target", "release", "libdeepspeed_rs.so")

EXIT_OK, EXIT_ERROR, EXIT_NO_GPU, EXIT_CHECK_FAILED = 0, 1, 2, 3

LR, BETA1, BETA2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 0.01
TARGET_COPY_FRACTION = 0.85
BACKENDS = {"auto": 0, "kernel": 1, "reference": 2}
STATUS_UNAVAILABLE, STATUS_BUILD_FAILED, STATUS_OP_INCOMPATIBLE = 401, 500, 501
IMPLS = ["ours", "torch"]

kDLCPU, kDLCUDA = 1, 2
kDLFloat, kDLBfloat = 2, 4


def log(msg=""):
    print(msg, flush=True)


def parse_n(text, what):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not a number") from None
    if not (v >= 1 and v == int(v)):
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not a positive integer")
    return int(v)


def fmt_n(n):
    """1e8 for 100000000, 5e7 for 50000000, else the integer."""
    k = 0
    while n % 10 ** (k + 1) == 0:
        k += 1
    return f"{n // 10 ** k}e{k}" if k >= 3 else str(n)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, so that 2 means only "cannot run here"."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    ap = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.environ.get("DSRS_LIBRARY") or DEFAULT_LIB,
                    help="libdeepspeed_rs.so to load (default $DSRS_LIBRARY, else target/release/libdeepspeed_rs.so)")
    ap.add_argument("--nvrtc", default=os.environ.get("DSRS_NVRTC_LIB") or None,
                    help="libnvrtc.so.N for the CUDA JIT (default $DSRS_NVRTC_LIB, else searched: /usr/local/cuda*, "
                         "torch's nvidia wheels)")
    ap.add_argument("--use-nvcc", action="store_true",
                    help="build the CUDA kernels with the toolkit's nvcc instead of NVRTC (sets DSRS_USE_NVCC=1)")
    ap.add_argument("--sizes", default=None, help="flat parameter sizes, comma list (default 1e8,1e9; --quick: 1e7)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="parameter dtypes from fp32,bf16 (default both)")
    ap.add_argument("--multi", default=None,
                    help="multi-tensor cases N:COUNT, comma list, 'none' for none (default 1e8:256; --quick: 1e7:64)")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma list from ours,torch (default both)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds R (default 7; --quick: 3)")
    ap.add_argument("--target-ms", type=float, default=None,
                    help="milliseconds per timed block of K steps (default 200; --quick: 50)")
    ap.add_argument("--steps", type=int, default=0, help="K steps per timed block (default 0: from --target-ms)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps per implementation (default 5)")
    ap.add_argument("--copy-gib", type=float, default=None,
                    help="size of each of the two copy buffers in GiB (default 4: 8.6 GB moved per copy; --quick: 1)")
    ap.add_argument("--copy-reps", type=int, default=5, help="copies per timed copy block (default 5)")
    ap.add_argument("--check-n", default="1e6", help="elements of the correctness check (default 1e6)")
    ap.add_argument("--check-steps", type=int, default=3, help="steps of the correctness check (default 3)")
    ap.add_argument("--check-tensors", type=int, default=37,
                    help="tensors of the check's multi-tensor layout (default 37)")
    ap.add_argument("--cpu-backend", default="kernel", choices=sorted(BACKENDS),
                    help="backend of the CPU side of the bit-identity check (default kernel: the cpu_adam op; "
                         "falls back to the Rust reference, saying so, when the op cannot be built)")
    ap.add_argument("--skip-check", action="store_true", help="skip the correctness check")
    ap.add_argument("--skip-bench", action="store_true", help="skip the timings (correctness check only)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    ap.add_argument("--stream", choices=["side", "default"], default="side",
                    help="side (default): run everything on a new torch.cuda.Stream made current; default: torch's "
                         "default stream (wrapped as NULL)")
    ap.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: sizes 1e7, multi 1e7:64, 3 rounds, 50 ms blocks, 1 GiB copy buffers")
    ap.add_argument("--json", default=None, help="also write all results as JSON to this path")
    a = ap.parse_args(argv)
    if a.sizes is None:
        a.sizes = "1e7" if a.quick else "1e8,1e9"
    if a.multi is None:
        a.multi = "1e7:64" if a.quick else "1e8:256"
    if a.rounds is None:
        a.rounds = 3 if a.quick else 7
    if a.target_ms is None:
        a.target_ms = 50.0 if a.quick else 200.0
    if a.copy_gib is None:
        a.copy_gib = 1.0 if a.quick else 4.0
    try:
        a.size_list = [parse_n(x.strip(), "--sizes") for x in a.sizes.split(",") if x.strip()]
        a.multi_list = []
        if a.multi.strip().lower() not in ("", "none"):
            for item in a.multi.split(","):
                if not item.strip():
                    continue
                if ":" not in item:
                    ap.error(f"--multi: {item!r} is not N:COUNT")
                n, c = item.split(":", 1)
                a.multi_list.append((parse_n(n.strip(), "--multi"), parse_n(c.strip(), "--multi")))
        a.check_n_int = parse_n(a.check_n, "--check-n")
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    for n, c in a.multi_list:
        if c > n:
            ap.error(f"--multi: {n}:{c} has more tensors than elements")
    a.dtype_list = [x.strip() for x in a.dtypes.split(",") if x.strip()]
    for d in a.dtype_list:
        if d not in ("fp32", "bf16"):
            ap.error(f"--dtypes: unknown dtype {d!r} (fp32, bf16)")
    a.impl_list = [x.strip() for x in a.impls.split(",") if x.strip()]
    for i in a.impl_list:
        if i not in IMPLS:
            ap.error(f"--impls: unknown implementation {i!r} (ours, torch)")
    if a.rounds < 1 or a.warmup < 0 or a.copy_reps < 1 or a.check_steps < 1 or a.copy_gib <= 0:
        ap.error("--rounds, --copy-reps, --check-steps must be >= 1, --warmup >= 0, --copy-gib > 0")
    if a.check_tensors < 1 or a.check_tensors > a.check_n_int:
        ap.error("--check-tensors must be in [1, --check-n]")
    return a


# ---------------------------------------------------------------------------
# NVRTC: find it, and make the library's loader find it (see the module docstring).
# ---------------------------------------------------------------------------

_NVRTC_NAME = re.compile(r"^libnvrtc\.so\.\d+(\.\d+)*$")  # not libnvrtc-builtins, not libnvrtc.alt


def nvrtc_candidates():
    """libnvrtc.so.N files: the CUDA toolkit's first, then the nvidia wheels on sys.path."""
    dirs = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            dirs += [os.path.join(os.environ[var], "lib64"), os.path.join(os.environ[var], "lib")]
    dirs += ["/usr/local/cuda/lib64"] + sorted(glob.glob("/usr/local/cuda*/lib64"), reverse=True)
    dirs += sorted(glob.glob("/usr/local/cuda*/targets/*/lib"), reverse=True)
    site_dirs = [p for p in sys.path if p and os.path.isdir(p)]
    try:
        import site
        site_dirs += site.getsitepackages() + [site.getusersitepackages()]
    except Exception:  # noqa: BLE001
        pass
    for sp in site_dirs:
        dirs += [os.path.join(sp, "nvidia", "cuda_nvrtc", "lib")] + sorted(
            glob.glob(os.path.join(sp, "nvidia", "cu*", "lib")), reverse=True)
    out, seen = [], set()
    for d in dirs:
        for f in sorted(glob.glob(os.path.join(d, "libnvrtc.so*")), reverse=True):
            if not _NVRTC_NAME.match(os.path.basename(f)):
                continue
            real = os.path.realpath(f)
            if os.path.isfile(real) and real not in seen:
                seen.add(real)
                out.append(real)
    return out


def setup_nvrtc(args):
    """Sets DSRS_NVRTC_LIB to the NVRTC to use (--nvrtc, else the first one found: CUDA
    toolkit or an nvidia wheel); the library loads that file itself, whatever its version
    suffix. Returns a dict describing what was chosen."""
    if args.use_nvcc:
        os.environ["DSRS_USE_NVCC"] = "1"
    if args.nvrtc:
        chosen = os.path.realpath(args.nvrtc)
        if not os.path.isfile(chosen):
            log(f"gpu_adam_peers: --nvrtc / DSRS_NVRTC_LIB {args.nvrtc!r} is not a file")
            sys.exit(EXIT_ERROR)
        found = [chosen]
    else:
        found = nvrtc_candidates()
        chosen = found[0] if found else None
    info = {"nvrtc": chosen, "candidates": found}
    if chosen is not None:
        os.environ["DSRS_NVRTC_LIB"] = chosen
    return info


def mapped_nvrtc():
    """The libnvrtc files mapped into this process (what was really loaded)."""
    out = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libnvrtc" in line:
                    out.add(line.split()[-1])
    except OSError:
        pass
    return sorted(out)


# ---------------------------------------------------------------------------
# The C ABI through ctypes (include/deepspeed_rs.h; DLPack 1.1).
# ---------------------------------------------------------------------------

class DLDevice(Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class DLTensor(Structure):
    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int32), ("dtype", DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class AdamConfig(Structure):  # dsrs_adam_config (56 bytes)
    _fields_ = [("lr", c_float), ("beta1", c_float), ("beta2", c_float), ("eps", c_float),
                ("weight_decay", c_float), ("adamw_mode", c_int32), ("bias_correction", c_int32),
                ("step", c_int64), ("grad_scale", c_float), ("num_threads", c_int32), ("backend", c_int32)]


class OptimTensors(Structure):  # dsrs_optim_tensors (40 bytes)
    _fields_ = [("params", POINTER(DLTensor)), ("grads", POINTER(DLTensor)), ("exp_avg", POINTER(DLTensor)),
                ("exp_avg_sq", POINTER(DLTensor)), ("param_copy", POINTER(DLTensor))]


assert ctypes.sizeof(DLTensor) == 48 and ctypes.sizeof(AdamConfig) == 56 and ctypes.sizeof(OptimTensors) == 40
assert AdamConfig.step.offset == 32


class DsrsError(RuntimeError):
    def __init__(self, status, what, message):
        super().__init__(f"{what}: status {status}: {message}")
        self.status, self.what, self.message = status, what, message


_STR_OUT = [POINTER(c_char), c_size_t, POINTER(c_size_t)]


class Lib:
    def __init__(self, path):
        self.path = path
        h = self.h = ctypes.CDLL(path)
        decl = {
            "dsrs_version": (c_char_p, []),
            "dsrs_abi_version": (c_uint32, []),
            "dsrs_status_str": (c_char_p, [c_int32]),
            "dsrs_last_error_message": (c_int32, _STR_OUT),
            "dsrs_accelerator_new": (c_int32, [c_char_p, c_char_p, POINTER(c_void_p)]),
            "dsrs_accelerator_free": (c_int32, [c_void_p]),
            "dsrs_accelerator_is_available": (c_int32, [c_void_p, POINTER(c_bool)]),
            "dsrs_accelerator_device_count": (c_int32, [c_void_p, POINTER(c_uint32)]),
            "dsrs_accelerator_set_device": (c_int32, [c_void_p, c_int32]),
            "dsrs_accelerator_device_properties_json": (c_int32, [c_void_p, c_int32] + _STR_OUT),
            "dsrs_stream_wrap": (c_int32, [c_void_p, c_void_p, POINTER(c_void_p)]),
            "dsrs_stream_free": (c_int32, [c_void_p]),
            "dsrs_adam_step": (c_int32, [POINTER(AdamConfig), POINTER(OptimTensors), c_size_t, c_void_p]),
        }
        for name, (res, argt) in decl.items():
            fn = getattr(h, name)
            fn.restype, fn.argtypes = res, argt

    def version(self):
        return self.h.dsrs_version().decode()

    def last_error(self):
        need = c_size_t(0)
        self.h.dsrs_last_error_message(None, 0, byref(need))
        n = max(int(need.value), 1) + 64
        buf = ctypes.create_string_buffer(n)
        self.h.dsrs_last_error_message(buf, n, byref(need))
        return buf.value.decode("utf-8", "replace")

    def check(self, rc, what):
        if rc != 0:
            name = self.h.dsrs_status_str(rc)
            raise DsrsError(rc, what, f"{name.decode() if name else '?'}: {self.last_error()}")

    def string(self, fn, *args):
        need = c_size_t(0)
        rc = fn(*args, None, 0, byref(need))
        if rc not in (0, 104):
            self.check(rc, fn.__name__)
        buf = ctypes.create_string_buffer(int(need.value) + 1)
        self.check(fn(*args, buf, len(buf), byref(need)), fn.__name__)
        return buf.value.decode("utf-8", "replace")


def dl_dtype(torch, dt):
    if dt == torch.float32:
        return DLDataType(kDLFloat, 32, 1)
    if dt == torch.bfloat16:
        return DLDataType(kDLBfloat, 16, 1)
    raise ValueError(f"unsupported dtype {dt}")


def dl_tensor(torch, t, keep):
    """A DLTensor describing the contiguous 1-D torch tensor t, where it lives."""
    assert t.dim() == 1 and t.is_contiguous(), "1-D contiguous tensors only"
    if t.device.type == "cuda":
        dev = DLDevice(kDLCUDA, t.device.index if t.device.index is not None else torch.cuda.current_device())
    elif t.device.type == "cpu":
        dev = DLDevice(kDLCPU, 0)
    else:
        raise ValueError(f"tensor on {t.device}")
    shape = (c_int64 * 1)(t.numel())
    d = DLTensor()
    d.data = t.data_ptr()
    d.device = dev
    d.ndim = 1
    d.dtype = dl_dtype(torch, t.dtype)
    d.shape = shape
    d.strides = None
    d.byte_offset = 0
    keep.extend([shape, d, t])
    return d


class OursAdam:
    """dsrs_adam_step over lists of (p, g, m, v) torch tensors, all on one device (CUDA: on
    `stream`, a dsrs_stream handle; CPU: stream NULL, the cpu_adam op or the reference)."""

    name = "ours"

    def __init__(self, torch, lib, ps, gs, ms, vs, stream, backend):
        self.lib, self.stream = lib, stream
        self._keep = []
        self.count = len(ps)
        self.entries = (OptimTensors * self.count)()
        for i, (p, g, m, v) in enumerate(zip(ps, gs, ms, vs)):
            e = self.entries[i]
            e.params = ctypes.pointer(dl_tensor(torch, p, self._keep))
            e.grads = ctypes.pointer(dl_tensor(torch, g, self._keep))
            e.exp_avg = ctypes.pointer(dl_tensor(torch, m, self._keep))
            e.exp_avg_sq = ctypes.pointer(dl_tensor(torch, v, self._keep))
            e.param_copy = None
        self.cfg = AdamConfig(lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS, weight_decay=WD, adamw_mode=1,
                              bias_correction=1, step=0, grad_scale=1.0, num_threads=0, backend=backend)
        self._fn, self._cfg_ref = lib.h.dsrs_adam_step, byref(self.cfg)
        self.tensors = (ps, gs, ms, vs)

    def step(self):
        self.cfg.step += 1
        rc = self._fn(self._cfg_ref, self.entries, self.count, self.stream)
        if rc != 0:
            self.cfg.step -= 1
            self.lib.check(rc, f"dsrs_adam_step (step {self.cfg.step + 1}, {self.count} tensors)")


class TorchAdam:
    """torch.optim.AdamW(fused=True) over lists of (p, g) tensors; optional initial states
    (tensors of the parameters' dtype), else torch's lazy zeros."""

    name = "torch"

    def __init__(self, torch, ps, gs, ms=None, vs=None):
        self.params = []
        for p, g in zip(ps, gs):
            q = torch.nn.Parameter(p)  # shares p's storage
            q.grad = g
            self.params.append(q)
        self.opt = torch.optim.AdamW(self.params, lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WD,
                                     fused=True)
        if ms is not None:
            for q, m, v in zip(self.params, ms, vs):
                self.opt.state[q] = {"step": torch.zeros((), dtype=torch.float32, device=q.device),
                                     "exp_avg": m, "exp_avg_sq": v}
        self.step = self.opt.step

    def states(self):
        return ([self.opt.state[q]["exp_avg"] for q in self.params],
                [self.opt.state[q]["exp_avg_sq"] for q in self.params])


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------

def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def varied_sizes(total, count, seed, tiny=()):
    """`count` sizes summing to `total`, log-uniform over three decades, most not multiples of
    4; `tiny` sizes first (when they fit)."""
    rng = random.Random(seed)
    tiny = [t for t in tiny][: max(0, count - 1)]
    if sum(tiny) >= total:
        tiny = []
    rest_n, rest_total = count - len(tiny), total - sum(tiny)
    w = [math.exp(rng.uniform(0.0, math.log(1000.0))) for _ in range(rest_n)]
    s = sum(w)
    sizes = [max(1, int(rest_total * x / s) - rng.randint(0, 3)) for x in w]
    big = max(range(rest_n), key=lambda i: sizes[i])
    sizes[big] += rest_total - sum(sizes)
    if sizes[big] < 1:
        raise ValueError(f"cannot split {total} into {count} tensors")
    out = tiny + sizes
    assert sum(out) == total and len(out) == count and min(out) >= 1
    return out


def views(buf, sizes):
    out, off = [], 0
    for s in sizes:
        out.append(buf.narrow(0, off, s))
        off += s
    return out


def tdtype(torch, name):
    return torch.float32 if name == "fp32" else torch.bfloat16


def bytes_per_param(dtype, impl):
    p = 4 if dtype == "fp32" else 2
    s = 4 if (impl == "ours" or dtype == "fp32") else 2  # torch's states take the params' dtype
    return 2 * p + p + 4 * s


def mem_per_param(dtype, impl):
    p = 4 if dtype == "fp32" else 2
    s = 4 if (impl == "ours" or dtype == "fp32") else 2
    return 2 * p + 2 * s  # p, g, m, v resident


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def time_block(torch, fn, k):
    """Milliseconds per call of k consecutive calls (CUDA events on the current stream), and the
    host's milliseconds per call to submit them."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    t1 = time.perf_counter()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / k, (t1 - t0) * 1e3 / k


def nvidia_smi():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,"
                            "clocks.max.sm,temperature.gpu,power.draw,power.limit,persistence_mode",
                            "--format=csv"], capture_output=True, text=True, timeout=20)
        return r.stdout.strip() or r.stderr.strip()
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------
# Setup.
# ---------------------------------------------------------------------------

class Ctx:
    pass


def no_gpu_exit(msg, out=None, args=None):
    log(f"gpu_adam_peers: cannot run here: {msg}")
    if out is not None and args is not None and args.json:
        out["fatal"] = msg
        write_json(args.json, out)
    sys.exit(EXIT_NO_GPU)


def write_json(path, out):
    try:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1, default=str)
        log(f"JSON written to {path}")
    except OSError as e:
        log(f"gpu_adam_peers: could not write {path}: {e}")


def setup(args, nvrtc_info, out):
    try:
        import torch
    except ImportError as e:
        no_gpu_exit(f"torch is not importable with {sys.executable} ({e}); run with a python that has "
                    "torch built for CUDA (the device machine's python3)", out=out, args=args)
    out["env"] = {
        "python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "host": platform.node(), "machine": platform.machine(),
        "nvrtc_setup": nvrtc_info, "DSRS_USE_NVCC": os.environ.get("DSRS_USE_NVCC"),
        "lib": os.path.abspath(args.lib),
    }
    lib, lib_err = None, None
    try:
        lib = Lib(args.lib)
        out["env"]["dsrs_version"] = lib.version()
        out["env"]["dsrs_abi_version"] = int(lib.h.dsrs_abi_version())
    except (OSError, AttributeError) as e:
        lib_err = f"{args.lib}: {e}"

    if not torch.cuda.is_available():
        msg = (f"no CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA "
               f"{torch.version.cuda}, device_count {torch.cuda.device_count()})")
        if lib is not None:
            accel = c_void_p()
            rc = lib.h.dsrs_accelerator_new(b"cuda", None, byref(accel))
            if rc != 0:
                msg += f"; the library's cuda accelerator: {lib.last_error()}"
            else:
                lib.h.dsrs_accelerator_free(accel)
                msg += "; the library's cuda accelerator was created nonetheless"
        elif lib_err:
            msg += f"; the library did not load either ({lib_err})"
        no_gpu_exit(msg, out=out, args=args)
    if lib is None:
        log(f"gpu_adam_peers: the library could not be loaded: {lib_err}\n"
            "  build it (cargo build --release --lib) or stage it (benches/gpu_adam_peers.sh) and pass --lib")
        sys.exit(EXIT_ERROR)

    dev = args.device
    if dev >= torch.cuda.device_count():
        log(f"gpu_adam_peers: --device {dev}, but torch sees {torch.cuda.device_count()} device(s)")
        sys.exit(EXIT_ERROR)
    torch.cuda.set_device(dev)
    props = torch.cuda.get_device_properties(dev)
    out["env"].update({
        "device_index": dev, "device_name": props.name, "cc": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count, "total_memory_gib": props.total_memory / 2 ** 30,
        "l2_bytes": getattr(props, "L2_cache_size", None), "nvidia_smi": nvidia_smi(),
    })

    accel = c_void_p()
    rc = lib.h.dsrs_accelerator_new(b"cuda", None, byref(accel))
    if rc != 0:
        no_gpu_exit(f"torch sees {props.name}, but the library's cuda accelerator is unavailable: "
                    f"status {rc}: {lib.last_error()}", out=out, args=args)
    avail = c_bool(False)
    lib.check(lib.h.dsrs_accelerator_is_available(accel, byref(avail)), "dsrs_accelerator_is_available")
    count = c_uint32(0)
    lib.check(lib.h.dsrs_accelerator_device_count(accel, byref(count)), "dsrs_accelerator_device_count")
    if not avail.value or count.value <= dev:
        no_gpu_exit(f"the library's cuda accelerator reports available={avail.value}, {count.value} device(s) "
                    f"(need device {dev}): {lib.last_error()}", out=out, args=args)
    lib.check(lib.h.dsrs_accelerator_set_device(accel, dev), "dsrs_accelerator_set_device")
    try:
        out["env"]["dsrs_device_properties"] = json.loads(
            lib.string(lib.h.dsrs_accelerator_device_properties_json, accel, dev))
    except Exception as e:  # noqa: BLE001
        out["env"]["dsrs_device_properties"] = f"unavailable: {e}"

    side = None
    if args.stream == "side":
        side = torch.cuda.Stream(device=dev)
        torch.cuda.set_stream(side)
    cur = torch.cuda.current_stream(dev)
    native = int(cur.cuda_stream)
    stream = c_void_p()
    lib.check(lib.h.dsrs_stream_wrap(accel, c_void_p(native) if native else None, byref(stream)),
              "dsrs_stream_wrap")
    out["env"]["stream"] = {"mode": args.stream, "cuda_stream": hex(native)}

    ctx = Ctx()
    ctx.torch, ctx.lib, ctx.accel, ctx.stream, ctx.side = torch, lib, accel, stream.value, side
    ctx.dev, ctx.device, ctx.args = dev, torch.device("cuda", dev), args
    return ctx


def teardown(ctx):
    try:
        ctx.torch.cuda.synchronize()
    except Exception:  # noqa: BLE001
        pass
    if ctx.stream:
        ctx.lib.h.dsrs_stream_free(ctx.stream)
        ctx.stream = None
    if ctx.accel:
        ctx.lib.h.dsrs_accelerator_free(ctx.accel)
        ctx.accel = None


def probe(ctx, out):
    """A first tiny step on the GPU: loads (JIT-builds) the fused_adam op; a failure here says
    why our side cannot run at all."""
    torch = ctx.torch
    n = 4099
    g = torch.Generator(device=ctx.device).manual_seed(7)
    p = torch.randn(n, generator=g, device=ctx.device)
    gr = torch.randn(n, generator=g, device=ctx.device)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    ours = OursAdam(torch, ctx.lib, [p], [gr], [m], [v], ctx.stream, BACKENDS["kernel"])
    t0 = time.perf_counter()
    ours.step()
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    ours.step()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    res = {"first_call_ms": (t1 - t0) * 1e3, "second_call_ms": (t2 - t1) * 1e3,
           "finite": bool(torch.isfinite(p).all().item()), "mapped_nvrtc": mapped_nvrtc()}
    out["probe"] = res
    log(f"probe: first step (fused_adam JIT build or cache load) {res['first_call_ms']:.0f} ms, "
        f"second {res['second_call_ms']:.2f} ms; NVRTC mapped: {', '.join(res['mapped_nvrtc']) or 'none'}")


# ---------------------------------------------------------------------------
# Correctness.
# ---------------------------------------------------------------------------

def ref64(torch, p0, m0, v0, gs, round_bf16):
    """Float64 AdamW with the float32-rounded hyper-parameters ours receives."""
    lr, b1, b2, eps, wd = f32(LR), f32(BETA1), f32(BETA2), f32(EPS), f32(WD)
    p, m, v = p0.double(), m0.double(), v0.double()
    for t, g in enumerate(gs, 1):
        g = g.double()
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        bc1 = 1.0 - b1 ** t
        bc2 = math.sqrt(1.0 - b2 ** t)
        denom = v.sqrt() / bc2 + eps
        p = p * (1.0 - lr * wd) - (lr / bc1) * (m / denom)
        if round_bf16:
            p = p.to(torch.bfloat16).double()
    return p, m, v


def maxabs(a, b):
    return float((a.double() - b.double()).abs().max().item())


def relnorm(a, ref, base=None):
    d = float((a.double() - ref.double()).norm().item())
    r = ref.double() if base is None else ref.double() - base.double()
    den = float(r.norm().item())
    return d / den if den > 0 else (0.0 if d == 0 else float("inf"))


def bits_mismatch(a, b):
    """How many elements of a and b (same dtype and length) differ in their bits."""
    import torch
    it = {4: torch.int32, 2: torch.int16}[a.element_size()]
    return int((a.contiguous().view(it) != b.contiguous().view(it)).sum().item())


def bf16_ulps(a, ref):
    """|a - ref| in units of the bf16 ulp at max(|a|, |ref|) (a, ref: bf16 values)."""
    import torch
    mx = torch.maximum(a.double().abs(), ref.double().abs()).float()
    _, e = torch.frexp(mx)
    ulp = torch.pow(2.0, (e.double() - 8.0))
    return (a.double() - ref.double()).abs() / ulp


def correctness(ctx, out):
    torch, args = ctx.torch, ctx.args
    n, steps = args.check_n_int, args.check_steps
    results = []
    cpu_backend = BACKENDS[args.cpu_backend]
    cpu_note = None
    for dtype in args.dtype_list:
        pdt = tdtype(torch, dtype)
        gen = torch.Generator(device=ctx.device).manual_seed(args.seed + 11)
        p0 = torch.randn(n, generator=gen, device=ctx.device).to(pdt)
        a = torch.randn(n, generator=gen, device=ctx.device)
        b = torch.randn(n, generator=gen, device=ctx.device)
        m0 = 0.1 * a
        v0 = 0.01 * (a * a + b * b)  # v >= m^2, as for a real history
        gs = [torch.randn(n, generator=gen, device=ctx.device).to(pdt) for _ in range(steps)]
        r64 = ref64(torch, p0, m0, v0, gs, round_bf16=False)
        r64b = ref64(torch, p0, m0, v0, gs, round_bf16=True) if dtype == "bf16" else None
        layouts = [("flat", [n]),
                   (f"{args.check_tensors} tensors",
                    varied_sizes(n, args.check_tensors, args.seed + 5, tiny=(1, 3, 5, 17, 1023)))]
        for lname, sizes in layouts:
            r = {"dtype": dtype, "layout": lname, "n": n, "steps": steps, "sizes": sizes if len(sizes) <= 64 else None}
            try:
                # ours on the GPU: views into flat buffers (misaligned for the multi layout).
                P, M, V = p0.clone(), m0.clone(), v0.clone()
                G = torch.empty_like(p0)
                ours = OursAdam(torch, ctx.lib, views(P, sizes), views(G, sizes), views(M, sizes), views(V, sizes),
                                ctx.stream, BACKENDS["kernel"])
                for g in gs:
                    G.copy_(g)
                    ours.step()
                torch.cuda.synchronize()
                # ours on the CPU from host copies.
                Pc, Mc, Vc = p0.cpu().clone(), m0.cpu().clone(), v0.cpu().clone()
                Gc = torch.empty_like(Pc)
                gs_cpu = [g.cpu() for g in gs]

                def run_cpu(backend):
                    ours_cpu = OursAdam(torch, ctx.lib, views(Pc, sizes), views(Gc, sizes), views(Mc, sizes),
                                        views(Vc, sizes), None, backend)
                    for g in gs_cpu:
                        Gc.copy_(g)
                        ours_cpu.step()

                try:
                    run_cpu(cpu_backend)
                    used = args.cpu_backend
                except DsrsError as e:
                    if cpu_backend != BACKENDS["kernel"] or e.status not in (STATUS_BUILD_FAILED,
                                                                             STATUS_OP_INCOMPATIBLE,
                                                                             STATUS_UNAVAILABLE):
                        raise
                    cpu_note = f"the cpu_adam op could not be built ({e}); the CPU side ran the Rust reference"
                    Pc.copy_(p0.cpu())
                    Mc.copy_(m0.cpu())
                    Vc.copy_(v0.cpu())
                    cpu_backend = BACKENDS["reference"]
                    run_cpu(cpu_backend)
                    used = "reference"
                r["cpu_backend"] = used
                mism = {k: bits_mismatch(x, y.to(ctx.device)) for k, x, y in (("p", P, Pc), ("m", M, Mc),
                                                                             ("v", V, Vc))}
                r["cpu_bit_mismatches"] = mism
                r["cpu_max_abs"] = {k: maxabs(x, y.to(ctx.device)) for k, x, y in (("p", P, Pc), ("m", M, Mc),
                                                                                    ("v", V, Vc))}
                r["cpu_bitexact"] = all(v == 0 for v in mism.values())
                r["finite"] = bool(torch.isfinite(P).all().item() and torch.isfinite(M).all().item()
                                   and torch.isfinite(V).all().item())
                rp, rm, rv = r64
                r["ours_vs_f64"] = {"p_max_abs": maxabs(P, rp), "p_rel_update": relnorm(P, rp, p0),
                                    "m_rel": relnorm(M, rm), "v_rel": relnorm(V, rv)}
                if r64b is not None:
                    ul = bf16_ulps(P, r64b[0])
                    r["ours_vs_f64_bf16rounded"] = {"p_max_ulp": float(ul.max().item()),
                                                    "p_elements_off": int((ul > 0).sum().item())}
                # torch: separate allocations per tensor, states preset to the same values.
                if "torch" in args.impl_list:
                    try:
                        tp = [x.clone() for x in views(p0, sizes)]
                        tg = [torch.empty_like(x) for x in tp]
                        tm = [x.clone().to(pdt) for x in views(m0, sizes)]
                        tv = [x.clone().to(pdt) for x in views(v0, sizes)]
                        ta = TorchAdam(torch, tp, tg, tm, tv)
                        for g in gs:
                            for dst, src in zip(tg, views(g, sizes)):
                                dst.copy_(src)
                            ta.step()
                        torch.cuda.synchronize()
                        TP = torch.cat([q.detach() for q in ta.params])
                        sm, sv = ta.states()
                        TM, TV = torch.cat(sm), torch.cat(sv)
                        r["ours_vs_torch_max_abs"] = {"p": maxabs(P, TP), "m": maxabs(M, TM), "v": maxabs(V, TV)}
                        r["torch_vs_f64"] = {"p_max_abs": maxabs(TP, rp), "p_rel_update": relnorm(TP, rp, p0),
                                             "m_rel": relnorm(TM, rm), "v_rel": relnorm(TV, rv)}
                        r["torch_state_dtype"] = str(TM.dtype).replace("torch.", "")
                    except Exception as e:  # noqa: BLE001
                        r["torch_error"] = f"{type(e).__name__}: {e}"
                # Sanity (ours): thresholds from the module docstring.
                o = r["ours_vs_f64"]
                ok = r["finite"] and o["m_rel"] < 1e-5 and o["v_rel"] < 1e-5
                if dtype == "fp32":
                    ok = ok and o["p_rel_update"] < 1e-2
                else:
                    ok = ok and r["ours_vs_f64_bf16rounded"]["p_max_ulp"] <= 2.0
                r["sanity_ok"] = bool(ok)
            except Exception as e:  # noqa: BLE001
                r["error"] = f"{type(e).__name__}: {e}"
                r["traceback"] = traceback.format_exc()
                log(f"check {dtype} {lname}: ERROR {r['error']}")
                if "CUDA error" in str(e) or "illegal" in str(e).lower():
                    results.append(r)
                    out["check"] = {"results": results, "cpu_note": cpu_note}
                    raise
            results.append(r)
    out["check"] = {"results": results, "cpu_note": cpu_note}
    return results


def print_check(check):
    log("")
    log(f"Correctness: {check['results'][0]['n'] if check['results'] else '?'} elements, "
        f"{check['results'][0]['steps'] if check['results'] else '?'} steps from identical random state "
        "(fresh gradients per step)")
    if check.get("cpu_note"):
        log(f"  note: {check['cpu_note']}")
    hdr = (f"  {'dtype':5} {'layout':11} {'ours==cpu bits':15} {'|ours-torch| p / m / v':32} "
           f"{'ours vs f64: p/upd  m  v':30} {'torch vs f64: p/upd  m  v':30} sanity")
    log(hdr)
    for r in check["results"]:
        if "error" in r:
            log(f"  {r['dtype']:5} {r['layout']:11} ERROR {r['error']}")
            continue
        bits = "PASS" if r["cpu_bitexact"] else "FAIL " + "/".join(f"{k}{v}" for k, v in r["cpu_bit_mismatches"].items())
        bits += f" ({r['cpu_backend'][:3]})"
        if "ours_vs_torch_max_abs" in r:
            d = r["ours_vs_torch_max_abs"]
            vt = f"{d['p']:.2e} / {d['m']:.2e} / {d['v']:.2e}"
            t = r["torch_vs_f64"]
            tf = f"{t['p_rel_update']:.1e} {t['m_rel']:.1e} {t['v_rel']:.1e}"
        else:
            vt = r.get("torch_error", "-")[:32]
            tf = "-"
        o = r["ours_vs_f64"]
        of = f"{o['p_rel_update']:.1e} {o['m_rel']:.1e} {o['v_rel']:.1e}"
        san = "ok" if r["sanity_ok"] else "SUSPECT"
        if "ours_vs_f64_bf16rounded" in r:
            b = r["ours_vs_f64_bf16rounded"]
            san += f" (p vs bf16-rounded f64: max {b['p_max_ulp']:.0f} ulp, {b['p_elements_off']} elements off)"
        if not r["finite"]:
            san += " NON-FINITE"
        log(f"  {r['dtype']:5} {r['layout']:11} {bits:15} {vt:32} {of:30} {tf:30} {san}")
    log("  'ours==cpu bits': ours on the GPU vs ours on the CPU (ker: cpu_adam op, ref: Rust reference); "
        "'p/upd' = ||p - ref|| / ||ref - p0||, m and v: ||x - ref|| / ||ref||")
    if any(r.get("dtype") == "bf16" for r in check["results"]):
        log("  bf16: 'p/upd' is against the unrounded float64 trajectory, so it is dominated by the bf16 rounding "
            "of p (~1 expected); the ulp figure compares with float64 rounded to bf16 after every step; torch's "
            "bf16 moments explain its m, v figures")


# ---------------------------------------------------------------------------
# Timings.
# ---------------------------------------------------------------------------

def make_impl(ctx, impl, dtype, sizes, seed):
    """Allocates one implementation's tensors (separate allocations per tensor) with the
    same random parameters and gradients for every implementation (same seed)."""
    torch = ctx.torch
    pdt = tdtype(torch, dtype)
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    ps, gs = [], []
    for s in sizes:
        p = torch.empty(s, dtype=pdt, device=ctx.device)
        p.normal_(generator=gen)
        g = torch.empty(s, dtype=pdt, device=ctx.device)
        g.normal_(generator=gen)
        ps.append(p)
        gs.append(g)
    if impl == "ours":
        ms = [torch.zeros(s, dtype=torch.float32, device=ctx.device) for s in sizes]
        vs = [torch.zeros(s, dtype=torch.float32, device=ctx.device) for s in sizes]
        return OursAdam(torch, ctx.lib, ps, gs, ms, vs, ctx.stream, BACKENDS["kernel"])
    return TorchAdam(torch, ps, gs)  # lazy zero states (the warm-up fills them)


class Copy:
    name = "copy"

    def __init__(self, torch, device, gib):
        n = int(gib * 2 ** 30) // 4
        self.src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
        self.dst = torch.empty_like(self.src)
        self.nbytes = 2 * n * 4  # read + written

    def step(self):
        self.dst.copy_(self.src)


def copy_anchor(ctx, copy, reps, blocks):
    ms = []
    for _ in range(blocks):
        t, _ = time_block(ctx.torch, copy.step, reps)
        ms.append(t)
    return [copy.nbytes / (t * 1e-3) / 1e9 for t in ms]


def run_group(ctx, group, dtype, sizes, seed, need, margin, copy, res, sequential):
    """Allocates the group's implementations, warms them up, times R interleaved rounds (with
    the copy), and fills res["rows"]; its tensors are released when it returns."""
    torch, args, n = ctx.torch, ctx.args, sum(sizes)
    objs = {}
    for i in group:
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(ctx.dev)
        if need[i] + margin > free:
            res["rows"][i] = {"error": f"skipped: needs {need[i] / 1e9:.1f} GB, {free / 1e9:.1f} GB free"}
            continue
        try:
            objs[i] = make_impl(ctx, i, dtype, sizes, seed)
        except Exception as e:  # noqa: BLE001
            res["rows"][i] = {"error": f"{type(e).__name__}: {e}"}
            if "CUDA error" in str(e):
                raise
    ks = {}
    for i in list(objs):
        try:
            for _ in range(args.warmup):
                objs[i].step()
            torch.cuda.synchronize()
            if args.steps > 0:
                ks[i] = args.steps
            else:
                t, _ = time_block(torch, objs[i].step, 3)
                ks[i] = max(3, min(2000, int(math.ceil(args.target_ms / max(t, 1e-3)))))
        except Exception as e:  # noqa: BLE001
            res["rows"][i] = {"error": f"{type(e).__name__}: {e}"}
            del objs[i]
            if "CUDA error" in str(e):
                raise
    entries = [(i, objs[i].step, ks[i]) for i in group if i in objs]
    if copy is not None:
        entries.append(("copy", copy.step, args.copy_reps))
    times = {name: [] for name, _, _ in entries}
    host = {name: [] for name, _, _ in entries}
    for r in range(args.rounds):
        k0 = r % len(entries)
        for name, fn, k in entries[k0:] + entries[:k0]:
            t, h = time_block(torch, fn, k)
            times[name].append(t)
            host[name].append(h)
    for i in objs:
        bpp = bytes_per_param(dtype, i)
        med = median(times[i])
        res["rows"][i] = {"k": ks[i], "ms_rounds": times[i], "ms": med, "ms_min": min(times[i]),
                          "ms_max": max(times[i]), "host_ms_per_step": median(host[i]),
                          "bytes_per_param": bpp, "gbs": bpp * n / (med * 1e-3) / 1e9, "sequential": sequential}
    if copy is not None:
        res["copy_gbs"] += [copy.nbytes / (t * 1e-3) / 1e9 for t in times["copy"]]


def bench_case(ctx, case, copy, out_cases):
    torch, args = ctx.torch, ctx.args
    dtype, sizes, n = case["dtype"], case["sizes"], case["n"]
    tag = f"N={fmt_n(n)} {dtype} {case['layout']}"
    res = {"case": tag, "dtype": dtype, "n": n, "layout": case["layout"], "tensors": len(sizes), "rows": {},
           "copy_gbs": [], "notes": []}
    out_cases.append(res)
    impls = [i for i in args.impl_list]
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(ctx.dev)
    need = {i: n * mem_per_param(dtype, i) for i in impls}
    margin = 1 << 30
    res["mem_need_gb"] = {i: need[i] / 1e9 for i in impls}
    res["mem_free_gb"] = free / 1e9
    if sum(need.values()) + margin <= free:
        groups = [impls]
    else:
        groups = [[i] for i in impls]
        res["notes"].append("sequential: the implementations did not fit together; each ran alone "
                            "(its own rounds, interleaved with the copy only)")
    seed = args.seed + n + len(sizes)
    for group in groups:
        run_group(ctx, group, dtype, sizes, seed, need, margin, copy, res, sequential=len(groups) > 1)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    cg = median(res["copy_gbs"]) if res["copy_gbs"] else None
    res["copy_gbs_median"] = cg
    rows = res["rows"]
    for i, row in rows.items():
        if "ms" not in row:
            continue
        if cg:
            row["frac_copy"] = row["gbs"] / cg
        if i == "ours" and "ms" in rows.get("torch", {}):
            row["speedup_vs_torch"] = rows["torch"]["ms"] / row["ms"]
            row["speedup_per_round_median"] = (median([t / o for t, o in zip(rows["torch"]["ms_rounds"],
                                                                               row["ms_rounds"])])
                                               if not row["sequential"] else None)
        if i == "ours" and "frac_copy" in row:
            row["target"] = "PASS" if row["frac_copy"] >= TARGET_COPY_FRACTION else "MISS"
    log(f"  {tag}: " + ", ".join(f"{i} {rows[i]['ms']:.3f} ms" if "ms" in rows[i] else f"{i} {rows[i]['error']}"
                                  for i in rows) + (f", copy {cg:.0f} GB/s" if cg else ""))
    return res


def print_table(out):
    env = out.get("env", {})
    log("")
    log("=" * 118)
    log("GPU Adam(W) step: ours (dsrs_adam_step, fused_adam) vs torch.optim.AdamW(fused=True)")
    log(f"device: {env.get('device_name')} (CC {env.get('cc')}, {env.get('sm_count')} SMs, "
        f"{env.get('total_memory_gib', 0):.0f} GiB); torch {env.get('torch')} (CUDA {env.get('torch_cuda')}); "
        f"deepspeed_rs {env.get('dsrs_version')}; stream {env.get('stream', {}).get('mode')}")
    pr = out.get("probe", {})
    log(f"NVRTC: {', '.join(pr.get('mapped_nvrtc') or []) or env.get('nvrtc_setup', {}).get('nvrtc')}"
        f"{' (nvcc build)' if env.get('DSRS_USE_NVCC') else ''}")
    ca = out.get("copy_anchor")
    if ca:
        log(f"copy anchor: 2 x {ca['buffer_gb']:.2f} GB device-to-device copy_, bytes read + written: "
            f"median {ca['gbs_median']:.0f} GB/s over {ca['count']} blocks of {ca['reps']} "
            f"(min {ca['gbs_min']:.0f}, max {ca['gbs_max']:.0f}); an H100's is about 3000")
    log("bytes/param: fp32 28 (read p g m v, write p m v); bf16 params: ours 22 (fp32 states), torch 14 "
        "(bf16 states); GB = 1e9 B")
    log(f"{'case':26} {'impl':6} {'ms/step':>9} {'(min..max)':>19} {'B/p':>4} {'GB/s':>7} {'%copy':>6} "
        f"{'vs torch':>9} {'K':>5} {'host ms':>8}  target (ours >= {TARGET_COPY_FRACTION:.0%} of copy)")
    for c in out.get("cases", []):
        first = True
        for i in IMPLS:
            row = c["rows"].get(i)
            if row is None:
                continue
            name = c["case"] if first else ""
            first = False
            if "ms" not in row:
                log(f"{name:26} {i:6} {row.get('error', '?')}")
                continue
            frac = f"{row['frac_copy'] * 100:5.1f}%" if "frac_copy" in row else "   -  "
            sp = f"{row['speedup_vs_torch']:8.3f}x" if "speedup_vs_torch" in row else ""
            tgt = row.get("target", "")
            if row.get("sequential"):
                tgt += " (sequential)"
            log(f"{name:26} {i:6} {row['ms']:9.3f} ({row['ms_min']:8.3f}..{row['ms_max']:8.3f}) "
                f"{row['bytes_per_param']:4d} {row['gbs']:7.0f} {frac:>6} {sp:>9} {row['k']:5d} "
                f"{row['host_ms_per_step']:8.3f}  {tgt}")
        if c.get("copy_gbs_median"):
            log(f"{'':26} {'copy':6} {'':9} {'':19} {'':4} {c['copy_gbs_median']:7.0f} (this case's rounds)")
        for note in c.get("notes", []):
            log(f"{'':26} note: {note}")
    log("'vs torch' = torch ms / ours ms (> 1: ours faster); 'host ms' = host time to submit one step "
        "(a step is launch-bound if it is near ms/step)")


def main(argv=None):
    args = parse_args(argv)
    nvrtc_info = setup_nvrtc(args)
    out = {"script": "benches/gpu_adam_peers.py", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "args": {k: v for k, v in vars(args).items()}, "errors": []}
    ctx = setup(args, nvrtc_info, out)
    torch = ctx.torch
    status = EXIT_OK
    try:
        try:
            probe(ctx, out)
        except DsrsError as e:
            out["fatal"] = str(e)
            log(f"gpu_adam_peers: our first CUDA step failed: {e}")
            log("  hints: --nvrtc /path/libnvrtc.so.N (or DSRS_NVRTC_LIB), --use-nvcc (the toolkit's nvcc), "
                f"DSRS_LOG=debug; NVRTC found: {nvrtc_info.get('candidates')}")
            status = EXIT_NO_GPU if e.status in (STATUS_UNAVAILABLE, STATUS_OP_INCOMPATIBLE) else EXIT_ERROR
            return status

        if not args.skip_check:
            log("")
            log("correctness check ...")
            try:
                correctness(ctx, out)
            except Exception as e:  # noqa: BLE001  (only a CUDA error escapes: the context is gone)
                out["errors"].append(f"check: {type(e).__name__}: {e}")
                log(f"gpu_adam_peers: the correctness check stopped the run: {type(e).__name__}: {e}")
                status = EXIT_ERROR
                return status
            print_check(out["check"])

        if not args.skip_bench:
            log("")
            copy = None
            try:
                copy = Copy(torch, ctx.device, args.copy_gib)
                copy.step()
                torch.cuda.synchronize()
                start = copy_anchor(ctx, copy, args.copy_reps, 5)
                log(f"copy anchor at start: {median(start):.0f} GB/s (2 x {copy.nbytes / 2e9:.2f} GB per copy)")
            except Exception as e:  # noqa: BLE001
                out["errors"].append(f"copy anchor: {type(e).__name__}: {e}")
                log(f"copy anchor unavailable: {e}")
                copy, start = None, []
            cases = []
            for dtype in args.dtype_list:
                for n in args.size_list:
                    cases.append({"dtype": dtype, "n": n, "layout": "flat", "sizes": [n]})
                for n, c in args.multi_list:
                    cases.append({"dtype": dtype, "n": n, "layout": f"{c} tensors",
                                  "sizes": varied_sizes(n, c, args.seed + c)})
            cases.sort(key=lambda c: (c["n"], c["dtype"] != "fp32", c["layout"] != "flat"))
            out["cases"] = []
            log("timings ...")
            for case in cases:
                try:
                    bench_case(ctx, case, copy, out["cases"])
                except Exception as e:  # noqa: BLE001
                    out["errors"].append(f"{case['dtype']} N={case['n']} {case['layout']}: {type(e).__name__}: {e}")
                    log(f"  case {case['dtype']} N={fmt_n(case['n'])} {case['layout']}: ERROR {e}")
                    if "CUDA error" in str(e):
                        log("gpu_adam_peers: CUDA error, stopping")
                        status = EXIT_ERROR
                        break
            if copy is not None:
                try:
                    end = copy_anchor(ctx, copy, args.copy_reps, 5)
                    allg = start + end + [g for c in out["cases"] for g in c.get("copy_gbs", [])]
                    out["copy_anchor"] = {"buffer_gb": copy.nbytes / 2e9, "reps": args.copy_reps, "count": len(allg),
                                          "gbs_median": median(allg), "gbs_min": min(allg), "gbs_max": max(allg),
                                          "start": start, "end": end}
                except Exception as e:  # noqa: BLE001
                    out["errors"].append(f"copy anchor (end): {type(e).__name__}: {e}")
                del copy
            print_table(out)

        if "check" in out:
            print_check(out["check"])  # again, last, next to the table
            bad = [r for r in out["check"]["results"]
                   if "error" in r or not r.get("cpu_bitexact") or not r.get("sanity_ok")]
            if bad:
                log(f"CORRECTNESS: FAIL ({len(bad)} of {len(out['check']['results'])} checks)")
                status = EXIT_CHECK_FAILED
            else:
                log(f"CORRECTNESS: PASS (ours on the GPU bit-identical to our CPU kernel in all "
                    f"{len(out['check']['results'])} checks; sanity against float64 ok)")
        if out["errors"]:
            log("errors: " + "; ".join(out["errors"]))
            if status == EXIT_OK:
                status = EXIT_ERROR
        return status
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"{type(e).__name__}: {e}")
        out["traceback"] = traceback.format_exc()
        log(traceback.format_exc())
        status = EXIT_ERROR
        return status
    finally:
        out["exit_status"] = status
        out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        teardown(ctx)
        if args.json:
            write_json(args.json, out)


if __name__ == "__main__":
    sys.exit(main())
