"""The notebooks are committed clean, with one parameters cell (test_study.py runs every stage through them), and the
benchmark counts a convolution's FLOPs right."""

import nbformat
import pytest

from conftest import ROOT

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


def test_conv_flops_by_hand():
    import keras

    from unmasking.bench import conv_flops

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.Conv2D(2, 1, strides=2)(y)
    assert conv_flops(keras.Model(x, y)) == 2 * 9 * 3 * 4 * 64 + 2 * 1 * 4 * 2 * 16
