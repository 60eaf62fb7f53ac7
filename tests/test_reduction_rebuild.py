"""A reduction rebuilt after the shapes pass keeps the axis it reduced (``ir.build.rebuilt``).

``make`` infers a reduction's axes from its argument, so a rule that removed the only term
of the argument along the reduced axis (the carriers phase dropping ``s - stop_gradient(s)``
or ``exp(partner(s) - stop_gradient(partner(s)))``) used to rebuild the reduction around
another axis, or none; ``passes.lower`` then kept such carriers. Now the rebuilt reduction
reduces the same axis, of its new argument broadcast back along it.

Checked: at the IR, a rule that drops the axis-carrying term inside each kind of reduction
gives a reduction over the same axis, with the values NumPy gives for the broadcast argument;
losses whose only group, pair or sample term is a carrier have the values, gradients and
Hessians of JAX's autodiff of the hand-written formula (closed forms at a size that runs the
threads) on the CPU, parallel and CUDA-simulator targets, and value kernels that no longer
compute the carrier.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from coupled import shuffled_group_ids

import lossdsl
from lossdsl import compiler
from lossdsl.binding import PARALLEL_MIN_ELEMENTS
from lossdsl.ir.build import result_axes
from lossdsl.ir.node import Node, node, toposort
from lossdsl.passes.rewrite import Phase, apply_phase, rule
from lossdsl.passes.rules.expand import CARRIERS
from lossdsl.reference import evaluate

# --- at the IR: a rule removes the only term along the reduced axis ----------------------------

ITEMS = node("input", (), "x", ("n0", "n0g"))  # a value per item of each group
CLASSES = node("input", (), "z", ("n0", "n0k"))  # a class matrix
SAMPLES = node("input", (), "v", ("n0",))  # a value per sample
ROWS = node("input", (), "t", ("n0",))  # one value per row (group)
TARGETS = node("input", (), "u", ("n0",))
NUMBER = node("const", (), 2.5, ())
OFFSETS = np.array([0, 3, 4, 6])  # three groups of 3, 1 and 2 items
INPUTS = {"x": np.array([0.5, -1.0, 2.0, 0.25, 1.5, -0.5]),
          "z": np.array([[0.3, 1.2, -0.4], [2.0, 0.1, 0.7], [-1.0, -1.5, 0.2]]),
          "v": np.array([4.0, -3.0, 0.5]), "t": np.array([0.7, -1.3, 2.1]),
          "u": np.array([1.0, 0.25, 1.5])}
T, U, SIZES = INPUTS["t"], INPUTS["u"], np.diff(OFFSETS)


def raw(op: str, *args: Node) -> Node:
    """``op(args)`` exactly as written: no folding, ordering or identities."""
    return node(op, args, None, result_axes(op, args))


@rule("add")
def drop_the_varying_term(n: Node) -> Node | None:
    """``a + b -> a`` where ``b`` is the term along the reduced axis (what the carriers
    phase does to ``a + (x - stop_gradient(x))``)."""
    a, b = n.args
    return a if b in (ITEMS, CLASSES, SAMPLES) else None


DROPPING = Phase("dropping", (drop_the_varying_term,))


def along_rows(x: np.ndarray, sizes, reduce) -> np.ndarray:
    """``reduce`` of each row of equal values ``x`` (one per row), of the ``sizes`` given."""
    return np.array([reduce(np.full(size, value)) for value, size in zip(x, sizes)])


def sparsemax_threshold(row: np.ndarray) -> float:
    """The tau with sum(max(row - tau, 0)) = 1, by bisection."""
    low, high = row.min() - 1.0, row.max()
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if np.maximum(row - middle, 0).sum() > 1 else (low, middle)
    return (low + high) / 2


def logit_shift(row: np.ndarray, target: float) -> float:
    """The b with sum(sigmoid(row + b)) = target, by bisection."""
    low, high = -50.0, 50.0
    for _ in range(200):
        middle = (low + high) / 2
        total = np.sum(1 / (1 + np.exp(-(row + middle))))
        low, high = (middle, high) if total < target else (low, middle)
    return (low + high) / 2


# (reduction before the rule, its value once the rule dropped the varying term, by NumPy)
IR_CASES = [
    ("rowsum over a group's items", raw("rowsum", raw("add", ROWS, ITEMS)),
     along_rows(T, SIZES, np.sum)),
    ("rowmax over a group's items", raw("rowmax", raw("add", ROWS, ITEMS)),
     along_rows(T, SIZES, np.max)),
    ("rowsum over classes", raw("rowsum", raw("add", ROWS, CLASSES)),
     along_rows(T, [3, 3, 3], np.sum)),
    ("sparsemax threshold", raw("sparsemax_threshold", raw("add", ROWS, CLASSES)),
     along_rows(T, [3, 3, 3], sparsemax_threshold)),
    ("logit shift", raw("logit_shift", raw("add", ROWS, ITEMS), TARGETS),
     np.array([logit_shift(np.full(size, t), u) for t, u, size in zip(T, U, SIZES)])),
    ("sum over the samples", raw("sum", raw("add", NUMBER, SAMPLES)), 3 * 2.5),
    ("at_partner of what is the same for every sample",
     raw("rowsum", node("at_partner", (raw("add", NUMBER, SAMPLES),), None, ("n0", "n0g"))),
     2.5 * SIZES),
]


@pytest.mark.parametrize("name, before, expected", IR_CASES, ids=[c[0] for c in IR_CASES])
def test_a_rule_that_drops_the_varying_term_keeps_the_reduced_axis(name, before, expected):
    """The rule removes the only term along the reduced axis: the reduction rebuilt around
    what is left gives one value per row of the same rows (or a scalar), each the reduction
    of the row's value broadcast along the row."""
    (after,) = apply_phase(DROPPING, [before])
    assert after.axes == before.axes
    assert not {ITEMS, CLASSES, SAMPLES} & set(toposort([after]))
    (value,) = evaluate([after], INPUTS, counts={"n0": 3, "n0k": 3},
                        offsets={"n0g": OFFSETS}, partners={"n0g": np.array([1, 2, 0, 1, 0, 2])})
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_the_carriers_phase_keeps_a_group_sum_over_the_items() -> None:
    """``rowsum(t + (x - stop_gradient(x)))`` over a group's items is each group's ``t``
    times its size, not the sum of ``t`` over the groups."""
    carried = raw("rowsum", raw("add", ROWS, raw("sub", ITEMS, raw("stop_gradient", ITEMS))))
    (after,) = apply_phase(CARRIERS, [carried])
    assert after.axes == ("n0",)
    assert not any(n.op == "stop_gradient" for n in toposort([after]))
    (value,) = evaluate([after], INPUTS, offsets={"n0g": OFFSETS})
    np.testing.assert_allclose(value, T * SIZES, rtol=1e-15)


