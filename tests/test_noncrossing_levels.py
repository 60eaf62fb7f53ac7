"""Non-crossing levels (``quantile_noncrossing``, ``expectile_noncrossing``) and what they
are built on: ``partnersum(e)``, each class's sum over its partner classes, and
``classnum()``, the class index, which compares a pair's positions.

Every number is compared with an independent reference: JAX's autodiff (x64) of the same
formulas written by hand with a cumulative sum over the columns (value, gradient and the
diagonal of the full Hessian), and XGBoost's own training loop for the trained levels.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import lossdsl

LEVELS = np.array([0.1, 0.3, 0.5, 0.9])
QUANTILE = "quantile_noncrossing(y, z, a)"
EXPECTILE = "expectile_noncrossing(y, z, a)"
# a general summand: the classes above k (partner(classnum()) > classnum()), values read at
# the partner (sin, a square), a nonlinear function of each class's partner sum (exp), so
# the Hessian goes through partner sums stored and read at the partner classes
LEVELS_OF = ("where(onehot(0), z, softplus(z)) + partnersum(where(partner(classnum()) < "
             "classnum(), partner(where(onehot(0), z, softplus(z))), 0))")
ABOVE = ("rowsum(exp(0.3*partnersum(where(partner(classnum()) > classnum(), "
         "sin(partner(z))*z, 0.5*partner(z)^2 - z))))")


def inputs(seed: int = 0, rows: int = 6, extreme: bool = False):
    """Labels, scores (N, K) and the levels; ``extreme``: gaps of +-30 and a label exactly
    at a level."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (rows, LEVELS.size))
    y = rng.normal(0.0, 2.0, rows)
    if extreme:
        z[0] = [1.0, -30.0, 30.0, -30.0]
        z[1] = [-2.0, 30.0, 30.0, 30.0]
        z[2, 1:] = 0.0
        y[2] = z[2, 0] + np.log(2.0)  # the label exactly at level 1: q_1 = z_0 + softplus(0)
    return y, z


def arguments(kind: str, y, z) -> dict:
    """The inputs ``kind`` reads (``ABOVE`` reads the scores alone)."""
    return {"z": z} if kind == ABOVE else {"y": y, "z": z, "a": LEVELS}


def reference(y, z, jnp, kind: str):
    """The summed loss written by hand: q = cumsum([z_0, softplus(z_1), ...])."""
    gaps = jnp.where(jnp.arange(z.shape[1]) == 0, z, jnp.logaddexp(0.0, z))
    r = y[:, None] - jnp.cumsum(gaps, axis=1)
    if kind == QUANTILE:
        return jnp.sum(jnp.where(r >= 0, LEVELS * r, (LEVELS - 1) * r))
    if kind == EXPECTILE:
        return jnp.sum(jnp.where(r >= 0, LEVELS, 1 - LEVELS) * r**2)
    width = z.shape[1]
    above = jnp.arange(width)[None, :] > jnp.arange(width)[:, None]  # [k, c]: c above k
    pairs = jnp.where(above[None], jnp.sin(z)[:, None, :] * z[:, :, None],
                      0.5 * z[:, None, :] ** 2 - z[:, :, None])
    pairs = jnp.where(jnp.eye(width, dtype=bool)[None], 0.0, pairs)
    return jnp.sum(jnp.exp(0.3 * jnp.sum(pairs, axis=2)))


@functools.cache
def expected(jax, kind: str, extreme: bool):
    """(value, gradient, diagonal of the full Hessian) of :func:`reference`, jitted."""
    y, z = inputs(extreme=extreme)
    f = functools.partial(reference, y, jnp=jax.numpy, kind=kind)
    at = jax.numpy.asarray(z)
    full = np.asarray(jax.jit(jax.hessian(f))(at)).reshape(z.size, z.size)
    return (float(f(at)), np.asarray(jax.jit(jax.grad(f))(at)),
            full.diagonal().reshape(z.shape))


@pytest.fixture(scope="module")
def compiled():
    return {(text, target): lossdsl.compile(text, reduction="sum", target=target)
            for text in (QUANTILE, EXPECTILE, ABOVE) for target in ("cpu", "parallel")}


