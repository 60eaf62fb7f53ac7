"""Declared domains: the values a def's parameter may take (``def hinge(y in {-1, 1}, z)``).

A :class:`Domain` is a finite set of numbers or an interval. Resolution turns each declaration
into an :class:`InputDomain` for the input or param the parameter is bound to (a number bound
to it is checked there and then). Every call is checked: kernels count the values of array
inputs outside their domains as they read them (``lossdsl.compiler.outside_count``), binding
checks params and numbers, and :func:`first_outside` finds the first value outside for the
error (and checks Dask chunks and concrete JAX arrays). A 0/1 label given to a loss written
for -1/+1 labels, or a negative count given to a Poisson loss, is a
:class:`~lossdsl.LossDomainError` naming the first value outside, never a silently wrong
number.

A parameter can also declare that it takes one row per sample (``def cce_logits(y[N, K],
z)``): :class:`DeclaredRows` records where a call binds it, and the shapes pass refuses a
vector or a number there (class indices given to a loss on one-hot rows would otherwise
scale each row by the index, a silently wrong number).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend.cpu.runtime import first_outside_interval, first_outside_set
from .errors import LossDomainError, LossShapeError, Span, at_index
from .ir.build import make
from .ir.node import Node, constant, toposort
from .ops import find
from .ops.primitives import ELEMENTWISE
from .reference import evaluate

__all__ = ["DeclaredRows", "Domain", "InputDomain", "Requirement", "declared_at",
           "first_outside", "first_unmet", "holds", "inside", "number_text",
           "unchecked_operation"]

#: What a requirement's condition may compute besides elementwise operations: the kernels
#: count it, and binding evaluates it, on the inputs as given, without the shapes pass. A
#: per-class vector or a table read through ``classvec(w)`` or ``rowof(C, y)``
#: (``table_row``) is checked whole before each call instead (``compiler.specialize``).
_CHECKABLE = frozenset({"input", "param", "const", "rowsum", "table_row"})


@dataclass(frozen=True)
class Domain:
    """A finite set of numbers (``members``), or the interval from ``low`` to ``high``
    (each end open or closed). NaN is in no domain."""

    members: tuple[float, ...] = ()
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __post_init__(self) -> None:
        # What the compiled searches read, made once rather than at every call: the interval
        # with closed ends (an open end moved to the next float64 inside), and ``search``,
        # the compiled search for the first value outside with its bounds: a set of up to
        # four members repeated to fill four (None: larger sets are searched by NumPy).
        low = math.nextafter(self.low, math.inf) if self.low_open else self.low
        high = math.nextafter(self.high, -math.inf) if self.high_open else self.high
        object.__setattr__(self, "closed", (low, high))
        members = self.members
        object.__setattr__(self, "search", (
            (first_outside_set, (*members, *members[-1:] * (4 - len(members))))
            if 0 < len(members) <= 4 else
            (first_outside_interval, (low, high)) if not members else None))

    def __reduce__(self):
        # the fields only: the search is made again where it is unpickled (Dask workers)
        return (Domain, (self.members, self.low, self.high, self.low_open, self.high_open))

    def __contains__(self, value: float) -> bool:
        if self.members:
            return value in self.members
        low, high = self.closed
        return bool(low <= value <= high)  # NaN: False

    def __str__(self) -> str:
        if self.members:
            return "{" + ", ".join(number_text(m) for m in self.members) + "}"
        return (("(" if self.low_open else "[") + f"{number_text(self.low)}, "
                f"{number_text(self.high)}" + (")" if self.high_open else "]"))

    def described(self) -> str:
        """In words: ``-1 or 1``, ``in [0, 1]``."""
        if self.members:
            shown = [number_text(m) for m in self.members]
            return " or ".join(shown) if len(shown) <= 2 else \
                ", ".join(shown[:-1]) + " or " + shown[-1]
        return f"in {self}"


def unchecked_operation(graph: Node) -> str | None:
    """The first operation of ``graph`` that a requirement cannot check (``pick``, a sum
    over samples), or None where every one is elementwise or a row sum."""
    return next((n.op for n in toposort([graph])
                 if n.op not in ELEMENTWISE and n.op not in _CHECKABLE), None)


#: Operations whose value at a sample depends on other samples: an argument computed with
#: one cannot be checked row by row as a declared domain's requirement.
_OVER_SAMPLES = frozenset({"sum", "mean", "group", "pairs", "count_as"})


def sample_operation(graph: Node) -> str | None:
    """The first operation of ``graph`` that reads other samples (a sum or mean over the
    samples, a group or pair sum, a cumulative sum), or None."""
    for n in toposort([graph]):
        op = find(n.op)
        if n.op in _OVER_SAMPLES or (op is not None and op.kind == "scan"):
            return n.op
    return None


def inside(x: Node, domain: Domain) -> Node:
    """The condition that ``x`` is in ``domain`` (false at NaN): ``x >= 0 and x <= 1``, or
    ``not (x != -1 and x != 1)`` for a set (whose negation is then the plain conjunction the
    kernels' counts read)."""
    if domain.members:
        outside = make("ne", (x, constant(domain.members[0])))
        for member in domain.members[1:]:
            outside = make("and", (outside, make("ne", (x, constant(member)))))
        return make("not", (outside,))
    # strict comparisons at open ends: the bound itself is exact in any dtype
    above = make("gt" if domain.low_open else "ge", (x, constant(domain.low)))
    below = make("lt" if domain.high_open else "le", (x, constant(domain.high)))
    return make("and", (above, below))


def number_text(value: float) -> str:
    """A number as the language writes it: ``1``, ``0.5``, ``-inf``, ``nan``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(int(value)) if value == int(value) else repr(value)


def declared_at(span: Span | None) -> str:
    """`` at file:line`` of a declaration, or "" where its file is not known."""
    return "" if span is None or span.file is None else f" at {span.file}:{span.line}"


@dataclass(frozen=True)
class InputDomain:
    """A declared domain as it applies to one input (or param) of a loss: ``name`` must be
    in ``domain`` because it is bound to parameter ``parameter`` of def ``function``,
    declared at ``declared``."""

    name: str
    domain: Domain
    function: str
    parameter: str
    declared: Span | None

    def error(self, kind: str, value: Any, index: int | None, span: Span | None
              ) -> LossDomainError:
        """The error for ``value`` (at ``index`` of the input, when an array) outside."""
        return LossDomainError(
            f"{kind} '{self.name}' must be {self.domain.described()}: it is {self.function}'s "
            f"'{self.parameter}', declared '{self.parameter} in {self.domain}'"
            f"{declared_at(self.declared)}; found {value!r}{at_index(index)}", span,
            _HINTS.get(self.domain), input=self.name if kind == "input" else None,
            index=index)


#: What to do about the commonest mistakes, by the domain they break.
_HINTS = {
    Domain((-1.0, 1.0)): "map 0/1 labels to -1/+1 with 2*y - 1",
}


@dataclass(frozen=True)
class DeclaredRows:
    """A def parameter declared ``y[N, K]`` as one call binds it: ``argument`` (the graph
    bound to it, written at ``called``) must hold one row (N, K) per sample, because it is
    ``function``'s ``parameter``, declared at ``declared``; ``hint`` says what to do with
    class indices instead."""

    argument: Node
    function: str
    parameter: str
    declared: Span | None
    called: Span | None
    hint: str

    def error(self, found: str) -> LossShapeError:
        """The error for an argument that is ``found`` (``the input 'y' is a vector (N,)``)
        instead of rows."""
        return LossShapeError(
            f"{self.function} takes rows (N, K) for '{self.parameter}', one row per sample "
            f"(declared '{self.parameter}[N, K]'{declared_at(self.declared)}); {found}",
            self.called, self.hint)


def first_outside(values: np.ndarray, domain: Domain) -> tuple[int, Any] | None:
    """``(flat index, value)`` of the first of ``values`` (host memory, any shape) outside
    ``domain``, or None."""
    flat = values.reshape(-1) if values.flags.c_contiguous else values.ravel()
    if flat.dtype.kind not in "iuf" or flat.dtype.kind == "f" and flat.dtype.itemsize < 4:
        flat = flat.astype(np.float64)  # booleans, float16: no compiled specialisation
    if domain.search is None:
        outside = ~np.isin(flat, domain.members)
        index = int(np.argmax(outside)) if outside.any() else -1
    else:
        first, bounds = domain.search
        index = first(flat, *bounds)
    return None if index < 0 else (index, flat[index].item())


@dataclass(frozen=True)
class Requirement:
    """A def's ``requires`` condition as one call applies it (``def aft(y, z, y_upper=y)
    requires y_upper >= y``): ``condition`` is its graph over that call's inputs, params and
    numbers; ``arguments`` the def parameters it names, each with the graph bound to it
    there; ``text`` the condition as written in ``function``, declared at ``declared``;
    ``called`` where the call is written.

    A condition of numbers alone is decided when the loss is compiled; one of params and
    scalar inputs is checked before every call, and one of array inputs is counted by the
    kernels as they read them, as declared domains are."""

    condition: Node
    function: str
    text: str
    declared: Span | None
    arguments: tuple[tuple[str, Node], ...]
    called: Span | None = None

    @functools.cached_property
    def reads(self) -> tuple[str, ...]:
        """The inputs and params the condition reads (kept: calls ask for it each time)."""
        return tuple(dict.fromkeys(n.value for n in toposort([self.condition])
                                   if n.op in ("input", "param")))

    def error(self, values: dict[str, Any], index: tuple[int, ...] | None,
              where: str | None = None) -> LossDomainError:
        """The error for a call where the condition is false (at ``index`` of the arrays it
        reads, None for params and numbers), ``values`` the parameters' values there;
        ``where``, when given, says the place instead of ``index`` (`` at index 1 of
        'a'``, an entry of a per-class vector rather than a sample)."""
        shown = []
        for parameter, bound in self.arguments:
            kind = {"input": "input", "param": "param"}.get(bound.op)
            origin = "" if kind is None or bound.value == parameter else \
                f" (the {kind} '{bound.value}')"
            value = values.get(parameter)
            if value is None:  # decided without it (``0 and ...``)
                continue
            text = (number_text(float(value)) if np.ndim(value) == 0 else
                    "[" + ", ".join(number_text(float(v)) for v in np.ravel(value)) + "]")
            shown.append(f"{parameter} = {text}{origin}")
        declared = declared_at(self.declared)
        return LossDomainError(
            f"{self.function} requires {self.text}{f' (declared{declared})' if declared else ''}"
            f", which is false{at_index(index) if where is None else where}: "
            f"{', '.join(shown)}", self.called, index=index)


def holds(condition: Node, inputs: dict[str, Any], params: dict[str, float]) -> np.ndarray:
    """Where ``condition`` is true (non-zero; a comparison with NaN is false), evaluated by
    NumPy on ``inputs`` (host arrays or numbers) and ``params``."""
    (met,) = evaluate([condition], inputs, params)
    return np.asarray(met) != 0


def first_unmet(requirement: Requirement, condition: Node, arguments: tuple[Node, ...],
                inputs: dict[str, Any], params: dict[str, float]
                ) -> tuple[tuple[int, ...] | None, dict[str, Any]] | None:
    """Where ``requirement`` is first false (a comparison with NaN is), evaluated by NumPy on
    ``inputs`` (host arrays or numbers) and ``params``: the index (None where it reads no
    array) and each of its parameters' values there; None where it holds everywhere.
    ``condition`` and ``arguments`` are the requirement's graphs typed for the inputs'
    ranks (or as they are, for numbers and params)."""
    results = evaluate([condition, *arguments], inputs, params)
    met = np.asarray(results[0]) != 0
    if met.all():
        return None
    shape = met.shape
    index = None
    if shape:
        flat = int(np.argmin(met.reshape(-1)))
        index = tuple(int(i) for i in np.unravel_index(flat, shape))
    values = {}
    for (parameter, _), result in zip(requirement.arguments, results[1:]):
        result = np.asarray(result, dtype=np.float64)
        if index is not None and result.ndim > len(shape):  # a row where a row sum is read
            result = result[index]
        elif index is not None and result.shape:  # a sample's value beside its row
            result = np.broadcast_to(result.reshape(result.shape + (1,) * (len(shape)
                                                    - result.ndim)), shape)[index]
        values[parameter] = result.item() if result.shape == () else result
    return index, values
