"""Simplification: the canonicalising node constructor ``make`` and the ``simplify`` pass.

``make(op, args)`` computes the node's axes, folds constants and applies algebraic identities
(``x*1``, ``x+0``, ``x-x``, ``--x``, ``log(exp(x))``, ...), and orders the arguments of
commutative operations so that equal expressions are the same node (CSE by hash-consing).
Every pass that builds nodes goes through it, so graphs stay small as they are built.

Assumptions (the usual ones of symbolic algebra systems such as SymPy): ``x*0 -> 0`` and
``x-x -> 0`` assume ``x`` is finite. ``x/x`` is never simplified (it is NaN at 0).
"""

from __future__ import annotations

from ..ir.node import Axes, Node, constant, is_constant, node, rebuild
from ..ops.primitives import COMPARISONS, OPERATIONS
from ..reference import ELEMENTWISE_NUMPY, fold

# min and max are not reordered: on ties the derivative goes to the argument written first.
_COMMUTATIVE = {"add", "mul", "eq", "ne", "and", "or"}


def result_axes(op: str, args: tuple[Node, ...], given: Axes | None = None) -> Axes | None:
    """The axes of ``op`` applied to ``args`` (None while any argument's axes are unknown)."""
    if op in ("const", "param", "count"):
        return ()
    if op == "input":
        return given
    if any(a.axes is None for a in args):
        return None
    if op == "sum":
        return ()
    if op == "rowsum" or op == "rowmax":
        return args[0].axes[:1]
    if op == "class_index":
        if not args[0].axes:
            # a scalar label (pick(z, 1), onehot(1)) names no sample domain of its own: the
            # class axis is the one it meets, which shapes.specialize infers and passes in
            return given
        sample = args[0].axes[0]
        return (sample, sample + "k")
    if op == "table_row":
        if given is not None or not args[1].axes:
            return given
        sample = args[1].axes[0]
        return (sample, sample + "k")
    longest: Axes = ()
    for a in args:
        if len(a.axes) > len(longest):
            longest = a.axes
    return longest


def _c(value: float) -> Node:
    return constant(value)


def _neg(x: Node) -> Node:
    return make("neg", (x,))


def _simplify_add(a: Node, b: Node) -> Node | None:
    if is_constant(a, 0.0):
        return b
    if is_constant(b, 0.0):
        return a
    if b.op == "neg":
        return make("sub", (a, b.args[0]))
    if a.op == "neg":
        return make("sub", (b, a.args[0]))
    if a is b:
        return make("mul", (_c(2.0), a))
    # like terms: c1*x + c2*x -> (c1 + c2)*x (also x + c*x)
    a_factor, a_rest = (
        (a.args[0].value, a.args[1]) if a.op == "mul" and a.args[0].op == "const" else (1.0, a)
    )
    b_factor, b_rest = (
        (b.args[0].value, b.args[1]) if b.op == "mul" and b.args[0].op == "const" else (1.0, b)
    )
    if a_rest is b_rest and a_rest.op != "const":
        return make("mul", (_c(a_factor + b_factor), a_rest))
    # where(c, x, 0) + where(c, 0, y) -> where(c, x, y): one select instead of two
    if a.op == "where" and b.op == "where" and a.args[0] is b.args[0]:
        if is_constant(a.args[2], 0.0) and is_constant(b.args[1], 0.0):
            return make("where", (a.args[0], a.args[1], b.args[2]))
        if is_constant(a.args[1], 0.0) and is_constant(b.args[2], 0.0):
            return make("where", (a.args[0], b.args[1], a.args[2]))
    return None


def _simplify_reduction(op: str, x: Node) -> Node | None:
    """Move factors that do not vary along the reduced axis out: sum(c*f) -> c*sum(f)."""
    if is_constant(x, 0.0):  # a Hessian term that vanished: rowsum(0) would reach the glue
        return x
    if x.axes is None or not x.axes:
        return None
    axis = x.axes[-1]

    def constant_along(n: Node) -> bool:
        return n.axes is not None and axis not in n.axes

    # Peel every such factor, divisor and negation in a loop, then rebuild them around one
    # reduction: a product of thousands of per-sample-constant factors must not recurse.
    outside: list[tuple[str, Node | None]] = []
    inner = x
    while True:
        if inner.op == "mul":
            a, b = inner.args
            if constant_along(a):
                outside.append(("mul", a))
                inner = b
                continue
            if constant_along(b):
                outside.append(("mul", b))
                inner = a
                continue
        elif inner.op == "neg":
            outside.append(("neg", None))
            inner = inner.args[0]
            continue
        elif inner.op == "div" and constant_along(inner.args[1]):
            outside.append(("div", inner.args[1]))
            inner = inner.args[0]
            continue
        break
    if not outside:
        return None
    result = make(op, (inner,))
    for kind, factor in reversed(outside):
        if kind == "mul":
            result = make("mul", (factor, result))
        elif kind == "neg":
            result = make("neg", (result,))
        else:
            result = make("div", (result, factor))
    return result


def _simplify_sub(a: Node, b: Node) -> Node | None:
    if is_constant(b, 0.0):
        return a
    if is_constant(a, 0.0):
        return _neg(b)
    if a is b:
        return _c(0.0)
    if b.op == "neg":
        return make("add", (a, b.args[0]))
    if b.op == "const" and b.value < 0:
        return make("add", (a, _c(-b.value)))
    return None


