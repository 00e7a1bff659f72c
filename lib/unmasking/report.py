"""The study's results as tables, written by the report stage: every number comes from the pipeline's own files.

    python -m unmasking.report [--reports-dir R] [--models-dir M] [--data-dir D] [--readme README.md]

From ``reports/metrics.json`` (the evaluate stage), ``reports/data.json``, the model cards, ``reports/bench.json`` and
the comparison runs in ``reports/compare/`` it writes:

* ``reports/RESULTS.md``: every results table (committed; ``cache: false``);
* the headline table of ``README.md``, between the markers ``README_START`` and ``README_END`` (nothing else of the
  README is touched; a test checks the two agree);
* ``reports/index.html``: the front page of the HTML reports, with the same tables and the figures;
* ``reports/figures/*.png`` (``figures``): made from the generated faces only, no real person.

The table builders (``Table``) are what notebook 04 shows too. The targets (``targets``) are scored on the test
split and the other final sets, never on validation, and say by how much each is met or missed.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmasking import metrics, paths

README_START = "<!-- results: written by the report stage (python -m unmasking.report); do not edit -->"
README_END = "<!-- /results -->"
COMPARE_DIR = "compare"  # under reports/: evaluations of profile runs (python -m unmasking.evaluate)
def generated_set(result: dict[str, Any]) -> str | None:
    """The generated-face set that is scored for realism and identity (the first template's: ``default-mask`` in the
    committed run), or None."""
    return next((k for k, e in result.get("sets", {}).items() if k.startswith("indomain/") and e.get("primary")), None)
NAMES = {"accuracy_paper": "accuracy (paper)", "masked_psnr": "masked PSNR", "masked_l1": "masked L1",
         "masked_ssim": "masked SSIM", "detail_ratio": "detail ratio", "c2st_distance": "realism distance",
         "same_photo_match_rate": "same-photo match", "verification_rate": "verification", "psnr": "PSNR",
         "ssim": "SSIM", "mse": "MSE"}


@dataclass
class Table:
    """A results table: a title, a note saying what it is measured on, column names, rows of (label, cells)."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    note: str = ""

    def markdown(self, level: int = 3) -> str:
        lines = [f"{'#' * level} {self.title}", ""] if self.title else []
        if self.note:
            lines += [self.note, ""]
        lines.append("| | " + " | ".join(self.columns) + " |")
        lines.append("|---" * (len(self.columns) + 1) + "|")
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(f"<tr><th>{html.escape(r)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                       + "</tr>" for r, cells in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return f"<h3>{html.escape(self.title)}</h3>{note}<table><tr><th></th>{head}</tr>{body}</table>"

    def frame(self):
        """As a pandas DataFrame (for the notebooks)."""
        import pandas as pd

        return pd.DataFrame([cells for _, cells in self.rows], index=[r for r, _ in self.rows], columns=self.columns)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def with_ci(s: dict[str, Any], key: str) -> str:
    """``value [lo, hi]`` (the 95 % bootstrap interval), or the value alone."""
    ci = s.get(f"{key}_ci95")
    return fmt(s.get(key)) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci and ci[0] is not None else "")


def _set(result: dict[str, Any], name: str | None) -> dict[str, Any] | None:
    return result.get("sets", {}).get(name) if name else None


def headline(result: dict[str, Any], set_name: str = "test", cols: tuple[str, ...] = metrics.HEADLINE) -> Table:
    """Every method on one set: the headline metrics with their 95 % intervals."""
    e = _set(result, set_name)
    t = Table(f"{set_name}: {e['n']} pairs" if e else set_name, [NAMES.get(c, c) for c in cols])
    if not e:
        return t
    t.note = _describe(e)
    t.rows = [(m, [with_ci(s, c) if c in s else "–" for c in cols]) for m, s in e["methods"].items()]
    return t


