"""Every error a user can provoke: its type, file:line:column, caret, and helpful hint."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lossdsl
from lossdsl import (
    LossArityError,
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    LossSyntaxError,
)


def caret_column(error: LossError) -> int:
    """The 1-based column the caret points at in the error's rendering."""
    caret_line = str(error).splitlines()[2]
    return caret_line.index("^") - 4 + 1  # the source line is indented by four spaces


def test_syntax_error_has_position_and_caret():
    with pytest.raises(LossSyntaxError) as raised:
        lossdsl.compile("huber(y, p,, 1.0)")
    error = raised.value
    assert (error.file, error.line, error.column) == (None, 1, 12)
    assert str(error).startswith("<string>:1:12: unexpected ','")
    assert str(error).splitlines()[1] == "    huber(y, p,, 1.0)"
    assert caret_column(error) == 12


def test_chained_comparisons_say_they_do_not_chain():
    """'a < b < c' got the grammar's "unexpected '<'" and a list of tokens; a '<' where an
    operand is missing keeps that message."""
    with pytest.raises(LossSyntaxError) as raised:
        lossdsl.compile("where(a == b != c, 1, 2)")
    assert raised.value.message == "comparisons do not chain: a second '!=' follows a comparison"
    assert caret_column(raised.value) == 14 and "(a < b) and (b < c)" in raised.value.hint
    for text in ("a + < b", "param t < 2\nt*y", "def f(y < 0, z) = y\nf(a, b)"):
        with pytest.raises(LossSyntaxError, match="unexpected '<'"):  # no comparison before
            lossdsl.compile(text)


def test_syntax_error_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.loss"
    path.write_text("param delta = 1.0\nloss a = (y - p\n")
    with pytest.raises(LossSyntaxError) as raised:
        lossdsl.load(path)
    assert raised.value.file == str(path)
    assert str(raised.value).startswith(f"{path}:2:16: missing ')'")
    assert "the '(' at line 2, column 10 is not closed" in str(raised.value)


def test_unknown_function_suggests_the_closest_name():
    with pytest.raises(LossNameError) as raised:
        lossdsl.compile("mse(y, p) + hubr(y, p)")
    error = raised.value
    assert (error.line, error.column) == (1, 13)
    assert "unknown function 'hubr'" in str(error)
    assert "did you mean 'huber'?" in str(error)
    assert caret_column(error) == 13


def test_calling_a_loss_says_to_write_a_def(tmp_path):
    """A named loss, of the file or of one it imports, is not a function: the error says so
    (it used to be "unknown function 'main'", did you mean 'min'?)."""
    (tmp_path / "base.loss").write_text("loss main = mse(y, p)\n")
    path = tmp_path / "user.loss"
    path.write_text('import "base.loss"\nloss combo = 2*main(y, p)\n')
    with pytest.raises(LossNameError) as raised:
        lossdsl.load(path)
    error = raised.value
    assert (error.file, error.line, error.column) == (str(path), 2, 16)
    assert str(error).startswith(f"{path}:2:16: 'main' is a loss, and a loss cannot be "
                                 "called (a def can): write its formula as 'def main(...)")
    assert "did you mean" not in str(error)


def test_unknown_name_inside_a_def_suggests_the_parameter(tmp_path):
    path = tmp_path / "f.loss"
    path.write_text("def scaled(y, pred) = (prd - y)^2\nloss a = scaled(y, p)\n")
    with pytest.raises(LossNameError) as raised:
        lossdsl.load(path)
    error = raised.value
    assert (error.file, error.line, error.column) == (str(path), 1, 24)
    assert "did you mean 'pred'?" in str(error)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("huber(y, p, 1.0, 2.0)", "at most 3 positional arguments, got 4", 1),
        ("huber(y, p, delt=2.0)", "no parameter 'delt'", 13),
        ("huber(y)", "missing argument 'p'", 1),
        ("huber(y, p, 1.0, delta=2.0)", "two values for 'delta'", 18),
        ("exp(p, 2)", "'exp' takes 1 argument, got 2", 1),
        ("exp(x=p)", "takes no keyword arguments", 5),
    ],
)
def test_arity_errors(text, message, column):
    with pytest.raises(LossArityError) as raised:
        lossdsl.compile(text)
    assert message in str(raised.value)
    assert (raised.value.line, raised.value.column) == (1, column)


