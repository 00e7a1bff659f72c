"""The sets the evaluation scores (``evaluate.PairSet``): the study's, from ``data/``, and a user's folder of pairs.

The study's sets (``study_sets``), in this order:

* ``test`` -- the test split, cropped as the training data were (landmarks found on the unmasked photo);
* ``test_detected`` -- the real-use test: the same faces masked at the photo's own resolution and saved as JPEG
  (``data/photos``), the crop taken from landmarks found on the *masked* photo (by the study's masked-face landmark
  model where the ``detector`` stage trained one), as ``unmask predict`` must; faces that are not found are counted,
  by detector;
* ``photos`` -- the photo level: the steps of ``unmask predict`` (``photos.find_faces``, ``photos.unmask_faces``:
  the crop refined ``photos.REFINE`` times, none by default, the estimated region only pasted back) on the largest
  face of each photo, scored at the photo's resolution against the original photo over the exact masked region
  (``paste="box"`` pastes the whole crop with a soft edge instead, as ``unmask predict`` did before it used the
  model's mask estimate); ``test_detected`` holds each model's output for the first crop;
* ``test_region`` -- the ``test`` pairs scored over the same exact masked region as the photo level (the region of
  the full-size photo, mapped into the test crop), not over the pixels where the 128 px crops differ: the crop-level
  figure the photo level compares with on equal terms;
* ``indomain/<template>`` -- the generated faces, masked with each template of ``download.robustness_masks``; the
  first template's set (``default-mask`` in the committed run) is also scored for identity (same-photo, on the first
  ``evaluate.identity_pairs`` faces) and realism.

Only on request (``only`` names them, never in the pipeline's evaluation), the sets a comparison of other settings is
decided on: ``val`` -- the validation split, cropped as the test split is (``python -m unmasking.evaluate --sets
val``); ``val_detected`` and ``val_photos`` -- the real-use and photo-level sets of the validation split's photos,
masked at full size with their own templates and saved as JPEG in memory, exactly as the data stage makes the test
photos (``val_photos``).

Identity against another photo of the same person (verification) is scored on ``test``, ``test_detected`` and
``photos`` wherever ``data/photos`` holds a reference photo; the realism test (``metrics.c2st``) runs on ``test`` and
the first generated-face set.

``folder_sets`` makes the sets of a user's folder in Face Mask Lite layout for ``unmask evaluate``: crops found on the
unmasked image (the masked region from ``metrics.lossy_region`` when either image is a JPEG), or with ``photos`` the
real-use and photo-level sets, found on the masked photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unmasking import data, images, masks, metrics, paths, photos
from unmasking.evaluate import BASELINES, PairSet, baseline_outputs
from unmasking.images import ImageError
from unmasking.parallel import ordered_map_with_progress

LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


def robustness_sets(indomain_dir: Path, order: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """The in-domain test sets ``indomain_dir/<template>/``, in ``order`` (then by name)."""
    d = Path(indomain_dir)
    sets = [s for s in sorted(d.iterdir()) if (s / paths.MANIFEST_NAME).is_file()] if d.is_dir() else []
    rank = {name: i for i, name in enumerate(order)}
    return sorted(sets, key=lambda s: (rank.get(s.name, len(rank)), s.name))


def _reference_one(path: str) -> np.ndarray | None:
    """The face chip of a reference photo's central face (None when no face is found or the file is unreadable)."""
    from unmasking import faces

    try:
        img = images.read_rgb(path)
    except ImageError:
        return None
    boxes, _ = faces.find_face_boxes(img, upsample=1)
    if not boxes:
        return None
    h, w = img.shape[:2]
    box = min(boxes, key=lambda b: ((b[0] + b[2]) / 2 - w / 2) ** 2 + ((b[1] + b[3]) / 2 - h / 2) ** 2)
    return faces.face_chips([img], box)[0]


