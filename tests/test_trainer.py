"""Training: examples from training sequences, a falling loss, checkpoints and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from onerec.data import SyntheticConfig, generate, leave_one_out
from onerec.data.ragged import Ragged
from onerec.model import OneRec, OneRecConfig
from onerec.tokenizer.pipeline import TokenizeConfig, tokenize
from onerec.exceptions import ConfigError, CorruptCheckpointError
from onerec.training import (TrainConfig, Trainer, length_batches, prefix_windows,
                             training_windows)
from onerec.training.trainer import WeightAverage, load_last_weights
from onerec.embeddings import cooccurrence_embeddings


def test_windows_score_every_target_once_with_full_history():
    seqs = Ragged.from_lists([list(range(10)), [5, 6], [7], list(range(20, 27))])
    w = training_windows(seqs, history_length=3, max_length=5)
    # row 0 (10 items): targets 1-4 in [0, 5), then 5-6 after 3 items of context, then 7-8, 9
    assert w.user.tolist() == [0, 0, 0, 0, 1, 3, 3]
    assert w.items.tolist()[:4] == [[0, 1, 2, 3, 4], [2, 3, 4, 5, 6], [4, 5, 6, 7, 8], [6, 7, 8, 9]]
    assert w.first_target.tolist() == [1, 3, 3, 3, 1, 1, 3]
    for row, seq in enumerate(seqs):
        scored = []
        for items, first, user in zip(w.items, w.first_target, w.user):
            if user == row:
                scored += items[first:].tolist()
        assert scored == seq[1:].tolist()  # every item after the first is a target, once
    with pytest.raises(ConfigError, match="max_length"):
        training_windows(seqs, history_length=5, max_length=5)


def test_prefix_windows_make_every_target_its_own_window():
    seqs = Ragged.from_lists([list(range(7)), [5, 6], [7], list(range(20, 24))])
    w = prefix_windows(seqs, history_length=3)
    assert w.user.tolist() == [0] * 6 + [1] + [3] * 3
    assert w.items.tolist()[:6] == [[0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5],
                                    [3, 4, 5, 6]]  # fmt: skip
    assert w.n_targets.tolist() == [1] * 10
    for items, first in zip(w.items, w.first_target):
        assert first == len(items) - 1 and 1 <= first <= 3  # the target last, after its history
    # sessions of m items: the target's next m - 1 items ride along, cut at the sequence's end
    w3 = prefix_windows(seqs, history_length=2, session_items=3)
    assert w3.items.tolist()[:6] == [[0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5],
                                     [2, 3, 4, 5, 6], [3, 4, 5, 6], [4, 5, 6]]  # fmt: skip
    assert w3.first_target.tolist()[:6] == [1, 2, 2, 2, 2, 2]
    assert w3.n_targets.tolist() == [1] * 10
    with pytest.raises(ConfigError, match="session_items"):
        prefix_windows(seqs, history_length=3, session_items=0)


def test_prefix_samples_score_the_same_targets_as_whole_sequences(tmp_path: Path) -> None:
    """Without dropout, a step's summed losses over every target are the same whether each
    target is its own sample or every target of a sequence comes from one encoder pass: the
    encoder is block-causal, so a target's state does not depend on what follows it."""
    totals = {}
    for prefix in (False, True):
        config = TrainConfig(history_length=8, window_items=200, session_items=2, batch_size=64,
                             prefix_samples=prefix, device="cpu", precision="fp32")  # fmt: skip
        model, ids, split = setup(tmp_path, item_loss_weight=1.0)
        trainer = Trainer(model, ids, split, config, tmp_path / f"prefix{prefix}")
        model.eval()
        ntp = item = 0.0
        n_codes = n_items = 0
        with torch.no_grad():
            for rows in np.array_split(np.arange(len(trainer.windows)), 8):
                tokens, mask, starts, users, _, items = trainer._tensors(rows)
                out = model.sequence_loss(tokens, mask, users, 2, starts=starts, normalizer=1.0,
                                          items=items, catalog=ids.codes)  # fmt: skip
                ntp, item = ntp + float(out.ntp), item + float(out.item_sum)
                n_codes, n_items = n_codes + out.n_codes, n_items + out.n_item_targets
        totals[prefix] = (ntp, item, n_codes, n_items)
    (a, b, c, d), (a2, b2, c2, d2) = totals[False], totals[True]
    assert len(trainer.windows) == d2 == d > 500  # one window per target
    assert c2 == c
    assert a2 == pytest.approx(a, rel=1e-4) and b2 == pytest.approx(b, rel=1e-4)
    with pytest.raises(ConfigError, match="prefix_samples"):
        TrainConfig(prefix_samples="yes")  # type: ignore[arg-type]


