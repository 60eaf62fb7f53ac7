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
    requirement: str = ""  # the condition after ``requires``, as written ("" if none)

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
        """``name(y, p, delta=1.0)``, with declared domains: ``hinge(y in {-1, 1}, z)``, and
        a requirement: ``aft_normal(...) requires y_upper >= y``."""
        domains = dict(self.domains)
        parts = []
        for name, default in self.parameters:
            part = name if name not in domains else f"{name} in {domains[name]}"
            parts.append(part if default is None else
                         f"{part} = {default}" if name in domains else f"{part}={default}")
        requirement = f" requires {self.requirement}" if self.requirement else ""
        return f"{self.name}({', '.join(parts)}){requirement}"

    def call_expression(self) -> str:
        """An expression calling this loss on inputs named like its required parameters."""
        return f"{self.name}({', '.join(self.required)})"

    def prediction(self) -> str:
        """The input the loss is usually differentiated with respect to (its prediction)."""
        required = self.required
        return required[1] if len(required) >= 2 else required[0]


def _body(definition: str, requirement: str) -> str:
    """The formula of a ``def`` statement's text: what follows the ``=`` after its parameters
    and its ``requirement`` clause (its text, "" if none).

    (Read from the statement rather than from the body's span: a binary operator's span is the
    operator token, so a body such as ``(p - y)^2`` would come out as ``^``.)
    """
    start, depth = definition.index("("), 0
    for position, character in enumerate(definition[start:], start):
        # any bracket: a half-open domain such as [0, inf) closes with the other kind
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(character, 0)
        if depth == 0:  # the parameter list's closing parenthesis
            if requirement:  # the condition may hold an "=" of its own (y_upper >= y)
                position = definition.index(requirement, position) + len(requirement)
            return definition[definition.index("=", position) + 1 :].strip()
    raise ValueError(f"not a def statement: {definition!r}")


def _entry(info: DefInfo) -> Entry:
    syntax = info.syntax
    parameters = tuple(
        (p.name, None if p.default is None else p.default.span.text())
        for p in syntax.parameters
    )
    requirement = syntax.requirement.span.text() if syntax.requirement else ""
    formula = _body(syntax.span.text() or "", requirement)
    domains = tuple((name, str(domain)) for name, domain in info.domains.items())
    return Entry(info.name, parameters, info.doc, formula, syntax.span.file or "", domains,
                 requirement.removeprefix("requires").strip())


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