def _simplify_mul(a: Node, b: Node) -> Node | None:
    if is_constant(a, 0.0) or is_constant(b, 0.0):
        return _c(0.0)
    if is_constant(a, 1.0):
        return b
    if is_constant(b, 1.0):
        return a
    if is_constant(a, -1.0):
        return _neg(b)
    if is_constant(b, -1.0):
        return _neg(a)
    if a.op == "neg":
        return _neg(make("mul", (a.args[0], b)))
    if b.op == "neg":
        return _neg(make("mul", (a, b.args[0])))
    if a.op == "const" and b.op == "mul" and b.args[0].op == "const":
        return make("mul", (_c(a.value * b.args[0].value), b.args[1]))
    # float constant factors outwards, (2*x)*(0.5*y) -> 1*(x*y), so they fold together
    if a.op != "const":
        for first, second in ((a, b), (b, a)):
            if first.op == "mul" and first.args[0].op == "const":
                return make("mul", (first.args[0], make("mul", (first.args[1], second))))
    # where(c, x, 0) * y -> where(c, x*y, 0): the product is then never 0 * inf = NaN in the
    # branch not taken (the classic NaN-through-where gradient problem).
    for first, second in ((a, b), (b, a)):
        if first.op == "where":
            condition, then, otherwise = first.args
            if is_constant(otherwise, 0.0):
                return make("where", (condition, make("mul", (then, second)), _c(0.0)))
            if is_constant(then, 0.0):
                return make("where", (condition, _c(0.0), make("mul", (otherwise, second))))
    return None


def _simplify_div(a: Node, b: Node) -> Node | None:
    if is_constant(b, 1.0):
        return a
    if is_constant(a, 0.0) and b.op == "const" and b.value != 0:
        return _c(0.0)
    if a.op == "neg":
        return _neg(make("div", (a.args[0], b)))
    if b.op == "neg":
        return _neg(make("div", (a, b.args[0])))
    return None


def _simplify_one(op: str, args: tuple[Node, ...]) -> Node | None:
    """An identity-rewritten replacement for ``op(args)``, or None to build the node."""
    if op == "add":
        return _simplify_add(*args)
    if op == "sub":
        return _simplify_sub(*args)
    if op == "mul":
        return _simplify_mul(*args)
    if op == "div":
        return _simplify_div(*args)
    x = args[0] if args else None
    if op == "neg":
        if x.op == "neg":
            return x.args[0]
        if x.op == "sub":
            return make("sub", (x.args[1], x.args[0]))
    elif op == "pow":
        base, exponent = args
        if is_constant(exponent, 1.0):
            return base
        if is_constant(exponent, 0.0):
            return _c(1.0)
    elif op == "log":
        if x.op == "exp":
            return x.args[0]
    elif op == "abs":
        if x.op in ("neg", "abs"):  # |-x| = ||x|| = |x|
            return make("abs", x.args)
    elif op == "stop_gradient":
        if x.op in ("const", "param", "count", "stop_gradient"):
            return x
    elif op == "where":
        condition, then, otherwise = args
        if then is otherwise:
            return then
        if condition.op == "const":
            return then if condition.value != 0 else otherwise
        # a branch that tests the same condition again knows its outcome
        if then.op == "where" and then.args[0] is condition:
            return make("where", (condition, then.args[1], otherwise))
        if otherwise.op == "where" and otherwise.args[0] is condition:
            return make("where", (condition, then, otherwise.args[2]))
    elif op in ("min", "max") and args[0] is args[1]:
        return args[0]
    return None


def make(
    op: str,
    args: tuple[Node, ...] | list[Node] = (),
    value: object = None,
    axes: Axes | None = None,
) -> Node:
    """Build ``op(args)`` in canonical, simplified form (the constructor every pass uses)."""
    args = tuple(args)
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}")  # a compiler bug, not a user error
    if op in ELEMENTWISE_NUMPY and args and all(a.op == "const" for a in args):
        if op != "stop_gradient":
            return _c(fold(op, [a.value for a in args]))
    if op in _COMMUTATIVE and len(args) == 2:
        a, b = args
        # constants first, then a stable structural order, so a*b and b*a are one node
        if (b.op == "const" and a.op != "const") or (
            (a.op == "const") == (b.op == "const") and b.key < a.key
        ):
            args = (b, a)
    if op in ELEMENTWISE_NUMPY:
        replacement = _simplify_one(op, args)
        if replacement is not None:
            return replacement
    if op in ("sum", "rowsum"):
        replacement = _simplify_reduction(op, args[0])
        if replacement is not None:
            return replacement
    if op == "count_as" and is_constant(args[1], 1.0):
        return args[0]  # every sample counts once: the plain mean
    if op in COMPARISONS and args[0] is args[1] and args[0].op == "const":
        return _c(fold(op, [args[0].value, args[1].value]))
    return node(op, args, value, result_axes(op, args, axes))


def simplify(roots: list[Node]) -> list[Node]:
    """The simplify pass: rebuild ``roots`` through ``make`` (folding and identities)."""

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if not args:
            return old
        return make(old.op, args, old.value, old.axes)

    return rebuild(roots, rule)
