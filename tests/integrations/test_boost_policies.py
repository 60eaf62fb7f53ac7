"""Hessian policies of the boosting objectives (lossdsl.boosting.objective): ``like=`` presets that
reproduce the built-in objectives, and expected costs (non-convex, no finite optimal constant)
that learn under the default policy.

Small data and few rounds; each distinct loss is compiled once (module-scoped objects)."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

import lossdsl
from lossdsl.boosting.objective import PRESETS, BoostingObjective

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
import lossdsl.lightgbm as ll  # noqa: E402
import lossdsl.xgboost as lx  # noqa: E402

N = 300
ROUNDS = 6


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(N, 4))
    signal = X[:, 0] - 0.7 * X[:, 1] + 0.3 * X[:, 2] * X[:, 3]
    return {
        "X": X,
        "binary": (rng.uniform(size=N) < 1 / (1 + np.exp(-signal))).astype(np.float64),
        "classes": np.digitize(signal + rng.normal(scale=0.7, size=N), [-0.6, 0.5]).astype(
            np.float64),
        "counts": rng.poisson(np.exp(0.4 * signal + 0.5)).astype(np.float64),
        "positive": rng.gamma(2.0, np.exp(0.3 * signal) / 2.0),
        "weight": rng.uniform(0.5, 2.0, size=N),
    }


# ------------------------------------------------------------------ presets
# (like=, the matching prelude loss, the label, num_class)
XGBOOST_PRESETS = [
    ("reg:squarederror", "half_mse(y, z)", "positive", None),
    ("binary:logistic", "bce_logits(y, z)", "binary", None),
    ("multi:softprob", "sparse_cce_logits(y, z)", "classes", 3),
    ("multi:softmax", "sparse_cce_logits(y, z)", "classes", 3),
    ("count:poisson", "poisson_log(y, z)", "counts", None),
    ("reg:gamma", "gamma(y, z)", "positive", None),
    ("reg:tweedie", "tweedie(y, z)", "positive", None),
]
LIGHTGBM_PRESETS = [
    ("regression", "half_mse(y, z)", "positive", None),
    ("huber", "huber(y, z, 0.9)", "positive", None),
    ("binary", "bce_logits(y, z)", "binary", None),
    ("cross_entropy", "bce_logits(y, z)", "binary", None),
    ("multiclass", "sparse_cce_logits(y, z)", "classes", 3),
    ("softmax", "sparse_cce_logits(y, z)", "classes", 3),
    ("poisson", "poisson_log(y, z)", "counts", None),
    ("gamma", "gamma(y, z)", "positive", None),
    ("tweedie", "tweedie(y, z)", "positive", None),
]


def _xgboost_start(booster, num_class):
    """The margin XGBoost starts from (its base_score is stored as a prediction)."""
    config = json.loads(booster.save_config())
    text = config["learner"]["learner_model_param"]["base_score"]
    values = np.array(json.loads(text) if text.startswith("[") else [float(text)])
    objective = config["learner"]["objective"]["name"]
    if objective == "binary:logistic":  # stored as a probability
        return np.log(values / (1 - values))
    if num_class or objective == "reg:squarederror":
        return values
    return np.log(values)  # log link: count:poisson, reg:gamma, reg:tweedie


@pytest.mark.parametrize("like,text,label,num_class", XGBOOST_PRESETS)
def test_xgboost_preset_is_the_builtin(data, like, text, label, num_class):
    """The built-in's start score and, after several rounds, its model (weighted rows)."""
    y, w = data[label], data["weight"]
    objective = lx.XGBoostObjective(text, like=like, target="cpu")
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1, **objective.booster_params}
    if num_class:
        params["num_class"] = num_class
    builtin = xgb.train({**params, "objective": like}, xgb.DMatrix(data["X"], y, weight=w),
                        ROUNDS)
    start = objective.init_score(y, w, num_class)
    np.testing.assert_allclose(np.atleast_1d(start), _xgboost_start(builtin, num_class),
                               rtol=1e-6, atol=1e-6)
    ours = xgb.train(params, xgb.DMatrix(data["X"], y, weight=w,
                                         base_margin=objective.base_margin(y, w, num_class)),
                     ROUNDS, obj=objective)
    theirs = builtin.predict(xgb.DMatrix(data["X"]), output_margin=True)
    margins = ours.predict(xgb.DMatrix(data["X"], base_margin=objective.base_margin(
        y, w, num_class)), output_margin=True)
    assert np.ptp(theirs) > 0.5  # the model learned something
    np.testing.assert_allclose(margins, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("like,text,label,num_class", LIGHTGBM_PRESETS)
def test_lightgbm_preset_is_the_builtin(data, like, text, label, num_class):
    y, w = data[label], data["weight"]
    objective = ll.LightGBMObjective(text, like=like, target="cpu")
    params = {"num_leaves": 7, "learning_rate": 0.3, "num_threads": 1, "verbose": -1,
              "min_data_in_leaf": 10, "deterministic": True}
    if num_class:
        params["num_class"] = num_class
    builtin = lgb.train({**params, "objective": like}, lgb.Dataset(data["X"], y, weight=w),
                        ROUNDS)
    start = objective.init_score(y, w, num_class)
    ours = lgb.train({**params, "objective": objective},
                     lgb.Dataset(data["X"], y, weight=w,
                                 init_score=objective.base_margin(y, w, num_class)), ROUNDS)
    theirs = builtin.predict(data["X"], raw_score=True)
    raw = ours.predict(data["X"], raw_score=True) + start
    assert np.ptp(theirs) > 0.5
    np.testing.assert_allclose(raw, theirs, rtol=1e-6, atol=1e-6)
    # the same start: the built-in's first tree's shift is its boost-from-average score
    first = lgb.train({**params, "objective": like, "learning_rate": 1e-300},
                      lgb.Dataset(data["X"], y, weight=w), 1)
    np.testing.assert_allclose(first.predict(data["X"][:1], raw_score=True)[0], start,
                               rtol=1e-7, atol=1e-9)


def test_a_preset_trained_by_lossdsl_train_keeps_the_builtins_leaves(data):
    """like="huber" has a constant Hessian, for which train's refit="auto" would set each
    leaf to Huber's exact minimiser; LightGBM's huber does not, and the preset reproduces
    it (the leaves were refitted: 2.2 apart after 10 rounds)."""
    y, w = data["positive"], data["weight"]
    params = {"num_leaves": 7, "learning_rate": 0.3, "num_threads": 1, "verbose": -1,
              "min_data_in_leaf": 10, "deterministic": True}
    builtin = lgb.train({**params, "objective": "huber", "alpha": 0.9},
                        lgb.Dataset(data["X"], y, weight=w), ROUNDS)
    ours = ll.train(ll.LightGBMObjective("huber(y, p, 0.9)", like="huber", target="cpu"),
                    params, lgb.Dataset(data["X"], y, weight=w, free_raw_data=False), ROUNDS)
    np.testing.assert_allclose(ours.predict(data["X"], raw_score=True),
                               builtin.predict(data["X"], raw_score=True), rtol=1e-6, atol=1e-6)


def test_preset_settings():
    assert set(PRESETS) >= {"multi:softprob", "multiclass", "count:poisson", "poisson",
                            "binary:logistic", "binary"}
    softprob = BoostingObjective("sparse_cce_logits(y, z)", like="multi:softprob")
    assert softprob.policy == "floor" and softprob.hessian_factor(3) == 2.0
    multiclass = BoostingObjective("sparse_cce_logits(y, z)", like="multiclass")
    assert multiclass.hessian_factor(3) == 1.5 and multiclass.hessian_factor(4) == 4 / 3
    poisson = BoostingObjective("poisson_log(y, z)", like="count:poisson")
    assert poisson.hessian_factor() == pytest.approx(math.exp(0.7))
    assert poisson.booster_params == {"max_delta_step": 0.7}
    clone = pickle.loads(pickle.dumps(multiclass))
    assert clone.like == "multiclass" and clone.hessian_factor(3) == 1.5
    # the Hessian itself: K/(K-1) p (1 - p) per unit of weight
    z = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    labels = np.array([1, 0])
    _, hessian = multiclass.gradients(labels, z, np.array([1.0, 3.0]))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(hessian, 1.5 * p * (1 - p) * np.array([[1.0], [3.0]]),
                               rtol=1e-12)


def test_preset_errors():
    with pytest.raises(lossdsl.LossNameError, match="multi:softprob"):
        BoostingObjective("sparse_cce_logits(y, z)", like="multi:softprb")
    with pytest.raises(lossdsl.LossError, match="not both"):
        BoostingObjective("sparse_cce_logits(y, z)", like="multiclass", hessian_scale=1.5)
    with pytest.raises(lossdsl.LossError, match="over classes"):
        BoostingObjective("bce_logits(y, z)", like="multi:softprob")
    with pytest.raises(lossdsl.LossError, match="one score per row"):
        BoostingObjective("sparse_cce_logits(y, z)", like="binary")


# ------------------------------------------------------------------ expected costs
C3 = np.array([[0.0, 1.0, 5.0],
               [2.0, 0.0, 1.0],
               [20.0, 4.0, 0.0]])
BINARY_COST = "y*fn*(1 - sigmoid(z)) + (1 - y)*fp*sigmoid(z)"   # z: the logit of declining


@pytest.mark.parametrize("text,inputs,expected", [
    ("expected_cost(y, z, C)", {"C": C3}, True),
    ("expected_cost(y, z, C)", {"C": C3[:2]}, True),              # 2 outcomes, 3 decisions
    ("rowsum((1 - onehot(y, 2))*softmax(z))", {}, True),           # the class count is fixed
    (BINARY_COST, {"fn": np.array([5.0, 2.0]), "fp": np.array([1.0, 1.0])}, True),
    ("sparse_cce_logits(y, z)", {}, False),
    ("expected_cost(y, z, C) + 0.1*sparse_cce_logits(y, z)", {"C": C3}, False),
    ("bce_logits(y, z)", {}, False),
    ("poisson_log(y, z)", {}, False),
    ("half_mse(y, z)", {}, False),
])
def test_expected_cost_is_recognised(text, inputs, expected):
    objective = BoostingObjective(text, wrt="z", inputs=inputs, rows=np.zeros(2))
    assert objective.expected_cost is expected
    assert (objective.policy == "fisher") is expected
    chosen = BoostingObjective(text, wrt="z", inputs=inputs, hessian="floor", rows=np.zeros(2))
    assert chosen.policy == "floor"
    fisher = BoostingObjective(text, wrt="z", inputs=inputs, hessian="fisher", rows=np.zeros(2))
    if expected:
        assert fisher.policy == "fisher"
    else:  # it gave |gradient| as mse's Hessian: sign-of-gradient leaves
        with pytest.raises(lossdsl.LossError, match="hessian='fisher' is the curvature of an"):
            assert fisher.policy


def test_fisher_curvature_values():
    """One score: |c1 - c0| w p (1 - p), the gradient's size; K classes: K/(K-1) times the row's
    cost spread times p_k (1 - p_k), weighted; both floored."""
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=40) < 0.3).astype(float)
    fn, fp = rng.uniform(1, 9, size=40), rng.uniform(0.1, 2, size=40)
    w = rng.uniform(0.5, 2, size=40)
    z = rng.normal(scale=3, size=40)
    objective = BoostingObjective(BINARY_COST, wrt="z", inputs={"fn": fn, "fp": fp}, rows=y)
    gradient, hessian = objective.gradients(y, z, w)
    p = 1 / (1 + np.exp(-z))
    delta = np.where(y == 1, -fn, fp)       # cost of declining minus cost of approving
    np.testing.assert_allclose(gradient, w * delta * p * (1 - p), rtol=1e-12)
    np.testing.assert_allclose(hessian, w * np.abs(delta) * p * (1 - p), rtol=1e-12)
    exact = BoostingObjective(BINARY_COST, wrt="z", inputs={"fn": fn, "fp": fp}, rows=y,
                              hessian="exact").gradients(y, z, w)[1]
    assert np.any(exact < 0)  # what the exact Hessian would give: negative in places

    labels = rng.integers(0, 3, size=30)
    scores = rng.normal(scale=2, size=(30, 3))
    classes = BoostingObjective("expected_cost(y, z, C)", inputs={"C": C3})
    _, hessian = classes.gradients(labels, scores, w[:30])
    q = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    spread = C3[labels].max(axis=1) - C3[labels].min(axis=1)
    np.testing.assert_allclose(hessian, 1.5 * (w[:30] * spread)[:, None] * q * (1 - q),
                               rtol=1e-10)
    # a row whose decisions cost the same (fn = fp = 0 here) gets the floor, not 0
    fn[:2] = fp[:2] = 0.0
    _, floored = objective.gradients(y, z, w)
    assert np.all(floored[:2] == w[:2] * 1e-16) and np.all(floored[2:] > 1e-16)