def test_shape_error_names_the_inputs_and_their_shapes():
    loss = lossdsl.compile("mse(y, p)")
    with pytest.raises(LossShapeError) as raised:
        loss(y=np.zeros(3), p=np.zeros(4))
    assert "'y' has shape (3,)" in str(raised.value)
    assert "'p' has shape (4,)" in str(raised.value)


def test_class_operation_on_a_vector_is_a_shape_error():
    loss = lossdsl.compile("logsumexp(z)")
    with pytest.raises(LossShapeError) as raised:
        loss(z=np.zeros(3))
    assert "per-class matrix" in str(raised.value) and "'z' is a vector" in str(raised.value)
    assert (raised.value.line, raised.value.column) == (1, 11)


def test_label_out_of_range_is_a_domain_error():
    loss = lossdsl.compile("sparse_cce_logits(y, z)")
    with pytest.raises(LossDomainError) as raised:
        loss(y=np.array([0, 3]), z=np.zeros((2, 3)))
    assert "integers in [0, 3)" in str(raised.value)


def test_missing_and_unknown_inputs_and_params():
    loss = lossdsl.compile("huber(y, p, delta)\nparam delta = 1.0")
    with pytest.raises(LossNameError, match="missing input 'p'"):
        loss(y=np.zeros(2))
    with pytest.raises(LossNameError, match="did you mean 'p'"):
        loss(y=np.zeros(2), p=np.zeros(2), pp=np.zeros(2))
    with pytest.raises(LossNameError, match="did you mean 'delta'"):
        lossdsl.compile("huber(y, p, delta)\nparam delta = 1.0", params={"delt": 2.0})
    with pytest.raises(LossNameError, match="not an input"):
        loss.grad("q", y=np.zeros(2), p=np.zeros(2))


def test_recursive_definition_and_bad_import(tmp_path):
    with pytest.raises(LossError, match="defined in terms of itself"):
        lossdsl.compile("def f(x) = f(x) + 1\nf(p)")
    path = tmp_path / "a.loss"
    path.write_text('import "missing.loss"\n')
    with pytest.raises(LossNameError, match="no such file") as raised:
        lossdsl.load(path)
    assert (raised.value.line, raised.value.column) == (1, 1)
    (tmp_path / "b.loss").write_text('import "c.loss"\n')
    (tmp_path / "c.loss").write_text('import "b.loss"\n')
    with pytest.raises(LossError, match="circular import"):
        lossdsl.load(tmp_path / "b.loss")


def test_a_name_defined_in_a_file_hides_an_imported_or_built_in_one_of_any_kind(tmp_path):
    """Params, defs and lets share one namespace: a file's own param f called as f(p) ran
    the imported def f, its own def k read as a value was the imported param k, and
    `param mse = 3` then mse(y, p) ran the built-in mse."""
    (tmp_path / "c.loss").write_text("def f(x) = 3*x\nparam k = 7\n")
    (tmp_path / "calls.loss").write_text('import "c.loss"\nparam f = 2\nloss a = f(p)\n')
    with pytest.raises(LossNameError, match="'f' is a param here .*not a function") as raised:
        lossdsl.load(tmp_path / "calls.loss")
    assert (raised.value.line, raised.value.column) == (3, 10)
    (tmp_path / "reads.loss").write_text('import "c.loss"\ndef k(x) = 10*x\nloss d = k*p\n')
    with pytest.raises(LossNameError, match="'k' is a def here .*call it"):
        lossdsl.load(tmp_path / "reads.loss")
    with pytest.raises(LossNameError, match="'mse' is a param here"):
        lossdsl.compile("param mse = 3\nloss a = mse(y, p)")
    assert lossdsl.compile("gamma*p").inputs == ("gamma", "p")  # the library's defs hide none


def test_every_import_is_searched_before_the_built_in_library(tmp_path):
    """A later import pushed the prelude (its parent) ahead of the earlier imports, so an
    earlier import's `mse` and `huber` silently became the built-in ones."""
    (tmp_path / "mylib.loss").write_text("def mse(y, p) = abs(p - y)^3\n"
                                         "def huber(y, p) = 100*(p - y)\n")
    (tmp_path / "other.loss").write_text("def g(x) = 20*x\n")
    (tmp_path / "main.loss").write_text('import "mylib.loss"\nimport "other.loss"\n'
                                        "loss a = mse(y, p) + g(p)\nloss b = huber(y, p)\n")
    library = lossdsl.load(tmp_path / "main.loss")
    y, p = np.array([2.0, -1.0]), np.array([0.0, 0.5])
    a = library.a.compile(reduction="none")(y=y, p=p)
    b = library.b.compile(reduction="none")(y=y, p=p)
    np.testing.assert_allclose(a, np.abs(p - y) ** 3 + 20 * p)
    np.testing.assert_allclose(b, 100 * (p - y))


