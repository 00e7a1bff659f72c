"""Training: one step per model, resume after a kill, determinism, backends and data-parallel devices."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, make_fml, tiny_params
from unmasking import data
from unmasking import params as P


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    root = make_fml(tmp / "fml", 40, size=48)
    dl = yaml.safe_load((ROOT / "params.yaml").read_text())["download"]
    dl.update({"source": "local", "local": str(root), "n_pairs": 40, "image_size": 32, "min_pairs": 5, "workers": 1})
    data.build_subset(dl, 0, tmp / "subset", progress=False)
    return tmp / "subset"


def _train_params(tmp_path: Path, epochs: int = 1, steps: int = 1) -> dict:
    p = P.load(tiny_params(tmp_path, local="unused"))
    tp = p["train"]
    tp["steps_per_epoch"] = steps
    for n in P.MODEL_NAMES:
        tp[n]["epochs"] = epochs
    return tp


def _weights(path: Path):
    from unmasking import models

    return models.load(path).get_weights()


@pytest.mark.parametrize("name", ["mask_unet", "mask_gan"])  # paper_ae: the mid-epoch kill test
def test_one_step_writes_weights_card_and_history(tmp_path, subset, name):
    from unmasking import train

    tp = _train_params(tmp_path)
    if name == "mask_gan":  # it starts from the trained mask_unet
        train.train_model("mask_unet", tp, subset, tmp_path / "models", tmp_path / "reports", 1, 32,
                          log=lambda *_: None)
    card = train.train_model(name, tp, subset, tmp_path / "models", tmp_path / "reports", 1, 32, log=lambda *_: None)
    assert (tmp_path / "models" / f"{name}.keras").is_file()
    saved = json.loads((tmp_path / "models" / f"{name}.json").read_text())
    assert saved == card and card["epochs_run"] == 1 and card["train_pairs"] > 0 and card["val_pairs"] > 0
    assert card["data_source"] == "local" and card["wall_time_s"] > 0 and card["train_images_per_s"] > 0
    assert card["device"].startswith("CPU") and card["validation"]["pairs"] == card["val_pairs"]
    assert set(card["validation"]) >= {"one_pass", "flip_averaged", "flip_gain_masked_psnr"}
    hist = train.read_history(tmp_path / "reports", name)
    assert len(hist) == 1 and np.isfinite(hist[0]["val_masked_l1"])
    live = json.loads((tmp_path / "reports" / "train" / name / "metrics.json").read_text())
    assert live["epochs_run"] == 1 and live["selected_epoch"] == 1  # dvclive's summary, for dvc exp show
    assert not (tmp_path / "models" / "checkpoints" / name).exists()
    from unmasking import models

    assert models.load(tmp_path / "models" / f"{name}.keras").name == name


@pytest.mark.parametrize("name", ["paper_ae", "mask_unet", "mask_gan"])
def test_training_never_reads_the_test_split(tmp_path, subset, monkeypatch, name):
    from unmasking import train

    tp = _train_params(tmp_path)
    if name == "mask_gan":
        train.train_model("mask_unet", tp, subset, tmp_path / "m", tmp_path / "r", 1, 32, log=lambda *_: None)
    seen = []
    real = data.load_pairs
    monkeypatch.setattr(data, "load_pairs",
                        lambda d, splits=("train",), **kw: seen.append(tuple(splits)) or real(d, splits, **kw))
    train.train_model(name, tp, subset, tmp_path / "m", tmp_path / "r", 1, 32, log=lambda *_: None)
    assert seen and all("test" not in s for s in seen)


KILL_AFTER_FIRST_EPOCH = textwrap.dedent("""
    import os, sys, json
    from pathlib import Path
    from unmasking import train
    real = train._EpochState.end
    def dying(self, *args):
        real(self, *args)
        os._exit(9)  # killed right after epoch 1 was checkpointed
    train._EpochState.end = dying
    tp = json.loads(sys.argv[1])
    train.train_model(sys.argv[2], tp, Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), 1, 32)
""")


KILL_MID_EPOCH = textwrap.dedent("""
    import os, sys, json
    from pathlib import Path
    import keras
    from unmasking import train
    real_step = keras.Model.train_on_batch
    def step(self, *a, **k):
        logs = real_step(self, *a, **k)
        if int(keras.ops.convert_to_numpy(self.optimizer.iterations)) == 3:  # epoch 2, after its first batch
            os._exit(9)
        return logs
    keras.Model.train_on_batch = step
    tp = json.loads(sys.argv[1])
    train.train_model(sys.argv[2], tp, Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), 1, 32)
