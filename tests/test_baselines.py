"""Baselines: every model honours one contract, learns a deterministic sequence, and is measured
by the same evaluation code; bad input stops with a named error."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from onerec.baselines import (
    BERT4Rec,
    BSARec,
    ESASRec,
    FDSA,
    BaselineSettings,
    BaselineTrainConfig,
    Popularity,
    SASRec,
    SequentialRecommender,
    fit,
    item_attributes,
    run_benchmark,
    summarize_seeds,
    write_seed_summary,
)
from onerec.baselines.base import pad_histories, prefix_batches, prefix_samples, sequence_batches
from onerec.baselines.benchmark import _hyperparameters, check_models, seeds_table
from onerec.baselines.tiger import TigerSettings
from onerec.baselines.sasrec import next_item_loss
from onerec.baselines.train import length_batches, set_seed
from onerec.cli import main
from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.data.readers import RawInteractions, assemble
from onerec.data.splits import leave_one_out
from onerec.evaluation import evaluate, exclude_seen_selected
from onerec.exceptions import (
    BaselineError,
    ConfigError,
    MissingItemAttributesError,
    RunFileError,
    UnknownModelError,
)

N_ITEMS = 12


def cycle_dataset(n_users: int = 60, length: int = 10, attributes: bool = True, seed: int = 0):
    """Each user walks the cycle 0 -> 1 -> ... -> N-1 -> 0 from a random start: the next item is
    always the current one plus one, so a sequential model can rank it first."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        start = int(rng.integers(N_ITEMS))
        for t in range(length):
            users.append(u), items.append((start + t) % N_ITEMS), times.append(t)
    raw = RawInteractions(np.array(users), np.array(items), np.array(times, dtype=np.float64))
    features = []
    if attributes:  # two attributes per item: its parity and its third
        ids = np.arange(N_ITEMS)
        attrs = pa.array([[int(i % 2), 2 + int(i % 3)] for i in ids], pa.list_(pa.int64()))
        features.append(pa.table({"id": ids, "attributes": attrs}))
    return assemble("cycle", raw, item_features=features)


@pytest.fixture(scope="module")
def dataset():
    return cycle_dataset()


@pytest.fixture(scope="module")
def split(dataset):
    return leave_one_out(dataset.log, history_length=8)


def small_model(name: str, dataset, split) -> SequentialRecommender:
    n = split.num_items
    kw = dict(max_length=8, hidden=32, layers=1, heads=2, dropout=0.1)
    if name == "pop":
        return Popularity.from_sequences(split.train_sequences(), n, max_length=8)
    if name == "sasrec-ce":
        return SASRec(n, loss="ce", **kw)
    if name == "sasrec-bce":
        return SASRec(n, loss="bce", **kw)
    if name == "sasrec-ss":
        return SASRec(n, loss="ss", negatives=8, **kw)
    if name == "esasrec":
        return ESASRec(n, negatives=8, **kw)
    if name == "bsarec":
        return BSARec(n, c=3, **kw)
    if name == "bert4rec":
        return BERT4Rec(n, mask_prob=0.3, **kw)
    if name == "fdsa":
        return FDSA(n, *item_attributes(dataset), **kw)
    raise AssertionError(name)


ALL = ["pop", "sasrec-ce", "sasrec-bce", "sasrec-ss", "bert4rec", "fdsa", "esasrec", "bsarec"]
LEARNED = ALL[1:]
FAST = BaselineTrainConfig(max_length=8, batch_size=16, lr=5e-3, epochs=60, patience=100,
                           eval_every=60, max_seconds=None)  # fmt: skip


@pytest.mark.parametrize("name", LEARNED)
def test_each_model_learns_the_cycle(name, dataset, split):
    set_seed(0)
    model = small_model(name, dataset, split)
    # the cloze task teaches next-item prediction only through its masked last items: slower
    config = FAST if name != "bert4rec" else BaselineTrainConfig(**{**FAST.to_dict(), "epochs": 150, "eval_every": 150})
    if name == "bsarec":  # its filter sees the future: it trains on prefixes, as published
        config = dataclasses.replace(FAST, prefixes=True, epochs=20, eval_every=20)
    result = fit(model, split, config, progress=False)
    losses = [e["loss"] for e in result.log]
    assert losses[-1] < 0.5 * losses[0], losses
    top = model.rank(split.test, k=1)[:, 0].numpy()
    assert (top == split.test.target.values).mean() >= 0.95
    assert result.best_valid["recall@10"] == 1.0


