"""LightGBM custom objectives and metrics from lossdsl losses.

    import lightgbm as lgb
    import lossdsl.lightgbm

    obj = lossdsl.lightgbm.objective("asymmetric_l1(y, p, 3.0, 1.0)")
    train = lgb.Dataset(X, y, weight=w, init_score=obj.base_margin(y, w))
    booster = lgb.train({"objective": obj}, train, 100,
                        feval=lossdsl.lightgbm.metric(obj))
    raw = booster.predict(X_test, raw_score=True) + obj.init_score(y, w)

    model = lgb.LGBMRegressor(objective=lossdsl.lightgbm.objective("pseudo_huber(y, p)"))
    model.fit(X, y, sample_weight=w)

One object serves both APIs: ``obj(preds, train_set)`` (``params["objective"]=obj`` in
``lgb.train``, LightGBM 4.x) reads labels and weights from the Dataset; ``obj(y_true,
y_pred, weight)`` (the scikit-learn wrapper passes the weight because the callable takes
three arguments) uses what it is given. LightGBM passes weights to custom objectives but
does not apply them; this objective does. Multiclass scores arrive as (n, K) in LightGBM
>= 4.0 and are answered in the same shape (LightGBM flattens them class-major itself);
older versions' flat class-major arrays are reshaped and answered class-major.

Starting score: with a custom objective LightGBM starts every row at 0 and ignores
``boost_from_average``; ``init_score`` gives the optimal constant raw score, to pass as the
Dataset's ``init_score`` (``base_margin`` builds the per-row array). LightGBM does not store
it in the model: add it to ``predict(..., raw_score=True)``. It raises a ``LossError`` when
no finite score is optimal (a non-convex expected cost, labels all in one class).

Per-row inputs (a value per training row that is not the label) need ``rows=y`` (or the
training Dataset): the objective then refuses a cross-validation fold or a shuffled copy.

Training with exact leaves: :func:`train` runs the boosting loop itself and, after each
tree, refits every leaf to the minimiser of the loss over its rows (``refit="auto"``: for
losses whose Hessian is 0 everywhere or on a region, such as MAE, quantile,
``asymmetric_l1`` or a Huber-smoothed cost, which otherwise get first-order leaves). It
also starts from the optimal constant and stores it in the model, so that
``booster.predict(X, raw_score=True)`` is the model's whole raw score:

    obj = lossdsl.lightgbm.objective("asymmetric_l1(y, p, 4, 1)")
    train = lgb.Dataset(X, y, free_raw_data=False)
    booster = lossdsl.lightgbm.train(obj, {"learning_rate": 0.1}, train, 200,
                                     evals=[("valid", lgb.Dataset(Xv, yv), obj_valid)],
                                     early_stopping_rounds=20)
    capacity = booster.predict(X_test, raw_score=True)
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
from numba import njit

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

__all__ = ["LightGBMMetric", "LightGBMObjective", "init_score", "metric", "objective", "train"]


def _scores(preds: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """(scores as (n,) or (n, K), whether they came flat and class-major)."""
    preds = np.asarray(preds)
    if preds.ndim == 1 and preds.shape[0] != n:  # LightGBM < 4.0 multiclass: class-major
        return preds.reshape(-1, n).T, True
    return preds, False


class LightGBMObjective(BoostingObjective):
    """A LightGBM objective; see :func:`objective` and
    :class:`lossdsl.boosting.objective.BoostingObjective`."""

    # LightGBM keeps gradients in float32 and copies float64 ones over each round: the kernel
    # computes in float64 from the float64 scores and rounds as it stores.
    gradient_dtype = np.dtype(np.float32)
    device_gradients = False
    library = "LightGBM"

    def __call__(self, first: Any, second: Any, weight: Any = None,
                 group: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(grad, hess)``: native ``obj(preds, train_set)`` or sklearn ``obj(y_true, y_pred,
        weight, group)`` (the group sizes of ``LGBMRanker.fit(..., group=)``, for a loss that
        groups its rows)."""
        container = None
        if isinstance(second, lgb.Dataset):
            label, weight, group = second.get_label(), second.get_weight(), second.get_group()
            scores, class_major = _scores(first, second.num_data())
            container = second
        else:
            label = first
            scores, class_major = _scores(second, np.asarray(first).shape[0])
        gradient, hessian = self.gradients(label, scores, weight, container=container,
                                           groups=group_ids(group))
        if class_major:
            return gradient.T.reshape(-1), hessian.T.reshape(-1)
        if gradient.ndim == 2:
            # LightGBM ravels (n, K) in Fortran order: hand it Fortran-ordered arrays so that
            # ravel is a view rather than a copy.
            return np.asfortranarray(gradient), np.asfortranarray(hessian)
        return gradient, hessian


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR,
              hessian_constant: float | str = 1.0, hessian_scale: float = 1.0,
              inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None, rows: Any = None,
              like: str | None = None,
              columns: str | None = None) -> LightGBMObjective:
    """A LightGBM custom objective: ``params["objective"]=obj`` or ``LGBMRegressor(objective=obj)``.

    Options as :func:`lossdsl.xgboost.objective` (per-row ``inputs`` need ``rows``: the
    training labels in order, or the training ``lgb.Dataset``). ``like`` names the built-in
    whose Hessian convention and start score to reproduce (``"multiclass"``: the Hessian
    times ``K/(K-1)``; ``"poisson"``: times ``exp(0.7)``; see
    ``lossdsl.boosting.objective.PRESETS``).
    """
    return LightGBMObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                             hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                             hessian_scale=hessian_scale, target=target, rows=rows,
                             like=like, columns=columns)


