import numpy as np
import pytest

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
    from keras.src.trainers.compile_utils import get_metric
    import keras

    y = np.zeros((2, 8, 8, 3), "float32")
    assert isinstance(get_metric("accuracy", y, y), keras.metrics.CategoricalAccuracy)


def test_identity_distance():
    a, b = np.zeros(128), np.full(128, 0.05)
    assert metrics.identity_distance(a, b) == pytest.approx(np.sqrt(128) * 0.05)
    assert np.isnan(metrics.identity_distance(None, b))
