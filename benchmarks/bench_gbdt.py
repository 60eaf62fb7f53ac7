"""Gradient-boosting training time: lossdsl objective vs built-in objective vs NumPy objective.

    python benchmarks/bench_gbdt.py                       # 10^6 rows, logistic and squared error
    python benchmarks/bench_gbdt.py --rows 200000 --rounds 10 --threads 4
    python benchmarks/bench_gbdt.py --library catboost-multiclass --rows 10000 --rounds 50

For XGBoost and LightGBM, trains the same model three ways from the same starting margin:
the library's built-in objective (C++), a lossdsl objective (one fused Numba kernel call per
round for gradient and Hessian) and the usual hand-written NumPy objective. The three are run
in turn ``--repeat`` times (interleaved, so that a burst of load on a shared machine hits all
of them) and the fastest run of each is reported, with the ratios to the built-in and the
time of one objective call (what a custom objective adds to each round). The target
(SPEC §5) is lossdsl at most 1.05x the built-in objective.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

LOSSES = {
    # name: (lossdsl text, XGBoost built-in, LightGBM built-in, NumPy grad/hess of raw scores)
    "logistic": ("bce_logits(y, p)", "binary:logistic", "binary",
                 lambda y, p: _logistic_numpy(y, p)),
    "squared_error": ("half_mse(y, p)", "reg:squarederror", "regression",
                      lambda y, p: (p - y, np.ones_like(p))),
}


def _logistic_numpy(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probability = 1.0 / (1.0 + np.exp(-p))
    return probability - y, probability * (1.0 - probability)


def make_data(rows: int, features: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic regression and binary labels on Gaussian features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    signal = X[:, 0] - 0.5 * X[:, 1] + 0.25 * X[:, 2] * X[:, 3]
    y = signal + rng.normal(scale=0.5, size=rows)
    return {"X": X, "squared_error": y.astype(np.float32),
            "logistic": (y > 0).astype(np.float32)}


def timed(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Fastest wall time of each run over ``repeat`` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def per_call(function: Callable[[], object], repeat: int = 10) -> float:
    """Median seconds of one call (objective cost per boosting round)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_xgboost(data, loss: str, rounds: int, threads: int, repeat: int) -> dict[str, float]:
    import xgboost as xgb

    import lossdsl.xgboost

    text, builtin, _, numpy_gradients = LOSSES[loss]
    y = data[loss]
    dtrain = xgb.DMatrix(data["X"], y, base_margin=np.zeros(len(y), dtype=np.float32),
                         nthread=threads)
    params = {"nthread": threads, "max_depth": 6, "eta": 0.1, "tree_method": "hist",
              "max_bin": 256}
    objective = lossdsl.xgboost.objective(text)

    def numpy_objective(predt, dmatrix):
        return numpy_gradients(dmatrix.get_label(), predt)

    margins = np.zeros(len(y), dtype=np.float32)  # XGBoost hands objectives float32 margins
    objective(margins, dtrain)  # compile (or load) the kernel
    runs = {
        "built-in": lambda: xgb.train({**params, "objective": builtin}, dtrain, rounds),
        "lossdsl": lambda: xgb.train(params, dtrain, rounds, obj=objective),
        "numpy": lambda: xgb.train(params, dtrain, rounds, obj=numpy_objective),
    }
    times = timed(runs, repeat)
    times["lossdsl call"] = per_call(lambda: objective(margins, dtrain))
    times["numpy call"] = per_call(lambda: numpy_objective(margins, dtrain))
    return times


def bench_lightgbm(data, loss: str, rounds: int, threads: int, repeat: int) -> dict[str, float]:
    import lightgbm as lgb

    import lossdsl.lightgbm

    text, _, builtin, numpy_gradients = LOSSES[loss]
    y = data[loss]
    dataset = lgb.Dataset(data["X"], y, init_score=np.zeros(len(y)),
                          params={"verbose": -1, "num_threads": threads, "max_bin": 255})
    dataset.construct()
    params = {"verbose": -1, "num_threads": threads, "num_leaves": 63, "learning_rate": 0.1,
              "boost_from_average": False}
    objective = lossdsl.lightgbm.objective(text)

    def numpy_objective(preds, train_data):
        return numpy_gradients(train_data.get_label(), preds)

    scores = np.zeros(len(y))  # LightGBM hands objectives float64 scores
    objective(scores, dataset)
    runs = {
        "built-in": lambda: lgb.train({**params, "objective": builtin}, dataset, rounds),
        "lossdsl": lambda: lgb.train({**params, "objective": objective}, dataset, rounds),
        "numpy": lambda: lgb.train({**params, "objective": numpy_objective}, dataset, rounds),
    }
    times = timed(runs, repeat)
    times["lossdsl call"] = per_call(lambda: objective(scores, dataset))
    times["numpy call"] = per_call(lambda: numpy_objective(scores, dataset))
    return times


