"""Cumulative sums in the order of a key (``sum_from``, ``sum_upto``, ``logsumexp_from``,
``logsumexp_upto``) and the Cox loss built on them: values against sums written out over
every pair of samples, gradients and exact diagonal Hessians against central differences of
the total (one sample moved at a time: every value depends on the others), the tails,
every target, the partial likelihoods of lifelines and XGBoost, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import lossdsl
from lossdsl.ops.scans import KeyOrder, key_order, scan

EXPRESSIONS = [
    "sum_from(exp(z), t) * w + logsumexp_upto(z, t) * y",
    "d * (logsumexp_from(z, t) - z)",
    "d * (log(sum_from(exp(z), t)) - z)",
    "y * logsumexp_from(z, t) + w * logsumexp_upto(z, t)",
    "sum_upto(sum_upto(exp(z), t)^2, t) * y",
    "logsumexp_from(z * y, t)^2 + sum_from(z, t) * mean(z^2)",
    "sum_upto(logsumexp_upto(z, t) * w, t)",
    "sum_from(1, t) * z^2 + sum_upto(z, -t)",
]


def _pairs(values, keys, at_least: bool, log: bool):
    """The cumulative sum written out: a mask over every pair of samples."""
    values = np.broadcast_to(values, np.shape(keys))
    inside = keys[None, :] >= keys[:, None] if at_least else keys[None, :] <= keys[:, None]
    if log:
        return scipy.special.logsumexp(np.where(inside, values[None, :], -np.inf), axis=1)
    return np.where(inside, values[None, :], 0.0).sum(axis=1)


def _data(seed: int, n: int = 11) -> dict:
    rng = np.random.default_rng(seed)
    return {"t": rng.integers(0, 5, n).astype(float), "z": rng.normal(size=n),
            "y": rng.normal(size=n), "w": rng.normal(size=n),
            "d": (rng.random(n) < 0.6).astype(float)}


@pytest.fixture(scope="module")
def losses():
    return {e: lossdsl.compile(e, reduction="sum") for e in EXPRESSIONS}


def _inputs(loss, data):
    return {name: data[name] for name in loss.inputs}


@pytest.mark.parametrize("name", ["sum_from", "sum_upto", "logsumexp_from", "logsumexp_upto"])
def test_scans_against_every_pair(name):
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 6, 40).astype(float)
    keys[3] = np.inf
    values = rng.normal(size=40)
    expected = _pairs(values, keys, name.endswith("from"), name.startswith("log"))
    np.testing.assert_allclose(scan(name, values, keys), expected, rtol=1e-13, atol=1e-13)
    loss = lossdsl.compile(f"{name}(v, t)", reduction="none")
    np.testing.assert_allclose(loss(v=values, t=keys), expected, rtol=1e-13, atol=1e-13)
    keys[5] = np.nan  # a NaN key: in no set, and NaN itself
    found = scan(name, values, keys)
    assert np.isnan(found[5]) and np.isfinite(np.delete(found, 5)).all()


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_gradient_and_hessian_against_finite_differences(losses, expression):
    """Central differences of the total (for the gradient) and of the gradient's own entry
    (for the Hessian's diagonal), one sample moved at a time; one fused kernel computes
    the value, gradient and Hessian at every point."""
    loss = losses[expression]
    for seed in range(2):
        data = _data(seed)
        inputs = _inputs(loss, data)
        z = inputs.pop("z")

        def at(point, inputs=inputs):
            return loss.compute(True, ("z",), ("z",), {**inputs, "z": point})

        _, gradient, hessian = at(z)
        step, unit = 1e-6, np.eye(z.size)
        moved = [[at(z + s * step * unit[i]) for s in (1, -1)] for i in range(z.size)]
        total = np.array([[up[0], down[0]] for up, down in moved])
        np.testing.assert_allclose(gradient, (total[:, 0] - total[:, 1]) / (2 * step),
                                   rtol=1e-6, atol=1e-7)
        slopes = np.array([[up[1][i], down[1][i]] for i, (up, down) in enumerate(moved)])
        np.testing.assert_allclose(hessian, (slopes[:, 0] - slopes[:, 1]) / (2 * step),
                                   rtol=1e-6, atol=1e-7)


def test_nestings_without_a_closed_form_hessian_say_so():
    loss = lossdsl.compile("logsumexp_upto(logsumexp_from(z, t) * w + z, t)")
    data = _data(0)
    assert np.isfinite(loss.grad("z", **_inputs(loss, data))).all()
    with pytest.raises(lossdsl.LossError, match="exact Hessian"):
        loss.grad_and_hessian("z", **_inputs(loss, data))


def _survival(n: int, seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 4))
    risk = features[:, 0] - 0.5 * features[:, 1]
    event_time = rng.exponential(np.exp(-risk))
    censor_time = rng.exponential(2.0, n)
    time = np.minimum(event_time, censor_time)
    if ties:
        time = np.ceil(time * 10) / 10
    return features, np.where(event_time <= censor_time, time, -time)


@pytest.fixture(scope="module")
def cox_sum():
    return lossdsl.compile("cox_ph(y, z)", reduction="sum")


def test_cox_is_lifelines_partial_likelihood(cox_sum):
    lifelines = pytest.importorskip("lifelines")
    pandas = pytest.importorskip("pandas")
    features, y = _survival(150, 0, ties=False)  # lifelines takes Efron's ties: none here
    frame = pandas.DataFrame(features, columns=list("abcd"))
    frame["T"], frame["E"] = np.abs(y), (y > 0).astype(int)
    fitted = lifelines.CoxPHFitter().fit(frame, "T", "E")
    z = features @ fitted.params_.to_numpy()
    assert -cox_sum(y=y, z=z) == pytest.approx(fitted.log_likelihood_, rel=1e-12)
    # at lifelines' maximum the gradient vanishes along every feature
    gradient = cox_sum.grad("z", y=y, z=z)
    np.testing.assert_allclose(features.T @ gradient, 0.0, atol=1e-4)  # its tolerance
    # and a linear model fitted on the loss is lifelines' model
    from lossdsl.linear import LossRegressor

    linear = LossRegressor("cox_ph(y, z)", alpha=0.0, fit_intercept=False).fit(features, y)
    np.testing.assert_allclose(linear.coef_, fitted.params_.to_numpy(), atol=1e-5)

    # lifelines' case weights weigh the risk sets too: exp(z + log w), and each death's term
    frame["w"] = np.random.default_rng(14).uniform(0.5, 2.0, y.size)
    weighted = lifelines.CoxPHFitter().fit(frame, "T", "E", weights_col="w", robust=True)
    z = features @ weighted.params_.to_numpy()
    loss = lossdsl.compile("where(y > 0, logsumexp_from(z + log(w), abs(y)) - z, 0)",
                           reduction="sum")
    found = -loss(y=y, z=z, w=frame.w.to_numpy(), sample_weight=frame.w.to_numpy())
    assert found == pytest.approx(weighted.log_likelihood_, rel=1e-12)


def test_efron_cox_is_lifelines_partial_likelihood_with_ties():
    """lifelines' CoxPHFitter takes Efron's ties: on tied times its log-likelihood at its own
    fit is -cox_ph_efron's sum there, the gradient vanishes along every feature, and a linear
    model fitted on the loss is lifelines' model. Without ties it is cox_ph."""
    lifelines = pytest.importorskip("lifelines")
    pandas = pytest.importorskip("pandas")
    features, y = _survival(150, 3, ties=True)
    assert np.unique(np.abs(y)).size < y.size  # ties among the times
    frame = pandas.DataFrame(features, columns=list("abcd"))
    frame["T"], frame["E"] = np.abs(y), (y > 0).astype(int)
    fitted = lifelines.CoxPHFitter().fit(frame, "T", "E")
    z = features @ fitted.params_.to_numpy()
    efron = lossdsl.compile("cox_ph_efron(y, z)", reduction="sum")
    assert -efron(y=y, z=z) == pytest.approx(fitted.log_likelihood_, rel=1e-12)
    # lifelines stops with a gradient of about 1e-3 along the features here; Newton on the
    # exact gradient and Hessian goes further, to a likelihood at least lifelines'
    np.testing.assert_allclose(features.T @ efron.grad("z", y=y, z=z), 0.0, atol=3e-3)
    from lossdsl.linear import LossRegressor

    linear = LossRegressor("cox_ph_efron(y, z)", alpha=0.0, fit_intercept=False,
                           solver="newton-cg").fit(features, y)
    np.testing.assert_allclose(linear.coef_, fitted.params_.to_numpy(), atol=1e-4)
    ours = features @ linear.coef_
    assert -efron(y=y, z=ours) >= fitted.log_likelihood_
    np.testing.assert_allclose(features.T @ efron.grad("z", y=y, z=ours), 0.0, atol=1e-4)
    features, y = _survival(60, 4, ties=False)
    z = np.random.default_rng(4).normal(size=y.size)
    breslow = lossdsl.compile("cox_ph(y, z)", reduction="none")
    np.testing.assert_allclose(lossdsl.compile("cox_ph_efron(y, z)", reduction="none")(y=y, z=z),
                               breslow(y=y, z=z), rtol=1e-13, atol=1e-13)


def test_cox_is_xgboosts_metric_and_objective(cox_sum):
    xgb = pytest.importorskip("xgboost")
    features, y = _survival(200, 1, ties=True)
    z = np.random.default_rng(2).normal(size=y.size) * 0.5
    dtrain = xgb.DMatrix(features, label=y, base_margin=z)
    booster = xgb.train({"objective": "survival:cox", "eval_metric": "cox-nloglik",
                         "eta": 0.0, "max_depth": 1}, dtrain, 1)
    metric = float(booster.eval(dtrain).split(":")[1])
    per_event = lossdsl.compile("count_as(cox_ph(y, z), y > 0)")  # the mean over the events
    assert per_event(y=y, z=z) == pytest.approx(metric, rel=1e-6)  # XGBoost's float32 scores

    # without ties XGBoost's survival:cox gradient is the exact one: the same model
    features, y = _survival(200, 3, ties=False)
    dtrain = xgb.DMatrix(features, label=y, base_margin=np.zeros(y.size))
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1}
    builtin = xgb.train({**params, "objective": "survival:cox"}, dtrain, 10)
    adapter = pytest.importorskip("lossdsl.xgboost")
    objective = adapter.objective("cox_ph(y, z)")  # the default Hessian policy
    custom = xgb.train({**params, "disable_default_eval_metric": 1}, dtrain, 10,
                       obj=objective)
    assert objective.policy == "floor"  # the exact Hessian (coupled rows: no flatness probe)
    np.testing.assert_allclose(custom.predict(dtrain, output_margin=True),
                               builtin.predict(dtrain, output_margin=True), atol=1e-5)


