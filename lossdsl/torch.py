"""Compiled losses as PyTorch loss modules, with forward and backward from the fused kernel.

    import lossdsl.torch

    criterion = lossdsl.torch.loss("huber(y, p, 1.0) + 0.1*l1(w)")
    value = criterion(y=targets, p=model(x), w=model.weight.flatten())
    value.backward()

With ``reduction="mean"`` or ``"sum"`` (the usual training case) one kernel call in the
forward pass computes the value and the gradients of every input that requires grad; the
backward pass only scales them by the incoming gradient. CPU tensors are handed to the
kernel as zero-copy NumPy views (float32 stays float32) and the gradients come back as
tensors sharing the kernel's output memory. CUDA tensors go to a loss compiled for the CUDA
target (through ``__cuda_array_interface__``) when that target is available.

With ``reduction="none"`` the forward pass returns per-sample values and the backward pass
runs one gradient kernel with the incoming per-sample gradients as sample weights (the
vector-Jacobian product of a per-sample loss, exact also where the samples are coupled), so
it needs no second-order autograd either. A batch term (a regulariser such as
``0.1*l2(w)``), which every sample's value carries, counts as many times as the incoming
gradients sum to; a loss that is one number for the whole batch (``dice``) returns a 0-d
tensor whose gradient is scaled. A loss with one value per sample and class (``bce_logits``
on (N, K) multi-label rows) takes (N, K) incoming gradients, entry by entry where each value
depends on its own entry of the input alone, and otherwise (a row reduction couples them:
``-y * log_softmax(z)``) through the gradient of the loss times them, summed (a second
kernel, compiled when first needed). A batch of incoming gradients
(``autograd.grad(..., is_grads_batched=True)``,
``autograd.functional.jacobian(..., vectorize=True)``) runs one such backward pass per row,
for every reduction.

Second derivatives (``torch.autograd.grad(..., create_graph=True)`` followed by a backward
pass through the gradient: gradient penalties, Hessian-vector products, ``gradgradcheck``)
go through the symbolic diagonal Hessian. That is the whole Hessian where the loss is
elementwise in the input (each entry of the gradient depends on the same entry of the input
only: ``huber``, ``bce_logits``, ``quantile``, regularisers such as ``l1(w)``); where entries
are coupled (a softmax over classes, a batch-level sum such as Dice) or a mixed derivative
of two inputs would be needed, the second backward pass raises :class:`lossdsl.LossError`
instead of returning a partial Hessian; so does a second derivative (or a jvp) of
``reduction="none"`` with a batch term, or with entries a row reduction couples. Third
derivatives are not available.

``torch.func`` transforms take the loss too: ``grad``, ``vjp``, ``jacrev`` (twice, for a
Hessian as above) and ``vmap``, which runs one kernel call per slice (each slice a loss of
its own), so that ``vmap(grad(...))`` gives per-sample gradients. Forward mode takes it
too (``jvp``, ``jacfwd``, and ``torch.func.hessian``, which is ``jacfwd(jacrev(f))``): a
tangent meets the gradient (and the gradient's tangent the diagonal Hessian, where that is
the whole second derivative, as for double backward).

``ignore_index=-100`` drops the samples with that label as ``F.cross_entropy`` does (out
of the mean's denominator, zero value and gradients) in every one of these passes.

Params are overridden per call (``criterion(y=y, p=p, delta=2.0)``) without rebuilding
anything: the kernels take params as arguments. Results follow PyTorch's type promotion
(a float32 prediction with a float64 target gives a float64 loss); each gradient has its
input's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .api import CompiledLoss, Loss
from .backward import (
    SecondOrder,
    check_per_entry,
    check_per_sample,
    entries_apart,
    has_batch_term,
    reads_other_samples,
    second_order,
    upstream_weighted,
    vector_jacobian,
)
from .binding import coerce_loss, param_value
from .errors import LossError, LossNameError, did_you_mean, not_a_param_hint
from .roles import positional_inputs

__all__ = ["TorchLoss", "loss"]


# Computed in float32, as PyTorch computes them on the CPU; results are rounded back.
_HALF_DTYPES = (torch.float16, torch.bfloat16)
# Result dtypes NumPy has, as NumPy's (the value's 0-d tensor is made through NumPy)
_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def _as_array(value: Any) -> Any:
    """A kernel argument: a NumPy view of a CPU tensor (a float32 copy of a half-precision
    one: NumPy has no bfloat16), the tensor itself on CUDA."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_cuda:
            return value
        if value.is_meta or value.layout != torch.strided:
            raise LossError("lossdsl.torch computes on dense CPU or CUDA tensors, not a "
                            + ("meta tensor, which has no values to compute on" if value.is_meta
                               else f"{value.layout} tensor: pass it .to_dense()"))
        if value.dtype in _HALF_DTYPES:
            value = value.float()
        return value.numpy() if value.dim() else value.item()
    return value


def _to_tensor(value: Any, device: torch.device) -> torch.Tensor:
    """A kernel result as a tensor: NumPy arrays without a copy, floats as float64 0-d
    tensors, CUDA arrays through ``__cuda_array_interface__``."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64, device=device)
    return torch.as_tensor(value, device=device)


def _in_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` converted to ``dtype`` where it is of another."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _value_tensor(value: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The loss's value as a tensor of the result's ``dtype`` (rounded once from the
    kernel's float64 sum, as ``.to(dtype)`` rounds it)."""
    if isinstance(value, float) and device.type == "cpu" and dtype in _NUMPY_FLOATS:
        # a 0-d NumPy array wrapped: about a microsecond, where torch.tensor(...).to(...)
        # takes several on a minibatch step
        return torch.from_numpy(np.array(value, dtype=_NUMPY_FLOATS[dtype]))
    return _to_tensor(value, device).to(dtype)


