"""Graph rewriting: named rules that track operations, grouped in phases, and their driver.

A :class:`Rule` is a name, the operations it looks at and a function from a node to its
replacement (or None when the rule does not apply). Rules are declared with :func:`rule`, in
the spirit of PyTensor's ``@node_rewriter([log, exp])``. A :class:`Phase` is a named, ordered
set of rules (``canonicalize``, ``stabilize``, ``expand``, in ``passes/rules/``); for a node,
the rules that track its operation are tried in the order the phase lists them, and the first
one that returns a replacement wins, as the branches of an if-chain would.

:func:`apply_phase` rewrites a whole graph bottom-up: every node is rebuilt from its rewritten
arguments and then rewritten until no rule of the phase applies to it (at most ``max_rounds``
times). Setting ``LOSSDSL_DEBUG_REWRITES=1`` in the environment prints every rule that fires,
with the node before and after, to stderr (``LOSSDSL_DEBUG_REWRITES=stabilize``: the rules of
the phases named).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir.node import Node, is_constant, node, rebuild, to_source

DEBUG_VARIABLE = "LOSSDSL_DEBUG_REWRITES"

RewriteFunction = Callable[[Node], "Node | None"]


@dataclass(frozen=True)
class Rule:
    """One rewrite: ``rewrite(n)`` is the replacement of a node whose op is in ``ops``, or None."""

    name: str
    ops: tuple[str, ...]
    rewrite: RewriteFunction

    def __call__(self, n: Node) -> Node | None:
        return self.rewrite(n)


def other_than_constant(n: Node, value: float) -> Node | None:
    """The other argument of a two-argument ``n`` when one of them is the constant ``value``
    (the first, when both are), else None: what ``x + 0`` and ``1 + x`` patterns match."""
    a, b = n.args
    if is_constant(a, value):
        return b
    if is_constant(b, value):
        return a
    return None


def rule(*ops: str, name: str | None = None) -> Callable[[RewriteFunction], Rule]:
    """Declare the decorated function a :class:`Rule` on ``ops`` (named after the function)."""
    if not ops:
        raise ValueError("a rule tracks at least one operation")

    def declare(rewrite: RewriteFunction) -> Rule:
        return Rule(name or rewrite.__name__, tuple(ops), rewrite)

    return declare


@dataclass(frozen=True)
class Phase:
    """A named, ordered set of rules, applied together by :func:`apply_phase`.

    ``canonicalize_first``: rebuild each node through ``make`` (folding and the canonical
    identities) before trying the phase's rules; when False the rules see the node as rebuilt
    from its new arguments, and only a node no rule replaces goes through ``make``.
    ``max_rounds``: how many rewrites in a row the driver applies to a rebuilt node (each can
    expose another); 0 for a phase that ``make`` applies itself (canonicalize).
    """

    name: str
    rules: tuple[Rule, ...]
    canonicalize_first: bool = True
    max_rounds: int = 8
    by_op: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"phase {self.name!r} repeats rules {repeated}")
        by_op: dict[str, list[Rule]] = {}
        for r in self.rules:
            for op in r.ops:
                by_op.setdefault(op, []).append(r)
        object.__setattr__(self, "by_op", {op: tuple(rs) for op, rs in by_op.items()})

    def __add__(self, other: Phase) -> Phase:
        """This phase's rules, then ``other``'s, under a joined name."""
        return Phase(
            f"{self.name}+{other.name}",
            self.rules + other.rules,
            self.canonicalize_first,
            self.max_rounds,
        )

    def rule_named(self, name: str) -> Rule:
        """The phase's rule called ``name`` (KeyError when it has none)."""
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(f"phase {self.name!r} has no rule {name!r}")

    def rewrite_once(self, n: Node) -> Node | None:
        """The replacement by the first of this phase's rules that applies to ``n``, or None."""
        candidates = self.by_op.get(n.op)
        if candidates is None:
            return None
        for r in candidates:
            replacement = r.rewrite(n)
            if replacement is not None:
                if replacement is not n and debugging(self.name):
                    report(self.name, r.name, n, replacement)
                return replacement
        return None

    def rewrite(self, n: Node) -> Node:
        """``n`` rewritten by this phase's rules until none applies (at most max_rounds)."""
        current = n
        for _ in range(self.max_rounds):
            replacement = self.rewrite_once(current)
            if replacement is None or replacement is current:
                break
            current = replacement
        return current


def apply_phase(phase: Phase, roots: list[Node]) -> list[Node]:
    """Rewrite the graphs of ``roots`` with ``phase``, bottom-up; shared nodes once. Each
    node is rebuilt from its rewritten arguments by ``ir.build.rebuilt``: a reduction keeps
    the axis it reduced where a rule left its argument without it."""
    # imported here: ir.build imports the canonicalize rules, which import this module
    from ..ir.build import rebuilt

    def rebuild_one(old: Node, args: tuple[Node, ...]) -> Node:
        if not args:
            current = old
        elif phase.canonicalize_first or old.op not in phase.by_op:
            current = rebuilt(old, args)
        else:
            current = node(old.op, args, old.value, old.axes)
            replacement = phase.rewrite_once(current)
            if replacement is None or replacement is current:
                return rebuilt(old, args)
            current = replacement
        return phase.rewrite(current)

    return rebuild(roots, rebuild_one)


def debugging(phase: str) -> bool:
    """Whether ``LOSSDSL_DEBUG_REWRITES`` asks for the rules of ``phase`` that fire to be
    printed: ``1``, ``true`` or ``yes`` (as ``LOSSDSL_VERIFY_IR``) for every phase, or a
    comma-separated list of phase names (``stabilize,expand``: canonicalize fires on almost
    every node ``make`` builds)."""
    setting = os.environ.get(DEBUG_VARIABLE, "").strip().lower()
    if setting in ("1", "true", "yes"):
        return True
    return phase in (name.strip() for name in setting.split(","))


def report(phase: str, rule_name: str, before: Node, after: Node) -> None:
    """Print one firing rule, with the node before and after (shortened), to stderr."""
    print(
        f"lossdsl rewrite {phase}/{rule_name}: {short_source(before)} => {short_source(after)}",
        file=sys.stderr,
    )


_ELIDED = "..."


def short_source(n: Node, depth: int = 3, width: int = 100) -> str:
    """``n`` as source, subexpressions deeper than ``depth`` written ``...``, cut at ``width``.

    The graph is truncated before printing, so a firing rule deep inside a large graph costs a
    few nodes of printing, not the whole subgraph.
    """
    placeholder = node("input", (), _ELIDED, n.axes)
    truncated: dict[tuple[int, int], Node] = {}

    def cut(current: Node, remaining: int) -> Node:
        if not current.args:
            return current
        if remaining == 0:
            return placeholder
        memo_key = (id(current), remaining)
        if memo_key not in truncated:
            args = tuple(cut(a, remaining - 1) for a in current.args)
            truncated[memo_key] = node(current.op, args, current.value, current.axes)
        return truncated[memo_key]

    text = to_source(cut(n, depth))
    return text if len(text) <= width else text[: width - len(_ELIDED)] + _ELIDED