def test_cox_stays_finite_at_extreme_scores(cox_sum):
    _, y = _survival(30, 4, ties=True)
    z = np.random.default_rng(5).choice([-1e4, 1e4, 0.0, 1e150, -1e150], y.size)
    value = cox_sum(y=y, z=z)
    gradient, hessian = cox_sum.grad_and_hessian("z", y=y, z=z)
    assert np.isfinite(value) and np.isfinite(gradient).all() and np.isfinite(hessian).all()
    assert value == pytest.approx(ref_total(y, z), rel=1e-12)


def ref_total(y, z):
    time = np.abs(y)
    risk = scipy.special.logsumexp(np.where(time[None, :] >= time[:, None], z[None, :], -np.inf),
                                   axis=1)
    return float(np.sum(np.where(y > 0, risk - z, 0.0)))


def test_targets_agree(cox_sum, monkeypatch):
    _, y = _survival(300, 6, ties=True)
    z = np.random.default_rng(7).normal(size=y.size)
    expected = cox_sum.compute(True, ("z",), ("z",), {"y": y, "z": z})
    parallel = lossdsl.compile("cox_ph(y, z)", reduction="sum", target="parallel")
    for found, wanted in zip(parallel.compute(True, ("z",), ("z",), {"y": y, "z": z}),
                             expected):
        np.testing.assert_allclose(found, wanted, rtol=1e-12, atol=1e-12)
    single = cox_sum.compute(True, ("z",), ("z",), {"y": y.astype(np.float32),
                                                     "z": z.astype(np.float32)})
    for found, wanted in zip(single, expected):
        np.testing.assert_allclose(found, wanted, rtol=1e-4, atol=1e-5)


