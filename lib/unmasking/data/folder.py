"""The ``faces`` source: any folder of unmasked faces, masked here the way Face Mask Lite was made.

dlib finds the face and its 68 landmarks, a mask template is pasted (``masks.apply_mask``) and the same face-centred
square is cropped from both images. Sub-folders name identities (LFW layout ``<Person>/<Person>_NNNN.jpg``).
Landmarks are found once per face (phase 1, ``find_faces``); each face is then masked with its template (phase 2,
``mask_faces``), so the in-domain sets mask the same faces with every template without finding them again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from unmasking import images, masks, paths
from unmasking.data.pairs import Collected, DataError, Pair, reason_category
from unmasking.images import ImageError
from unmasking.parallel import ordered_map
from unmasking.parallel import progress as progress_bar


def list_faces(faces_dir: Path) -> list[tuple[str, str]]:
    """(relative path, identity) of every image file under ``faces_dir``, sorted; identity = first sub-folder."""
    out = []
    for root, dirs, files in os.walk(faces_dir):
        dirs.sort()
        for name in sorted(files):
            if images.is_image_name(name):
                rel = (Path(root) / name).relative_to(faces_dir).as_posix()
                parts = PurePosixPath(rel).parts
                out.append((rel, parts[0] if len(parts) > 1 else ""))
    return out


def order_faces(items: list[tuple[str, str]], seed: int, one_per_identity: bool) -> list[tuple[str, str]]:
    """The seeded order in which faces are tried. With ``one_per_identity`` one image per identity is drawn."""
    rng = np.random.default_rng(seed)
    if one_per_identity:
        by_id: dict[str, list[tuple[str, str]]] = {}
        for rel, ident in items:
            by_id.setdefault(ident or rel, []).append((rel, ident))
        keys = sorted(by_id)
        items = [by_id[k][int(rng.integers(len(by_id[k])))] for k in keys]
    return [items[i] for i in rng.permutation(len(items))]


_WORKER: dict[str, Any] = {}


def _init_synth(faces_dir: str, templates: dict[str, masks.Template], image_size: int) -> None:
    _WORKER["faces_dir"] = Path(faces_dir)
    _WORKER["templates"] = templates
    _WORKER["image_size"] = image_size


def find_landmarks(img: np.ndarray) -> np.ndarray:
    """The 68 landmarks of the face nearest the centre of a photo; ``ImageError`` when no face is found."""
    from unmasking import faces

    box = faces.central_face(img)
    if box is None:
        raise ImageError("no face found")
    return faces.landmarks(img, box)


def synthesize(img: np.ndarray, template: masks.Template | np.ndarray | None, image_size: int,
               lm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mask one face photo and crop both images the same way: (masked, unmasked), each (S, S, 3) uint8.

    ``lm``: the face's 68 landmarks when already known (else found here). Raises ``ImageError`` when no face is found
    or the mask does not land inside the crop.
    """
    lm = find_landmarks(img) if lm is None else lm
    masked = masks.apply_mask(img, lm, template)
    square = masks.crop_box(lm)
    m = images.resize(masks.crop(masked, square), image_size)
    u = images.resize(masks.crop(img, square), image_size)
    if not masks.difference_mask(m, u).any():
        raise ImageError("the mask does not land inside the face crop")
    return m, u


def _read_face(rel: str) -> tuple[bytes, np.ndarray]:
    data = (_WORKER["faces_dir"] / rel).read_bytes()
    img = images.decode(data, rel)
    images.check_size(img, rel)
    return data, img


def _rejection(rel: str, e: Exception) -> tuple[str, str, str]:
    if isinstance(e, OSError):
        return "rejected", "unreadable file", str(e)
    msg = str(e)
    reason = msg.split(": ", 1)[1] if msg.startswith(rel + ": ") else msg
    return "rejected", reason_category(reason), reason


def _landmarks_one(rel: str) -> tuple[str, Any, Any]:
    """Phase 1 of a face: ("ok", sha256 of the file, landmarks) or ("rejected", category, reason)."""
    try:
        data, img = _read_face(rel)
        lm = find_landmarks(img)
    except (ImageError, OSError) as e:
        return _rejection(rel, e)
    return "ok", hashlib.sha256(data).hexdigest(), lm


def _synth_one(task: tuple[str, np.ndarray, str]) -> tuple[str, Any, Any]:
    """Phase 2 of a face: ("ok", template name, (masked, unmasked)) or ("rejected", category, reason)."""
    rel, lm, name = task
    try:
        _, img = _read_face(rel)
        pair = synthesize(img, _WORKER["templates"].get(name), _WORKER["image_size"], lm)
    except (ImageError, OSError) as e:
        return _rejection(rel, e)
    return "ok", name, pair


@dataclass
class FoundFaces:
    """Phase 1 over a folder of faces: the first faces with landmarks, in the seeded order."""

    faces_dir: Path
    faces: list[tuple[str, str, np.ndarray]]  # (relative path, identity, landmarks)
    col: Collected  # rejections and counts; no pairs yet


