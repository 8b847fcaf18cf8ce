"""Paired significance tests: is model B better than model A on the same users?

Both results must cover the same users (rows are aligned by user). The per-user differences
``d = b - a`` of one metric are tested against zero:

- ``"t"``: the paired t-test; with ``n`` users, ``t = mean(d) / (sd(d) / sqrt(n))``, two-sided p
  from Student's t with ``n - 1`` degrees of freedom, and a confidence interval for ``mean(d)``.
- ``"permutation"``: a sign-flip randomization test, which assumes no distribution: under the
  null each difference is as likely to have either sign. ``p = (1 + #{|mean of flipped d|
  >= |mean(d)|}) / (1 + n_resamples)``; the interval is a percentile bootstrap of ``mean(d)``.

Metrics such as Recall@10 with one target per user are 0/1 per user; the t-test is then an
approximation that is good for thousands of users, and the permutation test is exact up to its
resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from onerec.evaluation.metrics import EvalResult
from onerec.exceptions import EvaluationError


@dataclass(frozen=True)
class PairedTestResult:
    metric: str
    method: str
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float  # b - a
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{self.metric}: {self.mean_a:.4f} -> {self.mean_b:.4f} (diff {self.mean_diff:+.4f}, "
            f"{100 * (1 - self.alpha):.0f}% CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}]), "
            f"{self.method} p={self.p_value:.3g}, n={self.n}: {verdict} at {self.alpha}"
        )


def _aligned(a: EvalResult, b: EvalResult, metric: str) -> tuple[np.ndarray, np.ndarray]:
    for name, r in (("a", a), ("b", b)):
        if metric not in r.per_user:
            raise EvaluationError(f"result {name} has no {metric!r}; it has {sorted(r.per_user)}")
        if len(np.unique(r.users)) != len(r.users):
            raise EvaluationError(f"result {name} lists a user twice; pair results per user")
    only_a = np.setdiff1d(a.users, b.users)
    only_b = np.setdiff1d(b.users, a.users)
    if len(only_a) or len(only_b):
        raise EvaluationError(
            f"the results cover different users: {len(only_a)} only in a, {len(only_b)} only in b;"
            " evaluate both models on the same examples"
        )
    ia, ib = np.argsort(a.users), np.argsort(b.users)
    return a.per_user[metric][ia].astype(np.float64), b.per_user[metric][ib].astype(np.float64)


def paired_test(
    a: EvalResult,
    b: EvalResult,
    metric: str = "ndcg@10",
    method: str = "t",
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedTestResult:
    """Test whether the mean of ``b - a`` on ``metric`` differs from zero."""
    if method not in ("t", "permutation"):
        raise EvaluationError(f"method must be 't' or 'permutation', got {method!r}")
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must be in (0, 1), got {alpha}")
    xa, xb = _aligned(a, b, metric)
    d = xb - xa
    n = len(d)
    if n < 2:
        raise EvaluationError(f"a paired test needs at least 2 users, got {n}")
    mean = float(d.mean())
    if method == "t":
        sd = float(d.std(ddof=1))
        if sd == 0.0:
            # every difference equal: no spread to test against (p = 1 when they are all 0)
            stat = 0.0 if mean == 0 else float(np.sign(mean) * np.inf)
            p = 1.0 if mean == 0 else 0.0
            lo = hi = mean
        else:
            se = sd / np.sqrt(n)
            stat = mean / se
            p = float(2 * stats.t.sf(abs(stat), df=n - 1))
            half = float(stats.t.ppf(1 - alpha / 2, df=n - 1)) * se
            lo, hi = mean - half, mean + half
    else:
        rng = np.random.default_rng(seed)
        exceed = 0
        boot = np.empty(n_resamples)
        done = 0
        chunk = max(1, (1 << 24) // n)  # bound memory: chunk x n signs at a time
        while done < n_resamples:
            m = min(chunk, n_resamples - done)
            signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
            exceed += int((np.abs(signs @ d / n) >= abs(mean) - 1e-12).sum())
            idx = rng.integers(0, n, size=(m, n))
            boot[done : done + m] = d[idx].mean(axis=1)
            done += m
        stat = mean
        p = (1 + exceed) / (1 + n_resamples)
        lo, hi = (float(x) for x in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    return PairedTestResult(
        metric, method, n, float(xa.mean()), float(xb.mean()), mean, float(lo), float(hi),
        float(stat), float(p), alpha,
    )
