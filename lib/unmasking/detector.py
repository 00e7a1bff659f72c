"""A face detector for masked faces: a HOG detector of dlib's kind, trained by the study on masked photos.

dlib's frontal HOG detector was trained on unmasked faces: it misses many masked ones (about a third of LFW photos
with Face Mask Lite's mask, nearly every face with a black cloth mask), and dlib's CNN detector, which finds more of
them, takes a third of a second to a second and a half per photo on a CPU. The ``detector`` stage trains a HOG
detector (``dlib.train_simple_object_detector``, left-right flips added) on ``detector.train_photos`` photos of the
train split, masked at full size with their own training templates. Its boxes are those dlib's detector finds on the
unmasked photos, so the 68-landmark model fits them as it fits its own. It is validated on the validation split's
photos (never the test split's) and saved as ``models/masked_faces.svm`` with its card; the ship stage ships it.

``faces.find_face_boxes`` tries dlib's detector, then this one, then the CNN detector.

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

FILE = "masked_faces.svm"
CARD = "masked_faces.json"


def train(photos: list[tuple[np.ndarray, tuple[int, int, int, int]]], c: float, threads: int = 1):
    """A dlib HOG detector trained on masked photos with their face boxes (one thread: with more, dlib sums the
    threads' subgradients in the order they finish, and the detector is not the same from run to run)."""
    import dlib

    opt = dlib.simple_object_detector_training_options()
    opt.add_left_right_image_flips = True
    opt.C = c
    opt.num_threads = threads
    opt.be_verbose = False
    return dlib.train_simple_object_detector([np.ascontiguousarray(img) for img, _ in photos],
                                             [[dlib.rectangle(*box)] for _, box in photos], opt)


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def detection_rates(photos: list[tuple[np.ndarray, tuple[int, int, int, int]]], masked_detector, upsample: int
                    ) -> dict[str, Any]:
    """On masked photos with known face boxes: the share found (a box overlapping the true one by half or more) by
    dlib's detector alone, by this detector alone, and by the two in turn; the seconds per photo of each."""
    from unmasking import faces

    found = {"hog": 0, "masked_hog": 0, "chain": 0}
    seconds = {"hog": 0.0, "masked_hog": 0.0}
    for img, true in photos:
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


def build(params: dict[str, Any], data_dir: Path, models_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train, validate and save the masked-face detector; return its card."""
    from unmasking import data

    dl, dp, seed = params["download"], params["detector"], params["base"]["seed"]
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    if dl["source"] != "faces":
        card = {"trained": False, "reason": "the masked-face detector trains on photos: download.source = faces"}
        (models_dir / FILE).write_text("")
        (models_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
        return card
    rows = data.read_manifest(Path(data_dir) / "subset")
    rng = np.random.default_rng(seed + 4)
    train_rows = [r for r in rows if r["split"] == "train"]
    train_rows = [train_rows[i] for i in sorted(rng.permutation(len(train_rows))[: dp["train_photos"]])]
    val_rows = [r for r in rows if r["split"] == "val"]
    t = time.perf_counter()
    train_photos = data.masked_photos(dl, train_rows, progress)
    det = train(train_photos, dp["C"], threads=1)  # dlib adds the threads' subgradients in completion order
    seconds = time.perf_counter() - t
    det.save(str(models_dir / FILE))
    val = detection_rates(data.masked_photos(dl, val_rows, progress), det, params["evaluate"]["upsample"])
    card = {"trained": True, "file": FILE, "train_photos": len(train_photos), "C": dp["C"], "seed": seed,
            "templates": sorted({r["mask"] for r in train_rows}), "data_path": dl["faces"],
            "train_seconds": round(seconds, 1), "validation": val}
    (models_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.detector", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=None)
    ap.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    ap.add_argument("--models-dir", type=Path, default=paths.MODELS_DIR)
    args = ap.parse_args(argv)
    card = build(P.load(args.params), args.data_dir, args.models_dir)
    print(json.dumps(card, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
