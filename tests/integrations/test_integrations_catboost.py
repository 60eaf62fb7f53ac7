"""lossdsl.catboost: CatBoost's sign convention, weights, same models as RMSE and Logloss;
fits without warnings or a hand-given metric, class predictions, the one-row multiclass path
and the leaf settings of model_params."""

import copy
import math
import pickle
import time
import warnings

import numpy as np
import pytest

catboost = pytest.importorskip("catboost")
import lossdsl  # noqa: E402
import lossdsl.catboost as lc  # noqa: E402
from lossdsl.boosting import QueryDraws  # noqa: E402

# Every warning is an error here: lossdsl's objects tell CatBoost not to try to JIT them.
pytestmark = pytest.mark.filterwarnings("error")

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
    assert pairs.dtype == np.float64 and pairs.shape == (2, 2)  # what CatBoost reads fastest
    assert pairs.tolist() == [[1.0, -1.0], [-1.0, -1.0]]  # (t - a, -1) as CatBoost's RMSE
    weighted = objective.calc_ders_range([1.0, 3.0], [2.0, 2.0], [2.0, 0.5])
    assert weighted.tolist() == [[2.0, -2.0], [-0.5, -0.5]]
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
    # nor can draws made for the training rows each round follow them
    with pytest.raises(lossdsl.LossError, match="drawn anew each round"):
        lc.objective("(1 - u)*half_mse(y, p)", inputs={"u": QueryDraws(seed=5)})
    # the init score takes the labels with the values: those rows, by construction
    start = lc.init_score(text, data["y"], inputs={"value": value})
    assert start == pytest.approx(np.sum(value * data["y"]) / np.sum(value))


# ---------------------------------------------------------------------------- out of the box
def _softmax(raw):
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_fits_without_warnings(data):
    """CatBoost's Python package tries to Numba-compile every objective and metric method and
    warns on each fit when one uses self; lossdsl's objects carry CatBoost's no_jit flag."""
    objective = lc.objective("half_mse(y, p)", target="cpu")
    assert objective.no_jit and lc.metric(objective).no_jit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = catboost.CatBoostRegressor(**lc.model_params(objective), **SETTINGS)
        model.fit(data["X"], data["y"], sample_weight=data["weight"],
                  eval_set=(data["X"], data["y"]))
        model.fit(data["X"], data["y"])  # the same objects again
    assert [str(w.message) for w in caught] == []


def test_model_params(data):
    objective = lc.objective("half_mse(y, p)", target="cpu")
    given = lc.model_params(objective, iterations=3)
    assert given["loss_function"] is objective and given["iterations"] == 3
    assert isinstance(given["eval_metric"], lc.CatBoostMetric)
    assert "leaf_estimation_iterations" not in given  # exact Hessian: CatBoost's defaults
    flat = lc.model_params("asymmetric_l1(y, p, 4, 1)", leaf_estimation_iterations=3)
    assert flat["loss_function"].policy == "constant"
    assert flat["leaf_estimation_method"] == "Newton"
    assert flat["leaf_estimation_backtracking"] == "AnyImprovement"
    assert flat["leaf_estimation_iterations"] == 3  # overrides win
    assert flat["l2_leaf_reg"] == 3.0  # CatBoost's default, for a Hessian of 1 per row
    rng = np.random.default_rng(0)
    labels = 1000.0 * rng.normal(size=400)
    scaled = lc.model_params("asymmetric_l1(y, p, 4, 1)", labels=labels)
    constant = scaled["loss_function"].hessian_constant
    # the mean |gradient| at the 0.8 quantile (4 below it, 1 above) per standard deviation
    assert constant == pytest.approx((0.2 * 4 + 0.8 * 1) / np.std(labels), rel=0.02)
    assert scaled["l2_leaf_reg"] == pytest.approx(3.0 * constant)
    assert lc.model_params("asymmetric_l1(y, p, 4, 1)", labels=labels, hessian_constant=2.0,
                           )["loss_function"].hessian_constant == 2.0
    # the eval metric is the loss itself: what CatBoost reports and picks the best round by
    model = catboost.CatBoostRegressor(**lc.model_params(objective), **SETTINGS)
    model.fit(data["X"], data["y"], eval_set=(data["X"], data["y"]))
    curve = model.get_evals_result()["validation"]["CatBoostMetric"]
    raw = model.predict(data["X"])
    # (CatBoost stores the labels as float32)
    assert curve[-1] == pytest.approx(0.5 * np.mean((data["y"] - raw) ** 2), rel=1e-6)


