"""What a front end that runs lossdsl's kernels under another framework's automatic
differentiation (:mod:`lossdsl.torch`; :mod:`lossdsl.keras` on TensorFlow) needs to know to
differentiate them exactly, or to refuse with a message instead of a wrong number.

* The backward pass of per-sample values (``reduction="none"``) is one gradient call of the
  summed loss with the incoming per-sample gradients as sample weights: the vector-Jacobian
  product, exact whatever couples the samples (groups, pairs, risk sets). A batch term (one
  number for the whole batch: a regulariser, dice's ratio of sums), which every sample's
  value carries, is counted once per unit of the incoming gradients' sum; a loss that is one
  number for the whole batch (``dice``) scales its gradient (:func:`vector_jacobian`).
  Differentiating that product again, or forward mode, refuses a batch term
  (:func:`check_per_sample`).
* Values with one entry per sample and class take their incoming gradients entry by entry
  where each entry depends on its own entry of the input (:func:`entries_apart`), and
  otherwise (a softmax over the row) through the loss times an input holding them, summed
  (:func:`upstream_weighted`); differentiating that product again refuses them
  (:func:`check_per_entry`).
* A second derivative through the symbolic diagonal Hessian is the whole second derivative
  only where the input's entries are not coupled and no other input is needed
  (:func:`second_order` tells which).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import compiler
from .api import CompiledLoss, Loss
from .errors import LossError
from .ir.axes import Axis, partner_of
from .ir.build import make
from .ir.node import Node, is_constant, node, toposort
from .ops.scans import SCANS
from .passes import diff, shapes

__all__ = ["UPSTREAM", "SecondOrder", "check_per_entry", "check_per_sample", "entries_apart",
           "has_batch_term", "reads_other_samples", "second_order", "upstream_weighted",
           "vector_jacobian"]

#: The input of :func:`upstream_weighted` that holds the incoming gradients: no name the
#: language can write, so no loss has an input of its own named so.
UPSTREAM = "incoming gradients"


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
    if not _reads(objective.total, name):  # the loss does not depend on it: every
        return SecondOrder(False, frozenset(), axes, objective.sample_axis)  # derivative is 0
    x = spec.typed[name]
    (gradient,) = compiler.optimize([diff.grad(objective.total, x)], for_codegen=False)
    order, varies = _dependence(gradient, name)
    inputs = {partner_of(n.value) or n.value for n in order if n.op == "input"}
    # a gradient entry that reads x's partners, or mixes x's entries through a reduction
    # over an axis of x or a cumulative sum, couples the entries
    coupled = any(reduced is None or reduced & set(x.axes or ())
                  for _, reduced in _mixing(order, varies))
    return SecondOrder(coupled, frozenset(inputs - {name}), axes, objective.sample_axis)


def _dependence(graph: Node, name: str) -> tuple[list[Node], dict[int, bool]]:
    """``graph``'s nodes in topological order, and for each (by id) whether it depends on
    input ``name``, itself or read at the partners of a pair sum (``stop_gradient`` cuts)."""
    order = toposort([graph])
    varies: dict[int, bool] = {}
    for n in order:
        if n.op == "input":
            varies[id(n)] = n.value == name or partner_of(n.value) == name
        else:
            varies[id(n)] = n.op != "stop_gradient" and any(varies[id(a)] for a in n.args)
    return order, varies


def _mixing(order: list[Node], varies: dict[int, bool]) -> Iterator[tuple[Node, set[str] | None]]:
    """The nodes that may mix different entries of the input ``varies`` follows: its reads
    at the partners (axes None), cumulative sums of a dependent argument (axes None: they
    keep their axis but mix the entries along it, as risk sets do), and reductions of a
    dependent argument (with the axes reduced)."""
    for n in order:
        if n.op == "input":
            if varies[id(n)] and partner_of(n.value) is not None:
                yield n, None
            continue
        if n.op in SCANS and varies[id(n.args[0])]:
            yield n, None
        for a in n.args:
            reduced = set(a.axes or ()) - set(n.axes or ())
            if varies[id(a)] and reduced:
                yield n, reduced


def _reads(graph: Node, name: str) -> bool:
    """Whether ``graph`` reads input ``name``, itself or at the partners of a pair sum."""
    return any(n.op == "input" and (n.value == name or partner_of(n.value) == name)
               for n in toposort([graph]))


def reads_other_samples(summed: CompiledLoss, name: str, ranks: dict[str, int],
                        weighted: bool) -> bool:
    """Whether a sample's value (reduction "none") depends on other samples' entries of
    input ``name``: through a reduction over the samples, a group's items or a sample's
    partners of an argument that depends on it, a cumulative sum (risk sets), or a read of
    it at the partners. Then the vector-Jacobian product of the per-sample values is not
    the upstream gradients times the summed loss's gradient, entry by entry (``y*sum(z)``:
    the j-th entry is sum_i v_i y_i, not v_j sum(y)). Reductions over a row's classes stay
    within the sample."""
    spec = compiler.specialize(summed.loss.definition, ranks, weighted, "none")
    order, varies = _dependence(spec.objective.value, name)
    return any(reduced is None or any(not (axis.is_classes and not axis.is_ragged)
                                      and not axis.is_partner_classes
                                      for axis in map(Axis, reduced))
               for _, reduced in _mixing(order, varies))


def has_batch_term(summed: CompiledLoss, ranks: dict[str, int]) -> bool:
    """Whether ``summed`` (a loss compiled with reduction "sum"), for inputs of ``ranks``,
    has a batch term: one number for the whole batch (a regulariser, a ratio of sums), which
    reduction "none" adds to every sample's value and reduction "sum" once."""
    definition = summed.loss.definition
    specialized = shapes.specialize(definition.graph, ranks, definition.inputs,
                                    definition.input_spans)
    _, scalar = shapes.split_additive(specialized.graph)
    return not is_constant(scalar)


