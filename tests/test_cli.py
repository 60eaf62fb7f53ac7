"""The ``lossdsl`` command line, driven as a user drives it.

Most tests run ``python -m lossdsl ...`` in a subprocess and check its stdout, stderr and exit
status; the subprocesses share the on-disk kernel cache of ``conftest.py`` (inherited through
the environment) so kernels compile once. A few cheap variations call ``cli.main`` in-process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl import cli

GOOD = """\
# business losses
param under = 3.0
def asym(y, p, under=3.0, over=1.0) = where(p < y, under*(y - p), over*(p - y))
# a missed fraud costs 40x a false alarm
loss fraud = 40*y*softplus(-p) + (1 - y)*softplus(p)
loss stock = asym(y, p, under=under)
"""

BAD = """\
param delta = 1.0
loss fine = huber(y, p, delta)
loss oops = huberr(y, p, delta)
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m lossdsl ARGS`` with the tests' environment (and kernel cache)."""
    return subprocess.run([sys.executable, "-m", "lossdsl", *args], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ), timeout=300)


def call(capsys, *args: str) -> tuple[int, str, str]:
    """``cli.main(ARGS)`` in this process: (exit status, stdout, stderr)."""
    status = cli.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "good.loss").write_text(GOOD)
    (tmp_path / "bad.loss").write_text(BAD)
    (tmp_path / "syntax.loss").write_text("loss a = (y - p\nloss b = y\n")
    return tmp_path


def assert_caret(stderr: str, location: str, source_line: str, column: int) -> None:
    """stderr has ``location``, then the source line, then a caret under ``column``."""
    lines = stderr.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(location))
    assert lines[index + 1].strip() == source_line.strip()
    caret_line = lines[index + 2]
    indent = len(lines[index + 1]) - len(lines[index + 1].lstrip())
    assert caret_line.index("^") - indent == column - 1, stderr


# ----------------------------------------------------------------------------------- help


def test_help_lists_every_command_and_explains_loss_arguments():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("check", "derive", "codegen", "eval", "plot", "list", "show", "bench"):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.MULTILINE), command
    assert "FILE.loss:NAME" in result.stdout and "file:line:col" in result.stdout


@pytest.mark.parametrize("command", ["check", "derive", "codegen", "eval", "plot", "list",
                                     "show", "bench"])
def test_each_command_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lossdsl {command}")
    assert f"lossdsl {command}" in out.split("examples:")[1]


def test_no_command_prints_help_and_fails(capsys):
    status, out, _ = call(capsys)
    assert status == 2 and "COMMAND" in out


