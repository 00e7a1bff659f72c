"""Mask templates, pasting them on 68 face landmarks the way Face Mask Lite did, and the face-centred crop.

Face Mask Lite's masked images were made by a script that reads dlib's 68 landmarks and pastes a white surgical-mask
PNG: the template is split at its vertical centre line; both halves get the height from the nose point (a quarter of
the way down the nose bridge) to the chin bottom, and the widths 1.2 x the distances from the jaw points chin[2] and
chin[14] to the nose-chin line; the rejoined mask is alpha-pasted, axis-aligned, centred between nose point and chin
bottom. ``paste_template`` reproduces that placement.

The project's own masks (``drawn_templates``, used when no template file is given) are drawn from the landmarks by
``draw_mask`` in four styles (``DRAWN``): a white and a blue surgical mask with pleats, a black cloth mask that reaches
further down the jaw, and an N95-like cup with a centre ridge. They need no file, so the study runs on a machine that
has none of this team's templates.

MaskTheFace-style templates (a ``masks.cfg`` INI table naming each template PNG and six anchor pixels ``mask_a`` ...
``mask_f``: top-left, nose bridge, top-right, bottom-left, chin, bottom-right) are placed by ``warp_template``: the
anchors are mapped onto points of the 68 landmarks (``ANCHOR_LANDMARKS``) by two perspective warps, one per half of
the mask (a-b-e-d and b-c-f-e), so all six land exactly where they are meant to.

``find_templates`` turns a path into named templates: an overlay PNG (named by its file stem), a ``masks.cfg``, or a
folder holding any of these.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from unmasking.images import ImageError

WIDTH_RATIO = 1.2  # Face Mask Lite's width factor


def load_template(path: str | Path) -> np.ndarray:
    """A mask overlay as an RGBA uint8 array (H, W, 4)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            rgba = np.asarray(img.convert("RGBA"))
    except FileNotFoundError:
        raise ImageError(f"{path}: mask template not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable mask template ({e})") from None
    if rgba[..., 3].max() == 0:
        raise ImageError(f"{path}: mask template is fully transparent")
    return rgba


@dataclass(frozen=True)
class Template:
    """A named mask template: an RGBA overlay, and for a MaskTheFace template its six anchor pixels (a ... f); or one
    of the project's drawn styles (``style``, no overlay)."""

    name: str
    rgba: np.ndarray | None
    anchors: np.ndarray | None = None  # (6, 2) float, template pixels; None: Face Mask Lite placement
    path: str = ""
    style: str = ""  # a key of DRAWN: drawn from the landmarks by draw_mask


# The project's own masks: fill colour, pleat colour (None: no pleats), outline ("jaw": along the jaw from ear to ear;
# "cup": a rounded cup from the nose bridge to under the chin), and a vertical seam / ridge down the middle.
DRAWN = {
    "surgical-white": {"color": (236, 238, 240), "pleats": (200, 202, 206), "shape": "jaw", "seam": None},
    "surgical-blue": {"color": (128, 178, 214), "pleats": (98, 146, 186), "shape": "jaw", "seam": None},
    "cloth-black": {"color": (34, 34, 37), "pleats": None, "shape": "jaw_low", "seam": (58, 58, 62)},
    "n95": {"color": (238, 236, 228), "pleats": None, "shape": "cup", "seam": (205, 203, 195)},
}


def drawn_templates() -> dict[str, Template]:
    """The project's own masks, one template per style of ``DRAWN``."""
    return {name: Template(name, None, style=name) for name in DRAWN}


ANCHOR_NAMES = ("a", "b", "c", "d", "e", "f")

# Where MaskTheFace's six anchors go on the 68 landmarks (indices averaged): the jaw at the height of the nose bridge
# (a, c), the middle of the nose bridge (b), the jaw at the height of the lower lip (d, f) and the chin bottom (e).
ANCHOR_LANDMARKS = {"a": (1,), "b": (28, 29), "c": (15,), "d": (5,), "e": (8,), "f": (11,)}