def result_dtype(tensors: list[Any]) -> torch.dtype:
    """The dtype PyTorch gives an operation on ``tensors`` (:func:`torch.result_type`):
    the floating dtypes of the tensors with dimensions promoted
    (:func:`torch.promote_types`: float32 with float64 is float64, float16 with bfloat16 is
    float32); 0-d tensors count only when no tensor with dimensions is floating-point."""
    floating = [t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floating:
        raise LossError("lossdsl.torch losses need at least one floating-point tensor input")
    dimensioned = [t.dtype for t in floating if t.dim() > 0]
    return functools.reduce(torch.promote_types, dimensioned or [t.dtype for t in floating])


@dataclass(frozen=True)
class _Call:
    """What one call binds besides its tensors: input names, per-call param values, the
    result dtype and whether the tensors are on a CUDA device."""

    names: tuple[str, ...]
    params: dict[str, float]
    dtype: torch.dtype
    device: torch.device
    #: every input a CPU tensor, the floating-point ones (with dimensions) all of ``dtype``
    #: (see TorchLoss._usual_call): each gradient is wanted in ``dtype``, the result's
    usual: bool = False


def _saved_inputs(ctx: Any, tensors: tuple[Any, ...], weight: Any,
                  all_tensors: bool = False) -> None:
    """Keep the inputs and the sample weights for a later backward: tensors through
    autograd's ``save_for_backward``, which also catches in-place changes made after the
    forward (``all_tensors``: every input is one, the usual call)."""
    ctx.kinds = None if all_tensors else tuple(isinstance(t, torch.Tensor) for t in tensors)
    ctx.others = () if all_tensors else [t for t in tensors if not isinstance(t, torch.Tensor)]
    ctx.weight_saved = isinstance(weight, torch.Tensor)
    ctx.weight_value = None if ctx.weight_saved else weight
    saved = tensors if all_tensors else [t for t in tensors if isinstance(t, torch.Tensor)]
    saved = (*saved, *((weight,) if ctx.weight_saved else ()))
    ctx.save_for_backward(*saved)
    if _forward_mode_possible():  # read back the same way by a jvp
        ctx.save_for_forward(*saved)


def _forward_mode_possible() -> bool:
    """Whether a jvp may follow this call: under a ``torch.func`` transform, or inside a
    forward-mode autograd level (saving for it costs a training step's call microseconds)."""
    return (torch._C._are_functorch_transforms_active()
            or torch.autograd.forward_ad._current_level >= 0)


def _restored_inputs(ctx: Any) -> list[Any]:
    saved = ctx.saved_tensors
    if ctx.weight_saved:
        saved = saved[:-1]
    if ctx.kinds is None:  # the usual call's: every input a tensor
        return list(saved)
    tensors, others = iter(saved), iter(ctx.others)
    return [next(tensors) if kind else next(others) for kind in ctx.kinds]


def _restored_weight(ctx: Any) -> Any:
    """The sample weights given to the forward (a tensor read through autograd's saved
    tensors, so that an in-place change since raises), or None."""
    return ctx.saved_tensors[-1] if ctx.weight_saved else ctx.weight_value


def _kernel_arrays(ctx: Any) -> dict[str, Any]:
    """The saved inputs as kernel arguments, by name (made when a backward pass outside
    ``torch.func`` transforms needs them: the usual one, scaling the forward's gradients,
    does not)."""
    arrays = ctx.arrays
    if arrays is None:
        arrays = ctx.arrays = {name: _as_array(t)
                               for name, t in zip(ctx.call.names, _restored_inputs(ctx))}
    return arrays


def _wanted_gradients(names: tuple[str, ...], tensors: list[Any]) -> tuple[str, ...]:
    """The inputs whose gradients the forward pass computes: those autograd (or a
    ``torch.func`` transform) will ask for."""
    if not torch.is_grad_enabled():
        return ()
    return tuple(name for name, t in zip(names, tensors)
                 if isinstance(t, torch.Tensor) and t.requires_grad)


def _slices(info: Any, in_dims: tuple[Any, ...], args: tuple[Any, ...]) -> list[tuple]:
    """The arguments of each call a ``torch.vmap`` over ``args`` stands for: every batched
    tensor read at one index of its batch dimension."""
    return [tuple(a.select(d, b) if isinstance(d, int) else a for a, d in zip(args, in_dims))
            for b in range(info.batch_size)]


def _stacked(results: list[Any]) -> tuple[Any, Any]:
    """The per-slice results of a ``vmap`` rule, stacked along a new first dimension."""
    if isinstance(results[0], tuple):
        stacked = tuple(torch.stack(parts) for parts in zip(*results))
        return stacked, (0,) * len(stacked)
    return torch.stack(results), 0


class _Transformable(torch.autograd.Function):
    """A Function that ``torch.func`` transforms take: written with ``setup_context``,
    differentiated in reverse mode and in forward mode (``jvp``: a product of the tangents
    with the next derivative), and batched by ``vmap`` one call per slice.
    :func:`_with_eager_twin` gives each subclass its ``eager`` twin."""

    eager: type[torch.autograd.Function]

    @classmethod
    def vmap(cls, info: Any, in_dims: tuple[Any, ...], *args: Any) -> tuple[Any, Any]:
        return _stacked([_apply(cls, *sliced) for sliced in _slices(info, in_dims, args)])


def _with_eager_twin(transformable: type[_Transformable]) -> type[_Transformable]:
    """``transformable``, its ``eager`` twin set: the same Function written the older way
    (a forward that takes ``ctx``), for calls outside ``torch.func`` transforms. PyTorch
    binds the arguments of a forward written with ``setup_context`` through
    ``inspect.signature`` on every call, which more than doubled the cost of a minibatch
    step's loss (one kernel call of about ten microseconds)."""

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *inputs: Any) -> Any:
            output = transformable.forward(*inputs)
            ctx.eager = True  # the gradients stay on ctx, not outputs autograd tracks
            transformable.setup_context(ctx, inputs, output)
            return output[0] if isinstance(output, tuple) else output

        backward = staticmethod(transformable.backward)
        jvp = staticmethod(transformable.jvp)  # torch.autograd.forward_ad

    Eager.__name__ = Eager.__qualname__ = f"{transformable.__name__}Eager"
    transformable.eager = Eager
    return transformable


