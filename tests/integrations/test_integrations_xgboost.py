"""lossdsl.xgboost: same models as XGBoost's built-in objectives, weights, shapes, init score."""

import math
import pickle

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
import lossdsl  # noqa: E402
import lossdsl.xgboost as lx  # noqa: E402

ROUNDS = 8
PARAMS = {"nthread": 1, "max_depth": 3, "eta": 0.3}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 300
    X = rng.normal(size=(n, 4))
    y = X[:, 0] - 0.5 * X[:, 1] + 0.5 * rng.normal(size=n)
    return {
        "X": X,
        "y": y,
        "binary": (y > 0).astype(float),
        "counts": rng.poisson(np.exp(0.5 * X[:, 0])).astype(float),
        "classes": (np.digitize(X[:, 0] + 0.3 * rng.normal(size=n), [-0.5, 0.5])),
        "weight": rng.uniform(0.2, 3.0, size=n),
    }


def _margins(booster, dmatrix):
    return booster.predict(dmatrix, output_margin=True)


def _same_model(data, objective, builtin, label, extra=None, num_class=None, weighted=False):
    """Train with the lossdsl objective and with the built-in one from the same start."""
    n = len(label)
    start = np.zeros((n, num_class)) if num_class else np.zeros(n)
    weight = data["weight"] if weighted else None
    dtrain = xgb.DMatrix(data["X"], label, weight=weight, base_margin=start)
    params = {**PARAMS, **(extra or {})}
    ours = xgb.train(params, dtrain, ROUNDS, obj=objective)
    theirs = xgb.train({**params, "objective": builtin}, dtrain, ROUNDS)
    return _margins(ours, dtrain), _margins(theirs, dtrain)


