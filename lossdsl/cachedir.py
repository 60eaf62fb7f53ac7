"""Where lossdsl keeps its caches, and when that directory can be trusted.

The directory is ``$LOSSDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/lossdsl``, else
``~/.cache/lossdsl``. What it holds is code: generated modules that are imported, Numba's
machine-code index and Lark's grammar analysis, both of which are *unpickled* on load (and
unpickling can call any function). Whoever can write the directory can therefore run code in
every lossdsl process that uses it. :func:`cache_dir` only uses a directory that

- it creates private (mode 0700) when it is missing,
- is owned by the current user and not writable by group or others, and
- it can write (checked by creating a file there, which also catches read-only mounts).

Any other directory is refused with one :class:`CacheDirectoryWarning` per process that says
which directory, why and what to do; kernels are then kept in a private temporary directory
that lives as long as the process (so they still work, but each new process compiles again).
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from .errors import LossError


class CacheDirectoryWarning(UserWarning):
    """The configured cache directory was refused (others could write it, or it cannot be
    written); kernels go to a private temporary directory for this process instead."""


# Configured directory (as text) -> the directory used for it. Checked once per process: the
# checks cost a few system calls and a file creation, and the warning must come once.
_CHOSEN: dict[str, Path] = {}
_WARNED: set[str] = set()
_FALLBACK: Path | None = None
_LOCK = threading.RLock()

# Owner and mode checks need POSIX ownership; Windows has neither bits nor geteuid.
_POSIX = hasattr(os, "geteuid") and sys.platform != "win32"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def configured_dir() -> Path:
    """The directory the environment asks for (not yet checked; see :func:`cache_dir`)."""
    configured = os.environ.get("LOSSDSL_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lossdsl"


def cache_dir() -> Path:
    """The cache directory to use: the configured one when it is safe, else a private one.

    Creates the configured directory (mode 0700) on first use. Refusing it issues one
    :class:`CacheDirectoryWarning`; raises :class:`~lossdsl.LossError` only when no private
    temporary directory can be made either.
    """
    requested = configured_dir()
    key = str(requested)
    chosen = _CHOSEN.get(key)
    # One stat per call: a directory removed while the process runs is made (and checked) again.
    if chosen is not None and chosen.is_dir():
        return chosen
    with _LOCK:
        chosen = _CHOSEN.get(key)
        if chosen is not None and chosen.is_dir():
            return chosen
        problem = _problem(requested)
        if problem is None:
            # The resolved path: a symlink swapped after this check cannot redirect us.
            chosen = requested.resolve()
        else:
            chosen = _refuse(requested, *problem)
        _CHOSEN[key] = chosen
        return chosen


def abandon(directory: Path, error: OSError) -> Path:
    """Stop using ``directory`` after writing there failed; the private directory instead.

    For a directory that passed :func:`cache_dir`'s checks and then failed (disk full, made
    read-only while the process runs). Warns once, like a directory refused at the start.
    """
    with _LOCK:
        requested = configured_dir()
        reason = f"writing there failed ({_describe(error)})"
        advice = "Free space or fix its permissions, or set LOSSDSL_CACHE_DIR elsewhere."
        fallback = _refuse(requested, reason, advice, shown=directory)
        for key, chosen in list(_CHOSEN.items()):
            if chosen == directory:
                _CHOSEN[key] = fallback
        return fallback


def _problem(path: Path) -> tuple[str, str] | None:
    """Why ``path`` cannot be the cache directory (reason, advice), or None when it can."""
    other = "Set LOSSDSL_CACHE_DIR to a directory of your own."
    try:
        # 0700 whatever the umask allows; only the last component is ours to create private.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(path)
    except FileExistsError:
        return "it exists and is not a directory", other
    except OSError as error:
        return f"it cannot be created ({_describe(error)})", other
    if _POSIX:
        me = os.geteuid()
        if info.st_uid != me:
            return (f"it is owned by user id {info.st_uid}, not by you (user id {me}), and "
                    "whoever controls it can run code in your lossdsl processes through the "
                    "pickled and imported files it holds", other)
        if stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
            return (f"it is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}), "
                    "so anyone who can write it can run code in your lossdsl processes through "
                    "the pickled and imported files it holds",
                    f"Check its contents, then `chmod 700 {path}`, or set LOSSDSL_CACHE_DIR to "
                    "a private directory.")
    try:
        # A real write: permission bits say nothing about read-only mounts, ACLs or root.
        handle, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return (f"it is not writable ({_describe(error)})",
                "Make it writable, or set LOSSDSL_CACHE_DIR to a directory you can write.")
    return None


def _refuse(requested: Path, reason: str, advice: str, shown: Path | None = None) -> Path:
    """Warn (once per configured directory) and return the private fallback directory."""
    fallback = _private_fallback(requested, reason)
    key = str(requested)
    if key not in _WARNED:
        _WARNED.add(key)
        # One line: the path and the reason stay together in logs that keep one line per warning.
        warnings.warn(CacheDirectoryWarning(
            f"lossdsl cannot use the cache directory {shown or requested}: {reason}. Compiled "
            f"kernels are kept in {fallback} for this process only, so each new process "
            f"compiles them again. {advice}"), stacklevel=_user_stacklevel())
    return fallback


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning from :func:`_refuse` name the user's line."""
    frame = sys._getframe(2)  # 0: here, 1: _refuse, 2: its caller (stacklevel 2)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def _private_fallback(requested: Path, reason: str) -> Path:
    """This process's private temporary cache directory (0700, removed at exit)."""
    global _FALLBACK
    if _FALLBACK is not None and _FALLBACK.is_dir():
        return _FALLBACK
    try:
        _FALLBACK = Path(tempfile.mkdtemp(prefix="lossdsl-cache-"))  # always mode 0700
    except OSError as error:
        raise LossError(
            f"no usable cache directory: {requested}: {reason}, and no private temporary "
            f"directory could be made in {tempfile.gettempdir()} ({_describe(error)})",
            hint="Set LOSSDSL_CACHE_DIR to a directory you own and can write.") from None
    atexit.register(_remove, _FALLBACK, os.getpid())
    return _FALLBACK


def _remove(path: Path, owner: int) -> None:
    # A forked child (multiprocessing, Dask) inherits this handler and the directory it
    # shares with its parent: only the process that made the directory removes it.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _describe(error: OSError) -> str:
    return error.strerror or type(error).__name__
