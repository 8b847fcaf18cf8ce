"""Talking to a running ``onerec serve`` over HTTP: many ``POST /recommend`` calls in flight at
once (so the server batches them), and a hot reload asked for while requests keep arriving.

Standard library only (``urllib`` on a thread pool): the server, not the client, is under test.
A 503 (queue full) is retried after its ``Retry-After``, and counted; any other failure is
returned as a failed answer, never dropped.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

RETRIES = 5


@dataclass(frozen=True)
class Answer:
    """One request's outcome: the JSON body (None when it failed), the HTTP status, retries."""

    body: dict[str, Any] | None
    status: int
    retries: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body is not None


def _post(url: str, payload: dict[str, Any] | None, token: str | None = None,
          timeout: float = 120.0) -> tuple[int, dict[str, Any] | None, float]:  # fmt: skip
    data = json.dumps(payload or {}).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read()), 0.0
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"error": body.decode(errors="replace")}
        return e.code, parsed, float(e.headers.get("Retry-After") or 0.5)


def recommend(url: str, body: dict[str, Any]) -> Answer:
    """One ``POST /recommend``; a 503 is retried up to :data:`RETRIES` times."""
    for attempt in range(RETRIES + 1):
        try:
            status, answer, wait = _post(url + "/recommend", body)
        except OSError as e:  # connection refused or reset: a failed request
            return Answer(None, 0, attempt, f"{type(e).__name__}: {e}")
        if status == 503 and attempt < RETRIES:
            time.sleep(min(wait, 2.0))
            continue
        if status != 200:
            return Answer(None, status, attempt, json.dumps(answer))
        return Answer(answer, status, attempt)
    raise AssertionError("unreachable")


def recommend_many(url: str, bodies: list[dict[str, Any]], concurrency: int) -> list[Answer]:
    """Every body answered, in order, with ``concurrency`` requests in flight."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda b: recommend(url, b), bodies))


def reload_under_load(
    url: str, token: str, bodies: list[dict[str, Any]], concurrency: int
) -> dict[str, Any]:
    """Ask the server to reload its run folder (``POST /admin/reload``) while ``concurrency``
    clients keep sending ``bodies`` (cycled): each client sends until the reload has answered
    and it has had one more answer after that. Returns the reload's answer and every request's
    status and version (which requests the old and which the new model answered depends on
    timing: this traffic is the sync's load, not the test's logged traffic)."""
    done = threading.Event()
    lock = threading.Lock()
    answers: list[Answer] = []
    started = threading.Barrier(concurrency + 1)

    def client(k: int) -> None:
        i, after = k, 0
        started.wait()
        while after < 1:
            finished = done.is_set()
            answer = recommend(url, bodies[i % len(bodies)])
            with lock:
                answers.append(answer)
            after += int(finished)
            i += concurrency

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.05)  # requests are in flight before the reload is asked for
    try:
        status, outcome, _ = _post(url + "/admin/reload", None, token)
    except OSError as e:
        status, outcome = 0, {"error": f"{type(e).__name__}: {e}"}
    finally:
        done.set()
        for t in threads:
            t.join()
    versions: dict[str, int] = {}
    for a in answers:
        if a.ok:
            versions[a.body["version"]] = versions.get(a.body["version"], 0) + 1
    return {
        "status": status, "outcome": (outcome or {}).get("outcome"),
        "version": (outcome or {}).get("version"), "previous": (outcome or {}).get("previous"),
        "requests": len(answers), "failed": sum(not a.ok for a in answers),
        "retries": sum(a.retries for a in answers), "versions": versions,
        "errors": sorted({a.error for a in answers if not a.ok})[:3],
    }  # fmt: skip
