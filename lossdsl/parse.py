"""Parse loss text into the syntax tree (``ast.py``) with the Lark grammar ``lossdsl.lark``.

The grammar is LALR(1); newlines end statements except inside parentheses, which a small
post-lexer handles. Every failure becomes a :class:`LossSyntaxError` with a caret.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from . import ast
from .cachedir import cache_dir
from .errors import LossSyntaxError, Span

_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed wheels carry the grammar inside the package; a source checkout has it at the top.
_GRAMMAR_CANDIDATES = (
    _PACKAGE_DIR / "grammar" / "lossdsl.lark",
    _PACKAGE_DIR.parent / "grammar" / "lossdsl.lark",
)

_READABLE_TERMINALS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "quoted path"',
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "EQUAL": "'='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "POWER": "'^'",
    "COMPARE": "a comparison",
    "SEMICOLON": "';'",
    "_NL": "end of line",
    "$END": "end of input",
}


def grammar_path() -> Path:
    """The grammar file, found inside an installed package or in a source checkout."""
    for candidate in _GRAMMAR_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("lossdsl.lark not found next to the package")  # broken install


# Tokens after which a statement cannot end, so a newline there continues the line.
_CONTINUES = {
    "EQUAL",
    "PLUS",
    "MINUS",
    "STAR",
    "SLASH",
    "POWER",
    "COMPARE",
    "COMMA",
    "LPAR",
    "AND",
    "OR",
    "NOT",
    "IF",
    "THEN",
    "ELSE",
}


class _ContinuationNewlines:
    """Post-lexer: drop newlines inside parentheses and after an operator, ``=`` or ``,``,
    so long expressions may span lines without a backslash."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        previous = None
        for token in stream:
            if token.type == "LPAR":
                depth += 1
            elif token.type == "RPAR":
                depth = max(0, depth - 1)
            elif token.type == "_NL" and (depth > 0 or previous in _CONTINUES):
                continue
            previous = token.type
            yield token


@functools.cache
def parser(strict: bool = False) -> Lark:
    """The LALR parser (built once per process). ``strict=True`` turns conflicts into errors.

    The grammar analysis is cached on disk (Lark's ``cache``): building it costs ~0.1 s, a
    large part of a new process's start-up; Lark keys the file by the grammar and options.
    """
    options = dict(parser="lalr", propagate_positions=True, postlex=_ContinuationNewlines(),
                   maybe_placeholders=True, strict=strict)
    text = grammar_path().read_text()
    if strict:
        return Lark(text, **options)
    try:
        return Lark(text, cache=str(cache_dir() / "grammar.lark-cache"), **options)
    except Exception:  # an unreadable or stale cache file: build from the grammar
        return Lark(text, **options)


def _span(item, file: str | None, source: str) -> Span:
    return Span(
        file,
        item.line,
        item.column,
        getattr(item, "end_line", None),
        getattr(item, "end_column", None),
        source,
    )


class _ToAst:
    """Lark tree → ``ast`` dataclasses; one method per grammar rule, called with the rule's
    meta and its children already converted (see :func:`_transform`)."""

    def __init__(self, file: str | None, source: str):
        self.file = file
        self.source = source

    def _s(self, item) -> Span:
        return _span(item, self.file, self.source)

    # expressions
    def number(self, meta, token):
        return ast.Number(self._s(token), float(token))

    def name(self, meta, token):
        return ast.Name(self._s(token), str(token))

    def call(self, meta, function, arguments):
        args, keywords = [], []
        for argument in arguments or ():
            if isinstance(argument, ast.Keyword):
                keywords.append(argument)
            elif keywords:
                raise LossSyntaxError("positional argument after a keyword argument", argument.span)
            else:
                args.append(argument)
        start = self._s(function)  # from the name to the closing parenthesis
        span = Span(
            self.file, start.line, start.column, meta.end_line, meta.end_column, self.source
        )
        return ast.Call(span, str(function), tuple(args), tuple(keywords))

    def arguments(self, meta, *items):
        return list(items)

    def keyword(self, meta, name, value):
        return ast.Keyword(str(name), value, self._s(name))

    def if_expr(self, meta, condition, then, otherwise):
        return ast.IfElse(self._s(meta), condition, then, otherwise)

    def compare(self, meta, left, op, right):
        ops = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
        return ast.BinOp(self._s(meta), ops[str(op)], left, right)

    def pow(self, meta, left, op, right):
        return ast.BinOp(self._s(meta), "pow", left, right)

    def neg(self, meta, operand):
        return ast.UnaryOp(self._s(meta), "neg", operand)

    def pos(self, meta, operand):
        return operand

    def not_(self, meta, operand):
        return ast.UnaryOp(self._s(meta), "not", operand)

    def _binary(op):  # noqa: N805 - builds methods at class creation
        def method(self, meta, left, right):
            return ast.BinOp(self._s(meta), op, left, right)

        return method

    add, sub, mul, div = _binary("add"), _binary("sub"), _binary("mul"), _binary("div")
    and_, or_ = _binary("and"), _binary("or")

    # statements (doc comments are attached by ``parse`` afterwards)
    def param(self, meta, name, value):
        return ast.Param(self._s(meta), "", str(name), value)

    def parameter(self, meta, name, default):
        return ast.Parameter(str(name), default, self._s(name))

    def parameters(self, meta, *items):
        return tuple(items)

    def define(self, meta, name, parameters, body):
        return ast.Def(self._s(meta), "", str(name), parameters or (), body)

    def let(self, meta, name, value):
        return ast.Let(self._s(meta), "", str(name), value)

    def loss(self, meta, name, value):
        return ast.LossDecl(self._s(meta), "", str(name), value)

    def import_(self, meta, path):
        return ast.Import(self._s(meta), "", str(path)[1:-1])

    def expression_statement(self, meta, value):
        return ast.ExpressionStatement(value.span, "", value)

    def start(self, meta, *statements):
        return list(statements)


