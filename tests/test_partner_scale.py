"""The contrastive losses over embedding rows (``ntxent``, ``pair_cosine``) at every scale of
the rows that float64 can hold their squared norms at.

Both are cosine similarities: scaling every row by ``c`` leaves the value as it is, divides
the gradient by ``c`` and the diagonal Hessian by ``c^2``, all representable while the squared
norms ``rowsum(s^2)`` are (norms up to about 1.3e154). The diagonal Hessian went wrong from
norms of about 1e77 (1.3 relative from 1e90) while the gradient stayed right: the pair sums
of its terms (``pairmatvec``, ``rowsum`` over the partners) multiplied ``1/(|s_j| |s_i|)``
twice into each pair's weight, ``~1/c^4``, which underflowed to 0 before the partner's row
(``~c``) or the sample's own factors brought it back, and the term's guard for empty pair
rows then took that 0 for an empty row; from about 1e103 the chain rule's products
(``s * (D(X)/|s|)``: ``c * c^-3``) underflowed too (``_Diagonal._scaled_sum`` and
``_Diagonal._product`` in :mod:`lossdsl.passes.diff`).

Each scale is a power of two, so that the rows scale exactly: the results at scale ``c`` are
those at scale 1 times ``c^0``, ``c^-1`` and ``c^-2`` up to a few roundings. At scale 1 they
are checked against central differences of the gradient. Below norms of about 1e-8 the
squared norms are clipped at ``eps`` (the similarity is no longer scale-free), so the small
scales run with ``eps = 0``. Past the squared norms' range the results are NaN, not numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossdsl

EPS = float(np.finfo(np.float64).eps)
TEXTS = {
    "ntxent": f"param eps = {EPS!r}\nloss contrastive = ntxent(y, s, g, 0.07, eps)",
    "pair_cosine": f"param eps = {EPS!r}\nloss cosines = pairsum(pair_cosine(s, eps), g)",
}
#: the norms' scales checked, powers of ten rounded to powers of two (exact scaling)
POWERS = [-100, -40, -8, 8, 40, 77, 80, 90, 100, 120, 140, 150]


def scale_of(power: int) -> float:
    return 2.0 ** round(power * np.log2(10.0))


@pytest.fixture(scope="module")
def losses() -> dict[str, lossdsl.CompiledLoss]:
    return {name: lossdsl.compile(text) for name, text in TEXTS.items()}


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    """Two groups (one of 6, one of 3 samples), labels with positives and negatives in each,
    rows of norms between about 0.1 and 10 (a pair's two norms differ)."""
    rng = np.random.default_rng(3)
    s = rng.normal(size=(9, 3)) * np.exp(rng.uniform(-2.0, 2.0, (9, 1)))
    return {"y": np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.0]),
            "g": np.array([4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 9.0, 9.0, 9.0]), "s": s}


def results(loss: lossdsl.CompiledLoss, inputs: dict, scale: float, eps: float = EPS) -> list:
    """[value, gradient, Hessian diagonal] with respect to s, of rows scaled by ``scale``."""
    arguments = {name: inputs[name] for name in loss.inputs}
    arguments.update(s=inputs["s"] * scale, eps=eps)
    return list(loss.compute(True, ("s",), ("s",), arguments, None))


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_the_hessian_at_scale_one_is_the_gradients_central_differences(losses, inputs, name):
    loss = losses[name]
    _, _, hessian = results(loss, inputs, 1.0)
    step = 1e-6
    differences = np.empty_like(hessian)
    for index in np.ndindex(*inputs["s"].shape):
        gradients = []
        for sign in (1.0, -1.0):
            moved = inputs["s"].copy()
            moved[index] += sign * step
            arguments = {name: inputs[name] for name in loss.inputs}
            gradients.append(loss.grad("s", **{**arguments, "s": moved})[index])
        differences[index] = (gradients[0] - gradients[1]) / (2 * step)
    np.testing.assert_allclose(hessian, differences, rtol=1e-6,
                               atol=1e-7 * np.abs(hessian).max())


@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_value_gradient_and_hessian_scale_as_a_cosine_similarity(losses, inputs, name, power):
    loss, scale = losses[name], scale_of(power)
    eps = EPS if scale > 1 else 0.0  # below 1e-8 the clip at eps is no longer scale-free
    value, gradient, hessian = results(loss, inputs, 1.0, eps)
    scaled_value, scaled_gradient, scaled_hessian = results(loss, inputs, scale, eps)
    assert scaled_value == pytest.approx(value, rel=1e-13)
    expected_gradient, expected_hessian = gradient / scale, hessian / scale**2
    assert np.isfinite(scaled_hessian).all()
    np.testing.assert_allclose(scaled_gradient, expected_gradient, rtol=1e-12,
                               atol=1e-13 * np.abs(expected_gradient).max())
    np.testing.assert_allclose(scaled_hessian, expected_hessian, rtol=1e-11,
                               atol=1e-12 * np.abs(expected_hessian).max())


@pytest.mark.parametrize("power", [155, 200, 300])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_past_the_squared_norms_range_the_results_are_nan(losses, inputs, name, power):
    """Norms past about 1.3e154 overflow rowsum(s^2): no number is given, none wrong."""
    value, gradient, hessian = results(losses[name], inputs, 10.0**power)
    assert np.isnan(value)
    assert np.isnan(gradient).all() and np.isnan(hessian).all()