def reference_embeddings(photos_dir: Path, rows: list[dict[str, str]], workers: int = 2, progress: bool = True
                         ) -> dict[str, np.ndarray | None]:
    """The dlib embedding of each pair's reference photo (its central face; None when none is found): the faces
    found and their chips made in ``workers`` processes, the embeddings in this one, in one batch."""
    from unmasking import dlibnet

    with_ref = [r for r in rows if r["reference_file"]]
    chips = ordered_map_with_progress(_reference_one, [str(Path(photos_dir) / r["reference_file"]) for r in with_ref],
                                      len(with_ref), "reference photos", workers, progress, start="spawn")
    found = [c for c in chips if c is not None]
    embs = iter(dlibnet.descriptors(np.stack(found)) if found else [])
    return {r["pair_id"]: None if c is None else next(embs) for r, c in zip(with_ref, chips)}


def _find_one(task: tuple[np.ndarray, int, str, int, str | None]) -> list[photos.Face]:
    img, size, detector, upsample, masked = task
    return photos.find_faces(img, size, "detect", detector, upsample, masked)


def val_photos(params: dict[str, Any], data_dir: Path, progress: bool = True
               ) -> tuple[list[str], list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The validation split's photos made as the data stage makes the test photos (``data.mask_photos``, as
    ``data.build_photos`` does), in memory: (pair ids, templates, masked JPEG photos, originals, exact regions);
    photos whose face is not found are left out."""
    rows = [r for r in data.read_manifest(Path(data_dir) / "subset") if r["split"] == "val"]
    made = data.mask_photos(params["download"], rows, params["evaluate"].get("workers", 2), progress)
    ok = [(r, m) for r, m in zip(rows, made) if not isinstance(m, str)]
    return ([r["pair_id"] for r, _ in ok], [r["mask"] for r, _ in ok],
            [images.decode(m[1], r["pair_id"]) for r, m in ok], [images.decode(m[0], r["pair_id"]) for r, m in ok],
            [images.decode(m[2], r["pair_id"])[..., 0] > 127 for r, m in ok])


def region_crop(region: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """A photo's masked region (H, W) bool, cut at ``box`` and resized to ``size`` as the crop is (bool)."""
    return images.resize(masks.crop(region.astype(np.uint8)[..., None].repeat(3, -1) * 255, box), size)[..., 0] > 127


def _true_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """The test crop's square on an original photo, as the data stage cut it (``data.find_landmarks``)."""
    try:
        return masks.crop_box(data.find_landmarks(img))
    except ImageError:
        return None


def region_set(test: PairSet, photo_ids: list[str], originals: list[np.ndarray], regions: list[np.ndarray],
               workers: int = 2, progress: bool = True) -> PairSet:
    """``test_region``: the pairs of ``test`` whose photo is in ``photo_ids``, with the masked region of each
    photo (``regions``, full size) mapped into its crop; a pair is left out when the crop cut from its original photo
    is not the test pair's own truth, byte for byte."""
    size = test.unmasked.shape[1]
    boxes = ordered_map_with_progress(_true_box, originals, len(originals), "test crops on the photos", workers,
                                      progress, chunksize=4, start="spawn")
    at = {pid: k for k, pid in enumerate(test.ids)}
    sel, reg = [], []
    for pid, img, region, box in zip(photo_ids, originals, regions, boxes):
        k = at.get(pid)
        if k is None or box is None or not np.array_equal(images.resize(masks.crop(img, box), size),
                                                          test.unmasked[k]):
            continue
        sel.append(k)
        reg.append(region_crop(region, box, size))
    info = {k: v for k, v in test.info.items() if k != "with_reference"}
    info.update(region="the exact masked region of the full-size photo, mapped into the crop, as the photo level is "
                "scored", left_out=len(test.ids) - len(sel))
    return PairSet("test_region", test.masked[sel], test.unmasked[sel], [test.ids[k] for k in sel],
                   [test.masks[k] for k in sel], regions=np.stack(reg) if reg else None, same_photo_n=0, info=info)


