"""Run-time support for CUDA kernels: launch sizes, transfers, device arrays, label checks.

Generated CUDA modules (see :mod:`lossdsl.backend.cuda.codegen`) import this module as ``rt`` and
keep only the loss-specific code themselves; :mod:`lossdsl.api` uses it for inputs that
already live on the device. It imports ``numba.cuda``, so it is imported only for
``target="cuda"`` or device inputs.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, what CI runs) every simulated
CUDA thread is a Python thread, so blocks are small there; the kernels are the same.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

if not hasattr(np, "row_stack"):
    # NumPy 2.5 removed the alias np.row_stack of np.vstack; numba-cuda <= 0.30 registers a
    # CUDA overload for it when its first kernel compiles, and that registration then fails
    # with an AttributeError for every kernel. Restoring the alias is all it needs.
    np.row_stack = np.vstack

from numba import cuda  # noqa: E402 - after the alias above
from numba.core import config as _numba_config
from numba.core.errors import NumbaPerformanceWarning
from numba.cuda.cudadrv import devicearray as _devicearray
from numba.cuda.cudadrv.devices import require_context

from ...domains import Domain  # noqa: E402
from ...ops.scalar_math import SCALAR_MATH  # noqa: E402
from ...ops.scans import KeyOrder, key_order  # noqa: E402

#: True when Numba runs CUDA kernels in its Python simulator instead of on a GPU.
SIMULATOR: bool = bool(_numba_config.ENABLE_CUDASIM)

#: Threads per block of the grid-stride kernels: a power of two, for the tree reduction.
THREADS: int = 32 if SIMULATOR else 256
#: Threads per block of the block-per-row kernels (a power of two).
ROW_THREADS: int = 8 if SIMULATOR else 128
#: Rows of at least this many classes get a whole block each; narrower rows one thread each.
#: Read at every call, so it can be changed at run time (the tests force both variants).
ROW_BLOCK_MIN_WIDTH: int = 256
#: Blocks per multiprocessor of a grid-stride launch: enough resident blocks to hide memory
#: latency, few enough that the per-block sums stay a small buffer.
BLOCKS_PER_SM: int = 32
#: The simulator runs blocks one after another: two blocks exercise the grid-stride loop
#: and the per-block sums without making the tests slow.
SIMULATOR_BLOCKS: int = 2


@functools.cache
def missing_device() -> str | None:
    """Why no CUDA kernel can run here (no GPU or no driver: Numba's own words), or None
    where one can (a GPU, or the simulator). Asked once per process."""
    if SIMULATOR:
        return None
    try:
        if cuda.is_available():
            return None
        with contextlib.redirect_stdout(io.StringIO()):  # it reports on stdout
            cuda.detect()  # raises with the driver's reason where it cannot start
    except Exception as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        return f"{type(error).__name__}: {reason.rstrip(':').strip()}"
    return "no CUDA GPU or driver was found"


# Device arrays Numba kernels take as they are: DeviceNDArray on a GPU, FakeCUDAArray in
# the simulator (``numba.cuda.cudadrv`` is the simulator's package there).
_NATIVE_DEVICE_ARRAYS: tuple[type, ...] = tuple(
    getattr(_devicearray, name) for name in ("DeviceNDArrayBase", "FakeCUDAArray")
    if hasattr(_devicearray, name))


@functools.cache
def _max_blocks(device_id: int) -> int:
    device = cuda.get_current_device()
    return int(device.MULTIPROCESSOR_COUNT) * BLOCKS_PER_SM


def max_blocks() -> int:
    """The most blocks a grid-stride launch uses on the current device."""
    if SIMULATOR:
        return SIMULATOR_BLOCKS
    return _max_blocks(int(cuda.get_current_device().id))


def grid(length: int, threads: int) -> int:
    """Blocks for a grid-stride loop over ``length`` items with ``threads`` per block."""
    return max(1, min(-(-length // threads), max_blocks()))


def row_grid(rows: int) -> int:
    """Blocks for a block-per-row loop over ``rows`` rows (blocks stride over the rows)."""
    return max(1, min(rows, max_blocks()))


def use_block_rows(width: int) -> bool:
    """Whether rows of ``width`` classes run one block per row (else one thread per row)."""
    return width >= ROW_BLOCK_MIN_WIDTH


def as_device_array(value: Any) -> Any:
    """A Numba view of device array ``value`` (zero-copy; NumPy-style dtype and shape)."""
    if isinstance(value, _NATIVE_DEVICE_ARRAYS):
        return value
    if SIMULATOR:
        raise TypeError(f"the CUDA simulator cannot read a {type(value).__name__} "
                        "(only arrays made with numba.cuda.to_device / device_array)")
    if getattr(value, "requires_grad", False):  # PyTorch exports only tensors without grad
        value = value.detach()
    interface = value.__cuda_array_interface__
    if interface.get("stream") is not None or interface.get("mask") is not None:
        return cuda.as_cuda_array(value)  # Numba waits for the producer's stream first
    key = (interface["data"][0], interface["shape"], interface.get("strides"),
           interface["typestr"])
    view = _views.get(key)
    if view is None:
        view = cuda.from_cuda_array_interface(interface, owner=None, sync=False)
        with _views_lock:
            if len(_views) >= _VIEWS:
                _views.pop(next(iter(_views)), None)
            _views[key] = view
    return view


# Numba views of device memory by (address, shape, strides, type): a training loop hands
# PyTorch tensors from the same caching allocator, at the same addresses, every step, and
# building a Numba array costs more than its kernel at small sizes. A view does not own its
# memory (the caller's array does, and is alive while the call runs); one whose memory was
# freed is only found again through a live array at the same address, shape and type.
_views: dict[tuple, Any] = {}
_views_lock = threading.Lock()
_VIEWS = 256


def to_device(array: Any) -> Any:
    """``array`` as a kernel argument: NumPy arrays are copied over, device arrays viewed."""
    if isinstance(array, np.ndarray):
        # to_device needs a contiguous buffer; kernels index the copy like the original
        return cuda.to_device(np.ascontiguousarray(array))
    return as_device_array(array)


def scan_buffer(length: int | tuple[int, int], dtype: Any = np.float64) -> Any:
    """A device array of ``length`` samples: a cumulative sum's summands or keys (float64),
    or a value stored for the partners of a pair sum (the kernel's dtype); of shape
    ``length`` = (N, K) for the rows a group's total sums (``sum_group``)."""
    return cuda.device_array(length, dtype)


def on_host(array: Any) -> Any:
    """``array`` as host values: a NumPy array or a number as it is, a device array copied
    to the host (a cumulative sum's summands, keys or strata: run passes its inputs as
    given, and the buffers the kernels wrote)."""
    if isinstance(array, (np.ndarray, np.generic, float, int)):
        return array
    return as_device_array(array).copy_to_host()


def order(keys: Any, strata: Any) -> KeyOrder:
    """The samples in the order of the array ``keys`` (host or device) within ``strata`` (an
    array or a number), sorted on the host."""
    return key_order(on_host(keys), on_host(strata))


def scan(name: str, values: Any, order: KeyOrder) -> Any:
    """Cumulative sum ``name`` of the array ``values`` (host or device) in ``order``, on the
    host (a round trip per sum, :mod:`lossdsl.ops.scans`)."""
    return cuda.to_device(order.scan(name, on_host(values)))


def group_table(values: Any, order: KeyOrder) -> Any:
    """The totals of ``values`` (an array, host or device, or a number) over the groups of
    ``order``, one row per group and a last row of NaN, summed on the host and copied to the
    device (:meth:`lossdsl.ops.scans.KeyOrder.group_table`): a few rows, where each sample's
    total would be an (N, K) array."""
    return to_device(order.group_table(on_host(values)))


def run_index(order: KeyOrder) -> Any:
    """Each sample's row of the group tables of ``order``, on the device: the kernels read
    a sample's total as ``table[run[i]]`` (one integer a sample, copied once a call)."""
    return to_device(order.run_of_sample)


def output(array: Any) -> tuple[Any, np.ndarray | None]:
    """(device array the kernels write, host array to copy the result into, or None)."""
    if isinstance(array, np.ndarray):
        return cuda.device_array(array.shape, array.dtype), array
    return as_device_array(array), None


def copy_back(pairs: Sequence[tuple[Any, np.ndarray | None]]) -> None:
    """Copy each device result whose caller passed a NumPy output into that output."""
    for device, host in pairs:
        if host is not None:
            device.copy_to_host(host)


# Per host thread: the partials buffers in mapped memory, by (shape, device). A call's kernels
# run on the default stream and its fetch waits for them before the next launch writes the
# buffer again; each thread has its own, so two threads' calls cannot interleave their
# partials.
_mapped = threading.local()


def partials(count: int) -> Any:
    """The buffer a loop's ``count`` reductions leave their per-block sums in: a
    ``(max_blocks(), count)`` float64 array, row ``b`` written by block ``b`` (no atomics, so
    it needs no zeroing; rows past the launch's blocks are never read). On a GPU it is
    host memory mapped into the device, kept per host thread: the kernel's stores reach the
    host, and reading the sums costs a synchronisation, not a copy. The simulator has no
    mapped memory, and reusing one buffer there gave wrong sums now and then under load
    (its threads are Python threads): it gets a new one per launch, filled with NaN so that a
    row no block wrote could not pass for a sum."""
    shape = (max_blocks(), count)
    if SIMULATOR:
        return cuda.to_device(np.full(shape, np.nan))
    return _kept(_mapped, shape, lambda: cuda.mapped_array(shape, dtype=np.float64))


def _kept(store: threading.local, shape: tuple[int, ...], make: Callable[[], Any]) -> Any:
    """The buffer of ``shape`` that ``store`` keeps for this host thread and the current
    device, made by ``make()`` the first time it is asked for."""
    buffers = store.__dict__
    key = (shape, int(cuda.get_current_device().id))
    found = buffers.get(key)
    if found is None:
        found = buffers[key] = make()
    return found


def fetch(block_sums: Any, blocks: int) -> np.ndarray:
    """The reductions: the first ``blocks`` rows of ``block_sums`` (once the kernels that
    wrote them are done) added up, in the same order every call."""
    if SIMULATOR:
        host = block_sums.copy_to_host()
    else:
        cuda.synchronize()
        host = np.asarray(block_sums)
    return host[:blocks].sum(axis=0)


def in_context(run: Any) -> Any:
    """``run`` with Numba's CUDA context attached to the thread while it runs: Numba looks
    the current context up anew in every API call made outside one (about 10 us each on an
    H200, several per call: device queries, array views, launches)."""
    return run if SIMULATOR else require_context(run)


def configured(kernel: Any, blocks: int, threads: int) -> Any:
    """``kernel[blocks, threads]``, made once per launch shape on a GPU. Numba builds a
    launch configuration on every ``kernel[...]`` and warns about grids under 128 blocks,
    which a grid-stride loop over a small input uses on purpose. (The simulator's
    ``kernel[...]`` sets the shape on the kernel itself and returns it: nothing to keep.)"""
    if SIMULATOR:
        return kernel[blocks, threads]
    return _configured(kernel, blocks, threads)


@functools.lru_cache(maxsize=512)
def _configured(kernel: Any, blocks: int, threads: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        return kernel[blocks, threads]


def empty_like_device(reference: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """An uninitialised device array of the same library as ``reference`` (PyTorch tensor,
    CuPy array, else a Numba device array), so results come back as the caller's type."""
    module = type(reference).__module__.split(".")[0]
    if module == "torch":
        torch = sys.modules["torch"]
        return torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name),
                           device=reference.device)
    if module == "cupy":
        cupy = sys.modules["cupy"]
        with reference.device:
            return cupy.empty(shape, dtype=dtype)
    return cuda.device_array(shape, dtype=dtype)


# Per host thread: the int64 vectors the check kernels leave their results in, by (length,
# device). Allocating one per call and freeing it later cost a check of 10^5 labels on an H200
# several driver calls (its wall time was 0.9 ms against the loss kernel's 0.7 ms).
_slots = threading.local()


def check_slots(*initial: int) -> Any:
    """A device vector of int64 holding ``initial``, for a check kernel's atomic results
    (read back with ``copy_to_host``, which waits for the kernel). On a GPU one is kept per
    host thread and length and refilled, so a call allocates nothing; the simulator gets a
    new one (its launches from two threads can interleave, see :func:`partials`)."""
    values = np.array(initial, dtype=np.int64)
    if SIMULATOR:
        return cuda.to_device(values)
    slots = _kept(_slots, values.shape, lambda: cuda.device_array(values.shape, dtype=np.int64))
    slots.copy_to_device(values)
    return slots


@cuda.jit
def _first_bad_label(labels, width, first):
    # labels that are negative, too large, fractional or NaN: keep the smallest index
    for i in range(cuda.grid(1), labels.shape[0], cuda.gridsize(1)):
        label = labels[i]
        if not (label >= 0 and label < width and int(label) == label):
            cuda.atomic.min(first, 0, i)


@in_context
def first_bad_label(labels: Any, width: int) -> tuple[int, Any] | None:
    """(index, value) of the first label of device vector ``labels`` outside [0, width) or
    not an integer, or None; one small kernel and an 8-byte copy instead of a host copy."""
    count = labels.shape[0]
    if count == 0:
        return None
    first = check_slots(count)
    configured(_first_bad_label, grid(count, THREADS), THREADS)(labels, width, first)
    index = int(first.copy_to_host()[0])
    if index >= count:
        return None
    return index, labels[index:index + 1].copy_to_host()[0].item()


@cuda.jit
def _first_outside_domain(values, members, low, high, low_open, high_open, first):
    # values not among the members (when there are any), else outside the interval (NaN
    # too): keep the smallest index
    for i in range(cuda.grid(1), values.shape[0], cuda.gridsize(1)):
        value = values[i]
        if members.shape[0]:
            inside = False
            for k in range(members.shape[0]):
                if value == members[k]:
                    inside = True
        else:
            inside = (value > low if low_open else value >= low) and (
                value < high if high_open else value <= high)
        if not inside:
            cuda.atomic.min(first, 0, i)


@in_context
def first_outside_domain(values: Any, domain: Domain) -> tuple[int, Any] | None:
    """(index, value) of the first of device array ``values`` (any shape, C order) outside
    ``domain``, or None: one small kernel and an 8-byte copy, as :func:`first_bad_label`."""
    flat = values.reshape(values.size) if values.ndim != 1 else values
    count = flat.shape[0]
    if count == 0:
        return None
    first = check_slots(count)
    members = cuda.to_device(np.array(domain.members, dtype=np.float64))
    configured(_first_outside_domain, grid(count, THREADS), THREADS)(
        flat, members, domain.low, domain.high, domain.low_open, domain.high_open, first)
    index = int(first.copy_to_host()[0])
    if index >= count:
        return None
    return index, flat[index:index + 1].copy_to_host()[0].item()


#: The ``math`` module generated kernels call: the real one on a GPU (Numba compiles its
#: functions), in the simulator the IEEE stand-in of :mod:`lossdsl.ops.scalar_math` (Python's
#: ``math.log(0.0)`` raises where a GPU returns -inf; the generated code relies on IEEE
#: results, e.g. in the untaken branch of a ``where``), which the NumPy reference of the
#: special functions runs their helpers with too.
MATH: Any = SCALAR_MATH if SIMULATOR else math