def anchor_targets(lm: np.ndarray) -> np.ndarray:
    """The six points (a ... f) on a face with 68 landmarks ``lm`` where a MaskTheFace template's anchors go: (6, 2)."""
    return np.array([lm[list(ANCHOR_LANDMARKS[k])].mean(axis=0) for k in ANCHOR_NAMES], dtype=np.float64)


def read_masks_cfg(cfg: str | Path) -> dict[str, tuple[Path, np.ndarray]]:
    """The templates of a MaskTheFace ``masks.cfg``: {name: (png path, anchors (6, 2))}.

    The table's paths read ``masks/templates/<file>``; the file is looked up beside the table, in ``templates/`` and
    as written. Sections without a template image (``empty``, ``inpaint``) are skipped.
    """
    cfg = Path(cfg)
    parser = configparser.ConfigParser(strict=False)
    try:
        parser.read_string(cfg.read_text())
    except (OSError, configparser.Error) as e:
        raise ImageError(f"{cfg}: not a readable masks.cfg ({e})") from None
    out = {}
    for name in parser.sections():
        sec = parser[name]
        if "template" not in sec:
            continue
        rel = Path(sec["template"].strip())
        candidates = [cfg.parent / rel, cfg.parent / "templates" / rel.name, cfg.parent / rel.name]
        png = next((c for c in candidates if c.is_file()), None)
        if png is None:
            continue
        try:
            anchors = np.array([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in ANCHOR_NAMES])
        except (KeyError, ValueError) as e:
            raise ImageError(f"{cfg}: template {name!r} lacks six anchor points mask_a ... mask_f ({e})") from None
        out[name] = (png, anchors)
    return out


def find_templates(spec: str | Path) -> dict[str, Template]:
    """Named templates from an overlay PNG, a MaskTheFace ``masks.cfg``, or a folder holding either (searched
    recursively; PNGs in a folder that has a ``masks.cfg`` belong to that table). Names must be unique."""
    spec = Path(spec)
    found: dict[str, Template] = {}

    def add(t: Template) -> None:
        if t.name in found:
            raise ImageError(f"two mask templates are named {t.name!r}: {found[t.name].path} and {t.path}")
        found[t.name] = t

    def add_cfg(cfg: Path) -> None:
        for name, (png, anchors) in read_masks_cfg(cfg).items():
            add(Template(name, load_template(png), anchors, str(png)))

    if spec.is_file():
        if spec.suffix.lower() == ".cfg":
            add_cfg(spec)
        else:
            add(Template(spec.stem, load_template(spec), None, str(spec)))
    elif spec.is_dir():
        cfgs = sorted(spec.rglob("masks.cfg"))
        for cfg in cfgs:
            add_cfg(cfg)
        for png in sorted(spec.rglob("*.png")):
            if not any(cfg.parent in png.parents for cfg in cfgs):
                add(Template(png.stem, load_template(png), None, str(png)))
    else:
        raise ImageError(f"{spec}: mask template not found (an overlay PNG, a masks.cfg or a folder of them)")
    if not found:
        raise ImageError(f"{spec}: no mask templates found")
    return found


def select_templates(library: dict[str, Template], names: list[str] | tuple[str, ...], what: str) -> list[Template]:
    """The templates ``names`` from ``library`` (all of it, in name order, when ``names`` is empty).

    ``"name*n"`` stands for ``name`` listed ``n`` times: a list from which one template is drawn per face then draws
    it ``n`` times as often as a name listed once.
    """
    if not names:
        return [library[k] for k in sorted(library)]
    expanded = []
    for spec in names:
        name, star, count = str(spec).rpartition("*") if "*" in str(spec) else (str(spec), "", "")
        if star and not (count.isdigit() and int(count) > 0):
            raise ImageError(f"{what}: {spec!r}: the count after '*' must be a positive whole number")
        expanded += [name] * (int(count) if star else 1)
    names = expanded
    missing = list(dict.fromkeys(n for n in names if n not in library))
    if missing:
        raise ImageError(f"{what}: no mask template named {', '.join(map(repr, missing))}; "
                         f"found: {', '.join(sorted(library))}")
    return [library[n] for n in names]