def _computed(transformable: type[_Transformable], *args: Any) -> Any:
    """``transformable``'s output as a constant of the pass that asks for it (a jvp): through
    the Function under ``torch.func`` transforms, whose wrapped tensors the kernels cannot
    read; its forward alone otherwise, as forward-mode autograd cannot nest a Function."""
    if torch._C._are_functorch_transforms_active():
        return _apply(transformable, *args)
    return transformable.forward(*args)


def _apply(transformable: type[_Transformable], *args: Any) -> Any:
    """The first output of ``transformable.apply(*args)``, through its eager twin where no
    ``torch.func`` transform is active."""
    if torch._C._are_functorch_transforms_active():
        output = transformable.apply(*args)
        return output[0] if isinstance(output, tuple) else output
    return transformable.eager.apply(*args)


@_with_eager_twin
class _FusedLoss(_Transformable):
    """forward: value (and gradients, for mean/sum) in one kernel call; backward: scaling,
    or (create_graph=True) gradients autograd can differentiate once more.

    Written with ``setup_context`` and a ``vmap`` rule, so that ``torch.func`` transforms
    (``grad``, ``vjp``, ``jacrev``, ``vmap``: per-sample gradients) take the loss too. The
    forward returns the value and then the gradients of ``wrt`` (not differentiable:
    outputs only so that the backward pass can scale them)."""

    @staticmethod
    def forward(module: TorchLoss, call: _Call, sample_weight: Any, wrt: tuple[str, ...],
                *tensors: Any) -> tuple[torch.Tensor, ...]:
        compiled = module._compiled(call.device.type == "cuda")
        arrays = {name: _as_array(t) for name, t in zip(call.names, tensors)}
        weight = _as_array(sample_weight)
        if compiled.reduction == "none" or not wrt:
            value = compiled(sample_weight=weight, **arrays, **call.params)
            return (_value_tensor(value, call.device, call.dtype),)
        value, gradients = compiled.value_and_grad(wrt, sample_weight=weight, **arrays,
                                                   **call.params)
        return (_value_tensor(value, call.device, call.dtype),
                *(_to_tensor(gradients[name], call.device) for name in wrt))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]
                      ) -> None:
        module, call, sample_weight, wrt, *tensors = inputs
        ctx.module, ctx.call, ctx.wrt, ctx.arrays = module, call, wrt, None
        ctx.weighted = sample_weight is not None
        if call.usual:  # every input a tensor, each gradient wanted in the call's dtype
            ctx.dtypes = None
        else:
            ctx.dtypes = {name: t.dtype for name, t in zip(call.names, tensors)
                          if isinstance(t, torch.Tensor)}
        _saved_inputs(ctx, tuple(tensors), sample_weight, all_tensors=call.usual)
        gradients = output[1:]
        ctx.value_dim = output[0].dim()  # reduction="none": (N,), or (N, K) per entry
        ctx.set_materialize_grads(False)  # a jvp sees None for the inputs with no tangent
        ctx.gradients = dict(zip(wrt, gradients))
        if gradients and not getattr(ctx, "eager", False):
            ctx.mark_non_differentiable(*gradients)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor | None, *_: Any) -> tuple[Any, ...]:
        if grad_output is None:  # not materialised (see setup_context): nothing flows back
            return (None,) * (4 + len(ctx.call.names))
        module = ctx.module
        if torch.is_grad_enabled():  # create_graph=True: differentiable gradients
            gradients = module._differentiable_gradients(ctx, grad_output)
        elif module.reduction == "none":
            ctx.saved_tensors  # noqa: B018 -- raises if an input was changed in place since
            gradients = _each_cotangent(module._vector_jacobian, ctx, grad_output)
        else:
            gradients = {name: grad_output * g for name, g in ctx.gradients.items()}
        # Gradients take their input's dtype (a float32 input met by float64 ones is
        # differentiated in float64, as the kernel computes); the usual call's inputs are
        # all of the call's dtype.
        dtypes, dtype = ctx.dtypes, ctx.call.dtype
        return (None, None, None, None,
                *(None if name not in gradients
                  else _in_dtype(gradients[name], dtype if dtypes is None else dtypes[name])
                  for name in ctx.call.names))

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> tuple[Any, ...]:
        # the value's directional derivative: its gradients (computed now: the forward
        # pass computes those autograd asks for, and a tangent asks for none) times the
        # tangents; the gradient outputs are not differentiable
        moving = {name: t for name, t in zip(ctx.call.names, tangents[4:]) if t is not None}
        value = ctx.module._value_tangent(ctx, moving)
        return (value, *(None for _ in ctx.gradients))

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], *args: Any) -> tuple[Any, Any]:
        # One kernel call per slice: each is a loss of its own (its own mean). A batched
        # tensor reports no requires_grad, so wrt was chosen blind to a backward pass
        # outside the vmap (vmap(loss)(...).backward(), grad(vmap(loss))): each slice, a
        # tensor of the level below, asks for the gradients it needs; the rule returns
        # those of wrt, the outputs the forward promised.
        wrt = args[3]
        results = []
        for module, call, weight, _, *tensors in _slices(info, in_dims, args):
            wanted = tuple(dict.fromkeys(wrt + _wanted_gradients(call.names, tensors)))
            value, *gradients = _FusedLoss.apply(module, call, weight, wanted, *tensors)
            found = dict(zip(wanted, gradients))
            results.append((value, *(found[name] for name in wrt if name in found)))
        return _stacked(results)


