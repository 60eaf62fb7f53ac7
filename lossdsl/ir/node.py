"""The expression graph: hash-consed, immutable nodes forming a DAG, and its readable printer.

A :class:`Node` is ``(op, args, value, axes)``. Structurally equal nodes are the same object
(hash-consing), so common subexpressions are shared for free and identity is equality.

``axes`` describes the node's shape once inputs are bound (see ``shapes.py``):

* ``()``            a scalar (a constant, a param, a reduction),
* ``("n0",)``       one value per sample of sample domain ``n0``,
* ``("n0", "n0k")`` one value per sample and class (the class axis of ``n0``),
* ``None``          not yet known (the graph straight out of ``resolve.py``).

The operations themselves (their arity and kind) are listed in ``primitives.py``.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Iterable, Iterator

Axes = tuple[str, ...]

_INTERN: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _value_key(value):
    if isinstance(value, float):
        return ("float", value.hex()) if not math.isnan(value) else ("float", "nan")
    return value


class Node:
    """One operation applied to argument nodes. Create with :func:`node`; never mutate."""

    __slots__ = ("op", "args", "value", "axes", "depth", "key", "__weakref__")

    op: str
    args: tuple[Node, ...]
    value: object
    axes: Axes | None
    depth: int
    key: str  # stable structural hash: the same in every process (orders commutative args)

    def __setattr__(self, name, value):
        raise AttributeError("Node is immutable")

    def __repr__(self) -> str:
        return f"Node({to_source(self)})"

    def __str__(self) -> str:
        return to_source(self)

    def __reduce__(self):
        # The whole graph as one flat list: pickling node by node would recurse once per level
        # of the graph, and a deep one (a sum of thousands of terms) exceeds Python's limit.
        order = toposort([self])
        index = {id(n): position for position, n in enumerate(order)}
        records = [(n.op, tuple(index[id(a)] for a in n.args), n.value, n.axes) for n in order]
        return (_unflatten, (records,))


def node(
    op: str, args: Iterable[Node] = (), value: object = None, axes: Axes | None = None
) -> Node:
    """The unique node for ``(op, args, value, axes)`` (hash-consing constructor)."""
    args = tuple(args)
    key = (op, args, _value_key(value), axes)
    existing = _INTERN.get(key)
    if existing is not None:
        return existing
    new = object.__new__(Node)
    object.__setattr__(new, "op", op)
    object.__setattr__(new, "args", args)
    object.__setattr__(new, "value", value)
    object.__setattr__(new, "axes", axes)
    object.__setattr__(new, "depth", 1 + max((a.depth for a in args), default=0))
    text = f"{op}|{_value_key(value)!r}|{axes!r}|" + ",".join(a.key for a in args)
    object.__setattr__(new, "key", hashlib.blake2b(text.encode(), digest_size=10).hexdigest())
    _INTERN[key] = new
    return new


def _unflatten(records: list[tuple]) -> Node:
    """The last node of a list written by ``Node.__reduce__`` (arguments before their users)."""
    built: list[Node] = []
    for op, arguments, value, axes in records:
        built.append(node(op, [built[i] for i in arguments], value, axes))
    return built[-1]


def constant(value: float) -> Node:
    """A numeric constant (a scalar)."""
    return node("const", (), float(value), ())


def is_constant(n: Node, value: float | None = None) -> bool:
    """Whether ``n`` is a constant (equal to ``value`` when given)."""
    if n.op != "const":
        return False
    return value is None or n.value == value


def toposort(roots: Iterable[Node]) -> list[Node]:
    """All nodes reachable from ``roots``, each after its arguments (iterative, no recursion)."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in roots:
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                order.append(current)
                continue
            if id(current) in seen:
                continue
            seen.add(id(current))
            stack.append((current, True))
            for arg in reversed(current.args):
                if id(arg) not in seen:
                    stack.append((arg, False))
    return order


def walk(root: Node) -> Iterator[Node]:
    """Every node reachable from ``root`` once, arguments first."""
    return iter(toposort([root]))


def rebuild(roots: list[Node], rule) -> list[Node]:
    """Rebuild a graph bottom-up: ``rule(old, new_args)`` returns each node's replacement.

    Passes are written as rules on one node whose arguments were already rebuilt; this
    helper does the traversal and memoisation so that shared subgraphs are visited once.
    """
    done: dict[int, Node] = {}
    for current in toposort(roots):
        new_args = tuple(done[id(a)] for a in current.args)
        done[id(current)] = rule(current, new_args)
    return [done[id(r)] for r in roots]


def depends_on(root: Node, targets: set[int]) -> dict[int, bool]:
    """For every node under ``root``: does it depend on a node whose id is in ``targets``?"""
    result: dict[int, bool] = {}
    for current in toposort([root]):
        result[id(current)] = id(current) in targets or any(result[id(a)] for a in current.args)
    return result


