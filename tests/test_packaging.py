"""A non-editable install works: the wheel carries the grammar and the prelude."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(directory),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    (built,) = directory.glob("lossdsl-*.whl")
    return built


def test_wheel_contains_grammar_and_prelude(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "lossdsl/grammar/lossdsl.lark" in names
    prelude = sorted(path.name for path in (ROOT / "lossdsl" / "prelude").glob("*.loss"))
    assert prelude
    for name in prelude:
        assert f"lossdsl/prelude/{name}" in names


def test_installed_wheel_parses_and_compiles_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=600,
    )
    script = (
        "import numpy as np, lossdsl, lossdsl.frontend.parse as p\n"
        "assert 'site' in str(p.grammar_path()), p.grammar_path()\n"
        "L = lossdsl.compile('huber(y, p, 1.0)', reduction='sum')\n"
        "print(L(y=np.zeros(3), p=np.array([0.5, 2.0, -3.0])))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target), LOSSDSL_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(0.125 + 1.5 + 2.5)
