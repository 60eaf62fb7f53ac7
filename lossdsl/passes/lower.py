"""Lowering for code generation: stable primitives written through shared subexpressions.

``softplus``, ``log_sigmoid`` and ``sigmoid`` are expanded through one ``exp(-|z|)`` that
hash-consing then shares between them; the rules are the expand phase, in
``passes/rules/expand.py``.
"""

from __future__ import annotations

from ..ir.node import Node
from .rewrite import apply_phase
from .rules.expand import EXPAND


def lower(roots: list[Node]) -> list[Node]:
    """Rewrite stable primitives into forms that share their exponentials and logarithms."""
    return apply_phase(EXPAND, roots)
