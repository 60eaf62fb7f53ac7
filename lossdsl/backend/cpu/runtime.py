"""Run-time support for CPU kernels: how a generated ``run`` executes its passes.

A generated CPU module's ``run`` calls every loop and converts every scalar it hands to a
loop through a *kit*: ``kit.loop(function, count, length, *arguments)`` runs one loop and
returns its ``count`` reductions as float64, ``kit.cast(dtype, value)`` converts the scalar
glue between passes to the kernel's dtype, ``kit.order(keys, strata)`` and
``kit.scan(name, values, order)`` compute a cumulative sum between passes, and
``kit.group_table(values, order)`` and ``kit.run_index(order)`` a group's totals and the row
of them each sample reads (:mod:`lossdsl.ops.scans`). :data:`DIRECT` runs loops in place on
whole arrays; :mod:`lossdsl.dask` passes a kit that runs each loop chunk by chunk, so one
generated module serves both, nested reductions and Hessians included.

Every loop runs through :func:`launch`, which keeps ``parallel=True`` loops safe. Numba's
default threading layer on a pip install is GNU OpenMP: fast and thread-safe, but a process
``fork()``-ed after it ran (a ``multiprocessing.Pool`` on Linux) hangs or aborts as soon as it
launches a parallel loop itself, whoever started the pool (lossdsl, LightGBM, PyTorch and a
user's own parallel Numba code load the same libgomp). Such a child gets
:func:`parallel_usable` False, and the API then runs the serial kernels of the same losses
there. Numba's work queue (chosen by the
user, or where nothing else loads) aborts the process when two threads launch parallel
loops at once, so launches are serialised while it is the layer in use.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ...errors import LossError
from ...ops.scans import KeyOrder, key_order

_LAUNCH_LOCK = threading.Lock()
_serialise: bool | None = None  # known after the first parallel launch
_launched = False  # a parallel loop ran in this process (its threading layer is started)
_forked_after_openmp = False
_openmp_at_fork = False  # set in the parent just before a fork


def _openmp_pool_may_exist() -> bool:
    """Whether GNU OpenMP may have started its thread pool in this process: lossdsl's own
    parallel loops ran on it, or libgomp is loaded (LightGBM, PyTorch, a user's
    ``numba.njit(parallel=True)``: one library name, one pool, which Numba then uses too) and
    the process runs more than one thread. Linux's /proc tells; elsewhere, lossdsl's own
    launches only."""
    if _launched and numba.threading_layer() == "omp":
        return True
    try:
        if len(os.listdir("/proc/self/task")) < 2:
            return False
        with open("/proc/self/maps") as maps:
            return "libgomp" in maps.read()
    except OSError:
        return False


def _before_fork() -> None:
    global _openmp_at_fork
    _openmp_at_fork = _openmp_pool_may_exist()


def _after_fork_in_child() -> None:
    global _forked_after_openmp
    if _openmp_at_fork:
        _forked_after_openmp = True


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def parallel_usable() -> bool:
    """Whether this process can launch ``parallel=True`` loops: not in a child forked after
    a parallel loop ran on OpenMP (GNU OpenMP's thread pool does not survive a fork)."""
    return not _forked_after_openmp


def _parallel_guard() -> contextlib.AbstractContextManager:
    if _serialise is None:
        return _first_launch()
    return _LAUNCH_LOCK if _serialise else contextlib.nullcontext()


@contextlib.contextmanager
def _first_launch():
    global _serialise, _launched
    with _LAUNCH_LOCK:  # the layer starts on this launch: only then can Numba name it
        _launched = True
        yield
        _serialise = numba.threading_layer() == "workqueue"


def launch(function: Callable[..., Any], *arguments: Any) -> Any:
    """``function(*arguments)``, for a compiled loop; ``parallel=True`` loops one launch at a
    time where the threading layer is not thread-safe (the work queue)."""
    if not getattr(function, "targetoptions", {}).get("parallel"):
        return function(*arguments)
    if _forked_after_openmp:  # the API runs serial kernels here; never hang the process
        raise LossError("internal error: a parallel kernel was launched in a process forked "
                        "after OpenMP ran, where lossdsl runs serial kernels")
    with _parallel_guard():
        return function(*arguments)


@numba.njit(cache=True)
def longest_row(offsets: np.ndarray) -> int:
    """The most items any sample's row holds, from the offsets where each row starts in the
    flat item arrays (and, last, their number): the width of a row buffer for the loops over
    a row's partners or a group's items."""
    longest = 0
    for row in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[row + 1] - offsets[row])
    return longest


