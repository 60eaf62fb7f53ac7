"""The CPU kernels' comparisons, logic, select, min, max and sign
(:mod:`lossdsl.backend.cpu.instructions`) compute what the registry's helpers compute, which
the CUDA target compiles as they are: the same value (bit for bit: the sign of zero, NaN) and
the same type, for each kernel dtype, on special values and on mixed argument types."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numba import njit

import lossdsl
from lossdsl.backend.cpu.helpers import shared_helpers
from lossdsl.backend.cpu.instructions import INLINE_HELPERS, inline_helpers
from lossdsl.ops import helpers

FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-300, 3e38]
INTEGERS = [0, 1, -1, 3, -7]
BOOLEANS = [True, False]


def _grid(kind: str, dtype: str) -> list:
    """Arguments of one kind: the kernel's float ("T"), the other float ("U"), int64, bool."""
    if kind in ("T", "U"):
        name = dtype if kind == "T" else ("float32" if dtype == "float64" else "float64")
        return [getattr(np, name)(x) for x in FLOATS]
    return INTEGERS if kind == "int" else BOOLEANS


#: argument kinds per arity: the kernel's own (what generated code passes) and mixed ones
KINDS = {1: [("T",), ("U",), ("int",)],
         2: [("T", "T"), ("T", "U"), ("U", "T"), ("T", "int"), ("int", "int")],
         3: [("T", "T", "T"), ("int", "T", "T"), ("bool", "T", "U"), ("T", "int", "T")]}


def _arity(name: str) -> int:
    return {"not": 1, "sign": 1, "select": 3}.get(name, 2)


def _caller(function, arity: int):
    if arity == 1:
        return njit(lambda a: function(a))
    if arity == 2:
        return njit(lambda a, b: function(a, b))
    return njit(lambda c, a, b: function(c, a, b))


def _same(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def test_every_inline_helper_is_a_registry_helper():
    assert INLINE_HELPERS <= set(helpers())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(INLINE_HELPERS))
def test_each_computes_its_registry_helper(name: str, dtype: str):
    arity = _arity(name)
    inline = _caller(getattr(inline_helpers(dtype), f"h_{name}"), arity)
    compiled = _caller(getattr(shared_helpers(dtype, True), f"h_{name}"), arity)
    for kinds in KINDS[arity]:
        for args in itertools.product(*(_grid(kind, dtype) for kind in kinds)):
            got, expected = inline(*args), compiled(*args)
            assert _same(got, expected), f"h_{name}{args}: {got} != {expected}"
        signature = inline.signatures[-1]
        assert (inline.overloads[signature].signature.return_type
                == compiled.overloads[signature].signature.return_type), (name, kinds)


def test_a_kernel_binds_them_and_the_shared_helpers_for_the_rest():
    loss = lossdsl.compile("where(p > y, lgamma(p), sign(p - y)) + max(p, y)", target="cpu")
    y, p = np.array([1.0, 2.0, np.nan]), np.array([1.5, 0.5, 1.0])
    value = loss(y=y, p=p)
    source = loss.source
    assert "h_gt = _inline.h_gt" in source and "h_sign = _inline.h_sign" in source
    assert "h_select = _inline.h_select" in source and "h_max = _inline.h_max" in source
    assert "h_lgamma = _helpers.h_lgamma" in source and "h_gt = _helpers" not in source
    expected = np.mean(np.where(p > y, [math.lgamma(x) for x in p], np.sign(p - y))
                       + np.where((p >= y) | np.isnan(p), p, y))
    assert _same(value, expected)
