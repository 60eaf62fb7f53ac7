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
vector-Jacobian product of a per-sample loss), so it needs no second-order autograd either.
Higher-order derivatives (``create_graph=True``) are not supported: use
``lossdsl.CompiledLoss.hessian`` for the diagonal Hessian.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from . import shapes
from ._boost import LABEL_NAMES
from .api import CompiledLoss, Loss
from .errors import LossError, LossNameError, did_you_mean
from .ir import is_constant

__all__ = ["TorchLoss", "loss"]


# Computed in float32, as PyTorch computes them on the CPU; results are rounded back.
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _as_array(value: Any) -> Any:
    """A kernel argument: a NumPy view of a CPU tensor (a float32 copy of a half-precision
    one: NumPy has no bfloat16), the tensor itself on CUDA."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_cuda:
            return value
        if value.dtype in _HALF_DTYPES:
            value = value.float()
        return value.numpy() if value.dim() else value.item()
    return value


def _as_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(value)
        return tensor.to(like.dtype) if like.dtype in _HALF_DTYPES else tensor
    if isinstance(value, float):
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    return torch.as_tensor(value, device=like.device)  # CUDA arrays: __cuda_array_interface__


class _FusedLoss(torch.autograd.Function):
    """forward: value (and gradients, for mean/sum) in one kernel call; backward: scaling."""

    @staticmethod
    def forward(ctx: Any, module: TorchLoss, names: tuple[str, ...], sample_weight: Any,
                *tensors: torch.Tensor) -> torch.Tensor:
        device = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
        compiled = module._compiled(device is not None and device.is_cuda)
        arrays = {name: _as_array(t) for name, t in zip(names, tensors)}
        weight = _as_array(sample_weight)
        wrt = tuple(name for name, needs in zip(names, ctx.needs_input_grad[3:]) if needs)
        like = next(t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())
        ctx.names, ctx.wrt, ctx.module = names, wrt, module
        ctx.dtypes = {name: t.dtype for name, t in zip(names, tensors)
                      if isinstance(t, torch.Tensor)}
        if compiled.reduction == "none":
            ctx.arrays, ctx.weight, ctx.like = arrays, weight, like
            return _as_tensor(compiled(sample_weight=weight, **arrays), like)
        if not wrt:
            return _as_tensor(compiled(sample_weight=weight, **arrays), like)
        value, gradients = compiled.value_and_grad(wrt, sample_weight=weight, **arrays)
        ctx.gradients = {name: _as_tensor(g, like) for name, g in gradients.items()}
        return _as_tensor(value, like)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        if ctx.module.reduction == "none":
            gradients = ctx.module._vector_jacobian(ctx, grad_output)
        else:
            gradients = {name: grad_output * g for name, g in ctx.gradients.items()}
        # Gradients take their input's dtype (a float32 input met by float64 ones is
        # differentiated in float64, as the kernel computes).
        return (None, None, None, *(None if name not in gradients
                                    else gradients[name].to(ctx.dtypes[name])
                                    for name in ctx.names))


class TorchLoss(torch.nn.Module):
    """A compiled lossdsl loss as a ``torch.nn.Module``: call it with tensors, get a tensor.

    Inputs are passed by keyword (``criterion(y=targets, p=logits)``) or, as ``torch.nn``
    losses take them, positionally as ``(input, target)``: the prediction first, then the
    target (the input named like a label: ``y``, ``target``, ``label``, ...). Other inputs,
    ``sample_weight=`` and param overrides are keywords. Positional arguments whose roles
    cannot be told from the names are refused, never guessed. Gradients flow to every
    floating-point input that requires grad.
    """

    def __init__(self, loss: str | Loss | CompiledLoss, reduction: str = "mean",
                 params: Mapping[str, float] | None = None, target: str = "parallel"):
        super().__init__()
        if isinstance(loss, CompiledLoss):
            params = {**loss.params, **dict(params or {})}
            loss = loss.loss
        if isinstance(loss, str):
            from .api import loss_from_text

            loss = loss_from_text(loss)
        if target == "cuda":
            raise LossError("target is the CPU kernel's ('cpu' or 'parallel'); CUDA tensors "
                            "use the CUDA target automatically")
        self.definition = loss
        self.reduction = reduction
        self.params = dict(params or {})
        self.target = target
        self._cpu = loss.compile(target, reduction, self.params)
        self._cuda: CompiledLoss | None = None
        self._summed: dict[bool, CompiledLoss] = {}

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the loss's inputs, in the order positional arguments take them."""
        return self._cpu.inputs

    def positional_inputs(self, args: tuple[Any, ...], keywords: Mapping[str, Any]
                          ) -> tuple[str, ...]:
        """The inputs that positional ``args`` stand for, PyTorch's way: ``(input, target)``,
        the prediction first. The target is the one input left without a keyword that is
        named like a label; the prediction the only other one left."""
        if not args:
            return ()
        left = [name for name in self.inputs if name not in keywords]
        targets = [name for name in left if name in LABEL_NAMES]
        predictions = [name for name in left if name not in LABEL_NAMES]
        example = ", ".join(f"{name}=..." for name in self.inputs)
        if len(args) > 2:
            raise LossError(f"positional arguments are (input, target), as torch.nn losses "
                            f"take them; got {len(args)}: pass the others by keyword "
                            f"(criterion({example}))")
        if len(args) == 1 and len(left) == 1:
            return tuple(left)
        if len(targets) == 1 and len(predictions) == 1:
            return (predictions[0], targets[0])[: len(args)]
        raise LossError(f"cannot tell which of the inputs ({', '.join(left)}) is the "
                        f"prediction and which the target from their names: pass them by "
                        f"keyword (criterion({example}))")

    def _compiled(self, cuda: bool) -> CompiledLoss:
        if not cuda:
            return self._cpu
        if self._cuda is None:
            self._cuda = self.definition.compile("cuda", self.reduction, self.params)
        return self._cuda

    def forward(self, *args: Any, sample_weight: Any = None, **inputs: Any) -> torch.Tensor:
        """The loss of the given tensors (a 0-d tensor, or per-sample for ``"none"``)."""
        for name, value in zip(self.positional_inputs(args, inputs), args):
            if name in inputs:
                raise LossError(f"input '{name}' given both positionally and by keyword")
            inputs[name] = value
        overrides = {k: float(v) for k, v in inputs.items() if k not in self.inputs}
        for name in overrides:
            if name not in self._cpu.params:
                raise LossNameError(f"'{name}' is not an input or param of this loss (inputs: "
                                    f"{', '.join(self.inputs)})", None,
                                    did_you_mean(name, list(self.inputs) + list(self._cpu.params)))
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise LossNameError(f"missing input '{missing[0]}' (this loss takes "
                                f"{', '.join(self.inputs)})")
        if overrides:  # params given per call: a loss compiled with them (kernels are shared)
            module = TorchLoss(self.definition, self.reduction, {**self.params, **overrides},
                               self.target)
            return module(sample_weight=sample_weight,
                          **{n: inputs[n] for n in self.inputs})
        names = self.inputs
        tensors = [inputs[name] for name in names]
        if not any(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
            raise LossError("lossdsl.torch losses need at least one floating-point tensor input")
        return _FusedLoss.apply(self, names, sample_weight, *tensors)

    # ------------------------------------------------------------------ reduction="none"
    def _vector_jacobian(self, ctx: Any, grad_output: torch.Tensor) -> dict[str, torch.Tensor]:
        """d(sum_i v_i l_i)/dx for v = grad_output: one weighted gradient kernel call."""
        if not ctx.wrt:
            return {}
        cuda = grad_output.is_cuda
        summed = self._summed.get(cuda)
        if summed is None:
            summed = self.definition.compile("cuda" if cuda else self.target, "sum", self.params)
            self._summed[cuda] = summed
        self._check_per_sample(summed, ctx.arrays)
        v = grad_output.detach()
        if v.dim() == 2:  # per-element values of an elementwise (N, K) loss
            raise LossError("reduction='none' backward needs one value per sample; this loss "
                            "returns one per sample and class: reduce it with rowsum first")
        weight = v if cuda else _as_array(v)
        if ctx.weight is not None:
            weight = weight * ctx.weight
        gradients = summed.grad(ctx.wrt, sample_weight=weight, **ctx.arrays)
        return {name: _as_tensor(g, ctx.like) for name, g in gradients.items()}

    @staticmethod
    def _check_per_sample(summed: CompiledLoss, arrays: dict[str, Any]) -> None:
        # Per-sample values l_i + c carry a scalar term c (a regulariser) in every sample; the
        # weighted-sum trick would count it once instead of sum_i v_i times.
        ranks = {name: int(np.ndim(value)) for name, value in arrays.items()}
        definition = summed.loss.definition
        specialized = shapes.specialize(definition.graph, ranks, definition.inputs,
                                        definition.input_spans)
        _, scalar = shapes.split_additive(specialized.graph)
        if not is_constant(scalar, 0.0) and not is_constant(scalar):
            raise LossError("reduction='none' cannot be differentiated for a loss with a "
                            "scalar term (such as a regulariser): use 'mean' or 'sum'")


def loss(loss: str | Loss | CompiledLoss, reduction: str = "mean",
         params: Mapping[str, float] | None = None, target: str = "parallel") -> TorchLoss:
    """A PyTorch loss module for a lossdsl loss (see :class:`TorchLoss`)."""
    return TorchLoss(loss, reduction, params, target)
