"""lossdsl.jax: losses printed as jax.numpy code, against the Numba CPU kernels.

* every loss of the library: value, gradient of every differentiable input (``jax.grad``)
  and the diagonal of ``jax.hessian`` with respect to the prediction, equal to the fused
  Numba kernel's value, gradients and diagonal Hessian to 1e-12 in float64; the kernel is
  one another file compiles too, so the two share the on-disk kernel cache (see
  ``kernel_request``): on CI tests/test_library.py's (per-sample values), elsewhere
  tests/backend/test_cuda.py's (the mean);
* lossdsl's derivatives where JAX's autodiff of a formula fails (extreme logits, a masked
  ``sqrt`` at 0), jit/vmap/grad compositions, reductions and sample weights, ignore_index,
  float32 and bfloat16, labels out of range (an error, or NaN under jit), the printer's
  completeness, and an optax training loop reaching the known quantile-regression optimum;
* the full Hessians of risk-set losses (cox_ph with strata and ties, cox_ph_efron) against
  the partial likelihood written by hand in jax.numpy, central differences of the kernel's
  gradient and a Newton fit against lifelines' coefficients.

float64 needs ``jax_enable_x64``: a module fixture turns it on and restores it afterwards.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from coupled import columns_written
from sweeps import SAMPLING, within_domains
from test_library import SHARED_WITH_JAX, fused_outputs, jax_case

import lossdsl
import lossdsl.jax
from lossdsl import catalog
from lossdsl.backend import jax as jax_printer
from lossdsl.errors import LossDomainError, LossError, LossNameError, LossShapeError
from lossdsl.ir.node import toposort
from lossdsl.ops import primitives

N, K = 8, 4
ENTRIES = {entry.name: entry for entry in catalog.entries()}


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def synthesize(compiled: lossdsl.CompiledLoss, kind: str, seed: int = 0) -> dict:
    """Float64 inputs shaped by the loss's input ranks, labels as integers (as
    tests/backend/test_cuda.py): "wide" from N(0, 1.5), "unit" from (0.05, 0.95), "classes"
    as "wide" with the vectors the labels 0, 1, 2 (ntxent's positive pairs)."""
    rng = np.random.default_rng(seed)
    ranks = compiled.default_ranks()
    inputs = {}
    for name in compiled.inputs:
        if name in compiled.label_inputs():
            inputs[name] = rng.integers(0, K, N)
        elif name in compiled.group_inputs():
            inputs[name] = rng.integers(0, 7, N)
        elif name in compiled.class_vector_inputs():  # levels, class weights: (K,), sorted
            inputs[name] = np.sort(rng.uniform(0.05, 0.95, K))
        elif name in compiled.table_inputs():
            inputs[name] = rng.uniform(0.0, 5.0, (K, K))
        else:
            # yetirank reads its draws' columns 0 to 9
            shape = (N,) if ranks[name] == 1 else (N, max(K, columns_written(compiled)))
            if kind == "classes" and ranks[name] == 1:
                inputs[name] = rng.integers(0, 3, N).astype(np.float64)
                continue
            inputs[name] = (rng.normal(0.0, 1.5, shape) if kind in ("wide", "classes")
                            else rng.uniform(0.05, 0.95, shape))
    return within_domains(compiled, inputs, rng)


def kernel_request(name: str) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """(call, reduction, inputs differentiated, Hessian inputs) of the fused float64 CPU kernel
    the sweep compares ``name``'s JAX code with: the kernel another file compiles for the
    same loss, so that the second to ask loads it from the disk cache (a cold compile is
    most of a case's time). On CI, tests/test_library.py's (reduction "none": its case of
    the loss, whose kernel computes the gradient of every input JAX differentiates; see its
    ``SHARED_WITH_JAX``); elsewhere, tests/backend/test_cuda.py's float64 kernel (the loss's
    catalog call, reduction "mean", the prediction's Hessian)."""
    if SAMPLING:
        case = jax_case(name)
        return (case.call, "none", *fused_outputs(case))
    entry = ENTRIES[name]
    compiled = lossdsl.compile(entry.call_expression())
    constants = compiled.constant_inputs()
    wrt = tuple(n for n in compiled.inputs if n not in constants)
    prediction = entry.prediction() if entry.prediction() in wrt else wrt[-1]
    return entry.call_expression(), "mean", wrt, (prediction,)


@functools.cache
def library_case(name: str):
    """(compiled loss, inputs, inputs differentiated, Hessian inputs compared, kernel
    results: the value, the gradients and those Hessians) of ``kernel_request``'s kernel:
    the first inputs ("wide", else "unit") on which what is compared is finite. The
    Hessian compared is the prediction's (the kernel may compute others, for the file it
    shares the kernel with)."""
    entry = ENTRIES[name]
    call, reduction, wrt, hessians = kernel_request(name)
    compiled = lossdsl.compile(call, reduction=reduction)
    prediction = entry.prediction() if entry.prediction() in wrt else wrt[-1]
    for kind in ("wide", "unit", "classes"):
        inputs = synthesize(compiled, kind)
        for asked in (hessians, ()):
            try:
                results = compiled.compute(True, wrt, asked, inputs, None)
            except LossDomainError as error:  # no positive pairs for ntxent's mean
                if "count_as" not in str(error):
                    raise
                break
            except LossError as error:  # trigamma's derivative has no derivative
                if "has no derivative" not in str(error):
                    raise
                continue
            compared = (prediction,) if prediction in asked else asked[:1]
            kept = [*results[:1 + len(wrt)],
                    *(results[1 + len(wrt) + asked.index(h)] for h in compared)]
            if all(np.all(np.isfinite(r)) for r in kept):
                return compiled, inputs, wrt, compared, kept
            break
    raise AssertionError(f"{name}: no inputs on which the CPU kernel is finite")


def assert_close(actual, expected, what: str, tolerance: float = 1e-12) -> None:
    """Within ``tolerance`` relative to the largest expected magnitude."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale, err_msg=what)


def _library_sweep() -> list[str]:
    """Every library loss, except on CI (CI=true without LOSSDSL_FULL_SWEEPS=1), where every
    other one by name is (tracing and compiling each loss's Hessian costs JAX up to a
    second; the other half runs in every full run): those whose kernels tests/test_library.py
    computes for this sweep too (its ``SHARED_WITH_JAX``)."""
    if SAMPLING:
        return sorted(SHARED_WITH_JAX)
    return sorted(ENTRIES)


@pytest.mark.parametrize("name", _library_sweep())
def test_library_matches_numba_kernels(name):
    compiled, inputs, wrt, hessians, expected = library_case(name)
    per_sample = compiled.reduction == "none"
    # a mean over count_as's counts is not the mean of the values (ntxent: over the positive
    # pairs, 0/0 = NaN under jit where the data has none)
    plain_mean = per_sample and not any(n.op == "count_as"
                                        for n in toposort([compiled.loss.definition.graph]))
    fixed = {k: v for k, v in inputs.items() if k not in wrt}

    def bound(reduction: str):
        f = lossdsl.jax.loss(compiled, reduction=reduction)
        return lambda *moving: f(**dict(zip(wrt, moving)), **fixed)

    # the kernel's derivatives are its total's: under "none", the sum of the values
    of = bound("sum" if per_sample else compiled.reduction)
    values_of = bound("none") if per_sample else None
    mean_of = bound("mean") if plain_mean else None

    @jax.jit  # one XLA program per loss: eager Hessians of coupled losses take seconds
    def results(*moving):
        value, gradients = jax.value_and_grad(of, argnums=tuple(range(len(wrt))))(*moving)
        found = [values_of(*moving) if per_sample else value, *gradients]
        if hessians:
            x = moving[wrt.index(hessians[0])]
            full = jax.hessian(of, argnums=wrt.index(hessians[0]))(*moving)
            found.append(jnp.diagonal(full.reshape(x.size, x.size)).reshape(x.shape))
        if plain_mean:  # and the mean users get by default, of the same values
            found.append(mean_of(*moving))
        return found

    actual = results(*[inputs[w] for w in wrt])
    labels = ["value", *(f"grad {w}" for w in wrt), *(f"hessian {h}" for h in hessians)]
    if plain_mean:
        labels.append("mean")
        expected = [*expected, np.mean(expected[0])]
    assert len(actual) == len(expected) == len(labels)
    for label, a, e in zip(labels, actual, expected):
        assert np.asarray(a).dtype == np.float64, f"{name}: {label}"
        assert_close(a, e, f"{name}: {label}")


def test_printer_covers_every_operation():
    """Every IR operation but the macros shapes.py expands has a print_ method, and a graph
    with an operation the printer does not know is a LossError, not a crash."""
    expected = sorted(op for op, p in primitives.OPERATIONS.items() if p.kind != "macro")
    assert jax_printer.printable_operations() == expected
    from lossdsl.ir.node import node

    # a macro (registered, expanded by shapes.py before printing) the printer does not print
    unknown = node("rowmean", (node("const", (), 1.0, ()),), None, ())
    with pytest.raises(LossError, match="cannot print the operation 'rowmean'"):
        jax_printer.generate([unknown], {}, {}, {})


def test_generated_source_has_no_user_text():
    f = lossdsl.jax.loss("huber(target_value, my_score, 1.0) + 0.1*l1(weights_secret)")
    rng = np.random.default_rng(0)
    source = f.source(target_value=rng.normal(size=5), my_score=rng.normal(size=5),
                      weights_secret=rng.normal(size=3))
    for name in ("target_value", "my_score", "weights_secret"):
        assert name not in source
    assert "jnp." in source and "def run(a0, a1, a2)" in source


# ------------------------------------------------------------------ stable derivatives


def test_extreme_logits_exact_where_autodiff_of_the_formula_is_nan():
    """The textbook BCE on logits at +-1e4: JAX's autodiff of it in jnp is NaN; the same
    text in lossdsl is rewritten into log_sigmoid forms, and its gradient and Hessian are the
    exact (sigmoid(z) - y)/N and sigmoid'(z)/N."""
    y = np.array([0.0, 1.0, 0.0, 1.0, 0.3])
    z = np.array([1e4, 1e4, -1e4, -1e4, 1e4])

    def textbook(y, z):
        p = jax.nn.sigmoid(z)
        return jnp.mean(-(y * jnp.log(p) + (1 - y) * jnp.log(1 - p)))

    assert np.isnan(np.asarray(jax.grad(textbook, argnums=1)(y, z))).any()
    for text in ("-(y*log(sigmoid(z)) + (1 - y)*log(1 - sigmoid(z)))", "bce_logits(y, z)"):
        f = lossdsl.jax.loss(text)
        exact = (np.where(z > 0, 1.0, 0.0) - y) / len(y)
        assert float(f(y, z)) == pytest.approx(np.mean(np.where(z > 0, (1 - y), y) * 1e4))
        np.testing.assert_array_equal(np.asarray(jax.grad(f, argnums=1)(y, z)), exact)
        hessian = np.asarray(jax.hessian(f, argnums=1)(y, z))
        np.testing.assert_array_equal(hessian, np.zeros((5, 5)))


def test_masked_branches_where_autodiff_gives_nan():
    """group_lasso at a zero group, where(p > 0, sqrt(p), 0) at 0: JAX's autodiff of the
    printed value (derivatives="jax") meets 0 * inf; lossdsl's where-derivative does not."""
    w = np.array([[0.0, 0.0], [3.0, 4.0]])
    ours = jax.grad(lossdsl.jax.loss("group_lasso(w)"))(w)
    theirs = jax.grad(lossdsl.jax.loss("group_lasso(w)", derivatives="jax"))(w)
    np.testing.assert_allclose(np.asarray(ours), [[0.0, 0.0], [0.6, 0.8]], rtol=1e-15)
    assert np.isnan(np.asarray(theirs)[0]).all()
    p = np.array([0.0, 4.0])
    f = lossdsl.jax.loss("where(p > 0, sqrt(p), 0)")
    np.testing.assert_array_equal(np.asarray(jax.grad(f)(p)), [0.0, 0.125])
    np.testing.assert_array_equal(np.diag(np.asarray(jax.hessian(f)(p))), [0.0, -1 / 64])
    assert np.isnan(np.asarray(
        jax.grad(lossdsl.jax.loss("where(p > 0, sqrt(p), 0)", derivatives="jax"))(p))[0])


@pytest.mark.parametrize("text, wrt", [("huber(y, p, 0.5)", "p"), ("bce_logits(y, z)", "z"),
                                       ("quantile(y, p, 0.8)", "p"), ("log_cosh(y, p)", "p"),
                                       ("poisson_log(y, z)", "z")])
def test_hessian_is_lossdsl_diagonal_for_elementwise_losses(text, wrt):
    rng = np.random.default_rng(3)
    y = rng.uniform(0.0, 2.0, N) if "poisson" in text else rng.integers(0, 2, N).astype(float)
    x = rng.normal(0.0, 2.0, N)
    compiled = lossdsl.compile(text)
    f = lossdsl.jax.loss(text)
    hessian = np.asarray(jax.jit(jax.hessian(f, argnums=1))(y, x))
    assert_close(np.diag(hessian), compiled.hessian(wrt, y=y, **{wrt: x}), text)
    np.testing.assert_array_equal(hessian - np.diag(np.diag(hessian)), 0.0)


def test_coupled_hessian_is_exact():
    """Softmax couples a row's classes: the Hessian's off-diagonal entries come from JAX's
    derivative of lossdsl's printed gradient, its diagonal equals lossdsl's."""
    rng = np.random.default_rng(4)
    labels, z = rng.integers(0, 3, 2), rng.normal(size=(2, 3))
    f = lossdsl.jax.loss("sparse_cce_logits(y, z)", reduction="sum")
    hessian = np.asarray(jax.hessian(f, argnums=1)(labels, z)).reshape(6, 6)
    q = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = np.zeros((6, 6))
    for row in range(2):
        block = np.diag(q[row]) - np.outer(q[row], q[row])
        expected[3 * row:3 * row + 3, 3 * row:3 * row + 3] = block
    assert_close(hessian, expected, "softmax Hessian")


def test_coupled_hessian_is_exact_at_scores_of_zero():
    """Where JAX differentiates the printed gradient (the samples are coupled), a logistic
    function at exactly 0 (a boosting model's first scores) has its derivative: the printed
    code keeps sigmoid and softplus whole instead of their kernels' ``exp(-|z|)`` forms,
    whose |z| JAX differentiates as 0 at 0 (which made this Hessian's entries at z = 0 off
    by twice sigmoid'(0))."""
    y, z, q = np.array([0.0, 1.0, 1.0, 1.0]), np.array([0.3, -0.5, 0.0, 0.0]), \
        np.array([1.0, 1.0, 1.0, 2.0])
    text = "bce_logits(y, z) + bce_logits(y, z + groupmean(z, q))"
    f = lossdsl.jax.loss(text, reduction="sum")
    hessian = np.asarray(jax.hessian(lambda s: f(y, s, q=q))(z))
    compiled = lossdsl.compile(text, reduction="sum")
    assert_close(np.diag(hessian), compiled.hessian("z", y=y, z=z, q=q), text)
    for name in ("sigmoid", "softplus", "log_sigmoid"):
        at_zero = jax.grad(getattr(lossdsl.backend.jax, name))(0.0)
        assert float(at_zero) == pytest.approx({"sigmoid": 0.25}.get(name, 0.5), rel=1e-15)


def test_sparsemax_printed_by_sorting_equals_the_kernels_passes():
    """The printer's sort-based threshold against the kernels' passes on edge rows (ties,
    huge logits, -inf classes, rows without a finite support), under jit, and the full
    Hessian of the sparsemax loss: JAX's derivative of the printed gradient, whose diagonal
    is lossdsl's s_k (1 - 1/|S|) and whose off-diagonal within the support is 1/|S|."""
    z = np.array([[np.nan, 1.0, 2.0], [-np.inf] * 3, [-np.inf, 0.0, 1.0], [3.0, 3.0, 3.0],
                  [1e300, -1e300, 0.0], [0.0, 0.45, 0.9], [1e4, 1e4 - 0.5, -1e4]])
    for text in ("sparsemax(z)", "sparsemax_threshold(z)"):
        printed = np.asarray(jax.jit(lossdsl.jax.loss(text, reduction="none"))(z))
        np.testing.assert_allclose(printed, lossdsl.compile(text, reduction="none")(z=z),
                                   rtol=1e-15, atol=1e-15)
    labels, scores = np.array([0, 2]), np.array([[1.0, 0.8, -2.0], [0.1, 0.5, 0.3]])
    f = lossdsl.jax.loss("multiclass_sparsemax(y, z)", reduction="sum")
    hessian = np.asarray(jax.hessian(f, argnums=1)(labels, scores)).reshape(6, 6)
    expected = np.zeros((6, 6))
    for row in range(2):
        support = (scores[row] - lossdsl.reference.simplex_threshold(scores[row:row + 1])
                   > 0).astype(float)
        block = np.diag(support) - np.outer(support, support) / support.sum()
        expected[3 * row:3 * row + 3, 3 * row:3 * row + 3] = block
    assert_close(hessian, expected, "sparsemax Hessian")


# ------------------------------------------------------------------ transformations


def test_jit_vmap_grad_compose():
    rng = np.random.default_rng(5)
    y, p = rng.normal(size=N), rng.normal(size=N)
    compiled = lossdsl.compile("huber(y, p, 1.0)", reduction="sum")
    f = lossdsl.jax.loss("huber(y, p, 1.0)")
    per_example = lossdsl.jax.loss("huber(y, p, 1.0)", reduction="none")
    # per-example gradients: vmap of grad of the loss of one example
    grads = jax.jit(jax.vmap(jax.grad(per_example, argnums=1)))(y, p)
    assert_close(grads, compiled.grad("p", y=y, p=p), "vmap(grad)")
    assert_close(jax.jit(f)(y, p), lossdsl.compile("huber(y, p, 1.0)")(y=y, p=p), "jit")
    assert_close(jax.jit(jax.grad(f, argnums=1))(y, p), jax.grad(f, argnums=1)(y, p), "jit")
    # a batch of batches: vmap over a leading axis of (B, N) arrays
    batches = jax.vmap(f)(np.stack([y, 2 * y]), np.stack([p, p]))
    assert_close(batches, [f(y, p), f(2 * y, p)], "vmap over batches")
    # a param per call, also traced under jit (JAX differentiates with respect to it)
    text = "param delta = 1.0\nloss h = huber(y, p, delta)"
    g = lossdsl.jax.loss(text)
    expected = lossdsl.compile(text)(y=y, p=p, delta=0.5)
    assert_close(g(y, p, delta=0.5), expected, "param")
    assert_close(jax.jit(lambda d: g(y, p, delta=d))(0.5), expected, "traced param")
    step, kernel = 1e-6, lossdsl.compile(text)
    slope = (kernel(y=y, p=p, delta=0.5 + step) - kernel(y=y, p=p, delta=0.5 - step)) / (2 * step)
    assert float(jax.grad(lambda d: g(y, p, delta=d))(0.5)) == pytest.approx(slope, rel=1e-6)


@pytest.mark.parametrize("reduction, weighted", [
    ("mean", True), ("weighted_mean", True), ("sum", False), ("none", True), ("none", False),
    ("batchmean", False)])
def test_reductions_and_sample_weights(reduction, weighted):
    rng = np.random.default_rng(6)
    labels, z = rng.integers(0, K, N), rng.normal(size=(N, K))
    weight = rng.uniform(0.1, 2.0, N) if weighted else None
    text = "sparse_cce_logits(y, z) + 0.01*l2(z)" if reduction != "none" else \
        "sparse_cce_logits(y, z)"
    compiled = lossdsl.compile(text, reduction=reduction)
    f = lossdsl.jax.loss(text, reduction=reduction)
    value = f(labels, z, sample_weight=weight)
    if reduction == "none":  # the VJP with cotangent v: the sum of v-weighted losses
        assert_close(value, compiled(y=labels, z=z, sample_weight=weight), reduction)
        v = rng.normal(size=N)
        _, pullback = jax.vjp(lambda z: f(labels, z, sample_weight=weight), z)
        (gradient,) = pullback(v)
        expected = lossdsl.compile(text, reduction="sum").grad(
            "z", y=labels, z=z, sample_weight=v * (weight if weighted else 1.0))
    else:
        gradient = jax.grad(lambda z: f(labels, z, sample_weight=weight))(z)
        expected_value, expected = compiled.value_and_grad("z", y=labels, z=z,
                                                           sample_weight=weight)
        assert_close(value, expected_value, reduction)
    assert_close(gradient, expected, f"{reduction} gradient")
    if weighted:  # gradient with respect to the weights, too
        dw = jax.grad(lambda w: jnp.sum(f(labels, z, sample_weight=w)))(weight)
        assert_close(dw, jax.grad(lambda w: jnp.sum(
            lossdsl.jax.loss(text, reduction=reduction, derivatives="jax")(
                labels, z, sample_weight=w)))(weight), "d/dweight")


def test_per_sample_loss_with_a_coupled_batch_term_falls_back_exactly():
    """reduction="none" of a loss whose samples are coupled (a mean over the batch inside):
    the per-sample JVP comes from JAX's derivative of the printed value, still exact."""
    rng = np.random.default_rng(7)
    y, p = rng.normal(size=N), rng.normal(size=N)
    f = lossdsl.jax.loss("(p - mean(p) - y)^2", reduction="none")
    jacobian = np.asarray(jax.jacrev(f, argnums=1)(y, p))
    r = p - p.mean() - y
    expected = 2 * r[:, None] * (np.eye(N) - 1.0 / N)
    assert_close(jacobian, expected, "per-sample Jacobian")


def test_ignore_index():
    rng = np.random.default_rng(8)
    labels, z = rng.integers(0, K, N), rng.normal(size=(N, K))
    labels[[1, 4]] = -100
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=-100)
    f = lossdsl.jax.loss("sparse_cce_logits(y, z)", ignore_index=-100)
    value, gradient = compiled.value_and_grad("z", y=labels, z=z)
    assert_close(f(labels, z), value, "value")
    assert_close(jax.jit(jax.grad(f, argnums=1))(labels, z), gradient, "gradient")
    with pytest.raises(LossDomainError, match="ignore_index"):
        f(np.full(N, -100), z)


