"""The HTTP service (``onerec serve``) as a client sees it: a real uvicorn process on a free
loopback port, a real HTTP client (httpx).

Each server is started with ``python -m onerec.cli serve`` on a tiny run folder built here (a
random tiny model, raw item ids 101..130, users.parquet) and stopped at the end of its module
fixture. Loops that wait for the server are bounded by time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from onerec.cli import main
from onerec.data.schema import IdMap
from onerec.generation import Recommender
from onerec.model import OneRec, OneRecConfig
from onerec.serving import Batcher, run_version
from onerec.serving.metrics import ServingMetrics
from onerec.serving.models import LoadedModel
from onerec.serving.process import ServerProcess
from onerec.serving.schema import RecommendRequest
from onerec.tokenizer import SemanticIds
from onerec.tokenizer.pipeline import save_semantic_ids

SIZES = [4, 4, 4]
RAW_ITEMS = np.arange(101, 131)
TOKEN = "test-admin-secret"
START_SECONDS = 60.0  # a loaded 2-core machine imports torch slowly


def write_model(run: Path, seed: int) -> None:
    """A tiny model with large random matrices (well-separated scores, so batched and lone
    answers cannot differ by float rounding), saved into ``run``."""
    torch.manual_seed(seed)
    model = OneRec(OneRecConfig.preset("tiny", SIZES, max_history=8))
    state = model.state_dict()
    model.load_state_dict({k: torch.randn_like(v) * 0.3 if v.ndim == 2 and v.is_floating_point()
                           else v for k, v in state.items()})  # fmt: skip
    model.save(run)


def make_run(run: Path, seed: int = 0) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    write_model(run, seed)
    g = torch.Generator().manual_seed(0)
    codes = torch.cartesian_prod(*(torch.arange(k) for k in SIZES))
    ids = SemanticIds.from_codes(codes[torch.randperm(len(codes), generator=g)[:30]], SIZES)
    save_semantic_ids(run, ids, IdMap(RAW_ITEMS), {})
    (run / "train_config.json").write_text(json.dumps({"history_length": 6, "session_items": 3}))
    pq.write_table(pa.table({"user_id": ["u5", "u2", "u9", "u0", "u7"]}), run / "users.parquet")
    return run


class Server(ServerProcess):
    """The server under test, with the admin token set unless ``token=None``."""

    def __init__(self, run: Path, *args: str, token: str | None = TOKEN) -> None:
        super().__init__(run, *args, admin_token=token, start_seconds=START_SECONDS)

    def post(self, path: str, body=None, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30, **kwargs)

    def metric(self, name: str) -> float:
        """The value of one sample line of /metrics (0 when absent)."""
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[Server]:
    s = Server(run, "--max-batch", "64", "--max-wait-ms", "50", "--watch-seconds", "0",
               "--max-history-items", "50", "--max-body-bytes", "4000",
               "--workers", "2")  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rec(run: Path) -> Recommender:
    return Recommender.from_run(run)


# --- health, readiness, metrics, OpenAPI --------------------------------------------------------


def test_health_readiness_and_openapi(server: Server, run: Path):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["ready"] is True and ready["version"] == run_version(run)
    spec = httpx.get(server.url + "/openapi.json").json()
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]
    assert "history" in body["schema"]["properties"]
    metrics = httpx.get(server.url + "/metrics").text
    assert f'onerec_model_version_info{{version="{run_version(run)}"}} 1.0' in metrics


def test_answer_is_the_recommenders_session_with_its_version(server, rec, run):
    r = server.post("/recommend", {"history": [101, 105, 110], "user": "u2", "n_items": 3,
                                   "beam_size": 8, "alternatives": 2, "exclude": [102, 999]})
    assert r.status_code == 200, r.text
    got = r.json()
    want = rec.recommend_batch([[101, 105, 110]], ["u2"], n_items=3, beam_size=8,
                               alternatives=2, exclude=[[102, 999]])[0]  # fmt: skip
    assert got["items"] == want.items and got["version"] == run_version(run)
    assert [a["items"] for a in got["alternatives"]] == [a.items for a in want.alternatives]
    assert got["log_prob"] == pytest.approx(want.log_prob, abs=1e-5)
    assert got["exclude_unknown"] == 1 and not got["anonymous"]
    for s in [got, *got["alternatives"]]:
        assert 102 not in s["items"] and not {101, 105, 110} & set(s["items"])


# --- named errors: the CLI's messages -----------------------------------------------------------


@pytest.mark.parametrize(
    "body, cli, error",
    [
        ({"history": [101, 999]}, ["--history", "101,999"], "UnknownItemError"),
        ({"history": []}, ["--history", " , "], "EmptyHistoryError"),
        ({"history": [101], "beam_size": 2}, ["--history", "101", "--beam", "2"],
         "BeamTooNarrowError"),
        ({"history": list(range(101, 108))}, ["--history", ",".join(map(str, range(101, 108)))],
         "HistoryTooLongError"),
    ],
)  # fmt: skip
def test_bad_requests_get_422_with_the_clis_named_message(server, run, capsys, body, cli, error):
    r = server.post("/recommend", body)
    assert r.status_code == 422
    assert main(["recommend", str(run), *cli]) == 2
    # the CLI prints "onerec: error: <named error>: <message>"; HTTP gives the two as fields
    assert capsys.readouterr().err.strip() == f"onerec: error: {error}: {r.json()['message']}"
    assert r.json()["error"] == error


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"history": [101, 102', ["Invalid JSON"]),
        (b"[101, 102]", ["body: Input should be an object"]),
        (b'{"history": [101.5]}', ["history.0"]),
        (b'{"history": [101], "run": "/etc/passwd"}', ["run", "Extra inputs"]),
        (b'{"history": [101], "beam_size": "wide"}', ["beam_size"]),
    ],
)
def test_malformed_bodies_get_422_invalid_request(server, content, words):
    r = httpx.post(server.url + "/recommend", content=content,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422
    assert r.json()["error"] == "InvalidRequestError"
    for word in words:
        assert word in r.json()["message"]


def test_limits_on_history_and_body_size(server):
    long = server.post("/recommend", {"history": [101] * 51, "truncate": True})
    assert long.status_code == 413 and long.json()["error"] == "RequestTooLargeError"
    assert "51 item ids" in long.json()["message"] and "at most 50" in long.json()["message"]
    big = server.post("/recommend", {"history": [101], "exclude": ["x" * 50] * 100})
    assert big.status_code == 413 and "at most 4000" in big.json()["message"]
    body = json.dumps({"history": [101], "exclude": ["x" * 50] * 100}).encode()
    chunked = httpx.post(server.url + "/recommend", content=iter([body[:3000], body[3000:]]),
                         headers={"content-type": "application/json"})  # no Content-Length
    assert chunked.status_code == 413 and "exceeds 4000 bytes" in chunked.json()["message"]
    # a history as long as the cap is still answered (truncated to what the model reads)
    ok = server.post("/recommend", {"history": [101] * 50, "truncate": True, "n_items": 2,
                                    "beam_size": 4})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["history_dropped"] == 44


# --- admin token --------------------------------------------------------------------------------


def test_admin_reload_needs_the_bearer_token(server, run):
    assert server.post("/admin/reload").status_code == 401
    wrong = server.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "AdminAuthError"
    ok = server.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json() == {"outcome": "unchanged", "version": run_version(run),
                         "previous": run_version(run)}  # fmt: skip


def test_admin_is_disabled_without_a_token(tmp_path, run):
    s = Server(run, "--watch-seconds", "0", token=None)
    try:
        r = s.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 401 and "disabled" in r.json()["message"]
    finally:
        s.stop()


# --- batching -----------------------------------------------------------------------------------


async def _burst(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))


def test_batched_answers_equal_lone_answers(server):
    rng = np.random.default_rng(0)
    bodies = []
    for k in range(24):  # three beam widths / session lengths, mixed in one burst, one bad
        history = rng.choice(RAW_ITEMS, size=int(rng.integers(1, 6)), replace=False).tolist()
        n, beam = [(3, 8), (2, 4), (3, 5)][k % 3]
        bodies.append({"history": history, "n_items": n, "beam_size": beam, "alternatives": 1,
                       "user": ["u2", None, "ghost"][k % 3]})  # fmt: skip
    bodies[5]["history"] = [101, 777]
    before = (server.metric("onerec_batch_size_count"), server.metric("onerec_batch_size_sum"))
    batched = asyncio.run(_burst(server.url, bodies))
    batches = server.metric("onerec_batch_size_count") - before[0]
    served = server.metric("onerec_batch_size_sum") - before[1]
    assert served == len(bodies) and batches < len(bodies)  # requests did share batches
    for body, got in zip(bodies, batched):
        alone = server.post("/recommend", body)  # one at a time: a batch of one
        assert got.status_code == alone.status_code
        if alone.status_code != 200:
            assert got.json() == alone.json() and got.json()["error"] == "UnknownItemError"
            continue
        a, b = got.json(), alone.json()
        assert a["items"] == b["items"]
        assert [x["items"] for x in a["alternatives"]] == [x["items"] for x in b["alternatives"]]
        assert a["log_prob"] == pytest.approx(b["log_prob"], abs=1e-4)


def test_a_full_queue_answers_503_with_retry_after_and_recovers(run):
    s = Server(run, "--max-batch", "1", "--max-queue", "2", "--watch-seconds", "0")
    try:
        body = {"history": [101, 102, 103], "n_items": 5, "beam_size": 32}
        answers = asyncio.run(_burst(s.url, [body] * 40))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 2
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"] == "ServerBusyError"
        assert s.metric('onerec_request_errors_total{kind="ServerBusyError"}') == codes.count(503)
        assert s.post("/recommend", body).status_code == 200  # recovered once the load is gone
    finally:
        s.stop()


class _MeetingRecommender:
    """Stands in for a Recommender: every batch waits at a barrier for ``parties`` batches in
    flight together (BrokenBarrierError when they are not), then answers its histories."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=2.0)
        self.model = SimpleNamespace(config=SimpleNamespace(history_features=0))

    def recommend_batch(self, histories, users, **kwargs) -> list:
        self.barrier.wait()
        return [SimpleNamespace(items=list(h)) for h in histories]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_compute_batches_at_the_same_time(workers):
    """With two workers two batches meet at the barrier; with one, the first batch waits alone
    and fails (so the test could fail if batches were serialised)."""
    store = SimpleNamespace(current=LoadedModel(_MeetingRecommender(2), "v1", (), 0.0))
    batcher = Batcher(store, ServingMetrics(), max_batch=1, max_wait_ms=0, workers=workers)

    async def two_requests() -> list:
        batcher.start()
        try:
            reqs = [RecommendRequest(history=[1, 2]), RecommendRequest(history=[3])]
            return await asyncio.gather(*(batcher.submit(r) for r in reqs),
                                        return_exceptions=True)  # fmt: skip
        finally:
            await batcher.stop()

    answers = asyncio.run(two_requests())
    if workers == 2:
        assert [(a.items, v) for a, v in answers] == [([1, 2], "v1"), ([3], "v1")]
    else:
        assert isinstance(answers[0], threading.BrokenBarrierError)


