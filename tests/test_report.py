"""The front page's targets table (lib/unmasking/report.py)."""

import pytest

from unmasking import report


def _metrics(masked_psnr=22.0, identity=0.9, worst=19.0):
    test = {"masked_input": {"identity_match_rate": 0.8},
            "mask_unet": {"masked_psnr": masked_psnr, "psnr": 30.5, "ssim": 0.93, "accuracy_paper": 0.997,
                          "identity_match_rate": identity}}
    rob = {"default-mask": {"mask_unet": {"masked_psnr": 22.0}}, "cloth": {"mask_unet": {"masked_psnr": worst}}}
    return {"test": test, "robustness": rob}


def test_targets_give_the_margin_and_whether_each_is_met():
    rows = {r["target"].removesuffix(" on the test split"): r for r in report.targets(_metrics(), "mask_unet")}
    assert rows["masked_psnr"]["margin"] == pytest.approx(-0.5) and not rows["masked_psnr"]["met"]
    assert rows["psnr"]["margin"] == pytest.approx(0.5) and rows["psnr"]["met"]
    assert rows["ssim"]["margin"] == pytest.approx(-0.01) and not rows["ssim"]["met"]
    assert rows["accuracy_paper"]["met"]  # exactly on the bound counts as met
    assert rows["identity_match_rate"]["margin"] == pytest.approx(0.1) and rows["identity_match_rate"]["met"]
    robust = [r for r in report.targets(_metrics(), "mask_unet") if "robustness" in r["target"]]
    assert len(robust) == 1 and "cloth" in robust[0]["target"] and robust[0]["margin"] == pytest.approx(1.0)


def test_identity_must_be_strictly_above_the_masked_input():
    rows = report.targets(_metrics(identity=0.8), "mask_unet")
    assert not [r for r in rows if r["target"].startswith("identity")][0]["met"]


def _default_only(masked_psnr, base=None):
    return {"test": {"masked_input": base or {"identity_match_rate": 0.8}, "mask_unet": {"masked_psnr": masked_psnr}}}


def test_the_cost_of_the_mix_needs_the_default_only_evaluation_on_the_same_test_pairs():
    assert not any("mix" in r["target"] for r in report.targets(_metrics(), "mask_unet"))
    other_pairs = _default_only(22.4, {"identity_match_rate": 0.75})  # measured on another test split
    assert not any("mix" in r["target"] for r in report.targets(_metrics(), "mask_unet", other_pairs))
    rows = report.targets(_metrics(), "mask_unet", _default_only(22.4))
    mix = [r for r in rows if "mix" in r["target"]][0]
    assert mix["value"] == pytest.approx(0.4) and mix["margin"] == pytest.approx(-0.1) and not mix["met"]
    rows = report.targets(_metrics(), "mask_unet", _default_only(22.2))
    assert [r for r in rows if "mix" in r["target"]][0]["met"]
