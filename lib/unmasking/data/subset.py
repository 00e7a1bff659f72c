"""The seeded subset: one function per stage output (``build_subset``, ``build_robustness``), the identity-disjoint
split, the manifest and summary, and reading them back.

Outputs are written to a temporary folder and renamed into place, so an interrupted run never leaves a subset that
looks complete. Every input that is not used is counted with its file name and reason in the summary; the stage fails
with a clear message only when fewer than ``min_pairs`` usable pairs remain.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import images, masks, paths
from unmasking.data.fml import collect_local
from unmasking.data.folder import choose_templates, find_faces, mask_faces, template_library
from unmasking.data.kaggle import KaggleClient, collect_kaggle
from unmasking.data.pairs import MANIFEST_COLUMNS, SPLITS, Collected, DataError, coverage


def split_groups(groups: list[str], test_fraction: float, val_fraction: float, seed: int) -> list[str]:
    """Assign each pair a split; pairs of the same group (identity) always share one. Seeded.

    ``test_fraction`` of the pairs go to test, ``val_fraction`` of the rest to val, the remainder to train.
    """
    n = len(groups)
    keys = sorted(set(groups))
    rng = np.random.default_rng(seed + 1)
    order = [keys[i] for i in rng.permutation(len(keys))]
    size = Counter(groups)
    n_test = round(n * test_fraction)
    n_val = round((n - n_test) * val_fraction)
    assign, filled = {}, {"test": 0, "val": 0}
    for k in order:
        if filled["test"] < n_test:
            assign[k] = "test"
            filled["test"] += size[k]
        elif filled["val"] < n_val:
            assign[k] = "val"
            filled["val"] += size[k]
        else:
            assign[k] = "train"
    return [assign[g] for g in groups]


def write_subset(out_dir: Path, col: Collected, splits: list[str], summary: dict[str, Any], prefix: str = "pair"
                 ) -> dict:
    """Write images, manifest and summary into a temporary folder, then rename it to ``out_dir``."""
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / paths.MASKED_DIRNAME).mkdir(parents=True)
    (tmp / paths.UNMASKED_DIRNAME).mkdir(parents=True)
    rows = []
    for i, (pair, split) in enumerate(zip(col.pairs, splits)):
        pid = f"{prefix}{i:05d}"
        mf = f"{paths.MASKED_DIRNAME}/{pid}.png"
        uf = f"{paths.UNMASKED_DIRNAME}/{pid}.png"
        rows.append({
            "pair_id": pid, "split": split, "identity": pair.identity, "mask": pair.mask,
            "source_masked": pair.source_masked, "source_unmasked": pair.source_unmasked,
            "masked_file": mf, "unmasked_file": uf,
            "masked_sha256": images.write_png(pair.masked, tmp / mf),
            "unmasked_sha256": images.write_png(pair.unmasked, tmp / uf),
            "mask_coverage": f"{coverage(pair):.6f}",
        })
    with open(tmp / paths.MANIFEST_NAME, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    covs = [float(r["mask_coverage"]) for r in rows]
    summary = dict(summary)
    summary["splits"] = {s: splits.count(s) for s in SPLITS}
    summary["mask_coverage"] = {
        "median": round(float(np.median(covs)), 4) if covs else None,
        "min": round(float(np.min(covs)), 4) if covs else None,
        "max": round(float(np.max(covs)), 4) if covs else None,
    }
    stored = {k: v for k, v in summary.items() if k not in TIMING_KEYS}  # byte-identical across runs
    (tmp / paths.SUMMARY_NAME).write_text(json.dumps(stored, indent=2) + "\n")
    replace_dir(tmp, out_dir)
    return summary


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Rename a finished temporary folder to ``out_dir``, replacing what was there."""
    old = out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


TIMING_KEYS = ("seconds", "pairs_per_s")  # in the returned summary and reports/data.json, never in summary.json


