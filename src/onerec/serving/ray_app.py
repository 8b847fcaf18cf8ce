"""Scale-out on Ray Serve (``onerec serve RUN --ray --replicas N``; ``pip install onerec[ray]``).

The same ``POST /recommend`` (same request schema, same named errors, same limits) answered by
N replicas, each holding one model. Batching is Ray Serve's own (``@serve.batch``: at most
``max_batch`` requests, ``max_wait_ms``); weight updates use Ray Serve's in-place
reconfiguration: the driver watches the run folder and, when the files changed and held still for
one poll, redeploys with a new ``user_config``; every replica's ``reconfigure`` then loads the new
checkpoint beside the old one and swaps it between batches, without a restart. A checkpoint a
replica cannot load is refused there (logged) and that replica keeps its old model.

Across machines: start a Ray cluster (``ray start --head`` on one machine, ``ray start
--address=HEAD:6379`` on the others), give every machine the run folder at the same path (a
shared volume), and run ``onerec serve RUN --ray --replicas N`` on the head; Ray places the
replicas on the cluster's CPUs (or GPUs with ``--device cuda``), and its HTTP proxy answers on
``--host``/``--port``.
"""


# no `from __future__ import annotations`: Ray Serve's ingress reads the endpoints' annotations
# (Request) as objects
import asyncio
import logging
import os
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from onerec.exceptions import OneRecError, ReloadRefusedError
from onerec.serving.app import ServeConfig, error_response, parse_request, read_body
from onerec.serving.batcher import run_batch
from onerec.serving.models import ModelStore, run_signature

log = logging.getLogger("onerec.serving")


def build_app(config: ServeConfig, replicas: int, cpus_per_replica: float, user_config: dict):
    """The Ray Serve application (a bound deployment) for ``config``."""
    from ray import serve

    api = FastAPI(title="onerec (Ray Serve)", summary="OneRec recommendation service")

    @serve.deployment(
        num_replicas=replicas,
        user_config=user_config,
        ray_actor_options={"num_cpus": cpus_per_replica},
        max_ongoing_requests=2 * config.max_batch,  # room to fill a batch while one computes
        max_queued_requests=config.max_queue,  # beyond it Ray Serve answers 503
    )
    @serve.ingress(api)
    class OneRecReplica:
        def __init__(self) -> None:
            self.store = ModelStore(config.run, config.device)
            self.store.reload()  # a replica that cannot load its model does not start
            self.batched.set_max_batch_size(config.max_batch)
            self.batched.set_batch_wait_timeout_s(config.max_wait_ms / 1000.0)

        def reconfigure(self, user_config: dict) -> None:
            """Ray Serve's in-place update: load the run folder's checkpoint now."""
            if user_config.get("signature") is None:
                return  # the first deployment: __init__ loaded the model
            try:
                self.store.reload()
            except ReloadRefusedError:
                pass  # logged by the store; this replica keeps serving its old model

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
        async def batched(self, requests: list) -> list:
            model = self.store.current  # one model for the whole batch
            results = await asyncio.to_thread(run_batch, model, requests)
            return [(r, model.version) for r in results]

        @api.post("/recommend")
        async def recommend(self, request: Request):
            try:
                req = parse_request(await read_body(request, config.max_body_bytes), config)
                result, version = await self.batched(req)
                if isinstance(result, BaseException):
                    raise result
            except OneRecError as e:
                return error_response(e, config.retry_after_seconds)
            return JSONResponse({**result.to_dict(), "version": version},
                                headers={"x-onerec-replica": str(os.getpid())})  # fmt: skip

        @api.get("/healthz")
        async def healthz(self):
            return {"status": "ok"}

        @api.get("/readyz")
        async def readyz(self):
            return {"ready": True, "version": self.store.current.version,
                    "replica": os.getpid()}  # fmt: skip

    return OneRecReplica.bind()


def serve_ray(config: ServeConfig, host: str, port: int, replicas: int,
              cpus_per_replica: float = 1.0) -> None:  # fmt: skip
    """Start (or join, with ``RAY_ADDRESS``) a Ray cluster, deploy, and redeploy in place when
    the run folder's checkpoint changes; runs until interrupted."""
    import ray
    from ray import serve

    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
             ignore_reinit_error=True)  # fmt: skip
    serve.start(http_options={"host": host, "port": port})
    run = config.run
    loaded = run_signature_text(run)
    serve.run(build_app(config, replicas, cpus_per_replica, {"signature": None}),
              name="onerec", route_prefix="/")  # fmt: skip
    log.warning("Ray Serve: %d replicas of %s on http://%s:%d", replicas, run, host, port)
    seen = None
    try:
        while True:
            time.sleep(config.watch_seconds if config.watch_seconds > 0 else 3600)
            if config.watch_seconds <= 0:
                continue
            current = run_signature_text(run)
            if current == loaded or current != seen:  # reload once the files held still
                seen = current
                continue
            serve.run(build_app(config, replicas, cpus_per_replica, {"signature": current}),
                      name="onerec", route_prefix="/")  # fmt: skip
            loaded, seen = current, None
            log.warning("Ray Serve: replicas reconfigured for the new checkpoint in %s", run)
    finally:
        serve.shutdown()


def run_signature_text(run: str) -> str:
    """The run folder's file signature as a string (a Ray ``user_config`` holds JSON)."""
    from pathlib import Path

    return repr(run_signature(Path(run)))
