"""The ``local`` source: a folder or the downloaded zip in Face Mask Lite layout, and zip safety.

``with_mask/with-mask-<mask>-<file>`` pairs with ``without_mask/<file>``. A zip is checked member by member (paths that
escape the target folder, bomb-like sizes and ratios) before anything is extracted, and only the chosen members are.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from unmasking import images, masks, paths
from unmasking.data.pairs import Collected, DataError, Pair, reason_category
from unmasking.images import ImageError
from unmasking.parallel import ordered_map
from unmasking.parallel import progress as progress_bar

FML_MASKED = "with_mask"
FML_UNMASKED = "without_mask"
FML_PREFIX = "with-mask-"
FML_SEEDS = 10_000  # Face Mask Lite holds seed0000 ... seed9999
MAX_ZIP_MEMBER_BYTES = 64 * 1024 * 1024  # a Face Mask Lite PNG is about 1 MB
MAX_ZIP_RATIO = 200  # declared size / compressed size above this is refused as a zip bomb

_WORKER: dict[str, Any] = {}


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
            u = (PurePosixPath(parent) / FML_UNMASKED / match[1]).as_posix() if parent != "." \
                else f"{FML_UNMASKED}/{match[1]}"
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
        return "rejected", reason_category(msg), msg
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
        chosen = _shuffled(index.pairs, seed)[: with_margin(n_pairs, len(index.pairs))]
        dest = Path(raw_dir or paths.RAW_DIR) / f"{local.stem}-extracted"
        safe_extract(local, dest, [n for p in chosen for n in p[:2]])
        return collect_fml(dest, index, chosen, n_pairs, image_size, workers, progress)
    names = [(Path(r) / f).relative_to(local).as_posix() for r, _, fs in os.walk(local) for f in fs]
    index = index_fml(names)
    _require_pairs(index, local)
    chosen = _shuffled(index.pairs, seed)
    return collect_fml(local, index, chosen, n_pairs, image_size, workers, progress)


def with_margin(n: int, available: int) -> int:
    return min(available, n + max(10, n // 20))


def _require_pairs(index: FmlIndex, where: Path) -> None:
    if not index.pairs:
        raise DataError(
            f"{where}: no pairs in Face Mask Lite layout found (expected with_mask/with-mask-<mask>-<file> beside "
            f"without_mask/<file>; found {len(index.unpaired_masked)} unpaired masked, "
            f"{len(index.unpaired_unmasked)} unpaired unmasked and {len(index.ignored)} other files)")
