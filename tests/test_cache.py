"""The on-disk kernel cache: reuse across processes, corrupt entries, concurrent writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A loss no other test compiles, so these tests always start from an empty cache directory.
SCRIPT = textwrap.dedent("""
    import numpy as np, lossdsl
    L = lossdsl.compile("pseudo_huber(y, p, 1.75) + 0.25*l2(w)", target="cpu")
    y = np.linspace(-1, 1, 50); p = np.cos(y); w = np.arange(3.0)
    value, grads = L.value_and_grad(("p", "w"), y=y, p=p, w=w)
    print(repr(value), repr(float(grads["p"].sum())))
""")


def run(cache: Path, debug: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, LOSSDSL_CACHE_DIR=str(cache))
    if debug:
        env["NUMBA_DEBUG_CACHE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernels")
    result = run(cache, debug=True)
    assert result.returncode == 0, result.stderr
    return cache, result


def test_generated_modules_and_machine_code_are_written(first_run):
    cache, result = first_run
    modules = list(cache.glob("lossdsl_*.py"))
    assert len(modules) == 1
    assert "data saved to" in result.stdout  # numba wrote machine code
    assert list((cache / "__pycache__").glob("lossdsl_*.nbi"))


def test_a_new_process_loads_instead_of_compiling(first_run):
    cache, first = first_run
    second = run(cache, debug=True)
    assert second.returncode == 0, second.stderr
    assert "data loaded from" in second.stdout
    assert "data saved to" not in second.stdout  # nothing compiled again
    assert second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]


def test_a_corrupt_entry_is_rewritten(first_run, tmp_path):
    cache, first = first_run
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for module in cache.glob("lossdsl_*.py"):
        (damaged / module.name).write_text(module.read_text()[: len(module.read_text()) // 2])
    (damaged / "__pycache__").mkdir()
    for index in (cache / "__pycache__").glob("*.nb*"):
        (damaged / "__pycache__" / index.name).write_bytes(b"not a cache file")
    result = run(damaged)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]


def test_two_processes_compiling_the_same_loss_both_succeed(first_run, tmp_path):
    _, first = first_run
    env = dict(os.environ, LOSSDSL_CACHE_DIR=str(tmp_path / "shared"))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
        assert stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