def test_surrogate_start():
    """init_score keeps refusing an expected cost; unbounded='surrogate' gives the optimum of
    the cost-weighted cross-entropy: cost_sensitive_bce's for one score, and the same
    log-odds between the two scores of the softmax form."""
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=500) < 0.25).astype(float)
    fn, fp = rng.uniform(1, 9, size=500), rng.uniform(0.1, 2, size=500)
    w = rng.uniform(0.5, 2, size=500)
    objective = BoostingObjective(BINARY_COST, wrt="z", inputs={"fn": fn, "fp": fp}, rows=y)
    with pytest.raises(lossdsl.LossError, match="no finite optimal constant"):
        objective.init_score(y, w)
    with pytest.raises(lossdsl.LossError, match="no finite optimal constant"):
        objective.base_margin(y, w)
    start = objective.init_score(y, w, unbounded="surrogate")
    assert start == pytest.approx(math.log(np.sum(w * fn * y) / np.sum(w * fp * (1 - y))),
                                  rel=1e-12)
    margins = objective.base_margin(y, w, unbounded="surrogate")
    assert margins.shape == (500,) and np.all(margins == start)

    pair = BoostingObjective("expected_cost(y, z, C)", inputs={"C": C3[:2, :2]})
    scores = pair.init_score(y.astype(int), w, 2, unbounded="surrogate")
    # the class-1 score minus the class-0 score: log(sum w C[1, 0] over y = 1 / same for y = 0)
    assert scores[1] - scores[0] == pytest.approx(
        math.log(np.sum(w * (y == 1) * 2.0) / np.sum(w * (y == 0) * 1.0)), rel=1e-12)

    with pytest.raises(lossdsl.LossError, match="same cheapest decision"):
        BoostingObjective(BINARY_COST, wrt="z", inputs={"fn": fn[:10], "fp": fp[:10]},
                          rows=np.zeros(10)).init_score(np.zeros(10), unbounded="surrogate")
    with pytest.raises(lossdsl.LossError, match="decision 1 is no row's cheapest"):
        BoostingObjective("expected_cost(y, z, C)", inputs={"C": C3}).init_score(
            np.array([0, 2, 0, 2]), num_class=3, unbounded="surrogate")
    with pytest.raises(lossdsl.LossError, match="unbounded="):
        objective.init_score(y, unbounded="cap")


