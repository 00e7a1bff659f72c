"""The ``unmask`` command: unmask any photo, evaluate weights on any folder of pairs, mask a folder of faces.

    unmask predict INPUT... --out DIR [--model NAME | --weights PATH] [--crop detect|none] [--detector D]
                                      [--upsample N] [--refine N] [--shift F]
    unmask evaluate PAIRS_DIR [--model NAME | --weights PATH] [--crop detect|none] [--photos] [--json FILE]
    unmask synthesize FACES_DIR --out DIR [--mask PNG|masks.cfg|DIR] [--template NAME]...

``predict`` does what ``photos`` describes: find each masked face (dlib's HOG detector, the study's masked-face
detector, then dlib's CNN detector), crop it from the landmarks the study's masked-face landmark model fits, as the
training data were cropped, unmask it (a flip-averaged model averages over that crop and its four neighbours,
``photos.SHIFT``; ``--refine N`` crops again N times from landmarks refitted on the unmasked face), and paste back
only the region the model estimates the mask covers. It works straight after installation with the weights the
package ships (``shipped``); ``--weights`` takes any ``.keras`` file. ``evaluate`` runs the study's evaluation
(``evaluate.run``) on a folder in
Face Mask Lite layout; ``synthesize`` masks a folder of face photos into that layout. Both predict as the study does:
a model that ``evaluate.flip_average`` names is flip-averaged.
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

from unmasking import images, metrics, photos, shipped
from unmasking.images import ImageError


class CliError(RuntimeError):
    """A problem with the command's arguments or environment; printed without a traceback."""


def load_weights(weights: Path | None = None, model: str | None = None):
    """(model, path): the ``.keras`` file given, else the shipped weights of ``model`` (default: the study's choice)."""
    from unmasking import models

    if weights is None:
        try:
            weights = shipped.path(model)
        except shipped.ShippedError as e:
            raise CliError(str(e)) from None
    path = Path(weights)
    if not path.is_file():
        raise CliError(f"{path}: no such weights file")
    try:
        return models.load(path), path
    except Exception as e:  # a file that is not a Keras model
        raise CliError(f"{path}: cannot load weights ({type(e).__name__}: {e})") from None


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
    detector: str = ""
    reason: str = ""


RESULT_COLUMNS = ["input", "output", "status", "faces", "detector", "reason"]


