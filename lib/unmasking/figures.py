"""The report's figures, made from the generated faces only (``data/indomain``; no real person is shown).

* ``triplets-generated.png``: one generated face per mask template, masked, as each model unmasks it, and the
  original;
* ``mouths-generated.png``: the masked region of 8 generated faces (``default-mask``, or the first template): the true
  face, ``mask_unet`` and ``mask_gan`` side by side, enlarged, where the difference between a blur and a mouth shows.

Models are predicted as the evaluation predicts them (``models.unmask``, flip-averaged where ``evaluate.flip_average``
says).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import paths

MOUTHS = 8


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def notice_png(text: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.8))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return _png(fig)


def _pick(set_dir: Path, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` seeded pairs of one generated-face set: (masked, unmasked) uint8 stacks; only their files are read."""
    from unmasking import data, images

    rows = [r for r in data.read_manifest(set_dir) if r["split"] == "test"]
    pick = np.random.default_rng(seed).choice(len(rows), size=min(k, len(rows)), replace=False)
    m = np.stack([images.read_rgb(set_dir / rows[i]["masked_file"]) for i in pick])
    u = np.stack([images.read_rgb(set_dir / rows[i]["unmasked_file"]) for i in pick])
    return m, u


def triplets(sets: list[Path], trained: dict[str, Any], ep: dict[str, Any], seed: int = 0) -> bytes:
    from unmasking import models, plots

    rows = []
    for i, d in enumerate(sets):
        m, u = _pick(d, 1, seed + i)
        outs = [models.unmask(net, m, flip_average=models.flip_averaged(net, ep)).faces[0] for net in trained.values()]
        rows.append([m[0], *outs, u[0]])
    return _png(plots.image_grid(rows, ["masked input", *trained, "original"], [d.name for d in sets], size=1.8))


def mouths(set_dir: Path, trained: dict[str, Any], ep: dict[str, Any], seed: int = 0) -> bytes:
    from unmasking import models, plots

    m, u = _pick(set_dir, MOUTHS, seed)
    shown = {n: trained[n] for n in ("mask_unet", "mask_gan") if n in trained}
    outs = {n: models.unmask(net, m, flip_average=models.flip_averaged(net, ep)).faces for n, net in shown.items()}
    return _png(plots.region_grid({"ids": list(range(len(m))), "masked": m, "unmasked": u, "outputs": outs},
                                  list(shown), MOUTHS))


def build_all(data_dir: Path, models_dir: Path, names: list[str], params: dict[str, Any], out_dir: Path
              ) -> dict[str, bytes]:
    """Write the figures into ``out_dir``; return {title: PNG bytes} for the index."""
    import matplotlib

    matplotlib.use("Agg")
    from unmasking import models, testsets

    ep, seed = params["evaluate"], params["base"]["seed"]
    sets = testsets.robustness_sets(Path(data_dir) / "indomain", params["download"]["robustness_masks"])
    trained = {n: models.load(paths.model_path(n, models_dir)) for n in names
               if paths.model_path(n, models_dir).is_file()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if sets and trained:
        figs = {"Generated faces, one per mask template": triplets(sets, trained, ep, seed),
                "The masked region of generated faces: true face, mask_unet, mask_gan": mouths(sets[0], trained, ep,
                                                                                              seed)}
    else:
        note = notice_png("no generated-face test set (download.indomain_faces is empty)")
        figs = {"Generated faces, one per mask template": note,
                "The masked region of generated faces: true face, mask_unet, mask_gan": note}
    for png, name in zip(figs.values(), ("triplets-generated.png", "mouths-generated.png")):
        (out_dir / name).write_bytes(png)
    return figs
