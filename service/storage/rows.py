"""What storage reads and writes: plain rows, separate from the API's schemas
(service/schemas.py turns them into answers)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np


def rfc3339(seconds: float) -> str:
    """A Unix time as the API writes times (UTC, whole seconds)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    """The time stamp every row is created with."""
    return rfc3339(datetime.now(UTC).timestamp())


@dataclass
class ItemRow:
    seq: int  # the id FAISS stores and the key of cursor pagination (never reused)
    id: str  # opaque, for clients
    kind: str
    status: str
    content_hash: str | None
    media_type: str | None
    size_bytes: int | None
    duration_s: float | None
    width: int | None
    height: int | None
    modalities: list[str]
    transcript: str | None
    transcript_source: str | None
    text: str | None
    metadata: dict[str, Any]
    error: str | None
    created_at: str
    filename: str | None = None  # the sender's name for an uploaded file

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ItemRow:
        values = list(row)
        values[10] = json.loads(values[10])
        values[14] = json.loads(values[14])
        return cls(*values)


@dataclass(frozen=True)
class TrainingClip:
    """A stored item the training worker can learn from (pictures and sound)."""

    seq: int
    id: str
    content_hash: str
    duration_s: float | None
    transcript: str | None
    transcript_vtt: str | None  # timed segments: uploaded WebVTT/SRT or speech recognition


@dataclass
class NewItem:
    """What ingestion knows about an item before it is processed."""

    kind: str
    modalities: list[str]
    status: str = "processing"
    content_hash: str | None = None
    media_type: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    transcript: str | None = None
    transcript_source: str | None = None
    transcript_vtt: str | None = None  # timed segments, for training (not in the API)
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    filename: str | None = None  # the sender's name for the file, to show (not a path)
    asr: bool = True  # speech recognition where there is sound and no transcript


@dataclass
class Embedding:
    space: str
    modality: str
    vector: np.ndarray  # float32 [D], L2-normalised


@dataclass(frozen=True)
class SegmentRow:
    """A stretch of a long item, searchable on its own (a moment)."""

    seq: int
    item_seq: int
    start_s: float
    end_s: float
    text: str | None  # what the transcript says in it (None: nothing timed there)


@dataclass
class NewSegment:
    """A segment as ingestion or re-indexing makes it: its span, its transcript text and
    its vectors (space, modality) of one model version."""

    start_s: float
    end_s: float
    embeddings: list[Embedding]
    text: str | None = None


@dataclass
class ModelRow:
    version: str
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    parent: str | None
    active: bool
    job_id: str | None = None  # the training job that made it (None: registered from disk)


JOB_FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class JobRow:
    id: str
    status: str
    created_at: str
    updated_at: str
    request: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    model_version: str | None
    activated: bool
    error: str | None
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    attempts: int = 0  # claims so far (a job whose worker died is claimed again)
    lease_owner: str | None = None  # the worker running it
    data: dict[str, Any] = field(default_factory=dict)  # its training set, described

    @property
    def finished(self) -> bool:
        return self.status in JOB_FINISHED
