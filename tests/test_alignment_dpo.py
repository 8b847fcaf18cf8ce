"""DPO loss, preference pairs from the sample server, and the IPA loop at tiny size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from onerec.alignment import RewardModel, RewardModelConfig, RewardTrainConfig, logged_sessions
from onerec.alignment import ipa as ipa_module
from onerec.alignment import train_reward_model
from onerec.alignment.dpo import dpo_loss, session_log_probs
from onerec.alignment.evaluate import (METRICS, alignment_table, generate_and_grade,
                                       rank_correlation, within_user_correlation)  # fmt: skip
from onerec.alignment.ipa import AlignConfig, align
from onerec.alignment.pairs import OracleReward, beam_sessions, sample_pairs
from onerec.data.schema import Dataset
from onerec.exceptions import AlignmentConfigError, CatalogMismatchError
from onerec.simulator import CatalogConfig, Simulator, SimulatorConfig, UserConfig
from onerec.tokenizer.pipeline import TokenizeConfig, save_tokenization, tokenize
from onerec.training import TrainConfig
from onerec.training.pipeline import train_on_dataset

TRAIN = {"session_items": 5, "eval_users": 20, "batch_size": 128, "lr": 1e-4}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny simulated platform, its NTP OneRec (1 epoch) and a reward model (1 epoch)."""
    out = tmp_path_factory.mktemp("platform")
    sim = Simulator(SimulatorConfig(catalog=CatalogConfig(num_items=300),
                                    users=UserConfig(num_users=100, mean_sessions=4), seed=0))  # fmt: skip
    ds = sim.generate_log(quality_report=False)
    watched = ds.log.take(ds.log.signals["skip"] == 0)
    content = np.array(ds.item_table.embedding("content"), dtype=np.float32)
    tokens = tokenize(content, TokenizeConfig(method="balanced", levels=2, seed=0))
    save_tokenization(out / "ids", tokens, ds.log.items, {"source": "content"})
    torch.manual_seed(0)
    trained = train_on_dataset(
        Dataset("w", watched, ds.item_table, ds.user_table, ds.meta), out / "ids", out / "ntp",
        TrainConfig(session_items=5, epochs=1, batch_size=128, eval_users=20, device="cpu"),
        preset="tiny", progress=False,
    )  # fmt: skip
    rm = train_reward_model(logged_sessions(ds.log), out / "rm", RewardTrainConfig(epochs=1),
                            num_items=sim.num_items, progress=False).model  # fmt: skip
    return {"sim": sim, "model": trained.model.eval(), "ids": trained.semantic_ids,
            "split": trained.split, "rm": rm}  # fmt: skip


def test_dpo_loss_by_hand() -> None:
    # margin = 0.5 * ((-1 - -1.5) - (-2 - -1.5)) = 0.5
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                    torch.tensor([-1.5]), beta=0.5)  # fmt: skip
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)
    # two negatives (softmax-DPO): margins 0.5 and 1.0 -> -log sigmoid(-log(e^-0.5 + e^-1))
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([[-2.0, -3.0]]), torch.tensor([-1.5]),
                    torch.tensor([[-1.5, -1.5]]), beta=0.5)  # fmt: skip
    inner = math.log(math.exp(-0.5) + math.exp(-1.0))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(inner)), abs=1e-6)
    # the mean over pairs; one negative given as (P,) or (P, 1) is the same
    a = dpo_loss(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]), torch.zeros(2), torch.zeros(2), 1.0)
    b = dpo_loss(torch.tensor([0.0, 1.0]), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 1), 1.0)
    assert float(a) == pytest.approx(float(b))
    assert float(a) == pytest.approx((math.log(2) + math.log(1 + math.exp(-1))) / 2)


def test_zero_gradient_when_chosen_equals_rejected(platform: dict) -> None:
    model, ids = platform["model"], platform["ids"]
    model.train()
    users = np.array([0, 1])
    history = platform["split"].train_sequences().take(users)
    items, codes = beam_sessions(model, ids, history, users, 2, 5)
    same = torch.from_numpy(codes[:, :1]).expand(-1, 2, -1, -1)  # (B, 2, m, L'): c and c
    model.zero_grad()
    logp = session_log_probs(model, ids, history, users, same)
    with torch.no_grad():
        ref = logp.detach() - 0.3  # any reference, the same for both
    dpo_loss(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1], beta=0.5).backward()
    # the two rows' contributions cancel: zero up to float summation order
    same_grad = max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
    # a different rejected session does move the model
    model.zero_grad()
    logp = session_log_probs(model, ids, history, users, torch.from_numpy(codes))
    dpo_loss(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1], beta=0.5).backward()
    other_grad = max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
    assert same_grad < 1e-7 and other_grad > 1e-3, (same_grad, other_grad)
    model.zero_grad()
    model.eval()


