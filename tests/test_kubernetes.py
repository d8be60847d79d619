"""`target: kubernetes`: `slipway render ENV`, its validation, the promotion PR carrying the
rendered files, the rollout check of `slipway deploy`, and the Bento's generated Dockerfile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from slipway.cli import main
from slipway.errors import ConfigError
from slipway.manifests import (
    IMAGE_PATTERN,
    Manifest,
    load_manifest,
    parse_manifest,
    render_manifest,
)
from slipway.promote import kubernetes

REPO = Path(__file__).resolve().parent.parent
REPOSITORY = "registry.example.com/ml/release-risk-service"
GIT_URL = "https://git.example.com/ml/slipway.git"
DIGEST = "sha256:" + "5e" * 32
IMAGE = f"{REPOSITORY}:v3-0123456789ab@sha256:" + "cd" * 32
OBJECTS = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)
    return done.stdout.decode()


def _manifest(environment: str = "staging", **kube: object) -> Manifest:
    """A kubernetes manifest that names version 3 and its image (``kube`` overrides)."""
    base = parse_manifest((REPO / "environments" / f"{environment}.yaml").read_text(), "x")
    return Manifest.model_validate(
        {
            **base.model_dump(by_alias=True),
            "version": 3,
            "digest": DIGEST,
            "target": "kubernetes",
            "kubernetes": {
                "repository": REPOSITORY,
                "git_url": GIT_URL,
                "image": IMAGE,
                **kube,
            },
        }
    )


@pytest.fixture
def environments(tmp_path: Path) -> Path:
    """A copy of environments/ whose staging manifest is a kubernetes target naming v3."""
    directory = tmp_path / "environments"
    shutil.copytree(REPO / "environments", directory)
    (directory / "staging.yaml").write_text(render_manifest(_manifest()))
    return directory


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _render(environments: Path, *extra: str) -> int:
    return main(["render", "staging", "--environments", str(environments), *extra])


# --- the rendered objects --------------------------------------------------------------------


def test_render_writes_the_objects_the_manifest_declares(environments, tmp_path):
    assert _render(environments, "--out", str(tmp_path / "out")) == 0
    folder = environments / "kubernetes" / "staging"
    [deployment] = _docs(folder / "deployment.yaml")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["image"] == IMAGE  # by tag and digest
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert pod["metadata"]["annotations"] == {"slipway.bento-digest": DIGEST}
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "v3"
    assert pod["spec"]["securityContext"]["runAsUser"] == kubernetes.BENTO_UID

    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    [service] = _docs(folder / "service.yaml")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    [hpa] = _docs(folder / "hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    [pdb] = _docs(folder / "pdb.yaml")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    for obj in (deployment, service, hpa, pdb):
        assert obj["metadata"]["namespace"] == "release-risk"

    [kustomization] = _docs(folder / "kustomization.yaml")
    others = sorted(p.name for p in folder.iterdir() if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == others == sorted(OBJECTS)
    document = json.loads((tmp_path / "out" / "render.json").read_text())
    assert document["kubernetes_version"] == kubernetes.KUBERNETES_VERSION
    assert len(document["written"]) == 7


def test_argo_cd_and_flux_point_at_the_folder(environments):
    assert _render(environments) == 0
    root = environments / "kubernetes"
    [application] = _docs(root / "argocd" / "staging.yaml")
    assert (application["apiVersion"], application["kind"]) == (
        "argoproj.io/v1alpha1",
        "Application",
    )
    assert application["spec"]["source"] == {
        "repoURL": GIT_URL,
        "targetRevision": "main",
        "path": "environments/kubernetes/staging",
    }
    assert application["spec"]["destination"]["namespace"] == "release-risk"
    assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    source, flux = _docs(root / "flux" / "staging.yaml")
    assert (source["kind"], flux["kind"]) == ("GitRepository", "Kustomization")
    assert flux["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert source["spec"] == {"interval": "1m", "url": GIT_URL, "ref": {"branch": "main"}}
    assert flux["spec"]["path"] == "./environments/kubernetes/staging"
    assert flux["spec"]["sourceRef"] == {
        "kind": "GitRepository",
        "name": source["metadata"]["name"],
    }
    assert flux["spec"]["prune"] is True
    # The folder they name is the one render wrote, relative to the repository root.
    assert (environments.parent / application["spec"]["source"]["path"]).is_dir()


def test_rendering_is_deterministic_and_rewrites_nothing_the_second_time(environments, tmp_path):
    first = kubernetes.render("staging", environments)
    texts = {p: Path(p).read_bytes() for p in first["files"]}
    again = kubernetes.render("staging", environments)
    assert again["written"] == [] and {p: Path(p).read_bytes() for p in again["files"]} == texts
    elsewhere = tmp_path / "other" / "environments"
    shutil.copytree(REPO / "environments", elsewhere)
    shutil.copy(environments / "staging.yaml", elsewhere / "staging.yaml")
    kubernetes.render("staging", elsewhere)
    for path, text in texts.items():
        relative = Path(path).relative_to(environments)
        assert (elsewhere / relative).read_bytes() == text  # the manifest alone decides
        assert b"20" + b"26-" not in text  # no timestamps


def test_check_fails_on_any_difference_and_names_the_file(environments, capsys):
    assert _render(environments) == 0
    assert _render(environments, "--check") == 0
    pdb = environments / "kubernetes" / "staging" / "pdb.yaml"
    pdb.write_text(pdb.read_text().replace("minAvailable: 1", "minAvailable: 0"))
    capsys.readouterr()
    assert _render(environments, "--check") == 1
    out = capsys.readouterr().out
    assert f"differs: {pdb}" in out and "run `slipway render staging`" in out
    assert _render(environments) == 0 and _render(environments, "--check") == 0
    stray = environments / "kubernetes" / "staging" / "extra.yaml"
    stray.write_text("kind: ConfigMap\n")
    assert _render(environments, "--check") == 1  # the kustomization would not list it
    assert _render(environments) == 0 and not stray.exists()
    # A manifest change the files do not reflect yet.
    path = environments / "staging.yaml"
    path.write_text(path.read_text().replace("max_replicas: 4", "max_replicas: 6"))
    assert _render(environments, "--check") == 1


def test_a_local_target_or_a_manifest_without_an_image_has_nothing_to_render(environments, capsys):
    assert main(["render", "production", "--environments", str(environments)]) == 2
    assert "target local" in capsys.readouterr().err
    path = environments / "staging.yaml"
    path.write_text(render_manifest(_manifest(image=None)))
    assert _render(environments) == 2
    err = capsys.readouterr().err
    assert "names no kubernetes.image yet" in err and "slipway promote staging" in err
    assert not (environments / "kubernetes" / "staging").exists()


# --- validation ------------------------------------------------------------------------------


def test_every_rendered_object_is_valid_for_the_stated_kubernetes_version():
    found = kubernetes.objects(_manifest())
    kubernetes.validate(found)  # strict: no unknown field either
    assert kubernetes.KUBERNETES_VERSION == "1.33.0"


@pytest.mark.parametrize(
    ("breaks", "named"),
    [
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image=3), "image"),
        (lambda d: d["spec"].update(replicas="two"), "spec.replicas"),
        (lambda d: d["spec"].update(paused_typo=True), "paused_typo"),
        (lambda d: d["spec"].pop("selector"), "selector"),
    ],
)
def test_a_broken_object_fails_validation_with_the_field_named(breaks, named):
    found = kubernetes.objects(_manifest())
    breaks(found["deployment.yaml"])
    with pytest.raises(ConfigError) as caught:
        kubernetes.validate(found)
    message = caught.value.message
    assert message.startswith("deployment.yaml: Deployment release-risk-staging is not valid")
    assert "Kubernetes 1.33.0" in message and named in message


@pytest.mark.parametrize(
    ("kube", "named"),
    [
        ({"max_replicas": 1}, "max_replicas is below min_replicas"),
        ({"min_available": 2}, "min_available must be below min_replicas"),
        ({"cpu_limit": "100m"}, "cpu_limit 100m is below cpu_request 250m"),
        ({"memory_request": "2Gi"}, "memory_limit 1Gi is below memory_request 2Gi"),
        ({"memory_limit": "lots"}, "'lots' is not a memory quantity; write it like 512Mi"),
        ({"image": "elsewhere.example.com/x:v3@" + DIGEST}, "is not in repository"),
        ({"image": f"{REPOSITORY}:v3"}, "kubernetes.image"),
        ({"repository": "Not A Repo"}, "kubernetes.repository"),
        ({"git_url": "git.example.com/ml"}, "kubernetes.git_url"),
        ({"cpu_target_percent": 0}, "kubernetes.cpu_target_percent"),
        ({"replicas": 3}, "kubernetes.replicas"),
    ],
)
def test_invalid_kubernetes_fields_name_the_field_and_the_fix(kube, named):
    text = render_manifest(_manifest())
    document = yaml.safe_load(text)
    document["kubernetes"].update(kube)
    with pytest.raises(ConfigError) as caught:
        parse_manifest(yaml.safe_dump(document), "staging.yaml")
    assert named in caught.value.message


def test_the_section_and_the_target_go_together():
    local = parse_manifest((REPO / "environments" / "staging.yaml").read_text(), "x")
    assert local.target == "local" and local.kubernetes is None
    assert "kubernetes" not in yaml.safe_load(
        render_manifest(local)
    )  # local files stay as they are
    document = yaml.safe_load(render_manifest(_manifest()))
    with pytest.raises(ConfigError, match="set target: kubernetes or remove the section"):
        parse_manifest(yaml.safe_dump({**document, "target": "local"}), "x")
    without = {k: v for k, v in document.items() if k != "kubernetes"}
    with pytest.raises(ConfigError, match="needs a `kubernetes:` section"):
        parse_manifest(yaml.safe_dump(without), "x")
    canary = {
        **document,
        "rollout": {"mode": "canary", "candidate_version": 4, "canary_percent": 5},
    }
    with pytest.raises(ConfigError, match="rollout modes run on the local target only"):
        parse_manifest(yaml.safe_dump(canary), "x")
    assert parse_manifest(render_manifest(_manifest()), "x") == _manifest()  # round trip


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not installed (`make test` installs Debian's kubernetes-client): "
    "the kustomize build is not checked; kubernetes-validate still validates every object",
)
def test_the_folder_builds_with_kubectl_kustomize(environments):
    assert _render(environments) == 0
    built = subprocess.run(
        ["kubectl", "kustomize", str(environments / "kubernetes" / "staging")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(built.stdout) if doc)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    [deployment] = [d for d in yaml.safe_load_all(built.stdout) if d and d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


# --- promotion, check and deploy -------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose main has a kubernetes staging manifest with nothing promoted yet."""
    for name in (
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GITHUB_REPOSITORY",
        "GITHUB_EVENT_PATH",
        "KUBECONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "repo"
    shutil.copytree(REPO / "environments", root / "environments")
    fresh = _manifest().model_dump(by_alias=True)
    fresh.update(version=None, digest=None)
    fresh["kubernetes"]["image"] = None
    (root / "environments" / "staging.yaml").write_text(
        render_manifest(Manifest.model_validate(fresh))
    )
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "manifests")
    _git(root, "checkout", "-q", "-b", "slipway/promote-staging")
    return root