def test_a_number_beyond_float64_is_an_error_not_inf():
    with pytest.raises(LossSyntaxError, match="1e999 is beyond float64's range") as raised:
        lossdsl.compile("mse(y, p) + 1e999*p")
    assert (raised.value.line, raised.value.column) == (1, 13)
    assert lossdsl.compile("1e308*p")(p=np.array([1.0])) == 1e308


def test_bad_options_are_loss_errors():
    with pytest.raises(LossError, match="unknown target"):
        lossdsl.compile("mse(y, p)", target="tpu")
    with pytest.raises(LossError, match="unknown reduction"):
        lossdsl.compile("mse(y, p)", reduction="average")
    with pytest.raises(LossError, match="no single loss"):
        lossdsl.compile("loss a = mse(y, p)\nloss b = mae(y, p)")


def test_generated_source_never_contains_user_text():
    text = '__import__ * os + system("x") if 0 else 0'
    with pytest.raises(LossSyntaxError):  # strings are not expressions
        lossdsl.compile(text)
    loss = lossdsl.compile("__import__*os_system + 0.1234567891*exec_me")
    source = loss.source
    for user_text in ("__import__", "os_system", "exec_me"):
        assert user_text not in source
    assert "0.1234567891" in source  # numbers are re-emitted with repr(float(...))
    value = loss(__import__=np.array([2.0]), os_system=np.array([3.0]), exec_me=np.array([1.0]))
    assert value == pytest.approx(6.1234567891)


def test_rowof_table_errors():
    with pytest.raises(LossArityError, match="must be an input") as raised:
        lossdsl.compile("rowsum(rowof(2*C, y) * z)")
    assert (raised.value.line, raised.value.column) == (1, 14)
    misuse = lossdsl.compile("rowsum(rowof(C, y) * z) + rowsum(C)")
    with pytest.raises(LossShapeError, match="only be read through rowof"):
        misuse(C=np.ones((3, 3)), y=np.zeros(2, dtype=int), z=np.ones((2, 3)))
    vector = lossdsl.compile("rowsum(rowof(C, y) * z)")
    with pytest.raises(LossShapeError, match="must be a \\(R, K\\) matrix"):
        vector(C=np.ones(3), y=np.zeros(2, dtype=int), z=np.ones((2, 3)))


# --- Issue 10, section 3: raw tracebacks from inside the compiler ------------------------------


@pytest.mark.parametrize("text", ["pick(z, 1)", "softmax(z) * onehot(1)", "rowsum(onehot(2) * z)"])
def test_a_scalar_label_takes_the_class_axis_it_meets(text):
    loss = lossdsl.compile(text)
    assert "onehot" in str(loss.expression)
    for order in (1, 2):
        str(loss.derivative("z", order))


def test_a_scalar_label_that_meets_no_class_axis_is_a_shape_error():
    loss = lossdsl.compile("onehot(1) * p")
    assert str(loss.expression) == "onehot(1) * p"
    with pytest.raises(LossShapeError, match="number of classes is unknown") as raised:
        loss.derivative("p")
    assert (raised.value.line, raised.value.column) == (1, 13)


def test_pick_of_a_constant_label_reads_that_column():
    loss = lossdsl.compile("pick(z, 1)")
    z = np.arange(6.0).reshape(2, 3)
    assert loss(z=z) == pytest.approx(2.5)
    np.testing.assert_array_equal(loss.grad("z", z=z), [[0, 0.5, 0], [0, 0.5, 0]])


def test_onehot_without_a_class_count_is_a_shape_error_at_the_label():
    loss = lossdsl.compile("rowsum(onehot(y))")
    with pytest.raises(LossShapeError, match="number of classes is unknown") as raised:
        loss(y=np.array([0, 2]))
    assert (raised.value.line, raised.value.column) == (1, 15)
    assert lossdsl.compile("rowsum(onehot(y, 3))")(y=np.array([0, 2])) == 1.0


