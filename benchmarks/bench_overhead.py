"""Per-call overhead on small inputs: lossdsl against scikit-learn's ``sklearn._loss`` and
hand-written NumPy, in one process (issue #16, targets 3 and 5).

    PYTHONPATH=. python3 benchmarks/bench_overhead.py                 # N = 256 and 4096
    PYTHONPATH=. python3 benchmarks/bench_overhead.py --sizes 256 --repeat 9
    PYTHONPATH=. python3 benchmarks/bench_overhead.py --sizes --large 10000000  # out= at 10^7
    PYTHONPATH=. python3 benchmarks/bench_overhead.py --sizes --torch 1024 65536  # torch steps

For each loss family both have (squared error, binomial on logits, multinomial on logits),
times the value, value+gradient and gradient+Hessian calls: lossdsl's ``__call__``,
``value_and_grad`` and ``grad_and_hessian`` (serial target, and the parallel target, which
runs its serial kernel on calls this small), with and without ``out=``; scikit-learn's
``__call__``, ``loss_gradient`` and ``gradient_hessian`` (with and without ``*_out=``) with
``n_threads=1``; and the NumPy code a user writes. lossdsl is compiled with
``reduction="sum"``, whose derivatives are scikit-learn's per-sample ones (checked before
timing). scikit-learn's ``loss_gradient`` returns per-sample losses where lossdsl returns their
sum, so its value+gradient runs are its call followed by ``.sum()`` of the loss array (what a
user wanting the total writes); the sums are checked to agree with lossdsl's before timing.
Each peer runs ``--inner`` calls in a block; the blocks are interleaved over ``--repeat``
rounds (a burst of load on a shared machine hits every peer) and the fastest block gives the
time per call, in microseconds. The last column is the ratio to scikit-learn's call for the
same outputs (target: at most 1.0).

``--cpu-time`` times each block by the calling thread's CPU time (``time.thread_time``)
instead of the wall clock: on a machine shared with other work the fastest wall-clock block
still includes time the process spent descheduled, while CPU time does not. Every peer timed
here runs on the calling thread at these sizes (scikit-learn with ``n_threads=1``, lossdsl's
small calls serially), so the two agree on a quiet machine; the PyTorch steps use threads
and are always timed by the wall clock.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np


def numpy_peers() -> dict[str, dict[str, Callable]]:
    """What a user writes in NumPy: value, value+gradient, gradient+Hessian per family."""
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    def multinomial_value(y, z):
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return float(np.mean(lse - z[np.arange(z.shape[0]), y]))

    def multinomial_gradient(y, z):
        g = softmax(z)
        g[np.arange(z.shape[0]), y] -= 1.0
        return g

    def multinomial_gradient_hessian(y, z):
        s = softmax(z)
        g = s.copy()
        g[np.arange(z.shape[0]), y] -= 1.0
        return g, s * (1.0 - s)

    return {
        "squared_error": {
            "value": lambda y, p: float(np.mean(0.5 * (p - y) ** 2)),
            "value+grad": lambda y, p: (float(np.mean(0.5 * (p - y) ** 2)), p - y),
            "grad+hess": lambda y, p: (p - y, np.ones_like(p)),
        },
        "binomial": {
            "value": lambda y, z: float(np.mean(np.logaddexp(0.0, z) - y * z)),
            "value+grad": lambda y, z: (float(np.mean(np.logaddexp(0.0, z) - y * z)),
                                        sigmoid(z) - y),
            "grad+hess": lambda y, z: ((s := sigmoid(z)) - y, s * (1.0 - s)),
        },
        "multinomial": {
            "value": multinomial_value,
            "value+grad": lambda y, z: (multinomial_value(y, z), multinomial_gradient(y, z)),
            "grad+hess": multinomial_gradient_hessian,
        },
    }


def families(n: int, classes: int, rng: np.random.Generator) -> dict[str, tuple]:
    """(lossdsl text, scikit-learn loss, y, score) per family, for ``n`` rows."""
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss, HalfSquaredError

    labels = rng.integers(0, classes, size=n)
    return {
        "squared_error": ("half_mse(y, p)", HalfSquaredError(), rng.normal(size=n),
                          rng.normal(size=n)),
        "binomial": ("bce_logits(y, p)", HalfBinomialLoss(),
                     (rng.random(n) > 0.5).astype(np.float64), rng.normal(size=n)),
        "multinomial": ("sparse_cce_logits(y, p)", HalfMultinomialLoss(n_classes=classes),
                        labels, rng.normal(size=(n, classes))),
    }


def summed(loss_gradient: tuple) -> tuple:
    """scikit-learn's ``loss_gradient`` result with its per-sample losses summed: lossdsl's
    ``value_and_grad`` (``reduction="sum"``) outputs."""
    loss, gradient = loss_gradient
    return float(loss.sum()), gradient


def peers_for(family: str, text: str, sk, y, p) -> dict[str, dict[str, Callable]]:
    """Every peer's call per output kind ("value", "value+grad", "grad+hess")."""
    import lossdsl

    serial = lossdsl.compile(text, reduction="sum")
    parallel = lossdsl.compile(text, target="parallel", reduction="sum")
    mean = lossdsl.compile(text)
    threaded = lossdsl.compile(text, target="parallel")
    y_sk = y.astype(np.float64)
    g, h = np.empty_like(p), np.empty_like(p)
    sk_g, sk_h = np.empty_like(p), np.empty_like(p)
    sk_value = np.empty(p.shape[0])
    by_kind = numpy_peers()[family]
    return {
        "value": {
            "lossdsl cpu": lambda: mean(y=y, p=p),
            "lossdsl parallel": lambda: threaded(y=y, p=p),
            "sklearn": lambda: sk(y_sk, p, n_threads=1),
            "numpy": lambda: by_kind["value"](y, p),
        },
        "value+grad": {
            "lossdsl cpu": lambda: serial.value_and_grad("p", y=y, p=p),
            "lossdsl cpu out=": lambda: serial.value_and_grad("p", y=y, p=p, out=g),
            "lossdsl parallel": lambda: parallel.value_and_grad("p", y=y, p=p),
            "sklearn": lambda: summed(sk.loss_gradient(y_sk, p, n_threads=1)),
            "sklearn out=": lambda: summed(sk.loss_gradient(y_sk, p, loss_out=sk_value,
                                                            gradient_out=sk_g, n_threads=1)),
            "numpy": lambda: by_kind["value+grad"](y, p),
        },
        "grad+hess": {
            "lossdsl cpu": lambda: serial.grad_and_hessian("p", y=y, p=p),
            "lossdsl cpu out=": lambda: serial.grad_and_hessian("p", y=y, p=p, out=(g, h)),
            "lossdsl parallel": lambda: parallel.grad_and_hessian("p", y=y, p=p),
            "sklearn": lambda: sk.gradient_hessian(y_sk, p, n_threads=1),
            "sklearn out=": lambda: sk.gradient_hessian(y_sk, p, gradient_out=sk_g,
                                                        hessian_out=sk_h, n_threads=1),
            "numpy": lambda: by_kind["grad+hess"](y, p),
        },
    }


