"""Per-item side features: computed from the log, carried through splits, examples, training
windows, the trainer, ranking, ``onerec train --features`` and serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec.data import Examples, Ragged, SyntheticConfig, generate, leave_one_out, temporal_split
from onerec.data.features import history_features, interaction_features
from onerec.data.schema import InteractionLog, build_log
from onerec.data.splits import Split
from onerec.embeddings import cooccurrence_embeddings
from onerec.exceptions import (
    ConfigError,
    DataError,
    ModelError,
    RecommendationError,
    UnknownFeatureError,
)
from onerec.generation import Recommender, rank_examples
from onerec.model import OneRec, OneRecConfig
from onerec.simulator import CatalogConfig, Simulator, SimulatorConfig, UserConfig
from onerec.tokenizer.pipeline import TokenizeConfig, tokenize
from onerec.training import TrainConfig, Trainer, training_windows

FEATURES = ("time_gap", "watch_time")


@pytest.fixture
def hand_log() -> InteractionLog:
    # user 1: items 10..14 at times 1, 2, 3, 5, 9 (rows shuffled); user 2: 20 21 22 at 1, 4, 4
    rows = [(1, 12, 3), (2, 20, 1), (1, 10, 1), (1, 14, 9), (1, 11, 2), (2, 22, 4), (1, 13, 5),
            (2, 21, 4)]  # fmt: skip
    user, item, ts = (np.array(c) for c in zip(*rows))
    watch = np.array([0.5, 3.0, 20.0, 7.0, 1.0, 0.0, 2.0, 9.0])  # a duration
    like = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=np.int8)  # a flag
    signed = np.array([-2.0, 3.0, 0.0, 1.0, 0.0, 0.0, 5.0, 0.0])  # signed values
    return build_log(user, item, ts, signals={"watch_time": watch, "like": like, "signed": signed})


def rows_of(log: InteractionLog, raw_user: int) -> np.ndarray:
    """Row indices of one user in ``log``, in row order."""
    return np.flatnonzero(log.user == log.users.index(np.array([raw_user]))[0])


# --- interaction_features ------------------------------------------------------------------------
def test_feature_values_by_hand(hand_log: InteractionLog) -> None:
    log = hand_log.sorted()
    x = interaction_features(log, ["time_gap", "watch_time", "like", "signed"])
    assert x.shape == (8, 4) and x.dtype == np.float32
    u1, u2 = rows_of(log, 1), rows_of(log, 2)
    np.testing.assert_allclose(x[u1, 0], np.log1p([0, 1, 1, 2, 4]), rtol=1e-6)
    np.testing.assert_allclose(x[u2, 0], np.log1p([0, 3, 0]), rtol=1e-6)  # a tie: gap 0
    # rows in time order: user 1 at 1, 2, 3, 5, 9 -> watch 20, 1, 0.5, 2, 7
    np.testing.assert_allclose(x[u1, 1], np.log1p([20.0, 1.0, 0.5, 2.0, 7.0]), rtol=1e-6)
    np.testing.assert_allclose(x[u1, 2], np.log1p([0, 0, 1, 0, 1]), rtol=1e-6)
    np.testing.assert_allclose(x[u1, 3], [0, 0, -np.log1p(2), np.log1p(5), np.log1p(1)],
                               rtol=1e-6)  # fmt: skip
    # the scale of a value never depends on the other rows: any subset gives the same numbers
    part = hand_log.take(np.array([0, 4])).sorted()
    np.testing.assert_allclose(interaction_features(part, ["watch_time"])[:, 0],
                               np.log1p(part.signals["watch_time"]), rtol=1e-6)  # fmt: skip
    # rows stay aligned with the log as given, sorted or not
    np.testing.assert_array_equal(interaction_features(hand_log, ["time_gap", "watch_time"]),
                                  x[np.argsort(hand_log.time_order())][:, :2])  # fmt: skip


def test_request_features_equal_the_log_features(hand_log: InteractionLog) -> None:
    """A served request's raw values give the rows training computed from the log."""
    log = hand_log.sorted()
    x = interaction_features(log, ["time_gap", "watch_time", "signed"])[rows_of(log, 1)]
    got = history_features(["time_gap", "watch_time", "signed"], 5, timestamps=[1, 2, 3, 5, 9],
                           signals={"watch_time": [20.0, 1.0, 0.5, 2.0, 7.0],
                                    "signed": [0.0, 0.0, -2.0, 5.0, 1.0]})  # fmt: skip
    np.testing.assert_allclose(got, x, rtol=1e-6)
    with pytest.raises(DataError, match="no timestamps"):
        history_features(["time_gap"], 2, signals={})
    with pytest.raises(DataError, match="3 entries for 2 history items"):
        history_features(["watch_time"], 2, signals={"watch_time": [1, 2, 3]})
    with pytest.raises(UnknownFeatureError, match="'like'"):
        history_features(["time_gap"], 2, timestamps=[1, 2], signals={"like": [0, 1]})


