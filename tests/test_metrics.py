import numpy as np
import pytest

from conftest import DEFAULT_MASK, STYLEGAN
from unmasking import metrics


def test_identical_images():
    a = np.random.default_rng(0).random((32, 32, 3))
    assert metrics.mse(a, a) == 0
    assert metrics.psnr(a, a) == metrics.MAX_PSNR
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.accuracy_paper(a, a) == 1.0


def test_known_constant_error():
    a = np.full((32, 32, 3), 0.5)
    b = a + 0.1
    assert metrics.mse(b, a) == pytest.approx(0.01)
    assert metrics.psnr(b, a) == pytest.approx(20.0)
    from skimage.metrics import peak_signal_noise_ratio

    assert metrics.psnr(b, a) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1))


def test_masked_region_of_known_size():
    truth = np.full((20, 20, 3), 0.5)
    masked = truth.copy()
    masked[10:15, 4:14] = 1.0  # a 5 x 10 region
    region = metrics.region(masked, truth)
    assert region.sum() == 50
    pred = truth.copy()
    pred[10:15, 4:14] += 0.2  # error 0.2 inside the region only
    pred[0:2] += 0.3  # and some error outside it, which the masked metrics must ignore
    assert metrics.masked_l1(pred, truth, region) == pytest.approx(0.2)
    assert metrics.masked_psnr(pred, truth, region) == pytest.approx(10 * np.log10(1 / 0.04))
    m = metrics.image_metrics(pred, truth, masked)
    assert m["masked_l1"] == pytest.approx(0.2) and m["mse"] > 0
    assert np.isnan(metrics.masked_l1(pred, truth, np.zeros((20, 20), bool)))


def test_ssim_is_scikit_images():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(5)
    for h, w in ((128, 128), (7, 30), (41, 9)):
        a = rng.random((h, w, 3))
        b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
        assert metrics.ssim(a, b) == pytest.approx(structural_similarity(a, b, data_range=1.0, channel_axis=-1),
                                                   abs=1e-13)


def test_masked_ssim_uses_the_bounding_box():
    rng = np.random.default_rng(3)
    truth = rng.random((40, 40, 3))
    masked = truth.copy()
    masked[20:30, 10:30] = 1.0
    pred = truth.copy()
    pred[:5] = 0  # outside the box: no effect
    assert metrics.masked_ssim(pred, truth, metrics.region(masked, truth)) == pytest.approx(1.0)


def test_accuracy_paper_is_keras_categorical_accuracy():
    import keras

    rng = np.random.default_rng(7)
    y_true = rng.random((4, 16, 16, 3)).astype("float32")
    y_pred = rng.random((4, 16, 16, 3)).astype("float32")
    m = keras.metrics.CategoricalAccuracy()
    m.update_state(y_true, y_pred)
    assert metrics.accuracy_paper(y_pred, y_true) == pytest.approx(float(m.result()), abs=1e-6)


def test_keras_resolves_accuracy_to_categorical_for_images():
    import keras
    from keras.src.trainers.compile_utils import get_metric

    y = np.zeros((2, 8, 8, 3), "float32")
    assert isinstance(get_metric("accuracy", y, y), keras.metrics.CategoricalAccuracy)


def test_identity_distance():
    a, b = np.zeros(128), np.full(128, 0.05)
    assert metrics.identity_distance(a, b) == pytest.approx(np.sqrt(128) * 0.05)
    assert np.isnan(metrics.identity_distance(None, b))


