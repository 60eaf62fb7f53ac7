"""CUDA code generation: Numba CUDA kernels for the passes of a schedule.

The per-sample math is the target-independent body of :mod:`lossdsl.backend.emit`, compiled
as a ``@cuda.jit(device=True)`` function (helpers too); this module only adds the kernels
around it and the host-side ``run``. Per loop of the schedule:

* ``loop<k>``: a grid-stride kernel, one sample per thread per step (its class rows, if any,
  walked by the body's ``for k`` loops: one row per thread). Reductions are accumulated in
  float64 per thread (as the CPU target does), combined by a tree in shared memory, and each
  block's sums stored in its row of a partials buffer, which ``run`` fetches and adds up on
  the host: no atomics, so no buffer to zero before the launch, and the same sum from run to
  run.
* ``rows<k>`` (loops over class rows only): the block-per-row variant for wide rows. The
  body is emitted again with its class loops split over the block's threads and each row
  reduction (``rowsum``, ``rowmax``: logsumexp, softmax) finished by a block reduction in
  shared memory; ``run`` picks it when the rows are at least ``rt.ROW_BLOCK_MIN_WIDTH`` wide.

``run`` copies NumPy inputs to the device (device arrays are used in place), launches the
passes in order (a Dice-style loss's inner sums are fetched after their pass, combined on the
host by the same scalar glue as the CPU target, and passed to the next pass), and copies
per-element results back into NumPy outputs.

Each ``cuda.shared.array`` call sits on its own line: the simulator identifies shared
arrays by source line.
"""

from __future__ import annotations

from ...ir.node import Node
from ...passes.schedule import Loop, Schedule
from ..emit import Body, BodyEmitter, pick_parts
from ..module import GeneratedModule, ModuleBuilder, indent

_DEVICE = "@cuda.jit(device=True)"
_KERNEL = "@cuda.jit(cache=True)"
#: Samples whose inputs a thread of an elementwise kernel reads before computing any of them
#: (see ``CudaModuleBuilder.unrolled_kernel_loop``): enough bytes in flight to keep the memory
#: busy.
UNROLL = 4
# Sums reduced at once in shared memory: 8 x 256 threads x 8 bytes = 16 KiB of the 48 KiB
# a block may have; a pass with more sums reduces them in groups.
_SHARED_SUMS = 8

# A block reduction of the block-per-row bodies: a tree over the block's threads in shared
# memory, whose combine step is the reduction's own. The leading syncthreads makes every
# thread finish reading the previous reduction's result before the scratch is reused.
_BLOCK_REDUCE = """{decorator}
def block_{name}(scratch, x):
    thread = cuda.threadIdx.x
    cuda.syncthreads()
    scratch[thread] = x
    cuda.syncthreads()
    step = ROW_THREADS // 2
    while step > 0:
        if thread < step:
{combine}
        cuda.syncthreads()
        step //= 2
    return scratch[0]
"""
# The combine step of each row reduction: scratch[thread] takes in scratch[thread + step]
# (rowmax as the CPU's: NaN wins, like numpy.max).
_BLOCK_COMBINE = {
    "rowsum": ("sum", ["scratch[thread] += scratch[thread + step]"]),
    "rowmax": ("max", ["other = scratch[thread + step]",
                       "if other > scratch[thread] or other != other:",
                       "    scratch[thread] = other"]),
}


def block_reductions() -> str:
    """The source of the block reductions (``block_sum``, ``block_max``), one template."""
    functions = [_BLOCK_REDUCE.format(decorator=_DEVICE, name=name,
                                      combine="\n".join(indent(combine, " " * 12)))
                 for name, combine in _BLOCK_COMBINE.values()]
    return "\n" + "\n\n".join(functions)


