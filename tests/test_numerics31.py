"""Silent wrong numbers where a square overflows or underflows in range: ``log1p(x*x)`` and
the quotients by ``1 + x*x`` (its derivatives among them) past |x| = 1.3e154 in float64
(1.8e19 in float32), and the Hessian of ``1/(x*x)`` below |x| = 1e-154.

The stabilize phase guards ``log1p(x^k)`` and ``a/(1 + x*x)`` by ``|x| <= 2^32``
(``log1p_of_power``, ``quotient_by_one_plus_square``: beyond it ``1 + x*x`` rounds to
``x*x``, and ``k log|x|``, ``(a/x)/x`` take over, selected as the argument of the one
log1p or division) and writes ``a/(x*x)`` as ``(a (1/x)) (1/x)`` (``quotient_by_square``).

References: exact derivatives evaluated in mpmath at 60 digits (checked against mpmath's
central differences in float64's range)."""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest

import lossdsl

mpmath.mp.dps = 60


@functools.cache
def per_sample(source: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(source, reduction="none")


def _close(got: float, exact: mpmath.mpf, rtol: float, dtype) -> bool:
    """Whether ``got`` is the ``dtype`` rounding of ``exact`` within ``rtol``: inf of the
    right sign where it overflows, anything below the normal range where it underflows (a
    subnormal or 0; the sign of a 0 is not checked)."""
    info = np.finfo(dtype)
    if abs(exact) > mpmath.mpf(float(info.max)):
        return bool(np.isinf(got)) and np.sign(got) == mpmath.sign(exact)
    expected = float(exact)
    if abs(expected) < float(info.tiny):
        return abs(got) < float(info.tiny)
    return bool(np.isfinite(got)) and abs(got - expected) <= rtol * abs(expected)


def _log1p_square(x):
    return mpmath.log1p(x * x)


# (source, value, gradient, Hessian) in mpmath
FORMS = [
    ("log1p(x*x)", _log1p_square, lambda x: 2 * x / (1 + x * x),
     lambda x: 2 * (1 - x * x) / (1 + x * x) ** 2),
    ("log1p(x^2)", _log1p_square, lambda x: 2 * x / (1 + x * x),
     lambda x: 2 * (1 - x * x) / (1 + x * x) ** 2),
    ("0.5*log1p(x*x)", lambda x: _log1p_square(x) / 2, lambda x: x / (1 + x * x),
     lambda x: (1 - x * x) / (1 + x * x) ** 2),
    ("x/(1 + x*x)", lambda x: x / (1 + x * x), lambda x: (1 - x * x) / (1 + x * x) ** 2,
     lambda x: 2 * x * (x * x - 3) / (1 + x * x) ** 3),
    ("1/(1 + x*x)", lambda x: 1 / (1 + x * x), lambda x: -2 * x / (1 + x * x) ** 2,
     lambda x: (6 * x * x - 2) / (1 + x * x) ** 3),
    ("1/(1 + x^2)", lambda x: 1 / (1 + x * x), lambda x: -2 * x / (1 + x * x) ** 2,
     lambda x: (6 * x * x - 2) / (1 + x * x) ** 3),
    ("3*x/(1 + x*x)", lambda x: 3 * x / (1 + x * x),
     lambda x: 3 * (1 - x * x) / (1 + x * x) ** 2,
     lambda x: 6 * x * (x * x - 3) / (1 + x * x) ** 3),
    ("1/(x*x)", lambda x: 1 / (x * x), lambda x: -2 / x**3, lambda x: 6 / x**4),
    ("1/x^2", lambda x: 1 / (x * x), lambda x: -2 / x**3, lambda x: 6 / x**4),
    ("x^-2", lambda x: 1 / (x * x), lambda x: -2 / x**3, lambda x: 6 / x**4),
    ("5/(x*x)", lambda x: 5 / (x * x), lambda x: -10 / x**3, lambda x: 30 / x**4),
]
IDS = [f[0] for f in FORMS]

MAGNITUDES = {
    np.float64: [10.0**e for e in range(-300, 301, 4)] + [1.5e103, 3e130, 7e153, 1.4e154,
                                                          2e154, 1e155, 4.3e9, 4.2e9],
    np.float32: [10.0**e for e in range(-37, 39)] + [2e19, 1.8e19, 1e-19, 4.3e9, 4.2e9],
}
# float64 derivatives within 1e-13 of their size; float32 within 1e-5 (the intermediate
# products round several times)
RTOL = {np.float64: 1e-13, np.float32: 1e-5}


def _sweep(dtype) -> np.ndarray:
    magnitudes = np.array(MAGNITUDES[dtype], dtype=dtype)
    return np.concatenate([magnitudes, -magnitudes])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("source", "value", "gradient", "hessian"), FORMS, ids=IDS)
