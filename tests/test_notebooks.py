"""The notebooks: committed clean, and every stage runs through papermill on a tiny configuration."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, STYLEGAN, make_fml, tiny_params

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
def pipeline(tmp_path_factory):
    """All four stages, in order, on 24 generated pairs at 32 px, one training step per model."""
    tmp = tmp_path_factory.mktemp("pipeline")
    fml = make_fml(tmp / "fml", 24, size=48)
    extra = {}
    if STYLEGAN.is_dir():  # a tiny robustness set: 3 generated faces, each with two templates
        extra = {"indomain_faces": str(STYLEGAN), "indomain_pairs": 3, "robustness_masks": ["default-mask", "N95"]}
    params = tiny_params(tmp, local=str(fml), n_pairs=24, **extra)
    runs = {}
    for stage in ("download", "explore", "train", "evaluate"):
        r = subprocess.run([sys.executable, "-m", "unmasking.stage", stage, "--params", str(params), "--data-dir",
                            str(tmp / "data"), "--models-dir", str(tmp / "models"), "--reports-dir",
                            str(tmp / "reports")], capture_output=True, text=True, timeout=600)
        runs[stage] = r
        if r.returncode:
            break
    return tmp, runs


def test_all_stages_run_through_papermill(pipeline):
    tmp, runs = pipeline
    for stage, r in runs.items():
        assert r.returncode == 0, f"{stage}: {r.stderr[-3000:]}"
    assert len(runs) == 4
    summary = json.loads((tmp / "data" / "subset" / "summary.json").read_text())
    assert summary["used"] == 24 and summary["image_size"] == 32
    assert (tmp / "models" / "paper_ae.keras").is_file() and (tmp / "models" / "mask_unet.keras").is_file()
    metrics = json.loads((tmp / "reports" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"masked_input", "telea", "telea_oracle", "paper_ae", "mask_unet"}
    assert metrics["n_test"] == 5 and metrics["image_size"] == 32
    for m in metrics["test"].values():
        assert set(m) >= {"accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim",
                          "identity_distance", "identity_match_rate"}
    assert metrics["test"]["masked_input"]["mse"] > 0
    assert (tmp / "reports" / "eval" / "per_image.csv").is_file()
    assert (tmp / "reports" / "data.json").is_file()
    if STYLEGAN.is_dir():
        assert list(metrics["robustness"]) == ["default-mask", "N95"]
        for table in metrics["robustness"].values():
            assert table["mask_unet"]["n"] == 3 and table["masked_input"]["identity_n"] == 2
        assert metrics["indomain"]["mask"] == "default-mask"


@pytest.mark.parametrize("name", ["01-download", "02-explore", "03-train", "04-evaluate"])
def test_reports_are_self_contained_html(pipeline, name):
    tmp, _ = pipeline
    html = (tmp / "reports" / f"{name}.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', html), "the report fetches from the network"
    if name in ("02-explore", "03-train", "04-evaluate"):
        assert 'src="data:image/png;base64,' in html, "figures must be embedded"
    assert "Traceback" not in html
    executed = nbformat.read(tmp / "reports" / f"{name}.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def rendered(pipeline):
    tmp, runs = pipeline
    r = subprocess.run([sys.executable, "-m", "unmasking.report", "--reports-dir", str(tmp / "reports"),
                        "--models-dir", str(tmp / "models"), "--data-dir", str(tmp / "data"), "--figure",
                        str(tmp / "reports" / "figures" / "triplets.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "reports"


def test_index_shows_the_headline_table(rendered):
    html = (rendered / "index.html").read_text()
    for name in ("01-download.html", "04-evaluate.html", "masked_psnr", "identity_match_rate", "mask_unet", "91 %",
                 "Targets for", "margin"):
        assert name in html
    if STYLEGAN.is_dir():
        assert "Robustness" in html and "N95" in html


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
        for name in ("index", "01-download", "02-explore", "03-train", "04-evaluate"):
            page.goto((rendered / f"{name}.html").as_uri(), wait_until="load")
            assert page.locator("h1").count() >= 1, name
            n_images = page.evaluate("document.images.length")
            broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
            assert broken == 0, f"{name}: {broken} of {n_images} images did not load"
            if name in ("02-explore", "03-train", "04-evaluate", "index"):
                assert n_images > 0, name
            if name == "index":
                page.screenshot(path=str(artifacts / "index.png"), full_page=True)
        browser.close()
    assert outside == [], f"requests left the machine: {outside}"
    assert (artifacts / "index.png").stat().st_size > 10_000


def test_benchmark_runs_on_the_tiny_configuration(tmp_path, pipeline):
    tmp, _ = pipeline
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


def test_conv_flops_by_hand():
    import keras

    from unmasking.bench import conv_flops

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.Conv2D(2, 1, strides=2)(y)
    assert conv_flops(keras.Model(x, y)) == 2 * 9 * 3 * 4 * 64 + 2 * 1 * 4 * 2 * 16