def _promote(repo: Path, tmp_path: Path, *args: str) -> int:
    out = ["--out", str(tmp_path / "out")]
    return main(["promote", *args, "--environments", str(repo / "environments"), *out])


def _rendered(repo: Path) -> list[str]:
    root = repo / "environments" / "kubernetes"
    return sorted(p.relative_to(repo).as_posix() for p in root.rglob("*.yaml"))


def test_a_version_without_an_image_is_not_promoted(repo, versions, tmp_path, capsys):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    before = (repo / "environments" / "staging.yaml").read_bytes()
    assert _promote(repo, tmp_path, "staging", "--version", version) == 1
    assert "has no container image; run the image workflow" in capsys.readouterr().err
    assert (repo / "environments" / "staging.yaml").read_bytes() == before
    assert not (repo / "environments" / "kubernetes").exists()


def test_the_promotion_pull_request_carries_the_rendered_files(repo, versions, github, tmp_path):
    image = f"{REPOSITORY}:v1-0123456789ab@sha256:" + "ef" * 32
    tags = {"slipway.gate": "pass", "slipway.digest": DIGEST, kubernetes.IMAGE_TAG: image}
    version = versions(**tags)
    assert _promote(repo, tmp_path, "staging", "--version", version) == 0
    manifest = load_manifest(repo / "environments" / "staging.yaml")
    assert (manifest.version, manifest.digest, manifest.kubernetes.image) == (1, DIGEST, image)
    [pull] = [p for p in github.pulls.values() if p["head"]["ref"] == "slipway/promote-staging"]
    assert "`kubernetes.image` →" in pull["body"] and "environments/kubernetes/" in pull["body"]
    expected = ["environments/staging.yaml", *_rendered(repo)]
    assert len(expected) == 8
    for path in expected:  # the branch holds exactly what was rendered here
        assert github.file("slipway/promote-staging", path) == (repo / path).read_text(), path
    [deployment] = _docs(repo / "environments" / "kubernetes" / "staging" / "deployment.yaml")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image

    # The promotion check on that change: one manifest plus its own renders, image, rendered.
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "promote")
    assert _promote(repo, tmp_path, "staging", "--check", "--base", "main") == 0
    document = json.loads((tmp_path / "out" / "promote.json").read_text())
    statuses = {c["check"]: c["status"] for c in document["checks"]}
    assert statuses["one-environment"] == "pass" and statuses["fields"] == "pass"
    assert statuses["image"] == "pass" and statuses["rendered"] == "pass"

    # A hand edit of a rendered object fails the check, naming the file.
    hpa = repo / "environments" / "kubernetes" / "staging" / "hpa.yaml"
    hpa.write_text(hpa.read_text().replace("maxReplicas: 4", "maxReplicas: 40"))
    _git(repo, "commit", "-q", "-am", "by hand")
    assert _promote(repo, tmp_path, "staging", "--check", "--base", "main") == 1
    document = json.loads((tmp_path / "out" / "promote.json").read_text())
    [rendered] = [c for c in document["checks"] if c["check"] == "rendered"]
    assert rendered["status"] == "fail" and "hpa.yaml" in rendered["reason"]


