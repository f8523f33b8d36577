"""The training engine through the binding (deepspeed_rs.engine: Engine, StepRecord, the
config helpers).

References are numpy float64 statements of DeepSpeed's optimizer formulas, computed with the
hyper-parameters rounded to float32 (DeepSpeed's CPU kernels take them as floats), one step
at a time over the same gradients the engine sees. Tolerances are a few float32 roundings of
the magnitudes involved (for Adam's first moment: of its terms, which may cancel).

The demo (examples/python/train_mlp.py) is run here too: it must reach the held-out
accuracy stated in examples/README.md, on the dataset whose hash the C demo prints.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import deepspeed_rs as ds
from bits_ref import from_bf16, raises, to_bf16

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: The FNV-1a hash of the demo dataset (examples/README.md; the C demo's --dataset-hash).
DATASET_HASH = 0x6CCB97A1D4583629
#: The held-out accuracy the demo must reach (examples/README.md).
DEMO_MIN_ACCURACY = 95.0

f32 = lambda x: float(np.float32(x))  # noqa: E731 - a hyper-parameter as the kernels see it


def config(optimizer="AdamW", params=None, *, tbs=1, mbs=None, **extra):
    cfg = {"train_batch_size": tbs, "optimizer": {"type": optimizer, "params": params or {"lr": 1e-3}}}
    if mbs is not None:
        cfg["train_micro_batch_size_per_gpu"] = mbs
    cfg.update(extra)
    return cfg


def make_engine(cfg, *arrays, trainable=True, accelerator=None):
    e = ds.Engine(cfg, accelerator)
    for i, a in enumerate(arrays):
        e.register_param(f"p{i}", a, trainable)
    e.finalize()
    return e


# --------------------------------------------------------------------------------------
# Lifecycle, views, errors.


def test_lifecycle_and_views(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float64)
    c = np.array(2.5, np.float32)  # a scalar parameter
    e = ds.Engine(config(params={"lr": 0.5, "weight_decay": 0.5}))
    assert e.register_param("layer.weight", a) == 0
    assert e.register_param("layer.bias", b) == 1
    assert e.register_param("scale", c, trainable=False) == 2
    assert e.num_params == len(e) == 3
    assert e.param_names == ["layer.weight", "layer.bias", "scale"]
    assert e.param_index("layer.bias") == 1 and e.param_name(2) == "scale"
    with raises(ds.InvalidStateError, "finalize"):
        e.param(0)
    e.finalize()
    w, g = e.param("layer.weight"), e.grad(0)
    assert w.dtype == np.float32 and w.shape == (3, 4) and w.flags.writeable
    assert g.dtype == np.float32 and g.shape == (3, 4) and not g.any()
    np.testing.assert_array_equal(w, a)
    bias = e.param(1)
    assert bias.dtype == np.float32  # trainable: stored in the training precision
    np.testing.assert_array_equal(bias, b.astype(np.float32))
    frozen = e.param("scale")
    assert frozen.shape == () and frozen.dtype == np.float32 and float(frozen) == 2.5
    m = e.optimizer_state("layer.weight", "exp_avg")
    assert m.dtype == np.float32 and m.shape == (3, 4) and not m.flags.writeable
    assert e.batch_sizes == ds.BatchSizes(1, 1, 1)
    assert e.loss_scale == 1.0 and e.lr == 0.5
    assert e.config["optimizer"]["type"] == "AdamW"
    assert isinstance(e.stats, dict)

    # Zero copy: a zero gradient makes AdamW's step the decay alone, from what the view holds.
    w[0, 0] = 8.0
    r = e.step()
    assert isinstance(r, ds.StepRecord) and r.boundary and r.applied and not r.overflow
    assert (r.global_step, r.micro_step, r.skipped_steps) == (1, 1, 0)
    assert w[0, 0] == 6.0  # 8 * (1 - 0.5 * 0.5), seen through the view taken before
    with pytest.raises(Exception):
        r.lr = 1.0  # frozen dataclass

    # Views outlive close(): the memory stays until the last view is gone.
    e.close()
    e.close()  # idempotent
    assert e.closed
    assert w[0, 0] == 6.0
    w[0, 1] = 1.0
    with raises(ds.StaleHandleError, "closed"):
        e.step()
    del w, g, bias, frozen, m
    gc.collect()


def test_views_keep_the_engine_alive(rng):
    e = make_engine(config(), np.ones(1000, np.float32))
    view = e.param(0)
    del e
    gc.collect()
    assert view.sum() == 1000.0  # still mapped
    view[:] = 2.0


def test_error_classes(rng, tmp_path):
    with raises(ds.InvalidConfigError, "optimizer.params.lr"):
        ds.Engine(config(params={"lr": -1}))
    with raises(ds.InvalidConfigError, "optimizer"):
        ds.Engine({"train_batch_size": 1})
    with raises(ds.IoError, "no_such_config.json"):
        ds.Engine(str(tmp_path / "no_such_config.json"))
    with raises(ds.IoError, "no_such_config.json"):
        ds.Engine(tmp_path / "no_such_config.json")
    with pytest.raises(TypeError):
        ds.Engine([1, 2])
    with pytest.raises(TypeError):
        ds.Engine(config(), accelerator="cpu")
    e = ds.Engine(config())
    x = np.zeros(4, np.float32)
    e.register_param("x", x)
    with raises(ds.InvalidArgumentError, "already registered"):
        e.register_param("x", x)
    with raises(ds.InvalidArgumentError, "int32"):
        e.register_param("ints", np.zeros(4, np.int32))
    with raises(ds.UnsupportedError, "uint16"):
        e.register_param("bits", np.zeros(4, np.uint16))  # bf16 bits need the marker
    with raises(ds.InvalidArgumentError, "contiguous"):
        e.register_param("strided", np.zeros(8, np.float32)[::2])
    e.register_param("frozen", x, trainable=False)
    with raises(ds.InvalidStateError, "finalize"):
        e.step()
    e.finalize()
    with raises(ds.InvalidStateError, "finalize"):
        e.register_param("late", x)
    with raises(ds.InvalidArgumentError, "nope"):
        e.param("nope")
    with raises(ds.OutOfRangeError, "out of range"):
        e.param(7)
    with pytest.raises(ds.OutOfRangeError):
        e.param(-1)  # refused by the binding (size_t)
    with raises(ds.InvalidArgumentError, "frozen"):
        e.grad("frozen")
    with raises(ds.InvalidArgumentError, "bogus"):
        e.optimizer_state("x", "bogus")
    with raises(ds.InvalidArgumentError, "master"):
        e.optimizer_state("x", "master")  # fp32 training keeps none
    with raises(ds.OutOfRangeError, "lr"):
        e.lr = -1.0
    with pytest.raises(TypeError):
        e.lr = "fast"
    e.close()
    with raises(ds.StaleHandleError):
        e.num_params


def test_step_stream_of_its_own_or_another_accelerator(cpu):
    e = make_engine(config(), np.ones(3, np.float32), accelerator=cpu)
    with cpu.stream() as mine, cpu.default_stream() as default:
        assert e.step(stream=mine).global_step == 1
        assert e.step(stream=default).global_step == 2
    with ds.Accelerator("cpu") as other, other.stream() as foreign:
        with raises(ds.InvalidArgumentError, "'stream'", "another accelerator"):
            e.step(stream=foreign)
    freed = cpu.stream()
    freed.close()
    with raises(ds.StaleHandleError, "closed"):
        e.step(stream=freed)
    r = e.step()  # the failed steps counted nothing
    assert r.global_step == 3 and r.micro_step == 3


def test_report_loss_nan_is_recorded_not_refused(tmp_path):
    """A NaN (or inf) loss is accepted, as DeepSpeed logs whatever loss the host has: its
    window's mean is NaN, and the next window starts afresh."""
    e = make_engine(config(tbs=2, mbs=1, csv_monitor={"enabled": True, "output_path": str(tmp_path),
                                                        "job_name": "nan"}),
                    np.ones(3, np.float32))
    e.report_loss(float("nan"))
    e.step()
    e.report_loss(float("inf"))
    e.step()
    for loss in (1.0, 2.0, 3.0, 5.0):
        e.report_loss(loss)
        assert e.step().applied is (loss in (2.0, 5.0))
    e.close()  # flushes the monitor
    csv = tmp_path / "nan" / "Train_Samples_train_loss.csv"
    rows = [line.split(",") for line in csv.read_text().split()[1:]]
    assert [int(step) for step, _ in rows] == [2, 4, 6]
    losses = [float(v) for _, v in rows]
    assert math.isnan(losses[0]) and losses[1:] == [1.5, 4.0]

