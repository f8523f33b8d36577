#!/usr/bin/env python3
"""One CPU Adam(W) step: deepspeed_rs (`dsrs_adam_step`, C ABI) side by side with its peers.

  ours          dsrs_adam_step from target/release/libdeepspeed_rs.so, through ctypes
                (host DLTensors, stream NULL, backend KERNEL: the JIT-built cpu_adam op)
  ds_cpu_adam   deepspeed.ops.adam.DeepSpeedCPUAdam(adamw_mode=True)  (fp32 states, also
                for bf16 parameters: fp32_optimizer_states=True is its default)
  torch_fused   torch.optim.AdamW(fused=True)  (its states take the parameters' dtype)

The peers are constructed by ../shared/bench/peer_cpu_adam.py (imported from its path, not
copied): the same hyper-parameters (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01, AdamW,
bias correction) for everyone. fp32 parameters take fp32 gradients; bf16 parameters take
bf16 gradients; our and DeepSpeed's states are fp32.

Method (../shared/perf-anchors.md): one child process per thread count, with
OMP_NUM_THREADS / MKL_NUM_THREADS set before torch is imported and our config's num_threads
set to the same count. For each N and dtype all implementations' tensors are allocated
first, each is warmed up, then R rounds each time K consecutive steps (K: enough for about
--target-s seconds) of every implementation in turn (the order rotates between rounds);
an implementation's figure is the median over rounds of its per-step time. Ratios are
`speedup = peer_time / our_time`.

Ceiling: the compiled ../shared/bench/peer_stream.c (`r4w3`: 4 streams read, 3 written,
Adam's traffic) on 1e8-element arrays at the same thread count, run as one more entry of
every round (a new process each time; its r4w3 median over --stream-reps repetitions), so
that it sees the same machine as the steps; a case's ceiling is the median over its rounds
(the same GB/s for bf16). Bytes per param:
fp32 28 (read p g m v, write p m v); bf16 parameters with fp32 states 22 (p 2+2, g 2,
m 4+4, v 4+4); torch's bf16 fused path keeps bf16 states: 14. Write-allocate traffic is not
counted (STREAM convention), the same as in the ceiling.

Targets (PASS/MISS on our rows):
  fp32, N=1e8:  GB/s >= 95 % of the ceiling
  fp32, N=1e6:  >= 1.2x DeepSpeed
  bf16, any N:  >= 1.1x DeepSpeed;  N=1e8 (out of cache, like the ceiling): >= 90 % of it

Correctness: after the timed steps each child runs 3 fresh steps of ours, DeepSpeed and
torch from identical fp32 state at N=1e6 (different gradients per step) and prints
max |difference| (a few 1e-7..1e-6 expected: DeepSpeed uses FMA, we do not), plus the same
with bf16 parameters (differences there are bf16 roundings).

Usage (benches/cpu_adam_peers.sh builds everything and runs this with the peer venv):
  $PEER_VENV/bin/python benches/cpu_adam_peers.py --quick
  $PEER_VENV/bin/python benches/cpu_adam_peers.py --sizes 1e6,1e7,1e8 --dtypes fp32,bf16 --json out.json
This is a benchmark: it exits 0 whatever the numbers (non-zero only when it cannot run).
"""

import argparse
import ctypes
import gc
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from ctypes import POINTER, Structure, byref, c_char_p, c_float, c_int32, c_int64, c_size_t, c_uint8, c_uint16, \
    c_uint64, c_void_p

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER_DIR = os.environ.get("PEER_BENCH_DIR", os.path.join(os.path.dirname(ROOT), "shared", "bench"))
DEFAULT_LIB = os.path.join(ROOT, "target", "release", "libdeepspeed_rs.so")
DEFAULT_STREAM = os.path.join(ROOT, "target", "bench", "peer_stream")

