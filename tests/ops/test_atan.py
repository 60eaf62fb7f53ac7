"""``atan``: the primitive added in one file (lossdsl/ops/transcendental.py) to show that the
registry is the one place a primitive lives. The language calls it, the derivative rule
differentiates it, CPU and CUDA kernels compute it, LaTeX and the jax.numpy printer print it.

The arctan robust loss c^2 atan((r/c)^2) saturates at c^2 pi/2: an outlier's gradient
vanishes instead of growing as in least squares.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossdsl
from lossdsl.latex import to_latex
from lossdsl.ops.primitives import FUNCTIONS
from lossdsl.reference import fold

C = 1.5
LOSS = f"{C}^2 * atan(((y - p)/{C})^2)"
Y = np.array([0.0, 1.0, 2.0, -3.0, 10.0])
P = np.array([0.5, -1.0, 3.0, -3.25, -40.0])


def expected(y, p):
    """Value, gradient and Hessian diagonal of the arctan loss with respect to p."""
    r = (y - p) / C
    u = r * r
    value = C * C * np.arctan(u)
    # d/dp: c^2 * 1/(1 + u^2) * du/dp, du/dp = -2 r / c
    gradient = C * C / (1 + u * u) * (-2 * r / C)
    # d2/dp2 of c^2 atan(u): c^2 [u'' / (1 + u^2) - 2 u u'^2 / (1 + u^2)^2], u'' = 2/c^2
    derivative_u = -2 * r / C
    hessian = C * C * (2 / C**2 / (1 + u * u) - 2 * u * derivative_u**2 / (1 + u * u) ** 2)
    return value, gradient, hessian


def test_the_language_calls_it():
    assert FUNCTIONS["atan"] == (1, 1)
    assert fold("atan", [1.0]) == pytest.approx(np.pi / 4, rel=1e-15)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_value_gradient_and_hessian_on_cpu_and_cuda(target):
    loss = lossdsl.compile(LOSS, reduction="none", target=target)
    value, gradient, hessian = expected(Y, P)
    np.testing.assert_allclose(loss(y=Y, p=P), value, rtol=1e-13)
    np.testing.assert_allclose(loss.grad("p", y=Y, p=P), gradient, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(loss.hessian("p", y=Y, p=P), hessian, rtol=1e-12, atol=1e-300)


def test_float32_follows_float64():
    loss = lossdsl.compile(LOSS, reduction="none")
    single = loss(y=Y.astype(np.float32), p=P.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected(Y, P)[0], rtol=1e-6)


def test_latex_and_printed_derivatives():
    loss = lossdsl.compile("atan(x)", reduction="sum")
    assert to_latex(loss.expression) == r"\arctan\left(x\right)"
    # the printed derivative is loss text again
    again = lossdsl.compile(str(loss.derivative("x")), reduction="none")
    x = np.array([-2.0, 0.0, 0.5, 30.0])
    np.testing.assert_allclose(again(x=x), 1 / (1 + x * x), rtol=1e-15)


def test_jax_printer():
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    from lossdsl.backend import jax as jax_printer
    from lossdsl.ir.node import node

    x = node("input", (), "x", ("n0",))
    program = jax_printer.generate([node("atan", (x,), None, ("n0",))], {"x": "a0"}, {}, {})
    run = program.build(np.float64, jnp, jax.lax, jax_printer)
    values = np.array([-1e300, -2.0, 0.0, 0.5, np.inf, np.nan])
    with jax.enable_x64(True):
        (actual,) = run(values)
    np.testing.assert_allclose(np.asarray(actual), np.arctan(values), rtol=1e-15)
