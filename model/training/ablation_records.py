"""The ablation's finished runs, kept where they outlive the machine that trained them.

A run's folder (checkpoint, train state, its eval.json) lives under `data/`, which git
ignores and a fresh machine does not have; an ablation at the recipe takes longer than
one sitting on 2 cores, so its finished runs must survive the machine. Each one's result
is kept as one small JSON file in git (`docs/ablation-runs/<steps>/<variant>-seed<k>.json`)
with what it was trained on: the budget, the variant's settings and the corpus's digest.
A kept run is not trained again, and a kept result of another budget, another corpus or
another trainer revision is refused rather than mixed into the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from model.errors import ModelError
from model.training.resume import TRAINER_REVISION, revision_name

FORMAT = 1


def kept_path(keep: Path, name: str, seed: int) -> Path:
    return keep / f"{name}-seed{seed}.json"


def corpus_digest(data: Path) -> str | None:
    """sha256 of the corpus's manifest (generation is deterministic: the same --n and
    --seed give the same manifest on any machine); None when the corpus is not here."""
    manifest = data / "manifest.jsonl"
    if not manifest.is_file():
        return None
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def write_kept(
    path: Path,
    name: str,
    seed: int,
    budget: dict[str, Any],
    overrides: dict[str, Any],
    digest: str | None,
    result: dict[str, Any],
) -> None:
    """Keep one finished run's result (atomically: a half-written file would be read as a
        finished run by the next sitting). Every run kept is this trainer's: ablation.py refuses
    to reuse a finished run of another."""
    record = {
        "format": FORMAT,
        "variant": name,
        "seed": seed,
        "budget": budget,
        "overrides": overrides,
        "corpus_sha256": digest,
        "trainer_revision": TRAINER_REVISION,
        "kept_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "result": result,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def read_kept(
    path: Path, budget: dict[str, Any], overrides: dict[str, Any], digest: str | None
) -> dict[str, Any]:
    """The kept result of a run; ModelError when it was trained on another budget, with
    other settings, on another corpus (`digest` None: the corpus is not here to compare,
    e.g. --table-only on a machine that never made it) or by another trainer revision."""
    try:
        record = json.loads(path.read_text())
        kept_budget, result = record["budget"], record["result"]
        kept_overrides = record["overrides"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} is not a kept ablation result ({exc}); remove it") from exc
    for key, value in budget.items():
        if kept_budget.get(key) != value:
            raise ModelError(
                f"{path} was trained with {key}={kept_budget.get(key)!r}, not {value!r}: "
                "results of different budgets cannot share a table; choose another --keep"
            )
    if kept_overrides != overrides:
        differ = sorted(
            k for k in {*kept_overrides, *overrides} if kept_overrides.get(k) != overrides.get(k)
        )
        raise ModelError(
            f"{path} was trained with other settings ({', '.join(differ)}: "
            f"{ {k: kept_overrides.get(k) for k in differ} }, asked "
            f"{ {k: overrides.get(k) for k in differ} }); choose another --keep"
        )
    kept_digest = record.get("corpus_sha256")
    if digest is not None and kept_digest != digest:
        raise ModelError(
            f"{path} was trained on another corpus (manifest sha256 {str(kept_digest)[:12]}…, "
            f"this one {digest[:12]}…): make the corpus with the same --n and --seed, or "
            "choose another --keep"
        )
    kept_revision = record.get("trainer_revision")
    if kept_revision != TRAINER_REVISION:
        raise ModelError(
            f"{path} was trained by another trainer ({revision_name(kept_revision)}, this one "
            f"is revision {TRAINER_REVISION}): its results would not be this trainer's; "
            "remove it to train the run again, or choose another --keep"
        )
    return dict(result)
