"""scikit-learn estimators on lossdsl losses (lossdsl.estimators): per-row inputs that travel
with their rows, the predictions and probabilities a loss implies, the decide step, and
scikit-learn's own estimator checks. Small data and few rounds: each test fits in well under a
second once the losses are compiled (a handful of distinct losses, shared by the module)."""

from __future__ import annotations

import importlib
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import lossdsl
from lossdsl.estimators import (
    CatBoostLossClassifier,
    CatBoostLossRegressor,
    LGBMLossClassifier,
    LGBMLossRegressor,
    XGBLossClassifier,
    XGBLossRegressor,
)

# the per-row cost: a missed churner costs its customer value, a wasted offer costs 2
CHURN = "cost_sensitive_bce(y, z, clv, 2)"
POISSON_LOG = "exp(z) - y*z"
XGB = {"nthread": 1, "max_depth": 3}
LGB = {"num_threads": 1, "num_leaves": 7, "min_data_in_leaf": 5}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture(scope="module")
def data():
    """240 rows: three features, a per-row customer value 'clv', binary and count labels."""
    rng = np.random.default_rng(0)
    n = 240
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n),
                      "x2": rng.normal(size=n), "clv": rng.uniform(1.0, 20.0, size=n)})
    churn = (X.x0 + 0.7 * rng.normal(size=n) > 0.3).astype(int).to_numpy()
    counts = rng.poisson(np.exp(0.5 + 0.6 * X.x0.to_numpy())).astype(float)
    return X, churn, counts


# ---------------------------------------------------------------------------- implied outputs
def test_bce_probabilities_are_the_sigmoid_and_predict_the_likelier_class(data):
    X, y, _ = data
    model = XGBLossClassifier(n_estimators=8, **XGB).fit(X[["x0", "x1"]], y)
    raw = model.predict_raw(X[["x0", "x1"]])
    proba = model.predict_proba(X[["x0", "x1"]])
    np.testing.assert_allclose(proba[:, 1], sigmoid(raw), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(model.predict(X[["x0", "x1"]]), (raw > 0).astype(int))
    # the init score is the log-odds of the labels, stored and inside the raw scores
    assert model.init_score_ == pytest.approx(np.log(y.mean() / (1 - y.mean())), abs=1e-9)
    assert model.score(X[["x0", "x1"]], y) > 0.75


def test_cost_weighted_loss_gives_the_true_probability_per_row(data):
    X, y, _ = data
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=8, **XGB).fit(X, y)
    s = sigmoid(model.predict_raw(X))
    clv = X.clv.to_numpy()
    # q = g0 / (g0 - g1) with g1 = -clv (1 - s), g0 = 2 s: the un-weighted probability
    expected = 2 * s / (2 * s + clv * (1 - s))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, rtol=1e-12)
    # the probabilities depend on each row's clv: another clv gives other probabilities
    other = model.predict_proba(X.drop(columns="clv"), clv=np.full(len(X), 5.0))[:, 1]
    assert np.max(np.abs(other - expected)) > 0.05


def test_multiclass_softmax_and_string_labels(data):
    X, _, _ = data
    names = np.array(["bronze", "gold", "silver"])
    codes = np.digitize(X.x0.to_numpy(), [-0.4, 0.4])
    y = names[codes]
    # XGBoost, as the estimator checks below: they share the compiled cce_logits kernels
    model = XGBLossClassifier(n_estimators=8, **XGB).fit(X[["x0", "x1"]], y)
    assert list(model.classes_) == ["bronze", "gold", "silver"]
    raw = model.predict_raw(X[["x0", "x1"]])
    assert raw.shape == (len(X), 3)
    softmax = np.exp(raw - raw.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X[["x0", "x1"]]), softmax, atol=1e-10)
    predicted = model.predict(X[["x0", "x1"]])
    assert np.array_equal(predicted, model.classes_[np.argmax(softmax, axis=1)])
    assert np.mean(predicted == y) > 0.7


def test_hinge_implies_no_probabilities(data):
    X, y, _ = data
    with pytest.raises(lossdsl.LossError, match="class_values=\\(-1, 1\\)"):
        XGBLossClassifier("hinge(y, z)", n_estimators=3, **XGB).fit(X[["x0"]], y)
    model = XGBLossClassifier("hinge(y, z)", class_values=(-1, 1), n_estimators=8,
                              **XGB).fit(X[["x0", "x1"]], y)
    with pytest.raises(lossdsl.LossError,
                       match=r"the loss 'hinge\(y, z\)' does not imply class probabilities"):
        model.predict_proba(X[["x0", "x1"]])
    # predict: the class whose hinge loss is lower at the score, i.e. the score's sign
    raw = model.predict_raw(X[["x0", "x1"]])
    assert np.array_equal(model.predict(X[["x0", "x1"]]), (raw > 0).astype(int))


