"""Loss, gradient and Hessian over ``dask.array`` inputs, one compiled kernel call per chunk.

    import dask.array as da
    import lossdsl.dask

    L = lossdsl.dask.compile("bce_logits(y, p)")            # reduction="mean"
    value = L(y=y, p=p, sample_weight=w).compute()           # weighted mean over all chunks
    g, h = L.grad_and_hessian("p", y=y, p=p)                 # dask arrays chunked like p

Every array input with one row per sample is split along the sample axis into the same
chunks (dask arrays are rechunked to the first one's chunks, NumPy arrays are chunked the
same way, a class axis stays in one chunk); scalars and arrays of another length (a
regulariser's parameter vector) go whole to every task. Each chunk runs the kernel with
``reduction="sum"``; chunk sums are combined by dask's tree reduction and divided by the
global count or weight sum for ``"mean"``, so the result equals one call over all the data
up to rounding.

Losses that reduce over the samples themselves (nested reductions: Dice, Tversky, a
``mean(p)^2`` penalty, a regulariser term added once) are not sums of per-sample terms. They
are evaluated in phases: the inner sums ``S_j = sum_i e_j(x_i)`` over all chunks first, then
the per-sample terms chunk by chunk with the ``S_j`` fixed, plus the terms that are a single
number once. Gradients use the chain rule ``dT/dx_i = dT/dx_i|S + sum_j dT/dS_j de_j/dx_i``,
``dT/dS_j`` being reduced over all chunks in between. Supported: one level of nesting, value
and gradient. Raising :class:`~lossdsl.LossError`: the Hessian of a nested loss (it needs
cross-derivatives between the inner sums), reductions nested two deep, and derivatives with
respect to inputs without a sample axis (differentiate those terms with ``lossdsl.compile``).

Results are lazy dask arrays; call ``.compute()`` (or ``dask.compute`` on several).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from . import shapes
from ._boost import as_loss
from .api import CompiledLoss, Loss
from .errors import LossError, LossNameError, LossShapeError, did_you_mean
from .ir import Node, depends_on, node, rebuild, toposort
from .resolve import LossDefinition

__all__ = ["DaskLoss", "compile"]

_INNER = "#S"  # the inner sums become inputs named #S0, #S1, ...: '#' starts no user name


def _sub_loss(parent: Loss, graph: Node, extra_inputs: Iterable[str] = ()) -> Loss:
    """A :class:`Loss` for a part of ``parent``'s graph (its inputs and params kept)."""
    definition = parent.definition
    nodes = toposort([graph])
    used = {n.value for n in nodes if n.op == "input"}
    inputs = tuple(n for n in (*definition.inputs, *extra_inputs) if n in used)
    params = {n.value: definition.params[n.value] for n in nodes
              if n.op == "param" and n.value in definition.params}
    return Loss(LossDefinition(None, graph, inputs, params, "", definition.span,
                               definition.input_spans), parent.scope)


def _additive_terms(graph: Node) -> list[tuple[Node, bool]]:
    """The top-level terms of a sum (``a + b - c`` → a, b, c) with whether they are negated."""
    terms, stack = [], [(graph, False)]
    while stack:
        term, negated = stack.pop()
        if term.op in ("add", "sub"):
            stack.append((term.args[0], negated))
            stack.append((term.args[1], negated != (term.op == "sub")))
        elif term.op == "neg":
            stack.append((term.args[0], not negated))
        else:
            terms.append((term, negated))
    return terms


def _signed_sum(terms: list[tuple[Node, bool]]) -> Node | None:
    total: Node | None = None
    for term, negated in terms:
        if total is None:
            total = node("neg", (term,)) if negated else term
        else:
            total = node("sub" if negated else "add", (total, term))
    return total


@dataclass
class _Plan:
    """How a loss splits for chunked evaluation (for one set of chunked inputs).

    total = reduce_i P(x_i; S) + C(S), S_j = sum_i e_j(x_i) (or the mean).
    """

    per_sample: Loss | None          # P, with the S_j as scalar inputs
    scalar: Loss | None              # C, with the S_j as scalar inputs
    inner: list[tuple[Loss, bool]]   # sum(e_j) as a loss, and whether the source was a mean
    inner_names: list[str]


