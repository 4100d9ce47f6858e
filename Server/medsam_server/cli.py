"""The ``medsam-segment serve`` command, registered through the ``medsam_segment.commands`` entry points."""

from __future__ import annotations

import argparse

from .config import ServerConfig, ServerConfigError, read_token_file


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig()
    parser.add_argument("--host", default=defaults.host,
                        help="address to listen on (default loopback: this machine only; any other needs "
                             "--token-file)")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    parser.add_argument("--token-file", help="a file (chmod 600) holding the bearer token clients must send")
    parser.add_argument("--model", choices=("lite", "vit_b"), default=defaults.model, help="the model served")
    parser.add_argument("--checkpoint", help="model weights (default: LiteMedSAM's bundled weights)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--max-sessions", type=int, default=defaults.max_sessions,
                        help=f"client sessions held at once (default {defaults.max_sessions})")
    parser.add_argument("--cache-gb", type=float, default=defaults.cache_gb,
                        help=f"memory for image embeddings, least recently used dropped (default {defaults.cache_gb})")
    parser.add_argument("--max-volumes", type=int, default=defaults.max_volumes,
                        help=f"volumes held, least recently used dropped (default {defaults.max_volumes})")
    parser.add_argument("--session-timeout", type=float, default=defaults.session_timeout_s / 60, metavar="MINUTES",
                        help=f"idle minutes before a session expires (default {defaults.session_timeout_s / 60:.0f})")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb,
                        help=f"largest request body, MB (default {defaults.max_upload_mb:.0f})")
    parser.add_argument("--replicas", type=int, default=1,
                        help="model replicas behind Ray Serve, each volume's requests sent to the replica holding "
                             "it (default 1: one process, no Ray)")
    parser.add_argument("--ray-address", help="with --replicas: join this Ray cluster (default: a private Ray here)")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0,
                        help="with --replicas: GPUs each replica reserves (default 0)")


def config_from_arguments(args: argparse.Namespace) -> ServerConfig:
    """The checked configuration; raises :class:`ServerConfigError` with one line."""
    token = read_token_file(args.token_file) if args.token_file else None
    return ServerConfig(host=args.host, port=args.port, token=token, model=args.model, checkpoint=args.checkpoint,
                        device=args.device, max_sessions=args.max_sessions, cache_gb=args.cache_gb,
                        max_volumes=args.max_volumes, session_timeout_s=args.session_timeout * 60,
                        max_upload_mb=args.max_upload_mb)


def run_serve(args: argparse.Namespace) -> int:
    from MedSAMSegmentLib.cli import EXIT_OK, UsageError

    try:
        config = config_from_arguments(args)
    except ServerConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.replicas < 1 or args.gpus_per_replica < 0:
        raise UsageError("--replicas takes 1 or more, --gpus-per-replica 0 or more")

    def ready(url: str) -> None:
        guard = "bearer token required" if config.token else "no token: this machine only"
        copies = f"{args.replicas} replicas on Ray Serve" if args.replicas > 1 or args.ray_address else "one process"
        print(f"MedSAM server: {config.model} on {url}, {copies} ({guard}); API description at {url}/docs",
              flush=True)

    if args.replicas > 1 or args.ray_address:
        from MedSAMSegmentLib.extras import missing_line

        try:
            import ray.serve  # noqa: F401 - checked before anything starts
        except ImportError as exc:
            raise UsageError(missing_line("serve --replicas/--ray-address", exc, prefer=("serve-ray",))) from None
        from .ray_deployment import serve_on_ray

        serve_on_ray(config, args.replicas, args.ray_address, args.gpus_per_replica, on_ready=ready)
    else:
        from .server import serve

        serve(config, on_ready=ready)
    return EXIT_OK


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``; raises ImportError, before adding anything, without the serve extra (FastAPI, uvicorn): the
    command line then names the extra instead."""
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401

    parser = subparsers.add_parser("serve", help="serve MedSAM over HTTP to Slicer and command-line clients")
    add_serve_arguments(parser)
    parser.set_defaults(handler=run_serve)
