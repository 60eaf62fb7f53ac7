"""Scheduling: split a multi-output graph into fused passes over the data.

Kernels compute the value, gradients and Hessians of a loss together. Per-element work runs
in loops over a sample domain; a ``sum`` over samples is a reduction that a loop accumulates,
and a cumulative sum (``sum_from(e, t)``, :mod:`lossdsl.ops.scans`) is computed between two
loops from the summands and keys a loop wrote.
A loop cannot use a reduction it is still accumulating, so a graph whose per-element part
needs a sum (a weighted mean's ``1/sum(w)``, a Dice loss's ``sum(y*p)``) needs a pass that
computes that sum first. This module finds the fewest passes and puts every reduction in
the latest pass that can still feed its users, so that ordinary losses run in ONE pass.

Target-independent: the CPU and CUDA code generators both consume a :class:`Schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.node import PASS_BOUNDARIES, Node, sums_read, toposort


@dataclass(frozen=True)
class Output:
    """A requested result: a scalar (the loss value) or per-element array (a gradient)."""

    name: str
    node: Node
    axes: tuple[str, ...]  # the array's axes; () for a scalar result


@dataclass
class Loop:
    """One loop over sample domain ``axis`` in pass ``index``."""

    index: int
    axis: str
    reductions: list[Node] = field(default_factory=list)  # sum nodes accumulated here
    outputs: list[Output] = field(default_factory=list)  # per-element outputs written here
    # cumulative sums (sum_from, ...) whose summands and keys this loop writes; the glue
    # after it accumulates them for the later loops that read them
    scans: list[Node] = field(default_factory=list)


@dataclass
class Schedule:
    """The passes, in order; scalar outputs are computed after the last pass."""

    loops: list[Loop]
    scalar_outputs: list[Output]
    passes: int


def _loop_axis(n: Node) -> str:
    return n.args[0].axes[0]


def plan(outputs: list[Output]) -> Schedule:
    """Schedule ``outputs`` into the fewest passes, each reduction as late as possible."""
    level: dict[int, int] = {}
    for n in toposort([o.node for o in outputs]):
        inner = max((level[id(a)] for a in n.args), default=0)
        level[id(n)] = inner + 1 if n.op in PASS_BOUNDARIES else inner
    element_outputs = [o for o in outputs if o.axes]
    scalar_outputs = [o for o in outputs if not o.axes]
    # sums and cumulative sums: each is computed after the pass that computes its arguments
    reductions = [n for n in toposort([o.node for o in outputs]) if n.op in PASS_BOUNDARIES]

    passes = max(
        [level[id(o.node)] + 1 for o in element_outputs] + [level[id(r)] for r in reductions] + [1]
    )
    scheduled: dict[int, int] = {}
    deadline: dict[int, int] = {}  # reduction -> the latest pass it may run in

    def constrain(root: Node, pass_index: int) -> None:
        for r in sums_read(root):
            deadline[id(r)] = min(deadline.get(id(r), passes), pass_index - 1)

    for o in element_outputs:
        constrain(o.node, passes)
    for r in sorted(reductions, key=lambda r: -level[id(r)]):
        scheduled[id(r)] = deadline.get(id(r), passes)
        for argument in r.args:
            constrain(argument, scheduled[id(r)])

    loops: dict[tuple[int, str], Loop] = {}

    def loop(index: int, axis: str) -> Loop:
        if (index, axis) not in loops:
            loops[(index, axis)] = Loop(index, axis)
        return loops[(index, axis)]

    for r in reductions:
        if r.op == "sum":
            loop(scheduled[id(r)], _loop_axis(r)).reductions.append(r)
        else:
            loop(scheduled[id(r)], r.axes[0]).scans.append(r)
    for o in element_outputs:
        loop(passes, o.axes[0]).outputs.append(o)
    ordered = sorted(loops.values(), key=lambda lp: (lp.index, lp.axis))
    return Schedule(ordered, scalar_outputs, passes)
