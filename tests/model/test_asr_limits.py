"""Speech recognition under its limits (ASRLimits): a CPU-time budget proportional to
the sound and a cap on the transcript, on real espeak-ng speech decoded by pocketsphinx."""

from __future__ import annotations

import numpy as np
import pytest
from test_asr import RATE, SENTENCES, small_lm, speak  # noqa: F401  (small_lm: a fixture)

from model.asr import (
    ASRError,
    ASRLimits,
    ASRTimeout,
    LanguageModel,
    SpeechRecognizer,
    TranscriptTooLong,
)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two sentences with a second of silence between them: two utterances."""
    gap = np.zeros(RATE, np.float32)
    return np.concatenate([gap, speak(SENTENCES[0]), gap, speak(SENTENCES[1]), gap])


def test_the_budget_grows_with_the_sound_above_a_floor() -> None:
    limits = ASRLimits(min_cpu_s=60.0, cpu_per_audio_s=0.5)
    assert limits.budget_s(10.0) == 60.0
    assert limits.budget_s(600.0) == 300.0


def test_recognition_past_its_cpu_budget_stops_with_a_typed_error(
    small_lm: LanguageModel,  # noqa: F811
    speech: np.ndarray,
) -> None:
    recognizer = SpeechRecognizer(small_lm)
    full = recognizer.transcribe(speech, RATE, ASRLimits())
    assert len(full.segments) >= 2 and "ball" in full.text  # both utterances are heard
    with pytest.raises(ASRTimeout) as caught:
        recognizer.transcribe(speech, RATE, ASRLimits(min_cpu_s=0.0, cpu_per_audio_s=0.0))
    assert isinstance(caught.value, ASRError)  # what the service catches: no transcript
    assert "CPU time" in str(caught.value)
    # Stopped between utterances, the decoder is clean and serves the next call.
    assert recognizer.transcribe(speech, RATE).text == full.text


def test_recognition_past_its_transcript_cap_stops_with_a_typed_error(
    small_lm: LanguageModel,  # noqa: F811
    speech: np.ndarray,
) -> None:
    recognizer = SpeechRecognizer(small_lm)
    with pytest.raises(TranscriptTooLong) as caught:
        recognizer.transcribe(speech, RATE, ASRLimits(max_text_bytes=8))
    assert "more than 8 bytes" in str(caught.value)
