"""Face detection, 68 landmarks and 128-D face embeddings with dlib, offline.

Three detectors, tried in turn by ``find_face_boxes``, which says which one found the faces: dlib's HOG frontal
detector (fast, but it misses many faces whose lower half is covered), the study's own HOG detector trained on
masked faces (``detector``; as fast), and dlib's CNN detector (``mmod_human_face_detector.dat``, robust to a mask,
a third of a second to a second and a half per photo on a CPU). The CNN's boxes are tighter than HOG's;
``CNN_TO_HOG`` maps them onto HOG's geometry, which the 68-landmark models were trained on. The landmarks are fitted
by dlib's model of unmasked faces, or on a masked face by the study's own model (``masked_landmarks``), which
places the jaw and mouth the mask hides better.

The embeddings are those of dlib's face-recognition network, computed by ``dlibnet`` (the same network in Keras,
about 30 times faster than dlib's own CPU code) on the face chips dlib aligns. The model files come from the
``face-recognition-models`` package and are loaded by path (its own loader imports ``pkg_resources``, which current
setuptools no longer ships). Models are loaded once per process.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom (pixels)

# Landmark indices of the 68-point scheme (iBUG 300-W).
JAW = slice(0, 17)
NOSE_BRIDGE = slice(27, 31)
MOUTH = slice(48, 68)


def model_file(name: str) -> Path:
    """Path of one of the ``.dat`` files shipped by ``face-recognition-models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed: pip install -r requirements.txt")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.exists():
        raise RuntimeError(f"{path}: dlib model file missing; reinstall face-recognition-models")
    return path


@lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _cnn_detector():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))


@lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@lru_cache(maxsize=1)
def _encoder():
    """dlib's own face-recognition network (the reference ``dlibnet`` is tested against)."""
    import dlib

    return dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def detect_faces(img: np.ndarray, upsample: int = 0) -> list[Box]:
    """Boxes of the frontal faces that dlib's HOG detector finds, largest first.

    Tries without upsampling first and, if nothing is found and ``upsample`` allows, once more upsampled.
    """
    img = np.ascontiguousarray(img)
    for up in range(0, upsample + 1):
        rects = _detector()(img, up)
        if len(rects):
            boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
            return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    return []


# (scale, dx, dy): a CNN box of side s centred at (cx, cy) becomes a HOG-like box of side scale * s centred at
# (cx + dx * s, cy + dy * s): the medians over 150 unmasked LFW photos where both detectors found the face.
CNN_TO_HOG = (1.09, 0.074, 0.074)


def _to_hog_geometry(left: int, top: int, right: int, bottom: int) -> Box:
    scale, dx, dy = CNN_TO_HOG
    s = (right - left + bottom - top) / 2
    cx, cy = (left + right) / 2 + dx * s, (top + bottom) / 2 + dy * s
    half = scale * s / 2
    return int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))


