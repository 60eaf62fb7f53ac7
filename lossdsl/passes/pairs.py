"""Derivatives through pair sums (``pairsum(e, g)``: each sample ``i`` sums ``e(i, j)`` over
the other samples ``j`` of its group, ``partner(x)`` reading ``x_j``).

``shapes.py`` gives each sample a ragged row of its partners. ``partner(x)`` of an input
becomes a leaf of its own, ``x'``: one value per pair ``(i, j)``, ``x_j``; of a computed value
(a pair sum), ``at_partner(v)``, which a pass stores for a later one to read at the partners.
Either way, what sample ``k`` receives as the partner of its pairs is the adjoint ``A`` of the
partner read summed over the pairs ``(j, k)``, the transposes of row ``k``'s pairs ``(k, j)``.
``A`` is computed pair by pair from per-sample values at ``i`` and at ``j``, so its value at
``(j, k)`` is ``A`` with the two roles swapped (:func:`swap_partners`) evaluated at ``(k,
j)``: the transposed sum is ``rowsum(swap(A))``, a pair sum again (:func:`transposed`).
``diff.grad`` applies it to the adjoint of every partner read.
"""

from __future__ import annotations

from ..errors import LossError
from ..ir.axes import Axis, partner_name, partner_of
from ..ir.build import make
from ..ir.node import Node, axis_length, constant, node, rebuild, toposort
from ..ops import find, kernel_math_calls


def of_inputs(x: Node) -> dict[int, bool]:
    """For every node under ``x``: whether it is computed from the inputs sample by sample
    with arithmetic alone (of inputs, numbers and values the same for every sample), so
    that its value at the partners is computed there from the inputs' (read through the
    partners' index) rather than stored by a pass (a power, exp or log is computed once per
    sample and stored)."""
    found: dict[int, bool] = {}
    for n in toposort([x]):
        op = find(n.op)
        found[id(n)] = not n.axes or n.op == "input" or (
            op is not None and op.kind == "elementwise" and all(found[id(a)] for a in n.args)
            and n.op != "pow" and not kernel_math_calls(op))  # else cheaper stored once
    return found


def group_uniform(x: Node) -> dict[int, bool]:
    """For every node under ``x``: whether it has one value for all the samples of a group,
    so that read at a partner it is its own value: numbers, a group's total ``v +
    pairsum(partner(v), g)`` (a query's ideal DCG), and arithmetic of those."""
    found: dict[int, bool] = {}
    for n in toposort([x]):
        op = find(n.op)
        if not n.axes:
            found[id(n)] = True
        elif len(n.axes) != 1 or op is None or op.kind != "elementwise":
            found[id(n)] = False
        elif n.op == "add" and _group_total(*n.args):
            found[id(n)] = True
        else:
            found[id(n)] = all(found[id(a)] for a in n.args)
    return found


def _group_total(a: Node, b: Node) -> bool:
    """Whether ``a + b`` is ``v + pairsum(partner(v), g)``: the sum of v over v's group."""
    for own, others in ((a, b), (b, a)):
        if (others.op == "rowsum" and own.axes and len(others.args[0].axes or ()) == 2
                and Axis(others.args[0].axes[1]).is_ragged
                and others.args[0] is at_partners(own, others.args[0].axes)):
            return True
    return False


def at_partners(x: Node, axes: tuple[str, ...]) -> Node:
    """``x`` (typed, one value per sample) at the partners of a pair sum, on ``axes`` (the
    samples and their partners): computed there from the inputs (each input replaced by its
    partner leaf) where it is computed from the inputs sample by sample, else stored by a pass
    and read at the partners (``at_partner``); the same for every sample, kept."""
    return _at_partners(x, of_inputs(x), axes)


def _at_partners(x: Node, pure: dict[int, bool], axes: tuple[str, ...],
                 uniform: dict[int, bool] | None = None) -> Node:
    """:func:`at_partners`, given :func:`of_inputs` (and :func:`group_uniform`, which keeps
    a group's value as it is) of a graph that holds ``x``."""
    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if not old.axes or len(old.axes) != 1 or (uniform and uniform[id(old)]):
            return old
        if not pure[id(old)]:  # the whole value stored, read once per pair
            return make("at_partner", (old,))
        if old.op == "input":
            return node("input", (), partner_name(old.value), axes)
        return make(old.op, args, old.value)

    (found,) = rebuild([x], rule)
    return found


def reads_partners(e: Node) -> bool:
    """Whether ``e`` (a value per pair of samples) reads values at the partners: an input's
    partner leaf or a value stored and read there (``at_partner``)."""
    return any(n.op in ("at_partner", "pairdot")
               or (n.op == "input" and partner_of(n.value) is not None)
               for n in toposort([e]))


