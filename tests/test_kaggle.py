"""The Kaggle source, against a fake client at the API boundary (Kaggle cannot be reached from here)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unmasking import data
from unmasking.data import CredentialsError, DataError

from conftest import face_like, tiny_params, white_mask

SECRET = "k3y-0123456789abcdef-SECRET"


class FakeKaggle:
    """Serves Face Mask Lite file names with small generated images; records every call."""

    def __init__(self, missing=(), fail_network=False):
        self.calls, self.missing, self.fail_network = [], set(missing), fail_network

    def authenticate(self):
        pass

    def dataset_download_file(self, dataset, file_name, path=None, force=False, quiet=True, licenses=None, unzip=False):
        self.calls.append((dataset, file_name))
        if self.fail_network:
            raise ConnectionError(f"HTTPSConnectionPool: max retries (key={SECRET})")
        if file_name in self.missing:
            raise ValueError("404 Client Error: Not Found")
        seed = int(file_name[-8:-4])
        u = face_like(np.random.default_rng(seed), 64)
        img = white_mask(u) if file_name.startswith("with_mask/") else u
        Image.fromarray(img).save(Path(path) / Path(file_name).name)
        return True


def dl_params(**kw):
    return {"source": "kaggle", "kaggle_dataset": "prasoonkottarathil/face-mask-lite-dataset", "local": "", "faces": "",
            "mask": "", "n_pairs": 12, "image_size": 32, "test_fraction": 0.2, "val_fraction": 0.1,
            "one_per_identity": True, "min_pairs": 5, "workers": 1, "indomain_faces": "", "indomain_pairs": 0, **kw}


def test_downloads_only_the_chosen_pairs(tmp_path):
    fake = FakeKaggle()
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", client=fake, raw_dir=tmp_path / "raw", progress=False)
    assert s["used"] == 12 and s["source"] == "kaggle"
    n_chosen = 12 + 10  # the subset plus a small margin, never the whole 10,000 pairs
    assert len(fake.calls) == 2 * n_chosen
    assert all(ds == "prasoonkottarathil/face-mask-lite-dataset" for ds, _ in fake.calls)
    masked = [f for _, f in fake.calls if f.startswith("with_mask/with-mask-default-mask-seed")]
    assert len(masked) == n_chosen
    again = FakeKaggle()
    data.build_subset(dl_params(), 1, tmp_path / "subset2", client=again, raw_dir=tmp_path / "raw", progress=False)
    assert again.calls == []  # a rerun reuses what was downloaded


def test_missing_files_are_counted(tmp_path):
    chosen = np.random.default_rng(1).permutation(10_000)[:3]
    fake = FakeKaggle(missing={data.fml_names(int(chosen[0]))[1]})
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", client=fake, raw_dir=tmp_path / "raw", progress=False)
    assert s["used"] == 12
    assert s["rejected_by_reason"]["download failed"] == 1


def test_network_failure_is_one_clear_message_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    with pytest.raises(DataError) as e:
        data.build_subset(dl_params(), 1, tmp_path / "subset", client=FakeKaggle(fail_network=True),
                          raw_dir=tmp_path / "raw", progress=False)
    assert "Kaggle could not be reached" in str(e.value) and SECRET not in str(e.value)


def test_no_credentials_says_what_to_set(tmp_path, monkeypatch):
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nothing"))
    with pytest.raises(CredentialsError) as e:
        data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in str(e.value) and "make repro FACES=" in str(e.value)


FAKE_KAGGLE_PACKAGE = '''
import os
class KaggleApi:
    def authenticate(self):
        pass
    def dataset_download_file(self, dataset, file_name, path=None, **kw):
        raise ConnectionError("connection refused for user %s key %s" % (os.environ.get("KAGGLE_USERNAME"),
                                                                         os.environ.get("KAGGLE_KEY")))
'''


def test_download_stage_without_credentials_exits_non_zero_with_the_message(tmp_path):
    params = tiny_params(tmp_path, source="kaggle")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env["KAGGLE_CONFIG_DIR"] = str(tmp_path / "none")
    r = subprocess.run([sys.executable, "-m", "unmasking.stage", "download", "--params", str(params), "--data-dir",
                        str(tmp_path / "data"), "--reports-dir", str(tmp_path / "reports")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 1
    assert "CredentialsError: Kaggle credentials not found" in r.stderr
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in r.stderr


def test_credentials_never_reach_any_output(tmp_path):
    """A fake key in the environment, a fake failing API: the key appears in no output, report or file."""
    fake = tmp_path / "fakepkg" / "kaggle" / "api"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "kaggle_api_extended.py").write_text(FAKE_KAGGLE_PACKAGE)
    params = tiny_params(tmp_path, source="kaggle")
    env = dict(os.environ, KAGGLE_USERNAME="someone-xyz", KAGGLE_KEY=SECRET,
               PYTHONPATH=str(tmp_path / "fakepkg") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "unmasking.stage", "download", "--params", str(params), "--data-dir",
                        str(tmp_path / "data"), "--reports-dir", str(tmp_path / "reports")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Kaggle could not be reached" in r.stderr
    assert SECRET not in r.stdout + r.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "fakepkg" not in p.parts and p.name != "params.yaml"]
    assert any(p.suffix == ".ipynb" for p in written) and any(p.suffix == ".html" for p in written)
    for p in written:
        text = p.read_bytes()
        assert SECRET.encode() not in text, p
        assert b"someone-xyz" not in text, p
