"""The git repository holding the manifests: one way to run git, with errors that name the fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

from slipway.errors import ConfigError


def git(cwd: Path, *args: str, fix: str = "") -> str:
    """``git ARGS`` in ``cwd``; its output, or :class:`ConfigError` naming the command and fix."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise ConfigError(
            f"git {' '.join(args[:2])} failed: {done.stderr.strip()}",
            fix or "run inside the repository that holds the environment manifests",
        )
    return done.stdout


def show(root: Path, ref: str, relative: str) -> str | None:
    """The file ``relative`` at ``ref``, or None when it is not there."""
    done = subprocess.run(
        ["git", "show", f"{ref}:{relative}"], cwd=root, capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def toplevel(path: Path) -> Path:
    """The root of the repository holding ``path`` (a directory)."""
    return Path(git(path, "rev-parse", "--show-toplevel").strip())
