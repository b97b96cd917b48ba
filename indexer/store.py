"""Index files on disk: atomic writes, a manifest with counts and checksums, verified loads.

Layout of one model version's directory::

    indexes/<version>/manifest.json                   the commit point (below)
    indexes/<version>/<space>-<modality>.<sha16>.faiss one file per index, named by content

Writing: each index is written to a temporary file (its sha256 computed while FAISS
writes it), fsynced, renamed to its content-addressed name; then the manifest is written
the same way and renamed over the old one, and the directory is fsynced. Files no manifest
names are deleted afterwards. A crash at any moment leaves the old manifest pointing at
complete old files, or the new manifest pointing at complete new ones.

Loading verifies, in order: the manifest parses and is for this model version; the file
exists, has the recorded size and sha256 (catches truncation and corruption before FAISS
parses anything); FAISS reads it; the dimension matches; the ids inside the file have
the recorded count and sha256. Any failure is a StoreError whose message says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.errors import StoreError
from indexer.vector_index import index_ids

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 8 << 20
_NAME = re.compile(r"[a-z0-9_]+")


def ids_digest(ids: np.ndarray) -> str:
    """sha256 of the sorted, unique ids as little-endian int64: order-free identity of a set."""
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    return hashlib.sha256(unique.astype("<i8").tobytes()).hexdigest()


def check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise StoreError(f"{kind} name {value!r} must be lower-case letters, digits or _")
    return value


@dataclass(frozen=True)
class IndexEntry:
    """One index file as the manifest records it."""

    file: str
    sha256: str
    bytes: int
    dim: int
    count: int  # ids physically in the file
    ids_sha256: str
    info: dict[str, Any] = field(default_factory=dict)  # IndexInfo.as_dict()
    # Of those ids, how many were deleted when it was saved (an HNSW cannot remove them),
    # and the sha256 of the others: a file whose live ids are the source's is current,
    # whatever deleted ones it still holds. 0 and "" in manifests written before.
    deleted: int = 0
    live_sha256: str = ""


@dataclass(frozen=True)
class Manifest:
    model_version: str
    saved_at: str
    entries: dict[str, IndexEntry]  # "space/modality" -> entry
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self.format,
                "model_version": self.model_version,
                "saved_at": self.saved_at,
                "indexes": {key: entry.__dict__ for key, entry in sorted(self.entries.items())},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise StoreError(f"manifest format {data.get('format')!r} is not {FORMAT}")
        entries = {key: IndexEntry(**value) for key, value in data["indexes"].items()}
        return cls(data["model_version"], data["saved_at"], entries, data["format"])


@dataclass(frozen=True)
class StagedIndex:
    """An index serialised to a temporary file that is not yet durable."""

    key: str
    path: Path
    sha256: str
    size: int


class IndexStore:
    """The files of one model version's index set."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    # ---------------------------------------------------------------- writing
    def stage_index(self, key: str, index: faiss.Index) -> StagedIndex:
        """Serialise `index` into a temporary file, not yet durable: this is the part that
        needs the index held still, at memory speed. `commit_index` makes it durable."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key.replace('/', '-')}.{uuid.uuid4().hex}.tmp"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:

                def sink(chunk: bytes) -> int:
                    nonlocal size
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    return len(chunk)

                faiss.write_index(index, faiss.PyCallbackIOWriter(sink))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StagedIndex(key, tmp, digest.hexdigest(), size)

    def commit_index(self, staged: StagedIndex) -> tuple[str, str, int]:
        """fsync the staged file and give it its final name; returns (name, sha256, bytes)."""
        name = f"{staged.key.replace('/', '-')}.{staged.sha256[:16]}.faiss"
        try:
            with open(staged.path, "rb+") as out:
                os.fsync(out.fileno())
            os.replace(staged.path, self.directory / name)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        self._fsync_dir()
        return name, staged.sha256, staged.size

    def write_manifest(self, manifest: Manifest) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                out.write(manifest.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.directory / MANIFEST)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def remove_unreferenced(self, manifest: Manifest | None) -> list[str]:
        """Delete index files the manifest does not name and temp files of dead writers."""
        if not self.directory.is_dir():
            return []
        keep = {entry.file for entry in manifest.entries.values()} if manifest else set()
        removed = []
        for path in self.directory.iterdir():
            stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
            if stale_tmp or (path.suffix == ".faiss" and path.name not in keep):
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- reading
    def read_manifest(self) -> Manifest:
        path = self.directory / MANIFEST
        if not path.exists():
            raise StoreError(f"no manifest at {path}")
        try:
            return Manifest.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"manifest {path} is unreadable ({exc})") from exc

    def load(self, key: str, entry: IndexEntry, dim: int) -> tuple[faiss.Index, np.ndarray]:
        """Read and verify one index file; returns the index and the ids in it."""
        path = self.directory / entry.file
        if not path.exists():
            raise StoreError(f"index file {entry.file} is missing")
        size = path.stat().st_size
        if size != entry.bytes:
            raise StoreError(
                f"index file {entry.file} has {size:,} bytes, the manifest "
                f"recorded {entry.bytes:,} (truncated or overwritten)"
            )
        digest = hashlib.sha256()
        with open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != entry.sha256:
            raise StoreError(f"index file {entry.file} fails its sha256 check (corrupt)")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise StoreError(f"FAISS cannot read {entry.file}: {str(exc)[:200]}") from exc
        if index.d != dim or entry.dim != dim:
            raise StoreError(f"{key} has dimension {index.d}, the space now has {dim}")
        ids = index_ids(index)
        if len(ids) != entry.count:
            raise StoreError(
                f"{entry.file} holds {len(ids):,} ids, the manifest recorded {entry.count:,}"
            )
        if ids_digest(ids) != entry.ids_sha256:
            raise StoreError(f"the ids in {entry.file} differ from the manifest's checksum")
        return index, ids
