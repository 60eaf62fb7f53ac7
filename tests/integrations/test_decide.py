"""lossdsl.decide: each row's cost-minimising decision from a cost formula and a model's
predictions, checked against the hand-written rule for each cost (Bayes rule of a cost
matrix, quantile at the critical ratio, the mean) and against brute force for the rest."""

import numpy as np
import pytest

import lossdsl

MATRIX = "pick(rowof(C, y), d)"
CREDIT = "where(d == 1, where(y == 1, 0, fee), where(y == 1, amount, 0))"
NEWSVENDOR = "asymmetric_l1(y, p, under, over)"
# A shortfall of more than 5 units also costs a fixed 20 (a penalty tier): not convex, with a
# step the derivative does not see.
TIERED = "where(p < y, under*(y - p), over*(p - y)) + where(y - p > 5, 20, 0)"


def tiered(y, p, under, over):
    return np.where(p < y, under * (y - p), over * (p - y)) + np.where(y - p > 5, 20, 0)


def test_cost_matrix_is_the_bayes_rule():
    rng = np.random.default_rng(0)
    C = np.array([[0.0, 1.0, 5.0], [2.0, 0.0, 1.0], [20.0, 4.0, 0.0]])
    P = rng.dirichlet(np.ones(3), size=500)
    d, expected = lossdsl.decide(MATRIX, probabilities=P, C=C, return_expected_cost=True)
    # C[j, k]: the cost of deciding k when the truth is j; E[cost of k] = (P @ C)[:, k]
    assert np.array_equal(d, np.argmin(P @ C, axis=1))
    assert np.allclose(expected, (P @ C).min(axis=1))
    assert len(set(d.tolist())) == 3

    # decisions need not be the classes: a fourth column, "refer to a human", costs 0.7
    C4 = np.column_stack([C, np.full(3, 0.7)])
    d4 = lossdsl.decide(MATRIX, probabilities=P, C=C4, decisions=np.arange(4))
    assert np.array_equal(d4, np.argmin(P @ C4, axis=1))
    assert (d4 == 3).any()


def test_per_row_amounts_change_the_decisions():
    rng = np.random.default_rng(1)
    n = 400
    p_default = rng.uniform(size=n)
    amount = rng.uniform(1, 100, size=n)
    # d = 1 declines: a declined good loan costs the fee; an approved default, its amount
    d = lossdsl.decide(CREDIT, probabilities=p_default, fee=5.0, amount=amount)
    assert np.array_equal(d, (p_default * amount > (1 - p_default) * 5.0).astype(int))
    # the same probabilities with ten times the amounts: more declines, a superset
    d10 = lossdsl.decide(CREDIT, probabilities=np.column_stack([1 - p_default, p_default]),
                         fee=5.0, amount=10 * amount, max_elements=64)  # in blocks of rows
    assert d10.sum() > d.sum() and np.all(d10 >= d)


def test_per_row_cost_rows_for_each_outcome():
    # each row's own cost of each decision, one row of costs per outcome
    rng = np.random.default_rng(5)
    bad, good = rng.uniform(0, 10, (60, 3)), rng.uniform(0, 10, (60, 3))
    p = rng.uniform(size=60)
    d = lossdsl.decide("where(y == 1, pick(bad, d), pick(good, d))", probabilities=p,
                       bad=bad, good=good, decisions=np.arange(3))
    assert np.array_equal(d, np.argmin(p[:, None] * bad + (1 - p[:, None]) * good, axis=1))


def test_newsvendor_with_residuals_is_the_critical_quantile_per_row():
    rng = np.random.default_rng(2)
    mu = rng.normal(50, 10, size=200)
    residuals = rng.gamma(2.0, 3.0, size=401) - 6.0     # skewed, held out
    under = rng.uniform(1, 9, size=200)                 # per-row prices
    d = lossdsl.decide(NEWSVENDOR, predictions=mu, residuals=residuals, under=under, over=1.0)
    ratio = under / (under + 1.0)
    expected = mu + np.array([np.quantile(residuals, r, method="inverted_cdf") for r in ratio])
    assert np.allclose(d, expected, rtol=0, atol=1e-8)


