"""Bad input through the real server (issue 21, "Must have" 1), as one table.

Every row is sent to a real `python -m service` on 127.0.0.1 and must be answered in the
contract's error shape with the status and code it names; after each the server still
answers, and after the whole table (alone, then every row at once from 32 clients)
nothing is half-written: every item row is `ready` and was acknowledged to a client,
every media file belongs to one of them, no temporary upload is left, and the stored
embeddings and the served indexes hold vectors of those items only.

A corrupt sound track inside a valid container (every audio packet garbled, the video
intact) is refused whole, 422 `unreadable_media`, as any file the service cannot read:
no item (it once became a ready video+audio item whose "sound" was embedded from the
silence the decoder pads in). So are files that declare more media than they hold
(model/media/completeness.py).

test_e2e_api.py checks the details of several of these answers (limits in `detail`,
messages); here each row checks the status and code, cheaply, and what it leaves.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import sqlite3
import struct
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e_server
import httpx
import pytest
from e2e_server import Server, assert_error, ffmpeg, make_tone

Responses = list[httpx.Response]
Inputs = dict[str, bytes]

# Per server (the module runs once per engine): the items acknowledged with 2xx to an
# upload, the only ones that may exist at the end; and each row's answers when sent
# alone, as (status, code) per request, which the 32-client run must give again.
ACKNOWLEDGED: dict[str, set[str]] = defaultdict(set)
ALONE: dict[str, dict[str, list[tuple[int, str]]]] = defaultdict(dict)
_FRESH = itertools.count()
_NONCE = os.urandom(4)


# -- inputs ------------------------------------------------------------------------------
def png_claiming(picture: bytes, width: int, height: int) -> bytes:
    """A valid small png whose header (IHDR, CRC fixed) says width × height."""
    assert picture[12:16] == b"IHDR"
    fields = picture[16:29]
    header = b"IHDR" + struct.pack(">II", width, height) + fields[8:]
    return picture[:12] + header + struct.pack(">I", zlib.crc32(header)) + picture[33:]


def wav_claiming(wav: bytes, seconds: float) -> bytes:
    """The wav's header with a data chunk of `seconds` (RIFF size to match, capped at
    4 GiB), followed by its first second of samples only."""
    data = wav.index(b"data")
    byte_rate = struct.unpack("<I", wav[28:32])[0]
    claimed = min(int(seconds * byte_rate), 2**32 - 1 - data)
    header = bytearray(wav[: data + 8])
    header[4:8] = struct.pack("<I", claimed + data)
    header[data + 4 : data + 8] = struct.pack("<I", claimed)
    return bytes(header) + wav[data + 8 : data + 8 + byte_rate]


@pytest.fixture(scope="module")
def inputs(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    d = tmp_path_factory.mktemp("bad")
    clip = media["clip"].read_bytes()  # faststart: its index (moov) before its data
    corrupt_audio, no_frames, frameless = d / "ca.mp4", d / "nf.mp4", d / "nf.avi"
    # Every byte of every audio packet changed (deterministically): the container and the
    # pictures are sound, the sound track decodes to nothing.
    ffmpeg("-i", str(media["clip"]), "-c", "copy", "-bsf:a", "noise=amount=1", str(corrupt_audio))
    # What ffmpeg writes for a video of no frames: an mp4 without a stream.
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-frames:v", "0",
           "-c:v", "libx264", str(no_frames))  # fmt: skip
    # A video stream that declares a picture size but holds no frame at all.
    ffmpeg("-i", str(media["silent"]), "-c", "copy", "-bsf:v", "noise=drop=1", str(frameless))
    tone = make_tone(d / "tone.wav", 330, seconds=1.0).read_bytes()
    return {
        "cut_in_index": clip[: clip.index(b"mdat") - 200],
        "cut_in_data": clip[: len(clip) // 2],
        "random": random.Random(21).randbytes(50_000),
        "text": media["text_file"].read_bytes(),
        "huge_png": png_claiming(media["picture"].read_bytes(), 30_000, 30_000),
        "large_png": png_claiming(media["picture"].read_bytes(), 16_000, 16_000),
        "ten_hours": wav_claiming(media["tone"].read_bytes(), 10 * 3600),
        "long": media["long"].read_bytes(),
        "no_frames": no_frames.read_bytes(),
        "frameless": frameless.read_bytes(),
        "corrupt_audio": corrupt_audio.read_bytes(),
        "tone": tone,
    }


def fresh(tone: bytes) -> bytes:
    """A wav no one has uploaded: its last samples changed (still a valid wav)."""
    return tone[:-8] + _NONCE + struct.pack("<I", next(_FRESH))


# -- requests --------------------------------------------------------------------------
def multipart(parts: list[tuple[bytes, bytes, bytes | None]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand: (name, value, filename or None), bytes as given."""
    boundary = b"bad-input-boundary"
    body = b""
    for name, value, filename in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
        body += value + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}


