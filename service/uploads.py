"""Streamed multipart uploads: the file part goes straight to a temporary file on disk.

The body is never held in memory and never spooled twice: the `file` part is written
chunk by chunk into DATA_DIR/tmp under a random name (the client's file name is kept
only as text, never used as a path) while its SHA-256 is computed, and the upload is cut
off with 413 as soon as it passes the byte cap. Other parts are small text fields.

Before a byte is read the request takes a slot of its kind (service/admission.py: 503
`overloaded` past the bound) and the disk must keep MMV_MIN_FREE_DISK_MB free after the
declared length; while it streams, free space falling under that, or a write failing
for want of space (ENOSPC), answers 507 `insufficient_storage`. Whatever the failure,
the temporary file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.admission import InFlightLimit
from service.errors import (
    InsufficientStorage,
    InvalidRequest,
    RequestTimeout,
    TooLarge,
    UnsupportedMedia,
)
from service.settings import Settings

log = logging.getLogger("service.uploads")

PARSE_BLOCK_BYTES = 1024 * 1024
# A write that fails for want of space: a full disk, or a quota.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}

FILE_FIELD = "file"


@dataclass
class ReceivedUpload:
    path: Path | None  # temporary file in DATA_DIR/tmp; None when no file part was sent
    size: int = 0
    sha256: str = ""
    filename: str | None = None  # the client's name for it: text only, never a path
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def shown_name(sent: str) -> str | None:
    """The client's name for a file, fit to show in a message: its last path component
    (browsers on Windows once sent C:\\Users\\…), no control characters, at most 255
    characters; None when nothing is left."""
    last = sent.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in last if c.isprintable()).strip()
    return text[:255] or None


# An upload form has a handful of text fields (transcript, metadata, wait, asr; target,
# k, group, filter), all kept in memory: their number and their bytes together are
# bounded, or thousands of fields just under the per-field cap filled the server's
# memory within one body's cap.
MAX_FORM_FIELDS = 32
MAX_FORM_TEXT_FIELDS_OF = 8  # the fields' bytes together: this many fields at their cap


class _Receiver:
    """Callbacks for python-multipart's streaming parser."""

    def __init__(self, tmp_dir: Path, max_file_bytes: int, max_field_bytes: int) -> None:
        self.tmp_dir = tmp_dir
        self.max_file_bytes = max_file_bytes
        self.max_field_bytes = max_field_bytes
        self.result = ReceivedUpload(path=None)
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._name: str | None = None
        self._file: IO[bytes] | None = None
        self._hash: Any = None
        self._field_buf = bytearray()
        self._parts = 0
        self._text_bytes = 0  # of every text field so far
        self.ended = False  # the closing boundary was read

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._field_buf = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidRequest("every multipart part needs Content-Disposition: form-data; name=")
        self._name = options[b"name"].decode("utf-8", "replace")
        self._parts += 1
        if self._parts > MAX_FORM_FIELDS:
            raise TooLarge(
                f"the form has more than {MAX_FORM_FIELDS} fields",
                {"max_fields": MAX_FORM_FIELDS},
            )
        if self._name == FILE_FIELD:
            if self.result.path is not None:
                raise InvalidRequest("send exactly one 'file' part")
            fd, tmp = tempfile.mkstemp(prefix="upload-", dir=self.tmp_dir)
            self._file = os.fdopen(fd, "wb")
            self._hash = hashlib.sha256()
            self.result.path = Path(tmp)
            if b"filename" in options:
                self.result.filename = shown_name(options[b"filename"].decode("utf-8", "replace"))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self.result.size += len(chunk)
            if self.result.size > self.max_file_bytes:
                raise TooLarge(
                    f"the file is larger than the upload limit of "
                    f"{self.max_file_bytes / 1024 / 1024:.0f} MB",
                    {"max_bytes": self.max_file_bytes},
                )
            self._hash.update(chunk)
            self._file.write(chunk)
        else:
            self._field_buf += chunk
            self._text_bytes += len(chunk)
            if self._text_bytes > MAX_FORM_TEXT_FIELDS_OF * self.max_field_bytes:
                raise TooLarge(
                    "the form's text fields are larger than "
                    f"{MAX_FORM_TEXT_FIELDS_OF * self.max_field_bytes // 1024} KB together",
                    {"max_bytes": MAX_FORM_TEXT_FIELDS_OF * self.max_field_bytes},
                )
            if len(self._field_buf) > self.max_field_bytes:
                raise TooLarge(
                    f"the form field '{self._name}' is larger than "
                    f"{self.max_field_bytes // 1024} KB",
                    {"field": self._name, "max_bytes": self.max_field_bytes},
                )

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.result.sha256 = self._hash.hexdigest()
        elif self._name is not None:
            try:
                # utf-8-sig: a leading byte-order mark (editors write one at the start of
                # UTF-8 files, and `curl -F field=<file` sends it) marks the encoding and
                # is not text: kept, an empty transcript file was a one-character one.
                self.result.fields[self._name] = self._field_buf.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise InvalidRequest(f"the form field '{self._name}' is not UTF-8 text") from None

    def on_end(self) -> None:
        self.ended = True

    def abort(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # on a full disk the flush fails too
                file.close()
        self.result.discard()


def _short_of_space(tmp_dir: Path, min_free_bytes: int, needed: int = 0) -> None:
    """InsufficientStorage unless the disk keeps `min_free_bytes` free after `needed`."""
    free = shutil.disk_usage(tmp_dir).free
    if free - needed >= min_free_bytes:
        return
    log.warning(
        "upload refused: %.0f MB free on the data directory's disk, %.0f MB more asked "
        "for, MMV_MIN_FREE_DISK_MB keeps %.0f MB free",
        free / 2**20, needed / 2**20, min_free_bytes / 2**20,
    )  # fmt: skip
    raise InsufficientStorage(
        "the server's disk is too full to take this file now; try again later"
    )


async def receive_upload(
    request: Request,
    tmp_dir: Path,
    max_file_bytes: int,
    max_field_bytes: int,
    min_free_bytes: int = 0,
    idle_s: float = 60.0,
) -> ReceivedUpload:
    """Stream a multipart/form-data body to disk; the caller must `discard()` the result.
    RequestTimeout when nothing of it arrives for `idle_s`."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UnsupportedMedia(
            "send the upload as multipart/form-data with a 'file' part",
            {"content_type": content_type.decode("latin-1")},
        )
    length = request.headers.get("content-length")
    # The body also holds the small fields and the part headers: allow them some room.
    body_cap = max_file_bytes + 8 * max_field_bytes + 64 * 1024
    too_large = f"the upload is larger than the limit of {max_file_bytes / 1024 / 1024:.0f} MB"
    declared = int(length) if length is not None and length.isdigit() else None
    if declared is not None and declared > body_cap:
        raise TooLarge(too_large, {"max_bytes": max_file_bytes, "content_length": declared})
    tmp_dir.mkdir(parents=True, exist_ok=True)
    _short_of_space(tmp_dir, min_free_bytes, declared or 0)
    receiver = _Receiver(tmp_dir, max_file_bytes, max_field_bytes)
    try:
        parser = MultipartParser(options[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
        received = 0
        pending: list[bytes] = []
        pending_bytes = 0
        stream = request.stream().__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(anext(stream), idle_s)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise RequestTimeout(
                    f"the upload sent nothing for {idle_s:g} s and was cut off",
                    {"idle_s": idle_s},
                ) from None
            # Content-Length may be absent (chunked): count what actually arrives.
            received += len(chunk)
            if received > body_cap:
                raise TooLarge(too_large, {"max_bytes": max_file_bytes})
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= PARSE_BLOCK_BYTES:
                if min_free_bytes:  # other writers fill the disk too (a statvfs: cheap)
                    _short_of_space(tmp_dir, min_free_bytes)
                # Parsing hashes and writes the file: off the event loop, which serves
                # searches meanwhile, a block at a time so the thread hop stays cheap.
                await asyncio.to_thread(parser.write, b"".join(pending))
                pending, pending_bytes = [], 0
        if pending:
            parser.write(b"".join(pending))  # the tail, under a block: not worth a hop
        parser.finalize()
    except FormParserError as exc:  # a malformed body, or a boundary the parser refuses
        receiver.abort()
        raise InvalidRequest(f"the multipart body is malformed: {exc}") from None
    except ClientDisconnect:
        receiver.abort()
        raise
    except OSError as exc:
        receiver.abort()
        if exc.errno not in NO_SPACE:
            raise
        log.warning("upload cut off: the data directory's disk is full (%s)", exc)
        raise InsufficientStorage(
            "the server's disk filled up while receiving this file; try again later"
        ) from None
    except BaseException:
        receiver.abort()
        raise
    result = receiver.result
    if receiver._file is not None:  # the body ended inside the file part
        receiver.abort()
        raise InvalidRequest("the multipart body ended before the file part was complete")
    if not receiver.ended:
        # finalize() does not check for the closing boundary: without it the body was
        # cut off, and a part after the file (metadata, transcript, k) was lost.
        receiver.abort()
        raise InvalidRequest("the multipart body ended before its closing boundary")
    if result.path is None or result.size == 0:
        result.discard()
        raise InvalidRequest(
            "the upload has no 'file' part (or it is empty)", {"field": FILE_FIELD}
        )
    return result


@asynccontextmanager
async def received_upload(
    request: Request, settings: Settings, admission: InFlightLimit
) -> AsyncIterator[ReceivedUpload]:
    """The request's upload under the settings' caps, received and used while it holds a
    slot of `admission`; its temporary file is removed at the end of the block unless
    ingestion has moved it into the media folder."""
    with admission.slot():  # before a byte of the body is read
        upload = await receive_upload(
            request,
            settings.tmp_dir,
            settings.max_upload_bytes,
            settings.max_transcript_kb * 1024,
            settings.min_free_disk_bytes,
            settings.upload_idle_s,
        )
        try:
            yield upload
        finally:
            upload.discard()
