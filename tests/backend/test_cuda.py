"""The CUDA target against the CPU target, on the same inputs.

Without an NVIDIA GPU, tests/conftest.py switches Numba to its CUDA simulator before numba
is imported, so these tests run on CI; on a machine with a GPU they run there unchanged.
The simulator runs every CUDA thread as a Python thread, so sizes stay small (N of about a
hundred; the launch helpers in ``lossdsl.backend.cuda.runtime`` use 2 blocks of 32 threads
there, so the grid-stride loops and the per-block sums are exercised).

``test_kernels_compile_for_real_gpus`` checks what the simulator cannot: that every
generated kernel type-checks and compiles to PTX for the real CUDA target, and that float32
kernels compute in float32. It needs numba-cuda with NVVM/NVRTC (the CUDA toolkit wheels),
not a GPU.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from coupled import columns_written
from numba import cuda
from sweeps import SAMPLING, within_domains

import lossdsl
from lossdsl import binding, catalog
from lossdsl.backend.cuda import runtime as rt
from lossdsl.errors import LossDomainError, LossError

if not rt.SIMULATOR and not cuda.is_available():
    pytest.fail("target='cuda' tests: no usable CUDA GPU and NUMBA_ENABLE_CUDASIM is not 1 "
                "(tests/conftest.py sets it when nvidia-smi lists no GPU)", pytrace=False)

# Simulated kernels compute with NumPy scalars, which warn where a GPU silently gives IEEE
# inf/nan (e.g. in the branch a where() does not take); the results are compared anyway.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|divide by zero|overflow) encountered:RuntimeWarning")

N = 96  # samples: more than the simulator's 2 x 32 threads, so each thread strides
K = 5  # classes: narrow rows, one row per thread
ENTRIES = {entry.name: entry for entry in catalog.entries()}
# On a GPU: what the CUDA issue asks of the whole library (relative to the largest result).
# The simulator computes with NumPy scalars and Python's math, whose float32 rounding and
# special functions differ more from the CPU kernels than a GPU's libdevice does.
TOLERANCE = ({np.float64: 1e-7, np.float32: 2e-3} if rt.SIMULATOR
             else {np.float64: 1e-12, np.float32: 1e-5})
#: Tests of sizes only a real GPU runs in reasonable time (skipped under the simulator).
real_gpu = pytest.mark.skipif(rt.SIMULATOR, reason="sizes for a real GPU; the simulator runs "
                              "each thread in Python")


def fused(compiled: lossdsl.CompiledLoss, inputs: dict[str, Any], wrt: tuple[str, ...],
          hessians: tuple[str, ...] = (), sample_weight: Any = None) -> list:
    """[value, *gradients, *Hessian diagonals] from ONE fused kernel.

    ``_compute`` is what every public method (``__call__``, ``value_and_grad``, ``hessian``,
    ``grad_and_hessian``) calls with a subset of these outputs; asking for all of them at
    once compiles one kernel per case instead of two, which halves the CPU compile time of
    this file, and tests the fully fused kernel.
    """
    return compiled.compute(True, wrt, hessians, inputs, sample_weight)


def host(value: Any) -> Any:
    """A result as NumPy (device arrays are copied back) or a float."""
    if binding.is_device_array(value):
        return rt.as_device_array(value).copy_to_host()
    return value


def assert_close(actual: Any, expected: Any, dtype: type, what: str,
                 slack: float = 0.0) -> None:
    """``actual`` within TOLERANCE of ``expected``, relative to the largest finite expected
    value, or within ``slack`` (absolute)."""
    actual, expected = np.asarray(host(actual), dtype=np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    tolerance = TOLERANCE[dtype]
    finite = expected[np.isfinite(expected)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tolerance,
                               atol=max(tolerance * max(scale, 1e-30), slack),
                               equal_nan=True, err_msg=what)


def float32_conditioning(expected32: list, expected64: list) -> list[float]:
    """Per result, four times the largest distance of the CPU's float32 result from its
    float64 one: where a loss is ill-conditioned in float32 on an input, a GPU's float32
    result (which contracts multiply-adds into FMAs) rounds differently, and is held to the
    float64 result within this distance. Seen on an H200: poly1's gradient on inputs outside
    [0, 1] 0.0147 from float64 where the CPU's float32 is 0.0054 away; tversky_rows' Hessian
    near a row whose denominator nearly cancels 1.2 above float64 where the CPU's float32 is
    0.85 below (the two err on opposite sides, so neither is a reference for the other)."""
    return [4.0 * float(np.nanmax(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)),
                                  initial=0.0))
            for a, b in zip(expected32, expected64)]


def synthesize(compiled: lossdsl.CompiledLoss, kind: str, n: int = N, k: int = K,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Float64 inputs for ``compiled``, shaped by its input ranks, labels as integers.

    ``kind="wide"`` draws from N(0, 1.5) (both signs, both branches of kinks); ``"unit"``
    draws from (0.05, 0.95), inside the domain of every loss on probabilities or rates;
    ``"classes"`` draws the vectors as "wide" draws them but as the labels 0, 1, 2 (pairs
    of equal labels: ntxent's positive pairs, which its mean counts).
    """
    rng = np.random.default_rng(seed)
    ranks = compiled.default_ranks()
    labels = compiled.label_inputs()
    tables = compiled.table_inputs()
    k = max(k, columns_written(compiled))  # yetirank reads its draws' columns 0 to 9
    inputs = {}
    for name in compiled.inputs:
        if name in labels:
            inputs[name] = rng.integers(0, k, n)
            continue
        if name in compiled.group_inputs():  # query ids, in no order: groups of any size
            inputs[name] = rng.integers(0, 7, n)
            continue
        if name in compiled.class_vector_inputs():  # levels, class weights: (K,), sorted
            inputs[name] = np.sort(rng.uniform(0.05, 0.95, k))
            continue
        if name in tables:  # a K x K lookup table (a cost matrix)
            inputs[name] = rng.uniform(0.0, 5.0, (k, k))
            continue
        shape = (n,) if ranks[name] == 1 else (n, k)
        if kind == "classes" and ranks[name] == 1:
            inputs[name] = rng.integers(0, 3, n).astype(np.float64)
            continue
        inputs[name] = (rng.normal(0.0, 1.5, shape) if kind in ("wide", "classes")
                        else rng.uniform(0.05, 0.95, shape))
    return within_domains(compiled, inputs, rng)


