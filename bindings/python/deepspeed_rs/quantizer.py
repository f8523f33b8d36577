"""Group-wise int8 / packed int4 quantization of numpy arrays (``dsrs_quantize``,
``dsrs_dequantize`` and ``dsrs_quantize_sizes`` of the C ABI; ``docs/quantizer.md``).

>>> import numpy as np, deepspeed_rs as ds
>>> x = np.random.randn(10_000).astype(np.float32)
>>> q, scales, offsets = ds.quantize(x, bits=4, symmetric=False, group_size=128)
>>> y = ds.dequantize(q, scales, offsets, n=x.size, bits=4, symmetric=False, group_size=128)
>>> float(np.abs(x - y).max()) <= float(scales.max()) / 2 * 1.001
True

The ``n`` elements of the input (read flattened, row-major) form ``ceil(n / group_size)``
groups of ``group_size`` consecutive elements (the last may be partial); each group has one
float32 scale and, when asymmetric, one float32 offset (its minimum). Any ``n`` and any
``group_size >= 1`` work, including one group of the whole tensor.

Format
------
``q`` holds one byte per element for 8 bits: ``int8`` codes in ``[-127, 127]`` when
symmetric (returned as an ``int8`` array), ``0..255`` when asymmetric (``uint8``). For 4
bits two elements share a byte (returned as ``uint8``, ``ceil(n / 2)`` bytes): element
``2i`` in the low nibble of byte ``i``, element ``2i + 1`` in the high nibble, over the
whole flattened tensor regardless of group boundaries; an odd ``n`` leaves the last high
nibble 0. Symmetric nibbles are two's complement (``-7..7``), asymmetric ones unsigned
(``0..15``). :func:`unpack_int4` spreads packed bytes into one code per element.

Formulas (float32 unless marked; docs/quantizer.md has every operation)::

    symmetric:   scale = f32(f64(max |x|) / qmax)           qmax = 127 or 7
                 v = x / scale
    asymmetric:  scale = f32((f64(max x) - f64(min x)) / qmax),  offset = min x
                 v = (x - offset) / scale                   qmax = 255 or 15
    nearest:     q = clamp(rint(v))                          ties to even
    stochastic:  q = clamp(floor(f64(v) + u)),  u = (w >> 8) * 2^-24
    dequantize:  y = f32(q) * scale  (+ offset)

A group holding an Inf or NaN gets scale (and offset) NaN and codes 0, and dequantizes to
NaN; a group whose scale is 0 (all values equal, when asymmetric; all zero) gets codes 0.
Rounding to nearest keeps ``|x - y| <= scale / 2 + 2^-20 * max|x|``, stochastic rounding
``|x - y| < scale + 2^-20 * max|x|`` (for normal scales).

Stochastic rounding
-------------------
``u`` comes from Philox4x32-10 keyed by ``seed``: element ``i`` takes word ``i % 4`` of
block ``offset + i // 4``, so a call uses :func:`philox_blocks` ``(n)`` blocks. The same
``seed`` and ``offset`` reproduce the same bits; advance ``offset`` by
``philox_blocks(n)`` for fresh noise on the next call (the accelerators' generator uses
the same keying: ``u`` is what a float32 uniform fill would give from ``(seed, offset)``).

Arrays
------
Input arrays (``x``, and ``q``/``scales``/``offsets`` of :func:`dequantize`) may have any
shape and layout: a non-contiguous or unaligned one is copied first. ``x`` is float32,
float16 or bfloat16 (a ``uint16`` array of the raw bits with the marker,
``(bits, "bfloat16")``, or an ``ml_dtypes.bfloat16`` array); other dtypes are refused by
the library. Arrays passed with ``out=`` are written in place, so they must be
C-contiguous, writable and aligned numpy arrays of the right dtype and element count (any
shape). The calls release the GIL while they run.

Errors
------
The library checks everything and raises the typed errors of :mod:`deepspeed_rs.errors`
with messages naming the argument, e.g. ``OutOfRangeError: dsrs_quantize: argument
'config->bits' must be 8 (int8) or 4 (packed int4), got 3`` or ``InvalidArgumentError:
dsrs_quantize: argument 'scales' has 4 elements but 5 are expected (...)``:
:class:`~deepspeed_rs.errors.OutOfRangeError` for ``bits``, ``symmetric``,
``group_size``, ``rounding``, ``num_threads`` and ``backend``;
:class:`~deepspeed_rs.errors.UnsupportedError` for an input or output dtype other than
float32/float16/bfloat16; :class:`~deepspeed_rs.errors.InvalidArgumentError` for lengths,
the dtypes of ``q`` (int8/uint8), ``scales`` and ``offsets`` (float32), overlapping arrays
and ``offsets`` given for symmetric quantization;
:class:`~deepspeed_rs.errors.NullArgumentError` for ``offsets`` missing for asymmetric
quantization. Nothing is written when a call fails. The binding itself raises
:class:`~deepspeed_rs.errors.InvalidArgumentError` for ``out=`` arrays that are not
contiguous, writable or aligned (naming the argument the same way),
:class:`~deepspeed_rs.errors.OutOfRangeError` for ``seed``, ``offset`` or ``n`` outside
their C types, ``ValueError`` for unknown names (``rounding="up"``) and ``TypeError`` for
arguments of the wrong kind.
"""

