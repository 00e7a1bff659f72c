"""The ``unmask`` command: unmask any photo, and evaluate trained weights on any folder of pairs.

    unmask predict INPUT... --out DIR [--weights PATH] [--crop detect|none] [--batch-size N]
    unmask evaluate PAIRS_DIR [--weights PATH] [--crop detect|none] [--json FILE]
    unmask synthesize FACES_DIR --out DIR [--mask PNG|masks.cfg|DIR] [--template NAME]...

``predict`` finds each face (dlib's detector, offline), takes the same face-centred square crop as the training data
(from the 68 landmarks), unmasks it at the model's size and pastes the result back into the photo at full resolution
with a soft edge. ``--crop none`` treats each whole image as an aligned face. ``evaluate`` reads a folder in Face
Mask Lite layout and computes the study's metrics (the same code as the ``evaluate`` stage) per mask and overall.
``synthesize`` masks a folder of face photos with one or more templates (each face once per template) into that
layout. ``predict`` and ``evaluate`` predict as the ``evaluate`` stage does: a model whose name
``evaluate.flip_average`` in params.yaml lists is flip-averaged (``evaluate.model_outputs``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import images, paths
from unmasking.images import ImageError

NO_WEIGHTS = ("no trained weights found in {models}/ (paper_ae.keras, mask_unet.keras). Train them with `make repro` "
              "(see README.md), or pass --weights PATH.")


class CliError(RuntimeError):
    """A problem with the command's arguments or environment; printed without a traceback."""


def default_weights(models_dir: Path | None = None, metrics_file: Path | None = None) -> Path:
    """The best model the pipeline trained: highest test ``masked_psnr`` in reports/metrics.json, else mask_unet."""
    models_dir = Path(models_dir or paths.MODELS_DIR)
    available = {n: paths.model_path(n, models_dir) for n in ("mask_unet", "paper_ae")}
    available = {n: p for n, p in available.items() if p.is_file()}
    if not available:
        raise CliError(NO_WEIGHTS.format(models=models_dir))
    metrics_file = Path(metrics_file or paths.REPORTS_DIR / "metrics.json")
    if metrics_file.is_file():
        scores = json.loads(metrics_file.read_text()).get("test", {})
        ranked = sorted((n for n in available if n in scores), key=lambda n: -(scores[n].get("masked_psnr") or -1e9))
        if ranked:
            return available[ranked[0]]
    return next(iter(available.values()))


def load_weights(path: Path | None):
    from unmasking import models

    path = Path(path) if path else default_weights()
    if not path.is_file():
        raise CliError(f"{path}: no such weights file")
    try:
        model = models.load(path)
    except Exception as e:  # a file that is not a Keras model
        raise CliError(f"{path}: cannot load weights ({type(e).__name__}: {e})") from None
    return model, path


