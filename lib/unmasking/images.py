"""Reading, converting and writing images.

Every image of the study is an RGB ``uint8`` array of shape (H, W, 3) on disk and a ``float32`` array in [0, 1] inside
the models. Reading converts grayscale, palette, RGBA (composited over white) and 16-bit images to 8-bit RGB
and raises ``ImageError`` with the reason for anything that is not a decodable image.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 50_000_000  # larger images are refused (decompression-bomb guard)
MIN_SIDE = 32  # smaller images cannot hold a usable face

ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def decode(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an RGB uint8 array; ``ImageError`` says why when it cannot."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{name}: {w}x{h} is over the {MAX_PIXELS:,}-pixel limit")
                img.load()
                arr = _to_rgb_uint8(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: truncated or corrupt image ({e})") from None
    return np.ascontiguousarray(arr)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array (grayscale, RGBA, palette and 16-bit are converted)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path.name}: cannot read ({e.strerror or e})") from None
    return decode(data, path.name)


def check_size(arr: np.ndarray, name: str, min_side: int = MIN_SIDE) -> None:
    h, w = arr.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"{name}: {w}x{h} is too small (under {min_side} px on a side)")


def resize(arr: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 array to ``size`` (square side or (width, height)) with a Lanczos filter."""
    wh = (size, size) if isinstance(size, int) else size
    if arr.shape[1] == wh[0] and arr.shape[0] == wh[1]:
        return arr
    return np.asarray(Image.fromarray(arr).resize(wh, Image.LANCZOS))


def resize_float(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float32 (H, W) array to (width, height), bilinearly."""
    import cv2

    return cv2.resize(arr.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)


def png_bytes(arr: np.ndarray) -> bytes:
    """Encode as PNG, deterministically (same array, same bytes)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, quality: int) -> bytes:
    """Encode as JPEG at ``quality`` (as a photo saved by a camera or an editor)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_png(arr: np.ndarray, path: str | Path) -> str:
    """Write ``arr`` as PNG and return the SHA-256 of the bytes written."""
    data = png_bytes(arr)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return arr.astype(np.float32) / 255.0


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 [0, 255], rounded and clipped."""
    return np.clip(np.asarray(arr, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