def _half_masks(anchors: np.ndarray, shape: tuple[int, int], overlap: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Template pixels left and right of the line b-e (each reaching ``overlap`` px over it)."""
    h, w = shape
    b, e = anchors[1], anchors[4]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    d = e - b
    side = (d[0] * (yy - b[1]) - d[1] * (xx - b[0])) / max(np.hypot(*d), 1e-9)  # > 0: left of b->e (image coords)
    return side >= -overlap, side <= overlap


_HALVES: dict[int, tuple[Template, list[np.ndarray]]] = {}  # id(template) -> (template, its two warped halves' inputs)


def _premultiplied_halves(template: Template) -> list[np.ndarray]:
    """A MaskTheFace template's premultiplied RGBA (float32; no dark fringe when warped), left and right of its line
    b-e: made once per template (per process) and kept while the template lives."""
    hit = _HALVES.get(id(template))
    if hit is None or hit[0] is not template:
        rgba = template.rgba.astype(np.float32)
        a0 = rgba[..., 3:4] / 255.0
        premult = np.concatenate([rgba[..., :3] * a0, a0], axis=-1)
        left, right = _half_masks(template.anchors, rgba.shape[:2])
        hit = _HALVES[id(template)] = (template, [premult * left[..., None], premult * right[..., None]])
    return hit[1]


def _warped_box(ms: list[np.ndarray], size: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels (x0, y0, x1, y1) of an image of ``shape`` that a template of ``size`` (w, h) covers under the
    perspective warps ``ms``, padded by 2 px; the whole image where a corner falls behind the horizon."""
    h, w = shape
    tw, th = size
    corners = np.array([[0, 0, 1], [tw, 0, 1], [tw, th, 1], [0, th, 1]], np.float64).T
    pts = []
    for m in ms:
        q = m @ corners
        if (q[2] <= 1e-9).any():
            return 0, 0, w, h
        pts.append(q[:2] / q[2])
    pts = np.concatenate(pts, axis=1)
    x0, y0 = np.floor(pts.min(axis=1)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(axis=1)).astype(int) + 2
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def warp_template(img: np.ndarray, lm: np.ndarray, template: Template) -> np.ndarray:
    """Paste a MaskTheFace template: its six anchors warped onto ``anchor_targets(lm)``, a perspective warp per half,
    computed over the template's bounding box in the image only."""
    import cv2

    h, w = img.shape[:2]
    src, dst = template.anchors.astype(np.float32), anchor_targets(lm).astype(np.float32)
    halves = _premultiplied_halves(template)
    ms = [cv2.getPerspectiveTransform(src[list(q)], dst[list(q)]) for q in ((0, 1, 4, 3), (1, 2, 5, 4))]
    x0, y0, x1, y1 = _warped_box(ms, (template.rgba.shape[1], template.rgba.shape[0]), (h, w))
    out = img.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    acc = np.zeros((y1 - y0, x1 - x0, 4), np.float32)
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    for m, half in zip(ms, halves):
        warped = cv2.warpPerspective(half, shift @ m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        acc += warped
        alpha = np.maximum(alpha, warped[..., 3])
    color = acc[..., :3] / np.maximum(acc[..., 3:4], 1e-6)
    alpha = np.clip(alpha, 0, 1)[..., None]
    box = out[y0:y1, x0:x1].astype(np.float32) * (1 - alpha) + color * alpha
    out[y0:y1, x0:x1] = np.clip(box + 0.5, 0, 255).astype(np.uint8)
    return out


def _point_line_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    d = b - a
    n = np.hypot(*d)
    if n == 0:
        return float(np.hypot(*(p - a)))
    return float(abs(d[0] * (a[1] - p[1]) - d[1] * (a[0] - p[0])) / n)


def template_placement(lm: np.ndarray, template_size: tuple[int, int]) -> tuple[int, int, int, int, int]:
    """Face Mask Lite's placement: (left_width, right_width, height, box_x, box_y) of the pasted overlay."""
    chin = lm[0:17]
    nose_bridge = lm[27:31]
    nose = nose_bridge[len(nose_bridge) // 4]
    chin_bottom = chin[len(chin) // 2]
    chin_left = chin[len(chin) // 8]
    chin_right = chin[len(chin) * 7 // 8]
    height = max(int(np.hypot(*(nose - chin_bottom))), 1)
    left_w = max(int(_point_line_distance(chin_left, nose, chin_bottom) * WIDTH_RATIO), 1)
    right_w = max(int(_point_line_distance(chin_right, nose, chin_bottom) * WIDTH_RATIO), 1)
    width = left_w + right_w
    # The original script computes the box from a rotated copy of the mask (its angle, in radians, is passed to a
    # function that takes degrees) and pastes the unrotated mask there; the same arithmetic gives the same box.
    angle = math.atan2(chin_bottom[1] - nose[1], chin_bottom[0] - nose[0])
    rad = math.radians(angle)
    rot_w = int(round(abs(width * math.cos(rad)) + abs(height * math.sin(rad))))
    rot_h = int(round(abs(width * math.sin(rad)) + abs(height * math.cos(rad))))
    cx = int((nose[0] + chin_bottom[0]) // 2)
    cy = int((nose[1] + chin_bottom[1]) // 2)
    offset = width // 2 - left_w
    box_x = cx + int(offset * math.cos(rad)) - rot_w // 2
    box_y = cy + int(offset * math.sin(rad)) - rot_h // 2
    return left_w, right_w, height, box_x, box_y


def _alpha_paste(img: np.ndarray, overlay: np.ndarray, x: int, y: int) -> np.ndarray:
    """Alpha-composite an RGBA ``overlay`` onto RGB ``img`` at (x, y); parts outside the image are clipped."""
    out = img.copy()
    h, w = img.shape[:2]
    oh, ow = overlay.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + ow, w), min(y + oh, h)
    if x0 >= x1 or y0 >= y1:
        return out
    ov = overlay[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    a = ov[..., 3:4] / 255.0
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(region * (1 - a) + ov[..., :3] * a + 0.5, 0, 255).astype(np.uint8)
    return out


def paste_template(img: np.ndarray, lm: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Paste an RGBA mask ``template`` over nose and chin of the face with landmarks ``lm``, as Face Mask Lite did."""
    th, tw = template.shape[:2]
    left_w, right_w, height, bx, by = template_placement(lm, (tw, th))
    t = Image.fromarray(template)
    left = t.crop((0, 0, tw // 2, th)).resize((left_w, height), Image.LANCZOS)
    right = t.crop((tw // 2, 0, tw, th)).resize((right_w, height), Image.LANCZOS)
    overlay = np.concatenate([np.asarray(left), np.asarray(right)], axis=1)
    return _alpha_paste(img, overlay, bx, by)


def _outline(lm: np.ndarray, shape: str) -> list[np.ndarray]:
    nose = lm[28]
    if shape == "cup":  # a rounded cup: from the cheeks at the nose bridge, round under the chin
        left, right, chin = lm[2] + (lm[30] - lm[2]) * 0.12, lm[14] + (lm[30] - lm[14]) * 0.12, lm[8]
        c = (left + right) / 2
        rx, ry = np.hypot(*(right - left)) / 2, (chin[1] - c[1]) * 1.04
        t = np.linspace(0, np.pi, 15)
        bottom = [c + np.array([rx * np.cos(a), ry * np.sin(a)]) for a in t]
        return [*bottom[::-1], right + (nose - right) * 0.35, nose + np.array([0, -0.15 * ry]),
                left + (nose - left) * 0.35][::-1]
    jaw = lm[1:16] if shape == "jaw" else lm[1:16] + (lm[1:16] - lm[30]) * np.array([0.02, 0.06])
    top_l = lm[1] + (nose - lm[1]) * np.array([0.15, 0.0])
    top_r = lm[15] + (nose - lm[15]) * np.array([0.15, 0.0])
    return [top_l, *jaw, top_r, nose]


def draw_mask(img: np.ndarray, lm: np.ndarray, style: str = "surgical-white") -> np.ndarray:
    """One of the project's own masks (``DRAWN``), drawn from the landmarks (used when no template file is given).

    The jaw outline follows the jaw from chin[1] to chin[15] and closes over the nose bridge, a little below the eyes
    (the cloth mask reaches a little further out and down); the cup spans the cheeks and rounds under the chin.
    Pleats cross the surgical masks, a seam or ridge runs down the others. Drawn at 4x and downsampled for a smooth
    edge.
    """
    st = DRAWN[style]
    s = 4
    h, w = img.shape[:2]
    nose, chin = lm[28], lm[8]
    outline = [tuple(p * s) for p in _outline(lm, st["shape"])]
    alpha = Image.new("L", (w * s, h * s), 0)
    ImageDraw.Draw(alpha).polygon(outline, fill=255)
    color = Image.new("RGB", (w * s, h * s), st["color"])
    d = ImageDraw.Draw(color)
    if st["pleats"]:
        top_l = lm[1] + (nose - lm[1]) * np.array([0.15, 0.0])
        top_r = lm[15] + (nose - lm[15]) * np.array([0.15, 0.0])
        for k in (0.3, 0.5, 0.7):
            yl = top_l[1] + (lm[4][1] - top_l[1]) * k
            ym = nose[1] + (chin[1] - nose[1]) * k
            yr = top_r[1] + (lm[12][1] - top_r[1]) * k
            d.line([(lm[2][0] * s, yl * s), (nose[0] * s, ym * s), (lm[14][0] * s, yr * s)], fill=st["pleats"],
                   width=2 * s)
    if st["seam"]:
        d.line([(nose[0] * s, nose[1] * s), (lm[57][0] * s, lm[57][1] * s), (chin[0] * s, chin[1] * s)],
               fill=st["seam"], width=2 * s)
    alpha = alpha.resize((w, h), Image.LANCZOS).filter(ImageFilter.GaussianBlur(0.5))
    color = color.resize((w, h), Image.LANCZOS)
    overlay = np.concatenate([np.asarray(color), np.asarray(alpha)[..., None]], axis=2)
    return _alpha_paste(img, overlay, 0, 0)


def apply_mask(img: np.ndarray, lm: np.ndarray, template: Template | np.ndarray | None) -> np.ndarray:
    """Mask the face: a MaskTheFace template by its anchors, an overlay by Face Mask Lite's placement, a drawn style,
    or (None) the drawn white surgical mask."""
    if template is None:
        return draw_mask(img, lm)
    if isinstance(template, Template):
        if template.style:
            return draw_mask(img, lm, template.style)
        if template.anchors is not None:
            return warp_template(img, lm, template)
        return paste_template(img, lm, template.rgba)
    return paste_template(img, lm, template)


def crop_box(lm: np.ndarray, scale: float = 1.9, shift: float = 0.08) -> tuple[int, int, int, int]:
    """A face-centred square (left, top, right, bottom) from the 68 landmarks.

    Its side is ``scale`` x the larger side of the landmarks' bounding box (jaw to brows, ear to ear), its centre the
    box's centre moved up by ``shift`` x side so the forehead is in.
    """
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    side = max(x1 - x0, y1 - y0) * scale
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - shift * side
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_i = int(round(side))
    return left, top, left + side_i, top + side_i


def crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop ``box`` from ``img``; parts outside the image are filled by edge replication."""
    left, top, right, bottom = box
    h, w = img.shape[:2]
    pad = max(0, -left, -top, right - w, bottom - h)
    if pad:
        img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    return img[top:bottom, left:right]


def difference_mask(a: np.ndarray, b: np.ndarray, threshold: int = 0) -> np.ndarray:
    """Boolean (H, W): pixels where two uint8 images differ by more than ``threshold`` in any channel."""
    return (np.abs(a.astype(np.int16) - b.astype(np.int16)) > threshold).any(axis=-1)
