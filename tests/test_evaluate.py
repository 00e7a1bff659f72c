"""The evaluation's predictions and identity scoring (lib/unmasking/evaluate.py)."""

import numpy as np
import pytest

pytest.importorskip("keras")

from unmasking import evaluate, faces, images, models  # noqa: E402


def _masked_batch(n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_flip_average_is_the_mean_of_the_prediction_and_of_its_mirror():
    m = models.mask_unet(32, (4, 8, 8, 8))
    x = _masked_batch()
    plain = models.predict_faces(m, x / np.float32(255))
    mirror = models.predict_faces(m, x[:, :, ::-1] / np.float32(255))[:, :, ::-1]
    got = evaluate.model_outputs(m, x, flip_average=True)
    assert np.array_equal(got, images.to_uint8((plain + mirror) / 2))
    assert np.array_equal(evaluate.model_outputs(m, x), images.to_uint8(plain))
    assert not np.array_equal(got, evaluate.model_outputs(m, x))  # an untrained net is not mirror-symmetric
    # the averaged method is mirror-equivariant: the mirror of a face gives the mirror of its output
    assert np.abs(evaluate.model_outputs(m, x[:, :, ::-1], flip_average=True).astype(int)
                  - got[:, :, ::-1]).max() <= 1


def test_flip_averaged_follows_the_parameter_by_the_models_own_name():
    unet, ae = models.mask_unet(32, (4, 8, 8, 8)), models.paper_ae(32, (4, 8, 8))
    assert evaluate.flip_averaged(unet, {"flip_average": ["mask_unet"]})
    assert not evaluate.flip_averaged(ae, {"flip_average": ["mask_unet"]})
    assert not evaluate.flip_averaged(unet, {"flip_average": []})


def test_truth_cache_computes_each_true_face_once_and_changes_no_distance(monkeypatch):
    calls = {"detect": 0, "embed": []}

    def detect(img, upsample=0):
        calls["detect"] += 1
        return [(2, 2, 30, 30)]

    def embed(img, box=None, jitter=0):
        calls["embed"].append(img.tobytes())
        return np.concatenate([img.mean((0, 1)), np.zeros(125)]) / 255  # a stand-in for dlib's 128-D embedding

    monkeypatch.setattr(faces, "detect_faces", detect)
    monkeypatch.setattr(faces, "embedding", embed)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    outs_a = {"a": rng.integers(0, 256, truth.shape, dtype=np.uint8), "b": truth.copy()}
    outs_b = {"a": rng.integers(0, 256, truth.shape, dtype=np.uint8), "b": truth.copy()}

    plain_a, _ = evaluate.identity_distances(truth, outs_a, workers=1, progress=False)
    plain_b, _ = evaluate.identity_distances(truth, outs_b, workers=1, progress=False)
    assert calls["detect"] == 8 and len(calls["embed"]) == 8 * 3

    calls.update(detect=0, embed=[])
    cache = {}
    got_a, _ = evaluate.identity_distances(truth, outs_a, workers=1, progress=False, truth_cache=cache)
    got_b, fallbacks = evaluate.identity_distances(truth, outs_b, workers=1, progress=False, truth_cache=cache)
    assert calls["detect"] == 4 and len(calls["embed"]) == 4 * 3 + 4 * 2  # the second set embeds its outputs only
    assert len(cache) == 4 and fallbacks == 0
    for got, plain in ((got_a, plain_a), (got_b, plain_b)):
        assert set(got) == {"a", "b"}
        for k in got:
            assert np.array_equal(got[k], plain[k])
    assert np.all(got_b["b"] == 0) and np.all(got_b["a"] > 0)

    # a different face with the same cache is computed, not taken from another face
    calls.update(detect=0, embed=[])
    other = 255 - truth[:1]
    evaluate.identity_distances(other, {"a": other}, workers=1, progress=False, truth_cache=cache)
    assert calls["detect"] == 1 and len(cache) == 5
