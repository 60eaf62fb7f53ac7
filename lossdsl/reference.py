"""A NumPy interpreter of the expression graph: the reference semantics of every operation.

Used to fold constants and, in tests, as the oracle the compiled kernels are compared with.
Values are float64 arrays shaped by each node's axes: ``()``, ``(N,)`` or ``(N, K)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .ir.node import Axes, Node, toposort

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _stable_sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _digamma(x):
    """psi(x) by recurrence to x >= 6 and the asymptotic series (the codegen uses the same)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    flat_x, flat_out = x.ravel(), out.ravel()
    for index, value in enumerate(flat_x):
        flat_out[index] = digamma_scalar(float(value))
    return out


def lgamma_scalar(x: float) -> float:
    """log|Gamma(x)| for one float, as the kernels' ``h_lgamma``: +inf at the poles (the
    non-positive integers and -inf) and where it overflows, NaN for NaN."""
    if math.isnan(x):
        return math.nan
    if math.isinf(x) or (x <= 0 and x == math.floor(x)):
        return math.inf
    try:
        return math.lgamma(x)
    except OverflowError:  # past x ~ 2.5e305 the value exceeds the largest float
        return math.inf


def digamma_scalar(x: float) -> float:
    """psi(x) for one float (reflection for x < 0.5)."""
    if math.isnan(x) or x == -math.inf or (x <= 0 and x == math.floor(x)):
        return math.nan
    if x == math.inf:
        return math.inf
    result = 0.0
    if x < 0.5:  # reflection: psi(1 - x) - psi(x) = pi / tan(pi x)
        result -= math.pi / math.tan(math.pi * x)
        x = 1.0 - x
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    inverse_square = 1.0 / (x * x)
    series = inverse_square * (
        1 / 12
        - inverse_square
        * (1 / 120 - inverse_square * (1 / 252 - inverse_square * (1 / 240 - inverse_square / 132)))
    )
    return result + math.log(x) - 0.5 / x - series


def trigamma_scalar(x: float) -> float:
    """psi'(x) for one float (reflection for x < 0.5)."""
    if math.isnan(x) or x == -math.inf or (x <= 0 and x == math.floor(x)):
        return math.nan
    if x == math.inf:
        return 0.0
    result = 0.0
    if x < 0.5:  # psi'(1 - x) + psi'(x) = pi^2 / sin^2(pi x)
        # (pi / s)^2, not pi^2 / s^2: s^2 underflows to 0 for |x| < 1e-162 where the value is
        # merely huge (about 1/x^2), and a float product overflows to inf instead of raising
        ratio = math.pi / math.sin(math.pi * x)
        return -trigamma_scalar(1.0 - x) + ratio * ratio
    while x < 6.0:
        result += 1.0 / (x * x)
        x += 1.0
    inverse = 1.0 / x
    inverse_square = inverse * inverse
    series = (
        inverse
        + 0.5 * inverse_square
        + inverse
        * inverse_square
        * (1 / 6 - inverse_square * (1 / 30 - inverse_square * (1 / 42 - inverse_square / 30)))
    )
    return result + series


# log_ndtr and ndtr_ratio: Phi(x) = erfc(-x/sqrt(2))/2 is exact down to x = -10 (erfc is
# accurate in its tail, and Phi(-10) = 7.6e-24 is a normal float32); further left erfc
# underflows (float32 near -14, float64 near -38), so both use the asymptotic series
# Phi(x) = phi(x)/(-x) * S(x), S(x) = 1 - 1/x^2 + 3/x^4 - 15/x^6 + ..., whose 20 terms are
# within 1e-17 of S at x = -10 and better further out. The kernels' helpers are the same.
_NDTR_SERIES_FROM = -10.0
_NDTR_SERIES_TERMS = 20
_INVERSE_SQRT_2 = 1.0 / math.sqrt(2.0)
_INVERSE_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _ndtr_series(x: float) -> float:
    """S(x) = Phi(x) (-x) / phi(x) for x <= -10, by its asymptotic series."""
    q = 1.0 / (x * x)
    term = total = odd = 1.0
    for _ in range(_NDTR_SERIES_TERMS):
        term *= -odd * q
        total += term
        odd += 2.0
    return total


