"""Word error rate of recognizers on a corpus split, and the corpus language model.

The language model is built from the TRAIN split's transcripts only; WER is
measured on another split (test by default), so nothing is tuned on what is scored.
The reference is each clip's WebVTT transcript: what the narration actually says,
also where the narration describes a neighbouring clip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.asr.errors import ASRError
from model.asr.language_model import LanguageModel, build_language_model
from model.asr.recognizer import SAMPLE_RATE, SpeechRecognizer
from model.asr.wer import WordErrors, word_errors
from model.corpus import iter_manifest
from model.transcripts import read_transcript


@dataclass(frozen=True)
class NarratedClip:
    """A corpus item with sound and a reference transcript."""

    id: str
    media: Path
    transcript: Path

    def reference(self) -> str:
        return read_transcript(self.transcript).text


@dataclass
class WerReport:
    """One recognizer's result over a set of clips."""

    errors: WordErrors
    clips: int
    audio_s: float  # seconds of audio recognised
    decode_s: float  # seconds spent recognising (not decoding media)

    @property
    def wer(self) -> float:
        return self.errors.rate

    @property
    def real_time_factor(self) -> float:
        return self.decode_s / self.audio_s if self.audio_s else 0.0


def narrated_clips(corpus_dir: str | Path, split: str) -> list[NarratedClip]:
    """The split's clips that have a transcript, in manifest order."""
    corpus_dir = Path(corpus_dir)
    return [
        NarratedClip(row["id"], corpus_dir / row["path"], corpus_dir / row["transcript"])
        for row in iter_manifest(corpus_dir, kind="clip", split=split)
        if row["transcript"]
    ]


def corpus_language_model(
    corpus_dir: str | Path,
    split: str = "train",
    vocabulary: Iterable[str] | None = None,
    order: int = 3,
) -> LanguageModel:
    """The language model of a corpus split's transcripts (each clip's whole
    transcript one text: the recognizer hears a clip's sentences as one utterance)."""
    texts = [read_transcript(clip.transcript).text for clip in narrated_clips(corpus_dir, split)]
    if not texts:
        raise ASRError(f"the {split} split of {corpus_dir} has no transcripts to learn from")
    return build_language_model(texts, vocabulary, order)


def load_sound(path: str | Path) -> np.ndarray:
    """A media file's sound track, mono float32 at the recognizer's 16 kHz."""
    from model.media import decode_audio  # media pulls in ffmpeg-python; only here

    return decode_audio(path, sample_rate=SAMPLE_RATE)


def evaluate(
    recognizers: Mapping[str, SpeechRecognizer],
    clips: Iterable[NarratedClip],
    progress: bool = True,
) -> dict[str, WerReport]:
    """Recognise every clip with every recognizer; WER against the clips' transcripts.

    Each clip's sound is decoded once and handed to all recognizers.
    """
    clips = list(clips)
    reports = {name: WerReport(WordErrors(), 0, 0.0, 0.0) for name in recognizers}
    for clip in tqdm(clips, desc="recognising", unit="clip", disable=not progress):
        sound = load_sound(clip.media)
        reference = clip.reference()
        for name, recognizer in recognizers.items():
            started = time.perf_counter()
            hypothesis = recognizer.transcribe(sound, SAMPLE_RATE).text
            report = reports[name]
            report.decode_s += time.perf_counter() - started
            report.errors += word_errors(reference, hypothesis)
            report.clips += 1
            report.audio_s += len(sound) / SAMPLE_RATE
    return reports