def photo_sets(prefix: str, ids: list[str], mask_names: list[str], masked: list[np.ndarray],
               originals: list[np.ndarray], regions: list[np.ndarray], refs: list[np.ndarray | None] | None,
               trained: dict[str, Any], ep: dict[str, Any], size: int, baselines: bool = True,
               same_photo: bool = False, progress: bool = True, masked_detector: Path | None = None,
               paste: str = "region", refine: int | None = None, shift: float | None = None) -> list[PairSet]:
    """The real-use crop set (``<prefix>_detected``) and the photo-level set (``photos``) of full-size masked photos,
    from one detection pass on the masked photos (the largest face of each). A model whose size is not ``size``
    unmasks the crops at its own size; its crop-level outputs are resized to ``size`` to be scored. ``paste``:
    ``"region"`` replaces the model's estimated mask region only, ``"box"`` the whole crop; ``refine``: the passes
    that crop again and ``shift`` the neighbouring crops' step (``photos.unmask_faces``; None: ``photos.REFINE``,
    ``photos.SHIFT``)."""
    from unmasking import faces, models

    if paste not in photos.PASTES:
        raise ValueError(f"paste must be one of {', '.join(photos.PASTES)}, got {paste!r}")
    refine = photos.REFINE if refine is None else refine
    shift = photos.SHIFT if shift is None else shift
    md = str(masked_detector) if masked_detector else None
    fitted_by = "the masked-face landmark model" if faces.masked_landmarks(md) is not None else "dlib's landmark model"
    found = ordered_map_with_progress(_find_one, ((m, size, ep["detector"], ep["upsample"], md) for m in masked),
                                      len(masked), "finding masked faces", ep.get("workers", 2), progress, chunksize=2,
                                      start="spawn")
    hit = [i for i, fs in enumerate(found) if fs]
    face = {i: found[i][0] for i in hit}
    by = {d: sum(face[i].detector == d for i in hit) for d in ("hog", "masked-hog", "cnn")}
    info = {"photos": len(masked), "landmarks": fitted_by, "detected": len(hit),
            "detection_rate": round(len(hit) / max(1, len(masked)), 4),
            "found_by": by, "hog_only_rate": round(by["hog"] / max(1, len(masked)), 4),
            "not_detected": [ids[i] for i in range(len(masked)) if i not in face]}
    photos_name = "photos" if prefix == "test" else f"{prefix}_photos"
    if not hit:  # nothing to score, but the detection rate is a result
        empty = np.zeros((0, size, size, 3), np.uint8)
        return [PairSet(f"{prefix}_detected", empty, empty, [], [], outputs={}, same_photo_n=0, info=info),
                PairSet(photos_name, [], [], [], [], outputs={}, same_photo_n=0, info=info)]
    crops = np.stack([face[i].crop for i in hit])
    truth = np.stack([images.resize(masks.crop(originals[i], face[i].box), size) for i in hit])
    region_crops = np.stack([region_crop(regions[i], face[i].box, size) for i in hit])
    # each model unmasks the photos exactly as ``unmask predict`` does (at its own size, refined, pasted); its
    # outputs for the first crops are the crop-level set's, scored at ``size``
    imgs = [masked[i] for i in hit]
    done = {n: photos.unmask_faces(m, imgs, [[face[i]] for i in hit], models.flip_averaged(m, ep), ep["batch_size"],
                                   refine, paste, shift) for n, m in trained.items()}
    crop_out = {b: baseline_outputs(b, crops, truth, ep["telea_radius"], region_crops, ep.get("workers", 2))
                for b in (BASELINES if baselines else ("masked_input",))}
    crop_out.update({n: np.stack([images.resize(u.first[0], size) for u in d]) for n, d in done.items()})
    photo_out = {"masked_input": imgs, **{n: [u.image for u in d] for n, d in done.items()}}
    sel_refs = [refs[i] for i in hit] if refs else None
    common = {"ids": [ids[i] for i in hit], "masks": [mask_names[i] for i in hit], "references": sel_refs}
    detected = PairSet(f"{prefix}_detected", crops, truth, regions=region_crops, outputs=crop_out,
                       same_photo_n=None if same_photo else 0,
                       info={"crop": f"landmarks fitted on the masked photo (JPEG) by {fitted_by}, as unmask "
                                     "predict fits them", **info}, **common)
    photo = PairSet(photos_name, [masked[i] for i in hit],
                    [originals[i] for i in hit], regions=[regions[i] for i in hit], outputs=photo_out,
                    boxes=[face[i].face_box for i in hit], same_photo_n=None if same_photo else 0,
                    info={"resolution": "the photo's own", "pasted": photos.PASTES[paste], "refine": refine,
                          "shift": shift, **info}, **common)
    return [detected, photo]


