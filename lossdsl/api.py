"""The Python API: ``compile``, ``load``, :class:`Loss`, :class:`Library`, :class:`CompiledLoss`.

A :class:`CompiledLoss` binds inputs at call time (:mod:`lossdsl.binding`). The ranks of the
inputs (scalar, vector, matrix), whether sample weights are given, the dtype and the outputs
asked for (value, gradients, Hessians) select a kernel; kernels are built on first use by the
compiler driver (:mod:`lossdsl.compiler`) and kept for later calls.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import binding, catalog, compiler
from .backend.cpu import runtime as cpu_runtime
from .binding import (
    OTHER_SIGNATURE,
    ArrayKind,
    Bound,
    BoundCall,
    CallPlan,
    InputLayout,
    axis_lengths,
    bind_inputs,
    call_signature,
    check_domains,
    check_labels,
    check_out,
    group_samples,
    kernel_arguments,
    output_allocator,
    param_value,
    plan_call,
    plan_kernel,
    regrouped_results,
    result_order,
    result_shape,
)
from .compiler import Kernel, KernelRequest, Specialization
from .domains import Domain, Requirement, holds
from .errors import (
    LossAttributeError,
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    Span,
    did_you_mean,
    not_a_param_hint,
)
from .frontend.resolve import LossDefinition, Scope, load_scope, resolve_text
from .ir.node import Node, toposort, walk
from .ops.primitives import CLASS_VECTOR, ROW
from .ops.scans import SCANS
from .passes import shapes

TARGETS = compiler.TARGETS
REDUCTIONS = shapes.REDUCTIONS

#: The keyword the derivative methods take caller-owned output arrays under.
OUT_KEYWORD = "out"
# Plans of call signatures kept per loss: a few dtypes and ranks in a program; a loop that
# makes a new signature on every call would otherwise grow the cache without end.
_MAX_PLANS = 32


class Loss:
    """A loss definition, not yet compiled: ``lib.fraud``, or a loss written as a string."""

    def __init__(self, definition: LossDefinition, scope: Scope):
        self.definition = definition
        self.scope = scope

    @property
    def name(self) -> str | None:
        """The loss's name (None for a bare expression)."""
        return self.definition.name

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the inputs, in order of first appearance in the source."""
        return self.definition.inputs

    @property
    def params(self) -> dict[str, float]:
        """The ``param`` values this loss uses, with their defaults."""
        return dict(self.definition.params)

    @property
    def doc(self) -> str:
        """The comment written above the loss."""
        return self.definition.doc

    @property
    def group_inputs(self) -> tuple[str, ...]:
        """Inputs holding each sample's group id (``groupsum(e, g)`` and its kin: a query, a
        customer), in the order the loss first uses them."""
        return self._ids_of(("group", "pairs"))

    @property
    def pair_inputs(self) -> tuple[str, ...]:
        """The group ids among :attr:`group_inputs` whose samples are paired (``pairsum(e,
        g)``: each sample sums over the others of its group)."""
        return self._ids_of(("pairs",))

    def _ids_of(self, layouts: tuple[str, ...]) -> tuple[str, ...]:
        """The inputs of group ids that the ``layouts`` macros (``group``, ``pairs``) read,
        in the order the loss first uses them."""
        found = [n.args[1].value for n in toposort([self.definition.graph])
                 if n.op in layouts]
        return tuple(dict.fromkeys(found))

    @property
    def cumulative_sums(self) -> tuple[str, ...]:
        """The cumulative sums in the order of a key (``sum_from``, ``logsumexp_from``, ...:
        a risk set) and the totals over groups of (N, K) rows or over all the samples
        (``groupsum``, ``colsum``) the loss uses, by the names a loss text gives them: each
        sample's value then depends on every other's."""
        found = [shapes.spelled(n) for n in toposort([self.definition.graph]) if n.op in SCANS]
        return tuple(dict.fromkeys(found))

    @property
    def scan_key_inputs(self) -> tuple[tuple[str, str], ...]:
        """(input, "keys" or "strata") for each input the keys or strata of a cumulative sum
        read (``abs(y)`` reads ``y``): their order and ties make the risk sets, so binding
        checks that the kernel's dtype holds their values exactly
        (:func:`lossdsl.binding.check_scan_keys`). "keys" where an input gives keys at all."""
        roles: dict[str, str] = {}
        for n in toposort([self.definition.graph]):
            if n.op in SCANS:
                for role, argument in (("keys", n.args[1]), ("strata", n.args[2])):
                    for m in toposort([argument]):
                        if m.op == "input" and roles.get(m.value) != "keys":
                            roles[m.value] = role
        return tuple(roles.items())

    def compile(self, target: str = "cpu", reduction: str = "mean",
                params: Mapping[str, float] | None = None,
                ignore_index: int | None = None) -> CompiledLoss:
        """Compile this loss (see :func:`lossdsl.compile`)."""
        return CompiledLoss(self, target, reduction, params, ignore_index)

    def __repr__(self) -> str:
        return f"<Loss {self.name or 'expression'}({', '.join(self.inputs)})>"

    def _repr_latex_(self) -> str:
        """The formula, derivative, inputs and params as LaTeX, for notebooks."""
        from .notebook import latex

        return latex(self)

    def _repr_html_(self) -> str:
        """The formula, inputs, params and derivative as an HTML table, for notebooks."""
        from .notebook import html_text

        return html_text(self)


class Library:
    """A loaded ``.loss`` file: its named losses as attributes (``lib.fraud``)."""

    def __init__(self, scope: Scope, path: str | None):
        self.scope = scope
        self.path = path
        self.losses: dict[str, Loss] = {
            name: Loss(definition, scope) for name, definition in scope.losses.items()
        }

    def __getattr__(self, name: str) -> Loss:
        losses = self.__dict__.get("losses", {})
        if name in losses:
            return losses[name]
        if name.startswith("__"):  # copy, pickle and friends probing for dunders
            raise AttributeError(name)
        raise LossAttributeError(f"no loss named {name!r} in {self.path or 'this library'}",
                                 None, did_you_mean(name, losses))

    def __getitem__(self, name: str) -> Loss:
        return self.losses[name]

    def __iter__(self):
        return iter(self.losses)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.losses))

    def __repr__(self) -> str:
        return f"<Library {self.path or '<string>'}: {', '.join(self.losses)}>"


def load(path: str | Path) -> Library:
    """Load a ``.loss`` file; its named losses become attributes of the returned library."""
    if not isinstance(path, (str, os.PathLike)):
        raise LossError(f"lossdsl.load needs the path of a .loss file (a str or a Path), got "
                        f"{type(path).__name__}; for loss text use lossdsl.compile")
    return Library(load_scope(str(path)), str(path))


def loss_from_text(text: str) -> Loss:
    """The loss a string stands for: an expression, a whole file's text with one named loss,
    or the bare name of a library loss (``"huber"`` means ``huber(y, p)``, on inputs named
    like its parameters). A string naming a ``.loss`` file is an error that points to
    :func:`load`: file names and loss text must not be confused."""
    stripped = text.strip()
    if stripped.isidentifier():
        entry = catalog.entry(stripped)
        if entry is not None:
            text = entry.call_expression()
    elif stripped.endswith(".loss") and not any(c.isspace() for c in stripped):
        exists = "" if Path(stripped).is_file() else " (no such file here)"
        raise LossError(f"{stripped!r} is a file name{exists}, not loss text: load the file "
                        f"with lossdsl.load({stripped!r}) and compile one of its losses, "
                        "lib.NAME.compile()", Span(None, 1, 1, source=text))
    scope = resolve_text(text)
    if scope.expression is not None:
        return Loss(scope.expression, scope)
    if len(scope.losses) == 1:
        (definition,) = scope.losses.values()
        return Loss(definition, scope)
    names = ", ".join(scope.losses) or "none"
    raise LossError(f"the text defines no single loss to compile (named losses: {names}); "
                    "write an expression, or load it with lossdsl.load and pick one",
                    Span(None, 1, 1, source=text))


def compile(loss: str | Loss, target: str = "cpu", reduction: str = "mean",  # noqa: A001
            params: Mapping[str, float] | None = None,
            ignore_index: int | None = None) -> CompiledLoss:
    """Compile a loss expression, a whole loss file's text, or a :class:`Loss`.

    ``target``: "cpu" (serial), "parallel" (multi-threaded) or "cuda". ``reduction``:
    "mean" (default; with ``sample_weight`` it is ``sum(w*l)/N``, as PyTorch's ``weight=``
    and Keras' default; "sum_over_batch_size" is Keras' name for it), "weighted_mean"
    (``sum(w*l)/sum(w)``, as scikit-learn), "batchmean" (``sum(w*l)/N`` with N the number of
    samples, also for a loss with a value per class: PyTorch's KLDivLoss), "sum" or "none"
    (per-sample values). ``params``: overrides of ``param`` values (also accepted per call as
    keyword arguments). ``ignore_index``: an integer label value (PyTorch's
    ``ignore_index=-100``, Keras' ``ignore_class``) whose samples count for nothing: their
    value, gradient and Hessian are 0 and they leave the mean's denominator.
    """
    if isinstance(loss, str):
        loss = loss_from_text(loss)
    elif not isinstance(loss, Loss):
        raise TypeError(f"lossdsl.compile takes loss text or a Loss, not {type(loss).__name__}")
    return CompiledLoss(loss, target, reduction, params, ignore_index)


class CompiledLoss:
    """A compiled loss: call it for the value; ``grad``, ``hessian`` and friends for derivatives.

    Every method takes the inputs as keyword arguments (NumPy arrays or scalars), optional
    ``sample_weight=`` and overrides of params.
    """

    def __init__(self, loss: Loss, target: str = "cpu", reduction: str = "mean",
                 params: Mapping[str, float] | None = None, ignore_index: int | None = None):
        if target not in TARGETS:
            raise LossError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        if reduction not in REDUCTIONS:
            raise LossError(
                f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}")
        for keyword, use in ((shapes.WEIGHT_KEYWORD, "the sample weights"),
                             (OUT_KEYWORD, "output arrays")):
            if keyword in loss.inputs:
                raise LossNameError(
                    f"an input cannot be called '{keyword}': every call takes {use} under "
                    "that name; rename the input", loss.definition.input_spans.get(keyword))
        self.loss = loss
        self.target = target
        self.reduction = reduction
        self.params = dict(loss.params)
        if params is not None and not isinstance(params, Mapping):
            raise LossError(f"params must be a mapping of param names to numbers "
                            f"({{'delta': 2.0}}), got {type(params).__name__}")
        for name, value in (params or {}).items():
            if not isinstance(name, str):
                raise LossNameError(f"params are named by strings, got {name!r}")
            if name not in self.params:
                raise LossNameError(f"the loss has no param '{name}'", None,
                                    did_you_mean(name, self.params) or not_a_param_hint(name))
            self.params[name] = param_value(name, value)
        self._labels: frozenset[str] | None = None
        self._tables: frozenset[str] | None = None
        self._vectors: frozenset[str] | None = None
        self.ignore_index = self._ignore_index(ignore_index)
        self._reset_transient()

    def _reset_transient(self) -> None:
        """The state a copy in another process builds afresh: kernels and specialisations
        by what they depend on, and what binding needs to know of the inputs."""
        self._kernels: dict[tuple, tuple[Kernel, Specialization]] = {}
        self._specialized: dict[tuple, Specialization] = {}
        self._plans: dict[tuple, CallPlan | None] = {}
        # the plan the last call of each set of outputs ran, by (want_value, grads,
        # hessians, output_dtype): a call that repeats its signature (CallPlan.matches)
        # skips building and hashing the signature's key
        self._recent: dict[tuple, CallPlan] = {}
        self._checked_wrt: dict[str | tuple[str, ...], tuple[str, ...]] = {}
        self._pair_names: dict[str, tuple[str, str]] = {}  # grad_and_hessian's out= names
        self._last_kernel: Kernel | None = None
        self._lock = threading.Lock()
        self._layout = InputLayout(self.inputs, self.table_inputs(), self.class_vector_inputs(),
                                   self.loss.definition.input_spans, self.target,
                                   self.reduction, self.ignore_index,
                                   # (an input the simplifier removed, as in
                                   # 0*bce(y, p) + mse(a, b), has nothing to check)
                                   tuple(d for d in self.loss.definition.domains
                                         if d.name in self.inputs or d.name in self.params),
                                   self.loss.definition.requirements,
                                   self.loss.scan_key_inputs,
                                   {declared.argument.value: declared
                                    for declared in self.loss.definition.rows
                                    if declared.argument.op == "input"})

    def __getstate__(self) -> dict[str, Any]:
        # Kernels live in modules imported from the cache directory; a copy in another process
        # (Dask, multiprocessing) rebuilds them there, from its own cache, on first use.
        state = dict(self.__dict__)
        for transient in ("_kernels", "_specialized", "_plans", "_recent", "_checked_wrt",
                          "_pair_names", "_last_kernel", "_lock", "_layout"):
            state.pop(transient)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_transient()

    # ------------------------------------------------------------------ public API
    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the array inputs, e.g. ``("y", "p", "w")``."""
        return self.loss.inputs

    @property
    def name(self) -> str | None:
        """The loss's name (None for an expression)."""
        return self.loss.name

    def __call__(self, /, sample_weight: Any = None, *positional: Any,
                 **inputs: Any) -> float | np.ndarray:
        """The loss value: a float, or an array for ``reduction="none"``. Inputs are given
        by name (``L(y=..., p=...)``); a positional argument is the sample weight."""
        if positional:
            raise self._positional_error("L(", len(positional) + 1)
        if sample_weight is not None and not inputs and self.inputs:
            # L(y): the array was taken as the sample weight, and "missing input 'y'" would
            # not say so
            named = ", ".join(f"{name}=..." for name in self.inputs)
            raise LossError(f"L({named}) takes the loss's inputs by name; it was given one "
                            "positional argument, which it takes as the sample weight, and "
                            "no inputs")
        (value,) = self.compute(True, (), (), inputs, sample_weight)
        return value

    def grad(self, wrt: str | Iterable[str], /, sample_weight: Any = None, *positional: Any,
             out: Any = None, **inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Gradient with respect to ``wrt`` (an array shaped like it), or a dict for a tuple.

        ``out``: an array to write the gradient into (a tuple of arrays or None for a tuple
        ``wrt``), as NumPy's ``out=``: C-contiguous, of the input's shape and the result's
        dtype, sharing no memory with any input; it is what is returned."""
        if positional:
            raise self._positional_error("L.grad(wrt, ", len(positional) + 1)
        names = self._wrt(wrt)
        grads = self.compute(False, names, (), inputs, sample_weight,
                             out=None if out is None else self._out(out, wrt, names, ("grad",)))
        return grads[0] if isinstance(wrt, str) else dict(zip(names, grads))

    def value_and_grad(self, wrt: str | Iterable[str], /, sample_weight: Any = None,
                       *positional: Any, out: Any = None, **inputs: Any) -> tuple[Any, Any]:
        """``(value, gradient)`` from one fused pass (gradient a dict when ``wrt`` is a tuple);
        ``out`` as for :meth:`grad`."""
        if positional:
            raise self._positional_error("L.value_and_grad(wrt, ", len(positional) + 1)
        names = self._wrt(wrt)
        value, *grads = self.compute(True, names, (), inputs, sample_weight,
                                     out=None if out is None
                                     else self._out(out, wrt, names, ("grad",)))
        return value, (grads[0] if isinstance(wrt, str) else dict(zip(names, grads)))

    def hessian(self, wrt: str | Iterable[str], /, sample_weight: Any = None,
                *positional: Any, out: Any = None,
                **inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """The diagonal of the Hessian with respect to ``wrt`` (shaped like it); ``out`` as
        for :meth:`grad`."""
        if positional:
            raise self._positional_error("L.hessian(wrt, ", len(positional) + 1)
        names = self._wrt(wrt)
        hessians = self.compute(False, (), names, inputs, sample_weight,
                                out=None if out is None
                                else self._out(out, wrt, names, ("hess",)))
        return hessians[0] if isinstance(wrt, str) else dict(zip(names, hessians))

    def grad_and_hessian(self, wrt: str, /, sample_weight: Any = None, *positional: Any,
                         out: tuple[Any, Any] | None = None,
                         **inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(gradient, Hessian diagonal)`` in one pass: what gradient boosting asks for.

        ``out``: ``(gradient, hessian)`` arrays to write them into (either may be None), each
        as for :meth:`grad`; a boosting loop that passes the same two arrays every round
        allocates nothing and faults no pages in."""
        if positional:
            raise self._positional_error("L.grad_and_hessian(wrt, ", len(positional) + 1)
        # a name checked before (every round of a boosting loop) skips _one_wrt's call
        names = self._checked_wrt.get(wrt) if type(wrt) is str else None
        if names is None:
            names = (self._one_wrt(wrt, "grad_and_hessian"),)
        if out is None:
            given = None
        elif type(out) is tuple and len(out) == 2 and type(wrt) is str \
                and out[0] is not None and out[1] is not None:
            # a boosting loop's pair, passed every round: its result names made once
            result_names = self._pair_names.get(wrt)
            if result_names is None:
                result_names = self._pair_names[wrt] = ("grad:" + wrt, "hess:" + wrt)
            given = {result_names[0]: out[0], result_names[1]: out[1]}
        else:
            given = self._out(out, wrt, names, ("grad", "hess"))
        gradient, hessian = self.compute(False, names, names, inputs, sample_weight, out=given)
        return gradient, hessian

    def derivative(self, wrt: str, order: int = 1, *,
                   ranks: Mapping[str, int] | None = None) -> Node:
        """The simplified symbolic gradient (``order=1``) or Hessian diagonal (``order=2``);
        ``str()`` of the result is readable loss-language source. ``ranks``: the inputs' ranks
        to type the loss for (by default :meth:`default_ranks`)."""
        name = self._one_wrt(wrt, "derivative")
        if order not in (1, 2):
            raise LossError("derivative order must be 1 (gradient) or 2 (Hessian diagonal)")
        with self._at_definition():
            ranks = self.default_ranks() if ranks is None else dict(ranks)
            return compiler.derivatives(self.specialization(ranks), name, order)[-1]

    @property
    def expression(self) -> Node:
        """The loss expression, as the compiler sees it after inlining and stable rewrites."""
        return compiler.stable_expression(self.loss.definition.graph)

    @property
    def source(self) -> str:
        """The generated kernel source (of the last kernel used, else of value and gradients)."""
        if self._last_kernel is not None:
            return self._last_kernel.source
        constants = self.constant_inputs()
        differentiable = tuple(n for n in self.inputs if n not in constants)
        return self.kernel(self.default_ranks(), False, np.dtype(np.float64), True,
                           differentiable, ()).source

    def __repr__(self) -> str:
        return (f"<CompiledLoss {self.name or 'expression'}({', '.join(self.inputs)}) "
                f"target={self.target} reduction={self.reduction}>")

    def _repr_latex_(self) -> str:
        """The formula, derivative, inputs, params, target and reduction as LaTeX."""
        from .notebook import latex

        return latex(self)

    def _repr_html_(self) -> str:
        """The formula, inputs, params, derivative, target and reduction as HTML."""
        from .notebook import html_text

        return html_text(self)

    # ------------------------------------------------------------------ what the loss reads
    def label_inputs(self) -> frozenset[str]:
        """Inputs used as integer labels (by ``pick``, ``onehot`` or ``rowof``)."""
        if self._labels is None:
            graph = self.loss.definition.graph
            self._labels = frozenset(
                [n.args[0].value for n in walk(graph)
                 if n.op == "class_index" and n.args[0].op == "input"]
                + [n.args[1].value for n in walk(graph)
                   if n.op == "table_row" and n.args[1].op == "input"])
        return self._labels

    def input_domains(self) -> dict[str, tuple[Domain, ...]]:
        """The declared domains of the inputs (``def hinge(y in {-1, 1}, z)``): each input
        bound to a def parameter that declares one, with every domain it must be in (calls
        refuse values outside with a :class:`~lossdsl.LossDomainError`)."""
        found: dict[str, tuple[Domain, ...]] = {}
        for declared in self.loss.definition.domains:
            if declared.name in self.inputs:
                found[declared.name] = (*found.get(declared.name, ()), declared.domain)
        return found

    def requirements(self) -> tuple[Requirement, ...]:
        """The ``requires`` conditions of the defs the loss calls, as this loss binds them
        (``aft_normal(y, z, hi)``: ``hi >= y``); calls where one is false raise a
        :class:`~lossdsl.LossDomainError`."""
        return self.loss.definition.requirements

    def rows_meeting_requirements(self, inputs: Mapping[str, Any]) -> np.ndarray | None:
        """For inputs of one value per row (vectors, numbers), where every requirement
        holds (NaN fails): a boolean vector, or None where the loss has none."""
        if not self.requirements():
            return None
        arrays = {name: np.asarray(value, dtype=np.float64) for name, value in inputs.items()
                  if name in self.inputs}
        params = {**self.params, **{k: float(v) for k, v in inputs.items() if k in self.params}}
        rows = max((a.shape[0] for a in arrays.values() if a.ndim), default=1)
        spec = self.specialization({name: a.ndim for name, a in arrays.items()}, False)
        met = np.ones(rows, dtype=bool)
        for counted in spec.requirements:
            if counted.tables:  # a per-class vector or table: whole, not per row
                continue
            met &= np.broadcast_to(holds(counted.condition, arrays, params), rows)
        return met

    def table_inputs(self) -> frozenset[str]:
        """Inputs used as lookup tables by ``rowof(C, y)``: (R, K) matrices, such as a cost
        matrix, indexed by labels rather than one row per sample. Per-class vectors
        (:meth:`class_vector_inputs`) are among them: one-row tables, bound whole."""
        if self._tables is None:
            self._tables = frozenset(n.args[0].value for n in walk(self.loss.definition.graph)
                                     if n.op == "table_row")
        return self._tables

    def class_vector_inputs(self) -> frozenset[str]:
        """Inputs used as per-class vectors by ``classvec(w)``: a vector (K,) with one entry
        per class (class weights, per-class ``pos_weight``), or one number for every class."""
        if self._vectors is None:
            self._vectors = frozenset(n.args[0].value for n in walk(self.loss.definition.graph)
                                      if n.op == "table_row" and n.value == CLASS_VECTOR)
        return self._vectors

    def constant_inputs(self) -> frozenset[str]:
        """Inputs that are never differentiated: integer labels, lookup tables (and per-class
        vectors) and group ids."""
        return self.label_inputs() | self.table_inputs() | frozenset(self.group_inputs())

    def group_inputs(self) -> tuple[str, ...]:
        """Inputs holding each sample's group id (``groupsum(e, g)`` and its kin: a query, a
        customer), in the order the loss first uses them."""
        return self.loss.group_inputs

    def default_ranks(self, declared: bool = True) -> dict[str, int]:
        """The rank each input usually has: 2 (an (N, K) matrix) for inputs reduced over
        classes or declared rows (``z[N, K]``; with ``declared``), 1 (a vector) otherwise,
        labels included. Used for symbolic work. (The boosting objectives ask without
        ``declared``: a loss elementwise in its score columns, as the non-crossing levels,
        trains one column per level.)"""
        # labels and group ids stay vectors (a group sum of (N, K) rows within a row sum)
        keep = self.label_inputs() | frozenset(self.group_inputs())
        ranks = {name: 2 if name in self.table_inputs() else 1 for name in self.inputs}
        if declared:
            for rows in self.loss.definition.rows:
                if rows.argument.op == "input" and rows.argument.value in ranks:
                    ranks[rows.argument.value] = 2
        for n in walk(self.loss.definition.graph):
            if (n.op in ROW or n.op == "rowmean") and n.args[0].op not in ("group", "pairs"):
                for m in toposort([n.args[0]]):
                    if m.op == "input" and m.value not in keep:
                        ranks[m.value] = 2
        return ranks

    @property
    def layout(self) -> InputLayout:
        """What binding needs to know of this loss's inputs (:mod:`lossdsl.binding`)."""
        return self._layout

    def label_error(self, name: str, width: int, index: int, label: Any) -> LossDomainError:
        """The error for a label ``name`` (an input, a param or a constant) holding
        ``label`` at ``index``."""
        return binding.label_error(self._layout, name, width, index, label)

    # ------------------------------------------------------------------ compiling
    def specialization(self, ranks: Mapping[str, int], weighted: bool = False
                       ) -> Specialization:
        """The loss typed for inputs of ``ranks`` (weighted or not) and its objective for
        this reduction (:func:`lossdsl.compiler.specialize`), built once."""
        key = (tuple(sorted(ranks.items())), weighted)
        spec = self._specialized.get(key)
        if spec is None:
            with self._at_definition():
                spec = compiler.specialize(self.loss.definition, ranks, weighted,
                                           self.reduction, self.ignore_index)
            self._specialized[key] = spec
        return spec

    def kernel_target(self, lengths: Mapping[str, int] | None = None,
                      spec: Specialization | None = None) -> str:
        """The target kernels are built for: ``self.target``, except that a process forked
        after parallel kernels ran on OpenMP runs "parallel" losses serially (OpenMP's
        threads do not survive a fork: a parallel launch there would hang), and that a call
        of ``lengths`` (typed as ``spec``) with fewer elements over the threaded axes than
        :data:`lossdsl.binding.PARALLEL_MIN_ELEMENTS` runs serially: threads cost more than
        such a call's work, and a small call never starts the thread pool."""
        if self.target == "parallel" and not cpu_runtime.parallel_usable():
            return "cpu"
        if self.target == "parallel" and lengths is not None and spec is not None \
                and binding.work_size(lengths, compiler.parallel_axes(spec.objective)) \
                < binding.PARALLEL_MIN_ELEMENTS:
            return "cpu"
        return self.target

    def kernel(self, ranks: Mapping[str, int], weighted: bool, dtype: np.dtype,
               want_value: bool, grads: tuple[str, ...], hessians: tuple[str, ...]) -> Kernel:
        """The kernel for inputs of ``ranks`` and ``dtype`` that computes the value (when
        ``want_value``), the gradients of ``grads`` and the Hessians of ``hessians``; built
        on first use (:func:`lossdsl.compiler.build_kernel`) and kept."""
        return self._kernel_and_specialization(ranks, weighted, dtype, want_value,
                                               tuple(grads), tuple(hessians))[0]

    def kernels(self) -> list[Kernel]:
        """The kernels built so far, in the order they were built."""
        return [kernel for kernel, _ in self._kernels.values()]

    def _kernel_and_specialization(self, ranks, weighted, dtype, want_value, grads,
                                   hessians, target: str | None = None
                                   ) -> tuple[Kernel, Specialization]:
        target = self.kernel_target() if target is None else target
        key = (tuple(sorted(ranks.items())), weighted, dtype.str, want_value, grads, hessians,
               target)
        found = self._kernels.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._kernels:
                try:
                    spec = self.specialization(ranks, weighted)
                    request = KernelRequest(dtype, target, want_value, grads, hessians)
                    with self._at_definition():
                        self._kernels[key] = (compiler.build_kernel(spec, request), spec)
                except LossError:
                    raise
                except Exception as error:  # never leak a raw traceback from the compiler
                    raise LossError(f"internal error while compiling the kernel: "
                                    f"{type(error).__name__}: {error}") from error
            return self._kernels[key]

    # ------------------------------------------------------------------ binding and running
    def bind(self, inputs: Mapping[str, Any], sample_weight: Any = None,
             kind: type[ArrayKind] = ArrayKind) -> Bound:
        """The inputs of one call bound for a kernel (:func:`lossdsl.binding.bind_inputs`)."""
        return bind_inputs(self._layout, self.params, inputs, sample_weight, kind)

    def prepare(self, bound: Bound, want_value: bool, grads: tuple[str, ...],
                hessians: tuple[str, ...]) -> tuple[Kernel, dict[str, int]]:
        """The kernel for ``bound``'s ranks and dtype, and the length of every axis (labels
        not yet checked: see :func:`lossdsl.binding.label_widths`)."""
        kernel, spec = self._kernel_and_specialization(
            bound.ranks, bound.weight is not None, bound.dtype, want_value, tuple(grads),
            tuple(hessians))
        self._last_kernel = kernel
        return kernel, axis_lengths(self._layout, bound, spec)

    def bind_call(self, want_value: bool, grads: tuple[str, ...], hessians: tuple[str, ...],
                  inputs: Mapping[str, Any], sample_weight: Any = None,
                  output_dtype: np.dtype | None = None,
                  out: Mapping[str, Any] | None = None) -> BoundCall:
        """The kernel for these inputs bound to them and to new output arrays (of
        ``output_dtype`` when given; ``out[result name]`` where given, checked by
        :func:`lossdsl.binding.check_out`), every label checked: ``.run()`` computes.

        A ``target="parallel"`` loss binds its serial kernel for a call with fewer than
        :data:`lossdsl.binding.PARALLEL_MIN_ELEMENTS` elements."""
        layout = self._layout
        bound = bind_inputs(layout, self.params, inputs, sample_weight)
        spec = self.specialization(bound.ranks, bound.weight is not None)
        lengths = axis_lengths(layout, bound, spec)
        groupings = (group_samples(layout, bound, spec, lengths)
                     if spec.groups or spec.pairs else [])
        target = self.kernel_target(lengths, spec)
        kernel, spec = self._kernel_and_specialization(
            bound.ranks, bound.weight is not None, bound.dtype, want_value, tuple(grads),
            tuple(hessians), target)
        self._last_kernel = kernel
        check_labels(layout, bound, kernel, spec, lengths)
        check_domains(layout, bound, kernel)
        given, rounded = {}, {}
        if out:
            dtype = np.dtype(output_dtype or bound.result_dtype or bound.dtype)
            shapes_of = {o.name: result_shape(o.axes, lengths) for o in kernel.element_outputs}
            readers = [*bound.arrays.values(), *inputs.values(), bound.weight]
            for name, array in out.items():
                if array is None:
                    continue
                if name not in shapes_of or bound.ranks[name.split(":", 1)[1]] == 0:
                    raise LossShapeError(f"out= was given for '{name.split(':', 1)[1]}', a "
                                         "number: its derivative is returned as a float")
                (rounded if bound.result_dtype is not None else given)[name] = check_out(
                    name, array, shapes_of[name], dtype, readers)
            if binding.overlapping([*given.values(), *rounded.values()]):
                raise LossShapeError("out= arrays share memory with each other: pass a "
                                     "separate array for each result")
        arguments, results = kernel_arguments(kernel, bound, lengths,
                                              output_allocator(bound, output_dtype), given)
        return BoundCall(kernel, bound, lengths, arguments, results,
                         result_order(want_value, grads, hessians), rounded or None,
                         regrouped_results(kernel, groupings) or None, (layout, inputs))

    def compute(self, want_value: bool, grads: tuple[str, ...], hessians: tuple[str, ...],
                inputs: Mapping[str, Any], sample_weight: Any = None,
                output_dtype: np.dtype | None = None,
                out: Mapping[str, Any] | None = None) -> list:
        """The value (when ``want_value``), gradients and Hessian diagonals from one fused
        kernel call, in that order. Names in ``grads`` and ``hessians`` are not checked
        here (the public methods do); per-element results are in ``output_dtype`` when
        given (the kernel still computes in the inputs' dtype and rounds as it stores), and
        written into ``out[result name]`` ("grad:p", "hess:p") where given.

        A call of a signature seen before (:func:`lossdsl.binding.call_signature`) runs its
        :class:`~lossdsl.binding.CallPlan`: the same kernel and checks without the work of
        binding; the general path takes any call the plan cannot (and raises its errors)."""
        if not (want_value or grads or hessians):  # grad(()): nothing to compute
            return []
        outputs = (want_value, grads, hessians, output_dtype)
        target = self.target if self.target != "parallel" else self.kernel_target()
        plan = self._recent.get(outputs)
        key = None
        found = None if plan is None else plan.run(inputs, sample_weight, self.params, target,
                                                   out, matched=False)
        if plan is None or found is OTHER_SIGNATURE:
            key = call_signature(want_value, grads, hessians, inputs, sample_weight,
                                 output_dtype)
            plan = self._plans.get(key)
            found = None if plan is None else plan.run(inputs, sample_weight, self.params,
                                                       target, out)
            if found is not None:
                self._recent[outputs] = plan
        if found is not None:
            self._last_kernel = plan.last_kernel
            return found
        if key is None:
            key = call_signature(want_value, grads, hessians, inputs, sample_weight,
                                 output_dtype)
        call = self.bind_call(want_value, grads, hessians, inputs, sample_weight,
                              output_dtype, out)
        found = call.run()
        self._remember_plan(key, plan, call, inputs, sample_weight, output_dtype)
        return found

    def _remember_plan(self, key: tuple, plan: CallPlan | None, call: BoundCall,
                       inputs: Mapping[str, Any], sample_weight: Any,
                       output_dtype: np.dtype | None) -> None:
        """Keep the plan of ``call``'s signature (made once; its kernel added per target)."""
        if key in self._plans and plan is None:
            return  # a signature the fast path does not take
        target = self.kernel_target()
        if plan is None:
            spec = self.specialization(call.bound.ranks, call.bound.weight is not None)
            threaded = compiler.parallel_axes(spec.objective) if target == "parallel" else None
            plan = plan_call(self._layout, inputs, sample_weight, call.bound, spec, threaded,
                             output_dtype, call.order)
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
                self._recent.clear()
            self._plans[key] = plan
            if plan is None:
                return
        used = plan.target_for(call.lengths, target)
        if used not in plan.kernels and call.kernel.checked:
            plan.add_kernel(used, plan_kernel(call.kernel, plan.order, self._layout))

    # ------------------------------------------------------------------ internals
    def _ignore_index(self, value: Any) -> int | None:
        """``ignore_index`` checked: None, or an integer for a loss that reads labels."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)) \
                or not float(value).is_integer():
            raise LossError(f"ignore_index must be an integer label value (PyTorch's -100), "
                            f"got {value!r}", self.loss.definition.span)
        if not self.label_inputs():
            raise LossError("ignore_index needs a loss that reads integer labels (through "
                            "pick, onehot or rowof); this loss has none",
                            self.loss.definition.span)
        return int(value)

    @contextlib.contextmanager
    def _at_definition(self):
        """Errors of the symbolic pipeline (shapes that never fit, a derivative lossdsl does
        not have) concern the loss text but arise on graph nodes, which are shared between
        texts and carry no position: point them at the loss's definition."""
        try:
            yield
        except LossError as error:
            if error.span is not None:
                raise
            raise type(error)(error.message, self.loss.definition.span, error.hint) from None

    def _positional_error(self, call: str, count: int) -> LossError:
        """The error for ``count`` positional arguments where one (the sample weight) is
        taken: the inputs go by name, so that no array is taken for another input."""
        named = ", ".join(f"{name}=..." for name in self.inputs)
        return LossError(f"{call}{named}) takes the loss's inputs by name, not by position "
                         f"({count} positional arguments given); the one positional argument "
                         f"it takes (after wrt) is the sample weight")

    @staticmethod
    def _out(out: Any, wrt: str | Iterable[str], names: tuple[str, ...],
             kinds: tuple[str, ...]) -> dict[str, Any] | None:
        """``out=`` as arrays by result name ("grad:p"): one array for one output, else a
        tuple with one array (or None) per output, in the order the results are returned."""
        if out is None:
            return None
        if type(wrt) is str and len(kinds) == 1:  # one array for one result: grad(wrt, out=g)
            return {kinds[0] + ":" + wrt: out}
        if isinstance(wrt, str) and type(out) is tuple and len(out) == 2 == len(kinds):
            # grad_and_hessian's pair, as a boosting loop passes it every round
            pair = {}
            if out[0] is not None:
                pair["grad:" + wrt] = out[0]
            if out[1] is not None:
                pair["hess:" + wrt] = out[1]
            return pair
        wanted = [f"{kind}:{name}" for name in names for kind in kinds]
        if len(wanted) == 1 and isinstance(wrt, str):
            return {wanted[0]: out}
        if not isinstance(out, (tuple, list)) or len(out) != len(wanted):
            results = ", ".join(wanted)
            raise LossShapeError(f"out= must be a tuple of {len(wanted)} arrays (or None), "
                                 f"one per result ({results}); got {type(out).__name__}"
                                 + (f" of {len(out)}" if isinstance(out, (tuple, list))
                                    else ""))
        return {name: array for name, array in zip(wanted, out) if array is not None}

    def _one_wrt(self, wrt: str, method: str) -> str:
        """The one input name ``method`` differentiates by (refused: a tuple of several)."""
        names = self._wrt(wrt)
        if len(names) != 1:
            raise LossNameError(f"{method} takes one input name, got {len(names)} "
                                f"({', '.join(names) or 'none'}): call it once per input")
        return names[0]

    def _wrt(self, wrt: str | Iterable[str]) -> tuple[str, ...]:
        if isinstance(wrt, (str, tuple)):
            try:
                checked = self._checked_wrt.get(wrt)
            except TypeError:  # a tuple holding something unhashable: checked below
                checked = None
            if checked is not None:  # checked before: every call of a loop repeats it
                return checked
        try:
            names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        except TypeError:
            names = (wrt,)  # not a name nor names: refused below
        for name in names:
            if not isinstance(name, str):
                raise LossNameError(f"wrt names inputs of the loss ({', '.join(self.inputs)}): "
                                    f"a string or a tuple of strings, got {name!r}")
            if name in self.class_vector_inputs():
                raise LossError(f"'{name}' is a per-class vector (classvec): lossdsl does not "
                                "differentiate with respect to per-class vectors",
                                self.loss.definition.input_spans.get(name))
            if name in self.table_inputs():
                raise LossError(f"'{name}' is a lookup table (rowof): lossdsl does not "
                                "differentiate with respect to tables",
                                self.loss.definition.input_spans.get(name))
            if name not in self.inputs:
                raise LossNameError(f"'{name}' is not an input of this loss (inputs: "
                                    f"{', '.join(self.inputs)})", None,
                                    did_you_mean(name, self.inputs))
        twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
        if twice is not None:
            raise LossNameError(f"wrt names '{twice}' twice; name each input once")
        if isinstance(wrt, (str, tuple)):
            self._checked_wrt[wrt] = names  # (every name is a str input by now: hashable)
        return names
