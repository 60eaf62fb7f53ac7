"""lossdsl losses as Keras 3 losses.

    import lossdsl.keras

    model.compile(optimizer="adam", loss=lossdsl.keras.Loss("asymmetric_l1(y, p, 4, 1)"))

:class:`Loss` is a :class:`keras.losses.Loss`: its :meth:`~Loss.call` returns lossdsl's
per-sample values (``reduction="none"``) computed by the front end of the Keras backend in
use, and Keras' own ``Loss.__call__`` applies ``sample_weight``, masks and the ``reduction``
(``"sum_over_batch_size"``, ``"sum"``, ``"mean_with_sample_weight"``, ``None``/``"none"``)
exactly as for its built-in losses.

* **JAX backend**: :mod:`lossdsl.jax`, the loss printed as ``jax.numpy`` code with lossdsl's
  symbolic derivatives as a ``custom_jvp`` (traced and jitted with the model).
* **PyTorch backend**: :mod:`lossdsl.torch`, an autograd Function over the Numba kernels.
* **TensorFlow** (or any other backend): refused with a :class:`~lossdsl.LossError`.

``y_true`` is the loss's input named like a label (``y``, ``target``, ...), ``y_pred`` the
other one; a loss with more inputs than these two cannot be given them through Keras and is
refused. Like Keras' built-in losses, a ``y_true`` one rank short of ``y_pred`` whose last
axis has length 1 (labels ``(N,)``, a ``Dense(1)`` output ``(N, 1)``) is expanded to it.
A last axis of length 1 on both is dropped (a ``Dense(1)`` model gets one value per sample,
as from Keras' built-in losses); otherwise the values are lossdsl's, one per entry for an
elementwise loss. So ``"sum"`` and ``"sum_over_batch_size"`` are lossdsl's ``"sum"`` and
``"mean"`` of the same arrays, weighted or not, and the loss Keras reports is the Numba
kernels' (both divide a weighted sum by the number of values; Keras'
``"mean_with_sample_weight"`` divides by the sum of the weights instead). On the PyTorch
backend an elementwise loss of ``(N, K)`` outputs takes Keras' ``(N, K)`` incoming gradients
entry by entry (lossdsl.torch); a loss whose entries a row reduction couples is refused there
with a LossError.

The loss serialises with ``get_config``/``from_config`` (the loss text, params, name and
reduction) and through ``keras.saving`` (registered as ``lossdsl>Loss``).

Keras is an optional dependency (``pip install lossdsl[keras]``); ``import lossdsl`` does not
import it. Choose the backend before importing Keras (``KERAS_BACKEND=jax`` or ``torch``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

try:
    import keras
except ModuleNotFoundError as error:  # an optional dependency, or its backend missing
    if error.name == "keras":
        raise ModuleNotFoundError(f"lossdsl.keras needs Keras 3 ({error}): pip install "
                                  "'lossdsl[keras]'", name=error.name) from error
    chosen = os.environ.get("KERAS_BACKEND", "unset (~/.keras/keras.json's, or tensorflow)")
    raise ModuleNotFoundError(
        f"Keras could not import its backend ({error}; KERAS_BACKEND is {chosen}): "
        f"lossdsl.keras runs on the jax and torch backends, so set KERAS_BACKEND=jax (or "
        f"torch) before importing keras", name=error.name) from error

from .api import loss_from_text
from .binding import param_value
from .errors import LossError
from .roles import positional_inputs

__all__ = ["BACKENDS", "Loss"]

#: The Keras backends a lossdsl loss runs on.
BACKENDS = ("jax", "torch")


def _same_rank(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """``y_true`` expanded (or squeezed) to ``y_pred``'s rank where the ranks differ by one
    and the longer one's last axis has length 1, as Keras' built-in losses do."""
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        y_true = keras.ops.expand_dims(y_true, -1)
    elif true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        y_true = keras.ops.squeeze(y_true, -1)
    return y_true, y_pred


@keras.saving.register_keras_serializable(package="lossdsl")
class Loss(keras.losses.Loss):
    """A lossdsl loss as a :class:`keras.losses.Loss` (see the module's documentation).

    ``loss``: loss-language text (an expression such as ``"quantile(y, p, 0.8)"`` or a
    definition); ``params``: overrides of the loss's param values; ``reduction``, ``name``
    and ``dtype`` as :class:`keras.losses.Loss` takes them.
    """

    def __init__(self, loss: str, params: Mapping[str, float] | None = None, *,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        if not isinstance(loss, str):
            raise TypeError(f"lossdsl.keras.Loss takes loss text (it is what get_config "
                            f"saves), not {type(loss).__name__}")
        definition = loss_from_text(loss)
        if params is not None and not isinstance(params, Mapping):
            raise LossError(f"params must be a mapping of param names to numbers, not "
                            f"{type(params).__name__}")
        params = {key: param_value(key, value) for key, value in dict(params or {}).items()}
        # the param names and values are checked now, not at the first batch
        compiled = definition.compile("cpu", "none", params)
        inputs = compiled.inputs
        if len(inputs) != 2:
            raise LossError(f"a Keras loss takes (y_true, y_pred); this loss has "
                            f"{len(inputs)} input(s) ({', '.join(inputs)}): Keras can give "
                            f"it only a target and a prediction")
        self._roles = positional_inputs(
            inputs, {}, 2, target_first=True,
            convention="(y_true, y_pred), as Keras takes them", call="loss")
        super().__init__(name=name or "lossdsl_loss", reduction=reduction, dtype=dtype)
        self.text = loss
        self.params = params
        self.definition = definition
        self._functions: dict[str, Callable[[Any, Any], Any]] = {}

    @property
    def inputs(self) -> tuple[str, str]:
        """The loss inputs ``(y_true, y_pred)`` stand for."""
        return self._roles[0], self._roles[1]

    def __repr__(self) -> str:
        return (f"<lossdsl.keras.Loss {self.text!r} (y_true={self.inputs[0]}, "
                f"y_pred={self.inputs[1]}) reduction={self.reduction!r}>")

    def _function(self) -> Callable[[Any, Any], Any]:
        """``f(y_true, y_pred)``: per-sample values on the current Keras backend."""
        backend = keras.backend.backend()
        function = self._functions.get(backend)
        if function is not None:
            return function
        target, prediction = self._roles
        if backend == "jax":
            from . import jax as lossdsl_jax

            per_sample = lossdsl_jax.loss(self.definition, "none", self.params)

            def function(y_true, y_pred):
                return per_sample(**{target: y_true, prediction: y_pred})
        elif backend == "torch":
            from . import torch as lossdsl_torch

            module = lossdsl_torch.loss(self.definition, "none", self.params)

            def function(y_true, y_pred):
                return module(**{target: y_true, prediction: y_pred})
        else:
            raise LossError(f"lossdsl.keras runs on the Keras backends "
                            f"{' and '.join(BACKENDS)}, not {backend!r}: set KERAS_BACKEND="
                            f"jax or KERAS_BACKEND=torch before importing keras")
        self._functions[backend] = function
        return function

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample losses of ``y_pred`` against ``y_true`` (lossdsl's ``reduction="none"``);
        Keras' ``__call__`` weights, masks and reduces them."""
        function = self._function()
        y_true, y_pred = _same_rank(y_true, y_pred)
        if (len(y_pred.shape) >= 2 and y_pred.shape[-1] == 1 and len(y_true.shape) >= 2
                and y_true.shape[-1] == 1):
            # one output per sample, as Keras' built-in losses return (N,) for (N, 1)
            y_true, y_pred = keras.ops.squeeze(y_true, -1), keras.ops.squeeze(y_pred, -1)
        return function(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        """The loss text, params, name and reduction: ``Loss.from_config`` rebuilds it."""
        config = super().get_config()
        config.update(loss=self.text, params=dict(self.params))
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Loss:
        """The loss a :meth:`get_config` describes."""
        config = dict(config)
        if "loss" not in config:
            raise LossError("a lossdsl.keras.Loss config needs 'loss' (the loss text)")
        return cls(config.pop("loss"), config.pop("params", None), **config)
