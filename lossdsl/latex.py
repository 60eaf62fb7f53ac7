"""LaTeX for expression graphs: ``to_latex(node)`` for reports, ``lossdsl derive --latex``.

Like SymPy's printers, :class:`LatexPrinter` has a method per kind of node with notation of
its own (``print_<op>``: infix arithmetic, relations, cases, sums); each returns the LaTeX
text and its precedence, and parents add parentheses where the precedence of an argument is
lower than their own. Functions print as their registry record's ``latex`` form
(:mod:`lossdsl.ops`). Conventions:

* ``count(n0)`` (the number of samples) prints as ``N``, a class axis' width as ``K``;
  ``class_index()`` is the class ``k`` of a per-class matrix,
* ``sum`` is :math:`\\sum_i` over samples, ``rowsum``/``rowmax`` are :math:`\\sum_k`/:math:`\\max_k`
  over the classes of a row,
* ``where(c, 1, 0)`` and comparisons used as numbers print as Iverson brackets ``[c]``,
* ``stop_gradient(x)`` prints as ``x``: it changes derivatives, not values,
* Greek parameter names (``alpha``, ``delta``, ...) print as Greek letters.
"""

from __future__ import annotations

import math
import re

from .ir.axes import Axis, counted_axis, partner_of
from .ir.node import Node
from .ir.visit import ATOM, PrecedencePrinter
from .ops import NOTATION, find
from .ops.compare import RELATION_SYMBOLS
from .ops.primitives import CLASS_VECTOR

# Precedence levels (higher binds tighter), shared by every printing method.
_LOGIC, _COMPARE, _SUM, _PRODUCT, _UNARY, _POWER, _ATOM = 1, 2, 3, 4, 5, 6, ATOM

_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi",
    "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Phi", "Psi", "Omega",
}
_ALIASES = {"eps": r"\epsilon", "lam": r"\lambda", "lambda_": r"\lambda"}


def _number(value: float) -> str:
    if math.isinf(value):
        return r"\infty" if value > 0 else r"-\infty"
    if math.isnan(value):
        return r"\mathrm{NaN}"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    if "e" in text:  # 1e-07 -> 1 \cdot 10^{-7}
        mantissa, exponent = text.split("e")
        return f"{mantissa} \\cdot 10^{{{int(exponent)}}}"
    return text


def latex_name(name: str) -> str:
    """A loss-language name as LaTeX: Greek letters, ``y1 -> y_{1}``, words upright."""
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _GREEK:
        return "\\" + name
    match = re.fullmatch(r"([A-Za-z])_?(\d+)", name)
    if match:
        return f"{match.group(1)}_{{{match.group(2)}}}"
    match = re.fullmatch(r"([A-Za-z]+)_([A-Za-z0-9]+)", name)
    if match and (match.group(1) in _GREEK or len(match.group(1)) == 1):
        return f"{latex_name(match.group(1))}_{{\\mathrm{{{match.group(2)}}}}}"
    if len(name) == 1:
        return name
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def _axis_symbol(axis: str) -> str:
    """``n0 -> N``, ``n1 -> N_{1}``, ``n0k -> K``: the length of an axis; ``n0#kept`` (the
    samples not dropped by ignore_index) is ``N_{\\text{kept}}``."""
    try:
        counted, kept = counted_axis(axis)
    except ValueError:
        return latex_name(axis)
    if counted.is_table_rows:
        return latex_name(axis)
    number = counted.domain
    if kept:
        return r"N_{\text{kept}}" if number == 0 else rf"N_{{{number},\text{{kept}}}}"
    letter = "K" if counted.is_classes else "N"
    return letter if number == 0 else f"{letter}_{{{number}}}"


def _sample_index(axis: str) -> str:
    parsed = Axis.parse(axis)
    number = parsed.domain if parsed is not None and parsed.is_samples else 0
    return "ijlmr"[number] if number < 5 else f"i_{{{number}}}"


