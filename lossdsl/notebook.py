"""How losses show in a notebook: the LaTeX and HTML that ``Loss._repr_latex_``,
``Loss._repr_html_`` and those of :class:`~lossdsl.CompiledLoss` return.

Both show the formula (as LaTeX, and as loss-language text in the HTML), each input with its
role (prediction, target, class labels, lookup table, other input) and usual shape, the
params with their values, and the derivative with respect to the prediction (of one
sample's loss; a :class:`~lossdsl.CompiledLoss` also shows its target and reduction).
Every piece of user text in the HTML (names, the doc comment, formulas) is escaped.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from .api import CompiledLoss, Loss
from .errors import LossError
from .latex import latex_name, to_latex
from .passes import shapes


def prediction_input(loss: Loss) -> str | None:
    """The input differentiated by default: one named like a prediction (``p``, ``z``, ...),
    else the first input not named like a target (``y``), else the second input; None for a
    loss without inputs."""
    from .cli import PREDICTION_NAMES, TARGET_NAMES

    inputs = loss.inputs
    if not inputs:
        return None
    for name in PREDICTION_NAMES:
        if name in inputs:
            return name
    others = [name for name in inputs if name not in TARGET_NAMES]
    if others and len(others) < len(inputs):
        return others[0]
    return inputs[1] if len(inputs) >= 2 else inputs[0]


@dataclass
class Summary:
    """What a notebook shows of a loss; ``derivative`` is LaTeX, or None with ``problem``
    saying why it is not available."""

    name: str | None
    doc: str
    formula: str  # loss-language text
    formula_latex: str
    inputs: list[tuple[str, str, str]]  # (name, role, shape)
    params: dict[str, float]
    wrt: str | None
    derivative: str | None
    problem: str | None = None
    settings: dict[str, str] = field(default_factory=dict)  # target, reduction, ...


def summary(item: Loss | CompiledLoss) -> Summary:
    """The :class:`Summary` of a loss or a compiled loss."""
    from .cli import TARGET_NAMES

    if isinstance(item, CompiledLoss):
        loss, params = item.loss, item.params
        settings = {"target": item.target, "reduction": item.reduction}
        ignore_index = getattr(item, "ignore_index", None)
        if ignore_index is not None:
            settings["ignore_index"] = str(ignore_index)
    else:
        loss, params, settings = item, item.params, {}
    # one sample's loss: the derivative of a sum is each sample's own
    compiled = CompiledLoss(loss, "cpu", "sum", params)
    graph = loss.definition.graph
    wrt = prediction_input(loss)
    labels, tables = compiled.label_inputs(), compiled.table_inputs()
    definition = loss.definition
    try:
        axes = shapes.specialize(graph, compiled.default_ranks(), definition.inputs,
                                 definition.input_spans).input_axes
    except LossError:  # ranks that do not fit together: shapes are left out
        axes = {}
    inputs = []
    for name in loss.inputs:
        shape = _shape(axes.get(name)) if name in axes else ""
        if name in compiled.class_vector_inputs():
            role = "per-class vector"
            shape = _shape(axes[name][1:]) if len(axes.get(name, ())) == 2 else shape
        elif name in tables:
            role = "lookup table"
        else:
            if name in labels:
                role = "class labels (integers)"
            elif name == wrt:
                role = "prediction"
            elif name in TARGET_NAMES:
                role = "target"
            else:
                role = "input"
        inputs.append((name, role, shape))
    derivative = problem = None
    if wrt is None:
        problem = "the loss has no inputs"
    elif wrt in labels or wrt in tables:
        problem = f"'{wrt}' is not differentiable (labels or a lookup table)"
    else:
        try:
            derivative = to_latex(compiled.derivative(wrt))
        except LossError as error:
            problem = error.message
    return Summary(loss.name, loss.doc, str(graph), to_latex(graph), inputs,
                   dict(compiled.params), wrt, derivative, problem, settings)


def _shape(axes: tuple[str, ...]) -> str:
    """``("n0", "n0k") -> "(N, K)"``: the usual shape of an input, by its axes."""
    if not axes:
        return "scalar"
    names = []
    for axis in axes:
        match = re.fullmatch(r"n(\d+)(k?)", axis)
        if match is None:
            names.append("R" if re.fullmatch(r"t\d*", axis) else axis)
            continue
        number, classes = match.groups()
        names.append(("K" if classes else "N") + ("" if number == "0" else number))
    return "(" + ", ".join(names) + (",)" if len(names) == 1 else ")")


def _head(info: Summary) -> str:
    return r"\ell" if info.name is None else latex_name(info.name)


def _signature(info: Summary) -> str:
    return f"{_head(info)}({', '.join(latex_name(name) for name, _, _ in info.inputs)})"


def _derivative_symbol(info: Summary) -> str:
    return rf"\frac{{\partial {_head(info)}}}{{\partial {latex_name(info.wrt or '')}}}"


def _latex_text(text: str) -> str:
    """Plain text for ``\\text{...}``: LaTeX's special characters escaped."""
    special = {"\\": r"\backslash ", "{": r"\{", "}": r"\}", "_": r"\_", "#": r"\#",
               "$": r"\$", "%": r"\%", "&": r"\&", "^": r"\^{}", "~": r"\~{}"}
    return "".join(special.get(c, c) for c in text)


