"""Where lossdsl keeps its caches: ``$LOSSDSL_CACHE_DIR`` or the user's cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache directory (created on first use)."""
    configured = os.environ.get("LOSSDSL_CACHE_DIR")
    if configured:
        path = Path(configured)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "lossdsl"
    path.mkdir(parents=True, exist_ok=True)
    return path
