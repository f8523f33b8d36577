"""Optimizer steps on numpy arrays, in place: Adam/AdamW, Adagrad, Lion and LAMB
(``dsrs_adam_step``, ``dsrs_adagrad_step``, ``dsrs_lion_step``, ``dsrs_lamb_step`` of the C
ABI).

>>> import numpy as np, deepspeed_rs as ds
>>> p = np.random.rand(1000).astype(np.float32)
>>> g = np.random.rand(1000).astype(np.float32)
>>> m, v = np.zeros_like(p), np.zeros_like(p)
>>> ds.adam_step(p, g, m, v, lr=1e-3, step=1)     # p, m and v are updated in place

The arrays are never copied: the library reads and writes their memory (the calls release
the GIL while they run). Host arrays run the CPU ops (``cpu_adam``, ``cpu_adagrad``,
``cpu_lion``, built on first use and cached, see :mod:`deepspeed_rs.ops`); LAMB on host
arrays runs the library's pure-Rust implementation. The formulas and their exact float
operations are those of ``src/ops/optim/reference.rs`` and ``src/ops/optim/lamb.rs``.

Arrays
------
Every array must be a C-contiguous ``numpy.ndarray``; all arrays of one parameter have the
same number of elements (their shapes may differ). ``params`` is float32, float16 or
bfloat16; ``grads`` float32 or the parameters' dtype (float32 parameters also take float16
and bfloat16 gradients); the optimizer states are float32; ``param_copy`` (float32
parameters only) is float16 or bfloat16 and receives the updated parameters rounded to
nearest even (DeepSpeed's parameter copy for ZeRO-Offload).

numpy has no bfloat16: pass bfloat16 data as a ``uint16`` array of the raw bits together
with the marker, ``(array, "bfloat16")`` (``array.view(np.uint16)`` of any 2-byte array
works), or as an ``ml_dtypes.bfloat16`` array when ``ml_dtypes`` is installed. A bare
``uint16`` array is refused.

Several parameters are stepped in one call by passing lists (or tuples) of arrays, one
entry per parameter, for every array argument (``param_copy``: ``None``, or a list whose
entries may be ``None``). Every entry is checked before anything is written.

Errors
------
The library checks everything and raises the typed errors of :mod:`deepspeed_rs.errors`
with messages naming the entry and field, e.g. ``InvalidArgumentError: dsrs_adam_step:
tensors[0].exp_avg has 7 elements but tensors[0].params has 8``:
:class:`~deepspeed_rs.errors.InvalidConfigError` for hyper-parameters out of range
(``beta1 = 1``), :class:`~deepspeed_rs.errors.OutOfRangeError` for bad flags and
``backend``, :class:`~deepspeed_rs.errors.UnsupportedError` for dtypes,
:class:`~deepspeed_rs.errors.InvalidArgumentError` for lengths and overlapping arrays. The
binding itself raises :class:`~deepspeed_rs.errors.InvalidArgumentError` for arrays that
are not contiguous, are read-only or are not aligned to their element size (naming the
field the same way), and ``TypeError`` for arguments that are not arrays or numbers.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_float, c_int32, c_int64, c_size_t, c_void_p
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _arrays
from ._arrays import flag as _flag
from ._dlpack import HostTensor
from ._lib import DLTensor, i32_arg, lib
from .errors import InvalidArgumentError, OutOfRangeError, SymbolNotFoundError, check

__all__ = [
    "BACKENDS",
    "adagrad_step",
    "adam_step",
    "lamb_step",
    "lion_step",
]

#: ``backend=`` values: ``"auto"`` (the op's kernel; the pure-Rust reference, with one
#: warning, when the op cannot be built), ``"kernel"`` (the kernel only: a failed build is
#: an error) and ``"reference"`` (the pure-Rust reference, never builds anything). Integers
#: are passed to the library as they are.
BACKENDS: Dict[str, int] = {"auto": 0, "kernel": 1, "reference": 2}

# --------------------------------------------------------------------------------------
# The C structures (include/deepspeed_rs.h).


class _AdamConfig(Structure):
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
        ("backend", c_int32),
    ]


class _AdagradConfig(Structure):
    _fields_ = [
        ("lr", c_float),
        ("eps", c_float),
        ("weight_decay", c_float),
        ("grad_scale", c_float),
        ("num_threads", c_int32),
        ("backend", c_int32),
    ]


class _LionConfig(Structure):
    _fields_ = [
        ("lr", c_float),
        ("beta1", c_float),
        ("beta2", c_float),
        ("weight_decay", c_float),
        ("grad_scale", c_float),
        ("num_threads", c_int32),
        ("backend", c_int32),
    ]


class _LambConfig(Structure):
    _fields_ = [
        ("lr", c_float),
        ("beta1", c_float),
        ("beta2", c_float),
        ("eps", c_float),
        ("weight_decay", c_float),
        ("max_coeff", c_float),
        ("min_coeff", c_float),
        ("grad_scale", c_float),
        ("bias_correction", c_int32),
        ("eps_inside_sqrt", c_int32),
        ("step", c_int64),
        ("backend", c_int32),
        ("reserved", c_int32),
    ]


class _OptimTensors(Structure):
    _fields_ = [
        ("params", POINTER(DLTensor)),
        ("grads", POINTER(DLTensor)),
        ("exp_avg", POINTER(DLTensor)),
        ("exp_avg_sq", POINTER(DLTensor)),
        ("param_copy", POINTER(DLTensor)),
    ]


if ctypes.sizeof(c_void_p) == 8:  # the header's layouts on 64-bit targets
    assert ctypes.sizeof(_AdamConfig) == 56 and _AdamConfig.step.offset == 32
    assert ctypes.sizeof(_AdagradConfig) == 24
    assert ctypes.sizeof(_LionConfig) == 28
    assert ctypes.sizeof(_LambConfig) == 56 and _LambConfig.step.offset == 40
    assert ctypes.sizeof(_OptimTensors) == 40

_FUNCTIONS: Dict[str, Any] = {}


def _function(name: str, config: type) -> Any:
    """The C function ``name`` with its prototype: a private function object (``lib[name]``
    is a new one each time), so the shared ``lib`` attributes are left alone; resolved on
    first use, so that importing the package works with a library that predates it."""
    fn = _FUNCTIONS.get(name)
    if fn is None:
        try:
            fn = lib[name]
        except AttributeError:
            raise SymbolNotFoundError(
                f"the loaded deepspeed_rs library does not export {name} (it predates the "
                "optimizer steps); point DSRS_LIBRARY at a current build"
            ) from None
        fn.restype = c_int32
        fn.argtypes = [POINTER(config), POINTER(_OptimTensors), c_size_t, c_void_p]
        _FUNCTIONS[name] = fn
    return fn


# --------------------------------------------------------------------------------------
# Arguments.

#: One array argument: a numpy array, or ``(uint16 array, "bfloat16")``.
ArrayArg = Any
#: An array argument, or a list of them (one per parameter).
ArraysArg = Union[ArrayArg, Sequence[ArrayArg]]


def _is_many(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and not _arrays.is_typed(value)


_HINTS = _arrays.Hints(
    contiguous="the step works in place on C-contiguous arrays",
    read_only="the step updates it in place",
    aligned="copy it into an aligned array (numpy.array(...))",
)


def _host(value: Any, what: str, writable: bool) -> Optional[HostTensor]:
    """A DLTensor view of an array argument (``None`` stays ``None``)."""
    if value is None:
        return None
    array, dtype = _arrays.split(value, what)
    _arrays.check_in_place(array, what, writable, _HINTS)
    _arrays.refuse_bare_uint16(array, dtype, what)
    return _arrays.host_view(array, dtype, what, writable)


def _as_lists(names: Sequence[str], values: Sequence[Any]) -> Tuple[int, List[List[Any]]]:
    """The array arguments as lists of one entry per parameter; ``values[0]`` (the
    parameters) decides between one parameter and a list of them."""
    many = _is_many(values[0])
    count = len(values[0]) if many else 1
    out: List[List[Any]] = []
    for name, value in zip(names, values):
        if value is None:
            out.append([None] * count)
        elif many:
            if not _is_many(value):
                raise TypeError(
                    f"{name} must be a list of {count} arrays, as params is a list, got "
                    f"{type(value).__name__}"
                )
            if len(value) != count:
                raise InvalidArgumentError(
                    f"{name} has {len(value)} entries but params has {count}"
                )
            out.append(list(value))
        else:
            if _is_many(value):
                raise TypeError(f"{name} is a list but params is a single array")
            out.append([value])
    return count, out


class _Call:
    """The ``dsrs_optim_tensors`` array of one call, and the views it points into."""

    def __init__(self, params: ArraysArg, grads: ArraysArg, exp_avg: Optional[ArraysArg],
                 exp_avg_sq: Optional[ArraysArg], param_copy: Optional[ArraysArg]) -> None:
        names = ("params", "grads", "exp_avg", "exp_avg_sq", "param_copy")
        count, lists = _as_lists(names, (params, grads, exp_avg, exp_avg_sq, param_copy))
        self.count = count
        self.views: List[HostTensor] = []
        self.entries = (_OptimTensors * max(count, 1))()
        for i in range(count):
            e = self.entries[i]
            for name, values in zip(names, lists):
                view = _host(values[i], f"tensors[{i}].{name}", writable=name != "grads")
                if view is None:
                    continue
                self.views.append(view)
                setattr(e, name, ctypes.pointer(view.tensor))

    def run(self, name: str, config: Structure) -> None:
        fn = _function(name, type(config))
        check(fn(ctypes.byref(config), self.entries if self.count else None, self.count, None))


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or hasattr(value, "__float__")):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    return float(value)


def _betas(betas: Any) -> Tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    return _float(b1, "betas[0]"), _float(b2, "betas[1]")


def _step(value: Any) -> int:
    v = _arrays.integer(value, "step")
    if not -(1 << 63) <= v < (1 << 63):
        raise OutOfRangeError(f"step must fit in int64, got {v}")
    return v


def _backend(value: Any) -> int:
    return _arrays.named(value, BACKENDS, "backend")


# --------------------------------------------------------------------------------------
# The steps.


def adam_step(params: ArraysArg, grads: ArraysArg, exp_avg: ArraysArg, exp_avg_sq: ArraysArg,
              *, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.0, adamw_mode: bool = True,
              bias_correction: bool = True, step: int, grad_scale: float = 1.0,
              num_threads: int = 0, backend: Union[str, int] = "auto",
              param_copy: Optional[ArraysArg] = None) -> None:
    """One Adam / AdamW step (DeepSpeed's ``DeepSpeedCPUAdam``), in place.

    Per element, in float32 (``p`` the parameter, ``m``/``v`` the moments)::

        g = grad * (1 / grad_scale)
        if weight_decay > 0 and not adamw_mode:  g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + ((1 - beta2) * g) * g
        denom = sqrt(v) * bc2 + eps
        if weight_decay > 0 and adamw_mode:      p = p + (-lr * weight_decay) * p
        p = p + (-lr / bc1) * (m / denom)

    with ``bc1 = 1 - beta1**step`` and ``bc2 = 1 / sqrt(1 - beta2**step)`` computed in
    double and rounded to float (both 1 without ``bias_correction``).

    Args:
        params: the parameters (float32, float16 or bfloat16), updated in place; or a list
            of them (then every other array argument is a list of the same length).
        grads: the gradients (float32 or the parameters' dtype; float16/bfloat16 with
            float32 parameters), read only.
        exp_avg, exp_avg_sq: the float32 moments, updated in place.
        lr, betas, eps, weight_decay: the hyper-parameters (``lr`` finite >= 0, betas in
            [0, 1), ``eps`` > 0, ``weight_decay`` >= 0).
        adamw_mode: decoupled weight decay (AdamW) when true, L2 added to the gradient when
            false.
        bias_correction: divide the moments by ``1 - beta**step``.
        step: the step being taken, counted from 1 (keyword-only, required).
        grad_scale: the gradients are divided by it (the loss scale times the accumulation
            steps); 1 for none.
        num_threads: OpenMP threads of the kernel (0: the OpenMP default).
        backend: ``"auto"``, ``"kernel"`` or ``"reference"`` (see :data:`BACKENDS`).
        param_copy: ``None``, or a float16/bfloat16 array (float32 parameters only) that
            receives the updated parameters rounded to nearest even.

    Raises the typed errors described in the module docstring; nothing is written then.
    """
    b1, b2 = _betas(betas)
    cfg = _AdamConfig(
        lr=_float(lr, "lr"), beta1=b1, beta2=b2, eps=_float(eps, "eps"),
        weight_decay=_float(weight_decay, "weight_decay"),
        adamw_mode=_flag(adamw_mode, "adamw_mode"),
        bias_correction=_flag(bias_correction, "bias_correction"), step=_step(step),
        grad_scale=_float(grad_scale, "grad_scale"),
        num_threads=i32_arg(num_threads, "num_threads"), backend=_backend(backend),
    )
    _Call(params, grads, exp_avg, exp_avg_sq, param_copy).run("dsrs_adam_step", cfg)


def adagrad_step(params: ArraysArg, grads: ArraysArg, exp_avg_sq: ArraysArg, *,
                 lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0,
                 grad_scale: float = 1.0, num_threads: int = 0,
                 backend: Union[str, int] = "auto",
                 param_copy: Optional[ArraysArg] = None) -> None:
    """One Adagrad step (DeepSpeed's ``DeepSpeedCPUAdagrad``), in place.

    Per element, in float32 (``v`` the sum of squares)::

        g0 = grad * (1 / grad_scale)
        g  = g0 + weight_decay * p   if weight_decay > 0 else g0
        v  = v + g * g
        p  = p + (-lr) * (g0 / (sqrt(v) + eps))

    As in DeepSpeed, the weight-decayed gradient feeds the accumulator and the raw gradient
    the step. Host arrays only.

    Args:
        params: the parameters (float32, float16 or bfloat16), updated in place; or a list.
        grads: the gradients (float32 or the parameters' dtype), read only.
        exp_avg_sq: the float32 sum of squares, updated in place.
        lr, eps, weight_decay: the hyper-parameters (``lr`` >= 0, ``eps`` > 0,
            ``weight_decay`` >= 0).
        grad_scale: the gradients are divided by it; 1 for none.
        num_threads: OpenMP threads of the kernel (0: the OpenMP default).
        backend: ``"auto"``, ``"kernel"`` or ``"reference"``.
        param_copy: ``None``, or a float16/bfloat16 copy of updated float32 parameters.

    Raises the typed errors described in the module docstring; nothing is written then.
    """
    cfg = _AdagradConfig(
        lr=_float(lr, "lr"), eps=_float(eps, "eps"),
        weight_decay=_float(weight_decay, "weight_decay"),
        grad_scale=_float(grad_scale, "grad_scale"),
        num_threads=i32_arg(num_threads, "num_threads"), backend=_backend(backend),
    )
    _Call(params, grads, None, exp_avg_sq, param_copy).run("dsrs_adagrad_step", cfg)


def lion_step(params: ArraysArg, grads: ArraysArg, exp_avg: ArraysArg, *, lr: float = 1e-4,
              betas: Tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
              grad_scale: float = 1.0, num_threads: int = 0,
              backend: Union[str, int] = "auto",
              param_copy: Optional[ArraysArg] = None) -> None:
    """One Lion step (DeepSpeed's ``DeepSpeedCPULion``), in place.

    Per element, in float32 (``m`` the momentum)::

        g = grad * (1 / grad_scale)
        c = beta1 * m + (1 - beta1) * g
        u = copysign(lr, c)                (a zero c steps by lr with its sign)
        p = p * (1 - lr * weight_decay) - u   if weight_decay > 0 else p - u
        m = beta2 * m + (1 - beta2) * g

    Args:
        params: the parameters (float32, float16 or bfloat16), updated in place; or a list.
        grads: the gradients (float32 or the parameters' dtype), read only.
        exp_avg: the float32 momentum, updated in place.
        lr, betas, weight_decay: the hyper-parameters (``lr`` >= 0, betas in [0, 1],
            ``weight_decay`` >= 0, decoupled).
        grad_scale: the gradients are divided by it; 1 for none.
        num_threads: OpenMP threads of the kernel (0: the OpenMP default).
        backend: ``"auto"``, ``"kernel"`` or ``"reference"``.
        param_copy: ``None``, or a float16/bfloat16 copy of updated float32 parameters.

    Raises the typed errors described in the module docstring; nothing is written then.
    """
    b1, b2 = _betas(betas)
    cfg = _LionConfig(
        lr=_float(lr, "lr"), beta1=b1, beta2=b2,
        weight_decay=_float(weight_decay, "weight_decay"),
        grad_scale=_float(grad_scale, "grad_scale"),
        num_threads=i32_arg(num_threads, "num_threads"), backend=_backend(backend),
    )
    _Call(params, grads, exp_avg, None, param_copy).run("dsrs_lion_step", cfg)


def lamb_step(params: ArraysArg, grads: ArraysArg, exp_avg: ArraysArg, exp_avg_sq: ArraysArg,
              *, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.0, bias_correction: bool = True,
              step: int, max_coeff: float = 10.0, min_coeff: float = 0.01,
              eps_inside_sqrt: bool = False, grad_scale: float = 1.0,
              backend: Union[str, int] = "auto") -> None:
    """One LAMB step (DeepSpeed's ``FusedLamb``), in place, with one trust ratio per
    parameter (per entry of a list).

    Per tensor, in float32 (sums of squares in float64, element order)::

        g = grad * (1 / grad_scale)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + ((1 - beta2) * g) * g
        denom = sqrt(v + eps) if eps_inside_sqrt else sqrt(v) + eps
        u = m / denom  (+ weight_decay * p when weight_decay > 0)
        ratio = ||p|| / ||u|| clamped to [min_coeff, max_coeff]; 1 when either norm is 0
        p = p - (step_size * ratio) * u

    with ``step_size = lr * sqrt(1 - beta2**step) / (1 - beta1**step)`` (``lr`` without
    ``bias_correction``) computed in double and rounded to float. Host arrays run the
    library's pure-Rust implementation (``backend`` ``"auto"`` or ``"reference"``;
    ``"kernel"`` is refused there). There is no ``param_copy``.

    Args:
        params: the parameters (float32, float16 or bfloat16), updated in place; or a list.
        grads: the gradients (float32 or the parameters' dtype), read only.
        exp_avg, exp_avg_sq: the float32 moments, updated in place.
        lr, betas, eps, weight_decay: the hyper-parameters.
        bias_correction: fold the bias corrections into the step size.
        step: the step being taken, counted from 1 (keyword-only, required).
        max_coeff, min_coeff: the clamp of the trust ratio (DeepSpeed's 10 and 0.01).
        eps_inside_sqrt: add ``eps`` to ``v`` under the square root.
        grad_scale: the gradients are divided by it; 1 for none.
        backend: ``"auto"`` or ``"reference"`` for host arrays.

    Raises the typed errors described in the module docstring; nothing is written then.
    """
    b1, b2 = _betas(betas)
    cfg = _LambConfig(
        lr=_float(lr, "lr"), beta1=b1, beta2=b2, eps=_float(eps, "eps"),
        weight_decay=_float(weight_decay, "weight_decay"),
        max_coeff=_float(max_coeff, "max_coeff"), min_coeff=_float(min_coeff, "min_coeff"),
        grad_scale=_float(grad_scale, "grad_scale"),
        bias_correction=_flag(bias_correction, "bias_correction"),
        eps_inside_sqrt=_flag(eps_inside_sqrt, "eps_inside_sqrt"), step=_step(step),
        backend=_backend(backend), reserved=0,
    )
    _Call(params, grads, exp_avg, exp_avg_sq, None).run("dsrs_lamb_step", cfg)
