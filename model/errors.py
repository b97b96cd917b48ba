"""The model package's error base: every typed error raised by `model/` subclasses it
(tests/model/test_errors.py), except `FFmpegMissing`, a set-up problem, not bad input."""

from __future__ import annotations


class ModelError(Exception):
    """Base of the errors `model/` raises on purpose (bad checkpoint, bad input, bad file)."""


class ModelInputError(ModelError, ValueError):
    """A tensor handed to the model has the wrong shape, type or values."""
