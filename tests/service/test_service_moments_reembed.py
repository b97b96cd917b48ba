"""A long upload's segments, as the media worker embeds them at ingestion and as a
switch of model versions embeds them again from the decode cache: the same vectors,
with no second decode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from model.media import read_media_info
from model.media.decode_cache import DecodeCache
from model.media.segments import tiling_window_count
from service.embedder import Embedder, ModelHandle
from service.media_jobs import media_job
from service.media_worker import ReembedJob, StoredItem, embed_stored, process_media
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_segments_embedded_again_from_the_cache_match_ingestion(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x96:rate=8",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "23",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", asr=False)
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "v1").symlink_to(REPO / "models" / "default")
    embedder = Embedder.load(ModelHandle("v1", settings.models_dir / "v1"), "cpu")
    info = read_media_info(path)

    job = media_job(path, info, embedder, settings, segmented=True)
    assert job.segments[0] == (0, 10) and job.segments[-1] == (15, 23.0)
    assert job.n_windows == tiling_window_count(info.duration_s, embedder.config.clip_seconds)
    job.cache_dir, job.content_hash = str(settings.cache_dir), "abc123"
    ingested = process_media(job)
    assert len(ingested.segments) == len(job.segments) == 4
    pairs = {(e.space, e.modality) for e in ingested.embeddings}
    assert pairs == {("va", "video"), ("va", "audio"), ("vat", "video"), ("vat", "audio")}
    assert all({(e.space, e.modality) for e in seg} == pairs for seg in ingested.segments)
    # Example searches are not cut: a long example is one vector.
    assert media_job(path, info, embedder, settings).segments == []

    seqs = [101, 102, 103, 104]
    item = StoredItem(
        seq=1, path=str(path), content_hash="abc123", modalities=("video", "audio"),
        n_windows=job.n_windows,
        segments=[(seq, s, e) for seq, (s, e) in zip(seqs, job.segments, strict=True)],
    )  # fmt: skip
    again = embed_stored(
        ReembedJob([item], str(settings.models_dir / "v1"), "v1", str(settings.cache_dir),
                   job.limits)
    )  # fmt: skip
    assert again.failed == {} and again.decoded == 0  # read from the cache
    for seq, first in zip(seqs, ingested.segments, strict=True):
        want = {(e.space, e.modality): e.vector for e in first}
        got = {(e.space, e.modality): e.vector for e in again.segments[seq]}
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=1e-5)
    whole = {(e.space, e.modality): e.vector for e in again.embeddings[1]}
    for e in ingested.embeddings:
        np.testing.assert_allclose(whole[(e.space, e.modality)], e.vector, atol=1e-5)

    # A cache that cannot be written (a full volume, a file where its folder should be)
    # only costs a decode: the item was failed, and a switch of versions with it.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    uncached = embed_stored(
        ReembedJob([item], str(settings.models_dir / "v1"), "v1", str(blocked), job.limits)
    )
    assert uncached.failed == {} and uncached.decoded == 1
    assert uncached.segments.keys() == again.segments.keys()
    for e in ingested.embeddings:
        got = {(u.space, u.modality): u.vector for u in uncached.embeddings[1]}
        np.testing.assert_allclose(got[(e.space, e.modality)], e.vector, atol=1e-5)

    # A damaged entry is decoded again and replaced, not decoded again every time.
    entry = DecodeCache(settings.cache_dir).windows_entry("abc123", embedder.config, job.n_windows)
    for array in entry.glob("*.npy"):
        array.write_bytes(b"damaged")
    mended = embed_stored(
        ReembedJob([item], str(settings.models_dir / "v1"), "v1", str(settings.cache_dir),
                   job.limits)
    )  # fmt: skip
    assert mended.failed == {} and mended.decoded == 1
    after = embed_stored(
        ReembedJob([item], str(settings.models_dir / "v1"), "v1", str(settings.cache_dir),
                   job.limits)
    )  # fmt: skip
    assert after.failed == {} and after.decoded == 0
