"""The errors of training: bad options or resume state, and data that cannot be trained on."""

from __future__ import annotations

from model.errors import ModelError


class TrainError(ModelError):
    """A training run that cannot start or continue (bad options, mismatched resume)."""


class DatasetError(ModelError, ValueError):
    """A corpus or folder that cannot be turned into a dataset."""


class StaleRunState(TrainError):
    """A saved run state that another trainer revision wrote: continuing it would make a
    run half one trainer's, half another's."""
