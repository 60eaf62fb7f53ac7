"""The generated CPU kernels compute what their printed source says, in IEEE arithmetic."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import lossdsl
from lossdsl import cache, compiler
from lossdsl.backend.cpu.helpers import shared_helpers


def test_per_sample_math_is_evaluated_as_written():
    """A kernel's per-sample outputs equal its body evaluated by Python, bit for bit.

    The loop driver is compiled with fastmath "reassoc" (its sums vectorise); a body that
    does not say ``fastmath=False`` is compiled by Numba with the flags of its first caller,
    that driver, and LLVM then reassociated pseudo_huber's Hessian (a different last bit on
    5% of rows). Its body calls only + - * / sqrt and selects, all correctly rounded. Python
    runs the registry's helpers where the kernel has their intrinsics (equal to them:
    tests/backend/test_instructions.py)."""
    compiled = lossdsl.compile("pseudo_huber(y, p)", target="cpu")
    spec = compiled.specialization(compiled.default_ranks())
    request = compiler.KernelRequest(np.dtype("float64"), "cpu", True, ("p",), ("p",))
    module = cache.load_module(compiler.generate_source(spec, request).source)
    parameters = inspect.signature(module.run).parameters
    inputs = [name for name in parameters if name.startswith("a")]
    outputs = [name for name in parameters if name.startswith("o")]
    assert (len(inputs), len(outputs)) == (2, 2)  # y, p; gradient and Hessian of p
    n = 2000
    rng = np.random.default_rng(7)
    arrays = [rng.normal(0.0, 2.0, n) for _ in inputs]
    compiled_rows = [np.empty(n) for _ in outputs]
    module.run(*arrays, *compiled_rows, 1.0, n)  # the mean's divisor 1, n rows
    python_rows = [np.empty(n) for _ in outputs]
    registry = shared_helpers("float64", True)
    intrinsics = {name: value for name, value in vars(module).items() if name.startswith("h_")}
    try:  # the body's globals are the module's
        for name in intrinsics:
            setattr(module, name, getattr(registry, name).py_func)
        for i in range(n):
            module.body0.py_func(i, *arrays, *python_rows, 1.0)  # the derivatives' factor 1/1
    finally:
        for name, value in intrinsics.items():
            setattr(module, name, value)
    for compiled_row, python_row in zip(compiled_rows, python_rows):
        mismatched = np.flatnonzero(compiled_row != python_row)
        assert mismatched.size == 0, (mismatched[:5], compiled_row[mismatched[:5]],
                                      python_row[mismatched[:5]])


@pytest.mark.parametrize("expression, spread", [("sparse_cce_logits(y, z)", 3.0),
                                                ("multiclass_sparsemax(y, z)", 1e-4)])
def test_float32_row_sums_accumulate_in_float64(expression, spread):
    """A float32 loss over 50,000 classes is as exact as float32 allows: a row's sums (a
    softmax's exponentials, the sparsemax support of near-equal scores, every class in it)
    accumulate in float64 and round once. Summed in float32, one element at a time (the
    kernel's per-sample math is strict), the softmax's gradient drifted 1.2e-4 and the
    sparsemax's 1.6e-4 from float64 (an H200 found the first: its block-per-row kernel was
    the closer of the two)."""
    k, n = 50_000, 24
    rng = np.random.default_rng(k)
    z = 1.0 + rng.normal(0.0, spread, (n, k))
    y = rng.integers(0, k, n)
    compiled = lossdsl.compile(expression, target="cpu")
    value64, gradient64 = compiled.value_and_grad("z", y=y, z=z)
    value32, gradient32 = compiled.value_and_grad("z", y=y, z=z.astype(np.float32))
    assert value32 == pytest.approx(value64, rel=1e-6)
    scale = np.max(np.abs(gradient64))
    np.testing.assert_allclose(gradient32, gradient64, rtol=1e-5, atol=1e-6 * scale)