@pytest.mark.parametrize("target", ["cpu", "parallel"])
@pytest.mark.parametrize("kind", [QUANTILE, EXPECTILE, ABOVE])
@pytest.mark.parametrize("extreme", [False, True], ids=["ordinary", "extreme"])
def test_value_gradient_and_exact_hessian_match_jax(compiled, jax_x64, target, kind, extreme):
    if kind == ABOVE and extreme:
        pytest.skip("exp of the +-30 scores' squares overflows the reference too")
    y, z = inputs(extreme=extreme)
    loss = compiled[(kind, target)]
    value, gradient = loss.value_and_grad("z", **arguments(kind, y, z))
    _, hessian = loss.grad_and_hessian("z", **arguments(kind, y, z))
    expected_value, expected_gradient, expected_hessian = expected(jax_x64, kind, extreme)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-13)
    # the gap columns' curvature collects every higher level's (a nonzero off-diagonal
    # structure in the full Hessian: compared on its diagonal)
    np.testing.assert_allclose(hessian, expected_hessian, rtol=1e-12, atol=1e-13)


def test_expectile_gap_curvature_is_the_sum_over_higher_levels(compiled):
    """By hand: with the levels' weights w_k (a or 1 - a), d2/dz_c2 sums 2 w_k s_c^2 over
    k >= c, plus the softplus' own curvature times the first derivatives."""
    y, z = inputs(3)
    _, hessian = compiled[(EXPECTILE, "cpu")].grad_and_hessian("z", y=y, z=z, a=LEVELS)
    slope = np.where(np.arange(4) == 0, 1.0, 1 / (1 + np.exp(-z)))
    bend = np.where(np.arange(4) == 0, 0.0, slope * (1 - slope))
    q = np.cumsum(np.where(np.arange(4) == 0, z, np.logaddexp(0, z)), axis=1)
    r = y[:, None] - q
    w = np.where(r >= 0, LEVELS, 1 - LEVELS)
    later = lambda v: np.cumsum(v[:, ::-1], axis=1)[:, ::-1]  # noqa: E731 (sum over k >= c)
    by_hand = later(2 * w) * slope**2 + later(-2 * w * r) * bend
    np.testing.assert_allclose(hessian, by_hand, rtol=1e-12)


def test_levels_never_cross():
    levels = lossdsl.compile(LEVELS_OF, reduction="none")
    z = np.array([[0.0, -40.0, -40.0, -40.0], [5.0, 40.0, -3.0, 0.0], [-1e3, 1.0, 2.0, 3.0]])
    q = levels(z=z)
    assert np.all(np.diff(q, axis=1) >= 0)
    by_hand = np.cumsum(np.where(np.arange(4) == 0, z, np.logaddexp(0, z)), axis=1)
    np.testing.assert_allclose(q, by_hand, rtol=1e-15)


def test_cuda_target_matches_jax(jax_x64):
    # the CUDA simulator (tests/conftest.py) where no GPU is present: small rows
    y, z = inputs(extreme=True)
    loss = lossdsl.compile(EXPECTILE, reduction="sum", target="cuda")
    value, gradient = loss.value_and_grad("z", y=y, z=z, a=LEVELS)
    _, hessian = loss.grad_and_hessian("z", y=y, z=z, a=LEVELS)
    expected_value, expected_gradient, expected_hessian = expected(jax_x64, EXPECTILE, True)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(gradient), expected_gradient, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(hessian), expected_hessian, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", [EXPECTILE, ABOVE])
def test_jax_backend_matches_autodiff_of_the_formula(jax_x64, kind):
    import lossdsl.jax

    jax, jnp = jax_x64, jax_x64.numpy
    y, z = inputs()
    loss = lossdsl.jax.loss(kind, reduction="sum")
    printed = lambda v: loss(**arguments(kind, jnp.asarray(y), v))  # noqa: E731
    by_hand = functools.partial(reference, y, jnp=jnp, kind=kind)
    at = jnp.asarray(z)
    np.testing.assert_allclose(float(printed(at)), float(by_hand(at)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.hessian(printed))(at)),
                               np.asarray(jax.jit(jax.hessian(by_hand))(at)),
                               rtol=1e-12, atol=1e-13)


def test_hessian_through_a_row_reduction_at_the_partner_is_refused():
    """A partner sum whose function also holds a row reduction of the variable (logsumexp):
    read at the partner class its derivative at another class is not implemented."""
    loss = lossdsl.compile("rowsum(exp(partnersum(partner(z)*z) - logsumexp(z)))",
                           reduction="sum")
    z = np.random.default_rng(2).normal(size=(3, 4))
    loss.grad("z", z=z)
    with pytest.raises(lossdsl.LossError, match="not implemented"):
        loss.hessian("z", z=z)


def test_classnum_without_classes_is_a_positioned_error():
    with pytest.raises(lossdsl.LossShapeError, match="number of classes is unknown") as caught:
        lossdsl.compile("classnum()*p")(p=np.zeros(3))
    assert caught.value.line is not None and caught.value.column is not None