# --- losses whose only group, pair or sample term is a carrier -------------------------------


def same_group(g, jnp, itself: bool):
    mask = g[:, None] == g[None, :]
    return mask if itself else mask & ~jnp.eye(g.size, dtype=bool)


def pair_log_sum(s, t, g, jax):
    """log(pairsum(exp(partner(s) - stop_gradient(partner(s))), g)), summed."""
    jnp = jax.numpy
    terms = jnp.exp(s - jax.lax.stop_gradient(s))
    return jnp.sum(jnp.log(jnp.sum(jnp.where(same_group(g, jnp, False), terms[None, :], 0.0),
                                   axis=1)))


def group_max_carrier(s, t, g, jax):
    """groupmax(s, g)*(s - stop_gradient(s)) + groupsum(t, g), summed."""
    jnp = jax.numpy
    mask = same_group(g, jnp, True)
    largest = jnp.max(jnp.where(mask, s[None, :], -jnp.inf), axis=1)
    total = jnp.sum(jnp.where(mask, t[None, :], 0.0), axis=1)
    return jnp.sum(largest * (s - jax.lax.stop_gradient(s)) + total)


def weighted_pair_carrier(s, t, g, jax):
    """pairsum(t*exp(partner(s) - stop_gradient(partner(s))), g) + s^2, summed."""
    jnp = jax.numpy
    terms = t[:, None] * jnp.exp(s - jax.lax.stop_gradient(s))[None, :]
    return jnp.sum(jnp.where(same_group(g, jnp, False), terms, 0.0)) + jnp.sum(s ** 2)


def constant_plus_carrier(s, t, g, jax):
    """2.5 + (s - stop_gradient(s))*stop_gradient(t), summed."""
    return jax.numpy.sum(2.5 + (s - jax.lax.stop_gradient(s)) * jax.lax.stop_gradient(t))