class LatexPrinter(PrecedencePrinter):
    """Prints a graph as LaTeX math; one method per kind of node, functions from their
    registry records (shared subexpressions in full; over-long text elided as ``\\dots``,
    see :class:`~lossdsl.ir.visit.PrecedencePrinter`)."""

    elided = r"\dots"

    def fallback(self, n: Node):
        return self.print_function(n)

    def _arg(self, n: Node, minimum: int, strict: bool = False) -> str:
        """``n`` parenthesised when it binds looser than ``minimum`` (or equally, if strict)."""
        text, precedence = self.visit(n)
        if precedence <= _COMPARE and minimum > _COMPARE:
            return rf"\left[{text}\right]"  # a truth value used as a number: Iverson bracket
        if precedence < minimum or (strict and precedence == minimum):
            return rf"\left({text}\right)"
        return text

    def _group(self, n: Node) -> str:
        """``n`` as a function argument, in parentheses."""
        return rf"\left({self.visit(n)[0]}\right)"

    # leaves
    def print_const(self, n: Node):
        text = _number(n.value)
        return (text, _UNARY if text.startswith("-") else _ATOM)

    def print_input(self, n: Node):
        base = partner_of(str(n.value))
        if base is not None:  # x at the partner of a pair sum: x'
            return (latex_name(base) + "'", _ATOM)
        return (latex_name(str(n.value)), _ATOM)

    def print_param(self, n: Node):
        return (latex_name(str(n.value)), _ATOM)

    def print_partner(self, n: Node):  # partner(x): x at the other sample of the pair
        (x,) = n.args
        text, precedence = self.visit(x)
        return ((text if precedence >= _ATOM else rf"\left({text}\right)") + "'", _ATOM)

    def print_pairs(self, n: Node):  # the summand, over the partners of the sample's group
        return self.visit(n.args[0])

    print_at_partner = print_partner  # a computed value at the partner: v'

    def print_partner_first(self, n: Node):  # the partner j came before i: [j < i]
        return (r"\left[j < i\right]", _ATOM)

    def print_count(self, n: Node):
        return (_axis_symbol(str(n.value)), _ATOM)

    def print_class_index(self, n: Node):
        return ("k", _ATOM)

    def print_table_row(self, n: Node):  # rowof(C, y): the entry C[y_i, k]
        table, labels = (self.visit(a)[0] for a in n.args)
        if n.value == CLASS_VECTOR:  # classvec(w): the entry w_k
            return (f"{table}_{{k}}", _ATOM)
        return (f"{table}_{{{labels}, k}}", _ATOM)

    def print_count_as(self, n: Node):  # count_as(l, s): the value l
        return self.visit(n.args[0])

    # arithmetic
    def print_neg(self, n: Node):
        operand = self._arg(n.args[0], _PRODUCT)
        if operand.startswith("-"):
            operand = rf"\left({operand}\right)"
        return ("-" + operand, _UNARY)

    def _plus(self, left: str, right: Node) -> str:
        right_text, right_precedence = self.visit(right)
        if right_text.startswith("-") and right_precedence >= _PRODUCT:
            return f"{left} - {right_text[1:]}"  # x + -2y reads as x - 2y
        return f"{left} + {self._arg(right, _SUM)}"

    def print_add(self, n: Node):
        return (self._plus(self._arg(n.args[0], _SUM), n.args[1]), _SUM)

    def print_sub(self, n: Node):
        return (f"{self._arg(n.args[0], _SUM)} - {self._arg(n.args[1], _SUM, strict=True)}",
                _SUM)

    def print_mul(self, n: Node):
        left = self._arg(n.args[0], _PRODUCT)
        # a*(b*c) = a*b*c, and a reduction extends to the right: no parentheses needed
        right = self._arg(n.args[1], _PRODUCT)
        if right.startswith("-"):
            right = rf"\left({right}\right)"
        return (f"{left} \\cdot {right}", _PRODUCT)

    def print_pow(self, n: Node):
        base, exponent = n.args
        if exponent.op == "const" and exponent.value == 0.5:
            return (rf"\sqrt{{{self.visit(base)[0]}}}", _ATOM)
        return (f"{{{self._arg(base, _ATOM)}}}^{{{self.visit(exponent)[0]}}}", _POWER)

    # functions with a conventional notation
    def print_exp(self, n: Node):
        text, _ = self.visit(n.args[0])
        if len(text) <= 24:
            return (f"e^{{{text}}}", _POWER)
        return (rf"\exp{self._group(n.args[0])}", _ATOM)

    def print_log1p(self, n: Node):
        return (rf"\log\left({self._plus('1', n.args[0])}\right)", _ATOM)

    def print_expm1(self, n: Node):
        return (f"e^{{{self.visit(n.args[0])[0]}}} - 1", _SUM)

    def print_xlog1py(self, n: Node):  # 0 where x = 0, as x log y conventionally is
        log = rf"\log\left({self._plus('1', n.args[1])}\right)"
        return (f"{self._arg(n.args[0], _PRODUCT)} \\cdot {log}", _PRODUCT)

    def print_xlogy(self, n: Node):  # 0 where x = 0, as x log y conventionally is
        return (f"{self._arg(n.args[0], _PRODUCT)} \\cdot \\log{self._group(n.args[1])}",
                _PRODUCT)

    def print_stop_gradient(self, n: Node):
        return self.visit(n.args[0])

    def print_along(self, n: Node):  # a group's value, for each of its samples
        return self.visit(n.args[0])

    def print_function(self, n: Node):
        """An operation without notation of its own: its registry record's LaTeX, a
        template over the arguments' LaTeX or a function name applied to them
        (``\\operatorname{name}(args)`` where the record has none)."""
        op = find(n.op)
        form = op.latex if op is not None and op.latex != NOTATION else None
        args = [self.visit(a)[0] for a in n.args]
        if form is not None and "{0}" in form:
            return (form.format(*args), _ATOM)
        if form is None:
            form = r"\operatorname{" + n.op.replace("_", r"\_") + "}"
        return (rf"{form}\left({', '.join(args)}\right)", _ATOM)

    # reductions
    def print_sum(self, n: Node):
        (x,) = n.args
        index = _sample_index(x.axes[0]) if x.axes else "i"
        return (rf"\sum_{{{index}}} {self._arg(x, _PRODUCT)}", _PRODUCT)

    def print_rowsum(self, n: Node):
        (x,) = n.args
        if x.op == "classpairs":  # classpairsum(e), before shapes are known
            return (rf"\sum_{{k}} \sum_{{c \neq k}} {self._arg(x.args[0], _PRODUCT)}",
                    _PRODUCT)
        if x.axes is not None and len(x.axes) == 3:  # over the partner classes c of class k
            return (rf"\sum_{{c \neq k}} {self._arg(x, _PRODUCT)}", _PRODUCT)
        return (rf"\sum_{{k}} {self._arg(x, _PRODUCT)}", _PRODUCT)

    def print_rowmax(self, n: Node):
        return (rf"\max_{{k}} {self._arg(n.args[0], _PRODUCT)}", _PRODUCT)

    # logic
    def _relation(self, n: Node):
        left = self._arg(n.args[0], _SUM)
        right = self._arg(n.args[1], _SUM)
        return (f"{left} {RELATION_SYMBOLS[n.op]} {right}", _COMPARE)

    print_lt = print_le = print_gt = print_ge = print_eq = print_ne = _relation

    def print_and(self, n: Node):
        a, b = (self.visit(x)[0] for x in n.args)
        return (rf"{a} \land {b}", _LOGIC)

    def print_or(self, n: Node):
        a, b = (self.visit(x)[0] for x in n.args)
        return (rf"{a} \lor {b}", _LOGIC)

    def print_not(self, n: Node):
        return (rf"\lnot {self._arg(n.args[0], _COMPARE, strict=True)}", _COMPARE)

    def print_where(self, n: Node):
        condition, then, otherwise = n.args
        condition_text = self.visit(condition)[0]
        indicator = then.op == otherwise.op == "const" and (then.value, otherwise.value) == (1, 0)
        if indicator:
            return (rf"\left[{condition_text}\right]", _ATOM)  # an indicator
        return (r"\begin{cases} " + self.visit(then)[0] + r" & \text{if } " + condition_text
                + r" \\ " + self.visit(otherwise)[0] + r" & \text{otherwise} \end{cases}", _ATOM)


def to_latex(n: Node) -> str:
    """LaTeX math (without ``$`` delimiters) for a graph, e.g. a derivative from ``derive``."""
    return LatexPrinter().print(n)
