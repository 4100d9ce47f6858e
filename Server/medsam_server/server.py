"""Assemble and run one server process: the model runner, the session registry and the HTTP app under uvicorn."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from MedSAMSegmentLib.engine import EmbeddingCache
from MedSAMSegmentLib.service import ModelSpec, SegmentationService

from .config import ServerConfig
from .model_runner import ModelRunner
from .sessions import SessionRegistry
from .volumes import VolumeStore


def build_server(config: ServerConfig, model_loader: Optional[Callable] = None,
                 cache: Optional[EmbeddingCache] = None) -> Tuple[object, ModelRunner]:
    """The ASGI app for ``config`` and its model runner, started, with the model loaded (so that a wrong
    checkpoint or device fails here, before the port opens). ``model_loader`` as for
    :class:`~MedSAMSegmentLib.service.SegmentationService`; ``cache`` (default: in memory, ``config.cache_gb``)
    holds the embeddings."""
    from .app import ServerState, create_app

    state = ServerState()
    fill_state(state, config, model_loader, cache)
    return create_app(config, state), state.runner


def fill_state(state, config: ServerConfig, model_loader: Optional[Callable] = None,
               cache: Optional[EmbeddingCache] = None, secret: Optional[bytes] = None, replica: str = "") -> None:
    """Give ``state`` (an :class:`~app.ServerState`) a started model runner with the model loaded, and a
    session registry (its keys made with ``secret``; default: new)."""
    cache = cache if cache is not None else EmbeddingCache(max_memory_bytes=config.cache_bytes, spill=False)
    service = SegmentationService(model_loader, cache=cache, kept_volumes=config.max_volumes)
    runner = ModelRunner(service, ModelSpec(config.model, config.checkpoint, config.device),
                         VolumeStore(config.max_volumes), max_queued=4 * config.max_sessions)
    runner.model()
    runner.start()
    state.runner = runner
    state.sessions = SessionRegistry(config.max_sessions, config.session_timeout_s, secret)
    state.replica = replica


def serve(config: ServerConfig, log_level: str = "info", on_ready: Optional[Callable[[str], None]] = None) -> None:
    """Run the server until interrupted. ``on_ready(url)`` is called once the model is loaded."""
    import uvicorn

    app, runner = build_server(config)
    if on_ready is not None:
        on_ready(f"http://{config.host}:{config.port}")
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        runner.stop()
