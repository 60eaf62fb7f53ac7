"""The stable-tail primitives (issue 13, item 6): erfc, log_ndtr, logaddexp, log1mexp, xlog1py,
and the derivative of trigamma.

Each primitive is compiled alone (``reduction="none"``, so one value per element) and checked:

* values against scipy.special / NumPy / mpmath at ordinary points and in the tails (log_ndtr
  and erfc at +-40 sigma, logaddexp at +-1e308 and inf, log1mexp next to 0 and at -inf),
* gradient and Hessian against central finite differences at ordinary points, and against
  exact derivatives evaluated with mpmath at 50 digits in the tails, where a finite difference
  says nothing (a curvature of 1e-300, a value of -5e7 whose slope is 1e4),
* float32 kernels against the float64 ones on the same numbers,
* the NumPy reference (constant folding, the test oracle) against the same references, and
* the CUDA target (Numba's simulator on CI) against the CPU target.

One fused kernel per primitive and dtype computes value, gradients and Hessians together.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
import scipy.special

import lossdsl
from lossdsl.latex import to_latex
from lossdsl.reference import ELEMENTWISE_NUMPY, fold

mpmath.mp.dps = 50
F32 = np.finfo(np.float32).eps

# Simulated CUDA kernels and the NumPy reference compute the untaken branches of the helpers
# with NumPy scalars, which warn where a GPU silently gives IEEE inf/nan.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|divide by zero|overflow) encountered:RuntimeWarning")

LOSSES = {
    "erfc": "erfc(x)",
    "log_ndtr": "log_ndtr(x)",
    "log1mexp": "log1mexp(x)",
    "logaddexp": "logaddexp(x, y)",
    "xlog1py": "xlog1py(x, y)",
}
ARGUMENTS = {"erfc": ("x",), "log_ndtr": ("x",), "log1mexp": ("x",), "logaddexp": ("x", "y"),
             "xlog1py": ("x", "y")}


@functools.cache
def _compiled(name: str, target: str = "cpu") -> lossdsl.CompiledLoss:
    return lossdsl.compile(LOSSES[name], reduction="none", target=target)


def fused(compiled, inputs: dict) -> list[np.ndarray]:
    """[value, *gradients, *Hessians] with respect to every argument, from one kernel (as
    tests/backend/test_cuda.py does)."""
    wrt = tuple(inputs)
    return [np.asarray(r) for r in compiled.compute(True, wrt, wrt, inputs, None)]


def _mp(values) -> list:
    return [mpmath.mpf(float(v)) for v in values]


# ------------------------------------------------------------------------------------ values

TAIL_X = np.array([-1e10, -1e4, -40.0, -38.0, -20.0, np.nextafter(-10.0, -11.0), -10.0, -9.99,
                   -5.0, -1.0, 0.0, 0.5, 3.0, 8.0, 10.0, 26.0, 27.2, 30.0, 40.0, np.inf, -np.inf,
                   np.nan])


def _condition_rtol(x, derivative, value, floor=4e-16):
    """Relative error a correctly rounded argument allows: eps |x f'(x) / f(x)| (log_ndtr at
    x = 10 is -7.6e-24 with slope 7.7e-23, so one ulp of x moves it by 100 ulps)."""
    with np.errstate(all="ignore"):
        kappa = np.abs(x * derivative / value)
    return floor + 2.2e-16 * np.nan_to_num(kappa, nan=0.0, posinf=0.0)


def test_erfc_and_log_ndtr_values_at_40_sigma():
    x = TAIL_X
    for name, reference, slope in (
            ("erfc", scipy.special.erfc, -2 / math.sqrt(math.pi) * np.exp(-x * x)),
            ("log_ndtr", scipy.special.log_ndtr,
             np.exp(-x * x / 2) / math.sqrt(2 * math.pi) / scipy.special.ndtr(x))):
        expected = reference(x)
        for value in (_compiled(name)(x=x), ELEMENTWISE_NUMPY[name](x)):
            assert np.array_equal(np.isnan(value), np.isnan(expected)), (name, value)
            rtol = _condition_rtol(x, slope, expected, floor=1e-15)
            # erfc past 26.5 is subnormal, then 0 (erfc(30) = 2.6e-393 underflows)
            close = np.abs(value - expected) <= rtol * np.abs(expected) + 1e-320
            close |= (value == expected) | np.isnan(expected)  # the infinities; NaN (checked above)
            assert close.all(), (name, x[~close], value[~close], expected[~close])
    log_ndtr = _compiled("log_ndtr")(x=np.array([-40.0, -1e4, 40.0]))
    assert log_ndtr[0] == pytest.approx(-804.6084420137539, rel=1e-15)
    assert log_ndtr[1] == pytest.approx(float(mpmath.log(mpmath.ncdf(-1e4))), rel=1e-15)
    assert log_ndtr[2] == 0.0  # -2e-350 rounds to -0
    assert _compiled("erfc")(x=np.array([30.0]))[0] == 0.0 == float(mpmath.erfc(30))


def test_logaddexp_values_at_the_edges_of_float64():
    big = 1e308
    x = np.array([0.0, 1.0, -3.0, big, big, -big, -big, np.inf, -np.inf, np.inf, -np.inf, 710.0,
                  -800.0, np.nan, 1.0, 5.0])
    y = np.array([0.0, 2.0, 5.0, big, -big, -big, big, np.inf, -np.inf, -np.inf, 3.0, 710.5,
                  -801.0, 1.0, np.nan, np.inf])
    expected = np.logaddexp(x, y)
    for value in (_compiled("logaddexp")(x=x, y=y), ELEMENTWISE_NUMPY["logaddexp"](x, y)):
        np.testing.assert_allclose(value, expected, rtol=4e-16, atol=0)
    assert np.isfinite(expected[3:7]).all()


LOG1MEXP_X = np.array([-1e-300, -1e-20, -1e-8, -0.1, np.nextafter(-math.log(2), 0.0),
                       -math.log(2), -1.0, -5.0, -40.0, -745.0, -800.0, -1e308, -np.inf, -0.0])


def _log1mexp_exact(x: float) -> float:
    if x == -math.inf:
        return 0.0
    if x == 0:
        return -math.inf
    return float(mpmath.log(-mpmath.expm1(mpmath.mpf(x))))


def test_log1mexp_values_next_to_zero_and_at_minus_infinity():
    x = LOG1MEXP_X
    expected = np.array([_log1mexp_exact(v) for v in x])
    for value in (_compiled("log1mexp")(x=x), ELEMENTWISE_NUMPY["log1mexp"](x)):
        np.testing.assert_allclose(value, expected, rtol=4e-16, atol=1e-320)
    # log(1 - e^x) is undefined for x > 0, and NaN stays NaN
    assert np.isnan(_compiled("log1mexp")(x=np.array([1e-300, 2.0, np.nan]))).all()


def test_xlog1py_values_as_scipy_including_x_equal_zero():
    x = np.array([0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 3.0, -2.0, 1e-300, 2.0, np.nan, -0.0])
    y = np.array([-1.0, np.nan, np.inf, 5.0, -1.0, 1e-20, 1e300, 0.5, 5.0, -2.0, 0.0, -1.0])
    expected = scipy.special.xlog1py(x, y)
    for value in (_compiled("xlog1py")(x=x, y=y), ELEMENTWISE_NUMPY["xlog1py"](x, y)):
        np.testing.assert_allclose(value, expected, rtol=4e-16, atol=0)


def test_constant_folding_uses_the_reference():
    assert fold("log_ndtr", [-40.0]) == pytest.approx(-804.6084420137539, rel=1e-15)
    assert fold("logaddexp", [math.inf, math.inf]) == math.inf
    assert fold("log1mexp", [-math.inf]) == 0.0
    assert fold("xlog1py", [0.0, -1.0]) == 0.0
    assert fold("erfc", [30.0]) == 0.0
    # a constant argument folds before any kernel exists: the scalar term is the value
    loss = lossdsl.compile("x + log_ndtr(-40) + logaddexp(1e308, 1e308)", reduction="none")
    assert "log_ndtr" not in str(loss.expression)
    assert loss(x=np.zeros(2))[0] == pytest.approx(-804.6084420137539 + 1e308)


# ------------------------------------------------------------------------------ derivatives

# Points per primitive: ordinary ones (finite differences apply) and tail ones (mpmath only).
ORDINARY = {
    "erfc": {"x": [-2.0, -0.3, 0.0, 0.7, 2.5]},
    "log_ndtr": {"x": [-9.0, -3.0, -0.5, 0.0, 1.5, 4.0]},
    "log1mexp": {"x": [-3.0, -1.0, -0.7, -0.6, -0.2]},
    "logaddexp": {"x": [0.0, 1.0, -3.0, 2.0, 30.0], "y": [0.0, 2.0, 5.0, -1.0, 31.0]},
    "xlog1py": {"x": [0.5, -2.0, 3.0, 1.0, 0.0], "y": [0.5, 2.0, -0.5, 10.0, 0.3]},
}
TAILS = {
    "erfc": {"x": [-30.0, 5.0, 10.0, 20.0, 26.0]},
    "log_ndtr": {"x": [-1e4, -1000.0, -40.0, -20.0, -10.5, -10.0, -9.5, 8.0, 30.0]},
    "log1mexp": {"x": [-1e-250, -1e-12, -1e-6, -40.0, -700.0]},
    "logaddexp": {"x": [1e308, -1e308, 700.0, -40.0, -745.0], "y": [-1e308, 1e308, 700.0, 0.0,
                                                                     -744.0]},
    "xlog1py": {"x": [1e-300, 5.0, -3.0, 1e10], "y": [-1.0 + 1e-15, 1e300, 1e-20, -0.5]},
}


def _exact_derivatives(name: str, x: float, y: float | None = None) -> list[float]:
    """[d/dx, (d/dy,) d2/dx2, (d2/dy2)] at 50 digits, from the closed forms (their agreement
    with mpmath.diff is checked on the ordinary points)."""
    mx = mpmath.mpf(x)
    my = None if y is None else mpmath.mpf(y)
    if name == "erfc":
        d1 = -2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-mx * mx)
        return [d1, -2 * mx * d1]
    if name == "log_ndtr":
        r = mpmath.npdf(mx) / mpmath.ncdf(mx)
        return [r, -r * (mx + r)]
    if name == "log1mexp":
        e = mpmath.exp(mx)
        return [e / mpmath.expm1(mx), -e / mpmath.expm1(mx) ** 2]
    if name == "logaddexp":
        sx, sy = (1 / (1 + mpmath.exp(my - mx)), 1 / (1 + mpmath.exp(mx - my)))
        return [sx, sy, sx * sy, sx * sy]
    if name == "xlog1py":
        return [mpmath.log1p(my), mx / (1 + my), mpmath.mpf(0), -mx / (1 + my) ** 2]
    raise AssertionError(name)


def _mp_function(name: str):
    return {"erfc": mpmath.erfc, "log_ndtr": lambda t: mpmath.log(mpmath.ncdf(t)),
            "log1mexp": lambda t: mpmath.log(-mpmath.expm1(t)),
            "logaddexp": lambda a, b: mpmath.log(mpmath.exp(a) + mpmath.exp(b)),
            "xlog1py": lambda a, b: a * mpmath.log1p(b)}[name]


def _split(results: list[np.ndarray], arity: int) -> tuple[list, list]:
    return results[1:1 + arity], results[1 + arity:]


@pytest.mark.parametrize("name", list(LOSSES))
def test_derivatives_against_finite_differences_and_mpmath(name):
    compiled = _compiled(name)
    arguments = ARGUMENTS[name]
    arity = len(arguments)
    # ordinary points: central differences of the compiled value and gradient
    inputs = {a: np.array(v) for a, v in ORDINARY[name].items()}
    gradients, hessians = _split(fused(compiled, inputs), arity)
    for k, argument in enumerate(arguments):
        step = 1e-6 * np.maximum(1.0, np.abs(inputs[argument]))
        plus, minus = dict(inputs), dict(inputs)
        plus[argument] = inputs[argument] + step
        minus[argument] = inputs[argument] - step
        value_plus, *rest_plus = fused(compiled, plus)
        value_minus, *rest_minus = fused(compiled, minus)
        np.testing.assert_allclose(gradients[k], (value_plus - value_minus) / (2 * step),
                                   rtol=1e-7, atol=1e-9, err_msg=f"{name} d/d{argument}")
        second = (rest_plus[k] - rest_minus[k]) / (2 * step)
        np.testing.assert_allclose(hessians[k], second, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{name} d2/d{argument}2")
    # the closed forms the tails are checked with agree with mpmath's own differentiation
    function = _mp_function(name)
    for point in zip(*ORDINARY[name].values()):
        exact = _exact_derivatives(name, *point)
        for k in range(arity):
            order = [0] * arity
            for n, expected in ((1, exact[k]), (2, exact[arity + k])):
                order[k] = n
                numeric = mpmath.diff(function, tuple(_mp(point)), tuple(order))
                assert abs(numeric - expected) <= mpmath.mpf(1e-30) * (1 + abs(expected))
    # tails: exact derivatives
    inputs = {a: np.array(v) for a, v in TAILS[name].items()}
    gradients, hessians = _split(fused(compiled, inputs), arity)
    for index, point in enumerate(zip(*TAILS[name].values())):
        exact = [float(v) for v in _exact_derivatives(name, *point)]
        x = point[0]
        for k in range(arity):
            for order, actual, expected in ((1, gradients[k][index], exact[k]),
                                            (2, hessians[k][index], exact[arity + k])):
                # log_ndtr's Hessian -r (x + r) cancels: r = -x - 1/x..., so x + r keeps
                # the digits of 1/x out of those of x, an error of x^2 ulps
                # (log1mexp's slope exp(x - log1mexp(x)) near 0 carries |log(-x)| ulps)
                rtol = 1e-12 + (4e-16 * x * x if name == "log_ndtr" and order == 2 else 0.0)
                assert actual == pytest.approx(expected, rel=rtol, abs=1e-300), (
                    name, point, k, order, actual, expected)


# Tails whose results float32 holds (it ends at 3.4e38: log1mexp's Hessian -1/x^2 at x = -1e-30
# would overflow, as would 1e308)
TAILS32 = {
    "log1mexp": {"x": [-1e-15, -1e-6, -40.0, -700.0]},
    "logaddexp": {"x": [1e38, -1e38, 80.0, -40.0, -100.0], "y": [-1e38, 1e38, 80.0, 0.0, -99.0]},
    "xlog1py": {"x": [1e-30, 5.0, -3.0, 1e10], "y": [-0.999, 1e30, 1e-20, -0.5]},
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_float32_kernels_follow_float64(name):
    compiled = _compiled(name)
    points = {a: np.array(ORDINARY[name][a] + TAILS32.get(name, TAILS[name])[a])
              for a in ARGUMENTS[name]}
    single = {a: v.astype(np.float32) for a, v in points.items()}
    results32 = fused(compiled, single)
    results64 = fused(compiled, {a: v.astype(np.float64) for a, v in single.items()})
    x = single["x"].astype(np.float64)
    for index, (actual, expected) in enumerate(zip(results32, results64)):
        assert actual.dtype == np.float32
        finite = np.isfinite(expected)
        assert np.array_equal(np.isfinite(actual), finite), (name, index, actual, expected)
        # float32 rounds to 6e-8; log_ndtr's Hessian cancels x^2 ulps of r = phi/Phi (see
        # above), and between -10 and 0 r itself carries x^2 ulps (of erfc(-x/sqrt2) and
        # exp(-x^2/2)), so x^4 there: 3e-4 at x = -9, still 4 digits
        quartic = np.where(x > -10, F32 * x**4, 0.0)
        rtol = 1e-5 + (8 * F32 * x * x + quartic if name == "log_ndtr" else 0.0 * x)
        scale = np.abs(expected[finite])
        error = np.abs(actual[finite] - expected[finite])
        assert (error <= rtol[finite] * scale + 1e-37).all(), (name, index, actual, expected)
    # (the fused float32 kernel of log_ndtr: the one its own case above compiles)
    tail, *_ = fused(_compiled("log_ndtr"), {"x": np.array([-40.0, -80.0], dtype=np.float32)})
    assert np.isfinite(tail).all() and tail[0] == pytest.approx(-804.6084, rel=1e-6)


def test_trigamma_has_a_derivative_and_digamma_a_hessian():
    x = np.array([0.1, 0.5, 1.0, 3.3, 15.9, 16.0, 100.0, -0.5, -2.3, 1e8])
    expected = scipy.special.polygamma(2, x)
    gradient = lossdsl.compile("trigamma(x)", reduction="none").grad("x", x=x)
    np.testing.assert_allclose(gradient, expected, rtol=1e-12)
    hessian = lossdsl.compile("digamma(x)", reduction="none").hessian("x", x=x)
    np.testing.assert_allclose(hessian, expected, rtol=1e-12)
    np.testing.assert_allclose(ELEMENTWISE_NUMPY["tetragamma"](x), expected, rtol=1e-12)
    # polygamma(3) is not implemented: the error says so instead of failing in the compiler
    with pytest.raises(lossdsl.LossError, match="polygamma.3"):
        lossdsl.compile("trigamma(x)").hessian("x", x=x)


def test_derivatives_print_as_source_and_latex():
    loss = lossdsl.compile("log_ndtr(x) + log1mexp(-x*x) + logaddexp(x, y) + xlog1py(y, x)",
                           reduction="sum")
    hessian = loss.derivative("x", 2)
    again = lossdsl.compile(str(hessian), reduction="none")  # the printed Hessian is loss text
    x, y = np.array([-30.0, 0.5, 2.0]), np.array([0.2, 1.0, 3.0])
    expected = loss.hessian("x", x=x, y=y)
    np.testing.assert_allclose(again(x=x, y=y), expected, rtol=1e-12)
    text = to_latex(loss.derivative("x"))
    assert r"\frac{\varphi\left(x\right)}{\Phi\left(x\right)}" in text
    assert r"\log \Phi" in to_latex(loss.expression)


# --------------------------------------------------------------------------------- CUDA

def test_cuda_matches_cpu_in_the_tails():
    """Every tail primitive, value, gradients and Hessians, on the CUDA target (the simulator
    on CI) against the CPU target, both dtypes' branches included: log_ndtr's series below
    -10, log1mexp on both sides of -log 2, logaddexp at 1e308."""
    expression = "erfc(a) + log_ndtr(b) + logaddexp(c, d) + log1mexp(s) + xlog1py(f, g)"
    count = 40
    rng = np.random.default_rng(6)
    inputs = {"a": rng.uniform(-6, 27, count), "b": np.linspace(-45.0, 12.0, count),
              "c": rng.choice([1e308, -3.0, 700.0, 0.0], count),
              "d": rng.choice([-1e308, 2.0, 700.0, 0.0], count),
              "s": -np.geomspace(1e-12, 800.0, count), "f": rng.choice([0.0, 2.0, -1.5], count),
              "g": rng.uniform(-0.9, 5.0, count)}
    # float32: the simulator's exp, log and erfc are NumPy's and Python's, the CPU's libm's; a
    # last-bit difference grows x^2-fold in log_ndtr's Hessian (2e-3 as tests/backend/test_cuda.py)
    for dtype, rtol, atol in ((np.float64, 1e-12, 1e-300), (np.float32, 2e-3, 1e-37)):
        typed = {k: v.astype(dtype) for k, v in inputs.items()}
        if dtype == np.float32:
            typed["c"] = np.clip(typed["c"], -1e38, 1e38)
            typed["d"] = np.clip(typed["d"], -1e38, 1e38)
        cpu = fused(lossdsl.compile(expression, reduction="none"), typed)
        gpu = fused(lossdsl.compile(expression, reduction="none", target="cuda"), typed)
        for index, (actual, expected) in enumerate(zip(gpu, cpu)):
            actual = np.asarray(actual, dtype=np.float64)
            expected = np.asarray(expected, dtype=np.float64)
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                                       err_msg=f"{dtype.__name__} output {index}")


def test_naive_formulas_become_the_stable_primitives():
    """log(1 - exp(x)) and its spellings become log1mexp, log(exp(a) + exp(b)) logaddexp."""
    x = np.array([-1e-20, -800.0, -1.0])
    expected = np.array([_log1mexp_exact(v) for v in x])
    for text in ("log(1 - exp(x))", "log1p(-exp(x))", "log(-expm1(x))"):
        loss = lossdsl.compile(text, reduction="none")
        assert str(loss.expression) == "log1mexp(x)", text
        np.testing.assert_allclose(loss(x=x), expected, rtol=4e-16)
    loss = lossdsl.compile("log(exp(x) + exp(y))", reduction="none")
    assert "logaddexp" in str(loss.expression)
    np.testing.assert_allclose(loss(x=np.array([1000.0, -1e4]), y=np.array([999.0, -1e4])),
                               np.logaddexp([1000.0, -1e4], [999.0, -1e4]), rtol=4e-16)


def test_log_ndtr_derivatives_vanish_at_plus_infinity():
    """phi/Phi underflows to 0 past x = 38.5; its derivative -r (x + r) is then 0, not
    0 * inf = NaN at x = inf (an AFT loss's right-censored upper bound)."""
    value, gradient, hessian = fused(_compiled("log_ndtr"), {"x": np.array([50.0, np.inf])})
    assert (value == 0).all() and (gradient == 0).all() and (hessian == 0).all()