def study_set_names(params: dict[str, Any], data_dir: Path) -> list[str]:
    """The names of the sets ``study_sets`` can build from ``data_dir`` (the validation sets last)."""
    data_dir = Path(data_dir)
    has_photos = bool(data.read_photos(data_dir / "photos"))
    photo = ["test_detected", "photos", "test_region"] if has_photos else []
    indomain = [f"indomain/{d.name}" for d in robustness_sets(data_dir / "indomain",
                                                              params["download"]["robustness_masks"])]
    return ["test", *photo, *indomain, "val", *(["val_detected", "val_photos"] if has_photos else [])]


def study_sets(params: dict[str, Any], data_dir: Path, trained: dict[str, Any], progress: bool = True,
               baselines: bool = True, masked_detector: Path | None = None, paste: str = "region",
               only: list[str] | None = None, refine: int | None = None, shift: float | None = None
               ) -> list[PairSet]:
    """The study's sets from ``data_dir`` (see the module text); ``refine``, ``shift``: the photo level's passes that
    crop again and the step of the neighbouring crops averaged (``photo_sets``); ``masked_detector``: the
    masked-face detector's file for the photos (the landmark model is looked for beside it); ``paste``: how the photo
    level pastes (``photo_sets``); ``only``: build only the sets of these names (and what they need), not the others
    (default: all but ``val``, which is built only when named)."""
    ep, dl = params["evaluate"], params["download"]
    data_dir = Path(data_dir)
    subset = data_dir / "subset"
    summary = data.read_summary(subset)
    photo_rows = data.read_photos(data_dir / "photos")
    want_test = only is None or bool({"test", "test_region"} & set(only))
    want_photos = bool(photo_rows) and (only is None or bool({"photos", "test_detected", "test_region"} & set(only)))
    refs = (reference_embeddings(data_dir / "photos", photo_rows, ep.get("workers", 2), progress)
            if photo_rows and (want_test or want_photos) else {})
    source = f"{summary['source']}: {summary['source_path']}"
    sets = []
    if want_test:
        part = data.load_pairs(subset, ["test"], verify=True)
        sets.append(PairSet("test", part["masked"], part["unmasked"], part["ids"], [r["mask"] for r in part["rows"]],
                            references=[refs.get(p) for p in part["ids"]] if photo_rows else None, realism=True,
                            info={"source": source, "image_size": summary["image_size"],
                                  "crop": "landmarks found on the unmasked photo, as the training data were cropped",
                                  "with_reference": sum(refs.get(p) is not None for p in part["ids"])}))
    if want_photos:
        d = data_dir / "photos"
        originals = [images.read_rgb(d / r["original_file"]) for r in photo_rows]
        regions = [images.read_rgb(d / r["region_file"])[..., 0] > 127 for r in photo_rows]
        photo_ids = [r["pair_id"] for r in photo_rows]
        sets += photo_sets(
            "test", photo_ids, [r["mask"] for r in photo_rows],
            [images.read_rgb(d / r["masked_file"]) for r in photo_rows], originals, regions,
            [refs.get(r["pair_id"]) for r in photo_rows], trained, ep, summary["image_size"], baselines,
            progress=progress, masked_detector=masked_detector, paste=paste, refine=refine, shift=shift)
        if want_test and (only is None or "test_region" in only):
            sets.append(region_set(sets[0], photo_ids, originals, regions, ep.get("workers", 2), progress))
    for k, d in enumerate(robustness_sets(data_dir / "indomain", dl["robustness_masks"])):
        if only is not None and f"indomain/{d.name}" not in only:
            continue
        p = data.load_pairs(d, ["test"], verify=True)
        s = data.read_summary(d)
        primary = k == 0  # the first template's set is also scored for identity and realism
        sets.append(PairSet(f"indomain/{d.name}", p["masked"], p["unmasked"], p["ids"], [r["mask"] for r in p["rows"]],
                            same_photo_n=(ep["identity_pairs"] or None) if primary else 0, realism=primary,
                            info={"source": f"{s['source']}: {s['source_path']}", "image_size": s["image_size"],
                                  "mask": d.name, "primary": primary}))
    if only is not None and "val" in only:
        va = data.load_pairs(subset, ["val"], verify=True)
        sets.append(PairSet("val", va["masked"], va["unmasked"], va["ids"], [r["mask"] for r in va["rows"]],
                            realism=True, info={"source": source, "image_size": summary["image_size"],
                                                "crop": "as the test split's", "split": "validation"}))
    if photo_rows and only is not None and bool({"val_detected", "val_photos"} & set(only)):
        ids, names, masked, originals, regions = val_photos(params, data_dir, progress)
        sets += photo_sets("val", ids, names, masked, originals, regions, None, trained, ep, summary["image_size"],
                           baselines, progress=progress, masked_detector=masked_detector, paste=paste,
                           refine=refine, shift=shift)
    return sets


