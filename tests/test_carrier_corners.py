"""Kernels of losses that carriers (``x - stop_gradient(x)``: 0 in the value, the identity in
the derivative) leave nearly empty, against JAX's autodiff of the same losses written by hand
in jax.numpy (``lax.stop_gradient``).

* A total over the samples of a value the carriers phase made constant along them: ``colsum``
  (a group total whose key is the same for every sample) of a constant is that constant times
  the number of samples (``ir.build.rebuilt``); the cumulative sums and the group totals of
  samples with classes keep their keys' axes and sum the constant as it is.
* A kernel whose outputs are all constants (a summed loss identically 0 in value: ``s -
  stop_gradient(s)``) launches nothing and returns them, on every target (the CUDA module
  used to open an empty ``numpy.errstate`` block: invalid Python).

CUDA runs in Numba's simulator where there is no GPU (tests/conftest.py); sizes are tiny.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lossdsl

TOLERANCE = dict(rtol=1e-12, atol=1e-12)
RNG = np.random.default_rng(11)
N, K = 5, 3
INPUTS = {
    "s": RNG.normal(size=N),
    "c": RNG.normal(size=N),
    "z": RNG.normal(size=(N, K)),
    "t": np.array([3.0, 1.0, 2.0, 2.0, 5.0]),  # keys with a tie
    "g": np.array([1, 0, 1, 1, 2]),  # group ids, not in runs
}


def _carried(x: jax.Array) -> jax.Array:
    """``x - stop_gradient(x)``: 0, whose derivative is x's."""
    return x - lax.stop_gradient(x)


def _column_total(e: jax.Array) -> jax.Array:
    """``colsum(e)``: every sample gets the total over the samples (per column of rows)."""
    return jnp.broadcast_to(jnp.sum(e, axis=0), e.shape)


def _same_group(ids: np.ndarray) -> jax.Array:
    return jnp.asarray(ids[:, None] == ids[None, :], jnp.float64)


# loss text -> (the input differentiated, the per-sample values written by hand, (N,))
CASES: dict[str, tuple[str, Callable[..., jax.Array]]] = {
    "colsum(s - stop_gradient(s))": ("s", lambda s, **_: _column_total(_carried(s))),
    "c*colsum(1 + (s - stop_gradient(s)))":
        ("s", lambda s, c, **_: c * _column_total(1.0 + _carried(s))),
    "s^2 + colsum(c*(s - stop_gradient(s)))":
        ("s", lambda s, c, **_: s ** 2 + _column_total(c * _carried(s))),
    "rowsum(colsum(z - stop_gradient(z)))":
        ("z", lambda z, **_: jnp.sum(_column_total(_carried(z)), axis=1)),
    "rowsum(colsum(z + stop_gradient(3 - z)))":
        ("z", lambda z, **_: jnp.sum(_column_total(z + lax.stop_gradient(3.0 - z)), axis=1)),
    # the other scans, whose keys keep the samples' axis
    "sum_upto(1 + (s - stop_gradient(s)), t)":
        ("s", lambda s, t, **_: jnp.asarray(t[None, :] <= t[:, None], jnp.float64)
         @ (1.0 + _carried(s))),
    "logsumexp_from(s - stop_gradient(s), t)":
        ("s", lambda s, t, **_: jnp.log(jnp.asarray(t[None, :] >= t[:, None], jnp.float64)
                                        @ jnp.exp(_carried(s)))),
    "rowsum(groupsum(1 + (z - stop_gradient(z)), g))":
        ("z", lambda z, g, **_: jnp.sum(_same_group(g) @ (1.0 + _carried(z)), axis=1)),
}


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def _inputs_of(compiled: lossdsl.CompiledLoss) -> dict[str, np.ndarray]:
    return {name: INPUTS[name] for name in compiled.inputs}


def _expected(text: str, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, gradient) of the hand-written loss under ``reduction`` ("none": the gradient
    of the per-sample values' sum, as the kernels give it)."""
    wrt, per_sample = CASES[text]
    given = {name: value for name, value in INPUTS.items() if name != wrt}

    def reduced(x):
        values = per_sample(**{wrt: x}, **given)
        return values if reduction == "none" else {
            "sum": jnp.sum, "mean": jnp.mean}[reduction](values)

    value = reduced(INPUTS[wrt])
    gradient = jax.grad(lambda x: jnp.sum(reduced(x)))(INPUTS[wrt])
    return np.asarray(value), np.asarray(gradient)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("text", list(CASES))
def test_total_over_samples_of_a_carried_value(text, reduction):
    compiled = lossdsl.compile(text, reduction=reduction)
    inputs, wrt = _inputs_of(compiled), CASES[text][0]
    value, gradient = _expected(text, reduction)
    np.testing.assert_allclose(compiled(**inputs), value, **TOLERANCE)  # the value's kernel
    fused_value, fused_gradient = compiled.value_and_grad(wrt, **inputs)
    np.testing.assert_allclose(fused_value, value, **TOLERANCE)
    np.testing.assert_allclose(fused_gradient, gradient, **TOLERANCE)


# losses identically 0 under reduction="sum" (each sample's value, or each pair's, is 0)
ZERO_VALUED = {
    "s - stop_gradient(s)": lambda s, **_: _carried(s),
    "c*(s - stop_gradient(s))": lambda s, c, **_: c * _carried(s),
    "pairsum(partner(s) - stop_gradient(partner(s)), g)":
        lambda s, g, **_: _same_group(g) * (1.0 - jnp.eye(N)) @ _carried(s),
    "classpairsum(partner(-z) - stop_gradient(partner(-z)))":
        lambda z, **_: (K - 1.0) * jnp.sum(_carried(-z), axis=1),
}


@pytest.mark.parametrize("target", ["cpu", "parallel", "cuda"])
@pytest.mark.parametrize("text", list(ZERO_VALUED))
def test_kernel_whose_outputs_are_all_constants(text, target):
    compiled = lossdsl.compile(text, reduction="sum", target=target)
    inputs = _inputs_of(compiled)
    wrt = "z" if "z" in inputs else "s"
    given = {name: value for name, value in INPUTS.items() if name != wrt}
    reference = jax.grad(lambda x: jnp.sum(ZERO_VALUED[text](**{wrt: x}, **given)))
    assert float(compiled(**inputs)) == 0.0  # the value's kernel: the constant 0 alone
    value, gradient = compiled.value_and_grad(wrt, **inputs)
    assert float(value) == 0.0
    np.testing.assert_allclose(np.asarray(gradient), reference(INPUTS[wrt]), **TOLERANCE)
