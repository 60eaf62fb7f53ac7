"""``math`` with IEEE results, for kernel source run as Python on NumPy scalars.

Python's ``math.log(0.0)`` raises where a GPU or a Numba CPU kernel returns -inf (and
``math.exp(1000.0)`` raises where it returns inf); kernel helpers rely on IEEE results, e.g.
in a branch whose value is then discarded. NumPy's functions give them and keep float32 in
float32. Two things run kernel source as Python: the NumPy reference of the special
functions (their helpers' source with ``T = numpy.float64``, :mod:`lossdsl.ops.registry`) and
Numba's CUDA simulator (:mod:`lossdsl.backend.cuda.runtime`); both use this IEEE ``math``
(the reference first tries :data:`PYTHON_MATH`, which is faster on Python floats).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

# math functions whose NumPy ufunc has another name (every other math function that NumPy
# has a ufunc for is that ufunc: the IEEE result, in the argument's dtype)
_RENAMED = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "atan2": "arctan2",
            "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh"}


def _quiet(function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*xs):
        with np.errstate(all="ignore"):
            return function(*xs)

    call.__name__ = function.__name__
    return call


def _like(x: Any, value: float) -> Any:
    """``value`` in the dtype of NumPy scalar ``x`` (a Python float for a Python float)."""
    return x.dtype.type(value) if isinstance(x, np.generic) else value


class IEEEMath:
    """The ``math`` module with IEEE results; names it does not define are ``math``'s.

    ``quiet`` silences NumPy's floating-point warnings at each call; a caller that runs
    many calls under one ``numpy.errstate(all="ignore")`` passes False (a third of the time).
    """

    def __init__(self, quiet: bool = True):
        self._wrap = _quiet if quiet else (lambda function: function)

    def __getattr__(self, name: str) -> Any:
        # first use of a name: the NumPy ufunc where there is one, else math's own (constants,
        # isnan, ...); kept as an attribute, so that later uses do not come here
        ufunc = getattr(np, _RENAMED.get(name, name), None)
        if isinstance(ufunc, np.ufunc) and callable(getattr(math, name, None)):
            value = self._wrap(ufunc)
        else:
            value = getattr(math, name)
        setattr(self, name, value)
        return value

    @staticmethod
    def lgamma(x: Any) -> Any:
        """log|Gamma(x)|: +inf at the poles and past the overflow (where Python raises)."""
        try:
            return _like(x, math.lgamma(x))
        except (ValueError, OverflowError):
            return _like(x, math.inf)

    @staticmethod
    def erf(x: Any) -> Any:
        """The error function, in ``x``'s dtype."""
        return _like(x, math.erf(x))

    @staticmethod
    def erfc(x: Any) -> Any:
        """The complementary error function, in ``x``'s dtype."""
        return _like(x, math.erfc(x))


def _python_lgamma(x: float) -> float:
    """log|Gamma(x)|, +inf where it overflows float64 (as C's ``lgamma``)."""
    try:
        return math.lgamma(x)
    except OverflowError:
        return math.inf


#: Python's ``math`` on Python floats (its attributes copied: no lookup indirection), except
#: that ``lgamma`` past its overflow is +inf as in C; every other error (a pole, a log of 0)
#: raises, for the caller to retry the element with :data:`UNCHECKED_MATH`.
PYTHON_MATH = SimpleNamespace(**{**vars(math), "lgamma": _python_lgamma})
#: The one IEEE ``math`` stand-in.
SCALAR_MATH = IEEEMath()
#: The same, for code that runs under ``numpy.errstate(all="ignore")`` already.
UNCHECKED_MATH = IEEEMath(quiet=False)