# ------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("name", ["huber", "sparse_cce_logits"])
def test_float32(name):
    _, inputs, wrt, _, _ = library_case(name)
    compiled = lossdsl.compile(ENTRIES[name].call_expression())  # the mean, as users call it
    inputs32 = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
                for k, v in inputs.items()}
    expected, gradients = compiled.value_and_grad(wrt, **inputs32)
    f = lossdsl.jax.loss(compiled)
    fixed = {k: v for k, v in inputs32.items() if k not in wrt}
    value, actual = jax.value_and_grad(
        lambda *m: f(**dict(zip(wrt, m)), **fixed), argnums=tuple(range(len(wrt))))(
        *[inputs32[w] for w in wrt])
    assert value.dtype == jnp.float32
    assert_close(value, expected, f"{name} float32", 1e-5)
    for w, g in zip(wrt, actual):
        assert g.dtype == jnp.float32
        assert_close(g, gradients[w], f"{name} float32 grad {w}", 1e-5)


def test_bfloat16_runs():
    rng = np.random.default_rng(9)
    y, z = rng.integers(0, 2, N).astype(float), rng.normal(size=N)
    f = lossdsl.jax.loss("bce_logits(y, z)")
    yb, zb = jnp.asarray(y, jnp.bfloat16), jnp.asarray(z, jnp.bfloat16)
    value, gradient = jax.value_and_grad(f, argnums=1)(yb, zb)
    assert value.dtype == jnp.bfloat16 and gradient.dtype == jnp.bfloat16
    exact = f(np.asarray(yb, np.float64), np.asarray(zb, np.float64))
    assert float(value) == pytest.approx(float(exact), rel=1e-2)