def swap_partners(e: Node) -> Node:
    """``e`` (a value per pair of samples) with each sample's own values and its partner's
    swapped: ``x`` <-> ``partner(x)`` for inputs, ``v`` <-> ``at_partner(v)`` for computed
    per-sample values; values the same for every pair are kept."""
    pure, uniform = of_inputs(e), group_uniform(e)

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if not old.axes or old.op in ("const", "count") or is_rows(old):
            # the same for every pair: numbers, sums over the samples; a row's number of
            # partners is its partners' too (a pair's two samples share a group); the rows
            # of a matrix a pair's dot product reads (pairdot swaps them itself)
            return old
        if old.op == "pairdot":  # u_i . v_j at (j, i) is v_i . u_j
            return make("pairdot", args[::-1])
        if len(old.axes) == 1:  # the sample's own value, read at the partner instead
            sample = Axis(old.axes[0])
            return _at_partners(old, pure, (sample, sample.items()), uniform)
        if old.op == "input":  # a partner leaf: the sample's own input
            return node("input", (), partner_of(old.value), old.axes[:1])
        if old.op == "at_partner":
            return old.args[0]
        if old.op == "partner_first":  # j before i is i after j (a pair's two are distinct)
            return make("sub", (constant(1.0), old))
        op = find(old.op)
        if op is not None and op.kind == "elementwise":
            return make(old.op, args, old.value)
        raise LossError(f"the derivative of this pair sum reads a {old.op} at the partner of "
                        "each pair, which lossdsl cannot transpose")

    (swapped,) = rebuild([e], rule)
    return swapped


def transposed(adjoint: Node, items: str) -> Node:
    """What each sample receives as the partner of its pairs, given the ``adjoint`` of a
    value read at the partners (one per pair, on the partners' axis ``items``): the sum over
    the pairs whose partner it is."""
    swapped = swap_partners(adjoint)
    if swapped.axes and items in swapped.axes:
        return make("rowsum", (swapped,))
    return make("mul", (swapped, axis_length(items)))  # the same for every pair of the row


# ------------------------------------------------------------------ rows within pairs
#
# pairdot(u, v) (rowsum(u * partner(v)) of matrix inputs (N, D) within a pair sum) is one
# value per pair (i, j), sum_d u_id v_jd. Its adjoint a (per pair) reaches u as
# pairmatvec(a, v'): row i of u receives sum_j a_ij v_jd, v' being v read at the partner's
# row (v's partner leaf on the axes (n<d>, n<d>k)); v receives, as the partner of the pairs
# (j, i), the transposed adjoint: pairmatvec(swap(a), u'). The kernels compute a pairmatvec
# in the loop over row i's columns d, each partner's weight recomputed there: no value per
# pair and column is stored.


def is_rows(x: Node) -> bool:
    """Whether ``x`` is typed on a sample axis and its columns (n<d>, n<d>k)."""
    return len(x.axes or ()) == 2 and not Axis(x.axes[1]).is_ragged


def row_at_partners(x: Node) -> Node:
    """``x`` (the rows (n<d>, n<d>k) of matrix inputs, elementwise) with every input read
    at the partner's row instead: its partner leaf on the same axes."""
    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if old.op == "input" and old.axes:
            if partner_of(old.value) is not None or len(old.axes) != 2:
                raise LossError("a pair's rows are read at the partner from matrix inputs "
                                "alone")
            return node("input", (), partner_name(old.value), old.axes)
        if old.axes and find(old.op) is not None and find(old.op).kind != "elementwise":
            raise LossError(f"a pair's rows cannot read a {old.op} at the partner")
        return make(old.op, args, old.value)

    (found,) = rebuild([x], rule)
    return found


def row_at_own(x: Node) -> Node:
    """A row read at the partner (:func:`row_at_partners`) read at the pair's own sample
    instead: each partner leaf its input."""
    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if row_partner_leaf(old):
            return node("input", (), partner_of(old.value), old.axes)
        return make(old.op, args, old.value)

    (found,) = rebuild([x], rule)
    return found


def row_partner_leaf(x: Node) -> bool:
    """Whether ``x`` is a matrix input read at the partner's row (see
    :func:`row_at_partners`)."""
    return x.op == "input" and partner_of(x.value) is not None and is_rows(x)


def dot_adjoints(dot: Node, adjoint: Node) -> tuple[Node, Node]:
    """What ``pairdot(u, v)`` passes on to ``u`` and to ``v``, given its ``adjoint`` (one
    value per pair, or a value the same along the pairs)."""
    u, v = dot.args
    return (make("pairmatvec", (adjoint, row_at_partners(v))),
            make("pairmatvec", (swap_partners(adjoint) if adjoint.axes else adjoint,
                                row_at_partners(u))))


# ------------------------------------------------------------------------- class pairs
#
# classpairsum(e) sums e over the ordered pairs (k, c) of distinct classes of each row, and
# partnersum(e) gives each class k its own sum over c: shapes.py types e on the axes
# (n<d>, n<d>k, n<d>c), a row's own values (n<d>, n<d>k) read at k broadcast along the
# partner classes c, and expands the sum into rowsum(e) over c (then over k).
# partner(x) is x computed again at c (at_partner_classes): the row's values (n<d>,) are the
# same at every class, and what the kernels compute class by class (inputs, class indices,
# per-class vectors and table rows read at column c, and their elementwise arithmetic) they
# compute at c as well. A value that is not computed so (a partner sum of its own) is stored
# by a pass and read back at c
# (at_partner on the class pair axes): the derivatives of a function of partnersum(e) read
# it there. What class k receives as the partner of its pairs (c, k) is the adjoint of the
# partner reads with the pair's two roles swapped (swap_partner_classes), summed over c: the
# transposed read again.


