"""lossdsl.scipy: fitted models against known solutions (least squares, quantile LP, logistic)."""

import numpy as np
import pytest

optimize = pytest.importorskip("scipy.optimize")
import lossdsl  # noqa: E402
import lossdsl.scipy as ls  # noqa: E402


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0 + rng.normal(size=200)
    return X, y


def test_least_squares_matches_lstsq(regression):
    X, y = regression
    model = ls.linear_model("half_mse(y, p)", X, y)
    design = np.hstack([X, np.ones((200, 1))])
    expected = np.linalg.lstsq(design, y, rcond=None)[0]
    for options in ({"hessp": model.hessp, "method": "trust-ncg"},
                    {"hess": model.hess, "method": "trust-exact"},
                    {"method": "L-BFGS-B"}):
        result = optimize.minimize(model.fun, model.x0, jac=model.jac, tol=1e-12, **options)
        np.testing.assert_allclose(result.x, expected, rtol=1e-5, atol=1e-6)
    coef, intercept = model.unpack(expected)
    np.testing.assert_allclose(model.predict(expected), X @ coef + intercept)


def test_ridge_matches_closed_form(regression):
    X, y = regression
    model = ls.linear_model("half_mse(y, p)", X, y, fit_intercept=False, l2=0.5,
                            reduction="sum")
    result = optimize.minimize(model.fun, model.x0, jac=model.jac,
                               hessp=model.hessp, method="trust-ncg", tol=1e-12)
    expected = np.linalg.solve(X.T @ X + 0.5 * np.eye(3), X.T @ y)
    np.testing.assert_allclose(result.x, expected, rtol=1e-6)


def test_quantile_regression_matches_linear_program(regression):
    X, y = regression
    alpha = 0.8
    model = ls.linear_model(f"quantile(y, p, {alpha})", X, y)
    result = optimize.minimize(model.fun, model.x0, jac=model.jac, method="L-BFGS-B")
    n, d = X.shape[0], X.shape[1] + 1
    # min sum alpha u + (1 - alpha) v  s.t.  X1 beta + u - v = y,  u, v >= 0
    cost = np.concatenate([np.zeros(d), np.full(n, alpha), np.full(n, 1 - alpha)]) / n
    equality = np.hstack([np.hstack([X, np.ones((n, 1))]), np.eye(n), -np.eye(n)])
    bounds = [(None, None)] * d + [(0, None)] * (2 * n)
    program = optimize.linprog(cost, A_eq=equality, b_eq=y, bounds=bounds)
    assert result.fun == pytest.approx(program.fun, rel=1e-4)
    np.testing.assert_allclose(result.x, program.x[:d], atol=0.02)
    assert np.mean(y <= model.predict(result.x)) == pytest.approx(alpha, abs=0.02)


def test_weighted_logistic_regression_score_equations():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 2))
    y = (X @ np.array([2.0, -1.0]) + 0.5 + rng.logistic(size=300) > 0).astype(float)
    weight = rng.uniform(0.5, 2.0, size=300)
    model = ls.linear_model("bce_logits(y, p)", X, y, sample_weight=weight)
    result = optimize.minimize(model.fun, model.x0, jac=model.jac, hessp=model.hessp,
                               method="trust-ncg", options={"gtol": 1e-10})
    probability = 1 / (1 + np.exp(-model.predict(result.x)))
    design = np.hstack([X, np.ones((300, 1))])
    # at the weighted MLE the score X1^T w (p - y) is zero
    np.testing.assert_allclose(design.T @ (weight * (probability - y)), 0, atol=1e-6)


def test_multiclass_linear_model():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 2))
    classes = np.argmax(X @ np.array([[2.0, 0.0, -2.0], [0.0, 2.0, -1.0]]), axis=1)
    model = ls.linear_model("sparse_cce_logits(y, z)", X, classes, l2=1e-2)
    assert model.outputs == 3 and model.n_params == 9
    result = optimize.minimize(model.fun, model.x0, jac=model.jac, method="L-BFGS-B")
    coef, intercept = model.unpack(result.x)
    assert coef.shape == (2, 3) and intercept.shape == (3,)
    accuracy = np.mean(np.argmax(model.predict(result.x), axis=1) == classes)
    assert accuracy > 0.9
    # the gradient is the chain rule through X: compare with finite differences
    x = rng.normal(size=9)
    step = 1e-6
    numeric = [(model.fun(x + step * e) - model.fun(x - step * e)) / (2 * step)
               for e in np.eye(9)]
    np.testing.assert_allclose(model.jac(x), numeric, rtol=1e-5, atol=1e-7)


