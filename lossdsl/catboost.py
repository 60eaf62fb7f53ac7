"""CatBoost custom objectives and metrics from lossdsl losses.

    from catboost import CatBoostClassifier, CatBoostRegressor
    import lossdsl.catboost

    given = lossdsl.catboost.model_params("asymmetric_l1(y, p, 4, 1)", labels=y)
    model = CatBoostRegressor(**given, iterations=200)
    obj = given["loss_function"]
    model.fit(X, y, sample_weight=w, baseline=obj.base_margin(y, w))
    model.predict(X_test) + obj.init_score(y, w)   # CatBoost does not store the baseline

    clf = CatBoostClassifier(**lossdsl.catboost.model_params("bce_logits(y, p)",
                                                             classifier=True))
    clf.fit(X, labels)            # any two labels: CatBoost maps them to 0, 1
    clf.predict(X), clf.predict_proba(X)

:func:`model_params` is the one-liner: CatBoost refuses to train a Python objective without an
``eval_metric`` ("If loss function is a user defined object, then the eval metric must be
specified", a check in CatBoost's C++ options that no attribute of the objective can
answer), so it supplies :func:`metric` of the same loss, what a classifier needs to keep
its class labels (see :func:`model_params`), and the leaf-estimation settings that train the
loss well (see :data:`LEAF_ESTIMATION`). ``loss_function=objective(...)`` with an
``eval_metric`` of your own works too.

CatBoost's convention differs from XGBoost's and LightGBM's: ``calc_ders_range`` returns the
first and second derivatives of the NEGATED loss, ``(-dl/da, -d2l/da2)``, and it leaves the
weights to the objective. This object does both, from one fused kernel call per batch, and
applies the same Hessian policy as the other GBDT integrations (so flat and non-convex losses
still give usable Newton leaves).

Multiclass objectives implement ``calc_ders_multi``, which CatBoost calls once per row and
training round (twice with Newton leaves): CatBoost 1.2 has no batched multi-dimensional
objective (its C++ ``TCustomObjectiveDescriptor`` offers a batched call for one dimension
only; ``MultiTargetCustomObjective`` is per row as well). Each call therefore runs the
compiled kernel on preallocated one-row buffers, without the argument checks and array
set-up of a general call, and returns the diagonal Hessian that lossdsl computes (CatBoost's
own ``MultiClass`` uses the full K x K softmax Hessian). Measured on 2 shared cores under
load, thread_count=1, medians of interleaved repeats: 2,000 rows, 4 classes, 30 trees of
depth 6: 4.1-4.3x the built-in ``MultiClass``'s time (68x through the general path
before), the same as a hand-written plain-Python softmax objective (4.3x); 10,000 rows,
5 classes, 20 trees: 8.2-8.5x (plain Python 8.1x, a Python objective that returns constant
lists 1.7x). What remains is CatBoost's per-row Python protocol; a Numba-compiled method
(CatBoost's own JIT path, which returns arrays) measured 8.9x at 2,000 rows.

Predictions: ``CatBoostClassifier.predict`` gives class labels and ``predict_proba`` the
sigmoid (one score) or softmax (K scores) of the raw score, which are the probabilities for
losses on logits (``bce_logits``, ``cce_logits``, ``sparse_cce_logits``, focal losses on
logits); for a cost-weighted loss they are not the true probabilities (use
:mod:`lossdsl.estimators`). That needs CatBoost to know that it classifies, which with a
Python objective it learns only from a classification metric (``eval_metric`` or
``custom_metric``) or ``class_names``: otherwise it saves the model without its class labels
and ``predict`` fails with an ``IndexError`` inside CatBoost (1.2.10; ``classes_count``
alone has the same effect), where no lossdsl code runs. ``model_params(...,
classifier=True)`` supplies that. A loss over classes given one score per row (labels with
two classes, a regressor) raises a :class:`~lossdsl.LossError` on the first objective call.
A loss that reads several score columns with one real label per row (``gaussian_nll_scores``,
``negative_binomial_scores``) is refused when the objective is made: CatBoost gives a Python
objective several scores per row only for classes or for one label per column; train it
with :mod:`lossdsl.xgboost` or :mod:`lossdsl.lightgbm`.

CatBoost tries to JIT-compile Python objectives and metrics with Numba and warns on every fit
when it cannot; lossdsl's objects already run compiled kernels, and set CatBoost's ``no_jit``
attribute so that it does not try.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .api import CompiledLoss, Loss
from .backend.cpu.runtime import DIRECT
from .boosting.objective import DEFAULT_HESSIAN_FLOOR, BoostingObjective, as_objective
from .errors import LossDomainError, LossError, LossShapeError
from .implied import label_bounds

__all__ = ["LEAF_ESTIMATION", "CatBoostMetric", "CatBoostObjective", "init_score",
           "label_scaled_hessian", "metric", "model_params", "objective"]

#: CatBoost leaf-estimation settings :func:`model_params` uses for losses whose Hessian is
#: zero or replaced by a constant (piecewise-linear costs: MAE, quantile, ``asymmetric_l1``,
#: hinge): ten Newton steps per leaf, each on the derivatives at the leaf's new value (one
#: more objective call per step), with CatBoost's ``AnyImprovement`` backtracking, which
#: shortens a step that does not lower the loss. One step on a constant Hessian moves a leaf
#: by its mean gradient; repeated steps bring it near the loss's minimiser over the leaf's
#: rows. CatBoost's own ``Exact`` method computes that minimiser but is only allowed for its
#: built-in Quantile, MAE, MAPE, RMSPE and similar objectives, and ``Armijo`` backtracking
#: only on GPU, where Python objectives are not allowed.
LEAF_ESTIMATION: dict[str, Any] = {"leaf_estimation_method": "Newton",
                                   "leaf_estimation_iterations": 10,
                                   "leaf_estimation_backtracking": "AnyImprovement"}


#: CatBoost's default ``l2_leaf_reg``, in units of one row's Hessian.
_L2_LEAF_REG = 3.0


class _RecordingKit:
    """A kit for a generated CPU kernel's ``run`` (see :mod:`lossdsl.backend.cpu.runtime`)
    that runs each loop as the default kit does and records it, with its arguments."""

    def __init__(self) -> None:
        self.loops: list[tuple[Any, int, tuple]] = []
        self.casts = 0

    def loop(self, function: Any, count: int, *arguments: Any) -> tuple:
        """Run and record ``function(*arguments)``."""
        self.loops.append((function, count, arguments))
        return DIRECT.loop(function, count, *arguments)

    def cast(self, dtype: type, value: Any) -> Any:
        """Convert a scalar passed between loops (which makes a recording unreplayable)."""
        self.casts += 1
        return DIRECT.cast(dtype, value)


class _RowKernel:
    """The compiled kernel prepared for one row of ``num_class`` scores: input and output
    buffers bound once, so that a call is a copy in, a kernel run and a copy out.

    One per thread (CatBoost may call from several threads, each holding the GIL only for
    the duration of a call, and a thread switch between filling and reading a shared buffer
    would mix two rows). The Hessian policy is applied as :meth:`BoostingObjective.gradients`
    applies it (``"exact"``, ``"clip"``, ``"floor"``, ``"constant"``, then the scale)."""

    def __init__(self, objective: CatBoostObjective, num_class: int):
        summed = objective.compiled
        self.num_class = num_class
        self.scores = np.zeros((1, num_class))
        self.by_index = objective.label_kind == "index"
        self.labels = (np.zeros(1, dtype=np.int64) if self.by_index
                       else np.zeros((1, num_class)))
        self.weight = np.ones(1)
        self.policy = objective.policy
        wrt = (objective.wrt,)
        call = summed.bind_call(False, wrt, () if self.policy == "constant" else wrt,
                                objective.loss_inputs(self.labels, self.scores), self.weight)
        kernel, self.arguments, results = call.kernel, call.arguments, call.results
        given = [id(a) for a in self.arguments.values()]
        if not all(id(a) in given for a in (self.scores, self.labels, self.weight)):
            raise LossError("internal error: the kernel does not read the row buffers")
        kernel.execute(self.arguments)  # loads the machine code, checks it runs
        self.run = kernel.run
        # A serial kernel whose passes exchange no scalars is a fixed sequence of compiled
        # loops over these very buffers: call them directly, without run()'s NumPy error
        # state (the loops are Numba code, which it does not affect) and launch checks,
        # which cost more than the loops on one row.
        recording = _RecordingKit()
        kernel.run(**self.arguments, kit=recording)
        self.loops: list[tuple[Any, tuple]] | None = None
        if (objective.target == "cpu" and recording.casts == 0
                and all(count == 0 and not getattr(f, "targetoptions", {}).get("parallel")
                        for f, count, _ in recording.loops)):
            self.loops = [(f, arguments) for f, _, arguments in recording.loops]
        outputs = [array[0] for array in results.values()]
        self.gradient = outputs[0]
        self.hessian = outputs[1] if len(outputs) > 1 else None
        # the Hessian's final factor: hessian_scale, or what a preset makes of it for K
        self.factor = getattr(type(objective), "hessian_factor", None)
        self.matrix = [[0.0] * num_class for _ in range(num_class)]
        # memoryviews of the one-element buffers: stores through them are faster
        self.label_slot = memoryview(self.labels) if self.by_index else None
        self.weight_slot = memoryview(self.weight)

    def __call__(self, objective: CatBoostObjective, approx: Any, target: float,
                 weight: float) -> tuple[list[float], list[list[float]]]:
        """``(-gradient, -Hessian as a diagonal matrix)`` of ``objective`` (whose kernel and
        label form this was made for; its Hessian options are read here, per call). The
        matrix is this thread's, reused."""
        k = int(target)
        if k != target or not 0 <= k < self.num_class:
            raise LossDomainError(f"multiclass labels must be integers in [0, "
                                  f"{self.num_class}), got {target!r}")
        self.scores[0] = approx
        if self.by_index:
            self.label_slot[0] = k
        else:
            self.labels[0] = 0.0
            self.labels[0, k] = 1.0
        weight = float(weight)
        # the kernel multiplies every derivative by the weight: with its negative, it gives
        # CatBoost's negated derivatives directly (an exact sign change)
        self.weight_slot[0] = -weight
        if self.loops is None:
            self.run(**self.arguments)
        else:
            for function, arguments in self.loops:
                function(*arguments)
        policy = self.policy
        factor = objective.hessian_scale if self.factor is None \
            else self.factor(objective, self.num_class)
        matrix = self.matrix
        if policy == "constant":
            value = factor * (-objective.hessian_constant * weight)
            for j in range(self.num_class):
                matrix[j][j] = value
        else:
            # the policy's bound and the factor in one pass over the row: -max(h, floor) is
            # min(-h, -floor), written so that a NaN stays NaN (as min and np.maximum keep it)
            bound = (-objective.hessian_floor * weight if policy == "floor"
                     else 0.0 if policy == "clip" else None)
            j = 0
            if bound is None:
                for h in self.hessian.tolist():
                    matrix[j][j] = factor * h
                    j += 1
            else:
                for h in self.hessian.tolist():
                    matrix[j][j] = factor * (bound if bound < h else h)
                    j += 1
        return self.gradient.tolist(), matrix