def test_installed_script_runs():
    script = shutil.which("lossdsl")
    if script is None:
        pytest.skip("the lossdsl script is not on PATH (package not installed with pip)")
    result = subprocess.run([script, "--version"], capture_output=True, text=True,
                            env=dict(os.environ), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"lossdsl {lossdsl.__version__}"


# ---------------------------------------------------------------------------------- check


def test_check_reports_each_error_with_caret_and_exit_status_1(files):
    result = run_cli("check", "good.loss", "bad.loss", "syntax.loss", "missing.loss", cwd=files)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "good.loss: ok (2 losses, 1 def, 1 param)" in result.stdout
    assert_caret(result.stderr, "bad.loss:3:13: E202 unknown function 'huberr'",
                 "loss oops = huberr(y, p, delta)", 13)
    assert "did you mean 'huber'?" in result.stderr
    # the missing ')' is reported where it is missing, not at the next line's 'loss'
    assert_caret(result.stderr, "syntax.loss:1:16: E110 missing ')'", "loss a = (y - p", 16)
    assert "missing.loss" in result.stderr and "No such file" in result.stderr
    assert "3 of 4 files failed" in result.stderr


def test_check_passes_clean_files_and_finds_shape_errors(files, capsys):
    assert call(capsys, "check", "-q", str(files / "good.loss")) == (0, "", "")
    (files / "shape.loss").write_text("# labels are a vector\nloss a = pick(z, y) + rowsum(y)\n")
    status, _, err = call(capsys, "check", str(files / "shape.loss"))
    assert status == 1
    assert "shape.loss:2:" in err and "needs a per-class matrix" in err and "^" in err
    (files / "def.loss").write_text("def f(x) = x + zz\n")
    status, _, err = call(capsys, "check", str(files / "def.loss"))
    assert status == 1 and "def.loss:1:16: E202 unknown name 'zz'" in err


MISTAKES = """\
param under = 3.0
loss stock = where(p < y, undr*(y - p), p - y)
loss a = y - p
loss a = p - y
param k = 1
param k = 2
let r = r + p
loss b = (y - p
loss c = hubr(y, p)
loss d = pick(z, u) + rowsum(u)
"""


def test_check_reports_every_error_of_a_file_ruff_style(tmp_path, capsys):
    """Only the first error per file was reported; duplicates (last wins), a let using itself
    and a misspelt param (a new input) passed with 'ok'."""
    path = tmp_path / "mistakes.loss"
    path.write_text(MISTAKES)
    status, out, err = call(capsys, "check", str(path))
    assert status == 1 and out == ""
    found = re.findall(rf"^{re.escape(str(path))}:(\d+):(\d+): ([EW]\d+) (.*)$", err, re.MULTILINE)
    assert [(int(line), int(column), code) for line, column, code, _ in found] == [
        (2, 27, "W201"),  # undr: one edit from the param under
        (4, 6, "E201"),  # loss a again
        (6, 7, "E201"),  # param k again
        (7, 9, "E203"),  # let r = r + p
        (8, 16, "E110"),  # the missing ')', at the end of line 8, not on line 9
        (9, 10, "E202"),  # hubr
        (10, 18, "E401"),  # rowsum of labels, found by type-checking the loss
    ]
    assert "did you mean 'under'?" in err and "did you mean 'huber'?" in err
    assert_caret(err, f"{path}:2:27: W201", "loss stock = where(p < y, undr*(y - p), p - y)", 27)
    assert err.rstrip().endswith("1 of 1 file failed")


def test_check_warnings_pass_unless_strict(tmp_path, capsys):
    path = tmp_path / "stock.loss"
    path.write_text("param under = 3.0\nloss stock = where(p < y, undr*(y - p), p - y)\n")
    status, out, err = call(capsys, "check", str(path))
    assert status == 0 and "ok (1 loss, 0 defs, 1 param, 1 warning)" in out
    assert "W201 input 'undr' is one edit away from the param 'under'" in err
    assert call(capsys, "check", "-q", str(path)) == (0, "", "")
    status, out, err = call(capsys, "check", "-q", "--strict", str(path))
    assert status == 1 and "W201" in err
    # near misses of the library's losses count; names that merely resemble a built-in
    # function (cost, cos) do not: a function cannot be used without arguments
    path.write_text("hubr + cost*y")
    status, out, err = call(capsys, "check", str(path))
    assert "'hubr' is one edit away from the library def 'huber'" in err
    assert "input 'cost'" not in err


def test_check_names_unreadable_files_with_a_position(tmp_path, capsys):
    (tmp_path / "latin1.loss").write_bytes("# co\xfbt\nloss a = y\n".encode("latin-1"))
    (tmp_path / "bom.loss").write_bytes(b"\xef\xbb\xbfloss a = y - p\n")
    (tmp_path / "binary.loss").write_bytes(b"\x00\x01\x02")
    (tmp_path / "passwd.loss").write_text('import "../secret"\n')
    (tmp_path.parent / "secret").write_text("admin:x:0:0:hunter2\n")
    names = ["latin1.loss", "bom.loss", "binary.loss", "passwd.loss", "nothere.loss"]
    status, out, err = call(capsys, "check", *[str(tmp_path / name) for name in names])
    assert status == 1 and "bom.loss: ok (1 loss" in out
    assert f"{tmp_path / 'latin1.loss'}:1:5: E102 byte 0xfb is not UTF-8 text" in err
    assert f"{tmp_path / 'binary.loss'}:1:1: E102 " in err
    assert f"{tmp_path / 'nothere.loss'}:1:1: E101 " in err
    assert "does not parse as loss text" in err and "hunter2" not in err and "admin" not in err
    assert "4 of 5 files failed" in err


# --------------------------------------------------------------------------------- derive


def test_derive_prints_formulas_that_are_the_derivatives():
    result = run_cli("derive", "huber(y, p, delta)", "--wrt", "p", "--hessian")
    assert result.returncode == 0, result.stderr
    formulas = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    formulas = {label.strip(): text for label, text in formulas.items()}
    assert set(formulas) == {"loss", "d/dp", "d2/dp2"}
    # the printed formulas are loss-language source: compile them and compare with the math
    rng = np.random.default_rng(1)
    y, p = rng.normal(size=200), rng.normal(size=200) * 2
    delta = np.full(200, 0.7)
    gradient = lossdsl.compile(formulas["d/dp"], reduction="none")
    hessian = lossdsl.compile(formulas["d2/dp2"], reduction="none")
    inputs = {name: {"y": y, "p": p, "delta": delta}[name] for name in gradient.inputs}
    np.testing.assert_allclose(gradient(**inputs), np.clip(p - y, -0.7, 0.7), rtol=1e-12)
    inputs = {name: {"y": y, "p": p, "delta": delta}[name] for name in hessian.inputs}
    np.testing.assert_allclose(hessian(**inputs), (np.abs(p - y) <= 0.7).astype(float))


def test_derive_latex_and_default_input(capsys):
    status, out, _ = call(capsys, "derive", "bce_logits", "--hessian", "--latex")
    assert status == 0
    assert r"\frac{\partial \ell}{\partial z} = " in out
    assert r"\frac{\partial^2 \ell}{\partial z^2} = " in out
    assert r"\sigma\left(z\right)" in out and "sigmoid" not in out


def test_derive_syntax_error_has_caret_and_no_traceback():
    result = run_cli("derive", "huber(y, p")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert_caret(result.stderr, "<string>:1:11: missing ')'", "huber(y, p", 11)


def test_derive_picks_losses_from_files(files, capsys):
    status, out, _ = call(capsys, "derive", f"{files}/good.loss:fraud", "--no-loss")
    assert status == 0 and out.startswith("d/dp") and "sigmoid" in out
    status, _, err = call(capsys, "derive", f"{files}/good.loss")
    assert status == 1 and "several losses (fraud, stock)" in err
    status, _, err = call(capsys, "derive", f"{files}/good.loss:frod")
    assert status == 1 and "did you mean 'fraud'?" in err
    status, _, err = call(capsys, "derive", "mse(y, p)", "--wrt", "q")
    assert status == 1 and "'q' is not an input" in err


# -------------------------------------------------------------------------------- codegen


def test_codegen_prints_kernel_source(capsys):
    result = run_cli("codegen", "huber(y, p, 1.0)", "--target", "parallel", "--hessian")
    assert result.returncode == 0, result.stderr
    assert "@njit" in result.stdout and "prange" in result.stdout
    assert "def run(" in result.stdout
    status, out, _ = call(capsys, "codegen", "mse", "--dtype", "float32", "--no-grad")
    assert status == 0 and "T = numpy.float32" in out


# ----------------------------------------------------------------------------------- eval


@pytest.fixture
def table(tmp_path: Path):
    rng = np.random.default_rng(7)
    n = 1000
    y, p, w = rng.normal(size=n), rng.normal(size=n) * 2, rng.uniform(0.1, 3.0, size=n)
    lines = ["label,score,amount"] + [f"{a!r},{b!r},{c!r}" for a, b, c in
                                      zip(y.tolist(), p.tolist(), w.tolist(), strict=True)]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    return tmp_path, y, p, w


def test_eval_streams_csv_in_chunks_and_matches_in_memory(table):
    folder, y, p, w = table
    result = run_cli("eval", "huber(y, p, 1.0)", "--data", "data.csv", "--map", "y=label",
                     "--map", "p=score", "--weight", "amount", "--grad", "p", "--hessian", "p",
                     "--chunk-size", "137", "--progress", "--json", "-o", "out.csv", cwd=folder)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = lossdsl.compile("huber(y, p, 1.0)")(y=y, p=p, sample_weight=w)
    assert report["value"] == pytest.approx(expected, rel=1e-12)
    assert report["rows"] == 1000 and report["total_weight"] == pytest.approx(w.sum())
    assert "100.0%" in result.stderr and "1,000 rows" in result.stderr  # the progress bar
    written = np.genfromtxt(folder / "out.csv", delimiter=",", names=True)
    per_sample = lossdsl.compile("huber(y, p, 1.0)", reduction="none")
    np.testing.assert_array_equal(written["loss"], per_sample(y=y, p=p))
    np.testing.assert_array_equal(written["grad_p"], np.clip(p - y, -1, 1))
    np.testing.assert_array_equal(written["hess_p"], (np.abs(p - y) <= 1).astype(float))


def test_eval_npz_matrix_input_sum_and_npy_output(tmp_path, capsys):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 4))
    labels = rng.integers(0, 4, size=500).astype(float)
    np.savez(tmp_path / "d.npz", logits=z, label=labels)
    status, out, err = call(capsys, "eval", "sparse_cce_logits", "--data", str(tmp_path / "d.npz"),
                            "--map", "y=label,z=logits", "--reduction", "sum", "--grad", "z",
                            "--chunk-size", "64", "--json", "-o", str(tmp_path / "o.npy"))
    assert status == 0, err
    expected = lossdsl.compile("sparse_cce_logits(y, z)", reduction="sum")(y=labels, z=z)
    assert json.loads(out)["value"] == pytest.approx(expected, rel=1e-12)
    written = np.load(tmp_path / "o.npy")
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(written["grad_z"], softmax - np.eye(4)[labels.astype(int)],
                               atol=1e-12)
    assert written.shape == (500,)


