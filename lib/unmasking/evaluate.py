"""The study's evaluation: one function, ``run``, scores every method on sets of pairs and returns one layout.

Every entry point calls it: the evaluate stage (notebook 04) and ``python -m unmasking.evaluate`` through
``evaluate_study`` (the study's sets, ``testsets.study_sets``), and ``unmask evaluate`` on a folder of pairs
(``testsets.folder_sets``). A set (``PairSet``) holds aligned masked inputs and true faces; ``run`` predicts every
method on it (or takes the outputs a set brings, as the photo-level set does), and scores each image:

* the pixel metrics of ``metrics.image_metrics`` over the pair's masked region (``metrics.region``, or the region the
  set gives: the exact region of a JPEG photo);
* identity (dlib embeddings): the distance to the very photo that was masked (``same_photo_*``, on the first
  ``same_photo_n`` pairs) and to another photo of the same person (``verification_*``, where the set has a
  reference embedding). The true face's own distance to its reference is the verification ceiling;
* on a set marked ``realism``: the classifier two-sample test of each method's masked-region crops
  (``metrics.c2st``).

Per set and method, every headline number has a seeded 95 % bootstrap interval over the images (``stats``), and the
trained models are compared pairwise on the same images (``stats.paired_difference``): a gain is a gain only when
its interval lies above zero.

Methods: ``masked_input`` (do nothing), ``telea`` (OpenCV Telea inpainting over a region estimated from the masked
image alone), ``telea_oracle`` (the same over the true region: not available in use, the best a classical method
could do knowing the mask) and the trained models; those named in ``evaluate.flip_average`` are flip-averaged
(``models.unmask``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import metrics, parallel, stats

BASELINES = ("masked_input", "telea", "telea_oracle")
# per-image values compared between the trained models (paired differences)
COMPARED = ("masked_psnr", "masked_ssim", "psnr", "ssim", "detail_ratio", "same_photo_match", "verified")
EXAMPLES = 8  # first images of each set whose outputs the Evaluation keeps for figures (the test set: all)


# ---------------------------------------------------------------------------------------------------------------------
# Baselines


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
    n, labels, st, _ = cv2.connectedComponentsWithStats(m)
    if n <= 1:
        return np.zeros(masked.shape[:2], bool)
    biggest = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
    m = (labels == biggest).astype(np.uint8)
    return cv2.dilate(m, np.ones((5, 5), np.uint8)).astype(bool)


def telea(masked: np.ndarray, region: np.ndarray, radius: int = 5) -> np.ndarray:
    """OpenCV Telea inpainting of ``region`` (bool) in a uint8 RGB image."""
    import cv2

    if not region.any():
        return masked.copy()
    return cv2.inpaint(np.ascontiguousarray(masked), region.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def _baseline_one(data: dict[str, Any], i: int) -> np.ndarray:
    """Baseline ``data["name"]``'s output for image ``i`` (see ``baseline_outputs``)."""
    import cv2

    m, radius = data["masked"][i], data["radius"]
    if data["name"] == "telea":
        return telea(m, estimate_mask_region(m), radius)
    regions = data["regions"]
    r = regions[i] if regions is not None else metrics.region(m.astype(np.float32) / 255,
                                                              data["unmasked"][i].astype(np.float32) / 255)
    r = cv2.dilate(r.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return telea(m, r, radius)


def baseline_outputs(name: str, masked: np.ndarray, unmasked: np.ndarray, radius: int = 5,
                     regions: np.ndarray | None = None, workers: int = 1, progress: bool = False) -> np.ndarray:
    """Outputs (uint8) of a baseline method for a batch of masked images (``regions``: the true regions, else those
    of the pairs), the images spread over ``workers`` processes (the same outputs as one process)."""
    if name == "masked_input":
        return masked.copy()
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}")
    data = {"name": name, "masked": masked, "unmasked": unmasked, "regions": regions, "radius": radius}
    return np.stack(parallel.indexed_map(_baseline_one, data, len(masked), name, workers, progress))


# ---------------------------------------------------------------------------------------------------------------------
# Sets and what an evaluation returns


