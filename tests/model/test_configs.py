"""Named configs: they load, the paper-size backbones have the published parameter
counts, and every config trains (forward + backward) and deflates on a tiny batch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import TEXTS
from torch import nn

from model import MMV, MMVLoss, Tokenizer, available_configs, build_model, calibrate_image_bn
from model import load_config as load_named
from model.backbones import AudioResNet, build_video_backbone

CONFIGS = ["tiny", "s3d", "tsm-r50", "tsm-r50x2"]
# ResNet50x2 holds 94M video weights: its tests take ~20 s of CPU on 2 cores.
CONFIG_PARAMS = [*CONFIGS[:-1], pytest.param("tsm-r50x2", marks=pytest.mark.slow)]


def conv_params(module: nn.Module) -> int:
    return sum(
        p.numel()
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Conv3d)
        for p in m.parameters(recurse=False)
    )


def all_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_named_configs_exist_and_load() -> None:
    assert set(CONFIGS) <= set(available_configs())
    for name in CONFIGS:
        cfg = load_named(name)
        assert cfg.name == name and cfg.notes
    paper = load_named("tsm-r50")
    assert (paper.video.frames, paper.video.fps, paper.video.crop_size) == (32, 10.0, 200)
    assert (
        paper.audio.sample_rate,
        paper.audio.n_mels,
        paper.audio.win_ms,
        paper.audio.hop_ms,
    ) == (48000, 80, 42.0, 21.0)
    assert (paper.heads.va_dim, paper.heads.vat_dim, paper.text.max_words) == (512, 256, 16)


def test_paper_size_parameter_counts() -> None:
    """Counted on the meta device: no memory, no big inputs."""
    with torch.device("meta"):
        r50 = build_video_backbone(load_named("tsm-r50").video)
        r50x2 = build_video_backbone(load_named("tsm-r50x2").video)
        s3d = build_video_backbone(load_named("s3d").video)
        audio = AudioResNet(load_named("tsm-r50").audio)
    # ResNet50: 23.45M conv weights (torchvision's resnet50 without its fc: 23,454,912)
    assert conv_params(r50) == 23_454_912
    assert r50.output_dim == 2048 and r50x2.output_dim == 4096
    # ResNet50x2 ≈ 4x the conv weights (paper: TSM-ResNet50x2 93.9M)
    assert abs(all_params(r50x2) - 93.9e6) / 93.9e6 < 0.01
    # S3D-G: ≈ 8M conv weights, 9.1M with the gating layers (paper: 9.1M)
    assert abs(conv_params(s3d) - 8.0e6) / 8.0e6 < 0.02
    assert abs(all_params(s3d) - 9.1e6) / 9.1e6 < 0.02
    assert s3d.output_dim == 1024
    # audio ResNet50 on one input channel
    assert conv_params(audio) == 23_454_912 - 7 * 7 * 2 * 64
    assert audio.output_dim == 2048


def smooth_pictures(n: int, size: int, seed: int) -> torch.Tensor:
    """Picture-like images: low-frequency colour fields, [n, size, size, 3] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return (
        F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        .permute(0, 2, 3, 1)
        .contiguous()
    )


@pytest.fixture(scope="module", params=CONFIG_PARAMS)
def trained_model(request: pytest.FixtureRequest) -> Iterator[MMV]:
    """Each config with tiny inputs (paper sizes: 4 frames of 16x16, 0.4 s of audio)."""
    cfg = load_named(request.param)
    if request.param != "tiny":
        cfg = cfg.replace(video={"frames": 4, "crop_size": 16})
    torch.manual_seed(0)
    model = build_model(cfg, Tokenizer.build(TEXTS, max_size=64))
    yield model
    del model


def test_forward_and_backward(trained_model: MMV) -> None:
    cfg = trained_model.config
    tok = trained_model.tokenizer
    g = torch.Generator().manual_seed(1)
    b, k = 2, 2
    video = torch.rand(
        b, cfg.video.frames, cfg.video.crop_size, cfg.video.crop_size, 3, generator=g
    )
    audio = torch.rand(b, cfg.audio_samples, generator=g) * 2 - 1
    ids, mask = tok.encode(TEXTS[: b * k])
    trained_model.train()
    batch = trained_model(video, audio, ids.view(b, k, -1), mask.view(b, k, -1))
    total, terms = MMVLoss(cfg.loss)(batch)
    total.backward()
    assert torch.isfinite(total) and set(terms) == {"nce_va", "mil_nce_vt"}
    for part in (
        trained_model.video_backbone,
        trained_model.audio_backbone,
        trained_model.text_backbone,
        trained_model.heads,
    ):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(gr is not None for gr in grads)
        assert sum(float(gr.abs().sum()) for gr in grads) > 0
    trained_model.zero_grad(set_to_none=True)


def test_image_calibration_brings_stills_nearer_their_clips(trained_model: MMV) -> None:
    """On every config: after calibration on moving clips, each clip's middle frame is
    found more surely (InfoNCE against the clips' videos) in every space. (Held-out
    clips: test_deflation.py, on the tiny config.)"""
    cfg = trained_model.config
    size, frames = cfg.video.crop_size, cfg.video.frames
    trained_model.train()  # realistic BN statistics: train-mode passes over static clips
    with torch.no_grad():
        for seed in range(3):
            pics = smooth_pictures(4, size, 10 + seed)
            trained_model(
                pics[:, None].expand(-1, frames, -1, -1, -1).contiguous(),
                torch.zeros(4, cfg.audio_samples),
            )
    trained_model.eval()
    pictures = smooth_pictures(30, size, seed=1)
    # Each picture slides sideways by 1-3 pixels a frame: the clip moves.
    clips = torch.stack(
        [
            torch.stack([torch.roll(p, (1 + i % 3) * t, dims=1) for t in range(frames)])
            for i, p in enumerate(pictures)
        ]
    )
    stills = clips[:, frames // 2]

    def losses() -> dict[str, float]:
        img, vid = trained_model.embed_image(stills), trained_model.embed_video(clips)
        labels = torch.arange(len(stills))
        return {
            s: float(F.cross_entropy(img[s].float() @ vid[s].float().T / 0.07, labels)) for s in img
        }

    before = losses()
    report = calibrate_image_bn(
        trained_model, clips, steps=10, batch_size=24, lr=3e-3, progress=False
    )
    after = losses()
    assert report.applied and report.loss_after < report.loss_before
    for space in before:
        assert after[space] < before[space], (cfg.name, space, before, after)
