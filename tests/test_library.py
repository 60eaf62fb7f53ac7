"""The built-in loss library (``lossdsl/prelude/*.loss``) against independent references.

One table, ``CASES``: every loss of the catalog with inputs (ordinary, and extreme where the
math is finite: logits +-1e4 in float64 and +-80 in float32, probabilities 0 and 1, residuals
1e8, zeros) and a reference written independently of the prelude (PyTorch, SciPy, or the
reference library's formula in NumPy). For each case:

* the value (``reduction="none"``) matches the reference,
* the gradient and diagonal Hessian match central finite differences of the float64 value;
  where the finite-difference stencil shows a kink (``mae`` at 0, the clamp of ``bce``), the
  gradient must lie between the one-sided slopes and the Hessian is only required finite
  where it exists (not at a kink of the value, where it is a Dirac mass),
* float32 inputs run float32 kernels whose results match the float64 ones.

Reductions ("mean", "sum", "none") and sample weights are checked on one loss of each kind.
Kernels are cached per loss: in float64 the value kernel and the gradient+Hessian kernel
(what ``loss(...)`` and ``grad_and_hessian`` compile), in float32 one kernel computing all
three; so the whole file compiles three kernels per loss (each about half a second cold), and
on CI, which checks float32 for every other loss (see ``_float32_sweep``), two or three.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mpmath
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F
from coupled import logit_shift_mp
from sweeps import SAMPLING
from test_ranking_metrics import catboost_lambdamart
from test_ranking_row48 import catboost_yetirank, xgboost_mean_pairs
from test_stochastic_rank import catboost_stochastic_filter, catboost_stochastic_rank

import lossdsl
from lossdsl import catalog
from lossdsl.frontend import ast
from lossdsl.frontend.parse import parse
from lossdsl.frontend.resolve import PRELUDE_DIR

ROOT = Path(__file__).resolve().parent.parent
N, K = 8, 4  # samples, classes
BIG64, BIG32 = 1e4, 80.0  # extreme logits in float64 / float32
EPS64 = np.finfo(np.float64).eps

Inputs = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- input makers


def _sigmoid(x):
    return scipy.special.expit(x)


def regression(rng, positive_y: bool = False, spread: float = 2.0) -> Inputs:
    y = rng.uniform(0.5, 3.0, N) if positive_y else rng.normal(0.0, 2.0, N)
    return {"y": y, "p": y + rng.normal(0.0, spread, N)}


def regression_extreme(big: float, residuals=(1e8, -1e8, 0.0), positive_y: bool = False) -> Inputs:
    """Residuals 1e8 (either side) and exact zeros, including y = p = 0."""
    y = np.array([0.5, 1.5, 1.0, 2.0, 3.0, 0.25]) if positive_y else np.array(
        [0.0, 1.5, 0.0, -2.0, 3.0, -0.25])
    return {"y": y, "p": y + np.resize(np.asarray(residuals, dtype=float), y.size)}


def binary_logits(rng, labels=(0.0, 1.0)) -> Inputs:
    return {"y": rng.choice(labels, N), "z": rng.normal(0.0, 2.0, N)}


def binary_logits_extreme(big: float) -> Inputs:
    return {"y": np.array([0.0, 1.0, 0.0, 1.0, 0.3]), "z": np.array([big, big, -big, -big, big])}


def margin_extreme(big: float) -> Inputs:
    return {"y": np.array([1.0, -1.0, 1.0, -1.0]), "z": np.array([big, big, -big, -big])}


def binary_probabilities(rng) -> Inputs:
    return {"y": rng.choice([0.0, 1.0], N), "p": rng.uniform(0.05, 0.95, N)}


def binary_probabilities_extreme(big: float) -> Inputs:
    return {"y": np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1.0]),
            "p": np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.5])}


def class_logits(rng, sparse: bool = False) -> Inputs:
    z = rng.normal(0.0, 2.0, (N, K))
    if sparse:
        return {"y": rng.integers(0, K, N), "z": z}
    return {"y": rng.dirichlet(np.ones(K), N), "z": z}


def class_logits_extreme(big: float, sparse: bool = False) -> Inputs:
    z = np.array([[big, -big, 0.0, 1.0], [-big, big, -big, 2.0],
                  [big, -1.0, -big, 0.0], [0.5, -big, 0.0, -0.5], [2.0, 2.0, -big, 0.0]])
    labels = np.array([0, 0, 2, 1, 1])  # right and wrong confident classes, a tie
    return {"y": labels if sparse else np.eye(K)[labels], "z": z}


def margin_scores(rng, margin: float = 1.0) -> Inputs:
    """Integer labels and scores with every margin - z_y + z_k clear of the hinge's kink."""
    labels, z = rng.integers(0, K, N), rng.normal(0.0, 2.0, (N, K))
    for i in range(N):
        while np.any(np.abs(margin - z[i, labels[i]] + z[i]) < 0.05):
            z[i] = rng.normal(0.0, 2.0, K)
    return {"y": labels, "z": z}


def class_probabilities(rng, sparse: bool = False) -> Inputs:
    p = rng.dirichlet(2 * np.ones(K), N)
    if sparse:
        return {"y": rng.integers(0, K, N), "p": p}
    return {"y": rng.dirichlet(np.ones(K), N), "p": p}


def class_probabilities_extreme(big: float, sparse: bool = False,
                                label_mass: bool = False) -> Inputs:
    """Probability rows with exact 0s and 1s; with ``label_mass`` the labels never sit on a 0."""
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                  [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    labels = np.array([0, 1, 0, 3]) if label_mass else np.array([0, 0, 2, 3])
    return {"y": labels if sparse else np.eye(K)[labels], "p": p}


def multilabel_logits(rng) -> Inputs:
    return {"y": rng.choice([0.0, 1.0], (N, K)), "z": rng.normal(0.0, 2.0, (N, K))}


def multilabel_logits_extreme(big: float) -> Inputs:
    return {"y": np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]),
            "z": np.array([[big, big, -big, -big], [-big, big, big, 0.5]])}


def multilabel_margin_targets(y: np.ndarray):
    """PyTorch's MultiLabelMarginLoss targets for 0/1 rows y: each row's class indices,
    padded with -1."""
    targets = -np.ones(y.shape, np.int64)
    for row, labels in enumerate(y):
        classes = np.flatnonzero(labels)
        targets[row, :classes.size] = classes
    return torch.as_tensor(targets)


def multilabel_probabilities(rng) -> Inputs:
    return {"y": rng.choice([0.0, 1.0], (N, K)), "p": rng.uniform(0.05, 0.95, (N, K))}


def multilabel_probabilities_extreme(big: float) -> Inputs:
    return {"y": np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]]),
            "p": np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.5, 0.5]])}


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One loss call, its reference and its inputs."""

    call: str
    reference: Callable[[Inputs], np.ndarray]  # float64 values: per sample, or a scalar
    ordinary: Callable[[np.random.Generator], Inputs]
    extreme: Callable[[float], Inputs] | None  # takes the extreme logit size (1e4 or 80)
    wrt: tuple[str, ...] = ()  # inputs to differentiate (default: the loss's prediction)
    reduction_check: bool = False  # also check mean/sum reductions and sample weights
    # for a loss whose gradient is not its value's derivative (LambdaMART holds its pair
    # weights constant): the reference gradient and Hessian diagonal, which the kernels'
    # must match instead of finite differences
    derivative_reference: Callable[[Inputs], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def loss(self) -> str:
        return self.call.split("(", 1)[0]

    @property
    def derivatives(self) -> tuple[str, ...]:
        return self.wrt or (catalog.entry(self.loss).prediction(),)

    def inputs(self) -> Inputs:
        return _typed(self.ordinary(np.random.default_rng(zlib.crc32(self.call.encode()))))


def _typed(inputs: Inputs) -> Inputs:
    return {name: (value if np.asarray(value).dtype.kind in "iu" else np.asarray(value, float))
            for name, value in inputs.items()}


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _onehot(labels) -> np.ndarray:
    return np.eye(K)[np.asarray(labels)]


def _softmax(z) -> np.ndarray:
    return _np(torch.softmax(_t(z), dim=1))


def _keras_probabilities(p, eps=1e-7) -> np.ndarray:
    """Keras' treatment of probability rows: renormalise, then clip to [eps, 1 - eps]."""
    p = np.asarray(p, float)
    return np.clip(p / p.sum(axis=1, keepdims=True), eps, 1 - eps)


# references, one small function per loss (named after it)

def ref_pseudo_huber(d, delta=1.0):
    r = d["p"] - d["y"]
    return delta**2 * (np.sqrt(1 + (r / delta) ** 2) - 1)


def ref_fair(d, c=1.0):
    a = np.abs(d["p"] - d["y"]) / c
    return c**2 * (a - np.log1p(a))


def ref_tukey(d, c=4.685):
    r = d["p"] - d["y"]
    return np.where(np.abs(r) <= c, c**2 / 6 * (1 - (1 - (r / c) ** 2) ** 3), c**2 / 6)


def ref_pinball(d, alpha=0.5):
    diff = d["y"] - d["p"]
    return np.maximum(alpha * diff, (alpha - 1) * diff)


def ref_expectile(d, alpha=0.5):
    return np.abs(alpha - (d["y"] < d["p"])) * (d["y"] - d["p"]) ** 2


LEVELS = np.array([0.1, 0.3, 0.5, 0.9])


def levels_ordinary(rng) -> Inputs:
    return {"y": rng.normal(0.0, 2.0, N), "z": rng.normal(0.0, 1.5, (N, 4)), "a": LEVELS}


def levels_extreme(big: float) -> Inputs:
    return {"y": np.array([0.0, 1.0, -1.0]), "a": LEVELS,
            "z": np.array([[0.0, -big, big, -big], [big] * 4, [-big, 0.0, 0.0, 0.0]])}


def ref_levels(d, expectile=False):
    """The non-crossing levels q_k = z_0 + sum_{1 <= c <= k} softplus(z_c) (a cumulative
    sum), each with its level's pinball or expectile loss."""
    levels = np.cumsum(np.where(np.arange(d["z"].shape[1]) == 0, d["z"],
                                np.logaddexp(0.0, d["z"])), axis=1)
    loss = ref_expectile if expectile else ref_pinball
    return loss({"y": d["y"][:, None], "p": levels}, alpha=d["a"])


def ref_smape(d):
    numerator, denominator = 200 * np.abs(d["p"] - d["y"]), np.abs(d["y"]) + np.abs(d["p"])
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def ref_msle(d, eps=1e-7):  # Keras' code: log(max(x, eps) + 1)
    return (np.log(np.maximum(d["p"], eps) + 1) - np.log(np.maximum(d["y"], eps) + 1)) ** 2


def ref_gamma(d):  # the exponential (shape 1 gamma) log-likelihood: log mu + y/mu
    with np.errstate(over="ignore"):
        value = -scipy.stats.expon.logpdf(d["y"], scale=np.exp(d["z"]))
    return np.where(np.isfinite(value), value, d["z"] + d["y"] * np.exp(-d["z"]))


def ref_tweedie(d, rho=1.5):
    """Half the unit Tweedie deviance minus its y-only term (sklearn drops it)."""
    y, z = d["y"], d["z"]  # mu = exp(z), mu^a written exp(a z) so that z = 1000 stays finite
    deviance = 2 * (np.power(y, 2 - rho) / ((1 - rho) * (2 - rho))
                    - y * np.exp((1 - rho) * z) / (1 - rho) + np.exp((2 - rho) * z) / (2 - rho))
    return deviance / 2 - np.power(y, 2 - rho) / ((1 - rho) * (2 - rho))


def counts_mean_and_dispersion(rng) -> Inputs:
    """Counts, and two score columns per row: a log mean and a log dispersion."""
    return {"y": rng.poisson(3.0, N).astype(float),
            "z": np.column_stack([rng.normal(1.0, 1.0, N), rng.uniform(-3.0, 1.5, N)])}


def counts_mean_and_dispersion_extreme(big: float) -> Inputs:
    """Log dispersions far out on both sides (alpha = e^+-30 in float64, e^+-20 in float32:
    near-Poisson rows and rows with almost all mass at 0), and large log means."""
    s = 30.0 if big > BIG32 else 20.0
    return {"y": np.array([0.0, 3.0, 50.0, 0.0, 7.0, 1e4]),
            "z": np.array([[1.0, -s], [1.0, -s], [3.0, s], [2.0, s], [-s, 0.0],
                           [np.log(1e4), -2.0]])}


def ref_negative_binomial_scores(d):  # NB2 at each row's own dispersion, exactly (mpmath)
    values = []
    with mpmath.workdps(60):
        for y, (m, s) in zip(d["y"], d["z"]):
            y, mu, a = mpmath.mpf(y), mpmath.exp(mpmath.mpf(m)), mpmath.exp(mpmath.mpf(s))
            values.append(-(mpmath.loggamma(y + 1 / a) - mpmath.loggamma(1 / a)
                            - mpmath.loggamma(y + 1) - mpmath.log1p(a * mu) / a
                            + y * mpmath.log(a * mu / (1 + a * mu))))
    return np.array([float(v) for v in values])


def ref_negative_binomial(d, alpha=1.0):
    y, z = d["y"], d["z"]
    r = 1 / alpha
    with np.errstate(all="ignore"):
        mu = np.exp(z)
        value = -scipy.stats.nbinom.logpmf(y, r, 1 / (1 + alpha * mu))
    # where mu over/underflows, the likelihood in its log-space form
    m = z + math.log(alpha)
    stable = ((y + r) * np.logaddexp(0, m) - y * m + scipy.special.gammaln(r)
              + scipy.special.gammaln(y + 1) - scipy.special.gammaln(y + r))
    return np.where(np.isfinite(value) & (np.abs(z) < 700), value, stable)


def ref_bce(d, smoothing=0.0):
    y = d["y"] * (1 - smoothing) + 0.5 * smoothing
    return _np(F.binary_cross_entropy(_t(d["p"]), _t(y), reduction="none"))


def ref_bce_logits(d, pos_weight=1.0, smoothing=0.0):
    y = d["y"] * (1 - smoothing) + 0.5 * smoothing
    return _np(F.binary_cross_entropy_with_logits(
        _t(d["z"]), _t(y), pos_weight=_t(pos_weight), reduction="none"))


def ref_focal(d, alpha=0.25, gamma=2.0, smoothing=0.0):
    """Keras' binary_focal_crossentropy (clipped BCE, unclipped p_t), alpha_t as torchvision;
    ``smoothing`` as Keras: the smoothed label in alpha_t, p_t and the BCE alike."""
    y, p = d["y"] * (1 - smoothing) + 0.5 * smoothing, d["p"]
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    p_t = y * p + (1 - y) * (1 - p)
    loss = (1 - p_t) ** gamma * bce
    return loss * (alpha * y + (1 - alpha) * (1 - y)) if alpha >= 0 else loss


def ref_focal_logits(d, alpha=0.25, gamma=2.0, smoothing=0.0):
    """torchvision.ops.sigmoid_focal_loss, restated with torch operations; ``smoothing`` as
    Keras' binary_focal_crossentropy(from_logits=True, apply_class_balancing=True), which
    uses the smoothed label everywhere torchvision uses the label."""
    z, y = _t(d["z"]), _t(d["y"] * (1 - smoothing) + 0.5 * smoothing)
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return _np(loss)


def ref_modified_huber(d):
    margin = d["y"] * d["z"]
    return np.where(margin >= 1, 0.0, np.where(margin >= -1, (1 - margin) ** 2, -4 * margin))


def ref_exponential(d):  # sklearn's y exp(-z) + (1 - y) exp(z), each term only where it counts
    y, z = d["y"], d["z"]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(y == 1, np.exp(-z), np.where(y == 0, np.exp(z),
                                                     y * np.exp(-z) + (1 - y) * np.exp(z)))


def ref_cce(d, smoothing=0.0):
    q = _keras_probabilities(d["p"])
    y = d["y"] * (1 - smoothing) + smoothing / K
    return -(y * np.log(q)).sum(axis=1)


def ref_cce_logits(d, smoothing=0.0):
    return _np(F.cross_entropy(_t(d["z"]), _t(d["y"]), reduction="none", label_smoothing=smoothing))


def ref_sparse_cce(d):
    q = _keras_probabilities(d["p"])
    return -np.log(q[np.arange(len(d["y"])), d["y"]])


def ref_sparse_cce_smoothed(d, smoothing=0.1):
    """torch's label-smoothed cross-entropy on class indices (torch.nn.CrossEntropyLoss docs:
    (1 - a) nll + a mean_k(-log q_k)) on Keras' clipped log-probabilities; F.cross_entropy
    itself would renormalise the clipped rows (a 1e-7 change at exact 0s and 1s)."""
    log_q = _t(np.log(_keras_probabilities(d["p"])))
    nll = F.nll_loss(log_q, torch.as_tensor(d["y"]), reduction="none")
    return _np((1 - smoothing) * nll - smoothing * log_q.mean(dim=1))


def ref_sparse_cce_logits(d, smoothing=0.0):
    return _np(F.cross_entropy(_t(d["z"]), torch.as_tensor(d["y"]), reduction="none",
                               label_smoothing=smoothing))


def ref_categorical_focal(d, alpha=0.25, gamma=2.0, smoothing=0.0):
    q = _keras_probabilities(d["p"])
    y = d["y"] * (1 - smoothing) + smoothing / K  # Keras' smoothing
    return (alpha * (1 - q) ** gamma * -y * np.log(q)).sum(axis=1)


def ref_categorical_focal_logits(d, alpha=0.25, gamma=2.0, smoothing=0.0):
    z = _t(d["z"])
    q, log_q = torch.softmax(z, 1), torch.log_softmax(z, 1)
    y = _t(d["y"] * (1 - smoothing) + smoothing / K)  # Keras' smoothing
    return _np(-(alpha * (1 - q) ** gamma * y * log_q).sum(1))


