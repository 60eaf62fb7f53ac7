"""Random inputs drawn anew at every training round: LightGBM's per-query generators.

A loss is deterministic: what its derivatives are depends on its inputs alone. Objectives
that randomise each round (LightGBM's ``rank_xendcg`` draws every document's gain
``2^label - u`` with a fresh uniform ``u``) are written with the draws as an input, and the
boosting adapters fill that input each round from a :class:`QueryDraws` given in place of
its values: ``objective("rank_xendcg(y, z, q, u)", inputs={"u": QueryDraws(seed=5)})``.
With ``columns=P`` each row draws P values a round, a matrix (N, P): CatBoost's ``YetiRank``
takes one column per random permutation (``yetirank(y, z, q, u)``, ``QueryDraws(seed,
columns=10)``).
:class:`NormalDraws` draws standard normal noise instead (CatBoost's ``StochasticRank``),
:class:`UniformDraws` uniform draws in float64 (CatBoost's ``StochasticFilter``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["NormalDraws", "QueryDraws", "UniformDraws"]


@njit(cache=True)
def _next_draws(states: np.ndarray, query: np.ndarray, out: np.ndarray) -> None:
    """Each row's next draw from its query's generator, rows in the order given (so the
    j-th row of a query takes the generator's j-th next value); ``states`` advance."""
    for row in range(query.shape[0]):
        k = query[row]
        x = (np.uint64(214013) * states[k] + np.uint64(2531011)) & np.uint64(0xFFFFFFFF)
        states[k] = x
        out[row] = ((x >> np.uint64(16)) & np.uint64(0x7FFF)) / 32768.0


def _query_numbers(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """(each row's query number, the number of queries): queries numbered in the order
    their first row comes, as LightGBM numbers the contiguous queries of a Dataset; without
    groups every row is a query of its own."""
    if groups is None:
        return np.arange(n), n
    ids = np.asarray(groups).reshape(-1)
    if ids.shape[0] != n:
        raise ValueError(f"{ids.shape[0]} group ids for {n} rows")
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.empty(first.size, dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(first.size)
    return order[inverse], first.size


class QueryDraws:
    """Uniform draws in [0, 1) for the rows of every training round, as LightGBM draws them
    for ``rank_xendcg``: query ``i`` has its own generator seeded ``seed + i`` (LightGBM's
    ``Random``: the linear congruential ``x = 214013 x + 2531011`` modulo 2^32, a draw being
    bits 16-30 of ``x`` over 2^15), and each round every query draws one value per document,
    in the documents' order. With LightGBM's ``objective_seed`` (5 by default) as ``seed``,
    the draws are those of LightGBM's own ``rank_xendcg``.

    Give it as the value of the loss's draws input; the adapters call :meth:`advance` once
    per round, before the gradients, and the loss reads :meth:`values`. Other rows or
    groups (a new training set) restart the generators; training again on the same rows
    continues them, except where the training starts from a copy (``lgb.train`` and
    ``LGBMRanker.fit`` deep-copy their objective, lossdsl's ``train`` restarts it): see
    :meth:`~lossdsl.boosting.objective.BoostingObjective.restart_draws`.

    ``columns=P`` draws a matrix (N, P) each round instead, P values per row in [0, 1) with
    53 random bits each (NumPy's PCG64 seeded with ``seed``, one stream for all the rows,
    row by row), for losses that take several draws per document: ``yetirank``'s noise, one
    column per permutation. CatBoost's own generator (``TFastRng64``, streamed per block of
    queries) is not reproduced: a lossdsl ``yetirank`` then trains CatBoost's model in
    distribution, not draw for draw.
    """

    def __init__(self, seed: int = 5, columns: int | None = None):
        self.seed = int(seed)
        if columns is not None and (int(columns) != columns or columns < 1):
            raise ValueError(f"columns must be a positive integer (draws per row), got "
                             f"{columns!r}")
        self.columns = None if columns is None else int(columns)
        self._key: tuple[int, bytes] | None = None
        self._states: np.ndarray | np.random.Generator | None = None
        self._current: np.ndarray | None = None
        self._query: np.ndarray | None = None  # each row's query number, for _key's rows

    def __repr__(self) -> str:
        columns = "" if self.columns is None else f", columns={self.columns}"
        return f"{type(self).__name__}(seed={self.seed}{columns})"

    @property
    def _streamed(self) -> bool:
        """Whether the draws come from one NumPy stream for all the rows (see ``columns``),
        not from LightGBM's generator per query."""
        return self.columns is not None

    def _sample(self, stream: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Draws of ``shape`` from ``stream``: uniform in [0, 1), 53 random bits each."""
        return stream.random(shape)

    def restart(self) -> None:
        """Start every query's generator again from its seed."""
        self._key = self._states = self._current = self._query = None

    def _draw(self, states: np.ndarray | np.random.Generator, query: np.ndarray
              ) -> np.ndarray:
        """The next draws of every row; ``states`` advance."""
        if self._streamed:  # ``states`` is the stream of every row's draws
            columns = () if self.columns is None else (self.columns,)
            return self._sample(states, (query.shape[0], *columns))
        out = np.empty(query.shape[0])
        _next_draws(states, query, out)
        return out

    def _layout_key(self, groups: np.ndarray | None, n: int) -> tuple[int, bytes]:
        ids = b"" if groups is None else np.ascontiguousarray(groups).tobytes()
        return n, ids

    def advance(self, groups: np.ndarray | None, n: int) -> np.ndarray:
        """Draw the next round's values for ``n`` rows with these group ids (None: each row
        a query of its own) and keep them as the current ones."""
        key = self._layout_key(groups, n)
        if key != self._key:  # new rows or groups (or restarted): from the seeds
            self._query, count = _query_numbers(groups, n)
            self._key = key
            self._states = self._seeds(count)
        self._current = self._draw(self._states, self._query)
        return self._current

    def values(self, groups: np.ndarray | None, n: int) -> np.ndarray:
        """The current round's values for these rows; rows of another layout (an evaluation
        set, a probe) get their first round's values, without advancing anything."""
        if self._current is not None and self._key == self._layout_key(groups, n):
            return self._current
        query, count = _query_numbers(groups, n)
        return self._draw(self._seeds(count), query)

    def _seeds(self, count: int) -> np.ndarray | np.random.Generator:
        """The start states of ``count`` queries' generators: ``seed + i`` as LightGBM's
        unsigned 32-bit state (or one stream seeded ``seed`` for every row: ``_streamed``)."""
        if self._streamed:
            return np.random.default_rng(self.seed % 2**64)
        return ((self.seed + np.arange(count, dtype=np.int64)) % 2**32).astype(np.uint64)


class NormalDraws(QueryDraws):
    """Standard normal draws for the rows of every training round: the noise of CatBoost's
    ``StochasticRank`` (the prelude's ``stochastic_rank(y, z, q, u)``), one draw per row and
    round from NumPy's generator seeded ``seed`` (``numpy.random.default_rng``), the rows in
    the order given. CatBoost's own generator (``TFastRng64`` seeded per query and round) is
    not reproduced: the draws are CatBoost's in distribution, not in value. It advances,
    restarts, serves other rows and draws ``columns`` per row as :class:`QueryDraws` does.
    """

    _streamed = True

    def _sample(self, stream: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal draws of ``shape``."""
        return stream.standard_normal(shape)


class UniformDraws(QueryDraws):
    """Uniform draws in [0, 1) for the rows of every training round, in float64 (not on
    LightGBM's grid of 2^-15 as :class:`QueryDraws`): the draws of CatBoost's
    ``StochasticFilter`` (the prelude's ``stochastic_filter(y, z, q, u)``), one per row and
    round from NumPy's generator seeded ``seed``, the rows in the order given; equal to
    CatBoost's in distribution, not in value (its ``TRestorableFastRng64`` is not
    reproduced).
    """

    _streamed = True
