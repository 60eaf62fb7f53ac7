"""Run-time support for CUDA kernels: launch sizes, transfers, device arrays, label checks.

Generated CUDA modules (see :mod:`lossdsl.backend.cuda.codegen`) import this module as ``rt`` and
keep only the loss-specific code themselves; :mod:`lossdsl.api` uses it for inputs that
already live on the device. It imports ``numba.cuda``, so it is imported only for
``target="cuda"`` or device inputs.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, what CI runs) every simulated
CUDA thread is a Python thread, so blocks are small there; the kernels are the same.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

if not hasattr(np, "row_stack"):
    # NumPy 2.5 removed the alias np.row_stack of np.vstack; numba-cuda <= 0.30 registers a
    # CUDA overload for it when its first kernel compiles, and that registration then fails
    # with an AttributeError for every kernel. Restoring the alias is all it needs.
    np.row_stack = np.vstack

from numba import cuda  # noqa: E402 - after the alias above
from numba.core import config as _numba_config
from numba.cuda.cudadrv import devicearray as _devicearray

from ...ops.scalar_math import SCALAR_MATH  # noqa: E402

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
#: latency, few enough that the per-block atomics stay negligible.
BLOCKS_PER_SM: int = 32
#: The simulator runs blocks one after another: two blocks exercise the grid-stride loop
#: and the cross-block atomics without making the tests slow.
SIMULATOR_BLOCKS: int = 2

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
    return cuda.as_cuda_array(value)


def to_device(array: Any) -> Any:
    """``array`` as a kernel argument: NumPy arrays are copied over, device arrays viewed."""
    if isinstance(array, np.ndarray):
        # to_device needs a contiguous buffer; kernels index the copy like the original
        return cuda.to_device(np.ascontiguousarray(array))
    return as_device_array(array)


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


def zeros(count: int) -> Any:
    """A zeroed float64 device vector: the accumulators of one loop's reductions."""
    return cuda.to_device(np.zeros(count, dtype=np.float64))


def fetch(accumulators: Any) -> np.ndarray:
    """The reductions, copied to the host (waits for the kernels that wrote them)."""
    return accumulators.copy_to_host()


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


@cuda.jit
def _first_bad_label(labels, width, first):
    # labels that are negative, too large, fractional or NaN: keep the smallest index
    for i in range(cuda.grid(1), labels.shape[0], cuda.gridsize(1)):
        label = labels[i]
        if not (label >= 0 and label < width and int(label) == label):
            cuda.atomic.min(first, 0, i)


def first_bad_label(labels: Any, width: int) -> tuple[int, Any] | None:
    """(index, value) of the first label of device vector ``labels`` outside [0, width) or
    not an integer, or None; one small kernel and an 8-byte copy instead of a host copy."""
    count = labels.shape[0]
    if count == 0:
        return None
    first = cuda.to_device(np.array([count], dtype=np.int64))
    _first_bad_label[grid(count, THREADS), THREADS](labels, width, first)
    index = int(first.copy_to_host()[0])
    if index >= count:
        return None
    return index, labels[index:index + 1].copy_to_host()[0].item()


#: The ``math`` module generated kernels call: the real one on a GPU (Numba compiles its
#: functions), in the simulator the IEEE stand-in of :mod:`lossdsl.ops.scalar_math` (Python's
#: ``math.log(0.0)`` raises where a GPU returns -inf; the generated code relies on IEEE
#: results, e.g. in the untaken branch of a ``where``), which the NumPy reference of the
#: special functions runs their helpers with too.
MATH: Any = SCALAR_MATH if SIMULATOR else math
