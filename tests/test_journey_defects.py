"""Defects the journeys found, each with the test that failed before its fix.

* :mod:`lossdsl.jax` in float32 read integer labels as float32: a label of 2**24 + 1 read
  row 2**24 of a table (or column 2**24 of the classes) without a sign. A table's rows are
  now read with the labels as given (exact, also under ``jit``); labels of wider classes,
  which the printed one-hot rows compare in float32, are refused where concrete (the
  kernels' LossDomainError) and make the result NaN where traced.
* :mod:`lossdsl.jax` named a per-class vector of the wrong length by its internal one-row
  table's shape ("inputs disagree on the number of classes: ... 'w' has shape (1, 3)"),
  where the kernels say how many entries it has and how many classes the loss has.

(lossdsl.dask's regulariser vector given as a dask array is in
tests/integrations/test_integrations_dask.py.)
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lossdsl.errors import LossDomainError, LossShapeError

jax = pytest.importorskip("jax")
import lossdsl.jax  # noqa: E402

#: The first integer float32 does not hold: it rounds to BEYOND - 1 = 2**24.
BEYOND = 2 ** 24 + 1
WIDTH = BEYOND + 1  # rows or classes, so that BEYOND is a label in range


@functools.cache
def _wide_float32(marked: float) -> np.ndarray:
    """(WIDTH,) float32 zeros with ``marked`` at BEYOND and 1 at BEYOND - 1 (the entry a
    rounded label reads)."""
    values = np.zeros(WIDTH, np.float32)
    values[BEYOND - 1], values[BEYOND] = 1.0, marked
    return values


# ------------------------------------------------------------------ float32 labels past 2**24
def test_jax_table_row_beyond_float32_integers_is_exact():
    """rowof reads row y of the table; y = 2**24 + 1 read row 2**24 (1 instead of 2)."""
    table = _wide_float32(2.0)[:, None]
    labels = np.array([BEYOND])
    scale = np.ones((1, 1), np.float32)
    loss = lossdsl.jax.loss("rowsum(rowof(C, y)*s)", reduction="none")
    expected = table[labels, 0]  # NumPy's own indexing: the reference
    np.testing.assert_array_equal(loss(C=table, y=labels, s=scale), expected)
    traced = jax.jit(lambda C, y, s: loss(C=C, y=y, s=s))(table, labels, scale)
    np.testing.assert_array_equal(traced, expected)


def test_jax_class_label_beyond_float32_integers_is_refused():
    """A class label the float32 one-hot rows would round: the kernels' LossDomainError
    where it is concrete, NaN under jit (from 2**24 on, where float32 numbers two classes
    alike); a label below is read as it was."""
    scores = _wide_float32(2.0)[None, :]
    loss = lossdsl.jax.loss("pick(z, y)", reduction="none")
    with pytest.raises(LossDomainError, match=r"label input 'y' indexes 16777218 entries, "
                                              r"more than float32 can number exactly"):
        loss(y=np.array([BEYOND]), z=scores)
    traced = jax.jit(lambda y, z: loss(y=y, z=z))
    assert np.isnan(traced(np.array([BEYOND]), scores)).all()
    # 2**24: the class index 2**24 + 1 reads as 2**24, the gradient's one-hot row has two
    assert np.isnan(traced(np.array([BEYOND - 1]), scores)).all()
    np.testing.assert_array_equal(traced(np.array([BEYOND - 2]), scores), [0.0])


# ------------------------------------------------------------------ per-class vector's length
def test_jax_class_vector_of_wrong_length_says_so():
    """The NumPy API's message, not the one-row table's shape (1, 3)."""
    labels = np.array([0, 1, 2, 3, 1, 0])
    scores = np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(6, 4)
    loss = lossdsl.jax.loss("sparse_cce_logits(y, z, weight=w)")
    with pytest.raises(LossShapeError, match=r"per-class vector 'w' has 3 entries but the "
                                             r"loss has 4 classes \('z' has shape \(6, 4\)\)"):
        loss(y=labels, z=scores, w=np.ones(3, np.float32))
