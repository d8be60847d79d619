"""The prediction log: every served prediction as a JSON line, never failing or blocking a request.

The drift check reads these files later; delayed labels join them by release id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pydantic_core

from slipway.fsutil import state_dir

# Smoke tests send their records with ids starting so: the log keeps them (they were served),
# and whoever reads it for traffic (canary reports, drift checks) leaves them out.
SMOKE_ID_PREFIX = "slipway-smoke:"


def is_smoke(record: Mapping[str, Any]) -> bool:
    """Whether a logged prediction answered a smoke test rather than real traffic."""
    return str(record.get("release_id", "")).startswith(SMOKE_ID_PREFIX)


class PredictionLog:
    """Append JSON lines from a bounded queue on a background thread; rotate by size.

    :meth:`append` never blocks and never raises: when the records already waiting plus the
    new batch would pass ``capacity``, the batch is dropped and its records counted in
    ``dropped``. The writer rotates ``predictions.jsonl`` to
    ``predictions-<UTC time>-<n>.jsonl`` before it would pass ``max_bytes``, keeping ``keep``
    old files. A write that fails is counted in ``errors`` and its records are lost. Several
    processes (a server's workers) may share one directory: their writes take turns.
    """

    FILENAME = "predictions.jsonl"
    LOCKNAME = "predictions.lock"  # held by the worker writing, when several share the file

    def __init__(
        self, directory: Path, max_bytes: int = 10 << 20, keep: int = 20, capacity: int = 20_000
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.keep = keep
        self.capacity = capacity
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._rotations = 0
        self._pending = 0  # records queued or being written
        self._batches: deque[Sequence[Mapping[str, Any]]] = deque()
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.directory / self.FILENAME

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue one batch of records, one per prediction; drop and count it when full."""
        with self._changed:
            if self._stopping or self._pending + len(records) > self.capacity:
                self.dropped += len(records)
                return
            self._pending += len(records)
            self._batches.append(records)
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return not self._pending

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        self.flush(timeout)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
        }

    def _run(self) -> None:
        handle: IO[bytes] | None = None
        while True:
            with self._changed:
                while not self._batches and not self._stopping:
                    self._changed.wait()
                if not self._batches:
                    break
                batches = list(self._batches)
                self._batches.clear()
            count = sum(len(batch) for batch in batches)
            try:
                lines = [_line(record) for batch in batches for record in batch]
                handle = self._write(handle, lines)
                self.written += count
            except Exception:
                self.errors += 1
                if handle is not None:
                    with contextlib.suppress(Exception):
                        handle.close()
                handle = None
            with self._changed:
                self._pending -= count
                self._changed.notify_all()
        if handle is not None:
            handle.close()

    def _write(self, handle: IO[bytes] | None, lines: list[bytes]) -> IO[bytes]:
        """Append ``lines``; rotate first whenever the next line would pass ``max_bytes``.

        Every worker of a server appends to the same file: each write holds an exclusive
        lock on ``predictions.lock``, reopens the file when another worker rotated it, and
        counts the size the file really has, so lines never interleave and one rotates.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / self.LOCKNAME):
            if handle is None or handle.closed or not _same_file(handle, self.path):
                if handle is not None:
                    handle.close()
                handle = self.path.open("ab")
            size = os.fstat(handle.fileno()).st_size
            chunk: list[bytes] = []
            for line in lines:
                if size and size + len(line) > self.max_bytes:
                    handle.write(b"".join(chunk))
                    handle.close()
                    self._rotate()
                    handle = self.path.open("ab")
                    size, chunk = 0, []
                chunk.append(line)
                size += len(line)
            handle.write(b"".join(chunk))
            handle.flush()
        return handle

    def _rotate(self) -> None:
        self._rotations += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.path.rename(self.directory / f"predictions-{stamp}-{self._rotations:06d}.jsonl")
        rotated = sorted(self.directory.glob("predictions-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created when missing), across processes."""
    with path.open("ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _same_file(handle: IO[bytes], path: Path) -> bool:
    """Whether ``handle`` is still open on the file at ``path`` (not rotated away)."""
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except OSError:
        return False


def _line(record: Mapping[str, Any]) -> bytes:
    """One JSON line; dates as ISO strings, anything else unknown as its ``str``."""
    return pydantic_core.to_json(record, serialize_unknown=True, fallback=str) + b"\n"


def log_directory(environment: str) -> Path:
    """``SLIPWAY_LOG_DIR`` when set, else ``$SLIPWAY_HOME/predictions/<environment>``."""
    configured = os.environ.get("SLIPWAY_LOG_DIR", "").strip()
    if configured:
        return Path(configured)
    return state_dir() / "predictions" / environment
