"""The online A/B test (``onerec online``): arm assignment, the log read back by the data layer,
a tiny run end to end through real ``onerec serve`` processes, and a killed run resumed to the
same report."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from onerec.cli import main
from onerec.data.readers import ColumnMapping, read_dataset
from onerec.exceptions import OnlineConfigError
from onerec.online import Hooks, OnlineConfig, arm_of, assign_arms, run_online
from onerec.online.logbook import RESPONSES
from onerec.online.report import TIMING_SECTION
from onerec.runs import OWNER_FILE
from test_benchmark_scripts import load_script


class Killed(Exception):
    """Raised by the hook to stop a run mid-day."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted tiny test (shared: the resume test compares against it)."""
    out = tmp_path_factory.mktemp("online") / "run"
    return out, run_online(out, OnlineConfig.scale("tiny"))


def test_arms_are_stable_per_user_and_balanced() -> None:
    arms = ("cascade", "onerec-ntp", "onerec-ipa")
    users = list(range(6000))
    first = assign_arms(users, arms, "salt")
    # the same user, the same arm: again, alone, among other users, as a string id
    assert np.array_equal(first, assign_arms(users, arms, "salt"))
    assert np.array_equal(first[::7], assign_arms(users[::7], arms, "salt"))
    assert all(arm_of(u, arms, "salt") == arms[first[u]] for u in (0, 17, 5999))
    counts = np.bincount(first, minlength=len(arms))
    expected, sd = len(users) / len(arms), np.sqrt(len(users) * (1 / 3) * (2 / 3))
    assert np.all(np.abs(counts - expected) < 4 * sd), counts
    # another salt (another test) reshuffles users
    assert (first != assign_arms(users, arms, "other")).mean() > 0.5


def test_bad_online_settings_are_named() -> None:
    with pytest.raises(OnlineConfigError, match="control arm 'cascade'"):
        OnlineConfig(arms=("onerec-ntp", "onerec-ipa"))
    with pytest.raises(OnlineConfigError, match="arms must be distinct names"):
        OnlineConfig(arms=("cascade", "sasrec"))
    with pytest.raises(OnlineConfigError, match="beam_size"):
        OnlineConfig(beam_size=2)
    with pytest.raises(OnlineConfigError, match="unknown platform"):
        OnlineConfig(platform={"users": 10})


def test_tiny_run_end_to_end_through_real_servers(tiny: tuple[Path, dict]) -> None:
    out, report = tiny
    config = OnlineConfig.scale("tiny")
    assert report["counts"]["failed"] == 0
    assert report["counts"]["sessions"] > 0
    # every arm served every day, OneRec arms by a model version the server named
    versions = report["versions"]
    for arm in config.arms:
        for day in range(1, config.days + 1):
            rows = [v for v in versions if v["arm"] == arm and v["day"] == day]
            assert rows and sum(v["sessions"] for v in rows) > 0, (arm, day)
            if arm != "cascade":
                assert all(len(v["version"]) == 12 for v in rows if v["version"] != "no-history")

    def served(arm: str, day: int) -> set[str]:
        return {v["version"] for v in versions if v["arm"] == arm and v["day"] == day} - {
            "no-history"}

    # retraining changed the served models
    assert served("onerec-ntp", 2) != served("onerec-ntp", 1)
    assert served("onerec-ipa", 2) != served("onerec-ipa", 1)
    assert served("onerec-ipa", 1) != served("onerec-ntp", 1)  # aligned before day 1
    # a swap under load every day, with no failed request, to the version then logged
    for day in range(1, config.days + 1):
        syncs = [s for s in report["sync"] if s["day"] == day]
        swapped = [s for s in syncs if s["outcome"] == "swapped"]
        assert swapped, day
        for s in swapped:
            assert s["failed"] == 0 and s["requests"] >= config.sync_requests
            assert served(s["arm"], day) == {s["version"]}
    assert report["reloads"]["failed_during_reloads"] == 0
    for plot in report["plots"]:
        assert (out / "plots" / plot).stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "+1.68%" in text and "onerec-ipa" in text and "## Ablation" in text
    # the per-user watch time is the oracle's, summed over the user's sessions
    sessions = pq.read_table(sorted((out / "sessions").glob("*.parquet"))[0]).to_pylist()
    assert all(s["swt"] > 0 for s in sessions)


