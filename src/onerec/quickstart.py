"""``make quickstart``: simulate a platform, train OneRec and two baselines on its logs, and grade
the sessions they generate against the simulator's ground truth.

Stages (each prints ``[quickstart] <stage> ... done in Xs``; training and generation show
progress bars); each is one function below, and :func:`run` calls them in order:

1. **simulate** a platform (:class:`onerec.simulator.Simulator`, default 2,000 users, 3,000
   videos, about 150k logged exposures over 30 days) and its log;
2. **filter**: the paper's high-quality session filter, counts printed. Its sessions are too few
   here (about 20% of sessions, a quarter of the users lost) to train on, so the *training
   data* of every model is the **watched exposures** (not skipped, watched beyond
   ``skip_seconds``): positively engaged items, as the paper's history. Training on every
   exposure would imitate the logging policy, skips included. The same rows feed OneRec,
   popularity and SASRec (``train_on="high_quality"`` or ``"all"`` to change it for all);
3. **split**: leave-one-out over the watched sequences (last item test, second-to-last
   validation); models train on the rest and select their epoch on validation Recall@10;
4. **semantic IDs** of every video from its content embedding (the item table's ``content``
   column, 64-d; balanced residual k-means, 3 levels);
5. **train OneRec** (next-5-item session targets, the ``small`` preset narrowed to d_model 64,
   1 + 2 layers and 4 experts, without the item head and item identities (they did not pay
   here), 5 epochs, otherwise the library's defaults: dropout 0.1, no user-id embedding,
   averaged weights; most of the quickstart's time);
6. **align OneRec** (docs/alignment.md): a reward model (RM v3, ``REWARD_SETTINGS``) trained on
   every logged session with its realised feedback, then ``ipa_iterations`` of Iterative
   Preference Alignment from the trained OneRec (r_DPO ``ipa_r_dpo`` of the training users who
   are not evaluation users, N = ``ipa_n_sessions`` beams each, best against worst by the RM,
   lambda ``ipa_dpo_weight``); the aligned model is graded beside the NTP one (``onerec-ipa``);
7. **train the baselines**: popularity (training counts) and SASRec with full-softmax CE
   (dropout 0.2, batches of 64 users, early stopping with S3-Rec's patience of 10
   validations, at most 150 s);
8. **generate** for ``eval_users`` users drawn at random (fixed seed) among the split's users:
   each model reads the user's *whole* logged watched history (including the two held-out
   items no model trained on) and proposes ``K`` sessions of 5 distinct videos for the moment
   right after the log (oracle ``time=1.0``). Items of the history are excluded for every
   model alike (``exclude_seen``). OneRec: the ``K`` best beams of ``beam_search_sessions``,
   best first. Baselines (and the reference rows): session 1 is the model's top 5 items;
   sessions 2..K draw 5 distinct items without replacement (Gumbel top-k, Plackett-Luce) from
   the softmax of the model's next-item logits over its top ``candidates`` items (popularity's
   logits: log training counts, so it samples in proportion to popularity);
9. **grade** every session with the exact oracle (:meth:`Simulator.oracle`): swt (expected
   session watch time, seconds), vtr, wtr (follow rate), ltr (like rate) and the combined
   reward (1.0 = an average logged session). As in the paper's Table 1, "mean" is the average
   over a user's K sessions and "max" the best of them, both averaged over users; here they are
   ground truth, not a reward model's guess. Two reference rows frame the table: ``random``
   (uniform unseen videos) and ``true-top`` (the same sampling over the simulator's true
   context-free scores: what knowing each user's real taste gives, before session effects).
   Read "max" with care: OneRec's K beams share prefixes and differ little, while the sampled
   sessions of the other rows spread wider, so their best one has more chances to land a long
   video (swt is in seconds and grows with duration).

The run directory holds ``config.json``, ``simulator.json``, ``dataset/`` (the full log),
``split/``, ``semantic_ids/``, ``onerec/`` (a run folder ``onerec recommend`` can serve),
``reward_model/`` and ``ipa/`` (the RM's and IPA's run folders; ``ipa/`` holds the aligned model),
``baselines/`` (SASRec weights, training logs), ``sessions.parquet`` (every generated session
with its oracle values), ``rewards.json`` and ``report.md``. Same seed, same numbers (on the
same machine and thread count). ``scale="tiny"`` is a seconds-long configuration for tests.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from onerec.alignment import (RewardRun, RewardTrainConfig, catalog_fingerprint, logged_sessions,
                              train_reward_model)  # fmt: skip
from onerec.alignment.ipa import AlignConfig, align
from onerec.alignment.reward_training import REWARD_SETTINGS
from onerec.baselines import Popularity, SASRec
from onerec.baselines.train import BaselineTrainConfig, fit, set_seed
from onerec.data.ragged import Ragged
from onerec.data.schema import Dataset
from onerec.data.splits import Split, leave_one_out
from onerec.evaluation import fill_seen
from onerec.exceptions import ConfigError
from onerec.generation import beam_search_sessions
from onerec.model.onerec import OneRec
from onerec.runs import claim_output
from onerec.simulator import CatalogConfig, Simulator, SimulatorConfig, UserConfig
from onerec.tokenizer.pipeline import TokenizeConfig, save_tokenization, tokenize
from onerec.training import TrainConfig
from onerec.training.pipeline import TrainedRun, train_on_dataset

METRICS = ("swt", "vtr", "wtr", "ltr", "reward")
TRAIN_ON = ("watched", "high_quality", "all")


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes of the simulated platform, the models and the evaluation. ``simulator``: a whole
    platform (:class:`SimulatorConfig`) instead of the default one of ``num_users`` users,
    ``num_items`` videos and ``seed``; set it with :meth:`with_simulator`, which copies its sizes
    here. ``seed`` still seeds the models and the choice of evaluation users."""

    seed: int = 0
    num_users: int = 2_000
    num_items: int = 3_000
    mean_sessions: float = 10.0
    train_on: str = "watched"
    levels: int = 3  # semantic-ID levels
    history_length: int = 20  # OneRec's history (TIGER's); SASRec reads sasrec_length
    onerec_preset: str = "small"
    onerec_model: dict[str, Any] = field(default_factory=lambda: {
        "d_model": 64, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 2, "d_ff": 256,
        "n_experts": 4, "top_k": 2,
        # without the small preset's item head, identities and history dropout: the quickstart
        # was measured without them (benchmarks/results/quickstart.json), and in one trial with
        # the head and identities its session model validated lower and the oracle graded its
        # sessions lower
        "item_loss_weight": 0.0, "rerank_weight": 0.0, "head_candidates": 0,
        "item_query_residual": False, "item_hash_buckets": 0, "item_hash_dropout": 0.0,
        "history_dropout": 0.0,
    })  # fmt: skip
    onerec_epochs: int = 5
    onerec_batch_size: int = 256
    sasrec_length: int = 50
    # 2,000 users make 8 batches of 256 per epoch: too few steps for SASRec to leave the
    # popularity plateau before patience runs out, so smaller batches and S3-Rec's patience;
    # dropout 0.2, SASRec's setting for dense data (53 watched videos per user here): with
    # 0.5 (its sparse-data setting) it stayed on the plateau (valid Recall@10 0.024 vs 0.10)
    sasrec_batch_size: int = 64
    sasrec_dropout: float = 0.2
    sasrec_patience: int = 10
    sasrec_epochs: int = 60
    sasrec_max_seconds: float = 150.0
    validation_users: int = 500  # validation subset, every model, after every epoch
    eval_users: int = 500
    sessions_per_user: int = 8  # K sessions generated per user
    session_items: int = 5
    # items per OneRec training target (None: session_items); 1 trains on next-item targets
    # only, while generation still decodes session_items per session (the m = 1 ablation)
    onerec_train_items: int | None = None
    candidates: int = 50  # baselines sample their sessions 2..K from their top items
    exclude_seen: bool = True
    examples: int = 3
    # preference alignment: the RM (REWARD_SETTINGS[reward_settings]; reward_epochs None keeps
    # its epochs), then IPA; 0 iterations leaves alignment out. The benchmark's recipe (RM v3,
    # r_DPO 0.2, lambda 0.3) for one iteration, what the 15-minute budget holds; why these
    # settings: docs/alignment.md#in-the-quickstart
    reward_settings: str = "v3"
    reward_epochs: int | None = None
    ipa_iterations: int = 1
    ipa_r_dpo: float = 0.2
    ipa_n_sessions: int = 128
    ipa_dpo_weight: float = 0.3  # lambda
    simulator: SimulatorConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.simulator, dict):  # read back from config.json
            object.__setattr__(self, "simulator", SimulatorConfig.from_dict(self.simulator))
        if self.simulator is not None:
            given = self.simulator
            sizes = {"num_users": given.users.num_users, "num_items": given.catalog.num_items,
                     "mean_sessions": given.users.mean_sessions}  # fmt: skip
            for name, value in sizes.items():
                if getattr(self, name) != value:
                    raise ConfigError(
                        f"QuickstartConfig.{name} ({getattr(self, name)}) differs from the "
                        f"simulator config's ({value}): the platform's sizes come from the "
                        "simulator config; set it with QuickstartConfig.with_simulator"
                    )
        if self.train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {TRAIN_ON}, got {self.train_on!r}")
        for name in ("num_users", "num_items", "onerec_epochs", "sasrec_epochs", "eval_users",
                     "sessions_per_user", "session_items", "validation_users"):  # fmt: skip
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ConfigError(f"QuickstartConfig.{name} must be >= 1, got {value}")
        if self.onerec_train_items is not None and self.onerec_train_items < 1:
            raise ConfigError(
                f"QuickstartConfig.onerec_train_items must be >= 1 or None, got "
                f"{self.onerec_train_items}"
            )
        if self.reward_settings not in REWARD_SETTINGS:
            raise ConfigError(f"reward_settings must be one of {sorted(REWARD_SETTINGS)}, got "
                              f"{self.reward_settings!r}")  # fmt: skip
        if self.ipa_iterations < 0 or (self.reward_epochs is not None and self.reward_epochs < 1):
            raise ConfigError(
                f"QuickstartConfig.ipa_iterations must be >= 0 (0: no alignment) and "
                f"reward_epochs >= 1 or None, got {self.ipa_iterations} and {self.reward_epochs}"
            )
        if self.ipa_iterations:
            # r_DPO and N checked now, not after OneRec's training
            AlignConfig(r_dpo=self.ipa_r_dpo, n_sessions=self.ipa_n_sessions,
                        dpo_weight=self.ipa_dpo_weight)
        if self.candidates < self.session_items:
            raise ConfigError(
                f"candidates ({self.candidates}) must be >= session_items ({self.session_items})"
            )

    def with_simulator(self, simulator: SimulatorConfig) -> "QuickstartConfig":
        """This config on the platform ``simulator`` (its sizes copied here)."""
        return replace(self, simulator=simulator, num_users=simulator.users.num_users,
                       num_items=simulator.catalog.num_items,
                       mean_sessions=simulator.users.mean_sessions)  # fmt: skip

    def platform(self) -> SimulatorConfig:
        """The simulated platform: ``simulator``, or the default one at this config's sizes."""
        if self.simulator is not None:
            return self.simulator
        return SimulatorConfig(
            catalog=CatalogConfig(num_items=self.num_items),
            users=UserConfig(num_users=self.num_users, mean_sessions=self.mean_sessions),
            seed=self.seed,
        )  # fmt: skip

    @classmethod
    def scale(cls, name: str, seed: int = 0) -> "QuickstartConfig":
        if name not in SCALES:
            raise ConfigError(f"unknown quickstart scale {name!r}; choose one of {sorted(SCALES)}")
        return replace(SCALES[name], seed=seed)


