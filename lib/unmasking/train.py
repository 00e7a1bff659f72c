"""Seeded, resumable training of the study's models.

``train_model`` is a train stage's work as one function: it reads only the train and val splits of the subset (the
test split is never loaded here), seeds Python, NumPy and Keras, checkpoints everything it needs to go on (weights,
optimiser state, early-stopping state) after every epoch in ``models/checkpoints/<model>/``, and, when started again
after an interruption with the same configuration and the same model, loss and training code, continues from the
last checkpoint. The batch order of epoch ``e`` is a function of (seed, e) only, so a resumed run sees the same
batches as an uninterrupted one. Each epoch is logged with dvclive into ``reports/train/<model>/`` (``dvc exp show``,
``dvc plots``). ``paper_ae`` and ``mask_unet`` keep their best validation epoch and stop early; ``mask_gan``
(``gan.GanTrainer``) keeps its last.

The model card (``models/<model>.json``) records the data, the parameters, the device, the training time and the
validation scores that the study's choices are made on: per image, one pass and flip-averaged, with the paired
bootstrap interval of what flip averaging gains (``validation``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from unmasking import data, images, metrics, models, paths  # noqa: E402

HISTORY_KEYS = ("loss", "val_loss", "val_mse", "val_masked_l1", "val_masked_psnr", "val_detail_ratio", "seconds",
                "images_per_s")
CODE_FILES = ("models.py", "gan.py", "train.py")  # a checkpoint resumes only under the same model and loss code


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and the Keras backend; make TensorFlow ops deterministic when asked."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class PairBatches(keras.utils.PyDataset):
    """Batches of (masked, target) pairs from arrays in memory, decoded once.

    ``target`` is the true face, or [true face, true mask] for models that learn the mask. Epoch ``e`` uses the
    permutation and flips drawn from ``seed + e``; ``set_epoch`` selects it.
    """

    def __init__(self, masked: np.ndarray, unmasked: np.ndarray, batch_size: int, seed: int, shuffle: bool = True,
                 flip: bool = False, mask_target: bool = False, steps: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.x = masked.astype(np.float32) / 255.0
        y = unmasked.astype(np.float32) / 255.0
        if mask_target:
            region = metrics.region(masked, unmasked, threshold=0.5).astype(np.float32)[..., None]
            y = np.concatenate([y, region], axis=-1)
        self.y = y
        self.batch_size, self.seed, self.shuffle, self.flip, self.steps = batch_size, seed, shuffle, flip, steps
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.x)
        self.order = rng.permutation(n) if self.shuffle else np.arange(n)
        self.flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)

    def __len__(self) -> int:
        full = math.ceil(len(self.x) / self.batch_size)
        return min(self.steps, full) if self.steps else full

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x, y = self.x[idx], self.y[idx]
        f = self.flips[idx]
        if f.any():
            x, y = x.copy(), y.copy()
            x[f], y[f] = x[f, :, ::-1], y[f, :, ::-1]
        return x, y

    @property
    def num_batches(self) -> int:
        return len(self)


class SingleTrainer:
    """One compiled model trained with its own loss (``paper_ae``, ``mask_unet``)."""

    select = "best"

    def __init__(self, model: keras.Model, distributed: bool = False):
        self.model, self.distributed = model, distributed
        self.loss_fn = model.loss if callable(model.loss) else keras.losses.get(model.loss)

    def train_epoch(self, ds: PairBatches, epoch: int) -> float:
        return train_epoch(self.model, ds, epoch, self.distributed)

    def save_state(self, ckpt: Path) -> None:
        self.model.save(ckpt / "last.tmp.keras")
        os.replace(ckpt / "last.tmp.keras", ckpt / "last.keras")


class _EpochState:
    """After each epoch: validates with the study's metrics, checkpoints, stops early, logs."""

    def __init__(self, name: str, trainer, ds: PairBatches, val: dict[str, np.ndarray], ckpt: Path,
                 state: dict[str, Any], patience: int, live_dir: Path, batch_size: int, log=print):
        self.name, self.trainer, self.ds, self.val, self.ckpt, self.state = name, trainer, ds, val, ckpt, state
        self.patience, self.live_dir, self.batch_size, self.log = patience, live_dir, batch_size, log

    def end(self, epoch: int, loss: float, seconds: float) -> bool:
        """Record epoch ``epoch`` (0-based) and save the checkpoint; return whether training should stop."""
        model = self.trainer.model
        seen = min(len(self.ds) * self.ds.batch_size, len(self.ds.x))
        x, u, masked_u8 = self.val["x"], self.val["y"], self.val["masked"]
        pred = models.predict(model, x, self.batch_size)
        val_loss = float(keras.ops.convert_to_numpy(keras.ops.mean(self.trainer.loss_fn(self.val["target"], pred))))
        m = metrics.batch_region_metrics(pred[..., :3], u, masked_u8.astype(np.float32) / 255.0)
        detail = [metrics.detail_ratio(p, t, r) for p, t, r in zip(pred[..., :3], u, self.val["regions"])]
        row = {"epoch": epoch + 1, "loss": float(loss), "val_loss": val_loss,
               "val_mse": m["mse"], "val_masked_l1": m.get("masked_l1", float("nan")),
               "val_masked_psnr": m.get("masked_psnr", float("nan")),
               "val_detail_ratio": float(np.nanmean(detail)) if np.isfinite(detail).any() else float("nan"),
               "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 2) if seconds else float("nan")}
        st = self.state
        st["history"].append(row)
        st["epoch"] = epoch + 1
        improved = st["best"] is None or val_loss < st["best"]
        if self.trainer.select == "last":
            st["best"], st["best_epoch"] = val_loss, epoch + 1
            model.save(self.ckpt / "best.keras")
        elif improved:
            st["best"], st["best_epoch"], st["wait"] = val_loss, epoch + 1, 0
            model.save(self.ckpt / "best.keras")
        else:
            st["wait"] += 1
        if self.trainer.select == "best" and st["wait"] > self.patience:
            st["stopped_early"] = True
        self.trainer.save_state(self.ckpt)
        tmp = self.ckpt / "state.json.tmp"
        tmp.write_text(json.dumps(st, indent=1))
        os.replace(tmp, self.ckpt / "state.json")
        log_epochs(self.live_dir, st)
        self.log(f"[{self.name}] epoch {epoch + 1}: loss {row['loss']:.4f}  val_loss {val_loss:.4f}  "
                 f"val_mse {m['mse']:.5f}  val_masked_l1 {row['val_masked_l1']:.4f}  "
                 f"val_masked_psnr {row['val_masked_psnr']:.2f} dB  val_detail_ratio {row['val_detail_ratio']:.3f}  "
                 f"{row['images_per_s']:.1f} img/s"
                 + ("  (best)" if improved and self.trainer.select == "best" else ""))
        return st["stopped_early"]


def train_epoch(model: keras.Model, ds: PairBatches, epoch: int, distributed: bool = False) -> float:
    """Train one epoch over ``ds`` (its batches for ``epoch``); return the mean training loss.

    One device: batch by batch with ``train_on_batch``, which on a 2-core CPU runs about 1.5x faster than
    ``fit`` over the same batches (``fit``'s input pipeline threads compete with the convolutions for the cores, and
    whole epochs then run at 60 % speed). Data-parallel (``distributed``): ``fit``, which splits each batch across the
    devices.
    """
    ds.set_epoch(epoch)
    if distributed:
        h = model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0, shuffle=False)
        return float(h.history["loss"][-1])
    total, n = 0.0, 0
    for i in range(len(ds)):
        x, y = ds[i]
        logs = model.train_on_batch(x, y, return_dict=True)
        total += float(logs["loss"]) * len(x)
        n += len(x)
    return total / n if n else float("nan")


