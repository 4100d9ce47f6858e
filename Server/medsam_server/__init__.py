"""A MedSAM server a team shares (``medsam-segment serve``): one model per process, volumes sent once by content,
safe by default (loopback unless told otherwise, a token for anything else, no pickle). Installed with the
``serve`` extra beside the core (:mod:`MedSAMSegmentLib`), which holds the clients and never imports this package.

    from medsam_server import ServerConfig, build_server

    app, runner = build_server(ServerConfig(port=8765))   # an ASGI app and its started model runner
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medsam-segment")
except PackageNotFoundError:  # pragma: no cover - run from a source tree
    __version__ = "0"

from .config import ServerConfig, ServerConfigError, read_token_file  # noqa: E402
from .server import build_server, serve  # noqa: E402

__all__ = ["ServerConfig", "ServerConfigError", "build_server", "read_token_file", "serve"]