@pytest.mark.parametrize("text,builtin,label,extra,scale", [
    ("half_mse(y, p)", "reg:squarederror", "y", {}, 1.0),
    ("pseudo_huber(y, p)", "reg:pseudohubererror", "y", {}, 1.0),
    ("bce_logits(y, p)", "binary:logistic", "binary", {}, 1.0),
    # count:poisson's Hessian is exp(p + max_delta_step) and it also caps tree steps at 0.7
    ("exp(p) - y*p", "count:poisson", "counts", {"max_delta_step": 0.7}, math.exp(0.7)),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_same_model_as_builtin(data, text, builtin, label, extra, scale, weighted):
    objective = lx.objective(text, hessian_scale=scale, target="cpu")
    ours, theirs = _same_model(data, objective, builtin, data[label], extra, weighted=weighted)
    assert np.abs(theirs).max() > 0.5  # the models learned something
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text", ["sparse_cce_logits(y, z)", "cce_logits(y, z)"])
def test_same_model_as_softprob(data, text):
    # multi:softprob uses the diagonal bound 2 p (1 - p) as its Hessian
    objective = lx.objective(text, hessian_scale=2.0, target="cpu")
    ours, theirs = _same_model(data, objective, "multi:softprob", data["classes"],
                               {"num_class": 3}, num_class=3, weighted=True)
    assert ours.shape == (300, 3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_multiclass_gradient_shapes(data):
    objective = lx.objective("sparse_cce_logits(y, z)", target="cpu")
    margins = np.zeros((300, 3), dtype=np.float32)
    dtrain = xgb.DMatrix(data["X"], data["classes"])
    gradient, hessian = objective(margins, dtrain)
    assert gradient.shape == hessian.shape == (300, 3)
    assert gradient.dtype == np.float32
    onehot = np.eye(3)[data["classes"]]
    np.testing.assert_allclose(gradient, 1 / 3 - onehot, atol=1e-6)
    # XGBoost < 2.1 passed flat margins: answered flat, row-major
    flat_gradient, _ = objective(margins.reshape(-1), dtrain)
    np.testing.assert_array_equal(flat_gradient, gradient.reshape(-1))


@pytest.mark.parametrize("bad", [3.0, -1.0, 2.5])
def test_multiclass_label_outside_the_classes_names_its_row(data, bad):
    objective = lx.objective("sparse_cce_logits(y, z)", target="cpu")
    labels = data["classes"].astype(np.float64)
    labels[17] = bad
    with pytest.raises(lossdsl.LossDomainError, match=rf"found {bad!r} at row 17"):
        objective(np.zeros((300, 3), np.float32), xgb.DMatrix(data["X"], labels))


def test_elementwise_loss_on_class_scores_is_one_vs_rest(data):
    objective = lx.objective("bce_logits(y, p)", target="cpu", columns="onehot")
    gradient, _ = objective(data["classes"], np.zeros((300, 3)))
    np.testing.assert_allclose(gradient, 0.5 - np.eye(3)[data["classes"]])


def test_elementwise_loss_on_several_columns_is_not_guessed(data):
    """Count labels 0..2 with three score columns could be class indices (one-vs-rest) or
    one target for every column: the objective refuses to guess, and does what it is told."""
    counts = data["classes"].astype(float)
    scores = np.zeros((300, 3))
    with pytest.raises(lossdsl.LossShapeError, match="columns='onehot'.*columns='same'"):
        lx.objective("poisson_log(y, p)", target="cpu")(counts, scores)
    same, _ = lx.objective("poisson_log(y, p)", target="cpu", columns="same")(counts, scores)
    np.testing.assert_allclose(same, np.repeat(1.0 - counts[:, None], 3, axis=1))
    starts = lx.objective("poisson_log(y, p)", target="cpu", columns="same").init_score(
        counts, num_class=3)
    np.testing.assert_allclose(starts, np.log(np.mean(counts)), rtol=1e-8)
    with pytest.raises(lossdsl.LossError, match="columns="):
        lx.objective("poisson_log(y, p)", columns="every")


def test_sklearn_weight_two_equals_duplicated_row(data):
    X, y = data["X"], data["y"]
    weight = np.ones(len(y))
    weight[:60] = 2.0
    objective = lx.objective("pseudo_huber(y, p)", target="cpu")
    settings = {"n_estimators": ROUNDS, "max_depth": 3, "n_jobs": 1, "base_score": 0.0}
    weighted = xgb.XGBRegressor(objective=objective, **settings).fit(X, y, sample_weight=weight)
    duplicated = xgb.XGBRegressor(objective=objective, **settings).fit(
        np.vstack([X, X[:60]]), np.concatenate([y, y[:60]]))
    unweighted = xgb.XGBRegressor(objective=objective, **settings).fit(X, y)
    np.testing.assert_allclose(weighted.predict(X), duplicated.predict(X), rtol=1e-6, atol=1e-6)
    assert np.abs(weighted.predict(X) - unweighted.predict(X)).max() > 1e-2


def test_sklearn_matches_native(data):
    objective = lx.objective("bce_logits(y, p)", target="cpu")
    X, y, w = data["X"], data["binary"], data["weight"]
    model = xgb.XGBClassifier(objective=objective, n_estimators=ROUNDS, max_depth=3, eta=0.3,
                              n_jobs=1)
    model.fit(X, y, sample_weight=w, base_margin=np.zeros(len(y)))
    dtrain = xgb.DMatrix(X, y, weight=w, base_margin=np.zeros(len(y)))
    native = xgb.train(PARAMS, dtrain, ROUNDS, obj=objective)
    sklearn_margin = model.predict(X, output_margin=True, base_margin=np.zeros(len(y)))
    np.testing.assert_allclose(sklearn_margin, _margins(native, dtrain), rtol=1e-6, atol=1e-6)


def test_sklearn_multiclass(data):
    objective = lx.objective("sparse_cce_logits(y, z)", target="cpu")
    model = xgb.XGBClassifier(objective=objective, n_estimators=ROUNDS, max_depth=3, n_jobs=1)
    model.fit(data["X"], data["classes"])
    proba = model.predict_proba(data["X"])
    assert proba.shape == (300, 3)
    assert np.mean(np.argmax(proba, axis=1) == data["classes"]) > 0.7


def test_metric_native_and_sklearn(data):
    objective = lx.objective("bce_logits(y, p)", target="cpu")
    dtrain = xgb.DMatrix(data["X"], data["binary"], weight=data["weight"])
    history = {}
    booster = xgb.train({**PARAMS, "disable_default_eval_metric": 1}, dtrain, ROUNDS,
                        obj=objective, custom_metric=lx.metric(objective, name="bce"),
                        evals=[(dtrain, "train")], evals_result=history, verbose_eval=False)
    curve = history["train"]["bce"]
    assert curve[-1] < curve[0]
    # XGBoost's weighted metrics are sum(w*l)/sum(w): lossdsl's "weighted_mean"
    expected = lossdsl.compile("bce_logits(y, p)", reduction="weighted_mean")(
        y=data["binary"], p=_margins(booster, dtrain).astype(np.float64),
        sample_weight=data["weight"])
    assert curve[-1] == pytest.approx(expected, rel=1e-5)
    sklearn_metric = lx.metric("bce_logits(y, p)")
    assert sklearn_metric.__name__ == "lossdsl"
    assert sklearn_metric(data["binary"], np.zeros(300)) == pytest.approx(math.log(2))


def test_flat_hessian_auto_policy_trains_mae(data):
    """MAE's Hessian is 0: the default policy boosts first-order instead of dividing by 0."""
    X, y = data["X"], data["y"]
    objective = lx.objective("mae(y, p)", target="cpu")
    assert objective.policy == "constant"
    start = objective.init_score(y)
    middle = np.sort(y)[149:151]  # 300 labels: any point between the middle two is optimal
    assert middle[0] - 1e-9 <= start <= middle[1] + 1e-9
    dtrain = xgb.DMatrix(X, y, base_margin=np.full(len(y), start))
    booster = xgb.train(PARAMS, dtrain, 30, obj=objective)
    error = np.mean(np.abs(_margins(booster, dtrain) - y))
    assert error < 0.8 * np.mean(np.abs(y - start))
    exact = lx.objective("mae(y, p)", hessian="exact", target="cpu")
    _, hessian = exact(np.zeros(300, dtype=np.float32), dtrain)
    assert not hessian.any()


def test_hessian_policies():
    y = np.zeros(4)
    p = np.array([-3.0, -1.0, 0.5, 3.0])
    weight = np.array([1.0, 2.0, 1.0, 0.5])
    text = "1 - exp(-(p - y)^2)"  # non-convex: negative curvature in the tails
    _, exact = lx.objective(text, hessian="exact")(y, p, sample_weight=weight)
    assert (exact < 0).any()
    _, clipped = lx.objective(text, hessian="clip")(y, p, sample_weight=weight)
    np.testing.assert_array_equal(clipped, np.maximum(exact, 0))
    _, floored = lx.objective(text, hessian="floor", hessian_floor=0.1)(
        y, p, sample_weight=weight)
    np.testing.assert_allclose(floored, np.maximum(exact, 0.1 * weight))
    _, constant = lx.objective(text, hessian="constant", hessian_constant=2.0)(
        y, p, sample_weight=weight)
    np.testing.assert_array_equal(constant, 2.0 * weight)
    _, scaled = lx.objective(text, hessian="clip", hessian_scale=3.0)(y, p, sample_weight=weight)
    np.testing.assert_allclose(scaled, 3 * np.maximum(exact, 0))
    with pytest.raises(lossdsl.LossError, match="hessian policy"):
        lx.objective(text, hessian="newton")


@pytest.mark.parametrize("text,labels,expected", [
    ("half_mse(y, p)", np.array([1.0, 2.0, 6.0]), 3.0),
    ("bce_logits(y, p)", np.array([1.0, 0.0, 0.0, 0.0]), math.log(1 / 3)),
    ("exp(p) - y*p", np.array([1.0, 2.0, 6.0]), math.log(3.0)),
    ("mae(y, p)", np.array([1.0, 2.0, 10.0, 100.0, 7.0]), 7.0),
    ("quantile(y, p, 0.9)", np.arange(101.0), 90.0),
])
def test_init_score_is_optimal_constant(text, labels, expected):
    assert lx.init_score(text, labels) == pytest.approx(expected, abs=1e-6)


def test_init_score_weighted_and_multiclass():
    labels = np.array([1.0, 2.0, 6.0])
    weights = np.array([1.0, 1.0, 2.0])
    assert lx.init_score("half_mse(y, p)", labels, weights) == pytest.approx(15 / 4)
    classes = np.array([0, 0, 0, 1, 2, 2])
    scores = lx.init_score("sparse_cce_logits(y, z)", classes)
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    np.testing.assert_allclose(probabilities, [0.5, 1 / 6, 1 / 3], atol=1e-6)


def test_base_score_from_init_score_starts_at_the_optimum(data):
    objective = lx.objective("exp(p) - y*p", target="cpu")
    counts = data["counts"]
    start = objective.init_score(counts)
    dtrain = xgb.DMatrix(data["X"], counts)
    booster = xgb.train({**PARAMS, "base_score": start}, dtrain, 0, obj=objective)
    np.testing.assert_allclose(_margins(booster, dtrain), math.log(counts.mean()), rtol=1e-5)
    margins = objective.base_margin(data["classes"], num_class=None)
    assert margins.shape == (300,)


def test_extra_inputs_and_roles(data):
    """A per-row cost input, and roles named explicitly."""
    cost = np.where(data["binary"] > 0, 5.0, 1.0)
    objective = lx.objective("cost*bce_logits(t, m)", wrt="m", label="t",
                             inputs={"cost": cost}, rows=data["binary"], target="cpu")
    reference = lx.objective("bce_logits(y, p)", target="cpu")
    margins = np.linspace(-1, 1, 300)
    gradient, hessian = objective(data["binary"], margins)
    expected = reference(data["binary"], margins, sample_weight=cost)
    np.testing.assert_allclose(gradient, expected[0])
    np.testing.assert_allclose(hessian, expected[1])
    with pytest.raises(lossdsl.LossError, match="label"):
        lx.objective("a*b*c")
    with pytest.raises(lossdsl.LossNameError):
        lx.objective("bce_logits(y, p)", wrt="q")


def test_objective_pickles(data):
    text = "param delta = 1.0\nloss robust = pseudo_huber(y, p, delta)"
    objective = lx.objective(text, params={"delta": 2.0}, target="cpu")
    clone = pickle.loads(pickle.dumps(objective))
    margins = np.linspace(-3, 3, 300)
    np.testing.assert_array_equal(objective(data["y"], margins)[0],
                                  clone(data["y"], margins)[0])
    default = lx.objective(text, target="cpu")
    assert np.abs(default(data["y"], margins)[0] - clone(data["y"], margins)[0]).max() > 0.1


def test_parallel_target_float32(data):
    objective = lx.objective("bce_logits(y, p)")  # default target: parallel
    dtrain = xgb.DMatrix(data["X"], data["binary"])
    gradient, hessian = objective(np.zeros(300, dtype=np.float32), dtrain)
    assert gradient.dtype == hessian.dtype == np.float32
    np.testing.assert_allclose(gradient, 0.5 - data["binary"])
    np.testing.assert_allclose(hessian, 0.25)


# ------------------------------------------------------------------ no finite init score
def _credit(seed=3, n=2000):
    rng = np.random.default_rng(seed)
    default = (rng.uniform(size=n) < 0.2).astype(float)
    amount = rng.uniform(100, 1000, size=n)
    return default, amount


def test_init_score_refuses_expected_cost_with_no_finite_minimiser():
    """A cost matrix under softmax: the cheapest constant decision ("approve all") sits at
    an infinite score; init_score used to return [327.99, -327.99], a saturated softmax."""
    default, _ = _credit()
    C = np.array([[0.0, 1.0], [5.0, 0.0]])  # declining a good loan costs 1, a default 5
    with pytest.raises(lossdsl.LossError, match="no finite optimal constant") as caught:
        lx.init_score("expected_cost(y, z, C)", default.astype(int), num_class=2,
                      inputs={"C": C})
    message = str(caught.value)
    assert "class 0" in message and "cost_sensitive_bce" in message
    objective = lx.objective("expected_cost(y, z, C)", inputs={"C": C}, target="cpu")
    with pytest.raises(lossdsl.LossError, match="no finite optimal constant"):
        objective.base_margin(default.astype(int), num_class=2)


def test_init_score_refuses_binary_expected_cost():
    """The binary form of such a cost, with per-row amounts (it returned scores near 200):
    declining a defaulter saves its amount, declining a good loan loses 0.2 of it, and with
    20% defaults "decline all" is the cheapest constant decision, at z = +inf."""
    default, amount = _credit()
    text = "y*amount*(1 - sigmoid(z)) + 0.2*(1 - y)*amount*sigmoid(z)"
    with pytest.raises(lossdsl.LossError, match=r"no finite optimal constant.*goes to \+inf"):
        lx.init_score(text, default, wrt="z", inputs={"amount": amount})
    # its convex surrogate has a finite optimum: the cost-weighted log-odds
    start = lx.init_score("cost_sensitive_bce(y, z, 5, 1)", default)
    rate = default.mean()
    assert start == pytest.approx(math.log(5 * rate / (1 - rate)), abs=1e-8)


@pytest.mark.parametrize("text,labels,towards", [
    ("bce_logits(y, p)", np.ones(6), r"\+inf"),          # all one class
    ("exp(p) - y*p", np.zeros(6), "-inf"),                # all-zero counts, log link
    ("p - y", np.array([1.0, 2.0]), "-inf"),              # unbounded below
])
def test_init_score_refuses_degenerate_labels(text, labels, towards):
    with pytest.raises(lossdsl.LossError, match=f"goes to {towards}"):
        lx.init_score(text, labels)


def test_init_score_refuses_absent_class():
    with pytest.raises(lossdsl.LossError, match=r"class 1 goes to -inf"):
        lx.init_score("sparse_cce_logits(y, z)", np.array([0, 0, 2, 2, 2]), num_class=3)


@pytest.mark.parametrize("text,labels,low,high", [
    ("mae(y, p)", np.array([0.0, 0.0, 1e9, 1e9]), 0.0, 1e9),      # a wide plateau
    ("exp(p) - y*p", np.full(4, 1e8), math.log(1e8), math.log(1e8)),  # far, one-sided Newton
    ("exp(p) - y*p", np.full(4, 1e-8), math.log(1e-8), math.log(1e-8)),
    ("half_mse(y, p)", np.array([1e8, 3e8]), 2e8, 2e8),
    ("1 - exp(-(p - y)^2)", np.array([4.0, 5.0, 6.0]), 5.0, 5.0),  # bounded, non-convex
])
def test_init_score_far_or_flat_but_finite(text, labels, low, high):
    start = lx.init_score(text, labels)
    assert low - 1e-6 * (1 + abs(low)) <= start <= high + 1e-6 * (1 + abs(high))


def test_init_score_rare_class_is_finite():
    labels = np.array([0] * 1000 + [1] * 10 + [2])
    scores = lx.init_score("sparse_cce_logits(y, z)", labels)
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    np.testing.assert_allclose(probabilities, [1000 / 1011, 10 / 1011, 1 / 1011], rtol=1e-6)


# ------------------------------------------------------------------ per-row inputs and rows
CHURN = "cost_sensitive_bce(y, z, fn_cost=clv, fp_cost=20)"


@pytest.fixture(scope="module")
def churn():
    rng = np.random.default_rng(5)
    n = 600
    X = rng.normal(size=(n, 3))
    churned = (X[:, 0] + rng.normal(size=n) > 1).astype(float)
    clv = rng.gamma(2.0, 60.0, size=n)
    return X, churned, clv


def test_per_row_inputs_need_rows(churn):
    X, churned, clv = churn
    with pytest.raises(lossdsl.LossError, match=r"say which rows with rows=y \(") as caught:
        lx.objective(CHURN, inputs={"clv": clv})
    assert "'clv'" in str(caught.value) and "sample_weight" in str(caught.value)
    with pytest.raises(lossdsl.LossShapeError, match="'clv' has 600 rows but rows= has 599"):
        lx.objective(CHURN, inputs={"clv": clv}, rows=churned[:-1])
    with pytest.raises(lossdsl.LossError, match="rows= must be the training labels"):
        lx.objective(CHURN, inputs={"clv": clv}, rows=object())
    # scalars and lookup tables are not per-row: no rows= needed
    lx.objective("cost_sensitive_bce(y, z, fn_cost=clv, fp_cost=20)", inputs={"clv": 5.0})
    lx.objective("expected_cost(y, z, C)", inputs={"C": np.ones((2, 2))})


def test_per_row_inputs_refuse_cross_validation_folds(churn):
    sklearn = pytest.importorskip("sklearn.model_selection")
    X, churned, clv = churn
    objective = lx.objective(CHURN, inputs={"clv": clv}, rows=churned, target="cpu")
    model = xgb.XGBClassifier(objective=objective, n_estimators=3, max_depth=2, n_jobs=1)
    with pytest.raises(lossdsl.LossShapeError, match=r"input 'clv' holds values for the 600"):
        sklearn.cross_val_score(model, X, churned, cv=3, error_score="raise")


def test_per_row_inputs_refuse_shuffled_rows(churn):
    X, churned, clv = churn
    objective = lx.objective(CHURN, inputs={"clv": clv}, rows=churned, target="cpu")
    order = np.random.default_rng(0).permutation(len(churned))
    model = xgb.XGBClassifier(objective=objective, n_estimators=3, max_depth=2, n_jobs=1)
    with pytest.raises(lossdsl.LossError, match="shuffled"):
        model.fit(X[order], churned[order])
    # on its own rows, in order, it trains; and equals the per-row cost as a sample weight on
    # the missed churners' term, checked on the gradient
    model.fit(X, churned)
    margins = np.linspace(-2, 2, len(churned))
    gradient, _ = objective(churned, margins)
    reference = lx.objective("cost_sensitive_bce(y, z, 1, 20)", target="cpu")
    g_positive, _ = reference(churned, margins, sample_weight=np.where(churned > 0, clv, 1.0))
    np.testing.assert_allclose(gradient[churned > 0], g_positive[churned > 0])


def test_per_row_inputs_bound_to_a_dmatrix(churn):
    X, churned, clv = churn
    dtrain = xgb.DMatrix(X, churned)
    objective = lx.objective(CHURN, inputs={"clv": clv}, rows=dtrain, target="cpu")
    booster = xgb.train(PARAMS, dtrain, 3, obj=objective,
                        custom_metric=lx.metric(objective, name="churn"),
                        evals=[(dtrain, "train")], verbose_eval=False)
    assert booster.num_boosted_rounds() == 3
    with pytest.raises(lossdsl.LossError, match="another DMatrix"):
        xgb.train(PARAMS, xgb.DMatrix(X, churned), 1, obj=objective)
    with pytest.raises(lossdsl.LossShapeError, match="'clv'"):
        xgb.cv(PARAMS, dtrain, 1, nfold=3, obj=objective)
    # pickled (Dask, multiprocessing): the DMatrix stays behind, the labels still check
    clone = pickle.loads(pickle.dumps(objective))
    order = np.random.default_rng(1).permutation(len(churned))
    with pytest.raises(lossdsl.LossError, match="shuffled"):
        clone(churned[order], np.zeros(len(churned)))


# ------------------------------------------------------------------ partly flat Hessians
@pytest.mark.parametrize("text,policy", [
    ("where(p < y, 4, 1)*huber(y, p, 0.5)", "constant"),   # flat outside the quadratic zone
    ("huber(y, p, 1.0)", "constant"),
    ("huber(y, p, 50.0)", "constant"),                     # flat only past |r| = 50
    ("huber(y, p, 1.0) + 0.01*mse(y, p)", "floor"),         # curved everywhere
    ("max(0, 1 - y*p)^2", "floor"),     # flat past the margin, but with a zero gradient there
    ("pseudo_huber(y, p)", "floor"),    # its stable form has zero branches, yet is curved
    ("log_cosh(y, p)", "floor"),
    ("bce_logits(y, p)", "floor"),
    ("half_mse(y, p)", "exact"),
    ("mae(y, p)", "constant"),
])
def test_auto_policy_detects_partly_flat_hessians(text, policy):
    assert lx.objective(text, target="cpu").policy == policy


@pytest.mark.parametrize("distribution", ["normal", "logistic", "extreme"])
def test_aft_losses_are_xgboosts_aft_nloglik(distribution):
    """aft_<distribution>(y, z, y_upper=u) at XGBoost's own margins is XGBoost's aft-nloglik
    metric, over rows observed exactly and right-, left- and interval-censored. (sigma = 1:
    XGBoost 3.2's metric keeps a scale of 1 whatever aft_loss_distribution_scale the
    objective has; other scales are checked against mpmath in tests/test_library.py.)"""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    times = np.exp(0.5 * X[:, 0] + rng.normal(scale=0.5, size=200))
    lower, upper = times.copy(), times.copy()
    upper[1::4] = np.inf
    lower[2::4] = 0.0
    upper[3::4] *= 1.5
    data = xgb.DMatrix(X)
    data.set_float_info("label_lower_bound", lower)
    data.set_float_info("label_upper_bound", upper)
    params = {"objective": "survival:aft", "aft_loss_distribution": distribution,
              "eval_metric": "aft-nloglik",
              "nthread": 1, "max_depth": 2}
    booster = xgb.train(params, data, 5)
    margin = booster.predict(data, output_margin=True).astype(np.float64)
    metric = float(booster.eval(data).rsplit(":", 1)[1])
    ours = lossdsl.compile(f"aft_{distribution}(y, z, y_upper=u)")
    assert ours(y=lower, u=upper, z=margin) == pytest.approx(metric, rel=1e-5)


def test_labels_rounded_to_float32_meet_the_per_row_inputs_given_beside_them():
    """XGBoost keeps labels in float32; an upper bound equal to its row's float64 label (a
    time observed exactly) is then below the rounded-up label for about half the rows, and
    the interval branch made their gradients NaN (165 of 500 in docs/boosting.md's example).
    The objective computes with the labels given as rows=, which XGBoost's are the rounding
    of: every gradient is that of the float64 labels."""
    rng = np.random.default_rng(0)
    times = np.exp(1.0 + rng.logistic(scale=0.5, size=500))
    follow_up = rng.uniform(1.0, 8.0, 500)
    lower = np.minimum(times, follow_up)
    upper = np.where(times <= follow_up, times, np.inf)
    objective = lx.objective("aft_logistic(y, z, y_upper=u, sigma=0.5)", inputs={"u": upper},
                             rows=lower)
    data = xgb.DMatrix(rng.normal(size=(500, 2)), lower)
    assert np.any(data.get_label().astype(np.float64) > upper)  # the rounding at stake
    margin = np.full(500, 1.0, np.float32)
    gradient, hessian = objective.gradients(data.get_label(), margin, container=data)
    expected = objective.compiled.grad("z", y=lower, u=upper, z=margin.astype(np.float64))
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)
    assert np.all(np.isfinite(hessian))
    # built with rows=<the DMatrix>, whose labels are rounded already: refused, with advice
    rounded = lx.objective("aft_logistic(y, z, y_upper=u, sigma=0.5)", inputs={"u": upper},
                           rows=data)
    with pytest.raises(lossdsl.LossDomainError, match="requires y_upper >= y") as caught:
        rounded.gradients(data.get_label(), margin, container=data)
    assert "rows=<the training labels as an array>" in caught.value.hint
    with pytest.raises(lossdsl.LossDomainError, match="requires y_upper >= y") as caught:
        rounded.value(data.get_label(), margin, container=data)  # the metric says so too
    assert "rows=<the training labels as an array>" in caught.value.hint
    assert objective.value(data.get_label(), margin, container=data) == pytest.approx(
        objective.compiled(y=lower, u=upper, z=margin.astype(np.float64)) / 500, rel=1e-12)


def test_rounds_skip_the_getters_and_slices_they_do_not_need(data, monkeypatch):
    """XGBoost's group getter (~50 us) and a one-round slice of the model (~0.7 ms, more
    than a tree at a few thousand rows) are paid only by the losses and options that use
    them: the same model comes out without them."""
    X, y = data["X"], data["binary"]
    dtrain = xgb.DMatrix(X, y)
    objective = lx.objective("bce_logits(y, z)")
    expected = lx.train(objective, PARAMS, dtrain, ROUNDS).predict(dtrain, output_margin=True)
    native = xgb.train({**PARAMS, "disable_default_eval_metric": 1}, dtrain, ROUNDS,
                       obj=objective, custom_metric=lx.metric("bce_logits(y, z)"))

    def refused(*args, **kwargs):
        raise AssertionError("not needed by this loss or these options")

    monkeypatch.setattr(xgb.DMatrix, "get_uint_info", refused)
    monkeypatch.setattr(xgb.Booster, "__getitem__", refused)
    again = lx.train(objective, PARAMS, dtrain, ROUNDS).predict(dtrain, output_margin=True)
    np.testing.assert_array_equal(again, expected)
    repeated = xgb.train({**PARAMS, "disable_default_eval_metric": 1}, dtrain, ROUNDS,
                         obj=objective, custom_metric=lx.metric("bce_logits(y, z)"))
    np.testing.assert_array_equal(repeated.predict(dtrain, output_margin=True),
                                  native.predict(dtrain, output_margin=True))
    # a grouping loss still reads the groups; evaluation sets still get the round's trees
    monkeypatch.undo()
    ranked = xgb.DMatrix(X, y, qid=np.repeat(np.arange(30), 10))
    gradient, _ = lx.objective("softmax_ranking(y, s, q)")(np.zeros(len(y)), ranked)
    assert np.all(np.isfinite(gradient)) and np.ptp(gradient) > 0
    evals: dict = {}
    lx.train(objective, PARAMS, dtrain, 2, evals=[("train", dtrain)], evals_result=evals)
    (history,) = evals["train"].values()
    assert len(history) == 2


def test_nan_labels_and_a_missing_num_class_are_refused_with_advice(data):
    """The objective refuses NaN labels (XGBoost's DMatrix does too, but the scikit-learn
    form obj(y_true, y_pred) takes arrays) and names num_class for a loss over classes."""
    y = data["y"].copy()
    y[5] = np.nan
    with pytest.raises(lossdsl.LossError, match=r"1 label\(s\) are NaN \(the first at row 5\)"):
        lx.objective("asymmetric_l1(y, p, 4, 1)")(y, np.zeros(len(y)))
    classes = lx.objective("sparse_cce_logits(y, z)")
    with pytest.raises(lossdsl.LossShapeError, match="XGBoost gave one score per row: train "
                                                     "with num_class=K"):
        xgb.train(PARAMS, xgb.DMatrix(data["X"], data["classes"]), 2, obj=classes)


def test_train_starts_where_xgboost_does_and_reads_ranking_and_survival_dmatrices():
    """A base_margin replaces params['base_score'] (as XGBoost's predict has it; train
    added the two, so the refitted leaves and the recorded evaluation loss were not the
    returned model's); no rounds is refused; a ranking DMatrix's weights are one per query;
    a survival DMatrix of bounds alone says to give the lower bounds as labels."""
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(600, 3)), rng.normal(size=(200, 3))
    y, yv = (np.exp(1 + 0.5 * a[:, 0]) + rng.gamma(2, 1, a.shape[0]) for a in (X, Xv))
    loss = lossdsl.compile("asymmetric_l1(y, p, 4, 1)")
    for refit in (True, False):
        booster = lx.train(lx.objective("asymmetric_l1(y, p, 4, 1)"),
                           {"eta": 0.3, "max_depth": 3, "base_score": 1.5},
                           xgb.DMatrix(X, y, base_margin=3 + 0.5 * X[:, 0]), 5, refit=refit,
                           init_score=False, evals=[("v", xgb.DMatrix(
                               Xv, yv, base_margin=3 + 0.5 * Xv[:, 0]))])
        recorded = next(iter(booster.lossdsl_evals["v"].values()))[-1]
        margin = booster.predict(xgb.DMatrix(Xv, base_margin=3 + 0.5 * Xv[:, 0]),
                                 output_margin=True).astype(float)
        assert recorded == pytest.approx(loss(y=yv, p=margin), rel=1e-6)
    with pytest.raises(lossdsl.LossError, match="num_boost_round must be a positive integer"):
        lx.train(lx.objective("mse(y, p)"), {}, xgb.DMatrix(X, y), 0)
    sizes = rng.integers(5, 15, 20)
    qid = np.repeat(np.arange(20), sizes)
    features, labels = rng.normal(size=(qid.size, 3)), rng.integers(0, 3, qid.size)
    group_weight = rng.uniform(0.5, 2, 20).astype(np.float32).astype(float)  # as stored
    ranking = lx.objective("ranknet(y, s, q)")
    margin = rng.normal(size=qid.size)
    gradient, _ = ranking(margin, xgb.DMatrix(features, labels, qid=qid, weight=group_weight))
    expected, _ = ranking.gradients(labels.astype(float), margin, np.repeat(group_weight, sizes),
                                    groups=qid)
    np.testing.assert_allclose(gradient, expected, rtol=1e-12)
    bounds = xgb.DMatrix(X)
    bounds.set_float_info("label_lower_bound", y)
    bounds.set_float_info("label_upper_bound", y)
    with pytest.raises(lossdsl.LossError, match="give the lower bounds as label="):
        xgb.train({"base_score": 1.0}, bounds, 1,
                  obj=lx.objective("aft_normal(y, z, y_upper=u)", inputs={"u": y}, rows=y))
