"""The Kaggle source, driven through the real ``kaggle`` client (2.2.5) against a Kaggle-like server on the loopback.

``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes the client send its RPCs to http://localhost/api/v1/... (kagglesdk's
``kaggle_env.py``). That endpoint's port is fixed (80) and no setting changes it, so the test server is the HTTP
proxy that the client's ``requests`` session takes from ``HTTP_PROXY``: it receives every request for localhost, and
for the storage host that DownloadDataset redirects to, with its absolute URL. Kaggle itself is never contacted.
"""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from conftest import face_like, tiny_params, white_mask
from unmasking import data, paths
from unmasking.data import CredentialsError, DataError

DATASET = "prasoonkottarathil/face-mask-lite-dataset"
USERNAME = "someone-xyz"
SECRET = "k3y-0123456789abcdef-SECRET"
BASIC = base64.b64encode(f"{USERNAME}:{SECRET}".encode()).decode()  # what the client sends for a legacy key
STORAGE = "storage.kaggle.test"  # where DownloadDataset redirects, as Kaggle does to its signed storage URLs
N_CHOSEN = 12 + 10  # the subset of dl_params() plus a small margin, never the whole 10,000 pairs


def png_bytes(file_name: str) -> bytes:
    """The generated image the server holds for a Face Mask Lite file name."""
    u = face_like(np.random.default_rng(int(file_name[-8:-4])), 64)
    buf = io.BytesIO()
    Image.fromarray(white_mask(u) if file_name.startswith("with_mask/") else u).save(buf, format="PNG")
    return buf.getvalue()


class KaggleServer:
    """Kaggle's API as the real client sees it: DownloadDataset answers 302 to a storage URL ending in the file's name
    (``<name>.zip`` for the files in ``zipped``), or 404 for the files in ``missing``; the storage GET returns the
    bytes. ``leaky`` quotes the credentials it received in its error messages (what the project must scrub);
    ``refuse`` answers every download 401. Records the files requested (``downloads``) and fetched (``fetched``)."""

    def __init__(self):
        self.missing, self.zipped, self.zip_members = set(), set(), {}
        self.leaky = self.refuse = False
        self.downloads, self.fetched, self.other = [], [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                server.rpc(self)

            def do_GET(self):
                server.storage(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def reply(h, status, body=b"", content_type="application/json", headers=()):
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def error(self, h, code, message):
        auth = h.headers.get("Authorization") or ""
        if self.leaky:  # a careless server that echoes what it received
            raw = auth.split(" ", 1)[-1]
            decoded = base64.b64decode(raw).decode(errors="replace") if auth.startswith("Basic ") else raw
            message = f"{message} (credentials: {decoded}, header: {auth})"
        self.reply(h, code, json.dumps({"code": code, "message": message}).encode())

    def rpc(self, h):
        url = urlsplit(h.path)
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"{}")
        auth = h.headers.get("Authorization")
        if url.netloc != "localhost":
            self.other.append(h.path)
            return self.reply(h, 502, b"{}")
        if url.path == "/api/v1/security.OAuthService/IntrospectToken":
            ok = body.get("token") == SECRET
            return self.reply(h, 200, json.dumps({"active": ok, "username": USERNAME if ok else ""}).encode())
        if url.path != "/api/v1/datasets.DatasetApiService/DownloadDataset":
            self.other.append(h.path)
            return self.error(h, 404, f"no such RPC {url.path}")
        name = body.get("fileName", "")
        self.downloads.append((f"{body.get('ownerSlug')}/{body.get('datasetSlug')}", name))
        if self.refuse or auth not in (f"Basic {BASIC}", f"Bearer {SECRET}"):
            return self.error(h, 401, "Unauthenticated")
        if name in self.missing:
            return self.error(h, 404, f"File {name} not found in dataset")
        leaf = Path(name).name + (".zip" if name in self.zipped else "")
        where = f"http://{STORAGE}/kaggle-data-sets/{quote(name.rsplit('/', 1)[0])}/{quote(leaf)}"
        self.reply(h, 302, b"", headers=[("Location", f"{where}?X-Goog-Signature=0123abcd")])

    def storage(self, h):
        url = urlsplit(h.path)
        if url.netloc != STORAGE or not url.path.startswith("/kaggle-data-sets/"):
            self.other.append(h.path)
            return self.reply(h, 404, b"{}")
        rel = unquote(url.path[len("/kaggle-data-sets/"):])
        self.fetched.append(rel)
        name = rel[: -len(".zip")] if rel.endswith(".zip") else rel
        if name not in self.zipped:
            return self.reply(h, 200, png_bytes(name), "image/png")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(self.zip_members.get(name, Path(name).name), png_bytes(name))
        self.reply(h, 200, buf.getvalue(), "application/zip")


def point_kaggle_at(monkeypatch, tmp_path, proxy_url, credentials="key"):
    """Set the environment so the real client authenticates with planted credentials and talks to ``proxy_url``."""
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "NO_PROXY", "no_proxy", "HTTPS_PROXY",
              "https_proxy", "ALL_PROXY", "all_proxy", "VERBOSE", "VERBOSE_OUTPUT"):
        monkeypatch.delenv(k, raising=False)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))  # no ~/.kaggle of the machine's
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("http_proxy", proxy_url)
    if credentials == "key":
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    else:
        monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    from kaggle.api import kaggle_api_extended as kae

    # The client reads KAGGLE_API_ENVIRONMENT once, when the module is first imported, into ``KaggleApi.args``;
    # where an earlier test imported it without, set the flag that reading would have set.
    if "--local" not in kae.KaggleApi.args:
        monkeypatch.setattr(kae.KaggleApi, "args", [*kae.KaggleApi.args, "--local"])


