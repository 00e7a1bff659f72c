"""Run one pipeline stage: execute its notebook with papermill, then render the executed copy to HTML.

    python -m unmasking.stage download|explore|train|evaluate [--model NAME] [--params FILE] [--data-dir D]
                                                               [--models-dir M] [--reports-dir R]

The parameters are validated before any work starts. The notebook receives the whole validated ``params.yaml`` as
the parameter ``params``, the folders as ``data_dir``, ``models_dir`` and ``reports_dir``, and for the train stage
the model it trains (``model``; one train stage per model). The executed notebook (``reports/NN-name.ipynb``, for
training ``reports/03-train-<model>.ipynb``) and its HTML rendering (code hidden, images embedded, nothing fetched
from the network) are the stage's reports. A failing cell stops the stage with its error message and a non-zero exit.

The notebook's kernel sees only the environment it needs (``KEEP_ENV``, ``KEEP_PREFIXES``): the paths, the Keras
backend and devices (``KERAS_BACKEND``, ``CUDA_*``, ``XLA_*``, ``JAX_*``, ``TF_*``, ``LD_LIBRARY_PATH``), proxies and
certificates for a download behind a proxy, Kaggle's credentials and DVC's experiment variables (``DVC_*``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from unmasking import params as P
from unmasking import paths

STAGES = {"download": "01-download", "explore": "02-explore", "train": "03-train", "evaluate": "04-evaluate"}

# Read by the executed notebooks: nothing else from the environment reaches them.
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "KERAS_BACKEND", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS",
            "MPLBACKEND", "JUPYTER_PLATFORM_DIRS", "LD_LIBRARY_PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
            "CURL_CA_BUNDLE")
KEEP_PREFIXES = ("PAPERMILL", "KAGGLE_", "CUDA_", "NVIDIA_", "XLA_", "JAX_", "TF_", "DVC_")


def stage_env(env: dict[str, str]) -> dict[str, str]:
    """The part of ``env`` a stage's notebook kernel sees."""
    return {k: v for k, v in env.items() if k in KEEP_ENV or k.startswith(KEEP_PREFIXES)}

HTML_STYLE = """<style>
body { max-width: 1100px; margin: 1.5em auto; padding: 0 1em; font-family: -apple-system, "Segoe UI", Helvetica, Arial,
  sans-serif; line-height: 1.45; color: #222; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.jp-OutputPrompt, .jp-InputPrompt, .prompt { display: none; }
nav.report-nav { font-size: 0.9em; margin-bottom: 1em; }
</style>"""


def report_names(models: list[str]) -> list[str]:
    """The stages' report names, in pipeline order (one train report per model)."""
    return ["01-download", "02-explore", *[f"03-train-{m}" for m in models], "04-evaluate"]


def render_html(executed: Path, html: Path, reports: list[str] | None = None) -> None:
    """Render an executed notebook to self-contained HTML: code hidden, images embedded, no external resources."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="basic")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
                  if c.cell_type == "markdown" and c.source.startswith("# ")), executed.stem)
    links = " · ".join(f'<a href="{n}.html">{n}</a>' for n in (reports or STAGES.values()))
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>{title}</title>\n{HTML_STYLE}\n"
            f"</head><body>\n<nav class=\"report-nav\"><a href=\"index.html\">index</a> · {links}</nav>\n{body}\n"
            "</body></html>\n")
    # Guard: nothing may be fetched from the network when the report is opened.
    page = re.sub(r'<(script|link)[^>]+(src|href)="https?://[^"]*"[^>]*>(</script>)?', "", page)
    html.write_text(page)


def run_stage(name: str, params_file: Path | None = None, data_dir: Path | None = None,
              models_dir: Path | None = None, reports_dir: Path | None = None, kernel: str = "python3",
              model: str | None = None) -> Path:
    import papermill as pm

    params = P.load(params_file)
    if name == "train" and model not in P.MODEL_NAMES:
        raise P.ParamsError(f"the train stage trains one model: --model {' | '.join(P.MODEL_NAMES)}")
    nb_name = STAGES[name]
    report = f"{nb_name}-{model}" if name == "train" else nb_name
    reports_dir = Path(reports_dir or paths.REPORTS_DIR).resolve()
    reports_dir.mkdir(parents=True, exist_ok=True)
    executed = reports_dir / f"{report}.ipynb"
    parameters = {
        "params": params,
        "data_dir": str(Path(data_dir or paths.DATA_DIR).resolve()),
        "models_dir": str(Path(models_dir or paths.MODELS_DIR).resolve()),
        "reports_dir": str(reports_dir),
        **({"model": model} if name == "train" else {}),
    }
    saved_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(stage_env(saved_env))
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(paths.NOTEBOOKS_DIR / f"{nb_name}.ipynb"), str(executed), parameters=parameters,
                            kernel_name=kernel, cwd=str(paths.NOTEBOOKS_DIR), progress_bar=False,
                            request_save_on_cell_execute=False)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if executed.exists():
            render_html(executed, reports_dir / f"{report}.html", report_names(params["evaluate"]["models"]))
    label = f"{name} {model}" if name == "train" else name
    print(f"stage {label}: {time.perf_counter() - t0:.0f} s; report {reports_dir / (report + '.html')}")
    return executed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unmasking.stage", description="Run one pipeline stage's notebook.")
    ap.add_argument("stage", choices=list(STAGES))
    ap.add_argument("--model", default=None, help="the model the train stage trains")
    ap.add_argument("--params", type=Path, default=None, help="parameter file (default: the project's params.yaml)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--reports-dir", type=Path, default=None)
    ap.add_argument("--kernel", default="python3")
    args = ap.parse_args(argv)
    try:
        run_stage(args.stage, args.params, args.data_dir, args.models_dir, args.reports_dir, args.kernel, args.model)
    except P.ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill's execution error carries the failing cell's error
        import papermill as pm

        if isinstance(e, pm.PapermillExecutionError):
            print(f"error: stage {args.stage} failed: {e.ename}: {e.evalue}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
