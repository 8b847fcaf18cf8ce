"""The quality benchmark script end to end at tiny scale: the command behind the README's OneRec
numbers must keep running, keep its run folder apart from the data, and record what it ran."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from onerec.data.synthetic import SyntheticConfig, generate
from onerec.exceptions import ConfigError
from onerec.model.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_onerec_quality_runs_on_a_dataset_folder(tmp_path: Path, monkeypatch) -> None:
    script = load_script("onerec_quality")
    data = generate(SyntheticConfig(num_users=80, num_items=40, mean_interactions=10, seed=1))
    folder = data.save(tmp_path / "data")
    before = sorted(p.name for p in folder.iterdir())
    out, runs = tmp_path / "out", tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", [
        "onerec_quality.py", "--datasets", str(folder), "--embeddings", "collaborative",
        "--preset", "tiny", "--epochs", "1", "--eval-users", "0", "--model", "dropout=0.2",
        "--ema-decay", "0.9", "--seeds", "0,3",
        "--runs", str(runs), "--out", str(out), "--quiet",
    ])  # fmt: skip
    script.main()
    record = json.loads((out / f"onerec_quality_{data.name}_seed0.json").read_text())
    # the preset's settings apply, and --model overrides them
    assert record["config"]["model_overrides"] == {"dropout": 0.2}
    assert record["config"]["model"]["dropout"] == 0.2
    assert record["config"]["model"]["n_user_buckets"] == PRESETS["tiny"]["n_user_buckets"]
    assert record["config"]["train"]["eval_users"] is None  # 0 = every validation user
    assert record["config"]["train"]["ema_decay"] == 0.9
    assert record["selected"]["exclude_seen"] in (True, False)
    for part in ("valid", "test", "valid_exclude_seen", "test_exclude_seen"):
        assert 0 <= record["results"][part]["recall@5"] <= record["results"][part]["recall@10"] <= 1
    assert (runs / data.name / "seed0" / "model" / "model.safetensors").exists()
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written beside the data
    # every seed tokenizes and trains on its own; the summary is their mean and spread
    other = json.loads((out / f"onerec_quality_{data.name}_seed3.json").read_text())
    assert (record["seed"], other["seed"]) == (0, 3)
    assert other["config"]["train"]["seed"] == 3 and (runs / data.name / "seed3" / "tokens").exists()
    aggregate = json.loads((out / f"onerec_quality_{data.name}.json").read_text())
    summary = aggregate["summary"]
    assert summary["seeds"] == [0, 3] and aggregate["config"]["model_overrides"] == {"dropout": 0.2}
    values = [r["selected"]["test"]["recall@10"] for r in (record, other)]
    assert summary["test"]["recall@10"]["mean"] == pytest.approx(sum(values) / 2)
    assert summary["test"]["recall@10"]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    seconds = [r["training"]["seconds"] for r in (record, other)]  # summed over resumes
    assert summary["train_seconds"]["mean"] == pytest.approx(sum(seconds) / 2)
    rows = (out / "onerec_quality.md").read_text().splitlines()
    assert len(rows) == 5 and rows[2].startswith(f"| {data.name} |")
    assert rows[4].startswith(f"| {data.name}, mean (sd) of seeds 0,3 |")
    # seeds run apart are summarized afterwards from their records, training nothing
    (out / f"onerec_quality_{data.name}.json").unlink()
    monkeypatch.setattr(sys, "argv", [
        "onerec_quality.py", "--datasets", str(folder), "--seeds", "3,0", "--summarize",
        "--out", str(out), "--runs", str(tmp_path / "nothing"),
    ])  # fmt: skip
    script.main()
    again = json.loads((out / f"onerec_quality_{data.name}.json").read_text())["summary"]
    assert again["seeds"] == [3, 0] and not (tmp_path / "nothing").exists()
    assert again["test"] == summary["test"]
    assert again["valid_recall@10"] == summary["valid_recall@10"]
    monkeypatch.setattr(sys, "argv", [
        "onerec_quality.py", "--datasets", str(folder), "--seeds", "0,5", "--summarize",
        "--out", str(out)])  # fmt: skip
    with pytest.raises(ConfigError, match="seed5.json not found"):
        script.main()
    rows = (out / "onerec_quality.md").read_text().splitlines()[:3]
    (out / "onerec_quality.md").write_text("\n".join(rows) + "\n")
    # a later run's row goes into the table, above the notes (and their own tables) under it
    notes = ["", "Row 1: a note.", "", "| run | seed 0 |", "|---|---|", "| a | .1 |"]
    (out / "onerec_quality.md").write_text("\n".join(rows + notes) + "\n")
    script.add_row(out / "onerec_quality.md", "| next |")
    assert (out / "onerec_quality.md").read_text().splitlines()[2:] == [
        rows[2], "| next |", *notes]


def test_onerec_quality_selection_split(tmp_path: Path, monkeypatch) -> None:
    script = load_script("onerec_quality")
    data = generate(SyntheticConfig(num_users=60, num_items=30, mean_interactions=8, seed=2))
    folder = data.save(tmp_path / "data")
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["onerec_quality.py", "--datasets", str(folder), "--embeddings", "collaborative",
            "--preset", "tiny", "--epochs", "1", "--seeds", "0", "--runs", str(runs),
            "--out", str(out), "--model", "item_loss_weight=1.0", "--quiet"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", [*args, "--selection-split", "--tag", "_x"])
    script.main()
    record = json.loads((out / f"onerec_quality_{data.name}_selection_x_seed0.json").read_text())
    users = len(np.unique(data.log.user))
    split = record["split"]
    assert split["selection"] and split["dropped"]["rows_removed"] == users  # one row per user
    assert record["protocol"].startswith("selection split: each user's last item removed")
    # the selection split trains on one item fewer per user than the full log's split
    assert split["split"]["train_interactions"] == len(data.log) - 3 * users
    assert (runs / f"{data.name}_selection" / "seed0" / "model").is_dir()
    assert not (runs / data.name).exists()  # a full-log run is never resumed in its place
    rows = (out / "onerec_quality.md").read_text().splitlines()
    assert rows[2].startswith(f"| {data.name}, selection split |")
    # the re-ranking sweep scores the same selection test (weight 0: the run's own ranking)
    monkeypatch.setattr(sys, "argv", [
        "rerank_sweep.py", "--run", str(runs / f"{data.name}_selection" / "seed0" / "model"),
        "--dataset", str(folder), "--out", str(out), "--name", "sel", "--weights", "0",
        "--split", "selection", "--history-length", "20",
    ])  # fmt: skip
    load_script("rerank_sweep").main()
    swept = json.loads((out / "rerank_sweep_sel.json").read_text())
    assert swept["users"] == users and swept["protocol"].startswith("test of the selection split")
    own = record["results"]["test_exclude_seen"]
    assert swept["results"]["rerank 0"]["recall@10"] == pytest.approx(own["recall@10"])
    monkeypatch.setattr(sys, "argv", args)
    script.main()
    full = json.loads((out / f"onerec_quality_{data.name}_seed0.json").read_text())
    assert not full["split"]["selection"] and full["split"]["dropped"] is None
    assert full["split"]["split"]["train_interactions"] == len(data.log) - 2 * users
    # records from a scratch folder join the results: copied, one row each, never twice
    files = [out / f"onerec_quality_{data.name}_selection_x_seed0.json",
             out / f"onerec_quality_{data.name}_seed0.json"]  # fmt: skip
    results = tmp_path / "results"
    for _ in range(2):
        monkeypatch.setattr(sys, "argv", ["onerec_quality.py", "--out", str(results),
                                          "--add-records", *map(str, files)])  # fmt: skip
        script.main()
        rows = (results / "onerec_quality.md").read_text().splitlines()
        assert rows[2:] == [script.markdown_row(record), script.markdown_row(full)]
        assert all((results / f.name).read_bytes() == f.read_bytes() for f in files)
    (results / files[1].name).write_text("{}")
    with pytest.raises(ConfigError, match="exists and differs"):
        script.main()
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "baselines"}))
    monkeypatch.setattr(sys, "argv", ["onerec_quality.py", "--out", str(results),
                                      "--add-records", str(tmp_path / "other.json")])
    with pytest.raises(ConfigError, match="not a per-seed record"):
        script.main()


def test_onerec_quality_names_a_catalog_without_published_codes(tmp_path, monkeypatch) -> None:
    script = load_script("onerec_quality")
    folder = generate(SyntheticConfig(num_users=40, num_items=40, seed=2)).save(tmp_path / "d")
    monkeypatch.setattr(sys, "argv", [
        "onerec_quality.py", "--datasets", str(folder), "--codes", "published",
        "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    with pytest.raises(ConfigError, match="no published tokenization"):
        script.main()
    monkeypatch.setattr(sys, "argv", ["onerec_quality.py", "--seeds", "0,x"])
    with pytest.raises(ConfigError, match="--seeds"):
        script.main()


def item_head_run(tmp_path: Path, monkeypatch, *model: str) -> tuple[Path, Path, dict]:
    """A tiny dataset folder, a quality-benchmark run of a model with an item head on it (plus
    ``model`` settings), and the run's record."""
    quality = load_script("onerec_quality")
    data = generate(SyntheticConfig(num_users=80, num_items=40, mean_interactions=10, seed=1))
    folder = data.save(tmp_path / "data")
    runs, out = tmp_path / "runs", tmp_path / "out"
    extra = [arg for setting in model for arg in ("--model", setting)]
    monkeypatch.setattr(sys, "argv", [
        "onerec_quality.py", "--datasets", str(folder), "--embeddings", "collaborative",
        "--preset", "tiny", "--epochs", "2", "--eval-users", "0", "--seeds", "0",
        "--model", "item_loss_weight=1.0", *extra, "--runs", str(runs), "--out", str(out),
        "--quiet",
    ])  # fmt: skip
    quality.main()
    record = json.loads((out / f"onerec_quality_{data.name}_seed0.json").read_text())
    return folder, runs / data.name / "seed0" / "model", record


