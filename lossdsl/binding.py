"""Call-time binding: the inputs of one call made into what a kernel reads, checked.

:func:`bind_inputs` checks the names, converts each input (NumPy, device arrays for
``target="cuda"``, or another kind through an :class:`ArrayKind` such as Dask's), picks the
dtype the kernel computes in and the rank of every input: a :class:`Bound`. Given the kernel,
:func:`axis_lengths` reads every axis's length and checks that the inputs agree on it,
:func:`check_labels` range-checks every label the kernel reads through (a GPU or a Numba
kernel does not bounds-check a class or table lookup) and :func:`kernel_arguments` lays out
the kernel's keyword arguments and output arrays. :class:`BoundCall` is the result: a kernel
bound to fixed buffers, which runs as often as asked.

:func:`coerce_loss` turns any form a loss is given in (text, a :class:`~lossdsl.Loss`, a
:class:`~lossdsl.CompiledLoss`) into its definition, params and target.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend.cpu.runtime import Direct, first_label_outside, first_outside_interval
from .backend.emit import offsets_name, partners_name
from .compiler import COUNT_TOTAL, WEIGHT_TOTAL
from .domains import (
    DeclaredRows,
    InputDomain,
    Requirement,
    first_outside,
    first_unmet,
    holds,
)
from .errors import (
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    Span,
    all_ignored_error,
    at_index,
    did_you_mean,
    not_a_param_hint,
)
from .ir.axes import Axis, partner_of
from .ir.node import Node, toposort
from .ops.compare import COMPARISONS
from .passes import shapes

if TYPE_CHECKING:
    from .api import CompiledLoss, Loss
    from .compiler import Kernel, Specialization, TypedRequirement

__all__ = ["PARALLEL_MIN_ELEMENTS", "ArrayKind", "Bound", "BoundCall", "CallPlan", "InputLayout",
           "KernelPlan", "axis_lengths", "bind_inputs", "call_signature", "check_aligned",
           "check_labels", "check_domains", "check_host_requirements", "check_out",
           "check_compared_integers", "check_group_totals_ids", "check_scan_keys",
           "compared_inputs",
           "class_vector", "coerce_loss", "count_total_error", "disagreement",
           "domain_error", "domain_violation", "first_bad_label", "host_array", "host_checked",
           "host_inputs", "inexact_integers",
           "is_device_array", "kernel_arguments", "kernel_dtype", "label_error", "label_widths",
           "numeric_array", "OTHER_SIGNATURE", "output_allocator", "overlapping", "pair_layout",
           "param_value",
           "plan_call", "plan_kernel", "reduction_of", "refuse_outside", "result_dtype",
           "result_order",
           "nan_rows", "weight_total_error", "work_size", "SERIAL_KIT",
           "SerialKit"]

#: A ``target="parallel"`` loss runs its serial kernel on calls with fewer elements than this
#: (the product of every axis's length): launching threads costs more than such a call's work
#: (measured in benchmarks/bench_overhead.py), and a small call never starts the thread pool.
PARALLEL_MIN_ELEMENTS = 1 << 15


@dataclass(frozen=True)
class InputLayout:
    """What binding needs to know of a compiled loss: its inputs, which of them are tables
    and per-class vectors, where each is written (for errors), the target, and how ignored
    labels count."""

    inputs: tuple[str, ...]
    tables: frozenset[str]  # lookup tables (rowof), per-class vectors among them
    class_vectors: frozenset[str]
    spans: Mapping[str, Span]
    target: str
    reduction: str
    ignore_index: int | None = None
    domains: tuple[InputDomain, ...] = ()  # the declared domains of inputs and params
    requirements: tuple[Requirement, ...] = ()  # the ``requires`` conditions of its defs
    # (input, "keys" or "strata") of the inputs the cumulative sums order by (see
    # check_scan_keys)
    scan_keys: tuple[tuple[str, str], ...] = ()
    # the inputs bound as they are to a def parameter declared ``y[N, K]``: the declaration
    # (what a column of them is told: class indices go to the sparse loss, not v[:, 0])
    declared_rows: Mapping[str, DeclaredRows] = field(default_factory=dict)


@dataclass
class Bound:
    """Inputs prepared for a kernel: arrays, scalars, dtype and ranks."""

    arrays: dict[str, Any]
    scalars: dict[str, float]
    ranks: dict[str, int]
    dtype: np.dtype
    weight: Any
    params: dict[str, float]
    device: Any = None  # the first device-array input (target="cuda"): outputs are made like it
    # the dtype per-element results are returned in when it is not the kernel's: float16
    # inputs are computed in float32 and their results rounded back to float16
    result_dtype: np.dtype | None = None


class ArrayKind:
    """How the inputs of one call become arrays a kernel reads. The default takes NumPy
    arrays and anything NumPy converts, and device arrays (``__cuda_array_interface__``,
    which need ``target="cuda"``); integrations with their own arrays (Dask) override."""

    def __init__(self, layout: InputLayout, inputs: Mapping[str, Any], sample_weight: Any):
        self.device = next((v for v in [*(inputs[n] for n in layout.inputs), sample_weight]
                            if is_device_array(v)), None)
        if self.device is not None:
            if layout.target != "cuda":
                raise LossError(f"device arrays (__cuda_array_interface__) need target='cuda'; "
                                f"this loss was compiled for target={layout.target!r}")
            from .backend.cuda import runtime as cuda_runtime

            self.cuda_runtime = cuda_runtime

    def array(self, name: str, value: Any, span: Span | None) -> Any:
        """Input ``name`` as the kernel reads it (0-d for a scalar)."""
        if self.device is not None and is_device_array(value):
            # a zero-copy Numba view: NumPy dtype and shape, and what kernels take
            array = self.cuda_runtime.as_device_array(value)
            return array.copy_to_host() if array.ndim == 0 else array
        return numeric_array(f"input '{name}'", value, span)

    def weight(self, value: Any, dtype: np.dtype) -> Any:
        """``sample_weight`` as the kernel reads it: a vector, in ``dtype`` on the host."""
        on_device = self.device is not None and is_device_array(value)
        weight = (self.cuda_runtime.as_device_array(value) if on_device
                  else numeric_array("sample_weight", value))
        if weight.ndim != 1:
            raise LossShapeError(f"sample_weight must be a vector (N,), got shape "
                                 f"{weight.shape}")
        return weight if on_device else weight.astype(dtype, copy=False)


def nan_rows(array: np.ndarray) -> np.ndarray:
    """The rows (first axis) of the float ``array`` holding a NaN, in order."""
    if not np.isnan(np.sum(array)):  # the sum first: one pass, no array
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.isnan(array.reshape(len(array), -1)).any(axis=1))


def check_aligned(values: Iterable[tuple[str, Any]]) -> None:
    """Refuse pandas objects (Series, DataFrames) among ``values`` whose indexes differ:
    lossdsl pairs rows by position, and pandas users expect alignment by label, so a
    reordered index would pair each row with another row's values."""
    first: tuple[str, Any] | None = None
    for name, value in values:
        if not type(value).__module__.startswith("pandas") or not hasattr(value, "index"):
            continue
        if first is None:
            first = (name, value.index)
        elif not value.index.equals(first[1]):
            raise LossShapeError(
                f"'{first[0]}' and '{name}' are pandas objects with different indexes; "
                f"lossdsl pairs rows by position, not by index label: align them first "
                f"(.reindex(...) or .loc[...]), or pass .to_numpy() to pair by position")


def bind_inputs(layout: InputLayout, params: Mapping[str, float], inputs: Mapping[str, Any],
                sample_weight: Any, kind: type[ArrayKind] = ArrayKind) -> Bound:
    """The inputs of one call bound for a kernel: names checked (param overrides taken from
    among them), arrays converted by ``kind(layout, inputs, sample_weight)`` once the names
    are known good, per-class vectors made one-row tables, the kernel's dtype chosen and
    booleans cast to it."""
    params = dict(params)
    names = layout.inputs
    spans = layout.spans
    for name, value in inputs.items():
        if name not in names:
            if name in params:
                params[name] = param_value(name, value)
                continue
            raise LossNameError(
                f"'{name}' is not an input of this loss (inputs: {', '.join(names)})",
                None, did_you_mean(name, [*names, *params, "sample_weight"])
                or not_a_param_hint(name))
    missing = [name for name in names if name not in inputs]
    if missing:
        raise LossNameError(f"missing input '{missing[0]}' (this loss takes "
                            f"{', '.join(names)})", spans.get(missing[0]))
    check_aligned([*inputs.items(), ("sample_weight", sample_weight)])
    converter = kind(layout, inputs, sample_weight)
    arrays: dict[str, Any] = {}
    scalars: dict[str, float] = {}
    ranks: dict[str, int] = {}
    float_dtypes, given_dtypes = [], []  # as the kernel reads them, and as given
    for name in names:
        value = inputs[name]
        array = converter.array(name, value, spans.get(name))
        if array.dtype.kind == "f":
            float_dtypes.append(array.dtype)
            given_dtypes.append(value.dtype if isinstance(value, np.ndarray) else array.dtype)
        if array.ndim == 0:
            scalars[name] = float(array)
            ranks[name] = 0
            continue
        if name in layout.class_vectors:
            array = class_vector(name, array, spans.get(name))
        arrays[name] = array
        ranks[name] = array.ndim
    dtype = kernel_dtype(float_dtypes)
    for name, array in arrays.items():
        # Other numeric dtypes are passed as they are: the kernels convert each element
        # they read (T(x)), which costs nothing where a copy would cost a pass over the
        # array on every call (float32 labels of a GBDT with float64 scores, say).
        if array.dtype.kind == "b" and not is_device_array(array):
            arrays[name] = array.astype(dtype)
    check_scan_keys(layout, arrays, dtype)
    weight = None if sample_weight is None else converter.weight(sample_weight, dtype)
    return Bound(arrays, scalars, ranks, np.dtype(dtype), weight, params, converter.device,
                 result_dtype(given_dtypes))


