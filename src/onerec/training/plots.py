"""The run directory's picture: training loss per step and validation metric per epoch."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Read ``metrics.jsonl`` (step records with ``ntp``, epoch records with
    ``valid_recall@10``) and write a two-panel PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    steps = [r for r in records if "ntp" in r and "step" in r]
    epochs = [r for r in records if "valid_recall@10" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in steps], [r["ntp"] for r in steps], lw=1)
    left.set(xlabel="step", ylabel="next-token loss", title="training")
    left.grid(alpha=0.3)
    right.plot([r["epoch"] for r in epochs], [r["valid_recall@10"] for r in epochs], marker="o")
    right.set(xlabel="epoch", ylabel="Recall@10", title="validation")
    right.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
