"""Figures of the notebooks (matplotlib); each returns its figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np


def image_grid(rows: Sequence[Sequence[np.ndarray]], col_titles: Sequence[str], row_titles: Sequence[str] | None = None,
               size: float = 2.0):
    """A grid of images; ``rows[i][j]`` is row i, column j."""
    n, m = len(rows), len(col_titles)
    fig, axes = plt.subplots(n, m, figsize=(size * m, size * n), squeeze=False)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = axes[i][j]
            ax.imshow(img, cmap="magma" if img.ndim == 2 else None, vmin=0 if img.ndim == 2 else None,
                      vmax=(img.max() or 1) if img.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_titles[j], fontsize=10)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def histogram(values: np.ndarray, xlabel: str, title: str, bins: int = 40):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(values, bins=bins, color="#4c72b0")
    med = float(np.median(values))
    ax.axvline(med, color="k", ls="--", lw=1, label=f"median {med:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def curves(histories: dict[str, list[dict[str, float]]], keys: Sequence[str]):
    """Training curves: one panel per key, one line per model."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, hist in histories.items():
            ep = [h["epoch"] for h in hist]
            if key == "loss":
                ax.plot(ep, [h["loss"] for h in hist], "-o", ms=3, label=f"{name} train")
                ax.plot(ep, [h["val_loss"] for h in hist], "--o", ms=3, label=f"{name} val")
            else:
                ax.plot(ep, [h[key] for h in hist], "-o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def distributions(values: dict[str, np.ndarray], xlabel: str):
    """Per-image distributions of one metric, one box per method."""
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(values)))
    names = list(values)
    ax.boxplot([values[k][np.isfinite(values[k])] for k in names], vert=False, tick_labels=names, showfliers=False)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig
