"""The study's front page, ``reports/index.html``, and the README's figure of generated faces.

    python -m unmasking.report [--reports-dir R] [--models-dir M] [--data-dir D] [--figure PATH]

The index links the four notebook reports and shows the headline table (``reports/metrics.json``) beside the paper's
Table 1, the study's targets with the margin by which each is met or missed (``TARGETS``), the robustness table (the
generated faces with each mask template), the data summary (``reports/data.json``) and the model cards. The figure
shows masked / predicted / original rows made only from the in-domain generated faces (no real person), one per mask
template, for the README.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import paths

HEADLINE = ("accuracy_paper", "mse", "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim", "identity_distance",
            "identity_match_rate")
# The study's targets for its strongest model on the test split: (metric, at least)
TARGETS = (("masked_psnr", 22.5), ("psnr", 30.0), ("ssim", 0.94), ("accuracy_paper", 0.997))
ROBUSTNESS_FLOOR = 18.0  # masked_psnr (dB) on every template of the robustness table
MIX_COST_CEILING = 0.3  # masked_psnr (dB) lost on default-mask against the same model trained on default-mask alone
# under reports/: the evaluation of that default-mask-only model (python -m unmasking.evaluate)
COMPARE_DEFAULT_ONLY = "compare/default-only.json"
NOTEBOOKS = {"01-download": "the 3,000-pair subset: sources, mask templates, rejections, in-domain sets",
             "02-explore": "pairs, mask coverage, split, sanity checks",
             "03-train": "the paper's autoencoder and the mask-aware U-Net: model cards, curves",
             "04-evaluate": "metrics, baselines, the paper's accuracy explained, best and worst cases, robustness"}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return "–" if v is None else html.escape(str(v))


def table_html(table: dict[str, dict[str, Any]], cols=HEADLINE, label: str = "method") -> str:
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = "".join(f"<tr><th>{html.escape(m)}</th>" + "".join(f"<td>{_fmt(s.get(c))}</td>" for c in cols) + "</tr>"
                   for m, s in table.items())
    return f"<table><tr><th>{html.escape(label)}</th>{head}</tr>{rows}</table>"


def markdown_table(table: dict[str, dict[str, Any]], cols=HEADLINE) -> str:
    """The same table in Markdown (for the README)."""
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m, s in table.items():
        lines.append(f"| {m} | " + " | ".join(_fmt(s.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def triplet_figure(data_dir: Path, models_dir: Path, model_name: str, n: int = 7, seed: int = 0,
                   ep: dict[str, Any] | None = None) -> bytes | None:
    """PNG bytes of masked / predicted / original rows from the generated-face test sets, one generated face per
    mask template (None without them); models are predicted as the ``evaluate`` section ``ep`` says (flip
    averaging). No real person is shown."""
    import matplotlib

    matplotlib.use("Agg")
    from unmasking import data, evaluate, images, models, plots

    sets = evaluate.robustness_sets(Path(data_dir) / "indomain", ("default-mask",))[:n]
    weights = paths.model_path(model_name, models_dir)
    if not sets or not weights.is_file():
        return None
    model = models.load(weights)
    others = {name: models.load(paths.model_path(name, models_dir)) for name in ("paper_ae",)
              if name != model_name and paths.model_path(name, models_dir).is_file()}
    n_faces = len(data.read_manifest(sets[0]))
    pick = np.random.default_rng(seed).choice(n_faces, size=len(sets), replace=False)
    rows, titles = [], []
    for d, i in zip(sets, pick):  # one pair per set: read just its two files
        row = [r for r in data.read_manifest(d) if r["split"] == "test"][i]
        masked, truth = images.read_rgb(d / row["masked_file"])[None], images.read_rgb(d / row["unmasked_file"])
        outs = [evaluate.model_outputs(m, masked, flip_average=bool(ep) and evaluate.flip_averaged(m, ep))[0]
                for m in (*others.values(), model)]
        row = [masked[0], *outs, truth]
        rows.append(row)
        titles.append(d.name)
    fig = plots.image_grid(rows, ["masked input", *others, model_name, "original"], titles, size=1.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def robustness_table(robust: dict[str, dict[str, dict[str, Any]]], metric: str) -> dict[str, dict[str, Any]]:
    """{template: {method: value}} of one metric from ``metrics.json``'s robustness section."""
    return {t: {m: s.get(metric) for m, s in tab.items()} for t, tab in robust.items()}