def detect_faces_cnn(img: np.ndarray, upsample: int = 1) -> list[Box]:
    """Boxes of the faces that dlib's CNN detector finds (in HOG's geometry, ``CNN_TO_HOG``), largest first."""
    found = _cnn_detector()(np.ascontiguousarray(img), upsample)
    boxes = [_to_hog_geometry(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in found]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def masked_detector(path: str):
    """The masked-face HOG detector saved at ``path`` (``detector``), or None when there is none there."""
    return _saved_model("detector", path)


def detect_with(det, img: np.ndarray, upsample: int = 0) -> list[Box]:
    """Boxes that a dlib HOG detector ``det`` finds, largest first; upsampled only when nothing is found."""
    img = np.ascontiguousarray(img)
    for up in range(0, upsample + 1):
        rects = det(img, up)
        if len(rects):
            boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
            return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    return []


DETECTORS = ("auto", "hog", "masked-hog", "cnn")


def find_face_boxes(img: np.ndarray, upsample: int = 1, detector: str = "auto", masked: Path | str | None = None
                    ) -> tuple[list[Box], str]:
    """The faces of a photo and the detector that found them: one detector (``"hog"``, ``"masked-hog"``, ``"cnn"``),
    or each in turn until one finds a face (``"auto"``). ``masked``: the masked-face detector's file (skipped when
    None or missing). Returns (boxes largest first, "hog" | "masked-hog" | "cnn" | "none")."""
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    order = ("hog", "masked-hog", "cnn") if detector == "auto" else (detector,)
    for name in order:
        if name == "hog":
            boxes = detect_faces(img, upsample)
        elif name == "masked-hog":
            det = masked_detector(str(masked)) if masked else None
            boxes = detect_with(det, img, upsample) if det is not None else []
        else:
            boxes = detect_faces_cnn(img, upsample)
        if boxes:
            return boxes, name
    return [], "none"


@lru_cache(maxsize=8)
def _load_saved(kind: str, path: str, mtime_ns: int):
    import dlib

    return dlib.simple_object_detector(path) if kind == "detector" else dlib.shape_predictor(path)


def _saved_model(kind: str, path: str):
    """A dlib model (``"detector"`` or ``"landmarks"``) saved by the ``detector`` stage at ``path``, loaded once while
    the file is unchanged; None while there is no file there or it is empty (the stage's "none")."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return None
    return _load_saved(kind, str(p), p.stat().st_mtime_ns)


def shape_model(path: str):
    """The 68-landmark model saved at ``path`` (``detector.train_landmarks``), or None when there is none there."""
    return _saved_model("landmarks", path)


def masked_landmarks(masked: Path | str | None):
    """The masked-face landmark model that sits beside the masked-face detector file ``masked`` (both are written
    by the ``detector`` stage and shipped together), or None when there is none."""
    from unmasking import paths

    return shape_model(str(Path(masked).with_name(paths.MASKED_LANDMARKS))) if masked else None


def landmarks(img: np.ndarray, box: Box, predictor=None) -> np.ndarray:
    """The 68 landmarks (x, y) as a float array of shape (68, 2), for the face in ``box``: fitted by ``predictor``
    (a dlib shape predictor, such as ``masked_landmarks``), else by dlib's model of unmasked faces."""
    import dlib

    model = _predictor() if predictor is None else predictor
    shape = model(np.ascontiguousarray(img), dlib.rectangle(*[int(v) for v in box]))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def central_face(img: np.ndarray, upsample: int = 1) -> Box | None:
    """The detected face whose centre is nearest the image centre (the labelled face of a face crop), or None."""
    boxes = detect_faces(img, upsample)
    if not boxes:
        return None
    h, w = img.shape[:2]

    def dist(b: Box) -> float:
        return ((b[0] + b[2]) / 2 - w / 2) ** 2 + ((b[1] + b[3]) / 2 - h / 2) ** 2

    return min(boxes, key=dist)


def face_chips(imgs: list[np.ndarray], box: Box) -> np.ndarray:
    """The aligned 150 x 150 face chips (N, 150, 150, 3) of the face in the same ``box`` of each image (the images
    of one face: its outputs and the true face share the crop, hence the box): 68 landmarks fitted on each image,
    then dlib's ``get_face_chip``, as dlib's ``compute_face_descriptor`` makes them."""
    import dlib

    from unmasking import dlibnet

    rect = dlib.rectangle(*[int(v) for v in box])
    chips = []
    for img in imgs:
        img = np.ascontiguousarray(img)
        chips.append(dlib.get_face_chip(img, _predictor()(img, rect), size=dlibnet.CHIP_SIZE, padding=0.25))
    return np.stack(chips) if chips else np.zeros((0, dlibnet.CHIP_SIZE, dlibnet.CHIP_SIZE, 3), np.uint8)


def embeddings(imgs: list[np.ndarray], box: Box) -> list[np.ndarray]:
    """dlib's 128-D embeddings of the face in the same ``box`` of each image (``face_chips``), computed by
    ``dlibnet``, the same network in Keras, in one batch."""
    from unmasking import dlibnet

    return list(dlibnet.descriptors(face_chips(imgs, box)))
