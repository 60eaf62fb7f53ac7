"""Value + gradient on a GPU at N = 10^8: lossdsl's CUDA target vs copy bandwidth and PyTorch.

Run from the repository root on a machine with an NVIDIA GPU (needs numba-cuda; PyTorch with
CUDA for the peers):

    python benchmarks/bench_cuda.py                   # N = 10^8, float32 and float64
    python benchmarks/bench_cuda.py --n 10000000 --repeat 50 --loss bce_logits

Everything runs in one process on the same device arrays (PyTorch CUDA tensors, passed to
lossdsl through ``__cuda_array_interface__``, results left on the device). Reported:

* ``copy``: a device-to-device copy of one input array: the device's measured copy
  bandwidth (bytes read + bytes written per second);
* ``lossdsl``: ``value_and_grad("p", y=..., p=...)`` end to end (binding, launch, the loss
  value copied back as a float), and ``lossdsl run``: the generated ``run`` alone with the
  arguments already bound: what the kernels and their launches cost;
* ``torch eager``: ``huber_loss`` + ``torch.autograd.grad``; ``torch.compile``: the same with
  the loss function compiled (Inductor fuses the forward and the backward).

The fraction of copy bandwidth counts the bytes a fused value+grad kernel must move: read y
and p, write the gradient (SPEC target: at least 0.75 at N = 10^8).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

#: name -> (loss expression, PyTorch formula of the same mean loss)
LOSSES = {
    "huber": ("huber(y, p, 1.0)",
              lambda F, y, p: F.huber_loss(p, y, delta=1.0)),
    "bce_logits": ("bce_logits(y, p)",
                   lambda F, y, p: F.binary_cross_entropy_with_logits(p, y)),
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
    """The generated ``run`` of ``compiled``'s only kernel and the arguments of its last call
    (wraps ``run`` once to see them; for timing the kernels without the argument binding)."""
    (kernel,) = compiled._kernels.values()
    original, captured = kernel.run, {}

    def spy(**arguments):
        captured.update(arguments)
        return original(**arguments)

    kernel.run = spy
    return original, captured


def bench(loss: str, n: int, dtype: str, repeat: int, smoke: bool) -> None:
    import lossdsl
    from lossdsl.codegen import cuda_runtime as rt

    cuda = _require_gpu(smoke)
    torch = _torch_cuda()
    expression, torch_formula = LOSSES[loss]
    itemsize = np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    if loss == "bce_logits":  # binary targets
        y_host = (rng.random(n) < 0.5).astype(dtype)
    else:
        y_host = rng.normal(size=n).astype(dtype)
    p_host = rng.normal(size=n).astype(dtype)
    if torch is not None:
        y, p = torch.from_numpy(y_host).cuda(), torch.from_numpy(p_host).cuda()
        synchronize = torch.cuda.synchronize
    else:
        y, p = cuda.to_device(y_host), cuda.to_device(p_host)
        synchronize = cuda.synchronize
    del y_host, p_host

    copy_time = time_copy(p, torch, cuda, synchronize, repeat)
    copy_bandwidth = 2 * n * itemsize / copy_time

    compiled = lossdsl.compile(expression, target="cuda")
    start = time.perf_counter()
    value, gradient = compiled.value_and_grad("p", y=y, p=p)
    synchronize()
    first_call = time.perf_counter() - start
    # results stay on the device, as the inputs' kind of array, in the inputs' dtype
    assert rt.is_device_array(gradient) and str(gradient.dtype).endswith(dtype), gradient.dtype
    run, arguments = capture_run(compiled)
    compiled.value_and_grad("p", y=y, p=p)

    times = {
        "lossdsl": timed(lambda: compiled.value_and_grad("p", y=y, p=p), synchronize, repeat),
        "lossdsl run": timed(lambda: run(**arguments), synchronize, repeat),
    }
    if torch is not None:
        functional = torch.nn.functional

        def eager():
            q = p.detach().requires_grad_(True)
            value = torch_formula(functional, y, q)
            (grad,) = torch.autograd.grad(value, q)
            return value.item(), grad

        compiled_formula = torch.compile(lambda y, q: torch_formula(functional, y, q))

        def compiled_torch():
            q = p.detach().requires_grad_(True)
            value = compiled_formula(y, q)
            (grad,) = torch.autograd.grad(value, q)
            return value.item(), grad

        reference_value, reference_gradient = eager()
        tolerance = 1e-3 if dtype == "float32" else 1e-9
        assert abs(value - reference_value) <= tolerance * max(1.0, abs(reference_value)), \
            (value, reference_value)
        difference = float((gradient - reference_gradient).abs().max())
        assert difference <= tolerance * float(reference_gradient.abs().max()) + 1e-30, difference
        times["torch eager"] = timed(eager, synchronize, repeat)
        times["torch.compile"] = timed(compiled_torch, synchronize, repeat)
    else:
        print("  (PyTorch with CUDA not available: PyTorch peers skipped)")

    moved = 3 * n * itemsize  # read y and p, write the gradient
    print(f"\n{loss} ({expression}), {dtype}, N = {n:,}: median of {repeat} "
          f"(value + gradient wrt p; first lossdsl call, compiling: {first_call:.2f} s)")
    print(f"  {'copy':>13}: {copy_time * 1e3:8.3f} ms   {copy_bandwidth / 1e9:7.1f} GB/s "
          "(device copy bandwidth)")
    for name, seconds in times.items():
        fraction = moved / seconds / copy_bandwidth
        print(f"  {name:>13}: {seconds * 1e3:8.3f} ms   {moved / seconds / 1e9:7.1f} GB/s   "
              f"{fraction:5.2f} of copy bandwidth   {seconds / times['lossdsl']:5.2f}x lossdsl")
    print(f"  lossdsl at {moved / times['lossdsl'] / copy_bandwidth:.2f} of copy bandwidth "
          "(target >= 0.75)")
    for peer in ("torch eager", "torch.compile"):
        if peer in times:
            print(f"  {peer} / lossdsl = {times[peer] / times['lossdsl']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--loss", choices=sorted(LOSSES), default="huber")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
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
    for dtype in dtypes:
        bench(args.loss, args.n, dtype, args.repeat, args.smoke)


if __name__ == "__main__":
    main()
