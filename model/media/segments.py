"""Moments of a long file: overlapping segments over its time line, and which of the
file's windows make up each.

A long recording is searched by its stretches, not only as a whole: it is cut into
segments of `segment_s` every `hop_s` (overlapping when hop < segment, so a scene that
straddles one boundary lies whole in the next segment), decoded once as windows that
tile the file, and each segment's embedding is the mean of the windows inside it
(model/embedding.py `embed_segments`). A file no longer than one segment has none: the
whole file is its one moment.

    spans = segment_spans(duration_s, 10.0, 5.0)        # [(0, 10), (5, 15), ...]
    n = tiling_window_count(duration_s, config.clip_seconds)
    members = window_members(windows.starts_s, config.clip_seconds, spans)
"""

from __future__ import annotations

import math

import numpy as np

Span = tuple[float, float]


def segment_spans(duration_s: float | None, segment_s: float, hop_s: float) -> list[Span]:
    """Segments of `segment_s` every `hop_s` covering the file; the last one ends at the
    file's end (and may be shorter). [] when the file is no longer than one segment."""
    if segment_s <= 0 or hop_s <= 0 or hop_s > segment_s:
        raise ValueError(f"need 0 < hop ({hop_s}) <= segment ({segment_s})")
    if not duration_s or duration_s <= segment_s:
        return []
    count = math.ceil((duration_s - segment_s) / hop_s - 1e-9) + 1
    return [
        (round(k * hop_s, 3), round(min(k * hop_s + segment_s, duration_s), 3))
        for k in range(count)
    ]


def tiling_window_count(duration_s: float | None, clip_s: float) -> int:
    """Windows that tile the whole file (uniformly spaced, as `window_starts` places
    them, at most one clip apart): every second of it lies in a window."""
    if not duration_s or duration_s <= clip_s:
        return 1
    return math.ceil(duration_s / clip_s) + 1


def window_members(starts_s: np.ndarray, clip_s: float, spans: list[Span]) -> list[np.ndarray]:
    """For each span, the indices of the windows whose middle lies inside it; a span
    no middle falls in (shorter than the window spacing) takes the nearest window."""
    middles = np.asarray(starts_s, dtype=np.float64) + clip_s / 2
    out = []
    for start, end in spans:
        inside = np.flatnonzero((middles >= start) & (middles < end))
        if inside.size == 0:
            inside = np.array([int(np.argmin(np.abs(middles - (start + end) / 2)))])
        out.append(inside)
    return out


def overlap_weights(spans: list[Span], start_s: float, end_s: float) -> np.ndarray:
    """How much of [start_s, end_s] each span covers, in seconds (0 for none)."""
    if not spans:
        return np.zeros(0)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    return np.clip(np.minimum(ends, end_s) - np.maximum(starts, start_s), 0.0, None)
