"""Notebooks: LaTeX and HTML displays of losses (escaped), and lossdsl.plot returning a
matplotlib Figure without touching matplotlib's global backend or pyplot's figures."""

import html
import os
import subprocess
import sys
import textwrap
from html.parser import HTMLParser

import numpy as np
import pytest

import lossdsl
from lossdsl.latex import to_latex


class _Text(HTMLParser):
    """The text of an HTML fragment, checking that every tag it opens is closed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.text, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.open.append(tag)
        self.tags.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        self.text.append(data)


def _parsed(fragment):
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    assert parser.open == []
    return "".join(parser.text), parser.tags


def test_latex_shows_formula_derivative_inputs_and_params():
    lib_text = "param delta = 1.5\n# robust\nloss robust = huber(y, p, delta) + 0.1*l1(w)\n"
    loss = lossdsl.api.loss_from_text(lib_text)
    text = loss._repr_latex_()
    assert text.startswith("$$\\begin{aligned}") and text.endswith("\\end{aligned}$$")
    per_sample = lossdsl.compile(loss, reduction="sum")
    assert to_latex(loss.definition.graph) in text
    assert f"\\frac{{\\partial \\mathrm{{robust}}}}{{\\partial p}} &= " \
           f"{to_latex(per_sample.derivative('p'))}" in text
    assert "\\mathrm{robust}(y, p, w)" in text
    assert "y\\ \\text{target (N,)}" in text and "p\\ \\text{prediction (N,)}" in text
    assert "w\\ \\text{input (N1,)}" in text  # a vector of its own length
    assert "\\delta = 1.5" in text
    assert "reduction" not in text  # a Loss is not compiled yet
    compiled = loss.compile("cpu", "mean", {"delta": 2.0})
    shown = compiled._repr_latex_()
    assert "\\delta = 2.0" in shown and "target = cpu, reduction = mean" in shown
    # the derivative is one sample's (no 1/N of the mean): the same as for the Loss
    assert to_latex(per_sample.derivative("p")) in shown and "\\frac{1}{N}" not in shown


def test_class_axis_and_labels_roles():
    compiled = lossdsl.compile("sparse_cce_logits(y, z)")
    text = compiled._repr_latex_()
    assert "y\\ \\text{class labels (integers) (N,)}" in text
    assert "z\\ \\text{prediction (N, K)}" in text
    assert "\\frac{\\partial \\ell}{\\partial z}" in text
    table = lossdsl.compile("rowsum(rowof(C, y) * softmax(z))")
    body, _ = _parsed(table._repr_html_())
    assert "lookup table(R, K)" in body


def test_html_escapes_user_text():
    evil = ('# <script>alert("x")</script> & <b>bold</b>\n'
            "loss evil = where(p < y, 2*(y - p), p - y)\n")
    loss = lossdsl.api.loss_from_text(evil)
    for item in (loss, loss.compile()):
        fragment = item._repr_html_()
        assert "<script>" not in fragment and "<b>" not in fragment
        assert "&lt;script&gt;" in fragment
        body, tags = _parsed(fragment)
        assert set(tags) <= {"div", "strong", "code", "table", "tr", "th", "td", "br"}
        assert '<script>alert("x")</script> & <b>bold</b>' in body  # shown, as text
        assert "where(p < y, 2 * (y - p), p - y)" in body  # the formula as loss text
        assert "\\[\\mathrm{evil}(p, y) = " in body  # and as LaTeX, for MathJax
    body, _ = _parsed(loss.compile("cpu", "weighted_mean")._repr_html_())
    assert "reductionweighted_mean" in body.replace(" ", "")
    assert "targetcpu" in body.replace(" ", "")


def test_derivative_not_available_is_said_not_raised():
    loss = lossdsl.api.loss_from_text("mse(y, p) * C")
    loss_html = loss._repr_html_()
    assert "d/dp" in loss_html
    only_labels = lossdsl.compile("rowsum(onehot(k, 3) * 2.0)")
    body, _ = _parsed(only_labels._repr_html_())
    assert "not available" in body and "'k' is not differentiable" in body
    assert "derivative: " in only_labels._repr_latex_()


# ----------------------------------------------------------------------------- plotting
matplotlib = pytest.importorskip("matplotlib")


def test_plot_returns_a_figure_with_the_curves():
    from matplotlib.figure import Figure

    huber = lossdsl.compile("param delta = 1.0\nloss h = huber(y, p, delta)",
                            params={"delta": 0.5})
    figure = lossdsl.plot("mse(y, p)", huber, range=(-2, 2), points=41, title="two losses")
    assert isinstance(figure, Figure)
    loss_ax, gradient_ax, hessian_ax = figure.axes
    x = np.linspace(-2, 2, 41)
    mse, huber = loss_ax.get_lines()[:2]
    np.testing.assert_allclose(mse.get_xdata(), x)
    np.testing.assert_allclose(mse.get_ydata(), x ** 2)
    np.testing.assert_allclose(huber.get_ydata(),
                               np.where(abs(x) <= 0.5, 0.5 * x ** 2, 0.5 * (abs(x) - 0.25)))
    np.testing.assert_allclose(gradient_ax.get_lines()[0].get_ydata(), 2 * x)
    np.testing.assert_allclose(hessian_ax.get_lines()[1].get_ydata(),
                               np.where(abs(x) <= 0.5, 1.0, 0.0))
    assert [line.get_label() for line in loss_ax.get_lines()[:2]] == [
        "mse(y, p)", "h"]
    assert figure._suptitle.get_text() == "two losses"
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_other_inputs_params_and_panels():
    figure = lossdsl.plot("bce_logits(y, z)", at={"y": 1.0}, panels=("loss", "gradient"),
                          range=(-3, 3), points=7, labels=["positive"])
    assert len(figure.axes) == 2
    z = np.linspace(-3, 3, 7)
    line = figure.axes[1].get_lines()[0]
    assert line.get_label() == "positive"
    np.testing.assert_allclose(line.get_ydata(), 1 / (1 + np.exp(-z)) - 1, rtol=1e-12)
    pinball = lossdsl.api.loss_from_text("param alpha = 0.5\nloss q = quantile(y, p, alpha)")
    figure = lossdsl.plot(pinball, params={"alpha": 0.9}, points=5)
    np.testing.assert_allclose(figure.axes[0].get_lines()[0].get_ydata(),
                               np.where(np.linspace(-3, 3, 5) <= 0, -0.9, 0.1)
                               * np.linspace(-3, 3, 5))


def test_plot_refuses_bad_arguments():
    with pytest.raises(lossdsl.LossError, match="at least one loss"):
        lossdsl.plot()
    with pytest.raises(lossdsl.LossError, match="range"):
        lossdsl.plot("mse(y, p)", range=(1, -1))
    with pytest.raises(lossdsl.LossError, match="points"):
        lossdsl.plot("mse(y, p)", points=1)
    with pytest.raises(lossdsl.LossNameError, match="'q' is not an input"):
        lossdsl.plot("mse(y, p)", wrt="q")
    with pytest.raises(lossdsl.LossNameError, match="no loss here has an input named 'yy'"):
        lossdsl.plot("mse(y, p)", at={"yy": 1.0})
    with pytest.raises(lossdsl.LossNameError, match="no loss here has a param named 'delt'"):
        lossdsl.plot("param delta = 1.0\nloss h = huber(y, p, delta)", params={"delt": 1.0})
    with pytest.raises(lossdsl.LossError, match="panels"):
        lossdsl.plot("mse(y, p)", panels=("value",))
    with pytest.raises(lossdsl.LossError, match="labels"):
        lossdsl.plot("mse(y, p)", labels=["a", "b"])


def test_plot_leaves_backend_and_pyplot_alone(monkeypatch, tmp_path):
    """Neither lossdsl.plot nor the CLI's drawing switch the backend or make pyplot figures."""
    from matplotlib import pyplot

    from lossdsl import plotting

    backend, figures = matplotlib.get_backend(), pyplot.get_fignums()

    def refuse(*args, **kwargs):
        raise AssertionError("the global matplotlib state was touched")

    monkeypatch.setattr(matplotlib, "use", refuse)
    monkeypatch.setattr(pyplot, "switch_backend", refuse)
    monkeypatch.setattr(pyplot, "figure", refuse)
    monkeypatch.setattr(pyplot, "subplots", refuse)
    lossdsl.plot("huber(y, p, 1.0)")
    grid = np.linspace(-1, 1, 5)
    found = plotting.curves([("mse", lossdsl.api.loss_from_text("mse(y, p)"), "p")], grid, {})
    layout = plotting.draw(grid, found, tmp_path / "curves.svg", "p")
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")
    assert set(layout["panels"]) == {"loss", "gradient", "hessian"}
    monkeypatch.undo()
    assert matplotlib.get_backend() == backend
    assert pyplot.get_fignums() == figures


def test_plot_keeps_a_non_agg_backend_in_a_fresh_process():
    """In a process whose backend is not Agg (here 'svg'), plotting leaves it as it was (the
    CLI's drawing used to switch it to Agg for the whole process)."""
    script = textwrap.dedent("""
        import matplotlib
        from matplotlib import pyplot
        import numpy as np
        import lossdsl
        from lossdsl import plotting
        before = (matplotlib.get_backend(), pyplot.get_fignums())
        figure = lossdsl.plot("log_cosh(y, p)", points=11)
        grid = np.linspace(-1, 1, 3)
        found = plotting.curves([("mse", lossdsl.api.loss_from_text("mse(y, p)"), "p")],
                                grid, {})
        plotting.draw(grid, found, "curves.png", "p")
        after = (matplotlib.get_backend(), pyplot.get_fignums())
        print(before, after)
        assert before == after and before[0].lower() == "svg", (before, after)
    """)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                text=True, cwd=folder, timeout=120,
                                env={**os.environ, "MPLBACKEND": "svg"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert html.escape("svg") in result.stdout
