"""Evaluate a checkpoint on a corpus: zero-shot retrieval, linear probes, the untrained floor.

    python -m model.evaluation CKPT --data CORPUS [--json OUT] [--candidates 1000]

Writes OUT (JSON) and, beside it, OUT.md (the tables) and OUT.png (the figure); OUT
defaults to CKPT/eval.json. What is measured: evaluate.py. Decoded windows are kept in
CORPUS/cache (eval_sets.py), so evaluating many models on one corpus decodes it once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.errors import ModelError
from model.evaluation.eval_sets import DEFAULT_CANDIDATES, PROBE_TRAIN_CLIPS
from model.evaluation.evaluate import evaluate_checkpoint, record_in_metrics
from model.evaluation.reports import markdown_report, write_report
from model.media import MediaError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m model.evaluation", description=__doc__.split("\n")[0]
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", required=True, type=Path, help="corpus folder")
    p.add_argument("--json", type=Path, default=None, help="report path (default CKPT/eval.json)")
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val", "all"),
        help="which clips are candidates (all: every split; for check sets)",
    )
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    p.add_argument(
        "--probe-train",
        type=int,
        default=PROBE_TRAIN_CLIPS,
        help="train clips for the linear probes (0: no probes)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the untrained model")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--record",
        metavar="NAME",
        default=None,
        help="also store the figures in CKPT/metrics.json under NAME (make model "
        "records 'test' and 'check'; tests/model/test_default_model.py "
        "reproduces 'check')",
    )
    a = p.parse_args(argv)
    try:
        report = evaluate_checkpoint(
            a.checkpoint,
            a.data,
            a.split,
            a.candidates,
            a.probe_train,
            baseline=not a.no_baseline,
            progress=not a.no_progress,
        )
    except (ModelError, MediaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.record:
        record_in_metrics(a.checkpoint, a.data, report, a.record)
    out = a.json or a.checkpoint / "eval.json"
    write_report(report, out)
    print(markdown_report(report))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