def test_unknown_feature_names_the_available_ones(hand_log: InteractionLog) -> None:
    with pytest.raises(UnknownFeatureError, match="offers") as err:
        interaction_features(hand_log, ["time_gap", "watchtime"])
    assert isinstance(err.value, ConfigError)
    for name in ("'watchtime'", "time_gap", "watch_time", "like", "Fix"):
        assert name in str(err.value)
    with pytest.raises(UnknownFeatureError):
        leave_one_out(hand_log, features=["clicks"])


# --- Examples ------------------------------------------------------------------------------------
def test_examples_keep_features_through_take_arrow_and_parquet(tmp_path: Path) -> None:
    history = Ragged.from_lists([[1, 2], [3], [4, 5, 6]])
    feats = Ragged(np.arange(12, dtype=np.float32).reshape(6, 2), history.offsets)
    target = Ragged.from_lists([[7], [8], [9]])
    ex = Examples(np.array([0, 1, 2]), history, target, history, feats)
    assert ex.n_features == 2
    part = ex.take(np.array([2, 0]))
    assert part.history.tolist() == [[4, 5, 6], [1, 2]]
    assert part.history_features.values.tolist() == [[6, 7], [8, 9], [10, 11], [0, 1], [2, 3]]
    back = Examples.from_arrow(ex.to_arrow())
    assert back.history_features == feats and back.history_features.values.dtype == np.float32
    sliced = Examples.from_arrow(ex.to_arrow().slice(1, 2))  # list offsets that start past 0
    assert sliced.history_features.values.tolist() == [[4, 5], [6, 7], [8, 9], [10, 11]]
    ex.save(tmp_path / "ex.parquet")
    loaded = Examples.load(tmp_path / "ex.parquet")
    assert loaded.history_features == feats and loaded.history == history
    plain = Examples(ex.user, history, target, history)
    assert Examples.from_arrow(plain.to_arrow()).history_features is None
    assert plain.n_features == 0
    other_offsets = Ragged(feats.values[:5], np.array([0, 2, 3, 5]))
    flat = Ragged(np.zeros(6, np.float32), history.offsets)  # not one (F,) row per item
    for bad in (other_offsets, flat):
        with pytest.raises(ValueError, match="history_features"):
            Examples(ex.user, history, target, history, bad)


