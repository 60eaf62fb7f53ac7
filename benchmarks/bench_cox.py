"""Cox proportional hazards through XGBoost: lossdsl's ``cox_ph`` objective against the
built-in ``survival:cox``, training time per model and per objective call.

Synthetic survival data (10 features, log hazard x0 - 0.5 x1 + 0.3 x2 x3, exponential event
and censoring times, no ties so that both objectives train the same trees); the same trees,
rounds and threads; the two trainings alternate and the best of ``--repeat`` is kept.

    PYTHONPATH=. python3 benchmarks/bench_cox.py
    PYTHONPATH=. python3 benchmarks/bench_cox.py --rows 20000 200000 1000000 --rounds 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xgboost as xgb

import lossdsl.xgboost


def survival_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features, XGBoost survival labels: the time of an event, minus a censoring time)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 10))
    log_hazard = features[:, 0] - 0.5 * features[:, 1] + 0.3 * features[:, 2] * features[:, 3]
    event = rng.exponential(np.exp(-log_hazard))
    censoring = rng.exponential(2.0, rows)
    time_ = np.minimum(event, censoring)
    return features, np.where(event <= censoring, time_, -time_)


def best_time(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(rows: int, rounds: int, threads: int, repeat: int) -> str:
    """One row of the table: both trainings on ``rows`` samples, alternating."""
    params = {"max_depth": 4, "eta": 0.1, "nthread": threads, "tree_method": "hist"}
    features, y = survival_data(rows)
    dtrain = xgb.DMatrix(features, label=y, base_margin=np.zeros(rows))
    objective = lossdsl.xgboost.objective("cox_ph(y, z)")
    ours_params = {**params, "disable_default_eval_metric": 1}
    xgb.train(ours_params, dtrain, 1, obj=objective)  # compile the kernels first
    models: dict[str, xgb.Booster] = {}

    def builtin() -> None:
        models["builtin"] = xgb.train({**params, "objective": "survival:cox"}, dtrain, rounds)

    def ours() -> None:
        models["lossdsl"] = xgb.train(ours_params, dtrain, rounds, obj=objective)

    builtin_time = ours_time = float("inf")
    for _ in range(repeat):  # alternate, so both see the same machine load
        builtin_time = min(builtin_time, best_time(builtin, 1))
        ours_time = min(ours_time, best_time(ours, 1))
    margin = np.zeros(rows)
    call = best_time(lambda: objective(margin, dtrain), 5)
    same = np.allclose(models["builtin"].predict(dtrain, output_margin=True),
                       models["lossdsl"].predict(dtrain, output_margin=True), atol=1e-4)
    return (f"| {rows:,} | {builtin_time:.3f} | {ours_time:.3f} | "
            f"{ours_time / builtin_time:.2f}x | {call * 1e3:.1f} ms | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[20_000, 200_000])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"XGBoost {xgb.__version__}, depth 4, {args.rounds} rounds, {args.threads} threads, "
          f"best of {args.repeat}; seconds")
    print("| rows | built-in survival:cox | lossdsl cox_ph | ratio | lossdsl objective call |"
          " same model |")
    print("|---:|---:|---:|---:|---:|---|")
    for rows in args.rows:
        print(measure(rows, args.rounds, args.threads, args.repeat))


if __name__ == "__main__":
    main()
