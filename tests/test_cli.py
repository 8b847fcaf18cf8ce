"""The command line: help, data info / convert / split, and errors as messages, not tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onerec.cli import main
from onerec.data.schema import Dataset
from onerec.data.splits import Split


def test_help_runs_as_a_console_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "onerec.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("data", "quickstart"):
        assert command in out


def test_info_convert_split_on_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "log.csv"
    log.write_text("uid,vid,ts,watch_time,like\n" + "".join(
        f"{u},{(u * 7 + k) % 11},{k},{k % 4 * 5.0},{int(k == 2)}\n" for u in range(4) for k in range(6)
    ))
    cols = ["--user-col", "uid", "--item-col", "vid", "--time-col", "ts"]
    assert main(["data", "info", str(log), *cols, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["users"], info["interactions"]) == (4, 24)
    assert info["signals"] == ["like", "watch_time"]

    assert main(["data", "convert", str(log), *cols, "--out", str(tmp_path / "ds")]) == 0
    assert Dataset.load(tmp_path / "ds").num_users == 4

    args = ["data", "split", str(tmp_path / "ds"), "--out", str(tmp_path / "split"),
            "--session-gap", "2", "--session-filter", "--min-watched-items", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "session quality: removed" in printed and "min interactions: removed" in printed
    split = Split.load(tmp_path / "split")
    assert split.protocol == "leave_one_out" and len(split.test) > 0


def test_info_on_a_registered_dataset(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", "beauty", "--data-dir", str(data_dir)]) == 0
    assert "22,363 users, 12,101 items, 198,502 interactions" in capsys.readouterr().out


def test_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", "no-such-dataset"]) == 2
    assert "neither a registered dataset" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\n1,2,x\n")
    assert main(["data", "info", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["data", "info", "beauty", "--data-dir", str(tmp_path)]) == 2
    assert "needs" in capsys.readouterr().err
