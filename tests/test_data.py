import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import DEFAULT_MASK, LFW, ROOT, copy_code, face_like, make_fml, needs_shared
from unmasking import data, images, masks
from unmasking.data import DataError


def dl_params(**kw):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())["download"]
    p.update({"source": "local", "faces": "", "mask": "", "templates": "", "indomain_faces": "", "n_pairs": 20,
              "image_size": 32, "min_pairs": 5, "workers": 1, "train_masks": [], "test_masks": [],
              "robustness_masks": [], **kw})
    return p


def test_index_parses_mask_names_and_unpaired_files():
    idx = data.index_fml([
        "with_mask/with-mask-default-mask-seed0001.png", "without_mask/seed0001.png",
        "with_mask/with-mask-blue-mask-seed0001.png",
        "with_mask/with-mask-default-mask-a-b.jpg", "without_mask/a-b.jpg",
        "with_mask/with-mask-default-mask-seed0002.png",  # no partner
        "without_mask/seed0003.png",  # no partner
        "notes/readme.txt", "stray.png",
    ])
    assert ("with_mask/with-mask-default-mask-seed0001.png", "without_mask/seed0001.png", "default-mask") in idx.pairs
    assert ("with_mask/with-mask-blue-mask-seed0001.png", "without_mask/seed0001.png", "blue-mask") in idx.pairs
    assert ("with_mask/with-mask-default-mask-a-b.jpg", "without_mask/a-b.jpg", "default-mask") in idx.pairs
    assert idx.unpaired_masked == ["with_mask/with-mask-default-mask-seed0002.png"]
    assert idx.unpaired_unmasked == ["without_mask/seed0003.png"]
    assert set(idx.ignored) == {"notes/readme.txt", "stray.png"}