@pytest.mark.parametrize("strategy,negatives", [("best_worst", 1), ("softmax", 3),
                                                 ("bottom_random", 1)])  # fmt: skip
def test_pairs_come_from_valid_items_only(platform: dict, strategy: str, negatives: int) -> None:
    model, ids, rm = platform["model"], platform["ids"], platform["rm"]
    users = np.arange(12)
    history = platform["split"].train_sequences().take(users)
    pairs = sample_pairs(model, ids, rm, history, users, n_sessions=8, strategy=strategy,
                         negatives=negatives, batch_size=5)  # fmt: skip
    assert len(pairs) == 12 and pairs.rejected.shape == (12, negatives, 5)
    n = ids.n_items
    for row, user in enumerate(pairs.user):
        seen = set(history[int(np.flatnonzero(users == user)[0])].tolist())
        for session in (pairs.chosen[row], *pairs.rejected[row]):
            assert ((session >= 0) & (session < n)).all()
            assert len(set(session.tolist())) == 5  # no repeats
            assert not seen & set(session.tolist())  # history excluded
        for session in pairs.rejected[row]:
            assert not np.array_equal(session, pairs.chosen[row])  # distinct beams
    assert (pairs.reward_chosen[:, None] >= pairs.reward_rejected).all()
    # the codes are the items' semantic IDs
    assert np.array_equal(ids.codes.numpy()[pairs.chosen], pairs.chosen_codes)
    # the reference log-probabilities are the snapshot's beam-search scores
    beams = beam_sessions(model, ids, history, users, 8, 5)[0]
    from onerec.generation import beam_search_sessions

    scores = beam_search_sessions(model, history, torch.from_numpy(users), ids, 8, 5,
                                  exclude_items=history)  # fmt: skip
    for row in range(12):
        k = next(j for j in range(8) if np.array_equal(beams[row, j], pairs.chosen[row]))
        assert pairs.reference_chosen[row] == pytest.approx(float(scores.log_probs[row, k]), abs=1e-3)


def test_oracle_as_the_reward(platform: dict) -> None:
    users = np.arange(5)
    history = platform["split"].train_sequences().take(users)
    oracle = OracleReward(platform["sim"])
    pairs = sample_pairs(platform["model"], platform["ids"], oracle, history, users, n_sessions=6)
    truth = platform["sim"].oracle(pairs.user, pairs.chosen)["reward"]
    np.testing.assert_allclose(pairs.reward_chosen, truth)
    beams = beam_sessions(platform["model"], platform["ids"], history, users, 6, 5)[0]
    every = platform["sim"].oracle(np.repeat(users, 6), beams.reshape(30, 5))["reward"]
    np.testing.assert_allclose(pairs.reward_chosen, every.reshape(5, 6).max(1))
    with pytest.raises(CatalogMismatchError):
        oracle.check_catalog(platform["ids"].n_items + 1)


def test_named_errors(platform: dict, tmp_path: Path) -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(AlignmentConfigError, match="r_dpo"):
            AlignConfig(r_dpo=bad)
    AlignConfig(r_dpo=1.0)  # the whole pool is allowed
    with pytest.raises(AlignmentConfigError, match="n_sessions"):
        AlignConfig(n_sessions=1)
    with pytest.raises(AlignmentConfigError, match="negatives"):
        AlignConfig(n_sessions=4, strategy="softmax", negatives=4)
    with pytest.raises(AlignmentConfigError, match="strategy"):
        AlignConfig(strategy="top")
    other = RewardModel(RewardModelConfig(num_items=platform["ids"].n_items + 1))
    with pytest.raises(CatalogMismatchError):
        align(platform["model"], platform["ids"], platform["split"], other, tmp_path,
              AlignConfig(), progress=False)  # fmt: skip
    same_size = RewardModel(RewardModelConfig(num_items=platform["ids"].n_items, catalog="abc"))
    with pytest.raises(CatalogMismatchError, match="fingerprint"):
        align(platform["model"], platform["ids"], platform["split"], same_size, tmp_path,
              AlignConfig(), catalog="another-catalog", progress=False)  # fmt: skip


def _config(**overrides) -> AlignConfig:
    base = dict(iterations=2, r_dpo=0.2, n_sessions=6, pairs_per_step=4, beta=0.5,
                train={**TRAIN, "epochs": 2})  # fmt: skip
    return AlignConfig(**{**base, **overrides})