class LightGBMMetric:
    """An evaluation metric: the (weighted) mean loss at the raw scores, lower is better.

    Native ``lgb.train(feval=m)``: ``m(preds, eval_data) -> (name, value, False)``;
    scikit-learn ``fit(eval_metric=m)``: ``m(y_true, y_pred, weight)`` likewise. With a custom
    objective LightGBM passes raw scores.
    """

    def __init__(self, objective: BoostingObjective, name: str):
        self.objective = objective
        self.name = name

    def __call__(self, first: Any, second: Any, weight: Any = None,
                 group: Any = None) -> tuple[str, float, bool]:
        """``(name, mean loss, is_higher_better=False)``."""
        if isinstance(second, lgb.Dataset):
            scores, _ = _scores(first, second.num_data())
            value = self.objective.value(second.get_label(), scores, second.get_weight(),
                                         container=second, groups=group_ids(second.get_group()))
        else:
            scores, _ = _scores(second, np.asarray(first).shape[0])
            value = self.objective.value(first, scores, weight, groups=group_ids(group))
        return self.name, value, False


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, name: str | None = None,
           inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None, rows: Any = None) -> LightGBMMetric:
    """A LightGBM evaluation metric computing the mean loss (reuses an objective's settings,
    ``rows`` included: per-row inputs are evaluated only on the rows they belong to)."""
    source = as_objective(loss, wrt, label, inputs=inputs, params=params, target=target,
                          rows=rows)
    return LightGBMMetric(source, name or source.loss.name or "lossdsl")


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant raw score for labels ``y`` (see :func:`lossdsl.xgboost.init_score`)."""
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu",
                             rows=y)
    return objective.init_score(y, sample_weight, num_class)


# ---------------------------------------------------------------------- training
_RATE_ALIASES = ("learning_rate", "shrinkage_rate", "eta")
_OBJECTIVE_ALIASES = ("objective", "objective_type", "app", "application", "loss")
_CLASS_ALIASES = ("num_class", "num_classes")
_BOOSTING_ALIASES = ("boosting", "boosting_type", "boost")
_THREAD_ALIASES = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")
_ROUND_ALIASES = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees",
                  "num_round", "num_rounds", "nrounds", "num_boost_round", "n_estimators",
                  "max_iter")
_EARLY_STOPPING_ALIASES = ("early_stopping_round", "early_stopping_rounds", "early_stopping",
                           "n_iter_no_change")


def _rounds_in_params(params: dict[str, Any], num_boost_round: Any,
                      early_stopping_rounds: int | None) -> tuple[Any, int | None]:
    """``(num_boost_round, early_stopping_rounds)`` with LightGBM's names for them in
    ``params`` taken out and obeyed as ``lgb.train`` obeys them (a round count there wins
    over the argument; an early-stopping count there is used when the argument is not
    given, and one that contradicts it is an error)."""
    rounds = {params.pop(name) for name in _ROUND_ALIASES if name in params}
    if len(rounds) > 1:
        raise LossError(f"params give the number of rounds twice, as {sorted(rounds)}: keep "
                        "one of them")
    if rounds:
        num_boost_round = rounds.pop()
        if isinstance(num_boost_round, float) and num_boost_round.is_integer():
            num_boost_round = int(num_boost_round)
    patience = {params.pop(name) for name in _EARLY_STOPPING_ALIASES if name in params}
    if len(patience) > 1 or (patience and early_stopping_rounds is not None
                             and patience != {early_stopping_rounds}):
        raise LossError(f"early stopping is asked for with different patience, "
                        f"{sorted(patience | {early_stopping_rounds} - {None})} rounds: give it "
                        "once, as early_stopping_rounds=")
    if patience and early_stopping_rounds is None:
        value = patience.pop()
        if not isinstance(value, (int, np.integer)) and not (
                isinstance(value, float) and value.is_integer()):
            raise LossError(f"params' early stopping rounds must be an integer, not {value!r}")
        # LightGBM: 0 or less turns early stopping off
        early_stopping_rounds = int(value) if value > 0 else None
    return num_boost_round, early_stopping_rounds


def _raw_data(dataset: lgb.Dataset, role: str) -> Any:
    """The raw features of a Dataset (for leaf indices), or a LossError saying what to do."""
    if not isinstance(dataset, lgb.Dataset):
        raise LossError(f"{role} must be an lgb.Dataset, not {type(dataset).__name__}")
    data = dataset.data
    if data is None:
        raise LossError(
            f"the {role} Dataset no longer holds its raw features (LightGBM frees them once "
            "the Dataset is constructed); lossdsl.lightgbm.train needs them to find each "
            "row's leaf: build it with lgb.Dataset(X, y, free_raw_data=False), or pass a "
            "fresh, unconstructed Dataset")
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        raise LossError(f"the {role} Dataset was loaded from a file ({data!r}); "
                        "lossdsl.lightgbm.train needs the features in memory (an array or "
                        "DataFrame) to find each row's leaf")
    return data


# LightGBM's Dataset parameters and their aliases (docs: Parameters, "Dataset Parameters"):
# read when the Dataset is constructed, not by the Booster.
_DATASET_PARAMS = frozenset({
    "linear_tree", "linear_trees", "max_bin", "max_bins", "max_bin_by_feature",
    "min_data_in_bin", "bin_construct_sample_cnt", "subsample_for_bin", "data_random_seed",
    "data_seed", "is_enable_sparse", "is_sparse", "enable_sparse", "sparse", "enable_bundle",
    "is_enable_bundle", "bundle", "use_missing", "zero_as_missing", "feature_pre_filter",
    "pre_partition", "is_pre_partition", "two_round", "two_round_loading",
    "use_two_round_loading", "categorical_feature", "cat_feature", "categorical_column",
    "cat_column", "categorical_features", "forcedbins_filename", "precise_float_parser"})


def _dataset_params(params: Mapping[str, Any], train_set: lgb.Dataset) -> None:
    """Give the training Dataset the Dataset parameters among ``params`` (``max_bin``,
    ``zero_as_missing``, ``categorical_feature``, ...), as ``lgb.train`` does: the Booster
    built here reads only the Dataset's own, so they were silently ignored. A Dataset
    already constructed with other values cannot take them (its bins are made)."""
    wanted = {name: value for name, value in params.items() if name in _DATASET_PARAMS}
    if not wanted:
        return
    own = dict(train_set.params or {})
    if all(own.get(name) == value for name, value in wanted.items()):
        return
    try:
        train_set.num_data()  # only a constructed Dataset knows its rows
    except lgb.basic.LightGBMError:
        train_set.params = {**own, **wanted}
        return
    names = ", ".join(sorted(wanted))
    raise LossError(f"params set Dataset parameters ({names}) that the training Dataset, "
                    "already constructed, was built without: pass them in "
                    "lgb.Dataset(..., params={...}), or pass a Dataset not yet constructed")


def _field(dataset: lgb.Dataset, name: str) -> Any:
    """A Dataset's label/weight/init_score, constructed or not (None when absent): the
    Dataset's attribute, which holds LightGBM's own array once it is constructed."""
    value = getattr(dataset, name)
    if value is None:
        return None
    value = np.asarray(value)
    return None if value.size == 0 else value


class _Tree:
    """One tree of the model, as its text form writes it (numbers with 17 digits: exact
    doubles): ``leaf_value`` (shrunk) by leaf index, and the structure, read when asked
    for (:meth:`array`). Node ``k`` splits on ``split_feature[k]`` at ``threshold[k]``; a
    child ``c < 0`` is leaf ``~c``; ``decision_type[k]``: bit 0 categorical, bit 1 missing
    values go left, bits 2-3 the missing type (0 none, 1 zero, 2 NaN); a categorical
    node's threshold indexes ``cat_boundaries``, which delimit its bitset in
    ``cat_threshold``."""

    FIELDS = {"leaf_value": np.float64, "split_feature": np.intp, "threshold": np.float64,
              "decision_type": np.int64, "left_child": np.intp, "right_child": np.intp,
              "cat_boundaries": np.intp, "cat_threshold": np.int64}

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        self.leaf_value = self.array("leaf_value")

    def array(self, name: str) -> np.ndarray:
        """The field ``name`` as an array (empty where the tree has none)."""
        return np.array(self.fields.get(name, "").split(), dtype=self.FIELDS[name])


def _round_trees(booster: lgb.Booster, iteration: int) -> list[_Tree]:
    """The trees of round ``iteration`` (one, or one per class), from the model's text
    form: the leaf values and the structure that sends a row to its leaf."""
    text = booster.model_to_string(start_iteration=iteration, num_iteration=1)
    start = text.find("Tree=")
    end = text.find("end of trees", start)
    trees: list[dict[str, str]] = []
    for line in text[start:end].splitlines():
        if line.startswith("Tree="):
            trees.append({})
            continue
        key, _, value = line.partition("=")
        if trees and key in _Tree.FIELDS:
            trees[-1][key] = value
    return [_Tree(fields) for fields in trees]


# The fields of a tree that _route_rows reads, in its order.
_ROUTING = ("split_feature", "threshold", "decision_type", "left_child", "right_child",
            "cat_boundaries", "cat_threshold")
# LightGBM's kZeroThreshold (the float 1e-35f): its predictor reads a feature value at most
# this far from 0 as 0, and a "zero" missing type takes such values as missing.
_ZERO_THRESHOLD = float(np.float32(1e-35))
# How near a row's score change must be to its routed leaf's value: the distance within
# which leaves_from_changes calls values crowded (4 times its 8 ulps of the scale).
_SAME_VALUE = 32 * float(np.finfo(np.float64).eps)
# A categorical split's value becomes a C int; NaN and values from 2**31 convert to a
# platform-dependent int, so those rows are left to LightGBM's own predict.
_INT_LIMIT = 2.0 ** 31


@njit(cache=True, error_model="numpy")
def _route_rows(features, rows, split_feature, threshold, decision_type, left_child,
                right_child, cat_boundaries, cat_threshold, zero, leaves,
                unresolved):  # pragma: no cover - compiled
    """The leaf of each row ``features[rows[k]]`` in one tree, into ``leaves[k]``, by
    LightGBM's own decision rules (``Tree::GetLeaf`` with ``NumericalDecision`` and
    ``CategoricalDecision``, on the values as its dense predictor reads them: within
    ``zero`` of 0 is 0). ``unresolved[k]``: set for a row that meets a categorical split
    with NaN or a value of 2**31 or more (a platform-dependent conversion to int). Returns
    the number of such rows."""
    missed = 0
    if split_feature.shape[0] == 0:  # a one-leaf tree
        for k in range(rows.shape[0]):
            leaves[k] = 0
        return missed
    for k in range(rows.shape[0]):
        i = rows[k]
        node = 0
        lost = False
        while node >= 0:
            value = features[i, split_feature[node]]
            kind = decision_type[node]
            missing_type = (kind >> 2) & 3
            if kind & 1:  # categorical: the value's bit in the node's bitset goes left
                if value != value or value >= 2147483648.0:
                    lost = True
                    break
                if value <= -1.0:  # a negative int: right
                    node = right_child[node]
                    continue
                category = int(value)  # C's truncation toward 0
                index = int(threshold[node])
                first = cat_boundaries[index]
                words = cat_boundaries[index + 1] - first
                word = category // 32
                if word < words and (cat_threshold[first + word] >> (category % 32)) & 1:
                    node = left_child[node]
                else:
                    node = right_child[node]
                continue
            if value != value:
                if missing_type != 2:
                    value = 0.0
            elif -zero <= value <= zero:
                value = 0.0
            if (missing_type == 1 and value == 0.0) or (missing_type == 2 and value != value):
                node = left_child[node] if kind & 2 else right_child[node]
            elif value <= threshold[node]:
                node = left_child[node]
            else:
                node = right_child[node]
        if lost:
            unresolved[k] = True
            leaves[k] = 0
            missed += 1
        else:
            leaves[k] = ~node
    return missed


def _round_leaf_values(booster: lgb.Booster, iteration: int) -> list[np.ndarray]:
    """The (shrunk) leaf values of each tree of round ``iteration``, by leaf index."""
    return [tree.leaf_value for tree in _round_trees(booster, iteration)]


def _routable(data: Any) -> np.ndarray | None:
    """The training features as LightGBM's predictor reads them (float32 or float64; other
    numbers as float32, as LightGBM converts them), or None where rows are matched to
    leaves another way: a DataFrame with category or extension columns, sparse matrices,
    anything else."""
    if isinstance(data, np.ndarray):
        values = data
    elif hasattr(data, "dtypes") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        dtypes = list(data.dtypes)
        if not all(isinstance(dtype, np.dtype) and dtype.kind in "fiub" for dtype in dtypes):
            return None
        # LightGBM's conversion: the columns' common type, at least float32
        values = data.to_numpy(dtype=np.result_type(*[d.type for d in dtypes], np.float32))
    else:
        return None
    if values.ndim != 2 or values.dtype.kind not in "fiub":
        return None
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float32)
    return values


def _take_rows(data: Any, rows: np.ndarray) -> Any:
    return data.iloc[rows] if hasattr(data, "iloc") else data[rows]


def _predicted_leaves(booster: lgb.Booster, data: Any, iteration: int, trees: int,
                      predict_options: Mapping[str, Any]) -> np.ndarray:
    """(rows, trees) the leaves LightGBM's ``predict(pred_leaf=True)`` gives ``data`` in
    round ``iteration``'s trees."""
    return np.asarray(booster.predict(data, pred_leaf=True, start_iteration=iteration,
                                      num_iteration=1, **predict_options)).reshape(-1, trees)


