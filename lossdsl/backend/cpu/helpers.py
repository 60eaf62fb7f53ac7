"""The registry's scalar helpers (``h_select``, ``h_lgamma``, ...), one module shared by every
generated CPU kernel of a dtype.

A generated module used to define the helpers its expressions call itself, so each was
compiled again with every kernel: about 60 ms apiece, over half of a typical kernel's first
compile (``bce_logits``' value and gradient, six helpers: 0.66-0.84 s, 0.27-0.39 s with the
helpers shared and already compiled). Now a kernel binds them from one module per dtype and
``math`` (libm.py's vectorisable functions, or Python's ``math`` for the modules that keep
scalar calls), which defines every helper of the registry; Numba compiles a helper on its
first use in a process and caches it on disk, as it does the kernels. That module is a cache
entry like theirs (written to the cache directory and imported by :func:`lossdsl.cache.
load_module`, as ``lossdsl_helpers_<hash of its text>.py``), so a helper changed in the
registry makes a new one. The CUDA target still defines its device helpers in each module.
"""

from __future__ import annotations

from types import ModuleType

from ...cache import load_module
from ...ops import helper_source, helpers

#: How a helper is compiled: as the kernels' bodies, without fastmath, said explicitly so that
#: it does not take its first caller's (see codegen.py).
HELPER_DECORATOR = 'njit(fastmath=False, error_model="numpy", cache=True)'

__all__ = ["HELPER_DECORATOR", "helpers_source", "shared_helpers"]


def helpers_source(dtype: str, vectorised: bool) -> str:
    """The source of the module defining every registry helper for ``dtype`` ("float32" or
    "float64"), its ``math`` libm.py's vectorisable functions where ``vectorised``."""
    math_import = ("from lossdsl.backend.cpu import libm as math  # libm, vectorisable exp and log"
                   if vectorised else "import math")
    lines = ["# The registry's scalar helpers, shared by the generated CPU kernels.",
             math_import, "", "import numpy", "from numba import njit", "",
             f"T = numpy.{dtype}", ""]
    lines += [f"@{HELPER_DECORATOR}{helper_source(name).rstrip()}\n"
              for name in sorted(helpers())]
    return "\n".join(lines)


def shared_helpers(dtype: str, vectorised: bool) -> ModuleType:
    """The helpers module for ``dtype`` and the ``math`` a kernel uses (made and imported on
    first use in a process)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"no CPU helpers for dtype {dtype!r}")
    return load_module(helpers_source(dtype, bool(vectorised)), prefix="lossdsl_helpers")
