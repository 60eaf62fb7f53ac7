"""Loss, gradient and Hessian over ``dask.array`` inputs: the compiled kernel's passes, run
chunk by chunk.

    import dask.array as da
    import lossdsl.dask

    L = lossdsl.dask.compile("bce_logits(y, p)")            # reduction="mean"
    value = L(y=y, p=p, sample_weight=w).compute()           # weighted mean over all chunks
    g, h = L.grad_and_hessian("p", y=y, p=p)                 # dask arrays chunked like p

Every array input with one row per sample is split along the sample axis into the same
chunks (dask arrays are rechunked to the first one's chunks, NumPy arrays are chunked the
same way, a class axis stays in one chunk); scalars and arrays of another length (a
regulariser's parameter vector, a cost table) go whole to every task.

The kernel is the one :func:`lossdsl.compile` builds for the same inputs, so results equal
one call over all the data up to rounding. Its generated ``run`` calls each loop through a
kit (:mod:`lossdsl.backend.cpu.runtime`); the kit here turns a loop over the samples into
one task per chunk, whose reductions dask adds up in a tree, and keeps the scalar glue
between passes lazy on 0-d dask arrays. A loss that reduces over the samples itself (Dice,
``mean(p)^2``, a weighted mean's ``sum(w)``) runs its passes one after another over the
chunks: the second pass's tasks wait for the first pass's sums, at any depth of nesting,
with exact diagonal Hessians.

Results are lazy dask arrays; call ``.compute()`` (or ``dask.compute`` on several).
Inputs outside their domain and labels out of range are found as dask reads each chunk: the
error names the first bad value of the chunk that met one first, and says so where that is
not the first chunk (an earlier chunk may hold one too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from .api import CompiledLoss, Loss
from .backend.cpu.runtime import launch
from .backend.emit import offsets_name
from .binding import (
    ArrayKind,
    Bound,
    Grouping,
    InputLayout,
    check_host_requirements,
    coerce_loss,
    count_total_error,
    domain_error,
    domain_violation,
    first_bad_label,
    group_samples,
    kernel_arguments,
    label_widths,
    reduction_of,
    regrouped_results,
    result_order,
    weight_total_error,
)
from .compiler import COUNT_TOTAL, TypedRequirement
from .domains import InputDomain, first_outside, first_unmet
from .errors import LossError, LossNameError, LossShapeError, did_you_mean

__all__ = ["DaskLoss", "compile"]


class DaskLoss:
    """A loss evaluated over dask arrays chunk by chunk; methods mirror :class:`CompiledLoss`.

    The value is a lazy 0-d dask array (per-sample for ``reduction="none"``); gradients and
    Hessians are dask arrays chunked like their input.
    """

    def __init__(self, loss: str | Loss | CompiledLoss, reduction: str | None = None,
                 params: Mapping[str, float] | None = None, target: str | None = None):
        definition, compiled_params, compiled_target = coerce_loss(loss)
        reduction = reduction_of(loss, reduction)
        # Dask already runs one task per core: serial kernels avoid oversubscription.
        target = target or compiled_target or "cpu"
        if target not in ("cpu", "parallel"):
            raise LossError(f"lossdsl.dask runs CPU kernels in its tasks; target={target!r} "
                            "is not one (use 'cpu' or 'parallel')")
        if "colsum" in definition.cumulative_sums:
            raise LossError(
                "this loss gives each sample a total over all the samples (colsum), which "
                "no chunk of the samples holds; compute it on the whole arrays "
                "(lossdsl.compile)")
        if definition.cumulative_sums:
            raise LossError(
                f"this loss sums over risk sets ({', '.join(definition.cumulative_sums)}): each "
                "sample's value depends on every sample ordered after it, which no chunk of "
                "the samples holds; compute it on the whole arrays (lossdsl.compile)")
        self.compiled = CompiledLoss(definition, target, reduction,
                                     {**compiled_params, **dict(params or {})})

    @property
    def loss(self) -> Loss:
        """The loss definition."""
        return self.compiled.loss

    @property
    def reduction(self) -> str:
        """``"mean"``, ``"sum"`` or ``"none"``."""
        return self.compiled.reduction

    @property
    def target(self) -> str:
        """The kernel target inside each task."""
        return self.compiled.target

    @property
    def params(self) -> dict[str, float]:
        """The params' values."""
        return self.compiled.params

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the loss's inputs."""
        return self.compiled.inputs

    def __call__(self, sample_weight: Any = None, **inputs: Any) -> da.Array:
        """The loss value: a lazy 0-d dask array (per-sample values for ``"none"``)."""
        (value,) = self._evaluate(True, (), (), inputs, sample_weight)
        return value

    def grad(self, wrt: str | Iterable[str], sample_weight: Any = None,
             **inputs: Any) -> da.Array | dict[str, da.Array]:
        """Gradient(s) with respect to input(s), chunked like them."""
        names = _names(wrt)
        gradients = self._evaluate(False, names, (), inputs, sample_weight)
        return gradients[0] if isinstance(wrt, str) else dict(zip(names, gradients))

    def value_and_grad(self, wrt: str | Iterable[str], sample_weight: Any = None,
                       **inputs: Any) -> tuple[da.Array, Any]:
        """``(value, gradient)`` (lazy)."""
        names = _names(wrt)
        value, *gradients = self._evaluate(True, names, (), inputs, sample_weight)
        return value, (gradients[0] if isinstance(wrt, str) else dict(zip(names, gradients)))

    def hessian(self, wrt: str | Iterable[str], sample_weight: Any = None,
                **inputs: Any) -> da.Array | dict[str, da.Array]:
        """The diagonal Hessian(s) with respect to input(s)."""
        names = _names(wrt)
        hessians = self._evaluate(False, (), names, inputs, sample_weight)
        return hessians[0] if isinstance(wrt, str) else dict(zip(names, hessians))

    def grad_and_hessian(self, wrt: str, sample_weight: Any = None,
                         **inputs: Any) -> tuple[da.Array, da.Array]:
        """``(gradient, diagonal Hessian)`` from one kernel call per chunk."""
        gradient, hessian = self._evaluate(False, (wrt,), (wrt,), inputs, sample_weight)
        return gradient, hessian

    def _evaluate(self, want_value: bool, grads: tuple[str, ...], hessians: tuple[str, ...],
                  inputs: dict[str, Any], sample_weight: Any) -> list[da.Array]:
        compiled = self.compiled
        for name in (*grads, *hessians):
            if name not in self.inputs:
                raise LossNameError(f"'{name}' is not an input of this loss", None,
                                    did_you_mean(name, self.inputs))
        bound = compiled.bind(inputs, sample_weight, _DaskArrays)
        spec = compiled.specialization(bound.ranks, bound.weight is not None)
        if spec.shapes.class_groups:
            raise LossError(
                f"this loss sums (N, K) rows over the groups of "
                f"'{next(iter(spec.shapes.class_groups.values()))}' (groupsum of samples with "
                "classes: each row gets its group's column sums), which lossdsl.dask does not "
                "lay out across chunks: compute it on NumPy arrays (lossdsl.compile), a "
                "batch of images at a time")
        kernel, lengths = compiled.prepare(bound, want_value, grads, hessians)
        if spec.pairs:
            raise LossError(
                f"this loss sums over pairs within the groups of "
                f"'{next(iter(spec.pairs.values()))}' (pairsum), whose partners lossdsl.dask "
                "does not lay out across chunks: compute it on NumPy arrays (a query's "
                "pairs fit in memory where its documents do)")
        groupings = group_samples(compiled.layout, bound, spec, lengths) if spec.groups else []
        for grouping in groupings:
            _chunk_by_groups(bound, spec, grouping)
        for name, labels, width in label_widths(bound, kernel, lengths):
            checked = _checked_labels(compiled, name, labels, width)
            if name in bound.arrays:  # dask labels are checked as their chunks are read
                bound.arrays[name] = checked
        for declared in compiled.layout.domains:
            _checked_domain(compiled.layout, declared, bound)
        if bound.weight is not None and compiled.reduction == "weighted_mean":
            bound.weight = _total_checked(bound.weight)
        check_host_requirements(bound, kernel)
        for counted in kernel.requirements:
            _checked_requirement(counted, bound)
        arguments, results = kernel_arguments(
            kernel, bound, lengths, lambda shape: _Slot(shape, bound.dtype))
        kit = _ChunkKit(_KernelRef(compiled, bound.ranks, bound.weight is not None,
                                   bound.dtype, want_value, grads, hessians))
        scalar_values = kernel.run(**arguments, kit=kit)
        for output, value in zip(kernel.scalar_outputs, scalar_values):
            results[output.name] = da.asarray(value, dtype=np.float64).map_blocks(
                _plain, dtype=np.float64)
        # results over grouped samples were computed in group order: back to the rows' own
        regrouped = regrouped_results(kernel, groupings)
        found = []
        for name in result_order(want_value, grads, hessians):
            result = results[name]
            if isinstance(result, _Slot):
                result = result.array
                if name in regrouped:
                    result = result[np.argsort(regrouped[name])]
                wrt = name.partition(":")[2]
                # the chunks of the input as given (grouped samples were rechunked by group)
                source = inputs.get(wrt)
                if not isinstance(source, da.Array):
                    source = bound.arrays.get(wrt)
                if isinstance(source, da.Array) and result.shape == source.shape:
                    result = result.rechunk(source.chunks)  # a pass that read no chunked input
            found.append(result)
        if COUNT_TOTAL in results:
            found = _after_count_check(found, results[COUNT_TOTAL], compiled.layout,
                                       bound.weight is not None)
        return found


