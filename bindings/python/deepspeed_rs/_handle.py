"""The base of every wrapper that owns a library handle."""

from __future__ import annotations

from typing import Any, Optional

from . import _lib
from .errors import StaleHandleError, check


class Handle:
    """Owns one handle of the C library (``dsrs_accelerator*``, ``dsrs_buffer*``, ...).

    ``close()`` frees it (idempotent); the object is also a context manager, and frees its
    handle when garbage-collected. Using an object after ``close()`` raises
    :class:`~deepspeed_rs.errors.StaleHandleError` (a ``ValueError``) without calling the
    library.
    """

    #: The C function that frees this kind of handle.
    _FREE: str = ""

    def __init__(self, handle: Optional[int]) -> None:
        if not handle:
            raise ValueError(f"{type(self).__name__}: NULL handle")
        self._handle: Optional[int] = handle

    @property
    def _h(self) -> int:
        h = self._handle
        if h is None:
            raise StaleHandleError(
                f"this {type(self).__name__} was closed; it cannot be used any more",
                201,
            )
        return h

    @property
    def handle(self) -> int:
        """The raw C handle value (for interop with other C code); valid until ``close()``."""
        return self._h

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._handle is None

    def close(self) -> None:
        """Releases the handle. Calling it again does nothing."""
        h, self._handle = self._handle, None
        if h is not None:
            check(getattr(_lib.lib, self._FREE)(h))

    def __enter__(self) -> Any:
        self._h  # refuse to enter a closed object
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            h = getattr(self, "_handle", None)
            if h is not None:
                self._handle = None
                getattr(_lib.lib, self._FREE)(h)
        except Exception:  # interpreter shutdown: the library may already be gone
            pass