def _read_folder_pair(pairs_dir: Path, mrel: str, urel: str) -> tuple[np.ndarray, np.ndarray, bool]:
    m, u = images.read_rgb(pairs_dir / mrel), images.read_rgb(pairs_dir / urel)
    if m.shape != u.shape:
        raise ImageError(f"{mrel}: size differs from {urel}")
    return m, u, any(Path(f).suffix.lower() in LOSSY_SUFFIXES for f in (mrel, urel))


def pair_region(masked: np.ndarray, unmasked: np.ndarray, lossy: bool) -> np.ndarray:
    """The masked region of a pair: where it differs (``metrics.region``), or ``metrics.lossy_region`` for JPEGs."""
    if lossy:
        return metrics.lossy_region(masked, unmasked)
    return metrics.region(masked.astype(np.float32) / 255, unmasked.astype(np.float32) / 255)


def folder_sets(pairs_dir: Path, trained: dict[str, Any], ep: dict[str, Any], size: int, crop: str = "detect",
                photo_level: bool = False, progress: bool = True, masked_detector: Path | None = None,
                paste: str = "region") -> tuple[list[PairSet], list[dict[str, str]], int]:
    """The sets of a folder in Face Mask Lite layout: (sets, pairs skipped with the reason, unpaired files);
    ``paste``: how the photo level pastes (``photo_sets``)."""
    from unmasking import faces

    pairs_dir = Path(pairs_dir)
    names = [p.relative_to(pairs_dir).as_posix() for p in pairs_dir.rglob("*") if p.is_file()]
    index = data.index_fml(names)
    if not index.pairs:
        raise data.DataError(f"{pairs_dir}: no pairs found (expected with_mask/with-mask-<mask>-<file> beside "
                             "without_mask/<file>)")
    unpaired = len(index.unpaired_masked) + len(index.unpaired_unmasked)
    loaded, skipped = [], []
    for mrel, urel, mask in index.pairs:
        try:
            loaded.append((mrel, mask, *_read_folder_pair(pairs_dir, mrel, urel)))
        except ImageError as e:
            skipped.append({"file": mrel, "reason": str(e)})
    if photo_level:
        sets = photo_sets("pairs", [x[0] for x in loaded], [x[1] for x in loaded], [x[2] for x in loaded],
                          [x[3] for x in loaded], [pair_region(x[2], x[3], x[4]) for x in loaded], None, trained, ep,
                          size, same_photo=True, progress=progress, masked_detector=masked_detector, paste=paste)
        return sets, skipped, unpaired
    ms, us, rs, ids, mk = [], [], [], [], []
    for mrel, mask, m, u, lossy in loaded:
        if crop == "detect":
            box = faces.central_face(u)
            if box is None:
                skipped.append({"file": mrel, "reason": "no face found on the unmasked image"})
                continue
            square = masks.crop_box(faces.landmarks(u, box))
            m, u = masks.crop(m, square), masks.crop(u, square)
        m, u = images.resize(m, size), images.resize(u, size)
        ms.append(m)
        us.append(u)
        rs.append(pair_region(m, u, lossy))
        ids.append(mrel)
        mk.append(mask)
    if not ids:
        raise data.DataError(f"{pairs_dir}: none of the {len(index.pairs)} pairs could be used")
    s = PairSet("pairs", np.stack(ms), np.stack(us), ids, mk, regions=np.stack(rs),
                info={"source": f"pairs: {pairs_dir}", "image_size": size, "crop": crop})
    return [s], skipped, unpaired