@dataclass(frozen=True)
class _GroupOffsets:
    """The offsets of grouped samples (see :class:`lossdsl.binding.Grouping`) and the groups
    each chunk holds: chunk c holds groups ``bounds[c]`` to ``bounds[c + 1]``, so that no
    group is split between two tasks."""

    offsets: np.ndarray
    bounds: np.ndarray

    def chunk(self, index: int) -> np.ndarray:
        """The offsets of chunk ``index``'s groups in its own item arrays."""
        local = self.offsets[self.bounds[index]:self.bounds[index + 1] + 1]
        return local - local[0]

    @property
    def groups(self) -> tuple[int, ...]:
        """The number of groups of each chunk."""
        return tuple(int(n) for n in np.diff(self.bounds))

    @property
    def items(self) -> tuple[int, ...]:
        """The number of samples of each chunk."""
        return tuple(int(n) for n in np.diff(self.offsets[self.bounds]))


def _chunk_by_groups(bound: Any, spec: Any, grouping: Grouping) -> None:
    """Rechunk the grouped samples' arrays of ``bound`` (in group order by now) so that every
    chunk ends where a group ends, near where the given chunks ended, and hand the kernel
    the offsets as :class:`_GroupOffsets`."""
    offsets = grouping.offsets
    names = [name for name, axes in spec.shapes.input_axes.items()
             if grouping.items in axes and isinstance(bound.arrays.get(name), da.Array)]
    given = bound.arrays[names[0]].chunks[0] if names else (int(offsets[-1]),)
    ends = np.cumsum(given)
    # each chunk ends at the first group end at or after the given chunk's end
    bounds = np.unique(np.r_[0, np.searchsorted(offsets, ends), len(offsets) - 1])
    chunking = _GroupOffsets(offsets, bounds)
    for name in names:
        bound.arrays[name] = bound.arrays[name].rechunk((chunking.items,))
    if isinstance(bound.weight, da.Array) and grouping.items in (spec.objective.weight_axes
                                                                 or ()):
        bound.weight = bound.weight.rechunk((chunking.items,))
    bound.arrays[offsets_name(grouping.items)] = chunking


