"""The FastAPI application: ``POST /recommend``, health, readiness, metrics and admin reload.

Errors are JSON ``{"error": <named error class>, "message": <text>}``; the message of a request
the model cannot answer is the one ``onerec recommend`` prints for the same input. Status codes:
422 a request that is malformed or cannot be answered as asked, 413 a request over the limits,
503 (with Retry-After) a full queue or no model loaded yet, 401 an admin call without the token,
409 a reload refused.

Admin calls (``POST /admin/reload``) need ``Authorization: Bearer <token>``, the token being the
value of the environment variable named by ``ServeConfig.admin_token_env``
(``ONEREC_ADMIN_TOKEN``). When the variable is unset or empty, admin calls are disabled: every
one is answered 401. Reloads read the run folder the server was started on, never a path from a
request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from onerec.exceptions import (
    AdminAuthError,
    InvalidRequestError,
    OneRecError,
    ReloadRefusedError,
    RequestTooLargeError,
    ServerBusyError,
)
from onerec.serving.batcher import Batcher
from onerec.serving.metrics import ServingMetrics
from onerec.serving.models import ModelStore
from onerec.serving.schema import ErrorResponse, RecommendRequest, RecommendResponse

log = logging.getLogger("onerec.serving")


@dataclass(frozen=True)
class ServeConfig:
    """How the service runs. ``max_batch=1`` turns dynamic batching off; ``watch_seconds=0``
    turns the run-folder watcher off (``POST /admin/reload`` still works). ``workers``: batches
    computed at once (0: one per CPU core this process may use on a CPU device, one on a GPU)."""

    run: str
    device: str = "cpu"
    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_queue: int = 256
    workers: int = 0
    max_body_bytes: int = 1 << 16
    max_history_items: int = 1024
    max_exclude_items: int = 1024
    watch_seconds: float = 2.0
    retry_after_seconds: int = 1
    admin_token_env: str = "ONEREC_ADMIN_TOKEN"


_STATUS = {
    RequestTooLargeError: 413,
    ServerBusyError: 503,
    AdminAuthError: 401,
    ReloadRefusedError: 409,
}


def create_app(config: ServeConfig) -> FastAPI:
    """The service for ``config.run``; the model loads in the background after startup (so
    /healthz answers at once and /readyz turns 200 when the model is in)."""
    metrics = ServingMetrics()
    store = ModelStore(config.run, config.device, on_reload=metrics.on_reload)
    batcher = Batcher(store, metrics, config.max_batch, config.max_wait_ms, config.max_queue,
                      inference_workers(config))  # fmt: skip
    token = os.environ.get(config.admin_token_env, "")

    async def first_load() -> None:
        try:
            await asyncio.to_thread(store.reload)
        except ReloadRefusedError:
            pass  # logged and counted; /readyz reports it and the watcher retries on change

    async def watch() -> None:
        while True:
            await asyncio.sleep(config.watch_seconds)
            await asyncio.to_thread(store.poll)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        tasks = [asyncio.create_task(first_load())]
        if config.watch_seconds > 0:
            tasks.append(asyncio.create_task(watch()))
        yield
        for task in tasks:
            task.cancel()
        await batcher.stop()

    app = FastAPI(
        title="onerec",
        summary="OneRec generative recommendation service",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.store, app.state.metrics, app.state.batcher = store, metrics, batcher

    def error(e: OneRecError) -> JSONResponse:
        metrics.errors.labels(type(e).__name__).inc()
        return error_response(e, config.retry_after_seconds)

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={c: {"model": ErrorResponse} for c in (413, 422, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": RecommendRequest.model_json_schema()}}}},
    )  # fmt: skip
    async def recommend(request: Request) -> Any:
        """A session of distinct items for one user's history, and the model version."""
        start = time.perf_counter()
        metrics.requests.inc()
        try:
            body = await read_body(request, config.max_body_bytes)
            req = parse_request(body, config)
            rec, version = await batcher.submit(req)
        except OneRecError as e:
            return error(e)
        except Exception as e:  # a bug, not the request: logged with its traceback, counted
            log.exception("request failed")
            metrics.errors.labels(type(e).__name__).inc()
            return JSONResponse({"error": "InternalError", "message": f"{type(e).__name__}: {e}"},
                                status_code=500)  # fmt: skip
        finally:
            metrics.latency.observe(time.perf_counter() - start)
        return {**rec.to_dict(), "version": version}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive and its event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 with the version once a model is loaded; 503 (with the load error) before."""
        model = store.current
        if model is None:
            return JSONResponse({"ready": False, "error": store.last_error}, status_code=503)
        return JSONResponse({"ready": True, "version": model.version,
                             "run": str(Path(config.run))})  # fmt: skip

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/admin/reload", responses={c: {"model": ErrorResponse} for c in (401, 409)})
    async def admin_reload(request: Request) -> Any:
        """Load the run folder's checkpoint now and swap it in at the next batch boundary."""
        if not token:
            return error(AdminAuthError(
                f"admin calls are disabled: start the server with {config.admin_token_env} set "
                f"to a secret and send it as 'Authorization: Bearer <secret>'"))  # fmt: skip
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error(AdminAuthError(
                f"admin calls need 'Authorization: Bearer <the value of "
                f"{config.admin_token_env}>'; the header was missing or wrong"))  # fmt: skip
        previous = None if store.current is None else store.current.version
        try:
            outcome, model = await asyncio.to_thread(store.reload)
        except ReloadRefusedError as e:
            return error(e)
        return {"outcome": outcome, "version": model.version, "previous": previous}

    return app