def test_objective_over_an_input():
    y = np.array([0.0, 1.0, 5.0])
    problem = ls.objective("huber(y, p) + 0.5*l2(p)", "p", y=y, reduction="sum")
    result = optimize.minimize(problem.fun, problem.x0, jac=problem.jac, hessp=problem.hessp,
                               method="trust-ncg", tol=1e-12)
    # stationarity: huber'(p - y) + p = 0  →  p = y/2 inside delta, p = 1 for y = 5
    np.testing.assert_allclose(result.x, [0.0, 0.5, 1.0], atol=1e-8)
    compiled = lossdsl.compile("huber(y, p) + 0.5*l2(p)", reduction="sum")
    np.testing.assert_allclose(problem.hess_diag(result.x), compiled.hessian("p", y=y, p=result.x))
    value, gradient = problem.fun_and_jac(result.x)
    assert value == pytest.approx(compiled(y=y, p=result.x))


def test_linear_model_reuses_its_row_gradient_and_returns_fresh_jacobians(regression):
    # the per-row gradient is written into one array every evaluation; what SciPy keeps
    # (BFGS holds the previous jacobian to difference it) is a new array each time
    X, y = regression
    model = ls.linear_model("huber(y, p)", X, y, l2=0.1)
    fresh = ls.linear_model("huber(y, p)", X, y, l2=0.1)
    rng = np.random.default_rng(5)
    points = [rng.normal(size=model.n_params) for _ in range(4)]
    jacobians = []
    for x in points:
        value, jacobian = model.fun_and_jac(x)
        jacobians.append(jacobian)
        # a new model's first evaluation allocates its row gradient
        expected_value, expected = ls.linear_model("huber(y, p)", X, y,
                                                   l2=0.1).fun_and_jac(x)
        assert value == expected_value
        np.testing.assert_array_equal(jacobian, expected)
    for x, jacobian in zip(points, jacobians):  # earlier results are not overwritten
        np.testing.assert_array_equal(jacobian, ls.linear_model("huber(y, p)", X, y,
                                                                l2=0.1).jac(x))
    result = optimize.minimize(model.fun, model.x0, jac=model.jac, method="BFGS", tol=1e-10)
    reference = optimize.minimize(fresh.fun, fresh.x0, jac=fresh.jac, method="BFGS",
                                  tol=1e-10)
    np.testing.assert_array_equal(result.x, reference.x)


def test_string_labels_of_a_loss_over_classes_are_refused_with_what_to_do():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(lossdsl.LossError, match="class indices"):
        ls.linear_model("sparse_cce_logits", X, np.array(["a", "b", "a", "b", "a", "b"]))


def test_a_compiled_loss_keeps_its_reduction(regression):
    """A CompiledLoss with reduction="sum" is minimised as that sum (objective and
    linear_model recompiled it with the mean, silently); an explicit reduction wins."""
    X, y = regression
    summed = lossdsl.compile("mse(y, p)", reduction="sum")
    p = np.zeros_like(y)
    assert ls.objective(summed, "p", y=y).fun(p) == pytest.approx(summed(y=y, p=p), rel=1e-12)
    assert ls.objective(summed, "p", reduction="mean", y=y).fun(p) == pytest.approx(
        summed(y=y, p=p) / y.size, rel=1e-12)
    model = ls.linear_model(summed, X, y)
    assert model.compiled.reduction == "sum"