def _names(wrt: str | Iterable[str]) -> tuple[str, ...]:
    return (wrt,) if isinstance(wrt, str) else tuple(wrt)


class _DaskArrays(ArrayKind):
    """Binds dask inputs: every array with one row per sample as a dask array on the first
    dask input's chunking, everything else (scalars, tables, per-class vectors, arrays of
    another length) whole to every task."""

    def __init__(self, layout: InputLayout, inputs: Mapping[str, Any], sample_weight: Any):
        first = next((inputs[n] for n in layout.inputs if isinstance(inputs[n], da.Array)),
                     None)
        if first is None:
            raise LossError("lossdsl.dask needs at least one dask array input (a dask "
                            "DataFrame's column becomes one with .to_dask_array(lengths=True))")
        self.rows, self.row_chunks = first.shape[0], first.chunks[0]
        self.tables = layout.tables
        self.device = None

    def aligned(self, name: str, value: Any) -> Any:
        """``value`` chunked like the first dask input when it has one row per sample."""
        if isinstance(value, da.Array):
            if any(size != size for size in value.shape) or self.rows != self.rows:
                raise LossShapeError(
                    f"dask input '{name}' has unknown chunk sizes (shape {value.shape}): "
                    "compute them first (.to_dask_array(lengths=True) from a dask "
                    "DataFrame, or array.compute_chunk_sizes())")
            if value.ndim not in (1, 2):
                raise LossShapeError(f"dask input '{name}' has shape {value.shape}: inputs "
                                     "are vectors (N,) or matrices (N, K)")
            if value.shape[0] != self.rows:
                # another sample domain's array (a regulariser's parameter vector): one
                # block, which every task reads whole, as it would a NumPy array
                return value.rechunk(value.shape)
            return value.rechunk((self.row_chunks,) + value.shape[1:])
        array = np.asarray(value)
        if array.ndim in (1, 2) and array.shape[0] == self.rows:
            return da.from_array(array, chunks=(self.row_chunks,) + array.shape[1:])
        return array

    def array(self, name: str, value: Any, span: Any) -> Any:
        """Input ``name`` whole (a table or per-class vector) or aligned with the samples."""
        array = np.asarray(value) if name in self.tables else self.aligned(name, value)
        if array.ndim and array.dtype.kind not in "fiub":
            raise LossShapeError(f"input '{name}' must be numeric, got dtype {array.dtype}")
        return array

    def weight(self, value: Any, dtype: np.dtype) -> Any:
        """``sample_weight`` as a dask vector chunked like the samples."""
        weight = self.aligned("sample_weight", value)
        if not isinstance(weight, da.Array) or weight.shape != (self.rows,):
            raise LossShapeError(f"sample_weight has shape {np.shape(value)}, "
                                 f"expected ({self.rows},)")
        return weight.astype(dtype)


