"""The DVC pipeline itself, on the tiny configuration: an interrupted ``dvc repro`` completes when run again
(training resumes from its checkpoint), a second ``dvc repro`` reruns only the input fingerprint, and ``dvc exp run
-S`` runs an experiment that ``dvc exp show`` and ``dvc plots diff`` compare."""

import json
import re
import shutil
from pathlib import Path

import yaml

from conftest import DVC, run_in


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

    # an experiment: dvc exp run -S reruns what the parameter touches; exp show and plots diff compare it
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        assert run_in(proj, env, *cmd).returncode == 0, cmd
    r = run_in(proj, env, str(DVC), "exp", "run", "-S", "train.mask_unet.epochs=2", "-n", "two-epochs")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ran = ran_stages(r)
    assert "train@mask_unet" in ran and "train_mask_gan" in ran
    assert not ran & {"download", "explore", "train@paper_ae", "detector"}, ran
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