@pytest.fixture(scope="module")
def loans():
    """Loans with a per-row amount: approving one that goes bad loses half its amount,
    declining a good one forgoes a fifth of it; the risk depends on the features."""
    rng = np.random.default_rng(5)
    n = 3000
    X = rng.normal(size=(n, 5))
    risk = 1.3 * X[:, 0] - X[:, 1] + 0.6 * X[:, 2] * X[:, 3] - 1.2
    bad = (rng.uniform(size=n) < 1 / (1 + np.exp(-risk))).astype(np.float64)
    amount = rng.lognormal(7, 0.6, size=n)
    return {"X": X, "y": bad, "fn": 0.5 * amount, "fp": 0.2 * amount,
            "train": np.arange(n) < 2000}


def _loan_cost(loans, decline, rows):
    y, fn, fp = loans["y"][rows], loans["fn"][rows], loans["fp"][rows]
    return float(np.sum(np.where(decline, (1 - y) * fp, y * fn)))


def test_expected_cost_learns_by_default(loans):
    """XGBoost on the expected cost with the default policy, from 0 and from the surrogate's
    start, reaches the held-out cost of cost_sensitive_bce (within 3% here); the floored exact
    Hessian (the old default) ends at a constant decision."""
    train, test = loans["train"], ~loans["train"]
    y = loans["y"][train]
    inputs = {"fn": loans["fn"][train], "fp": loans["fp"][train]}
    params = {"max_depth": 3, "eta": 0.1, "nthread": 1}
    dtrain = xgb.DMatrix(loans["X"][train], y)
    dtest = xgb.DMatrix(loans["X"][test])

    def held_out(objective, start):
        booster = xgb.train({**params, "base_score": start}, dtrain, 60, obj=objective)
        decline = booster.predict(dtest, output_margin=True) > 0
        return _loan_cost(loans, decline, test), decline

    surrogate = lx.objective("cost_sensitive_bce(y, z, fn, fp)", inputs=inputs, rows=y)
    reference, _ = held_out(surrogate, surrogate.init_score(y))
    expected = lx.objective(BINARY_COST, wrt="z", inputs=inputs, rows=y)
    assert expected.policy == "fisher"
    for start in (0.0, expected.init_score(y, unbounded="surrogate")):
        cost, decline = held_out(expected, start)
        assert 0.05 < decline.mean() < 0.95       # not one decision for everyone
        assert cost < 1.03 * reference
    floored = lx.objective(BINARY_COST, wrt="z", inputs=inputs, rows=y, hessian="floor")
    cost, decline = held_out(floored, 0.0)
    assert decline.all() or not decline.any()
    assert cost > 1.2 * reference