def test_rerank_sweep_scores_every_weight_from_one_search(tmp_path, monkeypatch) -> None:
    """A model trained with an item head: the sweep's weight 0 is the beam's own ranking (what
    validation without re-ranking measures), and every weight and the head alone are recorded."""
    sweep = load_script("rerank_sweep")
    folder, run, record = item_head_run(tmp_path, monkeypatch)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "rerank_sweep.py", "--run", str(run), "--dataset", str(folder), "--out", str(out),
        "--name", "t", "--weights", "0,1,100", "--union", "40",
    ])  # fmt: skip
    sweep.main()
    result = json.loads((out / "rerank_sweep_t.json").read_text())["results"]
    assert sorted(result) == ["head alone", "rerank 0", "rerank 1", "rerank 100", "union 0",
                              "union 1", "union 100"]  # fmt: skip
    # the head's 40 best items are the whole catalog: weight 100 is the head's own ranking
    assert result["union 100"]["recall@10"] == pytest.approx(result["head alone"]["recall@10"])
    beam_only = record["results"]["valid_exclude_seen"]  # rerank_weight 0 when it was trained
    assert result["rerank 0"]["recall@10"] == pytest.approx(beam_only["recall@10"])
    for r in result.values():
        assert 0 <= r["ndcg@10"] <= r["recall@10"] <= 1 and r["recall@10_se"] >= 0
    # seen items kept (Yelp's setting): weight 0 is the benchmark's ranking with them kept
    monkeypatch.setattr(sys, "argv", [
        "rerank_sweep.py", "--run", str(run), "--dataset", str(folder), "--out", str(out),
        "--name", "kept", "--weights", "0", "--union", "40", "--keep-seen",
    ])  # fmt: skip
    sweep.main()
    kept = json.loads((out / "rerank_sweep_kept.json").read_text())
    assert "seen items kept" in kept["protocol"]
    kept_recall = kept["results"]["rerank 0"]["recall@10"]
    assert kept_recall == pytest.approx(record["results"]["valid"]["recall@10"])
    assert kept_recall != pytest.approx(result["rerank 0"]["recall@10"])
    # the last epoch's weights: the kept ones exactly when the last epoch was the best
    monkeypatch.setattr(sys, "argv", [
        "rerank_sweep.py", "--run", str(run), "--dataset", str(folder), "--out", str(out),
        "--name", "last", "--weights", "0", "--checkpoint", "last",
    ])  # fmt: skip
    sweep.main()
    last = json.loads((out / "rerank_sweep_last.json").read_text())
    assert last["last_checkpoint_epochs"] == 2
    log = record["training"]["epochs_log"]
    if max(log, key=lambda e: e["valid_recall@10"])["epoch"] == log[-1]["epoch"]:
        assert last["results"]["rerank 0"] == result["rerank 0"]


