"""Face detection, 68 landmarks and 128-D face embeddings with dlib, offline.

The model files come from the ``face-recognition-models`` package and are loaded by path (its own loader imports
``pkg_resources``, which current setuptools no longer ships). Models are loaded once per process.
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
def _predictor():
    import dlib

    return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@lru_cache(maxsize=1)
def _encoder():
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


def landmarks(img: np.ndarray, box: Box) -> np.ndarray:
    """The 68 landmarks (x, y) as a float array of shape (68, 2), for the face in ``box``."""
    import dlib

    shape = _predictor()(np.ascontiguousarray(img), dlib.rectangle(*[int(v) for v in box]))
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


def embedding(img: np.ndarray, box: Box | None = None, jitter: int = 0) -> np.ndarray | None:
    """dlib's 128-D face embedding of the face in ``box`` (detected when None); None when no face is found."""
    import dlib

    img = np.ascontiguousarray(img)
    if box is None:
        box = central_face(img)
        if box is None:
            return None
    shape = _predictor()(img, dlib.rectangle(*[int(v) for v in box]))
    return np.array(_encoder().compute_face_descriptor(img, shape, jitter), dtype=np.float64)
