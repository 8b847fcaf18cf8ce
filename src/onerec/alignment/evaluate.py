"""Grade generated sessions twice, by the reward model and by the simulator's exact oracle.

For every model, K sessions per held-out user (its K best beams, history items excluded) are
graded: mean over a user's sessions and max (the best one) of swt, vtr, wtr, ltr and the combined
reward, averaged over users (the paper's Table 1, with ground truth beside the RM); paired
differences against a base model with their standard errors; and the Spearman rank correlation
between the RM's and the oracle's values, over all graded sessions and within each user's
sessions (reward hacking shows as a correlation that falls while the RM's gain grows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr

from onerec.alignment.pairs import beam_sessions
from onerec.alignment.reward_model import RewardModel
from onerec.data.ragged import Ragged
from onerec.exceptions import AlignmentError
from onerec.model.onerec import OneRec
from onerec.simulator import Simulator
from onerec.tokenizer.residual import SemanticIds

METRICS = ("swt", "vtr", "wtr", "ltr", "reward")
GRADERS = ("oracle", "rm")


def grade_sessions(
    sim: Simulator, reward_model: RewardModel, users: np.ndarray, history: Ragged,
    sessions: np.ndarray, time: float = 1.0,
) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """``{"oracle": {metric: (U, K)}, "rm": {metric: (U, K)}}`` for sessions ``(U, K, m)``."""
    u, k, m = sessions.shape
    if sessions.min(initial=0) < 0:
        raise AlignmentError(f"{int((sessions < 0).any(-1).sum())} sessions have a dead beam (-1)")
    flat = sessions.reshape(u * k, m)
    truth = sim.oracle(np.repeat(users, k), flat, time=time)
    predicted = reward_model.score(history.take(np.repeat(np.arange(u), k)), flat)
    return {"oracle": {name: truth[name].reshape(u, k) for name in METRICS},
            "rm": {name: predicted[name].reshape(u, k) for name in METRICS}}  # fmt: skip


def generate_and_grade(
    models: dict[str, OneRec], semantic_ids: SemanticIds, sim: Simulator,
    reward_model: RewardModel, users: np.ndarray, history: Ragged, sessions_per_user: int,
    session_items: int = 5, progress: bool = False,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:  # fmt: skip
    """Every model's K best beams per user, graded (:func:`grade_sessions`), by model name."""
    out = {}
    for name, model in models.items():
        items, _ = beam_sessions(model, semantic_ids, history, users, sessions_per_user,
                                 session_items, progress=progress)  # fmt: skip
        out[name] = grade_sessions(sim, reward_model, users, history, items)
    return out


def _paired(ours: np.ndarray, base: np.ndarray) -> dict[str, float]:
    diff = ours - base
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    mean = float(diff.mean())
    relative = mean / float(base.mean()) if base.mean() else float("nan")
    return {"diff": mean, "se": se, "relative": relative}


def alignment_table(
    graded: dict[str, dict[str, dict[str, np.ndarray]]], base: str
) -> dict[str, dict[str, Any]]:
    """Per model and grader: ``<metric>_mean`` / ``<metric>_max`` averaged over users, and the
    paired difference of each against ``base`` (``diff``, ``se``, ``relative``)."""
    table: dict[str, dict[str, Any]] = {}
    for model, by_grader in graded.items():
        row: dict[str, Any] = {}
        for grader in GRADERS:
            for metric in METRICS:
                for how in ("mean", "max"):
                    per_user = getattr(by_grader[grader][metric], how)(axis=1)
                    key = f"{grader}_{metric}_{how}"
                    row[key] = float(per_user.mean())
                    if model != base:
                        baseline = getattr(graded[base][grader][metric], how)(axis=1)
                        row[f"{key}_vs_{base}"] = _paired(per_user, baseline)
        row["rank_correlation"] = rank_correlation(by_grader)
        row["within_user_correlation"] = within_user_correlation(by_grader)
        table[model] = row
    return table


def rank_correlation(graded: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Spearman correlation of the RM's and the oracle's values over all sessions, per metric."""
    return {metric: float(spearmanr(graded["rm"][metric].ravel(),
                                    graded["oracle"][metric].ravel()).statistic)
            for metric in METRICS}  # fmt: skip


def within_user_correlation(graded: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Per metric, the mean over users of the Spearman correlation of the RM's and the oracle's
    values across that user's K sessions: what DPO pairs use (chosen and rejected are one
    user's), free of the differences between users that the pooled correlation also counts.
    Users whose K values are all tied under either grader are left out."""
    out = {}
    for metric in METRICS:
        rm, oracle = graded["rm"][metric], graded["oracle"][metric]
        ok = (np.ptp(rm, axis=1) > 0) & (np.ptp(oracle, axis=1) > 0)
        values = [spearmanr(a, b).statistic for a, b in zip(rm[ok], oracle[ok])]
        out[metric] = float(np.mean(values)) if values else float("nan")
    return out


def markdown_table(table: dict[str, dict[str, Any]], base: str) -> str:
    """The table as markdown: oracle and RM means per metric, the paired oracle differences, and
    the RM-vs-oracle rank correlation of the combined reward."""
    head = ["model"] + [f"oracle {m} mean" for m in METRICS] + [f"RM {m} mean" for m in METRICS]
    head += ["oracle reward max", f"oracle reward diff vs {base} (se)",
             f"oracle swt diff vs {base} (se)", "Spearman RM~oracle reward"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for model, row in table.items():
        cells = [model]
        for grader in ("oracle", "rm"):
            for metric in METRICS:
                fmt = "{:.1f}" if metric == "swt" else "{:.3f}" if metric == "reward" else "{:.4f}"
                cells.append(fmt.format(row[f"{grader}_{metric}_mean"]))
        cells.append(f"{row['oracle_reward_max']:.3f}")
        for metric in ("reward", "swt"):
            d = row.get(f"oracle_{metric}_mean_vs_{base}")
            cells.append("-" if d is None else f"{d['diff']:+.3f} ({d['se']:.3f}), "
                         f"{100 * d['relative']:+.1f}%")  # fmt: skip
        cells.append(f"{row['rank_correlation']['reward']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
