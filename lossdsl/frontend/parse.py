"""Parse loss text into the syntax tree (``ast.py``) with the Lark grammar ``lossdsl.lark``.

The grammar is LALR(1); newlines end statements except inside parentheses, which a small
post-lexer handles. Every failure becomes a :class:`LossSyntaxError` with a caret; a missing
')' is reported where it is missing, not at the next statement where the parser notices it.
:func:`parse` stops at the first error, :func:`parse_all` (for ``lossdsl check``) drops each
statement with an error and goes on, so that one run reports them all.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
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

from ..cachedir import cache_dir
from ..errors import LossSyntaxError, Span
from . import ast

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
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
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
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
    "LSQB",
    "LBRACE",
    "IN",
    "AND",
    "OR",
    "NOT",
    "IF",
    "THEN",
    "ELSE",
}


_OPENING = frozenset({"LPAR", "LSQB", "LBRACE"})
_CLOSING = frozenset({"RPAR", "RSQB", "RBRACE"})


class _ContinuationNewlines:
    """Post-lexer: drop newlines inside parentheses and after an operator, ``=`` or ``,``,
    so long expressions may span lines without a backslash."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        previous = None
        for token in stream:
            # a half-open interval such as [0, 1) closes with the other kind of bracket
            if token.type in _OPENING:
                depth += 1
            elif token.type in _CLOSING:
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
        value = float(token)
        if math.isinf(value):  # the grammar's numbers are finite decimals: it overflowed
            raise LossSyntaxError(f"the number {token} is beyond float64's range (about "
                                  "1.8e308): write inf for infinity", self._s(token))
        return ast.Number(self._s(token), value)

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
        return ast.Param(self._s(meta), "", str(name), value, self._s(name))

    def parameter(self, meta, name, rows, domain, default):
        return ast.Parameter(str(name), default, self._s(name), domain, rows)

    def rows(self, meta, samples, classes):
        # the one shape a parameter can declare: (N, K), as the documentation writes it
        if (str(samples), str(classes)) != ("N", "K"):
            raise LossSyntaxError("a parameter's declared shape is [N, K] (one row of K "
                                  "classes per sample), the only one there is",
                                  self._s(meta))
        return self._s(meta)

    def value_set(self, meta, *members):
        return ast.DomainSyntax(self._s(meta), members)

    def _interval(low_open: bool, high_open: bool):  # noqa: N805 - builds methods
        def method(self, meta, low, high):
            return ast.DomainSyntax(self._s(meta), (), low, high, low_open, high_open)

        return method

    closed_interval, open_interval = _interval(False, False), _interval(True, True)
    closed_open_interval, open_closed_interval = _interval(False, True), _interval(True, False)

    def parameters(self, meta, *items):
        return tuple(items)

    def define(self, meta, name, parameters, requirement, body):
        return ast.Def(self._s(meta), "", str(name), parameters or (), body, self._s(name),
                       requirement)

    def requirement(self, meta, condition):
        return ast.Requirement(self._s(meta), condition)

    def let(self, meta, name, value):
        return ast.Let(self._s(meta), "", str(name), value, self._s(name))

    def loss(self, meta, name, value):
        return ast.LossDecl(self._s(meta), "", str(name), value, self._s(name))

    def import_(self, meta, path):
        return ast.Import(self._s(meta), "", str(path)[1:-1])

    def expression_statement(self, meta, value):
        return ast.ExpressionStatement(value.span, "", value)

    def start(self, meta, *statements):
        for previous, statement in zip(statements, statements[1:]):
            self._check_not_a_continuation(previous, statement)
        return list(statements)

    def _check_not_a_continuation(self, previous, statement) -> None:
        """Refuse an expression statement that starts a line with ``+`` or ``-`` after
        another statement: a line break ends a statement, so ``loss a = x*2`` followed by
        ``  + y*3`` would silently define ``a = x*2`` and leave a stray ``+y*3``."""
        if not isinstance(statement, ast.ExpressionStatement):
            return
        if statement.span.line <= (previous.span.end_line or previous.span.line):
            return  # separated by ';' on the same line: no doubt about what was meant
        line = self.source.splitlines()[statement.span.line - 1]
        before, sign = line[:statement.span.column - 1], line[statement.span.column - 1:][:1]
        if sign not in ("+", "-") or before.strip():  # '(-y)' starts with '(': deliberate
            return
        raise LossSyntaxError(
            f"this line starts with '{sign}' after a complete statement, so it would be a new "
            "expression, not a continuation of the line above",
            statement.span,
            f"to continue the expression, end the line above with '{sign}' (a line ending in "
            "an operator continues on the next) or wrap the whole expression in parentheses; "
            f"to start a new expression, wrap it in parentheses: ({sign}...)")


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


