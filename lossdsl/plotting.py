"""Curves of losses and their derivatives, and the figure ``lossdsl plot`` draws.

:func:`curves` evaluates each loss, its gradient and its Hessian diagonal on a grid of values
of one input (the prediction, the residual when the target is 0, or a logit), with the other
inputs held at fixed values; :func:`draw` puts them in one figure of three panels (loss,
gradient, Hessian) with matplotlib's Agg backend, as PNG, SVG or PDF; :func:`layout`
describes where each panel landed in the image, so tests (and users) can map data to pixels.
"""

from __future__ import annotations

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


def curves(losses: list[tuple[str, Loss, str]], grid: np.ndarray, at: dict[str, float],
           params: dict[str, float] | None = None) -> list[Curve]:
    """Evaluate ``(label, loss, wrt)`` triples along ``grid`` (the values of input ``wrt``).

    Every other input of a loss takes its value from ``at`` (0 when not given). The gradient
    and Hessian are those of each sample's own loss (reduction "none").
    """
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


def draw(grid: np.ndarray, found: list[Curve], path: str | Path, xlabel: str,
         panels: tuple[str, ...] = PANELS, title: str | None = None,
         dpi: int = 100, width: float | None = None, height: float = 3.6) -> dict:
    """Draw the curves into ``path`` (format from its extension) and return :func:`layout`."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    from matplotlib import pyplot

    width = width or 4.2 * len(panels)
    figure, axes = pyplot.subplots(1, len(panels), figsize=(width, height), dpi=dpi,
                                   squeeze=False)
    axes = list(axes[0])
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
        figure.suptitle(title)
    figure.tight_layout()
    figure.canvas.draw()
    description = layout(figure, dict(zip(panels, axes, strict=True)))
    figure.savefig(path, dpi=dpi)
    pyplot.close(figure)
    return description


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
