"""Shared test setup: a persistent kernel cache so compiled losses are reused across runs."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

# Each pytest-xdist worker runs its OpenMP libraries (LightGBM, XGBoost, scikit-learn) on one
# thread: two workers on two cores otherwise run four spinning OpenMP threads, and a booster
# test overlapping another took 75 s instead of 11 (measured, CI=true, 2 cores). Set before
# any of them loads the OpenMP runtime, which reads it once; set OMP_NUM_THREADS to override.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Numba highlights each of the thousands of typing errors it formats and drops while compiling
# a kernel (lossdsl/numba_environment.py); lossdsl turns that off when it imports Numba first,
# and the simulator set-up below imports Numba before any test imports lossdsl.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

# Compiled kernels are cached on disk; keep the tests' cache beside the tests so a second run
# (and every test module) reuses machine code instead of compiling again.
os.environ.setdefault(
    "LOSSDSL_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "kernels"),
)


def _nvidia_gpu_present() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU (a driver without a device does not count)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


# Without a GPU, target="cuda" runs in Numba's CUDA simulator (tests/backend/test_cuda.py). Numba
# reads the switch once, when it is first imported, so it is set here, before any test module
# imports numba; it changes nothing for CPU (@njit) kernels. Set NUMBA_ENABLE_CUDASIM yourself to
# override the choice either way.
if not _nvidia_gpu_present():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def _shared_arrays_one_per_block() -> None:
    """Make the simulator's ``cuda.shared.array`` give every thread of a block the same array.

    numba-cuda's simulator finds a block's shared array by the calling line in a dict and
    creates it when missing, without a lock: two of its Python threads that both miss create
    two arrays, and the block's threads then reduce into different "shared" memory (32
    threads racing: 57 of 300 blocks got more than one array, switch interval 1 us). That
    made a simulated reduction wrong now and then under load (a CI rehearsal: ranknet's
    float32 value 6.9495 against the CPU's 6.5687; alone it passes). The same lookup under
    a lock, keyed as numba-cuda keys it (the caller's file and line)."""
    import sys
    import threading

    import numpy as np
    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support

    original = FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # refused, or dynamic: numba-cuda's own
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _shared_arrays_one_per_block()


@pytest.fixture(autouse=True, scope="session")
def _quick_simulator_threads():
    """The simulator runs each CUDA thread as a Python thread and waits for a block by
    polling its threads; they meet at every syncthreads. Switching between Python threads
    every 0.5 ms instead of 5 ms (what test_cuda used for years) makes simulated launches
    several times faster (an XGBoost test whose init scores take 144 launches: 24 s -> 6 s)."""
    interval = sys.getswitchinterval()
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.setswitchinterval(5e-4)
    yield
    sys.setswitchinterval(interval)


# Property tests explore new random examples on every developer run; CI (CI=true) replays a
# fixed, derandomised set so that a landing never depends on the luck of the draw.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# The files that take the longest (worker-seconds on a cold kernel cache, CI=true), longest
# first. pytest-xdist hands whole files to the two workers (--dist loadfile) in collection
# order; starting with these lets the short files fill in at the end, so that both workers
# finish together instead of one waiting for a long file handed out last.
LONGEST_FILES = (
    "test_library.py", "backend/test_cuda.py", "integrations/test_jax.py",
    "test_embedding_rows.py", "test_guides.py",
    "integrations/test_keras.py", "test_group_matrices.py", "test_column_totals.py",
    "test_class_vectors.py", "test_partner_hessians.py",
    "test_pairs.py", "test_scans.py", "test_embedding_pairs.py", "test_class_pairs.py",
    "integrations/test_integrations_dask.py", "integrations/test_ranking.py", "test_groups.py",
    "integrations/test_bench_peers.py", "test_ignore_and_reductions.py",
    "test_noncrossing_levels.py", "integrations/test_decide_business.py",
    "test_small_call_paths.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.path.as_posix()
        return next((index for index, name in enumerate(LONGEST_FILES)
                     if path.endswith("/tests/" + name)), len(LONGEST_FILES))

    items.sort(key=rank)  # stable: the order within a file and among the others is kept


@pytest.fixture
def jax_x64():
    """JAX with float64 arrays (``jax_enable_x64``) for the test alone: the setting is
    process-wide, and a test that left it on changed the dtypes of later tests' results."""
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield jax
