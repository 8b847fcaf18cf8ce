"""``onerec online``: a multi-day A/B test on the simulated platform, served over HTTP by real
``onerec serve`` processes, with daily retraining, realignment and hot parameter sync.

The run, in order (each step skipped when a resumed run finds it done):

1. **setup** (``platform/``): the quickstart platform with its timeline extended by the test's
   days, its 30-day log, semantic IDs and the initial OneRec (``onerec.quickstart``'s own
   stage functions); a reward model on that log and one IPA iteration of the initial model on
   its last ``align_context_days`` (the IPA arm's day-1 model).
2. **serving**: one ``onerec serve`` process per OneRec arm, on its own run folder
   (``serve/<arm>``), with the run-folder watcher off and admin reloads on (a fresh bearer
   token per run). It starts on the model that served the day before the first day to run.
3. **each day d**: for every retrained arm, day d's model is published into its folder and
   ``POST /admin/reload`` is asked for while requests keep arriving (the sync's load,
   ``sync/``). The day's sessions (:mod:`.traffic`) are then served chunk by chunk: the control
   arm by the simulator's logging policy, OneRec arms over HTTP; the simulator answers every
   shown session (sampled responses, user drift included) and the oracle grades it; each chunk
   is written whole (:mod:`.logbook`) before the next starts, histories grow between chunks.
   After the day, the retrained arms are fine-tuned on the day's watched videos (NTP) and the
   IPA arm gets one IPA iteration whose reward model is retrained on every log so far; the
   results are day d+1's models (``models/<arm>/day_DDD``).
4. **report** (:mod:`.report`): ``report.md``, ``report.json``, a PNG per metric,
   ``log.parquet`` (every exposure of the test).

Every random draw is a function of the seed, the day and the chunk, and every OneRec answer
of the logged traffic comes from one known model version per arm and day, so a run killed
anywhere and called again ends with the same report as an uninterrupted one (tested).
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from onerec.data.schema import Dataset, InteractionLog
from onerec.exceptions import OnlineConfigError, OnlineError
from onerec.online import logbook, retrain
from onerec.online.arms import assign_arms
from onerec.online.client import recommend_many, reload_under_load
from onerec.online.config import ALIGNED, CONTROL, RETRAINED, OnlineConfig
from onerec.online.traffic import DayTraffic, day_span, day_traffic, watched_histories
from onerec.quickstart import semantic_ids, simulate, train_onerec, training_data
from onerec.runs import claim_output
from onerec.serving.process import ServerProcess
from onerec.simulator import Simulator, SimulatorConfig
from onerec.tokenizer.pipeline import load_tokenization

_CASCADE, _RESPONSE = 22, 23
OWN_FOLDERS = ("platform", "setup", "models", "days", "serve", "serve_logs", "sync", "log",
               "sessions", "plots")
OWN_FILES = ("config.json", "report.md", "report.json", "log.parquet", "timings.jsonl")


@dataclass
class Hooks:
    """Callbacks into a running test (the resume test raises from ``after_chunk``)."""

    after_chunk: Callable[[int, int], None] | None = None


def _say(message: str) -> None:
    print(f"[online] {message}", flush=True)


class Platform:
    """The simulated platform, its initial log and the initial OneRec run (``platform/``)."""

    def __init__(self, folder: Path, config: OnlineConfig, progress: bool) -> None:
        self.folder = folder
        ready = folder / "ready.json"
        if not ready.exists():
            qcfg = config.quickstart()
            folder.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(qcfg.seed)
            started = time.perf_counter()
            sim, dataset = simulate(qcfg, folder, online_days=float(config.days))
            train_ds, _ = training_data(sim, dataset, qcfg)
            semantic_ids(dataset, qcfg, folder)
            train_onerec(train_ds, qcfg, folder, progress)
            ready.write_text(json.dumps({"seconds": time.perf_counter() - started}))
        self.sim = Simulator(SimulatorConfig.load(folder / "simulator.json"))
        self.dataset = Dataset.load(folder / "dataset")
        self.run = folder / "onerec"
        self.items, self.ids = load_tokenization(self.run)
        self.users = self.dataset.log.users
        train = json.loads((self.run / "train_config.json").read_text())
        self.history_length = int(train["history_length"])
        self.session_items = int(train["session_items"])

    def seconds_at(self, time_: np.ndarray | float) -> np.ndarray:
        """Unix seconds of timeline times."""
        policy = self.sim.config.policy
        return policy.start_timestamp + np.asarray(time_) * (policy.period_days * 86400.0)


class OnlineTest:
    """One online test in a run folder; :meth:`run` does whatever is left of it."""

    def __init__(self, out: Path, config: OnlineConfig, progress: bool, hooks: Hooks) -> None:
        self.out, self.config, self.progress, self.hooks = out, config, progress, hooks
        self.platform = Platform(out / "platform", config, progress)
        p = self.platform
        self.arm_index = assign_arms(p.users.raw.tolist(), config.arms, f"online-{config.seed}")
        self.histories = watched_histories(p.dataset.log)
        self.timings: dict[str, float] = {}

    # models -----------------------------------------------------------------------------------
    def model_dir(self, arm: str, day: int) -> Path:
        """The model that serves ``arm`` on ``day`` (day 0: the initial OneRec run)."""
        if day == 0 or arm not in RETRAINED + ALIGNED:
            return self.platform.run
        return self.out / "models" / arm / f"day_{day:03d}"

    def _timed(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds
        with (self.out / "timings.jsonl").open("a") as f:
            f.write(json.dumps({"step": key, "seconds": seconds}) + "\n")

    def prepare_day_one(self) -> None:
        """Day 1's models: the initial OneRec, and for the IPA arm one IPA iteration of it on
        the last ``align_context_days`` of the initial log (reward model on the whole log)."""
        c, p = self.config, self.platform
        for arm in c.onerec_arms:
            target = self.model_dir(arm, 1)
            if target == p.run or (target / "model.safetensors").exists():
                continue
            if arm in ALIGNED:
                started = time.perf_counter()
                log = p.dataset.log
                since = float(log.timestamp.max()) - c.align_context_days * 86400.0
                folder = self.out / "setup"
                source = self._ipa(retrain.load_model(p.run), log, since, folder, c.seed)
                retrain.save_model(source, target)
                self._timed("setup_ipa", time.perf_counter() - started)
            else:
                retrain.save_model(p.run, target)

    def _ipa(self, model: Any, log: InteractionLog, since: float, folder: Path,
             seed: int) -> Path:  # fmt: skip
        c, p = self.config, self.platform
        rm = retrain.train_rm(log, folder / "reward_model", c.session_items, p.history_length,
                              c.reward, c.reward_model, seed)  # fmt: skip
        split = retrain.recent_split(log, since, p.history_length)
        train = {"session_items": p.session_items, "history_length": p.history_length,
                 "device": "cpu", **c.finetune}  # fmt: skip
        return retrain.ipa_step(model, p.ids, split, rm, folder / "ipa", c.align, train,
                                p.items.raw, seed)  # fmt: skip

    def retrain_after(self, day: int) -> None:
        """Day ``day + 1``'s models of the retrained arms, from ``day``'s logs."""
        c, p = self.config, self.platform
        todo = [a for a in c.onerec_arms if a in RETRAINED
                and not (self.model_dir(a, day + 1) / "model.safetensors").exists()]  # fmt: skip
        if not todo:
            return
        log = self.full_log()
        since = float(p.seconds_at(day_span(p.sim, day)[0]))
        split = retrain.recent_split(log, since, p.history_length)
        folder = self.out / "days" / f"day_{day:03d}"
        seed = c.seed + 1000 * day
        for arm in todo:
            started = time.perf_counter()
            model = retrain.load_model(self.model_dir(arm, day))
            if arm in ALIGNED:
                source = self._ipa(model, log, since, folder / arm, seed)
            else:
                tc = retrain.finetune_config(c.finetune, p.session_items, p.history_length, seed)
                source = retrain.finetune(model, p.ids, split, tc, folder / arm / "train",
                                          p.items.raw, p.users.raw)  # fmt: skip
            retrain.save_model(source, self.model_dir(arm, day + 1))
            self._timed(f"retrain_{arm}", time.perf_counter() - started)
            _say(f"day {day}: {arm} retrained in {time.perf_counter() - started:.0f}s")

    def full_log(self) -> InteractionLog:
        """The initial log and every online exposure so far, on the platform's id maps."""
        base = self.platform.dataset.log
        table = logbook.read_chunks(self.out / "log")
        if table is None:
            return base
        online = logbook.as_log(table, base.users, base.items)
        keys = list(base.signals)
        return InteractionLog(
            np.concatenate([base.user, online.user]), np.concatenate([base.item, online.item]),
            np.concatenate([base.timestamp, online.timestamp]), base.users, base.items,
            {k: np.concatenate([np.asarray(base.signals[k]), np.asarray(online.signals[k])
                                .astype(np.asarray(base.signals[k]).dtype)]) for k in keys},
            np.concatenate([base.session, online.session]),
        )  # fmt: skip

    # serving ----------------------------------------------------------------------------------
    def start_servers(self, first_day: int, token: str) -> dict[str, ServerProcess]:
        """One server per OneRec arm, on the model that served ``first_day - 1``."""
        servers: dict[str, ServerProcess] = {}
        errors: list[BaseException] = []
        (self.out / "serve_logs").mkdir(exist_ok=True)

        def start(arm: str) -> None:
            folder = self.out / "serve" / arm
            if folder.exists():
                shutil.rmtree(folder)
            retrain.make_served_folder(self.platform.run, self.model_dir(arm, first_day - 1),
                                       folder)  # fmt: skip
            try:
                servers[arm] = ServerProcess(folder, "--watch-seconds", "0", admin_token=token,
                                             log=self.out / "serve_logs" / f"{arm}.log",
                                             start_seconds=180.0)  # fmt: skip
            except BaseException as e:  # noqa: BLE001 - re-raised below with the others stopped
                errors.append(e)

        threads = [threading.Thread(target=start, args=(a,)) for a in self.config.onerec_arms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for s in servers.values():
                s.stop()
            raise OnlineError(f"a server did not start: {errors[0]}") from errors[0]
        return servers

    def sync(self, day: int, servers: dict[str, ServerProcess], token: str,
             traffic: DayTraffic) -> None:  # fmt: skip
        """Publish day ``day``'s model of every retrained arm and reload its server; the first
        time a day is run, the reload happens under load and is recorded in ``sync/``."""
        for arm in self.config.onerec_arms:
            if arm not in RETRAINED + ALIGNED:
                continue
            retrain.save_model(self.model_dir(arm, day), self.out / "serve" / arm)
            record = self.out / "sync" / f"day_{day:03d}_{arm}.json"
            mine = traffic.user[self.arm_index[traffic.user] == self.config.arms.index(arm)]
            candidates = np.concatenate([mine, np.arange(len(self.histories))])
            bodies = [b for b in (self.body(int(u), ()) for u in candidates[:256]) if b][:64]
            if record.exists():
                result = reload_under_load(servers[arm].url, token, bodies, 1)
            else:
                result = reload_under_load(servers[arm].url, token, bodies,
                                           self.config.sync_requests)  # fmt: skip
                result["day"], result["arm"] = day, arm
                record.parent.mkdir(exist_ok=True)
                record.write_text(json.dumps(result, indent=2))
            if result["status"] != 200:
                raise OnlineError(f"day {day}: the reload of {arm} failed: {result}")
            _say(f"day {day}: {arm} reloaded ({result['outcome']} {result['previous']} -> "
                 f"{result['version']}, {result['requests']} requests in flight, "
                 f"{result['failed']} failed)")  # fmt: skip

    def body(self, user: int, exclude: tuple[int, ...] | list[int]) -> dict[str, Any] | None:
        """The request for one user's session (None: the user has watched nothing yet)."""
        c = self.config
        history = self.histories[user][-c.history_items :]
        if not history:
            return None
        raw = self.platform.items.raw
        return {"history": raw[history].tolist(), "user": self.platform.users.raw[user].item(),
                "n_items": c.session_items, "beam_size": c.beam_size, "truncate": True,
                "exclude": raw[list(exclude)].tolist()}  # fmt: skip

    def serve_chunk(
        self, day: int, chunk: int, traffic: DayTraffic, servers: dict[str, ServerProcess],
        shown: dict[int, list[int]],
    ) -> None:  # fmt: skip
        """Serve, answer, grade and log one chunk of the day's sessions."""
        c, p = self.config, self.platform
        rows = traffic.chunk(chunk, c.chunks_per_day)
        user, when, sid = traffic.user[rows], traffic.time[rows], traffic.session[rows]
        arm = self.arm_index[user]
        m = c.session_items
        rng = np.random.default_rng([c.seed, _CASCADE, day, chunk])
        sessions = p.sim.policy.fill(user, when, rng)[:, :m]  # the cascade's, for every row
        version = np.array([CONTROL] * len(rows), dtype=object)
        fallback = np.zeros(len(rows), dtype=bool)
        sendable: dict[str, list[int]] = {}
        requests: dict[str, list[dict[str, Any]]] = {}
        for k, name in enumerate(c.arms):
            if name == CONTROL:
                continue
            mine = np.flatnonzero(arm == k)
            bodies = [self.body(int(user[i]), shown.get(int(user[i]), ())) for i in mine]
            sendable[name] = [int(i) for i, b in zip(mine, bodies) if b is not None]
            requests[name] = [b for b in bodies if b is not None]
            for i in set(mine.tolist()) - set(sendable[name]):  # nothing watched: the cascade's
                version[i], fallback[i] = "no-history", True
        # the arms' servers work side by side; each gets its requests c.concurrency at a time
        with ThreadPoolExecutor(max(1, len(requests))) as pool:
            answered = dict(zip(requests, pool.map(
                lambda name: recommend_many(servers[name].url, requests[name], c.concurrency),
                requests)))  # fmt: skip
        for name, answers in answered.items():
            for i, answer in zip(sendable[name], answers):
                if answer.ok:
                    sessions[i] = p.items.index(answer.body["items"])
                    version[i] = answer.body["version"]
                else:
                    version[i], fallback[i] = f"failed:{answer.status}", True
        arms = [c.arms[a] for a in arm]
        truth = p.sim.oracle(user, sessions, when)
        responses = self.respond(user, sessions, when, arm, day, chunk)
        duration = p.sim.catalog.duration[sessions]
        name = logbook.chunk_name(day, chunk)
        graded = logbook.session_table(user, sessions, sid, when, arms, version.tolist(),
                                       fallback, truth, day, chunk)  # fmt: skip
        logbook.write_atomic(graded, self.out / "sessions" / name)
        exposures = logbook.exposure_table(p.users, p.items, user, sessions, sid,
                                           p.seconds_at(when), responses, duration, arms,
                                           version.tolist(), day)  # fmt: skip
        logbook.write_atomic(exposures, self.out / "log" / name)
        self.apply(exposures, shown)

    def respond(self, user: np.ndarray, sessions: np.ndarray, when: np.ndarray, arm: np.ndarray,
                day: int, chunk: int) -> dict[str, np.ndarray]:  # fmt: skip
        """The simulator's sampled responses, drawn per arm from the arm's own stream: the
        sampler's draws depend on every session drawn with them, so one stream for all arms
        would let a change in one arm move the others' responses."""
        out: dict[str, np.ndarray] = {}
        for k in range(len(self.config.arms)):
            rows = np.flatnonzero(arm == k)
            if len(rows) == 0:
                continue
            seed = ((_RESPONSE * 100 + day) * 1000 + chunk) * 100 + k
            drawn = self.platform.sim.sample_response(user[rows], sessions[rows], when[rows],
                                                      seed=seed)  # fmt: skip
            for name, values in drawn.items():
                out.setdefault(name, np.zeros(sessions.shape, dtype=values.dtype))[rows] = values
        return out

    def apply(self, exposures: pa.Table, shown: dict[int, list[int]] | None) -> None:
        """Grow the users' watched histories (and the day's shown videos) by logged rows."""
        p = self.platform
        user = p.users.index(exposures.column("user_id").to_numpy())
        item = p.items.index(exposures.column("item_id").to_numpy())
        order = np.lexsort((exposures.column("position").to_numpy(),
                            exposures.column("timestamp").to_numpy(), user))  # fmt: skip
        skip = exposures.column("skip").to_numpy()
        for i in order:
            u = int(user[i])
            if shown is not None:
                shown.setdefault(u, []).append(int(item[i]))
            if skip[i] == 0:
                self.histories[u].append(int(item[i]))

    # the whole test ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from onerec.online.report import write_report

        c = self.config
        started = time.perf_counter()
        self.prepare_day_one()
        done = {f.name for f in (self.out / "log").glob("*.parquet")}
        unfinished = (d for d in range(1, c.days + 1)
                      if any(logbook.chunk_name(d, k) not in done for k in range(c.chunks_per_day)))
        first = next(unfinished, None)
        if first is not None:
            for d in range(1, first):  # a run killed while retraining after a finished day
                self.retrain_after(d)
            self.replay_logs()
            token = secrets.token_hex(16)
            servers = self.start_servers(first, token)
            try:
                for day in range(first, c.days + 1):
                    self.run_day(day, servers, token)
            finally:
                for s in servers.values():
                    s.stop()
        self._timed("online_days", time.perf_counter() - started)
        return write_report(self)

    def replay_logs(self) -> None:
        """Histories as they were after the logged chunks (a resumed run)."""
        table = logbook.read_chunks(self.out / "log")
        if table is not None:
            self.apply(table, None)

    def run_day(self, day: int, servers: dict[str, ServerProcess], token: str) -> None:
        c = self.config
        started = time.perf_counter()
        traffic = day_traffic(self.platform.sim, day, c.sessions_per_day, c.seed)
        self.sync(day, servers, token, traffic)
        shown: dict[int, list[int]] = {}
        for chunk in range(c.chunks_per_day):
            path = self.out / "log" / logbook.chunk_name(day, chunk)
            if path.exists():  # served before the run was killed: only the day's shown videos
                table = pq.read_table(path)
                p = self.platform
                for u, i in zip(p.users.index(table.column("user_id").to_numpy()),
                                p.items.index(table.column("item_id").to_numpy())):  # fmt: skip
                    shown.setdefault(int(u), []).append(int(i))
                continue
            self.serve_chunk(day, chunk, traffic, servers, shown)
            if self.hooks.after_chunk is not None:
                self.hooks.after_chunk(day, chunk)
        self._timed("serve", time.perf_counter() - started)
        _say(f"day {day}: {len(traffic)} sessions served in {time.perf_counter() - started:.0f}s")
        if day < c.days:
            self.retrain_after(day)


def run_online(
    out: str | Path,
    config: OnlineConfig | None = None,
    *,
    progress: bool = False,
    hooks: Hooks | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the online test in ``out``; returns what ``report.json`` holds. A folder
    holding a test of other settings is refused (:class:`OnlineConfigError`); ``overwrite``
    starts over (the test's own files in ``out`` are removed first)."""
    config = config or OnlineConfig()
    out = claim_output(out, "online", overwrite)
    saved = out / "config.json"
    if overwrite:  # start over: the test's own files go, nothing else
        for name in OWN_FOLDERS:
            shutil.rmtree(out / name, ignore_errors=True)
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
    elif saved.exists():
        previous = OnlineConfig.from_dict(json.loads(saved.read_text()))
        if previous != config:
            raise OnlineConfigError(
                f"{out} holds an online test of other settings; resume it with the settings in "
                f"{saved} or choose a new folder (or overwrite)"
            )
    config.save(saved)
    return OnlineTest(out, config, progress, hooks or Hooks()).run()
