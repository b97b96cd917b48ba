"""The ablation's results as a reader sees them: per-variant mean ± std over seeds, the
paper's claims judged against the seeds' spread, the table and figure, and the doc
section of one budget (docs/ablation.md).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

# The figures the tables show: (label, path into an evaluation result).
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("text→video R@10", ("retrieval", "text->video", "R@10")),
    ("text→audio R@10", ("retrieval", "text->audio", "R@10")),
    # The paper's zero-shot protocol: through g_va→vat, without FAC's audio bridge (which
    # is fitted against the clips' narrations too). Runs kept before it was measured
    # lack it where a bridge was fitted; shared and disjoint have none to leave out.
    ("text→audio R@10 through g", ("retrieval_through_g", "text->audio", "R@10")),
    ("video→audio R@10", ("retrieval", "video->audio", "R@10")),
    ("audio→video R@1", ("retrieval", "audio->video", "R@1")),
    ("audio→video R@10", ("retrieval", "audio->video", "R@10")),
    ("image→video R@1", ("retrieval", "image->video", "R@1")),
    ("probe video/shape", ("probes", "video/shape", "accuracy")),
    ("probe video/colour", ("probes", "video/colour", "accuracy")),
    ("probe audio/shape", ("probes", "audio/shape", "accuracy")),
    ("probe audio/motion", ("probes", "audio/motion", "accuracy")),
)
PROBES = tuple(label for label, path in COLUMNS if path[0] == "probes")
DOC_MARK = "<!-- ablation-results:"


def doc_markers(steps: int) -> tuple[str, str]:
    """The markers around one budget's results in the doc."""
    return (
        f"{DOC_MARK}begin steps={steps} (written by python -m model.training.ablation) -->",
        f"{DOC_MARK}end steps={steps} -->",
    )


