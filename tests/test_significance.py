import numpy as np
import pytest
from scipy import stats

from onerec.evaluation import EvalResult, paired_test
from onerec.exceptions import EvaluationError


def result(values: np.ndarray, users: np.ndarray | None = None) -> EvalResult:
    users = np.arange(len(values)) if users is None else users
    return EvalResult(users, {"ndcg@10": values}, (10,), False)


def test_t_test_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(500)
    b = a + rng.normal(0.02, 0.2, 500)
    ours = paired_test(result(a), result(b))
    ref = stats.ttest_rel(b, a)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert ours.ci_low < ours.mean_diff < ours.ci_high


def test_rows_are_aligned_by_user() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(100), rng.random(100)
    perm = rng.permutation(100)
    shuffled = paired_test(result(a), result(b[perm], users=perm))
    assert shuffled.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-8)


def test_permutation_agrees_with_t_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(3000)
    b = a + rng.normal(0.01, 0.3, 3000)
    t = paired_test(result(a), result(b), method="t")
    p1 = paired_test(result(a), result(b), method="permutation", seed=5)
    p2 = paired_test(result(a), result(b), method="permutation", seed=5)
    assert p1.p_value == p2.p_value
    assert abs(p1.p_value - t.p_value) < 0.03
    assert p1.ci_low < p1.mean_diff < p1.ci_high


def test_identical_and_clearly_better() -> None:
    a = np.random.default_rng(4).random(200)
    assert paired_test(result(a), result(a)).p_value == 1.0
    assert paired_test(result(a), result(a), method="permutation").p_value == 1.0
    better = paired_test(result(a), result(a + 0.1 + 0.01 * np.random.default_rng(5).random(200)))
    assert better.p_value < 1e-3 and better.significant and better.mean_diff > 0
    assert "significant" in str(better)


def test_errors() -> None:
    with pytest.raises(EvaluationError, match="1 only in a, 1 only in b"):
        paired_test(result(np.zeros(3)), result(np.zeros(3), users=np.array([0, 1, 5])))
    with pytest.raises(EvaluationError, match="no 'recall@5'"):
        paired_test(result(np.zeros(3)), result(np.zeros(3)), metric="recall@5")
    with pytest.raises(EvaluationError, match="method"):
        paired_test(result(np.zeros(3)), result(np.zeros(3)), method="wilcoxon")
