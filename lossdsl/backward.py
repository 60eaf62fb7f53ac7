"""What a front end that runs lossdsl's kernels under another framework's automatic
differentiation (:mod:`lossdsl.torch`; :mod:`lossdsl.keras` on TensorFlow) needs to know to
differentiate them exactly, or to refuse with a message instead of a wrong number.

* The backward pass of per-sample values (``reduction="none"``) is one gradient call of the
  summed loss with the incoming per-sample gradients as sample weights: the vector-Jacobian
  product, exact whatever couples the samples (groups, pairs, risk sets), except for a scalar
  term, which every sample's value carries once (:func:`check_per_sample`).
* Values with one entry per sample and class take their incoming gradients entry by entry,
  which is exact only where each entry depends on its own entry of the input
  (:func:`check_per_entry`).
* A second derivative through the symbolic diagonal Hessian is the whole second derivative
  only where the input's entries are not coupled and no other input is needed
  (:func:`second_order` tells which).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import compiler
from .api import CompiledLoss
from .errors import LossError
from .ir.node import is_constant, toposort
from .ops.scans import SCANS
from .passes import diff, shapes

__all__ = ["SecondOrder", "check_per_entry", "check_per_sample", "second_order"]


@dataclass(frozen=True)
class SecondOrder:
    """What the symbolic gradient of a loss with respect to one input tells about its second
    derivatives: whether entries of the input are coupled (the diagonal Hessian is not the
    whole Hessian), which other inputs the gradient depends on (mixed derivatives), the
    input's axes and the samples' axis."""

    coupled: bool
    depends_on: frozenset[str]
    axes: tuple[str, ...]
    sample_axis: str | None


def second_order(compiled: CompiledLoss, name: str, ranks: dict[str, int],
                 weighted: bool) -> SecondOrder:
    """The :class:`SecondOrder` facts of ``compiled``'s gradient with respect to input
    ``name``, for inputs of ``ranks`` (with sample weights when ``weighted``)."""
    spec = compiler.specialize(compiled.loss.definition, ranks, weighted, compiled.reduction)
    objective = spec.objective
    axes = spec.shapes.input_axes.get(name, ())
    x = next((n for n in toposort([objective.total]) if n.op == "input" and n.value == name),
             None)
    if x is None:  # the loss does not depend on it: every derivative is zero
        return SecondOrder(False, frozenset(), axes, objective.sample_axis)
    (gradient,) = compiler.optimize([diff.grad(objective.total, x)], for_codegen=False)
    varies: dict[int, bool] = {}  # node -> does it depend on x (stop_gradient cuts)
    coupled = False
    inputs = set()
    for n in toposort([gradient]):
        if n.op == "input":
            varies[id(n)] = n is x
            inputs.add(n.value)
            continue
        varies[id(n)] = n.op != "stop_gradient" and any(varies[id(a)] for a in n.args)
        for a in n.args:
            # an argument with axes its result lacks is reduced over them; reduced over an
            # axis of x, an x-dependent argument mixes different entries of x
            reduced = set(a.axes or ()) - set(n.axes or ())
            if varies[id(a)] and reduced & set(x.axes or ()):
                coupled = True
        # a cumulative sum keeps its axis but mixes the entries along it (a risk set)
        if n.op in SCANS and varies[id(n.args[0])]:
            coupled = True
    return SecondOrder(coupled, frozenset(inputs - {name}), axes, objective.sample_axis)


def check_per_sample(summed: CompiledLoss, ranks: dict[str, int]) -> None:
    """Refuse the backward pass of per-sample values through ``summed`` (the loss with
    reduction "sum") where a scalar term would make it wrong."""
    # Per-sample values l_i + c carry a scalar term c (a regulariser) in every sample; the
    # weighted-sum trick would count it once instead of sum_i v_i times.
    definition = summed.loss.definition
    specialized = shapes.specialize(definition.graph, ranks, definition.inputs,
                                    definition.input_spans)
    _, scalar = shapes.split_additive(specialized.graph)
    if not is_constant(scalar):
        raise LossError("reduction='none' cannot be differentiated for a loss with a "
                        "scalar term, one number for the whole batch (a regulariser, or a "
                        "batch-level loss such as dice's ratio of sums): use 'mean' or 'sum' "
                        "(through Keras, whose losses are per sample: its JAX backend "
                        "differentiates the batch)")


def check_per_entry(facts: SecondOrder, name: str) -> None:
    """Refuse to take incoming gradients entry by entry (one per sample and class) for input
    ``name`` unless each entry of the values depends on its own entry of ``name`` alone."""
    if facts.coupled or len(facts.axes) != 2:
        why = ("its entries are coupled (a row reduction such as a softmax)"
               if facts.coupled else f"'{name}' has one value per sample, not per class")
        raise LossError(
            f"reduction='none' backward of a loss with one value per sample and class "
            f"needs each value to depend on its own entry of '{name}' alone, and {why}: "
            "reduce the loss per sample first (rowsum(...)) or use 'mean' or 'sum'")
