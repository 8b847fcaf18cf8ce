"""The reward model: logged sessions, a planted signal, exact resume, scores and named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onerec.alignment import (
    RewardModel,
    RewardModelConfig,
    RewardTrainConfig,
    logged_sessions,
    train_reward_model,
)
from onerec.alignment.reward_training import (
    holdout_rows,
    item_rates,
    rate_features,
    weighted_auc,
    with_weights,
)
from onerec.data.schema import build_log
from onerec.model.tokens import pad_history
from onerec.exceptions import AlignmentConfigError, CatalogMismatchError, MissingSignalError

N_ITEMS = 40
GOOD = np.arange(10)  # the planted signal: these items are liked, followed and watched long


def planted_log(n_sessions: int = 1500, seed: int = 0):
    """Sessions of 5 random items per user; an item of GOOD gets like = follow = view-through =
    1 and 60 s of watch time, any other item 0 and 5 s (plus noise on watch time)."""
    rng = np.random.default_rng(seed)
    m = 5
    users = np.repeat(rng.integers(0, 50, n_sessions), m)
    items = np.concatenate([rng.choice(N_ITEMS, m, replace=False) for _ in range(n_sessions)])
    good = np.isin(items, GOOD)
    sessions = np.repeat(np.arange(n_sessions), m)
    timestamps = sessions * 100 + np.tile(np.arange(m), n_sessions)
    signals = {
        "watch_time": np.where(good, 60.0, 5.0) + rng.random(len(items)),
        "view_through": good.astype(np.int8),
        "follow": (good & (rng.random(len(items)) < 0.5)).astype(np.int8),
        "like": good.astype(np.int8),
        "skip": np.zeros(len(items), np.int8),
    }
    # raw item ids 0..39 in order, so item index == raw id
    return build_log(users, items, timestamps, signals=signals, sessions=sessions)


def test_logged_sessions_keep_history_order_and_targets() -> None:
    log = planted_log(20)
    s = logged_sessions(log, session_items=3, history_length=4)
    assert s.items.shape == (20, 3) and (s.items >= 0).all()
    # a user's first session has no history; later ones see the previous sessions' items
    first = np.unique(s.user, return_index=True)[1]
    assert (s.history.lengths[first] == 0).all()
    assert s.history.lengths.max() <= 4
    t = s.targets()
    np.testing.assert_allclose(t[:, 0], s.signals[:, :, 0].sum(1))
    np.testing.assert_allclose(t[:, 3], s.signals[:, :, 3].mean(1))


def test_reward_model_learns_a_planted_signal(tmp_path) -> None:
    torch.manual_seed(0)
    sessions = logged_sessions(planted_log())
    run = train_reward_model(sessions, tmp_path, RewardTrainConfig(epochs=5, batch_size=32),
                             num_items=N_ITEMS, model={"dropout": 0.0}, progress=False)  # fmt: skip
    ours = run.evaluation["reward_model"]
    # the items of a session share its score, so the AUC's ceiling is the per-item-average
    # baseline's (which knows each item's rate): 0.765 here; a model that learned nothing: 0.5
    ceiling = run.evaluation["item_average"]["ltr_auc"]
    assert ours["ltr_auc"] > ceiling - 0.02 and ours["vtr_auc"] > ceiling - 0.02
    assert ours["swt_r2"] > 0.95
    # a session of good items beats one of bad items on every signal and the combined score
    rm = run.model
    score = rm.score(np.full((2, 1), -1), np.array([[0, 1, 2, 3, 4], [20, 21, 22, 23, 24]]))
    for name in ("swt", "vtr", "wtr", "ltr", "reward"):
        assert score[name][0] > score[name][1], name
    assert 5 * 40 < score["swt"][0] < 5 * 80  # about five 60-second watches, in seconds
    for name in ("reward_model.safetensors", "last.safetensors", "training.png",
                 "metrics.jsonl", "evaluation.json", "reward_config.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name


def test_resume_reproduces_the_uninterrupted_run(tmp_path) -> None:
    sessions = logged_sessions(planted_log(300))
    straight = train_reward_model(sessions, tmp_path / "a", RewardTrainConfig(epochs=3),
                                  num_items=N_ITEMS, progress=False)  # fmt: skip
    # "killed" after its first epoch: a run of one epoch, then the same folder asked for three
    train_reward_model(sessions, tmp_path / "b", RewardTrainConfig(epochs=1), num_items=N_ITEMS,
                       progress=False)  # fmt: skip
    with (tmp_path / "b" / "metrics.jsonl").open("a") as f:  # what a killed epoch 1 had logged
        f.write(json.dumps({"epoch": 1, "step": 999, "loss": 0.0}) + "\n")
    resumed = train_reward_model(sessions, tmp_path / "b", RewardTrainConfig(epochs=3),
                                 num_items=N_ITEMS, progress=False)  # fmt: skip
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert straight.evaluation == resumed.evaluation
    steps = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("step") != 999 for r in steps)


def test_item_rate_features_come_from_the_training_sessions_only(tmp_path) -> None:
    sessions = logged_sessions(planted_log(300))
    config = RewardTrainConfig(epochs=1, holdout=0.2)
    train_rows, held_rows = holdout_rows(len(sessions), config)

    def features(data, name: str) -> torch.Tensor:
        run = train_reward_model(data, tmp_path / name, config, num_items=N_ITEMS,
                                 model={"item_ids": False}, progress=False)  # fmt: skip
        return run.model.features[:N_ITEMS].clone()

    def relabelled(rows: np.ndarray):
        """The same sessions with every item of ``rows`` liked, followed and watched for 999 s."""
        signals = sessions.signals.copy()
        signals[rows] = np.where(sessions.items[rows, :, None] >= 0, [999.0, 1, 1, 1], 0.0)
        return type(sessions)(sessions.user, sessions.history, sessions.items, signals)

    base = features(sessions, "base")
    # held-out sessions can say anything: the features (fitted before any training) stay put
    assert torch.equal(features(relabelled(held_rows), "held"), base)
    # the same change on training sessions moves them: the check above could fail
    assert not torch.allclose(features(relabelled(train_rows[:30]), "train"), base)
    # the smoothed rate by hand for one item: (sum + prior * global mean) / (count + prior)
    train = sessions.take(train_rows)
    rates, count = item_rates(train, N_ITEMS, prior=5.0)
    on = train.items == 0
    likes = train.signals[..., 3]
    mean = likes[train.items >= 0].mean()
    assert count[0] == on.sum()
    assert rates[0, 3] == pytest.approx((likes[on].sum() + 5 * mean) / (on.sum() + 5))
    assert rate_features(train, N_ITEMS).shape == (N_ITEMS, 9)


def test_reward_model_without_item_ids_needs_side_features() -> None:
    with pytest.raises(AlignmentConfigError, match="side features"):
        RewardModelConfig(num_items=3, item_ids=False)
    rm = RewardModel(RewardModelConfig(num_items=3, item_ids=False, item_features=2))
    assert rm.item_emb is None
    assert rm(torch.full((1, 2), -1), torch.tensor([[0, 1, -1]])).shape == (1, 4)


def test_combined_score_is_the_weighted_mean_lift() -> None:
    rm = RewardModel(RewardModelConfig(num_items=5, references=(10.0, 0.5, 0.01, 0.1),
                                       weights=(1.0, 0.0, 2.0, 1.0)))  # fmt: skip
    values = torch.tensor([[100.0, 0.5, 0.02, 0.05]])  # 5 items: 20 s per item
    expected = (1 * 20 / 10 + 0 + 2 * 0.02 / 0.01 + 1 * 0.05 / 0.1) / 4
    assert float(rm.combined(values, torch.tensor([5]))) == pytest.approx(expected)
    other = with_weights(rm, (0.0, 0.0, 0.0, 1.0))
    assert float(other.combined(values, torch.tensor([5]))) == pytest.approx(0.5)


def test_weighted_auc_by_hand() -> None:
    # scores 0.1 (1 positive, 1 negative), 0.5 (0 positives, 2 negatives), 0.9 (2 positives)
    auc = weighted_auc(np.array([0.1, 0.5, 0.9]), np.array([1.0, 0, 2]), np.array([1.0, 2, 0]))
    # pairs: pos@0.1 vs neg@0.1 tie 0.5, vs neg@0.5 x2 lose; pos@0.9 x2 beat all 3 negatives
    assert auc == pytest.approx((0.5 + 2 * 3) / (3 * 3))


def test_named_errors() -> None:
    log = planted_log(10)
    without_like = build_log(log.user, log.item, log.timestamp, sessions=log.session,
                             signals={k: v for k, v in log.signals.items() if k != "like"})  # fmt: skip
    with pytest.raises(MissingSignalError, match="like"):
        logged_sessions(without_like)
    no_sessions = build_log(log.user, log.item, log.timestamp, signals=log.signals)
    with pytest.raises(MissingSignalError, match="session"):
        logged_sessions(no_sessions)
    rm = RewardModel(RewardModelConfig(num_items=N_ITEMS, catalog="abc"))
    with pytest.raises(CatalogMismatchError, match="40 items"):
        rm.check_catalog(41)
    with pytest.raises(CatalogMismatchError):
        rm.check_catalog(N_ITEMS, "def")
    with pytest.raises(AlignmentConfigError, match="rate_prior"):
        RewardTrainConfig(rate_prior=0.0)
    with pytest.raises(AlignmentConfigError, match="weights"):
        RewardModelConfig(num_items=3, weights=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(AlignmentConfigError, match="at most 5"):
        rm(torch.full((1, 2), -1), torch.zeros(1, 6, dtype=torch.long))


def test_item_targets_learn_each_exposure_and_add_up_to_the_session(tmp_path) -> None:
    torch.manual_seed(0)
    sessions = logged_sessions(planted_log())
    run = train_reward_model(sessions, tmp_path, RewardTrainConfig(epochs=5, batch_size=32),
                             num_items=N_ITEMS, model={"dropout": 0.0, "targets": "item"},
                             progress=False)  # fmt: skip
    rm = run.model
    assert 55 < rm.config.swt_scale < 70  # one exposure's 99th percentile, not a session's
    assert run.evaluation["reward_model"]["swt_r2"] > 0.95
    # two good items among four (one slot padded), and five bad ones
    history, s = np.full((2, 1), -1), np.array([[0, 1, 20, 21, -1], [20, 21, 22, 23, 24]])
    score = rm.score(history, s)
    assert 0.35 < score["ltr"][0] < 0.65 and score["ltr"][1] < 0.15
    assert 2 * 40 < score["swt"][0] < 2 * 80 + 2 * 15
    # the session's values are its real items' predictions, summed (swt) or averaged (rates)
    with torch.no_grad():
        p = torch.sigmoid(rm(pad_history(history, rm.config.history_length), torch.from_numpy(s)))
    assert p.shape == (2, 5, 4)
    assert score["swt"][0] == pytest.approx(float(p[0, :4, 0].sum()) * rm.config.swt_scale, rel=1e-5)
    assert score["ltr"][0] == pytest.approx(float(p[0, :4, 3].mean()), rel=1e-5)
    assert score["vtr"][1] == pytest.approx(float(p[1, :, 1].mean()), rel=1e-5)


def test_reward_model_targets_are_named() -> None:
    with pytest.raises(AlignmentConfigError, match="targets must be 'session'"):
        RewardModelConfig(num_items=3, targets="exposure")
