"""Shared fixtures: small data the tests make themselves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unmasking import paths

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = paths.PROJ_ROOT
# The team's offline data, where a machine has it (CI does): tests that need real faces skip without it.
SHARED = ROOT.parent / "shared" / "data"
LFW = SHARED / "faces-lfw-deepfunneled" / "lfw-deepfunneled"
STYLEGAN = SHARED / "faces-stylegan-boredhumans" / "images"
DEFAULT_MASK = SHARED / "mask-templates" / "ohyicong-masksdetection" / "default-mask.png"
TEMPLATES = SHARED / "mask-templates"
MASKTHEFACE_CFG = TEMPLATES / "aqeelanwar-MaskTheFace" / "masks.cfg"
# A tiny mask_unet configuration (every key of train.mask_unet) for tests that build one directly
TINY_MASK_UNET = {"filters": [4, 8, 8, 8], "learning_rate": 1e-3, "hole_weight": 6.0, "mask_weight": 0.5,
                  "ssim_weight": 0.2, "log_mse_weight": 0.1, "batch_norm": True}
TINY_DISC = [4, 8, 8]


def untrained_mask_unet(image_size: int):
    """A tiny untrained ``mask_unet`` whose mask estimate is "the mask covers the whole crop" (untrained, its estimate
    is arbitrary and may mark nothing), so what is replaced is known; the face head is still the untrained one's."""
    from unmasking import models

    m = models.build("mask_unet", image_size, TINY_MASK_UNET)
    head = m.get_layer("mask")
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.full_like(bias, 10.0)])
    return m


needs_shared = pytest.mark.skipif(not LFW.is_dir(), reason="../shared/data is not present")


def face_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth, face-coloured image with some texture (not a detectable face)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.75 + 0.1 * np.sin(6 * xx + rng.random()), 0.55 + 0.1 * np.cos(5 * yy + rng.random()),
                     0.45 + 0.05 * np.sin(4 * (xx + yy))], axis=-1)
    noise = rng.normal(0, 0.03, (size, size, 3))
    return np.clip((base + noise) * 255, 0, 255).astype(np.uint8)


def white_mask(img: np.ndarray) -> np.ndarray:
    """Paste a white mask-shaped blob over the lower centre."""
    out = img.copy()
    s = img.shape[0]
    yy, xx = np.mgrid[0:s, 0:s]
    blob = ((xx - s / 2) / (0.3 * s)) ** 2 + ((yy - 0.7 * s) / (0.18 * s)) ** 2 <= 1
    out[blob] = (240, 240, 242)
    return out


def make_fml(root: Path, n: int, size: int = 64, seed: int = 0, mask: str = "default-mask") -> Path:
    """A Face Mask Lite-layout folder with ``n`` pairs (seed0000.png ...)."""
    rng = np.random.default_rng(seed)
    (root / "with_mask").mkdir(parents=True, exist_ok=True)
    (root / "without_mask").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        u = face_like(rng, size)
        Image.fromarray(u).save(root / "without_mask" / f"seed{i:04d}.png")
        Image.fromarray(white_mask(u)).save(root / "with_mask" / f"with-mask-{mask}-seed{i:04d}.png")
    return root


@pytest.fixture
def fml_dir(tmp_path: Path) -> Path:
    return make_fml(tmp_path / "fml", 30)


