"""A small generated corpus and fast training settings for the trainer/eval tests.

The corpus is made once per session (by the real generator: ffmpeg, espeak-ng) and
shared by test_train, test_eval and test_default_model: every caller with the same
parameters gets the same folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.corpus import make_corpus

REPO = Path(__file__).resolve().parents[2]
# The corpus every trainer test uses, and the default model's check set (see
# models/default/metrics.json "check"): 100 clips → 80 train / 10 val / 10 test.
SMALL_CORPUS = {"n": 100, "seed": 5, "audio": 10, "stills": 0}
# Tiny clips (4 frames of 32×32 = 1 s) and small batches: a step takes ~0.1 s.
FAST = ["video.frames=4", "video.crop_size=32", "train.batch_size=8", "train.eval_every=0"]


def corpus_folder(base: Path, n: int, seed: int, audio: int, stills: int) -> Path:
    folder = base / f"corpus-n{n}-s{seed}-a{audio}-i{stills}"
    if not (folder / "manifest.jsonl").is_file():
        make_corpus(
            folder,
            n,
            seed,
            workers=2,
            progress=False,
            n_audio=audio,
            n_stills=stills,
            overwrite=True,
        )
    return folder


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus_folder(tmp_path_factory.getbasetemp(), **SMALL_CORPUS)


def train_command(
    data: Path, out: Path, steps: int, *extra: str, overrides: list[str] | None = None
) -> list[str]:
    """`python -m model.training` with the fast settings (no progress bar, no image BN)."""
    cmd = [
        sys.executable,
        "-m",
        "model.training",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--no-progress",
        "--no-calibration",
        "--workers",
        "0",
    ]
    for item in FAST + (overrides or []):
        cmd += ["--set", item]
    return cmd + list(extra)


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done