def log_ndtr_scalar(x: float) -> float:
    """log Phi(x), the log of the standard normal CDF, finite wherever it is in float64."""
    if x > 0.0:  # Phi = 1 - erfc(x/sqrt2)/2: log1p keeps the tiny erfc
        return math.log1p(-0.5 * math.erfc(x * _INVERSE_SQRT_2))
    if x > _NDTR_SERIES_FROM:
        return math.log(0.5 * math.erfc(-x * _INVERSE_SQRT_2))
    if math.isnan(x):
        return math.nan
    with np.errstate(all="ignore"):  # x*x overflows to inf past 1.3e154: the value is -inf
        square = float(np.float64(x) * np.float64(x))
    return -0.5 * square - math.log(-x) - _HALF_LOG_2PI + math.log(_ndtr_series(x))


def ndtr_ratio_scalar(x: float) -> float:
    """phi(x)/Phi(x), the derivative of log_ndtr: about -x in the left tail, 0 in the right."""
    if x > _NDTR_SERIES_FROM:
        density = math.exp(-0.5 * x * x) * _INVERSE_SQRT_2PI if abs(x) < 1e154 else 0.0
        return density / (0.5 * math.erfc(-x * _INVERSE_SQRT_2))
    if math.isnan(x):
        return math.nan
    return -x / _ndtr_series(x)


def tetragamma_scalar(x: float) -> float:
    """psi''(x) = polygamma(2, x) for one float (reflection for x < 0.5; NaN at the poles)."""
    if math.isnan(x) or x == -math.inf or (x <= 0 and x == math.floor(x)):
        return math.nan
    if x == math.inf:
        return -0.0
    if x < 0.5:  # psi''(1 - x) - psi''(x) = 2 pi^3 cos(pi x) / sin(pi x)^3
        ratio = math.pi / math.sin(math.pi * x)
        return tetragamma_scalar(1.0 - x) - 2.0 * ratio * ratio * ratio * math.cos(math.pi * x)
    result = 0.0
    while x < 16.0:  # psi''(x) = psi''(x + 1) - 2/x^3
        result -= 2.0 / (x * x * x)
        x += 1.0
    inverse = 1.0 / x
    q = inverse * inverse
    # -1/x^2 - 1/x^3 - sum_k (2k+1) B_2k / x^(2k+2): the next term is 3e-16 of it at x = 16
    series = -q * (1.0 + inverse + q * (0.5 - q * (1 / 6 - q * (1 / 6 - q * (
        0.3 - q * (5 / 6 - q * 691 / 210))))))
    return result + series


def _log1mexp(x):
    x = np.asarray(x, dtype=np.float64)
    # log(-expm1(x)) keeps the digits of 1 - e^x near 0, log1p(-exp(x)) far from it
    return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _xlog1py(x, y):
    # 0 where x = 0 even at y = -1 (as scipy.special.xlog1py), but NaN for y = NaN
    return np.where((x == 0) & ~np.isnan(y), 0.0, np.multiply(x, np.log1p(y)))


def _scalar_map(function):
    vectorized = np.vectorize(function, otypes=[np.float64])

    def apply(x):
        return vectorized(np.asarray(x, dtype=np.float64))

    return apply


def _maximum(a, b):  # NaN propagates; ties pick the first argument (like the kernels)
    return np.where((a >= b) | np.isnan(a), a, b)


def _minimum(a, b):
    return np.where((a <= b) | np.isnan(a), a, b)


def _sign(x):
    return np.where(np.isnan(x), x, np.sign(x))


_BOOL = lambda condition: np.asarray(condition, dtype=np.float64)  # noqa: E731

ELEMENTWISE_NUMPY = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sign": _sign,
    "sigmoid": _stable_sigmoid,
    "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "tanh": np.tanh,
    "lgamma": _scalar_map(lgamma_scalar),
    "digamma": _digamma,
    "trigamma": _scalar_map(trigamma_scalar),
    "sin": np.sin,
    "cos": np.cos,
    "erf": _scalar_map(lambda v: math.erf(v) if not math.isnan(v) else math.nan),
    "erfc": _scalar_map(math.erfc),
    "log_ndtr": _scalar_map(log_ndtr_scalar),
    "ndtr_ratio": _scalar_map(ndtr_ratio_scalar),
    "log1mexp": _log1mexp,
    "tetragamma": _scalar_map(tetragamma_scalar),
    "logaddexp": np.logaddexp,
    "xlog1py": _xlog1py,
    "not": lambda x: _BOOL(x == 0),
    "stop_gradient": lambda x: x,
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "pow": np.power,
    "min": _minimum,
    "max": _maximum,
    "lt": lambda a, b: _BOOL(a < b),
    "le": lambda a, b: _BOOL(a <= b),
    "gt": lambda a, b: _BOOL(a > b),
    "ge": lambda a, b: _BOOL(a >= b),
    "eq": lambda a, b: _BOOL(a == b),
    "ne": lambda a, b: _BOOL(a != b),
    "and": lambda a, b: _BOOL((a != 0) & (b != 0)),
    "or": lambda a, b: _BOOL((a != 0) | (b != 0)),
    "where": lambda c, a, b: np.where(c != 0, a, b),
}


