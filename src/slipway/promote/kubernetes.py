"""``slipway render ENV``: the Kubernetes objects of a ``target: kubernetes`` manifest, in git.

For ``environments/ENV.yaml`` the render writes, under ``environments/kubernetes/``:

- ``ENV/``: a Deployment running the version's image by tag and digest (readiness on
  ``/readyz``, liveness on ``/healthz``, resource requests and limits), a Service, a
  HorizontalPodAutoscaler, a PodDisruptionBudget and the ``kustomization.yaml`` listing them;
- ``argocd/ENV.yaml``: an Argo CD ``Application`` syncing that folder;
- ``flux/ENV.yaml``: a Flux ``GitRepository`` and ``Kustomization`` applying it.

The output is a pure function of the manifest: fixed key order, no timestamps, so rendering
twice gives the same bytes and :func:`differences` can tell whether the committed files are
what the manifest renders. Every core object is validated against the schemas of
:data:`KUBERNETES_VERSION` (``kubernetes-validate``, strict: unknown fields fail) before
anything is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from slipway.errors import ConfigError, ServingError
from slipway.fsutil import atomic_write_text
from slipway.manifests import Kubernetes, Manifest, load_manifest, manifest_path
from slipway.progress import Progress

KUBERNETES_VERSION = "1.33.0"  # the schemas rendered objects are validated against
RENDER_DIR = "kubernetes"  # under environments/
CONTROLLERS = ("argocd", "flux")  # environments/kubernetes/CONTROLLER/ENV.yaml
# Tag on a version: REPO:TAG@sha256:DIGEST, the image the containerize job pushed from its Bento
# (`slipway package --image`); a kubernetes target's promotion writes it to `kubernetes.image`.
IMAGE_TAG = "slipway.image"
PORT = 3000  # `bentoml serve`'s port in the image `bentoml containerize` builds
BENTO_UID = 1034  # the `bentoml` user of that image's Dockerfile
LOG_DIR = "/home/bentoml/predictions"  # the prediction log, on an emptyDir volume
HEADER = (
    "# Rendered by `slipway render {environment}` from environments/{environment}.yaml.\n"
    "# Do not edit: change the manifest and render again (a promotion does both).\n"
)


def _names(manifest: Manifest) -> tuple[str, dict[str, str], dict[str, str]]:
    """The objects' name, their labels, and the subset that selects the pods."""
    name = f"{manifest.model}-{manifest.environment}"
    selector = {"app.kubernetes.io/name": manifest.model, "app.kubernetes.io/instance": name}
    labels = {
        **selector,
        "app.kubernetes.io/part-of": "slipway",
        "app.kubernetes.io/managed-by": "slipway",
        "slipway.environment": manifest.environment,
    }
    return name, labels, selector


def _spec(manifest: Manifest) -> Kubernetes:
    if manifest.target != "kubernetes" or manifest.kubernetes is None:
        raise ConfigError(
            f"environments/{manifest.environment}.yaml has target {manifest.target}: "
            "there is nothing to render",
            "set `target: kubernetes` and a `kubernetes:` section (README: A Kubernetes "
            "target for Argo CD and Flux), or deploy it with `slipway deploy`",
        )
    spec = manifest.kubernetes
    if manifest.version is None or spec.image is None:
        raise ConfigError(
            f"environments/{manifest.environment}.yaml names no "
            f"{'version' if manifest.version is None else 'kubernetes.image'} yet: "
            "there is no image to run",
            "promote a version whose image the containerize job pushed: "
            f"slipway promote {manifest.environment} --version N",
        )
    return spec