def cast(inputs: dict[str, np.ndarray], dtype: type) -> dict[str, np.ndarray]:
    return {name: (a.astype(dtype) if a.dtype.kind == "f" else a) for name, a in inputs.items()}


@functools.cache
def library_loss(name: str, target: str = "cpu") -> lossdsl.CompiledLoss:
    """The prelude loss ``name`` compiled for ``target`` (reduction "mean"), one object per
    loss and target for the whole module: the sweep, its input search and the PTX check's
    choice of losses share its kernels instead of differentiating and generating them again."""
    return lossdsl.compile(ENTRIES[name].call_expression(), target=target)


_PRELUDE_CASES: dict[tuple[str, type], tuple] = {}


def prelude_case(name: str, dtype: type | None = None
                 ) -> tuple[dict[str, np.ndarray], tuple[str, ...], tuple[str, ...]]:
    """(float64 inputs, inputs to differentiate, inputs to take the Hessian of) for a prelude
    loss: "wide" inputs where the CPU target's results in ``dtype`` are finite on them, else
    "unit" ones (else those finite in float64).

    The search runs the CPU kernel the sweep then compares with (float32 for a float32 case),
    so a float32 case compiles no float64 kernel. Without ``dtype`` (callers that need the
    inputs' shapes and the derivatives asked for, not a comparison) any case found already
    is returned, else the float64 one."""
    if dtype is None:
        found = [case for (case_name, _), case in _PRELUDE_CASES.items() if case_name == name]
        if found:
            return found[0]
        dtype = np.float64
    if (name, dtype) in _PRELUDE_CASES:
        return _PRELUDE_CASES[name, dtype]
    entry = ENTRIES[name]
    cpu = library_loss(name)
    constants = cpu.constant_inputs()
    wrt = tuple(n for n in cpu.inputs if n not in constants)
    prediction = entry.prediction() if entry.prediction() in wrt else wrt[-1]
    for kind in ("wide", "unit", "classes"):
        inputs = synthesize(cpu, kind)
        for hessians in ((prediction,), ()):
            try:
                results = fused(cpu, cast(inputs, dtype), wrt, hessians)
            except LossDomainError as error:  # no positive pairs for ntxent's mean
                if "count_as" not in str(error):
                    raise
                break
            except LossError as error:  # digamma's derivative has no derivative in lossdsl
                if "has no derivative" not in str(error):
                    raise
                continue
            if all(np.all(np.isfinite(r)) for r in results):
                _PRELUDE_CASES[name, dtype] = (inputs, wrt, hessians)
                return _PRELUDE_CASES[name, dtype]
            break
    if dtype != np.float64:
        _PRELUDE_CASES[name, dtype] = prelude_case(name, np.float64)
        return _PRELUDE_CASES[name, dtype]
    raise AssertionError(f"{name}: found no inputs on which the CPU target is finite")


#: The losses the CI sweep simulates (in float32): every other loss by name.
_SIMULATED_ON_CI = frozenset(sorted(ENTRIES)[1::2])


def _prelude_sweep() -> list:
    """(loss, dtype) pairs: every library loss in both dtypes; on CI (CI=true, without
    LOSSDSL_FULL_SWEEPS=1) every other loss by name (``_SIMULATED_ON_CI``), in float32: the
    losses whose float32 kernels tests/test_library.py's CI sweep does not check (it takes the
    others), because the simulator runs each GPU thread in Python and the full sweep is
    minutes of CI time. The constructs of the rest are simulated in float32 and float64 by the
    tests below (every primitive, class rows, reductions) and compiled for real GPUs by
    ``test_kernels_compile_for_real_gpus``."""
    dtypes = (np.float64, np.float32)
    names = sorted(ENTRIES)
    if SAMPLING:
        pairs = [(name, np.float32) for name in names if name in _SIMULATED_ON_CI]
    else:
        pairs = [(name, dtype) for name in names for dtype in dtypes]
    return [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}")
            for name, dtype in pairs]


@pytest.mark.parametrize("name, dtype", _prelude_sweep())
def test_prelude_loss_matches_cpu(name, dtype):
    """Every loss of the library: value, gradients and Hessian diagonal in one fused kernel."""
    inputs64, wrt, hessians = prelude_case(name, dtype)
    inputs = cast(inputs64, dtype)
    expected = fused(library_loss(name), inputs, wrt, hessians)
    actual = fused(library_loss(name, "cuda"), inputs, wrt, hessians)
    labels = ["value", *(f"grad {w}" for w in wrt), *(f"hessian {h}" for h in hessians)]
    slack = [0.0] * len(labels)
    if dtype == np.float32 and not rt.SIMULATOR:
        expected64 = fused(library_loss(name), inputs64, wrt, hessians)
        slack = float32_conditioning(expected, expected64)
        expected = [e64 if s else e for e, e64, s in zip(expected, expected64, slack)]
    for label, a, e, s in zip(labels, actual, expected, slack):
        assert isinstance(a, float) or host(a).dtype == dtype, f"{name}: {label} lost its dtype"
        assert_close(a, e, dtype, f"{name}: {label}", s)


