#!/usr/bin/env python3
"""The training engine's step, side by side with the bare cpu_adam kernel and with
DeepSpeed's engine (see benches/README.md and docs/performance.md).

Run through ``benches/engine_peers.sh`` (which builds the library and finds the peer venv).
The driver runs each measurement in a fresh worker process, interleaved over rounds, and
prints medians and ratios:

* ``ours``: ``dsrs_engine_step`` at an accumulation boundary (norm + overflow check,
  clipping, AdamW through the cpu_adam op, zeroing the gradients), and in the same process
  the bare kernel (``dsrs_adam_step``) on the engine's own flat buffers, one call over
  all parameters: the engine's overhead is the difference.
* ``deepspeed``: ``deepspeed.initialize`` on DeepSpeed's CPU accelerator with the same
  parameter count and config; ``engine.step()`` is timed after a backward.
* peak resident memory of each worker above its baseline (after imports, before the
  model), per parameter, against the theoretical bytes.

Gradients are refilled before every timed step (outside the timing), so every step does
the full work on non-zero data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def config(precision: str, clip: float) -> dict:
    cfg = {
        "train_batch_size": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.9, 0.999],
                                                  "eps": 1e-8, "weight_decay": 0.01}},
        "gradient_clipping": clip,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    return cfg


def worker_ours(args) -> dict:
    import ctypes
    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "bindings", "python"))
    import deepspeed_rs as ds
    from deepspeed_rs._dlpack import HostTensor
    from deepspeed_rs._lib import DLTensor

    lib = ds._lib.lib

    def check(status: int) -> None:
        if status != 0:
            buf = ctypes.create_string_buffer(4096)
            lib.dsrs_last_error_message(buf, ctypes.c_size_t(4096), ctypes.byref(ctypes.c_size_t()))
            raise SystemExit(f"deepspeed_rs error {status}: {buf.value.decode()}")

    n_per = args.params // args.tensors
    n = n_per * args.tensors
    # The host's gradient source and initial values exist before the baseline: only the
    # engine's memory is counted.
    # Drawn as float32 directly: a float64 temporary would raise the process's peak RSS
    # (ru_maxrss) above what the engine uses, hiding the engine's own peak.
    src = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    src *= np.float32(1e-3)
    init = np.random.default_rng(0).standard_normal(n_per, dtype=np.float32)
    init *= np.float32(0.02)
    base = rss_now()
    cfg = json.dumps(config(args.precision, args.clip)).encode()
    eng = ctypes.c_void_p()
    check(lib.dsrs_engine_new(None, cfg, ctypes.byref(eng)))
    t = HostTensor(init)
    for i in range(args.tensors):
        check(lib.dsrs_engine_register_param(eng, f"p{i}".encode(), t.ref, 1, None))
    del t
    check(lib.dsrs_engine_finalize(eng))

    def addr(fn, *extra) -> int:
        v = DLTensor()
        check(fn(eng, ctypes.c_size_t(0), *extra, ctypes.byref(v)))
        return v.data

    # The flat buffers: parameters lie in order at aligned offsets, and n_per is a multiple
    # of the alignment, so one array spans them all.

    def flat(a: int, ctype) -> "np.ndarray":
        return np.ctypeslib.as_array(ctypes.cast(a, ctypes.POINTER(ctype)), shape=(n,))

    grads = flat(addr(lib.dsrs_engine_grad), ctypes.c_float)
    exp_avg = flat(addr(lib.dsrs_engine_optimizer_state, b"exp_avg"), ctypes.c_float)
    exp_avg_sq = flat(addr(lib.dsrs_engine_optimizer_state, b"exp_avg_sq"), ctypes.c_float)
    kw = {}
    if args.precision == "bf16":
        master = flat(addr(lib.dsrs_engine_optimizer_state, b"master"), ctypes.c_float)
        kw["param_copy"] = (flat(addr(lib.dsrs_engine_param), ctypes.c_uint16), "bfloat16")
    else:
        master = flat(addr(lib.dsrs_engine_param), ctypes.c_float)
    engine_ms, bare_ms = [], []
    for it in range(args.warmup + args.steps):
        np.copyto(grads, src)
        t0 = time.perf_counter()
        check(lib.dsrs_engine_step(eng, None, None))
        dt = (time.perf_counter() - t0) * 1e3
        if it >= args.warmup:
            engine_ms.append(dt)
    peak = peak_rss() - base
    # The bare kernel on the same buffers: one dsrs_adam_step over the flat span, with the
    # bf16 copy written in the same pass as the engine does.
    for it in range(args.warmup + args.steps):
        np.copyto(grads, src)
        t0 = time.perf_counter()
        ds.adam_step(master, grads, exp_avg, exp_avg_sq, lr=1e-3, weight_decay=0.01,
                     step=it + 1, **kw)
        dt = (time.perf_counter() - t0) * 1e3
        if it >= args.warmup:
            bare_ms.append(dt)
    stats = ctypes.create_string_buffer(1 << 16)
    check(lib.dsrs_engine_stats_json(eng, stats, ctypes.c_size_t(1 << 16),
                                     ctypes.byref(ctypes.c_size_t())))
    impl = json.loads(stats.value)["optimizer"]["implementation"]
    check(lib.dsrs_engine_free(eng))
    return {"engine_ms": statistics.median(engine_ms), "bare_ms": statistics.median(bare_ms),
            "peak_bytes": peak, "implementation": impl}


def worker_deepspeed(args) -> dict:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    import logging
    import torch
    import deepspeed
    deepspeed.utils.logger.setLevel(logging.ERROR)
    deepspeed.init_distributed(dist_backend="gloo")
    n_per = args.params // args.tensors
    base = rss_now()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.ps = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.randn(n_per, generator=g) * 0.02)
                 for _ in range(args.tensors)])

        def forward(self, x):
            return sum((p * x).sum() for p in self.ps)

    model = Model()
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=config(args.precision, args.clip))
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    x = (torch.randn(n_per, generator=torch.Generator().manual_seed(1)) * 1e-3).to(dtype)
    times = []
    for it in range(args.warmup + args.steps):
        loss = engine(x)
        engine.backward(loss)
        t0 = time.perf_counter()
        engine.step()
        dt = (time.perf_counter() - t0) * 1e3
        if it >= args.warmup:
            times.append(dt)
    return {"engine_ms": statistics.median(times), "peak_bytes": peak_rss() - base,
            "optimizer": type(engine.optimizer).__name__}


def run_worker(python: str, who: str, precision: str, args) -> dict:
    cmd = [python, __file__, "--worker", who, "--precision", precision,
           "--params", str(args.params), "--tensors", str(args.tensors),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--clip", str(args.clip)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {who} {precision} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["ours", "deepspeed"])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--params", type=int, default=10_000_000)
    ap.add_argument("--tensors", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--peer-python", default=None,
                    help="python of the peer venv (DeepSpeed, torch); omit to skip DeepSpeed")
    args = ap.parse_args()
    if args.worker == "ours":
        print(json.dumps(worker_ours(args)))
        return
    if args.worker == "deepspeed":
        print(json.dumps(worker_deepspeed(args)))
        return
    if args.params % (args.tensors * 64):
        raise SystemExit("--params must be a multiple of 64 * --tensors")
    results = {}
    for r in range(args.rounds):
        for prec in args.precisions.split(","):
            ours = run_worker(sys.executable, "ours", prec, args)
            results.setdefault((prec, "ours"), []).append(ours)
            if args.peer_python:
                peer = run_worker(args.peer_python, "deepspeed", prec, args)
                results.setdefault((prec, "deepspeed"), []).append(peer)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    n = args.params
    print(f"# engine step, {n:.0e} params in {args.tensors} tensors, AdamW, gradient_clipping "
          f"{args.clip}; medians of {args.rounds} processes x {args.steps} steps")
    print("| precision | engine step (ms) | bare cpu_adam (ms) | engine overhead | "
          "DeepSpeed engine.step (ms) | speedup vs DeepSpeed | peak B/param ours | DeepSpeed |")
    print("|---|---|---|---|---|---|---|---|")
    for prec in args.precisions.split(","):
        o = results[(prec, "ours")]
        eng = statistics.median(x["engine_ms"] for x in o)
        bare = statistics.median(x["bare_ms"] for x in o)
        mem = statistics.median(x["peak_bytes"] for x in o) / n
        row = f"| {prec} | {eng:.2f} | {bare:.2f} | {100 * (eng / bare - 1):+.1f} % |"
        if (prec, "deepspeed") in results:
            d = results[(prec, "deepspeed")]
            dse = statistics.median(x["engine_ms"] for x in d)
            dmem = statistics.median(x["peak_bytes"] for x in d) / n
            row += f" {dse:.2f} ({d[0]['optimizer']}) | {dse / eng:.2f}x | {mem:.1f} | {dmem:.1f} |"
        else:
            row += f" - | - | {mem:.1f} | - |"
        print(row)
    print("theoretical bytes/param: fp32 AdamW 16 (params, grads, exp_avg, exp_avg_sq); "
          "bf16 18 (+ fp32 master 4, bf16 compute copy 2, fp32 gradients)")


if __name__ == "__main__":
    main()
