"""Iterative Preference Alignment on the quickstart platform, graded by the RM and by the oracle.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/alignment.py --scale default \
        --eval-users 300 --iterations 2 --r-dpo 0.1 --out benchmarks/results

Stages: simulate the platform of ``QuickstartConfig.scale(--scale)`` and its log; semantic IDs
from the content embeddings; the NTP OneRec trained on the watched exposures exactly as the
quickstart trains it; the reward model on every logged session (content embedding and log
duration as item side features), graded on held-out logged sessions beside the per-item-average
baseline; ``--iterations`` IPA iterations drawing ``--r-dpo`` of the training users who are not
evaluation users; then, for ``--eval-users`` held-out users (never drawn for pairs), K sessions
per model graded by the RM and the oracle with paired differences against the NTP model, the
RM-vs-oracle rank correlations, the next-item Recall@10 on those users' test items, and
best-of-N reranking of the NTP model's N beams by the RM (and by the oracle: the ceiling).
Writes ``alignment<tag>.json`` and ``alignment<tag>.md`` (commit, machine, config, seconds).
``--run-dir`` keeps every stage's run folder; a second call with the same folder and another
``--tag`` reuses the NTP model and the reward model (finished runs are reloaded, not retrained).

``--simulator CONFIG.json`` runs on another platform (a ``SimulatorConfig`` file; its sizes
replace the scale's); ``--baselines`` adds popularity, SASRec, true tastes and random, sampled
and graded as the quickstart does, to the table. ``--summarize`` gathers every run into
``alignment_summary.md``; ``--summarize-platforms DIR`` the runs in DIR (one per platform) into
``alignment_platforms.{md,json}``; ``--summarize-objectives`` the runs that weight the RM's
towers differently into ``alignment_objectives.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from onerec.alignment.evaluate import (alignment_table, generate_and_grade, grade_sessions,
                                       markdown_table)  # fmt: skip
from onerec.alignment.ipa import align
from onerec.alignment.pairs import OracleReward, beam_sessions
from onerec.alignment.reward_model import catalog_fingerprint
from onerec.alignment.reward_training import REWARD_SETTINGS, with_weights
from onerec.baselines import Popularity, SASRec
from onerec.data.ragged import Ragged
from onerec.data.schema import Dataset
from onerec.data.splits import leave_one_out
from onerec.evaluation import evaluate
from onerec.quickstart import (QuickstartConfig, ipa_config, reference_sessions, train_baselines,
                               train_reward)  # fmt: skip
from onerec.runinfo import environment
from onerec.simulator import Simulator, SimulatorConfig
from onerec.tokenizer.pipeline import TokenizeConfig, save_tokenization, tokenize
from onerec.training import TrainConfig
from onerec.training.pipeline import METRICS, ranking_metrics, train_on_dataset

# the reward models' folders in --run-dir (their settings: REWARD_SETTINGS): each variant trains
# into its own folder, so a new variant is trained, not reloaded from another's
RM_FOLDERS = {"v1": "reward_model", "v2": "reward_model_v2", "v3": "reward_model_v3"}


def recorded_ntp_settings(run: Path, train_config: TrainConfig, model: dict) -> tuple[TrainConfig, dict]:
    """The settings the NTP run in ``run`` was made with, when it exists: later changes of the
    library's defaults must not stop the benchmark from reusing it (the trainer refuses to
    resume a run under other settings)."""
    if not (run / "model_config.json").exists():
        return train_config, model
    saved = json.loads((run / "model_config.json").read_text())
    saved.pop("level_sizes")  # comes from the semantic IDs
    recorded = json.loads((run / "train_config.json").read_text())
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in recorded.items() if k in known}), saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="default", choices=["default", "tiny"])
    p.add_argument("--simulator", type=Path, default=None, metavar="CONFIG.json",
                   help="the platform: a SimulatorConfig JSON file (its sizes replace the scale's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-users", type=int, default=300)
    p.add_argument("--sessions-per-user", type=int, default=8)
    p.add_argument("--onerec-epochs", type=int, default=None, help="default: the scale's")
    p.add_argument("--rm", choices=sorted(REWARD_SETTINGS), default="v3",
                   help="reward-model settings (REWARD_SETTINGS); each trains into its own folder "
                   "of --run-dir, so a new variant is trained, not reloaded")
    # the defaults are the measured recipe (docs/alignment.md): RM v3, three iterations at r_DPO
    # 0.2 and lambda 0.3
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--r-dpo", type=float, default=0.2)
    p.add_argument("--n-sessions", type=int, default=128)
    p.add_argument("--strategy", default="best_worst")
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--dpo-weight", type=float, default=0.3)
    p.add_argument("--ntp-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--pairs-per-step", type=int, default=16)
    p.add_argument("--best-of-n", type=int, default=128, help="0: skip the reranking rows")
    p.add_argument("--reward", choices=["rm", "oracle"], default="rm",
                   help="what scores the sampled sessions: the reward model, or the simulator's "
                   "exact reward (the upper bound of alignment)")
    p.add_argument("--rm-weights", default=None, metavar="SWT,VTR,WTR,LTR",
                   help="combine the RM's towers with these weights when scoring pairs (the "
                   "multi-objective knob; grading keeps the RM's own weights)")
    p.add_argument("--control", action="store_true",
                   help="also continue the NTP model for the same steps without DPO (lambda = 0):"
                   " separates the DPO term's effect from the extra NTP training")
    p.add_argument("--baselines", action="store_true",
                   help="also grade popularity, SASRec (CE), true tastes and random, sampled as "
                   "in the quickstart (SASRec trains once into --run-dir/baselines)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/alignment"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="")
    p.add_argument("--summarize", action="store_true",
                   help="only gather every alignment*.json in --out into alignment_summary.md")
    p.add_argument("--summarize-platforms", type=Path, default=None, metavar="DIR",
                   help="only gather the runs in DIR (one per platform) into "
                   "--out/<--platforms-name>.{md,json}")
    p.add_argument("--platforms-name", default="alignment_platforms",
                   help="file name (no suffix) of the --summarize-platforms table")
    p.add_argument("--summarize-objectives", action="store_true",
                   help="only gather the runs in --out with other RM tower weights into "
                   "alignment_objectives.{md,json,png}")
    args = p.parse_args()
    if args.summarize:
        (args.out / "alignment_summary.md").write_text(summarize(args.out))
        return
    if args.summarize_platforms:
        write_platforms(args.summarize_platforms, args.out, args.platforms_name)
        return
    if args.summarize_objectives:
        write_objectives(args.out)
        return
    cfg = QuickstartConfig.scale(args.scale, args.seed)
    if args.simulator:
        cfg = cfg.with_simulator(SimulatorConfig.load(args.simulator))
    if args.onerec_epochs:
        cfg = replace(cfg, onerec_epochs=args.onerec_epochs)
    run_dir, seconds = args.run_dir, {}
    run_dir.mkdir(parents=True, exist_ok=True)
    started, env = time.perf_counter(), environment()  # the commit the run starts from

    def lap(name: str, t: float) -> None:
        seconds[name] = round(time.perf_counter() - t, 1)
        print(f"[alignment] {name}: {seconds[name]}s", flush=True)

    t = time.perf_counter()
    sim = Simulator(cfg.platform())
    dataset = sim.generate_log(quality_report=False)
    log = dataset.log
    watched = log.take(log.signals["skip"] == 0)
    train_ds = Dataset("simulated-watched", watched, dataset.item_table, dataset.user_table,
                       dataset.meta)  # fmt: skip
    content = np.array(dataset.item_table.embedding("content"), dtype=np.float32)
    tokens = tokenize(content, TokenizeConfig(method="balanced", levels=cfg.levels, seed=cfg.seed))
    save_tokenization(run_dir / "semantic_ids", tokens, log.items, {"source": "content"})
    lap("simulate_and_tokenize", t)

    t = time.perf_counter()
    train_config = TrainConfig(session_items=cfg.session_items, history_length=cfg.history_length,
                               batch_size=cfg.onerec_batch_size, epochs=cfg.onerec_epochs,
                               eval_users=cfg.validation_users, seed=cfg.seed, device="cpu")  # fmt: skip
    train_config, overrides = recorded_ntp_settings(run_dir / "ntp", train_config, cfg.onerec_model)
    trained = train_on_dataset(train_ds, run_dir / "semantic_ids", run_dir / "ntp", train_config,
                               preset=cfg.onerec_preset, model_overrides=overrides,
                               progress=False)  # fmt: skip
    ntp, ids, split = trained.model.eval(), trained.semantic_ids, trained.split
    lap("train_ntp", t)

    t = time.perf_counter()
    fingerprint = catalog_fingerprint(log.items.raw)
    rm_run = train_reward(sim, dataset, replace(cfg, reward_settings=args.rm),
                          run_dir / RM_FOLDERS[args.rm], progress=False)  # fmt: skip
    rm = rm_run.model
    lap("train_reward_model", t)

    # held-out evaluation users, with their whole watched history (as the quickstart grades)
    rng = np.random.default_rng([cfg.seed, 1])
    test_users = np.sort(split.test.user)
    users = np.sort(rng.choice(test_users, min(args.eval_users, len(test_users)), replace=False))
    ordered = watched.sorted()
    history = Ragged.from_sorted_groups(ordered.user, ordered.item, ordered.num_users).take(users)

    t = time.perf_counter()
    align_config = ipa_config(
        cfg, lr=args.lr, iterations=args.iterations, r_dpo=args.r_dpo, n_sessions=args.n_sessions,
        strategy=args.strategy, negatives=args.negatives, beta=args.beta,
        dpo_weight=args.dpo_weight, ntp_weight=args.ntp_weight, pairs_per_step=args.pairs_per_step,
    )  # fmt: skip
    scorer = rm if args.reward == "rm" else OracleReward(sim)
    if args.rm_weights:
        weights = tuple(float(w) for w in args.rm_weights.split(","))
        scorer = with_weights(rm, weights)  # type: ignore[arg-type]
    aligned = align(ntp, ids, split, scorer, run_dir / f"ipa{args.tag}", align_config, exclude_users=users,
                    catalog=fingerprint, progress=False)  # fmt: skip
    lap("ipa", t)
    models = {"ntp": ntp, **{f"ipa-{i}": m for i, m in enumerate(aligned.models[1:], start=1)}}
    if args.control:
        t = time.perf_counter()
        control = align(ntp, ids, split, rm, run_dir / f"ntp_continued{args.tag}",
                        replace(align_config, dpo_weight=0.0), exclude_users=users,
                        catalog=fingerprint, progress=False)  # fmt: skip
        models.update({f"ntp-continued-{i}": m for i, m in enumerate(control.models[1:], start=1)})
        lap("ntp_continued", t)

    t = time.perf_counter()
    graded = generate_and_grade(models, ids, sim, rm, users, history, args.sessions_per_user,
                                cfg.session_items)  # fmt: skip
    rows = np.flatnonzero(np.isin(split.test.user, users))
    examples = split.test.take(rows)
    recall = {name: ranking_metrics(model, examples, ids, 20, exclude_seen=False)
              for name, model in models.items()}  # fmt: skip
    lap("evaluate", t)
    if args.baselines:
        t = time.perf_counter()
        references, baseline_recall = reference_rows(sim, watched, cfg, users, history,
                                                     run_dir / "baselines")  # fmt: skip
        graded.update({name: grade_sessions(sim, rm, users, history, s)
                       for name, s in references.items()})  # fmt: skip
        recall.update(baseline_recall)
        lap("baselines", t)
    table = alignment_table(graded, "ntp")
    for name, row in table.items():
        row["recall"] = recall.get(name)  # true-top and random rank nothing

    rerank = {}
    if args.best_of_n:
        t = time.perf_counter()
        rerank = best_of_n(sim, rm, ntp, ids, users, history, args.best_of_n, cfg.session_items)
        lap("best_of_n", t)

    seconds["total"] = round(time.perf_counter() - started, 1)
    markdown = markdown_table(table, "ntp")
    result = {
        "benchmark": "alignment", **env, "config": asdict(cfg),
        "align_config": asdict(align_config), "pair_reward": args.reward,
        "rm_weights": args.rm_weights, "rm_variant": args.rm, "eval_users": len(users),
        "simulator": cfg.platform().to_dict(),
        "sessions_per_user": args.sessions_per_user, "reward_model": rm_run.evaluation,
        "ipa": aligned.state, "table": table, "best_of_n": rerank,
        "best_of_n_size": args.best_of_n, "seconds": seconds,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"alignment{args.tag}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    (args.out / f"{name}.md").write_text(report(result, markdown))
    print(markdown)
    print(json.dumps(rerank, indent=1))


def reference_rows(
    sim: Simulator, watched, cfg: QuickstartConfig, users: np.ndarray, history: Ragged, folder: Path
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The quickstart's reference sessions (popularity, SASRec with CE, true tastes, random) for
    ``users``, and the baselines' next-item Recall@10 on those users' test items. SASRec is
    trained as the quickstart trains it, once: a finished run in ``folder`` is reloaded."""
    split = leave_one_out(watched, history_length=cfg.sasrec_length)
    weights = folder / "sasrec-ce.safetensors"
    if weights.exists():
        from safetensors.torch import load_file

        sasrec = SASRec(split.num_items, cfg.sasrec_length, loss="ce", dropout=cfg.sasrec_dropout)
        sasrec.load_state_dict(load_file(weights))
        baselines = {"popularity": Popularity.from_sequences(split.train_sequences(),
                                                             split.num_items, cfg.sasrec_length),
                     "sasrec-ce": sasrec.eval()}  # fmt: skip
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        baselines = train_baselines(split, cfg, folder.parent, progress=False)
    examples = split.test.take(np.flatnonzero(np.isin(split.test.user, users)))
    recall = {name: evaluate(examples, scores=model.scores(examples.history, examples.user),
                             ks=(5, 10)).summary(METRICS)
              for name, model in baselines.items()}  # fmt: skip
    return reference_sessions(sim, baselines, history, users, cfg), recall