# ------------------------------------------------------------------ binding and errors


def test_positional_roles_and_errors():
    rng = np.random.default_rng(10)
    y, p = rng.normal(size=N), rng.normal(size=N)
    f = lossdsl.jax.loss("asymmetric_l1(y, p, 4, 1)")
    assert float(f(y, p)) == float(f(y=y, p=p)) == float(f(y, p=p))
    assert float(f(y, p)) != float(f(p, y))  # (y_true, y_pred), not symmetric
    with pytest.raises(LossError, match="cannot tell which"):
        lossdsl.jax.loss("mse(a, b)")(y, p)
    with pytest.raises(LossError, match="2 positional arguments, but only 1 input"):
        f(y, p, y=y)
    with pytest.raises(LossNameError, match="missing input 'p'"):
        f(y=y)
    with pytest.raises(LossNameError, match="not an input or param"):
        f(y, p, dleta=1.0)
    with pytest.raises(LossShapeError, match="disagree on the number of samples"):
        f(y, p[:3])
    with pytest.raises(LossShapeError, match="must be real numbers"):
        f(y, np.array(["a"] * N))
    with pytest.raises(LossShapeError, match="sample_weight has 3 entries"):
        f(y, p, sample_weight=np.ones(3))
    with pytest.raises(LossError, match="derivatives must be"):
        lossdsl.jax.loss("mse(y, p)", derivatives="numba")