def _checked_labels(compiled: CompiledLoss, name: str, labels: Any, width: int) -> Any:
    """``labels``, checked to be integers in ``[0, width)``: a GPU or a Numba kernel does not
    bounds-check a class or table lookup. Dask labels are checked chunk by chunk."""
    return _checked(labels, lambda block: first_bad_label(block, width),
                    lambda index, label: compiled.label_error(name, width, index, label))


def _checked_domain(layout: InputLayout, declared: InputDomain, bound: Bound) -> None:
    """Check the input or param ``declared`` is about against its declared domain; a dask
    input is replaced in ``bound`` by itself checked chunk by chunk."""
    values = bound.arrays.get(declared.name, bound.scalars.get(declared.name))
    if not isinstance(values, da.Array):
        found = domain_violation(declared, values, bound.params)
        if found is not None:
            raise domain_error(layout, declared, found)
        return
    bound.arrays[declared.name] = _checked(
        values, lambda block: first_outside(block, declared.domain),
        lambda index, value: domain_error(layout, declared, (index, value)))


def _checked_requirement(counted: TypedRequirement, bound: Bound) -> None:
    """Check a def requirement that reads arrays where it is false: dask arrays chunk by
    chunk as they are read (the array of most dimensions that it reads is replaced in
    ``bound`` by itself checked, with the others' chunks of the same rows beside it)."""
    requirement = counted.requirement
    names = [name for name in requirement.reads if name in bound.arrays]
    numbers = {**bound.params, **{name: bound.scalars[name] for name in requirement.reads
                                  if name in bound.scalars}}

    def find(*blocks: np.ndarray) -> tuple[tuple[int, ...], dict] | None:
        arrays = {name: (block[:, 0] if block.ndim > bound.ranks[name] else block)
                  for name, block in zip(names, blocks)}
        return first_unmet(requirement, counted.condition, counted.arguments, arrays, numbers)

    arrays = [bound.arrays[name] for name in names]
    if not any(isinstance(a, da.Array) for a in arrays):
        unmet = find(*arrays)
        if unmet is not None:
            raise requirement.error(unmet[1], unmet[0])
        return
    widest = max(range(len(names)), key=lambda i: np.ndim(arrays[i]))
    target = da.asarray(arrays[widest])
    aligned = []
    for array in arrays:
        array = da.asarray(array)
        if array.ndim < target.ndim:  # a column beside the target's rows
            array = array.reshape(array.shape + (1,) * (target.ndim - array.ndim))
        aligned.append(array.rechunk({0: target.chunks[0]}))

    def check(*blocks: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        unmet = find(*blocks)
        if unmet is not None:
            starts = [start for start, _ in block_info[widest]["array-location"]] \
                if block_info else [0] * target.ndim
            raise requirement.error(unmet[1], tuple(start + i for start, i in
                                                    zip(starts, unmet[0])))
        return blocks[widest]

    bound.arrays[names[widest]] = da.map_blocks(check, *aligned, dtype=target.dtype)


def _checked(values: Any, find: Callable[[np.ndarray], tuple[int, Any] | None],
             error: Callable[[int, Any], LossError]) -> Any:
    """``values`` checked by ``find`` (the flat index and value of a block's first bad entry,
    or None): at once for an array in memory, block by block as they are read for a dask
    array, raising ``error(flat index, value)``."""
    if not isinstance(values, da.Array):
        found = find(values)
        if found is not None:
            raise error(*found)
        return values

    def check(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        found = find(block)
        if found is not None:
            start = block_info[0]["array-location"][0][0] if block_info else 0
            index, value = found
            raised = error(start * int(np.prod(block.shape[1:])) + index, value)
            if start:  # dask reads the chunks in any order: say which one this is
                raised.extend_message(f" (the first in rows {start}..{start + len(block) - 1}, "
                                      "the chunk where dask met one first: an earlier chunk "
                                      "may hold one too)")
            raise raised
        return block

    return values.map_blocks(check, dtype=values.dtype)


def _total_checked(weight: Any) -> Any:
    """Sample weights whose total a ``"weighted_mean"`` divides by, checked as the NumPy path
    checks them (:func:`~lossdsl.binding.weight_total_error`): at once in memory; for a dask
    array, each chunk waits for the total, so a total of 0 raises instead of computing NaN."""
    if not isinstance(weight, da.Array):
        error = weight_total_error(weight)
        if error is not None:
            raise error
        return weight

    def check(total: np.ndarray) -> np.ndarray:
        error = weight_total_error(total)
        if error is not None:
            raise error
        return total

    total = weight.sum(dtype=np.float64).map_blocks(check, dtype=np.float64)
    return da.blockwise(lambda block, _: block, "i", weight, "i", total, "",
                        dtype=weight.dtype)


def _after_count_check(found: list[Any], total: da.Array, layout: InputLayout,
                       weighted: bool) -> list[Any]:
    """``found``, each result waiting for a check of ``total``, the lazy total over every
    chunk of the counts of ``count_as`` that the mean divides by (the kernel's
    :data:`~lossdsl.compiler.COUNT_TOTAL`): a total of 0 raises
    :func:`~lossdsl.binding.count_total_error` when a result is computed, instead of
    computing NaN. One chunk's counts may all be 0; only the total over all of them counts."""
    def check(value: np.ndarray) -> np.ndarray:
        error = count_total_error(float(value), layout, weighted)
        if error is not None:
            raise error
        return value

    checked = total.map_blocks(check, dtype=np.float64)
    return [da.blockwise(lambda block, _: block, "ij"[:result.ndim], result,
                         "ij"[:result.ndim], checked, "", dtype=result.dtype)
            for result in found]


class _Slot:
    """An output array of the kernel: the kit fills in the dask array its loop writes."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype = shape, dtype
        self.array: da.Array | None = None


@dataclass(frozen=True)
class _KernelRef:
    """What a task needs to find the kernel in its own process: a :class:`CompiledLoss`
    pickles without its kernels and loads them from the on-disk cache where it arrives."""

    compiled: CompiledLoss
    ranks: dict[str, int]
    weighted: bool
    dtype: np.dtype
    want_value: bool
    grads: tuple[str, ...]
    hessians: tuple[str, ...]

    def loop(self, name: str) -> Callable[..., Any]:
        """The kernel's loop function ``name``."""
        kernel = self.compiled.kernel(self.ranks, self.weighted, self.dtype, self.want_value,
                                      self.grads, self.hessians)
        return kernel.loops[name]


def _run_chunk(kernel: _KernelRef, name: str, count: int, length: int, rows: int,
               *arguments: Any) -> tuple:
    """One loop over one chunk of ``length`` samples (or groups, of ``rows`` samples in
    all): ``(its reductions, then the output chunks it wrote)``."""
    values, outputs = [], []
    for argument in arguments:
        if isinstance(argument, _Slot):
            argument = np.empty((rows,) + argument.shape[1:], dtype=argument.dtype)
            outputs.append(argument)
        elif isinstance(argument, np.ndarray):
            # 0-d: a scalar of the glue (a _QuietScalar), already in the kernel's dtype
            argument = (np.asarray(argument)[()] if argument.ndim == 0
                        else np.ascontiguousarray(argument))
        values.append(argument)
    with np.errstate(all="ignore"):
        reductions = launch(kernel.loop(name), length, *values)
    return (np.array(reductions if count else (), dtype=np.float64), *outputs)


class _ChunkKit:
    """Runs a kernel's loops as dask tasks (see :mod:`lossdsl.backend.cpu.runtime`).

    A loop that reads arrays chunked over the samples is one task per chunk, its reductions
    a tree sum over the chunks; any other loop (over a regulariser's vector) is one task. The
    glue between passes stays lazy: NumPy's ufuncs on 0-d dask arrays make 0-d dask arrays.
    """

    def __init__(self, kernel: _KernelRef):
        self.kernel = kernel

    @staticmethod
    def cast(dtype: type, value: Any) -> Any:
        """``value`` in the kernel's dtype, lazily when it is a dask array."""
        return value.astype(dtype) if isinstance(value, da.Array) else dtype(value)

    def loop(self, function: Callable[..., Any], count: int, length: int,
             *arguments: Any) -> tuple:
        """Build the tasks of one loop; its ``count`` reductions as 0-d dask arrays."""
        # An array in one block goes whole to every task: a 0-d scalar of the glue, or an
        # array of another sample domain than the first dask input's (a regulariser's
        # parameter vector). A loop reads the arrays of one sample domain, and those of
        # the samples are all on the same chunks, so one block among them is all of them.
        chunked = [isinstance(a, da.Array) and a.ndim > 0 and a.numblocks[0] > 1
                   for a in arguments]
        first = next((a for a, c in zip(arguments, chunked) if c), None)
        sizes = first.chunks[0] if first is not None else (length,)
        rows = sizes
        grouped = next((a for a in arguments if isinstance(a, _GroupOffsets)), None)
        if grouped is not None:  # a loop over groups: each task takes whole groups
            sizes, rows = grouped.groups, grouped.items
        # Unoptimised, the tasks read the chunks and the earlier passes' sums under their own
        # keys, so every task of the graph is shared by its readers (and runs once).
        blocks = [a.to_delayed(optimize_graph=False).ravel() if isinstance(a, da.Array)
                  else None for a in arguments]
        slots = [a for a in arguments if isinstance(a, _Slot)]
        partials: list[da.Array] = []
        pieces: list[list[da.Array]] = [[] for _ in slots]
        for index, (size, items) in enumerate(zip(sizes, rows)):
            values = [a.chunk(index) if isinstance(a, _GroupOffsets)
                      else a if b is None else b[index] if c else b[0]
                      for a, b, c in zip(arguments, blocks, chunked)]
            task = dask.delayed(_run_chunk)(self.kernel, function.__name__, count, size, items,
                                            *values)
            partials.append(da.from_delayed(task[0], (count,), np.float64))
            for slot, chunk_pieces, output in zip(slots, pieces, range(1, len(slots) + 1)):
                chunk_pieces.append(da.from_delayed(task[output], (items,) + slot.shape[1:],
                                                    slot.dtype))
        for slot, chunk_pieces in zip(slots, pieces):
            slot.array = da.concatenate(chunk_pieces)
        if not count:
            return ()
        totals = da.reduction(da.stack(partials), _quiet_sum, _quiet_sum, axis=0,
                              dtype=np.float64, combine=_quiet_sum)
        return tuple(totals.map_blocks(_quiet_entry, j, drop_axis=0, dtype=np.float64,
                                       meta=np.empty((), np.float64))
                     for j in range(count))


class _QuietScalar(np.ndarray):
    """A 0-d float64 array whose arithmetic (every ufunc: the glue's operators and NumPy
    functions) runs without NumPy's floating-point warnings, its results quiet in turn.

    The scalar glue between a kernel's loops (``run``'s ``total / count``) is lazy here: dask
    computes it after ``run`` returned, outside its ``numpy.errstate``, in its own threads,
    so a ``count_as`` total of 0 printed a divide-by-zero RuntimeWarning (before the
    LossDomainError of :func:`_after_count_check`), and ``sum(y*p)/sum(y)`` over zeros one
    with its NaN, where one call over all the data, under ``run``'s errstate, prints
    nothing. The loops' totals are such scalars, so the glue
    computed from them is quiet; results are plain float64 again (:func:`_plain`)."""

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any,
                        **kwargs: Any) -> Any:
        plain = [np.asarray(x) if isinstance(x, _QuietScalar) else x for x in inputs]
        if "out" in kwargs:  # base-class views of the same memory: no second dispatch here
            kwargs["out"] = tuple(np.asarray(x) if isinstance(x, _QuietScalar) else x
                                  for x in kwargs["out"])
        with np.errstate(all="ignore"):
            result = getattr(ufunc, method)(*plain, **kwargs)
        if isinstance(result, (np.ndarray, np.generic)) and np.ndim(result) == 0:
            return np.asarray(result).view(_QuietScalar)
        return result


def _quiet_entry(totals: np.ndarray, index: int) -> _QuietScalar:
    """Entry ``index`` of a loop's totals, as a :class:`_QuietScalar`."""
    return np.asarray(totals[index], dtype=np.float64).view(_QuietScalar)


def _plain(value: Any) -> Any:
    """A result of the glue as NumPy's own type (a float64 scalar for a 0-d array)."""
    return np.asarray(value)[()] if isinstance(value, _QuietScalar) else value


def _quiet_sum(values: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """``numpy.sum`` without NumPy's floating-point warnings: the tree sum of the chunks'
    partial sums, which dask computes after the kernel's ``run`` has returned (outside its
    ``numpy.errstate``) and in its own threads. Partial sums of inf and -inf make NaN
    silently, as one loop over all the samples does."""
    with np.errstate(all="ignore"):
        return np.sum(values, axis=axis, keepdims=keepdims)


def compile(loss: str | Loss | CompiledLoss, reduction: str | None = None,  # noqa: A001
            params: Mapping[str, float] | None = None, target: str | None = None) -> DaskLoss:
    """A :class:`DaskLoss`: :func:`lossdsl.compile` for dask arrays.

    ``reduction``: ``"mean"`` by default, or that of a :class:`~lossdsl.CompiledLoss` given.

    ``target`` is the kernel target inside each task: ``"cpu"`` by default, because dask
    already runs chunks in parallel.
    """
    return DaskLoss(loss, reduction, params, target)