@pytest.mark.parametrize("labels", ["01", "strings", "pm1"])
def test_binary_classifier_predicts_labels(data, labels):
    """CatBoostClassifier with a lossdsl objective fits with model_params alone; predict gives
    the labels and predict_proba the sigmoid of the raw score (a loss on logits)."""
    positive = data["binary"] > 0
    y = {"01": positive.astype(int), "strings": np.where(positive, "yes", "no"),
         "pm1": np.where(positive, 1, -1)}[labels]
    model = catboost.CatBoostClassifier(**lc.model_params("bce_logits(y, p)", classifier=True),
                                        **SETTINGS)
    model.fit(data["X"], y)
    assert model.get_evals_result()["learn"]["CatBoostMetric"][-1] < np.log(2)
    raw = model.predict(data["X"], prediction_type="RawFormulaVal")
    assert np.abs(raw).max() > 1.0
    low, high = sorted(set(y.tolist()))
    assert list(model.classes_) == [low, high]
    np.testing.assert_array_equal(model.predict(data["X"]), np.where(raw > 0, high, low))
    proba = model.predict_proba(data["X"])
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-raw)), rtol=1e-12)
    assert np.mean(model.predict(data["X"]) == y) > 0.85


@pytest.mark.parametrize("with_classes", [False, True])
def test_multiclass_classifier_predicts_labels(data, with_classes):
    """K scores: CatBoost must be told that it classifies (a classification metric, or
    class_names); classes_count alone makes it save the model without labels, and predict
    fails."""
    names = np.array(["low", "mid", "high"])
    y = names[np.digitize(data["y"], [-0.5, 0.5])]
    extra = {"classes": ["high", "low", "mid"]} if with_classes else {}
    given = lc.model_params("sparse_cce_logits(y, z)", **extra)
    assert isinstance(given["eval_metric"], lc.CatBoostMetric)
    assert given.get("custom_metric") == (None if with_classes else ["MultiClass"])
    model = catboost.CatBoostClassifier(**given, **SETTINGS)
    model.fit(data["X"], y)
    raw = model.predict(data["X"], prediction_type="RawFormulaVal")
    assert raw.shape == (len(y), 3)
    classes = np.asarray(model.classes_)
    np.testing.assert_array_equal(model.predict(data["X"]).ravel(),
                                  classes[np.argmax(raw, axis=1)])
    np.testing.assert_allclose(model.predict_proba(data["X"]), _softmax(raw), rtol=1e-12)
    assert np.mean(model.predict(data["X"]).ravel() == y) > 0.8


@pytest.mark.parametrize("num_class", [2, 3])
def test_loss_over_classes_with_one_score_is_a_loss_error(data, num_class):
    """Two classes with a binary metric, or three with no hint that there are three (a
    Python objective and metric): CatBoost trains one score per row."""
    objective = lc.objective("sparse_cce_logits(y, z)", target="cpu")
    if num_class == 2:
        labels, metric = data["binary"], "Logloss"
    else:
        labels, metric = np.digitize(data["y"], [-0.5, 0.5]), lc.metric(objective)
    model = catboost.CatBoostClassifier(loss_function=objective, eval_metric=metric,
                                        **SETTINGS)
    with pytest.raises(catboost.CatBoostError, match="LossError: .* loss over classes.*"
                                                     "model_params"):
        model.fit(data["X"], labels)


