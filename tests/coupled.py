"""Checks shared by the tests of losses whose samples depend on the others of their group
(group reductions, pair sums): central differences of the total, one element at a time, and
the results of rows given in another order; and the width of the matrices the prelude
sweeps synthesize."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import mpmath
import numpy as np
import pytest

import lossdsl
from lossdsl.ir.node import toposort


def shuffled_group_ids(rng: np.random.Generator, n_groups: int, largest: int) -> np.ndarray:
    """Group ids of ``n_groups`` groups of 1 to ``largest`` samples, arbitrary integers,
    rows shuffled."""
    sizes = rng.integers(1, largest + 1, n_groups)
    q = np.repeat(rng.choice(1000, n_groups, replace=False), sizes)
    return q[rng.permutation(q.size)]


def central_differences(total: Callable[[np.ndarray], float], x: np.ndarray,
                        step: float = 1e-5, hessian_step: float = 1e-4
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The gradient and Hessian diagonal of scalar ``total`` at ``x`` (any shape) by central
    differences, each element perturbed alone (a sample's value depends on its group's
    others). The second difference takes a larger step: its rounding error is about
    eps |total| / step^2, 2e-3 at a total of 1000 with the gradient's step."""
    gradient, hessian = np.zeros_like(x), np.zeros_like(x)
    center = total(x)
    for index in np.ndindex(x.shape):
        values = []
        for h in (step, hessian_step):
            up, down = x.copy(), x.copy()
            up[index] += h
            down[index] -= h
            values.append((total(up), total(down)))
        (f_up, f_down), (g_up, g_down) = values
        gradient[index] = (f_up - f_down) / (2 * step)
        hessian[index] = (g_up - 2 * center + g_down) / hessian_step**2
    return gradient, hessian


def assert_results_follow_their_rows(fused: Callable[[dict], list], d: dict[str, np.ndarray],
                                     order: np.ndarray) -> None:
    """``fused(inputs)`` -> [value, gradient, Hessian diagonal]: the rows of ``d`` taken in
    ``order`` give the same value and the same per-row results, in that order."""
    value, gradient, hessian = fused(d)
    again = fused({k: v[order] for k, v in d.items()})
    assert again[0] == pytest.approx(value, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(again[1], gradient[order], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(again[2], hessian[order], rtol=1e-12, atol=1e-12)


def logit_shift_mp(y: np.ndarray, z: np.ndarray) -> float:
    """The b with sum sigmoid(z + b) = sum y (a query's maximum-likelihood logit shift), by
    bisection in mpmath to float64's precision, at a precision where terms of e^-(half the
    scores' span) still count next to 1 (scores 1e4 apart balance terms of e^-5000)."""
    target = float(y.sum())
    with mpmath.workdps(int(0.25 * float(z.max() - z.min())) + 40):
        scores = [mpmath.mpf(float(v)) for v in z]
        logit = mpmath.log(target / (len(scores) - target))
        low, high = logit - max(scores), logit - min(scores)  # each term below / above t/n
        while high - low > 1e-17 * (1 + abs(low)):
            middle = (low + high) / 2
            if target - sum(1 / (1 + mpmath.exp(-(v + middle))) for v in scores) > 0:
                low = middle
            else:
                high = middle
        return float((low + high) / 2)


def assert_simulated_cuda_matches_cpu(data: str, texts: list[str], wrt: str,
                                      atol: float) -> None:
    """In a subprocess (the simulator is chosen when Numba is imported): each loss of
    ``texts`` on the CUDA simulator gives the CPU kernels' value, gradient and Hessian of
    ``wrt``. ``data``: Python that makes ``data``, a dict of every input, from ``rng``."""
    script = f"""
import numpy as np, lossdsl
rng = np.random.default_rng(0)
{data}
for text in {texts!r}:
    cpu = lossdsl.compile(text)
    d = {{name: data[name] for name in cpu.inputs}}
    cpu = cpu.compute(True, ({wrt!r},), ({wrt!r},), d, None)
    gpu = lossdsl.compile(text, target="cuda").compute(True, ({wrt!r},), ({wrt!r},), d, None)
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol={atol!r})
print("ok")
"""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr


def columns_written(compiled: lossdsl.CompiledLoss) -> int:
    """How many columns the class indices written in a loss read (one more than the
    largest: ``yetirank``'s ``pick(u, 9)`` needs 10), 0 if it writes none: the synthesized
    matrices of the prelude sweeps are at least this wide."""
    written = [n.args[0].value for n in toposort([compiled.expression])
               if n.op == "class_index" and n.args[0].op == "const"]
    return int(max(written)) + 1 if written else 0
