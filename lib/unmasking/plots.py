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


def perception_distortion(methods: dict[str, dict], x: str = "masked_psnr", y: str = "c2st_distance"):
    """Each method as a point: distortion (``x``) against realism distance (``y``), with their 95 % intervals."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in methods.items():
        if s.get(x) is None or s.get(y) is None:
            continue
        xe = np.abs(np.array(s.get(f"{x}_ci95") or [s[x], s[x]]) - s[x])[:, None]
        ye = np.abs(np.array(s.get(f"{y}_ci95") or [s[y], s[y]]) - s[y])[:, None]
        ax.errorbar(s[x], s[y], xerr=xe, yerr=ye, fmt="o", capsize=3)
        ax.annotate(name, (s[x], s[y]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{x} (higher: closer to the true face)")
    ax.set_ylabel(f"{y} (lower: harder to tell from a real face)")
    fig.tight_layout()
    return fig


def _region_crop(img: np.ndarray, region: np.ndarray, pad: int = 2, size: int = 96) -> np.ndarray:
    from unmasking import images, metrics

    ys, xs = metrics.bbox(region)
    ys = slice(max(0, ys.start - pad), ys.stop + pad)
    xs = slice(max(0, xs.start - pad), xs.stop + pad)
    return images.resize(np.ascontiguousarray(img[ys, xs]), size)


def region_grid(example: dict, names: Sequence[str], n: int = 8):
    """The masked region of the first ``n`` pairs of an evaluation example: the true face and each method in
    ``names`` (one row each), enlarged."""
    from unmasking import metrics

    shown = [m for m in names if m in example["outputs"]]
    rows = [[], *[[] for _ in shown]]
    for i in range(min(n, len(example["ids"]))):
        region = metrics.region(example["masked"][i] / 255.0, example["unmasked"][i] / 255.0)
        if not region.any():
            continue
        rows[0].append(_region_crop(example["unmasked"][i], region))
        for k, m in enumerate(shown):
            rows[k + 1].append(_region_crop(example["outputs"][m][i], region))
    return image_grid(rows, [f"face {i + 1}" for i in range(len(rows[0]))], ["true face", *shown], size=1.3)


def cases(example: dict, ids: Sequence[str], models: Sequence[str], best: str):
    """Masked, original, each model's output and the absolute error of ``best`` for the pairs ``ids``."""
    index = {pid: i for i, pid in enumerate(example["ids"])}
    out = example["outputs"]
    shown = [m for m in models if m in out]
    grid = [[example["masked"][index[p]], example["unmasked"][index[p]], *[out[m][index[p]] for m in shown],
             np.abs(out[best][index[p]].astype(float) - example["unmasked"][index[p]]).mean(-1) / 255] for p in ids]
    return image_grid(grid, ["masked", "original", *shown, f"|error| {best}"], list(ids))