def find_faces(faces_dir: Path, n_pairs: int, seed: int, one_per_identity: bool, workers: int,
               progress: bool = True) -> FoundFaces:
    """Find faces and their landmarks in a folder, in the seeded order, until ``n_pairs`` distinct ones are found."""
    if not faces_dir.is_dir():
        raise DataError(f"faces folder {faces_dir} does not exist (set FACES=<folder of face images>)")
    items = list_faces(faces_dir)
    if not items:
        raise DataError(f"faces folder {faces_dir} holds no image files ({', '.join(images.IMAGE_EXTENSIONS)})")
    ordered = order_faces(items, seed, one_per_identity)
    col = Collected(found=len(items))
    col.extra["identities"] = len({i or r for r, i in items})
    col.extra["candidates"] = len(ordered)
    ident = dict(ordered)
    seen: dict[str, str] = {}
    found: list[tuple[str, str, np.ndarray]] = []
    no_face = 0
    bar = progress_bar(len(ordered), "finding faces", progress)
    gen = ordered_map(_landmarks_one, [r for r, _ in ordered], workers, _init_synth, (str(faces_dir), {}, 0))
    try:
        for rel, (status, key, payload) in zip((r for r, _ in ordered), gen):
            col.tried += 1
            bar.update(1)
            if status == "rejected":
                no_face += key == "no face found"
                col.reject(rel, key, payload if payload != key else "")
            elif key in seen:
                col.reject(rel, "duplicate file", f"same bytes as {seen[key]}")
            else:
                seen[key] = rel
                found.append((rel, ident[rel], payload))
                if len(found) >= n_pairs:
                    break
    finally:
        gen.close()
        bar.close()
    decodable = len(found) + no_face + sum(r["reason"] == "duplicate file" for r in col.rejected)
    col.extra["landmark_success_rate"] = round((decodable - no_face) / decodable, 4) if decodable else 0.0
    col.extra["faces_found"] = decodable - no_face
    return FoundFaces(faces_dir, found, col)


def choose_templates(splits: list[str], train_names: list[str], test_names: list[str], seed: int) -> list[str]:
    """One template per pair, drawn with the seed: from ``train_names`` for train/val pairs, ``test_names`` for test."""
    rng = np.random.default_rng(seed + 2)
    out = []
    for split in splits:
        names = test_names if split == "test" else train_names
        out.append(names[int(rng.integers(len(names)))])
    return out


def mask_faces(found: FoundFaces, names: list[str], templates: dict[str, masks.Template], image_size: int,
               workers: int, progress: bool = True) -> tuple[list[Pair | None], list[dict[str, str]]]:
    """Phase 2: mask face i with template ``names[i]`` ("drawn": the drawn mask); a pair or None per face, and the
    rejections."""
    tasks = [(rel, lm, name) for (rel, _, lm), name in zip(found.faces, names)]
    pairs: list[Pair | None] = []
    rejected: list[dict[str, str]] = []
    bar = progress_bar(len(tasks), "masking faces", progress)
    for (rel, ident, _), (status, key, payload) in zip(
            found.faces, ordered_map(_synth_one, tasks, workers, _init_synth,
                                     (str(found.faces_dir), templates, image_size))):
        bar.update(1)
        if status == "rejected":
            rejected.append({"file": rel, "reason": key, "detail": payload if payload != key else ""})
            pairs.append(None)
        else:
            pairs.append(Pair(*payload, rel, rel, ident, key))
    bar.close()
    return pairs, rejected


def template_library(dl: dict[str, Any]) -> tuple[dict[str, masks.Template], list[str], list[str]]:
    """The mask templates of the ``download`` section: (library, train/val names, test names).

    ``mask`` (an overlay PNG, a ``masks.cfg`` or a folder; "" = the project's own drawn masks) and ``templates`` (more
    templates that ``train_masks``/``test_masks``/``robustness_masks`` may name) make the library, with the drawn
    masks always in it; an empty name list means every template of ``mask``.
    """
    library: dict[str, masks.Template] = {}
    try:
        if dl["mask"]:
            found = masks.find_templates(paths.resolve(dl["mask"]))
            library.update(found)
            own = sorted(found)
        else:
            own = sorted(masks.DRAWN)
        more = paths.resolve(dl["templates"]) if dl.get("templates") else None
        if more is not None:
            for name, t in masks.find_templates(more).items():
                library.setdefault(name, t)
        for name, t in masks.drawn_templates().items():
            library.setdefault(name, t)
        train = [t.name for t in masks.select_templates(library, dl["train_masks"], "download.train_masks")] \
            if dl["train_masks"] else own
        test = [t.name for t in masks.select_templates(library, dl["test_masks"], "download.test_masks")] \
            if dl["test_masks"] else own
    except ImageError as e:
        raise DataError(f"{e} (set MASK=<overlay.png | masks.cfg | folder>, or leave MASK empty for the project's "
                        "own drawn masks)") from None
    return library, train, test
