"""The load of the fault suite: users of the example project, each in its own thread, writing
and reading back what they wrote, through gunicorn, while a test breaks a service under them.

Each user repeats: read its own lists (and check that every write it was told succeeded
shows), create a content (then read it back, detail and list), complete a review (then read
today's reviews and its statistics back); while :attr:`Load.writing` is cleared, only the
reads. What is counted, per phase (before, during and
after the fault):

- ``five_xx``: responses 500 and up, and requests that got no response at all;
- ``slow``: requests that took longer than the bound (those that timed out included), and
  ``in_flight`` the slow ones that were already running when the fault took hold;
- ``stale``: reads that miss one of the user's own acknowledged writes;
- ``lost``: writes answered 2xx that are not in the primary afterwards (:func:`lost_writes`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import psycopg

# A request slower than this counts as waiting past the bound. Healthy requests take tens of
# milliseconds; the longest bound of a fault is 2 s (a replica's connect_timeout, libpq's
# minimum, or the router's REPLICA_CHECK_TIMEOUT), and the rest is room for a 2-core machine
# shared with other work. A request held by a hung server for the whole fault (6 s) exceeds it.
BOUND_SECONDS = 4.0
# The client gives up here (counted as slow and as a failure): a request held by a hung
# server would otherwise hold the user until the fault ends.
CLIENT_TIMEOUT = 15.0
CSRF_TOKEN = "faultsuitecsrftoken0123456789abc"  # 32 characters: Django takes it unmasked
PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class User:
    username: str
    user_id: int
    session_key: str
    schedule_ids: list[int]
    category_id: int


@dataclass
class Counts:
    requests: Counter[str] = field(default_factory=Counter)
    five_xx: Counter[str] = field(default_factory=Counter)
    slow: Counter[str] = field(default_factory=Counter)
    # Slow, but already running when the fault struck (Load.fault_at): a query sent to a server
    # that then hangs waits for it, which no client-side bound covers (docs/failure-modes.md).
    in_flight: Counter[str] = field(default_factory=Counter)
    stale: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, phase: str, what: str) -> None:
        getattr(self, kind)[phase] += 1
        example = f"{kind} ({phase}): {what}"
        if len(self.examples) < 10 and example not in self.examples:
            self.examples.append(example)


@dataclass
class Written:
    """What the user was told succeeded: the lost-write check looks for it in the primary."""

    contents: list[int] = field(default_factory=list)
    completions: int = 0


class Client:
    """One user's keep-alive HTTP connection with its cookies: the session, the CSRF token,
    and whatever the server sets (the sticky-reads cookie of the router's middleware)."""

    def __init__(self, host: str, port: int, user: User, load: Load) -> None:
        self.host, self.port = host, port
        self.cookies = {"sessionid": user.session_key, "csrftoken": CSRF_TOKEN}
        self.load = load
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and JSON body; status 0 when no response came."""
        phase = self.load.phase
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers.update({"Content-Type": "application/json", "X-CSRFToken": CSRF_TOKEN})
        started = time.monotonic()
        status, data = 0, None
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=CLIENT_TIMEOUT
                )
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
            raw = response.read()
            status = response.status
            self._keep_cookies(response.headers.get_all("Set-Cookie") or [])
            if raw and response.headers.get("Content-Type", "").startswith("application/json"):
                data = json.loads(raw)
        except (OSError, http.client.HTTPException) as error:
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            data = f"{type(error).__name__}: {error}"
        elapsed = time.monotonic() - started
        counts = self.load.counts
        with self.load.lock:
            counts.requests[phase] += 1
            if status == 0 or status >= 500:
                counts.note("five_xx", phase, f"{method} {path} -> {status or data}")
            if elapsed > BOUND_SECONDS:
                fault_at = self.load.fault_at
                kind = "in_flight" if fault_at is not None and started < fault_at else "slow"
                counts.note(kind, phase, f"{method} {path} took {elapsed:.2f} s")
        return status, data

    def _keep_cookies(self, headers: list[str]) -> None:
        for header in headers:
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


class UserLoop:
    def __init__(self, user: User, client: Client, load: Load) -> None:
        self.user, self.client, self.load = user, client, load
        self.written = Written()
        self.completed: set[int] = set()
        self.base_contents: int | None = None
        self.base_reviews: int | None = None
        self.due: list[int] = []
        self.iteration = 0

    def stale(self, what: str) -> None:
        with self.load.lock:
            self.load.counts.note("stale", self.load.phase, f"{self.user.username}: {what}")

    def run(self) -> None:
        while not self.load.stopping.is_set():
            self.iteration += 1
            self.read_back()
            if self.load.writing.is_set():
                self.create()
                self.complete()
            time.sleep(0.02)

    # -- reads: every acknowledged write must show -------------------------------------------

    def check_list(self) -> None:
        status, data = self.client.request("GET", "/api/content/")
        if status != 200:
            return
        if self.base_contents is None:
            self.base_contents = data["count"]
            return
        expected = self.base_contents + len(self.written.contents)
        if data["count"] < expected:
            self.stale(f"content list counts {data['count']}, expected {expected} or more")
        elif self.written.contents:
            latest = self.written.contents[-1]
            if latest not in {row["id"] for row in data["results"]}:
                self.stale(f"content list lacks the newest content {latest}")

    def check_today(self) -> None:
        status, data = self.client.request("GET", "/api/review/today/")
        if status != 200:
            return
        due = [row["id"] for row in data["results"]]
        if shown := self.completed.intersection(due):
            self.stale(f"today's reviews still list completed schedules {sorted(shown)}")
        self.due = [sid for sid in due if sid not in self.completed]

    def check_stats(self) -> None:
        status, data = self.client.request("GET", "/api/analytics/stats/")
        if status != 200:
            return
        if self.base_reviews is None:
            self.base_reviews = data["total_reviews"]
            return
        expected = self.base_reviews + self.written.completions
        if data["total_reviews"] < expected:
            self.stale(f"stats count {data['total_reviews']} reviews, expected {expected}+")

    def check_detail(self) -> None:
        """Not cached: a read of the router's choice of database, where the cached lists would
        still show what was computed before a fault."""
        if not self.written.contents:
            return
        latest = self.written.contents[-1]
        status, _ = self.client.request("GET", f"/api/content/{latest}/")
        if status == 404:
            self.stale(f"content {latest} not found")

    def read_back(self) -> None:
        self.check_list()
        self.check_today()
        self.check_stats()
        self.check_detail()

    # -- writes ------------------------------------------------------------------------------

    def create(self) -> None:
        title = f"fault {self.user.username} {self.iteration}"
        body = {"title": title, "body": "written under a fault", "category": self.user.category_id}
        status, data = self.client.request("POST", "/api/content/", body)
        if status != 201:
            return
        self.written.contents.append(data["id"])
        self.check_detail()
        if self.base_contents is not None:
            self.check_list()

    def complete(self) -> None:
        candidates = self.due or [s for s in self.user.schedule_ids if s not in self.completed]
        if not candidates:
            return
        schedule = candidates[0]
        result = "remembered" if self.iteration % 3 else "forgot"
        status, _ = self.client.request(
            "POST", f"/api/review/complete/{schedule}/", {"result": result}
        )
        if status != 200:
            return
        self.written.completions += 1
        self.completed.add(schedule)
        self.check_today()
        if self.base_reviews is not None:
            self.check_stats()


class Load:
    """The users' threads; :attr:`phase` labels what each request is counted under."""

    def __init__(self, base_url: str, users: list[User]) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        # Cleared: the users only read. A write's own invalidation would hide the entries that
        # a fault left stale (a newer generation replaces them), so after a fault the users
        # first read what they wrote during it, as most of them would.
        self.writing = threading.Event()
        self.writing.set()
        self.phase = PHASES[0]
        # When the fault took hold (time.monotonic()), for the faults that can catch a request
        # mid-query; see Counts.in_flight.
        self.fault_at: float | None = None
        self.counts = Counts()
        self.loops = [UserLoop(user, Client(host, int(port), user, self), self) for user in users]
        self.threads = [threading.Thread(target=loop.run, daemon=True) for loop in self.loops]

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self.threads:
            thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            for thread in self.threads:
                thread.join(CLIENT_TIMEOUT + 5)
            for loop in self.loops:
                loop.client.close()

    def written(self) -> dict[int, Written]:
        return {loop.user.user_id: loop.written for loop in self.loops}


def lost_writes(conninfo: str, written: dict[int, Written], history_before: int) -> list[str]:
    """Every write the users were told succeeded, looked for in the primary."""
    lost = []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for user_id, writes in written.items():
            found = {
                row[0]
                for row in connection.execute(
                    "SELECT id FROM content_content WHERE author_id = %s AND id = ANY(%s)",
                    (user_id, writes.contents),
                )
            }
            lost += [
                f"content {cid} of user {user_id}" for cid in writes.contents if cid not in found
            ]
            row = connection.execute(
                "SELECT count(*) FROM review_reviewhistory WHERE user_id = %s AND id > %s",
                (user_id, history_before),
            ).fetchone()
            recorded = int(row[0]) if row else 0
            if recorded < writes.completions:
                lost.append(
                    f"{writes.completions - recorded} of {writes.completions} reviews of user "
                    f"{user_id}"
                )
    return lost


def max_history_id(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as connection:
        row = connection.execute("SELECT coalesce(max(id), 0) FROM review_reviewhistory").fetchone()
    return int(row[0]) if row else 0
