"""Dynamic batching: requests that arrive together share one beam-search call.

The event loop only queues requests; ``workers`` inference threads run the model, so the server
keeps accepting connections and answering health checks while batches compute. A batch forms
when a worker is free: it closes when it holds ``max_batch`` requests or ``max_wait_ms`` after its
first request arrived (a request that already waited for a free worker does not wait again). So a
lone request on an idle server is computed at once, and under load the requests that queue while
the workers are busy become the next batch: batches grow with the load by themselves.

Several workers matter on a CPU. The beam search of one batch leaves cores idle (between steps and
in small kernels), and a request that arrives while one batch computes starts on the next free
worker instead of waiting for that batch to end, which shortens the tail at moderate load. With
``workers`` > 1 each worker should get its share of the cores (``onerec serve`` sets PyTorch's
threads to cores / workers). The queue holds at most ``max_queue`` requests; beyond that
:class:`ServerBusyError` (HTTP 503) is raised at once, so memory stays bounded under overload.

Within a batch, requests are grouped by what a beam-search call shares (items per session, beam
width, history exclusion, truncation, alternatives); each group is one ``recommend_batch`` call.
If a group fails validation (one request names an unknown item, say), its requests are served one
by one, so every request gets its own answer or its own named error, exactly as a lone request.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from onerec.exceptions import OneRecError, ServerBusyError
from onerec.generation.recommend import Recommendation, Recommender
from onerec.serving.metrics import ServingMetrics
from onerec.serving.models import LoadedModel, ModelStore
from onerec.serving.schema import RecommendRequest


@dataclass
class _Job:
    request: RecommendRequest
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Queues requests, closes batches and runs them on the worker thread (see the module)."""

    def __init__(
        self,
        store: ModelStore,
        metrics: ServingMetrics,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.store = store
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._pending: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self.workers = workers
        self._worker = ThreadPoolExecutor(workers, thread_name_prefix="onerec-infer")
        self._free: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._free = asyncio.Semaphore(self.workers)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._running:  # batches already computing finish and answer their requests
            await asyncio.gather(*self._running, return_exceptions=True)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(ServerBusyError("the server is shutting down"))
        self._worker.shutdown(wait=True)

    async def submit(self, request: RecommendRequest) -> tuple[Recommendation, str]:
        """The recommendation and the version that computed it; named errors as raised."""
        if self.store.current is None:
            raise ServerBusyError("no model is loaded yet (see /readyz): retry shortly")
        if len(self._pending) >= self.max_queue:
            raise ServerBusyError(
                f"the request queue is full ({self.max_queue} waiting): retry after the "
                f"Retry-After seconds"
            )
        job = _Job(request, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self.metrics.queue_depth.set(len(self._pending))
        self._arrived.set()
        return await job.future

    async def _run(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._free.acquire()  # released when the batch's computation ends
            deadline = self._pending[0].arrived + self.max_wait
            while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            jobs = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            self.metrics.queue_depth.set(len(self._pending))
            jobs = [j for j in jobs if not j.future.done()]  # the client went away
            if not jobs:
                self._free.release()
                continue
            model = self.store.current  # the batch boundary: one model for the whole batch
            self.metrics.batch_size.observe(len(jobs))
            task = asyncio.get_running_loop().create_task(self._compute(model, jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _compute(self, model: LoadedModel, jobs: list[_Job]) -> None:
        """One batch on a worker thread; then each request gets its answer or its error."""
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._worker, run_batch, model, [j.request for j in jobs]
            )
        except Exception as e:  # noqa: BLE001 - the executor itself failed: all see it
            results = [e] * len(jobs)
        finally:
            self._free.release()
        for job, result in zip(jobs, results):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result((result, model.version))


def run_batch(
    model: LoadedModel, requests: list[RecommendRequest]
) -> list[Recommendation | BaseException]:
    """Every request's answer or error, from one ``recommend_batch`` call per group."""
    rec = model.recommender
    results: list[Recommendation | BaseException | None] = [None] * len(requests)
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        groups[request.batch_key()].append(i)
    for members in groups.values():
        ready, features = [], []
        for i in members:
            try:
                features.append(_features(rec, requests[i]))
                ready.append(i)
            except Exception as e:  # noqa: BLE001 - handed to that request's caller
                results[i] = e
        if not ready:
            continue
        try:
            outs = _recommend(rec, [requests[i] for i in ready], features)
        except OneRecError:  # one bad request: serve each alone for its own answer or error
            outs = []
            for i, f in zip(ready, features):
                try:
                    outs.append(_recommend(rec, [requests[i]], [f])[0])
                except Exception as e:  # noqa: BLE001
                    outs.append(e)
        except Exception as e:  # noqa: BLE001 - a bug: every request of the group sees it
            outs = [e] * len(ready)
        for i, out in zip(ready, outs):
            results[i] = out
    return results  # type: ignore[return-value]


def _features(rec: Recommender, request: RecommendRequest) -> Any:
    """The side-feature rows of a model trained with them (None for one without)."""
    if not (rec.model.config.history_features or request.timestamps or request.signals):
        return None
    return rec.request_features(len(request.history), request.timestamps, request.signals)


def _recommend(
    rec: Recommender, requests: list[RecommendRequest], features: list[Any]
) -> list[Recommendation]:
    first = requests[0]
    return rec.recommend_batch(
        [r.history for r in requests],
        [r.user for r in requests],
        n_items=first.n_items,
        beam_size=first.beam_size,
        exclude_history=first.exclude_history,
        truncate=first.truncate,
        alternatives=first.alternatives,
        features=None if features[0] is None else features,
        exclude=[r.exclude for r in requests] if any(r.exclude for r in requests) else None,
    )
