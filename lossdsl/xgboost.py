"""XGBoost custom objectives and metrics from lossdsl losses.

    import xgboost as xgb
    import lossdsl.xgboost

    obj = lossdsl.xgboost.objective("40*y*softplus(-p) + (1 - y)*softplus(p)")
    dtrain = xgb.DMatrix(X, y, weight=w)
    booster = xgb.train({"base_score": obj.init_score(y, w)}, dtrain, 100, obj=obj,
                        custom_metric=lossdsl.xgboost.metric(obj))

    model = xgb.XGBRegressor(objective=lossdsl.xgboost.objective("pseudo_huber(y, p)"))
    model.fit(X, y, sample_weight=w)

One object serves both APIs: called as ``obj(predt, dtrain)`` (native ``xgb.train``) it reads
the labels and weights from the DMatrix; called as ``obj(y_true, y_pred, sample_weight=...)``
(the scikit-learn wrapper passes ``sample_weight`` because the signature names it) it uses
what it is given. Either way the weights are applied (XGBoost leaves that to custom
objectives), the predictions are raw margins, and multiclass or multi-target gradients are
returned as ``(n_samples, n_classes)`` arrays (XGBoost >= 2.1; older versions' flat arrays
are accepted too). Gradient and Hessian come from one fused, multi-threaded kernel call.

Starting score: XGBoost does not estimate an intercept for a custom objective (it uses
``base_score=0.5`` as a margin). ``init_score`` gives the optimal constant margin; pass it as
``params["base_score"]`` with ``xgb.train`` (stored in the model) or as ``base_margin`` for
vectors (multiclass) and the scikit-learn classes (and again at prediction time). It raises
a ``LossError`` when no finite margin is optimal (a non-convex expected cost, labels all in
one class) rather than returning a huge one.

Per-row inputs (a value per training row that is not the label): build the objective with
``inputs={"clv": clv}, rows=y`` (or ``rows=dtrain``); it checks on every call that it runs on
those rows, in that order, and refuses a cross-validation fold or a shuffled copy.

Training with exact leaves: :func:`train` runs the boosting loop itself and refits every
leaf of each new tree to the minimiser of the loss over its rows (``refit="auto"``: for
losses whose Hessian is 0 everywhere or on a region, such as MAE, quantile,
``asymmetric_l1`` or a Huber-smoothed cost, which otherwise get first-order leaves). It
starts from the optimal constant and stores it in the model, so that
``booster.predict(xgb.DMatrix(X), output_margin=True)`` is the model's whole raw score:

    obj = lossdsl.xgboost.objective("asymmetric_l1(y, p, 4, 1)")
    booster = lossdsl.xgboost.train(obj, {"eta": 0.1, "max_depth": 6}, dtrain, 200,
                                    evals=[("valid", dvalid, obj_valid)],
                                    early_stopping_rounds=20)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from .api import CompiledLoss, Loss
from .boosting.leaves import (
    EvalTracker,
    check_train_options,
    eval_objective,
    learning_rate,
    leaves_from_changes,
    refit_round,
    refuse_constrained_refit,
    score_changes,
    use_refit,
)
from .boosting.objective import (
    DEFAULT_HESSIAN_FLOOR,
    BoostingObjective,
    as_objective,
    group_ids,
)
from .errors import LossError

__all__ = ["XGBoostMetric", "XGBoostObjective", "init_score", "metric", "objective", "train"]


def _groups(dmatrix: xgb.DMatrix, objective: BoostingObjective) -> np.ndarray | None:
    """Each row's query number from a DMatrix built with ``qid=`` or ``group=`` (None
    without), for a loss that takes its groups from the library; None for any other
    (XGBoost's getter costs about 50 us a call, a third of a round's objective call at
    3,000 rows)."""
    if not objective.takes_library_groups:
        return None
    return group_ids(offsets=dmatrix.get_uint_info("group_ptr"))


def _row_weights(dmatrix: xgb.DMatrix, to_mean_one: bool = False) -> np.ndarray:
    """A DMatrix's weights, one per row: a ranking DMatrix's weights are one per query
    group (XGBoost's convention for ``qid=``/``group=`` data), repeated over its rows, and
    first rescaled to mean 1 over the queries when ``to_mean_one`` (as XGBoost's ranking
    objectives do)."""
    weight = dmatrix.get_weight()
    if weight.size and (to_mean_one or weight.size != dmatrix.num_row()):
        offsets = dmatrix.get_uint_info("group_ptr")  # ~50 us: only where it may count
        if offsets.size == weight.size + 1:  # one weight per query group
            if to_mean_one:
                weight = weight / weight.mean(dtype=np.float64)
            return np.repeat(weight, np.diff(offsets.astype(np.int64)))
    return weight


def _labels(dmatrix: xgb.DMatrix) -> np.ndarray:
    """A DMatrix's labels; a survival DMatrix with bounds alone is refused with what to
    do (a lossdsl loss reads its labels, and the upper bounds as an input)."""
    label = dmatrix.get_label()
    if label.size == 0 and dmatrix.get_float_info("label_lower_bound").size:
        raise LossError("this DMatrix holds label_lower_bound / label_upper_bound but no "
                        "label: give the lower bounds as label= and the upper bounds as the "
                        "loss's input (inputs={'u': upper}, as in aft_normal(y, z, y_upper=u))")
    return label


class XGBoostObjective(BoostingObjective):
    """An XGBoost objective; see :func:`objective` and
    :class:`lossdsl.boosting.objective.BoostingObjective`."""

    library = "XGBoost"

    def __call__(self, first: Any, second: Any, *,
                 sample_weight: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(grad, hess)``: native ``obj(predt, dtrain)`` or sklearn ``obj(y_true, y_pred)``."""
        if isinstance(second, xgb.DMatrix):
            return self._native(first, second)
        return self.gradients(first, second, sample_weight)

    def _native(self, predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        n = dtrain.num_row()
        flat = predt.ndim == 1 and predt.shape[0] != n  # XGBoost < 2.1: flat (n*K,) margins
        prediction = predt.reshape(n, -1) if flat else predt
        gradient, hessian = self.gradients(
            _labels(dtrain), prediction, _row_weights(dtrain, self.query_weights_to_mean_one),
            container=dtrain, groups=_groups(dtrain, self))
        if flat:
            return gradient.reshape(-1), hessian.reshape(-1)
        return gradient, hessian


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR,
              hessian_constant: float | str = 1.0, hessian_scale: float = 1.0,
              inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None, rows: Any = None,
              like: str | None = None,
              columns: str | None = None) -> XGBoostObjective:
    """An XGBoost custom objective (``xgb.train(obj=...)`` or ``XGBRegressor(objective=...)``).

    ``wrt``/``label`` name the margin and label inputs (guessed: label ``y`` or the first of
    two inputs). ``hessian`` is the Hessian policy: ``"auto"`` (default: exact, floored at
    1e-16; constant 1 per unit weight for losses whose Hessian is 0 everywhere, such as MAE
    or quantile, or on a whole region, such as Huber outside its quadratic zone),
    ``"exact"``, ``"clip"`` (negatives to 0), ``"floor"`` (at ``hessian_floor``) or
    ``"constant"`` (``hessian_constant``; ``"auto"``: a step size from the labels' scale,
    see ``BoostingObjective.step_constant``). ``hessian_scale`` multiplies the Hessian;
    ``like`` instead names the built-in whose Hessian convention and start score to
    reproduce (``"multi:softprob"``, ``"count:poisson"`` with ``objective.booster_params``,
    ...: ``lossdsl.boosting.objective.PRESETS``). ``inputs`` gives the
    loss's other inputs (scalars or one value per row), ``params`` overrides its params,
    ``target`` is "cpu" (default; XGBoost's own threads keep the cores busy), "parallel", or
    "cuda" for boosters trained with ``device="cuda"``: the kernels then run on the GPU and,
    with CuPy installed, return CuPy gradients and Hessians that XGBoost takes where they
    are (labels, weights and per-row inputs are copied to the GPU once; only the margins
    XGBoost hands over on the host travel each round). Without a GPU (Numba's simulator) or
    without CuPy the CUDA kernels read and write NumPy arrays.

    ``columns``: with ``num_class`` K score columns and a loss that is elementwise in the
    score (``bce_logits``, ``quantile``), what each column's label is: ``"onehot"`` (one
    against the rest) or ``"same"`` (the row's label in every column); refused when not said.

    Per-row ``inputs`` (one value per training row, e.g. a customer's value) need ``rows``:
    the training labels in the same order, or the training ``DMatrix``. The objective then
    refuses other rows: a fold of ``xgb.cv`` or ``cross_val_score`` (a
    :class:`~lossdsl.LossShapeError` naming the input), or a shuffled ``X, y`` (a
    :class:`~lossdsl.LossError`), instead of pairing the values with the wrong rows.
    """
    return XGBoostObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                            hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                            hessian_scale=hessian_scale, target=target, rows=rows,
                            like=like, columns=columns)


