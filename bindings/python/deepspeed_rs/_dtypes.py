"""Element types: names, DLPack ``DLDataType`` values and numpy dtypes.

A dtype argument of the binding may be a name (``"float32"``, ``"bf16"``, ``"half"``, ...;
the library's names and aliases), a numpy dtype or scalar type, or a ``DLDataType``.
numpy has no bfloat16; bfloat16 data is handled as raw ``uint16`` arrays with an explicit
``dtype="bfloat16"`` override where an API takes one.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ._lib import (
    DLDataType,
    kDLBfloat,
    kDLBool,
    kDLComplex,
    kDLFloat,
    kDLInt,
    kDLUInt,
)

#: Canonical name -> (DLPack type code, bits).
DTYPES: Dict[str, Tuple[int, int]] = {
    "float16": (kDLFloat, 16),
    "bfloat16": (kDLBfloat, 16),
    "float32": (kDLFloat, 32),
    "float64": (kDLFloat, 64),
    "int8": (kDLInt, 8),
    "int16": (kDLInt, 16),
    "int32": (kDLInt, 32),
    "int64": (kDLInt, 64),
    "uint8": (kDLUInt, 8),
    "uint16": (kDLUInt, 16),
    "uint32": (kDLUInt, 32),
    "uint64": (kDLUInt, 64),
    "bool": (kDLBool, 8),
    "complex64": (kDLComplex, 64),
    "complex128": (kDLComplex, 128),
}

_ALIASES = {
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp64": "float64", "double": "float64", "f64": "float64",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
}

_BY_CODE = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: Any) -> str:
    """The canonical name (``"float32"``, ``"bfloat16"``, ...) of a dtype argument."""
    if isinstance(dtype, DLDataType):
        if dtype.lanes != 1:
            raise ValueError(f"vector dtypes (lanes={dtype.lanes}) are not supported")
        try:
            return _BY_CODE[(dtype.code, dtype.bits)]
        except KeyError:
            raise ValueError(f"unknown DLPack dtype code={dtype.code} bits={dtype.bits}") from None
    if isinstance(dtype, str):
        key = dtype.strip().lower()
        key = _ALIASES.get(key, key)
        if key in DTYPES:
            return key
        raise ValueError(
            f"unknown dtype {dtype!r}; valid names: {', '.join(DTYPES)} (and aliases "
            "fp16, half, bf16, fp32, float, fp64, double, i8..u64)"
        )
    # A numpy dtype, scalar type, or anything numpy.dtype() accepts. Known ones are
    # remembered: this runs for every array of every call (an optimizer step over a model's
    # parameters makes thousands), and numpy's dtype naming is slow.
    try:
        return _NUMPY_NAMES[dtype]
    except (KeyError, TypeError):
        pass
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional
        raise TypeError(f"dtype must be a name or a DLDataType, got {dtype!r}") from None
    try:
        nd = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"not a dtype: {dtype!r}") from None
    if nd.name == "bfloat16":  # ml_dtypes' bfloat16, if installed
        name = "bfloat16"
    elif nd.name in DTYPES and nd.isnative:
        name = nd.name
    else:
        raise ValueError(f"numpy dtype {nd} has no deepspeed_rs equivalent")
    if isinstance(dtype, (np.dtype, type)):
        _NUMPY_NAMES[dtype] = name
    return name


# numpy dtypes and scalar types already named by dtype_name (a handful at most).
_NUMPY_NAMES: dict = {}


def to_dl(dtype: Any) -> DLDataType:
    """The ``DLDataType`` of a dtype argument."""
    code, bits = DTYPES[dtype_name(dtype)]
    return DLDataType(code, bits, 1)


def itemsize(dtype: Any) -> int:
    """Bytes per element."""
    return DTYPES[dtype_name(dtype)][1] // 8


def to_numpy(dtype: Any) -> Optional[Any]:
    """The numpy dtype for a dtype argument, or ``None`` when numpy has none (bfloat16
    without ``ml_dtypes``)."""
    import numpy as np

    name = dtype_name(dtype)
    if name == "bfloat16":
        try:
            return np.dtype("bfloat16")  # registered by ml_dtypes when it is imported
        except TypeError:
            return None
    return np.dtype(name)
