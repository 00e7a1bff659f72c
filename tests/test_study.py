"""The session's tiny study (conftest's ``study``): every stage through papermill under ``dvc repro``, at 32 px. The
reports it renders, the benchmark and a comparison run on its models, and the DVC pipeline itself: the interrupted
first ``dvc repro`` completed when run again (training resumed from its checkpoint), a second ``dvc repro`` reruns only
the input fingerprint, and ``dvc exp run -S`` runs an experiment that ``dvc exp show`` and ``dvc plots diff`` compare.
The tests that need the study are in this one module so that ``make test`` (pytest-xdist, ``--dist loadfile``) builds
it once, on one worker."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import DVC, LFW, ROOT, STYLEGAN, TINY_MASK_UNET, run_in


@pytest.fixture(scope="module")
def proj(study):
    """The folder of the session's tiny study, as its ``dvc repro`` left it."""
    return study[0]


def test_all_stages_run_through_papermill(proj):
    from unmasking import paths

    for name in REPORTS:
        executed = nbformat.read(proj / "reports" / f"{name}.ipynb", as_version=4)
        assert all(o.get("output_type") != "error" for c in executed.cells for o in c.get("outputs", [])), name
    summary = json.loads((proj / "data" / "subset" / "summary.json").read_text())
    assert summary["used"] == 24 and summary["image_size"] == 32
    for name in ("paper_ae", "mask_unet", "mask_gan"):
        assert (proj / "models" / f"{name}.keras").is_file()
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    assert set(test["methods"]) == {"masked_input", "telea", "telea_oracle", "paper_ae", "mask_unet", "mask_gan"}
    assert test["n"] == 5 and test["image_size"] == 32
    for m in test["methods"].values():
        assert set(m) >= {"accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim",
                          "detail_ratio", "same_photo_match_rate", "masked_psnr_ci95", "c2st_distance"}
    assert test["methods"]["masked_input"]["mse"] > 0
    assert (proj / "reports" / "eval" / "per_image.csv").is_file()
    assert (proj / "reports" / "data.json").is_file()
    if LFW.is_dir():
        assert {"test_detected", "photos"} <= set(metrics["sets"])
        assert metrics["sets"]["photos"]["photos"] == 5 and "verification_ceiling" in test
        assert list(k for k in metrics["sets"] if k.startswith("indomain/")) == ["indomain/surgical-white",
                                                                                 "indomain/n95"]
        first, second = (metrics["sets"][f"indomain/{n}"]["methods"] for n in ("surgical-white", "n95"))
        assert first["mask_unet"]["n"] == second["mask_unet"]["n"] == 4
        assert first["masked_input"]["same_photo_n"] == 2 and "c2st_distance" in first["mask_unet"]
        assert "same_photo_n" not in second["masked_input"] and "c2st_distance" not in second["mask_unet"]
        card = json.loads((proj / "models" / paths.MASKED_CARD).read_text())
        used = card["landmarks"]["used"]  # trained on 12 photos, it may or may not beat dlib's model on validation
        assert card["trained"] and (not used or card["landmarks"]["validation"]["square_iou"] > 0)
        assert ((proj / "models" / paths.MASKED_LANDMARKS).stat().st_size > 0) == used
        assert metrics["sets"]["photos"]["landmarks"] == ("the masked-face landmark model" if used else
                                                          "dlib's landmark model")
        assert "mask_unet - paper_ae" in metrics["comparisons"]["test"]


def test_the_repro_log_times_every_stage_that_ran(study):
    """``make bench`` reads each stage's time from the ``dvc repro`` log: every stage of the second run logs one
    (the first run, killed, had done download and explore)."""
    from unmasking import bench

    proj, _, _ = study
    times = bench.stage_times(proj / "reports" / "repro.log")["seconds"]
    assert {"train paper_ae", "train mask_unet", "train mask_gan", "detector", "evaluate"} <= set(times), times


REPORTS = ["01-download", "02-explore", "03-train-paper_ae", "03-train-mask_unet", "03-train-mask_gan", "04-evaluate"]


