"""The generated CPU kernels compute what their printed source says, in IEEE arithmetic."""

from __future__ import annotations

import inspect

import numpy as np

import lossdsl
from lossdsl import cache, compiler


def test_per_sample_math_is_evaluated_as_written():
    """A kernel's per-sample outputs equal its body evaluated by Python, bit for bit.

    The loop driver is compiled with fastmath "reassoc" (its sums vectorise); a body that
    does not say ``fastmath=False`` is compiled by Numba with the flags of its first caller,
    that driver, and LLVM then reassociated pseudo_huber's Hessian (a different last bit on
    5% of rows). Its body calls only + - * / sqrt and selects, all correctly rounded."""
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
    for i in range(n):
        module.body0.py_func(i, *arrays, *python_rows, 1.0)  # the derivatives' factor 1/1
    for compiled_row, python_row in zip(compiled_rows, python_rows):
        mismatched = np.flatnonzero(compiled_row != python_row)
        assert mismatched.size == 0, (mismatched[:5], compiled_row[mismatched[:5]],
                                      python_row[mismatched[:5]])
