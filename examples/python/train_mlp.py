#!/usr/bin/env python3
"""Trains a small classifier with the deepspeed_rs training engine from Python: the numpy
twin of ``examples/c/train_mlp.c``.

    python examples/python/train_mlp.py [CONFIG] [--epochs N] [--min-accuracy PERCENT] [--quiet]

The host owns the model -- an MLP 2 -> 64 -> 64 -> 3 (ReLU, softmax cross-entropy) whose
forward and backward are written here in numpy -- and the engine owns the parameters,
gradients, optimizer, learning-rate schedule, clipping, accumulation and loss scaling, as
configured by a DeepSpeed ds_config (default ``examples/c/ds_config.json``). Each micro
batch reads the parameters through the engine's zero-copy views, ADDS its gradients
(times ``engine.loss_scale`` for fp16) into the gradient views, reports the loss and calls
``engine.step()``. The dataset (``spiral_data.py``) is bit for bit the C demo's; so are the
initial weights and the shuffling (same generator, same seeds). At the end it prints the
held-out accuracy and exits with status 1 below ``--min-accuracy`` (default 95).

Needs numpy and the binding (``pip install ./bindings/python``; ``DSRS_LIBRARY`` pointing
at ``libdeepspeed_rs.so``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spiral_data  # noqa: E402

import deepspeed_rs as ds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "..", "c", "ds_config.json")
DEFAULT_EPOCHS = 40
DEFAULT_MIN_ACCURACY = 95.0
HIDDEN = 64

#: (name, shape) of the parameters, in registration order (PyTorch's [out, in] weights).
PARAMS: List[Tuple[str, Tuple[int, ...]]] = [
    ("fc1.weight", (HIDDEN, 2)),
    ("fc1.bias", (HIDDEN,)),
    ("fc2.weight", (HIDDEN, HIDDEN)),
    ("fc2.bias", (HIDDEN,)),
    ("fc3.weight", (spiral_data.CLASSES, HIDDEN)),
    ("fc3.bias", (spiral_data.CLASSES,)),
]


def init_params(seed: int = spiral_data.SEED + 1) -> List[np.ndarray]:
    """He-normal weights (Xavier for the output layer), zero biases: the C demo's values."""
    rng = spiral_data.SplitMix64(seed)
    out = []
    for i, (_, shape) in enumerate(PARAMS):
        a = np.zeros(shape, np.float32)
        if len(shape) == 2:
            std = np.sqrt((1.0 if i == 4 else 2.0) / shape[1])
            flat = a.reshape(-1)
            for k in range(flat.size):
                flat[k] = np.float32(std * rng.normal())
        out.append(a)
    return out


def to_float32(a: np.ndarray) -> np.ndarray:
    """float32 values of a view: float32/float16 as they are, bfloat16 from its bits."""
    if a.dtype == np.uint16 or a.dtype.name == "bfloat16":
        return (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def accumulate(view: np.ndarray, g: np.ndarray) -> None:
    """view += g in the view's dtype (float32, or float16 under fp16, where a sum past the
    fp16 range becomes inf: the engine then skips the step and lowers the loss scale)."""
    if view.dtype == np.float32:
        view += g
    else:
        with np.errstate(over="ignore"):
            view[...] = (view.astype(np.float32) + g).astype(view.dtype)


def forward_backward(w: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray,
                     train: bool) -> Tuple[float, int, Optional[List[np.ndarray]]]:
    """Summed cross-entropy, correct predictions and (when ``train``) the gradients of the
    MEAN loss over the batch."""
    w1, b1, w2, b2, w3, b3 = w
    a1 = x @ w1.T + b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w2.T + b2
    h2 = np.maximum(a2, 0)
    z = h2 @ w3.T + b3
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp((z - zmax).astype(np.float64))
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(s[:, 0]) - (z - zmax)[np.arange(len(y)), y]))
    correct = int(np.sum(z.argmax(axis=1) == y))
    if not train:
        return loss, correct, None
    dz = e / s
    dz[np.arange(len(y)), y] -= 1.0
    dz = (dz / len(y)).astype(np.float32)
    g3, gb3 = dz.T @ h2, dz.sum(0)
    dh2 = (dz @ w3) * (a2 > 0)
    g2, gb2 = dh2.T @ h1, dh2.sum(0)
    dh1 = (dh2 @ w2) * (a1 > 0)
    g1, gb1 = dh1.T @ x, dh1.sum(0)
    return loss, correct, [g1, gb1, g2, gb2, g3, gb3]


def _fill_autos(config: str, value_for) -> Any:
    """The config (JSON text) with every "auto" replaced by ``value_for(path)``: a dict, or
    the text itself when it has none."""
    doc: Any = config
    for path in ds.config_auto_paths(config):
        doc = ds.config_fill_auto(doc, path, value_for(path))
    return doc


