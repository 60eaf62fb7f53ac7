"""The generated module's skeleton, shared by the CPU and CUDA targets.

Every generated module has the same parts, in this order:

* the header (a comment naming the target and reduction),
* imports: the standard and third-party modules, then the lossdsl run-time modules and the
  NumPy operations of the scalar glue (``OPS``),
* module constants: ``T`` (the kernel's dtype), the target's own constants, the typed literals
  (``K<k>``), launch constants, and the glue's NumPy operations (``op_<name>``),
* the helper functions the bodies call (``h_<name>``), the target's support functions,
* per loop of the schedule: the per-sample body and the loop (or kernel) that runs it,
* ``run``: the host function that calls the loops in order, with the scalar glue between
  them, inside ``numpy.errstate(all="ignore")`` where that glue can meet a floating-point
  exception (:meth:`ModuleBuilder.run_may_warn`).

:class:`ModuleBuilder` assembles these parts; a target subclass (``CpuModuleBuilder`` in
:mod:`lossdsl.backend.cpu.codegen`, ``CudaModuleBuilder`` in :mod:`lossdsl.backend.cuda.codegen`)
supplies only what differs: its imports and constants, the decorators, the loops around the
bodies and how ``run`` launches them (as tinygrad's ``CStyleLanguage`` and ``CUDARenderer``).
The imports are the cache-compatibility contract: a cached module keeps calling the run-time
names it was generated with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ..ir import verify
from ..ir.node import Node
from ..ops.scans import GROUP_SCANS
from ..passes.schedule import Loop, Schedule
from .emit import (
    HELPERS,
    Body,
    ExpressionPrinter,
    GluePrinter,
    Names,
    glue_number,
    read_as_given,
    scan_buffers,
)

#: What the glue of every target imports for its NumPy operations.
GLUE_OPERATIONS_IMPORT = "from lossdsl.reference import GLUE_OPERATIONS as OPS"


@dataclass
class GeneratedModule:
    """Generated kernel source and the names its ``run`` function takes."""

    source: str
    names: Names


def indent(lines: Sequence[str], by: str = "    ") -> list[str]:
    """``lines``, each prefixed with ``by``."""
    return [by + line for line in lines]


def tuple_literal(items: Sequence[str]) -> str:
    """Python source of a tuple of ``items``: ``(a,)``, ``(a, b,)`` or ``()``."""
    return f"({', '.join(items)},)" if items else "()"


class ModuleBuilder(ABC):
    """Builds the source of one generated module for a schedule; subclassed per target.

    A subclass implements :meth:`add_loop` (the functions of one loop of the schedule and the
    lines of ``run`` that launch it) and the hooks that name its imports, constants,
    decorators and the parts of ``run`` around the launches. :meth:`build` does the rest.
    """

    #: The target whose kernel templates the expressions are printed from ("cpu", "cuda").
    target: str
    #: The decorator line of the helper functions (``h_<name>``) the bodies call, for the
    #: default :meth:`helper_definitions` (a target that imports them has none).
    helper_decorator: str
    #: How a glue value becomes a kernel scalar (``{}`` is the float64 value's source).
    glue_cast: str = "T({})"
    #: The source of a float64 zero, where a loop starts each accumulator.
    accumulator_zero: str = "0.0"

    def __init__(self, schedule: Schedule, dtype: str, header: str):
        verify.check_schedule(schedule)  # only under LOSSDSL_VERIFY_IR=1
        self.schedule = schedule
        self.dtype = dtype
        self.header = header
        self.names = Names()
        self.printer = ExpressionPrinter(self.target)
        self.functions: list[str] = []
        self.reduction_names: dict[int, str] = {}  # id of a sum node -> its name in run
        self.run_lines: list[str] = []  # run's statements (see quieted)
        self.glue = GluePrinter(self.names, self.reduction_names, cast=self.glue_cast)
        self.allocated: set[str] = set()  # the scan buffers run allocates
        self.orders: dict[tuple[str, str], str] = {}  # (keys, strata) -> its order in run
        self.run_indexes: set[str] = set()  # the run indexes of group totals run has read

    # ------------------------------------------------------------------- the target's parts

    @abstractmethod
    def add_loop(self, number: int, loop: Loop) -> None:
        """Add the functions of pass ``number`` (``loop``) and the ``run`` lines launching it."""

    @abstractmethod
    def imports(self) -> list[str]:
        """The import lines before the glue's (the standard and third-party modules, then
        the lossdsl run-time modules)."""

    def target_constants(self) -> list[str]:
        """Module constants of the target, after ``T`` and before the typed literals."""
        return []

    def launch_constants(self) -> list[str]:
        """Module constants of the target after the typed literals."""
        return []

    def math_namespace(self) -> list[str]:
        """Lines binding ``math`` where the imports do not (the first module constants)."""
        return []

    def support_functions(self) -> list[str]:
        """Functions of the target that the loops call, emitted after the helpers."""
        return []

    def run_parameters(self) -> list[str]:
        """The parameters of ``run``: the kernel's arguments (:meth:`Names.run_arguments`)."""
        return self.names.run_arguments()

    def run_decorators(self) -> list[str]:
        """Decorator lines above ``def run``."""
        return []

    def run_prologue(self) -> list[str]:
        """Statements of ``run`` before the ``numpy.errstate`` block (one level deep)."""
        return []

    def run_may_warn(self) -> bool:
        """Whether ``run``'s own statements can meet a floating-point exception NumPy warns
        of: scalar glue, cumulative sums, a cast to float32. A ``run`` that only calls loops
        skips the ``numpy.errstate`` block, a microsecond of a small call (a boosting round's
        gradient and Hessian; a summed loss's value and gradient). A loop's sums are not
        such statements: the compiled loop adds them without NumPy, and ``kit.loop`` makes
        float64 scalars of its floats; the chunked kit (:mod:`lossdsl.dask`) adds its
        partial sums at compute time, after ``run`` has returned, so it silences them
        itself."""
        return bool(self.glue.ops or self.orders
                    or self.glue.converted and self.dtype != "float64")

    def quieted(self, statements: list[str]) -> list[str]:
        """``statements`` as ``run``'s body: inside ``numpy.errstate(all="ignore")`` where
        :meth:`run_may_warn`, so that the glue's NaN and inf stay silent, as the loops' do."""
        if not self.run_may_warn():
            return indent(statements)
        return ['    with numpy.errstate(all="ignore"):', *indent(statements, "        ")]

    def run_end(self, results: str) -> tuple[list[str], list[str]]:
        """The lines that end ``run``, given the source of its ``results`` tuple: statements
        ending the ``numpy.errstate`` block (indented by the builder) and lines after the
        block (indented as they stand)."""
        return [f"return {results}"], []

    def device_argument(self, argument: str) -> str:
        """What ``run`` passes for a body's array or output argument ``argument``."""
        return argument

    def reduction_value(self, result: str) -> str:
        """How the glue reads the reduction ``run`` named ``result``."""
        return result

    # ---------------------------------------------------------------------- shared pieces

    def function(self, decorator: str, name: str, body: Body,
                 prologue: Sequence[str] = ()) -> str:
        """A body as a function: ``decorator``, its statements after ``prologue``, returning
        its sums as a tuple (or nothing)."""
        lines = [*prologue, *body.lines]
        returns = body.returns
        lines.append(f"    return {tuple_literal(returns)}" if returns else "    return")
        return f"{decorator}\ndef {name}({', '.join(body.parameters)}):\n" + "\n".join(lines)

    def accumulators(self, count: int) -> list[str]:
        """The first statements of a loop summing ``count`` results: one float64 per sum."""
        return [f"    acc{j} = {self.accumulator_zero}" for j in range(count)]

    @staticmethod
    def accumulate(call: str, count: int, by: str = "        ",
                   into: str = "acc") -> list[str]:
        """The statements of a loop step: ``call`` a body and add its ``count`` sums (to
        ``into<j>``)."""
        if not count:
            return [f"{by}{call}"]
        return [f"{by}item = {call}", *(f"{by}{into}{j} += item[{j}]" for j in range(count))]

    def loop_arguments(self, body: Body) -> list[str]:
        """What ``run`` passes for ``body``'s arguments after ``i``: each scalar as the glue
        computes it, in the kernel's dtype (its statements go to ``run`` first), each array
        as :meth:`device_argument` names it."""
        passed = []
        for argument in body.arguments[1:]:
            if argument.startswith("s"):  # a scalar: a param, or glue over earlier reductions
                passed.append(self.glue.scalar_argument(argument))
            elif argument.startswith(("a", "o")):
                passed.append(self.device_argument(argument))
            else:
                passed.append(argument)
        return passed

    def scan_buffer(self, length: str, dtype: str = "numpy.float64") -> str:
        """The source allocating an array of ``length`` samples in ``run`` (float64, or the
        kernel's dtype ``T``); ``length`` may be the source of a shape, ``(n0, w0)``."""
        return f"numpy.empty({length}, {dtype})"

    def order_call(self, keys: str, strata: str) -> str:
        """The source of ``run``'s call sorting the samples by the array ``keys`` within
        ``strata`` (an array, or a number: one stratum) (:func:`lossdsl.ops.scans.key_order`)."""
        return f"kit.order({keys}, {strata})"

    def scan_call(self, name: str, values: str, order: str) -> str:
        """The source of ``run``'s call computing cumulative sum ``name`` of the array
        ``values`` in ``order`` (:meth:`lossdsl.ops.scans.KeyOrder.scan`)."""
        return f'kit.scan("{name}", {values}, {order})'

    def group_table_call(self, values: str, order: str) -> str:
        """The source of ``run``'s call computing the table of the totals of ``values`` over
        the groups of ``order``, one row per group
        (:meth:`lossdsl.ops.scans.KeyOrder.group_table`)."""
        return f"kit.group_table({values}, {order})"

    def run_index_call(self, order: str) -> str:
        """The source of ``run``'s call giving each sample's row of the group tables of
        ``order`` (:attr:`lossdsl.ops.scans.KeyOrder.run_of_sample`)."""
        return f"kit.run_index({order})"

    def scan_operand(self, role: str, argument: Node) -> str:
        """What ``run`` passes to a cumulative sum for its summands, keys or strata
        ``argument``: a number, the input array itself
        (:func:`~lossdsl.backend.emit.read_as_given`), or the buffer a loop wrote it to."""
        if argument.op == "const" and role != "keys":
            return glue_number(argument.value)
        if read_as_given(argument):
            return self.names.array(argument.value)
        return self.names.buffer(role, argument)

    @staticmethod
    def writes_nothing(loop: Loop) -> bool:
        """Whether ``loop`` has nothing to compute: no sums or outputs, and cumulative sums
        of inputs and numbers only, which ``run`` passes to them as they are."""
        return not (loop.reductions or loop.outputs
                    or any(scan_buffers(scan) for scan in loop.scans))

    def scan_inputs(self, loop: Loop) -> list[str]:
        """``run``'s lines before ``loop``: the arrays it writes the summands and keys of its
        cumulative sums into."""
        length = self.names.length(loop.axis)
        lines = []
        for scan in loop.scans:
            for role, argument in scan_buffers(scan):
                name = self.names.buffer(role, argument)
                if name not in self.allocated:
                    self.allocated.add(name)
                    # a cumulative sum's summands are summed in float64; a value stored for
                    # the partners is read back as it was computed
                    dtype = "T" if scan.op == "at_partner" else "numpy.float64"
                    # a group's total of rows (N, K) sums each class's column
                    shape = (length if len(argument.axes) < 2
                             else f"({length}, {self.names.width(argument.axes[1])})")
                    lines.append(f"{name} = {self.scan_buffer(shape, dtype)}")
        return lines

    def scan_results(self, loop: Loop) -> list[str]:
        """``run``'s lines after ``loop``: the order of the keys it wrote (the first time
        they are written: a later loop writes the same keys again), then its cumulative sums,
        for the loops after it."""
        lines = []
        for scan in loop.scans:
            if scan.op == "at_partner":  # the values as stored: later loops read them
                lines.append(f"{self.names.buffer('scan', scan)} = "
                             f"{self.names.buffer('values', scan.args[0])}")
                continue
            values, keys, strata = scan.args
            by = (self.scan_operand("keys", keys), self.scan_operand("strata", strata))
            if by not in self.orders:
                name = f"order_{'_'.join(part for part in by if part[0] in 'ab')}"
                if name in self.orders.values():  # the same keys in another constant stratum
                    name += f"_{len(self.orders)}"
                self.orders[by] = name
                lines.append(f"{name} = {self.order_call(*by)}")
            order = self.orders[by]
            result = self.names.buffer("scan", scan)
            summands = self.scan_operand("values", values)
            if scan.op not in GROUP_SCANS:
                lines.append(f"{result} = {self.scan_call(scan.op, summands, order)}")
                continue
            # a group's totals: a table of one row per group, which later loops read at
            # each sample's row (an (N, K) array of every sample's total would be written
            # and read again by every pass)
            lines.append(f"{result} = {self.group_table_call(summands, order)}")
            runs = self.names.run_index(scan)
            if runs not in self.run_indexes:
                self.run_indexes.add(runs)
                lines.append(f"{runs} = {self.run_index_call(order)}")
        return lines

    def name_reductions(self, number: int, loop: Loop, count: int) -> list[str]:
        """The names ``run`` gives the ``count`` sums of pass ``number``, which the glue of
        later passes and the scalar outputs then reads."""
        results = [f"r{number}_{j}" for j in range(count)]
        for reduction, result in zip(loop.reductions, results):
            self.reduction_names[id(reduction)] = self.reduction_value(result)
        return results

    # ---------------------------------------------------------------------------- assembly

    def helper_definitions(self, names: list[str]) -> list[str]:
        """Module-level code giving the bodies the registry helpers ``names`` (``h_<name>``):
        here their definitions, decorated for the target."""
        return [self.helper_decorator + HELPERS[h] for h in names]

    def build(self) -> GeneratedModule:
        """The module's source and the names of ``run``'s arguments."""
        for number, loop in enumerate(self.schedule.loops):
            if self.writes_nothing(loop):  # its cumulative sums read inputs as they are
                self.run_lines += self.scan_results(loop)
                continue
            self.add_loop(number, loop)
        outputs = [self.glue.value(o.node) for o in self.schedule.scalar_outputs]
        self.run_lines += self.glue.take_lines()
        inside, after = self.run_end(tuple_literal(outputs))
        helpers = self.helper_definitions(sorted(self.printer.helpers))
        source = "\n".join([
            self.header,
            *self.imports(),
            GLUE_OPERATIONS_IMPORT,
            "",
            *self.math_namespace(),
            f"T = numpy.{self.dtype}",
            *self.target_constants(),
            *self.printer.declarations(),
            *self.launch_constants(),
            *self.glue.declarations(),
            "",
            *[h.rstrip() + "\n" for h in helpers],
            *self.support_functions(),
            *[f + "\n\n" for f in self.functions],
            *self.run_decorators(),
            f"def run({', '.join(self.run_parameters())}):",
            *indent(self.run_prologue()),
            *self.quieted([*self.run_lines, *inside]),
            *after,
            "",
        ])
        return GeneratedModule(source, self.names)