def _describe(e: dict[str, Any]) -> str:
    bits = [str(e[k]) for k in ("source", "crop", "region") if e.get(k)]
    if e.get("landmarks") and not e.get("crop"):
        bits.append(f"landmarks fitted by {e['landmarks']}")
    if e.get("refine"):
        bits.append(f"the crop taken again {e['refine']} time(s) from landmarks refitted on the unmasked output")
    if "image_size" in e:
        bits.append(f"{e['image_size']} px")
    if "photos" in e:
        by = e["found_by"]
        bits.append(f"faces found on {e['detected']} of {e['photos']} masked photos ({e['detection_rate']:.1%}: "
                    f"{by.get('hog', 0)} by dlib's HOG detector, {by.get('masked-hog', 0)} by the masked-face "
                    f"detector, {by.get('cnn', 0)} by the CNN detector)")
    if e.get("with_reference") is not None:
        bits.append(f"{e['with_reference']} pairs have a reference photo for verification")
    return "; ".join(bits) + ". Brackets: 95 % bootstrap intervals over the images."


def perception_distortion(result: dict[str, Any]) -> Table:
    """Distortion (masked PSNR, masked SSIM) beside realism (detail ratio, realism distance) on the LFW test split
    and the generated faces with Face Mask Lite's mask."""
    cols = ("masked_psnr", "masked_ssim", "detail_ratio", "c2st_distance")
    sets = [s for s in ("test", generated_set(result)) if _set(result, s)]
    t = Table("Perception and distortion", [f"{NAMES[c]} ({'LFW' if s == 'test' else 'generated'})"
                                            for s in sets for c in cols],
              note="Distortion: higher masked PSNR and SSIM are closer to the true face. Realism: a detail ratio of "
                   "1 is as detailed as a real face, a realism distance of 0 means a classifier cannot tell the "
                   "masked region from a real one (metrics.py).")
    methods = list(_set(result, "test")["methods"]) if sets else []
    for m in methods:
        t.rows.append((m, [with_ci(_set(result, s)["methods"].get(m, {}), c) for s in sets for c in cols]))
    return t


def identity(result: dict[str, Any]) -> Table:
    """Same-photo similarity and verification against another photo of the same person, on every set that has it."""
    sets = [s for s in ("test", "test_detected", "photos") if _set(result, s)]
    gen = generated_set(result)
    cols = []
    if sets:
        cols.append(("test", "same_photo_match_rate", "same-photo match (test)"))
        if gen:
            cols.append((gen, "same_photo_match_rate", "same-photo match (generated)"))
    cols += [(s, "verification_rate", f"verification ({s})") for s in sets]
    t = Table("Identity", [c[2] for c in cols])
    if not sets:
        return t
    test = _set(result, "test")
    ceil = test.get("verification_ceiling") or {}
    t.note = (f"dlib embeddings, same person under {result.get('identity_threshold', metrics.IDENTITY_THRESHOLD)}. "
              "Same-photo: against the very photo "
              "that was masked (near-duplicate similarity). Verification: against another photo of the same person, "
              f"on the {ceil.get('verification_n', 0)} test identities that have one; the true face's own rate is "
              "the ceiling.")
    t.rows.append(("true face (ceiling)", ["–" if k == "same_photo_match_rate" else
                                           with_ci(_set(result, s).get("verification_ceiling") or {}, k)
                                           for s, k, _ in cols]))
    g = _set(result, gen)
    if g:
        t.note += (f" Generated faces: {next(iter(g['methods'].values())).get('same_photo_n', 0)} of the "
                   f"{g.get('mask')} set, same-photo only (no second photo of a generated person exists).")
    for m in test["methods"]:
        t.rows.append((m, [with_ci(_set(result, s)["methods"].get(m, {}), k) for s, k, _ in cols]))
    return t


def robustness(result: dict[str, Any], metric: str = "masked_psnr") -> Table:
    """One metric per mask template on the generated faces."""
    sets = {k.split("/", 1)[1]: v for k, v in result.get("sets", {}).items() if k.startswith("indomain/")}
    methods = list(next(iter(sets.values()))["methods"]) if sets else []
    t = Table(f"Generated faces per mask template: {NAMES.get(metric, metric)}", methods)
    if sets:
        first = next(iter(sets.values()))
        t.note = f"{first['n']} generated faces ({first.get('source', '')}), each masked with every template."
    t.rows = [(tmpl, [fmt(e["methods"][m].get(metric)) for m in methods]) for tmpl, e in sets.items()]
    return t


