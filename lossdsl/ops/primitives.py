"""The name tables of the primitives, derived from the registry (:mod:`lossdsl.ops`).

Kinds (see :mod:`lossdsl.ops.structural`): ``elementwise`` applies to each element
(arguments broadcast: a sample vector meets a class matrix row-wise), ``row`` reduces the
class axis of each row, ``reduce`` sums over the samples, ``scan`` sums over the samples
up to or from each one in the order of a key (:mod:`lossdsl.ops.scans`), ``leaf`` has no arguments,
``gather`` reads a lookup table by labels, ``count`` weighs samples in a mean, ``macro``
names functions that ``shapes.py`` expands.
"""

from __future__ import annotations

from . import operations
from .compare import COMPARISONS, LOGICAL
from .registry import Op
from .scans import GROUP_SCANS, SCANS
from .structural import CLASS_VECTOR

__all__ = [
    "CLASS_INDEX", "CLASS_VECTOR", "COMPARISONS", "CONSTANTS", "COUNT_AS", "ELEMENTWISE",
    "FUNCTIONS", "GROUP_REDUCTIONS", "LANGUAGE_FUNCTIONS", "LEAF", "LOGICAL", "OPERATIONS",
    "REDUCE", "ROW", "SCAN", "SHAPE_MACROS", "TABLE_ROW",
]


def _of_kind(kind: str) -> dict[str, Op]:
    return {op.name: op for op in operations(kind)}


ELEMENTWISE: dict[str, Op] = _of_kind("elementwise")
ROW = _of_kind("row")
REDUCE = _of_kind("reduce")
SCAN = _of_kind("scan")
LEAF = {name: op for name, op in _of_kind("leaf").items() if name != "class_index"}
CLASS_INDEX = {"class_index": _of_kind("leaf")["class_index"]}
TABLE_ROW = _of_kind("gather")
COUNT_AS = _of_kind("count")
SHAPE_MACROS = _of_kind("macro")
OPERATIONS: dict[str, Op] = {op.name: op for op in operations()}

#: Functions of the loss language that are not primitives and cannot be written in it (they
#: read labels or name inputs): ``resolve.py`` builds them, with (minimum, maximum) argument
#: counts. Those the language can write (``clip``, ``softmax``, ``xlogy``, ...) are defs in
#: ``prelude/core.loss``.
LANGUAGE_FUNCTIONS: dict[str, tuple[int, int]] = {
    "pick": (2, 2), "rowof": (2, 2), "classvec": (1, 1), "onehot": (1, 2),
    "groupsum": (2, 2), "groupmax": (2, 2), "groupmean": (2, 2), "group_logit_shift": (3, 3),
    "pairsum": (2, 2), "pairmax": (2, 2), "partner": (1, 1),
    # sum_from(e, t) and sum_from(e, t, strata); a group's total is groupsum's (shapes.py)
    **dict.fromkeys((name for name in SCANS if name not in GROUP_SCANS), (2, 3)),
}

#: The group reductions of the language: the row reduction each is, and the macro that lays
#: out its rows (a group's samples, or each sample's partners in its group: ``pairsum``).
GROUP_REDUCTIONS: dict[str, tuple[str, str]] = {
    "groupsum": ("rowsum", "group"), "groupmax": ("rowmax", "group"),
    "groupmean": ("rowmean", "group"), "pairsum": ("rowsum", "pairs"),
    "pairmax": ("rowmax", "pairs"),
}

# Functions a loss text may call, with (minimum, maximum) argument counts: the primitives
# callable by name, then the language's own. Operators such as + and < have no name in the
# language; they are in ELEMENTWISE only.
FUNCTIONS: dict[str, tuple[int, int]] = {
    **{op.callable_as: (op.arity, op.arity) for op in operations() if op.callable_as},
    **LANGUAGE_FUNCTIONS,
}

CONSTANTS: dict[str, float] = {
    "pi": 3.141592653589793,
    "e": 2.718281828459045,
    "inf": float("inf"),
    "nan": float("nan"),
}
