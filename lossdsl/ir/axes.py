"""Axes: what a node's ``axes`` tuple holds, one :class:`Axis` per dimension.

An axis is a value with a kind and a number, spelled as a short string because the generated
kernels name their length variables after it (so the spelling is part of the golden source):

* ``n<d>``        the samples of sample domain ``d`` (inputs that share a length share it),
* ``n<d>k``       the classes of the rows of domain ``d`` (an (N, K) matrix's second axis),
* ``n<d>g``       the items of each group of domain ``d``, when ``groupsum(e, g)`` and its
                  kin group the samples: the samples' axis ``n<d>`` then counts the groups,
                  and each group's items are a row of varying length (a *ragged* row: the
                  kernels loop over ``offsets[i]`` to ``offsets[i + 1]`` of the item arrays),
* ``n<d>c``       the partner classes of each class of the rows of domain ``d``: within
                  ``classpairsum(e)`` a value per ordered pair (k, c) of distinct classes of
                  a row has the axes ``(n<d>, n<d>k, n<d>c)``; a row of ``K - 1`` partners
                  per class (the kernels loop ``c`` over the row's classes, skipping ``k``),
* ``t<d>``        the rows of the ``d``-th lookup table (a cost matrix's label axis).

A ``count`` leaf holds the length of an axis, or ``n<d>#kept``: the number of samples of
domain ``d`` that ``ignore_index`` keeps (not an axis: no value is laid out along it).

:class:`Axis` is a ``str`` (nodes hash, compare and print as before); build axes with its
constructors and ask them what they are, instead of slicing and matching the spelling.
"""

from __future__ import annotations

import re

_SPELLING = re.compile(r"(?P<kind>[nt])(?P<number>\d+)(?P<classes>[kgc]?)")
_KEPT = "#kept"
#: The suffix of the name of an input's leaf read at the partners of a pair sum (``pairsum``):
#: '@' is no character of a name.
PARTNER_SUFFIX = "@partner"


def partner_name(name: str) -> str:
    """The name of the leaf of input ``name`` read at the partners of a pair sum: one value
    per pair (i, j), ``name``'s value at j (``partner(name)``), which the kernels read
    through the partners' index. Within a class pair sum (``classpairsum``) the same name
    reads an (N, K) input at the partner class c of each pair (k, c) of a row: that leaf has
    the axes ``(n<d>, n<d>k, n<d>c)`` (a paired sample's leaf has ``(n<d>, n<d>g)``, and no
    input is both: paired samples have no classes)."""
    return name + PARTNER_SUFFIX


def partner_of(name: str) -> str | None:
    """The input whose partner leaf ``name`` is (see :func:`partner_name`), else None."""
    return name.removesuffix(PARTNER_SUFFIX) if name.endswith(PARTNER_SUFFIX) else None


class Axis(str):
    """One axis; ``Axis("n0k")`` parses and checks a spelling."""

    __slots__ = ()

    def __new__(cls, spelling: str) -> Axis:
        if isinstance(spelling, Axis):
            return spelling
        match = _SPELLING.fullmatch(spelling)
        if not match or (match["kind"] == "t" and match["classes"]):
            raise ValueError(f"not an axis: {spelling!r} (axes are n<d>, n<d>k, n<d>g, "
                             "n<d>c and t<d>)")
        return super().__new__(cls, spelling)

    @classmethod
    def parse(cls, value: object) -> Axis | None:
        """``value`` as an axis, or None when it is not the spelling of one."""
        if not isinstance(value, str):
            return None
        try:
            return cls(value)
        except ValueError:
            return None

    @classmethod
    def samples(cls, domain: int) -> Axis:
        """The sample axis of domain ``domain``: ``n<domain>``."""
        return cls(f"n{domain}")

    @classmethod
    def table_rows(cls, index: int) -> Axis:
        """The row axis of the ``index``-th lookup table: ``t<index>``."""
        return cls(f"t{index}")

    @property
    def domain(self) -> int:
        """The number of the sample domain (or table) the axis belongs to."""
        return int(_SPELLING.fullmatch(self)["number"])

    @property
    def is_samples(self) -> bool:
        return self.startswith("n") and not self.endswith(("k", "g", "c"))

    @property
    def is_classes(self) -> bool:
        """Whether this is the second axis of a row: a class axis, or a group's items."""
        return self.endswith(("k", "g"))

    @property
    def is_ragged(self) -> bool:
        """Whether this is the items of groups (rows of varying length), ``n<d>g``."""
        return self.endswith("g")

    @property
    def is_partner_classes(self) -> bool:
        """Whether this is the partner classes of each class of a row, ``n<d>c``."""
        return self.startswith("n") and self.endswith("c")

    @property
    def is_table_rows(self) -> bool:
        return self.startswith("t")

    def classes(self) -> Axis:
        """The class axis of the rows of this sample axis: ``n<d>`` -> ``n<d>k``."""
        if not self.is_samples:
            raise ValueError(f"only a sample axis has a class axis, not {self!r}")
        return Axis(self + "k")

    def items(self) -> Axis:
        """The items of the groups of this sample axis: ``n<d>`` -> ``n<d>g``."""
        if not self.is_samples:
            raise ValueError(f"only a sample axis has groups, not {self!r}")
        return Axis(self + "g")

    def partner_classes(self) -> Axis:
        """The partner classes of this class axis (``classpairsum``): ``n<d>k`` ->
        ``n<d>c``."""
        if not (self.is_classes and not self.is_ragged):
            raise ValueError(f"only a class axis has partner classes, not {self!r}")
        return Axis(self[:-1] + "c")

    def own_classes(self) -> Axis:
        """The class axis whose partner classes this axis holds: ``n<d>c`` -> ``n<d>k``."""
        if not self.is_partner_classes:
            raise ValueError(f"not an axis of partner classes: {self!r}")
        return Axis(self[:-1] + "k")

    def samples_of(self) -> Axis:
        """The sample axis whose rows this class (or items) axis spans: ``n<d>k`` ->
        ``n<d>``."""
        if not self.is_classes:
            raise ValueError(f"not a class axis: {self!r}")
        return Axis(self[:-1])

    def kept_count(self) -> str:
        """The name of the ``count`` leaf of the samples of this axis that ``ignore_index``
        keeps (a name no axis has)."""
        if not self.is_samples:
            raise ValueError(f"only samples are kept or ignored, not {self!r}")
        return self + _KEPT


def counted_axis(name: str) -> tuple[Axis, bool]:
    """What a ``count`` leaf's name counts: (the axis, whether only its kept samples)."""
    if name.endswith(_KEPT):
        return Axis(name.removesuffix(_KEPT)), True
    return Axis(name), False