def objects(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """The environment's core objects, by file name (the kustomization lists them in order)."""
    spec = _spec(manifest)
    name, labels, selector = _names(manifest)
    meta = {"name": name, "namespace": spec.namespace, "labels": labels}
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
    container = {
        "name": "service",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "SLIPWAY_LOG_DIR", "value": LOG_DIR}],
        "readinessProbe": {**probe, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
            "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit},
        },
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "predictions", "mountPath": LOG_DIR}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        # No `replicas`: the HorizontalPodAutoscaler owns the count, a sync must not reset it.
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": {**labels, "app.kubernetes.io/version": f"v{manifest.version}"},
                    "annotations": {"slipway.bento-digest": str(manifest.digest)},
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": BENTO_UID},
                    "containers": [container],
                    "volumes": [{"name": "predictions", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.cpu_target_percent,
                        },
                    },
                }
            ],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"minAvailable": spec.min_available, "selector": {"matchLabels": selector}},
    }
    return {
        "deployment.yaml": deployment,
        "service.yaml": service,
        "hpa.yaml": autoscaler,
        "pdb.yaml": budget,
    }


def folder(environment: str, directory: Path) -> str:
    """The environment's folder as Argo CD and Flux name it: relative to the repository root,
    where the manifests' folder sits."""
    return f"{directory.resolve().name}/{RENDER_DIR}/{environment}"


