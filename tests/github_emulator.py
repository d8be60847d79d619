"""A GitHub REST emulator on 127.0.0.1 checking every request against GitHub's OpenAPI description.

Test code, not product code. Requests are validated with ``openapi-core`` against
``api.github.com.json`` from the npm package ``@octokit/openapi`` (``make test`` fetches it),
plus what the description cannot say: every query parameter is declared for the operation and
the ``Accept`` / ``X-GitHub-Api-Version`` headers are GitHub's. A request that does not validate
is answered 422 and recorded in ``Emulator.invalid``; the fixture fails the test when it is not
empty. Responses are built from the description's schemas and validated too (``bad_responses``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

SPEC_SERVER = "https://api.github.com"
TOKEN = "ghs_emulatorSecretToken0123456789abcdef"  # a fake the emulator expects
NOW = "2026-01-02T03:04:05Z"

# (method, regex over the path after /repos/OWNER/NAME, the description's template, handler)
ROUTES = [
    (
        "GET",
        r"/issues/(?P<number>\d+)/comments",
        "/issues/{issue_number}/comments",
        "list_comments",
    ),
    (
        "POST",
        r"/issues/(?P<number>\d+)/comments",
        "/issues/{issue_number}/comments",
        "create_comment",
    ),
    ("PATCH", r"/issues/comments/(?P<id>\d+)", "/issues/comments/{comment_id}", "update_comment"),
    ("DELETE", r"/issues/comments/(?P<id>\d+)", "/issues/comments/{comment_id}", "delete_comment"),
    ("POST", r"/issues/(?P<number>\d+)/labels", "/issues/{issue_number}/labels", "add_labels"),
    ("GET", r"/pulls", "/pulls", "list_pulls"),
    ("POST", r"/pulls", "/pulls", "create_pull"),
    ("GET", r"/pulls/(?P<number>\d+)", "/pulls/{pull_number}", "get_pull"),
    ("PATCH", r"/pulls/(?P<number>\d+)", "/pulls/{pull_number}", "update_pull"),
    ("POST", r"/statuses/(?P<sha>[^/]+)", "/statuses/{sha}", "create_status"),
    ("GET", r"/contents/(?P<path>.+)", "/contents/{path}", "get_content"),
    ("PUT", r"/contents/(?P<path>.+)", "/contents/{path}", "put_content"),
    ("GET", r"/git/ref/(?P<ref>.+)", "/git/ref/{ref}", "get_ref"),
    ("POST", r"/git/refs", "/git/refs", "create_ref"),
    ("PATCH", r"/git/refs/(?P<ref>.+)", "/git/refs/{ref}", "update_ref"),
    ("GET", r"/compare/(?P<basehead>.+?\.\.\..+)", "/compare/{basehead}", "compare"),
    (
        "POST",
        r"/pulls/(?P<number>\d+)/requested_reviewers",
        "/pulls/{pull_number}/requested_reviewers",
        "request_reviewers",
    ),
    ("GET", r"/pulls/(?P<number>\d+)/files", "/pulls/{pull_number}/files", "pull_files"),
    ("GET", r"/commits/(?P<sha>[^/]+)/pulls", "/commits/{commit_sha}/pulls", "commit_pulls"),
    ("GET", r"/deployments", "/deployments", "list_deployments"),
    ("POST", r"/deployments", "/deployments", "create_deployment"),
    (
        "GET",
        r"/deployments/(?P<id>\d+)/statuses",
        "/deployments/{deployment_id}/statuses",
        "list_deployment_statuses",
    ),
    (
        "POST",
        r"/deployments/(?P<id>\d+)/statuses",
        "/deployments/{deployment_id}/statuses",
        "create_deployment_status",
    ),
]
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
NOT_COLLABORATOR = (
    "Reviews may only be requested from collaborators. One or more of the users or teams you "
    "specified is not a collaborator of the {repo} repository."
)


def load_openapi(path: Path) -> tuple[OpenAPI, dict]:
    """The validator and the raw description.

    openapi-core's default check of the whole description against the OpenAPI meta-schema takes
    ≈50 s for GitHub's 13 MB file; the file is GitHub's published description, so that check is
    skipped (``spec_validator_cls=None``) and $refs are resolved lazily as requests need them.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None)), document