def test_expected_cost_over_classes_implies_no_probabilities(data):
    X, _, _ = data
    y = np.digitize(X.x0.to_numpy(), [-0.4, 0.4])
    # under a 0-1 cost matrix the expected cost is optimal for q = (1/3, 1/3, 1/3) whatever
    # the score: the rule's answer does not move, so it is no probability
    model = XGBLossClassifier("expected_cost(y, z, C)", inputs={"C": 1.0 - np.eye(3)},
                              init_score=False, n_estimators=3, **XGB).fit(X[["x0"]], y)
    with pytest.raises(lossdsl.LossError, match="do not change with the score"):
        model.predict_proba(X[["x0"]])
    raw = model.predict_raw(X[["x0"]])
    np.testing.assert_array_equal(model.predict(X[["x0"]]), np.argmax(raw, axis=1))


def test_an_expected_cost_predicts_its_most_probable_decision(data):
    """The expected cost of a decision drawn with softmax(z) (or sigmoid(z)) predicts
    argmax z (z > 0): the decision the model learned. It predicted the class whose loss is
    lowest at the score, the label under which the drawn decision would cost least (557
    against 498 for argmax on a user-journey run's held-out rows)."""
    X, _, _ = data
    y = np.digitize(X.x0.to_numpy() + 0.3 * X.x1.to_numpy(), [-0.4, 0.4])
    C = np.array([[0.0, 1.0, 10.0], [5.0, 0.0, 1.0], [1.0, 20.0, 0.0]])
    model = XGBLossClassifier("expected_cost(y, z, C)", inputs={"C": C}, init_score=False,
                              n_estimators=20, **XGB).fit(X[["x0", "x1"]], y)
    raw = model.predict_raw(X[["x0", "x1"]])
    np.testing.assert_array_equal(model.predict(X[["x0", "x1"]]), np.argmax(raw, axis=1))
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    lowest = np.argmin((e / e.sum(axis=1, keepdims=True)) @ C.T, axis=1)
    assert np.any(lowest != np.argmax(raw, axis=1))  # the two rules differ on these rows
    binary = "sigmoid(z)*where(y == 1, 0, 1) + (1 - sigmoid(z))*where(y == 1, 8, 0)"
    labels = (X.x0.to_numpy() > 0.5).astype(int)
    model = XGBLossClassifier(binary, init_score=False, n_estimators=20,
                              **XGB).fit(X[["x0", "x1"]], labels)
    raw = model.predict_raw(X[["x0", "x1"]])
    np.testing.assert_array_equal(model.predict(X[["x0", "x1"]]), (raw > 0).astype(int))


def test_regressor_predictions_on_the_label_scale(data):
    X, _, counts = data
    features = X[["x0", "x1"]]
    plain = XGBLossRegressor(n_estimators=8, **XGB).fit(features, counts)
    assert plain.identity_link_
    np.testing.assert_array_equal(plain.predict(features), plain.predict_raw(features))
    poisson = LGBMLossRegressor(POISSON_LOG, n_estimators=8, **LGB).fit(features, counts)
    assert not poisson.identity_link_
    raw = poisson.predict_raw(features)
    np.testing.assert_allclose(poisson.predict(features), np.exp(raw), rtol=1e-12)
    assert poisson.init_score_ == pytest.approx(np.log(counts.mean()), abs=1e-9)


# ---------------------------------------------------------------------------- rows
@pytest.mark.parametrize("estimator", [XGBLossRegressor, LGBMLossRegressor])
def test_a_ranking_loss_points_to_the_libraries_rankers(estimator):
    """A loss over query groups cannot have its leaves set row by row: the estimator says
    which library loop fits it instead of training something else."""
    rng = np.random.default_rng(2)
    X, q = rng.normal(size=(40, 3)), np.repeat(np.arange(8), 5)
    model = estimator("softmax_ranking(y, s, q)", inputs={"q": "qid"}, n_estimators=2)
    with pytest.raises(lossdsl.LossError, match="groups its rows by 'q'.*LGBMRanker"):
        model.fit(X, rng.integers(0, 3, 40).astype(float), qid=q)


