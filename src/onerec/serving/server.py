"""Running the service in this process: uvicorn with one worker (the model is in memory once;
scale out with more processes behind a load balancer)."""

from __future__ import annotations

import logging

import torch
import uvicorn

from onerec.serving.app import ServeConfig, create_app, inference_workers

log = logging.getLogger("onerec.serving")


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
          access_log: bool = False) -> None:  # fmt: skip
    """Serve ``config.run`` on ``host:port`` until interrupted. Connections beyond a multiple
    of the queue are answered 503 by uvicorn itself: a backstop that bounds memory even when
    clients open connections faster than requests are queued.

    With several inference workers on a CPU, PyTorch's threads are divided among them (at least
    one each): workers that each spread over every core would fight for the cores.
    """
    workers = inference_workers(config)
    if config.device == "cpu" and workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))
    log.info("%d inference workers, %d PyTorch threads", workers, torch.get_num_threads())
    uvicorn.run(create_app(config), host=host, port=port, access_log=access_log,
                log_level="info", timeout_graceful_shutdown=5,
                limit_concurrency=4 * config.max_queue + 64)  # fmt: skip
