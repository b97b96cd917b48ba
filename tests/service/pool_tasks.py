"""Tasks for media pool tests, importable by the pool's spawned children."""

from __future__ import annotations

import os
import time
from pathlib import Path


def dies(delay_s: float) -> None:
    """As a decoder crashing on a file: the process ends at once, no exception."""
    time.sleep(delay_s)
    os._exit(1)


def marks_then_answers(marker: str, value: int, delay_s: float) -> int:
    """As answers(), once it has written `marker`: the caller knows which child runs it."""
    Path(marker).write_text(str(os.getpid()))
    return answers(value, delay_s)


def answers(value: int, delay_s: float) -> int:
    time.sleep(delay_s)
    return value


def embeds_unless_bomb(job: object) -> object:
    """As media_worker.embed_stored: one vector per item; a file whose path says "bomb"
    kills the process, as a decoder crash or the kernel's OOM killer does."""
    import numpy as np

    from service.media_worker import ReembedResult
    from service.storage import Embedding

    items = job.items  # type: ignore[attr-defined]
    if any("bomb" in item.path for item in items):
        os._exit(1)
    vector = np.ones(4, np.float32)
    return ReembedResult({i.seq: [Embedding("va", "video", vector)] for i in items}, {}, 0)


def segments_unless_bomb(job: object) -> object:
    """As media_worker.embed_stored for the segment backfill: a vector for each of the
    items' segments; a file whose path says "bomb" kills the process."""
    import numpy as np

    from service.media_worker import ReembedResult
    from service.storage import Embedding

    items = job.items  # type: ignore[attr-defined]
    if any("bomb" in item.path for item in items) and not os.environ.get("BOMB_DEFUSED"):
        os._exit(1)
    vector = np.full(4, 0.5, np.float32)
    segments = {seq: [Embedding("va", "audio", vector)] for i in items for seq, _, _ in i.segments}
    return ReembedResult({}, {}, 0, segments)