def test_per_row_column_is_not_a_feature_and_must_come_back(data):
    X, y, _ = data
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=5, **XGB).fit(X, y)
    assert model.booster_.feature_names == ["x0", "x1", "x2"] or \
        getattr(model.booster_, "booster", model.booster_).feature_names == ["x0", "x1", "x2"]
    assert list(model.feature_names_in_) == ["x0", "x1", "x2", "clv"]
    with pytest.raises(lossdsl.LossError, match="no per-row values for 'clv'"):
        model.predict_proba(X[["x0", "x1", "x2"]].to_numpy())
    with pytest.raises(lossdsl.LossError, match="frozen to one set of rows"):
        XGBLossClassifier(CHURN, inputs={"clv": X.clv.to_numpy()}).fit(X, y)


def test_cross_validation_and_shuffles_keep_values_on_their_rows(data):
    X, y, _ = data
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=5, **XGB)
    scores = cross_val_score(model, X, y, cv=KFold(3, shuffle=True, random_state=0))
    assert np.all(scores > 0.6)
    fitted = clone(model).fit(X, y)
    order = np.random.default_rng(1).permutation(len(X))
    shuffled = clone(model).fit(X.iloc[order], y[order])
    # the same model up to row-order effects in the histogram sums
    np.testing.assert_allclose(shuffled.predict_proba(X), fitted.predict_proba(X), atol=1e-5)
    # pairing the values with other rows (what a bare objective did after a shuffle) differs
    mispaired = X.assign(clv=X.clv.to_numpy()[order])
    wrong = clone(model).fit(mispaired, y).predict_proba(X)
    assert np.max(np.abs(wrong - fitted.predict_proba(X))) > 1e-3


def test_pipeline_grid_search_and_metadata_routing(data):
    X, y, _ = data
    # a ColumnTransformer passes the per-row column through under its own name
    prepare = ColumnTransformer([("scale", StandardScaler(), ["x0", "x1", "x2"])],
                                remainder="passthrough", verbose_feature_names_out=False)
    prepare.set_output(transform="pandas")
    pipe = Pipeline([("prepare", prepare),
                     ("model", LGBMLossClassifier(CHURN, inputs={"clv": "clv"},
                                                  n_estimators=5, **LGB))])
    pipe.fit(X, y)
    assert list(pipe[-1].feature_names_in_) == ["x0", "x1", "x2", "clv"]
    search = GridSearchCV(pipe, {"model__learning_rate": [0.1, 0.3],
                                 "model__num_leaves": [3, 7]}, cv=2).fit(X, y)
    assert search.best_params_["model__num_leaves"] in (3, 7)
    assert search.best_estimator_[-1].get_params()["num_leaves"] in (3, 7)

    # the same values as metadata of a plain array X: routed and split by fold
    features = X[["x0", "x1", "x2"]].to_numpy()
    with sklearn.config_context(enable_metadata_routing=True):
        model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=5, **XGB)
        model.set_fit_request(clv=True).set_predict_request(clv=True)
        model.set_score_request(clv=True)
        result = cross_validate(Pipeline([("model", model)]), features, y, cv=3,
                                params={"clv": X.clv.to_numpy()}, return_estimator=True)
        assert len(result["estimator"]) == 3
        assert np.all(result["test_score"] > 0.6)
    by_keyword = clone(model).fit(features, y, clv=X.clv.to_numpy())
    by_column = clone(model).fit(X, y)
    np.testing.assert_array_equal(by_keyword.predict_raw(features), by_column.predict_raw(X))


def test_pickle_clone_and_params(data):
    X, y, _ = data
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=5, max_depth=2,
                              nthread=1)
    assert model.get_params()["max_depth"] == 2
    assert clone(model).set_params(max_depth=3, learning_rate=0.2).get_params()["max_depth"] == 3
    model.fit(X, y)
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("make, given", [(XGBLossRegressor, XGB), (LGBMLossRegressor, LGB)])
def test_the_hessian_policys_numbers_reach_the_objective(data, make, given):
    # hessian_constant and hessian_scale went to the library as booster parameters, unused:
    # (1000 units of label: a step of the mean gradient, 1 per unit, leaves the model short)
    X, _, counts = data
    y = 1000.0 * counts
    features = X.drop(columns="clv")

    def raw(**options):
        model = make("asymmetric_l1(y, p, 4, 1)", hessian="constant", refit=False,
                     n_estimators=5, **options, **given)
        return model.fit(features, y).predict(features)

    default = raw()
    np.testing.assert_allclose(raw(hessian_constant=0.01), raw(hessian_scale=0.01), rtol=1e-6)
    assert np.max(np.abs(raw(hessian_constant=0.01) - default)) > 5
    assert np.max(np.abs(raw(hessian_constant="auto") - default)) > 5
    assert clone(make(hessian_constant="auto")).get_params()["hessian_constant"] == "auto"