def test_labels_out_of_range():
    """Concrete labels are checked as the kernels check them; traced ones (under jit) make
    the result NaN rather than a silently wrong number."""
    z = np.random.default_rng(11).normal(size=(3, K))
    f = lossdsl.jax.loss("sparse_cce_logits(y, z)")
    for bad in ([0, 1, K], [0, -1, 2], [0, 1.5, 2]):
        with pytest.raises(LossDomainError, match="must hold integers in"):
            f(np.asarray(bad), z)
        assert np.isnan(float(jax.jit(f)(np.asarray(bad), z)))
        assert np.isnan(np.asarray(jax.jit(jax.grad(f, argnums=1))(np.asarray(bad), z))).all()
    assert np.isfinite(float(jax.jit(f)(np.asarray([0, 1, 3]), z)))


def test_import_lossdsl_does_not_import_jax():
    code = "import sys, lossdsl; lossdsl.compile('mse(y, p)'); print('jax' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "False"


# ------------------------------------------------------------------ training


def test_optax_linear_quantile_regression_reaches_the_optimum():
    """A linear model fit with optax under quantile(y, p, 0.8): y = 2x + 1 + u with u uniform
    on (-1, 1), whose 0.8-quantile line is 2x + 1.6."""
    rng = np.random.default_rng(12)
    x = rng.uniform(-1.0, 1.0, 4000)
    y = 2.0 * x + 1.0 + rng.uniform(-1.0, 1.0, x.size)
    f = lossdsl.jax.loss("quantile(y, p, 0.8)")
    optimizer = optax.adam(0.05)
    theta = jnp.zeros(2)
    state = optimizer.init(theta)

    @jax.jit
    def step(theta, state):
        loss, gradient = jax.value_and_grad(lambda t: f(y, t[0] * x + t[1]))(theta)
        updates, state = optimizer.update(gradient, state)
        return optax.apply_updates(theta, updates), state, loss

    for _ in range(600):
        theta, state, loss = step(theta, state)
    np.testing.assert_allclose(np.asarray(theta), [2.0, 1.6], atol=0.06)
    # the optimum of the sample: the kernel's loss there is no lower than at the fit
    compiled = lossdsl.compile("quantile(y, p, 0.8)")  # a CPU kernel: given host arrays
    fitted = np.asarray(theta[0] * x + theta[1])
    assert float(loss) == pytest.approx(compiled(y=y, p=fitted), rel=1e-3)