def test_points_of_the_wrong_length_are_refused(regression):
    """A 5-vector given to a model of 4 parameters was cut to 4 unseen (its extra entries
    ignored); a shorter one failed with IndexError, an objective's with reshape's
    ValueError."""
    X, y = regression
    model = ls.linear_model("mse(y, p)", X, y)
    assert model.n_params == 4
    # the value at the right length, against the formula
    x = np.array([1.0, 2.0, 0.5, -1.0])
    assert model.fun(x) == pytest.approx(np.mean((X @ x[:3] + x[3] - y) ** 2), rel=1e-12)
    for wrong in (np.append(x, [99.0, 99.0]), x[:1], np.zeros(0)):
        for method in (model.fun, model.jac, model.unpack, model.predict):
            with pytest.raises(lossdsl.LossShapeError, match="this objective takes 4"):
                method(wrong)
        with pytest.raises(lossdsl.LossShapeError, match="direction v"):
            model.hessp(x, wrong)
    problem = ls.objective("mse(y, p)", "p", y=y)
    for wrong in (np.zeros(201), np.zeros(199)):
        with pytest.raises(lossdsl.LossShapeError, match="this objective takes 200"):
            problem.fun(wrong)
        with pytest.raises(lossdsl.LossShapeError, match="direction v"):
            problem.hessp(problem.x0, wrong)


def test_inputs_named_like_objective_keywords_go_in_inputs():
    """objective("mse(target, p)", "p", target=t) read t as the kernel target (a raw
    ValueError); such an input is refused as a keyword and given in inputs=."""
    t = np.array([1.0, -2.0, 4.0])
    with pytest.raises(lossdsl.LossError, match=r"inputs=\{'target': \.\.\.\}"):
        ls.objective("mse(target, p)", "p", target=t)
    problem = ls.objective("shape*(target - p)^2", "p", reduction="sum",
                           inputs={"target": t, "shape": 2.0})
    p = np.array([0.5, 0.0, 1.0])
    assert problem.fun(p) == pytest.approx(2.0 * np.sum((t - p) ** 2), rel=1e-12)
    result = optimize.minimize(problem.fun, problem.x0, jac=problem.jac, method="L-BFGS-B",
                               tol=1e-12)
    np.testing.assert_allclose(result.x, t, atol=1e-6)
    with pytest.raises(lossdsl.LossError, match="given twice"):
        ls.objective("mse(y, p)", "p", y=t, inputs={"y": t})


def test_a_per_class_input_asks_for_its_shape():
    labels = np.array([0.0, 1.0, 2.0, 1.0])
    with pytest.raises(lossdsl.LossError, match=r"pass shape=\(4, K\)"):
        ls.objective("sparse_cce_logits(y, z)", "z", y=labels)
    problem = ls.objective("sparse_cce_logits(y, z)", "z", y=labels, shape=(4, 3))
    z = np.arange(12.0).reshape(4, 3) / 7
    expected = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(4), labels.astype(int)])
    assert problem.fun(z.reshape(-1)) == pytest.approx(expected, rel=1e-12)


def test_a_sparse_or_text_design_or_a_bad_l2_is_a_loss_error(regression):
    """Each was a raw ValueError from np.asarray or float(); a negative l2 was accepted (an
    objective unbounded below)."""
    import scipy.sparse

    X, y = regression
    with pytest.raises(lossdsl.LossShapeError, match="scipy.sparse matrix.*LossRegressor"):
        ls.linear_model("mse", scipy.sparse.csr_matrix(X), y)
    with pytest.raises(lossdsl.LossShapeError, match="X must be numbers"):
        ls.linear_model("mse", np.full((200, 3), "a"), y)
    for l2 in ("a", -1.0, float("nan"), float("inf")):
        with pytest.raises(lossdsl.LossError, match="expected a finite number >= 0"):
            ls.linear_model("mse", X, y, l2=l2)


def test_predict_on_new_rows_checks_their_width():
    """X of another width than the training X reached matmul: a raw ValueError."""
    X = np.random.default_rng(0).normal(size=(20, 2))
    model = ls.linear_model("half_mse(y, p)", X, np.ones(20))
    with pytest.raises(lossdsl.LossShapeError, match=r"\(rows, 2\) matrix"):
        model.predict(model.x0, np.ones((4, 5)))
    np.testing.assert_allclose(model.predict(np.array([1.0, 2.0, 0.5]), np.ones((3, 2))),
                               np.full(3, 3.5))