@pytest.mark.parametrize("name", REPORTS)
def test_reports_are_self_contained_html(proj, name):
    html = (proj / "reports" / f"{name}.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', html), "the report fetches from the network"
    if name != "01-download":
        assert 'src="data:image/png;base64,' in html, "figures must be embedded"
    assert "Traceback" not in html
    executed = nbformat.read(proj / "reports" / f"{name}.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


CHROMIUM = Path("/usr/bin/chromium")


def test_index_and_results_show_every_table(proj):
    rendered = proj / "reports"
    html = (rendered / "index.html").read_text()
    results = (rendered / "RESULTS.md").read_text()
    for text in (html, results):
        for name in ("masked PSNR", "realism distance", "verification", "mask_gan", "Targets", "margin",
                     "Paired differences", "Perception and distortion", "Models"):
            assert name in text, name
    for name in REPORTS:
        assert f"{name}.html" in html
    assert "91 %" in html and "masked_psnr" not in results.split("### Targets")[0].split("|")[1]
    readme = (rendered.parent / "README.md").read_text()
    assert "| mask_unet |" in readme and "RESULTS.md" in readme
    for fig in ("triplets-generated.png", "mouths-generated.png"):
        assert (rendered / "figures" / fig).stat().st_size > 1000
    if STYLEGAN.is_dir():
        assert "Generated faces per mask template" in results and "n95" in results


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_reports_render_in_headless_chromium_offline(proj):
    rendered = proj / "reports"
    sync_api = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        outside = []
        page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(("file:", "data:")) else None)
        for name in ("index", *REPORTS):
            page.goto((rendered / f"{name}.html").as_uri(), wait_until="load")
            assert page.locator("h1").count() >= 1, name
            n_images = page.evaluate("document.images.length")
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
            assert broken == 0, f"{name}: {broken} of {n_images} images did not load"
            if name != "01-download":
                assert n_images > 0, name
            if name == "index":
                page.screenshot(path=str(artifacts / "index.png"), full_page=True)
        browser.close()
    assert outside == [], f"requests left the machine: {outside}"
    assert (artifacts / "index.png").stat().st_size > 10_000


def test_benchmark_runs_on_the_tiny_configuration(tmp_path, proj):
    params = proj / "params.yaml"
    log = tmp_path / "repro.log"
    log.write_text("stage download: 12 s; report x\nstage train: 30 s; report y\n")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "unmasking.bench", "--params", str(params), "--out", str(out),
                        "--n-synth", "0", "--n-local", "4", "--n-train", "8", "--weights",
                        str(proj / "models" / "mask_unet.keras"), "--photo", str(tmp_path / "none.jpg"),
                        "--log", str(log)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    b = json.loads(out.read_text())
    assert b["data_local_copy"]["pairs"] == 4 and b["matmul_gflops"] > 0
    for name in ("paper_ae", "mask_unet"):
        t = b["training"][name]
        assert t["train_images_per_s"] > 0 and t["train_gflop_per_image"] > 0 and 0 < t["share_of_ceiling"] <= 1
        assert 0 <= t["input_share_of_epoch"] < 1 and t["cores_busy"] > 0
    assert set(b["conv3x3_train_gflops_by_width"]) == {"16", "64", "256"}
    assert all(0 < g <= b["ceiling_gflops"] for g in b["conv3x3_train_gflops_by_width"].values())
    assert b["ceiling_gflops"] >= max(b["matmul_gflops"], b["numpy_matmul_gflops"])
    assert b["stages"]["seconds"] == {"download": 12.0, "train": 30.0}
    assert "GFLOP/s" in r.stdout


def test_a_comparison_run_scores_models_of_two_sizes_on_the_sets_asked_for(study, tmp_path):
    from unmasking import models

    proj, env, _ = study
    big = tmp_path / "big.keras"
    models.build("mask_unet", 48, TINY_MASK_UNET).save(big)
    sets = ["test", "photos", "test_region", "val", "val_photos"] if LFW.is_dir() else ["test", "val"]
    out, rows = tmp_path / "c.json", tmp_path / "rows.csv"
    r = run_in(proj, env, sys.executable, "-m", "unmasking.evaluate", "--weights", "small=models/mask_unet.keras",
               "--weights", f"big={big}", "--no-baselines", "--sets", *sets, "--note", "two sizes", "--out", str(out),
               "--refine", "1", "--rows", str(rows))
    assert r.returncode == 0, r.stderr[-3000:]
    c = json.loads(out.read_text())
    assert list(c["sets"]) == sets and c["note"] == "two sizes" and c["paste"] == "region" and c["refine"] == 1
    assert c["sets"]["val"]["split"] == "validation"
    written = rows.read_text().splitlines()
    assert written[0].startswith("set,") and len(written) - 1 == sum(
        m["n"] for e in c["sets"].values() for m in e["methods"].values())
    if LFW.is_dir():
        assert c["sets"]["val_photos"]["refine"] == 1 and c["sets"]["val_photos"]["photos"] > 0
        assert 0 < c["sets"]["test_region"]["n"] <= c["sets"]["test"]["n"]
    for name in sets:
        assert set(c["sets"][name]["methods"]) == {"masked_input", "small", "big"}
        assert c["comparisons"][name]["big - small"]["masked_psnr"]["n"] == c["sets"][name]["methods"]["big"]["n"]
    bad = run_in(proj, env, sys.executable, "-m", "unmasking.evaluate", "--weights", "small=models/mask_unet.keras",
                 "--sets", "nonesuch", "--out", str(out))
    assert bad.returncode != 0 and "no such set: nonesuch" in bad.stderr


def test_a_comparison_builds_only_the_sets_it_scores(proj, monkeypatch):
    from unmasking import params as P
    from unmasking import testsets

    params = P.load(proj / "params.yaml")
    names = testsets.study_set_names(params, proj / "data")
    assert names[0] == "test" and names[names.index("val"):] == (
        ["val", "val_detected", "val_photos"] if LFW.is_dir() else ["val"])
    assert ("photos" in names) == LFW.is_dir() and ("indomain/n95" in names) == LFW.is_dir()

    def never(*a, **k):
        raise AssertionError("built a set that was not asked for")

    monkeypatch.setattr(testsets, "reference_embeddings", never)
    monkeypatch.setattr(testsets, "photo_sets", never)
    sets = testsets.study_sets(params, proj / "data", {}, progress=False, only=["val"])
    assert [s.name for s in sets] == ["val"] and len(sets[0].ids) > 0


def changed_stages(proj: Path, env: dict) -> set[str]:
    status = json.loads(run_in(proj, env, str(DVC), "status", "--json").stdout or "{}")
    return set(status)


def ran_stages(r) -> set[str]:
    return {line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")}


def test_the_pipeline_resumes_reruns_only_what_changed_and_runs_experiments(study, tmp_path):
    src, env, interrupted = study
    assert interrupted, "the first dvc repro finished before it could be interrupted"
    assert "resuming after epoch" in (src / "reports" / "03-train-paper_ae.ipynb").read_text()
    proj = tmp_path / "proj"  # a copy of its own: the experiment below changes the workspace
    shutil.copytree(src, proj, symlinks=True)
    env = dict(env, PYTHONPATH=str(proj / "lib"))
    for f in ("reports/metrics.json", "reports/index.html", "reports/RESULTS.md", "reports/04-evaluate.html",
              "models/mask_gan.keras", "lib/unmasking/weights/shipped.json", "data/inputs.json"):
        assert (proj / f).exists(), f
    assert "| mask_gan |" in (proj / "README.md").read_text()  # the report stage wrote the README's block

    # nothing changed: only the input fingerprint runs
    again = run_in(proj, env, str(DVC), "repro")
    assert again.returncode == 0
    assert ran_stages(again) == {"inputs"}, again.stdout
    assert changed_stages(proj, env) <= {"inputs"}

    # an experiment: dvc exp run -S of mask_unet's training reruns that stage and none of the unchanged ones upstream
    # (what its new weights rerun downstream follows from dvc.yaml: tests/test_dvc.py); exp show and plots diff
    # compare it
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        assert run_in(proj, env, *cmd).returncode == 0, cmd
    r = run_in(proj, env, str(DVC), "exp", "run", "-S", "train.mask_unet.epochs=2", "-n", "two-epochs",
               "train@mask_unet")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ran = ran_stages(r)
    assert "train@mask_unet" in ran
    assert not ran & {"download", "explore", "train@paper_ae", "detector", "train_mask_gan"}, ran
    text = run_in(proj, env, str(DVC), "exp", "show", "--json").stdout
    assert "two-epochs" in text and re.search(r'"epochs_run":\s*2\b', text)  # mask_unet's dvclive summary
    plots = run_in(proj, env, str(DVC), "plots", "diff", "two-epochs", "--json")
    assert plots.returncode == 0 and "val_masked_psnr" in plots.stdout

    # a new input changes the fingerprint, and the data stage is out of date (the input is shared with the session's
    # study, so it is put back afterwards)
    p = yaml.safe_load((proj / "params.yaml").read_text())
    if p["download"]["source"] == "faces":
        person = next(d for d in sorted(Path(p["download"]["faces"]).iterdir()) if d.is_dir())
        extra = person / "extra_0099.jpg"
    else:
        person = Path(p["download"]["local"]) / "without_mask"
        extra = person / "extra.png"
    shutil.copy(sorted(person.iterdir())[0], extra)
    try:
        assert run_in(proj, env, str(DVC), "repro", "inputs").returncode == 0
        assert "download" in changed_stages(proj, env)
    finally:
        extra.unlink()
