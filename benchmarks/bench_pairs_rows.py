"""Time ntxent and circle (embedding rows within pair sums: pairdot, pairmatvec) against
optax's NT-Xent, one group, value + gradient and gradient + diagonal Hessian.

    python3 benchmarks/bench_pairs_rows.py [--sizes 500x16,2000x128] [--repeat 5]
        [--targets cpu,parallel] [--losses ntxent,circle] [--modes value+grad,grad+hess]

Run it twice with PYTHONPATH pointing at two trees (``git archive`` of an older commit) to
compare kernels; optax's time in the same process is the yardstick on a loaded machine: the
ratio lossdsl / optax is comparable between runs, the seconds are not.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

import lossdsl


def best_of(repeat: int, call) -> float:
    """The best wall time of ``repeat`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def embeddings(n: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels of 8 classes, one group, rows of norm 1 (as circle expects)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, width))
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    return {"y": rng.integers(0, 8, n).astype(np.float64), "s": s, "g": np.zeros(n)}


def optax_time(data: dict, repeat: int) -> float | None:
    """optax.losses.ntxent's value and gradient, jitted, or None without JAX."""
    try:
        import jax
        import optax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    step = jax.jit(jax.value_and_grad(lambda s, y: optax.losses.ntxent(s, y, 0.07)))
    s, y = jax.numpy.asarray(data["s"]), jax.numpy.asarray(data["y"].astype(np.int32))
    return best_of(repeat, lambda: jax.block_until_ready(step(s, y)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500x16,500x128,2000x16,2000x128")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--targets", default="cpu,parallel")
    parser.add_argument("--losses", default="ntxent,circle")
    parser.add_argument("--modes", default="value+grad,grad+hess")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        n, width = (int(part) for part in size.split("x"))
        data = embeddings(n, width)
        reference = optax_time(data, args.repeat)
        shown = "n/a" if reference is None else f"{reference * 1e3:.2f} ms"
        print(f"N={n} D={width}: optax value+grad {shown}")
        for target in args.targets.split(","):
            for name in args.losses.split(","):
                loss = lossdsl.compile(f"{name}(y, s, g)", target=target)
                methods = {"value+grad": loss.value_and_grad,
                           "grad+hess": loss.grad_and_hessian}
                for label in args.modes.split(","):
                    method = methods[label]
                    seconds = best_of(args.repeat, functools.partial(method, "s", **data))
                    ratio = "" if reference is None else f"  ({seconds / reference:.1f} x optax)"
                    print(f"  {target:8s} {name:6s} {label:10s} {seconds * 1e3:10.2f} ms{ratio}",
                          flush=True)


if __name__ == "__main__":
    main()