def controllers(manifest: Manifest, directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The Argo CD Application and the Flux GitRepository + Kustomization for the folder."""
    spec = _spec(manifest)
    name, labels, _ = _names(manifest)
    path = folder(manifest.environment, directory)
    application = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "namespace": "argocd",
            "labels": labels,
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": "default",
            "source": {"repoURL": spec.git_url, "targetRevision": spec.git_revision, "path": path},
            "destination": {
                "server": "https://kubernetes.default.svc",
                "namespace": spec.namespace,
            },
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true"],
            },
        },
    }
    repository = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": "flux-system", "labels": labels},
        "spec": {"interval": "1m", "url": spec.git_url, "ref": {"branch": spec.git_revision}},
    }
    kustomization = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system", "labels": labels},
        "spec": {
            "interval": "5m",
            "path": f"./{path}",
            "prune": True,
            "wait": True,
            "timeout": "5m",
            "sourceRef": {"kind": "GitRepository", "name": name},
        },
    }
    return {"argocd": [application], "flux": [repository, kustomization]}


def _dump(environment: str, documents: list[dict[str, Any]]) -> str:
    body = "---\n".join(
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=False) for doc in documents
    )
    return HEADER.format(environment=environment) + body


def validate(found: dict[str, dict[str, Any]], version: str = KUBERNETES_VERSION) -> None:
    """Each object against Kubernetes ``version``'s schemas (strict); the first invalid one is a
    :class:`ConfigError` naming the file, the field and the problem."""
    import kubernetes_validate

    for file, obj in found.items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            field = ".".join(str(part) for part in exc.path) or "(top level)"
            raise ConfigError(
                f"{file}: {obj.get('kind')} {obj.get('metadata', {}).get('name')} is not valid "
                f"for Kubernetes {version}: {field}: {exc.message}",
                "correct the `kubernetes:` value it comes from in the manifest",
            ) from exc
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise ConfigError(f"{file}: {exc.message}", "render a kind Kubernetes knows") from exc


def files(environment: str, directory: Path) -> dict[Path, str]:
    """Every rendered file (path → text) of ``environments/ENV.yaml``, validated."""
    manifest = load_manifest(manifest_path(environment, directory))
    found = objects(manifest)
    validate(found)
    root = directory / RENDER_DIR
    texts = {root / environment / file: _dump(environment, [obj]) for file, obj in found.items()}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(found),
    }
    texts[root / environment / "kustomization.yaml"] = _dump(environment, [kustomization])
    for controller, documents in controllers(manifest, directory).items():
        texts[root / controller / f"{environment}.yaml"] = _dump(environment, documents)
    return texts


def differences(environment: str, directory: Path) -> list[str]:
    """The rendered files whose committed text differs from what the manifest renders (missing
    ones too), and stray files in the environment's folder; empty when they agree."""
    expected = files(environment, directory)
    changed = [
        str(path)
        for path, text in expected.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    own = directory / RENDER_DIR / environment
    stray = [str(p) for p in sorted(own.glob("*")) if p.is_file() and p not in expected]
    return changed + stray


def render(environment: str, directory: Path) -> dict[str, Any]:
    """Write the rendered files (each atomically; a stray file in the environment's folder is
    removed, since the kustomization would not list it); what changed."""
    expected = files(environment, directory)
    written = []
    for path, text in expected.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            written.append(str(path))
    own = directory / RENDER_DIR / environment
    removed = [p for p in sorted(own.glob("*")) if p.is_file() and p not in expected]
    for path in removed:
        path.unlink()
    return {
        "environment": environment,
        "kubernetes_version": KUBERNETES_VERSION,
        "files": [str(p) for p in expected],
        "written": written,
        "removed": [str(p) for p in removed],
    }


def owned(relative: str, environment: str, folder_name: str = "environments") -> bool:
    """Whether the repository path ``relative`` is one of ENV's rendered files."""
    root = f"{folder_name}/{RENDER_DIR}/"
    if not relative.startswith(root):
        return False
    rest = relative.removeprefix(root)
    return rest.startswith(f"{environment}/") or rest in {
        f"{c}/{environment}.yaml" for c in CONTROLLERS
    }


def _kubectl(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``kubectl ARGS`` against the cluster of ``KUBECONFIG``."""
    return subprocess.run(
        ["kubectl", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout + 30,
    )


def check_rollout(
    manifest: Manifest,
    timeout: float,
    env: dict[str, str] | None = None,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """``slipway deploy ENV`` for a kubernetes target: Argo CD or Flux applies the merged
    objects; this waits until the cluster's Deployment runs the manifest's image and its
    rollout is complete (``kubectl rollout status``).

    Without a cluster (no ``KUBECONFIG``) nothing can be checked: the status is ``skipped``
    and the reason says so. A rollout that does not finish within ``timeout`` seconds, or a
    Deployment that never gets the image, is ``failure``."""
    env = dict(os.environ) if env is None else env
    spec = _spec(manifest)
    name, _, _ = _names(manifest)
    document: dict[str, Any] = {
        "schema": "slipway.deploy/1",
        "target": "kubernetes",
        "environment": manifest.environment,
        "model": manifest.model,
        "version": str(manifest.version),
        "digest": manifest.digest,
        "image": spec.image,
        "deployment": f"{spec.namespace}/{name}",
    }
    if not env.get("KUBECONFIG"):
        reason = (
            "no KUBECONFIG: no cluster to check; Argo CD or Flux applies "
            f"environments/{RENDER_DIR}/{manifest.environment}/ as merged"
        )
        return {**document, "status": "skipped", "reason": reason}
    if shutil.which("kubectl") is None:
        raise ServingError(
            "KUBECONFIG is set but kubectl is not installed",
            "install kubectl on the runner (Debian: apt-get install kubernetes-client)",
        )
    where = ["--namespace", spec.namespace]
    deadline = time.monotonic() + timeout
    running, trouble = None, ""
    while time.monotonic() < deadline:  # the controller applies the merge when it syncs
        image = "jsonpath={.spec.template.spec.containers[0].image}"
        asked = ["get", "deployment", name, *where, "--request-timeout=20s", "-o", image]
        done = _kubectl(*asked, timeout=30)
        running = done.stdout.strip() if done.returncode == 0 else None
        trouble = (done.stderr.strip().splitlines() or [""])[-1]
        if running == spec.image:
            break
        progress(f"waiting for {name} to run {spec.image} (now: {running or trouble})")
        time.sleep(5)
    if running != spec.image:
        now = f"it runs {running}" if running else f"kubectl: {trouble or 'no such Deployment'}"
        reason = f"{name} never ran {spec.image} within {timeout:.0f} s ({now})"
        return {**document, "status": "failure", "reason": reason}
    left = max(1, int(deadline - time.monotonic()))
    rollout = ["rollout", "status", f"deployment/{name}", *where, f"--timeout={left}s"]
    status = _kubectl(*rollout, timeout=left)
    if status.returncode != 0:
        reason = (status.stderr or status.stdout).strip() or "the rollout did not complete"
        return {**document, "status": "failure", "reason": reason}
    return {**document, "status": "success", "reason": status.stdout.strip()}
