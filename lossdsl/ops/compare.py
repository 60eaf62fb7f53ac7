"""Comparisons, logic and selection: ``lt le gt ge eq ne``, ``and or not``, ``where``.

Truth values are the numbers 1 and 0; a condition holds where it is non-zero. Their
derivatives are 0; ``where`` differentiates each branch and masks the other, so that an
infinite derivative in the branch not taken does not leak NaN.

In kernels they are helper calls rather than inline ``a if c else b``: inline conditionals
split the body into many basic blocks, and Numba's SSA passes grow with blocks x variables (a
40-term loss compiled 25% faster this way); LLVM inlines the helpers back into selects. CUDA
kernels compile the helpers' source here; CPU kernels call intrinsics that emit the compare
and select directly (:mod:`lossdsl.backend.cpu.instructions`, which must compute what the
source here does).
"""

from __future__ import annotations

import numpy as np

from ..ir.node import constant
from .registry import NOTATION, Helper, Op, register

_ZERO, _ONE = constant(0.0), constant(1.0)


def _truth(condition):
    return np.asarray(condition, dtype=np.float64)


def _zero_partials(build, n, *args, wanted):
    return [_ZERO] * len(args)


def _where_partials(build, n, c, a, b, wanted):
    return [_ZERO, build("where", c, _ONE, _ZERO), build("where", c, _ZERO, _ONE)]


def _relation(name: str, python: str, function, commutative: bool = False) -> Op:
    """A comparison: 1 where ``a <python> b`` holds (the Python operator), else 0."""
    return Op(
        name, 2, doc=f"1 where a {python} b, else 0",
        reference=lambda a, b: _truth(function(a, b)), partials=_zero_partials,
        kernel=Helper(name, f"""
def h_{name}(a, b):
    return T(1.0) if a {python} b else T(0.0)
"""),
        latex=NOTATION, torch=lambda t: getattr(t, name),
        jax=f"jnp.where({{0}} {python} {{1}}, ONE, ZERO)", commutative=commutative)


register(
    _relation("lt", "<", np.less),
    _relation("le", "<=", np.less_equal),
    _relation("gt", ">", np.greater),
    _relation("ge", ">=", np.greater_equal),
    _relation("eq", "==", np.equal, commutative=True),
    _relation("ne", "!=", np.not_equal, commutative=True),
    Op("and", 2, doc="1 where both a and b are non-zero, else 0",
       reference=lambda a, b: _truth((a != 0) & (b != 0)), partials=_zero_partials,
       kernel=Helper("and", """
def h_and(a, b):
    return T(1.0) if (a != T(0.0) and b != T(0.0)) else T(0.0)
"""), latex=NOTATION, torch=lambda t: t.logical_and,
       jax="jnp.where(({0} != ZERO) & ({1} != ZERO), ONE, ZERO)", commutative=True),
    Op("or", 2, doc="1 where a or b is non-zero, else 0",
       reference=lambda a, b: _truth((a != 0) | (b != 0)), partials=_zero_partials,
       kernel=Helper("or", """
def h_or(a, b):
    return T(1.0) if (a != T(0.0) or b != T(0.0)) else T(0.0)
"""), latex=NOTATION, torch=lambda t: t.logical_or,
       jax="jnp.where(({0} != ZERO) | ({1} != ZERO), ONE, ZERO)", commutative=True),
    Op("not", 1, doc="1 where x is zero, else 0",
       reference=lambda x: _truth(x == 0), partials=_zero_partials,
       kernel=Helper("not", """
def h_not(a):
    return T(1.0) if a == T(0.0) else T(0.0)
"""), latex=NOTATION, torch=lambda t: lambda x: (x == 0).to(x.dtype),
       jax="jnp.where({0} == ZERO, ONE, ZERO)"),
    Op("where", 3, doc="a where c is non-zero, else b",
       reference=lambda c, a, b: np.where(c != 0, a, b), partials=_where_partials,
       kernel=Helper("select", """
def h_select(c, a, b):
    return a if c != T(0.0) else b
"""), latex=NOTATION, torch=lambda t: lambda c, a, b: t.where(c != 0, a, b),
       jax="jnp.where({0} != ZERO, {1}, {2})", callable_as="where"),
)

#: the relations, in the order the language lists them
COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")
LOGICAL = ("and", "or", "not")
#: the LaTeX relation symbol of each comparison
RELATION_SYMBOLS = {"lt": "<", "le": r"\le", "gt": ">", "ge": r"\ge", "eq": "=", "ne": r"\ne"}