class BlockRowEmitter(BodyEmitter):
    """A loop body for the block-per-row kernels: the block's threads share row ``i``.

    Each thread takes every ``ROW_THREADS``-th class; a row reduction's per-thread partial is
    combined by ``block_sum``/``block_max``, so every thread then holds the row's value and
    the per-sample math after it runs identically on all of them.
    """

    def class_loop(self, start: str, stop: str) -> str:
        first = "cuda.threadIdx.x" if start == "0" else f"{start} + cuda.threadIdx.x"
        return f"for k in range({first}, {stop}, ROW_THREADS):"

    def column_loop(self, variable: str, width: str) -> str:
        return f"for {variable} in range(cuda.threadIdx.x, {width}, ROW_THREADS):"

    def combine_row_sums(self, names: list[str], indent: str) -> None:
        for sum_name in names:
            self.lines.append(f"{indent}{sum_name} = block_sum(scratch, {sum_name})")

    def combine_row_maxima(self, names: list[str], indent: str) -> None:
        for maximum in names:
            self.lines.append(f"{indent}{maximum} = block_max(scratch, {maximum})")

    def _emit_row_reduction(self, n: Node, name: str, indent: str) -> list[tuple[Node, str]]:
        emitted = super()._emit_row_reduction(n, name, indent)
        if pick_parts(n) is None:  # a pick reads one column: no loop, nothing to combine
            for m, m_name in emitted:
                combine, _ = _BLOCK_COMBINE[m.op]
                self.lines.append(f"{indent}{m_name} = block_{combine}(scratch, {m_name})")
        return emitted


def _sample_reads(body: Body) -> list[str] | None:
    """The arrays ``body`` reads at ``[i]`` alone (one value per sample, each read once), or
    None when it reads any array otherwise (class rows, tables, labels picking a column)."""
    arrays = [a for a in body.arguments[1:] if a.startswith("a")]
    text = "\n".join(body.lines)
    for array in arrays:
        if text.count(f"{array}[") != 1 or text.count(f"T({array}[i])") != 1:
            return None
    return arrays


def _prefetching_body(body: Body, reads: list[str]) -> Body:
    """``body`` taking the values it reads at ``[i]`` as arguments (``x_<array>``) instead of
    reading them, so that the kernel can issue the reads of several samples at once."""
    lines = list(body.lines)
    for array in reads:
        lines = [line.replace(f"T({array}[i])", f"T(x_{array})") for line in lines]
    kept = [a for a in body.arguments[1:] if a not in reads]
    return Body(["i", *(f"x_{a}" for a in reads), *kept], lines, body.returns)


