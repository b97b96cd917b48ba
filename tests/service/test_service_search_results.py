"""The search answer is written by hand for speed (searcher.results_json, Answer,
schemas.item_payload); its shape is the schema's (SearchResults, SearchResult, Item).
A field added to one and not the other fails here."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from service.schemas import Item, SearchResult, SearchResults, item_payload
from service.searcher import Answer, results_json
from service.storage import ItemRow


def row(seq: int, kind: str, **fields: Any) -> ItemRow:
    values: dict[str, Any] = {
        "seq": seq, "id": f"id-{seq}", "kind": kind, "status": "ready",
        "content_hash": None if kind == "text" else f"h{seq}",
        "media_type": None if kind == "text" else "video/mp4", "size_bytes": None,
        "duration_s": None, "width": None, "height": None, "modalities": [kind],
        "transcript": None, "transcript_source": None, "text": None, "metadata": {},
        "error": None, "created_at": "2026-12-06T00:00:00Z",
    }  # fmt: skip
    values.update(fields)
    return ItemRow(**values)


ROWS = [
    row(1, "video", modalities=["video", "audio"], duration_s=3.0, width=160, height=120,
        transcript="a red ball", transcript_source="asr", metadata={"n": 1, "tag": "x"}),
    row(2, "text", text="a red ball bounces", metadata={"flag": True}),
    row(3, "image", media_type="image/png", width=128, height=96),
    row(4, "audio", status="failed", error="no audio could be decoded"),
]  # fmt: skip


def item_json(r: ItemRow) -> str:
    """As the searcher caches it (Searcher._item_json)."""
    return json.dumps(item_payload(r), ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.kind)
def test_an_items_json_has_exactly_the_items_schema_fields(r: ItemRow) -> None:
    payload = item_payload(r)
    assert set(payload) == set(Item.model_fields)
    assert Item.model_validate(payload).model_dump(mode="json") == payload


@pytest.mark.parametrize("hits", [ROWS, []], ids=["results", "none"])
def test_the_results_body_is_the_search_results_schema(hits: list[ItemRow]) -> None:
    answer = Answer([(item_json(r), 0.9 - 0.1 * r.seq) for r in hits], "vat", "v1")
    body = results_json(answer, time.perf_counter())
    validated = SearchResults.model_validate_json(body)
    raw = json.loads(body)
    assert set(raw) == set(SearchResults.model_fields)
    for result in raw["results"]:
        assert set(result) == set(SearchResult.model_fields)
        assert set(result["item"]) == set(Item.model_fields)
    assert validated.model_dump(mode="json") == raw
    assert [r["item"]["id"] for r in raw["results"]] == [r.id for r in hits]
    assert (raw["space"], raw["model_version"]) == ("vat", "v1") and raw["took_ms"] >= 0


def test_results_with_moments_are_the_search_results_schema() -> None:
    from service.searcher import _moment_json
    from service.storage import SegmentRow

    best = SegmentRow(7, 1, 30.0, 40.0, "a drum rolls")
    more = [(0.5, SegmentRow(9, 1, 50.0, 60.0, None)), (0.4, SegmentRow(8, 1, 40.0, 50.0, "é"))]
    answer = Answer(
        [(item_json(ROWS[0]), 0.9, _moment_json(best, more)), (item_json(ROWS[1]), 0.8)],
        "vat",
        "v1",
    )
    raw = json.loads(results_json(answer, time.perf_counter()))
    validated = SearchResults.model_validate(raw)
    assert validated.model_dump(mode="json") == raw
    first, second = raw["results"]
    assert first["segment"] == {"start_s": 30.0, "end_s": 40.0}
    assert first["segment_text"] == "a drum rolls"
    assert [(m["start_s"], m["score"], m["segment_text"]) for m in first["more_segments"]] == [
        (50.0, 0.5, None), (40.0, 0.4, "é")
    ]  # fmt: skip
    assert second["segment"] is None and second["more_segments"] == []
    assert second["segment_text"] is None
