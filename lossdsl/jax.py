"""lossdsl losses as ordinary JAX functions, printed as ``jax.numpy`` code.

    import lossdsl.jax

    f = lossdsl.jax.loss("huber(y, p, 1.0)")          # f(y_true, y_pred, **inputs)
    value = f(y, p)                                   # a 0-d jax.Array
    g = jax.jit(jax.grad(f, argnums=1))(y, p)         # jit, grad, hessian, vmap all apply

The loss's optimised graph (the one the Numba kernels compute: inlined, stabilised,
simplified, lowered) is printed as ``jax.numpy`` source by :mod:`lossdsl.backend.jax`, so the
function is traced, compiled, batched and differentiated by JAX like any other; nothing calls
back into Python or Numba.

**Derivatives are lossdsl's.** The value is a :func:`jax.custom_jvp` whose JVP uses the
symbolic gradient, printed from the same IR, instead of JAX's autodiff of the formula: its
stable forms (a ``where`` differentiates only the branch it takes, ``sigmoid`` rather than
``exp(x)/(1 + exp(x))``, ...) stay finite where autodiff of the value meets ``0 * inf``. The
gradient is itself a ``custom_jvp`` whose JVP is the symbolic diagonal Hessian where that is
the whole second derivative (the loss is elementwise in the input: ``jax.hessian`` of
``huber``, ``bce_logits``, ``quantile``, ...); where entries are coupled (a softmax over
classes, a batch-level sum such as Dice, samples coupled through groups, pairs or risk sets:
``cox_ph``, ``cox_ph_efron``, any cumulative sum), for mixed derivatives of two inputs,
derivatives with respect to params, third derivatives and per-sample (``reduction="none"``)
losses whose samples are coupled, JAX differentiates the printed symbolic derivative (or
value) instead, which is exact too, only without lossdsl's stable forms: ``jax.hessian``,
Hessian-vector products and ``jax.grad`` of a function of the gradient are the full second
derivative. (The printer keeps JAX's derivative of a printed gradient finite where the
gradient masks a logarithm or sums in the log domain over no terms: see
:meth:`lossdsl.backend.jax.JaxPrinter.print_where` and :func:`lossdsl.backend.jax.scan`.)

Positional arguments are ``(y_true, y_pred)``, as optax and Keras take them: the target is
the input named like a label (``y``, ``target``, ``label``, ...), the prediction the other
one; other inputs, ``sample_weight=`` and param overrides are keywords. ``reduction="none"``
gives one value per sample (optax's per-example form). Inputs may be float64 (with
``jax_enable_x64``), float32, float16 or bfloat16 (computed in float32, returned in the input
dtype); integer label arrays are range-checked when they are concrete and make the result NaN
when a traced label (under ``jit``) is out of range, never a silently wrong number (NumPy
float64 labels and group ids are checked as given, where JAX would read them as float32:
see :meth:`JaxLoss._check` and :func:`_bad_labels`). Likewise a
mean whose ``count_as`` counts total 0 (every sample's class weight 0) is a
:class:`~lossdsl.LossDomainError` where the counts are concrete (also under ``jax.grad`` of
the scores alone), and makes the value and every derivative NaN where they are traced.

JAX is an optional dependency (``pip install lossdsl[jax]``); ``import lossdsl`` does not
import it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.custom_derivatives import SymbolicZero
except ModuleNotFoundError as error:  # an optional dependency
    raise ModuleNotFoundError(f"lossdsl.jax needs JAX ({error}): pip install 'lossdsl[jax]' "
                              "(or jax[cuda12] for a GPU)", name=error.name) from error

from . import compiler
from .api import CompiledLoss, Loss, loss_from_text
from .backend import jax as printer
from .binding import (
    check_aligned,
    check_group_ids,
    check_scan_keys,
    count_total_error,
    disagreement,
    domain_error,
    domain_violation,
    exact_integer_limit,
    first_bad_label,
    kept_weight_total_error,
    param_value,
    refuse_class_vector_length,
    weight_total_error,
)
from .domains import Domain, first_unmet
from .errors import (
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    all_ignored_error,
    at_index,
    did_you_mean,
    not_a_param_hint,
)
from .ir.axes import Axis, partner_name
from .ir.node import Node, depends_on, toposort
from .ops.primitives import ROW, SCAN
from .passes import diff, shapes
from .roles import positional_inputs

__all__ = ["DERIVATIVES", "JaxLoss", "loss"]

#: How derivatives are taken: "lossdsl" (the symbolic gradient and Hessian, printed from the
#: IR, as the JVP of the value and of the gradient) or "jax" (JAX's autodiff of the printed
#: value, for comparison: no custom_jvp).
DERIVATIVES = ("lossdsl", "jax")


def _is_zero(tangent: Any) -> bool:
    return isinstance(tangent, SymbolicZero) or tangent.dtype == jax.dtypes.float0


def _concrete(value: Any) -> np.ndarray | None:
    """``value`` as NumPy when it is known now (not traced under jit/vmap/grad), else None."""
    if isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a loss computes in: float32 or float64 as given, float32 for half
    precision (float16 and bfloat16), as the Numba kernels."""
    return dtype if dtype in (jnp.float32, jnp.float64) else np.dtype(jnp.float32)


