"""``slipway demo``: the whole lifecycle on sample data, through manifests only.

The demo moves models as a team's repository would: in a scratch git repository under
``OUT/gitops`` it promotes, "merges" (commits) and deploys each change, with its own registry,
Bento store, servers and prediction logs under ``OUT/state`` (:func:`demo_state`), so nothing
of the user's repository or ``.slipway/`` state changes. After the canary it closes the drift
loop: drifted traffic through production, delayed labels, the drift check, the retrain pull
request, and the retrained candidate gated against production on the new window. It ends with
a timeline of every step and the pull request or comment each would have made.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
# The drifted traffic: releases of the last month, a team nobody has seen, risk drivers changed
# (model/simulate.py's knobs); more releases than the eval set holds, so the new window's eval
# set and part of its training set are drifted releases.
DEMO_DRIFT_ROWS = 4500
DEMO_DRIFT_DAYS = 30
DEMO_DRIFT: dict[str, Any] = {"seed": 11, "shift": 0.5, "new_team": True, "concept_drift": 0.75}
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
        self.started = time.monotonic()
        self.timeline: list[dict[str, Any]] = []

    def note(self, step: str, outcome: str, made: str = "") -> None:
        """One line of the timeline: when, what, how it ended, the PR or comment it made."""
        at = round(time.monotonic() - self.started, 1)
        self.timeline.append({"at": at, "step": step, "outcome": outcome, "made": made})

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
        commit = self.merge(f"Environment manifests from {source}, nothing deployed yet")
        self.note("scratch repository", f"{commit}: nothing deployed")

    def merge(self, title: str, paths: tuple[str, ...] = ("environments",)) -> str:
        """Commit the change, as merging its pull request would; the commit."""
        self._git("add", *paths)
        self._git("commit", "-q", "-m", title)
        commit = self._git("rev-parse", "--short", "HEAD").strip()
        self.progress(f"merged {commit} in {self.repo}: {title}")
        return commit

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
        commit = self.merge(done["title"])
        made = f'PR "{done["title"]}" ({pull["path"]})'
        self.note(f"promote {environment} v{version}", f"checks pass, merged {commit}", made)

    def change(self, environment: str, changes: dict[str, Any], title: str) -> None:
        """Edit the manifest by hand (rules, a rollout) and merge it."""
        update_manifest(manifest_path(environment, self.environments), changes)
        commit = self.merge(title)
        self.note(f"edit {environment}.yaml", f"merged {commit}", f'PR "{title}" (by hand)')

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
        url = (document["serving"] or {}).get("url")
        self.note(f"deploy {environment}", f"serves v{document['version']} at {url}")
        return document

    def send_traffic(self, url: str, records: list[dict[str, Any]] | None = None) -> int:
        """``records`` (default: the eval records) to ``url``, one per request as releases come;
        then wait until the prediction log has written them. How many the service rejected."""
        import requests

        records = self.records if records is None else records
        with requests.Session() as session:
            metadata = f"{url}/metadata"
            expected = session.get(metadata, timeout=10).json()["prediction_log"]["written"]
            rejected = 0
            for record in records:
                answer = session.post(f"{url}/predict", json={"records": [record]}, timeout=30)
                rejected += answer.status_code != 200
            expected += len(records)  # a rejected request is logged too
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if (
                    session.get(metadata, timeout=10).json()["prediction_log"]["written"]
                    >= expected
                ):
                    break
                time.sleep(0.1)
        return rejected

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
        outcome = f"{report['verdict']} after {n} traffic pass(es)"
        if report["verdict"] == canary.WAIT:
            self.progress("the canary is still undecided: it keeps running until the demo ends")
            self.note("canary-report production", outcome)
            return report
        done = (canary.finish if report["verdict"] == canary.PROMOTE else canary.abort)(
            path, self.registry
        )
        pull = pull_request(done, self.registry, out, "main", "canary", env={})
        self.show(Path(pull["path"]).read_text(encoding="utf-8"))
        commit = self.merge(done["title"])
        made = f'PR "{done["title"]}" ({pull["path"]})'
        self.note("canary-report production", f"{outcome}, merged {commit}", made)
        self.deploy("production")
        return report

    def drifted_traffic(self, url: str) -> tuple[Any, datetime]:
        """Releases from ``model/simulate.py`` with its drift knobs through the live service;
        the releases and when the traffic started."""
        from slipway.serve.smoke import records_from_frame

        spec = importlib.util.spec_from_file_location(
            "slipway_demo_simulate", self.config.root / "simulate.py"
        )
        if spec is None or spec.loader is None:
            raise SlipwayError(f"cannot load {self.config.root / 'simulate.py'}", "restore it")
        simulator = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(simulator)
        since = datetime.now(UTC)
        knobs = ", ".join(f"{k}={v}" for k, v in DEMO_DRIFT.items())
        frame = simulator.simulate(
            DEMO_DRIFT_ROWS, end_date=since.date(), days=DEMO_DRIFT_DAYS, **DEMO_DRIFT
        )
        self.progress(
            f"simulate({DEMO_DRIFT_ROWS}, {knobs}): the last {DEMO_DRIFT_DAYS} days' releases, "
            "one per request to production"
        )
        rejected = self.send_traffic(url, records_from_frame(frame, self.config))
        outcome = f"{len(frame) - rejected:,} scored, {rejected:,} rejected (a team unknown)"
        self.progress(f"drifted traffic: {outcome}")
        self.note("drifted traffic to production", outcome)
        return frame, since

    def scratch_project(self, since: datetime, until: datetime) -> tuple[ModelConfig, list[str]]:
        """A copy of the model project in the scratch repository, its ``slipway.yaml`` loosened
        so that one drift run over the demo's drifted traffic decides; what was changed."""
        import yaml

        from slipway.config import load_config

        target = self.repo / self.config.root.resolve().name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(
            self.config.root, target, ignore=shutil.ignore_patterns("__pycache__", "labels")
        )
        seconds = math.ceil((until - since).total_seconds())
        window_days = seconds / 86400
        path = target / "slipway.yaml"
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        drift = raw.setdefault("drift", {})
        before = drift.get("persistence") or {"k": 2, "n": 3}
        drift |= {"window_days": window_days, "persistence": {"k": 1, "n": 1}}
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        changes = [
            f"drift.window_days {window_days:.6f} ({seconds} s: the drifted traffic's, "
            "not the canary's)",
            f"drift.persistence {before['k']} of {before['n']} → 1 of 1 (one run decides)",
        ]
        self.merge(f"Demo only: the model project, {'; '.join(changes)}", (target.name,))
        return load_config(path), changes

    def labels(self, project: ModelConfig, frame: Any, at: datetime) -> Path:
        """The delayed labels of the drifted releases, where ``drift.labels`` points."""
        if project.drift.labels is None:
            raise SlipwayError("drift.labels is not set in slipway.yaml", "set it: data/labels")
        where = project.path(project.drift.labels)
        path = where / "demo.csv" if where.suffix == "" else where
        path.parent.mkdir(parents=True, exist_ok=True)
        id_column, target = project.data.id_column, project.target.column
        labels = frame[[id_column, target]].assign(labelled_at=at.isoformat(timespec="seconds"))
        labels.to_csv(path, index=False)
        outcome = f"{len(labels):,} labels in {path}"
        self.progress(f"delayed labels of the drifted releases: {outcome}")
        self.note("delayed labels", outcome)
        return path

    def drift(self, project: ModelConfig, until: datetime) -> dict[str, Path]:
        """``slipway drift production``: its headline and summary shown; its reports' paths."""
        from slipway.drift import check
        from slipway.drift.labels import read_labels
        from slipway.drift.profile import load_profile
        from slipway.drift.report import render_text, write_reports
        from slipway.manifests import load_manifest
        from slipway.serve.prediction_log import log_directory

        out = self._step_dir("drift-production")
        manifest = load_manifest(manifest_path("production", self.environments))
        versions = [str(v) for v in manifest.versions()]
        profiles = {v: load_profile(self.registry, project.name, v) for v in versions}
        assert project.drift.labels is not None  # labels() wrote them
        labels = read_labels(
            project.path(project.drift.labels),
            project.data.id_column,
            project.target.column,
            project.target.positive,
            until,
        )
        length = timedelta(days=project.drift.window_days)
        source = log_directory("production")
        document = check.check_drift(
            project, "production", profiles, source, until, length, labels, self.progress
        )
        paths = write_reports(document, out)
        self.show("\n".join(["## slipway drift production", "", *render_text(document)]))
        made = f"step summary {paths['md']}"
        self.note("drift production", f"{document['status']}: {document['reason']}", made)
        return paths

    def retrain(self, project: ModelConfig, drift: Path) -> dict[str, Any]:
        """``slipway retrain-pr``: the retrain pull request shown; its files committed on the
        scratch repository's ``slipway/retrain``, as the pull request's branch would hold."""
        from slipway.drift import retrain
        from slipway.drift.window import write_into_project

        out = self._step_dir("retrain-pr")
        document = retrain.run(
            project,
            "production",
            self.registry,
            self.environments,
            drift,
            out,
            "main",
            progress=self.progress,
            env={},
        )
        if not document["retrain"] or not document["window"]["valid"]:
            why = "; ".join(document["not_triggered"]) or f"see {out / 'retrain.json'}"
            self.note("retrain-pr", f"no pull request: {why}")
            raise SlipwayError(f"the demo's retrain-pr opened nothing: {why}", "read the above")
        pull = document["pull_request"]
        self.progress(f"the pull request `slipway retrain-pr` would open: {pull['path']}")
        self.show(Path(pull["path"]).read_text(encoding="utf-8"))
        self._git("checkout", "-q", "-b", retrain.BRANCH)
        write_into_project(project, document["window"])
        commit = self.merge(retrain.title(document), tuple(document["files"]))
        splits = document["window"]["splits"]
        outcome = (
            f"{splits['train']['rows']:,} train, {splits['eval']['rows']:,} eval rows; "
            f"{commit} on {retrain.BRANCH}"
        )
        self.note("retrain-pr", outcome, f'PR "{retrain.title(document)}" ({pull["path"]})')
        return document

    def retrained(self, project: ModelConfig) -> dict[str, Any]:
        """``slipway pr`` on the retrain branch: the new window's candidate gated against
        production, its comment shown; the scratch repository back on ``main``."""
        from slipway.drift import retrain

        out = self._step_dir("retrain-candidate")
        out.mkdir(parents=True, exist_ok=True)
        try:
            done = run_pr(project, self.registry, out, self.progress)
        finally:
            self._git("checkout", "-q", "main")
        self.progress(f"the comment `slipway pr` would post on the retrain pull request: {out}")
        self.show(done["markdown"])
        version = (done.get("train") or {}).get("version", "?")
        made = f'comment on "{retrain.BRANCH}" PR ({done["report"]})'
        self.note("pr on the retrain branch", f"v{version} {done['status']}", made)
        return done

    def render_timeline(self) -> str:
        """The timeline as a Markdown table."""
        lines = ["## Timeline", "", "| at | step | outcome | pull request or comment |"]
        lines.append("|---:|---|---|---|")
        for row in self.timeline:
            cells = [f"{row['at']:.1f} s", row["step"], row["outcome"], row["made"] or "—"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)


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
        demo.note(
            "pr (first model)",
            f"v{first['train']['version']} {first['status']}",
            f"comment ({first['report']})",
        )
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
        v2 = (challenger.get("train") or {}).get("version", "?")
        demo.note(
            "pr (challenger)",
            f"v{v2} {challenger['status']} against production v{v1}",
            f"comment ({challenger['report']})",
        )
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
        result |= drift_loop(demo, demo.deploys[-1]["serving"]["url"])
        result["history"] = history("production", registry, demo.environments)
        result["deploys"] = demo.deploys
        return result
    finally:
        stopped = _stop_servers()
        progress(f"stopped the demo's servers: {', '.join(stopped) or 'none was running'}")
        demo.note("stop servers", ", ".join(stopped) or "none was running")
        result["timeline"] = demo.timeline
        show(demo.render_timeline())


