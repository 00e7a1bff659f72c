"""The weights the package ships, so that ``unmask predict photo.jpg`` works straight after installation.

The pipeline's ``ship`` stage (``python -m unmasking.shipped``) writes ``lib/unmasking/weights/``: each trained model of
``ship.models`` re-saved without its optimizer state (a few MB, committed to git) with its model card (data, params,
device, validation scores), the masked-face detector and landmark model (``detector``) with their card, and
``shipped.json``: which model
is the default (the highest validation masked-region PSNR, as predicted in use: the study decides on validation,
never on test) and the ``evaluate`` settings the study predicts with (flip averaging, the detectors, the identity
threshold), for an installation that has no ``params.yaml`` beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from unmasking import paths

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
INDEX = "shipped.json"
DETECTOR = paths.MASKED_DETECTOR  # the masked-face detector (unmasking.detector); its landmark model sits beside it


class ShippedError(RuntimeError):
    """No shipped weights where they were expected; the message says how to get some."""


def index(weights_dir: Path | None = None) -> dict[str, Any]:
    f = Path(weights_dir or WEIGHTS_DIR) / INDEX
    if not f.is_file():
        raise ShippedError(f"no shipped weights in {f.parent} (the pipeline's ship stage writes them: make repro); "
                           "pass --weights PATH to use any .keras file")
    return json.loads(f.read_text())


def path(name: str | None = None, weights_dir: Path | None = None) -> Path:
    """The shipped weights of model ``name`` (default: the study's choice)."""
    ix = index(weights_dir)
    name = name or ix["default"]
    if name not in ix["models"]:
        raise ShippedError(f"no shipped model {name!r}; shipped: {', '.join(ix['models'])}")
    return Path(weights_dir or WEIGHTS_DIR) / f"{name}.keras"


def masked_detector(weights_dir: Path | None = None) -> Path:
    """The shipped masked-face detector's file (``faces.find_face_boxes`` skips it when it is not there; the masked-face
    landmark model is looked for beside it, ``faces.masked_landmarks``)."""
    return Path(weights_dir or WEIGHTS_DIR) / DETECTOR


def choice_score(card: dict[str, Any], flip_averaged: bool) -> float | None:
    """The validation score the default is chosen by: the model card's mean per-image masked-region PSNR on the
    validation split, flip-averaged when the model is predicted so."""
    v = card.get("validation", {}).get("flip_averaged" if flip_averaged else "one_pass", {})
    return v.get("masked_psnr")


def settings(weights_dir: Path | None = None) -> dict[str, Any]:
    """The ``evaluate`` settings to predict with: the project's params.yaml in a checkout, else those shipped."""
    from unmasking import params as P

    if paths.PARAMS_FILE.is_file():
        return P.load()["evaluate"]
    return index(weights_dir)["evaluate"]


def describe(weights_dir: Path | None = None) -> str:
    """The shipped models, one line each: name, parameters, image size, device, validation scores."""
    ix = index(weights_dir)
    lines = []
    for name in ix["models"]:
        c = ix["models"][name]
        val = c.get("best_val", {})
        lines.append(f"{name}{' (default)' if name == ix['default'] else ''}: {c.get('parameters')} parameters, "
                     f"{c.get('image_size')} px, trained on {c.get('device', c.get('backend'))}, validation masked "
                     f"PSNR {c.get('chosen_by_score', float('nan')):.2f} dB (per image, as predicted in use), "
                     f"epoch kept {c.get('best_epoch')} (pooled val masked L1 "
                     f"{val.get('val_masked_l1', float('nan')):.4f})")
    return "\n".join(lines)


def ship(models_dir: Path, names: list[str], evaluate_params: dict[str, Any], out_dir: Path | None = None
         ) -> dict[str, Any]:
    """Write the shipped weights of ``names`` from ``models_dir`` into ``out_dir``; return the index."""
    from unmasking import models

    out_dir = Path(out_dir or WEIGHTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("*.keras"), *out_dir.glob("*.json"), *out_dir.glob("*.svm"), *out_dir.glob("*.dat")]:
        old.unlink()
    cards = {}
    for name in names:
        model = models.load(paths.model_path(name, models_dir))  # without the optimizer: a third of the size
        target = out_dir / f"{name}.keras"
        model.save(target)
        card = json.loads(paths.model_card_path(name, models_dir).read_text())
        card["shipped_sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
        card["chosen_by_score"] = choice_score(card, models.flip_averaged(model, evaluate_params))
        paths.model_card_path(name, out_dir).write_text(json.dumps(card, indent=2) + "\n")
        cards[name] = card
    default = max(cards, key=lambda n: cards[n]["chosen_by_score"] or float("-inf"))
    shipped_files = {}
    for name in (DETECTOR, paths.MASKED_LANDMARKS):
        f = Path(models_dir) / name
        shipped_files[name] = f.is_file() and f.stat().st_size > 0
        (out_dir / name).write_bytes(f.read_bytes() if shipped_files[name] else b"")
    det_card = Path(models_dir) / paths.MASKED_CARD
    if det_card.is_file():
        (out_dir / paths.MASKED_CARD).write_text(det_card.read_text())
    from unmasking import params as P

    speed_only = {k.split(".", 1)[1] for k in P.PERFORMANCE_KEYS if k.startswith("evaluate.")}
    ix = {"default": default, "chosen_by": "the highest mean per-image masked-region PSNR on the validation split, "
          "as each model is predicted in use (model card: validation)", "models": cards,
          "masked_face_detector": shipped_files[DETECTOR],
          "masked_face_landmarks": shipped_files[paths.MASKED_LANDMARKS],
          "evaluate": {k: v for k, v in evaluate_params.items() if k not in speed_only}}
    (out_dir / INDEX).write_text(json.dumps(ix, indent=2) + "\n")
    return ix


def main(argv: list[str] | None = None) -> int:
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.shipped", description="Write the package's shipped weights.")
    ap.add_argument("--models-dir", type=Path, default=paths.MODELS_DIR)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    params = P.load()
    ix = ship(args.models_dir, params["ship"]["models"], params["evaluate"], args.out)
    print(f"shipped {', '.join(ix['models'])} (default {ix['default']}) into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