# ---------------------------------------------------------------------------------------------
# Printing: str(node) is readable loss-language source.

_INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("/", 2), "pow": ("^", 4)}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_SPELLED = {"stop_gradient": "stop_gradient", "class_index": "class_index", "table_row": "rowof"}


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0"  # keep the sign: 1/-0 is -inf
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class SourcePrinter:
    """Prints a graph as loss-language source; one method per kind of node.

    Shared subexpressions are printed in full each time (the printer is for reading, not for
    computing); ``max_nodes`` guards against exponential output on very shared graphs.
    """

    def __init__(self, max_length: int = 20000):
        self.max_length = max_length
        self.memo: dict[int, tuple[str, int]] = {}

    def print(self, n: Node) -> str:
        # Arguments first, so that every print_* method finds its arguments in the memo and no
        # call nests deeper than one level, however deep the graph (a 10,000-term sum).
        for current in toposort([n]):
            self.visit(current)
        text, _ = self.visit(n)
        return text

    def visit(self, n: Node) -> tuple[str, int]:
        """(source, precedence) of ``n``; precedence 9 = atom."""
        cached = self.memo.get(id(n))
        if cached is not None:
            return cached
        method = getattr(self, f"print_{n.op}", None)
        result = method(n) if method else self.print_call(n)
        if len(result[0]) > self.max_length:
            result = ("...", 9)
        self.memo[id(n)] = result
        return result

    def _arg(self, n: Node, minimum: int, right: bool = False) -> str:
        text, precedence = self.visit(n)
        if precedence < minimum or (right and precedence == minimum):
            return f"({text})"
        return text

    def print_const(self, n: Node):
        text = _format_number(n.value)
        return (text, 3 if text.startswith("-") else 9)

    def print_input(self, n: Node):
        return (str(n.value), 9)

    print_param = print_input

    def print_count(self, n: Node):
        # n0 -> N (number of samples), n0k -> K (number of classes); other domains numbered;
        # n0#kept -> N_kept (the samples not dropped by ignore_index)
        axis = str(n.value)
        if axis.endswith("#kept"):
            index = axis.removesuffix("#kept").strip("n")
            return (f"N{index if index != '0' else ''}_kept", 9)
        letter = "K" if axis.endswith("k") else "N"
        index = axis.strip("nk")
        return (letter if index in ("", "0") else f"{letter}{index}", 9)

    def print_neg(self, n: Node):
        return ("-" + self._arg(n.args[0], 3), 3)

    def print_not(self, n: Node):
        return ("not " + self._arg(n.args[0], 0.5), 0.5)

    def _infix(self, n: Node, symbol: str, precedence: int):
        if n.op == "pow":  # right-associative, binds tighter than unary minus
            left = self._arg(n.args[0], 5)
            right = self._arg(n.args[1], 3)
            return (f"{left}^{right}", precedence)
        left = self._arg(n.args[0], precedence)
        right = self._arg(n.args[1], precedence, right=True)
        return (f"{left} {symbol} {right}", precedence)

    def print_add(self, n):
        return self._infix(n, "+", 1)

    def print_sub(self, n):
        return self._infix(n, "-", 1)

    def print_mul(self, n):
        return self._infix(n, "*", 2)

    def print_div(self, n):
        return self._infix(n, "/", 2)

    def print_pow(self, n):
        return self._infix(n, "^", 4)

    def _compare(self, n: Node):
        left, right = n.args
        if n.op == "eq":  # onehot(y) is built as class_index(y) == y
            for index, label in ((left, right), (right, left)):
                if index.op == "class_index" and index.args[0] is label:
                    return (f"onehot({self.visit(label)[0]})", 9)
        left = self._arg(n.args[0], 1.5)
        right = self._arg(n.args[1], 1.5, right=True)
        return (f"{left} {_COMPARE[n.op]} {right}", 0.9)

    print_lt = print_le = print_gt = print_ge = print_eq = print_ne = _compare

    def print_and(self, n):
        return (f"{self._arg(n.args[0], 0.7)} and {self._arg(n.args[1], 0.7, True)}", 0.7)

    def print_or(self, n):
        return (f"{self._arg(n.args[0], 0.6)} or {self._arg(n.args[1], 0.6, True)}", 0.6)

    def print_table_row(self, n: Node):
        if n.value == "classvec":  # a per-class vector: a one-row table read at row 0
            return (f"classvec({self.visit(n.args[0])[0]})", 9)
        return self.print_call(n)

    def print_call(self, n: Node):
        args = [self.visit(a)[0] for a in n.args]
        if n.op in ("onehot",) and n.value is not None:
            args.append(_format_number(n.value))
        return (f"{_SPELLED.get(n.op, n.op)}({', '.join(args)})", 9)


def to_source(n: Node) -> str:
    """Readable loss-language source for a graph."""
    return SourcePrinter().print(n)
