"""Deflation and image-mode BN calibration on the tiny config."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from model_fixtures import TEXTS
from torch import nn

from model import MMV, Tokenizer, build_model, calibrate_image_bn, load_config
from model.deflation import deflated_features, moment_matched_bn, repeat_as_clip


def pictures(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return (
        F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        .permute(0, 2, 3, 1)
        .contiguous()
    )


def tiny_with_bn_statistics(seed: int = 0) -> MMV:
    """The tiny model with BN running statistics averaged over 24 static clips."""
    cfg = load_config("tiny")
    torch.manual_seed(seed)
    m = build_model(cfg, Tokenizer.build(TEXTS, max_size=64))
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the passes below
    m.train()
    with torch.no_grad():
        for s in range(3):
            clips = repeat_as_clip(pictures(8, cfg.video.crop_size, 10 + s), cfg.video.frames)
            m(clips, torch.zeros(8, cfg.audio_samples))
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = cfg.heads.bn_momentum
    return m.eval()


def test_calibration_generalises_to_held_out_pictures() -> None:
    m = tiny_with_bn_statistics()
    cfg = m.config
    held_out = pictures(32, cfg.video.crop_size, seed=99)
    clips = repeat_as_clip(held_out, cfg.video.frames)

    def gaps() -> dict[str, float]:
        img, vid = m.embed_image(held_out), m.embed_video(clips)
        out = {s: float(1 - (img[s].double() * vid[s].double()).sum(-1).mean()) for s in img}
        feats = m.backbone_features("image", held_out) - m.backbone_features("video", clips)
        out["features_l1"] = float(feats.abs().mean())
        return out

    before = gaps()
    report = calibrate_image_bn(
        m,
        pictures(64, cfg.video.crop_size, seed=1),
        steps=12,
        batch_size=32,
        lr=2e-3,
        progress=False,
    )
    after = gaps()
    assert report.applied
    # What calibration fits: the backbone features of held-out pictures come ~6% closer
    # to those of their clips. Through this untrained model's random heads the embedding
    # gaps move by ±0.5% either way with the float summation order (torch threads, the
    # trunks' memory layout), and grow with more steps: they must not get worse beyond
    # that, which is all a random projection of a 6% smaller gap can promise.
    assert after["features_l1"] < 0.97 * before["features_l1"], (before, after)
    for space in ("va", "vat"):
        assert after[space] < 1.01 * before[space], (space, before, after)


def test_embed_image_uses_the_calibrated_parameters() -> None:
    m = tiny_with_bn_statistics()
    image = pictures(2, m.config.video.crop_size, seed=3)
    plain = m.embed_image(image)
    assert torch.equal(
        m.backbone_features("image", image),
        deflated_features(m.video_backbone, image.to(m.device)),
    )
    cfg = m.config
    clips = moving_clips(80, cfg.video.crop_size, cfg.video.frames, seed=4)
    report = calibrate_image_bn(m, clips, steps=30, batch_size=32, progress=False)
    assert report.applied
    assert bool(m.image_bn.calibrated)
    calibrated = m.embed_image(image)
    assert not torch.equal(plain["va"], calibrated["va"])
    # The video path is untouched by calibration.
    clip = repeat_as_clip(image, m.config.video.frames)
    video_before = m.embed_video(clip)
    m.image_bn.reset()
    assert torch.equal(m.embed_image(image)["va"], plain["va"])
    assert torch.equal(m.embed_video(clip)["va"], video_before["va"])


def moving_clips(n: int, size: int, frames: int, seed: int) -> torch.Tensor:
    """Pictures sliding sideways, a different speed each: `[n, frames, size, size, 3]`."""
    still = pictures(n, size, seed)
    speeds = torch.randint(1, 4, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.stack(
        [
            torch.stack([torch.roll(still[i], int(speeds[i]) * t, dims=1) for t in range(frames)])
            for i in range(n)
        ]
    )


def test_calibration_on_clips_brings_stills_to_their_moving_clips() -> None:
    """Given clips, the target is the clip the still was taken from, as it moves: on
    held-out clips each middle frame's nearest video is more often its own afterwards."""
    m = tiny_with_bn_statistics()
    cfg = m.config
    held_out = moving_clips(32, cfg.video.crop_size, cfg.video.frames, seed=77)
    stills = held_out[:, cfg.video.frames // 2]

    def found() -> float:
        img, vid = m.embed_image(stills)["va"], m.embed_video(held_out)["va"]
        return float(((img @ vid.T).argmax(1) == torch.arange(len(img))).float().mean())

    def nce() -> float:
        img, vid = m.embed_image(stills)["va"], m.embed_video(held_out)["va"]
        return float(F.cross_entropy(img @ vid.T / 0.07, torch.arange(len(img))))

    before, loss_before = found(), nce()
    report = calibrate_image_bn(
        m,
        moving_clips(80, cfg.video.crop_size, cfg.video.frames, seed=3),
        steps=30,
        batch_size=32,
        progress=False,
    )
    assert report.applied and report.target == "clip"
    assert report.loss_after < report.loss_before
    assert nce() < loss_before
    assert found() >= before


def test_calibration_leaves_training_state_and_weights_alone() -> None:
    m = tiny_with_bn_statistics()
    m.train()
    weights = {k: v.clone() for k, v in m.state_dict().items() if "image_bn" not in k}
    calibrate_image_bn(
        m, pictures(10, m.config.video.crop_size, seed=5), steps=2, batch_size=5, progress=False
    )
    assert m.training
    assert all(p.requires_grad for p in m.video_backbone.parameters())
    after = m.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in weights.items())


def test_moment_matching_fixes_the_scale_of_a_short_s3d_clip() -> None:
    """S3D-G on 4-frame clips: the video net uses only centre taps deep down while the
    deflated net sums all taps, so deflated activations blow up; moment matching brings
    the BN outputs back to the video's statistics."""
    cfg = load_config("s3d").replace(
        video={"frames": 4, "crop_size": 16, "s3d_width_multiplier": 0.25}
    )
    torch.manual_seed(0)
    m = build_model(cfg)
    m.train()
    with torch.no_grad():
        for s in range(3):
            m(repeat_as_clip(pictures(8, 16, 20 + s), 4), torch.zeros(8, cfg.audio_samples))
    m.eval()
    images = pictures(16, 16, seed=6)
    with torch.no_grad():
        target = m.video_backbone(repeat_as_clip(images, 4))
        plain = deflated_features(m.video_backbone, images)
        matched = deflated_features(
            m.video_backbone, images, moment_matched_bn(m, images, frames=4)
        )
    plain_gap = float((plain - target).abs().mean())
    matched_gap = float((matched - target).abs().mean())
    assert matched_gap < plain_gap / 10