SCALES: dict[str, QuickstartConfig] = {
    "default": QuickstartConfig(),
    # for tests: seconds on a CPU; every stage runs, nothing is meaningful
    "tiny": QuickstartConfig(
        num_users=120, num_items=300, mean_sessions=4.0, levels=2, onerec_preset="tiny",
        onerec_model={}, onerec_epochs=1, onerec_batch_size=128, sasrec_length=20,
        sasrec_epochs=2, validation_users=50, eval_users=30, sessions_per_user=3, candidates=20,
        reward_epochs=2, ipa_n_sessions=8,
    ),  # fmt: skip
}


@contextmanager
def _stage(name: str, seconds: dict[str, float] | None = None, key: str = "") -> Iterator[None]:
    """Print the stage's start and end; with ``seconds``, record its time under ``key``."""
    start = time.perf_counter()
    print(f"[quickstart] {name} ...", flush=True)
    yield
    elapsed = time.perf_counter() - start
    if seconds is not None:
        seconds[key] = elapsed
    print(f"[quickstart] {name}: done in {elapsed:.1f}s", flush=True)


def run(
    out: str | Path,
    seed: int = 0,
    *,
    scale: str = "default",
    config: QuickstartConfig | None = None,
    simulator: SimulatorConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The whole pipeline into ``out``; returns what ``rewards.json`` holds. ``simulator``: the
    platform to simulate (default: ``config``'s, or the scale's default platform). An ``out``
    that exists and was not made by the quickstart is refused unless ``overwrite``."""
    cfg = config or QuickstartConfig.scale(scale, seed)
    if simulator is not None:
        cfg = cfg.with_simulator(simulator)
    out = claim_output(out, "quickstart", overwrite)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)

    with _stage("simulate a platform and its log", seconds, "simulate"):
        sim, dataset = simulate(cfg, out)
    with _stage("high-quality sessions and training data"):
        train_ds, quality = training_data(sim, dataset, cfg)
    with _stage("leave-one-out split and evaluation users"):
        split, users, history = split_and_sample(train_ds.log, cfg, out)
    with _stage("semantic IDs from content embeddings", seconds, "tokenize"):
        semantic_ids(dataset, cfg, out)
    with _stage(f"train OneRec (next {cfg.onerec_train_items or cfg.session_items} items as "
                "each target)", seconds, "train_onerec"):  # fmt: skip
        trained = train_onerec(train_ds, cfg, out, progress)
    aligned = None
    for folder in ("reward_model", "ipa"):  # runs of an earlier quickstart are not resumed
        shutil.rmtree(out / folder, ignore_errors=True)
    if cfg.ipa_iterations:
        with _stage("train the reward model on the logged sessions", seconds, "train_reward"):
            reward = train_reward(sim, dataset, cfg, out / "reward_model", progress)
        with _stage(f"align OneRec: {cfg.ipa_iterations} IPA iteration(s), r_DPO "
                    f"{cfg.ipa_r_dpo}, lambda {cfg.ipa_dpo_weight}, {cfg.ipa_n_sessions} beams "
                    "per drawn user", seconds,
                    "align"):  # fmt: skip
            aligned = align_onerec(trained, reward, dataset, users, cfg, out / "ipa", progress)
    with _stage("train popularity and SASRec (CE)", seconds, "train_baselines"):
        baselines = train_baselines(split, cfg, out, progress)
    with _stage(f"generate {cfg.sessions_per_user} sessions of {cfg.session_items} per user",
                seconds, "generate"):  # fmt: skip
        sessions = generate_sessions(sim, trained, aligned, baselines, history, users, cfg,
                                     progress)  # fmt: skip
    with _stage("grade every session with the simulator's oracle"):
        values = {name: _grade(sim, users, s) for name, s in sessions.items()}
        table, paired = _summary(values), _paired(values)
        verdict = _verdict(paired)
        markdown = _markdown(table)
        print(markdown)
        print(verdict)
        _save_sessions(out / "sessions.parquet", users, sessions, values)

    examples = _examples(sim, users, sessions, values, cfg.examples)
    print(examples)
    seconds["total"] = time.perf_counter() - started
    summary = {
        "config": asdict(cfg),
        "rewards": table,
        "verdict": verdict,
        "paired": paired,
        "eval_users": len(users),
        "sessions_per_user": cfg.sessions_per_user,
        "quality_filter": quality.to_dict(),
        "train_rows": len(split.train),
        "onerec": {k: trained.state.get(k) for k in trained.state},
        "reward_model": reward.evaluation if aligned is not None else None,
        "ipa": _ipa_record(out / "ipa") if aligned is not None else None,
        "seconds": seconds,
    }
    (out / "rewards.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "report.md").write_text(_report(cfg, quality, len(train_ds.log), len(dataset.log),
                                           len(users), markdown, verdict, examples,
                                           seconds))  # fmt: skip
    print(f"[quickstart] all done in {seconds['total']:.0f}s; artifacts in {out}")
    return summary


# the stages ------------------------------------------------------------------------------------
def simulate(
    cfg: QuickstartConfig, out: Path, online_days: float = 0.0
) -> tuple[Simulator, Dataset]:
    """The simulated platform and its logged exposures (saved as ``simulator.json`` and
    ``dataset/``). ``online_days`` > 0 extends the platform's timeline by that many days after
    the log (``onerec online`` serves them): the log keeps its days, users drift over all."""
    platform = cfg.platform()
    policy = platform.policy
    period = policy.period_days + online_days
    sim = Simulator(replace(platform, policy=replace(policy, period_days=period)))
    sim.config.save(out / "simulator.json")
    dataset = sim.generate_log(quality_report=False, until=policy.period_days / period)
    dataset.save(out / "dataset")
    log = dataset.log
    print(f"  {sim.num_users:,} users, {sim.num_items:,} videos, {len(log):,} exposures in "
          f"{log.num_sessions:,} sessions; skip rate {log.signals['skip'].mean():.2f}, mean "
          f"watch {log.signals['watch_time'].mean():.1f}s")  # fmt: skip
    return sim, dataset


def training_data(sim: Simulator, dataset: Dataset, cfg: QuickstartConfig) -> tuple[Dataset, Any]:
    """The rows every model trains on (``cfg.train_on``) and the paper's high-quality-session
    filter report (printed either way)."""
    log = dataset.log
    hq, report = sim.high_quality(dataset)
    print(f"  paper's filter: {report}")
    if cfg.train_on == "high_quality":
        train_log = hq.log
    elif cfg.train_on == "watched":
        train_log = log.take(log.signals["skip"] == 0)
    else:
        train_log = log
    print(f"  training data ({cfg.train_on}): {len(train_log):,} of {len(log):,} exposures")
    meta = {**dataset.meta, "train_on": cfg.train_on}
    train_ds = Dataset(f"simulated-{cfg.train_on}", train_log, dataset.item_table,
                       dataset.user_table, meta)  # fmt: skip
    return train_ds, report


def split_and_sample(
    train_log: Any, cfg: QuickstartConfig, out: Path
) -> tuple[Split, np.ndarray, Ragged]:
    """The leave-one-out split (saved as ``split/``), the evaluation users (a seeded sample of
    the split's users, ascending) and each one's whole watched history, oldest first."""
    split = leave_one_out(train_log, history_length=cfg.sasrec_length)
    split.save(out / "split")
    for r in split.reports:
        print(f"  {r}")
    rng = np.random.default_rng([cfg.seed, 1])
    candidates = np.sort(split.test.user)
    users = np.sort(rng.choice(candidates, min(cfg.eval_users, len(candidates)), replace=False))
    ordered = train_log.sorted()
    full = Ragged.from_sorted_groups(ordered.user, ordered.item, ordered.num_users)
    history = full.take(users)  # everything each user watched, oldest first
    print(f"  {len(split.train):,} training rows; {len(users)} evaluation users, "
          f"{history.lengths.mean():.0f} watched videos each on average")
    return split, users, history


def semantic_ids(dataset: Dataset, cfg: QuickstartConfig, out: Path) -> None:
    """Semantic IDs of every video from its content embedding, saved as ``semantic_ids/``."""
    content = np.array(dataset.item_table.embedding("content"), dtype=np.float32)
    tokens = tokenize(content, TokenizeConfig(method="balanced", levels=cfg.levels,
                                              seed=cfg.seed))  # fmt: skip
    save_tokenization(out / "semantic_ids", tokens, dataset.log.items, {"source": "content"})
    ids = tokens.semantic_ids
    print(f"  {ids.n_items:,} videos -> {ids.n_levels} codes (sizes {ids.level_sizes}); "
          f"collisions {100 * tokens.report.collision_rate_before:.1f}% before "
          "disambiguation")  # fmt: skip


def train_onerec(train_ds: Dataset, cfg: QuickstartConfig, out: Path, progress: bool) -> TrainedRun:
    """OneRec trained on the training rows into ``out/onerec`` (a servable run folder); the
    training settings are the library's defaults but for the sizes in ``cfg``."""
    train_config = TrainConfig(
        session_items=cfg.onerec_train_items or cfg.session_items,
        history_length=cfg.history_length,
        batch_size=cfg.onerec_batch_size, epochs=cfg.onerec_epochs,
        eval_users=cfg.validation_users, seed=cfg.seed, device="cpu",
    )  # fmt: skip
    trained = train_on_dataset(train_ds, out / "semantic_ids", out / "onerec", train_config,
                               preset=cfg.onerec_preset, model_overrides=cfg.onerec_model,
                               progress=progress, overwrite=True)  # a fresh run, never resumed
    trained.model.eval()
    print(f"  {trained.model.num_parameters():,} parameters; {trained.state}")
    return trained


def train_reward(
    sim: Simulator, dataset: Dataset, cfg: QuickstartConfig, out: Path, progress: bool
) -> RewardRun:
    """The reward model (``REWARD_SETTINGS[cfg.reward_settings]``) trained on every logged session
    of ``dataset`` with its realised feedback, into ``out`` (a finished run there is reloaded);
    its held-out scores beside the per-item-average baseline are printed."""
    train, model = REWARD_SETTINGS[cfg.reward_settings]
    if cfg.reward_epochs is not None:
        train = {**train, "epochs": cfg.reward_epochs}
    sessions = logged_sessions(dataset.log, cfg.session_items, cfg.history_length)
    run = train_reward_model(sessions, out, RewardTrainConfig(**train, seed=cfg.seed),
                             num_items=sim.num_items,
                             catalog=catalog_fingerprint(dataset.log.items.raw), model=model,
                             item_features=reward_item_features(sim, dataset),
                             progress=progress)  # fmt: skip
    ours, base = run.evaluation["reward_model"], run.evaluation["item_average"]
    print(f"  {len(sessions):,} logged sessions; held-out scores, RM vs per-item average: "
          + ", ".join(f"{k} {ours[k]:.3f} vs {base[k]:.3f}" for k in ours))  # fmt: skip
    return run


def reward_item_features(sim: Simulator, dataset: Dataset) -> np.ndarray:
    """The RM's fixed item side features on a simulated platform: each video's content
    embedding (the item table's) and log duration; the RM adds their training-log rates."""
    content = np.array(dataset.item_table.embedding("content"), dtype=np.float32)
    return np.c_[content, np.log(sim.catalog.duration)]


def ipa_config(cfg: QuickstartConfig, lr: float = 3e-4, **settings: Any) -> AlignConfig:
    """IPA of the quickstart's OneRec: ``cfg``'s iterations, r_DPO, N and lambda; the rest
    :class:`AlignConfig`'s defaults (best against worst, beta 0.1); each iteration
    trains one epoch like the NTP run, at learning rate ``lr``. ``settings`` (AlignConfig
    fields) replace any of them."""
    train = {"session_items": cfg.session_items, "history_length": cfg.history_length,
             "batch_size": cfg.onerec_batch_size, "eval_users": cfg.validation_users, "lr": lr,
             "device": "cpu"}  # fmt: skip
    base = {"iterations": cfg.ipa_iterations, "r_dpo": cfg.ipa_r_dpo,
            "n_sessions": cfg.ipa_n_sessions, "dpo_weight": cfg.ipa_dpo_weight,
            "session_items": cfg.session_items,
            "seed": cfg.seed, "train": train}  # fmt: skip
    return AlignConfig(**{**base, **settings})


def align_onerec(
    trained: TrainedRun, reward: RewardRun, dataset: Dataset, users: np.ndarray,
    cfg: QuickstartConfig, out: Path, progress: bool,
) -> OneRec:  # fmt: skip
    """IPA from the trained OneRec into ``out``, never drawing the evaluation ``users``; returns
    the last iteration's model."""
    run = align(trained.model, trained.semantic_ids, trained.split, reward.model, out,
                ipa_config(cfg), exclude_users=users,
                catalog=catalog_fingerprint(dataset.log.items.raw), progress=progress)  # fmt: skip
    for r in run.state["iterations"]:
        print(f"  iteration {r['iteration']}: {r['pairs']} pairs (RM reward chosen "
              f"{r['mean_chosen_reward']:.3f}, rejected {r['mean_rejected_reward']:.3f}), "
              f"sampling {r['sampling_seconds']:.0f}s, valid recall@10 "
              f"{r['best_valid_recall@10']:.4f}, {r['seconds_this_call']:.0f}s")  # fmt: skip
    return run.models[-1].eval()


def _ipa_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


def train_baselines(
    split: Split, cfg: QuickstartConfig, out: Path, progress: bool
) -> dict[str, Any]:
    """Popularity (training counts) and SASRec with full-softmax CE, by name; SASRec's weights
    and training log go to ``out/baselines``."""
    baselines: dict[str, Any] = {}
    (out / "baselines").mkdir(exist_ok=True)
    L = cfg.sasrec_length
    bconfig = BaselineTrainConfig(
        max_length=L, batch_size=cfg.sasrec_batch_size, epochs=cfg.sasrec_epochs,
        patience=cfg.sasrec_patience, eval_users=cfg.validation_users,
        max_seconds=cfg.sasrec_max_seconds, seed=cfg.seed,
    )  # fmt: skip
    set_seed(cfg.seed)
    baselines["popularity"] = Popularity.from_sequences(split.train_sequences(),
                                                        split.num_items, L)  # fmt: skip
    set_seed(cfg.seed)
    sasrec = SASRec(split.num_items, L, loss="ce", dropout=cfg.sasrec_dropout)
    result = fit(sasrec, split, bconfig, progress=progress)
    baselines["sasrec-ce"] = sasrec.eval()
    save_file(sasrec.state_dict(), out / "baselines" / "sasrec-ce.safetensors")
    record = {"train_config": bconfig.to_dict(), "best_epoch": result.best_epoch,
              "epochs": result.epochs, "stopped": result.stopped, "log": result.log}
    (out / "baselines" / "sasrec-ce.json").write_text(json.dumps(record, indent=2))
    print(f"  SASRec: best epoch {result.best_epoch} of {result.epochs} ({result.stopped}), "
          f"valid recall@10 {result.best_valid.get('recall@10', float('nan')):.4f}")
    return baselines


def generate_sessions(
    sim: Simulator, trained: TrainedRun, aligned: OneRec | None, baselines: dict[str, Any],
    history: Ragged, users: np.ndarray, cfg: QuickstartConfig, progress: bool,
) -> dict[str, np.ndarray]:  # fmt: skip
    """K sessions (U, K, m) per evaluation user from every model (OneRec before and, when
    ``aligned``, after IPA) and the two reference rows (``true-top``: sampling over the true
    scores; ``random``: uniform), checked valid."""
    sessions = {
        "onerec": _onerec_sessions(trained.model, trained.semantic_ids, history, users, cfg,
                                   progress),  # fmt: skip
    }
    if aligned is not None:
        sessions["onerec-ipa"] = _onerec_sessions(aligned, trained.semantic_ids, history, users,
                                                  cfg, progress)  # fmt: skip
    for name, s in sessions.items():
        _check_sessions(name, s, sim.num_items)
    return {**sessions, **reference_sessions(sim, baselines, history, users, cfg)}


def reference_sessions(
    sim: Simulator, baselines: dict[str, Any], history: Ragged, users: np.ndarray,
    cfg: QuickstartConfig,
) -> dict[str, np.ndarray]:  # fmt: skip
    """K sessions (U, K, m) per user from each baseline, ``true-top`` (sampling over the true
    scores) and ``random`` (uniform), checked valid: the rows every generator is read against."""
    sessions = {}
    seen = history if cfg.exclude_seen else None
    for name, model in baselines.items():
        logits = _baseline_logits(model, history, users)
        rng = np.random.default_rng([cfg.seed, 2])
        sessions[name] = _sample_sessions(logits, seen, cfg, rng)
    true = torch.from_numpy(sim.item_scores(users)).float()
    rng = np.random.default_rng([cfg.seed, 3])
    sessions["true-top"] = _sample_sessions(true, seen, cfg, rng)
    sessions["random"] = _sample_sessions(torch.zeros_like(true), seen,
                                          replace(cfg, candidates=sim.num_items),
                                          np.random.default_rng([cfg.seed, 4]))  # fmt: skip
    for name, s in sessions.items():
        _check_sessions(name, s, sim.num_items)
    return sessions


# generation ------------------------------------------------------------------------------------
def _onerec_sessions(
    model: Any, ids: Any, history: Ragged, users: np.ndarray, cfg: QuickstartConfig,
    progress: bool, batch: int = 64,
) -> np.ndarray:  # fmt: skip
    """The K best beams (U, K, m) of OneRec's session beam search."""
    out = []
    for start in tqdm(range(0, len(users), batch), desc="onerec beam search", unit="batch",
                      disable=not progress, leave=False):  # fmt: skip
        rows = np.arange(start, min(start + batch, len(users)))
        h = history.take(rows)
        beams = beam_search_sessions(
            model, h, torch.from_numpy(users[rows]), ids, beam_size=cfg.sessions_per_user,
            n_items=cfg.session_items, exclude_items=h if cfg.exclude_seen else None,
        )  # fmt: skip
        out.append(beams.items.cpu().numpy())
    return np.concatenate(out).astype(np.int64)


def _baseline_logits(model: Any, history: Ragged, users: np.ndarray) -> torch.Tensor:
    """Next-item logits (U, N): SASRec's scores; popularity's log training counts."""
    scores = model.scores(history, users)
    if isinstance(model, Popularity):
        return torch.log(scores.clamp_min(1e-3))  # never-seen videos: a tiny count, not -inf
    return scores


def _sample_sessions(
    logits: torch.Tensor, seen: Ragged | None, cfg: QuickstartConfig, rng: np.random.Generator
) -> np.ndarray:
    """K sessions (U, K, m): the top m items, then K - 1 Plackett-Luce draws of m distinct items
    from the softmax over the top ``candidates`` items."""
    logits = logits.clone().double()
    if seen is not None:
        fill_seen(logits, seen)
    top = logits.topk(cfg.candidates, dim=1)
    k, m = cfg.sessions_per_user, cfg.session_items
    gumbel = torch.from_numpy(rng.gumbel(size=(len(logits), k - 1, cfg.candidates)))
    draws = (top.values[:, None, :] + gumbel).topk(m, dim=2).indices  # (U, K-1, m)
    picked = torch.gather(top.indices[:, None, :].expand(-1, k - 1, -1), 2, draws)
    first = top.indices[:, None, :m]
    return torch.cat([first, picked], dim=1).numpy().astype(np.int64)


def _check_sessions(name: str, sessions: np.ndarray, num_items: int) -> None:
    """Every session holds m distinct catalog videos."""
    s = np.sort(sessions, axis=-1)
    if sessions.min() < 0 or sessions.max() >= num_items or np.any(s[..., 1:] == s[..., :-1]):
        raise RuntimeError(f"{name} generated a session with a repeat or a non-catalog item")


# grading ---------------------------------------------------------------------------------------
def _grade(sim: Simulator, users: np.ndarray, sessions: np.ndarray) -> dict[str, np.ndarray]:
    """Oracle values (U, K) of every session, right after the log."""
    u, k, m = sessions.shape
    truth = sim.oracle(np.repeat(users, k), sessions.reshape(u * k, m), time=1.0)
    return {name: truth[name].reshape(u, k) for name in METRICS}


def _summary(values: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    return {
        model: {f"{metric}_{how}": float(getattr(v[metric], how)(axis=1).mean())
                for metric in METRICS for how in ("mean", "max")}  # fmt: skip
        for model, v in values.items()
    }


# (ours, label) against (theirs): the verdict's pairs, where both rows exist
VERDICT_PAIRS = (("onerec", ("popularity", "sasrec-ce")),
                 ("onerec-ipa", ("popularity", "sasrec-ce", "onerec")))  # fmt: skip
LABELS = {"onerec": "OneRec", "onerec-ipa": "OneRec+IPA"}


def _paired(values: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{ours: {theirs: {metric: {ours, theirs, diff, se, users}}}}``: the per-user means of
    swt and the combined reward over each user's sessions, paired, for ``VERDICT_PAIRS``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for ours, others in VERDICT_PAIRS:
        if ours not in values:
            continue
        out[ours] = {}
        for other in others:
            out[ours][other] = {}
            for metric in ("swt", "reward"):
                mine = values[ours][metric].mean(axis=1)
                diff = mine - values[other][metric].mean(axis=1)
                se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
                out[ours][other][metric] = {
                    "ours": float(mine.mean()), "theirs": float(mine.mean() - diff.mean()),
                    "diff": float(diff.mean()), "se": float(se), "users": len(diff),
                }  # fmt: skip
    return out


def _verdict(paired: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One line per pair and metric: "beats" when the paired difference exceeds 2 standard
    errors."""
    lines = []
    for ours, others in paired.items():
        for other, by_metric in others.items():
            for metric, d in by_metric.items():
                word = ("beats" if d["diff"] > 2 * d["se"] else
                        "does not clearly beat" if d["diff"] > 0 else "does NOT beat")  # fmt: skip
                lines.append(
                    f"{LABELS[ours]} {word} {LABELS.get(other, other)} on mean {metric}: "
                    f"{_number(metric, d['ours'])} vs {_number(metric, d['theirs'])} per session "
                    f"(difference {_number(metric, d['diff'], '+')}, paired standard error "
                    f"{_number(metric, d['se'])} over {d['users']} users)"
                )  # fmt: skip
    return "\n".join(lines)


def _number(metric: str, x: float, sign: str = "") -> str:
    """swt in seconds with 2 decimals; the combined reward (no unit) with 3."""
    return f"{x:{sign}.2f}s" if metric == "swt" else f"{x:{sign}.3f}"


def _markdown(table: dict[str, dict[str, float]]) -> str:
    head = "| model | " + " | ".join(f"{m} mean | {m} max" for m in METRICS) + " |"
    lines = [head, "|---" * (1 + 2 * len(METRICS)) + "|"]
    for model, row in table.items():
        cells = []
        for metric in METRICS:
            fmt = "{:.2f}" if metric == "swt" else "{:.3f}" if metric == "reward" else "{:.4f}"
            cells += [fmt.format(row[f"{metric}_mean"]), fmt.format(row[f"{metric}_max"])]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _save_sessions(
    path: Path, users: np.ndarray, sessions: dict[str, np.ndarray],
    values: dict[str, dict[str, np.ndarray]],
) -> None:  # fmt: skip
    cols: dict[str, list] = {"model": [], "user": [], "rank": [], "items": []}
    cols.update({metric: [] for metric in METRICS})
    for name, s in sessions.items():
        u, k, _ = s.shape
        cols["model"] += [name] * (u * k)
        cols["user"] += np.repeat(users, k).tolist()
        cols["rank"] += np.tile(np.arange(k), u).tolist()
        cols["items"] += s.reshape(u * k, -1).tolist()
        for metric in METRICS:
            cols[metric] += values[name][metric].reshape(-1).tolist()
    pq.write_table(pa.table(cols), path)


def _examples(
    sim: Simulator, users: np.ndarray, sessions: dict[str, np.ndarray],
    values: dict[str, dict[str, np.ndarray]], n: int,
) -> str:  # fmt: skip
    """The first session of OneRec, popularity and SASRec for the first ``n`` users."""
    cat = sim.catalog
    lines = ["Example sessions (first session of each model; video: author / tag / duration):"]
    for row in range(min(n, len(users))):
        lines.append(f"user {users[row]}:")
        for name in ("onerec", "onerec-ipa", "popularity", "sasrec-ce"):
            if name not in sessions:
                continue
            items = sessions[name][row, 0]
            desc = ", ".join(f"{i} (a{cat.author[i]}/t{cat.main_tag[i]}/{cat.duration[i]:.0f}s)"
                             for i in items)  # fmt: skip
            v = values[name]
            lines.append(f"  {name:<11} swt {v['swt'][row, 0]:6.1f}s reward "
                         f"{v['reward'][row, 0]:.2f}: {desc}")  # fmt: skip
    return "\n".join(lines)


def _report(
    cfg: QuickstartConfig, report: Any, train_rows: int, log_rows: int, n_users: int,
    markdown: str, verdict: str, examples: str, seconds: dict[str, float],
) -> str:  # fmt: skip
    return (
        "# quickstart: ground-truth session rewards\n\n"
        f"Simulated platform: {cfg.num_users:,} users, {cfg.num_items:,} videos, seed "
        f"{cfg.platform().seed} ({'a given' if cfg.simulator else 'the default'} platform config, "
        "simulator.json); "
        f"{log_rows:,} logged exposures. Paper's high-quality filter: {report}. Every model "
        f"trained on the {cfg.train_on} exposures ({train_rows:,}).\n\n"
        f"{n_users} evaluation users; each model generated {cfg.sessions_per_user} sessions of "
        f"{cfg.session_items} videos per user right after the log (seen videos excluded: "
        f"{cfg.exclude_seen}). Values are the simulator's exact expectations (swt in seconds); "
        "mean = average over a user's sessions, max = the best one, both averaged over users. "
        "OneRec: its best beams, before (onerec) and after preference alignment (onerec-ipa: "
        f"{cfg.ipa_iterations} IPA iteration(s) with a reward model, r_DPO {cfg.ipa_r_dpo}, "
        f"lambda {cfg.ipa_dpo_weight}); "
        "baselines: top 5, then Plackett-Luce draws from their top "
        f"{cfg.candidates}; true-top: the same over the true scores; random: uniform.\n\n"
        f"{markdown}\n\n{verdict}\n\n```\n{examples}\n```\n\nSeconds per stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + "\n"
    )
