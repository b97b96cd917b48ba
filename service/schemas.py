"""Pydantic schemas at the API boundary (docs/api.md); storage rows live in storage/rows.py."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    model_validator,
)

from service.storage import MAX_METADATA_ENTRY_BYTES, ItemRow, metadata_entry_bytes

Kind = Literal["video", "audio", "image", "text"]
Modality = Literal["video", "audio", "image", "text"]
MODALITY_NAMES: tuple[str, ...] = ("video", "audio", "image", "text")
Status = Literal["ready", "processing", "failed"]
SpaceName = Literal["va", "vat", "vt"]

# Numbers in request bodies are JSON numbers, never coerced: `true` is no 1 and "5" no 5
# (what the schema says; lax parsing took {"steps": true} as one step).


def _json_integer(value: Any) -> Any:
    """JSON has one number type: 2.0 is the integer 2, as JSON Schema's "integer" says
    (schemathesis sent {"steps": 4559.0}, valid by the schema) and as metadata filters
    take numbers. `true` and "2" stay refused, by the strict check after this."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


RequestInt = Annotated[int, Field(strict=True), BeforeValidator(_json_integer)]
# A training job's steps. The paper's longest runs are 500,000 steps: beyond this bound a
# number is a typo, and one past 2^63 failed the job in the database (its progress keeps
# its steps). The bounds sit inside the integer: written on the field of an optional
# with a validator they came out as "ge"/"le" in the schema, which no reader knows.
MAX_JOB_STEPS = 10_000_000
JobSteps = Annotated[
    int, Field(strict=True, ge=1, le=MAX_JOB_STEPS), BeforeValidator(_json_integer)
]
RequestFloat = Annotated[float, Field(strict=True), AllowInfNan(False)]

# Ids the server hands out (items, jobs, model versions) are printable: a control
# character, NUL above all (PostgreSQL's text cannot hold one), names nothing stored.
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored and given back as it came, or None. NUL: PostgreSQL's
    text cannot hold it (the same input would fail on one engine only). A lone surrogate
    (a JSON escape such as \\ud800, half of a character): no answer showing it could be
    written as UTF-8, so every later listing of the item would fail."""
    if "\x00" in text:
        return "it contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "it is not valid Unicode (it holds half of a surrogate pair)"
    return None


def _storable(text: str) -> str:
    problem = unstorable(text)
    if problem:
        raise ValueError(f"text that cannot be stored: {problem}")
    return text


StoredText = Annotated[str, AfterValidator(_storable)]


# A metadata value: flat JSON only (no nested objects or lists), so filters match exactly;
# numbers finite, since JSON has no NaN or Infinity to answer with.
def _flat_value(value: Any) -> Any:
    """A nested value or a number JSON cannot hold, said in one sentence before the
    union below tries each type (which reported "a.bool: Input should be a valid boolean
    (and 3 more problems)")."""
    if isinstance(value, dict | list):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise ValueError(
            f"must be a string, a number, true, false or null, not {kind}: metadata is flat"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value} (JSON has no NaN or Infinity)")
    if isinstance(value, str):
        return _storable(value)
    return value


MetaValue = Annotated[
    StrictBool | StrictInt | RequestFloat | StoredText | None, BeforeValidator(_flat_value)
]
Metadata = dict[StoredText, MetaValue]


def metadata_too_long(metadata: dict[str, Any]) -> str | None:
    """Why an item's metadata cannot be stored, one entry too long to index; or None."""
    for key, value in metadata.items():
        size = metadata_entry_bytes(key, value)
        if size > MAX_METADATA_ENTRY_BYTES:
            return (
                f"metadata {ascii(key)[:80]} is too long to store: its key and value take "
                f"{size:,} bytes, at most {MAX_METADATA_ENTRY_BYTES:,} (a character outside "
                "ASCII counts 6 or 12); a long text belongs in a transcript or a text item"
            )
    return None


def _fits(metadata: dict[str, Any]) -> dict[str, Any]:
    if problem := metadata_too_long(metadata):
        raise ValueError(problem)
    return metadata


# An item's metadata (a filter is a Metadata: a long value in it merely matches nothing).
ItemMetadata = Annotated[Metadata, AfterValidator(_fits)]


class Item(BaseModel):
    id: str
    kind: Kind
    modalities: list[Modality]
    status: Status
    duration_s: float | None = None
    transcript: str | None = None
    transcript_source: Literal["upload", "asr"] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    media_url: str | None = None
    created_at: str
    error: str | None = None
    # Additions to the contract's fields:
    text: str | None = Field(None, description="the text of a text item; null otherwise")
    media_type: str | None = Field(None, description="content type of the stored media")
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    filename: str | None = Field(
        None,
        description="the name the file was uploaded under (its last path component); null "
        "for text items and where none was sent. The same bytes uploaded again under "
        "another name are the same item, with its first name",
    )


class ItemList(BaseModel):
    items: list[Item]
    next_cursor: str | None


class MediaLink(BaseModel):
    url: str = Field(
        description="the item's media, openable without an Authorization header until "
        "expires_at (a media element's src); the plain media_url where the server has no keys"
    )
    expires_at: str


class TextItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StoredText = Field(min_length=1)
    metadata: ItemMetadata = Field(default_factory=dict)


class TextQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)


