"""The DVC pipeline itself, in a copy of the project on the tiny configuration: an interrupted ``dvc repro`` completes
when run again (training resumes from its checkpoint), a second ``dvc repro`` reruns only the input fingerprint,
and ``dvc exp run -S`` runs an experiment that ``dvc exp show`` and ``dvc plots diff`` compare."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_study_params

DVC = Path(sys.executable).parent / "dvc"


def _run(proj: Path, env: dict, *args, timeout=900):
    return subprocess.run([*args], cwd=proj, env=env, capture_output=True, text=True, timeout=timeout)


def copy_project(tmp_path: Path) -> tuple[Path, dict]:
    """The project's code, notebooks, pipeline and committed inputs of the report, with the tiny parameters."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("lib", "notebooks"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "README.md"):
        shutil.copy(ROOT / name, proj / name)
    shutil.copytree(ROOT / "reports" / "compare", proj / "reports" / "compare")  # committed; the report reads it
    shutil.copy(ROOT / "reports" / "bench.json", proj / "reports" / "bench.json")
    p = yaml.safe_load(tiny_study_params(tmp_path).read_text())
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(proj / "lib"), PATH=f"{DVC.parent}{os.pathsep}{os.environ['PATH']}")
    return proj, env


def changed_stages(proj: Path, env: dict) -> set[str]:
    status = json.loads(_run(proj, env, str(DVC), "status", "--json").stdout or "{}")
    return set(status)


@pytest.mark.skipif(not DVC.exists() or not shutil.which("git"), reason="dvc or git is not installed")
def test_the_pipeline_resumes_reruns_only_what_changed_and_runs_experiments(tmp_path):
    proj, env = copy_project(tmp_path)
    env = dict(env, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    p = yaml.safe_load((proj / "params.yaml").read_text())
    p["train"].update({"steps_per_epoch": 0, "patience": 10})
    p["train"]["paper_ae"]["epochs"] = 40  # long enough to be interrupted
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for cmd in (["git", "init", "-q"], [str(DVC), "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "code"]):
        assert _run(proj, env, *cmd).returncode == 0, cmd

    # interrupted mid-training, then completed by a second dvc repro that resumes from the checkpoint
    state = proj / "models" / "checkpoints" / "paper_ae" / "state.json"
    proc = subprocess.Popen([str(DVC), "repro"], cwd=proj, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "training never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (proj / "models" / "paper_ae.keras").exists()
    r = _run(proj, env, str(DVC), "repro")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "resuming after epoch" in (proj / "reports" / "03-train-paper_ae.ipynb").read_text()
    for f in ("reports/metrics.json", "reports/index.html", "reports/RESULTS.md", "reports/04-evaluate.html",
              "models/mask_gan.keras", "lib/unmasking/weights/shipped.json", "data/inputs.json"):
        assert (proj / f).exists(), f
    assert "| mask_gan |" in (proj / "README.md").read_text()  # the report stage wrote the README's block

    # nothing changed: only the input fingerprint runs
    again = _run(proj, env, str(DVC), "repro")
    assert again.returncode == 0
    assert ran_stages(again) == {"inputs"}, again.stdout
    assert changed_stages(proj, env) <= {"inputs"}

    # an experiment: dvc exp run -S reruns what the parameter touches; exp show and plots diff compare it
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        assert _run(proj, env, *cmd).returncode == 0, cmd
    r = _run(proj, env, str(DVC), "exp", "run", "-S", "train.mask_unet.epochs=2", "-n", "two-epochs")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    ran = ran_stages(r)
    assert "train@mask_unet" in ran and "train_mask_gan" in ran
    assert not ran & {"download", "explore", "train@paper_ae", "detector"}, ran
    text = _run(proj, env, str(DVC), "exp", "show", "--json").stdout
    assert "two-epochs" in text and re.search(r'"epochs_run":\s*2\b', text)  # mask_unet's dvclive summary
    plots = _run(proj, env, str(DVC), "plots", "diff", "two-epochs", "--json")
    assert plots.returncode == 0 and "val_masked_psnr" in plots.stdout

    # a new input changes the fingerprint, and the data stage is out of date
    if p["download"]["source"] == "faces":
        faces = Path(p["download"]["faces"])
        person = next(d for d in sorted(faces.iterdir()) if d.is_dir())
        shutil.copy(next(person.iterdir()), person / "extra_0099.jpg")
    else:
        local = Path(p["download"]["local"])
        shutil.copy(next((local / "without_mask").iterdir()), local / "without_mask" / "extra.png")
    assert _run(proj, env, str(DVC), "repro", "inputs").returncode == 0
    assert "download" in changed_stages(proj, env)


def ran_stages(r) -> set[str]:
    return {line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")}