def best_of_n(sim, rm, model, ids, users, history, n, m) -> dict[str, dict[str, float]]:
    """Oracle values of one session per user picked from the NTP model's ``n`` best beams: its
    top beam, the RM's favourite (reranking at inference) and the oracle's (the ceiling)."""
    items, _ = beam_sessions(model, ids, history, users, n, m)
    u = len(users)
    flat = items.reshape(u * n, m)
    keep = (flat >= 0).all(1).reshape(u, n)
    truth = sim.oracle(np.repeat(users, n), np.where(flat >= 0, flat, 0), time=1.0)
    predicted = rm.score(history.take(np.repeat(np.arange(u), n)), flat)
    pick = {
        "top_beam": np.zeros(u, dtype=np.int64),
        "rm_best_of_n": np.where(keep, predicted["reward"].reshape(u, n), -np.inf).argmax(1),
        "oracle_best_of_n": np.where(keep, truth["reward"].reshape(u, n), -np.inf).argmax(1),
    }
    out = {}
    for name, col in pick.items():
        out[name] = {metric: float(truth[metric].reshape(u, n)[np.arange(u), col].mean())
                     for metric in ("swt", "vtr", "wtr", "ltr", "reward")}  # fmt: skip
    return out


def alignment_runs(folder: Path) -> list[tuple[Path, dict]]:
    """Every run's JSON in ``folder`` (``alignment<tag>.json``), by name; the summaries written
    beside them (platforms, objectives) are left out."""
    runs = [(p, json.loads(p.read_text())) for p in sorted(folder.glob("alignment*.json"))]
    return [(p, r) for p, r in runs if r.get("benchmark") == "alignment"]


