"""Tasks for the media pool's memory-limit test, importable by its spawned children."""

from __future__ import annotations

import os
import resource


def address_space_limit() -> tuple[int, int]:
    """(pid, soft RLIMIT_AS) of the worker process that runs this."""
    return os.getpid(), resource.getrlimit(resource.RLIMIT_AS)[0]


def allocate(n_bytes: int) -> int:
    """Touch `n_bytes` of memory (as a decode holding a long file's frames would)."""
    block = bytearray(n_bytes)
    return len(block)