from __future__ import annotations

import ctypes
from ctypes import Structure, c_int32, c_uint64
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from . import _arrays
from ._arrays import flag as _flag
from ._arrays import integer as _int
from ._arrays import is_typed as _is_typed
from ._arrays import named as _named
from ._dlpack import HostTensor
from ._dtypes import dtype_name, to_numpy
from ._lib import i32_arg, lib, u64_arg
from .errors import InvalidArgumentError, check

__all__ = [
    "BACKENDS",
    "ROUNDINGS",
    "dequantize",
    "philox_blocks",
    "quantize",
    "quantize_sizes",
    "unpack_int4",
]

#: ``rounding=`` values (``DSRS_ROUNDING_*``). Integers are passed to the library as they
#: are.
ROUNDINGS: Dict[str, int] = {"nearest": 0, "stochastic": 1}

#: ``backend=`` values (``DSRS_QUANTIZE_BACKEND_*``): ``"auto"`` (the ``cpu_quantizer``
#: op, built on first use; the pure-Rust reference, with one warning, when it cannot be
#: built), ``"kernel"`` (the op only: a failed build is an error) and ``"reference"`` (the
#: pure-Rust reference, never builds anything). All three give the same bits. Integers
#: are passed to the library as they are.
BACKENDS: Dict[str, int] = {"auto": 0, "kernel": 1, "reference": 2}


class _QuantizeConfig(Structure):
    """``dsrs_quantize_config`` (include/deepspeed_rs.h)."""

    _fields_ = [
        ("bits", c_int32),
        ("symmetric", c_int32),
        ("group_size", c_uint64),
        ("rounding", c_int32),
        ("seed", c_uint64),
        ("offset", c_uint64),
        ("num_threads", c_int32),
        ("backend", c_int32),
    ]


# The header's layout: 48 bytes, seed at 24, backend at 44.
assert ctypes.sizeof(_QuantizeConfig) == 48
assert _QuantizeConfig.group_size.offset == 8 and _QuantizeConfig.seed.offset == 24
assert _QuantizeConfig.num_threads.offset == 40 and _QuantizeConfig.backend.offset == 44

# --------------------------------------------------------------------------------------
# Arguments.


def _config(bits: Any, symmetric: Any, group_size: Any, rounding: Any = "nearest",
            seed: Any = 0, offset: Any = 0, num_threads: Any = 0,
            backend: Any = "auto") -> _QuantizeConfig:
    return _QuantizeConfig(
        bits=i32_arg(bits, "bits"),
        symmetric=_flag(symmetric, "symmetric"),
        group_size=u64_arg(group_size, "group_size"),
        rounding=_named(rounding, ROUNDINGS, "rounding"),
        seed=u64_arg(seed, "seed"),
        offset=u64_arg(offset, "offset"),
        num_threads=i32_arg(num_threads, "num_threads"),
        backend=_named(backend, BACKENDS, "backend"),
    )


def _split(value: Any, what: str) -> Tuple[Any, Any]:
    """``(array, dtype marker or None)`` of an array argument."""
    array, marker = _arrays.split(value, what)
    _arrays.refuse_bare_uint16(array, marker, what)
    return array, marker


def _input(value: Any, what: str) -> HostTensor:
    """A DLTensor view of an input array; non-contiguous or unaligned arrays are copied."""
    array, marker = _split(value, what)
    if not (array.flags.c_contiguous and array.flags.aligned):
        array = array.copy(order="C")
    return _arrays.host_view(array, marker, what, writable=False)


_HINTS = _arrays.Hints(
    contiguous="results are written in place into C-contiguous arrays",
    read_only="results are written into it",
    aligned="use an aligned array (numpy.empty(...))",
)