class XGBoostMetric:
    """An evaluation metric: the (weighted) mean loss at the raw margins.

    Native: ``xgb.train(custom_metric=m)`` calls ``m(predt, dmatrix) -> (name, value)``.
    scikit-learn: ``XGBRegressor(eval_metric=m)`` calls ``m(y_true, y_pred, sample_weight=)``.
    With a custom objective XGBoost passes raw margins, which is what the loss expects; with a
    built-in objective it passes transformed predictions (probabilities), so write the loss
    on those.
    """

    def __init__(self, objective: BoostingObjective, name: str):
        self.objective = objective
        self.__name__ = name  # XGBoost's scikit-learn wrapper names the metric after __name__

    def __call__(self, first: Any, second: Any, *,
                 sample_weight: Any = None) -> tuple[str, float] | float:
        """``(name, value)`` for the native API, the value alone for the sklearn API."""
        if isinstance(second, xgb.DMatrix):
            n = second.num_row()
            prediction = first.reshape(n, -1) if first.ndim == 1 and first.shape[0] != n \
                else first
            value = self.objective.value(_labels(second), prediction, _row_weights(second),
                                         container=second,
                                         groups=_groups(second, self.objective))
            return self.__name__, value
        return self.objective.value(first, np.asarray(second), sample_weight)


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, name: str | None = None,
           inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None, rows: Any = None) -> XGBoostMetric:
    """An XGBoost evaluation metric computing the mean loss (lower is better).

    ``loss`` may be an objective made by :func:`objective`, whose roles, inputs, params and
    ``rows`` it reuses (a metric with per-row inputs evaluates only the rows they belong
    to). ``name`` defaults to the loss's name (or "lossdsl").
    """
    source = as_objective(loss, wrt, label, inputs=inputs, params=params, target=target,
                          rows=rows)
    return XGBoostMetric(source, name or source.loss.name or "lossdsl")


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant margin (``base_score`` / ``base_margin``) for labels ``y``.

    1-D Newton on the summed, weighted loss (bisection-safeguarded, so MAE and quantile reach
    the weighted median/quantile); a vector of ``num_class`` margins for losses over classes.
    Per-row ``inputs`` belong to the rows of ``y``. Raises :class:`~lossdsl.LossError` when
    no finite margin is optimal (a non-convex expected cost, labels all in one class): see
    :meth:`lossdsl.boosting.objective.BoostingObjective.init_score`.
    """
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu",
                             rows=y)
    return objective.init_score(y, sample_weight, num_class)


# ---------------------------------------------------------------------- training
def _trees(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    return model["learner"]["gradient_booster"]["model"]["trees"]


def _leaf_values(tree: Mapping[str, Any], count: int) -> np.ndarray:
    """(count,) a JSON tree's leaf values by node id (NaN for split nodes)."""
    values = np.full(count, np.nan)
    for nid, (left, value) in enumerate(zip(tree["left_children"], tree["split_conditions"])):
        if left == -1 and nid < count:
            values[nid] = value
    return values