def test_squares_in_range_across_the_range(source, value, gradient, hessian, dtype):
    """Value, gradient and Hessian against mpmath from |x| = 1e-300 to 1e300 (float32: its
    normal range), both signs. log1p(x*x) was inf beyond |x| = 1.3e154 (float32: 1.8e19)
    with a gradient of 0 (for 2/x), x/(1 + x*x) 0 (for 1/x); the Hessian of 1/(x*x) was NaN
    (for +inf) below 1e-154."""
    loss = per_sample(source)
    x = _sweep(dtype)
    v = loss(x=x)
    g, h = loss.grad_and_hessian("x", x=x)
    assert v.dtype == g.dtype == h.dtype == dtype
    wrong = []
    for i, xi in enumerate(x):
        exact_x = mpmath.mpf(float(xi))
        for name, got, exact in (("value", v[i], value(exact_x)),
                                 ("gradient", g[i], gradient(exact_x)),
                                 ("hessian", h[i], hessian(exact_x))):
            if not _close(float(got), exact, RTOL[dtype], dtype):
                wrong.append((name, float(xi), float(got), float(exact)))
    assert not wrong, wrong[:6]


@pytest.mark.parametrize(("source", "value", "gradient", "hessian"), FORMS, ids=IDS)
def test_the_references_are_the_derivatives(source, value, gradient, hessian):
    """The mpmath gradients and Hessians above are those of the values (central
    differences at 60 digits)."""
    for xi in (-3e7, -2.5, -0.3, 1e-5, 0.7, 1.0, 4.0, 2e11):
        at = mpmath.mpf(xi)
        step = abs(at) * mpmath.mpf(10) ** -20
        for derivative, order in ((gradient, 1), (hessian, 2)):
            exact = derivative(at)
            difference = mpmath.diff(value, at, order, h=step)
            assert abs(difference - exact) <= 1e-12 * (abs(exact) + abs(value(at) / at**order))


def test_the_hessian_of_a_reciprocal_square_is_infinite_not_nan():
    """The journey's reproducer: 1/(x*x) at x = 1e-200 has the value +inf, the gradient
    -inf (for -2e600) and the Hessian +inf (for 6e800), not NaN (inf - inf)."""
    loss = per_sample("1/(x*x)")
    x = np.array([1e-200, -1e-200, 1e-160, 1e-300])
    v, g = loss.value_and_grad("x", x=x)
    _, h = loss.grad_and_hessian("x", x=x)
    np.testing.assert_array_equal(v, [np.inf] * 4)
    np.testing.assert_array_equal(g, [-np.inf, np.inf, -np.inf, -np.inf])
    np.testing.assert_array_equal(h, [np.inf] * 4)


def test_log1p_of_a_square_beyond_the_square():
    """The journey's reproducer: log1p(x*x) at 1e200 is 2 log(1e200) = 921.03..., its
    gradient 2e-200 and its Hessian -2e-400 (0 in float64), where x*x overflows."""
    loss = per_sample("log1p(x*x)")
    x = np.array([1e200, -1e300, 3e154])
    v, g = loss.value_and_grad("x", x=x)
    np.testing.assert_allclose(v, 2 * np.log(np.abs(x)), rtol=1e-15)
    np.testing.assert_allclose(g, 2 / x, rtol=1e-15)
    h = loss.hessian("x", x=np.array([1e150, 3e154]))
    np.testing.assert_allclose(h, [-2e-300, 0.0], rtol=1e-14, atol=1e-308)


