"""Idiomatic peers of the library losses: the code a user would write instead of lossdsl.

``lossdsl bench`` and ``benchmarks/bench_library.py`` time lossdsl against these, never against
lossdsl's own expression graph. A :class:`Family` is keyed by the prelude loss's name and holds,
for value, value + gradient and gradient + Hessian diagonal with respect to the prediction
(always the mean over samples, or over rows for the class-axis losses, as lossdsl's default
reduction):

* NumPy written by hand (``numpy_*``: the value, the value with its closed-form gradient, the
  closed-form gradient and Hessian). They take the array module as ``xp`` (NumPy by default),
  so that JAX runs the same code with ``jax.numpy`` under ``jax.jit`` (``jax.value_and_grad``
  for value + gradient, as a JAX user writes it);
* PyTorch (``torch_*``): the ``torch.nn.functional`` loss where PyTorch has one (the formula
  in ``torch`` operations where it has none), its gradient by autograd, and the closed-form
  gradient and Hessian written with ``torch`` operations (where a closed form is more than a
  user would write, as for the focal loss, autograd's second backward pass of the summed
  gradient, which is the Hessian diagonal of a loss whose samples are independent);
* a hand-fused Numba kernel (``numba_*``: one pass, as a user writing their own loop would)
  for mse, huber, bce_logits and sparse_cce_logits;
* scikit-learn's ``sklearn._loss`` Cython kernels for the losses it has (``gradient_hessian``,
  and ``__call__`` for the value), with ``n_threads``. Its gradients and Hessians are per
  sample (not divided by the sample count) and some are "half" losses: each such peer states
  the factor that maps its numbers to lossdsl's, which is applied only when the numbers are
  compared, never inside the timed call, where the work is the same.

Every peer is checked against lossdsl's own numbers on the benchmark's data
(:func:`check_peer`) before it is timed.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import prange

from .frontend import ast
from .frontend.parse import parse

TASKS = ("value", "value+grad", "grad+hess")
LOG2 = math.log(2.0)


class PeerMismatch(AssertionError):
    """A peer's numbers differ from lossdsl's on the benchmark data: it would not be timed."""


# ------------------------------------------------------------------------------------ data


def _regression_data(rng, n, classes):
    y = rng.normal(size=n)
    return {"y": y, "p": y + 1.5 * rng.normal(size=n)}  # residuals on both sides of delta = 1


def _binary_logit_data(rng, n, classes):
    return {"y": (rng.random(n) < 0.3).astype(np.float64), "z": 2.0 * rng.normal(size=n)}


def _binary_probability_data(rng, n, classes):
    return {"y": (rng.random(n) < 0.3).astype(np.float64), "p": rng.uniform(0.02, 0.98, n)}


def _margin_data(rng, n, classes):
    return {"y": np.where(rng.random(n) < 0.5, -1.0, 1.0), "z": rng.normal(size=n)}


def _poisson_data(rng, n, classes):
    return {"y": rng.poisson(2.0, n).astype(np.float64), "z": rng.normal(0.5, 0.5, n)}


def _gamma_data(rng, n, classes):
    return {"y": rng.gamma(2.0, 1.0, n), "z": rng.normal(0.5, 0.5, n)}


def _tweedie_data(rng, n, classes):
    y = rng.poisson(1.0, n) * rng.gamma(2.0, 1.0, n)  # compound Poisson: exact zeros included
    return {"y": y, "z": rng.normal(0.3, 0.5, n)}


def _softmax_rows(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sparse_data(rng, n, classes):
    return {"y": rng.integers(0, classes, n).astype(np.float64),
            "z": rng.normal(size=(n, classes))}


def _soft_target_data(rng, n, classes):
    return {"y": _softmax_rows(rng.normal(size=(n, classes))), "z": rng.normal(size=(n, classes))}


def _distribution_data(rng, n, classes):
    return {"y": _softmax_rows(rng.normal(size=(n, classes))),
            "p": _softmax_rows(rng.normal(size=(n, classes)))}


# ----------------------------------------------------------------------- NumPy (and JAX)
# Written once against the array module xp: NumPy by default, jax.numpy under jax.jit.


def numpy_mse_value(y, p, xp=np):
    return ((p - y) ** 2).mean()


def numpy_mse_value_and_grad(y, p, xp=np):
    r = p - y
    return (r * r).mean(), 2 * r / r.shape[0]


def numpy_mse_grad_hess(y, p, xp=np):
    r = p - y
    return 2 * r / r.shape[0], xp.full_like(r, 2 / r.shape[0])


def numpy_half_mse_value(y, p, xp=np):
    return 0.5 * ((p - y) ** 2).mean()


def numpy_half_mse_value_and_grad(y, p, xp=np):
    r = p - y
    return 0.5 * (r * r).mean(), r / r.shape[0]


def numpy_half_mse_grad_hess(y, p, xp=np):
    r = p - y
    return r / r.shape[0], xp.full_like(r, 1 / r.shape[0])


def numpy_mae_value(y, p, xp=np):
    return xp.abs(p - y).mean()


def numpy_mae_value_and_grad(y, p, xp=np):
    r = p - y
    return xp.abs(r).mean(), xp.sign(r) / r.shape[0]


def numpy_mae_grad_hess(y, p, xp=np):
    r = p - y
    return xp.sign(r) / r.shape[0], xp.zeros_like(r)


def numpy_huber_value(y, p, delta=1.0, xp=np):
    a = xp.abs(p - y)
    return xp.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)).mean()


def numpy_huber_value_and_grad(y, p, delta=1.0, xp=np):
    r = p - y
    a = xp.abs(r)
    value = xp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)).mean()
    return value, xp.clip(r, -delta, delta) / r.shape[0]


def numpy_huber_grad_hess(y, p, delta=1.0, xp=np):
    r = p - y
    n = r.shape[0]
    return xp.clip(r, -delta, delta) / n, xp.where(xp.abs(r) <= delta, 1 / n, 0.0)


def numpy_pseudo_huber_value(y, p, delta=1.0, xp=np):
    r = (p - y) / delta
    return (delta**2 * (xp.sqrt(1 + r * r) - 1)).mean()


def numpy_pseudo_huber_value_and_grad(y, p, delta=1.0, xp=np):
    r = p - y
    s = xp.sqrt(1 + (r / delta) ** 2)
    return (delta**2 * (s - 1)).mean(), r / s / r.shape[0]


def numpy_pseudo_huber_grad_hess(y, p, delta=1.0, xp=np):
    r = p - y
    s = xp.sqrt(1 + (r / delta) ** 2)
    return r / s / r.shape[0], 1 / (s * s * s) / r.shape[0]


def numpy_quantile_value(y, p, alpha=0.5, xp=np):
    r = y - p
    return xp.where(r >= 0, alpha * r, (alpha - 1) * r).mean()


def numpy_quantile_value_and_grad(y, p, alpha=0.5, xp=np):
    r = y - p
    value = xp.where(r >= 0, alpha * r, (alpha - 1) * r).mean()
    return value, xp.where(r >= 0, -alpha, 1 - alpha) / r.shape[0]


def numpy_quantile_grad_hess(y, p, alpha=0.5, xp=np):
    r = y - p
    return xp.where(r >= 0, -alpha, 1 - alpha) / r.shape[0], xp.zeros_like(r)


def numpy_log_cosh_value(y, p, xp=np):
    r = p - y
    return (r + xp.logaddexp(0, -2 * r) - LOG2).mean()  # Keras' and optax's stable form


def numpy_log_cosh_value_and_grad(y, p, xp=np):
    r = p - y
    return (r + xp.logaddexp(0, -2 * r) - LOG2).mean(), xp.tanh(r) / r.shape[0]


def numpy_log_cosh_grad_hess(y, p, xp=np):
    t = xp.tanh(p - y)
    return t / t.shape[0], (1 - t * t) / t.shape[0]


def numpy_bce_logits_value(y, z, xp=np):
    return (xp.logaddexp(0, z) - y * z).mean()


def numpy_bce_logits_value_and_grad(y, z, xp=np):
    s = 0.5 * (1 + xp.tanh(0.5 * z))  # sigmoid(z), without overflow
    return (xp.logaddexp(0, z) - y * z).mean(), (s - y) / z.shape[0]


def numpy_bce_logits_grad_hess(y, z, xp=np):
    s = 0.5 * (1 + xp.tanh(0.5 * z))
    return (s - y) / z.shape[0], s * (1 - s) / z.shape[0]


def numpy_bce_value(y, p, xp=np):
    return -(y * xp.log(p) + (1 - y) * xp.log1p(-p)).mean()


def numpy_bce_value_and_grad(y, p, xp=np):
    value = -(y * xp.log(p) + (1 - y) * xp.log1p(-p)).mean()
    return value, (p - y) / (p * (1 - p)) / p.shape[0]


def numpy_bce_grad_hess(y, p, xp=np):
    q = 1 - p
    n = p.shape[0]
    return (p - y) / (p * q) / n, (y / (p * p) + (1 - y) / (q * q)) / n


def numpy_focal_logits_value(y, z, alpha=0.25, gamma=2.0, xp=np):
    s = 0.5 * (1 + xp.tanh(0.5 * z))
    ce = xp.logaddexp(0, z) - y * z
    q = y * (1 - s) + (1 - y) * s  # 1 - p_t
    return ((alpha * y + (1 - alpha) * (1 - y)) * q**gamma * ce).mean()


def numpy_focal_logits_value_and_grad(y, z, alpha=0.25, gamma=2.0, xp=np):
    s = 0.5 * (1 + xp.tanh(0.5 * z))
    ce = xp.logaddexp(0, z) - y * z
    q = y * (1 - s) + (1 - y) * s
    a = alpha * y + (1 - alpha) * (1 - y)
    q_gamma = q**gamma
    grad = a * (gamma * q ** (gamma - 1) * (1 - 2 * y) * s * (1 - s) * ce + q_gamma * (s - y))
    return (a * q_gamma * ce).mean(), grad / z.shape[0]


def numpy_poisson_log_value(y, z, xp=np):
    return (xp.exp(z) - y * z).mean()


def numpy_poisson_log_value_and_grad(y, z, xp=np):
    mu = xp.exp(z)
    return (mu - y * z).mean(), (mu - y) / z.shape[0]


def numpy_poisson_log_grad_hess(y, z, xp=np):
    mu = xp.exp(z)
    return (mu - y) / z.shape[0], mu / z.shape[0]


def numpy_gamma_value(y, z, xp=np):
    return (z + y * xp.exp(-z)).mean()


def numpy_gamma_value_and_grad(y, z, xp=np):
    t = y * xp.exp(-z)
    return (z + t).mean(), (1 - t) / z.shape[0]


def numpy_gamma_grad_hess(y, z, xp=np):
    t = y * xp.exp(-z)
    return (1 - t) / z.shape[0], t / z.shape[0]


def numpy_tweedie_value(y, z, rho=1.5, xp=np):
    return (xp.exp((2 - rho) * z) / (2 - rho) - y * xp.exp((1 - rho) * z) / (1 - rho)).mean()


def numpy_tweedie_value_and_grad(y, z, rho=1.5, xp=np):
    a = xp.exp((2 - rho) * z)
    b = y * xp.exp((1 - rho) * z)
    return (a / (2 - rho) - b / (1 - rho)).mean(), (a - b) / z.shape[0]


def numpy_tweedie_grad_hess(y, z, rho=1.5, xp=np):
    a = xp.exp((2 - rho) * z)
    b = y * xp.exp((1 - rho) * z)
    n = z.shape[0]
    return (a - b) / n, ((2 - rho) * a - (1 - rho) * b) / n


def numpy_hinge_value(y, z, xp=np):
    return xp.maximum(0, 1 - y * z).mean()


def numpy_hinge_value_and_grad(y, z, xp=np):
    m = 1 - y * z
    return xp.maximum(0, m).mean(), xp.where(m > 0, -y, 0.0) / z.shape[0]


def numpy_hinge_grad_hess(y, z, xp=np):
    return xp.where(1 - y * z > 0, -y, 0.0) / z.shape[0], xp.zeros_like(z)


def numpy_sparse_cce_logits_value(y, z, xp=np):  # y: integer labels
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + xp.log(xp.exp(z - m).sum(axis=1))
    return (lse - xp.take_along_axis(z, y[:, None], axis=1)[:, 0]).mean()


def numpy_sparse_cce_logits_value_and_grad(y, z, xp=np):
    shifted = z - z.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    value = (xp.log(total[:, 0]) - xp.take_along_axis(shifted, y[:, None], axis=1)[:, 0]).mean()
    onehot = xp.arange(z.shape[1]) == y[:, None]
    return value, (e / total - onehot) / z.shape[0]


def numpy_sparse_cce_logits_grad_hess(y, z, xp=np):
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    onehot = xp.arange(z.shape[1]) == y[:, None]
    return (s - onehot) / z.shape[0], s * (1 - s) / z.shape[0]


def numpy_cce_logits_value(y, z, xp=np):  # y: probability rows
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))
    return -(y * log_p).sum(axis=1).mean()


def numpy_cce_logits_value_and_grad(y, z, xp=np):
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))
    mass = y.sum(axis=1, keepdims=True)
    return -(y * log_p).sum(axis=1).mean(), (mass * xp.exp(log_p) - y) / z.shape[0]


def numpy_cce_logits_grad_hess(y, z, xp=np):
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    mass = y.sum(axis=1, keepdims=True)
    return (mass * s - y) / z.shape[0], mass * s * (1 - s) / z.shape[0]


def numpy_kl_div_value(y, p, xp=np):
    return (y * (xp.log(y) - xp.log(p))).sum(axis=1).mean()


def numpy_kl_div_value_and_grad(y, p, xp=np):
    return (y * (xp.log(y) - xp.log(p))).sum(axis=1).mean(), -y / p / p.shape[0]


def numpy_kl_div_grad_hess(y, p, xp=np):
    q = y / p
    return -q / p.shape[0], q / p / p.shape[0]


# ------------------------------------------------------------------------------- PyTorch
# Values with torch.nn.functional where it has the loss (imported as F inside each function,
# so that importing this module does not import torch); gradients by autograd.


def torch_mse_value(y, p):
    import torch.nn.functional as F
    return F.mse_loss(p, y)


def torch_half_mse_value(y, p):
    import torch.nn.functional as F
    return 0.5 * F.mse_loss(p, y)


def torch_mae_value(y, p):
    import torch.nn.functional as F
    return F.l1_loss(p, y)


def torch_huber_value(y, p, delta=1.0):
    import torch.nn.functional as F
    return F.huber_loss(p, y, delta=delta)


def torch_pseudo_huber_value(y, p, delta=1.0):
    import torch
    return (delta**2 * (torch.sqrt(1 + ((p - y) / delta) ** 2) - 1)).mean()


def torch_quantile_value(y, p, alpha=0.5):
    r = y - p
    return (r * (alpha - (r < 0).to(r.dtype))).mean()


def torch_log_cosh_value(y, p):
    import torch.nn.functional as F
    r = p - y
    return (r + F.softplus(-2 * r) - LOG2).mean()


def torch_bce_logits_value(y, z):
    import torch.nn.functional as F
    return F.binary_cross_entropy_with_logits(z, y)


def torch_bce_value(y, p):
    import torch.nn.functional as F
    return F.binary_cross_entropy(p, y)


def torch_focal_logits_value(y, z, alpha=0.25, gamma=2.0):
    # torchvision.ops.sigmoid_focal_loss, as its source has it, with reduction="mean"
    import torch
    import torch.nn.functional as F
    p = torch.sigmoid(z)
    ce_loss = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce_loss * ((1 - p_t) ** gamma)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return (alpha_t * loss).mean()


def torch_poisson_log_value(y, z):
    import torch.nn.functional as F
    return F.poisson_nll_loss(z, y, log_input=True, full=False)


def torch_gamma_value(y, z):
    import torch
    return (z + y * torch.exp(-z)).mean()


def torch_tweedie_value(y, z, rho=1.5):
    import torch
    return (torch.exp((2 - rho) * z) / (2 - rho) - y * torch.exp((1 - rho) * z) / (1 - rho)).mean()


def torch_hinge_value(y, z):
    import torch
    return torch.clamp(1 - y * z, min=0).mean()


def torch_sparse_cce_logits_value(y, z):  # y: int64 labels
    import torch.nn.functional as F
    return F.cross_entropy(z, y)


def torch_cce_logits_value(y, z):  # y: probability rows
    import torch.nn.functional as F
    return F.cross_entropy(z, y)


def torch_kl_div_value(y, p):
    import torch
    import torch.nn.functional as F
    return F.kl_div(torch.log(p), y, reduction="batchmean")


def torch_value_and_grad(value, inputs, wrt):
    """What a PyTorch user writes for a loss and its gradient: forward, then backward."""
    x = inputs[wrt].detach().requires_grad_(True)
    loss = value(**{**inputs, wrt: x})
    loss.backward()
    return loss.item(), x.grad


def torch_autograd_grad_hess(value, inputs, wrt):
    """Gradient and Hessian diagonal by autograd: a second backward pass of the summed
    gradient (the diagonal, for a loss whose samples are independent)."""
    import torch
    x = inputs[wrt].detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(value(**{**inputs, wrt: x}), x, create_graph=True)
    (hess,) = torch.autograd.grad(grad.sum(), x)
    return grad.detach(), hess


# Closed-form gradient and Hessian diagonal in torch operations (mean reduction).


def torch_mse_grad_hess(y, p):
    import torch
    r = p - y
    return 2 * r / r.shape[0], torch.full_like(r, 2 / r.shape[0])


def torch_half_mse_grad_hess(y, p):
    import torch
    r = p - y
    return r / r.shape[0], torch.full_like(r, 1 / r.shape[0])


def torch_mae_grad_hess(y, p):
    import torch
    r = p - y
    return torch.sign(r) / r.shape[0], torch.zeros_like(r)


def torch_huber_grad_hess(y, p, delta=1.0):
    r = p - y
    n = r.shape[0]
    return r.clamp(-delta, delta) / n, (r.abs() <= delta).to(r.dtype) / n


def torch_pseudo_huber_grad_hess(y, p, delta=1.0):
    import torch
    r = p - y
    s = torch.sqrt(1 + (r / delta) ** 2)
    return r / s / r.shape[0], 1 / (s * s * s) / r.shape[0]


def torch_quantile_grad_hess(y, p, alpha=0.5):
    import torch
    r = y - p
    return ((r < 0).to(r.dtype) - alpha) / r.shape[0], torch.zeros_like(r)


def torch_log_cosh_grad_hess(y, p):
    t = (p - y).tanh()
    return t / t.shape[0], (1 - t * t) / t.shape[0]


def torch_bce_logits_grad_hess(y, z):
    s = z.sigmoid()
    return (s - y) / z.shape[0], s * (1 - s) / z.shape[0]


def torch_bce_grad_hess(y, p):
    q = 1 - p
    n = p.shape[0]
    return (p - y) / (p * q) / n, (y / (p * p) + (1 - y) / (q * q)) / n


def torch_poisson_log_grad_hess(y, z):
    mu = z.exp()
    return (mu - y) / z.shape[0], mu / z.shape[0]


def torch_gamma_grad_hess(y, z):
    t = y * (-z).exp()
    return (1 - t) / z.shape[0], t / z.shape[0]


def torch_tweedie_grad_hess(y, z, rho=1.5):
    a = ((2 - rho) * z).exp()
    b = y * ((1 - rho) * z).exp()
    n = z.shape[0]
    return (a - b) / n, ((2 - rho) * a - (1 - rho) * b) / n


def torch_hinge_grad_hess(y, z):
    import torch
    return torch.where(1 - y * z > 0, -y, 0.0) / z.shape[0], torch.zeros_like(z)


def torch_sparse_cce_logits_grad_hess(y, z):
    import torch.nn.functional as F
    s = z.softmax(dim=1)
    return (s - F.one_hot(y, z.shape[1])) / z.shape[0], s * (1 - s) / z.shape[0]


def torch_cce_logits_grad_hess(y, z):
    s = z.softmax(dim=1)
    mass = y.sum(dim=1, keepdim=True)
    return (mass * s - y) / z.shape[0], mass * s * (1 - s) / z.shape[0]


def torch_kl_div_grad_hess(y, p):
    q = y / p
    return -q / p.shape[0], q / p / p.shape[0]


# ----------------------------------------------------------------- hand-fused Numba kernels
# What a user who writes their own fused loop writes: one pass, outputs allocated by the
# caller (numba_peer), compiled with njit(parallel=..., fastmath=FASTMATH); prange runs as
# range in a serial build.


def numba_mse_value_and_grad(y, p, grad):
    n = p.shape[0]
    total = 0.0
    for i in prange(n):
        r = p[i] - y[i]
        total += r * r
        grad[i] = 2.0 * r / n
    return total / n


def numba_mse_grad_hess(y, p, grad, hess):
    n = p.shape[0]
    for i in prange(n):
        grad[i] = 2.0 * (p[i] - y[i]) / n
        hess[i] = 2.0 / n


def numba_huber_value_and_grad(y, p, delta, grad):
    n = p.shape[0]
    total = 0.0
    for i in prange(n):
        r = p[i] - y[i]
        if abs(r) <= delta:
            total += 0.5 * r * r
            grad[i] = r / n
        else:
            total += delta * (abs(r) - 0.5 * delta)
            grad[i] = (delta if r > 0 else -delta) / n
    return total / n


def numba_huber_grad_hess(y, p, delta, grad, hess):
    n = p.shape[0]
    for i in prange(n):
        r = p[i] - y[i]
        if abs(r) <= delta:
            grad[i] = r / n
            hess[i] = 1.0 / n
        else:
            grad[i] = (delta if r > 0 else -delta) / n
            hess[i] = 0.0


def numba_bce_logits_value_and_grad(y, z, grad):
    n = z.shape[0]
    total = 0.0
    for i in prange(n):
        e = math.exp(-abs(z[i]))
        total += max(z[i], 0.0) + math.log1p(e) - y[i] * z[i]
        s = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
        grad[i] = (s - y[i]) / n
    return total / n


def numba_bce_logits_grad_hess(y, z, grad, hess):
    n = z.shape[0]
    for i in prange(n):
        e = math.exp(-abs(z[i]))
        s = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
        grad[i] = (s - y[i]) / n
        hess[i] = s * (1.0 - s) / n


def numba_sparse_cce_logits_value_and_grad(y, z, grad):
    n, k = z.shape
    total = 0.0
    for i in prange(n):
        m = z[i, 0]
        for j in range(1, k):
            m = max(m, z[i, j])
        s = 0.0
        for j in range(k):
            s += math.exp(z[i, j] - m)
        total += m + math.log(s) - z[i, y[i]]
        for j in range(k):
            grad[i, j] = math.exp(z[i, j] - m) / s / n
        grad[i, y[i]] -= 1.0 / n
    return total / n


def numba_sparse_cce_logits_grad_hess(y, z, grad, hess):
    n, k = z.shape
    for i in prange(n):
        m = z[i, 0]
        for j in range(1, k):
            m = max(m, z[i, j])
        s = 0.0
        for j in range(k):
            s += math.exp(z[i, j] - m)
        for j in range(k):
            q = math.exp(z[i, j] - m) / s
            grad[i, j] = q / n
            hess[i, j] = q * (1.0 - q) / n
        grad[i, y[i]] -= 1.0 / n


FASTMATH = {"reassoc", "contract", "arcp", "afn", "nsz"}


# ------------------------------------------------------------------------- scikit-learn


@dataclass(frozen=True)
class SklearnLoss:
    """A ``sklearn._loss`` class for a family: its constructor arguments from the loss's
    params, and the factor from its per-sample numbers (a "half" loss's, not divided by the
    sample count) to lossdsl's: lossdsl's gradient = factor * sklearn's / N, and the same
    for the Hessian and (without the / N: both are means) the value. ``hessian_one`` marks
    losses whose Hessian sklearn sets to 1 (the boosting convention where the exact one is
    0): the Hessian is then checked to be 1, the gradient and value as usual."""

    class_name: str
    arguments: Callable[[dict[str, float], int], dict[str, Any]] = lambda params, k: {}
    factor: float = 1.0
    hessian_one: bool = False


def sklearn_grad_hess(loss, y, raw, n_threads):
    """scikit-learn's Cython kernel: per-sample gradient and Hessian into fresh arrays."""
    return loss.gradient_hessian(y, raw, n_threads=n_threads)


