"""The ablation runner refuses to mix budgets: a finished run of another step count in
the output folder would otherwise be reused silently in the new table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.ablation import run_ablation
from model.errors import ModelError


def test_a_finished_run_of_another_budget_is_refused_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "ablation" / "fac-seed0"
    run.mkdir(parents=True)
    (run / "eval.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps({"train": {"steps": 300}}))
    # The corpus does not exist: the check must come before the evaluation set is made.
    with pytest.raises(ModelError, match="300 steps, not 600"):
        run_ablation(tmp_path / "no-corpus", tmp_path / "ablation", 600, [0], ["fac"])
