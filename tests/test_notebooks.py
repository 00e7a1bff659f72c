"""The notebooks: committed clean, and every stage runs through papermill on a tiny configuration."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import LFW, ROOT, STYLEGAN

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01-download.ipynb", "02-explore.ipynb", "03-train.ipynb",
                                           "04-evaluate.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_clean(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] for c in code), "a committed notebook has outputs"
    assert all(c.execution_count is None for c in code), "a committed notebook has execution counts"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    assert "params = P.load()" in tagged[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_the_checks_catch_a_dirty_notebook(tmp_path):
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[1].execution_count = 3
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)
    with pytest.raises(AssertionError):
        test_committed_notebooks_are_clean(dirty)


@pytest.fixture(scope="module")
def pipeline(study):
    """The session's tiny study: every stage through papermill under ``dvc repro``, at 32 px."""
    return study[0]


def test_all_stages_run_through_papermill(pipeline):
    tmp = pipeline
    for name in REPORTS:
        executed = nbformat.read(tmp / "reports" / f"{name}.ipynb", as_version=4)
        assert all(o.get("output_type") != "error" for c in executed.cells for o in c.get("outputs", [])), name
    summary = json.loads((tmp / "data" / "subset" / "summary.json").read_text())
    assert summary["used"] == 24 and summary["image_size"] == 32
    for name in ("paper_ae", "mask_unet", "mask_gan"):
        assert (tmp / "models" / f"{name}.keras").is_file()
    metrics = json.loads((tmp / "reports" / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    assert set(test["methods"]) == {"masked_input", "telea", "telea_oracle", "paper_ae", "mask_unet", "mask_gan"}
    assert test["n"] == 5 and test["image_size"] == 32
    for m in test["methods"].values():
        assert set(m) >= {"accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim",
                          "detail_ratio", "same_photo_match_rate", "masked_psnr_ci95", "c2st_distance"}
    assert test["methods"]["masked_input"]["mse"] > 0
    assert (tmp / "reports" / "eval" / "per_image.csv").is_file()
    assert (tmp / "reports" / "data.json").is_file()
    if LFW.is_dir():
        assert {"test_detected", "photos"} <= set(metrics["sets"])
        assert metrics["sets"]["photos"]["photos"] == 5 and "verification_ceiling" in test
        assert list(k for k in metrics["sets"] if k.startswith("indomain/")) == ["indomain/surgical-white",
                                                                                 "indomain/n95"]
        first, second = (metrics["sets"][f"indomain/{n}"]["methods"] for n in ("surgical-white", "n95"))
        assert first["mask_unet"]["n"] == second["mask_unet"]["n"] == 4
        assert first["masked_input"]["same_photo_n"] == 2 and "c2st_distance" in first["mask_unet"]
        assert "same_photo_n" not in second["masked_input"] and "c2st_distance" not in second["mask_unet"]
        assert json.loads((tmp / "models" / "masked_faces.json").read_text())["trained"]
        assert "mask_unet - paper_ae" in metrics["comparisons"]["test"]


REPORTS = ["01-download", "02-explore", "03-train-paper_ae", "03-train-mask_unet", "03-train-mask_gan", "04-evaluate"]


@pytest.mark.parametrize("name", REPORTS)
def test_reports_are_self_contained_html(pipeline, name):
    tmp = pipeline
    html = (tmp / "reports" / f"{name}.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', html), "the report fetches from the network"
    if name != "01-download":
        assert 'src="data:image/png;base64,' in html, "figures must be embedded"
    assert "Traceback" not in html
    executed = nbformat.read(tmp / "reports" / f"{name}.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def rendered(pipeline):
    """The reports folder, as the pipeline's report stage left it (with the README's block written)."""
    return pipeline / "reports"


def test_index_and_results_show_every_table(rendered):
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
def test_reports_render_in_headless_chromium_offline(rendered):
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


def test_benchmark_runs_on_the_tiny_configuration(tmp_path, pipeline):
    tmp = pipeline
    params = tmp / "params.yaml"
    log = tmp_path / "repro.log"
    log.write_text("stage download: 12 s; report x\nstage train: 30 s; report y\n")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "unmasking.bench", "--params", str(params), "--out", str(out),
                        "--n-synth", "0", "--n-local", "4", "--n-train", "8", "--weights",
                        str(tmp / "models" / "mask_unet.keras"), "--photo", str(tmp_path / "none.jpg"),
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
    from conftest import TINY_MASK_UNET, run_in
    from unmasking import models

    proj, env, _ = study
    big = tmp_path / "big.keras"
    models.build("mask_unet", 48, TINY_MASK_UNET).save(big)
    sets = ["test", "photos"] if LFW.is_dir() else ["test"]
    out = tmp_path / "c.json"
    r = run_in(proj, env, sys.executable, "-m", "unmasking.evaluate", "--weights", "small=models/mask_unet.keras",
               "--weights", f"big={big}", "--no-baselines", "--sets", *sets, "--note", "two sizes", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    c = json.loads(out.read_text())
    assert list(c["sets"]) == sets and c["note"] == "two sizes"
    for name in sets:
        assert set(c["sets"][name]["methods"]) == {"masked_input", "small", "big"}
        assert c["comparisons"][name]["big - small"]["masked_psnr"]["n"] == c["sets"][name]["methods"]["big"]["n"]
    bad = run_in(proj, env, sys.executable, "-m", "unmasking.evaluate", "--weights", "small=models/mask_unet.keras",
                 "--sets", "nonesuch", "--out", str(out))
    assert bad.returncode != 0 and "no such set: nonesuch" in bad.stderr


def test_conv_flops_by_hand():
    import keras

    from unmasking.bench import conv_flops

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.Conv2D(2, 1, strides=2)(y)
    assert conv_flops(keras.Model(x, y)) == 2 * 9 * 3 * 4 * 64 + 2 * 1 * 4 * 2 * 16
