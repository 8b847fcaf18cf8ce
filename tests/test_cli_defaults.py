"""What a user gets from the command line without asking: `onerec train` with no model or
training flags trains the model the quality benchmark selected; a run trained with side features
is served with their values; a quiet tokenizer prints nothing."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from onerec.cli import main
from onerec.model import OneRecConfig
from onerec.data.synthetic import SyntheticConfig, generate
from onerec.tokenizer.pipeline import TokenizeConfig, tokenize
from onerec.tokenizer.rqvae import RQVAEConfig, RQVAEQuantizer
from onerec.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
# the record behind the README's OneRec numbers on Beauty: the selected command's settings
RECORD = (ROOT / "benchmarks/results"
          / "onerec_quality_beauty_itemhead_hash_hdrop0.5_resq_histdrop0.5_iw2_union20.json")
SELECTED = json.loads(RECORD.read_text())["config"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small saved dataset and its semantic IDs (``tok``) under one folder."""
    root = tmp_path_factory.mktemp("cli")
    ds = generate(SyntheticConfig(num_users=80, num_items=40, mean_interactions=10, seed=1))
    ds.save(root / "ds")
    assert main(["tokenize", str(root / "ds"), "--embeddings", "collaborative", "--levels", "2",
                 "--codebook-size", "8", "--iters", "5", "--out", str(root / "tok")]) == 0
    return root


def test_train_without_flags_is_the_selected_configuration(data: Path) -> None:
    run = data / "run"
    # --epochs only keeps the test short; every other setting is the command line's default
    assert main(["train", str(data / "ds"), "--tokens", str(data / "tok"), "--epochs", "1",
                 "--out", str(run)]) == 0  # fmt: skip
    train = json.loads((run / "train_config.json").read_text())
    model = json.loads((run / "model_config.json").read_text())
    # a field added after the record was written has its default
    added = {f.name: f.default for f in fields(TrainConfig) if f.name not in SELECTED["train"]}
    assert {**train, "epochs": SELECTED["train"]["epochs"]} == {**added, **SELECTED["train"]}
    # level_sizes come from the tokenizer (another catalog here); every other field is selected
    added = {f.name: f.default for f in fields(OneRecConfig) if f.name not in SELECTED["model"]}
    expected = {**added, **SELECTED["model"]}
    assert {**model, "level_sizes": SELECTED["model"]["level_sizes"]} == expected
    assert (train["patience"], train["ema_decay"]) == (5, 0.999)
    assert (model["n_experts"], model["dropout"], model["n_user_buckets"]) == (16, 0.1, 0)
    assert (model["item_loss_weight"], model["rerank_weight"]) == (2.0, 1.0)
    assert (model["item_hash_buckets"], model["item_hash_dropout"]) == (8192, 0.5)
    assert (model["item_query_residual"], model["head_candidates"]) == (True, 20)


def test_train_help_states_the_library_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = TrainConfig()
    for option, value in (("patience", defaults.patience), ("ema_decay", defaults.ema_decay),
                          ("eval_users", defaults.eval_users), ("epochs", defaults.epochs),
                          ("history_length", defaults.history_length)):  # fmt: skip
        assert f"(default {value})" in text, option


def test_recommend_takes_the_values_of_a_runs_side_features(
    data: Path, capsys: pytest.CaptureFixture
) -> None:
    from onerec.generation import Recommender

    run = data / "featured"
    assert main(["train", str(data / "ds"), "--tokens", str(data / "tok"), "--preset", "tiny",
                 "--history-length", "8", "--epochs", "1", "--eval-beam", "10",
                 "--features", "time_gap,watch_time", "--out", str(run)]) == 0  # fmt: skip
    recommender = Recommender.from_run(run)
    history = recommender.items.raw[:3].tolist()
    expected = recommender.recommend(
        history, n_items=2, beam_size=4,
        features=recommender.request_features(3, [0, 60, 900], {"watch_time": [12, 3, 40]}),
    )  # fmt: skip
    command = ["recommend", str(run), "--history", ",".join(map(str, history)), "--items", "2",
               "--beam", "4", "--timestamps", "0,60,900"]  # fmt: skip
    capsys.readouterr()
    # --features is the spelling `onerec train` uses; --signal the same option
    for option in ("--features", "--signal"):
        assert main([*command, option, "watch_time=12,3,40", "--json"]) == 0
        served = json.loads(capsys.readouterr().out)["items"]
        assert [str(i) for i in served] == [str(i) for i in expected.items]
    assert main([*command, "--features", "watch_time=12,3,40"]) == 0
    assert "side features time_gap, watch_time" in capsys.readouterr().out
    assert main(command) == 2  # watch_time missing: a message that names the option
    assert "--signal watch_time=" in capsys.readouterr().err


def test_rqvae_is_quiet_unless_asked(capsys: pytest.CaptureFixture) -> None:
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    config = RQVAEConfig(levels=2, codebook_size=4, epochs=2)
    RQVAEQuantizer(config).fit(x)  # the library default: no bar
    tokenize(x, TokenizeConfig(method="rqvae", levels=2, codebook_size=4, rqvae_epochs=2),
             progress=False)  # fmt: skip
    assert "RQ-VAE" not in capsys.readouterr().err
    RQVAEQuantizer(config).fit(x, progress=True)
    assert "training RQ-VAE" in capsys.readouterr().err


def test_tokenize_quiet_prints_no_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ds = generate(SyntheticConfig(num_users=40, num_items=30, mean_interactions=8, seed=3))
    ds.save(tmp_path / "ds")
    args = ["tokenize", str(tmp_path / "ds"), "--embeddings", "collaborative", "--method", "rqvae",
            "--levels", "2", "--codebook-size", "4", "--rqvae-epochs", "2"]  # fmt: skip
    assert main([*args, "--quiet", "--out", str(tmp_path / "quiet")]) == 0
    assert "RQ-VAE" not in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "loud")]) == 0
    assert "training RQ-VAE" in capsys.readouterr().err
