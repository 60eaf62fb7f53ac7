"""The Python API: ``compile``, ``load``, :class:`Loss`, :class:`Library`, :class:`CompiledLoss`.

A :class:`CompiledLoss` binds inputs at call time. The ranks of the inputs (scalar, vector,
matrix), whether sample weights are given, the dtype and the outputs asked for (value,
gradients, Hessians) select a kernel; kernels are built on first use by the pipeline
``shapes → diff → stabilize → schedule → codegen → cache`` and kept for later calls.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np

from . import cache, catalog
from .backend.cpu import codegen as cpu
from .backend.cpu import runtime as cpu_runtime
from .errors import LossDomainError, LossError, LossNameError, LossShapeError, Span, did_you_mean
from .frontend.resolve import LossDefinition, Scope, load_scope, resolve_text
from .ir.node import Node, node, toposort, walk
from .ops.primitives import CLASS_VECTOR
from .passes import diff, shapes
from .passes.lower import lower
from .passes.schedule import Output, plan
from .passes.simplify import simplify
from .passes.stabilize import stabilize

TARGETS = ("cpu", "parallel", "cuda")
REDUCTIONS = shapes.REDUCTIONS


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
        hint = did_you_mean(name, losses)
        raise AttributeError(f"no loss named {name!r} in {self.path or 'this library'}"
                             + (f"; {hint}" if hint else ""))

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


@dataclass
class _Kernel:
    run: Any
    names: Any
    source: str
    element_outputs: list[Output]
    scalar_outputs: list[Output]
    labels: list[tuple[Node, str]]  # every label read, and the axis it indexes
    checked: bool = False  # has run once: Numba loaded (or compiled) its machine code


@dataclass
class _Bound:
    """Inputs prepared for a kernel: arrays, scalars, dtype and ranks."""

    arrays: dict[str, np.ndarray]
    scalars: dict[str, float]
    ranks: dict[str, int]
    dtype: np.dtype
    weight: np.ndarray | None
    params: dict[str, float]
    device: Any = None  # the first device-array input (target="cuda"): outputs are made like it
    # the dtype per-element results are returned in when it is not the kernel's: float16
    # inputs are computed in float32 and their results rounded back to float16
    result_dtype: np.dtype | None = None


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
        if shapes.WEIGHT_KEYWORD in loss.inputs:
            raise LossNameError(
                f"an input cannot be called '{shapes.WEIGHT_KEYWORD}': every call takes the "
                f"sample weights under that name; rename the input",
                loss.definition.input_spans.get(shapes.WEIGHT_KEYWORD))
        self.loss = loss
        self.target = target
        self.reduction = reduction
        self.params = dict(loss.params)
        for name, value in (params or {}).items():
            if name not in self.params:
                raise LossNameError(f"the loss has no param '{name}'", None,
                                    did_you_mean(name, self.params))
            self.params[name] = param_value(name, value)
        self._kernels: dict[tuple, _Kernel] = {}
        self._specialized: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._last_source: str | None = None
        self._labels: frozenset[str] | None = None
        self._tables: frozenset[str] | None = None
        self._vectors: frozenset[str] | None = None
        self.ignore_index = self._ignore_index(ignore_index)

    def __getstate__(self) -> dict[str, Any]:
        # Kernels live in modules imported from the cache directory; a copy in another process
        # (Dask, multiprocessing) rebuilds them there, from its own cache, on first use.
        state = dict(self.__dict__)
        for transient in ("_kernels", "_specialized", "_lock"):
            state.pop(transient)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._kernels, self._specialized, self._lock = {}, {}, threading.Lock()

    # ------------------------------------------------------------------ public API
    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the array inputs, e.g. ``("y", "p", "w")``."""
        return self.loss.inputs

    @property
    def name(self) -> str | None:
        """The loss's name (None for an expression)."""
        return self.loss.name

    def __call__(self, /, sample_weight: Any = None, **inputs: Any) -> float | np.ndarray:
        """The loss value: a float, or an array for ``reduction="none"``."""
        (value,) = self._compute(True, (), (), inputs, sample_weight)
        return value

    def grad(self, wrt: str | Iterable[str], /, sample_weight: Any = None,
             **inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Gradient with respect to ``wrt`` (an array shaped like it), or a dict for a tuple."""
        names = self._wrt(wrt)
        grads = self._compute(False, names, (), inputs, sample_weight)
        return grads[0] if isinstance(wrt, str) else dict(zip(names, grads))

    def value_and_grad(self, wrt: str | Iterable[str], /, sample_weight: Any = None,
                       **inputs: Any) -> tuple[Any, Any]:
        """``(value, gradient)`` from one fused pass (gradient a dict when ``wrt`` is a tuple)."""
        names = self._wrt(wrt)
        value, *grads = self._compute(True, names, (), inputs, sample_weight)
        return value, (grads[0] if isinstance(wrt, str) else dict(zip(names, grads)))

    def hessian(self, wrt: str | Iterable[str], /, sample_weight: Any = None,
                **inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """The diagonal of the Hessian with respect to ``wrt`` (shaped like it)."""
        names = self._wrt(wrt)
        hessians = self._compute(False, (), names, inputs, sample_weight)
        return hessians[0] if isinstance(wrt, str) else dict(zip(names, hessians))

    def grad_and_hessian(self, wrt: str, /, sample_weight: Any = None,
                         **inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(gradient, Hessian diagonal)`` in one pass: what gradient boosting asks for."""
        (name,) = self._wrt(wrt)
        gradient, hessian = self._compute(False, (name,), (name,), inputs, sample_weight)
        return gradient, hessian

    def derivative(self, wrt: str, order: int = 1) -> Node:
        """The simplified symbolic gradient (``order=1``) or Hessian diagonal (``order=2``);
        ``str()`` of the result is readable loss-language source."""
        (name,) = self._wrt(wrt)
        if order not in (1, 2):
            raise LossError("derivative order must be 1 (gradient) or 2 (Hessian diagonal)")
        with self._at_definition():
            objective, x = self._default_objective(name)
            gradient = diff.grad(objective.total, x)
            result = gradient if order == 1 else diff.hessian_diag(objective.total, x, gradient)
            (result,) = simplify(stabilize([result]))
        return result

    @property
    def expression(self) -> Node:
        """The loss expression, as the compiler sees it after inlining and stable rewrites."""
        return stabilize([self.loss.definition.graph])[0]

    @property
    def source(self) -> str:
        """The generated kernel source (of the last kernel used, else of value and gradients)."""
        if self._last_source is not None:
            return self._last_source
        ranks = self.default_ranks()
        constants = self.label_inputs() | self.table_inputs()
        differentiable = tuple(n for n in self.inputs if n not in constants)
        kernel = self._kernel(ranks, False, np.dtype(np.float64), True, differentiable, ())
        return kernel.source

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

    def _wrt(self, wrt: str | Iterable[str]) -> tuple[str, ...]:
        names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        for name in names:
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
        return names

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

    def default_ranks(self) -> dict[str, int]:
        """The rank each input usually has: 2 (an (N, K) matrix) for inputs reduced over
        classes, 1 (a vector) otherwise, labels included. Used for symbolic work."""
        labels = self.label_inputs()
        ranks = {name: 2 if name in self.table_inputs() else 1 for name in self.inputs}
        for n in walk(self.loss.definition.graph):
            if n.op in ("rowsum", "rowmax", "rowmean"):
                for m in toposort([n.args[0]]):
                    if m.op == "input" and m.value not in labels:
                        ranks[m.value] = 2
        return ranks

    def _default_objective(self, name: str):
        objective, typed = self._specialize(self.default_ranks(), False)
        return objective, typed[name]

    def _specialize(self, ranks: dict[str, int], weighted: bool):
        key = _signature(ranks, weighted)
        if key not in self._specialized:
            with self._at_definition():
                self._specialized[key] = self._typed_objective(ranks, weighted)
        objective, typed, _ = self._specialized[key]
        return objective, typed

    def _typed_objective(self, ranks: dict[str, int], weighted: bool):
        """(objective, typed inputs, specialisation) of the loss for inputs of ``ranks``."""
        definition = self.loss.definition
        specialized = shapes.specialize(definition.graph, ranks, definition.inputs,
                                        definition.input_spans)
        (graph,) = stabilize([specialized.graph])
        objective = shapes.objective(graph, self.reduction, weighted, self.ignore_index,
                                     specialized.labels)
        typed = {n.value: n for n in walk(objective.total) if n.op == "input"}
        for name in definition.inputs:  # inputs that do not affect the total
            typed.setdefault(name, node("input", (), name, specialized.input_axes.get(name, ())))
        return objective, typed, specialized

    def _kernel_target(self) -> str:
        """The target kernels are built for: ``self.target``, except that a process forked
        after parallel kernels ran on OpenMP runs "parallel" losses serially (OpenMP's
        threads do not survive a fork: a parallel launch there would hang)."""
        if self.target == "parallel" and not cpu_runtime.parallel_usable():
            return "cpu"
        return self.target

    def _kernel(self, ranks, weighted, dtype, want_value, grads, hessians) -> _Kernel:
        key = (*_signature(ranks, weighted), dtype.str, want_value, grads, hessians,
               self._kernel_target())
        kernel = self._kernels.get(key)
        if kernel is not None:
            return kernel
        with self._lock:
            if key not in self._kernels:
                try:
                    objective, typed = self._specialize(ranks, weighted)
                    labels = self._specialized[_signature(ranks, weighted)][2].labels
                    with self._at_definition():
                        self._kernels[key] = self._build_kernel(objective, typed, labels, dtype,
                                                                want_value, grads, hessians)
                except LossError:
                    raise
                except Exception as error:  # never leak a raw traceback from the compiler
                    raise LossError(f"internal error while compiling the kernel: "
                                    f"{type(error).__name__}: {error}") from error
            return self._kernels[key]

    def _build_kernel(self, objective, typed, labels, dtype, want_value, grads,
                      hessians) -> _Kernel:
        """Differentiate, simplify, lower, schedule, generate and import one kernel."""
        outputs: list[Output] = []
        if want_value:
            outputs.append(Output("value", objective.value, objective.value.axes))
        gradients = {}
        for name in grads:
            gradients[name] = diff.grad(objective.total, typed[name])
            outputs.append(Output(f"grad:{name}", gradients[name], typed[name].axes))
        for name in hessians:
            gradient = gradients.get(name) or diff.grad(objective.total, typed[name])
            hessian = diff.hessian_diag(objective.total, typed[name], gradient)
            outputs.append(Output(f"hess:{name}", hessian, typed[name].axes))
        nodes = lower(simplify(stabilize([o.node for o in outputs])))
        outputs = [Output(o.name, n, o.axes) for o, n in zip(outputs, nodes)]
        schedule = plan(outputs)
        target = self._kernel_target()
        if target == "cuda":
            from .backend.cuda import codegen as cuda

            generated = cuda.generate(schedule, dtype.name, _header(target, self.reduction))
        else:
            threaded = self._parallel_axes(objective) if target == "parallel" else frozenset()
            generated = cpu.generate(schedule, dtype.name, threaded,
                                     _header(target, self.reduction))
        module = cache.load_module(generated.source)
        return _Kernel(module.run, generated.names, generated.source,
                       schedule_outputs(schedule), list(schedule.scalar_outputs), labels)

    def _parallel_axes(self, objective: shapes.Objective) -> frozenset[str]:
        """Axes looped over by threads for target="parallel": the loss's samples, or every
        reduced axis for a loss that reduces over samples itself (Dice)."""
        if objective.sample_axis is not None:
            return frozenset({objective.sample_axis})
        return frozenset(n.args[0].axes[0] for n in walk(objective.total)
                         if n.op == "sum" and n.args[0].axes)

    def _bind(self, inputs: dict[str, Any], sample_weight: Any) -> _Bound:
        params = dict(self.params)
        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, float] = {}
        ranks: dict[str, int] = {}
        spans = self.loss.definition.input_spans
        for name, value in inputs.items():
            if name not in self.inputs:
                if name in params:
                    params[name] = param_value(name, value)
                    continue
                raise LossNameError(
                    f"'{name}' is not an input of this loss (inputs: {', '.join(self.inputs)})",
                    None, did_you_mean(name, list(self.inputs) + list(params)))
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise LossNameError(f"missing input '{missing[0]}' (this loss takes "
                                f"{', '.join(self.inputs)})", spans.get(missing[0]))
        float_dtypes, given_dtypes = [], []  # as the kernel reads them, and as given
        device = next((v for v in [*(inputs[n] for n in self.inputs), sample_weight]
                       if _is_device_array(v)), None)
        if device is not None:
            if self.target != "cuda":
                raise LossError(f"device arrays (__cuda_array_interface__) need target='cuda'; "
                                f"this loss was compiled for target={self.target!r}")
            from .backend.cuda import runtime as cuda_runtime
        for name in self.inputs:
            value = inputs[name]
            if device is not None and _is_device_array(value):
                # a zero-copy Numba view: NumPy dtype and shape, and what kernels take
                array = cuda_runtime.as_device_array(value)
                if array.ndim == 0:
                    array = array.copy_to_host()
            else:
                array = numeric_array(f"input '{name}'", value, spans.get(name))
            if array.dtype.kind == "f":
                float_dtypes.append(array.dtype)
                given_dtypes.append(value.dtype if isinstance(value, np.ndarray) else array.dtype)
            if array.ndim == 0:
                scalars[name] = float(array)
                ranks[name] = 0
                continue
            if name in self.class_vector_inputs():
                array = self._class_vector(name, array)
            arrays[name] = array
            ranks[name] = array.ndim
        dtype = kernel_dtype(float_dtypes)
        for name, array in arrays.items():
            # Other numeric dtypes are passed as they are: the kernels convert each element
            # they read (T(x)), which costs nothing where a copy would cost a pass over the
            # array on every call (float32 labels of a GBDT with float64 scores, say).
            if isinstance(array, np.ndarray) and array.dtype.kind == "b":
                arrays[name] = array.astype(dtype)
        weight = None
        if sample_weight is not None:
            on_device = device is not None and _is_device_array(sample_weight)
            weight = (cuda_runtime.as_device_array(sample_weight) if on_device
                      else numeric_array("sample_weight", sample_weight))
            if weight.ndim != 1:
                raise LossShapeError(f"sample_weight must be a vector (N,), got shape "
                                     f"{weight.shape}")
            if not on_device:
                weight = weight.astype(dtype, copy=False)
        return _Bound(arrays, scalars, ranks, np.dtype(dtype), weight, params, device,
                      result_dtype(given_dtypes))

    def _class_vector(self, name: str, array: Any) -> Any:
        """A per-class vector (K,) as the kernel reads it: a one-row table (1, K)."""
        if array.ndim != 1:
            raise LossShapeError(
                f"'{name}' is a per-class vector (classvec) and must be a vector (K,) with one "
                f"entry per class, or a number; got shape {tuple(array.shape)}",
                self.loss.definition.input_spans.get(name))
        try:
            return array.reshape(1, array.shape[0])
        except NotImplementedError:  # a strided device array: copy it into one row
            from numba import cuda

            return cuda.to_device(array.copy_to_host().reshape(1, array.shape[0]))

    def _compute(self, want_value, grads, hessians, inputs, sample_weight,
                 output_dtype: np.dtype | None = None) -> list:
        """Run the kernel; per-element results in ``output_dtype`` when given (the kernel
        still computes in the inputs' dtype and rounds as it stores)."""
        bound = self._bind(inputs, sample_weight)
        kernel, lengths = self._prepare(bound, want_value, grads, hessians)
        self._check_labels(bound, kernel, lengths)
        arguments, results = self._arguments(kernel, bound, lengths,
                                             self._output_array(bound, output_dtype))
        scalar_values = self._run(kernel, arguments)
        for output, value in zip(kernel.scalar_outputs, scalar_values):
            results[output.name] = float(value)
        return [self._shaped(results[name], bound, name)
                for name in result_order(want_value, grads, hessians)]

    def _prepare(self, bound: _Bound, want_value: bool, grads: tuple[str, ...],
                 hessians: tuple[str, ...]) -> tuple[_Kernel, dict[str, int]]:
        """The kernel for ``bound``'s ranks and dtype, and the length of every axis."""
        weighted = bound.weight is not None
        kernel = self._kernel(bound.ranks, weighted, bound.dtype, want_value, tuple(grads),
                              tuple(hessians))
        self._last_source = kernel.source
        objective, _, specialized = self._specialized[_signature(bound.ranks, weighted)]
        return kernel, self._lengths(bound, objective, specialized)

    @staticmethod
    def _output_array(bound: _Bound,
                      dtype: np.dtype | None = None) -> Callable[[tuple[int, ...]], Any]:
        """Makes the arrays results are written to (of ``dtype``, by default the kernel's):
        NumPy, or the caller's kind of device array when the inputs live on the device
        (results stay there)."""
        dtype = bound.dtype if dtype is None else dtype
        if bound.device is None:
            return lambda shape: np.empty(shape, dtype=dtype)
        from .backend.cuda import runtime as cuda_runtime

        return lambda shape: cuda_runtime.empty_like_device(bound.device, shape, dtype)

    @staticmethod
    def _arguments(kernel: _Kernel, bound: _Bound, lengths: dict[str, int],
                   output_array: Callable[[tuple[int, ...]], Any]) -> tuple[dict, dict]:
        """The keyword arguments of ``kernel.run`` for ``bound``, and the output arrays by
        result name (made by ``output_array(shape)``)."""
        arguments: dict[str, Any] = {}
        names = kernel.names
        all_arrays = dict(bound.arrays)
        if bound.weight is not None:
            all_arrays[shapes.WEIGHT] = bound.weight
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
            results[output.name] = output_array(tuple(lengths[axis] for axis in output.axes))
            arguments[names.outputs[output.name]] = results[output.name]
        return arguments, results

    def _run(self, kernel: _Kernel, arguments: dict[str, Any]):
        if kernel.checked:
            return kernel.run(**arguments)
        try:
            result = kernel.run(**arguments)
        except LossError:
            raise
        except numba.core.errors.TypingError as error:
            # arguments of a type the kernel cannot take: the cached machine code of the
            # types it can take is sound, and stays
            raise LossError(f"internal error: the kernel cannot take these arguments: "
                            f"{str(error).splitlines()[0]}") from error
        except Exception:
            # Numba compiles or loads machine code on the first call; a damaged cache entry
            # fails here. Drop it, import the module afresh and try once more.
            cache.discard(kernel.source)
            try:
                kernel.run = cache.load_module(kernel.source).run
                result = kernel.run(**arguments)
            except Exception as error:
                raise LossError(f"internal error while compiling the kernel: "
                                f"{type(error).__name__}: {error}") from error
        kernel.checked = True
        return result

    def _shaped(self, result, bound: _Bound, name: str):
        if name != "value" and bound.ranks[name.split(":", 1)[1]] == 0:
            return float(result)
        if isinstance(result, np.ndarray) and bound.result_dtype is not None:
            return result.astype(bound.result_dtype)
        return result

    def _lengths(self, bound: _Bound, objective: shapes.Objective,
                 specialized: shapes.Specialized) -> dict[str, int]:
        lengths: dict[str, int] = {}
        for axis, sources in specialized.axis_sources.items():
            seen = {}
            for name, dimension in sources:
                seen[name] = bound.arrays[name].shape[dimension]
            if len(set(seen.values())) > 1:
                self._class_vector_mismatch(seen, bound)
                detail = ", ".join(f"'{n}' has shape {bound.arrays[n].shape}" for n in seen)
                kind = "number of classes" if axis.endswith("k") else "number of samples"
                raise LossShapeError(f"inputs disagree on the {kind}: {detail}")
            lengths[axis] = next(iter(seen.values()))
        for axis, width in specialized.fixed_widths.items():
            if axis in lengths and lengths[axis] != width:
                raise LossShapeError(f"onehot(..., {width}) needs {width} classes, but the "
                                     f"inputs have {lengths[axis]}")
            lengths[axis] = width
        if bound.weight is not None:
            axis = objective.weight_axes[0] if objective.weight_axes else None
            if axis is not None and bound.weight.shape[0] != lengths.get(axis):
                raise LossShapeError(f"sample_weight has {bound.weight.shape[0]} entries but "
                                     f"the loss has {lengths.get(axis)} samples")
        return lengths

    def _class_vector_mismatch(self, seen: dict[str, int], bound: _Bound) -> None:
        """Raise the error for a per-class vector whose length is not the number of classes
        of the inputs it meets (``seen``: the class-axis length each input gives)."""
        vectors = [n for n in seen if n in self.class_vector_inputs()]
        others = {n: k for n, k in seen.items() if n not in vectors}
        for name in vectors:
            wrong = [n for n, k in others.items() if k != seen[name]]
            if not others or wrong:
                detail = (", ".join(f"'{n}' has shape {bound.arrays[n].shape}" for n in others)
                          or ", ".join(f"'{n}' has {seen[n]}" for n in vectors if n != name))
                classes = others[wrong[0]] if wrong else next(iter(seen[n] for n in vectors
                                                                   if n != name))
                raise LossShapeError(
                    f"per-class vector '{name}' has {seen[name]} entries but the loss has "
                    f"{classes} classes ({detail}); pass one entry per class",
                    self.loss.definition.input_spans.get(name))

    def _check_labels(self, bound: _Bound, kernel: _Kernel, lengths: dict[str, int]) -> None:
        """Check every label the kernel reads through; with ``ignore_index``, count the
        samples kept into ``lengths`` (the kernel's ``count`` of them)."""
        objective = self._specialized[_signature(bound.ranks, bound.weight is not None)][0]
        for name, labels, width in self._label_widths(bound, kernel, lengths):
            ignored = name == objective.ignored and name in bound.arrays
            if _is_device_array(labels):  # checked there: a GPU does not bounds-check a read
                if ignored:
                    from .backend.cuda import labels as cuda_labels

                    found, kept = cuda_labels.check_ignoring(labels, width, self.ignore_index)
                else:
                    from .backend.cuda import runtime as cuda_runtime

                    found = cuda_runtime.first_bad_label(labels, width)
            else:
                found = first_bad_label(labels, width, self.ignore_index if ignored else None)
                if ignored and found is None:
                    kept = int(np.count_nonzero(labels != self.ignore_index))
            if found is not None:
                raise self.label_error(name, width, *found)
            if ignored:
                self._count_kept(name, kept, objective, lengths)

    def _count_kept(self, name: str, kept: int, objective: shapes.Objective,
                    lengths: dict[str, int]) -> None:
        """Bind the number of samples kept; a mean over none of them is an error rather
        than PyTorch's NaN."""
        if kept == 0 and self.reduction not in ("sum", "none"):
            raise LossDomainError(
                f"every label of '{name}' equals ignore_index={self.ignore_index}: the "
                f"{self.reduction} over no samples is undefined (PyTorch returns nan); use "
                "reduction='sum' (0 for such a batch) or skip the batch",
                self.loss.definition.input_spans.get(name))
        lengths[objective.kept_count] = kept

    @staticmethod
    def _label_widths(bound: _Bound, kernel: _Kernel,
                      lengths: dict[str, int]) -> list[tuple[str, Any, int]]:
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

    def label_error(self, name: str, width: int, index: int, label: Any) -> LossDomainError:
        """The error for a label ``name`` (an input, a param or a constant) holding
        ``label`` at ``index``."""
        kind = "label input" if name in self.inputs else "label"
        return LossDomainError(f"{kind} '{name}' must hold integers in [0, {width}); "
                               f"found {label!r} at index {index}",
                               self.loss.definition.input_spans.get(name))


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
_KERNEL_READABLE = frozenset(np.dtype(t) for t in (
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
    if array.dtype.kind not in "fiub":
        raise LossShapeError(f"{what} must be numbers (a float, integer or bool array or "
                             f"scalar), got {type(value).__name__} of dtype {array.dtype}",
                             span)
    if array.dtype not in _KERNEL_READABLE:
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


def first_bad_label(labels: np.ndarray, width: int,
                    ignore: int | None = None) -> tuple[int, Any] | None:
    """``(flat index, value)`` of the first label not an integer in ``[0, width)`` (nor equal
    to ``ignore``, when given), or None."""
    bad = (labels < 0) | (labels >= width) | (labels != np.floor(labels))
    if ignore is not None:
        bad &= labels != ignore
    index = int(np.argmax(bad)) if bad.size else 0
    return (index, labels.flat[index].item()) if bad.size and bad.flat[index] else None


def _signature(ranks: dict[str, int], weighted: bool) -> tuple:
    """What a specialisation depends on: the input ranks and whether weights are given."""
    return (tuple(sorted(ranks.items())), weighted)


def schedule_outputs(schedule) -> list[Output]:
    """Every per-element output of a schedule, in loop order."""
    return [o for loop in schedule.loops for o in loop.outputs]


def _is_device_array(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return False
    try:
        if hasattr(value, "__cuda_array_interface__"):  # CuPy, PyTorch CUDA, Numba arrays
            return True
    except RuntimeError:  # a PyTorch CUDA tensor that requires grad refuses to export itself
        return True
    # the arrays of Numba's CUDA simulator have no interface; they exist once it is imported
    simulated = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return simulated is not None and isinstance(value, simulated.FakeCUDAArray)


def _header(target: str, reduction: str) -> str:
    from . import __version__

    return (f"# Generated by lossdsl {__version__} (target={target}, "
            f"reduction={reduction}). Do not edit: this file is a cache entry.")
