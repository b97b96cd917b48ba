"""One way from a media file to its embedding: decode once, embed windows, average."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_fixtures import small_config

import model.media.windows as windows_module
from model import MMV
from model.embedding import embed_media, embed_windows
from model.media import decode_audio, load_windows, read_media_info

SPEECH_RATE = 16000


def test_a_file_embeds_as_the_mean_of_its_windows(
    fac_model: MMV, media_files: dict[str, Path]
) -> None:
    cfg = fac_model.config
    windows = load_windows(media_files["mp4"], cfg, n_windows=3)
    assert windows.video is not None and len(windows) == 3
    whole = embed_media(fac_model, windows, "video")
    one_by_one = [embed_windows(fac_model, "video", windows.video[i : i + 1]) for i in range(3)]
    for space, vector in whole.items():
        mean = np.mean([o[space][0] for o in one_by_one], axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)
        assert vector.shape == (fac_model.embedding_dims[space],)
    # Windows of several files in one call give each file what it gets alone.
    audio = embed_windows(fac_model, "audio", np.concatenate([windows.audio, windows.audio[:1]]),
                          np.array([0, 0, 0, 1]), 2)  # fmt: skip
    alone = embed_media(fac_model, windows, "audio")
    for space in alone:
        np.testing.assert_allclose(audio[space][0], alone[space], atol=1e-6)


def test_a_picture_embeds_through_the_image_path(
    fac_model: MMV, media_files: dict[str, Path]
) -> None:
    windows = load_windows(media_files["png"], fac_model.config)
    got = embed_media(fac_model, windows, "image")
    want = fac_model.embed_image(windows.video[:, 0])
    for space, vector in got.items():
        np.testing.assert_allclose(vector, want[space][0].numpy(), atol=1e-5)


@pytest.mark.parametrize("strategy", ["single", "seek"])
def test_speech_track_is_the_whole_sound_at_the_speech_rate(
    media_files: dict[str, Path], strategy: str
) -> None:
    cfg = small_config()
    path = media_files["mp4"]
    windows = load_windows(path, cfg, 2, strategy=strategy, speech_rate=SPEECH_RATE)  # type: ignore[arg-type]
    assert windows.speech is not None and windows.speech.dtype == np.float32
    np.testing.assert_allclose(
        windows.speech, decode_audio(path, sample_rate=SPEECH_RATE), atol=1e-6
    )
    info = read_media_info(path)
    assert len(windows.speech) == pytest.approx(info.duration_s * SPEECH_RATE, rel=0.02)
    assert load_windows(path, cfg, 2, strategy=strategy).speech is None  # only when asked


def test_speech_comes_from_the_same_decode_when_the_rates_agree(
    media_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model hears 16 kHz, as speech recognition does: no second ffmpeg process."""
    extra: list[str] = []
    original = windows_module.decode_audio
    monkeypatch.setattr(
        windows_module,
        "decode_audio",
        lambda path, **kw: extra.append(path) or original(path, **kw),
    )
    cfg = small_config()
    assert cfg.audio.sample_rate == SPEECH_RATE
    windows = load_windows(media_files["mp4"], cfg, speech_rate=SPEECH_RATE)
    assert windows.speech is not None and extra == []
    load_windows(media_files["mp4"], cfg, speech_rate=8000)  # another rate: one more decode
    assert len(extra) == 1
    silent = load_windows(media_files["silent_mp4"], cfg, speech_rate=SPEECH_RATE)
    assert silent.speech is None and len(extra) == 1
