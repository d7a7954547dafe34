"""Annotated heat maps of condition matrices, one panel per model side by side (like Figs. 6-11 of Yoshida et
al., "Evaluation of metric learning model for Person Re-identification"), and an overview of every factor."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["plot_factor", "plot_overview", "save_small_png"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_small_png(fig, path, dpi: int = 80, colors: Optional[int] = 128) -> Path:
    """Save a matplotlib figure as a PNG quantised to ``colors`` colours (small files for the repository)."""
    from PIL import Image

    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB")
    if colors:
        img = img.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    return path


def _panel(ax, mean, std, conditions, title, vmin, vmax, annotate_std=True, fontsize=7, cmap="viridis"):
    C = len(conditions)
    im = ax.imshow(mean, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(C))
    ax.set_yticks(range(C))
    ax.set_xticklabels(conditions, rotation=60, ha="right", fontsize=fontsize)
    ax.set_yticklabels(conditions, fontsize=fontsize)
    ax.set_title(title, fontsize=fontsize + 1)
    mid = (vmin + vmax) / 2
    for i in range(C):
        for j in range(C):
            v = mean[i, j]
            if np.isnan(v):
                continue
            txt = f"{v:.2f}"
            if annotate_std and std is not None and not np.isnan(std[i, j]):
                txt += f"\n±{std[i, j]:.2f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=fontsize - (1 if annotate_std else 0.5),
                    color="black" if v > mid else "white", linespacing=0.9)
    return im


def _range(mats, scale):
    vals = np.concatenate([m[~np.isnan(m)].ravel() for m in mats]) if mats else np.zeros(1)
    if scale == "fixed":
        return -0.2, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-3:
        lo, hi = lo - 0.01, hi + 0.01
    return lo, hi


def plot_factor(result: dict, factor: str, out_png, models: Optional[Sequence[str]] = None, scale: str = "model",
                dpi: int = 90, colors: Optional[int] = 128) -> Path:
    """One row of panels: the factor's matrix (mean over persons, ± spread) for each model. ``scale``: colour
    range per ``model`` panel, ``shared`` by all panels, or ``fixed`` (-0.2 .. 1)."""
    plt = _plt()
    names = list(models or result["variants"])
    C = len(result["conditions"])
    size = max(3.0, 0.62 * C + 1.2)
    fig, axes = plt.subplots(1, len(names), figsize=(size * len(names), size + 0.4), squeeze=False)
    shared = _range([result["variants"][n]["mean"] for n in names], scale) if scale != "model" else None
    for ax, n in zip(axes[0], names):
        v = result["variants"][n]
        lo, hi = shared or _range([v["mean"]], "model")
        imp = np.nanmean(v["impostor"])
        title = f"{n}\n(different persons: {imp:.2f})" if not np.isnan(imp) else n
        im = _panel(ax, v["mean"], v["std"], result["conditions"], title, lo, hi, annotate_std=C <= 8,
                    fontsize=8 if C <= 5 else 7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    persons = result.get("persons")
    fig.suptitle(f"{factor}: mean cosine similarity over {persons} persons (diagonal: within a condition, "
                 f"off-diagonal: between conditions; ± std over persons)", fontsize=8)
    fig.tight_layout()
    return save_small_png(fig, out_png, dpi=dpi, colors=colors)


def plot_overview(results: dict, out_png, models: Optional[Sequence[str]] = None, scale: str = "model",
                  dpi: int = 70, colors: Optional[int] = 128) -> Path:
    """Every factor (rows) x every model (columns), means annotated."""
    plt = _plt()
    factors = list(results)
    names = list(models or next(iter(results.values()))["variants"])
    fig, axes = plt.subplots(len(factors), len(names), figsize=(3.6 * len(names), 3.6 * len(factors)),
                             squeeze=False)
    for r, f in enumerate(factors):
        res = results[f]
        shared = _range([res["variants"][n]["mean"] for n in names], scale) if scale != "model" else None
        for c, n in enumerate(names):
            v = res["variants"][n]
            lo, hi = shared or _range([v["mean"]], "model")
            _panel(axes[r, c], v["mean"], None, res["conditions"], f"{f} / {n}", lo, hi, annotate_std=False,
                   fontsize=6)
    fig.tight_layout()
    return save_small_png(fig, out_png, dpi=dpi, colors=colors)