def build_subset(dl: dict[str, Any], seed: int, out_dir: Path, *, client: KaggleClient | None = None,
                 raw_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the subset described by the ``download`` params section; return its summary (with its timing)."""
    t0 = time.perf_counter()
    n, size = dl["n_pairs"], dl["image_size"]
    source = dl["source"]
    if source == "faces":
        library, train_names, test_names = template_library(dl)
        found = find_faces(paths.resolve(dl["faces"]), n, seed, dl["one_per_identity"], dl["workers"], progress)
        col, where = found.col, dl["faces"]
        _require(len(found.faces), dl, n, col, where)
        groups = [ident or rel for rel, ident, _ in found.faces]
        splits = split_groups(groups, dl["test_fraction"], dl["val_fraction"], seed)
        names = choose_templates(splits, train_names, test_names, seed)
        pairs, rejected = mask_faces(found, names, library, size, dl["workers"], progress)
        col.rejected += rejected
        col.pairs = [p for p in pairs if p is not None]
        splits = [s for s, p in zip(splits, pairs) if p is not None]
        mask_name = ", ".join(sorted(set(train_names) | set(test_names)))
        col.extra["train_masks"], col.extra["test_masks"] = train_names, test_names
    else:
        if source == "local":
            col = collect_local(paths.resolve(dl["local"]), n, size, seed, dl["workers"], raw_dir, progress)
            where, mask_name = dl["local"], "as in the copy"
        else:
            col = collect_kaggle(client, dl["kaggle_dataset"], n, size, seed, dl["workers"], raw_dir, progress)
            where, mask_name = dl["kaggle_dataset"], "default-mask (Face Mask Lite)"
        splits = split_groups([p.identity or p.source_unmasked for p in col.pairs], dl["test_fraction"],
                              dl["val_fraction"], seed)
    _require(len(col.pairs), dl, n, col, where)
    summary = _summary(col, source, where, mask_name, size, seed, n)
    out = write_subset(out_dir, col, splits, summary)
    return _timed(out, len(col.pairs), time.perf_counter() - t0)


def build_robustness(dl: dict[str, Any], seed: int, out_dir: Path, progress: bool = True) -> dict[str, dict[str, Any]]:
    """The in-domain test sets: the first ``indomain_pairs`` faces of ``indomain_faces``, each masked with every
    template of ``robustness_masks`` into ``out_dir/<template>/`` (landmarks found once). Returns {template: summary}
    ({} and a folder holding only ``NONE.txt`` when ``indomain_faces`` is empty).
    """
    t0 = time.perf_counter()
    if not dl["indomain_faces"]:
        tmp = Path(out_dir).parent / f".{Path(out_dir).name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "NONE.txt").write_text("download.indomain_faces was empty\n")
        replace_dir(tmp, Path(out_dir))
        return {}
    library, _, test_names = template_library(dl)
    names = [t.name for t in masks.select_templates(library, dl["robustness_masks"], "download.robustness_masks")] \
        if dl["robustness_masks"] else test_names
    names = list(dict.fromkeys(names))  # one set per template, however often a list names it
    n, size = dl["indomain_pairs"], dl["image_size"]
    found = find_faces(paths.resolve(dl["indomain_faces"]), n, seed, False, dl["workers"], progress)
    _require(len(found.faces), dl, n, found.col, dl["indomain_faces"])
    t_found = time.perf_counter() - t0
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summaries = {}
    for name in names:
        t1 = time.perf_counter()
        pairs, rejected = mask_faces(found, [name] * len(found.faces), library, size, dl["workers"], progress)
        col = Collected([p for p in pairs if p is not None], found.col.rejected + rejected, found.col.found,
                        found.col.tried, dict(found.col.extra))
        summary = _summary(col, "faces", dl["indomain_faces"], name, size, seed, n)
        summary = write_subset(tmp / name, col, ["test"] * len(col.pairs), summary, prefix="gen")
        summaries[name] = _timed(summary, len(col.pairs), t_found + time.perf_counter() - t1)
    replace_dir(tmp, out_dir)
    return summaries


def _require(have: int, dl: dict[str, Any], n: int, col: Collected, where: str) -> None:
    min_pairs = min(dl["min_pairs"], n)
    if have < min_pairs:
        reasons = Counter(r["reason"] for r in col.rejected).most_common(3)
        raise DataError(f"only {have} usable pairs from {where} (download.min_pairs = {min_pairs}); "
                        f"rejected {len(col.rejected)}: " + ", ".join(f"{k} ({v})" for k, v in reasons))


def _summary(col: Collected, source: str, where: str, mask_name: str, size: int, seed: int, n: int) -> dict[str, Any]:
    return {
        "source": source,
        "source_path": where,
        "mask": mask_name,
        "image_size": size,
        "seed": seed,
        "n_pairs_requested": n,
        "found": col.found,
        "tried": col.tried,
        "used": len(col.pairs),
        "rejected": len(col.rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in col.rejected).items())),
        "short_by": max(0, n - len(col.pairs)),
        **col.extra,
        "masks_used": dict(sorted(Counter(p.mask for p in col.pairs).items())),
        "rejected_files": col.rejected,
    }


def _timed(summary: dict[str, Any], pairs: int, seconds: float) -> dict[str, Any]:
    return {**summary, "seconds": round(seconds, 1), "pairs_per_s": round(pairs / seconds, 1) if seconds else None}



def read_manifest(subset_dir: Path) -> list[dict[str, str]]:
    """The manifest rows; ``DataError`` when the subset is missing or incomplete."""
    f = Path(subset_dir) / paths.MANIFEST_NAME
    if not f.is_file() or not (Path(subset_dir) / paths.SUMMARY_NAME).is_file():
        raise DataError(f"{subset_dir}: no complete subset here; run the download stage first (make repro)")
    with open(f, newline="") as fh:
        return list(csv.DictReader(fh))


def read_summary(subset_dir: Path) -> dict[str, Any]:
    return json.loads((Path(subset_dir) / paths.SUMMARY_NAME).read_text())


def load_pairs(subset_dir: Path, splits: Iterable[str] = ("train",), verify: bool = False) -> dict[str, Any]:
    """Load the pairs of the given splits: {"masked": uint8 (N,S,S,3), "unmasked": ..., "ids": [...], "rows": [...]}."""
    subset_dir = Path(subset_dir)
    wanted = set(splits)
    rows = [r for r in read_manifest(subset_dir) if r["split"] in wanted]
    out: dict[str, list[np.ndarray]] = {"masked": [], "unmasked": []}
    for r in rows:
        for key in out:
            name = r[f"{key}_file"]
            try:
                raw = (subset_dir / name).read_bytes()
            except OSError as e:
                raise DataError(f"{subset_dir / name}: cannot read ({e.strerror or e})") from None
            if verify and hashlib.sha256(raw).hexdigest() != r[f"{key}_sha256"]:
                raise DataError(f"{name}: content hash differs from the manifest")
            out[key].append(images.decode(raw, name))
    m, u = out["masked"], out["unmasked"]
    if not rows:
        raise DataError(f"{subset_dir}: no pairs in split(s) {', '.join(sorted(wanted))}")
    return {"masked": np.stack(m), "unmasked": np.stack(u), "ids": [r["pair_id"] for r in rows], "rows": rows}



def data_metrics(summary: dict[str, Any], indomain: dict[str, dict[str, Any]] | None = None,
                 photos: dict[str, Any] | None = None) -> dict[str, Any]:
    """The small, committed data-stage metrics (``reports/data.json``) from the subset summaries (with timings)."""
    keys = ("source", "image_size", "found", "tried", "used", "rejected", "landmark_success_rate", "splits",
            "mask_coverage", "masks_used", *TIMING_KEYS, "rejected_by_reason")
    out = {"subset": {k: summary[k] for k in keys if k in summary}}
    if indomain:
        out["indomain"] = {name: {k: s[k] for k in keys if k in s} for name, s in indomain.items()}
    if photos:
        out["photos"] = {k: v for k, v in photos.items() if k != "failed"} | {"failed": len(photos.get("failed", []))}
    return out
