"""Where a CUDA call's time goes on a GPU: host overhead per piece, launch shapes, reductions.

Run from the repository root on a machine with an NVIDIA GPU, numba-cuda and PyTorch (CUDA):

    python benchmarks/cuda_study.py [--n 100000000] [--repeat 10]

Three parts, each printed as a table:

* ``host``: at 1,000 scores (the kernel takes microseconds), the time of each piece of a
  ``value_and_grad`` call of ``huber`` on PyTorch tensors: wrapping a tensor as a Numba device
  array (Numba's and lossdsl's cached view), the block-sums buffer and its fetch, launching a
  kernel through Numba's dispatcher, a kept configuration and the compiled kernel directly,
  the generated ``run``, the public call; then a cProfile of the public call.
* ``shapes``: the generated kernels at ``--n`` scores with ``UNROLL`` samples per thread step
  and ``BLOCKS_PER_SM`` blocks per multiprocessor, timed with CUDA events around ``run``
  (value + gradient and gradient + Hessian, float32 and float64), as a fraction of the copy
  bandwidth.
* ``calls``: at ``--n`` scores, what a public call launches on the device and when, against
  the generated ``run`` with its arguments bound (bench_cuda's "lossdsl" and "lossdsl run"):
  the host time to return, the wall time to the device's end, and PyTorch's profiler table
  of the kernels and copies either runs (for huber, bce_logits and sparse CE, K = 1,000).
* ``reductions``: hand-written value + gradient kernels of the same loss that differ only in
  how the value's sum leaves the block: one atomic per block (what lossdsl did until
  2026-11), a store of each block's partial (summed on the host: what it does now), no sum at
  all (the bound), and a streaming kernel that moves the same bytes (the floor).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def event_time(function, repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``function`` between CUDA events on the default stream."""
    import torch

    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def host_part(repeat: int) -> None:
    import torch
    from bench_cuda import capture_run, timed
    from numba import cuda

    import lossdsl
    from lossdsl.backend.cuda import runtime as rt

    n = 1000
    y = torch.randn(n, device="cuda", dtype=torch.float32)
    p = torch.randn(n, device="cuda", dtype=torch.float32)
    compiled = lossdsl.compile("huber(y, p, 1.0)", target="cuda")
    compiled.value_and_grad("p", y=y, p=p)
    run, arguments = capture_run(compiled)
    compiled.value_and_grad("p", y=y, p=p)
    module = run.__globals__
    sync = cuda.synchronize

    @cuda.jit
    def empty(x):
        pass

    dy = cuda.as_cuda_array(y)
    empty[1, 32](dy)
    rows = []

    def row(name, function, synchronize=sync):
        try:
            seconds = timed(function, synchronize, repeat * 20)
        except Exception as error:  # noqa: BLE001 - one piece failing is reported, not fatal
            print(f"{name}: {type(error).__name__}: {error}"[:300])
            seconds = float("nan")
        rows.append((name, seconds))

    row("cuda.synchronize()", lambda: None)
    row("empty kernel launch (dispatcher)", lambda: empty[1, 32](dy))
    from numba.cuda.cudadrv import driver

    kernel_object = next(iter(empty.overloads.values()))
    stream = driver._to_core_stream(0)
    row("empty kernel launch (kernel.launch)", lambda: kernel_object.launch((dy,), (1, 1, 1),
                                                                            (32, 1, 1), stream))
    row("empty kernel launch (rt.configured)", lambda: rt.configured(empty, 1, 32)(dy))
    row("tensor.__cuda_array_interface__", lambda: y.__cuda_array_interface__)
    row("cuda.as_cuda_array(tensor)", lambda: cuda.as_cuda_array(y))
    row("rt.to_device(tensor) (cached view)", lambda: rt.to_device(y))
    row("rt.output(tensor)", lambda: rt.output(p))
    row("rt.partials(1)", lambda: rt.partials(1))
    red = rt.partials(1)
    row("rt.fetch(1 x 4224 partials)", lambda: rt.fetch(red, rt.max_blocks()))
    row("rt.max_blocks()", rt.max_blocks)
    row("cuda.device_array(1)", lambda: cuda.device_array(1, np.float64))
    row("rt.grid(n, THREADS)", lambda: rt.grid(n, rt.THREADS))
    row("torch.empty_like", lambda: torch.empty_like(p))
    if "loop0" in module:
        loop = module["loop0"]
        dev = [cuda.as_cuda_array(a) for a in (y, p)]
        out = cuda.as_cuda_array(torch.empty_like(p))
        arg = (n, dev[0], dev[1], out, np.float32(1e-3), red)
        row("loop0 launch (dispatcher, wrapped arrays)",
            lambda: loop[rt.grid(n, rt.THREADS), rt.THREADS](*arg))
        row("loop0 launch (rt.configured)",
            lambda: rt.configured(loop, rt.grid(n, rt.THREADS), rt.THREADS)(*arg))
        launched = next(iter(loop.overloads.values()))
        row("loop0 launch (kernel.launch)",
            lambda: launched.launch(arg, (rt.grid(n, rt.THREADS), 1, 1), (rt.THREADS, 1, 1),
                                    stream))
        regs = {str(k): v for k, v in loop.get_regs_per_thread().items()}
        print("registers per thread of loop0:", regs)
    row("generated run", lambda: run(**arguments))
    row("public value_and_grad", lambda: compiled.value_and_grad("p", y=y, p=p))
    row("public grad_and_hessian", lambda: compiled.grad_and_hessian("p", y=y, p=p))

    def torch_step():
        q = p.detach().requires_grad_(True)
        value = torch.nn.functional.huber_loss(q, y)
        (grad,) = torch.autograd.grad(value, q)
        return value.item(), grad

    row("torch huber + autograd + item()", torch_step)
    print("\n## host: per-call time at 1,000 float32 scores (median wall, synchronised)\n")
    print("| piece | us |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:.1f} |")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(500):
        compiled.value_and_grad("p", y=y, p=p)
    sync()
    profiler.disable()
    print("\ncProfile of 500 public value_and_grad calls (tottime):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def shapes_part(n: int, repeat: int, unrolls, blocks_per_sm, cases) -> None:
    import torch
    from bench_cuda import capture_run

    import lossdsl
    from lossdsl.backend.cuda import codegen
    from lossdsl.backend.cuda import runtime as rt

    print(f"\n## shapes: huber at {n:,} scores, CUDA events around the generated run\n")
    print("| dtype | mode | UNROLL | BLOCKS_PER_SM | ms | of copy bw |\n|---|---|---|---|---|---|")
    default_unroll, default_bps = codegen.UNROLL, rt.BLOCKS_PER_SM
    for dtype, mode in cases:
        tdtype = getattr(torch, dtype)
        y = torch.randn(n, device="cuda", dtype=tdtype)
        p = torch.randn(n, device="cuda", dtype=tdtype)
        copy = event_time(lambda p=p: torch.empty_like(p).copy_(p), repeat)
        bandwidth = 2 * p.numel() * p.element_size() / copy
        moved = n * p.element_size() * (2 + (1 if mode == "vg" else 2))
        for unroll in unrolls:
            codegen.UNROLL = unroll
            compiled = lossdsl.compile("huber(y, p, 1.0)", target="cuda")

            method = compiled.value_and_grad if mode == "vg" else compiled.grad_and_hessian

            def call(method=method, y=y, p=p):
                return method("p", y=y, p=p)

            call()
            run, arguments = capture_run(compiled)
            call()
            for bps in blocks_per_sm:
                rt.BLOCKS_PER_SM = bps
                rt._max_blocks.cache_clear()
                seconds = event_time(lambda run=run, arguments=arguments: run(**arguments),
                                     repeat)
                print(f"| {dtype} | {mode} | {unroll} | {bps} | {seconds * 1e3:.3f} | "
                      f"{moved / seconds / bandwidth:.2f} |", flush=True)
        torch.cuda.empty_cache()
    codegen.UNROLL, rt.BLOCKS_PER_SM = default_unroll, default_bps
    rt._max_blocks.cache_clear()


def reductions_part(n: int, repeat: int) -> None:
    import torch
    from numba import cuda, float32, float64

    import lossdsl.backend.cuda.runtime  # noqa: F401 - NumPy 2.5's row_stack alias first

    THREADS = 256
    U = 4

    @cuda.jit(device=True)
    def huber_value_grad(y, p, s):
        r = p - y
        a = abs(r)
        if a <= float32(1.0):
            return float32(0.5) * r * r, r * s
        return a - float32(0.5), (float32(1.0) if r > 0 else float32(-1.0)) * s

    @cuda.jit(device=True)
    def block_tree(acc):
        partial = cuda.shared.array(THREADS, float64)
        thread = cuda.threadIdx.x
        partial[thread] = acc
        cuda.syncthreads()
        step = THREADS // 2
        while step > 0:
            if thread < step:
                partial[thread] += partial[thread + step]
            cuda.syncthreads()
            step //= 2
        return partial[0]

    @cuda.jit(device=True)
    def thread_sum(n, y, p, g, s):
        acc = float64(0.0)
        stride = cuda.gridsize(1)
        i = cuda.grid(1)
        while i + (U - 1) * stride < n:
            y0, p0 = y[i], p[i]
            y1, p1 = y[i + stride], p[i + stride]
            y2, p2 = y[i + 2 * stride], p[i + 2 * stride]
            y3, p3 = y[i + 3 * stride], p[i + 3 * stride]
            v, d = huber_value_grad(y0, p0, s)
            g[i] = d
            acc += v
            v, d = huber_value_grad(y1, p1, s)
            g[i + stride] = d
            acc += v
            v, d = huber_value_grad(y2, p2, s)
            g[i + 2 * stride] = d
            acc += v
            v, d = huber_value_grad(y3, p3, s)
            g[i + 3 * stride] = d
            acc += v
            i += U * stride
        while i < n:
            v, d = huber_value_grad(y[i], p[i], s)
            g[i] = d
            acc += v
            i += stride
        return acc

    @cuda.jit
    def atomic(n, y, p, g, s, red):
        total = block_tree(thread_sum(n, y, p, g, s))
        if cuda.threadIdx.x == 0:
            cuda.atomic.add(red, 0, total)

    @cuda.jit
    def partials(n, y, p, g, s, red):
        total = block_tree(thread_sum(n, y, p, g, s))
        if cuda.threadIdx.x == 0:
            red[cuda.blockIdx.x] = total

    @cuda.jit
    def no_sum(n, y, p, g, s, red):
        thread_sum(n, y, p, g, s)

    @cuda.jit
    def stream(n, y, p, g, s, red):
        stride = cuda.gridsize(1)
        i = cuda.grid(1)
        while i + (U - 1) * stride < n:
            a0, b0 = y[i], p[i]
            a1, b1 = y[i + stride], p[i + stride]
            a2, b2 = y[i + 2 * stride], p[i + 2 * stride]
            a3, b3 = y[i + 3 * stride], p[i + 3 * stride]
            g[i] = a0 + b0
            g[i + stride] = a1 + b1
            g[i + 2 * stride] = a2 + b2
            g[i + 3 * stride] = a3 + b3
            i += U * stride
        while i < n:
            g[i] = y[i] + p[i]
            i += stride

    y = cuda.as_cuda_array(torch.randn(n, device="cuda", dtype=torch.float32))
    p = cuda.as_cuda_array(torch.randn(n, device="cuda", dtype=torch.float32))
    g = cuda.device_array(n, np.float32)
    count = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"\n## reductions: hand-written huber value + gradient, float32, {n:,} scores\n")
    print("| kernel | blocks per SM | ms | of copy bw |\n|---|---|---|---|")
    t = torch.as_tensor(p, device="cuda")
    copy = event_time(lambda: torch.empty_like(t).copy_(t), repeat)
    bandwidth = 2 * n * 4 / copy
    moved = 12 * n
    for bps in (8, 32):
        blocks = count * bps
        red = cuda.device_array(max(blocks, 1), np.float64)
        for name, kernel in (("atomic per block", atomic), ("partial per block", partials),
                             ("no sum", no_sum), ("streaming floor", stream)):
            def launch(kernel=kernel, blocks=blocks, red=red):
                if kernel is atomic:
                    red[:1].copy_to_device(np.zeros(1))
                kernel[blocks, THREADS](n, y, p, g, float32(1.0 / n), red)
            seconds = event_time(launch, repeat)
            print(f"| {name} | {bps} | {seconds * 1e3:.3f} | {moved / seconds / bandwidth:.2f} |",
                  flush=True)


