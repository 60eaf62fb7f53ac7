"""lossdsl.jax: labels and group ids read as given, and the xlogy helpers' derivatives.

* Where ``jax_enable_x64`` is off, JAX reads float64 arrays as float32: a float64 label
  16777217.0 (2**24 + 1) read as 16777216.0, the neighbouring table row or class, and two
  float64 group ids 2**24 and 2**24 + 1 one group. Concrete labels are checked as given and
  refused where the rounding changes what they name; traced ones (under ``jit``, already
  float32) past 2**24 of a wider axis make the result NaN. Against NumPy's own indexing.
* A class label at or past 2**24 of more classes, compared with the class index in float32,
  made a gradient's one-hot row hit two classes (refused, NaN under ``jit``); a group total's
  integer ids were read in float32 (2**24 and 2**24 + 1 merged): now read as given.
* int8, uint8, int16 and uint16 labels of more classes or rows than their type holds were
  range-checked in their own type, which wrapped: a false NaN.
* float64 event times that float32 rounds to one number (1.0 and 1.0 + 1e-9) tied in
  ``cox_ph``'s risk sets, which changed the loss without a sign (1.2299 for 1.0869): refused
  with the x64 advice, also where the two are a censored and an event time (``abs(y)``).
* ``derivatives="jax"`` differentiated the ``where`` that makes ``xlogy(0, y)`` 0: its
  derivative in x was 0 at x = 0 instead of log(y) (log1p(y) for xlog1py). Against the
  analytic first and second derivatives and scipy.special's values.

The wide arrays (2**24 + 2 entries, 64 MB in float32) are built once per module.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lossdsl.errors import LossDomainError

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import lossdsl.jax  # noqa: E402

#: The first integer float32 does not hold: it reads as 2**24.
BEYOND = 2 ** 24 + 1
WIDTH = BEYOND + 1  # rows or classes, so that BEYOND is a label in range
X64_ADVICE = r"JAX reads float64 arrays as float32 \(jax_enable_x64 is off\)"


@pytest.fixture
def x64_off():
    with jax.enable_x64(False):
        yield


@pytest.fixture
def x64_on():
    with jax.enable_x64(True):
        yield


@functools.cache
def _wide_float32() -> np.ndarray:
    """(WIDTH,) float32 counting 0, 1, 2, ... modulo 1000 (float32 holds them), so that a
    row or class read is known by its value, and the neighbours of 2**24 differ."""
    return (np.arange(WIDTH) % 1000).astype(np.float32)


@functools.cache
def _losses() -> dict[str, lossdsl.jax.JaxLoss]:
    return {
        "pick": lossdsl.jax.loss("pick(z, y)", reduction="none"),
        "pick_sum": lossdsl.jax.loss("pick(z, y)", reduction="sum"),
        "ignored": lossdsl.jax.loss("pick(z, y)", reduction="none", ignore_index=-100),
        "rowof": lossdsl.jax.loss("rowsum(rowof(C, y)*s)", reduction="none"),
        "groups": lossdsl.jax.loss("groupsum(v, q)", reduction="none"),
        "class_groups": lossdsl.jax.loss("rowsum(groupsum(x, q))", reduction="none"),
        "cce": lossdsl.jax.loss("sparse_cce_logits(y, z)", reduction="none"),
    }


def _call(kind: str, labels, jit: bool = False):
    """The loss ``kind`` reading ``labels`` in the wide table or class row."""
    loss = _losses()[kind]
    if kind == "rowof":
        table = _wide_float32()[:, None]
        scale = np.ones((len(labels), 1), np.float32)
        run = lambda y, C, s: loss(C=C, y=y, s=s)  # noqa: E731
        arguments = (labels, table, scale)
    else:
        scores = np.broadcast_to(_wide_float32(), (len(labels), WIDTH))
        run = lambda y, z: loss(y=y, z=z)  # noqa: E731
        arguments = (labels, scores)
    return np.asarray((jax.jit(run) if jit else run)(*arguments))


# ------------------------------------------------------------------ float64 labels, x64 off
@pytest.mark.parametrize("kind", ["pick", "ignored", "rowof"])
def test_float64_labels_float32_rounds_are_refused(x64_off, kind):
    """16777217.0 read as 16777216.0 (row 16777216 of the table, whose value is 216, not
    217): refused, saying what to do; under jit (JAX has rounded it) NaN."""
    with pytest.raises(LossDomainError, match=X64_ADVICE):
        _call(kind, np.array([float(BEYOND)]))
    assert np.isnan(_call(kind, np.array([float(BEYOND)]), jit=True)).all()


def test_exact_float64_and_integer_labels_still_read_their_row(x64_off):
    """Labels float32 holds, as float64 or integers, read their row (NumPy's indexing);
    integer labels past 2**24 too, also under jit, where a float32 one cannot be told from
    a rounded one (NaN)."""
    values = _wide_float32()
    for labels in (np.array([3.0, 2.0 ** 24]), np.array([3, 2 ** 24, BEYOND])):
        expected = values[labels.astype(np.int64)]
        np.testing.assert_array_equal(_call("rowof", labels), expected)
    np.testing.assert_array_equal(_call("rowof", np.array([3, BEYOND]), jit=True),
                                  values[[3, BEYOND]])
    assert np.isnan(_call("rowof", np.array([2.0 ** 24], np.float32), jit=True)).all()
    np.testing.assert_array_equal(_call("pick", np.array([999.0]), jit=True), [999.0])


def test_float64_group_ids_float32_merges_are_refused(x64_off):
    """Ids 2**24 and 2**24 + 1 as float64 were one group under jit (totals [3, 3], not
    [1, 2]); eagerly the refusal says what to do."""
    loss = _losses()["groups"]
    values = np.array([1.0, 2.0], np.float32)
    ids = np.array([2.0 ** 24, 2.0 ** 24 + 1])
    with pytest.raises(LossDomainError, match=X64_ADVICE):
        loss(v=values, q=ids)
    traced = jax.jit(lambda v, q: loss(v=v, q=q))
    assert np.isnan(np.asarray(traced(values, ids))).all()
    np.testing.assert_array_equal(traced(values, np.array([5.0, 7.0])), [1.0, 2.0])
    np.testing.assert_array_equal(traced(values, ids.astype(np.int32)), [1.0, 2.0])


@pytest.mark.parametrize("jit", [False, True])
def test_group_totals_read_integer_ids_as_given(x64_off, jit):
    """groupsum of rows (N, K) read its integer ids in float32: 2**24 and 2**24 + 1 merged
    (each sample's row total 6 instead of 3)."""
    loss = _losses()["class_groups"]
    rows = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    ids = np.array([2 ** 24, 2 ** 24 + 1], np.int32)
    run = lambda x, q: loss(x=x, q=q)  # noqa: E731
    found = (jax.jit(run) if jit else run)(rows, ids)
    np.testing.assert_array_equal(found, rows.sum(axis=1))  # each sample its own group


# ------------------------------------------------------------------ class labels past 2**24
def test_class_label_past_float32_integers_is_refused(x64_off):
    """Label 2**24 of 2**24 + 2 classes: the class index 2**24 + 1 reads as 2**24 in
    float32, so the gradient's one-hot row had two classes (d/dz 1 at both)."""
    loss = _losses()["pick_sum"]
    scores = _wide_float32()[None, :]
    with pytest.raises(LossDomainError, match="more than float32 can number exactly"):
        jax.grad(lambda z: loss(y=np.array([2 ** 24]), z=z))(scores)
    gradient = jax.jit(jax.grad(lambda y, z: loss(y=y, z=z), argnums=1))
    assert np.isnan(np.asarray(gradient(np.array([2 ** 24]), scores))).all()
    found = np.asarray(gradient(np.array([2 ** 24 - 1]), scores))
    np.testing.assert_array_equal(np.flatnonzero(found[0]), [2 ** 24 - 1])


# ------------------------------------------------------------------ narrow integer labels
#: More classes than uint16 numbers, which int8, uint8, int16 and uint16 all wrap to 50
NARROW_WIDTH = 2 ** 16 + 50


@functools.cache
def _narrow_case() -> tuple[np.ndarray, np.ndarray]:
    """Scores of 3 samples over NARROW_WIDTH classes, and their softmax cross-entropy at
    labels 0, 5 and 100 (scipy.special.logsumexp)."""
    from scipy.special import logsumexp

    scores = np.random.default_rng(3).normal(size=(3, NARROW_WIDTH)).astype(np.float32)
    labels = np.array([0, 5, 100])
    expected = logsumexp(scores.astype(np.float64), axis=1) - scores[np.arange(3), labels]
    return scores, expected


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
def test_narrow_integer_labels_of_wider_axes(x64_off, dtype):
    """Checked in their own type, the width wrapped around to 50: label 100 was NaN."""
    scores, expected = _narrow_case()
    labels = np.array([0, 5, 100], dtype)
    loss = _losses()["cce"]
    for run in (loss, jax.jit(loss)):
        np.testing.assert_allclose(run(labels, scores), expected, rtol=1e-5)
    table = np.arange(NARROW_WIDTH, dtype=np.float32)[:, None]
    rows = jax.jit(lambda C, y, s: _losses()["rowof"](C=C, y=y, s=s))(
        table, labels, np.ones((3, 1), np.float32))
    np.testing.assert_array_equal(rows, [0.0, 5.0, 100.0])
    if np.iinfo(dtype).min < 0:  # and a label out of range is still NaN
        assert np.isnan(np.asarray(jax.jit(loss)(np.array([0, -1, 2], dtype), scores))).any()


# ------------------------------------------------------------------ xlogy, xlog1py
X = np.array([0.0, 0.0, 0.5, -1.5, 0.0, 2.0])
Y = np.array([2.0, 0.25, 3.0, 0.5, 0.0, 1.0])  # x = 0 on the pole y = 0 (xlogy) too


@functools.cache
def _xlog_losses(name: str, derivatives: str) -> lossdsl.jax.JaxLoss:
    return lossdsl.jax.loss(f"{name}(x, y)", reduction="sum", derivatives=derivatives)


@pytest.mark.parametrize("derivatives", ["jax", "lossdsl"])
@pytest.mark.parametrize("name", ["xlogy", "xlog1py"])
def test_xlogy_derivatives_at_zero(x64_on, name, derivatives):
    """d/dx x log(u) = log(u) also at x = 0 (u = y, or 1 + y for xlog1py), d/dy = x/u;
    second derivatives 0, 1/u and -x/u^2; all 0 at x = 0 on the pole u = 0, where the
    value is 0 log 0 = 0 (lossdsl's partials, as PyTorch's there)."""
    import scipy.special

    shift = 1.0 if name == "xlog1py" else 0.0
    y = Y - shift if name == "xlog1py" else Y  # the same u = Y for both
    u, pole = Y, (X == 0) & (Y == 0)
    loss = _xlog_losses(name, derivatives)
    total = jax.jit(lambda x, y: loss(x=x, y=y))
    assert float(total(X, y)) == pytest.approx(np.sum(getattr(scipy.special, name)(X, y)),
                                               rel=1e-14)
    safe = np.where(pole, 1.0, u)
    by_x, by_y = jax.jit(jax.grad(lambda x, y: loss(x=x, y=y), argnums=(0, 1)))(X, y)
    np.testing.assert_allclose(by_x, np.where(pole, 0.0, np.log(safe)), rtol=1e-14)
    np.testing.assert_allclose(by_y, np.where(pole, 0.0, X / safe), rtol=1e-14)
    hessian = jax.jit(jax.hessian(lambda x, y: loss(x=x, y=y), argnums=(0, 1)))(X, y)
    expected = {(0, 0): np.zeros_like(X), (0, 1): np.where(pole, 0.0, 1.0 / safe),
                (1, 0): np.where(pole, 0.0, 1.0 / safe),
                (1, 1): np.where(pole, 0.0, -X / safe ** 2)}
    for (i, j), diagonal in expected.items():
        block = np.asarray(hessian[i][j])
        np.testing.assert_allclose(np.diag(block), diagonal, rtol=1e-14, err_msg=f"{i}{j}")
        np.testing.assert_array_equal(block - np.diag(np.diag(block)), 0.0)


def test_xlogy_derivative_in_x_matches_jnp_where_x_is_not_zero(x64_on):
    """Away from x = 0, jax.grad of the helper is jax.grad of the plain x * log(y)."""
    from lossdsl.backend import jax as printer

    x, y = jnp.array([0.5, -2.0, 3.0]), jnp.array([0.3, 2.0, 7.0])
    for helper, log in ((printer.xlogy, jnp.log), (printer.xlog1py, jnp.log1p)):
        found = jax.grad(lambda x, y, f=helper: jnp.sum(f(x, y)), argnums=(0, 1))(x, y)
        wanted = jax.grad(lambda x, y, f=log: jnp.sum(x * f(y)), argnums=(0, 1))(x, y)
        np.testing.assert_allclose(found, wanted, rtol=1e-14)


# ------------------------------------------------------------------ the printed source
def test_labels_read_only_by_lookups_are_not_converted(x64_off):
    """rowof's labels index the table as given; their conversion to float32 was printed,
    and nothing read it."""
    loss = lossdsl.jax.loss("rowsum(rowof(C, y)*s)")
    source = loss.source(C=np.ones((4, 2), np.float32), y=np.array([0, 3]),
                         s=np.ones((2, 2), np.float32))
    assert "jnp.asarray(a1).astype(T)" not in source
    assert "jnp.asarray(a1), a1.shape[0])" in source  # the lookup's labels


def test_float64_risk_set_times_float32_ties_are_refused(x64_off):
    times = np.array([1.0, 1.0 + 1e-9, 2.0, 3.0, 1.0 + 2e-9])
    scores = np.array([0.3, -0.2, 0.1, 0.5, 0.0])
    cox = lossdsl.jax.loss("cox_ph(y, z)")
    kernel = lossdsl.compile("cox_ph(y, z)")
    # the float64 kernel's value, which the float32 ties would have changed
    assert abs(kernel(y=times, z=scores) - 1.0869302069513496) < 1e-12
    for signed in (times, times * np.array([1, -1, 1, -1, 1])):  # censored: abs(y) ties
        with pytest.raises(LossDomainError, match=X64_ADVICE) as refused:
            cox(y=signed, z=scores)
        assert "at index 0" in str(refused.value) and "would tie" in str(refused.value)
    # distinct in float32 too, or given as float32: computed, as the kernel does
    distinct = np.array([1.0, -1.5, 2.0, -3.0, 2.5])
    assert abs(float(cox(y=distinct, z=scores)) - kernel(y=distinct, z=scores)) < 1e-6
    rounded = times.astype(np.float32)
    assert abs(float(cox(y=rounded, z=scores)) - kernel(y=rounded, z=scores)) < 1e-6