def test_length_batches_group_similar_lengths_and_cover_everything():
    seqs = Ragged.from_lists([[1] * n for n in (2, 9, 3, 9, 2, 3, 9, 30)])
    w = training_windows(seqs, history_length=4, max_length=40)
    batches = length_batches(w, batch_targets=16, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    for b in batches:
        assert w.n_targets[b].sum() <= 16 or len(b) == 1
    # each batch is a run of neighbours in length order: no two batches' lengths interleave
    spans = sorted((w.items.lengths[b].min(), w.items.lengths[b].max()) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))


def setup(tmp: Path, length: int | None = None, **model_overrides):
    """A tiny OneRec (4 experts, top-2, no dropout unless overridden: set here, not taken from
    defaults that may change), the semantic IDs and the split it trains on. ``length``: keep
    only users with that many interactions, and only their first ``length`` (no padding)."""
    ds = generate(SyntheticConfig(num_users=120, num_items=60, mean_interactions=12, seed=0))
    log = ds.log.sorted()
    if length is not None:
        rank = np.arange(len(log)) - np.searchsorted(log.user, log.user)  # position in its user
        log = log.take((rank < length) & (np.bincount(log.user)[log.user] >= length))
    split = leave_one_out(log, history_length=8)
    x = cooccurrence_embeddings(split.train_sequences(), 60, dim=8)
    ids = tokenize(x, TokenizeConfig(levels=2, codebook_size=8, iters=5)).semantic_ids
    torch.manual_seed(0)
    sizes = dict(max_history=8, n_user_buckets=128, n_experts=4, top_k=2, moe_balance="bias",
                 dropout=0.0)  # fmt: skip
    model = OneRec(OneRecConfig.preset("tiny", ids.level_sizes, **{**sizes, **model_overrides}))
    return model, ids, split


def weights(model: OneRec) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_loss_falls_and_resume_is_exact(tmp_path: Path, ema_decay: float | None) -> None:
    # on the CPU in fp32: bit-for-bit comparisons need deterministic kernels
    config = TrainConfig(history_length=8, batch_size=64, epochs=2, lr=3e-3, warmup_steps=5,
                         patience=5, eval_beam=10, log_every=5, ema_decay=ema_decay,
                         device="cpu", precision="fp32")  # fmt: skip
    model, ids, split = setup(tmp_path, dropout=0.1)  # dropout: the resumed epoch's masks too
    state = Trainer(model, ids, split, config, tmp_path / "full").fit(progress=False)
    assert state["epochs"] == 2 and 0 <= state["best_valid_recall@10"] <= 1
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines]
    losses = [r["ntp"] for r in steps if "ntp" in r]
    assert losses[-1] < losses[0]
    assert (tmp_path / "full" / "model.safetensors").exists()
    assert (tmp_path / "full" / "training.png").stat().st_size > 1000
    best = OneRec.load(tmp_path / "full")  # the selected epoch, ready to serve
    assert best.config == model.config

    # the same run, killed during its second epoch's validation, then resumed from last.safetensors
    model1, ids1, split1 = setup(tmp_path, dropout=0.1)
    killed = Trainer(model1, ids1, split1, config, tmp_path / "part")
    calls = {"n": 0}
    validate = killed.validate

    def dies_on_second_call() -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return validate()

    killed.validate = dies_on_second_call  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        killed.fit(progress=False)
    model2, ids2, split2 = setup(tmp_path, dropout=0.1)
    torch.manual_seed(123)  # whatever state the new process is in
    resumed = Trainer(model2, ids2, split2, config, tmp_path / "part")
    resumed.fit(progress=False)
    assert resumed.step == state["steps"]
    full_log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    part_log = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in part_log] == [json.loads(x)["epoch"] for x in full_log]
    torch.testing.assert_close(weights(model2), weights(model), rtol=0, atol=0)
    # the selected weights above may be the first epoch's, written before the kill; the last
    # checkpoint is the resumed epoch's own: raw weights, AdamW moments, the moving average and
    # the counters, bit for bit
    full, part = (load_file(tmp_path / run / "last.safetensors") for run in ("full", "part"))
    assert sorted(part) == sorted(full)
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in full)
    assert any(k.startswith("ema.") for k in full) == (ema_decay is not None)
    assert full["trainer.counters"][0] == 2  # written after the second (resumed) epoch
    for k in full:
        if k != "trainer.elapsed":  # wall-clock seconds
            torch.testing.assert_close(part[k], full[k], rtol=0, atol=0, msg=k)


