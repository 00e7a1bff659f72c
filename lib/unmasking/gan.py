"""``mask_gan``: the mask-aware U-Net trained with an adversarial loss as well, so the hidden region gets a mouth and a
nose instead of the average of all plausible ones (a blur). The perception side of the study's trade-off.

* Generator: ``models.mask_unet``'s architecture (``train.mask_unet``'s filters and batch normalization), named
  ``mask_gan``, with ``train.mask_gan.detail_convs`` full-size convolutions added as a zero-initialized residual
  branch (the half-size body of ``mask_unet`` cannot draw fine detail at full size), started from the trained
  ``mask_unet`` (``train.mask_gan.init``), with the same composite output ``x * (1 - m) + y * m``: what it judges
  unmasked stays the input's own pixels.
* Discriminator (``discriminator``): a small conditional PatchGAN. It sees the masked input beside a face (the true
  face, or the generator's composite) and answers with a map of logits, one per ~34 px patch: 4 x 4 convolutions
  with stride 2 (``disc_filters``), LeakyReLU, a 4 x 4 convolution to one channel. Small enough for a CPU.
* Losses: the discriminator's hinge loss, ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; the generator's
  ``UnmaskLoss`` (reconstruction and mask, weighted by ``train.mask_gan``) plus ``adv_weight`` x ``-mean(D(fake))``.

Training alternates one discriminator step and one generator step per batch, both through ``train_on_batch`` of
compiled Keras models (the discriminator alone; the generator followed by the frozen discriminator), which is what
keeps it backend-agnostic: TensorFlow here, JAX on a GPU. Both networks, both optimizers and the step count are
checkpointed together after every epoch (``GanTrainer.save_state``), so an interrupted run resumes where it was.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from unmasking import models

PACKAGE = models.PACKAGE


def discriminator(image_size: int, filters: tuple[int, ...] = (32, 64, 128)) -> keras.Model:
    """The conditional PatchGAN: [masked input, face] -> a map of patch logits (N, S / 2^k, S / 2^k, 1)."""
    masked = keras.Input((image_size, image_size, 3), name="masked")
    face = keras.Input((image_size, image_size, 3), name="face")
    x = layers.Concatenate()([masked, face])
    for f in filters:
        x = layers.Conv2D(f, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    logits = layers.Conv2D(1, 4, padding="same", name="patch_logits")(x)
    return keras.Model([masked, face], logits, name="patch_discriminator")


@keras.saving.register_keras_serializable(package=PACKAGE)
class HingeLoss(keras.losses.Loss):
    """The discriminator's hinge loss: ``y_true`` is +1 on real patches, -1 on fake ones."""

    def call(self, y_true, y_pred):
        return ops.mean(ops.relu(1.0 - y_true * y_pred), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdversarialLoss(keras.losses.Loss):
    """The generator's hinge loss: ``-mean(D(fake))`` (``y_true`` is ignored)."""

    def call(self, y_true, y_pred):
        return -ops.mean(y_pred, axis=(1, 2, 3))


class GanTrainer:
    """The generator, the discriminator and their optimizers; one call of ``train_epoch`` per epoch."""

    select = "last"  # a GAN's validation loss rewards the blur it is trained away from: keep the last epoch

    def __init__(self, image_size: int, unet_cfg: dict, cfg: dict, steps_per_epoch: int):
        self.cfg = cfg
        self.generator = models.mask_unet(image_size, tuple(unet_cfg["filters"]), unet_cfg["batch_norm"],
                                          name="mask_gan", detail_convs=cfg["detail_convs"])
        self.disc = discriminator(image_size, tuple(cfg["disc_filters"]))
        self.disc.compile(optimizer=keras.optimizers.Adam(cfg["disc_learning_rate"], beta_1=cfg["beta_1"]),
                          loss=HingeLoss())
        x = keras.Input((image_size, image_size, 3), name="masked")
        y = self.generator(x)
        self.disc.trainable = False
        logits = self.disc([x, y[..., :3]])
        self.combined = keras.Model(x, [y, logits], name="mask_gan_training")
        self.loss_fn = models.UnmaskLoss(**{k: cfg[k] for k in models.LOSS_WEIGHTS})
        lr = models.learning_rate(cfg, steps_per_epoch)
        self.combined.compile(optimizer=keras.optimizers.Adam(lr, beta_1=cfg["beta_1"]),
                              loss=[self.loss_fn, AdversarialLoss()], loss_weights=[1.0, cfg["adv_weight"]])
        self._built = False

    @property
    def model(self) -> keras.Model:
        return self.generator

    def init_from(self, path: Path) -> None:
        """Start the generator from trained ``mask_unet`` weights (its detail branch adds nothing at the start)."""
        models.copy_weights(models.load(path), self.generator)

    def _step(self, x: np.ndarray, y: np.ndarray) -> float:
        fake = keras.ops.convert_to_numpy(self.generator(x, training=True))[..., :3]
        patches = self.disc.output.shape[1:]
        ones = np.ones((len(x), *patches), np.float32)
        self.disc.trainable = True
        self.disc.train_on_batch([np.concatenate([x, x]), np.concatenate([y[..., :3], fake])],
                                 np.concatenate([ones, -ones]))
        self.disc.trainable = False
        logs = self.combined.train_on_batch(x, [y, ones], return_dict=True)
        return float(logs["loss"])

    def train_epoch(self, ds, epoch: int) -> float:
        """One epoch over the batches of ``ds`` (``train.PairBatches`` with mask targets); the mean generator loss."""
        ds.set_epoch(epoch)
        total, n = 0.0, 0
        for i in range(len(ds)):
            x, y = ds[i]
            total += self._step(x, y) * len(x)
            n += len(x)
        self._built = True
        return total / n if n else float("nan")

    def _variables(self) -> list:
        opt_d, opt_g = self.disc.optimizer, self.combined.optimizer
        return [*self.generator.weights, *self.disc.weights, *opt_g.variables, *opt_d.variables]

    def _build_optimizers(self) -> None:
        """Create both optimizers' variables (as a first step does) so that a checkpoint can be loaded into them."""
        if not self._built:
            self.combined.optimizer.build(self.generator.trainable_variables)
            self.disc.trainable = True
            self.disc.optimizer.build(self.disc.trainable_variables)
            self.disc.trainable = False
            self._built = True

    def save_state(self, ckpt: Path) -> None:
        """Every variable of both networks and both optimizers, in one ``.npz`` (written atomically)."""
        tmp = ckpt / "gan_state.tmp.npz"
        np.savez(tmp, *[keras.ops.convert_to_numpy(v) for v in self._variables()])
        tmp.replace(ckpt / "gan_state.npz")

    def load_state(self, ckpt: Path) -> None:
        self._build_optimizers()
        with np.load(ckpt / "gan_state.npz") as f:
            arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
        variables = self._variables()
        if len(arrays) != len(variables):
            raise ValueError(f"{ckpt}: the checkpoint holds {len(arrays)} variables, the GAN has {len(variables)}")
        for v, a in zip(variables, arrays):
            v.assign(a)