def _regression_and_classes(seed: int = 1):
    rng = np.random.default_rng(seed)
    return dict(y=rng.normal(size=N), p=rng.normal(size=N), z=rng.normal(size=(N, K)),
                label=rng.integers(0, K, N), weight=rng.uniform(0.1, 2.0, N))


def _reduction_sweep() -> list:
    """(expression, reduction, weighted): every reduction with and without weights for an
    elementwise and a class-row loss; on CI (CI=true without LOSSDSL_FULL_SWEEPS=1) half of
    them, each reduction weighted for one loss and unweighted for the other (each case
    compiles a CPU kernel of its own)."""
    expressions = ("huber(y, p, 0.5)", "sparse_cce_logits(y, z)")
    reductions = ("mean", "sum", "none")
    return [pytest.param(expression, reduction, weighted,
                         id=f"{expression}-{reduction}-{'weighted' if weighted else 'unweighted'}")
            for index, expression in enumerate(expressions)
            for number, reduction in enumerate(reductions) for weighted in (False, True)
            if not SAMPLING or (index + number + weighted) % 2 == 0]


@pytest.mark.parametrize("expression, reduction, weighted", _reduction_sweep())
def test_reductions_and_sample_weights(expression, reduction, weighted):
    data = _regression_and_classes()
    inputs = ({"y": data["y"], "p": data["p"]} if "huber" in expression
              else {"y": data["label"], "z": data["z"]})
    wrt = ("p",) if "huber" in expression else ("z",)
    weight = data["weight"] if weighted else None
    expected = fused(lossdsl.compile(expression, reduction=reduction), inputs, wrt, wrt, weight)
    actual = fused(lossdsl.compile(expression, target="cuda", reduction=reduction), inputs, wrt,
                   wrt, weight)
    for label, a, e in zip(("value", "gradient", "hessian"), actual, expected):
        assert_close(a, e, np.float64, f"{expression} {reduction}: {label}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_two_loops_in_two_passes(dtype):
    """A regulariser over its own vector (a second loop) and a weighted mean (whose 1/sum(w)
    needs a pass of its own) in one loss."""
    rng = np.random.default_rng(2)
    inputs = cast({"y": rng.normal(size=N), "p": rng.normal(size=N),
                   "w": rng.normal(size=7)}, dtype)
    weight = rng.uniform(0.1, 2.0, N).astype(dtype)
    expression = "huber(y, p, 1.0) + 0.1*l1(w) + 0.01*l2(w)"
    expected = fused(lossdsl.compile(expression, reduction="weighted_mean"), inputs, ("p", "w"),
                     ("p", "w"), weight)
    compiled = lossdsl.compile(expression, target="cuda", reduction="weighted_mean")
    actual = fused(compiled, inputs, ("p", "w"), ("p", "w"), weight)
    assert "loop2" in compiled.source  # sum(w) pass, then the samples and the regulariser
    for label, a, e in zip(("value", "grad p", "grad w", "hess p", "hess w"), actual, expected):
        assert_close(a, e, dtype, label)


def test_device_weights_that_total_zero_are_refused_under_weighted_mean():
    """Weights on the device are not read by the host before the call, so a weighted mean
    whose weights total 0 was NaN (host weights were already refused): the kernel returns
    the weights' total, which binding checks."""
    y, p = np.arange(6.0), np.zeros(6)
    compiled = lossdsl.compile("mse(y, p)", target="cuda", reduction="weighted_mean")
    for call in (compiled, lambda **a: compiled.grad("p", **a)):
        with pytest.raises(LossDomainError, match="sample_weight sums to 0.0"):
            call(y=y, p=p, sample_weight=cuda.to_device(np.zeros(6)))
    weight = np.array([1.0, 2.0, 0.0, 1.0, 0.0, 3.0])
    np.testing.assert_allclose(compiled(y=y, p=p, sample_weight=cuda.to_device(weight)),
                               np.sum(weight * y**2) / weight.sum(), rtol=1e-12)
    labels = cuda.to_device(np.array([0, -100, 2, 1]))
    ignoring = lossdsl.compile("sparse_cce_logits(y, z)", target="cuda",
                               reduction="weighted_mean", ignore_index=-100)
    with pytest.raises(LossDomainError, match="samples not ignored sums to 0.0"):
        ignoring(y=labels, z=np.ones((4, 3)),
                 sample_weight=cuda.to_device(np.array([0.0, 1.0, 0.0, 0.0])))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_nested_sums_dice(dtype):
    """A Dice loss is a ratio of sums: its gradient needs them, so it runs in two passes."""
    rng = np.random.default_rng(3)
    inputs = cast({"y": rng.uniform(size=N).round(), "p": rng.uniform(size=N)}, dtype)
    expression = "1 - (2*sum(y*p) + 1)/(sum(y) + sum(p) + 1)"
    expected = fused(lossdsl.compile(expression, reduction="sum"), inputs, ("p",), ("p",))
    compiled = lossdsl.compile(expression, target="cuda", reduction="sum")
    actual = fused(compiled, inputs, ("p",), ("p",))
    assert "loop1" in compiled.source and "rt.fetch(red0, blocks0)" in compiled.source
    for label, a, e in zip(("value", "gradient", "hessian"), actual, expected):
        assert_close(a, e, dtype, label)


# Every primitive and operator the printer knows, and so every helper (h_lgamma, h_trigamma in
# the Hessian, ...), in one loss: the prelude need not use them all.
PRIMITIVES = ("lgamma(p*p + 1) + log_sigmoid(p) + softplus(p) + tanh(p) + sin(p) + cos(p) + erf(p)"
              " + min(p, 1) + max(y, p) + log1p(p*p) + expm1(-p*p) + sqrt(p*p + 1) + (p*p)^y"
              " + sign(p)*y + abs(p - y) + where(p < 0 and y > 0 or not p > 1, p, y)"
              # the stable tails; 8p - 8 reaches log_ndtr's series (x <= -10), digamma's
              # Hessian is tetragamma
              " + erfc(p) + log_ndtr(8*p - 8) + logaddexp(p, y) + log1mexp(-p*p - y)"
              " + xlog1py(y, p*p) + digamma(p*p + 1)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_every_primitive(dtype):
    rng = np.random.default_rng(12)
    inputs = cast({"y": rng.uniform(0.1, 1.0, N), "p": rng.uniform(-2.0, 2.0, N)}, dtype)
    expected = fused(lossdsl.compile(PRIMITIVES), inputs, ("y", "p"), ("p",))
    actual = fused(lossdsl.compile(PRIMITIVES, target="cuda"), inputs, ("y", "p"), ("p",))
    for label, a, e in zip(("value", "grad y", "grad p", "hessian p"), actual, expected):
        assert_close(a, e, dtype, label)


def test_many_sums_in_one_pass():
    """More sums than one shared-memory reduction takes (8): reduced in groups."""
    rng = np.random.default_rng(13)
    inputs = {"y": rng.uniform(size=N), "p": rng.uniform(0.5, 1.5, N)}
    expression = " + ".join(f"sum(y*p^{k})/sum(p^{k} + y)" for k in range(1, 7))
    compiled = lossdsl.compile(expression, target="cuda", reduction="sum")
    value = compiled(**inputs)
    assert compiled.source.count("red[cuda.blockIdx.x, ") == 12
    assert_close(value, lossdsl.compile(expression, reduction="sum")(**inputs), np.float64,
                 "value")


def _class_losses() -> list[str]:
    """Prelude losses over class rows, with a row reduction (logsumexp, softmax, rowsum,
    sparsemax's threshold)."""
    wanted = ["sparse_cce_logits", "cce_logits", "categorical_focal_logits", "cce",
              "multi_margin", "expected_cost", "expected_cost_rows", "multiclass_sparsemax"]
    return [name for name in wanted if name in ENTRIES]


def _class_sweep() -> list:
    """(loss, dtype) of the class-row losses: both dtypes, except on CI (CI=true without
    LOSSDSL_FULL_SWEEPS=1), where each loss runs in the dtype whose CPU kernel this module
    has compiled already: float32 for the losses the prelude sweep simulates, float64 for the
    others (``prelude_case`` finds their inputs in float64), so that no CPU kernel is compiled
    for this test alone (a cold compile is most of its time). The class losses fall in both
    halves, so both dtypes still run."""
    dtypes = (np.float64, np.float32)
    return [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}")
            for name in _class_losses() for dtype in dtypes
            if not SAMPLING or (dtype == np.float32) == (name in _SIMULATED_ON_CI)]


@pytest.mark.parametrize("name, dtype", _class_sweep())
def test_block_per_row_kernels(name, dtype, monkeypatch):
    """Wide rows get a block each: classes split over its threads, block reductions."""
    width = 2 * rt.ROW_THREADS + 3  # several classes per thread, and idle threads
    launches = []
    monkeypatch.setattr(rt, "ROW_BLOCK_MIN_WIDTH", width)
    monkeypatch.setattr(rt, "row_grid", lambda rows: launches.append(rows) or min(rows, 2))
    expression = ENTRIES[name].call_expression()
    cpu = library_loss(name)  # its kernel in this dtype: the sweep's or prelude_case's
    _, wrt, hessians = prelude_case(name)
    inputs = cast(synthesize(cpu, "unit", n=12, k=width, seed=4), dtype)
    expected = fused(cpu, inputs, wrt, hessians)
    actual = fused(lossdsl.compile(expression, target="cuda"), inputs, wrt, hessians)
    assert launches, "the block-per-row kernel did not run"
    for label, a, e in zip(("value", *wrt, *hessians), actual, expected):
        assert_close(a, e, dtype, f"{name}: {label}")


@pytest.mark.parametrize("block_rows", [False, True], ids=["thread-per-row", "block-per-row"])
def test_nan_in_a_row_propagates(block_rows, monkeypatch):
    """A NaN logit makes its row's logsumexp NaN on every target (rowmax keeps NaN)."""
    width = 2 * rt.ROW_THREADS + 3
    monkeypatch.setattr(rt, "ROW_BLOCK_MIN_WIDTH", 0 if block_rows else 10**9)
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, width))
    z[2, rt.ROW_THREADS + 1] = np.nan  # a class handled by thread 1 of the block
    inputs = {"y": rng.integers(0, width, 6), "z": z}
    expression = "sparse_cce_logits(y, z)"
    expected = fused(lossdsl.compile(expression, reduction="none"), inputs, ("z",))
    actual = fused(lossdsl.compile(expression, target="cuda", reduction="none"), inputs, ("z",))
    assert np.isnan(expected[0][2]) and np.isnan(host(actual[0])[2])
    for label, a, e in zip(("values", "gradient"), actual, expected):
        assert_close(a, e, np.float64, label)