@pytest.mark.parametrize("name", ALL)
def test_every_model_honours_the_contract(name, dataset, split):
    set_seed(0)
    model = small_model(name, dataset, split)
    assert isinstance(model, SequentialRecommender)
    ex = split.test
    s = model.scores(ex.history, ex.user)
    assert s.shape == (len(ex), split.num_items) and s.dtype == torch.float32
    assert torch.isfinite(s).all()
    # a padded (B, L) tensor of item indices (-1 padding) gives the same scores
    padded = torch.from_numpy(ex.history.to_padded(5, pad=-1, align="right"))
    assert torch.allclose(model.scores(padded, ex.user), model.scores(ex.history.tail(5), ex.user))
    # rank is topk of the same scores; evaluation from ranked lists equals from scores
    ranked = model.rank(ex, k=10)
    assert torch.equal(ranked[:, 0], s.argmax(1)) or name == "pop"
    by_scores = evaluate(ex, scores=model.score_fn(ex), ks=(5, 10)).means()
    by_lists = evaluate(ex, ranked=ranked.numpy(), ks=(5, 10)).means()
    if name != "pop":  # popularity ties: scores count them against the target, lists do not
        assert by_scores == pytest.approx(by_lists)
    # exclude_seen never ranks an earlier item
    ranked = model.rank(ex, k=3, exclude_seen=True)
    for row, seen in zip(ranked.numpy(), ex.seen):
        assert not set(row) & set(seen.tolist())
    # scoring leaves a model in the mode it was in
    model.train()
    model.scores(ex.history)
    assert model.training


def test_popularity_ranks_the_most_frequent_training_items(split):
    model = Popularity(5, np.array([3, 3, 3, 1, 1, 4]))
    assert not model.trainable
    rows = Ragged.from_lists([[0], [2, 0]])
    ex = Examples(np.arange(2), rows, Ragged.from_lists([[1], [3]]), rows)
    assert model.rank(ex, k=3).tolist() == [[3, 1, 4], [3, 1, 4]]
    result = fit(Popularity.from_sequences(split.train_sequences(), split.num_items, 8), split,
                 BaselineTrainConfig(max_length=8), progress=False)  # fmt: skip
    assert result.epochs == 0 and result.stopped == "nothing to train"


def test_training_is_deterministic_for_a_seed(dataset, split):
    config = BaselineTrainConfig(max_length=8, batch_size=16, epochs=3, eval_every=1,
                                 max_seconds=None)  # fmt: skip
    logs = []
    for _ in range(2):
        set_seed(7)
        model = small_model("sasrec-bce", dataset, split)
        logs.append([e["loss"] for e in fit(model, split, config, progress=False).log])
    assert logs[0] == logs[1]


def test_early_stopping_keeps_the_best_validation_epoch(dataset, split):
    set_seed(0)
    model = small_model("sasrec-ce", dataset, split)
    config = BaselineTrainConfig(max_length=8, batch_size=16, lr=5e-3, epochs=40, patience=2,
                                 max_seconds=None)  # fmt: skip
    result = fit(model, split, config, progress=False)
    assert result.stopped == "patience"
    best = max(e["valid_recall@10"] for e in result.log)
    assert result.best_valid["recall@10"] == best
    again = evaluate(split.valid, scores=model.score_fn(split.valid)).means()["recall@10"]
    assert again == best  # the model holds the selected epoch