def _edit_leaves(booster: xgb.Booster, edits: Mapping[int, np.ndarray],
                 offsets: Mapping[int, float]) -> xgb.Booster:
    """A copy of ``booster`` whose tree t has leaf values ``edits[t]`` (by node id) plus
    ``offsets[t]``: XGBoost has no leaf setter, so the model goes through its JSON form."""
    model = json.loads(bytes(booster.save_raw("json")))
    trees = _trees(model)
    for t in set(edits) | set(offsets):
        tree = trees[t]
        values = edits.get(t)
        offset = float(offsets.get(t, 0.0))
        for nid, left in enumerate(tree["left_children"]):
            if left != -1:
                continue
            value = tree["split_conditions"][nid]
            if values is not None and nid < values.shape[0] and np.isfinite(values[nid]):
                value = float(values[nid])
            value = float(np.float32(value + offset))
            tree["split_conditions"][nid] = value
            tree["base_weights"][nid] = value
    edited = xgb.Booster()
    edited.load_model(bytearray(json.dumps(model).encode()))
    edited.load_config(booster.save_config())
    return edited


def _categories(booster: xgb.Booster) -> Any:
    """The model's categorical encodings (its JSON's ``cats``): the training data's
    categories, by which XGBoost re-codes a DataFrame's categorical columns at prediction
    time."""
    return json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"][
        "model"].get("cats")


