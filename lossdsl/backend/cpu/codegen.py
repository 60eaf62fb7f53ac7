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

import re
from dataclasses import dataclass

from ...passes.schedule import Schedule
from ..emit import FASTMATH, HELPERS, BodyEmitter, ExpressionPrinter, GluePrinter, Names

# The per-sample math is compiled without fastmath, so losses stay exact where the math is
# finite; the loop drivers get FASTMATH (see emit.py), which lets their accumulations vectorise.
_DECORATOR = 'njit(error_model="numpy", cache=True{extra})'
_DRIVER_DECORATOR = 'njit(fastmath=FASTMATH, error_model="numpy", cache=True{extra})'
# A body is inlined into its loop (LLVM's own inliner gives up on long bodies) and calls the
# vectorisable exp and log of cpu_math, so that the loop vectorises: bce_logits' value and
# gradient went from 12.6 to 2.7 ns per element. Math that only libm does, one element at a
# time, stops vectorisation; a module that calls it keeps plain calls and libm, whose code is
# cheaper to compile (a 40-term loss with tanh: 1.2 s; vectorisable exp and log, 1.7 s; both
# inlined, 3.6 s).
_SCALAR_ONLY = re.compile(r"math\.(?:tanh|sin|cos|tan|erfc?)\(|\*\*"
                          r"|h_(?:lgamma|digamma|trigamma|tetragamma|log_ndtr|ndtr_ratio)\(")


@dataclass
class GeneratedModule:
    """Generated kernel source and the names its ``run`` function takes."""

    source: str
    names: Names


def _indent(lines: list[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


def generate(schedule: Schedule, dtype: str, parallel_axes: frozenset[str],
             header: str) -> GeneratedModule:
    """The source of a module computing ``schedule`` on ``dtype`` ("float32"/"float64"),
    with multi-threaded loops over the axes in ``parallel_axes``."""
    names = Names()
    printer = ExpressionPrinter()
    functions: list[str] = []
    reduction_names: dict[int, str] = {}
    run_lines: list[str] = []
    glue = GluePrinter(names, reduction_names, cast="kit.cast(T, {})")

    bodies = [BodyEmitter(loop, names, printer).emit() for loop in schedule.loops]
    vectorisable = not any(_SCALAR_ONLY.search("\n".join(body.lines)) for body in bodies)
    for number, (loop, body) in enumerate(zip(schedule.loops, bodies)):
        body_name, loop_name = f"body{number}", f"loop{number}"
        returns = body.returns
        body_lines = list(body.lines)
        body_lines.append(f"    return ({', '.join(returns)},)" if returns else "    return")
        functions.append(
            f"@{_DECORATOR.format(extra=', forceinline=True' if vectorisable else '')}\n"
            f"def {body_name}({', '.join(body.arguments)}):\n" + "\n".join(body_lines)
        )
        length = names.length(loop.axis)
        parallel = loop.axis in parallel_axes
        passed = body.arguments[1:]
        accumulators = [f"acc{k}" for k in range(len(returns))]
        driver = [f"@{_DRIVER_DECORATOR.format(extra=', parallel=True' if parallel else '')}",
                  f"def {loop_name}({', '.join([length] + passed)}):"]
        driver += [f"    {acc} = 0.0" for acc in accumulators]
        driver.append(f"    for i in {'prange' if parallel else 'range'}({length}):")
        if returns:
            driver.append(f"        item = {body_name}({', '.join(body.arguments)})")
            driver += [f"        {acc} += item[{k}]" for k, acc in enumerate(accumulators)]
            driver.append(f"    return ({', '.join(accumulators)},)")
        else:
            driver.append(f"        {body_name}({', '.join(body.arguments)})")
        functions.append("\n".join(driver))

        # in run(): scalars this loop reads, then the call
        call_arguments = [glue.scalar_argument(a) if a.startswith("s") else a for a in passed]
        run_lines += glue.take_lines()
        results = [f"r{number}_{k}" for k in range(len(returns))]
        call = f"kit.loop({', '.join([loop_name, str(len(results)), length] + call_arguments)})"
        if results:
            run_lines.append(f"{', '.join(results)}, = {call}")
            for reduction, result in zip(loop.reductions, results):
                reduction_names[id(reduction)] = result
        else:
            run_lines.append(call)

    outputs = [glue.value(o.node) for o in schedule.scalar_outputs]
    run_lines += glue.take_lines()
    run_lines.append(f"return ({', '.join(outputs)},)" if outputs else "return ()")

    run_arguments = names.run_arguments()
    helpers = [f"@{_DECORATOR.format(extra='')}" + HELPERS[h] for h in sorted(printer.helpers)]
    source = "\n".join([
        header,
        *([] if vectorisable else ["import math", ""]),
        "import numpy",
        "from numba import njit, prange",
        "",
        *(["from lossdsl.backend.cpu import libm as math  # libm, vectorisable exp and log"]
          if vectorisable else []),
        "from lossdsl.backend.cpu.runtime import DIRECT",
        "from lossdsl.reference import ELEMENTWISE_NUMPY as OPS",
        "",
        f"T = numpy.{dtype}",
        f"FASTMATH = set({sorted(FASTMATH)!r})",
        *printer.declarations(),
        *glue.declarations(),
        "",
        *[h.rstrip() + "\n" for h in helpers],
        *[f + "\n\n" for f in functions],
        f"def run({', '.join(run_arguments + ['kit=DIRECT'])}):",
        '    with numpy.errstate(all="ignore"):',
        *_indent(run_lines, "        "),
        "",
    ])
    return GeneratedModule(source, names)
