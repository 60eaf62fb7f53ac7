"""lossdsl's CUDA target on a GPU at 10^8 elements, against copy bandwidth and PyTorch.

Run from the repository root on a machine with an NVIDIA GPU (needs numba-cuda; PyTorch with
CUDA for the peers):

    python benchmarks/bench_cuda.py                          # every loss, both modes, f32+f64
    python benchmarks/bench_cuda.py --loss huber --mode vg --dtype float32 --n 10000000

Everything runs in one process on the same device arrays (PyTorch CUDA tensors, passed to
lossdsl through ``__cuda_array_interface__``, results left on the device). Two modes:

* ``vg``: value + gradient w.r.t. the prediction (a training step);
* ``gh``: gradient + Hessian diagonal (a boosting round).

Reported per loss, dtype and mode:

* ``copy``: a device-to-device copy of one input array: the device's measured copy
  bandwidth (bytes read + bytes written per second), the floor;
* ``lossdsl``: ``value_and_grad`` / ``grad_and_hessian`` end to end (binding, launches, the
  loss value copied back as a float), and ``lossdsl run``: the generated ``run`` alone with
  the arguments already bound: what the kernels and their launches cost;
* ``torch eager`` and ``torch.compile``: the code a PyTorch user writes. For ``vg`` the
  ``torch.nn.functional`` loss and ``torch.autograd.grad`` (compiled: the loss function under
  ``torch.compile``, Inductor fusing forward and backward). For ``gh`` the closed-form
  gradient and Hessian written by hand in torch ops (PyTorch has no diagonal-Hessian op;
  double backward costs more, and ``torch.compile`` does not support it).

The fraction of copy bandwidth counts the bytes a fused kernel must move: read the inputs,
write the outputs (issue target: at least 0.85 at 10^8 elements; at least 3x torch eager and
at least torch.compile's speed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    """A loss with its PyTorch peers."""

    expression: str
    #: classes per row (1: one score per row)
    classes: int
    #: (F, y, p) -> mean loss, with torch.nn.functional
    torch_value: Callable[[Any, Any, Any], Any]
    #: (torch, y, p) -> (gradient, Hessian diagonal) of the mean loss, by hand
    torch_grad_hess: Callable[[Any, Any, Any], tuple[Any, Any]]


def _huber_gh(torch, y, p):
    r = p - y
    n = r.numel()
    return torch.clamp(r, -1.0, 1.0) / n, (r.abs() <= 1.0).to(p.dtype) / n


def _bce_gh(torch, y, p):
    s = torch.sigmoid(p)
    n = p.numel()
    return (s - y) / n, s * (1 - s) / n


def _cce_gh(torch, y, z):
    q = torch.softmax(z, dim=1)
    n = z.shape[0]
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    return (q - onehot) / n, q * (1 - q) / n


CASES = {
    "huber": Case("huber(y, p, 1.0)", 1,
                  lambda F, y, p: F.huber_loss(p, y, delta=1.0), _huber_gh),
    "bce_logits": Case("bce_logits(y, p)", 1,
                       lambda F, y, p: F.binary_cross_entropy_with_logits(p, y), _bce_gh),
    "sparse_cce_k1000": Case("sparse_cce_logits(y, p)", 1000,
                             lambda F, y, p: F.cross_entropy(p, y), _cce_gh),
}


def _require_gpu(smoke: bool):
    """numba.cuda on a real GPU, or a clear exit."""
    from numba import cuda
    from numba.core import config

    if config.ENABLE_CUDASIM and not smoke:
        sys.exit("bench_cuda: NUMBA_ENABLE_CUDASIM=1 is set; the simulator measures nothing. "
                 "Unset it and run on a machine with an NVIDIA GPU.")
    if not cuda.is_available():
        sys.exit("bench_cuda: no CUDA GPU found (numba.cuda.is_available() is False). This "
                 "benchmark needs an NVIDIA GPU, its driver, and numba-cuda "
                 "(pip install 'lossdsl[cuda]').")
    return cuda


def _torch_cuda():
    """PyTorch if it can use the GPU, else None (the PyTorch peers are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def timed(function: Callable[[], object], synchronize: Callable[[], None], repeat: int,
          warmup: int = 3) -> float:
    """Median wall time of ``function``, the device idle before and after each call."""
    for _ in range(warmup):
        function()
    synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_copy(source, torch, cuda, synchronize: Callable[[], None], repeat: int) -> float:
    """Time of a device-to-device copy of ``source``: the device's copy bandwidth is
    (bytes read + bytes written) / this time."""
    if torch is not None:
        target = torch.empty_like(source)
        return timed(lambda: target.copy_(source), synchronize, repeat)
    target = cuda.device_array_like(source)
    return timed(lambda: target.copy_to_device(source), synchronize, repeat)


def capture_run(compiled) -> tuple[Callable, dict]:
    """The generated ``run`` of ``compiled``'s only kernel and the arguments of its next call
    (wraps ``run`` once to see them; for timing the kernels without the argument binding)."""
    (kernel,) = compiled.kernels()
    original, captured = kernel.run, {}

    def spy(**arguments):
        captured.update(arguments)
        return original(**arguments)

    kernel.run = spy
    return original, captured


def _inputs(case: Case, n: int, dtype: str, torch, cuda):
    rng = np.random.default_rng(0)
    rows = n // case.classes
    if case.classes > 1:
        y_host = rng.integers(0, case.classes, rows)
        p_host = rng.normal(0.0, 2.0, (rows, case.classes)).astype(dtype)
    else:
        y_host = ((rng.random(n) < 0.5).astype(dtype) if "bce" in case.expression
                  else rng.normal(size=n).astype(dtype))
        p_host = rng.normal(size=n).astype(dtype)
    if torch is not None:
        return torch.from_numpy(y_host).cuda(), torch.from_numpy(p_host).cuda()
    return cuda.to_device(y_host), cuda.to_device(p_host)


def _check(name: str, actual, expected, dtype: str) -> None:
    tolerance = 1e-4 if dtype == "float32" else 1e-10
    scale = float(expected.abs().max()) if hasattr(expected, "abs") else abs(expected)
    difference = (float((actual - expected).abs().max()) if hasattr(actual, "abs")
                  else abs(actual - expected))
    assert difference <= tolerance * max(scale, 1e-30), (name, difference, scale)


def profile_call(function: Callable[[], object], synchronize: Callable[[], None],
                 calls: int = 200) -> None:
    """Where a call's host time goes (the binding, launches and copies around the kernels):
    cProfile over ``calls`` calls, the 25 functions with the most time of their own."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        function()
    synchronize()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def bench(name: str, mode: str, n: int, dtype: str, repeat: int, smoke: bool,
          results: list, profile: bool = False) -> None:
    import lossdsl
    from lossdsl.binding import is_device_array

    cuda = _require_gpu(smoke)
    torch = _torch_cuda()
    case = CASES[name]
    itemsize = np.dtype(dtype).itemsize
    y, p = _inputs(case, n, dtype, torch, cuda)
    synchronize = torch.cuda.synchronize if torch is not None else cuda.synchronize
    copy_time = time_copy(p, torch, cuda, synchronize, repeat)
    copy_bandwidth = 2 * p.numel() * itemsize / copy_time if torch is not None \
        else 2 * p.size * itemsize / copy_time

    compiled = lossdsl.compile(case.expression, target="cuda")
    if mode == "vg":
        def ours():
            return compiled.value_and_grad("p", y=y, p=p)
    else:
        def ours():
            return compiled.grad_and_hessian("p", y=y, p=p)
    start = time.perf_counter()
    first = ours()
    synchronize()
    first_call = time.perf_counter() - start
    result = first[1] if mode == "vg" else first[0]
    assert is_device_array(result) and str(result.dtype).endswith(dtype), result.dtype
    run, arguments = capture_run(compiled)
    ours()
    times = {"lossdsl": timed(ours, synchronize, repeat),
             "lossdsl run": timed(lambda: run(**arguments), synchronize, repeat)}
    if profile:
        profile_call(ours, synchronize)

    if torch is not None:
        functional = torch.nn.functional
        if mode == "vg":
            def peer(formula):
                def step():
                    q = p.detach().requires_grad_(True)
                    value = formula(y, q)
                    (grad,) = torch.autograd.grad(value, q)
                    return value.item(), grad
                return step

            def formula(y, q):
                return case.torch_value(functional, y, q)

            eager = peer(formula)
            compiled_torch = peer(torch.compile(formula))
            value, gradient = eager()
            _check("value", first[0], value, dtype)
            _check("gradient", first[1], gradient, dtype)
        else:
            def closed_form(y, p):
                return case.torch_grad_hess(torch, y, p)

            compiled_formula = torch.compile(closed_form)

            def eager():
                return closed_form(y, p)

            def compiled_torch():
                return compiled_formula(y, p)

            gradient, hessian = eager()
            _check("gradient", first[0], gradient, dtype)
            _check("hessian", first[1], hessian, dtype)
        for peer_name, function in (("torch eager", eager), ("torch.compile", compiled_torch)):
            try:
                times[peer_name] = timed(function, synchronize, repeat)
            except Exception as error:  # noqa: BLE001 - a peer failing is reported, not fatal
                print(f"  {peer_name} failed: {type(error).__name__}: {error}"[:300])
    else:
        print("  (PyTorch with CUDA not available: PyTorch peers skipped)")

    elements = n if case.classes == 1 else (n // case.classes) * case.classes
    outputs = 1 if mode == "vg" else 2
    label_bytes = (elements // case.classes) * 8 if case.classes > 1 else elements * itemsize
    moved = label_bytes + elements * itemsize * (1 + outputs)
    print(f"\n{name} ({case.expression}), {dtype}, {elements:,} scores, "
          f"{'value + gradient' if mode == 'vg' else 'gradient + Hessian'}: median of "
          f"{repeat} (first lossdsl call, compiling: {first_call:.2f} s)")
    print(f"  {'copy':>13}: {copy_time * 1e3:8.3f} ms   {copy_bandwidth / 1e9:7.1f} GB/s "
          "(device copy bandwidth)")
    for peer_name, seconds in times.items():
        fraction = moved / seconds / copy_bandwidth
        print(f"  {peer_name:>13}: {seconds * 1e3:8.3f} ms   {moved / seconds / 1e9:7.1f} GB/s"
              f"   {fraction:5.2f} of copy bandwidth   {seconds / times['lossdsl']:5.2f}x "
              "lossdsl's time")
    results.append(dict(loss=name, mode=mode, dtype=dtype, elements=elements,
                        copy_gbs=copy_bandwidth / 1e9,
                        **{f"{k}_ms": v * 1e3 for k, v in times.items()},
                        fraction=moved / times["lossdsl"] / copy_bandwidth,
                        fraction_run=moved / times["lossdsl run"] / copy_bandwidth))


def summary(results: list) -> None:
    """One markdown row per case: what the README table shows."""
    print("\n| loss | dtype | mode | lossdsl ms | of copy bw (end to end / kernels) | "
          "torch eager / lossdsl | torch.compile / lossdsl |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ours = r["lossdsl_ms"]
        ratios = ["—" if r.get(peer) is None else f"{r[peer] / ours:.2f}x"
                  for peer in ("torch eager_ms", "torch.compile_ms")]
        print(f"| {r['loss']} | {r['dtype']} | {r['mode']} | {ours:.3f} | "
              f"{r['fraction']:.2f} / {r['fraction_run']:.2f} | {ratios[0]} | {ratios[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000,
                        help="scores per array (rows x classes)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--loss", choices=[*CASES, "all"], default="all")
    parser.add_argument("--mode", choices=["vg", "gh", "both"], default="both")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the host side of lossdsl's calls (cProfile)")
    parser.add_argument("--smoke", action="store_true",
                        help="allow Numba's CUDA simulator, to check this script itself "
                             "(use a tiny --n; the numbers mean nothing)")
    args = parser.parse_args()
    cuda = _require_gpu(args.smoke)
    device = cuda.get_current_device()
    name = getattr(device, "name", b"simulator")
    print(f"device: {name.decode() if isinstance(name, bytes) else name}, "
          f"compute capability {device.compute_capability}")
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    modes = ["vg", "gh"] if args.mode == "both" else [args.mode]
    losses = list(CASES) if args.loss == "all" else [args.loss]
    results: list = []
    for loss in losses:
        for dtype in dtypes:
            for mode in modes:
                bench(loss, mode, args.n, dtype, args.repeat, args.smoke, results,
                      args.profile)
    summary(results)


if __name__ == "__main__":
    main()