def test_expected_cost_over_classes_learns(loans):
    """The same loans as a cost matrix over two classes (XGBoost num_class=2, the amount as
    the sample weight; from the surrogate's start) and three decisions (a third, "refer",
    costs 0.1 of the amount whatever the outcome: no row's cheapest decision, so the
    surrogate has no finite start and training starts from 0): each learns more than the
    best constant decision, and the model refers some loans."""
    train, test = loans["train"], ~loans["train"]
    y = loans["y"][train].astype(int)
    amount = 2 * loans["fn"]
    params = {"max_depth": 3, "eta": 0.1, "nthread": 1}
    for C in (np.array([[0.0, 0.2], [0.5, 0.0]]),
              np.array([[0.0, 0.2, 0.1], [0.5, 0.0, 0.1]])):
        k = C.shape[1]
        objective = lx.objective("expected_cost(y, z, C)", inputs={"C": C})
        assert objective.policy == "fisher"
        start = (objective.base_margin(y, amount[train], k, unbounded="surrogate") if k == 2
                 else np.zeros((y.size, k)))
        dtrain = xgb.DMatrix(loans["X"][train], y, weight=amount[train], base_margin=start)
        booster = xgb.train({**params, "num_class": k}, dtrain, 60, obj=objective)
        decision = np.argmax(booster.predict(xgb.DMatrix(loans["X"][test]),
                                             output_margin=True), axis=1)
        costs = C[loans["y"][test].astype(int)] * amount[test, None]
        ours = costs[np.arange(costs.shape[0]), decision].sum()
        best_constant = costs.sum(axis=0).min()
        assert len(np.unique(decision)) == k
        assert ours < 0.9 * best_constant


