"""After training: the image BN and the audio bridge are fitted on a sample of training
clips (model/training/calibration.py), by the trainer and by the command that fits an
existing checkpoint again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_fixtures import FAST

from model import load_model
from model.evaluation.calibration_study import main as study_main
from model.training.calibration import main as calibration_main
from model.training.options import TrainOptions, parse_overrides
from model.training.train import train


@pytest.fixture(scope="module")
def trained_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run that ends as every run does: with both fits."""
    out = tmp_path_factory.mktemp("calibration") / "run"
    train(
        TrainOptions(
            data=small_corpus,
            out=out,
            steps=12,
            overrides=parse_overrides([*FAST, "train.lr=5e-3"]),
            progress=False,
            num_workers=0,
        )
    )
    return out


def test_training_ends_with_both_fits_and_the_command_makes_them_again(
    small_corpus: Path, trained_run: Path
) -> None:
    out = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    image, bridge = metrics["image_bn"], metrics["audio_bridge"]
    assert image["target"] == "clip"  # the moving clips, not the paper's static ones
    for report in (image, bridge):
        if report["applied"]:
            assert report["loss_after"] < report["loss_before"]
        else:
            assert report["loss_after"] == report["loss_before"]
    model = load_model(out)
    assert bool(model.image_bn.calibrated) == image["applied"]
    assert model.heads.audio_bridge.is_calibrated == bridge["applied"]

    # Fitted again from scratch by the command: the same sample and seed, the same fits.
    assert calibration_main([str(out), "--data", str(small_corpus)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["image_bn"]["applied"] == image["applied"]
    assert again["audio_bridge"]["applied"] == bridge["applied"]
    assert "calibration_s" in again and again["train"] == metrics["train"]


def test_the_command_says_what_is_wrong_with_a_missing_checkpoint(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert calibration_main([str(tmp_path / "nothing"), "--data", str(small_corpus)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_the_study_measures_every_path_on_a_trained_run(
    small_corpus: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained_run
    assert study_main([str(out), "--data", str(small_corpus), "--candidates", "10"]) == 0
    table = capsys.readouterr().out
    for row in (
        "untrained network, deflated",
        "γ/β fitted to static clips (the paper's target)",
        "γ/β fitted to the moving clips (now)",
        "ceiling: the clip's own middle window, moving",
        "through g_va→vat (the paper)",
        "through the audio bridge fitted to video and narration (now)",
    ):
        line = next(line for line in table.splitlines() if row in line)
        recall_at_10 = float(line.split("|")[3])
        assert 0.0 <= recall_at_10 <= 1.0
    # Ten candidates: every query's own clip is among the first ten.
    assert "| ceiling: the clip's own middle window, moving | 1.000 | 1.000 |" in table
