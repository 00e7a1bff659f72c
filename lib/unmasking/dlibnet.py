"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) re-implemented in Keras 3.

``descriptors(chips)`` gives the same 128-D descriptors as dlib's
``face_recognition_model_v1(...).compute_face_descriptor(chips)`` for aligned 150 x 150 RGB face chips (those of
``dlib.get_face_chip(img, shape, size=150, padding=0.25)``), batched through Keras instead of dlib's own CPU code.
The weights are read from the ``.dat`` file itself (``read``), by a reader of dlib's binary ``serialize()`` format
for exactly that network: the ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``, i.e.
``loss_metric<fc_no_bias<128, avg_pool_everything<ResNet-29>>>`` over ``input_rgb_image_sized<150>``. Only
``keras.layers`` / ``keras.ops`` are used, so the model runs on any Keras backend (TensorFlow here, JAX elsewhere).

dlib's semantics that the model reproduces (from dlib's ``dnn/layers.h``, ``input.h``, ``cuda/cpu_dlib.cpp``):

* input: ``(pixel - mean) / 256`` per channel, R, G, B, with the means stored in the file (122.782, 117.001,
  104.298); no scaling to [0, 1], no BGR;
* ``con``, ``max_pool``, ``avg_pool``: padding ``k // 2`` when the stride is 1, **none** when it is not (so the
  7 x 7 / 2 stem maps 150 to 72, the 3 x 3 / 2 max pool 72 to 35), output side ``1 + (n + 2 p - k) // s``;
* ``affine`` is a per-channel ``x * gamma + beta``; the file stores ``affine_`` layers (the batch norms of training
  already folded); the reader also takes ``bn_con2`` there and folds it as dlib does, ``gamma / sqrt(var + eps)``
  and ``beta - gamma' * mean`` in float32 (not exercised: the shipped file has none);
* the 29 convolutions have biases; no relu is fused into them (``con_4``);
* ``add_prev`` of tensors of different shapes gives the larger of each dimension and treats what is missing from the
  smaller one as zeros, appended at the end: extra channels of the widened block come straight from the block, and
  where the strided block's output is smaller than the 2 x 2-average-pooled shortcut it is padded with zeros at the
  bottom and the right. This happens twice: 8 -> 3 x 3 (block) + 4 x 4 (shortcut) = 4 x 4, and
  4 -> 1 x 1 + 2 x 2 = 2 x 2; the last average over "everything" is then over that 2 x 2;
* ``fc_no_bias``: ``x @ W`` with ``W`` of shape (256, 128); ``loss_metric`` returns the output as is (the
  descriptors are not normalized).

Exactness, measured on this machine (TensorFlow 2.21 CPU, float32, against dlib 20.0.1 from ``dlib-bin``): over 100
aligned chips of generated faces (components -0.47 ... 0.55, pairwise distances 0.43 ... 1.07) the largest absolute
difference of a descriptor component was 4.3e-7 and of a pairwise Euclidean distance 7.2e-7: float32 rounding from a
different order of summation. Speed, 64 chips in one call, on 2 AVX-512 cores shared with another job: dlib 71.5 ms
per chip, this model 2.2 ms per chip (batch 64, after a warm-up call), about 30 times faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
DIM = 128


# ---------------------------------------------------------------------------------------------------------------------
# The network, as dlib's C++ type spells it, innermost layer first.
# ---------------------------------------------------------------------------------------------------------------------


def _ares(n: int) -> list[tuple]:
    """relu<add_prev1<block<n, affine, 1, tag1<SUBNET>>>>, innermost first."""
    return [("tag", 1), ("con", n, 3, 1), ("affine",), ("relu",), ("con", n, 3, 1), ("affine",), ("add_prev", 1),
            ("relu",)]


def _ares_down(n: int) -> list[tuple]:
    """relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<n, affine, 2, tag1<SUBNET>>>>>>>, innermost first."""
    return [("tag", 1), ("con", n, 3, 2), ("affine",), ("relu",), ("con", n, 3, 1), ("affine",), ("tag", 2),
            ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2), ("relu",)]