# ------------------------------------------------------------------ step sizes in money
def test_auto_step_constant_puts_leaves_in_the_labels_units():
    """hessian_constant='auto' for a piecewise-linear cost: the constant is twice the slope
    of the mean gradient between the labels' quartiles ((under + over)/IQR here, the labels
    being spread evenly), applied by dividing the gradient (the Hessian stays 1 per unit of
    weight); a leaf's step -G/H is then the same in any units of the labels."""
    rng = np.random.default_rng(3)
    y = rng.permutation(np.linspace(0.0, 100.0, 401))
    p = y + rng.normal(scale=10, size=y.size)
    w = rng.uniform(0.5, 2, size=y.size)
    text = "asymmetric_l1(y, p, 4, 1)"
    auto = BoostingObjective(text, hessian_constant="auto")
    assert auto.policy == "constant"
    constant = auto.step_constant(y)
    assert constant == pytest.approx(5 / 50, rel=0.02)
    plain = BoostingObjective(text)
    gradient, hessian = auto.gradients(y, p, w)
    expected, ones = plain.gradients(y, p, w)
    np.testing.assert_allclose(gradient, expected / auto.step_constant(y, w), rtol=1e-12)
    np.testing.assert_array_equal(hessian, ones)
    # in thousandths: the same steps, a thousand times longer
    scaled, _ = BoostingObjective(text, hessian_constant="auto").gradients(1000 * y, 1000 * p, w)
    np.testing.assert_allclose(scaled, 1000 * gradient, rtol=1e-9)
    assert BoostingObjective(text, hessian_constant="auto").step_constant(np.full(5, 2.0)) == 1.0
    with pytest.raises(lossdsl.LossError, match="'auto'"):
        BoostingObjective(text, hessian_constant="scale")