def calls_part(n: int, repeat: int) -> None:
    import time

    import torch
    from bench_cuda import CASES, _inputs, capture_run, timed
    from numba import cuda
    from torch.profiler import ProfilerActivity, profile

    import lossdsl

    for name, dtype, mode in (("huber", "float32", "vg"), ("huber", "float64", "gh"),
                              ("bce_logits", "float64", "vg"),
                              ("sparse_cce_k1000", "float32", "vg")):
        case = CASES[name]
        y, p = _inputs(case, n, dtype, torch, cuda)
        compiled = lossdsl.compile(case.expression, target="cuda")
        public = functools.partial(compiled.value_and_grad if mode == "vg"
                                   else compiled.grad_and_hessian, "p", y=y, p=p)
        public()
        run, arguments = capture_run(compiled)
        public()
        torch.cuda.synchronize()
        bound_run = functools.partial(run, **arguments)
        print(f"\n### {name} {dtype} {mode}, {n:,} scores", flush=True)
        for label, function in (("public", public), ("run", bound_run)):
            returned = []
            for _ in range(repeat):
                torch.cuda.synchronize()
                start = time.perf_counter()
                function()
                returned.append(time.perf_counter() - start)
            torch.cuda.synchronize()
            wall = timed(function, torch.cuda.synchronize, repeat)
            print(f"{label}: host until return {statistics.median(returned) * 1e3:.3f} ms, "
                  f"wall to the device's end {wall * 1e3:.3f} ms", flush=True)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
                for _ in range(5):
                    function()
                torch.cuda.synchronize()
            print(trace.key_averages().table(sort_by="self_device_time_total", row_limit=10,
                                             max_name_column_width=60), flush=True)
            if label == "public":
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(50):
                    function()
                torch.cuda.synchronize()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--parts", default="host,reductions,shapes")
    parser.add_argument("--unrolls", default="1,2,4,8", help="UNROLL values of the shapes part")
    parser.add_argument("--blocks", default="4,8,16,32",
                        help="BLOCKS_PER_SM values of the shapes part")
    args = parser.parse_args()
    os.environ.setdefault("LOSSDSL_CACHE_DIR", tempfile.mkdtemp(prefix="lossdsl-study-"))
    parts = args.parts.split(",")
    if "host" in parts:
        host_part(args.repeat)
    if "calls" in parts:
        calls_part(args.n, args.repeat)
    if "reductions" in parts:
        reductions_part(args.n, args.repeat)
    if "shapes" in parts:
        cases = [("float32", "vg"), ("float32", "gh"), ("float64", "vg"), ("float64", "gh")]
        shapes_part(args.n, args.repeat, [int(u) for u in args.unrolls.split(",")],
                    [int(b) for b in args.blocks.split(",")], cases)


if __name__ == "__main__":
    main()
