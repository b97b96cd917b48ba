"""Every error `model/` raises on purpose is a ModelError, so a caller (the CLIs, the
service's ingest) can catch the package's failures in one clause and never mistake a
bug for bad input. The one exception is a set-up problem, not a property of the input."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import model
from model.errors import ModelError
from model.media.errors import FFmpegMissing

# A missing ffmpeg is the deployment's fault: the service must answer 500, not blame the file.
NOT_MODEL_ERRORS = {FFmpegMissing}


def _error_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(model.__path__, prefix="model."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.append(obj)
    return found


def test_every_error_the_model_package_defines_is_a_model_error() -> None:
    classes = _error_classes()
    assert len(classes) > 20, "the walk should find the package's many error types"
    stray = [
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if not issubclass(c, ModelError) and c not in NOT_MODEL_ERRORS
    ]
    assert not stray, f"errors outside the ModelError hierarchy: {stray}"