""")


def test_kill_mid_epoch_resumes_from_the_last_checkpoint(tmp_path, subset):
    from unmasking import train

    tp = _train_params(tmp_path, epochs=2, steps=2)
    train.train_model("paper_ae", tp, subset, tmp_path / "full", tmp_path / "rf", 1, 32, log=lambda *_: None)
    r = subprocess.run([sys.executable, "-c", KILL_MID_EPOCH, json.dumps(tp), "paper_ae", str(subset),
                        str(tmp_path / "res"), str(tmp_path / "rr")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr[-2000:]
    assert json.loads((tmp_path / "res" / "checkpoints" / "paper_ae" / "state.json").read_text())["epoch"] == 1
    assert not (tmp_path / "res" / "paper_ae.keras").exists()  # no final weights from a killed run
    logs = []
    train.train_model("paper_ae", tp, subset, tmp_path / "res", tmp_path / "rr", 1, 32, log=logs.append)
    assert any("resuming after epoch 1" in line for line in logs)
    for a, b in zip(_weights(tmp_path / "full" / "paper_ae.keras"), _weights(tmp_path / "res" / "paper_ae.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["paper_ae", "mask_unet", "mask_gan"])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, subset, name):
    from unmasking import train

    tp = _train_params(tmp_path, epochs=2, steps=2)
    if name == "mask_gan":  # both runs start from the same trained mask_unet
        train.train_model("mask_unet", dict(tp, mask_unet=dict(tp["mask_unet"], epochs=1)), subset, tmp_path / "full",
                          tmp_path / "rfull", 1, 32, log=lambda *_: None)
        (tmp_path / "resumed").mkdir()
        shutil.copy(tmp_path / "full" / "mask_unet.keras", tmp_path / "resumed" / "mask_unet.keras")
    train.train_model(name, tp, subset, tmp_path / "full", tmp_path / "rep_full", 1, 32, log=lambda *_: None)
    r = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, json.dumps(tp), name, str(subset),
                        str(tmp_path / "resumed"), str(tmp_path / "rep_resumed")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 9, r.stderr[-2000:]
    state = json.loads((tmp_path / "resumed" / "checkpoints" / name / "state.json").read_text())
    assert state["epoch"] == 1
    logs = []
    card = train.train_model(name, tp, subset, tmp_path / "resumed", tmp_path / "rep_resumed", 1, 32, log=logs.append)
    assert any("resuming after epoch 1" in line for line in logs)
    assert [line for line in logs if "epoch 1:" in line] == []  # epoch 1 was not trained again
    assert card["epochs_run"] == 2
    for a, b in zip(_weights(tmp_path / "full" / f"{name}.keras"), _weights(tmp_path / "resumed" / f"{name}.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    h_full = train.read_history(tmp_path / "rep_full", name)
    h_res = train.read_history(tmp_path / "rep_resumed", name)
    assert [round(h["val_loss"], 5) for h in h_full] == [round(h["val_loss"], 5) for h in h_res]
    assert len(h_res) == 2


def test_a_checkpoint_of_other_code_is_not_resumed(tmp_path, subset, monkeypatch):
    from unmasking import train

    tp = _train_params(tmp_path, epochs=2, steps=2)
    r = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, json.dumps(tp), "paper_ae", str(subset),
                        str(tmp_path / "m"), str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr[-2000:]
    monkeypatch.setattr(train, "code_hash", lambda: "another model or loss")
    logs = []
    card = train.train_model("paper_ae", tp, subset, tmp_path / "m", tmp_path / "r", 1, 32, log=logs.append)
    assert any("another configuration or code; starting over" in line for line in logs)
    assert not any("resuming" in line for line in logs) and card["epochs_run"] == 2


def test_same_seed_same_weights(tmp_path, subset):
    from unmasking import train

    tp = _train_params(tmp_path, steps=2)
    for d in ("a", "b"):
        train.train_model("mask_unet", tp, subset, tmp_path / d, tmp_path / f"r{d}", 3, 32, log=lambda *_: None)
    for a, b in zip(_weights(tmp_path / "a" / "mask_unet.keras"), _weights(tmp_path / "b" / "mask_unet.keras")):
        np.testing.assert_array_equal(a, b)  # TensorFlow CPU with op determinism: bit-identical


def test_mask_unet_starts_from_the_weights_of_a_model_of_another_size(tmp_path, subset):
    from unmasking import models, train

    tp = _train_params(tmp_path, epochs=0)
    small = models.build("mask_unet", 48, tp["mask_unet"])
    small.save(tmp_path / "small.keras")
    tp["mask_unet"]["init_weights"] = str(tmp_path / "small.keras")
    card = train.train_model("mask_unet", tp, subset, tmp_path / "m", tmp_path / "r", 1, 32, log=lambda *_: None)
    got = models.load(tmp_path / "m" / "mask_unet.keras")
    assert got.input_shape[1] == 32 and card["init_sha256"] and card["params"]["init_weights"]
    for a, b in zip(small.get_weights(), got.get_weights()):
        np.testing.assert_array_equal(a, b)  # no epoch: the 32 px model holds the 48 px model's weights
    tp["mask_unet"]["init_weights"] = str(tmp_path / "none.keras")
    with pytest.raises(FileNotFoundError, match="init_weights"):
        train.train_model("mask_unet", tp, subset, tmp_path / "m2", tmp_path / "r2", 1, 32, log=lambda *_: None)


ONE_STEP = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    {setup}
    from unmasking import train
    tp = json.loads(sys.argv[1])
    for name in {names}:
        card = train.train_model(name, tp, Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), 1, 32)
        print("OK", name, card["backend"])
""")

