"""Speech recognition: pocketsphinx with a language model built from what a model knows.

    lm = build_language_model(training_transcripts, vocabulary=tokenizer.words)
    lm.save(checkpoint_dir)                          # asr.lm + asr.dict
    recognizer = SpeechRecognizer(LanguageModel.load(checkpoint_dir))
    transcript = recognizer.transcribe(waveform, sample_rate)   # Transcript(source="asr")

    python -m model.asr wer --corpus DIR [--split test] [--limit N]
    python -m model.asr transcribe FILE [--lm DIR]

See docs/asr.md.
"""

from model.asr.errors import (
    ASRError,
    ASRLimitExceeded,
    ASRTimeout,
    LanguageModelError,
    TranscriptTooLong,
    WaveformError,
)
from model.asr.language_model import LanguageModel, build_language_model
from model.asr.recognizer import ASRLimits, RecognizerSettings, SpeechRecognizer, transcript_for
from model.asr.wer import WordErrors, corpus_word_error_rate, word_error_rate, word_errors

__all__ = [
    "ASRError",
    "ASRLimitExceeded",
    "ASRLimits",
    "ASRTimeout",
    "LanguageModel",
    "LanguageModelError",
    "RecognizerSettings",
    "SpeechRecognizer",
    "TranscriptTooLong",
    "WaveformError",
    "WordErrors",
    "build_language_model",
    "corpus_word_error_rate",
    "transcript_for",
    "word_error_rate",
    "word_errors",
]