def test_partnersum_of_a_vector_is_a_positioned_error():
    with pytest.raises(lossdsl.LossShapeError, match="must have classes") as caught:
        lossdsl.compile("partnersum(partner(p) - p)")(p=np.zeros(3))
    assert caught.value.line is not None and caught.value.column is not None


def test_xgboost_trains_levels_that_never_cross_with_the_lists_coverage():
    """XGBoost's own loop with this gradient (first-order leaves, as the independent lists'
    native-loop test), started at the labels' quantiles: column 0 the lowest, the gap
    columns the inverse softplus of the gaps. On held-out rows the levels never cross and
    cover as the independent lists do."""
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    y = x[:, 0] + rng.normal(size=4000) * (1 + 0.5 * np.abs(x[:, 1]))
    levels = np.array([0.1, 0.5, 0.9])
    train, held = slice(0, 3000), slice(3000, None)
    quantiles = np.quantile(y[train], levels)
    covered = {}
    for text, start in ((QUANTILE, np.r_[quantiles[0], np.log(np.expm1(np.diff(quantiles)))]),
                        ("quantile(y, p, classvec(a))", quantiles)):
        loss = lossdsl.compile(text, reduction="sum")
        score = "z" if text == QUANTILE else "p"

        def objective(margins, data, loss=loss, score=score):
            labels = data.get_label()
            labels = labels if score == "z" else np.repeat(labels[:, None], 3, axis=1)
            gradient = loss.grad(score, **{"y": labels, score: margins.reshape(-1, 3),
                                           "a": levels})
            return np.asarray(gradient).reshape(-1, 3), np.ones((labels.shape[0], 3))

        booster = xgb.train({"max_depth": 3, "eta": 0.3, "num_class": 3,
                             "disable_default_eval_metric": 1},
                            xgb.DMatrix(x[train], y[train],
                                        base_margin=np.tile(start, (3000, 1))),
                            100, obj=objective)
        margins = booster.predict(xgb.DMatrix(x[held], base_margin=np.tile(start, (1000, 1))),
                                  output_margin=True)
        if text == QUANTILE:
            margins = lossdsl.compile(LEVELS_OF, reduction="none")(z=margins)
            assert np.all(np.diff(margins, axis=1) >= 0)
        covered[text] = [np.mean(y[held] < margins[:, k]) for k in range(3)]
    np.testing.assert_allclose(covered[QUANTILE], levels, atol=0.02)
    np.testing.assert_allclose(covered[QUANTILE], covered["quantile(y, p, classvec(a))"],
                               atol=0.02)


def test_start_scores_are_the_levels_quantiles_found_together():
    """init_score solved each column with the others at 0, which for columns that add up
    is not the joint optimum: q_0 came out -0.69 where the 0.1-quantile is -2.20."""
    import lossdsl.xgboost as lx

    rng = np.random.default_rng(3)
    y = rng.normal(0.0, 2.0, 2001)
    levels = np.array([0.1, 0.5, 0.9])
    objective = lx.objective("quantile_noncrossing(y, z, a)", inputs={"a": levels})
    start = objective.init_score(y, num_class=3)
    found = np.cumsum(np.where(np.arange(3) == 0, start, np.logaddexp(0.0, start)))
    # each level where the pinball loss is stationary: the share of labels below it is a_k
    # (to a label), and within the start solver's tolerance of the labels' quantile
    below = np.array([np.mean(y < level) for level in found])
    np.testing.assert_allclose(below, levels, atol=1.5 / y.size)
    np.testing.assert_allclose(found, np.quantile(y, levels, method="inverted_cdf"),
                               atol=2e-3 * np.std(y))


def test_the_command_line_types_the_levels_by_their_declared_rows(tmp_path, capsys):
    """z is read only inside partnersum (no row reduction): the ranks symbolic work uses
    made it a vector, and `lossdsl check` and the golden sources refused the declared rows."""
    from lossdsl import cli

    assert lossdsl.compile(QUANTILE).default_ranks()["z"] == 2
    path = tmp_path / "levels.loss"
    path.write_text("loss levels = quantile_noncrossing(y, z, a)\n")
    assert cli.main(["check", str(path)]) == 0
    assert "ok (1 loss" in capsys.readouterr().out


def _levels_of(z):
    """q = cumsum([z_0, softplus(z_1), ...]) of one row of scores."""
    z = np.atleast_1d(z)
    return np.cumsum(np.where(np.arange(z.size) == 0, z, np.logaddexp(0.0, z)))


