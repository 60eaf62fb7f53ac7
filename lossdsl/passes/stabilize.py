"""The stabilize pass: numerically fragile patterns replaced by stable primitives.

The rules (``log(1 + exp(x)) -> softplus(x)``, ``exp(x) - 1 -> expm1(x)``, ...) are the
stabilize phase, in ``passes/rules/stabilize.py``.
"""

from __future__ import annotations

from ..ir.node import Node
from .rewrite import apply_phase
from .rules.stabilize import STABILIZE


def stabilize(roots: list[Node]) -> list[Node]:
    """Rewrite fragile patterns into stable primitives until nothing changes."""
    return apply_phase(STABILIZE, roots)
