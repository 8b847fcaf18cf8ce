"""The quickstart pipeline runs end to end and leaves every artifact in its run directory."""

import json
from pathlib import Path

from onerec.data import Dataset, Split
from onerec.evaluation import EvalResult
from onerec.quickstart import run


def test_quickstart_end_to_end(tmp_path: Path) -> None:
    summary = run(tmp_path / "run", seed=1)
    out = tmp_path / "run"
    for name in ("config.json", "metrics.json", "report.md", "per_user_popularity.parquet",
                 "semantic_ids/semantic_ids.parquet", "semantic_ids/report.json"):
        assert (out / name).exists(), name
    assert Dataset.load(out / "dataset").num_users == 2000
    split = Split.load(out / "split")
    assert split.reports[0].name == "session quality" and split.reports[0].sessions_removed > 0
    pop = EvalResult.load(out / "per_user_popularity.parquet")
    assert len(pop.users) == len(split.test)
    # popularity is a real signal on this log; a random ranking is not
    assert summary["metrics"]["popularity"]["recall@10"] > 3 * summary["metrics"]["random"]["recall@10"]
    assert summary["paired_test"]["p_value"] < 1e-3
    assert json.loads((out / "config.json").read_text())["synthetic"]["seed"] == 1
    tokens = json.loads((out / "semantic_ids" / "report.json").read_text())
    assert tokens["collision_rate_after"] == 0.0
    assert all(level["largest"] - level["smallest"] <= 1 for level in tokens["levels"])