def test_grid_stride_loop_with_one_block(monkeypatch):
    """One block for many more samples than threads: each thread walks the grid stride."""
    monkeypatch.setattr(rt, "max_blocks", lambda: 1)
    rng = np.random.default_rng(6)
    n = 3 * rt.THREADS + 5
    inputs = {"y": rng.normal(size=n), "p": rng.normal(size=n)}
    expected = fused(lossdsl.compile("log_cosh(y, p)"), inputs, ("p",), ("p",))
    actual = fused(lossdsl.compile("log_cosh(y, p)", target="cuda"), inputs, ("p",), ("p",))
    for label, a, e in zip(("value", "gradient", "hessian"), actual, expected):
        assert_close(a, e, np.float64, label)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("extra", [0, 1, 3], ids=lambda e: f"plus{e}")
def test_unrolled_samples_per_thread(monkeypatch, extra, weighted):
    """Elementwise kernels read UNROLL samples' inputs per step: whole steps, then the
    remainder one sample at a time (``extra`` samples past the last whole step)."""
    from lossdsl.backend.cuda.codegen import UNROLL

    monkeypatch.setattr(rt, "max_blocks", lambda: 1)
    rng = np.random.default_rng(9)
    n = 2 * UNROLL * rt.THREADS + extra
    inputs = {"y": rng.normal(size=n), "p": rng.normal(size=n)}
    weight = rng.uniform(0.5, 2.0, n) if weighted else None
    expected = lossdsl.compile("huber(y, p, 0.5)").compute(True, ("y", "p"), ("p",), inputs,
                                                           weight)
    compiled = lossdsl.compile("huber(y, p, 0.5)", target="cuda")
    actual = compiled.compute(True, ("y", "p"), ("p",), inputs, weight)
    assert "UNROLL * stride" in compiled.source
    for label, a, e in zip(("value", "grad y", "grad p", "hessian"), actual, expected):
        assert_close(a, e, np.float64, label)