def test_item_head_trains_with_the_model_and_reranks_its_validation(tmp_path: Path) -> None:
    """With item_loss_weight the trainer feeds the item head its targets: the head's weights
    move, and the saved model keeps its head and its re-ranking weight."""
    config = TrainConfig(history_length=8, batch_size=64, epochs=1, lr=3e-3, warmup_steps=5,
                         patience=5, eval_beam=10, log_every=1, device="cpu",
                         precision="fp32")  # fmt: skip
    model, ids, split = setup(tmp_path, item_loss_weight=1.0, rerank_weight=0.5)
    before = model.item_query.weight.detach().clone()
    state = Trainer(model, ids, split, config, tmp_path / "run").fit(progress=False)
    assert 0 <= state["best_valid_recall@10"] <= 1
    assert not torch.equal(model.item_query.weight, before)
    saved = OneRec.load(tmp_path / "run")
    assert saved.item_query is not None and saved.config.rerank_weight == 0.5
    steps = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    item = [r["item"] for r in steps if "item" in r]  # the head's loss is logged per step
    assert item and all(0 < v < 10 for v in item)


def test_weight_average_follows_its_formula_and_swaps_back() -> None:
    layer = torch.nn.Linear(2, 1)
    start = weights(layer).clone()
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    average.update()
    d = 2 / 11  # the first update's decay: min(0.5, (1 + 1) / (10 + 1))
    expected = d * start + (1 - d) * (start + 1)
    torch.testing.assert_close(torch.cat([a.flatten() for a in average.params]), expected)
    with average.applied(layer):
        torch.testing.assert_close(weights(layer), expected)
    torch.testing.assert_close(weights(layer), start + 1)  # its own weights again


def test_weight_average_leaves_training_alone_and_is_what_is_kept(tmp_path: Path) -> None:
    kept = {}
    for name, decay in (("raw", None), ("ema", 0.9)):
        config = TrainConfig(history_length=8, batch_size=64, epochs=1, lr=3e-3, warmup_steps=5,
                             eval_beam=10, ema_decay=decay, device="cpu")  # fmt: skip
        model, ids, split = setup(tmp_path)
        Trainer(model, ids, split, config, tmp_path / name).fit(progress=False)
        kept[name] = (load_file(tmp_path / name / "last.safetensors"),
                      load_file(tmp_path / name / "model.safetensors"))  # fmt: skip
    (raw_last, raw_best), (ema_last, ema_best) = kept["raw"], kept["ema"]
    params = [k for k in raw_last if k.startswith("model.")]
    for k in params:  # the same training steps, with or without an average beside them
        torch.testing.assert_close(ema_last[k], raw_last[k], rtol=0, atol=0)
    # the kept model (the only epoch, so the best) holds the average, not the raw weights
    model, _, _ = setup(tmp_path)
    names = [n for n, _ in model.named_parameters()]
    for i, n in enumerate(names):
        torch.testing.assert_close(ema_best[n], ema_last[f"ema.{i}"], rtol=0, atol=0)
    assert any(not torch.equal(ema_best[n], raw_best[n]) for n in names)
    # the last epoch's weights as validation read them: the average, or the raw weights
    for name, best in (("raw", raw_best), ("ema", ema_best)):
        last, _, _ = setup(tmp_path)
        assert load_last_weights(last, tmp_path / name) == 1  # one finished epoch
        for n, p in last.named_parameters():
            torch.testing.assert_close(p.detach(), best[n], rtol=0, atol=0, msg=n)
    with pytest.raises(CorruptCheckpointError, match="last.safetensors"):
        load_last_weights(last, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_time_budget_stops_at_the_step_that_spends_it(tmp_path: Path) -> None:
    config = TrainConfig(history_length=8, batch_size=64, epochs=50, patience=50, eval_beam=10,
                         max_seconds=1e-6, ema_decay=None)  # fmt: skip
    model, ids, split = setup(tmp_path)
    trainer = Trainer(model, ids, split, config, tmp_path / "run")
    assert trainer.steps_per_epoch > 1
    state = trainer.fit(progress=False)
    assert state["epochs"] == 1 and state["stopped"] == "time" and state["seconds"] > 0
    assert state["steps"] == 1  # the epoch ended at its first step, then was validated
    epochs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "valid_recall@10" in x]  # fmt: skip
    assert len(epochs) == 1 and epochs[0]["partial"] is True
    assert (tmp_path / "run" / "model.safetensors").exists()  # the best (only) epoch is kept
    # a resumed run counts the time already spent: nothing more to do
    model, ids, split = setup(tmp_path)
    resumed = Trainer(model, ids, split, config, tmp_path / "run").fit(progress=False)
    assert resumed["epochs"] == 1 and resumed["seconds"] == state["seconds"]
    with pytest.raises(ConfigError, match="max_seconds"):
        TrainConfig(max_seconds=0)