def check_agreement(family: str, text: str, sk, y, p) -> None:
    """lossdsl's summed derivatives are scikit-learn's per-sample ones, and its summed value
    is the sum of scikit-learn's per-sample losses: the same work."""
    import lossdsl

    compiled = lossdsl.compile(text, reduction="sum")
    gradient, hessian = compiled.grad_and_hessian("p", y=y, p=p)
    sk_gradient, sk_hessian = sk.gradient_hessian(y.astype(np.float64), p, n_threads=1)
    np.testing.assert_allclose(gradient, sk_gradient, rtol=1e-10, atol=1e-12)
    # for the multinomial both are the diagonal p(1 - p) of the softmax Hessian
    np.testing.assert_allclose(hessian, sk_hessian, rtol=1e-10, atol=1e-12)
    value, gradient = compiled.value_and_grad("p", y=y, p=p)
    sk_value, sk_gradient = summed(sk.loss_gradient(y.astype(np.float64), p, n_threads=1))
    np.testing.assert_allclose(value, sk_value, rtol=1e-10)
    np.testing.assert_allclose(gradient, sk_gradient, rtol=1e-10, atol=1e-12)


def best_per_call(runs: dict[str, Callable], repeat: int, inner: int,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Fastest block of ``inner`` calls per run, interleaved over ``repeat`` rounds (µs),
    timed by ``clock``."""
    for run in runs.values():  # compile, plan and warm up
        for _ in range(3):
            run()
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = clock()
            for _ in range(inner):
                run()
            best[name] = min(best[name], (clock() - start) / inner)
    return {name: seconds * 1e6 for name, seconds in best.items()}


def bench_large(n: int, calls: int, pause: float) -> None:
    """grad+hess of ``huber`` at ``n`` rows, allocating vs ``out=`` (the same two arrays every
    call), alternated with ``pause`` seconds between calls: the allocator hands big blocks
    back, and fresh memory is faulted in anew on every allocating call."""
    import lossdsl

    rng = np.random.default_rng(0)
    y, p = rng.normal(size=n), rng.normal(size=n)
    compiled = lossdsl.compile("huber(y, p, 1.0)", reduction="sum")
    g, h = np.empty(n), np.empty(n)
    times: dict[str, list[float]] = {"allocating": [], "out=": []}
    first = {}
    for name, call in (("allocating", lambda: compiled.grad_and_hessian("p", y=y, p=p)),
                       ("out=", lambda: compiled.grad_and_hessian("p", y=y, p=p,
                                                                   out=(g, h)))):
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    for _ in range(calls):
        for name, call in (("allocating", lambda: compiled.grad_and_hessian("p", y=y, p=p)),
                           ("out=", lambda: compiled.grad_and_hessian("p", y=y, p=p,
                                                                       out=(g, h)))):
            time.sleep(pause)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"N={n} huber grad+hess {name:10s} first call {1e3 * first[name]:7.1f} ms; "
              f"steady state (pause {pause} s) median {1e3 * float(np.median(values)):7.1f} ms, "
              f"min {1e3 * min(values):7.1f} ms, max {1e3 * max(values):7.1f} ms")


def bench_torch(sizes: list[int], repeat: int, inner: int) -> None:
    """One training step's loss, forward and backward, on float32 CPU tensors: ``huber``
    (mean) through ``lossdsl.torch`` (its default parallel target) against
    ``F.huber_loss`` (issue #16 target 3: at most PyTorch's time at batch 1,024, faster at
    65,536). The gradient is cleared every step, as ``optimizer.zero_grad()`` does."""
    import torch
    import torch.nn.functional as F

    import lossdsl.torch

    criterion = lossdsl.torch.loss("huber(y, p, 1.0)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32, huber "
          "mean, forward + backward per step, microseconds")
    for n in sizes:
        generator = torch.Generator().manual_seed(0)
        y = torch.randn(n, generator=generator)
        p = torch.randn(n, generator=generator).requires_grad_(True)

        def step(loss: Callable, p: torch.Tensor = p, y: torch.Tensor = y
                 ) -> Callable[[], None]:
            def run() -> None:
                p.grad = None
                loss(p, y).backward()
            return run

        runs = {"lossdsl.torch": step(criterion),
                "F.huber_loss": step(lambda p, y: F.huber_loss(p, y, delta=1.0))}
        runs["lossdsl.torch"]()
        ours = p.grad.clone()
        runs["F.huber_loss"]()
        torch.testing.assert_close(ours, p.grad, rtol=1e-5, atol=1e-9)
        times = best_per_call(runs, repeat, max(10, inner * 1024 // max(n, 1024)))
        reference = times["F.huber_loss"]
        cells = "  ".join(f"{name} {t:8.1f} ({t / reference:4.2f}x)" for name, t in times.items())
        print(f"batch {n:<7} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 4096])
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--inner", type=int, default=2000)
    parser.add_argument("--families", nargs="+",
                        default=["squared_error", "binomial", "multinomial"])
    parser.add_argument("--no-out", action="store_true",
                        help="leave out the out= runs (to time a lossdsl without out=)")
    parser.add_argument("--large", type=int, default=0,
                        help="also time grad+hess at this many rows, allocating vs out=")
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the N = 256/4096 blocks by the thread's CPU time (robust on "
                             "a loaded machine) instead of the wall clock")
    parser.add_argument("--torch", type=int, nargs="*", default=[],
                        help="also time a lossdsl.torch training step at these batch sizes "
                             "against F.huber_loss (e.g. --torch 1024 65536)")
    args = parser.parse_args()
    import numba
    import sklearn

    print(f"sklearn {sklearn.__version__}, numba {numba.__version__}, "
          f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, cpus={os.cpu_count()}; "
          f"scikit-learn n_threads=1; best block of {args.inner} calls over {args.repeat} "
          f"interleaved rounds, microseconds per call of "
          f"{'thread CPU time' if args.cpu_time else 'wall-clock time'}")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    rng = np.random.default_rng(0)
    for n in args.sizes:
        for family, (text, sk, y, p) in families(n, args.classes, rng).items():
            if family not in args.families:
                continue
            check_agreement(family, text, sk, y, p)
            for kind, runs in peers_for(family, text, sk, y, p).items():
                if args.no_out:
                    runs = {name: run for name, run in runs.items() if "out=" not in name}
                times = best_per_call(runs, args.repeat, args.inner, clock)
                reference = times["sklearn"]
                cells = "  ".join(f"{name} {t:7.2f} ({t / reference:4.2f}x)"
                                  for name, t in times.items())
                print(f"N={n:<5} {family:<13} {kind:<10} {cells}")
    if args.large:
        bench_large(args.large, args.repeat, args.pause)
    if args.torch:
        bench_torch(args.torch, args.repeat, args.inner)


if __name__ == "__main__":
    main()
