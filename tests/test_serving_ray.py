"""``onerec serve --ray``: the service as a Ray Serve deployment with 2 replicas on a local Ray
cluster, through Ray's HTTP proxy (a real process, a real client).

Ray is an optional extra for users (``pip install onerec[ray]``) and part of ``dev``: CI runs
this test (``conftest.py`` stops a CI run where ``ray`` does not import); elsewhere the module is
skipped, with its reason, where ``ray`` is not installed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray", reason="Ray Serve is the optional extra onerec[ray]")

from test_serving import make_run, write_model  # noqa: E402

from onerec.generation import Recommender  # noqa: E402
from onerec.serving import run_version  # noqa: E402
from onerec.serving.process import ServerProcess  # noqa: E402


async def _burst(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))


def test_two_ray_replicas_answer_batch_and_swap_weights_in_place(tmp_path: Path):
    run = make_run(tmp_path / "run")
    rec = Recommender.from_run(run)
    old = run_version(run)
    with ServerProcess(run, "--ray", "--replicas", "2", "--cpus-per-replica", "0.5",
                       "--watch-seconds", "0.5", start_seconds=180) as server:  # fmt: skip
        bodies = [{"history": [101 + k % 20, 125], "n_items": 3, "beam_size": 8}
                  for k in range(40)]  # fmt: skip
        replicas: set[str] = set()  # Ray's router learns the replicas' queues as they answer
        deadline = time.monotonic() + 60
        while len(replicas) < 2 and time.monotonic() < deadline:
            answers = asyncio.run(_burst(server.url, bodies))
            assert all(r.status_code == 200 for r in answers), answers[0].text
            replicas |= {r.headers["x-onerec-replica"] for r in answers}
        assert len(replicas) == 2
        for body, r in zip(bodies, answers):
            assert r.json()["version"] == old
            assert r.json()["items"] == rec.recommend(body["history"], n_items=3,
                                                      beam_size=8).items  # fmt: skip
        bad = httpx.post(server.url + "/recommend", json={"history": [101, 999]}, timeout=30)
        assert bad.status_code == 422 and bad.json()["error"] == "UnknownItemError"

        write_model(run, seed=5)  # the driver's watcher redeploys; replicas reconfigure
        new = run_version(run)
        deadline, seen = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            answers = asyncio.run(_burst(server.url, bodies[:20]))
            assert all(r.status_code == 200 for r in answers)
            seen = [r.json()["version"] for r in answers]
            assert set(seen) <= {old, new}
            if set(seen) == {new}:
                break
            time.sleep(0.5)
        assert set(seen) == {new}