ALL_IMPLS = ["ours", "ds_cpu_adam", "torch_fused"]
PEERS = ["ds_cpu_adam", "torch_fused"]
BACKENDS = {"auto": 0, "kernel": 1, "reference": 2}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts, one child process each (default 1,2)")
    ap.add_argument("--sizes", default=None, help="comma list of parameter counts (default 1e6,1e7,1e8; --quick: 1e6,1e7)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="parameter dtypes from fp32,bf16 (default both)")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS), help="comma list from " + ",".join(ALL_IMPLS))
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds R (default 7; --quick: 3)")
    ap.add_argument("--target-s", type=float, default=0.2, help="seconds per timed block of K steps (default 0.2)")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed warm-up steps per implementation, at least (default 3; and about 0.1 s)")
    ap.add_argument("--quick", action="store_true", help="smoke test: sizes 1e6,1e7 and 3 rounds")
    ap.add_argument("--lib", default=os.environ.get("DSRS_LIBRARY", DEFAULT_LIB),
                    help="libdeepspeed_rs.so (default $DSRS_LIBRARY or target/release/libdeepspeed_rs.so)")
    ap.add_argument("--backend", default="kernel", choices=sorted(BACKENDS),
                    help="our config's backend (default kernel: the cpu_adam op, never the Rust reference)")
    ap.add_argument("--peer-dir", default=DEFAULT_PEER_DIR,
                    help="directory of peer_cpu_adam.py (default $PEER_BENCH_DIR or ../shared/bench)")
    ap.add_argument("--stream-bin", default=os.environ.get("PEER_STREAM", DEFAULT_STREAM),
                    help="compiled peer_stream.c (default $PEER_STREAM or target/bench/peer_stream); "
                         "missing: no ceiling")
    ap.add_argument("--stream-n", default="1e8", help="elements per peer_stream array (default 1e8)")
    ap.add_argument("--stream-reps", type=int, default=None,
                    help="peer_stream repetitions per round (default 5; --quick: 3)")
    ap.add_argument("--check-n", default="1e6", help="parameter count of the correctness check (default 1e6)")
    ap.add_argument("--json", default=None, help="also write all results as JSON to this path")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.sizes is None:
        a.sizes = "1e6,1e7" if a.quick else "1e6,1e7,1e8"
    if a.rounds is None:
        a.rounds = 3 if a.quick else 7
    if a.stream_reps is None:
        a.stream_reps = 3 if a.quick else 5
    a.size_list = [int(float(x)) for x in a.sizes.split(",") if x.strip()]
    a.dtype_list = [x.strip() for x in a.dtypes.split(",") if x.strip()]
    a.impl_list = [x.strip() for x in a.impls.split(",") if x.strip()]
    for d in a.dtype_list:
        if d not in ("fp32", "bf16"):
            ap.error(f"--dtypes: unknown dtype {d!r} (fp32, bf16)")
    for i in a.impl_list:
        if i not in ALL_IMPLS:
            ap.error(f"--impls: unknown implementation {i!r} ({', '.join(ALL_IMPLS)})")
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    return a


def load_peer_module(peer_dir):
    path = os.path.join(peer_dir, "peer_cpu_adam.py")
    if not os.path.isfile(path):
        sys.exit(f"cpu_adam_peers: {path} not found (give --peer-dir or PEER_BENCH_DIR)")
    spec = importlib.util.spec_from_file_location("peer_cpu_adam", path)
    mod = importlib.util.module_from_spec(spec)
    dont = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave no __pycache__ in the shared directory
    try:
        spec.loader.exec_module(mod)  # imports no torch at module level
    finally:
        sys.dont_write_bytecode = dont
    return mod


def bytes_per_param(dtype, state_bytes=4):
    """Minimum traffic of one step: read p, g, m, v; write p, m, v (states of state_bytes)."""
    p = 4 if dtype == "fp32" else 2
    return 2 * p + p + 4 * state_bytes  # p read+write, g read (same dtype as p), m and v read+write


# ---------------------------------------------------------------------------
# Our side: minimal ctypes declarations of the C ABI (src/ffi/optim.rs, DLPack 1.1).
# ---------------------------------------------------------------------------

kDLCPU, kDLFloat, kDLBfloat = 1, 2, 4


class DLDevice(Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class DLTensor(Structure):
    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int32), ("dtype", DLDataType),
                ("shape", POINTER(c_int64)), ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class DsrsAdamConfig(Structure):  # dsrs_adam_config
    _fields_ = [("lr", c_float), ("beta1", c_float), ("beta2", c_float), ("eps", c_float),
                ("weight_decay", c_float), ("adamw_mode", c_int32), ("bias_correction", c_int32),
                ("step", c_int64), ("grad_scale", c_float), ("num_threads", c_int32), ("backend", c_int32)]


class DsrsOptimTensors(Structure):  # dsrs_optim_tensors
    _fields_ = [("params", POINTER(DLTensor)), ("grads", POINTER(DLTensor)), ("exp_avg", POINTER(DLTensor)),
                ("exp_avg_sq", POINTER(DLTensor)), ("param_copy", POINTER(DLTensor))]


def load_lib(path):
    lib = ctypes.CDLL(path)
    lib.dsrs_adam_step.argtypes = [POINTER(DsrsAdamConfig), POINTER(DsrsOptimTensors), c_size_t, c_void_p]
    lib.dsrs_adam_step.restype = c_int32
    lib.dsrs_last_error_message.argtypes = [c_char_p, c_size_t, POINTER(c_size_t)]
    lib.dsrs_last_error_message.restype = c_int32
    lib.dsrs_version.argtypes = []
    lib.dsrs_version.restype = c_char_p
    return lib


def last_error(lib):
    buf = ctypes.create_string_buffer(4096)
    need = c_size_t(0)
    lib.dsrs_last_error_message(buf, len(buf), byref(need))
    return buf.value.decode("utf-8", "replace")


def dl_tensor(t, keep):
    """A DLTensor describing the contiguous 1-D torch tensor t (host memory)."""
    import torch
    assert t.is_contiguous() and t.dim() == 1 and t.device.type == "cpu"
    shape = (c_int64 * 1)(t.numel())
    keep.append(shape)
    d = DLTensor()
    d.data = t.data_ptr()
    d.device = DLDevice(kDLCPU, 0)
    d.ndim = 1
    d.dtype = {torch.float32: DLDataType(kDLFloat, 32, 1), torch.bfloat16: DLDataType(kDLBfloat, 16, 1)}[t.dtype]
    d.shape = shape
    d.strides = None
    d.byte_offset = 0
    keep.append(d)
    return d


class OursAdam:
    """dsrs_adam_step on one flat parameter; owns fp32 m and v (zeros), like the peers' lazy state."""

    def __init__(self, lib, torch, hp, p, g, nthreads, backend):
        self.lib, self.p, self.g = lib, p, g
        self.m = torch.zeros(p.numel(), dtype=torch.float32)
        self.v = torch.zeros(p.numel(), dtype=torch.float32)
        self._keep = []
        self.tens = DsrsOptimTensors(ctypes.pointer(dl_tensor(p, self._keep)), ctypes.pointer(dl_tensor(g, self._keep)),
                                     ctypes.pointer(dl_tensor(self.m, self._keep)),
                                     ctypes.pointer(dl_tensor(self.v, self._keep)), None)
        lr, (b1, b2), eps, wd = hp
        self.cfg = DsrsAdamConfig(lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd, adamw_mode=1,
                                  bias_correction=1, step=0, grad_scale=1.0, num_threads=nthreads, backend=backend)
        self._fn, self._cfg_ref, self._t_ref = lib.dsrs_adam_step, byref(self.cfg), byref(self.tens)

    def step(self):
        self.cfg.step += 1
        rc = self._fn(self._cfg_ref, self._t_ref, 1, None)
        if rc != 0:
            raise RuntimeError(f"dsrs_adam_step: status {rc}: {last_error(self.lib)}")

    def param(self):
        return self.p

    def state_dtype(self):
        return "fp32"


class PeerAdam:
    """A peer optimizer (built by peer_cpu_adam.make_optimizer) on one flat parameter."""

    def __init__(self, peer, torch, impl, p, g):
        self.p = torch.nn.Parameter(p)
        self.p.grad = g  # set once, reused every step (as peer_cpu_adam.py)
        self.opt = peer.make_optimizer(torch, impl, [self.p])
        self.step = self.opt.step

    def param(self):
        return self.p.data

    def state_dtype(self):
        st = self.opt.state.get(self.p, {})
        t = st.get("exp_avg")
        return None if t is None else {"torch.float32": "fp32", "torch.bfloat16": "bf16"}.get(str(t.dtype), str(t.dtype))


# ---------------------------------------------------------------------------
# Child: one thread count.
# ---------------------------------------------------------------------------

def child_main(args):
    nthreads = int(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(nthreads)
    os.environ["MKL_NUM_THREADS"] = str(nthreads)
    import torch  # noqa: E402  (after the env vars)
    torch.set_num_threads(nthreads)
    peer = load_peer_module(args.peer_dir)
    lib = load_lib(args.lib)
    hp = (peer.LR, peer.BETAS, peer.EPS, peer.WD)
    out = {"threads": nthreads, "torch": torch.__version__, "torch_num_threads": torch.get_num_threads(),
           "dsrs_version": lib.dsrs_version().decode(), "cases": [], "check": None}
    try:
        import deepspeed
        out["deepspeed"] = deepspeed.__version__
    except Exception as e:  # noqa: BLE001
        out["deepspeed"] = f"unavailable: {type(e).__name__}: {e}"
    out["simd"] = simd_level(args.lib)

    for n in args.size_list:
        for dtype in args.dtype_list:
            out["cases"].append(bench_case(torch, peer, lib, hp, n, dtype, nthreads, args))
            gc.collect()
    try:
        out["check"] = correctness(torch, peer, lib, hp, int(float(args.check_n)), nthreads, args)
    except Exception as e:  # noqa: BLE001
        out["check"] = {"error": f"{type(e).__name__}: {e}"}
    print("@@JSON@@" + json.dumps(out), flush=True)


def simd_level(lib_path):
    """The SIMD level our cpu_adam op was built for (through the Python binding; best effort)."""
    try:
        sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
        os.environ.setdefault("DSRS_LIBRARY", lib_path)
        import deepspeed_rs as ds
        with ds.load_op("cpu_adam") as op:
            return op.function("dsrs_cpu_adam_simd_level", c_char_p)().decode()
    except Exception as e:  # noqa: BLE001
        return f"unknown ({type(e).__name__}: {e})"


def make_impl(torch, peer, lib, hp, impl, p0, g0, dtype, nthreads, args):
    tdt = torch.float32 if dtype == "fp32" else torch.bfloat16
    p = p0.to(tdt, copy=True)
    g = g0.to(tdt, copy=True)
    if impl == "ours":
        return OursAdam(lib, torch, hp, p, g, nthreads, BACKENDS[args.backend])
    return PeerAdam(peer, torch, impl, p, g)


def bench_case(torch, peer, lib, hp, n, dtype, nthreads, args):
    """All implementations on one (N, dtype), interleaved."""
    tag = f"[threads={nthreads}] N={fmt_n(n)} {dtype}"
    gen = torch.Generator().manual_seed(1234)
    p0 = torch.randn(n, generator=gen, dtype=torch.float32)
    g0 = torch.randn(n, generator=gen, dtype=torch.float32)
    impls, rows = {}, {}
    for name in args.impl_list:
        try:
            impls[name] = make_impl(torch, peer, lib, hp, name, p0, g0, dtype, nthreads, args)
        except Exception as e:  # noqa: BLE001
            rows[name] = {"impl": name, "error": f"{type(e).__name__}: {e}"}
    del p0, g0
    # Warm up (first steps: lazy state allocation, page faults, JIT/op load) and pick K.
    ks = {}
    for name, im in list(impls.items()):
        try:
            # at least --warmup steps and about 0.1 s; K from the median of the steps after the first
            ts, t_end = [], time.perf_counter() + 0.1
            while len(ts) < max(2, args.warmup) or (time.perf_counter() < t_end and len(ts) < 2000):
                t0 = time.perf_counter()
                im.step()
                ts.append(time.perf_counter() - t0)
            est = statistics.median(ts[1:])
            ks[name] = max(1, min(100000, math.ceil(args.target_s / max(est, 1e-7))))
        except Exception as e:  # noqa: BLE001
            rows[name] = {"impl": name, "error": f"{type(e).__name__}: {e}"}
            del impls[name]
    # Interleaved rounds; the order rotates so that nobody always runs right after the same peer.
    # The ceiling (peer_stream, a separate process) is one more entry of each round.
    stream_ok = stream_available(args)
    order = list(impls) + (["ceiling"] if stream_ok and impls else [])
    per = {name: [] for name in order}
    ceiling = {"per_round_gbps": [], "errors": []} if stream_ok else {"error": stream_missing(args)}
    for r in range(args.rounds):
        rot = order[r % len(order):] + order[:r % len(order)] if order else []
        for name in rot:
            if name == "ceiling":
                st = run_stream(args, nthreads)
                if "kernels" in st:
                    ceiling["per_round_gbps"].append(st["kernels"]["r4w3"]["median_gbps"])
                    ceiling["last"] = st
                else:
                    ceiling["errors"].append(st["error"])
                continue
            step, k = impls[name].step, ks[name]
            t0 = time.perf_counter()
            for _ in range(k):
                step()
            per[name].append((time.perf_counter() - t0) / k)
    order = [x for x in order if x != "ceiling"]
    if ceiling.get("per_round_gbps"):
        ceiling["median_gbps"] = statistics.median(ceiling["per_round_gbps"])
        ceiling["n"], ceiling["reps"] = args.stream_n, args.stream_reps
    for name in order:
        im = impls[name]
        finite = bool(torch.isfinite(im.param()[: min(n, 100000)].float()).all())
        sd = im.state_dtype()
        bpp = bytes_per_param(dtype, 4 if sd in (None, "fp32") else 2)
        med = statistics.median(per[name])
        rows[name] = {"impl": name, "k": ks[name], "rounds": args.rounds, "per_round_s": per[name], "median_s": med,
                      "min_s": min(per[name]), "max_s": max(per[name]), "params_per_s": n / med,
                      "state_dtype": sd, "bytes_per_param": bpp, "gbps": bpp * n / med / 1e9, "finite": finite}
    res = {"n": n, "dtype": dtype, "threads": nthreads, "ceiling": ceiling,
           "rows": [rows[x] for x in args.impl_list if x in rows]}
    for r in res["rows"]:
        print(f"# {tag} {r['impl']:12s} " + (f"{r['median_s'] * 1e3:9.3f} ms/step  (K={r['k']}, "
                                             f"min {r['min_s'] * 1e3:.3f} max {r['max_s'] * 1e3:.3f})"
                                             if "median_s" in r else r["error"]), file=sys.stderr, flush=True)
    if "median_gbps" in ceiling:
        print(f"# {tag} {'ceiling':12s} {ceiling['median_gbps']:9.1f} GB/s r4w3  (min "
              f"{min(ceiling['per_round_gbps']):.1f} max {max(ceiling['per_round_gbps']):.1f})", file=sys.stderr, flush=True)
    del impls
    gc.collect()
    return res


def correctness(torch, peer, lib, hp, n, nthreads, args):
    """3 fresh steps from identical state, different gradients each step: ours vs the peers."""
    gen = torch.Generator().manual_seed(42)
    p0 = torch.randn(n, generator=gen, dtype=torch.float32)
    grads = [torch.randn(n, generator=gen, dtype=torch.float32) for _ in range(3)]
    out = {"n": n, "steps": 3}
    for dtype in ("fp32", "bf16"):
        tdt = torch.float32 if dtype == "fp32" else torch.bfloat16
        res = {}
        for name in args.impl_list:
            try:
                g = torch.empty(n, dtype=tdt)
                im = (OursAdam(lib, torch, hp, p0.to(tdt, copy=True), g, nthreads, BACKENDS[args.backend])
                      if name == "ours" else PeerAdam(peer, torch, name, p0.to(tdt, copy=True), g))
                for gr in grads:
                    g.copy_(gr)  # in place: our DLTensor and the peer's p.grad see the new values
                    im.step()
                st = im.opt.state[im.p] if name != "ours" else {"exp_avg": im.m, "exp_avg_sq": im.v}
                res[name] = (im.param().float().clone(), st["exp_avg"].float().clone(), st["exp_avg_sq"].float().clone())
            except Exception as e:  # noqa: BLE001
                res[name] = f"{type(e).__name__}: {e}"
        pairs = {}
        if isinstance(res.get("ours"), tuple):
            for peer_name in PEERS:
                if not isinstance(res.get(peer_name), tuple):
                    if peer_name in res:
                        pairs[f"ours vs {peer_name}"] = {"error": res[peer_name]}
                    continue
                d = {}
                for i, what in enumerate(("params", "exp_avg", "exp_avg_sq")):
                    diff = (res["ours"][i] - res[peer_name][i]).abs()
                    d[what] = {"max_abs": float(diff.max()), "n_differ": int((diff > 0).sum())}
                pairs[f"ours vs {peer_name}"] = d
        elif "ours" in res:
            pairs["ours"] = {"error": res["ours"]}
        out[dtype] = {"param_change_max": float((res["ours"][0] - p0).abs().max())
                      if isinstance(res.get("ours"), tuple) else None, "pairs": pairs}
    return out


# ---------------------------------------------------------------------------
# Parent: ceiling, one child per thread count, tables, targets, JSON.
# ---------------------------------------------------------------------------

STREAM_RE = re.compile(r"^(\w+)\s+threads=(\d+)\s+median ([\d.]+) ms\s+median ([\d.]+) GB/s\s+best ([\d.]+) GB/s")


def stream_available(args):
    return bool(args.stream_bin) and os.path.isfile(args.stream_bin) and os.access(args.stream_bin, os.X_OK)


def stream_missing(args):
    return f"no peer_stream binary at {args.stream_bin} (build it: gcc -O3 -march=native -fopenmp)"


def run_stream(args, nthreads):
    if not stream_available(args):
        return {"error": stream_missing(args)}
    env = dict(os.environ, OMP_NUM_THREADS=str(nthreads))
    cp = subprocess.run([args.stream_bin, args.stream_n, str(args.stream_reps)], env=env, capture_output=True, text=True)
    if cp.returncode != 0:
        return {"error": f"peer_stream failed (rc={cp.returncode}): {cp.stderr.strip()[-500:]}"}
    kernels = {}
    for line in cp.stdout.splitlines():
        m = STREAM_RE.match(line.strip())
        if m:
            kernels[m.group(1)] = {"threads": int(m.group(2)), "median_ms": float(m.group(3)),
                                   "median_gbps": float(m.group(4)), "best_gbps": float(m.group(5))}
    if "r4w3" not in kernels:
        return {"error": "no r4w3 line in peer_stream's output:\n" + cp.stdout[-500:]}
    return {"n": args.stream_n, "reps": args.stream_reps, "kernels": kernels}


def run_child(args, peer, nthreads):
    env = dict(os.environ, OMP_NUM_THREADS=str(nthreads), MKL_NUM_THREADS=str(nthreads))
    # The venv's bin first: DeepSpeed's JIT build runs `ninja` from PATH (an unactivated venv's
    # python does not put it there). DS_ACCELERATOR=cpu skips its accelerator probing.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("DS_ACCELERATOR", "cpu")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(nthreads),
           "--sizes", args.sizes, "--dtypes", args.dtypes, "--impls", args.impls, "--rounds", str(args.rounds),
           "--target-s", str(args.target_s), "--warmup", str(args.warmup), "--lib", args.lib,
           "--backend", args.backend, "--peer-dir", args.peer_dir, "--check-n", args.check_n,
           "--stream-bin", args.stream_bin or "", "--stream-n", args.stream_n, "--stream-reps", str(args.stream_reps)]
    import resource
    busy0, ru0, w0 = peer._machine_busy_s(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    cp = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)  # stderr (progress) streams through
    busy1, ru1, w1 = peer._machine_busy_s(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    data = None
    for line in cp.stdout.splitlines():
        if line.startswith("@@JSON@@"):
            data = json.loads(line[len("@@JSON@@"):])
        else:
            print(line, file=sys.stderr)
    if data is None:
        return {"threads": nthreads, "error": f"child failed (rc={cp.returncode})"}
    if busy0 is not None and busy1 is not None:
        own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        data["background"] = {"wall_s": w1 - w0, "foreign_cpu_s": max(0.0, (busy1 - busy0) - own)}
    return data


def ceiling_of(case):
    return case.get("ceiling", {}).get("median_gbps")


def run_ceiling(run):
    """The median over all cases' rounds of a thread count (for the header)."""
    c = [g for case in run.get("cases", []) for g in case.get("ceiling", {}).get("per_round_gbps", [])]
    return statistics.median(c) if c else None


def evaluate(run):
    """Speedups, % of ceiling and the targets for our rows of one thread count."""
    targets = []
    for case in run.get("cases", []):
        ceil = ceiling_of(case)
        rows = {r["impl"]: r for r in case["rows"]}
        ours = rows.get("ours")
        for r in case["rows"]:
            r["pct_ceiling"] = (100.0 * r["gbps"] / ceil) if (ceil and "gbps" in r) else None
        if not ours or "median_s" not in ours:
            continue
        ours["speedup"] = {p: rows[p]["median_s"] / ours["median_s"] for p in PEERS
                           if p in rows and "median_s" in rows[p]}
        checks = []
        n, dt = case["n"], case["dtype"]
        ds = ours["speedup"].get("ds_cpu_adam")
        if dt == "fp32" and n == 100_000_000:
            checks.append(("fp32 1e8 >= 95% of ceiling", ours["pct_ceiling"], 95.0, "%"))
        if dt == "fp32" and n == 1_000_000:
            checks.append(("fp32 1e6 >= 1.2x DeepSpeed", ds, 1.2, "x"))
        if dt == "bf16":
            checks.append((f"bf16 {fmt_n(n)} >= 1.1x DeepSpeed", ds, 1.1, "x"))
            if n == 100_000_000:
                checks.append(("bf16 1e8 >= 90% of ceiling", ours["pct_ceiling"], 90.0, "%"))
        ours["targets"] = []
        for name, val, goal, unit in checks:
            verdict = "n/a" if val is None else ("PASS" if val >= goal else "MISS")
            t = {"threads": run["threads"], "target": name, "value": val, "goal": goal, "unit": unit,
                 "verdict": verdict}
            ours["targets"].append(t)
            targets.append(t)
    return targets


def fmt_n(n):
    """1000000 -> '1e6' (exact powers of ten), else the integer."""
    e = round(math.log10(n)) if n > 0 else 0
    return f"1e{e}" if n == 10 ** e else str(n)


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def print_run(run):
    t = run["threads"]
    print()
    if "error" in run:
        print(f"## threads={t}: {run['error']}")
        return
    ceil = run_ceiling(run)
    errs = sorted({e for case in run.get("cases", []) for e in
                   ([case["ceiling"]["error"]] if "error" in case.get("ceiling", {}) else [])
                   + case.get("ceiling", {}).get("errors", [])})
    print(f"## threads={t}: ceiling = peer_stream r4w3 ({run.get('stream_n', '1e8')}-element arrays) in every round: "
          f"median over all rounds {fmt(ceil, '.1f', 'n/a')} GB/s; per case in the last row of each case"
          + (f"; ERRORS: {'; '.join(errs)}" if errs else ""))
    bg = run.get("background")
    if bg:
        warn = "  <-- WARNING: machine not idle" if bg["foreign_cpu_s"] > 0.05 * bg["wall_s"] else ""
        print(f"   child wall {bg['wall_s']:.1f} s; CPU used by other processes meanwhile ~{bg['foreign_cpu_s']:.1f} s{warn}")
    print(f"   torch {run.get('torch')}, DeepSpeed {run.get('deepspeed')}, deepspeed_rs {run.get('dsrs_version')}, "
          f"our cpu_adam SIMD: {run.get('simd')}")
    hdr = ("| impl | dtype | N | B/param | K x R | ms/step (min..max) | Mparams/s | GB/s | % ceil "
           "| speedup vs ds_cpu_adam | speedup vs torch_fused | targets |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for case in run.get("cases", []):
        for r in case["rows"]:
            head = f"| {r['impl']} | {case['dtype']} | {fmt_n(case['n'])} |"
            if "error" in r:
                print(f"{head} ERROR: {r['error'][:300]} |||||||||")
                continue
            sp = r.get("speedup", {})
            tg = ", ".join(f"{x['target'].split(' ', 2)[2]}: {x['verdict']}" for x in r.get("targets", []))
            bpp = f"{r['bytes_per_param']}" + ("" if r.get("state_dtype") in (None, "fp32") else f" ({r['state_dtype']} states)")
            fin = "" if r["finite"] else " NON-FINITE"
            print(f"{head} {bpp} | {r['k']} x {r['rounds']} | {r['median_s'] * 1e3:.3f} "
                  f"({r['min_s'] * 1e3:.3f}..{r['max_s'] * 1e3:.3f}){fin} | {r['params_per_s'] / 1e6:.0f} | "
                  f"{r['gbps']:.1f} | {fmt(r.get('pct_ceiling'), '.0f')} | "
                  f"{fmt(sp.get('ds_cpu_adam'), '.2f')} | {fmt(sp.get('torch_fused'), '.2f')} | {tg or '-'} |")
        c = case.get("ceiling", {})
        if "median_gbps" in c:
            g = c["per_round_gbps"]
            print(f"| r4w3 ceiling | fp32 | {c['n']} arrays | 28 | {c['reps']} reps x {len(g)} | "
                  f"(min..max GB/s {min(g):.1f}..{max(g):.1f}) | - | {c['median_gbps']:.1f} | 100 | - | - | - |")
    chk = run.get("check")
    if chk:
        print()
        if "error" in chk:
            print(f"   correctness check failed to run: {chk['error']}")
            return
        print(f"   correctness: {chk['steps']} fresh steps from identical state, N={fmt_n(chk['n'])}, max |diff| "
              f"(elements differing)")
        for dtype in ("fp32", "bf16"):
            c = chk.get(dtype)
            if not c:
                continue
            parts = []
            for pair, d in c["pairs"].items():
                if "error" in d:
                    parts.append(f"{pair}: ERROR {d['error'][:200]}")
                    continue
                parts.append(f"{pair}: " + ", ".join(
                    f"{w} {d[w]['max_abs']:.2e} ({d[w]['n_differ']})" for w in ("params", "exp_avg", "exp_avg_sq")))
            print(f"   {dtype} params (max |param change| {fmt(c['param_change_max'], '.2e')}): " + "; ".join(parts))


def main():
    args = parse_args()
    if args.child:
        return child_main(args)
    peer = load_peer_module(args.peer_dir)
    if not os.path.isfile(args.lib):
        sys.exit(f"cpu_adam_peers: {args.lib} not found (cargo build --release, or give --lib)")
    threads = [int(x) for x in args.threads.split(",") if x.strip()]
    t_start = time.time()
    runs = []
    if not stream_available(args):
        print(f"cpu_adam_peers: {stream_missing(args)}; no ceiling", file=sys.stderr)
    for t in threads:
        run = run_child(args, peer, t)
        run["stream_n"] = args.stream_n
        runs.append(run)
    targets = [x for run in runs if "error" not in run for x in evaluate(run)]

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    print(f"# CPU Adam(W) step, one flat tensor: deepspeed_rs vs DeepSpeed vs torch  "
          f"({os.cpu_count()} CPUs, {cpu}; {platform.python_version()}; rounds {args.rounds}, "
          f"~{args.target_s} s per block; speedup = peer time / our time; at 1e6 the arrays fit in cache, "
          f"so % ceil (a DRAM figure) goes well above 100 there)")
    for run in runs:
        print_run(run)
    if targets:
        print()
        print("## Targets")
        print("| threads | target | value | verdict |")
        print("|---|---|---|---|")
        for x in targets:
            v = fmt(x["value"], ".3f" if x["unit"] == "x" else ".1f", "n/a") + (x["unit"] if x["value"] is not None else "")
            print(f"| {x['threads']} | {x['target']} | {v} | {x['verdict']} |")
    if args.json:
        meta = {"argv": sys.argv, "started": t_start, "cpus": os.cpu_count(), "cpu": cpu, "lib": args.lib,
                "backend": args.backend, "rounds": args.rounds, "target_s": args.target_s,
                "stream_bin": args.stream_bin, "stream_n": args.stream_n, "stream_reps": args.stream_reps,
                "sizes": args.size_list, "dtypes": args.dtype_list, "impls": args.impl_list,
                "hyper_parameters": {"lr": peer.LR, "betas": peer.BETAS, "eps": peer.EPS, "weight_decay": peer.WD,
                                     "adamw": True, "bias_correction": True}}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "runs": runs, "targets": targets}, f, indent=1)
        print(f"\n(JSON: {args.json})")
    return 0 if runs and all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