def sklearn_value(loss, y, raw, n_threads):
    """scikit-learn's Cython kernel: the mean loss."""
    return loss(y, raw, n_threads=n_threads)


# ------------------------------------------------------------------------------ families


@dataclass(frozen=True)
class Family:
    """The peers of one library loss. ``roles`` are its data parameters in the prelude's
    order (the prediction last); ``labels`` those that are integer class labels;
    ``requires`` params that the peers only cover at these values."""

    name: str
    roles: tuple[str, ...]
    data: Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]
    numpy: tuple[Callable, Callable, Callable | None]
    torch_value: Callable
    torch_grad_hess: Callable | None
    sklearn: SklearnLoss | None = None
    labels: tuple[str, ...] = ()
    requires: dict[str, float] = field(default_factory=dict)
    class_axis: bool = False
    numba: tuple[Callable, Callable] | None = None

    @property
    def prediction(self) -> str:
        """The role differentiated by (the last data parameter)."""
        return self.roles[-1]


def _family(name, roles, data, *, torch_grad_hess=True, numpy_grad_hess=True, **extra):
    module = globals()
    if f"numba_{name}_value_and_grad" in module:
        extra["numba"] = (module[f"numba_{name}_value_and_grad"], module[f"numba_{name}_grad_hess"])
    numpy = (module[f"numpy_{name}_value"], module[f"numpy_{name}_value_and_grad"],
             module[f"numpy_{name}_grad_hess"] if numpy_grad_hess else None)
    return Family(name, roles, data, numpy, module[f"torch_{name}_value"],
                  module[f"torch_{name}_grad_hess"] if torch_grad_hess else None, **extra)


