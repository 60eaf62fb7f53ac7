"""The on-disk kernel cache: reuse across processes, corrupt entries, concurrent writers, the
key (lossdsl's own source), and which cache directories are trusted (issue 10, section 4)."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

# A loss no other test compiles, so these tests always start from an empty cache directory.
SCRIPT = textwrap.dedent("""
    import numpy as np, lossdsl
    L = lossdsl.compile("pseudo_huber(y, p, 1.75) + 0.25*l2(w) + 0.5*xlogy(1 + y*y, 2 + p*p)",
                        target="cpu")
    y = np.linspace(-1, 1, 50); p = np.cos(y); w = np.arange(3.0)
    value, grads = L.value_and_grad(("p", "w"), y=y, p=p, w=w)
    print(repr(value), repr(float(grads["p"].sum())))
""")


def kernel_entries(cache: Path) -> list[Path]:
    """The kernels' modules in a cache directory (not the shared helpers they import)."""
    return [path for path in cache.glob("lossdsl_*.py")
            if not path.name.startswith("lossdsl_helpers_")]


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
    assert len(kernel_entries(cache)) == 1
    # the helpers the kernel calls (h_select, ...) are a module of their own, shared by every
    # kernel of its dtype
    assert len(list(cache.glob("lossdsl_helpers_*.py"))) == 1
    assert "data saved to" in result.stdout  # numba wrote machine code
    assert list((cache / "__pycache__").glob("lossdsl_*.nbi"))
    assert list((cache / "__pycache__").glob("lossdsl_helpers_*.nbi"))


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


# --- Regression tests for issue 10, section 4 --------------------------------------------------

SCRIPT_TWO_LOSSES = SCRIPT.replace(
    "print(", 'lossdsl.compile("l1(w)")(w=w)\nprint(', 1
)  # one more kernel, so a warning printed once per kernel would show twice


def run_script(script: str, cache: Path, *, prefix: tuple[str, ...] = (), cwd=None,
               debug: bool = False) -> subprocess.CompletedProcess:
    """Run ``script`` in a new process with every warning shown (``-W always``)."""
    env = dict(os.environ, LOSSDSL_CACHE_DIR=str(cache))
    if debug:
        env["NUMBA_DEBUG_CACHE"] = "1"
    return subprocess.run([*prefix, sys.executable, "-W", "always", "-c", script],
                          capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


def cache_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CacheDirectoryWarning" in line]


@pytest.fixture
def fresh_cachedir(monkeypatch):
    """``cache_dir()`` as in a new process: nothing checked, nothing warned yet."""
    from lossdsl import cachedir

    monkeypatch.setattr(cachedir, "_CHOSEN", {}, raising=False)
    monkeypatch.setattr(cachedir, "_WARNED", set(), raising=False)
    return cachedir


def checked_cache_dir(cachedir, monkeypatch,
                      configured: Path) -> tuple[Path, list[warnings.WarningMessage]]:
    """The directory ``cache_dir()`` picks for ``configured``, asked twice, and its warnings."""
    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(configured))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = cachedir.cache_dir()
        assert cachedir.cache_dir() == chosen
    return chosen, caught


def assert_private(path: Path) -> None:
    info = os.stat(path)
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(info.st_mode) & 0o077 == 0, oct(info.st_mode)


def test_a_changed_lossdsl_with_the_same_version_compiles_again(first_run, tmp_path):
    # A copy of the package whose sqrt is off by one, at the same __version__: machine code
    # cached by the unchanged package must not be reused for it.
    root = Path(__file__).resolve().parents[2]
    copy = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(root / "lossdsl", copy / "lossdsl", ignore=ignore)
    shutil.copytree(root / "grammar", copy / "grammar", ignore=ignore)
    with open(copy / "lossdsl" / "backend" / "cpu" / "libm.py", "a") as stream:
        stream.write("\n\nimport math as _math\nfrom numba import njit as _njit\n\n\n"
                     "@_njit\ndef sqrt(x):\n    return _math.sqrt(x) + 1.0\n")
    cache, first = first_run
    shared = tmp_path / "cache"
    shutil.copytree(cache, shared)  # copy2 keeps mtimes: Numba would trust the old index
    script = "import lossdsl; assert 'copy' in lossdsl.__file__\n" + SCRIPT
    result = run_script(script, shared, cwd=copy, debug=True)
    assert result.returncode == 0, result.stderr
    assert "data saved to" in result.stdout  # compiled for the changed package
    assert len(kernel_entries(shared)) == 2
    assert result.stdout.splitlines()[-1] != first.stdout.splitlines()[-1]