def test_the_guard_agrees_on_both_sides():
    """Near the guard |x| = 2^32 the two forms of log1p(x*x) and x/(1 + x*x) agree to the
    rounding (a few ulps): no step in the value or its derivatives."""
    x = np.array([np.nextafter(2.0**32, 0), 2.0**32, np.nextafter(2.0**32, np.inf)])
    for source, value, gradient, hessian in FORMS[:4]:
        loss = per_sample(source)
        v = loss(x=x)
        g, h = loss.grad_and_hessian("x", x=x)
        for got, reference in ((v, value), (g, gradient), (h, hessian)):
            exact = np.array([float(reference(mpmath.mpf(float(xi)))) for xi in x])
            np.testing.assert_allclose(got, exact, rtol=2e-15, err_msg=source)


@pytest.mark.parametrize("c", [1.0, 2.5e-3])
def test_cauchy_across_the_range(c):
    """cauchy is c^2/2 log1p((r/c)^2), guarded by the compiler (it wrote the guard itself,
    at |r| = 1e8 c, before log1p_of_power): value, gradient and Hessian in p against mpmath
    for |r| from 1e-300 to 1e300."""
    loss = per_sample(f"cauchy(y, p, {c!r})")
    r = _sweep(np.float64)
    y = np.full_like(r, 3.0)
    p = y + r
    v = loss(y=y, p=p)
    g, h = loss.grad_and_hessian("p", y=y, p=p)
    wrong = []
    for i in range(len(r)):
        t = (mpmath.mpf(float(p[i])) - 3) / c
        exact = (c * c / 2 * mpmath.log1p(t * t), c * t / (1 + t * t),
                 (1 - t * t) / (1 + t * t) ** 2)
        for name, got, want in zip(("value", "gradient", "hessian"), (v[i], g[i], h[i]), exact):
            if not _close(float(got), want, 1e-13, np.float64):
                wrong.append((name, float(r[i]), float(got), float(want)))
    assert not wrong, wrong[:6]


REGULAR = [f for f in FORMS if "1 +" in f[0] or "1p" in f[0]]  # finite at x = 0


@pytest.mark.parametrize(("source", "value", "gradient", "hessian"), REGULAR,
                         ids=[f[0] for f in REGULAR])
def test_the_branch_not_taken_stays_finite_at_zero(source, value, gradient, hessian):
    """At x = 0 (and a subnormal x) the guarded forms keep their values and derivatives:
    the form beyond the guard, not selected there, reads max(|x|, 2^32), not |x| (its
    log(0) and 1/0 would be NaN in JAX's autodiff of the printed value, ``0 * inf``).
    Checked in the kernels and in lossdsl.jax, with lossdsl's derivatives and JAX's."""
    x = np.array([0.0, -0.0, 5e-324, 1e-300, 1e200])
    exact = [[float(f(mpmath.mpf(float(xi)))) for xi in x] for f in (value, gradient, hessian)]
    loss = per_sample(source)
    got = [loss(x=x), *loss.grad_and_hessian("x", x=x)]
    for computed, reference in zip(got, exact):
        np.testing.assert_allclose(computed, reference, rtol=1e-14, atol=1e-320, err_msg=source)
    jax = pytest.importorskip("jax")
    import lossdsl.jax

    with jax.enable_x64(True):
        for derivatives in ("lossdsl", "jax"):
            f = lossdsl.jax.loss(source, reduction="sum", derivatives=derivatives)
            at = jax.numpy.asarray(x)
            g = jax.grad(lambda v, f=f: f(x=v))(at)
            h = np.diag(np.asarray(jax.hessian(lambda v, f=f: f(x=v))(at)))
            for computed, reference in zip((g, h), exact[1:]):
                np.testing.assert_allclose(np.asarray(computed), reference, rtol=1e-14,
                                           atol=1e-320, err_msg=f"{source} {derivatives}")


def test_the_guarded_log1p_costs_no_log_or_division_more():
    """The guard selects the argument of one log1p (and of one division by 1 + w, in the
    derivatives), not between two forms that would each be computed: the kernel of
    log1p(x*x)'s value, gradient and Hessian has the one log1p and the one division of
    the unguarded form (2x/(1 + x*x) and its square), as before the guard."""
    from lossdsl import compiler

    compiled = lossdsl.compile("log1p(x*x)")
    spec = compiled.specialization(compiled.default_ranks())
    request = compiler.KernelRequest(np.dtype("float64"), "cpu", True, ("x",), ("x",))
    source = compiler.generate_source(spec, request).source
    body = source[source.index("def body0"):source.index("def loop0")]
    assert body.count("math.log1p(") == 1 and "math.log(" not in body
    assert body.count(" / ") == 1
