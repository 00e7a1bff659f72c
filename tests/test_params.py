from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from unmasking import params as P


def _write(tmp_path: Path, mutate) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(p)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


def test_project_params_are_valid():
    p = P.load()
    assert p["download"]["n_pairs"] == 3000 and p["download"]["test_fraction"] == 0.2


@pytest.mark.parametrize("mutate, key", [
    (lambda p: p["train"].update(epochs_typo=3), "train.epochs_typo"),
    (lambda p: p.update(extra={}), "extra"),
    (lambda p: p["download"].update(n_pairs="many"), "download.n_pairs"),
    (lambda p: p["download"].update(image_size=100), "download.image_size"),
    (lambda p: p["download"].update(test_fraction=1.5), "download.test_fraction"),
    (lambda p: p["download"].update(test_fraction=0.5, val_fraction=1.0), "download.val_fraction"),
    (lambda p: p["train"]["paper_ae"].update(epochs=-1), "train.paper_ae.epochs"),
    (lambda p: p["evaluate"].update(models=["paper_ae", "gan"]), "evaluate.models"),
    (lambda p: p["ship"].update(models=["paper_ae", "gan"]), "ship.models"),
    (lambda p: p["train"]["mask_gan"].update(init="paper_ae"), "train.mask_gan.init"),
    (lambda p: p["evaluate"].update(detector="haar"), "evaluate.detector"),
    (lambda p: p["train"]["mask_unet"].update(learning_rate=0), "train.mask_unet.learning_rate"),
    (lambda p: p["download"].update(source="ftp"), "download.source"),
    (lambda p: p["download"].update(one_per_identity="yes"), "download.one_per_identity"),
    (lambda p: p["base"].pop("seed"), "base.seed"),
    (lambda p: p["evaluate"].update(flip_average=["unet"]), "evaluate.flip_average"),
    (lambda p: p["evaluate"].update(flip_average="mask_unet"), "evaluate.flip_average"),
])
def test_bad_params_name_the_key(tmp_path, mutate, key):
    with pytest.raises(P.ParamsError) as e:
        P.load(_write(tmp_path, mutate))
    assert str(e.value).startswith(key + ":")


def test_set_keeps_comments_and_validates(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())
    P.set_values(["download.source=local", "download.local=some/folder", "download.n_pairs=100"], f)
    text = f.read_text()
    assert "# Every tunable number" in text
    p = P.load(f)
    assert (p["download"]["source"], p["download"]["local"], p["download"]["n_pairs"]) == ("local", "some/folder", 100)
    before = f.read_text()
    with pytest.raises(P.ParamsError, match="download.image_size"):
        P.set_values(["download.image_size=33"], f)
    with pytest.raises(P.ParamsError, match="download.nope"):
        P.set_values(["download.nope=1"], f)
    assert f.read_text() == before


def test_cli_reports_the_key_and_exits_non_zero(tmp_path, capsys):
    f = _write(tmp_path, lambda p: p["train"].update(batch_size=-4))
    assert P.main(["check", "--file", str(f)]) == 2
    assert "train.batch_size" in capsys.readouterr().err


def test_stage_refuses_bad_params_before_any_work(tmp_path, python):
    import subprocess

    f = _write(tmp_path, lambda p: p["download"].update(image_size=50))
    r = subprocess.run([python, "-m", "unmasking.stage", "download", "--params", str(f), "--data-dir",
                        str(tmp_path / "data"), "--reports-dir", str(tmp_path / "reports")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "download.image_size" in r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


def test_profiles_apply_and_are_validated(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())
    for prof in sorted((ROOT / "profiles").glob("*.yaml")):  # every shipped profile is valid
        P.set_values(P.profile_assignments(prof), f)
        P.load(f)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.mask_unet.filters: [8, 8]\n")
    with pytest.raises(P.ParamsError, match="train.mask_unet.filters"):
        P.set_values(P.profile_assignments(bad), f)
    prof = tmp_path / "p.yaml"
    prof.write_text("train.mask_unet.epochs: 7\ndownload.robustness_masks: [N95, cloth]\n")
    assert P.main(["profile", str(prof), "--file", str(f)]) == 0
    p = P.load(f)
    assert p["train"]["mask_unet"]["epochs"] == 7 and p["download"]["robustness_masks"] == ["N95", "cloth"]


def test_source_sets_every_source_key_from_its_arguments_and_the_projects_defaults(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())  # the committed run's values, paths of this team's machines
    assert P.main(["source", "faces", "my/faces", "--file", str(f)]) == 0
    d = P.load(f)["download"]
    assert d["source"] == "faces" and d["faces"] == "my/faces"
    for key, default in P.SOURCE_DEFAULTS.items():
        if key != "faces":
            assert d[key] == default, key  # nothing recorded for another machine reaches this run
    assert P.main(["source", "faces", "f", "--mask", "x.png", "--templates", "t", "--indomain", "g",
                   "--train-masks", "a*2 b", "--test-masks", "a", "--file", str(f)]) == 0
    d = P.load(f)["download"]
    assert (d["mask"], d["templates"], d["indomain_faces"]) == ("x.png", "t", "g")
    assert d["train_masks"] == ["a*2", "b"] and d["test_masks"] == ["a"] and d["robustness_masks"] == []
    assert P.main(["source", "kaggle", "--file", str(f)]) == 0
    d = P.load(f)["download"]
    assert d["source"] == "kaggle" and d["faces"] == "" and d["mask"] == ""
    assert P.main(["source", "local", "--file", str(f)]) == 2  # a local copy needs its path


def test_no_default_of_the_project_leaves_the_repository():
    import re

    for f in [ROOT / "Makefile", *sorted((ROOT / "lib").rglob("*.py"))]:
        for line in f.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert not re.search(r"\.\./shared|\"shared\"", code), f"{f.name}: {line.strip()}"
    assert all(v in ("", []) for v in P.SOURCE_DEFAULTS.values())


def test_performance_keys_exist():
    params = P.load()
    for key in P.PERFORMANCE_KEYS:
        section, leaf = key.split(".")
        assert leaf in params[section]