def ref_poly1(d, epsilon=2.0):
    p = d["p"] / d["p"].sum(axis=1, keepdims=True)
    return ref_cce(d) + epsilon * (d["y"] * (1 - p)).sum(axis=1)


def ref_poly1_logits(d, epsilon=2.0):  # optax.poly_loss_cross_entropy
    return ref_cce_logits(d) + epsilon * (d["y"] * (1 - _softmax(d["z"]))).sum(axis=1)


def ref_gce(d, q=0.5):  # keras: p_t = sum(one_hot(y) * p); (1 - p_t^q)/q
    p_t = (_onehot(d["y"]) * d["p"]).sum(axis=1)
    return (1 - p_t**q) / q


def ref_gce_logits(d, q=0.5):
    return ref_gce({"y": d["y"], "p": _softmax(d["z"])}, q)


def ref_multiclass_hinge(d):  # optax.multiclass_hinge_loss
    onehot = _onehot(d["y"])
    return np.max(d["z"] + 1 - onehot, axis=1) - (d["z"] * onehot).sum(axis=1)


def ref_kl_div(d, eps=1e-7):  # keras.losses.KLDivergence via torch's kl_div
    y, p = np.clip(d["y"], eps, 1), np.clip(d["p"], eps, 1)
    return _np(F.kl_div(torch.log(_t(p)), _t(y), reduction="none").sum(1))


def ref_dice(d, smooth=1.0):
    y, p = d["y"], d["p"]
    return 1 - (2 * (y * p).sum() + smooth) / (y.sum() + p.sum() + smooth)


def ref_tversky(d, alpha=0.5, beta=0.5, smooth=1.0):  # Salehi et al.: alpha on FP, beta on FN
    y, p = d["y"], d["p"]
    tp, fp, fn = (y * p).sum(), ((1 - y) * p).sum(), (y * (1 - p)).sum()
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def ref_asymmetric(d, under=1.0, over=1.0, power=1):
    shortfall, excess = np.maximum(d["y"] - d["p"], 0), np.maximum(d["p"] - d["y"], 0)
    return under * shortfall**power + over * excess**power


def ref_linex(d, a=1.0, b=1.0):
    r = d["p"] - d["y"]
    return b * (np.exp(a * r) - a * r - 1)


def ref_cost_sensitive_bce(d, fn_cost=1.0, fp_cost=1.0):
    z, y = _t(d["z"]), _t(d["y"])
    return _np(-(fn_cost * y * F.logsigmoid(z) + fp_cost * (1 - y) * F.logsigmoid(-z)))


COSTS = np.array([[0.0, 1.0, 2.0, 5.0], [4.0, 0.0, 1.0, 2.0],
                  [9.0, 3.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])  # C[true class, predicted]


def expected_cost_inputs(rng) -> Inputs:
    return {"y": rng.integers(0, K, N), "z": rng.normal(0.0, 2.0, (N, K)), "C": COSTS}


def expected_cost_extreme(big: float) -> Inputs:
    extreme = class_logits_extreme(big, sparse=True)
    return {"y": extreme["y"], "z": extreme["z"], "C": COSTS}


def ref_expected_cost(d):  # sum_k C[y_i, k] P(k | z_i)
    return np.einsum("ik,ik->i", d["C"][d["y"]], _softmax(d["z"]))


def expected_cost_rows_inputs(rng) -> Inputs:
    return {"cost": COSTS[rng.integers(0, K, N)] * rng.uniform(0.5, 2.0, (N, 1)),
            "z": rng.normal(0.0, 2.0, (N, K))}


def expected_cost_rows_extreme(big: float) -> Inputs:
    extreme = class_logits_extreme(big, sparse=True)
    return {"cost": COSTS[extreme["y"]], "z": extreme["z"]}


def ref_expected_cost_rows(d):  # sum_k cost_ik P(k | z_i)
    return np.einsum("ik,ik->i", d["cost"], _softmax(d["z"]))


def _regression(**options):
    return functools.partial(regression, **options)


def _regression_extreme(**options):
    return functools.partial(regression_extreme, **options)


def _logit_extreme(values: Callable[[float], tuple[float, ...]], labels=(0.0, 3.0)):
    """Extreme raw scores for a log-link count loss: ``values(big)`` with the given targets."""

    def make(big: float) -> Inputs:
        z = np.asarray(values(big), dtype=float)
        return {"y": np.resize(np.asarray(labels, dtype=float), z.size), "z": z}

    return make


def count_log_link(rng) -> Inputs:
    return {"y": rng.poisson(3.0, N).astype(float), "z": rng.normal(1.0, 1.0, N)}


def positive_log_link(rng) -> Inputs:
    return {"y": rng.uniform(0.5, 3.0, N), "z": rng.normal(0.5, 1.0, N)}


def rate(rng) -> Inputs:
    return {"y": rng.poisson(3.0, N).astype(float), "p": rng.uniform(0.5, 5.0, N)}


def rate_extreme(big: float) -> Inputs:
    return {"y": np.array([0.0, 4.0, 0.0, 2.0]), "p": np.array([0.0, 0.0, 1e8, 1e8])}


def survival_times(rng) -> Inputs:
    """Times with log-scale predictions: observed exactly, right-, left- and interval-censored."""
    y = rng.uniform(0.5, 3.0, N)
    upper = y * np.resize([1.0, np.inf, 1.0, 2.5], N)
    y[2::4] = 0.0  # left-censored: (0, upper]
    upper[2::4] = rng.uniform(0.5, 3.0, N)[2::4]
    return {"y": y, "u": upper, "z": rng.normal(0.5, 1.0, N)}


def survival_extreme(big: float) -> Inputs:
    return {"y": np.array([1.0, 2.0, 0.0, 0.5, 1.0, 2.0]),
            "u": np.array([1.0, np.inf, 4.0, 3.0, np.inf, 5.0]),
            "z": np.array([big, -big, big, -big, big, big])}


def ref_aft_normal(d, sigma=1.0):
    """The AFT normal likelihood at 60 digits (scipy's ndtr(b) - ndtr(a) cancels in the tails)."""
    import mpmath

    with mpmath.workdps(60):
        out = []
        for y, u, z in zip(d["y"], d.get("u", d["y"]), d["z"]):
            y, u, z, s = (mpmath.mpf(float(v)) for v in (y, u, z, sigma))
            if y == u:
                out.append(mpmath.log(s * y) + ((mpmath.log(y) - z) / s) ** 2 / 2
                           + mpmath.log(2 * mpmath.pi) / 2)
                continue
            a = -mpmath.inf if y == 0 else (mpmath.log(y) - z) / s
            b = mpmath.inf if u == mpmath.inf else (mpmath.log(u) - z) / s
            # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): in the right tail 1 - Phi would cancel
            mass = (mpmath.ncdf(-a) - mpmath.ncdf(-b) if a > 0
                    else mpmath.ncdf(b) - mpmath.ncdf(a))
            out.append(-mpmath.log(mass))
        return np.array([float(v) for v in out])


def _ref_aft(d, sigma: float, log_density, cdf, survival):
    """An AFT negative log-likelihood at 60 digits from a standard error distribution's log
    density, CDF and survival function (mpmath callables); the censored mass is taken on
    the side where it does not cancel."""
    import mpmath

    with mpmath.workdps(60):
        out = []
        for y, u, z in zip(d["y"], d.get("u", d["y"]), d["z"]):
            y, u, z, s = (mpmath.mpf(float(v)) for v in (y, u, z, sigma))
            if y == u:
                w = (mpmath.log(y) - z) / s
                out.append(mpmath.log(s * y) - log_density(w))
                continue
            a = -mpmath.inf if y == 0 else (mpmath.log(y) - z) / s
            b = mpmath.inf if u == mpmath.inf else (mpmath.log(u) - z) / s
            mass = survival(a) - survival(b) if a > 0 else cdf(b) - cdf(a)
            out.append(-mpmath.log(mass))
        return np.array([float(v) for v in out])


def ref_aft_logistic(d, sigma=1.0):
    """The logistic AFT likelihood (scipy.stats.logistic's density and CDF) at 60 digits."""
    import mpmath

    return _ref_aft(d, sigma, lambda w: -2 * mpmath.log1p(mpmath.exp(-w)) - w,
                    lambda w: 1 / (1 + mpmath.exp(-w)), lambda w: 1 / (1 + mpmath.exp(w)))


def ref_aft_extreme(d, sigma=1.0):
    """The extreme-value AFT likelihood (scipy.stats.gumbel_l: density exp(w - e^w), survival
    exp(-e^w)) at 60 digits."""
    import mpmath

    return _ref_aft(d, sigma, lambda w: w - mpmath.exp(w),
                    lambda w: -mpmath.expm1(-mpmath.exp(w)), lambda w: mpmath.exp(-mpmath.exp(w)))


def gaussian(rng) -> Inputs:
    y = rng.normal(0.0, 2.0, N)
    return {"y": y, "p": y + rng.normal(0.0, 1.0, N), "var": rng.uniform(0.3, 3.0, N)}


def gaussian_extreme(big: float) -> Inputs:
    extreme = regression_extreme(big)
    return {**extreme, "var": np.array([1.0, 2.0, 0.5, 1e8, 1e-3, 1.0])}


def vectors(rng) -> Inputs:
    return {"y": rng.normal(0.0, 1.0, (N, K)), "p": rng.normal(0.0, 1.0, (N, K))}


def vectors_extreme(big: float) -> Inputs:
    """Huge entries next to zeros (a zero vector has no direction: not a point to test)."""
    return {"y": np.array([[1e8, 0.0, -1e8, 1.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]),
            "p": np.array([[1e8, 1e8, 0.0, 0.0], [0.0, 0.0, 0.0, 1e8], [0.0, 0.0, 2.0, 0.0]])}


def overlap(rng) -> Inputs:
    return {"y": rng.choice([0.0, 1.0], N), "p": rng.uniform(0.05, 0.95, N)}


def overlap_extreme(big: float) -> Inputs:
    return {"y": np.array([0.0, 1.0, 0.0, 1.0, 1.0]), "p": np.array([0.0, 0.0, 1.0, 1.0, 0.5])}


def overlap_rows(rng) -> Inputs:
    """Masks and soft predictions with a row per image (or per class, transposed)."""
    return {"y": rng.choice([0.0, 1.0], (N, K)), "p": rng.uniform(0.05, 0.95, (N, K))}


def overlap_rows_extreme(big: float) -> Inputs:
    """Exact 0/1 predictions, an empty row (nothing to find, nothing found) and a missed one."""
    y = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    p = np.array([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    return {"y": y, "p": p}


def ref_dice_rows(d, smooth=1.0):
    y, p = d["y"], d["p"]
    return 1 - (2 * (y * p).sum(1) + smooth) / (y.sum(1) + p.sum(1) + smooth)


def ref_tversky_rows(d, alpha=0.5, beta=0.5, smooth=1.0):
    y, p = d["y"], d["p"]
    tp, fp, fn = (y * p).sum(1), ((1 - y) * p).sum(1), (y * (1 - p)).sum(1)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def ref_generalized_dice_rows(d, smooth=1.0):
    w = 1 / (d["y"].sum(1) ** 2 + 1e-7)
    return w / w.mean() * ref_dice_rows(d, smooth)


def overlap_images(rng, prediction: str = "p", weights: bool = False) -> Inputs:
    """Three images of 3, 2 and 3 pixels (rows) and K classes, their ids out of order; masks,
    soft predictions (or logits) and per-class weights."""
    y = rng.choice([0.0, 1.0], (N, K))
    z = 2.0 * rng.normal(size=(N, K))
    w = rng.uniform(0.5, 2.0, K)
    return {"y": y, prediction: _softmax(z) if prediction == "p" else z,
            "g": np.array([7, 2, 7, 7, 5, 2, 5, 5]), **({"w": w} if weights else {})}


def overlap_images_extreme(big: float, prediction: str = "p", weights: bool = False) -> Inputs:
    """Exact 0/1 predictions (saturated logits +-big), a class absent from an image and
    missed (nothing to find, nothing found), one image of one pixel (its logits ordinary:
    the float32 check's tolerance scales with the largest gradient entry, and a softmax's
    saturated entries keep only its rounding)."""
    y = np.array([[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1],
                  [1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=float)
    hit = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1],
                    [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=float)
    z = big * (2 * hit - 1)
    z[-1] = [0.3, -0.2, 0.1, 0.5]
    return {"y": y, prediction: hit if prediction == "p" else z,
            "g": np.array([0, 0, 0, 1, 1, 1, 1, 3]),
            **({"w": np.array([1.0, 2.0, 0.5, 1.0])} if weights else {})}


def ref_images(d, kind="dice", smooth=1.0, alpha=0.5, beta=0.5, weight=None,
               ignore_background=0):
    """The mean over images (rows of one id) of the mean over classes (but class 0 where
    ignored) of the weighted per-class loss from the image's soft counts."""
    y, g = d["y"], d["g"]
    p = d["p"] if "p" in d else _softmax(d["z"])
    weight = np.ones(y.shape[1]) if weight is None else d[weight]
    kept = np.arange(y.shape[1]) >= ignore_background
    losses = []
    for image in np.unique(g):
        yi, pi = y[g == image], p[g == image]
        tp, fp, fn = (yi * pi).sum(0), ((1 - yi) * pi).sum(0), (yi * (1 - pi)).sum(0)
        if kind == "tversky":
            per_class = 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
        else:
            per_class = 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
        if kind in ("generalized", "generalized_batch"):
            # the class frequencies of the image, or of the whole batch (optax's batched call)
            frequencies = (yi if kind == "generalized" else y).sum(0)
            inverse = 1 / (frequencies ** 2 + 1e-7)
            per_class = inverse / inverse.mean() * per_class
        losses.append(np.mean((weight * per_class)[kept]))
    return np.mean(losses)


def distributions(rng) -> Inputs:
    return {"y": rng.dirichlet(np.ones(K), N), "p": rng.dirichlet(2 * np.ones(K), N)}


def distributions_extreme(big: float) -> Inputs:
    """Zeros in the target rows (p stays positive: the log-form gradients are finite there)."""
    return {"y": np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.25] * 4]),
            "p": np.array([[0.7, 0.1, 0.1, 0.1], [1e-12, 0.5, 0.5 - 1e-12, 1e-300], [0.25] * 4])}


def log_distributions(rng) -> Inputs:
    d = distributions(rng)
    return {"y": d["y"], "log_p": np.log(d["p"])}


def log_distributions_extreme(big: float) -> Inputs:
    return {"y": np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]]),
            "log_p": np.array([[0.0, -big, -big, -big], [-big, -big, 0.0, -big]])}


def weights(rng) -> Inputs:
    return {"w": rng.normal(0.0, 2.0, N)}


def weights_extreme(big: float) -> Inputs:
    return {"w": np.array([0.0, 1e8, -1e8, 0.5, 0.0])}


def groups(rng) -> Inputs:
    return {"w": rng.normal(0.0, 2.0, (3, K))}


def groups_extreme(big: float) -> Inputs:
    return {"w": np.array([[0.0, 0.0, 0.0, 0.0], [1e8, -1e8, 0.0, 1.0], [1e-8, 0.0, 0.0, 0.0]])}


def log_probabilities(rng, weighted: bool = False) -> Inputs:
    """Integer labels with log-softmax rows; ``weighted`` adds class weights ``w`` (K,)."""
    d = class_logits(rng, sparse=True)
    out = {"y": d["y"], "log_p": _np(torch.log_softmax(_t(d["z"]), dim=1))}
    return {**out, "w": rng.uniform(0.2, 3.0, K)} if weighted else out


def log_probabilities_extreme(big: float, weighted: bool = False) -> Inputs:
    d = class_logits_extreme(big, sparse=True)
    out = {"y": d["y"], "log_p": _np(torch.log_softmax(_t(d["z"]), dim=1))}
    return {**out, "w": np.array([0.5, 2.0, 1.0, 3.0])} if weighted else out


def ref_nll(d):
    weight = _t(d["w"]) if "w" in d else None
    return _np(F.nll_loss(_t(d["log_p"]), torch.as_tensor(d["y"]), weight=weight,
                          reduction="none"))


def ref_multiclass_perceptron(d):  # optax.multiclass_perceptron_loss
    return np.max(d["z"], axis=1) - (d["z"] * _onehot(d["y"])).sum(axis=1)


def _simplex_projection(z) -> np.ndarray:
    """Each row of z projected onto the probability simplex, by sorting (Duchi et al. 2008,
    Algorithm 1): the k largest entries with u_k - (u_1 + ... + u_k - 1)/k > 0 make the
    support, for u sorted in decreasing order."""
    u = -np.sort(-z, axis=1)
    totals = np.cumsum(u, axis=1)
    k = np.arange(1, z.shape[1] + 1)
    with np.errstate(invalid="ignore"):  # -inf - -inf past a row's finite entries
        support = np.count_nonzero(u - (totals - 1) / k > 0, axis=1)
    tau = (totals[np.arange(z.shape[0]), support - 1] - 1) / support
    return np.maximum(z - tau[:, None], 0.0)


def ref_multiclass_sparsemax(d):  # optax.losses.multiclass_sparsemax_loss
    p, z = _simplex_projection(d["z"]), d["z"]
    true = np.take_along_axis(z, np.asarray(d["y"])[:, None], axis=1)
    return np.where(p > 0, p * (z - true), 0.0).sum(axis=1) + 0.5 * (1 - (p * p).sum(axis=1))