def test_time_budget_ends_the_epoch_at_the_step_that_spends_it(dataset, split):
    set_seed(0)
    model = small_model("sasrec-ce", dataset, split)
    config = BaselineTrainConfig(max_length=8, batch_size=4, epochs=5, max_seconds=1e-9)
    result = fit(model, split, config, progress=False)
    assert result.stopped == "time" and result.epochs == 1
    # one step was taken (60 sequences make 15 batches), then the partial epoch was validated
    assert result.log == [result.log[0]] and result.log[0]["partial"] is True
    assert "valid_recall@10" in result.log[0] and result.best_epoch == 1


def test_sampled_softmax_is_cross_entropy_over_the_target_and_its_negatives():
    """``ss``: the target against ``negatives`` uniform items per position; a draw of the target
    itself is no negative. Recomputed from the same draws by hand."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 3, 4, generator=g)
    targets = torch.tensor([[0, 1, 2], [3, 1, 0]])  # 0 = no target
    weights = torch.randn(4, 4, generator=g)  # 3 items + padding
    torch.manual_seed(5)
    loss = next_item_loss(hidden, targets, weights, "ss", negatives=6)
    torch.manual_seed(5)
    neg = torch.randint(1, 4, (4, 6))  # the same draws, one row per real target
    h, t = hidden[targets != 0], targets[targets != 0]
    expected = []
    for hi, ti, ni in zip(h, t, neg):
        logits = [hi @ weights[ti]] + [hi @ weights[j] for j in ni if j != ti]
        expected.append(-torch.log_softmax(torch.stack(logits), 0)[0])
    assert bool((neg == t[:, None]).any())  # the case under test occurs
    assert float(loss) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)


def test_esasrec_gates_every_residual_branch(split):
    """eSASRec = SASRec's encoder with LiGR blocks: gated residuals, SwiGLU feed-forward."""
    model = ESASRec(split.num_items, max_length=8, hidden=16, layers=2, heads=1, negatives=4)
    blocks = model.encoder.blocks
    assert len(blocks) == 2 and all(type(b).__name__ == "LiGRBlock" for b in blocks)
    assert model.name == "esasrec" and model.loss_kind == "ss" and model.negatives == 4
    with torch.no_grad():  # closed gates: each block passes its input through unchanged
        for b in blocks:
            for gate in (b.gate1, b.gate2):
                gate.weight.zero_(), gate.bias.fill_(-1e4)
    model.eval()
    x = torch.randn(3, 8, 16)
    mask = torch.ones(3, 1, 8, 8, dtype=torch.bool)
    assert torch.allclose(blocks[0](x, mask), x)


def test_prefix_training_sees_every_prefix_once_with_its_last_item_as_target(split):
    rows, ends = prefix_samples(np.array([3, 1, 4, 0]))
    assert rows.tolist() == [0, 0, 2, 2, 2] and ends.tolist() == [2, 3, 2, 3, 4]
    sequences = Ragged.from_lists([[0, 1, 2], [5], [6, 7, 8, 9], []])
    batch = prefix_batches(sequences, rows, ends, max_length=2)
    # tokens are items + 1, right-aligned, cut to the last max_length + 1 items
    assert batch.last_only and batch.users.tolist() == [0, 0, 2, 2, 2]
    assert batch.tokens.tolist() == [[0, 1, 2], [1, 2, 3], [0, 7, 8], [7, 8, 9], [8, 9, 10]]
    # SASRec learns the cycle from prefixes; a model whose loss reads every position refuses
    set_seed(0)
    model = small_model("sasrec-ce", None, split)
    config = dataclasses.replace(FAST, prefixes=True, epochs=20, eval_every=20)
    result = fit(model, split, config, progress=False)
    assert result.log[-1]["loss"] < 0.5 * result.log[0]["loss"]
    assert result.best_valid["recall@10"] == 1.0
    with pytest.raises(ConfigError, match="prefixes"):
        fit(small_model("bert4rec", None, split), split, config, progress=False)


