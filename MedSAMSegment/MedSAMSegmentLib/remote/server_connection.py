"""One client's HTTP calls to a MedSAM server (standard library only, so it runs inside Slicer as it is).

Each method is one request of the API (docs/server.md). Answers the server gives as errors become
:class:`ServerError` subclasses that say what to do; a server that cannot be reached becomes
:class:`ServerUnreachable`, with one line naming the address.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Dict, Iterable, List, Optional, Tuple, Union

from .remote_protocol import API_PREFIX, FRAME_MEDIA_TYPE, Manifest, Message, unpack

#: Seconds a request may take before the server counts as not answering (a status request adds its wait).
REQUEST_TIMEOUT_S = 60.0
SESSION_KEY_HEADER = "X-MedSAM-Session-Key"
#: The volume a request works on, for a server with several replicas (Ray Serve routes by it).
ROUTING_HEADER = "serve_multiplexed_model_id"


class ServerError(RuntimeError):
    """The server answered with an error; ``status`` is its HTTP status, the message its one-line reason."""

    def __init__(self, message: str, status: int = 0, body: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class ServerInputError(ServerError, ValueError):
    """The server refused what was sent (boxes, settings, a volume): the user's input, not the server."""


class ServerUnreachable(ServerError):
    """No answer: the server is not running, not at that address, or stopped during the request."""


class SessionGone(ServerError):
    """The session expired or the server does not know it (it restarted): open a new one."""


class MissingSlices(ServerError):
    """The server needs these slices of the volume before it can run (``missing``)."""

    @property
    def missing(self) -> List[int]:
        return [int(i) for i in self.body.get("missing", [])]


class UnknownVolume(ServerError):
    """The server does not hold the volume: declare it and send its slices."""


def read_token(path: str) -> str:
    """The bearer token in ``path`` (white space around it removed); raises :class:`ServerInputError` naming the
    file when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ServerInputError(f"token file {path}: cannot be read ({exc.strerror}); give the file that holds the "
                               "server's token") from None
    if not token:
        raise ServerInputError(f"token file {path} is empty; give the file that holds the server's token")
    return token


def exchange(url: str, method: str, body: Union[bytes, Iterable[bytes], None], headers: Dict[str, str],
             timeout: float) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP request to ``url`` (http or https); returns the answer's status, headers and body, whatever the
    status. A ``body`` given as an iterable of chunks is sent chunked (no ``Content-Length``). A server may answer
    before it has read the whole body (413: larger than its limit) and close the connection, so that sending the
    rest fails: the answer it gave is still read and returned. Raises ``OSError`` or
    :class:`http.client.HTTPException` only when no answer can be read."""
    parsed = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    connection = kind(parsed.hostname or "", parsed.port, timeout=timeout)
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    try:
        try:
            connection.request(method, target, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: it has answered (413) and closed; its answer is waiting to be read
        answer = connection.getresponse()
        return answer.status, dict(answer.headers), answer.read()
    finally:
        connection.close()


def _classified(status: int, detail: str, body: dict) -> ServerError:
    if status == 409 and "missing" in body:
        return MissingSlices(detail, status, body)
    if status == 404 and body.get("need") == "volume":
        return UnknownVolume(detail, status, body)
    if status in (404, 410) and "session" in detail:
        return SessionGone(detail, status, body)
    if status == 401:
        return ServerError(f"the MedSAM server refused the token: {detail}; check the token in the settings",
                           status, body)
    if status in (413, 422):
        return ServerInputError(detail, status, body)
    return ServerError(f"the MedSAM server answered {status}: {detail}", status, body)


class ServerConnection:
    """Calls to the server at ``url`` (``http://host:port``) with the bearer ``token`` when one is given; holds
    the session it opened (:meth:`open_session`)."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = REQUEST_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServerInputError(f"server address {url!r}: give it as http://HOST:PORT")
        self.url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        self.token = token or None
        self.timeout = timeout
        self.session_id: Optional[str] = None
        self.session_key: Optional[str] = None
        #: The volume the next requests work on (sent in :data:`ROUTING_HEADER`).
        self.volume_hint: Optional[str] = None
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- plumbing -------------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Optional[bytes] = None, content_type: Optional[str] = None,
             session: bool = False, timeout: Optional[float] = None) -> Tuple[int, Dict[str, str], bytes]:
        """One request; returns status, headers and body, or raises a :class:`ServerError`."""
        headers = {"Accept": f"application/json, {FRAME_MEDIA_TYPE}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        if session and self.session_key:
            headers[SESSION_KEY_HEADER] = self.session_key
        if self.volume_hint:
            headers[ROUTING_HEADER] = self.volume_hint
        self.bytes_sent += len(body or b"")
        try:
            status, answer_headers, data = exchange(self.url + API_PREFIX + path, method, body, headers,
                                                    timeout or self.timeout)
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            raise ServerUnreachable(f"the MedSAM server at {self.url} did not answer ({exc or type(exc).__name__}); "
                                    "check that it runs and the address") from None
        self.bytes_received += len(data)
        if 200 <= status < 300:
            return status, answer_headers, data
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed = {}
        parsed = parsed if isinstance(parsed, dict) else {}
        detail = str(parsed.get("detail") or http.client.responses.get(status, "") or "no reason given")
        raise _classified(status, " ".join(detail.split()), parsed)

    def json(self, method: str, path: str, payload: Optional[object] = None, session: bool = False,
             timeout: Optional[float] = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        _, _, data = self.call(method, path, body, "application/json" if body is not None else None, session,
                               timeout)
        return json.loads(data.decode("utf-8")) if data else {}

    # -- the API --------------------------------------------------------------------------------------------

    def health(self) -> dict:
        return self.json("GET", "/health")

    def open_session(self) -> str:
        answer = self.json("POST", "/sessions")
        self.session_id, self.session_key = str(answer["session"]), str(answer["key"])
        return self.session_id

    def close_session(self) -> None:
        if self.session_id is None:
            return
        try:
            self.call("DELETE", f"/sessions/{self.session_id}", session=True, timeout=5.0)
        except ServerError:
            pass  # expired, unknown or unreachable: nothing is left to close
        self.session_id = self.session_key = None

    def declare(self, manifest: Manifest) -> dict:
        return self.json("PUT", f"/volumes/{manifest.volume_id}", manifest.to_wire())

    def upload(self, volume_id: str, frame: bytes) -> dict:
        _, _, data = self.call("POST", f"/volumes/{volume_id}/slices", frame, FRAME_MEDIA_TYPE)
        return json.loads(data.decode("utf-8"))

    def start_run(self, frame: bytes) -> dict:
        _, _, data = self.call("POST", f"/sessions/{self.session_id}/runs", frame, FRAME_MEDIA_TYPE, session=True)
        return json.loads(data.decode("utf-8"))

    def status(self, run_id: str, since: int = -1, wait: float = 0.0) -> dict:
        query = urllib.parse.urlencode({"since": since, "wait": wait})
        return self.json("GET", f"/sessions/{self.session_id}/runs/{run_id}?{query}", session=True,
                         timeout=self.timeout + wait)

    def result(self, run_id: str) -> Message:
        _, _, data = self.call("GET", f"/sessions/{self.session_id}/runs/{run_id}/result", session=True)
        return unpack(data)

    def cancel(self, run_id: str) -> None:
        self.call("DELETE", f"/sessions/{self.session_id}/runs/{run_id}", session=True, timeout=5.0)
