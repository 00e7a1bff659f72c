import io

import numpy as np
import pytest
from PIL import Image

from unmasking import images
from unmasking.images import ImageError


def _bytes(img: Image.Image, fmt: str) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_refused(fmt):
    data = _bytes(RGB, fmt)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        images.decode(data[: len(data) // 2], "cut." + fmt.lower())


def test_empty_and_non_images():
    with pytest.raises(ImageError, match="empty file"):
        images.decode(b"", "zero.png")
    with pytest.raises(ImageError, match="not an image"):
        images.decode(b"hello, I am text pretending to be a PNG", "text.png")


def test_modes_are_converted_to_rgb():
    gray = images.decode(_bytes(RGB.convert("L"), "PNG"), "g.png")
    assert gray.shape == (40, 50, 3) and gray.dtype == np.uint8
    rgba = RGB.convert("RGBA")
    rgba.putalpha(0)
    out = images.decode(_bytes(rgba, "PNG"), "a.png")
    assert out.shape == (40, 50, 3) and (out == 255).all()  # fully transparent composites to white
    a16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    out16 = images.decode(_bytes(Image.fromarray(a16), "PNG"), "16.png")
    assert out16.shape == (40, 50, 3) and out16.max() == 255 and out16.min() == 0
    pal = images.decode(_bytes(RGB.convert("P"), "PNG"), "p.png")
    assert pal.shape == (40, 50, 3)


def test_unusual_sizes():
    tiny = images.decode(_bytes(Image.new("RGB", (10, 10)), "PNG"), "tiny.png")
    with pytest.raises(ImageError, match="too small"):
        images.check_size(tiny, "tiny.png")
    wide = images.decode(_bytes(Image.new("RGB", (5000, 300)), "PNG"), "wide.png")
    images.check_size(wide, "wide.png")
    assert images.resize(wide, 64).shape == (64, 64, 3)


def test_png_is_deterministic(tmp_path):
    a = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    h1 = images.write_png(a, tmp_path / "a.png")
    h2 = images.write_png(a, tmp_path / "b.png")
    assert h1 == h2 == images.sha256_file(tmp_path / "a.png")
    assert (images.read_rgb(tmp_path / "a.png") == a).all()


def test_float_round_trip():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    assert (images.to_uint8(images.to_float(a)) == a).all()