def fold(op: str, values: list[float]) -> float:
    """The value of an elementwise operation on constant arguments (for constant folding)."""
    with np.errstate(all="ignore"):
        return float(ELEMENTWISE_NUMPY[op](*[np.float64(v) for v in values]))


class Unbound(KeyError):
    """The graph needs something the evaluation was not given: an input, a param, a count,
    or a class axis (a constant expression such as a param's value has none, so
    ``param a = rowsum(3)`` is not constant). A KeyError, as a missing binding is."""


def _align(value: np.ndarray, axes: Axes, out_axes: Axes) -> np.ndarray:
    """Broadcast a value with ``axes`` against ``out_axes`` (a vector meets a matrix row-wise)."""
    if len(axes) == 1 and len(out_axes) == 2:
        return value[:, None]
    return value


class Evaluator:
    """Evaluates a typed graph on NumPy arrays; one method per kind of leaf or reduction."""

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, float] | None = None,
        counts: Mapping[str, int] | None = None,
    ):
        self.inputs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        self.params = dict(params or {})
        self.counts = dict(counts or {})

    def evaluate(self, roots: list[Node]) -> list[np.ndarray]:
        values: dict[int, np.ndarray] = {}
        with np.errstate(all="ignore"):
            for current in toposort(roots):
                args = [values[id(a)] for a in current.args]
                values[id(current)] = self.visit(current, args)
        return [values[id(r)] for r in roots]

    def visit(self, n: Node, args: list[np.ndarray]) -> np.ndarray:
        method = getattr(self, f"eval_{n.op}", None)
        if method is not None:
            return method(n, args)
        aligned = [_align(v, a.axes, n.axes) for v, a in zip(args, n.args)]
        return ELEMENTWISE_NUMPY[n.op](*aligned)

    def _bound(self, table: Mapping, key, what: str):
        if key not in table:
            raise Unbound(f"{what} {key!r}")
        return table[key]

    def _rows(self, value: np.ndarray) -> np.ndarray:
        """``value`` as the (N, K) matrix a row reduction reduces."""
        if np.ndim(value) != 2:
            raise Unbound("class axis")
        return value

    def eval_const(self, n, args):
        return np.float64(n.value)

    def eval_input(self, n, args):
        return self._bound(self.inputs, n.value, "input")

    def eval_param(self, n, args):
        return np.float64(self._bound(self.params, n.value, "param"))

    def eval_count(self, n, args):
        return np.float64(self._bound(self.counts, n.value, "count"))

    def eval_class_index(self, n, args):
        if n.axes is None or len(n.axes) != 2:  # untyped: no class axis to index
            raise Unbound("class axis")
        width = self._bound(self.counts, n.axes[1], "count")
        rows = args[0].shape[0] if np.ndim(args[0]) else 1
        return np.broadcast_to(np.arange(width, dtype=np.float64), (rows, width))

    def eval_table_row(self, n, args):
        table, labels = args
        rows = table[np.asarray(labels).astype(np.int64)]
        if rows.ndim == 1:  # one label for every sample
            rows = np.broadcast_to(rows, (self.counts[n.axes[0]], rows.shape[0]))
        return rows

    def eval_count_as(self, n, args):  # count_as(l, s) is l; s only counts samples
        return args[0]

    def eval_rowsum(self, n, args):
        return self._rows(args[0]).sum(axis=1)

    def eval_rowmax(self, n, args):
        return self._rows(args[0]).max(axis=1)

    def eval_sum(self, n, args):
        return np.float64(args[0].sum())


def evaluate(
    roots: list[Node],
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
) -> list[np.ndarray]:
    """Evaluate typed graph ``roots`` with NumPy (float64)."""
    return Evaluator(inputs, params, counts).evaluate(roots)