def test_train_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from onerec.cli import main

    ds = generate(SyntheticConfig(num_users=80, num_items=40, mean_interactions=10, seed=1))
    ds.save(tmp_path / "ds")
    assert main(["tokenize", str(tmp_path / "ds"), "--embeddings", "collaborative", "--levels", "2",
                 "--codebook-size", "8", "--iters", "5", "--out", str(tmp_path / "tok")]) == 0
    args = ["train", str(tmp_path / "ds"), "--tokens", str(tmp_path / "tok"), "--preset", "tiny",
            "--history-length", "8", "--batch-size", "64", "--epochs", "1", "--eval-beam", "10",
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert "best validation recall@10" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert (tmp_path / "run" / "semantic_ids.parquet").exists()
    other = generate(SyntheticConfig(num_users=80, num_items=50, mean_interactions=10, seed=2))
    other.save(tmp_path / "other")
    assert main(["train", str(tmp_path / "other"), *args[2:-1], str(tmp_path / "run2")]) == 2
    assert "another catalog" in capsys.readouterr().err


def _ddp_worker(
    rank: int, world: int, init_file: str, out_dir: str, n_experts: int, length: int | None
) -> None:
    """One of ``world`` gloo processes training the run of ``test_data_parallel...``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, ids, split = setup(Path(out_dir), n_experts=n_experts, length=length)
        Trainer(model, ids, split, DDP_CONFIG, Path(out_dir) / "ddp").fit(progress=False)
        if rank == 0:
            torch.save(model.state_dict(), Path(out_dir) / "ddp_state.pt")
    finally:
        dist.destroy_process_group()


# a budget it never spends: every step still asks rank 0's clock (a broadcast all ranks join)
DDP_CONFIG = TrainConfig(history_length=8, batch_size=48, epochs=1, lr=3e-3, warmup_steps=3,
                         patience=5, eval_beam=10, log_every=1, max_seconds=3600.0,
                         ema_decay=None, device="cpu", precision="fp32")  # fmt: skip


# dense: sequences of every length (each process pads its half to its own width); experts:
# top-2 of 4 with bias balancing, on sequences of one length, because the router counts every
# decoder row, padding included, so a process's own padding would change the load it counts
@pytest.mark.parametrize("n_experts, length", [(0, None), (4, 10)])
def test_data_parallel_two_processes_match_one_process(
    tmp_path: Path, n_experts: int, length: int | None
) -> None:
    """2 gloo processes, each taking half of every batch, take the same steps as 1 process
    with the same global batch (up to float summation order). With experts, the routed load
    is summed over both processes too: the logged expert load and the balancing biases that
    follow it are those of the whole batch, not of one process's half."""
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    model, ids, split = setup(tmp_path, n_experts=n_experts, length=length)
    single_trainer = Trainer(model, ids, split, DDP_CONFIG, tmp_path / "single")
    if length is not None:
        assert set(single_trainer.windows.items.lengths.tolist()) == {length - 2}
    single_trainer.fit(progress=False)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), n_experts, length),
             nprocs=2, join=True)  # fmt: skip
    single = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
    double = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(single) == len(double) > 10  # step records and the epoch record
    for a, b in zip(map(json.loads, single), map(json.loads, double)):
        assert a["epoch"] == b["epoch"] and a.get("codes") == b.get("codes")
        assert ("expert_load" in a) == ("expert_load" in b) == (n_experts > 0 and "ntp" in a)
        if "ntp" in a:  # the global loss of every step, summed over both processes
            assert b["ntp"] == pytest.approx(a["ntp"], abs=1e-5)
        else:
            assert b["valid_recall@10"] == pytest.approx(a["valid_recall@10"], abs=1e-9)
        if "expert_load" in a:  # routed slot counts are integers: the shares agree exactly
            assert b["expert_load"] == a["expert_load"]
    ddp = torch.load(tmp_path / "ddp_state.pt")
    one = model.state_dict()
    biases = [k for k in one if k.endswith(".ffn.bias")]
    assert len(biases) == (2 if n_experts else 0)  # one per decoder layer
    for k in biases:  # each step moves them by +-bias_update_rate (1e-3) per expert
        assert one[k].abs().sum() > 0
        torch.testing.assert_close(ddp[k], one[k], rtol=0, atol=1e-7, msg=k)
    # Adam turns float-order noise in near-zero gradients into small weight differences; a
    # wrong reduction (a mean instead of a sum, a missing all-reduce) moves weights by ~lr
    flat = {name: torch.cat([v.flatten() for v in state.values()]) for name, state in
            (("one", one), ("ddp", ddp))}  # fmt: skip
    assert (flat["ddp"] - flat["one"]).abs().max() < 5e-3
    assert (flat["ddp"] - flat["one"]).abs().mean() < 5e-5
