"""The report stage's tables and targets (lib/unmasking/report.py), and the README block it writes."""

import json

import pytest

from conftest import ROOT
from unmasking import report


def _m(**v):
    return {k: v[k] for k in v}


def _result(masked_psnr=22.0, same=0.9, verif=0.5, worst=19.0, gan_detail=0.85, gan_c2st=0.3, unet_c2st=0.9,
            gan_psnr=21.0, gan_verif=0.5, detection=0.99, photo_psnr=21.7, region_psnr=None):
    test = {"masked_input": _m(same_photo_match_rate=0.8, verification_rate=0.3, masked_psnr=9.0),
            "mask_unet": _m(masked_psnr=masked_psnr, psnr=30.5, ssim=0.93, accuracy_paper=0.997,
                            same_photo_match_rate=same, verification_rate=verif, c2st_distance=unet_c2st,
                            detail_ratio=0.2),
            "mask_gan": _m(masked_psnr=gan_psnr, detail_ratio=gan_detail, c2st_distance=gan_c2st,
                           verification_rate=gan_verif)}
    sets = {"test": {"n": 600, "methods": test},
            "indomain/default-mask": {"n": 9, "primary": True,
                                      "methods": {"mask_unet": _m(masked_psnr=22.0, c2st_distance=unet_c2st),
                                                          "mask_gan": _m(masked_psnr=21.0, detail_ratio=gan_detail,
                                                                         c2st_distance=gan_c2st)}},
            "indomain/cloth": {"n": 9, "methods": {"mask_unet": _m(masked_psnr=worst)}},
            "photos": {"n": 590, "detection_rate": detection, "methods": {"mask_unet": _m(masked_psnr=photo_psnr)}}}
    if region_psnr is not None:
        sets["test_region"] = {"n": 598, "methods": {"mask_unet": _m(masked_psnr=region_psnr)}}
    return {"sets": sets, "comparisons": {}}


def _rows(**kw):
    return {r["target"]: r for r in report.targets(_result(**kw))}


def test_targets_give_the_margin_and_whether_each_is_met():
    rows = _rows()
    assert rows["mask_unet masked_psnr (test)"]["margin"] == pytest.approx(-0.5)
    assert not rows["mask_unet masked_psnr (test)"]["met"]
    assert rows["mask_unet psnr (test)"]["met"] and rows["mask_unet accuracy_paper (test)"]["met"]  # on the bound
    assert rows["mask_unet same_photo_match_rate (test)"]["margin"] == pytest.approx(0.1)
    assert rows["mask_unet verification_rate (test)"]["met"]
    robust = [r for t, r in rows.items() if "generated-face template" in t]
    assert len(robust) == 1 and "cloth" in robust[0]["target"] and robust[0]["margin"] == pytest.approx(1.0)


def test_identity_must_be_strictly_above_the_masked_input():
    assert not _rows(verif=0.3)["mask_unet verification_rate (test)"]["met"]


def test_the_perception_model_targets():
    rows = _rows()
    assert rows["mask_gan detail_ratio (test)"]["met"] and rows["mask_gan detail_ratio (generated)"]["met"]
    assert rows["mask_gan realism distance (test)"]["margin"] == pytest.approx(0.15)
    assert rows["mask_gan masked_psnr (test)"]["margin"] == pytest.approx(0.5)
    assert rows["mask_gan verification_rate (test)"]["met"]  # no worse counts
    assert not _rows(gan_c2st=0.5)["mask_gan realism distance (test)"]["met"]
    assert not _rows(gan_psnr=20.4)["mask_gan masked_psnr (test)"]["met"]
    key = "mask_unet stays the distortion-optimal model: masked_psnr above mask_gan's (test)"
    assert rows[key]["met"] and not _rows(gan_psnr=22.0)[key]["met"]


def test_the_photo_targets():
    rows = _rows()
    assert rows["masked faces found in the test photos (detection rate)"]["met"]
    key = "mask_unet masked_psnr at photo resolution, against the test split's crops"
    assert rows[key]["margin"] == pytest.approx(0.2)
    assert not _rows(detection=0.97)["masked faces found in the test photos (detection rate)"]["met"]
    exact = "mask_unet masked_psnr at photo resolution, against the test split's crops over the photo's exact region"
    assert exact not in rows  # no test_region set, no target row
    rows = _rows(photo_psnr=21.0, region_psnr=21.6)
    assert rows[exact]["margin"] == pytest.approx(-0.1) and not rows[exact]["met"]
    assert _rows(photo_psnr=21.2, region_psnr=21.6)[exact]["met"]