class _SoftmaxObjective:
    """The plain-Python multiclass objective a CatBoost user writes (its documentation's
    pattern): per row, the negated gradient and the diagonal of the negated Hessian of the
    softmax cross-entropy."""

    def calc_ders_multi(self, approx, target, weight):
        top = max(approx)
        exps = [math.exp(a - top) for a in approx]
        total = sum(exps)
        k = int(target)
        w = 1.0 if weight is None else weight
        grad, hess = [], []
        for j, e in enumerate(exps):
            p = e / total
            grad.append(-w * (p - (1.0 if j == k else 0.0)))
            row = [0.0] * len(exps)
            row[j] = -w * p * (1.0 - p)
            hess.append(row)
        return grad, hess


class _ConstantObjective:
    """A multiclass objective that returns constant lists: CatBoost's per-row protocol alone,
    the floor of any Python objective."""

    def __init__(self, classes: int):
        self.grad = [0.1] * classes
        self.hess = [[-1.0 if i == j else 0.0 for j in range(classes)]
                     for i in range(classes)]

    def calc_ders_multi(self, approx, target, weight):
        return self.grad, self.hess


def bench_catboost_multiclass(rows: int, features: int, classes: int, iterations: int,
                              repeat: int) -> dict[str, float]:
    """CatBoost multiclass training: built-in ``MultiClass`` vs ``sparse_cce_logits`` through
    lossdsl (one objective call per row and iteration), a plain-Python softmax objective and
    a constant one; thread_count=1, the same trees (depth 6) for all."""
    from catboost import CatBoostClassifier

    import lossdsl.catboost

    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    centres = rng.normal(size=(classes, features))
    labels = np.argmax(X @ centres.T + rng.gumbel(size=(rows, classes)), axis=1)
    common = {"iterations": iterations, "depth": 6, "thread_count": 1, "verbose": False,
              "random_seed": 0, "classes_count": classes}
    given = lossdsl.catboost.model_params("sparse_cce_logits(y, z)", classifier=True)
    objective = given["loss_function"]

    def fit(**params):
        return lambda: CatBoostClassifier(**common, **params).fit(X, labels)

    runs = {
        "built-in": fit(loss_function="MultiClass"),
        "lossdsl": fit(**given),
        "python softmax": fit(loss_function=_SoftmaxObjective(), eval_metric="MultiClass"),
        "constant lists": fit(loss_function=_ConstantObjective(classes),
                              eval_metric="MultiClass"),
    }
    times = timed(runs, repeat)
    approx, softmax = list(rng.normal(size=classes)), _SoftmaxObjective()
    objective.calc_ders_multi(approx, 1.0, 1.0)

    def per_row(function) -> float:
        start = time.perf_counter()
        for _ in range(20000):
            function(approx, 1.0, 1.0)
        return (time.perf_counter() - start) / 20000

    times["lossdsl row"] = min(per_row(objective.calc_ders_multi) for _ in range(3))
    times["python row"] = min(per_row(softmax.calc_ders_multi) for _ in range(3))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loss", choices=[*LOSSES, "all"], default="all")
    parser.add_argument("--library", choices=["xgboost", "lightgbm", "all",
                                              "catboost-multiclass"], default="all",
                        help="catboost-multiclass: sparse_cce_logits on --rows rows and "
                             "--classes classes, --rounds iterations (not part of 'all')")
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args()
    if args.library == "catboost-multiclass":
        times = bench_catboost_multiclass(args.rows, args.features, args.classes,
                                          args.rounds, args.repeat)
        builtin = times["built-in"]
        print(f"CatBoost multiclass: rows={args.rows} classes={args.classes} "
              f"iterations={args.rounds} thread_count=1, fastest of {args.repeat} "
              "interleaved fits (s); one objective call per row: best of 3 x 20,000 (us)")
        for name in ("built-in", "lossdsl", "python softmax", "constant lists"):
            print(f"  {name:15s} {times[name]:8.3f} s  {times[name] / builtin:6.2f}x built-in")
        print(f"  per row call: lossdsl {1e6 * times['lossdsl row']:.2f} us, plain Python "
              f"softmax {1e6 * times['python row']:.2f} us")
        return
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    data = make_data(args.rows, args.features)
    losses = list(LOSSES) if args.loss == "all" else [args.loss]
    libraries = ["xgboost", "lightgbm"] if args.library == "all" else [args.library]
    print(f"rows={args.rows} features={args.features} rounds={args.rounds} "
          f"threads={args.threads} (training: fastest of {args.repeat} interleaved runs, s; "
          "one objective call: median, ms)")
    print(f"{'library':9s} {'loss':14s} {'built-in':>9s} {'lossdsl':>9s} {'numpy':>9s} "
          f"{'lossdsl/built-in':>17s} {'numpy/built-in':>15s} {'lossdsl call':>13s} "
          f"{'numpy call':>11s}")
    for library in libraries:
        bench = bench_xgboost if library == "xgboost" else bench_lightgbm
        for loss in losses:
            times = bench(data, loss, args.rounds, args.threads, args.repeat)
            print(f"{library:9s} {loss:14s} {times['built-in']:9.3f} {times['lossdsl']:9.3f} "
                  f"{times['numpy']:9.3f} {times['lossdsl'] / times['built-in']:16.3f}x "
                  f"{times['numpy'] / times['built-in']:14.3f}x "
                  f"{1e3 * times['lossdsl call']:10.1f} ms {1e3 * times['numpy call']:8.1f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