def test_newest_item_probe_scores_three_sets_for_each_model(tmp_path, monkeypatch) -> None:
    """The probe's third set is test's targets after validation's histories, and the run's own
    ranking on validation is what the quality benchmark recorded for it."""
    probe = load_script("newest_item_probe")
    folder, run, record = item_head_run(tmp_path, monkeypatch, "rerank_weight=1.0")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "newest_item_probe.py", "--run", str(run),
        "--dataset", str(folder), "--out", str(out), "--name", "t", "--sasrec-seconds", "2",
    ])  # fmt: skip
    probe.main()
    result = json.loads((out / "newest_item_probe_t.json").read_text())["results"]
    assert sorted(result) == ["onerec", "onerec item head alone", "sasrec-ce"]
    sets = ["test", "test without the newest item", "valid"]
    assert all(sorted(r) == sets for r in result.values())
    recorded = record["results"]["valid_exclude_seen"]["recall@10"]
    assert result["onerec"]["valid"]["recall@10"] == pytest.approx(recorded)
    split = probe.leave_one_out(probe.load_dataset(str(folder)).log, history_length=20)
    shifted = probe.probe_sets(split)["test without the newest item"]
    assert np.array_equal(shifted.target.values, split.test.target.values)
    assert np.array_equal(shifted.history.values, split.valid.history.values)
    # each set's rows split into targets the user had seen before and the rest
    back = probe.returning(split.test)
    assert 0 < back.sum() < len(back)  # the synthetic users return to some items
    for kept in (False, True):
        if kept:
            monkeypatch.setattr(sys, "argv", [*sys.argv, "--keep-seen", "--sasrec-seconds", "0"])
            probe.main()
            result = json.loads((out / "newest_item_probe_t.json").read_text())["results"]
        test = result["onerec"]["test"]
        assert (test["returning"]["rows"], test["new"]["rows"]) == (back.sum(), (~back).sum())
        mixed = (back.sum() * test["returning"]["recall@10"]
                 + (~back).sum() * test["new"]["recall@10"]) / len(back)  # fmt: skip
        assert mixed == pytest.approx(test["recall@10"])
        if not kept:  # an excluded item is never ranked: a returning target is never hit
            assert test["returning"]["recall@10"] == 0.0
        else:  # seen items first: returns can only rise, new targets only fall
            plain, first = (result[k]["test"] for k in ("onerec item head alone",
                                                        "onerec item head alone, seen first"))
            assert first["returning"]["recall@10"] >= plain["returning"]["recall@10"]
            assert first["new"]["recall@10"] <= plain["new"]["recall@10"]
            assert first["recall@10"] != plain["recall@10"]
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--sets", "test"])  # one set only
    probe.main()
    result = json.loads((out / "newest_item_probe_t.json").read_text())["results"]
    assert all(list(r) == ["test"] for r in result.values())
    assert result["onerec"]["test"]["recall@10"] == pytest.approx(test["recall@10"])
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--sets", "tset"])
    with pytest.raises(ConfigError, match="--sets must name some of"):
        probe.main()