def test_engine_from_files_and_text(tmp_path):
    text = '// comment\n{"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2,\n' \
           ' "optimizer": {"type": "SGD", "params": {"lr": 0.1,}},}\n'
    path = tmp_path / "ds_config.json"
    path.write_text(text)
    for source in (text, path, str(path), json.dumps(ds.config_check(text))):
        with ds.Engine(source, ds.Accelerator.current()) as e:
            assert e.batch_sizes == (4, 2, 2)
            assert e.lr == 0.1


# --------------------------------------------------------------------------------------
# Optimizers against float64 references.


def _adam_ref(adamw):
    def ref(p, g, st, t, h):
        lr, b1, b2, eps, wd = (f32(h[k]) for k in ("lr", "b1", "b2", "eps", "wd"))
        if not adamw and wd:
            g = g + wd * p
        st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
        st["mag"] = b1 * st.get("mag", 0.0) + (1 - b1) * np.abs(g)
        st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
        if adamw and wd:
            p = p - lr * wd * p
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        return p - lr * (st["m"] / bc1) / (np.sqrt(st["v"]) / math.sqrt(bc2) + eps)
    return ref


def _lion_ref(p, g, st, t, h):
    lr, b1, b2, wd = (f32(h[k]) for k in ("lr", "b1", "b2", "wd"))
    m = st.get("m", np.zeros_like(p))
    c = b1 * m + (1 - b1) * g
    st["c"] = c
    p = p * (1 - lr * wd) - lr * np.sign(c)
    st["m"] = b2 * m + (1 - b2) * g
    st["mag"] = b2 * np.abs(m) + (1 - b2) * np.abs(g)
    return p


