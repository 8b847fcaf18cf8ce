"""The docs a newcomer reads are true: every link and every file they name exists, every number
in the README's results tables is the number its JSON holds, and every documented command runs
as written (on tiny inputs) or is marked long-running and is a benchmark that exists.

A fenced command block must be preceded by one of two markers:
``<!-- docs-test: NAME -->``, which a test in this file runs line by line (``RUN_BLOCKS``), or
``<!-- long-running: WHY -->``, whose lines must name an existing benchmark script, make target
or ``onerec`` command line that the real parser accepts.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from onerec.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
MARKER = re.compile(r"<!--\s*(docs-test|long-running):\s*(.*?)\s*-->\s*$")
COMMAND = re.compile(r"^(onerec|python|make|torchrun|OMP_NUM_THREADS=\S+ python)\b")
RUN_BLOCKS = {"cli", "readme-cli"}  # the blocks the tests below run


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _blocks(page: Path) -> Iterator[tuple[str, str, str | None]]:
    """(language, body, marker line before the fence) of every fenced block of ``page``."""
    text = page.read_text()
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        yield m.group(1), m.group(2), before[-1] if before else None


def _command_lines(body: str) -> list[str]:
    """The block's command lines, continuation lines joined, comments removed."""
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _marked_blocks(kind: str) -> dict[str, list[str]]:
    """Name -> command lines of every block marked ``kind``."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for _, body, before in _blocks(page):
            m = MARKER.match(before or "")
            if m and m.group(1) == kind:
                found[f"{page.name}:{m.group(2)}" if kind != "docs-test" else m.group(2)] = (
                    _command_lines(body)
                )
    return found


# --- links and names ---------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page: Path) -> None:
    assert page.exists()
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: link to {target} points nowhere"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {path}"


def test_every_repo_path_the_readme_names_exists() -> None:
    text = (ROOT / "README.md").read_text()
    named = [t for t in re.findall(r"`([^`\s]+)`", text)
             if re.match(r"(src|benchmarks|tests|docs)/", t)]  # fmt: skip
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path.rstrip("/")).exists(), f"README names {path}, which does not exist"


def test_readme_is_short() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    prose_and_tables = [line for line in FENCE.sub("", "\n".join(lines)).splitlines() if line]
    assert len(prose_and_tables) <= 150
    for line in prose_and_tables:
        if line.startswith("|"):
            for cell in line.strip("|").split("|"):
                assert len(cell) <= 160, f"a README table cell runs past a sentence: {cell!r}"


# --- numbers -----------------------------------------------------------------------------------
def _leaves(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def _matches(token: str, leaves: np.ndarray) -> bool:
    """``token`` (as printed: ".0748", "10,680", "5.4") is a leaf rounded to its digits."""
    text = token.replace(",", "")
    decimals = len(text.partition(".")[2])
    return bool(np.any(np.abs(leaves - float(text)) <= 0.5 * 10.0**-decimals + 1e-9))


@pytest.mark.parametrize("page", ["README.md", "benchmarks/README.md"])
def test_every_number_in_a_results_table_is_its_json(page: str) -> None:
    """In each table row that links JSON in benchmarks/results, every number outside the first
    (descriptive) column is a value of the linked JSON, as rounded for print."""
    path = ROOT / page
    checked = 0
    for line in path.read_text().splitlines():
        targets = [(path.parent / t).resolve() for t in LINK.findall(line) if t.endswith(".json")]
        targets = [t for t in targets if t.parent == ROOT / "benchmarks" / "results"]
        if not line.startswith("|") or not targets:
            continue
        leaves = np.array([v for t in targets for v in _leaves(json.loads(t.read_text()))])
        cells = LINK.sub("", line).strip("|").split("|")[1:]
        for token in re.findall(r"(?<![\w.])\d[\d,]*\.?\d*|(?<![\w\d])\.\d+", " ".join(cells)):
            assert _matches(token, leaves), f"{token} is not in {[t.name for t in targets]}: {line}"
            checked += 1
    assert checked >= 60


# --- commands ----------------------------------------------------------------------------------
def test_every_command_block_is_run_or_marked_long_running() -> None:
    seen: set[str] = set()
    for page in PAGES:
        for lang, body, before in _blocks(page):
            lines = _command_lines(body)
            if lang not in ("bash", "sh", "") or not any(COMMAND.match(x) for x in lines):
                continue
            m = MARKER.match(before or "")
            assert m, f"{page.name}: a command block without a docs-test or long-running marker"
            if m.group(1) == "docs-test":
                seen.add(m.group(2))
    assert seen == RUN_BLOCKS


def test_long_running_commands_name_real_benchmarks_and_options() -> None:
    parser = build_parser()
    makefile = (ROOT / "Makefile").read_text()
    blocks = _marked_blocks("long-running")
    assert blocks
    for name, lines in blocks.items():
        for line in lines:
            words = shlex.split(line)
            while words and "=" in words[0]:  # environment assignments
                words = words[1:]
            if words[0] == "make":
                assert re.search(rf"^{words[1]}:", makefile, re.M), f"{name}: no make {words[1]}"
            elif words[0] == "onerec":
                parser.parse_args(words[1:])  # exits on an unknown option
            elif words[0] == "torchrun":
                parser.parse_args(words[words.index("onerec.cli") + 1:])
            elif words[0] == "curl":  # a call to the service: a real endpoint, a valid body
                from onerec.serving.schema import RecommendRequest

                url = next(w for w in words[1:] if "localhost" in w)
                assert url.endswith("/recommend"), f"{name}: {line}"
                RecommendRequest.model_validate_json(words[words.index("-d") + 1])
            else:
                assert words[0] == "python", f"{name}: {line}"
                script = ROOT / words[1]
                assert script.exists() and script.parent.name == "benchmarks", f"{name}: {line}"
                source = script.read_text()
                for option in (w for w in words[2:] if w.startswith("--")):
                    assert f'"{option}"' in source, f"{name}: {script.name} has no {option}"


def _tiny_beauty(data_dir: Path) -> None:
    """A tiny dataset in Beauty's files (S3-Rec sequences and attribute lists): 60 users over
    items 1..100, clustered by item id, with items 12, 5 and 88 in the catalog."""
    rng = np.random.default_rng(0)
    lines = ["1 12 5 88 3 7 21"]
    for user in range(2, 61):
        main_cluster = rng.integers(10)
        n = rng.integers(5, 12)
        clusters = np.where(rng.random(n) < 0.8, main_cluster, rng.integers(10, size=n))
        items = 1 + clusters + 10 * rng.integers(10, size=n)
        lines.append(" ".join(map(str, [user, *items])))
    (data_dir / "s3rec").mkdir(parents=True)
    (data_dir / "s3rec" / "Beauty.txt").write_text("\n".join(lines) + "\n")
    attributes = {str(i): [int(i % 10), 10 + int(i % 3)] for i in range(1, 101)}
    (data_dir / "s3rec" / "Beauty_item2attributes.json").write_text(json.dumps(attributes))


def _tiny_log(path: Path) -> None:
    """``my_log.csv``: 30 users, two sessions of 6 videos each (ids 101..140), an hour apart,
    every session with a like."""
    rows = ["uid,vid,ts,watch_time,like"]
    rng = np.random.default_rng(1)
    for user in range(30):
        for session in range(2):
            for k in range(6):
                vid = 101 + (user + 3 * session + k) % 40
                ts = 10_000 * user + 3_600 * session + 60 * k
                rows.append(f"u{user},{vid},{ts},{rng.integers(5, 40)},{int(k == 2)}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the tiny inputs, the data directory pointed at them."""
    _tiny_beauty(tmp_path / "data")
    _tiny_log(tmp_path / "my_log.csv")
    monkeypatch.setenv("ONEREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_documented_examples_run_as_written(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """The README's Python example, then its command-line block, then the CLI reference's, in
    one working directory, as a newcomer would type them. A line already run (the README and
    the reference share some) is not run twice: it would only resume the same finished run."""
    python = [body for lang, body, _ in _blocks(ROOT / "README.md") if lang == "python"]
    assert len(python) == 1
    exec(compile(python[0], "README.md", "exec"), {})  # noqa: S102 - our own README
    assert "log_prob" in capsys.readouterr().out
    blocks = _marked_blocks("docs-test")
    done: set[str] = set()
    for name in ("readme-cli", "cli"):
        assert blocks[name]
        for line in blocks[name]:
            words = shlex.split(line)
            assert words[0] == "onerec", line
            if line not in done:
                assert main(words[1:]) == 0, f"{line}\n{capsys.readouterr().err}"
                done.add(line)
        if name == "readme-cli":
            assert "session of 5 items" in capsys.readouterr().out
    # the reference's artifacts; `onerec train` without flags trained the selected settings
    train = json.loads((workdir / "runs/beauty-onerec/train_config.json").read_text())
    assert (train["patience"], train["ema_decay"]) == (5, 0.999)
    for made in ("runs/beauty-dense/model.safetensors", "runs/beauty-tiger/model.safetensors",
                 "runs/mine-features/model.safetensors", "data/beauty-loo",
                 "runs/beauty-baselines/baselines_beauty.md"):  # fmt: skip
        assert (workdir / made).exists(), made
