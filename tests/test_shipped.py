"""The weights the package ships (lib/unmasking/weights): `unmask predict` works straight after installation."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, STYLEGAN, needs_shared
from unmasking import paths, shipped

UNMASK = Path(sys.executable).parent / "unmask"


def test_the_shipped_weights_are_small_carry_their_cards_and_a_validated_default():
    ix = shipped.index()
    assert ix["default"] in ix["models"] and set(ix["models"]) >= {"mask_unet", "mask_gan"}
    for name, card in ix["models"].items():
        f = shipped.path(name)
        assert f.is_file() and f.stat().st_size < 5_000_000, name
        assert card["device"] and card["data_source"] and card["validation"]["pairs"] > 0
        assert card["chosen_by_score"] == shipped.choice_score(card, name in ix["evaluate"]["flip_average"])
    best = max(ix["models"], key=lambda n: ix["models"][n]["chosen_by_score"])
    assert ix["default"] == best  # chosen on the validation split
    assert shipped.masked_detector().is_file() and ix["masked_face_detector"]
    # the landmark model is shipped when the detector stage kept it (it beat dlib's model on validation)
    used = json.loads(shipped.masked_detector().with_name(paths.MASKED_CARD).read_text())["landmarks"]["used"]
    landmarks = shipped.masked_detector().with_name(paths.MASKED_LANDMARKS)
    assert ix["masked_face_landmarks"] == used == (landmarks.stat().st_size > 0)
    assert landmarks.stat().st_size < 5_000_000
    assert "workers" not in ix["evaluate"]  # speed-only settings are not shipped


@needs_shared
@pytest.mark.skipif(not UNMASK.exists(), reason="the unmask command is not installed (make env)")
def test_unmask_predict_works_with_no_trained_models_of_ones_own(tmp_path):
    from unmasking import data, images, masks

    u = images.read_rgb(sorted(STYLEGAN.glob("*.jpg"))[7])
    masked = masks.apply_mask(u, data.find_landmarks(u), masks.drawn_templates()["surgical-white"])
    Image.fromarray(masked).save(tmp_path / "photo.jpg", quality=92)
    r = subprocess.run([str(UNMASK), "predict", str(tmp_path / "photo.jpg"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    photo = np.asarray(Image.open(tmp_path / "photo.jpg"))
    changed = (out != photo).any(-1)
    assert 0.02 < changed.mean() < 0.4  # the mask region, not the whole photo
    ys = np.nonzero(changed)[0]
    assert ys.mean() > photo.shape[0] * 0.5  # below the eyes
    assert "1 of 1 photos unmasked" in r.stdout


def test_a_built_wheel_carries_the_weights(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("unmasking-*.whl"))).namelist()
    for f in ("unmasking/weights/shipped.json", "unmasking/weights/mask_unet.keras", "unmasking/weights/mask_gan.keras",
              "unmasking/weights/masked_faces.svm", "unmasking/weights/masked_landmarks.dat",
              "unmasking/weights/mask_unet.json"):
        assert f in names, f
    assert json.loads(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read("unmasking/weights/shipped.json"))
