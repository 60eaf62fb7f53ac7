"""Curves of losses and their derivatives: ``lossdsl.plot`` and the figure ``lossdsl plot``
draws.

:func:`curves` evaluates each loss, its gradient and its Hessian diagonal on a grid of values
of one input (the prediction, the residual when the target is 0, or a logit), with the other
inputs held at fixed values; :func:`figure` puts them in one matplotlib figure of three panels
(loss, gradient, Hessian); :func:`plot` (``lossdsl.plot``) does both for a notebook and
returns the figure; :func:`draw` saves it as PNG, SVG or PDF and :func:`layout` describes
where each panel landed in the image, so tests (and users) can map data to pixels.

Figures are made with :class:`matplotlib.figure.Figure` and drawn by an Agg canvas of their
own: matplotlib's global backend and pyplot's list of figures are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .api import CompiledLoss, Loss

PANELS = ("loss", "gradient", "hessian")


@dataclass
class Curve:
    """One loss on the grid: its value, gradient and Hessian diagonal at each grid point."""

    label: str
    wrt: str
    values: dict[str, np.ndarray] = field(default_factory=dict)  # panel name -> array


def couples_samples(loss: Loss) -> bool:
    """Whether a sample's loss depends on other samples: the loss sums or averages over
    samples itself (Dice), or over a sample's group (a query), its pairs, or the samples
    after it in the order of a key (a risk set). Such a loss has no curve of one sample's
    value, and ``lossdsl eval`` cannot split its data into chunks."""
    from .ir.node import walk

    return bool(any(n.op in ("sum", "mean") for n in walk(loss.definition.graph))
                or loss.group_inputs or loss.cumulative_sums)


def curves(losses: list[tuple[str, Loss, str]], grid: np.ndarray, at: dict[str, float],
           params: dict[str, float] | None = None) -> list[Curve]:
    """Evaluate ``(label, loss, wrt)`` triples along ``grid`` (the values of input ``wrt``).

    Every other input of a loss takes its value from ``at`` (0 when not given). The gradient
    and Hessian are those of each sample's own loss (reduction "none"). A loss whose samples
    depend on each other (:func:`couples_samples`) is a :class:`~lossdsl.LossError`: the
    grid would be one batch, and the curve the batch's value, not one sample's.
    """
    from .errors import LossError

    for label, loss, _ in losses:
        if couples_samples(loss):
            raise LossError(
                f"{label} cannot be plotted against one input: a sample's loss depends on the "
                "other samples (it sums or averages over samples, groups, pairs or risk "
                "sets), so along the grid it would be the value of one batch made of the "
                "grid's points, not a curve; evaluate it on data instead (lossdsl eval, or "
                "compile it and call it on arrays)")
    result = []
    for label, loss, wrt in losses:
        accepted = {k: v for k, v in (params or {}).items() if k in loss.params}
        compiled = CompiledLoss(loss, "cpu", "none", accepted)
        inputs: dict[str, Any] = {name: float(at.get(name, 0.0)) for name in loss.inputs}
        inputs[wrt] = grid
        value = np.broadcast_to(compiled(**inputs), grid.shape)
        gradient, hessian = compiled.grad_and_hessian(wrt, **inputs)
        curve = Curve(label, wrt)
        for name, array in zip(PANELS, (value, gradient, hessian), strict=True):
            array = np.array(np.broadcast_to(array, grid.shape), dtype=np.float64)
            array[~np.isfinite(array)] = np.nan  # gaps in the plot instead of a ruined scale
            curve.values[name] = array
        result.append(curve)
    return result


def figure(grid: np.ndarray, found: list[Curve], xlabel: str,
           panels: tuple[str, ...] = PANELS, title: str | None = None, dpi: int = 100,
           width: float | None = None, height: float = 3.6) -> tuple[Any, dict[str, Any]]:
    """A :class:`matplotlib.figure.Figure` of the curves, one panel per name in ``panels``,
    and its axes by panel name. The figure has an Agg canvas of its own and is not known to
    pyplot (nothing global changes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = width or 4.2 * len(panels)
    result = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(result)
    axes = list(result.subplots(1, len(panels), squeeze=False)[0])
    wrt_names = sorted({c.wrt for c in found})
    wrt = wrt_names[0] if len(wrt_names) == 1 else "x"
    headings = {"loss": "loss", "gradient": f"gradient  d/d{wrt}",
                "hessian": f"Hessian  d\u00b2/d{wrt}\u00b2"}
    for ax, panel in zip(axes, panels, strict=True):
        for curve in found:
            ax.plot(grid, curve.values[panel], label=curve.label, linewidth=1.8)
        ax.axhline(0.0, color="0.6", linewidth=0.8, zorder=0)
        ax.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
        ax.set_title(headings[panel])
        ax.set_xlabel(xlabel)
        ax.set_xlim(grid[0], grid[-1])
        ax.grid(True, color="0.9")
    axes[0].legend(loc="best", fontsize="small", frameon=False)
    if title:
        result.suptitle(title)
    result.tight_layout()
    return result, dict(zip(panels, axes, strict=True))


def draw(grid: np.ndarray, found: list[Curve], path: str | Path, xlabel: str,
         panels: tuple[str, ...] = PANELS, title: str | None = None,
         dpi: int = 100, width: float | None = None, height: float = 3.6) -> dict:
    """Draw the curves into ``path`` (format from its extension) and return :func:`layout`."""
    drawn, axes = figure(grid, found, xlabel, panels, title, dpi, width, height)
    drawn.canvas.draw()
    description = layout(drawn, axes)
    drawn.savefig(path, dpi=dpi)
    return description


def axis_label(losses: list[tuple[str, Loss, str]], at: Mapping[str, float]) -> str:
    """The x-axis label for ``(label, loss, wrt)`` triples: the input(s) varied and the values
    the others are held at; ``residual p - y (y = 0)`` for one target held at 0."""
    wrt_names = sorted({wrt for _, _, wrt in losses})
    settings = sorted({name for _, loss, wrt in losses for name in loss.inputs if name != wrt})
    fixed = ", ".join(f"{name} = {at.get(name, 0.0):g}" for name in settings)
    if len(wrt_names) == 1 and len(settings) == 1 and not at.get(settings[0]):
        return f"residual {wrt_names[0]} \u2212 {settings[0]}   ({settings[0]} = 0)"
    return " / ".join(wrt_names) + (f"   ({fixed})" if fixed else "")


def plot(*losses: str | Loss | CompiledLoss, wrt: str | None = None,
         range: tuple[float, float] = (-3.0, 3.0), points: int = 201,  # noqa: A002
         at: Mapping[str, float] | None = None, params: Mapping[str, float] | None = None,
         panels: tuple[str, ...] = PANELS, labels: list[str] | None = None,
         title: str | None = None, xlabel: str | None = None, dpi: int = 100,
         width: float | None = None, height: float = 3.6) -> Any:
    """Plot losses, their gradients and Hessian diagonals against one input; returns a
    :class:`matplotlib.figure.Figure` (shown by a notebook; ``.savefig`` to keep it).

    ``losses``: loss text, :class:`~lossdsl.Loss` or :class:`~lossdsl.CompiledLoss` (whose
    params are used). ``wrt``: the input on the x axis (by default each loss's prediction:
    ``p``, ``z``, ...), over ``range`` in ``points`` steps; the other inputs are held at
    ``at`` (0 when not given). ``params`` override param values; ``panels`` picks among
    ``"loss"``, ``"gradient"`` and ``"hessian"``; ``labels`` name the curves (by default the
    loss text or name). matplotlib's global backend and pyplot's figures are left alone.
    """
    from .api import loss_from_text
    from .errors import LossError, LossNameError, did_you_mean
    from .notebook import prediction_input

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LossError("lossdsl.plot needs matplotlib: pip install matplotlib") from None
    if not losses:
        raise LossError("lossdsl.plot needs at least one loss")
    try:
        low, high = (float(v) for v in range)
    except (TypeError, ValueError):
        raise LossError(f"range must be two numbers (low, high), got {range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise LossError(f"range must be finite with low < high, got {range!r}")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise LossError(f"points must be an integer of at least 2, got {points!r}")
    unknown = [p for p in panels if p not in PANELS]
    if unknown or not panels:
        raise LossError(f"panels are among {', '.join(PANELS)}; got {tuple(panels)!r}")
    if labels is not None and len(labels) != len(losses):
        raise LossError(f"labels: {len(labels)} given for {len(losses)} losses")
    entries = []
    for index, item in enumerate(losses):
        own_params: dict[str, float] = {}
        if isinstance(item, CompiledLoss):
            loss, own_params, label = item.loss, dict(item.params), item.name
        elif isinstance(item, Loss):
            loss, label = item, item.name
        elif isinstance(item, str):
            loss = loss_from_text(item)
            label = loss.name or item.strip()
        else:
            raise LossError(f"lossdsl.plot takes loss text, Loss or CompiledLoss, not "
                            f"{type(item).__name__}")
        label = labels[index] if labels is not None else (label or str(loss.definition.graph))
        name = wrt or prediction_input(loss)
        if name is None or name not in loss.inputs:
            raise LossNameError(f"'{name}' is not an input of {label} (inputs: "
                                f"{', '.join(loss.inputs) or 'none'})", None,
                                did_you_mean(str(name), loss.inputs))
        entries.append((label, loss, name, own_params))
    at, params = dict(at or {}), dict(params or {})
    inputs = {n for _, loss, _, _ in entries for n in loss.inputs}
    param_names = {n for _, loss, _, _ in entries for n in loss.params}
    for kind, given, known, other in (("an input", at, inputs, "params"),
                                      ("a param", params, param_names, "at")):
        for name in given:
            if name not in known:
                hint = misplaced_hint(name, given[name], inputs, param_names, other) \
                    or did_you_mean(name, known)
                raise LossNameError(f"no loss here has {kind} named '{name}'"
                                    + (f"; {hint}" if hint else ""))
    grid = np.linspace(low, high, int(points))
    found = [curve for label, loss, name, own in entries
             for curve in curves([(label, loss, name)], grid, at, {**own, **params})]
    triples = [(label, loss, name) for label, loss, name, _ in entries]
    drawn, _ = figure(grid, found, xlabel or axis_label(triples, at), tuple(panels), title,
                      dpi, width, height)
    return drawn


def misplaced_hint(name: str, value: float, inputs: set[str], params: set[str],
                   where: str) -> str | None:
    """The hint for a value given as a param that is an input (or the reverse): where to give
    it instead, ``where`` spelling that place (``"at"`` gives ``at={'a': 0.9}``, ``"--at"``
    gives ``--at a=0.9``); None when ``name`` is neither."""
    kind = "an input" if name in inputs else "a param" if name in params else None
    if kind is None:
        return None
    written = f"{where} {name}={value:g}" if where.startswith("--") else \
        f"{where}={{{name!r}: {value:g}}}"
    return f"'{name}' is {kind} of the loss: give it with {written}"


def layout(figure, axes_by_panel: dict[str, Any]) -> dict:
    """Pixel geometry of a drawn figure: size, and per panel its box in image coordinates
    (origin top left, y down) with the data limits the box spans."""
    from matplotlib.colors import to_hex

    width, height = figure.canvas.get_width_height()
    panels = {}
    for name, ax in axes_by_panel.items():
        box = ax.get_window_extent()
        panels[name] = {
            "box": [float(box.x0), float(height - box.y1), float(box.x1), float(height - box.y0)],
            "xlim": [float(v) for v in ax.get_xlim()],
            "ylim": [float(v) for v in ax.get_ylim()],
            "colors": [to_hex(line.get_color()) for line in ax.get_lines()
                       if not line.get_label().startswith("_")],
        }
    return {"width": width, "height": height, "panels": panels}