# --- hot parameter sync -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    run = make_run(tmp_path_factory.mktemp("hot") / "run")
    s = Server(run, "--max-batch", "16", "--max-wait-ms", "5", "--watch-seconds", "0.3",
               "--workers", "2")  # two batches in flight: neither may mix versions
    yield s, run
    s.stop()


def test_a_broken_checkpoint_is_refused_and_the_old_model_keeps_serving(hot):
    server, run = hot
    old = run_version(run)
    saved = (run / "model.safetensors").read_bytes()
    try:
        (run / "model.safetensors").write_bytes(saved[: len(saved) // 2])  # half-written
        r = server.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409 and r.json()["error"] == "ReloadRefusedError"
        assert "cannot be loaded" in r.json()["message"]
        answer = server.post("/recommend", {"history": [101, 102]})
        assert answer.status_code == 200 and answer.json()["version"] == old
        assert server.metric('onerec_reloads_total{outcome="refused"}') >= 1
        assert "reload refused" in server.log.read_text()
    finally:
        (run / "model.safetensors").write_bytes(saved)
    deadline = time.monotonic() + 10  # the watcher sees the restored files: same version
    while time.monotonic() < deadline and server.metric(
            'onerec_reloads_total{outcome="unchanged"}') < 1:  # fmt: skip
        time.sleep(0.2)
    assert httpx.get(server.url + "/readyz").json()["version"] == old


async def _stream(url: str, stop: asyncio.Event, out: list, clients: int = 3) -> None:
    """Steady requests from ``clients`` loops until ``stop``: (sent, status, version, text)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def loop(k: int) -> None:
            while not stop.is_set():
                sent = time.monotonic()
                r = await client.post("/recommend", json={"history": [101 + k, 110, 120]})
                out.append((sent, r.status_code, r.json().get("version"), r.text))

        await asyncio.gather(*(loop(k) for k in range(clients)))


def _swap_under_load(server: Server, run: Path, seed: int, admin: bool) -> tuple[str, str, list]:
    """Write a new model while requests stream; swap by admin call or by the watcher."""
    old = run_version(run)
    answers: list = []

    async def scenario() -> float:
        stop = asyncio.Event()
        stream = asyncio.create_task(_stream(server.url, stop, answers))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(write_model, run, seed)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            if admin:
                r = await client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
                assert r.status_code == 200, r.text
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if (await client.get("/readyz")).json()["version"] != old:
                    break
                await asyncio.sleep(0.1)
        swapped = time.monotonic()
        await asyncio.sleep(1.0)
        stop.set()
        await stream
        return swapped

    swapped = asyncio.run(scenario())
    return old, run_version(run), [(a, a[0] > swapped) for a in answers]


@pytest.mark.parametrize("admin", [True, False], ids=["admin-reload", "watcher"])
def test_hot_swap_under_a_request_stream(hot, admin):
    server, run = hot
    old, new, answers = _swap_under_load(server, run, seed=11 if admin else 12, admin=admin)
    assert old != new
    assert len(answers) > 10
    assert all(status == 200 for (_, status, _, _), _ in answers), [a for a in answers][:3]
    versions = [v for (_, _, v, _), _ in answers]
    assert set(versions) == {old, new}  # both served, nothing else
    assert all(v == new for (_, _, v, _), after in answers if after)
    assert httpx.get(server.url + "/readyz").json()["version"] == new


# --- the load benchmark -------------------------------------------------------------------------


def test_serving_load_benchmark_runs_and_records_both_modes(run, tmp_path, monkeypatch):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serving_load.py"
    spec = importlib.util.spec_from_file_location("serving_load", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", [
        "serving_load.py", "--run", str(run), "--out", str(tmp_path), "--name", "t",
        "--loads", "0.5,3", "--seconds", "1", "--single", "3", "--offline-batches", "1",
        "--beam", "8", "--items", "3", "--max-queue", "4",
    ])  # fmt: skip
    script.main()
    result = json.loads((tmp_path / "serving_load_t.json").read_text())
    assert result["environment"]["commit"] is not None and result["offline_batch64_rps"] > 0
    for mode in ("off", "on"):
        steps = result["modes"][mode]["steps"]
        assert [s["recovery"] for s in steps] == [False, False, True]
        for s in steps:
            assert s["ok"] + s["shed_503"] + s["errors"] == s["sent"]
            assert s["ok"] == 0 or s["p50_ms"] <= s["p99_ms"]
        assert steps[0]["ok"] > 0 and steps[0]["errors"] == 0
    assert result["modes"]["off"]["server_args"][:2] == ["--max-batch", "1"]
    assert result["modes"]["on"]["server_args"][-2:] == ["--device", "cpu"]
    assert (tmp_path / "serving_load_t.png").stat().st_size > 0
    assert "batching on" in (tmp_path / "serving_load_t.md").read_text()


# --- the latency bound --------------------------------------------------------------------------


def _bound_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serving_bound.py"
    spec = importlib.util.spec_from_file_location("serving_bound", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_ideal_batchers_queue_as_theory_says():
    script = _bound_script()
    cost = script.interpolate([1, 64], [0.010, 0.010 + 63 * 0.001])  # a fixed cost, then linear
    # nearly idle: every request is alone and takes T(1)
    lat = script.request_batcher(cost, 64, 1, rate=0.5, n=2000, seed=0)
    assert np.allclose(np.percentile(lat, 50), 0.010, rtol=0.05)
    # loaded: requests wait for the running batch, so the tail grows with the load
    low = script.request_batcher(cost, 64, 1, rate=20, n=20000, seed=0)
    high = script.request_batcher(cost, 64, 1, rate=60, n=20000, seed=0)
    assert np.percentile(high, 99) > np.percentile(low, 99) > 0.010
    # joining at the next step waits less than joining at the next batch
    steady = script.continuous_batcher(cost, 64, steps=20, rate=60, n=5000, seed=0)
    assert np.percentile(steady, 99) < np.percentile(high, 99)
    # a second worker shares the load
    two = script.request_batcher(cost, 64, 2, rate=60, n=20000, seed=0)
    assert np.percentile(two, 99) < np.percentile(high, 99)


def test_serving_bound_benchmark_records_cost_curve_and_bounds(run, tmp_path, monkeypatch):
    import sys

    script = _bound_script()
    monkeypatch.setattr(sys, "argv", [
        "serving_bound.py", "--run", str(run), "--out", str(tmp_path), "--name", "t",
        "--beam", "8", "--items", "3", "--max-batch", "4", "--workers", "1,2", "--repeats", "1",
        "--requests", "2000",
    ])  # fmt: skip
    script.main()
    result = json.loads((tmp_path / "serving_bound_t.json").read_text())
    assert result["sizes"] == [1, 2, 4] and result["config"]["decode_steps"] > 3
    assert [w["workers"] for w in result["workers"]] == [1, 2]
    for w in result["workers"]:
        assert all(s > 0 for s in w["seconds"])
        loads = w["bounds"]["loads"]
        assert [r["fraction"] for r in loads] == list(script.LOADS)
        for r in loads:  # the measured curve is noisy at this size: its shape is tested above
            assert 0 < r["request_p50_over_single"] <= r["request_p99_over_single"] < 1e3
    assert "continuous_p99_over_single" in result["workers"][0]["bounds"]["loads"][0]
    assert "| 1 | continuous |" in (tmp_path / "serving_bound_t.md").read_text()
