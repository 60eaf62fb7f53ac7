"""The carriers phase (``passes/rules/expand.py``, run by ``passes.lower``): once derivatives
are taken, the values that only they needed are dropped from the graphs the kernels evaluate
(``x - stop_gradient(x)`` is 0, ``x + stop_gradient(e - x)`` is ``e``).

Checked: each rule alone; no library loss's lowered value graph keeps a carrier; the value
kernels of negative_binomial and poisson(full=1) no longer compute the former form; the
values against scipy, mpmath and hand-written NumPy formulas, including where the former form
overflows (it made them NaN) and where the value must stay inf or NaN; the derivatives
against central differences of scipy; the JAX printer (which differentiates the code itself)
keeps the carriers, with the kernels' values where the carried value is not finite (its
``x - stop_gradient(x)`` is 0 there too, not NaN) and the carrier's derivatives.
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest
from scipy import stats

import lossdsl
from lossdsl import catalog, compiler
from lossdsl.ir.build import ZERO, result_axes
from lossdsl.ir.node import Node, node, toposort
from lossdsl.passes.lower import lower
from lossdsl.passes.rules.expand import CARRIERS

X = node("input", (), "x", ("n0",))
Y = node("input", (), "y", ("n0",))
E = node("input", (), "e", ("n0",))


def raw(op: str, *args: Node) -> Node:
    """``op(args)`` exactly as written: no folding, ordering or identities."""
    return node(op, args, None, result_axes(op, args))


def stopped(x: Node) -> Node:
    return raw("stop_gradient", x)


@functools.cache
def compiled(call: str, reduction: str = "none") -> lossdsl.CompiledLoss:
    return lossdsl.compile(call, reduction=reduction)


def lowered_value(call: str) -> Node:
    """The value graph of ``call`` as code generation sees it (after ``lower``)."""
    loss = compiled(call)
    spec = loss.specialization(loss.default_ranks())
    (value,) = compiler.optimize([spec.objective.value])
    return value


def values(call: str, **inputs: float) -> np.ndarray:
    """The per-sample values of ``call`` at the given points (arrays of equal length)."""
    arrays = {name: np.atleast_1d(np.asarray(v, dtype=np.float64)) for name, v in inputs.items()}
    with np.errstate(all="ignore"):
        return np.asarray(compiled(call)(**arrays))


# --- the rules alone -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "before", "after"), [
    ("carrier_minus_stopped", raw("sub", X, stopped(X)), ZERO),
    ("carrier_minus_stopped", raw("sub", stopped(X), X), ZERO),
    ("carrier_plus_stopped_difference", raw("add", X, stopped(raw("sub", E, X))), E),
    ("carrier_plus_stopped_difference", raw("add", stopped(raw("sub", E, X)), X), E),
])
def test_each_rule_alone(name: str, before: Node, after: Node) -> None:
    assert CARRIERS.rule_named(name)(before) is after


@pytest.mark.parametrize("other", [
    raw("sub", X, stopped(Y)),  # a different value stopped
    raw("sub", X, Y),
    raw("add", X, stopped(X)),  # 2x in value, not a carrier
    raw("add", X, stopped(raw("sub", E, Y))),
    raw("add", X, stopped(raw("sub", X, E))),  # x + (x - e): not e
])
def test_rules_leave_other_nodes_alone(other: Node) -> None:
    assert all(r(other) is None for r in CARRIERS.rules if other.op in r.ops)


def test_lower_drops_a_carrier_inside_a_product() -> None:
    """``(x - stop_gradient(x)) * stop_gradient(y) + x^2`` lowers to ``x^2``: the 0 folds the
    product (rank_xendcg's form)."""
    square = raw("mul", X, X)
    carried = raw("add", raw("mul", raw("sub", X, stopped(X)), stopped(Y)), square)
    assert lower([carried]) == lower([square])


# --- what the library's kernels compute ----------------------------------------------------------


def carriers_left(root: Node) -> list[str]:
    """The nodes of ``root``'s graph that a carrier rule would still rewrite."""
    return [str(n)[:120] for n in toposort([root]) if CARRIERS.rewrite_once(n) is not None]


def test_no_library_value_graph_keeps_a_carrier() -> None:
    for entry in catalog.entries():
        assert carriers_left(lowered_value(entry.call_expression())) == [], entry.name


def test_negative_binomial_value_kernels_compute_no_former_form() -> None:
    """The former form's lgamma(y + 1) - log_poch(1/alpha, y) is left out of the value and
    value + gradient kernels (the exact form has no lgamma), and kept where the gradient
    with respect to alpha needs it."""
    loss = compiled("negative_binomial(y, z, alpha=0.5)")
    spec = loss.specialization(loss.default_ranks())
    for grads in ((), ("z",)):
        request = compiler.KernelRequest(np.dtype("float64"), "cpu", True, grads, ())
        source = compiler.generate_source(spec, request).source
        assert "lgamma" not in source, grads
    value = lowered_value("negative_binomial(y, z, alpha=0.5)")
    assert not any(n.op in ("lgamma", "log_poch", "softplus") for n in toposort([value]))


def test_poisson_full_value_selects_the_exact_form() -> None:
    """poisson(full=1)'s value is where(y > 1, exact, p - y log(p + eps)): the first branch
    no longer adds the former form and subtracts it again."""
    value = lowered_value("poisson(y, p, full=1)")
    (select,) = [n for n in toposort([value]) if n.op == "where"]
    assert select.args[1].op == "stop_gradient"


def test_jax_printer_keeps_the_carriers() -> None:
    """JAX differentiates the printed code itself: there the former form must stay."""
    loss = compiled("poisson(y, p, full=1)")
    spec = loss.specialization(loss.default_ranks())
    (printed,) = compiler.optimize([spec.objective.value], differentiated=True)
    assert carriers_left(printed)


# --- values against independent references -------------------------------------------------------


def negative_binomial_nll(y: float, z: float, alpha: float) -> float:
    """-log NB(y; r = 1/alpha, mean exp(z)) in mpmath at 400 digits (y up to 1e307)."""
    with mpmath.workdps(400):
        y_, r = mpmath.mpf(y), 1 / mpmath.mpf(alpha)
        mean = mpmath.exp(mpmath.mpf(z))
        log_pmf = (mpmath.loggamma(y_ + r) - mpmath.loggamma(r) - mpmath.loggamma(y_ + 1)
                   + r * mpmath.log(r / (r + mean)) + y_ * mpmath.log(mean / (r + mean)))
        return float(-log_pmf)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_negative_binomial_values(alpha: float) -> None:
    """Against scipy's nbinom at small counts and mpmath at large ones (scipy's lgamma
    differences lose 3e-10 at 2e6), up to 1e307, where the former form's lgamma(y + 1)
    overflows (the value was inf - inf = NaN)."""
    y = np.array([0.0, 1.0, 3.0, 40.0])
    z = np.array([-2.0, 0.3, 1.0, 3.5])
    mean, r = np.exp(z), 1 / alpha
    expected = -stats.nbinom.logpmf(y, r, r / (r + mean))
    call = f"negative_binomial(y, z, alpha={alpha})"
    np.testing.assert_allclose(values(call, y=y, z=z), expected, rtol=1e-12)
    large_y = np.array([2e6, 1e150, 1e307])
    large_z = np.log(large_y) + np.array([0.2, -0.1, 0.0])
    expected = [negative_binomial_nll(a, b, alpha) for a, b in zip(large_y, large_z)]
    np.testing.assert_allclose(values(call, y=large_y, z=large_z), expected, rtol=1e-12)


def test_negative_binomial_stays_infinite_or_nan_where_it_is() -> None:
    """An infinite mean makes every count impossible (NLL inf), a mean of 0 makes 0 certain
    (NLL 0) and any other count impossible; NaN stays NaN. The former form was NaN at each."""
    call = "negative_binomial(y, z)"
    got = values(call, y=[5.0, 0.0, 0.0, 5.0, 5.0], z=[np.inf, np.inf, -np.inf, -np.inf, np.nan])
    assert got[0] == np.inf and got[1] == np.inf and got[2] == 0.0 and got[3] == np.inf
    assert np.isnan(got[4])


def poisson_full_nll(y: float, p: float, eps: float = 1e-8) -> float:
    """torch's PoissonNLLLoss(full=True): p - y log(p + eps) + y log y - y + log(2 pi y)/2
    (y > 1), in mpmath at 60 digits."""
    with mpmath.workdps(60):
        y_, p_ = mpmath.mpf(y), mpmath.mpf(p)
        return float(p_ - y_ * mpmath.log(p_ + eps) + y_ * mpmath.log(y_) - y_
                     + mpmath.log(2 * mpmath.pi * y_) / 2)


def test_poisson_full_values() -> None:
    y = np.array([2.0, 7.0, 1e8, 3e5])
    p = np.array([0.5, 7.5, 1e8, 2.9e5])
    expected = [poisson_full_nll(a, b) for a, b in zip(y, p)]
    np.testing.assert_allclose(values("poisson(y, p, full=1)", y=y, p=p), expected, rtol=1e-11)


def test_poisson_full_stays_infinite_or_nan_where_it_is() -> None:
    """An infinite rate: NLL inf (was inf - inf = NaN); a NaN or negative rate: NaN, which
    the exact form gives too (its log of a negative rate)."""
    got = values("poisson(y, p, full=1)", y=[5.0, 5.0, 5.0], p=[np.inf, np.nan, -1.0])
    assert got[0] == np.inf
    assert np.isnan(got[1]) and np.isnan(got[2])


def test_gaussian_nll_divides_by_the_clamped_variance() -> None:
    """torch's GaussianNLLLoss clamps var at eps and divides by the clamped value:
    var + stop_gradient(max(var, eps) - var) is now max(var, eps) itself (it rounded by
    ulps of var: 4e-5 off at var = -1); an infinite variance gives inf, NaN stays NaN."""
    var = np.array([-1.0, 0.0, 1e-7, 2.5, np.inf, np.nan])
    clamped = np.maximum(var, 1e-6)  # NaN propagates, as torch.clamp
    with np.errstate(all="ignore"):
        expected = 0.5 * (np.log(clamped) + (2.0 - 1.0) ** 2 / clamped)
    got = values("gaussian_nll(y, p, var)", y=np.ones(6), p=np.full(6, 2.0), var=var)
    np.testing.assert_allclose(got[:5], expected[:5], rtol=1e-15)
    assert np.isnan(got[5])


def test_bce_values() -> None:
    """torch's BCELoss: each log clamped at -100."""
    y = np.array([1.0, 0.0, 0.3, 1.0, 0.0, 0.95])
    p = np.array([0.0, 1.0, 1e-13, 0.5, 1e-300, 1.0])
    with np.errstate(divide="ignore"):
        expected = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    np.testing.assert_allclose(values("bce(y, p)", y=y, p=p), expected, rtol=1e-15)


def test_rank_xendcg_value() -> None:
    """Each query's softmax cross-entropy against the target (2^y - u)/sum(2^y - u), 0 for a
    query of one document: the carrier term adds nothing."""
    rng = np.random.default_rng(3)
    q = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    y = rng.integers(0, 4, q.size).astype(np.float64)
    z = rng.normal(size=q.size) * 3
    u = rng.uniform(0, 1, q.size)
    expected = 0.0
    for group in np.unique(q):
        rows = q == group
        if rows.sum() == 1:
            continue
        gains = 2.0 ** y[rows] - u[rows]
        log_softmax = z[rows] - np.log(np.sum(np.exp(z[rows])))
        expected += -np.sum(gains / gains.sum() * log_softmax)
    loss = compiled("rank_xendcg(y, z, q, u)", "sum")
    np.testing.assert_allclose(loss(y=y, z=z, q=q, u=u), expected, rtol=1e-13)


# --- derivatives, which the carriers still give --------------------------------------------------


def test_negative_binomial_derivatives_are_the_former_forms() -> None:
    """Gradient and Hessian in z against central differences of scipy's -logpmf (the
    derivatives come from the graph before the carriers phase, which is unchanged)."""
    y = np.array([0.0, 2.0, 9.0, 30.0])
    z = np.array([-1.0, 0.4, 2.0, 3.0])
    r, step = 2.0, 1e-4

    def nll(at: np.ndarray) -> np.ndarray:
        return -stats.nbinom.logpmf(y, r, r / (r + np.exp(at)))

    gradient = (nll(z + step) - nll(z - step)) / (2 * step)
    hessian = (nll(z + step) - 2 * nll(z) + nll(z - step)) / step ** 2
    loss = compiled("negative_binomial(y, z, alpha=0.5)")
    got_gradient, got_hessian = loss.grad_and_hessian("z", y=y, z=z)
    np.testing.assert_allclose(got_gradient, gradient, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got_hessian, hessian, rtol=1e-5, atol=1e-7)


GROUPS = np.array([0, 0, 0, 1, 1])
SCORES = np.array([0.3, -1.2, 0.5, 2.0, 0.7])


def _group_sizes(groups: np.ndarray) -> np.ndarray:
    return np.array([np.sum(groups == g) for g in groups], dtype=float)


# Carriers that are the only term with a group's or a pair sum's axis: dropped, the sum is
# built again around what is left over the same axis (ir.build.rebuilt; more in
# tests/test_reduction_rebuild.py).
# (text, value, gradient in s) for GROUPS, SCORES and t = SCORES reversed, summed
CARRIER_IN_A_REDUCTION = [
    ("log(pairsum(exp(partner(s) - stop_gradient(partner(s))), g))",
     lambda s, t: np.sum(np.log(_group_sizes(GROUPS) - 1)),
     # each sample is a partner of the n - 1 others, each pair sum n - 1 terms of e^0
     lambda s, t: np.ones_like(s)),
    ("groupmax(s, g)*(s - stop_gradient(s)) + groupsum(t, g)",
     lambda s, t: np.sum([np.sum(t[GROUPS == g]) for g in GROUPS]),
     lambda s, t: np.array([np.max(s[GROUPS == g]) for g in GROUPS])),
]


@pytest.mark.parametrize("text, value, gradient", CARRIER_IN_A_REDUCTION,
                         ids=[c[0] for c in CARRIER_IN_A_REDUCTION])
def test_a_carrier_alone_in_a_group_or_pair_sum_is_dropped(text, value, gradient) -> None:
    loss = compiled(text, "sum")
    inputs = {"s": SCORES, "g": GROUPS, "t": SCORES[::-1].copy()}
    inputs = {name: inputs[name] for name in loss.inputs}
    t = inputs.get("t")
    assert loss(**inputs) == pytest.approx(value(SCORES, t), rel=1e-12)
    np.testing.assert_allclose(loss.grad("s", **inputs), gradient(SCORES, t), atol=1e-12)
    assert carriers_left(lowered_value(text)) == []


# --- the JAX printer: carriers kept, with the kernels' values -------------------------------


def test_jax_carrier_is_zero_where_the_carried_value_is_infinite(jax_x64) -> None:
    """``s + stop_gradient(tanh(s) - s)`` (held as ``stop_gradient(tanh(s)) + (s -
    stop_gradient(s))``) is tanh(s) at +-inf too (it was inf - inf = NaN), and its
    derivatives are those of s (JAX's autodiff of the hand-written formula: 1, then 0)."""
    jax = jax_x64
    import lossdsl.jax

    text = "s + stop_gradient(tanh(s) - s)"
    s = np.array([-np.inf, -30.0, -0.7, 0.0, 2.5, np.inf])
    loss = lossdsl.jax.loss(text, reduction="none")
    for got in (np.asarray(loss(s=s)), np.asarray(compiled(text)(s=s))):
        np.testing.assert_allclose(got, np.tanh(s), rtol=2e-16)  # JAX's tanh: an ulp off
        assert got[0] == -1.0 and got[-1] == 1.0

    def formula(x):
        return x + jax.lax.stop_gradient(jax.numpy.tanh(x) - x)

    def total(x):
        return jax.numpy.sum(loss(s=x))

    gradient = jax.grad(total)(s)
    np.testing.assert_array_equal(gradient, jax.vmap(jax.grad(formula))(s))
    np.testing.assert_array_equal(gradient, np.ones_like(s))
    np.testing.assert_array_equal(jax.jit(jax.grad(total))(s), np.ones_like(s))
    second = jax.jvp(jax.grad(total), (s,), (np.ones_like(s),))[1]
    np.testing.assert_array_equal(second, jax.vmap(jax.grad(jax.grad(formula)))(s))


def test_jax_poisson_full_is_infinite_at_an_infinite_rate(jax_x64) -> None:
    """poisson(full=1) through JAX: inf at p = inf as the kernels (the former form's
    ``p - y log p`` carried, inf - inf, made it NaN), torch's values elsewhere, and the
    former form's derivative ``1 - y/(p + eps)`` (hand-written, differentiated by JAX)."""
    jax = jax_x64
    import lossdsl.jax

    y = np.array([5.0, 2.0, 7.0, 3e5])
    p = np.array([np.inf, 0.5, 7.5, 2.9e5])
    loss = lossdsl.jax.loss("poisson(y, p, full=1)", reduction="none")
    got = np.asarray(loss(y=y, p=p))
    assert got[0] == np.inf
    expected = [poisson_full_nll(a, b) for a, b in zip(y[1:], p[1:])]
    np.testing.assert_allclose(got[1:], expected, rtol=1e-11)

    def former(rate, counts):
        return rate - counts * jax.numpy.log(rate + 1e-8)

    gradient = jax.grad(lambda rate: jax.numpy.sum(loss(y=y[1:], p=rate)))(p[1:])
    np.testing.assert_allclose(gradient, jax.vmap(jax.grad(former))(p[1:], y[1:]), rtol=1e-13)
