"""Arguments of the functions that work on numpy arrays in place (:mod:`.optim`,
:mod:`.quantizer`): array arguments as ``DLTensor`` views (:class:`._dlpack.HostTensor`),
with the binding's own checks, and the scalar arguments they share.

An array argument is a ``numpy.ndarray``, or an ``(array, dtype)`` pair whose marker
overrides the element type (``(uint16 bits, "bfloat16")``; numpy has no bfloat16). An
``ml_dtypes.bfloat16`` array needs no marker. A bare ``uint16`` array is refused, so that
bfloat16 bits are never taken for integers by accident.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Tuple

from ._dlpack import HostTensor
from ._lib import i32_arg
from .errors import InvalidArgumentError, UnsupportedError


def is_typed(value: Any) -> bool:
    """Whether ``value`` is an ``(array, dtype)`` pair (a tuple whose second item is a dtype
    name or a numpy dtype, not an array)."""
    if not (isinstance(value, tuple) and len(value) == 2):
        return False
    marker = value[1]
    if isinstance(marker, str):
        return True
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return False
    return isinstance(marker, np.dtype) or (isinstance(marker, type) and issubclass(marker, np.generic))


def split(value: Any, what: str) -> Tuple[Any, Any]:
    """``(array, dtype marker or None)`` of an array argument; ``TypeError`` when it holds
    no numpy array."""
    array, marker = value if is_typed(value) else (value, None)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        raise TypeError(f"{what} must be a numpy array (numpy is not installed)") from None
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{what} must be a numpy.ndarray (or an (array, 'bfloat16') pair), got "
            f"{type(array).__name__}"
        )
    return array, marker


def refuse_bare_uint16(array: Any, marker: Any, what: str) -> None:
    """``UnsupportedError`` for a ``uint16`` array without a dtype marker."""
    import numpy as np

    if marker is None and array.dtype == np.uint16:
        raise UnsupportedError(
            f"{what} is a uint16 array; pass (array, 'bfloat16') to use its elements as "
            "bfloat16 bits"
        )


class Hints(NamedTuple):
    """How the messages of :func:`check_in_place` end: what the caller should know or do."""

    contiguous: str
    read_only: str
    aligned: str


def check_in_place(array: Any, label: str, writable: bool, hints: Hints) -> None:
    """``InvalidArgumentError`` (the message starting with ``label``) for an array the
    library cannot use in place: not C-contiguous, read-only when ``writable``, or not
    aligned to its element size."""
    if not array.flags.c_contiguous:
        raise InvalidArgumentError(
            f"{label} is not contiguous (strides {array.strides} for shape {array.shape}); "
            f"{hints.contiguous}"
        )
    if writable and not array.flags.writeable:
        raise InvalidArgumentError(f"{label} is read-only; {hints.read_only}")
    if not array.flags.aligned:
        # numpy allows arrays at any byte offset (np.frombuffer(..., offset=1)); the
        # library needs each element at an address that is a multiple of its size.
        raise InvalidArgumentError(
            f"{label} is not aligned to its {array.dtype.itemsize}-byte elements (address "
            f"{array.ctypes.data:#x}); {hints.aligned}"
        )


def host_view(array: Any, marker: Any, what: str, writable: bool) -> HostTensor:
    """The ``DLTensor`` view of a checked array; a dtype marker of another element size is
    an ``InvalidArgumentError``."""
    try:
        return HostTensor(array, dtype=marker, writable=writable, what=what)
    except ValueError as e:
        raise InvalidArgumentError(str(e)) from None


def integer(value: Any, what: str) -> int:
    """An integer argument (``bool`` and floats are refused with ``TypeError``)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    return int(value.__index__())


def flag(value: Any, what: str) -> int:
    """A 0/1 flag: ``bool``, or an ``int`` passed as it is (the library refuses others)."""
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "__index__"):
        return i32_arg(value, what)
    raise TypeError(f"{what} must be a bool, got {type(value).__name__}")


def named(value: Any, table: Dict[str, int], what: str) -> int:
    """A value of ``table`` by its name (case-insensitive), or an ``int32`` passed as it is
    (the library refuses unknown ones)."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in table:
            raise ValueError(
                f"unknown {what} {value!r}; use one of {', '.join(repr(k) for k in table)}"
            )
        return table[key]
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be a name ({', '.join(table)}) or an int")
    return i32_arg(value, what)
