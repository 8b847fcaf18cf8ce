"""A run folder is one consistent thing (issue 23): the silent failures, each a test.

- resuming a run with another tokenization, seed, learning rate or batch size stops with a
  named error that says what differs, and changes nothing in the run folder;
- ``--force-resume`` goes on and records what changed; allowed changes (more epochs) are
  recorded too, so ``train_config.json`` never misdescribes earlier epochs;
- serving checks that the weights, model config and semantic IDs belong together;
- ``onerec quickstart --out DIR`` never deletes a ``DIR/onerec`` it did not make;
- a dataset name with path separators cannot make ``onerec benchmark`` write outside ``--out``;
- ``--device cuda`` on a machine without it leaves no half-made run folder.

One small synthetic dataset, two tokenizations of it (different seeds, so different codes) and
one run trained once per module; tests that change a run work on a copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from onerec.cli import main
from onerec.data import SyntheticConfig, generate
from onerec.data.schema import Dataset
from onerec.exceptions import (
    DeviceUnavailableError,
    OutputExistsError,
    RunIntegrityError,
    RunMismatchError,
)
from onerec.generation import Recommender
from onerec.tokenizer.pipeline import load_tokenization

TRAIN = ["--preset", "tiny", "--history-length", "8", "--batch-size", "64", "--epochs", "1",
         "--eval-beam", "10"]  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ds/`` (a saved dataset), ``tok0/`` and ``tok1/`` (two tokenizations of it) and
    ``run/`` (one epoch trained with ``tok0``)."""
    root = tmp_path_factory.mktemp("made")
    ds = generate(SyntheticConfig(num_users=80, num_items=40, mean_interactions=10, seed=1))
    ds.save(root / "ds")
    for seed in (0, 1):
        assert main(["tokenize", str(root / "ds"), "--embeddings", "collaborative", "--levels",
                     "2", "--codebook-size", "8", "--iters", "5", "--seed", str(seed),
                     "--out", str(root / f"tok{seed}")]) == 0  # fmt: skip
    codes = [load_tokenization(root / f"tok{s}")[1].codes for s in (0, 1)]
    assert not torch.equal(*codes)  # the two tokenizations really differ
    assert main(["train", str(root / "ds"), "--tokens", str(root / "tok0"), *TRAIN,
                 "--out", str(root / "run")]) == 0  # fmt: skip
    return root


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256), to show nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def copy_run(made: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    return run


def train(made: Path, run: Path, *extra: str, tokens: str = "tok0") -> int:
    return main(["train", str(made / "ds"), "--tokens", str(made / tokens), *TRAIN, *extra,
                 "--out", str(run)])  # fmt: skip


# --- resume ---------------------------------------------------------------------------------------
def test_resume_with_another_tokenization_is_refused_and_changes_nothing(made, tmp_path, capsys):
    run = copy_run(made, tmp_path)
    before = snapshot(run)
    assert train(made, run, "--epochs", "2", tokens="tok1") == 2
    err = capsys.readouterr().err
    assert "RunMismatchError" in err and "semantic_ids" in err and "--force-resume" in err
    assert snapshot(run) == before  # the run's own semantic_ids.parquet is still the trained one


@pytest.mark.parametrize(
    "option, value, field",
    [("--seed", "7", "seed"), ("--lr", "0.01", "lr"), ("--batch-size", "32", "batch_size")],
)
def test_resume_with_other_settings_names_each_difference(made, tmp_path, capsys, option, value,
                                                          field):  # fmt: skip
    run = copy_run(made, tmp_path)
    before = snapshot(run)
    assert train(made, run, "--epochs", "2", option, value) == 2
    err = capsys.readouterr().err
    assert f"train_config.{field}" in err and value in err
    assert snapshot(run) == before  # train_config.json still describes the trained epoch


def test_resume_api_raises_the_named_error_with_every_difference(made, tmp_path):
    from onerec.data.registry import load_dataset
    from onerec.training import TrainConfig
    from onerec.training.pipeline import train_on_dataset

    run = copy_run(made, tmp_path)
    config = TrainConfig(history_length=8, batch_size=32, epochs=2, eval_beam=10, seed=3)
    with pytest.raises(RunMismatchError) as caught:
        train_on_dataset(load_dataset(str(made / "ds")), made / "tok1", run, config,
                         preset="tiny", progress=False)  # fmt: skip
    diff = caught.value.differences
    assert {"train_config.seed", "train_config.batch_size", "semantic_ids.codes"} <= set(diff)
    assert diff["train_config.seed"] == (0, 3)
    assert "train_config.epochs" not in diff  # more epochs is a normal resume


def test_force_resume_goes_on_and_records_what_changed(made, tmp_path, capsys):
    run = copy_run(made, tmp_path)
    assert train(made, run, "--epochs", "2", "--lr", "0.002", "--force-resume") == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["lr"] == 0.002 and saved["epochs"] == 2  # what is in force now
    (record,) = saved["resumes"]
    assert record["epoch"] == 1 and record["forced"] is True
    assert record["changed"] == {"train_config.lr": [0.001, 0.002], "train_config.epochs": [1, 2]}
    assert json.loads((run / "state.json").read_text())["epochs"] == 2


def test_an_allowed_change_is_recorded_without_force(made, tmp_path):
    run = copy_run(made, tmp_path)
    assert train(made, run, "--epochs", "2", "--max-seconds", "600") == 0
    (record,) = json.loads((run / "train_config.json").read_text())["resumes"]
    assert record["forced"] is False
    assert record["changed"] == {"train_config.epochs": [1, 2], "train_config.max_seconds": [None, 600.0]}


def test_overwrite_starts_over_and_force_with_overwrite_is_refused(made, tmp_path, capsys):
    run = copy_run(made, tmp_path)
    assert train(made, run, "--seed", "5", "--overwrite", tokens="tok1") == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["seed"] == 5 and "resumes" not in saved  # a new run, not a resumed one
    _, ids = load_tokenization(run)
    assert torch.equal(ids.codes, load_tokenization(made / "tok1")[1].codes)
    assert train(made, run, "--overwrite", "--force-resume") == 2
    assert "--overwrite" in capsys.readouterr().err


# --- serving --------------------------------------------------------------------------------------
def test_serving_refuses_semantic_ids_of_another_tokenization(made, tmp_path):
    run = copy_run(made, tmp_path)
    Recommender.from_run(run)  # the run as written serves
    shutil.copyfile(made / "tok1" / "semantic_ids.parquet", run / "semantic_ids.parquet")
    with pytest.raises(RunIntegrityError, match="semantic_ids.parquet"):
        Recommender.from_run(run)


def test_serving_refuses_weights_of_another_model_config(made, tmp_path):
    run = copy_run(made, tmp_path)
    config = json.loads((run / "model_config.json").read_text())
    config["max_session_items"] += 1  # a field no tensor shape shows
    (run / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(RunIntegrityError, match="model_config.json"):
        Recommender.from_run(run)


# --- output folders -------------------------------------------------------------------------------
def test_quickstart_never_deletes_an_onerec_folder_it_did_not_make(tmp_path, capsys):
    precious = tmp_path / "mine" / "onerec" / "notes.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("my work")
    assert main(["quickstart", "--scale", "tiny", "--out", str(tmp_path / "mine")]) == 2
    assert OutputExistsError.__name__ in capsys.readouterr().err
    assert precious.read_text() == "my work"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["onerec"]  # nothing written


def test_train_refuses_a_folder_another_command_made(made, tmp_path, capsys):
    tokens = tmp_path / "tok"
    shutil.copytree(made / "tok0", tokens)
    before = snapshot(tokens)
    assert main(["train", str(made / "ds"), "--tokens", str(tokens), *TRAIN,
                 "--out", str(tokens)]) == 2  # fmt: skip
    assert OutputExistsError.__name__ in capsys.readouterr().err
    assert snapshot(tokens) == before


def test_a_dataset_name_cannot_leave_the_benchmark_output_folder(made, tmp_path):
    from onerec.baselines.benchmark import run_benchmark
    from onerec.baselines.train import BaselineTrainConfig
    from onerec.data.registry import load_dataset

    ds = load_dataset(str(made / "ds"))
    folder = Dataset("../../escaped", ds.log, ds.item_table, ds.user_table, ds.meta).save(
        tmp_path / "data" / "ds"
    )
    out = tmp_path / "a" / "b" / "out"
    run_benchmark(str(folder), ["pop"], out, config=BaselineTrainConfig(max_length=8),
                  progress=False)  # fmt: skip
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("baselines_*"))
    assert written == ["a/b/out/baselines_escaped.json", "a/b/out/baselines_escaped.md"]


# --- devices --------------------------------------------------------------------------------------
def test_an_unavailable_device_stops_before_anything_is_written(made, tmp_path, capsys):
    device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    assert train(made, tmp_path / "run", "--device", device) == 2
    err = capsys.readouterr().err
    assert "DeviceUnavailableError" in err and device in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(DeviceUnavailableError, match="cuda"):
        Recommender.from_run(made / "run", device=device)


def test_a_run_from_before_fingerprints_is_checked_against_its_own_files(made, tmp_path, capsys):
    """A checkpoint without the record (written by an earlier onerec) is compared with the
    semantic IDs, users, model config and settings saved beside it."""
    run = copy_run(made, tmp_path)
    save_file(load_file(run / "last.safetensors"), run / "last.safetensors")  # no metadata
    for name, newer in (("model_config.json", ("item_hash_buckets", "history_features")),
                        ("train_config.json", ("ema_decay", "features"))):  # fmt: skip
        saved = json.loads((run / name).read_text())  # as written before these fields existed
        (run / name).write_text(json.dumps({k: v for k, v in saved.items() if k not in newer}))
    before = snapshot(run)
    assert train(made, run, "--epochs", "2", tokens="tok1") == 2
    assert "semantic_ids.codes" in capsys.readouterr().err
    assert train(made, run, "--epochs", "2", "--lr", "0.5") == 2
    assert "train_config.lr" in capsys.readouterr().err
    assert snapshot(run) == before
    assert train(made, run, "--epochs", "2") == 0  # its own inputs: it resumes
    (record,) = json.loads((run / "train_config.json").read_text())["resumes"]
    assert record["changed"] == {"train_config.epochs": [1, 2]}  # absent fields: their defaults


def test_quickstart_reruns_into_its_own_folder_and_overwrite_deletes_nothing_else(tmp_path):
    from onerec.quickstart import run

    precious = tmp_path / "mine" / "onerec" / "notes.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("my work")
    run(tmp_path / "mine", scale="tiny", progress=False, overwrite=True)
    assert precious.read_text() == "my work"  # written beside, never deleted
    first = snapshot(tmp_path / "mine" / "onerec")
    run(tmp_path / "mine", scale="tiny", progress=False)  # its own folder: no --overwrite needed
    saved = json.loads((tmp_path / "mine" / "onerec" / "train_config.json").read_text())
    assert "resumes" not in saved  # a fresh run each time, never a resumed one
    assert snapshot(tmp_path / "mine" / "onerec")["model.safetensors"] == first["model.safetensors"]


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """A server watching a run folder must never see half a model.safetensors: the write goes to
    a temporary file that replaces the old one only once complete."""
    import onerec.runs
    from onerec.model import OneRec, OneRecConfig

    model = OneRec(OneRecConfig.preset("tiny", [4, 4, 4], max_history=8))
    model.save(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def killed_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # the first bytes, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(onerec.runs, "save_file", killed_midway)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model_config.json"]