@dataclass
class PairSet:
    """Aligned pairs to evaluate. ``masked``/``unmasked`` are uint8 (N, H, W, 3) arrays, or lists of photos of
    different sizes when ``outputs`` are given."""

    name: str
    masked: Any
    unmasked: Any
    ids: list[str]
    masks: list[str]
    regions: Any = None  # the true masked region of each pair; None: metrics.region of the pair
    same_photo_n: int | None = None  # same-photo identity on the first n pairs (None: all, 0: none)
    references: list[np.ndarray | None] | None = None  # embedding of another photo of the same person, per pair
    boxes: list | None = None  # the face box of each pair for the embeddings; None: detected on the true face
    realism: bool = False  # run the classifier two-sample test of each method
    outputs: dict[str, Any] | None = None  # precomputed outputs per method (the photo level); None: predicted here
    info: dict[str, Any] = field(default_factory=dict)  # what the set is, for the tables


@dataclass
class Evaluation:
    """``result``: the layout of ``reports/metrics.json``; ``rows``: one per (set, method, image); ``examples``: per
    set, the first images with every method's output (the test set whole), for figures."""

    result: dict[str, Any]
    rows: list[dict[str, Any]]
    examples: dict[str, dict[str, Any]]


# ---------------------------------------------------------------------------------------------------------------------
# Identity


def face_box(size: int) -> tuple[int, int, int, int]:
    """The face box of a crop made by ``masks.crop_box`` (the landmarks' bounding box), used when detection fails."""
    half = size / 1.9 / 2
    cx, cy = size / 2, size / 2 + 0.08 * size
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


Truth = tuple[bool, tuple[int, int, int, int], "np.ndarray | None"]  # (fallback box used, face box, embedding)


def _identity_chips(task) -> tuple[bool, tuple[int, int, int, int], np.ndarray | None, np.ndarray | None]:
    """One pair's face chips (``faces.face_chips``): (fallback box used, the face box, the true face's chip, or None
    when its embedding is known, the outputs' chips, None when they have no face chips). The box is the set's, else
    detected on the true face (upsampled, as crops are small; the crop's known face box when none is found), and
    shared by every output."""
    from unmasking import faces

    truth, outs, known, box = task
    fallback = False
    if known is not None:
        fallback, box = known[0], known[1]
    elif box is None:
        boxes = faces.detect_faces(truth, upsample=1)
        fallback = not boxes
        box = boxes[0] if boxes else face_box(truth.shape[0])
    try:
        chips = faces.face_chips(list(outs) if known is not None else [truth, *outs], box)
    except RuntimeError:
        return fallback, box, None, None
    if known is not None:
        return fallback, box, None, chips
    return fallback, box, chips[0], chips[1:]


def identity_scores(pset: PairSet, outputs: dict[str, Any], workers: int = 2, progress: bool = True,
                    truth_cache: dict[str, Truth] | None = None) -> dict[str, Any]:
    """Per image and method: ``same_photo`` and ``verification`` distances (NaN where not scored), the true face's
    ``ceiling`` distances, and how many face boxes fell back to the crop's known box.

    The face chips are made in ``workers`` processes, the embeddings in this one, in batches (``dlibnet``).
    ``truth_cache`` (a dict kept between calls) holds each true face's box and embedding under a hash of its pixels,
    so sets that mask the same faces with other templates compute them once.
    """
    from unmasking import dlibnet

    names = list(outputs)
    n = len(pset.ids)
    n_same = n if pset.same_photo_n is None else min(pset.same_photo_n, n)
    refs = pset.references or [None] * n
    todo = [i for i in range(n) if i < n_same or refs[i] is not None]
    cache = {} if truth_cache is None or pset.boxes is not None else truth_cache
    keys = {i: hashlib.sha1(np.ascontiguousarray(pset.unmasked[i]).tobytes()).hexdigest()
            + str(pset.unmasked[i].shape) for i in todo}
    tasks = ((pset.unmasked[i], [outputs[m][i] for m in names], cache.get(keys[i]),
              pset.boxes[i] if pset.boxes is not None else None) for i in todo)
    out = {"same_photo": {m: np.full(n, np.nan) for m in names}, "verification": {m: np.full(n, np.nan) for m in names},
           "ceiling": np.full(n, np.nan), "fallbacks": 0}
    pending: list[tuple[int, bool, Any, np.ndarray | None, np.ndarray]] = []

    def flush() -> None:
        chips = [c for _, _, _, t, o in pending for c in ([] if t is None else [t]) + list(o)]
        embs = iter(dlibnet.descriptors(np.stack(chips)) if chips else [])
        for i, fallback, box, t, o in pending:
            e_true = next(embs) if t is not None else cache[keys[i]][2]
            e_out = [next(embs) for _ in o]
            cache[keys[i]] = (fallback, box, e_true)
            out["fallbacks"] += fallback
            for m, e in zip(names, e_out):
                if i < n_same:
                    out["same_photo"][m][i] = metrics.identity_distance(e, e_true)
                if refs[i] is not None:
                    out["verification"][m][i] = metrics.identity_distance(e, refs[i])
            if refs[i] is not None:
                out["ceiling"][i] = metrics.identity_distance(e_true, refs[i])
        pending.clear()

    # a set scored for pixels only starts no workers (spawned ones reload dlib's networks)
    with parallel.progress(len(todo), f"identity {pset.name}", progress) as bar:
        for i, (fallback, box, t, o) in zip(todo, parallel.ordered_map(_identity_chips, tasks, workers if todo else 0,
                                                                         chunksize=4, start="spawn")):
            if o is None:  # no chips: nothing scored for this pair
                cache.setdefault(keys[i], (fallback, box, None))
                out["fallbacks"] += fallback
            else:
                pending.append((i, fallback, box, t, o))
            if len(pending) >= 64:
                flush()
            bar.update(1)
        flush()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Pixel metrics, in parallel