def test_a_github_refusal_puts_the_rendered_files_back(repo, versions, github, tmp_path, capsys):
    tags = {"slipway.gate": "pass", "slipway.digest": DIGEST, kubernetes.IMAGE_TAG: IMAGE}
    version = versions(**tags)
    before = (repo / "environments" / "staging.yaml").read_bytes()
    github.fail(403)
    assert _promote(repo, tmp_path, "staging", "--version", version) == 2
    assert "no pull request was opened" in capsys.readouterr().err
    assert (repo / "environments" / "staging.yaml").read_bytes() == before
    assert _rendered(repo) == []


def test_package_image_records_the_pushed_reference(versions, registry, capsys):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    config = str(REPO / "model" / "slipway.yaml")
    assert main(["package", "--config", config, "--version", version, "--image", IMAGE]) == 0
    assert registry.get("release-risk", version).tags[kubernetes.IMAGE_TAG] == IMAGE
    assert main(["package", "--config", config, "--version", version, "--image", REPOSITORY]) == 2
    assert "is not REPO:TAG@sha256:DIGEST" in capsys.readouterr().err


def test_deploy_without_a_cluster_says_so_and_succeeds(environments, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    out = tmp_path / "out"
    args = ["deploy", "staging", "--environments", str(environments), "--out", str(out)]
    assert main(args) == 0
    document = json.loads((out / "deploy.json").read_text())
    assert document["status"] == "skipped" and document["image"] == IMAGE
    assert "no KUBECONFIG" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_deploy_against_a_cluster_that_never_rolls_out_fails(
    environments, versions, registry, tmp_path, monkeypatch, capsys
):
    """A real kubectl against a cluster that refuses connections: the rollout never shows up
    within the timeout, so the deploy fails (exit 1) and the version is tagged so."""
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    path = environments / "staging.yaml"
    path.write_text(path.read_text().replace("version: 3", f"version: {version}"))
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    out = tmp_path / "out"
    args = ["deploy", "staging", "--environments", str(environments), "--out", str(out)]
    assert main([*args, "--timeout", "1"]) == 1
    document = json.loads((out / "deploy.json").read_text())
    assert document["status"] == "failure" and "never ran" in document["reason"]
    tags = registry.get("release-risk", version).tags
    assert tags["slipway.deploy.staging"] == "failure" and tags["slipway.smoke.staging"] == "fail"


# --- the image ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_bento_carries_the_dockerfile_containerize_builds(
    project, registry, tmp_path, monkeypatch
):
    """A real `bentoml build`: the Dockerfile in the Bento serves on the port, as the user, the
    rendered Deployment assumes; the image tag image.yml derives from the Bento tag is valid."""
    from slipway.config import load_config
    from slipway.propose.training import train

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    out = tmp_path / "out"
    train(load_config(project), registry, out)
    assert main(["package", "--config", str(project), "--out", str(out), "--version", "1"]) == 0
    packaged = yaml.safe_load((out / "package.json").read_text())
    name, version = packaged["bento_tag"].split(":")
    dockerfile = tmp_path / "bentoml" / "bentos" / name / version / "env" / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    assert "THIS IS A GENERATED DOCKERFILE" in text
    assert f"EXPOSE {kubernetes.PORT}\n" in text
    assert f"ARG BENTO_USER_UID={kubernetes.BENTO_UID}\n" in text and "USER bentoml\n" in text
    assert "ENTRYPOINT" in text and (dockerfile.parent / "entrypoint.sh").is_file()
    image = f"{REPOSITORY}:{packaged['bento_tag'].split(':', 1)[1]}@sha256:" + "ab" * 32
    assert re.match(IMAGE_PATTERN, image)


