"""IR validity: what a well-formed expression graph is, checked node by node.

Every pass assumes these rules of the graph it is given; :func:`verify` states them in one
place (as tinygrad's ``uop/spec.py``), so that a pass that breaks one is caught where it does,
not in a kernel that computes the wrong thing:

* the graph is a DAG of :class:`~lossdsl.ir.node.Node` objects (no cycles, no other objects
  among the arguments);
* each node's operation is in the op table (:data:`lossdsl.ops.primitives.OPERATIONS`) and
  has that operation's arity;
* leaves carry what they stand for: a constant's value is a float (any, infinities and NaN
  included), an input's or param's a name, a count's the axis it counts;
* axes, once known, agree with the operation's kind (the conventions of ``node.py`` and
  ``shapes.py``: sample axes ``n<d>``, their class axes ``n<d>k`` or a group's items
  ``n<d>g``, a table's row axis ``t<d>``):

  - ``elementwise`` (and ``count_as``): the broadcast of the arguments' axes, each
    argument's axes a prefix of the result's (a sample vector meets a class matrix row-wise),
  - ``row`` (``rowsum``, ``rowmax``): the argument's ``(n<d>, n<d>k)`` without its class axis,
    or a class pair sum's ``(n<d>, n<d>k, n<d>c)`` without its partner classes,
  - ``reduce`` (``sum``): a scalar, of a per-sample argument ``(n<d>,)``,
  - ``scan`` (``sum_from`` and its kin): ``(n<d>,)``, of keys ``(n<d>,)``, values and strata
    ``()`` or ``(n<d>,)``; a group's total (``sum_group``) may also sum values
    ``(n<d>, n<d>k)``, each column over the group, and is then ``(n<d>, n<d>k)``; with
    a number for its keys and strata (``colsum``: every sample in one group) it has its
    values' axes,
  - ``class_index``: the class matrix ``(n<d>, n<d>k)`` of its labels' sample axis (or,
    within a class pair sum, ``(n<d>, n<d>k, n<d>c)``: the index of the partner class c),
  - ``gather`` (``table_row``): row ``y_i`` of an input table ``(t<d>, n<d>k)``, one value per
    sample and class of the labels ``y`` (within a class pair sum, ``(n<d>, n<d>k, n<d>c)``:
    read at the partner class c); ``at_partner`` a per-sample value ``(n<d>,)`` at the
    partners ``(n<d>, n<d>g)`` of a pair sum, or a class matrix ``(n<d>, n<d>k)`` at the
    partner classes ``(n<d>, n<d>k, n<d>c)`` of a class pair sum; ``pairdot`` two input
    matrices ``(n<d>, n<d>k)``, a value per pair ``(n<d>, n<d>g)``; ``pairmatvec`` weights
    per pair (or per sample, or a number) times rows ``(n<d>, n<d>k)``, a row per sample,
  - a node whose arguments' axes are unknown has unknown axes (``None``);

* a typed graph (every stage after ``shapes.specialize``) has every axis known, no shape
  macro left (``mean``, ``rowmean``), and one set of axes per input name.

:func:`verify_schedule` adds the scheduler's promise: each pass reads only sums (and
cumulative sums) that earlier passes computed. :func:`check` and :func:`check_schedule` run
them only when the environment sets ``LOSSDSL_VERIFY_IR=1`` (a debug switch: the checks walk
every graph once more).

A graph that breaks a rule is a compiler bug, not a user's mistake: the error is an
:class:`InvalidGraphError` (an ``AssertionError``), which names the offending node briefly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..ops.primitives import OPERATIONS
from ..ops.scans import GROUP_SCANS, is_column_total
from .axes import Axis, counted_axis
from .node import Node, sums_read, to_source

if TYPE_CHECKING:  # the scheduler is a later stage: only its type is named here
    from ..passes.schedule import Schedule

#: The environment variable that turns :func:`check` and :func:`check_schedule` on.
ENVIRONMENT_SWITCH = "LOSSDSL_VERIFY_IR"

_SOURCE_EXCERPT = 160


class InvalidGraphError(AssertionError):
    """A graph that breaks a rule of the IR: a compiler bug, never a user's mistake."""

    def __init__(self, message: str, culprit: object | None = None):
        self.culprit = culprit
        text = message if culprit is None else f"{message}\n    at {describe(culprit)}"
        super().__init__(text)


