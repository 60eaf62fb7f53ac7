"""Shared test setup: a persistent kernel cache so compiled losses are reused across runs."""

import os
import pathlib

# Compiled kernels are cached on disk; keep the tests' cache beside the tests so a second run
# (and every test module) reuses machine code instead of compiling again.
os.environ.setdefault(
    "LOSSDSL_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "kernels"),
)
