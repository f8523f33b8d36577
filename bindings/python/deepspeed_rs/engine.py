"""The training engine (``dsrs_engine_*`` of the C ABI): DeepSpeed's ``deepspeed.initialize``
for a host that computes its own gradients.

>>> import numpy as np, deepspeed_rs as ds
>>> cfg = {"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
>>> with ds.Engine(cfg) as engine:                 # or a path to a ds_config file
...     engine.register_param("w", np.zeros((4, 3), np.float32))
...     engine.finalize()                          # flat buffers, optimizer state
...     w, g = engine.param("w"), engine.grad("w") # zero-copy numpy views
...     g += compute_gradient(w)                   # the host ACCUMULATES into the gradient
...     record = engine.step()                     # one micro step (a boundary: the update)

The engine owns the parameters (in the training precision: float32, or float16 / bfloat16
when the config enables ``fp16`` / ``bf16``, with float32 master weights), the gradient
accumulators, the optimizer and its state, the learning-rate schedule, gradient clipping,
accumulation and loss scaling, all configured by a DeepSpeed ``ds_config``. The host reads
the parameters through :meth:`Engine.param`, adds each micro batch's gradients (times
:attr:`Engine.loss_scale` with fp16) into :meth:`Engine.grad` and calls :meth:`Engine.step`
once per micro batch; at every ``gradient_accumulation_steps``-th call the engine averages,
unscales, checks for overflow (and skips the step), clips, steps the optimizer and the
schedule, and zeroes the gradients.

Views
-----
:meth:`~Engine.param`, :meth:`~Engine.grad` and :meth:`~Engine.optimizer_state` return numpy
arrays over the engine's own memory: nothing is copied, writes to a parameter view are seen
by the next step, and the optimizer's update is visible in views taken earlier. Parameter
and gradient views are writable; optimizer-state views are read-only. Every view keeps the
engine's memory alive: after :meth:`Engine.close` the engine cannot be used, but its memory
is released only when the last view is gone.

numpy has no bfloat16: bfloat16 views are ``ml_dtypes.bfloat16`` arrays when ``ml_dtypes``
is installed, else ``uint16`` arrays of the raw bits (``(bits.astype(np.uint32) << 16)
.view(np.float32)`` gives their values). :func:`register_param` takes bfloat16 data as an
``ml_dtypes.bfloat16`` array or an ``(uint16 array, "bfloat16")`` pair, as the optimizer
steps do (:mod:`deepspeed_rs.optim`).

Configuration helpers
---------------------
:func:`config_check` resolves a ds_config (batch-size arithmetic, defaults) or raises
:class:`~deepspeed_rs.errors.InvalidConfigError` listing every problem as ``path: message``,
one per line; :func:`config_auto_paths` lists the values that are ``"auto"`` and
:func:`config_fill_auto` replaces one (what Hugging Face's integration does before
DeepSpeed sees the config).

Errors
------
The library's typed errors (:mod:`deepspeed_rs.errors`): ``InvalidJsonError`` and
``InvalidConfigError`` for configs (the message names the path of the bad value),
``InvalidStateError`` for calls in the wrong phase (registering after :meth:`~Engine.finalize`,
views before it, a loss scale already at its minimum), ``InvalidArgumentError`` for unknown
or duplicate names, a frozen parameter's gradient or an unknown optimizer state,
``OutOfRangeError`` for an index past the end, ``StaleHandleError`` after ``close()``.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from ctypes import Structure, byref, c_double, c_int32, c_size_t, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

from . import _arrays
from ._dtypes import dtype_name
from ._handle import Handle
from ._lib import DLTensor, encode, lib, read_string, size_arg, u64_arg
from .accelerator import Accelerator, Stream, _stream_arg
from .errors import check

__all__ = [
    "BatchSizes",
    "Engine",
    "StepRecord",
    "config_auto_paths",
    "config_check",
    "config_fill_auto",
]

#: A ds_config: a dict, JSON text (a ``str`` or ``bytes`` starting with ``{`` or a comment),
#: or the path of a file (any other ``str``, or an ``os.PathLike``).
ConfigArg = Union[Dict[str, Any], str, bytes, "os.PathLike[str]"]

#: The optimizer states :meth:`Engine.optimizer_state` knows (which exist depends on the
#: optimizer: Adam/AdamW/LAMB have ``exp_avg`` and ``exp_avg_sq``, Adagrad ``exp_avg_sq``,
#: Lion ``exp_avg``, SGD with momentum ``momentum_buffer``; ``master`` is the float32
#: master copy of fp16/bf16 parameters).
OPTIMIZER_STATES = ("exp_avg", "exp_avg_sq", "master", "momentum_buffer")


class _StepRecord(Structure):
    """``dsrs_step_record`` (include/deepspeed_rs.h)."""

    _fields_ = [
        ("global_step", c_uint64),
        ("micro_step", c_uint64),
        ("skipped_steps", c_uint64),
        ("boundary", c_int32),
        ("applied", c_int32),
        ("overflow", c_int32),
        ("reserved", c_int32),
        ("loss_scale", c_double),
        ("lr", c_double),
        ("grad_norm", c_double),
    ]


assert ctypes.sizeof(_StepRecord) == 64 and _StepRecord.loss_scale.offset == 40


@dataclass(frozen=True)
class StepRecord:
    """What one :meth:`Engine.step` did (``dsrs_step_record``).

    Attributes:
        global_step: optimizer steps so far, applied and skipped (DeepSpeed's
            ``global_steps``), after this call.
        micro_step: micro steps (calls of ``step``) so far, after this call.
        skipped_steps: optimizer steps skipped so far (overflowing fp16 gradients).
        boundary: this call ended a gradient-accumulation window.
        applied: the optimizer step was applied (false off-boundary and when skipped).
        overflow: non-finite gradients were found; the step was skipped.
        loss_scale: the scale this window's gradients carried (1.0 without fp16).
        lr: the learning rate the step used (off-boundary: the current one).
        grad_norm: the global L2 norm of the averaged, unscaled gradients before clipping;
            NaN on overflow, -1.0 off-boundary.
    """

    global_step: int
    micro_step: int
    skipped_steps: int
    boundary: bool
    applied: bool
    overflow: bool
    loss_scale: float
    lr: float
    grad_norm: float

    @classmethod
    def _from_c(cls, r: _StepRecord) -> "StepRecord":
        return cls(int(r.global_step), int(r.micro_step), int(r.skipped_steps), bool(r.boundary),
                   bool(r.applied), bool(r.overflow), float(r.loss_scale), float(r.lr),
                   float(r.grad_norm))


class BatchSizes(NamedTuple):
    """The resolved batch sizes: ``train_batch_size = micro_batch_size *
    gradient_accumulation_steps * world_size``."""

    train_batch_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int


# --------------------------------------------------------------------------------------
# Arguments.


def _config_text(config: Any, what: str = "config") -> bytes:
    """JSON text of a config given as a dict or as text (not a path)."""
    if isinstance(config, dict):
        return json.dumps(config).encode("utf-8")
    if isinstance(config, (str, bytes)):
        return encode(config, what)  # type: ignore[return-value]
    raise TypeError(
        f"{what} must be a dict, JSON text or the path of a ds_config file, got "
        f"{type(config).__name__}"
    )


def _looks_like_json(text: str) -> bool:
    """Whether a string is a config document rather than a path: a JSON object, possibly
    after whitespace and comments (``//``, ``#``, ``/* */``)."""
    t = text.lstrip()
    return t.startswith(("{", "//", "#", "/*"))


def _config_source(config: Any, what: str = "config") -> Tuple[str, bytes]:
    """``("file", path)`` or ``("json", text)``: an ``os.PathLike``, or a ``str`` that is
    not a JSON object (after whitespace and comments), is a path; dicts, bytes and other
    strings are the config itself."""
    if isinstance(config, os.PathLike):
        return "file", encode(os.fspath(config), what)  # type: ignore[return-value]
    if isinstance(config, str) and not _looks_like_json(config):
        return "file", encode(config, what)  # type: ignore[return-value]
    return "json", _config_text(config, what)


def _config_json_for_helpers(config: Any) -> bytes:
    """The config functions take text: a path is read here (``IoError`` naming it when it
    cannot be)."""
    kind, value = _config_source(config)
    if kind == "file":
        path = value.decode("utf-8")
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            from .errors import IoError

            raise IoError(f"cannot read the ds_config {path!r}: {e.strerror or e}") from None
    return value


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:  # pragma: no cover - the library returns JSON
        from .errors import InternalError

        raise InternalError(f"{what} returned text that is not JSON ({e}): {text[:200]!r}") from None


# numpy views of the engine's memory --------------------------------------------------


def _bf16_dtype() -> Any:
    """``ml_dtypes.bfloat16`` when ml_dtypes is installed, else ``None``."""
    try:
        import ml_dtypes  # type: ignore[import-not-found]
    except ImportError:
        return None
    import numpy as np

    return np.dtype(ml_dtypes.bfloat16)


_TYPESTR = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "bfloat16": "<u2",
            "int8": "|i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "uint8": "|u1",
            "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "bool": "|b1"}


class _Owner:
    """Owns the engine handle; every numpy view references it, so the engine's memory
    outlives :meth:`Engine.close` until the last view is gone (then the handle is freed)."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle: Optional[int] = handle

    def free(self) -> int:
        h, self.handle = self.handle, None
        return int(lib.dsrs_engine_free(h)) if h else 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


class _Memory:
    """An ``__array_interface__`` over engine memory that keeps the engine alive."""

    def __init__(self, owner: _Owner, t: DLTensor, readonly: bool) -> None:
        self._owner = owner
        name = dtype_name(t.dtype)
        shape = tuple(int(t.shape[i]) for i in range(t.ndim))
        if t.strides:
            # The engine documents strides == NULL (compact row-major); refuse anything else
            # rather than misread it.
            strides = tuple(int(t.strides[i]) for i in range(t.ndim))
            from .errors import InternalError

            raise InternalError(f"the engine returned a strided view {strides}; expected NULL")
        ptr = (t.data or 0) + int(t.byte_offset)
        self.dtype_name = name
        self.__array_interface__ = {
            "version": 3,
            "shape": shape,
            "typestr": _TYPESTR[name],
            "data": (ptr, bool(readonly)),
            "strides": None,
        }


def _numpy_view(owner: _Owner, t: DLTensor, readonly: bool) -> Any:
    import numpy as np

    mem = _Memory(owner, t, readonly)
    a = np.asarray(mem)
    if mem.dtype_name == "bfloat16":
        bf = _bf16_dtype()
        if bf is not None:
            a = a.view(bf)
    return a


# --------------------------------------------------------------------------------------


class Engine(Handle):
    """A training engine configured by a DeepSpeed ds_config (``dsrs_engine``).

    Args:
        config: the ds_config: a dict, JSON text (comments and trailing commas allowed), or
            the path of a file (an ``os.PathLike``, or a ``str`` that is not a JSON object).
        accelerator: the :class:`~deepspeed_rs.Accelerator` to train on; ``None`` is the
            current accelerator (``DSRS_ACCELERATOR``, else detection).

    Raises :class:`~deepspeed_rs.errors.InvalidJsonError` /
    :class:`~deepspeed_rs.errors.InvalidConfigError` (naming the path of the bad value) for
    a bad config and :class:`~deepspeed_rs.errors.IoError` for an unreadable file.

    Lifecycle: :meth:`register_param` for every parameter, :meth:`finalize`, then per micro
    batch: accumulate gradients into :meth:`grad`, :meth:`report_loss`, :meth:`step`. The
    engine is a context manager; :meth:`close` frees it (see the module docstring for
    views that outlive it).
    """

    _FREE = "dsrs_engine_free"

    def __init__(self, config: ConfigArg, accelerator: Optional[Accelerator] = None) -> None:
        if accelerator is not None and not isinstance(accelerator, Accelerator):
            raise TypeError(
                "accelerator must be a deepspeed_rs.Accelerator or None, got "
                f"{type(accelerator).__name__}"
            )
        a = accelerator._h if accelerator is not None else None
        kind, value = _config_source(config)
        out = c_void_p()
        if kind == "file":
            check(lib.dsrs_engine_new_from_file(a, value, byref(out)))
        else:
            check(lib.dsrs_engine_new(a, value, byref(out)))
        super().__init__(out.value)
        self._owner: Optional[_Owner] = _Owner(out.value)  # type: ignore[arg-type]
        self._accelerator = accelerator

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Closes the engine; calling it again does nothing. The handle is freed now, or,
        while numpy views of its memory are alive, when the last of them is gone."""
        owner, self._owner = self._owner, None
        self._handle = None
        if owner is None:
            return
        # Our local and getrefcount's argument are the only references: no view holds it.
        if sys.getrefcount(owner) <= 2:
            check(owner.free())

    def __del__(self) -> None:
        self._handle = None
        self._owner = None  # the owner frees the handle once no view needs it

    def _own(self) -> _Owner:
        self._h  # StaleHandleError after close()
        assert self._owner is not None
        return self._owner

    def __repr__(self) -> str:
        if self.closed:
            return "<deepspeed_rs.Engine (closed)>"
        return f"<deepspeed_rs.Engine {self.num_params} params>"

    # -- parameters -------------------------------------------------------------------

    def register_param(self, name: str, array: Any, trainable: bool = True) -> int:
        """Registers a parameter with its initial value; returns its index.

        ``array`` is a C-contiguous numpy array of any float dtype (float16, bfloat16 as
        described in the module docstring, float32, float64) and any shape; it is copied.
        Trainable parameters are stored in the training precision, frozen ones
        (``trainable=False``) keep their dtype. Names are unique. Only before
        :meth:`finalize` (:class:`~deepspeed_rs.errors.InvalidStateError` after).
        """
        h = self._h
        arr, marker = _arrays.split(array, "array")
        _arrays.check_in_place(arr, "array", False, _arrays.Hints(
            contiguous="pass numpy.ascontiguousarray(array)",
            read_only="",
            aligned="copy it into an aligned array (numpy.array(...))",
        ))
        _arrays.refuse_bare_uint16(arr, marker, "array")
        view = _arrays.host_view(arr, marker, "array", writable=False)
        index = c_size_t()
        check(lib.dsrs_engine_register_param(h, encode(name, "name"), view.ref,
                                             int(_arrays.flag(trainable, "trainable")),
                                             byref(index)))
        return int(index.value)

    def finalize(self) -> None:
        """Ends registration: allocates the flat buffers, master weights and optimizer
        state. Views and steps need it."""
        check(lib.dsrs_engine_finalize(self._h))

    @property
    def num_params(self) -> int:
        """How many parameters are registered."""
        out = c_size_t()
        check(lib.dsrs_engine_num_params(self._h, byref(out)))
        return int(out.value)

    def __len__(self) -> int:
        return self.num_params

    def param_index(self, name: str) -> int:
        """The index of the parameter ``name`` (``InvalidArgumentError`` if unknown)."""
        out = c_size_t()
        check(lib.dsrs_engine_param_index(self._h, encode(name, "name"), byref(out)))
        return int(out.value)

    def param_name(self, index: int) -> str:
        """The name of the parameter at ``index``."""
        h, i = self._h, size_arg(index, "index")
        return read_string(lambda b, n, nd: lib.dsrs_engine_param_name(h, i, b, n, nd))

    @property
    def param_names(self) -> List[str]:
        """Every parameter's name, in registration (index) order."""
        return [self.param_name(i) for i in range(self.num_params)]

    def _index(self, which: Union[str, int]) -> int:
        if isinstance(which, str):
            return self.param_index(which)
        return size_arg(which, "index")

    def param(self, which: Union[str, int]) -> Any:
        """A writable zero-copy numpy view of a parameter (by name or index), in the compute
        dtype (float32, or float16 / bfloat16 with fp16 / bf16 training; frozen parameters:
        their own dtype). The optimizer's updates appear in it; what the host writes is
        what the next step starts from."""
        owner, i = self._own(), self._index(which)
        t = DLTensor()
        check(lib.dsrs_engine_param(owner.handle, i, byref(t)))
        return _numpy_view(owner, t, readonly=False)

    def grad(self, which: Union[str, int]) -> Any:
        """A writable zero-copy numpy view of a trainable parameter's gradient accumulator.

        ADD (``+=``) each micro batch's gradients into it, multiplied by
        :attr:`loss_scale` with fp16; the engine averages over the accumulation steps and
        zeroes it after each boundary. dtype: float32 for fp32 and bf16 training, float16
        for fp16 (or ``data_types.grad_accum_dtype``). A frozen parameter has none
        (:class:`~deepspeed_rs.errors.InvalidArgumentError`)."""
        owner, i = self._own(), self._index(which)
        t = DLTensor()
        check(lib.dsrs_engine_grad(owner.handle, i, byref(t)))
        return _numpy_view(owner, t, readonly=False)

    def optimizer_state(self, which: Union[str, int], state: str) -> Any:
        """A read-only float32 view of an optimizer state of a parameter: ``"exp_avg"``,
        ``"exp_avg_sq"``, ``"master"`` or ``"momentum_buffer"`` (see
        :data:`OPTIMIZER_STATES`)."""
        owner, i = self._own(), self._index(which)
        t = DLTensor()
        check(lib.dsrs_engine_optimizer_state(owner.handle, i, encode(state, "state"), byref(t)))
        return _numpy_view(owner, t, readonly=True)

    # -- training ---------------------------------------------------------------------

    def step(self, stream: Optional[Stream] = None) -> StepRecord:
        """One micro step. At a gradient-accumulation boundary: average the accumulated
        gradients, unscale, check for overflow (skipping the step), compute the norm, clip,
        step the optimizer and the LR schedule, copy to the compute dtype, zero the
        gradients. ``stream``: the stream to order the work on (``None``: current)."""
        h, s = self._h, _stream_arg(stream)
        rec = _StepRecord()
        check(lib.dsrs_engine_step(h, s, byref(rec)))
        return StepRecord._from_c(rec)

    @property
    def loss_scale(self) -> float:
        """The factor to multiply the loss (so the gradients) by before accumulating them
        (1.0 without fp16)."""
        out = c_double()
        check(lib.dsrs_engine_loss_scale(self._h, byref(out)))
        return float(out.value)

    @property
    def lr(self) -> float:
        """The learning rate of the next step; settable (a schedule overrides it at its next
        step)."""
        out = c_double()
        check(lib.dsrs_engine_get_lr(self._h, byref(out)))
        return float(out.value)

    @lr.setter
    def lr(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise TypeError(f"lr must be a number, got {type(value).__name__}")
        check(lib.dsrs_engine_set_lr(self._h, float(value)))

    def report_loss(self, loss: float) -> None:
        """Tells the engine a micro batch's (unscaled) loss, for its progress lines
        (``steps_per_print``) and monitors."""
        check(lib.dsrs_engine_report_loss(self._h, float(loss)))

    @property
    def batch_sizes(self) -> BatchSizes:
        """``(train_batch_size, micro_batch_size, gradient_accumulation_steps)``."""
        t, m, g = c_uint64(), c_uint64(), c_uint64()
        check(lib.dsrs_engine_batch_sizes(self._h, byref(t), byref(m), byref(g)))
        return BatchSizes(int(t.value), int(m.value), int(g.value))

    @property
    def config(self) -> Dict[str, Any]:
        """The resolved ds_config."""
        h = self._h
        return _loads(read_string(lambda b, n, nd: lib.dsrs_engine_config_json(h, b, n, nd)),
                      "dsrs_engine_config_json")

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters, the loss scaler's and LR schedule's state, timers (ms) and which
        optimizer implementation ran."""
        h = self._h
        return _loads(read_string(lambda b, n, nd: lib.dsrs_engine_stats_json(h, b, n, nd)),
                      "dsrs_engine_stats_json")


# --------------------------------------------------------------------------------------
# Configuration helpers.


def config_check(config: ConfigArg, world_size: int = 1) -> Dict[str, Any]:
    """The resolved ds_config for ``world_size`` ranks (batch-size arithmetic done, defaults
    filled). Raises :class:`~deepspeed_rs.errors.InvalidConfigError` whose message lists
    every problem as ``path: message``, one per line (``InvalidJsonError`` for text that
    does not parse)."""
    text = _config_json_for_helpers(config)
    ws = u64_arg(world_size, "world_size")
    return _loads(read_string(lambda b, n, nd: lib.dsrs_config_check(text, ws, b, n, nd)),
                  "dsrs_config_check")


def config_auto_paths(config: ConfigArg) -> List[str]:
    """The paths (``"scheduler.params.total_num_steps"``, ...) whose value is ``"auto"``."""
    text = _config_json_for_helpers(config)
    return list(_loads(read_string(lambda b, n, nd: lib.dsrs_config_auto_paths(text, b, n, nd)),
                       "dsrs_config_auto_paths"))


def config_fill_auto(config: ConfigArg, path: str, value: Any) -> Dict[str, Any]:
    """The config with the ``"auto"`` at ``path`` replaced by ``value`` (any JSON-able
    Python value). A path that does not hold ``"auto"`` is an error."""
    text = _config_json_for_helpers(config)
    p = encode(path, "path")
    v = json.dumps(value).encode("utf-8")
    out = read_string(lambda b, n, nd: lib.dsrs_config_fill_auto(text, p, v, b, n, nd))
    return _loads(out, "dsrs_config_fill_auto")

