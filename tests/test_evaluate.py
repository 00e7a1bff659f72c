"""The evaluation (lib/unmasking/evaluate.py): predictions, identity scoring, intervals, comparisons, one layout."""

import numpy as np
import pytest

pytest.importorskip("keras")

from unmasking import dlibnet, evaluate, faces, images, models  # noqa: E402

EP = {"flip_average": ["mask_unet"], "batch_size": 8, "telea_radius": 3, "identity_threshold": 0.6, "bootstrap": 200,
      "c2st_epochs": 2, "workers": 1}


def _masked_batch(n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_flip_average_is_the_mean_of_the_prediction_and_of_its_mirror():
    m = models.mask_unet(32, (4, 8, 8, 8))
    x = _masked_batch()
    plain = models.predict_faces(m, x / np.float32(255))
    mirror = models.predict_faces(m, x[:, :, ::-1] / np.float32(255))[:, :, ::-1]
    got = models.unmask(m, x, flip_average=True)
    assert np.array_equal(got.faces, images.to_uint8((plain + mirror) / 2))
    assert np.array_equal(models.unmask(m, x).faces, images.to_uint8(plain))
    assert not np.array_equal(got.faces, models.unmask(m, x).faces)  # an untrained net is not mirror-symmetric
    # the averaged method is mirror-equivariant: the mirror of a face gives the mirror of its output
    assert np.abs(models.unmask(m, x[:, :, ::-1], flip_average=True).faces.astype(int)
                  - got.faces[:, :, ::-1]).max() <= 1
    assert got.masks.shape == x.shape[:3] and 0 <= got.masks.min() and got.masks.max() <= 1
    assert models.unmask(models.paper_ae(32, (4, 8, 8)), x).masks is None  # no mask estimate


def test_predict_gives_kerass_numbers_batch_by_batch():
    m = models.mask_unet(32, (4, 8, 8, 8))
    x = _masked_batch(5) / np.float32(255)
    want = m.predict(x, batch_size=2, verbose=0)
    for bs in (2, 3, 8):  # a short last batch, and one batch for all
        got = models.predict(m, x, bs)
        assert got.dtype == np.float32 and np.array_equal(got, want)
    assert models.predict(m, x[:0]).shape == (0, 32, 32, 4)


def test_flip_averaged_follows_the_parameter_by_the_models_own_name():
    unet, ae = models.mask_unet(32, (4, 8, 8, 8)), models.paper_ae(32, (4, 8, 8))
    assert models.flip_averaged(unet, {"flip_average": ["mask_unet"]})
    assert not models.flip_averaged(ae, {"flip_average": ["mask_unet"]})
    assert not models.flip_averaged(unet, {"flip_average": []})
    gan = models.mask_unet(32, (4, 8, 8, 8), name="mask_gan")
    assert not models.flip_averaged(gan, {"flip_average": ["mask_unet"]})


def _stand_ins(monkeypatch, calls):
    def detect(img, upsample=0):
        calls["detect"] += 1
        return [(2, 2, 30, 30)]

    def face_chips(imgs, box):
        return np.stack(imgs) if imgs else np.zeros((0, 32, 32, 3), np.uint8)  # stand-ins for aligned chips

    def descriptors(chips):
        calls["embed"] += [c.tobytes() for c in chips]
        return np.stack([np.concatenate([c.mean((0, 1)), np.zeros(125)]) / 255 for c in chips])  # dlib's 128-D

    monkeypatch.setattr(faces, "detect_faces", detect)
    monkeypatch.setattr(faces, "face_chips", face_chips)
    monkeypatch.setattr(dlibnet, "descriptors", descriptors)


def test_truth_cache_computes_each_true_face_once_and_changes_no_distance(monkeypatch):
    calls = {"detect": 0, "embed": []}
    _stand_ins(monkeypatch, calls)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    outs_a = {"a": rng.integers(0, 256, truth.shape, dtype=np.uint8), "b": truth.copy()}
    outs_b = {"a": rng.integers(0, 256, truth.shape, dtype=np.uint8), "b": truth.copy()}
    set_a = evaluate.PairSet("a", outs_a["a"], truth, list("0123"), ["m"] * 4)
    set_b = evaluate.PairSet("b", outs_b["a"], truth, list("0123"), ["m"] * 4)

    plain_a = evaluate.identity_scores(set_a, outs_a, workers=1, progress=False)
    plain_b = evaluate.identity_scores(set_b, outs_b, workers=1, progress=False)
    assert calls["detect"] == 8 and len(calls["embed"]) == 8 * 3

    calls.update(detect=0, embed=[])
    cache = {}
    got_a = evaluate.identity_scores(set_a, outs_a, workers=1, progress=False, truth_cache=cache)
    got_b = evaluate.identity_scores(set_b, outs_b, workers=1, progress=False, truth_cache=cache)
    assert calls["detect"] == 4 and len(calls["embed"]) == 4 * 3 + 4 * 2  # the second set embeds its outputs only
    assert len(cache) == 4 and got_b["fallbacks"] == 0
    for got, plain in ((got_a, plain_a), (got_b, plain_b)):
        for k in ("a", "b"):
            assert np.array_equal(got["same_photo"][k], plain["same_photo"][k])
    assert np.all(got_b["same_photo"]["b"] == 0) and np.all(got_b["same_photo"]["a"] > 0)
    assert np.isnan(got_a["verification"]["a"]).all()  # no reference photos in this set

    # a different face with the same cache is computed, not taken from another face
    calls.update(detect=0, embed=[])
    other = 255 - truth[:1]
    evaluate.identity_scores(evaluate.PairSet("c", other, other, ["0"], ["m"]), {"a": other}, workers=1,
                             progress=False, truth_cache=cache)
    assert calls["detect"] == 1 and len(cache) == 5


def test_verification_scores_against_the_reference_and_the_ceiling(monkeypatch):
    calls = {"detect": 0, "embed": []}
    _stand_ins(monkeypatch, calls)
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = truth.copy()
    ref = [np.concatenate([truth[0].mean((0, 1)), np.zeros(125)]) / 255, None, np.zeros(128)]
    s = evaluate.PairSet("t", truth, truth, list("012"), ["m"] * 3, same_photo_n=0, references=ref)
    got = evaluate.identity_scores(s, {"x": out}, workers=1, progress=False)
    assert got["verification"]["x"][0] == pytest.approx(0) and np.isnan(got["verification"]["x"][1])
    assert got["verification"]["x"][2] > 0 and np.isnan(got["same_photo"]["x"]).all()
    assert got["ceiling"][0] == pytest.approx(0)
    assert calls["detect"] == 2  # the pair without a reference is not embedded at all


def test_run_returns_one_layout_with_intervals_and_paired_comparisons(monkeypatch):
    calls = {"detect": 0, "embed": []}
    _stand_ins(monkeypatch, calls)
    rng = np.random.default_rng(2)
    u = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    m = u.copy()
    m[:, 18:28, 8:24] = 240
    trained = {"paper_ae": models.paper_ae(32, (4, 8, 8)), "mask_unet": models.mask_unet(32, (4, 8, 8, 8))}
    s = evaluate.PairSet("test", m, u, [f"p{i}" for i in range(6)], ["a", "b"] * 3, realism=True)
    ev = evaluate.run(trained, [s], EP, seed=0, progress=False)
    entry = ev.result["sets"]["test"]
    assert entry["n"] == 6 and set(entry["by_mask"]) == {"a", "b"}
    assert list(entry["methods"]) == ["masked_input", "telea", "telea_oracle", "paper_ae", "mask_unet"]
    unet = entry["methods"]["mask_unet"]
    lo, hi = unet["masked_psnr_ci95"]
    assert lo <= unet["masked_psnr"] <= hi and unet["same_photo_n"] == 6 and "c2st_distance" in unet
    assert "verification_rate" not in unet  # no references
    assert ev.result["flip_averaged"] == ["mask_unet"] and ev.result["headline"][0] == "accuracy_paper"
    comp = ev.result["comparisons"]["test"]["mask_unet - paper_ae"]["masked_psnr"]
    assert comp["n"] == 6 and comp["ci95"][0] <= comp["difference"] <= comp["ci95"][1]
    assert len(ev.rows) == 6 * 5 and ev.examples["test"]["outputs"]["mask_unet"].shape == u.shape
    # the masked input scores its own region exactly: its masked L1 is the mask's distance from the face
    assert entry["methods"]["masked_input"]["masked_l1"] > 0.2


def test_a_set_brings_its_own_outputs_and_region():
    u = np.full((2, 40, 50, 3), 100, np.uint8)
    m = u.copy()
    m[:, 20:30, 10:40] = 250
    region = np.zeros((2, 40, 50), bool)
    region[:, 20:30, 10:40] = True
    out = u.copy()
    out[:, 25:30] = 110  # error inside the region only
    s = evaluate.PairSet("photos", list(m), list(u), ["a", "b"], ["x", "x"], regions=list(region), same_photo_n=0,
                         outputs={"masked_input": list(m), "model": list(out)})
    methods = evaluate.run({}, [s], EP, progress=False).result["sets"]["photos"]["methods"]
    assert methods["model"]["masked_l1"] == pytest.approx(10 / 255 / 2, rel=1e-4)
    assert methods["masked_input"]["masked_l1"] == pytest.approx(150 / 255, rel=1e-4)


def test_unmask_resizes_inputs_of_another_size_to_the_model_and_back():
    m = models.mask_unet(32, (4, 8, 8, 8))
    x = _masked_batch(2, 48)
    got = models.unmask(m, x, flip_average=True)
    small = models.unmask(m, np.stack([images.resize(i, 32) for i in x]), flip_average=True)
    assert got.faces.shape == x.shape and got.masks.shape == x.shape[:3]
    assert np.array_equal(got.faces, np.stack([images.resize(f, 48) for f in small.faces]))
    assert np.array_equal(got.masks, np.stack([images.resize_float(k, (48, 48)) for k in small.masks]))