def _pixel_metrics_one(data: dict[str, Any], i: int) -> list[dict[str, float]]:
    """Every method's pixel metrics for image ``i`` (see ``pixel_metrics``)."""
    m = data["masked"][i].astype(np.float32) / 255
    u = data["unmasked"][i].astype(np.float32) / 255
    region = metrics.region(m, u) if data["regions"] is None else data["regions"][i]
    return metrics.image_metrics_many([out[i].astype(np.float32) / 255 for out in data["outputs"]], u, m, region)


def pixel_metrics(pset: PairSet, outputs: dict[str, Any], workers: int = 2, progress: bool = True
                  ) -> list[list[dict[str, float]]]:
    """``metrics.image_metrics`` of every method's output for every image: [image][method, in ``outputs`` order].

    The images are spread over ``workers`` processes (the same numbers as one process, in the same order).
    """
    data = {"masked": pset.masked, "unmasked": pset.unmasked, "outputs": list(outputs.values()),
            "regions": pset.regions}
    return parallel.indexed_map(_pixel_metrics_one, data, len(pset.ids), f"pixel metrics {pset.name}", workers,
                                progress)


# ---------------------------------------------------------------------------------------------------------------------
# Scoring a set


def method_outputs(pset: PairSet, trained: dict[str, Any], ep: dict[str, Any], baselines: bool = True,
                   workers: int = 2) -> dict[str, Any]:
    """Every method's outputs on a set (the set's own, when it brings them); the baselines in ``workers``
    processes."""
    from unmasking import models

    if pset.outputs is not None:
        return pset.outputs
    out = {b: baseline_outputs(b, pset.masked, pset.unmasked, ep["telea_radius"], pset.regions, workers)
           for b in (BASELINES if baselines else ("masked_input",))}
    out.update({n: models.unmask(m, pset.masked, ep["batch_size"], models.flip_averaged(m, ep)).faces
                for n, m in trained.items()})
    return out


def score_set(pset: PairSet, outputs: dict[str, Any], ep: dict[str, Any], workers: int = 2, progress: bool = True,
              truth_cache: dict[str, Truth] | None = None) -> list[dict[str, Any]]:
    """Per-image rows of every method on one set: ``set``, ``method``, ``pair_id``, ``mask``, the pixel metrics, and
    the identity distances and matches where scored (NaN / None elsewhere)."""
    names = list(outputs)
    per_image = pixel_metrics(pset, outputs, workers, progress)
    ident = identity_scores(pset, outputs, workers, progress, truth_cache)
    n_same = len(pset.ids) if pset.same_photo_n is None else pset.same_photo_n
    refs = pset.references or [None] * len(pset.ids)
    thr = ep["identity_threshold"]
    rows = []
    for i, pid in enumerate(pset.ids):
        for j, name in enumerate(names):
            d_same, d_ref = ident["same_photo"][name][i], ident["verification"][name][i]
            rows.append({"set": pset.name, "method": name, "pair_id": pid, "mask": pset.masks[i], **per_image[i][j],
                         "same_photo_scored": i < n_same, "same_photo_distance": d_same,
                         "same_photo_match": _match(d_same, thr), "verification_scored": refs[i] is not None,
                         "verification_distance": d_ref, "verified": _match(d_ref, thr),
                         "ceiling_distance": ident["ceiling"][i]})
    return rows


