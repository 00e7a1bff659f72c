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


class IdentityScorer:
    """dlib face embeddings for identity metrics. The box comes from detecting the face on the true image
    (upsampled, as crops are small); when none is found the crop's known face box is used and counted."""

    def __init__(self) -> None:
        self.fallbacks = 0
        self.failures = 0

    def box_for(self, truth: np.ndarray) -> tuple[int, int, int, int]:
        from unmasking import faces

        boxes = faces.detect_faces(truth, upsample=1)
        if boxes:
            return boxes[0]
        self.fallbacks += 1
        return face_box(truth.shape[0])

    def embed(self, img: np.ndarray, box) -> np.ndarray | None:
        from unmasking import faces

        try:
            return faces.embedding(img, box)
        except RuntimeError:
            self.failures += 1
            return None


def evaluate(masked: np.ndarray, unmasked: np.ndarray, ids: list[str], outputs: dict[str, np.ndarray],
             identity: bool = True, progress: bool = True) -> list[dict[str, Any]]:
    """Per-image metrics of every method's ``outputs`` (uint8, aligned with ``masked``/``unmasked``).

    Returns one row per (method, image): ``method``, ``pair_id``, the pixel metrics, ``identity_distance`` and
    ``identity_match`` (NaN / None where no embedding could be computed).
    """
    from tqdm import tqdm

    scorer = IdentityScorer() if identity else None
    rows = []
    for i in tqdm(range(len(ids)), desc="evaluating", disable=None if progress else True, mininterval=2.0):
        m = masked[i].astype(np.float32) / 255
        u = unmasked[i].astype(np.float32) / 255
        if scorer:
            box = scorer.box_for(unmasked[i])
            e_true = scorer.embed(unmasked[i], box)
        for name, out in outputs.items():
            row = {"method": name, "pair_id": ids[i], **metrics.image_metrics(out[i].astype(np.float32) / 255, u, m)}
            if scorer:
                d = metrics.identity_distance(scorer.embed(out[i], box), e_true)
                row["identity_distance"] = d
                row["identity_match"] = None if np.isnan(d) else bool(d < metrics.IDENTITY_THRESHOLD)
            rows.append(row)
    if scorer:
        for r in rows:
            r["identity_box_fallback"] = scorer.fallbacks
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
