"""``slipway demo``: the whole lifecycle on sample data, through manifests only.

The demo moves models as a team's repository would: in a scratch git repository under
``OUT/gitops`` it promotes, "merges" (commits) and deploys each change, with its own registry,
Bento store, servers and prediction logs under ``OUT/state`` (:func:`demo_state`), so nothing
of the user's repository or ``.slipway/`` state changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.errors import PromotionError, ServingError, SlipwayError
from slipway.manifests import DEFAULT_DIR, ENVIRONMENTS, manifest_path, update_manifest
from slipway.pipeline import run_pr
from slipway.progress import Progress
from slipway.propose.datasets import split_paths, write_lock
from slipway.registry import Registry

# The demo's first model: shallower trees, so the challenger has something to beat; as many
# of them, so the canary compares scoring latency like with like (a 20-tree first model makes
# the 100-tree challenger's p95 about 1.8 times as long, and the canary aborts).
DEMO_CHAMPION_PARAMS: dict[str, Any] = {"n_estimators": 100, "max_depth": 4}
DEMO_SMOKE_ROWS = 20
DEMO_MAX_P95_MS = 1000.0  # generous: the demo runs on busy laptops too
DEMO_READY_TIMEOUT_S = 120.0
DEMO_CANARY_PERCENT = 10
DEMO_TRAFFIC_PASSES = 6  # the eval set sent again until the canary report decides
# Variables the demo leaves unset while it runs: its own state, and no GitHub to post to.
_DEMO_UNSET = (
    "BENTOML_HOME",
    "SLIPWAY_LOG_DIR",
    "SLIPWAY_ENV",
    "SLIPWAY_MANIFEST",
    "SLIPWAY_CONFIG",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_REPOSITORY",
    "GITHUB_ACTIONS",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_EVENT_PATH",
    "SLIPWAY_PR_NUMBER",
)


def ensure_demo_data(config: ModelConfig, progress: Progress) -> None:
    """Generate the sample data with the model project's simulator when it is missing."""
    paths = split_paths(config)
    if all(path.is_file() for path in paths.values()):
        return
    progress("generating sample data with model/simulate.py")
    script = config.root / "simulate.py"
    out = paths["train"].parent
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SlipwayError(f"{script} failed: {done.stderr.strip()}", f"fix {script}")
    write_lock(config)