def _coupled(graph: Node, x: Node) -> bool:
    """Whether a derivative ``graph`` (shaped like ``x``) mixes different entries of ``x``:
    a reduction over an axis of ``x`` of something that depends on ``x``, a cumulative sum
    over the samples (a risk set: ``sum_from``, ``logsumexp_from``, ...) of such a thing, or
    ``x`` read at the partners of a pair sum (stop_gradient cuts). Where it does not, the
    diagonal Hessian is the whole second derivative."""
    partner = partner_name(x.value) if x.op == "input" else None
    varies: dict[int, bool] = {}
    for n in toposort([graph]):
        if n.op == "input" and n.value == partner:
            return True  # x at the partners of a pair sum: each entry meets the others
        varies[id(n)] = n is x or (n.op != "stop_gradient"
                                   and any(varies[id(a)] for a in n.args))
        if n.op in SCAN and varies[id(n.args[0])]:
            return True  # each sample's sum over its risk set: the samples meet
        for a in n.args:
            reduced = set(a.axes or ()) - set(n.axes or ())
            if varies[id(a)] and reduced & set(x.axes or ()):
                return True
    return False


@dataclass
class _Functions:
    """The printed functions of one specialisation (input ranks, weights, dtype): the value,
    and, built when first asked for, each input's gradient and Hessian diagonal."""

    loss: JaxLoss
    objective: shapes.Objective
    typed: dict[str, Node]
    specialized: shapes.Specialized
    weighted: bool
    dtype: np.dtype  # computed in
    result_dtype: np.dtype  # returned in
    names: tuple[str, ...]  # the inputs, then the weights, then params: run's arguments
    inputs: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    lengths: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # items axis -> group ids argument
    pairs: dict[str, str] = field(default_factory=dict)  # partners axis -> group ids argument
    # traced labels to check: (argument index, width or its (argument, dimension), ignored,
    # whether the printed code reads them in the compute dtype: see
    # lossdsl.backend.jax.labels_read_exactly)
    labels: list[tuple[int, Any, float | None, bool]] = field(default_factory=list)
    # traced group ids to check (argument indices): see _bad_labels
    group_ids: list[int] = field(default_factory=list)
    # the loss's def requirements, typed; ``unmet`` counts where each is false (printed
    # when a traced call first needs it)
    requirements: tuple[compiler.TypedRequirement, ...] = ()
    unmet: Callable | None = None
    # the denominator of a mean whose samples count as count_as says (see
    # lossdsl.compiler.count_total), and its printed function (when a call first needs it)
    count_total: Node | None = None
    counted: Callable | None = None
    sources: dict[str, str] = field(default_factory=dict)
    value: Callable | None = None
    raw_value: Callable | None = None
    gradients: dict[str, Callable] = field(default_factory=dict)
    raw_gradients: dict[str, Callable] = field(default_factory=dict)
    per_sample: dict[str, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ printing
    def _print(self, what: str, roots: list[Node]) -> Callable:
        """``run(*arguments)`` computing ``roots`` optimised as for the kernels (the
        logistic primitives kept whole for JAX to differentiate), NaN where a traced label
        is out of range."""
        lowered = compiler.optimize(roots, differentiated=True)
        program = printer.generate(lowered, self.inputs, self.params, self.lengths,
                                   self.groups, self.pairs)
        self.sources[what] = program.source
        run = program.build(self.dtype.type, jnp, lax, printer)
        checks, group_ids, dtype = self.labels, self.group_ids, self.dtype

        def checked(*arguments):
            results = run(*arguments)
            bad = _bad_labels(arguments, checks, group_ids, dtype)
            if bad is None:
                return results
            return tuple(jnp.where(bad, jnp.asarray(np.nan, r.dtype), r) for r in results)

        return checked

    def arguments(self, arrays: Mapping[str, Any], params: Mapping[str, Any]) -> list:
        """``run``'s arguments: the inputs (and weights), then the params."""
        return ([arrays[name] for name in self.names[:len(self.inputs)]]
                + [params[name] for name in self.params])

    def unmet_flags(self, arguments: list) -> tuple:
        """Per requirement, whether it is false anywhere (traced)."""
        with self.lock:
            if self.unmet is None:
                self.unmet = self._print("unmet", [compiler.unmet_count(c.condition)
                                                   for c in self.requirements])
        return tuple(count > 0 for count in self.unmet(*arguments))

    def counts_total(self, arguments: list) -> jax.Array:
        """The total of the counts of ``count_as`` the mean divides by (concrete where
        what it reads is, else traced)."""
        with self.lock:
            if self.counted is None:
                self.counted = self._print("count_total", [self.count_total])
        (total,) = self.counted(*arguments)
        return total

    def build_value(self) -> None:
        (raw,) = [self._print("value", [self.objective.value])]
        result_dtype = self.result_dtype

        def value(*arguments):
            return raw(*arguments)[0].astype(result_dtype)

        self.raw_value = value
        if self.loss.derivatives == "jax":
            self.value = value
            return
        self.value = jax.custom_jvp(value)
        self.value.defjvp(self._value_jvp, symbolic_zeros=True)

    def _total(self) -> Node:
        """The scalar whose gradient gives the value's JVP: the reduced loss, or for
        ``reduction="none"`` the (weighted) sum of the per-sample values."""
        if self.loss.reduction != "none" or self.objective.sample_axis is None:
            return self.objective.total
        return self.loss._summed.specialization(self._ranks(), self.weighted).objective.total

    def _ranks(self) -> dict[str, int]:
        return {name: len(self.typed[name].axes or ()) for name in self.loss.inputs}

    def _input(self, name: str) -> Node:
        if name == shapes.WEIGHT_KEYWORD:
            return next(n for n in toposort([self._total()])
                        if n.op == "input" and n.value == shapes.WEIGHT)
        return self.typed[name]

    def gradient(self, name: str) -> tuple[Callable, Callable]:
        """(gradient with the symbolic Hessian as its JVP, the gradient as printed) of the
        total with respect to input ``name``. Where the gradient couples the entries of the
        input (:func:`_coupled`: classes, groups, pairs, risk sets), its JVP is JAX's
        derivative of the printed gradient instead: the full Hessian, not its diagonal."""
        with self.lock:
            if name not in self.gradients:
                total, x = self._total(), self._input(name)
                gradient = diff.grad(total, x)
                raw = self._print(f"grad:{name}", [gradient])
                hessian = None
                if not _coupled(compiler.optimize([gradient], for_codegen=False)[0], x):
                    try:
                        diagonal = diff.hessian_diag(total, x, gradient)
                        hessian = self._shaped_like(self._print(f"hess:{name}", [diagonal]),
                                                    name, x, diagonal)
                    except LossError as error:
                        # trigamma's derivative has none; a pair sum of a value read at the
                        # partners has no exact Hessian: JAX differentiates the gradient
                        if not ("has no derivative" in str(error)
                                or "is not implemented" in str(error)):
                            raise
                self.raw_gradients[name] = self._shaped_like(raw, name, x, gradient)
                self.gradients[name] = self._with_jvp(self.raw_gradients[name], (
                    {self.names.index(name): _diagonal(hessian)} if hessian else {}))
            return self.gradients[name], self.raw_gradients[name]

    def _shaped_like(self, raw: Callable, name: str, x: Node, derivative: Node) -> Callable:
        """The printed ``derivative`` (the gradient or the Hessian's diagonal) of input
        ``name`` as an array shaped like the input: a constant (no axes) broadcast to every
        entry, one value per group read at each of the group's samples (the group's rows of
        a grouped input), and a value constant along some of the input's axes (an (N,)
        derivative of an (N, K) input) repeated along them. NumPy's broadcasting would line
        an (N,) derivative up with the classes instead: transposed where N == K."""
        index = self.names.index(name)
        axes, wanted = tuple(derivative.axes or ()), tuple(x.axes or ())
        if axes == wanted:
            return lambda *arguments: raw(*arguments)[0]
        if not axes:
            return lambda *arguments: jnp.broadcast_to(raw(*arguments)[0],
                                                       jnp.shape(arguments[index]))
        ids = self.groups.get(wanted[1]) if len(wanted) == 2 else None
        if ids is not None and axes == wanted[:1]:
            position = list(self.inputs.values()).index(ids)
            return lambda *arguments: raw(*arguments)[0][
                printer.segment_ids(arguments[position])]
        if ids is not None or tuple(axis for axis in wanted if axis in axes) != axes:
            raise LossError(f"internal error: the derivative of '{name}' has axes {axes}, "
                            f"not a part of the input's {wanted}")
        # a new dimension where the derivative is constant along the input's axis
        spread = tuple(slice(None) if axis in axes else None for axis in wanted)
        return lambda *arguments: jnp.broadcast_to(raw(*arguments)[0][spread],
                                                   jnp.shape(arguments[index]))

    def _with_jvp(self, raw: Callable, rules: dict[int, Callable]) -> Callable:
        """``raw`` as a custom_jvp: argument ``i``'s tangent through ``rules[i](arguments,
        tangent)``, any other argument's through JAX's derivative of ``raw``."""
        function = jax.custom_jvp(raw)

        def jvp(primals, tangents):
            out = function(*primals)
            total = jnp.zeros_like(out)
            others = []
            for index, tangent in enumerate(tangents):
                if _is_zero(tangent):
                    continue
                if index in rules:
                    total = total + rules[index](primals, tangent).astype(out.dtype)
                else:
                    others.append(index)
            if others:
                total = total + _autodiff(raw, primals, tangents, others).astype(out.dtype)
            return out, total

        function.defjvp(jvp, symbolic_zeros=True)
        return function

    # ------------------------------------------------------------------ the value's JVP
    def _symbolic_per_sample(self, name: str) -> bool:
        """For ``reduction="none"``: whether the per-sample values' JVP with respect to
        ``name`` is the summed loss's gradient times the tangent, row by row (each value
        depends on its own sample's entries of the input only)."""
        if name not in self.per_sample:
            x = self._input(name)
            value = self.objective.value
            varying, scalar = shapes.split_additive(value)
            axes = tuple(value.axes or ())
            ok = (bool(axes) and tuple(x.axes or ())[:1] == axes[:1]
                  and (len(x.axes) == len(axes) or len(axes) == 1)
                  and not depends_on(scalar, {id(x)})[id(scalar)]
                  # samples coupled through their groups, pairs or risk sets
                  and not (self.groups or self.pairs)
                  and not any(n.op in SCAN for n in toposort([varying])))
            if ok:
                dependent = depends_on(varying, {id(x)})
                reductions = ("sum",) if len(axes) == 1 else ("sum", *ROW)
                ok = not any(n.op in reductions and dependent[id(n.args[0])]
                             for n in toposort([varying]))
            self.per_sample[name] = ok
        return self.per_sample[name]

    def _value_jvp(self, primals, tangents):
        out = self.value(*primals)
        total = jnp.zeros(out.shape, self.dtype)
        others = []
        per_sample = self.loss.reduction == "none" and out.ndim > 0
        for index, tangent in enumerate(tangents):
            if _is_zero(tangent):
                continue
            name = self.names[index]
            if (index >= len(self.names) - len(self.params)  # a param
                    or name in self.loss._compiled.table_inputs()):  # a table (rowof, classvec)
                # lossdsl has no derivative with respect to these: JAX differentiates
                others.append(index)
                continue
            if per_sample and not self._symbolic_per_sample(name):
                others.append(index)
                continue
            gradient, _ = self.gradient(name)
            product = gradient(*primals) * tangent.astype(self.dtype)
            if per_sample:
                total = total + (jnp.sum(product, axis=-1) if product.ndim > out.ndim
                                 else product)
            else:
                total = total + jnp.sum(product)
        if others:
            total = total + _autodiff(self.raw_value, primals, tangents, others)
        return out, total.astype(out.dtype)


def _diagonal(hessian: Callable) -> Callable:
    """The JVP rule of a gradient whose Jacobian is diagonal: ``hessian(*primals)`` (shaped
    like the input) times the tangent, entry by entry."""
    def rule(primals, tangent):
        diagonal = hessian(*primals)
        return diagonal * tangent.astype(diagonal.dtype)

    return rule


def _autodiff(raw: Callable, primals, tangents, indices: list[int]):
    """JAX's own JVP of ``raw`` along the arguments ``indices`` (the others held)."""

    def partial(*moving):
        arguments = list(primals)
        for index, value in zip(indices, moving):
            arguments[index] = value
        return raw(*arguments)

    moving = [primals[i] for i in indices]
    directions = [jnp.asarray(tangents[i]).astype(jnp.result_type(primals[i])) for i in indices]
    return jax.jvp(partial, moving, directions)[1]


def _x64_off() -> bool:
    """Whether JAX reads float64 arrays as float32 (``jax_enable_x64`` is off)."""
    return jax.dtypes.canonicalize_dtype(np.float64) != np.float64


def _bad_labels(arguments, checks, group_ids, dtype: np.dtype):
    """Whether any traced label or group id would give a wrong number (a traced bool: the
    results are made NaN), or None when the loss reads none. Concrete ones were checked, and
    refused, before the call (:meth:`JaxLoss._check`); this is the same rule for traced ones.

    ``checks``: (argument index, width, ignored label value or None, read in ``dtype``),
    the width an int or the (argument index, dimension) whose length it is. A label is bad
    where it is not an integer in range; where it is read in the compute ``dtype`` (compared
    with the class index in it) and the width is past ``dtype``'s exact integers, where it
    is at or past them (2**24 in float32: it and its neighbouring classes are one number).
    ``group_ids``: argument indices of group ids, bad where they are floats too large for
    their type to tell neighbouring integers apart. (Labels JAX may have rounded before the
    loss saw them: :meth:`JaxLoss._check`.)"""
    if not checks and not group_ids:
        return None
    bad = jnp.asarray(False)
    for index, width, ignored, rounded in checks:
        if not isinstance(width, int):
            width = jnp.shape(arguments[width[0]])[width[1]]
        value = jnp.asarray(arguments[index])
        if jnp.issubdtype(value.dtype, jnp.integer) and jnp.iinfo(value.dtype).max < width:
            # compared in its own type (int8, int16, uint8, ...), the width would wrap
            value = value.astype(jnp.int32)
        wrong = (value < 0) | (value >= width) | (value != jnp.floor(value))
        if rounded and width > exact_integer_limit(dtype):
            wrong = wrong | (value >= exact_integer_limit(dtype))
        if ignored is not None:
            wrong = wrong & (value != ignored)
        bad = bad | jnp.any(wrong)
    for index in group_ids:
        ids = jnp.asarray(arguments[index])
        if jnp.issubdtype(ids.dtype, jnp.floating):
            bad = bad | jnp.any(jnp.abs(ids) >= 2 ** (jnp.finfo(ids.dtype).nmant + 1))
    return bad


class JaxLoss:
    """A lossdsl loss as a JAX function ``f(y_true, y_pred, **inputs)`` (see the module's
    documentation): a 0-d array, or one value per sample for ``reduction="none"``."""

    def __init__(self, loss: str | Loss | CompiledLoss, reduction: str = "mean",
                 params: Mapping[str, float] | None = None, ignore_index: int | None = None,
                 derivatives: str = "lossdsl"):
        if derivatives not in DERIVATIVES:
            raise LossError(f"derivatives must be one of {', '.join(DERIVATIVES)}, not "
                            f"{derivatives!r}")
        self.derivatives = derivatives
        if isinstance(loss, CompiledLoss):
            params = {**loss.params, **dict(params or {})}
            ignore_index = loss.ignore_index if ignore_index is None else ignore_index
            loss = loss.loss
        if isinstance(loss, str):
            loss = loss_from_text(loss)
        if not isinstance(loss, Loss):
            raise TypeError(f"lossdsl.jax.loss takes loss text, a Loss or a CompiledLoss, not "
                            f"{type(loss).__name__}")
        # the symbolic pipeline (specialisation, objective); these objects never build a kernel
        self._compiled = loss.compile("cpu", reduction, params, ignore_index)
        self._summed = loss.compile("cpu", "sum", params, ignore_index)
        self.definition = loss
        self.reduction = reduction
        self._functions: dict[tuple, _Functions] = {}
        self._lock = threading.Lock()

    @property
    def inputs(self) -> tuple[str, ...]:
        """The loss's inputs, in order of first appearance."""
        return self._compiled.inputs

    @property
    def params(self) -> dict[str, float]:
        """The params and their values (overridable per call by keyword)."""
        return dict(self._compiled.params)

    @property
    def ignore_index(self) -> int | None:
        """The label value whose samples count for nothing (None: every sample counts)."""
        return self._compiled.ignore_index

    def __repr__(self) -> str:
        return (f"<lossdsl.jax loss {self.definition.name or 'expression'}"
                f"({', '.join(self.inputs)}) reduction={self.reduction}>")

    def source(self, *args: Any, sample_weight: Any = None, **inputs: Any) -> str:
        """The generated JAX source of the value for these inputs (as a call would get)."""
        functions, _ = self._prepare(args, sample_weight, inputs)
        return functions.sources["value"]

    def __call__(self, *args: Any, sample_weight: Any = None, **inputs: Any) -> jax.Array:
        """The loss of the given arrays (a 0-d array, or per sample for ``"none"``)."""
        functions, arguments = self._prepare(args, sample_weight, inputs)
        return functions.value(*arguments)

    # ------------------------------------------------------------------ binding
    def _class_vectors(self) -> frozenset[str]:
        """Inputs read as per-class vectors (``classvec(w)``), if the compiler has them."""
        vectors = getattr(self._compiled, "class_vector_inputs", None)
        return vectors() if vectors is not None else frozenset()

    def _class_vector(self, name: str, array: jax.Array) -> jax.Array:
        """A per-class vector (K,) as a one-row table (1, K), as the kernels read it; a
        number stays a number (the same for every class)."""
        if array.ndim == 0:
            return array
        if array.ndim != 1:
            raise LossShapeError(
                f"'{name}' is a per-class vector (classvec) and must be a vector (K,) with one "
                f"entry per class, or a number; got shape {tuple(array.shape)}",
                self.definition.definition.input_spans.get(name))
        return array.reshape(1, array.shape[0])

    def _prepare(self, args, sample_weight, inputs) -> tuple[_Functions, list]:
        inputs = dict(inputs)
        roles = positional_inputs(self.inputs, inputs, len(args), target_first=True,
                                  convention="(y_true, y_pred), as optax and Keras take them",
                                  call="f")
        for name, value in zip(roles, args):
            inputs[name] = value
        check_aligned([*inputs.items(), ("sample_weight", sample_weight)])
        params = dict(self._compiled.params)
        for name in [n for n in inputs if n not in self.inputs]:
            if name not in params:
                raise LossNameError(f"'{name}' is not an input or param of this loss (inputs: "
                                    f"{', '.join(self.inputs)})", None,
                                    did_you_mean(name, list(self.inputs) + list(params))
                                    or not_a_param_hint(name))
            params[name] = _param(name, inputs.pop(name))
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise LossNameError(f"missing input '{missing[0]}' (this loss takes "
                                f"{', '.join(self.inputs)})",
                                self.definition.definition.input_spans.get(missing[0]))
        arrays = {name: _array(f"input '{name}'", inputs[name]) for name in self.inputs}
        # host arrays (NumPy, lists) as given: their labels and group ids are checked as
        # given (also inside jit, where JAX's copy is traced), not as JAX has rounded them
        host = {name: np.asarray(inputs[name]) for name in self.inputs
                if not isinstance(inputs[name], (jax.Array, jax.core.Tracer))}
        for name in self._class_vectors():
            arrays[name] = self._class_vector(name, arrays[name])
        weighted = sample_weight is not None
        if weighted:
            weight = _array("sample_weight", sample_weight)
            if weight.ndim != 1:
                raise LossShapeError(f"sample_weight must be a vector (N,), got shape "
                                     f"{weight.shape}")
            arrays[shapes.WEIGHT_KEYWORD] = weight
        floating = [a.dtype for a in arrays.values() if jnp.issubdtype(a.dtype, jnp.floating)]
        result = np.dtype(jnp.result_type(*floating)) if floating else np.dtype(
            jnp.result_type(float))
        ranks = {name: arrays[name].ndim for name in self.inputs}
        functions = self._specialization(ranks, weighted, result)
        self._check(functions, arrays, params, host)
        layout, outside = self._compiled.layout, []
        for declared in layout.domains:
            values = arrays if declared.name in arrays else params
            concrete = _concrete(values[declared.name])
            if concrete is None:  # traced: cannot raise, so NaN
                values[declared.name], found = _outside_as_nan(values[declared.name],
                                                               declared.domain)
                outside.append(found)
                continue
            found = domain_violation(declared, concrete, params)
            if found is not None:
                raise domain_error(layout, declared, found)
        if functions.requirements:
            outside += self._required(functions, arrays, params)
        if functions.count_total is not None:
            self._counted(functions, arrays, params)
        if outside:  # and every derivative NaN too, which a NaN label alone may not make
            scale = jnp.where(functools.reduce(jnp.logical_or, outside), jnp.nan, 1.0)
            for name, value in arrays.items():
                if jnp.issubdtype(jnp.asarray(value).dtype, jnp.floating):
                    arrays[name] = _tangents_scaled(value, scale)
        return functions, functions.arguments(arrays, params)

    @staticmethod
    def _required(functions: _Functions, arrays: dict[str, Any], params: dict[str, Any]
                  ) -> list:
        """Check the def requirements: where what they read is concrete, a false one raises;
        where it is traced, every floating input becomes NaN if one is false anywhere, so
        that every result is (returned: the flags, for the derivatives)."""
        flags, traced = [], None
        for index, counted in enumerate(functions.requirements):
            reads = counted.reads  # a table's whole, where it reads one, not its labels
            concrete = {name: _concrete(arrays[name] if name in arrays else params[name])
                        for name in reads}
            if all(value is not None for value in concrete.values()):
                unmet = first_unmet(
                    counted.requirement, counted.condition, counted.arguments,
                    {name: value for name, value in concrete.items() if name in arrays},
                    {**params, **{name: float(value) for name, value in concrete.items()
                                  if name not in arrays}})
                if unmet is not None:
                    raise counted.error(unmet[1], unmet[0])
                continue
            if traced is None:
                traced = functions.unmet_flags(functions.arguments(arrays, params))
            flags.append(traced[index])
        if flags:
            _nan_where(functools.reduce(jnp.logical_or, flags), arrays)
        return flags

    def _counted(self, functions: _Functions, arrays: dict[str, Any],
                 params: dict[str, Any]) -> None:
        """Refuse counts of ``count_as`` whose total, the mean's denominator, is 0 (every
        sample's class weight 0): where what the total reads is concrete (the counts and
        labels, even under ``jax.grad`` of the scores), a
        :func:`~lossdsl.binding.count_total_error`; where it is traced (under ``jit``),
        every floating input becomes NaN when it is 0 or not finite, so that the value and
        every derivative are NaN (0/0 alone gives an infinite value where the losses of
        samples counted 0 are not)."""
        total = functions.counts_total(functions.arguments(arrays, params))
        concrete = _concrete(total)
        if concrete is not None:
            error = count_total_error(float(concrete), self._compiled.layout,
                                      functions.weighted)
            if error is not None:
                raise error
            return
        _nan_where(~((total != 0) & jnp.isfinite(total)), arrays)

    def _specialization(self, ranks: dict[str, int], weighted: bool,
                        result: np.dtype) -> _Functions:
        dtype = _compute_dtype(result)
        key = (tuple(sorted(ranks.items())), weighted, dtype.str, result.str)
        with self._lock:
            if key not in self._functions:
                self._functions[key] = self._build(ranks, weighted, dtype, result)
            return self._functions[key]

    def _build(self, ranks, weighted, dtype, result) -> _Functions:
        compiled = self._compiled
        spec = compiled.specialization(ranks, weighted)
        objective, typed, specialized = spec.objective, spec.typed, spec.shapes
        names = list(self.inputs) + ([shapes.WEIGHT_KEYWORD] if weighted else [])
        functions = _Functions(self, objective, typed, specialized, weighted, dtype, result,
                               (*names, *compiled.params))
        for index, name in enumerate(names):
            loss_name = shapes.WEIGHT if name == shapes.WEIGHT_KEYWORD else name
            functions.inputs[loss_name] = f"a{index}"
        functions.params = {name: f"s{index}" for index, name in enumerate(compiled.params)}
        for axis, sources in specialized.axis_sources.items():
            name, dimension = sources[0]
            functions.lengths[axis] = f"a{names.index(name)}.shape[{dimension}]"
        for axis, width in specialized.fixed_widths.items():
            functions.lengths.setdefault(axis, str(int(width)))
        functions.groups = {Axis(axis).items(): functions.inputs[name]
                            for axis, name in specialized.groups.items()}
        functions.pairs = {Axis(axis).items(): functions.inputs[name]
                           for axis, name in specialized.pairs.items()}
        if objective.kept_count is not None:
            label = functions.inputs[objective.ignored]
            functions.lengths[objective.kept_count] = (
                f"jnp.sum(jnp.asarray({label}) != {float(self.ignore_index)!r})")
        widths: dict[str, Any] = {axis: (names.index(sources[0][0]), sources[0][1])
                                  for axis, sources in specialized.axis_sources.items()}
        widths.update({axis: int(width) for axis, width in specialized.fixed_widths.items()})
        for label, axis in specialized.labels:
            if label.op == "input":
                ignored = (float(self.ignore_index) if label.value == objective.ignored
                           else None)
                exact = printer.labels_read_exactly(label, axis, ignored is not None)
                functions.labels.append((names.index(label.value), widths[axis], ignored,
                                         not exact))
        functions.group_ids = sorted({names.index(name) for name in (
            *specialized.groups.values(), *specialized.pairs.values(),
            *specialized.class_groups.values())})
        functions.requirements = spec.requirements
        functions.count_total = spec.count_total
        functions.build_value()
        return functions

    def _check(self, functions: _Functions, arrays: dict[str, jax.Array],
               params: Mapping[str, Any], host: Mapping[str, np.ndarray]) -> None:
        """Shapes agree (static, also under jit); concrete labels are in range. Labels and
        group ids given as host arrays (``host``) are checked as given, and refused where
        JAX's narrower type (float64 read as float32 where x64 is off) would change the row,
        class or group they name; traced ones it may have rounded make the result NaN
        (:func:`_nan_where_maybe_rounded`)."""
        lengths: dict[str, int] = {}
        for axis, sources in functions.specialized.axis_sources.items():
            seen = {name: arrays[name].shape[dimension] for name, dimension in sources}
            if len(set(seen.values())) > 1:
                input_shapes = {n: arrays[n].shape for n in seen}
                refuse_class_vector_length(self._compiled.layout, seen, input_shapes)
                raise disagreement(axis, input_shapes,
                                   self._compiled.layout.declared_rows)
            lengths[axis] = next(iter(seen.values()))
        for axis, width in functions.specialized.fixed_widths.items():
            if axis in lengths and lengths[axis] != width:
                raise LossShapeError(f"onehot(..., {width}) needs {width} classes, but the "
                                     f"inputs have {lengths[axis]}")
            lengths[axis] = width
        weight = arrays.get(shapes.WEIGHT_KEYWORD)
        axes = functions.objective.weight_axes
        if weight is not None and axes and weight.shape[0] != lengths.get(axes[-1]):
            raise LossShapeError(f"sample_weight has {weight.shape[0]} entries but the loss "
                                 f"has {lengths.get(axes[-1])} samples")
        objective, layout = functions.objective, self._compiled.layout
        for name in (*functions.specialized.groups.values(),
                     *functions.specialized.pairs.values(),
                     *functions.specialized.class_groups.values()):
            if _rounded(host.get(name), arrays[name]):
                check_group_ids(name, host[name], layout.spans.get(name))
                _refuse_rounded_ids(layout, name, host[name], arrays[name])
            ids = _concrete(arrays[name])  # traced ids: equal values make a group
            if ids is not None:
                check_group_ids(name, ids)
        for name, role in layout.scan_keys:
            if name in arrays and _rounded(host.get(name), arrays[name]):
                _refuse_rounded_keys(layout, name, role, host[name], arrays[name])
        keys = {name: np.asarray(values) for name, _ in layout.scan_keys
                if name in arrays and (values := _concrete(arrays[name])) is not None}
        check_scan_keys(layout, keys, functions.dtype)  # traced keys: as they are rounded
        # concrete sample weights of a weighted mean: a total of 0 is an error, not a NaN
        weights = None if weight is None else _concrete(weight)
        for label, axis in functions.specialized.labels:
            if label.op == "const":
                name, values = repr(label.value), np.asarray(label.value)
            else:
                name = label.value
                values = host.get(name) if label.op == "input" else None
                if values is None:
                    values = _concrete(params[name] if label.op == "param" else arrays[name])
                if values is None:  # traced: an out-of-range label makes the result NaN
                    _nan_where_maybe_rounded(arrays, name, lengths[axis])
                    continue
            ignored = name == objective.ignored
            found = first_bad_label(values, lengths[axis], self.ignore_index if ignored
                                    else None)
            if found is not None:
                raise self._compiled.label_error(name, lengths[axis], *found)
            if label.op == "input" and _rounded(host.get(name), arrays[name]):
                _refuse_rounded_labels(layout, name, values, arrays[name], lengths[axis])
            if not printer.labels_read_exactly(label, axis, ignored):
                _refuse_labels_past_limit(layout, name, values, lengths[axis],
                                          functions.dtype, self.ignore_index if ignored
                                          else None)
            if ignored and self.reduction not in ("sum", "none") and not np.any(
                    values != self.ignore_index):
                raise all_ignored_error(name, self.ignore_index, self.reduction,
                                        layout.spans.get(name))
            if ignored and weights is not None:
                error = kept_weight_total_error(layout, weights, values)
                if error is not None:
                    raise error
                weights = None  # checked over the samples kept
        if self.reduction == "weighted_mean" and weights is not None:
            error = weight_total_error(weights)  # a NaN, as the kernels refuse it
            if error is not None:
                raise error


def _rounded(given: np.ndarray | None, converted: Any) -> bool:
    """Whether JAX has read the host array ``given`` (None: not one) in a narrower float
    type: float64 as float32, where ``jax_enable_x64`` is off."""
    return (given is not None and given.dtype.kind == "f"
            and jnp.issubdtype(converted.dtype, jnp.floating)
            and given.dtype.itemsize > np.dtype(converted.dtype).itemsize)


def _nan_where_maybe_rounded(arrays: dict[str, Any], name: str, width: int) -> None:
    """Where ``jax_enable_x64`` is off, JAX reads float64 arrays as float32 before a traced
    label reaches the loss (at the ``jit`` boundary): a float32 label at or past 2**24 of a
    wider axis cannot be told from one rounded to the neighbouring row or class, so every
    floating input, and so every result, is made NaN where there is one."""
    labels = arrays[name]
    limit = exact_integer_limit(np.float32)
    if labels.dtype == jnp.float32 and width > limit and _x64_off():
        _nan_where(jnp.any(labels >= limit), arrays)


def _x64_advice(given: np.ndarray, converted: jax.Array) -> str:
    return (f"JAX reads {given.dtype} arrays as {converted.dtype} (jax_enable_x64 is off); "
            "pass them as an integer array, or enable float64 first with "
            "jax.config.update('jax_enable_x64', True)")


def _refuse_rounded_labels(layout: Any, name: str, given: np.ndarray, converted: jax.Array,
                           width: int) -> None:
    """Refuse labels ``given`` (checked: integers in range) that JAX's narrower float type
    ``converted`` reads as another row or class of ``width`` (float32 past 2**24:
    16777217.0 reads as 16777216.0)."""
    narrow = np.dtype(converted.dtype)
    if width <= exact_integer_limit(narrow):
        return
    changed = np.flatnonzero(given.astype(narrow) != given)
    if changed.size:
        index = int(changed[0])
        value = given.flat[index].item()
        raise LossDomainError(
            f"label input '{name}' indexes {width} entries, and its label "
            f"{value!r}{at_index(index)} would read as {float(narrow.type(value))!r}, "
            f"another one: {_x64_advice(given, converted)}", layout.spans.get(name),
            input=name, index=index)


def _refuse_labels_past_limit(layout: Any, name: str, labels: np.ndarray, width: int,
                              dtype: np.dtype, ignored: int | None) -> None:
    """Refuse labels at or past the compute ``dtype``'s exact integers (2**24 in float32)
    of more than that many classes: the printed code compares them with the class index in
    ``dtype``, where a label and its neighbouring classes' indices are one number (in
    float32, 2**24 + 1 reads as 2**24: a gradient's one-hot row at two classes, or at the
    neighbouring one). A LossDomainError naming the first."""
    limit = exact_integer_limit(dtype)
    if width <= limit:
        return
    past = labels >= limit
    if ignored is not None:
        past &= labels != ignored
    found = np.flatnonzero(past)
    if found.size:
        index = int(found[0])
        raise LossDomainError(
            f"label input '{name}' indexes {width} entries, more than {dtype} can number "
            f"exactly (2**{limit.bit_length() - 1}): {labels.flat[index].item()!r}"
            f"{at_index(index)} and the neighbouring classes read as one number; compute "
            "in float64 (enable jax_enable_x64 and pass float64 inputs)",
            layout.spans.get(name), input=name, index=index)


def _refuse_rounded_ids(layout: Any, name: str, given: np.ndarray, converted: Any) -> None:
    """Refuse group ids ``given`` (checked: integers) that JAX's narrower float type reads
    as numbers too large for it to tell neighbouring integers apart (two groups merged)."""
    limit = exact_integer_limit(np.dtype(converted.dtype))
    large = np.flatnonzero(np.abs(given) >= limit)
    if large.size:
        index = int(large[0])
        raise LossDomainError(
            f"group ids '{name}' hold {given.flat[index].item()!r}{at_index(index)}, past "
            f"2**{limit.bit_length() - 1}, where {converted.dtype} cannot tell neighbouring "
            f"integers apart: {_x64_advice(given, converted)}", layout.spans.get(name),
            input=name, index=index)


def _refuse_rounded_keys(layout: Any, name: str, role: str, given: np.ndarray,
                         converted: Any) -> None:
    """Refuse the keys or strata ``given`` of a cumulative sum where JAX's narrower float
    type reads two distinct values as one: two event times rounded to one float32 tie
    (strata merge), which changes the risk sets without a sign. Magnitudes are compared
    too: a key may be ``abs(y)`` of a signed input (``cox_ph``'s censored times)."""
    flat = given.ravel()
    for values in (flat, np.abs(flat)):
        order = np.argsort(values, kind="stable")
        exact = values[order]
        narrow = exact.astype(np.dtype(converted.dtype))
        merged = np.flatnonzero((exact[1:] != exact[:-1]) & (narrow[1:] == narrow[:-1]))
        if merged.size:
            break
    else:
        return
    first, second = int(order[merged[0]]), int(order[merged[0] + 1])
    raise LossDomainError(
        f"'{name}' gives the {role} of this loss's cumulative sums (risk sets), whose ties "
        f"need its exact values, but {flat[first].item()!r}{at_index(first)} and "
        f"{flat[second].item()!r}{at_index(second)} read as one {converted.dtype} number "
        f"and would {'tie' if role == 'keys' else 'merge'}: JAX reads {given.dtype} arrays "
        f"as {converted.dtype} (jax_enable_x64 is off); enable float64 first with "
        "jax.config.update('jax_enable_x64', True)", layout.spans.get(name), input=name,
        index=first)


def _nan_where(flag: jax.Array, arrays: dict[str, Any]) -> None:
    """Add NaN to every floating array of ``arrays`` where the traced ``flag`` is true (0
    elsewhere): every result computed from them is NaN then, derivatives included (a
    where() would cut the derivatives' path to the input)."""
    for name, value in arrays.items():
        if jnp.issubdtype(jnp.asarray(value).dtype, jnp.floating):
            arrays[name] = value + jnp.where(flag, jnp.nan, 0.0).astype(
                jnp.asarray(value).dtype)


@jax.custom_jvp
def _tangents_scaled(values: jax.Array, scale: jax.Array) -> jax.Array:
    """``values`` itself, whose tangents (and so every derivative through it) are
    multiplied by ``scale``: NaN where a traced call had a value outside its domain."""
    return values


@_tangents_scaled.defjvp
def _tangents_scaled_jvp(primals, tangents):
    values, scale = primals
    return values, tangents[0] * scale


def _outside_as_nan(values: Any, domain: Domain) -> tuple[jax.Array, jax.Array]:
    """Traced ``values`` (under ``jit``, ``grad``, ``vmap``) with those outside their
    declared ``domain`` made NaN (a traced call cannot raise, so the results computed from
    them are NaN, as for an out-of-range label, never a number), and whether any was."""
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(jnp.result_type(float))
    if domain.members:
        inside = functools.reduce(jnp.logical_or, [values == m for m in domain.members])
    else:
        inside = ((values > domain.low) if domain.low_open else (values >= domain.low)) & (
            (values < domain.high) if domain.high_open else (values <= domain.high))
    return jnp.where(inside, values, jnp.nan), ~jnp.all(inside)


def _array(what: str, value: Any) -> jax.Array:
    """``value`` as a JAX array of numbers (a LossShapeError for anything else)."""
    if not isinstance(value, jax.Array):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as error:
            raise LossShapeError(f"{what} is not a rectangular numeric array: {error}") from None
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
            or value.dtype == jnp.bool_):
        raise LossShapeError(f"{what} must be real numbers (a float, integer or bool array or "
                             f"scalar), got dtype {value.dtype}")
    return jnp.asarray(value)


def _param(name: str, value: Any) -> Any:
    """A param given per call: a float, or a 0-d traced array (under jit)."""
    if isinstance(value, jax.core.Tracer):
        if jnp.ndim(value) != 0:
            raise LossShapeError(f"param '{name}' must be a single number, got shape "
                                 f"{jnp.shape(value)}")
        return value
    return param_value(name, np.asarray(value))


def loss(loss: str | Loss | CompiledLoss, reduction: str = "mean",
         params: Mapping[str, float] | None = None, ignore_index: int | None = None,
         derivatives: str = "lossdsl") -> JaxLoss:
    """A lossdsl loss as a JAX function ``f(y_true, y_pred, **inputs)`` (see
    :class:`JaxLoss`). ``reduction`` as :func:`lossdsl.compile` ("none" gives per-sample
    values), ``params`` overrides of param values (also per call, by keyword),
    ``ignore_index`` a label value whose samples count for nothing, ``derivatives`` one of
    :data:`DERIVATIVES`."""
    return JaxLoss(loss, reduction, params, ignore_index, derivatives)