def _transform(tree: Tree, builder: _ToAst):
    """Convert a parse tree bottom-up without recursion: a sum of thousands of terms is a
    left-deep tree thousands of levels deep, deeper than Python's recursion limit."""
    results: list = []
    stack: list[tuple[object, bool]] = [(tree, False)]
    while stack:
        item, ready = stack.pop()
        if not isinstance(item, Tree):
            results.append(item)  # a token, or None for an absent optional part
        elif ready:
            count = len(item.children)
            children = results[len(results) - count:]
            del results[len(results) - count:]
            results.append(getattr(builder, str(item.data))(item.meta, *children))
        else:
            stack.append((item, True))
            stack.extend((child, False) for child in reversed(item.children))
    return results[0]


def _doc_above(lines: list[str], line: int) -> str:
    """The block of ``#`` comment lines directly above ``line`` (1-based), without the ``#``."""
    doc: list[str] = []
    index = line - 2
    while index >= 0 and lines[index].lstrip().startswith("#"):
        doc.append(lines[index].lstrip().lstrip("#").strip())
        index -= 1
    return "\n".join(reversed(doc))


def _describe_expected(expected) -> str:
    names = sorted({_READABLE_TERMINALS.get(name, repr(name.lower())) for name in expected})
    if not names:
        return ""
    if len(names) > 6:
        names = names[:6] + ["..."]
    return "expected " + ", ".join(names)


def _syntax_error(error: UnexpectedInput, file: str | None, source: str) -> LossSyntaxError:
    line = max(1, getattr(error, "line", 1) or 1)
    column = max(1, getattr(error, "column", 1) or 1)
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        lines = source.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        message = "unexpected end of input"
        expected = getattr(error, "expected", ())
    elif isinstance(error, UnexpectedToken):
        token = error.token
        shown = "end of line" if token.type == "_NL" else repr(str(token))
        message = f"unexpected {shown}"
        expected = error.expected
    elif isinstance(error, UnexpectedCharacters):
        message = f"unexpected character {source[error.pos_in_stream]!r}"
        expected = ()
    else:
        message, expected = "invalid syntax", ()
    hint = _describe_expected(expected) or None
    return LossSyntaxError(message, Span(file, line, column, source=source), hint)


def parse(source: str, file: str | None = None) -> ast.Module:
    """Parse loss text (a file's contents or an expression) into an :class:`ast.Module`."""
    if not isinstance(source, str):
        raise LossSyntaxError(f"loss text must be a string, not {type(source).__name__}")
    # A byte-order mark is how some editors start a UTF-8 file; it is not part of the text.
    source = source.removeprefix("\ufeff")
    try:
        tree = parser().parse(source)
    except UnexpectedInput as error:
        raise _syntax_error(error, file, source) from None
    except LarkError as error:  # any other parser failure is still a syntax error
        raise LossSyntaxError(
            f"invalid syntax ({error})", Span(file, 1, 1, source=source)
        ) from None
    except RecursionError:
        raise LossSyntaxError(
            "expression nested too deeply", Span(file, 1, 1, source=source)
        ) from None
    statements = _transform(tree, _ToAst(file, source))
    lines = source.splitlines()
    documented = []
    for statement in statements:
        doc = _doc_above(lines, statement.span.line)
        if doc:
            statement = type(statement)(**{**statement.__dict__, "doc": doc})
        documented.append(statement)
    return ast.Module(tuple(documented), file, source)