FAMILIES: dict[str, Family] = {family.name: family for family in [
    _family("mse", ("y", "p"), _regression_data,
            sklearn=SklearnLoss("HalfSquaredError", factor=2.0)),
    _family("half_mse", ("y", "p"), _regression_data, sklearn=SklearnLoss("HalfSquaredError")),
    _family("mae", ("y", "p"), _regression_data,
            sklearn=SklearnLoss("AbsoluteError", hessian_one=True)),
    _family("huber", ("y", "p"), _regression_data,
            sklearn=SklearnLoss("HuberLoss", lambda params, k: {"delta": params["delta"]})),
    _family("pseudo_huber", ("y", "p"), _regression_data),
    _family("quantile", ("y", "p"), _regression_data,
            sklearn=SklearnLoss("PinballLoss", lambda params, k: {"quantile": params["alpha"]},
                                hessian_one=True)),
    _family("log_cosh", ("y", "p"), _regression_data),
    _family("bce_logits", ("y", "z"), _binary_logit_data,
            sklearn=SklearnLoss("HalfBinomialLoss"),
            requires={"pos_weight": 1.0, "label_smoothing": 0.0}),
    _family("bce", ("y", "p"), _binary_probability_data, requires={"label_smoothing": 0.0}),
    _family("focal_logits", ("y", "z"), _binary_logit_data, torch_grad_hess=False,
            numpy_grad_hess=False, requires={}),
    _family("poisson_log", ("y", "z"), _poisson_data, sklearn=SklearnLoss("HalfPoissonLoss"),
            requires={"full": 0.0}),
    _family("gamma", ("y", "z"), _gamma_data, sklearn=SklearnLoss("HalfGammaLoss")),
    _family("tweedie", ("y", "z"), _tweedie_data,
            sklearn=SklearnLoss("HalfTweedieLoss", lambda params, k: {"power": params["rho"]})),
    _family("hinge", ("y", "z"), _margin_data),
    _family("sparse_cce_logits", ("y", "z"), _sparse_data, labels=("y",), class_axis=True,
            sklearn=SklearnLoss("HalfMultinomialLoss", lambda params, k: {"n_classes": k}),
            requires={"label_smoothing": 0.0}),
    _family("cce_logits", ("y", "z"), _soft_target_data, class_axis=True,
            requires={"label_smoothing": 0.0}),
    _family("kl_div", ("y", "p"), _distribution_data, class_axis=True),
]}
FAMILIES["pinball"] = FAMILIES["quantile"]