@pytest.mark.parametrize("op", ["lgamma", "digamma", "trigamma", "tetragamma", "log_ndtr",
                                "ndtr_ratio", "log1mexp", "erf", "erfc", "sign", "softplus",
                                "log_sigmoid", "sigmoid", "logaddexp", "xlog1py", "min", "max"])
def test_helpers_match_the_reference_semantics(op):
    """The printed helpers against lossdsl.reference's (the kernels' semantics) at special
    values: poles, signed zeros, infinities, NaN, both tails."""
    from lossdsl.ir.node import node
    from lossdsl.reference import ELEMENTWISE_NUMPY

    special = np.array([-np.inf, -1e300, -40.0, -12.5, -10.0, -3.0, -2.5, -1e-8, -0.0, 0.0,
                        1e-300, 1e-8, 0.3, 0.5, 1.0, 2.0, 5.9, 6.0, 15.5, 40.0, 1e10, np.inf,
                        np.nan])
    arity = primitives.OPERATIONS[op].arity
    if arity == 1:
        arguments = [special]
    else:
        a, b = np.meshgrid(special, special)
        arguments = [a.ravel(), b.ravel()]
    names = {f"x{i}": f"a{i}" for i in range(arity)}
    leaves = [node("input", (), f"x{i}", ("n0",)) for i in range(arity)]
    program = jax_printer.generate([node(op, leaves, None, ("n0",))], names, {}, {})
    run = program.build(np.float64, jnp, jax.lax, jax_printer)
    (actual,) = run(*arguments)
    with np.errstate(all="ignore"):
        expected = ELEMENTWISE_NUMPY[op](*arguments)
    # atol: XLA on the CPU flushes subnormal results to zero (1e-300 * log1p(1e-8)); on a
    # GPU (an H200) XLA's lgamma(2) is 8.9e-16 (4 ulp of 1 off its exact zero; the CPU's 0)
    near_zero = 1e-15 if op == "lgamma" and jax.default_backend() == "gpu" else 1e-300
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-13, atol=near_zero,
                               equal_nan=True, err_msg=op)


def test_printed_code_differentiates_at_ties_empty_log_sums_and_masked_logs():
    """JAX's derivative of the printed code (which it takes for coupled Hessians and for
    derivatives="jax"): logaddexp's is sigmoid(a - b), 1/2 each at equal arguments (it was
    1 and 0: a risk-set Hessian at scores of 0 was off) and finite at two -inf (an empty
    log-domain sum); a log that a where masks out gives 0 there in reverse mode, where it
    was 0 * inf = NaN."""
    from scipy.special import expit

    a = np.array([0.0, 3.0, -np.inf, 1.0, 1.0, -700.0])
    b = np.array([0.0, 3.0, -np.inf, -np.inf, 0.0, 700.0])
    da, db = jax.vmap(jax.grad(jax_printer.logaddexp, argnums=(0, 1)))(a, b)
    finite = np.isfinite(a - b)
    expected = np.where(finite, expit(np.where(finite, a - b, 0.0)), [0.5, 0.5, 0.5, 1.0, 0, 0])
    np.testing.assert_allclose(np.asarray(da), expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.asarray(db), 1 - expected, rtol=1e-15, atol=0)
    masked = lossdsl.jax.loss("where(p > 0, log(p), 0)", reduction="sum", derivatives="jax")
    p = np.array([0.0, 2.0, -1.0])
    np.testing.assert_array_equal(np.asarray(jax.grad(masked)(p)), [0.0, 0.5, 0.0])
    assert float(masked(p)) == pytest.approx(np.log(2.0), rel=1e-15)