def recalibrate_batch_norm(model: keras.Model, batches) -> int:
    """Set each BatchNormalization layer's inference statistics to the mean of its statistics over ``batches``.

    ("Precise BN".) The moving averages Keras keeps while training lag behind weights that change fast: after 6
    epochs of the study's ``mask_unet`` they gave a validation masked PSNR of 15.7 dB, where the same weights score
    20.0 dB with statistics recomputed over 10 training batches. Training itself (batch statistics) is unchanged.
    Returns the number of batches used (0 when the model has no batch normalization).
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    momenta = [layer.momentum for layer in bns]
    k = 0
    try:
        for x in batches:
            for layer in bns:
                layer.momentum = k / (k + 1)  # k = 0 takes this batch's statistics, then a running mean
            model(x, training=True)
            k += 1
    finally:
        for layer, m in zip(bns, momenta):
            layer.momentum = m
    return k


def log_epochs(live_dir: Path, state: dict[str, Any]) -> None:
    """Write the epochs so far with dvclive into ``live_dir`` (``metrics.json``: the selected epoch's scores;
    ``plots/metrics/<key>.tsv``: one row per epoch). Rewritten whole each epoch, so a resumed run logs exactly what an
    uninterrupted one does."""
    from dvclive import Live

    with Live(str(live_dir), resume=False, report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False) as live:
        for row in state["history"]:
            live.step = row["epoch"]
            for k in HISTORY_KEYS:
                live.log_metric(k, row[k])
        best = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
        live.summary.update({f"selected_{k}": best.get(k) for k in ("val_loss", "val_masked_l1", "val_masked_psnr",
                                                                     "val_detail_ratio")})
        live.summary.update({"epochs_run": state["epoch"], "selected_epoch": state["best_epoch"]})


def read_history(reports_dir: Path, name: str) -> list[dict[str, float]]:
    """The per-epoch log of model ``name`` (from its dvclive files): one dict per epoch."""
    import csv

    folder = Path(reports_dir) / "train" / name / "plots" / "metrics"
    rows: dict[int, dict[str, float]] = {}
    for key in HISTORY_KEYS:
        with open(folder / f"{key}.tsv", newline="") as f:
            for r in csv.DictReader(f, delimiter="\t"):
                rows.setdefault(int(r["step"]), {"epoch": float(r["step"])})[key] = float(r[key])
    return [rows[k] for k in sorted(rows)]


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def code_hash() -> str:
    """A hash of the model, loss and training code (``CODE_FILES``)."""
    here = Path(__file__).resolve().parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in CODE_FILES)).hexdigest()[:16]


def device_name() -> str:
    """The device the backend trains on, in words (e.g. "GPU: NVIDIA H200 (jax)", "CPU, 2 cores (tensorflow)")."""
    backend = keras.backend.backend()
    name = ""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                name = "GPU: " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        elif backend == "jax":
            import jax

            d = jax.devices()[0]
            name = f"GPU: {d.device_kind}" if d.platform == "gpu" else ""
        elif backend == "torch":
            import torch

            name = f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    except Exception:  # a device query must never stop training
        name = ""
    return f"{name or f'CPU, {os.cpu_count()} cores'} ({backend})"


_STRATEGY: dict[str, Any] = {}


def distribution_scope(enabled: bool, log=print):
    """A context for building the model: data-parallel over all local devices when ``enabled``.

    TensorFlow: ``tf.distribute.MirroredStrategy``; JAX: Keras's ``DataParallel`` distribution; otherwise (or with
    one device) a no-op.
    """
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if "tf" not in _STRATEGY:  # one strategy per process: a second one's collectives would clash with the first's
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            _STRATEGY["tf"] = tf.distribute.MirroredStrategy([d.name for d in devices])
        log(f"data-parallel over {_STRATEGY['tf'].num_replicas_in_sync} devices (tf.distribute.MirroredStrategy)")
        return _STRATEGY["tf"].scope()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        log(f"data-parallel over {len(devices)} devices (keras.distribution.DataParallel)")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return contextlib.nullcontext()


def validation_scores(model: keras.Model, va: dict[str, Any], batch_size: int, seed: int) -> dict[str, Any]:
    """Per-image validation scores of a trained model, one pass and flip-averaged: mean masked-region PSNR, masked
    L1 and detail ratio, and the paired bootstrap difference (flip-averaged minus one pass) of the masked PSNR."""
    from unmasking import stats

    out: dict[str, Any] = {"pairs": len(va["ids"])}
    per: dict[str, dict[str, np.ndarray]] = {}
    u = va["unmasked"].astype(np.float32) / 255
    m = va["masked"].astype(np.float32) / 255
    for mode, flip in (("one_pass", False), ("flip_averaged", True)):
        faces = models.unmask(model, va["masked"], batch_size, flip).faces.astype(np.float32) / 255
        rows = [metrics.image_metrics(f, t, x) for f, t, x in zip(faces, u, m)]
        per[mode] = {k: np.array([r[k] for r in rows]) for k in ("masked_psnr", "masked_l1", "detail_ratio")}
        out[mode] = {k: round(float(np.nanmean(v)), 5) for k, v in per[mode].items()}
    d = stats.paired_difference(per["flip_averaged"]["masked_psnr"], per["one_pass"]["masked_psnr"], seed=seed)
    out["flip_gain_masked_psnr"] = {**d, "difference": round(d["difference"], 5),
                                    "ci95": [round(v, 5) for v in d["ci95"]]}
    return out


def _trainer(name: str, train_params: dict[str, Any], image_size: int, steps: int, models_dir: Path, resume_from=None,
             log=print):
    """The trainer of model ``name``: built (``mask_gan`` started from its ``init`` model, ``mask_unet`` from its
    ``init_weights`` file if one is given), or resumed from the checkpoint folder ``resume_from``."""
    cfg = train_params[name]
    if name == "mask_gan":
        from unmasking import gan

        t = gan.GanTrainer(image_size, train_params["mask_unet"], cfg, steps)
        if resume_from:
            t.load_state(resume_from)
        elif cfg["init"]:
            init = paths.model_path(cfg["init"], models_dir)
            if not init.is_file():
                raise FileNotFoundError(f"{init}: mask_gan starts from the trained {cfg['init']} (train it first)")
            t.init_from(init)
        return t
    with distribution_scope(train_params["distribute"], log):
        model = keras.saving.load_model(resume_from / "last.keras") if resume_from else \
            models.build(name, image_size, cfg, steps)
        if not resume_from and cfg.get("init_weights"):
            init = paths.resolve(cfg["init_weights"])
            log(f"[{name}] starting from the weights of {init}")
            models.copy_weights(models.load(init), model)
    return SingleTrainer(model, train_params["distribute"])


def train_model(name: str, train_params: dict[str, Any], subset_dir: Path, models_dir: Path, reports_dir: Path,
                seed: int, image_size: int, log=print) -> dict[str, Any]:
    """Train model ``name`` on the subset's train split, validate on val; return its model card.

    Writes ``models_dir/<name>.keras`` (the selected epoch), ``models_dir/<name>.json`` (model card) and the dvclive
    log ``reports_dir/train/<name>/``. Resumes from ``models_dir/checkpoints/<name>/`` when that holds a checkpoint of
    the same configuration and code.
    """
    cfg = train_params[name]
    bs = train_params["batch_size"]
    subset_dir, models_dir, reports_dir = Path(subset_dir), Path(models_dir), Path(reports_dir)
    summary = data.read_summary(subset_dir)
    if summary["image_size"] != image_size:
        raise data.DataError(f"the subset holds {summary['image_size']} px images but download.image_size is "
                             f"{image_size}; rerun the download stage")
    tr = data.load_pairs(subset_dir, ["train"])
    va = data.load_pairs(subset_dir, ["val"])
    mask_target = models.needs_mask_target(name)
    manifest_hash = hashlib.sha256((subset_dir / paths.MANIFEST_NAME).read_bytes()).hexdigest()[:16]
    run_cfg = {"model": name, "cfg": cfg, "batch_size": bs, "seed": seed, "image_size": image_size,
               "flip": train_params["augment_flip"], "steps": train_params["steps_per_epoch"],
               "patience": train_params["patience"], "bn_batches": train_params["bn_calibration_batches"],
               "manifest": manifest_hash, "backend": keras.backend.backend(), "code": code_hash()}
    if name == "mask_gan":
        run_cfg["generator"] = {k: train_params["mask_unet"][k] for k in ("filters", "batch_norm")}
        if cfg["init"]:
            run_cfg["init_sha256"] = images.sha256_file(paths.model_path(cfg["init"], models_dir))
    if cfg.get("init_weights"):
        init = paths.resolve(cfg["init_weights"])
        if not init.is_file():
            raise FileNotFoundError(f"{init}: no such weights file (train.{name}.init_weights)")
        run_cfg["init_sha256"] = images.sha256_file(init)
    ckpt = models_dir / "checkpoints" / name
    state_file = ckpt / "state.json"
    state = None
    if state_file.is_file():
        old = json.loads(state_file.read_text())
        if old.get("config") == config_hash(run_cfg):
            state = old
        else:
            log(f"[{name}] checkpoint in {ckpt} is from another configuration or code; starting over")
    if state is None:
        shutil.rmtree(ckpt, ignore_errors=True)
        state = {"config": config_hash(run_cfg), "epoch": 0, "best": None, "best_epoch": 0, "wait": 0,
                 "stopped_early": False, "history": [], "train_seconds": 0.0}
    ckpt.mkdir(parents=True, exist_ok=True)

    seed_everything(seed + state["epoch"], train_params["deterministic"])
    ds = PairBatches(tr["masked"], tr["unmasked"], bs, seed, shuffle=True, flip=train_params["augment_flip"],
                     mask_target=mask_target, steps=train_params["steps_per_epoch"])
    keras.utils.set_random_seed(seed)
    trainer = _trainer(name, train_params, image_size, len(ds), models_dir, ckpt if state["epoch"] else None, log)
    if state["epoch"]:
        log(f"[{name}] resuming after epoch {state['epoch']} from {ckpt}")
    model = trainer.model
    val_ds = PairBatches(va["masked"], va["unmasked"], bs, seed, shuffle=False, mask_target=mask_target)
    val = {"x": val_ds.x, "y": va["unmasked"].astype(np.float32) / 255.0, "target": val_ds.y, "masked": va["masked"],
           "regions": metrics.region(va["masked"].astype(np.float32) / 255.0,
                                     va["unmasked"].astype(np.float32) / 255.0)}
    live_dir = reports_dir / "train" / name
    epochs_state = _EpochState(name, trainer, ds, val, ckpt, state, train_params["patience"], live_dir, bs, log)
    t0 = time.perf_counter()
    # The batches of epoch e are a function of (seed, e) only: a resumed run sees the same batches as an
    # uninterrupted one.
    for epoch in range(state["epoch"], cfg["epochs"]):
        if state["stopped_early"]:
            break
        t = time.perf_counter()
        loss = trainer.train_epoch(ds, epoch)
        n_bn = min(train_params["bn_calibration_batches"], len(ds))
        recalibrate_batch_norm(model, (ds[i][0] for i in range(n_bn)))
        if epochs_state.end(epoch, loss, time.perf_counter() - t):
            break
    state["train_seconds"] = round(state.get("train_seconds", 0.0) + time.perf_counter() - t0, 1)
    log_epochs(live_dir, state)
    best_path = ckpt / "best.keras" if (ckpt / "best.keras").is_file() else None
    out = paths.model_path(name, models_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if best_path:
        shutil.copyfile(best_path, out)
    else:  # epochs = 0: the untrained model
        model.save(out)
    rates = [r["images_per_s"] for r in state["history"][1:]] or [r["images_per_s"] for r in state["history"]]
    best_row = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
    card = {
        "model": name,
        "file": out.name,
        "parameters": int(model.count_params()),
        "params": cfg,
        "batch_size": bs,
        "seed": seed,
        "image_size": image_size,
        "backend": keras.backend.backend(),
        "device": device_name(),
        "data_source": summary.get("source"),
        "data_path": summary.get("source_path"),
        "train_pairs": int(len(tr["ids"])),
        "val_pairs": int(len(va["ids"])),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "selected": trainer.select,
        "stopped_early": state["stopped_early"],
        "wall_time_s": state["train_seconds"],
        "train_images_per_s": round(float(np.median(rates)), 1) if rates else None,
        "best_val": {k: best_row.get(k) for k in ("val_loss", "val_mse", "val_masked_l1", "val_masked_psnr")},
        "validation": validation_scores(models.load(out), va, bs, seed),
    }
    if "init_sha256" in run_cfg:
        card["init_sha256"] = run_cfg["init_sha256"]
    paths.model_card_path(name, models_dir).write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(ckpt, ignore_errors=True)
    return card