def test_the_order_of_the_rows_does_not_matter(cox_sum):
    _, y = _survival(60, 8, ties=True)
    z = np.random.default_rng(9).normal(size=y.size)
    order = np.random.default_rng(10).permutation(y.size)
    value, gradient, hessian = cox_sum.compute(True, ("z",), ("z",), {"y": y, "z": z})
    shuffled = cox_sum.compute(True, ("z",), ("z",), {"y": y[order], "z": z[order]})
    assert shuffled[0] == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(shuffled[1], gradient[order], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(shuffled[2], hessian[order], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("text, match, at", [
    ("sum_from(z, t)", "one per sample", "1:13"),  # t is bound to a number below
    ("rowsum(sum_from(z, t))", "classes", "1:17"),  # z is bound to a matrix
    ("groupsum(sum_from(z, t), q)", "strata", "1:26"),
])
def test_what_cannot_be_summed_in_order_is_an_error(text, match, at):
    """Each error says what is wrong and points at the input at fault."""
    loss = lossdsl.compile(text)
    inputs = {"z": np.ones((4, 3)) if "rowsum" in text else np.ones(4), "q": np.arange(4),
              "t": 2.0 if match == "one per sample" else np.arange(4.0)}
    with pytest.raises(lossdsl.LossError, match=match) as raised:
        loss(**{name: inputs[name] for name in loss.inputs})
    assert str(raised.value).startswith(f"<string>:{at}:"), str(raised.value)


def test_adapters_that_cannot_see_whole_risk_sets_refuse():
    import lossdsl.dask

    with pytest.raises(lossdsl.LossError, match="risk sets"):
        lossdsl.dask.compile("cox_ph(y, z)")


def test_lightgbm_trains_cox_as_well_as_xgboosts_builtin():
    """LightGBM has no Cox objective: through lossdsl its held-out partial likelihood is
    XGBoost's survival:cox's, with the same trees, rounds and learning rate."""
    lgb = pytest.importorskip("lightgbm")
    xgb = pytest.importorskip("xgboost")
    import lossdsl.lightgbm

    features, y = _survival(600, 11, ties=True)
    train, test = slice(0, 400), slice(400, None)
    per_death = lossdsl.compile("count_as(cox_ph(y, z), y > 0)")
    dtrain = xgb.DMatrix(features[train], label=y[train], base_margin=np.zeros(400))
    builtin = xgb.train({"objective": "survival:cox", "max_depth": 2, "eta": 0.1,
                         "nthread": 1}, dtrain, 40)
    reference = per_death(y=y[test], z=builtin.predict(
        xgb.DMatrix(features[test], base_margin=np.zeros(200)), output_margin=True))
    booster = lgb.train({"objective": lossdsl.lightgbm.objective("cox_ph(y, z)"),
                         "max_depth": 2, "num_leaves": 4, "learning_rate": 0.1,
                         "num_threads": 1, "verbose": -1},
                        lgb.Dataset(features[train], y[train], init_score=np.zeros(400)), 40)
    found = per_death(y=y[test], z=booster.predict(features[test], raw_score=True))
    untrained = per_death(y=y[test], z=np.zeros(200))
    assert found < untrained - 0.05
    assert found == pytest.approx(reference, rel=0.02)
    with pytest.raises(lossdsl.LossError, match="risk sets"):
        lossdsl.lightgbm.train("cox_ph(y, z)", {"max_depth": 2, "verbose": -1},
                               lgb.Dataset(features[train], y[train]), 2)


def test_torch_backward_and_its_refusal_of_double_backward(cox_sum):
    torch = pytest.importorskip("torch")
    import lossdsl.torch

    _, y = _survival(40, 12, ties=True)
    z = np.random.default_rng(13).normal(size=y.size)
    criterion = lossdsl.torch.loss("cox_ph(y, z)", reduction="sum")
    scores = torch.tensor(z, requires_grad=True)
    value = criterion(y=torch.tensor(y), z=scores)
    value.backward()
    assert value.item() == pytest.approx(cox_sum(y=y, z=z), rel=1e-13)
    np.testing.assert_allclose(scores.grad.numpy(), cox_sum.grad("z", y=y, z=z), rtol=1e-13)
    # the Hessian couples every pair in a risk set: no diagonal stands in for it
    scores = torch.tensor(z, requires_grad=True)
    (gradient,) = torch.autograd.grad(criterion(y=torch.tensor(y), z=scores), scores,
                                      create_graph=True)
    with pytest.raises(lossdsl.LossError, match="coupled"):
        torch.autograd.grad(gradient.sum(), scores)


def test_scans_of_any_keys_and_values_are_the_pairwise_sums():
    """Property: for any keys (ties, infinities), values (infinities, -inf summands) and
    strata, each cumulative sum equals the sum written out over every pair of samples of a
    stratum."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.floats(-1e3, 1e3) | st.sampled_from([-np.inf, np.inf, 0.0, -1e300, 1e300])
    keys = st.integers(-3, 3).map(float) | st.sampled_from([-np.inf, np.inf])

    @settings(deadline=None, max_examples=300)
    @given(st.lists(st.tuples(values, keys, st.integers(0, 2)), min_size=1, max_size=30),
           st.sampled_from(["sum_from", "sum_upto", "logsumexp_from", "logsumexp_upto"]),
           st.booleans())
    def check(triples, name, stratified):
        v, k, g = (np.array(column, dtype=float) for column in zip(*triples))
        g = g if stratified else np.zeros_like(g)
        log = name.startswith("log")
        if not log:  # a plain sum of +-inf or +-1e300 depends on its order (inf - inf)
            v = np.where(np.abs(v) <= 1e3, v, 0.0)
        expected = np.empty_like(v)
        with np.errstate(all="ignore"):
            for stratum in np.unique(g):
                rows = g == stratum
                expected[rows] = _pairs(v[rows], k[rows], name.endswith("from"), log)
        np.testing.assert_allclose(scan(name, v, k, g), expected, rtol=1e-12, atol=1e-9)

    check()


def test_stratified_cox_is_lifelines_strata(cox_sum):
    """cox_ph(y, z, strata=g): each stratum's own risk sets (a baseline hazard per stratum),
    equal to lifelines' strata= fit, and to the strata's separate totals."""
    lifelines = pytest.importorskip("lifelines")
    pandas = pytest.importorskip("pandas")
    features, y = _survival(240, 15, ties=False)
    strata = np.random.default_rng(16).integers(0, 3, y.size)
    frame = pandas.DataFrame(features, columns=list("abcd"))
    frame["T"], frame["E"], frame["g"] = np.abs(y), (y > 0).astype(int), strata
    fitted = lifelines.CoxPHFitter().fit(frame, "T", "E", strata=["g"])
    z = features @ fitted.params_.to_numpy()
    stratified = lossdsl.compile("cox_ph(y, z, strata=g)", reduction="sum")
    assert -stratified(y=y, z=z, g=strata) == pytest.approx(fitted.log_likelihood_, rel=1e-12)
    assert stratified(y=y, z=z, g=strata) == pytest.approx(
        sum(cox_sum(y=y[strata == s], z=z[strata == s]) for s in range(3)), rel=1e-13)
    # derivatives: each stratum's own
    gradient, hessian = stratified.grad_and_hessian("z", y=y, z=z, g=strata)
    for s in range(3):
        alone = cox_sum.grad_and_hessian("z", y=y[strata == s], z=z[strata == s])
        np.testing.assert_allclose(gradient[strata == s], alone[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hessian[strata == s], alone[1], rtol=1e-12, atol=1e-14)
    # the JAX printer and the CUDA simulator's host scans take the strata too
    jax = pytest.importorskip("jax")
    front_end = pytest.importorskip("lossdsl.jax")

    with jax.enable_x64(True):
        value = front_end.loss("cox_ph(y, z, strata=g)", reduction="sum")(
            y=y, z=z, g=strata.astype(float))
    assert float(value) == pytest.approx(stratified(y=y, z=z, g=strata), rel=1e-12)


def test_log_cumsum_exp_is_scipys_logsumexp_of_every_prefix():
    from lossdsl.ops.scans import log_cumsum_exp

    rng = np.random.default_rng(17)
    cases = [rng.normal(size=200) * 300, np.array([-np.inf, -np.inf, 1.0, -np.inf, 1e4, -1e4,
                                                    np.inf, 3.0]),
             np.array([1.0, np.nan, 2.0]), np.array([-1e4, 1e4, -1e300, 1e300]),
             np.array([-np.inf, -1e300]), np.array([np.inf, np.inf]), np.zeros(0)]
    for values in cases:
        with np.errstate(all="ignore"):
            expected = [scipy.special.logsumexp(values[:i + 1]) for i in range(values.size)]
        np.testing.assert_allclose(log_cumsum_exp(values), expected, rtol=1e-13)
    restarts = np.array([True, False, True, False])  # two sums: the second starts again
    np.testing.assert_allclose(log_cumsum_exp(np.array([np.inf, 1.0, 0.0, 0.0]), restarts),
                               [np.inf, np.inf, 0.0, np.log(2.0)])


def test_integer_keys_and_strata_the_kernel_cannot_hold_exactly_are_refused():
    """Kernels read every input in their dtype (T(x)), and the order and ties of the keys and
    strata make the risk sets: integers that round (Unix times with float32 scores, int64
    strata past 2**53) would tie or merge without a sign, so they are refused, naming the
    entry and what to do; integers the dtype holds exactly (2**25 in float32: past 2**24, yet
    exact), and the same keys with float64 scores, give the exact sums."""
    y, z = np.ones(4), np.zeros(4)
    stratified = lossdsl.compile("cox_ph(y, z, g)", reduction="none")
    big = np.array([2**53, 2**53 + 1, 2**53, 2**53 + 1])
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"'g' gives the strata .* 9007199254740993 at index 1 .* float64 "
                             r".*number the strata 0\.\.G-1") as caught:
        stratified(y=y, z=z, g=big)
    assert caught.value.span is not None  # points at g in the source
    with pytest.raises(lossdsl.LossDomainError, match="16777217 .* float32 .*pass the float "
                                                       "inputs as float64 or number the strata"):
        stratified(y=y.astype("f4"), z=z.astype("f4"), g=np.array([2**24, 2**24 + 1] * 2))
    with pytest.raises(lossdsl.LossDomainError, match="18446744073709551615"):
        stratified(y=y, z=z, g=np.array([2**64 - 1, 0] * 2, np.uint64))
    np.testing.assert_allclose(stratified(y=y, z=z, g=np.unique(big, return_inverse=True)[1]),
                               np.log(2.0), rtol=1e-15)
    exact = np.array([2**25, 2**62, 2**25, 2**62])  # beyond the limit, yet exact
    np.testing.assert_allclose(stratified(y=y.astype("f4"), z=z.astype("f4"), g=exact),
                               np.log(2.0), rtol=1e-6)
    # the same signature again takes the call plan's fast path, which checks the values too
    # (2**63 - 1 rounds to 2**63 in float32, past int64's range: no value back)
    with pytest.raises(lossdsl.LossDomainError, match="9223372036854775807 at index 0"):
        stratified(y=y.astype("f4"), z=z.astype("f4"), g=np.array([2**63 - 1, 7] * 2))
    with pytest.raises(lossdsl.LossDomainError, match="16777217"):
        stratified.grad("z", y=y.astype("f4"), z=z.astype("f4"),
                        g=np.array([2**24, 2**24 + 1] * 2))
    times = np.array([1_700_000_000, 1_700_000_001, 1_700_000_002, 1_700_000_003])
    expected = np.log([4.0, 3.0, 2.0, 1.0])
    for text in ("cox_ph(y, z)", "cox_ph_efron(y, z)"):
        cox = lossdsl.compile(text, reduction="none")
        for keys in (times, -times):  # censored rows: negative times, as XGBoost's labels
            with pytest.raises(lossdsl.LossDomainError,
                               match=r"'y' gives the keys .* -?1700000001 at index 1 .* float32 "
                                     r".*pass the float inputs as float64 or give 'y' smaller"):
                cox(y=keys, z=np.zeros(4, "f4"))
            with pytest.raises(lossdsl.LossDomainError, match="1700000001"):
                cox.grad_and_hessian("z", y=keys, z=np.zeros(4, "f4"))
        np.testing.assert_allclose(cox(y=times, z=np.zeros(4)), expected, rtol=1e-15)
        np.testing.assert_allclose(cox(y=times - times[0] + 1, z=np.zeros(4, "f4")), expected,
                                   rtol=1e-6)
    keyed = lossdsl.compile("sum_from(z, t, g)", reduction="none")
    strata = np.array([True, False, True, False])
    with pytest.raises(lossdsl.LossDomainError, match="'t' gives the keys"):
        keyed(z=np.ones(4, "f4"), t=times, g=strata)
    np.testing.assert_array_equal(keyed(z=np.ones(4), t=times, g=strata), [2.0, 2.0, 1.0, 1.0])
    np.testing.assert_array_equal(keyed(z=np.ones(4, "f4"), t=times.astype(float), g=strata),
                                  [2.0, 2.0, 1.0, 1.0])


def test_group_tables_hold_each_groups_sums_and_a_nan_row_for_samples_in_no_group():
    """KeyOrder.group_table: one row per group in key order (column sums of (N, K) values; a
    number counts the samples), then a NaN row, which the samples of NaN keys read through
    run_of_sample; group_totals and scan("sum_group") gather a row per sample. Keys out of
    order and in order (a batch of images one after another), against masked NumPy sums."""
    rng = np.random.default_rng(12)
    for keys in (np.array([3.0, -1.0, 3.0, np.nan, 7.0, -1.0, 3.0, np.nan, 0.5]),
                 np.repeat([0.0, 1.0, 2.0], [2, 3, 1])):
        values = rng.normal(size=(keys.size, 3))
        order = KeyOrder(keys, 0.0)
        groups = np.unique(keys[~np.isnan(keys)])  # sorted
        table = order.group_table(values)
        assert table.shape == (groups.size + 1, 3)
        np.testing.assert_allclose(table[:-1], [values[keys == key].sum(axis=0)
                                                for key in groups], rtol=1e-15)
        assert np.isnan(table[-1]).all()
        np.testing.assert_array_equal(order.run_of_sample,
                                      [np.searchsorted(groups, key) if key == key
                                       else groups.size for key in keys])
        np.testing.assert_array_equal(order.group_table(1.0),
                                      [*(np.count_nonzero(keys == key) for key in groups),
                                       np.nan])
        totals = np.array([values[keys == key].sum(axis=0) if key == key
                           else np.full(3, np.nan) for key in keys])
        np.testing.assert_allclose(order.group_totals(values), totals, rtol=1e-15)
        np.testing.assert_allclose(scan("sum_group", values[:, 1], keys), totals[:, 1],
                                   rtol=1e-15)


def test_an_order_is_kept_for_the_same_keys_and_strata_only():
    """key_order keeps the last order while a call's keys and strata equal its own (NaN
    equal to NaN), and makes a new one where any key or stratum differs."""
    keys = np.array([2.0, np.nan, 1.0, 2.0, 5.0])
    first = key_order(keys, 0.0)
    assert key_order(keys.copy(), 0.0) is first
    assert key_order(keys, np.zeros(keys.size)) is first
    for other_keys, other_strata in [(np.array([2.0, np.nan, 1.0, 2.0, 4.0]), 0.0),
                                     (np.array([2.0, 3.0, 1.0, 2.0, 5.0]), 0.0),
                                     (np.array([2.0, np.nan, np.nan, 2.0, 5.0]), 0.0),
                                     (keys, np.array([0.0, 0.0, 0.0, 0.0, 1.0])),
                                     (keys, np.nan)]:
        assert not first.same_keys(other_keys, other_strata)
        made = key_order(other_keys, other_strata)
        assert made is not first
        np.testing.assert_array_equal(made.keys, other_keys)
        first = key_order(keys, 0.0)