def test_gradient_with_respect_to_a_lookup_table():
    """lossdsl has no symbolic derivative with respect to a rowof table (CompiledLoss.grad
    refuses it); under jax.grad JAX differentiates the printed gather, never a silent 0."""
    rng = np.random.default_rng(13)
    labels, z, table = rng.integers(0, K, N), rng.normal(size=(N, K)), rng.uniform(0, 5, (K, K))
    f = lossdsl.jax.loss("expected_cost(y, z, C)")
    kernel = lossdsl.compile("expected_cost(y, z, C)")
    gradient = np.asarray(jax.grad(lambda C: f(labels, z, C=C))(table))
    step, numeric = 1e-6, np.zeros_like(table)
    for index in np.ndindex(table.shape):
        bump = np.zeros_like(table)
        bump[index] = step
        numeric[index] = (kernel(y=labels, z=z, C=table + bump)
                          - kernel(y=labels, z=z, C=table - bump)) / (2 * step)
    assert np.abs(gradient).max() > 0.01
    np.testing.assert_allclose(gradient, numeric, atol=1e-8)


def test_without_jax_the_import_error_says_what_to_install():
    code = ("import sys; sys.modules['jax'] = None\n"
            "try:\n    import lossdsl.jax\nexcept ModuleNotFoundError as error:\n"
            "    print(error)\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert "lossdsl.jax needs JAX" in output and "lossdsl[jax]" in output


@pytest.mark.parametrize("text", ["-y * group_log_softmax(s, q)", "groupmax(s, q)",
                                  "groupsum((s - groupmax(s, q))^2, q) / groupsum(1, q)"])
def test_group_reductions_print_as_segment_sums_under_jit(text):
    """Groups in any order, their ids traced too (segments of static size)."""
    rng = np.random.default_rng(8)
    data = {"q": rng.choice([3, 10, 11, 40, 41, 99], 40), "y": rng.integers(0, 4, 40) * 1.0,
            "s": rng.normal(0.0, 1.5, 40)}
    compiled = lossdsl.compile(text, reduction="sum")
    d = {name: data[name] for name in compiled.inputs}
    f = lossdsl.jax.loss(text, reduction="sum")
    expected_value, expected_gradient = compiled.value_and_grad("s", **d)

    @jax.jit
    def value_and_grad(s, q):
        return jax.value_and_grad(lambda s: f(**{**d, "s": s, "q": q}))(s)

    value, gradient = value_and_grad(d["s"], d["q"])
    assert float(value) == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(np.asarray(gradient), expected_gradient, rtol=1e-12, atol=1e-14)


COUPLED_SAMPLES = [
    ("groupsum(z, q)^2", "sum"),        # a group's value read at each of its samples
    ("pairsum(partner(z), q)^2", "sum"),  # z read at the partners alone
    ("ranknet(y, z, q)", "sum"),        # pairs: the Hessian is not its diagonal
    ("cox_ph(y, z)", "sum"),            # risk sets (cumulative sums)
    ("cox_ph(y, z)", "none"),           # per-sample values of coupled samples
    ("hinge_embedding(y, x)", "sum"),   # a gradient identically 0 in y
]


@pytest.mark.parametrize(("text", "reduction"), COUPLED_SAMPLES)
def test_derivatives_of_losses_coupling_samples_are_jaxs_own(text, reduction):
    """Gradients, Hessians and per-sample Jacobians of losses that couple samples (groups,
    pairs, risk sets) equal JAX's autodiff of the same printed value (derivatives="jax"):
    a group's gradient was left per group, pair and risk-set Hessians kept their diagonal
    only, per-sample Jacobians were taken as separable, z read only at the partners had
    gradient 0 (in the kernels too), and a zero gradient broke jax.hessian's shapes."""
    rng = np.random.default_rng(0)
    n = 6
    arrays = {"y": np.abs(rng.normal(size=n)) + np.arange(n), "z": rng.normal(size=n),
              "q": np.array([3.0, 3.0, 1.0, 1.0, 1.0, 7.0]), "x": rng.normal(size=n)}
    if text.startswith("ranknet"):
        arrays["y"] = rng.integers(0, 3, n).astype(float)
    if text.startswith("hinge"):
        arrays["y"] = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
    ours = lossdsl.jax.loss(text, reduction=reduction)
    theirs = lossdsl.jax.loss(text, reduction=reduction, derivatives="jax")
    inputs = {name: jnp.asarray(arrays[name]) for name in ours.inputs}
    wrt = "x" if "x" in inputs else "z"
    others = {k: v for k, v in inputs.items() if k != wrt}

    def scalar(loss):
        weights = jnp.linspace(0.5, 1.5, n)
        return lambda v: (jnp.sum(weights * loss(**{wrt: v}, **others))
                          if reduction == "none" else loss(**{wrt: v}, **others))

    for derivative in (jax.grad, jax.hessian):  # jitted: eager Hessians of scans take seconds
        np.testing.assert_allclose(jax.jit(derivative(scalar(ours)))(inputs[wrt]),
                                   jax.jit(derivative(scalar(theirs)))(inputs[wrt]),
                                   rtol=1e-10, atol=1e-12)
    if reduction == "none":  # jitted too: op by op, the Jacobians of scans took 10 s
        np.testing.assert_allclose(
            jax.jit(jax.jacobian(lambda v: ours(**{wrt: v}, **others)))(inputs[wrt]),
            jax.jit(jax.jacobian(lambda v: theirs(**{wrt: v}, **others)))(inputs[wrt]),
            rtol=1e-10, atol=1e-12)
    if text.startswith("hinge"):
        np.testing.assert_array_equal(jax.hessian(lambda y: ours(y=y, x=inputs["x"]))(
            inputs["y"]), 0.0)
    kernel = lossdsl.compile(text, reduction="sum")
    if reduction == "sum" and not text.startswith("hinge"):
        step = 1e-6
        found = kernel.grad(wrt, **arrays_for(kernel, arrays))
        for i in range(n):
            shifted = dict(arrays_for(kernel, arrays))
            up, down = shifted[wrt].copy(), shifted[wrt].copy()
            up[i] += step
            down[i] -= step
            difference = (kernel(**{**shifted, wrt: up}) - kernel(**{**shifted, wrt: down}))
            assert found[i] == pytest.approx(difference / (2 * step), rel=1e-5, abs=1e-7)


def arrays_for(kernel, arrays):
    return {name: arrays[name] for name in kernel.inputs}


# ------------------------------------------------------------------ risk sets: full Hessians

# times 2, 2, 2, 3, 1, 3, 3, 5 (events where y > 0): two events tied at 2 and at 3, each
# with a censored sample tied to them; strata 0/1 split every risk set
RISK_Y = np.array([2.0, -2.0, 2.0, 3.0, 1.0, -3.0, 3.0, 5.0])
RISK_STRATA = np.array([0, 1, 0, 1, 0, 1, 0, 1])
RISK_SETS = ["cox_ph(y, z)", "cox_ph(y, z, g)", "cox_ph_efron(y, z)"]


def breslow_reference(y, z, strata):
    """Cox's negative log partial likelihood, Breslow's ties, written directly (no lossdsl):
    each event's log sum of exp(z) over its risk set (the samples of its stratum whose time
    is at least its own: a masked N x N matrix), minus its score."""
    times, events = np.abs(y), y > 0
    at_risk = (times[None, :] >= times[:, None]) & (strata[None, :] == strata[:, None])
    log_risk = jax.nn.logsumexp(jnp.where(at_risk, z[None, :], -jnp.inf), axis=1)
    return jnp.sum(jnp.where(events, log_risk - z, 0.0))


def efron_reference(y, z):
    """Efron's ties, a plain double loop (no lossdsl): the d events tied at a time share
    sum_{l<d} log(R - (l/d) D) - sum z, R the risk set's sum of exp(z) and D the tied
    events'; the l-th tied event (in the order given) takes the term of l."""
    times, events = np.abs(y), y > 0
    total = 0.0
    for i in np.flatnonzero(events):
        tied = [j for j in np.flatnonzero(events) if times[j] == times[i]]
        risk = sum(jnp.exp(z[j]) for j in range(len(y)) if times[j] >= times[i])
        tied_total = sum(jnp.exp(z[j]) for j in tied)
        share = tied.index(i) / len(tied)
        total = total + jnp.log(risk - share * tied_total) - z[i]
    return total


def risk_set_reference(text: str, y, strata):
    """The hand-written partial likelihood of ``text`` as a function of the scores."""
    if text.startswith("cox_ph_efron"):
        return lambda z: efron_reference(y, z)
    groups = strata if "g" in text else np.zeros(len(y), int)
    return lambda z: breslow_reference(y, z, groups)


@functools.cache
def risk_set_derivatives(text: str):
    """(``derivatives(z, y, direction)``, ``hessian(z, y)``) of a risk-set loss (reduction
    "sum", strata ``RISK_STRATA``), jitted (compiling a scan's second derivative takes
    seconds) and shared by the tests below. ``derivatives`` gives the second derivative in
    z as jax.hessian (forward over reverse), as a Hessian-vector product (jvp of the
    gradient) and as jax.grad of |gradient|^2 (2 H g: reverse over reverse), then the
    gradient (the middle two None outside ``EVERY_MODE_RISK_SETS``); ``hessian``
    jax.hessian alone."""
    f = lossdsl.jax.loss(text, reduction="sum")
    strata = {"g": RISK_STRATA} if "g" in f.inputs else {}

    def of(z, y):
        return f(y, z, **strata)

    gradient = jax.grad(of)

    @jax.jit
    def derivatives(z, y, direction):
        if text not in EVERY_MODE_RISK_SETS:  # jax.hessian and the gradient alone
            return jax.hessian(of)(z, y), None, None, gradient(z, y)
        _, product = jax.jvp(lambda s: gradient(s, y), (z,), (direction,))
        squared = jax.grad(lambda s: jnp.sum(gradient(s, y) ** 2))(z)
        return jax.hessian(of)(z, y), product, squared, gradient(z, y)

    return derivatives, jax.jit(jax.hessian(of))


# On CI (CI=true without LOSSDSL_FULL_SWEEPS=1) the full-Hessian checks (exact, and at
# extreme scores) leave out plain Breslow, which the stratified loss contains (each stratum
# is a cox_ph): each loss compiles JAX's Hessians of its printed scans in float64 and float32,
# seconds of XLA. Plain Breslow's printed Hessian still runs on CI in the Newton fit below.
FULL_HESSIAN_RISK_SETS = RISK_SETS[1:] if SAMPLING else RISK_SETS
# and the second derivatives taken the other ways (a Hessian-vector product, reverse over
# reverse) run for the stratified Breslow loss alone: each is one more differentiation of the
# printed scans for XLA to compile (Efron's: 8 of the test's 28 CPU-seconds, cold); Efron's
# jax.hessian, its central differences and its float32 Hessian still run on CI.
EVERY_MODE_RISK_SETS = RISK_SETS[1:2] if SAMPLING else RISK_SETS


@pytest.mark.parametrize("text", FULL_HESSIAN_RISK_SETS)
def test_risk_set_hessian_is_full_and_exact(text):
    """jax.hessian of a risk-set loss is the full matrix, with strata and tied times: equal to
    JAX's Hessian of the partial likelihood written by hand, and to central differences of
    the Numba kernel's gradient; so are reverse over reverse (jax.grad of a function of the
    gradient) and Hessian-vector products. It was the diagonal alone. In float32 it is
    finite and within float32's digits."""
    z = np.random.default_rng(17).normal(0.0, 1.0, RISK_Y.size)
    # compiled once: op by op, Efron's double loop differentiated twice takes seconds
    reference = np.asarray(jax.jit(jax.hessian(risk_set_reference(text, RISK_Y, RISK_STRATA)))(z))
    off_diagonal = reference - np.diag(np.diag(reference))
    assert np.abs(off_diagonal).max() > 0.05
    if "g" in text:  # no coupling across strata
        assert np.all(off_diagonal[RISK_STRATA[:, None] != RISK_STRATA[None, :]] == 0)
    direction = np.linspace(-1.0, 1.0, z.size)
    derivatives, hessian_alone = risk_set_derivatives(text)
    hessian, product, squared, gradient = derivatives(z, RISK_Y, direction)
    assert_close(hessian, reference, f"{text}: jax.hessian")
    assert (product is None) == (text not in EVERY_MODE_RISK_SETS)
    if text in EVERY_MODE_RISK_SETS:
        assert_close(product, reference @ direction, f"{text}: Hessian-vector product")
        assert_close(squared, 2 * reference @ np.asarray(gradient), f"{text}: grad of |g|^2")
    # central differences of the kernel's gradient, no JAX at all
    kernel = lossdsl.compile(text, reduction="sum")
    strata = {"g": RISK_STRATA} if "g" in kernel.inputs else {}
    step = 1e-5
    columns = [(kernel.grad("z", y=RISK_Y, z=z + step * e, **strata)
                - kernel.grad("z", y=RISK_Y, z=z - step * e, **strata)) / (2 * step)
               for e in np.eye(z.size)]
    assert_close(hessian, np.stack(columns, axis=1), f"{text}: differences", 1e-8)
    single = hessian_alone(z.astype(np.float32), RISK_Y.astype(np.float32))
    assert single.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(single)))
    # the kernels' float32 diagonal of Efron's is 1.1e-5 off too (its log_poch form)
    assert_close(single, reference, f"{text} float32", 5e-5)