def _default_only(masked_psnr, base=None):
    return {"sets": {"test": {"methods": {"masked_input": base or _result()["sets"]["test"]["methods"]["masked_input"],
                                          "mask_unet": {"masked_psnr": masked_psnr}}}}}


def test_the_cost_of_the_mix_needs_the_default_only_evaluation_on_the_same_test_pairs():
    assert not any("mix" in r["target"] for r in report.targets(_result()))
    other_pairs = _default_only(22.4, {"verification_rate": 0.1})  # measured on another test split
    assert not any("mix" in r["target"] for r in report.targets(_result(), {"default-only": other_pairs}))
    rows = report.targets(_result(), {"default-only": _default_only(22.4)})
    mix = [r for r in rows if "mix" in r["target"]][0]
    assert mix["value"] == pytest.approx(0.4) and mix["margin"] == pytest.approx(-0.1) and not mix["met"]


def test_a_table_renders_as_markdown_and_html():
    t = report.Table("T", ["a", "b"], [("row", ["1", "2"])], note="n")
    assert t.markdown().splitlines()[:3] == ["### T", "", "n"] and "| row | 1 | 2 |" in t.markdown()
    assert "<th>row</th><td>1</td><td>2</td>" in t.html()
    assert report.with_ci({"x": 1.5, "x_ci95": [1.25, 1.75]}, "x") == "1.5000 [1.2500, 1.7500]"


def test_the_readme_block_is_what_the_report_stage_writes():
    """README.md's results block equals what the report stage would write from the committed metrics."""
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    text = (ROOT / "README.md").read_text()
    block = text.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert block == "\n" + report.readme_block(metrics)


def test_update_readme_replaces_only_the_block(tmp_path):
    f = tmp_path / "README.md"
    f.write_text(f"# T\n\nbefore\n{report.README_START}\nold\n{report.README_END}\nafter\n")
    assert report.update_readme(f, "new\n")
    assert f.read_text() == f"# T\n\nbefore\n{report.README_START}\nnew\n{report.README_END}\nafter\n"
    assert not report.update_readme(f, "new\n")
    f.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme(f, "x")


def test_results_md_is_what_the_report_stage_writes():
    inp = report.load_inputs(ROOT / "reports", ROOT / "models", ["paper_ae", "mask_unet", "mask_gan"])
    assert (ROOT / "reports" / "RESULTS.md").read_text() == report.results_markdown(inp)


def test_the_generated_set_of_the_tables_is_the_one_the_evaluation_scored_for_realism():
    r = _result()
    assert report.generated_set(r) == "indomain/default-mask"
    r["sets"]["indomain/default-mask"].pop("primary")
    r["sets"]["indomain/cloth"]["primary"] = True
    assert report.generated_set(r) == "indomain/cloth"
    assert report.generated_set({"sets": {"test": {}}}) is None


def test_the_tables_of_a_run_without_photos_or_generated_faces():
    """A Face Mask Lite source has no photos, identities or generated faces; every table still renders."""
    r = {"sets": {"test": {"n": 3, "source": "local: x", "image_size": 32, "methods": {
        "masked_input": {"masked_psnr": 9.0, "n": 3}, "mask_unet": {"masked_psnr": 20.0, "n": 3}}}}, "comparisons": {}}
    inp = {"metrics": r, "data": {"subset": {"source": "local"}, "photos": {"photos": 0, "reason": "no photos"}},
           "bench": {}, "compare": {}, "cards": {}}
    text = report.results_markdown(inp)
    assert "| mask_unet |" in text and "Test photos" not in text


def test_the_speed_table_names_the_machines_cpu():
    from unmasking import bench

    assert bench.cpu_model()
    t = report.bench_table({"machine": {"cpus": 2, "cpu": "Some CPU", "backend": "tensorflow"}, "image_size": 128,
                            "batch_size": 32})
    assert t.note == "2 CPUs (Some CPU), tensorflow; image 128 px, batch 32."
    assert report.bench_table({"machine": {"cpus": 2, "backend": "jax"}}).note.startswith("2 CPUs, jax;")