# ------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Match:
    """A benchmark expression that is one call of a library loss with peers: the family,
    which input of the expression plays each role, and the loss's params."""

    family: Family
    inputs: dict[str, str]  # role -> the expression's input name
    params: dict[str, float]

    def input_name(self, role: str) -> str:
        """The expression's name for a role."""
        return self.inputs[role]


def _number(node) -> float | None:
    if isinstance(node, ast.Number):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and node.op in ("neg", "pos"):
        value = _number(node.operand)
        if value is not None:
            return -value if node.op == "neg" else value
    return None


def match(text: str) -> tuple[Match | None, str]:
    """The peers' match for a benchmark expression, or ``(None, why not)``: a single call of a
    library loss that has peers, on distinct input names, with numbers for its params."""
    from . import catalog

    stripped = text.strip()
    if stripped.isidentifier() and catalog.entry(stripped) is not None:
        stripped = catalog.entry(stripped).call_expression()
    try:
        module = parse(stripped)
    except Exception:  # a file or FILE:NAME: not an expression
        return None, "the loss is not a single call of a library loss"
    if len(module.statements) != 1 or not isinstance(module.statements[0],
                                                       ast.ExpressionStatement):
        return None, "the loss is not a single call of a library loss"
    call = module.statements[0].value
    if not isinstance(call, ast.Call):
        return None, "the loss is not a single call of a library loss"
    family = FAMILIES.get(call.function)
    entry = catalog.entry(call.function)
    if family is None or entry is None:
        return None, f"no idiomatic peer is registered for '{call.function}'"
    names = [name for name, _ in entry.parameters]
    defaults = {name: default for name, default in entry.parameters}
    bound: dict[str, Any] = dict(zip(names, call.args, strict=False))
    for keyword in call.keywords:
        bound[keyword.name] = keyword.value
    inputs, params = {}, {}
    for name in names:
        node = bound.get(name)
        if name in family.roles:
            if not isinstance(node, ast.Name):
                return None, f"'{name}' of {family.name} is not a plain input name"
            inputs[name] = node.id
            continue
        value = _number(node) if node is not None else _number(parse(defaults[name] or "x")
                                                                .statements[0].value)
        if value is None:
            return None, f"param '{name}' of {family.name} is not a number"
        params[name] = value
    if len(set(inputs.values())) != len(inputs):
        return None, "the same input plays two roles"
    for name, wanted in family.requires.items():
        if params.get(name) != wanted:
            return None, f"the peers of {family.name} need {name} = {wanted:g}"
    return Match(family, inputs, params), ""


