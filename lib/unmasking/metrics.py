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
    Peak signal-to-noise ratio in dB, ``10 log10(1 / mse)`` (data range 1), as
    ``skimage.metrics.peak_signal_noise_ratio``.
``ssim``
    Structural similarity as ``skimage.metrics.structural_similarity(data_range=1, channel_axis=-1)`` computes it
    (7 x 7 uniform window, sample covariance, the border of 3 pixels left out, the mean over the channels), with
    OpenCV's box filter: the same number to 1e-14 (tested), in half the time.
``masked_psnr``, ``masked_l1``
    PSNR and mean absolute error over the pixels of the masked region only: the pixels where the masked input and
    the true face differ. Outside that region the input is already the answer, so whole-image numbers flatter every
    method.
``masked_ssim``
    SSIM over the bounding box of the masked region.
``lossy_region``
    The masked region of a pair whose images went through lossy compression (JPEG), where "pixels that differ" is
    nearly every pixel: pixels whose largest channel difference exceeds ``LOSSY_THRESHOLD`` (16 of 255; JPEG at
    quality 75-95 moves skin by a few levels, a mask by dozens), opened with a 3 x 3 square (JPEG specks go), closed
    with a 5 x 5 disc (the gaps inside a patterned mask close), components under a tenth of the largest dropped and
    holes filled. It leaves out the faint outer edge of an overlay (differences under 16 levels): on the generated
    faces with the study's templates, saved as JPEG at quality 75 or 90, it covers 0.89-0.99 of the exact region
    (intersection over union), the same as on the lossless pairs.
``detail_ratio``
    Realism, part one: high-frequency energy of the output inside the masked region over that of the true face, the
    mean absolute 3 x 3 Laplacian of the luma over the region eroded by one pixel. 1.0 is as detailed as the real
    face; a blur scores near 0; noise scores high, which is why it is never read alone.
``c2st_accuracy``, ``c2st_distance``
    Realism, part two: a classifier two-sample test. A small CNN is trained to tell the masked-region crops
    (``region_crops``: the region's bounding box, 32 x 32) of a method's outputs from those of the true faces, with
    two-fold cross-fitting (each half of the images is classified by a network trained on the other half, the real
    and the output crop of one image always in the same half), and its accuracy on the held-out crops is reported:
    0.5 means the outputs cannot be told from real faces, 1.0 that every one can. ``c2st_distance`` is
    ``max(0, 2 * accuracy - 1)`` (0 = indistinguishable). Noise does not fool it (tested): it is told apart as
    easily as blur.
``same_photo_distance``, ``same_photo_match``
    Euclidean distance between dlib's 128-D face embeddings of the output and of the true face, that is of the very
    photo that was masked; a match is a distance under 0.6 (dlib's usual same-person threshold).
    ``same_photo_match_rate`` is the share of matches. It measures near-duplicate similarity, not recognition.
``verification_distance``, ``verified``
    The same distance to a *different* photo of the same person (a reference never in any split; LFW identities
    with two or more photos), the face-verification question. ``verification_rate`` is the share under 0.6; the
    true unmasked face's own rate is the ceiling.
"""

from __future__ import annotations

import numpy as np

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


def _box_mean(x: np.ndarray, window: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(x, cv2.CV_64F, (window, window), normalize=True, borderType=cv2.BORDER_REFLECT)


def _moments(x: np.ndarray, window: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image (float64) with its local means of x and x * x: what SSIM needs of each image alone."""
    x = np.asarray(x, np.float64)
    return x, _box_mean(x, window), _box_mean(x * x, window)


def ssim(pred: np.ndarray, truth: np.ndarray, window: int = 7, _truth: tuple | None = None) -> float:
    """SSIM (see the module text); ``_truth``: ``_moments(truth)``, when several predictions share a truth."""
    a, ua, aa = _moments(pred, window)
    b, ub, bb = _moments(truth, window) if _truth is None else _truth
    cov = window * window / (window * window - 1)  # the sample covariance, as skimage's default
    va, vb, vab = cov * (aa - ua * ua), cov * (bb - ub * ub), cov * (_box_mean(a * b, window) - ua * ub)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua**2 + ub**2 + c1) * (va + vb + c2))
    p = (window - 1) // 2
    s = s[p : s.shape[0] - p, p : s.shape[1] - p]
    return float(s.reshape(-1, s.shape[-1]).mean(axis=0).mean())


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