def _add_bad_files(root: Path):
    (root / "with_mask" / "with-mask-default-mask-seed0900.png").write_bytes(b"")  # zero bytes
    Image.fromarray(face_like(np.random.default_rng(9), 64)).save(root / "without_mask" / "seed0900.png")
    png = (root / "with_mask" / "with-mask-default-mask-seed0001.png").read_bytes()
    (root / "with_mask" / "with-mask-default-mask-seed0901.png").write_bytes(png[: len(png) // 3])  # truncated
    (root / "without_mask" / "seed0901.png").write_bytes((root / "without_mask" / "seed0001.png").read_bytes())
    (root / "with_mask" / "with-mask-default-mask-seed0902.png").write_text("not an image")
    (root / "without_mask" / "seed0902.png").write_text("not an image either")
    (root / "with_mask" / "with-mask-default-mask-seed0903.png").write_bytes(
        (root / "with_mask" / "with-mask-default-mask-seed0002.png").read_bytes())  # unpaired
    (root / "without_mask" / "seed0904.png").write_bytes((root / "without_mask" / "seed0003.png").read_bytes())
    Image.new("RGB", (10, 10)).save(root / "with_mask" / "with-mask-default-mask-seed0905.png")  # too small
    Image.new("RGB", (10, 10)).save(root / "without_mask" / "seed0905.png")
    Image.fromarray(face_like(np.random.default_rng(1), 64)).save(root / "without_mask" / "seed0906.png")
    Image.fromarray(face_like(np.random.default_rng(1), 48)).save(
        root / "with_mask" / "with-mask-default-mask-seed0906.png")
    u = face_like(np.random.default_rng(2), 64)
    Image.fromarray(u).save(root / "without_mask" / "seed0907.png")
    Image.fromarray(u).save(root / "with_mask" / "with-mask-default-mask-seed0907.png")  # identical: no mask


def test_local_folder_uses_good_pairs_and_names_every_rejection(tmp_path, fml_dir):
    _add_bad_files(fml_dir)
    dl = dl_params(local=str(fml_dir), n_pairs=100)
    s = data.build_subset(dl, 1, tmp_path / "subset", progress=False)
    assert s["used"] == 30 and s["source"] == "local"
    reasons = {Path(r["file"]).name: r["reason"] for r in s["rejected_files"]}
    assert reasons["with-mask-default-mask-seed0900.png"] == "empty file"
    assert reasons["with-mask-default-mask-seed0901.png"] == "truncated or corrupt"
    assert reasons["with-mask-default-mask-seed0902.png"] == "not an image"
    assert reasons["with-mask-default-mask-seed0903.png"] == "unpaired masked image"
    assert reasons["seed0904.png"] == "unpaired unmasked image"
    assert reasons["with-mask-default-mask-seed0905.png"] == "too small"
    assert "differs" in next(r["detail"] for r in s["rejected_files"] if "0906" in r["file"])
    assert "identical" in next(r["detail"] for r in s["rejected_files"] if "0907" in r["file"])
    assert s["short_by"] == 70
    rows = list(csv.DictReader(open(tmp_path / "subset" / "manifest.csv")))
    assert len(rows) == 30 and set(r["split"] for r in rows) <= {"train", "val", "test"}
    assert sum(r["split"] == "test" for r in rows) == 6  # 20 % of 30
    for r in rows[:3]:
        m = np.asarray(Image.open(tmp_path / "subset" / r["masked_file"]))
        u = np.asarray(Image.open(tmp_path / "subset" / r["unmasked_file"]))
        assert m.shape == (32, 32, 3) and data.check_pair(m, u)["ok"]
        assert images.sha256_file(tmp_path / "subset" / r["masked_file"]) == r["masked_sha256"]


def test_too_little_data_fails_clearly(tmp_path):
    root = make_fml(tmp_path / "few", 3)
    with pytest.raises(DataError, match=r"only 3 usable pairs .*min_pairs = 5"):
        data.build_subset(dl_params(local=str(root)), 1, tmp_path / "subset", progress=False)
    assert not (tmp_path / "subset").exists()


@pytest.mark.parametrize("layout, message", [("empty", "no pairs in Face Mask Lite layout"),
                                              ("wrong", "no pairs in Face Mask Lite layout"),
                                              ("missing", "does not exist")])
def test_wrong_layouts(tmp_path, layout, message):
    root = tmp_path / "copy"
    if layout != "missing":
        root.mkdir()
    if layout == "wrong":
        (root / "faces").mkdir()
        Image.new("RGB", (64, 64)).save(root / "faces" / "a.png")
    with pytest.raises(DataError, match=message):
        data.build_subset(dl_params(local=str(root)), 1, tmp_path / "subset", progress=False)


def test_empty_faces_folder(tmp_path):
    (tmp_path / "faces").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        data.build_subset(dl_params(source="faces", faces=str(tmp_path / "faces"), mask=""), 1,
                          tmp_path / "subset", progress=False)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


@pytest.mark.parametrize("bad", ["../evil.png", "/abs/evil.png", "with_mask/../../evil.png", "C:/evil.png"])
def test_zip_members_escaping_the_folder_are_refused(tmp_path, bad):
    z = _zip(tmp_path / "copy.zip", {"with_mask/ok.png": b"x", bad: b"x"})
    with pytest.raises(DataError, match="escapes the target folder"):
        data.safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out").exists()


def test_zip_bomb_like_member_is_refused(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("without_mask/seed0001.png", b"\0" * (3 << 20))
    with pytest.raises(DataError, match="zip bomb"):
        data.safe_extract(z, tmp_path / "out", max_member_bytes=1 << 20)
    with pytest.raises(DataError, match="zip bomb"):
        data.safe_extract(z, tmp_path / "out2")  # 3 MB of zeros compresses > 200x


def test_local_zip_source(tmp_path, fml_dir):
    z = tmp_path / "face-mask-lite.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(fml_dir.rglob("*.png")):
            zf.write(f, "face-mask-lite/" + f.relative_to(fml_dir).as_posix())
    s = data.build_subset(dl_params(local=str(z), n_pairs=12), 3, tmp_path / "subset", raw_dir=tmp_path / "raw",
                          progress=False)
    assert s["used"] == 12 and s["found"] == 30
    extracted = list((tmp_path / "raw").rglob("*.png"))
    assert 24 <= len(extracted) < 60  # only the chosen pairs (plus a small margin) were extracted


def test_same_params_give_byte_identical_outputs_and_another_seed_another_selection(tmp_path, fml_dir):
    dl = dl_params(local=str(fml_dir), n_pairs=15)
    data.build_subset(dl, 5, tmp_path / "a", progress=False)
    data.build_subset(dl, 5, tmp_path / "b", progress=False)
    data.build_subset(dl, 6, tmp_path / "c", progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert "summary.json" in {f.name for f in files}
    for f in files:  # summary.json included: timings go to reports/data.json only
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    src = lambda d: [r["source_unmasked"] for r in csv.DictReader(open(tmp_path / d / "manifest.csv"))]
    assert src("a") != src("c")


def test_split_keeps_identities_apart():
    groups = [f"person{i // 3}" for i in range(90)]  # 30 people, 3 images each
    splits = data.split_groups(groups, 0.2, 0.1, seed=0)
    by_person = {}
    for g, s in zip(groups, splits):
        by_person.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in by_person.values())
    assert splits.count("test") == 18 and splits.count("val") == 9


def test_interrupted_write_leaves_no_complete_looking_subset(tmp_path, fml_dir, monkeypatch):
    dl = dl_params(local=str(fml_dir), n_pairs=10)
    data.build_subset(dl, 1, tmp_path / "subset", progress=False)
    before = (tmp_path / "subset" / "manifest.csv").read_bytes()
    calls = {"n": 0}
    real = images.write_png

    def dying(arr, path):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("killed")
        return real(arr, path)

    monkeypatch.setattr(images, "write_png", dying)
    with pytest.raises(KeyboardInterrupt):
        data.build_subset(dl_params(local=str(fml_dir), n_pairs=12), 2, tmp_path / "subset", progress=False)
    assert (tmp_path / "subset" / "manifest.csv").read_bytes() == before  # the old subset is untouched
    partial = tmp_path / ".subset.partial"
    assert not (partial / "manifest.csv").exists()  # a half-written folder never has a manifest


def test_faces_without_detectable_faces_are_counted(tmp_path):
    faces = tmp_path / "faces" / "Some_Person"
    faces.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(face_like(np.random.default_rng(i), 64)).save(faces / f"Some_Person_{i:04d}.jpg")
    with pytest.raises(DataError, match=r"no face found \(1\)"):  # one image per identity by default
        data.build_subset(dl_params(source="faces", faces=str(tmp_path / "faces"), mask=""), 1, tmp_path / "s",
                          progress=False)


@needs_shared
def test_real_faces_get_the_mask_over_nose_and_mouth(tmp_path):
    dl = dl_params(source="faces", faces=str(LFW), mask=str(DEFAULT_MASK), n_pairs=8, image_size=128, workers=2)
    s = data.build_subset(dl, 0, tmp_path / "subset", progress=False)
    assert s["used"] == 8
    rows = list(csv.DictReader(open(tmp_path / "subset" / "manifest.csv")))
    assert len({r["identity"] for r in rows}) == 8
    for r in rows:
        m = np.asarray(Image.open(tmp_path / "subset" / r["masked_file"]))
        u = np.asarray(Image.open(tmp_path / "subset" / r["unmasked_file"]))
        c = data.check_pair(m, u)
        assert c["ok"], c
        assert 0.10 <= c["coverage"] <= 0.50
        assert c["centre_y"] > 0.5  # the mask sits below the centre of the crop


@needs_shared
def test_the_projects_own_masks_without_any_template_file(tmp_path):
    dl = dl_params(source="faces", faces=str(LFW), mask="", templates="", n_pairs=12, image_size=64)
    s = data.build_subset(dl, 0, tmp_path / "subset", progress=False)
    assert s["used"] == 12 and set(s["masks_used"]) <= set(masks.DRAWN) and len(s["masks_used"]) >= 3
    assert s["mask"] == ", ".join(sorted(masks.DRAWN))
    assert 0.10 <= s["mask_coverage"]["median"] <= 0.5
    for r in data.read_manifest(tmp_path / "subset"):
        m = np.asarray(Image.open(tmp_path / "subset" / r["masked_file"]))
        u = np.asarray(Image.open(tmp_path / "subset" / r["unmasked_file"]))
        assert data.check_pair(m, u)["ok"], r


@needs_shared
def test_one_mask_file_alone_masks_every_split(tmp_path):
    dl = dl_params(source="faces", faces=str(LFW), mask=str(DEFAULT_MASK), templates="", n_pairs=10, image_size=64)
    data.build_subset(dl, 0, tmp_path / "subset", progress=False)
    assert {r["mask"] for r in data.read_manifest(tmp_path / "subset")} == {"default-mask"}


def test_the_drawn_masks_cover_nose_to_chin():
    lm = np.zeros((68, 2))
    lm[0:17] = [(20 + 5 * i, 50 + (8 - abs(8 - i)) * 4) for i in range(17)]  # the jaw, chin at (60, 82)
    lm[27:36] = [(60, 30 + 4 * i) for i in range(9)]  # nose bridge and below
    lm[48:68] = [(60, 70)] * 20  # the mouth
    img = np.full((128, 128, 3), 90, np.uint8)
    for name, t in masks.drawn_templates().items():
        out = masks.apply_mask(img, lm, t)
        region = (out != img).any(-1)
        assert region[70, 60] and region[50, 60], name  # the mouth and the nose are covered
        assert not region[20, 60] and not region[100, 60], name  # not above the nose bridge, not below the chin


def test_reference_photos_are_another_photo_of_the_same_person_never_in_a_split_and_seeded():
    everyone = [(f"{p}/{p}_{i:04d}.jpg", p) for p in ("Ann", "Bob", "Cy") for i in range(1, 5)]
    everyone.append(("Dee/Dee_0001.jpg", "Dee"))  # Dee has one photo only
    test = [("Ann/Ann_0001.jpg", "Ann"), ("Bob/Bob_0002.jpg", "Bob"), ("Dee/Dee_0001.jpg", "Dee")]
    used = {"Ann/Ann_0001.jpg", "Bob/Bob_0002.jpg", "Dee/Dee_0001.jpg", "Ann/Ann_0003.jpg", "Cy/Cy_0001.jpg"}
    refs = data.choose_references(test, everyone, used, seed=0)
    assert refs[2] == ""  # no second photo: counted as without a reference
    for (src, ident), ref in zip(test[:2], refs[:2]):
        assert ref.startswith(f"{ident}/") and ref != src and ref not in used
    assert refs == data.choose_references(test, everyone, used, seed=0)
    draws = {tuple(data.choose_references(test, everyone, used, seed=s)) for s in range(20)}
    assert len(draws) > 1  # the seed decides which other photo


@needs_shared
def test_test_photos_are_the_masked_source_photos_as_jpeg_with_their_exact_region(tmp_path):
    faces = tmp_path / "faces"
    people = [p for p in sorted(LFW.iterdir()) if len(list(p.iterdir())) >= 2][:6]
    people += [p for p in sorted(LFW.iterdir()) if len(list(p.iterdir())) == 1][:6]
    for p in people:
        (faces / p.name).mkdir(parents=True)
        for f in sorted(p.iterdir())[:2]:
            (faces / p.name / f.name).write_bytes(f.read_bytes())
    dl = dl_params(source="faces", faces=str(faces), mask="", templates="", n_pairs=12, image_size=64,
                   test_fraction=0.5, photo_quality=90)
    data.build_subset(dl, 0, tmp_path / "subset", progress=False)
    summary = data.build_photos(dl, 0, tmp_path / "subset", tmp_path / "photos", progress=False)
    rows = data.read_photos(tmp_path / "photos")
    test = [r for r in data.read_manifest(tmp_path / "subset") if r["split"] == "test"]
    used = {r["source_unmasked"] for r in data.read_manifest(tmp_path / "subset")}
    assert len(rows) == len(test) == summary["photos"] and summary["failed"] == []
    assert summary["with_reference"] + summary["without_reference"] == len(rows) and summary["with_reference"] > 0
    for r in rows:
        original = images.read_rgb(tmp_path / "photos" / r["original_file"])
        assert (tmp_path / "photos" / r["original_file"]).read_bytes() == (faces / r["source"]).read_bytes()
        masked = images.read_rgb(tmp_path / "photos" / r["masked_file"])
        region = images.read_rgb(tmp_path / "photos" / r["region_file"])[..., 0] > 127
        assert masked.shape == original.shape and 0.03 < region.mean() < 0.4
        assert np.abs(masked.astype(int) - original)[region].mean() > 20  # the mask is there
        if r["reference_file"]:
            assert r["reference_source"] != r["source"] and r["reference_source"] not in used
            assert r["reference_source"].split("/")[0] == r["identity"]


def test_template_placement_follows_face_mask_lite():
    lm = np.zeros((68, 2))
    lm[0:17] = [(20 + 5 * i, 60 + (8 - abs(8 - i)) * 4) for i in range(17)]  # a V-shaped jaw, chin at (60, 92)
    lm[27:31] = [(60, 40 + 5 * i) for i in range(4)]  # nose bridge; nose point = lm[28] = (60, 45)
    left_w, right_w, height, bx, by = masks.template_placement(lm, (247, 128))
    assert height == 47  # |(60, 45) - (60, 92)|
    assert left_w == int(30 * 1.2) and right_w == int(30 * 1.2)  # jaw points 2 and 14 are 30 px off the line
    assert abs((bx + (left_w + right_w) / 2) - 60) <= 2 and abs((by + height / 2) - 68.5) <= 2
    img = np.zeros((128, 128, 3), np.uint8)
    tpl = np.zeros((20, 40, 4), np.uint8)
    tpl[..., :3], tpl[..., 3] = 255, 255
    out = masks.paste_template(img, lm, tpl)
    ys, xs = np.nonzero(out.any(-1))
    assert xs.min() >= bx and xs.max() < bx + left_w + right_w and ys.min() >= by and ys.max() < by + height


@needs_shared
def test_duplicate_faces_are_used_once(tmp_path):
    src = sorted(LFW.glob("*/*.jpg"))[:3]
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, f in enumerate(src):
        (faces / f"p{i}.jpg").write_bytes(f.read_bytes())
    (faces / "p0-copy.jpg").write_bytes(src[0].read_bytes())
    s = data.build_subset(dl_params(source="faces", faces=str(faces), mask=str(DEFAULT_MASK), n_pairs=10, min_pairs=1,
                                    image_size=64), 0, tmp_path / "subset", progress=False)
    dup = [r for r in s["rejected_files"] if r["reason"] == "duplicate file"]
    assert len(dup) == 1 and s["used"] == s["tried"] - s["rejected"]
    assert {dup[0]["file"], dup[0]["detail"].split()[-1]} == {"p0.jpg", "p0-copy.jpg"}


def test_templates_are_drawn_per_split_with_the_seed():
    splits = ["train"] * 300 + ["val"] * 30 + ["test"] * 70
    names = data.choose_templates(splits, ["a", "a", "b"], ["c"], seed=3)
    assert names == data.choose_templates(splits, ["a", "a", "b"], ["c"], seed=3)
    assert names != data.choose_templates(splits, ["a", "a", "b"], ["c"], seed=4)
    assert set(names[330:]) == {"c"} and set(names[:330]) == {"a", "b"}
    assert 0.55 < names[:330].count("a") / 330 < 0.78  # a name listed twice is drawn twice as often


@needs_shared
def test_train_and_test_templates_and_robustness_sets(tmp_path):
    from conftest import STYLEGAN, TEMPLATES

    dl = dl_params(source="faces", faces=str(LFW), mask=str(DEFAULT_MASK), templates=str(TEMPLATES), n_pairs=12,
                   image_size=64, workers=2, test_fraction=0.25, train_masks=["black-mask", "N95"],
                   test_masks=["default-mask"], indomain_faces=str(STYLEGAN), indomain_pairs=3,
                   robustness_masks=["default-mask", "cloth"])
    s = data.build_subset(dl, 0, tmp_path / "subset", progress=False)
    rows = data.read_manifest(tmp_path / "subset")
    assert {r["mask"] for r in rows if r["split"] == "test"} == {"default-mask"}
    assert {r["mask"] for r in rows if r["split"] != "test"} <= {"black-mask", "N95"}
    assert sum(s["masks_used"].values()) == 12 and "seconds" in s
    assert "seconds" not in json.loads((tmp_path / "subset" / "summary.json").read_text())
    for r in rows:
        m = np.asarray(Image.open(tmp_path / "subset" / r["masked_file"]))
        u = np.asarray(Image.open(tmp_path / "subset" / r["unmasked_file"]))
        assert data.check_pair(m, u)["ok"], r
    rob = data.build_robustness(dl, 0, tmp_path / "indomain", progress=False)
    assert list(rob) == ["default-mask", "cloth"]
    a, b = (data.load_pairs(tmp_path / "indomain" / n, ["test"]) for n in rob)
    assert (a["unmasked"] == b["unmasked"]).all() and (a["masked"] != b["masked"]).any()  # same faces, other mask
    with pytest.raises(DataError, match="no mask template named 'nonesuch'"):
        data.build_subset({**dl, "train_masks": ["nonesuch"]}, 0, tmp_path / "x", progress=False)


@needs_shared
def test_the_data_stage_runs_in_a_clone_with_no_shared_folder_beside_it(tmp_path):
    """The project's own defaults: a copy of the project with no ../shared, a folder of faces passed in, no mask
    file: the data stage draws its own masks."""
    import shutil
    import subprocess
    import sys

    proj = copy_code(tmp_path / "clone" / "p")
    shutil.copy(ROOT / "params.yaml", proj / "params.yaml")  # the committed run's, with this team's paths in it
    assert not (proj.parent / "shared").exists()
    faces = tmp_path / "faces"
    for p in [p for p in sorted(LFW.iterdir()) if p.is_dir()][:30]:
        (faces / p.name).mkdir(parents=True)
        f = sorted(p.iterdir())[0]
        (faces / p.name / f.name).write_bytes(f.read_bytes())
    env = {**__import__("os").environ, "PYTHONPATH": str(proj / "lib")}

    def run(*args):
        r = subprocess.run([sys.executable, "-m", *args], cwd=proj, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    run("unmasking.params", "source", "faces", str(faces))  # what `make repro FACES=...` runs first
    run("unmasking.params", "set", "download.n_pairs=30", "download.image_size=64", "download.min_pairs=10")
    text = (proj / "params.yaml").read_text()
    assert "../shared" not in text.split("download:")[1].split("explore:")[0]
    run("unmasking.data.inputs")
    run("unmasking.stage", "download")
    summary = json.loads((proj / "data" / "subset" / "summary.json").read_text())
    # a face dlib finds no landmarks on is rejected and counted, never silently dropped
    assert summary["used"] + summary["rejected"] == summary["tried"] == 30 and summary["used"] >= 25
    assert set(summary["masks_used"]) <= set(masks.DRAWN)
    assert (proj / "data" / "photos" / "photos.csv").is_file() and (proj / "reports" / "01-download.html").is_file()
    assert "NONE.txt" in {f.name for f in (proj / "data" / "indomain").iterdir()}
