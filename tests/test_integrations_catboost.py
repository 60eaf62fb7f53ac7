"""lossdsl.catboost: CatBoost's sign convention, weights, same models as RMSE and Logloss."""

import numpy as np
import pytest

catboost = pytest.importorskip("catboost")
import lossdsl  # noqa: E402
import lossdsl.catboost as lc  # noqa: E402

# CatBoost warns that it cannot Numba-compile a method that uses self: lossdsl's objectives
# already run compiled kernels, so that is expected.
pytestmark = pytest.mark.filterwarnings("ignore:Can't optimze method:UserWarning")

# Deterministic, plain boosting with one Newton step per leaf and no intercept, so that the
# custom and built-in objectives meet the same trees when their derivatives agree.
SETTINGS = {"iterations": 8, "depth": 3, "learning_rate": 0.3, "random_seed": 0,
            "verbose": False, "thread_count": 1, "boosting_type": "Plain",
            "leaf_estimation_method": "Newton", "leaf_estimation_iterations": 1,
            "boost_from_average": False, "bootstrap_type": "No", "random_strength": 0,
            "allow_writing_files": False}  # no catboost_info/ folder in the working tree


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    n = 200
    X = rng.normal(size=(n, 4))
    y = X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=n)
    return {"X": X, "y": y, "binary": (y > 0).astype(float),
            "weight": rng.uniform(0.2, 3.0, size=n)}


def test_sign_convention_is_negated_loss():
    objective = lc.objective("half_mse(y, p)", target="cpu")
    pairs = objective.calc_ders_range([1.0, 3.0], [2.0, 2.0], None)
    assert pairs == [(1.0, -1.0), (-1.0, -1.0)]  # (t - a, -1) as CatBoost's RMSE example
    weighted = objective.calc_ders_range([1.0, 3.0], [2.0, 2.0], [2.0, 0.5])
    assert weighted == [(2.0, -2.0), (-0.5, -0.5)]
    logistic = lc.objective("bce_logits(y, p)", target="cpu")
    ((der1, der2),) = logistic.calc_ders_range([0.0], [1.0], None)
    assert (der1, der2) == pytest.approx((0.5, -0.25))  # (t - p, -p (1 - p))