def _rebuild_classes(root: Node, rule, whole) -> Node:
    """``rebuild([root], rule)`` of the values with classes under ``root``: a row's values
    and numbers are kept as they are, without visiting what they are computed from (a row
    reduction's summand, which the rules could not read at another class); so is a value
    for which ``whole(value)`` holds, which the rule then takes as a whole (its arguments as
    given)."""
    done: dict[int, Node] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        current, expanded = stack.pop()
        if id(current) in done:
            continue
        if not current.axes or len(current.axes) == 1 or current.op in ("const", "count"):
            done[id(current)] = current
        elif expanded or whole(current):
            done[id(current)] = rule(current, tuple(done.get(id(a), a) for a in current.args))
        else:
            stack.append((current, True))
            stack.extend((a, False) for a in reversed(current.args) if id(a) not in done)
    return done[id(root)]


def class_pair_axes(axes: tuple[str, ...]) -> tuple[Axis, Axis, Axis]:
    """The axes of a value per class pair of the rows of a class matrix ``axes``."""
    sample, classes = Axis(axes[0]), Axis(axes[1])
    return sample, classes, classes.partner_classes()


# the class matrices the kernels read at any class of a row, given the class: an input's
# column, the class index itself, a table's column at the row's label (its label is a row's
# value or a number, the same at every class)
_READ_AT_ANY_CLASS = ("input", "class_index", "table_row")


def computed_at_classes(x: Node) -> dict[int, bool]:
    """For every node under ``x``: whether the kernels can compute it at any class of its
    row from the inputs there (inputs, class indices, a table's row at a row's label
    (``classvec``, ``rowof``): column c of it, a row's values, numbers and the elementwise
    arithmetic of those), rather than read it from a value stored per class."""
    found: dict[int, bool] = {}
    for n in toposort([x]):
        op = find(n.op)
        found[id(n)] = (not n.axes or len(n.axes) == 1 or n.op in _READ_AT_ANY_CLASS
                        or (op is not None and op.kind == "elementwise"
                            and all(found[id(a)] for a in n.args)))
    return found


def at_partner_classes(x: Node) -> Node:
    """``x`` (typed: a class matrix, a row's values or a number) at the partner class c of
    each class pair (k, c) of its rows: inputs read at c (their partner leaves), the class
    index of c, a table's row (``classvec``, ``rowof``) read at column c, the elementwise
    arithmetic of those; a row's own values and numbers kept. A class matrix computed
    otherwise (a partner sum) is stored whole by a pass and read at c (``at_partner``)."""
    computed = computed_at_classes(x)

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        axes = class_pair_axes(old.axes)
        if not computed[id(old)]:  # the whole value stored, read once per pair
            return make("at_partner", (old,), None, axes)
        if old.op == "input":
            return node("input", (), partner_name(old.value), axes)
        if old.op in ("class_index", "table_row"):
            return make(old.op, old.args, old.value, axes)
        return make(old.op, args, old.value)

    return _rebuild_classes(x, rule, lambda n: not computed[id(n)])


def swap_partner_classes(e: Node) -> Node:
    """``e`` (a value per class pair (k, c) of a row) with the pair's two roles swapped: the
    value at (c, k). Values at the class k become values at the partner class and the other
    way round; a row's values and numbers are kept."""
    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if len(old.axes) == 2:  # the class's own value, read at the partner instead
            return at_partner_classes(old)
        if old.op == "input":  # a partner leaf: the class's own input
            return node("input", (), partner_of(old.value), old.axes[:2])
        if old.op in ("class_index", "table_row"):  # at the class's own column again
            return make(old.op, old.args, old.value, old.axes[:2])
        if old.op == "at_partner":  # a stored value read at the partner: its own
            return old.args[0]
        op = find(old.op)
        if op is not None and op.kind == "elementwise":
            return make(old.op, args, old.value)
        raise LossError(f"the derivative of this class pair sum reads a {old.op} at the "
                        "partner class, which lossdsl cannot transpose")

    return _rebuild_classes(e, rule, lambda n: len(n.axes) == 2)


def class_transposed(adjoint: Node, classes: str) -> Node:
    """What each class of a row receives as the partner class of its pairs, given the
    ``adjoint`` of a value read at the partner classes (on the class axis ``classes``): the
    sum over the pairs whose partner it is."""
    swapped = swap_partner_classes(adjoint)
    partners = Axis(classes).partner_classes()
    if swapped.axes and partners in swapped.axes:
        return make("rowsum", (swapped,))
    return make("mul", (swapped, axis_length(partners)))  # the same for every pair of a class