def upload(
    c: httpx.Client,
    data: bytes,
    name: str = "file.mp4",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    # No speech recognition: none of these files is about speech, and it is slow.
    files = {"file": (name, data, content_type)}
    return c.post("/v1/items", params={"asr": "false"}, files=files, data=fields)


def raw_get(c: httpx.Client, target: bytes) -> httpx.Response:
    """GET `target` on a raw socket: httpx refuses to send a URL over 64 KB."""
    host, port = c.base_url.host, c.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                  b"Connection: close\r\n\r\n")  # fmt: skip
        answer = b""
        while (chunk := s.recv(65536)) and not _complete(answer := answer + chunk):
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def _complete(answer: bytes) -> bool:
    """The whole answer is in (a client reads it and goes; it need not wait for the
    server to close the connection)."""
    head, end, body = answer.partition(b"\r\n\r\n")
    length = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(end) and bool(length) and len(body) >= int(length[0].split(b":")[1])


JSON = {"content-type": "application/json"}
SEARCH = {"query": {"text": "a red ball"}, "target": "audio"}
BIG = "x" * (10 << 20)
WIDE = {f"k{i}": i for i in range(10_000)}


def chunked(body: bytes) -> Iterator[bytes]:  # no Content-Length: chunked encoding
    for start in range(0, len(body), 256 * 1024):
        yield body[start : start + 256 * 1024]


def ten_mb_metadata(streamed: bool) -> Callable[[httpx.Client, Inputs], Responses]:
    def send(c: httpx.Client, x: Inputs) -> Responses:
        body, headers = multipart(
            [(b"metadata", b'{"a": "' + b"x" * (10 << 20) + b'"}', None),
             (b"file", x["tone"], b"tone.wav")]
        )  # fmt: skip
        return [c.post("/v1/items", content=chunked(body) if streamed else body, headers=headers)]

    return send


def same_file_by_ten(c: httpx.Client, x: Inputs) -> Responses:
    data, start = fresh(x["tone"]), threading.Barrier(10)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=c.base_url, timeout=120) as own:
            start.wait()
            return upload(own, data, "same.wav")

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(one, range(10)))


def k_everywhere(k: str) -> Callable[[httpx.Client, Inputs], Responses]:
    def send(c: httpx.Client, x: Inputs) -> Responses:
        body, headers = multipart(
            [(b"file", x["tone"], b"t.wav"), (b"target", b"audio", None), (b"k", k.encode(), None)]
        )
        return [
            c.post("/v1/search", json={**SEARCH, "k": int(k)}),
            c.get("/v1/search", params={"q": "a red ball", "target": "audio", "k": k}),
            c.post("/v1/search/upload", content=body, headers=headers),
        ]

    return send


def unknown_target(c: httpx.Client, x: Inputs) -> Responses:
    body, headers = multipart([(b"file", x["tone"], b"t.wav"), (b"target", b"smell", None)])
    return [
        c.post("/v1/search", json={**SEARCH, "target": "smell"}),
        c.get("/v1/search", params={"q": "a red ball", "target": "smell"}),
        c.post("/v1/search/upload", content=body, headers=headers),
    ]


def not_utf8_fields(c: httpx.Client, x: Inputs) -> Responses:
    tone = x["tone"]
    forms = [
        ("/v1/items", [(b"file", tone, b"t.wav"), (b"transcript", b"caf\xe9 au lait", None)]),
        ("/v1/items", [(b"file", tone, b"t.wav"), (b"metadata", b'{"k": "\xff"}', None)]),
        ("/v1/search/upload", [(b"file", tone, b"t.wav"), (b"target", b"aud\xffio", None)]),
        ("/v1/search/upload",
         [(b"file", tone, b"t.wav"), (b"target", b"audio", None), (b"k", b"1\xff", None)]),
        ("/v1/search/upload",
         [(b"file", tone, b"t.wav"), (b"target", b"audio", None), (b"group", b"\xff", None)]),
    ]  # fmt: skip
    return [c.post(route, content=body, headers=headers)
            for route, parts in forms for body, headers in [multipart(parts)]]  # fmt: skip


