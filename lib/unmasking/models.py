"""The study's two models, written in Keras 3 for any backend (TensorFlow, JAX, PyTorch).

``paper_ae`` -- the paper's convolutional autoencoder, as close as its text allows. The paper says: an encoder of
convolutions with downsampling to a latent representation, a decoder of convolutions with upsampling, Keras,
compiled and fit, "accuracy" and "loss". It does not give sizes, filters, activations, optimiser or epochs. The
choices left open, and why:

* input 128 x 128 (``download.image_size``): the paper does not say; 128 keeps 3,000 pairs in memory and a CPU
  can train on them. Face Mask Lite's 1024 px images are resized once, in the data stage.
* three ``Conv2D(3x3, ReLU) + MaxPooling2D(2)`` steps down to a 16 x 16 latent map, then three ``Conv2D +
  UpSampling2D(2)`` steps back and a ``Conv2D(3, sigmoid)`` output: the standard Keras convolutional autoencoder
  (keras-io denoising example) that such papers follow. Widths 16, 32, 64 (``train.paper_ae.filters``, 0.08 M
  parameters): with 32, 64, 128 (0.33 M) an epoch of 2,400 images takes over two minutes on a 2-core CPU, which
  leaves too few epochs within the study's hour; the wider model is one parameter change away.
* loss MSE (the paper's "loss 3 %" is a fraction, as MSE on [0, 1] images is), optimiser Adam (lr 1e-3), metrics
  ``["accuracy"]`` (what makes the paper's "accuracy": see ``metrics.accuracy_paper``).
* epochs: not given; we train to early stopping on the validation loss (``train.paper_ae.epochs`` is the cap).

``mask_unet`` -- the project's mask-aware model. A small U-Net with two heads: the mask region ``m`` (sigmoid) and
the face ``y`` (sigmoid). Its output is the composite ``x * (1 - m) + y * m``, so the pixels it judges unmasked are
the input's own and never degraded, and it needs no true mask at inference (it estimates ``m`` itself). Its output
has 4 channels: the composite RGB and ``m``. Trained with ``UnmaskLoss`` (L1 weighted up inside the true mask, a
mask BCE against the region where the pair differs, the log of the masked-region MSE, and 1 - SSIM).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

PACKAGE = "unmasking"


def learning_rate(cfg: dict, steps_per_epoch: int | None = None):
    """The optimiser's learning rate: constant, or (``lr_schedule: cosine``) a cosine from ``learning_rate`` down to
    5 % of it over all ``epochs`` x ``steps_per_epoch`` steps."""
    lr = cfg["learning_rate"]
    if cfg.get("lr_schedule", "constant") == "cosine" and steps_per_epoch:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, cfg["epochs"] * steps_per_epoch),
                                                      alpha=0.05)
    return lr


def paper_ae(image_size: int = 128, filters: tuple[int, ...] = (16, 32, 64), learning_rate=1e-3) -> keras.Model:
    """The paper's convolutional autoencoder, compiled as the paper did (MSE, Adam, ``metrics=["accuracy"]``)."""
    inputs = keras.Input((image_size, image_size, 3), name="masked")
    x = inputs
    # Encoder: convolutions and downsampling to a latent map
    for f in filters:
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    # Decoder: convolutions and upsampling back to an image
    for f in reversed(filters):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.UpSampling2D(2)(x)
    outputs = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="unmasked")(x)
    model = keras.Model(inputs, outputs, name="paper_ae")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["accuracy"])
    return model


@keras.saving.register_keras_serializable(package=PACKAGE)
class Composite(layers.Layer):
    """``[x * (1 - m) + y * m, m]``: keep the input where the estimated mask ``m`` is 0, the prediction where 1."""

    def call(self, x, y, m):
        return ops.concatenate([x * (1.0 - m) + y * m, m], axis=-1)

    def compute_output_shape(self, x_shape, y_shape, m_shape):
        return (*x_shape[:-1], x_shape[-1] + 1)


def _conv(x, f: int, batch_norm: bool, strides: int = 1, dilation: int = 1):
    """3 x 3 convolution and ReLU, with batch normalization between them when ``batch_norm``."""
    if not batch_norm:
        return layers.Conv2D(f, 3, strides=strides, padding="same", activation="relu", dilation_rate=dilation)(x)
    x = layers.Conv2D(f, 3, strides=strides, padding="same", use_bias=False, dilation_rate=dilation)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _block(x, f: int, batch_norm: bool):
    return _conv(_conv(x, f, batch_norm), f, batch_norm)


