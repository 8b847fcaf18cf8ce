"""The online test's report: ``report.md`` (tables), ``report.json`` (every number), one PNG
per metric (each arm over the days with its 95% interval band) and ``log.parquet``.

Everything above the report's last section is a function of the logs alone, so a resumed run
writes the same text; the last section holds what depends on timing (the reloads' load, wall
times).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onerec.online import logbook
from onerec.online.config import CONTROL
from onerec.online.metrics import (
    FEED_METRICS,
    USER_METRICS,
    cold_items,
    difference,
    summarize,
    user_drift,
)
from onerec.online.traffic import day_span

if TYPE_CHECKING:
    from onerec.online.loop import OnlineTest

TIMING_SECTION = "## Run facts that depend on timing"
PAPER = ("The paper (OneRec, arXiv 2502.18965, Kuaishou) served 1% of its traffic with OneRec "
         "beside the production cascade and measured total watch time +0.57% (OneRec-0.1B), +1.21% "
         "(OneRec-1B) and +1.68% (OneRec-1B with IPA). Those are real users on a platform of "
         "hundreds of millions of videos, against a cascade tuned for years. Here the users, "
         "the catalog and the cascade are a small simulation, and the cascade is the "
         "simulator's logging policy: the two sets of numbers are not comparable, only the "
         "direction and the method are.")  # fmt: skip
LABELS = {"watch_time": "watch time per user (s, oracle)", "vtr": "view-through rate",
          "wtr": "follow rate", "ltr": "like rate", "coverage": "catalog coverage",
          "gini": "exposure Gini", "cold_share": "cold-item share",
          "interest_match": "interest match"}  # fmt: skip


def _ci(r: dict[str, float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(r['mean'])} [{fmt.format(r['lo'])}, {fmt.format(r['hi'])}]"


def _diff(d: dict[str, float]) -> str:
    pct = [100 * d[k] for k in ("rel", "rel_lo", "rel_hi")]
    return (f"{d['diff']:+.1f} s [{d['lo']:+.1f}, {d['hi']:+.1f}]; "
            f"{pct[0]:+.2f}% [{pct[1]:+.2f}, {pct[2]:+.2f}]")  # fmt: skip


def _fmt(metric: str) -> str:
    return "{:.1f}" if metric == "watch_time" else "{:.4f}"


def verdict(summary: dict[str, Any], arm: str = "onerec-ipa") -> str:
    """Whether ``arm`` beats the control on watch time per user over the test, in words."""
    d = summary["versus_control"].get(arm, {}).get("watch_time")
    if d is None:
        return f"{arm} is not an arm of this test."
    if d["lo"] > 0:
        word = "beats"
    elif d["hi"] < 0:
        word = "loses to"
    else:
        word = "does not clearly differ from"
    return (f"**{arm} {word} the cascade** on ground-truth watch time per user over the test: "
            f"{_diff(d)} (difference, 95% interval over users).")  # fmt: skip


def markdown(test: "OnlineTest", summary: dict[str, Any], versions: list[dict[str, Any]],
             syncs: list[dict[str, Any]], drift: dict[int, float], counts: dict[str, int],
             alignment: list[dict[str, Any]]) -> str:  # fmt: skip
    c, p = test.config, test.platform
    q = c.quickstart()
    arms = c.arms
    lines = [
        "# Online A/B test on the simulated platform",
        "",
        f"Quickstart platform ({q.num_users:,} users, {q.num_items:,} videos, seed {c.seed}), "
        f"{c.days} simulated days after its 30 logged days; about {c.sessions_per_day} "
        f"sessions per user per day, {c.session_items} videos per session in every arm. Users "
        f"are split by a salted hash of their id: {', '.join(arms)}. OneRec arms are served over "
        f"HTTP by `onerec serve` processes (beam {c.beam_size}); the cascade is the simulator's "
        "logging policy. Every shown session is answered by the simulator (user drift included) "
        "and graded exactly by its oracle. Intervals: 95%, users as the unit.",
        "",
        f"{counts['sessions']:,} sessions, {counts['exposures']:,} exposures logged; "
        f"{counts['fallback']} sessions fell back to the cascade (no watched history: "
        f"{counts['no_history']}, failed requests: {counts['failed']}).",
        "",
        verdict(summary),
        "",
        "## Over the test",
        "",
        "| arm | users | watch time per user (s) | vs cascade | vtr | wtr | ltr |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        o = summary["overall"][a]
        vs = "-" if a == CONTROL else _diff(summary["versus_control"][a]["watch_time"])
        lines.append(f"| {a} | {o['watch_time']['users']} | {_ci(o['watch_time'])} | {vs} | "
                     f"{_ci(o['vtr'], '{:.4f}')} | {_ci(o['wtr'], '{:.5f}')} | "
                     f"{_ci(o['ltr'], '{:.4f}')} |")  # fmt: skip
    lines += ["", "## Ablation: what each part adds (watch time per user over the test)", "",
              "| step | arms compared | difference |", "|---|---|---|"]  # fmt: skip
    pairs = [("daily retraining (NTP)", "onerec-ntp", "onerec-frozen"),
             ("IPA (alignment, on top of retraining)", "onerec-ipa", "onerec-ntp"),
             ("OneRec, never retrained, vs the cascade", "onerec-frozen", CONTROL)]  # fmt: skip
    for label, a, b in pairs:
        if a in arms and b in arms:
            d = difference(summary["overall"][a]["watch_time"], summary["overall"][b]["watch_time"])
            lines.append(f"| {label} | {a} - {b} | {_diff(d)} |")
    if alignment:
        lines += ["", "IPA iterations of the `onerec-ipa` arm (RM: reward model; its held-out swt "
                  "Spearman beside the per-item-average baseline's):", "",
                  "| when | pairs | RM reward chosen | RM reward rejected | RM swt Spearman | "
                  "baseline |", "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['when']} | {r['pairs']} | {r['chosen']:.3f} | {r['rejected']:.3f} | "
                  f"{r['rm_swt_spearman']:.3f} | {r['item_average_swt_spearman']:.3f} |"
                  for r in alignment]  # fmt: skip
    lines += ["", "## Per day", "", "Watch time per user (s) of the users who came that day:", "",
              "| day | " + " | ".join(arms) + " | onerec-ipa vs cascade |",
              "|---" * (len(arms) + 2) + "|"]  # fmt: skip
    for d in summary["days"]:
        cells = [_ci(summary["daily"][a][d]["watch_time"]) if d in summary["daily"][a] else "-"
                 for a in arms]  # fmt: skip
        vs = summary["versus_control_daily"].get("onerec-ipa", {}).get(d)
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {_diff(vs) if vs else '-'} |")
    lines += ["", "## Feedback loops", "",
              "Coverage: share of the catalog shown that day; Gini of exposures over the catalog; "
              "cold-item share: exposures on the bottom quarter of videos by initial-log "
              "exposures (the simulator has no uploads; these stand for fresh videos); interest "
              "match: weight of the shown video's tag in the user's interests at that moment. "
              "User drift: mean L1 distance of users' interest weights from the end of the log "
              "(the same for every arm).", "",
              "| day | arm | coverage | Gini | cold share | interest match |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for d in summary["days"]:
        for a in arms:
            r = summary["daily"][a].get(d)
            if r:
                cells = " | ".join(_ci(r[m], "{:.3f}") for m in FEED_METRICS)
                lines.append(f"| {d} | {a} | {cells} |")
    lines += ["", "| day | user drift |", "|---|---|"]
    lines += [f"| {d} | {v:.3f} |" for d, v in drift.items()]
    first_last = {a: (summary["daily"][a].get(summary["days"][0]),
                      summary["daily"][a].get(summary["days"][-1])) for a in arms}  # fmt: skip
    narrowing = [a for a, (f, l) in first_last.items() if f and l and a != CONTROL
                 and l["coverage"]["hi"] < f["coverage"]["lo"]]  # fmt: skip
    lines += ["", ("Catalog narrowing (day-last coverage interval below day-first): "
                   + (", ".join(narrowing) if narrowing else "none of the OneRec arms") + ".")]
    lines += ["", "## Traffic by model version", "",
              "Every logged response records the version that produced it.", "",
              "| arm | day | version | sessions |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {v['arm']} | {v['day']} | {v['version']} | {v['sessions']} |" for v in versions]
    lines += ["", "## The paper's online numbers, for orientation", "", PAPER, ""]
    lines += [TIMING_SECTION, "",
              "Parameter sync: at the start of each day every retrained arm's new model is "
              "written into its server's run folder and `POST /admin/reload` is asked for while "
              "clients keep sending requests (which of them the old and which the new model "
              "answered depends on timing). The logged traffic of a day is served after the "
              "swap, by that day's version.", "",
              "| day | arm | outcome | previous -> version | requests during the reload | "
              "failed | versions seen |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in syncs:
        seen = ", ".join(f"{k}: {v}" for k, v in s["versions"].items())
        lines.append(f"| {s['day']} | {s['arm']} | {s['outcome']} | {s['previous']} -> "
                     f"{s['version']} | {s['requests']} | {s['failed']} | {seen} |")  # fmt: skip
    wall = ", ".join(f"{k} {v:.0f}s" for k, v in test.timings.items())
    lines += ["", f"Seconds in this call: {wall}.", ""]
    return "\n".join(lines)


def alignment_records(out: Path) -> list[dict[str, Any]]:
    """Each IPA iteration of the test (before day 1, then after each day): its pairs, the RM's
    mean reward of chosen and rejected sessions, and the RM's held-out swt Spearman beside the
    per-item-average baseline's."""
    folders = [("before day 1", out / "setup")] + [
        (f"after day {int(f.parent.name[4:])}", f)
        for f in sorted(out.glob("days/day_*/onerec-ipa"))]  # fmt: skip
    records = []
    for when, folder in folders:
        state, rm = folder / "ipa" / "state.json", folder / "reward_model" / "evaluation.json"
        if not (state.exists() and rm.exists()):
            continue
        it = json.loads(state.read_text())["iterations"][-1]
        ev = json.loads(rm.read_text())
        records.append({
            "when": when, "pairs": it["pairs"],
            "chosen": it["mean_chosen_reward"], "rejected": it["mean_rejected_reward"],
            "rm_swt_spearman": ev["reward_model"]["swt_spearman"],
            "item_average_swt_spearman": ev["item_average"]["swt_spearman"],
        })  # fmt: skip
    return records