# ---------------------------------------------------------------------------- decisions
def test_classifier_decides_with_a_per_row_cost(data):
    X, y, _ = data
    # decline (d = 1) a customer: lose the fee 3 if they would not have churned; approve:
    # lose their clv if they churn
    cost = "where(d == 1, where(y == 1, 0, 3), where(y == 1, value, 0))"
    model = XGBLossClassifier(n_estimators=8, decision_cost=cost,
                              decision_inputs={"value": "clv"}, **XGB).fit(X, y)
    assert list(model.feature_names_in_) == ["x0", "x1", "x2", "clv"]
    p = model.predict_proba(X)[:, 1]
    expected = (p * X.clv.to_numpy() > (1 - p) * 3).astype(int)
    np.testing.assert_array_equal(model.predict(X), expected)
    np.testing.assert_array_equal(model.decide(X), expected)
    # another cost, its inputs given to decide
    flat = model.decide(X, cost, value=np.full(len(X), 3.0))
    np.testing.assert_array_equal(flat, (p > 0.5).astype(int))


def test_regressor_decides_from_out_of_fold_residuals(data):
    X, _, counts = data
    features = X[["x0", "x1"]]
    # critical ratio 5/7: 240 * 5/7 is not a whole number, so the cost's minimiser over the
    # outcomes is one residual's value, not a flat stretch between two
    model = XGBLossRegressor(n_estimators=8, decision_cost="asymmetric_l1(y, d, 5, 2)",
                             decision_cv=3, **XGB).fit(features, counts)
    assert model.residuals_.shape == (len(X),)
    in_sample = counts - model.predict_raw(features)
    assert not np.allclose(model.residuals_, in_sample)  # held out, not training residuals
    stock = model.predict(features)
    shift = np.quantile(model.residuals_, 5 / 7, method="inverted_cdf")
    np.testing.assert_allclose(stock, model.predict_raw(features) + shift, atol=1e-8)
    # with sample weights each residual is as likely as its row's weight: rows of weight 0
    # (here: labels made useless) do not move the decision
    weight = np.where(np.arange(len(X)) % 2 == 0, 1.0, 0.0)
    noisy = np.where(weight > 0, counts, counts + 50.0)
    weighted = XGBLossRegressor(n_estimators=8, decision_cost="asymmetric_l1(y, d, 5, 2)",
                                decision_cv=3, **XGB).fit(features, noisy, sample_weight=weight)
    np.testing.assert_array_equal(weighted.residual_weights_, weight)
    kept = weighted.residuals_[weight > 0]
    np.testing.assert_allclose(
        weighted.predict(features),
        weighted.predict_raw(features) + np.quantile(kept, 5 / 7, method="inverted_cdf"),
        atol=1e-8)
    with pytest.raises(lossdsl.LossError, match="held-out residuals"):
        XGBLossRegressor(n_estimators=3, **XGB).fit(features, counts).decide(
            features, "asymmetric_l1(y, d, 5, 2)")


