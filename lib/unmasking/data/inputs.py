"""The data stage's external inputs and their fingerprint, ``data/inputs.json``: new faces or templates rerun it.

DVC tracks what lies inside the project; the faces folder, the local copy, the mask templates and the generated faces
are passed in from anywhere (``make repro FACES=... MASK=...``). The ``inputs`` stage runs on every ``dvc repro`` (in a
second or two) and writes a fingerprint of each input the ``download`` section uses: how many files, how many bytes,
and one SHA-256 over every file's path (relative to the input), size and content (size and modification time instead
of the content for files over 64 MB, such as a 21 GB archive). The download stage depends on that file, so it reruns
exactly when an input's content changed, and ``inputs.json`` records what the committed run was made from.

    python -m unmasking.data.inputs [--params FILE] [--out data/inputs.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from unmasking import paths

LARGE_FILE = 64 * 1024 * 1024


def used_inputs(dl: dict[str, Any]) -> dict[str, str]:
    """The external paths the ``download`` section ``dl`` reads, by key ("" and unused keys left out)."""
    keys = {"faces": "faces", "local": "local"}.get(dl["source"])
    used = {keys: dl[keys]} if keys else {}
    indomain = bool(dl["indomain_faces"])
    if dl["source"] == "faces" or indomain:
        used.update({k: dl[k] for k in ("mask", "templates") if dl[k]})
    if indomain:
        used["indomain_faces"] = dl["indomain_faces"]
    return used


def fingerprint(path: Path) -> dict[str, Any]:
    """Files, bytes and one SHA-256 over every file's relative path, size and content (see the module text)."""
    path = Path(path)
    if not path.exists():
        return {"exists": False}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    total = 0
    for f in files:
        st = f.stat()
        total += st.st_size
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{st.st_size}\0".encode())
        if st.st_size > LARGE_FILE:
            h.update(str(st.st_mtime_ns).encode())
        else:
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return {"exists": True, "files": len(files), "bytes": total, "sha256": h.hexdigest()}


def write_inputs(dl: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the fingerprint of every used input to ``out`` (unchanged bytes when nothing changed)."""
    doc = {"source": dl["source"], "inputs": {k: {"path": v, **fingerprint(paths.resolve(v))}
                                              for k, v in used_inputs(dl).items()}}
    text = json.dumps(doc, indent=2) + "\n"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or out.read_text() != text:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return doc


def main(argv: list[str] | None = None) -> int:
    from unmasking import params as P

    ap = argparse.ArgumentParser(prog="python -m unmasking.data.inputs", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=paths.DATA_DIR / "inputs.json")
    args = ap.parse_args(argv)
    doc = write_inputs(P.load(args.params)["download"], args.out)
    for k, v in doc["inputs"].items():
        state = f"{v['files']} files, {v['bytes']:,} bytes" if v["exists"] else "MISSING"
        print(f"{k}: {v['path']} ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
