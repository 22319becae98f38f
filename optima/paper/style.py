"""The one look of every paper figure: rcParams, method and module colours, PNG + PDF saving.

Colours follow the Okabe-Ito colour-blind-safe palette; a method or arm keeps its colour in every
figure. Figures are built on ``matplotlib.figure.Figure`` (no pyplot state, Agg canvas).
"""

from __future__ import annotations

import io
from pathlib import Path

FORMATS = ("png", "pdf")
PNG_DPI = 150
PANEL_SIZE = (3.3, 2.9)  # inches per task panel

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "lines.linewidth": 1.4,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by conference checkers
    # no "savefig.bbox: tight": the constrained layout already fits the labels, and tight bboxes
    # cost a second layout pass per saved file
}

METHOD_COLORS = {
    "teacher": "#555555",
    "finetune": "#999999",
    "kd": "#56B4E9",
    "layerwise": "#0072B2",
    "uniform": "#E69F00",
    "optima": "#D55E00",
    "fixed-vision": "#009E73",
    "fixed-text": "#CC79A7",
    "fixed-multimodal": "#B8860B",
    "ts": "#8C564B",
    "discounted_ts": "#9467BD",
    "sliding_window_ts": "#17BECF",
    "ucb": "#BCBD22",
    "exp3": "#7F7F7F",
}
_EXTRA = ("#1F77B4", "#2CA02C", "#D62728", "#FF7F0E", "#E377C2", "#8C8C00", "#393B79", "#637939")
MODULE_COLORS = {"vision": "#009E73", "text": "#CC79A7", "multimodal": "#E69F00", "all": "#0072B2"}
_MODULES = ("vision", "text", "multimodal")
_SUBSET_COLORS = {"vision+text": "#56B4E9", "vision+multimodal": "#D55E00", "text+multimodal": "#F0E442",
                  "vision+text+multimodal": "#000000"}


def style():
    """Context manager: apply the figure style (matplotlib.rc_context)."""
    import matplotlib

    return matplotlib.rc_context(RC)


def method_color(method: str, others: list[str] | None = None) -> str:
    """A method's colour; methods without one get a fixed extra colour by their rank in ``others``."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    rank = sorted(others or [method]).index(method) if others and method in others else 0
    return _EXTRA[rank % len(_EXTRA)]


def arm_color(arm: str) -> str:
    """Modules keep the colours above; module subsets ("text+multimodal") and unknown arms get the
    rest of the palette in a fixed order."""
    if arm in MODULE_COLORS:
        return MODULE_COLORS[arm]
    if arm in _SUBSET_COLORS:
        return _SUBSET_COLORS[arm]
    return _EXTRA[sum(map(ord, arm)) % len(_EXTRA)]


def arm_order(arms) -> list[str]:
    """Single modules first (vision, text, multimodal), then subsets by size, then anything else."""
    arms = set(arms)
    known = [a for a in (*_MODULES, *_SUBSET_COLORS, "all") if a in arms]
    return known + sorted(arms - set(known))


def new_figure(n_panels: int, sharey: bool = False, sharex: bool = False, height_scale: float = 1.0):
    """A figure with one panel per task, side by side."""
    from matplotlib.figure import Figure

    width, height = PANEL_SIZE
    fig = Figure(figsize=(width * n_panels, height * height_scale), layout="constrained")
    axes = fig.subplots(1, n_panels, sharey=sharey, sharex=sharex, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig, out_dir: str | Path, name: str, formats=FORMATS) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` (``formats``) atomically; PDFs carry no creation date, so
    reruns are identical."""
    from optima.io import atomic_write_bytes

    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
        path = Path(out_dir) / f"{name}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
        # keep the layout the first draw computed (matplotlib's documented freeze): the constrained
        # layout pass is most of a figure's cost and gives the same positions again
        fig.set_layout_engine("none")
    return paths


__all__ = ["FORMATS", "METHOD_COLORS", "MODULE_COLORS", "RC", "arm_color", "arm_order", "method_color", "new_figure",
           "save_figure", "style"]