def _correlations(row: dict) -> str:
    """The RM~oracle rank correlation of the combined reward, pooled / within user (runs
    recorded before the within-user one: "-")."""
    within = row.get("within_user_correlation", {}).get("reward")
    return f"{row['rank_correlation']['reward']:.2f} / " + ("-" if within is None else f"{within:.2f}")


def summarize(folder: Path) -> str:
    """One table over every run in ``folder``: each aligned model against its run's NTP model,
    by the oracle (mean per user, paired difference and standard error) and by the RM."""
    head = ("| run (tag) | model | pairs by | r_DPO | lambda / NTP weight | oracle swt | oracle vtr "
            "| oracle ltr | oracle wtr | oracle reward | RM reward "
            "| RM~oracle Spearman (reward): pooled / within user "
            "| Recall@10 | IPA s/iteration |")
    lines = [head, "|---" * 14 + "|"]

    graded_by: set[tuple] = set()  # the (RM variant, seed) pairs whose NTP row is listed
    for path, r in alignment_runs(folder):
        a = r["align_config"]
        seconds = [it["seconds_this_call"] for it in r["ipa"]["iterations"]
                   if it["seconds_this_call"] > 1]  # fmt: skip
        per_iteration = f"{np.mean(seconds):.0f}" if seconds else "-"
        variant = r.get("rm_variant", "v1")
        by = r.get("pair_reward", "rm")
        by += f" {variant}" if by == "rm" and variant != "v1" else ""
        by += f" w={r['rm_weights']}" if r.get("rm_weights") else ""
        by += "" if a["strategy"] == "best_worst" else f", {a['strategy']} K={a['negatives']}"
        for model, row in r["table"].items():
            if model == "ntp":
                key = (variant, r["config"]["seed"])
                if key in graded_by:
                    continue  # the same NTP model in every run of a seed: listed once per RM
                graded_by.add(key)
            setting = f"{by} | {a['r_dpo']} | {a['dpo_weight']} / {a['ntp_weight']}"
            if model == "ntp":
                setting = ("-" if variant == "v1" else f"- (graded by RM {variant})") + " | - | -"
            elif model.startswith("ntp-continued"):
                setting = f"- | - | 0 / {a['ntp_weight']}"
            elif model in REFERENCE_ROWS:
                setting = "- (reference, sampled as in the quickstart) | - | -"
            lines.append(
                f"| {path.stem[len('alignment'):] or '(first)'} | {model} | {setting} "
                f"| {_change(row, 'oracle_swt_mean', '{:.1f}')} "
                f"| {_change(row, 'oracle_vtr_mean', '{:.4f}')} | {_change(row, 'oracle_ltr_mean', '{:.4f}')} "
                f"| {_change(row, 'oracle_wtr_mean', '{:.5f}')} | {_change(row, 'oracle_reward_mean', '{:.3f}')} "
                f"| {_change(row, 'rm_reward_mean', '{:.3f}')} | {_correlations(row)} "
                f"| {_recall(row)} | {per_iteration} |"
            )  # fmt: skip
        for name, values in r.get("best_of_n", {}).items():  # one session per user, no pairing
            by_what = {"top_beam": "NTP top beam of N",
                       "rm_best_of_n": f"best of N by RM {variant}",
                       "oracle_best_of_n": "best of N by the oracle (ceiling)"}[name]  # fmt: skip
            n = r.get("best_of_n_size", 128)  # runs before it was recorded: the default
            lines.append(
                f"| {path.stem[len('alignment'):] or '(first)'} | {by_what}, N = {n} | - | - | - "
                f"| {values['swt']:.1f} | {values['vtr']:.4f} | {values['ltr']:.4f} "
                f"| {values['wtr']:.5f} | {values['reward']:.3f} | - | - | - | - |"
            )  # fmt: skip
    return (
        "# Alignment runs on the quickstart platform (default scale), one table\n\n"
        "Every aligned model against the same NTP model on the same 200 held-out users (8 beams "
        "each): mean per user, in brackets the paired relative difference and its size in "
        "standard errors. `ntp-continued-t`: the NTP model trained for the same steps without "
        "the DPO term (the control). RM reward and the RM~oracle correlation are by the run's "
        "reward model: `rm v2` (rate features, `--rm v2`) or, unmarked, the first RM (`--rm v1`); "
        "the NTP model is listed once per RM (and seed: `--seed 1` is another platform, NTP model "
        "and RM). Reference rows (popularity, SASRec, true tastes, "
        "random; `--baselines`) are sampled and graded as in the quickstart. Best-of-N rows: "
        "one session per user picked among the NTP model's N beams (no paired difference). "
        "Written by "
        "`python benchmarks/alignment.py --summarize`.\n\n"
        + "\n".join(lines) + "\n"
    )