def drift_loop(demo: _Demo, url: str) -> dict[str, Any]:
    """The world changes: drifted releases through production at ``url`` and their delayed
    labels; the drift check, the retrain pull request, and the propose flow on its branch."""
    demo.progress("== drift: production sees releases unlike the training data ==")
    frame, since = demo.drifted_traffic(url)
    sent = datetime.now(UTC)
    until = sent + timedelta(seconds=1)  # the check's --until: the window ends just after
    project, changes = demo.scratch_project(since, until)
    demo.progress(f"the scratch copy {project.root / 'slipway.yaml'} changes: {'; '.join(changes)}")
    demo.labels(project, frame, sent)
    drift = demo.drift(project, until)
    demo.progress("== retrain: one pull request with the evidence ==")
    retrain = demo.retrain(project, drift["json"])
    demo.progress("== the retrained candidate, gated against production on the new window ==")
    retrained = demo.retrained(project)
    return {"drift": drift, "retrain": retrain, "retrained": retrained}


def _soak_note(environments: Path) -> str:
    """What the demo changes in the scratch production manifest's rules, and why."""
    from slipway.manifests import load_manifest

    hours = load_manifest(manifest_path("production", environments)).promotion.soak_hours
    return (
        f"production's soak_hours {hours:g} → 0, so the demo need not wait {hours:g} h in staging"
    )