def test_ipa_keeps_the_reference_frozen_and_moves_the_policy(platform: dict, tmp_path: Path) -> None:
    model = platform["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = align(model, platform["ids"], platform["split"], platform["rm"], tmp_path,
                _config(iterations=1), exclude_users=np.arange(10), progress=False)  # fmt: skip
    # M_1, the reference of iteration 1, is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    pairs = run.pairs[0]
    assert not np.isin(pairs.user, np.arange(10)).any()  # held-out users are never drawn
    users, codes = pairs.user, pairs.codes()
    model.eval()
    with torch.no_grad():
        again = session_log_probs(model, platform["ids"], pairs.history, users, codes)
    np.testing.assert_allclose(again[:, 0].numpy(), pairs.reference_chosen, atol=1e-4)
    # the trained policy differs from the reference, and DPO raised the chosen-vs-rejected margin
    aligned = run.models[1]
    assert any(not torch.equal(a, b) for a, b in zip(aligned.state_dict().values(), before.values()))
    with torch.no_grad():
        new = session_log_probs(aligned, platform["ids"], pairs.history, users, codes).numpy()
    ref = np.concatenate([pairs.reference_chosen[:, None], pairs.reference_rejected], 1)
    margin = (new[:, 0] - ref[:, 0]) - (new[:, 1:] - ref[:, 1:]).mean(1)
    assert margin.mean() > 0
    for name in ("pairs.safetensors", "dpo.jsonl", "train/model.safetensors", "train/training.png"):
        assert (tmp_path / "iteration_1" / name).exists(), name


def test_resume_after_a_kill_mid_iteration_reproduces_the_run(
    platform: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (platform["model"], platform["ids"], platform["split"], platform["rm"])
    straight = align(*args, tmp_path / "a", _config(), progress=False)

    real = ipa_module.preference_objective

    def killing(trainer, pairs, config, iteration, log):
        objective = real(trainer, pairs, config, iteration, log)

        def wrapped(ntp):
            # iteration 2, in its second epoch (after its first checkpoint), mid-epoch
            if iteration == 2 and trainer.epoch == 1 and trainer.step == trainer.steps_per_epoch + 2:
                raise KeyboardInterrupt("killed")
            return objective(ntp)

        return wrapped

    monkeypatch.setattr(ipa_module, "preference_objective", killing)
    with pytest.raises(KeyboardInterrupt):
        align(*args, tmp_path / "b", _config(), progress=False)
    assert (tmp_path / "b" / "iteration_2" / "train" / "last.safetensors").exists()
    monkeypatch.setattr(ipa_module, "preference_objective", real)
    resumed = align(*args, tmp_path / "b", _config(), progress=False)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for p, q in zip(straight.pairs, resumed.pairs):
        assert np.array_equal(p.chosen, q.chosen) and np.array_equal(p.rejected, q.rejected)
    lines = (tmp_path / "b" / "iteration_2" / "dpo.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in lines]
    assert steps == sorted(set(steps))  # the killed epoch's records were replaced, not doubled


def test_evaluation_grades_by_rm_and_oracle(platform: dict) -> None:
    users = np.arange(6)
    history = platform["split"].train_sequences().take(users)
    models = {"a": platform["model"], "b": platform["model"]}
    graded = generate_and_grade(models, platform["ids"], platform["sim"], platform["rm"], users,
                                history, 3)  # fmt: skip
    table = alignment_table(graded, "a")
    assert graded["a"]["oracle"]["swt"].shape == (6, 3)
    # the same model twice: zero paired difference, and oracle values as the simulator gives
    assert table["b"]["oracle_reward_mean_vs_a"]["diff"] == 0.0
    items, _ = beam_sessions(platform["model"], platform["ids"], history, users, 3, 5)
    truth = platform["sim"].oracle(np.repeat(users, 3), items.reshape(18, 5))
    assert table["a"]["oracle_swt_mean"] == pytest.approx(truth["swt"].mean())
    assert table["a"]["oracle_swt_max"] == pytest.approx(truth["swt"].reshape(6, 3).max(1).mean())
    assert -1 <= table["a"]["rank_correlation"]["reward"] <= 1


def test_within_user_correlation_ignores_differences_between_users() -> None:
    # both graders order each user's three sessions alike, but the RM ranks the users the
    # opposite way round: pooled, the two disagree; within each user they agree exactly
    rm = np.array([[10.0, 11, 12], [5, 6, 7], [0, 1, 2]])
    oracle = np.array([[0.0, 1, 2], [5, 6, 7], [10, 11, 12]])
    tied = np.array([[1.0, 1, 1], [1, 2, 3], [3, 2, 1]])  # user 0 is all ties: left out
    graded = {"rm": {m: rm for m in METRICS}, "oracle": {m: oracle for m in METRICS}}
    graded["rm"]["ltr"] = tied
    within, pooled = within_user_correlation(graded), rank_correlation(graded)
    assert within["reward"] == pytest.approx(1.0) and pooled["reward"] < 0
    assert within["ltr"] == pytest.approx(0.0)  # +1 for user 1, -1 for user 2