class _Cached:
    """LightGBM's cached training scores (its internal ones, with the library's leaf
    values), read with the public ``Booster.eval_train``, whose evaluation function is
    handed them: their change over a round is the round's trees' output per row."""

    def __init__(self, booster: lgb.Booster, shape: tuple[int, ...]):
        self.booster = booster
        self.shape = shape
        self.last: np.ndarray | None = None
        self._read: list[np.ndarray] = []

    def _keep(self, preds: np.ndarray, _data: Any) -> tuple[str, float, bool]:
        # LightGBM hands out a buffer it overwrites on the next read: keep a copy
        self._read.append(np.array(preds, dtype=np.float64))
        return "lossdsl_scores", 0.0, False

    def scores(self) -> np.ndarray:
        """The cached training scores now, shaped as the model's scores."""
        self._read.clear()
        self.booster.eval_train(feval=self._keep)
        return self._read.pop().reshape(self.shape)

    def before(self) -> None:
        self.last = self.scores()


def _route(routable: np.ndarray, tree: _Tree, rows: np.ndarray) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """(leaf of each of ``rows`` in ``tree``, which of them are unresolved), by
    :func:`_route_rows`."""
    leaves = np.empty(rows.shape[0], dtype=np.intp)
    unresolved = np.zeros(rows.shape[0], dtype=bool)
    _route_rows(routable, rows, *(tree.array(name) for name in _ROUTING),
                _ZERO_THRESHOLD, leaves, unresolved)
    return leaves, unresolved


