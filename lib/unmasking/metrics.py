"""Every metric of the study, defined once. All images are float arrays in [0, 1] of shape (H, W, 3) or (N, H, W, 3).

``accuracy_paper``
    What Keras reports as "accuracy" when a model with an (H, W, 3) image output is compiled with
    ``metrics=["accuracy"]``: Keras resolves the string by the shapes (``keras/src/trainers/compile_utils.py``,
    ``get_metric`` and ``is_binary_or_sparse_categorical``): a prediction whose last dimension is not 1 is not
    binary, a target of the same rank whose last dimension is not 1 is not sparse, so it becomes
    ``CategoricalAccuracy``: the share of pixels whose
    strongest RGB channel (argmax over the last axis) is the same in prediction and truth. It is the paper's
    "accuracy 91 %". It says nothing about whether the face is right: the masked input itself scores high on it.
``mse``
    Mean squared error over all pixels and channels (the paper's "loss").
``psnr``
    Peak signal-to-noise ratio in dB, ``10 log10(1 / mse)`` (data range 1), as ``skimage.metrics.peak_signal_noise_ratio``.
``ssim``
    Structural similarity, ``skimage.metrics.structural_similarity(data_range=1, channel_axis=-1)`` (7 x 7 window).
``masked_psnr``, ``masked_l1``
    PSNR and mean absolute error over the pixels of the masked region only: the pixels where the masked input and
    the true face differ. Outside that region the input is already the answer, so whole-image numbers flatter every
    method.
``masked_ssim``
    SSIM over the bounding box of the masked region.
``identity_distance``, ``identity_match``
    Euclidean distance between dlib's 128-D face embeddings of the output and of the true face; a match is a
    distance under 0.6 (dlib's usual same-person threshold). ``identity_match_rate`` is the share of matches.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

IDENTITY_THRESHOLD = 0.6
MAX_PSNR = 100.0  # PSNR of identical images is reported as this finite ceiling


def accuracy_paper(pred: np.ndarray, truth: np.ndarray) -> float:
    """Keras ``CategoricalAccuracy`` on images: share of pixels whose argmax over RGB agrees."""
    return float(np.mean(np.argmax(pred, axis=-1) == np.argmax(truth, axis=-1)))


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    d = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(np.mean(d * d))


def _psnr_from_mse(m: float) -> float:
    return MAX_PSNR if m <= 10 ** (-MAX_PSNR / 10) else float(10 * np.log10(1.0 / m))


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    return _psnr_from_mse(mse(pred, truth))


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(structural_similarity(np.asarray(pred, np.float64), np.asarray(truth, np.float64), data_range=1.0,
                                       channel_axis=-1))


def region(masked: np.ndarray, truth: np.ndarray, threshold: float = 0.5 / 255) -> np.ndarray:
    """The masked region (H, W) bool: pixels where the masked input and the true face differ."""
    return (np.abs(np.asarray(masked, np.float32) - np.asarray(truth, np.float32)) > threshold).any(axis=-1)


def masked_mse(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    d = np.asarray(pred, np.float64)[mask] - np.asarray(truth, np.float64)[mask]
    return float(np.mean(d * d))


def masked_psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    m = masked_mse(pred, truth, mask)
    return float("nan") if np.isnan(m) else _psnr_from_mse(m)


def masked_l1(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    return float(np.mean(np.abs(np.asarray(pred, np.float64)[mask] - np.asarray(truth, np.float64)[mask])))


def bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    return slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)


def masked_ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """SSIM over the bounding box of the masked region (at least 7 x 7, the SSIM window)."""
    b = bbox(mask)
    if b is None:
        return float("nan")
    ys, xs = b
    h, w = mask.shape
    ys = slice(max(0, min(ys.start, ys.stop - 7)), max(ys.stop, min(h, ys.start + 7)))
    xs = slice(max(0, min(xs.start, xs.stop - 7)), max(xs.stop, min(w, xs.start + 7)))
    return ssim(pred[ys, xs], truth[ys, xs])


IMAGE_METRICS = ("accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim")


def image_metrics(pred: np.ndarray, truth: np.ndarray, masked: np.ndarray) -> dict[str, float]:
    """All pixel metrics of one image; the masked region comes from the (masked input, truth) pair."""
    mask = region(masked, truth)
    return {
        "accuracy_paper": accuracy_paper(pred, truth),
        "mse": mse(pred, truth),
        "psnr": psnr(pred, truth),
        "ssim": ssim(pred, truth),
        "masked_psnr": masked_psnr(pred, truth, mask),
        "masked_l1": masked_l1(pred, truth, mask),
        "masked_ssim": masked_ssim(pred, truth, mask),
    }


def identity_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Euclidean distance of two face embeddings; NaN when either could not be computed."""
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def batch_region_metrics(pred: np.ndarray, truth: np.ndarray, masked: np.ndarray) -> dict[str, float]:
    """Fast mean ``mse``, ``masked_l1`` and ``masked_psnr`` (pooled over the batch's masked pixels), for training logs."""
    mask = region(masked, truth)
    d = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    out = {"mse": float(np.mean(d * d))}
    if mask.any():
        dm = d[mask]
        out["masked_l1"] = float(np.mean(np.abs(dm)))
        out["masked_psnr"] = _psnr_from_mse(float(np.mean(dm * dm)))
    return out