class CudaModuleBuilder(ModuleBuilder):
    """A Numba CUDA module: per loop a device body, a grid-stride kernel and, for loops over
    class rows, a block-per-row kernel; ``run`` moves the data and launches them."""

    target = "cuda"
    helper_decorator = _DEVICE
    accumulator_zero = "F64(0.0)"

    def __init__(self, schedule: Schedule, dtype: str, header: str):
        super().__init__(schedule, dtype, header)
        self.block_rows_used = False
        # the input arrays some kernel reads: run copies only those to the device (group ids
        # that only order the samples are sorted where they are, on the host)
        self.kernel_inputs: set[str] = set()

    def imports(self) -> list[str]:
        return [
            "import numpy",
            "from numba import cuda, types",
            "",
            "from lossdsl.backend.cuda import runtime as rt",
        ]

    def math_namespace(self) -> list[str]:
        return ["math = rt.MATH  # the math module (an IEEE stand-in under the simulator)"]

    def target_constants(self) -> list[str]:
        return ["F64 = numpy.float64"]

    def launch_constants(self) -> list[str]:
        return ["THREADS = rt.THREADS", "ROW_THREADS = rt.ROW_THREADS", f"UNROLL = {UNROLL}"]

    def support_functions(self) -> list[str]:
        return [block_reductions()] if self.block_rows_used else []

    def run_decorators(self) -> list[str]:
        return ["@rt.in_context"]

    def run_prologue(self) -> list[str]:
        """Copy NumPy inputs that a kernel reads to the device, make device outputs (device
        arrays in place)."""
        transfers = [f"dev_{a} = rt.to_device({a})" for a in self.names.arrays.values()
                     if a in self.kernel_inputs]
        transfers += [f"dev_{o}, host_{o} = rt.output({o})" for o in self.names.outputs.values()]
        return transfers

    def run_may_warn(self) -> bool:
        """Whenever ``run`` has statements: the host work around the launches (transfers,
        host-side sums) stays inside ``numpy.errstate``. A kernel whose outputs are all
        constants (a summed loss that is identically 0, as ``s - stop_gradient(s)``'s value)
        launches nothing and only returns them: an empty ``with`` block is not Python."""
        return bool(self.run_lines)

    def run_end(self, results: str) -> tuple[list[str], list[str]]:
        copies = ", ".join(f"(dev_{o}, host_{o})" for o in self.names.outputs.values())
        return [], [f"    rt.copy_back(({copies},))" if copies else "", f"    return {results}"]

    def device_argument(self, argument: str) -> str:
        return f"dev_{argument}"

    def scan_buffer(self, length: str, dtype: str = "numpy.float64") -> str:
        return f"rt.scan_buffer({length}, {dtype})"

    def order_call(self, keys: str, strata: str) -> str:
        return f"rt.order({keys}, {strata})"

    def scan_call(self, name: str, values: str, order: str) -> str:
        return f'rt.scan("{name}", {values}, {order})'

    def group_table_call(self, values: str, order: str) -> str:
        return f"rt.group_table({values}, {order})"

    def run_index_call(self, order: str) -> str:
        return f"rt.run_index({order})"

    def reduction_value(self, result: str) -> str:
        return f"numpy.float64({result})"  # rt.fetch returns the device's float64 sums

    def add_loop(self, number: int, loop: Loop) -> None:
        emitter = BodyEmitter(loop, self.names, self.printer, pair_rows=True)
        body = emitter.emit()
        self.kernel_inputs.update(body.arguments[1:])
        length = self.names.length(loop.axis)
        row_width = emitter.widths[0] if emitter.widths else None
        reads = _sample_reads(body) if row_width is None else None
        if reads:
            self.functions.append(self.function(_DEVICE, f"body{number}",
                                                _prefetching_body(body, reads)))
        else:
            reads = None
            self.functions.append(self.function(_DEVICE, f"body{number}", body))
        self.functions.append(self.grid_stride_kernel(f"loop{number}", f"body{number}", length,
                                                      body, reads))
        if row_width is not None:
            self.block_rows_used = True
            row_body = BlockRowEmitter(loop, self.names, self.printer, pair_rows=True).emit()
            if (row_body.arguments != body.arguments or row_body.pair_rows != body.pair_rows
                    or len(row_body.returns) != len(body.returns)):
                raise AssertionError("block-per-row body differs in its arguments")
            scratch = f"    scratch = cuda.shared.array(ROW_THREADS, types.{self.dtype})"
            self.functions.append(self.function(_DEVICE, f"rowbody{number}", row_body,
                                                [scratch]))
            self.functions.append(self.block_row_kernel(f"rows{number}", f"rowbody{number}",
                                                        length, row_body))
        self.run_lines += self.scan_inputs(loop)
        self.run_lines += self.launch(number, loop, body, length, row_width)
        self.run_lines += self.scan_results(loop)

    def kernel_loop(self, name: str, body_name: str, length: str, body: Body,
                    loop: str) -> list[str]:
        """A kernel's signature and its ``loop`` over samples calling the body, each thread
        accumulating the body's sums in float64 (``acc<j>``)."""
        count = len(body.returns)
        passed = body.arguments[1:]
        # a row's partner sums: each sample's row of a (samples, width) buffer
        pair_rows = [row for row, _ in body.pair_rows]
        parameters = [length] + passed + pair_rows + (["red"] if count else [])
        call = ", ".join(body.arguments + [f"{row}[i]" for row in pair_rows])
        return [_KERNEL, f"def {name}({', '.join(parameters)}):", *self.accumulators(count),
                f"    {loop}", *self.accumulate(f"{body_name}({call})", count)]

    def unrolled_kernel_loop(self, name: str, body_name: str, length: str, body: Body,
                             reads: list[str]) -> list[str]:
        """A grid-stride kernel that reads the inputs of ``UNROLL`` samples (``i``,
        ``i + stride``, ...) before computing any of them.

        A thread's loads are in flight together only when nothing orders them: Numba's arrays
        may alias, so the compiler cannot move the next sample's loads above this sample's
        stores, and with one sample per step a thread has only its two or three loads in
        flight. On an H200 that kept float32 kernels at about 40% of the copy bandwidth (the
        memory's latency times its bandwidth is more bytes than 2048 threads x 8 bytes per
        multiprocessor); four samples a step give each thread four times the bytes in flight.
        Each thread still visits its samples in the same order, so the float64 partial sums
        are the same."""
        count = len(body.returns)
        kept = [a for a in body.arguments[1:] if a not in reads]
        parameters = [length, *body.arguments[1:]] + (["red"] if count else [])
        lines = [_KERNEL, f"def {name}({', '.join(parameters)}):", *self.accumulators(count)]
        lines += ["    stride = cuda.gridsize(1)", "    i = cuda.grid(1)",
                  f"    while i + (UNROLL - 1) * stride < {length}:"]
        offsets = ["i", *(f"i + {u} * stride" for u in range(1, UNROLL))]
        for u, at in enumerate(offsets):
            lines += [f"        x{u}_{a} = {a}[{at}]" for a in reads]

        def step(arguments: list[str]) -> list[str]:
            return self.accumulate(f"{body_name}({', '.join([*arguments, *kept])})", count)

        for u, at in enumerate(offsets):
            lines += step([at, *(f"x{u}_{a}" for a in reads)])
        lines += ["        i += UNROLL * stride", f"    while i < {length}:"]
        lines += step(["i", *(f"{a}[i]" for a in reads)])
        lines.append("        i += stride")
        return lines

    def grid_stride_kernel(self, name: str, body_name: str, length: str, body: Body,
                           reads: list[str] | None = None) -> str:
        """One sample per thread per step (``reads``: the body takes its per-sample values as
        arguments, and the kernel reads ``UNROLL`` samples' at a time); reductions: thread
        partials, block tree, one row of block partials."""
        count = len(body.returns)
        if reads is None:
            lines = self.kernel_loop(name, body_name, length, body,
                                     f"for i in range(cuda.grid(1), {length}, cuda.gridsize(1)):")
        else:
            lines = self.unrolled_kernel_loop(name, body_name, length, body, reads)
        if not count:
            return "\n".join(lines)
        rows = min(count, _SHARED_SUMS)
        lines += [f"    partial = cuda.shared.array(({rows}, THREADS), types.float64)",
                  "    thread = cuda.threadIdx.x"]
        for first in range(0, count, rows):  # sums in groups that fit in shared memory
            group = range(first, min(count, first + rows))
            if first:  # thread 0 has read the previous group's totals before they are replaced
                lines.append("    cuda.syncthreads()")
            lines += [
                *[f"    partial[{j - first}, thread] = acc{j}" for j in group],
                "    cuda.syncthreads()",
                "    step = THREADS // 2",
                "    while step > 0:",
                "        if thread < step:",
                *[f"            partial[{j - first}, thread] += partial[{j - first}, thread + step]"
                  for j in group],
                "        cuda.syncthreads()",
                "        step //= 2",
                "    if thread == 0:",
                *[f"        red[cuda.blockIdx.x, {j}] = partial[{j - first}, 0]" for j in group],
            ]
        return "\n".join(lines)

    def block_row_kernel(self, name: str, body_name: str, length: str, body: Body) -> str:
        """One row per block per step; every thread holds the row's results, thread 0 stores
        the block's sums."""
        count = len(body.returns)
        lines = self.kernel_loop(name, body_name, length, body,
                                 f"for i in range(cuda.blockIdx.x, {length}, cuda.gridDim.x):")
        if not count:
            return "\n".join(lines)
        lines.append("    if cuda.threadIdx.x == 0:")
        lines += [f"        red[cuda.blockIdx.x, {j}] = acc{j}" for j in range(count)]
        return "\n".join(lines)

    def launch(self, number: int, loop: Loop, body: Body, length: str,
               row_width: str | None) -> list[str]:
        """Lines of ``run`` for one loop: the scalars it reads, the launch, its reductions."""
        call_arguments = [length, *self.loop_arguments(body)]
        lines: list[str] = self.glue.take_lines()
        for row, width in body.pair_rows:  # each sample's row of partner sums (pairmatvec)
            buffer = f"pairs{number}_{row}"
            lines.append(f"{buffer} = rt.scan_buffer(({length}, {width}), numpy.{self.dtype})")
            call_arguments.append(buffer)
        count = len(body.returns)
        if count:
            lines.append(f"red{number} = rt.partials({count})")
            call_arguments.append(f"red{number}")
        arguments = ", ".join(call_arguments)
        blocks = f"blocks{number}"
        grid_launch = [f"{blocks} = rt.grid({length}, THREADS)",
                       f"rt.configured(loop{number}, {blocks}, THREADS)({arguments})"]
        if row_width is None:
            lines += grid_launch
        else:
            lines += [
                f"if rt.use_block_rows({row_width}):",
                f"    {blocks} = rt.row_grid({length})",
                f"    rt.configured(rows{number}, {blocks}, ROW_THREADS)({arguments})",
                "else:",
                *indent(grid_launch, "    "),
            ]
        if count:
            results = self.name_reductions(number, loop, count)
            lines.append(f"{', '.join(results)}, = rt.fetch(red{number}, {blocks})")
        return lines


def generate(schedule: Schedule, dtype: str, header: str) -> GeneratedModule:
    """The source of a CUDA module computing ``schedule`` on ``dtype`` ("float32"/"float64")."""
    return CudaModuleBuilder(schedule, dtype, header).build()
