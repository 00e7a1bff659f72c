"""Faces in photos: what ``unmask predict`` does to a photo; the photo-level evaluation runs exactly the same.

1. Find every face: dlib's HOG detector, then the study's masked-face detector, then dlib's CNN detector, until one
   finds a face (a mask hides the lower half of the face, which dlib's HOG detector needs; ``faces.find_face_boxes``).
2. Fit the 68 landmarks in each box and take the training data's face-centred square from them (``masks.crop_box``).
   The mask hides the jaw and mouth that dlib's landmark model, trained on unmasked faces, fits to; the study's own
   model, trained on masked photos (``detector``, beside the masked-face detector file), places them better and is
   used when it is there (``faces.masked_landmarks``).
3. Unmask the crop at the model's size (``models.unmask``).
4. Optionally refine the crop (``REFINE`` passes, none by default): the square is taken again from landmarks refitted
   on the last pass's output, where the face is unmasked, and the new crop of the masked photo is unmasked again
   (``recrop``). With dlib's landmarks one pass gained 0.19 dB on the validation photos, so a caller without the
   masked-face landmark model should ask for one; with that model it gains nothing (docs/history.md).
5. Average over neighbouring crops (``SHIFT``): a model that is averaged at test time (``evaluate.flip_average``)
   also unmasks the last crop moved by ``SHIFT`` of its side left, right, up and down; the five outputs, each pasted
   back as in 6, are averaged in the photo (the crop found on a masked photo is off the true one by a few per cent of
   its side, either way).
6. Paste back only what the model judges hidden: its own mask estimate, scaled to the photo, grown by 3 % of the
   crop's side and feathered, is the blending weight (``blend_weight``); every pixel where that weight is 0 keeps the
   photo's own value, byte for byte, so eyes, brows and hair stay as sharp as they were. A model without a mask
   estimate (``paper_ae``) replaces the whole crop, with a soft edge.

The parts of a mask outside the face crop (ear loops beside the face) stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unmasking import images, masks
from unmasking.faces import Box
from unmasking.images import ImageError

GROW = 0.03  # the estimated region is grown by this share of the crop's side before feathering
FEATHER = 0.02  # Gaussian feathering of its edge, sigma as a share of the crop's side
EDGE = 0.12  # whole-crop paste (no mask estimate): the weight falls to 0 over this share of each side
REFINE = 0  # passes that crop again from refitted landmarks (validation photos: none gained with masked landmarks)
SHIFT = 0.02  # step of the neighbouring crops averaged for a test-time-averaged model; 0 = the last crop alone
# (validation photos, masked-face landmarks: 0.02 beats 0 by 0.06 dB and 0.03 by 0.06 dB)
PASTES = {"region": "the model's estimated region only", "box": "the whole crop, with a soft edge"}


@dataclass
class Face:
    """One face of a photo: the square crop in the photo, the crop at the model's size, and what found it."""

    box: Box  # the square crop (left, top, right, bottom); may reach past the photo's edges (edge replication)
    crop: np.ndarray  # uint8 (S, S, 3)
    detector: str  # "hog", "masked-hog", "cnn", or "whole" when the whole image is the face
    face_box: Box  # the detector's box, in which the landmarks were fitted (the whole image for "whole")


def find_faces(img: np.ndarray, size: int, crop: str = "detect", detector: str = "auto", upsample: int = 1,
               masked: Path | str | None = None) -> list[Face]:
    """The face crops of a photo: every detected face (``crop="detect"``; ``masked``: the masked-face detector's
    file, beside which the masked-face landmark model is looked for), or the whole image (``"none"``)."""
    from unmasking import faces

    if crop == "none":
        h, w = img.shape[:2]
        return [Face((0, 0, w, h), images.resize(img, size), "whole", (0, 0, w, h))]
    boxes, found_by = faces.find_face_boxes(img, upsample, detector, masked)
    predictor = faces.masked_landmarks(masked)
    return [_cropped(img, masks.crop_box(faces.landmarks(img, box, predictor)), size, found_by, box) for box in boxes]


def _cropped(img: np.ndarray, square: Box, size: int, detector: str, face_box: Box) -> Face:
    return Face(square, images.resize(masks.crop(img, square), size), detector, face_box)


def feather(side_w: int, side_h: int, edge: float = EDGE) -> np.ndarray:
    """A soft-edged weight (H, W) in [0, 1]: 1 in the middle, falling to 0 over ``edge`` of each side."""

    def ramp(n: int) -> np.ndarray:
        e = max(1.0, edge * n)
        x = np.arange(n) + 0.5
        return np.clip(np.minimum(x, n - x) / e, 0, 1)

    return np.outer(ramp(side_h), ramp(side_w))


