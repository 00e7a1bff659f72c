"""The Keras re-implementation of dlib's face-recognition ResNet (lib/unmasking/dlibnet.py) against dlib itself."""

import numpy as np
import pytest

from conftest import STYLEGAN
from unmasking import dlibnet, faces, images

TOL = 1e-4  # measured: under 1e-6 for descriptors and distances

dlib = pytest.importorskip("dlib")


def pairwise(d: np.ndarray) -> np.ndarray:
    return np.sqrt(((d[:, None] - d[None]) ** 2).sum(-1))


def dlib_descriptors(chips) -> np.ndarray:
    return np.array([np.array(v) for v in faces._encoder().compute_face_descriptor(list(chips))])


def assert_matches_dlib(chips: np.ndarray) -> None:
    ours, ref = dlibnet.descriptors(chips), dlib_descriptors(chips)
    assert ours.shape == ref.shape == (len(chips), 128) and ours.dtype == np.float64
    assert np.abs(ours - ref).max() < TOL, np.abs(ours - ref).max()
    assert np.abs(pairwise(ours) - pairwise(ref)).max() < TOL
    assert pairwise(ref)[np.triu_indices(len(chips), 1)].min() > 100 * TOL  # the chips are told apart at all


def test_the_reader_finds_dlibs_whole_network_in_the_file():
    net = dlibnet.read()  # checks every layer's kind, sizes, strides and paddings, and that no byte is left over
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    stem = net.layers[0].params
    assert stem["filters"].shape == (32, 3, 7, 7) and stem["padding"] == 0  # stride 2: no padding in dlib
    assert net.layers[-1].params["weights"].shape == (256, 128)
    assert all(np.isfinite(v).all() for layer in net.layers for v in layer.params.values() if isinstance(v, np.ndarray))


def test_the_model_has_dlibs_geometry():
    model = dlibnet._model()
    sides = [layer.output.shape[1] for layer in model.layers if layer.name.endswith(("_add_prev", "_max_pool"))]
    # 150 -> 7x7/2 conv 72 -> 3x3/2 max pool 35; each strided block: 17, 8, then 3 x 3 + 4 x 4 shortcut = 4, 1 + 2 = 2
    assert sorted(set(sides), reverse=True) == [35, 17, 8, 4, 2]
    assert model.output.shape[1:] == (128,)


def test_add_prev_zero_extends_channels_and_the_bottom_right():
    _, _, ZeroExtendAdd = dlibnet._keras_layers()
    a = np.arange(1 * 3 * 3 * 2, dtype="f4").reshape(1, 3, 3, 2)
    b = np.ones((1, 4, 4, 4), "f4")
    out = np.asarray(ZeroExtendAdd()([a, b]))
    want = b.copy()
    want[:, :3, :3, :2] += a
    np.testing.assert_array_equal(out, want)


def test_descriptors_equal_dlibs_on_noise_chips():
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (6, 150, 150, 3), dtype=np.uint8)
    chips[0] = 0
    chips[1] = 255
    assert_matches_dlib(chips)
    single = dlibnet.descriptors(chips[2])  # one chip, no batch axis; floats on the 0-255 scale
    np.testing.assert_allclose(single, dlibnet.descriptors(chips[2:3].astype(np.float64)), atol=1e-6)
    assert single.shape == (1, 128)
    assert np.abs(dlibnet.descriptors(chips, batch_size=4) - dlibnet.descriptors(chips)).max() < 1e-5


def test_descriptors_reject_chips_of_another_size():
    with pytest.raises(ValueError):
        dlibnet.descriptors(np.zeros((2, 160, 160, 3), np.uint8))
    assert dlibnet.descriptors(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


@pytest.mark.skipif(not STYLEGAN.is_dir(), reason="../shared/data is not present")
def test_descriptors_equal_dlibs_on_aligned_face_chips():
    chips, whole = [], None
    for f in sorted(STYLEGAN.glob("*.jpg"))[:8]:
        img = images.read_rgb(f)
        box = faces.central_face(img, 0)
        if box is None:
            continue
        pts = faces.landmarks(img, box)
        shape = dlib.full_object_detection(dlib.rectangle(*box), [dlib.point(int(x), int(y)) for x, y in pts])
        chips.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        if whole is None:  # dlib's own path from a photo and its landmarks (what faces.embeddings calls)
            whole = np.array(faces._encoder().compute_face_descriptor(img, shape))
    assert len(chips) >= 4
    chips = np.stack(chips)
    assert_matches_dlib(chips)
    assert np.abs(dlibnet.descriptors(chips[:1])[0] - whole).max() < TOL


@pytest.mark.skipif(not STYLEGAN.is_dir(), reason="../shared/data is not present")
def test_the_study_s_embeddings_are_dlibs():
    """``faces.embeddings`` (landmarks, chips, ``dlibnet``) against dlib's own call on the same images and box."""
    imgs = [images.read_rgb(f) for f in sorted(STYLEGAN.glob("*.jpg"))[:3]]
    box = faces.central_face(imgs[0], 0)
    rect = dlib.rectangle(*box)
    ref = [np.array(faces._encoder().compute_face_descriptor(i, faces._predictor()(i, rect))) for i in imgs]
    ours = faces.embeddings(imgs, box)
    assert len(ours) == 3 and np.abs(np.stack(ours) - np.stack(ref)).max() < TOL
    assert faces.face_chips([], box).shape == (0, 150, 150, 3)
