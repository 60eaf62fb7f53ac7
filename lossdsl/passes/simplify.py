"""The simplify pass: a graph rebuilt through ``make``, which applies the canonicalize phase.

The node constructor and the identities it applies live in ``ir/build.py`` and
``passes/rules/canonicalize.py``; this module keeps the pass itself.
"""

from __future__ import annotations

from ..ir.node import Node
from .rewrite import apply_phase
from .rules.canonicalize import CANONICALIZE


def simplify(roots: list[Node]) -> list[Node]:
    """The simplify pass: rebuild ``roots`` through ``make`` (folding and identities)."""
    return apply_phase(CANONICALIZE, roots)
