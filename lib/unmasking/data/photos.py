"""The test photos: each test face masked at its photo's own resolution and saved as JPEG, as a user's photo would be,
and a reference photo of the same person for face verification.

For every test pair of the ``faces`` source, ``build_photos`` writes into ``data/photos/``:

* ``masked/<pair>.jpg``: the whole source photo with the pair's mask template pasted on its landmarks (the very image
  the test crop was cut from, before cropping), saved as JPEG at ``download.photo_quality``;
* ``original/<pair>.<ext>``: the source photo's own bytes;
* ``region/<pair>.png``: the exact masked region (where the lossless masked photo differs from the original);
* ``references/<pair>.<ext>``: another photo of the same person (the bytes of a file of the same identity
  sub-folder), drawn with the seed, never the masked photo and never a photo of any split. Identities without a
  second photo get none and are counted.

``photos.csv`` lists them with their SHA-256s and ``summary.json`` counts them. The evaluation's real-use test (crops
found on the masked photo), its photo-level test and the verification rate read them; nothing trains on them.
Sources other than ``faces`` (Face Mask Lite) have neither photos nor identities: the folder then holds only a
``NONE.txt`` saying so.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from unmasking import images, masks, paths
from unmasking.data.folder import find_landmarks, list_faces, template_library
from unmasking.images import ImageError
from unmasking.parallel import ordered_map_with_progress

PHOTOS_MANIFEST = "photos.csv"
PHOTO_COLUMNS = ["pair_id", "identity", "mask", "source", "masked_file", "original_file", "region_file",
                 "reference_file", "reference_source", "masked_sha256", "original_sha256", "reference_sha256"]

_WORKER: dict[str, Any] = {}


def choose_references(test: list[tuple[str, str]], all_faces: list[tuple[str, str]], used: set[str], seed: int
                      ) -> list[str]:
    """For each test face (source path, identity): another photo of the same identity, drawn with the seed from
    ``all_faces`` minus ``used`` (every photo of any split); "" when the identity has no other photo."""
    by_identity: dict[str, list[str]] = {}
    for rel, ident in all_faces:
        if ident:
            by_identity.setdefault(ident, []).append(rel)
    rng = np.random.default_rng(seed + 3)
    out = []
    for rel, ident in test:
        candidates = sorted(r for r in by_identity.get(ident, []) if r != rel and r not in used)
        out.append(candidates[int(rng.integers(len(candidates)))] if candidates else "")
    return out


def _init(faces_dir: str, templates: dict[str, masks.Template], quality: int) -> None:
    _WORKER.update(faces_dir=Path(faces_dir), templates=templates, quality=quality)


def _mask_photo(task: tuple[str, str]) -> tuple[bytes, bytes, bytes] | str:
    """(original bytes, masked JPEG bytes, region PNG bytes) of one source photo, or the reason it failed."""
    rel, name = task
    try:
        raw = (_WORKER["faces_dir"] / rel).read_bytes()
        img = images.decode(raw, rel)
        masked = masks.apply_mask(img, find_landmarks(img), _WORKER["templates"].get(name))
    except (ImageError, OSError) as e:
        return str(e)
    region = masks.difference_mask(masked, img).astype(np.uint8) * 255
    return raw, images.jpeg_bytes(masked, _WORKER["quality"]), images.png_bytes(region)


def mask_photos(dl: dict[str, Any], rows: list[dict[str, str]], workers: int, progress: bool = True
                ) -> list[tuple[bytes, bytes, bytes] | str]:
    """The photos of manifest ``rows`` masked at full size with their own templates, as the test photos are made:
    for each, (original bytes, masked JPEG bytes at ``download.photo_quality``, region PNG bytes) or the reason it
    failed."""
    return ordered_map_with_progress(
        _mask_photo, [(r["source_unmasked"], r["mask"]) for r in rows], len(rows), "masking photos", workers,
        progress, initializer=_init, initargs=(str(paths.resolve(dl["faces"])), template_library(dl)[0],
                                               dl["photo_quality"]))


def _masked_with_box(task: tuple[str, str]) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray] | None:
    """One source photo masked with its template at full size, with the face box dlib's detector finds on the
    unmasked photo and the 68 landmarks fitted in it (None when no face is found)."""
    from unmasking import faces

    rel, name = task
    try:
        img = images.decode((_WORKER["faces_dir"] / rel).read_bytes(), rel)
    except (ImageError, OSError):
        return None
    box = faces.central_face(img)
    if box is None:
        return None
    lm = faces.landmarks(img, box)
    return masks.apply_mask(img, lm, _WORKER["templates"].get(name)), box, lm


def masked_photos(dl: dict[str, Any], rows: list[dict[str, str]], progress: bool = True
                  ) -> list[tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]]:
    """The photos of manifest ``rows`` (source ``faces``) masked at full size with their own templates (lossless),
    each with its face box and 68 landmarks on the unmasked photo (for training and validating the masked-face
    detector and landmark model); photos whose face is not found are left out."""
    out = ordered_map_with_progress(_masked_with_box, [(r["source_unmasked"], r["mask"]) for r in rows], len(rows),
                                    "masking photos", dl["workers"], progress, initializer=_init,
                                    initargs=(str(paths.resolve(dl["faces"])), template_library(dl)[0], 0))
    return [o for o in out if o is not None]


def build_photos(dl: dict[str, Any], seed: int, subset_dir: Path, out_dir: Path, progress: bool = True
                 ) -> dict[str, Any]:
    """Write ``out_dir`` (``data/photos``) for the test split of ``subset_dir``; return its summary."""
    from unmasking.data.subset import read_manifest, replace_dir

    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if dl["source"] != "faces":
        (tmp / "NONE.txt").write_text("test photos exist only for download.source = faces\n")
        replace_dir(tmp, out_dir)
        return {"photos": 0, "reason": "download.source is not faces"}
    faces_dir = paths.resolve(dl["faces"])
    rows = read_manifest(subset_dir)
    test = [r for r in rows if r["split"] == "test"]
    refs = choose_references([(r["source_unmasked"], r["identity"]) for r in test], list_faces(faces_dir),
                             {r["source_unmasked"] for r in rows}, seed)
    results = mask_photos(dl, test, dl["workers"], progress)
    for sub in ("masked", "original", "region", "references"):
        (tmp / sub).mkdir()
    out, failed = [], []
    for r, ref, res in zip(test, refs, results):
        pid = r["pair_id"]
        if isinstance(res, str):
            failed.append({"file": r["source_unmasked"], "reason": res})
            continue
        raw, jpeg, region = res
        ext = PurePosixPath(r["source_unmasked"]).suffix.lower()
        row = {"pair_id": pid, "identity": r["identity"], "mask": r["mask"], "source": r["source_unmasked"],
               "masked_file": f"masked/{pid}.jpg", "original_file": f"original/{pid}{ext}",
               "region_file": f"region/{pid}.png", "reference_file": "", "reference_source": ref,
               "masked_sha256": _write(tmp / f"masked/{pid}.jpg", jpeg),
               "original_sha256": _write(tmp / f"original/{pid}{ext}", raw), "reference_sha256": ""}
        _write(tmp / row["region_file"], region)
        if ref:
            name = f"references/{pid}{PurePosixPath(ref).suffix.lower()}"
            row.update(reference_file=name, reference_sha256=_write(tmp / name, (faces_dir / ref).read_bytes()))
        out.append(row)
    with open(tmp / PHOTOS_MANIFEST, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=PHOTO_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    with_ref = sum(bool(r["reference_file"]) for r in out)
    summary = {"photos": len(out), "jpeg_quality": dl["photo_quality"], "with_reference": with_ref,
               "without_reference": len(out) - with_ref, "failed": failed}
    (tmp / paths.SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    replace_dir(tmp, out_dir)
    return summary


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_photos(photos_dir: Path) -> list[dict[str, str]]:
    """The rows of ``photos.csv`` ([] when the folder has no test photos)."""
    f = Path(photos_dir) / PHOTOS_MANIFEST
    if not f.is_file():
        return []
    with open(f, newline="") as fh:
        return list(csv.DictReader(fh))
