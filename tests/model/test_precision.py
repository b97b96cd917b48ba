"""train.precision: bf16 autocast where the hardware has it, float32 where it would be
emulated, and what the trainer records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_fixtures import run, train_command

from model.config import ConfigError
from model.training.precision import autocast_for, cpu_has_native_bf16, training_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_takes_bf16_on_cuda_and_on_cpus_with_native_bf16_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert training_dtype("auto", CUDA) == torch.bfloat16
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not cpu_has_native_bf16()
    assert training_dtype("auto", CPU) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16()
    assert training_dtype("auto", CPU) == torch.bfloat16


def test_forced_settings_and_a_bad_one() -> None:
    assert training_dtype("float32", CUDA) == torch.float32
    assert training_dtype("bf16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match=r"train.precision must be one of .*'fp8'"):
        training_dtype("fp8", CPU)


def test_autocast_region_computes_convolutions_in_the_chosen_type() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with autocast_for(torch.bfloat16, CPU)():
        assert conv(x).dtype == torch.bfloat16
    with autocast_for(torch.float32, CPU)():
        assert conv(x).dtype == torch.float32


@pytest.mark.parametrize("precision", ["bf16", "float32"])
def test_the_trainer_computes_in_the_setting_and_records_it(
    small_corpus: Path, tmp_path: Path, precision: str
) -> None:
    out = tmp_path / precision
    done = run(train_command(small_corpus, out, 2, overrides=[f"train.precision={precision}"]))
    assert f"on cpu in {precision}," in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["precision"] == precision
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["precision"] == precision


def test_the_trainer_refuses_an_unknown_precision(small_corpus: Path, tmp_path: Path) -> None:
    cmd = train_command(small_corpus, tmp_path / "run", 1, overrides=["train.precision=half"])
    with pytest.raises(AssertionError, match=r"train\.precision must be one of"):
        run(cmd)