class Sample:
    """Minimal schema-valid values from the description's schemas, for fields we don't model."""

    def __init__(self, document: dict) -> None:
        self.document = document

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def of(self, schema: dict) -> Any:
        schema = self.resolve(schema)
        for combinator in ("allOf", "oneOf", "anyOf"):
            if combinator in schema:
                return self.of(schema[combinator][0])
        if schema.get("nullable"):
            return None
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type", "object")
        if kind == "string":
            return {"date-time": NOW, "uri": "https://github.invalid/x"}.get(
                schema.get("format", ""), "x"
            )
        if kind in ("integer", "number"):
            return 1
        if kind == "boolean":
            return False
        if kind == "array":
            return []
        props = schema.get("properties", {})
        return {name: self.of(props.get(name, {})) for name in schema.get("required", [])}

    def named(self, schema: str, /, **values: Any) -> dict:
        return {**self.of({"$ref": f"#/components/schemas/{schema}"}), **values}


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Server Error"
    after_apply: bool = False  # do the work, then answer the fault (a create that "failed")
    method: str | None = None  # only requests with this method, e.g. "POST"


class Emulator:
    """In-memory GitHub for one repository: comments, pull requests, labels, statuses, commits
    on branches (linear histories with file trees; ``main`` is seeded), deployments."""

    def __init__(self, openapi: OpenAPI, document: dict, repo: str = "acme/models") -> None:
        self.openapi = openapi
        self.document = document
        self.sample = Sample(document)
        self.repo = repo
        self.prefix = ""  # e.g. "/api/v3" to look like GitHub Enterprise Server
        self.lock = threading.RLock()
        self.faults: deque[Fault] = deque()
        self.log: list[tuple[str, str, int]] = []  # (method, path+query, status answered)
        self.bodies: list[tuple[str, str, bytes]] = []  # (method, path+query, request body)
        self.invalid: list[str] = []
        self.bad_responses: list[str] = []
        self.comments: dict[int, dict] = {}
        self.pulls: dict[int, dict] = {}
        self.labels: dict[int, list[str]] = {}
        self.statuses: list[dict] = []
        self._ids = 1000
        self.commits: dict[str, dict] = {}  # sha -> parent, files {path: bytes}, login, email
        self.branches: dict[str, str] = {}  # name -> head commit sha
        seed = self.push("main", {"README.md": "# models\n"}, message="Initial commit")
        self.branches |= {"slipway/retrain": seed, "feature": seed}
        self.collaborators = {"octocat", "alice", "bob"}  # who may be asked to review
        self.deployments: dict[int, dict] = {}
        self.deployment_statuses: dict[int, list[dict]] = {}  # newest first, as GitHub lists
        self._server: ThreadingHTTPServer | None = None
        self.hold: threading.Barrier | None = None  # GETs wait here, outside the lock: races

    # -- control from tests ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    def start(self) -> Emulator:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                emulator.handle(self)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail(self, status: int, times: int = 1, **fault: Any) -> None:
        """Answer the next ``times`` requests with ``status`` (see :class:`Fault`)."""
        self.faults.extend(Fault(status, **fault) for _ in range(times))

    def rate_limit(
        self,
        times: int = 1,
        *,
        retry_after: int | None = 1,
        reset_in: int = 2,
        status: int = 403,
        now: int | None = None,
    ) -> None:
        """Secondary rate limit: Retry-After, or (``retry_after=None``) remaining 0 + reset.

        The reset is ``reset_in`` seconds after ``now`` (epoch seconds; the real clock if unset).
        """
        headers = {"x-ratelimit-limit": "5000", "x-ratelimit-used": "5000"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        else:
            reset = str((int(time.time()) if now is None else now) + reset_in)
            headers |= {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
        message = "You have exceeded a secondary rate limit. Please wait a few minutes."
        self.fail(status, times, headers=headers, message=message)

    def add_comment(self, number: int, body: str, login: str = "octocat") -> dict:
        with self.lock:
            self._ids += 1
            comment = self._comment(self._ids, number, body, login)
            self.comments[self._ids] = comment
            return comment

    def add_pull(self, number: int, head: str, sha: str, fork: str | None = None) -> dict:
        """An open pull request from branch ``head`` at commit ``sha`` (of repo ``fork`` if set)."""
        with self.lock:
            pull = self._pull(number, f"PR {number}", head, "main", None, sha=sha, fork=fork)
            self.pulls[number] = pull
            return pull

    def merge(self, number: int, sha: str) -> dict:
        """Close pull request ``number`` as merged into its base by commit ``sha``."""
        with self.lock:
            pull = self.pulls[number]
            pull.update(state="closed", merged_at=NOW, closed_at=NOW, merge_commit_sha=sha)
            return pull

    def push(
        self,
        branch: str,
        files: dict[str, str | bytes | None],
        *,
        login: str | None = "octocat",
        email: str = "octocat@users.noreply.github.com",
        message: str = "Update",
        sha: str | None = None,
    ) -> str:
        """Commit ``files`` (None deletes) on ``branch``, new branches start at ``main``; the sha.

        ``login`` is the author's GitHub account, None when the email matches no account.
        ``sha``: the commit's id, to mirror a commit of a local repository.
        """
        with self.lock:
            parent = self.branches.get(branch, self.branches.get("main"))
            tree = dict(self.commits[parent]["files"]) if parent else {}
            for path, text in files.items():
                if text is None:
                    tree.pop(path, None)
                else:
                    tree[path] = text.encode() if isinstance(text, str) else text
            self._ids += 1
            sha = sha or hashlib.sha1(f"{parent}:{self._ids}:{message}".encode()).hexdigest()
            self.commits[sha] = {
                "parent": parent,
                "files": tree,
                "login": login,
                "email": email,
                "message": message,
            }
            self.branches[branch] = sha
            return sha

    def file(self, branch: str, path: str) -> str | None:
        data = self.commits[self.branches[branch]]["files"].get(path)
        return None if data is None else data.decode()

    def issue_comments(self, number: int) -> list[dict]:
        return [c for c in self.comments.values() if c["issue_url"].endswith(f"/issues/{number}")]

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p, _ in self.log if m == method and fragment in p)

    def sent(self, method: str, fragment: str = "") -> list[Any]:
        """The JSON bodies of the requests so far with ``method`` and ``fragment`` in the path."""
        return [json.loads(b) for m, p, b in self.bodies if m == method and fragment in p and b]

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        method = http.command
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        query = parse_qsl(split.query, keep_blank_values=True)
        path = split.path.removeprefix(self.prefix)
        if self.hold is not None and method == "GET":
            # Generous: on a loaded machine four client threads can take seconds to line up.
            # A broken barrier lets the request through rather than dropping the connection.
            with contextlib.suppress(threading.BrokenBarrierError):
                self.hold.wait(timeout=60)
        with self.lock:
            try:
                status, payload, headers = self._answer(method, path, query, body, http.headers)
            except Exception as exc:  # an emulator bug: fail the test, not just this request
                self.bad_responses.append(f"{method} {path}: emulator raised {exc!r}")
                status, payload, headers = 500, {"message": "emulator error"}, {}
            self.log.append((method, http.path, status))
            self.bodies.append((method, http.path, body))
        data = b"" if payload is None else json.dumps(payload).encode()
        http.send_response(status)
        for name, value in headers.items():
            http.send_header(name, value)
        if data:
            http.send_header("Content-Type", "application/json; charset=utf-8")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def _answer(
        self, method: str, path: str, query: list, body: bytes, headers: Any
    ) -> tuple[int, Any, dict]:
        route = self._route(method, path)
        spec_path = route[3] if route else path  # what openapi-core matches templates against
        problems = self._validate(method, spec_path, query, body, headers, route)
        if problems:
            self.invalid.append(f"{method} {path}?{urlencode(query)}: {'; '.join(problems)}")
            return 422, self._error("Invalid request", problems), {}
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {"message": "Bad credentials", "documentation_url": "x"}, {}
        assert route is not None
        fault = next((f for f in self.faults if f.method in (None, method)), None)
        if fault:
            self.faults.remove(fault)
        if fault and not fault.after_apply:
            return fault.status, {"message": fault.message}, fault.headers
        handler, template, params, _ = route
        status, payload, extra = handler(params, dict(query), json.loads(body or b"null"))
        self._check_response(method, spec_path, query, body, template, status, payload, extra)
        if fault:
            return fault.status, {"message": fault.message}, fault.headers
        return status, payload, extra

    def _route(self, method: str, path: str) -> tuple[Any, str, dict, str] | None:
        """(handler, template, decoded path parameters, the path with their slashes escaped).

        GitHub takes ``/`` inside a path parameter (``contents/a/b.yaml``, ``git/ref/heads/x/y``,
        ``compare/main...x/y``) but openapi-core's templates match no ``/``: it is shown %2F.
        """
        base = f"/repos/{self.repo}"
        if not path.startswith(base):
            return None
        for verb, pattern, template, name in ROUTES:
            match = re.fullmatch(pattern, path[len(base) :])
            if verb == method and match:
                handler = getattr(self, f"_{name}")
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                spec, last = base, 0
                for group in match.groupdict():
                    start, end = match.span(group)
                    spec += match.string[last:start] + match.string[start:end].replace("/", "%2F")
                    last = end
                spec += match.string[last:]
                return handler, "/repos/{owner}/{repo}" + template, params, spec
        return None

    def _validate(
        self, method: str, path: str, query: list, body: bytes, headers: Any, route: Any
    ) -> list[str]:
        problems = []
        if headers.get("Accept") != "application/vnd.github+json":
            problems.append(f"Accept is {headers.get('Accept')!r}")
        if headers.get("X-GitHub-Api-Version") != "2022-11-28":
            problems.append(f"X-GitHub-Api-Version is {headers.get('X-GitHub-Api-Version')!r}")
        request = MockRequest(
            SPEC_SERVER,
            method,
            path,
            args=query,
            data=body or None,
            content_type=headers.get("Content-Type") or "application/json",
        )
        problems += [_describe(error) for error in self.openapi.iter_request_errors(request)]
        if route is None:
            problems.append("the emulator does not implement this endpoint")
            return problems
        operation = self.document["paths"][route[1]][method.lower()]
        declared = {
            self.sample.resolve(p)["name"]
            for p in operation.get("parameters", [])
            if self.sample.resolve(p)["in"] == "query"
        }
        problems += [
            f"undeclared query parameter {name!r}" for name, _ in query if name not in declared
        ]
        return problems

    def _check_response(
        self, method, path, query, body, template, status, payload, headers
    ) -> None:
        responses = self.document["paths"][template][method.lower()]["responses"]
        if str(status) not in responses:  # GitHub answers errors the description leaves out
            if status < 300:
                self.bad_responses.append(f"{method} {path}: status {status} is not documented")
            return
        request = MockRequest(SPEC_SERVER, method, path, args=query, data=body or None)
        data = b"" if payload is None else json.dumps(payload).encode()
        response = MockResponse(data, status_code=status, headers=headers)
        for error in self.openapi.iter_response_errors(request, response):
            self.bad_responses.append(f"{method} {path} → {status}: {_describe(error)}")

    def _error(self, message: str, errors: list[str] | None = None) -> dict:
        document = {"message": message, "documentation_url": "https://docs.github.com/rest"}
        if errors:
            document["errors"] = [{"code": "invalid", "message": e} for e in errors]
        return document

    # -- objects ----------------------------------------------------------------------------

    def _user(self, login: str = "github-actions[bot]") -> dict:
        kind = "Bot" if login.endswith("[bot]") else "User"
        return self.sample.named("simple-user", login=login, id=41898282, type=kind)

    def _comment(self, comment_id: int, number: int, body: str, login: str) -> dict:
        api = f"{SPEC_SERVER}/repos/{self.repo}"
        return self.sample.named(
            "issue-comment",
            id=comment_id,
            node_id=f"IC_{comment_id}",
            url=f"{api}/issues/comments/{comment_id}",
            html_url=f"https://github.com/{self.repo}/pull/{number}#issuecomment-{comment_id}",
            issue_url=f"{api}/issues/{number}",
            body=body,
            user=self._user(login),
            created_at=NOW,
            updated_at=NOW,
            author_association="NONE",
        )

    def _pull(
        self,
        number: int,
        title: str,
        head: str,
        base: str,
        body: str | None,
        sha: str = "0" * 40,
        fork: str | None = None,
    ) -> dict:
        owner = self.repo.split("/")[0]
        repository = self.sample.named("repository", full_name=self.repo, name=self.repo)
        ref = {"label": f"{owner}:{head}", "ref": head, "sha": sha, "repo": repository}
        if fork is not None:
            fork_repo = self.sample.named("repository", full_name=fork, name=fork, fork=True)
            ref |= {"label": f"{fork.split('/')[0]}:{head}", "repo": fork_repo}
        return self.sample.named(
            "pull-request",
            number=number,
            id=number + 500,
            state="open",
            title=title,
            body=body,
            html_url=f"https://github.com/{self.repo}/pull/{number}",
            head={**ref, "user": self._user(owner)},
            base={
                **ref,
                "label": f"{owner}:{base}",
                "ref": base,
                "sha": "0" * 40,
                "repo": repository,
                "user": self._user(owner),
            },
            user=self._user(),
        )

    def _labels(self, names: list[str]) -> list[dict]:
        return [
            self.sample.named("label", name=name, id=i + 1, color="ededed", default=False)
            for i, name in enumerate(names)
        ]

    def _schema(self, name: str, *fields: str) -> dict:
        schema = self.sample.resolve({"$ref": f"#/components/schemas/{name}"})
        for part in fields:
            schema = self.sample.resolve(schema["properties"][part])
        return schema

    def _resolve(self, ref: str) -> str | None:
        """The commit a branch name, ``refs/heads/NAME`` or (known) sha names."""
        ref = ref.removeprefix("refs/heads/")
        return self.branches.get(ref) or (ref if ref in self.commits else None)

    def _history(self, sha: str | None) -> list[str]:
        """``sha`` and its ancestors, newest first."""
        shas = []
        while sha:
            shas.append(sha)
            sha = self.commits[sha]["parent"]
        return shas

    def _merge_base(self, base: str, head: str) -> str | None:
        ancestors = set(self._history(base))
        return next((sha for sha in self._history(head) if sha in ancestors), None)

    def _commit(self, sha: str) -> dict:
        record, api = self.commits[sha], f"{SPEC_SERVER}/repos/{self.repo}"
        person = {"name": record["login"] or "Someone", "email": record["email"], "date": NOW}
        # no account: GitHub sends null or {}; openapi-core applies no `nullable` to a oneOf
        user = self._user(record["login"]) if record["login"] else {}
        parents = [record["parent"]] if record["parent"] else []
        return self.sample.named(
            "commit",
            sha=sha,
            node_id=f"C_{sha[:12]}",
            url=f"{api}/commits/{sha}",
            html_url=f"https://github.com/{self.repo}/commit/{sha}",
            comments_url=f"{api}/commits/{sha}/comments",
            author=user,
            committer=user,
            commit={
                **self.sample.of(self._schema("commit", "commit")),
                "url": f"{api}/git/commits/{sha}",
                "author": person,
                "committer": person,
                "message": record["message"],
                "tree": {"sha": sha, "url": f"{api}/git/trees/{sha}"},
            },
            parents=[{"sha": p, "url": f"{api}/commits/{p}"} for p in parents],
        )

    def _git_ref(self, branch: str) -> dict:
        sha, api = self.branches[branch], f"{SPEC_SERVER}/repos/{self.repo}"
        return self.sample.named(
            "git-ref",
            ref=f"refs/heads/{branch}",
            node_id=f"REF_{branch}",
            url=f"{api}/git/refs/heads/{branch}",
            object={"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        )

    def _file_entry(self, path: str, data: bytes, ref: str) -> dict:
        api, sha = f"{SPEC_SERVER}/repos/{self.repo}", _blob_sha(data)
        links = {
            "self": f"{api}/contents/{path}?ref={ref}",
            "git": f"{api}/git/blobs/{sha}",
            "html": f"https://github.com/{self.repo}/blob/{ref}/{path}",
        }
        return {
            "type": "file",
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "size": len(data),
            "url": links["self"],
            "git_url": links["git"],
            "html_url": links["html"],
            "download_url": f"https://raw.githubusercontent.com/{self.repo}/{ref}/{path}",
            "_links": links,
        }

    def _deployment_status(self, deployment: dict, body: dict) -> dict:
        self._ids += 1
        url = f"{deployment['url']}/statuses/{self._ids}"
        log_url = body.get("log_url") or body.get("target_url") or ""
        return self.sample.named(
            "deployment-status",
            id=self._ids,
            node_id=f"DES_{self._ids}",
            state=body["state"],
            creator=self._user(),
            description=body.get("description", ""),
            environment=body.get("environment", deployment["environment"]),
            environment_url=body.get("environment_url", ""),
            target_url=log_url,
            log_url=log_url,
            deployment_url=deployment["url"],
            repository_url=deployment["repository_url"],
            url=url,
            created_at=NOW,
            updated_at=NOW,
        )

    # -- endpoints (params from the path, query, JSON body) -> (status, payload, headers) ----

    def _list_comments(self, params, query, _body):
        items = sorted(self.issue_comments(int(params["number"])), key=lambda c: c["id"])
        return self._page(items, query, f"/repos/{self.repo}/issues/{params['number']}/comments")

    def _create_comment(self, params, _query, body):
        comment = self.add_comment(int(params["number"]), body["body"], "github-actions[bot]")
        return 201, comment, {}

    def _update_comment(self, params, _query, body):
        comment = self.comments.get(int(params["id"]))
        if comment is None:
            return 404, self._error("Not Found"), {}
        comment.update(body=body["body"], updated_at=NOW)
        return 200, comment, {}

    def _delete_comment(self, params, _query, _body):
        if self.comments.pop(int(params["id"]), None) is None:
            return 404, self._error("Not Found"), {}
        return 204, None, {}

    def _add_labels(self, params, _query, body):
        names = self.labels.setdefault(int(params["number"]), [])
        names += [n for n in body["labels"] if n not in names]
        return 200, self._labels(names), {}

    def _list_pulls(self, _params, query, _body):
        items = [
            p
            for p in sorted(self.pulls.values(), key=lambda p: -p["number"])
            if p["state"] == query.get("state", "open")
            and ("head" not in query or p["head"]["label"] == query["head"])
            and ("base" not in query or p["base"]["ref"] == query["base"])
        ]
        return self._page(items, query, f"/repos/{self.repo}/pulls")

    def _commit_pulls(self, params, query, _body):
        sha = params["sha"]
        items = [
            p
            for p in sorted(self.pulls.values(), key=lambda p: -p["number"])
            if sha in (p["head"]["sha"], p.get("merge_commit_sha"))
        ]
        return self._page(items, query, f"/repos/{self.repo}/commits/{sha}/pulls")

    def _create_pull(self, _params, _query, body):
        if body["head"] not in self.branches or body["base"] not in self.branches:
            return 422, self._error("Validation Failed", ["head or base branch not found"]), {}
        label = f"{self.repo.split('/')[0]}:{body['head']}"
        if any(p["head"]["label"] == label and p["state"] == "open" for p in self.pulls.values()):
            return (
                422,
                self._error("Validation Failed", [f"A pull request already exists for {label}."]),
                {},
            )
        number = len(self.pulls) + 1
        head = self.branches[body["head"]]
        pull = self._pull(number, body["title"], body["head"], body["base"], body.get("body"), head)
        self.pulls[number] = pull
        return 201, pull, {}

    def _get_pull(self, params, _query, _body):
        pull = self.pulls.get(int(params["number"]))
        if pull is None:
            return 404, self._error("Not Found"), {}
        return 200, pull, {}

    def _update_pull(self, params, _query, body):
        pull = self.pulls.get(int(params["number"]))
        if pull is None:
            return 404, self._error("Not Found"), {}
        pull.update({k: v for k, v in body.items() if k in ("title", "body", "state")})
        return 200, pull, {}

    def _create_status(self, params, _query, body):
        status = self.sample.named(
            "status",
            id=len(self.statuses) + 1,
            state=body["state"],
            context=body.get("context", "default"),
            description=body.get("description"),
            target_url=body.get("target_url"),
            creator=self._user(),
            sha=params["sha"],
        )
        self.statuses.append(status)
        return 201, status, {}

    def _get_content(self, params, query, _body):
        ref = query.get("ref", "main")
        sha = self._resolve(ref)
        if sha is None:
            return 404, self._error(f"No commit found for the ref {ref}"), {}
        data = self.commits[sha]["files"].get(params["path"])
        if data is None:
            return 404, self._error("Not Found"), {}
        text = base64.b64encode(data).decode()
        wrapped = "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))
        entry = self._file_entry(params["path"], data, ref)
        return 200, {**entry, "content": wrapped, "encoding": "base64"}, {}

    def _put_content(self, params, _query, body):
        branch, path = body.get("branch", "main"), params["path"]
        if branch not in self.branches:
            return 404, self._error(f"Branch {branch} not found"), {}
        current = self.commits[self.branches[branch]]["files"].get(path)
        if current is not None and "sha" not in body:
            return 422, self._error('Invalid request.\n\n"sha" wasn\'t supplied.'), {}
        if current is not None and body["sha"] != _blob_sha(current):
            return 409, self._error(f"{path} does not match {body['sha']}"), {}
        try:
            data = base64.b64decode(body["content"], validate=True)
        except ValueError:
            return 422, self._error("content is not valid Base64"), {}
        sha = self.push(
            branch,
            {path: data},
            login="github-actions[bot]",
            email=BOT_EMAIL,
            message=body["message"],
        )
        commit = self._commit(sha)
        answer = {
            "content": self._file_entry(path, data, branch),
            "commit": {
                **{k: commit[k] for k in ("sha", "node_id", "url", "html_url", "parents")},
                **{k: commit["commit"][k] for k in ("author", "committer", "message", "tree")},
            },
        }
        return (201 if current is None else 200), answer, {}

    def _get_ref(self, params, _query, _body):
        branch = params["ref"].removeprefix("heads/")
        if not params["ref"].startswith("heads/") or branch not in self.branches:
            return 404, self._error("Not Found"), {}
        return 200, self._git_ref(branch), {}

    def _create_ref(self, _params, _query, body):
        branch = body["ref"].removeprefix("refs/heads/")
        if not body["ref"].startswith("refs/heads/") or not branch:
            return 422, self._error("Reference name must be refs/heads/NAME (emulator)"), {}
        if body["sha"] not in self.commits:
            return 422, self._error("Object does not exist"), {}
        if branch in self.branches:
            return 422, self._error("Reference already exists"), {}
        self.branches[branch] = body["sha"]
        return 201, self._git_ref(branch), {}

    def _update_ref(self, params, _query, body):
        branch = params["ref"].removeprefix("heads/")
        if branch not in self.branches:
            return 422, self._error("Reference does not exist"), {}
        if body["sha"] not in self.commits:
            return 422, self._error("Object does not exist"), {}
        if not body.get("force") and self.branches[branch] not in self._history(body["sha"]):
            return 422, self._error("Update is not a fast forward"), {}
        self.branches[branch] = body["sha"]
        return 200, self._git_ref(branch), {}

    def _compare(self, params, query, _body):
        base_ref, head_ref = params["basehead"].split("...", 1)
        base, head = self._resolve(base_ref), self._resolve(head_ref)
        merge_base = self._merge_base(base, head) if base and head else None
        if merge_base is None:
            return 404, self._error("Not Found"), {}
        history = self._history(head)
        ahead = list(reversed(history[: history.index(merge_base)]))  # oldest first
        behind = self._history(base).index(merge_base)
        status = {(0, 0): "identical", (1, 0): "ahead", (0, 1): "behind"}.get(
            (min(len(ahead), 1), min(behind, 1)), "diverged"
        )
        per_page, page = int(query.get("per_page", 250)), int(query.get("page", 1))
        html = f"https://github.com/{self.repo}/compare/{params['basehead']}"
        comparison = self.sample.named(
            "commit-comparison",
            url=f"{SPEC_SERVER}/repos/{self.repo}/compare/{params['basehead']}",
            html_url=html,
            permalink_url=html,
            diff_url=f"{html}.diff",
            patch_url=f"{html}.patch",
            base_commit=self._commit(base),
            merge_base_commit=self._commit(merge_base),
            status=status,
            ahead_by=len(ahead),
            behind_by=behind,
            total_commits=len(ahead),
            commits=[self._commit(s) for s in ahead[(page - 1) * per_page : page * per_page]],
        )
        return 200, comparison, {}

    def _request_reviewers(self, params, _query, body):
        pull = self.pulls.get(int(params["number"]))
        if pull is None:
            return 404, self._error("Not Found"), {}
        logins = body.get("reviewers", [])
        if any(n not in self.collaborators or n == pull["user"]["login"] for n in logins):
            return 422, self._error(NOT_COLLABORATOR.format(repo=self.repo)), {}
        requested = pull.setdefault("requested_reviewers", [])
        have = {user["login"] for user in requested}
        requested += [self._user(n) for n in dict.fromkeys(logins) if n not in have]
        return 201, pull, {}

    def _pull_files(self, params, query, _body):
        pull = self.pulls.get(int(params["number"]))
        if pull is None:
            return 404, self._error("Not Found"), {}
        head = pull["head"]["sha"] if pull["head"]["sha"] in self.commits else None
        if pull["head"]["repo"]["full_name"] == self.repo:  # not a fork: the branch's head
            head = self._resolve(pull["head"]["ref"]) or head
        base = self._resolve(pull["base"]["ref"])
        merge_base = self._merge_base(base, head) if base and head else None
        old = self.commits[merge_base]["files"] if merge_base else {}
        new = self.commits[head]["files"] if head else {}
        entries = []
        for path in sorted(set(old) | set(new)):
            if old.get(path) == new.get(path):
                continue
            status = "added" if path not in old else "removed" if path not in new else "modified"
            entry = self._file_entry(path, new.get(path, old.get(path)), head or "main")
            entries.append(
                self.sample.named(
                    "diff-entry",
                    sha=entry["sha"],
                    filename=path,
                    status=status,
                    blob_url=entry["html_url"],
                    raw_url=entry["download_url"],
                    contents_url=entry["url"],
                )
            )
        return self._page(entries, query, f"/repos/{self.repo}/pulls/{params['number']}/files")

    def _list_deployments(self, _params, query, _body):
        keys = ("sha", "ref", "task", "environment")
        items = [
            d
            for d in sorted(self.deployments.values(), key=lambda d: -d["id"])
            if all(d[key] == query[key] for key in keys if key in query)
        ]
        return self._page(items, query, f"/repos/{self.repo}/deployments")

    def _create_deployment(self, _params, _query, body):
        sha = self._resolve(body["ref"])
        if sha is None:
            return 422, self._error(f"No ref found for: {body['ref']}"), {}
        if "required_contexts" not in body and any(
            s["sha"] == sha and s["state"] != "success" for s in self.statuses
        ):
            return 409, self._error(f"Conflict: Commit status checks failed for {body['ref']}."), {}
        self._ids += 1
        api, environment = f"{SPEC_SERVER}/repos/{self.repo}", body.get("environment", "production")
        deployment = self.sample.named(
            "deployment",
            id=self._ids,
            node_id=f"DE_{self._ids}",
            sha=sha,
            ref=body["ref"],
            task=body.get("task", "deploy"),
            payload=body.get("payload", {}),
            environment=environment,
            original_environment=environment,
            description=body.get("description", ""),
            creator=self._user(),
            url=f"{api}/deployments/{self._ids}",
            statuses_url=f"{api}/deployments/{self._ids}/statuses",
            repository_url=api,
            created_at=NOW,
            updated_at=NOW,
            transient_environment=body.get("transient_environment", False),
            production_environment=body.get("production_environment", environment == "production"),
        )
        self.deployments[self._ids] = deployment
        self.deployment_statuses[self._ids] = []
        return 201, deployment, {}

    def _list_deployment_statuses(self, params, query, _body):
        if int(params["id"]) not in self.deployments:
            return 404, self._error("Not Found"), {}
        items = self.deployment_statuses[int(params["id"])]
        return self._page(items, query, f"/repos/{self.repo}/deployments/{params['id']}/statuses")

    def _create_deployment_status(self, params, _query, body):
        deployment = self.deployments.get(int(params["id"]))
        if deployment is None:
            return 404, self._error("Not Found"), {}
        status = self._deployment_status(deployment, body)
        self.deployment_statuses[deployment["id"]].insert(0, status)
        return 201, status, {}

    def _page(self, items: list, query: dict, path: str) -> tuple[int, list, dict]:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        links = []
        rest = {k: v for k, v in query.items() if k not in ("page", "per_page")}

        def link(number: int, rel: str) -> str:
            q = urlencode({**rest, "per_page": per_page, "page": number})
            return f'<{self.url}{path}?{q}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        chunk = items[(page - 1) * per_page : page * per_page]
        return 200, chunk, {"Link": ", ".join(links)} if links else {}


def _blob_sha(data: bytes) -> str:
    """Git's object id of a blob, as GitHub reports a file's ``sha``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _describe(error: BaseException) -> str:
    """openapi-core's error with the schema errors that name the field."""
    parts = [str(error).split(":")[0]]
    node: BaseException | None = error
    while node is not None:
        for schema_error in getattr(node, "schema_errors", None) or []:
            where = "/".join(str(p) for p in schema_error.absolute_path)
            parts.append(f"{where or 'body'}: {schema_error.message}")
        if not getattr(node, "schema_errors", None) and node is not error:
            parts.append(str(node))
        node = node.__cause__
    return " — ".join(parts)