def predict(inputs: list[str], out_dir: Path, weights: Path | None = None, model: str | None = None,
            crop: str = "detect", detector: str = "auto", upsample: int = 1, chunk: int = 64,
            progress: bool = True, refine: int = photos.REFINE, shift: float = photos.SHIFT) -> list[Result]:
    """Unmask every input photo; write ``<stem>.png`` per input and ``unmask.csv``; return the per-input results."""
    from tqdm import tqdm

    from unmasking import models

    net, _ = load_weights(weights, model)
    flip = models.flip_averaged(net, shipped.settings())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list_inputs(inputs)
    if not files:
        raise CliError("no input files given or found in the folders given")
    results: list[Result] = []
    used_names: dict[str, int] = {}
    bar = tqdm(total=len(files), desc="unmasking", unit="photo", disable=None if progress else True)
    for start in range(0, len(files), chunk):
        loaded: list[tuple[Result, Any]] = []
        for f in files[start : start + chunk]:
            r = Result(str(f))
            results.append(r)
            try:
                if not f.exists():
                    raise ImageError(f"{f.name}: no such file")
                loaded.append((r, images.read_rgb(f)))
            except ImageError as e:
                r.status, r.reason = "failed", str(e).split(": ", 1)[-1]
        done = photos.unmask_photos(net, [img for _, img in loaded], flip, crop, detector, upsample,
                                    masked=shipped.masked_detector(), refine=refine, shift=shift)
        for (r, _), res in zip(loaded, done):
            if not res.faces:
                r.status, r.reason, r.detector = "failed", "no face found", "none"
                continue
            stem = Path(r.input).stem
            n = used_names.get(stem, 0)
            used_names[stem] = n + 1
            target = out_dir / (f"{stem}.png" if n == 0 else f"{stem}-{n}.png")
            images.write_png(res.image, target)
            r.output, r.faces = str(target), len(res.faces)
            r.detector = ",".join(dict.fromkeys(f.detector for f in res.faces))
        bar.update(len(files[start : start + chunk]))
    bar.close()
    with open(out_dir / "unmask.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow({k: getattr(r, k) for k in RESULT_COLUMNS})
    return results


# ---------------------------------------------------------------------------------------------------------------------
# evaluate


def evaluate_dir(pairs_dir: Path, weights: Path | None = None, model: str | None = None, crop: str = "detect",
                 photo_level: bool = False, identity: bool = True, progress: bool = True) -> dict[str, Any]:
    """The study's evaluation (``evaluate.run``) of the weights on a folder of pairs: its result layout, plus the
    pairs skipped and unpaired."""
    from unmasking import data, evaluate, testsets

    net, path = load_weights(weights, model)
    ep = shipped.settings()
    try:
        sets, skipped, unpaired = testsets.folder_sets(Path(pairs_dir), {path.stem: net}, ep, int(net.input_shape[1]),
                                                       crop, photo_level, progress, shipped.masked_detector())
    except data.DataError as e:
        raise CliError(str(e)) from None
    if not identity:
        for s in sets:
            s.same_photo_n, s.references = 0, None
    ev = evaluate.run({path.stem: net}, sets, ep, progress=progress)
    return {**ev.result, "weights": str(path), "skipped": skipped, "unpaired": unpaired}


def format_table(result: dict[str, Any]) -> str:
    """The headline metrics of every set as text tables, one row per method."""
    cols = [c for c in metrics.HEADLINE if c != "c2st_distance"]
    lines = []
    for name, entry in result["sets"].items():
        lines.append(f"{name} ({entry['n']} pairs" + (f", {entry['detected']} of {entry['photos']} faces found)"
                                                       if "photos" in entry else ")"))
        lines.append(f"{'method':<16}" + "".join(f"{c:>22}" for c in cols))
        for method, s in entry["methods"].items():
            vals = "".join(f"{s[c]:>22.4f}" if isinstance(s.get(c), float) else f"{'-':>22}" for c in cols)
            lines.append(f"{method:<16}{vals}")
        for mask, table in entry.get("by_mask", {}).items():
            lines.append(f"  mask {mask}: " + ", ".join(f"{m} masked_psnr {s['masked_psnr']:.2f}"
                                                       for m, s in table.items() if s.get("masked_psnr") is not None))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# synthesize


def synthesize_dir(faces_dir: Path, out_dir: Path, mask: Path | None = None, progress: bool = True,
                   templates: list[str] | None = None) -> tuple[int, list[dict[str, str]]]:
    """Mask every face photo of a folder, at full size, into Face Mask Lite layout, once per template.

    ``mask``: an overlay PNG (placed the way Face Mask Lite did), a MaskTheFace ``masks.cfg`` or a folder of them
    (None: the project's own drawn masks); ``templates``: the template names to use (default: all found). Writes
    ``without_mask/<stem>.png`` and ``with_mask/with-mask-<template>-<stem>.png``; returns the number of pairs
    written and the photos skipped (with the reason).
    """
    from tqdm import tqdm

    from unmasking import data, masks

    faces_dir, out_dir = Path(faces_dir), Path(out_dir)
    if not faces_dir.is_dir():
        raise CliError(f"{faces_dir}: no such folder")
    try:
        library = masks.find_templates(mask) if mask else masks.drawn_templates()
        chosen = masks.select_templates(library, templates or [], "--template")
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
            masked = [(t.name, masks.apply_mask(img, lm, t)) for t in chosen]
        except ImageError as e:
            skipped.append({"file": str(f), "reason": str(e).split(": ", 1)[-1]})
            continue
        images.write_png(img, out_dir / "without_mask" / f"{f.stem}.png")
        for name, m in masked:
            images.write_png(m, out_dir / "with_mask" / f"with-mask-{name}-{f.stem}.png")
            written += 1
    return written, skipped


# ---------------------------------------------------------------------------------------------------------------------


def _weights_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None, help="a model the package ships (default: the study's choice; "
                   "`unmask models` lists them)")
    g.add_argument("--weights", type=Path, default=None, help="any .keras file (e.g. models/mask_unet.keras)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="unmask", description="Unmask face photos with the study's trained models.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="unmask photos", description="Unmask photos: find each masked face, crop it, "
                       "unmask it and paste back only the region the model estimates the mask covers (the rest of "
                       "the photo keeps its own pixels). Parts of a mask outside the face crop, such as ear loops, "
                       "stay. Writes <stem>.png per input and unmask.csv with each input's status and the detector "
                       "that found its faces. Exit code 1 when any input failed.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    _weights_args(p)
    p.add_argument("--crop", choices=["detect", "none"], default="detect",
                   help="detect: find each face and paste the result back (default); none: the image is the face")
    p.add_argument("--detector", choices=["auto", "hog", "masked-hog", "cnn"], default="auto",
                   help="auto (default): dlib's HOG detector, then the study's masked-face detector, then dlib's CNN "
                   "detector, until one finds a face")
    p.add_argument("--upsample", type=int, default=1, help="upsample photos this many times to find small faces")
    p.add_argument("--refine", type=int, default=photos.REFINE, metavar="N", help="passes that crop each face again "
                   f"from landmarks refitted on its unmasked output (default: {photos.REFINE}; 0: none)")
    p.add_argument("--shift", type=float, default=photos.SHIFT, metavar="F", help="a flip-averaged model also "
                   "averages its output over the last crop moved this share of its side left, right, up and down "
                   f"(default: {photos.SHIFT}; 0: the last crop alone)")
    e = sub.add_parser("evaluate", help="metrics on a folder of pairs", description="Evaluate on a folder in Face "
                       "Mask Lite layout (with_mask/with-mask-<mask>-<file>, without_mask/<file>) with the study's "
                       "evaluation. JPEG pairs get the JPEG-tolerant masked region (metrics.lossy_region).")
    e.add_argument("pairs_dir", type=Path, metavar="PAIRS_DIR")
    _weights_args(e)
    e.add_argument("--crop", choices=["detect", "none"], default="detect",
                   help="detect: crop the face found on the unmasked image from both (default); none: whole images")
    e.add_argument("--photos", action="store_true", help="the pairs are full-size photos: run what `unmask predict` "
                   "does (faces found on the masked photo) and score the crops and the pasted-back photos")
    e.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the result as JSON")
    e.add_argument("--no-identity", action="store_true", help="skip the face-embedding metrics (faster)")
    s = sub.add_parser("synthesize", help="mask a folder of faces into Face Mask Lite layout",
                       description="Mask every face photo of a folder the way Face Mask Lite did (dlib landmarks, "
                       "the overlay placed from nose bridge and chin), at full size, into Face Mask Lite layout.")
    s.add_argument("faces_dir", type=Path, metavar="FACES_DIR")
    s.add_argument("--out", required=True, type=Path, metavar="DIR")
    s.add_argument("--mask", type=Path, default=None, help="an RGBA mask overlay, a MaskTheFace masks.cfg, or a folder "
                   "of them (default: the project's own drawn masks)")
    s.add_argument("--template", action="append", default=None, metavar="NAME",
                   help="a template to use (repeat for several; each face is masked once with each; default: all)")
    sub.add_parser("models", help="list the models the package ships, with their model cards")
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            t0 = time.perf_counter()
            results = predict(args.inputs, args.out, args.weights, args.model, args.crop, args.detector,
                              args.upsample, refine=args.refine, shift=args.shift)
            dt = time.perf_counter() - t0
            failed = [r for r in results if r.status != "ok"]
            for r in failed:
                print(f"failed: {r.input}: {r.reason}", file=sys.stderr)
            ok = len(results) - len(failed)
            print(f"{ok} of {len(results)} photos unmasked into {args.out} ({dt:.1f} s); "
                  f"status of each in {args.out / 'unmask.csv'}")
            return 1 if failed else 0
        if args.command == "synthesize":
            written, skipped = synthesize_dir(args.faces_dir, args.out, args.mask, templates=args.template)
            for sk in skipped:
                print(f"skipped: {sk['file']}: {sk['reason']}", file=sys.stderr)
            print(f"{written} pairs written to {args.out} ({len(skipped)} photos skipped)")
            return 0 if written else 1
        if args.command == "models":
            print(shipped.describe())
            return 0
        result = evaluate_dir(args.pairs_dir, args.weights, args.model, args.crop, args.photos, not args.no_identity)
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
