"""The label check of ``ignore_index`` for labels that live on the device.

One small kernel checks a device vector of labels and counts the samples kept in the same
pass: the first label that is neither an integer in ``[0, width)`` nor the ignored value
(what :func:`lossdsl.binding.first_bad_label` finds on the host), and how many labels are not
the ignored value (the denominator of the mean over the samples kept). Two 8-byte copies
come back instead of the labels. Imported only for device inputs with ``ignore_index``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from . import runtime as rt


@cuda.jit
def _check(labels, width, ignore, first, kept):
    count = 0
    for i in range(cuda.grid(1), labels.shape[0], cuda.gridsize(1)):
        label = labels[i]
        if label == ignore:
            continue
        count += 1
        # negative, too large, fractional or NaN: keep the smallest index
        if not (label >= 0 and label < width and int(label) == label):
            cuda.atomic.min(first, 0, i)
    if count:
        cuda.atomic.add(kept, 0, count)


def check_ignoring(labels: Any, width: int, ignore: int) -> tuple[tuple[int, Any] | None, int]:
    """``(first bad label, samples kept)`` of device vector ``labels``: the first bad label
    as ``(index, value)`` or None, where labels equal to ``ignore`` are not bad, and the
    number of labels not equal to ``ignore``."""
    count = labels.shape[0]
    if count == 0:
        return None, 0
    first = cuda.to_device(np.array([count], dtype=np.int64))
    kept = cuda.to_device(np.zeros(1, dtype=np.int64))
    rt.configured(_check, rt.grid(count, rt.THREADS), rt.THREADS)(labels, width, ignore, first,
                                                                  kept)
    index = int(first.copy_to_host()[0])
    samples = int(kept.copy_to_host()[0])
    if index >= count:
        return None, samples
    return (index, labels[index:index + 1].copy_to_host()[0].item()), samples