def _slice(booster: xgb.Booster, begin: int, end: int, categories: Any) -> xgb.Booster:
    """``booster[begin:end]`` predicting as the whole model does. XGBoost's slice (3.2) drops
    the categorical encodings, so a slice codes a DataFrame's categories by the order its
    own dtype lists them in, not by the training data's: a frame whose categories are listed
    in another order reaches other leaves, silently. ``categories``: the whole model's
    (from :func:`_categories`), put back into the slice; None where it has none."""
    sliced = booster[begin:end]
    if not categories:
        return sliced
    model = json.loads(bytes(sliced.save_raw("json")))
    model["learner"]["gradient_booster"]["model"]["cats"] = categories
    restored = xgb.Booster()
    restored.load_model(bytearray(json.dumps(model).encode()))
    restored.load_config(sliced.save_config())
    return restored


#: Training rows from which leaf indices come from XGBoost's cached margins (pred_leaf below).
_MARGIN_ROWS = 10_000


class _CachedMargins:
    """XGBoost's cached margins of the training rows (with the library's own leaf values:
    the model is edited only at the end), read after each tree: their change is the tree's
    output per row. ``last``: the margins before the newest tree."""

    def __init__(self, booster: xgb.Booster, dmatrix: xgb.DMatrix, shape: tuple[int, ...]):
        self.booster = booster
        self.dmatrix = dmatrix
        self.shape = shape
        self.last: np.ndarray | None = None

    def read(self) -> np.ndarray:
        """The margins now (from XGBoost's prediction cache: a copy of n floats)."""
        margin = self.booster.predict(self.dmatrix, output_margin=True, training=True)
        return np.asarray(margin, dtype=np.float64).reshape(self.shape)


def _round_leaves(tree: xgb.Booster, dmatrix: xgb.DMatrix, library_values: Any,
                  before: np.ndarray | None, after: np.ndarray) -> np.ndarray:
    """(n, trees of the round) each training row's leaf (node id) in the round's trees.

    From the change of XGBoost's cached margins, matched to the trees' float32 leaf values
    (a copy of n floats and one small JSON read, instead of ``pred_leaf`` over the rows:
    measured 1.8 ms a tree at 40,000 rows); ``pred_leaf`` on the one-tree slice for the
    rows that leaves ambiguous (leaves whose values are equal to float32 rounding)."""
    n = after.shape[0]
    if before is None:
        return tree.predict(dmatrix, pred_leaf=True).astype(np.intp).reshape(n, -1)
    delta, largest = score_changes(before, after)
    leaves = np.empty(delta.shape, dtype=np.intp)
    unresolved = np.zeros(n, dtype=bool)
    for t in range(delta.shape[1]):
        values = library_values(t)
        ids = np.flatnonzero(np.isfinite(values))
        scale = largest + float(np.max(np.abs(values[ids]), initial=0.0))
        found, missing = leaves_from_changes(delta[:, t], values[ids], scale, np.float32)
        leaves[:, t] = ids[found]
        unresolved |= missing
    if unresolved.any():
        rows = np.flatnonzero(unresolved)
        whole = rows.size > 0.25 * n
        subset = dmatrix if whole else dmatrix.slice(rows)
        found = tree.predict(subset, pred_leaf=True).astype(np.intp).reshape(-1, delta.shape[1])
        leaves[rows] = found[rows] if whole else found
    return leaves