def test_bsarec_filter_splits_low_and_high_frequencies():
    """beta = 1 leaves the input as it is; beta = 0 keeps only the lowest c // 2 + 1
    frequencies: a constant sequence passes, an alternating one is removed."""
    model = BSARec(20, max_length=8, hidden=4, layers=1, dropout=0.0, c=1)
    f = model.blocks[0].filter
    f.ln = torch.nn.Identity()  # look at the filter's own output: x + filtered(x)
    constant, alternating = torch.ones(1, 8, 4), torch.tensor([1.0, -1.0] * 4).repeat(4, 1).T[None]
    with torch.no_grad():
        f.sqrt_beta.fill_(1.0)
        assert torch.allclose(f(alternating), 2 * alternating, atol=1e-6)
        f.sqrt_beta.zero_()
        assert torch.allclose(f(constant), 2 * constant, atol=1e-6)
        assert torch.allclose(f(alternating), alternating, atol=1e-6)
    # scoring always reads a full window: a history shorter than max_length gives finite scores
    assert model.scores(Ragged.from_lists([[3], [1, 2, 5]])).shape == (2, 20)


def test_batches_are_right_aligned_and_grouped_by_length():
    seqs = Ragged.from_lists([[0, 1, 2], [4], [5, 6], [7, 8, 9, 10]])
    assert pad_histories(seqs, 3).tolist() == [[1, 2, 3], [0, 0, 5], [0, 6, 7], [9, 10, 11]]
    batch = sequence_batches(seqs, np.array([1, 2]), max_length=5)
    assert batch.tokens.tolist() == [[0, 5], [6, 7]]  # as wide as the longest row, no wider
    rows = np.arange(4)
    batches = length_batches(rows, seqs.lengths, 2, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2, 3]
    assert sorted(sorted(b.tolist()) for b in batches) == [[0, 3], [1, 2]]


def test_fdsa_reads_attributes_and_needs_them(dataset):
    attrs, n = item_attributes(dataset)
    assert len(attrs) == dataset.num_items and n == 5
    bare = cycle_dataset(attributes=False)
    with pytest.raises(MissingItemAttributesError, match="FDSA needs item attributes"):
        item_attributes(bare)


def test_named_errors_for_bad_input(split):
    with pytest.raises(UnknownModelError, match="gru4rec") as err:
        check_models(["sasrec-ce", "gru4rec"])
    assert "tiger" in str(err.value)  # the message lists what is available
    with pytest.raises(UnknownModelError):
        check_models([])
    with pytest.raises(BaselineError, match="loss"):
        SASRec(10, loss="hinge")
    with pytest.raises(BaselineError, match="dropout"):
        SASRec(10, dropout=1.5)
    with pytest.raises(BaselineError, match="divisible"):
        SASRec(10, hidden=30, heads=4)
    with pytest.raises(BaselineError, match="negatives >= 1"):
        SASRec(10, loss="ss", negatives=0)
    with pytest.raises(BaselineError, match="layers, heads and hidden"):
        SASRec(10, layers=0)
    with pytest.raises(BaselineError, match="ff_multiplier"):
        ESASRec(10, ff_multiplier=0)
    with pytest.raises(BaselineError, match="alpha"):
        BSARec(10, alpha=1.5)
    with pytest.raises(BaselineError, match="c must be"):
        BSARec(10, max_length=8, c=9)
    with pytest.raises(BaselineError, match="prefixes only"):
        fit(BSARec(split.num_items, max_length=8), split,
            dataclasses.replace(FAST, epochs=1), progress=False)  # fmt: skip
    model = SASRec(10, max_length=4)
    with pytest.raises(BaselineError, match="history items"):
        model.scores(Ragged.from_lists([[3, 10]]))
    with pytest.raises(BaselineError, match="history must be"):
        model.scores(torch.zeros(2, 3))
    with pytest.raises(BaselineError, match="k must be"):
        model.rank(split.test, k=0)
    with pytest.raises(ConfigError, match="patience"):
        BaselineTrainConfig(patience=0)
    with pytest.raises(ConfigError, match="max_length"):
        fit(SASRec(split.num_items, max_length=8), split, BaselineTrainConfig(max_length=50))


