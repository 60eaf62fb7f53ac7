"""Compile and cache-load times of every loss family (issue #16, item 6), in fresh processes.

    python3 benchmarks/bench_compile.py               # every family, targets cpu and parallel
    python3 benchmarks/bench_compile.py --markdown    # the README's table
    python3 benchmarks/bench_compile.py --only mse,bce_logits --targets cpu

For each family of ``bench_library.py`` (one classes setting: compile time does not depend
on K) and target, a new Python process with an empty kernel cache (``LOSSDSL_CACHE_DIR``, a
fresh directory) imports lossdsl, compiles the loss and makes its first value + gradient call
and then its first gradient + Hessian call (on enough rows that a parallel loss builds its
threaded kernel): each first call differentiates, optimises, generates and compiles one
kernel (Numba's LLVM time is most of it). Then the same script runs three more times on
the now warm cache, and the fastest total (import included) is compared with the floor of
any cached Numba program: a new process that imports NumPy and Numba and calls one trivial
``@njit(cache=True)`` function from its cache. Targets (issue #16): first compile of
``huber+l1`` at most 1.5 s and of a 40-term loss 3 s (``bench_huber.py``), cache load at
most 1.25x the floor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

from bench_library import FAMILIES

from lossdsl.binding import PARALLEL_MIN_ELEMENTS

# one process's work: import, then the first call of each kernel (times in seconds)
_FIRST_CALLS = textwrap.dedent("""
    import time
    start = time.perf_counter()
    import numpy as np
    import lossdsl
    imported = time.perf_counter()
    rows, classes, wrt = {rows}, {classes}, {wrt!r}
    rng = np.random.default_rng(0)
    inputs = {{"y": rng.integers(0, classes, rows) if classes else rng.uniform(0.05, 0.95, rows),
              wrt: rng.uniform(0.05, 0.95, (rows, classes) if classes else rows)}}
    loss = lossdsl.compile({expression!r}, target={target!r})
    loss.value_and_grad(wrt, **inputs)
    first = time.perf_counter()
    loss.grad_and_hessian(wrt, **inputs)
    second = time.perf_counter()
    print(imported - start, first - imported, second - first)
""")

#: The floor: a new process that imports NumPy and Numba and calls a cached trivial function.
TRIVIAL_NUMBA = textwrap.dedent("""
    import time
    start = time.perf_counter()
    import numpy as np
    from numba import njit
    @njit(cache=True)
    def f(x):
        return x + 1
    f(1.0)
    print(time.perf_counter() - start)
""")


def run_script(path: str, cache: str) -> list[float]:
    """The numbers a script prints, run in a new process with kernel cache ``cache`` (a real
    file: Numba caches the functions of files only)."""
    env = dict(os.environ, LOSSDSL_CACHE_DIR=cache)
    done = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(path), check=True)
    return [float(x) for x in done.stdout.split()]


def prediction(expression: str) -> str:
    """The input a family is differentiated with respect to (its second argument)."""
    return expression.split("(", 1)[1].split(",")[1].strip().rstrip(")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated family labels")
    parser.add_argument("--targets", default="cpu,parallel")
    parser.add_argument("--warm", type=int, default=3, help="cache-load runs (fastest kept)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    only = {label.strip() for label in args.only.split(",") if label.strip()}
    families, seen = [], set()
    for label, expression, classes in FAMILIES:
        name = label.split(" K=")[0]
        if (only and name not in only and label not in only) or expression in seen:
            continue
        seen.add(expression)
        families.append((name, expression, classes))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        trivial = os.path.join(scratch, "trivial.py")
        with open(trivial, "w") as stream:
            stream.write(TRIVIAL_NUMBA)
        run_script(trivial, scratch)  # fill Numba's cache
        floor = min(run_script(trivial, scratch)[0] for _ in range(args.warm))
        for name, expression, classes in families:
            for target in args.targets.split(","):
                script = os.path.join(scratch, f"first_{len(rows)}.py")
                with open(script, "w") as stream:
                    # a parallel loss runs its serial kernel on small calls: enough rows
                    # that the call builds the threaded one
                    samples = 1000 if target == "cpu" else 2 * PARALLEL_MIN_ELEMENTS
                    stream.write(_FIRST_CALLS.format(expression=expression, target=target,
                                                     rows=samples, classes=classes,
                                                     wrt=prediction(expression)))
                cache = tempfile.mkdtemp(dir=scratch)
                imported, first, second = run_script(script, cache)
                warm = min(sum(run_script(script, cache)) for _ in range(args.warm))
                rows.append((name, target, imported, first, second, warm, warm / floor))
                if not args.markdown:
                    print(f"{name:>14} {target:>8}: import {imported:.2f} s, first value+grad "
                          f"{first:.2f} s, first grad+hess {second:.2f} s; from the cache "
                          f"{warm:.2f} s = {warm / floor:.2f}x the floor", flush=True)
    print(f"\nfloor (new process: import NumPy and Numba, one cached trivial @njit call): "
          f"{floor:.2f} s; Python {sys.version.split()[0]}")
    if args.markdown:
        print("\n| loss | target | first value + gradient (s) | first gradient + Hessian (s) "
              "| new process from the cache (s) | / floor |")
        print("|---|---|---|---|---|---|")
        for name, target, _, first, second, warm, ratio in rows:
            print(f"| {name} | {target} | {first:.2f} | {second:.2f} | {warm:.2f} "
                  f"| {ratio:.2f} |")


if __name__ == "__main__":
    main()
