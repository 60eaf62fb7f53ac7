"""The project's front door: README commands, CI script and the shipped example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The indented command lines at the top of README.md, before the first rule."""
    head = (ROOT / "README.md").read_text().split("---", 1)[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    ")]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_command():
    install_and_run, install_and_test = readme_commands()[:2]
    assert "examples/" in install_and_run and "pip install" in install_and_run
    assert "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci.splitlines()
    assert re.search(r"^set -euo pipefail$", ci, re.M)  # pytest's exit 5 (no tests) fails CI


def test_shipped_example_runs_and_beats_least_squares():
    example = readme_commands()[0].split("&&")[1].split()[-1]
    env = dict(os.environ)
    result = subprocess.run([sys.executable, str(ROOT / example)], capture_output=True,
                            text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    costs = [float(x) for x in re.findall(r"mean cost per day = ([0-9.]+)", result.stdout)]
    least_squares, lossdsl_policy = costs
    assert lossdsl_policy < 0.8 * least_squares