@dataclass(frozen=True)
class _GradientSpec:
    """One gradient ``dL/d name`` of ``compiled``, as :class:`_Gradient` computes it."""

    compiled: CompiledLoss
    name: str
    call: _Call


@_with_eager_twin
class _Gradient(_Transformable):
    """The gradient ``G = dL/dx`` as a function of the inputs; its backward is
    ``u * diag(Hessian)``, checked to be the whole second derivative first. ``computed``
    is the gradient when the forward pass already has it (else None); ``weight`` the
    sample weights (never differentiated)."""

    @staticmethod
    def forward(module: TorchLoss, spec: _GradientSpec, computed: torch.Tensor | None,
                weight: Any, *tensors: Any) -> torch.Tensor:
        if computed is not None:
            return computed.clone()
        arrays = {name: _as_array(t) for name, t in zip(spec.call.names, tensors)}
        gradient = spec.compiled.grad(spec.name, sample_weight=_as_array(weight), **arrays,
                                      **spec.call.params)
        return _to_tensor(gradient, spec.call.device)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        module, spec, _, weight, *tensors = inputs
        ctx.module, ctx.spec = module, spec
        ctx.set_materialize_grads(False)  # a jvp sees None for the inputs with no tangent
        ctx.weighted = weight is not None
        _saved_inputs(ctx, tuple(tensors), weight)
        ctx.dtypes = {name: t.dtype for name, t in zip(spec.call.names, tensors)
                      if isinstance(t, torch.Tensor)}

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor | None) -> tuple[Any, ...]:
        spec = ctx.spec
        if upstream is None:  # not materialised (see setup_context): nothing flows back
            return (None,) * (4 + len(spec.call.names))
        wanted = tuple(name for name, needs in zip(spec.call.names, ctx.needs_input_grad[4:])
                       if needs)
        tensors = _second_order_inputs(ctx, wanted)
        gradients = {}
        if spec.name in wanted:
            # through a Function: the kernel reads plain tensors under torch.func transforms
            hessian = _apply(_Hessian, spec, _restored_weight(ctx), *tensors)
            gradients[spec.name] = upstream * hessian
        return (None, None, None, None,
                *(gradients[name].to(ctx.dtypes[name]) if name in gradients else None
                  for name in spec.call.names))

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> torch.Tensor:
        # dG/dx times the tangent of x: the diagonal Hessian, where it is the whole second
        # derivative (as the backward pass checks); a tangent of another input would need a
        # mixed second derivative, which the check refuses
        spec = ctx.spec
        moving = tuple(name for name, t in zip(spec.call.names, tangents[4:]) if t is not None)
        tensors = _second_order_inputs(ctx, moving)
        if spec.name not in moving:
            return torch.zeros_like(tensors[spec.call.names.index(spec.name)])
        hessian = _computed(_Hessian, spec, _restored_weight(ctx), *tensors)
        return hessian * tangents[4 + spec.call.names.index(spec.name)]


def _second_order_inputs(ctx: Any, differentiated: tuple[str, ...]) -> list[Any]:
    """The inputs a :class:`_Gradient` saved, once the derivative of its gradient with
    respect to ``differentiated`` (a backward's wanted inputs, a jvp's moving ones) is
    checked to be the diagonal Hessian alone."""
    spec, module = ctx.spec, ctx.module
    tensors = _restored_inputs(ctx)
    module._check_second_order(spec.compiled, spec.name,
                               module._ranks(dict(zip(spec.call.names, tensors))),
                               ctx.weighted, differentiated)
    return tensors


@_with_eager_twin
class _Hessian(_Transformable):
    """The diagonal Hessian ``d2L/dx2`` as a function of the inputs that cannot be
    differentiated: its backward pass (a third derivative) raises."""

    @staticmethod
    def forward(spec: _GradientSpec, weight: Any, *tensors: Any) -> torch.Tensor:
        arrays = {name: _as_array(t) for name, t in zip(spec.call.names, tensors)}
        hessian = spec.compiled.hessian(spec.name, sample_weight=_as_array(weight), **arrays,
                                        **spec.call.params)
        return _to_tensor(hessian, spec.call.device)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[Any, ...]:
        _third_derivative()

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        _third_derivative()


def _third_derivative() -> None:
    raise LossError("lossdsl.torch differentiates a loss twice at most (its second derivative "
                    "is the symbolic Hessian): a third derivative was asked for")


