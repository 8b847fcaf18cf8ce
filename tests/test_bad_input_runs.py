"""Bad input to the run-folder commands gets a named error, never a traceback (issue 23).

Every case runs the command line as a user would and asserts three things: the exact error
class (``onerec: error: <Class>: ...``), that the message names the offending file, option or
field, and that nothing was written where the error was raised (a new ``--out`` does not
exist afterwards; an existing folder is byte for byte as before). Cases cover the tokenizer,
training (new runs and resumes), checkpoints and configs of a run folder, ``recommend``,
``benchmark``, ``quickstart`` and ``data``.

The run, dataset and tokenizations come from ``test_run_integrity``'s module fixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from onerec import exceptions as ex
from onerec.cli import main
from onerec.data import SyntheticConfig, generate
from onerec.data.registry import load_dataset
from onerec.data.schema import Dataset
from onerec.generation import Recommender
from test_run_integrity import TRAIN, made, snapshot  # noqa: F401  (made: the fixture)


def fails(argv: list[str], error: type[Exception], words: tuple[str, ...], capsys) -> str:
    """Run the command; it must stop with ``error`` (exactly) and name every one of ``words``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"onerec: error: {error.__name__}: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    return err


# --- a run folder's files: `onerec recommend` and Recommender.from_run ---------------------------
def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def damage(run: Path, made: Path) -> None:
        d = json.loads((run / name).read_text())
        result = change(d)
        (run / name).write_text(json.dumps(d if result is None else result))

    return damage


def write(name: str, data: bytes) -> Callable[[Path, Path], None]:
    return lambda run, made: (run / name).write_bytes(data)


def truncate(name: str) -> Callable[[Path, Path], None]:
    return lambda run, made: (run / name).write_bytes((run / name).read_bytes()[:300])


def remove(name: str) -> Callable[[Path, Path], None]:
    return lambda run, made: (run / name).unlink()


def semantic_ids_of(tokens: str) -> Callable[[Path, Path], None]:
    return lambda run, made: shutil.copyfile(made / tokens / "semantic_ids.parquet",
                                             run / "semantic_ids.parquet")  # fmt: skip


def rewrite_parquet(name: str, change: Callable[[pa.Table], pa.Table]) -> Callable[[Path, Path], None]:
    return lambda run, made: pq.write_table(change(pq.read_table(run / name)), run / name)


def swapped_item_ids(t: pa.Table) -> pa.Table:
    """The same codes, two raw item ids swapped: the model would serve the wrong items."""
    ids = t.column("item_id").to_pylist()
    ids[0], ids[1] = ids[1], ids[0]
    return t.set_column(0, "item_id", pa.array(ids)).replace_schema_metadata(t.schema.metadata)


RUN_DAMAGE = {
    "weights truncated": (truncate("model.safetensors"), ex.CorruptCheckpointError,
                          ("model.safetensors",)),
    "weights empty": (write("model.safetensors", b""), ex.CorruptCheckpointError,
                      ("model.safetensors",)),
    "weights not safetensors": (write("model.safetensors", b"PK\x03\x04 zip"),
                                ex.CorruptCheckpointError, ("model.safetensors",)),
    "weights missing": (remove("model.safetensors"), ex.ModelError, ("model.safetensors",)),
    "config of another size": (edit_json("model_config.json", lambda d: d.update(d_model=64)),
                               ex.CorruptCheckpointError, ("model_config.json", "shapes differ")),
    "config not JSON": (write("model_config.json", b"{"), ex.RunFileError,
                        ("model_config.json", "not valid JSON")),
    "config not UTF-8": (write("model_config.json", b"\xff\xfe{}"), ex.RunFileError,
                         ("model_config.json", "UTF-8")),
    "config a list": (write("model_config.json", b"[1, 2]"), ex.RunFileError,
                      ("model_config.json", "JSON object")),
    "config without level_sizes": (edit_json("model_config.json", lambda d: d.pop("level_sizes")
                                             and None), ex.RunFileError,
                                   ("model_config.json", "level_sizes")),
    "config without d_model": (edit_json("model_config.json", lambda d: d.pop("d_model") and None),
                               ex.CorruptCheckpointError, ("model_config.json", "d_model")),
    "config d_model text": (edit_json("model_config.json", lambda d: d.update(d_model="abc")),
                            ex.RunFileError, ("model_config.json", "d_model")),
    "config unknown field": (edit_json("model_config.json", lambda d: d.update(width=3)),
                             ex.RunFileError, ("model_config.json", "width")),
    "config of another run": (edit_json("model_config.json", lambda d: d.update(dropout=0.5)),
                              ex.RunIntegrityError, ("model_config.json",)),
    "config missing": (remove("model_config.json"), ex.ModelError, ("model_config.json",)),
    "train config not JSON": (write("train_config.json", b"{'lr': 1}"), ex.RunFileError,
                              ("train_config.json", "not valid JSON")),
    "train config history_length text": (
        edit_json("train_config.json", lambda d: d.update(history_length="8")), ex.RunFileError,
        ("train_config.json", "history_length")),
    "train config features not a list": (
        edit_json("train_config.json", lambda d: d.update(features=5)), ex.RunFileError,
        ("train_config.json", "features")),
    "semantic IDs truncated": (truncate("semantic_ids.parquet"), ex.RunFileError,
                               ("semantic_ids.parquet", "Parquet")),
    "semantic IDs without level sizes": (
        rewrite_parquet("semantic_ids.parquet", lambda t: t.replace_schema_metadata({})),
        ex.RunFileError, ("semantic_ids.parquet", "level_sizes")),
    "semantic IDs of another tokenization": (semantic_ids_of("tok1"), ex.RunIntegrityError,
                                             ("semantic_ids.parquet", "semantic_ids.codes")),
    "semantic IDs with swapped item ids": (
        rewrite_parquet("semantic_ids.parquet", swapped_item_ids), ex.RunIntegrityError,
        ("semantic_ids.parquet", "semantic_ids.item_ids")),
    "semantic IDs missing": (remove("semantic_ids.parquet"), ex.DataError,
                             ("semantic_ids.parquet",)),
    "users truncated": (truncate("users.parquet"), ex.RunFileError, ("users.parquet",)),
    "users of another dataset": (
        rewrite_parquet("users.parquet", lambda t: pa.table({"user_id": t.column(0)[::-1]})),
        ex.RunIntegrityError, ("users.parquet", "data.user_ids")),
    "users without user_id": (
        rewrite_parquet("users.parquet", lambda t: t.rename_columns(["uid"])), ex.DataError,
        ("users.parquet", "user_id")),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RUN_DAMAGE))
