"""CPU code generation: a Numba module with one fused loop per pass of the schedule.

Each loop is a thin driver (``range`` for ``target="cpu"``, ``prange`` for ``"parallel"``)
that calls a serial ``@njit`` body per sample and accumulates the reductions in float64.
Keeping the math out of the ``prange`` loop keeps ``parallel=True`` compile times small.
Only loops over the ``parallel_axes`` (the loss's samples) get ``prange``: every ``prange``
loop costs ~0.3 s of compile time, and a regulariser's parameter vector is short next to the
data, so its loops stay serial.
``run`` is plain Python: it calls the loops in order and does the scalar glue between them,
both through a kit (:mod:`lossdsl.backend.cpu.runtime`), so that :mod:`lossdsl.dask` can run
the same passes chunk by chunk.
"""

from __future__ import annotations

from ...passes.schedule import Loop, Schedule
from ..emit import FASTMATH, Body, BodyEmitter
from ..module import GeneratedModule, ModuleBuilder, indent
from .instructions import INLINE_HELPERS
from .libm import VECTORISED

# The per-sample math is compiled without fastmath, so losses stay exact where the math is
# finite; the loop drivers get FASTMATH (see emit.py), which lets their accumulations vectorise.
# "fastmath=False" is said, not left out: Numba compiles a function that leaves it out with
# the flags of the caller that first calls it, so a body called from its driver had the
# driver's "reassoc" (pseudo_huber's Hessian differed from IEEE evaluation in the last bit on
# 5% of rows), and a helper shared by many kernels had whichever flags its first caller had.
_DECORATOR = 'njit(fastmath=False, error_model="numpy", cache=True{extra})'
_DRIVER_DECORATOR = 'njit(fastmath=FASTMATH, error_model="numpy", cache=True{extra})'
# A body is called from its loop only, never from Python or C: without the CPython and C
# wrappers Numba would build for it, a kernel compiles 10-20% faster (20 losses' value +
# gradient and gradient + Hessian kernels, one process: 14.1-14.4 s -> 11.0-12.5 s). A loop
# keeps the CPython wrapper ``run`` calls it through, not the C one.
_BODY_OPTIONS = ", no_cpython_wrapper=True, no_cfunc_wrapper=True"
# A body is inlined into its loop (LLVM's own inliner gives up on long bodies) and calls the
# vectorisable exp and log of libm.py, so that the loop vectorises: bce_logits' value and
# gradient went from 12.6 to 2.7 ns per element. Math that only libm does, one element at a
# time (an op whose registry record says vectorisable=False), stops vectorisation; a module
# that calls it keeps plain calls and libm, whose code is cheaper to compile (a 40-term loss
# with tanh: 1.2 s; vectorisable exp and log, 1.7 s; both inlined, 3.6 s).

# At most this many expressions calling libm.py's vectorisable functions get them inlined
# and vectorised; a module with more calls libm one element at a time. First value + gradient
# call of k terms of log1p(exp(-|p - k y|)) + tanh(k p) (3 calls a term), vectorised: 10
# terms 1.6 s, 20 terms 2.7 s, 40 terms 9.4 s; with libm, 22 terms 1.9 s, 40 terms 2.6 s.
# The library's losses make at most 10 such calls.
MAX_INLINED_MATH_CALLS = 64

# A parallel loop whose body has row buffers runs over blocks of this many samples, each
# block allocating its own buffers: a thread never shares one, and an allocation is ~100 ns
# against a block's microseconds of work.
ROWS_PER_BLOCK = 256

__all__ = ["CpuModuleBuilder", "GeneratedModule", "generate"]


class CpuBodyEmitter(BodyEmitter):
    """The CPU's loop bodies: sums and maxima over a row accumulate through
    ``vector_math.row_add`` and ``row_max``, which LLVM may split into SIMD lanes although the
    body is compiled without fast-math (sparse_cce_logits over 1,000 classes: twice as fast).
    Measured with ``out=`` arrays: ``row_max`` alone (against a compare and a select) makes
    100 classes x 50,000 rows 35-40% faster and 1,000 classes 20-30%, and costs narrow rows
    (5 classes x 256 rows, gradient + Hessian 19.5 -> 22-23 us; 10 x 4,096 about 15%)."""

    def sum_into(self, total: str, item: str) -> list[str]:
        return [f"{total} = row_add({total}, {item})"]

    def max_into(self, best: str, item: str) -> list[str]:
        return [f"{best} = row_max({best}, {item})"]