# ---------------------------------------------------------------------------- CatBoost
@pytest.mark.parametrize("given", [{}, {"cat_features": ["shop"]}])
def test_catboost_estimators_train_on_categorical_features(given):
    """A DataFrame's category columns are CatBoost's cat_features (the Pool was built
    without them: CatBoost refused the column, with or without cat_features=)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200),
                      "shop": pd.Categorical(rng.choice(["a", "b", "c"], 200))})
    y = X.x.to_numpy() + 3.0 * (X.shop == "a").to_numpy() + rng.normal(size=200)
    model = CatBoostLossRegressor("asymmetric_l1(y, p, 4, 1)", n_estimators=30, depth=2,
                                  thread_count=1, **given).fit(X, y)
    probe = pd.DataFrame({"x": [0.0, 0.0], "shop": pd.Categorical(["a", "b"],
                                                                  categories=["a", "b", "c"])})
    first, second = model.predict(probe)
    assert first > second + 1.0  # the shop is used


def test_catboost_estimators(data):
    X, y, counts = data
    features = X[["x0", "x1"]]
    classifier = CatBoostLossClassifier(n_estimators=5, depth=2, thread_count=1)
    classifier.fit(features, y)
    np.testing.assert_allclose(classifier.predict_proba(features)[:, 1],
                               sigmoid(classifier.predict_raw(features)), rtol=1e-12)
    assert set(classifier.predict(features)) <= {0, 1}
    regressor = CatBoostLossRegressor(n_estimators=5, depth=2, thread_count=1)
    regressor.fit(features, counts)
    assert regressor.predict(features).shape == (len(X),)
    assert abs(regressor.booster_.init_score - counts.mean()) < 1e-9
    with pytest.raises(lossdsl.LossError, match="per row"):
        CatBoostLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=2).fit(X, y)


def test_catboost_evaluation_rows_start_where_the_model_starts(data):
    # CatBoost's validation loss is that of the model's own raw scores: the evaluation
    # pool starts from the training rows' init score, not from its own labels' optimum
    X, _, counts = data
    features = X[["x0", "x1"]]
    shifted = counts[160:] + 5.0  # an optimal constant far from the training rows'
    regressor = CatBoostLossRegressor("half_mse(y, p)", n_estimators=4, depth=2,
                                      thread_count=1)
    regressor.fit(features.iloc[:160], counts[:160], eval_set=[(features.iloc[160:], shifted)])
    (history,) = regressor.booster_.model.get_evals_result()["validation"].values()
    raw = regressor.predict_raw(features.iloc[160:])
    assert history[-1] == pytest.approx(np.mean(0.5 * (raw - shifted) ** 2), rel=1e-6)


# ---------------------------------------------------------------------------- sklearn checks
@pytest.mark.parametrize("estimator", [
    XGBLossRegressor(n_estimators=5, learning_rate=0.5, nthread=1),
    XGBLossClassifier(n_estimators=5, learning_rate=0.5, nthread=1),
], ids=["regressor", "classifier"])
def test_scikit_learn_estimator_checks(estimator):
    # every check applies and passes (sample-weight equivalence too: DMatrix and booster
    # run on one thread, so XGBoost's sketch does not depend on the thread split), but
    # scikit-learn holds weighted and repeated rows to rtol=1e-7, and XGBoost keeps each
    # row's gradient in float32: a weight of 3 is round32(3 g), three repeated rows sum 3 g
    # exactly, and five rounds of three-class probabilities drift 3e-7 apart (the last bit
    # of a kernel decides it). The classifier is held to 1e-6 below instead.
    results = check_estimator(estimator, on_fail=None)
    float32_bound = ("check_sample_weight_equivalence_on_dense_data",
                     "check_sample_weight_equivalence_on_sparse_data")
    failed = [(r["check_name"], str(r["exception"])[:300]) for r in results
              if r["status"] == "failed"
              and not (isinstance(estimator, XGBLossClassifier) and r["check_name"]
                       in float32_bound)]
    assert not failed
    if isinstance(estimator, XGBLossClassifier):
        weighted, repeated = _fitted_on_weights_and_repeats(estimator)
        np.testing.assert_allclose(weighted, repeated, rtol=1e-6, atol=1e-9)


def _fitted_on_weights_and_repeats(estimator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of ``estimator`` fitted with integer sample weights and fitted on rows
    repeated as often, as scikit-learn's check_sample_weight_equivalence makes them."""
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    weights = rng.randint(0, 5, size=15)
    repeated = clone(estimator).fit(X.repeat(weights, axis=0), y.repeat(weights))
    weighted = clone(estimator).fit(X, y, sample_weight=weights)
    return weighted.predict_proba(X), repeated.predict_proba(X)