def test_run_benchmark_writes_one_table(dataset, tmp_path):
    folder = dataset.save(tmp_path / "cycle")
    config = BaselineTrainConfig(max_length=8, batch_size=32, epochs=2, max_seconds=None)
    out = tmp_path / "out"
    run_benchmark(str(folder), ["pop", "sasrec-ce"], out, config=config, progress=False)
    run_benchmark(str(folder), ["fdsa"], out, config=config, progress=False)  # kept beside
    result = json.loads((out / "baselines_cycle.json").read_text())
    assert list(result["models"]) == ["pop", "sasrec-ce", "fdsa"]
    for record in result["models"].values():
        for part in ("valid", "test", "valid_exclude_seen", "test_exclude_seen"):
            metrics = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
            assert set(record["results"][part]) == {*metrics, *(f"{m}_se" for m in metrics)}
            assert all(record["results"][part][f"{m}_se"] >= 0 for m in metrics)
        assert record["seconds"]["train"] >= 0
    assert result["commit"] is not None and "machine" in result
    assert all(r["commit"] == result["commit"] for r in result["models"].values())
    table = (out / "baselines_cycle.md").read_text()
    # an uncapped run says so: the default cap is what the other rows had
    assert "| sasrec-ce (time cap none) |" in table and "| fdsa (time cap none) |" in table
    assert "| pop |" in table and "published" in table
    with pytest.raises(UnknownModelError):
        run_benchmark(str(folder), ["sasrec"], out, config=config, progress=False)


def test_a_sweep_overrides_settings_and_never_tests(dataset, tmp_path):
    """A sweep's record keeps its overrides, has validation numbers only, and the table says so
    (with the time cap where it differs from the default)."""
    folder = dataset.save(tmp_path / "cycle")
    config = BaselineTrainConfig(max_length=8, epochs=2, max_seconds=None)
    out = tmp_path / "sweep"
    settings = BaselineSettings({"hidden": 16, "negatives": 4}, {"batch_size": 8}, test=False)
    run_benchmark(str(folder), ["sasrec-ss"], out, config=config, settings=settings,
                  progress=False)  # fmt: skip
    record = json.loads((out / "baselines_cycle.json").read_text())["models"]["sasrec-ss"]
    assert set(record["results"]) == {"valid", "valid_exclude_seen"}
    assert record["hyperparameters"]["hidden"] == 16 and record["hyperparameters"]["negatives"] == 4
    assert record["hyperparameters"]["blocks"] == 1  # the registered setting stays
    assert record["train_config"]["batch_size"] == 8
    assert record["hyperparameters"]["settings"]["test"] is False
    table = (out / "baselines_cycle.md").read_text()
    assert "| sasrec-ss (hidden=16, negatives=4, batch_size=8) (time cap none) | valid " in table
    with pytest.raises(BaselineError, match="does not take"):
        run_benchmark(str(folder), ["sasrec-ss"], out, config=config,
                      settings=BaselineSettings({"width": 3}), progress=False)  # fmt: skip
    with pytest.raises(BaselineError, match="unknown training setting"):
        run_benchmark(str(folder), ["sasrec-ss"], out, config=config,
                      settings=BaselineSettings(train={"speed": 3}), progress=False)  # fmt: skip


