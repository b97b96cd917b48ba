"""Searches that wait in the batcher while the service switches to a model of another
shape.

A query is resolved against the model serving when it arrives (its space, and for a
vector query its length) and answered by the model serving when its batch runs. A switch
in between to a model with other spaces or sizes made the batch fail as a whole (a
KeyError for the text's old space, a FAISS assertion for a vector of the old length):
every query in it, good ones included, got a 500.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from model.checkpoint import save
from model.config import load_config
from model.factory import build_model
from service.errors import ServiceError
from service.prometheus import Metrics
from service.runtime import Runtime
from service.searcher import Answer
from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, now_rfc3339

REPO = Path(__file__).resolve().parents[2]
TEXT = "a teal crescent"


def _save_tiny(directory: Path, space: str, va_dim: int, vat_dim: int) -> None:
    cfg = load_config("tiny")
    cfg = replace(cfg, heads=replace(cfg.heads, space=space, va_dim=va_dim, vat_dim=vat_dim))
    save(build_model(cfg), directory)


@pytest.mark.parametrize(
    ("space", "va_dim", "vat_dim"),
    [("disjoint", 256, 128), ("fac", 384, 192)],
    ids=["other-spaces", "other-sizes"],
)
def test_queries_waiting_across_a_switch_are_answered_by_the_new_model_or_refused_alone(
    tmp_path: Path, space: str, va_dim: int, vat_dim: int
) -> None:
    settings = Settings(data_dir=tmp_path / "data", asr=False, workers=1)
    runtime = Runtime(settings, Metrics())
    try:
        (settings.models_dir / "v1").symlink_to(REPO / "models" / "default")
        _save_tiny(settings.models_dir / "v2", space, va_dim, vat_dim)
        for version in ("v1", "v2"):
            runtime.storage.models.add(
                ModelRow(version, now_rfc3339(), {}, {}, None, version == "v1")
            )
        runtime.load_model_and_indexes()
        embedder = runtime.model.embedder
        assert embedder is not None and embedder.version == "v1"
        by_space = embedder.embed_texts([TEXT])
        item = runtime.storage.items.create(
            NewItem(kind="text", modalities=["text"], text=TEXT, status="ready"),
            "v1", [Embedding(s, "text", vectors[0]) for s, vectors in by_space.items()],
        )  # fmt: skip

        # Resolved while v1 serves, as the requests were when they arrived.
        searcher = runtime.searcher
        by_text = searcher.text_query(TEXT, "text", 5, None)
        by_vector = searcher.vector_query(by_space["vat"][0], "vat", "text", 5, None)
        by_item = searcher.item_query(item.id, "text", 5, None)
        to_audio = searcher.text_query(TEXT, "audio", 5, None)  # no such pair in disjoint
        assert by_text.space == by_vector.space == to_audio.space == "vat"

        runtime.storage.models.request_switch("v2")
        runtime.switch.check()
        assert runtime.switch.wait(120)
        assert runtime.model.embedder is not None
        assert runtime.model.embedder.version == "v2"

        answers = searcher.run_batch([by_text, by_vector, by_item, to_audio])
        new_space = "vt" if space == "disjoint" else "vat"
        for answer in (answers[0], answers[2]):  # the new model can answer these
            assert isinstance(answer, Answer), answer
            assert answer.model_version == "v2" and answer.space == new_space
        # A vector of v1's space cannot be searched with v2: refused, as it would have
        # been had it arrived a moment later, and the batch's other queries answered.
        refused = answers[1]
        assert isinstance(refused, ServiceError) and refused.status in (400, 422), refused
        assert "v2" in refused.message, refused.message
        if space == "disjoint":  # text meets no sound there: refused alone too
            assert isinstance(answers[3], ServiceError) and answers[3].status == 422, answers[3]
        else:
            assert isinstance(answers[3], Answer), answers[3]
    finally:
        runtime.media_pool.shutdown()
        runtime.storage.close()