def test_eval_npy_columns_and_loss_that_reduces_itself(tmp_path, capsys):
    rng = np.random.default_rng(4)
    data = rng.uniform(0.1, 0.9, size=(300, 2))
    np.save(tmp_path / "d.npy", data)
    expression = "mse(y, p) + 0.5*mean(p)^2"  # the mean over samples needs every row at once
    status, out, err = call(capsys, "eval", expression, "--data", str(tmp_path / "d.npy"),
                            "--map", "y=0,p=1", "--chunk-size", "50", "--json")
    assert status == 0 and "one piece" in err
    expected = lossdsl.compile(expression)(y=data[:, 0], p=data[:, 1])
    assert json.loads(out)["value"] == pytest.approx(expected, rel=1e-12)


def test_eval_parquet_round_trip(table, capsys):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    folder, y, p, w = table
    parquet.write_table(pyarrow.table({"label": y, "score": p}), folder / "d.parquet",
                        row_group_size=300)
    status, out, err = call(capsys, "eval", "mse", "--data", str(folder / "d.parquet"),
                            "--map", "y=label,p=score", "--chunk-size", "128", "--json",
                            "--grad", "p", "-o", str(folder / "o.parquet"))
    assert status == 0, err
    assert json.loads(out)["value"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    written = parquet.read_table(folder / "o.parquet")
    np.testing.assert_allclose(written.column("grad_p").to_numpy(), 2 * (p - y), rtol=1e-12)


def test_eval_without_pyarrow_says_how_to_install_it(table):
    folder, *_ = table
    (folder / "d.parquet").write_bytes(b"PAR1")
    program = ("import sys; sys.modules['pyarrow'] = None; from lossdsl.cli import main; "
               "sys.exit(main(['eval', 'mse', '--data', 'd.parquet']))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            cwd=folder, env=dict(os.environ), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'lossdsl[cli]'" in result.stderr


def test_eval_reports_data_errors(table, capsys):
    folder, *_ = table
    status, _, err = call(capsys, "eval", "mse", "--data", str(folder / "data.csv"),
                          "--map", "y=lable,p=score")
    assert status == 1 and "no column 'lable'" in err and "did you mean 'label'?" in err
    status, _, err = call(capsys, "eval", "mse", "--data", str(folder / "data.csv"))
    assert status == 1 and "--map y=COLUMN" in err
    (folder / "broken.csv").write_text("y,p\n1,2\n3,oops\n")
    status, _, err = call(capsys, "eval", "mse", "--data", str(folder / "broken.csv"))
    assert status == 1 and "line 3, column 2 ('p')" in err and "'oops'" in err


# ----------------------------------------------------------------------------------- plot


def _pixel_of(panel: dict, x: float, value: float) -> tuple[int, int]:
    """Image (row, column) of data point (x, value) inside a panel's box."""
    left, top, right, bottom = panel["box"]
    (x_low, x_high), (y_low, y_high) = panel["xlim"], panel["ylim"]
    column = left + (x - x_low) / (x_high - x_low) * (right - left)
    row = top + (y_high - value) / (y_high - y_low) * (bottom - top)
    return int(round(row)), int(round(column))


def _has_color_near(image: np.ndarray, row: int, column: int, color: str, radius: int = 3):
    target = np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    window = image[row - radius:row + radius + 1, column - radius:column + radius + 1, :3]
    return bool((np.abs(window - target).max(axis=2) < 0.12).any())


def test_plot_writes_a_png_whose_curves_are_where_the_formulas_say(tmp_path):
    from matplotlib import image as matplotlib_image

    result = run_cli("plot", "mse", "huber", "--range", "-2:2", "--points", "201",
                     "-o", "curves.png", "--data-out", "curves.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    data = json.loads((tmp_path / "curves.json").read_text())
    x = np.array(data["x"])
    assert x[0] == -2 and x[-1] == 2 and len(x) == 201
    mse, huber = data["curves"]
    assert (mse["label"], huber["label"]) == ("mse", "huber")
    np.testing.assert_allclose(mse["loss"], x ** 2, rtol=1e-12)
    np.testing.assert_allclose(mse["gradient"], 2 * x, rtol=1e-12)
    np.testing.assert_allclose(mse["hessian"], 2.0)
    np.testing.assert_allclose(huber["loss"], np.where(abs(x) <= 1, x ** 2 / 2, abs(x) - 0.5))
    np.testing.assert_allclose(huber["gradient"], np.clip(x, -1, 1))

    image = matplotlib_image.imread(tmp_path / "curves.png")
    layout = data["layout"]
    assert image.shape[:2] == (layout["height"], layout["width"])
    assert (image[..., :3].min(axis=2) < 0.5).mean() > 0.01  # something was drawn
    panels = layout["panels"]
    blue, orange = panels["loss"]["colors"]
    for value in (-1.8, -1.2, 0.6, 1.5):
        assert _has_color_near(image, *_pixel_of(panels["loss"], value, value ** 2), blue)
        assert _has_color_near(image, *_pixel_of(panels["gradient"], value, 2 * value), blue)
        assert _has_color_near(image, *_pixel_of(panels["hessian"], value, 2.0), blue)
        huber_gradient = float(np.clip(value, -1, 1))
        assert _has_color_near(image, *_pixel_of(panels["gradient"], value, huber_gradient),
                               orange)
    # and not where the formulas do not put it
    assert not _has_color_near(image, *_pixel_of(panels["loss"], 1.5, 0.5), blue)
    assert not _has_color_near(image, *_pixel_of(panels["gradient"], -1.5, 1.0), blue)


def test_plot_svg_logits_and_errors(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "logits.svg"
    status, out, err = call(capsys, "plot", "bce_logits", "bce_logits(y, z, pos_weight=3)",
                            "--at", "y=1", "--range", "-6:6", "--no-hessian", "-o", str(target),
                            "--data-out", str(tmp_path / "d.json"))
    assert status == 0, err
    text = target.read_text()
    assert "<svg" in text and "</svg>" in text
    data = json.loads((tmp_path / "d.json").read_text())
    z = np.array(data["x"])
    np.testing.assert_allclose(data["curves"][1]["loss"], 3 * np.log1p(np.exp(-z)), rtol=1e-12)
    status, _, err = call(capsys, "plot", "mse", "-o", str(tmp_path / "x.jpg"))
    assert status == 1 and ".png, .svg or .pdf" in err
    status, _, err = call(capsys, "plot", "mse", "--range", "3:-3", "-o", str(target))
    assert status == 2 and "LOW:HIGH" in err
    status, _, err = call(capsys, "plot", "sparse_cce_logits", "-o", str(target))
    assert status == 1 and "per-class matrix" in err


# ----------------------------------------------------------------------------- list, show


def test_list_shows_the_library():
    result = run_cli("list")
    assert result.returncode == 0
    assert re.search(r"^huber\(y, p, delta in \(0, inf\) = 1\.0\)\s+Huber loss", result.stdout,
                     re.MULTILINE)
    names = [entry.name for entry in lossdsl.catalog.entries()]
    assert all(re.search(rf"^{name}\(", result.stdout, re.MULTILINE) for name in names)


def test_show_prints_formula_parameters_and_symbolic_derivatives(capsys, files):
    status, out, _ = call(capsys, "show", "huber")
    assert status == 0
    assert out.startswith("huber(y, p, delta in (0, inf) = 1.0)")
    assert "parameters  delta = 1.0" in out
    assert re.search(r"d/dp\s+= where\(abs\(p - y\) <= delta, p - y, delta \* sign\(p - y\)\)",
                     out)
    assert re.search(r"d2/dp2\s+= ", out)
    status, _, err = call(capsys, "show", "hubber")
    assert status == 1 and "did you mean 'huber'?" in err
    status, out, _ = call(capsys, "show", f"{files}/good.loss:fraud", "--latex")
    assert status == 0 and "a missed fraud costs 40x" in out and r"\frac{\partial" in out


# ---------------------------------------------------------------------------------- bench


def test_bench_prints_times_and_ratios(capsys):
    status, out, err = call(capsys, "bench", "huber(y, p, 1.0)", "-n", "20000", "--repeat",
                            "2", "--target", "cpu")
    assert status == 0, err
    for task in ("value", "value+grad", "grad+hess"):
        row = re.search(rf"^{re.escape(task)}\s+(.*)$", out, re.MULTILINE)
        assert row, out
        assert re.search(r"\d+(\.\d+)? (us|ms|s)\s+\d+(\.\d+)? (us|ms|s)\s+\d+\.\d+x", row[1])
    assert "numpy/lossdsl" in out


@pytest.mark.parametrize("content, line", [(b"y,p\n1,2\n1,\xe9\n", 3), (b"y,\xe9\n1,2\n", 1)])
def test_eval_names_the_line_of_a_csv_that_is_not_utf8(tmp_path, capsys, content, line):
    (tmp_path / "latin.csv").write_bytes(content)
    status, out, err = call(capsys, "eval", "huber", "--data", str(tmp_path / "latin.csv"))
    assert status != 0 and "Traceback" not in err
    assert ("header line" if line == 1 else f"line {line}") in err and "not UTF-8" in err


# ------------------------------------------------------------------- eval: user journeys
def test_eval_of_group_and_risk_set_losses_does_not_split_them_into_chunks(capsys, tmp_path):
    """A query, its pairs or a risk set that crosses a chunk boundary was scored as two
    groups (a wrong value, exit 0): such losses are evaluated in one piece."""
    rng = np.random.default_rng(0)
    y, z, q = rng.integers(0, 3, 20), rng.normal(size=20), np.repeat(np.arange(5), 4)
    t = rng.uniform(1, 5, 20) * np.where(rng.uniform(size=20) < 0.7, 1, -1)
    data = tmp_path / "rank.csv"
    data.write_text("y,z,q,t\n" + "".join(f"{a},{float(b)!r},{c},{float(d)!r}\n"
                                          for a, b, c, d in zip(y, z, q, t)))
    for text, inputs in [("softmax_ranking(y, z, q)", {"y": y, "z": z, "q": q}),
                         ("ranknet(y, z, q)", {"y": y, "z": z, "q": q}),
                         ("cox_ph(t, z)", {"t": t, "z": z})]:
        expected = lossdsl.compile(text)(**inputs)
        for chunk in ("3", "500000"):
            status, out, _ = call(capsys, "eval", text, "--data", str(data), "--json",
                                  "--chunk-size", chunk)
            assert status == 0 and json.loads(out)["value"] == pytest.approx(expected, rel=1e-12)


def test_eval_refuses_to_write_over_its_data_and_a_file_without_rows(capsys, tmp_path):
    data = tmp_path / "same.csv"
    data.write_text("y,p\n1,2\n3,5\n")
    status, _, err = call(capsys, "eval", "mse(y, p)", "--data", str(data), "-o", str(data))
    assert status == 1 and "is the --data file" in err
    assert data.read_text() == "y,p\n1,2\n3,5\n"
    (tmp_path / "empty.csv").write_text("y,p\n")
    status, _, err = call(capsys, "eval", "mse(y, p)", "--data", str(tmp_path / "empty.csv"))
    assert status == 1 and "has no data rows" in err


def test_eval_reads_quoted_line_breaks_and_a_byte_order_mark(capsys, tmp_path):
    """A quoted field holding a line break is one field whatever the chunk size (a chunk cut
    inside it made the rest a data row: 22.0 over 3 rows for 1.0 over 2); Excel's UTF-8
    byte-order mark is not part of the first column's name."""
    data = tmp_path / "notes.csv"
    data.write_bytes('\ufeffy,p,note\n1,2,"x\n9,1,""y"""\n3,4,z\n'.encode())
    for chunk in ("1", "2", "100"):
        status, out, _ = call(capsys, "eval", "mse(y, p)", "--data", str(data), "--json",
                              "--chunk-size", chunk)
        assert status == 0 and (json.loads(out)["value"], json.loads(out)["rows"]) == (1.0, 2)


def test_a_misspelt_built_in_and_a_built_in_argument_as_param_say_so(capsys):
    status, _, err = call(capsys, "derive", "hubber")
    assert status == 1 and "no built-in loss named 'hubber'; did you mean 'huber'?" in err
    status, _, err = call(capsys, "codegen", "huber", "--param", "delta=0.5")
    assert status == 1 and '"huber(y, p, delta=0.5)"' in err
    long_text = " + ".join(["huber(y, p, 1.0)"] * 20)  # longer than any file name
    status, out, _ = call(capsys, "derive", long_text, "--wrt", "p")
    assert status == 0 and "d/dp" in out


def test_a_param_that_is_an_input_of_the_loss_is_refused(capsys, tmp_path):
    """``--param delta=1`` on ``huber(y, p, delta)``, where delta is an input: eval said the
    input had no column and codegen that there was no such param, neither what to do."""
    data = tmp_path / "d.csv"
    data.write_text("y,p,delta\n1,2,1\n")
    for command in (("eval", "huber(y, p, delta)", "--data", str(data)),
                    ("codegen", "huber(y, p, delta)")):
        status, out, err = call(capsys, *command, "--param", "delta=1")
        assert status == 1 and not out
        assert "'delta' is an input of the loss, not a param" in err
        assert "--map delta=COLUMN" in err


def test_a_malformed_option_value_is_a_wrong_command_line_exit_status_2(capsys, tmp_path):
    """--help says 2 for a wrong command line; these exited 1 (and --map said NAME=VALUE)."""
    data = tmp_path / "d.csv"
    data.write_text("y,p\n1,2\n")
    for options, message in ((("--map", "yy"), "--map expects NAME=COLUMN"),
                             (("--param", "d=abc"), "--param d=abc: not a number"),
                             (("--chunk-size", "-5"), "--chunk-size must be at least 1")):
        status, out, err = call(capsys, "eval", "mse(y, p)", "--data", str(data), *options)
        assert status == 2 and not out and message in err


# ------------------------------------------------- eval, plot, bench: the tester's journey


def test_eval_refuses_a_csv_row_with_an_extra_field_and_writes_nothing(capsys, tmp_path):
    """'1,000' unquoted made the row (1, 000, 5): read as score 1, label 0, the mean 0.667
    printed with exit status 0 (pandas: 'Expected 2 fields in line 3, saw 3')."""
    data = tmp_path / "m.csv"
    data.write_text("score,label\n1,2\n1,000,5\n4,4\n")
    status, out, err = call(capsys, "eval", "mse", "--data", str(data), "--map",
                            "y=label,p=score", "-o", str(tmp_path / "o.csv"))
    assert status == 1 and out == "" and "Traceback" not in err
    assert "line 3 has 3 fields, but the header has 2" in err and "1,000" in err
    assert not (tmp_path / "o.csv").exists()


def test_eval_names_the_file_line_of_a_value_outside_the_domain(capsys, tmp_path):
    """A chunk's own index was reported ('found 3.0 at index 0' for the 7th data row);
    the error names the line of the file, whatever the chunk size."""
    data = tmp_path / "dom.csv"
    data.write_text("y,z\n0,1\n1,1\n0,1\n\n1,1\n0,1\n1,1\n3,1\n0,1\n")  # 3 is on line 9
    for chunk in ("3", "4", "500000"):
        status, _, err = call(capsys, "eval", "bce_logits", "--data", str(data),
                              "--chunk-size", chunk)
        assert status == 1 and f"found 3.0 at line 9 of {data}" in err, err
    # a per-class matrix: the flat index is a row and a class
    rows = ["y_0,y_1,y_2,z_0,z_1,z_2"] + ["0,1,0,0.5,0.1,-1"] * 7
    rows[5] = "0,1,2,0.5,0.1,-1"  # line 6, class 2
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    status, _, err = call(capsys, "eval", "multilabel_bce_logits", "--data",
                          str(tmp_path / "labels.csv"), "--map", "y=y_*,z=z_*",
                          "--chunk-size", "2")
    assert status == 1 and "found 2.0 at line 6 of" in err and "class 2" in err, err
    # a requirement (aft_normal needs y_upper >= y), in a .npz: the row's index
    y, upper = np.ones(7), np.full(7, 2.0)
    upper[5] = 0.5
    np.savez(tmp_path / "aft.npz", y=y, z=np.zeros(7), u=upper)
    status, _, err = call(capsys, "eval", "aft_normal(y, z, u)", "--data",
                          str(tmp_path / "aft.npz"), "--chunk-size", "2")
    assert status == 1 and "false at row index 5 of" in err, err
    # group ids that are not integers (query_mse's q), a blank line before them
    (tmp_path / "gq.csv").write_text("y,p,g\n1,0.5,0\n\n0,0.2,0\n1,0.9,1.5\n0,0.1,1\n")
    status, _, err = call(capsys, "eval", "query_mse", "--data", str(tmp_path / "gq.csv"),
                          "--map", "q=g", "-q")
    assert status == 1 and "found 1.5 at line 5 of" in err, err


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.array(["a", "b"]), "p": np.arange(2.0)}, "column 'y' holds text"),
    ({"y": np.arange(2.0), "p": np.array([1 + 1j, 2])}, "column 'p' holds complex numbers"),
])
def test_eval_of_a_column_that_is_not_numbers_is_an_error_not_a_traceback(
        capsys, tmp_path, arrays, message):
    np.savez(tmp_path / "z.npz", **arrays)
    status, _, err = call(capsys, "eval", "mse", "--data", str(tmp_path / "z.npz"))
    assert status == 1 and message in err and "Traceback" not in err


