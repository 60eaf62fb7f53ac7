"""The expression graph: hash-consed, immutable nodes forming a DAG, and its readable printer.

A :class:`Node` is ``(op, args, value, axes)``. Structurally equal nodes are the same object
(hash-consing), so common subexpressions are shared for free and identity is equality.

``axes`` describes the node's shape once inputs are bound (see ``shapes.py``):

* ``()``            a scalar (a constant, a param, a reduction),
* ``("n0",)``       one value per sample of sample domain ``n0``,
* ``("n0", "n0k")`` one value per sample and class (the class axis of ``n0``),
* ``("n0", "n0g")`` one value per item of each group, when the samples are grouped (rows of
  varying length; ``n0`` then counts the groups),
* ``None``          not yet known (the graph straight out of ``resolve.py``).

The operations themselves (their arity and kind) are listed in ``primitives.py``.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Iterable, Iterator

from .axes import Axis

Axes = tuple[str, ...]

_INTERN: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

#: The operation names a node may carry: the primitive registry (:mod:`lossdsl.ops`) adds
#: each record's name as it registers it, so an op is an id of the registry and a misspelt
#: one fails where the node is built, not in a later pass or a printer.
OPERATION_NAMES: set[str] = set()


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
    """The unique node for ``(op, args, value, axes)`` (hash-consing constructor); ``op`` is
    the name of a registered primitive."""
    if op not in OPERATION_NAMES:
        raise ValueError(f"unknown operation {op!r}: not in the primitive registry")
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


def axis_length(axis: str) -> Node:
    """The length of ``axis`` along a row: a ``count`` leaf, a scalar, except for the items of
    groups (``n<d>g``), whose number is each group's own (one value per group), and for the
    partner classes of a class (``n<d>c``), ``K - 1``."""
    parsed = Axis(axis)
    if parsed.is_ragged:
        return node("count", (), axis, (parsed.samples_of(),))
    if parsed.is_partner_classes:
        # each class of a row has the row's other K - 1 classes as partners; written with
        # the class axis' count, the only width the binder knows
        return node("sub", (node("count", (), parsed.own_classes(), ()), constant(1.0)),
                    None, ())
    return node("count", (), axis, ())


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


#: The operations a loop over the samples cannot compute while it runs, because each result
#: needs every sample: ``sum``, and the cumulative sums that :mod:`lossdsl.ops.scans` adds
#: as it registers them. A pass computes their arguments; later passes read them.
PASS_BOUNDARIES: set[str] = {"sum", "at_partner"}


def sums_read(root: Node) -> list[Node]:
    """The ``sum`` (and cumulative sum) nodes a computation of ``root`` reads, not looking
    inside them (what a loop computing ``root`` needs computed by earlier loops)."""
    found, seen, stack = [], set(), [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op in PASS_BOUNDARIES:
            found.append(n)
            continue
        stack.extend(n.args)
    return found


def to_source(n: Node) -> str:
    """Readable loss-language source for a graph (see :mod:`lossdsl.ir.source`)."""
    # the printer is a visitor over nodes, a layer above this module: imported when used
    from .source import to_source as print_source

    return print_source(n)
