"""One way from a media file to its embedding: decode once, embed windows, average."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import small_config, warm_batch_norm

import model.embedding as embedding_module
import model.media.windows as windows_module
from model import MMV, Tokenizer, build_model
from model.embedding import embed_media, embed_windows, freeze_for_inference, is_frozen
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


@pytest.mark.parametrize("space", ["fac", "shared", "disjoint"])
def test_frozen_towers_give_what_the_model_gives(tokenizer: Tokenizer, space: str) -> None:
    """The service's workers embed through traced, frozen towers: the same vectors as
    the model's own methods, for any number of windows and owners."""
    torch.manual_seed(0)
    cfg = small_config(space)
    model = build_model(cfg, tokenizer)
    warm_batch_norm(model, cfg)
    eager = copy.deepcopy(model)
    freeze_for_inference(model)
    assert is_frozen(model) and not is_frozen(eager)
    assert sorted(embedding_module._frozen[model]) == ["audio", "video"]  # none fell back
    rng = np.random.default_rng(0)
    v = cfg.video
    video = rng.integers(0, 256, (37, v.frames, v.crop_size, v.crop_size, 3), dtype=np.uint8)
    audio = (rng.random((37, cfg.audio_samples), dtype=np.float32) * 2 - 1).astype(np.float32)
    owner = np.sort(rng.integers(0, 9, 37))
    owner[:9] = np.arange(9)
    for modality, x in (("video", video), ("audio", audio)):
        for n in (1, 5, 37):  # a batch of one, a partial batch, batches and a remainder
            got = embed_windows(model, modality, x[:n], owner[:n])
            want = embed_windows(eager, modality, x[:n], owner[:n])
            assert got.keys() == want.keys()
            for space_name in want:
                np.testing.assert_allclose(got[space_name], want[space_name], atol=1e-5)
    # Inputs the towers were not traced for go to the model itself: float video, images.
    floats = video[:3].astype(np.float32) / 255
    for space_name, z in embed_windows(model, "video", floats).items():
        np.testing.assert_allclose(z, embed_windows(eager, "video", floats)[space_name], atol=1e-5)
    images = video[:3, 0]
    for space_name, z in embed_windows(model, "image", images).items():
        np.testing.assert_allclose(z, embed_windows(eager, "image", images)[space_name], atol=1e-6)


def test_a_tower_that_does_not_match_the_model_is_not_used(
    fac_model: MMV, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding_module, "FROZEN_TOLERANCE", -1.0)  # nothing passes
    freeze_for_inference(fac_model)
    assert embedding_module._embed_fn(fac_model, "video") == fac_model.embed_video


def test_every_model_a_process_loads_is_frozen(fac_model: MMV) -> None:
    """A worker loads one model per version: tracing the same classes again works."""
    copies = [copy.deepcopy(fac_model) for _ in range(3)]
    for model in copies:
        freeze_for_inference(model)
        assert sorted(embedding_module._frozen[model]) == ["audio", "video"]
