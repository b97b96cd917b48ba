"""The history of a training run: one row per step, one per validation; CSV and PNG.

Written into the checkpoint folder as `loss.csv` (per step: lr, loss and its two terms,
throughput, data and step time), `val.csv` (validation retrieval during training) and
`loss.png` (the curves).
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from model.atomic_files import atomic_path, write_atomic

STEP_FIELDS = ("step", "lr", "loss", "nce_va", "mil_nce_vt", "clips_per_s", "data_s", "step_s")


class TrainingHistory:
    """The rows of one run in order: steps and validations (saved in the resume state)."""

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows: list[dict[str, Any]] = list(rows or [])

    def add_step(self, step: int, **values: float) -> None:
        self.rows.append({"kind": "step", "step": step, **values})

    def add_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"kind": "val", "step": step, **metrics})

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kind"] == "step"]

    @property
    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kind"] == "val"]

    def final_loss(self, last: int = 50) -> float:
        """Mean loss over the last `last` steps (one step's loss is noisy)."""
        tail = [r["loss"] for r in self.steps[-last:]]
        return float(statistics.fmean(tail)) if tail else float("nan")

    def median(self, key: str) -> float:
        values = [r[key] for r in self.steps[1:]]  # step 1 pays for start-up
        return float(statistics.median(values)) if values else float("nan")

    def mean_step_s(self, last: int = 20) -> float:
        tail = [r["step_s"] for r in self.steps[-last:]]
        return float(statistics.fmean(tail)) if tail else 0.0

    # -- files ------------------------------------------------------------------------
    def write(self, folder: Path) -> None:
        _write_csv(folder / "loss.csv", list(STEP_FIELDS), self.steps)
        evals = self.evals
        if evals:
            keys = ["step", *sorted({k for r in evals for k in r} - {"kind", "step"})]
            _write_csv(folder / "val.csv", keys, evals)
        if self.steps:
            plot_curves(self, folder / "loss.png")


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in fields})
    write_atomic(path, buffer.getvalue())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(history: TrainingHistory, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = history.steps
    x = [r["step"] for r in steps]
    window = max(1, len(steps) // 50)
    evals = history.evals
    # R@10 says little among a few clips: then plot R@1.
    last = evals[-1] if evals else {}
    suffix = "/R@10" if last.get("candidates", 0) >= 100 else "/R@1"
    recall_keys = sorted(k for k in last if k.endswith(suffix))
    fig, axes = plt.subplots(1, 2 if recall_keys else 1, figsize=(11 if recall_keys else 6, 4))
    ax = axes[0] if recall_keys else axes
    for key, label in (
        ("loss", "total"),
        ("nce_va", "NCE video–audio"),
        ("mil_nce_vt", "MIL-NCE video–text"),
    ):
        values = [float(r[key]) for r in steps]
        if any(values):
            ax.plot(x, smooth(values, window), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (moving average of {window})")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if recall_keys:
        ax = axes[1]
        ex = [r["step"] for r in evals]
        for key in recall_keys:
            ax.plot(
                ex,
                [r.get(key, float("nan")) for r in evals],
                marker="o",
                label=key.removesuffix(suffix),
            )
        ax.set_xlabel("step")
        ax.set_ylabel(f"{suffix[1:]} among {last.get('candidates', '?')} validation clips")
        ax.set_ylim(0, 1)
        ax.set_title("validation retrieval")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
