"""The on-disk kernel cache: generated modules are written to files and imported.

Numba cannot cache functions built with ``exec`` (numba#3501), so each generated module is
written, atomically, to ``<cache dir>/lossdsl_<hash>.py`` and imported under that unique
name; its ``@njit(cache=True)`` functions then keep their machine code in the directory's
``__pycache__``, and a new process loads it instead of compiling. The hash covers the source,
lossdsl's and Numba's versions, so a change of any of them is a new entry.

The directory is ``$LOSSDSL_CACHE_DIR`` or the user's cache directory. A corrupt entry (a
file whose contents do not match its hash, one that fails to import, machine code Numba
cannot load: see :func:`discard`) is rewritten; two
processes writing the same entry at once both succeed because each writes a private temporary
file and renames it into place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import numba

from .cachedir import cache_dir

_LOADED: dict[str, ModuleType] = {}
_LOCK = threading.Lock()


def source_key(source: str) -> str:
    """The cache key of a generated module."""
    from . import __version__

    text = f"lossdsl {__version__}\nnumba {numba.__version__}\n{source}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def discard(source: str) -> None:
    """Forget a loaded module and delete its machine code (after it failed to load)."""
    key = source_key(source)
    with _LOCK:
        _LOADED.pop(key, None)
        sys.modules.pop(f"lossdsl_{key}", None)
        for path in (cache_dir() / "__pycache__").glob(f"lossdsl_{key}.*"):
            try:
                path.unlink()
            except OSError:
                pass


def load_module(source: str) -> ModuleType:
    """Import the generated ``source``, writing it to the cache directory if needed."""
    key = source_key(source)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        name = f"lossdsl_{key}"
        path = cache_dir() / f"{name}.py"
        text = f"# lossdsl cache key {key}\n{source}"
        try:
            current = path.read_text()
        except (OSError, UnicodeDecodeError):
            current = None
        if current != text:  # missing, or corrupt/truncated: write it (again)
            _write_atomically(path, text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            _write_atomically(path, text)  # one retry from a freshly written file
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        _LOADED[key] = module
        return module