def blend_weight(mask_estimate: np.ndarray, width: int, height: int, grow: float = GROW, feather_sigma: float = FEATHER
                 ) -> np.ndarray:
    """The model's mask estimate (S, S) in [0, 1] as a blending weight (height, width) for the crop in the photo:
    thresholded at 0.5, grown by ``grow`` x the side, feathered with a Gaussian of ``feather_sigma`` x the side;
    exactly 0 where nothing is replaced."""
    import cv2

    side = (width + height) / 2
    m = cv2.resize(mask_estimate.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    r = max(1, int(round(grow * side)))
    m = cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    w = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(0.5, feather_sigma * side))
    w[w < 0.5 / 255] = 0.0
    return w


def _pasted(img: np.ndarray, pred: np.ndarray, box: Box, mask_estimate: np.ndarray | None
            ) -> tuple[int, int, np.ndarray] | None:
    """What ``paste_back`` writes: (top, left, patch) of the smallest rectangle of ``img`` whose blending weight is
    not 0 everywhere, the patch holding its new values; None when the paste changes nothing."""
    h, w = img.shape[:2]
    left, top, right, bottom = box
    bw, bh = right - left, bottom - top
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if x0 >= x1 or y0 >= y1:
        return None
    alpha = blend_weight(mask_estimate, bw, bh) if mask_estimate is not None else feather(bw, bh)
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if not rows.size:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    a = a[r0:r1, c0:c1, None]
    y0, x0 = y0 + r0, x0 + c0
    big = images.resize(pred, (bw, bh))[y0 - top:y0 - top + r1 - r0, x0 - left:x0 - left + c1 - c0]
    region = img[y0:y0 + r1 - r0, x0:x0 + c1 - c0]
    blended = np.clip(region.astype(np.float32) * (1 - a) + big.astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)
    return y0, x0, np.where(a > 0, blended, region)


def paste_back(img: np.ndarray, pred: np.ndarray, box: Box, mask_estimate: np.ndarray | None = None) -> np.ndarray:
    """Paste a predicted crop (uint8 (S, S, 3)) back into ``img`` at ``box``, resized to the box.

    With the model's ``mask_estimate`` only the estimated region changes (``blend_weight``); without one the whole
    box is blended with a soft edge. Pixels whose weight is 0 keep the input's bytes; the image keeps its size.
    """
    out = img.copy()
    patch = _pasted(img, pred, box, mask_estimate)
    if patch is not None:
        y, x, p = patch
        out[y:y + p.shape[0], x:x + p.shape[1]] = p
    return out


def paste_mean(img: np.ndarray, preds: list[np.ndarray], boxes: list[Box],
               mask_estimates: list[np.ndarray] | None = None) -> np.ndarray:
    """The mean of ``paste_back`` of each prediction at its box, rounded to uint8; computed only over the rectangle
    the pastes change, which gives the same bytes as averaging the whole pasted photos."""
    ests = mask_estimates if mask_estimates is not None else [None] * len(preds)
    if len(preds) == 1:
        return paste_back(img, preds[0], boxes[0], ests[0])
    patches = [p for p in map(_pasted, [img] * len(preds), preds, boxes, ests) if p is not None]
    if not patches:
        return img.copy()
    top, left = min(y for y, _, _ in patches), min(x for _, x, _ in patches)
    bottom, right = max(y + p.shape[0] for y, _, p in patches), max(x + p.shape[1] for _, x, p in patches)
    window = img[top:bottom, left:right].astype(np.float64)
    total = window * (len(preds) - len(patches))
    for y, x, p in patches:
        one = window.copy()
        one[y - top:y - top + p.shape[0], x - left:x - left + p.shape[1]] = p
        total += one
    out = img.copy()
    out[top:bottom, left:right] = np.clip(total / len(preds) + 0.5, 0, 255).astype(np.uint8)
    return out


def recrop(img: np.ndarray, face: Face, unmasked: np.ndarray, size: int) -> Face:
    """``face`` cropped again from ``img``: the square of the 68 landmarks refitted, in the detector's box, on
    ``unmasked`` (the photo with this face unmasked by a first pass)."""
    from unmasking import faces

    return _cropped(img, masks.crop_box(faces.landmarks(unmasked, face.face_box)), size, face.detector, face.face_box)


def _at_size(img: np.ndarray, face: Face, size: int) -> Face:
    return face if face.crop.shape[0] == size else _cropped(img, face.box, size, face.detector, face.face_box)