ARCH: list[tuple] = [
    ("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2),
    *_ares(32), *_ares(32), *_ares(32),                            # alevel4
    *_ares_down(64), *_ares(64), *_ares(64), *_ares(64),           # alevel3
    *_ares_down(128), *_ares(128), *_ares(128),                    # alevel2
    *_ares_down(256), *_ares(256), *_ares(256),                    # alevel1
    *_ares_down(256),                                              # alevel0
    ("avg_pool_all",), ("fc", DIM),
]

# the type string each layer's details start with in the file, for each kind of layer
_VERSIONS = {"con": ("con_4", "con_5", "con_6"), "affine": ("affine_", "affine_2", "bn_con2"),
             "relu": ("relu_", "relu_2"), "max_pool": ("max_pool_2",), "avg_pool": ("avg_pool_2",),
             "avg_pool_all": ("avg_pool_2",), "add_prev": ("add_prev_",), "fc": ("fc_2", "fc_3")}


# ---------------------------------------------------------------------------------------------------------------------
# dlib's serialization format (dlib/serialize.h, dlib/cuda/tensor.h)
# ---------------------------------------------------------------------------------------------------------------------


class FormatError(ValueError):
    """The file is not dlib's serialization of the face-recognition network."""


class _Stream:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"unexpected end of file at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        """An integer: a control byte (bit 7: negative, low 4 bits: how many bytes follow), then little-endian
        magnitude bytes."""
        ctrl = self._take(1)[0]
        n = ctrl & 0x0F
        if n == 0 or n > 8 or ctrl & 0x70:
            raise FormatError(f"bad integer control byte {ctrl:#x} at byte {self.pos - 1}")
        v = int.from_bytes(self._take(n), "little")
        return -v if ctrl & 0x80 else v

    def float(self) -> float:
        """A float or double: ``mantissa * 2**exponent`` as two integers (dlib's float_details)."""
        if self.data[self.pos] & 0x70:
            raise FormatError(f"old ASCII float format at byte {self.pos}; not supported")
        mantissa, exponent = self.int(), self.int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise FormatError(f"bad bool {c!r} at byte {self.pos - 1}")
        return c == b"1"

    def str(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def version(self, *allowed: int) -> int:
        v = self.int()
        if v not in allowed:
            raise FormatError(f"version {v} at byte {self.pos}, expected one of {allowed}")
        return v

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: version 2, (num_samples, k, nr, nc), then little-endian float32 values."""
        self.version(2)
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        return np.frombuffer(self._take(4 * n), dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor: only its shape (a view into a layer's flat parameter tensor)."""
        self.version(1)
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class Layer:
    """One layer's parameters as dlib stores them (NCHW, float32)."""

    kind: str
    version: str
    params: dict = field(default_factory=dict)


@dataclass
class Net:
    """What ``read`` finds in the file."""

    mean_rgb: tuple[float, float, float]
    layers: list[Layer]  # in ARCH's order, innermost first; tags and skips included (without parameters)
    loss: str


def _size(shape) -> int:
    return int(np.prod(shape))


def _con(s: _Stream, version: str, spec: tuple) -> dict:
    _, n_filters, k, stride = spec
    params = s.tensor().ravel()
    got = dict(num_filters=s.int(), nr=s.int(), nc=s.int(), stride_y=s.int(), stride_x=s.int(), padding_y=s.int(),
               padding_x=s.int())
    filters, biases = s.alias(), s.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        s.float()
    use_bias = s.bool() if version in ("con_5", "con_6") else True
    use_relu = s.bool() if version == "con_6" else False
    pad = k // 2 if stride == 1 else 0  # dlib's default padding
    want = dict(num_filters=n_filters, nr=k, nc=k, stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)
    if got != want:
        raise FormatError(f"con layer {got}, expected {want}")
    w = params[:_size(filters)].reshape(filters)
    b = params[_size(filters):_size(filters) + n_filters] if use_bias and _size(biases) else np.zeros(n_filters, "f4")
    if w.shape[0] != n_filters or b.shape != (n_filters,):
        raise FormatError(f"con parameters {w.shape} / {b.shape} do not fit {n_filters} filters")
    return dict(filters=w, bias=b, padding=pad, relu=use_relu)


def _affine(s: _Stream, version: str) -> dict:
    params = s.tensor().ravel()
    gamma, beta = s.alias(), s.alias()
    if version == "bn_con2":
        s.tensor(), s.tensor()  # means and invstds of the last training batch
        mean, var = s.tensor().ravel(), s.tensor().ravel()  # running means and variances
        s.int(), s.int()  # num_updates, running_stats_window_size
        for _ in range(4):
            s.float()
        eps = np.float32(s.float())
        g, b = params[:_size(gamma)], params[_size(gamma):_size(gamma) + _size(beta)]
        # what affine_(const bn_&) does, in float32
        scale = (g / np.sqrt(var + eps)).astype(np.float32)
        return dict(gamma=scale, beta=(b - scale * mean).astype(np.float32))
    mode = s.int()
    disabled = s.bool() if version == "affine_2" else False
    if mode != 0:
        raise FormatError("affine layer not in CONV_MODE")
    if disabled:
        n = _size(gamma)
        return dict(gamma=np.ones(n, "f4"), beta=np.zeros(n, "f4"))
    return dict(gamma=params[:_size(gamma)].copy(), beta=params[_size(gamma):_size(gamma) + _size(beta)].copy())


def _pool(s: _Stream, spec: tuple) -> dict:
    got = dict(nr=s.int(), nc=s.int(), stride_y=s.int(), stride_x=s.int(), padding_y=s.int(), padding_x=s.int())
    if spec[0] == "avg_pool_all":
        want = dict(nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0)
    else:
        _, k, stride = spec
        pad = k // 2 if stride == 1 else 0
        want = dict(nr=k, nc=k, stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)
    if got != want:
        raise FormatError(f"{spec[0]} layer {got}, expected {want}")
    return {}


def _fc(s: _Stream, version: str, spec: tuple) -> dict:
    n_out, n_in = s.int(), s.int()
    params = s.tensor().ravel()
    weights, _biases = s.alias(), s.alias()
    bias_mode = s.int()
    for _ in range(4):
        s.float()
    if version == "fc_3":
        s.bool()
    if n_out != spec[1] or bias_mode != 1 or weights[:2] != (n_in, n_out):  # FC_NO_BIAS == 1
        raise FormatError(f"fc layer {n_out} outputs, bias mode {bias_mode}, weights {weights}")
    return dict(weights=params[:n_in * n_out].reshape(n_in, n_out).copy())


def _details(s: _Stream, spec: tuple) -> Layer:
    kind = spec[0]
    version = s.str()
    if version not in _VERSIONS[kind]:
        raise FormatError(f"found {version!r} at byte {s.pos} where dlib's net has a {kind} layer")
    if kind == "con":
        params = _con(s, version, spec)
    elif kind == "affine":
        params = _affine(s, version)
    elif kind == "relu":
        if version == "relu_2" and s.bool():
            raise FormatError("a disabled relu layer")
        params = {}
    elif kind in ("max_pool", "avg_pool", "avg_pool_all"):
        params = _pool(s, spec)
    elif kind == "fc":
        params = _fc(s, version, spec)
    else:  # add_prev: nothing but its name
        params = {}
    return Layer(kind, version, params)


def _add_layer_tail(s: _Stream, version: int, input_layer: bool) -> None:
    """What dlib's add_layer writes after a layer's details: three flags, then cached tensors (empty in a saved
    net, but read either way)."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        s.bool()
    s.tensor(), s.tensor()  # x_grad, cached_output
    if input_layer:
        s.tensor()  # grad_final
        if version >= 3:
            s.int()  # sample_expansion_factor
    elif version >= 2:
        s.tensor()  # params_grad


def read(path: str | Path | None = None) -> Net:
    """Parse dlib's ``serialize()`` of the face-recognition net; checks every layer against ``ARCH`` (kind, sizes,
    strides, paddings) and that the whole file is consumed."""
    if path is None:
        from unmasking.faces import model_file

        path = model_file(MODEL_FILE)
    s = _Stream(Path(path).read_bytes())
    # add_loss_layer: version, the loss's details, then the network
    s.version(1)
    loss = s.str()
    if loss == "loss_metric_2":
        s.float(), s.float()  # margin, distance threshold
    elif loss != "loss_metric_":
        raise FormatError(f"loss {loss!r}, expected dlib's loss_metric")
    # Each layer writes its version and then its subnetwork before its own details, so the headers of all layers
    # come first (outermost first), then the input layer, then the details of each layer from the innermost out.
    versions: list[int | None] = [None] * len(ARCH)
    for i in range(len(ARCH) - 1, 0, -1):
        if ARCH[i][0] in ("tag", "skip"):
            s.version(1)  # add_tag_layer / add_skip_layer over a non-input subnetwork: only the version
        else:
            versions[i] = s.version(1, 2)
    versions[0] = s.version(2, 3)  # the add_layer over the input layer
    if s.str() != "input_rgb_image_sized":
        raise FormatError("the input layer is not input_rgb_image_sized")
    mean_rgb = (s.float(), s.float(), s.float())
    if (s.int(), s.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise FormatError(f"input size is not {CHIP_SIZE} x {CHIP_SIZE}")
    layers = []
    for i, spec in enumerate(ARCH):
        if spec[0] in ("tag", "skip"):
            layers.append(Layer(spec[0], "", {"tag": spec[1]}))
            continue
        layers.append(_details(s, spec))
        _add_layer_tail(s, versions[i], input_layer=i == 0)
    if s.pos != len(s.data):
        raise FormatError(f"{len(s.data) - s.pos} bytes left after the network")
    return Net(mean_rgb=mean_rgb, layers=layers, loss=loss)


# ---------------------------------------------------------------------------------------------------------------------
# The Keras model
# ---------------------------------------------------------------------------------------------------------------------


def _keras_layers():
    import keras

    class Normalize(keras.layers.Layer):
        """dlib's input_rgb_image: (pixel - mean) / 256 per channel."""

        def __init__(self, mean_rgb, **kw):
            super().__init__(**kw)
            self.mean_rgb = [float(v) for v in mean_rgb]

        def call(self, x):
            x = keras.ops.cast(x, "float32")
            return (x - keras.ops.convert_to_tensor(np.array(self.mean_rgb, "f4"))) / 256.0

        def get_config(self):
            return {**super().get_config(), "mean_rgb": self.mean_rgb}

    class Affine(keras.layers.Layer):
        """dlib's affine_ in CONV_MODE: x * gamma + beta per channel."""

        def build(self, input_shape):
            c = input_shape[-1]
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma", trainable=False)
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta", trainable=False)

        def call(self, x):
            return x * self.gamma + self.beta

    class ZeroExtendAdd(keras.layers.Layer):
        """dlib's add_prev: the sum of two NHWC tensors, each zero-extended at the end of every dimension (rows,
        columns, channels) to the larger of the two sizes."""

        def compute_output_shape(self, input_shapes):
            a, b = input_shapes
            return (a[0], *(max(u, v) for u, v in zip(a[1:], b[1:])))

        def call(self, inputs):
            a, b = inputs
            target = [max(u, v) for u, v in zip(a.shape[1:], b.shape[1:])]

            def extend(t):
                pad = [(0, 0)] + [(0, n - m) for m, n in zip(t.shape[1:], target)]
                return keras.ops.pad(t, pad) if any(p for _, p in pad) else t

            return extend(a) + extend(b)

    return Normalize, Affine, ZeroExtendAdd


def build(net: Net):
    """The Keras model of ``net`` with its weights set: (N, 150, 150, 3) RGB chips (uint8 values, any dtype) to
    (N, 128) float32 descriptors."""
    import keras

    Normalize, Affine, ZeroExtendAdd = _keras_layers()
    f32 = dict(dtype="float32")  # whatever the global mixed-precision policy is
    inp = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="chips")
    x = Normalize(net.mean_rgb, name="input_rgb", **f32)(inp)
    tags: dict[int, object] = {}
    weights: list[tuple[object, list[np.ndarray]]] = []
    for i, (spec, layer) in enumerate(zip(ARCH, net.layers)):
        kind, name = spec[0], f"l{i:02d}_{spec[0]}"
        p = layer.params
        if kind == "tag":
            tags[spec[1]] = x
        elif kind == "skip":
            x = tags[spec[1]]
        elif kind == "con":
            _, n, k, stride = spec
            conv = keras.layers.Conv2D(n, k, strides=stride, padding="same" if p["padding"] else "valid",
                                       activation="relu" if p["relu"] else None, name=name, **f32)
            x = conv(x)
            weights.append((conv, [p["filters"].transpose(2, 3, 1, 0), p["bias"]]))  # OIHW -> HWIO
        elif kind == "affine":
            aff = Affine(name=name, **f32)
            x = aff(x)
            weights.append((aff, [p["gamma"], p["beta"]]))
        elif kind == "relu":
            x = keras.layers.ReLU(name=name, **f32)(x)
        elif kind == "max_pool":
            x = keras.layers.MaxPooling2D(spec[1], strides=spec[2], padding="valid", name=name, **f32)(x)
        elif kind == "avg_pool":
            x = keras.layers.AveragePooling2D(spec[1], strides=spec[2], padding="valid", name=name, **f32)(x)
        elif kind == "add_prev":
            x = ZeroExtendAdd(name=name, **f32)([x, tags[spec[1]]])
        elif kind == "avg_pool_all":
            x = keras.layers.GlobalAveragePooling2D(name=name, **f32)(x)
        elif kind == "fc":
            fc = keras.layers.Dense(spec[1], use_bias=False, name=name, **f32)
            x = fc(x)
            weights.append((fc, [p["weights"]]))
    model = keras.Model(inp, x, name="dlib_face_recognition_resnet_model_v1")
    for lay, w in weights:
        lay.set_weights(w)
    return model


def load(path: str | Path | None = None):
    """The Keras model of dlib's face-recognition net, weights read from ``path`` (the ``.dat`` file of
    ``face-recognition-models`` when None)."""
    return build(read(path))


@lru_cache(maxsize=1)
def _model():
    return load()


def descriptors(chips: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """dlib's 128-D face descriptors of aligned 150 x 150 RGB face chips (N, 150, 150, 3), uint8 (or floats on the
    0-255 scale), as float64 (N, 128), like ``compute_face_descriptor`` with no jitter. The model is built once per
    process."""
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) RGB, got {chips.shape}")
    if len(chips) == 0:
        return np.zeros((0, DIM))
    model = _model()
    out = [np.asarray(model.predict_on_batch(chips[i:i + batch_size].astype(np.float32)))
           for i in range(0, len(chips), batch_size)]
    return np.concatenate(out).astype(np.float64)
