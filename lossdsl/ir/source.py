"""Printing a graph as readable loss-language source: ``str(node)`` (what ``derivative()``
returns, what error messages quote)."""

from __future__ import annotations

import math

from ..ops.scans import is_column_total
from .axes import counted_axis, partner_of
from .node import Node
from .visit import ATOM, PrecedencePrinter

_INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("/", 2), "pow": ("^", 4)}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
# the names a loss text calls them by (classpairs(e), not in a row sum: partnersum(e))
_SPELLED = {"stop_gradient": "stop_gradient", "table_row": "rowof", "classpairs": "partnersum"}


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


class SourcePrinter(PrecedencePrinter):
    """Prints a graph as loss-language source; one method per kind of node, precedence 9 an
    atom (shared subexpressions in full, see :class:`~lossdsl.ir.visit.PrecedencePrinter`)."""

    def fallback(self, n: Node):
        return self.print_call(n)

    def _arg(self, n: Node, minimum: int, right: bool = False) -> str:
        text, precedence = self.visit(n)
        if precedence < minimum or (right and precedence == minimum):
            return f"({text})"
        return text

    def print_const(self, n: Node):
        text = _format_number(n.value)
        return (text, 3 if text.startswith("-") else ATOM)

    def print_input(self, n: Node):
        base = partner_of(str(n.value))
        if base is not None:  # x read at the partner of a pair sum
            return (f"partner({base})", ATOM)
        return (str(n.value), ATOM)

    def print_param(self, n: Node):
        return (str(n.value), ATOM)

    def print_count(self, n: Node):
        # n0 -> N (number of samples), n0k -> K (number of classes); other domains numbered;
        # n0#kept -> N_kept (the samples not dropped by ignore_index)
        axis, kept = counted_axis(n.value)
        number = "" if axis.domain == 0 else str(axis.domain)
        if kept:
            return (f"N{number}_kept", ATOM)
        return (f"{'K' if axis.is_classes else 'N'}{number}", ATOM)

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
                    return (f"onehot({self.visit(label)[0]})", ATOM)
        left = self._arg(n.args[0], 1.5)
        right = self._arg(n.args[1], 1.5, right=True)
        return (f"{left} {_COMPARE[n.op]} {right}", 0.9)

    print_lt = print_le = print_gt = print_ge = print_eq = print_ne = _compare

    def print_and(self, n):
        return (f"{self._arg(n.args[0], 0.7)} and {self._arg(n.args[1], 0.7, True)}", 0.7)

    def print_or(self, n):
        return (f"{self._arg(n.args[0], 0.6)} or {self._arg(n.args[1], 0.6, True)}", 0.6)

    def print_rowsum(self, n: Node):
        (x,) = n.args
        if x.op == "pairs":  # what pairsum(e, g) builds, before shapes are known
            return (f"pairsum({self.visit(x.args[0])[0]}, {self.visit(x.args[1])[0]})", ATOM)
        if x.op == "classpairs":  # what classpairsum(e) builds, before shapes are known
            return (f"classpairsum({self.visit(x.args[0])[0]})", ATOM)
        if _over_partner_classes(x):
            # after shapes: the row's sum of its classes' sums over their partner classes
            return (f"classpairsum({self.visit(x.args[0])[0]})", ATOM)
        if _over_partner_classes(n):  # after shapes: each class's sum over its partners
            return (f"partnersum({self.visit(x)[0]})", ATOM)
        return self.print_call(n)

    def print_pairdot(self, n: Node):
        # what rowsum(u * partner(v)) of matrix inputs within a pair sum becomes
        u, v = (self.visit(a)[0] for a in n.args)
        return (f"rowsum({u} * partner({v}))", ATOM)

    def print_class_index(self, n: Node):
        # standing alone (not onehot's comparison with its labels, print_eq), the class
        # index is the language's classnum(); typed on the class pair axes it is the
        # partner class's index
        if n.axes is not None and len(n.axes) == 3:
            return ("partner(classnum())", ATOM)
        return ("classnum()", ATOM)

    def print_at_partner(self, n: Node):
        # a value stored by one pass and read at the partners (of a pair sum or a class
        # pair sum) is what the language reads as partner(x)
        return (f"partner({self.visit(n.args[0])[0]})", ATOM)

    def print_sum_group(self, n: Node):
        # a group's total is how groupsum(e, g) sums samples with classes (shapes.py); with
        # a number for the group ids, every sample is in one group: colsum(e)
        values, ids, _ = (self.visit(a)[0] for a in n.args)
        if is_column_total(n):
            return (f"colsum({values})", ATOM)
        return (f"groupsum({values}, {ids})", ATOM)

    def print_table_row(self, n: Node):
        if n.value == "classvec":  # a per-class vector: a one-row table read at row 0
            text = f"classvec({self.visit(n.args[0])[0]})"
        else:
            text = self.print_call(n)[0]
        if n.axes is not None and len(n.axes) == 3:  # read at the partner class
            return (f"partner({text})", ATOM)
        return (text, ATOM)

    def print_call(self, n: Node):
        args = [self.visit(a)[0] for a in n.args]
        if n.op in ("onehot",) and n.value is not None:
            args.append(_format_number(n.value))
        return (f"{_SPELLED.get(n.op, n.op)}({', '.join(args)})", ATOM)


def _over_partner_classes(n: Node) -> bool:
    """Whether row reduction ``n`` sums over the partner classes of a class pair sum (its
    argument typed on the axes (n<d>, n<d>k, n<d>c)): a ``partnersum``."""
    return (n.op == "rowsum" and n.args[0].axes is not None
            and len(n.args[0].axes) == 3)


def to_source(n: Node) -> str:
    """Readable loss-language source for a graph."""
    return SourcePrinter().print(n)
