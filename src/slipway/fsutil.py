"""Small file helpers: atomic writes, digests and JSON documents."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("model/slipway.yaml")  # the model project, from the repository root


def state_dir() -> Path:
    """Where Slipway keeps its state: ``SLIPWAY_HOME`` (default ``.slipway``), read when called."""
    return Path(os.environ.get("SLIPWAY_HOME", ".slipway")).resolve()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON document atomically, keys in insertion order, UTF-8."""
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON document written by :func:`write_json`."""
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path, files: list[Path] | None = None) -> str:
    """SHA-256 over the relative paths and contents of ``files`` (default: all under ``root``)."""
    chosen = files if files is not None else [p for p in root.rglob("*") if p.is_file()]
    digest = hashlib.sha256()
    for path in sorted(chosen, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode() + b"\n")
    return digest.hexdigest()