def test_weighted_residuals_give_the_weighted_critical_quantile():
    """residual_weights: each residual as likely as its weight; a residual of weight 0 does
    not count, and integer weights are repeated residuals."""
    rng = np.random.default_rng(5)
    mu = rng.normal(50, 10, size=30)
    residuals = rng.normal(0, 3, size=301)
    weights = rng.integers(0, 4, size=301).astype(float)
    d = lossdsl.decide(NEWSVENDOR, predictions=mu, residuals=residuals,
                       residual_weights=weights, under=3.0, over=1.0)
    repeated = np.repeat(residuals, weights.astype(int))
    np.testing.assert_allclose(d, mu + np.quantile(repeated, 0.75, method="inverted_cdf"),
                               rtol=0, atol=1e-8)
    mean = lossdsl.decide("(y - d)^2", predictions=mu, residuals=residuals,
                          residual_weights=weights)
    np.testing.assert_allclose(mean, mu + repeated.mean(), rtol=0, atol=1e-8)
    for bad, match in [(weights[:-1], "one weight per residual"),
                       (-weights, "non-negative"), (0 * weights, "positive sum")]:
        with pytest.raises(lossdsl.LossError, match=match):
            lossdsl.decide(NEWSVENDOR, predictions=mu, residuals=residuals,
                           residual_weights=bad, under=3.0, over=1.0)


def test_quantiles_with_levels_and_squared_error_is_the_mean():
    rng = np.random.default_rng(3)
    q = np.sort(rng.normal(size=(50, 9)), axis=1) * 3 + 10
    levels = np.linspace(0.1, 0.9, 9)
    d = lossdsl.decide(NEWSVENDOR, quantiles=q, levels=levels, under=4.0, over=1.0)
    assert np.allclose(d, q[:, 7], atol=1e-8)     # the 0.8 level: under / (under + over)
    mean = lossdsl.decide("(y - p)^2", quantiles=q)  # equally likely outcomes
    assert np.allclose(mean, q.mean(axis=1), atol=1e-9)


def test_tiered_cost_matches_brute_force():
    rng = np.random.default_rng(4)
    mu = rng.normal(20, 5, size=12)
    residuals = rng.normal(0, 4, size=301)
    under = rng.uniform(0.5, 4, size=12)
    d, expected = lossdsl.decide(TIERED, predictions=mu, residuals=residuals, under=under,
                                 over=1.0, return_expected_cost=True)
    grid = np.linspace(-10, 60, 14001)
    for i in range(mu.size):
        y = mu[i] + residuals
        costs = tiered(y[None, :], grid[:, None], under[i], 1.0).mean(axis=1)
        brute = costs.min()
        assert np.isclose(expected[i], tiered(y, d[i], under[i], 1.0).mean())
        assert expected[i] <= brute + 1e-9          # never worse than the fine grid
        assert expected[i] >= brute - 0.02          # and the grid is nearly as good

    # discrete decisions (whole units) are exactly the brute-force choice over them
    units = np.arange(0, 60)
    whole = lossdsl.decide(TIERED, predictions=mu, residuals=residuals, under=under,
                           over=1.0, decisions=units)
    for i in range(mu.size):
        y = mu[i] + residuals
        assert whole[i] == units[np.argmin(tiered(y[None, :], units[:, None], under[i],
                                                  1.0).mean(axis=1))]


@pytest.mark.parametrize("call, error, message", [
    (dict(cost=MATRIX, probabilities=np.full((4, 3), 1 / 3), C=np.eye(3), classes=[0, 1]),
     lossdsl.LossShapeError, "one class value per column"),
    (dict(cost=CREDIT, probabilities=np.full(4, 0.5), fee=5.0, amount=np.ones(3)),
     lossdsl.LossShapeError, "input 'amount' has 3 rows .* but the predictions have 4"),
    (dict(cost="where(a < b, 1, 2)", probabilities=np.full(4, 0.5)),
     lossdsl.LossError, "pass label="),
    (dict(cost=CREDIT, probabilities=np.full(4, 0.5), fee=5.0, amount=1.0, label="why"),
     lossdsl.LossNameError, "label='why' is not an input"),
    (dict(cost=CREDIT, probabilities=np.full(4, 0.5), fee=5.0),
     lossdsl.LossError, "pass decision="),
    (dict(cost=NEWSVENDOR, predictions=np.zeros(3), residuals=np.ones(5), under=1.0,
          over=1.0, probabilities=np.full(3, 0.5)),
     lossdsl.LossError, "not both"),
    (dict(cost=NEWSVENDOR, predictions=np.zeros(3), under=1.0, over=1.0),
     lossdsl.LossError, "residuals="),
    (dict(cost=NEWSVENDOR, predictions=np.zeros(3), residuals=np.ones((3, 5)), under=1.0,
          over=1.0),
     lossdsl.LossShapeError, "pass quantiles="),
    (dict(cost="y - p", predictions=np.zeros(3), residuals=np.ones(5)),
     lossdsl.LossError, "no finite minimiser"),
    (dict(cost=MATRIX, probabilities=np.array([[0.5, np.nan]]), C=np.eye(2)),
     lossdsl.LossDomainError, "finite and non-negative"),
    # the decisions were right, the expected costs scaled by the rows' sums (1.5 for 0.75)
    (dict(cost=MATRIX, probabilities=np.full((2, 4), 0.5), C=np.ones((4, 4)),
          return_expected_cost=True),
     lossdsl.LossDomainError, "row 0 sums to 2: pass the model's predict_proba"),
    (dict(cost=MATRIX, probabilities=np.full((3, 2), 0.5), C=np.eye(2), decisions=[0, 1, 2]),
     lossdsl.LossDomainError, r"(?s)'d' must hold integers.*give classes= and decisions="),
    # a missing value made the row "act" at an expected cost of 30, silently
    (dict(cost="where(d == 1, 30, where(y == 1, value, 0))", probabilities=[0.01, 0.01],
          value=[100.0, np.nan]),
     lossdsl.LossDomainError, r"input 'value' is NaN in 1 row\(s\), the first row 1"),
    (dict(cost=NEWSVENDOR, predictions=np.zeros(2), residuals=np.ones(5), over=1.0,
          under=np.array([[1.0], [np.nan]])),
     lossdsl.LossDomainError, "input 'under' is NaN"),
])
def test_errors_say_what_to_do(call, error, message):
    with pytest.raises(error, match=message):
        lossdsl.decide(call.pop("cost"), **call)