BACKENDS = [b for b, mod in [("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")]
            if importlib.util.find_spec(mod)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_installed_backend_trains_one_step(tmp_path, subset, backend):
    tp = _train_params(tmp_path)
    tp["deterministic"] = backend == "tensorflow"
    env = dict(os.environ, KERAS_BACKEND=backend)
    script = ONE_STEP.format(setup="", names=P.MODEL_NAMES)
    r = subprocess.run([sys.executable, "-c", script, json.dumps(tp), str(subset),
                        str(tmp_path / "m"), str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"OK mask_unet {backend}" in r.stdout and f"OK mask_gan {backend}" in r.stdout


def test_data_parallel_on_two_logical_cpus(tmp_path, subset):
    setup = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        assert len(tf.config.list_logical_devices("CPU")) == 2
    """)
    tp = _train_params(tmp_path)
    tp["distribute"] = True
    tp["deterministic"] = False
    script = ONE_STEP.format(setup=setup, names=("mask_unet",))
    r = subprocess.run([sys.executable, "-c", script, json.dumps(tp), str(subset),
                        str(tmp_path / "m"), str(tmp_path / "r")], capture_output=True, text=True,
                       env=dict(os.environ, KERAS_BACKEND="tensorflow"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK mask_unet tensorflow" in r.stdout
    assert "data-parallel over 2 devices" in r.stdout


def test_batch_by_batch_loop_matches_fit_over_the_same_batches(subset):
    from unmasking import models, train

    part = data.load_pairs(subset, ["train"])
    # Without the log-MSE term: its gradient (~ error / MSE) carries last-bit differences between the two compiled
    # training steps into the weights (up to ~1e-4 after these 6 steps; each loop alone is deterministic), where L1's
    # sign gradient does not, so with L1 alone the two loops must agree exactly.
    cfg = dict(P.load()["train"]["mask_unet"], log_mse_weight=0.0)
    weights = []
    for distributed in (False, True):  # train_on_batch, then keras fit (the data-parallel path, here on one device)
        train.seed_everything(0)
        model = models.build("mask_unet", 32, cfg)
        ds = train.PairBatches(part["masked"], part["unmasked"], 8, 0, flip=True, mask_target=True, steps=3)
        losses = [train.train_epoch(model, ds, e, distributed=distributed) for e in range(2)]
        weights.append(model.get_weights())
        assert all(np.isfinite(losses))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batch_norm_recalibration_takes_the_mean_statistics_of_the_batches():
    import keras

    from unmasking import train

    inp = keras.Input((4, 4, 2))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inp, bn(inp))
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0 + i, 1.0 + i, (8, 4, 4, 2)).astype("float32") for i in range(3)]
    assert train.recalibrate_batch_norm(model, iter(batches)) == 3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-4)
    assert bn.momentum == 0.99  # restored
    # calibrated on one batch, inference normalizes that batch as training does
    train.recalibrate_batch_norm(model, [batches[2]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(batches[2], training=False)),
                               keras.ops.convert_to_numpy(model(batches[2], training=True)), atol=1e-3)
    dense = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert train.recalibrate_batch_norm(dense, [np.ones((1, 2), "float32")]) == 0