@pytest.mark.parametrize("value", ["onehot(1)", "rowsum(3)", "log_softmax(5)", "pick(2, 0)"])
def test_a_param_with_a_class_axis_is_not_a_constant(value):
    with pytest.raises(LossError, match="must be a constant expression") as raised:
        lossdsl.compile(f"param a = {value}\nloss l = a * p")
    assert raised.value.line == 1 and raised.value.column is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lgamma(nan)", math.nan),
        ("lgamma(-inf)", math.inf),
        ("lgamma(1e308)", math.inf),
        ("digamma(-inf)", math.nan),
        ("trigamma(-inf)", math.nan),
        ("trigamma(5e-324)", math.inf),
        ("trigamma(-5e-324)", math.inf),
    ],
)
def test_special_functions_fold_at_the_edges_of_their_domain(text, expected):
    folded = lossdsl.compile(f"{text} * p").expression.args[0]
    assert folded.op == "const"
    assert folded.value == expected or (math.isnan(expected) and math.isnan(folded.value))


def test_folded_special_functions_agree_with_the_kernels():
    from lossdsl.reference import fold

    x = np.array([math.nan, -math.inf, math.inf, 1e308, -3.0, 0.0, 5e-324, -5e-324, 1e-200])
    for function in ("lgamma", "digamma", "trigamma"):
        kernel = lossdsl.compile(f"{function}(x)", reduction="none")(x=x)
        for value, from_kernel in zip(x.tolist(), kernel):
            folded = fold(function, [value])
            assert from_kernel == pytest.approx(folded, rel=1e-12, nan_ok=True), (function, value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("sum(p) + inf", math.inf), ("sum(p) - inf", -math.inf), ("sum(p) + nan", math.nan),
     ("dice(y, p, smooth=inf)", math.nan)],
)
def test_an_infinite_or_nan_constant_in_the_scalar_part_runs(text, expected):
    loss = lossdsl.compile(text)
    inputs = {"y": np.array([1.0, 0.0]), "p": np.array([0.5, 0.25])}
    value = loss(**{name: inputs[name] for name in loss.inputs})
    assert value == expected or (math.isnan(expected) and math.isnan(value))


# --------------------------------------------------------------- definitions and their order


@pytest.mark.parametrize(
    ("text", "position", "first"),
    [
        ("loss a = y - p\nloss a = p - y\n", (2, 6), "as a loss on line 1"),
        ("param k = 1\nparam k = 2\nk*p\n", (2, 7), "as a param on line 1"),
        ("def f(x) = x\ndef f(x) = 2*x\nf(p)\n", (2, 5), "as a def on line 1"),
        ("let r = p\nlet r = 2*p\nr\n", (2, 5), "as a let on line 1"),
        ("param r = 1\nlet r = 2*p\nr\n", (2, 5), "as a param on line 1"),
    ],
)
def test_a_name_defined_twice_in_a_file_is_an_error(text, position, first):
    """The last definition used to win silently."""
    with pytest.raises(LossNameError) as raised:
        lossdsl.compile(text)
    assert "is already defined" in raised.value.message and first in raised.value.message
    assert (raised.value.line, raised.value.column) == position


def test_a_loss_may_share_its_name_with_a_def_or_the_library():
    from lossdsl.frontend.resolve import resolve_text

    scope = resolve_text("def f(x) = x^2\nloss f = f(p)\nloss mse = mse(y, p)\nloss b = y")
    assert set(scope.losses) == {"f", "mse", "b"}
    lossdsl.compile("def huber(y, p) = abs(y - p)\nhuber(y, p)")  # shadows the library


def test_a_let_that_uses_itself_or_is_used_above_it_is_an_error():
    """Both used to turn the name into a new input silently."""
    with pytest.raises(LossNameError, match="let 'r' refers to itself") as raised:
        lossdsl.compile("let r = r + p\nr")
    assert (raised.value.line, raised.value.column) == (1, 9)
    with pytest.raises(LossNameError, match=r"'r' is used before its let \(line 2\)") as raised:
        lossdsl.compile("loss a = r^2\nlet r = p - y\nloss b = r")
    assert (raised.value.line, raised.value.column) == (1, 10)
    with pytest.raises(LossNameError, match="used before its let"):
        lossdsl.compile("def f(x) = x + r\nloss a = f(p)\nlet r = 2\nloss b = f(p)")


def test_every_front_end_error_has_a_position():
    texts = ["param a = p", "param a = b\nparam b = 1\na", "onehot(y, inf)", "onehot(y, nan)",
             "onehot(y, 0.5)", "huber(y, p", "y $ p", "f(x=1, 2)", "exp(1, 2)", "p + q(1)"]
    for text in texts:
        with pytest.raises(LossError) as raised:
            lossdsl.compile(text)
        assert raised.value.line is not None and raised.value.column is not None, text


