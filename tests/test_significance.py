"""Paired significance tests against scipy and against known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from onerec.evaluation import EvalResult, paired_test
from onerec.exceptions import EvaluationError


def result(
    values: np.ndarray, users: np.ndarray | None = None, exclude: bool = False
) -> EvalResult:
    users = np.arange(len(values)) if users is None else users
    return EvalResult(users, {"ndcg@10": np.asarray(values, dtype=np.float64)}, (10,), exclude)


def test_t_test_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(500)
    b = a + rng.normal(0.02, 0.2, 500)
    ours = paired_test(result(a), result(b))
    ref = stats.ttest_rel(b, a)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert ours.mean_diff == pytest.approx(b.mean() - a.mean(), abs=1e-14)
    lo, hi = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((lo, hi), rel=1e-8)
    assert ours.significant == (ours.p_value < 0.05)


def test_rows_are_aligned_by_user() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(100), rng.random(100)
    perm = rng.permutation(100)
    shuffled = paired_test(result(a), result(b[perm], users=perm))
    assert shuffled.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-8)


def test_resampling_agrees_with_t_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(3000)
    b = a + rng.normal(0.008, 0.3, 3000)
    t = paired_test(result(a), result(b), method="t")
    assert 0.05 < t.p_value < 0.3  # a p where resampling noise is visible but small
    for method in ("permutation", "bootstrap"):
        p1 = paired_test(result(a), result(b), method=method, n_resamples=4000, seed=5)
        p2 = paired_test(result(a), result(b), method=method, n_resamples=4000, seed=5)
        assert p1 == p2, method
        assert abs(p1.p_value - t.p_value) < 0.03, (method, p1.p_value, t.p_value)
        assert p1.ci_low < p1.mean_diff < p1.ci_high
        assert p1.ci_low == pytest.approx(t.ci_low, abs=2e-3)
        assert p1.ci_high == pytest.approx(t.ci_high, abs=2e-3)
    other = paired_test(result(a), result(b), method="permutation", n_resamples=4000, seed=6)
    assert other.p_value != p1.p_value


def test_permutation_is_exact_on_a_tiny_case() -> None:
    # d = (1, 1): of the 4 sign patterns, 2 reach |mean| = 1, so p -> 0.5
    r = paired_test(result([0, 0]), result([1, 1]), method="permutation", n_resamples=20000)
    assert r.p_value == pytest.approx(0.5, abs=0.02)


def test_identical_and_clearly_better() -> None:
    a = np.random.default_rng(4).random(200)
    for method in ("t", "permutation", "bootstrap"):
        same = paired_test(result(a), result(a), method=method, n_resamples=500)
        assert same.p_value == 1.0 and not same.significant and same.mean_diff == 0
    # the same gain on every user (values exact in binary, so the differences are all equal)
    q = np.random.default_rng(6).integers(0, 4, 200) / 4
    shift = paired_test(result(q), result(q + 0.25))
    assert shift.p_value == 0.0 and shift.statistic == np.inf and shift.significant
    assert shift.ci_low == shift.ci_high == 0.25
    noise = 0.01 * np.random.default_rng(5).random(200)
    for method in ("t", "permutation", "bootstrap"):
        better = paired_test(result(a), result(a + 0.1 + noise), method=method)
        assert better.p_value < 1e-3 and better.significant and better.mean_diff > 0
        assert "significant" in str(better) and "ndcg@10" in str(better)
    assert dataclasses.asdict(better)["significant"] is True


def test_errors() -> None:
    z = np.zeros(3)
    with pytest.raises(EvaluationError, match="1 only in a, 1 only in b"):
        paired_test(result(z), result(z, users=np.array([0, 1, 5])))
    with pytest.raises(EvaluationError, match="no 'recall@5'"):
        paired_test(result(z), result(z), metric="recall@5")
    with pytest.raises(EvaluationError, match="method"):
        paired_test(result(z), result(z), method="wilcoxon")
    with pytest.raises(EvaluationError, match="exclude_seen"):
        paired_test(result(z), result(z, exclude=True))
    with pytest.raises(EvaluationError, match="twice"):
        paired_test(result(z), result(z, users=np.array([0, 0, 1])))
    with pytest.raises(EvaluationError, match="at least 2"):
        paired_test(result(z[:1]), result(z[:1]))
    with pytest.raises(EvaluationError, match="alpha"):
        paired_test(result(z), result(z), alpha=1.5)