def check_per_sample(summed: CompiledLoss, ranks: dict[str, int]) -> None:
    """Refuse to differentiate the backward pass of per-sample values through ``summed``
    (the loss with reduction "sum") again, or to take it in forward mode, where a batch term
    would make it wrong: those passes take each sample's gradient as its own rows' share."""
    if has_batch_term(summed, ranks):
        raise LossError("reduction='none' of a loss with a batch term (one number for the "
                        "whole batch: a regulariser, or a batch-level loss such as dice's "
                        "ratio of sums) has no second derivative, torch.func transform or "
                        "forward-mode derivative here, only the plain backward pass "
                        "(backward(), autograd.grad without create_graph, "
                        "autograd.functional.jacobian): use one of those, or reduction "
                        "'mean' or 'sum'")


def upstream_weighted(loss: Loss) -> Loss:
    """``loss`` times the input :data:`UPSTREAM`, entry by entry: with reduction "sum" its
    gradient is ``d(sum u * values)/dx`` for incoming gradients u shaped like the values,
    whatever couples the entries (the values of :func:`vector_jacobian` where
    :func:`entries_apart` does not hold)."""
    definition = loss.definition
    upstream = node("input", (), UPSTREAM, None)
    weighted = dataclasses.replace(
        definition, graph=make("mul", (upstream, definition.graph)),
        inputs=(*definition.inputs, UPSTREAM),
        input_spans={**definition.input_spans, UPSTREAM: definition.span})
    return Loss(weighted, loss.scope)


def vector_jacobian(summed: CompiledLoss, wrt: tuple[str, ...], upstream: Any, weight: Any,
                    inputs: Mapping[str, Any], params: Mapping[str, float],
                    batch_term: bool, kernel_array: Callable[[Any], Any] = np.asarray,
                    result: Callable[[Any], Any] = np.asarray,
                    weighted: CompiledLoss | None = None) -> dict[str, Any]:
    """The backward pass of reduction "none": ``d(sum u * values)/dx`` for each input ``x``
    of ``wrt``, through ``summed`` (the loss with reduction "sum") at ``inputs``.

    ``upstream`` (u) holds the incoming gradients, shaped like the values: 0-d for a loss
    that is one number for the whole batch (its gradient times u), (N,) per sample (the
    gradient with u times the sample ``weight``, or None, as sample weights), or (N, K) per
    entry: the gradient times u entry by entry where :func:`entries_apart` holds for every
    input of ``wrt`` (which no batch term that depends on the input passes), otherwise
    (``weighted``: :func:`upstream_weighted` of the loss, reduction "sum") the gradient of
    the values times u, summed. Where ``batch_term``
    (:func:`has_batch_term`: each value ``w_i a_i + c`` carries c), c counts ``sum(u)``
    times, not once. ``kernel_array`` turns an array of
    ``upstream``'s kind into a kernel argument, ``result`` a kernel's gradient into one of
    ``upstream``'s kind (NumPy by default), which the gradients returned are."""

    def gradients(sample_weight: Any) -> dict[str, Any]:
        found = summed.grad(wrt, sample_weight=None if sample_weight is None
                            else kernel_array(sample_weight), **inputs, **params)
        return {name: result(found[name]) for name in wrt}

    rank = len(upstream.shape)
    if rank == 0:  # one value for the whole batch (sample weights are refused there)
        return {name: g * upstream for name, g in gradients(None).items()}
    if rank == 2 and weighted is not None:  # entries coupled: u is an input of the loss
        found = weighted.grad(wrt, sample_weight=None if weight is None
                              else kernel_array(weight), **inputs,
                              **{UPSTREAM: kernel_array(upstream)}, **params)
        return {name: result(found[name]) for name in wrt}
    if rank == 2:  # entry by entry (where each entry depends on its own: no batch term does)
        return {name: g * upstream for name, g in gradients(weight).items()}
    weighted = upstream if weight is None else upstream * weight
    if not batch_term:
        return gradients(weighted)
    # sum_i t_i a_i + S c with t = u w and S = sum(u): the summed loss's gradient with the
    # weights t/S, times S (one kernel call, each term rounded as the product itself is);
    # where S is 0 (or t/S overflows), the gradient with the weights t and S - 1 times the
    # batch term's own gradient (the weights 0)
    total = float(upstream.sum())
    if total != 0 and np.isfinite(total):
        scaled = weighted / total
        if bool(abs(scaled).max() < np.inf):  # False for a NaN too
            return {name: total * g for name, g in gradients(scaled).items()}
    found, batch = gradients(weighted), gradients(weighted * 0)
    return {name: g + (total - 1) * batch[name] for name, g in found.items()}


def entries_apart(facts: SecondOrder) -> bool:
    """Whether each entry of values with one entry per sample and class depends on its own
    entry of the input that ``facts`` are of alone (so that its incoming gradients can be
    taken entry by entry)."""
    return not facts.coupled and len(facts.axes) == 2


def check_per_entry(facts: SecondOrder, name: str) -> None:
    """Refuse to take incoming gradients entry by entry (one per sample and class) for input
    ``name`` unless each entry of the values depends on its own entry of ``name`` alone
    (:func:`entries_apart`)."""
    if not entries_apart(facts):
        why = ("its entries are coupled (a row reduction such as a softmax)"
               if facts.coupled else f"'{name}' has one value per sample, not per class")
        raise LossError(
            f"reduction='none' backward of a loss with one value per sample and class "
            f"needs each value to depend on its own entry of '{name}' alone, and {why}: "
            "reduce the loss per sample first (rowsum(...)) or use 'mean' or 'sum'")