def test_block_sums_of_a_larger_call_are_not_read():
    """Each block leaves its sums in its row of a buffer (on a GPU kept between calls and
    never zeroed): a call over fewer blocks than the one before reads only its own rows, and
    the same inputs give the same sum bit for bit (no atomics: the order is fixed)."""
    compiled = lossdsl.compile("mse(y, p)", target="cuda", reduction="sum")
    rng = np.random.default_rng(21)
    size = rt.max_blocks() * rt.THREADS
    large = {"y": rng.normal(size=size), "p": rng.normal(size=size)}
    small = {"y": np.array([1.0, 2.0]), "p": np.array([0.0, 0.0])}
    first = compiled(**large)
    assert compiled(**small) == 5.0
    assert compiled(**large) == first
    assert_close(first, lossdsl.compile("mse(y, p)", reduction="sum")(**large), np.float64,
                 "value")


@real_gpu
def test_calls_from_two_threads_keep_their_sums():
    """Two host threads calling at once each get their own inputs' sum: the block-sum
    buffers are per thread. (GPU only: the simulator swaps module globals while a kernel
    runs, so its launches from two threads at once interfere.)"""
    import threading

    compiled = lossdsl.compile("mse(y, p)", target="cuda", reduction="sum")
    results: dict[int, list[float]] = {}

    def work(offset: int) -> None:
        size = 2 * rt.THREADS + 1
        inputs = {"y": np.full(size, float(offset)), "p": np.zeros(size)}
        results[offset] = [compiled(**inputs) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(offset,)) for offset in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    size = 2 * rt.THREADS + 1
    assert results == {1: [size * 1.0] * 20, 2: [size * 4.0] * 20}


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    rng = np.random.default_rng(7)
    inputs = {"y": rng.normal(size=n), "p": rng.normal(size=n)}
    with np.errstate(all="ignore"):
        expected = fused(lossdsl.compile("mse(y, p)"), inputs, ("p",))
        actual = fused(lossdsl.compile("mse(y, p)", target="cuda"), inputs, ("p",))
    for label, a, e in zip(("value", "gradient"), actual, expected):
        assert_close(a, e, np.float64, label)


def test_numpy_in_numpy_out_any_layout():
    """NumPy inputs (strided, Fortran-ordered) are copied over; results come back as NumPy."""
    rng = np.random.default_rng(8)
    z = np.asfortranarray(rng.normal(size=(N, K)))
    soft = rng.uniform(size=(2 * N, K))[::2]
    compiled = lossdsl.compile("cce_logits(y, z)", target="cuda")
    value, gradient = compiled.value_and_grad("z", y=soft, z=z)
    expected_value, expected_gradient = lossdsl.compile("cce_logits(y, z)").value_and_grad(
        "z", y=soft, z=z)
    assert isinstance(value, float) and type(gradient) is np.ndarray
    assert_close(value, expected_value, np.float64, "value")
    assert_close(gradient, expected_gradient, np.float64, "gradient")


@real_gpu
def test_small_launches_do_not_warn():
    """A grid-stride launch over a few samples uses a few blocks on purpose: Numba's
    low-occupancy warning is not shown for lossdsl's launches (the loss's, the label check's),
    which would print it on every call of a small batch."""
    import warnings

    from numba.core.errors import NumbaPerformanceWarning

    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target="cuda")
    labels, scores = cuda.to_device(np.array([0, 2, 1])), cuda.to_device(np.ones((3, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumbaPerformanceWarning)
        compiled.value_and_grad("z", y=labels, z=scores)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_device_arrays_stay_on_the_device(dtype):
    rng = np.random.default_rng(9)
    y, p = rng.normal(size=N).astype(dtype), rng.normal(size=N).astype(dtype)
    weight = rng.uniform(0.1, 2.0, N).astype(dtype)
    d_y, d_p, d_weight = cuda.to_device(y), cuda.to_device(p), cuda.to_device(weight)
    compiled = lossdsl.compile("huber(y, p, 0.7)", target="cuda")
    value, gradient = compiled.value_and_grad("p", y=d_y, p=d_p, sample_weight=d_weight)
    hessian = compiled.hessian("p", y=d_y, p=d_p, sample_weight=d_weight)
    assert isinstance(value, float)
    assert binding.is_device_array(gradient) and binding.is_device_array(hessian)
    assert gradient.dtype == dtype and gradient.shape == (N,)
    cpu = lossdsl.compile("huber(y, p, 0.7)")
    expected_value, expected_gradient = cpu.value_and_grad("p", y=y, p=p, sample_weight=weight)
    assert_close(value, expected_value, dtype, "value")
    assert_close(gradient, expected_gradient, dtype, "gradient")
    assert_close(hessian, cpu.hessian("p", y=y, p=p, sample_weight=weight), dtype, "hessian")
    values = lossdsl.compile("huber(y, p, 0.7)", target="cuda", reduction="none")(y=d_y, p=d_p)
    assert binding.is_device_array(values) and values.dtype == dtype


def test_device_and_host_inputs_mixed():
    """Labels on the device, logits on the host: outputs on the device; int labels kept."""
    data = _regression_and_classes(10)
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target="cuda")
    value, gradient = compiled.value_and_grad("z", y=cuda.to_device(data["label"]), z=data["z"])
    expected_value, expected_gradient = lossdsl.compile("sparse_cce_logits(y, z)").value_and_grad(
        "z", y=data["label"], z=data["z"])
    assert binding.is_device_array(gradient)
    assert_close(value, expected_value, np.float64, "value")
    assert_close(gradient, expected_gradient, np.float64, "gradient")


@pytest.mark.parametrize("bad", [-1, K, 1.5, np.nan])
def test_bad_labels_on_the_device_are_reported(bad):
    data = _regression_and_classes(11)
    labels = data["label"].astype(np.float64)
    labels[17] = bad
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target="cuda")
    with pytest.raises(LossDomainError, match="at index 17"):
        compiled(y=cuda.to_device(labels), z=cuda.to_device(data["z"]))


