"""An in-process stand-in for the engine's state API, following the contract the SDK is
written against (the live engine is tested in test_state_live.py): per-job state with
versions, a run token's writes held apart until commit, If-Match, problem+json errors."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

from conftest import Reply, Seen

ADMIN = "jd_admin_token_0123456789"
RUN = "jd_run_token_abcdef987654"


@dataclass
class JobState:
    versions: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    held: Optional[dict[str, Any]] = None

    @property
    def version(self) -> int:
        return len(self.versions)

    @property
    def current(self) -> dict[str, Any]:
        return self.versions[-1]["state"] if self.versions else {}

    def add(self, state: dict[str, Any], run_id: Optional[str]) -> int:
        self.versions.append({"version": self.version + 1, "state": state,
                              "created_at": f"2026-12-05T07:00:{len(self.versions):02d}Z",
                              "run_id": run_id})
        return self.version


def problem(status: int, title: str, detail: str) -> Reply:
    return Reply(status, {"type": "about:blank", "title": title, "status": status, "detail": detail},
                 headers={"Content-Type": "application/problem+json"})


class FakeEngine:
    def __init__(self, run_job: str = "orders", run_id: str = "run-42") -> None:
        self.jobs: dict[str, JobState] = {}
        self.run_job = run_job
        self.run_id = run_id

    def __call__(self, seen: Seen) -> Reply:
        parts = urllib.parse.urlsplit(seen.path)
        path = urllib.parse.unquote(parts.path)
        q = dict(urllib.parse.parse_qsl(parts.query))
        auth = seen.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if token not in (ADMIN, RUN):
            return problem(401, "Unauthorized", "missing or unknown token")
        segs = path.strip("/").split("/")
        if segs[:3] != ["api", "v1", "jobs"] or len(segs) < 5 or segs[4] != "state":
            return problem(404, "Not Found", "no such endpoint; see /api/v1/openapi.json")
        job, rest = segs[3], segs[5:]
        is_run = token == RUN
        if is_run and job != self.run_job:
            return problem(403, "Forbidden", "a run token reaches only its own job")
        st = self.jobs.setdefault(job, JobState())
        etag = {"ETag": f'"{st.version}"'}
        if seen.method == "GET" and not rest:
            body = st.held if is_run and st.held is not None else st.current
            return Reply(200, body, headers=etag)
        if seen.method == "PUT" and not rest:
            want = seen.headers.get("If-Match")
            if want is not None and want != f'"{st.version}"':
                return problem(412, "Precondition Failed",
                               f"the state is at version {st.version}, not {want}")
            body = seen.json()
            if not isinstance(body, dict):
                return Reply(422, {"title": "Unprocessable", "detail": "not an object",
                                   "errors": [{"field": "", "message": "must be an object"}]})
            if is_run:
                st.held = body
                return Reply(202, None)
            st.add(body, None)
            return Reply(200, None, headers={"ETag": f'"{st.version}"'})
        if seen.method == "POST" and rest == ["commit"]:
            if not is_run:
                return problem(403, "Forbidden", "only a run commits")
            if st.held is not None:
                st.add(st.held, self.run_id)
                st.held = None
            return Reply(200, None, headers={"ETag": f'"{st.version}"'})
        if seen.method == "GET" and rest == ["versions"]:
            limit = int(q.get("limit", 50))
            start = int(q.get("cursor", 0))
            newest_first = list(reversed(st.versions))
            items = newest_first[start:start + limit]
            more = start + limit < len(newest_first)
            return Reply(200, {"items": items, "next_cursor": str(start + limit) if more else None})
        if seen.method == "POST" and rest == ["revert"]:
            n = seen.json().get("version")
            match = [v for v in st.versions if v["version"] == n]
            if not match:
                return Reply(422, {"title": "Unprocessable Entity", "detail": "no such version",
                                   "errors": [{"field": "version", "message": f"no version {n}"}]},
                             headers={"Content-Type": "application/problem+json"})
            st.add(match[0]["state"], None)
            return Reply(200, match[0]["state"], headers={"ETag": f'"{st.version}"'})
        return problem(405, "Method Not Allowed", seen.method)

    def commit_run(self, job: str) -> None:
        """What the engine does when the run succeeds."""
        st = self.jobs.setdefault(job, JobState())
        if st.held is not None:
            st.add(st.held, self.run_id)
            st.held = None
