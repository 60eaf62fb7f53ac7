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
* **TensorFlow backend**: the Numba kernels on the host through ``tf.numpy_function``, with
  a ``tf.custom_gradient`` whose gradient is the summed loss's gradient kernel weighted by the
  incoming per-sample gradients (the vector-Jacobian product of
  :func:`lossdsl.backward.vector_jacobian`, as on the PyTorch backend: exact also where
  samples are coupled). It runs eagerly and in ``tf.function`` graphs, not under XLA: a model
  compiled with ``jit_compile=True`` (Keras' ``"auto"`` picks it on a GPU) gets a
  :class:`~lossdsl.LossError` saying to compile with ``jit_compile=False``. Tensors on a GPU
  are copied to the host for the kernels and back.
* Any other backend: refused with a :class:`~lossdsl.LossError`.

``y_true`` is the loss's input named like a label (``y``, ``target``, ...), ``y_pred`` the
other one; a loss with more inputs than these two cannot be given them through Keras and is
refused. Like Keras' built-in losses, a ``y_true`` one rank short of ``y_pred`` whose last
axis has length 1 (labels ``(N,)``, a ``Dense(1)`` output ``(N, 1)``) is expanded to it.
A last axis of length 1 on both is dropped (a ``Dense(1)`` model gets one value per sample,
as from Keras' built-in losses); otherwise the values are lossdsl's, one per entry for an
elementwise loss. So ``"sum"`` and ``"sum_over_batch_size"`` are lossdsl's ``"sum"`` and
``"mean"`` of the same arrays, weighted or not, and the loss Keras reports is the Numba
kernels' (both divide a weighted sum by the number of values; Keras'
``"mean_with_sample_weight"`` divides by the sum of the weights instead). A weight per
sample ``(N,)`` of ``(N, K)`` outputs weighs each of its row's entries, so that
``"sum_over_batch_size"`` and ``"mean_with_sample_weight"`` give what Keras' built-in losses
give (so does a weight shaped ``(N, 1)``).

On the PyTorch and TensorFlow backends the gradient is exact, as on JAX, for a loss per
row of ``(N, K)`` outputs (``dice_rows``, Keras' ``Dice(axis=-1)``;
``tversky_rows``; ``generalized_dice_rows``, whose rows the batch's mean also couples); a
batch-level loss, one number for the whole batch (``dice``, Keras' ``Dice()``; ``tversky``),
whose gradient is scaled by Keras' incoming gradient, and a batch term added to per-sample
values (counted as many times as the incoming gradients sum to); an elementwise loss of
``(N, K)`` outputs, which takes Keras' ``(N, K)`` incoming gradients entry by entry; and
values per entry that a row reduction couples (``-y * log_softmax(z)``), through the
gradient of the loss times those incoming gradients, summed (a kernel compiled when first
needed).

``ignore_class`` (Keras' name for PyTorch's ``ignore_index``) drops the samples whose class
index is that value as ``keras.losses.SparseCategoricalCrossentropy(ignore_class=...)`` does:
their values are 0 and carry Keras' mask, so that ``"sum_over_batch_size"`` divides by the
samples kept, ``"mean_with_sample_weight"`` by their weights' total, and a batch whose every
label is ignored gives 0 (Keras' ``divide_no_nan``; lossdsl's own ``reduction="mean"`` raises
there instead). Labels out of range that are not ``ignore_class`` raise (Keras reads them
unchecked).

The loss serialises with ``get_config``/``from_config`` (the loss text, params, name,
reduction and ignore_class) and through ``keras.saving`` (registered as ``lossdsl>Loss``).

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
        f"lossdsl.keras runs on the jax, tensorflow and torch backends, so install that "
        f"backend's package, or set KERAS_BACKEND=jax (or torch) before importing keras",
        name=error.name) from error

import numpy as np

from .api import CompiledLoss, loss_from_text
from .api import Loss as LossDefinition
from .backward import (
    entries_apart,
    has_batch_term,
    second_order,
    upstream_weighted,
    vector_jacobian,
)
from .binding import param_value
from .errors import LossError
from .roles import positional_inputs

__all__ = ["BACKENDS", "Loss"]

#: The Keras backends a lossdsl loss runs on.
BACKENDS = ("jax", "tensorflow", "torch")


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
    and ``dtype`` as :class:`keras.losses.Loss` takes them. ``ignore_class``: as
    :class:`keras.losses.SparseCategoricalCrossentropy`'s, a label value of ``y_true`` (class
    indices) whose samples count for nothing: their values are 0 and masked, so that Keras'
    reduction leaves them out (``"sum_over_batch_size"`` divides by the samples kept, and a
    batch whose every label is ignored gives 0, as Keras' own loss does).
    """

    def __init__(self, loss: str, params: Mapping[str, float] | None = None, *,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None, ignore_class: int | None = None) -> None:
        if not isinstance(loss, str):
            raise TypeError(f"lossdsl.keras.Loss takes loss text (it is what get_config "
                            f"saves), not {type(loss).__name__}")
        definition = loss_from_text(loss)
        if params is not None and not isinstance(params, Mapping):
            raise LossError(f"params must be a mapping of param names to numbers, not "
                            f"{type(params).__name__}")
        params = {key: param_value(key, value) for key, value in dict(params or {}).items()}
        # the param names and values (and ignore_class) are checked now, not at the first
        # batch
        try:
            compiled = definition.compile("cpu", "none", params, ignore_class)
        except LossError as error:
            if ignore_class is None or "ignore_index" not in error.message:
                raise
            raise LossError(f"ignore_class={ignore_class!r} (lossdsl's ignore_index): "
                            f"{error.message}", error.span, error.hint) from None
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
        # the target holds class indices (sparse_cce): a (N, 1) column of them is a vector,
        # as keras.losses.SparseCategoricalCrossentropy reads it (keras.datasets' labels)
        self._class_indices = self._roles[0] in compiled.label_inputs()
        if ignore_class is not None and not self._class_indices:
            raise LossError(f"ignore_class masks the samples whose y_true is that class "
                            f"index, but this loss reads y_true ('{self._roles[0]}') as "
                            f"values, not class indices (through pick, onehot or rowof)")
        #: the label value whose samples count for nothing (None: every sample counts)
        self.ignore_class: int | None = compiled.ignore_index
        self._per_entry = _values_per_entry(compiled, self._roles, self._class_indices)
        if reduction not in (None, "none", "sum") and _counts_samples(
                definition.compile("cpu", "mean", params), self._roles, self._class_indices):
            raise LossError(
                f"this loss's mean divides by the total of its count_as counts (sum(s) of "
                f"count_as(l, s): PyTorch's class-weighted mean, a Cox loss per event), and "
                f"Keras' reduction {reduction!r} divides the per-sample values by the batch "
                f"size: it would be another number. Use reduction='sum' (and divide by the "
                f"counts' total yourself), or lossdsl.torch / lossdsl.jax, whose "
                f"reduction='mean' divides by it")
        self._functions: dict[str, Callable[[Any, Any], Any]] = {}

    @property
    def inputs(self) -> tuple[str, str]:
        """The loss inputs ``(y_true, y_pred)`` stand for."""
        return self._roles[0], self._roles[1]

    def __repr__(self) -> str:
        ignored = "" if self.ignore_class is None else f" ignore_class={self.ignore_class}"
        return (f"<lossdsl.keras.Loss {self.text!r} (y_true={self.inputs[0]}, "
                f"y_pred={self.inputs[1]}) reduction={self.reduction!r}{ignored}>")

    def _function(self) -> Callable[[Any, Any], Any]:
        """``f(y_true, y_pred)``: per-sample values on the current Keras backend."""
        backend = keras.backend.backend()
        function = self._functions.get(backend)
        if function is not None:
            return function
        target, prediction = self._roles
        if backend == "jax":
            from . import jax as lossdsl_jax

            per_sample = lossdsl_jax.loss(self.definition, "none", self.params,
                                          self.ignore_class)

            def function(y_true, y_pred):
                return per_sample(**{target: y_true, prediction: y_pred})
        elif backend == "torch":
            from . import torch as lossdsl_torch

            module = lossdsl_torch.loss(self.definition, "none", self.params,
                                        ignore_index=self.ignore_class)

            def function(y_true, y_pred):
                return module(**{target: y_true, prediction: y_pred})
        elif backend == "tensorflow":
            function = _TensorFlowValues(self.definition, self.params, self._roles,
                                         self.ignore_class)
        else:
            raise LossError(f"lossdsl.keras runs on the Keras backends "
                            f"{', '.join(BACKENDS)}, not {backend!r}: set KERAS_BACKEND to "
                            f"one of them before importing keras")
        self._functions[backend] = function
        return function

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """Keras' weighting, masking and reduction of :meth:`call`'s values. A weight per
        sample (N,) or (N, 1) of (N, K) outputs weighs each of the row's K values (an
        elementwise loss gives one value per entry, which Keras' weighting cannot broadcast
        an (N,) weight over): the weighted mean over the entries, or over the weights, is
        then the weighted mean of the rows' means, as Keras' built-in losses give."""
        shape = tuple(getattr(sample_weight, "shape", ()))
        if (self._per_entry and sample_weight is not None
                and (len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1))
                and len(y_pred.shape) == 2 and y_pred.shape[-1] not in (None, 1)):
            # (N, 1) too: Keras would broadcast it over the entries, but divide
            # "mean_with_sample_weight" by the N weights' total, K times too little
            weight = keras.ops.convert_to_tensor(sample_weight)
            if len(shape) == 1:
                weight = keras.ops.expand_dims(weight, -1)
            sample_weight = weight * keras.ops.ones_like(y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample losses of ``y_pred`` against ``y_true`` (lossdsl's ``reduction="none"``);
        Keras' ``__call__`` weights, masks and reduces them. With ``ignore_class`` the values
        carry a Keras mask of the samples kept, as
        :class:`keras.losses.SparseCategoricalCrossentropy`'s do."""
        function = self._function()
        if (self._class_indices and len(y_true.shape) == len(y_pred.shape) >= 2
                and y_true.shape[-1] == 1 and y_pred.shape[-1] != 1):
            y_true = keras.ops.squeeze(y_true, -1)
        y_true, y_pred = _same_rank(y_true, y_pred)
        if (len(y_pred.shape) >= 2 and y_pred.shape[-1] == 1 and len(y_true.shape) >= 2
                and y_true.shape[-1] == 1):
            # one output per sample, as Keras' built-in losses return (N,) for (N, 1)
            y_true, y_pred = keras.ops.squeeze(y_true, -1), keras.ops.squeeze(y_pred, -1)
        values = function(y_true, y_pred)
        if self.ignore_class is not None:
            _set_keras_mask(values, keras.ops.not_equal(
                y_true, keras.ops.cast(self.ignore_class, y_true.dtype)))
        return values

    def get_config(self) -> dict[str, Any]:
        """The loss text, params, name, reduction and ignore_class (where set):
        ``Loss.from_config`` rebuilds it."""
        config = super().get_config()
        config.update(loss=self.text, params=dict(self.params))
        if self.ignore_class is not None:
            config.update(ignore_class=self.ignore_class)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Loss:
        """The loss a :meth:`get_config` describes."""
        config = dict(config)
        if "loss" not in config:
            raise LossError("a lossdsl.keras.Loss config needs 'loss' (the loss text)")
        return cls(config.pop("loss"), config.pop("params", None), **config)


def _set_keras_mask(values: Any, mask: Any) -> None:
    """Give ``values`` Keras' mask ``mask``, which ``keras.losses.Loss.__call__`` merges
    into the sample weights (with the mask of ``y_pred``, if any) before its reduction: how
    Keras' own ``sparse_categorical_crossentropy`` drops its ``ignore_class`` samples (Keras
    3 has no public name for it)."""
    try:
        from keras.src.backend import set_keras_mask
    except ImportError as error:  # moved in a later Keras
        raise LossError(f"ignore_class needs Keras' set_keras_mask, which this Keras "
                        f"{keras.__version__} does not have where Keras 3.x keeps it "
                        f"({error}): drop ignore_class and pass sample_weight=0 for those "
                        f"samples with reduction='mean_with_sample_weight'") from error
    set_keras_mask(values, mask)


def _values_per_entry(compiled: CompiledLoss, roles: tuple[str, str],
                      class_indices: bool) -> bool:
    """Whether the loss gives one value per entry of (N, K) outputs (an elementwise loss),
    rather than one per row (a loss over classes) or one for the batch (Dice), which an
    (N,) weight already weighs as Keras' own losses are weighed."""
    target, prediction = roles
    try:
        spec = compiled.specialization({target: 1 if class_indices else 2, prediction: 2})
    except LossError:  # the loss takes no (N, K) outputs: nothing to weigh per entry
        return False
    return len(spec.objective.value.axes or ()) == 2


def _counts_samples(compiled: CompiledLoss, roles: tuple[str, str], class_indices: bool
                    ) -> bool:
    """Whether ``compiled``'s mean (compiled with ``reduction="mean"``) divides by the total
    of ``count_as`` counts that are not all 1 (class weights other than 1, a count input), for
    the targets Keras gives: class indices or (N, K) rows, and vectors."""
    target, prediction = roles
    found = False
    for ranks in ({target: 1 if class_indices else 2, prediction: 2},
                  {target: 1, prediction: 1}):
        try:
            found = found or compiled.specialization(ranks).count_total is not None
        except LossError:  # not a loss of these ranks
            continue
    return found


class _TensorFlowValues:
    """``f(y_true, y_pred)`` on Keras' TensorFlow backend: per-sample values from the Numba
    kernels (``tf.numpy_function``), differentiated by ``tf.custom_gradient`` through the
    summed loss's gradient kernel with the incoming gradients as sample weights (see the
    module's documentation). How the backward pass takes the incoming gradients (a batch
    term, entries a row reduction couples) is found when the function is traced, from the
    ranks alone, rather than when a step runs."""

    def __init__(self, definition: LossDefinition, params: Mapping[str, float],
                 roles: tuple[str, ...], ignore_index: int | None = None) -> None:
        self.values = definition.compile("parallel", "none", params, ignore_index)
        self.summed = definition.compile("parallel", "sum", params, ignore_index)
        self.roles = roles
        self.definition, self.params = definition, params
        self.ignore_index = ignore_index
        self._weighted: CompiledLoss | None = None

    def upstream_weighted(self) -> CompiledLoss:
        """The loss times the incoming gradients, reduction "sum"
        (:func:`lossdsl.backward.upstream_weighted`), made when first needed."""
        if self._weighted is None:
            self._weighted = upstream_weighted(self.definition).compile(
                "parallel", "sum", self.params, self.ignore_index)
        return self._weighted

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        import tensorflow as tf

        _refuse_xla(tf)
        target, prediction = self.roles
        ranks = {target: len(y_true.shape), prediction: len(y_pred.shape)}
        axes = self.values.specialization(ranks).objective.value.axes or ()
        # which inputs get a gradient, and how (found from the ranks when traced)
        wrt = [name for name, tensor in zip(self.roles, (y_true, y_pred))
               if tensor.dtype.is_floating and name not in self.values.constant_inputs()]
        batch_term = bool(wrt) and has_batch_term(self.summed, ranks)
        weighted = None  # values per entry coupled within a row: the incoming ones an input
        if len(axes) == 2 and not all(entries_apart(second_order(self.summed, name, ranks,
                                                                 False)) for name in wrt):
            weighted = self.upstream_weighted()
        shape = tf.TensorShape([None] * len(axes)).merge_with(y_pred.shape[:len(axes)]) if (
            len(y_pred.shape) >= len(axes)) else tf.TensorShape([None] * len(axes))

        def forward(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
            values = self.values(**{target: _kernel_array(true), prediction: _kernel_array(pred)})
            return np.asarray(values, dtype=pred.dtype)

        def backward(name: str, true: np.ndarray, pred: np.ndarray,
                     upstream: np.ndarray) -> np.ndarray:
            arrays = {target: _kernel_array(true), prediction: _kernel_array(pred)}
            (gradient,) = vector_jacobian(self.summed, (name,), _kernel_array(upstream), None,
                                          arrays, {}, batch_term, weighted=weighted).values()
            dtype = (true if name == target else pred).dtype
            return np.asarray(gradient, dtype=dtype)

        @tf.custom_gradient
        def values(true, pred):
            result = tf.numpy_function(forward, [true, pred], pred.dtype, stateful=False)
            result.set_shape(shape)

            def gradient(upstream):
                gradients = []
                for name, tensor in ((target, true), (prediction, pred)):
                    if name not in wrt:
                        gradients.append(None)
                        continue
                    computed = tf.numpy_function(
                        lambda t, p, u, name=name: backward(name, t, p, u),
                        [true, pred, upstream], tensor.dtype, stateful=False)
                    computed.set_shape(tensor.shape)
                    gradients.append(computed)
                return gradients

            return result, gradient

        return values(y_true, y_pred)


def _kernel_array(array: np.ndarray) -> np.ndarray:
    """A host array as the kernels take it: half precision (float16, bfloat16) in float32,
    as Keras computes losses of mixed-precision models."""
    if array.dtype.kind == "V" or array.dtype == np.float16 or array.dtype.name == "bfloat16":
        return array.astype(np.float32)
    return array


def _refuse_xla(tf: Any) -> None:
    """A LossError when the function is traced for XLA (``jit_compile=True``), which cannot
    compile a call back to the host."""
    try:
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # moved in a later TensorFlow: XLA then reports the host call itself
        return
    if not tf.executing_eagerly() and GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()):
        raise LossError("lossdsl.keras on TensorFlow runs lossdsl's kernels on the host, "
                        "which XLA cannot compile: compile the model with jit_compile=False "
                        "(Keras' jit_compile='auto' picks XLA on a GPU)")