def _plan(loss: Loss, chunked: frozenset) -> _Plan:
    graph = loss.definition.graph
    targets = {id(n) for n in toposort([graph]) if n.op == "input" and n.value in chunked}
    depends = depends_on(graph, targets)
    inner_nodes: list[Node] = []
    for current in toposort([graph]):
        if current.op in ("sum", "mean") and depends[id(current)]:
            nested = [m for m in toposort([current.args[0]])
                      if m.op in ("sum", "mean") and depends[id(m)]]
            if nested:
                raise LossError("lossdsl.dask supports one level of reductions over the "
                                f"samples inside a loss; this one nests them: {current}")
            inner_nodes.append(current)
    names = [f"{_INNER}{j}" for j in range(len(inner_nodes))]
    replacement = {id(n): node("input", (), name) for n, name in zip(inner_nodes, names)}

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if id(old) in replacement:
            return replacement[id(old)]
        return old if args == old.args else node(old.op, args, old.value, old.axes)

    (outer,) = rebuild([graph], rule)
    outer_targets = {id(n) for n in toposort([outer]) if n.op == "input" and n.value in chunked}
    outer_depends = depends_on(outer, outer_targets)
    terms = _additive_terms(outer)
    varying = _signed_sum([t for t in terms if outer_depends[id(t[0])]])
    constant = _signed_sum([t for t in terms if not outer_depends[id(t[0])]])
    if constant is not None and constant.op == "const" and constant.value == 0.0:
        constant = None
    # Each inner reduction is compiled as the loss `sum(e_j)` itself, which keeps the
    # language's meaning of sum (a scalar term inside e_j counts once per sample).
    inner = [(_sub_loss(loss, node("sum", (n.args[0],))), n.op == "mean") for n in inner_nodes]
    return _Plan(_sub_loss(loss, varying, names) if varying is not None else None,
                 _sub_loss(loss, constant, names) if constant is not None else None,
                 inner, names)


class DaskLoss:
    """A loss evaluated over dask arrays chunk by chunk; methods mirror :class:`CompiledLoss`.

    The value is a lazy 0-d dask array (per-sample for ``reduction="none"``); gradients and
    Hessians are dask arrays chunked like their input.
    """

    def __init__(self, loss: str | Loss | CompiledLoss, reduction: str = "mean",
                 params: Mapping[str, float] | None = None, target: str | None = None):
        definition, compiled_params, compiled_target = as_loss(loss)
        if reduction not in ("mean", "sum", "none"):
            raise LossError(f"unknown reduction {reduction!r}; expected mean, sum or none")
        self.loss = definition
        self.reduction = reduction
        self.params = {**compiled_params, **dict(params or {})}
        # Dask already runs one task per core: serial kernels avoid oversubscription.
        self.target = target or compiled_target or "cpu"
        self._plans: dict[frozenset, _Plan] = {}
        self._compiled: dict[tuple[int, str], CompiledLoss] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_compiled"] = {}  # kernels hold locks: recompiled (from the disk cache) on arrival
        return state

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the loss's inputs."""
        return self.loss.inputs

    def __call__(self, sample_weight: Any = None, **inputs: Any) -> da.Array:
        """The loss value: a lazy 0-d dask array (per-sample values for ``"none"``)."""
        value, _, _ = self._evaluate(True, (), (), inputs, sample_weight)
        return value

    def grad(self, wrt: str | Iterable[str], sample_weight: Any = None,
             **inputs: Any) -> da.Array | dict[str, da.Array]:
        """Gradient(s) with respect to per-sample input(s), chunked like them."""
        names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        _, gradients, _ = self._evaluate(False, names, (), inputs, sample_weight)
        return gradients[names[0]] if isinstance(wrt, str) else gradients

    def value_and_grad(self, wrt: str | Iterable[str], sample_weight: Any = None,
                       **inputs: Any) -> tuple[da.Array, Any]:
        """``(value, gradient)`` (lazy)."""
        names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        value, gradients, _ = self._evaluate(True, names, (), inputs, sample_weight)
        return value, (gradients[names[0]] if isinstance(wrt, str) else gradients)

    def hessian(self, wrt: str, sample_weight: Any = None, **inputs: Any) -> da.Array:
        """The diagonal Hessian with respect to a per-sample input."""
        _, _, hessians = self._evaluate(False, (), (wrt,), inputs, sample_weight)
        return hessians[wrt]

    def grad_and_hessian(self, wrt: str, sample_weight: Any = None,
                         **inputs: Any) -> tuple[da.Array, da.Array]:
        """``(gradient, diagonal Hessian)`` from one kernel call per chunk."""
        _, gradients, hessians = self._evaluate(False, (wrt,), (wrt,), inputs, sample_weight)
        return gradients[wrt], hessians[wrt]

    # ------------------------------------------------------------------ internals
    def compiled(self, loss: Loss, reduction: str) -> CompiledLoss:
        """``loss`` compiled with this object's target and params (kept for reuse)."""
        key = (id(loss), reduction)
        if key not in self._compiled:
            params = {k: v for k, v in self.params.items() if k in loss.params}
            self._compiled[key] = loss.compile(self.target, reduction, params)
        return self._compiled[key]

    def _evaluate(self, want_value: bool, grads: tuple[str, ...], hessians: tuple[str, ...],
                  inputs: dict[str, Any], sample_weight: Any):
        run = _Run(self, inputs, sample_weight)
        for name in (*grads, *hessians):
            if name not in self.inputs:
                raise LossNameError(f"'{name}' is not an input of this loss", None,
                                    did_you_mean(name, self.inputs))
            if name not in run.chunked:
                raise LossError(f"lossdsl.dask differentiates inputs with one row per sample "
                                f"only; '{name}' is not one: differentiate its terms with "
                                "lossdsl.compile")
        key = frozenset(run.chunked)
        if key not in self._plans:
            self._plans[key] = _plan(self.loss, key)
        plan = self._plans[key]
        if plan.inner and hessians:
            raise LossError("the Hessian of a loss with reductions over the samples inside it "
                            "is not supported by lossdsl.dask (value and gradient are)")
        if sample_weight is not None and plan.per_sample is None:
            raise LossShapeError("sample_weight needs a loss with one value per sample; this "
                                 "loss is a single number (it reduces over samples itself)")
        inner = {name: run.inner_value(loss, is_mean)
                 for (loss, is_mean), name in zip(plan.inner, plan.inner_names)}
        value = run.value(plan, inner) if want_value else None
        gradients, hessian_out = run.derivatives(plan, inner, grads, hessians)
        return value, gradients, hessian_out


