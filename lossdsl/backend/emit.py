"""Target-independent code emission: SSA statements for loop bodies and the scalar glue.

A loop body computes, for one sample ``i``, every per-sample node a loop of the schedule
needs, in topological order (one line per node, named ``v<k>``). Nodes on the class axis
are computed inside ``for k in range(K)`` loops: one per row reduction, and one that writes
all per-class outputs. ``rowsum(x * onehot(y))`` (what ``pick`` becomes) reads the single
column ``k = y_i`` instead of looping. Each elementwise node's expression is the kernel
template of its operation's registry record (:mod:`lossdsl.ops`), and the helper functions
a module defines are the registry's helpers its expressions call.

Emitted text never contains user text: inputs, params and outputs get generated names
(``a0``, ``s1``, ``o2``), numbers are re-emitted as ``T(repr(float(x)))``.
The body is plain Numba-compatible Python; the CPU target wraps it in ``@njit`` and the CUDA
target in ``@cuda.jit(device=True)``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..ir.axes import Axis, partner_of
from ..ir.node import Node
from ..ops import Helper, find, helper_closure, helper_source, helpers, kernel_math_calls
from ..ops.scans import GROUP_SCANS, SCANS
from ..passes.schedule import Loop, Output

# Fast-math flags for the loop drivers only. "reassoc" lets the reductions vectorise (4.9x
# faster at N = 1e7); the rest of SPEC's NaN-safe set is left out because, once the body is
# inlined, "nsz" alone already let LLVM cancel bce_logits(1, 40) = 4e-18 to 0.
FASTMATH = {"reassoc"}


def number(value: float) -> str:
    """A typed literal: ``T(...)`` so float32 kernels stay float32."""
    if math.isnan(value):
        return "T(math.nan)"
    if math.isinf(value):
        return "T(math.inf)" if value > 0 else "T(-math.inf)"
    return f"T({float(value)!r})"


class _HelperSources(Mapping[str, str]):
    """Helper name -> the Numba-Python source of ``h_<name>``, read from the registry (so an
    operation registered later is found too)."""

    def __getitem__(self, name: str) -> str:
        return helper_source(name)

    def __iter__(self) -> Iterator[str]:
        return iter(helpers())

    def __len__(self) -> int:
        return len(helpers())


# Scalar helper functions emitted into the generated module when used (stable forms): the
# registry's helpers (lossdsl.ops), each written once, for every target.
HELPERS: Mapping[str, str] = _HelperSources()


class ExpressionPrinter:
    """Numba-Python expression for one node, given its arguments' names: the kernel template
    of the operation's registry record (a format string, a helper call, or the record's own
    printing function), for ``target`` "cpu" or "cuda" (a record may override CUDA's).

    It collects the helpers the expressions call (``helpers``, with the helpers those call),
    whether every expression printed can be SIMD-vectorised on the CPU (``vectorisable``), and
    how many printed expressions reach each ``math`` function (``math_calls``).
    """

    def __init__(self, target: str = "cpu"):
        self.target = target
        self.helpers: set[str] = set()
        self.constants: dict[str, str] = {}  # typed literal -> global name
        self.vectorisable = True
        self.math_calls: Counter[str] = Counter()

    def expression(self, n: Node, args: list[str]) -> str:
        """The expression computing ``n`` from its arguments' names ``args``."""
        if n.op == "const":
            return self.constant(n.value)
        op = find(n.op)
        kernel = op.kernel_for(self.target) if op is not None else None
        if kernel is None:  # a compiler bug: a pass left an operation no kernel computes
            raise AssertionError(f"'{n.op}' has no kernel template (lowered too late?)")
        if not op.vectorisable:
            self.note_scalar_only()
        self.math_calls.update(kernel_math_calls(op))
        if isinstance(kernel, Helper):
            self.helpers |= helper_closure(kernel.name)
            return f"h_{kernel.name}({', '.join(args)})"
        if isinstance(kernel, str):
            return kernel.format(*args)
        return kernel(self, n, *args)

    def note_scalar_only(self) -> None:
        """Record that an expression calls math that libm computes one element at a time
        (the CPU module then keeps its loops unvectorised, which compiles faster)."""
        self.vectorisable = False

    def constant(self, value: float) -> str:
        """The name of a module-level typed constant: Numba freezes globals into constants,
        which costs less to compile than a ``T(...)`` call at each use."""
        literal = number(value)
        if literal not in self.constants:
            self.constants[literal] = f"K{len(self.constants)}"
        return self.constants[literal]

    def declarations(self) -> list[str]:
        """The module-level lines defining the constants used (after ``T`` is defined)."""
        return [f"{name} = {literal}" for literal, name in self.constants.items()]


@dataclass
class Names:
    """Generated names of a kernel's arguments, shared by every loop of one kernel."""

    arrays: dict[str, str] = field(default_factory=dict)  # input name -> a<k>
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> o<k>
    scalars: dict[int, str] = field(default_factory=dict)  # scalar node id -> s<k>
    scalar_nodes: dict[str, Node] = field(default_factory=dict)
    widths: dict[str, str] = field(default_factory=dict)  # class axis -> w<k>
    lengths: dict[str, str] = field(default_factory=dict)  # sample axis -> n<k>
    # arrays ``run`` allocates itself (float64, one value per sample): the summands and keys
    # of each cumulative sum, which a loop writes, and the sums, which later loops read; a
    # group's totals, one row per group, and the row each sample reads (role "runs")
    buffers: dict[tuple[str, str], str] = field(default_factory=dict)  # (role, key) -> b<k>
    # buffer -> the pass that writes it: a later pass that needs the same summands or keys
    # (one array for the whole call) does not write them again
    written: dict[str, int] = field(default_factory=dict)
    # per-sample values a loop stored for a later one to read at the partners of a pair sum
    # (at_partner): node key -> (buffer, the pass that stores it); a later pass reads them
    # back for its own samples too, rather than computing them again
    stored: dict[str, tuple[str, int]] = field(default_factory=dict)

    def array(self, name: str) -> str:
        return self.arrays.setdefault(name, f"a{len(self.arrays)}")

    def output(self, name: str) -> str:
        return self.outputs.setdefault(name, f"o{len(self.outputs)}")

    def scalar(self, n: Node) -> str:
        if id(n) not in self.scalars:
            self.scalars[id(n)] = f"s{len(self.scalars)}"
            self.scalar_nodes[self.scalars[id(n)]] = n
        return self.scalars[id(n)]

    def width(self, axis: str) -> str:
        return self.widths.setdefault(axis, f"w{len(self.widths)}")

    def length(self, axis: str) -> str:
        return self.lengths.setdefault(axis, f"n{len(self.lengths)}")

    def buffer(self, role: str, n: Node) -> str:
        """The array ``run`` allocates for ``n``'s values: role "values", "keys" or "strata"
        (what a loop writes for a cumulative sum) or "scan" (the cumulative sum ``n``)."""
        return self.buffers.setdefault((role, n.key), f"b{len(self.buffers)}")

    def run_index(self, scan: Node) -> str:
        """The array of each sample's row in the tables of group totals (``sum_group``)
        ordered by ``scan``'s keys and strata: one per order, shared by its every total."""
        _, keys, strata = scan.args
        return self.buffers.setdefault(("runs", f"{keys.key}/{strata.key}"),
                                       f"b{len(self.buffers)}")

    def run_arguments(self) -> list[str]:
        """The arguments of the generated ``run`` function, in order: input arrays, output
        arrays, scalar params/inputs/counts, sample-axis lengths, class-axis widths."""
        leaf_scalars = [name for name, n in self.scalar_nodes.items()
                        if n.op in ("param", "input", "count")]
        return (list(self.arrays.values()) + list(self.outputs.values()) + leaf_scalars
                + list(self.lengths.values()) + list(self.widths.values()))


#: The loop variable of the partner classes ``c`` of class ``k`` in a class pair sum.
PARTNER_CLASS = "kp"
#: The loop variable of the columns ``d`` of the rows a pair's dot product reads (pairdot).
ROW_COLUMN = "kd"
#: The loop variable of the partner slots of row ``i`` in a sum of the partners' rows
#: (pairmatvec), within the loop over the row's columns ``k``.
PARTNER_SLOT = "kq"
#: The loop variable of the columns of a row of partner sums (pairmatvec) that a loop over
#: the partners adds each pair's share to, before the loop over the row's columns ``k``.
PAIR_COLUMN = "kc"


def offsets_name(axis: str) -> str:
    """The name under which the kernel takes the offsets of groups' items on ``axis``: where
    each group's items start in the flat item arrays (and, last, their number). No input can
    have it: '#' starts a comment."""
    return f"#offsets:{axis}"


def partners_name(axis: str) -> str:
    """The name under which the kernel takes, for the partners' axis ``axis`` of a pair sum,
    the sample each partner slot reads (``x[partners[k]]`` is ``partner(x)``)."""
    return f"#partners:{axis}"


def pick_parts(n: Node) -> tuple[Node, Node] | None:
    """(x, labels) when ``n`` is ``rowsum(x * (class_index(y) == y))`` for labels y with one
    value per sample: an input vector, or the labels of ``ignore_index`` read through
    ``where(y == ignore_index, 0, y)`` (shapes.objective). Both hold checked class indices,
    so the pick reads the one column ``x[i, y_i]`` (no loop, and no ``x_k * 0`` elsewhere
    in the row, which is NaN where ``x_k`` is infinite)."""
    if n.op != "rowsum" or n.args[0].op != "mul":
        return None
    a, b = n.args[0].args
    for x, onehot in ((a, b), (b, a)):
        if onehot.op == "eq":
            left, right = onehot.args
            for index, label in ((left, right), (right, left)):
                if (index.op == "class_index" and index.args[0] is label
                        and label.op in ("input", "where") and len(label.axes) == 1):
                    return x, label
    return None


def read_as_given(argument: Node) -> bool:
    """Whether a cumulative sum reads its summands, keys or strata ``argument`` from the
    input array itself: an input of one value per sample, or an (N, K) row per sample (not a
    partner's value, nor groups' items), which the kernel would only copy into a buffer."""
    return (argument.op == "input" and partner_of(argument.value) is None
            and 1 <= len(argument.axes) <= 2 and Axis(argument.axes[0]).is_samples
            and not any(Axis(axis).is_ragged for axis in argument.axes[1:]))


def scan_buffers(scan: Node) -> list[tuple[str, Node]]:
    """(role, node) of the arrays a loop writes for cumulative sum ``scan``: its summands
    (unless they are a number), its keys, and its strata (unless they are one number: one
    stratum), each unless it is an input the sum reads as it is (:func:`read_as_given`); for
    a value read at the partners (``at_partner``), the value."""
    if scan.op == "at_partner":
        return [("values", scan.args[0])]
    values, keys, strata = scan.args
    return [(role, argument) for role, argument in
            (("values", values), ("keys", keys), ("strata", strata))
            if not read_as_given(argument) and (role == "keys" or argument.op != "const")]


def _loop_args(n: Node) -> tuple[Node, ...]:
    """The arguments a loop computes before ``n``: none for the class index (its argument
    only names the domain), the labels alone for a table lookup (the table is an array)."""
    if n.op in ("class_index", "at_partner", "partner_first", "pairdot") or n.op in SCANS:
        # a cumulative sum, or a value read at the partners: computed by an earlier loop; a
        # pair's dot product reads its rows itself
        return ()
    if n.op == "table_row":
        return n.args[1:]
    if n.op == "pairmatvec":  # its loop over the partners reads the sample's own values
        return _per_sample_under(n.args)
    return n.args


#: Per-sample operations that loop over a row (or a sample's partners) themselves.
_SAMPLE_LOOPS = frozenset({"rowsum", "rowmax", "sparsemax_threshold", "logit_shift"})


def _on_columns(n: Node) -> bool:
    """Whether ``n`` is typed on a sample axis and the columns of its rows (not partners)."""
    return len(n.axes or ()) == 2 and not Axis(n.axes[1]).is_ragged


def _per_sample_under(roots: tuple[Node, ...]) -> tuple[Node, ...]:
    """The values of one per sample under ``roots`` (values per pair and rows read at the
    partners): what a loop over a row's partners reads, computed before it."""
    found: dict[int, Node] = {}
    stack, seen = list(roots), set()
    while stack:
        n = stack.pop()
        if id(n) in seen or not n.axes:
            continue
        seen.add(id(n))
        if len(n.axes) == 1:
            found[id(n)] = n
        else:
            stack.extend(_loop_args(n))
    return tuple(found.values())


@dataclass
class Body:
    """A loop body: its argument names, statement lines, and what it returns; ``rows``: the
    row buffers it takes after its arguments (name, the width of the class axis they hold),
    which the loop that calls it allocates; ``pair_rows``: those after them holding the
    partner sums of a row's columns (pairmatvec), in float64 where row sums are wide, else
    in the kernel's type."""

    arguments: list[str]
    lines: list[str]
    returns: list[str]
    rows: list[tuple[str, str]] = field(default_factory=list)
    pair_rows: list[tuple[str, str]] = field(default_factory=list)

    @property
    def parameters(self) -> list[str]:
        """The body function's parameters: its arguments, then its row buffers."""
        return self.arguments + [name for name, _ in self.rows + self.pair_rows]


def _worth_keeping(n: Node) -> bool:
    """Whether a per-class value costs more to compute again than to store and load: an
    operation whose kernel calls a math function (exp, log, lgamma), not arithmetic, or the
    dot product of a pair's rows (a loop over their columns)."""
    if n.op == "pairdot":
        return True
    op = find(n.op)
    return op is not None and op.kind == "elementwise" and bool(kernel_math_calls(op))


@dataclass
class _Kept:
    """A per-class value computed in a loop over a class axis, which a later loop over the
    same axis can read back from a row buffer instead of computing again: ``store`` is the
    line that writes it, emitted only once some later loop reads it."""

    axis: str
    store: list[str]  # [] until needed, then the one store line (a slot in ``lines``)
    line: str  # the store statement
    buffer: str | None = None


def _flattened(lines: list) -> Iterator[str]:
    """The statements of ``lines`` in order, its slots (lists filled in later, themselves
    holding slots: a loop over partners) opened where they stand."""
    for entry in lines:
        if isinstance(entry, str):
            yield entry
        else:
            yield from _flattened(entry)


@dataclass
class _PartnerPass:
    """The one loop over a row's partners that fills the row buffers of every partner sum
    of rows (pairmatvec) a loop over the row's columns reads: the lines zeroing each buffer,
    the statements of each pair (the weights, their dot products of rows computed once for
    every buffer that needs them), and those of each pair's column, with the values each of
    those two places has computed."""

    zeros: list[str]
    pairs: list[str]
    columns: list[str]
    pair_values: dict[int, str]
    column_values: dict[int, str]


@dataclass
class _RowLoop:
    """A loop over a row's columns being emitted: its axis, the slot in ``lines`` before its
    header where loops it needs first go (a row of partner sums), their indent, the values
    computed before it, and its loops over partners (by the axis of the pairs)."""

    axis: str
    slot: list
    indent: str
    values: dict[int, str]
    partner_passes: dict[str, _PartnerPass] = field(default_factory=dict)


class BodyEmitter:
    """Emits the statements of one loop body (one sample ``i``)."""

    def __init__(self, loop: Loop, names: Names, printer: ExpressionPrinter,
                 row_buffers: bool = False, wide_row_sums: bool = False,
                 pair_rows: bool = False):
        self.loop = loop
        self.names = names
        self.printer = printer
        # row_buffers: a value a loop over a class axis computes with a math function (the
        # exp of a softmax) is kept in a buffer of the row's width for the later loops over
        # that axis that need it again (the CPU target; a CUDA thread has no such buffer)
        self.row_buffers = row_buffers
        # wide_row_sums: a sum over a row accumulates in float64 whatever the kernel's type,
        # then rounds once (the CPU target: one thread adds a whole row, in a few SIMD lanes
        # at most, and a float32 sum of 50,000 softmax terms drifted 1.2e-4 from the exact
        # sum; a CUDA block adds a row as a tree of short per-thread sums and stays within
        # float32's rounding)
        self.wide_row_sums = wide_row_sums
        # pair_rows: a partner sum of rows (pairmatvec) is accumulated for the whole row by
        # one loop over the partners before the loop over the row's columns, in a buffer of
        # the row's width the body takes: each pair's weight (a dot product of rows, itself
        # a loop over the columns) computed once, not once per column (O(P D) per sample, not
        # O(P D^2); ntxent at N = 2,000, D = 128 took two minutes)
        self.pair_rows_enabled = pair_rows
        self.pair_rows: list[tuple[str, str]] = []
        self.row_loop: _RowLoop | None = None
        self.kept: dict[int, _Kept] = {}
        self.rows: list[tuple[str, str]] = []
        self.lines: list[str | list[str]] = []
        self.values: dict[int, str] = {}
        self.counter = 0
        self.arrays: list[str] = []
        self.scalars: list[str] = []
        self.widths: list[str] = []
        self.pending: list[Node] = []  # the per-sample nodes of the body, in order
        self.run_rows: dict[str, str] = {}  # row of sample i in tables of group totals -> read
        self.buffers_written: set[str] = set()

    def _fresh(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def _use(self, name: str, bucket: list[str]) -> str:
        if name not in bucket:
            bucket.append(name)
        return name

    def operand(self, n: Node) -> str:
        """The name or literal of an already available value."""
        if id(n) in self.values:
            return self.values[id(n)]
        if n.op == "const":
            return self.printer.constant(n.value)
        if not n.axes:
            return self._use(self.names.scalar(n), self.scalars)
        raise AssertionError(f"{n.op} used before it was computed")  # scheduling bug

    def _row_bounds(self, axis: str) -> tuple[str, str]:
        """Where a loop over row ``i``'s elements on ``axis`` starts and stops: ``0`` to the
        class width, or, for the items of groups, ``offsets[i]`` to ``offsets[i + 1]`` of
        the flat item arrays."""
        if Axis(axis).is_ragged:
            offsets = self._use(self.names.array(offsets_name(axis)), self.arrays)
            return f"{offsets}[i]", f"{offsets}[i + 1]"
        return "0", self._use(self.names.width(axis), self.widths)

    def _partner_index(self, axis: str) -> str:
        """The kernel's array of the sample each partner slot on ``axis`` reads."""
        return self._use(self.names.array(partners_name(axis)), self.arrays)

    def _run_of_sample(self, scan: Node) -> str:
        """The local name of sample ``i``'s row in the tables of group totals of ``scan``'s
        order, read once at the top of the body (:meth:`Names.run_index`)."""
        runs = self._use(self.names.run_index(scan), self.arrays)
        row = f"row_{runs}"
        if row not in self.run_rows:
            self.run_rows[row] = f"    {row} = {runs}[i]"
        return row

    def _first_write(self, buffer: str) -> bool:
        """Whether this body is to write ``buffer`` (a cumulative sum's summands, keys or
        strata): not when it wrote it already, nor when an earlier pass did."""
        writer = self.names.written.setdefault(buffer, self.loop.index)
        if writer < self.loop.index or buffer in self.buffers_written:
            return False
        self.buffers_written.add(buffer)
        return True

    def _stored(self, n: Node) -> str | None:
        """The buffer an earlier pass stored per-sample value ``n`` in, if any."""
        found = self.names.stored.get(n.key) if n.axes and len(n.axes) == 1 else None
        return found[0] if found is not None and found[1] < self.loop.index else None

    def _ordered(self, roots: list[Node], row: bool,
                 kept: dict[int, _Kept] | None = None, pairs: bool = False) -> list[Node]:
        """Loop nodes under ``roots`` (per-sample, per-class when ``row``, per class pair of
        a row when ``pairs``), args first; a node in ``kept`` is listed without its
        arguments (it is read back, not computed). The values a deeper node reads (a
        class's own values in a class pair sum) are listed before it."""
        depth = 3 if pairs else (2 if row else 1)
        order, seen = [], set()
        for root in roots:
            stack = [(root, False)]
            while stack:
                n, expanded = stack.pop()
                if expanded:
                    order.append(n)
                    continue
                if id(n) in seen or id(n) in self.values or not n.axes:
                    continue
                if (kept and id(n) in kept) or (not row and self._stored(n)):
                    seen.add(id(n))
                    order.append(n)
                    continue
                if len(n.axes) != depth:
                    if len(n.axes) > depth:
                        # a per-class node reads per-sample values (a softmax's row max and
                        # normaliser): compute those in the sample phase, before any k loop;
                        # a class pair's, its class's own values, before the pairs' loop
                        seen.add(id(n))
                        stack.extend((a, False) for a in reversed(_loop_args(n)))
                    continue
                seen.add(id(n))
                stack.append((n, True))
                stack.extend((a, False) for a in reversed(_loop_args(n)))
        return order

    def _emit_node(self, n: Node, indent: str, index: str) -> None:
        name = self._fresh()
        base = partner_of(n.value) if n.op == "input" else None
        stored = self._stored(n)
        if stored is not None:  # computed by an earlier pass
            text = f"T({self._use(stored, self.arrays)}[i])"
        elif n.op == "pairdot":
            self._emit_pair_dot(n, name, indent, index)
            self.values[id(n)] = name
            return
        elif n.op == "pairmatvec":
            self._emit_partner_rows(n, name, indent, index)
            self.values[id(n)] = name
            return
        elif base is not None and len(n.axes) == 2 and not Axis(n.axes[1]).is_ragged:
            # a row read at the partner of a pair (within pairmatvec's loop over them)
            array = self._use(self.names.array(base), self.arrays)
            slot = self._partner_index(Axis(n.axes[0]).items())
            text = f"T({array}[{slot}[{PARTNER_SLOT}], {index}])"
        elif base is not None and len(n.axes) == 3:  # x at the partner class of a row
            array = self._use(self.names.array(base), self.arrays)
            text = f"T({array}[i, {PARTNER_CLASS}])"
        elif base is not None and len(n.axes) == 2:  # x at the partner of a pair of samples
            array = self._use(self.names.array(base), self.arrays)
            text = f"T({array}[{self._partner_index(n.axes[1])}[{index}]])"
        elif n.op == "input":
            array = self._use(self.names.array(n.value), self.arrays)
            if len(n.axes) == 1:
                subscript = "i"
            else:  # the items of groups are one flat array: k runs over row i's slice
                subscript = index if Axis(n.axes[1]).is_ragged else f"i, {index}"
            text = f"T({array}[{subscript}])"
        elif n.op in SCANS:  # accumulated after an earlier loop (a group's rows: by class)
            # a group's total is the row of its group in the table of totals
            row = self._run_of_sample(n) if n.op in GROUP_SCANS else "i"
            subscript = row if len(n.axes) == 1 else f"{row}, {index}"
            text = f"T({self._use(self.names.buffer('scan', n), self.arrays)}[{subscript}])"
        elif n.op == "partner_first":
            text = f"T(1.0) if {self._partner_index(n.axes[1])}[{index}] < i else T(0.0)"
        elif n.op == "class_index" and len(n.axes) == 3:  # the index of the partner class
            text = f"T({PARTNER_CLASS})"
        elif n.op == "rowsum" and len(n.args[0].axes) == 3:
            self._emit_partner_sum(n, name, indent)
            self.values[id(n)] = name
            return
        elif n.op == "at_partner" and len(n.axes) == 3:  # a stored row, at the partner class
            stored = self._use(self.names.buffer("scan", n), self.arrays)
            text = f"T({stored}[i, {PARTNER_CLASS}])"
        elif n.op == "at_partner":  # stored by an earlier loop, read at the partner
            stored = self._use(self.names.buffer("scan", n), self.arrays)
            text = f"T({stored}[{self._partner_index(n.axes[1])}[{index}]])"
        elif n.op == "count":  # the number of items of group i
            start, stop = self._row_bounds(n.value)
            text = f"T({stop} - {start})"
        elif n.op == "class_index":
            text = f"T({index})"
        elif n.op == "table_row":  # typed on the class pairs: at the partner class
            table = self._use(self.names.array(n.args[0].value), self.arrays)
            column = PARTNER_CLASS if len(n.axes) == 3 else index
            text = f"T({table}[int({self.operand(n.args[1])}), {column}])"
        elif n.op in ("rowsum", "rowmax"):
            self._emit_row_reduction(n, name, indent)
            self.values[id(n)] = name
            return
        elif n.op == "sparsemax_threshold":
            self._emit_threshold(n, name, indent)
            self.values[id(n)] = name
            return
        elif n.op == "logit_shift":
            self._emit_logit_shift(n, name, indent)
            self.values[id(n)] = name
            return
        else:
            text = self.printer.expression(n, [self.operand(a) for a in n.args])
        self.lines.append(f"{indent}{name} = {text}")
        self.values[id(n)] = name

    def _emit_rows(self, roots: list[Node], indent: str, index: str, axis: str,
                   whole_row: bool) -> None:
        """The per-class nodes under ``roots`` at class ``index`` of ``axis``, in a loop over
        the whole row (``whole_row``) or at one class (a pick's label). Values an earlier
        loop over the whole row kept are read back; a loop over the whole row keeps those
        worth keeping (see ``row_buffers``) for the loops after it."""
        kept = {key: value for key, value in self.kept.items() if value.axis == axis}
        keeping = self.row_buffers and whole_row
        for n in self._ordered(roots, row=True, kept=kept):
            if id(n) in kept:
                self._read_back(n, kept[id(n)], indent, index)
                continue
            self._emit_node(n, indent, index)
            if keeping and _worth_keeping(n):
                slot: list[str] = []  # filled with the store once a later loop reads n
                self.lines.append(slot)
                at = self._buffer_slot(axis, index)
                self.kept[id(n)] = _Kept(axis, slot, f"{indent}{{}}[{at}] = {self.values[id(n)]}")

    def _buffer_slot(self, axis: str, index: str) -> str:
        """Where element ``index`` of row ``i`` on ``axis`` sits in a row buffer: the class
        itself, or, for a row of partners or a group's items (``index`` runs over its slice
        of the flat item arrays), its place in that slice."""
        if Axis(axis).is_ragged:
            return f"{index} - {self._row_bounds(axis)[0]}"
        return index

    def _buffer_width(self, axis: str) -> str:
        """The width of a row buffer on ``axis``: the class axis's, or the longest row of
        partners or items (computed by the loop that allocates it)."""
        if Axis(axis).is_ragged:
            return f"longest_row({self._use(self.names.array(offsets_name(axis)), self.arrays)})"
        return self.names.width(axis)

    def _read_back(self, n: Node, kept: _Kept, indent: str, index: str) -> None:
        """``n`` read from its row buffer (written, from now on, by the loop that computes
        it)."""
        if kept.buffer is None:
            kept.buffer = f"r{len(self.rows)}"
            self.rows.append((kept.buffer, self._buffer_width(kept.axis)))
            kept.store.append(kept.line.format(kept.buffer))
        name = self._fresh()
        self.lines.append(f"{indent}{name} = {kept.buffer}[{self._buffer_slot(kept.axis, index)}]")
        self.values[id(n)] = name

    def _open_row_loop(self, axis: str, indent: str) -> None:
        """The header of a loop over row ``i``'s elements on ``axis``, after a slot for the
        loops over a row's partners that its partner sums of rows need (see
        :meth:`_emit_partner_rows`)."""
        slot: list[str] = []
        self.lines.append(slot)
        self.lines.append(f"{indent}{self.class_loop(*self._row_bounds(axis))}")
        self.row_loop = (None if Axis(axis).is_ragged
                         else _RowLoop(axis, slot, indent, dict(self.values)))

    def column_loop(self, variable: str, width: str) -> str:
        """The header of a loop of ``variable`` over a row's ``width`` columns that go with
        the same columns ``k`` of :meth:`class_loop` (the CUDA block-per-row kernels split
        both alike over the block's threads, so each thread reads what it wrote)."""
        return f"for {variable} in range({width}):"

    def class_loop(self, start: str, stop: str) -> str:
        """The header of a loop over row ``i``'s classes (or its group's items), ``k`` from
        ``start`` to ``stop`` (the CUDA target splits it over the threads of a block for wide
        rows)."""
        return f"for k in range({stop}):" if start == "0" else f"for k in range({start}, {stop}):"

    def _unready(self, n: Node) -> list[Node] | None:
        """The per-sample values row reduction ``n``'s loop reads that are not computed yet,
        or None where one of them needs a loop of its own first (another row reduction):
        those listed can be computed now, before ``n``'s loop (arithmetic and math functions
        of values already computed)."""
        missing: dict[int, Node] = {}
        stack, seen = [n.args[0]], set()
        while stack:
            m = stack.pop()
            if id(m) in seen or id(m) in self.values or m.op == "const" or not m.axes:
                continue
            seen.add(id(m))
            if len(m.axes) == 1:
                if m.op in _SAMPLE_LOOPS:
                    return None
                missing[id(m)] = m
                if self._stored(m) is not None:  # read from an earlier pass's buffer
                    continue
            elif len(m.axes) != 2:
                return None
            stack.extend(_loop_args(m))
        return list(missing.values())

    def _fusable(self, n: Node) -> list[tuple[Node, list[Node]]]:
        """The row reductions still to come that can share ``n``'s loop over its row: over
        the same axis, not a pick, and reading only per-sample values computed already or
        computable before the loop (listed with each reduction)."""
        axis = n.args[0].axes[1]
        found = []
        for m in self.pending:
            if (m is not n and id(m) not in self.values and m.op in ("rowsum", "rowmax")
                    and m.args[0].axes[1] == axis and pick_parts(m) is None):
                missing = self._unready(m)
                if missing is not None:
                    found.append((m, missing))
        return found

    def _emit_row_reduction(self, n: Node, name: str, indent: str) -> list[tuple[Node, str]]:
        """The statements of row reduction ``n`` (named ``name``), with those of the row
        reductions that can share its loop (:meth:`_fusable`): one pass over the row for
        a gradient's several sums. Returns every reduction emitted, with its name."""
        pick = pick_parts(n)
        fusable = [] if pick is not None else self._fusable(n)
        # what the reductions sharing the loop read is computed first (a logsumexp's shift,
        # computed after its maximum's loop, lets the sums of two logsumexps share one loop)
        for m in self._ordered([early for _, missing in fusable for early in missing],
                               row=False):
            self._emit_node(m, indent, "k")
        saved = dict(self.values)
        emitted = [(n, name)]
        if pick is not None:
            x, label = pick
            if label.op == "input":
                column = f"{self._use(self.names.array(label.value), self.arrays)}[i]"
            else:  # computed in the sample phase, before the row reductions that read it
                column = self.operand(label)
            self.lines.append(f"{indent}k = int({column})")
            self._emit_rows([x], indent, "k", x.axes[1], whole_row=False)
            self.lines.append(f"{indent}{name} = {self.operand(x)}")
        else:
            axis = n.args[0].axes[1]
            emitted += [(m, self._fresh()) for m, _ in fusable]
            wide = {m_name: f"{m_name}_wide" for m, m_name in emitted
                    if m.op == "rowsum" and self.wide_row_sums}
            for m, m_name in emitted:
                if m_name in wide:
                    self.lines.append(f"{indent}{wide[m_name]} = 0.0")
                else:
                    start = "T(0.0)" if m.op == "rowsum" else "T(-math.inf)"
                    self.lines.append(f"{indent}{m_name} = {start}")
            self._open_row_loop(axis, indent)
            self._emit_rows([m.args[0] for m, _ in emitted], indent + "    ", "k", axis,
                            whole_row=True)
            self.row_loop = None
            for m, m_name in emitted:
                item = self.operand(m.args[0])
                if m.op == "rowsum":
                    lines = self.sum_into(wide.get(m_name, m_name), item)
                else:
                    lines = self.max_into(m_name, item)
                self.lines += [f"{indent}    {line}" for line in lines]
            self.lines += [f"{indent}{m_name} = T({accumulator})"
                           for m_name, accumulator in wide.items()]
        self.values = saved  # per-class values do not outlive their loop
        for m, m_name in emitted[1:]:
            self.values[id(m)] = m_name
        return emitted

    def _emit_partner_sum(self, n: Node, name: str, indent: str) -> None:
        """``rowsum`` over the partner classes of class ``k`` of row ``i`` (``n``, within a
        loop over the row's classes): a loop over the row's other classes, computing the
        summand of each pair (k, c) from the class's own values (computed already, by the
        loop over k) and the values at c."""
        x = n.args[0]
        saved = dict(self.values)
        width = self._use(self.names.width(Axis(x.axes[2]).own_classes()), self.widths)
        total = f"{name}_wide" if self.wide_row_sums else name
        self.lines.append(f"{indent}{total} = {'0.0' if self.wide_row_sums else 'T(0.0)'}")
        # each thread of a CUDA block walks its class's partners alone: a plain loop
        self.lines.append(f"{indent}for {PARTNER_CLASS} in range({width}):")
        inner = indent + "        "
        self.lines.append(f"{indent}    if {PARTNER_CLASS} != k:")
        for m in self._ordered([x], row=True, pairs=True):
            self._emit_node(m, inner, "k")
        self.lines += [f"{inner}{line}" for line in self.sum_into(total, self.operand(x))]
        if self.wide_row_sums:
            self.lines.append(f"{indent}{name} = T({total})")
        self.values = saved  # the pairs' values do not outlive their loop

    def _emit_pair_dot(self, n: Node, name: str, indent: str, index: str) -> None:
        """``pairdot(u, v)`` at partner slot ``index`` of row ``i``: a loop over the columns
        of u's row i and v's row at the partner (each thread of a CUDA block alone)."""
        u, v = n.args
        width = self._use(self.names.width(u.axes[1]), self.widths)
        own = self._use(self.names.array(u.value), self.arrays)
        other = self._use(self.names.array(v.value), self.arrays)
        partner = f"{self._partner_index(n.axes[1])}[{index}]"
        total = f"{name}_wide" if self.wide_row_sums else name
        self.lines.append(f"{indent}{total} = {'0.0' if self.wide_row_sums else 'T(0.0)'}")
        self.lines.append(f"{indent}for {ROW_COLUMN} in range({width}):")
        item = f"T({own}[i, {ROW_COLUMN}]) * T({other}[{partner}, {ROW_COLUMN}])"
        self.lines += [f"{indent}    {line}" for line in self.sum_into(total, item)]
        if self.wide_row_sums:
            self.lines.append(f"{indent}{name} = T({total})")

    def _emit_partner_rows(self, n: Node, name: str, indent: str, index: str) -> None:
        """``pairmatvec(w, r)`` at column ``index`` of row ``i``: a loop over the row's
        partners, computing each pair's weight w (its dot products with loops of their own)
        and r at the partner's row."""
        weights, rows = n.args
        loop = self.row_loop
        if (self.pair_rows_enabled and loop is not None and index == "k"
                and loop.axis == rows.axes[1]):
            self._emit_partner_row_buffer(n, name, indent, loop)
            return
        saved = dict(self.values)
        start, stop = self._row_bounds(Axis(rows.axes[0]).items())
        total = f"{name}_wide" if self.wide_row_sums else name
        self.lines.append(f"{indent}{total} = {'0.0' if self.wide_row_sums else 'T(0.0)'}")
        self.lines.append(f"{indent}for {PARTNER_SLOT} in range({start}, {stop}):")
        inner = indent + "    "
        for m in self._ordered([weights, rows], row=True):
            self._emit_node(m, inner, index if _on_columns(m) else PARTNER_SLOT)
        item = f"{self.operand(weights)} * {self.operand(rows)}"
        self.lines += [f"{inner}{line}" for line in self.sum_into(total, item)]
        if self.wide_row_sums:
            self.lines.append(f"{indent}{name} = T({total})")
        self.values = saved  # the pairs' values do not outlive their loop

    def _emit_partner_row_buffer(self, n: Node, name: str, indent: str,
                                 loop: _RowLoop) -> None:
        """``pairmatvec(w, r)`` at column ``k`` of row ``i``, read from a buffer of the row's
        width that a loop over the row's partners fills before ``loop`` (the loop over the
        columns ``k``): each pair's weight w computed once, then its share w * r added to
        every column. Every partner sum of rows that ``loop`` reads over the same pairs
        shares that one loop over the partners (a Hessian of circle loss reads 47: each with
        a loop of its own took 13 s to compile and computed every pair's dot product 47
        times). Each column's sum takes the same terms in the same order as a loop over the
        partners at that column would."""
        weights, rows = n.args
        width = self._use(self.names.width(rows.axes[1]), self.widths)
        partners = loop.partner_passes.get(rows.axes[0])
        if partners is None:
            partners = loop.partner_passes[rows.axes[0]] = self._open_partner_pass(
                loop, Axis(rows.axes[0]).items(), width)
        buffer = f"p{len(self.pair_rows)}"
        self.pair_rows.append((buffer, width))
        outer = loop.indent
        zero = "0.0" if self.wide_row_sums else "T(0.0)"
        partners.zeros.append(f"{outer}    {buffer}[{PAIR_COLUMN}] = {zero}")
        saved_values, saved_lines = self.values, self.lines
        self.values, self.lines = partners.pair_values, partners.pairs
        self._emit_at_partners(weights, rows.axes[0], outer + "    ", columns=False)
        weight = self.operand(weights)
        partners.column_values.update(partners.pair_values)
        self.values, self.lines = partners.column_values, partners.columns
        inner = outer + "        "
        self._emit_at_partners(rows, rows.axes[0], inner, columns=True)
        item = f"{weight} * {self.operand(rows)}"
        self.lines += [f"{inner}{line}" for line in self.sum_into(f"{buffer}[{PAIR_COLUMN}]",
                                                                   item)]
        self.values, self.lines = saved_values, saved_lines
        read = f"T({buffer}[k])" if self.wide_row_sums else f"{buffer}[k]"
        self.lines.append(f"{indent}{name} = {read}")
        self.values[id(n)] = name

    def _emit_at_partners(self, root: Node, samples: str, indent: str, columns: bool) -> None:
        """The nodes under ``root`` at partner slot ``kq`` of row ``i`` (and, where
        ``columns``, those on the row's columns at column ``kc``); a pair's values that an
        earlier loop over the partners kept (a dot product of rows) are read back."""
        kept = {key: value for key, value in self.kept.items()
                if value.axis == Axis(samples).items()}
        for m in self._ordered([root], row=True, kept=kept):
            if id(m) in kept:
                self._read_back(m, kept[id(m)], indent, PARTNER_SLOT)
            else:
                self._emit_node(m, indent, PAIR_COLUMN if columns and _on_columns(m)
                                else PARTNER_SLOT)

    def _open_partner_pass(self, loop: _RowLoop, items: str, width: str) -> _PartnerPass:
        """A loop over row ``i``'s partners on ``items`` (and, in it, over the row's
        ``width`` columns), placed in ``loop``'s slot, that partner sums of rows fill in."""
        partners = _PartnerPass([], [], [], dict(loop.values), dict(loop.values))
        start, stop = self._row_bounds(items)
        outer = loop.indent
        loop.slot += [f"{outer}{self.column_loop(PAIR_COLUMN, width)}", partners.zeros,
                      f"{outer}for {PARTNER_SLOT} in range({start}, {stop}):", partners.pairs,
                      f"{outer}    {self.column_loop(PAIR_COLUMN, width)}", partners.columns]
        return partners

    def sum_into(self, total: str, item: str) -> list[str]:
        """The lines adding ``item`` to the sum ``total`` in a loop over a row."""
        return [f"{total} += {item}"]

    def max_into(self, best: str, item: str) -> list[str]:
        """The lines making ``best`` the larger of itself and ``item`` in a loop over a row
        (NaN wins)."""
        return [f"if {item} > {best} or {item} != {item}:", f"    {best} = {item}"]

    def _row_pass(self, x: Node, indent: str, accumulate) -> None:
        """A loop over row ``i``'s elements of per-class ``x``: ``accumulate(item, indent)``
        gives the lines that take in element ``item`` (named) inside the loop."""
        axis = x.axes[1]
        saved = dict(self.values)
        self._open_row_loop(axis, indent)
        self._emit_rows([x], indent + "    ", "k", axis, whole_row=True)
        self.row_loop = None
        self.lines.extend(accumulate(self.operand(x), indent + "    "))
        self.values = saved  # per-class values do not outlive their loop

    def combine_row_sums(self, names: list[str], indent: str) -> None:
        """Turn the sums that a loop over a row accumulated into ``names`` into the whole
        row's: nothing to do where one thread walks the whole row (the CUDA block-per-row
        kernels add up their threads' parts)."""

    def combine_row_maxima(self, names: list[str], indent: str) -> None:
        """Turn the maxima that a loop over a row found in ``names`` into the whole row's (as
        :meth:`combine_row_sums`)."""

    def _emit_logit_shift(self, n: Node, name: str, indent: str) -> None:
        """``logit_shift(z, t)`` of row ``i``: the b with ``sum_k sigmoid(z_k + b) = t``, in
        float64. A first pass counts the row's finite scores (an infinite one is a sure 1 or
        0) and finds their range, which brackets b (b = logit(t/n) - max z makes every term at
        most t/n); then Newton steps on ``F(b) = t - sum sigmoid(z_k + b)``, decreasing in b,
        each replaced by the bracket's midpoint where it would leave the bracket, which
        shrinks with every step: quadratic convergence near the root, bisection's
        guarantee far from it. F is evaluated as ``(t - #{u >= 0}) + A - B`` (``u = z + b``,
        ``A`` the sum of ``sigmoid(-u)`` over ``u >= 0``, ``B`` of ``sigmoid(u)`` over ``u <
        0``), and where the whole part is 0, as ``log A - log B`` from log-domain sums: the
        root stays exact where every term saturates. -inf where t is 0, +inf where t is the
        number of finite scores, NaN where no b exists or a score or t is NaN."""
        z, t = n.args
        bad, top, count, total, high, low_negated = (self._fresh() for _ in range(6))
        target, b = self._fresh(), self._fresh()
        self.lines += [f"{indent}{v} = 0.0" for v in (bad, top, count, total)]
        self.lines += [f"{indent}{v} = -math.inf" for v in (high, low_negated)]

        def scan(item: str, inner: str) -> list[str]:
            return [f"{inner}x = float({item})",
                    f"{inner}if x != x:", f"{inner}    {bad} += 1.0",
                    f"{inner}elif x == math.inf:", f"{inner}    {top} += 1.0",
                    f"{inner}elif x > -math.inf:",
                    f"{inner}    {count} += 1.0", f"{inner}    {total} += x",
                    f"{inner}    if x > {high}:", f"{inner}        {high} = x",
                    f"{inner}    if -x > {low_negated}:", f"{inner}        {low_negated} = -x"]

        self._row_pass(z, indent, scan)
        self.combine_row_sums([bad, top, count, total], indent)
        self.combine_row_maxima([high, low_negated], indent)
        self.lines += [f"{indent}{target} = float({self.operand(t)}) - {top}",
                       f"{indent}{b} = math.nan",
                       f"{indent}if {bad} == 0.0 and {target} == 0.0:",
                       f"{indent}    {b} = -math.inf",
                       f"{indent}elif {bad} == 0.0 and {target} == {count}:",
                       f"{indent}    {b} = math.inf",
                       f"{indent}elif {bad} == 0.0 and 0.0 < {target} < {count}:"]
        inner = indent + "    "
        low, high_b, residual, slope = (self._fresh() for _ in range(4))
        self.lines += [f"{inner}p = {target} / {count}",
                       f"{inner}c = math.log(p) - math.log1p(-p)",
                       f"{inner}{low} = c - {high}",
                       f"{inner}{high_b} = c + {low_negated}",
                       f"{inner}{b} = min(max(c - {total} / {count}, {low}), {high_b})",
                       f"{inner}for sweep in range(1100):"]
        body = inner + "    "
        above = self._fresh()
        # per side (u >= 0: A, the sum of sigmoid(-u); u < 0: B, the sum of sigmoid(u)), the
        # largest log term, the sum of the terms scaled by it and that of the terms times
        # sigmoid(|u|) (the slope's), kept online as the log terms arrive
        sides = {side: (self._fresh(), self._fresh(), self._fresh()) for side in "AB"}
        self.lines.append(f"{body}{above} = 0.0")
        for largest, scaled, weighted in sides.values():
            self.lines += [f"{body}{largest} = -math.inf", f"{body}{scaled} = 0.0",
                           f"{body}{weighted} = 0.0"]

        def take_in(side: str, step: str) -> list[str]:
            largest, scaled, weighted = sides[side]
            return [f"{step}if term > {largest}:",
                    f"{step}    r = math.exp({largest} - term)",
                    f"{step}    {scaled} = {scaled} * r + 1.0",
                    f"{step}    {weighted} = {weighted} * r + co",
                    f"{step}    {largest} = term",
                    f"{step}else:",
                    f"{step}    r = math.exp(term - {largest})",
                    f"{step}    {scaled} += r",
                    f"{step}    {weighted} += r * co"]

        def newton(item: str, step: str) -> list[str]:
            return [f"{step}x = float({item})",
                    f"{step}if x - x == 0.0:",  # finite: infinite scores are counted above
                    f"{step}    u = x + {b}",
                    f"{step}    e = math.exp(-abs(u))",
                    f"{step}    term = -abs(u) - math.log1p(e)",  # log sigmoid(-|u|)
                    f"{step}    co = 1.0 / (1.0 + e)",  # sigmoid(|u|)
                    f"{step}    if u >= 0.0:",
                    f"{step}        {above} += 1.0",
                    *take_in("A", step + "        "),
                    f"{step}    else:",
                    *take_in("B", step + "        ")]

        self._row_pass(z, body, newton)
        self.combine_row_sums([above], body)
        logs = {}
        for side, (largest, scaled, weighted) in sides.items():
            # the threads' sums, each scaled by its own largest term, rescaled to the row's
            row_largest = self._fresh()
            self.lines.append(f"{body}{row_largest} = {largest}")
            self.combine_row_maxima([row_largest], body)
            self.lines += [f"{body}r = math.exp({largest} - {row_largest}) "
                           f"if {largest} > -math.inf else 0.0",
                           f"{body}{scaled} *= r", f"{body}{weighted} *= r"]
            self.combine_row_sums([scaled, weighted], body)
            logs[side] = self._fresh()
            self.lines.append(f"{body}{logs[side]} = {row_largest} + math.log({scaled}) "
                              f"if {scaled} > 0.0 else -math.inf")
            sides[side] = (row_largest, scaled, weighted)
        (high_a, scaled_a, weighted_a), (high_b_side, scaled_b, weighted_b) = sides.values()
        # F(b) = t - sum sigmoid(z + b) = (t - #{u >= 0}) + A - B: where the whole part is 0
        # the sign of F is that of log A - log B, which stays exact where A and B underflow
        # (scores 1e4 apart: the root is where terms of e^-5000 balance)
        self.lines += [
            f"{body}whole = {target} - {above}",
            f"{body}if whole != 0.0:",
            f"{body}    {residual} = whole + math.exp({logs['A']}) - math.exp({logs['B']})",
            f"{body}    {slope} = math.exp({high_a}) * {weighted_a} + "
            f"math.exp({high_b_side}) * {weighted_b}",
            f"{body}else:",
            f"{body}    {residual} = {logs['A']} - {logs['B']}",
            f"{body}    {slope} = ({weighted_a} / {scaled_a} if {scaled_a} > 0.0 else 0.0) + "
            f"({weighted_b} / {scaled_b} if {scaled_b} > 0.0 else 0.0)"]
        self.lines += [f"{body}if {residual} > 0.0:", f"{body}    {low} = {b}",
                       f"{body}elif {residual} < 0.0:", f"{body}    {high_b} = {b}",
                       f"{body}else:", f"{body}    break",
                       f"{body}following = {b} + {residual} / {slope} if {slope} > 0.0 "
                       f"else {low}",
                       f"{body}if not {low} < following < {high_b}:",
                       f"{body}    following = 0.5 * {low} + 0.5 * {high_b}",
                       f"{body}if abs(following - {b}) <= 1e-15 * (1.0 + abs({b})):",
                       f"{body}    {b} = following",
                       f"{body}    break",
                       f"{body}{b} = following"]
        self.lines.append(f"{indent}{name} = T({b})")

    def _emit_threshold(self, n: Node, name: str, indent: str) -> None:
        """``sparsemax_threshold(x)`` of row ``i``, by Michelot's algorithm: tau is (the sum
        of a candidate support - 1) / its size, from the whole row; the elements above tau
        are the next candidates, until no element leaves (tau only grows, so counting over
        the whole row counts the candidates). At most the row's width passes, usually two
        or three. NaN where no element stays above tau (a NaN or +inf in the row, or only
        -inf)."""
        x = n.args[0]
        total, size, above = self._fresh(), self._fresh(), self._fresh()
        one = self.printer.constant(1.0)
        zero = self.printer.constant(0.0)
        # the support's sum in float64 where row sums are (see wide_row_sums); its count is
        # exact in any type
        total_zero, rounded = ("0.0", "T({})") if self.wide_row_sums else (zero, "{}")
        self.lines += [f"{indent}{total} = {total_zero}", f"{indent}{size} = {zero}",
                       f"{indent}{above} = {zero}"]
        self._row_pass(x, indent, lambda item, inner: [f"{inner}{total} += {item}",
                                                       f"{inner}{size} += {one}"])
        self.combine_row_sums([total, size], indent)
        self.lines.append(f"{indent}{name} = {rounded.format(f'({total} - {one}) / {size}')}")
        start, stop = self._row_bounds(x.axes[1])
        self.lines.append(f"{indent}for sweep in range({start}, {stop}):")
        inner = indent + "    "
        self.lines += [f"{inner}{total} = {total_zero}", f"{inner}{above} = {zero}"]
        self._row_pass(x, inner, lambda item, body: [f"{body}if {item} > {name}:",
                                                      f"{body}    {total} += {item}",
                                                      f"{body}    {above} += {one}"])
        self.combine_row_sums([total, above], inner)
        self.lines += [f"{inner}if {above} == {size} or {above} == {zero}:",
                       f"{inner}    break",
                       f"{inner}{size} = {above}",
                       f"{inner}{name} = {rounded.format(f'({total} - {one}) / {above}')}"]
        self.lines.append(f"{indent}if {above} == {zero}:")
        self.lines.append(f"{indent}    {name} = {self.printer.constant(math.nan)}")

    def emit(self) -> Body:
        indent = "    "
        sample_roots = [r.args[0] for r in self.loop.reductions]
        sample_roots += [o.node for o in self.loop.outputs]
        sample_roots += [a for scan in self.loop.scans for _, a in scan_buffers(scan)]
        ordered = self._ordered(sample_roots, row=False)
        # the sample's inputs and the values an earlier pass stored are read first (they need
        # nothing computed), so that every row loop that needs them can share one loop over
        # the row (see _fusable)
        first = {id(n) for n in ordered if n.op == "input" or self._stored(n)}
        self.pending = ([n for n in ordered if id(n) in first]
                        + [n for n in ordered if id(n) not in first])
        for n in self.pending:
            if id(n) not in self.values:  # unless a fused row loop computed it
                self._emit_node(n, indent, "k")
        # (array, subscript, value, axis) written along each row's class (or items) axis:
        # the rows (N, K) a group's total sums (sum_group), and the per-class outputs (named
        # in order below; an output's value may be the same along its row)
        row_writes: list[tuple[str | Output, str, Node, str]] = []
        for scan in self.loop.scans:
            for role, argument in scan_buffers(scan):
                buffer = self.names.buffer(role, argument)
                if not self._first_write(buffer):
                    continue
                self._use(buffer, self.arrays)
                if len(argument.axes) == 2:
                    row_writes.append((buffer, "i, k", argument, argument.axes[1]))
                    continue
                self.lines.append(f"{indent}{buffer}[i] = {self.operand(argument)}")
                if scan.op == "at_partner":
                    self.names.stored.setdefault(argument.key, (buffer, self.loop.index))
        for o in self.loop.outputs:
            if len(o.axes) == 1:
                out = self.names.output(o.name)
                self.lines.append(f"{indent}{out}[i] = {self.operand(o.node)}")
            else:
                row_writes.append((o, "k" if Axis(o.axes[1]).is_ragged else "i, k", o.node,
                                   o.axes[1]))
        for axis in dict.fromkeys(write[3] for write in row_writes):
            saved = dict(self.values)
            on_axis = [write for write in row_writes if write[3] == axis]
            self._open_row_loop(axis, indent)
            self._emit_rows([value for _, _, value, _ in on_axis], indent + "    ", "k", axis,
                            whole_row=True)
            self.row_loop = None
            for array, subscript, value, _ in on_axis:
                if isinstance(array, Output):
                    array = self.names.output(array.name)
                self.lines.append(f"{indent}    {array}[{subscript}] = {self.operand(value)}")
            self.values = saved
        returns = [self.operand(r.args[0]) for r in self.loop.reductions]
        outputs = [self.names.output(o.name) for o in self.loop.outputs]
        arguments = ["i"] + self.arrays + outputs + self.scalars + self.widths
        # a kept value's slot holds its store once a later loop read it back, else nothing
        lines = [*self.run_rows.values(), *_flattened(self.lines)]
        return Body(arguments, lines, returns, self.rows, self.pair_rows)


class GluePrinter:
    """Python (NumPy float64) expressions for the scalar work between passes."""

    def __init__(self, names: Names, reduction_names: dict[int, str], cast: str = "T({})"):
        self.names = names
        self.reduction_names = reduction_names
        self.cast = cast  # how a glue value becomes a kernel scalar: "{}" is the value
        self.ops: set[str] = set()
        self.lines: list[str] = []
        self.values: dict[int, str] = {}
        self.converted: set[str] = set()

    def scalar_argument(self, argument: str) -> str:
        """The name ``run`` passes for the loop body's scalar argument ``argument``: a param,
        a scalar input or a count as given, or glue over earlier reductions, converted to the
        kernel's dtype once (its statements are added to ``lines``)."""
        if argument not in self.converted:
            n = self.names.scalar_nodes[argument]
            source = (f"numpy.float64({argument})" if n.op in ("param", "input", "count")
                      else self.value(n))
            self.lines.append(f"t{argument} = {self.cast.format(source)}")
            self.converted.add(argument)
        return f"t{argument}"

    def declarations(self) -> list[str]:
        """Module-level lines binding the NumPy operations the glue uses."""
        return [f'op_{op} = OPS["{op}"]' for op in sorted(self.ops)]

    def take_lines(self) -> list[str]:
        """The statements emitted since the last call (and forget them)."""
        lines, self.lines = self.lines, []
        return lines

    def _leaf(self, n: Node) -> str | None:
        """The name or literal of a value the glue does not compute, or None."""
        if id(n) in self.values:
            return self.values[id(n)]
        if n.op == "const":
            return glue_number(n.value)
        if id(n) in self.reduction_names:
            return self.reduction_names[id(n)]
        if n.op in ("param", "input", "count"):
            return f"numpy.float64({self.names.scalar(n)})"
        return None

    def value(self, n: Node) -> str:
        """Emit (once) the statements computing scalar ``n``; return its name or literal."""
        # An explicit stack rather than recursion: the scalar part of a loss may be a chain
        # thousands of operations deep (a sum of many regularisers).
        stack: list[tuple[Node, bool]] = [(n, False)]
        while stack:
            current, expanded = stack.pop()
            if self._leaf(current) is not None:
                continue
            if not expanded:
                stack.append((current, True))
                stack.extend((a, False) for a in reversed(current.args))
                continue
            args = [self._leaf(a) for a in current.args]
            self.ops.add(current.op)
            name = f"g{len(self.values)}"
            self.lines.append(f"{name} = op_{current.op}({', '.join(args)})")
            self.values[id(current)] = name
        return self._leaf(n)


def glue_number(value: float) -> str:
    """A float64 literal for the glue. ``repr`` of inf or nan is not Python source."""
    if math.isnan(value) or math.isinf(value):
        return f'numpy.float64("{float(value)!r}")'
    return f"numpy.float64({float(value)!r})"
