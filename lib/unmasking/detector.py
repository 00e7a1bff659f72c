"""A face detector and a landmark model for masked faces, of dlib's kinds, trained by the study on masked photos.

dlib's frontal HOG detector was trained on unmasked faces: it misses many masked ones (about a third of LFW photos
with Face Mask Lite's mask, nearly every face with a black cloth mask), and dlib's CNN detector, which finds more of
them, takes a third of a second to a second and a half per photo on a CPU. The ``detector`` stage trains a HOG
detector (``dlib.train_simple_object_detector``, left-right flips added) on ``detector.train_photos`` photos of the
train split, masked at full size with their own training templates. Its boxes are those dlib's detector finds on the
unmasked photos, so the 68-landmark model fits them as it fits its own. It is validated on the validation split's
photos (never the test split's) and saved as ``models/masked_faces.svm`` with its card; the ship stage ships it.

dlib's 68-landmark model was trained on unmasked faces too: on a masked face it misplaces the jaw and mouth the mask
hides, and the crop taken from the landmarks is off. The stage then trains a landmark model of the same kind
(``dlib.train_shape_predictor``, ``detector.landmarks``) on ``detector.landmarks.train_photos`` train photos masked
the same way and saved as JPEG at ``download.photo_quality``, as the test photos are: its input is the box the
detectors find on the masked photo, its targets the landmarks dlib's model fits on the unmasked photo (its photos are
drawn from the whole train split, so some are those the masked-face detector was trained on, where that detector's
boxes are a little closer to the truth than on new photos). It is saved
beside the detector as ``models/masked_landmarks.dat`` when, on the validation photos, the crop square taken from its
landmarks overlaps the one taken from the unmasked photo's better than dlib's model's does (else the file is empty
and dlib's model is used).

``faces.find_face_boxes`` tries dlib's detector, then this one, then the CNN detector; ``photos.find_faces`` fits the
landmarks with the masked-face model (``faces.masked_landmarks``).

    python -m unmasking.detector [--params FILE] [--data-dir D] [--models-dir M]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import paths
from unmasking.faces import Box

FILE = paths.MASKED_DETECTOR
LANDMARKS = paths.MASKED_LANDMARKS
CARD = paths.MASKED_CARD
MIN_LANDMARK_SAMPLES = 10  # fewer training photos than this: no landmark model (dlib's is used)
Photo = tuple[np.ndarray, Box, np.ndarray]  # a masked photo, its face box and 68 landmarks on the unmasked photo


def train(photos: list[Photo], c: float, threads: int = 1):
    """A dlib HOG detector trained on masked photos with their face boxes (one thread: with more, dlib sums the
    threads' subgradients in the order they finish, and the detector is not the same from run to run)."""
    import dlib

    opt = dlib.simple_object_detector_training_options()
    opt.add_left_right_image_flips = True
    opt.C = c
    opt.num_threads = threads
    opt.be_verbose = False
    return dlib.train_simple_object_detector([np.ascontiguousarray(p[0]) for p in photos],
                                             [[dlib.rectangle(*p[1])] for p in photos], opt)


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def detection_rates(photos: list[Photo], masked_detector, upsample: int) -> dict[str, Any]:
    """On masked photos with known face boxes: the share found (a box overlapping the true one by half or more) by
    dlib's detector alone, by this detector alone, and by the two in turn; the seconds per photo of each."""
    from unmasking import faces

    found = {"hog": 0, "masked_hog": 0, "chain": 0}
    seconds = {"hog": 0.0, "masked_hog": 0.0}
    for img, true, _ in photos:
        t = time.perf_counter()
        h = any(iou(b, true) >= 0.5 for b in faces.detect_faces(img, upsample))
        seconds["hog"] += time.perf_counter() - t
        t = time.perf_counter()
        m = any(iou(b, true) >= 0.5 for b in faces.detect_with(masked_detector, img, upsample))
        seconds["masked_hog"] += time.perf_counter() - t
        found["hog"] += h
        found["masked_hog"] += m
        found["chain"] += h or m
    n = max(1, len(photos))
    return {"photos": len(photos), **{f"rate_{k}": round(v / n, 4) for k, v in found.items()},
            **{f"seconds_per_photo_{k}": round(v / n, 4) for k, v in seconds.items()}}


def landmark_samples(photos: list[Photo], masked: Path, upsample: int, quality: int) -> list[Photo]:
    """What a landmark model sees and should find on masked photos: each photo saved as JPEG at ``quality``, the box
    the detectors find on it (``faces.find_face_boxes`` with the masked-face detector file ``masked``; the one that
    overlaps the unmasked photo's box most, by half or more) and the unmasked photo's landmarks. Photos where no
    such box is found are left out."""
    from unmasking import faces, images

    out = []
    for img, true, lm in photos:
        seen = images.decode(images.jpeg_bytes(img, quality))
        boxes, _ = faces.find_face_boxes(seen, upsample, "auto", masked)
        best = max(boxes, key=lambda b: iou(b, true), default=None)
        if best is not None and iou(best, true) >= 0.5:
            out.append((seen, best, lm))
    return out


def train_landmarks(samples: list[Photo], lp: dict[str, Any], seed: int):
    """A dlib 68-landmark model trained on ``samples`` (``landmark_samples``) with the sizes of ``lp``
    (``detector.landmarks``), on one thread."""
    import dlib

    opt = dlib.shape_predictor_training_options()
    opt.num_trees_per_cascade_level = lp["trees"]
    opt.tree_depth = lp["tree_depth"]
    opt.cascade_depth = lp["cascade_depth"]
    opt.oversampling_amount = lp["oversampling"]
    opt.random_seed = str(seed)
    opt.num_threads = 1
    opt.be_verbose = False
    objects = [[dlib.full_object_detection(dlib.rectangle(*[int(v) for v in box]),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in lm])]
               for _, box, lm in samples]
    return dlib.train_shape_predictor([np.ascontiguousarray(img) for img, _, _ in samples], objects, opt)