RISK_EXTREMES = {
    "scores of +-700 and +-30": np.array([700.0, -700.0, 30.0, -30.0, 0.0, 700.0, -30.0, 30.0]),
    "scores of 0 (a first boosting round)": np.zeros(8),
    "scores of -700": np.full(8, -700.0),
}


@pytest.mark.parametrize("text", FULL_HESSIAN_RISK_SETS)
@pytest.mark.parametrize("scores", RISK_EXTREMES, ids=str)
@pytest.mark.parametrize("censored", [False, True], ids=["events", "all censored"])
def test_risk_set_hessian_at_extreme_scores(text, scores, censored):
    """Extreme scores, ties and every sample censored: the full Hessian is finite where the
    kernel's diagonal is (in float32 too, within its digits), symmetric, its diagonal the
    kernel's (both exact), and for Breslow's ties the hand-written reference's (Efron's
    switches to Breslow's terms past a gap of 30: the kernel and central differences of its
    gradient are the reference)."""
    z = RISK_EXTREMES[scores]
    y = -np.abs(RISK_Y) if censored else RISK_Y
    derivatives, hessian_alone = risk_set_derivatives(text)
    found = np.asarray(derivatives(z, y, z)[0])
    single = hessian_alone(z.astype(np.float32), y.astype(np.float32))
    assert np.all(np.isfinite(np.asarray(single))), f"{text} float32"
    assert_close(single, found, f"{text} float32", 1e-4)
    kernel = lossdsl.compile(text, reduction="sum")
    strata = {"g": RISK_STRATA} if "g" in kernel.inputs else {}
    diagonal = kernel.hessian("z", y=y, z=z, **strata)
    assert np.all(np.isfinite(diagonal)) and np.all(np.isfinite(found)), text
    np.testing.assert_allclose(found, found.T, rtol=1e-12, atol=1e-300)
    assert_close(np.diag(found), diagonal, f"{text} diagonal")
    if censored:
        np.testing.assert_array_equal(found, 0.0)
    elif text.startswith("cox_ph_efron"):
        step = 1e-4  # scores of 700 round a smaller step to a few digits
        columns = [(kernel.grad("z", y=y, z=z + step * e) - kernel.grad("z", y=y, z=z - step * e))
                   / (2 * step) for e in np.eye(z.size)]
        assert_close(found, np.stack(columns, axis=1), f"{text}: differences", 1e-7)
    else:
        reference = jax.hessian(risk_set_reference(text, y, RISK_STRATA))(z)
        assert_close(found, reference, f"{text} reference")