def test_cpu_targets_refuse_device_arrays():
    d_y = cuda.to_device(np.zeros(4))
    with pytest.raises(LossError, match="target='cuda'"):
        lossdsl.compile("mse(y, p)")(y=d_y, p=np.zeros(4))


def test_pair_sums_refuse_device_arrays_and_say_to_pass_host_arrays():
    """The partners of each sample are laid out on the host from the group ids."""
    q = np.array([0, 0, 1, 1])
    loss = lossdsl.compile("ranknet(y, s, q)", target="cuda")
    with pytest.raises(LossError, match="laid out on the host: pass host arrays"):
        loss(y=cuda.to_device(np.array([1.0, 0.0, 2.0, 1.0])), s=cuda.to_device(np.zeros(4)),
             q=cuda.to_device(q))
    assert loss(y=np.array([1.0, 0.0, 2.0, 1.0]), s=np.zeros(4), q=q) == pytest.approx(
        np.log(2.0) / 2)  # two pairs of log(2), over 4 samples


_PTX_CHECK = textwrap.dedent('''
    """Compile lossdsl's CUDA kernels for a real GPU (compute capability 8.0) without one."""
    import json, re, sys, types
    import numpy as np
    import numba
    import numba.cuda.dispatcher
    from numba import cuda
    CC = (8, 0)
    try:
        cuda.compile_ptx(lambda x: x + 1, (numba.float32,), device=True, cc=CC)
    except Exception as error:  # no NVVM/NVRTC (the CUDA toolkit wheels)
        print(f"SKIP {type(error).__name__}: {error}".splitlines()[0])
        sys.exit(3)
    # Device functions ask the current GPU for its compute capability; there is none here.
    numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)
    import lossdsl
    import lossdsl.cache
    from lossdsl.backend.cuda import runtime as rt
    # no device memory either: host arrays stand in (the kernels' argument types are the same)
    rt.to_device, rt.output = np.ascontiguousarray, (lambda a: (a, None))
    rt.scan_buffer = lambda length, dtype=np.float64: np.empty(length, dtype)  # no device
    # sums over risk sets and group totals: the host's, on the host arrays
    rt.order = lambda keys, strata: rt.key_order(keys, strata)
    rt.scan = lambda name, values, order: order.scan(name, values)
    rt.partials, rt.max_blocks = (lambda k: np.zeros((1, k))), (lambda: 1)
    rt.in_context = lambda run: run  # no context to attach
    rt.fetch = lambda block_sums, blocks: block_sums[0]
    rt.missing_device = lambda: None  # nothing runs on a device: launches compile to PTX
    kernels = {}

    class Compile:
        """Stands in for a kernel: a launch compiles it (and its block-per-row twin) to PTX."""
        def __init__(self, module, name):
            self.module, self.name = module, name
        def __getitem__(self, configuration):
            def launch(*args):
                signature = tuple(numba.typeof(a) for a in args)
                twin = ("rows" if self.name.startswith("loop") else "loop") + self.name[4:]
                for name in (self.name, twin):
                    kernel = self.module.__dict__.get("_kernel_" + name)
                    if kernel is not None:
                        kernels[name] = cuda.compile_ptx(kernel.py_func, signature, cc=CC)[0]
            return launch

    load_module = lossdsl.cache.load_module
    def load_for_ptx(source):
        module = load_module(source)
        for name in list(vars(module)):
            if re.fullmatch(r"(loop|rows)[0-9]+", name):
                setattr(module, "_kernel_" + name, getattr(module, name))
                setattr(module, name, Compile(module, name))
        return module
    lossdsl.cache.load_module = load_for_ptx

    failures = []
    for case in json.loads(sys.argv[1]):
        expression, dtype = case["expression"], np.dtype(case["dtype"])
        inputs = {n: (np.asarray(v, dtype) if n not in case["labels"] else np.asarray(v))
                  for n, v in case["inputs"].items()}
        try:
            compiled = lossdsl.compile(expression, target="cuda")
            compiled.compute(True, tuple(case["wrt"]), tuple(case["hessians"]), inputs, None)
        except lossdsl.LossDomainError as error:
            # nothing ran: a mean's count that the kernels compute (ntxent's positive pairs)
            # reads 0 after its kernels compiled
            if "count_as" not in str(error):
                failures.append(f"{expression} {dtype}: {type(error).__name__}: {error}")
                continue
        except Exception as error:
            failures.append(f"{expression} {dtype}: {type(error).__name__}: {error}")
            continue
        if dtype != np.float32:
            continue
        namespace = compiled.kernels()[0].run.__globals__
        for name, function in namespace.items():  # float32 kernels compute in float32
            if not name.startswith(("body", "rowbody", "h_", "block_")):
                continue
            for compiled_function in getattr(function, "overloads", {}).values():
                typemap = compiled_function.type_annotation.typemap
                # literals are float64 until T(...) converts them at compile time; so are
                # reads of the float64 buffers of sums over samples (risk sets, group
                # totals: accumulated in float64 on purpose), which T(...) converts as read
                wide = sorted(v for v, t in typemap.items() if str(t) == "float64"
                              and not re.match(r"[$](const|[0-9]+load_attr|[0-9]+unary_neg"
                                               r"|[0-9]+binary_subscr)", v))
                if wide:
                    failures.append(f"{expression} float32: float64 values in {name}: {wide}")
    print(json.dumps({"failures": failures}))
''')


