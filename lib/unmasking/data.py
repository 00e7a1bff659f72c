"""The data stage: three sources, one seeded subset of masked/unmasked pairs, its split and manifest.

Sources (``download.source``):

* ``kaggle`` -- Face Mask Lite through the Kaggle API. Only the chosen pairs are downloaded, file by file, into
  ``data/raw/face-mask-lite/`` (a rerun skips what is already there), never the whole 21 GB archive.
* ``local``  -- a folder or the downloaded zip in Face Mask Lite layout (``with_mask/with-mask-<mask>-<file>`` paired
  with ``without_mask/<file>``). A zip is checked member by member before anything is extracted.
* ``faces``  -- any folder of unmasked faces: dlib finds the face and its 68 landmarks, a mask is pasted the way Face
  Mask Lite did (``masks.paste_template``) or drawn (``masks.draw_mask``), and the same face-centred square is cropped
  from both images. Sub-folders name identities (LFW layout ``<Person>/<Person>_NNNN.jpg``).

Every input that is not used is counted with its file name and reason in the summary; the stage fails with a clear
message only when fewer than ``min_pairs`` usable pairs remain. Outputs are written to a temporary folder and renamed
into place, so an interrupted run never leaves a subset that looks complete.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from unmasking import images, masks, paths
from unmasking.parallel import ordered_map
from unmasking.parallel import progress as progress_bar
from unmasking.images import ImageError

FML_MASKED = "with_mask"
FML_UNMASKED = "without_mask"
FML_PREFIX = "with-mask-"
FML_SEEDS = 10_000  # Face Mask Lite holds seed0000 ... seed9999
MAX_ZIP_MEMBER_BYTES = 64 * 1024 * 1024  # a Face Mask Lite PNG is about 1 MB
MAX_ZIP_RATIO = 200  # declared size / compressed size above this is refused as a zip bomb
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = [
    "pair_id", "split", "identity", "mask", "source_masked", "source_unmasked",
    "masked_file", "unmasked_file", "masked_sha256", "unmasked_sha256", "mask_coverage",
]


class DataError(RuntimeError):
    """The data stage cannot go on; the message says what to do."""


class CredentialsError(DataError):
    """No Kaggle credentials were found."""


# --------------------------------------------------------------------------------------------------------------------
# Pairs


@dataclass
class Pair:
    """One masked/unmasked pair, already cropped and resized."""

    masked: np.ndarray
    unmasked: np.ndarray
    source_masked: str
    source_unmasked: str
    identity: str = ""
    mask: str = ""


@dataclass
class Collected:
    """What a source produced: the usable pairs, in the seeded order, and everything it did not use."""

    pairs: list[Pair] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    found: int = 0
    tried: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def reject(self, file: str, reason: str, detail: str = "") -> None:
        self.rejected.append({"file": file, "reason": reason, "detail": detail})


def coverage(pair: Pair) -> float:
    """Share of the pixels that the mask changes (where masked and unmasked differ)."""
    return float(masks.difference_mask(pair.masked, pair.unmasked).mean())


# --------------------------------------------------------------------------------------------------------------------
# Source: a folder of unmasked faces


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
    return "rejected", _reason_category(reason), reason


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


def _reason_category(reason: str) -> str:
    for key in ("empty file", "not an image", "truncated or corrupt", "too small", "over the", "decompression bomb",
                "no face found", "does not land"):
        if key in reason:
            return {"over the": "too large", "does not land": "mask outside the crop"}.get(key, key)
    return reason


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
            found.faces, ordered_map(_synth_one, tasks, workers, _init_synth, (str(found.faces_dir), templates, image_size))):
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

    ``mask`` (an overlay PNG, a ``masks.cfg`` or a folder; "" = the drawn mask) and ``templates`` (more templates that
    ``train_masks``/``test_masks``/``robustness_masks`` may name) make the library; an empty name list means every
    template of ``mask``.
    """
    library: dict[str, masks.Template] = {}
    own: list[str] = []
    try:
        if dl["mask"]:
            found = masks.find_templates(paths.resolve(dl["mask"]))
            library.update(found)
            own = sorted(found)
        else:
            own = ["drawn"]
        more = paths.resolve(dl["templates"]) if dl.get("templates") else None
        if more is not None and more.exists():  # a missing folder only matters when a list names its templates
            for name, t in masks.find_templates(more).items():
                library.setdefault(name, t)
        train = [t.name for t in masks.select_templates(library, dl["train_masks"], "download.train_masks")] \
            if dl["train_masks"] else own
        test = [t.name for t in masks.select_templates(library, dl["test_masks"], "download.test_masks")] \
            if dl["test_masks"] else own
    except ImageError as e:
        raise DataError(f"{e} (set MASK=<overlay.png | masks.cfg | folder>, or MASK= for the drawn mask)") from None
    return library, train, test


