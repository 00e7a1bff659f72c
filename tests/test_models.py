import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import TINY_MASK_UNET  # noqa: E402
from unmasking import models  # noqa: E402


def test_paper_ae_is_the_papers_autoencoder():
    m = models.paper_ae(64, (8, 16, 32))
    assert m.output_shape == (None, 64, 64, 3)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds.count("MaxPooling2D") == 3 and kinds.count("UpSampling2D") == 3
    assert m.layers[-1].activation.__name__ == "sigmoid"
    assert m.loss == "mse" and isinstance(m.optimizer, keras.optimizers.Adam)
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
    m.fit(x, x, epochs=1, verbose=0)
    got = m.evaluate(x, x, verbose=0, return_dict=True)
    assert "accuracy" in got  # Keras's "accuracy", resolved to CategoricalAccuracy (see test_metrics)


def test_mask_unet_keeps_the_input_where_it_sees_no_mask():
    m = models.mask_unet(32, (4, 8, 8, 8))
    assert m.output_shape == (None, 32, 32, 4)
    head = m.get_layer("mask")
    w, b = head.get_weights()
    head.set_weights([np.zeros_like(w), np.full_like(b, -30.0)])  # m = sigmoid(-30) ~ 0 everywhere
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    y = m.predict(x, verbose=0)
    assert np.allclose(y[..., :3], x, atol=1e-6)
    head.set_weights([np.zeros_like(w), np.full_like(b, 30.0)])  # m ~ 1: the face head everywhere
    face = keras.Model(m.input, m.get_layer("face").output).predict(x, verbose=0)
    assert np.allclose(m.predict(x, verbose=0)[..., :3], face, atol=1e-5)


def test_mask_unet_batch_norm_is_a_parameter():
    def kinds(m):
        return [type(layer).__name__ for layer in m.layers]

    with_bn = models.mask_unet(32, (4, 8, 8, 8), batch_norm=True)
    without = models.mask_unet(32, (4, 8, 8, 8), batch_norm=False)
    # stem 1, encoder 3 x 2, bottleneck 2, decoder 3 x 2; the full-size refinement has none
    assert kinds(with_bn).count("BatchNormalization") == 15
    assert "BatchNormalization" not in kinds(without)
    assert with_bn.output_shape == without.output_shape == (None, 32, 32, 4)


def test_unmask_loss_rewards_the_right_answer():
    loss = models.UnmaskLoss(hole_weight=6, mask_weight=0.5, ssim_weight=0.2)
    rng = np.random.default_rng(2)
    t = rng.random((2, 16, 16, 3)).astype("float32")
    mt = np.zeros((2, 16, 16, 1), "float32")
    mt[:, 8:] = 1
    y_true = np.concatenate([t, mt], -1)
    perfect = np.concatenate([t, mt * 0.999 + 0.0005], -1)
    wrong = np.concatenate([1 - t, 1 - mt], -1)
    assert float(loss(y_true, perfect)) < 0.01 < float(loss(y_true, wrong))


def test_unmask_loss_log_mse_term_is_the_per_image_masked_psnr():
    rng = np.random.default_rng(4)
    t = rng.random((2, 16, 16, 3)).astype("float32")
    mt = np.zeros((2, 16, 16, 1), "float32")
    mt[:, 8:] = 1
    y_true = np.concatenate([t, mt], -1)
    out = np.clip(t + rng.normal(0, [[[[0.05]]], [[[0.2]]]], t.shape), 0, 1).astype("float32")
    y_pred = np.concatenate([out, mt * 0.5 + 0.25], -1)
    base = models.UnmaskLoss(hole_weight=1, mask_weight=0.5, ssim_weight=0)
    with_log = models.UnmaskLoss(hole_weight=1, mask_weight=0.5, ssim_weight=0, log_mse_weight=0.1)
    mse_hole = ((out - t) ** 2 * mt).sum(axis=(1, 2, 3)) / (3 * mt.sum(axis=(1, 2, 3)) + 1)
    expected = 0.1 * np.log(mse_hole + 1e-4)  # = -0.1 ln(10) / 10 x the image's masked-region PSNR (dB)
    per_image = [float(with_log(y_true[i:i + 1], y_pred[i:i + 1]) - base(y_true[i:i + 1], y_pred[i:i + 1]))
                 for i in range(2)]
    assert np.allclose(per_image, expected, atol=1e-5)
    assert with_log.get_config()["log_mse_weight"] == 0.1


def test_save_and_load_round_trip(tmp_path):
    m = models.build("mask_unet", 32, TINY_MASK_UNET)
    m.save(tmp_path / "m.keras")
    back = models.load(tmp_path / "m.keras")
    x = np.random.default_rng(3).random((1, 32, 32, 3)).astype("float32")
    assert np.allclose(m.predict(x, verbose=0), back.predict(x, verbose=0), atol=1e-6)
