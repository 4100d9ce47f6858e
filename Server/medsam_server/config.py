"""The server's settings, checked before anything starts: where it listens, who may call it, what it holds.

The rule that keeps it closed by default: it listens on loopback unless ``host`` says otherwise, and any other
address needs a bearer token, read from a file (never from the command line, where other users of the machine
could read it in the process list).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Optional

from MedSAMSegmentLib.remote.server_address import is_loopback

#: Shortest token accepted, characters.
MIN_TOKEN_CHARS = 16


class ServerConfigError(ValueError):
    """A setting that cannot be served with; the message says what to change."""


@dataclass(frozen=True)
class ServerConfig:
    """How one server process runs. ``token``: the bearer token every request must carry (None: no token, only
    allowed on loopback); ``cache_gb``: memory for image embeddings; ``max_volumes``: volumes kept;
    ``session_timeout_s``: idle time before a session expires; ``max_upload_mb``: largest request body."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: Optional[str] = None
    model: str = "lite"
    checkpoint: Optional[str] = None
    device: str = "auto"
    max_sessions: int = 16
    cache_gb: float = 2.0
    max_volumes: int = 8
    session_timeout_s: float = 1800.0
    max_upload_mb: float = 512.0

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ServerConfigError(f"--host {self.host} is not loopback: give --token-file FILE (a file holding a "
                                    "secret token) so that only your team can use the server")
        if not 0 < self.port < 65536:
            raise ServerConfigError(f"--port {self.port}: give a port from 1 to 65535")
        for name, value in (("--max-sessions", self.max_sessions), ("--cache-gb", self.cache_gb),
                            ("--max-volumes", self.max_volumes), ("--session-timeout", self.session_timeout_s),
                            ("--max-upload-mb", self.max_upload_mb)):
            if not value > 0:
                raise ServerConfigError(f"{name} {value}: give a number above 0")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_gb * (1 << 30))


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding white space removed); raises :class:`ServerConfigError` when the file is
    missing, readable by other users, or holds a token shorter than :data:`MIN_TOKEN_CHARS`."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ServerConfigError(f"--token-file {path}: cannot be read ({exc.strerror}); give a file holding the "
                                "token") from None
    if os.name != "nt" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerConfigError(f"--token-file {path} can be read by other users; run: chmod 600 {path}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ServerConfigError(f"--token-file {path}: the token must be one word of at least {MIN_TOKEN_CHARS} "
                                "characters (for example: python -c \"import secrets; print(secrets.token_urlsafe())\""
                                f" > {path})")
    return token