def ref_categorical_hinge(d):  # keras.losses.categorical_hinge
    positive = (d["y"] * d["z"]).sum(axis=1)
    negative = ((1.0 - d["y"]) * d["z"]).max(axis=1)
    return np.maximum(negative - positive + 1.0, 0.0)


def hinge_one_hot(rng) -> Inputs:
    """One-hot targets and scores clear of the categorical hinge's kinks: the largest of
    (1 - y) z (the true class a 0) apart from the next, and 1 + that - z_y away from 0."""
    labels, z = rng.integers(0, K, N), rng.normal(0.0, 2.0, (N, K))
    y = np.eye(K)[labels]
    for i in range(N):
        while True:
            top = np.sort((1.0 - y[i]) * z[i])
            if top[-1] - top[-2] > 0.05 and abs(1.0 + top[-1] - z[i, labels[i]]) > 0.05:
                break
            z[i] = rng.normal(0.0, 2.0, K)
    return {"y": y, "z": z}


def log_target_distributions(rng) -> Inputs:
    d = distributions(rng)
    return {"y": np.log(d["y"]), "log_p": np.log(d["p"])}


def log_target_distributions_extreme(big: float) -> Inputs:
    """Targets log 0 = -inf (adding 0), and log-probabilities -big under and away from them."""
    with np.errstate(divide="ignore"):
        y = np.log(np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.25] * 4]))
    return {"y": y, "log_p": np.array([[0.0, -big, -big, -big], [-big, -big, 0.0, -big],
                                       [-big, 0.0, -big, -big]])}


def ref_kl_div_log_target(d):
    """torch's KLDivLoss(log_target=True), its NaN at a target log 0 = -inf read as 0 (the
    0 log 0 = 0 that torch's log_target=False applies)."""
    per_class = _np(F.kl_div(_t(d["log_p"]), _t(d["y"]), reduction="none", log_target=True))
    return np.where(d["y"] == -np.inf, 0.0, per_class).sum(axis=1)


def nonnegative_pairs(rng) -> Inputs:
    """Non-negative y (a quarter exact 0s) and positive p, not normalised."""
    y = rng.uniform(0.0, 3.0, N) * (rng.uniform(size=N) > 0.25)
    return {"y": y, "p": rng.uniform(0.1, 3.0, N)}


def nonnegative_pairs_extreme(big: float) -> Inputs:
    """0 against 0 and 1e8, 1e8 against 2e8, 1 against 1e-100 (whose Hessian y/p^2 = 1e200 is
    still a float64; at p = 1e-300 it would overflow), and 1e-300 against 1."""
    return {"y": np.array([0.0, 0.0, 1e8, 1.0, 1e-300, 2.0]),
            "p": np.array([0.0, 1e8, 2e8, 1e-100, 1.0, 2.0])}


def ref_tweedie_sklearn(d, power):
    from sklearn._loss.loss import HalfTweedieLoss

    return HalfTweedieLoss(power=power).loss(d["y"], d["z"])


def ref_mape_lightgbm(d):
    """LightGBM's MAPE metric (src/metric/regression_metric.hpp MAPEMetric::LossOnPoint):
    fabs(label - score) / max(1, fabs(label)), in float64."""
    return np.abs(d["y"] - d["p"]) / np.maximum(1.0, np.abs(d["y"]))


def _clear_of_kink(make: Callable[[np.random.Generator], Inputs],
                   kink: Callable[[Inputs], np.ndarray]) -> Callable[[np.random.Generator], Inputs]:
    """Inputs from ``make`` drawn again until every ``kink(inputs)`` is 0.05 away from 0 (the
    hinge of a margin loss), so that the ordinary inputs' finite differences see no kink."""

    def draw(rng: np.random.Generator) -> Inputs:
        while True:
            inputs = make(rng)
            if np.all(np.abs(kink(inputs)) > 0.05):
                return inputs

    return draw


def distance_pairs(rng) -> Inputs:
    return {"y": rng.choice([-1.0, 1.0], N), "x": rng.uniform(0.0, 3.0, N)}


def distance_pairs_extreme(big: float) -> Inputs:
    """Huge, zero and negative distances (a label of 0, where PyTorch adds both terms, is
    outside the loss's declared domain {-1, 1} and refused)."""
    return {"y": np.array([1.0, -1.0, 1.0, -1.0, -1.0]),
            "x": np.array([1e8, 1e8, 0.0, 0.0, -1e8])}


def score_pairs(rng) -> Inputs:
    return {"y": rng.choice([-1.0, 1.0], N), "x1": rng.normal(0.0, 2.0, N),
            "x2": rng.normal(0.0, 2.0, N)}


def score_pairs_extreme(big: float) -> Inputs:
    return {"y": np.array([1.0, -1.0, 1.0, -1.0, 1.0]),
            "x1": np.array([big, big, -big, -big, 0.0]),
            "x2": np.array([-big, -big, big, big, 0.0])}


def queries(rng, prediction: str = "z") -> Inputs:
    """Graded relevance y (0-4) and scores of the documents of six queries of 1 to 9
    documents, the query ids q any integers, shuffled (one query has no relevant document)."""
    q = np.repeat([40, 7, 13, 2, 99, 5], [1, 3, 9, 5, 2, 7])
    rng.shuffle(q)
    y = rng.integers(0, 5, q.size).astype(float)
    y[q == 99] = 0.0
    return {"y": y, prediction: rng.normal(0.0, 1.5, q.size), "q": q}


def queries_extreme(big: float, prediction: str = "z") -> Inputs:
    return {"y": np.array([0.0, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0, 1.0]),
            prediction: np.array([big, -big, 0.0, big, big, -big, 0.5, -big]),
            "q": np.array([1, 1, 1, 2, 2, 3, 3, 3])}


def embeddings(rng, unit: bool = False) -> Inputs:
    """Rows (N, 4) of embeddings s with labels y of 3 classes in six groups g of 1 to 9
    samples, shuffled (``unit``: rows of norm 1, as Keras' circle loss expects them)."""
    g = np.repeat([40, 7, 13, 2, 99, 5], [1, 3, 9, 5, 2, 7])
    rng.shuffle(g)
    s = rng.normal(0.0, 1.0, (g.size, 4))
    if unit:
        s /= np.linalg.norm(s, axis=1, keepdims=True)
    return {"y": rng.integers(0, 3, g.size).astype(float), "s": s, "g": g}


def _per_group(d, per_group: Callable[[dict], np.ndarray]) -> np.ndarray:
    """A per-sample value computed group by group (the groups of ``d["g"]``)."""
    return _per_query({**d, "q": d["g"]}, per_group)


def ref_ntxent(d, tau: float = 0.07, eps: float = float(np.finfo(np.float64).eps)):
    """optax.losses.ntxent's terms (its source), per sample: over its positive pairs (i, j),
    -log(e^c_ij / (e^c_ij + the sum over i's negatives of e^c_ik)), c the cosine similarity
    (squared norms clipped at eps) over tau; within each group."""
    def per_group(d):
        norms = np.sqrt(np.maximum(np.sum(d["s"] ** 2, axis=1), eps))
        c = d["s"] @ d["s"].T / np.outer(norms, norms) / tau
        same = d["y"][:, None] == d["y"][None, :]
        positive = same & ~np.eye(same.shape[0], dtype=bool)
        with np.errstate(divide="ignore"):
            negatives = np.log(np.sum(np.where(~same, np.exp(c), 0.0), axis=1, keepdims=True))
        return np.sum(np.where(positive, np.logaddexp(c, negatives) - c, 0.0), axis=1)
    return _per_group(d, per_group)


def ref_circle(d, gamma: float = 80.0, margin: float = 0.4):
    """keras.losses.circle (its source, remove_diagonal=True) per sample, within each
    group."""
    def per_group(d):
        distance = np.maximum(1 - d["s"] @ d["s"].T, 0.0)
        same = d["y"][:, None] == d["y"][None, :]
        positive, negative = same & ~np.eye(same.shape[0], dtype=bool), ~same
        pos = -gamma * np.maximum(margin + distance, 0.0) * (margin - distance)
        neg = gamma * np.maximum(1 + margin - distance, 0.0) * (1 - margin - distance)
        return np.logaddexp(0.0, scipy.special.logsumexp(np.where(positive, pos, -np.inf), axis=1)
                            + scipy.special.logsumexp(np.where(negative, neg, -np.inf), axis=1))
    return _per_group(d, per_group)


def _per_query(d, per_query: Callable[[dict], np.ndarray]) -> np.ndarray:
    """A per-document value computed query by query."""
    out = np.empty(d["q"].shape[0])
    for query in np.unique(d["q"]):
        rows = d["q"] == query
        out[rows] = per_query({k: v[rows] for k, v in d.items()})
    return out


def survival_labels(rng) -> Inputs:
    """XGBoost's survival labels: y > 0 an event at time y, y < 0 censored at -y; times on
    a grid of eight, so that events and censored samples tie, and risk scores z."""
    time = rng.integers(1, 9, 24).astype(float)
    event = rng.random(24) < 0.6
    return {"y": np.where(event, time, -time), "z": rng.normal(0.0, 1.5, 24)}


def survival_labels_extreme(big: float) -> Inputs:
    return {"y": np.array([1.0, -1.0, 2.0, 2.0, -3.0, 3.0, 4.0, -2.0]),
            "z": np.array([big, -big, 0.0, -big, big, 0.5, -big, big])}


def ref_cox_ph(d):
    """Breslow's negative log partial likelihood term of each event: log of the sum of
    exp(z) over every sample whose |y| is at least its time, minus its own z (the risk set
    written out, a quadratic loop)."""
    time, z = np.abs(d["y"]), d["z"]
    at_risk = time[None, :] >= time[:, None]
    log_risk = scipy.special.logsumexp(np.where(at_risk, z[None, :], -np.inf), axis=1)
    return np.where(d["y"] > 0, log_risk - z, 0.0)


def ref_cox_ph_efron(d):
    """Efron's term of each event: its tie group's d events (events at its time) share
    sum_{l<d} log(R - (l/d) D), R the risk set's sum of exp(z), D the tied events', each
    taking 1/d of it, minus its own z; written out with logs of the sums (log R +
    log1p(-(l/d) D/R), D <= R) so that scores of 1e4 stay finite."""
    time, z, event = np.abs(d["y"]), d["z"], d["y"] > 0
    at_risk = time[None, :] >= time[:, None]
    tied = (time[None, :] == time[:, None]) & event[None, :]
    log_risk = scipy.special.logsumexp(np.where(at_risk, z[None, :], -np.inf), axis=1)
    log_tied = scipy.special.logsumexp(np.where(tied, z[None, :], -np.inf), axis=1)
    out = np.zeros(z.size)
    for i in np.flatnonzero(event):
        count = int(tied[i].sum())
        share = np.exp(log_tied[i] - log_risk[i])
        out[i] = sum(log_risk[i] + np.log1p(-(level / count) * share)
                     for level in range(count)) / count - z[i]
    return out


def ref_binary_sparsemax(d):  # jax.nn.sparse_plus(where(y, -z, z)), optax's definition
    x = np.where(d["y"] != 0, -d["z"], d["z"])
    return np.where(x <= -1, 0.0, np.where(x >= 1, x, (x + 1) ** 2 / 4))


def ref_softmax_ranking(d):
    return _per_query(d, lambda g: -g["y"] * scipy.special.log_softmax(g["z"]))


def ref_listnet(d):
    def per_query(g):
        if g["y"].sum() == 0:
            return np.zeros_like(g["y"])
        return -(g["y"] / g["y"].sum()) * scipy.special.log_softmax(g["z"])
    return _per_query(d, per_query)


def ref_ranknet(d, sigma: float = 1.0):
    """RankNet by pairs: each document's softplus(-sigma (z_i - z_j)) over the documents j of
    its query with a lower grade."""
    def per_query(g):
        above = g["y"][:, None] > g["y"][None, :]
        difference = g["z"][:, None] - g["z"][None, :]
        return np.sum(np.where(above, np.logaddexp(0.0, -sigma * difference), 0.0), axis=1)
    return _per_query(d, per_query)


def _lambdarank(d, sigma: float = 1.0, truncation: int = 30, norm: bool = True):
    """(value, gradient, Hessian diagonal) of LightGBM's lambdarank, query by query as its
    RankingObjective computes the lambdas (a stable sort by score, the ideal DCG at the
    truncation level, lambdarank_norm's two rescalings); the value is the pairs' weighted
    logistic loss whose gradient those lambdas are."""
    y, z, q = d["y"], d["z"], d["q"]
    value, gradient, hessian = np.zeros(q.size), np.zeros(q.size), np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        rank = np.empty(q.size, int)
        rank[rows[np.argsort(-z[rows], kind="stable")]] = np.arange(1, rows.size + 1)
        ideal = np.sort(y[rows])[::-1][:truncation]
        best = np.sum((2**ideal - 1) / np.log2(np.arange(2, ideal.size + 2)))
        lambdas, total = [], 0.0
        for i in rows:
            for j in rows:
                if y[i] <= y[j] or min(rank[i], rank[j]) > truncation:
                    continue
                weight = abs((2**y[i] - 2**y[j]) * (1 / np.log2(1 + rank[i])
                                                    - 1 / np.log2(1 + rank[j]))) / best
                if norm and np.ptp(z[rows]) > 0:
                    weight /= 0.01 + abs(z[i] - z[j])
                p = scipy.special.expit(-sigma * (z[i] - z[j]))
                lambdas.append((i, j, weight, p))
                total += 2 * sigma * weight * p
        scale = np.log2(1 + total) / total if norm and total > 0 else 1.0
        for i, j, weight, p in lambdas:
            value[i] += scale * weight * np.logaddexp(0.0, -sigma * (z[i] - z[j]))
            gradient[i] -= scale * sigma * weight * p
            gradient[j] += scale * sigma * weight * p
            hessian[[i, j]] += scale * sigma**2 * weight * p * (1 - p)
    return value, gradient, hessian


def binary_queries(rng) -> Inputs:
    """queries() with 0/1 labels (relevant or not), as average precision takes them."""
    d = queries(rng)
    return {**d, "y": (d["y"] >= 2).astype(float)}


def binary_queries_extreme(big: float) -> Inputs:
    return {**queries_extreme(big), "y": np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])}


def _lambdarank_map(d, truncation: int = 32, norm: bool = True):
    """(value, gradient, Hessian diagonal) of XGBoost's rank:map with its "topk" pairs,
    query by query as LambdaRankObj::CalcLambdaForGroup computes them (a stable sort by
    score, MAPStat's running sums, DeltaMAP, the score and lambda normalisations) in
    float64; the Hessian is half XGBoost's (its pairs' hessians carry a factor 2), and the
    value is the pairs' weighted logistic loss whose gradient those lambdas are."""
    y, z, q = d["y"], d["z"], d["q"]
    value, gradient, hessian = np.zeros(q.size), np.zeros(q.size), np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        ranked = rows[np.argsort(-z[rows], kind="stable")]  # position -> document
        label = y[ranked]
        n_rel, acc = np.cumsum(label), np.cumsum(label / np.arange(1, label.size + 1))
        all_equal = np.ptp(z[rows]) == 0
        pairs, total = [], 0.0
        for i in range(min(label.size, truncation)):
            for j in range(i + 1, label.size):
                if label[i] == label[j]:
                    continue
                high, low = (i, j) if label[i] > label[j] else (j, i)
                upper, lower = min(high, low), max(high, low)  # DeltaMAP's positions
                r_h, r_l = upper + 1.0, lower + 1.0
                n, m = n_rel[upper], n_rel[lower]
                between = acc[lower - 1] - acc[upper]
                if label[upper] < label[lower]:
                    delta = (m / r_l - (n + 1.0) / r_h - between) / n_rel[-1]
                else:
                    delta = (n / r_h - m / r_l + between) / n_rel[-1]
                delta = abs(delta)
                s_high, s_low = z[ranked[high]], z[ranked[low]]
                if norm and not all_equal:
                    delta /= abs(s_high - s_low) + 0.01
                p = scipy.special.expit(s_high - s_low)
                pairs.append((ranked[high], ranked[low], delta, s_high - s_low))
                total += 2.0 * (1.0 - p) * delta
        scale = np.log2(1.0 + total) / total if norm and total > 0 else 1.0
        for high, low, delta, difference in pairs:
            p = scipy.special.expit(difference)
            value[high] += scale * delta * np.logaddexp(0.0, -difference)
            gradient[high] += scale * (p - 1.0) * delta
            gradient[low] -= scale * (p - 1.0) * delta
            hessian[[high, low]] += scale * p * (1.0 - p) * delta
    return value, gradient, hessian


def queries_with_draws(rng) -> Inputs:
    """queries() and each document's uniform draw u in [0, 1), on LightGBM's grid of 2^-15."""
    d = queries(rng)
    return {**d, "u": rng.integers(0, 2**15, d["q"].size) / 2**15}


def queries_with_ten_draws(rng) -> Inputs:
    """queries() and ten uniform draws per document (YetiRank's permutations)."""
    d = queries(rng)
    return {**d, "u": rng.uniform(size=(d["q"].size, 10))}


def queries_with_ten_draws_extreme(big: float) -> Inputs:
    return {**queries_extreme(min(big, 30.0)),
            "u": np.random.default_rng(8).uniform(size=(8, 10))}


def queries_with_draws_extreme(big: float) -> Inputs:
    return {**queries_extreme(big), "u": np.array([0.0, 0.5, 0.99, 0.25, 0.0, 0.75, 0.1, 0.9])}


def queries_with_noise(rng) -> Inputs:
    """queries() and each document's standard normal draw u (StochasticRank's noise)."""
    d = queries(rng)
    return {**d, "u": rng.standard_normal(d["q"].size)}