# --------------------------------------------------------------------------------------------------------------------
# Source: a local copy in Face Mask Lite layout (folder or zip)


def _member_is_safe(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not (p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or (p.parts and ":" in p.parts[0]))


def check_zip(zf: zipfile.ZipFile, max_member_bytes: int = MAX_ZIP_MEMBER_BYTES) -> None:
    """Refuse a zip with a member that escapes the target folder or is bomb-like; names the member."""
    for info in zf.infolist():
        if not _member_is_safe(info.filename):
            raise DataError(f"zip member {info.filename!r} escapes the target folder; refusing to extract this zip")
        if info.file_size > max_member_bytes:
            raise DataError(f"zip member {info.filename!r} declares {info.file_size:,} bytes, over the "
                            f"{max_member_bytes:,}-byte limit; refusing it as a possible zip bomb")
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 1 << 20:
            raise DataError(f"zip member {info.filename!r} expands {info.file_size / info.compress_size:.0f}x; "
                            "refusing it as a possible zip bomb")


def safe_extract(zip_path: Path, dest: Path, members: Iterable[str] | None = None,
                 max_member_bytes: int = MAX_ZIP_MEMBER_BYTES) -> list[Path]:
    """Extract ``members`` (all when None) of a zip into ``dest`` after checking every member; return the paths."""
    dest = Path(dest).resolve()
    out = []
    with zipfile.ZipFile(zip_path) as zf:
        check_zip(zf, max_member_bytes)
        wanted = set(members) if members is not None else None
        for info in zf.infolist():
            if info.is_dir() or (wanted is not None and info.filename not in wanted):
                continue
            target = (dest / info.filename).resolve()
            if dest not in target.parents:
                raise DataError(f"zip member {info.filename!r} escapes the target folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                remaining = max_member_bytes + 1
                while chunk := src.read(1 << 20):
                    remaining -= len(chunk)
                    if remaining <= 0:
                        raise DataError(f"zip member {info.filename!r} expands past its declared size limit")
                    dst.write(chunk)
            out.append(target)
    return out


@dataclass
class FmlIndex:
    """The pairs found in a Face Mask Lite-layout listing, and the files that have no partner."""

    pairs: list[tuple[str, str, str]]  # (masked path, unmasked path, mask name), relative, sorted
    unpaired_masked: list[str]
    unpaired_unmasked: list[str]
    ignored: list[str]


def index_fml(names: Iterable[str]) -> FmlIndex:
    """Pair the files of a Face Mask Lite layout given as relative POSIX paths (from a folder or a zip listing).

    ``with_mask/with-mask-<mask>-<file>`` pairs with ``without_mask/<file>`` in the same parent folder; the mask name is
    whatever lies between ``with-mask-`` and a file name that exists in ``without_mask/``.
    """
    masked: dict[str, list[str]] = {}
    unmasked: dict[str, set[str]] = {}
    ignored = []
    for n in sorted(names):
        p = PurePosixPath(n)
        if len(p.parts) < 2 or not images.is_image_name(p.name):
            if not n.endswith("/"):
                ignored.append(n)
            continue
        parent = p.parent.parent.as_posix()
        if p.parent.name == FML_MASKED:
            masked.setdefault(parent, []).append(n)
        elif p.parent.name == FML_UNMASKED:
            unmasked.setdefault(parent, set()).add(p.name)
        else:
            ignored.append(n)
    pairs, unpaired_m, used_u = [], [], set()
    for parent, files in masked.items():
        names_u = unmasked.get(parent, set())
        for n in files:
            stem = PurePosixPath(n).name
            match = None
            if stem.startswith(FML_PREFIX):
                rest = stem[len(FML_PREFIX):]
                # the file name is the longest suffix after a '-' that exists in without_mask/
                for i in range(len(rest)):
                    if (i == 0 or rest[i - 1] == "-") and rest[i:] in names_u and i > 0:
                        match = (rest[: i - 1], rest[i:])
                        break
            if match is None:
                unpaired_m.append(n)
                continue
            u = (PurePosixPath(parent) / FML_UNMASKED / match[1]).as_posix() if parent != "." else f"{FML_UNMASKED}/{match[1]}"
            pairs.append((n, u, match[0]))
            used_u.add(u)
    all_u = sorted(((PurePosixPath(p) / FML_UNMASKED / f).as_posix() if p != "." else f"{FML_UNMASKED}/{f}")
                   for p, fs in unmasked.items() for f in fs)
    unpaired_u = [u for u in all_u if u not in used_u]
    return FmlIndex(sorted(pairs), unpaired_m, unpaired_u, ignored)


def _init_local(root: str, image_size: int) -> None:
    _WORKER["root"] = Path(root)
    _WORKER["image_size"] = image_size


def _load_local_pair(item: tuple[str, str, str]) -> tuple[str, Any, Any]:
    mrel, urel, _ = item
    root, size = _WORKER["root"], _WORKER["image_size"]
    try:
        m = images.read_rgb(root / mrel)
        u = images.read_rgb(root / urel)
        images.check_size(m, mrel)
        if m.shape != u.shape:
            raise ImageError(f"{mrel}: size {m.shape[1]}x{m.shape[0]} differs from its unmasked image "
                             f"({u.shape[1]}x{u.shape[0]})")
        m, u = images.resize(m, size), images.resize(u, size)
        if not masks.difference_mask(m, u).any():
            raise ImageError(f"{mrel}: masked and unmasked images are identical")
    except ImageError as e:
        msg = str(e)
        return "rejected", _reason_category(msg), msg
    return "ok", None, (m, u)


def collect_fml(root: Path, index: FmlIndex, chosen: list[tuple[str, str, str]], n_pairs: int, image_size: int,
                workers: int, progress: bool = True) -> Collected:
    """Load up to ``n_pairs`` of the ``chosen`` Face Mask Lite pairs (already in the seeded order) from ``root``."""
    col = Collected(found=len(index.pairs))
    for n in index.unpaired_masked:
        col.reject(n, "unpaired masked image", "no matching file in without_mask/")
    for n in index.unpaired_unmasked:
        col.reject(n, "unpaired unmasked image", "no matching file in with_mask/")
    for n in index.ignored:
        col.reject(n, "not in Face Mask Lite layout", "expected with_mask/ or without_mask/ image files")
    bar = progress_bar(len(chosen), "loading pairs", progress)
    gen = ordered_map(_load_local_pair, chosen, workers, _init_local, (str(root), image_size))
    try:
        for item, (status, key, payload) in zip(chosen, gen):
            col.tried += 1
            bar.update(1)
            if status == "rejected":
                col.reject(item[0], key, payload)
                continue
            m, u = payload
            col.pairs.append(Pair(m, u, item[0], item[1], "", item[2]))
            if len(col.pairs) >= n_pairs:
                break
    finally:
        gen.close()
        bar.close()
    return col


def _shuffled(seq: list, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [seq[i] for i in rng.permutation(len(seq))]


def collect_local(local: Path, n_pairs: int, image_size: int, seed: int, workers: int,
                  raw_dir: Path | None = None, progress: bool = True) -> Collected:
    """A local copy: a folder in Face Mask Lite layout, or its zip (selected members extracted under ``raw_dir``)."""
    if not local.exists():
        raise DataError(f"local copy {local} does not exist (set LOCAL=<folder or zip in Face Mask Lite layout>)")
    if local.is_file():
        if not zipfile.is_zipfile(local):
            raise DataError(f"{local} is neither a folder nor a zip file")
        with zipfile.ZipFile(local) as zf:
            check_zip(zf)
            index = index_fml(i.filename for i in zf.infolist() if not i.is_dir())
        _require_pairs(index, local)
        chosen = _shuffled(index.pairs, seed)[: _with_margin(n_pairs, len(index.pairs))]
        dest = Path(raw_dir or paths.RAW_DIR) / f"{local.stem}-extracted"
        safe_extract(local, dest, [n for p in chosen for n in p[:2]])
        return collect_fml(dest, index, chosen, n_pairs, image_size, workers, progress)
    names = [(Path(r) / f).relative_to(local).as_posix() for r, _, fs in os.walk(local) for f in fs]
    index = index_fml(names)
    _require_pairs(index, local)
    chosen = _shuffled(index.pairs, seed)
    return collect_fml(local, index, chosen, n_pairs, image_size, workers, progress)


def _with_margin(n: int, available: int) -> int:
    return min(available, n + max(10, n // 20))


def _require_pairs(index: FmlIndex, where: Path) -> None:
    if not index.pairs:
        raise DataError(
            f"{where}: no pairs in Face Mask Lite layout found (expected with_mask/with-mask-<mask>-<file> beside "
            f"without_mask/<file>; found {len(index.unpaired_masked)} unpaired masked, "
            f"{len(index.unpaired_unmasked)} unpaired unmasked and {len(index.ignored)} other files)")


# --------------------------------------------------------------------------------------------------------------------
# Source: Kaggle


class KaggleClient(Protocol):
    """The part of ``kaggle.api.KaggleApi`` the study uses (the boundary that tests replace with a fake)."""

    def authenticate(self) -> None: ...

    def dataset_download_file(self, dataset: str, file_name: str, path: str | None = None, force: bool = False,
                              quiet: bool = True, licenses: list | None = None, unzip: bool = False) -> bool: ...


CREDENTIALS_HELP = (
    "Kaggle credentials not found. To download Face Mask Lite, set KAGGLE_USERNAME and KAGGLE_KEY (or "
    "KAGGLE_API_TOKEN) in the environment, or save your token as ~/.kaggle/kaggle.json (from "
    "kaggle.com -> Settings -> API -> Create New Token). To run without Kaggle: "
    "make repro FACES=<folder of face photos> [MASK=<overlay.png>], or make repro LOCAL=<Face Mask Lite folder or zip>."
)


def kaggle_credentials_present(env: dict[str, str] | None = None, home: Path | None = None) -> bool:
    """Whether any Kaggle credential is configured (environment or config folder); reads no secret value out."""
    env = dict(os.environ if env is None else env)
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    cfg = Path(env.get("KAGGLE_CONFIG_DIR") or (Path(home or Path.home()) / ".kaggle"))
    return any((cfg / n).is_file() for n in ("kaggle.json", "access_token"))


def scrub(text: str, env: dict[str, str] | None = None) -> str:
    """Remove any Kaggle secret value from ``text`` (for messages built from third-party exceptions)."""
    env = dict(os.environ if env is None else env)
    for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME"):
        v = env.get(k)
        if v and len(v) >= 3:
            text = text.replace(v, "***")
    return text


def real_kaggle_client() -> KaggleClient:
    """The real Kaggle API client, authenticated; ``CredentialsError`` with what to set when it cannot be."""
    import contextlib
    import io

    if not kaggle_credentials_present():
        raise CredentialsError(CREDENTIALS_HELP)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except (Exception, SystemExit):
        raise CredentialsError(CREDENTIALS_HELP) from None
    return api


def fml_names(seed_number: int, mask: str = "default-mask") -> tuple[str, str]:
    """Face Mask Lite's file names of one pair: (masked, unmasked)."""
    f = f"seed{seed_number:04d}.png"
    return f"{FML_MASKED}/{FML_PREFIX}{mask}-{f}", f"{FML_UNMASKED}/{f}"


def download_kaggle(client: KaggleClient, dataset: str, n_pairs: int, seed: int, dest: Path,
                    progress: bool = True) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
    """Download only the seeded choice of pairs (plus a small margin), file by file; skip files already there.

    Returns the pairs present locally (seeded order) and the files that could not be downloaded.
    """
    chosen = np.random.default_rng(seed).permutation(FML_SEEDS)[: _with_margin(n_pairs, FML_SEEDS)]
    pairs, failed = [], []
    bar = progress_bar(len(chosen), "downloading pairs", progress)
    try:
        for s in chosen:
            ok = True
            names = fml_names(int(s))
            for name in names:
                target = dest / name
                if target.is_file() and target.stat().st_size > 0:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    client.dataset_download_file(dataset, name, path=str(target.parent), quiet=True, unzip=True)
                except (ConnectionError, TimeoutError, OSError) as e:
                    raise DataError(
                        f"Kaggle could not be reached ({type(e).__name__}: {scrub(str(e))}). Check the network, or "
                        "run offline with make repro FACES=<folder> or LOCAL=<copy>.") from None
                except Exception as e:  # the API reports a missing file or a refused request
                    failed.append({"file": name, "reason": "download failed", "detail": scrub(f"{type(e).__name__}: {e}")})
                    ok = False
                    continue
                if not target.is_file():
                    failed.append({"file": name, "reason": "download failed", "detail": "the API wrote no file"})
                    ok = False
            if ok:
                pairs.append((names[0], names[1], "default-mask"))
            bar.update(1)
            if len(failed) > max(20, n_pairs // 5) and not pairs:
                raise DataError(f"Kaggle downloads keep failing ({failed[-1]['detail']}); nothing was downloaded")
    finally:
        bar.close()
    return pairs, failed


def collect_kaggle(client: KaggleClient | None, dataset: str, n_pairs: int, image_size: int, seed: int,
                   workers: int, raw_dir: Path | None = None, progress: bool = True) -> Collected:
    """Face Mask Lite from Kaggle: download the chosen pairs into ``raw_dir``, then load them like a local copy."""
    client = client if client is not None else real_kaggle_client()
    dest = Path(raw_dir or paths.RAW_DIR) / "face-mask-lite"
    pairs, failed = download_kaggle(client, dataset, n_pairs, seed, dest, progress)
    index = FmlIndex(pairs, [], [], [])
    col = collect_fml(dest, index, pairs, n_pairs, image_size, workers, progress)
    col.found = FML_SEEDS
    col.rejected.extend(failed)
    return col


# --------------------------------------------------------------------------------------------------------------------
# Split, manifest, summary


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


def write_subset(out_dir: Path, col: Collected, splits: list[str], summary: dict[str, Any], prefix: str = "pair") -> dict:
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
    _replace_dir(tmp, out_dir)
    return summary


def _replace_dir(tmp: Path, out_dir: Path) -> None:
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
    template of ``robustness_masks`` into ``out_dir/<template>/`` (landmarks found once). Returns {template: summary}.
    """
    t0 = time.perf_counter()
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
    _replace_dir(tmp, out_dir)
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


# --------------------------------------------------------------------------------------------------------------------
# Reading the subset back


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


def check_pair(masked: np.ndarray, unmasked: np.ndarray) -> dict[str, float]:
    """Does a pair differ only inside one mask-shaped region? For the explore stage's sanity check.

    Returns the coverage (share of differing pixels), the share of differing pixels outside the largest connected
    region of differences (dilated by 2 px), and the vertical centre of the differences (0 = top, 1 = bottom).
    A good pair has coverage > 0, ``outside`` near 0 and a centre below the middle.
    """
    import cv2

    diff = masks.difference_mask(masked, unmasked)
    if not diff.any():
        return {"coverage": 0.0, "outside": 0.0, "centre_y": float("nan"), "ok": False}
    n, labels, stats, _ = cv2.connectedComponentsWithStats(diff.astype(np.uint8))
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = cv2.dilate((labels == biggest).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    outside = float((diff & ~blob).sum() / diff.sum())
    centre_y = float(np.nonzero(diff)[0].mean() / diff.shape[0])
    return {"coverage": float(diff.mean()), "outside": outside, "centre_y": centre_y,
            "ok": bool(outside < 0.01 and centre_y > 0.5)}


def data_metrics(summary: dict[str, Any], indomain: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The small, committed data-stage metrics (``reports/data.json``) from the subset summaries (with timings)."""
    keys = ("source", "image_size", "found", "tried", "used", "rejected", "landmark_success_rate", "splits",
            "mask_coverage", "masks_used", *TIMING_KEYS, "rejected_by_reason")
    out = {"subset": {k: summary[k] for k in keys if k in summary}}
    if indomain:
        out["indomain"] = {name: {k: s[k] for k in keys if k in s} for name, s in indomain.items()}
    return out