@numba.njit(cache=True)
def first_label_outside(labels: np.ndarray, width: int, ignore: int, ignoring: bool) -> int:
    """The index of the first of the flat ``labels`` that is negative, at least ``width``,
    fractional or NaN (and, when ``ignoring``, not ``ignore``), or -1: one compiled pass,
    where NumPy's range check makes two to five passes and costs microseconds on the few
    hundred labels of a minibatch or a boosting round."""
    for index in range(labels.shape[0]):
        label = labels[index]
        if ignoring and label == ignore:
            continue
        if not (label >= 0 and label < width and np.floor(label) == label):
            return index
    return -1


# Values checked per block before looking for the first outside: the block's test has no
# early exit, so it compiles to vector instructions (a pass over 10^7 values at the speed of
# a sum, where a loop that stops at the first outside runs several times slower).
_CHECK_BLOCK = 4096


@numba.njit(inline="always")
def _outside_interval(value, low, high):
    return (value < low) | (value > high) | (value != value)  # NaN is outside


@numba.njit(inline="always")
def _outside_set(value, m0, m1, m2, m3):
    return (value != m0) & (value != m1) & (value != m2) & (value != m3)


@numba.njit(cache=True)
def first_outside_interval(values: np.ndarray, low: float, high: float) -> int:
    """The index of the first of the flat ``values`` outside ``[low, high]`` (NaN
    included), or -1."""
    count = values.shape[0]
    for start in range(0, count, _CHECK_BLOCK):
        stop = min(start + _CHECK_BLOCK, count)
        outside = 0
        for index in range(start, stop):
            outside += _outside_interval(values[index], low, high)
        if outside:
            for index in range(start, stop):
                if _outside_interval(values[index], low, high):
                    return index
    return -1


@numba.njit(cache=True)
def first_outside_set(values: np.ndarray, m0: float, m1: float, m2: float, m3: float) -> int:
    """The index of the first of the flat ``values`` equal to none of ``m0`` to ``m3`` (a
    set of up to four numbers, repeated to fill the four), or -1."""
    count = values.shape[0]
    for start in range(0, count, _CHECK_BLOCK):
        stop = min(start + _CHECK_BLOCK, count)
        outside = 0
        for index in range(start, stop):
            outside += _outside_set(values[index], m0, m1, m2, m3)
        if outside:
            for index in range(start, stop):
                if _outside_set(values[index], m0, m1, m2, m3):
                    return index
    return -1


class Direct:
    """The kit ``run`` uses by default: each loop runs once over the whole arrays."""

    @staticmethod
    def loop(function: Callable[..., Any], count: int, *arguments: Any) -> tuple:
        """Run ``function`` on ``arguments``; its ``count`` reductions as NumPy float64."""
        result = launch(function, *arguments)
        return tuple(np.float64(r) for r in result) if count else ()

    @staticmethod
    def cast(dtype: type, value: Any) -> Any:
        """``value`` as a scalar of the kernel's ``dtype``."""
        return dtype(value)

    @staticmethod
    def order(keys: np.ndarray, strata: np.ndarray | float) -> KeyOrder:
        """The samples in the order of ``keys`` within ``strata`` (an array, or a number: one
        stratum), for the cumulative sums over them."""
        return key_order(keys, strata)

    @staticmethod
    def scan(name: str, values: np.ndarray, order: KeyOrder) -> np.ndarray:
        """Cumulative sum ``name`` of ``values`` in ``order`` (float64)."""
        return order.scan(name, values)

    @staticmethod
    def group_table(values: np.ndarray | float, order: KeyOrder) -> np.ndarray:
        """The totals of ``values`` over the groups of ``order`` (tied keys), one row per
        group and a last row of NaN (:meth:`lossdsl.ops.scans.KeyOrder.group_table`)."""
        return order.group_table(values)

    @staticmethod
    def run_index(order: KeyOrder) -> np.ndarray:
        """Each sample's row of the group tables of ``order`` (the kernels read a sample's
        total as ``table[run[i]]``)."""
        return order.run_of_sample


#: The in-process kit; generated modules import it as their default ``kit``.
DIRECT = Direct()
