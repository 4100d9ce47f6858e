"""Where the effect's Device "MedSAM server" sends runs: the server's address and token, kept in the application's
settings (Slicer's ``qt.QSettings``), never in the scene, so that a saved or shared scene carries no token.

Qt-free: the functions take any object with QSettings' ``value(key, default)`` and ``setValue(key, value)``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

#: Application settings keys.
SERVER_URL_KEY = "MedSAMSegment/ServerURL"
SERVER_TOKEN_KEY = "MedSAMSegment/ServerToken"
#: The device choice that runs on a server.
SERVER_DEVICE = "server"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``); a server or page bound to any
    other host is reachable from the network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerAddress:
    """A MedSAM server: ``url`` (``http://HOST:PORT``) and its bearer ``token`` (None when it needs none)."""

    url: str
    token: Optional[str] = None

    def __repr__(self) -> str:  # the token never reaches a log
        return f"ServerAddress({self.url!r}, token={'set' if self.token else 'none'})"


def stored_server(settings) -> Optional[ServerAddress]:
    """The address kept in ``settings``, or None when no URL is kept."""
    url = str(settings.value(SERVER_URL_KEY, "") or "").strip()
    token = str(settings.value(SERVER_TOKEN_KEY, "") or "").strip()
    return ServerAddress(url, token or None) if url else None


def store_server(settings, url: str, token: str) -> None:
    """Keep the address and token (empty strings clear them)."""
    settings.setValue(SERVER_URL_KEY, url.strip())
    settings.setValue(SERVER_TOKEN_KEY, token.strip())
