"""A small GitHub REST client: the sticky PR comment, bot PRs and branches, statuses, deployments.

Every call has a timeout and is retried with exponential backoff on 5xx, 429 and secondary rate
limits, waiting as long as GitHub asks (``Retry-After``, ``x-ratelimit-reset``) up to a cap. The
token goes into one request header and nowhere else: not into messages, reprs or logs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from slipway.errors import GitHubError
from slipway.github_repo import PER_PAGE, RepositoryContent

DEFAULT_API_URL = "https://api.github.com"
MARKER = "<!-- slipway:report -->"  # hidden first line of the sticky comment, found by it
API_VERSION = "2022-11-28"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BODY = 65536  # GitHub's limit on a comment's characters
_SCHEMES = ("http://", "https://")
TRUNCATED = "\n\n… report truncated to fit a GitHub comment; the full one is in the job summary.\n"

_HINTS = {
    401: "the token is missing, expired or revoked: check the token the workflow passes "
    "(GITHUB_TOKEN) and that the job's `permissions:` grant it",
    403: "the token lacks a permission: grant it in the workflow's `permissions:` "
    "(pull-requests, issues, statuses, deployments: write; contents: write for bot PRs)",
    404: "the repository or the PR/issue number is wrong, or the token cannot see the repository "
    "(check GITHUB_REPOSITORY, the PR number and the token's repository access)",
    410: "the resource is gone (issues may be disabled on the repository)",
    422: "GitHub rejected the request's content; the message above names the field",
}


class GitHub(RepositoryContent):
    """One repository on GitHub (or GitHub Enterprise Server: pass its ``api_url``).

    ``sleep`` and ``clock`` (the time a rate-limit reset is counted from) are seams for tests.
    """

    def __init__(
        self,
        token: str,
        repo: str,
        *,
        api_url: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 90.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not token:
            raise GitHubError("no GitHub token", "set GITHUB_TOKEN (the workflow's token)")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise GitHubError(f"repository {repo!r} is not OWNER/NAME", "set GITHUB_REPOSITORY")
        self.repo = repo
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self._token = token
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "slipway",
            }
        )

    def __repr__(self) -> str:
        return f"GitHub(repo={self.repo!r}, api_url={self.api_url!r})"

    def close(self) -> None:
        self._session.close()

    # -- transport ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def request(
        self, method: str, path: str, *, params: dict | None = None, json: Any = None
    ) -> requests.Response:
        """Send one API call (``path`` relative to the repo API root or an absolute API URL)."""
        url = path if path.startswith(_SCHEMES) else self.api_url + path
        if urlsplit(url).netloc != urlsplit(self.api_url).netloc:
            raise GitHubError(
                f"refusing to send the token to {urlsplit(url).netloc} (API is {self.api_url})",
                "GITHUB_API_URL must be the API that answers; a link to another host is a bug",
            )
        endpoint = f"{method} {urlsplit(url).path}"
        headers = {"Authorization": f"Bearer {self._token}"}
        for attempt in range(self.retries + 1):
            try:
                response = self._session.request(
                    method, url, params=params, json=json, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                if attempt < self.retries:
                    self._sleep(min(self.backoff * 2**attempt, self.max_wait))
                    continue
                raise GitHubError(
                    f"{endpoint}: {self._redact(type(exc).__name__ + ': ' + str(exc))}",
                    f"check that {self.api_url} is reachable (GITHUB_API_URL)",
                    endpoint=endpoint,
                ) from None
            wait = self._retry_wait(response, attempt)
            if wait is None or attempt == self.retries:
                break
            if wait > self.max_wait:
                raise self._error(response, endpoint, f"GitHub asks to wait {wait:.0f} s, ")
            self._sleep(wait)
        if response.status_code >= 400:
            raise self._error(response, endpoint)
        return response

    def _retry_wait(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or None when it is final.

        As GitHub documents: ``Retry-After`` seconds; else, with ``x-ratelimit-remaining: 0``,
        until ``x-ratelimit-reset``; else a minute for a secondary rate limit; else backoff.
        """
        if response.status_code not in RETRY_STATUSES and not _rate_limited(response):
            return None
        asked = _asked_wait(response.headers, self._clock())
        if asked is None and _rate_limited(response):
            asked = 60.0
        return asked if asked is not None else min(self.backoff * 2**attempt, self.max_wait)

    def _error(self, response: requests.Response, endpoint: str, waiting: str = "") -> GitHubError:
        status = response.status_code
        message = _message(response) or response.reason or "no message"
        errors = _field_errors(response)
        text = f"GitHub answered {status} to {endpoint}: {message}" + (
            f" ({errors})" if errors else ""
        )
        hint = _HINTS.get(status, "")
        if waiting:
            text += f"; {waiting}longer than the {self.max_wait:.0f} s Slipway waits"
        if status >= 500 or _rate_limited(response):
            hint = "GitHub is failing or rate limiting this token: re-run the job later"
        return GitHubError(self._redact(text), hint, status=status, endpoint=endpoint)

    def paginate(self, path: str, params: dict | None = None) -> Iterator[Any]:
        """Every item of a list endpoint, following the ``Link: rel="next"`` header."""
        url: str | None = path
        query = {"per_page": PER_PAGE, **(params or {})}
        while url:
            response = self.request("GET", url, params=query)
            yield from response.json()
            url = response.links.get("next", {}).get("url")
            query = None  # the next link carries the query

    # -- issue comments ----------------------------------------------------------------------

    def _repo(self, suffix: str) -> str:
        return f"/repos/{self.repo}{suffix}"

    def list_issue_comments(self, number: int) -> list[dict]:
        """All comments of an issue or pull request, oldest first, across every page."""
        return list(self.paginate(self._repo(f"/issues/{number}/comments")))

    def create_issue_comment(self, number: int, body: str) -> dict:
        return self.request(
            "POST", self._repo(f"/issues/{number}/comments"), json={"body": body}
        ).json()

    def update_issue_comment(self, comment_id: int, body: str) -> dict:
        return self.request(
            "PATCH", self._repo(f"/issues/comments/{comment_id}"), json={"body": body}
        ).json()

    def delete_issue_comment(self, comment_id: int) -> None:
        try:
            self.request("DELETE", self._repo(f"/issues/comments/{comment_id}"))
        except GitHubError as exc:
            if exc.status != 404:  # someone else already removed it
                raise

    def _marked(self, number: int, marker: str) -> list[dict]:
        comments = self.list_issue_comments(number)
        return sorted(
            (c for c in comments if (c.get("body") or "").lstrip().startswith(marker)),
            key=lambda c: c["id"],
        )

    def upsert_comment(self, number: int, body: str, marker: str = MARKER) -> dict:
        """Keep ONE comment that starts with ``marker``: edit it, or create it when there is none.

        Returns ``{"action": "created" | "updated" | "unchanged", "id", "url"}``. After creating,
        the comments are listed again and any other marked comment (a concurrent run, or a create
        that GitHub applied although it answered 5xx) is deleted, so reruns never leave two.
        """
        if not body.lstrip().startswith(marker):
            body = f"{marker}\n{body}"
        if len(body) > MAX_BODY:
            body = body[: MAX_BODY - len(TRUNCATED)] + TRUNCATED
        found, action = self._marked(number, marker), "updated"
        if not found:
            created, action = self.create_issue_comment(number, body), "created"
            listed = {c["id"]: c for c in self._marked(number, marker)}  # the list may lag
            found = sorted({**listed, created["id"]: created}.values(), key=lambda c: c["id"])
        keep = found[0]
        for extra in found[1:]:
            self.delete_issue_comment(extra["id"])
        if keep.get("body") != body:
            keep = self.update_issue_comment(keep["id"], body)
        elif action == "updated":
            action = "unchanged"
        return {"action": action, "id": keep["id"], "url": keep.get("html_url")}

    # -- pull requests, labels, statuses -----------------------------------------------------

    def get_pull_request(self, number: int) -> dict:
        """One pull request by number."""
        return self.request("GET", self._repo(f"/pulls/{number}")).json()

    def find_pull_request(self, head: str, base: str | None = None) -> dict | None:
        """The open pull request from branch ``head`` of this repository, if any."""
        params = {"head": f"{self.repo.split('/')[0]}:{head}", "state": "open"}
        if base:
            params["base"] = base
        return next(iter(self.paginate(self._repo("/pulls"), params)), None)

    def closed_pull_requests(self, head: str, base: str | None = None) -> list[dict]:
        """The closed pull requests (merged or not: ``merged_at``) from branch ``head`` of this
        repository, newest first."""
        params = {"head": f"{self.repo.split('/')[0]}:{head}", "state": "closed"}
        if base:
            params["base"] = base
        found = list(self.paginate(self._repo("/pulls"), params))
        return sorted(found, key=lambda pull: -int(pull["number"]))

    def upsert_pull_request(self, head: str, base: str, title: str, body: str) -> dict:
        """Open a pull request from the fixed branch ``head``, or update the one already open.

        Returns ``{"action": "created" | "updated", "number", "url"}``.
        """
        existing = self.find_pull_request(head, base)
        if existing is None:
            payload = {"title": title, "head": head, "base": base, "body": body}
            try:
                created = self.request("POST", self._repo("/pulls"), json=payload).json()
                return {
                    "action": "created",
                    "number": created["number"],
                    "url": created["html_url"],
                }
            except GitHubError as exc:  # a concurrent run opened it first
                existing = self.find_pull_request(head, base) if exc.status == 422 else None
                if existing is None:
                    raise
        pull = existing["number"]
        updated = self.request(
            "PATCH", self._repo(f"/pulls/{pull}"), json={"title": title, "body": body}
        ).json()
        return {"action": "updated", "number": pull, "url": updated["html_url"]}

    def add_labels(self, number: int, labels: list[str]) -> list[str]:
        """Add labels to an issue or pull request (missing labels are created); all its labels."""
        answer = self.request(
            "POST", self._repo(f"/issues/{number}/labels"), json={"labels": list(labels)}
        ).json()
        return [label["name"] for label in answer]

    def create_status(
        self,
        sha: str,
        state: str,
        context: str,
        description: str = "",
        target_url: str | None = None,
    ) -> dict:
        """Set a commit status (``error``, ``failure``, ``pending`` or ``success``)."""
        payload: dict[str, Any] = {"state": state, "context": context}
        if description:
            payload["description"] = description[:140]  # GitHub's limit
        if target_url:
            payload["target_url"] = target_url
        return self.request("POST", self._repo(f"/statuses/{sha}"), json=payload).json()

    def request_reviewers(self, number: int, reviewers: list[str]) -> dict:
        """Ask ``reviewers`` (logins) to review pull request ``number``; the pull request."""
        path = self._repo(f"/pulls/{number}/requested_reviewers")
        try:
            return self.request("POST", path, json={"reviewers": list(reviewers)}).json()
        except GitHubError as exc:
            if exc.status != 422:
                raise
            text = f"{exc.message}; cannot ask {', '.join(reviewers)} to review #{number}"
            hint = "reviewers must be collaborators of the repository, not the PR's author"
            raise GitHubError(text, hint, 422, exc.endpoint) from None

    def pull_request_files(self, number: int) -> list[str]:
        """The paths pull request ``number`` changes, across every page."""
        return [f["filename"] for f in self.paginate(self._repo(f"/pulls/{number}/files"))]

    def open_pull_requests(self) -> list[dict]:
        """Every open pull request of the repository, newest first."""
        return list(self.paginate(self._repo("/pulls"), {"state": "open"}))

    def pulls_of_commit(self, sha: str) -> list[dict]:
        """The pull requests that hold commit ``sha`` (for a merge commit: the one merged)."""
        return list(self.paginate(self._repo(f"/commits/{sha}/pulls")))


def _rate_limited(response: requests.Response) -> bool:
    """A primary or secondary rate limit: 403/429 with GitHub's headers or message."""
    headers = response.headers
    return response.status_code in (403, 429) and (
        "retry-after" in headers
        or headers.get("x-ratelimit-remaining") == "0"
        or "rate limit" in _message(response).lower()
    )


def _message(response: requests.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return ""
    return str(document.get("message", "")) if isinstance(document, dict) else ""


def _field_errors(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return ""
    parts = [
        e.get("message") or f"{e.get('field')}: {e.get('code')}"
        for e in errors
        if isinstance(e, dict)
    ]
    return "; ".join(p for p in parts if p)


def _asked_wait(headers: Mapping[str, str], now: float) -> float | None:
    """The wait GitHub asks for: ``Retry-After`` (seconds or a date), else the rate-limit reset."""
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - now)
            except (TypeError, ValueError):
                return None
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - now)
        except ValueError:
            return None
    return None