def inexact_integers(array: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """The indices of the entries of the integer ``array`` that ``dtype`` (float32, float64)
    cannot hold exactly, or None when it holds them all (a min and a max: every integer up
    to 2**24 in float32, 2**53 in float64, is exact)."""
    if array.dtype.kind not in "iu" or not array.size:
        return None
    limit = exact_integer_limit(dtype)
    if -limit <= array.min() and array.max() <= limit:
        return None
    beyond = np.flatnonzero((array < -limit) | (array > limit))
    # larger integers are exact where they convert and back unchanged; one rounded to the
    # end of the integer type's range (2**63 for int64) has no value back, and is inexact
    rounded = array.ravel()[beyond].astype(dtype)
    info = np.iinfo(array.dtype)
    inside = (rounded >= float(info.min)) & (rounded < float(info.max))
    back = np.where(inside, rounded, 0).astype(array.dtype)
    bad = beyond[~inside | (back != array.ravel()[beyond])]
    return bad if bad.size else None


def check_scan_keys(layout: InputLayout, arrays: Mapping[str, Any], dtype: np.dtype) -> None:
    """Refuse integer inputs of the keys or strata of a cumulative sum (``layout.scan_keys``)
    that the kernel's ``dtype`` cannot hold exactly: kernels read every input as ``T(x)``,
    and two event times or strata rounded to one float would tie or merge, changing the risk
    sets without a sign (float inputs need no check: the kernel computes in the widest of
    them). A LossDomainError names the first such entry and says what to do."""
    for name, role in layout.scan_keys:
        array = arrays.get(name)
        if array is None or array.dtype.kind not in "iu":
            continue
        if is_device_array(array):
            array = array.copy_to_host()
        bad = inexact_integers(array, dtype)
        if bad is None:
            continue
        index = int(bad[0])  # flat, as LossDomainError.index is for an input
        remedies = []
        if dtype == np.float32:
            remedies.append("pass the float inputs as float64")
        remedies.append(f"number the strata 0..G-1 (numpy.unique({name}, "
                        "return_inverse=True)[1])" if role == "strata" else
                        f"give '{name}' smaller integers (times from a later origin or in "
                        "coarser units)")
        raise LossDomainError(
            f"'{name}' gives the {role} of this loss's cumulative sums (risk sets), whose "
            f"order and ties need its exact values, but {array.flat[index].item()}"
            f"{at_index(index)} is an integer the loss's {dtype} cannot hold exactly: "
            f"neighbouring {role} would round to one value and "
            f"{'tie' if role == 'keys' else 'merge'}; {' or '.join(remedies)}",
            layout.spans.get(name), input=name, index=index)


# compared_inputs of each specialization's objective, by its total's node (nodes are interned)
_COMPARED: weakref.WeakKeyDictionary[Node, frozenset[str]] = weakref.WeakKeyDictionary()


def compared_inputs(spec: Specialization) -> frozenset[str]:
    """The inputs of ``spec``'s loss whose values a comparison tells apart as identities:
    an input compared with itself at the partner (``y == partner(y)``, ``y > partner(y)``)
    or with a number (``where(y == 3, ...)``), where a rounded value is another identity;
    not a comparison of computed values (``abs(y - p) < delta``) or of two inputs
    (``y > p``), which rounding moves only at ties, as it moves the arithmetic. Less its
    labels (:func:`check_labels` holds those to ``[0, width)``, which every dtype holds
    exactly)."""
    objective = spec.objective
    found = _COMPARED.get(objective.total)
    if found is None:
        roots = [n for n in (objective.value, objective.total, objective.count_total,
                             objective.weight_total) if n is not None]
        names: set[str] = set()
        for n in toposort(roots):
            if n.op in COMPARISONS and all(side.op in ("input", "const") for side in n.args):
                compared = {partner_of(side.value) or side.value for side in n.args
                            if side.op == "input"}
                if len(compared) == 1:
                    names |= compared
        labels = {label.value for label, _ in spec.labels if label.op == "input"}
        found = _COMPARED[objective.total] = frozenset(names - labels)
    return found


def _may_round(integers: np.dtype, dtype: np.dtype) -> bool:
    """Whether the integer dtype ``integers`` holds values that ``dtype`` (the kernel's float)
    cannot hold exactly: int32 does in float32 (beyond 2**24), int64 in float64 (beyond
    2**53); int16 never does."""
    if integers.kind not in "iu":
        return False
    info, limit = np.iinfo(integers), exact_integer_limit(dtype)
    return info.max > limit or info.min < -limit


def check_compared_integers(layout: InputLayout, bound: Bound, spec: Specialization) -> None:
    """Refuse integer inputs that a comparison of the loss reads (:func:`compared_inputs`)
    whose values the kernel's dtype cannot hold exactly: kernels read every input as
    ``T(x)``, and two labels rounded to one float compare equal (``y == partner(y)`` makes
    every pair of NT-Xent a positive) without a sign. Only inputs whose integer dtype can
    hold such values are read (:func:`_may_round`)."""
    names = compared_inputs(spec)
    if not names:
        return
    for name in sorted(names):
        array = bound.arrays.get(name)
        if array is None or not _may_round(np.dtype(array.dtype), bound.dtype):
            continue
        if is_device_array(array):
            array = array.copy_to_host()
        elif not isinstance(array, np.ndarray):  # Dask's: read whole only when it may round
            limit = exact_integer_limit(bound.dtype)
            if not array.size or -limit <= array.min() and array.max() <= limit:
                continue
            array = np.asarray(array)
        bad = inexact_integers(array, bound.dtype)
        if bad is None:
            continue
        index = int(bad[0])  # flat, as LossDomainError.index is for an input
        remedies = ["pass the float inputs as float64"] if bound.dtype == np.float32 else []
        remedies.append(f"number its values 0..K-1 (numpy.unique({name}, "
                        "return_inverse=True)[1])")
        raise LossDomainError(
            f"'{name}' is compared in this loss (==, <, ...: labels of pairs, classes), "
            f"which needs its exact values, but {array.flat[index].item()}"
            f"{at_index(index)} is an integer the loss's {bound.dtype} cannot hold exactly: "
            f"neighbouring values would round to one and compare equal; "
            f"{' or '.join(remedies)}", layout.spans.get(name), input=name, index=index)


def class_vector(name: str, array: Any, span: Span | None = None) -> Any:
    """A per-class vector (K,) as the kernel reads it: a one-row table (1, K)."""
    if array.ndim != 1:
        raise LossShapeError(
            f"'{name}' is a per-class vector (classvec) and must be a vector (K,) with one "
            f"entry per class, or a number; got shape {tuple(array.shape)}", span)
    try:
        return array.reshape(1, array.shape[0])
    except NotImplementedError:  # a strided device array: copy it into one row
        from numba import cuda

        return cuda.to_device(array.copy_to_host().reshape(1, array.shape[0]))


def disagreement(axis: str, shapes: Mapping[str, tuple[int, ...]],
                 declared_rows: Mapping[str, DeclaredRows] | None = None) -> LossShapeError:
    """The error for inputs of ``shapes`` that disagree on the length of ``axis``
    (``declared_rows``: the inputs bound to parameters declared ``y[N, K]``)."""
    detail = ", ".join(f"'{name}' has shape {shape}" for name, shape in shapes.items())
    # a group's items (n<d>g) are a row's second axis too, but they count samples
    classes = Axis(axis).is_classes and not Axis(axis).is_ragged
    kind = "number of classes" if classes else "number of samples"
    columns = [name for name, shape in shapes.items() if len(shape) == 2 and shape[1] == 1]
    hint = ""
    if classes and columns:
        declared = (declared_rows or {}).get(columns[0])
        if declared is not None:  # class indices in a column (Keras' sparse labels)
            return declared.error(f"the input '{columns[0]}' is a column ({detail})")
        # NumPy and torch broadcast a column; lossdsl takes a vector
        hint = (f"; a vector (N,) meets each row of (N, K) inputs: pass {columns[0]}[:, 0] "
                f"for one value per sample")
    return LossShapeError(f"inputs disagree on the {kind}: {detail}{hint}")


def axis_lengths(layout: InputLayout, bound: Bound, spec: Specialization) -> dict[str, int]:
    """The length of every axis of ``spec`` for ``bound``'s arrays, which must agree on it."""
    lengths: dict[str, int] = {}
    for axis, sources in spec.axis_sources.items():
        seen = {}
        for name, dimension in sources:
            seen[name] = bound.arrays[name].shape[dimension]
        if len(set(seen.values())) > 1:
            input_shapes = {n: bound.arrays[n].shape for n in seen}
            refuse_class_vector_length(layout, seen, input_shapes)
            raise disagreement(axis, input_shapes, layout.declared_rows)
        lengths[axis] = next(iter(seen.values()))
    for axis, width in spec.fixed_widths.items():
        if axis in lengths and lengths[axis] != width:
            raise LossShapeError(f"onehot(..., {width}) needs {width} classes, but the "
                                 f"inputs have {lengths[axis]}")
        lengths[axis] = width
    for name in spec.shapes.class_groups.values():
        check_group_totals_ids(layout, name, bound.arrays[name], bound.dtype)
    check_compared_integers(layout, bound, spec)
    if bound.weight is not None:
        weight_axes = spec.objective.weight_axes
        axis = weight_axes[-1] if weight_axes else None
        if axis is not None and bound.weight.shape[0] != lengths.get(axis):
            raise LossShapeError(f"sample_weight has {bound.weight.shape[0]} entries but "
                                 f"the loss has {lengths.get(axis)} samples")
    return lengths


def refuse_class_vector_length(layout: InputLayout, seen: Mapping[str, int],
                               input_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise the error for a per-class vector whose length is not the number of classes
    of the inputs it meets (``seen``: the class-axis length each input gives;
    ``input_shapes``: the inputs' shapes, for the message). Returns when there is none.
    :func:`axis_lengths` and lossdsl.jax, which holds its own arrays, check through it."""
    vectors = [n for n in seen if n in layout.class_vectors]
    others = {n: k for n, k in seen.items() if n not in vectors}
    for name in vectors:
        wrong = [n for n, k in others.items() if k != seen[name]]
        if not others or wrong:
            detail = (", ".join(f"'{n}' has shape {tuple(input_shapes[n])}"
                                for n in others)
                      or ", ".join(f"'{n}' has {seen[n]}" for n in vectors if n != name))
            classes = others[wrong[0]] if wrong else next(iter(seen[n] for n in vectors
                                                               if n != name))
            raise LossShapeError(
                f"per-class vector '{name}' has {seen[name]} entries but the loss has "
                f"{classes} classes ({detail}); pass one entry per class",
                layout.spans.get(name))


@dataclass(frozen=True)
class Grouping:
    """Grouped samples laid out for a kernel: each group's items one run of the flat item
    arrays. ``offsets``: where each group's run starts, then the number of items (int64);
    ``order``: the items in group order (None when each group's items are one run already),
    by which the item inputs were taken and the item results are put back."""

    items: str  # the axis of the groups' items, n<d>g
    offsets: np.ndarray
    order: np.ndarray | None


def group_samples(layout: InputLayout, bound: Bound, spec: Specialization,
                  lengths: dict[str, int]) -> list[Grouping]:
    """Lay out the grouped samples of ``spec`` (groupsum and its kin) from the group ids:
    every group id an integer (a query, a customer: any values, in any order), each group's
    items made one run of the item arrays (a stable sort by group id where they are not),
    the offsets of the runs bound for the kernel, and the number of groups in ``lengths``.
    ``bound`` is changed in place: its item arrays (and weights) in group order."""
    groupings = []
    for sample_axis, name in spec.groups.items():
        items = Axis(sample_axis).items()
        ids = bound.arrays[name]
        if is_device_array(ids):
            ids = ids.copy_to_host()
        ids = np.asarray(ids)
        check_group_ids(name, ids, layout.spans.get(name))
        order = None
        starts = _run_starts(ids)
        if len(np.unique(ids[starts])) != len(starts):  # a group in several runs: sort them
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            starts = _run_starts(ids)
        offsets = np.r_[starts, len(ids)].astype(np.int64)
        if order is not None:
            if bound.device is not None:
                raise LossShapeError(
                    f"the samples are grouped by '{name}', whose groups are not each one run "
                    "of rows; with device arrays, sort the rows by group id first")
            for input_name, axes in spec.shapes.input_axes.items():
                if items in axes and input_name in bound.arrays:
                    bound.arrays[input_name] = bound.arrays[input_name][order]
            if bound.weight is not None and items in (spec.objective.weight_axes or ()):
                bound.weight = bound.weight[order]
        bound.arrays[offsets_name(items)] = offsets
        lengths[sample_axis] = len(offsets) - 1
        groupings.append(Grouping(items, offsets, order))
    for sample_axis, name in spec.pairs.items():
        groupings.append(_pair_samples(layout, bound, lengths, sample_axis, name))
    return groupings


#: The most partner slots (pairs (i, j) of distinct samples of a group) one call lays out.
MAX_PAIRS = 1 << 28


def _pair_samples(layout: InputLayout, bound: Bound, lengths: dict[str, int],
                  sample_axis: str, name: str) -> Grouping:
    """Lay out the partners of each sample for ``pairsum(e, g)`` over ``sample_axis``: row i
    holds the other samples j of i's group, in the order given, as the index of j (the
    kernels read ``partner(x)`` as ``x[partners[k]]``). The samples keep their order (no
    result is put back); the layout is remembered for the same group ids."""
    if bound.device is not None:
        raise LossShapeError(f"the samples are paired within the groups of '{name}' "
                             "(pairsum), which are laid out on the host: pass host arrays")
    ids = np.asarray(bound.arrays[name])
    offsets, partners = pair_layout(name, ids, layout.spans.get(name))
    items = Axis(sample_axis).items()
    bound.arrays[offsets_name(items)] = offsets
    bound.arrays[partners_name(items)] = partners
    lengths[items] = len(partners)
    return Grouping(items, offsets, None)


_PAIR_LAYOUTS: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def pair_layout(name: str, ids: np.ndarray, span: Span | None) -> tuple[np.ndarray, ...]:
    """(offsets, partners) of the pairs of distinct samples within the groups of ``ids``;
    the last few layouts are kept, as a training loop's group ids do not change."""
    key = (ids.dtype.str, ids.shape)
    found = _PAIR_LAYOUTS.get(key)
    if found is not None and np.array_equal(found[0], ids):
        return found[1:]
    check_group_ids(name, ids, span)
    order = np.argsort(ids, kind="stable")  # each group's samples one run, in given order
    starts = _run_starts(ids[order])
    sizes = np.diff(np.r_[starts, len(ids)])
    run = np.repeat(np.arange(len(starts)), sizes)  # the run of each sorted position
    position = np.empty(len(ids), np.int64)
    position[order] = np.arange(len(ids))
    first = starts[run][position]  # where sample i's run starts among the sorted positions
    partners_per_row = sizes[run][position] - 1
    total = int(partners_per_row.sum())
    if total > MAX_PAIRS:
        raise LossShapeError(f"the groups of '{name}' hold {total:,} pairs of samples "
                             f"(pairsum sums over every pair within a group), more than "
                             f"{MAX_PAIRS:,}: split the largest groups", span)
    offsets = np.r_[0, np.cumsum(partners_per_row)].astype(np.int64)
    rows = np.repeat(np.arange(len(ids)), partners_per_row)
    slot = np.arange(total) - offsets[rows]  # the partner's place among the others
    own = (position - first)[rows]
    partners = order[first[rows] + slot + (slot >= own)].astype(np.int64)
    if len(_PAIR_LAYOUTS) >= 4:
        _PAIR_LAYOUTS.clear()
    _PAIR_LAYOUTS[key] = (ids.copy(), offsets, partners)
    return offsets, partners


def check_group_ids(name: str, ids: np.ndarray, span: Span | None = None) -> None:
    """Refuse group ids that are not integers (a LossDomainError naming the first), and
    floating-point ids too large for their type to tell neighbouring integers apart (float32
    beyond 2**24), which could merge two groups without a sign."""
    if ids.dtype.kind in "iub":
        return
    bad = np.flatnonzero(~np.isfinite(ids) | (ids != np.round(ids)))
    if bad.size:
        index = int(bad[0])
        raise LossDomainError(f"group ids '{name}' must be integers; found "
                              f"{ids.flat[index].item()!r}{at_index(index)}", span,
                              input=name, index=index)
    exact = 2.0 ** (np.finfo(ids.dtype).nmant + 1)
    bad = np.flatnonzero(np.abs(ids) >= exact)
    if bad.size:
        index = int(bad[0])
        raise LossDomainError(f"group ids '{name}' are {ids.dtype} numbers as large as "
                              f"{ids.flat[index].item()!r}{at_index(index)}, where {ids.dtype} "
                              "cannot tell neighbouring integers apart: pass them as an "
                              "integer array", span, input=name, index=index)


def check_group_totals_ids(layout: InputLayout, name: str, ids: Any, dtype: np.dtype) -> None:
    """Check the group ids ``name`` of samples that have classes (``groupsum`` of (N, K)
    rows, a group total: ``Specialized.class_groups``) as :func:`check_group_ids` checks
    any group ids, and refuse ids the kernel's ``dtype`` cannot hold exactly: the kernels
    read them as ``T(g)``, and two ids that round to one float would merge two groups
    without a sign."""
    if is_device_array(ids):
        ids = ids.copy_to_host()
    ids = np.asarray(ids)
    span = layout.spans.get(name)
    check_group_ids(name, ids, span)
    exact = 2.0 ** (np.finfo(dtype).nmant + 1)
    bad = np.flatnonzero(np.abs(ids.astype(np.float64)) >= exact) if ids.size else ids
    if bad.size:
        index = int(bad[0])
        raise LossDomainError(
            f"group ids '{name}' hold {ids.flat[index].item()!r}{at_index(index)}, which this "
            f"loss's {np.dtype(dtype)} kernels cannot tell from its neighbours: two groups "
            f"would merge; number the groups 0..G-1 (numpy.unique({name}, "
            f"return_inverse=True)[1])"
            + (" or pass the float inputs as float64" if np.dtype(dtype) == np.float32
               else ""), span, input=name, index=index)


def _run_starts(ids: np.ndarray) -> np.ndarray:
    """Where each run of equal ids starts (none for no ids)."""
    if not len(ids):
        return np.zeros(0, np.int64)
    return np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1]


def regrouped_results(kernel: Kernel, groupings: Iterable[Grouping]) -> dict[str, np.ndarray]:
    """{result name: the order its values were computed in} for the per-element results over
    grouped samples whose rows were sorted into groups (see :func:`group_samples`): the
    results to put back in the order the samples were given."""
    return {output.name: grouping.order for output in kernel.element_outputs
            for grouping in groupings
            if grouping.order is not None and grouping.items in output.axes}


def result_shape(axes: Iterable[str], lengths: Mapping[str, int]) -> tuple[int, ...]:
    """The shape of a per-element result on ``axes``: the items of groups are one flat
    array, one value per sample as given."""
    axes = tuple(axes)
    if len(axes) == 2 and Axis(axes[1]).is_ragged:
        return (lengths[axes[1]],)
    return tuple(lengths[axis] for axis in axes)


def label_widths(bound: Bound, kernel: Kernel,
                 lengths: Mapping[str, int]) -> list[tuple[str, Any, int]]:
    """``(name, labels, width)`` of every label to check before the kernel reads through
    it: its values must be integers in ``[0, width)``, the length of the axis it indexes
    (the classes, or the rows of a lookup table). Scalar labels come as 0-d arrays."""
    found = []
    for label, axis in kernel.labels:
        if label.op == "const":
            name, labels = repr(label.value), np.asarray(label.value)
        elif label.op == "param":
            name, labels = label.value, np.asarray(bound.params[label.value])
        elif label.value in bound.arrays:
            name, labels = label.value, bound.arrays[label.value]
        else:
            name, labels = label.value, np.asarray(bound.scalars[label.value])
        found.append((name, labels, lengths[axis]))
    return found


def check_labels(layout: InputLayout, bound: Bound, kernel: Kernel, spec: Specialization,
                 lengths: dict[str, int]) -> None:
    """Check every label the kernel reads through; with ``ignore_index``, count the
    samples kept into ``lengths`` (the kernel's ``count`` of them)."""
    objective = spec.objective
    ignore_index = layout.ignore_index
    for name, labels, width in label_widths(bound, kernel, lengths):
        ignored = name == objective.ignored and name in bound.arrays
        if is_device_array(labels):  # checked there: a GPU does not bounds-check a read
            if ignored:
                from .backend.cuda import labels as cuda_labels

                found, kept = cuda_labels.check_ignoring(labels, width, ignore_index)
            else:
                from .backend.cuda import runtime as cuda_runtime

                found = cuda_runtime.first_bad_label(labels, width)
        else:
            found = first_bad_label(labels, width, ignore_index if ignored else None)
            if ignored and found is None:
                kept = int(np.count_nonzero(labels != ignore_index))
        if found is not None:
            raise label_error(layout, name, width, *found)
        if width > exact_integer_limit(bound.dtype):
            refuse_rounded_labels(layout, name, labels, width, bound.dtype)
        if ignored:
            # a mean over no samples is an error rather than PyTorch's NaN
            if kept == 0 and layout.reduction not in ("sum", "none"):
                raise all_ignored_error(name, ignore_index, layout.reduction,
                                        layout.spans.get(name))
            error = kept_weight_total_error(layout, bound.weight, labels)
            if error is not None:
                raise error
            lengths[objective.kept_count] = kept


def exact_integer_limit(dtype: np.dtype) -> int:
    """The largest integer below which ``dtype`` (float32, float64) holds every integer
    exactly: 2**24, 2**53."""
    return 2 ** (np.finfo(dtype).nmant + 1)


def refuse_rounded_labels(layout: InputLayout, name: str, labels: Any, width: int,
                          dtype: np.dtype) -> None:
    """Refuse integer labels into a row of ``width`` entries that the kernel's ``dtype``
    rounds: kernels read a label as ``T(x)``, and in float32 2**24 + 1 reads as 2**24, which
    would index the neighbouring row or class without a sign. Labels on a device are not
    read back: any such call is refused."""
    on_device = is_device_array(labels)
    if on_device:
        if getattr(labels, "dtype", np.dtype(np.float64)).kind not in "iu":
            return
        bad, shown = None, ""
    else:
        labels = np.asarray(labels)
        found = inexact_integers(labels, dtype)
        if found is None:
            return
        bad = int(found[0])
        shown = f": {labels.flat[bad].item()}{at_index(bad)} reads as another"
    raise LossDomainError(
        f"label input '{name}' indexes {width} entries, more than {dtype} can number "
        f"exactly (2**{np.finfo(dtype).nmant + 1}){shown}; pass the float inputs as "
        "float64", layout.spans.get(name), input=name if name in layout.inputs else None,
        index=bad)


def check_domains(layout: InputLayout, bound: Bound, kernel: Kernel) -> None:
    """Check every input and param bound to a def parameter with a declared domain
    (``def hinge(y in {-1, 1}, z)``), and every def requirement (``requires y_upper >=
    y``), that ``kernel`` does not count as it runs (params and numbers): a LossDomainError
    for the first value outside, or the requirement that is false; and the total of the
    sample weights of a ``"weighted_mean"`` (see :func:`weight_total_error`)."""
    if bound.weight is not None and layout.reduction == "weighted_mean" \
            and not is_device_array(bound.weight):
        error = weight_total_error(bound.weight)
        if error is not None:
            raise error
    for declared in host_checked(layout, kernel):
        name = declared.name
        found = domain_violation(declared, bound.arrays.get(name, bound.scalars.get(name)),
                                 bound.params)
        if found is not None:
            raise domain_error(layout, declared, found)
    check_host_requirements(bound, kernel)


def weight_total_error(weight: np.ndarray, kept: np.ndarray | None = None
                       ) -> LossDomainError | None:
    """The error for sample weights whose total is 0 or not finite, which a
    ``"weighted_mean"`` (sum(w*l)/sum(w)) divides by: as the mean over no samples of an
    ignore_index call, an error rather than a NaN. ``kept``: with ignore_index, the samples
    whose label is not ignored, the only ones the total counts. None for a usable total."""
    total = float(np.sum(weight if kept is None else weight[kept], dtype=np.float64))
    return weight_total_refusal(total, kept is not None)


def weight_total_refusal(total: float, of_kept: bool) -> LossDomainError | None:
    """:func:`weight_total_error` of a weights' ``total`` already summed (by a CUDA kernel,
    :data:`~lossdsl.compiler.WEIGHT_TOTAL`, for weights on the device); ``of_kept``: over
    the samples whose label is not ignored."""
    if total != 0 and np.isfinite(total):
        return None
    which = "sample_weight of the samples not ignored" if of_kept else "sample_weight"
    return LossDomainError(
        f"{which} sums to {total!r}: reduction='weighted_mean' divides by the total "
        "of the weights, so the weighted mean is undefined (it would be nan); use "
        "reduction='sum' (0 for such a batch) or skip the batch", None)


def kept_weight_total_error(layout: InputLayout, weight: Any, labels: Any
                            ) -> LossDomainError | None:
    """:func:`weight_total_error` of a ``"weighted_mean"`` call with ignore_index over the
    samples whose ``labels`` are kept (host arrays of one weight per label; None
    otherwise)."""
    if (layout.reduction != "weighted_mean" or weight is None or is_device_array(weight)
            or is_device_array(labels) or np.shape(weight) != np.shape(labels)):
        return None
    return weight_total_error(weight, labels != layout.ignore_index)


def count_total_error(total: float, layout: InputLayout | None, weighted: bool = False
                      ) -> LossDomainError | None:
    """The error for counts of ``count_as(l, s)`` whose ``total`` (a kernel's
    :data:`~lossdsl.compiler.COUNT_TOTAL`, the mean's denominator) is 0 or not finite: every
    sample's class weight 0, a count input of zeros. Their mean would be 0/0 = NaN (PyTorch's
    ``F.cross_entropy(weight=...)`` returns nan) and its gradients NaN or infinite; as for a
    weighted mean whose weights total 0 (:func:`weight_total_error`), an error instead.
    ``layout``: the loss's (its reduction and ignore_index; None reads as "mean");
    ``weighted``: whether the call has sample weights. None for a usable total."""
    if total != 0 and np.isfinite(total):
        return None
    reduction = layout.reduction if layout is not None else "mean"
    counts = "the counts s of count_as(l, s)"
    if weighted and reduction == "weighted_mean":
        counts += " times sample_weight"  # sum(w*l)/sum(w*s)
    kept = (" of the samples not ignored"
            if layout is not None and layout.ignore_index is not None else "")
    return LossDomainError(
        f"{counts}{kept} sum to {float(total)!r}: reduction={reduction!r} divides by their "
        "total (PyTorch's class-weighted mean divides by the sum of the class weights), so "
        "the mean is undefined (it would be nan, its gradients nan or inf); give counts that "
        "are not all zero (class weights that are not 0 for every class in the batch), or "
        "use reduction='sum' (0 for such a batch) or skip the batch", None)


def check_host_requirements(bound: Bound, kernel: Kernel) -> None:
    """Check the def requirements that ``kernel`` does not count: those of params, numbers,
    per-class vectors and tables (``requires u > 0`` where ``u`` is a param or a scalar
    input; ``quantile(y, p, classvec(a))``'s ``alpha in [0, 1]`` on every entry of ``a``):
    a LossDomainError for a false one."""
    for counted in kernel.host_requirements:
        unmet = first_unmet(counted.requirement, counted.condition, counted.arguments,
                            host_inputs(counted, bound.arrays, bound.scalars), bound.params)
        if unmet is not None:
            raise counted.error(*reversed(unmet))


def host_inputs(counted: TypedRequirement, arrays: Mapping[str, Any],
                numbers: Mapping[str, float]) -> dict[str, Any]:
    """The inputs a host-checked requirement reads, from the bound ``arrays`` (its
    per-class vectors and tables, copied from the device where they are there: they are
    small) and ``numbers``."""
    found: dict[str, Any] = {}
    for name in counted.reads:
        if name in numbers:
            found[name] = numbers[name]
        elif name in arrays:
            found[name] = host_array(arrays[name])
    return found


def host_array(values: Any) -> Any:
    """``values`` in host memory: a device array copied, anything else as it is."""
    if is_device_array(values):
        from .backend.cuda import runtime as cuda_runtime

        return cuda_runtime.on_host(values)
    return values


def host_checked(layout: InputLayout, kernel: Kernel) -> tuple[InputDomain, ...]:
    """The declared domains binding checks before ``kernel`` runs: those of params and
    numbers (a kernel counts the values of its array inputs outside theirs)."""
    counted = {(name, domain) for name, domain in kernel.checks}
    return tuple(d for d in layout.domains if (d.name, d.domain) not in counted)


def refuse_outside(layout: InputLayout, kernel: Kernel, counts: Mapping[str, float],
                   inputs: Mapping[str, Any], params: Mapping[str, float]) -> None:
    """After ``kernel`` ran: the LossDomainError for the first value outside its domain of
    the first array input whose count of such values (``counts["outside:<index>"]``) is not
    0, found in the caller's ``inputs`` (as given: rows grouped for the kernel are back in
    their own order); then for the first requirement whose count of false elements
    (``counts["unmet:<index>"]``) is not 0, where it is first false."""
    for index, (name, domain) in enumerate(kernel.checks):
        if counts[f"outside:{index}"]:
            declared = next(d for d in layout.domains if (d.name, d.domain) == (name, domain))
            values = inputs[name]
            if not is_device_array(values):
                values = numeric_array(f"input '{name}'", values)
            found = domain_violation(declared, values, {})
            # None only where the kernel's float32 rounding alone put a value outside (1e-46
            # in (0, inf) rounds to 0): inside as given, so no error
            if found is not None:
                raise domain_error(layout, declared, found)
    for index, counted in enumerate(kernel.requirements):
        if counts[f"unmet:{index}"]:
            requirement = counted.requirement
            arrays = {}
            for name in requirement.reads:
                if name in inputs:  # the error's search runs on the host
                    arrays[name] = numeric_array(f"input '{name}'", host_array(inputs[name]))
            unmet = first_unmet(requirement, counted.condition, counted.arguments, arrays,
                                params)
            if unmet is not None:  # as for domains: None only where float32 rounding made it
                raise requirement.error(unmet[1], unmet[0])


def domain_error(layout: InputLayout, declared: InputDomain,
                 found: tuple[int | None, Any]) -> LossDomainError:
    """The error for ``found`` (index and value) outside ``declared``'s domain."""
    kind = "input" if declared.name in layout.inputs else "param"
    return declared.error(kind, found[1], found[0], layout.spans.get(declared.name))


def domain_violation(declared: InputDomain, values: Any, params: Mapping[str, float]
                     ) -> tuple[int | None, Any] | None:
    """``(index, value)`` of the first of ``values`` (an input's array or number; None for
    a param, read from ``params``) outside ``declared``'s domain (index None for a number),
    or None."""
    if type(values) is np.ndarray and values.ndim:
        return first_outside(values, declared.domain)
    if values is None:
        value = params[declared.name]
        return None if value in declared.domain else (None, value)
    if is_device_array(values):
        from .backend.cuda import runtime as cuda_runtime

        return cuda_runtime.first_outside_domain(values, declared.domain)
    array = np.asarray(values)
    if array.ndim == 0:
        value = array.item()
        return None if value in declared.domain else (None, value)
    return first_outside(array, declared.domain)


def label_error(layout: InputLayout, name: str, width: int, index: int,
                label: Any) -> LossDomainError:
    """The error for a label ``name`` (an input, a param or a constant) holding ``label``
    at ``index``."""
    if _is_number(name):  # a class index written in the loss, as in pick(z, 3)
        return LossDomainError(
            f"the class index {float(name):g} written in the loss must be an integer in "
            f"[0, {width}): it reads a row of {width} classes", layout.spans.get(name))
    kind = "label input" if name in layout.inputs else "label"
    return LossDomainError(
        f"{kind} '{name}' must hold integers in [0, {width}); found {label!r}"
        f"{at_index(index)}", layout.spans.get(name),
        input=name if name in layout.inputs else None, index=index)


def _is_number(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


def output_allocator(bound: Bound,
                     dtype: np.dtype | None = None) -> Callable[[tuple[int, ...]], Any]:
    """Makes the arrays results are written to (of ``dtype``, by default the kernel's):
    NumPy, or the caller's kind of device array when the inputs live on the device
    (results stay there)."""
    dtype = bound.dtype if dtype is None else dtype
    if bound.device is None:
        return lambda shape: np.empty(shape, dtype=dtype)
    from .backend.cuda import runtime as cuda_runtime

    return lambda shape: cuda_runtime.empty_like_device(bound.device, shape, dtype)


def kernel_arguments(kernel: Kernel, bound: Bound, lengths: Mapping[str, int],
                     output_array: Callable[[tuple[int, ...]], Any],
                     given: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """The keyword arguments of ``kernel.run`` for ``bound``, and the output arrays by
    result name: ``given[name]`` where the caller supplies one (checked by :func:`check_out`),
    else made by ``output_array(shape)``."""
    arguments: dict[str, Any] = {}
    names = kernel.names
    all_arrays = bound.arrays
    if bound.weight is not None:
        all_arrays = {**all_arrays, shapes.WEIGHT: bound.weight}
    for name, generated in names.arrays.items():
        arguments[generated] = all_arrays[name]
    for generated, n in names.scalar_nodes.items():
        if n.op == "param":
            arguments[generated] = bound.params[n.value]
        elif n.op == "input":
            arguments[generated] = bound.scalars[n.value]
        elif n.op == "count":
            arguments[generated] = lengths[n.value]
    for axis, generated in names.lengths.items():
        arguments[generated] = lengths[axis]
    for axis, generated in names.widths.items():
        arguments[generated] = lengths[axis]
    results: dict[str, Any] = {}
    for output in kernel.element_outputs:
        supplied = given.get(output.name) if given else None
        results[output.name] = (output_array(result_shape(output.axes, lengths))
                                if supplied is None else supplied)
        arguments[names.outputs[output.name]] = results[output.name]
    return arguments, results


@dataclass
class BoundCall:
    """A kernel bound to fixed buffers: the arguments of its ``run`` (the caller's arrays
    and the output arrays, ``results`` by result name), ready to run as often as asked.
    A caller that refills the input arrays in place reads new results from the same output
    arrays (CatBoost's one-row multiclass path)."""

    kernel: Kernel
    bound: Bound
    lengths: dict[str, int]
    arguments: dict[str, Any]
    results: dict[str, Any]
    order: list[str]  # result names in the order the API returns them
    # the caller's output arrays (``out=``) that results rounded to float16 are copied into
    # (the kernel writes float32 arrays of its own then); others are written directly
    rounded_out: Mapping[str, np.ndarray] | None = None
    # results over grouped samples' items computed in group order, with that order: put back
    # in the order the samples were given
    regrouped: Mapping[str, np.ndarray] | None = None
    # where the kernel counts values outside declared domains: the layout and the caller's
    # inputs, to name the first such value
    checked: tuple[InputLayout, Mapping[str, Any]] | None = None

    def run(self) -> list[Any]:
        """Run the kernel; every result in API order (a float for a scalar input's
        derivative and for a reduced value, arrays otherwise). A value outside its declared
        domain, counted by the kernel, is a LossDomainError, and so are counts of
        ``count_as`` whose total, the mean's denominator, is 0 (:func:`count_total_error`;
        the outputs are then unspecified)."""
        kernel, bound, results = self.kernel, self.bound, dict(self.results)
        scalar_values = kernel.execute(self.arguments)
        for name, order in (self.regrouped or {}).items():
            computed = results[name]
            computed[order] = computed.copy()
        for output, value in zip(kernel.scalar_outputs, scalar_values):
            results[output.name] = float(value)
        layout, inputs = self.checked if self.checked is not None else (None, None)
        if (kernel.checks or kernel.requirements) and layout is not None:
            refuse_outside(layout, kernel, results, inputs, bound.params)
        if COUNT_TOTAL in results:
            error = count_total_error(results[COUNT_TOTAL], layout, bound.weight is not None)
            if error is not None:
                raise error
        if WEIGHT_TOTAL in results:
            error = weight_total_refusal(
                float(results[WEIGHT_TOTAL]),
                layout is not None and layout.ignore_index is not None)
            if error is not None:
                raise error
        ranks, rounded = bound.ranks, bound.result_dtype
        found = []
        for name in self.order:
            result = results[name]
            if name != "value" and ranks[name.split(":", 1)[1]] == 0:
                result = float(result)
            elif rounded is not None and isinstance(result, np.ndarray):
                if self.rounded_out and name in self.rounded_out:
                    # astype's rounding, into the caller's array
                    np.copyto(self.rounded_out[name], result, casting="unsafe")
                    result = self.rounded_out[name]
                else:
                    result = result.astype(rounded)
            found.append(result)
        return found


def check_out(result: str, given: Any, shape: tuple[int, ...], dtype: np.dtype,
              inputs: Iterable[Any]) -> np.ndarray:
    """``given`` (an ``out=`` array for ``result``, "grad:p" or "hess:p") checked: a
    writeable, C-contiguous NumPy array of ``shape`` and ``dtype`` sharing no memory with any
    of ``inputs`` (a kernel that reads an input after writing its output would read its own
    results). A :class:`LossShapeError` that says what is expected otherwise: results are
    never written into a buffer of another shape or dtype."""
    kind, name = result.split(":", 1)
    what = f"out= for the {'gradient' if kind == 'grad' else 'Hessian'} of '{name}'"
    expected = f"a C-contiguous NumPy array of shape {shape} and dtype {dtype}"
    if not isinstance(given, np.ndarray):
        raise LossShapeError(f"{what} must be {expected}, got {type(given).__name__}")
    if given.shape != shape or given.dtype != dtype:
        raise LossShapeError(f"{what} must be {expected}, got shape {given.shape} and "
                             f"dtype {given.dtype}")
    if not given.flags.c_contiguous or not given.flags.writeable:
        state = "read-only" if not given.flags.writeable else "not C-contiguous"
        raise LossShapeError(f"{what} must be {expected}, writeable; the array given is "
                             f"{state} (np.ascontiguousarray makes one to pass)")
    for value in inputs:
        if isinstance(value, np.ndarray) and np.may_share_memory(given, value):
            raise LossShapeError(f"{what} shares memory with an input: the kernel may read "
                                 "that input after writing its results; pass a separate array")
    return given


def _work_key(axis: str, known: Iterable[str]) -> str | None:
    """The length :func:`work_size` reads for ``axis`` when ``known`` are the lengths a
    call has (None: none, a factor 1)."""
    items = Axis(axis).items() if Axis(axis).is_samples else None
    key = items if items in known else axis
    return key if key in known else None


def work_size(lengths: Mapping[str, int], axes: Iterable[str]) -> int:
    """The number of elements a call works on: the product of the lengths of ``axes`` (of
    grouped samples, the number of samples, not of groups)."""
    size = 1
    for axis in axes:
        key = _work_key(axis, lengths)
        if key is not None:
            size *= lengths[key]
    return size


# ----------------------------------------------------------------------------- the fast path
# A call with the same signature as an earlier one (the same input names in the same order,
# each a NumPy array of the same dtype and rank or a Python number, weighted or not, the same
# outputs) needs none of the decisions binding makes: the kernel, the argument order, which
# inputs need converting, which labels to check. A CallPlan keeps them; running it reads the
# axis lengths (and checks that the inputs agree on them), range-checks every label, checks
# any out= arrays, and calls the kernel. Whatever it cannot do cheaply (a disagreement, a
# bad label, an out= array to refuse) it leaves to the general path, which raises the error.
# CompiledLoss keeps the plan each set of outputs ran last, which checks a call's signature
# itself (CallPlan.matches) instead of building and hashing its key, and most plans are also
# printed as straight-line Python (see "plans as Python functions" below).

#: How a plan reads one input: as given, a per-class vector as a one-row table, a number.
_AS_GIVEN, _CLASS_VECTOR, _NUMBER = 0, 1, 2


def call_signature(want_value: bool, grads: tuple[str, ...], hessians: tuple[str, ...],
                   inputs: Mapping[str, Any], sample_weight: Any,
                   output_dtype: np.dtype | None) -> tuple:
    """The key of a call's :class:`CallPlan`: what the outputs are, the type of the sample
    weight and, per input in the order given, its name and dtype and rank (a NumPy array) or
    type (anything else). One flat tuple (names are the only strings in it, so it reads one
    way). A call that repeats the last signature of its outputs skips it
    (:meth:`CallPlan.matches`)."""
    key: list[Any] = [want_value, grads, hessians, output_dtype, type(sample_weight)]
    if type(sample_weight) is np.ndarray:
        key += (sample_weight.dtype, sample_weight.ndim)
    for name, value in inputs.items():
        if type(value) is np.ndarray:
            key += (name, value.dtype, value.ndim)
        else:
            key += (name, type(value))
    return tuple(key)


@dataclass(frozen=True)
class KernelPlan:
    """One kernel's positional arguments for a :class:`CallPlan`: a template with every
    slot the call fills named by where its value comes from."""

    kernel: Kernel
    template: tuple[Any, ...]  # run's positional arguments; the call fills the slots below
    #                            (a serial CPU kernel's ends with SERIAL_KIT)
    arrays: tuple[tuple[int, str], ...]  # (slot, input name or shapes.WEIGHT)
    numbers: tuple[tuple[int, str], ...]  # (slot, input name) of scalar inputs
    params: tuple[tuple[int, str], ...]  # (slot, param name), read per call
    lengths: tuple[tuple[int, str], ...]  # (slot, axis or kept-count name)
    outputs: tuple[tuple[int, str, tuple[str, ...]], ...]  # (slot, result name, axes)
    scalar_outputs: tuple[str, ...]
    result_slots: tuple[int, ...] | None  # the API's results by slot, when all are arrays
    counts: tuple[int, ...] = ()  # positions among the scalar outputs of "outside:" counts
    # the position among the scalar outputs of the count_as total (COUNT_TOTAL), which must
    # not be 0 (see count_total_error); None where the kernel has none
    count_total: int | None = None
    host_domains: tuple[InputDomain, ...] = ()  # checked before the run (params, numbers)
    host_requirements: tuple[TypedRequirement, ...] = ()  # likewise

    def takes_out(self, out: Mapping[str, Any], arrays: Mapping[str, Any],
                  lengths: Mapping[str, int], dtype: np.dtype) -> bool:
        """Whether the ``out=`` arrays fit this kernel's results for inputs ``arrays`` of
        ``lengths`` (:func:`check_out`'s checks, without its messages): every one for a
        result it writes, of its shape and ``dtype``, writeable and C-contiguous, sharing
        memory with no input and no other."""
        given = []
        for _, name, axes in self.outputs:
            array = out.get(name)
            if array is None:
                continue
            if type(array) is not np.ndarray or array.dtype is not dtype \
                    and array.dtype != dtype or array.ndim != len(axes):
                return False
            shape = array.shape
            for dimension, axis in enumerate(axes):
                if shape[dimension] != lengths[axis]:
                    return False
            flags = array.flags
            if not (flags.c_contiguous and flags.writeable):
                return False
            given.append(array)
        return len(given) == len(out) and not _shared(given, arrays.values())


@dataclass
class CallPlan:
    """What binding works out for one call signature (see :func:`call_signature`), kept by
    :class:`~lossdsl.CompiledLoss` so that later calls of that signature skip it.

    ``runner``: the plan printed as a Python function (:func:`_print_runner`), which
    :meth:`run` calls where there is one; None where the plan is interpreted."""

    layout: InputLayout
    # (input name, how it is read, its dtype (an array) or type (a number), its rank) in
    # layout order: the call signature the plan was made for, less the names' order
    readers: tuple[tuple[str, int, Any, int], ...]
    dtype: np.dtype  # the kernel's
    output_dtype: np.dtype  # per-element results'
    weight_dtype: np.dtype | None  # sample_weight converted to it (None: unweighted)
    # (axis, the (input, dimension) its length is read from, the others that must agree)
    axis_sources: tuple[tuple[str, tuple[str, int], tuple[tuple[str, int], ...]], ...]
    fixed_widths: tuple[tuple[str, int], ...]
    weight_axis: str | None
    labels: tuple[tuple[str, str, str, Any], ...]  # (name, "array"/"number"/"param"/"const",
    #                                                 axis, the constant's value)
    ignored: str | None  # the label input ignore_index drops samples of
    kept_count: str | None
    threaded_axes: frozenset[str] | None  # None: the kernel does not depend on the size
    order: tuple[str, ...]
    scalar_results: frozenset[str]  # results returned as floats (derivatives of numbers)
    kernels: dict[str, KernelPlan]  # by target ("cpu" for a small call of a parallel loss)
    last_kernel: Kernel | None = None  # the kernel the last call ran (CompiledLoss.source)
    # integer inputs of the keys or strata of cumulative sums, checked on every call as
    # check_scan_keys does (a later call's values may not fit the kernel's dtype)
    scan_keys: tuple[str, ...] = ()
    weight_given: np.dtype | None = None  # the dtype sample_weight was given in (a vector)
    # integer inputs a comparison reads whose dtype holds values the kernel's rounds,
    # checked on every call as check_compared_integers does
    compared: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # every input an array read as it is: the call's inputs are the kernel's arrays
        self._as_given = all(reader == _AS_GIVEN for _, reader, _, _ in self.readers)
        # sample weights a "weighted_mean" divides by the total of (see weight_total_error)
        self._weight_total = (self.weight_dtype is not None
                              and self.layout.reduction == "weighted_mean")
        # the lengths work_size reads for the threaded axes, resolved once: a call of a
        # parallel loss only multiplies them
        known = {axis for axis, _, _ in self.axis_sources}
        known |= {axis for axis, _ in self.fixed_widths}
        self._threaded_lengths = tuple(
            key for key in (_work_key(axis, known) for axis in self.threaded_axes or ())
            if key is not None)
        # the labels first_label_outside checks as they are (a vector of a dtype it is
        # compiled for, no ignore_index): (name, axis); None where any needs more
        # (first_bad_label's conversions, a number, a param, ignored samples)
        kinds = {name: (kind, rank) for name, _, kind, rank in self.readers}
        direct = [(name, axis) for name, kind, axis, _ in self.labels
                  if kind == "array" and name != self.ignored and kinds[name][1] == 1
                  and (kinds[name][0].kind in "iu" or kinds[name][0] in _COMPILED_FLOATS)]
        self._direct_labels = tuple(direct) if len(direct) == len(self.labels) else None
        # wider rows of labels go to the general path (refuse_rounded_labels)
        self._label_limit = exact_integer_limit(self.dtype)
        # (name, low, high) of each compared input, in its dtype: what the kernel's holds
        self._compared_ranges = tuple(
            (name, kinds[name][0].type(max(-self._label_limit, np.iinfo(kinds[name][0]).min)),
             kinds[name][0].type(self._label_limit)) for name in self.compared)
        # the plan printed as functions (see _print_runner): the runner, once the first
        # kernel is added, and a caller per kernel target; None where not printable
        self.runner: Callable[..., Any] | None = None
        self._plan_names: _PlanNames | None = None
        self._callers: dict[str, Callable[..., Any]] = {}
        self._printable = True

    def add_kernel(self, target: str, kernel_plan: KernelPlan) -> None:
        """Run calls of ``target`` on ``kernel_plan`` from now on (printing the plan's
        functions where it can: see :func:`_print_runner`)."""
        self.kernels[target] = kernel_plan
        if not self._printable:
            return
        if self._plan_names is None:
            printed = _print_runner(self, {name: axes for _, name, axes in kernel_plan.outputs})
            if printed is None:
                self._printable = False
                return
            source, namespace, self._plan_names = printed
            runner = _compiled(source, namespace, "runner")
        else:
            runner = self.runner
        caller = _print_caller(self, kernel_plan, self._plan_names)
        if caller is None:  # every target interpreted, as one of them must be
            self._printable, self.runner = False, None
            return
        self._callers[target] = caller
        self.runner = runner

    def matches(self, inputs: Mapping[str, Any], sample_weight: Any) -> bool:
        """Whether a call of ``inputs`` and ``sample_weight`` has this plan's signature
        (:func:`call_signature`, whatever the order of the names): what a call that repeats
        the last signature of its outputs checks instead of building and hashing its key."""
        if len(inputs) != len(self.readers):
            return False
        if sample_weight is None:
            if self.weight_given is not None:
                return False
        # (weight_given first: a dtype equals None, which NumPy reads as float64)
        elif self.weight_given is None or type(sample_weight) is not np.ndarray \
                or sample_weight.ndim != 1 or sample_weight.dtype != self.weight_given:
            return False
        for name, reader, kind, rank in self.readers:
            value = inputs.get(name)  # None for a name not given: no reader's kind
            if reader == _NUMBER:
                # the type, not only a number: a float among the inputs makes the kernel's
                # dtype float64, where an int leaves it to the arrays
                if type(value) is not kind:
                    return False
            elif type(value) is not np.ndarray or value.ndim != rank \
                    or value.dtype is not kind and value.dtype != kind:
                return False
        return True

    def target_for(self, lengths: Mapping[str, int], target: str) -> str:
        """The kernel target a call of ``lengths`` runs on: the serial kernel for a small
        call of a parallel loss (see :data:`PARALLEL_MIN_ELEMENTS`)."""
        if target == "parallel":
            size = 1
            for key in self._threaded_lengths:
                size *= lengths[key]
            if size < PARALLEL_MIN_ELEMENTS:
                return "cpu"
        return target

    def run(self, inputs: Mapping[str, Any], sample_weight: Any, params: Mapping[str, float],
            target: str, out: Mapping[str, Any] | None, matched: bool = True) -> Any:
        """The results of a call of this signature, in API order; None where the general
        path must take the call (to raise its error, or to build a kernel not built yet).
        ``matched``: whether the call is known to have this plan's signature; where it is
        not and has another, :data:`OTHER_SIGNATURE`.

        Written for the small call (a boosting round on a few hundred rows, a minibatch),
        where each Python step is a measurable share of the call's time: the printed
        runner where there is one, else the steps below, where a step the plan has nothing
        to do for (no weights, labels, domains of params) costs one test."""
        runner = self.runner
        if runner is not None:
            found = runner(inputs, sample_weight, params, target, out)
            return None if matched and found is OTHER_SIGNATURE else found
        if not matched and not self.matches(inputs, sample_weight):
            return OTHER_SIGNATURE
        numbers: dict[str, float] = {}
        if self._as_given:  # every input an array the kernel reads as it is (the usual call)
            arrays = inputs if self.weight_dtype is None else dict(inputs)
        else:
            arrays = {}
            for name, reader, _, _ in self.readers:
                value = inputs[name]
                if reader == _AS_GIVEN:
                    arrays[name] = value
                elif reader == _CLASS_VECTOR:
                    arrays[name] = value.reshape(1, value.shape[0])
                elif type(value) is int and not -2**63 <= value < 2**64:
                    return None  # NumPy holds it as an object: the general path refuses it
                else:
                    numbers[name] = float(value)
        lengths: dict[str, int] = {}
        for axis, (name, dimension), others in self.axis_sources:
            # len() for the first dimension (every array read here has one): a third of
            # the time of .shape[0]
            length = lengths[axis] = (len(arrays[name]) if dimension == 0
                                      else arrays[name].shape[dimension])
            for name, dimension in others:
                if (len(arrays[name]) if dimension == 0
                        else arrays[name].shape[dimension]) != length:
                    return None
        if self.fixed_widths:
            for axis, width in self.fixed_widths:
                if lengths.setdefault(axis, width) != width:
                    return None
        if self.weight_dtype is not None:
            weight = sample_weight
            if weight.dtype != self.weight_dtype:
                weight = weight.astype(self.weight_dtype)
            if self.weight_axis is not None and weight.shape[0] != lengths.get(self.weight_axis):
                return None
            arrays[shapes.WEIGHT] = weight
            if self._weight_total and weight_total_error(weight) is not None:
                return None  # the general path raises the error
        if self.labels:
            if self._direct_labels is not None:
                for name, axis in self._direct_labels:
                    if first_label_outside(arrays[name], lengths[axis], 0, False) >= 0 \
                            or lengths[axis] > self._label_limit:
                        return None  # the general path names the label
            elif not self._labels_valid(arrays, numbers, params, lengths):
                return None
        if self.scan_keys:
            for name in self.scan_keys:  # the general path raises the error
                if inexact_integers(arrays[name], self.dtype) is not None:
                    return None
        if self._compared_ranges:
            for name, low, high in self._compared_ranges:  # the general path raises the error
                if first_outside_interval(arrays[name].ravel(), low, high) >= 0:
                    return None
        kernel_plan = self.kernels.get(target if self.threaded_axes is None
                                       else self.target_for(lengths, target))
        if kernel_plan is None:
            return None
        if kernel_plan.host_domains or kernel_plan.host_requirements:
            for declared in kernel_plan.host_domains:  # the general path raises the error
                if domain_violation(declared, arrays.get(declared.name,
                                                         numbers.get(declared.name)), params):
                    return None
            for counted in kernel_plan.host_requirements:
                if not holds(counted.condition, host_inputs(counted, arrays, numbers),
                             params).all():
                    return None
        if out and (self.scalar_results and out.keys() & self.scalar_results
                    or not kernel_plan.takes_out(out, arrays, lengths, self.output_dtype)):
            return None  # the general path refuses out= or says what is wrong with it
        self.last_kernel = kernel_plan.kernel
        positional = list(kernel_plan.template)
        for slot, name in kernel_plan.arrays:
            positional[slot] = arrays[name]
        if numbers:
            for slot, name in kernel_plan.numbers:
                positional[slot] = numbers[name]
        if kernel_plan.params:
            for slot, name in kernel_plan.params:
                positional[slot] = params[name]
        for slot, name in kernel_plan.lengths:
            positional[slot] = lengths[name]
        dtype = self.output_dtype
        for slot, name, axes in kernel_plan.outputs:
            given = out.get(name) if out else None
            if given is None:
                given = np.empty(lengths[axes[0]] if len(axes) == 1
                                 else tuple([lengths[axis] for axis in axes]), dtype)
            positional[slot] = given
        scalars = kernel_plan.kernel.run(*positional)  # the template ends with the kit
        for position in kernel_plan.counts:
            if scalars[position]:  # a value outside its domain: the general path names it
                return None
        if kernel_plan.count_total is not None \
                and not 0.0 < abs(scalars[kernel_plan.count_total]) < np.inf:
            return None  # counts of count_as totalling 0 (or NaN): the general path refuses
        if kernel_plan.result_slots is not None and not self.scalar_results:
            return [positional[slot] for slot in kernel_plan.result_slots]  # arrays only
        results: dict[str, Any] = {name: positional[slot]
                                   for slot, name, _ in kernel_plan.outputs}
        for name, value in zip(kernel_plan.scalar_outputs, scalars):
            results[name] = float(value)
        for name in self.scalar_results:
            results[name] = float(results[name])
        return [results[name] for name in self.order]

    def _labels_valid(self, arrays: dict[str, Any], numbers: Mapping[str, float],
                      params: Mapping[str, float], lengths: dict[str, int]) -> bool:
        """Whether every label is an integer in range (with ignore_index, the samples kept
        counted into ``lengths``); False leaves the call to the general path's errors."""
        for name, kind, axis, constant in self.labels:
            labels = (arrays[name] if kind == "array" else
                      np.asarray(numbers[name] if kind == "number" else
                                 params[name] if kind == "param" else constant))
            width = lengths[axis]
            if width > self._label_limit:
                return False  # the general path checks the labels' rounding
            if name == self.ignored and kind == "array":
                if first_bad_label(labels, width, self.layout.ignore_index) is not None:
                    return False
                kept = int(np.count_nonzero(labels != self.layout.ignore_index))
                if kept == 0 and self.layout.reduction not in ("sum", "none"):
                    return False
                if kept_weight_total_error(self.layout, arrays.get(shapes.WEIGHT),
                                           labels) is not None:
                    return False  # the general path raises the error
                lengths[self.kept_count] = kept  # type: ignore[index]
            elif first_bad_label(labels, width) is not None:
                return False
        return True


def overlapping(arrays: Iterable[Any]) -> bool:
    """Whether any two of ``arrays`` (None for an output not given) share memory (out=
    arrays of two results in one buffer would overwrite each other)."""
    return _shared([a for a in arrays if a is not None], ())


def _shared(given: list[np.ndarray], inputs: Iterable[Any]) -> bool:
    """Whether any of the arrays ``given`` may share memory with another or with one of
    ``inputs`` (inputs may share memory among themselves)."""
    # each owning its memory (the usual call), only the same array twice shares any; plain
    # loops, as this runs on every small call with out=
    for a in given:
        if a.base is not None:
            break
    else:
        inputs = tuple(inputs)
        for b in inputs:
            if getattr(b, "base", 0) is not None:
                break
        else:
            for i, a in enumerate(given):
                for b in given[i + 1:]:
                    if a is b:
                        return True
                for b in inputs:
                    if a is b:
                        return True
            return False
    inputs = tuple(inputs)
    for i, a in enumerate(given):
        for b in (*given[i + 1:], *inputs):
            if _may_overlap(a, b):
                return True
    return False


def _may_overlap(a: np.ndarray, b: Any) -> bool:
    """Whether ``a`` and ``b`` may share memory: two distinct arrays that each own their
    memory (``base`` None: NumPy allocated it for each) cannot, which skips the bounds
    comparison in the usual call."""
    if a is b:
        return True
    if a.base is None and getattr(b, "base", 0) is None:
        return False
    return np.may_share_memory(a, b)


class SerialKit(Direct):
    """The kit (see :mod:`lossdsl.backend.cpu.runtime`) a plan runs serial kernels with:
    each loop called directly, without the launch checks only parallel loops need."""

    @staticmethod
    def loop(function: Callable[..., Any], count: int, *arguments: Any) -> tuple:
        """Run ``function`` on ``arguments``; its ``count`` reductions as NumPy float64 (the
        scalar glue between loops computes in NumPy's arithmetic, as with the default kit)."""
        result = function(*arguments)
        return tuple([np.float64(r) for r in result]) if count else ()


#: The kit serial kernels run with from a plan.
SERIAL_KIT = SerialKit()


# ------------------------------------------------------------------- plans as Python functions
# A CallPlan's run interprets its tuples on every call: about 1.3 us of a small call, a third
# of scikit-learn's whole gradient_hessian at N = 256. For the usual signatures (inputs that
# are arrays read as they are or numbers, weighted or not, labels first_label_outside checks
# as they are, no cumulative-sum keys, no host-checked domains or requirements, no result
# returned as a number) the plan is also printed as a Python function that does the same
# steps straight-line: the signature checked (OTHER_SIGNATURE where it differs), the lengths
# read and compared, the weights converted, the labels range-checked, the out= arrays
# checked (or the outputs allocated) and, per kernel target, a second function that fills
# the kernel's arguments, runs it and assembles the results. Like a kernel module, its source
# holds generated names and integers only: input, result and param names, dtypes and types
# are constants of its namespace.

#: What a plan returns for a call whose signature is not its own (see CallPlan.run).
OTHER_SIGNATURE = object()


def _compiled(source: str, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    """The function ``name`` defined by ``source`` (generated code, see above)."""
    exec(compile(source, f"<lossdsl call plan {name}>", "exec"), namespace)  # noqa: S102
    return namespace[name]


@dataclass(frozen=True)
class _PlanNames:
    """The variables of a plan's printed functions: each input (``v<i>``), the weights
    (``w``), each length (``l<j>``, by axis or kept count) and each per-element result
    (``o<k>``, by result name), in the order the runner passes them to a kernel's caller."""

    inputs: dict[str, str]  # input name -> variable
    arrays: tuple[str, ...]  # the variables of the array inputs (and w), for out= overlap
    lengths: dict[str, str]  # axis -> variable
    results: dict[str, str]  # per-element result name -> variable
    weighted: bool

    def arguments(self) -> list[str]:
        """The parameters of a kernel's caller, in order."""
        return [*self.inputs.values(), *(["w"] if self.weighted else []),
                *self.lengths.values(), *self.results.values(), "params"]


def _print_runner(plan: CallPlan, result_axes: Mapping[str, tuple[str, ...]]
                  ) -> tuple[str, dict[str, Any], _PlanNames] | None:
    """The source, namespace and variables of ``plan``'s runner, or None for a plan the
    printed functions do not cover (its run interprets it)."""
    if plan.scalar_results or plan.scan_keys or plan.labels and plan._direct_labels is None \
            or any(reader not in (_AS_GIVEN, _NUMBER) for _, reader, _, _ in plan.readers):
        return None
    namespace: dict[str, Any] = {"ndarray": np.ndarray, "empty": np.empty,
                                 "OTHER": OTHER_SIGNATURE, "shared": _shared,
                                 "first_label_outside": first_label_outside,
                                 "weight_total_error": weight_total_error,
                                 "outside_interval": first_outside_interval,
                                 "CALLS": plan._callers, "OD": plan.output_dtype}
    lines = ["def runner(inputs, sample_weight, params, target, out):",
             f"    if len(inputs) != {len(plan.readers)}:", "        return OTHER"]
    inputs, arrays = {}, []
    for i, (name, reader, kind, rank) in enumerate(plan.readers):
        namespace[f"N{i}"], namespace[f"K{i}"] = name, kind
        inputs[name] = v = f"v{i}"
        lines.append(f"    {v} = inputs.get(N{i})")
        if reader == _NUMBER:
            lines += [f"    if type({v}) is not K{i}:", "        return OTHER"]
        else:
            lines += [f"    if type({v}) is not ndarray or {v}.ndim != {int(rank)} "
                      f"or {v}.dtype is not K{i} and {v}.dtype != K{i}:", "        return OTHER"]
            arrays.append(v)
    weighted = plan.weight_given is not None
    if weighted:
        namespace["WG"], namespace["WD"] = plan.weight_given, plan.weight_dtype
        lines += ["    w = sample_weight",
                  "    if type(w) is not ndarray or w.ndim != 1 "
                  "or w.dtype is not WG and w.dtype != WG:", "        return OTHER"]
    else:
        lines += ["    if sample_weight is not None:", "        return OTHER"]
    for name, reader, kind, _ in plan.readers:
        if reader == _NUMBER and kind is int:  # NumPy holds a larger one as an object
            lines += [f"    if not {-2**63} <= {inputs[name]} < {2**64}:", "        return None"]
        if reader == _NUMBER:
            lines.append(f"    {inputs[name]} = float({inputs[name]})")
    lengths: dict[str, str] = {}

    def dimension_of(name: str, dimension: int) -> str | None:
        if name not in inputs or inputs[name] not in arrays:
            return None
        return f"len({inputs[name]})" if dimension == 0 \
            else f"{inputs[name]}.shape[{int(dimension)}]"
    for axis, (name, dimension), others in plan.axis_sources:
        lengths[axis] = variable = f"l{len(lengths)}"
        read = dimension_of(name, dimension)
        if read is None:
            return None
        lines.append(f"    {variable} = {read}")
        for other, other_dimension in others:
            read = dimension_of(other, other_dimension)
            if read is None:
                return None
            lines += [f"    if {read} != {variable}:", "        return None"]
    for axis, width in plan.fixed_widths:
        if axis in lengths:
            lines += [f"    if {lengths[axis]} != {int(width)}:", "        return None"]
        else:
            lengths[axis] = f"l{len(lengths)}"
            lines.append(f"    {lengths[axis]} = {int(width)}")
    if weighted:
        lines += ["    if w.dtype is not WD:", "        w = w.astype(WD)"]
        if plan.weight_axis is not None:
            if plan.weight_axis not in lengths:
                return None
            lines += [f"    if len(w) != {lengths[plan.weight_axis]}:", "        return None"]
        if plan._weight_total:
            lines += ["    if weight_total_error(w) is not None:", "        return None"]
        arrays.append("w")
    for name, axis in plan._direct_labels or ():
        if axis not in lengths:
            return None
        lines += [f"    if first_label_outside({inputs[name]}, {lengths[axis]}, 0, False) >= 0"
                  f" or {lengths[axis]} > {plan._label_limit}:",
                  "        return None"]
    for k, (name, low, high) in enumerate(plan._compared_ranges):
        if name not in inputs or inputs[name] not in arrays:
            return None
        namespace[f"LO{k}"], namespace[f"HI{k}"] = low, high
        lines += [f"    if outside_interval({inputs[name]}.ravel(), LO{k}, HI{k}) >= 0:",
                  "        return None"]
    if plan.threaded_axes is None:
        lines.append("    call = CALLS.get(target)")
    else:
        if any(key not in lengths for key in plan._threaded_lengths):
            return None
        size = " * ".join(lengths[key] for key in plan._threaded_lengths) or "1"
        namespace["SMALL"] = PARALLEL_MIN_ELEMENTS
        lines.append(f"    call = CALLS.get('cpu' if target == 'parallel' and {size} < SMALL "
                     "else target)")
    lines += ["    if call is None:", "        return None"]
    results: dict[str, str] = {}
    allocate, check = [], []
    # per-element results (the value too, for reduction="none"); a reduced value is a float
    # the caller reads from the kernel's scalars
    if any(name not in result_axes and name != "value" for name in plan.order):
        return None
    for k, name in enumerate(n for n in plan.order if n in result_axes):
        axes = result_axes[name]
        if any(axis not in lengths for axis in axes):
            return None
        results[name] = o = f"o{k}"
        namespace[f"R{k}"] = name
        shape = ", ".join(lengths[axis] for axis in axes)
        allocate.append(f"        {o} = empty({shape if len(axes) == 1 else f'({shape})'}, OD)")
        check += [f"        {o} = out.get(R{k})", f"        if {o} is None:",
                  f"            {o} = empty({shape if len(axes) == 1 else f'({shape})'}, OD)",
                  "        else:",
                  # carray: C-contiguous, writeable and aligned (an unaligned array, which
                  # check_out takes, goes to the general path)
                  f"            if type({o}) is not ndarray or {o}.dtype is not OD "
                  f"and {o}.dtype != OD or {o}.shape != ({shape},) "
                  f"or not {o}.flags.carray:",
                  "                return None",
                  "            given += 1"]
    # out= arrays sharing memory with an input or another: every output is compared (one
    # allocated here shares none), by identity where each array owns its memory (the usual
    # call: only the same array twice shares any), else by shared()'s bounds
    written = list(results.values())
    read = "".join(f"{a}, " for a in arrays)  # a tuple of the arrays the kernel reads
    owners = " and ".join(f"{a}.base is None" for a in [*written, *arrays])
    same = " or ".join([f"{o} is {other}" for i, o in enumerate(written)
                        for other in [*written[i + 1:], *arrays]] or ["False"])
    lines += ["    if out is None:", *(allocate or ["        pass"]), "    else:",
              "        given = 0", *check,
              "        if given != len(out):", "            return None",
              f"        if {owners or 'True'}:",
              f"            if {same}:", "                return None",
              f"        elif shared([{', '.join(written)}], ({read})):",
              "            return None"]
    names = _PlanNames(inputs, tuple(arrays), lengths, results, weighted)
    lines.append(f"    return call({', '.join(names.arguments())})")
    return "\n".join(lines) + "\n", namespace, names


def _print_caller(plan: CallPlan, kernel_plan: KernelPlan, names: _PlanNames
                  ) -> Callable[..., Any] | None:
    """The function that runs ``kernel_plan``'s kernel on the variables of ``names`` and
    returns the call's results (None where a count of values outside a domain is not 0, or
    the total of the counts of ``count_as`` is: see :func:`count_total_error`),
    or None for a kernel the printed functions do not cover. The declared domains of params
    and numbers (``huber``'s ``delta in (0, inf)``) are checked first, as
    :func:`domain_violation` checks them (None: the general path raises the error)."""
    if kernel_plan.host_requirements:
        return None
    namespace: dict[str, Any] = {"PLAN": plan, "KERNEL": kernel_plan.kernel,
                                 "RUN": kernel_plan.kernel.run, "INF": np.inf}
    checks = []
    for i, declared in enumerate(kernel_plan.host_domains):
        variable = names.inputs.get(declared.name)
        if variable in names.arrays:  # (arrays are counted by the kernel, not here)
            return None
        if variable is None:  # a param
            namespace[f"Q{i}"] = declared.name
            variable = f"params[Q{i}]"
        namespace[f"DOMAIN{i}"] = declared.domain
        checks += [f"    if {variable} not in DOMAIN{i}:", "        return None"]
    slots: list[str | None] = [None] * len(kernel_plan.template)
    if kernel_plan.template and kernel_plan.template[-1] is SERIAL_KIT:
        namespace["KIT"] = SERIAL_KIT
        slots[-1] = "KIT"
    for slot, name in kernel_plan.arrays:
        slots[slot] = "w" if name == shapes.WEIGHT and names.weighted \
            else names.inputs.get(name)
    for slot, name in kernel_plan.numbers:
        slots[slot] = names.inputs.get(name)
    for i, (slot, name) in enumerate(kernel_plan.params):
        namespace[f"P{i}"] = name
        slots[slot] = f"params[P{i}]"
    for slot, axis in kernel_plan.lengths:
        slots[slot] = names.lengths.get(axis)
    for slot, name, _ in kernel_plan.outputs:
        slots[slot] = names.results.get(name)
    if any(slot is None for slot in slots) or set(names.results) != {
            name for _, name, _ in kernel_plan.outputs}:
        return None
    returned = []
    for name in plan.order:
        if name in names.results:
            returned.append(names.results[name])
        elif name in kernel_plan.scalar_outputs:  # the reduced value
            returned.append(f"float(s[{kernel_plan.scalar_outputs.index(name)}])")
        else:
            return None
    lines = [f"def call({', '.join(names.arguments())}):", *checks,
             "    PLAN.last_kernel = KERNEL",
             f"    s = RUN({', '.join(slots)})"]
    if kernel_plan.counts:
        counted = " or ".join(f"s[{int(position)}]" for position in kernel_plan.counts)
        lines += [f"    if {counted}:", "        return None"]
    if kernel_plan.count_total is not None:  # 0, infinite or NaN: the general path refuses
        lines += [f"    if not 0.0 < abs(s[{int(kernel_plan.count_total)}]) < INF:",
                  "        return None"]
    lines.append(f"    return [{', '.join(returned)}]")
    return _compiled("\n".join(lines) + "\n", namespace, "call")


def plan_call(layout: InputLayout, inputs: Mapping[str, Any], sample_weight: Any,
              bound: Bound, spec: Specialization, threaded_axes: frozenset[str] | None,
              output_dtype: np.dtype | None, order: list[str]) -> CallPlan | None:
    """The plan of a call the general path has just bound (``bound``, typed as ``spec``),
    or None for a signature the fast path does not take: inputs other than native NumPy
    arrays of the dtypes kernels read as they are (booleans are converted) and Python
    numbers, param overrides among the inputs, device arrays, float16 results."""
    # group ids are checked on every call by the general path (see check_group_totals_ids)
    if bound.device is not None or bound.result_dtype is not None or spec.groups or spec.pairs \
            or spec.shapes.class_groups or any(name not in layout.inputs for name in inputs):
        return None
    readers = []
    for name in layout.inputs:
        value = inputs[name]
        if type(value) is np.ndarray:
            if value.ndim == 0 or value.dtype not in KERNEL_READABLE \
                    or value.dtype.kind == "b":
                return None
            readers.append((name, _CLASS_VECTOR if name in layout.class_vectors
                            else _AS_GIVEN, value.dtype, value.ndim))
        elif type(value) in (float, int):
            readers.append((name, _NUMBER, type(value), 0))
        else:
            return None
    weight_dtype = weight_given = None
    if sample_weight is not None:
        if type(sample_weight) is not np.ndarray or sample_weight.ndim != 1 \
                or sample_weight.dtype not in KERNEL_READABLE:
            return None
        weight_dtype, weight_given = bound.dtype, sample_weight.dtype
    weight_axes = spec.objective.weight_axes
    labels = []
    for label, axis in spec.labels:
        if label.op == "const":
            labels.append((repr(label.value), "const", axis, label.value))
        elif label.op == "param":
            labels.append((label.value, "param", axis, None))
        elif label.value in bound.arrays:
            labels.append((label.value, "array", axis, None))
        else:
            labels.append((label.value, "number", axis, None))
    return CallPlan(
        layout, tuple(readers), bound.dtype,
        bound.dtype if output_dtype is None else np.dtype(output_dtype), weight_dtype,
        tuple((axis, sources[0], tuple(sources[1:]))
              for axis, sources in spec.axis_sources.items()),
        tuple(spec.fixed_widths.items()), weight_axes[0] if weight_axes else None,
        tuple(labels), spec.objective.ignored, spec.objective.kept_count, threaded_axes,
        tuple(order),
        frozenset(n for n in order if n != "value" and bound.ranks[n.split(":", 1)[1]] == 0),
        {}, scan_keys=tuple(name for name, _ in layout.scan_keys
                            if name in bound.arrays and bound.arrays[name].dtype.kind in "iu"),
        weight_given=weight_given,
        compared=tuple(sorted(name for name in compared_inputs(spec) if name in bound.arrays
                              and _may_round(bound.arrays[name].dtype, bound.dtype))))


def plan_kernel(kernel: Kernel, order: Sequence[str], layout: InputLayout) -> KernelPlan:
    """``kernel``'s positional arguments as a :class:`KernelPlan` (its ``run`` takes them in
    the order of :meth:`~lossdsl.backend.emit.Names.run_arguments`), for a call whose
    results are ``order`` of a loss laid out as ``layout``."""
    names = kernel.names
    slots = {generated: slot for slot, generated in enumerate(names.run_arguments())}
    arrays = tuple((slots[g], name) for name, g in names.arrays.items())
    numbers, params, lengths = [], [], []
    for generated, n in names.scalar_nodes.items():
        if generated not in slots:
            continue
        target = {"param": params, "input": numbers, "count": lengths}[n.op]
        target.append((slots[generated], n.value))
    lengths += [(slots[g], axis) for axis, g in names.lengths.items()]
    lengths += [(slots[g], axis) for axis, g in names.widths.items()]
    outputs = tuple((slots[names.outputs[o.name]], o.name, tuple(o.axes))
                    for o in kernel.element_outputs)
    slot_of = {name: slot for slot, name, _ in outputs}
    # a CPU module's run takes the loop executor (kit) last; a CUDA one takes none
    serial = "kit" in inspect.signature(kernel.run).parameters \
        and not any(getattr(f, "targetoptions", {}).get("parallel")
                    for f in kernel.loops.values())
    return KernelPlan(kernel, (None,) * len(slots) + ((SERIAL_KIT,) if serial else ()),
                      arrays, tuple(numbers), tuple(params), tuple(lengths), outputs,
                      tuple(o.name for o in kernel.scalar_outputs),
                      tuple(slot_of[name] for name in order)
                      if all(name in slot_of for name in order) else None,
                      tuple(i for i, o in enumerate(kernel.scalar_outputs)
                            if o.name.startswith(("outside:", "unmet:"))),
                      next((i for i, o in enumerate(kernel.scalar_outputs)
                            if o.name == COUNT_TOTAL), None),
                      host_checked(layout, kernel), kernel.host_requirements)


def result_order(want_value: bool, grads: Iterable[str], hessians: Iterable[str]) -> list[str]:
    """The names of a kernel's results in the order the API returns them."""
    return ((["value"] if want_value else []) + [f"grad:{g}" for g in grads]
            + [f"hess:{h}" for h in hessians])


def kernel_dtype(float_dtypes: list[np.dtype]) -> np.dtype:
    """The dtype a kernel computes in for inputs of ``float_dtypes``: float32 when they all
    are, else float64 (also for no float input at all, and for float16 or longdouble)."""
    if not float_dtypes:
        return np.dtype(np.float64)
    first = float_dtypes[0]
    # one dtype throughout (the usual call): no promotion to work out (result_type costs
    # about a microsecond, a tenth of a small call's binding)
    dtype = first if all(d == first for d in float_dtypes) else np.result_type(*float_dtypes)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def result_dtype(float_dtypes: list[np.dtype]) -> np.dtype | None:
    """The dtype results are returned in when it differs from the kernel's: float16 for
    half-precision inputs (computed in float32, as PyTorch does on the CPU), else None."""
    # float16 results only when every float input is float16 or narrower (result_type is
    # then float16); any wider float promotes past it
    if float_dtypes and all(d.itemsize <= 2 for d in float_dtypes) \
            and np.result_type(*float_dtypes) == np.float16:
        return np.dtype(np.float16)
    return None


# The dtypes kernels read as they are; other numeric dtypes are converted once on binding.
KERNEL_READABLE = frozenset(np.dtype(t) for t in (
    np.float32, np.float64, np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64))


def numeric_array(what: str, value: Any, span: Span | None = None) -> np.ndarray:
    """``value`` as a NumPy array a kernel can read, or a :class:`LossShapeError` that says
    what is wrong with it (``what`` names it: "input 'y'", "sample_weight").

    float16 becomes float32, longdouble float64, and other byte orders the machine's own;
    strings, None, objects and ragged lists are refused.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise LossShapeError(f"{what} is not a rectangular numeric array: {error}",
                             span) from None
    except RuntimeError as error:  # a PyTorch tensor that requires grad
        if not getattr(value, "requires_grad", False):
            raise
        raise LossShapeError(f"{what} is a PyTorch tensor that requires grad, which "
                             f"lossdsl.compile's kernels cannot differentiate through: pass "
                             f"it .detach(), or use lossdsl.torch.loss(...) to get "
                             f"gradients from autograd", span) from error
    if array.dtype.kind not in "fiub":
        raise LossShapeError(f"{what} must be numbers (a float, integer or bool array or "
                             f"scalar), got {type(value).__name__} of dtype {array.dtype}",
                             span)
    if array.dtype not in KERNEL_READABLE:
        if array.dtype.kind == "f":
            target = np.float32 if array.dtype.itemsize <= 4 else np.float64
        else:
            target = array.dtype.newbyteorder("=")
        array = array.astype(target)
    return array


def param_value(name: str, value: Any) -> float:
    """A param's value given at compile or call time, as a float (a :class:`LossShapeError`
    for anything that is not a real number)."""
    array = numeric_array(f"param '{name}'", value)
    if array.ndim != 0:
        raise LossShapeError(f"param '{name}' must be a single number, got shape {array.shape}")
    return float(array)


_COMPILED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # (Numba has no float16)


def first_bad_label(labels: np.ndarray, width: int,
                    ignore: int | None = None) -> tuple[int, Any] | None:
    """``(flat index, value)`` of the first label not an integer in ``[0, width)`` (nor equal
    to ``ignore``, when given), or None."""
    if (labels.dtype.kind in "iu" or labels.dtype in _COMPILED_FLOATS) \
            and labels.flags.c_contiguous:
        index = first_label_outside(labels.reshape(-1), width,
                                    0 if ignore is None else ignore, ignore is not None)
        return None if index < 0 else (index, labels.flat[index].item())
    bad = (labels < 0) | (labels >= width) | (labels != np.floor(labels))
    if ignore is not None:
        bad &= labels != ignore
    index = int(np.argmax(bad)) if bad.size else 0
    return (index, labels.flat[index].item()) if bad.size and bad.flat[index] else None


def is_device_array(value: Any) -> bool:
    """Whether ``value`` lives on a CUDA device: CuPy, PyTorch CUDA and Numba device arrays
    (``__cuda_array_interface__``), and the arrays of Numba's CUDA simulator."""
    if isinstance(value, np.ndarray):
        return False
    if type(value).__module__.startswith("torch") and hasattr(value, "is_cuda"):
        # what a tensor's interface property checks before building its dict (several
        # microseconds per read, and a call asks once per input and check)
        return bool(value.is_cuda and not value.is_sparse)
    try:
        if hasattr(value, "__cuda_array_interface__"):
            return True
    except RuntimeError:  # a PyTorch CUDA tensor that requires grad refuses to export itself
        return True
    # the simulator's arrays have no interface; their class exists once it is imported
    simulated = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return simulated is not None and isinstance(value, simulated.FakeCUDAArray)


# Loss text parsed once per process: scikit-learn clones and refits estimators many times,
# and the Loss of a text that imports no file is immutable.
_PARSED: dict[str, Loss] = {}


def reduction_of(loss: Any, reduction: str | None) -> str:
    """The reduction a front end compiles ``loss`` with: ``reduction`` when given, else the
    one a :class:`~lossdsl.CompiledLoss` was compiled with (``"sum"`` stays a sum), else
    ``"mean"``."""
    from .api import CompiledLoss

    if reduction is not None:
        return reduction
    return loss.reduction if isinstance(loss, CompiledLoss) else "mean"


def coerce_loss(loss: str | Loss | CompiledLoss) -> tuple[Loss, dict[str, float], str | None]:
    """(the loss definition, its param overrides, its compile target) from any loss form.

    A :class:`~lossdsl.CompiledLoss` is accepted for convenience; only its definition,
    params and target are kept, because integrations compile it again with the reduction
    they need. One compiled with ``ignore_index`` is refused: the integrations would drop it
    and count the ignored rows.
    """
    from .api import CompiledLoss, Loss, loss_from_text

    if isinstance(loss, CompiledLoss):
        if loss.ignore_index is not None:
            raise LossError(
                f"this loss was compiled with ignore_index={loss.ignore_index}, which the "
                "integrations (boosters, estimators, SciPy, Dask) do not carry over: they "
                "would count the ignored rows. Drop those rows, or give them any valid "
                "label, sample_weight=0 and reduction='weighted_mean' (under 'mean' they "
                "would still count in the denominator)")
        return loss.loss, dict(loss.params), loss.target
    if isinstance(loss, Loss):
        return loss, {}, None
    if isinstance(loss, str):
        parsed = _PARSED.get(loss)
        if parsed is None:
            parsed = loss_from_text(loss)
            # text that imports a file stands for what the file holds now (it may be
            # edited, or the working directory changed): parsed anew each time, the files
            # themselves cached by their stat (frontend.resolve.load_scope)
            if not parsed.scope.imports:
                if len(_PARSED) >= 64:
                    _PARSED.pop(next(iter(_PARSED)))
                _PARSED[loss] = parsed
        return parsed, {}, None
    raise TypeError(f"expected loss text, a Loss or a CompiledLoss, not {type(loss).__name__}")