def test_import_without_the_libraries(monkeypatch):
    # the libraries are imported on fit: the module imports (and builds estimators) without
    for name in ("xgboost", "lightgbm", "catboost", "lossdsl.xgboost", "lossdsl.lightgbm",
                 "lossdsl.catboost"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(lossdsl, "estimators", sys.modules["lossdsl.estimators"])
    monkeypatch.delitem(sys.modules, "lossdsl.estimators")
    fresh = importlib.import_module("lossdsl.estimators")
    model = fresh.XGBLossRegressor(n_estimators=3)
    with pytest.raises(ImportError):
        model.fit(np.array([[0.0], [1.0]]), np.array([0.0, 1.0]))


def test_eval_set_and_early_stopping(data):
    X, y, _ = data
    train, valid = X.iloc[:160], X.iloc[160:]
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=40,
                              learning_rate=0.5, early_stopping_rounds=3, **XGB)
    model.fit(train, y[:160], eval_set=[(valid, y[160:])])
    rounds = model.booster_.num_boosted_rounds()
    assert rounds < 40
    # the validation loss of the kept model is the best one recorded
    history = next(iter(model.booster_.lossdsl_evals.values()))
    assert min(next(iter(history.values()))) == pytest.approx(float(
        model.booster_.attr("best_score")))
    with pytest.raises(lossdsl.LossError, match="eval_set"):
        clone(model).fit(train, y[:160])


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_an_eval_set_without_early_stopping_only_watches(data, kind):
    """Without early_stopping_rounds the model keeps every round, as xgb.train / lgb.train
    do: an eval_set (a test set watched while training) must not choose the model (it was
    cut at, or predicted with, the best evaluation round)."""
    X, y, _ = data
    train, valid = X.iloc[:160], X.iloc[160:]
    make = (lambda: XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=30,
                                      learning_rate=0.5, **XGB)) if kind == "xgboost" else (
        lambda: LGBMLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=30,
                                   learning_rate=0.5, num_threads=1))
    plain = make().fit(train, y[:160])
    watched = make().fit(train, y[:160], eval_set=[(valid, y[160:])])
    history = next(iter(next(iter(watched.booster_.lossdsl_evals.values())).values()))
    assert len(history) == 30 and int(np.argmin(history)) < 29  # a best round before the end
    np.testing.assert_array_equal(watched.predict_raw(valid), plain.predict_raw(valid))


def _categorical_rows(n: int, listed: list[str], rng: np.random.Generator):
    """A frame with a numeric and a categorical column whose dtype lists its categories in
    the order ``listed``, and labels that depend on the category (a, b, c, d: 0, 3, 6, 9)."""
    names = rng.choice(["a", "b", "c", "d"], n)
    frame = pd.DataFrame({"x": rng.normal(size=n),
                          "k": pd.Categorical(names, categories=listed)})
    codes = pd.Categorical(names, categories=["a", "b", "c", "d"]).codes
    return frame, frame.x.to_numpy() + 3.0 * codes + 0.3 * rng.normal(size=n)


def test_xgboost_validation_categories_listed_in_another_order():
    """A validation frame whose categorical dtype lists the categories in another order
    than the training frame's is the same data: XGBoost re-codes it by the model's
    categories. The per-round slices (validation leaves) and the early-stopping cut lost
    those categories (XGBoost 3.2's slice drops them): the recorded validation MAE was 5.57
    for a true 2.27, training stopped after 1 round, and the cut model predicted other
    leaves for the frame (9.3 off)."""
    rng = np.random.default_rng(0)
    X, y = _categorical_rows(600, ["a", "b", "c", "d"], rng)
    reordered, valid_y = _categorical_rows(200, ["d", "c", "b", "a"], rng)
    same = reordered.assign(k=pd.Categorical(np.asarray(reordered.k),
                                             categories=["a", "b", "c", "d"]))
    fitted = [XGBLossRegressor("mae", n_estimators=60, learning_rate=0.3,
                               early_stopping_rounds=4, **XGB).fit(X, y,
                                                                   eval_set=[(valid, valid_y)])
              for valid in (reordered, same)]
    rounds = [m.booster_.num_boosted_rounds() for m in fitted]
    assert rounds[0] == rounds[1] > 5
    histories = [m.booster_.lossdsl_evals["validation_0"]["lossdsl"] for m in fitted]
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-12)
    for model in fitted:
        # the recorded loss of the kept model is its MAE on the validation rows
        mae = np.mean(np.abs(model.predict(reordered) - valid_y))
        assert min(histories[0]) == pytest.approx(mae, rel=1e-5)
        np.testing.assert_array_equal(model.predict(reordered), model.predict(same))


