"""Client sessions and their runs: who may read which result, and for how long.

A client opens a session and gets its id and a secret key; every run it starts belongs to that session and is
read (status, result) or cancelled only with that key. The key is an HMAC of the id under the registry's secret,
so replicas that share the secret (Ray Serve, :mod:`ray_deployment`) accept each other's sessions, and a restarted
server (a new secret) does not know the old ones. A session idle for longer than the timeout (no request and no
run under way) expires: the next request on it is told so (:class:`SessionExpired`) and the client opens a new
one. The registry holds at most ``max_sessions`` sessions; expired ones are dropped first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional

#: Finished runs a session keeps for reading, the oldest dropped first.
KEPT_RUNS = 16
#: Expired session ids remembered, so that a late request hears "expired" rather than "unknown".
REMEMBERED_EXPIRED = 1024

_run_numbers = itertools.count(1)


class SessionProblem(Exception):
    """A request on a session that cannot be served; ``status`` is the HTTP status to answer with."""

    status = 400


class SessionUnknown(SessionProblem):
    status = 404


class SessionExpired(SessionProblem):
    status = 410


class SessionForbidden(SessionProblem):
    status = 403


class ServerFull(SessionProblem):
    status = 503


@dataclass
class Run:
    """One request on the model: its state (``queued``, ``running``, ``done``, ``failed``, ``cancelled``), its
    progress, and when done the compressed result frame."""

    op: str
    session_id: str
    header: dict
    arrays: dict
    run_id: str = field(default_factory=lambda: f"r{next(_run_numbers)}-{secrets.token_hex(4)}")
    state: str = "queued"
    done: int = 0
    total: int = 0
    message: str = ""
    kind: str = ""  # for a failed run: "input" (what the client sent) or "runtime"
    body: bytes = b""
    cancel_requested: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)
    version: int = 0
    changed_at: float = field(default_factory=time.monotonic)  # when it last changed (time.monotonic)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def update(self, **values: object) -> None:
        with self.changed:
            for name, value in values.items():
                setattr(self, name, value)
            self.version += 1
            self.changed_at = time.monotonic()
            self.changed.notify_all()

    def wait_change(self, since: int, timeout: float) -> None:
        """Return when the run changed after ``since`` (its ``version``), or after ``timeout`` seconds."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != since or self.finished, timeout)

    def status(self) -> dict:
        return {"run": self.run_id, "op": self.op, "state": self.state, "done": self.done, "total": self.total,
                "message": self.message, "kind": self.kind, "version": self.version}


@dataclass
class ClientSession:
    session_id: str
    key: str
    last_seen: float
    runs: OrderedDict[str, Run] = field(default_factory=OrderedDict)

    def idle_for(self, now: float) -> float:
        """Seconds without a request and without a run under way: since its last request or since its last run
        ended, whichever is later; 0 while one of its runs is under way (its client is waiting on it)."""
        if any(not run.finished for run in self.runs.values()):
            return 0.0
        return now - max([self.last_seen, *(run.changed_at for run in self.runs.values())])

    def add(self, run: Run) -> None:
        self.runs[run.run_id] = run
        finished = [rid for rid, r in self.runs.items() if r.finished]
        for rid in finished[: max(0, len(self.runs) - KEPT_RUNS)]:
            del self.runs[rid]


class SessionRegistry:
    """The sessions of one server process (thread-safe). ``timeout_s``: idle time before a session expires
    (:meth:`ClientSession.idle_for`); ``secret``: the key the session keys are made with (default: new for this
    process); ``clock``: :func:`time.monotonic` or a clock on its scale."""

    def __init__(self, max_sessions: int, timeout_s: float, secret: Optional[bytes] = None,
                 clock=time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.timeout_s = timeout_s
        self._secret = secret or secrets.token_bytes(32)
        self._clock = clock
        self._sessions: Dict[str, ClientSession] = {}
        self._expired: Deque[str] = deque(maxlen=REMEMBERED_EXPIRED)
        self._closed: Deque[str] = deque(maxlen=REMEMBERED_EXPIRED)
        self._lock = threading.Lock()

    def key_of(self, session_id: str) -> str:
        digest = hmac.new(self._secret, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def open(self) -> ClientSession:
        with self._lock:
            session_id = f"s{secrets.token_hex(8)}"
            return self._add(session_id)

    def _add(self, session_id: str) -> ClientSession:
        self._drop_expired()
        if len(self._sessions) >= self.max_sessions:
            raise ServerFull(f"the server holds {self.max_sessions} sessions (its --max-sessions); "
                             "try again when one ends or expires")
        session = ClientSession(session_id, self.key_of(session_id), self._clock())
        self._sessions[session_id] = session
        return session

    def get(self, session_id: str, key: Optional[str]) -> ClientSession:
        """The session, its idle clock restarted; raises a :class:`SessionProblem` naming what is wrong. A session
        another replica opened (its key made with this secret) is taken in."""
        valid = bool(key) and hmac.compare_digest(str(key), self.key_of(session_id))
        with self._lock:
            self._drop_expired()
            session = self._sessions.get(session_id)
            if session is None:
                if session_id in self._expired:
                    raise SessionExpired(f"session {session_id} expired after {self.timeout_s:.0f} s without "
                                         "requests; open a new session")
                if session_id in self._closed:
                    raise SessionUnknown(f"session {session_id} was closed; open a new session")
                if not valid:
                    raise SessionUnknown(f"no session {session_id} on this server (it may have restarted); "
                                         "open a new session")
                session = self._add(session_id)
            if not valid:
                raise SessionForbidden(f"the session key does not open session {session_id}")
            session.last_seen = self._clock()
            return session

    def close(self, session_id: str, key: Optional[str]) -> ClientSession:
        session = self.get(session_id, key)
        with self._lock:
            self._sessions.pop(session_id, None)
            self._closed.append(session_id)
        for run in session.runs.values():
            run.cancel_requested = True
        return session

    def _drop_expired(self) -> None:
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if session.idle_for(now) > self.timeout_s:
                del self._sessions[session_id]
                self._expired.append(session_id)
                for run in session.runs.values():
                    run.cancel_requested = True

    def __len__(self) -> int:
        with self._lock:
            self._drop_expired()
            return len(self._sessions)