class ItemQuery(BaseModel):
    """A stored item, or (start_s and end_s) a stretch of it: a moment."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, pattern=ID_PATTERN)
    start_s: RequestFloat | None = Field(None, ge=0)
    end_s: RequestFloat | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _whole_or_a_stretch(self) -> ItemQuery:
        if (self.start_s is None) != (self.end_s is None):
            raise ValueError("a moment needs both start_s and end_s (or neither: the whole item)")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        return self


class VectorQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vector: list[RequestFloat] = Field(min_length=1, max_length=65536)
    space: SpaceName


def _query_kind(value: Any) -> str | None:
    """Which query a body means, by the key it names: its mistakes are then reported
    against that query alone ("end_s must be after start_s"), not as the first of every
    kind's ("query.TextQuery.text: Field required (and 9 more problems)")."""
    if isinstance(value, dict):
        return next((key for key in ("text", "item_id", "vector") if key in value), None)
    for model, key in ((TextQuery, "text"), (ItemQuery, "item_id"), (VectorQuery, "vector")):
        if isinstance(value, model):
            return key
    return None


SearchQuery = Annotated[
    Annotated[TextQuery, Tag("text")]
    | Annotated[ItemQuery, Tag("item_id")]
    | Annotated[VectorQuery, Tag("vector")],
    Discriminator(
        _query_kind,
        custom_error_type="invalid_query",
        custom_error_message="the query needs one of text, item_id or vector",
    ),
]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: SearchQuery
    target: Modality
    k: RequestInt = Field(10, ge=1, le=1000)
    filter: Metadata | None = None
    # True: each item once, at its best match (a long item's best segment, its next best
    # under it); False: every matching segment is a result of its own.
    group: StrictBool = True


class Span(BaseModel):
    """A stretch of a long item, in seconds from its start."""

    start_s: float
    end_s: float


class MoreSegment(Span):
    score: float
    segment_text: str | None = None  # what the transcript says in it


class SearchResult(BaseModel):
    item: Item
    score: float
    # When the match is a segment of a long item: which stretch, and what its transcript
    # says there (null otherwise).
    segment: Span | None = None
    segment_text: str | None = None
    # Grouped results: the item's further matching segments, best first.
    more_segments: list[MoreSegment] = Field(default_factory=list)


class SearchResults(BaseModel):
    """The search routes write this by hand, for speed (searcher.results_json);
    tests/service/test_service_search_results.py holds the two to the same fields."""

    results: list[SearchResult]
    space: str
    model_version: str
    took_ms: float


class TrainingJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init: Literal["active", "scratch"] = "active"
    steps: JobSteps | None = None
    activate: Literal["auto", "manual"] = "auto"


class JobProgress(BaseModel):
    step: int = 0
    steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    clips_per_s: float | None = None
    stage: str | None = Field(
        None,
        description="while it runs: preparing | training | finishing (calibrating, saving "
        "the run) | evaluating | saving | activating; null once it has ended",
    )
    history: list[list[float]] = Field(
        default_factory=list, description="the loss curve so far: [step, loss] pairs"
    )


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Job(BaseModel):
    id: str
    status: JobStatus
    created_at: str
    progress: JobProgress
    metrics: dict[str, Any]
    model_version: str | None
    activated: bool
    error: str | None
    request: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    data: dict[str, Any] = Field(
        default_factory=dict, description="the clips it trains on, its held-out slice, recipe"
    )


class JobList(BaseModel):
    jobs: list[Job]
    workers: list[str] = Field(
        default_factory=list,
        description="training workers seen in the last 30 s; none: queued jobs wait for one",
    )


class Reindex(BaseModel):
    to_version: str
    done: int
    total: int
    stage: str | None = Field(
        None,
        description="loading | waiting | embedding | indexing | catching_up | swapping; "
        "failed: the last try failed (`error` says why) and it is tried again",
    )
    error: str | None = Field(None, description="why the last try failed (stage `failed`)")


class ModelInfo(BaseModel):
    version: str
    active: bool
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    parent: str | None
    state: Literal["active", "activating", "inactive"] = "inactive"
    job_id: str | None = Field(None, description="the training job that made it")
    reindex: Reindex | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    model_version: str | None
    device: Literal["cpu", "cuda"]
    indexes: dict[str, int]
    reindex: Reindex | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorInfo


def item_payload(row: ItemRow) -> dict[str, Any]:
    """The API's Item for a storage row, as plain JSON data (hot path: no validation;
    tests check its keys are Item's fields)."""
    has_media = row.kind != "text"
    return {
        "id": row.id,
        "kind": row.kind,
        "modalities": row.modalities,
        "status": row.status,
        "duration_s": row.duration_s,
        "transcript": row.transcript,
        "transcript_source": row.transcript_source,
        "metadata": row.metadata,
        "media_url": f"/v1/items/{row.id}/media" if has_media else None,
        "created_at": row.created_at,
        "error": row.error,
        "text": row.text,
        "media_type": row.media_type,
        "size_bytes": row.size_bytes,
        "width": row.width,
        "height": row.height,
        "filename": row.filename,
    }
