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


def test_paste_mean_is_the_rounded_mean_of_the_pasted_photos_byte_for_byte():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    preds = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    estimates = np.zeros((5, 32, 32), np.float32)
    estimates[:, 16:30, 6:26] = 0.8
    estimates[3] = 0  # a crop whose estimate is empty changes nothing
    for boxes, est in ((photos.shifted((-10, 30, 90, 130), 0.04), estimates),  # past the left and bottom edges
                       (photos.shifted((40, 10, 100, 70), 0.02), None)):  # whole crops, soft edges
        pasted = [photos.paste_back(img, p, b, None if est is None else est[k])
                  for k, (p, b) in enumerate(zip(preds, boxes))]
        want = np.clip(np.mean(pasted, axis=0, dtype=np.float64) + 0.5, 0, 255).astype(np.uint8)
        got = photos.paste_mean(img, list(preds), boxes, None if est is None else list(est))
        assert np.array_equal(got, want)
        assert np.array_equal(photos.paste_mean(img, [preds[0]], boxes[:1], None if est is None else [est[0]]),
                              pasted[0])
    assert np.array_equal(photos.paste_mean(img, [preds[0]], [(200, 200, 240, 240)], None), img)  # off the photo


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


@pytest.fixture(scope="module")
def cloth_masked():
    """Generated faces with a black cloth mask: (masked face, box and 68 landmarks on the unmasked face)."""
    from unmasking import images, masks

    cloth = masks.drawn_templates()["cloth-black"]
    out = []
    for f in sorted(STYLEGAN.glob("*.jpg"))[:60]:
        u = images.read_rgb(f)
        box = faces.central_face(u)
        if box is not None:
            lm = faces.landmarks(u, box)
            out.append((masks.apply_mask(u, lm, cloth), box, lm))
    return out


@pytest.fixture(scope="module")
def cloth_detector(tmp_path_factory, cloth_masked):
    """A masked-face detector file trained on the first 40 of ``cloth_masked``."""
    from unmasking import detector, paths

    svm = tmp_path_factory.mktemp("cloth") / paths.MASKED_DETECTOR
    detector.train(cloth_masked[:40], 5.0, threads=1).save(str(svm))
    return svm


@needs_shared
def test_the_masked_face_detector_and_the_cnn_find_masked_faces_hog_misses(cloth_masked, cloth_detector):
    """dlib's HOG detector misses most faces with a black cloth mask; the chain still finds them."""
    from unmasking import detector

    test = cloth_masked[40:]
    missed = [(img, box) for img, box, _ in test if not faces.detect_faces(img, 1)]
    assert len(missed) >= len(test) // 2  # HOG misses most masked faces
    found = [faces.find_face_boxes(img, 1, "auto", cloth_detector) for img, _ in missed]
    assert all(boxes for boxes, _ in found)
    assert {by for _, by in found} <= {"masked-hog", "cnn"} and any(by == "masked-hog" for _, by in found)
    for (boxes, _), (_, true) in zip(found, missed):
        assert detector.iou(boxes[0], true) > 0.4
    assert faces.find_face_boxes(missed[0][0], 1, "hog") == ([], "none")


@needs_shared
def test_the_masked_face_landmark_model_places_the_hidden_jaw_better_than_dlibs(tmp_path, cloth_masked,
                                                                              cloth_detector):
    """A landmark model trained on 40 faces with a black cloth mask gives crop squares that overlap those of the
    unmasked faces better than dlib's model does, on 20 others; ``find_faces`` fits with it when it sits beside the
    masked-face detector."""
    from unmasking import detector, masks, paths

    train, test = cloth_masked[:40], cloth_masked[40:]
    svm = tmp_path / paths.MASKED_DETECTOR
    svm.write_bytes(cloth_detector.read_bytes())  # a folder of its own: the landmark model is written beside it
    assert faces.masked_landmarks(svm) is None  # not trained yet: dlib's model is used
    lp = {"trees": 20, "tree_depth": 4, "cascade_depth": 10, "oversampling": 10}
    model = detector.train_landmarks(detector.landmark_samples(train, svm, 1, 90), lp, seed=0)
    model.save(str(tmp_path / paths.MASKED_LANDMARKS))
    val = detector.landmark_samples(test, svm, 1, 90)
    assert len(val) >= 15
    ours, dlibs = detector.square_overlap(val, model), detector.square_overlap(val)
    assert ours > dlibs + 0.02, (ours, dlibs)
    img = val[0][0]
    found = photos.find_faces(img, 32, masked=svm)[0]
    assert found.box == masks.crop_box(faces.landmarks(img, found.face_box, faces.masked_landmarks(svm)))
    assert found.box != masks.crop_box(faces.landmarks(img, found.face_box))


