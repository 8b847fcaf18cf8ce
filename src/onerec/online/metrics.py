"""What the online test measures, per arm and day, with users as the unit of every interval.

- **Watch time per user**: the oracle's exact expected watch time of every session shown,
  summed per user (ground truth for what was shown, free of response-sampling noise); **vtr,
  wtr, ltr**: the oracle's rates, averaged over a user's sessions, then over users. Intervals:
  mean +- 1.96 standard errors over users; a difference between arms (independent users) adds
  the two variances.
- **Feedback-loop metrics** over an arm's exposures of the day: catalog **coverage** (share of
  videos shown at least once), exposure **Gini** over the whole catalog (0: every video shown
  equally often, 1: one video gets everything), the **cold share** (exposures on the videos
  the initial log showed least, its bottom quarter by exposures: the simulator has no uploads,
  so these stand for fresh videos), and **interest match** (the weight, in the user's interests
  at that moment, of the shown video's tag: how well an arm follows users as they drift).
  Intervals: the jackknife over the arm's users (mean +- 1.96 jackknife standard errors).
- **User drift** (the same for every arm): the mean L1 distance between users' interest weights
  on the day and at the end of the log.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from onerec.simulator import Simulator

Z = 1.96
USER_METRICS = ("watch_time", "vtr", "wtr", "ltr")
FEED_METRICS = ("coverage", "gini", "cold_share", "interest_match")


def mean_ci(values: np.ndarray) -> dict[str, float]:
    """Mean, standard error and 95% interval of per-user values."""
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "se": se, "lo": mean - Z * se, "hi": mean + Z * se, "users": n}


def difference(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """``a - b`` for independent groups of users, absolute and relative to ``b``."""
    diff = a["mean"] - b["mean"]
    se = float(np.hypot(a["se"], b["se"]))
    rel = diff / b["mean"] if b["mean"] else float("nan")
    rel_se = se / abs(b["mean"]) if b["mean"] else float("nan")
    return {"diff": diff, "se": se, "lo": diff - Z * se, "hi": diff + Z * se,
            "rel": rel, "rel_lo": rel - Z * rel_se, "rel_hi": rel + Z * rel_se}  # fmt: skip


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 for all equal or all zero)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def per_user(sessions: pa.Table) -> dict[str, np.ndarray]:
    """Per user of ``sessions``: total oracle watch time and mean oracle rates."""
    user = sessions.column("user").to_numpy()
    users, inverse = np.unique(user, return_inverse=True)
    count = np.bincount(inverse, minlength=len(users)).astype(np.float64)
    out = {"user": users,
           "watch_time": np.bincount(inverse, sessions.column("swt").to_numpy(), len(users))}
    for name in ("vtr", "wtr", "ltr"):
        out[name] = np.bincount(inverse, sessions.column(name).to_numpy(), len(users)) / count
    return out


def interest_weight(sim: Simulator, user: np.ndarray, item: np.ndarray,
                    time: np.ndarray) -> np.ndarray:  # fmt: skip
    """The weight of each shown video's main tag among its user's interests at ``time``."""
    weights = sim.users.weights_at(user, time)  # (n, M)
    tags = sim.users.home_tags[user]  # (n, M)
    return (weights * (tags == sim.catalog.main_tag[item][:, None])).sum(1)


def feed_metrics(
    sim: Simulator, sessions: pa.Table, cold: np.ndarray
) -> dict[str, dict[str, float]]:
    """Coverage, Gini, cold share and interest match of an arm-day's sessions, each with a
    jackknife interval over its users (leave one user out: coverage and Gini are not means over
    users, and a bootstrap's resamples, repeating users, show fewer distinct videos, so its
    intervals would not even hold the point estimate)."""
    items = np.stack(sessions.column("items").to_numpy(zero_copy_only=False))  # (S, m)
    user = sessions.column("user").to_numpy()
    time = sessions.column("time").to_numpy()
    m = items.shape[1]
    flat_user, flat_item = np.repeat(user, m), items.reshape(-1)
    match = interest_weight(sim, flat_user, flat_item, np.repeat(time, m))
    users, inverse = np.unique(flat_user, return_inverse=True)
    counts = np.bincount(flat_item, minlength=sim.num_items)
    is_cold = cold[flat_item].astype(np.float64)

    def values(c: np.ndarray, n: int, cold_sum: float, match_sum: float) -> np.ndarray:
        return np.array([(c > 0).mean(), gini(c), cold_sum / n, match_sum / n])

    point = values(counts, len(flat_item), is_cold.sum(), match.sum())
    leave_out = []
    for u in range(len(users)):
        mine = inverse == u
        c = counts - np.bincount(flat_item[mine], minlength=sim.num_items)
        rest = len(flat_item) - int(mine.sum())
        leave_out.append(values(c, rest, is_cold.sum() - is_cold[mine].sum(),
                                match.sum() - match[mine].sum()))  # fmt: skip
    n = len(users)
    leave_out = np.array(leave_out)
    se = (np.sqrt((n - 1) / n * ((leave_out - leave_out.mean(0)) ** 2).sum(0)) if n > 1
          else np.full(4, np.nan))  # fmt: skip
    return {name: {"mean": float(point[k]), "se": float(se[k]), "lo": float(point[k] - Z * se[k]),
                   "hi": float(point[k] + Z * se[k]), "users": n}
            for k, name in enumerate(FEED_METRICS)}  # fmt: skip


def user_drift(sim: Simulator, since: float, at: float) -> float:
    """Mean L1 distance of every user's interest weights at ``at`` from those at ``since``."""
    users = np.arange(sim.num_users)
    return float(np.abs(sim.users.weights_at(users, at) - sim.users.weights_at(users, since))
                 .sum(1).mean())  # fmt: skip


