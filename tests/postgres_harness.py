"""A PostgreSQL cluster of the tests' own and ``mlflow server`` on it, as a team runs it.

Test code. :class:`Postgres` makes a cluster with Debian's ``initdb`` in a temporary directory
(owned by the ``postgres`` user when the tests run as root: ``initdb`` and ``postgres`` refuse to
run as root), listening on 127.0.0.1 on a free port with its socket in that directory, and stops
it by its PID (``pg_ctl stop -m fast``). :class:`TeamMlflow` is ``mlflow server`` with its
backend store in one of the cluster's databases and proxied artifacts (``--serve-artifacts``),
optionally with MLflow's basic-auth app, its users in another database. The system's own cluster
service is never started. ``make test`` installs the ``postgresql`` package when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from act_harness import stop_process, wait_for_server
from slipway.serve.server import free_port

PG_ROOT = Path("/usr/lib/postgresql")
ADMIN = ("admin", "slipway-admin-password")  # the basic-auth app's admin, made on first start


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/NN/bin)."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1; :meth:`database` makes a database and the
    user owning it, and returns its SQLAlchemy URI."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed: run `make test` (it installs it)")
        # Not under pytest's tmp directory: the postgres user must reach it, and that is 0700.
        self.root = Path(tempfile.mkdtemp(prefix="slipway-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.pid: int | None = None
        self._as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *command],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> Postgres:
        if self._as:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        made = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stdout}{made.stderr}")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root}"
        started = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        if started.returncode != 0:
            log = self.root / "postgres.log"
            raise RuntimeError(f"postgres did not start: {started.stderr}{log.read_text()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser; its rows (none for a command)."""
        import psycopg2

        with contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database)
        ) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []

    def database(self, name: str, user: str = "mlflow", password: str = "mlflow-password") -> str:
        """A new database owned by ``user`` (made when missing): the URI MLflow connects with."""
        if not self.sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'"):
            self.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        self.sql(f"CREATE DATABASE {name} OWNER {user}")
        # The driver named: SQLAlchemy 2.1 takes a bare postgresql:// for psycopg 3.
        return f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; the postmaster's PID is killed when that fails."""
        if self.pid is not None:
            stopped = self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"
            )
            if stopped.returncode != 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)


class TeamMlflow:
    """``mlflow server`` on a :class:`Postgres` database with proxied artifacts in ``root``;
    with ``auth``, MLflow's basic-auth app with :data:`ADMIN` and its users in a second
    database. Stopped by its PID."""

    def __init__(self, postgres: Postgres, root: Path, name: str, auth: bool = False) -> None:
        self.postgres = postgres
        self.root = root
        self.name = name
        self.auth = auth
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "artifacts"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> TeamMlflow:
        self.root.mkdir(parents=True, exist_ok=True)
        backend = self.postgres.database(self.name)
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            "--backend-store-uri", backend,
            "--serve-artifacts",
            "--artifacts-destination", str(self.artifacts),
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)
        if self.auth:
            users = self.postgres.database(f"{self.name}_users")
            config = self.root / "basic_auth.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = {users}\n"
                f"admin_username = {ADMIN[0]}\n"
                f"admin_password = {ADMIN[1]}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                # A password check (PBKDF2) costs the server CPU on every request: cache it.
                "auth_cache_ttl_seconds = 600\n"
            )
            command += ["--app-name", "basic-auth"]
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
            # The auth app signs its CSRF tokens with it; every worker must share one.
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "slipway-tests-secret-key"
        with (self.root / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env
            )
        wait_for_server(self.process, self.uri, self.root / "server.log", timeout, self.stop)
        return self

    def add_user(self, username: str, password: str) -> None:
        """A user of the basic-auth app (it gets ``default_permission`` on what others made)."""
        answer = requests.post(
            f"{self.uri}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=ADMIN,
            timeout=30,
        )
        answer.raise_for_status()

    def grant(self, username: str, resource_type: str, resource: str, permission: str) -> None:
        """The admin grants ``username`` ``permission`` (READ, EDIT, MANAGE) on one resource
        (``experiment`` by id, ``registered_model`` by name)."""
        answer = requests.post(
            f"{self.uri}/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": resource_type,
                "resource_id": resource,
                "permission": permission,
            },
            auth=ADMIN,
            timeout=30,
        )
        answer.raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)
