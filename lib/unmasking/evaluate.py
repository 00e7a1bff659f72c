"""The evaluation: methods and baselines on a test split, per-image metrics and their summary table.

Methods (``METHODS``):

* ``masked_input``  -- do nothing: the masked image itself.
* ``telea``         -- OpenCV's Telea inpainting over a mask region estimated from the masked image alone
  (``estimate_mask_region``: bright, unsaturated pixels in the lower face, the white mask's colour).
* ``telea_oracle``  -- the same inpainting over the true region (where the pair differs): not available at inference,
  shown as the best a classical method could do with perfect knowledge of the mask.
* ``paper_ae``, ``mask_unet`` -- the trained models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import metrics

BASELINES = ("masked_input", "telea", "telea_oracle")
SUMMARY_METRICS = (*metrics.IMAGE_METRICS, "identity_distance", "identity_match_rate")


def estimate_mask_region(masked: np.ndarray) -> np.ndarray:
    """A mask region guessed from a masked face (uint8 RGB) without the true face: (H, W) bool.

    Bright, unsaturated pixels (a white surgical mask) in the lower 70 % of the crop, closed and opened
    morphologically, the largest connected blob kept and dilated by 2 px.
    """
    import cv2

    hsv = cv2.cvtColor(masked, cv2.COLOR_RGB2HSV)
    s, v = hsv[..., 1].astype(np.float32) / 255, hsv[..., 2].astype(np.float32) / 255
    cand = (s < 0.2) & (v > 0.55)
    h = masked.shape[0]
    cand[: int(0.3 * h)] = False
    k = max(3, h // 40) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    m = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m)
    if n <= 1:
        return np.zeros(masked.shape[:2], bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    m = (labels == biggest).astype(np.uint8)
    return cv2.dilate(m, np.ones((5, 5), np.uint8)).astype(bool)


def telea(masked: np.ndarray, region: np.ndarray, radius: int = 5) -> np.ndarray:
    """OpenCV Telea inpainting of ``region`` (bool) in a uint8 RGB image."""
    import cv2

    if not region.any():
        return masked.copy()
    return cv2.inpaint(np.ascontiguousarray(masked), region.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def baseline_outputs(name: str, masked: np.ndarray, unmasked: np.ndarray, radius: int = 5) -> np.ndarray:
    """Outputs (uint8) of a baseline method for a batch of masked images."""
    if name == "masked_input":
        return masked.copy()
    if name == "telea":
        return np.stack([telea(m, estimate_mask_region(m), radius) for m in masked])
    if name == "telea_oracle":
        import cv2

        out = []
        for m, u in zip(masked, unmasked):
            r = metrics.region(m.astype(np.float32) / 255, u.astype(np.float32) / 255)
            r = cv2.dilate(r.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            out.append(telea(m, r, radius))
        return np.stack(out)
    raise ValueError(f"unknown baseline {name!r}")


def model_outputs(model, masked: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """A trained model's unmasked faces (uint8) for uint8 masked inputs, predicted in batches."""
    from unmasking import images, models

    return images.to_uint8(models.predict_faces(model, masked.astype(np.float32) / 255.0, batch_size))


def face_box(size: int) -> tuple[int, int, int, int]:
    """The face box of a crop made by ``masks.crop_box`` (the landmarks' bounding box), used when detection fails."""

    half = size / 1.9 / 2
    cx, cy = size / 2, size / 2 + 0.08 * size
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


def _identity_one(task: tuple[np.ndarray, list[np.ndarray]]) -> tuple[bool, list[float]]:
    """Embedding distances of each output to the true face; the face box is detected on the true image (upsampled,
    as crops are small) and shared by all outputs; when none is found the crop's known face box is used."""
    from unmasking import faces

    truth, outs = task
    boxes = faces.detect_faces(truth, upsample=1)
    fallback = not boxes
    box = boxes[0] if boxes else face_box(truth.shape[0])

    def embed(img):
        try:
            return faces.embedding(img, box)
        except RuntimeError:
            return None

    e_true = embed(truth)
    return fallback, [metrics.identity_distance(embed(o), e_true) for o in outs]