class _Run:
    """One evaluation: the inputs aligned on one chunking, and the dask graph built on them."""

    def __init__(self, owner: DaskLoss, inputs: dict[str, Any], sample_weight: Any):
        self.owner = owner
        for name in inputs:
            if name not in owner.inputs and name not in owner.params:
                raise LossNameError(f"'{name}' is not an input of this loss (inputs: "
                                    f"{', '.join(owner.inputs)})", None,
                                    did_you_mean(name, owner.inputs))
        missing = [n for n in owner.inputs if n not in inputs]
        if missing:
            raise LossNameError(f"missing input '{missing[0]}' (this loss takes "
                                f"{', '.join(owner.inputs)})")
        first = next((inputs[n] for n in owner.inputs if isinstance(inputs[n], da.Array)), None)
        if first is None:
            raise LossError("lossdsl.dask needs at least one dask array input")
        self.rows, row_chunks = first.shape[0], first.chunks[0]
        self.chunked: dict[str, da.Array] = {}
        self.whole: dict[str, Any] = {k: v for k, v in inputs.items() if k not in owner.inputs}
        for name in owner.inputs:
            value = inputs[name]
            if isinstance(value, da.Array):
                if value.ndim not in (1, 2) or value.shape[0] != self.rows:
                    raise LossShapeError(f"dask input '{name}' has shape {value.shape}; every "
                                         f"dask input needs the same {self.rows} rows")
                self.chunked[name] = value.rechunk((row_chunks,) + value.shape[1:])
            elif np.ndim(value) in (1, 2) and np.shape(value)[0] == self.rows:
                array = np.asarray(value)
                self.chunked[name] = da.from_array(array, chunks=(row_chunks,) + array.shape[1:])
            else:
                self.whole[name] = value
        self.weight: da.Array | None = None
        if sample_weight is not None:
            weight = sample_weight if isinstance(sample_weight, da.Array) else \
                da.from_array(np.asarray(sample_weight), chunks=(row_chunks,))
            if weight.ndim != 1 or weight.shape[0] != self.rows:
                raise LossShapeError(f"sample_weight has shape {weight.shape}, expected "
                                     f"({self.rows},)")
            self.weight = weight.rechunk((row_chunks,))

    # ------------------------------------------------------------------ dask plumbing
    def blockwise(self, function: Callable[..., np.ndarray], out_index: str, loss: Loss,
                  scalars: Mapping[str, da.Array], weighted: bool, **options: Any) -> da.Array:
        """``function(inputs, weight)`` on every chunk: ``inputs`` holds the chunk of each
        array input of ``loss``, the whole inputs and the scalars (0-d dask arrays)."""
        names = [n for n in loss.inputs if n in self.chunked]
        fixed = {n: v for n, v in self.whole.items() if n in loss.inputs or n in loss.params}
        scalar_names = [n for n in scalars if n in loss.inputs]
        arguments: list[Any] = []
        for name in names:
            arguments += [self.chunked[name], "i" if self.chunked[name].ndim == 1 else "ij"]
        if weighted:
            arguments += [self.weight, "i"]
        for name in scalar_names:
            arguments += [scalars[name], ""]

        def block(*blocks: np.ndarray) -> np.ndarray:
            values = dict(zip(names, blocks))
            rest = blocks[len(names):]
            weight = rest[0] if weighted else None
            values.update(zip(scalar_names, (float(v) for v in rest[int(weighted):])))
            return function({**fixed, **values}, weight)

        return da.blockwise(block, out_index, *arguments, dtype=np.float64, concatenate=True,
                            **options)

    def chunk_sums(self, function: Callable[..., float], loss: Loss,
                   scalars: Mapping[str, da.Array], weighted: bool) -> da.Array:
        """The sum over chunks of a per-chunk number (dask's tree reduction)."""
        per_chunk = self.blockwise(lambda inputs, weight: np.array([function(inputs, weight)]),
                                   "i", loss, scalars, weighted, adjust_chunks={"i": 1})
        return per_chunk.sum()

    def once(self, function: Callable[..., float], loss: Loss,
             scalars: Mapping[str, da.Array]) -> da.Array:
        """A number computed once from the whole inputs and the scalars (a 0-d dask array)."""
        fixed = {n: v for n, v in self.whole.items() if n in loss.inputs or n in loss.params}
        names = [n for n in scalars if n in loss.inputs]

        def evaluate(*values: np.ndarray) -> np.ndarray:
            return np.asarray(function({**fixed, **dict(zip(names, map(float, values)))}),
                              dtype=np.float64)

        return da.blockwise(evaluate, "", *[a for n in names for a in (scalars[n], "")],
                            dtype=np.float64)

    def count(self, loss: Loss, weighted: bool) -> Any:
        """What a mean divides by: rows (or the weight sum), times K for (N, K) values."""
        width = 1
        if len(self.value_axes(loss)) == 2:
            width = next(a.shape[1] for a in self.chunked.values() if a.ndim == 2)
        rows = self.weight.sum() if weighted else self.rows
        return rows * width

    def value_axes(self, loss: Loss) -> tuple[str, ...]:
        """The axes of ``loss``'s per-sample value: ("n0",) or ("n0", "n0k")."""
        ranks = {n: self.chunked[n].ndim if n in self.chunked else
                 int(np.ndim(self.whole[n])) if n in self.whole else 0 for n in loss.inputs}
        definition = loss.definition
        return shapes.specialize(definition.graph, ranks, definition.inputs,
                                 definition.input_spans).graph.axes or ()

    # ------------------------------------------------------------------ phases
    def inner_value(self, loss: Loss, is_mean: bool) -> da.Array:
        """``S_j`` over all chunks (a 0-d dask array)."""
        compiled = self.owner.compiled(loss, "sum")
        total = self.chunk_sums(lambda inputs, _w, _c=compiled: _c(**inputs), loss, {}, False)
        if is_mean:
            return total / self.count(_sub_loss(loss, loss.definition.graph.args[0]), False)
        return total

    def value(self, plan: _Plan, inner: dict[str, da.Array]) -> da.Array:
        """The loss value."""
        owner, weighted = self.owner, self.weight is not None
        if owner.reduction == "none":
            parts = [p.definition.graph for p in (plan.per_sample, plan.scalar) if p]
            outer = _sub_loss(owner.loss, parts[0] if len(parts) == 1 else
                              node("add", tuple(parts)), plan.inner_names)
            compiled = owner.compiled(outer, "none")
            matrix = len(self.value_axes(outer)) == 2
            return self.blockwise(lambda inputs, w, _c=compiled: _c(sample_weight=w, **inputs),
                                  "ij" if matrix else "i", outer, inner, weighted)
        total: Any = None
        if plan.per_sample is not None:
            compiled = owner.compiled(plan.per_sample, "sum")
            total = self.chunk_sums(lambda inputs, w, _c=compiled: _c(sample_weight=w, **inputs),
                                    plan.per_sample, inner, weighted)
            if owner.reduction == "mean":
                total = total / self.count(plan.per_sample, weighted)
        if plan.scalar is not None:
            scalar_loss = owner.compiled(plan.scalar, "sum")
            scalar = self.once(lambda inputs: scalar_loss(**inputs), plan.scalar, inner)
            total = scalar if total is None else total + scalar
        return total

    def derivatives(self, plan: _Plan, inner: dict[str, da.Array], grads: tuple[str, ...],
                    hessians: tuple[str, ...]) -> tuple[dict, dict]:
        """Gradients and Hessians, chunked like their inputs."""
        owner, weighted = self.owner, self.weight is not None
        pieces: dict[tuple[str, str], list[da.Array]] = {("g", n): [] for n in grads}
        pieces.update({("h", n): [] for n in hessians})
        scale: Any = 1.0
        if plan.per_sample is not None:
            if owner.reduction == "mean":
                scale = self.count(plan.per_sample, weighted)
            compiled = owner.compiled(plan.per_sample, "sum")
            for name in dict.fromkeys((*grads, *hessians)):
                if name not in plan.per_sample.inputs:
                    continue
                both = name in grads and name in hessians

                # Dask runs these later: bind loop variables now (default arguments).
                def block(inputs, w, _c=compiled, _name=name, _both=both,
                          _grad=name in grads):
                    if _both:
                        return np.stack(_c.grad_and_hessian(_name, sample_weight=w, **inputs))
                    if _grad:
                        return _c.grad(_name, sample_weight=w, **inputs)[None]
                    return _c.hessian(_name, sample_weight=w, **inputs)[None]

                index = "i" if self.chunked[name].ndim == 1 else "ij"
                stacked = self.blockwise(block, "s" + index, plan.per_sample, inner, weighted,
                                         new_axes={"s": 2 if both else 1})
                if name in grads:
                    pieces[("g", name)].append(stacked[0] / scale)
                if name in hessians:
                    pieces[("h", name)].append(stacked[-1] / scale)
        if plan.inner and grads:
            sensitivity = self.sensitivities(plan, inner, scale)
            for (loss, is_mean), inner_name in zip(plan.inner, plan.inner_names):
                compiled = owner.compiled(loss, "sum")
                divisor = (self.count(_sub_loss(loss, loss.definition.graph.args[0]), False)
                           if is_mean else 1.0)
                for name in grads:
                    if name not in loss.inputs:
                        continue
                    index = "i" if self.chunked[name].ndim == 1 else "ij"
                    gradient = self.blockwise(
                        lambda inputs, _w, _c=compiled, _n=name: _c.grad(_n, **inputs),
                        index, loss, {}, False)
                    pieces[("g", name)].append(gradient * (sensitivity[inner_name] / divisor))
        gradients: dict[str, da.Array] = {}
        hessian_out: dict[str, da.Array] = {}
        for (kind, name), parts in pieces.items():
            total = parts[0] if parts else da.zeros_like(self.chunked[name], dtype=np.float64)
            for part in parts[1:]:
                total = total + part
            (gradients if kind == "g" else hessian_out)[name] = total
        return gradients, hessian_out

    def sensitivities(self, plan: _Plan, inner: dict[str, da.Array],
                      scale: Any) -> dict[str, Any]:
        """``dT/dS_j``: the per-sample terms' (reduced over chunks) plus the scalar part's."""
        owner, weighted = self.owner, self.weight is not None
        result: dict[str, Any] = {name: 0.0 for name in plan.inner_names}
        if plan.scalar is not None:
            scalar_loss = owner.compiled(plan.scalar, "sum")
            for name in plan.inner_names:
                if name in plan.scalar.inputs:
                    result[name] = self.once(
                        lambda inputs, _c=scalar_loss, _n=name: _c.grad(_n, **inputs),
                        plan.scalar, inner)
        if plan.per_sample is not None:
            per_sample = owner.compiled(plan.per_sample, "sum")
            for name in plan.inner_names:
                if name in plan.per_sample.inputs:
                    total = self.chunk_sums(
                        lambda inputs, w, _c=per_sample, _n=name:
                            _c.grad(_n, sample_weight=w, **inputs),
                        plan.per_sample, inner, weighted)
                    result[name] = result[name] + total / scale
        return result


def compile(loss: str | Loss | CompiledLoss, reduction: str = "mean",  # noqa: A001
            params: Mapping[str, float] | None = None, target: str | None = None) -> DaskLoss:
    """A :class:`DaskLoss`: :func:`lossdsl.compile` for dask arrays.

    ``target`` is the kernel target inside each task: ``"cpu"`` by default, because dask
    already runs chunks in parallel.
    """
    return DaskLoss(loss, reduction, params, target)
