"""Run-time support for CPU kernels: how a generated ``run`` executes its passes.

A generated CPU module's ``run`` calls every loop and converts every scalar it hands to a
loop through a *kit*: ``kit.loop(function, count, length, *arguments)`` runs one loop and
returns its ``count`` reductions as float64, ``kit.cast(dtype, value)`` converts the scalar
glue between passes to the kernel's dtype. :data:`DIRECT` runs loops in place on whole
arrays; :mod:`lossdsl.dask` passes a kit that runs each loop chunk by chunk, so one
generated module serves both, nested reductions and Hessians included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Direct:
    """The kit ``run`` uses by default: each loop runs once over the whole arrays."""

    @staticmethod
    def loop(function: Callable[..., Any], count: int, *arguments: Any) -> tuple:
        """Run ``function`` on ``arguments``; its ``count`` reductions as NumPy float64."""
        result = function(*arguments)
        return tuple(np.float64(r) for r in result) if count else ()

    @staticmethod
    def cast(dtype: type, value: Any) -> Any:
        """``value`` as a scalar of the kernel's ``dtype``."""
        return dtype(value)


#: The in-process kit; generated modules import it as their default ``kit``.
DIRECT = Direct()