def family_data(match_: Match, n: int, classes: int, dtype, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """The benchmark data for a match, keyed by the expression's input names."""
    data = match_.family.data(np.random.default_rng(seed), n, classes)
    return {match_.inputs[role]: (array if role in match_.family.labels
                                  else array.astype(dtype))
            for role, array in data.items()}


# --------------------------------------------------------------------------------- peers


@dataclass
class Peer:
    """One peer: a zero-argument callable per task it has, the functions whose source is its
    code, a note, and ``convert`` mapping a task's result to lossdsl's convention (applied
    only when checking, never when timing)."""

    name: str
    tasks: dict[str, Callable[[], Any]]
    code: list[Callable]
    note: str = ""
    convert: Callable[[str, Any], Any] = lambda task, result: result
    hessian_one: bool = False  # writes a Hessian of ones where lossdsl's exact one is 0
    generated: str = ""  # source the peer generates (the floor's kernel)

    def source(self) -> str:
        """The peer's code (the source of its functions)."""
        parts = [inspect.getsource(function) for function in self.code]
        return "\n".join(parts + ([self.generated] if self.generated else []))


def _threads(target: str) -> int:
    if target == "cpu":
        return 1
    try:
        import numba

        return int(numba.config.NUMBA_NUM_THREADS)
    except Exception:
        return os.cpu_count() or 1


def _roles(match_: Match, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {role: inputs[match_.inputs[role]] for role in match_.family.roles}


def _own_params(function: Callable, params: dict[str, float]) -> dict[str, float]:
    accepted = inspect.signature(function).parameters
    return {name: value for name, value in params.items() if name in accepted}


def numpy_peer(match_: Match, inputs: dict[str, np.ndarray]) -> Peer:
    """Hand-written NumPy."""
    family = match_.family
    data = _roles(match_, inputs)
    for role in family.labels:
        data[role] = data[role].astype(np.int64)
    value, value_and_grad, grad_hess = family.numpy
    params = _own_params(value, match_.params)
    tasks = {"value": lambda: float(value(**data, **params)),
             "value+grad": lambda: value_and_grad(**data, **params)}
    if grad_hess is not None:
        tasks["grad+hess"] = lambda: grad_hess(**data, **params)
    return Peer("numpy", tasks, [f for f in family.numpy if f is not None])


def torch_peer(match_: Match, inputs: dict[str, np.ndarray], threads: int,
               compiled: bool = False) -> Peer:
    """PyTorch eager (``compiled``: under ``torch.compile``), on CPU tensors sharing memory
    with the NumPy inputs."""
    import torch

    torch.set_num_threads(threads)
    family = match_.family
    data = {role: torch.from_numpy(np.ascontiguousarray(array))
            for role, array in _roles(match_, inputs).items()}
    for role in family.labels:
        data[role] = data[role].long()
    params = _own_params(family.torch_value, match_.params)
    wrt = family.prediction
    # torch.compile the loss function itself (one code object per loss, so that dynamo's
    # per-function recompile limit is not shared between losses)
    function = torch.compile(family.torch_value) if compiled else family.torch_value

    def value(**tensors):
        return function(**tensors, **params)

    def value_only():
        with torch.no_grad():
            return value(**data).item()

    tasks = {"value": value_only,
             "value+grad": lambda: torch_value_and_grad(value, data, wrt)}
    code = [family.torch_value, torch_value_and_grad]
    note = ""
    if family.torch_grad_hess is not None:
        grad_hess = family.torch_grad_hess
        if compiled:
            grad_hess = torch.compile(grad_hess)
        gh_params = _own_params(family.torch_grad_hess, match_.params)
        tasks["grad+hess"] = lambda: grad_hess(**data, **gh_params)
        code.append(family.torch_grad_hess)
    elif not compiled:
        tasks["grad+hess"] = lambda: torch_autograd_grad_hess(value, data, wrt)
        code.append(torch_autograd_grad_hess)
        note = "grad+hess by autograd (no closed form a user would write)"
    else:
        note = "no grad+hess: torch.compile does not support double backward"

    def convert(task, result):
        if task == "value":
            return result
        return tuple(r if isinstance(r, float) else r.detach().numpy() for r in result)

    return Peer("torch.compile" if compiled else "torch", tasks, code, note, convert)


def numba_peer(match_: Match, inputs: dict[str, np.ndarray], target: str) -> Peer | None:
    """A hand-fused Numba kernel (value + gradient, gradient + Hessian), or None when none is
    written for the family."""
    family = match_.family
    if family.numba is None:
        return None
    import numba

    data = _roles(match_, inputs)
    for role in family.labels:
        data[role] = data[role].astype(np.int64)
    arrays = [data[role] for role in family.roles]
    x = data[family.prediction]
    value_and_grad, grad_hess = (
        numba.njit(parallel=target != "cpu", fastmath=FASTMATH)(f) for f in family.numba)
    params = [match_.params[name] for name in inspect.signature(family.numba[0]).parameters
              if name in match_.params]

    def run_value_and_grad():
        grad = np.empty_like(x)
        return value_and_grad(*arrays, *params, grad), grad

    def run_grad_hess():
        grad, hess = np.empty_like(x), np.empty_like(x)
        grad_hess(*arrays, *params, grad, hess)
        return grad, hess

    return Peer("numba", {"value+grad": run_value_and_grad, "grad+hess": run_grad_hess},
                list(family.numba), f"hand-fused kernels, njit(parallel={target != 'cpu'}, "
                f"fastmath={sorted(FASTMATH)})")


def _x64_scope(jax, on: bool) -> Callable[[], Any]:
    """A context in which JAX computes in float64 (when ``on``), without changing JAX's global
    configuration for the rest of the process."""
    if not on:
        return contextlib.nullcontext
    scope = getattr(jax, "enable_x64", None)
    if scope is None:
        from jax import experimental

        scope = experimental.enable_x64
    return lambda: scope(True)


_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _hold_jax_threads(threads: int) -> str:
    """On one thread (``--target cpu``), ask XLA for one thread before JAX is first imported
    (XLA reads ``XLA_FLAGS`` once, when JAX starts its CPU backend; later has no effect), and
    say what was done."""
    if threads != 1:
        return "XLA's own CPU thread pool"
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if _XLA_ONE_THREAD not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {_XLA_ONE_THREAD}".strip()
        return f"XLA_FLAGS={_XLA_ONE_THREAD!r} set before importing jax"
    if _XLA_ONE_THREAD in os.environ.get("XLA_FLAGS", ""):
        return f"XLA_FLAGS={_XLA_ONE_THREAD!r}"
    return ("XLA's own CPU thread pool: jax was imported before the peers, so it could not "
            "be held to one thread as the other peers are (set XLA_FLAGS="
            f"{_XLA_ONE_THREAD!r} before importing jax)")


def jax_peer(match_: Match, inputs: dict[str, np.ndarray], threads: int = 0) -> Peer:
    """``jax.jit`` of the NumPy code on ``jax.numpy``: ``jax.value_and_grad`` for value +
    gradient (as a JAX user writes it), the closed form for gradient + Hessian. float64 data
    is computed in float64 (``jax_enable_x64`` within each call). ``threads`` == 1
    (``--target cpu``) asks XLA for one thread where jax is not yet imported."""
    threads_note = _hold_jax_threads(threads)
    import jax
    import jax.numpy as jnp

    family = match_.family
    roles = _roles(match_, inputs)
    x64 = _x64_scope(jax, any(array.dtype == np.float64 for array in roles.values()))
    value, _, grad_hess = family.numpy
    params = _own_params(value, match_.params)
    wrt = family.prediction
    order = list(family.roles)
    with x64():
        arrays = [jnp.asarray(roles[role].astype(np.int64) if role in family.labels
                              else roles[role]) for role in order]

    def positional(function):
        def call(*arrays):
            return function(**dict(zip(order, arrays, strict=True)), **params, xp=jnp)
        return call

    value_jit = jax.jit(positional(value))
    value_and_grad_jit = jax.jit(jax.value_and_grad(positional(value),
                                                    argnums=order.index(wrt)))

    def run_value():
        with x64():
            return float(value_jit(*arrays))

    def run_value_and_grad():
        with x64():
            loss, grad = value_and_grad_jit(*arrays)
            return float(loss), grad.block_until_ready()

    tasks = {"value": run_value, "value+grad": run_value_and_grad}
    if grad_hess is not None:
        grad_hess_jit = jax.jit(positional(grad_hess))

        def run_grad_hess():
            with x64():
                grad, hess = grad_hess_jit(*arrays)
                return grad, hess.block_until_ready()

        tasks["grad+hess"] = run_grad_hess

    def convert(task, result):
        if task == "value":
            return result
        return tuple(r if isinstance(r, float) else np.asarray(r) for r in result)

    return Peer("jax", tasks, [value] + ([grad_hess] if grad_hess else []),
                f"jax.jit(jax.value_and_grad(value)) on jax.numpy; {threads_note}", convert)


def sklearn_peer(match_: Match, inputs: dict[str, np.ndarray], threads: int) -> Peer | None:
    """scikit-learn's ``_loss`` Cython kernels (value and gradient + Hessian), or None when it
    does not have the loss."""
    spec = match_.family.sklearn
    if spec is None:
        return None
    from sklearn._loss import loss as sklearn_loss

    roles = _roles(match_, inputs)
    y, raw = roles[match_.family.roles[0]], roles[match_.family.prediction]
    if y.dtype != raw.dtype:
        y = y.astype(raw.dtype)
    classes = raw.shape[1] if raw.ndim == 2 else 1
    loss = getattr(sklearn_loss, spec.class_name)(**spec.arguments(match_.params, classes))
    n = raw.shape[0]
    tasks = {"value": lambda: sklearn_value(loss, y, raw, threads),
             "grad+hess": lambda: sklearn_grad_hess(loss, y, raw, threads)}

    def convert(task, result):
        if task == "value":
            return spec.factor * float(result)
        grad, hess = result
        return spec.factor * grad / n, hess if spec.hessian_one else spec.factor * hess / n

    arguments = ", ".join(f"{k}={v!r}" for k, v in spec.arguments(match_.params, classes).items())
    scaled = f"N / {spec.factor:g}" if spec.factor != 1 else "N"
    note = (f"sklearn._loss.loss.{spec.class_name}({arguments}), n_threads={threads}; "
            f"per-sample gradient and Hessian: lossdsl's (of the mean) times {scaled}"
            + ("; Hessian set to 1 (the boosting convention; the exact one is 0)"
               if spec.hessian_one else ""))
    return Peer("sklearn", tasks, [sklearn_value, sklearn_grad_hess], note, convert,
                hessian_one=spec.hessian_one)


# --------------------------------------------------------------------------- the floor


def _floor_source(shapes: list[int], wrt: int, outputs: int) -> str:
    """A streaming kernel: reads every input once, writes ``outputs`` arrays shaped like input
    ``wrt`` and returns a sum (the least any fused kernel for the task must move).

    When an input is a matrix but ``wrt`` is a vector (say ``w*cce_logits(y, z)`` by ``w``),
    each row's matrix entries are summed and the outputs written once per row."""
    arguments = [f"a{i}" for i in range(len(shapes))] + [f"o{j}" for j in range(outputs)]
    lines = [f"def kernel({', '.join(arguments)}):", "    total = 0.0",
             "    for i in prange(a0.shape[0]):"]
    vectors = [f"a{i}[i]" for i, ndim in enumerate(shapes) if ndim == 1]
    lines.append(f"        c = {' + '.join(vectors) if vectors else '0.0'}")
    matrices = [i for i, ndim in enumerate(shapes) if ndim == 2]
    if matrices and shapes[wrt] == 2:
        lines.append(f"        for k in range(a{matrices[0]}.shape[1]):")
        terms = ["c"] + [f"a{i}[i, k]" for i in matrices]
        lines.append(f"            v = {' + '.join(terms)}")
        index, indent = "[i, k]", "            "
    elif matrices:  # outputs shaped like the vector wrt: one entry per row
        lines.append("        v = c")
        lines.append(f"        for k in range(a{matrices[0]}.shape[1]):")
        lines.append(f"            v += {' + '.join(f'a{i}[i, k]' for i in matrices)}")
        index, indent = "[i]", "        "
    else:
        index, indent = "[i]", "        "
        lines.append("        v = c")
    lines += [f"{indent}o{j}{index} = v" for j in range(outputs)]
    lines.append(f"{indent}total += v")
    lines.append("    return total")
    return "\n".join(lines)


_FLOOR_KERNELS: dict[tuple, Callable] = {}


def floor_kernel(shapes: list[int], wrt: int, outputs: int, parallel: bool) -> Callable:
    """The compiled floor kernel for inputs of these ranks (cached per process)."""
    from numba import njit, prange

    key = (tuple(shapes), wrt, outputs, parallel)
    if key not in _FLOOR_KERNELS:
        namespace: dict[str, Any] = {"prange": prange}
        exec(_floor_source(shapes, wrt, outputs), namespace)  # noqa: S102 (our own text)
        _FLOOR_KERNELS[key] = njit(parallel=parallel, fastmath={
            "reassoc", "contract", "arcp", "afn", "nsz"})(namespace["kernel"])
    return _FLOOR_KERNELS[key]


def floor_peer(inputs: dict[str, np.ndarray], wrt: str, target: str) -> Peer:
    """The memory floor: a streaming Numba kernel that reads the same inputs and writes the
    same outputs (none for the value, one array for value + gradient, two for gradient +
    Hessian) into freshly allocated arrays, as every call of lossdsl does."""
    names = list(inputs)
    arrays = [np.ascontiguousarray(inputs[name]) for name in names]
    x = inputs[wrt]
    arrays = [a.astype(x.dtype) if a.dtype != x.dtype else a for a in arrays]
    shapes = [a.ndim for a in arrays]
    parallel = target != "cpu"
    kernels = {outputs: floor_kernel(shapes, names.index(wrt), outputs, parallel)
               for outputs in (0, 1, 2)}

    def value():
        return kernels[0](*arrays)

    def value_and_grad():
        grad = np.empty_like(x)
        return kernels[1](*arrays, grad), grad

    def grad_hess():
        grad, hess = np.empty_like(x), np.empty_like(x)
        kernels[2](*arrays, grad, hess)
        return grad, hess

    return Peer("floor", {"value": value, "value+grad": value_and_grad,
                          "grad+hess": grad_hess}, [floor_peer],
                "streaming Numba kernel moving the same bytes (not the same numbers)",
                generated=_floor_source(shapes, names.index(wrt), 2))


# ----------------------------------------------------------------------------- building


def build_peers(match_: Match, inputs: dict[str, np.ndarray], target: str,
                include: tuple[str, ...] = ("numpy", "numba", "torch", "jax", "sklearn"),
                ) -> tuple[list[Peer], list[str]]:
    """The available peers for a match (``include``: which; "torch.compile" is opt-in, it
    compiles for seconds per loss), and a line for each one skipped and why."""
    threads = _threads(target)
    peers, skipped = [], []
    builders = {
        "numpy": lambda: numpy_peer(match_, inputs),
        "torch": lambda: torch_peer(match_, inputs, threads),
        "torch.compile": lambda: torch_peer(match_, inputs, threads, compiled=True),
        "jax": lambda: jax_peer(match_, inputs, threads),
        "sklearn": lambda: sklearn_peer(match_, inputs, threads),
        "numba": lambda: numba_peer(match_, inputs, target),
    }
    libraries = {"torch": "torch", "torch.compile": "torch", "jax": "jax",
                 "sklearn": "sklearn"}
    for name in include:
        try:
            peer = builders[name]()
        except ImportError:
            skipped.append(f"{name}: {libraries.get(name, name)} is not installed")
            continue
        if peer is None:
            skipped.append(f"{name}: has no {match_.family.name}")
        else:
            peers.append(peer)
    return peers, skipped


def _arrays(result) -> list[np.ndarray]:
    if isinstance(result, tuple):
        return [np.asarray(r, dtype=np.float64) for r in result]
    return [np.asarray(float(result))]


def check_peer(peer: Peer, reference: dict[str, Any], dtype) -> None:
    """Raise :class:`PeerMismatch` unless the peer computes lossdsl's numbers (``reference``:
    task -> lossdsl's result) to a tolerance set by the dtype."""
    rtol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-9
    for task, function in peer.tasks.items():
        ours = _arrays(reference[task])
        theirs = _arrays(peer.convert(task, function()))
        if len(ours) != len(theirs):
            raise PeerMismatch(f"{peer.name} {task}: {len(theirs)} results, lossdsl has "
                               f"{len(ours)}")
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if task == "grad+hess" and index == 1 and peer.hessian_one:
                if not np.all(b == 1.0):
                    raise PeerMismatch(f"{peer.name} {task}: Hessian is not 1")
                continue
            if a.shape != b.shape:
                raise PeerMismatch(f"{peer.name} {task}: shape {b.shape}, lossdsl's {a.shape}")
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            error = float(np.max(np.abs(a - b))) if a.size else 0.0
            if not error <= rtol * max(scale, 1e-300):
                what = ("value", "gradient") if task == "value+grad" else ("gradient", "Hessian")
                label = "value" if task == "value" else what[index]
                raise PeerMismatch(f"{peer.name} {task}: {label} differs from lossdsl's by "
                                   f"{error:.3g} (largest |lossdsl| {scale:.3g})")