def _match(d: float, threshold: float) -> bool | None:
    return None if not np.isfinite(d) else bool(d < threshold)


def realism(pset: PairSet, outputs: dict[str, Any], ep: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    """The classifier two-sample test of each method's masked-region crops against the true faces' ({} for a set of
    fewer than 4 pairs, too few to hold half of them out)."""
    if len(pset.ids) < 4:
        return {}
    regions = pset.regions if pset.regions is not None else np.stack(
        [metrics.region(m.astype(np.float32) / 255, u.astype(np.float32) / 255)
         for m, u in zip(pset.masked, pset.unmasked)])
    real = metrics.region_crops(pset.unmasked, regions)
    return {name: metrics.c2st(real, metrics.region_crops(out, regions), seed, ep["c2st_epochs"])
            for name, out in outputs.items()}


def summarize(rows: list[dict[str, Any]], c2st: dict[str, dict[str, Any]] | None = None, seed: int = 0,
              n_boot: int = stats.N_BOOT, threshold: float = metrics.IDENTITY_THRESHOLD) -> dict[str, dict[str, Any]]:
    """Per method: the mean of each per-image metric with its 95 % bootstrap interval (``<metric>_ci95``), the
    same-photo match rate and the verification rate (with how many pairs each scored and how many had no
    embedding), and the classifier two-sample test."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        s: dict[str, Any] = {}
        for k in metrics.IMAGE_METRICS:
            _mean_ci(s, k, np.array([r[k] for r in rs], np.float64), seed, n_boot)
        for prefix, rate, key in (("same_photo", "same_photo_match_rate", "same_photo_distance"),
                                  ("verification", "verification_rate", "verification_distance")):
            scored = [r for r in rs if r[f"{prefix}_scored"]]
            if not scored:
                continue
            d = np.array([r[key] for r in scored], np.float64)
            ok = np.isfinite(d)
            s[key] = _round(d[ok].mean()) if ok.any() else None
            _mean_ci(s, rate, np.where(ok, d < threshold, np.nan), seed, n_boot)
            s[f"{prefix}_n"] = len(scored)
            s[f"{prefix}_missing"] = int((~ok).sum())
        if c2st and name in c2st:
            c = c2st[name]
            lo, hi = stats.bootstrap_ci(np.array(c["correct"], np.float64), n_boot, seed)
            s["c2st_accuracy"], s["c2st_accuracy_ci95"] = _round(c["accuracy"]), [_round(lo), _round(hi)]
            s["c2st_distance"] = _round(c["distance"])
            s["c2st_distance_ci95"] = [_round(max(0.0, 2 * lo - 1)), _round(max(0.0, 2 * hi - 1))]
        s["n"] = len(rs)
        out[name] = s
    return out


def _mean_ci(s: dict[str, Any], key: str, v: np.ndarray, seed: int, n_boot: int) -> None:
    ok = np.isfinite(v)
    s[key] = _round(v[ok].mean()) if ok.any() else None
    lo, hi = stats.bootstrap_ci(v, n_boot, seed)
    s[f"{key}_ci95"] = [_round(lo), _round(hi)] if lo is not None else None


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{float(v):.5g}")


def summarize_by(rows: list[dict[str, Any]], key: str = "mask", seed: int = 0, n_boot: int = stats.N_BOOT,
                 threshold: float = metrics.IDENTITY_THRESHOLD) -> dict[str, dict[str, dict[str, Any]]]:
    """``summarize`` per value of ``key`` (e.g. per mask template): {value: {method: summary}}."""
    values = sorted({r[key] for r in rows if key in r})
    return {v: summarize([r for r in rows if r.get(key) == v], None, seed, n_boot, threshold) for v in values}


def verification_ceiling(rows: list[dict[str, Any]], seed: int = 0, n_boot: int = stats.N_BOOT,
                         threshold: float = metrics.IDENTITY_THRESHOLD) -> dict[str, Any] | None:
    """The true unmasked face's own verification rate against its reference photo (the ceiling), and how many
    pairs have a reference."""
    first = next((r["method"] for r in rows), None)
    d = np.array([r["ceiling_distance"] for r in rows if r["method"] == first and r["verification_scored"]])
    if not len(d):
        return None
    ok = np.isfinite(d)
    s: dict[str, Any] = {}
    _mean_ci(s, "verification_rate", np.where(ok, d < threshold, np.nan), seed, n_boot)
    s["verification_n"], s["verification_missing"] = len(d), int((~ok).sum())
    return s


def compare(rows: list[dict[str, Any]], pairs: list[tuple[str, str]], seed: int = 0, n_boot: int = stats.N_BOOT
            ) -> dict[str, dict[str, Any]]:
    """Paired differences ``a - b`` of the per-image values in ``COMPARED`` for each (a, b) of ``pairs``:
    {"a - b": {value: stats.paired_difference}}."""

    def values(method: str, key: str) -> dict[str, float]:
        out = {}
        for r in rows:
            if r["method"] == method:
                v = r[key]
                out[r["pair_id"]] = np.nan if v is None else float(v)
        return out

    res = {}
    for a, b in pairs:
        entry = {}
        for key in COMPARED:
            va, vb = values(a, key), values(b, key)
            ids = [i for i in va if i in vb]
            d = stats.paired_difference([va[i] for i in ids], [vb[i] for i in ids], n_boot, seed)
            if d["n"]:
                entry[key] = {**d, "difference": _round(d["difference"]),
                              "ci95": [_round(d["ci95"][0]), _round(d["ci95"][1])]}
        res[f"{a} - {b}"] = entry
    return res


# ---------------------------------------------------------------------------------------------------------------------
# The evaluation


def run(trained: dict[str, Any], sets: list[PairSet], ep: dict[str, Any], seed: int = 0, baselines: bool = True,
        workers: int | None = None, progress: bool = True) -> Evaluation:
    """Score every method on every set: the one evaluation of the study (see the module text)."""
    workers = ep.get("workers", 2) if workers is None else workers
    n_boot, thr = ep["bootstrap"], ep["identity_threshold"]
    from unmasking import models

    result: dict[str, Any] = {"headline": list(metrics.HEADLINE), "identity_threshold": thr, "flip_averaged": sorted(
        n for n, m in trained.items() if models.flip_averaged(m, ep)), "sets": {}, "comparisons": {}}
    rows_all: list[dict[str, Any]] = []
    examples: dict[str, dict[str, Any]] = {}
    truth_cache: dict[str, Truth] = {}  # the generated-face sets mask the same faces
    names = list(trained)
    for pset in sets:
        outputs = method_outputs(pset, trained, ep, baselines, workers)
        rows = score_set(pset, outputs, ep, workers, progress, truth_cache)
        c2st = realism(pset, outputs, ep, seed) if pset.realism else None
        entry = {"n": len(pset.ids), **pset.info, "methods": summarize(rows, c2st, seed, n_boot, thr)}
        if len(set(pset.masks)) > 1:
            entry["by_mask"] = summarize_by(rows, "mask", seed, n_boot, thr)
        ceiling = verification_ceiling(rows, seed, n_boot, thr)
        if ceiling:
            entry["verification_ceiling"] = ceiling
        result["sets"][pset.name] = entry
        pairs = [(names[j], names[i]) for i in range(len(names)) for j in range(i + 1, len(names))]
        if pairs:
            result["comparisons"][pset.name] = compare(rows, pairs, seed, n_boot)
        rows_all += rows
        k = len(pset.ids) if pset.name == "test" else min(EXAMPLES, len(pset.ids))
        examples[pset.name] = {"ids": pset.ids[:k], "masked": pset.masked[:k], "unmasked": pset.unmasked[:k],
                               "outputs": {n: o[:k] for n, o in outputs.items()}}
    return Evaluation(result, rows_all, examples)


def evaluate_study(params: dict[str, Any], data_dir: Path, trained: dict[str, Any], baselines: bool = True,
                   progress: bool = True, masked_detector: Path | None = None, only: list[str] | None = None,
                   paste: str = "region", refine: int | None = None, shift: float | None = None) -> Evaluation:
    """The study's evaluation: ``run`` over the study's sets in ``data_dir`` (``testsets.study_sets``);
    ``masked_detector``: the masked-face detector's file (``models/masked_faces.svm``; the landmark model is looked for
    beside it) for the photos; ``only``: the names of the sets to score (default: all of the pipeline's; ``val``, the
    validation split, only when named);
    ``paste``, ``refine``, ``shift``: how the photo level pastes, refines and averages the crop
    (``testsets.photo_sets``)."""
    from unmasking import testsets

    ep = params["evaluate"]
    if only is not None:
        names = testsets.study_set_names(params, Path(data_dir))
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"no such set: {', '.join(unknown)} (the study's: {', '.join(names)})")
    sets = testsets.study_sets(params, Path(data_dir), trained, progress, baselines, masked_detector,
                               paste=paste, only=only, refine=refine, shift=shift)
    if only is not None:
        sets = [s for s in sets if s.name in only]  # the photo level builds both of its sets
    return run(trained, sets, ep, params["base"]["seed"], baselines, progress=progress)


def write_metrics(path: Path, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


ROW_COLUMNS = ["set", "mask", "method", "pair_id", *metrics.IMAGE_METRICS, "same_photo_distance", "same_photo_match",
               "verification_distance", "verified"]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The per-image rows as CSV (``reports/eval/per_image.csv``, a DVC plot)."""
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def rank_cases(rows: list[dict[str, Any]], method: str, key: str = "masked_psnr", n: int = 4, seed: int = 0,
               set_name: str = "test") -> dict[str, list[str]]:
    """Pair ids of the ``n`` best, worst and random cases of ``method`` on a set by ``key``."""
    rs = [r for r in rows if r["method"] == method and r["set"] == set_name and np.isfinite(r[key])]
    rs.sort(key=lambda r: r[key])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rs), size=min(n, len(rs)), replace=False) if rs else []
    return {"best": [r["pair_id"] for r in rs[::-1][:n]], "worst": [r["pair_id"] for r in rs[:n]],
            "random": [rs[i]["pair_id"] for i in sorted(pick)]}


