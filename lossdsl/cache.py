"""The on-disk kernel cache: generated modules are written to files and imported.

Numba cannot cache functions built with ``exec`` (numba#3501), so each generated module is
written, atomically, to ``<cache dir>/lossdsl_<hash>.py`` and imported under that unique
name; its ``@njit(cache=True)`` functions then keep their machine code in the directory's
``__pycache__``, and a new process loads it instead of compiling. The hash covers the source,
Numba's version, lossdsl's version *and lossdsl's own source files* (see
:func:`package_fingerprint`), so a change of any of them is a new entry.

The directory is chosen, and checked, by :mod:`lossdsl.cachedir`: its files are executable
(imported modules, pickled indexes), so a directory others can write is refused. A corrupt
entry (a file whose contents do not match its hash, a directory in its place, one that fails
to import, machine code Numba cannot load: see :func:`discard`) is rewritten; two
processes writing the same entry at once both succeed because each writes a private temporary
file and renames it into place.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import numba

from . import cachedir
from ._version import __version__
from .cachedir import cache_dir
from .errors import LossError

_LOADED: dict[str, ModuleType] = {}
# reentrant: importing a kernel module loads the module of shared helpers it imports
_LOCK = threading.RLock()
#: The modules loaded that kernels import (the CPU helpers), by source: their name prefix.
_SHARED: dict[str, str] = {}


_SOURCE_SUFFIXES = (".py", ".lark", ".loss")


@functools.cache
def package_fingerprint() -> str:
    """A hash of lossdsl's own source: its ``.py``, ``.lark`` and ``.loss`` files.

    A generated module imports lossdsl's run-time code (``cpu_math``, ``cpu_runtime``,
    ``evaluate``), which Numba compiles into the entry's machine code, yet Numba only checks
    the entry's own file before reusing it; and the version string is not bumped for every
    change. So the key covers the package's files. Computed once per process (about 1 ms:
    some 50 files, under 0.5 MB).
    """
    package = Path(__file__).resolve().parent
    files = []
    for directory, subdirectories, names in os.walk(package):
        subdirectories[:] = sorted(d for d in subdirectories
                                   if d != "__pycache__" and not d.startswith("."))
        files.extend(Path(directory) / n for n in sorted(names) if n.endswith(_SOURCE_SUFFIXES))
    from .frontend.parse import (
        grammar_path,  # a source checkout keeps the grammar beside the package
    )

    try:
        grammar = grammar_path().resolve()
    except FileNotFoundError:
        grammar = None
    if grammar is not None and package not in grammar.parents:
        files.append(grammar)
    digest = hashlib.sha256()
    for path in files:
        try:
            content = path.read_bytes()
        except OSError:  # removed or unreadable meanwhile: its absence is part of the hash
            content = b"<unreadable>"
        name = os.path.relpath(path, package).replace(os.sep, "/")
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:20]


def source_key(source: str) -> str:
    """The cache key of a generated module."""
    text = (f"lossdsl {__version__} {package_fingerprint()}\n"
            f"numba {numba.__version__}\n{source}")
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


def _put_entry(path: Path, text: str, force: bool = False) -> None:
    """Make ``path`` a file holding ``text``, unless it already does (or ``force``)."""
    if not force:
        try:
            if path.read_text() == text:
                return
        except (OSError, UnicodeDecodeError):  # missing, or damaged: write it (again)
            pass
    if path.is_dir() and not path.is_symlink():
        # A directory where the entry belongs: a file cannot be renamed over it. It is ours to
        # remove: the whole cache directory is private (see cachedir).
        shutil.rmtree(path, ignore_errors=True)
    _write_atomically(path, text)


def _write_entry(name: str, text: str, force: bool = False) -> Path:
    """Write the entry ``name`` into the cache directory; where that fails, the private one."""
    directory = cache_dir()
    try:
        _put_entry(directory / f"{name}.py", text, force)
        return directory / f"{name}.py"
    except OSError as error:  # disk full, or the directory turned read-only after its check
        directory = cachedir.abandon(directory, error)
    try:
        _put_entry(directory / f"{name}.py", text, force)
    except OSError as error:
        raise LossError(f"cannot write the kernel cache entry {directory / name}.py: "
                        f"{error.strerror or error}",
                        hint="Set LOSSDSL_CACHE_DIR to a directory you own and can write."
                        ) from None
    return directory / f"{name}.py"


def discard(source: str, prefix: str = "lossdsl") -> None:
    """Forget a loaded module and delete its machine code (after it failed to load)."""
    key = source_key(source)
    with _LOCK:
        _LOADED.pop(key, None)
        sys.modules.pop(f"{prefix}_{key}", None)
        for path in (cache_dir() / "__pycache__").glob(f"{prefix}_{key}.*"):
            try:
                path.unlink()
            except OSError:
                pass


def discard_shared() -> None:
    """:func:`discard` every shared module loaded: a kernel that fails to load may have
    failed on their machine code, which it calls."""
    with _LOCK:
        for source, prefix in list(_SHARED.items()):
            discard(source, prefix)
        _SHARED.clear()


def load_module(source: str, prefix: str = "lossdsl") -> ModuleType:
    """Import the generated ``source``, writing it to the cache directory if needed, as the
    module ``<prefix>_<key>``: a kernel (``lossdsl_``), or a module kernels import
    (:mod:`lossdsl.backend.cpu.helpers`, ``lossdsl_helpers_``)."""
    key = source_key(source)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        name = f"{prefix}_{key}"
        if prefix != "lossdsl":
            _SHARED[source] = prefix
        text = f"# lossdsl cache key {key}\n{source}"
        path = _write_entry(name, text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            path = _write_entry(name, text, force=True)  # one retry from a fresh file
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        _LOADED[key] = module
        return module