def _ssim_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of ``mask`` grown to at least 7 x 7 (the SSIM window) inside the image."""
    b = bbox(mask)
    if b is None:
        return None
    ys, xs = b
    h, w = mask.shape
    ys = slice(max(0, min(ys.start, ys.stop - 7)), max(ys.stop, min(h, ys.start + 7)))
    xs = slice(max(0, min(xs.start, xs.stop - 7)), max(xs.stop, min(w, xs.start + 7)))
    return ys, xs


def masked_ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """SSIM over the bounding box of the masked region (at least 7 x 7, the SSIM window)."""
    b = _ssim_box(mask)
    return float("nan") if b is None else ssim(pred[b], truth[b])


IMAGE_METRICS = ("accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim", "detail_ratio")
# The study's headline numbers, in this order, in the evaluation's tables, the report, RESULTS.md and ``unmask
# evaluate``: distortion, then realism, then identity.
HEADLINE = ("accuracy_paper", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim", "detail_ratio",
            "c2st_distance", "same_photo_match_rate", "verification_rate")


def image_metrics(pred: np.ndarray, truth: np.ndarray, masked: np.ndarray, mask: np.ndarray | None = None
                  ) -> dict[str, float]:
    """All per-image metrics of one image; the masked region ``mask`` is the (masked input, truth) pair's ``region``
    unless given (``lossy_region`` for compressed pairs)."""
    return image_metrics_many([pred], truth, masked, mask)[0]


def image_metrics_many(preds: list[np.ndarray], truth: np.ndarray, masked: np.ndarray, mask: np.ndarray | None = None
                       ) -> list[dict[str, float]]:
    """``image_metrics`` of several predictions of one image (every method's), the same numbers: what depends on
    the truth alone (its SSIM moments, its detail) is computed once."""
    mask = region(masked, truth) if mask is None else mask
    box = _ssim_box(mask)
    whole = _moments(truth)
    inner = None if box is None else _moments(np.asarray(truth)[box])
    t_detail = detail(truth, mask)
    out = []
    for pred in preds:
        out.append({
            "accuracy_paper": accuracy_paper(pred, truth),
            "mse": mse(pred, truth),
            "psnr": psnr(pred, truth),
            "ssim": ssim(pred, truth, _truth=whole),
            "masked_psnr": masked_psnr(pred, truth, mask),
            "masked_l1": masked_l1(pred, truth, mask),
            "masked_ssim": float("nan") if box is None else ssim(pred[box], truth[box], _truth=inner),
            "detail_ratio": detail_ratio(pred, truth, mask, _truth_detail=t_detail),
        })
    return out


LOSSY_THRESHOLD = 16 / 255


def lossy_region(masked: np.ndarray, truth: np.ndarray, threshold: float = LOSSY_THRESHOLD) -> np.ndarray:
    """The masked region (H, W) bool of a pair that went through JPEG (uint8 or float images); see the module text."""
    import cv2
    from scipy.ndimage import binary_fill_holes

    diff = np.abs(_as_float(masked) - _as_float(truth)).max(axis=-1) > threshold
    m = cv2.morphologyEx(diff.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros(diff.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.nonzero(areas >= 0.1 * areas.max())[0]
    return binary_fill_holes(np.isin(labels, keep))


def _as_float(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def detail(img: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute 3 x 3 Laplacian of the luma of ``img`` over ``mask`` eroded by one pixel (NaN when empty)."""
    import cv2

    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if not inner.any():
        return float("nan")
    a = _as_float(img)
    luma = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return float(np.abs(cv2.Laplacian(luma, cv2.CV_32F, ksize=1))[inner].mean())


def detail_ratio(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, _truth_detail: float | None = None) -> float:
    """``detail(pred) / detail(truth)`` over the masked region: 1.0 = as detailed as the real face
    (``_truth_detail``: ``detail(truth, mask)``, when several predictions share a truth)."""
    t = detail(truth, mask) if _truth_detail is None else _truth_detail
    return float("nan") if not np.isfinite(t) or t <= 0 else detail(pred, mask) / t


C2ST_SIZE = 32


def region_crops(imgs: np.ndarray, masks: np.ndarray, size: int = C2ST_SIZE) -> np.ndarray:
    """The bounding box of each image's region (the whole image when empty), resized to ``size`` x ``size``: float32
    (N, size, size, 3) in [0, 1]."""
    import cv2

    out = np.empty((len(imgs), size, size, 3), np.float32)
    for i, (img, m) in enumerate(zip(imgs, masks)):
        b = bbox(m)
        crop = _as_float(img)[b] if b is not None else _as_float(img)
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out


def c2st(real: np.ndarray, fake: np.ndarray, seed: int = 0, epochs: int = 20, batch_size: int = 32) -> dict:
    """Classifier two-sample test of crops ``real`` against ``fake`` (paired: crop i of each comes from image i);
    see the module text. Returns the held-out ``accuracy``, ``distance``, the per-crop ``correct`` flags (real crops
    first) for the bootstrap, and ``n`` crops."""
    import keras

    n = len(real)
    assert len(fake) == n and n >= 4, "c2st needs at least 4 paired crops"
    rng = np.random.default_rng(seed)
    fold = np.zeros(n, int)
    fold[rng.permutation(n)[: n // 2]] = 1
    correct = np.zeros(2 * n, bool)
    x_all = np.concatenate([real, fake]).astype(np.float32)
    y_all = np.r_[np.zeros(n), np.ones(n)].astype(np.float32)
    f_all = np.r_[fold, fold]
    for k in (0, 1):
        keras.utils.set_random_seed(seed + k)
        _deterministic()
        net = _c2st_net(x_all.shape[1:])
        train = f_all != k
        x, y = x_all[train], y_all[train]
        order = np.random.default_rng(seed + k).permutation(len(x))
        x, y = x[order], y[order]
        x = np.concatenate([x, x[:, :, ::-1]])  # mirrored copies: the side of a face says nothing about realism
        y = np.concatenate([y, y])
        net.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        test = ~train
        p = net.predict(x_all[test], batch_size=256, verbose=0)[:, 0]
        correct[test] = (p > 0.5) == (y_all[test] > 0.5)
    acc = float(correct.mean())
    return {"accuracy": acc, "distance": max(0.0, 2 * acc - 1), "correct": correct.tolist(), "n": 2 * n}


def _c2st_net(shape):
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    x = inputs
    for f in (16, 32, 64):
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    net = keras.Model(inputs, outputs)
    # 64 training steps per call into the backend: the same steps, less of Keras's per-step overhead
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", steps_per_execution=64)
    return net


def _deterministic() -> None:
    """Same seed, same classifier: TensorFlow's op determinism (the study's stages run with it on anyway)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def identity_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Euclidean distance of two face embeddings; NaN when either could not be computed."""
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def batch_region_metrics(pred: np.ndarray, truth: np.ndarray, masked: np.ndarray) -> dict[str, float]:
    """Fast mean ``mse``, ``masked_l1`` and ``masked_psnr`` (pooled over the batch's masked pixels), for the
    training logs."""
    mask = region(masked, truth)
    d = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    out = {"mse": float(np.mean(d * d))}
    if mask.any():
        dm = d[mask]
        out["masked_l1"] = float(np.mean(np.abs(dm)))
        out["masked_psnr"] = _psnr_from_mse(float(np.mean(dm * dm)))
    return out