def comparisons(result: dict[str, Any], set_name: str = "test") -> Table:
    """Paired differences between the trained models on the same images."""
    comp = result.get("comparisons", {}).get(set_name, {})
    keys = [k for k in ("masked_psnr", "masked_ssim", "detail_ratio", "ssim", "verified") if
            any(k in v for v in comp.values())]
    t = Table(f"Paired differences ({set_name})", [NAMES.get(k, "verification" if k == "verified" else k)
                                                    for k in keys],
              note="Mean per-image difference with its 95 % paired bootstrap interval; + marks a gain (interval above "
                   "zero), - a loss (below zero), = no difference that the data can tell.")
    for pair, entry in comp.items():
        cells = []
        for k in keys:
            d = entry.get(k)
            if not d:
                cells.append("–")
                continue
            sign = "+" if d["gain"] else "-" if d["loss"] else "="
            cells.append(f"{fmt(d['difference'])} [{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}] {sign}")
        t.rows.append((pair, cells))
    return t


def models_table(cards: dict[str, dict[str, Any]]) -> Table:
    """The model cards: size, training, device, and the validation scores that decide."""
    t = Table("Models", ["parameters", "epochs run", "epoch kept", "stopped early", "wall time (s)", "train img/s",
                         "device", "val. masked PSNR, one pass", "flip-averaged", "flip gain [95 %]"],
              note="Validation split: per-image means; the flip gain is paired (models/<model>.json).")
    for name, c in cards.items():
        v = c.get("validation", {})
        g = v.get("flip_gain_masked_psnr", {})
        t.rows.append((name, [fmt(c.get("parameters")), fmt(c.get("epochs_run")), fmt(c.get("best_epoch")),
                              fmt(c.get("stopped_early")), fmt(c.get("wall_time_s")),
                              fmt(c.get("train_images_per_s")), str(c.get("device", c.get("backend"))),
                              fmt(v.get("one_pass", {}).get("masked_psnr")),
                              fmt(v.get("flip_averaged", {}).get("masked_psnr")),
                              f"{fmt(g.get('difference'))} [{fmt((g.get('ci95') or [None])[0])}, "
                              f"{fmt((g.get('ci95') or [None, None])[1])}]" if g else "–"]))
    return t


def data_table(datam: dict[str, Any]) -> Table:
    s = datam.get("subset", {})
    rows = {"subset": s, **{f"generated/{k}": v for k, v in datam.get("indomain", {}).items()}}
    t = Table("Data", ["source", "used", "rejected", "landmark success", "seconds", "pairs/s"])
    t.rows = [(k, [fmt(v.get(c)) for c in ("source", "used", "rejected", "landmark_success_rate", "seconds",
                                           "pairs_per_s")]) for k, v in rows.items()]
    if datam.get("photos", {}).get("photos"):
        p = datam["photos"]
        t.note = (f"Test photos: {p['photos']} (JPEG quality {p['jpeg_quality']}), {p['with_reference']} with a "
                  f"reference photo of the same person, {p['without_reference']} without.")
    return t


def bench_table(bench: dict[str, Any]) -> Table:
    """``make bench``: stage times of the last run and the speeds measured."""
    machine = bench.get("machine", {})
    cpu = f" ({machine['cpu']})" if machine.get("cpu") else ""
    t = Table("Speed (make bench)", ["measured"], note=f"{machine.get('cpus')} CPUs{cpu}, {machine.get('backend')}; "
              f"image {bench.get('image_size')} px, batch {bench.get('batch_size')}.")
    st = bench.get("stages") or {}
    for k, v in (st.get("seconds") or {}).items():
        t.rows.append((f"stage {k}", [f"{v:.0f} s"]))
    if st.get("total_s"):
        t.rows.append(("all stages", [f"{st['total_s']:.0f} s"]))
    for k in ("data_synthesis", "data_local_copy"):
        if k in bench:
            t.rows.append((k.replace("_", " "), [f"{bench[k]['pairs_per_s']} pairs/s"]))
    for name, r in bench.get("training", {}).items():
        t.rows.append((f"train {name}", [f"{r['train_images_per_s']} img/s, {r['share_of_ceiling']:.0%} of "
                                         f"{bench['ceiling_gflops']} GFLOP/s; inference "
                                         f"{r['inference_images_per_s']} img/s"]))
    ph = bench.get("predict_one_photo") or {}
    if "ms_per_photo" in ph:
        t.rows.append(("unmask predict, one photo", [f"{ph['ms_per_photo']} ms ({ph['size']})"]))
    return t


