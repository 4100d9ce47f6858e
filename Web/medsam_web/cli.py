"""The ``medsam-segment web`` command (the browser annotator), registered through the ``medsam_segment.commands``
entry points; it imports trame-slicer only when it runs."""

from __future__ import annotations

import argparse
import os
import sys

from MedSAMSegmentLib.remote.server_address import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def exposure_warning(host: str, port: int) -> str:
    """What to say when the page is served beyond this machine: it has no login of its own."""
    return (f"warning: the page on {host}:{port} has no login: anyone who reaches it sees the images and can segment. "
            f"Put it behind a reverse proxy with authentication and TLS, or keep --host {DEFAULT_HOST} and let each "
            f"annotator forward the port (ssh -L {port}:{DEFAULT_HOST}:{port} this-machine).")


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", nargs="?", help="a volume to open (NIfTI, NRRD, MHA); default: none, the page "
                        "offers a file picker and the bundled sample")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; another address "
                             "exposes the page, which has no login)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--open", action="store_true", help="open the page in this machine's browser")


def prepare_rendering() -> None:
    """Offscreen rendering without a display (EGL, no X); torch's compiler stack imported before VTK renders (with
    CUDA wheels, importing it after Mesa has rendered crashed the process)."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 - only an ordering precaution; the model reports its own errors
        pass


def run_web(args: argparse.Namespace) -> int:
    from MedSAMSegmentLib.cli import EXIT_OK, UsageError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: give a port from 0 to 65535")
    if args.image and not os.path.isfile(args.image):
        raise UsageError(f"{args.image}: no such file; give a volume file (NIfTI, NRRD, MHA)")
    prepare_rendering()
    from trame.app import get_server

    from .app import MedSAMWebApp

    app = MedSAMWebApp(get_server("medsam_web", client_type="vue3"))
    if args.image:
        try:
            app.load_image(args.image)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if not is_loopback(args.host):
        print(exposure_warning(args.host, args.port), file=sys.stderr, flush=True)

    @app.server.controller.add("on_server_ready")
    def ready(**_kwargs) -> None:
        port = app.server.port
        shown = "localhost" if is_loopback(args.host) else args.host
        print(f"MedSAM Segment in the browser: http://{shown}:{port}/ (Ctrl+C stops it)", flush=True)

    app.server.start(host=args.host, port=args.port, open_browser=args.open, show_connection_info=False)
    return EXIT_OK


def register_web(subparsers: argparse._SubParsersAction) -> None:
    """Add ``web``; raises ImportError, before adding anything, without the web extra (trame-slicer): the command
    line then names the extra instead. Only looked up, not imported: it loads VTK and Slicer's libraries."""
    import importlib.util

    if importlib.util.find_spec("trame_slicer") is None:
        raise ModuleNotFoundError("No module named 'trame_slicer'", name="trame_slicer")
    parser = subparsers.add_parser("web", help="the browser annotator: key boxes, MedSAM and the Segment Editor "
                                   "in a web page (trame-slicer; the web extra)",
                                   description="Serve the MedSAM annotator as a web page (loopback by default).")
    add_web_arguments(parser)
    parser.set_defaults(handler=run_web)
