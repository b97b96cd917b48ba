"""Backbones: shapes, the temporal shift, deflation identities, the log-mel front end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.audio_features import LogMelSpectrogram, hz_to_mel, mel_filter_bank
from model.backbones import S3DG, AudioResNet, TextEncoder, TSMResNet
from model.backbones.resnet_v2 import max_pool_3x3_stride2, temporal_shift
from model.backbones.s3d import ConvBNReLU3d
from model.config import AudioConfig, TextConfig, VideoConfig, load_config
from model.tokenizer import UNK_ID


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_temporal_shift_moves_an_eighth_each_way(layout: torch.memory_format) -> None:
    t, c = 4, 16
    # value = frame index + 1 everywhere, so a moved channel shows its source frame
    x = (torch.arange(t, dtype=torch.float32) + 1).view(t, 1, 1, 1).expand(t, c, 2, 2)
    y = temporal_shift(x.contiguous(memory_format=layout), num_frames=t, fraction=0.125)
    assert y.is_contiguous(memory_format=layout)  # the next conv needs no reorder
    n = 2  # int(16 * 0.125)
    for f in range(t):
        assert torch.all(y[f, :n] == (f + 2 if f + 1 < t else 0))  # from the next frame
        assert torch.all(y[f, n : 2 * n] == (f if f > 0 else 0))  # from the previous frame
        assert torch.all(y[f, 2 * n :] == f + 1)  # unshifted
    assert torch.equal(temporal_shift(x.contiguous(), t, 0.0), x)


def test_tsm_shapes_and_deflation_without_shift_is_exact() -> None:
    torch.manual_seed(0)
    net = TSMResNet(VideoConfig(depth=18, width=8, shift_fraction=0.0)).eval()
    image = torch.rand(2, 32, 32, 3)
    clip = image[:, None].expand(-1, 4, -1, -1, -1)
    with torch.no_grad():
        assert net(clip).shape == (2, 64)
        # With no shift the video net on a static clip is the image net exactly.
        assert torch.allclose(net(clip), net(image, deflated=True), atol=1e-5)
    shifted = TSMResNet(VideoConfig(depth=18, width=8)).eval()
    shifted.load_state_dict(net.state_dict())
    with torch.no_grad():  # the shift's zero padding at clip borders makes them differ
        assert not torch.allclose(shifted(clip), shifted(image, deflated=True), atol=1e-4)


def test_channels_last_trunks_compute_what_nchw_ones_do() -> None:
    """The trunks train on NCHW maps (with channels-last the recipe's run learned
    measurably slower: docs/training.md) and frozen inference runs channels-last (faster
    on CPU); the same weights give the same features and gradients either way, shift and
    deflation included (in float32)."""
    torch.manual_seed(0)
    video = TSMResNet(VideoConfig(depth=18, width=8))
    audio = AudioResNet(AudioConfig(depth=18, width=8))
    assert video.trunk.stem.weight.is_contiguous()  # what training uses
    assert audio.trunk.stem.weight.is_contiguous()
    clip, image, wave = torch.rand(2, 4, 32, 32, 3), torch.rand(3, 32, 32, 3), torch.rand(2, 8000)
    runs = []
    for layout in (torch.channels_last, torch.contiguous_format):
        video.trunk.set_memory_format(layout)
        audio.trunk.set_memory_format(layout)
        video.zero_grad()
        features = (video(clip), video(image, deflated=True), audio(wave))
        sum(f.square().sum() for f in features).backward()
        runs.append((features, video.trunk.blocks[0].conv1.weight.grad.clone()))
    (cl, cl_grad), (nchw, nchw_grad) = runs
    for a, b in zip(cl, nchw, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)  # float summation order
    # Max pooling may route a tie (zeros after ReLU) to another element of its window.
    assert float((cl_grad - nchw_grad).norm() / nchw_grad.norm()) < 1e-3


def test_s3d_summed_temporal_kernel_equals_video_conv_inside_a_static_clip() -> None:
    torch.manual_seed(0)
    unit = ConvBNReLU3d(3, 8, (7, 3, 3)).eval()
    image = torch.rand(2, 3, 1, 9, 9)
    clip = image.expand(-1, -1, 15, -1, -1)  # long enough that frame 7 sees no border
    with torch.no_grad():
        video = unit(clip, deflated=False)[:, :, 7:8]
        deflated = unit(image, deflated=True)
    assert torch.allclose(video, deflated, atol=1e-5)


def test_s3d_shapes_any_clip_length() -> None:
    torch.manual_seed(0)
    net = S3DG(VideoConfig(backbone="s3d", s3d_width_multiplier=0.25)).eval()
    with torch.no_grad():
        for frames in (1, 3, 8):
            assert net(torch.rand(2, frames, 32, 32, 3)).shape == (2, net.output_dim)
        assert net(torch.rand(2, 32, 32, 3), deflated=True).shape == (2, net.output_dim)
    assert net.output_dim == 256


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 2, 33, 31), (1, 1, 1, 1), (2, 4, 5, 2)])
def test_fast_max_pool_equals_torch(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    ref = x.detach().clone().requires_grad_(True)
    out, expected = max_pool_3x3_stride2(x), F.max_pool2d(ref, 3, 2, 1)
    assert torch.equal(out, expected)
    assert out.is_contiguous()  # the input's layout: NCHW for the convolutions after it
    last = max_pool_3x3_stride2(x.detach().contiguous(memory_format=torch.channels_last))
    assert torch.equal(last, expected) and last.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert x.grad is not None and ref.grad is not None
    assert torch.equal(x.grad, ref.grad)


def test_mel_filter_bank_shape_and_peaks() -> None:
    bank = mel_filter_bank(513, 64, 16000, 0.0, 8000.0)
    assert bank.shape == (513, 64)
    assert bank.min() >= 0 and bank.max() <= 1.0 + 1e-6
    assert (bank.sum(dim=0) > 0).all()  # no empty filter
    with pytest.raises(ValueError, match="mel range"):
        mel_filter_bank(513, 64, 16000, 0.0, 9000.0)


def test_log_mel_of_a_tone_peaks_at_its_mel_bin() -> None:
    cfg = AudioConfig(sample_rate=16000, n_mels=64)
    front = LogMelSpectrogram(cfg)
    assert (front.win_length, front.hop_length, front.n_fft) == (672, 336, 1024)
    t = torch.arange(16000) / 16000
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * t)
    spec = front(tone[None])
    assert spec.shape == (1, front.num_frames(16000), 64)
    peak = int(spec[0, 10:-10].mean(0).argmax())
    mels = torch.linspace(
        float(hz_to_mel(torch.tensor(0.0))), float(hz_to_mel(torch.tensor(8000.0))), 66
    )
    centre_nearest = int((mels[1:-1] - hz_to_mel(torch.tensor(1000.0))).abs().argmin())
    assert abs(peak - centre_nearest) <= 1
    silence = front(torch.zeros(1, 8000))
    assert torch.isfinite(silence).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert front(tone[None]).dtype == torch.float32


def test_audio_backbone_accepts_any_length() -> None:
    net = AudioResNet(AudioConfig(depth=18, width=8)).eval()
    with torch.no_grad():
        for samples in (100, 16000, 33333):
            assert net(torch.randn(2, samples)).shape == (2, 64)


def test_text_encoder_ignores_padding_and_handles_empty_texts() -> None:
    torch.manual_seed(0)
    enc = TextEncoder(10, TextConfig(embed_dim=8, hidden_dim=16))
    ids = torch.tensor([[3, 4, 0, 0], [3, 4, 7, 9], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    out = enc(ids, mask)
    assert out.shape == (3, 16)
    assert torch.equal(out[0], out[1])  # masked words do not count, whatever their ids
    assert torch.equal(out[2], torch.zeros(16))


def test_text_encoder_leaves_unknown_words_out() -> None:
    """The UNK row of a learned table keeps its random start (no training word maps to
    it): it pulled every query with a word outside the vocabulary towards it."""
    torch.manual_seed(0)
    enc = TextEncoder(10, TextConfig(embed_dim=8, hidden_dim=16, ignore_unknown=True))
    ids = torch.tensor([[3, 4, 0], [3, UNK_ID, 4], [UNK_ID, UNK_ID, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    out = enc(ids, mask)
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[2], torch.zeros(16))
    # A checkpoint saved without the setting keeps UNK, as it was trained and as its
    # stored text vectors were made.
    torch.manual_seed(0)
    before = TextEncoder(10, TextConfig(embed_dim=8, hidden_dim=16))
    old = before(ids, mask)
    assert not torch.equal(old[0], old[1]) and old[2].abs().sum() > 0
    assert all(load_config(name).text.ignore_unknown for name in ("tiny", "s3d", "tsm-r50"))
