"""Checkpoints: exact round trip, and a clear error for every kind of bad directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from model_fixtures import small_config, small_inputs
from safetensors.torch import load_file, save_file

from model import MMV, CheckpointError, calibrate_image_bn, load_config, load_model, save_model
from model.checkpoint import read_metrics


@pytest.fixture
def saved(fac_model: MMV, tmp_path: Path) -> Path:
    video, _ = small_inputs(fac_model.config, batch=4, seed=5)
    calibrate_image_bn(fac_model, video, steps=3, batch_size=4, progress=False)
    return save_model(fac_model, tmp_path / "v1", metrics={"recall@10": 0.5})


def test_round_trip_is_bit_exact(fac_model: MMV, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "metrics.json",
        "vocab.json",
        "weights.safetensors",
    ]
    loaded = load_model(saved)
    assert not loaded.training
    video, audio = small_inputs(fac_model.config, batch=2, seed=9)
    texts = ["a red ball", "zebra drum", ""]
    for name, x in (("video", video), ("audio", audio), ("image", video[:, 0]), ("text", texts)):
        a = getattr(fac_model, f"embed_{name}")(x)
        b = getattr(loaded, f"embed_{name}")(x)
        assert a.keys() == b.keys()
        for space in a:
            assert torch.equal(a[space], b[space]), f"{name}/{space} differs"
    assert bool(loaded.image_bn.calibrated)
    assert loaded.tokenizer.vocabulary == fac_model.tokenizer.vocabulary
    assert read_metrics(saved) == {"recall@10": 0.5}
    # config.json is an ordinary config file with every preprocessing parameter
    cfg = load_config(saved / "config.json")
    assert cfg == fac_model.config
    data = json.loads((saved / "config.json").read_text())
    for section, key in (
        ("video", "fps"),
        ("video", "frames"),
        ("video", "crop_size"),
        ("audio", "sample_rate"),
        ("audio", "n_mels"),
        ("audio", "win_ms"),
        ("audio", "hop_ms"),
        ("text", "max_words"),
        ("heads", "space"),
    ):
        assert key in data[section]


def test_missing_file(saved: Path) -> None:
    (saved / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing vocab\.json"):
        load_model(saved)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(saved / "nope")


def test_unknown_version(saved: Path) -> None:
    data = json.loads((saved / "config.json").read_text())
    data["format_version"] = 7
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="format_version 7"):
        load_model(saved)


def test_unknown_config_key(saved: Path) -> None:
    data = json.loads((saved / "config.json").read_text())
    data["video"]["wings"] = 2
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="wings"):
        load_model(saved)


def test_shape_mismatch_names_the_tensor(saved: Path, tmp_path: Path) -> None:
    data = json.loads((saved / "config.json").read_text())
    data["heads"]["vat_dim"] = 64
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"'heads\.va_to_vat\.fc\.weight' has shape"):
        load_model(saved)


def test_missing_and_corrupt_weights(saved: Path) -> None:
    state = load_file(str(saved / "weights.safetensors"))
    del state["heads.text_to_vat.bias"]
    save_file(state, str(saved / "weights.safetensors"))
    with pytest.raises(CheckpointError, match=r"heads\.text_to_vat\.bias"):
        load_model(saved)
    (saved / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(saved)


def test_vocabulary_size_mismatch(saved: Path, tmp_path: Path) -> None:
    vocab = json.loads((saved / "vocab.json").read_text())
    vocab["words"].append("extraword")
    (saved / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match=r"text_backbone\.embedding\.weight"):
        load_model(saved)


def test_save_overwrites_in_place(fac_model: MMV, saved: Path) -> None:
    copy = saved.parent / "copy"
    shutil.copytree(saved, copy)
    save_model(fac_model, copy, metrics={"step": 2})
    assert read_metrics(copy) == {"step": 2}
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]  # no temp files left


def test_disjoint_round_trip(tmp_path: Path) -> None:
    from model import build_model

    m = build_model(small_config("disjoint"))
    loaded = load_model(save_model(m, tmp_path / "d"))
    assert loaded.spaces == ("va", "vt")