def test_log_is_read_back_by_the_data_layer_with_nothing_lost(tiny: tuple[Path, dict]) -> None:
    out, report = tiny
    table = pq.read_table(out / "log.parquet")
    assert table.num_rows == report["counts"]["exposures"]
    ds = read_dataset(out / "log.parquet", columns=ColumnMapping(session="session"))
    assert len(ds.log) == table.num_rows
    assert ds.meta["duplicates_removed"] == 0
    numeric = {"watch_time", "duration", "position", "day", *RESPONSES}
    assert set(ds.log.signals) == numeric
    # row for row (the dataset is in user, time order; so is this sort of the file)
    order = np.lexsort((table.column("position").to_numpy(), table.column("timestamp").to_numpy(),
                        table.column("user_id").to_numpy()))  # fmt: skip
    log = ds.log
    assert np.array_equal(log.users.raw[log.user], table.column("user_id").to_numpy()[order])
    assert np.array_equal(log.items.raw[log.item], table.column("item_id").to_numpy()[order])
    assert np.array_equal(log.timestamp, table.column("timestamp").to_numpy()[order])
    for name in numeric:
        assert np.allclose(log.signals[name], table.column(name).to_numpy()[order]), name
    # text columns stay in the file: the arm and the model version of every exposure
    assert Counter(table.column("arm").to_pylist()).keys() == set(OnlineConfig.scale("tiny").arms)


def test_killed_mid_day_and_resumed_gives_the_same_report(
    tiny: tuple[Path, dict], tmp_path: Path
) -> None:
    done, report = tiny
    out = tmp_path / "run"
    out.mkdir()
    # the platform and day 1's models are what the uninterrupted run made (same seed): reuse
    for name in ("platform", "setup", "models"):
        shutil.copytree(done / name, out / name)
    shutil.copyfile(done / OWNER_FILE, out / OWNER_FILE)
    for arm in ("onerec-ntp", "onerec-ipa"):
        shutil.rmtree(out / "models" / arm / "day_002")  # retraining is redone by this run

    def kill(day: int, chunk: int) -> None:
        if (day, chunk) == (2, 0):
            raise Killed

    config = OnlineConfig.scale("tiny")
    with pytest.raises(Killed):
        run_online(out, config, hooks=Hooks(after_chunk=kill))
    assert not (out / "report.md").exists()
    assert len(list((out / "log").glob("*.parquet"))) == config.chunks_per_day + 1
    resumed = run_online(out, config)

    def stable(path: Path) -> str:
        return path.read_text().split(TIMING_SECTION)[0]

    assert stable(out / "report.md") == stable(done / "report.md")
    assert json.dumps(resumed["summary"]) == json.dumps(report["summary"])
    assert resumed["versions"] == report["versions"]
    assert pq.read_table(out / "log.parquet").equals(pq.read_table(done / "log.parquet"))
    # a test of other settings is refused, not mixed into this one
    with pytest.raises(OnlineConfigError, match="other settings"):
        run_online(out, OnlineConfig.scale("tiny", seed=1))


def test_benchmark_records_the_run(tiny: tuple[Path, dict], tmp_path: Path, monkeypatch) -> None:
    done, report = tiny
    script = load_script("online_ab")
    results = tmp_path / "results"
    # a finished run called again only writes its report: the benchmark records it
    monkeypatch.setattr(sys, "argv", ["online_ab.py", "--scale", "tiny", "--run-dir", str(done),
                                      "--out", str(results)])  # fmt: skip
    script.main()
    record = json.loads((results / "online_ab_tiny.json").read_text())
    assert record["commit"] and record["machine"]["cpu_count"] >= 1
    assert record["wall_seconds"] > 0 and len(record["load_average_before"]) == 3
    assert record["report"]["summary"] == json.loads(json.dumps(report["summary"]))
    assert (results / "online_ab_tiny.md").read_text() == (done / "report.md").read_text()
    assert sorted(p.name for p in results.glob("*.png")) == sorted(
        f"online_ab_tiny_{p}" for p in report["plots"])


def test_cli_is_the_api(tiny: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    done, report = tiny
    # a finished test called again writes the same report; other settings are a named error
    assert main(["online", "--scale", "tiny", "--out", str(done)]) == 0
    assert report["verdict"] in capsys.readouterr().out
    assert json.loads((done / "report.json").read_text())["summary"] == json.loads(
        json.dumps(report["summary"]))
    assert main(["online", "--scale", "tiny", "--seed", "3", "--out", str(done)]) == 2
    assert "OnlineConfigError" in capsys.readouterr().err