def test_newton_with_the_full_hessian_reaches_lifelines_coefficients():
    """Newton's method on a linear Cox model, its Hessian jax.hessian through lossdsl's
    scores (X^T H X, the full H): six steps reach lifelines' coefficients (without ties,
    lifelines' Efron is Breslow's cox_ph); the diagonal of H alone did not. (Breslow's:
    compiling Efron's Hessian over 60 samples takes JAX three times as long.)"""
    lifelines = pytest.importorskip("lifelines")
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(19)
    features = rng.normal(size=(60, 2))
    times = rng.exponential(np.exp(-features @ np.array([0.8, -0.5])))  # no ties
    observed = rng.uniform(size=60) < 0.7
    f = lossdsl.jax.loss("cox_ph(y, z)", reduction="sum")
    y = np.where(observed, times, -times)

    def objective(beta):
        return f(y, features @ beta)

    @jax.jit
    def newton(beta):
        return beta - jnp.linalg.solve(jax.hessian(objective)(beta), jax.grad(objective)(beta))

    beta = jnp.zeros(2)
    for _ in range(6):
        beta = newton(beta)
    table = pandas.DataFrame({"a": features[:, 0], "b": features[:, 1], "t": times,
                              "e": observed.astype(int)})
    # lifelines' own Newton steps, to convergence (its default stops at a gradient of 1e-4)
    fitted = lifelines.CoxPHFitter().fit(table, duration_col="t", event_col="e", fit_options={
        "precision": 1e-12, "r_precision": 1e-12, "step_size": 1.0})
    np.testing.assert_allclose(np.asarray(beta), fitted.params_[["a", "b"]].to_numpy(),
                               rtol=1e-6)


def test_integer_times_and_strata_that_float32_rounds_are_refused():
    # float32 scores made the risk sets' keys float32: Unix times tied, strata merged
    cox = lossdsl.jax.loss("cox_ph(y, z, g)", reduction="none")
    z = np.zeros(4, np.float32)
    with pytest.raises(LossDomainError, match="'g' gives the strata"):
        cox(y=np.ones(4, np.float32), z=z, g=np.array([2**24, 2**24 + 1] * 2))
    times = np.arange(1_700_000_000, 1_700_000_004)
    with pytest.raises(LossDomainError, match="'y' gives the keys"):
        cox(y=times, z=z, g=np.zeros(4, int))
    exact = cox(y=times - 1_700_000_000 + 1, z=z, g=np.zeros(4, int))
    np.testing.assert_allclose(exact, np.log([4.0, 3.0, 2.0, 1.0]), rtol=1e-6)