def _each_cotangent(vector_jacobian: Any, ctx: Any, grad_output: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    """``vector_jacobian(ctx, grad_output)``, also for a batch of incoming gradients:
    ``autograd.grad(..., is_grads_batched=True)`` (and ``autograd.functional.jacobian(...,
    vectorize=True)``) runs the backward pass once under autograd's own vmap, with a batched
    tensor the kernels cannot read. Its rows are taken out of the batch, each goes through
    the kernels as an unbatched backward pass would, and the results go back into it."""
    if not torch._C._functorch.is_legacy_batchedtensor(grad_output):
        return vector_jacobian(ctx, grad_output)
    # the batch's level is the innermost one of autograd's vmap: the level a new one would
    # get, less one (the batch size is read from the tensor where it is batched at it)
    level = torch._C._vmapmode_increment_nesting() - 1
    torch._C._vmapmode_decrement_nesting()
    rows = torch._remove_batch_dim(grad_output, level, 1, 0)
    if torch._C._functorch.is_legacy_batchedtensor(rows):
        raise LossError("the backward pass of reduction='none' takes one batch of incoming "
                        "gradients (autograd.grad(..., is_grads_batched=True)), not a batch "
                        "of batches: loop over the outer one")
    gradients = [vector_jacobian(ctx, row) for row in rows]
    return {name: torch._add_batch_dim(torch.stack([g[name] for g in gradients]), 0, level)
            for name in gradients[0]} if gradients else {}


class TorchLoss(torch.nn.Module):
    """A compiled lossdsl loss as a ``torch.nn.Module``: call it with tensors, get a tensor.

    Inputs are passed by keyword (``criterion(y=targets, p=logits)``) or, as ``torch.nn``
    losses take them, positionally as ``(input, target)``: the prediction first, then the
    target (the input named like a label: ``y``, ``target``, ``label``, ...). Other inputs,
    ``sample_weight=`` and param overrides are keywords. Positional arguments whose roles
    cannot be told from the names are refused, never guessed. Gradients flow to every
    floating-point input that requires grad, and once more (``create_graph=True``) where the
    loss is elementwise in that input (see the module's documentation).

    ``ignore_index`` (PyTorch's ``F.cross_entropy(..., ignore_index=-100)``): an integer
    label value whose samples count for nothing: their value (``reduction="none"``) and
    gradients are 0 and they leave the mean's denominator, in every pass (backward,
    ``create_graph=True``, forward mode, ``vmap``) and on CUDA too. A mean over a batch whose
    every label is ignored raises :class:`lossdsl.LossError` (PyTorch returns nan); other
    labels out of range still raise. A :class:`~lossdsl.CompiledLoss` compiled with an
    ignore_index carries it over.
    """

    def __init__(self, loss: str | Loss | CompiledLoss, reduction: str = "mean",
                 params: Mapping[str, float] | None = None, target: str = "parallel",
                 ignore_index: int | None = None):
        super().__init__()
        text = loss if isinstance(loss, str) else None
        if isinstance(loss, CompiledLoss):
            ignore_index = _carried_ignore_index(loss.ignore_index, ignore_index)
            params = {**loss.params, **dict(params or {})}
            loss = loss.loss
        if isinstance(loss, str):
            loss, _, _ = coerce_loss(loss)
        if target == "cuda":
            raise LossError("target is the CPU kernel's ('cpu' or 'parallel'); CUDA tensors "
                            "use the CUDA target automatically")
        self.definition = loss
        self.reduction = reduction
        self.params = dict(params or {})
        self.target = target
        # checked (an integer, a loss that reads labels) by the compile, which every kernel
        # this module compiles gets: the forward loss, the summed loss of reduction="none"'s
        # backward pass, the upstream-weighted one and (through those) the gradients and
        # diagonal Hessians of create_graph=True, forward mode and vmap
        self._cpu = loss.compile(target, reduction, self.params, ignore_index)
        self.ignore_index: int | None = self._cpu.ignore_index
        self._cuda: CompiledLoss | None = None
        self._summed: dict[bool, CompiledLoss] = {}
        self._weighted: dict[bool, CompiledLoss] = {}
        self._second: dict[tuple, SecondOrder] = {}
        self._other_samples: dict[tuple, bool] = {}  # see _check_rows_per_sample
        self._batch_terms: dict[tuple, bool] = {}
        # forward's fast path: per call form (positional count, keyword names), where each
        # input comes from (a position or a keyword); per dtype, the usual call's _Call
        self._slots: dict[tuple, tuple[int | str, ...]] = {}
        self._calls: dict[torch.dtype, _Call] = {}
        self.formula = _formula(loss, text)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the loss's inputs, in the order positional arguments take them."""
        return self._cpu.inputs

    def extra_repr(self) -> str:
        """The formula, reduction, target, params and ignore_index (where set), shown by
        ``repr(criterion)``."""
        parts = [self.formula, f"reduction={self.reduction!r}", f"target={self.target!r}"]
        if self.params:
            parts.append(f"params={self.params!r}")
        if self.ignore_index is not None:
            parts.append(f"ignore_index={self.ignore_index}")
        return ", ".join(parts)

    def positional_inputs(self, args: tuple[Any, ...], keywords: Mapping[str, Any]
                          ) -> tuple[str, ...]:
        """The inputs that positional ``args`` stand for, PyTorch's way: ``(input, target)``,
        the prediction first. The target is the one input left without a keyword that is
        named like a label; the prediction the only other one left."""
        return positional_inputs(self.inputs, keywords, len(args), target_first=False,
                                 convention="(input, target), as torch.nn losses take them",
                                 call="criterion")

    def _compiled(self, cuda: bool) -> CompiledLoss:
        if not cuda:
            return self._cpu
        if self._cuda is None:
            self._cuda = self.definition.compile("cuda", self.reduction, self.params,
                                                 self.ignore_index)
        return self._cuda

    def _summed_loss(self, cuda: bool) -> CompiledLoss:
        """The loss with reduction "sum": the backward pass of reduction "none"."""
        summed = self._summed.get(cuda)
        if summed is None:
            summed = self.definition.compile("cuda" if cuda else self.target, "sum", self.params,
                                             self.ignore_index)
            self._summed[cuda] = summed
        return summed

    def _upstream_weighted(self, cuda: bool) -> CompiledLoss:
        """The loss times the incoming gradients, reduction "sum"
        (:func:`lossdsl.backward.upstream_weighted`): the backward pass of reduction "none"
        for values per sample and class that a row reduction couples."""
        weighted = self._weighted.get(cuda)
        if weighted is None:
            weighted = upstream_weighted(self.definition).compile(
                "cuda" if cuda else self.target, "sum", self.params, self.ignore_index)
            self._weighted[cuda] = weighted
        return weighted

    def _param(self, name: str, value: Any) -> float:
        """A param given per call, as the float the kernels take."""
        if name not in self._cpu.params:
            raise LossNameError(f"'{name}' is not an input or param of this loss (inputs: "
                                f"{', '.join(self.inputs)})", None,
                                did_you_mean(name, list(self.inputs) + list(self._cpu.params))
                                or not_a_param_hint(name))
        if isinstance(value, torch.Tensor):
            if value.requires_grad:
                raise LossError(f"param '{name}' is a constant of the loss: lossdsl does not "
                                f"differentiate with respect to params; to learn it, make it "
                                f"an input of the loss (or pass {name}.detach())")
            if value.numel() != 1:
                raise LossError(f"param '{name}' must be a single number, got a tensor of "
                                f"shape {tuple(value.shape)}")
            value = value.item()
        return param_value(name, value)

    def forward(self, *args: Any, sample_weight: Any = None, **inputs: Any) -> torch.Tensor:
        """The loss of the given tensors (a 0-d tensor, or per-sample for ``"none"``)."""
        if torch.compiler.is_compiling():
            # under torch.compile the call runs as it is (a graph break): Dynamo cannot trace
            # the Numba kernels (tracing into their dispatcher failed: RecursionError). The
            # eager call skips the wrapper, which costs about 7 us
            return self._outside_the_graph(*args, sample_weight=sample_weight, **inputs)
        return self._forward(*args, sample_weight=sample_weight, **inputs)

    @torch.compiler.disable
    def _outside_the_graph(self, *args: Any, sample_weight: Any = None,
                           **inputs: Any) -> torch.Tensor:
        return self._forward(*args, sample_weight=sample_weight, **inputs)

    def _forward(self, *args: Any, sample_weight: Any = None, **inputs: Any) -> torch.Tensor:
        if getattr(sample_weight, "requires_grad", False):
            # the kernels give no derivative in the weights: refused, not a silent None
            raise LossError("lossdsl.torch does not differentiate a loss with respect to "
                            "sample_weight: pass sample_weight.detach(), or write the weight "
                            "into the loss as an input (w*bce_logits(y, z)), which it does "
                            "differentiate")
        form = (len(args), tuple(inputs))
        slots = self._slots.get(form)
        if slots is not None:  # a call of a form met before (see _usual_call)
            tensors = [args[slot] if type(slot) is int else inputs[slot] for slot in slots]
            call = self._usual_call(tensors)
            if call is not None:
                return _apply(_FusedLoss, self, call, sample_weight,
                              _wanted_gradients(call.names, tensors), *tensors)
        positions = self.positional_inputs(args, inputs)
        for name, value in zip(positions, args):
            if name in inputs:
                raise LossError(f"input '{name}' given both positionally and by keyword")
            inputs[name] = value
        overrides = {k: self._param(k, v) for k, v in inputs.items() if k not in self.inputs}
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise LossNameError(f"missing input '{missing[0]}' (this loss takes "
                                f"{', '.join(self.inputs)})")
        names = self.inputs
        tensors = [inputs[name] for name in names]
        dtype = result_dtype(tensors)
        device = next((t.device for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda),
                      torch.device("cpu"))
        if not overrides:
            self._slots[form] = tuple(name if name in form[1] else positions.index(name)
                                      for name in names)
        return _apply(_FusedLoss, self, _Call(names, overrides, dtype, device), sample_weight,
                      _wanted_gradients(names, tensors), *tensors)

    def _usual_call(self, tensors: list[Any]) -> _Call | None:
        """The :class:`_Call` of the usual training step, kept per dtype: CPU tensors whose
        floating-point ones (with dimensions) share one dtype, no param override. None for
        anything else, which the general path of :meth:`forward` binds (a minibatch step
        spends several microseconds there, against a kernel call of about ten)."""
        dtype = None
        for tensor in tensors:
            if not isinstance(tensor, torch.Tensor) or tensor.is_cuda:
                return None
            if tensor.is_floating_point():
                if tensor.dim() == 0 or (dtype is not None and tensor.dtype != dtype):
                    return None
                dtype = tensor.dtype
        if dtype is None:
            return None
        call = self._calls.get(dtype)
        if call is None:
            call = self._calls[dtype] = _Call(self.inputs, {}, dtype, torch.device("cpu"),
                                              usual=True)
        return call

    # ------------------------------------------------------------------ reduction="none"
    def _vector_jacobian(self, ctx: Any, grad_output: torch.Tensor) -> dict[str, torch.Tensor]:
        """d(sum_i v_i l_i)/dx for v = grad_output (:func:`lossdsl.backward.vector_jacobian`):
        one gradient kernel call with v as sample weights (two where a batch term's share
        needs its own; v times the gradient for a loss that is one number). For one value
        per sample and class, v times the gradient entry by entry where each value depends
        on its own entry alone, else the gradient of the loss times v as an input."""
        if not ctx.wrt:
            return {}
        cuda = grad_output.is_cuda
        summed = self._summed_loss(cuda)
        arrays = _kernel_arrays(ctx)
        ranks = self._ranks(arrays)
        weighted = None  # one value per sample and class, coupled within a row: u an input
        if grad_output.dim() == 2 and not all(
                entries_apart(self._second_order(summed, name, ranks, ctx.weighted))
                for name in ctx.wrt):
            weighted = self._upstream_weighted(cuda)
        device = ctx.call.device
        weight = _restored_weight(ctx)
        if weight is not None:
            weight = torch.as_tensor(weight, device=device).detach()
        v = grad_output.detach()
        if v.dtype in _HALF_DTYPES:  # times the weights in float32, which the kernels read
            v = v.float()
        return vector_jacobian(summed, ctx.wrt, v, weight, arrays, ctx.call.params,
                               self._batch_term(summed, ranks),
                               kernel_array=_as_array,
                               result=functools.partial(_to_tensor, device=device),
                               weighted=weighted)

    def _batch_term(self, summed: CompiledLoss, ranks: dict[str, int]) -> bool:
        """:func:`lossdsl.backward.has_batch_term`, kept per ranks."""
        key = (id(summed), tuple(sorted(ranks.items())))
        found = self._batch_terms.get(key)
        if found is None:
            found = self._batch_terms[key] = has_batch_term(summed, ranks)
        return found

    # ------------------------------------------------------------------ forward mode
    def _value_tangent(self, ctx: Any, moving: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The value's tangent for the inputs' ``moving`` tangents: sum_x <dL/dx, t_x>, and
        for reduction="none" each sample's own sum, where its value depends on its own rows
        alone (as the backward pass of reduction="none" requires; refused otherwise). The
        gradients come through :class:`_Gradient`: under ``torch.func`` transforms the
        saved inputs are wrapped tensors the kernels cannot read."""
        tensors = _restored_inputs(ctx)
        weight = _restored_weight(ctx)
        call = ctx.call
        cuda = call.device.type == "cuda"
        if self.reduction != "none":
            compiled = self._compiled(cuda)
            total = torch.zeros((), dtype=call.dtype, device=call.device)
            for name, t in moving.items():
                gradient = _computed(_Gradient, self, _GradientSpec(compiled, name, call),
                                     None, weight, *tensors)
                total = total + (gradient * t).sum()
            return total
        summed = self._summed_loss(cuda)
        ranks = self._ranks(dict(zip(call.names, tensors)))
        check_per_sample(summed, ranks)
        tangent = None
        for name, t in moving.items():
            self._check_rows_per_sample(summed, name, ranks, ctx.weighted,
                                        ctx.value_dim == 2, "forward mode (torch.func.jvp, "
                                        "jacfwd)", tuple(tensors[call.names.index(name)].shape))
            gradient = _computed(_Gradient, self, _GradientSpec(summed, name, call), None,
                                 weight, *tensors)
            product = gradient * t
            if ctx.value_dim != 2 and product.dim() > 1:  # the sample's entries of its row
                product = product.reshape(product.shape[0], -1).sum(1)
            tangent = product if tangent is None else tangent + product
        if tangent is None:  # only the (never differentiated) weights moved
            return torch.zeros_like(_computed(_FusedLoss, self, call, weight, (), *tensors))
        return tangent

    # ------------------------------------------------------------------ create_graph=True
    def _differentiable_gradients(self, ctx: Any, grad_output: torch.Tensor
                                  ) -> dict[str, torch.Tensor]:
        """The backward pass under ``create_graph=True``: each gradient is ``grad_output``
        times a :class:`_Gradient` of the inputs, which autograd differentiates again."""
        tensors = _restored_inputs(ctx)
        weight = _restored_weight(ctx)
        call = ctx.call
        cuda = call.device.type == "cuda"
        gradients = {}
        if self.reduction != "none":
            compiled = self._compiled(cuda)
            for name in ctx.wrt:
                spec = _GradientSpec(compiled, name, call)
                gradients[name] = grad_output * _apply(_Gradient, self, spec,
                                                       ctx.gradients[name], weight, *tensors)
            return gradients
        # d(sum_i v_i w_i l_i)/dx_i = v_i * G_i, G the gradient of sum_i w_i l_i: a function
        # of x alone when x has one row per sample, so v enters autograd as a factor (and,
        # for a loss of one value per sample and class, entry by entry where each l_ik
        # depends on x_ik alone)
        summed = self._summed_loss(cuda)
        ranks = self._ranks(dict(zip(call.names, tensors)))  # no NumPy view: under a
        check_per_sample(summed, ranks)  # torch.func transform the tensors have no storage
        for name in ctx.wrt:
            x = tensors[call.names.index(name)]
            self._check_rows_per_sample(summed, name, ranks, ctx.weighted,
                                        grad_output.dim() == 2, "the backward pass "
                                        "(create_graph=True or a torch.func transform)",
                                        tuple(x.shape), " or a plain backward()")
            gradient = _apply(_Gradient, self, _GradientSpec(summed, name, call), None, weight,
                              *tensors)
            v = grad_output.reshape(grad_output.shape + (1,) * (x.dim() - grad_output.dim()))
            gradients[name] = v * gradient
        return gradients

    def _check_rows_per_sample(self, summed: CompiledLoss, name: str, ranks: dict[str, int],
                               weighted: bool, per_entry: bool, pass_: str,
                               shape: tuple[int, ...], instead: str = "") -> None:
        """Refuse a per-sample derivative of reduction="none" (a vector-Jacobian product
        autograd differentiates again, or a jvp) that the gradient of the summed loss does
        not give: ``name`` without one row per sample, or (``per_entry``: one value per
        sample and class) with entries coupled within a row. ``pass_`` names the pass."""
        facts = self._second_order(summed, name, ranks, weighted)
        if per_entry:
            check_per_entry(facts, name)
        if facts.sample_axis is None or facts.axes[:1] != (facts.sample_axis,):
            raise LossError(f"{pass_} of reduction='none' needs inputs with one row per "
                            f"sample; '{name}' has none (shape {shape}): use reduction "
                            f"'mean' or 'sum'{instead}")
        key = (id(summed), name, tuple(sorted(ranks.items())), weighted)
        if key not in self._other_samples:
            self._other_samples[key] = reads_other_samples(summed, name, ranks, weighted)
        if self._other_samples[key]:
            raise LossError(f"{pass_} of reduction='none' takes each sample's derivative "
                            f"from its own rows, but here a sample's loss depends on other "
                            f"samples' '{name}' (a sum over the samples, a group, a "
                            f"sample's pairs or a risk set): use reduction 'mean' or "
                            f"'sum'{instead}")

    def _ranks(self, values: Mapping[str, Any]) -> dict[str, int]:
        """Each input's rank as the kernels bind it (a per-class vector (K,) is one row)."""
        vectors = self._cpu.class_vector_inputs()
        ranks = {name: a.dim() if isinstance(a, torch.Tensor) else int(np.ndim(a))
                 for name, a in values.items()}
        return {name: 2 if name in vectors and rank == 1 else rank
                for name, rank in ranks.items()}

    def _second_order(self, compiled: CompiledLoss, name: str, ranks: dict[str, int],
                      weighted: bool) -> SecondOrder:
        key = (id(compiled), name, tuple(sorted(ranks.items())), weighted)
        facts = self._second.get(key)
        if facts is None:
            facts = self._second[key] = second_order(compiled, name, ranks, weighted)
        return facts

    def _check_second_order(self, compiled: CompiledLoss, name: str, ranks: dict[str, int],
                            weighted: bool, wanted: tuple[str, ...]) -> None:
        """Refuse a second derivative the diagonal Hessian would get wrong."""
        facts = self._second_order(compiled, name, ranks, weighted)
        if name in wanted and facts.coupled:
            raise LossError(
                f"a second derivative of this loss (double backward, jacrev or jacfwd of a "
                f"gradient, torch.func.hessian) needs its full Hessian with respect to "
                f"'{name}', but the entries of '{name}' are coupled "
                f"(through a reduction over its axis or a pair sum's partners: a softmax "
                f"over classes, a batch-level sum, ...) and lossdsl derives only the "
                f"diagonal Hessian: use CompiledLoss.hessian for the diagonal, or write this "
                f"loss in torch for full second-order autograd")
        mixed = sorted(set(wanted) & facts.depends_on)
        if mixed:
            raise LossError(
                f"a second derivative of this loss (double backward, jacrev or jacfwd of a "
                f"gradient, torch.func.hessian) needs the mixed second derivative with "
                f"respect to '{name}' and '{mixed[0]}', which lossdsl "
                f"does not derive (only the diagonal Hessian of each input): detach "
                f"'{mixed[0]}' (or stop it requiring grad) before calling the loss")


def _formula(loss: Loss, text: str | None, limit: int = 300) -> str:
    """The loss as one line of loss-language text: the expression as written, or
    ``name = formula`` of a named loss (shortened past ``limit`` characters)."""
    stripped = (text or "").strip()
    if loss.name is None and stripped and "\n" not in stripped:
        formula = stripped if not stripped.isidentifier() else (
            f"{stripped}({', '.join(loss.inputs)})")
    else:
        formula = (f"{loss.name} = " if loss.name else "") + str(loss.definition.graph)
    return formula if len(formula) <= limit else formula[: limit - 3] + "..."


def _carried_ignore_index(compiled: int | None, given: int | None) -> int | None:
    """The ignore_index of a module made from a CompiledLoss: the one it was compiled with
    (``compiled``), or ``given``; two different values are refused, not one of them picked."""
    if given is None or compiled is None:
        return compiled if given is None else given
    if isinstance(given, bool) or not isinstance(given, (int, float, np.integer, np.floating)) \
            or float(given) != compiled:
        raise LossError(f"this loss was compiled with ignore_index={compiled}, but "
                        f"ignore_index={given!r} was given: pass one of them (or the same "
                        f"value twice)")
    return compiled


def loss(loss: str | Loss | CompiledLoss, reduction: str = "mean",
         params: Mapping[str, float] | None = None, target: str = "parallel",
         ignore_index: int | None = None) -> TorchLoss:
    """A PyTorch loss module for a lossdsl loss (see :class:`TorchLoss`); ``ignore_index``
    as ``torch.nn.functional.cross_entropy``'s: samples whose label is that value count for
    nothing."""
    return TorchLoss(loss, reduction, params, target, ignore_index)