def test_the_image_job_is_skipped_under_act_with_a_message(tmp_path):
    """image.yml under act (no Docker engine): the job succeeds, says why nothing was built, and
    runs no build, containerize or push step."""
    from act_harness import make_repo, run_act

    repo, _ = make_repo(tmp_path / "repo", branch="main")
    event = {"inputs": {"version": "1"}, "repository": {"full_name": "octo/slipway"}}
    run = run_act(repo, "workflow_dispatch", event, "image.yml", tmp_path / "artifacts")
    assert run.returncode == 0, run.log[-3000:]
    assert run.jobs == {"containerize": "succeeded"}
    assert "act runs without a Docker engine: the image is not built or pushed" in run.log
    assert "bentoml containerize" not in "".join(run.steps) and "docker push" not in run.log
    assert run.steps == {"containerize/No Docker engine under act": "success"}, run.steps


def test_status_compares_git_with_the_rendered_objects_not_a_local_server(environments, registry):
    from slipway.promote.status import environment_status

    def rendered_findings() -> list[str]:
        found = environment_status("staging", registry, environments)["findings"]
        return [f["problem"] for f in found if "render" in f["problem"] + f["fix"]]

    [missing] = rendered_findings()  # nothing rendered yet: every file is missing
    assert "deployment.yaml" in missing and "kustomization.yaml" in missing
    assert _render(environments) == 0
    assert rendered_findings() == []
    service = environments / "kubernetes" / "staging" / "service.yaml"
    service.write_text(service.read_text().replace("port: 80", "port: 8080"))
    [problem] = rendered_findings()
    assert (
        problem.startswith("the rendered objects differ from the manifest")
        and "service.yaml" in problem
    )