def _adagrad_ref(p, g, st, t, h):
    lr, eps = f32(h["lr"]), f32(h["eps"])
    st["v"] = st.get("v", 0.0) + g * g
    return p - lr * g / (np.sqrt(st["v"]) + eps)


def _sgd_ref(nesterov):
    def ref(p, g, st, t, h):  # torch.optim.SGD
        lr, mom, wd = h["lr"], h["momentum"], h["wd"]
        g = g + wd * p
        buf = g if t == 1 else mom * st["buf"] + g
        st["mag"] = np.abs(g) if t == 1 else mom * st["mag"] + np.abs(g)
        st["buf"] = buf
        return p - lr * (g + mom * buf if nesterov else buf)
    return ref


OPTIMIZERS = {
    "AdamW": ("AdamW", {"lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.05},
              _adam_ref(True), {"exp_avg": "m", "exp_avg_sq": "v"}),
    "Adam-L2": ("Adam", {"lr": 2e-3, "betas": [0.8, 0.999], "eps": 1e-6, "weight_decay": 0.05,
                         "adam_w_mode": False},
                _adam_ref(False), {"exp_avg": "m", "exp_avg_sq": "v"}),
    "Lion": ("Lion", {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.1}, _lion_ref,
             {"exp_avg": "m"}),
    "Adagrad": ("Adagrad", {"lr": 0.05, "eps": 1e-10}, _adagrad_ref, {"exp_avg_sq": "v"}),
    "SGD-momentum": ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, _sgd_ref(False),
                     {"momentum_buffer": "buf"}),
    "SGD-nesterov": ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, _sgd_ref(True),
                     {"momentum_buffer": "buf"}),
}