def tiny_params(tmp_path: Path, **download) -> Path:
    """A copy of the project's params.yaml shrunk to a tiny, fast configuration."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["download"].update({"source": "local", "local": "", "faces": "", "mask": "", "templates": "", "train_masks": [],
                          "test_masks": [], "robustness_masks": [], "n_pairs": 20, "image_size": 32, "min_pairs": 5,
                          "workers": 1, "indomain_faces": "", "indomain_pairs": 0, **download})
    p["train"].update({"batch_size": 4, "steps_per_epoch": 1, "patience": 1})
    p["train"]["paper_ae"].update({"epochs": 1, "filters": [4, 8, 8]})
    p["train"]["mask_unet"].update({"epochs": 1, "filters": [4, 8, 8, 8]})
    p["train"]["mask_gan"].update({"epochs": 1, "disc_filters": TINY_DISC})
    p["detector"].update({"train_photos": 12})
    p["detector"]["landmarks"].update({"train_photos": 12, "trees": 5, "cascade_depth": 4})
    p["evaluate"].update({"batch_size": 8, "n_examples": 2, "identity_pairs": 2, "workers": 1, "bootstrap": 200,
                          "c2st_epochs": 2})
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return out


def tiny_faces(root: Path) -> Path:
    """A small faces folder from LFW: 16 people with two or more photos (references for verification), 14 with
    one."""
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    multi = [p for p in people if len(list(p.iterdir())) >= 2][:16]
    single = [p for p in people if len(list(p.iterdir())) == 1][:14]
    for p in multi + single:
        (root / p.name).mkdir(parents=True)
        for f in sorted(p.iterdir())[:3]:
            (root / p.name / f.name).write_bytes(f.read_bytes())
    return root


def tiny_study_params(tmp: Path) -> Path:
    """The tiny configuration of the whole study: LFW faces with the project's drawn masks where ../shared/data
    is present (photos, references, the masked-face detector), else generated Face Mask Lite-layout pairs."""
    if LFW.is_dir():
        return tiny_params(tmp, source="faces", faces=str(tiny_faces(tmp / "faces")), n_pairs=24,
                           indomain_faces=str(STYLEGAN), indomain_pairs=4, robustness_masks=["surgical-white", "n95"])
    return tiny_params(tmp, local=str(make_fml(tmp / "fml", 24, size=48)), n_pairs=24)


def pytest_collection_modifyitems(items):
    """The tests of the session's tiny study first: the longest unit of work starts first on a worker of its own."""
    items.sort(key=lambda item: "study" not in item.fixturenames)


@pytest.fixture
def python() -> str:
    return sys.executable


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


DVC = Path(sys.executable).parent / "dvc"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run_in(proj: Path, env: dict, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=proj, env=env, capture_output=True, text=True, timeout=timeout)


def copy_code(proj: Path) -> Path:
    """The project's library and notebooks, copied into a new folder ``proj`` (no caches, no install metadata)."""
    proj.mkdir(parents=True)
    for name in ("lib", "notebooks"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return proj


def copy_project(tmp_path: Path) -> tuple[Path, dict]:
    """The project's code, notebooks, pipeline and committed inputs of the report, with the tiny parameters; paper_ae
    trains full epochs for long enough to be interrupted."""
    proj = copy_code(tmp_path / "proj")
    for name in ("dvc.yaml", "README.md"):
        shutil.copy(ROOT / name, proj / name)
    shutil.copytree(ROOT / "reports" / "compare", proj / "reports" / "compare")  # committed; the report reads it
    shutil.copy(ROOT / "reports" / "bench.json", proj / "reports" / "bench.json")
    p = yaml.safe_load(tiny_study_params(tmp_path).read_text())
    p["train"].update({"steps_per_epoch": 0, "patience": 10})
    p["train"]["paper_ae"]["epochs"] = 40
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(proj / "lib"), PATH=f"{DVC.parent}{os.pathsep}{os.environ['PATH']}",
               **GIT_ENV)
    return proj, env


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> tuple[Path, dict, bool]:
    """The whole tiny study under ``dvc repro`` in a git repository of its own, run once for the session: the first
    ``dvc repro`` is killed as soon as paper_ae has checkpointed, and a second one completes the pipeline (training
    resumes from the checkpoint)."""
    if not DVC.exists() or not shutil.which("git"):
        pytest.skip("dvc or git is not installed")
    proj, env = copy_project(tmp_path_factory.mktemp("study"))
    for cmd in (["git", "init", "-q"], [str(DVC), "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "code"]):
        assert run_in(proj, env, *cmd).returncode == 0, cmd
    state = proj / "models" / "checkpoints" / "paper_ae" / "state.json"
    proc = subprocess.Popen([str(DVC), "repro"], cwd=proj, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "training never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = not (proj / "models" / "paper_ae.keras").exists()
    r = run_in(proj, env, str(DVC), "repro")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (proj / "reports" / "repro.log").write_text(r.stdout)  # as ``make repro`` keeps it
    return proj, env, interrupted
