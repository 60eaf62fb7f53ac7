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


def test_elementwise_loss_on_class_scores_is_one_vs_rest(data):
    objective = lx.objective("bce_logits(y, p)", target="cpu")
    gradient, _ = objective(data["classes"], np.zeros((300, 3)))
    np.testing.assert_allclose(gradient, 0.5 - np.eye(3)[data["classes"]])


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
    expected = lossdsl.compile("bce_logits(y, p)")(
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
                             inputs={"cost": cost}, target="cpu")
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