def latex(item: Loss | CompiledLoss) -> str:
    """LaTeX display math for a notebook (``_repr_latex_``): the formula, the derivative with
    respect to the prediction, the inputs' roles and shapes, the params and settings."""
    info = summary(item)
    lines = [rf"{_signature(info)} &= {info.formula_latex}"]
    if info.derivative is not None:
        lines.append(rf"{_derivative_symbol(info)} &= {info.derivative}")
    elif info.wrt is not None:
        lines.append(rf"&\text{{derivative: {_latex_text(info.problem or '')}}}")
    roles = ", ".join(rf"{latex_name(name)}\ \text{{{_latex_text(role)} {shape}}}"
                      for name, role, shape in info.inputs)
    if roles:
        lines.append(rf"&\text{{inputs: }} {roles}")
    if info.params:
        values = ", ".join(f"{latex_name(k)} = {_number(v)}" for k, v in info.params.items())
        lines.append(rf"&\text{{params: }} {values}")
    if info.settings:
        shown = ", ".join(f"{k} = {v}" for k, v in info.settings.items())
        lines.append(rf"&\text{{{_latex_text(shown)}}}")
    return "$$\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}$$"


def _number(value: float) -> str:
    return repr(float(value))


def html_text(item: Loss | CompiledLoss) -> str:
    """An HTML table for a notebook (``_repr_html_``): formula (LaTeX for MathJax and
    loss-language text), inputs with roles and shapes, params, derivative, settings. All
    user text is escaped."""
    info = summary(item)
    escape = html.escape
    kind = "CompiledLoss" if isinstance(item, CompiledLoss) else "Loss"
    title = f"<strong>{kind}</strong> <code>{escape(info.name or 'expression')}</code>"
    rows = []
    if info.doc:
        rows.append(("doc", escape(info.doc).replace("\n", "<br>")))
    rows.append(("formula", rf"\[{escape(_signature(info))} = {escape(info.formula_latex)}\]"
                 f"<code>{escape(info.formula)}</code>"))
    if info.inputs:
        cells = "".join(f"<tr><td><code>{escape(name)}</code></td><td>{escape(role)}</td>"
                        f"<td>{escape(shape)}</td></tr>" for name, role, shape in info.inputs)
        rows.append(("inputs", f"<table>{cells}</table>"))
    if info.params:
        rows.append(("params", ", ".join(f"<code>{escape(k)} = {escape(_number(v))}</code>"
                                         for k, v in info.params.items())))
    if info.wrt is not None:
        label = f"d/d{info.wrt}"
        if info.derivative is not None:
            rows.append((label, rf"\[{escape(_derivative_symbol(info))} = "
                                rf"{escape(info.derivative)}\]"))
        else:
            rows.append((label, f"not available: {escape(info.problem or '')}"))
    for key, value in info.settings.items():
        rows.append((key, f"<code>{escape(value)}</code>"))
    body = "".join(f'<tr><th style="text-align:left">{escape(key)}</th>'
                   f'<td style="text-align:left">{value}</td></tr>' for key, value in rows)
    return f'<div class="lossdsl">{title}<table>{body}</table></div>'
