"""The errors the corpus generator raises: one base class, each with a message a user acts on."""

from __future__ import annotations

from model.errors import ModelError


class CorpusError(ModelError):
    """The corpus cannot be generated or read; the message says why and what to do."""


class ToolError(CorpusError):
    """An external program the generator runs (ffmpeg, espeak-ng) is missing or failed."""


class ManifestError(CorpusError):
    """A manifest or corpus.json that is missing or cannot be parsed."""