def _round_leaves(booster: lgb.Booster, features: Any, iteration: int,
                  tree_values: list[np.ndarray], cached: _Cached,
                  predict_options: Mapping[str, Any], trees: list[_Tree] | None = None,
                  routable: np.ndarray | None = None) -> np.ndarray:
    """(n, trees of the round) each training row's leaf in the round's trees (their leaf
    values ``tree_values``; ``trees``: the same trees whole, to route ambiguous rows with
    the ``routable`` features, see :func:`_routable`).

    From the change of LightGBM's cached training scores over the round, where each leaf's
    value is its own (three compiled passes over n scores; sending all rows down the tree
    costs a pass per level, and ``predict(pred_leaf=True)`` ~0.16 µs a row). A row that
    leaves ambiguous (two leaves with equal values: with a constant Hessian, leaf values
    are ratios of small integers and coincide often) is sent down the tree by LightGBM's
    own decision rules (:func:`_route_rows`, on the features as numbers), and by
    ``predict`` where that cannot settle it (a categorical split meeting NaN or a huge
    value; features that are not arrays of numbers)."""
    before, after = cached.last, cached.scores()
    # set_leaf_output leaves the cached scores as they are, so this round's "after" is the
    # next round's "before" (one copy of n scores a round saved)
    cached.last = after
    if before is None:
        return _predicted_leaves(booster, features, iteration, len(tree_values), predict_options)
    delta, largest = score_changes(before, after)
    scale = largest + float(max(np.max(np.abs(v), initial=0.0) for v in tree_values))
    leaves = np.empty(delta.shape, dtype=np.intp)
    unresolved = np.zeros(delta.shape[0], dtype=bool)
    for t, values in enumerate(tree_values):
        leaves[:, t], missing = leaves_from_changes(delta[:, t], values, scale)
        if trees is not None and routable is not None and missing.any():
            rows = np.flatnonzero(missing)
            routed, lost = _route(routable, trees[t], rows)
            # the leaf the rules give must be one whose value the row's change matches (to
            # the rounding of the leaves that crowd together): else LightGBM's predict
            # decides
            lost |= ~(np.abs(delta[rows, t] - values[routed]) <= _SAME_VALUE * scale)
            leaves[rows, t] = routed
            missing[rows] = lost
        unresolved |= missing
    if unresolved.any():
        rows = np.flatnonzero(unresolved)
        if rows.size > 0.5 * delta.shape[0]:
            leaves[rows] = _predicted_leaves(booster, features, iteration, len(tree_values),
                                             predict_options)[rows]
        else:
            leaves[rows] = _predicted_leaves(booster, _take_rows(features, rows), iteration,
                                             len(tree_values), predict_options)
    return leaves