class CatBoostObjective(BoostingObjective):
    """A CatBoost objective; see :func:`objective` and
    :class:`lossdsl.boosting.objective.BoostingObjective`."""

    # CatBoost calls calc_ders_range on batches of rows (1000, then 500 at a time) and, with
    # ordered boosting, on permutations of them, without saying which rows: per-row inputs
    # cannot be matched to their rows, so they are refused at construction.
    rows_supported = False
    library = "CatBoost"
    device_gradients = False
    #: CatBoost's Python package skips its Numba JIT attempt (and the warning that it cannot
    #: compile a method that uses ``self``) for objects with this attribute.
    no_jit = True
    #: Hessian policies the one-row path of :meth:`calc_ders_multi` applies itself; others
    #: go through :meth:`gradients` row by row (the same numbers, slower).
    _ROW_POLICIES = ("exact", "clip", "floor", "constant")

    def _setup(self) -> None:
        super()._setup()
        # CatBoost 1.2 gives a Python objective several scores per row only as a multiclass
        # (each label mapped to a class index: real labels become classes) or a multi-target
        # model (one label per score column): never K scores on one real label per row.
        if self.reads_score_columns:
            raise LossError(
                f"{self.loss.name or 'this loss'} reads several score columns of '{self.wrt}' "
                "(pick(z, 0), pick(z, 1), ...) with one real label per row, which CatBoost "
                "cannot train with a Python objective: it gives that several scores per row "
                "only as classes (every distinct label a class) or with one label per "
                "column. Train it with lossdsl.xgboost.train or lossdsl.lightgbm.train and "
                "num_class (docs/boosting.md, 'A mean and a spread from one model'), or use "
                "CatBoost's built-in RMSEWithUncertainty for a Gaussian mean and spread")
        if self.per_column:
            raise LossError(
                f"{self.loss.name or 'this loss'} has one score column per entry of its "
                "per-class vectors (several quantile levels) on one real label per row, which "
                "CatBoost cannot train with a Python objective (it gives several scores per "
                "row only as classes or with one label per column). Train it with "
                "lossdsl.xgboost.train or lossdsl.lightgbm.train and num_class (docs/"
                "boosting.md, 'Several quantiles from one model'), or use CatBoost's built-in "
                "MultiQuantile:alpha=...")

    def calc_ders_range(self, approxes: Sequence[float], targets: Sequence[float],
                        weights: Sequence[float] | None) -> np.ndarray:
        """``[[-dl/da, -d2l/da2], ...]`` for one batch of rows, weights applied: an (n, 2)
        float64 array, which CatBoost reads without a Python loop."""
        if self.class_axis:
            raise LossError(
                f"{self.loss.name or 'this loss'} is a loss over classes (a row of K scores), "
                "but CatBoost is training one score per row. With a Python objective "
                "CatBoost trains K scores only when told that there are K classes: use "
                "lossdsl.catboost.model_params(loss) (it adds the MultiClass custom_metric), "
                "or pass class_names=[...] or a multiclass eval_metric. For labels with two "
                "classes use a loss on one logit (bce_logits(y, p), cost_sensitive_bce(...))")
        scores = np.asarray(approxes, dtype=np.float64)
        gradient, hessian = self.gradients(np.asarray(targets, dtype=np.float64), scores,
                                           None if weights is None else np.asarray(weights))
        pairs = np.empty((scores.shape[0], 2))
        np.negative(gradient, out=pairs[:, 0])
        np.negative(hessian, out=pairs[:, 1])
        return pairs

    def calc_ders_multi(self, approx: Sequence[float], target: float,
                        weight: float | None) -> tuple[list[float], list[list[float]]]:
        """``(-gradient, -Hessian)`` for one row of K scores (the Hessian as a diagonal matrix).

        The returned matrix is reused by the next call of the same thread (CatBoost copies
        it at once)."""
        if weight is None:
            weight = 1.0
        try:  # the steady state: this thread's one-row kernel for rows of this length
            kernel = self.__dict__["_row_kernel_cache"][(threading.get_ident(), len(approx))]
        except KeyError:
            pass
        else:
            return kernel(self, approx, target, weight)
        if self.policy not in self._ROW_POLICIES:
            scores = np.asarray(approx, dtype=np.float64)[None, :]
            gradient, hessian = self.gradients(np.asarray([target], dtype=np.float64), scores,
                                               np.array([weight], dtype=np.float64))
            return (-gradient[0]).tolist(), np.diag(-hessian[0]).tolist()
        try:
            kernels = self.__dict__["_row_kernel_cache"]
        except KeyError:  # made here, not at construction: pickles arrive without
            kernels = self.__dict__.setdefault("_row_kernel_cache", {})
        key = (threading.get_ident(), len(approx))
        kernel = kernels.get(key)
        if kernel is None:
            kernel = kernels[key] = _RowKernel(self, key[1])
        return kernel(self, approx, target, weight)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_row_kernel_cache", None)
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> CatBoostObjective:
        # CatBoost deep-copies its parameters, the objective included, on every fit. The
        # copy shares the compiled kernels and the loss definition (see BoostingObjective)
        # and the one-row kernels (per thread, made for the shared compiled kernels).
        kernels = self.__dict__.pop("_row_kernel_cache", None)
        try:
            clone = super().__deepcopy__(memo)
        finally:
            if kernels is not None:
                self.__dict__["_row_kernel_cache"] = kernels
        if kernels is not None:
            clone.__dict__["_row_kernel_cache"] = kernels
        return clone


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR, hessian_constant: float = 1.0,
              hessian_scale: float = 1.0, inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None,
              columns: str | None = None) -> CatBoostObjective:
    """A CatBoost custom objective (``CatBoostRegressor(loss_function=...)``).

    Options as :func:`lossdsl.xgboost.objective`, except that ``inputs`` must be scalars:
    CatBoost calls objectives on batches and permutations of the rows without saying which,
    so per-row arrays are refused (a :class:`~lossdsl.LossError`); pass a per-row value that
    scales a row's whole loss as ``sample_weight``. CatBoost also needs an ``eval_metric``
    with it: :func:`model_params` gives both, and the leaf settings that suit the loss.
    """
    return CatBoostObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                             hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                             hessian_scale=hessian_scale, target=target, columns=columns)