# --- splits --------------------------------------------------------------------------------------
def test_leave_one_out_features_follow_the_history(
    hand_log: InteractionLog, tmp_path: Path
) -> None:
    split = leave_one_out(hand_log, history_length=2, features=["time_gap", "like"])
    assert split.params["features"] == ["time_gap", "like"]
    assert split.features == ("time_gap", "like")
    row = int(np.flatnonzero(split.test.user == hand_log.users.index(np.array([1]))[0])[0])
    assert hand_log.items.to_raw(split.test.history[row]).tolist() == [12, 13]
    gap1, gap2, liked = np.log1p(1), np.log1p(2), np.log1p(1)
    # 12 came 1 after 11 and was liked; 13 came 2 after 12 and was not
    np.testing.assert_allclose(split.test.history_features[row], [[gap1, liked], [gap2, 0]],
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(split.valid.history_features[row], [[gap1, 0], [gap1, liked]],
                               rtol=1e-6)  # fmt: skip
    train = split.train_features()
    assert np.array_equal(train.offsets, split.train_sequences().offsets)
    user = split.test.user[row]  # trains on 10, 11, 12
    np.testing.assert_allclose(train[user], [[0, 0], [gap1, 0], [gap1, liked]], rtol=1e-6)
    loaded = Split.load(split.save(tmp_path / "split"))
    assert loaded.features == split.features and loaded.train_features() == train
    assert loaded.test.history_features == split.test.history_features
    assert leave_one_out(hand_log).train_features() is None
    assert "features" not in leave_one_out(hand_log).params  # summaries of old splits unchanged


def simulated(num_users: int = 100, seed: int = 0) -> InteractionLog:
    config = SimulatorConfig(catalog=CatalogConfig(num_items=60),
                             users=UserConfig(num_users=num_users, mean_sessions=2.0), seed=seed)
    return Simulator(config).generate_log(quality_report=False).log


@pytest.mark.parametrize("protocol", ["leave_one_out", "temporal"])
def test_train_features_equal_the_examples_features(protocol: str) -> None:
    """Validation histories (long enough to hold everything) are the training sequences: the
    features computed on the training log alone must be the examples' ones, item for item."""
    log = simulated()
    if protocol == "leave_one_out":
        split = leave_one_out(log, history_length=1000, features=FEATURES + ("like",))
    else:
        split = temporal_split(log, history_length=1000, features=FEATURES + ("like",))
    seqs, train = split.train_sequences(), split.train_features()
    valid = split.valid
    assert len(valid) > 10 and valid.n_features == 3
    for r, u in enumerate(valid.user):
        assert np.array_equal(valid.history[r], seqs[u])
        np.testing.assert_array_equal(valid.history_features[r], train[u])
    assert (train.values[:, 0] > 0).any() and (train.values[:, 2] > 0).any()


# --- windows -------------------------------------------------------------------------------------
def test_windows_slice_features_in_lockstep() -> None:
    seqs = Ragged.from_lists([list(range(10)), [5, 6], [7], list(range(20, 27))])
    feats = Ragged(np.stack([seqs.values * 10.0, -seqs.values], axis=1).astype(np.float32),
                   seqs.offsets)  # fmt: skip
    w = training_windows(seqs, history_length=3, max_length=5, features=feats)
    plain = training_windows(seqs, history_length=3, max_length=5)
    assert w.items == plain.items and np.array_equal(w.features.offsets, w.items.offsets)
    np.testing.assert_array_equal(w.features.values[:, 0], w.items.values * 10.0)
    np.testing.assert_array_equal(w.features.values[:, 1], -w.items.values)
    assert plain.features is None
    with pytest.raises(ConfigError, match="one row per item"):
        training_windows(seqs, 3, 5, Ragged(feats.values, np.array([0, 9, 12, 13, 20])))


# --- training and ranking ------------------------------------------------------------------------
def setup(features: tuple[str, ...] = FEATURES, history_features: int = 2):
    split = leave_one_out(simulated(), history_length=8, features=features)
    x = cooccurrence_embeddings(split.train_sequences(), split.num_items, dim=8)
    ids = tokenize(x, TokenizeConfig(levels=2, codebook_size=8, iters=5)).semantic_ids
    torch.manual_seed(0)
    model = OneRec(OneRecConfig.preset("tiny", ids.level_sizes, max_history=8, n_user_buckets=128,
                                        history_features=history_features))  # fmt: skip
    return model, ids, split


def test_trainer_learns_with_features_and_ranks_with_them(tmp_path: Path) -> None:
    config = TrainConfig.from_dict({
        "history_length": 8, "batch_size": 64, "epochs": 2, "lr": 3e-3, "warmup_steps": 5,
        "patience": 5, "eval_beam": 10, "log_every": 2, "features": list(FEATURES),
    })  # fmt: skip
    assert config.features == FEATURES  # a JSON list becomes a tuple
    model, ids, split = setup()
    before = model.feature_proj.weight.detach().clone()
    trainer = Trainer(model, ids, split, config, tmp_path / "run")
    w = trainer.windows
    rows = np.arange(min(8, len(w)))
    _, mask, _, _, padded, _ = trainer._tensors(rows)  # right-aligned like the items, zeros on padding
    assert padded.shape == (*mask.shape, 2) and (padded[~mask] == 0).all()
    for r in rows:
        np.testing.assert_array_equal(padded[r][mask[r]].numpy(), w.features[r])
    state = trainer.fit(progress=False)
    losses = [r["ntp"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").open())
              if "ntp" in r]  # fmt: skip
    assert state["epochs"] == 2 and losses[-1] < losses[0]
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert TrainConfig.from_dict(saved) == config  # resumable: the list is read back as a tuple
    assert not torch.equal(model.feature_proj.weight.detach(), before)  # features got gradients

    test = split.test
    ranked = rank_examples(model, test, ids, beam_size=10, top_k_items=10, batch_size=32)
    assert ranked.shape == (len(test), 10)
    assert ((ranked >= 0) & (ranked < split.num_items)).all()
    # the features reach the ranking: other feature values, another ranking
    other = Ragged(test.history_features.values + 3.0, test.history.offsets)
    shifted = Examples(test.user, test.history, test.target, test.seen, other)
    assert not torch.equal(rank_examples(model, shifted, ids, 10, 10), ranked)
    with pytest.raises(ModelError, match="side features"):
        rank_examples(model, Examples(test.user, test.history, test.target, test.seen), ids, 10)


def test_features_model_and_split_must_agree(tmp_path: Path) -> None:
    config = TrainConfig(history_length=8, batch_size=64, epochs=1, eval_beam=10)
    model, ids, split = setup(features=())  # the model reads 2 features, the split has none
    with pytest.raises(ConfigError, match="history_features=0") as err:
        Trainer(model, ids, split, config, tmp_path / "a")
    assert "reads 2 side features" in str(err.value) and "features=" in str(err.value)
    model, ids, split = setup(features=("time_gap",))  # 1 feature for a model of 2
    with pytest.raises(ConfigError, match="has 1"):
        Trainer(model, ids, split, config, tmp_path / "b")
    featured = TrainConfig(history_length=8, batch_size=64, epochs=1, eval_beam=10,
                           features=("time_gap",))  # fmt: skip
    model, ids, split = setup(features=("time_gap",), history_features=0)
    with pytest.raises(ConfigError, match="history_features=1"):
        Trainer(model, ids, split, featured, tmp_path / "c")
    with pytest.raises(ConfigError, match="feature names"):
        TrainConfig(features="time_gap")  # type: ignore[arg-type]


# --- the command line and serving ----------------------------------------------------------------
def test_train_command_with_features_and_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from onerec.cli import main

    ds = generate(SyntheticConfig(num_users=80, num_items=40, mean_interactions=10, seed=1))
    ds.save(tmp_path / "ds")
    assert main(["tokenize", str(tmp_path / "ds"), "--embeddings", "collaborative",
                 "--levels", "2", "--codebook-size", "8", "--iters", "5",
                 "--out", str(tmp_path / "tok")]) == 0  # fmt: skip
    args = ["train", str(tmp_path / "ds"), "--tokens", str(tmp_path / "tok"), "--preset", "tiny",
            "--history-length", "8", "--batch-size", "64", "--epochs", "1", "--eval-beam", "10"]
    assert main([*args, "--features", "time_gap,watch_time", "--out", str(tmp_path / "run")]) == 0
    assert "best validation recall@10" in capsys.readouterr().out
    run = tmp_path / "run"
    assert json.loads((run / "model_config.json").read_text())["history_features"] == 2
    train_config = json.loads((run / "train_config.json").read_text())
    assert train_config["features"] == ["time_gap", "watch_time"]
    assert main([*args, "--features", "time_gap,clicks", "--out", str(tmp_path / "bad")]) == 2
    assert "clicks" in capsys.readouterr().err

    recommender = Recommender.from_run(run)
    history = ds.log.items.raw[:4].tolist()
    with pytest.raises(RecommendationError, match=r"\(history length, 2\)"):
        recommender.recommend(history, n_items=1, beam_size=4)
    with pytest.raises(RecommendationError, match=r"\(4, 2\) array"):
        recommender.recommend(history, n_items=1, beam_size=4, features=np.zeros((3, 2)))
    rec = recommender.recommend(history, n_items=1, beam_size=4, features=np.ones((4, 2)))
    assert len(rec.items) == 1 and rec.items[0] not in history

    # the command line takes raw timestamps and signal values and transforms them as training
    assert recommender.feature_names == ("time_gap", "watch_time")
    features = recommender.request_features(4, [10, 20, 20, 50], {"watch_time": [1, 0, 3, 2]})
    expected = recommender.recommend(history, n_items=2, beam_size=4, features=features)
    command = ["recommend", str(run), "--history", ",".join(map(str, history)), "--items", "2",
               "--beam", "4", "--json", "--timestamps", "10,20,20,50"]  # fmt: skip
    capsys.readouterr()
    assert main([*command, "--signal", "watch_time=1,0,3,2"]) == 0
    served = json.loads(capsys.readouterr().out)["items"]
    assert [str(i) for i in served] == [str(i) for i in expected.items]
    assert main(command) == 2  # watch_time missing
    assert "'watch_time' values" in capsys.readouterr().err
    assert main([*command, "--signal", "watch_time=1,0,x,2"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
