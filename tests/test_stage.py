"""Running a stage (lib/unmasking/stage.py): the environment a notebook's kernel sees."""

import json
import os

import nbformat
import pytest

from conftest import tiny_params
from unmasking import paths, stage

PASSED = {"LD_LIBRARY_PATH": "/opt/cuda/lib64", "XLA_FLAGS": "--xla_gpu_cuda_data_dir=/opt/cuda",
          "JAX_PLATFORMS": "cuda", "TF_FORCE_GPU_ALLOW_GROWTH": "true", "KERAS_BACKEND": "tensorflow",
          "HTTPS_PROXY": "http://proxy:3128", "REQUESTS_CA_BUNDLE": "/etc/ssl/ca.pem", "CUDA_VISIBLE_DEVICES": "0",
          "DVC_EXP_NAME": "two-epochs", "KAGGLE_API_ENVIRONMENT": "LOCALHOST"}


def test_stage_env_keeps_what_devices_proxies_and_experiments_need_and_drops_the_rest():
    env = {**PASSED, "PATH": "/bin", "SECRET_TOKEN": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    got = stage.stage_env(env)
    assert got == {**PASSED, "PATH": "/bin"}


def test_the_environment_reaches_the_notebook_kernel(tmp_path, monkeypatch):
    """A real stage run (papermill, a kernel) of a notebook that prints its environment."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"},
                                            "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# env"),
                nbformat.v4.new_code_cell("params = None\ndata_dir = models_dir = reports_dir = ''",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import json, os\nprint(json.dumps(dict(os.environ)))")]
    nbformat.write(nb, nbs / "02-explore.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbs)
    for k, v in {**PASSED, "SECRET_TOKEN": "x"}.items():
        monkeypatch.setenv(k, v)
    executed = stage.run_stage("explore", tiny_params(tmp_path, local="unused"), tmp_path / "data", tmp_path / "models",
                               tmp_path / "reports")
    out = nbformat.read(executed, as_version=4).cells[-1].outputs[0]["text"]
    seen = json.loads(out.strip().splitlines()[-1])
    for k, v in PASSED.items():
        assert seen.get(k) == v, k
    assert "SECRET_TOKEN" not in seen
    assert os.environ["SECRET_TOKEN"] == "x"  # the caller's environment is restored


def test_the_train_stage_needs_its_model(tmp_path):
    from unmasking import params as P

    with pytest.raises(P.ParamsError, match="--model"):
        stage.run_stage("train", tiny_params(tmp_path, local="unused"))