def queries_with_noise_extreme(big: float) -> Inputs:
    return {**queries_extreme(big), "u": np.array([0.0, 1.5, -0.3, 0.0, 2.0, -1.0, 0.7, 0.0])}


def binary_queries_with_noise(rng) -> Inputs:
    """binary_queries() (labels as PFound and ERR read them) and each document's noise u."""
    d = binary_queries(rng)
    return {**d, "u": rng.standard_normal(d["q"].size)}


def binary_queries_with_noise_extreme(big: float) -> Inputs:
    return {**binary_queries_extreme(big), "u": queries_with_noise_extreme(big)["u"]}


def queries_with_uniform_draws(rng) -> Inputs:
    """queries() and each document's uniform draw u in [0, 1) (StochasticFilter's)."""
    d = queries(rng)
    return {**d, "u": rng.uniform(size=d["q"].size)}


def queries_with_uniform_draws_extreme(big: float) -> Inputs:
    return {**queries_extreme(big), "u": np.array([0.0, 0.5, 0.99, 0.25, 1.0, 0.75, 0.1, 0.9])}


def _rank_xendcg(d):
    """(value, gradient, Hessian diagonal) of LightGBM's rank_xendcg given the draws u,
    query by query as RankXENDCG::GetGradientsForOneQuery computes its lambdas (in float64;
    its terms' divisions by 1 - softmax left out where the softmax is 1, where LightGBM's are
    nan); the value is the cross-entropy against the drawn target."""
    y, z, q, u = d["y"], d["z"], d["q"], d["u"]
    value, gradient, hessian = np.zeros(q.size), np.zeros(q.size), np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        if rows.size <= 1:
            continue
        rho = scipy.special.softmax(z[rows])
        params = 2.0 ** y[rows] - u[rows]
        target = params / max(1e-15, params.sum())
        below = rho < 1
        lambdas = rho - target
        ratio = np.where(below, lambdas / np.where(below, 1 - rho, 1), 0.0)
        term = rho * (ratio.sum() - ratio)
        lambdas = lambdas + term
        ratio = np.where(below, term / np.where(below, 1 - rho, 1), 0.0)
        lambdas = lambdas + rho * (ratio.sum() - ratio)
        value[rows] = -target * scipy.special.log_softmax(z[rows])
        gradient[rows], hessian[rows] = lambdas, rho * (1 - rho)
    return value, gradient, hessian


def ref_query_mse(d):
    return _per_query(d, lambda g: (g["y"] - g["p"] - np.mean(g["y"] - g["p"])) ** 2)


def ref_query_cross_entropy(d, alpha: float = 0.95):
    """CatBoost's QueryCrossEntropy per document: the log-loss at each query's shift b
    (:func:`coupled.logit_shift_mp`), none for a query of one class."""
    def per_query(g):
        y, z = g["y"], g["z"]

        def log_loss(scores):
            return np.logaddexp(0.0, scores) - y * scores

        shifted = np.zeros_like(z)
        if 0 < y.sum() < y.size:
            shifted = log_loss(z + logit_shift_mp(y, z))
        return (1 - alpha) * log_loss(z) + alpha * shifted

    return _per_query(d, per_query)


def vector_pairs(rng) -> Inputs:
    return {"y": rng.choice([-1.0, 1.0], N), "x1": rng.normal(0.0, 1.0, (N, K)),
            "x2": rng.normal(0.0, 1.0, (N, K))}


def vector_pairs_extreme(big: float) -> Inputs:
    d = vectors_extreme(big)
    return {"y": np.array([1.0, -1.0, -1.0]), "x1": d["y"], "x2": d["p"]}


def _cosine(d) -> np.ndarray:
    return _np(F.cosine_similarity(_t(d["x1"]), _t(d["x2"]), dim=1))


def triplets(rng) -> Inputs:
    a = rng.normal(0.0, 1.0, (N, K))
    return {"a": a, "p": a + rng.normal(0.0, 0.7, (N, K)), "n": rng.normal(0.0, 1.0, (N, K))}


def triplets_extreme(big: float) -> Inputs:
    """Coordinates of 1e8 next to zeros: far negatives, far positives, a zero loss."""
    return {"a": np.array([[1e8, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]]),
            "p": np.array([[0.0, 0.0, 1e8, 1.0], [1e8, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.5]]),
            "n": np.array([[1e8, 1e8, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [-1e8, 0.0, 0.0, 0.0]])}


def triplets_moderate(big: float) -> Inputs:
    """triplets_extreme's rows with 1e3 where they have 1e8: a norm other than 2 raises the
    coordinates to its power, and at 1e8 the float32 Hessian of |x|^3 overflows."""
    return {name: np.where(np.abs(value) == 1e8, np.sign(value) * 1e3, value)
            for name, value in triplets_extreme(big).items()}


def triplets_spread(big: float) -> Inputs:
    """Coordinates of 1e3 spread over every column. (Where one coordinate dominates its row,
    a p-norm's Hessian diagonal (p - 1) |x_k|^(p-2) s^(1/p-2) (s - |x_k|^p) cancels, and
    float32 keeps only about 1e-4 of the row's largest entry: checked in float64 by the
    norm=1 case's triplets_moderate.)"""
    return {"a": np.array([[1e3, -1e3, 5e2, 2e3], [0.0, 1.0, 2.0, 3.0], [3e3, 1e3, -2e3, 1e3]]),
            "p": np.array([[1.2e3, -8e2, 4e2, 2.1e3], [1e3, -1e3, 1e3, -1e3],
                           [2.9e3, 1.1e3, -2.1e3, 9e2]]),
            "n": np.array([[-1e3, 1e3, -5e2, -2e3], [0.5, 1.5, 2.5, 3.5],
                           [3.1e3, 9e2, -1.9e3, 1.2e3]])}


def _pnorm_distances(d, norm, eps=1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple((np.abs(u - v + eps) ** norm).sum(axis=1) ** (1 / norm)
                 for u, v in ((d["a"], d["p"]), (d["a"], d["n"]), (d["p"], d["n"])))


def _triplet_kinks(norm: float, margin: float = 1.0, swap: bool = False
                   ) -> Callable[[Inputs], np.ndarray]:
    """Where a triplet margin loss of ``norm`` has kinks: at its hinge, and with ``swap``
    where the negative's two distances tie."""
    def kinks(d: Inputs) -> np.ndarray:
        positive, negative, swapped = _pnorm_distances(d, norm)
        if not swap:
            return margin + positive - negative
        return np.concatenate([margin + positive - np.minimum(negative, swapped),
                               negative - swapped])
    return kinks


def ref_triplet_margin(d, norm=2, margin=1.0, swap=False):
    return _np(F.triplet_margin_loss(_t(d["a"]), _t(d["p"]), _t(d["n"]), margin=margin,
                                     p=norm, eps=1e-6, swap=swap, reduction="none"))


def _optax_distances(d, degree, eps=1e-6) -> tuple[np.ndarray, np.ndarray]:
    # optax.losses.triplet_margin_loss's distances (checked against optax itself in
    # test_triplet_margin_optax_is_optax)
    return tuple((((u - v) ** degree).sum(axis=1) + eps) ** (1 / degree)
                 for u, v in ((d["a"], d["p"]), (d["a"], d["n"])))


def ref_triplet_margin_optax(d, degree=2, margin=1.0):
    positive, negative = _optax_distances(d, degree)
    return np.maximum(positive - negative + margin, 0.0)


def mean_and_log_scale(rng) -> Inputs:
    """A label per row and two score columns: a mean and a log standard deviation."""
    return {"y": rng.normal(0.0, 2.0, N),
            "z": np.column_stack([rng.normal(0.0, 2.0, N), rng.uniform(-1.5, 1.5, N)])}


def mean_and_log_scale_extreme(big: float) -> Inputs:
    """Residuals of 1e8 and 0 at log-scales of +-big (the negative ones capped at -40, where
    a residual of 1 costs e^80 and float32 still holds its square)."""
    low = -min(big, 40.0)
    return {"y": np.array([1.0, 1.0, 2.0, 0.0, 5.0, 1e8]),
            "z": np.array([[1.0, big], [1.0 + 1e8, 0.0], [0.0, low], [0.0, low], [-3.0, 2.0],
                           [0.0, big]])}


def ref_gaussian_nll_scores(d):  # CatBoost RMSEWithUncertainty, per row
    y, mean, log_scale = d["y"], d["z"][:, 0], d["z"][:, 1]
    return 0.5 * np.log(2 * np.pi) + log_scale + 0.5 * ((y - mean) * np.exp(-log_scale)) ** 2


def intensities(rng, weighted: bool = False) -> Inputs:
    """Labels in [0, 1] (0 and 1 included) and raw scores; ``weighted`` adds LightGBM's
    positive per-sample weights ``w``."""
    y = np.concatenate([[0.0, 1.0], rng.uniform(0.0, 1.0, N - 2)])
    out = {"y": y, "z": rng.normal(0.0, 2.0, N)}
    return {**out, "w": rng.uniform(0.2, 3.0, N)} if weighted else out


def intensities_extreme(big: float, weighted: bool = False) -> Inputs:
    """Scores +-big, and both sides of the series' switch at weight e^z = e^-6."""
    z = np.array([big, big, -big, -big, -6.0, -6.01, -5.99, -40.0])
    out = {"y": np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.7, 1.0, 0.3]), "z": z}
    return {**out, "w": np.array([0.5, 2.0, 1.0, 3.0, 0.2, 1.0, 4.0, 0.7])} if weighted else out


def ref_cross_entropy_lambda(d):
    """LightGBM's XentLambdaLoss (src/metric/xentropy_metric.hpp) at 60 digits, without its
    clamp of the probability at 1e-12 (the objective's gradients have none): q = 1 -
    exp(-w log(1 + exp(z))), -(y log q + (1 - y) log(1 - q))."""
    import mpmath

    weights = d.get("w", np.ones_like(d["z"]))
    with mpmath.workdps(60):
        out = []
        for y, z, w in zip(d["y"], d["z"], weights):
            y, z, w = (mpmath.mpf(float(v)) for v in (y, z, w))
            hhat = mpmath.log1p(mpmath.exp(z))
            u = w * hhat  # log q = log(1 - exp(-u)), in the form that keeps its digits
            log_q = mpmath.log(-mpmath.expm1(-u)) if u < 1 else mpmath.log1p(-mpmath.exp(-u))
            out.append(-(y * log_q - (1 - y) * u))
        return np.array([float(v) for v in out])


def lightgbm_xentlambda_gradients(d) -> tuple[np.ndarray, np.ndarray]:
    """LightGBM's CrossEntropyLambda::GetGradients (src/objective/xentropy_objective.hpp),
    transcribed line by line in float64: the unit-weight branch without ``w``, else the
    weighted one."""
    score, y = d["z"], d["y"]
    if "w" not in d:
        z = 1.0 / (1.0 + np.exp(-score))
        return z - y, z * (1.0 - z)
    w = d["w"]
    epf = np.exp(score)
    hhat = np.log(1.0 + epf)
    z = 1.0 - np.exp(-w * hhat)
    enf = 1.0 / epf
    gradients = (1.0 - y / z) * w / (1.0 + enf)
    c = 1.0 / (1.0 - z)
    dd = 1.0 + epf
    a = w * epf / (dd * dd)
    dd = c - 1.0
    b = (c / (dd * dd)) * (1.0 + w * epf - c)
    return gradients, a * (1.0 + y * b)


def _losses(reference: Callable[..., torch.Tensor], names: str, **fixed):
    """A reference from a torch.nn.functional loss called as ``f(prediction, target)``."""
    prediction, target = names.split(",")

    def compute(d: Inputs) -> np.ndarray:
        return _np(reference(_t(d[prediction]), _t(d[target]), reduction="none", **fixed))

    return compute