def test_the_masked_face_models_load_once_a_file_is_written_where_there_was_none(tmp_path):
    """A process that asked for the masked-face detector or landmark model before the ``detector`` stage wrote them
    (no file, or the stage's empty "none") gets them once they are there: nothing is cached for a missing file."""
    from unmasking import paths, shipped

    shipped_svm = shipped.masked_detector()
    shipped_dat = shipped_svm.with_name(paths.MASKED_LANDMARKS)
    svm, dat = tmp_path / paths.MASKED_DETECTOR, tmp_path / paths.MASKED_LANDMARKS
    assert faces.masked_detector(str(svm)) is None and faces.masked_landmarks(svm) is None
    svm.write_text("")
    dat.write_text("")
    assert faces.masked_detector(str(svm)) is None and faces.masked_landmarks(svm) is None
    svm.write_bytes(shipped_svm.read_bytes())
    assert faces.masked_detector(str(svm)) is not None
    if shipped_dat.stat().st_size:  # the committed weights carry one (test_shipped)
        dat.write_bytes(shipped_dat.read_bytes())
        assert faces.masked_landmarks(svm) is not None


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
        for got, want in zip(detected.outputs[name], expected):  # the crop level: the model on the first crop
            assert np.array_equal(got, images.resize(want.first[0], 32))
        assert detected.outputs[name].shape == detected.masked.shape  # scored at the set's size, 32 px
    assert not np.array_equal(photo.outputs["small"][0], photo.outputs["big"][0])
    assert photo.info["pasted"] == photos.PASTES["region"]
    (_, boxed), _, _ = testsets.folder_sets(tmp_path / "pairs", {"small": small}, ep, 32, photo_level=True,
                                            progress=False, paste="box")
    assert boxed.info["pasted"] == photos.PASTES["box"]
    for got, img in zip(boxed.outputs["small"], masked):  # the whole crop, as unmask predict pasted it before
        want = photos.unmask_faces(small, [img], [photos.find_faces(img, 32)], True, paste="box")[0]
        assert np.array_equal(got, want.image)
        alone = photos.unmask_faces(small, [img], [photos.find_faces(img, 32)], True, paste="box",
                                    shift=0)[0]  # the last crop alone, not averaged with its neighbours
        pred = models.unmask(small, alone.faces[0].crop[None], flip_average=True).faces[0]
        assert np.array_equal(alone.image, photos.paste_back(img, pred, alone.faces[0].box))


def test_the_photo_level_set_refuses_an_unknown_paste():
    from unmasking import testsets

    with pytest.raises(ValueError, match="paste"):
        testsets.photo_sets("test", [], [], [], [], [], None, {}, {}, 32, paste="everything")


@needs_shared
def test_refining_crops_again_from_landmarks_refitted_on_the_unmasked_output():
    from unmasking import data, images, masks

    net = models.build("mask_unet", 32, TINY_MASK_UNET)
    u = images.read_rgb(sorted(STYLEGAN.glob("*.jpg"))[5])
    img = masks.apply_mask(u, data.find_landmarks(u), masks.drawn_templates()["surgical-blue"])
    first = photos.unmask_image(net, img, flip_average=False, refine=0)
    assert first.faces[0].box == photos.find_faces(img, 32)[0].box
    once = photos.unmask_image(net, img, flip_average=False, refine=1)
    f = once.faces[0]
    assert f.box == masks.crop_box(faces.landmarks(first.image, f.face_box))  # refitted on the first output
    assert np.array_equal(f.crop, images.resize(masks.crop(img, f.box), 32))  # cut from the masked photo
    assert np.array_equal(once.first[0], first.first[0])
    pred = models.unmask(net, f.crop[None])
    assert np.array_equal(once.image, photos.paste_back(img, pred.faces[0], f.box, pred.masks[0]))
    twice = photos.unmask_image(net, img, flip_average=False, refine=2)
    assert twice.faces[0].box == masks.crop_box(faces.landmarks(once.image, f.face_box))