def test_eval_set_rows_are_checked_like_training_rows(data):
    """A NaN label or per-row value in a validation set gives a NaN validation loss, which
    never counts as an improvement: early stopping kept round 1, silently (XGBoost raised
    its own C++ error for the label); a validation set's missing per-row column was told to
    come by keyword, and a length mismatch blamed rows=."""
    X, y, _ = data
    train, valid = X.iloc[:160], X.iloc[160:].copy()
    valid.iloc[5, valid.columns.get_loc("clv")] = np.nan
    for make in (XGBLossClassifier, LGBMLossClassifier):
        model = make(CHURN, inputs={"clv": "clv"}, n_estimators=10, early_stopping_rounds=3)
        with pytest.raises(lossdsl.LossError, match=r"'clv' are NaN on 1 row\(s\) \(the first at "
                                                    r"row 5\)"):
            model.fit(train, y[:160], eval_set=[(valid, y[160:])])
    counts = np.arange(80.0)
    counts[3] = np.nan
    regressor = XGBLossRegressor("mae", n_estimators=5, **XGB)
    with pytest.raises(lossdsl.LossError, match=r"eval_set\[0\]: 1 label\(s\) are NaN"):
        regressor.fit(train[["x0"]], y[:160], eval_set=[(X.iloc[160:][["x0"]], counts)])
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=3, **XGB)
    with pytest.raises(lossdsl.LossError, match=r"eval_set\[0\] has no per-row values for "
                                                r"'clv'.*columns of its own DataFrame"):
        model.fit(train[["x0", "x1"]], y[:160], clv=train.clv,
                  eval_set=[(X.iloc[160:][["x0", "x1"]], y[160:])])
    with pytest.raises(ValueError, match=r"eval_set\[0\]: X has 80 rows but y has 77"):
        model.fit(train, y[:160], eval_set=[(X.iloc[160:], y[160:-3])])


def test_a_keyword_series_in_another_order_than_x_is_refused(data):
    X, y, _ = data
    clv = X.clv
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=3, **XGB)
    with pytest.raises(lossdsl.LossShapeError, match="'X' and 'clv' are pandas objects"):
        model.fit(X[["x0", "x1"]], y, clv=clv.sample(frac=1.0, random_state=1))
    fitted = model.fit(X[["x0", "x1"]], y, clv=clv)
    with pytest.raises(lossdsl.LossShapeError, match="different indexes"):
        fitted.decide(X[["x0", "x1"]], CHURN.replace("z", "d"), clv=clv[::-1])


def test_decide_refuses_cost_inputs_and_groups_in_another_order_than_x(data):
    """Inputs of decide's cost that are not the loss's own sources, and groups=, were paired
    with X's rows by position whatever their index (predict_proba refused the same Series)."""
    X, y, counts = data
    features = X[["x0", "x1"]]
    cost = "where(d == 1, 3, where(y == 1, value, 0))"
    model = XGBLossClassifier(n_estimators=3, **XGB).fit(features, y)
    shuffled = X.clv.sample(frac=1.0, random_state=2)
    with pytest.raises(lossdsl.LossShapeError, match="'X' and 'value' are pandas objects"):
        model.decide(features, cost, value=shuffled)
    p = model.predict_proba(features)[:, 1]
    np.testing.assert_array_equal(model.decide(features, cost, value=X.clv),
                                  (p * X.clv.to_numpy() > 3).astype(int))
    regressor = XGBLossRegressor(n_estimators=3, decision_cost="asymmetric_l1(y, d, 5, 2)",
                                 decision_cv=2, **XGB).fit(features, counts)
    with pytest.raises(lossdsl.LossShapeError, match="'X' and 'under' are pandas objects"):
        regressor.decide(features, "asymmetric_l1(y, d, under, 2)", under=shuffled)
    groups = pd.Series(np.arange(len(X)) % 2, index=X.index)
    with pytest.raises(lossdsl.LossShapeError, match="'X' and 'groups' are pandas objects"):
        regressor.decide(features, groups=groups.sample(frac=1.0, random_state=3),
                         residual_groups=np.arange(len(X)) % 2)