def model_params(loss: str | Loss | CompiledLoss | CatBoostObjective, wrt: str | None = None,
                 label: str | None = None, *, hessian: str = "auto",
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR,
                 hessian_constant: float | None = None, hessian_scale: float = 1.0,
                 inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None, target: str | None = None,
                 labels: Any = None, sample_weight: Any = None,
                 classifier: bool | None = None, classes: Sequence[Any] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    """CatBoost constructor parameters that train ``loss``: ``CatBoostRegressor(**these)``.

    ``{"loss_function": objective, "eval_metric": metric}``: the mean loss as the eval
    metric, which CatBoost requires with a Python objective, reports as the learn and
    validation error and chooses the best iteration by. Plus :data:`LEAF_ESTIMATION` when
    the objective's Hessian policy is ``"constant"`` (losses whose Hessian is zero, such as
    ``asymmetric_l1``); that costs up to ten objective calls per tree instead of one.
    ``loss`` may be an objective made by :func:`objective`; otherwise the options are
    :func:`objective`'s. ``overrides`` are further CatBoost parameters (``iterations=500``,
    ``leaf_estimation_iterations=1``, ...), which win.

    ``labels`` (and ``sample_weight``): the training labels, optional. With a constant
    Hessian a leaf's step is its mean gradient divided by ``hessian_constant``: in units of
    money per unit of the label for a cost, so a step of 1 is far too short for labels in
    the thousands and far too long for labels below 1. Given the labels (one value per
    row), ``hessian_constant`` defaults to :func:`label_scaled_hessian`: the mean absolute
    gradient at the init score per standard deviation of the labels, which makes a step
    about one standard deviation of the labels where all of a leaf's gradients agree (the
    backtracking of :data:`LEAF_ESTIMATION` shortens steps that overshoot). With a constant
    Hessian, ``l2_leaf_reg`` is set to ``3 * hessian_constant``: CatBoost's default of 3
    rows' worth of curvature, which a Hessian far from 1 per row would otherwise turn
    into no regularisation or into leaves that hardly move.

    Measured (3,000 training and 3,000 held-out rows, 100 trees of depth 6, learning rate
    0.1; held-out cost of ``asymmetric_l1(y, p, 4, 1)`` relative to CatBoost's
    ``Quantile:alpha=0.8`` with the same trees): ``model_params(..., labels=y)`` +0.7%,
    -1.3% and -1.1% on three data sets (the third with labels in the hundreds), -0.2% and
    -0.1% with the first one's labels multiplied by 100 and by 0.01; CatBoost's defaults
    for a Python objective (one Newton step per leaf, ``hessian_constant=1``) +36%, +37%,
    +144%, +148% and +456%. The ten leaf steps cost up to ten objective calls per tree
    instead of one: training took 2.2-2.9x the built-in's time, against 1.2-2.9x for one
    step (fastest of 3 interleaved runs each, on 2 cores shared with other jobs).

    Classifiers: with a Python objective and metric CatBoost does not know that it is
    classifying: it trains one score per row and saves the model without its class labels,
    so ``predict`` fails (an IndexError in CatBoost). ``classifier=True`` adds CatBoost's
    ``Logloss`` (one score) or ``MultiClass`` (a loss over classes, K scores) as a
    ``custom_metric``, which tells it: labels are then mapped to 0..K-1 as for its built-in
    objectives, ``predict`` returns them and ``predict_proba`` the sigmoid or softmax of the
    raw scores. ``classifier`` defaults to True for losses over classes (``sparse_cce_logits``)
    and, given ``labels`` of two values, for a one-score loss whose label is declared within
    [0, 1] (``bce_logits``, ``cost_sensitive_bce``, ``focal_logits``); otherwise to False, so
    pass ``classifier=True`` for another one-score classification loss (or without
    ``labels``; a regressor takes the extra metric as it is). ``classes`` (the labels, e.g.
    ``np.unique(y)``) tells it as CatBoost's ``class_names`` instead. (``classes_count`` is
    no substitute: CatBoost 1.2.10 then trains K scores but still saves no labels.)
    """
    if isinstance(loss, CatBoostObjective):
        obj = loss
    else:
        obj = objective(loss, wrt, label, hessian=hessian, hessian_floor=hessian_floor,
                        hessian_constant=1.0 if hessian_constant is None else hessian_constant,
                        hessian_scale=hessian_scale, inputs=inputs, params=params,
                        target=target)
        if hessian_constant is None and labels is not None and obj.policy == "constant":
            obj.hessian_constant = label_scaled_hessian(obj, labels, sample_weight)
    result: dict[str, Any] = {"loss_function": obj, "eval_metric": metric(obj)}
    if classifier is None:
        classifier = obj.class_axis or (labels is not None and _two_classes(obj, labels))
    if classes is not None:
        result["class_names"] = list(classes)
    elif classifier:
        result["custom_metric"] = ["MultiClass" if obj.class_axis else "Logloss"]
    if obj.policy == "constant":
        result.update(LEAF_ESTIMATION)
        result["l2_leaf_reg"] = _L2_LEAF_REG * obj.hessian_constant
    result.update(overrides)
    return result


def _two_classes(objective: BoostingObjective, labels: Any) -> bool:
    """Whether a one-score loss classifies ``labels``: its label is declared within [0, 1]
    (``bce_logits``, ``cost_sensitive_bce``, ``focal_logits``) and the labels take two
    values, which a classifier maps to 0 and 1 (in sorted order) before the loss sees them.
    Not for two soft labels inside [0, 1] other than 0 and 1 (0.2 and 0.7): the Logloss
    metric makes even a CatBoostRegressor hand the objective 0 and 1 instead of them."""
    low, high = label_bounds(objective.compiled.input_domains().get(objective.label, ()))
    values = np.unique(np.asarray(labels))
    if not (low >= 0 and high <= 1 and values.shape == (2,)):
        return False
    if values.dtype.kind in "biuf" and values[0] >= 0 and values[1] <= 1:
        return bool(values[0] == 0 and values[1] == 1)
    return True


def label_scaled_hessian(objective: BoostingObjective, labels: Any,
                         sample_weight: Any = None) -> float:
    """A ``hessian_constant`` that makes a constant-Hessian leaf step about one standard
    deviation of ``labels`` where all of the leaf's gradients agree: the (weighted) mean
    absolute gradient at the init score divided by the labels' standard deviation.

    Falls back to 1.0 where that is not a positive finite number (constant labels, a zero
    gradient everywhere). Labels must be one value per row (a loss on one score)."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 1 or objective.class_axis:
        raise LossShapeError("labels= scales the step of a loss on one score per row; give "
                             "one label per row, or hessian_constant= yourself")
    w = objective.weight_array(sample_weight, y.shape[0])
    start = objective.init_score(y, w)
    gradient, _ = objective.gradients(y, np.full(y.shape, start))
    weights = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    mean = np.average(y, weights=weights)
    spread = math.sqrt(np.average((y - mean) ** 2, weights=weights))
    value = float(np.average(np.abs(gradient), weights=weights)) / spread if spread else 0.0
    return value if math.isfinite(value) and value > 0 else 1.0


class CatBoostMetric:
    """A CatBoost metric object: the weighted mean loss at the raw scores, lower is better."""

    #: CatBoost skips its Numba JIT attempt (and its warning) for objects with this attribute.
    no_jit = True

    def __init__(self, objective: BoostingObjective):
        self.objective = objective

    def is_max_optimal(self) -> bool:
        """Lower loss is better."""
        return False

    def evaluate(self, approxes: Sequence[Sequence[float]], target: Sequence[float],
                 weight: Sequence[float] | None) -> tuple[float, float]:
        """``(weighted loss sum, weight sum)`` over the rows given."""
        scores = np.asarray(approxes, dtype=np.float64)
        scores = scores[0] if scores.shape[0] == 1 else np.ascontiguousarray(scores.T)
        labels = np.asarray(target, dtype=np.float64)
        weights = None if weight is None else np.asarray(weight, dtype=np.float64)
        total = self.objective.value(labels, scores, weights)
        weight_sum = float(np.sum(weights)) if weights is not None else float(len(labels))
        return total * weight_sum, weight_sum

    def get_final_error(self, error: float, weight: float) -> float:
        """The weighted mean loss."""
        return error / weight if weight else 0.0


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None) -> CatBoostMetric:
    """A CatBoost ``eval_metric`` object computing the mean loss (scalar ``inputs`` only, as
    for :func:`objective`: CatBoost evaluates metrics on batches of rows too)."""
    if isinstance(loss, BoostingObjective):
        source = loss
        if source.row_inputs():  # an XGBoost/LightGBM objective's per-row inputs: refused
            CatBoostObjective(source.loss, source.wrt, source.label, inputs=source.inputs,
                              params=source.params, hessian="exact", target=source.target)
    else:
        source = CatBoostObjective(loss, wrt, label, inputs=inputs, params=params,
                                   hessian="exact", target=target)
    return CatBoostMetric(source)


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant raw score for labels ``y``, for CatBoost's ``baseline`` (per-row
    ``inputs`` belong to the rows of ``y``; see :func:`lossdsl.xgboost.init_score`)."""
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu",
                             rows=y)
    return objective.init_score(y, sample_weight, num_class)
