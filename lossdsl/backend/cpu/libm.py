"""The ``math`` of generated CPU kernels: the standard library's functions, except that
``exp``, ``expm1``, ``log``, ``log1p``, ``pow`` and ``tanh`` are the SIMD-vectorisable versions
of :mod:`lossdsl.backend.cpu.vector_math`.

Numba calls libm for ``math.exp`` and friends, one element at a time, and a loop with such a
call does not vectorise; without Intel's SVML these four made transcendental losses
compute-bound (``bce_logits`` gradient and Hessian: 3.3 ns per element). Generated modules
import this module *as* ``math``, so the printed code reads like ordinary Python.

The other names are every ``math`` function a kernel template of the primitive registry
(:mod:`lossdsl.ops`) calls, so that a new primitive's template needs no line here.
"""

import math as _math

from ... import ops as _ops
from .vector_math import vexp as exp
from .vector_math import vexpm1 as expm1
from .vector_math import vlog as log
from .vector_math import vlog1p as log1p
from .vector_math import vpow as pow  # noqa: A004 -- math.pow's name, as a kernel reads it
from .vector_math import vtanh as tanh

_VECTORISED = {"exp": exp, "expm1": expm1, "log": log, "log1p": log1p, "pow": pow,
               "tanh": tanh}
#: The functions this module gives in their vectorisable form.
VECTORISED = frozenset(_VECTORISED)
# names no template text shows: the constants of emit.number, the sqrt that pow's printing
# function writes, and the rest of what this module always exported
_ALWAYS = ("floor", "inf", "isinf", "isnan", "nan", "pi", "sqrt", "tan")


def _registry_math() -> set[str]:
    names = set(_ALWAYS)
    for op in _ops.operations():
        names |= _ops.kernel_math_calls(op)
    for helper in _ops.helpers().values():
        names |= helper.math_calls
    return names


for _name in sorted(_registry_math() - VECTORISED):
    globals()[_name] = getattr(_math, _name)

__all__ = sorted(_registry_math() | VECTORISED)
