"""``slipway status``: for each environment, what git says, what serves, where the alias points.

Any disagreement is a finding with its fix; the command exits 1 when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway.errors import ConfigError, RegistryError
from slipway.fsutil import read_json
from slipway.manifests import ENVIRONMENTS, load_manifest, manifest_path
from slipway.registry import Registry
from slipway.serve.server import server_state

SCHEMA = "slipway.status/1"


def _serving(environment: str) -> dict[str, Any] | None:
    """The server ``slipway serve``/``deploy`` recorded, asked what it serves; None if none."""
    import requests

    state = server_state(environment)
    if not state.is_file():
        return None
    running = read_json(state)
    try:
        metadata = requests.get(f"{running['url']}/metadata", timeout=5).json()
        version = str(metadata.get("version"))
    except (requests.RequestException, ValueError):
        return {"url": running["url"], "version": None, "answering": False}
    return {"url": running["url"], "version": version, "answering": True}


def environment_status(environment: str, registry: Registry, directory: Path) -> dict[str, Any]:
    """One environment's three sources of truth and what disagrees between them."""
    path = manifest_path(environment, directory)
    findings: list[dict[str, str]] = []
    try:
        manifest = load_manifest(path)
    except ConfigError as exc:
        return {"environment": environment, "findings": [{"problem": exc.message, "fix": exc.hint}]}
    declared = str(manifest.version) if manifest.version is not None else None
    serving = _serving(environment)
    alias_known = True
    try:
        ref = registry.alias(manifest.model, environment)
        alias = ref.version if ref is not None else None
    except RegistryError as exc:
        alias, alias_known = None, False
        findings.append({"problem": exc.message, "fix": exc.hint})
    served = serving["version"] if serving else None
    if manifest.target == "kubernetes":  # the cluster runs what is rendered: git must agree
        findings += _rendered_findings(environment, directory)
    elif serving and not serving["answering"]:
        findings.append(
            {
                "problem": f"the {environment} server at {serving['url']} does not answer",
                "fix": f"slipway deploy {environment}",
            }
        )
    elif declared != served:
        findings.append(
            {
                "problem": f"git says v{declared}, the service runs "
                + (f"v{served}" if served else "nothing"),
                "fix": f"slipway deploy {environment}, or merge the open revert pull request",
            }
        )
    if alias_known and declared != alias:
        findings.append(
            {
                "problem": f"git says v{declared}, the alias @{environment} points at "
                + (f"v{alias}" if alias else "nothing"),
                "fix": f"slipway deploy {environment} moves the alias with a passing deploy",
            }
        )
    return {
        "environment": environment,
        "manifest": {"version": declared, "digest": manifest.digest},
        "serving": serving,
        "alias": alias,
        "findings": findings,
    }


def _rendered_findings(environment: str, directory: Path) -> list[dict[str, str]]:
    """A kubernetes target's committed objects that are not what its manifest renders."""
    from slipway.promote import kubernetes

    try:
        differ = kubernetes.differences(environment, directory)
    except ConfigError as exc:
        return [{"problem": exc.message, "fix": exc.hint}]
    if not differ:
        return []
    return [
        {
            "problem": f"the rendered objects differ from the manifest: {', '.join(differ)}",
            "fix": f"slipway render {environment}, and commit them",
        }
    ]


def status(registry: Registry, directory: Path) -> dict[str, Any]:
    """Every environment's status; ``agree`` is False when any of them has a finding."""
    environments = [environment_status(e, registry, directory) for e in ENVIRONMENTS]
    return {
        "schema": SCHEMA,
        "environments": environments,
        "agree": not any(e["findings"] for e in environments),
    }