def targets(metrics: dict[str, Any], model: str, default_only: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each target of the study for ``model``: {target, value, required, margin, met}; the margin is how far the value
    is on the right side of the bound (negative: missed by that much).

    ``metrics`` is ``reports/metrics.json``; ``default_only`` the evaluation of the same model trained on
    ``default-mask`` alone (``python -m unmasking.evaluate``), for what training on the mix of templates costs; it is
    used only when it was measured on the same test pairs (its ``masked_input`` row, a fingerprint of the test split,
    is the same), so a comparison made on other data is never set against this run.
    """

    def row(target: str, value: float, required: str, margin: float, strict: bool = False) -> dict[str, Any]:
        return {"target": target, "value": value, "required": required, "margin": margin,
                "met": margin > 0 if strict else margin >= 0}

    test = metrics["test"][model]
    rows = [row(f"{k} on the test split", test[k], f">= {lo:g}", test[k] - lo) for k, lo in TARGETS]
    base = metrics["test"]["masked_input"]["identity_match_rate"]
    rows.append(row("identity_match_rate on the test split", test["identity_match_rate"],
                    f"> the masked input's {base:.4f}", test["identity_match_rate"] - base, strict=True))
    if metrics.get("robustness"):
        rob = metrics["robustness"]
        worst = min(rob, key=lambda t: rob[t][model]["masked_psnr"])
        v = rob[worst][model]["masked_psnr"]
        rows.append(row(f"masked_psnr on every robustness template (lowest: {worst})", v, f">= {ROBUSTNESS_FLOOR:g}",
                        v - ROBUSTNESS_FLOOR))
    same_pairs = bool(default_only) and \
        default_only.get("test", {}).get("masked_input") == metrics["test"]["masked_input"]
    if same_pairs and model in default_only["test"]:
        cost = default_only["test"][model]["masked_psnr"] - test["masked_psnr"]
        rows.append(row("masked_psnr lost to the mix of templates (test split, against default-mask only)", cost,
                        f"<= {MIX_COST_CEILING:g}", MIX_COST_CEILING - cost))
    return rows


def _notice_png(text: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.8))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def index_html(reports_dir: Path, models_dir: Path, figure: bytes | None, model: str = "mask_unet") -> str:
    """The front page: links, headline tables, the generated-face figure, data summary and model cards."""
    reports_dir, models_dir = Path(reports_dir), Path(models_dir)
    metrics = json.loads((reports_dir / "metrics.json").read_text())
    datam = json.loads((reports_dir / "data.json").read_text()) if (reports_dir / "data.json").is_file() else {}
    cards = {p.stem: json.loads(p.read_text()) for p in sorted(models_dir.glob("*.json"))}
    parts = ["<h1>Predicting the unmasked face from a masked face: results</h1>",
             "<p>A reproducible study of the paper's convolutional autoencoder (<code>paper_ae</code>), classical "
             "inpainting and a mask-aware U-Net (<code>mask_unet</code>). The output of every method is a plausible "
             "face that fits the visible part, not a recovery of the hidden one.</p>",
             "<h2>Reports</h2><ul>"]
    parts += [f'<li><a href="{n}.html">{n}</a>: {html.escape(d)}</li>' for n, d in NOTEBOOKS.items()]
    parts.append("</ul>")
    parts.append(f"<h2>Test split: {metrics['n_test']} pairs</h2><p>{html.escape(str(metrics['data_source']))}, "
                 f"{metrics['image_size']} px, mask {html.escape(str(metrics.get('mask', '')))}.</p>")
    parts.append(table_html(metrics["test"]))
    if model in metrics["test"]:
        compare = reports_dir / COMPARE_DEFAULT_ONLY
        rows = targets(metrics, model, json.loads(compare.read_text()) if compare.is_file() else None)
        parts.append(f"<h2>Targets for <code>{html.escape(model)}</code></h2><p>Met: "
                     f"{sum(r['met'] for r in rows)} of {len(rows)}. Where a target is missed, the margin says by how "
                     "much; README.md (Results, \"Targets not reached\") says what was tried.</p>")
        parts.append(table_html({r["target"]: r for r in rows}, ("value", "required", "margin", "met"), "target"))
    if "indomain" in metrics:
        ind = metrics["indomain"]
        parts.append(f"<h2>In-domain check: {ind['n_test']} generated faces</h2>"
                     f"<p>{html.escape(str(ind['data_source']))} (GAN faces aligned like Face Mask Lite's).</p>")
        parts.append(table_html(ind["test"]))
    if "robustness" in metrics:
        rob = metrics["robustness"]
        methods = list(next(iter(rob.values())))
        parts.append("<h2>Robustness: the generated faces with other masks</h2><p>The same faces masked with each "
                     "template; a model that only learned to turn a white mask into skin fails on the others.</p>")
        for metric in ("masked_psnr", "ssim", "identity_match_rate"):
            parts.append(f"<h3>{metric}</h3>" + table_html(robustness_table(rob, metric), methods))
    parts.append("<h2>The paper's Table 1</h2><table><tr><th></th><th>accuracy</th><th>loss</th></tr>"
                 "<tr><th>paper</th><td>91 %</td><td>3 %</td></tr></table>"
                 "<p>The paper's accuracy is Keras's <code>CategoricalAccuracy</code> over pixels "
                 "(<code>accuracy_paper</code> above); its loss is the MSE.</p>")
    if figure:
        b64 = base64.b64encode(figure).decode()
        parts.append(f'<h2>Generated faces</h2><img alt="masked, predicted and original generated faces" '
                     f'src="data:image/png;base64,{b64}">')
    if datam:
        s = datam.get("subset", {})
        ind = {f"indomain/{k}": v for k, v in datam.get("indomain", {}).items()}
        parts.append("<h2>Data</h2>" + table_html({"subset": s, **ind},
                                                 ("source", "used", "rejected", "landmark_success_rate", "seconds")))
    if cards:
        parts.append("<h2>Models</h2>" + table_html(cards, ("parameters", "epochs_run", "best_epoch", "wall_time_s",
                                                              "train_images_per_s", "backend")))
    from unmasking.stage import HTML_STYLE

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unmasking study: results</title>"
            f"\n{HTML_STYLE}\n</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def build(reports_dir: Path, models_dir: Path, data_dir: Path, figure_path: Path | None, model_name: str) -> None:
    from unmasking import params as P

    fig = triplet_figure(data_dir, models_dir, model_name, ep=P.load()["evaluate"])
    fig = fig or _notice_png("no generated-face test set (download.indomain_faces is empty)")
    if figure_path is not None:
        figure_path.parent.mkdir(parents=True, exist_ok=True)
        figure_path.write_bytes(fig)
    (Path(reports_dir) / "index.html").write_text(index_html(reports_dir, models_dir, fig, model_name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unmasking.report", description="Build reports/index.html.")
    ap.add_argument("--reports-dir", type=Path, default=paths.REPORTS_DIR)
    ap.add_argument("--models-dir", type=Path, default=paths.MODELS_DIR)
    ap.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    ap.add_argument("--figure", type=Path, default=paths.REPORTS_DIR / "figures" / "triplets-generated.png")
    ap.add_argument("--model", default="mask_unet")
    args = ap.parse_args(argv)
    build(args.reports_dir, args.models_dir, args.data_dir, args.figure, args.model)
    print(f"wrote {args.reports_dir / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
