"""The operations the compiler implements itself: their names, arity and kind.

Each pass keeps its own per-operation methods (values in ``evaluate.py``, derivatives in
``diff.py``, kernel code in ``codegen/``); this table is the one list they all agree on.

Kinds:

* ``elementwise``  applies to each element; arguments broadcast (a sample vector meets a
  class matrix row-wise),
* ``row``          reduces the class axis of each row (``rowsum``, ``rowmax``),
* ``reduce``       sums over the sample axis to a scalar (``sum``),
* ``leaf``         no arguments (constants, inputs, params, counts, the class index),
* ``gather``       reads a lookup table by labels (``rowof(C, y)``: row ``y_i`` of ``C``;
  ``classvec(w)``, a per-class vector, is a one-row table read at row 0),
* ``count``        ``count_as(l, s)``: the value ``l``, whose sample ``i`` counts ``s_i`` times in
  the denominator of a mean (``shapes.objective`` removes it),
* ``macro``        user-facing functions that ``resolve.py`` or ``shapes.py`` rewrite into the
  others (``logsumexp``, ``softmax``, ``pick``, ``mean``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Primitive:
    """One operation: its name, how many arguments it takes and of which kind it is."""

    name: str
    arity: int
    kind: str
    doc: str = ""


def _table(kind: str, arity: int, names: str) -> dict[str, Primitive]:
    return {name: Primitive(name, arity, kind) for name in names.split()}


ELEMENTWISE: dict[str, Primitive] = {
    **_table(
        "elementwise",
        1,
        "neg exp log log1p expm1 sqrt abs sign sigmoid log_sigmoid "
        "softplus tanh lgamma digamma trigamma sin cos erf not stop_gradient "
        "erfc log_ndtr log1mexp ndtr_ratio tetragamma",
    ),
    **_table(
        "elementwise", 2, "add sub mul div pow min max lt le gt ge eq ne and or logaddexp xlog1py"
    ),
    **_table("elementwise", 3, "where"),
}

ROW = _table("row", 1, "rowsum rowmax")
REDUCE = _table("reduce", 1, "sum")
LEAF = _table("leaf", 0, "const input param count")
# class_index(y): the index k of each class of y's row (its only argument fixes the domain).
CLASS_INDEX = {"class_index": Primitive("class_index", 1, "leaf")}
# table_row(C, y): row y_i of a class-by-class table C (an input bound to a (R, K) array),
# one value per sample and class: what rowof(C, y) builds (a cost matrix's row per label).
# A per-class vector w (K,) (classvec(w)) is the table_row of a one-row table at the constant
# label 0, with value CLASS_VECTOR: the binder passes w as a (1, K) array.
TABLE_ROW = {"table_row": Primitive("table_row", 2, "gather")}
CLASS_VECTOR = "classvec"
# count_as(l, s): l, each sample counting s_i times in a mean's denominator (class weights:
# PyTorch's weighted mean divides by sum(weight[y])); shapes.objective removes it.
COUNT_AS = {"count_as": Primitive("count_as", 2, "count")}

# mean(e) and rowmean(e) need the element count, known once shapes are: shapes.py expands them.
SHAPE_MACROS = _table("macro", 1, "mean rowmean")

OPERATIONS: dict[str, Primitive] = {
    **ELEMENTWISE,
    **ROW,
    **REDUCE,
    **LEAF,
    **CLASS_INDEX,
    **TABLE_ROW,
    **COUNT_AS,
    **SHAPE_MACROS,
}

# Functions a loss text may call, with (minimum, maximum) argument counts. Operators such as
# + and < have no name in the language; they are listed in ELEMENTWISE only.
FUNCTIONS: dict[str, tuple[int, int]] = {
    **{
        name: (1, 1)
        for name in (
            "exp log log1p expm1 sqrt abs sign sigmoid log_sigmoid softplus tanh lgamma digamma "
            "trigamma sin cos erf stop_gradient rowsum rowmax rowmean logsumexp softmax "
            "log_softmax sum mean square cosh erfc log_ndtr log1mexp "
            # what the derivatives of log_ndtr and trigamma are written with, callable so that
            # a printed derivative is loss source: phi(x)/Phi(x), and polygamma(2, x)
            "ndtr_ratio tetragamma"
        ).split()
    },
    "logaddexp": (2, 2),
    "xlog1py": (2, 2),
    "min": (2, 2),
    "max": (2, 2),
    "where": (3, 3),
    "clip": (3, 3),
    "pick": (2, 2),
    "rowof": (2, 2),
    "classvec": (1, 1),
    "count_as": (2, 2),
    "onehot": (1, 2),
    "xlogy": (2, 2),
}

CONSTANTS: dict[str, float] = {
    "pi": 3.141592653589793,
    "e": 2.718281828459045,
    "inf": float("inf"),
    "nan": float("nan"),
}

COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")
LOGICAL = ("and", "or", "not")
