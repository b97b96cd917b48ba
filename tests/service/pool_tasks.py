"""Tasks for media pool tests, importable by the pool's spawned children."""

from __future__ import annotations

import os
import time


def dies(delay_s: float) -> None:
    """As a decoder crashing on a file: the process ends at once, no exception."""
    time.sleep(delay_s)
    os._exit(1)


def answers(value: int, delay_s: float) -> int:
    time.sleep(delay_s)
    return value