def paper_table(result: dict[str, Any]) -> Table:
    """The paper's Table 1 (accuracy 91 %, loss 3 %) beside what each method scores on the test split."""
    t = Table("The paper's Table 1 beside ours", ["accuracy", "loss (MSE)"])
    t.rows.append(("paper (Table 1)", ["0.91", "0.03"]))
    for m, s in (_set(result, "test") or {}).get("methods", {}).items():
        t.rows.append((f"{m} (ours)", [fmt(s.get("accuracy_paper")), fmt(s.get("mse"))]))
    return t


def metric_definitions() -> str:
    """The metric definitions of ``metrics.py`` (its module text), as Markdown."""
    doc = metrics.__doc__.split("\n", 1)[1]
    lines, out = doc.strip("\n").splitlines(), []
    for line in lines:
        line = line.replace("``", "`")
        out.append(f"* **{line.strip()}**" if line and not line.startswith(" ") else line.strip())
    return "\n".join(out).replace("**\n", "**: ").replace("\n* ", "\n\n* ")


def reading(result: dict[str, Any]) -> str:
    """Sentences that read the identity results (every number from ``result``)."""
    test = (_set(result, "test") or {}).get("methods", {})
    base = test.get("masked_input", {})
    lines = []
    for m, s in test.items():
        if m == "masked_input" or s.get("verification_rate") is None:
            continue
        lines.append(f"* `{m}`: verified against another photo of the person for {s['verification_rate']:.1%} of the "
                     f"{s['verification_n']} test faces that have one (masked input: "
                     f"{base.get('verification_rate', 0):.1%}); same-photo match "
                     f"{s.get('same_photo_match_rate', 0):.1%} (masked input: "
                     f"{base.get('same_photo_match_rate', 0):.1%}).")
    ceil = (_set(result, "test") or {}).get("verification_ceiling")
    if ceil:
        lines.append(f"* The true unmasked face itself is verified for {ceil['verification_rate']:.1%}: the ceiling.")
    lines.append("\nA filled-in mouth and nose that look right are invented from the visible half of the face; they "
                 "add no information about who is behind the mask, so the output must not be used to identify anyone.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Targets


def _row(target: str, value: float | None, required: str, margin: float | None, strict: bool = False
         ) -> dict[str, Any]:
    met = None if margin is None else (margin > 0 if strict else margin >= 0)
    return {"target": target, "value": value, "required": required, "margin": margin, "met": met}


def targets(result: dict[str, Any], compare: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The study's targets, each scored on a final set (test split, generated faces, test photos), never on
    validation: {target, value, required, margin, met}; the margin is how far the value is on the right side of its
    bound (negative: missed by that much). ``compare``: the evaluations in ``reports/compare/``, used only when made
    on the same test pairs (their ``masked_input`` row is the same)."""
    rows = []
    test = (_set(result, "test") or {}).get("methods", {})
    gen = (_set(result, generated_set(result)) or {}).get("methods", {})

    def v(table, m, k):
        return table.get(m, {}).get(k)

    def at_least(name, value, bound, strict=False, what=""):
        rows.append(_row(name, value, f"{'>' if strict else '>='} {what or fmt(bound)}",
                         None if value is None or bound is None else value - bound, strict))

    u = "mask_unet"
    if u in test:
        for k, lo in (("masked_psnr", 22.5), ("psnr", 30.0), ("ssim", 0.94), ("accuracy_paper", 0.997)):
            at_least(f"{u} {k} (test)", v(test, u, k), lo)
        for k in ("same_photo_match_rate", "verification_rate"):
            base = v(test, "masked_input", k)
            at_least(f"{u} {k} (test)", v(test, u, k), base, strict=True, what=f"the masked input's {fmt(base)}")
        rob = {n: e["methods"][u]["masked_psnr"] for n, e in result["sets"].items()
               if n.startswith("indomain/") and u in e["methods"]}
        if rob:
            worst = min(rob, key=rob.get)
            at_least(f"{u} masked_psnr on every generated-face template (lowest: {worst.split('/')[1]})",
                     rob[worst], 18.0)
        same = {k: c for k, c in (compare or {}).items()
                if c.get("sets", {}).get("test", {}).get("methods", {}).get("masked_input") == test.get("masked_input")}
        if "default-only" in same and u in same["default-only"]["sets"]["test"]["methods"]:
            cost = same["default-only"]["sets"]["test"]["methods"][u]["masked_psnr"] - v(test, u, "masked_psnr")
            rows.append(_row(f"{u} masked_psnr lost to the mix of templates (test, against default-mask only)",
                             round(cost, 4), "<= 0.3", round(0.3 - cost, 4)))
    g = "mask_gan"
    if g in test and u in test:
        for label, table in (("test", test), ("generated", gen)):
            if g not in table:
                continue
            at_least(f"{g} detail_ratio ({label})", v(table, g, "detail_ratio"), 0.8)
            du = v(table, u, "c2st_distance")
            dg = v(table, g, "c2st_distance")
            rows.append(_row(f"{g} realism distance ({label})", dg, f"<= half of {u}'s {fmt(du)}",
                             None if du is None or dg is None else du / 2 - dg))
            at_least(f"{g} masked_psnr ({label})", v(table, g, "masked_psnr"),
                     None if v(table, u, "masked_psnr") is None else v(table, u, "masked_psnr") - 1.5,
                     what=f"{u}'s minus 1.5 dB")
        at_least(f"{g} verification_rate (test)", v(test, g, "verification_rate"), v(test, u, "verification_rate"),
                 what=f"{u}'s {fmt(v(test, u, 'verification_rate'))}")
        at_least(f"{u} stays the distortion-optimal model: masked_psnr above {g}'s (test)", v(test, u, "masked_psnr"),
                 v(test, g, "masked_psnr"), strict=True, what=f"{g}'s {fmt(v(test, g, 'masked_psnr'))}")
    ph = _set(result, "photos")
    if ph:
        at_least("masked faces found in the test photos (detection rate)", ph["detection_rate"], 0.98)
        det = (_set(result, "test_detected") or {}).get("methods", {})
        exact = (_set(result, "test_region") or {}).get("methods", {})
        for m in (u, g):
            if m not in ph["methods"]:
                continue
            for label, table in (("the same detected crops", det),
                                 ("the test split's crops over the photo's exact region", exact),
                                 ("the test split's crops", test)):
                crop = v(table, m, "masked_psnr")
                if crop is not None:
                    at_least(f"{m} masked_psnr at photo resolution, against {label}", v(ph["methods"], m,
                                                                                      "masked_psnr"),
                             crop - 0.5, what=f"{fmt(crop)} minus 0.5 dB")
    return rows


def targets_table(rows: list[dict[str, Any]]) -> Table:
    met = sum(r["met"] is True for r in rows)
    t = Table("Targets", ["value", "required", "margin", "met"],
              note=f"Met: {met} of {len(rows)}. Scored on the final sets (test split, generated faces, test photos); "
                   "every choice was made on the validation split. docs/history.md says what was tried where a target "
                   "is missed.")
    t.rows = [(r["target"], [fmt(r["value"]), r["required"], fmt(r["margin"]), fmt(r["met"])]) for r in rows]
    return t


# ---------------------------------------------------------------------------------------------------------------------
# The written files


def load_inputs(reports_dir: Path, models_dir: Path, names: list[str]) -> dict[str, Any]:
    reports_dir, models_dir = Path(reports_dir), Path(models_dir)

    def read(p: Path) -> dict[str, Any]:
        return json.loads(p.read_text()) if p.is_file() else {}

    compare = {p.stem: read(p) for p in sorted((reports_dir / COMPARE_DIR).glob("*.json"))}
    return {"metrics": read(reports_dir / "metrics.json"), "data": read(reports_dir / "data.json"),
            "bench": read(reports_dir / "bench.json"), "compare": compare,
            "cards": {n: read(paths.model_card_path(n, models_dir)) for n in names
                      if paths.model_card_path(n, models_dir).is_file()}}


def readme_block(result: dict[str, Any]) -> str:
    """The README's headline table: every method on the test split."""
    t = headline(result, "test", ("masked_psnr", "ssim", "detail_ratio", "c2st_distance", "verification_rate"))
    t.title = t.note = ""
    e = _set(result, "test") or {}
    return (f"Test split, {e.get('n', 0)} pairs: {_describe(e)} All tables: "
            "[reports/RESULTS.md](reports/RESULTS.md).\n\n" + t.markdown())


def update_readme(readme: Path, block: str) -> bool:
    """Replace the README's block between the markers with ``block``; whether the file changed."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: the results markers are missing ({README_START!r} ... {README_END!r})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{block}{README_END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text


def all_tables(inp: dict[str, Any]) -> list[Table]:
    r = inp["metrics"]
    out = [headline(r, "test"), perception_distortion(r), identity(r), targets_table(targets(r, inp["compare"])),
           comparisons(r, "test")]
    for name in ("test_detected", "photos", "test_region"):
        if _set(r, name):
            cols = metrics.HEADLINE if name != "photos" else (
                "psnr", "ssim", "masked_psnr", "masked_l1", "masked_ssim", "detail_ratio", "verification_rate")
            out.append(headline(r, name, tuple(c for c in cols if c != "c2st_distance")))
    out += [robustness(r, "masked_psnr"), robustness(r, "detail_ratio"), models_table(inp["cards"]),
            data_table(inp["data"])]
    for name, c in inp["compare"].items():
        for set_name in ("val", "val_photos", "test", "photos"):
            if _set(c, set_name):
                t = headline(c, set_name)
                t.title = f"Comparison run {name}, {set_name}: {c.get('note', '')}"
                out.append(t)
            if c.get("comparisons", {}).get(set_name):
                t = comparisons(c, set_name)
                t.title = f"Comparison run {name}, paired differences ({set_name})"
                out.append(t)
    if inp["bench"]:
        out.append(bench_table(inp["bench"]))
    return out


def results_markdown(inp: dict[str, Any]) -> str:
    return ("# Results\n\nWritten by the report stage from the pipeline's own files (reports/metrics.json, "
            "reports/data.json, models/*.json, reports/bench.json, reports/compare/); do not edit.\n\n"
            + "\n".join(t.markdown() for t in all_tables(inp)))


def index_html(inp: dict[str, Any], reports: list[str], figures: dict[str, bytes]) -> str:
    from unmasking.stage import HTML_STYLE

    parts = ["<h1>Predicting the unmasked face from a masked face: results</h1>",
             "<p>The paper's convolutional autoencoder (<code>paper_ae</code>), classical inpainting, a mask-aware "
             "U-Net (<code>mask_unet</code>, the distortion-optimal model) and the same U-Net trained with an "
             "adversarial loss (<code>mask_gan</code>, the perception side). Every output is a plausible face that "
             "fits the visible part, not a recovery of the hidden one.</p><h2>Reports</h2><ul>"]
    parts += [f'<li><a href="{n}.html">{n}</a></li>' for n in reports]
    parts.append("</ul>")
    for t in all_tables(inp):
        parts.append(t.html())
    for title, png in figures.items():
        parts.append(f'<h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" '
                     f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    parts.append("<h3>The paper's Table 1</h3><p>accuracy 91 %, loss 3 %: its accuracy is Keras's "
                 "<code>CategoricalAccuracy</code> over pixels (<code>accuracy_paper</code>), its loss the MSE.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unmasking study: results</title>"
            f"\n{HTML_STYLE}\n</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def build(reports_dir: Path, models_dir: Path, data_dir: Path, readme: Path | None, params: dict[str, Any]) -> None:
    from unmasking import figures, stage

    reports_dir = Path(reports_dir)
    names = params["evaluate"]["models"]
    inp = load_inputs(reports_dir, models_dir, names)
    figs = figures.build_all(Path(data_dir), Path(models_dir), names, params, reports_dir / "figures")
    (reports_dir / "RESULTS.md").write_text(results_markdown(inp))
    (reports_dir / "index.html").write_text(index_html(inp, stage.report_names(names), figs))
    if readme is not None:
        update_readme(readme, readme_block(inp["metrics"]))


def main(argv: list[str] | None = None) -> int:
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.report", description="Write the study's result tables.")
    ap.add_argument("--reports-dir", type=Path, default=paths.REPORTS_DIR)
    ap.add_argument("--models-dir", type=Path, default=paths.MODELS_DIR)
    ap.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    ap.add_argument("--readme", default=str(paths.PROJ_ROOT / "README.md"), help="README to update ('' = none)")
    ap.add_argument("--params", type=Path, default=None)
    args = ap.parse_args(argv)
    readme = Path(args.readme) if args.readme else None
    build(args.reports_dir, args.models_dir, args.data_dir, readme, P.load(args.params))
    print(f"wrote {args.reports_dir / 'RESULTS.md'} and {args.reports_dir / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
