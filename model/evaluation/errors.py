"""The errors of evaluation."""

from __future__ import annotations

from model.errors import ModelError


class EvalError(ModelError):
    """A corpus or checkpoint that cannot be evaluated as asked."""


class MetricsError(ModelError, ValueError):
    """Inputs that a metric cannot be computed from (shapes, empty sets, one class)."""
