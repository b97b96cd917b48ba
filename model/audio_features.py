"""Log-mel spectrogram computed in torch from the waveform (torch.stft + our own mel bank).

torchaudio has no CPU build here, and computing the features inside the model means a
checkpoint carries its own audio front end: the only inputs are raw samples at
`cfg.audio.sample_rate`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.config import AudioConfig


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filter_bank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float
) -> Tensor:
    """Triangular filters, `[n_freqs, n_mels]`, equally spaced on the HTK mel scale.

    Each filter rises from its left edge to its centre and falls to its right edge; the
    edges of filter m are the centres of filters m-1 and m+1.
    """
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel range must satisfy 0 <= f_min < f_max <= sample_rate/2, got "
            f"f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}"
        )
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    # Python floats for the ends: works under torch.device("meta") too (no .item()).
    mel_min, mel_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    mel_points = torch.linspace(mel_min, mel_max, n_mels + 2, dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)
    left, centre, right = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    f = freqs[:, None]
    rising = (f - left) / (centre - left)
    falling = (right - f) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


class LogMelSpectrogram(nn.Module):
    """Waveform `[B, S]` in [-1, 1] -> log-mel `[B, frames, n_mels]`.

    Window and hop come from the config in milliseconds (paper: 42 ms / 21 ms); the FFT
    size is the next power of two above the window. Magnitude spectrum (not power), then
    `log(mel + log_offset)`. Always computed in float32, also under bf16 autocast.
    """

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.sample_rate = config.sample_rate
        self.win_length = round(config.win_ms * config.sample_rate / 1000.0)
        self.hop_length = round(config.hop_ms * config.sample_rate / 1000.0)
        self.n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.log_offset = config.log_offset
        f_max = config.f_max if config.f_max is not None else config.sample_rate / 2
        # Derived from the config, so not saved in checkpoints (persistent=False).
        self.register_buffer(
            "window", torch.hann_window(self.win_length, periodic=True), persistent=False
        )
        self.register_buffer(
            "mel_bank",
            mel_filter_bank(
                self.n_fft // 2 + 1, config.n_mels, config.sample_rate, config.f_min, f_max
            ),
            persistent=False,
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of `num_samples` samples (centred STFT)."""
        return num_samples // self.hop_length + 1

    def forward(self, waveform: Tensor) -> Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = waveform.float()
            # Centred frames with zero padding: defined for any length, even shorter
            # than one window (reflect padding is not).
            spec = torch.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            # |z| via real/imag: several times faster than complex abs() on CPU.
            magnitude = (spec.real.square() + spec.imag.square()).sqrt().transpose(1, 2)
            mel = magnitude @ self.mel_bank
            return torch.log(mel + self.log_offset)