def mask_unet(image_size: int = 128, filters: tuple[int, ...] = (16, 32, 64, 96), batch_norm: bool = True,
              name: str = "mask_unet", detail_convs: int = 0) -> keras.Model:
    """The mask-aware U-Net (uncompiled; ``compile_mask_unet`` adds the loss).

    A strided stem halves the image first (the hidden region is smooth skin; the costly work runs at half size,
    which a 2-core CPU can train in minutes); three encoder levels with ``filters[0:3]``, a dilated bottleneck with
    ``filters[3]`` at 1/16 size, a decoder with skip connections, and a full-size refinement that sees the input
    again before the two heads. ``batch_norm`` normalizes every convolution but the refinement's: on the 3,000 LFW
    pairs it reaches in 6 epochs the validation error that the same network without it reaches in 18. Its
    inference statistics come from ``train.recalibrate_batch_norm``.

    ``detail_convs`` > 0 adds that many full-size 3 x 3 convolutions as a residual branch after the refinement (named
    ``detail_*``, the last one zero-initialized, so the network starts as the one without them): room at full
    resolution for the detail that the half-size body cannot draw (``mask_gan``).
    """
    inputs = keras.Input((image_size, image_size, 3), name="masked")
    # Encoder
    x = _conv(inputs, filters[0], batch_norm, strides=2)
    skips = []
    for f in filters[:3]:
        x = _block(x, f, batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    # Bottleneck: dilated convolutions widen the view across the mask
    x = _conv(x, filters[3], batch_norm)
    x = _conv(x, filters[3], batch_norm, dilation=2)
    # Decoder with skip connections
    for f, skip in zip(reversed(filters[:3]), reversed(skips)):
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = layers.Concatenate()([x, skip])
        x = _block(x, f, batch_norm)
    # Full-size refinement and the two heads
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Concatenate()([x, inputs])
    x = layers.Conv2D(filters[0], 3, padding="same", activation="relu")(x)
    if detail_convs:
        r = x
        for i in range(detail_convs):
            last = i == detail_convs - 1
            r = layers.Conv2D(filters[0], 3, padding="same", activation=None if last else "relu", name=f"detail_{i}",
                              kernel_initializer="zeros" if last else "glorot_uniform")(r)
        x = layers.Activation("relu", name="detail_out")(layers.Add(name="detail_add")([x, r]))
    face = layers.Conv2D(3, 1, activation="sigmoid", name="face")(x)
    mask = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    outputs = Composite(name="composite")(inputs, face, mask)
    return keras.Model(inputs, outputs, name=name)


def ssim_map_mean(a, b, window: int = 7):
    """Mean SSIM of two image batches in [0, 1] with a ``window`` x ``window`` box filter (keras.ops, any backend)."""
    c1, c2 = 0.01**2, 0.03**2

    def pool(t):
        return ops.average_pool(t, window, strides=1, padding="valid")

    mu_a, mu_b = pool(a), pool(b)
    var_a = pool(a * a) - mu_a * mu_a
    var_b = pool(b * b) - mu_b * mu_b
    cov = pool(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ops.mean(s, axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnmaskLoss(keras.losses.Loss):
    """Loss of ``mask_unet``. ``y_true`` = [true face RGB, true mask]; ``y_pred`` = [composite RGB, estimated mask].

    ``L1 * (1 + hole_weight * mask) + mask_weight * BCE(mask) + ssim_weight * (1 - SSIM)
    + log_mse_weight * ln(MSE inside the true mask + 1e-4)``, per image.

    The last term is the image's masked-region PSNR, negated and scaled (``ln(mse) = -PSNR * ln(10) / 10``): the
    evaluation averages PSNR per image, which weighs an error on a well-recovered face more than L1 does, and MSE
    favours the mean of the plausible faces where L1 favours their median.
    """

    def __init__(self, hole_weight: float = 6.0, mask_weight: float = 0.5, ssim_weight: float = 0.2,
                 log_mse_weight: float = 0.0, name: str = "unmask_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hole_weight, self.mask_weight, self.ssim_weight = hole_weight, mask_weight, ssim_weight
        self.log_mse_weight = log_mse_weight

    def call(self, y_true, y_pred):
        t, mt = y_true[..., :3], y_true[..., 3:4]
        out, m = y_pred[..., :3], y_pred[..., 3:4]
        l1 = ops.mean(ops.abs(out - t) * (1.0 + self.hole_weight * mt), axis=(1, 2, 3))
        eps = 1e-6
        mc = ops.clip(m, eps, 1 - eps)
        bce = -ops.mean(mt * ops.log(mc) + (1 - mt) * ops.log(1 - mc), axis=(1, 2, 3))
        loss = l1 + self.mask_weight * bce
        if self.ssim_weight:
            loss = loss + self.ssim_weight * (1.0 - ssim_map_mean(out, t))
        if self.log_mse_weight:
            d = out - t
            mse_hole = ops.sum(d * d * mt, axis=(1, 2, 3)) / (3.0 * ops.sum(mt, axis=(1, 2, 3)) + 1.0)
            loss = loss + self.log_mse_weight * ops.log(mse_hole + 1e-4)
        return loss

    def get_config(self):
        return {**super().get_config(), "hole_weight": self.hole_weight, "mask_weight": self.mask_weight,
                "ssim_weight": self.ssim_weight, "log_mse_weight": self.log_mse_weight}


LOSS_WEIGHTS = ("hole_weight", "mask_weight", "ssim_weight", "log_mse_weight")  # UnmaskLoss's keys of train.mask_unet


def compile_mask_unet(model: keras.Model, learning_rate, cfg: dict) -> keras.Model:
    """Compile with Adam and ``UnmaskLoss`` weighted by the ``train.mask_unet`` section ``cfg``."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=UnmaskLoss(**{k: cfg[k] for k in LOSS_WEIGHTS}))
    return model


def build(name: str, image_size: int, cfg: dict, steps_per_epoch: int | None = None) -> keras.Model:
    """Build and compile model ``name`` from its ``train.<name>`` params section."""
    lr = learning_rate(cfg, steps_per_epoch)
    if name == "paper_ae":
        return paper_ae(image_size, tuple(cfg["filters"]), lr)
    if name == "mask_unet":
        model = mask_unet(image_size, tuple(cfg["filters"]), cfg["batch_norm"])
        return compile_mask_unet(model, lr, cfg)
    raise ValueError(f"unknown model {name!r}")


def needs_mask_target(name_or_model) -> bool:
    """Whether the model trains on [face, mask] targets (4 channels) instead of the face alone."""
    name = name_or_model if isinstance(name_or_model, str) else name_or_model.name
    return name in ("mask_unet", "mask_gan")


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's output (float32) for inputs ``x``, ``batch_size`` at a time through Keras's ``predict_on_batch``:
    the numbers of ``model.predict`` without the data pipeline it sets up on every call (about 45 ms on a 2-core CPU,
    more than a 128 px face's prediction takes). A model built under a multi-device strategy (``train.distribute``)
    predicts through ``model.predict``, which splits each batch over the devices."""
    if not len(x):
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's; the other backends have none
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch_size]), np.float32)
                           for i in range(0, len(x), batch_size)])


