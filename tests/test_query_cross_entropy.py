"""``group_logit_shift`` (the per-group logit shift found by a root search inside the loss)
and ``query_cross_entropy`` (CatBoost's QueryCrossEntropy), against CatBoost's metric, SciPy,
closed forms at scores 1e4 apart, finite differences and the JAX backend. The library table
(tests/test_library.py) checks the loss's values and derivatives against mpmath as well."""

from __future__ import annotations

import numpy as np
import pytest
from coupled import logit_shift_mp

import lossdsl
from lossdsl.errors import LossError
from lossdsl.reference import logit_shifts

BIG = 1e4


@pytest.fixture(scope="module")
def shift() -> lossdsl.CompiledLoss:
    return lossdsl.compile("group_logit_shift(y, z, q)", reduction="none")


@pytest.fixture(scope="module")
def per_document() -> lossdsl.CompiledLoss:
    return lossdsl.compile("query_cross_entropy(y, z, q)", reduction="none")


def _queries(rng: np.random.Generator, soft: bool = False) -> dict[str, np.ndarray]:
    """Eight queries of 1 to 12 documents in sorted order (CatBoost's metric wants each
    query's documents together), labels 0/1 or in [0, 1], one query all 0, one all 1."""
    q = np.repeat(np.arange(8), [5, 1, 12, 7, 3, 9, 2, 6]).astype(float)
    y = rng.random(q.size) if soft else (rng.random(q.size) < 0.4).astype(float)
    y[q == 2], y[q == 4] = 0.0, 1.0
    return {"y": y, "z": rng.normal(0.0, 2.0, q.size), "q": q}


def _log_loss(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z) - y * z


# CatBoost reads a given alpha as a float32 (0.3 is 0.30000001192...): 0.25 is one exactly,
# and the default 0.95 is not parsed
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_is_catboosts_query_cross_entropy(alpha):
    eval_metric = pytest.importorskip("catboost.utils").eval_metric
    data = _queries(np.random.default_rng(3))
    loss = lossdsl.compile("query_cross_entropy(y, z, q" + (f", alpha={alpha})" if alpha
                                                            else ")"))
    metric = "QueryCrossEntropy" + (f":alpha={alpha}" if alpha else "")
    expected = eval_metric(data["y"], data["z"], metric, group_id=data["q"].astype(int))[0]
    assert loss(**data) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("scale", [1.0, 40.0])
@pytest.mark.parametrize("soft", [False, True])
def test_each_groups_shift_balances_its_labels(shift, scale, soft):
    data = _queries(np.random.default_rng(4), soft=soft)
    data["z"] = data["z"] * scale
    b = shift(**data)
    for query in np.unique(data["q"]):
        rows = data["q"] == query
        y, z = data["y"][rows], data["z"][rows]
        assert np.all(b[rows] == b[rows][0])  # one shift per group, at each of its samples
        if y.sum() == 0 or y.sum() == y.size:
            assert b[rows][0] == (-np.inf if y.sum() == 0 else np.inf)
            continue
        assert b[rows][0] == pytest.approx(logit_shift_mp(y, z), rel=1e-14, abs=1e-14)
    segments = np.unique(data["q"], return_inverse=True)[1]
    reference = logit_shifts(data["z"], np.bincount(segments, weights=data["y"]), segments)
    np.testing.assert_allclose(b, reference[segments], rtol=1e-12, atol=1e-12)


def test_scores_1e4_apart_have_their_exact_shift(shift, per_document):
    """Every sigmoid saturates; the root balances terms of e^-5000, which a sum of sigmoids
    loses (every b from about 40 to 9960 would give the same sum): b = 1e4/2 by symmetry.
    The per-document values then depend on it (1.5e4 and 5e3, not an arbitrary split)."""
    data = {"y": np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]),
            "z": np.array([BIG, -BIG, 0.0, -BIG, BIG, 0.0]),
            "q": np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])}
    np.testing.assert_array_equal(shift(**data), np.full(6, BIG / 2))
    shifted = data["z"] + BIG / 2
    expected = 0.05 * _log_loss(data["y"], data["z"]) + 0.95 * _log_loss(data["y"], shifted)
    np.testing.assert_allclose(per_document(**data), expected, rtol=1e-14)
    assert per_document(**data)[:2] == pytest.approx([0.05 * BIG + 0.95 * 1.5 * BIG,
                                                      0.05 * BIG + 0.95 * 0.5 * BIG])