@contextlib.contextmanager
def demo_state(out_dir: Path) -> Iterator[Path]:
    """For the demo's duration: its own registry, Bento store, servers and prediction logs
    in a fresh ``OUT/state`` (``SLIPWAY_HOME``, ``MLFLOW_TRACKING_URI``), and no GitHub
    credentials, so no pull request is posted. The variables are restored afterwards."""
    home = (out_dir / "state").resolve()
    settings = {"SLIPWAY_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    saved = {name: os.environ.pop(name, None) for name in (*_DEMO_UNSET, *settings)}
    os.environ.update(settings)
    try:
        _stop_servers()  # what an interrupted demo left running
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        yield home
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _stop_servers() -> list[str]:
    """Stop every server recorded in the state directory, by PID; the slots stopped."""
    from slipway.serve.server import stop_server

    slots = [slot for env in ENVIRONMENTS for slot in (env, f"{env}-next")]
    return [slot for slot in slots if stop_server(slot) is not None]


class _Demo:
    """The demo's steps on one scratch repository; each step says what it does."""

    def __init__(
        self,
        config: ModelConfig,
        registry: Registry,
        out_dir: Path,
        progress: Progress,
        show: Progress,
        config_path: Path,
    ) -> None:
        from slipway.propose.contract import read_dataset
        from slipway.serve.smoke import records_from_frame

        self.config, self.registry, self.out = config, registry, out_dir
        self.progress, self.show, self.config_path = progress, show, config_path
        self.repo = out_dir / "gitops"
        self.environments = self.repo / "environments"
        self.records = records_from_frame(read_dataset(config.path(config.data.eval)), config)
        self.steps = 0
        self.deploys: list[dict[str, Any]] = []

    def _git(self, *args: str) -> str:
        from slipway.promote.repository import git

        return git(self.repo, *args)

    def _step_dir(self, name: str) -> Path:
        self.steps += 1
        return self.out / "steps" / f"{self.steps:02d}-{name}"

    def start(self, source: Path) -> None:
        """A fresh git repository holding a copy of ``source`` with nothing deployed."""
        shutil.rmtree(self.repo, ignore_errors=True)
        if not source.is_dir():
            raise SlipwayError(
                f"no environment manifests in {source}", "run the demo from the repository root"
            )
        shutil.copytree(source, self.environments)
        empty = {"version": None, "digest": None, "rollout.mode": "none"}
        empty |= {"rollout.candidate_version": None, "rollout.canary_percent": 0}
        for environment in ENVIRONMENTS:
            update_manifest(manifest_path(environment, self.environments), empty)
        self._git("init", "-q", "-b", "main")
        for key, value in (("user.name", "Slipway demo"), ("user.email", "demo@slipway.invalid")):
            self._git("config", key, value)
        self._git("config", "commit.gpgsign", "false")
        self.merge(f"Environment manifests from {source}, nothing deployed yet")

    def merge(self, title: str) -> None:
        """Commit the manifest change, as merging its pull request would."""
        self._git("add", "environments")
        self._git("commit", "-q", "-m", title)
        commit = self._git("rev-parse", "--short", "HEAD").strip()
        self.progress(f"merged {commit} in {self.repo}: {title}")

    def checked(self, environment: str, out: Path) -> None:
        """The promotion pull request's required checks, on the change against HEAD."""
        from slipway.promote import promotion

        document = promotion.check(environment, self.registry, self.environments, "HEAD", env={})
        promotion.write_check(document, out)
        for item in document["checks"]:
            self.progress(f"  {item['status']:>8}  {item['check']}: {item['reason']}")
        if document["status"] != "pass":
            raise PromotionError(
                f"the demo's change to {environment} fails its checks (see {out / 'promote.json'})",
                "read the failed checks above",
            )

    def promote(self, environment: str, version: int) -> None:
        """``slipway promote ENV --version N``, its pull request shown, checked and merged."""
        from slipway.promote import promotion

        out = self._step_dir(f"promote-{environment}-v{version}")
        done = promotion.promote(environment, version, self.registry, self.environments)
        pull = promotion.pull_request(done, self.registry, out, "main", env={})
        self.progress(f"the pull request `slipway promote` would open: {pull['path']}")
        self.show(Path(pull["path"]).read_text(encoding="utf-8"))
        self.checked(environment, out)
        self.merge(done["title"])

    def change(self, environment: str, changes: dict[str, Any], title: str) -> None:
        """Edit the manifest by hand (rules, a rollout) and merge it."""
        update_manifest(manifest_path(environment, self.environments), changes)
        self.merge(title)

    def deploy(self, environment: str) -> dict[str, Any]:
        """``slipway deploy ENV``, as the merge would trigger; a failed deploy stops the demo."""
        from slipway.promote.deploy import deploy

        out = self._step_dir(f"deploy-{environment}")
        document = deploy(
            self.config,
            self.registry,
            environment,
            self.environments,
            self.config_path,
            self.records[:DEMO_SMOKE_ROWS],
            out,
            DEMO_MAX_P95_MS,
            DEMO_READY_TIMEOUT_S,
            self.progress,
        )
        if document["status"] != "success":
            raise ServingError(
                f"the demo's deploy of {environment} v{document['version']} failed",
                f"read {out / 'deploy.json'}",
            )
        self.deploys.append(document)
        return document

    def send_traffic(self, url: str) -> None:
        """The eval records to ``url``, one per request as releases come; then wait until the
        prediction log has written them."""
        import requests

        with requests.Session() as session:
            metadata = f"{url}/metadata"
            expected = session.get(metadata, timeout=10).json()["prediction_log"]["written"]
            expected += len(self.records)
            for record in self.records:
                session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if (
                    session.get(metadata, timeout=10).json()["prediction_log"]["written"]
                    >= expected
                ):
                    break
                time.sleep(0.1)

    def canary(self, url: str) -> dict[str, Any]:
        """Traffic until the canary report decides (or the passes run out); its verdict acted on."""
        from slipway.manifests import load_manifest
        from slipway.promote import canary
        from slipway.promote.promotion import pull_request
        from slipway.serve.prediction_log import log_directory

        path = manifest_path("production", self.environments)
        out = self._step_dir("canary-report")
        self.progress("judged without labels: in production they arrive later (--labels)")
        for n in range(1, DEMO_TRAFFIC_PASSES + 1):
            self.send_traffic(url)
            report = canary.canary_report(
                "production", self.config, load_manifest(path), log_directory("production")
            )
            why = f" ({report['reasons'][0]}…)" if report["verdict"] == canary.WAIT else ""
            sent = f"{len(self.records)} requests"
            self.progress(f"traffic pass {n}: {sent}; canary report: {report['verdict']}{why}")
            if report["verdict"] != canary.WAIT:
                break
        canary.write_report(report, out)
        self.show("\n".join(["## slipway canary-report production", "", *canary.render(report)]))
        if report["verdict"] == canary.WAIT:
            self.progress("the canary is still undecided: it keeps running until the demo ends")
            return report
        done = (canary.finish if report["verdict"] == canary.PROMOTE else canary.abort)(
            path, self.registry
        )
        pull = pull_request(done, self.registry, out, "main", "canary", env={})
        self.show(Path(pull["path"]).read_text(encoding="utf-8"))
        self.merge(done["title"])
        self.deploy("production")
        return report


def run_demo(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    progress: Progress,
    show: Progress = lambda _text: None,
    config_path: Path | None = None,
    environments: Path = DEFAULT_DIR,
) -> dict[str, Any]:
    """The lifecycle through manifest changes only, in a scratch repository of ``environments``.

    A first model is trained, gated and packaged, promoted to staging and deployed, then to
    production (the scratch manifest's soak shortened to 0 first) and deployed; a challenger
    is gated against it and rolled out as a 10 % canary; traffic goes to production and the
    canary report decides whether the challenger takes over. Pull requests, reports and the
    challenger's gate report go to ``show``; every server the demo started is stopped.
    Run it inside :func:`demo_state`.
    """
    from slipway.promote.history import history

    ensure_demo_data(config, progress)
    config_path = config_path or config.root / "slipway.yaml"
    demo = _Demo(config, registry, out_dir, progress, show, config_path)
    result: dict[str, Any] = {"repository": demo.repo, "environments": demo.environments}
    try:
        progress(f"== scratch repository {demo.repo}: the manifests of {environments} ==")
        demo.start(environments)
        progress("== first model (a shallower forest) ==")
        small = config.with_params(DEMO_CHAMPION_PARAMS)
        first = run_pr(small, registry, out_dir / "first", progress)
        if first["status"] != "pass":
            raise SlipwayError(
                f"the demo's first model did not pass its gates; see {first['report']}",
                "inspect the report, fix data or params in model/, and run `make demo` again",
            )
        v1 = int(first["train"]["version"])
        progress(f"== v{v1} to staging ==")
        demo.promote("staging", v1)
        demo.deploy("staging")
        progress(f"== v{v1} to production ==")
        soak = _soak_note(demo.environments)
        progress(soak)
        demo.change("production", {"promotion.soak_hours": 0}, f"Demo only: {soak}")
        demo.promote("production", v1)
        production = demo.deploy("production")
        progress("== challenger (params from slipway.yaml), gated against production ==")
        challenger = run_pr(config, registry, out_dir, progress)
        show(challenger["markdown"])
        result |= {"report": challenger["report"], "markdown": challenger["markdown"]}
        result |= {"status": challenger["status"], "first": v1, "canary": None}
        if challenger["status"] == "pass":
            v2 = int(challenger["train"]["version"])
            progress(f"== v{v2} as a {DEMO_CANARY_PERCENT} % canary in production ==")
            rollout = {"rollout.mode": "canary", "rollout.candidate_version": v2}
            rollout["rollout.canary_percent"] = DEMO_CANARY_PERCENT
            demo.change(
                "production",
                rollout,
                f"Canary {config.name} v{v2} at {DEMO_CANARY_PERCENT}% in production",
            )
            production = demo.deploy("production")
            result["canary"] = demo.canary(production["serving"]["url"])
        result["history"] = history("production", registry, demo.environments)
        result["deploys"] = demo.deploys
        return result
    finally:
        stopped = _stop_servers()
        progress(f"stopped the demo's servers: {', '.join(stopped) or 'none was running'}")


def _soak_note(environments: Path) -> str:
    """What the demo changes in the scratch production manifest's rules, and why."""
    from slipway.manifests import load_manifest

    hours = load_manifest(manifest_path("production", environments)).promotion.soak_hours
    return (
        f"production's soak_hours {hours:g} → 0, so the demo need not wait {hours:g} h in staging"
    )