def _output(value: Any, what: str) -> HostTensor:
    """A DLTensor view of an array the call writes into (checked, never copied)."""
    array, marker = _split(value, what)
    _arrays.check_in_place(array, f"argument {what}", True, _HINTS)
    return _arrays.host_view(array, marker, what, writable=True)


def _ref(view: Optional[HostTensor]) -> Any:
    return None if view is None else view.ref


def _sizes(n: int, bits: int, group_size: int) -> Tuple[int, int]:
    """``(q_bytes, num_groups)`` for valid parameters (invalid ones are the library's to
    report; the arrays allocated for them are empty)."""
    if bits not in (4, 8) or group_size < 1:
        return 0, 0
    return (n if bits == 8 else (n + 1) // 2), -(-n // group_size)


# --------------------------------------------------------------------------------------
# The functions.


def philox_blocks(n: int) -> int:
    """The Philox blocks a stochastic quantization of ``n`` elements uses,
    ``ceil(n / 4)``: advance ``offset`` by this much between calls."""
    n = _int(n, "n")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return (n + 3) // 4


def quantize_sizes(n: int, *, bits: int = 8, group_size: int) -> Tuple[int, int]:
    """``(q_bytes, num_groups)`` for ``n`` elements (``dsrs_quantize_sizes``): the length of
    ``q`` (``n`` for 8 bits, ``ceil(n / 2)`` for 4) and of ``scales`` / ``offsets``
    (``ceil(n / group_size)``).

    Raises :class:`~deepspeed_rs.errors.OutOfRangeError` for ``bits`` other than 8 or 4,
    ``group_size < 1``, or ``n`` outside ``uint64``.
    """
    cfg = _config(bits, True, group_size)
    q_bytes, groups = c_uint64(0), c_uint64(0)
    check(lib.dsrs_quantize_sizes(u64_arg(n, "n"), ctypes.byref(cfg), ctypes.byref(q_bytes),
                                  ctypes.byref(groups)))
    return q_bytes.value, groups.value


def quantize(x: Any, *, bits: int = 8, symmetric: bool = True, group_size: int,
             rounding: Union[str, int] = "nearest", seed: int = 0, offset: int = 0,
             num_threads: int = 0, backend: Union[str, int] = "auto",
             out: Optional[Sequence[Any]] = None) -> Tuple[Any, Any, Optional[Any]]:
    """Quantizes ``x`` group-wise (``dsrs_quantize``).

    Args:
        x: float32, float16 or bfloat16 data of any shape, read flattened (row-major);
            bfloat16 as ``(uint16 bits, "bfloat16")`` or an ``ml_dtypes.bfloat16`` array.
        bits: 8 (int8, one byte per element) or 4 (packed int4, two per byte).
        symmetric: ``True``: codes in ``[-qmax, qmax]``, scales only; ``False``: codes in
            ``[0, 2^bits - 1]``, scales and offsets (each group's minimum).
        group_size: elements per group, >= 1 (keyword-only, required).
        rounding: ``"nearest"`` (ties to even) or ``"stochastic"``.
        seed, offset: the Philox key and first block of stochastic rounding (ignored when
            rounding to nearest); see :func:`philox_blocks`.
        num_threads: CPU threads of the kernel (0: the OpenMP default).
        backend: ``"auto"``, ``"kernel"`` or ``"reference"`` (see :data:`BACKENDS`).
        out: ``None``, or ``(q, scales, offsets)`` arrays to write into instead of
            allocating: ``q`` int8 or uint8 of :func:`quantize_sizes` bytes, ``scales``
            and ``offsets`` float32 of one element per group; ``offsets`` must be
            ``None`` (or left out) when symmetric.

    Returns:
        ``(q, scales, offsets)``: ``q`` a 1-D ``int8`` array (symmetric int8) or ``uint8``
        array (asymmetric int8, packed int4), ``scales`` a 1-D float32 array,
        ``offsets`` a 1-D float32 array or ``None`` when symmetric; with ``out=``, the
        given arrays.

    Raises the typed errors described in the module docstring; nothing is written then.
    """
    import numpy as np

    cfg = _config(bits, symmetric, group_size, rounding, seed, offset, num_threads, backend)
    xin = _input(x, "'input' (x)")
    n = xin.array.size
    if out is None:
        q_bytes, groups = _sizes(n, cfg.bits, cfg.group_size)
        q_dtype = np.int8 if (cfg.symmetric == 1 and cfg.bits == 8) else np.uint8
        q = np.empty(q_bytes, dtype=q_dtype)
        scales = np.empty(groups, dtype=np.float32)
        offsets = None if cfg.symmetric == 1 else np.empty(groups, dtype=np.float32)
    else:
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError(
                "out must be a tuple (q, scales, offsets) (offsets None when symmetric), got "
                f"{type(out).__name__}"
            )
        q, scales = out[0], out[1]
        offsets = out[2] if len(out) == 3 else None
    qv = _output(q, "'q'")
    sv = _output(scales, "'scales'")
    ov = None if offsets is None else _output(offsets, "'offsets'")
    check(lib.dsrs_quantize(ctypes.byref(cfg), xin.ref, qv.ref, sv.ref, _ref(ov), None))
    return q, scales, offsets


def dequantize(q: Any, scales: Any, offsets: Any = None, *, n: Optional[int] = None,
               bits: int, symmetric: bool, group_size: int, dtype: Any = "float32",
               num_threads: int = 0, backend: Union[str, int] = "auto",
               out: Optional[Any] = None) -> Any:
    """Dequantizes ``q``, ``scales`` and ``offsets`` (``dsrs_dequantize``):
    ``y = f32(q) * scale (+ offset)``, rounded to ``dtype`` (to nearest even; a NaN stays
    a quiet NaN).

    Args:
        q: the codes, int8 or uint8, as :func:`quantize` wrote them (any shape).
        scales: float32, one per group.
        offsets: float32, one per group when asymmetric; ``None`` when symmetric.
        n: the number of elements that were quantized (keyword-only); may be left out
            when ``out`` is given (then ``out.size``).
        bits, symmetric, group_size: as given to :func:`quantize` (keyword-only).
        dtype: the output type: float32 (default), float16 or bfloat16 (a name or numpy
            dtype). bfloat16 results are an ``ml_dtypes.bfloat16`` array when numpy knows
            that type (``ml_dtypes`` imported), else a ``uint16`` array of the raw bits.
        num_threads, backend: as for :func:`quantize`.
        out: ``None``, or an array to write into (float32, float16, or bfloat16 as a
            ``(uint16 bits, "bfloat16")`` pair or ``ml_dtypes.bfloat16`` array; any shape
            of ``n`` elements); ``dtype`` is then ignored.

    Returns:
        A 1-D array of ``n`` elements, or ``out``.

    Raises the typed errors described in the module docstring; nothing is written then.
    """
    import numpy as np

    cfg = _config(bits, symmetric, group_size, num_threads=num_threads, backend=backend)
    if out is None:
        if n is None:
            raise TypeError("dequantize() needs n= (the number of elements) or out=")
        count = u64_arg(n, "n")
        name = dtype_name(dtype)
        if name == "bfloat16":
            npd = to_numpy(name)
            result = np.empty(count, dtype=npd if npd is not None else np.uint16)
            target: Any = result if npd is not None else (result, "bfloat16")
        else:
            result = np.empty(count, dtype=np.dtype(name))
            target = result
    else:
        result = out
        target = out
        array = out[0] if _is_typed(out) else out
        if n is not None and isinstance(array, np.ndarray) and array.size != _int(n, "n"):
            raise InvalidArgumentError(
                f"argument 'output' (out) has {array.size} elements but n = {n}"
            )
    yv = _output(target, "'output'")
    qv = _input(q, "'q'")
    sv = _input(scales, "'scales'")
    ov = None if offsets is None else _input(offsets, "'offsets'")
    check(lib.dsrs_dequantize(ctypes.byref(cfg), qv.ref, sv.ref, _ref(ov), yv.ref, None))
    return result


def unpack_int4(q: Any, n: int, *, symmetric: bool) -> Any:
    """The codes of packed int4 bytes, one per element: an ``int8`` array of ``n`` codes
    (``-8..7`` two's complement when symmetric, ``0..15`` when not), element ``2i`` from
    the low nibble of byte ``i``. A numpy helper (no library call)."""
    import numpy as np

    b = np.ascontiguousarray(q).reshape(-1).view(np.uint8)
    n = _int(n, "n")
    if not 0 <= n <= 2 * b.size:
        raise ValueError(f"n = {n} does not fit in {b.size} packed bytes")
    codes = np.empty(2 * b.size, dtype=np.int8)
    codes[0::2] = (b & 0x0F).astype(np.int8)
    codes[1::2] = (b >> 4).astype(np.int8)
    codes = codes[:n]
    if symmetric:
        codes = ((codes ^ 8) - 8).astype(np.int8)
    return codes