def describe(n: object) -> str:
    """A short, one-line description of ``n``: its operation, value, axes and its arguments'
    operations, then the start of its source (for nodes whose graph can be printed)."""
    if not isinstance(n, Node):
        return f"a {type(n).__name__}, not a Node: {_short(repr(n))}"
    arguments = ", ".join(_head(a) for a in n.args)
    text = f"{_head(n)}({arguments}) with axes {n.axes!r}"
    if _printable(n):
        try:
            text += f": {_short(to_source(n))}"
        except Exception:  # noqa: BLE001 - the printer may trip on the very fault reported
            pass
    return text


def _head(n: object) -> str:
    if not isinstance(n, Node):
        return f"<{type(n).__name__}>"
    return n.op if n.value is None else f"{n.op}[{n.value!r}]"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SOURCE_EXCERPT else text[:_SOURCE_EXCERPT - 3] + "..."


def _printable(n: Node) -> bool:
    """Whether ``n``'s graph is a DAG of nodes (what the source printer walks)."""
    _, problem = _walk([n])
    return problem is None


def _toposort(roots: Iterable[object]) -> list[Node]:
    """Every node under ``roots``, arguments first; an error for a cycle or a non-Node
    (the graph's own ``toposort`` assumes neither can happen)."""
    order, problem = _walk(roots)
    if problem is not None:
        raise InvalidGraphError(*problem)
    return order


def _walk(roots: Iterable[object]) -> tuple[list[Node], tuple[str, object] | None]:
    """(every node under ``roots``, arguments first; None) or (the nodes walked so far;
    (what is wrong, where)) at the first cycle or non-Node."""
    order: list[Node] = []
    done: set[int] = set()
    on_path: set[int] = set()  # the nodes whose arguments are being walked
    for root in roots:
        if not isinstance(root, Node):
            return order, ("a root of the graph is not a Node", root)
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                on_path.discard(id(current))
                done.add(id(current))
                order.append(current)
                continue
            if id(current) in done:
                continue
            if id(current) in on_path:
                return order, ("the graph has a cycle through this node", current)
            if not isinstance(current.args, tuple):
                return order, ("a node's arguments are not a tuple", current)
            for arg in current.args:
                if not isinstance(arg, Node):
                    return order, (f"an argument of this node is a {type(arg).__name__}, "
                                   "not a Node", current)
            on_path.add(id(current))
            stack.append((current, True))
            for arg in reversed(current.args):
                if id(arg) not in done:
                    if id(arg) in on_path:
                        return order, ("the graph has a cycle through this node", arg)
                    stack.append((arg, False))
    return order, None


def _is_sample_axis(axis: object) -> bool:
    parsed = Axis.parse(axis)
    return parsed is not None and parsed.is_samples


def _is_class_matrix(axes: tuple) -> bool:
    """``(n<d>, n<d>k)``, or the ragged rows ``(n<d>, n<d>g)`` of grouped samples."""
    return (len(axes) == 2 and _is_sample_axis(axes[0])
            and axes[1] in (Axis(axes[0]).classes(), Axis(axes[0]).items()))


def _is_class_pairs(axes: tuple) -> bool:
    """``(n<d>, n<d>k, n<d>c)``: a value per ordered pair of distinct classes of each row
    (the summand of ``classpairsum``)."""
    return (len(axes) == 3 and _is_class_matrix(axes[:2]) and not Axis(axes[1]).is_ragged
            and axes[2] == Axis(axes[1]).partner_classes())


