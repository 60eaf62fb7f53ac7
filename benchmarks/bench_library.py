"""Every loss family of issue #16: lossdsl vs the memory floor and the code users write instead.

Run from the repository root:

    python benchmarks/bench_library.py --markdown          # N = 10^7, the README's table
    python benchmarks/bench_library.py --n 1000000 --repeat 3
    python benchmarks/bench_library.py --quick             # a smoke run (small N, no torch.compile)

How the numbers are taken:

* one process, float64, lossdsl compiled with ``target="parallel"`` (Numba's threads: all
  cores), the peers given the same number of threads (``torch.set_num_threads``,
  scikit-learn's ``n_threads``; JAX uses its own pool);
* the peers are those of ``lossdsl bench`` (``lossdsl/peers.py``, printed by ``lossdsl bench
  LOSS --show-peers``): ``torch.nn.functional`` with autograd for value + gradient and the
  closed form in torch for gradient + Hessian (eager, and under ``torch.compile``),
  hand-written NumPy, ``jax.jit(jax.value_and_grad)`` of it (the closed form for gradient +
  Hessian), a hand-fused Numba kernel (written for mse, huber, bce_logits and
  sparse_cce_logits) and scikit-learn's ``sklearn._loss`` Cython kernels where it has the
  loss (its per-sample numbers are compared after scaling; the timed call is its own); the
  floor is a streaming Numba kernel that reads the same inputs and writes the same outputs
  into freshly allocated arrays (one for value + gradient, two for gradient + Hessian);
* every peer is checked to compute lossdsl's numbers on the same data before it is timed
  (a peer that disagrees stops the benchmark);
* each figure is the best of ``--repeat`` rounds after one warm-up call of each; in every
  round each implementation runs once per task, interleaved, with ``--pause`` seconds of
  idle before each timed call (PyTorch's and JAX's worker threads spin for a while after a
  call and would steal the cores from whoever runs next). Every call allocates its outputs,
  as a user's call does (no ``out=``): first-touch page faults are part of every figure,
  lossdsl's and the floor's alike;
* ratios are "peer time / lossdsl time" (larger = lossdsl faster), except lossdsl / floor
  (at most about 1 when lossdsl is at the memory bound). On a shared machine absolute times
  drift; ratios from one process are what to compare;
* the compute wall: lossdsl's own kernel (``target="cpu"``, one thread, ``out=`` arrays)
  run over the first ``COMPUTE_BLOCK`` rows again and again until it has seen as many rows
  as the benchmark, so that its inputs and outputs stay in the cache and no memory traffic
  is left: the time its arithmetic takes, divided by the cores (as the parallel kernel
  divides it). Where "compute / floor" is above 1 the kernel cannot reach the memory floor
  on this machine without fewer or cheaper operations per element (its ``exp``, ``log1p``,
  divisions, class loops); where lossdsl / floor is well above both, the time goes
  elsewhere.

Data per family (``lossdsl.peers``): normal targets with residuals on both sides of Huber's
delta, binary labels with logits of scale 2, compound-Poisson targets for Tweedie, uniform
class labels with normal logits. The multiclass rows are N/10 (10^6 at N = 10^7) for
K = 10, and 5 N / K for wider K (K x rows = 5 * 10^7 elements for K = 100 and 1000), so
that every array fits in memory next to the peers' temporaries.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import lossdsl
from lossdsl import benchmark, peers

TASKS = ("value+grad", "grad+hess")
# (label, expression, classes): the families of issue #16's table
FAMILIES = [
    ("mse", "mse(y, p)", 0),
    ("huber", "huber(y, p)", 0),
    ("quantile", "quantile(y, p, 0.9)", 0),
    ("log_cosh", "log_cosh(y, p)", 0),
    ("bce_logits", "bce_logits(y, z)", 0),
    ("focal_logits", "focal_logits(y, z)", 0),
    ("tweedie (rho 1.5)", "tweedie(y, z, 1.5)", 0),
    ("sparse_cce K=10", "sparse_cce_logits(y, z)", 10),
    ("sparse_cce K=100", "sparse_cce_logits(y, z)", 100),
    ("sparse_cce K=1000", "sparse_cce_logits(y, z)", 1000),
]
PEERS = ("numpy", "numba", "torch", "torch.compile", "jax", "sklearn")
# rows per in-cache block of the compute wall: an input and the outputs of 16,384 float64
# rows (128 KiB each) stay in the L2/L3 caches; K classes take 16,384 / K rows
COMPUTE_BLOCK = 16_384


def rows_for(n: int, classes: int) -> int:
    """Rows of the benchmark data: N, or for K classes N/10 (K <= 10) and 5 N / K above."""
    if not classes:
        return n
    return max(1, n // 10 if classes <= 10 else (5 * n) // classes)


def measure(expression: str, classes: int, n: int, repeat: int, pause: float,
            include: tuple[str, ...]) -> tuple[dict[str, dict[str, float]], list[str], int]:
    """Best seconds per implementation and task for one family, the peers skipped, rows."""
    match, why = peers.match(expression)
    if match is None:
        raise SystemExit(f"{expression}: {why}")
    rows = rows_for(n, classes)
    inputs = peers.family_data(match, rows, classes or 2, np.float64)
    compiled = lossdsl.compile(expression, target="parallel")
    wrt = match.input_name(match.family.prediction)
    ours = {"value+grad": lambda: compiled.value_and_grad(wrt, **inputs),
            "grad+hess": lambda: compiled.grad_and_hessian(wrt, **inputs)}
    reference = {task: function() for task, function in ours.items()}
    reference["value"] = compiled(**inputs)
    implementations = {"lossdsl": ours}
    floor = peers.floor_peer(inputs, wrt, "parallel")
    implementations["floor"] = {task: floor.tasks[task] for task in TASKS}
    found, skipped = peers.build_peers(match, inputs, "parallel", include)
    for peer in found:
        try:
            peers.check_peer(peer, reference, np.float64)
        except peers.PeerMismatch:
            raise  # a peer computing other numbers is a bug: stop
        except Exception as error:  # a peer that cannot run here (a library's limit)
            skipped.append(f"{peer.name} failed: {type(error).__name__}: {error}")
            continue
        implementations[peer.name] = {task: f for task, f in peer.tasks.items() if task in TASKS}
    seconds = benchmark.interleaved_best(implementations, repeat, pause)
    seconds["compute"] = compute_wall(expression, wrt, inputs, rows, classes, repeat)
    return seconds, skipped, rows


def compute_wall(expression: str, wrt: str, inputs: dict, rows: int, classes: int,
                 repeat: int) -> dict[str, float]:
    """Seconds per task that lossdsl's arithmetic alone takes over ``rows`` rows on all
    cores: its one-thread kernel over an in-cache block of rows, called until it has seen
    ``rows`` rows (best of ``repeat``), divided by the cores."""
    block = max(1, min(rows, COMPUTE_BLOCK // max(classes, 1)))
    part = {name: value[:block] if isinstance(value, np.ndarray) and value.ndim
            and value.shape[0] == rows else value for name, value in inputs.items()}
    compiled = lossdsl.compile(expression, target="cpu")
    gradient, hessian = np.empty_like(part[wrt]), np.empty_like(part[wrt])
    calls = max(1, rows // block)
    tasks = {"value+grad": lambda: compiled.value_and_grad(wrt, out=gradient, **part),
             "grad+hess": lambda: compiled.grad_and_hessian(wrt, out=(gradient, hessian),
                                                            **part)}
    best = {}
    for task, function in tasks.items():
        function()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(calls):
                function()
            times.append(time.perf_counter() - start)
        best[task] = min(times) * rows / (calls * block) / (os.cpu_count() or 1)
    return best


def _cell(seconds: dict[str, dict[str, float]], name: str, task: str) -> str:
    theirs = seconds.get(name, {}).get(task)
    if theirs is None:
        return "—"
    return f"{theirs / seconds['lossdsl'][task]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="samples (default: 10^7)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default: 5)")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="idle seconds before each timed call (default: 0.3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N = 10^5, 2 rounds, short pauses, no torch.compile")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time torch.compile too (default: yes, except with --quick)")
    parser.add_argument("--skip", default="",
                        help=f"comma-separated peers to skip, of: {', '.join(PEERS)}")
    parser.add_argument("--only", default="", help="comma-separated family labels to run")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeat, args.pause = min(args.n, 100_000), 2, 0.02
    with_compile = args.torch_compile if args.torch_compile is not None else not args.quick
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(PEERS):
        parser.error(f"--skip: unknown peer(s) {', '.join(sorted(skip - set(PEERS)))}; "
                     f"the peers are {', '.join(PEERS)}")
    include = tuple(p for p in PEERS if p not in skip
                    and (p != "torch.compile" or with_compile))
    only = set(filter(None, args.only.split(",")))
    print(f"lossdsl {lossdsl.__version__}, {os.cpu_count()} cores, N = {args.n:,}, float64, "
          f"target=parallel, best of {args.repeat} interleaved rounds, pause {args.pause} s, "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", flush=True)
    results = []
    for label, expression, classes in FAMILIES:
        if only and label not in only:
            continue
        start = time.perf_counter()
        seconds, skipped, rows = measure(expression, classes, args.n, args.repeat, args.pause,
                                         include)
        results.append((label, seconds, rows))
        line = "  ".join(f"{name} " + "/".join(f"{seconds[name][t] * 1e3:.2f}"
                                                 if t in seconds[name] else "-" for t in TASKS)
                         for name in seconds)
        print(f"{label} ({rows:,} rows, {time.perf_counter() - start:.0f} s): ms v+g/g+h: "
              f"{line}" + (f"  [skipped: {'; '.join(skipped)}]" if skipped else ""),
              file=sys.stderr if args.markdown else sys.stdout, flush=True)
    if args.markdown:
        print("\n| loss | lossdsl v+g, g+h (ms) | lossdsl / floor (v+g, g+h) | "
              "compute / floor | NumPy / lossdsl | hand Numba / lossdsl | "
              "PyTorch eager / lossdsl | torch.compile / lossdsl | jax.jit / lossdsl | "
              "sklearn g+h / lossdsl g+h |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, seconds, rows in results:
            ours = seconds["lossdsl"]
            floor = seconds["floor"]
            name = label + (f" ({rows:,} rows)" if rows != args.n else "")
            cells = [f"{ours['value+grad'] * 1e3:.1f}, {ours['grad+hess'] * 1e3:.1f}",
                     f"{ours['value+grad'] / floor['value+grad']:.2f}, "
                     f"{ours['grad+hess'] / floor['grad+hess']:.2f}",
                     f"{seconds['compute']['value+grad'] / floor['value+grad']:.2f}, "
                     f"{seconds['compute']['grad+hess'] / floor['grad+hess']:.2f}"]
            for peer in ("numpy", "numba", "torch", "torch.compile", "jax"):
                cells.append(f"{_cell(seconds, peer, 'value+grad')}, "
                             f"{_cell(seconds, peer, 'grad+hess')}")
            cells.append(_cell(seconds, "sklearn", "grad+hess"))
            print(f"| {name} | " + " | ".join(cells) + " |")
        print("\n(v+g: value + gradient, g+h: gradient + Hessian diagonal; peer / lossdsl > 1 "
              "means lossdsl is faster; — : the peer does not have the loss or the task; "
              "compute: lossdsl's arithmetic alone on in-cache rows, divided by the cores)")


if __name__ == "__main__":
    main()
