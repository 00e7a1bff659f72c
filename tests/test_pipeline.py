"""The DVC pipeline itself, in a copy of the project on a tiny configuration: an interrupted ``dvc repro``
completes when run again (training resumes from its checkpoint), and a second ``dvc repro`` reruns nothing."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_fml, tiny_params


def _dvc(proj: Path, env: dict, *args, timeout=900):
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=proj, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(not (Path(sys.executable).parent / "dvc").exists(), reason="dvc is not installed")
def test_interrupted_repro_completes_and_a_second_repro_reruns_nothing(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("lib", "notebooks"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "dvc.yaml", proj / "dvc.yaml")
    shutil.copytree(ROOT / "reports" / "compare", proj / "reports" / "compare")  # committed; the report reads it
    fml = make_fml(tmp_path / "fml", 24, size=48)
    p = yaml.safe_load(tiny_params(tmp_path, local=str(fml), n_pairs=24).read_text())
    p["train"].update({"steps_per_epoch": 0, "patience": 10})
    p["train"]["paper_ae"]["epochs"] = 40  # long enough to be interrupted
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(proj / "lib"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert _dvc(proj, env, "init", "--no-scm", "-q").returncode == 0

    state = proj / "models" / "checkpoints" / "paper_ae" / "state.json"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=proj, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "training never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)  # interrupted mid-training
    proc.wait()
    assert not (proj / "models" / "paper_ae.keras").exists()

    r = _dvc(proj, env, "repro")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    executed = (proj / "reports" / "03-train.ipynb").read_text()
    assert "resuming after epoch" in executed
    for f in ("reports/metrics.json", "reports/index.html", "reports/04-evaluate.html", "models/mask_unet.keras"):
        assert (proj / f).exists(), f

    again = _dvc(proj, env, "repro")
    assert again.returncode == 0
    assert "Running stage" not in again.stdout, again.stdout
    status = _dvc(proj, env, "status")
    assert "up to date" in status.stdout.lower(), status.stdout