class CpuModuleBuilder(ModuleBuilder):
    """A Numba CPU module: an ``@njit`` body per loop, driven by a ``range`` loop, or a
    ``prange`` loop over the axes in ``parallel_axes``; ``run`` calls the loops through a
    kit (:mod:`lossdsl.backend.cpu.runtime`)."""

    target = "cpu"
    glue_cast = "kit.cast(T, {})"

    def __init__(self, schedule: Schedule, dtype: str, parallel_axes: frozenset[str],
                 header: str):
        super().__init__(schedule, dtype, header)
        self.parallel_axes = parallel_axes
        # every body first: whether any calls scalar-only math decides every decorator
        self.bodies = [CpuBodyEmitter(loop, self.names, self.printer, row_buffers=True,
                                      wide_row_sums=True, pair_rows=True).emit()
                       for loop in schedule.loops]
        # Inlined, each call of the vectorisable functions is tens of LLVM instructions that
        # the loop vectoriser works through: a loss with many of them keeps libm (scalar)
        self.vectorisable = self.printer.vectorisable and sum(
            self.printer.math_calls[name] for name in VECTORISED) <= MAX_INLINED_MATH_CALLS

    def imports(self) -> list[str]:
        return [
            *([] if self.vectorisable else ["import math", ""]),
            "import numpy",
            "from numba import njit, prange",
            "",
            *(["from lossdsl.backend.cpu import libm as math  # libm, vectorisable exp and log"]
              if self.vectorisable else []),
            "from lossdsl.backend.cpu.runtime import DIRECT, longest_row",
            "from lossdsl.backend.cpu.vector_math import row_add, row_max",
            *(["from lossdsl.backend.cpu.instructions import inline_helpers"]
              if INLINE_HELPERS.intersection(self.printer.helpers) else []),
            *(["from lossdsl.backend.cpu.helpers import shared_helpers"]
              if set(self.printer.helpers) - INLINE_HELPERS else []),
        ]

    def helper_definitions(self, names: list[str]) -> list[str]:
        """The comparisons, logic, select, min, max and sign as LLVM instructions
        (:mod:`lossdsl.backend.cpu.instructions`); the other helpers from the module every
        CPU kernel of this dtype and ``math`` shares (:mod:`lossdsl.backend.cpu.helpers`):
        compiled once per process, not with each kernel."""
        inline = [name for name in names if name in INLINE_HELPERS]
        shared = [name for name in names if name not in INLINE_HELPERS]
        lines = []
        if inline:
            lines.append("\n".join([f'_inline = inline_helpers("{self.dtype}")',
                                    *(f"h_{name} = _inline.h_{name}" for name in inline)]))
        if shared:
            lines.append("\n".join([
                f'_helpers = shared_helpers("{self.dtype}", {self.vectorisable})',
                *(f"h_{name} = _helpers.h_{name}" for name in shared)]))
        return lines

    def target_constants(self) -> list[str]:
        return [f"FASTMATH = set({sorted(FASTMATH)!r})"]

    def run_parameters(self) -> list[str]:
        return [*super().run_parameters(), "kit=DIRECT"]

    def add_loop(self, number: int, loop: Loop) -> None:
        body = self.bodies[number]
        body_name, loop_name = f"body{number}", f"loop{number}"
        body_decorator = _DECORATOR.format(extra=_BODY_OPTIONS + (", forceinline=True"
                                                                if self.vectorisable else ""))
        self.functions.append(self.function(f"@{body_decorator}", body_name, body))
        length = self.names.length(loop.axis)
        self.functions.append(self._driver(loop_name, body_name, length, body,
                                           parallel=loop.axis in self.parallel_axes))

        # in run(): scalars this loop reads, then the call
        call_arguments = self.loop_arguments(body)
        self.run_lines += self.glue.take_lines()
        results = self.name_reductions(number, loop, len(body.returns))
        call = f"kit.loop({', '.join([loop_name, str(len(results)), length] + call_arguments)})"
        self.run_lines += self.scan_inputs(loop)
        self.run_lines.append(f"{', '.join(results)}, = {call}" if results else call)
        self.run_lines += self.scan_results(loop)

    def _driver(self, name: str, body_name: str, length: str, body: Body,
                parallel: bool) -> str:
        """The loop over the samples that calls the body and sums its results (a ``prange``
        loop when ``parallel``). A body with row buffers gets them allocated once per call,
        or, in parallel, once per block of ``ROWS_PER_BLOCK`` samples: each thread its own."""
        count = len(body.returns)
        decorator = _DRIVER_DECORATOR.format(extra=", no_cfunc_wrapper=True"
                                             + (", parallel=True" if parallel else ""))
        call = f"{body_name}({', '.join(body.parameters)})"
        allocations = [f"{buffer} = numpy.empty({width}, T)" for buffer, width in body.rows]
        # a row's partner sums accumulate in float64, as every row sum does on the CPU
        allocations += [f"{buffer} = numpy.empty({width}, numpy.float64)"
                        for buffer, width in body.pair_rows]
        lines = [f"@{decorator}", f"def {name}({', '.join([length] + body.arguments[1:])}):",
                 *self.accumulators(count)]
        if parallel and (body.rows or body.pair_rows):
            blocks = f"({length} + {ROWS_PER_BLOCK} - 1) // {ROWS_PER_BLOCK}"
            lines += [f"    for block in prange({blocks}):",
                      *indent(allocations, "        "),
                      *(f"        part{j} = {self.accumulator_zero}" for j in range(count)),
                      f"        for i in range(block * {ROWS_PER_BLOCK}, "
                      f"min({length}, (block + 1) * {ROWS_PER_BLOCK})):",
                      *self.accumulate(call, count, "            ", into="part"),
                      *(f"        acc{j} += part{j}" for j in range(count))]
        else:
            lines += [*indent(allocations),
                      f"    for i in {'prange' if parallel else 'range'}({length}):",
                      *self.accumulate(call, count)]
        if count:
            lines.append(f"    return ({', '.join(f'acc{j}' for j in range(count))},)")
        return "\n".join(lines)


def generate(schedule: Schedule, dtype: str, parallel_axes: frozenset[str],
             header: str) -> GeneratedModule:
    """The source of a module computing ``schedule`` on ``dtype`` ("float32"/"float64"),
    with multi-threaded loops over the axes in ``parallel_axes``."""
    return CpuModuleBuilder(schedule, dtype, parallel_axes, header).build()
