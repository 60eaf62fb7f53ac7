"""scikit-learn estimators that train XGBoost, LightGBM or CatBoost on a lossdsl loss.

    from lossdsl.estimators import XGBLossClassifier

    model = XGBLossClassifier("clv*y*softplus(-z) + 5*(1 - y)*softplus(z)",
                              inputs={"clv": "clv"}, n_estimators=50)
    model.fit(X, y)               # X: a DataFrame with a "clv" column (not used as a feature)
    model.predict_proba(X)        # the probabilities the loss implies (see below)
    cross_val_score(model, X, y)  # each fold's objective gets that fold's clv values

A bare objective (``lossdsl.xgboost.objective(...)``) is built for one set of rows; these
estimators build one for exactly the rows they are fitted on, each time ``fit`` runs, so
per-row inputs (a customer's value, an exposure, a price) travel with their rows through
cross-validation folds, shuffles, ``Pipeline`` and ``GridSearchCV``. They store the loss's
init score and turn raw scores into what the loss implies:

* classifiers: ``predict_proba`` gives the class probabilities for which the raw score is
  optimal under the loss (``sigmoid(z)`` for ``bce_logits``, the *true* probability for a
  cost-weighted loss such as ``cost_sensitive_bce``, ``softmax(z)`` for ``cce_logits``) and
  ``predict`` the most probable class; a loss that implies no probabilities (a hinge) is
  found out at fit time, and ``predict_proba`` then raises a :class:`~lossdsl.LossError`;
* regressors: ``predict`` gives the label-scale prediction for which the raw score is optimal
  (the score itself for losses on the label's scale, ``exp(z)`` for a Poisson loss on a log
  link);
* ``predict_raw`` gives the raw scores (init score included);
* with ``decision_cost=`` (a lossdsl cost of a label and a decision), ``predict`` returns each
  row's cost-minimising decision (:func:`lossdsl.decide`): from the class probabilities, or,
  for regressors, from the prediction plus the model's out-of-fold residuals.

The boosting libraries are imported when an estimator is fitted, so this module imports
without them. See docs/estimators.md.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from .api import CompiledLoss, Loss
from .binding import check_aligned, coerce_loss, nan_rows
from .boosting.objective import DEFAULT_HESSIAN_FLOOR, default_roles, repeat_score
from .decisions import NOT_PER_ROW
from .decisions import decide as _decide
from .errors import LossDomainError, LossError, LossShapeError
from .implied import (
    class_probabilities,
    is_identity,
    label_bounds,
    label_scale,
    probabilities_move,
    score_grid,
)

__all__ = [
    "CatBoostLossClassifier",
    "CatBoostLossRegressor",
    "LGBMLossClassifier",
    "LGBMLossRegressor",
    "XGBLossClassifier",
    "XGBLossRegressor",
]

# Class labels as XGBoost and LightGBM hand them to objectives: float32 (exact for class
# values and indices), so that the link reuses the kernels training compiled.
_LABEL = np.float32
# Points of the raw-score grid on which the probability rule is checked at fit time.
_GRID = 101
# Training rows whose per-row inputs are used for the grid checks.
_GRID_ROWS = 8
# a score sure of its class: softmax / sigmoid within e^-100 of one-hot
_SURE = 100.0

LossLike = str | Loss | CompiledLoss


class _LossEstimator(BaseEstimator):
    """What the six estimators share; the library-specific parts are ``_train``, ``_raw``.

    Parameters
    ----------
    loss:
        The loss: text (``"cost_sensitive_bce(y, z, 5, 1)"``, or a library name such as
        ``"huber"``), a :class:`~lossdsl.Loss` (an entry of ``lossdsl.load(path)``) or a
        :class:`~lossdsl.CompiledLoss`. ``None``: ``mse`` for regressors, ``bce_logits`` (two
        classes) or ``cce_logits`` (more) for classifiers.
    wrt, label:
        The loss's raw-score and label inputs; guessed when left out (the label is ``y`` or
        the first of two inputs), as in :func:`lossdsl.xgboost.objective`.
    inputs:
        The loss's other inputs by name: a number, a table (a cost matrix of ``rowof``), or a
        *string naming where each row's value comes from*: the column of that name of a
        DataFrame ``X`` (which is then not a feature), or else the keyword argument of that
        name of ``fit`` / ``predict`` (scikit-learn metadata, see :meth:`set_fit_request`).
        Arrays of per-row values are refused: they would be frozen to one set of rows.
    params:
        Overrides of the loss's ``param`` values.
    hessian:
        The objective's Hessian policy (``"auto"``, ``"exact"``, ``"clip"``, ``"floor"``,
        ``"constant"``; see :func:`lossdsl.xgboost.objective`).
    hessian_floor, hessian_constant, hessian_scale:
        The policy's numbers, as :func:`lossdsl.xgboost.objective` takes them: the floor of
        ``"floor"``; the constant Hessian of ``"constant"`` (a number, or ``"auto"``: scaled
        to the labels, whatever the units of the cost; ``None``: the library module's
        default, 1 for XGBoost and LightGBM, scaled to the labels for CatBoost); a factor
        applied to the Hessian last.
    n_estimators, learning_rate:
        Boosting rounds and shrinkage.
    refit:
        Exact leaf values after each tree (``"auto"``, ``True``, ``False``), passed to
        ``lossdsl.xgboost.train`` / ``lossdsl.lightgbm.train``; CatBoost estimates its leaves
        itself and accepts ``"auto"`` or ``False`` only.
    random_state:
        The library's seed: an int, ``None`` (0) or a ``RandomState`` (drawn from).
    init_score:
        Start boosting from the loss's optimal constant score (``True``) or from 0.
    early_stopping_rounds:
        Stop when the loss on the last ``eval_set`` of ``fit`` has not improved for this many
        rounds (the model keeps its best round).
    decision_cost:
        A lossdsl cost of a label and a decision. When given, ``predict`` returns each row's
        cost-minimising decision (:func:`lossdsl.decide`), not the class or the prediction.
    decision_inputs:
        The cost's other inputs, as ``inputs``: numbers, tables, or strings naming a column
        of ``X`` or a keyword argument of ``predict``.
    decisions:
        Candidate decisions for ``decision_cost`` (default: the classes for classifiers; a
        continuous decision for regressors).
    decision_cv:
        Regressors with ``decision_cost``: the number of folds whose out-of-fold residuals
        describe the model's errors (the final model is fitted on all rows).
    **booster_params:
        Passed to the library as they are (``max_depth=3``, ``num_leaves=15``, ``depth=4``).
    """

    def __init__(self, loss: LossLike | None = None, *, wrt: str | None = None,
                 label: str | None = None, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None, hessian: str = "auto",
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR,
                 hessian_constant: float | str | None = None, hessian_scale: float = 1.0,
                 n_estimators: int = 100, learning_rate: float = 0.1,
                 refit: str | bool = "auto", random_state: Any = None,
                 init_score: bool = True, early_stopping_rounds: int | None = None,
                 decision_cost: LossLike | None = None,
                 decision_inputs: Mapping[str, Any] | None = None, decisions: Any = None,
                 decision_cv: int = 5, **booster_params: Any):
        self.loss = loss
        self.wrt = wrt
        self.label = label
        self.inputs = inputs
        self.params = params
        self.hessian = hessian
        self.hessian_floor = hessian_floor
        self.hessian_constant = hessian_constant
        self.hessian_scale = hessian_scale
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.refit = refit
        self.random_state = random_state
        self.init_score = init_score
        self.early_stopping_rounds = early_stopping_rounds
        self.decision_cost = decision_cost
        self.decision_inputs = decision_inputs
        self.decisions = decisions
        self.decision_cv = decision_cv
        self._booster_params = dict(booster_params)

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters, the library's ``**booster_params`` included."""
        params = super().get_params(deep)
        params.update(self._booster_params)
        return params

    def set_params(self, **params: Any) -> _LossEstimator:
        """Set parameters; names the constructor does not list go to the library."""
        own = set(self._get_param_names())
        for key, value in params.items():
            if key in own:
                setattr(self, key, value)
            elif "__" in key:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}: it "
                                 "has no nested estimators")
            else:
                self._booster_params[key] = value
        return self

    #: Sparse matrices the library takes (validate_data's accept_sparse).
    _accept_sparse: Any = ("csr", "csc")

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = bool(self._accept_sparse)
        return tags

    # ------------------------------------------------------------------ metadata routing
    def _sources(self, which: str) -> dict[str, str]:
        """{input name: the column / keyword its per-row values come from} of ``inputs``
        (``which="loss"``) or ``decision_inputs`` (``which="decision"``)."""
        given = self.inputs if which == "loss" else self.decision_inputs
        if not isinstance(given, Mapping):
            return {}
        return {name: value for name, value in given.items() if isinstance(value, str)}

    def _get_metadata_request(self):
        # The per-row inputs named by strings are metadata that fit (the loss's) and predict
        # (the loss's and the decision cost's) consume: listed, unset, so that a router
        # asks for set_fit_request(<name>=True) instead of calling them unknown.
        request = super()._get_metadata_request()
        loss = set(self._sources("loss").values())
        decision = set(self._sources("decision").values())
        for method, names in (("fit", loss), ("predict", loss | decision),
                              ("predict_proba", loss), ("score", loss | decision)):
            method_request = getattr(request, method)
            for name in sorted(names):
                if name not in method_request.requests:
                    method_request.add_request(param=name, alias=None)
        return request

    def _set_request(self, method: str, requests: Mapping[str, Any]) -> _LossEstimator:
        from sklearn.utils.metadata_routing import _routing_enabled

        if not _routing_enabled():
            raise RuntimeError(
                "This method is only available when metadata routing is enabled. You can "
                "enable it using sklearn.set_config(enable_metadata_routing=True).")
        request = self._get_metadata_request()
        method_request = getattr(request, method)
        for name, alias in requests.items():
            if not (alias is None or isinstance(alias, (bool, str))):
                raise ValueError(f"the request for {name!r} must be None, a bool or an alias "
                                 f"string, not {alias!r}")
            method_request.add_request(param=name, alias=alias)
        self._metadata_request = request
        return self

    def set_fit_request(self, **requests: Any) -> _LossEstimator:
        """Request metadata for ``fit`` (with metadata routing enabled): ``sample_weight``,
        ``eval_set``, or the source of a per-row input named by a string
        (``set_fit_request(clv=True)`` for ``inputs={"clv": "clv"}``), which then reaches
        ``fit`` from a ``Pipeline``, ``cross_validate(params=...)`` or ``GridSearchCV``,
        split by fold like ``X``."""
        return self._set_request("fit", requests)

    def set_predict_request(self, **requests: Any) -> _LossEstimator:
        """Request metadata for ``predict``: sources of per-row ``inputs`` and
        ``decision_inputs`` named by strings."""
        return self._set_request("predict", requests)

    def set_predict_proba_request(self, **requests: Any) -> _LossEstimator:
        """Request metadata for ``predict_proba``: sources of per-row ``inputs``."""
        return self._set_request("predict_proba", requests)

    def set_score_request(self, **requests: Any) -> _LossEstimator:
        """Request metadata for ``score``: ``sample_weight`` and per-row input sources."""
        return self._set_request("score", requests)

    # ------------------------------------------------------------------ the loss
    def _default_loss(self, n_classes: int | None) -> str:
        raise NotImplementedError

    def _resolve_loss(self, n_classes: int | None) -> tuple[Loss, dict[str, float]]:
        loss = self._default_loss(n_classes) if self.loss is None else self.loss
        if not isinstance(loss, (str, Loss, CompiledLoss)):
            raise LossError(f"loss must be loss text, a lossdsl.Loss (e.g. an entry of "
                            f"lossdsl.load(path)) or a CompiledLoss, not {type(loss).__name__}")
        definition, compiled_params, _ = coerce_loss(loss)
        self._loss_text = loss if isinstance(loss, str) else None
        if self.params is not None and not isinstance(self.params, Mapping):
            raise LossError(f"params= must be a dict of param name -> value, not "
                            f"{type(self.params).__name__}")
        return definition, {**compiled_params, **dict(self.params or {})}

    @staticmethod
    def _split_inputs(given: Any, what: str,
                      tables: frozenset[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """(fixed values: numbers and tables, {input: source name} of per-row inputs)."""
        if given is not None and not isinstance(given, Mapping):
            raise LossError(f"{what}= must be a dict of input name -> value, not "
                            f"{type(given).__name__}")
        fixed: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, value in dict(given or {}).items():
            if isinstance(value, str):
                sources[name] = value
            elif name in tables:
                fixed[name] = np.asarray(value, dtype=np.float64)
            elif np.ndim(value) == 0 and not isinstance(value, bool):
                fixed[name] = float(np.asarray(value, dtype=np.float64))
            else:
                raise LossError(
                    f"{what}={{{name!r}: <array of shape {np.shape(value)}>}}: per-row values "
                    "given to the constructor would be frozen to one set of rows (a "
                    "cross-validation fold or a shuffle would pair them with other rows). "
                    f"Name where they come from instead: {what}={{{name!r}: 'column'}} takes "
                    "the column of a DataFrame X (not used as a feature), or, when X has no "
                    "such column, the keyword argument fit(X, y, column=...)")
        return fixed, sources

    # ------------------------------------------------------------------ data
    def _all_sources(self) -> list[str]:
        return sorted(set(self._sources("loss").values())
                      | set(self._sources("decision").values()))

    def _take_rows(self, X: Any, metadata: Mapping[str, Any], reset: bool,
                   needed: list[str], eval_index: int | None = None,
                   ) -> tuple[Any, dict[str, np.ndarray]]:
        """(the features, {source: per-row values}) of X and keyword metadata.

        A source is taken from the keyword arguments when given there, else from the column
        of that name of a DataFrame X. Every column named as a source is left out of the
        features, whether or not this call needs it. ``eval_index``: X is
        ``eval_set[eval_index]``'s (its per-row values come from its columns alone).
        """
        allowed = self._all_sources()
        unknown = sorted(k for k in metadata if k not in allowed)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) "
                            f"{', '.join(map(repr, unknown))}: keyword arguments give the "
                            "per-row values named by strings in inputs= or decision_inputs= "
                            f"({', '.join(map(repr, allowed)) or 'none'})")
        columns = getattr(X, "columns", None)
        values: dict[str, np.ndarray] = {}
        if columns is not None and hasattr(X, "drop"):  # a DataFrame: keep its dtypes
            names = [str(c) for c in columns]
            absent = [s for s in getattr(self, "_source_columns", []) if s not in names]
            if reset or not absent:
                # per-row input columns that fit took by keyword are not features either
                extra = [] if reset else [c for c, name in zip(columns, names) if name in allowed
                                          and name not in self._source_columns]
                validate_data(self, X.drop(columns=extra) if extra else X, reset=reset,
                              skip_check_array=True)
            n = len(X)
            check_aligned([("X", X), *((s, metadata[s]) for s in needed if s in metadata)])
            if n == 0:
                raise ValueError("Found array with 0 sample(s) (shape=(0, "
                                 f"{len(names)})) while a minimum of 1 is required.")
            for source in needed:
                if source in metadata:
                    values[source] = _per_row(metadata[source], source, n)
                elif source in names:
                    values[source] = _per_row(X[columns[names.index(source)]].to_numpy(),
                                              source, n)
            dropped = [c for c, s in zip(columns, names) if s in allowed]
            features = X.drop(columns=dropped) if dropped else X
            if features.shape[1] == 0:
                raise LossError("X has no feature columns left once the per-row input "
                                f"columns ({', '.join(map(str, dropped))}) are set aside")
            if reset:
                self._source_columns = [s for s in names if s in allowed]
                self._feature_columns = [str(c) for c in features.columns]
            elif absent:
                # source columns given by keyword this time: the features must match
                given = [str(c) for c in features.columns]
                if given != self._feature_columns:
                    raise ValueError(
                        "The feature names should match those that were passed during fit "
                        f"(less the per-row input columns): expected {self._feature_columns}, "
                        f"got {given}")
        else:
            fitted_sources = getattr(self, "_source_columns", [])
            if not reset and fitted_sources:
                # fitted on a DataFrame holding per-row input columns; an array holds the
                # features alone (the per-row values come by keyword)
                features = check_array(X, accept_sparse=self._accept_sparse,
                                       dtype=[np.float64, np.float32],
                                       ensure_all_finite="allow-nan")
                if features.shape[1] != len(self._feature_columns):
                    raise ValueError(
                        f"X has {features.shape[1]} features, but {type(self).__name__} is "
                        f"expecting {len(self._feature_columns)} features as input (the "
                        "fitted DataFrame's columns less the per-row input columns "
                        f"{fitted_sources})")
            else:
                features = validate_data(self, X, reset=reset, accept_sparse=self._accept_sparse,
                                         dtype=[np.float64, np.float32],
                                         ensure_all_finite="allow-nan")
                if reset:
                    self._source_columns, self._feature_columns = [], None
            features = _sparse_matrix(features)
            n = features.shape[0]
            for source in needed:
                if source in metadata:
                    values[source] = _per_row(metadata[source], source, n)
        missing = [s for s in needed if s not in values]
        if missing and eval_index is not None:
            raise LossError(
                f"eval_set[{eval_index}] has no per-row values for "
                f"{', '.join(map(repr, missing))}: a validation set's per-row values come from "
                "the columns of its own DataFrame (keyword arguments of fit give the training "
                f"rows'), e.g. eval_set=[(X_valid.assign({missing[0]}=values), y_valid)]")
        if missing:
            where = ("a column of the DataFrame X or a keyword argument" if columns is not None
                     else "a keyword argument (X is not a DataFrame)")
            raise LossError(
                f"no per-row values for {', '.join(map(repr, missing))}: give each as {where}, "
                f"e.g. {missing[0]}=values; with metadata routing enabled, request it with "
                f"set_fit_request({missing[0]}=True) / set_predict_request({missing[0]}=True)")
        return features, values

    @staticmethod
    def _rows_of(features: Any, index: np.ndarray) -> Any:
        return features.iloc[index] if hasattr(features, "iloc") else features[index]

    # ------------------------------------------------------------------ fitting
    def _fit(self, X: Any, y: np.ndarray, sample_weight: Any, eval_set: Any,
             metadata: Mapping[str, Any], n_classes: int | None) -> None:
        """Everything ``fit`` does once the labels are checked (and encoded)."""
        definition, params = self._resolve_loss(n_classes)
        self._definition, self._params = definition, params
        probe = definition.compile("cpu", "sum", params)
        self._fixed, self._input_sources = self._split_inputs(
            self.inputs, "inputs", probe.table_inputs())
        self._stand_ins: dict[str, np.ndarray] = {}
        self._split_inputs(self.decision_inputs, "decision_inputs",
                           self._tables_of(self.decision_cost))
        self._check_options()
        _, score = default_roles(definition, self.wrt, self.label,
                                 {**self._fixed, **self._input_sources})
        self._class_axis = probe.default_ranks(declared=False)[score] == 2
        self._score_input = score
        features, values = self._take_rows(X, metadata, True,
                                           sorted(set(self._input_sources.values())))
        n = y.shape[0]
        if features.shape[0] != n:
            raise ValueError(f"X has {features.shape[0]} rows but y has {n}")
        weight = None if sample_weight is None else _check_sample_weight(
            sample_weight, np.empty((n, 0)), dtype=np.float64, ensure_non_negative=True)
        labels = self._loss_labels(y)
        objective = self._objective(values, labels)
        if objective.group_input is not None:
            raise LossError(
                f"{type(self).__name__} cannot fit {self._loss_name()}: it groups its rows by "
                f"'{objective.group_input}' (a ranking loss), and these estimators set each "
                "leaf to a minimiser row by row (lossdsl.xgboost/lightgbm.train). Fit a ranker "
                "with the library's own loop: lightgbm.LGBMRanker(objective="
                "lossdsl.lightgbm.objective(loss)).fit(X, y, group=sizes), or xgb.train(params, "
                "xgb.DMatrix(X, y, qid=ids), rounds, obj=lossdsl.xgboost.objective(loss)) "
                "(docs/boosting.md, ranking)")
        self._check_kind(objective)
        self.loss_ = objective.compiled
        self.wrt_, self.label_ = objective.wrt, objective.label
        self._label_kind = objective.label_kind
        self._policy = objective.policy
        self._before_training(values)
        evals = self._eval_sets(eval_set)
        self.booster_ = self._train(objective, features, labels, weight, evals)
        self.init_score_ = (_plain(self._trained_init_score(self.booster_))
                            if self.init_score else 0.0)
        self._label_range = _label_range(y)
        self._after_training(self._raw(features), values)
        if self.decision_cost is not None:
            self._prepare_decisions(features, y, weight, values)

    def _check_options(self) -> None:
        if self.refit not in ("auto", True, False):
            raise LossError(f"refit must be 'auto', True or False, not {self.refit!r}")
        for name in ("n_estimators", "decision_cv"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, numbers.Real) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got "
                             f"{self.learning_rate!r}")

    def _objective(self, values: Mapping[str, np.ndarray], labels: np.ndarray) -> Any:
        """The objective for exactly these rows (per-row inputs tied to them by ``rows=``)."""
        inputs = dict(self._fixed)
        for name, source in self._input_sources.items():
            inputs[name] = values[source]
        return self._make_objective(inputs, labels if self._input_sources else None)

    def _hessian_options(self) -> dict[str, Any]:
        """The objective's Hessian policy and its numbers, as the boosting modules take them
        (``hessian_constant=None`` leaves the module's default)."""
        options = {"hessian": self.hessian, "hessian_floor": self.hessian_floor,
                   "hessian_scale": self.hessian_scale}
        if self.hessian_constant is not None:
            options["hessian_constant"] = self.hessian_constant
        return options

    def _make_objective(self, inputs: Mapping[str, Any], rows: Any) -> Any:
        options: dict[str, Any] = {"inputs": inputs, "params": self._params,
                                   **self._hessian_options()}
        if rows is not None:
            options["rows"] = rows
        return self._module().objective(self._definition, self.wrt, self.label, **options)

    def _eval_sets(self, eval_set: Any) -> list[tuple[str, Any, np.ndarray, Any]]:
        """[(name, features, loss labels, objective for those rows)] of ``eval_set``."""
        if eval_set is None:
            if self.early_stopping_rounds is not None:
                raise LossError("early_stopping_rounds needs eval_set=[(X_valid, y_valid)] "
                                "in fit")
            return []
        evals = []
        for index, pair in enumerate(eval_set):
            try:
                X_eval, y_eval = pair
            except (TypeError, ValueError):
                raise LossError("eval_set must be a list of (X, y) pairs") from None
            labels = self._loss_labels(self._encode_more(y_eval))
            missing = nan_rows(labels)
            if missing.size:
                raise LossError(f"eval_set[{index}]: {missing.size} label(s) are NaN (the "
                                f"first at row {missing[0]}): the validation loss would be "
                                "NaN; drop those rows (or fill their labels)")
            features, values = self._take_rows(X_eval, {}, False,
                                               sorted(set(self._input_sources.values())),
                                               eval_index=index)
            if features.shape[0] != len(labels):
                raise ValueError(f"eval_set[{index}]: X has {features.shape[0]} rows but y "
                                 f"has {len(labels)}")
            evals.append((f"validation_{index}", features, labels,
                          self._objective(values, labels)))
        return evals

    def _num_class(self) -> int | None:
        return None

    def _encode_more(self, y: Any) -> np.ndarray:
        return column_or_1d(np.asarray(y, dtype=np.float64))

    def _loss_labels(self, y: np.ndarray) -> np.ndarray:
        return y

    def _check_kind(self, objective: Any) -> None:
        raise NotImplementedError

    def _loss_name(self) -> str:
        """The loss's name, or its text, for messages."""
        if self._definition.name:
            return self._definition.name
        text = getattr(self, "_loss_text", None)
        return f"the loss {text!r}" if text else "the loss"

    def _before_training(self, values: Mapping[str, np.ndarray]) -> None:
        """Checks of the loss that need its compiled form but no model."""

    def _after_training(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _prepare_decisions(self, features: Any, y: np.ndarray, weight: np.ndarray | None,
                           values: Mapping[str, np.ndarray]) -> None:
        """Whatever ``decision_cost`` needs from the training rows (nothing by default)."""

    # ------------------------------------------------------------------ library hooks
    def _module(self) -> Any:
        """The lossdsl integration module of the library (imported here, lazily)."""
        raise NotImplementedError

    def _train(self, objective: Any, features: Any, labels: np.ndarray,
               weight: np.ndarray | None, evals: list, rounds: int | None = None) -> Any:
        """A booster trained ``rounds`` rounds (default ``n_estimators``), stopping early
        on ``evals`` where ``early_stopping_rounds`` is set and they are given."""
        raise NotImplementedError

    def _rounds_used(self) -> int:
        """The rounds of the fitted booster that predict uses (its best round's, after
        early stopping)."""
        raise NotImplementedError

    def _raw(self, features: Any, booster: Any = None) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _trained_init_score(booster: Any) -> float | np.ndarray:
        """The constant score training started from: ``train()`` records it on the booster
        (``lossdsl_init_score``); a library without our ``train`` overrides this."""
        return booster.lossdsl_init_score

    def _seed(self) -> int:
        if self.random_state is None:
            return 0
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # ------------------------------------------------------------------ prediction
    def predict_raw(self, X: Any) -> np.ndarray:
        """The raw scores (margins), init score included: (n,) or (n, K)."""
        check_is_fitted(self, "booster_")
        features, _ = self._take_rows(X, {}, False, [])
        return self._raw(features)

    def _scores(self, X: Any, metadata: Mapping[str, Any], for_link: bool,
                for_decision: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(raw scores, the per-row values the link and the decision need) for X."""
        check_is_fitted(self, "booster_")
        needed = set(self._link_sources) if for_link else set()
        if for_decision:
            needed |= set(self._sources("decision").values())
        features, values = self._take_rows(X, metadata, False, sorted(needed))
        return self._raw(features), values

    def _loss_inputs(self, values: Mapping[str, np.ndarray],
                     rows: np.ndarray | None = None) -> dict[str, Any]:
        """The loss's inputs other than label and score: fixed ones, per-row ones that are
        known (all rows, or ``rows`` of them)."""
        inputs: dict[str, Any] = dict(self._fixed)
        for name, source in self._input_sources.items():
            if source in values:
                inputs[name] = values[source] if rows is None else values[source][rows]
        return inputs

    def _gradient(self, label: Any, raw: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        """dl/dz at the raw scores for the given labels."""
        arguments = dict(inputs)
        arguments[self.label_] = label
        arguments[self.wrt_] = raw
        for name, value in self._stand_ins.items():
            # a per-row input the link does not depend on (predict does not ask for it)
            if name not in arguments:
                arguments[name] = np.broadcast_to(value, (raw.shape[0], *value.shape[1:]))
        if any(name not in arguments for name in self.loss_.inputs):
            absent = [name for name in self.loss_.inputs if name not in arguments]
            raise LossError(f"no values for the loss's input(s) {', '.join(absent)}")
        with np.errstate(all="ignore"):
            if self._policy == "constant":  # training asked for the gradient alone too
                gradient = self.loss_.grad(self.wrt_, **arguments)
            else:  # the kernel training compiled: gradient and Hessian
                gradient, _ = self.loss_.grad_and_hessian(self.wrt_, **arguments)
        return np.asarray(gradient, dtype=np.float64)

    def _inputs_matter(self, compute: Any, raw: np.ndarray,
                       values: Mapping[str, np.ndarray]) -> bool:
        """Whether the link's result changes when the per-row inputs do (rolled by one row,
        doubled, and moved far beyond the training rows' range: a threshold such as
        ``where(clv > 1000, ...)`` that no training row crosses still counts); when it does
        not, ``predict`` does not ask for them, and the link is computed with the first
        training row's values in their place (``_stand_ins``, none until then: fit starts
        without)."""
        if not self._input_sources:
            return False
        base = compute(raw, self._loss_inputs(values))
        changes = ((lambda v: np.roll(v, 1, axis=0), True), (lambda v: 2.0 * v + 1.0, True),
                   # outside the rows seen; a value the input's domain refuses proves nothing
                   (lambda v: 1e6 * v, False), (lambda v: 1e-6 * v, False),
                   (np.negative, False))
        for change, refusal_matters in changes:
            changed = {source: change(np.asarray(v, dtype=np.float64))
                       for source, v in values.items()}
            try:
                with np.errstate(all="ignore"):
                    other = compute(raw, self._loss_inputs(changed))
            except LossError:
                if refusal_matters:
                    return True
                continue
            if not np.allclose(base, other, rtol=1e-12, atol=1e-15, equal_nan=False):
                return True
        self._stand_ins = {name: np.asarray(values[source])[:1]
                           for name, source in self._input_sources.items() if source in values}
        return False

    def _decision_inputs(self, values: Mapping[str, np.ndarray], X: Any,
                         extra: Mapping[str, Any], use_constructor: bool) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        if use_constructor:
            fixed, sources = self._split_inputs(self.decision_inputs, "decision_inputs",
                                                self._tables_of(self.decision_cost))
            inputs.update(fixed)
            for name, source in sources.items():
                inputs[name] = values[source]
        for name, value in extra.items():
            inputs[name] = _column(X, value, name) if isinstance(value, str) else value
        return inputs

    def _decide_rows(self, X: Any, cost: LossLike | None,
                     inputs: Mapping[str, Any]) -> tuple[np.ndarray, dict, dict]:
        """For ``decide`` (``cost`` None: the default ``decision_cost``): (raw scores,
        per-row values of the sources, the cost's other inputs). Keyword ``inputs`` named
        like a source (of the loss's per-row inputs, and of ``decision_inputs`` for the
        default cost) give that source's values; the others are inputs of the cost (a
        string names a column of X)."""
        check_is_fitted(self, "booster_")
        default = cost is None
        sources = set(self._link_sources)
        if default:
            sources |= set(self._sources("decision").values())
        metadata = {k: v for k, v in inputs.items() if k in sources and not isinstance(v, str)}
        extra = {k: v for k, v in inputs.items() if k not in metadata}
        # the cost's per-row inputs (and groups=, quantiles=) meet X's rows by position in
        # decide
        shared = self._tables_of(self.decision_cost if default else cost) | NOT_PER_ROW
        check_aligned([("X", X), *((name, value) for name, value in extra.items()
                                   if name not in shared and not isinstance(value, str))])
        features, values = self._take_rows(X, metadata, False, sorted(sources))
        return self._raw(features), values, extra

    @staticmethod
    def _tables_of(cost: Any) -> frozenset[str]:
        if cost is None:
            return frozenset()
        definition, params, _ = coerce_loss(cost)
        return definition.compile("cpu", "none", params).table_inputs()


# ---------------------------------------------------------------------------- classifiers
class _LossClassifier(ClassifierMixin, _LossEstimator):
    """A classifier trained on a lossdsl loss (see :class:`_LossEstimator` for parameters).

    ``class_values``: for a binary loss, the label values the loss gets for ``classes_[0]``
    and ``classes_[1]``: ``(0, 1)`` (default) or ``(-1, 1)`` for margin losses such as
    ``hinge``. A loss over classes gets class indices ``0 .. K-1`` (or one-hot rows).
    """

    def __init__(self, loss: LossLike | None = None, *, wrt: str | None = None,
                 label: str | None = None, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None, hessian: str = "auto",
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR,
                 hessian_constant: float | str | None = None, hessian_scale: float = 1.0,
                 n_estimators: int = 100, learning_rate: float = 0.1,
                 refit: str | bool = "auto", random_state: Any = None,
                 init_score: bool = True, early_stopping_rounds: int | None = None,
                 decision_cost: LossLike | None = None,
                 decision_inputs: Mapping[str, Any] | None = None, decisions: Any = None,
                 decision_cv: int = 5, class_values: tuple[float, float] = (0, 1),
                 **booster_params: Any):
        super().__init__(loss, wrt=wrt, label=label, inputs=inputs, params=params,
                         hessian=hessian, hessian_floor=hessian_floor,
                         hessian_constant=hessian_constant, hessian_scale=hessian_scale,
                         n_estimators=n_estimators,
                         learning_rate=learning_rate, refit=refit, random_state=random_state,
                         init_score=init_score, early_stopping_rounds=early_stopping_rounds,
                         decision_cost=decision_cost, decision_inputs=decision_inputs,
                         decisions=decisions, decision_cv=decision_cv, **booster_params)
        self.class_values = class_values

    def _default_loss(self, n_classes: int | None) -> str:
        return "bce_logits" if n_classes == 2 else "cce_logits"

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            **inputs: Any) -> _LossClassifier:
        """Fit on ``X, y``; ``inputs``: per-row values of the sources named in ``inputs=``
        (and ``decision_inputs=``), when X does not hold them as columns. ``eval_set``: a
        list of ``(X, y)`` pairs whose loss is tracked (the last one for early stopping)."""
        if y is None:
            raise ValueError(f"requires y to be passed, but the target y is None "
                             f"({type(self).__name__})")
        check_aligned([("X", X), ("y", y), ("sample_weight", sample_weight)])
        y = column_or_1d(np.asarray(y), warn=True)
        if y.shape[0] == 0:
            raise ValueError("Found array with 0 sample(s) (shape=(0,)) while a minimum of 1 "
                             "is required.")
        self.classes_, encoded = fit_classes(self, y, sample_weight)
        self._fit(X, encoded, sample_weight, eval_set, inputs, self.classes_.size)
        return self

    def _encode_more(self, y: Any) -> np.ndarray:
        y = column_or_1d(np.asarray(y))
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, self.classes_.size - 1)
        if not np.array_equal(self.classes_[index], y):
            raise LossError("eval_set labels hold classes not seen in y")
        return index

    def _num_class(self) -> int | None:
        return self.classes_.size if self._multiclass else None

    def _loss_labels(self, y: np.ndarray) -> np.ndarray:
        if self._multiclass:
            return y.astype(np.float64)
        if self.classes_.size != 2:  # before class_values, which has two entries, is read
            raise self._binary_loss_error(self._score_input)
        return np.asarray(self.class_values, dtype=np.float64)[y]

    @property
    def _multiclass(self) -> bool:
        return bool(self._class_axis)

    def _check_kind(self, objective: Any) -> None:
        if not objective.class_axis and self.classes_.size != 2:
            raise self._binary_loss_error(objective.wrt)

    def _binary_loss_error(self, score: str) -> LossError:
        return LossError(
            f"{self._loss_name()} is a binary loss (its score '{score}' is one value per "
            f"row) but y has {self.classes_.size} classes; use a loss over classes "
            "(cce_logits and friends: a score of one value per class)")

    # ------------------------------------------------------------------ training hooks
    def _before_training(self, values: Mapping[str, np.ndarray]) -> None:
        if self._multiclass:
            return
        # A binary loss written for labels -1/1 (hinge) ignores label 0: its gradient is 0
        # at every score, and the booster would learn from one class only.
        rows = np.arange(min(_GRID_ROWS, self._n_rows(values)))
        z = np.linspace(-3.0, 3.0, 13)
        inputs = self._grid_inputs(values, rows, z.size)
        raw = np.tile(z, rows.size)
        for index, value in enumerate(self.class_values):
            with class_values_hint():
                gradient = self._gradient(np.full(raw.size, value, dtype=_LABEL), raw, inputs)
            if np.all(gradient == 0):
                raise LossError(
                    f"{self._loss_name()} does not depend on the score for label {value} "
                    f"(class {self.classes_[index]!r}): its gradient is 0 at every score. Does "
                    "the loss expect other label values? Pass class_values=(-1, 1) for a "
                    "margin loss such as hinge, or write the loss for labels 0/1")

    def _n_rows(self, values: Mapping[str, np.ndarray]) -> int:
        return next(iter(values.values())).shape[0] if values else _GRID_ROWS

    def _grid_inputs(self, values: Mapping[str, np.ndarray], rows: np.ndarray,
                     repeat: int) -> dict[str, Any]:
        """The loss's inputs for ``rows`` of the training set, each repeated ``repeat``
        times (one grid of scores per row)."""
        inputs = dict(self._fixed)
        for name, source in self._input_sources.items():
            inputs[name] = np.repeat(values[source][rows], repeat, axis=0)
        return inputs

    def _after_training(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        self._link_sources: list[str] = sorted(set(self._input_sources.values()))
        self._proba_error: str | None = None
        self._decides_by_score = False
        try:
            self._probabilities(raw, self._loss_inputs(values))
            if not self._multiclass:
                self._check_monotone(raw, values)
            else:
                self._check_moving(raw, values)
        except LossError as error:
            self._proba_error = str(error)
            self._decides_by_score = self._expected_cost_of_decisions(raw, values)
            return
        if not self._inputs_matter(self._probabilities, raw, values):
            self._link_sources = []

    def _expected_cost_of_decisions(self, raw: np.ndarray,
                                    values: Mapping[str, np.ndarray]) -> bool:
        """Whether the loss is the expected cost of a decision drawn with the probabilities
        the score gives (softmax(z), or sigmoid(z) for a binary score): ``l(y, z) =
        sum_j pi_j(z) l(y, z_j)`` with ``z_j`` a score sure of class j (``expected_cost``,
        ``credit_expected``). Then the score says which decision is cheapest, its
        most probable one; the class whose loss is lowest at the score is another thing
        (the label under which the drawn decision would cost least)."""
        rows = np.arange(min(_GRID_ROWS, raw.shape[0]))
        z = raw[rows]
        inputs = self._loss_inputs(values, rows)
        found = self._class_losses(z, inputs)
        n, k = found.shape
        if self._multiclass:
            shifted = np.exp(z - z.max(axis=1, keepdims=True))
            weights = shifted / shifted.sum(axis=1, keepdims=True)
            sure = [np.broadcast_to(_SURE * (np.arange(k) == j), z.shape) for j in range(k)]
        else:
            weights = np.column_stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))])
            sure = [np.full(n, -_SURE), np.full(n, _SURE)]
        mixture = sum(weights[:, [j]] * self._class_losses(np.ascontiguousarray(at), inputs)
                      for j, at in enumerate(sure))
        scale = 1.0 + np.abs(found)
        return bool(np.all(np.isfinite(found)) and np.all(np.abs(mixture - found) <= 1e-7 * scale))

    def _check_moving(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Over classes, the rule's q must move with the score: an expected cost under a
        cost matrix can give the same q (the cost matrix's indifference point) at every
        score."""
        rows = np.arange(min(_GRID_ROWS, raw.shape[0]))
        z = raw[rows]
        inputs = self._loss_inputs(values, rows)
        base = self._probabilities(z, inputs)
        moved = probabilities_move(lambda at: self._probabilities(at, inputs), z, base)
        if not np.all(moved):
            i = int(np.argmin(moved))
            raise LossError(
                f"{self._loss_name()} does not imply class probabilities: at the scores "
                f"{z[i].tolist()} (row {i}) the probabilities for which a score is optimal "
                f"({base[i].tolist()}) do not change with the score, so they say nothing "
                "about the row. Train cce_logits (weighted by the costs) for probabilities, "
                "and choose decisions with decision_cost=")

    def _check_monotone(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """A binary loss implies probabilities only if the rule's q moves with the score: a
        hinge gives q = 1/2 on the whole margin, 0 or 1 outside it."""
        low, high = float(np.min(raw)), float(np.max(raw))
        if high - low <= 1e-12 * max(1.0, abs(low)):
            return  # a constant model: nothing to compare
        rows = np.arange(min(_GRID_ROWS, raw.shape[0]))
        z = np.linspace(low, high, _GRID)
        q = self._probabilities(np.tile(z, rows.size),
                                self._grid_inputs(values, rows, z.size))[:, 1]
        q = q.reshape(rows.size, z.size)
        inside = (q > 1e-12) & (q < 1 - 1e-12)
        steps = np.diff(q, axis=1)
        both = inside[:, 1:] & inside[:, :-1]
        rising = np.all((steps > 0) | ~both)
        falling = np.all((steps < 0) | ~both)
        if not both.any() or not (rising or falling):
            raise LossError(
                f"{self._loss_name()} does not imply class probabilities: the probability "
                "for which a score is optimal (q = g0 / (g0 - g1), with g0, g1 the loss's "
                "gradients at labels 0 and 1) does not change strictly with the score over "
                f"the fitted scores [{low:.6g}, {high:.6g}] (a margin loss such as hinge "
                "is optimal at the same score for many probabilities). predict() gives the "
                "class whose loss is lowest at the score; for probabilities train a proper "
                "loss (bce_logits, cost_sensitive_bce)")


    def _probabilities(self, raw: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities (n, K) implied by the raw scores under the loss."""
        n = raw.shape[0]
        if not self._multiclass:
            values = [float(v) for v in self.class_values]

            def gradient_at(j: int) -> np.ndarray:
                return self._gradient(np.full(n, values[j], dtype=_LABEL), raw, inputs)

            return class_probabilities(gradient_at, n, None, self._loss_name())
        k = raw.shape[1]
        return class_probabilities(
            lambda j: self._gradient(self._class_label(j, n, k), raw, inputs), n, k,
            self._loss_name(),
            " (an expected cost under softmax probabilities is not). Train cce_logits "
            "(weighted by the costs) for probabilities, and choose decisions with "
            "decision_cost=")

    def _class_label(self, label: int, n: int, k: int) -> np.ndarray:
        if self._label_kind == "index":
            return np.full(n, label, dtype=np.int64)
        onehot = np.zeros((n, k), dtype=_LABEL)
        onehot[:, label] = 1.0
        return onehot

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X: Any, **inputs: Any) -> np.ndarray:
        """Class probabilities (n, K), columns in the order of ``classes_``: those for which
        the raw score is optimal under the loss (see the module docstring). Raises
        :class:`~lossdsl.LossError` when the loss implies none (found at fit time).
        ``inputs``: per-row values the loss needs, when X does not hold them as columns."""
        check_is_fitted(self, "booster_")
        if self._proba_error is not None:
            raise LossError(f"predict_proba is not available: {self._proba_error}")
        raw, values = self._scores(X, inputs, True, False)
        return self._probabilities(raw, self._loss_inputs(values))

    def predict(self, X: Any, **inputs: Any) -> np.ndarray:
        """The most probable class (``classes_[argmax predict_proba]``), or with
        ``decision_cost`` each row's cost-minimising decision. A loss that implies no
        probabilities predicts the class whose loss is lowest at the row's score."""
        decision = self.decision_cost is not None
        check_is_fitted(self, "booster_")
        raw, values = self._scores(X, inputs, True, decision)
        if self._proba_error is not None:
            if decision:
                raise LossError(f"decision_cost needs class probabilities, and "
                                f"{self._proba_error}")
            if getattr(self, "_decides_by_score", False):  # its most probable decision
                chosen = (np.argmax(raw, axis=1) if self._multiclass
                          else (raw > 0).astype(np.int64))
                return self.classes_[chosen]
            return self.classes_[self._lowest_loss(raw, self._loss_inputs(values))]
        proba = self._probabilities(raw, self._loss_inputs(values))
        if not decision:
            return self.classes_[np.argmax(proba, axis=1)]
        return self._decide_from(proba, None, values, X, {}, True)

    def score(self, X: Any, y: Any, sample_weight: Any = None, **inputs: Any) -> float:
        """Mean accuracy of ``predict(X, **inputs)`` (``inputs``: per-row values, as for
        ``predict``)."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X, **inputs), sample_weight=sample_weight))

    def _lowest_loss(self, raw: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        losses = self._class_losses(raw, inputs)
        return np.argmin(np.where(np.isnan(losses), np.inf, losses), axis=1)

    def _class_losses(self, raw: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        """(n, K): each row's loss at its score under each class as its label."""
        none = self._definition.compile("cpu", "none", self._params)
        n = raw.shape[0]
        k = self.classes_.size
        losses = np.empty((n, k))
        for index in range(k):
            label = (np.full(n, float(self.class_values[index])) if not self._multiclass
                     else self._class_label(index, n, k))
            arguments = dict(inputs)
            arguments[self.label_], arguments[self.wrt_] = label, raw
            with np.errstate(all="ignore"):
                losses[:, index] = none(**arguments)
        return losses

    def _cost_classes(self) -> np.ndarray:
        """The label values a decision cost sees: the classes when numeric, else 0..K-1."""
        if self.classes_.dtype.kind in "biuf":
            return self.classes_.astype(np.float64)
        return np.arange(self.classes_.size, dtype=np.float64)

    def _decide_from(self, proba: np.ndarray, cost: Any, values: Mapping[str, np.ndarray],
                     X: Any, extra: Mapping[str, Any], use_constructor: bool,
                     decisions: Any = None) -> np.ndarray:
        inputs = self._decision_inputs(values, X, extra, use_constructor)
        candidates = self.decisions if use_constructor else decisions
        chosen = _decide(self.decision_cost if cost is None else cost, probabilities=proba,
                         classes=self._cost_classes(), decisions=candidates, **inputs)
        if candidates is None and self.classes_.dtype.kind not in "biuf":
            return self.classes_[np.asarray(chosen, dtype=np.int64)]
        if candidates is None:
            return self.classes_[np.searchsorted(self._cost_classes(), chosen)]
        return chosen

    def decide(self, X: Any, cost: LossLike | None = None, *, decisions: Any = None,
               **inputs: Any) -> np.ndarray:
        """Each row's decision of lowest expected cost under ``cost`` (default:
        ``decision_cost`` with ``decision_inputs`` and ``decisions``), from
        ``predict_proba`` (:func:`lossdsl.decide`'s Bayes rule). ``inputs``: the cost's
        inputs (numbers, tables, per-row arrays, or strings naming columns of X)."""
        if cost is None and self.decision_cost is None:
            raise LossError("decide() needs a cost: pass cost=... or set decision_cost=")
        default = cost is None
        raw, values, extra = self._decide_rows(X, cost, inputs)
        if self._proba_error is not None:
            raise LossError(f"decide() needs class probabilities, and {self._proba_error}")
        proba = self._probabilities(raw, self._loss_inputs(values))
        return self._decide_from(proba, cost, values, X, extra, default, decisions)


# ---------------------------------------------------------------------------- regressors
class _LossRegressor(RegressorMixin, _LossEstimator):
    """A regressor trained on a lossdsl loss (see :class:`_LossEstimator` for parameters)."""

    def _default_loss(self, n_classes: int | None) -> str:
        return "mse"

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            **inputs: Any) -> _LossRegressor:
        """Fit on ``X, y``; ``inputs``: per-row values of the sources named in ``inputs=``
        (and ``decision_inputs=``) when X does not hold them as columns. ``eval_set``: a list
        of ``(X, y)`` pairs whose loss is tracked (the last one for early stopping). With
        ``decision_cost``, ``decision_cv`` more models are fitted for out-of-fold
        residuals."""
        if y is None:
            raise ValueError(f"requires y to be passed, but the target y is None "
                             f"({type(self).__name__})")
        check_aligned([("X", X), ("y", y), ("sample_weight", sample_weight)])
        y = column_or_1d(np.asarray(y), warn=True)
        if y.dtype.kind not in "biuf":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(f"Unknown label type: {type(self).__name__} needs numeric "
                                 f"targets ({error})") from None
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity.")
        self._fit(X, y, sample_weight, eval_set, inputs, None)
        return self

    def _check_kind(self, objective: Any) -> None:
        if objective.reads_score_columns:
            raise LossError(f"{self._loss_name()} reads several score columns per row (its "
                            f"score '{objective.wrt}') with one real label, as a mean and a "
                            "spread: a regressor predicts one number per row; train it with "
                            "lossdsl.xgboost.train or lossdsl.lightgbm.train and num_class "
                            "(docs/boosting.md, 'A mean and a spread from one model')")
        columns = objective.score_columns
        if objective.per_column and columns is not None and columns >= 2:
            raise LossError(f"{self._loss_name()} has one score column per entry of its "
                            f"per-class vectors ({columns} entries, as several quantile "
                            "levels): a regressor predicts one number per row; train it with "
                            f"lossdsl.xgboost.train or lossdsl.lightgbm.train and num_class="
                            f"{columns} (docs/boosting.md, 'Several quantiles from one "
                            "model'), or pass one level as a number")
        if objective.class_axis:
            raise LossError(f"{self._loss_name()} is a loss over classes "
                            f"(its score '{objective.wrt}' has one column per class): use a "
                            "classifier")

    def _after_training(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        self._link_sources = sorted(set(self._input_sources.values()))
        self._prediction_error: str | None = None
        self.identity_link_ = self._is_identity(raw, values)
        if self.identity_link_:
            self._link_sources = []
            return
        try:
            self._predictions(raw, self._loss_inputs(values))
        except LossError as error:
            self._prediction_error = str(error)
            return
        if not self._inputs_matter(self._predictions, raw, values):
            self._link_sources = []

    def _is_identity(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> bool:
        """Whether the score is the label-scale prediction, at every fitted score and on a
        grid around their range (:func:`lossdsl.implied.is_identity`), with the per-row
        inputs of the first rows along the grid."""
        rows = np.arange(min(_GRID_ROWS, raw.shape[0]))
        grid = score_grid(raw)
        grid_inputs = dict(self._fixed)
        for name, source in self._input_sources.items():
            grid_inputs[name] = np.repeat(values[source][rows], grid.size, axis=0)
        checks = []
        for z, given in ((raw, self._loss_inputs(values)), (np.tile(grid, rows.size),
                                                            grid_inputs)):
            checks.append((z, functools.partial(self._gradient, raw=z, inputs=given),
                           functools.partial(self._solved_labels, z, given)))
        return is_identity(checks)

    def _predictions(self, raw: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        """The labels y* with dl(y*, z)/dz = 0 (:func:`lossdsl.implied.label_scale`)."""
        if self.identity_link_:
            return raw.astype(np.float64, copy=True)
        return self._solved_labels(raw, inputs)

    def _solved_labels(self, raw: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        """:func:`lossdsl.implied.label_scale` of the scores ``raw``."""
        n = raw.shape[0]

        def gradient(labels: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
            if rows is None:
                return self._gradient(labels, raw, inputs)
            return self._gradient(labels, raw[rows], _subset(inputs, rows, n))

        bounds = label_bounds(self.loss_.input_domains().get(self.label_, ()))
        return label_scale(gradient, n, self._label_range, self._loss_name(), bounds)

    def predict(self, X: Any, **inputs: Any) -> np.ndarray:
        """The label-scale prediction for which each raw score is optimal (the score itself
        for losses on the label's scale), or with ``decision_cost`` each row's
        cost-minimising decision given the out-of-fold residuals. ``inputs``: per-row values
        the loss or the cost needs, when X does not hold them as columns."""
        decision = self.decision_cost is not None
        raw, values = self._scores(X, inputs, True, decision)
        prediction = self._label_scale(raw, values)
        if not decision:
            return prediction
        return self._decide_from(prediction, None, values, X, {}, True)

    def score(self, X: Any, y: Any, sample_weight: Any = None, **inputs: Any) -> float:
        """R^2 of ``predict(X, **inputs)`` (``inputs``: per-row values, as for ``predict``)."""
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predict(X, **inputs), sample_weight=sample_weight))

    def _label_scale(self, raw: np.ndarray, values: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._prediction_error is not None:
            raise LossError(f"predict is not available: {self._prediction_error}")
        return self._predictions(raw, self._loss_inputs(values))

    def _prepare_decisions(self, features: Any, y: np.ndarray, weight: np.ndarray | None,
                           values: Mapping[str, np.ndarray]) -> None:
        """Out-of-fold residuals ``y - prediction`` of ``decision_cv`` models fitted on the
        other folds (same settings), for :func:`lossdsl.decide`."""
        if self._prediction_error is not None:
            raise LossError(f"decision_cost needs label-scale predictions, and "
                            f"{self._prediction_error}")
        n = y.shape[0]
        folds = min(self.decision_cv, n)
        if folds < 2:
            raise LossError(f"decision_cost needs out-of-fold residuals: decision_cv="
                            f"{self.decision_cv} folds of {n} rows is too few")
        held_out = np.empty(n)
        splitter = KFold(folds, shuffle=True, random_state=self._seed())
        for train, test in splitter.split(np.empty((n, 1))):
            part = {source: v[train] for source, v in values.items()}
            labels = y[train]
            objective = self._objective(part, labels)
            # as many rounds as the model predict uses (after early stopping: its best)
            booster = self._train(objective, self._rows_of(features, train), labels,
                                  None if weight is None else weight[train], [],
                                  self._rounds_used())
            raw = self._raw(self._rows_of(features, test), booster)
            test_values = {source: v[test] for source, v in values.items()}
            held_out[test] = self._predictions(raw, self._loss_inputs(test_values))
        self.residuals_ = y - held_out
        # each residual as likely as its row's weight (a row of weight 0 does not count)
        self.residual_weights_ = None if weight is None else np.array(weight, dtype=float)

    def _decide_from(self, prediction: np.ndarray, cost: Any, values: Mapping[str, np.ndarray],
                     X: Any, extra: Mapping[str, Any], use_constructor: bool,
                     decisions: Any = None, residuals: Any = None,
                     residual_weights: Any = None) -> np.ndarray:
        if residuals is None:
            residuals = getattr(self, "residuals_", None)
            residual_weights = getattr(self, "residual_weights_", None)
        if residuals is None:
            raise LossError("decide() on a regressor needs held-out residuals: set "
                            "decision_cost= before fit (out-of-fold residuals are then kept "
                            "in residuals_), or pass residuals=y_valid - predict(X_valid)")
        inputs = self._decision_inputs(values, X, extra, use_constructor)
        candidates = self.decisions if use_constructor else decisions
        return _decide(self.decision_cost if cost is None else cost, predictions=prediction,
                       residuals=residuals, residual_weights=residual_weights,
                       decisions=candidates, **inputs)

    def decide(self, X: Any, cost: LossLike | None = None, *, decisions: Any = None,
               residuals: Any = None, residual_weights: Any = None,
               **inputs: Any) -> np.ndarray:
        """Each row's decision of lowest expected cost under ``cost`` (default:
        ``decision_cost`` with ``decision_inputs`` and ``decisions``), the outcomes being
        the prediction plus the out-of-fold ``residuals_`` weighted by the training rows'
        ``sample_weight`` (``residual_weights_``), or ``residuals=`` weighted by
        ``residual_weights=``.
        ``inputs``: the cost's inputs (numbers, tables, per-row arrays, or strings naming
        columns of X)."""
        if cost is None and self.decision_cost is None:
            raise LossError("decide() needs a cost: pass cost=... or set decision_cost=")
        default = cost is None
        raw, values, extra = self._decide_rows(X, cost, inputs)
        prediction = self._label_scale(raw, values)
        return self._decide_from(prediction, cost, values, X, extra, default, decisions,
                                 residuals, residual_weights)


# ---------------------------------------------------------------------------- libraries
class _XGBoost:
    """Training and raw scores with XGBoost (``lossdsl.xgboost.train``)."""

    def _module(self) -> Any:
        import lossdsl.xgboost

        return lossdsl.xgboost

    def _train(self, objective: Any, features: Any, labels: np.ndarray,
               weight: np.ndarray | None, evals: list, rounds: int | None = None) -> Any:
        import xgboost as xgb

        params = {"eta": self.learning_rate, "seed": self._seed(), **self._booster_params}
        if objective.class_axis:
            params["num_class"] = self.classes_.size
        frame = hasattr(features, "columns")
        threads = self._threads()
        train_set = xgb.DMatrix(features, labels, weight=weight, enable_categorical=frame,
                                nthread=threads)
        watched = [(name, xgb.DMatrix(f, y, enable_categorical=frame, nthread=threads), o)
                   for name, f, y, o in evals]
        return self._module().train(objective, params, train_set, rounds or self.n_estimators,
                                    refit=self.refit, evals=watched,
                                    early_stopping_rounds=(self.early_stopping_rounds
                                                           if watched else None),
                                    init_score=self.init_score)

    def _rounds_used(self) -> int:
        return int(self.booster_.num_boosted_rounds())  # cut at the best round by train

    def _threads(self) -> int:
        """The DMatrix's threads: the booster's ``nthread`` / ``n_jobs`` when given."""
        given = self._booster_params.get("nthread", self._booster_params.get("n_jobs"))
        return -1 if given is None else int(given)

    def _raw(self, features: Any, booster: Any = None) -> np.ndarray:
        import xgboost as xgb

        booster = self.booster_ if booster is None else booster
        frame = hasattr(features, "columns")
        names = None if frame else getattr(self, "_feature_columns", None)
        data = xgb.DMatrix(features, enable_categorical=frame, feature_names=names,
                           nthread=self._threads())
        options = {}
        best = getattr(booster, "best_iteration", None) if self.early_stopping_rounds else None
        if best is not None:
            options["iteration_range"] = (0, int(best) + 1)
        return np.asarray(booster.predict(data, output_margin=True, **options),
                          dtype=np.float64)


class _LightGBM:
    """Training and raw scores with LightGBM (``lossdsl.lightgbm.train``)."""

    def _module(self) -> Any:
        import lossdsl.lightgbm

        return lossdsl.lightgbm

    def _train(self, objective: Any, features: Any, labels: np.ndarray,
               weight: np.ndarray | None, evals: list, rounds: int | None = None) -> Any:
        import lightgbm as lgb

        params = {"learning_rate": self.learning_rate, "seed": self._seed(),
                  "verbosity": -1, **self._booster_params}
        if objective.class_axis:
            params["num_class"] = self.classes_.size
        # the Dataset gets the params too: its feature pre-filter uses min_data_in_leaf
        # (with a custom objective LightGBM cannot train on a Dataset left with no feature)
        train_set = lgb.Dataset(features, labels, weight=weight, free_raw_data=False,
                                params={k: v for k, v in params.items() if k != "num_class"})
        watched = [(name, lgb.Dataset(f, y, reference=train_set, free_raw_data=False), o)
                   for name, f, y, o in evals]
        return self._module().train(objective, params, train_set, rounds or self.n_estimators,
                                    refit=self.refit, evals=watched,
                                    early_stopping_rounds=(self.early_stopping_rounds
                                                           if watched else None),
                                    init_score=self.init_score)

    def _rounds_used(self) -> int:
        best = self.booster_.best_iteration  # 1-based; 0 without early stopping
        return int(best) if best > 0 else int(self.booster_.current_iteration())

    def _raw(self, features: Any, booster: Any = None) -> np.ndarray:
        booster = self.booster_ if booster is None else booster
        return np.asarray(booster.predict(features, raw_score=True), dtype=np.float64)


class _CatBoost:
    """Training and raw scores with ``catboost.CatBoost`` on the parameters of
    ``lossdsl.catboost.model_params``, the init score given as the baseline (and added back
    to raw scores: CatBoost does not store it)."""

    _accept_sparse = False  # CatBoost 1.2 refuses scipy's sparse arrays

    def _module(self) -> Any:
        import lossdsl.catboost

        return lossdsl.catboost

    def _make_objective(self, inputs: Mapping[str, Any], rows: Any) -> Any:
        # CatBoost's objective takes no rows=: it refuses per-row inputs itself
        return self._module().objective(self._definition, self.wrt, self.label, inputs=inputs,
                                        params=self._params, **self._hessian_options())

    def _train(self, objective: Any, features: Any, labels: np.ndarray,
               weight: np.ndarray | None, evals: list, rounds: int | None = None) -> Any:
        from catboost import CatBoost, Pool

        if self.refit is True:
            raise LossError("refit=True is not available with CatBoost: it estimates its "
                            "leaves itself (leaf_estimation_method=, leaf_estimation_"
                            "iterations=); use refit='auto' or False")
        num_class = self.classes_.size if objective.class_axis else None
        # lossdsl.catboost.model_params: the objective with the eval metric CatBoost needs,
        # leaf estimation suited to the Hessian policy and, for a loss on one score, a
        # constant Hessian scaled to the labels; booster_params override its choices
        overrides = {"iterations": rounds or self.n_estimators,
                     "learning_rate": self.learning_rate,
                     "random_seed": self._seed(), "verbose": False,
                     "allow_writing_files": False,
                     **{k: v for k, v in self._booster_params.items() if k != "cat_features"}}
        params = self._module().model_params(
            self._definition, self.wrt, self.label, **self._hessian_options(),
            inputs=objective.inputs, params=self._params,
            labels=None if num_class else labels, sample_weight=weight, **overrides)
        objective = params["loss_function"]

        # the training rows' optimal constant, the start of every pool: evaluation rows
        # start where the model does (their own optimum would use their labels)
        init = (_plain(objective.init_score(labels, weight, num_class, unbounded="surrogate"))
                if self.init_score else 0.0)

        def pool(data: Any, y: np.ndarray, w: np.ndarray | None) -> Any:
            baseline = repeat_score(init, y.shape[0]) if self.init_score else None
            return Pool(data, y, weight=w, baseline=baseline,
                        cat_features=self._categorical(data))

        model = CatBoost(params)
        watched = [pool(f, y, None) for _, f, y, _ in evals]
        model.fit(pool(features, labels, weight), eval_set=watched or None,
                  early_stopping_rounds=self.early_stopping_rounds,
                  use_best_model=bool(watched) and self.early_stopping_rounds is not None)
        return _CatBoostModel(model, init)

    def _rounds_used(self) -> int:
        return int(self.booster_.model.tree_count_)  # shrunk to the best with early stopping

    @staticmethod
    def _trained_init_score(booster: Any) -> float | np.ndarray:
        return booster.init_score

    def _raw(self, features: Any, booster: Any = None) -> np.ndarray:
        from catboost import Pool

        booster = self.booster_ if booster is None else booster
        raw = np.asarray(booster.model.predict(Pool(features,
                                                    cat_features=self._categorical(features)),
                                               prediction_type="RawFormulaVal"),
                         dtype=np.float64)
        return raw + booster.init_score

    def _categorical(self, features: Any) -> list | None:
        """The categorical features, which CatBoost's Pool must be told of: the
        ``cat_features`` given, else a DataFrame's columns of category, object or string
        dtype (as CatBoost's own estimators need them named)."""
        given = self._booster_params.get("cat_features")
        if given is not None:
            return list(given)
        dtypes = getattr(features, "dtypes", None)
        if dtypes is None:
            return None
        found = [column for column, dtype in dtypes.items()
                 if dtype.name in ("category", "object", "string") or dtype.kind in "OSU"]
        return found or None


class _CatBoostModel:
    """A fitted ``catboost.CatBoost`` (``model``) and the init score it was trained from
    (``init_score``), which CatBoost does not store: raw scores add it back."""

    def __init__(self, model: Any, init_score: float | np.ndarray):
        self.model = model
        self.init_score = init_score


class XGBLossRegressor(_XGBoost, _LossRegressor):
    """An XGBoost regressor trained on a lossdsl loss (parameters: :class:`_LossEstimator`)."""


class XGBLossClassifier(_XGBoost, _LossClassifier):
    """An XGBoost classifier trained on a lossdsl loss (parameters: :class:`_LossEstimator`,
    ``class_values``: :class:`_LossClassifier`)."""


class LGBMLossRegressor(_LightGBM, _LossRegressor):
    """A LightGBM regressor trained on a lossdsl loss (parameters: :class:`_LossEstimator`)."""


class LGBMLossClassifier(_LightGBM, _LossClassifier):
    """A LightGBM classifier trained on a lossdsl loss (parameters: :class:`_LossEstimator`,
    ``class_values``: :class:`_LossClassifier`)."""


class CatBoostLossRegressor(_CatBoost, _LossRegressor):
    """A CatBoost regressor trained on a lossdsl loss (parameters: :class:`_LossEstimator`;
    scalar ``inputs`` only: CatBoost cannot tie per-row values to their rows)."""


class CatBoostLossClassifier(_CatBoost, _LossClassifier):
    """A CatBoost classifier trained on a lossdsl loss (parameters: :class:`_LossEstimator`;
    scalar ``inputs`` only: CatBoost cannot tie per-row values to their rows)."""


# ---------------------------------------------------------------------------- helpers
def _sparse_matrix(features: Any) -> Any:
    """SciPy's sparse *arrays* as sparse matrices of the same format (LightGBM 4.7 and
    CatBoost 1.2 take only the matrices); anything else as it is."""
    import scipy.sparse

    if scipy.sparse.issparse(features) and not scipy.sparse.isspmatrix(features):
        return scipy.sparse.csr_matrix(features) if features.format == "csr" \
            else scipy.sparse.csc_matrix(features)
    return features


def _per_row(value: Any, source: str, n: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise LossError(f"per-row values {source!r} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if array.ndim not in (1, 2) or array.shape[0] != n:
        raise LossShapeError(f"per-row values {source!r} have shape {array.shape}; expected "
                             f"one value (or one row of values) per row of X: ({n},) or "
                             f"({n}, K)")
    rows = nan_rows(array)
    if rows.size:
        raise LossError(f"per-row values {source!r} are NaN on {rows.size} row(s) (the first "
                        f"at row {rows[0]}): there is no loss to learn or score there; fill them "
                        "or drop those rows")
    return array


def _column(X: Any, name: str, what: str) -> np.ndarray:
    columns = getattr(X, "columns", None)
    names = [str(c) for c in columns] if columns is not None else []
    if name not in names:
        raise LossError(f"{what}={name!r} names a column, but X has no column {name!r}; pass "
                        "the values themselves")
    return np.asarray(X[columns[names.index(name)]], dtype=np.float64)


@contextlib.contextmanager
def class_values_hint() -> Iterator[None]:
    """Inside: a label value the loss's declared domain refuses (0 for a hinge, whose
    ``y in {-1, 1}``) comes with what a classifier's user changes: ``class_values``."""
    try:
        yield
    except LossDomainError as error:
        raise LossDomainError(
            f"the label values of the two classes (class_values) are outside the loss's "
            f"domain: {error.message}", error.span,
            "pass class_values=(-1, 1) for a margin loss such as hinge, or (0, 1) for a "
            "cross-entropy") from None


def fit_classes(estimator: Any, y: np.ndarray, sample_weight: Any) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """(classes_, y encoded as class indices) for a classifier's ``fit``, checked as
    scikit-learn's classifiers check them: classification targets, at least two classes with
    positive sample weight, and ``estimator.class_values`` two different numbers (the label
    values a loss with one score per row gets for ``classes_[0]`` and ``classes_[1]``)."""
    check_classification_targets(y)
    classes, encoded = np.unique(y, return_inverse=True)
    present = classes
    if sample_weight is not None:
        weight = _check_sample_weight(sample_weight, np.empty((y.shape[0], 0)),
                                      ensure_non_negative=True)
        present = np.unique(y[weight > 0])
    if present.size < 2:
        raise ValueError(f"{type(estimator).__name__} needs samples of at least 2 classes "
                         "(with positive sample weight) in the data, but the data contain "
                         f"only one class: {present[0] if present.size else None!r}")
    values = estimator.class_values
    if (not isinstance(values, (tuple, list)) or len(values) != 2
            or not all(isinstance(v, numbers.Real) for v in values) or values[0] == values[1]):
        raise LossError(f"class_values must be two different numbers (the label values "
                        f"of classes_[0] and classes_[1]), not {values!r}")
    return classes, encoded


def _subset(inputs: Mapping[str, Any], rows: np.ndarray, n: int) -> dict[str, Any]:
    """The inputs of some rows (a mask or indices) of ``n``: per-row arrays indexed,
    scalars and tables kept."""
    return {name: value[rows] if np.ndim(value) >= 1 and np.shape(value)[0] == n else value
            for name, value in inputs.items()}


def _plain(score: Any) -> float | np.ndarray:
    array = np.asarray(score, dtype=np.float64)
    return float(array) if array.ndim == 0 else array


def _label_range(y: np.ndarray) -> tuple[float, float]:
    finite = y[np.isfinite(y)] if y.dtype.kind == "f" else y
    if finite.size == 0:
        return (0.0, 1.0)
    return float(np.min(finite)), float(np.max(finite))
