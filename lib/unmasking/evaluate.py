"""The evaluation: methods and baselines on a test split, per-image metrics and their summary table.

Methods (``METHODS``):

* ``masked_input``  -- do nothing: the masked image itself.
* ``telea``         -- OpenCV's Telea inpainting over a mask region estimated from the masked image alone
  (``estimate_mask_region``: bright, unsaturated pixels in the lower face, the white mask's colour).
* ``telea_oracle``  -- the same inpainting over the true region (where the pair differs): not available at inference,
  shown as the best a classical method could do with perfect knowledge of the mask.
* ``paper_ae``, ``mask_unet`` -- the trained models; those named in ``evaluate.flip_average`` output the mean of
  their prediction on the face and, mirrored back, on its mirror image (``model_outputs``).

Each row carries the mask template of its pair, so every metric can be summarized per template (``summarize_by``):
the robustness table of the in-domain faces masked with each template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import metrics, parallel

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


def model_outputs(model, masked: np.ndarray, batch_size: int = 64, flip_average: bool = False) -> np.ndarray:
    """A trained model's unmasked faces (uint8) for uint8 masked inputs, predicted in batches.

    ``flip_average``: the mean of the prediction on each image and, mirrored back, on its mirror image (test-time
    flip averaging; the faces are roughly symmetric and the models train on random flips). Needs no true mask.
    """
    from unmasking import images, models

    x = masked.astype(np.float32) / 255.0
    if not flip_average:
        return images.to_uint8(models.predict_faces(model, x, batch_size))
    # one prediction over the images and their mirrors: a second call would cost Keras's per-call overhead again
    y = models.predict_faces(model, np.concatenate([x, x[:, :, ::-1]]), batch_size)
    return images.to_uint8((y[: len(x)] + y[len(x):, :, ::-1]) / 2)


def flip_averaged(model, ep: dict[str, Any]) -> bool:
    """Whether ``model`` is predicted with flip averaging: ``evaluate.flip_average`` names it (by the model's own
    name, ``paper_ae`` or ``mask_unet``, whatever its weights file is called)."""
    return model.name in ep["flip_average"]


def face_box(size: int) -> tuple[int, int, int, int]:
    """The face box of a crop made by ``masks.crop_box`` (the landmarks' bounding box), used when detection fails."""

    half = size / 1.9 / 2
    cx, cy = size / 2, size / 2 + 0.08 * size
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


Truth = tuple[bool, tuple[int, int, int, int], "np.ndarray | None"]  # (fallback box used, face box, embedding)


def _identity_one(task: tuple[np.ndarray, list[np.ndarray], Truth | None]) -> tuple[Truth, list[float]]:
    """Embedding distances of each output to the true face; the face box is detected on the true image (upsampled,
    as crops are small) and shared by all outputs; when none is found the crop's known face box is used. The true
    face's box and embedding are computed here unless the task carries them."""
    from unmasking import faces

    truth, outs, known = task

    def embed(img, box):
        try:
            return faces.embedding(img, box)
        except RuntimeError:
            return None

    if known is None:
        boxes = faces.detect_faces(truth, upsample=1)
        box = boxes[0] if boxes else face_box(truth.shape[0])
        known = (not boxes, box, embed(truth, box))
    _, box, e_true = known
    return known, [metrics.identity_distance(embed(o, box), e_true) for o in outs]


def identity_distances(unmasked: np.ndarray, outputs: dict[str, np.ndarray], workers: int = 2,
                       progress: bool = True, truth_cache: dict[str, Truth] | None = None
                       ) -> tuple[dict[str, np.ndarray], int]:
    """dlib embedding distance of every method's output to the true face, per image: ({method: (N,)}, fallbacks).

    dlib computes one embedding on one core; the pairs are spread over ``workers`` processes. ``truth_cache`` (a
    dict kept between calls) holds each true face's box and embedding under a hash of its pixels, so sets that
    mask the same faces with other templates compute them once.
    """
    import hashlib

    names = list(outputs)
    cache = {} if truth_cache is None else truth_cache
    keys = [hashlib.sha1(np.ascontiguousarray(u).tobytes()).hexdigest() + str(u.shape) for u in unmasked]
    tasks = ((unmasked[i], [outputs[n][i] for n in names], cache.get(keys[i])) for i in range(len(unmasked)))
    results = parallel.ordered_map_with_progress(_identity_one, tasks, len(unmasked), "identity", workers, progress)
    cache.update(zip(keys, (r[0] for r in results)))
    dist = {n: np.array([r[1][j] for r in results], np.float64) for j, n in enumerate(names)}
    return dist, int(sum(r[0][0] for r in results))


_PIXEL_INPUTS: dict[str, Any] = {}


def _set_pixel_inputs(masked: np.ndarray, unmasked: np.ndarray, outputs: list[np.ndarray]) -> None:
    _PIXEL_INPUTS.update(masked=masked, unmasked=unmasked, outputs=outputs)


def _pixel_metrics_one(i: int) -> list[dict[str, float]]:
    """Every method's pixel metrics for image ``i`` of the arrays in ``_PIXEL_INPUTS`` (set in each worker)."""
    masked, unmasked, outputs = _PIXEL_INPUTS["masked"], _PIXEL_INPUTS["unmasked"], _PIXEL_INPUTS["outputs"]
    m = masked[i].astype(np.float32) / 255
    u = unmasked[i].astype(np.float32) / 255
    return [metrics.image_metrics(out[i].astype(np.float32) / 255, u, m) for out in outputs]


def pixel_metrics(masked: np.ndarray, unmasked: np.ndarray, outputs: dict[str, np.ndarray], workers: int = 2,
                  progress: bool = True) -> list[list[dict[str, float]]]:
    """``metrics.image_metrics`` of every method's output for every image: [image][method, in ``outputs`` order].

    The images are spread over ``workers`` processes (the same numbers as one process, in the same order).
    """
    try:
        return parallel.ordered_map_with_progress(
            _pixel_metrics_one, range(len(masked)), len(masked), "pixel metrics", workers, progress,
            initializer=_set_pixel_inputs, initargs=(masked, unmasked, list(outputs.values())), chunksize=16)
    finally:
        _PIXEL_INPUTS.clear()


def evaluate(masked: np.ndarray, unmasked: np.ndarray, ids: list[str], outputs: dict[str, np.ndarray],
             identity: bool = True, progress: bool = True, workers: int = 2, masks: list[str] | None = None,
             identity_limit: int = 0, truth_cache: dict[str, Truth] | None = None) -> list[dict[str, Any]]:
    """Per-image metrics of every method's ``outputs`` (uint8, aligned with ``masked``/``unmasked``).

    Returns one row per (method, image): ``method``, ``pair_id``, ``mask`` (the template, when ``masks`` is given),
    the pixel metrics, ``identity_distance`` and ``identity_match`` (NaN / None where no embedding could be computed).
    ``identity_limit`` > 0 scores identity on the first that many images only (dlib takes ~0.1 s per face); the
    other rows have no identity keys. ``truth_cache``: see ``identity_distances``.
    """
    names = list(outputs)
    per_image = pixel_metrics(masked, unmasked, outputs, workers, progress)
    rows = [{"method": name, "pair_id": ids[i], **({"mask": masks[i]} if masks else {}), **per_image[i][j]}
            for i in range(len(ids)) for j, name in enumerate(names)]
    if identity:
        n = min(identity_limit, len(ids)) if identity_limit else len(ids)
        dist, _ = identity_distances(unmasked[:n], {k: v[:n] for k, v in outputs.items()}, workers, progress,
                                     truth_cache)
        for k, row in enumerate(rows[: n * len(names)]):
            d = float(dist[row["method"]][k // len(names)])
            row["identity_distance"] = d
            row["identity_match"] = None if np.isnan(d) else bool(d < metrics.IDENTITY_THRESHOLD)
    return rows


def summarize_by(rows: list[dict[str, Any]], key: str = "mask", threshold: float = metrics.IDENTITY_THRESHOLD
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """``summarize`` per value of ``key`` (e.g. per mask template): {value: {method: summary}}."""
    values = sorted({r[key] for r in rows if key in r})
    return {v: summarize([r for r in rows if r.get(key) == v], threshold) for v in values}


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
        scored = [r for r in rs if "identity_distance" in r]
        if scored:
            d = np.array([r["identity_distance"] for r in scored], np.float64)
            ok = np.isfinite(d)
            s["identity_distance"] = _round(d[ok].mean()) if ok.any() else None
            s["identity_match_rate"] = _round(float((d[ok] < threshold).mean())) if ok.any() else None
            s["identity_missing"] = int((~ok).sum())
            if len(scored) < len(rs):
                s["identity_n"] = len(scored)
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
    cols = ["set", "mask", "method", "pair_id", *metrics.IMAGE_METRICS, "identity_distance", "identity_match"]
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


# --------------------------------------------------------------------------------------------------------------------
# Whole sets: what the evaluate stage (notebooks/04-evaluate.ipynb) and ``python -m unmasking.evaluate`` run


def evaluate_set(subset_dir: Path, trained: dict[str, Any], ep: dict[str, Any], identity_limit: int = 0,
                 baselines: bool = True, progress: bool = True, truth_cache: dict[str, Truth] | None = None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray], list]:
    """Every method on the test split of a subset folder: (the pairs, {method: outputs}, per-image rows).

    The trained models named in ``evaluate.flip_average`` are predicted with flip averaging; ``truth_cache`` is
    passed on to ``identity_distances`` (one dict for every set of the same faces)."""
    from unmasking import data

    part = data.load_pairs(subset_dir, ["test"], verify=True)
    outputs = {b: baseline_outputs(b, part["masked"], part["unmasked"], ep["telea_radius"])
               for b in (BASELINES if baselines else ("masked_input",))}
    outputs.update({n: model_outputs(m, part["masked"], ep["batch_size"], flip_averaged(m, ep))
                    for n, m in trained.items()})
    rows = evaluate(part["masked"], part["unmasked"], part["ids"], outputs, progress=progress,
                    masks=[r["mask"] for r in part["rows"]], identity_limit=identity_limit, truth_cache=truth_cache)
    return part, outputs, rows


def robustness_sets(indomain_dir: Path, order: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """The in-domain test sets ``indomain_dir/<template>/``, in ``order`` (then by name)."""
    from unmasking import paths

    d = Path(indomain_dir)
    sets = [s for s in sorted(d.iterdir()) if (s / paths.MANIFEST_NAME).is_file()] if d.is_dir() else []
    rank = {name: i for i, name in enumerate(order)}
    return sorted(sets, key=lambda s: (rank.get(s.name, len(rank)), s.name))


def main(argv: list[str] | None = None) -> int:
    """Evaluate weights outside the pipeline on the study's test split and robustness sets (same code, same data)."""
    import argparse

    from unmasking import models, paths
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.evaluate", description=main.__doc__)
    ap.add_argument("--weights", action="append", required=True, metavar="NAME=PATH",
                    help="a method name and its .keras file (repeat for several)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the tables")
    ap.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    ap.add_argument("--no-baselines", action="store_true", help="only masked_input besides the weights")
    ap.add_argument("--note", default="", help="a line saying what the weights are")
    args = ap.parse_args(argv)
    params = P.load()
    ep = params["evaluate"]
    weights = dict(item.partition("=")[::2] for item in args.weights)
    trained = {name: models.load(Path(path)) for name, path in weights.items()}
    part, _, rows = evaluate_set(args.data_dir / "subset", trained, ep, baselines=not args.no_baselines)
    result: dict[str, Any] = {"note": args.note, "weights": weights,
                              "test": summarize(rows, ep["identity_threshold"]), "n_test": len(part["ids"]),
                              "robustness": {}}
    truth_cache: dict[str, Truth] = {}  # the robustness sets mask the same faces
    for d in robustness_sets(args.data_dir / "indomain", params["download"]["robustness_masks"]):
        _, _, r = evaluate_set(d, trained, ep, ep["identity_pairs"], baselines=not args.no_baselines,
                               truth_cache=truth_cache)
        result["robustness"][d.name] = summarize(r, ep["identity_threshold"])
    write_metrics(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