def _counts_an_axis(name: str) -> bool:
    """Whether a count leaf's name is what a count counts: a sample axis, its class axis, or
    the samples kept by ignore_index."""
    try:
        axis, _ = counted_axis(name)
    except ValueError:
        return False
    return not axis.is_table_rows


def _valid_axes(axes: object) -> bool:
    """``()``, ``(n<d>,)``, ``(n<d>, n<d>k)`` or ``(n<d>, n<d>k, n<d>c)``: the axes of a
    value (tables aside)."""
    if not isinstance(axes, tuple):
        return False
    if len(axes) == 1:
        return _is_sample_axis(axes[0])
    return len(axes) == 0 or _is_class_matrix(axes) or _is_class_pairs(axes)


def _broadcast(args: tuple[Node, ...]) -> tuple | None:
    """The axes of an elementwise operation on ``args`` (whose axes are known): the longest,
    or None when an argument's axes are not a prefix of them."""
    longest: tuple = ()
    for a in args:
        if len(a.axes) > len(longest):
            longest = a.axes
    if any(a.axes != longest[:len(a.axes)] for a in args):
        return None
    return longest


class _Verifier:
    """The rules of one graph; ``typed``: the graph is past ``shapes.specialize``."""

    def __init__(self, typed: bool):
        self.typed = typed
        self.input_axes: dict[str, tuple] = {}

    def node(self, n: Node) -> None:
        primitive = OPERATIONS.get(n.op) if isinstance(n.op, str) else None
        if primitive is None:
            raise InvalidGraphError(f"unknown operation {n.op!r}", n)
        if len(n.args) != primitive.arity:
            raise InvalidGraphError(
                f"'{n.op}' takes {primitive.arity} argument(s), this node has {len(n.args)}", n)
        if self.typed and primitive.kind == "macro":
            raise InvalidGraphError(f"'{n.op}' is a shape macro, which shapes.specialize "
                                    "expands: none is left in a typed graph", n)
        if n.axes is not None and not isinstance(n.axes, tuple):
            raise InvalidGraphError("axes must be a tuple of axis names or None", n)
        if n.axes is None:
            if self.typed:
                raise InvalidGraphError("a node of a typed graph has unknown axes", n)
            if n.op in ("const", "param", "count"):
                raise InvalidGraphError(f"a '{n.op}' is a scalar: its axes are ()", n)
            return
        rule = getattr(self, f"kind_{primitive.kind}")
        rule(n)

    def _arguments_known(self, n: Node) -> None:
        """A node whose axes are known needs its arguments' (only scalar leaves and a
        scalar label's class index are known before)."""
        if any(a.axes is None for a in n.args):
            raise InvalidGraphError("the node's axes are known, an argument's are not", n)

    def kind_leaf(self, n: Node) -> None:
        if n.op == "class_index":
            self._class_index(n)
            return
        if n.op == "const":
            if not isinstance(n.value, float):
                raise InvalidGraphError(
                    f"a constant's value must be a float, not a {type(n.value).__name__}", n)
        elif not isinstance(n.value, str) or not n.value:
            raise InvalidGraphError(f"a '{n.op}' leaf is named by a string", n)
        elif n.op == "count" and not _counts_an_axis(n.value):
            raise InvalidGraphError("a count counts an axis ('n<d>', 'n<d>k') or the samples "
                                    "kept ('n<d>#kept')", n)
        if n.op == "count" and n.axes and counted_axis(n.value)[0].is_ragged:
            if n.axes != (counted_axis(n.value)[0].samples_of(),):
                raise InvalidGraphError("the items of each group are counted per group: a "
                                        "count of n<d>g has the axes () or (n<d>,)", n)
            return
        if n.op != "input":
            if n.axes != ():
                raise InvalidGraphError(f"a '{n.op}' is a scalar: its axes are ()", n)
            return
        rows, columns = (n.axes if len(n.axes) == 2 else (None, None))
        rows, columns = Axis.parse(rows), Axis.parse(columns)
        table = rows is not None and rows.is_table_rows and columns is not None \
            and columns.is_classes
        if not (table or _valid_axes(n.axes)):
            raise InvalidGraphError("an input is a scalar (), a vector (n<d>,), a matrix "
                                    "(n<d>, n<d>k) or a table (t<d>, n<d>k)", n)
        seen = self.input_axes.setdefault(n.value, n.axes)
        if seen != n.axes:
            raise InvalidGraphError(f"input '{n.value}' has axes {seen!r} elsewhere in the "
                                    "graph", n)

    def _class_index(self, n: Node) -> None:
        (labels,) = n.args
        if labels.axes is not None and len(labels.axes) > 1:
            raise InvalidGraphError("class_index reads labels with one value per sample", n)
        if not (_is_class_matrix(n.axes) or _is_class_pairs(n.axes)):
            raise InvalidGraphError("class_index has the axes (n<d>, n<d>k) of a class matrix "
                                    "(or (n<d>, n<d>k, n<d>c) of its class pairs)", n)
        if labels.axes and labels.axes[0] != n.axes[0]:
            raise InvalidGraphError("class_index has the sample axis of its labels", n)
        if n.value is not None and (not isinstance(n.value, int) or n.value < 1):
            raise InvalidGraphError("class_index's value is the number of classes (onehot(y, "
                                    "K)) or None", n)

    def kind_elementwise(self, n: Node) -> None:
        self._arguments_known(n)
        expected = _broadcast(n.args)
        if expected is None:
            raise InvalidGraphError(
                "the arguments' axes do not broadcast: "
                + ", ".join(repr(a.axes) for a in n.args), n)
        if n.axes != expected:
            raise InvalidGraphError(
                f"an elementwise node has its arguments' broadcast axes {expected!r}", n)
        if not _valid_axes(n.axes):
            raise InvalidGraphError("an elementwise node's axes are (), (n<d>,), "
                                    "(n<d>, n<d>k) or (n<d>, n<d>k, n<d>c)", n)

    kind_count = kind_elementwise  # count_as(l, s): the value l, broadcast with its counts

    def kind_row(self, n: Node) -> None:
        self._arguments_known(n)
        x, *targets = n.args
        for target in targets:  # logit_shift's target: one value per row (or one for all)
            if target.axes and x.axes and target.axes != x.axes[:1]:
                raise InvalidGraphError(f"'{n.op}' takes one target per row {x.axes[:1]!r}, "
                                        f"not {target.axes!r}", n)
        # before specialisation a scalar argument is the user's mistake, which
        # shapes.specialize reports with its position (softmax(0))
        pairs = x.axes is not None and _is_class_pairs(x.axes)
        if pairs and n.op != "rowsum":
            raise InvalidGraphError(f"'{n.op}' cannot reduce class pairs {x.axes!r}", n)
        if (self.typed or x.axes) and not (_is_class_matrix(x.axes) or pairs):
            raise InvalidGraphError(f"'{n.op}' reduces a class matrix (n<d>, n<d>k), not "
                                    f"{x.axes!r}", n)
        if n.axes != x.axes[:-1]:
            raise InvalidGraphError(f"'{n.op}' drops the class axis: its axes are "
                                    f"{x.axes[:-1]!r}", n)

    def kind_reduce(self, n: Node) -> None:
        self._arguments_known(n)
        if n.axes != ():
            raise InvalidGraphError("a sum is a scalar: its axes are ()", n)
        (x,) = n.args
        if self.typed and (len(x.axes) != 1 or not _is_sample_axis(x.axes[0])):
            raise InvalidGraphError("a sum reduces one value per sample (n<d>,) (a class "
                                    f"matrix's rows first), not {x.axes!r}", n)

    def kind_scan(self, n: Node) -> None:
        self._arguments_known(n)
        values, keys, strata = n.args
        rows = n.op in GROUP_SCANS and len(n.axes) == 2
        if rows and (not _is_sample_axis(n.axes[0]) or Axis(n.axes[1]).is_ragged
                     or not Axis(n.axes[1]).is_classes or values.axes != n.axes):
            raise InvalidGraphError(f"'{n.op}' of rows sums values (n<d>, n<d>k) column by "
                                    f"column, not {values.axes!r} into {n.axes!r}", n)
        if not rows and (len(n.axes) != 1 or not _is_sample_axis(n.axes[0])):
            raise InvalidGraphError(f"'{n.op}' has one value per sample (n<d>,), not "
                                    f"{n.axes!r}", n)
        # a column total (colsum): a group's total whose key, a number, puts every sample in
        # one group; its values then give it its samples
        if is_column_total(n) and values.axes == n.axes:
            return
        if keys.axes != n.axes[:1] or values.axes not in ((), n.axes[:1], n.axes) \
                or strata.axes not in ((), n.axes[:1]):
            raise InvalidGraphError(f"'{n.op}' sums values () or {n.axes!r} over keys "
                                    f"{n.axes!r} within strata () or {n.axes!r}", n)

    def kind_gather(self, n: Node) -> None:
        self._arguments_known(n)
        if n.op == "at_partner" and _is_class_pairs(n.axes):
            # a class matrix stored by a pass, read at the partner class of each class pair
            if n.args[0].axes != n.axes[:2]:
                raise InvalidGraphError("at_partner reads a class matrix (n<d>, n<d>k) at "
                                        "the partner classes (n<d>, n<d>k, n<d>c)", n)
            return
        if n.op in ("pairdot", "pairmatvec"):
            self._rows_of_pairs(n)
            return
        if n.op in ("at_partner", "partner_first"):
            (value,) = n.args
            if len(n.axes) != 2 or not Axis(n.axes[1]).is_ragged \
                    or value.axes not in ((), n.axes[:1]):
                raise InvalidGraphError(f"{n.op} reads a value (n<d>,) at the partners "
                                        "(n<d>, n<d>g) of each sample", n)
            return
        table, labels = n.args
        if table.op != "input":
            raise InvalidGraphError("table_row reads a table bound to an input", n)
        if not (_is_class_matrix(n.axes) or _is_class_pairs(n.axes)):
            raise InvalidGraphError("table_row has the axes (n<d>, n<d>k) of a class matrix "
                                    "(or (n<d>, n<d>k, n<d>c): read at the partner class)", n)
        if len(table.axes) != 2 or table.axes[1] != n.axes[1]:
            raise InvalidGraphError("table_row reads a table (t<d>, n<d>k) whose columns are "
                                    "its classes", n)
        if len(labels.axes) > 1 or (labels.axes and labels.axes[0] != n.axes[0]):
            raise InvalidGraphError("table_row reads one row per sample of its labels "
                                    "(n<d>,) or one row for every sample (a scalar label)", n)

    def _rows_of_pairs(self, n: Node) -> None:
        """``pairdot(u, v)``: two input matrices ``(n<d>, n<d>k)`` (their partner leaves not),
        one value per pair ``(n<d>, n<d>g)``; ``pairmatvec(w, r)``: weights ``()``,
        ``(n<d>,)`` or per pair ``(n<d>, n<d>g)``, rows ``(n<d>, n<d>k)`` of the pair's
        samples, a row ``(n<d>, n<d>k)`` per sample."""
        if n.op == "pairdot":
            rows = n.args[0].axes
            if (not all(a.op == "input" and a.axes == rows for a in n.args)
                    or not _is_class_matrix(rows) or Axis(rows[1]).is_ragged
                    or n.axes != (rows[0], Axis(rows[0]).items())):
                raise InvalidGraphError("pairdot reads two input matrices (n<d>, n<d>k) of one "
                                        "width, one value per pair (n<d>, n<d>g)", n)
            return
        weights, rows = n.args
        if (not _is_class_matrix(rows.axes) or Axis(rows.axes[1]).is_ragged
                or n.axes != rows.axes
                or weights.axes not in ((), rows.axes[:1],
                                        (rows.axes[0], Axis(rows.axes[0]).items()))):
            raise InvalidGraphError("pairmatvec sums weights (), (n<d>,) or (n<d>, n<d>g) "
                                    "times rows (n<d>, n<d>k) over each sample's partners", n)

    def kind_macro(self, n: Node) -> None:
        self._arguments_known(n)  # mean/rowmean of typed arguments: only in untyped graphs