def not_utf8_json(c: httpx.Client, x: Inputs) -> Responses:
    return [
        c.post("/v1/search", content=b'{"query": {"text": "a\xffb"}, "target": "audio"}',
               headers=JSON),
        c.post("/v1/items/text", content=b'{"text": "caf\xe9"}', headers=JSON),
        c.post("/v1/training/jobs", content=b'{"init": "\xff"}', headers=JSON),
    ]  # fmt: skip


def not_utf8_query(c: httpx.Client, x: Inputs) -> Responses:
    return [
        c.get("/v1/search?q=%FF&target=audio"),
        c.get("/v1/search?q=caf%E9&target=audio"),
        c.get("/v1/search?q=a&target=%FF"),
        c.get("/v1/items?cursor=%FF"),
        c.get("/v1/items?kind=%FF"),
        c.get("/v1/training/jobs?status=%FF"),
    ]


def unstorable_json_text(c: httpx.Client, x: Inputs) -> Responses:
    """JSON escapes that make a NUL (PostgreSQL's text cannot hold one) or half of a
    surrogate pair (no answer showing it can be written as UTF-8)."""
    bodies = [
        ("/v1/items/text", b'{"text": "a\\u0000b"}'),
        ("/v1/items/text", b'{"text": "ab", "metadata": {"k\\u0000": 1}}'),
        ("/v1/items/text", b'{"text": "ab", "metadata": {"\\ud800": 1}}'),
        ("/v1/items/text", b'{"text": "ab", "metadata": {"k": "\\udfff"}}'),
        ("/v1/search", b'{"query": {"text": "a"}, "target": "audio", "filter": {"\\ud800": 1}}'),
        ("/v1/search", b'{"query": {"text": "a"}, "target": "audio", "filter": {"k\\u0000": 1}}'),
        ("/v1/search", b'{"query": {"item_id": "a\\u0000"}, "target": "audio"}'),
    ]
    return [c.post(route, content=body, headers=JSON) for route, body in bodies]


def unstorable_upload_text(c: httpx.Client, x: Inputs) -> Responses:
    return [
        upload(c, x["tone"], "t.wav", metadata='{"k": "\\ud800"}'),
        upload(c, x["tone"], "t.wav", metadata='{"k\\u0000": "v"}'),
        upload(c, x["tone"], "t.wav", transcript="a\x00b"),
    ]


def nul_in_ids(c: httpx.Client, x: Inputs) -> Responses:
    return [
        c.get("/v1/items/a%00b"),
        c.delete("/v1/items/a%00b"),
        c.get("/v1/items/a%00b/media"),
        c.get("/v1/training/jobs/a%00b"),
        c.post("/v1/training/jobs/a%00b/cancel"),
        c.post("/v1/models/a%00b/activate"),
        c.delete("/v1/models/a%00b"),
    ]


def missing_item(c: httpx.Client, x: Inputs) -> Responses:
    gone = "no-such-item-21"
    return [
        c.post("/v1/search", json={"query": {"item_id": gone}, "target": "audio"}),
        c.post("/v1/search", json={"query": {"item_id": gone, "start_s": 0, "end_s": 5},
                                   "target": "audio"}),
        c.get(f"/v1/items/{gone}"),
        c.delete(f"/v1/items/{gone}"),
        c.get(f"/v1/items/{gone}/media"),
    ]  # fmt: skip


def dangerous_name(c: httpx.Client, x: Inputs) -> Responses:
    """The client's file name is text only: the item is stored by its hash."""
    data = fresh(x["tone"])
    body, headers = multipart([(b"file", data, b"../../../etc/pass\x00wd\xff/../.wav")])
    r = c.post("/v1/items", params={"asr": "false"}, content=body, headers=headers)
    if r.status_code == 201:  # the bytes come back as sent; where they lie: checked at the end
        assert "passwd" not in r.text
        media = c.get(r.json()["media_url"])
        assert media.content == data
        assert "passwd" not in media.headers["content-disposition"]
    return [r]