def test_eval_glob_columns_follow_their_class_numbers_not_the_files_order(capsys, tmp_path):
    """A file sorted by name made class 2 the column logit_10: the loss of every row whose
    label is 2 came from the wrong score (exit status 0)."""
    rng = np.random.default_rng(11)
    z, labels = rng.normal(size=(40, 12)), rng.integers(0, 12, size=40)
    names = sorted(f"logit_{k}" for k in range(12))  # logit_0, logit_1, logit_10, ...
    order = [int(name.rpartition("_")[2]) for name in names]
    lines = ["label," + ",".join(names)] + [
        f"{label}," + ",".join(repr(float(row[k])) for k in order)
        for label, row in zip(labels, z, strict=True)]
    (tmp_path / "logits.csv").write_text("\n".join(lines) + "\n")
    status, out, err = call(capsys, "eval", "sparse_cce_logits", "--data",
                            str(tmp_path / "logits.csv"), "--map", "y=label,z=logit_*",
                            "--json")
    assert status == 0, err
    # the cross-entropy written out by hand: logsumexp of the row minus the label's logit
    rows = np.arange(40)
    expected = np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels])
    assert json.loads(out)["value"] == pytest.approx(expected, rel=1e-12)


def test_eval_options_that_did_nothing_or_the_wrong_thing_are_refused(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("y,p\n1,2\n0,0.5\n")
    status, out, err = call(capsys, "eval", "mse", "--data", str(data), "--grad", "p")
    assert status == 1 and out == "" and "add -o FILE" in err  # computed, then shown nowhere
    for delimiter in ("", ";;"):  # '' fell back to ',', ';;' was csv's raw TypeError
        status, _, err = call(capsys, "eval", "mse", "--data", str(data),
                              f"--delimiter={delimiter}")
        assert status == 1 and "delimiter must be one character" in err
        assert "Traceback" not in err
    status, _, err = call(capsys, "eval", "mse", "--data", str(data), "-o",
                          str(tmp_path / "out.xlsx"))  # was CSV text in an .xlsx file
    assert status == 1 and ".csv, .npy, .npz, .parquet" in err
    assert not (tmp_path / "out.xlsx").exists()
    # a batch-level loss has no per-sample value: no 0-byte file 'written'
    status, out, err = call(capsys, "eval", "dice(y, p)", "--data", str(data), "-o",
                            str(tmp_path / "dice.csv"))
    assert status == 1 and "no per-sample values" in err and "--grad" in err
    assert not (tmp_path / "dice.csv").exists()
    status, out, err = call(capsys, "eval", "dice(y, p, smooth=0)", "--data", str(data),
                            "--grad", "p", "-o", str(tmp_path / "dice.csv"))
    assert status == 0, err
    y, p = np.array([1.0, 0.0]), np.array([2.0, 0.5])
    # d/dp of 1 - 2 sum(y p)/(sum(y) + sum(p)), by hand
    total = y.sum() + p.sum()
    expected = -2 * y / total + 2 * (y * p).sum() / total ** 2
    written = np.genfromtxt(tmp_path / "dice.csv", delimiter=",", names=True)
    np.testing.assert_allclose(written["grad_p"], expected, rtol=1e-12)


def test_plot_refuses_batch_level_losses_instead_of_drawing_one_batch(capsys, tmp_path):
    """The grid was evaluated as one batch: dice(y=1, p) drew a flat line at the batch's
    value (-0.98 for 0.1..0.9), which no single sample has."""
    pytest.importorskip("matplotlib")
    image = tmp_path / "d.png"
    for loss in ("dice(y, p)", "softmax_ranking(y, z, q)", "mse(y, p) + mean(p)^2"):
        status, _, err = call(capsys, "plot", loss, "--at", "y=1", "--range", "0.1:0.9",
                              "-o", str(image))
        assert status == 1 and "cannot be plotted against one input" in err, (loss, err)
        assert not image.exists()
    with pytest.raises(lossdsl.LossError, match="cannot be plotted against one input"):
        lossdsl.plot("dice(y, p)", at={"y": 1.0})


def test_plot_and_bench_refuse_options_out_of_range(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    image = str(tmp_path / "p.png")
    for bounds in ("-inf:inf", "0:inf", "nan:1"):  # matplotlib's raw ValueError
        status, _, err = call(capsys, "plot", "mse", "--range", bounds, "-o", image)
        assert status == 2 and "two finite numbers" in err and "Traceback" not in err
    status, _, err = call(capsys, "plot", "quantile(y, p, a)", "--param", "a=0.9", "-o", image)
    assert status == 1 and "give it with --at a=0.9" in err
    status, _, err = call(capsys, "plot", "mse", "--at", "delta=2", "-o", image)
    assert status == 1 and "no loss here has an input named 'delta'" in err
    with pytest.raises(lossdsl.LossError, match=r"give it with at=\{'a': 0.9\}"):
        lossdsl.plot("quantile(y, p, a)", params={"a": 0.9})
    status, _, err = call(capsys, "bench", "sparse_cce_logits", "--classes", "0", "-n", "10")
    assert status == 2 and "--classes must be positive" in err
    status, _, err = call(capsys, "bench", "mse", "--pause", "-1", "-n", "10")
    assert status == 2 and "--pause is seconds to wait, 0 or more" in err


def test_load_without_a_path_says_it_needs_one():
    with pytest.raises(lossdsl.LossError, match="needs the path of a .loss file"):
        lossdsl.load(None)


def test_eval_refuses_a_weighted_mean_over_weights_that_sum_to_zero(capsys, tmp_path):
    """It printed 'weighted_mean loss = nan' with exit status 0, where the API raises."""
    data = tmp_path / "w.csv"
    data.write_text("y,p,w\n1,2,0\n3,1,0\n")
    status, out, err = call(capsys, "eval", "mse", "--data", str(data), "--weight", "w",
                            "--reduction", "weighted_mean")
    assert status == 1 and out == "" and "sum to 0.0" in err and "Traceback" not in err
    data.write_text("y,p,w\n1,2,0\n3,1,2\n")
    status, out, _ = call(capsys, "eval", "mse", "--data", str(data), "--weight", "w",
                          "--reduction", "weighted_mean")
    assert status == 0 and "weighted_mean loss = 4.0 " in out  # (0*1 + 2*4) / 2


def test_eval_refuses_a_literal_nan_as_it_refuses_an_empty_cell(capsys, tmp_path):
    """A 'nan' cell went through: 'mean loss = nan (2 rows)' with exit status 0."""
    data = tmp_path / "n.csv"
    data.write_text("y,p\n1,2\n4,3\nnan,3\n")
    status, out, err = call(capsys, "eval", "mse", "--data", str(data), "--chunk-size", "2")
    assert status == 1 and out == "" and "Traceback" not in err
    assert "column 'y' is nan (a missing value) at line 4" in err


def test_eval_map_of_a_param_points_to_param(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("y,p,w\n1,2,1\n")
    status, _, err = call(capsys, "eval", "param delta = 1.0\nloss main = huber(y, p, delta)",
                          "--data", str(data), "--map", "delta=w")
    assert status != 0 and "'delta' is a param: give its value with --param delta=VALUE" in err


def test_eval_refuses_a_column_named_like_a_param_that_nothing_reads(capsys, tmp_path):
    """A column 'delta' beside a loss whose delta is a param (or huber's argument, which the
    bare name 'huber' leaves at 1.0) was ignored without a note: the mean used delta = 1
    while the file said otherwise. Now an error that says how to read it per row or set it;
    done so, the numbers are the Huber formula's with the column's or --param's delta."""
    y, p, delta = np.array([0.0, 1.0, 2.0]), np.array([0.5, 3.0, -1.0]), np.array([0.1, 4, 2])
    data = tmp_path / "d.csv"
    data.write_text("y,p,delta\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(y, p, delta)))

    def huber(d):
        r = np.abs(p - y)
        return float(np.mean(np.where(r <= d, 0.5 * r**2, d * (r - 0.5 * d))))

    status, out, err = call(capsys, "eval", "huber", "--data", str(data), "--json")
    assert status == 1 and not out
    assert "named like the argument 'delta' of huber" in err
    assert '"huber(y, p, delta=delta)"' in err
    status, out, _ = call(capsys, "eval", "huber(y, p, delta=delta)", "--data", str(data),
                          "--json")
    assert status == 0 and json.loads(out)["value"] == pytest.approx(huber(delta), rel=1e-12)
    text = "param delta = 1.0\nloss robust = huber(y, p, delta)"
    status, out, err = call(capsys, "eval", text, "--data", str(data), "--json")
    assert status == 1 and not out
    assert "named like the param 'delta' of the loss" in err and "--param delta=VALUE" in err
    status, out, _ = call(capsys, "eval", text, "--data", str(data), "--param", "delta=0.5",
                          "--json")
    assert status == 0 and json.loads(out)["value"] == pytest.approx(huber(0.5), rel=1e-12)
    # a column some input reads is no param's: p read from the column delta
    status, out, _ = call(capsys, "eval", text, "--data", str(data), "--map", "p=delta",
                          "--json")
    assert status == 0 and json.loads(out)["value"] == pytest.approx(
        float(np.mean(np.where(np.abs(delta - y) <= 1, 0.5 * (delta - y)**2,
                               np.abs(delta - y) - 0.5))), rel=1e-12)