def test_a_damaged_run_folder_is_a_named_error(made, tmp_path, capsys, case):
    damage, error, words = RUN_DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    damage(run, made)
    before = snapshot(run)
    with pytest.raises(error):
        Recommender.from_run(run)
    item = str(pq.read_table(made / "run" / "semantic_ids.parquet").column("item_id")[0])
    fails(["recommend", str(run), "--history", item], error, words, capsys)
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "argv, error, words",
    [
        (["--device", "gpu"], ex.DeviceUnavailableError, ("'gpu'", "--device")),
        (["--device", f"cuda:{torch.cuda.device_count()}"], ex.DeviceUnavailableError, ("cuda",)),
        (["--device", "tpu"], ex.DeviceUnavailableError, ("'tpu'",)),
    ],
)
def test_recommend_on_a_device_this_machine_lacks(made, capsys, argv, error, words):
    item = str(pq.read_table(made / "run" / "semantic_ids.parquet").column("item_id")[0])
    before = snapshot(made / "run")
    fails(["recommend", str(made / "run"), "--history", item, *argv], error, words, capsys)
    assert snapshot(made / "run") == before


def test_recommend_on_a_folder_that_is_not_there(tmp_path, capsys):
    fails(["recommend", str(tmp_path / "nowhere"), "--history", "1"], ex.DataError,
          ("nowhere", "does not exist"), capsys)  # fmt: skip
    assert not (tmp_path / "nowhere").exists()


# --- `onerec train`: a new run ---------------------------------------------------------------------
def other_catalog(made: Path, tmp: Path) -> list[str]:
    generate(SyntheticConfig(num_users=80, num_items=50, mean_interactions=10, seed=2)).save(
        tmp / "other"
    )
    return ["train", str(tmp / "other"), "--tokens", str(made / "tok0")]