def test_the_cache_key_covers_the_package_source(monkeypatch):
    from lossdsl import cache

    fingerprint = cache.package_fingerprint()
    assert fingerprint == cache.package_fingerprint()  # computed once per process
    key = cache.source_key("x = 1\n")
    monkeypatch.setattr(cache, "package_fingerprint", lambda: "another lossdsl")
    assert cache.source_key("x = 1\n") != key


def test_a_new_cache_directory_is_private(fresh_cachedir, tmp_path, monkeypatch):
    chosen, caught = checked_cache_dir(fresh_cachedir, monkeypatch, tmp_path / "new" / "cache")
    assert chosen == (tmp_path / "new" / "cache").resolve() and not caught
    assert stat.S_IMODE(os.stat(chosen).st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_cache_directory_others_can_write_is_refused(fresh_cachedir, tmp_path, monkeypatch,
                                                       mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    chosen, caught = checked_cache_dir(fresh_cachedir, monkeypatch, shared)
    assert chosen != shared.resolve()
    assert_private(chosen)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, fresh_cachedir.CacheDirectoryWarning)
    message = str(caught[0].message)
    assert str(shared) in message and "writable by" in message and "chmod 700" in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a directory to another user needs root")
def test_a_cache_directory_owned_by_another_user_is_refused(fresh_cachedir, tmp_path,
                                                            monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 54321, 54321)
    chosen, caught = checked_cache_dir(fresh_cachedir, monkeypatch, theirs)
    assert chosen != theirs.resolve()
    assert_private(chosen)
    assert len(caught) == 1
    assert "owned by" in str(caught[0].message) and "54321" in str(caught[0].message)


def test_a_cache_directory_that_cannot_be_created_falls_back(fresh_cachedir, tmp_path,
                                                             monkeypatch):
    from lossdsl import cache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    chosen, caught = checked_cache_dir(fresh_cachedir, monkeypatch, blocker / "cache")
    assert_private(chosen)
    assert len(caught) == 1 and str(blocker / "cache") in str(caught[0].message)
    # and kernels still load (before, every load_module raised NotADirectoryError)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        module = cache.load_module(f"VALUE = 42  # {tmp_path}\n")
    assert module.VALUE == 42 and not later  # warned once, not once per kernel
    assert Path(module.__file__).parent == chosen


def test_a_read_only_cache_directory_falls_back_with_one_warning(first_run, tmp_path):
    _, first = first_run
    frozen = tmp_path / "read-only"
    frozen.mkdir(mode=0o700)
    os.chmod(frozen, 0o500)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anywhere: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search,-fowner"
        prefix = (setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}")
    result = run_script(SCRIPT_TWO_LOSSES, frozen, prefix=prefix)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    found = cache_warnings(result.stderr)
    assert len(found) == 1, result.stderr
    assert str(frozen) in found[0] and "not writable" in found[0]
    assert not list(frozen.iterdir())


def test_a_shared_cache_directory_cannot_run_code_in_lossdsl(first_run, tmp_path):
    # Lark unpickles its grammar cache and Numba its index: a world-writable directory would
    # let anyone plant a pickle that runs code in every lossdsl process using it.
    _, first = first_run
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    marker = tmp_path / "code-ran"
    planted = b"0" * 64 + b"\n" + pickle.dumps(_Payload(str(marker)))
    (shared / "grammar.lark-cache").write_bytes(planted)
    result = run_script(SCRIPT_TWO_LOSSES, shared)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert result.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    found = cache_warnings(result.stderr)
    assert len(found) == 1 and str(shared) in found[0], result.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["grammar.lark-cache"]


class _Payload:
    """Unpickling this makes a directory: proof that a planted pickle was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_cache_entry_replaced_by_a_directory_is_repaired(fresh_cachedir, tmp_path,
                                                           monkeypatch):
    from lossdsl import cache

    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(tmp_path / "kernels"))
    source = f"VALUE = 7  # {tmp_path}\n"
    entry = fresh_cachedir.cache_dir() / f"lossdsl_{cache.source_key(source)}.py"
    entry.mkdir()
    (entry / "something").write_text("left here")
    assert cache.load_module(source).VALUE == 7
    assert entry.is_file()


def test_a_cache_directory_that_fails_later_falls_back(fresh_cachedir, tmp_path, monkeypatch):
    # Checked and fine at first, then a write fails (disk full): warn once, keep working.
    from lossdsl import cache

    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(tmp_path / "full"))
    full = fresh_cachedir.cache_dir()
    original = cache._write_atomically

    def no_space(path, text):
        if path.parent == full:
            raise OSError(28, "No space left on device")
        original(path, text)

    monkeypatch.setattr(cache, "_write_atomically", no_space)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = cache.load_module(f"VALUE = 1  # {tmp_path}\n")
        second = cache.load_module(f"VALUE = 2  # {tmp_path}\n")
    assert (first.VALUE, second.VALUE) == (1, 2)
    assert len(caught) == 1 and "No space left" in str(caught[0].message)
    assert Path(first.__file__).parent == Path(second.__file__).parent != full
    assert fresh_cachedir.cache_dir() == Path(first.__file__).parent


def test_machine_code_that_cannot_be_saved_falls_back(tmp_path):
    """Numba saving a kernel's machine code into a full disk: the first call was an
    "internal error" (the retry went to the same directory), not the private directory's
    fallback with one warning that a failed write of the module gives."""
    script = textwrap.dedent("""
        import errno, numpy as np, numba.core.caching, lossdsl
        save = numba.core.caching.Cache.save_overload
        failed = []
        def full(self, *args, **kwargs):
            if not failed:
                failed.append(1)
                raise OSError(errno.ENOSPC, "No space left on device")
            return save(self, *args, **kwargs)
        numba.core.caching.Cache.save_overload = full
        y = np.linspace(-3, 3, 101)
        print(lossdsl.compile("huber(y, p, 0.75) + 0.25*p^2")(y=y, p=np.zeros(101)))
    """)
    result = run_script(script, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    r = np.linspace(-3, 3, 101)
    expected = np.mean(np.where(np.abs(r) <= 0.75, 0.5 * r**2, 0.75 * (np.abs(r) - 0.375)))
    assert float(result.stdout.split()[-1]) == pytest.approx(expected, rel=1e-12)
    found = cache_warnings(result.stderr)
    assert len(found) == 1 and "No space left" in found[0], result.stderr


def test_cpu_kernels_share_one_module_of_helpers():
    # The registry's helpers (h_lgamma, ...) are compiled once per process, not with every
    # kernel: CPU kernels bind them from one generated module per dtype; the comparisons,
    # logic and selects (h_select, h_gt, ...) are intrinsics, one set per dtype
    # (backend/cpu/instructions.py).
    import numpy as np

    import lossdsl
    from lossdsl import cache

    y, p = np.linspace(0.0, 1.0, 20), np.linspace(-2.0, 2.0, 20)
    modules = []
    for text in ("huber(y, p, 0.5) + lgamma(2 + p*p)", "bce_logits(y, p) + lgamma(3 + p*p)"):
        compiled = lossdsl.compile(text, target="cpu")
        compiled.value_and_grad("p", y=y, p=p)
        source = compiled.source
        assert "def h_" not in source and "shared_helpers(" in source
        assert "h_select = _inline.h_select" in source
        modules.append(cache.load_module(source))  # the loaded kernel module
    assert modules[0].h_lgamma is modules[1].h_lgamma
    assert modules[0].h_select is modules[1].h_select
    assert modules[0]._helpers.__name__.startswith("lossdsl_helpers_")
