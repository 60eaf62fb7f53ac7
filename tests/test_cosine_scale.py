"""The row-wise cosine losses (``cosine_similarity``, ``cosine_distance``,
``cosine_embedding``) at every scale of the rows that float64 can hold their squared norms at.

Each is a cosine of two rows (N, D), scale-free in each: scaling a row by ``c`` divides its
gradient by ``c`` and its diagonal Hessian by ``c^2`` (``~1e-300`` at norms of 1e150, a
number). The Hessian went wrong from norms of about 1e103 (1.1 relative from 1e120) while
the gradient stayed right: the chain rule's products were formed in an order whose partial
products left float64's range (``|p|^-1 * (|y| |p|)^-2 * p``: ``c^-3`` where the product is
``c^-2``). The Hessian now takes them in the order of their scales
(``_orders_products`` and ``_Diagonal._product`` in :mod:`lossdsl.passes.diff`), with the
rows a cosine pairs with the seed's at the seed's scale. ``cosine_embedding`` also took the
root of the product of the two squared norms, as PyTorch does, which overflows from norms of
about 1e77 (the value 1 where it is 1 - cos): it takes the two roots.

The rows are scaled both (a scale for the pair), one alone and the other alone; the
references are the exact value, gradient and Hessian of each loss (PyTorch's form for
``cosine_embedding``) at the float64 inputs the kernel reads, by hyper-dual numbers in mpmath
at 50 digits: below norms of about 1e-6 the squared norms are clamped at (or summed with)
``eps``, which the references follow, so no scale-free reference holds there.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import lossdsl

EPS = 1e-12
LOSSES = {
    "cosine_similarity": ("cosine_similarity(y, p)", ("y", "p")),
    "cosine_distance": ("cosine_distance(y, p)", ("y", "p")),
    "cosine_embedding": ("cosine_embedding(y, x1, x2)", ("x1", "x2")),
}
#: the rows' norms, as powers of ten: the clamp at eps (below 1e-6), float64's range for the
#: chain rule's partial products (c^3 from 1e103, c^5 from 1e62, c^-3 from 1e103) and the
#: squared norms' (to 1.3e154)
POWERS = [-100, -20, -6, 0, 40, 70, 80, 103, 120, 150]
#: which rows are scaled
SCALED = ["both", "first", "second"]
LABELS = np.array([1.0, -1.0, 1.0, -1.0])


class HyperDual:
    """``a + b e1 + b e2 + d e1 e2`` (``e1^2 = e2^2 = 0``) along one coordinate: a function
    of it has the value, first and second derivatives of the function as ``a``, ``b``, ``d``."""

    __slots__ = ("a", "b", "d")

    def __init__(self, a, b=0, d=0):
        self.a, self.b, self.d = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(d)

    def __add__(self, other):
        other = lift(other)
        return HyperDual(self.a + other.a, self.b + other.b, self.d + other.d)

    __radd__ = __add__

    def __neg__(self):
        return HyperDual(-self.a, -self.b, -self.d)

    def __sub__(self, other):
        return self + -lift(other)

    def __rsub__(self, other):
        return lift(other) + -self

    def __mul__(self, other):
        other = lift(other)
        return HyperDual(self.a * other.a, self.a * other.b + self.b * other.a,
                         self.a * other.d + 2 * self.b * other.b + self.d * other.a)

    __rmul__ = __mul__

    def chain(self, value, first, second):
        """f(self) for f with f = value, f' = first, f'' = second at ``self.a``."""
        return HyperDual(value, first * self.b, first * self.d + second * self.b**2)

    def __truediv__(self, other):
        other = lift(other)
        return self * other.chain(1 / other.a, -1 / other.a**2, 2 / other.a**3)

    def sqrt(self):
        root = mpmath.sqrt(self.a)
        return self.chain(root, 1 / (2 * root), -1 / (4 * root**3))


def lift(x) -> HyperDual:
    return x if isinstance(x, HyperDual) else HyperDual(x)


def maximum(x, y) -> HyperDual:
    """lossdsl's max: the first argument's derivatives on ties."""
    x, y = lift(x), lift(y)
    return x if x.a >= y.a else y


def dot(u, v):
    return sum((a * b for a, b in zip(u, v)), HyperDual(0))


def row_loss(name: str, u: list, v: list, label: float) -> HyperDual:
    """The loss of one row pair (u, v), PyTorch's form of cosine_embedding."""
    if name == "cosine_embedding":
        cosine = dot(u, v) / ((dot(u, u) + EPS) * (dot(v, v) + EPS)).sqrt()
        if label == 1:
            return 1 - cosine
        return maximum(0, cosine) if label == -1 else HyperDual(0)
    cosine = dot(u, v) / (maximum(dot(u, u), EPS).sqrt() * maximum(dot(v, v), EPS).sqrt())
    return -cosine if name == "cosine_similarity" else 1 - cosine


def reference(name: str, u: np.ndarray, v: np.ndarray) -> tuple:
    """The exact value (summed over the rows), and the gradients and Hessian diagonals with
    respect to u and v, of the float64 inputs u and v."""
    with mpmath.workdps(50):
        value = mpmath.mpf(0)
        derivatives = [np.empty(u.shape, dtype=object) for _ in range(4)]
        for i in range(u.shape[0]):
            rows = [[HyperDual(float(x)) for x in r[i]] for r in (u, v)]
            value += row_loss(name, *rows, LABELS[i]).a
            for side in (0, 1):
                for k in range(u.shape[1]):
                    moved = [list(r) for r in rows]
                    moved[side][k] = HyperDual(rows[side][k].a, 1)
                    result = row_loss(name, *moved, LABELS[i])
                    derivatives[side][i, k], derivatives[2 + side][i, k] = result.b, result.d
        return (value, *derivatives)


def assert_close(got, exact, rtol: float, what: str):
    """``got`` within ``rtol`` of the largest exact element: each element, or the value."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=object)
    assert np.isfinite(got).all(), f"{what}: not finite"
    with mpmath.workdps(50):
        largest = max(abs(x) for x in exact.ravel())
        error = max(abs(mpmath.mpf(float(g)) - x) for g, x in zip(got.ravel(), exact.ravel()))
        relative = float(error / largest) if largest else float(error)
    assert relative <= rtol, f"{what}: relative error {relative:.2e}"


@pytest.fixture(scope="module")
def losses() -> dict[str, lossdsl.CompiledLoss]:
    return {name: lossdsl.compile(text, reduction="sum") for name, (text, _) in LOSSES.items()}


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    """Row pairs of norms between about 0.4 and 3 (the two rows' norms differ)."""
    rng = np.random.default_rng(11)
    return (rng.normal(size=(4, 5)) * np.exp(rng.uniform(-1.0, 1.0, (4, 1))),
            rng.normal(size=(4, 5)))


@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("scaled", SCALED)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_value_gradient_and_hessian_at_every_scale(losses, rows, name, scaled, power):
    scale = 10.0**power
    u = rows[0] * (scale if scaled in ("both", "first") else 1.0)
    v = rows[1] * (scale if scaled in ("both", "second") else 1.0)
    first, second = LOSSES[name][1]
    inputs = {first: u, second: v}
    if name == "cosine_embedding":
        inputs["y"] = LABELS
    got = losses[name].compute(True, (first, second), (first, second), inputs, None)
    exact = reference(name, u, v)
    what = ["value", f"gradient {first}", f"gradient {second}", f"Hessian {first}",
            f"Hessian {second}"]
    for result, expected, label in zip(got, exact, what):
        assert_close(result, expected, 1e-13, f"{name} at 1e{power} ({scaled}): {label}")