@pytest.fixture
def kaggle(monkeypatch, tmp_path):
    """A running Kaggle-like server that the real client, authenticated with a planted key, talks to."""
    with KaggleServer() as server:
        point_kaggle_at(monkeypatch, tmp_path, server.url)
        yield server


def dl_params(**kw):
    return {"source": "kaggle", "kaggle_dataset": DATASET, "local": "", "faces": "",
            "mask": "", "n_pairs": 12, "image_size": 32, "test_fraction": 0.2, "val_fraction": 0.1,
            "one_per_identity": True, "min_pairs": 5, "workers": 1, "indomain_faces": "", "indomain_pairs": 0, **kw}


def chosen_names(seed=1, n=N_CHOSEN):
    """The Face Mask Lite files the project should ask for with ``dl_params()`` and ``seed``."""
    return [name for s in np.random.default_rng(seed).permutation(10_000)[:n] for name in data.fml_names(int(s))]


def test_the_real_client_writes_under_the_requested_folder_named_by_the_url(kaggle, tmp_path, capfd):
    """What the project relies on: path/<dir of file_name>/<name from the URL>, a zip left as is, a chatty print."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    name = chosen_names()[0]
    kaggle.zipped = {chosen_names()[1]}
    api = KaggleApi()
    api.authenticate()
    api.dataset_download_file(DATASET, name, path=str(tmp_path / "p"), quiet=True)
    api.dataset_download_file(DATASET, chosen_names()[1], path=str(tmp_path / "p"), quiet=True)
    assert (tmp_path / "p" / name).read_bytes() == png_bytes(name)
    assert (tmp_path / "p" / (chosen_names()[1] + ".zip")).is_file()
    assert "Dataset URL" in capfd.readouterr().out  # printed on every call, quiet=True or not


@pytest.mark.parametrize("credentials", ["key", "token"])
def test_downloads_only_the_chosen_pairs(kaggle, tmp_path, monkeypatch, capfd, credentials):
    point_kaggle_at(monkeypatch, tmp_path, kaggle.url, credentials)
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert s["used"] == 12 and s["source"] == "kaggle" and s["rejected"] == 0
    assert len(kaggle.downloads) == 2 * N_CHOSEN
    assert all(ds == DATASET for ds, _ in kaggle.downloads)
    assert sorted(f for _, f in kaggle.downloads) == sorted(chosen_names())
    masked = [f for _, f in kaggle.downloads if f.startswith("with_mask/with-mask-default-mask-seed")]
    assert len(masked) == N_CHOSEN
    raw = tmp_path / "raw" / "face-mask-lite"
    for name in chosen_names():
        assert (raw / name).read_bytes() == png_bytes(name)
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()) == sorted(chosen_names())
    assert (tmp_path / "subset" / paths.MANIFEST_NAME).is_file()
    assert kaggle.other == []
    out, err = capfd.readouterr()
    assert "Dataset URL" not in out + err and "seed" not in out + err  # no per-file chatter


def test_a_rerun_downloads_nothing(kaggle, tmp_path):
    data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    seen = len(kaggle.downloads), len(kaggle.fetched)
    s = data.build_subset(dl_params(), 1, tmp_path / "subset2", raw_dir=tmp_path / "raw", progress=False)
    assert (len(kaggle.downloads), len(kaggle.fetched)) == seen == (2 * N_CHOSEN, 2 * N_CHOSEN)
    assert s["used"] == 12


def test_missing_files_are_counted(kaggle, tmp_path):
    missing = chosen_names(n=3)[1]
    kaggle.missing = {missing}
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert s["used"] == 12
    assert s["rejected_by_reason"]["download failed"] == 1
    (failed,) = [r for r in s["rejected_files"] if r["reason"] == "download failed"]
    assert failed["file"] == missing and "HTTPError" in failed["detail"] and "not found" in failed["detail"]
    assert not (tmp_path / "raw" / "face-mask-lite" / missing).exists()


def test_a_zip_wrapped_file_is_unpacked(kaggle, tmp_path):
    names = chosen_names()
    kaggle.zipped = {names[0], names[3]}
    kaggle.zip_members = {names[3]: names[3]}  # stored under its path rather than its base name
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert s["used"] == 12 and s["rejected"] == 0
    assert {names[0] + ".zip", names[3] + ".zip"} <= set(kaggle.fetched)
    raw = tmp_path / "raw" / "face-mask-lite"
    assert (raw / names[0]).read_bytes() == png_bytes(names[0])
    assert (raw / names[3]).read_bytes() == png_bytes(names[3])
    assert not list(raw.rglob("*.zip"))


def test_a_zip_member_escaping_the_folder_is_refused(kaggle, tmp_path):
    name = chosen_names()[0]
    kaggle.zipped, kaggle.zip_members = {name}, {name: "../../../escaped.png"}
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert s["used"] == 12 and s["rejected_by_reason"]["download failed"] == 1
    (failed,) = s["rejected_files"]
    assert failed["file"] == name and "escapes" in failed["detail"]
    assert not list(tmp_path.rglob("escaped.png"))
    assert not (tmp_path / "raw" / "face-mask-lite" / name).exists()


def test_a_planted_key_appears_in_no_output(kaggle, tmp_path, capfd):
    """A server that quotes the credentials in its error messages: the key reaches no output, summary or error."""
    kaggle.leaky = True
    kaggle.missing = set(chosen_names(n=2))
    s = data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert s["rejected_by_reason"]["download failed"] == 4
    assert all("***" in r["detail"] for r in s["rejected_files"])  # the message was there, scrubbed
    kaggle.refuse = True
    with pytest.raises(DataError) as e:
        data.build_subset(dl_params(), 2, tmp_path / "subset2", raw_dir=tmp_path / "raw2", progress=False)
    assert "Kaggle downloads keep failing" in str(e.value)
    out, err = capfd.readouterr()
    texts = [json.dumps(s), (tmp_path / "subset" / paths.SUMMARY_NAME).read_text(), str(e.value), repr(e.value),
             out, err]
    for text in texts:
        assert SECRET not in text and BASIC not in text


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("credentials", ["key", "token"])
def test_network_failure_is_one_clear_message_without_the_key(tmp_path, monkeypatch, capfd, credentials):
    point_kaggle_at(monkeypatch, tmp_path, closed_port(), credentials)  # nothing listens there
    with pytest.raises(DataError) as e:
        data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert not isinstance(e.value, CredentialsError)
    assert str(e.value).startswith("Kaggle could not be reached") and "make repro FACES=" in str(e.value)
    out, err = capfd.readouterr()
    assert SECRET not in str(e.value) + out + err


def test_no_credentials_says_what_to_set(tmp_path, monkeypatch):
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nothing"))
    with pytest.raises(CredentialsError) as e:
        data.build_subset(dl_params(), 1, tmp_path / "subset", raw_dir=tmp_path / "raw", progress=False)
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in str(e.value) and "make repro FACES=" in str(e.value)


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
    """The download stage with the real client and a planted key, against a server that refuses every download and
    quotes the credentials: the key appears in no output, report or file."""
    params = tiny_params(tmp_path, source="kaggle")
    drop = ("KAGGLE", "NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "VERBOSE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    with KaggleServer() as server:
        server.leaky = server.refuse = True
        env.update(KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=SECRET, KAGGLE_API_ENVIRONMENT="LOCALHOST",
                   KAGGLE_CONFIG_DIR=str(tmp_path / "home" / ".kaggle"), HOME=str(tmp_path / "home"),
                   HTTP_PROXY=server.url, http_proxy=server.url)
        r = subprocess.run([sys.executable, "-m", "unmasking.stage", "download", "--params", str(params), "--data-dir",
                            str(tmp_path / "data"), "--reports-dir", str(tmp_path / "reports")], capture_output=True,
                           text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert server.downloads and "Kaggle downloads keep failing" in r.stderr and "***" in r.stderr
    assert SECRET not in r.stdout + r.stderr and BASIC not in r.stdout + r.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml"]
    assert any(p.suffix == ".ipynb" for p in written) and any(p.suffix == ".html" for p in written)
    for p in written:
        text = p.read_bytes()
        assert SECRET.encode() not in text, p
        assert BASIC.encode() not in text, p
        assert USERNAME.encode() not in text, p