@dataclass
class Unmasked:
    """One photo after ``unmask_faces``: the output photo, its faces as last cropped (empty when none was found),
    and the model's output for each face's first crop (the detector's landmarks), at the model's size."""

    image: np.ndarray
    faces: list[Face]
    first: list[np.ndarray] = field(default_factory=list)


def shifted(box: Box, shift: float) -> list[Box]:
    """``box`` and its four neighbours ``shift`` of its side away (left, right, up, down); ``[box]`` for 0."""
    if not shift:
        return [box]
    left, top, right, bottom = box
    dx, dy = int(round(shift * (right - left))), int(round(shift * (bottom - top)))
    return [box, *((left + x, top + y, right + x, bottom + y) for x, y in ((-dx, 0), (dx, 0), (0, -dy), (0, dy)))]


def unmask_faces(model, photos: list[np.ndarray], found: list[list[Face]], flip_average: bool,
                 batch_size: int = 32, refine: int = REFINE, paste: str = "region", shift: float = SHIFT
                 ) -> list[Unmasked]:
    """Unmask the faces ``found`` in each photo (``find_faces``); each pass is one batched prediction of every face.
    ``refine`` more passes each crop the faces again from the last pass's output (``recrop``; faces found as the
    whole image are not refined). A ``flip_average`` model's last pass averages the pasted outputs of each face's
    crop and of its neighbours ``shift`` of the side away (``shifted``). ``paste``: ``"region"`` replaces
    the model's estimated mask region only, ``"box"`` the whole crop with a soft edge."""
    from unmasking import models

    if paste not in PASTES:
        raise ValueError(f"paste must be one of {', '.join(PASTES)}, got {paste!r}")
    size = int(model.input_shape[1])
    found = [[_at_size(img, f, size) for f in fs] for img, fs in zip(photos, found)]
    first: list[np.ndarray] | None = None
    outputs = list(photos)
    for p in range(refine + 1):
        last = p == refine or all(f.detector == "whole" for fs in found for f in fs)
        boxes = [[shifted(f.box, shift if last and flip_average and f.detector != "whole" else 0) for f in fs]
                 for fs in found]
        crops = [f.crop if b == f.box else images.resize(masks.crop(img, b), size)
                 for img, fs, bs in zip(photos, found, boxes) for f, fb in zip(fs, bs) for b in fb]
        if not crops:
            break
        pred = models.unmask(model, np.stack(crops), batch_size, flip_average)
        if first is None:
            starts = np.cumsum([0] + [len(fb) for bs in boxes for fb in bs])[:-1]
            first = [pred.faces[k] for k in starts]
        outputs, k = [], 0
        for img, bs in zip(photos, boxes):
            res = img
            for fb in bs:
                ests = None if paste == "box" or pred.masks is None else list(pred.masks[k:k + len(fb)])
                res = paste_mean(res, list(pred.faces[k:k + len(fb)]), fb, ests)
                k += len(fb)
            outputs.append(res)
        if last:
            break
        found = [[f if f.detector == "whole" else recrop(img, f, out, size) for f in fs]
                 for img, fs, out in zip(photos, found, outputs)]
    out, k = [], 0
    for img, fs in zip(outputs, found):
        out.append(Unmasked(img, fs, (first or [])[k:k + len(fs)]))
        k += len(fs)
    return out


def unmask_photos(model, photos: list[np.ndarray], flip_average: bool, crop: str = "detect", detector: str = "auto",
                  upsample: int = 1, batch_size: int = 32, masked: Path | str | None = None,
                  refine: int = REFINE, shift: float = SHIFT) -> list[Unmasked]:
    """Find (``find_faces``) and unmask (``unmask_faces``) every face of every photo."""
    size = int(model.input_shape[1])
    found = [find_faces(img, size, crop, detector, upsample, masked) for img in photos]
    return unmask_faces(model, photos, found, flip_average, batch_size, refine, shift=shift)


def unmask_image(model, img: np.ndarray, flip_average: bool, crop: str = "detect", detector: str = "auto",
                 upsample: int = 1, masked: Path | str | None = None, refine: int = REFINE, shift: float = SHIFT
                 ) -> Unmasked:
    """``unmask_photos`` for one photo; ``ImageError`` when no face is found."""
    res = unmask_photos(model, [img], flip_average, crop, detector, upsample, masked=masked, refine=refine,
                        shift=shift)[0]
    if not res.faces:
        raise ImageError("no face found")
    return res