def corrupt_tokens(made: Path, tmp: Path) -> list[str]:
    (tmp / "tok").mkdir()
    data = (made / "tok0" / "semantic_ids.parquet").read_bytes()
    (tmp / "tok" / "semantic_ids.parquet").write_bytes(data[: len(data) // 2])
    return ["train", str(made / "ds"), "--tokens", str(tmp / "tok")]


def plain(made: Path, tmp: Path) -> list[str]:
    return ["train", str(made / "ds"), "--tokens", str(made / "tok0")]


NEW_RUN = {
    "cuda on a machine without it": (plain, ["--device", f"cuda:{torch.cuda.device_count()}"],
                                     ex.DeviceUnavailableError, ("cuda",)),
    "device name unknown": (plain, ["--device", "gpu"], ex.DeviceUnavailableError, ("'gpu'",)),
    "override of level_sizes": (plain, ["--model", "level_sizes=[4,4]"], ex.ConfigError,
                                ("level_sizes", "--tokens")),
    "override of an unknown field": (plain, ["--model", "widht=3"], ex.ConfigError, ("widht",)),
    "override not JSON": (plain, ["--model", "d_model=big"], ex.ConfigError, ("d_model", "big")),
    "override without '='": (plain, ["--model", "dropout"], ex.ConfigError, ("KEY=VALUE",)),
    "override out of range": (plain, ["--model", "n_heads=3"], ex.ConfigError, ("n_heads",)),
    "override shorter than the history": (plain, ["--model", "max_history=4"], ex.ConfigError,
                                          ("max_history", "history_length")),
    "unknown preset": (plain, ["--preset", "huge"], ex.ConfigError, ("huge",)),
    "unknown feature": (plain, ["--features", "clicks"], ex.UnknownFeatureError, ("clicks",)),
    "overwrite and force-resume": (plain, ["--overwrite", "--force-resume"], ex.ConfigError,
                                   ("--overwrite", "--force-resume")),
    "tokens folder missing": (lambda m, t: ["train", str(m / "ds"), "--tokens", str(t / "none")],
                              [], ex.DataError, ("none", "semantic_ids.parquet")),
    "tokens file truncated": (corrupt_tokens, [], ex.RunFileError, ("semantic_ids.parquet",)),
    "tokens of another catalog": (other_catalog, [], ex.ConfigError, ("another catalog",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(NEW_RUN))
def test_a_new_run_that_cannot_start_leaves_no_folder(made, tmp_path, capsys, case):
    command, extra, error, words = NEW_RUN[case]
    argv = command(made, tmp_path)
    fails([*argv, *TRAIN, *extra, "--out", str(tmp_path / "run")], error, words, capsys)
    assert not (tmp_path / "run").exists()


def tokens_folder(made: Path, tmp: Path) -> Path:
    shutil.copytree(made / "tok0", tmp / "out")
    return tmp / "out"


def foreign_folder(made: Path, tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "thesis.tex").write_text("years of work")
    return tmp / "out"


def a_file(made: Path, tmp: Path) -> Path:
    (tmp / "out").write_text("not a folder")
    return tmp / "out"


OUT_TAKEN = {
    "a tokenization": (tokens_folder, ("onerec tokenize", "--overwrite")),
    "a folder of someone else's files": (foreign_folder, ("thesis.tex", "--overwrite")),
    "a file": (a_file, ("is a file",)),
}


@pytest.mark.parametrize("case", list(OUT_TAKEN))
def test_train_into_a_folder_it_did_not_make_is_refused(made, tmp_path, capsys, case):
    make, words = OUT_TAKEN[case]
    out = make(made, tmp_path)
    before = snapshot(tmp_path)
    fails([*plain(made, tmp_path), *TRAIN, "--out", str(out)], ex.OutputExistsError,
          (str(out), *words), capsys)  # fmt: skip
    assert snapshot(tmp_path) == before


# --- `onerec train`: resuming a run ----------------------------------------------------------------
def bad_record(run: Path, made: Path) -> None:
    """``last.safetensors`` whose header record is cut off (the tensors are intact)."""
    tensors = load_file(run / "last.safetensors")
    save_file(tensors, run / "last.safetensors", metadata={"onerec.run": '{"sources": '})


RESUME = {
    "checkpoint truncated": (truncate("last.safetensors"), [], ex.CorruptCheckpointError,
                             ("last.safetensors", "--overwrite")),
    "checkpoint record damaged": (bad_record, [], ex.RunIntegrityError,
                                  ("last.safetensors", "onerec.run")),
    "train config not JSON": (write("train_config.json", b"{"), [], ex.RunFileError,
                              ("train_config.json",)),
    "resumes not a list": (edit_json("train_config.json", lambda d: d.update(resumes=3)), [],
                           ex.RunIntegrityError, ("train_config.json", "resumes")),
    "another history length": (lambda r, m: None, ["--history-length", "6"], ex.RunMismatchError,
                               ("train_config.history_length: 8 in the run, 6 now",
                                "model_config.max_history")),
    "another model": (lambda r, m: None, ["--model", "n_experts=0"], ex.RunMismatchError,
                      ("model_config.n_experts: 4 in the run, 0 now",)),
    "moving average added": (lambda r, m: None, ["--ema-decay", "0.9"], ex.RunMismatchError,
                             ("train_config.ema_decay",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RESUME))
def test_a_resume_that_cannot_go_on_changes_nothing(made, tmp_path, capsys, case):
    damage, extra, error, words = RESUME[case]
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    damage(run, made)
    before = snapshot(run)
    fails([*plain(made, tmp_path), *TRAIN, "--epochs", "2", *extra, "--out", str(run)], error,
          words, capsys)  # fmt: skip
    assert snapshot(run) == before


# --- `onerec tokenize` -----------------------------------------------------------------------------
def pickled_vectors(tmp: Path) -> str:
    np.save(tmp / "vectors.npy", np.array([{"code": "run me"}], dtype=object), allow_pickle=True)
    return str(tmp / "vectors.npy")


TOKENIZE = {
    "codebook of one code": (lambda t: ["--codebook-size", "1"], ex.ConfigError,
                             ("codebook_size",)),
    "no levels": (lambda t: ["--levels", "0"], ex.ConfigError, ("levels",)),
    "PCA to nothing": (lambda t: ["--fused-dim", "0"], ex.EmbeddingError, ("fused_dim",)),
    "vectors file missing": (lambda t: ["--embeddings", "vectors", "--vectors",
                                        str(t / "none.npy")], ex.EmbeddingError, ("none.npy",)),
    "vectors file pickled": (lambda t: ["--embeddings", "vectors", "--vectors",
                                        pickled_vectors(t)], ex.EmbeddingError,
                             ("vectors.npy", "allow_pickle=False")),
    "vectors without a file": (lambda t: ["--embeddings", "vectors"], ex.EmbeddingError,
                               ("vectors_path",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TOKENIZE))
def test_tokenize_bad_input_writes_nothing(made, tmp_path, capsys, case):
    extra, error, words = TOKENIZE[case]
    argv = ["tokenize", str(made / "ds"), "--embeddings", "collaborative", "--levels", "2",
            "--codebook-size", "8", "--iters", "5"]  # fmt: skip
    fails([*argv, *extra(tmp_path), "--out", str(tmp_path / "tok")], error, words, capsys)
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize(
    "command",
    [["tokenize", "{ds}", "--embeddings", "collaborative"], ["data", "convert", "{ds}"],
     ["data", "split", "{ds}"]],
    ids=["tokenize", "data convert", "data split"],
)
def test_other_commands_never_write_into_a_run(made, tmp_path, capsys, command):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    before = snapshot(run)
    argv = [a.format(ds=made / "ds") for a in command]
    fails([*argv, "--out", str(run)], ex.OutputExistsError, ("onerec train", "--overwrite"),
          capsys)  # fmt: skip
    assert snapshot(run) == before


# --- `onerec benchmark` and `onerec quickstart` -----------------------------------------------------
def named(made: Path, tmp: Path, name: str) -> str:
    ds = load_dataset(str(made / "ds"))
    Dataset(name, ds.log, ds.item_table, ds.user_table, ds.meta).save(tmp / "ds")
    return str(tmp / "ds")


BENCHMARK = {
    "dataset named '..'": (lambda m, t: named(m, t, ".."), None, ex.UnsafeNameError, ("'..'",)),
    "dataset named '/'": (lambda m, t: named(m, t, "/"), None, ex.UnsafeNameError, ("'/'",)),
    "earlier record not JSON": (lambda m, t: str(m / "ds"), b"{", ex.RunFileError,
                                ("baselines_synthetic.json", "move")),
    "earlier record's models a list": (lambda m, t: str(m / "ds"), b'{"models": []}',
                                       ex.RunFileError, ("baselines_synthetic.json", "models")),
    "no model": (lambda m, t: str(m / "ds"), None, ex.UnknownModelError, ("no baseline model",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BENCHMARK))
def test_benchmark_bad_input_writes_nothing(made, tmp_path, capsys, case):
    dataset, record, error, words = BENCHMARK[case]
    out = tmp_path / "out"
    if record is not None:
        out.mkdir()
        (out / "baselines_synthetic.json").write_bytes(record)
    argv = ["benchmark", "--dataset", dataset(made, tmp_path), "--models",
            "," if case == "no model" else "pop", "--out", str(out), "--max-length", "8"]
    before = snapshot(tmp_path)
    fails([*argv, "--quiet"], error, words, capsys)
    assert snapshot(tmp_path) == before and out.exists() == (record is not None)


@pytest.mark.parametrize("command", [["benchmark", "--dataset", "{ds}", "--models", "pop"],
                                     ["quickstart", "--scale", "tiny"]],
                         ids=["benchmark", "quickstart"])  # fmt: skip
def test_an_out_that_is_a_file_is_refused(made, tmp_path, capsys, command):
    out = tmp_path / "out"
    out.write_text("a file")
    fails([*(a.format(ds=made / "ds") for a in command), "--out", str(out)],
          ex.OutputExistsError, (str(out), "is a file"), capsys)  # fmt: skip
    assert out.read_text() == "a file"


def test_force_resume_cannot_load_weights_into_another_shape(made, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    before = snapshot(run)
    fails([*plain(made, tmp_path), *TRAIN, "--epochs", "2", "--model", "d_model=64",
           "--force-resume", "--out", str(run)], ex.CorruptCheckpointError,
          ("last.safetensors", "shapes differ", "the model config asked for now"), capsys)  # fmt: skip
    assert snapshot(run) == before