def plot(summary: dict[str, Any], arms: tuple[str, ...], folder: Path) -> list[str]:
    """One PNG per metric: each arm's daily value and its 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for metric in USER_METRICS + FEED_METRICS:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for a in arms:
            days = [d for d in summary["days"] if d in summary["daily"][a]]
            rows = [summary["daily"][a][d][metric] for d in days]
            mean = [r["mean"] for r in rows]
            ax.plot(days, mean, marker="o", label=a)
            ax.fill_between(days, [r["lo"] for r in rows], [r["hi"] for r in rows], alpha=0.2)
        ax.set_xlabel("simulated day")
        ax.set_ylabel(LABELS[metric])
        ax.set_xticks(summary["days"])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"{metric}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def write_report(test: "OnlineTest") -> dict[str, Any]:
    """Grade the logged sessions and write the report files; returns ``report.json``'s dict."""
    c, p, out = test.config, test.platform, test.out
    sessions = logbook.read_chunks(out / "sessions")
    if sessions is None:
        raise RuntimeError("no session was logged")
    exposures = logbook.combine(out / "log", out / "log.parquet")
    cold = cold_items(p.dataset.log.item, p.sim.num_items)
    summary = summarize(p.sim, sessions, c.arms, CONTROL, cold)
    end_of_log = day_span(p.sim, 1)[0]
    drift = {d: user_drift(p.sim, end_of_log, float(np.mean(day_span(p.sim, d))))
             for d in summary["days"]}  # fmt: skip
    table = sessions.group_by(["arm", "day", "version"]).aggregate([("session", "count")])
    versions = sorted(({"arm": r["arm"], "day": r["day"], "version": r["version"],
                        "sessions": r["session_count"]} for r in table.to_pylist()),
                      key=lambda r: (c.arms.index(r["arm"]), r["day"], r["version"]))  # fmt: skip
    syncs = [json.loads(f.read_text()) for f in sorted((out / "sync").glob("*.json"))]
    version = np.asarray(sessions.column("version").to_pylist())
    counts = {"sessions": sessions.num_rows, "exposures": exposures,
              "fallback": int(sessions.column("fallback").to_numpy().sum()),
              "no_history": int((version == "no-history").sum()),
              "failed": int(np.char.startswith(version.astype(str), "failed").sum())}  # fmt: skip
    alignment = alignment_records(out)
    text = markdown(test, summary, versions, syncs, drift, counts, alignment)
    (out / "report.md").write_text(text)
    plots = plot(summary, c.arms, out / "plots")
    result = _jsonable({
        "config": c.to_dict(), "summary": summary, "verdict": verdict(summary),
        "drift": drift, "versions": versions, "sync": syncs, "counts": counts,
        "alignment": alignment,
        "reloads": {"swapped": sum(s["outcome"] == "swapped" for s in syncs),
                    "requests_during_reloads": sum(s["requests"] for s in syncs),
                    "failed_during_reloads": sum(s["failed"] for s in syncs)},
        "seconds": test.timings, "plots": plots,
    })  # fmt: skip
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    print(text)
    return result
