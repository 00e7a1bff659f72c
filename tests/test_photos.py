"""What unmask predict does to a photo (lib/unmasking/photos.py): the detector chain, region-only paste-back."""

import numpy as np
import pytest

from conftest import STYLEGAN, TINY_MASK_UNET, needs_shared, untrained_mask_unet
from unmasking import faces, models, photos


def test_paste_back_with_a_mask_estimate_changes_only_the_estimated_region():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    pred = np.full((32, 32, 3), 200, np.uint8)
    estimate = np.zeros((32, 32), np.float32)
    estimate[18:28, 8:24] = 0.9  # the model says: the mask is here
    box = (150, 80, 250, 180)
    out = photos.paste_back(img, pred, box, estimate)
    weight = np.zeros(img.shape[:2])
    weight[80:180, 150:250] = photos.blend_weight(estimate, 100, 100)
    outside = weight == 0
    assert outside.sum() > 0.95 * outside.size
    assert np.array_equal(out[outside], img[outside])  # byte for byte
    assert (out[80 + 70, 150 + 50] == 200).all()  # the middle of the estimated region is the prediction
    assert not (out[80:80 + 40, 150:250] != img[80:80 + 40, 150:250]).any()  # eyes and brows untouched


def test_paste_back_without_an_estimate_blends_the_whole_crop():
    img = np.full((300, 400, 3), 100, np.uint8)
    pred = np.full((32, 32, 3), 200, np.uint8)
    box = (150, 80, 250, 180)
    out = photos.paste_back(img, pred, box)
    changed = np.nonzero((out != img).any(-1))
    assert changed[0].min() >= 80 and changed[0].max() < 180 and changed[1].min() >= 150 and changed[1].max() < 250
    assert (out[130, 200] == 200).all()
    edge = photos.paste_back(img, pred, (-20, -20, 60, 60))  # a box over the border is clipped
    assert edge.shape == img.shape and (edge[:5, :5] != 100).any()


@needs_shared
def test_unmask_image_keeps_every_pixel_outside_the_models_estimate():
    from unmasking import data, images, masks

    net = models.build("mask_unet", 32, TINY_MASK_UNET)
    u = images.read_rgb(sorted(STYLEGAN.glob("*.jpg"))[3])
    img = masks.apply_mask(u, data.find_landmarks(u), masks.drawn_templates()["surgical-blue"])
    res = photos.unmask_image(net, img, flip_average=False)
    f = res.faces[0]
    pred = models.unmask(net, f.crop[None]).masks[0]
    left, top, right, bottom = f.box
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    weight = np.zeros((h, w))
    weight[y0:y1, x0:x1] = photos.blend_weight(pred, right - left, bottom - top)[y0 - top:y1 - top, x0 - left:x1 - left]
    assert np.array_equal(res.image[weight == 0], img[weight == 0])


@needs_shared
def test_the_masked_face_detector_and_the_cnn_find_masked_faces_hog_misses(tmp_path):
    """Generated faces with a black cloth mask: dlib's HOG detector misses most; the chain still finds them."""
    from unmasking import detector, images, masks

    cloth = masks.drawn_templates()["cloth-black"]
    files = sorted(STYLEGAN.glob("*.jpg"))
    photos_ = []
    for f in files[:60]:
        u = images.read_rgb(f)
        box = faces.central_face(u)
        if box is not None:
            photos_.append((masks.apply_mask(u, faces.landmarks(u, box), cloth), box))
    train, test = photos_[:40], photos_[40:]
    det = detector.train(train, 5.0, threads=1)
    det.save(str(tmp_path / "m.svm"))
    missed = [(img, box) for img, box in test if not faces.detect_faces(img, 1)]
    assert len(missed) >= len(test) // 2  # HOG misses most masked faces
    found = [faces.find_face_boxes(img, 1, "auto", tmp_path / "m.svm") for img, _ in missed]
    assert all(boxes for boxes, _ in found)
    assert {by for _, by in found} <= {"masked-hog", "cnn"} and any(by == "masked-hog" for _, by in found)
    for (boxes, _), (_, true) in zip(found, missed):
        assert detector.iou(boxes[0], true) > 0.4
    assert faces.find_face_boxes(missed[0][0], 1, "hog") == ([], "none")


def test_find_face_boxes_refuses_an_unknown_detector():
    with pytest.raises(ValueError, match="detector"):
        faces.find_face_boxes(np.zeros((40, 40, 3), np.uint8), 0, "haar")


@needs_shared
def test_the_photo_level_set_unmasks_each_model_at_its_own_size_as_predict_does(tmp_path):
    """Two models of different sizes in one evaluation: each model's photo-level output is what ``unmask predict``
    gives with it; its crop-level outputs are resized to the set's size."""
    from conftest import DEFAULT_MASK
    from unmasking import cli, images, testsets

    faces_dir = tmp_path / "faces"
    faces_dir.mkdir()
    for f in sorted(STYLEGAN.glob("*.jpg"))[:2]:
        (faces_dir / f.name).write_bytes(f.read_bytes())
    cli.synthesize_dir(faces_dir, tmp_path / "pairs", DEFAULT_MASK, progress=False)
    small, big = untrained_mask_unet(32), untrained_mask_unet(48)
    ep = {"flip_average": ["mask_unet"], "batch_size": 8, "telea_radius": 3, "detector": "auto", "upsample": 1,
          "workers": 1}
    sets, _, _ = testsets.folder_sets(tmp_path / "pairs", {"small": small, "big": big}, ep, 32, photo_level=True,
                                      progress=False)
    detected, photo = sets
    masked = [images.read_rgb(p) for p in sorted((tmp_path / "pairs" / "with_mask").iterdir())]
    for name, net in (("small", small), ("big", big)):
        expected = photos.unmask_photos(net, masked, flip_average=True)
        for got, want in zip(photo.outputs[name], expected):
            assert np.array_equal(got, want.image)
        assert detected.outputs[name].shape == detected.masked.shape  # scored at the set's size, 32 px
    assert not np.array_equal(photo.outputs["small"][0], photo.outputs["big"][0])
    assert photo.info["pasted"] == testsets.PASTES["region"]
    (_, boxed), _, _ = testsets.folder_sets(tmp_path / "pairs", {"small": small}, ep, 32, photo_level=True,
                                            progress=False, paste="box")
    assert boxed.info["pasted"] == testsets.PASTES["box"]
    for got, img in zip(boxed.outputs["small"], masked):  # the whole crop, as unmask predict pasted it before
        face = photos.find_faces(img, 32)[0]
        pred = models.unmask(small, face.crop[None], flip_average=True).faces[0]
        assert np.array_equal(got, photos.paste_back(img, pred, face.box))


def test_the_photo_level_set_refuses_an_unknown_paste():
    from unmasking import testsets

    with pytest.raises(ValueError, match="paste"):
        testsets.photo_sets("test", [], [], [], [], [], None, {}, {}, 32, paste="everything")