def _start_scores(dmatrix: xgb.DMatrix, base: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A DMatrix's starting raw scores as XGBoost's predict gives them: its base_margin
    where it has one (which replaces the base score), else the base score."""
    margin = dmatrix.get_base_margin()
    if margin is not None and np.size(margin):
        return np.asarray(margin, dtype=np.float32).astype(np.float64).reshape(shape)
    return np.zeros(shape) + base


def train(objective: Any, params: Mapping[str, Any], train_set: xgb.DMatrix,
          num_boost_round: int = 100, *, refit: bool | str = "auto",
          evals: Sequence[tuple] = (), early_stopping_rounds: int | None = None,
          init_score: bool = True,
          evals_result: MutableMapping[str, Any] | None = None) -> xgb.Booster:
    """Train an XGBoost model on a lossdsl objective, with exact leaf values.

    ``objective``: an :class:`XGBoostObjective` (or anything :func:`objective` accepts)
    built for the rows of ``train_set`` (per-row inputs with ``rows=train_set`` or the
    training labels). ``params``: XGBoost's params (tree booster; ``eta``/``learning_rate``
    default 0.3); a ``params["objective"]`` other than ``"reg:squarederror"`` is refused
    (the gradients come from the lossdsl objective), and so are ``booster`` other than
    ``gbtree``, ``multi_strategy="multi_output_tree"`` and ``num_parallel_tree`` > 1.
    ``train_set``: the training ``xgb.DMatrix``; rows' leaves come from
    ``predict(pred_leaf=True)`` on the round's slice of the model (XGBoost predicts leaves
    only from the first tree on).

    ``refit``: after each tree, set every leaf to ``eta * c_j`` with ``c_j`` the minimiser
    of the weighted loss over the leaf's rows (see :func:`lossdsl.boosting.leaves.solve_leaves`;
    what XGBoost's own quantile and L1 objectives do with ``UpdateTreeLeaf``, ignoring
    ``lambda``/``alpha`` as they do). ``"auto"`` (default) refits when the objective's
    Hessian policy is ``"constant"`` (Hessian 0 everywhere or on a region: MAE, quantile,
    asymmetric L1, Huber-smoothed costs), not for a ``like=`` preset (its built-in keeps its
    first-order leaves); ``True``/``False`` force it. A leaf with no
    finite minimiser (or zero weight) keeps XGBoost's value. XGBoost has no leaf setter:
    the training loop keeps the refitted model's scores itself (the gradients of each
    round are taken there, handed to ``Booster.boost``) and the new leaf values are
    written into the model once, at the end, through its JSON form (``save_raw("json")``,
    edit, ``load_model``: one pass over the model, milliseconds for hundreds of trees).
    Leaf values are float32 in XGBoost, and the scores kept here use them so rounded.
    For losses over classes (``num_class``) or several targets, each round's trees are
    refitted one after another, the other columns held. Refit uses all training rows.

    ``init_score``: start from the objective's optimal constant score, added to the first
    round's leaves (base_score is 0), so that ``predict(..., output_margin=True)`` is the
    whole raw score. An expected cost (no finite optimal constant) starts from its
    cost-weighted surrogate's optimum (``init_score(unbounded="surrogate")``); any other
    loss without a finite optimal constant (labels all in one class) raises that
    :class:`~lossdsl.LossError`. With ``init_score=False`` the model starts at
    ``params["base_score"]`` (default 0: XGBoost's own estimate would be that of squared
    error), or at the DMatrix's ``base_margin`` if it has one (which, as in XGBoost,
    replaces the base score, and which predict uses only when the prediction's DMatrix has
    one too). The constant folded in is
    ``booster.lossdsl_init_score`` (0 with ``init_score=False``).

    ``evals``: ``(name, xgb.DMatrix, objective for those rows)`` tuples (or ``(name,
    DMatrix)`` when the objective has no per-row inputs), each scored every round as the
    weighted mean loss of the refitted model, from scores kept here tree by tree. The
    history is ``booster.lossdsl_evals`` and goes into ``evals_result`` when given.
    ``early_stopping_rounds``: stop when the last set's loss has not improved for that many
    rounds; the returned model is cut at the best round (``booster.best_iteration``,
    0-based as XGBoost's, and ``best_score`` are set). Without it the model keeps every
    round: ``evals`` only watch, as in ``xgb.train``.

    Cost per round, on top of XGBoost's tree: one gradient call; with refit, a one-round
    slice of the model, each training row's leaf (from the change of XGBoost's cached
    margins from 10,000 rows, else a ``pred_leaf`` pass on the slice) and the leaf search
    (4 kernel calls for piecewise-linear losses); one ``pred_leaf`` pass over each
    evaluation set. Measured (docs/boosting.md): 0.8-0.85x the built-in quantile
    objective's time at 40,000 rows, 1.35-1.6x at 4,558. (XGBoost 3.2's
    experimental ``TreeObjective`` and its ``refresh`` updater both set leaves to Newton
    steps of given gradients, so neither can hold an exact minimiser: hence the JSON edit.)
    """
    if not isinstance(objective, BoostingObjective):
        objective = globals()["objective"](objective)
    objective.restart_draws()  # the same draws as a first training
    num_rounds = check_train_options(num_boost_round, refit, objective)
    if not isinstance(train_set, xgb.DMatrix):
        raise LossError(f"train_set must be an xgb.DMatrix, not {type(train_set).__name__}")
    # decided after the first gradients: "auto" reads the objective's Hessian policy, which
    # is chosen on its first training call (with that call's dtypes and weights)
    do_refit = False
    params = dict(params or {})
    given_objective = params.pop("objective", None)
    if given_objective not in (None, "reg:squarederror") and given_objective is not objective:
        raise LossError(f"params['objective']={given_objective!r} conflicts with the lossdsl "
                        "objective being trained; leave it out")
    if params.get("booster", "gbtree") != "gbtree":
        raise LossError(f"lossdsl.xgboost.train needs booster='gbtree', not "
                        f"{params['booster']!r} (dart rescales earlier trees, gblinear has no "
                        "leaves)")
    if params.get("multi_strategy", "one_output_per_tree") != "one_output_per_tree":
        raise LossError("multi_strategy='multi_output_tree' has vector leaves; train with "
                        "one_output_per_tree")
    if int(params.get("num_parallel_tree", 1) or 1) != 1:
        raise LossError("num_parallel_tree > 1 grows a forest each round, whose trees share "
                        "rows and add up; lossdsl.xgboost.train refits one tree per class or "
                        "target each round: leave num_parallel_tree at 1")
    rate = learning_rate(params, ("eta", "learning_rate"), 0.3)
    label = train_set.get_label()
    weight = _row_weights(train_set)
    weight = None if weight is None or np.size(weight) == 0 else np.asarray(weight)
    n = train_set.num_row()
    num_class = int(params.get("num_class", 0) or 0)
    if num_class < 2:
        num_class = 1
        if label.ndim == 2 and label.shape[1] > 1:
            num_class = label.shape[1]
    objective.check_score_columns(num_class)
    shape: tuple[int, ...] = (n,) if num_class == 1 else (n, num_class)
    if init_score:
        if params.get("base_score") is not None:
            raise LossError("params['base_score'] is set, and train() starts from the "
                            "objective's optimal constant (init_score=True): leave "
                            "base_score out, or pass init_score=False to start from it")
        margin = train_set.get_base_margin()
        if margin is not None and np.size(margin):
            raise LossError("the training DMatrix has a base_margin, and train() starts from "
                            "the objective's optimal constant (init_score=True): drop the "
                            "base_margin, or pass init_score=False to start from it")
        start = np.asarray(objective.init_score(label, weight,
                                                None if num_class == 1 else num_class,
                                                unbounded="surrogate"),
                           dtype=np.float64)
        base = 0.0
    else:
        start = np.zeros(num_class) if num_class > 1 else np.zeros(())
        base = float(np.float32(params.get("base_score", 0.0) or 0.0))
    params["base_score"] = base
    scores = _start_scores(train_set, base, shape) + start

    booster = xgb.Booster(params, [train_set])
    entries = []
    for entry in evals:
        if len(entry) not in (2, 3) or not isinstance(entry[1], xgb.DMatrix):
            raise LossError("evals must hold (name, xgb.DMatrix, objective for those rows) "
                            "tuples")
        name, data = entry[0], entry[1]
        scorer = eval_objective(entry, objective, "xgb.DMatrix")
        rows = data.num_row()
        eval_shape = (rows,) if num_class == 1 else (rows, num_class)
        eval_weight = _row_weights(data)
        entries.append((name, data.get_label(),
                        None if np.size(eval_weight) == 0 else eval_weight,
                        _start_scores(data, base, eval_shape) + start, scorer, data))
    tracker = EvalTracker(entries, early_stopping_rounds)

    edits: dict[int, np.ndarray] = {}
    rounds = 0
    categories = None  # the model's categorical encodings, read after the first tree
    # leaf indices from the cached margins pay off from about 10,000 rows: pred_leaf costs
    # ~45 ns a row (1.8 ms at 40,000), the margins' copy, the tree's JSON and pred_leaf on
    # the rows of equal-valued leaves ~0.5 ms a tree (measured: 0.91x -> 0.82x the
    # built-in's time at 40,000 rows, 1.45x -> 1.57x at 4,558)
    margins = _CachedMargins(booster, train_set, shape) if n >= _MARGIN_ROWS else None
    for iteration in range(num_rounds):
        gradient, hessian = objective.gradients(label, scores, weight, container=train_set)
        if margins is not None and margins.last is None and (iteration == 0 or do_refit):
            margins.last = margins.read()
        booster.boost(train_set, iteration, grad=gradient, hess=hessian)
        rounds = iteration + 1
        if iteration == 0:
            do_refit = use_refit(refit, objective)
            if do_refit:
                refuse_constrained_refit(params)
            categorical = "c" in (train_set.feature_types or ())
            categories = _categories(booster) if categorical else None
        # the round's trees as a model of their own, made only where needed: XGBoost's
        # slice costs ~0.7 ms (measured at 3,000 rows: more than the round's tree)
        sliced: list[xgb.Booster] = []
        cache: list[list[dict[str, Any]]] = []

        def tree(sliced: list = sliced, iteration: int = iteration,
                 categories: Any = categories if entries else None) -> xgb.Booster:
            if not sliced:
                # the training rows' categories are coded as the model's; another set's
                # need the model's encodings back in the slice
                sliced.append(_slice(booster, iteration, iteration + 1, categories))
            return sliced[0]

        def library_values(t: int, count: int | None = None, tree: Callable = tree,
                           cache: list = cache) -> np.ndarray:
            if not cache:
                cache.append(_trees(json.loads(bytes(tree().save_raw("json")))))
            nodes = cache[0][t]
            return _leaf_values(nodes, len(nodes["left_children"]) if count is None else count)

        if do_refit:
            if margins is None:
                leaves = tree().predict(train_set, pred_leaf=True).astype(np.intp).reshape(n, -1)
            else:
                after = margins.read()
                leaves = _round_leaves(tree(), train_set, library_values, margins.last, after)
                margins.last = after
            values, _ = refit_round(objective, label, weight, scores, leaves, library_values,
                                    rate, do_refit, store_dtype=np.float32)
            for t, tree_values in enumerate(values):
                edits[iteration * leaves.shape[1] + t] = tree_values
        else:
            # XGBoost's own leaves: its cached training margins are the model's (but the
            # init score, added to the first trees at the end)
            margin = booster.predict(train_set, output_margin=True, training=True)
            scores[...] = np.asarray(margin, dtype=np.float64).reshape(shape) + start
            values = [library_values(t) for t in range(num_class)] if entries else []
        for index, (_, _, _, _, _, data) in enumerate(entries):
            eval_leaves = tree().predict(data, pred_leaf=True).astype(np.intp)
            eval_leaves = eval_leaves.reshape(data.num_row(), -1)
            for t, tree_values in enumerate(values):
                tracker.add_tree(index, eval_leaves[:, t], tree_values,
                                 None if num_class == 1 else t)
        if tracker.record(iteration):
            break
    offsets = {}
    if init_score and rounds:
        offsets = {t: float(value) for t, value in enumerate(np.reshape(start, -1))}
    if edits or offsets:
        booster = _edit_leaves(booster, edits, offsets)
    stopping = bool(tracker.sets) and early_stopping_rounds is not None
    if stopping and tracker.best_round + 1 < rounds:  # evals alone only watch (xgb.train)
        booster = _slice(booster, 0, tracker.best_round + 1, categories)
    if stopping:
        booster.set_attr(best_iteration=str(tracker.best_round),
                         best_score=str(tracker.best_value))
    booster.lossdsl_evals = tracker.history
    booster.lossdsl_init_score = start
    if evals_result is not None:
        evals_result.clear()
        evals_result.update(tracker.history)
    return booster