def train(objective: Any, params: Mapping[str, Any], train_set: lgb.Dataset,
          num_boost_round: int = 100, *, refit: bool | str = "auto",
          evals: Sequence[tuple] = (), early_stopping_rounds: int | None = None,
          init_score: bool = True,
          evals_result: MutableMapping[str, Any] | None = None) -> lgb.Booster:
    """Train a LightGBM model on a lossdsl objective, with exact leaf values.

    ``objective``: a :class:`LightGBMObjective` (or anything :func:`objective` accepts)
    built for the rows of ``train_set`` (per-row inputs with ``rows=train_set`` or the
    training labels). ``params``: LightGBM's params; the objective plumbing is set here, and
    a ``params["objective"]`` other than this objective, ``"none"`` or ``"custom"`` is
    refused; a round count (``num_iterations`` or an alias) and an early-stopping patience
    (``early_stopping_round`` or an alias) in them are obeyed as ``lgb.train`` obeys them.
    ``train_set``: an ``lgb.Dataset`` whose raw features are still held (build it with
    ``free_raw_data=False``, or pass it unconstructed): each row's leaf in the new tree
    comes from the change of LightGBM's cached training scores (read through the public
    ``Booster.eval_train``); a row that leaves ambiguous is sent down the tree by
    LightGBM's decision rules where the features are arrays of numbers, else (or where
    those cannot settle it) by ``Booster.predict(X, pred_leaf=True)``.

    ``refit``: after each tree, set every leaf to ``learning_rate * c_j`` with ``c_j`` the
    minimiser of the weighted loss over the leaf's rows (see
    :func:`lossdsl.boosting.leaves.solve_leaves`; what LightGBM's own L1 and quantile objectives
    do with ``RenewTreeOutput``). ``"auto"`` (default) refits when the objective's Hessian
    policy is ``"constant"`` (Hessian 0 everywhere or on a region: MAE, quantile,
    asymmetric L1, Huber-smoothed costs), whose leaves would otherwise move by the mean
    gradient, but not for a ``like=`` preset (``like="huber"``: LightGBM's built-in keeps
    its first-order leaves, and so does the model that reproduces it); ``True``/``False``
    force it. A leaf with no finite minimiser (or zero weight)
    keeps LightGBM's value. Leaves are written with ``Booster.set_leaf_output``;
    LightGBM's cached training scores keep the old values, so the gradients of the next
    round are computed here at the refitted model's scores. Refit uses all training rows
    (with bagging, the built-ins use the bagged ones). For losses over classes the round's
    K trees are refitted one after another, the other classes' scores held.

    ``init_score``: start from the objective's optimal constant score
    (:meth:`~lossdsl.boosting.objective.BoostingObjective.init_score`), added to the first
    tree's leaves
    so that ``booster.predict(X, raw_score=True)`` is the whole raw score. An expected
    cost (no finite optimal constant) starts from its cost-weighted surrogate's optimum
    (``init_score(unbounded="surrogate")``); any other loss without a finite optimal
    constant (labels all in one class) raises that :class:`~lossdsl.LossError`. With
    ``init_score=False`` the model starts at 0, or at the Dataset's ``init_score`` when it
    has one (which, as in LightGBM, ``predict`` does not include). The constant folded in
    is ``booster.lossdsl_init_score`` (0 with ``init_score=False``).

    ``evals``: ``(name, lgb.Dataset, objective for those rows)`` tuples (the Dataset with
    its raw features; the objective built for that set's rows, or ``(name, Dataset)`` when
    the objective has no per-row inputs), each scored every round as the weighted mean
    loss of the refitted model, from scores kept here tree by tree (LightGBM's internal
    scores for validation sets would hold the stale leaf values). The history is
    ``booster.lossdsl_evals`` (``{name: {metric: [values]}}``) and is also written into
    ``evals_result`` when given. ``early_stopping_rounds``: stop when the last set's loss
    has not improved for that many rounds; ``booster.best_iteration`` (1-based, as
    LightGBM's) is then the best round, which ``booster.predict`` uses by default. Without
    it the model keeps every round: ``evals`` only watch, as in ``lgb.train``.

    Cost per round, on top of LightGBM's tree: one gradient call of the objective; with
    refit, matching each training row to its leaf from the change of LightGBM's cached
    training scores (ambiguous rows sent down the tree in a compiled pass; ``pred_leaf``
    only for features that are not numbers) and the leaf search
    (4 kernel calls over the tree's rows for piecewise-linear losses, 2 of them the final
    check; a few Newton steps for smooth ones), the round's leaf values read from its
    model text (``model_to_string``); one ``pred_leaf`` pass over each evaluation set. Measured
    (docs/boosting.md): 1.57x the built-in quantile objective's time at 16,000 training
    rows, 1.29x at 80,000; LightGBM's own custom-objective path (no constant-Hessian
    histograms) with the reads and writes of every leaf is 1.2-1.36x of it before the
    leaf search.
    """
    if not isinstance(objective, BoostingObjective):
        objective = globals()["objective"](objective)
    objective.restart_draws()  # the same draws as a first training
    params = dict(params or {})
    num_boost_round, early_stopping_rounds = _rounds_in_params(params, num_boost_round,
                                                               early_stopping_rounds)
    rounds = check_train_options(num_boost_round, refit, objective)
    # decided after the first gradients: "auto" reads the objective's Hessian policy, which
    # is chosen on its first training call (with that call's dtypes and weights)
    do_refit = False
    for name in _OBJECTIVE_ALIASES:
        value = params.pop(name, None)
        if value is not None and value is not objective and value not in ("none", "custom"):
            raise LossError(f"params[{name!r}]={value!r} conflicts with the lossdsl objective "
                            "being trained; leave it out")
    for name in _BOOSTING_ALIASES:
        if params.get(name, "gbdt") not in ("gbdt", "gbrt", "goss"):
            raise LossError(f"lossdsl.lightgbm.train supports boosting='gbdt' (or 'goss'), "
                            f"not {params[name]!r}: dart rescales earlier trees and rf "
                            "averages them, which the scores kept here do not follow")
    _dataset_params(params, train_set)
    given = {**(train_set.params or {}), **params}
    if given.get("linear_tree") or given.get("linear_trees"):
        raise LossError("linear_tree leaves are linear models, not constants: refit and the "
                        "scores kept here do not apply; train without linear_tree (in "
                        "params and in the Dataset's params)")
    params["objective"] = "none"
    num_class = 1
    for name in _CLASS_ALIASES:
        if name in params:
            num_class = int(params[name])
    rate = learning_rate(params, _RATE_ALIASES, 0.1)
    # Booster.predict does not take the booster's params: without the training thread
    # count it starts OpenMP's default pool, and the next update then runs many times
    # slower (measured: 0.16 s instead of 2 ms a tree on a busy 2-core machine).
    predict_options = {}
    for name in _THREAD_ALIASES:
        if name in params:
            predict_options["num_threads"] = params[name]

    features = _raw_data(train_set, "training")
    eval_entries = []
    for entry in evals:
        scorer = eval_objective(entry, objective, "lgb.Dataset")
        eval_entries.append((entry[0], entry[1], _raw_data(entry[1], f"evaluation {entry[0]!r}"),
                             scorer))

    # the labels as given (LightGBM's Dataset stores a NaN label as 0, without a word)
    objective.refuse_missing_labels(_field(train_set, "label"))
    booster = lgb.Booster(params=params, train_set=train_set)
    label = np.asarray(train_set.get_label())
    weight = train_set.get_weight()
    weight = None if weight is None or np.size(weight) == 0 else np.asarray(weight)
    n = label.shape[0]
    objective.check_score_columns(num_class)
    shape: tuple[int, ...] = (n,) if num_class == 1 else (n, num_class)
    given_start = _field(train_set, "init_score")
    if init_score:
        if given_start is not None:
            raise LossError("the training Dataset has an init_score, and train() starts from "
                            "the objective's optimal constant (init_score=True): drop the "
                            "Dataset's init_score, or pass init_score=False to start from it")
        start = objective.init_score(label, weight, None if num_class == 1 else num_class,
                                       unbounded="surrogate")
        scores = np.zeros(shape) + np.asarray(start, dtype=np.float64)
    else:
        start = np.zeros(num_class) if num_class > 1 else 0.0
        scores = np.zeros(shape)
        if given_start is not None:  # as LightGBM: the Dataset's scores, (n, K) or flat
            # class-major (LightGBM 4 returns an (n, K) init score from a constructed Dataset)
            if num_class > 1 and given_start.ndim == 2:
                if given_start.shape != (n, num_class):
                    raise LossError(f"the Dataset's init_score has shape {given_start.shape}; "
                                    f"expected ({n}, {num_class})")
                scores += given_start
            else:
                scores += (given_start.reshape(num_class, n).T if num_class > 1
                           else given_start.reshape(n))
    trackers = []
    for name, data, _raw, scorer in eval_entries:
        if _field(data, "init_score") is not None:
            raise LossError(f"evaluation set {name!r} has an init_score, which "
                            "booster.predict would not include; drop it")
        eval_label = _field(data, "label")
        if eval_label is None:
            raise LossError(f"evaluation set {name!r} has no labels")
        rows = eval_label.shape[0]
        eval_scores = np.zeros((rows,) if num_class == 1 else (rows, num_class)) \
            + np.asarray(start, dtype=np.float64)
        trackers.append((name, eval_label, _field(data, "weight"), eval_scores, scorer,
                         data))
    tracker = EvalTracker(trackers, early_stopping_rounds)

    def gradients(_internal: np.ndarray, dataset: lgb.Dataset) -> tuple[np.ndarray, np.ndarray]:
        # LightGBM passes its cached scores, which hold the library's leaf values, not the
        # refitted ones (nor the init score): the gradients are taken at the model's scores.
        gradient, hessian = objective.gradients(label, scores, weight, container=dataset)
        if gradient.ndim == 2:
            return np.asfortranarray(gradient), np.asfortranarray(hessian)
        return gradient, hessian

    cached = _Cached(booster, shape)
    # ambiguous rows' leaves from the trees' structure, where the features are numbers
    routable = _routable(features)
    if routable is not None and routable.shape[0] != n:
        raise LossError(f"the training Dataset holds {routable.shape[0]} rows of features "
                        f"and {n} labels")
    for iteration in range(rounds):
        if iteration == 0:
            cached.before()
        try:
            finished = booster.update(fobj=gradients)
        except lgb.basic.LightGBMError as error:
            if "num_features()" not in str(error):
                raise
            raise LossError(
                "LightGBM found no usable feature in the training Dataset: its feature "
                "pre-filter drops features that cannot make a split with min_data_in_leaf "
                f"rows on each side (here {n} rows). Lower min_data_in_leaf / "
                "min_data_in_bin in params (and in the Dataset's params), or train on more "
                "rows") from None
        if booster.current_iteration() <= iteration:  # no tree could be grown: stop
            if iteration == 0 and init_score:
                raise LossError("LightGBM could not grow a first tree (no split meets its "
                                "requirements), so the model cannot hold the init score; "
                                "check min_data_in_leaf and the features")
            break
        if iteration == 0:
            do_refit = use_refit(refit, objective)
            if do_refit:
                refuse_constrained_refit(params)
        first_tree = iteration * num_class
        if not do_refit:
            # LightGBM's own leaves: its cached scores are the model's (but the init score);
            # the leaf values are read only where needed (init score, evaluation sets)
            need = (iteration == 0 and init_score) or eval_entries
            values = _round_leaf_values(booster, iteration) if need else []
            scores[...] = cached.scores() + (np.asarray(start) if init_score else 0.0)
        else:
            trees = _round_trees(booster, iteration)
            leaves = _round_leaves(booster, features, iteration,
                                   [tree.leaf_value for tree in trees], cached,
                                   predict_options, trees, routable)

            def library_values(t: int, count: int, trees: list = trees) -> np.ndarray:
                return trees[t].leaf_value[:count]

            values, _ = refit_round(objective, label, weight, scores, leaves,
                                    library_values, rate, do_refit)
        for t, tree_values in enumerate(values):
            written = tree_values
            if iteration == 0 and init_score:
                written = tree_values + (np.asarray(start).reshape(-1)[t])
            if do_refit or (iteration == 0 and init_score):
                for j, value in enumerate(written):
                    booster.set_leaf_output(first_tree + t, j, float(value))
        for index, (_, _, raw, _) in enumerate(eval_entries):
            eval_leaves = booster.predict(raw, pred_leaf=True, start_iteration=iteration,
                                          num_iteration=1, **predict_options)
            eval_leaves = np.asarray(eval_leaves).reshape(-1, len(values))
            for t, tree_values in enumerate(values):
                tracker.add_tree(index, eval_leaves[:, t], tree_values,
                                 None if num_class == 1 else t)
        stop = tracker.record(iteration)
        if stop or finished:
            break
    if tracker.sets and early_stopping_rounds is not None:  # evals alone only watch
        booster.best_iteration = tracker.best_round + 1
        name = tracker.sets[-1][0]
        metric_name = tracker.metric_name(tracker.sets[-1][4])
        booster.best_score = {name: {metric_name: tracker.best_value}}
    booster.lossdsl_evals = tracker.history
    booster.lossdsl_init_score = start
    if evals_result is not None:
        evals_result.clear()
        evals_result.update(tracker.history)
    return booster
