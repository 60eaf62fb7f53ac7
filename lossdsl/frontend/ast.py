"""The surface syntax tree of the loss language: small frozen dataclasses with source spans.

The parser (``parse.py``) produces these; ``resolve.py`` turns them into the expression graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Span


@dataclass(frozen=True)
class Expression:
    """Base class of expression nodes."""

    span: Span


@dataclass(frozen=True)
class Number(Expression):
    value: float


@dataclass(frozen=True)
class Name(Expression):
    id: str


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expression
    span: Span


@dataclass(frozen=True)
class Call(Expression):
    function: str
    args: tuple[Expression, ...]
    keywords: tuple[Keyword, ...]


@dataclass(frozen=True)
class UnaryOp(Expression):
    op: str  # "neg", "pos", "not"
    operand: Expression


@dataclass(frozen=True)
class BinOp(Expression):
    op: str  # "add", "sub", "mul", "div", "pow", "and", "or", "lt", "le", "gt", "ge", "eq", "ne"
    left: Expression
    right: Expression


@dataclass(frozen=True)
class IfElse(Expression):
    condition: Expression
    then: Expression
    otherwise: Expression


@dataclass(frozen=True)
class Statement:
    """Base class of statements; ``doc`` is the comment block written just above it."""

    span: Span
    doc: str


@dataclass(frozen=True)
class Param(Statement):
    name: str
    value: Expression
    name_span: Span | None = None


@dataclass(frozen=True)
class DomainSyntax:
    """``{a, b, ...}`` (``members``), or an interval from ``low`` to ``high``."""

    span: Span
    members: tuple[Expression, ...] = ()
    low: Expression | None = None
    high: Expression | None = None
    low_open: bool = False
    high_open: bool = False


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Expression | None
    span: Span
    domain: DomainSyntax | None = None  # ``name in {-1, 1}``: the values it may take
    rows: Span | None = None  # ``name[N, K]``: bound to one row per sample (where written)


@dataclass(frozen=True)
class Requirement:
    """``requires condition`` after a def's parameters; ``span`` covers the whole clause."""

    span: Span
    condition: Expression


@dataclass(frozen=True)
class Def(Statement):
    name: str
    parameters: tuple[Parameter, ...]
    body: Expression
    name_span: Span | None = None
    requirement: Requirement | None = None  # ``requires y_upper >= y``


@dataclass(frozen=True)
class Let(Statement):
    name: str
    value: Expression
    name_span: Span | None = None


@dataclass(frozen=True)
class LossDecl(Statement):
    name: str
    value: Expression
    name_span: Span | None = None


@dataclass(frozen=True)
class Import(Statement):
    path: str


@dataclass(frozen=True)
class ExpressionStatement(Statement):
    value: Expression


@dataclass(frozen=True)
class Module:
    """A parsed file or string: its statements in order.

    ``broken`` names what statements dropped for a syntax error tried to define (only when
    parsed with :func:`lossdsl.frontend.parse.parse_all`), so that their uses are not reported
    again;
    ``incomplete`` says an ``import`` was dropped, so any unknown name may have come from it.
    """

    statements: tuple[Statement, ...]
    file: str | None
    source: str
    broken: frozenset[str] = frozenset()
    incomplete: bool = False