# ---------------------------------------------------------------------------- one-row kernel
@pytest.mark.parametrize("options", [
    {"text": "sparse_cce_logits(y, z)"},
    {"text": "sparse_cce_logits(y, z)", "hessian": "exact"},
    {"text": "sparse_cce_logits(y, z)", "hessian": "clip", "hessian_scale": 2.0},
    {"text": "sparse_cce_logits(y, z)", "hessian": "floor", "hessian_floor": 0.05},
    {"text": "sparse_cce_logits(y, z)", "hessian": "constant", "hessian_constant": 0.3},
    {"text": "cce_logits(y, z)"},  # one-hot labels
    {"text": "bce_logits(y, p)", "columns": "onehot"},  # elementwise: one-vs-rest columns
])
def test_one_row_path_matches_gradients(options):
    options = dict(options)
    objective = lc.objective(options.pop("text"), target="cpu", **options)
    rng = np.random.default_rng(5)
    for _ in range(20):
        scores = rng.normal(scale=3.0, size=4)
        target, weight = float(rng.integers(0, 4)), float(rng.uniform(0.1, 3.0))
        gradient, hessian = objective.calc_ders_multi(scores, target, weight)
        gradient, hessian = list(gradient), [list(row) for row in hessian]  # reused lists
        expected_g, expected_h = objective.gradients(np.array([target]), scores[None, :],
                                                     np.array([weight]))
        np.testing.assert_allclose(gradient, -expected_g[0], rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(hessian, np.diag(-expected_h[0]), rtol=1e-13, atol=1e-300)
    with pytest.raises(lossdsl.LossDomainError, match=r"integers in \[0, 4\)"):
        objective.calc_ders_multi(np.zeros(4), 4.0, 1.0)
    with pytest.raises(lossdsl.LossDomainError, match="integers"):
        objective.calc_ders_multi(np.zeros(4), 1.5, 1.0)
    # copies and pickles (CatBoost deep-copies its parameters on every fit) work on
    clone = pickle.loads(pickle.dumps(copy.deepcopy(objective)))
    assert clone.calc_ders_multi(np.ones(4), 2.0, 1.0)[0] == \
        objective.calc_ders_multi(np.ones(4), 2.0, 1.0)[0]


class _PythonSoftmax:
    """CatBoost's tutorial-style multiclass objective in plain Python: the least a per-row
    Python call costs (what lossdsl's one-row kernel is compared with)."""

    no_jit = True

    def calc_ders_multi(self, approx, target, weight):
        scores = approx.tolist()
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        p = [e / total for e in exps]
        gradient = [-weight * q for q in p]
        gradient[int(target)] += weight
        hessian = [[0.0] * len(p) for _ in p]
        for k, q in enumerate(p):
            hessian[k][k] = -weight * q * (1 - q)
        return gradient, hessian


def test_multiclass_time_against_python():
    """CatBoost calls calc_ders_multi per row and round (twice with Newton leaves). Through
    lossdsl's general gradients() path a fit took 40x the built-in MultiClass's time; the
    one-row kernel costs about what a plain-Python softmax objective does (a fit 4.1-4.3x
    the built-in's at 2,000 rows, as the plain-Python one). Compared with that peer in the
    same process, interleaved, so that the bound holds under load."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1000, 4))
    y = np.digitize(X[:, 0] + 0.5 * rng.normal(size=1000), [-1.0, 0.0, 1.0])
    objective = lc.objective("sparse_cce_logits(y, z)", target="cpu")
    settings = {**SETTINGS, "iterations": 10, "depth": 4, "eval_metric": "MultiClass"}
    catboost.CatBoostClassifier(loss_function=objective, **settings).fit(X[:100], y[:100])
    times = {"lossdsl": [], "python": []}
    raw = {}
    for _ in range(3):
        for name, given in (("python", _PythonSoftmax()), ("lossdsl", objective)):
            start = time.perf_counter()
            model = catboost.CatBoostClassifier(loss_function=given, **settings).fit(X, y)
            times[name].append(time.perf_counter() - start)
            raw[name] = model.predict(X, prediction_type="RawFormulaVal")
    np.testing.assert_allclose(raw["lossdsl"], raw["python"], rtol=1e-9, atol=1e-12)
    assert min(times["lossdsl"]) < 2.5 * min(times["python"]), times


def test_multiclass_from_several_threads():
    """CatBoost may call calc_ders_multi from several threads: each has its own buffers."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 4))
    y = np.digitize(X[:, 0] + 0.5 * rng.normal(size=3000), [-1.0, 0.0, 1.0])
    settings = {**SETTINGS, "iterations": 3, "depth": 4, "eval_metric": "MultiClass",
                "thread_count": 4}
    raw = {}
    for name, given in (("python", _PythonSoftmax()),
                        ("lossdsl", lc.objective("sparse_cce_logits(y, z)", target="cpu"))):
        model = catboost.CatBoostClassifier(loss_function=given, **settings).fit(X, y)
        raw[name] = model.predict(X, prediction_type="RawFormulaVal")
    np.testing.assert_allclose(raw["lossdsl"], raw["python"], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- leaf values
def test_leaf_estimation_reaches_the_builtin_quantile():
    """asymmetric_l1(y, p, 4, 1) has Hessian 0: with one Newton step on a constant Hessian a
    leaf moves by its mean gradient. model_params' repeated steps with backtracking (and a
    step scaled to the labels) bring the held-out cost close to CatBoost's Quantile:alpha=0.8
    (exact leaves)."""
    rng = np.random.default_rng(1)
    n = 1000
    X = rng.normal(size=(2 * n, 4))
    y = 10 * np.sin(X[:, 0]) + 5 * X[:, 1] + np.exp(0.5 * X[:, 2]) * rng.gamma(2.0, 2.0, 2 * n)
    train, test = slice(0, n), slice(n, None)

    def cost(prediction):
        residual = y[test] - prediction
        return float(np.mean(np.where(residual > 0, 4 * residual, -residual)))

    settings = {"iterations": 40, "depth": 4, "learning_rate": 0.1, "random_seed": 0,
                "verbose": False, "thread_count": 1, "allow_writing_files": False}
    builtin = catboost.CatBoostRegressor(loss_function="Quantile:alpha=0.8", **settings)
    builtin = cost(builtin.fit(X[train], y[train]).predict(X[test]))
    text = "asymmetric_l1(y, p, 4, 1)"
    costs = {}
    before = lc.objective(text, target="cpu")  # CatBoost's leaf defaults: one Newton step
    for name, given in (("one step", {"loss_function": before, "eval_metric": "MAE"}),
                        ("default", lc.model_params(text, labels=y[train], target="cpu"))):
        objective = given["loss_function"]
        model = catboost.CatBoostRegressor(**given, **settings)
        model.fit(X[train], y[train], baseline=objective.base_margin(y[train]))
        costs[name] = cost(model.predict(X[test]) + objective.init_score(y[train]))
    assert costs["default"] < 0.9 * costs["one step"], (costs, builtin)
    assert costs["default"] < 1.05 * builtin, (costs, builtin)


@pytest.mark.parametrize("labels", ["01", "strings", "pm1"])
def test_binary_classifier_from_the_labels_alone(data, labels):
    """Given the labels, model_params tells CatBoost it classifies for a loss whose label is
    declared within [0, 1]: without classifier=True, predict used to fail inside CatBoost
    (an IndexError: the model saved without its class labels)."""
    positive = data["binary"] > 0
    y = {"01": positive.astype(int), "strings": np.where(positive, "yes", "no"),
         "pm1": np.where(positive, 1, -1)}[labels]
    given = lc.model_params("cost_sensitive_bce(y, z, 2.0, 1.0)", labels=y)
    assert given["custom_metric"] == ["Logloss"]
    model = catboost.CatBoostClassifier(**given, **SETTINGS).fit(data["X"], y)
    raw = model.predict(data["X"], prediction_type="RawFormulaVal")
    low, high = sorted(set(y.tolist()))
    np.testing.assert_array_equal(model.predict(data["X"]), np.where(raw > 0, high, low))
    # a regression loss, or a margin loss's -1/1 labels, are left as they were
    assert "custom_metric" not in lc.model_params("mse(y, p)", labels=positive.astype(float))
    assert "custom_metric" not in lc.model_params("hinge(y, z)", labels=np.where(positive, 1, -1))


def test_two_soft_labels_are_not_taken_for_classes(data):
    """Two soft labels inside [0, 1] (0.2 and 0.7) are regression targets: with the Logloss
    metric CatBoost, a CatBoostRegressor too, hands the objective 0 and 1 instead of them."""
    soft = np.where(data["binary"] > 0, 0.7, 0.2)
    given = lc.model_params("bce_logits(y, z)", labels=soft)
    assert "custom_metric" not in given
    seen = []
    objective = given["loss_function"]

    class Spy:  # the targets each call of the objective gets
        no_jit = True  # CatBoost would try to compile the method with Numba, and warn

        def calc_ders_range(self, approxes, targets, weights):
            seen.append(set(np.round(np.asarray(targets, dtype=np.float64), 6)))
            return objective.calc_ders_range(approxes, targets, weights)

    catboost.CatBoostRegressor(**{**given, "loss_function": Spy()}, **SETTINGS).fit(
        data["X"], soft)
    assert seen and all(targets == {0.2, 0.7} for targets in seen)


@pytest.mark.parametrize("loss", ["gaussian_nll_scores(y, z)", "negative_binomial_scores(y, z)",
                                  "quantile(y, p, classvec(a))"])
def test_two_score_columns_on_one_real_label_are_refused(data, loss):
    """CatBoost gives a Python objective several scores per row only as classes (each
    label a class: a model of 200 columns here) or with one label per column, so a loss that
    reads its score columns with one real label (a mean and a spread) cannot train: refused
    where it is made, with the integrations that train it, not trained on one-hot labels."""
    from lossdsl.estimators import CatBoostLossRegressor

    where = "lossdsl.xgboost.train or lossdsl.lightgbm.train"
    # several quantile levels were trained until the first round asked for num_class, which
    # CatBoost does not have (a CatBoostError wrapping a Python traceback)
    levels = {"a": np.array([0.1, 0.5, 0.9])} if "classvec" in loss else None
    for make in (lambda: lc.objective(loss, inputs=levels),
                 lambda: lc.model_params(loss, inputs=levels, iterations=2)):
        with pytest.raises(lossdsl.LossError, match=where):
            make()
    if levels is None:
        with pytest.raises(lossdsl.LossError, match=where):
            lc.metric(loss)
        with pytest.raises(lossdsl.LossError, match=where):
            CatBoostLossRegressor(loss, n_estimators=2).fit(data["X"], np.abs(data["y"]))