def _recall(row: dict) -> str:
    return "-" if row.get("recall") is None else f"{row['recall']['recall@10']:.3f}"


def _change(row: dict, key: str, fmt: str) -> str:
    """``value (+x.x%, y.y se)`` against the run's NTP model."""
    d = row.get(f"{key}_vs_ntp")
    value = fmt.format(row[key])
    if d is None:
        return value
    return f"{value} ({100 * d['relative']:+.1f}%, {d['diff'] / d['se']:+.1f} se)"


def _changed_fields(config: dict, default: dict, where: str = "") -> list[str]:
    """``name=value`` for every simulator field that differs from ``default`` (sizes aside)."""
    out = []
    for name, value in config.items():
        if isinstance(value, dict):
            out += _changed_fields(value, default[name], f"{where}{name}.")
        elif value != default[name] and name not in ("num_users", "num_items"):
            out.append(f"{where}{name}={value}")
    return out


def write_platforms(folder: Path, out: Path, name: str = "alignment_platforms") -> None:
    """``<name>.{md,json}``: per platform (one run in ``folder`` each), the NTP model and every
    IPA iteration by the oracle, paired against the NTP model."""
    rows = []
    for path, r in alignment_runs(folder):
        sim = r["simulator"]
        default = SimulatorConfig().to_dict()
        changed = _changed_fields(sim, default) or ["(default platform)"]
        for model, row in r["table"].items():
            if not (model == "ntp" or model.startswith("ipa-")):
                continue
            rows.append({
                "platform": path.stem[len("alignment_"):], "changed": changed,
                "users": sim["users"]["num_users"], "items": sim["catalog"]["num_items"],
                "eval_users": r["eval_users"], "model": model,
                "r_dpo": r["align_config"]["r_dpo"], "rm_variant": r.get("rm_variant", "v1"),
                "dpo_weight": r["align_config"]["dpo_weight"],
                "rm": {k: round(v, 3) for k, v in r["reward_model"]["reward_model"].items()},
                "rm_item_average": {k: round(v, 3) for k, v in
                                    r["reward_model"]["item_average"].items()},
                **{k: row[k] for k in row if k.startswith("oracle_") and k.endswith("_mean")},
                **{k: row[k] for k in row if k.startswith("oracle_") and k.endswith("_vs_ntp")},
                "rank_correlation": row["rank_correlation"], "recall": row["recall"],
                "seconds": r["seconds"],
            })  # fmt: skip
    lines = ["| platform | what differs from the default | users / items | RM, lambda | model "
             "| oracle swt | oracle vtr | oracle ltr | oracle reward | RM~oracle (reward) "
             "| Recall@10 |", "|---" * 11 + "|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['platform']} | {', '.join(row['changed'])} | {row['users']:,} / "
            f"{row['items']:,} | {row['rm_variant']}, {row['dpo_weight']} | {row['model']} "
            f"| {_change(row, 'oracle_swt_mean', '{:.1f}')} "
            f"| {_change(row, 'oracle_vtr_mean', '{:.4f}')} "
            f"| {_change(row, 'oracle_ltr_mean', '{:.4f}')} "
            f"| {_change(row, 'oracle_reward_mean', '{:.3f}')} "
            f"| {row['rank_correlation']['reward']:.2f} | {_recall(row)} |"
        )  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(
        {"benchmark": "alignment_platforms", "source": str(folder), "rows": rows}, indent=2,
        default=float))  # fmt: skip
    (out / f"{name}.md").write_text(
        "# IPA on other platform configurations, graded by the oracle\n\n"
        f"One run of `benchmarks/alignment.py --simulator CONFIG.json` per platform (configs in "
        f"benchmarks/configs/, runs in {folder}); each IPA model against the same platform's NTP "
        "model on its held-out users: mean per user, in brackets the paired relative change and "
        "its size in standard errors. Written by "
        f"`python benchmarks/alignment.py --summarize-platforms {folder} --platforms-name "
        f"{name}`.\n\n"
        + "\n".join(lines) + "\n"
    )