def verify(roots: Node | Iterable[Node], *, typed: bool = True) -> None:
    """Check the graph under ``roots`` against the rules of the IR (see the module's
    docstring); raise :class:`InvalidGraphError` at the first node (arguments first) that
    breaks one. ``typed=False`` for a graph straight out of ``resolve`` (axes unknown, shape
    macros left); every later stage is typed."""
    verifier = _Verifier(typed)
    for n in _toposort([roots] if isinstance(roots, Node) else roots):
        verifier.node(n)


def verify_schedule(schedule: Schedule) -> None:
    """Check the graph of ``schedule`` and its
    passes: each loop accumulates sums over its own axis and writes outputs of its own axis,
    and reads only sums of earlier passes (scalar outputs: sums of any pass)."""
    roots = [o.node for o in schedule.scalar_outputs]
    for loop in schedule.loops:
        roots += [*loop.reductions, *loop.scans, *(o.node for o in loop.outputs)]
    verify(roots)
    computed_in: dict[int, int] = {}
    for loop in schedule.loops:
        for reduction in loop.reductions:
            if reduction.op != "sum" or reduction.args[0].axes != (loop.axis,):
                raise InvalidGraphError(f"a loop over {loop.axis!r} accumulates only sums "
                                        f"over {loop.axis!r}", reduction)
            computed_in[id(reduction)] = loop.index
        for scan in loop.scans:
            if scan.axes[:1] != (loop.axis,):
                raise InvalidGraphError(f"a loop over {loop.axis!r} writes the summands of "
                                        f"cumulative sums over {loop.axis!r} only", scan)
            computed_in[id(scan)] = loop.index
        for output in loop.outputs:
            node_axes = output.node.axes
            if (not output.axes or output.axes[0] != loop.axis
                    or node_axes != tuple(output.axes[:len(node_axes)])):
                raise InvalidGraphError(f"output '{output.name}' of axes {output.axes!r} is not "
                                        f"written by a loop over {loop.axis!r}", output.node)
    for loop in schedule.loops:
        for root in [*(r.args[0] for r in loop.reductions), *(o.node for o in loop.outputs),
                     *(a for scan in loop.scans for a in scan.args)]:
            for reduction in sums_read(root):
                if computed_in.get(id(reduction), loop.index) >= loop.index:
                    raise InvalidGraphError(f"pass {loop.index} reads a sum that no earlier "
                                            "pass computes", reduction)
    for output in schedule.scalar_outputs:
        if output.node.axes != ():
            raise InvalidGraphError(f"scalar output '{output.name}' is not a scalar",
                                    output.node)
        for reduction in sums_read(output.node):
            if id(reduction) not in computed_in:
                raise InvalidGraphError(f"scalar output '{output.name}' reads a sum that no "
                                        "pass computes", reduction)


def enabled() -> bool:
    """Whether ``LOSSDSL_VERIFY_IR`` asks for the checks (``1``, ``true`` or ``yes``)."""
    return os.environ.get(ENVIRONMENT_SWITCH, "").strip().lower() in ("1", "true", "yes")


def check(roots: Node | Iterable[Node], *, typed: bool = True) -> None:
    """:func:`verify`, when ``LOSSDSL_VERIFY_IR`` is set (for the stages of the compiler)."""
    if enabled():
        verify(roots, typed=typed)


def check_schedule(schedule: Schedule) -> None:
    """:func:`verify_schedule`, when ``LOSSDSL_VERIFY_IR`` is set (code generation calls it
    on every schedule it is given)."""
    if enabled():
        verify_schedule(schedule)


__all__ = ["ENVIRONMENT_SWITCH", "InvalidGraphError", "check", "check_schedule", "describe",
           "enabled", "verify", "verify_schedule"]
