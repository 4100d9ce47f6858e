"""The same server on Ray Serve, with several replicas (``medsam-segment serve --replicas N``).

Each replica is one model and its own volumes, embeddings and runs (the app of :mod:`app`, built in the replica
by ``__serve_build_asgi_app__``). Clients name the volume a request works on in the ``serve_multiplexed_model_id``
header, and each replica registers the volumes it holds through :func:`ray.serve.multiplexed`, so Ray's router
sends every request for a volume (slices, runs, status, result) to the replica that holds its embeddings. The
replicas share one session secret, so a session opened on one is accepted by all.

Ray starts here on this machine's loopback (a private Ray) unless ``ray_address`` names a cluster to join.
"""

from __future__ import annotations

import os
import secrets
from typing import Optional

from .config import ServerConfig

#: The header Ray Serve routes multiplexed requests by; the clients send it with the volume's name.
ROUTING_HEADER = "serve_multiplexed_model_id"


def medsam_deployment(config: ServerConfig, replicas: int, gpus_per_replica: float = 0.0,
                      cpus_per_replica: float = 1.0):
    """The bound Ray Serve application: ``replicas`` replicas of the server for ``config``."""
    from ray import serve

    secret = secrets.token_bytes(32)

    # Status requests wait on the server up to 10 s: let a replica hold many at once.
    @serve.deployment(num_replicas=replicas, max_ongoing_requests=4 * config.max_sessions,
                      ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica})
    @serve.ingress()
    class MedSAMReplica:
        def __init__(self, served: ServerConfig, session_secret: bytes) -> None:
            from .app import ServerState
            from .server import fill_state

            os.environ.setdefault("MEDSAM_NUM_THREADS", str(max(1, int(cpus_per_replica))))
            self.config = served
            self.state = ServerState(touch_volume=self.volume)
            context = serve.get_replica_context()
            fill_state(self.state, served, secret=session_secret, replica=context.replica_tag)

        @serve.multiplexed(max_num_models_per_replica=config.max_volumes)
        async def volume(self, volume_id: str) -> str:
            """Mark ``volume_id`` as held here (its voxels arrive with the uploads)."""
            return volume_id

        def __serve_build_asgi_app__(self):
            from .app import create_app

            return create_app(self.config, self.state)

    return MedSAMReplica.bind(config, secret)


def serve_on_ray(config: ServerConfig, replicas: int, ray_address: Optional[str] = None,
                 gpus_per_replica: float = 0.0, on_ready=None) -> None:
    """Run ``replicas`` replicas behind Ray Serve's HTTP proxy on ``config.host:config.port`` until interrupted."""
    import time

    from medsam_batch.ray_executor import import_ray, on_loopback

    ray = import_ray(on_loopback(ray_address) and config.host in ("127.0.0.1", "localhost"))
    from ray import serve

    if ray_address is None:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING", configure_logging=False)
    else:
        ray.init(address=ray_address, log_to_driver=False, logging_level="WARNING", configure_logging=False)
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        serve.run(medsam_deployment(config, replicas, gpus_per_replica), name="medsam", route_prefix="/")
        if on_ready is not None:
            on_ready(f"http://{config.host}:{config.port}")
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()