REFERENCE_ROWS = ("popularity", "sasrec-ce", "true-top", "random")
OBJECTIVE_ROWS = ("ntp", *REFERENCE_ROWS)
# the IPA setting every weighting is run with (one iteration each; the ipa-1 row of longer runs)
OBJECTIVE_SETTING = {"r_dpo": 0.2, "strategy": "best_worst", "dpo_weight": 0.1, "ntp_weight": 1.0}
OBJECTIVE_RM = "v2"  # the reward model the weightings were measured with


def write_objectives(out: Path) -> None:
    """``alignment_objectives.{md,json,png}``: the RM's tower weights as the knob. One IPA
    iteration at r_DPO 0.2 with RM v2 under each weighting (the runs in ``out`` with that
    setting), with the NTP model and the reference rows as points: oracle swt against ltr and
    wtr."""
    points: dict[str, dict] = {}
    for path, r in alignment_runs(out):
        a = r["align_config"]
        if (r.get("rm_variant") != OBJECTIVE_RM or r.get("pair_reward", "rm") != "rm"
                or any(a[k] != v for k, v in OBJECTIVE_SETTING.items())
                or "ipa-1" not in r["table"]):  # fmt: skip
            continue
        weights = r.get("rm_weights") or "1,1,1,1"
        points[f"IPA, weights {weights}"] = {"run": path.name, **r["table"]["ipa-1"]}
        for name in OBJECTIVE_ROWS:
            if name in r["table"] and name not in points:
                points[name] = {"run": path.name, **r["table"][name]}
    aligned = sorted((k for k in points if k.startswith("IPA")),
                     key=lambda k: [-float(w) for w in k.split()[-1].split(",")])  # fmt: skip
    points = {k: points[k] for k in ["ntp", *aligned, *REFERENCE_ROWS] if k in points}
    keys = ("swt", "vtr", "wtr", "ltr", "reward")
    lines = ["| model (RM weights swt,vtr,wtr,ltr) | " + " | ".join(f"oracle {k}" for k in keys)
             + " | RM~oracle (reward) | Recall@10 | run |", "|---" * 9 + "|"]  # fmt: skip
    for name, row in points.items():
        formats = {"swt": "{:.1f}", "reward": "{:.3f}", "wtr": "{:.5f}"}
        cells = [_change(row, f"oracle_{k}_mean", formats.get(k, "{:.4f}")) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {row['rank_correlation']['reward']:.2f} | {_recall(row)} "
                     f"| {row['run']} |")  # fmt: skip
    (out / "alignment_objectives.json").write_text(json.dumps(
        {"benchmark": "alignment_objectives", "points": points}, indent=2, default=float))
    (out / "alignment_objectives.md").write_text(
        "# Multi-objective alignment: the RM's tower weights as the knob\n\n"
        "One IPA iteration (r_DPO 0.2, RM v2, best against worst, lambda 0.1) per weighting of "
        "the RM's towers when it picks pairs (`--rm-weights swt,vtr,wtr,ltr`; grading keeps the "
        "RM's own 1,1,1,1), on the quickstart platform's 200 held-out users; the NTP model and "
        "the reference rows as points. In brackets: the paired change against the NTP model "
        "and its size in standard errors. Plot: alignment_objectives.png. Written by "
        "`python benchmarks/alignment.py --summarize-objectives`.\n\n" + "\n".join(lines) + "\n"
    )
    plot_objectives(points, out / "alignment_objectives.png")