def test_baselines_script_runs_seeds_and_summarizes_them(tmp_path, monkeypatch, capsys) -> None:
    """``--seed 1`` writes its own record beside seed 0's; ``--summarize 0,1`` trains nothing
    and writes the mean and spread, with a usage error for a malformed seed list."""
    script = load_script("baselines")
    data = generate(SyntheticConfig(num_users=60, num_items=30, mean_interactions=8, seed=2))
    folder = data.save(tmp_path / "data")
    out = tmp_path / "out"
    for seed in ("0", "1"):
        monkeypatch.setattr(sys, "argv", [
            "baselines.py", "--dataset", str(folder), "--models", "pop", "--out", str(out),
            "--max-length", "8", "--seed", seed, "--quiet",
        ])  # fmt: skip
        script.main()
    assert (out / f"baselines_{data.name}_seed1.json").is_file()
    monkeypatch.setattr(sys, "argv", ["baselines.py", "--dataset", str(folder), "--out", str(out),
                                      "--summarize", "0,1"])  # fmt: skip
    script.main()
    assert "| pop | " in capsys.readouterr().out
    summary = json.loads((out / f"baselines_{data.name}_seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and list(summary["models"]) == ["pop"]
    monkeypatch.setattr(sys, "argv", ["baselines.py", "--summarize", "0,x"])
    with pytest.raises(SystemExit):
        script.main()