def test_a_cost_input_named_cost_is_a_keyword():
    """decide's own first argument is positional only: an input called cost (as in the
    prelude's expected_cost_rows(cost, z)) is passed by name like any other."""
    probability = np.array([0.1, 0.9])
    decided = lossdsl.decide("where(d == 1, cost, y)", probabilities=probability,
                             cost=np.array([0.5, 0.5]))
    np.testing.assert_array_equal(decided, [0, 1])  # decline costs y, accept costs 0.5


def test_pandas_values_with_another_index_are_refused():
    pd = pytest.importorskip("pandas")
    cost = "where(d == 1, where(y == 1, 0, fee), where(y == 1, amount, 0))"
    p = pd.Series([0.1, 0.1, 0.1], index=["a", "b", "c"])
    amount = pd.Series([5.0, 1000.0, 5.0], index=["b", "a", "c"])
    with pytest.raises(lossdsl.LossShapeError, match="different indexes"):
        lossdsl.decide(cost, probabilities=p, amount=amount, fee=10.0)
    aligned = lossdsl.decide(cost, probabilities=p, amount=amount.reindex(p.index), fee=10.0)
    np.testing.assert_array_equal(aligned, [1, 0, 0])
    # the residuals' weights were paired with the residuals by position: 0 for 9.0
    residuals = pd.Series([-1.0, 0.0, 5.0, 9.0], index=[3, 2, 1, 0])
    weights = pd.Series([1.0, 1.0, 0.0, 0.0], index=[0, 1, 2, 3])
    with pytest.raises(lossdsl.LossShapeError, match="'residuals' and 'residual_weights'"):
        lossdsl.decide("asymmetric_l1(y, p, 3, 1)", predictions=[0.0], residuals=residuals,
                       residual_weights=weights)
    decided = lossdsl.decide("asymmetric_l1(y, p, 3, 1)", predictions=[0.0],
                             residuals=residuals, residual_weights=weights.reindex(
                                 residuals.index))
    np.testing.assert_allclose(decided, [9.0])  # the 0.75 quantile of {5, 9}