def train(config_path: str = DEFAULT_CONFIG, epochs: int = DEFAULT_EPOCHS, quiet: bool = False,
          accelerator: Optional[ds.Accelerator] = None, out=print) -> Dict[str, Any]:
    """Runs the demo; returns ``{"accuracy", "correct", "steps", "skipped", "seconds"}``."""
    x_train, y_train, x_test, y_test = spiral_data.make_dataset()
    out(f"dataset: spiral, {spiral_data.CLASSES} classes, {len(y_train)} training + "
        f"{len(y_test)} held-out points, fnv1a64 0x"
        f"{spiral_data.fnv1a64(x_train, y_train, x_test, y_test):016x}")
    with open(config_path, "r", encoding="utf-8") as f:
        text = f.read()

    def unknown(path: str) -> Any:
        raise SystemExit(f"train_mlp.py: the config has \"auto\" at {path}, which this demo "
                         "cannot fill (it fills scheduler.params.total_num_steps)")

    # Batch sizes from an engine on a copy with a placeholder step count (larger than any
    # warmup), then the real "auto" values.
    def placeholder(path: str) -> Any:
        return 1000000 if path.endswith("total_num_steps") else unknown(path)

    if accelerator is None:
        # The engine trains on host memory: where detection picks a device (CUDA, a device
        # plugin), use the cpu accelerator.
        accelerator = ds.Accelerator.current()
        if accelerator.device_type != 1:  # kDLCPU
            out(f"the default accelerator ({accelerator.name}) keeps memory on its device; "
                "the engine trains on host memory, so this demo uses the cpu accelerator")
            accelerator = ds.Accelerator("cpu")
    with ds.Engine(_fill_autos(text, placeholder), accelerator) as probe:
        tbs, mbs, gas = probe.batch_sizes
    steps_per_epoch = len(y_train) // (mbs * gas)
    total = steps_per_epoch * epochs
    config = _fill_autos(text, lambda p: total if p.endswith("total_num_steps") else unknown(p))

    engine = ds.Engine(config, accelerator)
    for (name, _), value in zip(PARAMS, init_params()):
        engine.register_param(name, value)
    engine.finalize()
    views = [engine.param(i) for i in range(len(PARAMS))]
    grads = [engine.grad(i) for i in range(len(PARAMS))]
    out(f"model: MLP 2-{HIDDEN}-{HIDDEN}-{spiral_data.CLASSES}, "
        f"{sum(v.size for v in views)} parameters, {views[0].dtype} weights, {grads[0].dtype} "
        f"gradients")
    out(f"training: {epochs} epochs x {steps_per_epoch} optimizer steps (batch {tbs} = micro "
        f"{mbs} x {gas} accumulation steps) from {config_path}")

    order = np.arange(len(y_train))
    shuffle = spiral_data.SplitMix64(spiral_data.SEED + 2)
    rec = None
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for i in range(len(order) - 1, 0, -1):  # Fisher-Yates, as the C demo
            j = shuffle.next_u64() % (i + 1)
            order[i], order[j] = order[j], order[i]
        epoch_loss, correct, skipped = 0.0, 0, 0
        for m in range(steps_per_epoch * gas):
            idx = order[m * mbs:(m + 1) * mbs]
            w = [to_float32(v) for v in views]
            scale = engine.loss_scale
            loss, c, g = forward_backward(w, x_train[idx], y_train[idx], train=True)
            for view, grad in zip(grads, g):  # type: ignore[arg-type]
                accumulate(view, grad * np.float32(scale))
            engine.report_loss(loss / mbs)
            rec = engine.step()
            skipped += rec.boundary and rec.overflow
            epoch_loss += loss / mbs
            correct += c
        if not quiet or epoch == epochs:
            w = [to_float32(v) for v in views]
            tl, tc, _ = forward_backward(w, x_test, y_test, train=False)
            out(f"epoch {epoch:3d}/{epochs}: step {rec.global_step:5d}, loss "
                f"{epoch_loss / (steps_per_epoch * gas):.4f}, train acc "
                f"{100.0 * correct / (steps_per_epoch * gas * mbs):5.1f}%, held-out loss "
                f"{tl / len(y_test):.4f} acc {100.0 * tc / len(y_test):5.1f}%, lr {rec.lr:.3e}, "
                f"loss scale {rec.loss_scale:g}" + (" (overflow steps skipped)" if skipped else ""))
    seconds = time.perf_counter() - t0
    w = [to_float32(v) for v in views]
    _, test_correct, _ = forward_backward(w, x_test, y_test, train=False)
    acc = 100.0 * test_correct / len(y_test)
    assert rec is not None
    out(f"trained {rec.global_step} optimizer steps ({rec.skipped_steps} skipped) in "
        f"{seconds:.2f} s")
    out(f"held-out accuracy: {acc:.1f}% ({test_correct}/{len(y_test)})")
    result = {"accuracy": acc, "correct": test_correct, "steps": rec.global_step,
              "skipped": rec.skipped_steps, "seconds": seconds}
    del views, grads
    engine.close()
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="a ds_config file")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--min-accuracy", type=float, default=DEFAULT_MIN_ACCURACY,
                        help="exit with status 1 below this held-out accuracy (percent)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines, no engine INFO lines")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs needs a positive integer")
    if not args.quiet and "DSRS_LOG" not in os.environ:
        ds.set_log_level("info")  # the engine's progress lines (steps_per_print)
    result = train(args.config, args.epochs, args.quiet)
    if result["accuracy"] < args.min_accuracy:
        print(f"train_mlp.py: held-out accuracy {result['accuracy']:.1f}% is below "
              f"--min-accuracy {args.min_accuracy:.1f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