@needs_shared
def test_a_flip_averaged_models_last_crop_is_averaged_with_its_four_neighbours():
    from unmasking import data, images, masks

    net = untrained_mask_unet(32)  # its estimate marks the whole crop: every paste changes the photo
    u = images.read_rgb(sorted(STYLEGAN.glob("*.jpg"))[5])
    img = masks.apply_mask(u, data.find_landmarks(u), masks.drawn_templates()["surgical-blue"])
    img = np.pad(img, ((40, 40), (60, 60), (0, 0)), mode="reflect")  # room around the crops
    res = photos.unmask_image(net, img, flip_average=True, refine=0, shift=0.05)
    f = res.faces[0]
    boxes = photos.shifted(f.box, 0.05)
    step = round(0.05 * (f.box[2] - f.box[0]))
    assert boxes[0] == f.box and sorted(b[0] - f.box[0] for b in boxes) == [-step, 0, 0, 0, step]
    assert all(b[2] - b[0] == f.box[2] - f.box[0] for b in boxes) and photos.shifted(f.box, 0) == [f.box]
    pred = models.unmask(net, np.stack([images.resize(masks.crop(img, b), 32) for b in boxes]), flip_average=True)
    pasted = np.stack([photos.paste_back(img, pred.faces[k], b, pred.masks[k]) for k, b in enumerate(boxes)])
    assert np.abs(res.image - pasted.mean(0)).max() <= 0.5  # the mean of the five pasted photos
    untouched = (pasted == img).all(0).all(-1)  # no paste changed the pixel
    assert untouched.any() and np.array_equal(res.image[untouched], img[untouched])
    assert np.array_equal(res.first[0], pred.faces[0])  # the first crop's own output, as before
    alone = photos.unmask_image(net, img, flip_average=True, refine=0, shift=0)
    assert not np.array_equal(alone.image, res.image)
    # a model that is not flip-averaged is not averaged over crops either
    assert np.array_equal(photos.unmask_image(net, img, flip_average=False, refine=0, shift=0.05).image,
                          photos.unmask_image(net, img, flip_average=False, refine=0, shift=0).image)


def test_a_whole_image_face_is_not_refined():
    net = models.build("mask_unet", 32, TINY_MASK_UNET)
    img = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    res = photos.unmask_image(net, img, flip_average=False, crop="none", refine=2)
    assert res.faces[0].box == (0, 0, 50, 40) and res.faces[0].detector == "whole"
    assert np.array_equal(res.first[0], models.unmask(net, res.faces[0].crop[None]).faces[0])


@needs_shared
def test_the_region_set_scores_the_test_crops_over_the_photos_exact_region():
    from unmasking import data, evaluate, images, masks, testsets

    files = sorted(STYLEGAN.glob("*.jpg"))[:3]
    originals = [images.read_rgb(f) for f in files]
    ms, us, regions = [], [], []
    for u in originals:
        lm = data.find_landmarks(u)
        m = masks.apply_mask(u, lm, masks.drawn_templates()["surgical-white"])
        box = masks.crop_box(lm)
        ms.append(images.resize(masks.crop(m, box), 32))
        us.append(images.resize(masks.crop(u, box), 32))
        regions.append(masks.difference_mask(m, u))
    us[2] = us[2][::-1].copy()  # a truth that is not the photo's own crop: left out
    test = evaluate.PairSet("test", np.stack(ms), np.stack(us), ["a", "b", "c"], ["m"] * 3, info={"with_reference": 1})
    got = testsets.region_set(test, ["c", "a", "z"], [originals[2], originals[0], originals[1]],
                              [regions[2], regions[0], regions[1]], workers=1, progress=False)
    assert got.name == "test_region" and got.ids == ["a"] and got.info["left_out"] == 2
    assert "with_reference" not in got.info and got.same_photo_n == 0
    box = masks.crop_box(data.find_landmarks(originals[0]))
    assert np.array_equal(got.regions[0], testsets.region_crop(regions[0], box, 32))
    assert np.array_equal(got.masked[0], ms[0]) and np.array_equal(got.unmasked[0], us[0])
    # the exact region is not the 32 px difference region the test split is scored over
    assert not np.array_equal(got.regions[0], masks.difference_mask(ms[0], us[0]))