# What a kernel's typing depends on: the math functions, helpers and operators its bodies
# use, matrix and label reads, block-per-row loops, multi-pass fetches, loops left early
# (sparsemax's threshold).
_FEATURES = re.compile(r"math\.\w+|\bh_\w+|\*\*|\bint\(|\babs\(|\bif\b|\band\b|\bor\b"
                       r"|\[i, k\]|\[i\]|rt\.fetch|rows\d|\bbreak\b")


#: A group's column totals of (N, K) rows: what the per-image losses add to the other
#: losses' features, in two passes (theirs take over a minute of NVVM compiles).
GROUP_TOTALS = ("sum(rowsum(y*log1p(groupsum(p*p, g))))",
                {"y": [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], "p": [[0.5, -1.0], [2.0, 0.25],
                                                                  [1.5, 1.0]],
                 "g": [3, 1, 3]})
_COVERED_BY_GROUP_TOTALS = frozenset(
    f"{loss}_images{form}" for loss in ("dice", "tversky", "generalized_dice")
    for form in ("", "_logits"))


@functools.cache
def _ptx_case(name: str) -> tuple[dict[str, np.ndarray], tuple[str, ...], tuple[str, ...]]:
    """(float64 inputs, inputs to differentiate, inputs to take the Hessian of) with which the
    PTX check compiles the prelude loss ``name``: "wide" inputs inside its domains and the
    Hessian of its prediction (unless lossdsl has none). Nothing runs there, so unlike
    ``prelude_case`` no CPU kernel is compiled to find inputs on which the results are
    finite: only the inputs' types reach a kernel's signature (choosing the covering losses
    from every loss's ``prelude_case`` took most of this test's cold time)."""
    compiled = library_loss(name, "cuda")
    constants = compiled.constant_inputs()
    wrt = tuple(n for n in compiled.inputs if n not in constants)
    prediction = ENTRIES[name].prediction()
    prediction = prediction if prediction in wrt else wrt[-1]
    inputs = synthesize(compiled, "wide")
    try:
        _ptx_kernel_source(name, inputs, wrt, (prediction,))
    except LossError as error:  # tetragamma's derivative: no Hessian of its loss
        if "has no derivative" not in str(error):
            raise
        return inputs, wrt, ()
    return inputs, wrt, (prediction,)


def _ptx_kernel_source(name: str, inputs: dict[str, np.ndarray], wrt: tuple[str, ...],
                       hessians: tuple[str, ...]) -> str:
    """The float32 CUDA module source of ``name``'s fused kernel on inputs shaped as
    ``inputs`` (generated and loaded, not compiled: the simulator or no GPU)."""
    compiled = library_loss(name, "cuda")
    vectors = compiled.class_vector_inputs()  # (K,), which the binder passes as (1, K)
    ranks = {n: 2 if n in vectors else np.ndim(v) for n, v in inputs.items()}
    return compiled.kernel(ranks, False, np.dtype(np.float32), True, wrt, hessians).source


def _covering_losses() -> list[str]:
    """A few prelude losses whose CUDA modules together use every feature the whole
    prelude's do (greedy set cover): typing all 66 losses' kernels would take minutes."""
    features = {}
    for name in sorted(ENTRIES):
        if name in _COVERED_BY_GROUP_TOTALS:
            continue
        features[name] = set(_FEATURES.findall(_ptx_kernel_source(name, *_ptx_case(name))))
    chosen, missing = [], set().union(*features.values())
    while missing:
        best = max(sorted(features), key=lambda n: len(features[n] & missing))
        chosen.append(best)
        missing -= features[best]
    return chosen


def _ptx_dtypes(index: int) -> tuple[str, ...]:
    """The dtypes the PTX check compiles the ``index``-th loss in: both, except on CI (CI=true
    without LOSSDSL_FULL_SWEEPS=1), where the every-primitive loss (index 0: every helper and
    operator) keeps both and the covering losses alternate, float32 first (its check also
    looks for float64 values): each NVVM compile costs seconds."""
    if index == 0 or not SAMPLING:
        return ("float32", "float64")
    return (("float32",), ("float64",))[(index - 1) % 2]


