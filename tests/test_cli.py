"""The ``unmask`` command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import STYLEGAN, make_fml, needs_shared, untrained_mask_unet
from unmasking import cli, images
from unmasking import evaluate as ev
from unmasking import params as P


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "mask_unet.keras"
    untrained_mask_unet(32).save(path)
    return path


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "unmasking", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_help_on_every_subcommand():
    for args in ([], ["predict"], ["evaluate"], ["synthesize"]):
        r = run(*args, "--help")
        assert r.returncode == 0 and "usage: unmask" in r.stdout


def test_no_shipped_weights_says_how_to_get_them(tmp_path, monkeypatch):
    from unmasking import shipped

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(cli.CliError, match="make repro"):
        cli.load_weights(None, None)
    with pytest.raises(cli.CliError, match="no such weights file"):
        cli.load_weights(tmp_path / "missing.keras")


def test_models_lists_what_the_package_ships():
    from unmasking import shipped

    r = run("models")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{shipped.index()['default']} (default)" in r.stdout and "validation masked PSNR" in r.stdout


def test_predict_reports_each_failure_and_still_writes_the_good_ones(tmp_path, weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(src / "good.jpg")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (src / "notes.txt").write_text("just text")
    r = run("predict", src, tmp_path / "missing.png", "--out", tmp_path / "out", "--weights", weights, "--crop", "none")
    assert r.returncode == 1
    assert "corrupt.png" in r.stderr and "notes.txt" in r.stderr and "missing.png" in r.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "good.png"))
    assert out.shape == (50, 60, 3)
    status = (tmp_path / "out" / "unmask.csv").read_text()
    assert "good.jpg" in status and status.count("failed") == 3 and ",whole," in status


@needs_shared
def test_predict_detects_faces_and_fails_on_a_photo_without_one(tmp_path, weights):
    src = tmp_path / "in"
    src.mkdir()
    faces = sorted(STYLEGAN.glob("*.jpg"))[:2]
    one = np.asarray(Image.open(faces[0]).convert("RGB"))
    two = np.full((500, 800, 3), 128, np.uint8)  # two faces in one photo, with room around them
    two[120:376, 80:336] = one
    two[120:376, 460:716] = np.asarray(Image.open(faces[1]).convert("RGB"))
    Image.fromarray(one).save(src / "one.png")
    Image.fromarray(two).save(src / "two.png")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(src / "wall.png")  # no face
    results = cli.predict([str(src)], tmp_path / "out", weights, crop="detect", progress=False)
    by = {Path(r.input).name: r for r in results}
    assert by["one.png"].status == "ok" and by["one.png"].faces == 1 and by["one.png"].detector in ("hog", "cnn")
    assert by["two.png"].status == "ok" and by["two.png"].faces == 2
    assert by["wall.png"].status == "failed" and by["wall.png"].reason == "no face found"
    out = np.asarray(Image.open(tmp_path / "out" / "two.png"))
    assert out.shape == two.shape
    changed = (out != two).any(-1)
    assert changed[:, :400].any() and changed[:, 400:].any()  # both faces were replaced
    assert not changed[:30].any() and not changed[-30:].any() and not changed[:, :20].any()  # only near faces


def test_evaluate_agrees_with_the_library(tmp_path, weights):
    pairs = make_fml(tmp_path / "pairs", 6, size=40)
    make_fml(tmp_path / "pairs", 3, size=40, seed=5, mask="blue-mask")
    r = run("evaluate", pairs, "--weights", weights, "--crop", "none", "--json", tmp_path / "m.json", "--no-identity")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((tmp_path / "m.json").read_text())["sets"]["pairs"]
    assert got["n"] == 9 and set(got["by_mask"]) == {"default-mask", "blue-mask"}
    assert set(got["methods"]) == {"masked_input", "telea", "telea_oracle", "mask_unet"}
    assert "masked_psnr" in r.stdout and "mask blue-mask" in r.stdout
    # the same numbers straight from the library: the study's one evaluation on the same pairs
    from unmasking import models

    files = sorted((pairs / "with_mask").glob("*default-mask*"))
    m = np.stack([images.resize(images.read_rgb(p), 32) for p in files])
    u = np.stack([images.resize(images.read_rgb(pairs / "without_mask" / p.name.split("default-mask-")[1]), 32)
                  for p in files])
    model = models.load(weights)
    ep = P.load()["evaluate"]
    out = models.unmask(model, m, flip_average=models.flip_averaged(model, ep)).faces
    s = ev.PairSet("x", m, u, [str(i) for i in range(len(m))], ["default-mask"] * len(m), same_photo_n=0,
                   outputs={"masked_input": m, "mask_unet": out})
    lib = ev.run({}, [s], ep, progress=False).result["sets"]["x"]["methods"]
    for method in ("masked_input", "mask_unet"):
        for k in ("mse", "masked_psnr", "masked_l1", "accuracy_paper", "detail_ratio"):
            assert got["by_mask"]["default-mask"][method][k] == pytest.approx(lib[method][k], rel=1e-4)


def test_evaluate_takes_the_jpeg_tolerant_region_for_jpeg_pairs(tmp_path, weights):
    pairs = make_fml(tmp_path / "pairs", 4, size=48)
    for f in [*(pairs / "with_mask").glob("*.png"), *(pairs / "without_mask").glob("*.png")]:
        Image.open(f).save(f.with_suffix(".jpg"), quality=85)
        f.unlink()
    result = cli.evaluate_dir(pairs, weights, crop="none", identity=False, progress=False)
    m = result["sets"]["pairs"]["methods"]["masked_input"]
    # "pixels that differ" would be the whole JPEG image, and the masked input would look nearly right there
    assert m["masked_psnr"] < 15


@needs_shared
def test_synthesize_then_evaluate_with_face_detection(tmp_path, weights):
    from conftest import DEFAULT_MASK

    faces = tmp_path / "faces"
    faces.mkdir()
    for f in sorted(STYLEGAN.glob("*.jpg"))[:3]:
        (faces / f.name).write_bytes(f.read_bytes())
    (faces / "blank.jpg").write_bytes((tmp_path / "x").write_bytes(b"") or b"")  # an empty file is skipped
    written, skipped = cli.synthesize_dir(faces, tmp_path / "pairs", DEFAULT_MASK, progress=False)
    assert written == 3 and len(skipped) == 1
    assert (tmp_path / "pairs" / "with_mask" / "with-mask-default-mask-0001.png").is_file()
    result = cli.evaluate_dir(tmp_path / "pairs", weights, crop="detect", identity=True, progress=False)
    entry = result["sets"]["pairs"]
    assert entry["n"] == 3 and "by_mask" not in entry and entry["methods"]["masked_input"]["same_photo_n"] == 3
    assert entry["methods"]["masked_input"]["masked_psnr"] < 20  # the mask is inside the crop
    photos = cli.evaluate_dir(tmp_path / "pairs", weights, photo_level=True, identity=False, progress=False)
    assert set(photos["sets"]) == {"pairs_detected", "pairs_photos"} and photos["sets"]["pairs_photos"]["photos"] == 3
    # several templates, MaskTheFace's among them: each face once per template, every metric per template
    from conftest import TEMPLATES

    written, _ = cli.synthesize_dir(faces, tmp_path / "multi", TEMPLATES, progress=False,
                                    templates=["black-mask", "N95"])
    assert written == 6
    result = cli.evaluate_dir(tmp_path / "multi", weights, crop="detect", identity=False, progress=False)
    result = result["sets"]["pairs"]
    assert result["n"] == 6 and sorted(result["by_mask"]) == ["N95", "black-mask"]
    for table in result["by_mask"].values():
        assert table["masked_input"]["n"] == 3 and table["masked_input"]["masked_psnr"] < 20
    assert cli.main(["synthesize", str(faces), "--out", str(tmp_path / "x"), "--mask", str(TEMPLATES),
                     "--template", "nonesuch"]) == 2
