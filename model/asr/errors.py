"""The errors speech recognition raises: one base class the service can catch."""

from __future__ import annotations

from model.errors import ModelError


class ASRError(ModelError):
    """Speech recognition failed; the message says why in user terms."""


class LanguageModelError(ASRError):
    """A language model that cannot be built, saved or loaded."""


class WaveformError(ASRError, ValueError):
    """Audio handed to the recognizer that is not a mono waveform it can use."""


class ASRLimitExceeded(ASRError):
    """Recognition stopped at one of its limits (ASRLimits): the track gets no transcript."""


class ASRTimeout(ASRLimitExceeded):
    """Recognition used up its CPU-time budget."""


class TranscriptTooLong(ASRLimitExceeded):
    """Recognition heard more text than a transcript may hold."""