def _hyper(params):
    b = params.get("betas", [0.9, 0.999])
    return {"lr": params["lr"], "b1": b[0], "b2": b[1], "eps": params.get("eps", 1e-8),
            "wd": params.get("weight_decay", 0.0), "momentum": params.get("momentum", 0.0)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_against_float64(name, rng):
    typ, params, ref, states = OPTIMIZERS[name]
    n = 1001
    p0 = rng.uniform(-1, 1, n).astype(np.float32)
    e = make_engine(config(typ, params), p0)
    p, g = e.param(0), e.grad(0)
    want, st, h = p0.astype(np.float64), {}, _hyper(params)
    for t in range(1, 4):
        grad = (rng.standard_normal(n) * np.where(np.arange(n) % 7 == 0, 1e-3, 1.0)).astype(np.float32)
        g += grad
        want = ref(want, grad.astype(np.float64), st, t, h)
        r = e.step()
        assert r.applied and r.global_step == t and not g.any()
        assert r.lr == params["lr"]
    if name == "Lion":
        # sign(c) is decided in float32; where c is within rounding of 0 it may differ.
        ok = np.abs(st["c"]) > 1e-6 * st["mag"]
        assert ok.mean() > 0.99
        np.testing.assert_allclose(p[ok], want[ok], rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-7 + 1e-4 * params["lr"])
    for state, key in states.items():
        got = e.optimizer_state(0, state)
        mag = np.maximum(np.abs(st[key]), st.get("mag", 0.0) if key in ("m", "buf") else 0.0)
        assert np.all(np.abs(got - st[key]) <= 1e-6 * mag + 1e-30), (state, got[:4], st[key][:4])


def test_lamb_sanity(rng):
    n = 512
    p0 = rng.uniform(-1, 1, n).astype(np.float32)
    e = make_engine(config("Lamb", {"lr": 1e-2, "weight_decay": 0.0}), p0)
    p, g = e.param(0), e.grad(0)
    grad = rng.standard_normal(n).astype(np.float32)
    g += grad
    r = e.step()
    assert r.applied and np.all(np.isfinite(p))
    np.testing.assert_allclose(e.optimizer_state(0, "exp_avg"), f32(1 - f32(0.9)) * grad.astype(np.float64),
                               rtol=1e-6)
    delta = p.astype(np.float64) - p0
    # The first step moves against the gradient's sign. DeepSpeed's FusedLamb scales the
    # uncorrected update u = m / (sqrt(v) + eps) by the trust ratio ||p|| / ||u|| (within
    # [min_coeff, max_coeff] = [0.01, 10]: here about 0.2) and by lr * sqrt(1 - b2) / (1 - b1),
    # so the step's norm is that step size times ||p||.
    assert np.all(np.sign(delta[grad != 0]) == -np.sign(grad[grad != 0]))
    b1, b2 = f32(0.9), f32(0.999)
    u = (1 - b1) * grad / (np.sqrt((1 - b2) * grad.astype(np.float64) ** 2) + f32(1e-8))
    trust = np.linalg.norm(p0) / np.linalg.norm(u)
    assert 0.01 < trust < 10
    step_size = f32(1e-2) * math.sqrt(1 - b2) / (1 - b1)
    np.testing.assert_allclose(np.linalg.norm(delta), step_size * np.linalg.norm(p0), rtol=1e-4)


# --------------------------------------------------------------------------------------
# Accumulation, overflow, clipping.


def test_accumulation_equals_the_mean(rng):
    n = 300
    p0 = rng.uniform(-1, 1, n).astype(np.float32)
    opt = ("SGD", {"lr": 0.1, "momentum": 0.5})
    e4 = make_engine(config(*opt, tbs=16, mbs=4), p0)
    e1 = make_engine(config(*opt, tbs=4), p0)
    assert e4.batch_sizes.gradient_accumulation_steps == 4
    g4, g1 = e4.grad(0), e1.grad(0)
    for window in range(2):
        micro = rng.standard_normal((4, n)).astype(np.float32)
        for k in range(4):
            g4 += micro[k]
            r = e4.step()
            assert r.boundary == (k == 3) and r.applied == (k == 3)
            assert r.grad_norm == -1.0 if k < 3 else r.grad_norm > 0
            assert r.global_step == window + (k == 3)
        assert not g4.any()
        g1 += micro.astype(np.float64).mean(axis=0).astype(np.float32)
        e1.step()
    np.testing.assert_allclose(e4.param(0), e1.param(0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_overflow_skips_bit_identically(bad, rng):
    n = 200
    cfg = config("AdamW", {"lr": 1e-2, "weight_decay": 0.01}, tbs=2, mbs=1,
                 scheduler={"type": "WarmupLR", "params": {"warmup_max_lr": 1e-2,
                                                           "warmup_num_steps": 5}})
    e = make_engine(cfg, rng.uniform(-1, 1, n).astype(np.float32))
    p, g = e.param(0), e.grad(0)
    for _ in range(4):  # two clean windows: non-trivial state
        g += rng.standard_normal(n).astype(np.float32)
        e.step()
    before = [p.copy(), e.optimizer_state(0, "exp_avg").copy(), e.optimizer_state(0, "exp_avg_sq").copy()]
    lr, stats = e.lr, e.stats
    g += rng.standard_normal(n).astype(np.float32)
    e.step()
    g += rng.standard_normal(n).astype(np.float32)
    g[17] = bad
    r = e.step()
    assert r.boundary and r.overflow and not r.applied and math.isnan(r.grad_norm)
    assert (r.global_step, r.skipped_steps) == (3, 1)
    after = [p, e.optimizer_state(0, "exp_avg"), e.optimizer_state(0, "exp_avg_sq")]
    for x, y in zip(before, after):
        assert x.tobytes() == y.tobytes()
    assert e.lr == lr and not g.any()
    assert e.stats["lr_scheduler"] == stats["lr_scheduler"]
    g += 1.0
    e.step()
    r = e.step()
    assert r.applied and not r.overflow and r.skipped_steps == 1 and r.global_step == 4


@pytest.mark.parametrize("magnitude", [0.01, 1.0])
def test_clipping_against_float64(magnitude, rng):
    shapes = [(40, 7), (13,)]
    inits = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    e = make_engine(config("SGD", {"lr": 1.0}, tbs=2, mbs=1, gradient_clipping=0.5), *inits)
    grads = [e.grad(i) for i in range(2)]
    mean = [np.zeros(s) for s in shapes]
    for _ in range(2):
        for i, s in enumerate(shapes):
            x = (magnitude * rng.standard_normal(s)).astype(np.float32)
            grads[i] += x
            mean[i] += x / 2.0
        r = e.step()
    norm = math.sqrt(sum(float(np.sum(m * m)) for m in mean))
    coef = min(1.0, 0.5 / (norm + 1e-6))
    assert (coef < 1.0) == (magnitude == 1.0)
    assert r.grad_norm == pytest.approx(norm, rel=1e-6)
    for i in range(2):
        np.testing.assert_allclose(e.param(i), inits[i] - coef * mean[i], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------
# Mixed precision.


def _bf16_values(view):
    return from_bf16(view.view(np.uint16))


def test_bf16_training_tracks_fp32(rng):
    n = 500
    p0 = rng.uniform(-1, 1, n).astype(np.float32)
    opt = {"lr": 1e-2, "weight_decay": 0.01}
    # As in DeepSpeed (the module is cast to bf16 before the optimizer copies it), the fp32
    # master weights start from the bf16-rounded values.
    ref = make_engine(config("AdamW", opt), from_bf16(to_bf16(p0)))
    e = make_engine(config("AdamW", opt, bf16={"enabled": True}), p0)
    view = e.param(0)
    assert view.dtype in (np.uint16,) or view.dtype.name == "bfloat16"
    assert e.grad(0).dtype == np.float32 and e.loss_scale == 1.0
    np.testing.assert_array_equal(view.view(np.uint16), to_bf16(p0))
    for _ in range(5):
        grad = rng.standard_normal(n).astype(np.float32)
        ref.grad(0)[...] += grad
        e.grad(0)[...] += grad
        ref.step()
        e.step()
    master = e.optimizer_state(0, "master")
    assert master.dtype == np.float32
    np.testing.assert_allclose(master, ref.param(0), rtol=1e-6, atol=1e-7)
    # The compute copy is the master weights rounded to nearest even.
    np.testing.assert_array_equal(view.view(np.uint16), to_bf16(master))
    np.testing.assert_allclose(_bf16_values(view), ref.param(0), rtol=2 ** -7, atol=1e-6)


def test_fp16_training_and_loss_scale(rng):
    n = 300
    p0 = rng.uniform(-1, 1, n).astype(np.float32)
    opt = {"lr": 1e-2}
    ref = make_engine(config("AdamW", opt), p0.astype(np.float16).astype(np.float32))
    e = make_engine(config("AdamW", opt, fp16={"enabled": True, "initial_scale_power": 10,
                                                  "hysteresis": 2, "min_loss_scale": 128}), p0)
    view, grad_view = e.param(0), e.grad(0)
    assert view.dtype == np.float16 and grad_view.dtype == np.float16
    assert e.loss_scale == 1024.0
    for _ in range(4):
        grad = (0.1 * rng.standard_normal(n)).astype(np.float32)
        ref.grad(0)[...] += grad
        grad_view += (grad * e.loss_scale).astype(np.float16)
        ref.step()
        r = e.step()
        assert r.applied and r.loss_scale == 1024.0
    master = e.optimizer_state(0, "master")
    np.testing.assert_allclose(master, ref.param(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(view, master.astype(np.float16))
    # Overflows: hysteresis 2 keeps the scale once, then halves it, down to the minimum.
    scales = []
    for _ in range(3):
        grad_view[5] = np.float16(np.inf)
        r = e.step()
        assert r.overflow and not r.applied
        scales.append(e.loss_scale)
    assert scales == [1024.0, 512.0, 256.0]
    e.step()  # a clean step in between does not matter for the minimum
    grad_view[0] = np.float16(np.nan)
    r = e.step()
    assert r.overflow and e.loss_scale == 128.0
    grad_view[0] = np.float16(np.nan)
    with raises(ds.InvalidStateError, "Current loss scale already at minimum"):
        e.step()


# --------------------------------------------------------------------------------------
# Learning rate.


def _warmup_lr(t, lo, hi, n, kind):
    """DeepSpeed's WarmupLR at last_batch_iteration t (t < 0: warmup_min_lr)."""
    if t < 0:
        return lo
    n = max(2, n)
    if t >= n:
        return hi
    gamma = (1.0 / math.log(n)) * math.log(t + 1) if kind == "log" else t / n
    return lo + (hi - lo) * gamma


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_warmup_lr_sequence(kind):
    lo, hi, n = 1e-4, 1e-2, 6
    cfg = config("SGD", {"lr": 0.5}, scheduler={"type": "WarmupLR", "params": {
        "warmup_min_lr": lo, "warmup_max_lr": hi, "warmup_num_steps": n, "warmup_type": kind}})
    e = make_engine(cfg, np.zeros(4, np.float32))
    got = []
    for _ in range(10):
        e.grad(0)[...] += 1.0
        got.append(e.step().lr)
    # DeepSpeed: the schedule writes lr(-1) = warmup_min_lr into the optimizer when it is
    # created (last_batch_iteration = -1) and steps after every applied optimizer step, so
    # optimizer step k (from 1) uses lr(k - 2).
    want = [_warmup_lr(k - 2, lo, hi, n, kind) for k in range(1, 11)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_set_lr_without_and_with_a_schedule():
    e = make_engine(config("SGD", {"lr": 0.5}), np.ones(2, np.float32))
    e.lr = 0.25
    assert e.lr == 0.25
    e.grad(0)[...] += 1.0
    r = e.step()
    assert r.lr == 0.25 and np.all(e.param(0) == 0.75)
    assert e.lr == 0.25  # stays without a scheduler


# --------------------------------------------------------------------------------------
# Config helpers.


def test_config_helpers(tmp_path):
    doc = ('{"train_batch_size": 64, "train_micro_batch_size_per_gpu": 8, "optimizer": {"type": '
           '"AdamW", "params": {"lr": "auto", "betas": ["auto", 0.999]}}, "scheduler": {"type": '
           '"WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_num_steps": 10}}}')
    assert sorted(ds.config_auto_paths(doc)) == ["optimizer.params.betas[0]", "optimizer.params.lr",
                                                 "scheduler.params.total_num_steps"]
    filled = ds.config_fill_auto(doc, "optimizer.params.lr", 1e-3)
    assert filled["optimizer"]["params"]["lr"] == 1e-3
    filled = ds.config_fill_auto(filled, "optimizer.params.betas[0]", 0.9)
    filled = ds.config_fill_auto(filled, "scheduler.params.total_num_steps", 100)
    assert ds.config_auto_paths(filled) == [] and ds.config.auto_paths(filled) == []
    resolved = ds.config_check(filled, world_size=4)
    assert resolved["gradient_accumulation_steps"] == 2 and resolved["train_batch_size"] == 64
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(filled))
    assert ds.config_check(path)["gradient_accumulation_steps"] == 8
    assert ds.config_check(str(path)) == ds.config.check(filled)
    with raises(ds.InvalidConfigError, "optimizer.params.lr", "auto"):
        ds.Engine(doc)
    with raises(ds.InvalidConfigError, "not \"auto\""):
        ds.config_fill_auto(filled, "optimizer.params.lr", 0.1)
    with raises(ds.InvalidJsonError):
        ds.config_fill_auto(doc, "optimizer.params.lr", float("nan"))  # NaN is not JSON
    # Every error at once, one "path: message" per line.
    with raises(ds.InvalidConfigError) as info:
        ds.config_check({"train_batch_size": "many", "gradient_clipping": -1,
                         "optimizer": {"type": "AdamW", "params": {"lr": -0.5}}})
    lines = info.value.message.split("\n")
    assert len(lines) >= 3
    for needle in ("train_batch_size", "gradient_clipping", "optimizer.params.lr"):
        assert any(needle in line for line in lines), (needle, lines)


def test_unparsable_config_is_invalid_json():
    # include/deepspeed_rs.h: dsrs_config_check gives DSRS_STATUS_INVALID_JSON for
    # unparsable text.
    with raises(ds.InvalidJsonError):
        ds.config_check('{"train_batch_size": 8,,}')
    with raises(ds.InvalidJsonError):
        ds.Engine('{"train_batch_size": ')


# --------------------------------------------------------------------------------------
# The demo.


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / "python" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_dataset_is_the_c_one():
    spiral = _load_example("spiral_data")
    xt, yt, xv, yv = spiral.make_dataset()
    assert xt.shape == (3000, 2) and xv.shape == (1000, 2) and xt.dtype == np.float32
    assert np.bincount(yt).tolist() == [1000, 1000, 1000]
    assert spiral.fnv1a64(xt, yt, xv, yv) == DATASET_HASH


def test_demo_trains_to_the_stated_accuracy():
    demo = _load_example("train_mlp")
    lines = []
    result = demo.train(str(EXAMPLES / "c" / "ds_config.json"), epochs=40, quiet=True,
                        out=lines.append)
    assert f"fnv1a64 0x{DATASET_HASH:016x}" in lines[0]
    assert result["accuracy"] >= DEMO_MIN_ACCURACY, lines
    assert result["steps"] == 40 * 46 and result["skipped"] == 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_demo_mixed_precision_configs_train(precision):
    demo = _load_example("train_mlp")
    result = demo.train(str(EXAMPLES / "c" / f"ds_config_{precision}.json"), epochs=40, quiet=True,
                        out=lambda *_: None)
    assert result["accuracy"] >= DEMO_MIN_ACCURACY
