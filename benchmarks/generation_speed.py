"""Generation speed: our session beam search vs Hugging Face T5 ``generate`` on the same weights,
with their agreement, and training throughput as a fraction of the machine's matmul peak.

    python benchmarks/generation_speed.py --run RUN_DIR --data-dir ../shared/data \
        --out benchmarks/results
        [--users 200 --hf-users 50 --batch 64 --batches 4 --hf-batches 2 --beam 32 --items 5]
        [--train-steps 20]
    python benchmarks/generation_speed.py --smoke      # tiny random model, synthetic data: seconds

RUN_DIR is a folder written by ``onerec train`` (model, semantic IDs, run.json naming the dataset).
Test users of the leave-one-out split (history: the last 20 items) are drawn with a fixed seed.

- **Ours**: ``beam_search_sessions`` (encoder once, vectorized trie, folded beams, KV cache).
- **HF**: our encoder once, then ``T5ForConditionalGeneration.generate`` on the mapped decoder
  (``onerec.model.hf_t5``: weights one-to-one, our cross-attention recency bias through one
  hook), beam search with ``prefix_allowed_tokens_fn`` over a Python dict trie, as in public
  TIGER code, plus a processor that turns HF's full-vocabulary log-softmax into our per-level
  one, so both searches score the same thing.
- Latency: one user per call (batch 1), p50 / p99 over ``--users`` users (``--hf-users`` for HF,
  a prefix of the same users), after warm-up calls. Throughput: users per second at ``--batch``
  users per call over ``--batches`` batches (``--hf-batches`` for HF), after one warm-up batch.
  Both include the encoder and the input preparation.
- Shared work: the mean time per batch-1 call inside the decoder's feed-forward (MoE) layers,
  which both sides run on the same rows (HF's decoder holds a copy of our MoE layer). HF's p50
  divided by it bounds the batch-1 speedup that any search implementation could reach.
- Agreement, per user that both ran: top-1 session identical, every returned beam identical
  (same order), same set of beams, and the largest score differences.
- Training: ``--train-steps`` ``Trainer`` steps of the same model config on real batches of the
  run's training config (fp32), timed after an untimed pass over the same batches that counts
  FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward; the optimizer's
  elementwise work is not counted). Tokens: encoder tokens (user token + L' per real history
  item) and decoder input positions of the targets actually scored (per target: k kept items
  give k * (L'+1) - 1 positions); padding and masked targets excluded ("computed" counts them).
  Peak: the best of several fp32 ``torch.mm`` of ``--peak-size`` cubed, timed in the same run.

Threads: torch's default (recorded as ``torch_threads``). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from onerec.data.examples import Examples
from onerec.data.registry import load_dataset
from onerec.data.splits import Split, leave_one_out
from onerec.generation import beam_search_sessions
from onerec.model import OneRec, OneRecConfig, pad_history
from onerec.model.hf_t5 import (
    GeneratedSessions,
    SessionPrefixConstraint,
    hf_decoder_logits,
    hf_generate_sessions,
    to_hf_t5,
)
from onerec.runinfo import environment, peak_rss_bytes
from onerec.tokenizer.pipeline import load_tokenization
from onerec.tokenizer.residual import SemanticIds
from onerec.training.trainer import TrainConfig, Trainer
from onerec.training.windows import length_batches

Search = Callable[[Examples], tuple[torch.Tensor, torch.Tensor]]  # -> items, log_probs


# --- inputs -------------------------------------------------------------------------------------


def load_run(args: argparse.Namespace) -> tuple[OneRec, SemanticIds, Split, TrainConfig, str]:
    """The trained model, its semantic IDs, the leave-one-out split and training config."""
    run = Path(args.run)
    model = OneRec.load(run)
    _, ids = load_tokenization(run)
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    name = args.dataset or info.get("dataset", "beauty")
    dataset = load_dataset(name, args.data_dir)
    split = leave_one_out(dataset.log, history_length=20)
    saved = run / "train_config.json"
    train = TrainConfig()
    if saved.exists():
        train = TrainConfig.from_dict(json.loads(saved.read_text()))
    return model, ids, split, train, name


def smoke_inputs() -> tuple[OneRec, SemanticIds, Split, TrainConfig, str]:
    """A tiny model with large random weights (well-separated scores, so agreement is not
    decided by float ties), random unique semantic IDs and a small synthetic log."""
    from onerec.data.synthetic import SyntheticConfig, generate

    dataset = generate(SyntheticConfig(num_users=300, num_items=400, seed=0))
    split = leave_one_out(dataset.log, history_length=20)
    g = torch.Generator().manual_seed(0)
    sizes = [8, 8, 8]
    codes = torch.stack([torch.randint(k, (dataset.num_items,), generator=g) for k in sizes], 1)
    ids = SemanticIds.from_codes(codes, sizes)
    torch.manual_seed(0)
    model = OneRec(OneRecConfig.preset("tiny", ids.level_sizes, max_history=20))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(1.0, 0.2)
    train = TrainConfig(batch_size=64, history_length=20, window_items=50)
    return model.eval(), ids, split, train, "synthetic"


# --- generation ---------------------------------------------------------------------------------


def ours_search(model: OneRec, ids: SemanticIds, beam: int, n_items: int) -> Search:
    def search(rows: Examples) -> tuple[torch.Tensor, torch.Tensor]:
        out = beam_search_sessions(model, rows.history, torch.from_numpy(rows.user), ids, beam,
                                   n_items)  # fmt: skip
        return out.items, out.log_probs

    return search


def hf_search(model: OneRec, ids: SemanticIds, beam: int, n_items: int) -> Search:
    """HF generate on the mapped decoder; input preparation and encoder as ``_prepare`` in
    ``beam_search_sessions`` does them, so both sides time the same work around the loop."""
    hf = to_hf_t5(model)
    constraint = SessionPrefixConstraint(ids, model.layout)

    def search(rows: Examples) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            items = pad_history(rows.history, model.config.max_history)
            tokens, mask = model.layout.encode_history(items, ids.codes)
            memory, memory_mask = model.encode(tokens, mask, torch.from_numpy(rows.user))
        out: GeneratedSessions = hf_generate_sessions(hf, model, memory, memory_mask, constraint,
                                                      beam, n_items)  # fmt: skip
        return out.items, out.log_probs

    return search


def first(users: Examples, n: int) -> Examples:
    return users.take(np.arange(min(n, len(users))))


def latency(search: Search, users: Examples, warmup: int) -> tuple[dict[str, Any], list]:
    """Per-user (batch 1) latency percentiles, and every user's result."""
    for i in range(min(warmup, len(users))):
        search(users.take(np.array([i])))
    seconds, results = [], []
    for i in range(len(users)):
        start = time.perf_counter()
        results.append(search(users.take(np.array([i]))))
        seconds.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(seconds)
    summary = {"users": len(users), "warmup_calls": warmup, "p50_ms": float(np.percentile(ms, 50)),
               "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}  # fmt: skip
    return summary, results


def throughput(search: Search, users: Examples, batch: int, n_batches: int) -> tuple[dict, list]:
    """Users per second at ``batch`` users per call, after one warm-up call."""
    n_batches = max(1, min(n_batches, len(users) // batch))
    search(users.take(np.arange(min(batch, len(users)))))
    results, start = [], time.perf_counter()
    for k in range(n_batches):
        results.append(search(users.take(np.arange(k * batch, min((k + 1) * batch, len(users))))))
    seconds = time.perf_counter() - start
    n = sum(len(r[0]) for r in results)
    return {"batch": batch, "batches": n_batches, "users": n, "seconds": seconds,
            "users_per_second": n / seconds}, results  # fmt: skip


def decoder_ffn_ms(model: OneRec, search: Search, users: Examples) -> float:
    """Mean milliseconds per batch-1 call spent inside the decoder's feed-forward layers (the
    MoE experts). Both sides run these same layers on the same rows (HF's decoder holds a copy
    of our MoE), so this time is shared: HF's latency divided by it bounds the batch-1 speedup
    any search implementation could reach. Timed in separate, untimed-elsewhere calls."""
    spent = [0.0]
    started: dict[int, float] = {}
    hooks = []
    for block in model.decoder:
        hooks.append(block.ffn.register_forward_pre_hook(
            lambda m, _: started.__setitem__(id(m), time.perf_counter())))
        hooks.append(block.ffn.register_forward_hook(
            lambda m, _, __: spent.__setitem__(0, spent[0] + time.perf_counter() - started[id(m)])))
    try:
        for i in range(len(users)):
            search(users.take(np.array([i])))
    finally:
        for h in hooks:
            h.remove()
    return 1000 * spent[0] / max(len(users), 1)


def agreement(ours: list, theirs: list) -> dict[str, Any]:
    """Compare per-call results ``(items (B, beam, m), log_probs (B, beam))`` user by user."""
    top1 = every = same_set = users = 0
    top1_diff = all_diff = 0.0
    for (oi, os_), (ti, ts) in zip(ours, theirs):
        for u in range(oi.shape[0]):
            users += 1
            top1 += bool(torch.equal(oi[u, 0], ti[u, 0]))
            every += bool(torch.equal(oi[u], ti[u]))
            same_set += {tuple(s) for s in oi[u].tolist()} == {tuple(s) for s in ti[u].tolist()}
            both = torch.isfinite(os_[u]) & torch.isfinite(ts[u])
            top1_diff = max(top1_diff, float((os_[u, 0] - ts[u, 0]).abs()))
            diff = (os_[u] - ts[u])[both].abs()
            all_diff = max(all_diff, float(diff.max()) if diff.numel() else 0.0)
    share = 1 / max(users, 1)
    return {"users": users, "top1_identical": top1 * share, "all_beams_identical": every * share,
            "beam_sets_identical": same_set * share, "max_abs_top1_score_diff": top1_diff,
            "max_abs_score_diff_by_rank": all_diff}  # fmt: skip


# --- training -----------------------------------------------------------------------------------


def matmul_peak(n: int, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s: the best of ``repeats`` ``torch.mm`` of n x n by n x n."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def batch_tokens(trainer: Trainer, rows: np.ndarray, n_codes: int) -> tuple[int, int]:
    """Useful (padding excluded) and computed token positions, encoder + decoder, of a batch."""
    tokens, mask, starts, _, _ = trainer._tensors(rows)
    b, n, n_levels = tokens.shape
    m = trainer.config.session_items
    enc_useful = b + int(mask.sum()) * n_levels
    targets = int((mask[:, 1:] & mask[:, :-1] & starts[:, 1:]).sum())
    dec_useful = (n_codes // n_levels) * (n_levels + 1) - targets  # k items: k*(L'+1) - 1
    computed = b * (1 + n * n_levels) + b * (n - 1) * (m * (n_levels + 1) - 1)
    return enc_useful + dec_useful, computed


def training_throughput(model: OneRec, ids: SemanticIds, split: Split, train: TrainConfig,
                        steps: int) -> dict[str, Any]:  # fmt: skip
    """Tokens/s and FLOP/s of ``steps`` training steps (see the module docstring)."""
    config = TrainConfig.from_dict({**asdict(train), "device": "cpu", "precision": "fp32"})
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(copy.deepcopy(model).train(), ids, split, config, run_dir)
        batches = length_batches(trainer.windows, config.batch_size, np.random.default_rng(0))
        batches = batches[:steps]
        flops, codes = [], []
        for rows in batches:  # untimed: counts FLOPs, and warms up
            with FlopCounterMode(display=False) as counter:
                codes.append(trainer._train_step(rows)["codes"])
            flops.append(counter.get_total_flops())
        start = time.perf_counter()
        for rows in batches:
            trainer._train_step(rows)
        seconds = time.perf_counter() - start
        useful, computed = zip(*(batch_tokens(trainer, r, c) for r, c in zip(batches, codes)))
    return {
        "steps": len(batches), "batch_size_targets": config.batch_size,
        "session_items": config.session_items, "seconds": seconds,
        "seconds_per_step": seconds / len(batches),
        "tokens_per_second": sum(useful) / seconds,
        "computed_tokens_per_second": sum(computed) / seconds,
        "flops_per_step": sum(flops) / len(batches), "flop_per_second": sum(flops) / seconds,
    }  # fmt: skip


# --- main ---------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    o, h = result["ours"], result["hf"]
    ol, hl, ot, ht = o["latency"], h["latency"], o["throughput"], h["throughput"]
    lines = [
        "| | ours | HF T5 generate | speedup |", "|---|---|---|---|",
        f"| latency p50, batch 1 (ms) | {ol['p50_ms']:.1f} | {hl['p50_ms']:.1f} "
        f"| {hl['p50_ms'] / ol['p50_ms']:.1f}x |",
        f"| latency p99, batch 1 (ms) | {ol['p99_ms']:.1f} | {hl['p99_ms']:.1f} "
        f"| {hl['p99_ms'] / ol['p99_ms']:.1f}x |",
        f"| throughput, batch {ot['batch']} (users/s) | {ot['users_per_second']:.1f} | "
        f"{ht['users_per_second']:.1f} | {result['speedup']['throughput']:.1f}x |",
        f"| users measured (latency / throughput) | {ol['users']} / {ot['users']} | "
        f"{hl['users']} / {ht['users']} | |",
        f"| decoder feed-forward per user, batch 1 (ms; the same layers on both sides) | "
        f"{result['shared_decoder_ffn_ms_per_user']:.1f} | same | bound "
        f"{result['batch_1_speedup_bound']:.1f}x |",
    ]  # fmt: skip
    a = result["agreement"]["batch_1"]
    t = result["training"]
    lines += [
        "",
        f"Agreement (batch 1, {a['users']} users): top-1 identical {a['top1_identical']:.0%}, "
        f"all beams identical {a['all_beams_identical']:.0%}, beam sets identical "
        f"{a['beam_sets_identical']:.0%}, max |score diff| {a['max_abs_score_diff_by_rank']:.1e}",
        f"Training: {t['tokens_per_second']:.0f} tokens/s ({t['computed_tokens_per_second']:.0f} "
        f"computed incl. padding), {t['flop_per_second'] / 1e9:.2f} GFLOP/s = "
        f"{t['fraction_of_matmul_peak']:.1%} of the measured fp32 matmul peak "
        f"({result['matmul_peak_flop_per_second'] / 1e9:.1f} GFLOP/s)",
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a folder written by `onerec train`")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--dataset", default=None, help="default: the run's run.json, else beauty")
    p.add_argument("--users", type=int, default=200, help="users for our batch-1 latency")
    p.add_argument("--hf-users", type=int, default=50, help="users for HF's batch-1 latency")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=4, help="timed batches for our throughput")
    p.add_argument("--hf-batches", type=int, default=2, help="timed batches for HF's throughput")
    p.add_argument("--beam", type=int, default=32)
    p.add_argument("--items", type=int, default=5, help="items per generated session")
    p.add_argument("--warmup", type=int, default=5, help="untimed batch-1 calls before timing")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny random model, synthetic data")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    if args.smoke:
        args.users, args.hf_users, args.batch, args.batches, args.hf_batches = 6, 4, 4, 2, 1
        args.warmup, args.train_steps, args.peak_size = 1, 3, 512
        model, ids, split, train, dataset = smoke_inputs()
    elif args.run is None:
        p.error("--run RUN_DIR is required (or --smoke)")
    else:
        model, ids, split, train, dataset = load_run(args)
    threads = torch.get_num_threads()

    test = split.test
    n_needed = max(args.users, args.hf_users, args.batch * (max(args.batches, args.hf_batches) + 1))
    rows = np.random.default_rng(args.seed).permutation(len(test))[: min(n_needed, len(test))]
    users = test.take(np.sort(rows))

    # the mapping, checked once before anything is timed
    sample = users.take(np.arange(min(8, len(users))))
    hf_check = to_hf_t5(model)
    with torch.no_grad():
        items = pad_history(sample.history, model.config.max_history)
        tokens, mask = model.layout.encode_history(items, ids.codes)
        memory, memory_mask = model.encode(tokens, mask, torch.from_numpy(sample.user))
        targets = ids.codes[torch.from_numpy(sample.target.values[: len(sample)])]
        session = targets.unsqueeze(1).expand(-1, args.items, -1)  # any codes will do
        decoder_input = model.layout.session_input(session, as_codes=True)
        ours_logits = model.logits(model.decode(memory, memory_mask, decoder_input))
    hf_logits = hf_decoder_logits(hf_check, model, memory, memory_mask, decoder_input)
    mapping_diff = float((ours_logits - hf_logits).abs().max())
    print(f"teacher-forced logits, ours vs HF: max |diff| {mapping_diff:.2e}", flush=True)

    ours = ours_search(model, ids, args.beam, args.items)
    hf = hf_search(model, ids, args.beam, args.items)
    print("ours: batch-1 latency ...", flush=True)
    ours_lat, ours_res = latency(ours, first(users, args.users), args.warmup)
    print(f"  p50 {ours_lat['p50_ms']:.1f} ms, p99 {ours_lat['p99_ms']:.1f} ms", flush=True)
    print("HF: batch-1 latency ...", flush=True)
    hf_lat, hf_res = latency(hf, first(users, args.hf_users), args.warmup)
    print(f"  p50 {hf_lat['p50_ms']:.1f} ms, p99 {hf_lat['p99_ms']:.1f} ms", flush=True)
    ffn_ms = decoder_ffn_ms(model, ours, first(users, min(args.users, 50)))
    print(f"  decoder feed-forward (shared by both): {ffn_ms:.1f} ms per user", flush=True)
    print(f"ours: throughput at batch {args.batch} ...", flush=True)
    ours_tp, ours_batches = throughput(ours, users, args.batch, args.batches)
    print(f"  {ours_tp['users_per_second']:.1f} users/s", flush=True)
    print(f"HF: throughput at batch {args.batch} ...", flush=True)
    hf_tp, hf_batches = throughput(hf, users, args.batch, args.hf_batches)
    print(f"  {hf_tp['users_per_second']:.1f} users/s", flush=True)

    print("training throughput ...", flush=True)
    peak = matmul_peak(args.peak_size)
    training = training_throughput(model, ids, split, train, args.train_steps)
    training["fraction_of_matmul_peak"] = training["flop_per_second"] / peak

    result = {
        "benchmark": "generation_speed", **environment(),
        "config": {"smoke": args.smoke, "run": str(args.run) if args.run else None,
                   "dataset": dataset, "model": model.config.to_dict(),
                   "describe": model.describe(),
                   "beam": args.beam, "session_items": args.items, "history_length": 20,
                   "torch_threads": threads, "seed": args.seed,
                   "train_config": asdict(train), "matmul_peak_size": args.peak_size},
        "mapping_max_abs_logit_diff": mapping_diff,
        "ours": {"latency": ours_lat, "throughput": ours_tp},
        "shared_decoder_ffn_ms_per_user": ffn_ms,
        "batch_1_speedup_bound": hf_lat["p50_ms"] / ffn_ms,
        "hf": {"latency": hf_lat, "throughput": hf_tp,
               "method": "T5ForConditionalGeneration.generate, num_beams=beam, "
                         "prefix_allowed_tokens_fn (PrefixConstrainedLogitsProcessor), "
                         "length_penalty=0, our encoder output as encoder_outputs"},
        "speedup": {"latency_p50": hf_lat["p50_ms"] / ours_lat["p50_ms"],
                    "latency_p99": hf_lat["p99_ms"] / ours_lat["p99_ms"],
                    "throughput": ours_tp["users_per_second"] / hf_tp["users_per_second"]},
        "agreement": {
            "batch_1": agreement(ours_res[: len(hf_res)], hf_res),
            f"batch_{args.batch}": agreement(ours_batches[: len(hf_batches)], hf_batches),
        },
        "training": training, "matmul_peak_flop_per_second": peak,
        "peak_memory_gb": peak_rss_bytes() / 2**30,
        "goals": {"speedup": ">= 5 (latency and throughput)", "outputs": "identical sessions, "
                  "scores within 1e-4"},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("generation_speed_smoke.json" if args.smoke else "generation_speed.json")
    path.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(table(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
