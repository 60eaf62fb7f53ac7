"""The registry helpers that are a comparison and a select, as LLVM instructions.

``h_lt h_le h_gt h_ge h_eq h_ne`` (comparisons), ``h_and h_or h_not`` (logic), ``h_select``
(``where``), ``h_min h_max`` and ``h_sign`` are one-line Numba-Python functions in the
registry (:mod:`lossdsl.ops`), which the CUDA target compiles as they are. A CPU kernel
calls them instead as Numba intrinsics that emit the ``fcmp`` and ``select`` LLVM inlines
the functions into anyway: a call of a compiled function costs Numba a type resolution and
a call to lower at every call site, and the kernels make hundreds (the Hessian of ``ntxent``
487, a 40-term loss 400). Measured in new processes with an empty kernel cache, each
figure a first call: ``ntxent``'s gradient + Hessian 10.5-11.6 s -> 8.0-9.3 s, its value +
gradient 4.2-5.5 s -> 3.3-4.8 s, a 40-term loss's value + gradient 6.7-8.4 s -> 4.6-6.6 s,
six library losses' two kernels each 5.4-5.9 s -> 4.1-5.6 s.

Each intrinsic computes what its registry helper computes, types included: comparisons and
logic give ``T(1.0)`` or ``T(0.0)`` in the kernel's dtype ``T``; Python's ``!=`` is true
where either side is NaN, its other comparisons false; a truth value is ``c != 0`` (NaN is
true); ``select``, ``min`` and ``max`` give their arguments' common type, as Numba's
conditional expression does; ``min``/``max`` keep a NaN first argument and ties pick it;
``sign`` is ``x * 0`` at zero and NaN (keeping -0 and NaN). ``tests/backend/
test_instructions.py`` checks every one against its registry helper on special values.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from numba.core import types
from numba.extending import intrinsic

#: The registry helpers written here (each ``h_<name>``).
INLINE_HELPERS = frozenset({"lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not", "select",
                            "min", "max", "sign"})

_SCALARS = (types.Float, types.Integer, types.Boolean)
# Python's comparison operators as LLVM predicates; != alone holds where a side is NaN
_RELATIONS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}

__all__ = ["INLINE_HELPERS", "inline_helpers"]


def _common(typingctx, *operands):
    """The type Numba computes ``a op b`` in: the operands' unified type, or None where one
    is not a number."""
    if not all(isinstance(t, _SCALARS) for t in operands):
        return None
    common = typingctx.unify_types(*operands)
    return common if isinstance(common, _SCALARS) else None


def _compare(builder, python: str, x, y, common):
    """``x <python> y`` (both of type ``common``) as Python evaluates it: an i1."""
    if isinstance(common, types.Float):
        if python == "!=":
            return builder.fcmp_unordered("!=", x, y)
        return builder.fcmp_ordered(python, x, y)
    if isinstance(common, types.Integer) and common.signed:
        return builder.icmp_signed(python, x, y)
    return builder.icmp_unsigned(python, x, y)


def _cast(context, builder, values, types_, to) -> list:
    """``values`` (of ``types_``) converted to ``to``, as Numba converts operands."""
    return [context.cast(builder, v, t, to) for v, t in zip(values, types_)]


def _truth(context, builder, value, typ):
    """``value != 0`` (NaN is true): an i1."""
    zero = context.get_constant(typ, 0)
    return _compare(builder, "!=", value, zero, typ)


def _number(context, builder, truth, dtype):
    """``T(1.0) if truth else T(0.0)``."""
    return builder.select(truth, context.get_constant(dtype, 1.0),
                          context.get_constant(dtype, 0.0))


def _relation(dtype, python: str):
    @intrinsic
    def relation(typingctx, a, b):
        common = _common(typingctx, a, b)
        if common is None:
            return None

        def codegen(context, builder, sig, args):
            x, y = _cast(context, builder, args, sig.args, common)
            return _number(context, builder, _compare(builder, python, x, y, common), dtype)

        return dtype(a, b), codegen

    return relation


def _logic(dtype, combine):
    """``T(1.0) if combine(truths) else T(0.0)`` of the arguments' truth values."""
    def typer(typingctx, *operands):
        if not all(isinstance(t, _SCALARS) for t in operands):
            return None

        def codegen(context, builder, sig, args):
            truths = [_truth(context, builder, v, t) for v, t in zip(args, sig.args)]
            return _number(context, builder, combine(builder, *truths), dtype)

        return dtype(*operands), codegen

    return typer


def _helpers(dtype) -> SimpleNamespace:
    """Every helper of :data:`INLINE_HELPERS` for the kernels of ``dtype``, by its name."""
    made = {f"h_{name}": _relation(dtype, python) for name, python in _RELATIONS.items()}
    and_ = _logic(dtype, lambda builder, x, y: builder.and_(x, y))
    or_ = _logic(dtype, lambda builder, x, y: builder.or_(x, y))
    not_ = _logic(dtype, lambda builder, x: builder.not_(x))

    @intrinsic
    def h_and(typingctx, a, b):
        return and_(typingctx, a, b)

    @intrinsic
    def h_or(typingctx, a, b):
        return or_(typingctx, a, b)

    @intrinsic
    def h_not(typingctx, a):
        return not_(typingctx, a)

    @intrinsic
    def h_select(typingctx, c, a, b):
        result = _common(typingctx, a, b)
        if result is None or not isinstance(c, _SCALARS):
            return None

        def codegen(context, builder, sig, args):
            truth = _truth(context, builder, args[0], sig.args[0])
            x, y = _cast(context, builder, args[1:], sig.args[1:], result)
            return builder.select(truth, x, y)

        return result(c, a, b), codegen

    def extremum(python: str):
        @intrinsic
        def keep_first_or_nan(typingctx, a, b):
            result = _common(typingctx, a, b)
            if result is None:
                return None

            def codegen(context, builder, sig, args):
                x, y = _cast(context, builder, args, sig.args, result)
                keep = _compare(builder, python, x, y, result)  # a <python> b or a != a
                if isinstance(result, types.Float):
                    keep = builder.or_(keep, builder.fcmp_unordered("uno", x, x))
                return builder.select(keep, x, y)

            return result(a, b), codegen

        return keep_first_or_nan

    @intrinsic
    def h_sign(typingctx, x):
        result = _common(typingctx, x, dtype)  # the type of x * T(0.0)
        if result is None:
            return None

        def codegen(context, builder, sig, args):
            value = context.cast(builder, args[0], sig.args[0], result)
            zero = context.get_constant(result, 0)
            scaled = (builder.fmul(value, zero) if isinstance(result, types.Float)
                      else builder.mul(value, zero))
            positive = _compare(builder, ">", value, zero, result)
            negative = _compare(builder, "<", value, zero, result)
            return builder.select(positive, context.get_constant(result, 1),
                                  builder.select(negative, context.get_constant(result, -1),
                                                 scaled))

        return result(x), codegen

    made.update(h_and=h_and, h_or=h_or, h_not=h_not, h_select=h_select,
                h_min=extremum("<="), h_max=extremum(">="), h_sign=h_sign)
    assert set(made) == {f"h_{name}" for name in INLINE_HELPERS}
    return SimpleNamespace(**made)


@functools.cache
def inline_helpers(dtype: str) -> SimpleNamespace:
    """The intrinsics for the kernels of ``dtype`` ("float32" or "float64"), as attributes
    ``h_<name>`` (made once per process)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"no CPU helpers for dtype {dtype!r}")
    return _helpers(getattr(types, dtype))

