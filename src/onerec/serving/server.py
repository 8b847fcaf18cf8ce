"""Running the service in this process: uvicorn with one worker (the model is in memory once;
scale out with more processes behind a load balancer)."""

from __future__ import annotations

import uvicorn

from onerec.serving.app import ServeConfig, create_app


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
          access_log: bool = False) -> None:  # fmt: skip
    """Serve ``config.run`` on ``host:port`` until interrupted. Connections beyond a multiple
    of the queue are answered 503 by uvicorn itself: a backstop that bounds memory even when
    clients open connections faster than requests are queued."""
    uvicorn.run(create_app(config), host=host, port=port, access_log=access_log,
                log_level="info", timeout_graceful_shutdown=5,
                limit_concurrency=4 * config.max_queue + 64)  # fmt: skip