def test_a_link_read_through_a_threshold_no_training_row_crosses_asks_for_the_input():
    """The link's dependence on clv was probed with the training values rolled and doubled
    only; no row crossed clv > 1000, so predict used the first row's clv for every row."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.uniform(0, 10, 300), "clv": rng.uniform(50, 400, 300)})
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(X.a - 4))).astype(int)
    model = XGBLossClassifier(
        "where(clv > 1000, cost_sensitive_bce(y, z, 10, 1), bce_logits(y, z))",
        inputs={"clv": "clv"}, n_estimators=5, max_depth=2, nthread=1).fit(X, y)
    new = pd.DataFrame({"a": [2.0, 2.0], "clv": [100.0, 5000.0]})
    s = sigmoid(model.predict_raw(new))
    # the cost-weighted loss's probability: s / (s + 10 (1 - s)) where clv > 1000
    np.testing.assert_allclose(model.predict_proba(new)[:, 1],
                               [s[0], s[1] / (s[1] + 10 * (1 - s[1]))], rtol=1e-9)


def test_fitted_with_a_keyword_predicts_from_the_column_of_x(data):
    """A per-row input given to fit by keyword may be a column of X at predict (as the docs
    say): it was taken for a feature unseen at fit time (scikit-learn's ValueError)."""
    X, y, _ = data
    model = XGBLossClassifier(CHURN, inputs={"clv": "clv"}, n_estimators=3, **XGB)
    model.fit(X[["x0", "x1"]], y, clv=X.clv)
    np.testing.assert_array_equal(model.predict_proba(X[["x0", "x1", "clv"]]),
                                  model.predict_proba(X[["x0", "x1"]], clv=X.clv))


def test_a_per_row_input_the_link_does_not_use_is_not_asked_for_at_predict():
    """clv scales the loss but not its link: the probabilities and the mean come from the
    scores alone, so predict_proba and predict work on X without the column (they asked
    for clv and failed, docs/estimators.md section 3)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "clv": rng.uniform(50, 2000, 300)})
    y = (X.a + rng.logistic(size=300) > 0).astype(int)
    model = XGBLossClassifier("clv*bce_logits(y, z)", inputs={"clv": "clv"}, n_estimators=5,
                              nthread=1).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1],
                               1 / (1 + np.exp(-model.predict_raw(X))), rtol=1e-12)
    counts = rng.poisson(np.exp(X.a)).astype(float)
    regressor = LGBMLossRegressor("clv*poisson_log(y, z)", inputs={"clv": "clv"},
                                  n_estimators=5, num_threads=1).fit(X, counts)
    np.testing.assert_allclose(regressor.predict(X), np.exp(regressor.predict_raw(X)),
                               rtol=1e-12)


def test_a_cost_matrix_in_decision_inputs_is_a_table():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 2)), rng.integers(0, 3, 300)
    C = np.array([[0, 1, 5], [2, 0, 1], [20, 4, 0.0]])
    model = XGBLossClassifier(n_estimators=5, nthread=1, decision_cost="pick(rowof(C, y), d)",
                              decision_inputs={"C": C}).fit(X, y)
    np.testing.assert_array_equal(
        model.predict(X), lossdsl.decide("pick(rowof(C, y), d)",
                                         probabilities=model.predict_proba(X), C=C))


@pytest.mark.parametrize("make", [lambda: XGBLossRegressor(n_estimators=3, nthread=1),
                                  lambda: LGBMLossRegressor(n_estimators=3, num_threads=1,
                                                            init_score=False),
                                  lambda: XGBLossClassifier(n_estimators=3, nthread=1)])
def test_negative_sample_weights_are_refused(make):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), rng.normal(size=60)
    weight = np.ones(60)
    weight[3] = -1.0
    model = make()
    labels = (y > 0).astype(int) if isinstance(model, XGBLossClassifier) else y
    with pytest.raises(ValueError, match="Negative values"):
        model.fit(X, labels, sample_weight=weight)


def test_a_binary_loss_given_three_classes_is_refused_before_its_labels_are_read():
    """It indexed class_values (two entries) with class 2: a raw IndexError."""
    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(lossdsl.LossError, match="is a binary loss .* but y has 3 classes"):
        XGBLossClassifier("bce_logits(y, z)", n_estimators=2, nthread=1).fit(
            X, np.repeat(["a", "b", "c"], 10))


@pytest.mark.parametrize("make", [
    lambda **kw: XGBLossRegressor(nthread=1, **kw),
    lambda **kw: LGBMLossRegressor(num_threads=1, **kw)])
def test_decision_cost_with_early_stopping(make):
    """The out-of-fold models behind decision_cost's residuals have no evaluation set: they
    train as many rounds as the early-stopped model uses (they were given
    early_stopping_rounds without one, and fit raised)."""
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(400, 3)), rng.normal(size=(150, 3))
    y, yv = 3 * X[:, 0] + rng.gamma(2, 1, 400), 3 * Xv[:, 0] + rng.gamma(2, 1, 150)
    model = make(loss="half_mse(y, p)", n_estimators=200, learning_rate=0.3,
                 early_stopping_rounds=5, decision_cost="asymmetric_l1(y, d, 5, 1)",
                 decision_cv=3).fit(X, y, eval_set=[(Xv, yv)])
    assert model._rounds_used() < 200
    assert model.residuals_.shape == (400,)
    decided = model.predict(Xv)
    assert np.all(decided >= model.predict_raw(Xv) - 1e-9)  # a 5:1 cost orders above the mean