# -- the table -------------------------------------------------------------------------
Send = Callable[[httpx.Client, Inputs], Responses]


@dataclass(frozen=True)
class Row:
    name: str
    send: Send
    status: int  # of every answer; 200/201 (stored) for the rows that store an item
    code: str | None = None
    marks: tuple[Any, ...] = ()
    says: str | None = None  # in every answer's error message

    def param(self) -> Any:
        return pytest.param(self, id=self.name, marks=self.marks)


# Messages name a file as its sender did, never by the server's temporary or stored name.
SENT_AS = "holiday 2026.mp4"


def file_row(name: str, key: str, status: int, code: str, **extra: Any) -> Row:
    return Row(name, lambda c, x: [upload(c, x[key], SENT_AS)], status, code, **extra)


ROWS = [
    file_row("truncated mp4 cut in its index", "cut_in_index", 422, "unreadable_media",
             says=f"'{SENT_AS}' is not a media file ffmpeg can read: "),
    # ffprobe reads the whole index of a faststart mp4 cut in half (3 s, 30 frames); the
    # decoder stops at the end of the bytes (1.3 s) without an error: "looks truncated".
    file_row("truncated mp4 cut in its data", "cut_in_data", 422, "unreadable_media",
             says=f"'{SENT_AS}': the file ends before its media does: it looks truncated "
             "(decoded 1."),
    file_row("random bytes named .mp4", "random", 422, "unreadable_media",
             says=f"'{SENT_AS}' is not a media file ffmpeg can read: {SENT_AS}: Invalid data"),
    Row("zero-byte file", lambda c, x: [upload(c, b"")], 422, "invalid_request"),
    Row("text declared video/mp4",
        lambda c, x: [upload(c, x["text"], "movie.mp4", "video/mp4")], 422, "unreadable_media"),
    # Over what ffmpeg itself accepts: it reads no size, nothing is decoded.
    file_row("png claiming 30000 x 30000", "huge_png", 422, "unreadable_media"),
    # Within ffmpeg's limits but over MMV_MAX_PIXELS: refused from the header.
    file_row("png claiming 16000 x 16000", "large_png", 413, "too_large"),
    # ffprobe says 1 s: its wav reader ignores a data size past the end of the file and
    # estimates the length from the bytes present ("Estimating duration from bitrate").
    # So not 413 too_long: nothing plays for 10 hours. The header is read and compared
    # with the bytes: 36000 s declared, 1 s held, "looks truncated" (422).
    file_row("wav header claiming 10 hours", "ten_hours", 422, "unreadable_media",
             says=f"'{SENT_AS}': the file ends before its media does: it looks truncated (its "
             "header declares 36000.0 s of sound; the file holds 1.0 s)"),
    file_row("clip over the duration cap", "long", 413, "too_long"),
    file_row("video of no frames (no stream)", "no_frames", 415, "unsupported_media"),
    file_row("video stream of no frames", "frameless", 422, "unreadable_media"),
    # What the item becomes: nothing. A video whose sound track cannot be decoded is
    # refused whole (422 unreadable_media, "the sound track cannot be decoded"), as any
    # file the service cannot read; it was stored as video+audio, its "sound" embedded
    # from the silence the decoder pads in.
    file_row("corrupt audio stream in a valid mp4", "corrupt_audio", 422, "unreadable_media",
             says=f"'{SENT_AS}': the sound track cannot be decoded (none of its 3.0 s "
             "decoded): "),
    Row("file name with ../ and NUL", dangerous_name, 201),
    Row("metadata not JSON",
        lambda c, x: [upload(c, x["tone"], "t.wav", metadata="{not json")], 422, "invalid_request"),
    Row("metadata nested 1000 deep",
        lambda c, x: [upload(c, x["tone"], "t.wav", metadata="[" * 1000 + "]" * 1000),
                      upload(c, x["tone"], "t.wav", metadata='{"a": ' * 1000 + "1" + "}" * 1000)],
        422, "invalid_request"),
    # Read by FastAPI's JSON decoder, which gives up on the depth: 400.
    Row("metadata nested 1000 deep in JSON",
        lambda c, x: [c.post("/v1/items/text", headers=JSON, content=b'{"text": "t", "metadata": '
                             + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}")],
        400, "invalid_request"),
    Row("metadata of 10 MB", ten_mb_metadata(streamed=False), 413, "too_large"),
    Row("metadata of 10 MB streamed", ten_mb_metadata(streamed=True), 413, "too_large"),
    Row("metadata of 10 MB in JSON",
        lambda c, x: [c.post("/v1/items/text", json={"text": "t", "metadata": {"a": BIG}})],
        413, "too_large"),
    Row("1 MB text query on GET",
        lambda c, x: [raw_get(c, b"/v1/search?target=audio&q=" + b"a" * (1 << 20))],
        414, "uri_too_long"),
    Row("1 MB text query on POST",
        lambda c, x: [c.post("/v1/search", json={**SEARCH, "query": {"text": "a" * (1 << 20)}})],
        413, "too_large"),
    Row("non-UTF-8 multipart fields", not_utf8_fields, 422, "invalid_request"),
    # FastAPI's JSON decoder cannot read bytes that are not UTF-8: 400.
    Row("non-UTF-8 JSON bodies", not_utf8_json, 400, "invalid_request"),
    Row("non-UTF-8 query strings", not_utf8_query, 422, "invalid_request"),
    Row("NUL and half surrogates in JSON text", unstorable_json_text, 422, "invalid_request"),
    Row("NUL and half surrogates in upload fields", unstorable_upload_text, 422,
        "invalid_request"),
    Row("NUL in ids", nul_in_ids, 422, "invalid_request"),
    Row("k of 0", k_everywhere("0"), 422, "invalid_request"),
    Row("k of -1", k_everywhere("-1"), 422, "invalid_request"),
    Row("k of 10^9", k_everywhere(str(10**9)), 422, "invalid_request"),
    Row("unknown target", unknown_target, 422, "invalid_request"),
    # Not an error: no item has those 10,000 keys (SQLite's limit of 500 compound parts,
    # and of bound parameters, made it a 500 once).
    Row("filter of 10000 keys",
        lambda c, x: [c.post("/v1/search", json={**SEARCH, "filter": WIDE})],
        200),
    Row("item_id that does not exist", missing_item, 404, "not_found"),
    # One item; every client is told of it (201 to the one that stored it, 200 to the
    # others), none gets an error.
    Row("same file by 10 clients at once", same_file_by_ten, 200),
]  # fmt: skip


def outcome(r: httpx.Response) -> tuple[int, str]:
    """(status, error code); 2xx answers to uploads are one outcome, "stored"."""
    if r.status_code < 300:
        return (200 if r.status_code in (200, 201) else r.status_code), "ok"
    try:
        return r.status_code, r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return r.status_code, f"not the contract's shape: {r.text[:80]!r}"


def run_row(server: Server, inputs: Inputs, row: Row) -> Responses:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        answers = row.send(c, inputs)
    for r in answers:
        if r.status_code in (200, 201) and r.request.url.path == "/v1/items":
            ACKNOWLEDGED[server.url].add(r.json()["id"])
    return answers


def check_row(row: Row, answers: Responses) -> None:
    assert answers
    for r in answers:
        if row.code is not None:
            assert_error(r, row.status, row.code)
        if row.says is not None:
            assert row.says in r.json()["error"]["message"], r.text
    if row.name == "same file by 10 clients at once":
        assert sorted(r.status_code for r in answers) == [200] * 9 + [201], [
            r.text[:200] for r in answers
        ]
        items = [r.json() for r in answers]
        assert len({i["id"] for i in items}) == 1
        assert {i["status"] for i in items} == {"ready"}
    elif row.code is None:
        assert [r.status_code for r in answers] == [row.status] * len(answers), answers[0].text
    if row.name == "filter of 10000 keys":
        assert answers[0].json()["results"] == []


def answered_alone(server: Server, inputs: Inputs) -> dict[str, list[tuple[int, str]]]:
    """Each row's answers alone; rows not run yet on this server (a run selected with -k)
    are run now."""
    alone = ALONE[server.url]
    for row in ROWS:
        if row.name not in alone:
            alone[row.name] = [outcome(r) for r in run_row(server, inputs, row)]
    return alone


@pytest.mark.parametrize("row", [row.param() for row in ROWS])
def test_bad_input_is_refused_and_the_server_serves_on(
    server: Server, inputs: Inputs, row: Row
) -> None:
    answers = run_row(server, inputs, row)
    ALONE[server.url][row.name] = [outcome(r) for r in answers]
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    check_row(row, answers)


def test_every_row_at_once_from_32_clients_is_answered_as_alone(
    server: Server, inputs: Inputs
) -> None:
    alone = answered_alone(server, inputs)
    start = threading.Barrier(32)

    def client(rows: list[Row]) -> dict[str, list[tuple[int, str]]]:
        start.wait()
        return {row.name: [outcome(r) for r in run_row(server, inputs, row)] for row in rows}

    shares = [ROWS[i::32] for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        together = {k: v for part in pool.map(client, shares) for k, v in part.items()}
    differ = {name: (alone[name], got) for name, got in together.items() if got != alone[name]}
    assert not differ, f"answered otherwise than alone (alone, together): {differ}"
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200


# -- nothing half-written ----------------------------------------------------------------
def database_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` in the server's database, read-only, on either engine."""
    if e2e_server.database_for is not None:
        import psycopg

        with psycopg.connect(e2e_server.database_for(server.data_dir)) as conn:
            conn.read_only = True
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    path = server.data_dir / "db.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def test_nothing_half_written(server: Server, inputs: Inputs) -> None:
    answered_alone(server, inputs)  # the whole table has been sent (it is, in file order)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        listed = c.get("/v1/items", params={"limit": 1000}).json()["items"]
        ready = c.get("/readyz").json()
        assert c.get("/v1/search", params={"q": "a red ball", "target": "audio"}).status_code == 200
    acknowledged = ACKNOWLEDGED[server.url]
    assert acknowledged  # the table stores items too: checked below with the rest
    # Through the API: exactly the acknowledged items, every one ready.
    assert {i["id"] for i in listed} == acknowledged
    assert {i["status"] for i in listed} == {"ready"}
    # In the database: no other row, in no other state; no vector or segment of another.
    items = database_rows(server, "SELECT seq, id, status, content_hash FROM items")
    assert {(r[1], r[2]) for r in items} == {(i, "ready") for i in acknowledged}
    seqs = {r[0] for r in items}
    for table in ("embeddings", "segments", "item_metadata"):
        owners = {r[0] for r in database_rows(server, f"SELECT DISTINCT item_seq FROM {table}")}
        assert owners <= seqs, f"{table} holds rows of items that do not exist: {owners - seqs}"
    # The served indexes hold exactly the stored vectors of the active version.
    version = ready["model_version"]
    stored = {
        f"{space}/{modality}": n
        for space, modality, n in database_rows(
            server,
            f"SELECT space, modality, COUNT(*) FROM embeddings WHERE version = '{version}'"
            " GROUP BY space, modality",
        )
    }
    stored |= {
        f"{space}/{modality}_segments": n
        for space, modality, n in database_rows(
            server,
            "SELECT space, modality, COUNT(*) FROM segment_embeddings"
            f" WHERE version = '{version}' GROUP BY space, modality",
        )
    }
    assert {k: v for k, v in ready["indexes"].items() if v} == stored
    # On disk: a media file for each item with media, nothing else; no upload left behind.
    media = {p.name for p in (server.data_dir / "media").iterdir()}
    assert media == {r[3] for r in items if r[3]}
    leftovers = [p for p in (server.data_dir / "tmp").rglob("*") if p.is_file()]
    assert not leftovers, leftovers


def test_a_failed_item_names_its_file_as_sent(server: Server, inputs: Inputs) -> None:
    """An upload accepted at once (wait=false) that fails while processing keeps the
    reason on the item: it named the file by its content hash, which its sender never
    saw. Deleted after, so the table's checks above see only their own items."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        files = {"file": (SENT_AS, inputs["cut_in_data"], "video/mp4")}
        r = c.post("/v1/items", params={"asr": "false", "wait": "false"}, files=files)
        assert r.status_code == 202, r.text
        item = r.json()
        deadline = time.monotonic() + 60
        while item["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.2)
            item = c.get(f"/v1/items/{item['id']}").json()
        try:
            assert item["status"] == "failed", item
            assert item["error"].startswith(
                f"'{SENT_AS}': the file ends before its media does: it looks truncated"
            ), item["error"]
        finally:
            assert c.delete(f"/v1/items/{item['id']}").status_code == 204
