"""The compiler's refactoring pin: every library loss generates the kernel source recorded in
``tests/golden/kernel_sources.json`` (see ``tests/golden/kernel_sources.py``). A change that
alters generated code re-records the hashes and says why in its commit message."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden")


def _script():
    spec = importlib.util.spec_from_file_location("kernel_sources", GOLDEN / "kernel_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_kernel_sources_match_the_recorded_hashes():
    script = _script()
    expected = json.loads((GOLDEN / "kernel_sources.json").read_text())
    recorded = {key: script.digest(source) for key, source in script.sources()}
    assert recorded.keys() == expected.keys(), "the catalog changed: re-record with --write"
    changed = sorted(key for key in expected if recorded[key] != expected[key])
    assert not changed, (f"{len(changed)} generated sources changed (first: {changed[:5]}); "
                         "diff them with --dump, and re-record with --write if intended")
