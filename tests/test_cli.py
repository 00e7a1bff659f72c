"""The ``unmask`` command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unmasking import cli, evaluate as ev, images
from unmasking import params as P

from conftest import STYLEGAN, TINY_MASK_UNET, make_fml, needs_shared


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from unmasking import models

    path = tmp_path_factory.mktemp("w") / "mask_unet.keras"
    m = models.build("mask_unet", 32, TINY_MASK_UNET)
    m.save(path)
    return path


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "unmasking", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_help_on_every_subcommand():
    for args in ([], ["predict"], ["evaluate"], ["synthesize"]):
        r = run(*args, "--help")
        assert r.returncode == 0 and "usage: unmask" in r.stdout


def test_no_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(cli.CliError, match="make repro"):
        cli.default_weights(tmp_path / "models", tmp_path / "metrics.json")


def test_default_weights_pick_the_best_model(tmp_path):
    (tmp_path / "paper_ae.keras").write_bytes(b"x")
    (tmp_path / "mask_unet.keras").write_bytes(b"x")
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"paper_ae": {"masked_psnr": 25.0},
                                                                "mask_unet": {"masked_psnr": 21.0}}}))
    assert cli.default_weights(tmp_path, tmp_path / "metrics.json").name == "paper_ae.keras"
    assert cli.default_weights(tmp_path, tmp_path / "none.json").name == "mask_unet.keras"


def test_paste_back_keeps_size_and_changes_only_near_the_face():
    img = np.full((300, 400, 3), 100, np.uint8)
    pred = np.full((32, 32, 3), 200, np.uint8)
    box = (150, 80, 250, 180)
    out = cli.paste_back(img, pred, box, "detect")
    assert out.shape == img.shape
    changed = np.nonzero((out != img).any(-1))
    assert changed[0].min() >= 80 and changed[0].max() < 180 and changed[1].min() >= 150 and changed[1].max() < 250
    assert (out[130, 200] == 200).all()  # the middle of the box is the prediction
    assert 100 < out[81, 200, 0] < 200 or out[81, 200, 0] == 100  # the edge is blended
    edge = cli.paste_back(img, pred, (-20, -20, 60, 60), "detect")  # a box over the border is clipped
    assert edge.shape == img.shape
    assert cli.paste_back(img, pred, box, "none").shape == img.shape


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
    assert "good.jpg" in status and status.count("failed") == 3


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
    results = cli.predict([str(src)], tmp_path / "out", weights, "detect", progress=False)
    by = {Path(r.input).name: r for r in results}
    assert by["one.png"].status == "ok" and by["one.png"].faces == 1
    assert by["two.png"].status == "ok" and by["two.png"].faces == 2
    assert by["wall.png"].status == "failed" and by["wall.png"].reason == "no face found"
    out = np.asarray(Image.open(tmp_path / "out" / "two.png"))
    assert out.shape == two.shape
    changed = (out != two).any(-1)
    assert changed[:, :400].any() and changed[:, 400:].any()  # both faces were unmasked
    assert not changed[:30].any() and not changed[-30:].any() and not changed[:, :20].any()  # only near faces


def test_evaluate_agrees_with_the_library(tmp_path, weights):
    pairs = make_fml(tmp_path / "pairs", 6, size=40)
    make_fml(tmp_path / "pairs", 3, size=40, seed=5, mask="blue-mask")
    r = run("evaluate", pairs, "--weights", weights, "--crop", "none", "--json", tmp_path / "m.json", "--no-identity")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((tmp_path / "m.json").read_text())
    assert got["n_test"] == 9 and set(got["by_mask"]) == {"default-mask", "blue-mask"}
    assert set(got["test"]) == {"masked_input", "mask_unet"}
    assert "masked_psnr" in r.stdout and "mask: blue-mask" in r.stdout
    # the same numbers straight from the library
    from unmasking import models

    m = [images.resize(images.read_rgb(p), 32) for p in sorted((pairs / "with_mask").glob("*default-mask*"))]
    u = [images.resize(images.read_rgb(pairs / "without_mask" / p.name.split("default-mask-")[1]), 32)
         for p in sorted((pairs / "with_mask").glob("*default-mask*"))]
    m, u = np.stack(m), np.stack(u)
    model = models.load(weights)
    out = ev.model_outputs(model, m, flip_average=ev.flip_averaged(model, P.load()["evaluate"]))
    rows = ev.evaluate(m, u, [str(i) for i in range(len(m))], {"masked_input": m, "mask_unet": out}, identity=False,
                       progress=False)
    lib = ev.summarize(rows)
    for method in ("masked_input", "mask_unet"):
        for k in ("mse", "masked_psnr", "masked_l1", "accuracy_paper"):
            assert got["by_mask"]["default-mask"][method][k] == pytest.approx(lib[method][k], rel=1e-4)


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
    result = cli.evaluate_dir(tmp_path / "pairs", weights, "detect", identity=True, progress=False)
    assert result["n_test"] == 3 and list(result["by_mask"]) == ["default-mask"]
    assert result["test"]["masked_input"]["masked_psnr"] < 20  # the mask is inside the crop
    # several templates, MaskTheFace's among them: each face once per template, every metric per template
    from conftest import TEMPLATES

    written, _ = cli.synthesize_dir(faces, tmp_path / "multi", TEMPLATES, progress=False,
                                    templates=["black-mask", "N95"])
    assert written == 6
    result = cli.evaluate_dir(tmp_path / "multi", weights, "detect", identity=False, progress=False)
    assert result["n_test"] == 6 and sorted(result["by_mask"]) == ["N95", "black-mask"]
    for table in result["by_mask"].values():
        assert table["masked_input"]["n"] == 3 and table["masked_input"]["masked_psnr"] < 20
    assert cli.main(["synthesize", str(faces), "--out", str(tmp_path / "x"), "--mask", str(TEMPLATES),
                     "--template", "nonesuch"]) == 2
