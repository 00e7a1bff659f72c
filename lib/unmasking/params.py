"""Reading, validating and setting ``params.yaml``.

Every stage validates the whole file before it does any work: an unknown key, a value of the wrong type or out of
range stops it with a message that names the key (``ParamsError``).

Command line (used by the Makefile to choose the data source and a parameter profile):
    python -m unmasking.params source faces FOLDER [--mask M] [--templates T] [--indomain G] [--train-masks ...]
    python -m unmasking.params source local COPY | source kaggle
    python -m unmasking.params set train.mask_unet.epochs=2
    python -m unmasking.params profile profiles/gpu.yaml
    python -m unmasking.params check

``source`` sets every data-source key (``SOURCE_KEYS``) from its arguments and the project's own defaults
(``SOURCE_DEFAULTS``: no faces folder, the drawn masks, no generated faces, template lists that mean "the templates
of ``mask``"), so a path recorded in the committed params.yaml never reaches another machine's run.

``PERFORMANCE_KEYS`` change only how fast a stage runs, never what it writes: no stage lists them as a dependency.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from unmasking import paths

MODEL_NAMES = ("paper_ae", "mask_unet", "mask_gan")
SOURCES = ("kaggle", "local", "faces")
SOURCE_KEYS = ("source", "local", "faces", "mask", "templates", "indomain_faces", "train_masks", "test_masks",
               "robustness_masks")  # of the download section
SOURCE_DEFAULTS = {"local": "", "faces": "", "mask": "", "templates": "", "indomain_faces": "", "train_masks": [],
                   "test_masks": [], "robustness_masks": []}
PERFORMANCE_KEYS = ("download.workers", "evaluate.workers")


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type or out of range; the message names it."""


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParamsError(f"{key}: expected an integer, got {v!r}")
        if lo is not None and v < lo:
            raise ParamsError(f"{key}: must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise ParamsError(f"{key}: must be <= {hi}, got {v}")

    return check


def _float(lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {v!r}")
        if lo is not None and (v < lo or (open_lo and v == lo)):
            raise ParamsError(f"{key}: must be {'>' if open_lo else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise ParamsError(f"{key}: must be <= {hi}, got {v}")

    return check


def _bool(key: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ParamsError(f"{key}: expected true or false, got {v!r}")


def _str(key: str, v: Any) -> None:
    if not isinstance(v, str):
        raise ParamsError(f"{key}: expected a string (use \"\" for none), got {v!r}")


def _choice(*options: str) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if v not in options:
            raise ParamsError(f"{key}: must be one of {', '.join(options)}; got {v!r}")

    return check


def _image_size(key: str, v: Any) -> None:
    _int(32, 1024)(key, v)
    if v % 16:
        raise ParamsError(f"{key}: must be a multiple of 16 (the models halve it four times), got {v}")


def _filters(n: int) -> Callable[[str, Any], None]:
    def check(key: str, v: Any) -> None:
        if not isinstance(v, list) or len(v) != n or \
                not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in v):
            raise ParamsError(f"{key}: expected a list of {n} positive integers, got {v!r}")

    return check


def _widths(key: str, v: Any) -> None:
    if not isinstance(v, list) or not v or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in v):
        raise ParamsError(f"{key}: expected a non-empty list of positive integers, got {v!r}")


def _names(key: str, v: Any) -> None:
    if not isinstance(v, list) or not all(isinstance(n, str) and n for n in v):
        raise ParamsError(f"{key}: expected a list of template names ([] for all), got {v!r}")


def _model_subset(key: str, v: Any) -> None:
    if not isinstance(v, list) or any(m not in MODEL_NAMES for m in v):
        raise ParamsError(f"{key}: expected a list of model names ({', '.join(MODEL_NAMES)}; [] for none), got {v!r}")


def _models(key: str, v: Any) -> None:
    if not isinstance(v, list) or not v:
        raise ParamsError(f"{key}: expected a non-empty list of model names ({', '.join(MODEL_NAMES)}), got {v!r}")
    for m in v:
        if m not in MODEL_NAMES:
            raise ParamsError(f"{key}: unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
    if len(set(v)) != len(v):
        raise ParamsError(f"{key}: a model is listed twice: {v!r}")


SCHEMA: dict[str, Any] = {
    "base": {"seed": _int(0, 2**31 - 1)},
    "download": {
        "source": _choice(*SOURCES),
        "kaggle_dataset": _str,
        "local": _str,
        "faces": _str,
        "mask": _str,
        "templates": _str,
        "train_masks": _names,
        "test_masks": _names,
        "n_pairs": _int(1, 100_000),
        "image_size": _image_size,
        "test_fraction": _float(0.0, 1.0, open_lo=True),
        "val_fraction": _float(0.0, 1.0),
        "one_per_identity": _bool,
        "min_pairs": _int(1),
        "workers": _int(1, 64),
        "indomain_faces": _str,
        "indomain_pairs": _int(0, 100_000),
        "robustness_masks": _names,
        "photo_quality": _int(1, 100),
    },
    "explore": {"n_examples": _int(1, 50)},
    "train": {
        "batch_size": _int(1, 4096),
        "patience": _int(0),
        "augment_flip": _bool,
        "steps_per_epoch": _int(0),
        "distribute": _bool,
        "deterministic": _bool,
        "bn_calibration_batches": _int(1, 10_000),
        "paper_ae": {"epochs": _int(0, 10_000), "learning_rate": _float(0.0, 1.0, open_lo=True),
                     "lr_schedule": _choice("constant", "cosine"), "filters": _filters(3)},
        "mask_unet": {
            "epochs": _int(0, 10_000),
            "learning_rate": _float(0.0, 1.0, open_lo=True),
            "lr_schedule": _choice("constant", "cosine"),
            "filters": _filters(4),
            "batch_norm": _bool,
            "mask_weight": _float(0.0),
            "hole_weight": _float(0.0),
            "ssim_weight": _float(0.0),
            "log_mse_weight": _float(0.0),
            "init_weights": _str,
        },
        "mask_gan": {
            "init": _choice("", "mask_unet"),
            "epochs": _int(0, 10_000),
            "learning_rate": _float(0.0, 1.0, open_lo=True),
            "lr_schedule": _choice("constant", "cosine"),
            "beta_1": _float(0.0, 1.0),
            "disc_learning_rate": _float(0.0, 1.0, open_lo=True),
            "disc_filters": _widths,
            "detail_convs": _int(0, 8),
            "adv_weight": _float(0.0),
            "mask_weight": _float(0.0),
            "hole_weight": _float(0.0),
            "ssim_weight": _float(0.0),
            "log_mse_weight": _float(0.0),
        },
    },
    "evaluate": {
        "models": _models,
        "batch_size": _int(1, 4096),
        "workers": _int(1, 64),
        "identity_threshold": _float(0.0, 2.0, open_lo=True),
        "n_examples": _int(1, 50),
        "telea_radius": _int(1, 50),
        "identity_pairs": _int(0),
        "flip_average": _model_subset,
        "bootstrap": _int(100, 100_000),
        "c2st_epochs": _int(1, 1000),
        "detector": _choice("auto", "hog", "masked-hog", "cnn"),
        "upsample": _int(0, 4),
    },
    "detector": {
        "train_photos": _int(10, 100_000),
        "C": _float(0.0, open_lo=True),
        "landmarks": {"train_photos": _int(10, 100_000), "trees": _int(1, 10_000), "tree_depth": _int(1, 10),
                      "cascade_depth": _int(1, 50), "oversampling": _int(1, 100)},
    },
    "ship": {"models": _models},
}


def _validate(node: Any, schema: dict[str, Any], prefix: str) -> None:
    if not isinstance(node, dict):
        raise ParamsError(f"{prefix or 'params'}: expected a mapping of keys, got {node!r}")
    for key in node:
        if key not in schema:
            where = f"{prefix}.{key}" if prefix else key
            raise ParamsError(f"{where}: unknown parameter; known here: {', '.join(schema)}")
    for key, rule in schema.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in node:
            raise ParamsError(f"{where}: missing")
        if isinstance(rule, dict):
            _validate(node[key], rule, where)
        else:
            rule(where, node[key])


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Check every key of ``params`` against the schema and the rules that tie keys together; return it."""
    _validate(params, SCHEMA, "")
    d = params["download"]
    if d["test_fraction"] + d["val_fraction"] * (1 - d["test_fraction"]) >= 1.0:
        raise ParamsError("download.val_fraction: test and validation together leave no training pairs")
    if d["source"] == "local" and not d["local"]:
        raise ParamsError("download.local: source is 'local' but no folder or zip is given (make repro LOCAL=<path>)")
    if d["source"] == "faces" and not d["faces"]:
        raise ParamsError("download.faces: source is 'faces' but no faces folder is given (make repro FACES=<folder>)")
    if d["min_pairs"] > d["n_pairs"]:
        raise ParamsError(f"download.min_pairs: {d['min_pairs']} is more than download.n_pairs ({d['n_pairs']})")
    ev = params["evaluate"]
    for m in params["ship"]["models"]:
        if m not in ev["models"]:
            raise ParamsError(f"ship.models: {m!r} is not one of the evaluated models (evaluate.models)")
    if "mask_gan" in ev["models"] and params["train"]["mask_gan"]["init"] and \
            params["train"]["mask_gan"]["init"] not in ev["models"]:
        raise ParamsError("train.mask_gan.init: the model it starts from must be trained too (evaluate.models)")
    return params


def load(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate ``params.yaml`` (the project's, unless ``path`` is given)."""
    path = Path(path or paths.PARAMS_FILE)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such parameter file") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return validate(params)


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text) if text != "" else ""
    return "" if value is None else value


def set_values(assignments: list[str], path: str | Path | None = None) -> None:
    """Set ``section.key=value`` assignments in params.yaml, keeping its comments; validate before writing."""
    from ruamel.yaml import YAML

    path = Path(path or paths.PARAMS_FILE)
    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096  # keep long lists on one line
    doc = ry.load(path.read_text())
    plain = copy.deepcopy(yaml.safe_load(path.read_text()))
    for a in assignments:
        if "=" not in a:
            raise ParamsError(f"{a!r}: expected section.key=value")
        key, text = a.split("=", 1)
        value = _parse_value(text)
        *parents, leaf = key.split(".")
        node, pnode = doc, plain
        for part in parents:
            if part not in pnode:
                raise ParamsError(f"{key}: unknown parameter")
            node, pnode = node[part], pnode[part]
        if leaf not in pnode:
            raise ParamsError(f"{key}: unknown parameter")
        node[leaf] = _flow(value, node[leaf])
        pnode[leaf] = value
    validate(plain)
    with path.open("w") as f:
        ry.dump(doc, f)


def source_assignments(source: str, where: str = "", **keys: Any) -> list[str]:
    """The assignments that set every data-source key: ``source`` and its folder/copy ``where``, the ``keys`` given
    (mask, templates, indomain_faces, train_masks, test_masks, robustness_masks), the project's defaults for the rest.
    """
    if source not in SOURCES:
        raise ParamsError(f"download.source: must be one of {', '.join(SOURCES)}; got {source!r}")
    if source != "kaggle" and not where:
        raise ParamsError(f"download.{source}: give the {'faces folder' if source == 'faces' else 'local copy'}")
    unknown = set(keys) - set(SOURCE_DEFAULTS)
    if unknown:
        raise ParamsError(f"unknown source keys: {', '.join(sorted(unknown))}")
    values = {**SOURCE_DEFAULTS, **{k: v for k, v in keys.items() if v not in (None, "", [])}, "source": source}
    if source != "kaggle":
        values[source] = where
    return [f"download.{k}={_dump(values[k])}" for k in SOURCE_KEYS]


def _dump(value: Any) -> str:
    """A value as the right-hand side of a ``section.key=value`` assignment (one line of YAML)."""
    return yaml.safe_dump(value, default_flow_style=True, width=4096).strip().removesuffix("...").strip()


def _flow(value: Any, old: Any) -> Any:
    """A list as a one-line ``[a, b]`` sequence that keeps the comments of the value it replaces (ruamel moves the
    comments after a list around when a block list replaces a flow one)."""
    if not isinstance(value, list):
        return value
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(value)
    seq.fa.set_flow_style()
    if isinstance(old, CommentedSeq):
        seq.ca.comment = old.ca.comment
        seq.ca.end = old.ca.end
        if old.ca.items and len(old):
            last = old.ca.items.get(len(old) - 1)
            if last and value:
                seq.ca.items[len(value) - 1] = last
    return seq


def profile_assignments(path: str | Path) -> list[str]:
    """The ``section.key=value`` assignments of a profile file (a YAML mapping of dotted keys to values)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such profile") from None
    if not isinstance(doc, dict) or not doc:
        raise ParamsError(f"{path}: a profile is a mapping of section.key: value")
    return [f"{k}={_dump(v)}" for k, v in doc.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unmasking.params", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("set", help="set section.key=value in params.yaml")
    s.add_argument("assignments", nargs="+")
    s.add_argument("--file", default=None)
    pr = sub.add_parser("profile", help="apply a profile file (section.key: value lines) to params.yaml")
    pr.add_argument("profile")
    pr.add_argument("--file", default=None)
    so = sub.add_parser("source", help="set every data-source key (the Makefile's FACES=, LOCAL=, MASK=, ...)")
    so.add_argument("source", choices=SOURCES)
    so.add_argument("where", nargs="?", default="", help="the faces folder (faces) or the local copy (local)")
    so.add_argument("--mask", default="")
    so.add_argument("--templates", default="")
    so.add_argument("--indomain", default="", help="a folder of generated faces: the in-domain test sets")
    for k in ("train-masks", "test-masks", "robustness-masks"):
        so.add_argument(f"--{k}", default="", help="template names, separated by spaces or commas")
    so.add_argument("--file", default=None)
    c = sub.add_parser("check", help="validate params.yaml")
    c.add_argument("--file", default=None)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "source":
            def names(text: str) -> list[str]:
                return [n for n in text.replace(",", " ").split() if n]

            set_values(source_assignments(args.source, args.where, mask=args.mask, templates=args.templates,
                                          indomain_faces=args.indomain, train_masks=names(args.train_masks),
                                          test_masks=names(args.test_masks),
                                          robustness_masks=names(args.robustness_masks)), args.file)
        elif args.cmd == "set":
            set_values(args.assignments, args.file)
        elif args.cmd == "profile":
            set_values(profile_assignments(args.profile), args.file)
        else:
            load(args.file)
            print("params.yaml: ok")
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