def predict_crops(model, crops: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's unmasked faces (uint8) for uint8 face crops, as the ``evaluate`` stage predicts them."""
    from unmasking import evaluate
    from unmasking import params as P

    flip = evaluate.flip_averaged(model, P.load()["evaluate"])
    return evaluate.model_outputs(model, crops, batch_size, flip)


def model_size(model) -> int:
    return int(model.input_shape[1])


# ---------------------------------------------------------------------------------------------------------------------
# Faces, crops and paste-back


@dataclass
class Face:
    box: tuple[int, int, int, int]  # the square crop (left, top, right, bottom) in the photo
    crop: np.ndarray  # resized to the model's size


def face_crops(img: np.ndarray, size: int, crop: str) -> list[Face]:
    """The face crops of a photo: every detected face (``detect``) or the whole image (``none``)."""
    from unmasking import faces, masks

    if crop == "none":
        h, w = img.shape[:2]
        return [Face((0, 0, w, h), images.resize(img, size))]
    out = []
    for box in faces.detect_faces(img, upsample=1):
        lm = faces.landmarks(img, box)
        square = masks.crop_box(lm)
        out.append(Face(square, images.resize(masks.crop(img, square), size)))
    return out


def feather(side_w: int, side_h: int, edge: float = 0.12) -> np.ndarray:
    """A soft-edged weight (H, W) in [0, 1]: 1 in the middle, falling to 0 over ``edge`` of each side."""
    def ramp(n: int) -> np.ndarray:
        e = max(1.0, edge * n)
        x = np.arange(n) + 0.5
        return np.clip(np.minimum(x, n - x) / e, 0, 1)

    return np.outer(ramp(side_h), ramp(side_w))


def paste_back(img: np.ndarray, pred: np.ndarray, box: tuple[int, int, int, int], crop: str) -> np.ndarray:
    """Paste a predicted crop back into ``img`` at ``box``, resized to the box, blended with a soft edge.

    With ``crop == "none"`` the prediction replaces the whole image (resized to its size). Only pixels inside ``box``
    change; the image keeps its size.
    """
    h, w = img.shape[:2]
    if crop == "none":
        return images.resize(pred, (w, h))
    left, top, right, bottom = box
    big = images.resize(pred, (right - left, bottom - top)).astype(np.float32)
    alpha = feather(right - left, bottom - top)[..., None]
    out = img.astype(np.float32).copy()
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if x0 >= x1 or y0 >= y1:
        return img.copy()
    sub = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    a = alpha[sub]
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + big[sub] * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def unmask_image(model, img: np.ndarray, crop: str = "detect", batch_size: int = 32) -> tuple[np.ndarray, int]:
    """Unmask every face of one photo: (the photo with each face pasted back, number of faces); ``ImageError`` when
    no face is found. ``predict`` does the same over many photos, batching their faces together."""
    found = face_crops(img, model_size(model), crop)
    if not found:
        raise ImageError("no face found")
    preds = predict_crops(model, np.stack([f.crop for f in found]), batch_size)
    out = img
    for face, pred in zip(found, preds):
        out = paste_back(out, pred, face.box, crop)
    return out, len(found)


# ---------------------------------------------------------------------------------------------------------------------
# predict


def list_inputs(inputs: list[str]) -> list[Path]:
    """Files given, and the files in folders given (sorted, recursively); a missing path is kept to be reported."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")))
        else:
            out.append(p)
    return out


@dataclass
class Result:
    input: str
    output: str = ""
    status: str = "ok"
    faces: int = 0
    reason: str = ""


def predict(inputs: list[str], out_dir: Path, weights: Path | None = None, crop: str = "detect",
            batch_size: int = 32, chunk: int = 64, progress: bool = True) -> list[Result]:
    """Unmask every input photo; write ``<stem>.png`` per input and ``unmask.csv``; return the per-input results."""
    from tqdm import tqdm

    model, wpath = load_weights(weights)
    size = model_size(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_inputs(inputs)
    if not files:
        raise CliError("no input files given or found in the folders given")
    results: list[Result] = []
    used_names: dict[str, int] = {}
    bar = tqdm(total=len(files), desc="unmasking", unit="photo", disable=None if progress else True)
    for start in range(0, len(files), chunk):
        batch_files = files[start : start + chunk]
        loaded: list[tuple[Result, np.ndarray, list[Face]]] = []
        for f in batch_files:
            r = Result(str(f))
            results.append(r)
            try:
                if not f.exists():
                    raise ImageError(f"{f.name}: no such file")
                img = images.read_rgb(f)
                found = face_crops(img, size, crop)
                if not found:
                    raise ImageError(f"{f.name}: no face found")
            except ImageError as e:
                r.status, r.reason = "failed", str(e).split(": ", 1)[-1]
                continue
            loaded.append((r, img, found))
        crops = [face.crop for _, _, fs in loaded for face in fs]
        if crops:
            preds = predict_crops(model, np.stack(crops), batch_size)
            k = 0
            for r, img, fs in loaded:
                out = img
                for face in fs:
                    out = paste_back(out, preds[k], face.box, crop)
                    k += 1
                stem = Path(r.input).stem
                n = used_names.get(stem, 0)
                used_names[stem] = n + 1
                target = out_dir / (f"{stem}.png" if n == 0 else f"{stem}-{n}.png")
                images.write_png(out, target)
                r.output, r.faces = str(target), len(fs)
        bar.update(len(batch_files))
    bar.close()
    with open(out_dir / "unmask.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["input", "output", "status", "faces", "reason"], lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow({"input": r.input, "output": r.output, "status": r.status, "faces": r.faces, "reason": r.reason})
    return results


# ---------------------------------------------------------------------------------------------------------------------
# evaluate


def load_pairs_dir(pairs_dir: Path, size: int, crop: str, progress: bool = True) -> dict[str, Any]:
    """Pairs of a Face Mask Lite-layout folder, cropped (face found on the unmasked image) and resized."""
    from tqdm import tqdm

    from unmasking import data, faces, masks

    if not pairs_dir.is_dir():
        raise CliError(f"{pairs_dir}: no such folder")
    names = [p.relative_to(pairs_dir).as_posix() for p in pairs_dir.rglob("*") if p.is_file()]
    index = data.index_fml(names)
    if not index.pairs:
        raise CliError(f"{pairs_dir}: no pairs found (expected with_mask/with-mask-<mask>-<file> beside "
                       "without_mask/<file>)")
    m_list, u_list, ids, mask_names, skipped = [], [], [], [], []
    for mrel, urel, mask in tqdm(index.pairs, desc="reading pairs", disable=None if progress else True):
        try:
            m, u = images.read_rgb(pairs_dir / mrel), images.read_rgb(pairs_dir / urel)
            if m.shape != u.shape:
                raise ImageError(f"{mrel}: size differs from {urel}")
            if crop == "detect":
                box = faces.central_face(u)
                if box is None:
                    raise ImageError(f"{urel}: no face found")
                square = masks.crop_box(faces.landmarks(u, box))
                m, u = masks.crop(m, square), masks.crop(u, square)
            m_list.append(images.resize(m, size))
            u_list.append(images.resize(u, size))
            ids.append(mrel)
            mask_names.append(mask)
        except ImageError as e:
            skipped.append({"file": mrel, "reason": str(e)})
    if not ids:
        raise CliError(f"{pairs_dir}: none of the {len(index.pairs)} pairs could be used")
    return {"masked": np.stack(m_list), "unmasked": np.stack(u_list), "ids": ids, "masks": mask_names,
            "skipped": skipped, "unpaired": len(index.unpaired_masked) + len(index.unpaired_unmasked)}


def evaluate_dir(pairs_dir: Path, weights: Path | None = None, crop: str = "detect", batch_size: int = 32,
                 identity: bool = True, progress: bool = True) -> dict[str, Any]:
    """The study's metrics for the weights and for ``masked_input`` on a folder of pairs, overall and per mask."""
    from unmasking import evaluate

    model, wpath = load_weights(weights)
    size = model_size(model)
    pairs = load_pairs_dir(Path(pairs_dir), size, crop, progress)
    name = wpath.stem
    outputs = {"masked_input": pairs["masked"].copy(),
               name: predict_crops(model, pairs["masked"], batch_size)}
    rows = evaluate.evaluate(pairs["masked"], pairs["unmasked"], pairs["ids"], outputs, identity, progress)
    mask_of = dict(zip(pairs["ids"], pairs["masks"]))
    by_mask = {}
    for mask in sorted(set(pairs["masks"])):
        by_mask[mask] = evaluate.summarize([r for r in rows if mask_of[r["pair_id"]] == mask])
    return {"test": evaluate.summarize(rows), "n_test": len(pairs["ids"]), "data_source": f"pairs: {pairs_dir}",
            "image_size": size, "weights": str(wpath), "crop": crop, "by_mask": by_mask,
            "skipped": pairs["skipped"], "unpaired": pairs["unpaired"]}


def format_table(result: dict[str, Any]) -> str:
    cols = ["accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim", "identity_distance",
            "identity_match_rate"]
    lines = []

    def block(title: str, table: dict[str, dict[str, Any]]) -> None:
        lines.append(title)
        lines.append(f"{'method':<14}" + "".join(f"{c:>20}" for c in cols) + f"{'n':>6}")
        for method, s in table.items():
            vals = "".join(f"{s.get(c):>20.4f}" if isinstance(s.get(c), float) else f"{'-':>20}" for c in cols)
            lines.append(f"{method:<14}{vals}{s.get('n', ''):>6}")

    block(f"all pairs ({result['n_test']})", result["test"])
    for mask, table in result["by_mask"].items():
        block(f"\nmask: {mask}", table)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# synthesize


def synthesize_dir(faces_dir: Path, out_dir: Path, mask: Path | None = None, progress: bool = True,
                   templates: list[str] | None = None) -> tuple[int, list[dict[str, str]]]:
    """Mask every face photo of a folder, at full size, into Face Mask Lite layout, once per template.

    ``mask``: an overlay PNG (placed the way Face Mask Lite did), a MaskTheFace ``masks.cfg`` or a folder of them
    (None: the drawn white mask); ``templates``: the template names to use (default: all found). Writes
    ``without_mask/<stem>.png`` and ``with_mask/with-mask-<template>-<stem>.png``; returns the number of pairs
    written and the photos skipped (with the reason).
    """
    from tqdm import tqdm

    from unmasking import data, masks

    faces_dir, out_dir = Path(faces_dir), Path(out_dir)
    if not faces_dir.is_dir():
        raise CliError(f"{faces_dir}: no such folder")
    try:
        library = masks.find_templates(mask) if mask else {}
        chosen = masks.select_templates(library, templates or [], "--template") if mask else [None]
    except ImageError as e:
        raise CliError(str(e)) from None
    (out_dir / "with_mask").mkdir(parents=True, exist_ok=True)
    (out_dir / "without_mask").mkdir(parents=True, exist_ok=True)
    files = sorted(f for f in faces_dir.rglob("*") if f.is_file() and images.is_image_name(f.name))
    written, skipped = 0, []
    for f in tqdm(files, desc="masking", disable=None if progress else True):
        try:
            img = images.read_rgb(f)
            lm = data.find_landmarks(img)
            masked = [(t.name if t else "drawn-mask", masks.apply_mask(img, lm, t)) for t in chosen]
        except ImageError as e:
            skipped.append({"file": str(f), "reason": str(e).split(": ", 1)[-1]})
            continue
        images.write_png(img, out_dir / "without_mask" / f"{f.stem}.png")
        for name, m in masked:
            images.write_png(m, out_dir / "with_mask" / f"with-mask-{name}-{f.stem}.png")
            written += 1
    return written, skipped


# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="unmask", description="Unmask face photos with the study's trained models.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="unmask photos", description="Unmask photos; writes <stem>.png per input and "
                       "unmask.csv with each input's status. Exit code 1 when any input failed.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--weights", type=Path, default=None, help="a .keras file (default: the best trained model)")
    p.add_argument("--crop", choices=["detect", "none"], default="detect",
                   help="detect: find each face and paste the result back (default); none: the image is the face")
    p.add_argument("--batch-size", type=int, default=32)
    e = sub.add_parser("evaluate", help="metrics on a folder of pairs", description="Evaluate on a folder in Face "
                       "Mask Lite layout (with_mask/with-mask-<mask>-<file>, without_mask/<file>).")
    e.add_argument("pairs_dir", type=Path, metavar="PAIRS_DIR")
    e.add_argument("--weights", type=Path, default=None, help="a .keras file (default: the best trained model)")
    e.add_argument("--crop", choices=["detect", "none"], default="detect",
                   help="detect: crop the face found on the unmasked image from both (default); none: whole images")
    e.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the metrics as JSON")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--no-identity", action="store_true", help="skip the face-embedding metrics (faster)")
    s = sub.add_parser("synthesize", help="mask a folder of faces into Face Mask Lite layout",
                       description="Mask every face photo of a folder the way Face Mask Lite did (dlib landmarks, "
                       "the overlay placed from nose bridge and chin), at full size, into Face Mask Lite layout.")
    s.add_argument("faces_dir", type=Path, metavar="FACES_DIR")
    s.add_argument("--out", required=True, type=Path, metavar="DIR")
    s.add_argument("--mask", type=Path, default=None, help="an RGBA mask overlay, a MaskTheFace masks.cfg, or a folder "
                   "of them (default: the drawn white mask)")
    s.add_argument("--template", action="append", default=None, metavar="NAME",
                   help="a template of --mask to use (repeat for several; each face is masked once with each; "
                   "default: all templates found)")
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            t0 = time.perf_counter()
            results = predict(args.inputs, args.out, args.weights, args.crop, args.batch_size)
            dt = time.perf_counter() - t0
            failed = [r for r in results if r.status != "ok"]
            for r in failed:
                print(f"failed: {r.input}: {r.reason}", file=sys.stderr)
            ok = len(results) - len(failed)
            print(f"{ok} of {len(results)} photos unmasked into {args.out} ({dt:.1f} s, {ok / dt:.1f} photos/s); "
                  f"status of each in {args.out / 'unmask.csv'}")
            return 1 if failed else 0
        if args.command == "synthesize":
            written, skipped = synthesize_dir(args.faces_dir, args.out, args.mask, templates=args.template)
            for sk in skipped:
                print(f"skipped: {sk['file']}: {sk['reason']}", file=sys.stderr)
            print(f"{written} pairs written to {args.out} ({len(skipped)} photos skipped)")
            return 0 if written else 1
        result = evaluate_dir(args.pairs_dir, args.weights, args.crop, args.batch_size, not args.no_identity)
        print(format_table(result))
        for s in result["skipped"]:
            print(f"skipped: {s['file']}: {s['reason']}", file=sys.stderr)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    except CliError as e:
        print(f"unmask: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