def identity_distances(unmasked: np.ndarray, outputs: dict[str, np.ndarray], workers: int = 2,
                       progress: bool = True) -> tuple[dict[str, np.ndarray], int]:
    """dlib embedding distance of every method's output to the true face, per image: ({method: (N,)}, fallbacks).

    dlib computes one embedding on one core; the pairs are spread over ``workers`` processes.
    """
    import multiprocessing as mp

    from tqdm import tqdm

    names = list(outputs)
    tasks = ((unmasked[i], [outputs[n][i] for n in names]) for i in range(len(unmasked)))
    results = []
    bar = tqdm(total=len(unmasked), desc="identity", disable=None if progress else True, mininterval=2.0)
    if workers > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            for r in pool.imap(_identity_one, tasks, chunksize=8):
                results.append(r)
                bar.update(1)
    else:
        for t in tasks:
            results.append(_identity_one(t))
            bar.update(1)
    bar.close()
    dist = {n: np.array([r[1][j] for r in results], np.float64) for j, n in enumerate(names)}
    return dist, int(sum(r[0] for r in results))


def evaluate(masked: np.ndarray, unmasked: np.ndarray, ids: list[str], outputs: dict[str, np.ndarray],
             identity: bool = True, progress: bool = True, workers: int = 2) -> list[dict[str, Any]]:
    """Per-image metrics of every method's ``outputs`` (uint8, aligned with ``masked``/``unmasked``).

    Returns one row per (method, image): ``method``, ``pair_id``, the pixel metrics, ``identity_distance`` and
    ``identity_match`` (NaN / None where no embedding could be computed).
    """
    from tqdm import tqdm

    rows = []
    for i in tqdm(range(len(ids)), desc="pixel metrics", disable=None if progress else True, mininterval=2.0):
        m = masked[i].astype(np.float32) / 255
        u = unmasked[i].astype(np.float32) / 255
        for name, out in outputs.items():
            rows.append({"method": name, "pair_id": ids[i],
                         **metrics.image_metrics(out[i].astype(np.float32) / 255, u, m)})
    if identity:
        dist, fallbacks = identity_distances(unmasked, outputs, workers, progress)
        names = list(outputs)
        for k, row in enumerate(rows):
            d = float(dist[row["method"]][k // len(names)])
            row["identity_distance"] = d
            row["identity_match"] = None if np.isnan(d) else bool(d < metrics.IDENTITY_THRESHOLD)
            row["identity_box_fallback"] = fallbacks
    return rows


def summarize(rows: list[dict[str, Any]], threshold: float = metrics.IDENTITY_THRESHOLD) -> dict[str, dict[str, Any]]:
    """Mean of each metric per method (NaN-aware), the identity match rate, and how many had no embedding."""
    out: dict[str, dict[str, Any]] = {}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for name in methods:
        rs = [r for r in rows if r["method"] == name]
        s: dict[str, Any] = {}
        for k in metrics.IMAGE_METRICS:
            v = np.array([r[k] for r in rs], np.float64)
            s[k] = _round(np.nanmean(v)) if np.isfinite(v).any() else None
        if "identity_distance" in rs[0]:
            d = np.array([r["identity_distance"] for r in rs], np.float64)
            ok = np.isfinite(d)
            s["identity_distance"] = _round(d[ok].mean()) if ok.any() else None
            s["identity_match_rate"] = _round(float((d[ok] < threshold).mean())) if ok.any() else None
            s["identity_missing"] = int((~ok).sum())
        s["n"] = len(rs)
        out[name] = s
    return out


def _round(v: float) -> float:
    return float(f"{float(v):.5g}")


def write_metrics(path: Path, tables: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(tables, indent=2) + "\n")


def write_rows(path: Path, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cols = ["set", "method", "pair_id", *metrics.IMAGE_METRICS, "identity_distance", "identity_match"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**(extra or {}), **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}})


def rank_cases(rows: list[dict[str, Any]], method: str, key: str = "masked_psnr", n: int = 4, seed: int = 0
               ) -> dict[str, list[str]]:
    """Pair ids of the ``n`` best, worst and random test cases of ``method`` by ``key``."""
    rs = [r for r in rows if r["method"] == method and np.isfinite(r[key])]
    rs.sort(key=lambda r: r[key])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rs), size=min(n, len(rs)), replace=False) if rs else []
    return {"best": [r["pair_id"] for r in rs[::-1][:n]], "worst": [r["pair_id"] for r in rs[:n]],
            "random": [rs[i]["pair_id"] for i in sorted(pick)]}