@pytest.mark.parametrize("weighted", [False, True])
def test_same_model_as_rmse(data, weighted):
    weight = data["weight"] if weighted else None
    objective = lc.objective("half_mse(y, p)", target="cpu")
    ours = catboost.CatBoostRegressor(loss_function=objective, eval_metric="RMSE", **SETTINGS)
    ours.fit(data["X"], data["y"], sample_weight=weight)
    theirs = catboost.CatBoostRegressor(loss_function="RMSE", **SETTINGS)
    theirs.fit(data["X"], data["y"], sample_weight=weight)
    assert np.abs(theirs.predict(data["X"])).max() > 0.5
    np.testing.assert_allclose(ours.predict(data["X"]), theirs.predict(data["X"]), atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_same_model_as_logloss(data, weighted):
    weight = data["weight"] if weighted else None
    objective = lc.objective("bce_logits(y, p)", target="cpu")
    ours = catboost.CatBoostClassifier(loss_function=objective, eval_metric="Logloss",
                                       **SETTINGS)
    ours.fit(data["X"], data["binary"], sample_weight=weight)
    theirs = catboost.CatBoostClassifier(loss_function="Logloss", **SETTINGS)
    theirs.fit(data["X"], data["binary"], sample_weight=weight)
    raw = {"prediction_type": "RawFormulaVal"}
    np.testing.assert_allclose(ours.predict(data["X"], **raw),
                               theirs.predict(data["X"], **raw), atol=1e-9)


def test_metric_and_baseline(data):
    objective = lc.objective("pseudo_huber(y, p)", target="cpu")
    baseline = objective.base_margin(data["y"])
    model = catboost.CatBoostRegressor(loss_function=objective,
                                       eval_metric=lc.metric(objective), **SETTINGS)
    model.fit(catboost.Pool(data["X"], data["y"], baseline=baseline),
              eval_set=catboost.Pool(data["X"], data["y"], baseline=baseline))
    curve = model.get_evals_result()["validation"]
    (values,) = curve.values()
    assert values[-1] < values[0]
    metric = lc.metric("half_mse(y, p)")
    error, weight = metric.evaluate([[1.0, 3.0]], [2.0, 2.0], [1.0, 3.0])
    assert (error, weight) == pytest.approx((2.0, 4.0))
    assert metric.get_final_error(error, weight) == pytest.approx(0.5)
    assert metric.is_max_optimal() is False


def test_multiclass_ders(data):
    objective = lc.objective("sparse_cce_logits(y, z)", target="cpu")
    gradient, hessian = objective.calc_ders_multi([0.0, 0.0, 0.0], 1, 2.0)
    np.testing.assert_allclose(gradient, [-2 / 3, 4 / 3, -2 / 3])
    np.testing.assert_allclose(hessian, -2 * np.diag([2 / 9] * 3))
    classes = np.digitize(data["X"][:, 0], [-0.5, 0.5])
    model = catboost.CatBoostClassifier(loss_function=objective, eval_metric="MultiClass",
                                        classes_count=3, iterations=5, depth=2, verbose=False,
                                        thread_count=1, random_seed=0,
                                        allow_writing_files=False)
    model.fit(data["X"][:60], classes[:60])
    raw = model.predict(data["X"][:60], prediction_type="RawFormulaVal")
    assert raw.shape == (60, 3)
    assert np.mean(np.argmax(raw, axis=1) == classes[:60]) > 0.6


@pytest.mark.parametrize("weighted", [False, True])
def test_same_model_as_multiclass_with_gradient_leaves(data, weighted):
    # Gradient leaf values: lossdsl's multiclass derivatives drive the same trees as CatBoost's
    # MultiClass. (Newton leaves differ: CatBoost's own uses the full K x K softmax Hessian,
    # custom objectives give the diagonal, as XGBoost's and LightGBM's softmax do.)
    weight = data["weight"] if weighted else None
    classes = np.digitize(data["y"], [-0.5, 0.5])
    settings = {**SETTINGS, "leaf_estimation_method": "Gradient", "classes_count": 3}
    objective = lc.objective("sparse_cce_logits(y, z)", target="cpu")
    ours = catboost.CatBoostClassifier(loss_function=objective, eval_metric="MultiClass",
                                       **settings)
    ours.fit(data["X"], classes, sample_weight=weight)
    theirs = catboost.CatBoostClassifier(loss_function="MultiClass", **settings)
    theirs.fit(data["X"], classes, sample_weight=weight)
    raw = {"prediction_type": "RawFormulaVal"}
    expected = theirs.predict(data["X"], **raw)
    assert expected.shape == (len(classes), 3) and np.abs(expected).max() > 0.5
    np.testing.assert_allclose(ours.predict(data["X"], **raw), expected, atol=1e-9)


def test_per_row_inputs_refused(data):
    """CatBoost calls objectives on batches (1000 rows, then 500) and, with ordered boosting,
    on permutations of them, without saying which rows: a per-row input used to be paired
    with whichever rows came."""
    value = np.linspace(1.0, 2.0, len(data["y"]))
    text = "value*half_mse(y, p)"
    with pytest.raises(lossdsl.LossError, match="CatBoost calls objectives on batches"):
        lc.objective(text, inputs={"value": value})
    with pytest.raises(lossdsl.LossError, match="sample_weight"):
        lc.metric(text, inputs={"value": value})
    lc.objective(text, inputs={"value": 2.0})  # a scalar is fine
    # the init score takes the labels with the values: those rows, by construction
    start = lc.init_score(text, data["y"], inputs={"value": value})
    assert start == pytest.approx(np.sum(value * data["y"]) / np.sum(value))
