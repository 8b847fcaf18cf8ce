"""benchmarks/alignment.py end to end at tiny scale: it runs, records what it ran, summarizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("alignment_bench",
                                                  ROOT / "benchmarks" / "alignment.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_alignment_benchmark_runs_at_tiny_scale(tmp_path: Path, monkeypatch) -> None:
    script = _script()
    out = tmp_path / "out"
    common = ["alignment.py", "--scale", "tiny", "--eval-users", "12", "--sessions-per-user", "3",
              "--n-sessions", "6", "--r-dpo", "0.3", "--iterations", "1",
              "--run-dir", str(tmp_path / "runs"), "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", common + ["--control", "--best-of-n", "6", "--baselines"])
    script.main()
    result = json.loads((out / "alignment.json").read_text())
    recorded = {"commit", "machine", "config", "align_config", "reward_model", "table", "seconds",
                "simulator"}  # fmt: skip
    assert recorded <= set(result)
    references = {"popularity", "sasrec-ce", "true-top", "random"}
    assert set(result["table"]) == {"ntp", "ipa-1", "ntp-continued-1"} | references
    for name in references:  # graded by both, paired against the NTP model on the same users
        assert result["table"][name]["oracle_reward_mean_vs_ntp"]["se"] > 0
    assert result["table"]["sasrec-ce"]["recall"]["recall@10"] >= 0
    assert result["table"]["random"]["recall"] is None
    assert set(result["best_of_n"]) == {"top_beam", "rm_best_of_n", "oracle_best_of_n"}
    best = result["best_of_n"]
    assert best["oracle_best_of_n"]["reward"] >= max(best["top_beam"]["reward"],
                                                     best["rm_best_of_n"]["reward"])  # fmt: skip
    # a second run with another tag reuses the NTP model and the RM, and the summary lists both
    monkeypatch.setattr(sys, "argv", common + ["--best-of-n", "0", "--reward", "oracle",
                                               "--tag", "_oracle"])  # fmt: skip
    script.main()
    again = json.loads((out / "alignment_oracle.json").read_text())
    assert again["table"]["ntp"] == result["table"]["ntp"]
    # another reward-model variant is trained into its own folder, not reloaded from v3's
    monkeypatch.setattr(sys, "argv", common + ["--best-of-n", "0", "--rm", "v1", "--tag", "_v1"])
    script.main()
    v1 = json.loads((out / "alignment_v1.json").read_text())
    assert (tmp_path / "runs" / "reward_model").is_dir()
    assert (tmp_path / "runs" / "reward_model_v3").is_dir()
    assert v1["rm_variant"] == "v1" and v1["reward_model"] != result["reward_model"]
    monkeypatch.setattr(sys, "argv", ["alignment.py", "--summarize", "--out", str(out)])
    script.main()
    summary = (out / "alignment_summary.md").read_text()
    assert "| _oracle | ipa-1 | oracle |" in summary and "ntp-continued-1" in summary
    assert "| (first) | sasrec-ce |" in summary
    # the multi-objective table and plot: the runs of one RM at the objectives' setting, with
    # the NTP model and the reference rows as points (the oracle- and v1-paired runs left out)
    monkeypatch.setattr(script, "OBJECTIVE_SETTING", {"r_dpo": 0.3, "dpo_weight": 0.3})
    monkeypatch.setattr(script, "OBJECTIVE_RM", "v3")
    monkeypatch.setattr(sys, "argv", ["alignment.py", "--summarize-objectives", "--out", str(out)])
    script.main()
    points = json.loads((out / "alignment_objectives.json").read_text())["points"]
    assert set(points) == {"IPA, weights 1,1,1,1", "ntp"} | references
    assert points["ntp"]["oracle_swt_mean"] == result["table"]["ntp"]["oracle_swt_mean"]
    assert (out / "alignment_objectives.png").stat().st_size > 10_000


def test_alignment_benchmark_on_another_platform_and_its_table(tmp_path: Path, monkeypatch) -> None:
    """--simulator: the run simulates the given platform; --summarize-platforms tabulates it
    with the fields that differ from the default platform."""
    script = _script()
    config = tmp_path / "platform.json"
    config.write_text(json.dumps({"catalog": {"num_items": 250}, "users": {"num_users": 100,
                      "interests_per_user": 2}, "response": {"tag_fatigue": 0.6}, "seed": 3}))
    out = tmp_path / "platforms"
    monkeypatch.setattr(sys, "argv", [
        "alignment.py", "--scale", "tiny", "--simulator", str(config), "--eval-users", "10",
        "--sessions-per-user", "3", "--n-sessions", "6", "--r-dpo", "0.3", "--iterations", "1",
        "--best-of-n", "0", "--run-dir", str(tmp_path / "runs"), "--out", str(out),
        "--tag", "_fatigue"])  # fmt: skip
    script.main()
    result = json.loads((out / "alignment_fatigue.json").read_text())
    assert result["simulator"]["seed"] == 3 and result["config"]["num_items"] == 250
    monkeypatch.setattr(sys, "argv", ["alignment.py", "--summarize-platforms", str(out),
                                      "--out", str(tmp_path)])  # fmt: skip
    script.main()
    table = (tmp_path / "alignment_platforms.md").read_text()
    changed = "users.interests_per_user=2, response.tag_fatigue=0.6, seed=3"
    assert f"| fatigue | {changed} | 100 / 250 | v3, 0.3 |" in table
    rows = json.loads((tmp_path / "alignment_platforms.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["ntp", "ipa-1"]