def predict_faces(model: keras.Model, x, batch_size: int = 64):
    """The model's unmasked faces (N, S, S, 3) in [0, 1] for masked inputs ``x`` in [0, 1]."""
    return predict(model, x, batch_size)[..., :3]


@dataclass
class Prediction:
    """A model's output for a batch of masked faces: the faces (uint8) and, for a mask-aware model, its estimate of
    where the mask is (float in [0, 1], (N, S, S)); None for ``paper_ae``."""

    faces: np.ndarray
    masks: np.ndarray | None


def unmask(model: keras.Model, masked: np.ndarray, batch_size: int = 64, flip_average: bool = False) -> Prediction:
    """Predict unmasked faces for uint8 masked inputs, in batches: the one way every part of the study predicts.

    ``flip_average``: the mean of the prediction on each image and, mirrored back, on its mirror image (test-time flip
    averaging; faces are roughly symmetric and the models train on random flips); the image and its mirror go
    through one ``predict`` together (batches of ``batch_size``). Needs no true mask.
    Inputs of another size than the model's are resized to it, and its outputs back to theirs (Lanczos, as
    ``images.resize``; the mask estimate bilinearly).
    """
    from unmasking import images

    size = int(model.input_shape[1])
    if len(masked) and masked.shape[1:3] != (size, size):
        h, w = masked.shape[1:3]
        pred = unmask(model, np.stack([images.resize(m, size) for m in masked]), batch_size, flip_average)
        faces = np.stack([images.resize(f, (w, h)) for f in pred.faces])
        return Prediction(faces, None if pred.masks is None else np.stack(
            [images.resize_float(m, (w, h)) for m in pred.masks]))
    x = masked.astype(np.float32) / 255.0
    if flip_average:
        y = predict(model, np.concatenate([x, x[:, :, ::-1]]), batch_size)
        y = (y[: len(x)] + y[len(x):, :, ::-1]) / 2
    else:
        y = predict(model, x, batch_size)
    return Prediction(images.to_uint8(y[..., :3]), y[..., 3].astype(np.float32) if y.shape[-1] == 4 else None)


def flip_averaged(model: keras.Model, ep: dict) -> bool:
    """Whether ``model`` is predicted with flip averaging: ``evaluate.flip_average`` (the ``evaluate`` params
    section ``ep``) names it, by the model's own name (``mask_unet``, ...), whatever its weights file is called."""
    return model.name in ep["flip_average"]


def copy_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copy ``src``'s weights into ``dst``, layer by layer in graph order, skipping ``dst``'s ``detail_*`` layers
    (``mask_unet`` into a ``mask_gan`` generator with a detail branch)."""
    a = [layer for layer in src.layers if layer.weights]
    b = [layer for layer in dst.layers if layer.weights and not layer.name.startswith("detail_")]
    if len(a) != len(b):
        raise ValueError(f"{src.name} has {len(a)} layers with weights, {dst.name} {len(b)} besides its detail branch")
    for x, y in zip(a, b):
        y.set_weights(x.get_weights())


def load(path) -> keras.Model:
    """Load trained weights saved as ``.keras`` (custom layers and loss are registered by importing this module)."""
    return keras.saving.load_model(str(path), compile=False)
