"""The ``kaggle`` source: Face Mask Lite through the Kaggle API, only the chosen pairs, file by file.

Each file is downloaded into a scratch folder and moved to ``data/raw/face-mask-lite/<file name>`` once complete (a
rerun skips what is already there), never the whole 21 GB archive; the client's per-file output is swallowed.
Credentials come from ``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``KAGGLE_API_TOKEN`` or ``~/.kaggle/``; no secret value is
ever printed or written (``scrub``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np

from unmasking import paths
from unmasking.data.fml import (
    FML_MASKED,
    FML_PREFIX,
    FML_SEEDS,
    FML_UNMASKED,
    FmlIndex,
    collect_fml,
    safe_extract,
    with_margin,
)
from unmasking.data.pairs import Collected, CredentialsError, DataError
from unmasking.parallel import progress as progress_bar


class KaggleClient(Protocol):
    """The part of ``kaggle.api.KaggleApi`` (kaggle 2.2.5) the study uses.

    ``dataset_download_file(dataset, "with_mask/x.png", path=P)`` asks Kaggle's DownloadDataset RPC for one file,
    follows its redirect and writes ``P/with_mask/<last segment of the redirect URL>``: ``x.png``, or ``x.png.zip``
    when the server wraps the file in a zip (the client unwraps that only with ``unzip=True``). It returns whether it
    downloaded, raises ``requests`` errors (an ``HTTPError`` with ``.response`` when the server answered with an error
    status) and prints a "Dataset URL" line on every call, ``quiet`` or not.
    """

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
    """Remove any Kaggle secret value from ``text`` (for messages built from third-party exceptions), also the
    username and key as an HTTP Basic credential (base64 of ``user:key``) carries them."""
    env = dict(os.environ if env is None else env)
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        basic = base64.b64encode(f"{env['KAGGLE_USERNAME']}:{env['KAGGLE_KEY']}".encode()).decode()
        text = text.replace(basic, "***")
    for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME"):
        v = env.get(k)
        if v and len(v) >= 3:
            text = text.replace(v, "***")
    return text


def _unreachable(e: BaseException) -> DataError:
    """The one message for a network failure (secret values scrubbed)."""
    return DataError(f"Kaggle could not be reached ({type(e).__name__}: {scrub(str(e))}). Check the network, or "
                     "run offline with make repro FACES=<folder> or LOCAL=<copy>.")


def _is_network_error(e: BaseException) -> bool:
    """Whether ``e`` means Kaggle was not reached (no connection, timeout), not that it answered with an error."""
    if getattr(e, "response", None) is not None:  # the server answered (an HTTP error status)
        return False
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import Timeout
    except ImportError:
        return False
    return isinstance(e, (RequestsConnectionError, Timeout))


def _silenced():
    """A context that swallows what the Kaggle client prints (one "Dataset URL" line per file, auth help)."""
    sink = io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(sink))
    stack.enter_context(contextlib.redirect_stderr(sink))
    return stack


def real_kaggle_client() -> KaggleClient:
    """The real Kaggle API client, authenticated; ``CredentialsError`` with what to set when it cannot be.

    A network failure while authenticating (an API token is checked online) is the network ``DataError`` instead.
    """
    if not kaggle_credentials_present():
        raise CredentialsError(CREDENTIALS_HELP)
    try:
        with _silenced():
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except (Exception, SystemExit) as e:
        if _is_network_error(e):
            raise _unreachable(e) from None
        raise CredentialsError(CREDENTIALS_HELP) from None
    return api


def fml_names(seed_number: int, mask: str = "default-mask") -> tuple[str, str]:
    """Face Mask Lite's file names of one pair: (masked, unmasked)."""
    f = f"seed{seed_number:04d}.png"
    return f"{FML_MASKED}/{FML_PREFIX}{mask}-{f}", f"{FML_UNMASKED}/{f}"


def _written_file(staging: Path, file_name: str) -> Path:
    """The one file the client wrote for ``file_name`` under ``staging`` (named after the download URL, maybe a zip
    wrapping the file), unwrapped when zipped; ``DataError`` when there is none."""
    folder = staging / PurePosixPath(file_name).parent
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".kaggle-partial")) \
        if folder.is_dir() else []
    if len(found) != 1:
        raise DataError("the API wrote no file" if not found else f"the API wrote {len(found)} files")
    got, want = found[0], PurePosixPath(file_name).name
    if want.lower().endswith(".zip") or not zipfile.is_zipfile(got):
        return got
    out = staging / ".unzipped"
    members = [p for p in safe_extract(got, out) if p.is_file()]  # refuses members that escape ``out``
    match = [p for p in members if p.name == want] or (members if len(members) == 1 else [])
    if len(match) != 1:
        raise DataError(f"the zip the API wrote ({got.name}) holds no single {want}")
    return match[0]


def _download_one(client: KaggleClient, dataset: str, file_name: str, dest: Path, staging: Path) -> None:
    """Download ``file_name`` into a fresh ``staging`` folder, then move it to ``dest/file_name`` (so a file there is
    always complete). The client's output is swallowed; its exceptions propagate."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with _silenced():
            client.dataset_download_file(dataset, file_name, path=str(staging), force=True, quiet=True, unzip=False)
        got = _written_file(staging, file_name)
        target = dest / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_kaggle(client: KaggleClient, dataset: str, n_pairs: int, seed: int, dest: Path,
                    progress: bool = True) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
    """Download only the seeded choice of pairs (plus a small margin), file by file, to ``dest/<file name>``; skip
    files already there.

    Returns the pairs present locally (seeded order) and the files that could not be downloaded.
    """
    chosen = np.random.default_rng(seed).permutation(FML_SEEDS)[: with_margin(n_pairs, FML_SEEDS)]
    staging = dest / ".downloading"
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
                try:
                    _download_one(client, dataset, name, dest, staging)
                except Exception as e:
                    if _is_network_error(e):
                        raise _unreachable(e) from None
                    # the API reports a missing file or a refused request, or wrote nothing usable
                    detail = str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}"
                    failed.append({"file": name, "reason": "download failed", "detail": scrub(detail)})
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
