"""The ``kaggle`` source: Face Mask Lite through the Kaggle API, only the chosen pairs, file by file.

Files go into ``data/raw/face-mask-lite/`` (a rerun skips what is already there), never the whole 21 GB archive.
Credentials come from ``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``KAGGLE_API_TOKEN`` or ``~/.kaggle/``; no secret value is
ever printed or written (``scrub``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from unmasking import paths
from unmasking.data.fml import FML_MASKED, FML_PREFIX, FML_SEEDS, FML_UNMASKED, FmlIndex, collect_fml, with_margin
from unmasking.data.pairs import Collected, CredentialsError, DataError
from unmasking.parallel import progress as progress_bar


class KaggleClient(Protocol):
    """The part of ``kaggle.api.KaggleApi`` the study uses (the boundary that tests replace with a fake)."""

    def authenticate(self) -> None: ...

    def dataset_download_file(self, dataset: str, file_name: str, path: str | None = None, force: bool = False,
                              quiet: bool = True, licenses: list | None = None, unzip: bool = False) -> bool: ...


CREDENTIALS_HELP = (
    "Kaggle credentials not found. To download Face Mask Lite, set KAGGLE_USERNAME and KAGGLE_KEY (or "
    "KAGGLE_API_TOKEN) in the environment, or save your token as ~/.kaggle/kaggle.json (from "
    "kaggle.com -> Settings -> API -> Create New Token). To run without Kaggle: "
    "make repro FACES=<folder of face photos> [MASK=<overlay.png>], or make repro LOCAL=<Face Mask Lite folder or zip>."
)


def kaggle_credentials_present(env: dict[str, str] | None = None, home: Path | None = None) -> bool:
    """Whether any Kaggle credential is configured (environment or config folder); reads no secret value out."""
    env = dict(os.environ if env is None else env)
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    cfg = Path(env.get("KAGGLE_CONFIG_DIR") or (Path(home or Path.home()) / ".kaggle"))
    return any((cfg / n).is_file() for n in ("kaggle.json", "access_token"))


def scrub(text: str, env: dict[str, str] | None = None) -> str:
    """Remove any Kaggle secret value from ``text`` (for messages built from third-party exceptions)."""
    env = dict(os.environ if env is None else env)
    for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME"):
        v = env.get(k)
        if v and len(v) >= 3:
            text = text.replace(v, "***")
    return text


def real_kaggle_client() -> KaggleClient:
    """The real Kaggle API client, authenticated; ``CredentialsError`` with what to set when it cannot be."""
    import contextlib
    import io

    if not kaggle_credentials_present():
        raise CredentialsError(CREDENTIALS_HELP)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except (Exception, SystemExit):
        raise CredentialsError(CREDENTIALS_HELP) from None
    return api


def fml_names(seed_number: int, mask: str = "default-mask") -> tuple[str, str]:
    """Face Mask Lite's file names of one pair: (masked, unmasked)."""
    f = f"seed{seed_number:04d}.png"
    return f"{FML_MASKED}/{FML_PREFIX}{mask}-{f}", f"{FML_UNMASKED}/{f}"


def download_kaggle(client: KaggleClient, dataset: str, n_pairs: int, seed: int, dest: Path,
                    progress: bool = True) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
    """Download only the seeded choice of pairs (plus a small margin), file by file; skip files already there.

    Returns the pairs present locally (seeded order) and the files that could not be downloaded.
    """
    chosen = np.random.default_rng(seed).permutation(FML_SEEDS)[: with_margin(n_pairs, FML_SEEDS)]
    pairs, failed = [], []
    bar = progress_bar(len(chosen), "downloading pairs", progress)
    try:
        for s in chosen:
            ok = True
            names = fml_names(int(s))
            for name in names:
                target = dest / name
                if target.is_file() and target.stat().st_size > 0:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    client.dataset_download_file(dataset, name, path=str(target.parent), quiet=True, unzip=True)
                except (ConnectionError, TimeoutError, OSError) as e:
                    raise DataError(
                        f"Kaggle could not be reached ({type(e).__name__}: {scrub(str(e))}). Check the network, or "
                        "run offline with make repro FACES=<folder> or LOCAL=<copy>.") from None
                except Exception as e:  # the API reports a missing file or a refused request
                    failed.append({"file": name, "reason": "download failed", "detail": scrub(f"{type(e).__name__}: {e}")})
                    ok = False
                    continue
                if not target.is_file():
                    failed.append({"file": name, "reason": "download failed", "detail": "the API wrote no file"})
                    ok = False
            if ok:
                pairs.append((names[0], names[1], "default-mask"))
            bar.update(1)
            if len(failed) > max(20, n_pairs // 5) and not pairs:
                raise DataError(f"Kaggle downloads keep failing ({failed[-1]['detail']}); nothing was downloaded")
    finally:
        bar.close()
    return pairs, failed


def collect_kaggle(client: KaggleClient | None, dataset: str, n_pairs: int, image_size: int, seed: int,
                   workers: int, raw_dir: Path | None = None, progress: bool = True) -> Collected:
    """Face Mask Lite from Kaggle: download the chosen pairs into ``raw_dir``, then load them like a local copy."""
    client = client if client is not None else real_kaggle_client()
    dest = Path(raw_dir or paths.RAW_DIR) / "face-mask-lite"
    pairs, failed = download_kaggle(client, dataset, n_pairs, seed, dest, progress)
    index = FmlIndex(pairs, [], [], [])
    col = collect_fml(dest, index, pairs, n_pairs, image_size, workers, progress)
    col.found = FML_SEEDS
    col.rejected.extend(failed)
    return col
