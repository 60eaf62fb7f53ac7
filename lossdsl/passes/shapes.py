"""Shape specialisation: give every node its axes once the inputs' ranks are known.

An input bound to a scalar has axes ``()``, a vector ``("n<d>",)``, a matrix
``("n<d>", "n<d>k")``. Elementwise operations put their arguments in one sample domain
(NumPy broadcasting, except that a vector meets a matrix row-wise); ``sum``/``mean`` leave
it, so a regulariser's parameter vector ``w`` lives in a domain of its own length. Domains
are found by union-find and numbered in input order, so equal signatures give equal graphs.

``objective`` then applies the loss reduction (mean, weighted mean, sum, none or batchmean, with
sample weights) to the per-sample expression, adding scalar terms such as ``0.1*l1(w)`` once
rather than per sample, and drops the samples whose label is ``ignore_index``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import LossShapeError, Span
from ..ir.axes import Axis
from ..ir.build import make, reduced_along
from ..ir.node import Node, axis_length, constant, node, rebuild, toposort
from ..ops import find
from ..ops.primitives import CLASS_VECTOR, ROW, SCAN
from ..ops.scans import GROUP_SCANS, is_column_total
from . import pairs

if TYPE_CHECKING:  # the frontend's record of a declaration: the shapes pass only reads it
    from ..domains import DeclaredRows

WEIGHT = "#sample_weight"  # cannot collide with a user name: '#' starts a comment
WEIGHT_KEYWORD = "sample_weight"  # how callers pass the weights: no input may be named so


class _Domains:
    """Union-find over sample-domain variables."""

    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)
        return min(a, b)


@dataclass
class Specialized:
    """A graph specialised to input ranks, and where each axis length comes from."""

    graph: Node
    input_axes: dict[str, tuple[str, ...]]
    # axis name -> the inputs (name, dimension) whose length it is; class widths may also
    # come from onehot(y, K) constants
    axis_sources: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    fixed_widths: dict[str, int] = field(default_factory=dict)
    # every label read (pick, onehot, rowof): the label (an input, param or constant node)
    # and the axis it indexes, whose length it must stay below
    labels: list[tuple[Node, str]] = field(default_factory=list)
    # grouped samples: sample axis (which then counts the groups) -> the input holding each
    # sample's group id (groupsum(e, g) and its kin)
    groups: dict[str, str] = field(default_factory=dict)
    # samples in pairs within groups: sample axis (still counting the samples) -> the input
    # holding each sample's group id (pairsum(e, g)); its items axis holds each sample's
    # partners
    pairs: dict[str, str] = field(default_factory=dict)
    # grouped samples with classes: sample axis (still counting the samples) -> the input of
    # group ids, whose groups' totals are cumulative sums over each sample's ties
    # (sum_group: each row of an (N, K) matrix gets its group's column sums)
    class_groups: dict[str, str] = field(default_factory=dict)


def _role(rank: int) -> str:
    return {0: "a scalar", 1: "a vector", 2: "a matrix"}.get(rank, f"a {rank}-d array")


def spelled(n: Node) -> str:
    """The name a loss text gives node ``n``'s operation, for messages: a group's total is
    written ``groupsum``, or ``colsum`` with every sample in one group."""
    if n.op in GROUP_SCANS:
        return "colsum" if is_column_total(n) else "groupsum"
    return n.op


def is_class_vector(n: Node) -> bool:
    """Whether ``n`` is ``classvec(w)``: a per-class vector read as a one-row table."""
    return n.op == "table_row" and n.value == CLASS_VECTOR


def _table_inputs(nodes: list[Node], ranks: dict[str, int],
                  spans: dict[str, Span]) -> list[str]:
    """Inputs used as lookup tables (``rowof(C, y)``): each must be a matrix, used only so.

    A per-class vector (``classvec(w)``) is a one-row table: the binder passes a ``(K,)``
    vector as ``(1, K)`` (rank 2). Bound to a number (rank 0) it is that number for every
    class, and no table."""
    kinds: dict[str, set[bool]] = {}
    for n in nodes:
        if n.op == "table_row":
            kinds.setdefault(n.args[0].value, set()).add(is_class_vector(n))
    for table, kind in kinds.items():
        if len(kind) > 1:
            raise LossShapeError(f"'{table}' is read both as a lookup table (rowof) and as a "
                                 "per-class vector (classvec); use two inputs",
                                 spans.get(table))
    tables = []
    for table, kind in kinds.items():
        rank = ranks.get(table, 1)
        if True in kind:
            if rank == 0:
                continue
            if rank != 2:  # the binder passes (K,) as (1, K)
                raise LossShapeError(f"'{table}' is a per-class vector (classvec) and must be "
                                     f"a vector (K,) or a number, got {_role(rank)}",
                                     spans.get(table))
        elif rank != 2:
            raise LossShapeError(f"'{table}' is a lookup table (rowof) and must be a (R, K) "
                                 f"matrix, got {_role(rank)}", spans.get(table))
        tables.append(table)
    for n in nodes:
        for position, a in enumerate(n.args):
            if a.op == "input" and a.value in kinds and not (n.op == "table_row"
                                                              and position == 0):
                how = "classvec" if True in kinds[a.value] else "rowof"
                what = "a per-class vector" if how == "classvec" else "a lookup table"
                raise LossShapeError(f"'{a.value}' is {what} ({how}): it can only be read "
                                     f"through {how}", spans.get(a.value))
    return tables


LABEL_LEAVES = ("input", "param", "const")


def _check_label(label: Node, ranks: dict[str, int], spans: dict[str, Span]) -> None:
    """Labels must be something the binder can range-check before a kernel reads through
    them: an input (a vector or a scalar), a param or a constant."""
    if label.op not in LABEL_LEAVES:
        culprits = [a.value for a in toposort([label]) if a.op == "input"]
        raise LossShapeError(
            "labels (of pick, onehot or rowof) must be an input, a param or an integer "
            "constant, so that they can be checked against the number of classes; compute "
            "labels in Python and pass them as an input", spans.get(culprits[0]) if culprits
            else None)
    if label.op == "input" and ranks.get(label.value, 1) == 2:
        raise LossShapeError(
            f"input '{label.value}' holds integer labels (for pick, onehot or rowof) and must "
            "be a vector (N,) of class indices or a scalar, got a matrix; for one-hot rows "
            f"pass {label.value}.argmax(axis=1), or use a loss on one-hot targets (cce_logits)",
            spans.get(label.value))


def specialize(
    graph: Node, ranks: dict[str, int], order: tuple[str, ...],
    spans: dict[str, Span] | None = None, *, rows: Sequence[DeclaredRows] = (),
    conditions: Sequence[Node] = ()
) -> Specialized:
    """Type ``graph`` for inputs of the given ranks (0, 1 or 2), inputs numbered by ``order``:
    infer each node's sample domain and class axis, name the axes, then expand the macros that
    need them (``mean``, ``sum``, ``rowmean``). ``rows``: the arguments bound to def
    parameters declared rows; ``conditions``: those of the def requirements (both checked
    for these ranks first)."""
    spans = spans or {}
    nodes = toposort([graph])
    tables = _table_inputs(nodes, ranks, spans)
    # before the loss's own inference: a vector where rows are declared is reported as that
    # (with what to do), not as the rowsum inside the def that it fails
    _check_declared_shapes(rows, conditions, spans, ranks, order, tables)
    graph = _pair_dots(graph, ranks, spans)
    nodes = toposort([graph])
    inferred = infer_domains(nodes, ranks, order, tables, spans)
    graph, class_groups = _group_totals_with_classes(graph, nodes, inferred, ranks, spans)
    if class_groups:  # the graph now sums those groups as cumulative sums: type it again
        nodes = toposort([graph])
        inferred = infer_domains(nodes, ranks, order, tables, spans)
    groups = _groupings(nodes, inferred, ranks, spans)
    pairs = _pairings(nodes, inferred, ranks, spans, groups)
    if groups:
        # every per-sample input of a grouped domain holds one value per item of a group
        ragged = frozenset(name for name, domain in inferred.input_domain.items()
                           if inferred.domains.find(domain) in groups)
        inferred = infer_domains(nodes, ranks, order, tables, spans, ragged)
        inferred.groups = {inferred.domains.find(inferred.input_domain[g]): g
                           for g in groups.values()}
    inferred.pairs = pairs
    _check_class_pairs(nodes, inferred, spans)
    result = name_axes(graph, inferred, nodes, ranks, order, tables)
    for ids in class_groups:
        result.class_groups[inferred.axes_of(inferred.input_domain[ids], False)[0]] = ids
    result.graph = expand_shape_macros(graph, inferred, result, tables)
    _check_class_widths(result, spans)
    _check_sample_axes(result, spans)
    _check_class_vectors(result, nodes, tables, spans)
    return result


def _check_declared_shapes(rows: Sequence[DeclaredRows], conditions: Sequence[Node],
                           spans: Mapping[str, Span], ranks: dict[str, int],
                           order: tuple[str, ...], tables: list[str]) -> None:
    """What the source declares besides the graph: each def requirement's condition must
    type for these ranks as the loss does (``rowsum(y)`` of a vector ``y`` is the error it
    is in a loss, not a kernel the backends cannot emit), and each argument bound to a
    parameter declared rows (``cce_logits(y[N, K], z)``) must have one row (N, K) per
    sample: a vector of class indices there would scale each row of the loss by its index
    instead."""
    for condition in conditions:
        infer_domains(toposort([condition]), ranks, order, tables, spans)
    for declared in rows:
        argument = declared.argument
        inferred = infer_domains(toposort([argument]), ranks, order, tables, spans)
        domain, rows = inferred.shape[id(argument)]
        if rows:
            continue
        if argument.op == "input":
            rank = ranks.get(argument.value, 1)
            found = (f"the input '{argument.value}' is a vector (N,), one value per sample"
                     if rank == 1 else
                     f"the input '{argument.value}' is a number, the same for every sample "
                     "and class")
        else:
            found = ("it is a single number, the same for every sample and class"
                     if domain is None else "it has one value per sample (N,)")
        raise declared.error(found)


#: The class-axis flag (:attr:`Domains.shape`) of a matrix input (N, K) and of the values
#: computed from its rows: in a paired domain (``pairsum``) they keep their columns (an
#: embedding's D), while the values per pair (the flag True) have the partners as their row.
COLUMNS = "columns"


@dataclass
class Domains:
    """What :func:`infer_domains` finds: each node's sample domain (a union-find variable, or
    None for a value shared by all samples) and whether it has a class axis."""

    domains: _Domains
    input_domain: dict[str, int]  # input name -> its domain variable
    shape: dict[int, tuple[int | None, bool]]  # node id -> (domain variable, has class axis)
    names: dict[int, Axis] = field(default_factory=dict)  # domain root -> its sample axis
    groups: dict[int, str] = field(default_factory=dict)  # grouped domain root -> group ids
    pairs: dict[int, str] = field(default_factory=dict)  # paired domain root -> group ids
    # the partner(x) nodes within a class pair sum's summand (classpairsum(e)): x at the
    # partner class of each pair of a row's classes, not at a partner sample
    class_partners: frozenset[int] = frozenset()

    def axes_of(self, domain: int | None, rows: bool) -> tuple[str, ...]:
        """The axis names of a value in ``domain``, with its class axis (or, for grouped
        samples, its group's items) when ``rows``."""
        if domain is None:
            return ()
        root = self.domains.find(domain)
        if root not in self.names:
            self.names[root] = Axis.samples(len(self.names))
        sample = self.names[root]
        if not rows:
            return (sample,)
        ragged = root in self.groups or (root in self.pairs and rows != COLUMNS)
        return (sample, sample.items() if ragged else sample.classes())

    def axes(self, n: Node) -> tuple[str, ...]:
        """The axis names of node ``n``."""
        return self.axes_of(*self.shape[id(n)])


def infer_domains(nodes: list[Node], ranks: dict[str, int], order: tuple[str, ...],
                  tables: list[str], spans: dict[str, Span],
                  ragged: frozenset[str] = frozenset()) -> Domains:
    """Which values share a sample axis (union-find over the inputs' domains) and which have a
    class axis, for the nodes of a graph in topological order. The ``ragged`` inputs are
    vectors of grouped samples: one value per item of a group's row."""
    domains = _Domains()
    input_domain: dict[str, int] = {}
    shape: dict[int, tuple[int | None, bool]] = {}
    class_partners = _class_pair_partners(nodes, spans)
    for name in order:
        rank = ranks.get(name, 1)
        if rank > 2:
            raise LossShapeError(
                f"input '{name}' must be a scalar, a vector (N,) or a matrix (N, K), "
                f"got {_role(rank)}",
                spans.get(name),
            )
        if rank > 0 and name not in tables:
            input_domain[name] = domains.new()

    def join(a: int | None, b: int | None) -> int | None:
        if a is None:
            return b
        if b is None:
            return a
        return domains.union(a, b)

    for n in nodes:
        if n.op == "input":
            rank = ranks.get(n.value, 1)
            shape[id(n)] = (input_domain.get(n.value),
                            COLUMNS if rank == 2 else n.value in ragged)
        elif n.op == "pairdot":  # rows of two matrices, one value per pair of samples
            shape[id(n)] = (join(*(shape[id(a)][0] for a in n.args)), True)
        elif n.op in ("group", "pairs"):  # the items (or partners) of each group as a row
            values, groups = (shape[id(a)][0] for a in n.args)
            shape[id(n)] = (join(values, groups), True)
        elif n.op == "partner_first":  # one value per partner of each sample of the groups
            shape[id(n)] = (shape[id(n.args[0])][0], True)
        elif id(n) in class_partners:  # x at the partner class: x's rows stay rows
            shape[id(n)] = shape[id(n.args[0])]
        elif n.op == "classpairs":  # per class, the sum over its partner classes
            domain, rows = shape[id(n.args[0])]
            if not rows:
                culprits = [a.value for a in toposort([n.args[0]]) if a.op == "input"]
                raise LossShapeError(
                    "classpairsum(e) sums e over the ordered pairs of distinct classes of each "
                    "row: e must have classes, from an (N, K) input (a vector (N,) has one "
                    "value per sample and no classes to pair)",
                    spans.get(culprits[0]) if culprits else None)
            shape[id(n)] = (domain, True)
        elif n.op == "partner":  # one value per partner of each sample
            domain, rows = shape[id(n.args[0])]
            if rows:
                culprits = [a.value for a in toposort([n.args[0]]) if a.op == "input"]
                raise LossShapeError("partner(x) is only defined within a pair sum's summand: "
                                     "within pairsum(e, g) it reads x at the other sample of a "
                                     "pair, and x must have one value per sample (not classes "
                                     "(N, K), nor be read at a partner itself; the rows (N, D) "
                                     "of matrix inputs u, v are read as the dot product "
                                     "rowsum(u * partner(v))); within classpairsum(e) it reads "
                                     "a class matrix at the partner class",
                                     spans.get(culprits[0]) if culprits else None)
            shape[id(n)] = (domain, domain is not None)
        elif not n.args:
            shape[id(n)] = (None, False)
        elif n.op == "class_index":
            _check_label(n.args[0], ranks, spans)
            domain, _ = shape[id(n.args[0])]
            # a constant column (pick(u, 3)) reads the columns of the rows it meets, also
            # those of a matrix input (N, D) in a paired domain (COLUMNS)
            shape[id(n)] = (domain if domain is not None else domains.new(),
                            COLUMNS if n.args[0].op == "const" else True)
        elif is_class_vector(n) and n.args[0].value not in tables:
            shape[id(n)] = (None, False)  # bound to a number: that number for every class
        elif n.op == "table_row":  # one row of the table per sample of the labels
            _check_label(n.args[1], ranks, spans)
            domain, _ = shape[id(n.args[1])]
            shape[id(n)] = (domain if domain is not None else domains.new(), True)
        elif n.op in ("sum", "mean"):
            shape[id(n)] = (None, False)
        elif n.op in SCAN:
            (e_domain, e_rows), (t_domain, t_rows), (g_domain, g_rows) = (
                shape[id(a)] for a in n.args)
            # a group's total sums each column of rows (N, K) over the group
            rows_summed = e_rows and n.op in GROUP_SCANS
            if is_column_total(n):  # colsum(e): every sample in one group, the key 0
                if e_domain is None:
                    culprits = [a.value for a in toposort([n.args[0]]) if a.op == "input"]
                    raise LossShapeError(
                        "colsum(e) gives every row the total of each column of e over all "
                        "the samples: e must have one value (or one row) per sample, from a "
                        "vector (N,) or a matrix (N, K) input; a number has no samples (use "
                        "sum(e) for a total of its own)",
                        spans.get(culprits[0]) if culprits else None)
                shape[id(n)] = (e_domain, e_rows)
                continue
            if (e_rows and not rows_summed) or t_rows or g_rows or t_domain is None:
                # point at an input of the argument at fault: the keys, or one with classes
                wrong = n.args[1] if t_domain is None else next(
                    a for a in n.args if shape[id(a)][1])
                culprits = [a.value for a in toposort([wrong]) if a.op == "input"]
                raise LossShapeError(
                    f"{n.op}(e, t, strata) sums one value per sample over the samples ordered "
                    "by their keys t, one per sample: "
                    + ("t must be a vector (N,)" if t_domain is None
                       else "none of them can have classes (N, K)"),
                    spans.get(culprits[0]) if culprits else None)
            shape[id(n)] = (join(join(e_domain, t_domain), g_domain), rows_summed)
        elif n.op in ROW or n.op == "rowmean":  # the registry's row reductions, and the mean
            domain, rows = shape[id(n.args[0])]
            if not rows:
                culprits = [a.value for a in toposort([n.args[0]]) if a.op == "input"]
                vectors = [c for c in culprits if ranks.get(c, 1) < 2]
                detail = ", ".join(f"'{c}' is {_role(ranks.get(c, 1))}" for c in vectors)
                if culprits and not vectors:  # as in rowsum(rowsum(z))
                    detail = ("its argument has one value per sample: the classes of "
                              + ", ".join(f"'{c}'" for c in culprits)
                              + " are already reduced inside it")
                raise LossShapeError(
                    f"{n.op} (used by logsumexp/softmax/pick/rowsum) needs a per-class matrix "
                    f"(N, K) argument" + (f"; {detail}" if detail else ""),
                    spans.get(culprits[0]) if culprits else None,
                )
            for target in n.args[1:]:  # logit_shift's per-row target
                domain = join(domain, shape[id(target)][0])
            # before the groups are laid out (no ragged inputs yet), a group's reduction of
            # rows (N, K) keeps its classes: each column summed over the group, as
            # _group_totals_with_classes then writes it
            summed_rows = (n.args[0].op == "group" and not ragged
                           and shape[id(n.args[0].args[0])][1])
            shape[id(n)] = (domain, summed_rows)
        else:
            domain, rows = None, False
            for a in n.args:
                a_domain, a_rows = shape[id(a)]
                domain = join(domain, a_domain)
                rows = rows or a_rows
            shape[id(n)] = (domain, rows)
    return Domains(domains, input_domain, shape, class_partners=class_partners)


def _class_pair_partners(nodes: list[Node], spans: Mapping[str, Span]) -> frozenset[int]:
    """The ``partner(x)`` nodes within the summand of a class pair sum (``classpairsum``),
    checked: no pair sum of either kind within another's summand (whose partner would be
    ambiguous)."""
    found: set[int] = set()
    for n in nodes:
        if n.op not in ("classpairs", "pairs"):
            continue
        summand = toposort([n.args[0]])
        nested = [m for m in summand if m.op in ("classpairs", "pairs")]
        if nested and "classpairs" in (n.op, nested[0].op):
            culprits = [a.value for a in toposort([nested[0]]) if a.op == "input"]
            raise LossShapeError(
                "a pair sum within the summand of another (classpairsum within classpairsum "
                "or pairsum, or pairsum within classpairsum) is not supported: partner(x) "
                "there would not say which pair it reads; compute the inner sum in a "
                "separate loss term", spans.get(culprits[0]) if culprits else None)
        if n.op == "classpairs":
            found.update(id(m) for m in summand if m.op == "partner")
    return frozenset(found)


def _check_class_pairs(nodes: list[Node], inferred: Domains,
                       spans: Mapping[str, Span]) -> None:
    """What a class pair sum may read, checked once domains are known: only elementwise
    operations combine what it reads at the partner classes (a row reduction of them would
    sum over the partners), and ``partner(x)`` reads an x that is computed class by class
    from inputs, class indices (``onehot``) and per-row values, which the kernels compute
    again at the partner class."""
    # (grouped or paired samples have no classes: infer_domains and _pairings refuse them)
    for n in nodes:
        if n.op != "classpairs":
            continue
        inputs = [a.value for a in toposort([n.args[0]]) if a.op == "input"]
        span = spans.get(inputs[0]) if inputs else None
        reads: dict[int, bool] = {}
        for m in toposort([n.args[0]]):
            reads[id(m)] = id(m) in inferred.class_partners or any(reads[id(a)] for a in m.args)
            op = find(m.op)
            if (reads[id(m)] and id(m) not in inferred.class_partners
                    and (op is None or op.kind != "elementwise")):
                raise LossShapeError(
                    f"within classpairsum(e), {spelled(m)} of values read at the partner class "
                    "is not supported: e combines the pair's values with elementwise "
                    "operations (a row reduction there would sum over the partners)", span)
    for n in nodes:
        if n.op != "partner" or id(n) not in inferred.class_partners:
            continue
        stack, seen = [n.args[0]], set()
        while stack:
            m = stack.pop()
            if id(m) in seen or not inferred.shape[id(m)][1]:
                continue  # a row's own value (or a number) is the same at every class
            seen.add(id(m))
            op = find(m.op)
            if m.op in ("input", "class_index", "table_row"):
                continue  # read at column c (a table's row: at the row's own label)
            if op is None or op.kind != "elementwise":
                culprits = [a.value for a in toposort([m]) if a.op == "input"]
                what = spelled(m)
                raise LossShapeError(
                    f"partner(x) within classpairsum reads x at the partner class: x must "
                    f"be computed class by class from (N, K) inputs, onehot, classvec, rowof "
                    f"and per-row values, not from {what}",
                    spans.get(culprits[0]) if culprits else None)
            stack.extend(m.args)


def _groupings(nodes: list[Node], inferred: Domains, ranks: dict[str, int],
               spans: dict[str, Span]) -> dict[int, str]:
    """The grouped sample domains (root -> the input of group ids), checked: the group ids are
    a vector, one grouping per domain, and nothing in a grouped domain has classes."""
    groups: dict[int, str] = {}
    for n in nodes:
        if n.op != "group":
            continue
        ids, root = _group_ids(n, inferred, ranks, spans, "groupsum and its kin")
        if groups.setdefault(root, ids) != ids:
            raise LossShapeError(f"the samples are grouped both by '{groups[root]}' and by "
                                 f"'{ids}': a loss groups its samples one way",
                                 spans.get(ids))
    _one_value_per_sample(nodes, inferred, ranks, spans, groups, "grouped by '{}'")
    return groups


def _has_classes(n: Node, ranks: dict[str, int]) -> bool:
    """Whether ``n`` gives its samples classes: an (N, K) input, a class index (pick,
    onehot) or a table's row (rowof, classvec of a vector)."""
    return ((n.op == "input" and ranks.get(n.value, 1) == 2)
            or n.op == "class_index" or (n.op == "table_row" and not (
                is_class_vector(n) and ranks.get(n.args[0].value, 1) == 0)))


def _group_totals_with_classes(graph: Node, nodes: list[Node], inferred: Domains,
                               ranks: dict[str, int], spans: dict[str, Span]
                               ) -> tuple[Node, list[str]]:
    """``graph`` with the group reductions of the grouped samples that have classes
    written as group totals, and the inputs of their group ids.

    Grouped samples are rows of a group's items (one ragged row per group); an (N, K)
    matrix among them would need a third axis. Where its samples have classes,
    ``groupsum(e, g)`` is instead ``sum_group(e, g, 0)``: the sum of e over the samples
    whose id is the sample's own, each column of rows summed apart, a cumulative sum over
    each sample's ties (:mod:`lossdsl.ops.scans`) that keeps the samples as they are;
    ``groupmean(e, g)`` is ``groupsum(e, g)/groupsum(1, g)``. ``groupmax`` (and what is
    built on it: ``group_logsumexp``, ``group_softmax``) and ``group_logit_shift`` have no
    such form and are refused there."""
    roots: dict[int, str] = {}
    for n in nodes:
        if n.op == "group":
            ids, root = _group_ids(n, inferred, ranks, spans, "groupsum and its kin")
            roots.setdefault(root, ids)
    with_classes: dict[int, str] = {}
    for n in nodes:
        domain = inferred.shape[id(n)][0]
        root = inferred.domains.find(domain) if domain is not None else None
        if root in roots and _has_classes(n, ranks):
            with_classes[root] = roots[root]
    if not with_classes:
        return graph, []
    zero = constant(0.0)

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        grouped = old.args[0] if old.args else None
        if grouped is not None and grouped.op == "group" and inferred.domains.find(
                inferred.shape[id(grouped)][0]) in with_classes:
            values, ids = args[0].args
            if old.op not in ("rowsum", "rowmean"):
                spelled = {"rowmax": "groupmax (group_logsumexp, group_softmax)",
                           "logit_shift": "group_logit_shift"}.get(old.op, old.op)
                raise LossShapeError(
                    f"{spelled} is not supported for samples that have classes ((N, K) "
                    f"inputs, pick, onehot or classvec) grouped by '{ids.value}': only "
                    "groupsum and groupmean sum each column of a group's rows",
                    spans.get(ids.value))
            total = make("sum_group", (values, ids, zero))
            if old.op == "rowsum":
                return total
            return make("div", (total, make("sum_group", (constant(1.0), ids, zero))))
        if args == old.args:
            return old
        return make(old.op, args, old.value, old.axes)

    (rewritten,) = rebuild([graph], rule)
    return rewritten, list(dict.fromkeys(with_classes.values()))


def _group_ids(n: Node, inferred: Domains, ranks: dict[str, int], spans: dict[str, Span],
               reader: str) -> tuple[str, int]:
    """The input of group ids of ``group(e, g)`` or ``pairs(e, g)`` node ``n``, checked to be
    a vector, and the root of its sample domain; ``reader`` names what reads them."""
    ids = n.args[1].value
    if ranks.get(ids, 1) != 1:
        raise LossShapeError(f"'{ids}' holds group ids ({reader}), one per sample: it must be "
                             f"a vector (N,), got {_role(ranks[ids])}", spans.get(ids))
    return ids, inferred.domains.find(inferred.input_domain[ids])


def _one_value_per_sample(nodes: list[Node], inferred: Domains, ranks: dict[str, int],
                          spans: dict[str, Span], arranged: dict[int, str],
                          how: str, rows_allowed: bool = False) -> None:
    """Refuse classes and cumulative sums among the samples of the ``arranged`` domains (root
    -> group ids: grouped or paired samples have one value each, in rows of their own);
    ``how`` says how they are arranged, ``{}`` standing for the group ids. ``rows_allowed``:
    matrix inputs (N, D) are rows of their own (a pair sum's embeddings, which its pairs
    read through ``pairdot``)."""
    for n in nodes:
        domain, _ = inferred.shape[id(n)]
        if domain is None or inferred.domains.find(domain) not in arranged:
            continue
        ids = arranged[inferred.domains.find(domain)]
        if n.op == "input" and ranks.get(n.value, 1) == 2 and not rows_allowed:
            raise LossShapeError(f"'{n.value}' is a matrix (N, K), but its samples are "
                                 f"{how.format(ids)}: they have one value each",
                                 spans.get(n.value))
        if n.op == "table_row" or (n.op == "class_index" and not (
                rows_allowed and n.args[0].op == "const")):
            raise LossShapeError(f"classes (pick, onehot, rowof, classvec) cannot be read for "
                                 f"samples {how.format(ids)}", spans.get(ids))
        if is_column_total(n):
            raise LossShapeError(f"colsum(e) gives each sample a total over all the samples, "
                                 f"which is not supported for samples {how.format(ids)}: "
                                 "use sum(e), the same total as one number",
                                 spans.get(ids))
        if n.op in SCAN:
            raise LossShapeError(f"{n.op} sums over the samples in the order of its keys, "
                                 f"not within the groups of '{ids}': give the group ids as "
                                 f"its strata instead ({n.op}(e, t, {ids}))", spans.get(ids))


def _pairings(nodes: list[Node], inferred: Domains, ranks: dict[str, int],
              spans: dict[str, Span], groups: dict[int, str]) -> dict[int, str]:
    """The paired sample domains (root -> the input of group ids), checked: the group ids are
    a vector, one pairing per domain and no grouping with it, ``partner(x)`` and
    ``partner_first(g)`` only within a pair sum's summand, ``partner(x)`` of one value per
    sample (inputs, pair sums, sums over the samples), and nothing in a paired domain has
    classes or sums in an order."""
    pairs: dict[int, str] = {}
    within: set[int] = set()  # the nodes of every pair sum's summand
    for n in nodes:
        if n.op != "pairs":
            continue
        ids, root = _group_ids(n, inferred, ranks, spans, "pairsum")
        if pairs.setdefault(root, ids) != ids or root in groups:
            other = groups.get(root, pairs[root])
            raise LossShapeError(f"the samples are paired within the groups of '{ids}' and "
                                 f"also grouped by '{other}': a loss groups its samples one "
                                 "way (a group's sum is a pair sum too: groupsum(x, g) is "
                                 "x + pairsum(partner(x), g))", spans.get(ids))
        within.update(id(m) for m in toposort([n.args[0]]))
    for n in nodes:
        if n.op == "partner_first" and (id(n) not in within or n.args[0].op != "input"
                                        or n.args[0].value not in pairs.values()):
            raise LossShapeError("partner_first(g) is only defined within a pair sum over the "
                                 "groups of g, pairsum(e, g)", spans.get(n.args[0].value))
        if n.op != "partner" or id(n) in inferred.class_partners:
            continue  # x at a partner class (classpairsum): _check_class_pairs
        inner = toposort([n.args[0]])
        culprits = [a.value for a in inner if a.op == "input"]
        span = spans.get(culprits[0]) if culprits else None
        if id(n) not in within:
            raise LossShapeError("partner(x) is only defined within a pair sum's summand: "
                                 "pairsum(e, g) sums e over the partners of each sample",
                                 span)
        if any(m.op in _NOT_AT_PARTNER for m in _outside_pair_sums(n.args[0])):
            raise LossShapeError("partner(x) reads x at the partner: x must be one value per "
                                 "sample, of its inputs, pair sums and sums over the samples "
                                 "(no group or row reductions, classes, or partner within "
                                 "it)", span)
    _one_value_per_sample(nodes, inferred, ranks, spans, pairs,
                          "paired within the groups of '{}' (pairsum)", rows_allowed=True)
    _rows_meet_pairs_only_as_dots(nodes, inferred, pairs, spans)
    return pairs


def _rows_meet_pairs_only_as_dots(nodes: list[Node], inferred: Domains,
                                  pairs: Mapping[int, str], spans: Mapping[str, Span]) -> None:
    """In a paired domain, the rows (N, D) of matrix inputs and the values per pair are two
    kinds of row (columns, partners) that no elementwise operation can combine: a pair reads
    the rows through ``rowsum(u * partner(v))`` alone."""
    for n in nodes:
        domain, rows = inferred.shape[id(n)]
        if (domain is None or inferred.domains.find(domain) not in pairs or not rows
                or n.op == "pairdot"):
            continue
        kinds = {inferred.shape[id(a)][1] for a in n.args} - {False}
        if len(kinds) > 1:
            culprits = [a.value for a in toposort([n]) if a.op == "input"
                        and inferred.shape[id(a)][1] == COLUMNS]
            raise LossShapeError(
                "within pairsum(e, g), the rows (N, D) of a matrix input meet a pair's "
                "values only as the dot product rowsum(u * partner(v)) of two rows (each a "
                "matrix input), or reduced to one value per sample first (rowsum(u^2), "
                "then partner(rowsum(u^2)))", spans.get(culprits[0]) if culprits else None)


def _pair_dots(graph: Node, ranks: Mapping[str, int], spans: Mapping[str, Span]) -> Node:
    """``graph`` with each ``rowsum(u * partner(v))`` of matrix inputs u, v (N, D) within a
    pair sum's summand as ``pairdot(u, v)``: the dot product of sample i's row of u and its
    partner j's row of v, one value per pair, which the kernels compute pair by pair without
    laying the rows out per pair."""
    if not any(n.op == "pairs" for n in toposort([graph])):
        return graph
    outside = {id(n) for n in _outside_pair_sums(graph)}

    def rows_of(x: Node) -> bool:
        return x.op == "input" and ranks.get(x.value, 1) == 2

    def dot(n: Node) -> tuple[Node, Node] | None:
        if n.op != "rowsum" or n.args[0].op != "mul":
            return None
        for own, other in (n.args[0].args, reversed(n.args[0].args)):
            if rows_of(own) and other.op == "partner" and rows_of(other.args[0]):
                return own, other.args[0]
        return None

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        found = dot(old)
        if found is not None:
            if id(old) in outside:
                raise LossShapeError("partner(x) is only defined within a pair sum's "
                                     "summand: pairsum(e, g) sums e over the partners of "
                                     "each sample", spans.get(found[1].value))
            return node("pairdot", found)
        return old if args == old.args else make(old.op, args, old.value, old.axes)

    (rewritten,) = rebuild([graph], rule)
    return rewritten


def _outside_pair_sums(x: Node) -> list[Node]:
    """The nodes of ``x`` that are not within the summand of a pair sum in it."""
    found, seen, stack = [], set(), [x]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        found.append(n)
        stack.extend(n.args[1:] if n.op == "pairs" else n.args)
    return found


# what partner(x) cannot read: x has one value per sample of the paired domain, without a
# nested partner (whose partner would be ambiguous)
_NOT_AT_PARTNER = frozenset({"partner", "group", "rowmean", "table_row",
                             "count_as", *SCAN})


def name_axes(graph: Node, inferred: Domains, nodes: list[Node], ranks: dict[str, int],
              order: tuple[str, ...], tables: list[str]) -> Specialized:
    """Name the axes (sample domains numbered in input order: "n0", "n1", ...; a class axis
    is its sample axis + "k"; table rows "t0", ...) and record, for each axis, the inputs whose
    length it is, and every label read with the axis it indexes. The result holds ``graph``
    as given, untyped: :func:`expand_shape_macros` types it."""
    for name in order:
        if name in inferred.input_domain:
            root = inferred.domains.find(inferred.input_domain[name])
            inferred.names.setdefault(root, Axis.samples(len(inferred.names)))
    result = Specialized(graph, {})
    for name in order:
        if name in inferred.input_domain:
            domain = inferred.input_domain[name]
            grouped = inferred.domains.find(domain) in inferred.groups
            axes = inferred.axes_of(domain, grouped or (COLUMNS if ranks.get(name, 1) == 2
                                                        else False))
            result.input_axes[name] = axes
            if grouped:  # a vector of items: its length is the items'; the groups' is bound
                result.axis_sources.setdefault(axes[1], []).append((name, 0))
                continue
            for dimension, axis in enumerate(axes):
                result.axis_sources.setdefault(axis, []).append((name, dimension))
        else:
            result.input_axes[name] = ()
    for root, ids in inferred.groups.items():
        result.groups[inferred.names[root]] = ids
    for root, ids in inferred.pairs.items():
        result.pairs[inferred.names[root]] = ids
    # a table's rows are indexed by labels; its columns are the lookup's class axis
    for index, table in enumerate(tables):
        lookup = next(n for n in nodes if n.op == "table_row" and n.args[0].value == table)
        row_axis, class_axis = Axis.table_rows(index), inferred.axes(lookup)[1]
        result.input_axes[table] = (row_axis, class_axis)
        result.axis_sources.setdefault(row_axis, []).append((table, 0))
        result.axis_sources.setdefault(class_axis, []).append((table, 1))
    for n in nodes:
        if n.op == "class_index":
            result.labels.append((n.args[0], inferred.axes(n)[1]))
        elif n.op == "table_row" and not is_class_vector(n):  # classvec reads row 0 of 1
            result.labels.append((n.args[1], result.input_axes[n.args[0].value][0]))
    result.labels = list(dict.fromkeys(result.labels))
    return result


def expand_shape_macros(graph: Node, inferred: Domains, result: Specialized,
                        tables: list[str]) -> Node:
    """The graph with typed inputs and axes, and the macros that need the element count
    (``mean``, ``sum`` of a matrix, ``rowmean``) expanded; records ``onehot``'s fixed class
    widths in ``result.fixed_widths``."""
    group_ids = group_id_nodes(result)

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if old.op == "input":
            return node("input", (), old.value, result.input_axes.get(old.value, ()))
        if not args:
            return old
        if old.op == "class_index":
            # a scalar label has no domain of its own: its class axis is the inferred one
            typed = make("class_index", args, old.value, inferred.axes(old))
            if old.value is not None:
                result.fixed_widths[typed.axes[1]] = int(old.value)
            return typed
        if old.op == "table_row":
            if is_class_vector(old) and old.args[0].value not in tables:
                return args[0]  # a number for every class
            return node("table_row", args, old.value, inferred.axes(old))
        if old.op == "mean":
            x = on_every_sample(args[0], group_ids)
            if x.axes == ():
                return batch_term(x)
            return make("div", (sum_all(x), element_count(x.axes)))
        if old.op == "sum":
            x = on_every_sample(args[0], group_ids)
            return batch_term(x) if x.axes == () else sum_all(x)
        if old.op == "partner" and id(old) in inferred.class_partners:
            return pairs.at_partner_classes(args[0])
        if old.op == "classpairs":  # over the partner classes: K - 1 of a value the same at each
            (x,) = args
            return reduced_along("rowsum", args, pairs.class_pair_axes(x.axes))
        if old.op == "partner":
            return pairs.at_partners(args[0], inferred.axes(old))
        if old.op == "partner_first":
            return node("partner_first", args, None, inferred.axes(old))
        if old.op in ("group", "pairs"):
            return args[0]
        if (old.op == "logit_shift" or old.op in ("rowsum", "rowmax", "rowmean")
                and old.args[0].op in ("group", "pairs")) and len(args[0].axes) < 2:
            # the same for every item: groupsum(1, g) counts them; one score z for every
            # item: sigmoid(z + b) = t / n, b = log t - log(n - t) - z
            return reduced_along(old.op, args, inferred.axes(old.args[0]))
        if old.op == "rowmean":
            (x,) = args
            return make("div", (make("rowsum", (x,)), axis_length(x.axes[1])))
        return make(old.op, args, old.value)

    (typed,) = rebuild([graph], rule)
    return typed


def group_id_nodes(result: Specialized) -> dict[str, Node]:
    """The typed group ids of each grouped sample axis (which counts the groups)."""
    return {axis: node("input", (), name, result.input_axes[name])
            for axis, name in result.groups.items()}


def on_every_sample(x: Node, group_ids: Mapping[str, Node]) -> Node:
    """``x``, where it holds one value per group of grouped samples, given to each sample of
    the group (``along``): a sum or a mean over the samples then counts every sample, as
    ``groupsum(e, g)`` promises (one value per sample: its group's)."""
    if x.axes is not None and len(x.axes) == 1 and x.axes[0] in group_ids:
        return make("along", (x, group_ids[x.axes[0]]))
    return x


def _check_sample_axes(result: Specialized, spans: dict[str, Span]) -> None:
    """Every per-sample value needs an input that gives the number of samples (the group
    ids give the number of groups)."""
    for n in toposort([result.graph]):
        if n.axes and n.axes[0] not in result.axis_sources and n.axes[0] not in result.groups:
            # constant labels (onehot(1, 3)) or a table read at one (pick(classvec(w), 0))
            culprits = [m.args[0].value for m in toposort([n]) if m.op == "table_row"]
            raise LossShapeError(
                "this loss has values per sample but no per-sample input that gives their "
                "number: a constant label (onehot(1, 3)), or a per-class vector or table read "
                "at one, is one row, not one per sample; combine it with per-sample inputs",
                spans.get(culprits[0]) if culprits else None)


def _check_class_vectors(result: Specialized, nodes: list[Node], tables: list[str],
                         spans: dict[str, Span]) -> None:
    """A per-class vector (K,) must meet classes that something else defines: an (N, K)
    input, a table's columns, onehot(y, K) or labels read on its class axis (whose values its
    length then bounds). Alone, it would make (N,) inputs into (N, K) ones silently."""
    vectors = dict.fromkeys(n.args[0].value for n in nodes
                            if is_class_vector(n) and n.args[0].value in tables)
    indexed = {axis for _, axis in result.labels}
    for name in vectors:
        axis = result.input_axes[name][1]
        others = [source for source, _ in result.axis_sources.get(axis, [])
                  if source not in vectors]
        if others or axis in result.fixed_widths or axis in indexed:
            continue
        raise LossShapeError(
            f"'{name}' is a per-class vector (K,) (classvec), but nothing else in this loss "
            "has classes: the inputs it meets are vectors (N,) or numbers. Bind them as (N, K) "
            f"matrices (one column per class, as multi-label targets), or pass '{name}' as a "
            "number", spans.get(name))


def _check_class_widths(result: Specialized, spans: dict[str, Span]) -> None:
    """Every class axis needs a width that call-time inputs or onehot(y, K) give: with none,
    ``rowsum(onehot(y))`` could not size its class loop."""
    for n in toposort([result.graph]):
        if n.axes is None or len(n.axes) != 2:
            continue
        axis = n.axes[1]
        if axis in result.axis_sources or axis in result.fixed_widths:
            continue
        if Axis(axis).is_ragged and Axis(axis).samples_of() in result.pairs:
            continue  # a sample's partners: the binder counts them from the group ids
        # point at the labels (onehot(y)), else at any input on that axis (onehot(1) * p)
        on_axis = [m for m in toposort([result.graph]) if m.axes and m.axes[1:] == (axis,)]
        labels = [m.args[0].value for m in on_axis
                  if m.op == "class_index" and m.args[0].op == "input"]
        labels += [m.value for m in toposort(on_axis) if m.op == "input"]
        raise LossShapeError(
            "the number of classes is unknown: no (N, K) input meets onehot/pick here; write "
            "onehot(y, K) with the number of classes K",
            spans.get(labels[0]) if labels else None)


def element_count(axes: tuple[str, ...]) -> Node:
    """The number of elements of a value with these axes (a runtime scalar): of grouped
    samples' items, the number of items."""
    if len(axes) == 2 and Axis(axes[1]).is_ragged:
        return node("count", (), axes[1], ())
    count = constant(1.0)
    for axis in axes:
        count = make("mul", (count, node("count", (), axis, ())))
    return count


def batch_term(x: Node) -> Node:
    """``sum(x)`` or ``mean(x)`` written of a value ``x`` with no axes (a regulariser's
    weight bound to a number): ``x``, marked as a reduction as ``along(x, x)`` (``x`` for
    its one element: the kernels print ``x``, the derivatives are ``x``'s), so that
    :func:`split_additive` adds it once, as it does for ``x`` of shape (1,), instead of
    once per sample."""
    return make("along", (x, x))


def _is_batch_term(n: Node) -> bool:
    """Whether ``n`` reduces over samples: a ``sum``, or :func:`batch_term`'s mark."""
    return n.op == "sum" or (n.op == "along" and n.axes == ())


def sum_all(x: Node) -> Node:
    """The sum of every element of ``x`` (a scalar)."""
    if x.axes == ():
        return x
    return make("sum", (make("rowsum", (x,)),)) if len(x.axes) == 2 else make("sum", (x,))


def split_additive(x: Node) -> tuple[Node, Node]:
    """(per-sample part, batch part) of a sum of terms: ``l_i + 0.1*l1(w)`` →
    ``(l_i, 0.1*l1(w))``. A batch term reduces over an axis (``sum``, ``mean``, a regulariser)
    and is added to the loss once; any other scalar term (``log(2)`` in ``log_cosh``, a
    param) is a constant of every sample's loss, so it stays in the per-sample part and
    counts once per sample under ``reduction="sum"`` and ``"none"``.

    The per-sample part keeps the expression's own grouping, batch terms replaced by 0:
    regrouping its terms would round differently (``(z - m) - log s`` is exact near the
    maximum, ``z + (-m - log s)`` is not).
    """
    reduces: dict[int, bool] = {}  # whether a node holds a reduction (one walk, not one a term)
    for n in toposort([x]):
        reduces[id(n)] = _is_batch_term(n) or any(reduces[id(a)] for a in n.args)
    batch = constant(0.0)
    spine: list[Node] = []  # the add/sub/neg tree and its leaves, parents first
    batch_terms: set[int] = set()
    stack = [(x, 1.0)]
    while stack:
        term, sign = stack.pop()
        spine.append(term)
        if term.op == "add":
            stack.extend([(term.args[0], sign), (term.args[1], sign)])
        elif term.op == "sub":
            stack.extend([(term.args[0], sign), (term.args[1], -sign)])
        elif term.op == "neg":
            stack.append((term.args[0], -sign))
        elif term.axes == () and reduces[id(term)]:
            batch_terms.add(id(term))
            batch = make("add", (batch, term if sign > 0 else make("neg", (term,))))
    if not batch_terms:
        return x, batch
    kept: dict[int, Node] = {}
    for term in reversed(spine):  # arguments before the sums they are terms of
        if term.op in ("add", "sub", "neg"):
            kept[id(term)] = make(term.op, tuple(kept[id(a)] for a in term.args))
        else:
            kept[id(term)] = constant(0.0) if id(term) in batch_terms else term
    return kept[id(x)], batch


# The reductions of the whole loss (``reduction=`` of lossdsl.compile). "sum_over_batch_size"
# is Keras' name of "mean"; "batchmean" is PyTorch's (KLDivLoss): the sum over every element
# divided by the number of samples alone, not by samples times classes.
REDUCTIONS = ("mean", "weighted_mean", "sum", "none", "batchmean", "sum_over_batch_size")


@dataclass(frozen=True)
class Objective:
    """The reduced loss: ``value`` (a scalar, or per-element for "none") and ``total``, the
    scalar whose derivatives ``grad`` and ``hessian`` return.

    With ``ignore_index``, ``ignored`` names the label input whose value ``ignore_index``
    drops a sample, and ``kept_count`` is the ``count`` leaf (the number of samples kept)
    that the caller binds from the labels before the kernel runs.

    ``count_total`` is the denominator of a mean whose samples count as ``count_as(l, s)``
    says (``sum(s)`` over the samples kept, times the classes of a matrix loss; ``sum(w*s)``
    for a weighted "weighted_mean"); None without count_as and for reductions that divide
    by nothing. ``weight_total`` is a weighted "weighted_mean"'s denominator without
    count_as: the weights' total.
    """

    value: Node
    total: Node
    weight_axes: tuple[str, ...] | None
    sample_axis: str | None  # the samples' axis; None for a loss that is a single number
    ignored: str | None = None
    kept_count: str | None = None
    count_total: Node | None = None
    # the weights' total a weighted "weighted_mean" divides by (sum(w) over the samples kept)
    weight_total: Node | None = None


def kept_count_name(sample_axis: str) -> str:
    """The name of the ``count`` leaf holding the number of samples not ignored (a name no
    axis has: axes are ``n<d>``, ``n<d>k`` and ``t<d>``)."""
    return Axis(sample_axis).kept_count()


def _ignored_label(varying: Node, scalar: Node, sample_axis: str,
                   labels: list[tuple[Node, str]]) -> Node:
    """The one label input whose ``ignore_index`` drops a sample: a vector (N,) on the
    samples' axis, read by no batch term (its typed node in ``varying``)."""
    names = list(dict.fromkeys(label.value for label, _ in labels if label.op == "input"))
    typed = {n.value: n for n in toposort([varying, scalar]) if n.op == "input"}
    per_sample = [name for name in names
                  if name in typed and typed[name].axes == (sample_axis,)]
    if not per_sample:
        found = (f" (labels read: {', '.join(repr(name) for name in names)}, none a vector "
                 "with one label per sample)") if names else ""
        raise LossShapeError("ignore_index needs a loss that reads integer labels, one per "
                             "sample, through pick, onehot or rowof" + found)
    if len(per_sample) > 1:
        raise LossShapeError(
            "ignore_index needs exactly one label input per sample; this loss reads labels "
            f"from {', '.join(repr(name) for name in per_sample)}: compile it without "
            "ignore_index and pass sample_weight=0 for the rows to drop")
    label = typed[per_sample[0]]
    if any(n is label for n in toposort([scalar])):
        raise LossShapeError(
            f"ignore_index: the labels '{label.value}' are also read by a batch term (a sum "
            "or mean over samples), which ignored samples would still enter; compile without "
            "ignore_index and pass sample_weight=0 for the rows to drop")
    return label


def _without_ignored(varying: Node, label: Node, ignore_index: float,
                     count: Node | None = None) -> tuple[Node, Node, Node | None]:
    """``(kept, varying', count')``: whether each sample is kept (its label is not
    ``ignore_index``), the per-sample loss 0 at ignored samples, and the samples' count of
    ``count_as`` (when given) reading the labels as safely. Every read of the label goes through
    ``where(label == ignore_index, 0, label)``, so that no kernel indexes a row or a table
    with the ignored value (the loss of class 0 computed there is then discarded by a
    ``where``, whose derivative is 0 in the branch not taken: values, gradients and Hessians
    of ignored samples are exactly 0, even where their scores are not finite)."""
    ignored = constant(float(ignore_index))
    kept = make("ne", (label, ignored))
    safe = make("where", (make("eq", (label, ignored)), constant(0.0), label))

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if old is label:
            return safe
        return make(old.op, args, old.value, old.axes) if args else old

    if count is None:
        (varying,) = rebuild([varying], rule)
    else:
        varying, count = rebuild([varying, count], rule)
    return kept, make("where", (kept, varying, constant(0.0))), count


_MEANS = ("mean", "weighted_mean", "sum_over_batch_size", "batchmean")


def _holds_count(x: Node) -> bool:
    """Whether ``x`` has a ``count_as`` anywhere."""
    return any(n.op == "count_as" for n in toposort([x]))


def _strip_counts(varying: Node, reduction: str) -> tuple[Node, Node | None]:
    """``(values, count)``: the per-sample loss without its ``count_as`` wrappers, and the
    one per-sample count they give (None when there is none).

    ``count_as(l, s)`` may be scaled by numbers, negated, and added to other terms; under a
    mean every per-sample term must be counted by the same ``s`` (the mean divides all of
    them by ``sum(s)``). Anywhere else (inside a function, a row reduction or a sum over
    samples) it would have no single meaning, and is an error.
    """
    holds: dict[int, bool] = {}
    for n in toposort([varying]):
        holds[id(n)] = n.op == "count_as" or any(holds[id(a)] for a in n.args)
    if not holds[id(varying)]:
        return varying, None
    counts: dict[int, Node] = {}
    uncounted = False
    done: dict[int, Node] = {}
    stack: list[tuple[Node, bool]] = [(varying, False)]
    while stack:  # an explicit stack: a loss may add thousands of terms
        x, expanded = stack.pop()
        if id(x) in done:
            continue
        spine = [a for a in x.args if holds[id(a)]]
        if x.op == "count_as":
            value, count = x.args
            if spine:
                raise LossShapeError("count_as cannot be nested in another count_as")
            if len(count.axes) > 1 and not Axis(count.axes[1]).is_ragged:
                raise LossShapeError("count_as(l, s): s counts each sample, so it must be one "
                                     "number per sample (N,) or a number, not a matrix")
            counts[id(count)] = count
            done[id(x)] = value
        elif not holds[id(x)]:
            uncounted = True
            done[id(x)] = x
        elif x.op in ("add", "sub", "neg"):
            if expanded:
                done[id(x)] = make(x.op, tuple(done[id(a)] for a in x.args))
            else:
                stack.append((x, True))
                stack.extend((a, False) for a in x.args)
        elif ((x.op == "mul" and len(spine) == 1 and all(a.axes == () for a in x.args
                                                          if a is not spine[0]))
              or (x.op == "div" and spine == [x.args[0]] and x.args[1].axes == ())):
            if expanded:  # scaled by a number
                done[id(x)] = make(x.op, tuple(done.get(id(a), a) for a in x.args))
            else:
                stack.append((x, True))
                stack.append((spine[0], False))
        else:
            raise LossShapeError(
                "count_as(l, s) must be applied to the whole per-sample loss (it may then be "
                f"scaled by numbers or added to other terms), not inside {x.op}(...)")
    if len(counts) > 1 and reduction in _MEANS:
        raise LossShapeError(
            "this loss counts its samples in two ways (two count_as with different counts, "
            "such as two class-weighted losses with different weights), so its mean has no "
            "single denominator; use reduction='sum' or 'none' and divide yourself")
    if uncounted and reduction in _MEANS:
        raise LossShapeError(
            "a term of this loss is not inside its count_as (class weights): the weighted mean "
            "divides the whole loss by the sum of the counts, which would also divide that "
            "term; put it inside count_as, or use reduction='sum' or 'none'")
    return done[id(varying)], next(iter(counts.values()))


def objective(expression: Node, reduction: str, weighted: bool,
              ignore_index: float | None = None,
              labels: list[tuple[Node, str]] | None = None,
              group_ids: Mapping[str, Node] | None = None) -> Objective:
    """Apply ``reduction`` (one of :data:`REDUCTIONS`) and optional sample weights.

    ``group_ids``: the typed group ids of grouped sample axes (:func:`group_id_nodes`): a
    loss with one value per group is given to each sample of the group.

    With ``ignore_index`` (an integer), samples whose label (the one per-sample label input
    among ``labels``, the specialisation's label reads) equals it count for nothing: their
    value, gradient and Hessian are 0 and they leave every denominator (the count of
    "mean" and "batchmean", the weights' total of "weighted_mean").
    """
    varying, scalar = split_additive(expression)
    varying = on_every_sample(varying, group_ids or {})
    if _holds_count(scalar) or (varying.axes == () and _holds_count(varying)):
        raise LossShapeError(
            "count_as(l, s) counts the samples of a per-sample loss; inside a sum or mean over "
            "samples write sum(l)/sum(s) instead")
    if varying.axes == () or expression.axes == ():
        reduces = any(n.op in ("sum", "mean") for n in toposort([expression]))
        why = ("it reduces over samples itself" if reduces else
               "every input given is a single number: pass arrays with one value per sample")
        if weighted:
            raise LossShapeError("sample_weight needs a loss with one value per sample; this "
                                 f"loss is a single number ({why})")
        if ignore_index is not None:
            raise LossShapeError("ignore_index needs a loss with one value per sample; this "
                                 f"loss is a single number ({why})")
        return Objective(expression, expression, None, None)
    sample_axis = varying.axes[0]
    # the axes one sample spans: grouped samples are the items of their groups' rows
    grouped = len(varying.axes) == 2 and Axis(varying.axes[1]).is_ragged
    sample_axes = varying.axes if grouped else varying.axes[:1]
    varying, count = _strip_counts(varying, reduction)
    kept = label = None
    if ignore_index is not None:
        # an ignored sample would still enter its group's totals (sum_group) of the others
        if grouped or any(n.op in GROUP_SCANS for n in toposort([varying, scalar])):
            raise LossShapeError("ignore_index is not supported for grouped samples "
                                 "(groupsum and its kin) or totals over the samples (colsum): "
                                 "an ignored sample would still enter them; pass "
                                 "sample_weight=0 for the samples to drop")
        label = _ignored_label(varying, scalar, sample_axis, labels or [])
        kept, varying, count = _without_ignored(varying, label, ignore_index, count)
    weight = node("input", (), WEIGHT, sample_axes) if weighted else None
    weighted_terms = make("mul", (weight, varying)) if weighted else varying
    terms = sum_all(weighted_terms)
    # the number of samples, or of samples kept
    samples = (node("count", (), kept_count_name(sample_axis), ()) if kept is not None
               else element_count(sample_axes))
    if count is not None:
        # count_as(l, s): sample i counts s_i times (PyTorch's class weights: the mean
        # divides by sum(weight[y]) over the samples kept); symbolic, so exact in derivatives
        if kept is not None:
            samples = sum_all(make("where", (kept, count, constant(0.0))))
        elif count.axes == ():
            samples = make("mul", (count, samples))
        else:
            samples = sum_all(count)
    denominator = None
    if reduction in ("mean", "weighted_mean", "sum_over_batch_size"):
        # "mean" divides by the count, weighted or not: sum(w*l)/N, as PyTorch's weight= and
        # Keras' default sum_over_batch_size; "weighted_mean" by the weights' total,
        # sum(w*l)/sum(w), as scikit-learn. Over classes each sample counts K times (Keras).
        if weighted and reduction == "weighted_mean":
            counted = weight if count is None else make("mul", (weight, count))
            weights = sum_all(counted if kept is None
                              else make("where", (kept, counted, constant(0.0))))
        else:
            weights = samples
        per_sample = element_count(varying.axes[len(sample_axes):])
        denominator = make("mul", (weights, per_sample))
        terms = make("div", (terms, denominator))
    elif reduction == "batchmean":
        # PyTorch's KLDivLoss(reduction="batchmean"): every element summed, divided by the
        # number of samples (not by samples times classes), weighted or not
        denominator = samples
        terms = make("div", (terms, samples))
    total = make("add", (terms, scalar))
    weight_axes = weight.axes if weight else None
    ignored = label.value if label is not None else None
    counted = kept_count_name(sample_axis) if kept is not None else None
    count_total = denominator if count is not None else None
    weight_total = (denominator if count is None and weighted and reduction == "weighted_mean"
                    else None)
    if reduction == "none":
        value = make("add", (weighted_terms, scalar))
        return Objective(value, total, weight_axes, sample_axis, ignored, counted)
    return Objective(total, total, weight_axes, sample_axis, ignored, counted, count_total,
                     weight_total)