def plot_objectives(points: dict[str, dict], path: Path) -> None:
    """Two panels: oracle swt against ltr, and against wtr; one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, signal, label in zip(axes, ("ltr", "wtr"), ("like rate", "follow rate")):
        for name, row in points.items():
            aligned = name.startswith("IPA")
            ax.scatter(row[f"oracle_{signal}_mean"], row["oracle_swt_mean"],
                       marker="o" if aligned else "s", color="C0" if aligned else "C1")  # fmt: skip
            ax.annotate(name.replace("IPA, weights ", "w="), (row[f"oracle_{signal}_mean"],
                        row["oracle_swt_mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        ax.set(xlabel=f"oracle {label} (mean per session)",
               ylabel="oracle session watch time (s)")  # fmt: skip
        ax.grid(alpha=0.3)
    fig.suptitle("IPA under several RM weightings (circles) vs the NTP model and references "
                 "(squares)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict, markdown: str) -> str:
    rm = result["reward_model"]
    lines = [
        "# Iterative Preference Alignment on the quickstart platform",
        "",
        f"Commit {result['commit']}, {result['machine']['cpu']} ({result['machine']['torch_threads']}"
        f" torch threads), {result['time_utc']}. Scale: {result['config']['num_users']} users, "
        f"{result['config']['num_items']} videos; {result['eval_users']} held-out users, "
        f"{result['sessions_per_user']} sessions each per model. Seconds: {result['seconds']}.",
        "",
        "Reward model on held-out logged sessions (RM vs per-item-average baseline): "
        + ", ".join(f"{k} {rm['reward_model'][k]:.3f} vs {rm['item_average'][k]:.3f}"
                    for k in rm["reward_model"]),
        "",
        markdown,
        "",
        "Recall@10 of the next (test) item on the same users: "
        + ", ".join(f"{k} {_recall(v)}" for k, v in result["table"].items()),
        "",
        "Rank correlation RM vs oracle on beam-generated sessions (per model): "
        + "; ".join(f"{k}: " + ", ".join(f"{s} {c:.2f}" for s, c in v["rank_correlation"].items())
                    for k, v in result["table"].items()),
        "",
        "Best of N (one session per user, oracle values): "
        + json.dumps(result["best_of_n"]),
        "",
        "IPA iterations: " + json.dumps(result["ipa"]),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
