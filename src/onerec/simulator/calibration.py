"""Distributions of the simulated platform, measured once on KuaiRand-Pure's side tables.

The constants below were computed by hand with :func:`measure_kuairand` on the KuaiRand-Pure
feature files (``kuairand-pure-features/video_features_basic_pure.csv``: 7,583 videos, and
``user_features_pure.csv``: 27,285 users; KuaiRand, CC BY-SA 4.0), and pasted here, so that the
simulator never needs those files::

    from onerec.simulator.calibration import measure_kuairand
    print(measure_kuairand("../shared/data/kuairand-pure-features"))

What the tables do *not* hold: the interaction logs (watch time, like, follow rates) are not
available on these machines, so the feedback base rates in :class:`ResponseConfig` are stated
assumptions about a typical feed, not measurements; the relative session rates of the activity
levels are assumptions too (the table gives only each level's share of users).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# Video duration in seconds, the 0%, 5%, 10%, ..., 100% quantiles of ``video_duration / 1000``
# over the 7,344 videos with a duration (239 are missing). Median 81 s, 90% 238 s; log-duration
# mean 4.23, sd 1.03. Sampled by inverse CDF, linear in log-seconds between quantiles.
DURATION_QUANTILES_S: tuple[float, ...] = (
    5.0, 10.725, 14.593, 18.8, 24.486, 31.95, 40.766, 51.833,
    62.733, 71.145, 81.171, 89.421, 100.153, 114.416, 129.818, 148.228,
    170.3, 197.374, 237.83, 303.456, 1177.72,
)  # fmt: skip

# Share of each tag among all (video, tag) pairs, largest first: the ``tag`` column holds one or
# more comma-separated tag ids per video; 46 distinct tags occur. The simulator stretches this
# rank-frequency curve to its own number of tags.
TAG_SHARES: tuple[float, ...] = (
    0.155317, 0.078625, 0.072503, 0.065091, 0.052524, 0.045972, 0.045972, 0.045005,
    0.042965, 0.041139, 0.031794, 0.027282, 0.026316, 0.023631, 0.022127, 0.019441,
    0.019012, 0.019012, 0.015575, 0.015467, 0.014608, 0.010956, 0.010956, 0.010634,
    0.00956, 0.008808, 0.008056, 0.00623, 0.0058, 0.004941, 0.004619, 0.004404,
    0.004404, 0.004296, 0.003974, 0.003759, 0.003545, 0.003545, 0.003545, 0.00333,
    0.001719, 0.001182, 0.001074, 0.000537, 0.00043, 0.000322,
)  # fmt: skip

# Share of videos with 1, 2 and 3 tags, among the 7,487 videos that have a tag (96 have none).
TAGS_PER_VIDEO_SHARES: tuple[float, ...] = (0.7608, 0.2349, 0.0043)

# Number of authors with exactly 1, 2, 3, ... videos (6,510 authors; mean 1.16 videos each,
# 87% of authors have one video in this sample of the catalog).
AUTHOR_SIZE_COUNTS: tuple[int, ...] = (
    5661, 718, 90, 24, 7, 5, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
)  # fmt: skip

# ``user_active_degree`` shares among the 27,285 users (the 6 "UNKNOWN" users are dropped and
# the 15 "30day_retention" and 11 "day_new" users are merged into "new"). The second number of
# each level is an ASSUMED relative session rate (a full_active user opens the feed 8x as often
# as a low_active one); KuaiRand-Pure's side tables give no counts.
ACTIVITY_LEVELS: dict[str, tuple[float, float]] = {
    "full_active": (0.65835, 1.0),
    "high_active": (0.22574, 0.5),
    "middle_active": (0.07819, 0.25),
    "2_14_day_new": (0.02328, 0.2),
    "low_active": (0.011, 0.125),
    "single_low_active": (0.00249, 0.06),
    "new": (0.00095, 0.1),
}


def measure_kuairand(directory: str | Path) -> dict[str, Any]:
    """Recompute every constant of this module from the KuaiRand-Pure side tables.

    Run by hand when the constants are to be checked or refreshed; the simulator itself never
    calls it.
    """
    import pyarrow.csv as pacsv

    d = Path(directory)
    videos = pacsv.read_csv(d / "video_features_basic_pure.csv")
    users = pacsv.read_csv(d / "user_features_pure.csv")

    duration = np.array(videos.column("video_duration").to_pylist(), dtype=np.float64)
    duration = duration[np.isfinite(duration)] / 1000.0
    quantiles = np.quantile(duration, np.linspace(0.0, 1.0, 21))

    tag_lists = [
        [t for t in str(v).split(",") if t.strip()]
        for v in videos.column("tag").to_pylist()
        if v is not None
    ]
    tag_counts = Counter(t for tags in tag_lists for t in tags)
    total = sum(tag_counts.values())
    shares = sorted((c / total for c in tag_counts.values()), reverse=True)
    per_video = Counter(len(t) for t in tag_lists if t)
    tagged = sum(per_video.values())

    authors = Counter(videos.column("author_id").to_pylist())
    size_counts = np.bincount(np.array(list(authors.values())))[1:]

    levels = Counter(users.column("user_active_degree").to_pylist())
    levels.pop("UNKNOWN", None)
    levels["new"] = levels.pop("30day_retention", 0) + levels.pop("day_new", 0)
    n_users = sum(levels.values())

    return {
        "duration_quantiles_s": [round(float(q), 3) for q in quantiles],
        "duration_log_mean_sd": [float(np.log(duration).mean()), float(np.log(duration).std())],
        "videos_with_duration": int(len(duration)),
        "tag_shares": [round(s, 6) for s in shares],
        "tags_per_video_shares": [round(per_video.get(k, 0) / tagged, 4) for k in (1, 2, 3)],
        "videos_with_tag": tagged,
        "author_size_counts": size_counts.tolist(),
        "authors": len(authors),
        "activity_level_shares": {k: round(v / n_users, 5) for k, v in levels.most_common()},
    }
