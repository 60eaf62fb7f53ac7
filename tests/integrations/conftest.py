"""Fixtures shared by the integration tests."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

BUSINESS_BENCH = (pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
                  / "bench_business.py")


@pytest.fixture(scope="session")
def business_bench():
    """benchmarks/bench_business.py as a module, loaded once (its smoke tests and the
    decision tests built on its tasks share it)."""
    spec = importlib.util.spec_from_file_location("bench_business", BUSINESS_BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