def _pinball(y, w, q, a):
    r = y - q
    return np.sum(w * np.where(r >= 0, a * r, (a - 1) * r)) / np.sum(w)


def _expectile(y, w, q, a):
    r = y - q
    return np.sum(w * np.where(r >= 0, a, 1 - a) * r * r) / np.sum(w)


START_CASES = [  # (labels, levels): the first two did not settle in 200 sweeps
    ("normal", [0.1, 0.3, 0.5, 0.9]),
    ("gamma", [0.2, 0.25, 0.7, 0.95]),
    ("normal", [0.1, 0.5, 0.9]),  # settled one label short of the 0.5 quantile
    ("normal", [0.5]),
    ("gamma", [0.05, 0.3, 0.6, 0.8, 0.99]),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("labels, levels", START_CASES)
@pytest.mark.parametrize("kind", [QUANTILE, EXPECTILE])
def test_start_scores_minimise_the_mean_loss(kind, labels, levels, weighted):
    """init_score is the optimum of the mean loss over constant scores: for quantiles the
    lowest mean pinball loss (a minimiser lies at a label: every label tried, by hand), for
    expectiles scipy's minimum of the mean loss over the scores z."""
    from scipy import optimize

    import lossdsl.xgboost as lx

    rng = np.random.default_rng(1)
    y = rng.normal(size=500) if labels == "normal" else rng.gamma(2.0, size=400)
    w = rng.uniform(0.2, 3.0, y.size) if weighted else np.ones(y.size)
    a = np.array(levels)
    start = lx.objective(kind, inputs={"a": a}).init_score(y, w if weighted else None,
                                                           num_class=a.size)
    q = _levels_of(start)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q) > 0)
    if kind == QUANTILE:
        got = [_pinball(y, w, q[k], a[k]) for k in range(a.size)]
        best = [min(_pinball(y, w, t, a[k]) for t in y) for k in range(a.size)]
        np.testing.assert_allclose(got, best, rtol=1e-9)
        if not weighted:  # each level's share of labels below it is a_k, to a label
            below = np.array([np.mean(y < level) for level in q])
            assert np.all(below <= a + 1e-12) and np.all(np.array(
                [np.mean(y <= level) for level in q]) >= a - 1e-12)
        return

    def mean_loss(z):
        return sum(_expectile(y, w, level, a[k]) for k, level in enumerate(_levels_of(z)))

    reference = optimize.minimize(mean_loss, np.r_[np.mean(y), np.zeros(a.size - 1)],
                                  method="BFGS", options={"gtol": 1e-10})
    assert mean_loss(start) <= reference.fun * (1 + 1e-10)
    np.testing.assert_allclose(q, _levels_of(reference.x), atol=1e-5 * np.std(y))


def test_start_levels_flat_between_labels_are_moved_apart():
    """Four labels: the 0.25, 0.5 and 0.75 pinball losses are flat on [1, 2], [2, 3] and
    [3, 4]; a minimiser of each that increases strictly exists, so the start is finite."""
    import lossdsl.xgboost as lx

    y, a = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.25, 0.5, 0.75])
    q = _levels_of(lx.objective(QUANTILE, inputs={"a": a}).init_score(y, num_class=3))
    assert np.all(np.diff(q) > 0)
    np.testing.assert_allclose([_pinball(y, np.ones(4), q[k], a[k]) for k in range(3)],
                               [min(_pinball(y, np.ones(4), t, a[k]) for t in y)
                                for k in range(3)], rtol=1e-9)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("levels, labels, message", [
    ([0.5, 0.5], "normal", "columns 0 and 1 have the same level"),  # was finite unweighted
    ([0.9, 0.1], "normal", "are the levels sorted increasing"),
    ([0.4, 0.5], "counts", "labels tied at both levels' quantiles"),
])
def test_start_levels_with_a_gap_of_zero_are_refused(levels, labels, message, weighted):
    """A best gap of 0 between two levels is a gap column's score of -inf: refused the same
    way with or without weights, saying why."""
    import lossdsl.xgboost as lx

    rng = np.random.default_rng(4)
    y = (rng.normal(size=400) if labels == "normal"
         else np.repeat([0.0, 3.0, 5.0], [150, 150, 100]))
    w = rng.uniform(0.5, 2.0, y.size) if weighted else None
    objective = lx.objective(QUANTILE, inputs={"a": np.array(levels)})
    with pytest.raises(lossdsl.LossError, match=message) as caught:
        objective.init_score(y, w, num_class=2)
    assert isinstance(caught.value, lossdsl.NoFiniteOptimumError)