def square_overlap(samples: list[Photo], predictor=None) -> float:
    """The mean overlap (IoU) of the crop square taken from the landmarks ``predictor`` fits on each masked sample
    (None: dlib's model of unmasked faces) with the square taken from the unmasked photo's landmarks."""
    from unmasking import faces, masks

    if not samples:
        return 0.0
    return float(np.mean([iou(masks.crop_box(faces.landmarks(img, box, predictor)), masks.crop_box(lm))
                          for img, box, lm in samples]))


def _drawn(rows: list[dict[str, str]], n: int, seed: int) -> list[dict[str, str]]:
    """``n`` of ``rows`` drawn with ``seed``, in their order."""
    return [rows[i] for i in sorted(np.random.default_rng(seed).permutation(len(rows))[:n])]


def build(params: dict[str, Any], data_dir: Path, models_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train, validate and save the masked-face detector and landmark model; return their card."""
    from unmasking import data

    dl, dp, seed = params["download"], params["detector"], params["base"]["seed"]
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    if dl["source"] != "faces":
        (models_dir / FILE).write_text("")
        return _saved(models_dir, {"trained": False, "reason": "the masked-face detector trains on photos: "
                                                               "download.source = faces"})
    rows = data.read_manifest(Path(data_dir) / "subset")
    train_rows = [r for r in rows if r["split"] == "train"]
    det_rows = _drawn(train_rows, dp["train_photos"], seed + 4)
    val_rows = [r for r in rows if r["split"] == "val"]
    t = time.perf_counter()
    train_photos = data.masked_photos(dl, det_rows, progress)
    det = train(train_photos, dp["C"], threads=1)  # dlib adds the threads' subgradients in completion order
    seconds = time.perf_counter() - t
    det.save(str(models_dir / FILE))
    upsample = params["evaluate"]["upsample"]
    val_photos = data.masked_photos(dl, val_rows, progress)
    val = detection_rates(val_photos, det, upsample)
    card = {"trained": True, "file": FILE, "train_photos": len(train_photos), "C": dp["C"], "seed": seed,
            "templates": sorted({r["mask"] for r in det_rows}), "data_path": dl["faces"],
            "train_seconds": round(seconds, 1), "validation": val}
    lp = dp["landmarks"]
    t = time.perf_counter()
    photos = data.masked_photos(dl, _drawn(train_rows, lp["train_photos"], seed + 5), progress)
    samples = landmark_samples(photos, models_dir / FILE, upsample, dl["photo_quality"])
    if len(samples) < MIN_LANDMARK_SAMPLES:
        card["landmarks"] = {"trained": False, "used": False, "reason": f"{len(samples)} train photos with a face "
                             f"found, fewer than {MIN_LANDMARK_SAMPLES}: dlib's landmark model is used"}
        return _saved(models_dir, card)
    predictor = train_landmarks(samples, lp, seed)
    seconds = time.perf_counter() - t
    val_samples = landmark_samples(val_photos, models_dir / FILE, upsample, dl["photo_quality"])
    ours, dlibs = square_overlap(val_samples, predictor), square_overlap(val_samples)
    used = ours > dlibs  # the validation photos decide between it and dlib's model
    card["landmarks"] = {
        "trained": True, "used": used, "file": LANDMARKS if used else "", "photos_drawn": lp["train_photos"],
        "train_photos": len(samples), **{k: v for k, v in lp.items() if k != "train_photos"},
        "jpeg_quality": dl["photo_quality"], "train_seconds": round(seconds, 1),
        "validation": {"photos": len(val_samples), "square_iou": round(ours, 4), "square_iou_dlib": round(dlibs, 4)}}
    return _saved(models_dir, card, predictor if used else None)


def _saved(models_dir: Path, card: dict[str, Any], landmarks=None) -> dict[str, Any]:
    """Write the card and the landmark model (an empty file for none: dlib's model is then used); return the card."""
    if landmarks is None:
        (models_dir / LANDMARKS).write_text("")
    else:
        landmarks.save(str(models_dir / LANDMARKS))
    (models_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.detector", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=None)
    ap.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    ap.add_argument("--models-dir", type=Path, default=paths.MODELS_DIR)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    card = build(P.load(args.params), args.data_dir, args.models_dir)
    print(json.dumps(card, indent=1))
    print(f"stage detector: {time.perf_counter() - t0:.0f} s; card {Path(args.models_dir) / CARD}")  # as stage.py
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