# ---------------------------------------------------------------------------------------------------------------------
# The masked region of a lossy (JPEG) pair


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _textured_pair(size: int = 96, seed: int = 0):
    """A textured face-sized image and a copy with a white, mask-shaped blob pasted over its lower half."""
    from conftest import face_like, white_mask

    u = face_like(np.random.default_rng(seed), size)
    m = white_mask(u)
    return m, u, (m != u).any(-1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_lossy_region_equals_the_exact_region_on_a_lossless_pair():
    m, u, true = _textured_pair()
    assert _iou(metrics.lossy_region(m, u), true) > 0.97


@pytest.mark.parametrize("quality", [75, 90])
def test_lossy_region_survives_jpeg_where_pixels_that_differ_do_not(quality):
    m, u, true = _textured_pair()
    mj = _jpeg(m, quality)
    assert metrics.region(mj / 255, u / 255).mean() > 3 * true.mean()  # "pixels that differ": most of the image
    assert _iou(metrics.lossy_region(mj, u), true) > 0.9
    both = _jpeg(u, quality)  # both images recompressed, as photos are
    assert _iou(metrics.lossy_region(mj, both), true) > 0.9


@pytest.mark.skipif(not DEFAULT_MASK.is_file(), reason="../shared/data is not present")
def test_lossy_region_of_a_real_overlay_saved_as_jpeg():
    from unmasking import data, images, masks

    u = images.read_rgb(sorted(STYLEGAN.glob("*.jpg"))[0])
    m = masks.apply_mask(u, data.find_landmarks(u), masks.load_template(DEFAULT_MASK))
    exact = (m != u).any(-1)
    lossless = metrics.lossy_region(m, u)
    jpeg = metrics.lossy_region(_jpeg(m, 90), _jpeg(u, 90))
    assert _iou(lossless, exact) > 0.85 and _iou(jpeg, exact) > 0.85 and _iou(jpeg, lossless) > 0.95


def test_lossy_region_of_identical_images_is_empty():
    _, u, _ = _textured_pair()
    assert not metrics.lossy_region(u, u).any()


# ---------------------------------------------------------------------------------------------------------------------
# Realism: the masked-region detail ratio and the classifier two-sample test


def _structured(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """``n`` images with sharp, random structure (lines, discs and edges on a smooth background): stand-ins for the
    detail of a mouth and nose, float in [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        img = np.full((size, size, 3), rng.uniform(0.4, 0.7, 3), np.float32)
        for _ in range(6):
            c = tuple(float(v) for v in rng.uniform(0, 1, 3))
            p = tuple(int(v) for v in rng.integers(0, size, 2))
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            if rng.random() < 0.5:
                cv2.line(img, p, q, c, int(rng.integers(1, 3)))
            else:
                cv2.circle(img, p, int(rng.integers(2, size // 5)), c, -1)
        out[i] = img
    return out


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return np.stack([cv2.GaussianBlur(i, (0, 0), sigma) for i in x]) if sigma else x


def _noisy(x: np.ndarray, std: float, seed: int = 1) -> np.ndarray:
    return np.clip(x + np.random.default_rng(seed).normal(0, std, x.shape).astype(np.float32), 0, 1)


def test_detail_ratio_is_one_for_the_truth_and_falls_with_blur_and_rises_with_noise():
    x = _structured(8)
    region = np.zeros(x.shape[1:3], bool)
    region[8:40, 8:40] = True
    assert metrics.detail_ratio(x[0], x[0], region) == pytest.approx(1.0)
    ratios = [np.mean([metrics.detail_ratio(b, t, region) for b, t in zip(_blur(x, s), x)]) for s in (0.7, 1.5, 3.0)]
    assert ratios[0] > ratios[1] > ratios[2] and ratios[2] < 0.3
    blurred = _blur(x, 3.0)
    noisy = _noisy(blurred, 0.05)
    assert np.mean([metrics.detail_ratio(n, t, region) for n, t in zip(noisy, x)]) > ratios[2] + 0.3


def test_detail_ratio_ignores_everything_outside_the_region():
    x = _structured(1)[0]
    region = np.zeros(x.shape[:2], bool)
    region[10:30, 10:30] = True
    y = x.copy()
    y[35:] = 0.5  # flat outside the region, eroded border included
    assert metrics.detail_ratio(y, x, region) == pytest.approx(1.0)


def test_c2st_real_against_real_is_indistinguishable():
    real = _structured(240, seed=0)
    other = _structured(240, seed=99)
    r = metrics.c2st(real, other, seed=0)
    assert 0.35 <= r["accuracy"] <= 0.65
    assert r["distance"] <= 0.3 and len(r["correct"]) == 480


def test_c2st_grows_with_blur_and_noise_does_not_fool_it():
    real = _structured(240, seed=0)
    acc = [metrics.c2st(real, _blur(real, s), seed=0)["accuracy"] for s in (0.6, 1.2, 2.5)]
    assert acc[0] <= acc[1] + 0.03 and acc[1] <= acc[2] + 0.03 and acc[2] > 0.85
    blurred = _blur(real, 2.5)
    assert metrics.c2st(real, _noisy(blurred, 0.05), seed=0)["accuracy"] > 0.85


def test_c2st_is_seeded():
    real, fake = _structured(64, seed=0), _blur(_structured(64, seed=0), 1.5)
    assert metrics.c2st(real, fake, seed=3) == metrics.c2st(real, fake, seed=3)


def test_region_crops_take_the_bounding_box_at_a_fixed_size():
    img = np.zeros((64, 64, 3), np.float32)
    img[20:40, 10:50] = 1.0
    region = img[..., 0] > 0
    crops = metrics.region_crops(img[None], region[None], size=16)
    assert crops.shape == (1, 16, 16, 3) and crops.min() > 0.99
