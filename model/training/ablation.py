"""The paper's ablation on our corpus: shared vs disjoint vs FAC, and three modalities vs two.

    python -m model.training.ablation --data CORPUS --out DIR [--steps N] [--seeds 0 1 2]
                                      [--pair-seeds 0] [--set train.batch_size=256]
                                      [--variants fac shared ...] [--doc docs/ablation.md]
                                      [--keep docs/ablation-runs/2500]

Every variant trains the tiny config from scratch with the same budget (steps, batch,
schedule, data) for each seed, then is evaluated like `python -m model.evaluation` on the
corpus test split (decoded once, shared by every run). Runs already finished in DIR are
not trained again, so an interrupted ablation continues where it stopped; with --keep,
each finished run's result is also kept in a folder in git (ablation_records.py) and a
run kept there is not trained again on any machine. Results:
DIR/ablation.json (every run), DIR/ablation.md (mean ± std per variant) and, with
--doc, the doc's section for this budget (steps) is replaced by the new one; sections
of other budgets stay. --table-only trains nothing and makes the table from the runs
already finished in DIR, so a budget too long for one sitting can be reported in pieces.
The tables and the claims: ablation_report.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import load as load_checkpoint
from model.config import load_config
from model.errors import ModelError
from model.evaluation.eval_sets import (
    DEFAULT_CANDIDATES,
    PROBE_TRAIN_CLIPS,
    CorpusEval,
    prepare_corpus_eval,
)
from model.evaluation.evaluate import evaluate
from model.training.ablation_records import corpus_digest, kept_path, read_kept, write_kept
from model.training.ablation_report import figure, markdown, plot_ablation, summarise, update_doc
from model.training.options import TrainOptions, apply_overrides, parse_overrides
from model.training.resume import TRAINER_REVISION, revision_name
from model.training.train import train


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]
    description: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fac", {"heads.space": "fac"}, "fine and coarse spaces, video + audio + text"),
        Variant("shared", {"heads.space": "shared"}, "one shared space, video + audio + text"),
        Variant(
            "disjoint", {"heads.space": "disjoint"}, "two disjoint spaces, video + audio + text"
        ),
        Variant(
            "fac-va",
            {"heads.space": "fac", "loss.lambda_vt": 0.0},
            "FAC heads, video + audio only (λ_vt = 0)",
        ),
        Variant(
            "fac-vt",
            {"heads.space": "fac", "loss.lambda_va": 0.0},
            "FAC heads, video + text only (λ_va = 0)",
        ),
    )
}


TWO_MODALITY = ("fac-va", "fac-vt")


def run_order(
    variants: list[str], seeds: list[int], pair_seeds: list[int] | None
) -> list[tuple[str, int]]:
    """(variant, seed) in the order they train. Seed by seed, so an ablation run in pieces
    compares shared, disjoint and FAC at one seed before any of them has a second; the
    two-modality variants, a question the paper settles with one run each, come last."""
    pairs = [
        (name, seed)
        for name in variants
        for seed in (pair_seeds if pair_seeds is not None and name in TWO_MODALITY else seeds)
    ]
    return sorted(pairs, key=lambda run: (run[0] in TWO_MODALITY, run[1]))


def _step_minutes(run_dir: Path) -> float:
    """Minutes the run's training steps took, over every piece of a resumed run (its
    loss.csv; validations not counted)."""
    with (run_dir / "loss.csv").open(newline="") as f:
        return round(sum(float(row["step_s"]) for row in csv.DictReader(f)) / 60, 2)


def _trained_with(run_dir: Path) -> tuple[int | None, object]:
    """The steps a finished run was trained for and its trainer's revision (its
    metrics.json); None for what is unknown."""
    try:
        train = json.loads((run_dir / "metrics.json").read_text())["train"]
        return int(train["steps"]), train.get("trainer_revision")
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def run_ablation(
    data: Path,
    out: Path,
    steps: int,
    seeds: list[int],
    variants: list[str],
    config: str = "tiny",
    candidates: int = DEFAULT_CANDIDATES,
    probe_train: int = PROBE_TRAIN_CLIPS,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    table_only: bool = False,
    pair_seeds: list[int] | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate every variant × seed not finished in `out` (nor kept in
    `keep`), then summarise. With `table_only`, train nothing: summarise the runs already
    finished. `pair_seeds`: the seeds of the two-modality variants, when fewer than the
    others' (they answer a question the paper settles with one run each). `keep`: a
    folder in git where each finished run's result is kept (ablation_records.py)."""
    out.mkdir(parents=True, exist_ok=True)
    order = run_order(variants, seeds, pair_seeds)
    cfg = apply_overrides(load_config(config), overrides or {})
    kept_budget = {"steps": steps, "batch_size": cfg.train.batch_size, "config": config}
    digest = corpus_digest(data)

    def settings_of(name: str) -> dict[str, Any]:  # every --set, then the variant's own
        return {**(overrides or {}), **VARIANTS[name].overrides}

    # Finished runs are reused: refuse, before any work, ones trained for another budget.
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for name, seed in order:
        if keep is not None and kept_path(keep, name, seed).is_file():
            path = kept_path(keep, name, seed)
            kept[name, seed] = read_kept(path, kept_budget, settings_of(name), digest)
            continue
        run_dir = out / f"{name}-seed{seed}"
        trained, revision = _trained_with(run_dir)
        if not (run_dir / "eval.json").is_file():
            # Trained, not yet evaluated (killed in between): evaluated next, so it must
            # be this trainer's too.
            if trained is not None and revision != TRAINER_REVISION:
                raise ModelError(
                    f"{run_dir} holds a run of another trainer ({revision_name(revision)}, "
                    f"this one is revision {TRAINER_REVISION}): delete the folder to train it "
                    "again, or choose another --out"
                )
            continue
        if trained != steps:
            raise ModelError(
                f"{run_dir} holds a run of {trained} steps, not {steps}: results of "
                "different budgets cannot share a table; choose another --out"
            )
        if revision != TRAINER_REVISION:
            raise ModelError(
                f"{run_dir} holds a run of another trainer ({revision_name(revision)}, "
                f"this one is revision {TRAINER_REVISION}): its results would not be this "
                "trainer's; delete the folder to train it again, or choose another --out"
            )
    prepared: CorpusEval | None = None  # the test split, decoded when a run needs it
    runs: list[dict[str, Any]] = []
    for name, seed in order:
        run_dir = out / f"{name}-seed{seed}"
        report = run_dir / "eval.json"
        run_overrides = settings_of(name)
        if (name, seed) in kept:
            result = kept[name, seed]
        elif report.is_file():
            result = json.loads(report.read_text())
        elif table_only:
            continue
        else:
            if prepared is None:
                prepared = prepare_corpus_eval(data, cfg, "test", candidates, probe_train, progress)
            train(
                TrainOptions(
                    data=data,
                    out=run_dir,
                    config=config,
                    steps=steps,
                    seed=seed,
                    overrides=run_overrides,
                    progress=progress,
                )
            )
            result = evaluate(load_checkpoint(run_dir), prepared, progress=progress)
            result["train_minutes"] = _step_minutes(run_dir)
            report.write_text(json.dumps(result, indent=2) + "\n")
        # Kept only with the corpus's digest: a result nobody can check against its
        # corpus could later join a table of another.
        if keep is not None and (name, seed) not in kept and digest is not None:
            path = kept_path(keep, name, seed)
            write_kept(path, name, seed, kept_budget, run_overrides, digest, result)
            print(f"kept {name} seed {seed}'s result in {path}")
        runs.append({"variant": name, "seed": seed, "result": result})
        print(
            f"{name} seed {seed}: text->video R@10 "
            f"{figure(result, ('retrieval', 'text->video', 'R@10'))}, video->audio R@10 "
            f"{figure(result, ('retrieval', 'video->audio', 'R@10'))}"
        )
    if not runs:
        where = f"{out}" + (f" nor kept in {keep}" if keep is not None else "")
        raise ModelError(
            f"no finished runs of {variants} × seeds {seeds} in {where}: `make ablation` "
            "trains them (each result is kept as it finishes)"
        )
    budget = {
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "config": config,
        "seeds": sorted({run["seed"] for run in runs}),
        "candidates": int(runs[0]["result"]["candidates"]),
        "corpus": str(data),
    }
    summary = summarise(runs, variants)
    results = {
        "budget": budget,
        "variants": {n: VARIANTS[n].description for n in variants},
        "summary": summary,
        "runs": runs,
    }
    (out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "ablation.md").write_text(markdown(summary, budget, "ablation.png"))
    plot_ablation(summary, budget, out / "ablation.png")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m model.training.ablation", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", required=True, type=Path, help="corpus folder")
    p.add_argument("--out", required=True, type=Path, help="folder for the runs and results")
    p.add_argument("--steps", type=int, default=600, help="training steps per run (default 600)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--pair-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the two-modality variants (fac-va, fac-vt); default: --seeds",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. train.batch_size=256 (repeatable)",
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--config", default="tiny")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    p.add_argument("--probe-train", type=int, default=PROBE_TRAIN_CLIPS)
    p.add_argument("--doc", type=Path, default=None, help="markdown file whose results to replace")
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="folder (in git) where each finished run's result is kept; runs kept there "
        "are not trained again on any machine",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="train nothing; make the table from the runs already finished in --out",
    )
    a = p.parse_args(argv)
    try:
        results = run_ablation(
            a.data,
            a.out,
            a.steps,
            a.seeds,
            a.variants,
            a.config,
            a.candidates,
            a.probe_train,
            overrides=parse_overrides(a.set),
            progress=not a.no_progress,
            table_only=a.table_only,
            pair_seeds=a.pair_seeds,
            keep=a.keep,
        )
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(results["summary"], results["budget"]))
    if a.doc is not None:
        image = Path("img") / f"ablation-{a.steps}.png"  # beside the doc's other figures
        (a.doc.parent / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(a.out / "ablation.png", a.doc.parent / image)
        update_doc(a.doc, markdown(results["summary"], results["budget"], str(image)), a.steps)
        print(f"updated {a.doc} and {a.doc.parent / image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