def test_cli_benchmark(dataset, tmp_path, capsys):
    folder = dataset.save(tmp_path / "cycle")
    out = tmp_path / "out"
    args = ["benchmark", "--dataset", str(folder), "--models", "pop", "--out", str(out),
            "--max-length", "8", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "| pop |" in capsys.readouterr().out
    assert (out / "baselines_cycle.json").exists()
    assert main(["benchmark", "--dataset", str(folder), "--models", "gru4rec", "--out", str(out)]) == 2
    assert "gru4rec" in capsys.readouterr().err


def test_tiger_is_onerec_code_in_tiger_configuration(dataset, tmp_path):
    """TIGER (RQ-VAE IDs from content, dense encoder-decoder, beam-search ranking) learns the
    cycle and lands in the same table, with the same metrics, as the scoring baselines."""
    folder = dataset.save(tmp_path / "cycle")
    settings = TigerSettings(
        history_length=8, codebook_size=4, levels=2, rqvae_epochs=30, epochs=25, patience=25,
        lr=5e-3, batch_size=16, eval_beam=10, eval_users=None,
        model={"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
               "d_ff": 64, "n_user_buckets": 8, "dropout": 0.0},
    )  # fmt: skip
    config = BaselineTrainConfig(max_length=8, max_seconds=None)
    out = tmp_path / "out"
    result = run_benchmark(str(folder), ["pop", "tiger"], out, config=config,
                           work_dir=tmp_path / "work", tiger=settings, progress=False)  # fmt: skip
    record = result["models"]["tiger"]
    assert record["hyperparameters"]["model"]["n_experts"] == 0  # dense, as TIGER
    tokens = record["hyperparameters"]["tokens"]
    assert tokens["tokenizer"]["method"] == "rqvae"
    assert list(tokens["embeddings"]["sources"]) == ["attributes"]  # content only
    assert record["results"]["test"]["recall@5"] >= 0.9, record["results"]
    assert record["results"]["test"]["ndcg@5"] > record["results"]["test"]["recall@5"] - 0.35
    pop = result["models"]["pop"]["results"]["test"]["ndcg@5"]
    assert record["results"]["test"]["ndcg@5"] > pop + 0.3
    assert set(record["results"]) == {"valid", "test", "valid_exclude_seen", "test_exclude_seen"}
    # the table says when TIGER ran at other sizes than its preset's
    table = (out / "baselines_cycle.md").read_text()
    assert "| tiger (d_model=32, n_heads=2, encoder_layers=1," in table
    assert (tmp_path / "work" / "tiger_cycle" / "model" / "model.safetensors").exists()


def test_tiger_reads_the_published_beauty_codes_aligned_to_our_items(data_dir, tmp_path):
    """Beauty has no item text here: TIGER takes CollisionGenRec's text RQ-VAE codes, key k = our
    raw item k + 1, first 3 levels, plus our collision code."""
    from onerec.baselines.tiger import tiger_tokens
    from onerec.data.registry import load_dataset
    from onerec.tokenizer.pipeline import load_tokenization
    from onerec.tokenizer.published import published_ids, read_index_json

    ds = load_dataset("beauty", data_dir)
    ids = published_ids(ds, data_dir, levels=3)
    keys, codes = read_index_json(data_dir / "cgr" / "Beauty.rqvae_native.index.json")
    assert ids.n_items == ds.num_items and ids.base_levels == 3 and ids.n_levels == 4
    for key in (0, 7, 12100):
        row = int(ds.log.items.index(np.array([key + 1]))[0])
        assert ids.codes[row, :3].tolist() == codes[key, :3].tolist()
    # 10,600 distinct 3-code prefixes of 12,101 items: a fifth of them share theirs
    assert 0.15 < ids.collision_rate_before < 0.25 and ids.level_sizes[:3] == [256] * 3
    info = tiger_tokens(ds, tmp_path / "tokens", TigerSettings(), seed=0, data_dir=data_dir)
    assert info["published"].endswith("Beauty.rqvae_native.index.json")
    items, saved = load_tokenization(tmp_path / "tokens")
    assert torch.equal(saved.codes, ids.codes) and np.array_equal(items.raw, ds.log.items.raw)
    with pytest.raises(ConfigError, match="published"):
        tiger_tokens(ds, tmp_path / "t2", TigerSettings(codes="bogus"), seed=0)
    with pytest.raises(ConfigError, match="no published tokenization for 'other'"):
        published_ids(dataclasses.replace(ds, name="other"), data_dir)


def test_records_name_the_blocks_of_every_transformer_baseline():
    """SASRec's, eSASRec's LiGR and BSARec's blocks all count: depth, heads and width land in
    the record whatever the block class is called."""
    models = {(2, 2, 16): SASRec(20, 8, hidden=16, layers=2, heads=2),
              (3, 1, 16): ESASRec(20, 8, hidden=16, layers=3, heads=1),
              (2, 1, 32): BSARec(20, 8, hidden=32, layers=2, heads=1, c=3),
              (2, 2, 64): BERT4Rec(20, 8)}  # fmt: skip
    for (blocks, heads, hidden), model in models.items():
        h = _hyperparameters(model)
        assert (h["blocks"], h["heads"], h["hidden"]) == (blocks, heads, hidden), model.name


def test_selection_split_records_stay_apart(dataset, tmp_path):
    """``selection_split`` trains on one item fewer per user and writes its own record, whose
    "test" is the full log's validation example; a seed summary reads the selection records."""
    folder = dataset.save(tmp_path / "cycle")
    out = tmp_path / "out"
    full = leave_one_out(dataset.log, history_length=8)
    for seed in (0, 1):
        config = BaselineTrainConfig(max_length=8, batch_size=32, epochs=1, max_seconds=None,
                                     seed=seed)  # fmt: skip
        run_benchmark(str(folder), ["pop"], out, config=config, progress=False,
                      selection_split=True)  # fmt: skip
    assert not (out / "baselines_cycle.json").exists()
    record = json.loads((out / "baselines_cycle_selection.json").read_text())
    users = len(full.test)
    assert record["split"]["selection"] and record["split"]["dropped"]["rows_removed"] == users
    assert record["split"]["train_interactions"] == len(full.train) - users
    assert record["split"]["test_examples"] == users  # every user still has a target
    assert record["protocol"].startswith("selection split")
    assert record["models"]["pop"]["published"] is None
    summary = write_seed_summary(out, "cycle_selection", [0, 1])
    assert summary["records"] == ["baselines_cycle_selection.json",
                                  "baselines_cycle_selection_seed1.json"]  # fmt: skip


def test_seed_records_and_their_summary(dataset, tmp_path):
    """A seed other than 0 writes its own record; the summary is each model's mean and sample
    sd over seeds, in the seen-items setting each seed's validation selects."""
    folder = dataset.save(tmp_path / "cycle")
    out = tmp_path / "out"
    for seed in (0, 1):
        config = BaselineTrainConfig(max_length=8, batch_size=32, epochs=2, max_seconds=None,
                                     seed=seed)  # fmt: skip
        run_benchmark(str(folder), ["pop", "sasrec-ce"], out, config=config, progress=False)
    assert (out / "baselines_cycle.json").is_file() and (out / "baselines_cycle_seed1.md").is_file()
    records = [json.loads((out / f).read_text())
               for f in ("baselines_cycle.json", "baselines_cycle_seed1.json")]  # fmt: skip
    summary = write_seed_summary(out, "cycle", [0, 1])
    assert summary["seeds"] == [0, 1] and summary["left_out"] == []
    assert summary["records"] == ["baselines_cycle.json", "baselines_cycle_seed1.json"]
    for model in ("pop", "sasrec-ce"):
        tests = []
        for r in records:
            res = r["models"][model]["results"]
            tests.append(res["test_exclude_seen" if exclude_seen_selected(res) else "test"])
        got = summary["models"][model]["test"]["recall@10"]
        values = [t["recall@10"] for t in tests]
        assert got["mean"] == pytest.approx(sum(values) / 2)
        assert got["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert summary["models"]["pop"]["test"]["ndcg@10"]["sd"] == 0  # popularity has no seed
    assert json.loads((out / "baselines_cycle_seeds.json").read_text())["models"].keys() == {
        "pop", "sasrec-ce"}
    assert "| sasrec-ce | " in (out / "baselines_cycle_seeds.md").read_text()
    one = BaselineTrainConfig(max_length=8, batch_size=32, epochs=1, max_seconds=None, seed=1)
    run_benchmark(str(folder), ["fdsa"], out, config=one, progress=False)  # seed 1 only
    assert "Not in every seed's record (or validation only): fdsa." in seeds_table(
        write_seed_summary(out, "cycle", [0, 1]))
    with pytest.raises(RunFileError, match="--seed 2"):
        write_seed_summary(out, "cycle", [0, 2])
    with pytest.raises(BaselineError, match="2 or more"):
        summarize_seeds(records[:1])
    with pytest.raises(BaselineError, match="distinct seeds"):
        summarize_seeds([records[0], records[0]])
