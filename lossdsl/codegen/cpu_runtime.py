"""Run-time support for CPU kernels: how a generated ``run`` executes its passes.

A generated CPU module's ``run`` calls every loop and converts every scalar it hands to a
loop through a *kit*: ``kit.loop(function, count, length, *arguments)`` runs one loop and
returns its ``count`` reductions as float64, ``kit.cast(dtype, value)`` converts the scalar
glue between passes to the kernel's dtype. :data:`DIRECT` runs loops in place on whole
arrays; :mod:`lossdsl.dask` passes a kit that runs each loop chunk by chunk, so one
generated module serves both, nested reductions and Hessians included.

Every loop runs through :func:`launch`, which keeps ``parallel=True`` loops safe: Numba's
default threading layer on a pip install is GNU OpenMP, after which a ``fork()`` (a
``multiprocessing.Pool`` on Linux) hangs forever in the child. Unless the user chose a layer
(``NUMBA_THREADING_LAYER`` or ``numba.config.THREADING_LAYER``), lossdsl asks Numba for a
fork-safe one (TBB where installed, else the built-in work queue). The work queue aborts the
process when two threads launch parallel loops at once, so launches are serialised while it
is the layer in use.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

_LAUNCH_LOCK = threading.Lock()
_serialise: bool | None = None  # known after the first parallel launch


def _parallel_guard() -> contextlib.AbstractContextManager:
    global _serialise
    if _serialise is None:
        if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
            numba.config.THREADING_LAYER = "forksafe"
        return _first_launch()
    return _LAUNCH_LOCK if _serialise else contextlib.nullcontext()


@contextlib.contextmanager
def _first_launch():
    global _serialise
    with _LAUNCH_LOCK:  # the layer starts on this launch: only then can Numba name it
        yield
        _serialise = numba.threading_layer() == "workqueue"


def launch(function: Callable[..., Any], *arguments: Any) -> Any:
    """``function(*arguments)``, for a compiled loop; a ``parallel=True`` loop runs on a
    fork-safe threading layer, one launch at a time where that layer is not thread-safe."""
    if not getattr(function, "targetoptions", {}).get("parallel"):
        return function(*arguments)
    with _parallel_guard():
        return function(*arguments)


class Direct:
    """The kit ``run`` uses by default: each loop runs once over the whole arrays."""

    @staticmethod
    def loop(function: Callable[..., Any], count: int, *arguments: Any) -> tuple:
        """Run ``function`` on ``arguments``; its ``count`` reductions as NumPy float64."""
        result = launch(function, *arguments)
        return tuple(np.float64(r) for r in result) if count else ()

    @staticmethod
    def cast(dtype: type, value: Any) -> Any:
        """``value`` as a scalar of the kernel's ``dtype``."""
        return dtype(value)


#: The in-process kit; generated modules import it as their default ``kit``.
DIRECT = Direct()