# (loss text, the JAX formula, groups may hold one sample, source the value kernel lacks)
LOSSES = [
    ("log(pairsum(exp(partner(s) - stop_gradient(partner(s))), g))", pair_log_sum, False,
     "math.exp("),
    ("groupmax(s, g)*(s - stop_gradient(s)) + groupsum(t, g)", group_max_carrier, True,
     "row_max("),
    ("pairsum(t*exp(partner(s) - stop_gradient(partner(s))), g) + s^2",
     weighted_pair_carrier, True, "math.exp("),
    ("2.5 + (s - stop_gradient(s))*stop_gradient(t)", constant_plus_carrier, True, None),
]
TARGETS_RUN = ("cpu", "parallel", "cuda")


@functools.cache
def compiled(text: str, target: str = "cpu") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction="sum")


def data(singletons: bool, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = shuffled_group_ids(rng, 4, 5)
    if not singletons:  # each group of one gets a second sample
        ids, counts = np.unique(g, return_counts=True)
        g = np.concatenate([g, ids[counts == 1]])
    return {"s": rng.normal(0.0, 1.5, g.size), "t": rng.normal(size=g.size), "g": g}


@pytest.mark.parametrize("text, formula, singletons, absent", LOSSES,
                         ids=[c[0] for c in LOSSES])
@pytest.mark.parametrize("target", TARGETS_RUN)
def test_values_and_derivatives_match_jax(text, formula, singletons, absent, target,
                                          jax_x64) -> None:
    jax = jax_x64
    d = data(singletons)
    loss = compiled(text, target)
    inputs = {name: d[name] for name in loss.inputs}
    value, gradient, hessian = loss.compute(True, ("s",), ("s",), inputs, None)

    def total(s):
        return formula(s, jax.numpy.asarray(d["t"]), jax.numpy.asarray(d["g"]), jax)

    s = jax.numpy.asarray(d["s"])
    assert value == pytest.approx(float(total(s)), rel=1e-12)
    np.testing.assert_allclose(gradient, np.asarray(jax.grad(total)(s)), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(hessian, np.diag(np.asarray(jax.hessian(total)(s))),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, formula, singletons, absent", LOSSES,
                         ids=[c[0] for c in LOSSES])
def test_the_value_kernel_computes_no_carrier(text, formula, singletons, absent) -> None:
    loss = compiled(text)
    spec = loss.specialization(loss.default_ranks())
    (value,) = compiler.optimize([spec.objective.value])
    assert not any(n.op == "stop_gradient" for n in toposort([value])), str(value)
    request = compiler.KernelRequest(np.dtype("float64"), "cpu", True, (), ())
    source = compiler.generate_source(spec, request).source
    if absent is not None:
        assert absent not in source


def test_threads_run_the_group_and_pair_carriers_exactly() -> None:
    """At a size that runs the parallel loops: closed forms by NumPy. The group maximum's
    carrier has the derivative of the maximum (2 at each group's largest score, through
    both factors); the pair sum's is each sample's partners' t."""
    rng = np.random.default_rng(8)
    n = 2 * PARALLEL_MIN_ELEMENTS
    g = rng.integers(0, 6000, n)
    s, t = rng.permutation(n) / n, rng.normal(size=n)  # distinct scores: no ties
    group_total = np.bincount(g, weights=t)[g]
    sizes = np.bincount(g)[g]
    largest = np.full(g.max() + 1, -np.inf)
    np.maximum.at(largest, g, s)

    loss = compiled("groupmax(s, g)*(s - stop_gradient(s)) + groupsum(t, g)", "parallel")
    value, gradient, hessian = loss.compute(True, ("s",), ("s",), {"s": s, "g": g, "t": t},
                                            None)
    assert value == pytest.approx(np.sum(group_total), rel=1e-10)
    np.testing.assert_allclose(gradient, largest[g], rtol=1e-15)
    np.testing.assert_array_equal(hessian, np.where(s == largest[g], 2.0, 0.0))

    loss = compiled("pairsum(t*exp(partner(s) - stop_gradient(partner(s))), g) + s^2",
                    "parallel")
    value, gradient, hessian = loss.compute(True, ("s",), ("s",), {"s": s, "g": g, "t": t},
                                            None)
    assert value == pytest.approx(np.sum(t * (sizes - 1) + s ** 2), rel=1e-10)
    np.testing.assert_allclose(gradient, group_total - t + 2 * s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian, group_total - t + 2, rtol=1e-10, atol=1e-12)
