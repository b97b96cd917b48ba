"""An evaluation report as tables and a figure: OUT.json, OUT.md and OUT.png.

The markdown is committed beside the default model (models/default/eval.md), so its
format is kept as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def markdown_report(report: dict[str, Any]) -> str:
    """The tables of an evaluation report (trained model, and the untrained floor if present)."""
    lines = [f"# Evaluation of `{report['checkpoint']}`", ""]
    lines.append(
        f"Corpus `{report['data']['corpus']}`, split `{report['data']['split']}`, "
        f"{report['trained']['candidates']} candidates (chance R@10 = "
        f"{report['trained']['chance']['R@10']:.3f}). Text queries: the clips' canonical "
        "descriptions; embeddings averaged over uniformly spaced windows."
    )
    ceiling = report["trained"].get("description_ceiling")
    if ceiling:
        lines.append(
            f"Only {ceiling['unique_share']:.0%} of the descriptions are unique among the "
            f"candidates: a model that told every clip with the same description apart "
            f"from none could reach at most R@1 {ceiling['R@1']:.3f}, R@10 "
            f"{ceiling['R@10']:.3f} for text queries."
        )
    lines.append("")
    models = [("trained", report["trained"])]
    if "untrained" in report:
        models.append(("untrained", report["untrained"]))
    for title, key in (
        ("Zero-shot retrieval", "retrieval"),
        # FAC's text → audio above goes through the audio bridge, fitted on the training
        # clips' narrations too; the paper's zero-shot protocol is g_va→vat alone.
        (
            "Text → audio through g_va→vat alone (the paper's protocol, no audio bridge)",
            "retrieval_through_g",
        ),
        ("Retrieval with the spoken narration as the query", "retrieval_narration"),
        ("Text → sound files", "retrieval_sounds"),
        ("Still images and their descriptions", "retrieval_stills"),
    ):
        if key not in report["trained"]:
            continue
        lines += [
            f"## {title}",
            "",
            "| direction | model | space | R@1 | R@5 | R@10 | median rank |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in report["trained"][key]:
            for label, res in models:
                m = res.get(key, {}).get(name)
                if m is None:
                    continue
                if m.get("space") is None:
                    lines.append(f"| {name} | {label} | — | n/a | n/a | n/a | n/a |")
                    continue
                lines.append(
                    f"| {name} | {label} | {m['space']} | {m['R@1']:.3f} | {m['R@5']:.3f} | "
                    f"{m['R@10']:.3f} | {m['median_rank']:g} |"
                )
        lines.append("")
    if report["trained"].get("probes"):
        lines += [
            "## Linear probes on frozen backbone features (single-object clips)",
            "",
            "| features / label | model | accuracy | chance (majority) | classes |",
            "|---|---|---|---|---|",
        ]
        for name in report["trained"]["probes"]:
            for label, res in models:
                p = res.get("probes", {}).get(name)
                if p:
                    lines.append(
                        f"| {name} | {label} | {p['accuracy']:.3f} | {p['chance']:.3f} | "
                        f"{p['classes']} |"
                    )
        lines.append("")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = report["trained"]
    names = [n for n, m in trained["retrieval"].items() if m.get("space")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.38 if "untrained" in report else 0.6
    xs = np.arange(len(names))
    ax.bar(
        xs - (width / 2 if "untrained" in report else 0),
        [trained["retrieval"][n]["R@10"] for n in names],
        width,
        label="trained",
    )
    if "untrained" in report:
        ax.bar(
            xs + width / 2,
            [report["untrained"]["retrieval"][n]["R@10"] for n in names],
            width,
            label="untrained",
        )
    ax.axhline(trained["chance"]["R@10"], color="grey", linestyle="--", label="chance")
    ax.set_xticks(xs, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"R@10 among {trained['candidates']}")
    ax.set_title(f"zero-shot retrieval — {Path(report['checkpoint']).name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], json_path: Path) -> None:
    """OUT (JSON), OUT.md (tables), OUT.png (figure)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(markdown_report(report))
    plot_report(report, json_path.with_suffix(".png"))