CASES: list[Case] = [
    # ------------------------------------------------------------------ regression
    Case("mse(y, p)", _losses(F.mse_loss, "p,y"), regression, regression_extreme,
         reduction_check=True),
    Case("half_mse(y, p)", lambda d: 0.5 * _losses(F.mse_loss, "p,y")(d), regression,
         regression_extreme),
    Case("mae(y, p)", _losses(F.l1_loss, "p,y"), regression, regression_extreme),
    Case("huber(y, p)", _losses(F.huber_loss, "p,y"), regression, regression_extreme),
    Case("huber(y, p, 0.5)", _losses(F.huber_loss, "p,y", delta=0.5), regression,
         regression_extreme),
    Case("smooth_l1(y, p)", _losses(F.smooth_l1_loss, "p,y"), regression, regression_extreme),
    Case("smooth_l1(y, p, beta=0.3)", _losses(F.smooth_l1_loss, "p,y", beta=0.3), regression,
         regression_extreme),
    Case("pseudo_huber(y, p)", ref_pseudo_huber, regression, regression_extreme),
    Case("pseudo_huber(y, p, 2.0)", functools.partial(ref_pseudo_huber, delta=2.0), regression,
         regression_extreme),
    Case("log_cosh(y, p)", lambda d: np.logaddexp(d["p"] - d["y"], d["y"] - d["p"]) - np.log(2),
         regression, regression_extreme),
    Case("fair(y, p)", ref_fair, regression, regression_extreme),
    Case("fair(y, p, c=2.0)", functools.partial(ref_fair, c=2.0), regression, regression_extreme),
    Case("cauchy(y, p, c=1.5)",
         lambda d: 0.5 * 1.5**2 * np.log1p(((d["p"] - d["y"]) / 1.5) ** 2), regression,
         regression_extreme),
    Case("tukey_biweight(y, p)", ref_tukey, _regression(spread=5.0), regression_extreme),
    Case("quantile(y, p, 0.9)", functools.partial(ref_pinball, alpha=0.9), regression,
         regression_extreme),
    Case("pinball(y, p)", ref_pinball, regression, regression_extreme),
    Case("expectile(y, p, 0.2)", functools.partial(ref_expectile, alpha=0.2), regression,
         regression_extreme),
    Case("quantile_noncrossing(y, z, a)", ref_levels, levels_ordinary, levels_extreme),
    Case("expectile_noncrossing(y, z, a)", functools.partial(ref_levels, expectile=True),
         levels_ordinary, levels_extreme),
    Case("log_linear_quantile(y, z, 0.3)",
         lambda d: ref_pinball({"y": d["y"], "p": np.exp(d["z"])}, alpha=0.3),
         _clear_of_kink(positive_log_link, lambda d: d["y"] - np.exp(d["z"])),
         _logit_extreme(lambda big: (-big, -big, 0.0), labels=(0.5, 3.0))),
    Case("epsilon_insensitive(y, p, 0.5)",
         lambda d: np.maximum(0, np.abs(d["p"] - d["y"]) - 0.5), regression, regression_extreme),
    Case("squared_epsilon_insensitive(y, p)",
         lambda d: np.maximum(0, np.abs(d["p"] - d["y"]) - 0.1) ** 2, regression,
         regression_extreme),
    Case("lq(y, p)", lambda d: np.abs(d["p"] - d["y"]) ** 1.5, regression, regression_extreme),
    Case("mape(y, p)", lambda d: 100 * np.abs(d["y"] - d["p"]) / np.maximum(np.abs(d["y"]), 1e-7),
         regression, regression_extreme),
    Case("mape_lightgbm(y, p)", ref_mape_lightgbm, regression, regression_extreme),
    Case("smape(y, p)", ref_smape, regression, regression_extreme),
    Case("msle(y, p)", ref_msle, _regression(positive_y=True, spread=0.3),
         _regression_extreme(positive_y=True)),
    Case("poisson(y, p)",
         lambda d: _np(F.poisson_nll_loss(_t(d["p"]), _t(d["y"]), log_input=False,
                                          reduction="none")), rate, rate_extreme),
    Case("poisson(y, p, full=1)",
         lambda d: _np(F.poisson_nll_loss(_t(d["p"]), _t(d["y"]), log_input=False, full=True,
                                          reduction="none")), rate, rate_extreme),
    Case("poisson_log(y, z)",
         lambda d: _np(F.poisson_nll_loss(_t(d["z"]), _t(d["y"]), reduction="none")),
         count_log_link, _logit_extreme(lambda big: (-big, -big, 0.0))),
    Case("poisson_log(y, z, full=1)",
         lambda d: _np(F.poisson_nll_loss(_t(d["z"]), _t(d["y"]), full=True, reduction="none")),
         count_log_link, _logit_extreme(lambda big: (-big, -big, 0.0))),
    Case("gamma(y, z)", ref_gamma, positive_log_link,
         _logit_extreme(lambda big: (big, big, -20.0), labels=(0.5, 3.0))),
    Case("tweedie(y, z)", ref_tweedie, count_log_link,
         _logit_extreme(lambda big: (min(big, 500.0), -min(big, 500.0), 0.0))),
    Case("tweedie(y, z, 1.2)", functools.partial(ref_tweedie, rho=1.2), count_log_link,
         _logit_extreme(lambda big: (min(big, 500.0), -min(big, 500.0), 0.0))),
    Case("tweedie(y, z, 0.0)", functools.partial(ref_tweedie_sklearn, power=0.0), count_log_link,
         _logit_extreme(lambda big: (min(big / 4, 300.0), -min(big, 500.0), 0.0))),
    Case("tweedie(y, z, 1.0)", functools.partial(ref_tweedie_sklearn, power=1.0), count_log_link,
         _logit_extreme(lambda big: (min(big, 500.0), -big, 0.0))),
    Case("tweedie(y, z, 2.0)", functools.partial(ref_tweedie_sklearn, power=2.0),
         positive_log_link,
         _logit_extreme(lambda big: (big, -min(big, 500.0), 0.0), labels=(0.5, 3.0))),
    Case("aft_normal(y, z)", ref_aft_normal, positive_log_link,
         _logit_extreme(lambda big: (big, -big, 0.0), labels=(0.5, 3.0))),
    Case("aft_normal(y, z, y_upper=u, sigma=0.7)", functools.partial(ref_aft_normal, sigma=0.7),
         survival_times, survival_extreme),
    Case("aft_logistic(y, z)", ref_aft_logistic, positive_log_link,
         _logit_extreme(lambda big: (big, -big, 0.0), labels=(0.5, 3.0))),
    Case("aft_logistic(y, z, y_upper=u, sigma=0.7)",
         functools.partial(ref_aft_logistic, sigma=0.7), survival_times, survival_extreme),
    Case("aft_extreme(y, z)", ref_aft_extreme, positive_log_link,
         _logit_extreme(lambda big: (min(big, 500.0), -min(big, 500.0), 0.0),
                        labels=(0.5, 3.0))),
    # exp((log y - z)/sigma) is the loss itself: at sigma 0.7 float32 holds it to |z| = 60
    Case("aft_extreme(y, z, y_upper=u, sigma=0.7)",
         functools.partial(ref_aft_extreme, sigma=0.7), survival_times,
         lambda big: survival_extreme(min(big, 300.0) if big > BIG32 else big / 2)),
    Case("cox_ph(y, z)", ref_cox_ph, survival_labels, survival_labels_extreme),
    Case("cox_ph_efron(y, z)", ref_cox_ph_efron, survival_labels, survival_labels_extreme),
    Case("gaussian_nll(y, p, var)",
         lambda d: _np(F.gaussian_nll_loss(_t(d["p"]), _t(d["y"]), _t(d["var"]),
                                           reduction="none")),
         gaussian, gaussian_extreme, wrt=("p", "var")),
    Case("gaussian_nll(y, p, var, full=1)",
         lambda d: _np(F.gaussian_nll_loss(_t(d["p"]), _t(d["y"]), _t(d["var"]), full=True,
                                           reduction="none")),
         gaussian, gaussian_extreme),
    Case("gaussian_nll_scores(y, z)", ref_gaussian_nll_scores, mean_and_log_scale,
         mean_and_log_scale_extreme),
    Case("negative_binomial_scores(y, z)", ref_negative_binomial_scores,
         counts_mean_and_dispersion, counts_mean_and_dispersion_extreme),
    Case("negative_binomial(y, z)", ref_negative_binomial, count_log_link,
         _logit_extreme(lambda big: (big, -big, big, -big))),
    Case("negative_binomial(y, z, alpha=0.3)",
         functools.partial(ref_negative_binomial, alpha=0.3), count_log_link,
         _logit_extreme(lambda big: (big, -big, big, -big))),
    # ------------------------------------------------------------------ binary classification
    Case("bce(y, p)", ref_bce, binary_probabilities, binary_probabilities_extreme),
    Case("bce(y, p, label_smoothing=0.2)", functools.partial(ref_bce, smoothing=0.2),
         binary_probabilities, binary_probabilities_extreme),
    Case("bce_logits(y, z)", ref_bce_logits, binary_logits, binary_logits_extreme,
         reduction_check=True),
    Case("bce_logits(y, z, pos_weight=3.0, label_smoothing=0.1)",
         functools.partial(ref_bce_logits, pos_weight=3.0, smoothing=0.1), binary_logits,
         binary_logits_extreme),
    Case("probit_bce(y, z)",
         lambda d: -(d["y"] * scipy.special.log_ndtr(d["z"])
                     + (1 - d["y"]) * scipy.special.log_ndtr(-d["z"])),
         binary_logits, binary_logits_extreme),
    Case("multilabel_bce(y, p)",
         lambda d: _np(F.binary_cross_entropy(_t(d["p"]), _t(d["y"]), reduction="none").mean(1)),
         multilabel_probabilities, multilabel_probabilities_extreme),
    Case("multilabel_bce_logits(y, z)",
         lambda d: _np(F.multilabel_soft_margin_loss(_t(d["z"]), _t(d["y"]), reduction="none")),
         multilabel_logits, multilabel_logits_extreme),
    Case("multilabel_margin(y, z)",
         lambda d: _np(F.multilabel_margin_loss(_t(d["z"]), multilabel_margin_targets(d["y"]),
                                                reduction="none")),
         multilabel_logits, multilabel_logits_extreme),
    Case("focal(y, p)", ref_focal, binary_probabilities, binary_probabilities_extreme),
    Case("focal(y, p, alpha=-1, gamma=3.0)", functools.partial(ref_focal, alpha=-1, gamma=3.0),
         binary_probabilities, binary_probabilities_extreme),
    Case("focal(y, p, label_smoothing=0.2)", functools.partial(ref_focal, smoothing=0.2),
         binary_probabilities, binary_probabilities_extreme),
    Case("focal_logits(y, z, label_smoothing=0.1)",
         functools.partial(ref_focal_logits, smoothing=0.1), binary_logits,
         binary_logits_extreme),
    Case("focal_logits(y, z)", ref_focal_logits, binary_logits, binary_logits_extreme),
    Case("focal_logits(y, z, alpha=0.6, gamma=1.5)",
         functools.partial(ref_focal_logits, alpha=0.6, gamma=1.5), binary_logits,
         binary_logits_extreme),
    Case("hinge(y, z)", lambda d: np.maximum(0, 1 - d["y"] * d["z"]),
         functools.partial(binary_logits, labels=(-1.0, 1.0)), margin_extreme),
    Case("squared_hinge(y, z)", lambda d: np.maximum(0, 1 - d["y"] * d["z"]) ** 2,
         functools.partial(binary_logits, labels=(-1.0, 1.0)), margin_extreme),
    Case("modified_huber(y, z)", ref_modified_huber,
         functools.partial(binary_logits, labels=(-1.0, 1.0)), margin_extreme),
    Case("perceptron(y, z)", lambda d: np.maximum(0, -d["y"] * d["z"]),
         functools.partial(binary_logits, labels=(-1.0, 1.0)), margin_extreme),
    # torch.nn.SoftMarginLoss's formula; torch itself overflows to inf for y z < -710
    Case("soft_margin(y, z)", lambda d: np.logaddexp(0, -d["y"] * d["z"]),
         functools.partial(binary_logits, labels=(-1.0, 1.0)), margin_extreme),
    Case("binary_sparsemax(y, z)", ref_binary_sparsemax,
         _clear_of_kink(binary_logits, lambda d: (np.abs(d["z"]) - 1.0)),
         lambda big: {name: v[:4] for name, v in binary_logits_extreme(big).items()}),
    Case("exponential(y, z)", ref_exponential, binary_logits,
         lambda big: {"y": np.array([1.0, 0.0, 1.0, 0.0]), "z": np.array([big, -big, 0.0, 0.0])}),
    Case("cross_entropy_lambda(y, z)", ref_cross_entropy_lambda, intensities,
         intensities_extreme),
    Case("cross_entropy_lambda(y, z, weight=w)", ref_cross_entropy_lambda,
         functools.partial(intensities, weighted=True),
         functools.partial(intensities_extreme, weighted=True)),
    Case("hinge_embedding(y, x)",
         lambda d: _np(F.hinge_embedding_loss(_t(d["x"]), _t(d["y"]), reduction="none")),
         _clear_of_kink(distance_pairs, lambda d: 1.0 - d["x"]), distance_pairs_extreme),
    Case("hinge_embedding(y, x, margin=2.5)",
         lambda d: _np(F.hinge_embedding_loss(_t(d["x"]), _t(d["y"]), margin=2.5,
                                              reduction="none")),
         _clear_of_kink(distance_pairs, lambda d: 2.5 - d["x"]), distance_pairs_extreme),
    Case("margin_ranking(y, x1, x2)",
         lambda d: _np(F.margin_ranking_loss(_t(d["x1"]), _t(d["x2"]), _t(d["y"]),
                                             reduction="none")),
         _clear_of_kink(score_pairs, lambda d: d["x1"] - d["x2"]), score_pairs_extreme,
         wrt=("x1", "x2"), reduction_check=True),
    Case("margin_ranking(y, x1, x2, margin=0.5)",
         lambda d: _np(F.margin_ranking_loss(_t(d["x1"]), _t(d["x2"]), _t(d["y"]), margin=0.5,
                                             reduction="none")),
         _clear_of_kink(score_pairs, lambda d: 0.5 - d["y"] * (d["x1"] - d["x2"])),
         score_pairs_extreme, wrt=("x1", "x2")),
    # ------------------------------------------------------------------ groups (ranking)
    Case("softmax_ranking(y, z, q)", ref_softmax_ranking, queries, queries_extreme),
    Case("softmax_ranking(y, z, q, beta=2.0)",
         lambda d: ref_softmax_ranking({**d, "z": 2.0 * d["z"]}), queries, queries_extreme),
    Case("listnet(y, z, q)", ref_listnet, queries, queries_extreme),
    Case("ranknet(y, z, q)", ref_ranknet, queries, queries_extreme),
    Case("ntxent(y, s, g)", ref_ntxent, embeddings, None),
    Case("circle(y, s, g)", ref_circle, functools.partial(embeddings, unit=True), None),
    # other constants: full runs only (a pair kernel over rows compiles in 10-20 s on CI's
    # cores; tests/test_embedding_rows.py checks the defaults against optax and Keras)
    *(() if SAMPLING else (
        Case("ntxent(y, s, g, tau=0.5)", functools.partial(ref_ntxent, tau=0.5), embeddings,
             None),
        Case("circle(y, s, g, gamma=2.0, margin=0.25)",
             functools.partial(ref_circle, gamma=2.0, margin=0.25), embeddings, None))),
    Case("ranknet(y, z, q, sigma=0.5)", functools.partial(ref_ranknet, sigma=0.5), queries,
         queries_extreme),
    *(Case(call, lambda d, options=options: _lambdarank(d, **options)[0], queries,
           queries_extreme,
           derivative_reference=lambda d, options=options: _lambdarank(d, **options)[1:])
      for call, options in [("lambdarank(y, z, q)", {}),
                            ("lambdarank(y, z, q, sigma=2.0, truncation=3, norm=0)",
                             {"sigma": 2.0, "truncation": 3, "norm": False})]),
    *(Case(call, lambda d, options=options: _lambdarank_map(d, **options)[0], binary_queries,
           binary_queries_extreme,
           derivative_reference=lambda d, options=options: _lambdarank_map(d, **options)[1:])
      for call, options in [("lambdarank_map(y, z, q)", {}),
                            ("lambdarank_map(y, z, q, truncation=2, norm=0)",
                             {"truncation": 2, "norm": False})]),
    # CatBoost's LambdaMart (metric=MRR, ERR), its algorithm transcribed in NumPy
    *(Case(call, lambda d, m=metric, o=options: catboost_lambdamart(m, d, **o)[0],
           binary_queries, binary_queries_extreme,
           derivative_reference=lambda d, m=metric, o=options: catboost_lambdamart(m, d, **o)[1:])
      for call, metric, options in [
          ("lambdarank_mrr(y, z, q)", "MRR", {}),
          ("lambdarank_err(y, z, q, sigma=0.5, norm=0)", "ERR", {"sigma": 0.5, "norm": False})]),
    Case("rank_xendcg(y, z, q, u)", lambda d: _rank_xendcg(d)[0], queries_with_draws,
         queries_with_draws_extreme, derivative_reference=lambda d: _rank_xendcg(d)[1:]),
    # XGBoost's sampled pairs (rank:ndcg, lambdarank_pair_method="mean") given the draws
    Case("lambdarank_mean(y, z, q, u)", lambda d: xgboost_mean_pairs(d)[0], queries_with_draws,
         queries_with_draws_extreme, derivative_reference=lambda d: xgboost_mean_pairs(d)[1:]),
    # CatBoost's YetiRank given its permutations' draws; scores 30 apart at most: CatBoost
    # orders exp(z) times the noise, which overflows at the extreme scores (lossdsl adds the
    # noise's log to z), and its PairLogit's ratios of e^z are nan there
    Case("yetirank(y, z, q, u)", lambda d: catboost_yetirank(d)[0], queries_with_ten_draws,
         queries_with_ten_draws_extreme,
         derivative_reference=lambda d: catboost_yetirank(d)[1:]),
    # CatBoost's StochasticRank (metric=NDCG) given the noise, its algorithm transcribed in NumPy
    *(Case(call, lambda d, o=options: catboost_stochastic_rank(d, **o)[0], queries_with_noise,
           queries_with_noise_extreme,
           derivative_reference=lambda d, o=options: catboost_stochastic_rank(d, **o)[1:])
      # its options: tests/test_stochastic_rank.py (one kernel with params)
      for call, options in [("stochastic_rank(y, z, q, u)", {}),
                            ("stochastic_rank_mrr(y, z, q, u)", {"metric": "MRR"}),
                            ("stochastic_rank_filtered(y, z, q, u)",
                             {"metric": "FilteredDCG", "lam": 0.0})]),
    *(Case(call, lambda d, o=options: catboost_stochastic_rank(d, **o)[0],
           binary_queries_with_noise, binary_queries_with_noise_extreme,
           derivative_reference=lambda d, o=options: catboost_stochastic_rank(d, **o)[1:])
      for call, options in [("stochastic_rank_pfound(y, z, q, u)", {"metric": "PFound"}),
                            ("stochastic_rank_err(y, z, q, u)", {"metric": "ERR"})]),
    *(Case(call, lambda d, o=options: catboost_stochastic_filter(d, **o)[0],
           queries_with_uniform_draws, queries_with_uniform_draws_extreme,
           derivative_reference=lambda d, o=options: catboost_stochastic_filter(d, **o)[1:])
      for call, options in [("stochastic_filter(y, z, q, u)", {})]),
    Case("query_mse(y, p, q)", ref_query_mse, functools.partial(queries, prediction="p"),
         functools.partial(queries_extreme, prediction="p")),
    # scores 1400 apart saturate every sigmoid as 2e4 would (the mpmath reference's precision
    # grows with the span; tests/test_query_cross_entropy.py checks 1e4 in closed form)
    Case("query_cross_entropy(y, z, q)", ref_query_cross_entropy, binary_queries,
         lambda big: binary_queries_extreme(min(big, 700.0))),
    Case("query_cross_entropy(y, z, q, alpha=0.3)",
         functools.partial(ref_query_cross_entropy, alpha=0.3), binary_queries,
         lambda big: binary_queries_extreme(min(big, 700.0))),
    # ------------------------------------------------------------------ multiclass
    Case("cce(y, p)", ref_cce, class_probabilities, class_probabilities_extreme),
    Case("cce(y, p, label_smoothing=0.1)", functools.partial(ref_cce, smoothing=0.1),
         class_probabilities, class_probabilities_extreme),
    Case("cce_logits(y, z)", ref_cce_logits, class_logits, class_logits_extreme),
    Case("cce_logits(y, z, label_smoothing=0.2)", functools.partial(ref_cce_logits, smoothing=0.2),
         class_logits, class_logits_extreme),
    Case("sparse_cce(y, p)", ref_sparse_cce, functools.partial(class_probabilities, sparse=True),
         functools.partial(class_probabilities_extreme, sparse=True)),
    Case("sparse_cce(y, p, label_smoothing=0.1)", ref_sparse_cce_smoothed,
         functools.partial(class_probabilities, sparse=True),
         functools.partial(class_probabilities_extreme, sparse=True)),
    Case("sparse_cce_logits(y, z)", ref_sparse_cce_logits,
         functools.partial(class_logits, sparse=True),
         functools.partial(class_logits_extreme, sparse=True), reduction_check=True),
    Case("sparse_cce_logits(y, z, label_smoothing=0.1)",
         functools.partial(ref_sparse_cce_logits, smoothing=0.1),
         functools.partial(class_logits, sparse=True),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("label_smoothing(y, z)", functools.partial(ref_cce_logits, smoothing=0.1), class_logits,
         class_logits_extreme),
    Case("categorical_focal(y, p)", ref_categorical_focal, class_probabilities,
         class_probabilities_extreme),
    Case("categorical_focal_logits(y, z)", ref_categorical_focal_logits, class_logits,
         class_logits_extreme),
    Case("categorical_focal_logits(y, z, alpha=1.0, gamma=0.5)",
         functools.partial(ref_categorical_focal_logits, alpha=1.0, gamma=0.5), class_logits,
         class_logits_extreme),
    Case("categorical_focal(y, p, label_smoothing=0.1)",
         functools.partial(ref_categorical_focal, smoothing=0.1), class_probabilities,
         class_probabilities_extreme),
    Case("categorical_focal_logits(y, z, label_smoothing=0.1)",
         functools.partial(ref_categorical_focal_logits, smoothing=0.1), class_logits,
         class_logits_extreme),
    Case("poly1(y, p)", ref_poly1, class_probabilities, class_probabilities_extreme),
    Case("poly1_logits(y, z)", ref_poly1_logits, class_logits, class_logits_extreme),
    Case("poly1_logits(y, z, epsilon=-1.0)", functools.partial(ref_poly1_logits, epsilon=-1.0),
         class_logits, class_logits_extreme),
    Case("gce(y, p)", ref_gce, functools.partial(class_probabilities, sparse=True),
         functools.partial(class_probabilities_extreme, sparse=True, label_mass=True)),
    Case("gce_logits(y, z, q=0.7)", functools.partial(ref_gce_logits, q=0.7),
         functools.partial(class_logits, sparse=True),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("multiclass_hinge(y, z)", ref_multiclass_hinge,
         functools.partial(class_logits, sparse=True),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("categorical_hinge(y, z)", ref_categorical_hinge, hinge_one_hot, class_logits_extreme),
    Case("multiclass_sparsemax(y, z)", ref_multiclass_sparsemax,
         functools.partial(class_logits, sparse=True),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("multiclass_perceptron(y, z)", ref_multiclass_perceptron,
         functools.partial(class_logits, sparse=True),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("nll(y, log_p)", ref_nll, log_probabilities, log_probabilities_extreme,
         reduction_check=True),
    Case("nll(y, log_p, weight=w)", ref_nll, functools.partial(log_probabilities, weighted=True),
         functools.partial(log_probabilities_extreme, weighted=True)),
    Case("multi_margin(y, z)",
         lambda d: _np(F.multi_margin_loss(_t(d["z"]), torch.as_tensor(d["y"]), reduction="none")),
         margin_scores,
         functools.partial(class_logits_extreme, sparse=True)),
    Case("multi_margin(y, z, margin=2.0)",
         lambda d: _np(F.multi_margin_loss(_t(d["z"]), torch.as_tensor(d["y"]), margin=2.0,
                                           reduction="none")),
         functools.partial(margin_scores, margin=2.0),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("multi_margin_squared(y, z, margin=2.0)",
         lambda d: _np(F.multi_margin_loss(_t(d["z"]), torch.as_tensor(d["y"]), p=2, margin=2.0,
                                           reduction="none")),
         functools.partial(margin_scores, margin=2.0),
         functools.partial(class_logits_extreme, sparse=True)),
    Case("kl_div(y, p)", ref_kl_div, distributions, distributions_extreme, reduction_check=True),
    Case("kl_div_log(y, log_p)",
         lambda d: _np(F.kl_div(_t(d["log_p"]), _t(d["y"]), reduction="none").sum(1)),
         log_distributions, log_distributions_extreme),
    Case("kl_div_log(y, log_p, log_target=1)", ref_kl_div_log_target, log_target_distributions,
         log_target_distributions_extreme),
    Case("generalized_kl(y, p)", lambda d: scipy.special.kl_div(d["y"], d["p"]),
         nonnegative_pairs, nonnegative_pairs_extreme),
    Case("js_div(y, p)",
         lambda d: scipy.spatial.distance.jensenshannon(d["y"], d["p"], axis=1) ** 2,
         distributions, distributions_extreme),
    # ------------------------------------------------------------------ nested reductions
    Case("dice(y, p)", ref_dice, overlap, overlap_extreme),
    Case("dice(y, p, smooth=0.0)", functools.partial(ref_dice, smooth=0.0), overlap,
         overlap_extreme),
    Case("tversky(y, p)", ref_tversky, overlap, overlap_extreme),
    Case("tversky(y, p, alpha=0.3, beta=0.7, smooth=0.5)",
         functools.partial(ref_tversky, alpha=0.3, beta=0.7, smooth=0.5), overlap,
         overlap_extreme),
    Case("dice_rows(y, p)", ref_dice_rows, overlap_rows, overlap_rows_extreme),
    Case("dice_rows(y, p, smooth=0.5)", functools.partial(ref_dice_rows, smooth=0.5),
         overlap_rows, overlap_rows_extreme),
    Case("tversky_rows(y, p, alpha=0.3, beta=0.7)",
         functools.partial(ref_tversky_rows, alpha=0.3, beta=0.7), overlap_rows,
         overlap_rows_extreme),
    Case("generalized_dice_rows(y, p)", ref_generalized_dice_rows, overlap_rows,
         overlap_rows_extreme),
    # a batch of images, each the rows of one id: per image and class, averaged
    Case("dice_images(y, p, g)", ref_images, overlap_images, overlap_images_extreme),
    Case("dice_images_logits(y, z, g, smooth=0.5, weight=w, ignore_background=1)",
         functools.partial(ref_images, smooth=0.5, weight="w", ignore_background=1),
         functools.partial(overlap_images, prediction="z", weights=True),
         functools.partial(overlap_images_extreme, prediction="z", weights=True)),
    Case("tversky_images(y, p, g, alpha=0.3, beta=0.7, weight=w)",
         functools.partial(ref_images, kind="tversky", alpha=0.3, beta=0.7, weight="w"),
         functools.partial(overlap_images, weights=True),
         functools.partial(overlap_images_extreme, weights=True)),
    Case("tversky_images_logits(y, z, g, ignore_background=1)",
         functools.partial(ref_images, kind="tversky", ignore_background=1),
         functools.partial(overlap_images, prediction="z"),
         functools.partial(overlap_images_extreme, prediction="z")),
    Case("generalized_dice_images(y, p, g, ignore_background=1)",
         functools.partial(ref_images, kind="generalized", ignore_background=1),
         overlap_images, overlap_images_extreme),
    Case("generalized_dice_images_logits(y, z, g, smooth=0.5)",
         functools.partial(ref_images, kind="generalized", smooth=0.5),
         functools.partial(overlap_images, prediction="z"),
         functools.partial(overlap_images_extreme, prediction="z")),
    Case("generalized_dice_batch(y, p, g, ignore_background=1)",
         functools.partial(ref_images, kind="generalized_batch", ignore_background=1),
         overlap_images, overlap_images_extreme),
    Case("generalized_dice_batch_logits(y, z, g, smooth=0.5)",
         functools.partial(ref_images, kind="generalized_batch", smooth=0.5),
         functools.partial(overlap_images, prediction="z"),
         functools.partial(overlap_images_extreme, prediction="z")),
    Case("rmsle(y, p)",
         lambda d: np.sqrt(np.mean((np.log1p(d["p"]) - np.log1p(d["y"])) ** 2)),
         _regression(positive_y=True, spread=0.3),
         lambda big: {"y": np.array([0.0, 1e8, 0.0, 3.0]), "p": np.array([1e8, 0.0, 0.0, 3.0])}),
    Case("cosine_similarity(y, p)",
         lambda d: _np(-F.cosine_similarity(_t(d["y"]), _t(d["p"]), dim=1, eps=1e-6)),
         vectors, vectors_extreme),
    Case("cosine_distance(y, p)",
         lambda d: _np(1 - F.cosine_similarity(_t(d["y"]), _t(d["p"]), dim=1, eps=1e-6)),
         vectors, vectors_extreme),
    Case("cosine_embedding(y, x1, x2)",
         lambda d: _np(F.cosine_embedding_loss(_t(d["x1"]), _t(d["x2"]), _t(d["y"]),
                                               reduction="none")),
         _clear_of_kink(vector_pairs, _cosine), vector_pairs_extreme, wrt=("x1", "x2")),
    Case("cosine_embedding(y, x1, x2, margin=0.3)",
         lambda d: _np(F.cosine_embedding_loss(_t(d["x1"]), _t(d["x2"]), _t(d["y"]), margin=0.3,
                                               reduction="none")),
         _clear_of_kink(vector_pairs, lambda d: _cosine(d) - 0.3), vector_pairs_extreme,
         wrt=("x1", "x2")),
    Case("triplet_margin(a, p, n)", ref_triplet_margin,
         _clear_of_kink(triplets, _triplet_kinks(2)), triplets_extreme, wrt=("a", "p", "n")),
    Case("triplet_margin(a, p, n, margin=0.5, swap=1)",
         functools.partial(ref_triplet_margin, margin=0.5, swap=True),
         _clear_of_kink(triplets, _triplet_kinks(2, 0.5, swap=True)), triplets_extreme,
         wrt=("a", "p", "n")),
    Case("triplet_margin_pnorm(a, p, n, norm=1)", functools.partial(ref_triplet_margin, norm=1),
         _clear_of_kink(triplets, _triplet_kinks(1)), triplets_moderate, wrt=("a", "p", "n")),
    Case("triplet_margin_pnorm(a, p, n, norm=3, margin=0.5, swap=1)",
         functools.partial(ref_triplet_margin, norm=3, margin=0.5, swap=True),
         _clear_of_kink(triplets, _triplet_kinks(3, 0.5, swap=True)), triplets_spread,
         wrt=("a", "p", "n")),
    Case("triplet_margin_optax(a, p, n)", ref_triplet_margin_optax,
         _clear_of_kink(triplets, lambda d: 1.0 + np.subtract(*_optax_distances(d, 2))),
         triplets_moderate, wrt=("a", "p", "n")),
    Case("triplet_margin_optax(a, p, n, norm_degree=4, margin=0.5)",
         functools.partial(ref_triplet_margin_optax, degree=4, margin=0.5),
         _clear_of_kink(triplets, lambda d: 0.5 + np.subtract(*_optax_distances(d, 4))),
         triplets_moderate, wrt=("a", "p", "n")),
    # ------------------------------------------------------------------ regularizers
    Case("l1(w)", lambda d: np.abs(d["w"]).sum(), weights, weights_extreme),
    Case("l2(w)", lambda d: (d["w"] ** 2).sum(), weights, weights_extreme),
    Case("elastic_net(w, alpha=0.1, l1_ratio=0.7)",  # sklearn ElasticNet's penalty
         lambda d: 0.1 * (0.7 * np.abs(d["w"]).sum() + 0.5 * 0.3 * (d["w"] ** 2).sum()),
         weights, weights_extreme),
    Case("group_lasso(w)", lambda d: np.linalg.norm(d["w"], axis=1).sum(), groups,
         groups_extreme),
    # ------------------------------------------------------------------ business costs
    Case("asymmetric_l1(y, p, under=3.0, over=0.5)",
         functools.partial(ref_asymmetric, under=3.0, over=0.5), regression, regression_extreme,
         reduction_check=True),
    Case("asymmetric_l1(y, p)", ref_asymmetric, regression, regression_extreme),
    Case("asymmetric_l2(y, p, under=3.0, over=0.5)",
         functools.partial(ref_asymmetric, under=3.0, over=0.5, power=2), regression,
         regression_extreme),
    Case("linex(y, p)", ref_linex, regression,
         _regression_extreme(residuals=(-1e8, 0.0, 30.0))),
    Case("linex(y, p, a=-0.5, b=2.0)", functools.partial(ref_linex, a=-0.5, b=2.0), regression,
         _regression_extreme(residuals=(1e8, 0.0, -60.0))),
    Case("cost_sensitive_bce(y, z, fn_cost=40.0, fp_cost=2.0)",
         functools.partial(ref_cost_sensitive_bce, fn_cost=40.0, fp_cost=2.0), binary_logits,
         binary_logits_extreme, reduction_check=True),
    Case("cost_sensitive_bce(y, z)", ref_cost_sensitive_bce, binary_logits,
         binary_logits_extreme),
    Case("expected_cost(y, z, C)", ref_expected_cost, expected_cost_inputs,
         expected_cost_extreme),
    Case("expected_cost_rows(cost, z)", ref_expected_cost_rows, expected_cost_rows_inputs,
         expected_cost_rows_extreme),
]


def _case_id(case: Case) -> str:
    return case.call


def _float32_sweep() -> list[Case]:
    """The cases whose float32 kernels are checked: all of them, except on CI (CI=true without
    LOSSDSL_FULL_SWEEPS=1), where every other loss by name is, in its first case: the losses
    that tests/backend/test_cuda.py's CI sweep leaves out (it simulates the others in
    float32), so each loss's float32 kernel runs somewhere on CI (here against float64, there
    against the CPU) in half the compile time. A loss's other cases (other constants and
    options: tweedie's powers, focal's gamma) are checked in float64 on CI and in float32 in
    every full run; each float32 case compiles a kernel of its own."""
    if SAMPLING:
        first = {}
        for case in CASES:
            first.setdefault(case.loss, case)
        return [case for case in first.values() if case.loss in _FLOAT32_HALF]
    return CASES


#: The losses (every other one by name) whose float32 kernels CI checks.
_FLOAT32_HALF = frozenset(sorted({case.loss for case in CASES})[::2])


def _one_kernel(case: Case) -> bool:
    """Whether the float64 value and derivative tests of ``case`` read everything from the
    one fused kernel (value, gradients and Hessians) instead of the kernels users call
    (``__call__``, and ``grad_and_hessian`` once per input differentiated): on CI, for every
    loss (one compile instead of two to four; a cold compile is most of these tests' time),
    so that CI checks every loss's value and derivatives in float64 and half of them in
    float32 through the fused kernels, and a developer's run checks the users' kernels of
    every loss too. The kernels a method compiles differ from the fused one only in the
    outputs they keep; the methods themselves run on library losses throughout the other
    test files."""
    return SAMPLING


#: The losses whose fused float64 kernel tests/integrations/test_jax.py's CI sweep compares
#: lossdsl.jax with (it samples these, every other loss by name): for each, one case's fused
#: kernel (:func:`jax_case`) also computes the gradient of every input JAX differentiates, so
#: that the two files ask for the same kernel and the second loads it from the disk cache
#: instead of compiling it (a cold compile is most of a JAX case's time).
SHARED_WITH_JAX = frozenset(sorted(entry.name for entry in catalog.entries())[::2]
                            if SAMPLING else ())


@functools.cache
def jax_case(loss: str) -> Case:
    """The case of ``loss`` whose fused kernel tests/integrations/test_jax.py reads on CI: its
    catalog call where the table has that call, else the loss's first case."""
    cases = [case for case in CASES if case.loss == loss]
    call = catalog.entry(loss).call_expression()
    return next((case for case in cases if case.call == call), cases[0])


def fused_outputs(case: Case) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(gradients, Hessian diagonals) of ``case``'s fused float64 kernel (see ``_one_kernel``):
    those of the inputs it differentiates; for the case whose kernel test_jax reads too (see
    ``SHARED_WITH_JAX``), the gradients of every input that is not a constant (labels and
    group ids are), in the loss's order, as test_jax asks."""
    if case.loss in SHARED_WITH_JAX and case is jax_case(case.loss):
        loss = compiled(case.call)
        constants = loss.constant_inputs()
        return tuple(n for n in loss.inputs if n not in constants), case.derivatives
    return case.derivatives, case.derivatives


# ----------------------------------------------------------------------------- compiled losses


@functools.cache
def compiled(call: str, reduction: str = "none") -> lossdsl.CompiledLoss:
    """One CompiledLoss per loss and reduction: its kernels are kept for every test."""
    return lossdsl.compile(call, reduction=reduction)


def _cast(inputs: Inputs, dtype) -> Inputs:
    return {n: (v if np.asarray(v).dtype.kind in "iu" else np.asarray(v, dtype=dtype))
            for n, v in inputs.items()}


def values(case: Case, inputs: Inputs, dtype=np.float64):
    if _one_kernel(case):
        return _all_results(case, _cast(inputs, dtype))[0]
    return compiled(case.call)(**_cast(inputs, dtype))


def derivatives(case: Case, inputs: Inputs, wrt: str, dtype=np.float64):
    if _one_kernel(case):
        return fused(compiled(case.call), _cast(inputs, dtype), wrt, None, fused_outputs(case))[1:]
    return compiled(case.call).grad_and_hessian(wrt, **_cast(inputs, dtype))


def _all_results(case: Case, inputs: Inputs) -> list:
    """[value, gradients..., Hessians...] of ``case``'s fused kernel (see ``fused_outputs``)."""
    return compiled(case.call).compute(True, *fused_outputs(case), inputs)


def fused(loss: lossdsl.CompiledLoss, inputs: Inputs, wrt: str, sample_weight=None,
          outputs: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> list:
    """[value, gradient, Hessian diagonal] from ONE kernel that computes all three: of
    ``wrt`` alone, or of the (gradients, Hessians) ``outputs`` (``fused_outputs``), so that
    the kernel is the one the value and derivative tests compile.

    ``_compute`` is what ``__call__`` and ``grad_and_hessian`` call with a part of these
    outputs; asking for all of them compiles one kernel where the two methods compile two
    (each about half a second cold). The float64 value and derivative tests keep the two
    methods' own kernels, the ones users call (except on CI, see ``_one_kernel``); float32
    and reductions use the fused one."""
    gradients, hessians = outputs or ((wrt,), (wrt,))
    results = loss.compute(True, gradients, hessians, inputs, sample_weight)
    return [results[0], results[1 + gradients.index(wrt)],
            results[1 + len(gradients) + hessians.index(wrt)]]


def _extreme(case: Case, big: float) -> Inputs:
    return _typed(case.extreme(big))


# ----------------------------------------------------------------------------- finite differences


@dataclass
class Stencil:
    """Five-point central stencil of the float64 value around every element of one input."""

    values: np.ndarray  # (5,) + shape: f(x - 2h), f(x - h), f(x), f(x + h), f(x + 2h)
    step: np.ndarray

    @property
    def gradient(self) -> np.ndarray:
        m2, m1, _, p1, p2 = self.values
        return (m2 - 8 * m1 + 8 * p1 - p2) / (12 * self.step)

    @property
    def hessian(self) -> np.ndarray:
        m2, m1, c, p1, p2 = self.values
        return (-m2 + 16 * m1 - 30 * c + 16 * p1 - p2) / (12 * self.step**2)

    @property
    def slopes(self) -> tuple[np.ndarray, np.ndarray]:
        _, m1, c, p1, _ = self.values
        return (c - m1) / self.step, (p1 - c) / self.step

    @property
    def curvatures(self) -> tuple[np.ndarray, np.ndarray]:
        m2, m1, c, p1, p2 = self.values
        return (c - 2 * m1 + m2) / self.step**2, (p2 - 2 * p1 + c) / self.step**2

    @property
    def in_domain(self) -> np.ndarray:
        return np.all(np.isfinite(self.values), axis=0)

    @property
    def scale(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.max(np.abs(np.nan_to_num(self.values, posinf=0, neginf=0)), axis=0) + 1e-300

    def rounding(self, order: int) -> np.ndarray:
        """The floating-point error bound of a difference quotient of this order."""
        return (50 if order == 1 else 200) * EPS64 * self.scale / self.step**order

    @property
    def value_kink(self) -> np.ndarray:
        """A kink of the value inside the stencil: the one-sided slopes jump by more than the
        curvature explains (for a smooth f, right - left = h f'' up to O(h^3))."""
        (left, right), (c_left, c_right) = self.slopes, self.curvatures
        with np.errstate(invalid="ignore"):
            gap = np.abs(right - left - self.step * (c_left + c_right) / 2)
            # (a C2 but not C3 point, fair or tukey at r = 0, leaves an O(h^2 f''') gap)
            allowed = (1e-4 * (np.abs(left) + np.abs(right))
                       + 1e-2 * self.step * (np.abs(c_left) + np.abs(c_right)) + self.rounding(1))
            return ~(gap <= allowed)

    @property
    def curvature_jump(self) -> np.ndarray:
        """The one-sided curvatures differ: a kink of the gradient (or a large third derivative)."""
        c_left, c_right = self.curvatures
        with np.errstate(invalid="ignore"):
            gap = np.abs(c_left - c_right)
            return ~(gap <= 0.25 * (np.abs(c_left) + np.abs(c_right)) + self.rounding(2))


def stencil(case: Case, inputs: Inputs, wrt: str, relative: float = 1e-3) -> Stencil:
    """Evaluate the float64 value kernel around each element of ``inputs[wrt]``.

    A per-sample loss of a vector is perturbed everywhere at once, a per-row loss of a
    matrix one column at a time, and a batch-level (scalar) loss or a loss over groups or
    risk sets one element at a time.
    """
    x = inputs[wrt]
    wanted = relative * np.maximum(0.1, np.abs(x))  # relative: 0.02 and 1e8 are both resolved
    step = (x + wanted) - x  # a step that is exact in floating point
    loss = compiled(case.call)

    coupled = bool(loss.group_inputs() or loss.loss.cumulative_sums)
    # a point of the stencil outside a declared interval (p < 0 next to p = 0 for
    # bce's p in [0, 1]) is an error to the loss: its value is NaN here, as it was before
    intervals = [d.closed for d in loss.input_domains().get(wrt, ()) if not d.members]

    def f(shifted: np.ndarray):
        outside = np.zeros(np.shape(shifted), bool)
        for low, high in intervals:
            outside |= (shifted < low) | (shifted > high)
            shifted = np.clip(shifted, low, high)
        value = values(case, {**inputs, wrt: shifted})
        if outside.any():
            value = np.array(value, dtype=np.float64)
            rows = outside if value.ndim == outside.ndim else outside.reshape(
                outside.shape[0], -1).any(axis=1) if value.ndim == 1 else outside.any()
            value[rows] = np.nan
        # a sample's value over groups (or risk sets) depends on the others': perturb the total
        return np.sum(value) if coupled else value

    out = np.empty((5,) + x.shape)
    offsets = (-2, -1, 0, 1, 2)
    if np.ndim(f(x)) == 0:  # the loss reduces over the batch itself (or over groups)
        for index in np.ndindex(x.shape):
            for j, offset in enumerate(offsets):
                shifted = x.copy()
                shifted[index] += offset * step[index]
                out[(j,) + index] = f(shifted)
    elif x.ndim == 1:
        for j, offset in enumerate(offsets):
            out[j] = f(x + offset * step)
    else:
        for k in range(x.shape[1]):
            for j, offset in enumerate(offsets):
                shifted = x.copy()
                shifted[:, k] += offset * step[:, k]
                value = f(shifted)
                # a value per row and column whose columns read each other's scores
                # (quantile_noncrossing): column k's score moves the row's total
                out[j, :, k] = value.sum(axis=1) if np.ndim(value) == 2 else value
    return Stencil(out, step)


def finite_differences(case: Case, inputs: Inputs, wrt: str) -> Stencil:
    """A stencil per element: the coarse one (step 1e-3 |x|), or a 100 times finer one where
    the coarse one sees a kink that the fine one does not (a steep exponential at z = 500, a
    1/var term at small var): a true kink stays a kink at every step."""
    coarse = stencil(case, inputs, wrt)
    smooth = ~(coarse.value_kink | coarse.curvature_jump)
    if smooth.all():
        return coarse
    fine = stencil(case, inputs, wrt, relative=1e-5)
    use_fine = ~smooth & ~(fine.value_kink | fine.curvature_jump)
    return Stencil(np.where(use_fine, fine.values, coarse.values),
                   np.where(use_fine, fine.step, coarse.step))


def _between(x, a, b, tolerance):
    return (x >= np.minimum(a, b) - tolerance) & (x <= np.maximum(a, b) + tolerance)


def check_derivatives(gradient: np.ndarray, hessian: np.ndarray, fd: Stencil, strict: bool):
    """Compare the gradient and Hessian with finite differences of the value.

    ``strict`` (ordinary inputs): every element must match the central differences. Else
    (extreme inputs) an element where the stencil straddles a kink passes with a subgradient
    between the one-sided slopes (and, for a kink of the gradient, a Hessian between the
    one-sided curvatures; at a kink of the value the Hessian is a Dirac mass and is not
    compared). Where the stencil leaves the domain (p < 0 next to p = 0) the derivatives
    must be finite.
    """
    left, right = fd.slopes
    c_left, c_right = fd.curvatures
    with np.errstate(invalid="ignore"):
        # truncation: O(h^4) terms, bounded by the slopes' / curvatures' scale, plus the O(h)
        # error a central difference makes across a jump of the curvature
        tolerance_g = (1e-6 * np.maximum.reduce([np.abs(fd.gradient), np.abs(left), np.abs(right)])
                       + fd.step * np.abs(c_right - c_left) / 4 + fd.rounding(1))
        tolerance_h = (1e-5 * np.maximum.reduce([np.abs(fd.hessian), np.abs(c_left),
                                                 np.abs(c_right)])
                       + 1e-2 * fd.step * np.abs(c_right - c_left) + fd.rounding(2))
        gradient_ok = np.abs(gradient - fd.gradient) <= tolerance_g
        hessian_ok = np.abs(hessian - fd.hessian) <= tolerance_h
        if not strict:
            # extreme points include C2 but not C3 ones (fair at r = 0), where the five-point
            # second difference is only O(h) accurate; the one-sided curvatures show by how much
            # (for a smooth f they agree with it to O(h^2))
            third_order = np.abs((c_left + c_right) / 2 - fd.hessian)
            hessian_ok |= np.abs(hessian - fd.hessian) <= 2 * third_order + tolerance_h
            kink, jump = fd.value_kink, fd.curvature_jump
            # a one-sided slope is off the one-sided derivative by h f''/2
            slack = fd.step * np.maximum(np.abs(c_left), np.abs(c_right))
            gradient_ok |= kink & _between(gradient, left, right, tolerance_g + slack)
            hessian_ok |= kink | (jump & _between(hessian, c_left, c_right, tolerance_h))
            gradient_ok = np.where(fd.in_domain, gradient_ok, True)
            hessian_ok = np.where(fd.in_domain, hessian_ok, np.isfinite(hessian))
        gradient_ok &= np.isfinite(gradient)
    bad = ~gradient_ok
    assert not bad.any(), (f"gradient {gradient[bad]} vs finite differences {fd.gradient[bad]} "
                           f"(one-sided slopes {left[bad]}, {right[bad]})")
    bad = ~hessian_ok
    assert not bad.any(), (f"Hessian {hessian[bad]} vs finite differences {fd.hessian[bad]} "
                           f"(one-sided curvatures {c_left[bad]}, {c_right[bad]})")


def _close(actual, expected, rtol: float, what: str):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: not finite: {actual}"
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-3 * scale + 1e-300,
                               err_msg=what)


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_value_matches_reference(case: Case):
    inputs = case.inputs()
    _close(values(case, inputs), case.reference(inputs), 1e-9, "ordinary inputs")
    if case.extreme is not None:
        extreme = _extreme(case, BIG64)
        _close(values(case, extreme), case.reference(extreme), 1e-9, "extreme inputs")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_derivatives_match_finite_differences(case: Case):
    inputs = case.inputs()
    for wrt in case.derivatives:
        gradient, hessian = derivatives(case, inputs, wrt)
        assert gradient.shape == hessian.shape == np.shape(inputs[wrt])
        if case.derivative_reference is not None:  # not the value's derivative
            for given in (inputs, _extreme(case, BIG64)):
                expected = case.derivative_reference(given)
                for actual, reference in zip(derivatives(case, given, wrt), expected):
                    _close(actual, reference, 1e-9, "against the reference derivatives")
            continue
        check_derivatives(gradient, hessian, finite_differences(case, inputs, wrt), strict=True)
        if case.extreme is not None:
            extreme = _extreme(case, BIG64)
            gradient, hessian = derivatives(case, extreme, wrt)
            fd = finite_differences(case, extreme, wrt)
            check_derivatives(gradient, hessian, fd, strict=False)


def _close32(actual, expected, what: str):
    """float32 results against float64 ones on the same (float32) inputs; where the float64
    result is not finite (lq's Hessian at r = 0 is infinite) the float32 one is not either.
    Below 1e-24 a result is cancellation: smape's Hessian at y = 1.5, p = y - 1e8 is exactly 0
    (smape is 200 wherever p and y differ in sign); its terms are about 4e-14, float64 leaves
    -3.2e-30 of them and float32 0."""
    actual, expected = np.asarray(actual), np.asarray(expected, float)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), f"{what}: {actual} vs {expected}"
    actual, expected = actual[finite], expected[finite]
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    np.testing.assert_allclose(actual.astype(float), expected, rtol=2e-3,
                               atol=2e-4 * scale + 1e-24, err_msg=what)


@pytest.mark.parametrize("case", _float32_sweep(), ids=_case_id)
def test_float32_kernels(case: Case):
    sets = [case.inputs()] + ([_extreme(case, BIG32)] if case.extreme is not None else [])
    for inputs in sets:
        single = _cast(inputs, np.float32)
        widened = _cast(single, np.float64)  # the same numbers, in float64
        wrt = case.derivatives[0]
        value, gradient, hessian = fused(compiled(case.call), single, wrt)
        if np.ndim(value):
            assert value.dtype == np.float32
        _close32(value, values(case, widened), "value")
        assert gradient.dtype == hessian.dtype == np.float32
        expected_gradient, expected_hessian = derivatives(case, widened, wrt)
        _close32(gradient, expected_gradient, "gradient")
        _close32(hessian, expected_hessian, "Hessian")


def _reduction_sweep() -> list:
    """(case, reduction, weighted) for the losses with a reduction check: every reduction,
    with and without weights, except on CI (CI=true without LOSSDSL_FULL_SWEEPS=1), where
    each loss gets every reduction once, two of them weighted, and the next loss the other
    four: every combination and every loss is still checked, in half the kernels (each
    compiles anew)."""
    combinations = [(reduction, weighted) for reduction in ("mean", "weighted_mean", "sum", "none")
                    for weighted in (False, True)]
    checked = [case for case in CASES if case.reduction_check]
    return [pytest.param(case, reduction, weighted,
                         id=f"{'weighted' if weighted else 'unweighted'}-{reduction}-{case.call}")
            for index, case in enumerate(checked)
            for number, (reduction, weighted) in enumerate(combinations)
            if not SAMPLING or (index + number + number // 2) % 2 == 0]


@pytest.mark.parametrize("case, reduction, weighted", _reduction_sweep())
def test_reductions_and_sample_weights(case: Case, reduction: str, weighted: bool):
    inputs = case.inputs()
    wrt = case.derivatives[0]
    per_sample = values(case, inputs)
    gradient, hessian = derivatives(case, inputs, wrt)
    samples = per_sample.shape[0]
    weight = np.random.default_rng(3).uniform(0.2, 3.0, samples) if weighted else None
    w = weight if weighted else np.ones(samples)
    # unweighted "none" asks for the value and derivative tests' outputs: on CI their kernel
    same = fused_outputs(case) if reduction == "none" and not weighted else None
    value, g, h = fused(compiled(case.call, reduction), inputs, wrt, weight, same)
    # "mean": sum(w*l)/N as PyTorch's weight=; "weighted_mean": sum(w*l)/sum(w)
    scale = {"mean": w / samples, "weighted_mean": w / w.sum()}.get(reduction, w)
    if reduction == "none":
        _close(value, w * per_sample, 1e-12, "weighted per-sample values")
    else:
        assert isinstance(value, float)
        _close(value, np.sum(scale * per_sample), 1e-12, f"{reduction} value")
    shaped = scale if gradient.ndim == 1 else scale[:, None]
    _close(g, shaped * gradient, 1e-12, f"{reduction} gradient")
    _close(h, shaped * hessian, 1e-12, f"{reduction} Hessian")


def test_batch_level_losses_are_one_number_under_every_reduction():
    case = next(c for c in CASES if c.call == "dice(y, p)")
    inputs = case.inputs()
    expected = case.reference(inputs)
    for reduction in ("mean", "sum"):
        assert compiled(case.call, reduction)(**inputs) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(lossdsl.LossShapeError, match="sample_weight"):
        compiled(case.call, "mean")(**inputs, sample_weight=np.ones(N))


def test_gaussian_nll_variance_clamp_passes_the_gradient_through_like_pytorch():
    y, p = np.array([0.3, -1.0, 2.0]), np.array([0.5, 0.0, 2.0])
    var = np.array([1e-9, 1e-7, 4.0])  # the first two are clamped at eps = 1e-6
    gradient = compiled("gaussian_nll(y, p, var)").grad("var", y=y, p=p, var=var)
    var_t = _t(var).requires_grad_()
    F.gaussian_nll_loss(_t(p), _t(y), var_t, reduction="sum").backward()
    np.testing.assert_allclose(gradient, _np(var_t.grad), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_gradient_where_a_log_is_clamped_is_pytorchs(dtype):
    # the clamped value's own gradient dropped the clamped log's term: +0.05 for y = 0.95 at
    # p = 0 (float32 sigmoids round to 0 and 1), pushing p further from the label
    y = np.array([0.95, 0.05, 0.3, 0.3, 1.0, 0.0, 0.5, 0.3], dtype)
    p = np.array([0.0, 1.0, 1e-30, 1 - 1e-13, 1e-20, 1.0, 0.5, 0.2], dtype)
    value = compiled("bce(y, p)")(y=y, p=p)
    gradient = compiled("bce(y, p)").grad("p", y=y, p=p)
    p_t = _t(p.astype(np.float64)).requires_grad_()
    expected = F.binary_cross_entropy(p_t, _t(y.astype(np.float64)), reduction="none")
    expected.sum().backward()
    np.testing.assert_allclose(value, _np(expected), rtol=1e-6)
    np.testing.assert_allclose(gradient, _np(p_t.grad), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_cross_entropy_values_keep_their_precision_at_large_logits(dtype):
    # logsumexp(z) - z_y rounded the logsumexp to an ulp of the largest logit first: 0 for
    # 9.4e-14 in float64, 1.6e-4 relative in float32 at 1e4
    z = np.array([[1e4, 1e4 - 1.0], [1e4, 1e4 - 30.0], [80.0, 79.5]], dtype)
    y = np.array([1, 0, 1])
    expected = _np(F.cross_entropy(_t(z.astype(np.float64)), torch.tensor(y),
                                   reduction="none"))
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for call in ("sparse_cce_logits(y, z)", "sparse_cce_logits(y, z, label_smoothing=0.0)"):
        actual = compiled(call)(y=y, z=z)
        rows = [0, 1, 2] if dtype == np.float64 else [0, 2]  # float32 has no 9.4e-14 + 1e4
        np.testing.assert_allclose(actual[rows], expected[rows], rtol=rtol)
    gce = compiled("gce_logits(y, z)")(y=y, z=z)
    exact = [float(-mpmath.expm1(0.5 * (mpmath.mpf(float(row[label])) - mpmath.log(
        sum(mpmath.exp(mpmath.mpf(float(v))) for v in row)))) / 0.5)
        for row, label in zip(z, y)]
    np.testing.assert_allclose(gce[[0, 2]], np.array(exact)[[0, 2]], rtol=rtol)


def test_robust_and_tweedie_losses_at_their_extremes():
    # tweedie: y = 0 at very negative scores was 0 * inf = NaN (sklearn: its tiny value)
    y, z = np.zeros(2, np.float32), np.array([-200.0, 3.0], np.float32)
    expected = ref_tweedie_sklearn({"y": y.astype(np.float64), "z": z.astype(np.float64)}, 1.5)
    np.testing.assert_allclose(compiled("tweedie(y, z, 1.5)")(y=y, z=z), expected, rtol=1e-5,
                               atol=1e-44)  # a float32 subnormal
    assert np.all(np.isfinite(compiled("tweedie(y, z, 1.5)").grad_and_hessian("z", y=y, z=z)))
    # tukey: 1 - (1 - u)^3 cancelled (31% off at r = 1e-3 in float32, 0 at 1e-9 in float64);
    # a NaN residual took the constant branch, a plausible finite value
    tukey = compiled("tukey_biweight(y, p)")
    np.testing.assert_allclose(tukey(y=np.zeros(2), p=np.array([1e-9, 1e-3])),
                               [5e-19, 5e-7 * (1 - 1e-6 / 4.685**2 + 1e-12 / (3 * 4.685**4))],
                               rtol=1e-12)
    np.testing.assert_allclose(tukey(y=np.zeros(1, np.float32), p=np.array([1e-3], np.float32)),
                               [5e-7], rtol=1e-5)
    assert np.isnan(tukey(y=np.zeros(1), p=np.array([np.nan]))).all()
    # cauchy: log1p(r^2) overflowed beyond 1.3e154; its Hessian turned positive beyond 1e77
    cauchy = compiled("cauchy(y, p)")
    far = np.array([1e300, 1e100])
    np.testing.assert_allclose(cauchy(y=np.zeros(2), p=far), np.log(far), rtol=1e-15)
    np.testing.assert_allclose(cauchy.hessian("p", y=np.zeros(2), p=far), -(1.0 / far) ** 2,
                               rtol=1e-12)


def test_every_prelude_loss_is_in_the_table():
    tested = {case.loss for case in CASES}
    defined = {entry.name for entry in catalog.entries()}
    assert defined - tested == set(), "losses without a test case"
    assert tested - defined == set(), "test cases of losses the prelude does not define"


def test_prelude_defines_each_name_once_with_a_one_line_description_and_reference():
    seen: dict[str, str] = {}
    for path in sorted(PRELUDE_DIR.glob("*.loss")):
        module = parse(path.read_text(), str(path))
        for statement in module.statements:
            if not isinstance(statement, ast.Def):
                continue
            name = statement.name
            assert name not in seen, f"{name} is defined in {seen[name]} and {path.name}"
            seen[name] = path.name
            doc = statement.doc
            assert doc and "\n" not in doc, f"{name}: needs a one-line comment above its def"
            assert "Ref:" in doc and doc.split("Ref:", 1)[1].strip(), f"{name}: no reference"


def test_argument_order_is_target_then_prediction():
    for entry in catalog.entries():
        required = entry.required
        if required == ("w",):  # a regularizer
            continue
        if required == ("a", "p", "n"):  # a triplet: anchor, positive, negative (PyTorch's order)
            continue
        assert required[0] in ("y", "cost"), entry.signature
        # x, x1 (, x2): a distance or the two scores or rows of a pair (PyTorch's names); s:
        # embeddings (N, D) compared in pairs within a batch (ntxent, circle)
        assert required[1] in ("p", "z", "log_p", "x", "x1", "s"), entry.signature
        if required[1] == "x1":
            assert required == ("y", "x1", "x2"), entry.signature


@pytest.mark.parametrize("call", ["cross_entropy_lambda(y, z)",
                                  "cross_entropy_lambda(y, z, weight=w)"])
def test_cross_entropy_lambda_matches_lightgbm_objective(call: str):
    """The gradient and Hessian LightGBM's xentlambda objective hands its trees (transcribed
    from its C++), on ordinary inputs where its float64 formulas lose no digits."""
    case = next(c for c in CASES if c.call == call)
    inputs = case.inputs()
    gradient, hessian = derivatives(case, inputs, "z")
    expected_gradient, expected_hessian = lightgbm_xentlambda_gradients(inputs)
    _close(gradient, expected_gradient, 1e-12, "gradient")
    _close(hessian, expected_hessian, 1e-12, "Hessian")


def test_sparse_cce_label_smoothing_with_class_weights_is_torchs_mean():
    """The mean of sparse_cce with class weights and label smoothing divides the smoothing term
    too by sum w[y_i], as torch.nn.CrossEntropyLoss(weight=w, label_smoothing=a) does; on rows
    clear of Keras' clip, log q is its own log_softmax, so torch takes the same numbers."""
    rng = np.random.default_rng(13)
    d = class_probabilities(rng, sparse=True)
    w = rng.uniform(0.2, 3.0, K)
    mean = compiled("sparse_cce(y, p, weight=w, label_smoothing=0.1)", reduction="mean")
    actual = mean(y=d["y"], p=d["p"], w=w)
    log_q = torch.log(_t(d["p"] / d["p"].sum(axis=1, keepdims=True)))
    expected = F.cross_entropy(log_q, torch.as_tensor(d["y"]), weight=_t(w), label_smoothing=0.1)
    _close(actual, _np(expected), 1e-12, "weighted mean")


# ----------------------------------------------------------------------------- the examples


def _example(name: str) -> lossdsl.Library:
    return lossdsl.load(ROOT / "examples" / f"{name}.loss")


def test_fraud_example():
    lib = _example("fraud")
    rng = np.random.default_rng(11)
    y, z = rng.choice([0.0, 1.0], N), rng.normal(0.0, 3.0, N)
    amount = rng.uniform(10.0, 500.0, N)
    log_sigmoid = lambda x: -np.logaddexp(0, -x)  # noqa: E731
    expected = -(40 * y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))
    assert lib.fraud.compile()(y=y, z=z) == pytest.approx(expected.mean(), rel=1e-12)
    # params are overridable at compile time
    expected = -(10 * y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))
    assert lib.fraud.compile(params={"missed_fraud": 10.0})(y=y, z=z) == pytest.approx(
        expected.mean(), rel=1e-12)
    expected = -(amount * y * log_sigmoid(z) + 5.0 * (1 - y) * log_sigmoid(-z))
    assert lib.fraud_amount.compile(reduction="sum")(y=y, z=z, amount=amount) == pytest.approx(
        expected.sum(), rel=1e-12)
    matrix = np.array([[0.0, 1.0, 10.0], [1.0, 0.2, 0.05]])
    labels = rng.integers(0, 2, N)
    cost, scores = matrix[labels] * amount[:, None], rng.normal(0.0, 1.0, (N, 3))
    expected = (cost * _np(torch.softmax(_t(scores), 1))).sum(axis=1)
    actual = lib.fraud_actions.compile(reduction="none")(cost=cost, z=scores)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_demand_example():
    lib = _example("demand")
    rng = np.random.default_rng(12)
    y = rng.gamma(4.0, 2.0, N)
    p = y + rng.normal(0.0, 2.0, N)
    shortfall, excess = np.maximum(y - p, 0), np.maximum(p - y, 0)
    assert lib.demand.compile()(y=y, p=p) == pytest.approx(
        np.mean(4 * shortfall + excess), rel=1e-12)
    assert lib.demand_smooth.compile()(y=y, p=p) == pytest.approx(
        np.mean(4 * shortfall**2 + excess**2), rel=1e-12)
    r = p - y
    assert lib.demand_linex.compile()(y=y, p=p) == pytest.approx(
        np.mean(np.exp(-0.5 * r) + 0.5 * r - 1), rel=1e-12)


def test_churn_example_with_profit_weights():
    lib = _example("churn")
    rng = np.random.default_rng(13)
    y, z = rng.choice([0.0, 1.0], N), rng.normal(0.0, 2.0, N)
    clv = rng.uniform(50.0, 2000.0, N)
    log_sigmoid = lambda x: -np.logaddexp(0, -x)  # noqa: E731
    per_customer = -(5 * y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))
    churn = lib.churn.compile(reduction="weighted_mean")
    # profit weighting: the value at stake per customer is the sample weight
    assert churn(y=y, z=z, sample_weight=clv) == pytest.approx(
        np.sum(clv * per_customer) / np.sum(clv), rel=1e-12)
    gradient = churn.grad("z", y=y, z=z, sample_weight=clv)
    np.testing.assert_allclose(
        gradient, clv * (5 * y * -_sigmoid(-z) + (1 - y) * _sigmoid(z)) / clv.sum(), rtol=1e-10)
    expected = -(clv * y * log_sigmoid(z) + 20.0 * (1 - y) * log_sigmoid(-z))
    assert lib.churn_value.compile()(y=y, z=z, clv=clv) == pytest.approx(expected.mean(),
                                                                         rel=1e-12)
    cost = rng.uniform(0.0, 100.0, (N, 3))
    scores = rng.normal(0.0, 1.0, (N, 3))
    expected = (cost * _np(torch.softmax(_t(scores), 1))).sum(axis=1).mean()
    assert lib.churn_actions.compile()(cost=cost, z=scores) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- the docs page


def test_losses_reference_page_is_up_to_date():
    from lossdsl.docs import render_losses_markdown

    page = ROOT / "docs" / "losses.md"
    command = "python -m lossdsl.docs losses > docs/losses.md"
    assert page.is_file(), f"docs/losses.md is missing: {command}"
    assert page.read_text() == render_losses_markdown(), f"docs/losses.md is stale: {command}"



def test_gaussian_nll_scores_is_catboosts_rmse_with_uncertainty():
    catboost = pytest.importorskip("catboost")
    rng = np.random.default_rng(17)
    x = rng.normal(size=(300, 2))
    y = x[:, 0] + np.exp(0.5 * x[:, 1]) * rng.normal(size=300)
    model = catboost.CatBoostRegressor(loss_function="RMSEWithUncertainty", iterations=20,
                                       verbose=0, thread_count=1, random_seed=0)
    model.fit(x, y)
    z = model.predict(x, prediction_type="RawFormulaVal")  # (mean, log standard deviation)
    reported = model.eval_metrics(catboost.Pool(x, y), ["RMSEWithUncertainty"])
    assert compiled("gaussian_nll_scores(y, z)", "mean")(y=y, z=z) == pytest.approx(
        reported["RMSEWithUncertainty"][-1], rel=1e-8)
    variance = model.predict(x, prediction_type="RMSEWithUncertainty")[:, 1]
    np.testing.assert_allclose(variance, np.exp(2 * z[:, 1]), rtol=1e-12)


def test_triplet_margin_with_a_distance_written_in_the_language():
    """torch's TripletMarginWithDistanceLoss takes the distance as a function: in lossdsl it
    is any distance the language writes."""
    d = triplets(np.random.default_rng(53))
    criterion = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda u, v: 1 - F.cosine_similarity(u, v), margin=0.5,
        reduction="none")
    expected = _np(criterion(_t(d["a"]), _t(d["p"]), _t(d["n"])))
    loss = compiled("max(0, 0.5 + cosine_distance(a, p) - cosine_distance(a, n))")
    np.testing.assert_allclose(loss(**d), expected, rtol=1e-12, atol=1e-15)


def test_triplet_margin_optax_is_optax():
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    d = triplets(np.random.default_rng(52))
    with jax.enable_x64(True):
        for degree, margin in ((2, 1.0), (4, 0.5), (1, 0.3)):
            expected = np.asarray(optax.losses.triplet_margin_loss(
                d["a"], d["p"], d["n"], norm_degree=degree, margin=margin))
            loss = compiled(f"triplet_margin_optax(a, p, n, norm_degree={degree}, "
                            f"margin={margin})")
            np.testing.assert_allclose(loss(**d), expected, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(ref_triplet_margin_optax(d, degree, margin), expected,
                                       rtol=1e-12, atol=1e-15)


def test_multiclass_sparsemax_is_optax():
    """The loss, sparsemax itself and the gradient sparsemax(z) - onehot(y) (the Fenchel-Young
    loss's) against optax, and the exact diagonal Hessian s_k (1 - 1/|S|) on the support S."""
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(41)
    z = rng.normal(0.0, 2.0, (64, 7))
    z[:4, 3] = -np.inf  # outside every support
    y = rng.integers(0, 7, 64)
    y[:4] = 0
    with jax.enable_x64(True):
        expected = np.asarray(optax.losses.multiclass_sparsemax_loss(z, y))
        projected = np.asarray(jax.vmap(optax.projections.projection_simplex)(z))
    loss = compiled("multiclass_sparsemax(y, z)")
    np.testing.assert_allclose(loss(y=y, z=z), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ref_multiclass_sparsemax({"y": y, "z": z}), expected,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(compiled("sparsemax(z)")(z=z), projected, atol=1e-14)
    summed = lossdsl.compile("multiclass_sparsemax(y, z)", reduction="sum")
    gradient, hessian = summed.grad_and_hessian("z", y=y, z=z)
    np.testing.assert_allclose(gradient, projected - np.eye(7)[y], atol=1e-14)
    support = projected > 0
    np.testing.assert_allclose(hessian, support * (1 - 1 / support.sum(1, keepdims=True)),
                               atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparsemax_threshold_on_edge_rows(dtype):
    """The kernels' passes (serial and threaded) against the sort on rows that need many
    passes, ties, huge and tiny logits, one class, and the rows with no finite support (a
    NaN or +inf, or only -inf), which give NaN rather than a number. The threshold of
    [1e300, -1e300, 0] is 1e300 - 1, which rounds to 1e300 (NaN: no element above it), but
    sparsemax, computed after shifting by the row's maximum, is exact there."""
    big = 1e300 if dtype == np.float64 else 1e30  # sparsemax shifts by the row's maximum
    rows = [[np.nan, 1.0, 2.0], [np.inf, 0.0, 0.0], [-np.inf] * 3, [-np.inf, 0.0, 1.0],
            [3.0, 3.0, 3.0], [big, -big, 0.0], [1e-300, 0.0, -1e-300],
            [0.0, 0.45, 0.9], [1e4, 1e4 - 0.5, -1e4]]
    z = np.array(rows, dtype=dtype)
    steps = np.arange(40, dtype=dtype)[None, :] * dtype(0.02)  # each pass drops a few
    single = np.array([[2.5], [-1.0]], dtype=dtype)
    expected_rows = [[np.nan] * 3, [np.nan] * 3, [np.nan] * 3, [0.0, 0.0, 1.0],
                     [1 / 3] * 3, [1.0, 0.0, 0.0], [1 / 3] * 3, [0.0, 0.275, 0.725],
                     [0.75, 0.25, 0.0]]
    for target in ("cpu", "parallel"):
        threshold = lossdsl.compile("sparsemax_threshold(z)", target=target, reduction="none")
        sparsemax = lossdsl.compile("sparsemax(z)", target=target, reduction="none")
        for matrix in (z, steps, single):
            found = threshold(z=matrix)
            assert found.dtype == dtype
            expected = lossdsl.reference.simplex_threshold(matrix.astype(np.float64))
            np.testing.assert_allclose(found, expected, rtol=1e-6 if dtype == np.float32
                                       else 1e-15, atol=0)
        np.testing.assert_allclose(sparsemax(z=z), np.array(expected_rows), atol=1e-6)
        np.testing.assert_allclose(sparsemax(z=single), np.ones((2, 1)))
        np.testing.assert_allclose(sparsemax(z=steps).sum(axis=1), [1.0], rtol=1e-6)


def test_dice_rows_on_classes_match_optax():
    """Classes as rows ((K, N), the transpose of one image's (N, K) pixels): optax's per-class
    Dice, Tversky and generalized Dice of that image."""
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(9)
    y = np.eye(K)[rng.integers(0, K, 40)]
    p = rng.dirichlet(np.ones(K), 40)
    one_image = (p[None], y[None])  # optax: (batch, pixels, classes)
    np.testing.assert_allclose(
        compiled("dice_rows(y, p)")(y=y.T, p=p.T),
        np.asarray(optax.losses.dice_loss(*one_image, smooth=0.5, apply_softmax=False,
                                          reduction="none"))[0], rtol=1e-6)
    np.testing.assert_allclose(
        compiled("tversky_rows(y, p, 0.3, 0.7, 1.0)")(y=y.T, p=p.T),
        np.asarray(optax.losses.dice_loss(*one_image, alpha=0.3, beta=0.7, smooth=1.0,
                                          apply_softmax=False, reduction="none"))[0],
        rtol=1e-6)
    generalized = compiled("generalized_dice_rows(y, p)", "mean")(y=y.T, p=p.T)
    assert generalized == pytest.approx(float(optax.losses.multiclass_generalized_dice_loss(
        *one_image, smooth=0.5, apply_softmax=False)), rel=1e-6)


@pytest.mark.parametrize("y, y_upper", [(0.0, 1.0), (1.0, 2.0)])  # left-, interval-censored
def test_aft_extreme_hessian_in_the_censored_tail(y, y_upper):
    """aft_extreme's censored term -log(1 - exp(-s)) (s = exp((log y_upper - z)/sigma), or
    s = exp((log y - z)/sigma)*expm1(...) for an interval) has the Hessian g s (s (1 + g) - 1)
    through log1mexp's derivative (g = 1/expm1(s)): as z grows, s (1 + g) - 1 ~ s/2 is the
    difference of two terms near 1, which lost the leading digits (relative error 3.7e-3 at
    z = 30) and then the sign (-1.1e-16 instead of 2e-18 at z = 40). Checked against mpmath's
    second derivative of the likelihood, at enough digits for exp(-exp(-60))."""
    z = np.array([20.0, 30.0, 40.0, 60.0, -20.0])
    loss = lossdsl.compile("aft_extreme(y, z, y_upper=u)", reduction="none")
    found = loss.hessian("z", y=np.full(z.size, y), z=z, u=np.full(z.size, y_upper))

    def nll(at):
        survival_upper = mpmath.exp(-mpmath.exp(mpmath.log(y_upper) - at))
        if y == 0:
            return -mpmath.log(1 - survival_upper)
        return -mpmath.log(mpmath.exp(-mpmath.exp(mpmath.log(y) - at)) - survival_upper)

    with mpmath.workdps(120):
        expected = np.array([float(mpmath.diff(nll, mpmath.mpf(at), 2)) for at in z])
    assert np.all(found >= 0)
    np.testing.assert_allclose(found, expected, rtol=1e-10, atol=1e-300)


def test_negative_binomial_scores_derivatives_far_below_the_poisson_limit():
    # from a log dispersion of -250 the derivatives in it cancelled (a Hessian of 5 where the
    # loss is flat to 1e-100; infinite from -355; a gradient of +5 at -500), which a Newton
    # step on counts that are not overdispersed reaches
    loss = compiled("negative_binomial_scores(y, z)")
    for y in (5.0, 0.0):
        for z1 in (-250.0, -360.0, -500.0):
            z = np.array([[1.0, z1]])
            gradient, hessian = loss.grad_and_hessian("z", y=np.array([y]), z=z)
            assert gradient[0, 1] == 0.0 and hessian[0, 1] == 0.0
            near = loss.grad_and_hessian("z", y=np.array([y]), z=np.array([[1.0, -150.0]]))
            np.testing.assert_allclose(gradient[0, 0], near[0][0, 0], rtol=1e-15)
            np.testing.assert_allclose(loss(y=np.array([y]), z=z), loss(
                y=np.array([y]), z=np.array([[1.0, -150.0]])), rtol=1e-15)
