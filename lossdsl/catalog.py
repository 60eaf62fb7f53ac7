"""The catalog of built-in losses: what the prelude defines, for listings and documentation.

Read from the prelude's own source (each ``def`` with the comment written above it), so the
library's documentation cannot drift from its definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frontend.resolve import DefInfo, is_core_prelude, prelude


@dataclass(frozen=True)
class Entry:
    """One built-in definition: name, parameters (with defaults), description, formula."""

    name: str
    parameters: tuple[tuple[str, str | None], ...]  # (name, default source or None)
    doc: str
    formula: str
    file: str
    domains: tuple[tuple[str, str], ...] = ()  # (parameter, its declared domain) where given

    @property
    def summary(self) -> str:
        """The first sentence of the description."""
        first = self.doc.split("Ref:")[0].strip()
        return first.split(". ")[0].rstrip(".") + "." if first else ""

    @property
    def reference(self) -> str:
        """The reference named after ``Ref:`` in the description ("" when none)."""
        return self.doc.split("Ref:", 1)[1].strip() if "Ref:" in self.doc else ""

    @property
    def required(self) -> tuple[str, ...]:
        """Parameters without a default: the inputs of the loss."""
        return tuple(name for name, default in self.parameters if default is None)

    @property
    def signature(self) -> str:
        """``name(y, p, delta=1.0)``, with declared domains: ``hinge(y in {-1, 1}, z)``."""
        domains = dict(self.domains)
        parts = []
        for name, default in self.parameters:
            part = name if name not in domains else f"{name} in {domains[name]}"
            parts.append(part if default is None else
                         f"{part} = {default}" if name in domains else f"{part}={default}")
        return f"{self.name}({', '.join(parts)})"

    def call_expression(self) -> str:
        """An expression calling this loss on inputs named like its required parameters."""
        return f"{self.name}({', '.join(self.required)})"

    def prediction(self) -> str:
        """The input the loss is usually differentiated with respect to (its prediction)."""
        required = self.required
        return required[1] if len(required) >= 2 else required[0]


def _text(source: str, span) -> str:
    lines = source.splitlines()
    if span.end_line is None or span.end_line == span.line:
        end = span.end_column - 1 if span.end_column else None
        return lines[span.line - 1][span.column - 1 : end]
    first = lines[span.line - 1][span.column - 1 :]
    middle = lines[span.line : span.end_line - 1]
    last = lines[span.end_line - 1][: span.end_column - 1]
    return " ".join(part.strip() for part in [first, *middle, last])


def _body(definition: str) -> str:
    """The formula of a ``def`` statement's text: what follows the ``=`` after its parameters.

    (Read from the statement rather than from the body's span: a binary operator's span is the
    operator token, so a body such as ``(p - y)^2`` would come out as ``^``.)
    """
    start, depth = definition.index("("), 0
    for position, character in enumerate(definition[start:], start):
        # any bracket: a half-open domain such as [0, inf) closes with the other kind
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(character, 0)
        if depth == 0:  # the parameter list's closing parenthesis
            return definition[definition.index("=", position) + 1 :].strip()
    raise ValueError(f"not a def statement: {definition!r}")


def _entry(info: DefInfo) -> Entry:
    syntax = info.syntax
    source = syntax.span.source or ""
    parameters = tuple(
        (p.name, None if p.default is None else _text(source, p.default.span))
        for p in syntax.parameters
    )
    formula = _body(_text(source, syntax.span))
    domains = tuple((name, str(domain)) for name, domain in info.domains.items())
    return Entry(info.name, parameters, info.doc, formula, syntax.span.file or "", domains)


def entries() -> list[Entry]:
    """Every definition of the prelude, sorted by name."""
    found: dict[str, Entry] = {}
    for scope in prelude().imports:
        if is_core_prelude(scope):  # functions, not losses
            continue
        for name, info in scope.defs.items():
            found[name] = _entry(info)
    return [found[name] for name in sorted(found)]


def entry(name: str) -> Entry | None:
    """The prelude definition called ``name``, or None."""
    return next((e for e in entries() if e.name == name), None)
