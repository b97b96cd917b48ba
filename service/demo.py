"""The demo corpus: on a first start with an empty data directory and MMV_DEMO_CLIPS > 0,
generate that many narrated clips (plus sounds and stills) and index them, with a
progress bar, before the server starts answering.

The corpus goes to DATA_DIR/cache/demo-corpus. Clips come with their WebVTT
transcripts (no speech recognition needed); sounds without narration skip ASR. If a
start is interrupted half-way, the next start finds the corpus, indexes what is
missing (identical bytes are recognised) and only then marks the demo as done.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from service.errors import ServiceError
from service.ingest import Ingestor
from service.settings import Settings
from service.storage import Storage
from service.uploads import ReceivedUpload

log = logging.getLogger("service.demo")

DONE_KEY = "demo_corpus_done"
FOLDER = "demo-corpus"


def copy_to_upload(source: Path, tmp_dir: Path) -> ReceivedUpload:
    """A local file as if it were uploaded (under its own name): a hashed copy in
    DATA_DIR/tmp."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix="local-", dir=tmp_dir)
    size = 0
    with source.open("rb") as src, open(fd, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
            size += len(block)
    return ReceivedUpload(
        path=Path(tmp), size=size, sha256=digest.hexdigest(), filename=source.name
    )


async def ingest_local_file(
    ingestor: Ingestor,
    source: Path,
    transcript: str | None,
    metadata: dict[str, Any],
    asr: bool = True,
) -> None:
    upload = await asyncio.to_thread(copy_to_upload, source, ingestor.settings.tmp_dir)
    try:
        await ingestor.ingest_upload(upload, transcript, metadata, True, asr=asr)
    finally:
        upload.discard()


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "demo",
        "demo_kind": row["kind"],
        "description": row.get("description") or "",
        "split": row.get("split") or "",
    }


async def ensure_demo_corpus(settings: Settings, storage: Storage, ingestor: Ingestor) -> None:
    n = settings.demo_clips
    if n <= 0 or not ingestor.model.loaded:
        return
    if storage.state.get(DONE_KEY):
        return
    folder = settings.cache_dir / FOLDER
    if not (folder / "manifest.jsonl").is_file():
        if storage.items.count() > 0:
            return  # the user's own data: never mix a demo into it
        from model.corpus import make_corpus

        print(f"Generating a demo corpus of {n} narrated clips in {folder} ...", flush=True)
        staging = settings.cache_dir / f".{FOLDER}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        await asyncio.to_thread(
            make_corpus, staging, n, settings.demo_seed, workers=settings.workers, progress=True
        )
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)

    from model.corpus import read_manifest

    rows = read_manifest(folder)
    limit = asyncio.Semaphore(max(1, settings.workers))
    failures: list[str] = []
    bar = tqdm(total=len(rows), unit="item", desc="indexing the demo corpus")

    async def one(row: dict[str, Any]) -> None:
        async with limit:
            transcript = None
            if row.get("transcript"):
                transcript = (folder / row["transcript"]).read_text(encoding="utf-8")
            try:
                await ingest_local_file(
                    ingestor,
                    folder / row["path"],
                    transcript,
                    _metadata(row),
                    asr=bool(row.get("narration")),
                )
            except ServiceError as exc:
                failures.append(f"{row['path']}: {exc.message}")
            bar.update()

    try:
        await asyncio.gather(*(one(r) for r in rows))
    finally:
        bar.close()
    if failures:
        log.warning("%d demo items could not be indexed: %s", len(failures), failures[:3])
    storage.state.set(DONE_KEY, "1")
    log.info("demo corpus indexed: %d items", len(rows) - len(failures))
