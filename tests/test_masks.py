"""Mask templates: finding them, and MaskTheFace templates warped onto the 68 landmarks."""

import numpy as np
import pytest
from PIL import Image

from conftest import MASKTHEFACE_CFG, TEMPLATES, needs_shared
from unmasking import masks
from unmasking.images import ImageError

# A frontal face's 68 landmarks (iBUG layout) in a 200 px image, from dlib on an LFW face, rounded.
JAW = [(52, 92), (53, 111), (56, 129), (60, 147), (67, 164), (78, 178), (92, 190), (107, 199), (123, 202),
       (139, 199), (153, 190), (166, 178), (176, 163), (182, 146), (186, 128), (188, 110), (189, 91)]


def face_landmarks(tilt_deg: float = 0.0, scale: float = 1.0) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[0:17] = JAW
    lm[17:27] = [(60 + 10 * i, 80 - 4 * (2 - abs(2 - i % 5))) for i in range(10)]  # brows
    lm[27:31] = [(121, 88 + 10 * i) for i in range(4)]  # nose bridge
    lm[31:36] = [(105 + 8 * i, 133) for i in range(5)]
    lm[36:48] = [(80 + 4 * i, 95) for i in range(6)] + [(140 + 4 * i, 95) for i in range(6)]
    lm[48:68] = [(95 + 3 * i, 160 + (i % 3)) for i in range(20)]  # mouth
    c = lm.mean(axis=0)
    t = np.radians(tilt_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (lm - c) @ rot.T * scale + c


def marker_template(h: int = 300, w: int = 400) -> masks.Template:
    """A grey template with a coloured 13x13 dot centred on each of its six anchors (dot k has red value 40 k + 30)."""
    anchors = np.array([[30, 60], [200, 15], [370, 60], [35, 200], [200, 285], [365, 200]], float)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[10:290, 20:380] = (128, 128, 128, 255)
    for k, (x, y) in enumerate(anchors):
        rgba[int(y) - 6 : int(y) + 7, int(x) - 6 : int(x) + 7] = (40 * k + 30, 255, 0, 255)
    return masks.Template("markers", rgba, anchors)


@pytest.mark.parametrize("tilt,scale", [(0, 1.0), (12, 1.0), (-8, 0.7)])
def test_warped_anchors_land_on_the_landmarks_they_name(tilt, scale):
    lm = face_landmarks(tilt, scale)
    out = masks.warp_template(np.zeros((240, 240, 3), np.uint8), lm, marker_template())
    targets = masks.anchor_targets(lm)
    for k, target in enumerate(targets):
        hit = (np.abs(out[..., 0].astype(int) - (40 * k + 30)) <= 8) & (out[..., 1] > 235) & (out[..., 2] < 20)
        ys, xs = np.nonzero(hit)
        assert len(xs), f"anchor {masks.ANCHOR_NAMES[k]} not rendered"
        centre = np.array([xs.mean(), ys.mean()])
        assert np.hypot(*(centre - target)) <= 2.0, (masks.ANCHOR_NAMES[k], centre, target)


def whole_image_warp(img: np.ndarray, lm: np.ndarray, template: masks.Template) -> np.ndarray:
    """The two perspective warps over the whole image (the definition ``warp_template`` computes over a box)."""
    import cv2

    src, dst = template.anchors.astype(np.float32), masks.anchor_targets(lm).astype(np.float32)
    rgba = template.rgba.astype(np.float32)
    premult = np.concatenate([rgba[..., :3] * rgba[..., 3:4] / 255, rgba[..., 3:4] / 255], axis=-1)
    acc = np.zeros(img.shape[:2] + (4,), np.float32)
    alpha = np.zeros(img.shape[:2], np.float32)
    for quad, keep in zip(((0, 1, 4, 3), (1, 2, 5, 4)), masks._half_masks(template.anchors, rgba.shape[:2])):
        m = cv2.getPerspectiveTransform(src[list(quad)], dst[list(quad)])
        warped = cv2.warpPerspective(premult * keep[..., None], m, img.shape[1::-1], flags=cv2.INTER_LINEAR)
        acc += warped
        alpha = np.maximum(alpha, warped[..., 3])
    color = acc[..., :3] / np.maximum(acc[..., 3:4], 1e-6)
    a = np.clip(alpha, 0, 1)[..., None]
    return np.clip(img * (1 - a) + color * a + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("tilt,scale,shift", [(0, 1.0, (0, 0)), (12, 0.7, (0, 0)), (-8, 1.2, (-70, 40))])
def test_the_warp_over_the_template_box_equals_the_warp_over_the_whole_image(tilt, scale, shift):
    lm = face_landmarks(tilt, scale) + shift  # the last: the mask partly outside the image
    img = np.random.default_rng(3).integers(0, 256, (240, 240, 3), dtype=np.uint8)
    tpl = marker_template()
    got = masks.warp_template(img, lm, tpl)
    want = whole_image_warp(img, lm, tpl)
    assert np.abs(got.astype(int) - want).max() <= 1  # the same warp, its matrix shifted: rounding at most
    assert (got != want).mean() < 1e-3
    assert (got != img).any()
    assert masks.warp_template(img, lm, tpl).tobytes() == got.tobytes()  # the cached halves give the same result


def test_anchor_targets_follow_the_named_landmarks():
    lm = face_landmarks()
    t = dict(zip(masks.ANCHOR_NAMES, masks.anchor_targets(lm)))
    assert np.allclose(t["e"], lm[8]) and np.allclose(t["a"], lm[1]) and np.allclose(t["f"], lm[11])
    assert np.allclose(t["b"], (lm[28] + lm[29]) / 2)
    assert t["b"][1] < t["a"][1] < t["d"][1] < t["e"][1]  # nose bridge above the jaw points above the chin


def test_warped_mask_has_no_seam_and_covers_nose_to_chin():
    lm = face_landmarks(5)
    tpl = marker_template()
    tpl.rgba[..., :3] = (90, 120, 200)  # plain blue, no markers
    out = masks.warp_template(np.zeros((240, 240, 3), np.uint8), lm, tpl)
    cover = (out[..., 2] > 150)
    b, e = masks.anchor_targets(lm)[[1, 4]]
    for t in np.linspace(0.1, 0.9, 9):  # along the seam between the two halves: fully covered
        x, y = b + t * (e - b)
        assert out[int(round(y)), int(round(x)), 2] >= 195
    assert cover[int(b[1]) + 5, int(b[0])] and cover[int(e[1]) - 5, int(e[0])]


def test_masks_cfg_and_folders(tmp_path):
    png = tmp_path / "set" / "templates" / "blue.png"
    png.parent.mkdir(parents=True)
    Image.fromarray(marker_template().rgba).save(png)
    (tmp_path / "set" / "masks.cfg").write_text(
        "[blue]\ntemplate: masks/templates/blue.png\nmask_a: 30, 60\nmask_b: 200, 15\nmask_c: 370, 60\n"
        "mask_d: 35, 200\nmask_e: 200, 285\nmask_f: 365, 200\n\n[empty]\n\n[gone]\ntemplate: masks/templates/x.png\n")
    overlay = tmp_path / "plain-mask.png"
    Image.fromarray(np.full((10, 20, 4), 255, np.uint8)).save(overlay)
    lib = masks.find_templates(tmp_path)
    assert sorted(lib) == ["blue", "plain-mask"]  # the table's own PNGs are not loose overlays; missing ones skipped
    assert lib["blue"].anchors.shape == (6, 2) and lib["plain-mask"].anchors is None
    assert sorted(masks.find_templates(tmp_path / "set" / "masks.cfg")) == ["blue"]
    assert list(masks.find_templates(overlay)) == ["plain-mask"]
    assert [t.name for t in masks.select_templates(lib, [], "x")] == ["blue", "plain-mask"]
    with pytest.raises(ImageError, match="no mask template named 'red'.*found: blue, plain-mask"):
        masks.select_templates(lib, ["red"], "download.train_masks")
    # "name*n" stands for the name listed n times (drawn n times as often)
    assert [t.name for t in masks.select_templates(lib, ["blue*3", "plain-mask"], "x")] == ["blue"] * 3 + ["plain-mask"]
    for bad in ("blue*0", "blue*x", "red*2"):
        with pytest.raises(ImageError, match="download.train_masks"):
            masks.select_templates(lib, [bad], "download.train_masks")
    with pytest.raises(ImageError, match="not found"):
        masks.find_templates(tmp_path / "nothing")
    (tmp_path / "again").mkdir()
    Image.fromarray(np.full((10, 20, 4), 255, np.uint8)).save(tmp_path / "again" / "plain-mask.png")
    with pytest.raises(ImageError, match="two mask templates are named 'plain-mask'"):
        masks.find_templates(tmp_path)


@needs_shared
def test_shared_templates_are_all_found():
    lib = masks.find_templates(TEMPLATES)
    for name in ("default-mask", "black-mask", "blue-mask", "surgical_blue", "N95", "KN95", "cloth"):
        assert name in lib
    assert len(masks.read_masks_cfg(MASKTHEFACE_CFG)) == 21