def inference_workers(config: ServeConfig) -> int:
    """``config.workers``, or for 0 one per usable CPU core (one on an accelerator, where a
    single stream of batches already keeps the device busy)."""
    if config.workers < 0:
        raise ValueError(f"workers must be 0 (auto) or positive, got {config.workers}")
    if config.workers:
        return config.workers
    return len(os.sched_getaffinity(0)) if config.device == "cpu" else 1


def error_response(e: OneRecError, retry_after: int = 1) -> JSONResponse:
    """``{"error": <class>, "message": <text>}`` with the status of the error's kind (see the
    module); a 503 carries Retry-After."""
    status = next((s for cls, s in _STATUS.items() if isinstance(e, cls)), 422)
    headers = {"Retry-After": str(retry_after)} if status == 503 else None
    return JSONResponse(ErrorResponse(error=type(e).__name__, message=str(e)).model_dump(),
                        status_code=status, headers=headers)  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a bigger one is refused, not buffered)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(
            f"the request body has {declared} bytes, the server takes at most {limit}: send a "
            f"shorter history or exclusion list, or start the server with a larger "
            f"--max-body-bytes"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(
                f"the request body exceeds {limit} bytes: send a shorter history or exclusion "
                f"list, or start the server with a larger --max-body-bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes, config: ServeConfig) -> RecommendRequest:
    """The request, or InvalidRequestError / RequestTooLargeError naming the field at fault."""
    try:
        req = RecommendRequest.model_validate_json(body)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise InvalidRequestError(
            f"the request body is not a valid /recommend request ({problems}); expected a JSON "
            f"object such as {json.dumps(_EXAMPLE)} (see /docs for every field)"
        ) from None
    for name, items, limit in (("history", req.history, config.max_history_items),
                               ("exclude", req.exclude, config.max_exclude_items)):  # fmt: skip
        if len(items) > limit:
            raise RequestTooLargeError(
                f"{name} holds {len(items)} item ids, the server takes at most {limit}: send "
                f"the most recent ones (the model reads only the last ones anyway)"
            )
    return req


_EXAMPLE = {"history": [101, 102, 103], "n_items": 5, "beam_size": 32}