def test_kernels_compile_for_real_gpus(tmp_path):
    """Kernels of prelude losses covering every construct the prelude uses, float32 and
    float64 (on CI see ``_ptx_dtypes``; value, gradients, Hessian; both row variants),
    compiled to PTX for a real GPU.

    Runs in a subprocess because this process may have the simulator switched on."""
    cases = []
    losses = [(PRIMITIVES, {"y": [0.5, 0.25], "p": [-1.0, 2.0]}, ("y", "p"), ("p",),
               frozenset()), (*GROUP_TOTALS, ("y", "p"), ("p",), frozenset())]
    for name in _covering_losses() + ["huber", "sparse_cce_logits"]:
        inputs, wrt, hessians = _ptx_case(name)
        tables = library_loss(name, "cuda").table_inputs()  # (R, K) lookups: every row
        losses.append((ENTRIES[name].call_expression(),
                       {n: (v if n in tables else v[:4]).tolist() for n, v in inputs.items()},
                       wrt, hessians, tables))
    for index, (expression, small_inputs, wrt, hessians, tables) in enumerate(losses):
        for dtype in _ptx_dtypes(index):
            labels = [n for n in small_inputs if n not in wrt and n not in tables]
            cases.append(dict(expression=expression, dtype=dtype, inputs=small_inputs,
                              labels=labels, wrt=wrt, hessians=hessians))
    script = tmp_path / "ptx_check.py"
    script.write_text(_PTX_CHECK)
    environment = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    done = subprocess.run([sys.executable, str(script), json.dumps(cases)], env=environment,
                          capture_output=True, text=True, timeout=600)
    if done.returncode == 3:
        pytest.skip("PTX check needs numba-cuda with NVVM and NVRTC "
                    "(pip install numba-cuda 'cuda-toolkit[nvvm,nvrtc,cudart]==13.*'): "
                    + done.stdout.strip())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["failures"], "\n".join(report["failures"])


# ---------------------------------------------------------------------- real-GPU sizes
@functools.cache
def _parallel(expression: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(expression, target="parallel")


@functools.cache
def _on_gpu(expression: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(expression, target="cuda")


def _compare_with_cpu(expression: str, inputs: dict[str, np.ndarray], wrt: tuple[str, ...],
                      dtype: type, what: str) -> None:
    """Value, gradients and Hessian diagonal of one fused kernel on the GPU (device arrays in
    and out) against the multi-threaded CPU kernel on the same inputs."""
    expected = fused(_parallel(expression), inputs, wrt, wrt)
    on_device = {name: cuda.to_device(value) for name, value in inputs.items()}
    actual = fused(_on_gpu(expression), on_device, wrt, wrt)
    names = ["value", *(f"grad {w}" for w in wrt), *(f"hessian {w}" for w in wrt)]
    for name, a, e in zip(names, actual, expected):
        assert isinstance(a, float) or binding.is_device_array(a), f"{what}: {name} left the device"
        assert_close(a, e, dtype, f"{what}: {name}")


@real_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("k", [10, 1000, 50_000])
@pytest.mark.parametrize("expression", ["sparse_cce_logits(y, z)", "cce_logits(t, z)",
                                        "categorical_focal_logits(t, z)"])
def test_wide_class_rows_on_a_gpu(expression, k, dtype):
    """Class-axis losses with 10, 1,000 and 50,000 classes (one thread per row below
    ROW_BLOCK_MIN_WIDTH classes, a block per row above), about 4*10^7 scores each."""
    rng = np.random.default_rng(k)
    n = max(256, 40_000_000 // k)
    z = rng.normal(0.0, 3.0, (n, k)).astype(dtype)
    label = rng.integers(0, k, n)
    if expression.startswith("sparse"):
        inputs = {"y": label, "z": z}
    else:
        t = np.zeros((n, k), dtype=dtype)
        t[np.arange(n), label] = 1
        inputs = {"t": t, "z": z}
    _compare_with_cpu(expression, inputs, ("z",), dtype, f"{expression}, K={k}")


@real_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("expression", ["huber(y, p, 1.0)", "bce_logits(y, p)"])
def test_hundred_million_rows_on_a_gpu(expression, dtype):
    """N = 10^8: the grid-stride loops, the cross-block reduction of the value and 64-bit
    offsets at the sizes the benchmark runs."""
    rng = np.random.default_rng(8)
    n = 100_000_000
    p = rng.normal(0.0, 2.0, n).astype(dtype)
    y = (rng.random(n) < 0.5).astype(dtype) if "bce" in expression \
        else rng.normal(0.0, 2.0, n).astype(dtype)
    _compare_with_cpu(expression, {"y": y, "p": p}, ("p",), dtype, f"{expression}, N=1e8")


@pytest.mark.skipif(not rt.SIMULATOR, reason="the CUDA simulator's shared arrays")
def test_simulated_shared_arrays_are_one_per_block():
    """Threads of a simulated block that reach cuda.shared.array together get one array
    (numba-cuda's lookup raced: tests/conftest.py puts it under a lock); otherwise a block's
    reduction sums into several arrays and is wrong now and then."""
    import threading

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    def allocate(shared: FakeCUDAShared, start: threading.Barrier, arrays: list[int]) -> None:
        start.wait()
        arrays.append(id(shared.array((1, 64), np.float64)))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows
    try:
        for _ in range(100):
            shared, start, arrays = FakeCUDAShared(0), threading.Barrier(32), []
            threads = [threading.Thread(target=allocate, args=(shared, start, arrays))
                       for _ in range(32)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(set(arrays)) == 1
    finally:
        sys.setswitchinterval(interval)


def test_no_gpu_is_a_loss_error_that_says_so(monkeypatch):
    """Without a GPU (or its driver) a target='cuda' call used to fail as an "internal error
    while compiling the kernel", after dropping the shared helpers' cache entries and
    retrying; now it says what is missing and what to use instead, and the source can still
    be printed (lossdsl codegen --target cuda)."""
    monkeypatch.setattr(rt, "missing_device", lambda: "CudaSupportError: no driver")
    compiled = lossdsl.compile("huber(y, p, 0.75)", target="cuda")
    with pytest.raises(LossError, match=r"target='cuda' needs an NVIDIA GPU .* \(CudaSupportError: "
                                        r"no driver\); use target='cpu' or 'parallel'"):
        compiled(y=np.ones(4), p=np.zeros(4))
    assert "cuda" in compiled.source  # the kernel is built and printed all the same
