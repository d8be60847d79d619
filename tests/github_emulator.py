"""A GitHub REST emulator on 127.0.0.1 checking every request against GitHub's OpenAPI description.

Test code, not product code. Requests are validated with ``openapi-core`` against
``api.github.com.json`` from the npm package ``@octokit/openapi`` (``make test`` fetches it),
plus what the description cannot say: every query parameter is declared for the operation and
the ``Accept`` / ``X-GitHub-Api-Version`` headers are GitHub's. A request that does not validate
is answered 422 and recorded in ``Emulator.invalid``; the fixture fails the test when it is not
empty. Responses are built from the description's schemas and validated too (``bad_responses``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

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
]


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
    """In-memory GitHub for one repository: comments, pull requests, labels, statuses."""

    def __init__(self, openapi: OpenAPI, document: dict, repo: str = "acme/models") -> None:
        self.openapi = openapi
        self.document = document
        self.sample = Sample(document)
        self.repo = repo
        self.prefix = ""  # e.g. "/api/v3" to look like GitHub Enterprise Server
        self.lock = threading.RLock()
        self.faults: deque[Fault] = deque()
        self.log: list[tuple[str, str, int]] = []  # (method, path+query, status answered)
        self.invalid: list[str] = []
        self.bad_responses: list[str] = []
        self.comments: dict[int, dict] = {}
        self.pulls: dict[int, dict] = {}
        self.labels: dict[int, list[str]] = {}
        self.statuses: list[dict] = []
        self.branches = {"main", "slipway/retrain", "feature"}
        self._ids = 1000
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
        self, times: int = 1, *, retry_after: int | None = 1, reset_in: int = 2, status: int = 403
    ) -> None:
        """Secondary rate limit: Retry-After, or (``retry_after=None``) remaining 0 + reset."""
        headers = {"x-ratelimit-limit": "5000", "x-ratelimit-used": "5000"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        else:
            reset = str(int(time.time()) + reset_in)
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

    def issue_comments(self, number: int) -> list[dict]:
        return [c for c in self.comments.values() if c["issue_url"].endswith(f"/issues/{number}")]

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p, _ in self.log if m == method and fragment in p)

    # -- HTTP --------------------------------------------------------------------------------

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        split = urlsplit(http.path)
        method = http.command
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        query = parse_qsl(split.query, keep_blank_values=True)
        path = split.path.removeprefix(self.prefix)
        if self.hold is not None and method == "GET":
            self.hold.wait(timeout=10)
        with self.lock:
            try:
                status, payload, headers = self._answer(method, path, query, body, http.headers)
            except Exception as exc:  # an emulator bug: fail the test, not just this request
                self.bad_responses.append(f"{method} {path}: emulator raised {exc!r}")
                status, payload, headers = 500, {"message": "emulator error"}, {}
            self.log.append((method, http.path, status))
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
        problems = self._validate(method, path, query, body, headers, route)
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
        handler, template, params = route
        status, payload, extra = handler(params, dict(query), json.loads(body or b"null"))
        self._check_response(method, path, query, body, template, status, payload, extra)
        if fault:
            return fault.status, {"message": fault.message}, fault.headers
        return status, payload, extra

    def _route(self, method: str, path: str) -> tuple[Any, str, dict] | None:
        base = f"/repos/{self.repo}"
        if not path.startswith(base):
            return None
        for verb, pattern, template, name in ROUTES:
            match = re.fullmatch(pattern, path[len(base) :])
            if verb == method and match:
                handler = getattr(self, f"_{name}")
                return handler, "/repos/{owner}/{repo}" + template, match.groupdict()
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
        pull = self._pull(number, body["title"], body["head"], body["base"], body.get("body"))
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
