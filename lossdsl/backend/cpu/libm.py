"""The ``math`` of generated CPU kernels: the standard library's functions, except that
``exp``, ``expm1``, ``log`` and ``log1p`` are the SIMD-vectorisable versions of
:mod:`lossdsl.backend.cpu.vector_math`.

Numba calls libm for ``math.exp`` and friends, one element at a time, and a loop with such a
call does not vectorise; without Intel's SVML these four made transcendental losses
compute-bound (``bce_logits`` gradient and Hessian: 3.3 ns per element). Generated modules
import this module *as* ``math``, so the printed code reads like ordinary Python.
"""

from math import cos, erf, erfc, floor, inf, isinf, isnan, lgamma, nan, pi, sin, sqrt, tan, tanh

from .vector_math import vexp as exp
from .vector_math import vexpm1 as expm1
from .vector_math import vlog as log
from .vector_math import vlog1p as log1p

__all__ = ["cos", "erf", "erfc", "exp", "expm1", "floor", "inf", "isinf", "isnan", "lgamma", "log",
           "log1p", "nan", "pi", "sin", "sqrt", "tan", "tanh"]
