"""Metrics against hand-computed values and against a brute-force reference on random data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.evaluation import (
    EvalResult,
    Evaluator,
    distinct_targets,
    evaluate,
    exclude_seen_selected,
)
from onerec.exceptions import EvaluationError

L = math.log2


def examples(targets: list[list[int]], seen: list[list[int]] | None = None) -> Examples:
    seen = seen or [[] for _ in targets]
    r = Ragged.from_lists
    return Examples(np.arange(len(targets)) + 100, r(seen), r(targets), r(seen))


# 3 users, 6 items. Ranks are 0-based; ties are broken against the target.
# user 0, target 3:      order 1(.9) 3(.5) 2(.3) 4(.2) 0(.1) 5(0)  -> rank 1
# user 1, target 1:      5(.9) above; 0, 1, 2 tie at .5 -> 1 + 2 other tied items -> rank 3
# user 2, targets 0, 4:  order 2(.95) 0(.8) 4(.6) 3(.3) 5(.2) 1(.1) -> ranks 1 and 2;
#                        with the seen item 2 excluded: order 0 4 3 5 1 -> ranks 0 and 1
SCORES = torch.tensor(
    [
        [0.1, 0.9, 0.3, 0.5, 0.2, 0.0],
        [0.5, 0.5, 0.5, 0.1, 0.1, 0.9],
        [0.8, 0.1, 0.95, 0.3, 0.6, 0.2],
    ]
)
EX = examples([[3], [1], [0, 4, 0]], seen=[[], [], [2]])  # the repeated 0 is dropped


def test_hand_computed_values() -> None:
    r = evaluate(EX, scores=SCORES, ks=(1, 2, 3, 5))
    v = r.per_user
    np.testing.assert_allclose(v["recall@1"], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(v["ndcg@1"], [0, 0, 0], atol=1e-12)
    # K=2: user 0 hit at rank 1; user 2 has 1 of 2 targets (rank 1), IDCG over 2 slots
    np.testing.assert_allclose(v["recall@2"], [1, 0, 0.5], atol=1e-12)
    np.testing.assert_allclose(v["ndcg@2"], [1 / L(3), 0, (1 / L(3)) / (1 + 1 / L(3))], atol=1e-12)
    # K=3: user 2 hits both (ranks 1, 2); user 1 at rank 3 still a miss
    np.testing.assert_allclose(v["recall@3"], [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(
        v["ndcg@3"], [1 / L(3), 0, (1 / L(3) + 1 / L(4)) / (1 + 1 / L(3))], atol=1e-12
    )
    # K=5: the tie-pessimistic rank 3 of user 1 is now a hit
    np.testing.assert_allclose(v["recall@5"], [1, 1, 1], atol=1e-12)
    np.testing.assert_allclose(v["ndcg@5"][1], 1 / L(5), atol=1e-12)
    np.testing.assert_array_equal(r.users, [100, 101, 102])
    assert list(v) == ["recall@1", "ndcg@1", "recall@2", "ndcg@2", "recall@3", "ndcg@3",
                       "recall@5", "ndcg@5"]  # fmt: skip


def test_hand_computed_exclude_seen() -> None:
    r = evaluate(EX, scores=SCORES, ks=(2,), exclude_seen=True).per_user
    # user 2: targets at ranks 0 and 1 -> perfect
    np.testing.assert_allclose(r["recall@2"], [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(r["ndcg@2"], [1 / L(3), 0, 1], atol=1e-12)
    # a target that was seen can never be hit (the S3-Rec convention), even at K = num_items
    r2 = evaluate(examples([[2]], seen=[[2]]), scores=SCORES[2:], ks=(6,), exclude_seen=True)
    assert r2.per_user["recall@6"][0] == 0
    # ranked lists: the seen item 2 is deleted and the list moves up
    ranked = torch.tensor([[1, 3, 2, 4, 0], [5, 0, 2, 1, 3], [2, 0, 4, 3, 5]])
    r3 = evaluate(EX, ranked=ranked, ks=(2,), exclude_seen=True).per_user
    np.testing.assert_allclose(r3["recall@2"], [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(r3["ndcg@2"], [1 / L(3), 0, 1], atol=1e-12)


def test_all_equal_scores_get_no_credit() -> None:
    r = evaluate(examples([[0], [5]]), scores=torch.zeros(2, 6), ks=(5,))
    np.testing.assert_array_equal(r.per_user["recall@5"], [0, 0])
    r = evaluate(examples([[0], [5]]), scores=torch.zeros(2, 6), ks=(6,))  # rank 5 < 6
    np.testing.assert_allclose(r.per_user["ndcg@6"], [1 / L(7)] * 2, atol=1e-12)


def test_float64_scores_keep_their_precision() -> None:
    # 1 + 1e-12 and 1 are equal in float32: a float32 cast would make a pessimistic tie
    s = torch.tensor([[1.0, 1.0 + 1e-12, 0.0]], dtype=torch.float64)
    assert evaluate(examples([[1]]), scores=s, ks=(1,)).per_user["recall@1"][0] == 1


def test_integer_and_numpy_inputs() -> None:
    ints = np.array([[0, 3, 1, 2]])
    r = evaluate(examples([[3]], seen=[[1]]), scores=ints, ks=(1,), exclude_seen=True)
    assert r.per_user["recall@1"][0] == 1
    r = evaluate(examples([[3]]), ranked=np.array([[1, 3]]), ks=(2,))
    np.testing.assert_allclose(r.per_user["ndcg@2"], [1 / L(3)], atol=1e-12)


def test_distinct_targets_keeps_first_occurrence() -> None:
    got = distinct_targets(Ragged.from_lists([[3, 1, 3, 2, 1], [], [5, 5], [0]]))
    assert got.tolist() == [[3, 1, 2], [], [5], [0]]


def reference(
    scores: np.ndarray, targets: list[list[int]], seen: list[list[int]], ks, exclude: bool
) -> dict[str, np.ndarray]:
    """The metrics from their definitions, one row at a time in pure Python."""
    out: dict[str, list[float]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    for s, t, sn in zip(scores.tolist(), targets, seen):
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
    scores = torch.rand(n_users, n_items, generator=torch.Generator().manual_seed(0))
    assert len(torch.unique(scores[0])) == n_items  # no ties to argue about
    targets = [rng.choice(n_items, rng.integers(1, 4)).tolist() for _ in range(n_users)]
    # some targets are seen, so that exclusion can turn hits into misses
    seen = [
        rng.choice(n_items, rng.integers(0, 30), replace=False).tolist()
        + ([t[0]] if i % 10 == 0 else [])
        for i, t in enumerate(targets)
    ]
    ex = examples(targets, seen)
    ref = reference(scores.numpy(), targets, seen, ks, exclude)

    by_scores = evaluate(ex, scores=scores, ks=ks, exclude_seen=exclude, batch_size=64).per_user
    # generative models hand in ranked lists: here the full argsort, cut well past max K so
    # that excluding up to 31 seen items still leaves K entries
    ranked = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :60]
    by_lists = evaluate(ex, ranked=ranked, ks=ks, exclude_seen=exclude).per_user
    ev = Evaluator(ex, ks, exclude, num_items=n_items)
    for rows in np.array_split(rng.permutation(n_users), 7):
        ev.update(rows, scores=scores[rows])
    in_batches = ev.result().per_user
    by_fn = evaluate(
        ex, scores=lambda rows: scores[rows], ks=ks, exclude_seen=exclude, batch_size=33
    ).per_user
    for name in ref:
        for got in (by_scores, by_lists, in_batches, by_fn):
            np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-12, err_msg=name)
    assert ref["recall@20"].mean() > 0  # the comparison is not vacuous


def test_ranked_lists_duplicates_and_padding() -> None:
    ex = examples([[7], [7, 8], [9]])
    ranked = torch.tensor([[3, -1, 7], [8, 8, 8], [-1, -1, -1]])
    r = evaluate(ex, ranked=ranked, ks=(3,)).per_user
    np.testing.assert_allclose(r["recall@3"], [1, 0.5, 0], atol=1e-12)  # duplicate 8 counts once
    # padding is a miss that still takes its position; 8 at its first position (0)
    np.testing.assert_allclose(r["ndcg@3"], [1 / L(4), 1 / (1 + 1 / L(3)), 0], atol=1e-12)


def test_callable_scores_and_save_load(tmp_path: Path) -> None:
    r = evaluate(EX, scores=lambda rows: SCORES[rows], ks=(2, 5), exclude_seen=True)
    r.settings["model"] = "toy"
    r.save(tmp_path / "r.parquet")
    back = EvalResult.load(tmp_path / "r.parquet")
    assert back.ks == (2, 5) and back.exclude_seen is True and back.settings == {"model": "toy"}
    np.testing.assert_array_equal(back.users, r.users)
    assert list(back.per_user) == list(r.per_user)
    for k, v in r.per_user.items():
        np.testing.assert_array_equal(back.per_user[k], v)
    assert back.means() == r.means()
    assert str(r).startswith("recall@2=0.6667 ndcg@2=0.5436 recall@5=1.0000")


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate(EX, scores=SCORES, batch_size=1)
    assert "evaluating" not in capsys.readouterr().err
    evaluate(EX, scores=SCORES, batch_size=1, progress=True)
    assert "evaluating" in capsys.readouterr().err


def test_bad_input_raises() -> None:
    cases = [
        (dict(scores=SCORES[:2]), "2 rows but there are 3"),
        (dict(scores=torch.full((3, 6), float("nan"))), "NaN"),
        (dict(scores=SCORES, ks=(0, 5)), "positive"),
        (dict(scores=SCORES, ks=()), "non-empty list of ints"),
        (dict(scores=SCORES, ks=5), "non-empty list of ints"),
        (dict(scores=SCORES, ks=(2.5,)), "non-empty list of ints"),
        (dict(ranked=torch.zeros(3, 5, dtype=torch.long), ks=(10,)), "up to K=10"),
        (dict(ranked=torch.zeros(3, 5)), "integer"),
        (dict(ranked=torch.full((3, 10), 6), num_items=6), "out of range"),
        (dict(ranked=torch.full((3, 10), -3)), "-1"),
        (dict(scores=SCORES, num_items=5), "num_items"),
        (dict(scores=SCORES, ranked=torch.zeros(3, 10, dtype=torch.long)), "exactly one"),
        (dict(), "exactly one"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EvaluationError, match=message):
            evaluate(EX, **kwargs)
    with pytest.raises(EvaluationError, match="out of range"):
        evaluate(examples([[9]]), scores=torch.zeros(1, 6))
    with pytest.raises(EvaluationError, match="out of range"):  # a seen item needs a column too
        evaluate(examples([[1]], seen=[[9]]), scores=torch.zeros(1, 6), exclude_seen=True)
    with pytest.raises(EvaluationError, match="rows without a target item: 1, 3"):
        Evaluator(examples([[1], [], [2], []]))


def test_evaluator_bookkeeping() -> None:
    ev = Evaluator(EX, (2,))
    ev.update([0], scores=SCORES[:1])
    with pytest.raises(EvaluationError, match="scored twice: 0"):
        ev.update([0], scores=SCORES[:1])
    with pytest.raises(EvaluationError, match="scored twice: 2"):
        ev.update([2, 2], scores=SCORES[[2, 2]])
    with pytest.raises(EvaluationError, match=r"2 of 3 rows were never scored \(rows 1, 2\)"):
        ev.result()
    with pytest.raises(EvaluationError, match="exactly one"):
        ev.update([1])
    with pytest.raises(EvaluationError, match=r"in \[0, 3\)"):
        ev.update([3], scores=SCORES[:1])
    with pytest.raises(EvaluationError, match="1 rows"):
        ev.update([1], scores=SCORES[:2])
    ev.update(np.array([2, 1]), ranked=torch.tensor([[0, 4], [1, 5]]))  # batches may mix kinds
    np.testing.assert_allclose(ev.result().per_user["recall@2"], [1, 1, 1], atol=1e-12)


def test_validation_decides_whether_seen_items_are_excluded():
    """The seen-items setting follows validation Recall@10 (ties keep seen items); test metrics
    play no part; records without both validation settings are refused by name."""
    def record(kept: float, excluded: float) -> dict:
        return {"valid": {"recall@10": kept}, "valid_exclude_seen": {"recall@10": excluded},
                "test": {"recall@10": 0.9}, "test_exclude_seen": {"recall@10": 0.0}}

    assert exclude_seen_selected(record(0.05, 0.06))
    assert not exclude_seen_selected(record(0.06, 0.05))
    assert not exclude_seen_selected(record(0.05, 0.05))
    with pytest.raises(EvaluationError, match="valid_exclude_seen"):
        exclude_seen_selected({"valid": {"recall@10": 0.1}})


def test_summary_gives_means_and_their_standard_errors() -> None:
    """recall@2 per user is [1, 0, .5]: mean .5, sample std .5, standard error .5 / sqrt(3)."""
    r = evaluate(EX, scores=SCORES, ks=(2,))
    summary = r.summary(["recall@2", "ndcg@2"])
    assert summary["recall@2"] == pytest.approx(0.5)
    assert summary["recall@2_se"] == pytest.approx(0.5 / np.sqrt(3))
    ndcg = r.per_user["ndcg@2"]
    assert summary["ndcg@2_se"] == pytest.approx(ndcg.std(ddof=1) / np.sqrt(3))
    assert set(summary) == {"recall@2", "ndcg@2", "recall@2_se", "ndcg@2_se"}