def test_malformed_values_are_loss_errors():
    P = np.array([[0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(lossdsl.LossShapeError, match=r"one value per row \(N,\)"):
        lossdsl.decide("where(d == 1, 1, y*amount)", probabilities=P, amount=np.ones((2, 3)))
    with pytest.raises(lossdsl.LossShapeError, match="probabilities must be numbers"):
        lossdsl.decide("where(d == 1, 1, y)", probabilities=[["a", "b"]])
    with pytest.raises(lossdsl.LossShapeError, match="predictions must be numbers"):
        lossdsl.decide(NEWSVENDOR, predictions=["a"], residuals=[1.0], under=4.0, over=1.0)


def test_residuals_per_group():
    """groups= / residual_groups=: each row's outcomes are its prediction plus the residuals
    of its own group (here wider at peak, where a shortfall also costs more)."""
    rng = np.random.default_rng(7)
    n, r = 300, 800
    peak = rng.integers(0, 2, n)
    forecast = rng.uniform(10, 20, n)
    under = np.where(peak == 1, 4.0, 1.5)
    residual_peak = rng.integers(0, 2, r)
    residuals = rng.normal(0.0, 1.0, r) * np.where(residual_peak == 1, 3.0, 1.0)
    d, expected = lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals,
                                 groups=peak, residual_groups=residual_peak, under=under,
                                 over=1.0, return_expected_cost=True)
    own = [residuals[residual_peak == g] for g in peak]
    by_hand = forecast + [np.quantile(e, u / (u + 1), method="inverted_cdf")
                          for e, u in zip(own, under)]
    assert np.allclose(d, by_hand, atol=1e-8)
    costs = [np.mean(np.where(f + e > x, u * (f + e - x), x - f - e))
             for f, e, u, x in zip(forecast, own, under, d)]
    assert np.allclose(expected, costs)
    # the same as deciding each group on its own
    for g in (0, 1):
        alone = lossdsl.decide(NEWSVENDOR, predictions=forecast[peak == g],
                               residuals=residuals[residual_peak == g],
                               under=under[peak == g], over=1.0)
        assert np.allclose(d[peak == g], alone)
    # residual weights and whole-unit candidates travel with their groups
    weights = rng.uniform(0.0, 2.0, r)
    whole = lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals,
                           residual_weights=weights, groups=peak,
                           residual_groups=residual_peak, under=under, over=1.0,
                           decisions=np.arange(40))
    assert whole.dtype.kind == "i"
    for g in (0, 1):
        alone = lossdsl.decide(NEWSVENDOR, predictions=forecast[peak == g],
                               residuals=residuals[residual_peak == g],
                               residual_weights=weights[residual_peak == g],
                               under=under[peak == g], over=1.0, decisions=np.arange(40))
        assert np.array_equal(whole[peak == g], alone)


def test_residuals_per_group_refusals():
    forecast, residuals = np.array([1.0, 2.0]), np.array([-1.0, 0.0, 1.0])
    with pytest.raises(lossdsl.LossError, match="go together"):
        lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals,
                       groups=[0, 1], under=3.0, over=1.0)
    with pytest.raises(lossdsl.LossError, match="group 1 has 1 row"):
        lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals, groups=[0, 1],
                       residual_groups=[0, 0, 0], under=3.0, over=1.0)
    with pytest.raises(lossdsl.LossShapeError, match="one group per value of residuals"):
        lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals, groups=[0, 1],
                       residual_groups=[0, 1], under=3.0, over=1.0)
    with pytest.raises(lossdsl.LossError, match="with predictions= and residuals="):
        lossdsl.decide(MATRIX, probabilities=np.array([[0.5, 0.5]]), groups=[0],
                       residual_groups=[0], C=np.eye(2))
    # a per-row input in another row order than the predictions: refused, not sliced
    pd = pytest.importorskip("pandas")
    with pytest.raises(lossdsl.LossShapeError, match="different indexes"):
        lossdsl.decide(NEWSVENDOR, predictions=pd.Series(forecast, index=[10, 11]),
                       residuals=residuals, groups=[0, 1], residual_groups=[0, 1, 1],
                       under=pd.Series([3.0, 5.0], index=[11, 10]), over=1.0)
    # a per-row input of the wrong length: counted against all the rows, not one group's
    with pytest.raises(lossdsl.LossShapeError, match="has 3 rows .* the predictions have 2"):
        lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals, groups=[0, 1],
                       residual_groups=[0, 1, 1], under=np.array([3.0, 5.0, 4.0]), over=1.0)


@pytest.mark.parametrize("missing", [np.nan, None], ids=["nan", "none"])
def test_missing_group_ids_are_refused_naming_the_row(missing):
    """A NaN group id matched no group (NaN never equals itself): the message said the group
    had 0 rows but no residuals, where it has 1 row."""
    forecast, residuals = np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.0, 1.0, 2.0])
    groups = np.array([0.0, 1.0, 1.0], dtype=float if missing is np.nan else object)
    groups[2] = missing
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"groups is NaN \(missing\) in 1 row\(s\), the first row 2"):
        lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals, groups=groups,
                       residual_groups=[0, 1, 1, 0], under=3.0, over=1.0)
    residual_groups = np.array([0.0, 1.0, 1.0, 0.0],
                               dtype=float if missing is np.nan else object)
    residual_groups[1] = missing
    with pytest.raises(lossdsl.LossDomainError, match=r"residual_groups is NaN \(missing\) in "
                                                      r"1 residual\(s\), the first residual 1"):
        lossdsl.decide(NEWSVENDOR, predictions=forecast, residuals=residuals,
                       groups=[0, 1, 1], residual_groups=residual_groups, under=3.0, over=1.0)