def figure(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _with_through_g(run: dict[str, Any]) -> dict[str, Any]:
    """A run's result; one of shared or disjoint kept before `retrieval_through_g` was
    measured has it equal to its `retrieval` (no bridge: nothing to leave out)."""
    result = run["result"]
    if "retrieval_through_g" in result or str(run["variant"]).startswith("fac"):
        return result
    return {**result, "retrieval_through_g": result.get("retrieval", {})}


def summarise(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, dict[str, Any]]:
    """variant -> column -> {"values", "by_seed", "mean", "std"} (over seeds)."""
    out: dict[str, dict[str, Any]] = {}
    for name in variants:
        results = [(r["seed"], _with_through_g(r)) for r in runs if r["variant"] == name]
        out[name] = {}
        for label, path in COLUMNS:
            by_seed = {
                seed: v
                for seed, v in ((seed, figure(res, path)) for seed, res in results)
                if v is not None
            }
            values = list(by_seed.values())
            out[name][label] = {
                "values": values,
                "by_seed": by_seed,
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
            }
    return out


# A difference of means counts only beyond this many standard errors of the difference
# (Welch): with 2-3 seeds a smaller one could be seed noise.
SEPARATION_SE = 2.0


def separated(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether a's and b's means differ by more than the seeds' spread allows (None:
    one seed of either, no spread to judge by)."""
    na, nb = len(a["values"]), len(b["values"])
    if na < 2 or nb < 2:
        return None
    se = math.sqrt(a["std"] ** 2 / na + b["std"] ** 2 / nb)
    return abs(a["mean"] - b["mean"]) > SEPARATION_SE * se


def seeds_ahead(a: dict[str, Any], b: dict[str, Any]) -> str:
    """In how many of the seeds both ran a beat b (same seed = same data order)."""
    common = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    ahead = sum(a["by_seed"][s] > b["by_seed"][s] for s in common)
    return f"{ahead} of {len(common)}"


def verdict(winner: str, stats: dict[str, dict[str, Any]], claimed: str) -> str:
    """'holds' / 'does not hold' / 'not separated' for the claim that `claimed` beats the
    others in `stats`, given that `winner` has the best mean."""
    others = [k for k in stats if k != claimed]
    if winner == claimed:
        calls = [separated(stats[claimed], stats[k]) for k in others]
    else:
        calls = [separated(stats[winner], stats[claimed])]
    if False in calls:  # a comparison with seeds on both sides that they do not separate
        return "not separated"
    if None in calls:
        word = "holds" if winner == claimed else "does not hold"
        return f"{word} on the means (one seed: no spread to judge by)"
    return "holds" if winner == claimed else "does not hold"


def claims(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's claims, each with what this ablation measured (whatever it shows)."""

    def column(variant: str, label: str) -> dict[str, Any] | None:
        stats = summary.get(variant, {}).get(label)
        return stats if stats and stats["values"] else None

    def shown(name: str, stats: dict[str, Any]) -> str:
        return f"{name} {mean_std(stats['values'])}"

    lines = []
    # The paper judges video–audio on linear probes of the frozen towers (UCF101, HMDB51,
    # ESC-50): the probe columns here; retrieval in S_va as well.
    for task, labels in (
        ("video–audio", ("video→audio R@10", "audio→video R@10", *PROBES)),
        ("video–text", ("text→video R@10",)),
    ):
        for label in labels:
            known = {
                v: stats
                for v in ("fac", "shared", "disjoint")
                if (stats := column(v, label)) is not None
            }
            if len(known) < 2 or "fac" not in known:
                continue
            best = max(known, key=lambda k: known[k]["mean"])
            figures = ", ".join(shown(k, v) for k, v in known.items())
            paired = ", ".join(
                f"{seeds_ahead(known['fac'], v)} against {k}"
                for k, v in known.items()
                if k != "fac"
            )
            lines.append(
                f"- FAC best on {task} ({label}): {verdict(best, known, 'fac')} — {figures}; "
                f"seeds with fac ahead: {paired}."
            )
    t2a = {v: column(v, "text→audio R@10") for v in ("fac", "shared", "disjoint")}
    possible = [k for k, v in t2a.items() if v is not None]
    lines.append(
        "- text→audio only possible with shared or FAC: measured for "
        f"{', '.join(possible) or 'none'}; disjoint has no space holding text and audio"
        + (" (as expected)." if "disjoint" not in possible else " (unexpected!).")
    )
    for label, protocol in (
        ("text→audio R@10 through g", "zero-shot, through g_va→vat as in the paper"),
        ("text→audio R@10", "FAC with its audio bridge, fitted on the narrations too"),
    ):
        fac, shared = column("fac", label), column("shared", label)
        if fac is None or shared is None:
            continue
        # Not a table of the paper, but its argument for FAC: one space forces audio and
        # text into the same granularity, which should cost the audio–text match.
        best = "fac" if fac["mean"] > shared["mean"] else "shared"
        lines.append(
            f"- FAC above shared on text→audio R@10, {protocol} (the paper's granularity "
            f"argument): {verdict(best, {'fac': fac, 'shared': shared}, 'fac')} — "
            f"fac {mean_std(fac['values'])}, shared {mean_std(shared['values'])}; "
            f"seeds with fac ahead: {seeds_ahead(fac, shared)}."
        )
    for three, two, label in (
        ("fac", "fac-va", "video→audio R@10"),
        ("fac", "fac-vt", "text→video R@10"),
    ):
        a, b = column(three, label), column(two, label)
        if a is not None and b is not None:
            best = three if a["mean"] > b["mean"] else two
            lines.append(
                f"- three modalities beat two on {label}: "
                f"{verdict(best, {three: a, two: b}, three)} — three {mean_std(a['values'])}, "
                f"two ({two}) {mean_std(b['values'])}; seeds with three ahead: {seeds_ahead(a, b)}."
            )
    return lines


def markdown(
    summary: dict[str, dict[str, Any]], budget: dict[str, Any], image: str | None = None
) -> str:
    labels = [label for label, _ in COLUMNS]
    lines = [
        f"## {budget['steps']:,} steps a run",
        "",
        f"Budget per run: {budget['steps']} steps × batch {budget['batch_size']} "
        f"(config `{budget['config']}`), seeds {budget['seeds']}; test split "
        f"{budget['candidates']} candidates (chance R@1 {1 / budget['candidates']:.3f}, "
        f"R@10 {10 / budget['candidates']:.3f}); mean ± std over the seeds finished "
        "(a single figure where only one is).",
        "",
        *(
            [f"![the ablation at {budget['steps']:,} steps: means, spread and seeds]({image})", ""]
            if image
            else []
        ),
        "| variant | seeds | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for name, columns in summary.items():
        seeds = max(len(columns[label]["values"]) for label in labels)
        cells = [mean_std(columns[label]["values"]) for label in labels]
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "What the paper claims, beside what was measured. A claim holds or fails only when "
        f"the difference of means exceeds {SEPARATION_SE:g} standard errors of that "
        "difference (Welch, over the seeds); closer than that it is not separated. Seeds "
        "are paired: the same seed is the same data order for every variant.",
        "",
        *claims(summary),
        "",
    ]
    return "\n".join(lines)


def plot_ablation(summary: dict[str, dict[str, Any]], budget: dict[str, Any], path: Path) -> None:
    """Bars of each variant's mean with ± std whiskers and a dot per seed: retrieval R@K
    in one panel, the linear probes in the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("zero-shot retrieval", [c for c, _ in COLUMNS if not c.startswith("probe")]),
        (
            "linear probes on frozen features (accuracy)",
            [c for c, _ in COLUMNS if c.startswith("probe")],
        ),
    ]
    variants = list(summary)
    width = 0.8 / max(1, len(variants))
    fig, axes = plt.subplots(2, 1, figsize=(11, 7.5))
    for ax, (title, labels) in zip(axes, panels, strict=True):
        xs = np.arange(len(labels))
        for i, name in enumerate(variants):
            x = xs + (i - (len(variants) - 1) / 2) * width
            stats = [summary[name][label] for label in labels]
            means = [s["mean"] if s["mean"] is not None else 0.0 for s in stats]
            stds = [s["std"] or 0.0 for s in stats]
            ax.bar(x, means, width, yerr=stds, capsize=2, label=name)
            for xi, s in zip(x, stats, strict=True):
                ax.plot([xi] * len(s["values"]), s["values"], ".", color="black", ms=3)
                if not s["values"]:  # e.g. text→audio of disjoint: no space holds both
                    ax.text(xi, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(xs, [label.replace(" R@", "\nR@").replace("probe ", "") for label in labels])
        ax.set_ylim(0, 1.15)  # room above 1.0 for the legend, clear of the bars
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(
        10 / budget["candidates"], color="grey", linestyle="--", lw=1, label="chance R@10"
    )
    axes[0].legend(ncol=len(variants) + 1, fontsize=8, loc="upper right")
    fig.suptitle(
        f"ablation, {budget['steps']:,} steps × batch {budget['batch_size']} a run, "
        f"seeds {budget['seeds']} (bars: mean, whiskers: ± std, dots: seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def update_doc(doc: Path, table: str, steps: int) -> None:
    """Replace this budget's results section of the doc (between its markers) with
    `table`. A budget without a section gets one above the other budgets' sections (the
    newest first), or at the end of a doc that has none."""
    begin, end = doc_markers(steps)
    text = doc.read_text() if doc.is_file() else "# Ablation\n"
    if begin not in text or end not in text:
        empty = f"{begin}\n{end}\n"
        first = text.find(f"{DOC_MARK}begin")
        if first == -1:
            text = text.rstrip() + f"\n\n{empty}"
        else:
            text = f"{text[:first]}{empty}\n{text[first:]}"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{table}\n{end}{tail}")