def test_infinite_and_missing_scores(shift):
    """+inf is a sure positive (the others share what is left of the labels), -inf a sure
    negative; a NaN score makes its own group's shift NaN and no other's."""
    data = {"y": np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
            "z": np.array([np.inf, 0.0, 0.0, -np.inf, 2.0, np.nan, 1.0]),
            "q": np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0])}
    b = shift(**data)
    assert b[0] == b[1] == b[2] == 0.0  # one label left for two scores of 0
    assert b[3] == b[4] == np.inf  # the one finite score must reach sigmoid 1
    assert np.isnan(b[5]) and np.isnan(b[6])


def test_derivatives_of_the_shift_are_the_implicit_functions(shift):
    """d b/d z_k = -sigmoid'(z_k + b) / S and d b/d y_k = 1/S: the sum of the shift over the
    samples (each group's b counted once per sample) against central differences."""
    data = _queries(np.random.default_rng(5), soft=True)
    data["y"][data["q"] == 2] = 0.25  # every group with a finite shift
    data["y"][data["q"] == 4] = 0.75
    total = lossdsl.compile("group_logit_shift(y, z, q)", reduction="sum")
    for wrt in ("z", "y"):
        gradient, hessian = total.grad_and_hessian(wrt, **data)
        step = 1e-5
        for k in range(0, data[wrt].size, 5):  # a sample of each group's rows
            plus, minus = dict(data), dict(data)
            plus[wrt], minus[wrt] = data[wrt].copy(), data[wrt].copy()
            plus[wrt][k] += step
            minus[wrt][k] -= step
            assert gradient[k] == pytest.approx((total(**plus) - total(**minus)) / (2 * step),
                                                rel=1e-6, abs=1e-8)
            slope = (total.grad(wrt, **plus)[k] - total.grad(wrt, **minus)[k]) / (2 * step)
            assert hessian[k] == pytest.approx(slope, rel=1e-5, abs=1e-7)


def test_jax_backend_matches_the_kernels(per_document):
    """Values, and JAX's gradient and Hessian of the mean (the symbolic derivatives printed,
    differentiated by JAX through the shift's implicit step), on two ordinary queries and
    one with scores 1e4 apart (one shape: each new one is a compilation)."""
    jax = pytest.importorskip("jax")
    import lossdsl.jax

    ordinary = {name: values[:6] for name, values in _queries(np.random.default_rng(6)).items()}
    data = {"y": np.concatenate([ordinary["y"], [0.0, 1.0, 1.0, 1.0, 0.0]]),
            "z": np.concatenate([ordinary["z"], [BIG, -BIG, 0.0, 3.0, -BIG]]),
            "q": np.concatenate([ordinary["q"], [10.0, 10.0, 10.0, 11.0, 11.0]])}
    with jax.enable_x64(True):
        values = lossdsl.jax.loss("query_cross_entropy(y, z, q)", reduction="none")
        np.testing.assert_allclose(np.asarray(values(data["y"], data["z"], q=data["q"])),
                                   per_document(**data), rtol=1e-13)
        mean = lossdsl.jax.loss("query_cross_entropy(y, z, q)")
        gradient = jax.grad(lambda z: mean(data["y"], z, q=data["q"]))(data["z"])
        hessian = jax.hessian(lambda z: mean(data["y"], z, q=data["q"]))(data["z"])
        expected = lossdsl.compile("query_cross_entropy(y, z, q)").grad_and_hessian("z", **data)
        np.testing.assert_allclose(np.asarray(gradient), expected[0], rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(np.diag(np.asarray(hessian)), expected[1], rtol=1e-9,
                                   atol=1e-15)


def test_the_groups_must_be_an_input():
    with pytest.raises(LossError, match="third argument must be an input") as caught:
        lossdsl.compile("group_logit_shift(y, z, 1)")
    assert "^" in str(caught.value)