def main(argv: list[str] | None = None) -> int:
    """Evaluate weights outside the pipeline on the study's sets (same code, same data, same layout)."""
    import argparse

    from unmasking import faces, models, paths, photos
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.evaluate", description=main.__doc__)
    ap.add_argument("--weights", action="append", required=True, metavar="NAME=PATH",
                    help="a method name and its .keras file (repeat for several)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the tables")
    ap.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    ap.add_argument("--models-dir", type=Path, default=paths.MODELS_DIR, help="where the masked-face detector "
                    "and landmark model are")
    ap.add_argument("--no-baselines", action="store_true", help="only masked_input besides the weights")
    ap.add_argument("--note", default="", help="a line saying what the weights are")
    ap.add_argument("--sets", nargs="+", default=None, metavar="NAME", help="score only these sets (test, "
                    "test_detected, photos, indomain/<template>, or val, the validation split; default: all but val)")
    ap.add_argument("--detector", choices=faces.DETECTORS, default=None,
                    help="how faces are found in the photos (default: evaluate.detector)")
    ap.add_argument("--paste", choices=list(photos.PASTES), default="region", help="the photo level replaces the "
                    "model's estimated mask region (region, as unmask predict does) or the whole crop (box)")
    ap.add_argument("--rows", type=Path, default=None, metavar="CSV", help="also write the per-image rows (for paired "
                    "comparisons between runs: stats.paired_difference over the rows of the same set and pair)")
    ap.add_argument("--refine", type=int, default=photos.REFINE, metavar="N", help="passes that crop each photo's "
                    f"face again from landmarks refitted on its unmasked output (default: {photos.REFINE})")
    ap.add_argument("--shift", type=float, default=photos.SHIFT, metavar="F", help="a flip-averaged model also "
                    f"averages over the last crop moved this share of its side four ways (default: {photos.SHIFT})")
    args = ap.parse_args(argv)
    params = P.load()
    if args.detector:
        params["evaluate"]["detector"] = args.detector
    weights = dict(item.partition("=")[::2] for item in args.weights)
    trained = {name: models.load(Path(path)) for name, path in weights.items()}
    ev = evaluate_study(params, args.data_dir, trained, baselines=not args.no_baselines,
                        masked_detector=args.models_dir / paths.MASKED_DETECTOR, only=args.sets, paste=args.paste,
                        refine=args.refine, shift=args.shift)
    write_metrics(args.out, {"note": args.note, "weights": weights, "detector": params["evaluate"]["detector"],
                             "paste": args.paste,
                             "refine": args.refine, "shift": args.shift, **ev.result})
    if args.rows:
        write_rows(args.rows, ev.rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
