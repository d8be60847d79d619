"""``slipway rollback ENV``: back to the last version that deployed well there.

The manifest is rewritten as a promotion is (only ``version`` and ``digest``), to the newest
earlier version whose deploy in ENV succeeded, or to ``--to``. With ``direct`` the change is
committed at once (for emergencies); otherwise it is left for a pull request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slipway.errors import ConfigError, PromotionError
from slipway.manifests import load_manifest, manifest_path
from slipway.promote.history import history
from slipway.promote.promotion import promote
from slipway.promote.repository import git
from slipway.registry import Registry


def last_good(entries: list[dict[str, Any]], current: str | None) -> str | None:
    """The newest version, other than ``current``, whose deploy succeeded; None if none."""
    for entry in entries:
        if entry["version"] not in (None, current) and entry["deploy"] == "success":
            return str(entry["version"])
    return None


def title(model: str, version: str, environment: str) -> str:
    return f"Roll back {model} to v{version} in {environment}"


def rollback(
    environment: str,
    registry: Registry,
    directory: Path,
    to: str | None = None,
    direct: bool = False,
) -> dict[str, Any]:
    """Point ENV back at the last good version (or ``to``); commit it with ``direct``."""
    path = manifest_path(environment, directory)
    manifest = load_manifest(path)
    current = str(manifest.version) if manifest.version is not None else None
    entries = history(environment, registry, directory)["entries"]
    target = to or last_good(entries, current)
    if target is None:
        raise PromotionError(
            f"{environment} has no earlier version that deployed successfully",
            "name one with --to N (a version that passed its gate and was packaged)",
        )
    if target == current:
        raise PromotionError(
            f"{environment} already names v{target}", "name another version with --to N"
        )
    before = path.read_bytes()
    done = promote(environment, int(target), registry, directory)
    done["title"] = title(manifest.model, target, environment)
    done["committed"] = None
    if direct:
        try:
            done["committed"] = _commit(path, f"{done['title']} (direct)", done["rendered"])
        except ConfigError:
            path.write_bytes(before)  # nothing half done: the manifest is as it was
            raise
    return done


def _commit(path: Path, message: str, rendered: dict[str, str]) -> str:
    """Commit the manifest, and a kubernetes target's rendered objects with it."""
    fix = "commit the manifest yourself, or fix the repository and run rollback again"
    names = [path.name, *(os.path.relpath(name, path.parent) for name in rendered)]
    git(path.parent, "add", "--", *names, fix=fix)
    git(path.parent, "commit", "-m", message, "--", *names, fix=fix)
    return git(path.parent, "rev-parse", "HEAD").strip()
