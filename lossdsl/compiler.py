"""The compiler driver: the one place the passes are put in order.

A loss definition becomes kernels in two steps. :func:`specialize` types it for the ranks of
its inputs (scalar, vector, (N, K) matrix) and whether sample weights are given, and makes
the objective the reduction asks for: a :class:`Specialization`. :func:`build_kernel` takes a
specialisation and a :class:`KernelRequest` (dtype, target, which outputs) and returns a
:class:`Kernel`: differentiate, optimise (:func:`optimize`: stabilize, simplify, then lower
for code generation), schedule into fused loops, generate the module's source and import it
through the on-disk cache. :func:`generate_source` stops before the import, and
:func:`derivatives` before the lowering (the symbolic gradient and Hessian people read).

Nothing here caches: :class:`~lossdsl.CompiledLoss` keeps the specialisations and kernels it
has built, keyed by what they depend on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from . import cache, cachedir
from ._version import __version__
from .backend.cpu import codegen as cpu
from .domains import Domain, Requirement, declared_at, inside
from .errors import LossDomainError, LossError, at_index
from .ir import verify
from .ir.build import make
from .ir.node import Node, constant, node, rebuild, toposort, walk
from .ops.structural import CLASS_VECTOR
from .passes import diff, shapes
from .passes.lower import lower, share_reciprocals
from .passes.rewrite import apply_phase
from .passes.rules.expand import HELD_CARRIERS
from .passes.schedule import Output, plan
from .passes.simplify import simplify
from .passes.stabilize import stabilize

__all__ = ["COUNT_TOTAL", "WEIGHT_TOTAL", "GeneratedKernel", "Kernel", "KernelRequest",
           "Specialization", "TypedRequirement", "build_kernel", "count_total", "derivatives",
           "generate_source", "module_header", "optimize", "outside_count", "parallel_axes",
           "specialize", "stable_expression", "typed_graph", "unmet_count"]

TARGETS = ("cpu", "parallel", "cuda")

#: The scalar output of a kernel that holds the denominator of a mean whose samples count
#: as ``count_as`` says (see :func:`count_total`): binding refuses a call where it is 0.
COUNT_TOTAL = "count_total"
#: The scalar output of a CUDA kernel that holds the weights' total of a weighted
#: "weighted_mean": binding refuses a call where it is 0 (weights on the device, which the
#: host does not read before the call; host weights are checked before it).
WEIGHT_TOTAL = "weight_total"


@dataclass(frozen=True)
class Specialization:
    """A loss typed for one set of input ranks, and the objective its reduction makes.

    ``objective``: the per-element value and the reduced total (see
    :class:`~lossdsl.passes.shapes.Objective`); ``typed``: every input's typed node (the
    nodes derivatives are taken with respect to); ``shapes``: what typing found (the labels
    read, where each axis's length comes from, fixed ``onehot`` widths).
    """

    objective: shapes.Objective
    typed: Mapping[str, Node]
    shapes: shapes.Specialized
    reduction: str
    ranks: Mapping[str, int]
    weighted: bool
    # the array inputs with a declared domain (``y in {-1, 1}``): every kernel counts the
    # values outside as it reads them (scalar outputs "outside:0", "outside:1", ...)
    checks: tuple[tuple[str, Domain], ...] = ()
    # the def requirements, typed: kernels count where those that read per-sample array
    # inputs are false (scalar outputs "unmet:0", "unmet:1", ...); binding checks the others
    # (params, scalar inputs, per-class vectors and tables) before each run
    requirements: tuple[TypedRequirement, ...] = ()

    @property
    def count_total(self) -> Node | None:
        """The denominator of a mean whose samples count as ``count_as(l, s)`` says, which
        every kernel returns as its scalar output :data:`COUNT_TOTAL` (see
        :func:`count_total`); None where no call can make it 0."""
        return count_total(self.objective)

    def counted_requirements(self) -> tuple[TypedRequirement, ...]:
        """The requirements that read per-sample array inputs: those kernels count."""
        return tuple(c for c in self.requirements
                     if any(self.ranks.get(name, 0) >= 1 for name in c.reads
                            if name not in c.tables))

    @property
    def labels(self) -> list[tuple[Node, str]]:
        """Every label read (an input, a param or a constant) and the axis it indexes."""
        return self.shapes.labels

    @property
    def axis_sources(self) -> dict[str, list[tuple[str, int]]]:
        """For each axis, the ``(input, dimension)`` pairs its length can be read from."""
        return self.shapes.axis_sources

    @property
    def fixed_widths(self) -> dict[str, int]:
        """Class axes of a width the loss fixes (``onehot(y, 3)``)."""
        return self.shapes.fixed_widths

    @property
    def groups(self) -> dict[str, str]:
        """Grouped samples: sample axis (counting the groups) -> the input of group ids."""
        return self.shapes.groups

    @property
    def pairs(self) -> dict[str, str]:
        """Samples paired within groups (``pairsum``): sample axis -> the input of group ids."""
        return self.shapes.pairs


@dataclass(frozen=True)
class TypedRequirement:
    """A def's requirement as a specialisation checks it: its ``condition`` and the
    ``arguments`` its message shows, typed for the inputs' ranks (kernels count those that
    read per-sample array inputs; binding checks the others before the run).

    ``tables``: the per-class vectors and tables the requirement reads (``quantile(y, p,
    classvec(a))``'s ``a``). Its condition then reads each of them whole, as the (1, K) or
    (R, K) table the kernels are given, rather than the row a label selects: every entry is
    checked before the run, whether a label selects its row or not."""

    requirement: Requirement
    condition: Node
    arguments: tuple[Node, ...]
    tables: frozenset[str] = frozenset()
    class_vectors: frozenset[str] = frozenset()  # those of the tables read by classvec

    @functools.cached_property
    def reads(self) -> tuple[str, ...]:
        """The inputs and params the typed condition reads (a table's, not its labels)."""
        return tuple(dict.fromkeys(n.value for n in toposort([self.condition])
                                   if n.op in ("input", "param")))

    def error(self, values: dict[str, Any], index: tuple[int, ...] | None) -> LossDomainError:
        """The requirement's error where it is false (see :meth:`Requirement.error`), at
        ``index`` of the condition's values. Where it reads tables, the index is in them,
        not a sample's (so the error's ``index`` is None, which callers read as a sample's):
        the message names the tables, and for per-class vectors alone the entry of the
        vector (the one row of the (1, K) table the kernels read is left out)."""
        if not self.tables or index is None:
            return self.requirement.error(values, index)
        if len(index) == 2 and self.tables <= self.class_vectors:
            index = index[1:]
        tables = " and ".join(f"'{name}'" for name in sorted(self.tables))
        return self.requirement.error(values, None, f"{at_index(index)} of {tables}")


@dataclass(frozen=True)
class KernelRequest:
    """What one kernel computes, and for which machine.

    ``target``: "cpu", "parallel" or "cuda" (the target the kernel is built for, after any
    fallback the caller applies). ``grads`` and ``hessians`` name the inputs whose gradient
    and diagonal Hessian it writes. ``parallel_axes``: the axes a "parallel" kernel loops over
    with threads; None means :func:`parallel_axes` of the objective.
    """

    dtype: np.dtype
    target: str = "cpu"
    want_value: bool = True
    grads: tuple[str, ...] = ()
    hessians: tuple[str, ...] = ()
    parallel_axes: frozenset[str] | None = None


@dataclass
class Kernel:
    """A generated, imported kernel module.

    ``run(**arguments)`` computes every output in one fused pass: per-element outputs are
    written into the arrays passed for them, scalar outputs are returned in order.
    ``names``: the generated argument names (:class:`~lossdsl.backend.emit.Names`);
    ``loops``: the module's loop functions by name, for callers that run them through their
    own kit (Dask: one task per chunk).
    """

    run: Callable[..., Any]
    names: Any
    source: str
    element_outputs: list[Output]
    scalar_outputs: list[Output]
    labels: list[tuple[Node, str]]  # every label read, and the axis it indexes
    # the declared domains its scalar outputs "outside:<index>" count the values outside of
    checks: tuple[tuple[str, Domain], ...] = ()
    # the requirements whose false elements its scalar outputs "unmet:<index>" count, and
    # those of params and scalar inputs, which binding checks before it runs
    requirements: tuple[TypedRequirement, ...] = ()
    host_requirements: tuple[TypedRequirement, ...] = ()
    loops: dict[str, Callable[..., Any]] = field(default_factory=dict)
    checked: bool = False  # has run once: Numba loaded (or compiled) its machine code
    target: str = "cpu"

    @property
    def outputs(self) -> list[Output]:
        """Every output: the per-element ones, then the scalar ones."""
        return [*self.element_outputs, *self.scalar_outputs]

    def execute(self, arguments: Mapping[str, Any]) -> Any:
        """``run(**arguments)``; on the first call a failure to load the machine code is
        retried once from a fresh cache entry, and any failure is a :class:`LossError`."""
        if self.checked:
            return self.run(**arguments)
        if self.target == "cuda":
            _require_device()
        try:
            result = self.run(**arguments)
        except LossError:
            raise
        except numba.core.errors.TypingError as error:
            # arguments of a type the kernel cannot take: the cached machine code of the
            # types it can take is sound, and stays
            raise LossError(f"internal error: the kernel cannot take these arguments: "
                            f"{str(error).splitlines()[0]}") from error
        except Exception as error:
            # Numba compiles or loads machine code on the first call; a damaged cache entry
            # fails here. Drop it (and the shared helpers it calls, whose machine code may be
            # the damaged part), import the module afresh and try once more. Saving the
            # machine code can fail too (a disk full): then the next try goes to the private
            # directory, as a failed write of the module's source does.
            if isinstance(error, OSError):
                cachedir.abandon(cachedir.cache_dir(), error)
            cache.discard(self.source)
            cache.discard_shared()
            try:
                self._attach(cache.load_module(self.source))
                result = self.run(**arguments)
            except Exception as error:
                raise LossError(f"internal error while compiling the kernel: "
                                f"{type(error).__name__}: {error}") from error
        self.checked = True
        return result

    def _attach(self, module: Any) -> None:
        """Take ``run`` and the loops from an imported kernel module."""
        self.run = module.run
        self.loops = {name: value for name, value in vars(module).items()
                      if name.startswith("loop") and name[4:].isdigit()}


@dataclass(frozen=True)
class GeneratedKernel:
    """A kernel's source, not yet imported, and what binding needs to call it."""

    source: str
    names: Any
    element_outputs: list[Output]
    scalar_outputs: list[Output]
    labels: list[tuple[Node, str]]
    checks: tuple[tuple[str, Domain], ...] = ()
    requirements: tuple[TypedRequirement, ...] = ()
    host_requirements: tuple[TypedRequirement, ...] = ()


def stable_expression(graph: Node) -> Node:
    """``graph`` after the stable rewrites: the loss as the compiler sees it."""
    (stable,) = stabilize([graph])
    return stable


def optimize(nodes: list[Node], *, for_codegen: bool = True,
             differentiated: bool = False) -> list[Node]:
    """The optimisation order, stated once: stable rewrites first (they need the shapes
    the user wrote, such as ``log(1 + exp(x))``), then simplification to a canonical graph,
    then, for code generation, lowering to the operations the backends emit.

    ``differentiated``: the code is differentiated by its framework (the JAX backend), so
    the logistic primitives stay whole (their helpers' derivatives are right at 0, where the
    expanded forms' ``|x|`` has JAX's derivative 0), the values that carry derivatives stay
    (held exact: the held-carriers phase) and only the reciprocals are shared."""
    optimized = simplify(stabilize(nodes))
    if not for_codegen:
        return optimized
    if differentiated:
        return share_reciprocals(apply_phase(HELD_CARRIERS, optimized))
    return lower(optimized)


def specialize(definition: Any, ranks: Mapping[str, int], weighted: bool, reduction: str,
               ignore_index: int | None = None) -> Specialization:
    """Type ``definition`` (a :class:`~lossdsl.frontend.resolve.LossDefinition`) for inputs
    of ``ranks`` and make its objective for ``reduction`` (weighted or not)."""
    typed_shapes = shapes.specialize(
        definition.graph, dict(ranks), definition.inputs, definition.input_spans,
        rows=definition.rows,
        conditions=tuple(requirement.condition for requirement in definition.requirements))
    verify.check(typed_shapes.graph)  # each stage's graph, under LOSSDSL_VERIFY_IR=1
    graph = stable_expression(typed_shapes.graph)
    verify.check(graph)
    objective = shapes.objective(graph, reduction, weighted, ignore_index, typed_shapes.labels,
                                 shapes.group_id_nodes(typed_shapes))
    verify.check([objective.value, objective.total])
    typed = {n.value: n for n in walk(objective.total) if n.op == "input"}
    for name in definition.inputs:  # inputs that do not affect the total
        typed.setdefault(name, node("input", (), name, typed_shapes.input_axes.get(name, ())))
    checks = tuple(dict.fromkeys((d.name, d.domain) for d in definition.domains
                                 if ranks.get(d.name, 0) >= 1))
    requirements = tuple(_typed_requirement(r, typed, ranks) for r in definition.requirements)
    return Specialization(objective, typed, typed_shapes, reduction, dict(ranks), weighted,
                          checks, requirements)


def count_total(objective: shapes.Objective) -> Node | None:
    """The denominator of ``objective``'s mean where ``count_as(l, s)`` gives it (its
    ``count_total``: ``sum(s)`` over the samples kept, times the classes of a matrix loss,
    or ``sum(w*s)`` for a weighted ``"weighted_mean"``); None without count_as, for a
    reduction that divides by nothing ("sum", "none"), and for counts of numbers alone
    (``count_as(l, 2)``: the denominator is ``2*N``).

    Counts that total 0 (every sample's class weight 0) make the mean 0/0 and its
    gradients NaN or infinite, so every kernel returns this node (:data:`COUNT_TOTAL`) and
    binding refuses the call where it is 0 or not finite, as it refuses sample weights that
    total 0. It is the objective's own denominator, which the kernels compute once."""
    denominator = objective.count_total
    if denominator is None \
            or not any(n.op in ("input", "param") for n in toposort([denominator])):
        return None
    return denominator


def _typed_requirement(requirement: Requirement, typed: Mapping[str, Node],
                       ranks: Mapping[str, int]) -> TypedRequirement:
    """``requirement`` typed for the inputs ``typed`` of ``ranks``. Where it reads a
    per-class vector or a table (``classvec(a)``, ``rowof(C, y)``), it is made to read the
    table whole: a row looked up per sample would need the kernels' typing of the lookup,
    and a table is small, so binding checks every entry before each call."""
    graphs = [requirement.condition, *(bound for _, bound in requirement.arguments)]
    lookups = [n for n in toposort(graphs) if n.op == "table_row"]
    tables = frozenset(n.args[0].value for n in lookups)
    class_vectors = frozenset(n.args[0].value for n in lookups if n.value == CLASS_VECTOR)
    if tables:
        graphs = _whole_tables(graphs)
        per_sample = [n.value for n in toposort(graphs[:1]) if n.op == "input"
                      and n.value not in tables and ranks.get(n.value, 0) >= 1]
        if per_sample:
            # a table's entry combined with a sample's value: checking the table whole
            # would test combinations no sample makes, and the kernels cannot type it
            declared = declared_at(requirement.declared)
            raise LossError(
                f"{requirement.function} requires {requirement.text}"
                f"{f' (declared{declared})' if declared else ''}, and this call computes it "
                f"from the per-class vector or table {', '.join(repr(t) for t in sorted(tables))} "
                f"together with the per-sample input '{per_sample[0]}', which lossdsl "
                "cannot check at each call: compute the argument beforehand and pass it as "
                "an input", requirement.called)
    condition, *arguments = (typed_graph(graph, typed) for graph in graphs)
    return TypedRequirement(requirement, condition, tuple(arguments), tables, class_vectors)


def _whole_tables(graphs: list[Node]) -> list[Node]:
    """``graphs`` with each lookup ``table_row(C, y)`` replaced by the table ``C`` itself
    (an untyped input, which :func:`typed_graph` types as the kernels' (R, K) table)."""
    def replaced(current: Node, arguments: tuple[Node, ...]) -> Node:
        if current.op == "table_row":
            return node("input", (), arguments[0].value, None)
        return make(current.op, arguments, current.value) if arguments else current

    return list(rebuild(graphs, replaced))


def typed_graph(graph: Node, typed: Mapping[str, Node]) -> Node:
    """``graph`` of elementwise operations and row sums rebuilt on the ``typed`` inputs (a
    requirement's condition, made after the loss was typed)."""
    def retyped(current: Node, arguments: tuple[Node, ...]) -> Node:
        if current.op == "input":
            return typed.get(current.value, current)
        return make(current.op, arguments, current.value) if arguments else current

    (result,) = rebuild([graph], retyped)
    return result


def unmet_count(condition: Node) -> Node:
    """How many elements of the arrays ``condition`` reads make it false (NaN included);
    for a condition of params and numbers, 1 if it is false."""
    unmet = make("not", (condition,))
    if not unmet.axes:
        return make("where", (unmet, constant(1.0), constant(0.0)))
    return _count(unmet)


def _count(flags: Node) -> Node:
    """The number of true elements of ``flags``, summed over every axis."""
    count = make("where", (flags, constant(1.0), constant(0.0)))
    while len(count.axes) > 1:
        count = make("rowsum", (count,))
    return make("sum", (count,))


def outside_count(x: Node, domain: Domain) -> Node:
    """How many values of the array input ``x`` are outside ``domain`` (NaN included): a
    sum the kernel computes while it reads ``x`` anyway, instead of a pass of its own."""
    condition = inside(x, domain)
    return _count(condition.args[0] if condition.op == "not" else make("not", (condition,)))


def derivatives(spec: Specialization, wrt: str, order: int = 1) -> tuple[Node, ...]:
    """The optimised symbolic derivatives of the total with respect to input ``wrt``, up to
    ``order``: ``(gradient,)`` or ``(gradient, Hessian diagonal)``; ``str()`` of each is
    readable loss-language source."""
    if order not in (1, 2):
        raise LossError("derivative order must be 1 (gradient) or 2 (Hessian diagonal)")
    total, x = spec.objective.total, spec.typed[wrt]
    gradient = diff.grad(total, x)
    wanted = [gradient] if order == 1 else [gradient, diff.hessian_diag(total, x, gradient)]
    verify.check(wanted)
    optimized = optimize(wanted, for_codegen=False)
    verify.check(optimized)
    return tuple(optimized)


def parallel_axes(objective: shapes.Objective) -> frozenset[str]:
    """Axes looped over by threads for target="parallel": the loss's samples, or every
    reduced axis for a loss that reduces over samples itself (Dice)."""
    if objective.sample_axis is not None:
        return frozenset({objective.sample_axis})
    return frozenset(n.args[0].axes[0] for n in walk(objective.total)
                     if n.op == "sum" and n.args[0].axes)


def generate_source(spec: Specialization, request: KernelRequest) -> GeneratedKernel:
    """Differentiate, optimise, schedule and generate one kernel's module source."""
    if request.target not in TARGETS:
        raise LossError(f"unknown target {request.target!r}; expected one of "
                        f"{', '.join(TARGETS)}")
    objective, typed = spec.objective, spec.typed
    outputs: list[Output] = []
    if request.want_value:
        outputs.append(Output("value", objective.value, objective.value.axes))
    gradients = {}
    for name in request.grads:
        gradients[name] = diff.grad(objective.total, typed[name])
        outputs.append(Output(f"grad:{name}", gradients[name], typed[name].axes))
    for name in request.hessians:
        gradient = gradients.get(name) or diff.grad(objective.total, typed[name])
        hessian = diff.hessian_diag(objective.total, typed[name], gradient)
        outputs.append(Output(f"hess:{name}", hessian, typed[name].axes))
    for index, (name, domain) in enumerate(spec.checks):
        outputs.append(Output(f"outside:{index}", outside_count(typed[name], domain), ()))
    counted = spec.counted_requirements()
    for index, requirement in enumerate(counted):
        outputs.append(Output(f"unmet:{index}", unmet_count(requirement.condition), ()))
    if spec.count_total is not None:
        outputs.append(Output(COUNT_TOTAL, spec.count_total, ()))
    if request.target == "cuda" and spec.objective.weight_total is not None:
        outputs.append(Output(WEIGHT_TOTAL, spec.objective.weight_total, ()))
    verify.check([o.node for o in outputs])
    nodes = optimize([o.node for o in outputs])
    verify.check(nodes)
    schedule = plan([Output(o.name, n, o.axes) for o, n in zip(outputs, nodes)])
    header = module_header(request.target, spec.reduction)
    dtype = np.dtype(request.dtype).name
    if request.target == "cuda":
        from .backend.cuda import codegen as cuda

        generated = cuda.generate(schedule, dtype, header)
    else:
        threaded = frozenset()
        if request.target == "parallel":
            threaded = (parallel_axes(objective) if request.parallel_axes is None
                        else request.parallel_axes)
        generated = cpu.generate(schedule, dtype, threaded, header)
    element_outputs = [o for loop in schedule.loops for o in loop.outputs]
    return GeneratedKernel(generated.source, generated.names, element_outputs,
                           list(schedule.scalar_outputs), spec.labels, spec.checks,
                           counted, tuple(c for c in spec.requirements if c not in counted))


def _require_device() -> None:
    """Refuse to run a CUDA kernel where no GPU can run it, saying so (building and printing
    one needs none: ``lossdsl codegen --target cuda``). Without this the first call failed as
    an internal error, after dropping the cache entries it suspected."""
    from .backend.cuda import runtime as cuda_runtime

    missing = cuda_runtime.missing_device()
    if missing is not None:
        raise LossError(f"target='cuda' needs an NVIDIA GPU that Numba can use, and there is "
                        f"none here ({missing}); use target='cpu' or 'parallel', or "
                        "NUMBA_ENABLE_CUDASIM=1 to try the CUDA kernels in Numba's simulator "
                        "(slow)")


def build_kernel(spec: Specialization, request: KernelRequest) -> Kernel:
    """Generate one kernel (:func:`generate_source`) and import it through the cache."""
    generated = generate_source(spec, request)
    kernel = Kernel(None, generated.names, generated.source, generated.element_outputs,
                    generated.scalar_outputs, generated.labels, generated.checks,
                    generated.requirements, generated.host_requirements,
                    target=request.target)
    kernel._attach(cache.load_module(generated.source))
    return kernel


def module_header(target: str, reduction: str) -> str:
    """The first line of a generated module: what made it, for whom, and not to edit it."""
    return (f"# Generated by lossdsl {__version__} (target={target}, "
            f"reduction={reduction}). Do not edit: this file is a cache entry.")

