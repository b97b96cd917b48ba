"""The decode cache's "windows" entries: exactly load_windows' output, decoded once per
content, and decoded again when an entry is found damaged. ("full" entries, the
training kind, are tested through the datasets in test_datasets.py.)"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.config import load_config
from model.media import Windows, load_windows, read_media_info
from model.media.decode_cache import DecodeCache, DecodeCacheError, cached_windows, content_hash

TINY = load_config("tiny")


def assert_same_windows(got: Windows, want: Windows) -> None:
    for name in ("video", "audio", "starts_s"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert got.info == want.info


@pytest.mark.parametrize("kind", ["mp4", "wav", "png"])
def test_a_windows_entry_is_exactly_what_load_windows_returns(
    media_files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    path = media_files[kind]
    cache = DecodeCache(tmp_path)
    first = cache.cached_windows(path, TINY).load()
    again = cache.cached_windows(path, TINY).load()
    assert cache.decodes == 1  # the second read came from the entry
    want = load_windows(path, TINY)
    assert_same_windows(first, want)
    assert_same_windows(again, want)


def test_entries_are_keyed_by_content_and_decode_parameters(
    media_files: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "renamed.mp4"
    shutil.copy(media_files["mp4"], copy)
    cache = DecodeCache(tmp_path / "cache")
    cache.cached_windows(media_files["mp4"], TINY, 2)
    cache.cached_windows(copy, TINY, 2)  # same bytes, another name: the same entry
    assert cache.decodes == 1
    cache.cached_windows(copy, TINY, 3)  # another window count: another entry
    assert cache.decodes == 2
    digest = content_hash(copy)
    assert cache.windows_entry(digest, TINY, 2) != cache.windows_entry(digest, TINY, 3)
    # The one-call form, with the content hash the caller already knows.
    windows = cached_windows(tmp_path / "cache", copy, TINY, 3, content_hash=digest)
    assert_same_windows(windows, load_windows(copy, TINY, 3))


def test_a_damaged_windows_entry_is_decoded_again(
    media_files: dict[str, Path], tmp_path: Path
) -> None:
    path = media_files["mp4"]
    cache = DecodeCache(tmp_path)
    cache.cached_windows(path, TINY, 2)
    entry = cache.windows_entry(content_hash(path), TINY, 2)
    audio = entry / "audio.npy"
    audio.write_bytes(audio.read_bytes()[:1000])  # cut short: a disk that filled up
    windows = cache.cached_windows(path, TINY, 2).load()
    assert cache.decodes == 2
    assert_same_windows(windows, load_windows(path, TINY, 2))


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(DecodeCacheError, match="cannot read"):
        DecodeCache(tmp_path).cached_windows(tmp_path / "gone.mp4", TINY)


def test_a_files_entries_are_removed_by_hash_and_swept_when_no_item_names_it(
    media_files: dict[str, Path], tmp_path: Path
) -> None:
    cache = DecodeCache(tmp_path / "cache")
    mp4, wav = media_files["mp4"], media_files["wav"]
    for path in (mp4, wav):
        cache.cached_windows(path, TINY, 2)
        cache.cached_windows(path, TINY, 3)
    cache.full(
        mp4, content_hash(mp4), fps=4, side=80, sample_rate=16000,
        media_info=lambda: read_media_info(mp4),
    )  # fmt: skip
    gone, kept = content_hash(mp4), content_hash(wav)

    def entries(digest: str) -> list[str]:
        return sorted(p.name for p in (tmp_path / "cache").glob(f"*/*/{digest[:32]}-*"))

    assert len(entries(gone)) == 3
    assert cache.remove(gone) == 3  # both kinds, every parameter set
    assert entries(gone) == [] and len(entries(kept)) == 2

    cache.cached_windows(mp4, TINY, 2)  # decoded again (an example query of the same bytes)
    leftover = tmp_path / "cache" / "windows" / "ab" / ".abcd-fps4.x1y2.tmp"  # a cut build
    leftover.mkdir(parents=True)
    (leftover / "video.npy").write_bytes(b"x" * 100)
    # An entry of a file in use, of a cache version before this one: never read again.
    current = entries(kept)[0]
    old_version = tmp_path / "cache" / "windows" / kept[:2] / current.replace("-v2", "-v1")
    old_version.mkdir()
    (old_version / "audio.npy").write_bytes(b"x" * 10)
    assert cache.sweep({kept}, older_than_s=3600) == (0, 0)  # all younger than an hour
    removed, size = cache.sweep({kept}, older_than_s=0)
    assert removed == 3 and size > 110
    assert entries(gone) == [] and not leftover.exists() and not old_version.exists()
    assert len(entries(kept)) == 2
    decodes = cache.decodes
    assert cache.cached_windows(wav, TINY, 2).load() is not None
    assert cache.decodes == decodes  # what files in use have stays


def test_a_file_replaced_by_a_copy_of_the_same_size_and_time_is_hashed_again(
    tmp_path: Path,
) -> None:
    """The memo knew a file by its size and modification time: a re-exported clip
    copied over it with `cp -p` (both kept) was taken for the old one, and trained on
    with the old one's decoded windows."""
    from model.media.decode_cache import ContentHashes, content_hash

    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"A" * 1000)
    os.utime(clip, ns=(10**18, 10**18))
    hashes = ContentHashes(tmp_path / "cache")
    first = hashes.of(clip)
    replacement = tmp_path / "new.wav"
    replacement.write_bytes(b"B" * 1000)
    os.utime(replacement, ns=(10**18, 10**18))
    replacement.replace(clip)  # what cp -p to a temporary name and a rename leave
    assert hashes.of(clip) == content_hash(clip) != first
