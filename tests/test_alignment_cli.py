"""`onerec reward train` and `onerec align` on a tiny simulated log, end to end."""

from __future__ import annotations

import json

import numpy as np

from onerec.cli import main
from onerec.simulator import CatalogConfig, Simulator, SimulatorConfig, UserConfig
from onerec.tokenizer.pipeline import TokenizeConfig, save_tokenization, tokenize


def test_reward_train_and_align_commands(tmp_path, capsys) -> None:
    sim = Simulator(SimulatorConfig(catalog=CatalogConfig(num_items=200),
                                    users=UserConfig(num_users=60, mean_sessions=3), seed=1))  # fmt: skip
    ds = sim.generate_log(quality_report=False)
    ds.save(tmp_path / "dataset")
    content = np.array(ds.item_table.embedding("content"), dtype=np.float32)
    tokens = tokenize(content, TokenizeConfig(method="balanced", levels=2, seed=0))
    save_tokenization(tmp_path / "ids", tokens, ds.log.items, {"source": "content"})
    data = str(tmp_path / "dataset")
    assert main(["train", data, "--tokens", str(tmp_path / "ids"), "--out", str(tmp_path / "ntp"),
                 "--preset", "tiny", "--epochs", "1", "--session-items", "5",
                 "--eval-users", "20", "--device", "cpu"]) == 0  # fmt: skip
    assert main(["reward", "train", data, "--out", str(tmp_path / "rm"), "--epochs", "1",
                 "--item-embedding", "content", "--weights", "1,1,0,2", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "vtr_auc" in out and "vs" in out
    config = json.loads((tmp_path / "rm" / "reward_config.json").read_text())
    assert config["weights"] == [1.0, 1.0, 0.0, 2.0] and not config["item_ids"]
    assert config["targets"] == "item"  # the CLI's default: per-exposure towers
    assert config["item_features"] == 64 + 9  # the content embedding and the rate features
    assert main(["align", str(tmp_path / "ntp"), data, "--reward", str(tmp_path / "rm"),
                 "--out", str(tmp_path / "ipa"), "--r-dpo", "0.2", "--n-sessions", "4",
                 "--quiet"]) == 0  # fmt: skip
    assert "iteration 1:" in capsys.readouterr().out
    state = json.loads((tmp_path / "ipa" / "state.json").read_text())
    assert state["iterations"][0]["pairs"] > 0
    assert (tmp_path / "ipa" / "model.safetensors").exists()
    # the run's training settings were inherited (session targets of 5 items)
    train = json.loads((tmp_path / "ipa" / "iteration_1" / "train" / "train_config.json").read_text())
    assert train["session_items"] == 5
    # bad input: r_DPO outside (0, 1] is a named error, exit code 2
    assert main(["align", str(tmp_path / "ntp"), data, "--reward", str(tmp_path / "rm"),
                 "--out", str(tmp_path / "bad"), "--r-dpo", "0"]) == 2  # fmt: skip
    assert "r_dpo" in capsys.readouterr().err