# ------------------------------------------------------------------------------------ files


def test_a_non_utf8_file_is_an_error_at_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.loss"
    path.write_bytes("loss a = y - p\n# co\xfbt en euros\nloss b = y\n".encode("latin-1"))
    with pytest.raises(LossSyntaxError, match="byte 0xfb is not UTF-8") as raised:
        lossdsl.load(path)
    assert (raised.value.file, raised.value.line, raised.value.column) == (str(path), 2, 5)
    assert caret_column(raised.value) == 5


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.loss"
    path.write_bytes(b"\xef\xbb\xbfloss a = y - p\n")
    assert lossdsl.load(path).a.inputs == ("y", "p")


def _unblock_fifo_after(path, seconds: float) -> None:
    """Open the FIFO for writing (and close it) once a reader waits, so that a reader that
    blocks on it is released after ``seconds`` instead of hanging the test run."""
    import os
    import threading
    import time

    def writer():
        deadline = time.monotonic() + seconds + 20
        time.sleep(seconds)
        while time.monotonic() < deadline:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=writer, daemon=True).start()


@pytest.mark.parametrize("kind", ["binary", "nul in path", "long name", "symlink loop", "fifo",
                                  "directory"])
def test_files_that_cannot_be_loss_text_are_loss_errors_with_a_position(tmp_path, kind):
    import os

    main = tmp_path / "main.loss"
    target = {"binary": "prog.loss", "nul in path": "a\\0b.loss", "long name": "x" * 5000,
              "symlink loop": "loop.loss", "fifo": "pipe.loss", "directory": "dir.loss"}[kind]
    if kind == "binary":
        (tmp_path / target).write_bytes(b"\x7fELF\x02\x01\x01\x00\x00loss a = y\n")
    elif kind == "symlink loop":
        os.symlink(tmp_path / target, tmp_path / target)
    elif kind == "fifo":
        os.mkfifo(tmp_path / target)
        _unblock_fifo_after(tmp_path / target, 5)
    elif kind == "directory":
        (tmp_path / target).mkdir()
    main.write_text(f'param k = 1\nimport "{target}"\nloss a = k*y\n')
    with pytest.raises(LossError) as raised:
        lossdsl.load(main)
    error = raised.value
    assert (error.file, error.line, error.column) == (str(main), 2, 1)
    assert "Traceback" not in str(error) and "ELF" not in str(error)
    if kind != "binary":  # the file itself, named directly
        with pytest.raises(LossError) as raised:
            lossdsl.load(str(tmp_path / target).replace("\\0", "\0"))
        assert raised.value.line == 1 and raised.value.column == 1


def test_errors_never_quote_a_file_that_is_not_loss_text(tmp_path):
    """``import "/etc/passwd"`` printed the file's first line; environment files too."""
    import os

    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key: hunter2hunter2\n")
    environ = tmp_path / "environ"
    environ.write_bytes(b"TOKEN=hunter2hunter2\0HOME=/root\0")
    os.symlink(secret, tmp_path / "innocent.loss")
    for target in (secret, environ, tmp_path / "innocent.loss"):
        for how in ("import", "load"):
            with pytest.raises(LossSyntaxError) as raised:
                if how == "import":
                    lossdsl.compile(f'import "{target}"\ny')
                else:
                    lossdsl.load(target)
            text = str(raised.value)
            assert "hunter2" not in text and "aws_secret" not in text and "TOKEN" not in text
            assert raised.value.line == 1 and raised.value.column is not None
    # a loss file's own mistakes are still shown with their line
    bad = tmp_path / "bad.loss"
    bad.write_text("loss a = y $ p\n")
    with pytest.raises(LossSyntaxError) as raised:
        lossdsl.load(bad)
    assert "loss a = y $ p" in str(raised.value) and caret_column(raised.value) == 12


def test_the_caret_keeps_the_lines_tabs():
    """The caret line copies the source line's tabs: padded with spaces, it sat under the
    wrong text wherever a terminal's tab stops are not one column apart."""
    with pytest.raises(lossdsl.LossError) as error:
        lossdsl.compile("param k = 1\nloss a = \thuber(y, p, k)\t+ huberr(y, p, k)")
    source, caret = str(error.value).splitlines()[1:3]
    assert caret.expandtabs(8).index("^") == source.expandtabs(8).index("huberr")