def cold_items(log_items: np.ndarray, num_items: int) -> np.ndarray:
    """Boolean mask of the videos in the bottom quarter by exposures in the initial log (ties
    broken by index, so exactly a quarter)."""
    counts = np.bincount(log_items, minlength=num_items)
    order = np.lexsort((np.arange(num_items), counts))
    mask = np.zeros(num_items, dtype=bool)
    mask[order[: num_items // 4]] = True
    return mask


def summarize(
    sim: Simulator, sessions: pa.Table, arms: tuple[str, ...], control: str, cold: np.ndarray
) -> dict[str, Any]:
    """Every number of the report: per arm and day, over the test, and against the control."""
    arm_col = np.asarray(sessions.column("arm").to_pylist())
    day_col = sessions.column("day").to_numpy()
    days = sorted(int(d) for d in np.unique(day_col))
    daily: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in arms}
    overall: dict[str, dict[str, Any]] = {}
    for a in arms:
        mine = arm_col == a
        for d in days:
            rows = sessions.filter(pa.array(mine & (day_col == d)))
            if rows.num_rows == 0:
                continue
            stats = per_user(rows)
            record = {k: mean_ci(stats[k]) for k in USER_METRICS}
            record.update(feed_metrics(sim, rows, cold))
            record["sessions"] = rows.num_rows
            daily[a][d] = record
        stats = per_user(sessions.filter(pa.array(mine)))
        overall[a] = {k: mean_ci(stats[k]) for k in USER_METRICS}
        overall[a]["sessions"] = int(mine.sum())
    versus = {a: {k: difference(overall[a][k], overall[control][k]) for k in USER_METRICS}
              for a in arms if a != control}  # fmt: skip
    versus_daily = {
        a: {d: difference(daily[a][d]["watch_time"], daily[control][d]["watch_time"])
            for d in days if d in daily[a] and d in daily[control]}
        for a in arms if a != control
    }  # fmt: skip
    return {"days": days, "daily": daily, "overall": overall, "versus_control": versus,
            "versus_control_daily": versus_daily}  # fmt: skip
