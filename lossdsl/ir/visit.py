"""One way to walk a graph: :class:`NodeVisitor` dispatches each node to ``<prefix><op>``.

Graphs can be deep (a 10,000-term sum, a Hessian built on a gradient), so a visitor never
recurses: :meth:`NodeVisitor.run` visits the nodes in topological order, arguments first, and
each method reads its arguments' results from the memo (:meth:`NodeVisitor.visit` on an
argument is a lookup). Shared subexpressions are visited once. The shape is SymPy's
``Printer._print`` (a method per kind of node, then a fallback), without its recursion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from .node import Node, toposort

Result = TypeVar("Result")


class NodeVisitor(Generic[Result]):
    """Computes one result per node, bottom-up; subclasses define ``<method_prefix><op>(n)``
    methods and may override :meth:`fallback` (for ops without a method of their own) and
    :meth:`finish` (applied to every result). With ``pass_arguments``, the methods and
    :meth:`fallback` are called as ``(n, *args)``, ``args`` the results of ``n``'s arguments
    (:meth:`arguments`: what an evaluator or a code printer wants; a precedence printer reads
    its arguments itself, with their precedence)."""

    method_prefix = "visit_"
    pass_arguments = False

    def __init__(self) -> None:
        self.memo: dict[int, Result] = {}

    def run(self, roots: Sequence[Node]) -> list[Result]:
        """The results of ``roots``, every node below them visited first."""
        for current in toposort(list(roots)):
            self.visit(current)
        return [self.visit(root) for root in roots]

    def visit(self, n: Node) -> Result:
        """The result of ``n``: from the memo, else computed (by then its arguments are)."""
        cached = self.memo.get(id(n))
        if cached is None:
            method = getattr(self, self.method_prefix + n.op, None) or self.fallback
            if self.pass_arguments:
                cached = method(n, *self.arguments(n))
            else:
                cached = method(n)
            cached = self.finish(n, cached)
            self.memo[id(n)] = cached
        return cached

    def arguments(self, n: Node) -> list[Result]:
        """What a ``pass_arguments`` visitor's method gets for ``n``'s arguments: their
        results (already computed: :meth:`run` visits arguments first)."""
        return [self.visit(a) for a in n.args]

    def fallback(self, n: Node, *args: Any) -> Result:
        """The result of a node whose op has no method; by default an error naming it."""
        raise NotImplementedError(f"{type(self).__name__} has no rule for '{n.op}'")

    def finish(self, n: Node, result: Result) -> Result:
        """``result`` as stored for ``n`` (a hook: printers cut over-long text here)."""
        return result


ATOM = 9  # the precedence of a name, a number or a call: never parenthesised


class PrecedencePrinter(NodeVisitor[tuple[str, float]]):
    """Prints a graph as text, each node as (text, precedence); ``print_<op>`` methods.

    Shared subexpressions are printed in full each time they are used (the text is for
    reading); ``max_length`` stops the output from exploding on very shared graphs: a longer
    text is replaced by ``elided``.
    """

    method_prefix = "print_"
    elided = "..."

    def __init__(self, max_length: int = 20000) -> None:
        super().__init__()
        self.max_length = max_length

    def print(self, n: Node) -> str:
        """The text of ``n``."""
        return self.run([n])[0][0]

    def finish(self, n: Node, result: tuple[str, float]) -> tuple[str, float]:
        return (self.elided, ATOM) if len(result[0]) > self.max_length else result