# A tolerant scanner for what error reporting and recovery need to know about text that may
# not parse: parentheses, statement boundaries and where the last real token ended. It mirrors
# the grammar's terminals closely enough for that and never fails.
_SCAN = re.compile(
    r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\n]*"?)
  | (?P<continued>\\\r?\n)
  | (?P<newline>\r?\n)
  | (?P<space>[ \t\f\r]+)
  | (?P<semicolon>;)
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<number>(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?)
  | (?P<operator>\*\*|<=|>=|==|!=|[-+*/^<>=,])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_STATEMENT_KEYWORDS = frozenset({"param", "def", "let", "loss", "import"})
_CONTINUING_WORDS = frozenset({"and", "or", "not", "if", "then", "else", "in"})
_INSIGNIFICANT = frozenset({"comment", "continued", "newline", "space"})
_DECLARED = re.compile(r"\s*(param|def|let|loss)\s+([A-Za-z_][A-Za-z_0-9]*)")


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of every piece of ``text``."""
    for match in _SCAN.finditer(text):
        yield match.lastgroup, match.start(), match.end()


def _statement_starts(text: str) -> list[int]:
    """Offsets where statements begin, as the parser's newline rules see it; a statement
    keyword always begins one, so an unclosed parenthesis does not swallow the rest."""
    starts = [0]
    depth = 0
    continues = False
    for kind, start, end in _tokens(text):
        if kind == "word" and text[start:end] in _STATEMENT_KEYWORDS:
            if start != starts[-1]:
                starts.append(start)
            depth = 0
        elif kind == "open":
            depth += 1
        elif kind == "close":
            depth = max(0, depth - 1)
        elif kind == "semicolon" or (kind == "newline" and depth == 0 and not continues):
            starts.append(end)
            depth = 0
        if kind not in _INSIGNIFICANT:
            continues = kind in ("operator", "open") or (
                kind == "word" and text[start:end] in _CONTINUING_WORDS
            )
    return starts


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _offset(text: str, line: int, column: int) -> int:
    """The character offset of a 1-based (line, column)."""
    offset = 0
    for _ in range(line - 1):
        found = text.find("\n", offset)
        if found < 0:
            return len(text)
        offset = found + 1
    return min(len(text), offset + column - 1)


def _unclosed(text: str, offset: int) -> tuple[int | None, int]:
    """Before ``offset``: the innermost '(' left open (or None) and where the last token ended."""
    opened: list[int] = []
    last_end = 0
    for kind, start, end in _tokens(text[:offset]):
        if kind == "open":
            opened.append(start)
        elif kind == "close" and opened:
            opened.pop()
        elif kind == "word" and text[start:end] in _STATEMENT_KEYWORDS:
            opened.clear()
        if kind not in _INSIGNIFICANT:
            last_end = end
    return (opened[-1] if opened else None), last_end


def _closed_later(text: str, offset: int) -> bool:
    """Whether a ')' from ``offset`` on (before the next statement keyword) closes a '('
    opened before it."""
    depth = 0
    for kind, start, end in _tokens(text[offset:]):
        if kind == "open":
            depth += 1
        elif kind == "close":
            if depth == 0:
                return True
            depth -= 1
        elif kind == "word" and text[offset + start:offset + end] in _STATEMENT_KEYWORDS:
            return False
    return False


def _error_offset(error: UnexpectedInput, text: str) -> tuple[int, str | None]:
    """Where the parser stopped, and the type of the token it stopped at (None: a character
    no token starts with; "$END": the end of the input)."""
    if isinstance(error, UnexpectedEOF):
        return len(text), "$END"
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            return len(text), "$END"
        start = token.start_pos
        if start is None:
            start = _offset(text, token.line, token.column)
        return start, token.type
    position = getattr(error, "pos_in_stream", None)
    if position is None:
        position = _offset(text, max(1, error.line or 1), max(1, error.column or 1))
    return position, None


#: A comparison operator, in the text of the expression before an unexpected one.
_COMPARISON = re.compile(r"<=|>=|==|!=|<|>")


def _syntax_error(
    error: UnexpectedInput, file: str | None, source: str, text: str | None = None
) -> LossSyntaxError:
    """The error to report for a Lark parse failure. ``text`` is what was parsed (``source``
    with statements already reported blanked out); ``source`` is shown."""
    text = source if text is None else text
    offset, token_type = _error_offset(error, text)
    expected = getattr(error, "expected", None) or ()
    opened, last_end = _unclosed(text, offset)
    if opened is not None and (
        token_type in ("$END",) + tuple(k.upper() for k in _STATEMENT_KEYWORDS)
        or (
            token_type is not None
            and "RPAR" in expected
            and text.count("\n", last_end, offset) > 0
            and not _closed_later(text, offset)
        )
    ):
        # The parser only notices a missing ')' at the next statement (newlines inside
        # parentheses are ignored); point where it is missing: after the last token.
        line, column = _position(text, last_end)
        open_line, open_column = _position(text, opened)
        return LossSyntaxError(
            "missing ')'",
            Span(file, line, column, source=source),
            f"the '(' at line {open_line}, column {open_column} is not closed",
        )
    line, column = _position(text, offset)
    if token_type == "$END":
        lines = source.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        message = "unexpected end of input"
    elif (isinstance(error, UnexpectedToken) and error.token.type == "COMPARE"
          and "NAME" not in expected and "NUMBER" not in expected
          and _COMPARISON.search(re.split(r"[(,;\n\[{]", text[:offset])[-1])):
        # the grammar takes one comparison where a second follows: say so, not the tokens
        # that could have come instead
        return LossSyntaxError(
            f"comparisons do not chain: a second {str(error.token)!r} follows a comparison",
            Span(file, line, column, source=source),
            "write each comparison once and combine them: (a < b) and (b < c)")
    elif isinstance(error, UnexpectedToken):
        token = error.token
        shown = "end of line" if token.type == "_NL" else repr(str(token))
        message = f"unexpected {shown}"
    elif isinstance(error, UnexpectedCharacters):
        message = f"unexpected character {text[offset]!r}" if offset < len(text) else (
            "unexpected character")
        expected = ()
    else:
        message, expected = "invalid syntax", ()
    hint = _describe_expected(expected) or None
    return LossSyntaxError(message, Span(file, line, column, source=source), hint)


def _blank(text: str, start: int, end: int) -> str:
    """``text`` with ``[start, end)`` replaced by spaces, keeping line breaks (and so every
    later position)."""
    return text[:start] + re.sub(r"[^\r\n]", " ", text[start:end]) + text[end:]


def _drop_statement(text: str, offset: int, at_keyword: bool) -> tuple[int, int] | None:
    """The range of the statement to drop after an error at ``offset``: the statement the
    error is in, or the one before when the error is the keyword that starts the next one
    (that statement was left unfinished). None when nothing is left to drop."""
    starts = _statement_starts(text)
    index = bisect.bisect_right(starts, offset) - 1
    ends = starts[1:] + [len(text)]
    candidates = [(starts[index], ends[index])]
    if index > 0:
        previous = (starts[index - 1], starts[index])
        candidates.insert(0 if at_keyword and starts[index] == offset else 1, previous)
    for start, end in candidates:
        if text[start:end].strip():
            return start, end
    return None


_MAX_ERRORS = 100


def _parse(source: str, file: str | None, recover: bool):
    if not isinstance(source, str):
        raise LossSyntaxError(f"loss text must be a string, not {type(source).__name__}")
    # A byte-order mark is how some editors start a UTF-8 file; it is not part of the text.
    source = source.removeprefix("\ufeff")
    text = source
    errors: list[LossSyntaxError] = []
    broken: set[str] = set()
    incomplete = False
    statements: list = []
    while True:
        dropped = None
        try:
            tree = parser().parse(text)
            statements = _transform(tree, _ToAst(file, source))
            break
        except UnexpectedInput as error:
            failure = _syntax_error(error, file, source, text)
            offset, token_type = _error_offset(error, text)
            dropped = _drop_statement(
                text, offset, token_type in {k.upper() for k in _STATEMENT_KEYWORDS}
            )
        except LossSyntaxError as error:  # a check made while building the syntax tree
            failure = error
            offset = _offset(text, error.line or 1, error.column or 1)
            dropped = _drop_statement(text, offset, False)
        except LarkError as error:  # any other parser failure is still a syntax error
            failure = LossSyntaxError(f"invalid syntax ({error})", Span(file, 1, 1, source=source))
        except RecursionError:
            failure = LossSyntaxError(
                "expression nested too deeply", Span(file, 1, 1, source=source)
            )
        if not recover:
            raise failure from None
        errors.append(failure)
        if dropped is None or len(errors) >= _MAX_ERRORS:
            break
        start, end = dropped
        declared = _DECLARED.match(text, start)
        if declared and declared.start(1) < end:
            broken.add(declared.group(2))
        incomplete = incomplete or text[start:end].lstrip().startswith("import")
        text = _blank(text, start, end)
    errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    lines = source.splitlines()
    documented = []
    for statement in statements:
        doc = _doc_above(lines, statement.span.line)
        if doc:
            statement = type(statement)(**{**statement.__dict__, "doc": doc})
        documented.append(statement)
    module = ast.Module(tuple(documented), file, source, frozenset(broken), incomplete)
    return module, errors


def parse(source: str, file: str | None = None) -> ast.Module:
    """Parse loss text (a file's contents or an expression) into an :class:`ast.Module`.

    Raises the first :class:`LossSyntaxError`; :func:`parse_all` reports every one.
    """
    module, _ = _parse(source, file, recover=False)
    return module


def parse_all(source: str, file: str | None = None) -> tuple[ast.Module, list[LossSyntaxError]]:
    """Parse loss text, recovering from syntax errors: each statement with an error is
    reported and dropped, and parsing goes on with the next one (as a linter does).

    Returns the module of the statements that parsed and the errors, in the order found.
    """
    return _parse(source, file, recover=True)