# ------------------------------------------------------------------ underflow is not flatness
def _censored_times(n=500):
    """Log-logistic times (scale 0.5 in log units) censored at a uniform follow-up: exact and
    right-censored rows, as examples/survival_aft.py."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4))
    time = np.exp(1 + 0.5 * X[:, 0] + rng.logistic(scale=0.5, size=n))
    follow_up = rng.uniform(1, 8, n)
    lower = np.minimum(time, follow_up)
    return X, lower, np.where(time <= follow_up, time, np.inf)


@pytest.mark.parametrize("text, inputs, policy", [
    # curvatures exp(-|a|) in log time that underflow to 0 inside the probe's residuals
    # (|a| = 2|r| past 745 for sigma 0.5) while the gradient stays 2: not flat regions
    ("aft_logistic(y, z, y_upper=u, sigma=0.5)", True, "floor"),
    ("aft_extreme(y, z, y_upper=u, sigma=1.0)", True, "floor"),
    ("aft_normal(y, z, y_upper=u, sigma=0.5)", True, "floor"),
    # exact times only, on the probe's own labels (0 among them: log(sigma*0) = -inf there)
    ("aft_logistic(y, z, sigma=0.5)", False, "floor"),
    ("aft_extreme(y, z, sigma=0.2)", False, "floor"),
    # Hessians 0 everywhere, or on a region (per-row inputs: the lines are data rows)
    ("asymmetric_l1(y, p, 4, 1)", False, "constant"),
    ("quantile(y, p, 0.8)", False, "constant"),
    ("u*huber(y, p, 0.5)", True, "constant"),
    ("where(p < y, u, 1)*huber(y, p, 0.5)", True, "constant"),
])
def test_auto_policy_tells_underflow_from_flatness(text, inputs, policy):
    """hessian="auto" chose the constant Hessian 1 for the aft losses (which docs/boosting.md
    and examples/survival_aft.py say train on the exact Hessian): its probe read a curvature
    that underflows to 0 far in the tail as a flat region, and cycled the per-row upper ends
    onto made-up labels; on exact times alone it read the label 0, where the loss is -inf,
    as flat. A flat region is entered with a jump; an underflowed tail fades through
    curvatures 1e-16 times its peak and less first."""
    X, lower, upper = _censored_times()
    finite = np.where(np.isinf(upper), 8.0, upper)
    u = {"u": upper if text.startswith("aft") else finite}
    objective = lx.objective(text, inputs=u if inputs else None,
                             rows=lower if inputs else None, target="cpu")
    assert objective.policy == policy
    if policy == "floor" and inputs:  # the curvatures training gets are the exact ones
        exact = lx.objective(text, inputs=u, rows=lower, hessian="exact", target="cpu")
        dtrain = xgb.DMatrix(X, lower)
        _, hessian = objective(np.ones(lower.size), dtrain)
        _, expected = exact(np.ones(lower.size), dtrain)
        np.testing.assert_allclose(hessian, np.maximum(expected, 1e-16), rtol=1e-12)
        assert np.ptp(hessian) > 0.5  # the exact curvatures, not the constant 1


def test_a_gradient_that_is_not_finite_is_an_error_naming_the_row():
    """A NaN gradient handed to XGBoost made every later score NaN (an event at time 0 in
    aft_normal did, before its requirement refused it), with no error."""
    objective = lx.objective("mse(y, sqrt(z))")
    labels, scores = np.ones(4), np.array([1.0, 4.0, -1.0, 2.0])
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"gradient is nan at row 2 \(label 1.0, score -1.0\)"):
        objective.gradients(labels, scores)
    data = xgb.DMatrix(np.arange(4.0).reshape(-1, 1), labels)
    with pytest.raises(lossdsl.LossDomainError, match="at row 2"):
        xgb.train({"base_score": 0.0, "max_depth": 1}, data, 2,
                  obj=lambda predt, dtrain: objective(predt + scores, dtrain))
    assert np.all(np.isfinite(objective.gradients(labels, np.abs(scores))[0]))
