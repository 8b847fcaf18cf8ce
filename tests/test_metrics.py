"""Metrics against hand-computed values and against a brute-force reference on random data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.evaluation import EvalResult, Evaluator, evaluate
from onerec.exceptions import EvaluationError


def examples(targets: list[list[int]], seen: list[list[int]] | None = None) -> Examples:
    seen = seen or [[] for _ in targets]
    r = Ragged.from_lists
    return Examples(np.arange(len(targets)), r(seen), r(targets), r(seen))


# user 0: order 1 3 2 4 0 5 -> target 3 at rank 1
# user 1: item 5 above, items 0 and 2 tie with target 1 -> pessimistic rank 3
# user 2: order 2 0 4 3 5 1 -> targets 0 and 4 at ranks 1 and 2; without the seen item 2: 0 and 1
SCORES = torch.tensor(
    [
        [0.1, 0.9, 0.3, 0.5, 0.2, 0.0],
        [0.5, 0.5, 0.5, 0.1, 0.1, 0.9],
        [0.8, 0.1, 0.95, 0.3, 0.6, 0.2],
    ]
)
EX = examples([[3], [1], [0, 4]], seen=[[], [], [2]])
L = math.log2


def test_hand_computed_values() -> None:
    r = evaluate(EX, scores=SCORES, ks=(1, 2, 3, 5)).per_user
    np.testing.assert_allclose(r["recall@1"], [0, 0, 0])
    np.testing.assert_allclose(r["recall@2"], [1, 0, 0.5])
    np.testing.assert_allclose(r["ndcg@2"], [1 / L(3), 0, (1 / L(3)) / (1 + 1 / L(3))])
    np.testing.assert_allclose(r["recall@3"], [1, 0, 1])
    np.testing.assert_allclose(r["ndcg@3"][2], (1 / L(3) + 1 / L(4)) / (1 + 1 / L(3)))
    np.testing.assert_allclose(r["recall@5"], [1, 1, 1])
    np.testing.assert_allclose(r["ndcg@5"][1], 1 / L(5))


def test_hand_computed_exclude_seen() -> None:
    r = evaluate(EX, scores=SCORES, ks=(2,), exclude_seen=True).per_user
    np.testing.assert_allclose(r["recall@2"], [1, 0, 1])
    np.testing.assert_allclose(r["ndcg@2"], [1 / L(3), 0, 1])
    # a seen target can never be hit
    r2 = evaluate(examples([[2]], seen=[[2]]), scores=SCORES[2:], ks=(5,), exclude_seen=True)
    assert r2.per_user["recall@5"][0] == 0


def test_all_equal_scores_get_no_credit() -> None:
    r = evaluate(examples([[0], [5]]), scores=torch.zeros(2, 6), ks=(5,))
    np.testing.assert_array_equal(r.per_user["recall@5"], [0, 0])


def reference(scores: np.ndarray, targets: list[list[int]], seen: list[list[int]], ks, exclude: bool) -> dict:
    out = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    for s, t, sn in zip(scores, targets, seen):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        if exclude:
            order = [j for j in order if j not in set(sn)]
        t = list(dict.fromkeys(t))
        for k in ks:
            top = order[:k]
            hits = [top.index(x) for x in t if x in top]
            out[f"recall@{k}"].append(len(hits) / len(t))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(t))))
            out[f"ndcg@{k}"].append(sum(1 / math.log2(p + 2) for p in hits) / idcg)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("exclude", [False, True])
def test_against_brute_force(exclude: bool) -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, ks = 200, 300, (1, 5, 10, 20)
    scores = torch.rand(n_users, n_items, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = [rng.choice(n_items, rng.integers(1, 4)).tolist() for _ in range(n_users)]
    seen = [rng.choice(n_items, rng.integers(0, 30), replace=False).tolist() for _ in range(n_users)]
    ex = examples(targets, seen)
    ref = reference(scores.numpy(), targets, seen, ks, exclude)

    by_scores = evaluate(ex, scores=scores, ks=ks, exclude_seen=exclude, batch_size=64).per_user
    # generative models hand in ranked lists: the full ranking, longer than max K so that
    # excluding seen items still leaves K entries
    ranked = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :60]
    by_lists = evaluate(ex, ranked=ranked, ks=ks, exclude_seen=exclude).per_user
    ev = Evaluator(ex, ks, exclude, num_items=n_items)
    for rows in np.array_split(rng.permutation(n_users), 7):
        ev.update(rows, scores=scores[rows])
    in_batches = ev.result().per_user
    for name in ref:
        np.testing.assert_allclose(by_scores[name], ref[name], atol=1e-12, err_msg=name)
        np.testing.assert_allclose(by_lists[name], ref[name], atol=1e-12, err_msg=name)
        np.testing.assert_allclose(in_batches[name], ref[name], atol=1e-12, err_msg=name)


def test_ranked_lists_duplicates_and_padding() -> None:
    ex = examples([[7], [7, 8]])
    ranked = torch.tensor([[3, -1, 7], [8, 8, 8]])
    r = evaluate(ex, ranked=ranked, ks=(3,)).per_user
    np.testing.assert_allclose(r["recall@3"], [1, 0.5])  # duplicate 8 counts once
    np.testing.assert_allclose(r["ndcg@3"][0], 1 / L(4))  # padding still takes its position


def test_callable_scores_and_save_load(tmp_path: Path) -> None:
    r = evaluate(EX, scores=lambda rows: SCORES[rows], ks=(2, 5))
    r.save(tmp_path / "r.parquet")
    back = EvalResult.load(tmp_path / "r.parquet")
    assert back.ks == (2, 5) and back.exclude_seen is False
    for k, v in r.per_user.items():
        np.testing.assert_array_equal(back.per_user[k], v)
    assert str(r).startswith("recall@2=")


def test_bad_input_raises() -> None:
    with pytest.raises(EvaluationError, match="rows"):
        evaluate(EX, scores=SCORES[:2])
    with pytest.raises(EvaluationError, match="NaN"):
        evaluate(EX, scores=torch.full((3, 6), float("nan")))
    with pytest.raises(EvaluationError, match="out of range"):
        evaluate(examples([[9]]), scores=torch.zeros(1, 6))
    with pytest.raises(EvaluationError, match="positive"):
        evaluate(EX, scores=SCORES, ks=(0, 5))
    with pytest.raises(EvaluationError, match="non-empty list"):
        evaluate(EX, scores=SCORES, ks=())
    with pytest.raises(EvaluationError, match="up to K=10"):
        evaluate(EX, ranked=torch.zeros(3, 5, dtype=torch.long), ks=(10,))
    with pytest.raises(EvaluationError, match="no target"):
        Evaluator(examples([[1], []]))
    with pytest.raises(EvaluationError, match="num_items"):
        evaluate(EX, scores=SCORES, num_items=5)
    ev = Evaluator(EX, (2,))
    ev.update([0], scores=SCORES[:1])
    with pytest.raises(EvaluationError, match="twice"):
        ev.update([0], scores=SCORES[:1])
    with pytest.raises(EvaluationError, match="2 of 3 rows were never scored"):
        ev.result()
    with pytest.raises(EvaluationError, match="exactly one"):
        ev.update([1])
