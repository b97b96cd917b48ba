"""Audio's own way into S_vat (model/audio_bridge.py): fitted after training, it takes
over the audio -> vat path of FAC and nothing else; checkpoints keep it, older ones
load without it."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from model_fixtures import small_inputs
from safetensors.torch import load_file, save_file

from model import MMV, load_model, save_model
from model.audio_bridge import calibrate_audio_bridge


def fine_audio(model: MMV, audio: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.heads.audio(model.audio_backbone(audio), coarse=False)["va"]


def learnable_targets(va: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Coarse targets a bridge can reach: a fixed ReLU -> Linear map of the fine audio."""
    weight = torch.randn(dim, va.shape[1], generator=torch.Generator().manual_seed(seed))
    return F.normalize(F.relu(va) @ weight.T, dim=-1)


def fitted(model: MMV, n: int = 120) -> tuple[MMV, torch.Tensor]:
    _, audio = small_inputs(model.config, batch=n, seed=11)
    va = fine_audio(model, audio)
    dim = model.config.heads.vat_dim
    text = learnable_targets(va, dim, seed=1)
    video = learnable_targets(va, dim, seed=1) + 0.1 * learnable_targets(va, dim, seed=2)
    has_text = torch.arange(n) % 3 != 0  # a third of the clips have no narration
    report = calibrate_audio_bridge(
        model, va, F.normalize(video, dim=-1), text, has_text, steps=150, lr=1e-2, progress=False
    )
    assert report is not None and report.applied, report
    assert report.loss_after < report.loss_before
    assert report.text_r1_after > report.text_r1_before
    return model, audio


def test_the_bridge_takes_over_audio_to_vat_and_nothing_else(fac_model: MMV) -> None:
    video, audio = small_inputs(fac_model.config, batch=4, seed=3)
    before_audio = fac_model.embed_audio(audio)
    before_video = fac_model.embed_video(video)
    fitted(fac_model)
    assert fac_model.heads.audio_bridge.is_calibrated
    after_audio = fac_model.embed_audio(audio)
    assert not torch.allclose(after_audio["vat"], before_audio["vat"])
    assert torch.equal(after_audio["va"], before_audio["va"])  # the fine space is untouched
    after_video = fac_model.embed_video(video)
    assert all(torch.equal(after_video[s], before_video[s]) for s in before_video)
    fac_model.heads.audio_bridge.reset()
    assert torch.equal(fac_model.embed_audio(audio)["vat"], before_audio["vat"])


def test_without_any_narration_the_video_alone_is_the_target(fac_model: MMV) -> None:
    _, audio = small_inputs(fac_model.config, batch=120, seed=12)
    va = fine_audio(fac_model, audio)
    video = learnable_targets(va, fac_model.config.heads.vat_dim, seed=3)
    report = calibrate_audio_bridge(
        fac_model, va, video, torch.zeros_like(video), torch.zeros(120, dtype=torch.bool),
        steps=150, lr=1e-2, progress=False,
    )  # fmt: skip
    assert report is not None and report.applied and report.loss_after < report.loss_before
    assert report.text_r1_before == report.text_r1_after == 0.0


def test_training_forward_never_uses_the_bridge(fac_model: MMV) -> None:
    video, audio = small_inputs(fac_model.config, batch=4, seed=5)
    fac_model.train()
    with torch.no_grad():
        plain = fac_model(video, audio)
    fitted(fac_model)
    fac_model.train()
    with torch.no_grad():
        bridged = fac_model(video, audio)
    assert torch.allclose(plain.audio_va, bridged.audio_va)


def test_only_fac_has_a_bridge(model_any_space: MMV) -> None:
    va_dim = model_any_space.config.heads.va_dim
    z = F.normalize(torch.randn(12, model_any_space.config.heads.vat_dim), dim=-1)
    report = calibrate_audio_bridge(
        model_any_space,
        torch.randn(12, va_dim),
        z,
        z,
        torch.ones(12, dtype=torch.bool),
        steps=2,
        progress=False,
    )
    assert (report is None) == (model_any_space.config.heads.space != "fac")


def test_checkpoints_keep_the_bridge_and_older_ones_load_without_it(
    fac_model: MMV, tmp_path: Path
) -> None:
    model, audio = fitted(fac_model)
    saved = save_model(model, tmp_path / "bridged")
    loaded = load_model(saved)
    assert loaded.heads.audio_bridge.is_calibrated
    assert torch.equal(loaded.embed_audio(audio[:3])["vat"], model.embed_audio(audio[:3])["vat"])

    # A checkpoint written before the bridge existed: no audio_bridge keys at all.
    weights = saved / "weights.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if "audio_bridge" not in k}
    save_file(state, str(weights))
    older = load_model(saved)
    assert not older.heads.audio_bridge.is_calibrated
    model.heads.audio_bridge.reset()
    assert torch.equal(older.embed_audio(audio[:3])["vat"], model.embed_audio(audio[:3])["vat"])
