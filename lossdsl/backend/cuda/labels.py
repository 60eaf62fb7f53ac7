"""The label check of ``ignore_index`` for labels that live on the device.

One small kernel checks a device vector of labels and counts the samples kept in the same
pass: the first label that is neither an integer in ``[0, width)`` nor the ignored value
(what :func:`lossdsl.binding.first_bad_label` finds on the host), and how many labels are not
the ignored value (the denominator of the mean over the samples kept). Two 8-byte numbers
come back, in one copy, instead of the labels. Imported only for device inputs with
``ignore_index``.
"""

from __future__ import annotations

from typing import Any

from numba import cuda

from . import runtime as rt


@cuda.jit
def _check(labels, width, ignore, slots):
    # slots[0]: the smallest index of a bad label; slots[1]: the labels kept
    count = 0
    for i in range(cuda.grid(1), labels.shape[0], cuda.gridsize(1)):
        label = labels[i]
        if label == ignore:
            continue
        count += 1
        # negative, too large, fractional or NaN: keep the smallest index
        if not (label >= 0 and label < width and int(label) == label):
            cuda.atomic.min(slots, 0, i)
    if count:
        cuda.atomic.add(slots, 1, count)


@rt.in_context
def check_ignoring(labels: Any, width: int, ignore: int) -> tuple[tuple[int, Any] | None, int]:
    """``(first bad label, samples kept)`` of device vector ``labels``: the first bad label
    as ``(index, value)`` or None, where labels equal to ``ignore`` are not bad, and the
    number of labels not equal to ``ignore``."""
    count = labels.shape[0]
    if count == 0:
        return None, 0
    slots = rt.check_slots(count, 0)
    rt.configured(_check, rt.grid(count, rt.THREADS), rt.THREADS)(labels, width, ignore, slots)
    index, samples = (int(value) for value in slots.copy_to_host())
    if index >= count:
        return None, samples
    return (index, labels[index:index + 1].copy_to_host()[0].item()), samples
