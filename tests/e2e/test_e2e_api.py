"""The REST contract (docs/api.md) against a real `python -m service` on 127.0.0.1.

A random tiny model: these tests check behaviour that does not depend on retrieval
quality (exact matches, modalities, spaces, errors); test_e2e_retrieval.py checks
quality with the trained model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
import wave
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from e2e_server import (
    SPEECH_TEXT,
    Server,
    assert_error,
    make_clip,
    make_speech,
    make_undecodable,
)

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
ITEM_FIELDS = {
    "id", "kind", "modalities", "status", "duration_s", "transcript", "transcript_source",
    "metadata", "media_url", "created_at", "error",
}  # fmt: skip


def upload(
    client: httpx.Client,
    path: Path,
    *,
    transcript: str | None = None,
    metadata: dict[str, Any] | str | None = None,
    wait: bool = True,
    filename: str | None = None,
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    data: dict[str, str] = {}
    if transcript is not None:
        data["transcript"] = transcript
    if metadata is not None:
        data["metadata"] = metadata if isinstance(metadata, str) else json.dumps(metadata)
    files = {"file": (filename or path.name, path.read_bytes(), content_type)}
    return client.post("/v1/items", params={"wait": str(wait).lower()}, data=data, files=files)


def exchange(conn: socket.socket, request: httpx.Request) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a raw, kept-alive connection: (status, body). A closed
    connection fails here instead of being reopened, as a client library would."""
    body = request.read()
    head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in request.headers.items()
    )
    conn.sendall(head.encode("latin-1") + b"\r\n" + body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection; it had sent {reply!r}"
        reply += chunk
    top, _, rest = reply.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        rest += chunk
    return int(lines[0].split()[1]), rest[:length]


def search(client: httpx.Client, query: dict[str, Any], target: str, k: int = 10,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    response = client.post("/v1/search", json={"query": query, "target": target, "k": k, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def result_ids(results: dict[str, Any]) -> list[str]:
    return [r["item"]["id"] for r in results["results"]]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    def show_server_errors(response: httpx.Response) -> None:
        if response.status_code >= 500:  # pytest shows this output when a test fails
            print(f"server log tail:\n{server.log()[-6000:]}")

    with httpx.Client(
        base_url=server.url, timeout=120.0, event_hooks={"response": [show_server_errors]}
    ) as c:
        yield c


@pytest.fixture(scope="module")
def items(client: httpx.Client, media: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """One item of every kind, uploaded once for the module."""
    out: dict[str, dict[str, Any]] = {}
    # Transcripts are supplied so that speech recognition (slow) runs only where tested.
    for name, meta in [
        ("clip", {"color": "red", "n": 1}),
        ("clip2", {"color": "blue", "n": 2}),
        ("silent", {"color": "red", "n": "1"}),
        ("tone", {"color": "green"}),
        ("noise", None),
        ("picture", {"color": "red"}),
    ]:
        r = upload(client, media[name], metadata=meta, transcript=f"the {name}")
        assert r.status_code == 201, r.text
        out[name] = r.json()
    r = client.post("/v1/items/text", json={"text": "a red ball bounces", "metadata": {"t": 1}})
    assert r.status_code == 201, r.text
    out["text"] = r.json()
    return out


# -- uploads ---------------------------------------------------------------------------
def test_every_kind_uploads_with_its_modalities(items: dict[str, dict[str, Any]]) -> None:
    expected = {
        "clip": ("video", ["video", "audio"]),
        "silent": ("video", ["video"]),
        "tone": ("audio", ["audio"]),
        "picture": ("image", ["image"]),
        "text": ("text", ["text"]),
    }
    for name, (kind, modalities) in expected.items():
        item = items[name]
        assert set(item) >= ITEM_FIELDS
        assert (item["kind"], item["modalities"], item["status"]) == (kind, modalities, "ready")
        assert RFC3339.match(item["created_at"])
        assert item["error"] is None
    assert items["clip"]["duration_s"] == pytest.approx(3.0, abs=0.2)
    assert items["clip"]["media_url"] == f"/v1/items/{items['clip']['id']}/media"
    assert items["clip"]["metadata"] == {"color": "red", "n": 1}
    assert items["picture"]["duration_s"] is None
    assert items["text"]["media_url"] is None and items["text"]["text"] == "a red ball bounces"
    # Each file under the name it was sent with; a text item has none.
    assert {n: items[n]["filename"] for n in ("clip", "tone", "picture", "text")} == {
        "clip": "clip.mp4", "tone": "tone.wav", "picture": "picture.png", "text": None,
    }  # fmt: skip


def test_same_bytes_give_the_same_item(
    client: httpx.Client, media: dict[str, Path], items: dict[str, dict[str, Any]]
) -> None:
    r = upload(client, media["clip"], filename="another-name.mov", metadata={"other": True})
    assert r.status_code == 200
    assert r.json()["id"] == items["clip"]["id"]
    assert r.json()["metadata"] == {"color": "red", "n": 1}  # the stored item, unchanged
    assert r.json()["filename"] == "clip.mp4"  # its first name too


def test_type_comes_from_the_content_never_the_name(
    client: httpx.Client, media: dict[str, Path]
) -> None:
    r = upload(client, media["disguised"], content_type="image/png")  # a wav named .png
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["media_type"]) == ("audio", "audio/wav")
    r = upload(client, media["text_file"], filename="movie.mp4", content_type="video/mp4")
    assert_error(r, 422, "unreadable_media")


def test_transcripts_uploaded_as_text_or_webvtt_and_from_speech_recognition(
    client: httpx.Client, tmp_path: Path
) -> None:
    plain = make_speech(tmp_path / "a.wav", "a small dog barks at the moon")
    r = upload(client, plain, transcript="  a small dog\nbarks at the moon ")
    assert r.status_code == 201, r.text
    assert (r.json()["transcript"], r.json()["transcript_source"]) == (
        "a small dog barks at the moon",
        "upload",
    )
    vtt = make_speech(tmp_path / "b.wav", "the blue cup falls")
    cues = "WEBVTT\n\n00:00.000 --> 00:00.800\nthe blue cup\n\n00:00.800 --> 00:01.500\nfalls\n"
    r = upload(client, vtt, transcript=cues)
    assert r.status_code == 201, r.text
    assert r.json()["transcript"] == "the blue cup falls"

    spoken = make_speech(tmp_path / "c.wav", SPEECH_TEXT)
    r = upload(client, spoken)  # no transcript, has sound: speech recognition fills it
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["transcript_source"] == "asr"
    words = set(item["transcript"].split())
    assert words & set(SPEECH_TEXT.split()), item["transcript"]
    assert 'mmv_ingest_stage_seconds_count{stage="asr"}' in client.get("/metrics").text

    bad = make_speech(tmp_path / "d.wav", "one two")
    r = upload(client, bad, transcript="WEBVTT\n\n00:05.000 --> 00:01.000\nbackwards\n")
    assert_error(r, 422, "invalid_request")


def test_an_empty_transcript_file_with_a_byte_order_mark_is_no_transcript(
    client: httpx.Client, tmp_path: Path
) -> None:
    """An editor's "empty" UTF-8 file is a BOM: it was stored as a one-character
    transcript and so turned speech recognition off."""
    spoken = make_speech(tmp_path / "bom.wav", "the green drum rolls")
    r = upload(client, spoken, transcript="\ufeff")
    assert r.status_code == 201, r.text
    assert r.json()["transcript_source"] == "asr", r.json()
    assert client.delete(f"/v1/items/{r.json()['id']}").status_code == 204


def tremolo_tone(path: Path, frequency: int, tremolo: int, seconds: float = 4.0) -> Path:
    """A 16 kHz mono wav of a pure tone whose loudness wobbles at `tremolo` Hz."""
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    wave_ = (
        0.6 * np.sin(2 * np.pi * frequency * t) * (0.75 + 0.25 * np.sin(2 * np.pi * tremolo * t))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((wave_ * 32767).astype("<i2").tobytes())
    return path


def test_sounds_without_speech_ingest_with_no_transcript(
    client: httpx.Client, tmp_path: Path
) -> None:
    """A user's tone with a tremolo answered 500: speech recognition (with the model's own
    language model) found no hypothesis at all and pocketsphinx's word list was None.
    Sounds without speech are items like any other: no transcript, searchable."""
    for frequency, tremolo in ((400, 13), (600, 13), (1200, 13), (2800, 9), (2800, 13)):
        path = tremolo_tone(tmp_path / f"tone-{frequency}-{tremolo}.wav", frequency, tremolo)
        r = upload(client, path)  # no transcript, has sound: speech recognition runs
        assert r.status_code == 201, (frequency, tremolo, r.text)
        item = r.json()
        assert (item["kind"], item["status"], item["modalities"]) == ("audio", "ready", ["audio"])
        assert (item["transcript"], item["transcript_source"]) == (None, None), item
        found = result_ids(search(client, {"text": "tone"}, "audio", k=1000))
        assert item["id"] in found, (frequency, tremolo)
        assert search(client, {"item_id": item["id"]}, "video")["space"] == "va"
        # Later tests count the module's audio items: leave none of these behind.
        assert client.delete(f"/v1/items/{item['id']}").status_code == 204


def test_wait_false_answers_202_and_the_status_tells_the_outcome(
    client: httpx.Client, media: dict[str, Path], tmp_path: Path
) -> None:
    fresh = make_speech(tmp_path / "later.wav", "processing happens in the background")
    r = upload(client, fresh, wait=False)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "processing"
    ready = poll(client, r.json()["id"])
    assert ready["status"] == "ready" and ready["error"] is None

    r = upload(client, media["undecodable"], wait=False)  # probes fine, cannot decode
    assert r.status_code == 202, r.text
    failed = poll(client, r.json()["id"])
    assert failed["status"] == "failed"
    assert "decode" in failed["error"]

    r = upload(client, media["undecodable"])  # wait=true: the failure is the answer
    assert_error(r, 422, "unreadable_media")


def listed_while_it_runs(
    client: httpx.Client, name: str, upload: Future[httpx.Response]
) -> dict[str, Any] | None:
    """The item uploaded under `name`, as the listing shows it while its upload runs;
    None when the upload ended first."""
    while not upload.done():
        listed = client.get("/v1/items", params={"limit": 5}).json()["items"]
        found = next((i for i in listed if i["filename"] == name), None)
        if found is not None:
            return found
        time.sleep(0.02)
    return None


def test_an_upload_deleted_while_it_is_processed_says_so(
    client: httpx.Client, tmp_path: Path
) -> None:
    """wait=true, and the item is deleted before it is ready: the upload answers 404
    saying so (a DELETE before decoding began answered 422, a file that does not exist)."""
    words = " ".join(["the lantern swings above the quiet harbour at night"] * 5)
    for attempt in range(3):  # speech recognition takes seconds; a fast machine may win
        speech = make_speech(tmp_path / f"long-{attempt}.wav", f"{attempt} {words}")
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, client, speech)
            seen = listed_while_it_runs(client, speech.name, answer)
            if seen is not None and seen["status"] == "processing":
                assert client.delete(f"/v1/items/{seen['id']}").status_code == 204
            r = answer.result()
        if r.status_code != 201:
            break
    assert_error(r, 404, "not_found")
    assert "deleted while it was processed" in r.json()["error"]["message"]
    assert seen is not None and seen["id"] in r.json()["error"]["message"]
    assert client.get(f"/v1/items/{seen['id']}").status_code == 404


def gauge(client: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.M)
    assert found is not None, name
    return float(found.group(1))


def test_a_second_upload_waiting_on_an_item_deleted_meanwhile_does_not_bring_it_back(
    client: httpx.Client, tmp_path: Path
) -> None:
    """The second upload of bytes being processed waits on that item; a user's DELETE
    of it answered the first upload 404, and the second made the item again (201)."""
    words = " ".join(["a kettle whistles in the small kitchen by the window"] * 5)
    for attempt in range(3):  # speech recognition takes seconds; a fast machine may win
        speech = make_speech(tmp_path / f"twice-{attempt}.wav", f"{attempt} {words}")
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(upload, client, speech)
            seen = listed_while_it_runs(client, speech.name, first)
            second = pool.submit(upload, client, speech)
            while gauge(client, "mmv_uploads_waiting_on_same_bytes") < 1 and not first.done():
                time.sleep(0.02)  # until the second waits on the first one's item
            if seen is not None and not first.done():
                assert client.delete(f"/v1/items/{seen['id']}").status_code == 204
            answers = [first.result(), second.result()]
        if 201 not in [r.status_code for r in answers]:
            break
        for r in answers:  # processed before the DELETE: tidied, and again with new bytes
            if r.status_code == 201:
                client.delete(f"/v1/items/{r.json()['id']}")
    for r in answers:
        assert_error(r, 404, "not_found")
        assert "deleted while it was processed" in r.json()["error"]["message"]
    listed = client.get("/v1/items", params={"limit": 20}).json()["items"]
    assert speech.name not in [i["filename"] for i in listed]  # not made again


def test_the_same_bytes_twice_at_once_are_never_acknowledged_then_lost(
    server: Server, media: dict[str, Path], tmp_path: Path
) -> None:
    # The second upload of bytes still processing was answered 200 with the first one's
    # row; when the first then failed it deleted that row: an acknowledged upload gone.
    bad = make_undecodable(tmp_path / "bad.mp4", media["silent"])  # new bytes, fails late
    bad.write_bytes(bad.read_bytes() + b"\0" * 7)

    async def twice(wait: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as ac:
            return await asyncio.gather(*(
                ac.post("/v1/items", params={"wait": wait},
                        files={"file": ("bad.mp4", bad.read_bytes(), "video/mp4")})
                for _ in range(2)
            ))  # fmt: skip

    answers = asyncio.run(twice("true"))
    for r in answers:  # each waited for the outcome; the failure is the answer for both
        assert_error(r, 422, "unreadable_media")
    bad.write_bytes(bad.read_bytes() + b"\0")  # other new bytes
    answers = asyncio.run(twice("false"))
    for r in answers:
        assert r.status_code in (200, 202), r.text
        item = poll(httpx.Client(base_url=server.url, timeout=60), r.json()["id"])
        assert item["status"] == "failed" and "decode" in item["error"]  # told, not lost


def test_a_failed_upload_sent_again_is_processed_again_as_the_same_item(
    client: httpx.Client, media: dict[str, Path], tmp_path: Path
) -> None:
    """An item that failed was deleted when its bytes came again, and made anew: the id
    answered to the first upload (202) was gone, its poll a 404."""
    bad = make_undecodable(tmp_path / "again.mp4", media["silent"])
    bad.write_bytes(bad.read_bytes() + b"\0" * 11)  # bytes of its own
    first = upload(client, bad, wait=False)
    assert first.status_code == 202, first.text
    assert poll(client, first.json()["id"])["status"] == "failed"
    again = upload(client, bad, wait=False)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    assert poll(client, first.json()["id"])["status"] == "failed"  # processed, failed again
    assert_error(upload(client, bad), 422, "unreadable_media")  # wait=true: its failure
    assert client.get(f"/v1/items/{first.json()['id']}").json()["status"] == "failed"


def test_the_bytes_of_an_item_whose_file_is_gone_put_it_back(
    client: httpx.Client, server: Server, tmp_path: Path
) -> None:
    """An item's media file deleted by hand (or a volume restored without it): its bytes
    uploaded again were answered 200 and thrown away, and its media stayed a 404."""
    clip = make_clip(tmp_path / "restored.mp4", "smptebars", 733)
    first = upload(client, clip)
    assert first.status_code == 201, first.text
    stored = server.data_dir / "media" / hashlib.sha256(clip.read_bytes()).hexdigest()
    stored.unlink()
    assert_error(client.get(first.json()["media_url"]), 404, "not_found")
    again = upload(client, clip)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    media = client.get(first.json()["media_url"])
    assert media.status_code == 200 and media.content == clip.read_bytes()


def poll(client: httpx.Client, item_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = client.get(f"/v1/items/{item_id}").json()
        if item["status"] != "processing":
            return item
        time.sleep(0.2)
    raise AssertionError(f"item {item_id} still processing after {timeout_s} s")


# -- items -----------------------------------------------------------------------------
def test_list_pages_with_a_cursor_stable_under_inserts(
    client: httpx.Client, items: dict[str, dict[str, Any]]
) -> None:
    before = client.get("/v1/items", params={"limit": 1000}).json()
    assert before["next_cursor"] is None
    all_ids = [i["id"] for i in before["items"]]
    seen: list[str] = []
    page = client.get("/v1/items", params={"limit": 2}).json()
    inserted = False
    while True:
        seen += [i["id"] for i in page["items"]]
        if not inserted:  # an insert between pages must not shift the listing
            client.post("/v1/items/text", json={"text": "inserted while paging"})
            inserted = True
        if page["next_cursor"] is None:
            break
        page = client.get("/v1/items", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert seen == all_ids  # newest first, nothing repeated, nothing skipped

    videos = client.get("/v1/items", params={"kind": "video"}).json()["items"]
    assert videos and {i["kind"] for i in videos} == {"video"}
    assert_error(client.get("/v1/items", params={"cursor": "nonsense!"}), 422, "invalid_request")
    assert_error(client.get("/v1/items", params={"limit": 0}), 422, "invalid_request")
    assert_error(client.get("/v1/items", params={"kind": "smell"}), 422, "invalid_request")


def test_get_item_and_unknown_item(client: httpx.Client, items: dict[str, dict[str, Any]]) -> None:
    r = client.get(f"/v1/items/{items['tone']['id']}")
    assert r.status_code == 200 and r.json() == items["tone"]
    assert_error(client.get("/v1/items/does-not-exist"), 404, "not_found")


def test_media_download_supports_range(
    client: httpx.Client, media: dict[str, Path], items: dict[str, dict[str, Any]]
) -> None:
    original = media["clip"].read_bytes()
    url = items["clip"]["media_url"]
    full = client.get(url)
    assert full.status_code == 200 and full.content == original
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    head = client.head(url)  # the size and type, no bytes (405 until 2026-12-07)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(original))
    assert head.headers["content-type"] == "video/mp4"
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == original[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(original)}"
    tail = client.get(url, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == original[-50:]
    err = assert_error(
        client.get(url, headers={"Range": f"bytes={len(original) + 10}-"}),
        416,
        "range_not_satisfiable",
    )
    assert err["detail"]["size"] == len(original)
    for malformed in ("bytes=5-abc", "bytes=abc-5", "bytes=-"):  # all in the error shape
        assert_error(client.get(url, headers={"Range": malformed}), 416, "range_not_satisfiable")
    assert_error(client.get(f"/v1/items/{items['text']['id']}/media"), 404, "not_found")
    # Anyone's bytes: never sniffed into a page, shown inline under a name the server
    # chose; and not cut into hundreds of parts in one answer.
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["cache-control"] == "private"  # never kept by a shared cache
    # Saved by a browser under the sender's name (filename*), by its id where that is
    # not understood.
    assert full.headers["content-disposition"] == (
        f"inline; filename=\"{items['clip']['id']}.mp4\"; filename*=UTF-8''clip.mp4"
    )
    some = client.get(url, headers={"Range": "bytes=0-1,10-11,20-21"})
    assert some.status_code == 206 and "multipart/byteranges" in some.headers["content-type"]
    many = ",".join(f"{i}-{i}" for i in range(0, 400, 2))
    err = assert_error(client.get(url, headers={"Range": f"bytes={many}"}), 416,
                       "range_not_satisfiable")  # fmt: skip
    assert "at most 8 ranges" in err["message"]


# -- search ----------------------------------------------------------------------------
def test_text_search_finds_a_text_item_by_its_own_text(
    client: httpx.Client, items: dict[str, dict[str, Any]]
) -> None:
    res = search(client, {"text": "a red ball bounces"}, "text")
    assert res["space"] == "vat" and res["model_version"]
    assert res["results"][0]["item"]["id"] == items["text"]["id"]
    assert res["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)
    get = client.get("/v1/search", params={"q": "a red ball bounces", "target": "text"}).json()
    assert result_ids(get) == result_ids(res)


def test_video_to_audio_and_audio_to_video(
    client: httpx.Client, items: dict[str, dict[str, Any]]
) -> None:
    clip = items["clip"]["id"]
    res = search(client, {"item_id": clip}, "audio")
    assert res["space"] == "va"  # video/audio among themselves: the fine space
    found = result_ids(res)
    assert clip not in found  # a query item is not its own result
    assert {items["tone"]["id"], items["noise"]["id"], items["clip2"]["id"]} <= set(found)
    assert all("audio" in r["item"]["modalities"] for r in res["results"])

    res = search(client, {"item_id": items["tone"]["id"]}, "video")
    assert res["space"] == "va"
    assert {r["item"]["kind"] for r in res["results"]} == {"video"}
    assert {clip, items["clip2"]["id"], items["silent"]["id"]} <= set(result_ids(res))

    res = search(client, {"item_id": clip}, "text")
    assert res["space"] == "vat"  # text on either side: the coarse space
    assert items["text"]["id"] in result_ids(res)
    res = search(client, {"item_id": items["picture"]["id"]}, "video")
    assert res["space"] == "va"


def test_search_by_raw_vector_returns_the_exact_item_first(
    client: httpx.Client, random_model: Path, items: dict[str, dict[str, Any]]
) -> None:
    from model import load_model

    vector = load_model(random_model).embed_text(["a red ball bounces"])["vat"][0].tolist()
    res = search(client, {"vector": vector, "space": "vat"}, "text", k=3)
    assert res["results"][0]["item"]["id"] == items["text"]["id"]
    assert res["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert_error(
        client.post("/v1/search", json={"query": {"vector": vector[:5], "space": "vat"},
                                        "target": "text"}),
        422, "invalid_request",
    )  # fmt: skip
    assert_error(
        client.post("/v1/search", json={"query": {"vector": vector, "space": "va"},
                                        "target": "text"}),
        422, "unsupported_pair",
    )  # fmt: skip


def test_search_by_uploaded_example(
    client: httpx.Client, media: dict[str, Path], items: dict[str, dict[str, Any]]
) -> None:
    for name, target in [("clip", "video"), ("tone", "audio"), ("picture", "image")]:
        r = client.post(
            "/v1/search/upload",
            data={"target": target, "k": "3"},
            files={"file": (media[name].name, media[name].read_bytes())},
        )
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert top["item"]["id"] == items[name]["id"]
        assert top["score"] == pytest.approx(1.0, abs=1e-3)
    r = client.post("/v1/search/upload", data={"target": "smell"},
                    files={"file": ("x.wav", media["tone"].read_bytes())})  # fmt: skip
    assert_error(r, 422, "invalid_request")
    # An example that is not media is named as it was sent.
    r = client.post("/v1/search/upload", data={"target": "audio"},
                    files={"file": ("my sample.mp3", b"no sound in here" * 64)})  # fmt: skip
    assert assert_error(r, 422, "unreadable_media")["message"].startswith(
        "'my sample.mp3' is not a media file ffmpeg can read"
    )


def test_the_container_health_check_passes_once_the_model_serves(server: Server) -> None:
    from service.healthcheck import check

    healthy, why = check(int(server.url.rsplit(":", 1)[1]))
    assert healthy and "ready, model " in why, why


def test_search_by_query_string_or_example_takes_a_filter_too(
    client: httpx.Client, media: dict[str, Path], items: dict[str, dict[str, Any]]
) -> None:
    """Both ignored a `filter`: every item answered, as if none was given."""
    red = {items[n]["id"] for n in ("clip", "silent")}  # the red videos
    r = client.get("/v1/search", params={"q": "the clip", "target": "video", "k": 10,
                                         "filter": json.dumps({"color": "red"})})  # fmt: skip
    assert r.status_code == 200, r.text
    assert {x["item"]["id"] for x in r.json()["results"]} == red
    example = {"file": (media["clip2"].name, media["clip2"].read_bytes())}
    r = client.post("/v1/search/upload", files=example,
                    data={"target": "video", "filter": json.dumps({"color": "red"})})  # fmt: skip
    assert r.status_code == 200, r.text
    assert {x["item"]["id"] for x in r.json()["results"]} == red  # not clip2 itself (blue)
    for bad in ("[1]", "{nope"):
        assert_error(
            client.get("/v1/search", params={"q": "x", "target": "video", "filter": bad}),
            422,
            "invalid_request",
        )
        r = client.post("/v1/search/upload", files=example, data={"target": "video", "filter": bad})
        assert_error(r, 422, "invalid_request")


def test_metadata_filter_matches_exactly(
    client: httpx.Client, items: dict[str, dict[str, Any]]
) -> None:
    red = result_ids(search(client, {"item_id": items["tone"]["id"]}, "video",
                            filter={"color": "red"}))  # fmt: skip
    assert set(red) == {items["clip"]["id"], items["silent"]["id"]}
    one = result_ids(search(client, {"item_id": items["tone"]["id"]}, "video",
                            filter={"color": "red", "n": 1}))  # fmt: skip
    assert one == [items["clip"]["id"]]  # 1 is not "1"
    none = search(client, {"text": "anything"}, "video", filter={"color": "purple"})
    assert none["results"] == []


def test_a_filter_of_many_keys_is_answered_and_spoils_no_other_query(
    client: httpx.Client, server: Server, items: dict[str, dict[str, Any]]
) -> None:
    # SQLite refuses a compound SELECT of more than 500 parts; a filter was one part per
    # key, and the failure answered 500 to every query of the same search batch.
    wide = {f"k{i}": i for i in range(600)}

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as ac:
            return await asyncio.gather(
                ac.post("/v1/search", json={"query": {"text": "a"}, "target": "video",
                                            "filter": wide}),
                *(ac.get("/v1/search", params={"q": f"query {i}", "target": "audio"})
                  for i in range(8)),
            )  # fmt: skip

    first, *others = asyncio.run(together())
    assert [r.status_code for r in others] == [200] * 8
    assert first.status_code == 200, first.text
    assert first.json()["results"] == []  # no item has those 600 keys
    two = {"color": "red", **{f"k{i}": i for i in range(599)}}
    assert search(client, {"text": "a"}, "video", filter=two)["results"] == []
    red = search(client, {"item_id": items["tone"]["id"]}, "video", filter={"color": "red"})
    assert set(result_ids(red)) == {items["clip"]["id"], items["silent"]["id"]}


def test_get_search_fast_path_answers_as_the_declared_route(
    client: httpx.Client, server: Server, items: dict[str, dict[str, Any]]
) -> None:
    """GET /v1/search is answered below the framework (service/fast_path.py) unless the
    request carries an Origin header, which sends it through FastAPI (for CORS): both
    must give the same answers, the same errors, request ids, metrics and access lines."""
    framework = {"Origin": "http://127.0.0.1:9"}  # CORS is off: no header comes back
    params = {"q": "a red ball bounces", "target": "audio", "k": "3"}
    fast, slow = (
        client.get("/v1/search", params=params),
        client.get("/v1/search", params=params, headers=framework),
    )
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert len(fast.headers["x-request-id"]) == len(slow.headers["x-request-id"]) == 16
    a, b = fast.json(), slow.json()
    assert result_ids(a) == result_ids(b) and len(a["results"]) == 3
    assert {k: v for k, v in a.items() if k != "took_ms"} == {
        k: v for k, v in b.items() if k != "took_ms"
    }
    # Percent-escapes, '+' and repeated parameters read as the framework reads them.
    odd = {"q": 'caf\u00e9 + 50% "quoted"', "target": "audio", "k": ["5", "2"]}
    assert result_ids(client.get("/v1/search", params=odd).json()) == result_ids(
        client.get("/v1/search", params=odd, headers=framework).json()
    )
    assert len(client.get("/v1/search", params=odd).json()["results"]) == 2  # the last k

    for bad in (
        {"target": "audio"},
        {"q": "", "target": "audio"},
        {"q": "x", "target": "smell"},
        {"q": "x", "target": "audio", "k": "0"},
        {"q": "x", "target": "audio", "k": "ten"},
    ):
        e1 = assert_error(client.get("/v1/search", params=bad), 422, "invalid_request")
        e2 = assert_error(
            client.get("/v1/search", params=bad, headers=framework), 422, "invalid_request"
        )
        assert e1 == e2, bad

    rid = "fast-path-trace-1"
    r = client.get("/v1/search", params=params, headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    deadline = time.monotonic() + 10
    while rid not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log().splitlines() if rid in line]
    assert lines and lines[0]["logger"] == "service.access", lines
    assert lines[0]["route"] == "/v1/search" and lines[0]["status"] == 200
    assert lines[0]["msg"] == "GET /v1/search 200" and lines[0]["ms"] >= 0
    metrics = client.get("/metrics").text
    assert (
        'mmv_http_request_duration_seconds_count{method="GET",route="/v1/search",status="200"}'
        in metrics
    )
    assert 'method="GET",route="/v1/search",status="422"' in metrics


def test_search_answers_have_the_schemas_fields(
    client: httpx.Client, media: dict[str, Path], items: dict[str, dict[str, Any]]
) -> None:
    """Every search route writes its answer by hand (fast); it must be the schema's."""
    from service.schemas import Item, SearchResult, SearchResults

    answers = [
        client.post("/v1/search", json={"query": {"text": "a red ball"}, "target": "video"}),
        client.post("/v1/search", json={"query": {"item_id": items["clip"]["id"]},
                                        "target": "audio", "filter": {"color": "blue"}}),
        client.get("/v1/search", params={"q": "a red ball", "target": "text"}),
        client.get("/v1/search", params={"q": "a red ball", "target": "text"},
                   headers={"Origin": "http://127.0.0.1:9"}),  # the framework route
        client.post("/v1/search/upload", data={"target": "image"},
                    files={"file": ("p.png", media["picture"].read_bytes())}),
    ]  # fmt: skip
    for r in answers:
        assert r.status_code == 200, r.text
        SearchResults.model_validate_json(r.text)
        body = r.json()
        assert set(body) == set(SearchResults.model_fields)
        assert body["results"], r.request.url
        for result in body["results"]:
            assert set(result) == set(SearchResult.model_fields)
            assert set(result["item"]) == set(Item.model_fields)


def test_k_is_bounded(client: httpx.Client) -> None:
    for k in (0, 1001):
        r = client.post("/v1/search", json={"query": {"text": "x"}, "target": "audio", "k": k})
        assert_error(r, 422, "invalid_request")
    assert search(client, {"text": "x"}, "audio", k=1000)["results"]


def test_concurrent_queries_share_batches(client: httpx.Client, server: Server) -> None:
    def batch_stats() -> tuple[float, float]:
        text = client.get("/metrics").text
        count = float(re.search(r"^mmv_search_batch_size_count (\S+)$", text, re.M)[1])
        total = float(re.search(r"^mmv_search_batch_size_sum (\S+)$", text, re.M)[1])
        return count, total

    before = batch_stats()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as ac:
            responses = await asyncio.gather(
                *(ac.get("/v1/search", params={"q": f"query {i}", "target": "audio"})
                  for i in range(48))
            )  # fmt: skip
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 48
    after = batch_stats()
    batches, queries = after[0] - before[0], after[1] - before[1]
    assert queries == 48
    assert batches < queries  # some queries shared an encoder call and a FAISS search


# -- delete ----------------------------------------------------------------------------
def test_delete_removes_the_item_from_search_storage_and_disk(
    client: httpx.Client, server: Server, tmp_path: Path
) -> None:
    text = client.post("/v1/items/text", json={"text": "delete me soon"}).json()
    assert result_ids(search(client, {"text": "delete me soon"}, "text"))[0] == text["id"]
    assert client.delete(f"/v1/items/{text['id']}").status_code == 204
    assert text["id"] not in result_ids(search(client, {"text": "delete me soon"}, "text"))
    assert_error(client.get(f"/v1/items/{text['id']}"), 404, "not_found")
    assert_error(client.delete(f"/v1/items/{text['id']}"), 404, "not_found")

    before = {p.name for p in (server.data_dir / "media").iterdir()}
    clip = upload(client, make_clip(tmp_path / "doomed.mp4", "rgbtestsrc", 300))
    assert clip.status_code == 201, clip.text
    item = clip.json()
    stored = list((server.data_dir / "media").iterdir())
    (digest,) = {p.name for p in stored} - before

    def cached() -> list[Path]:  # the decode cache's entries of the file (any host folder)
        return list(server.data_dir.glob(f"**/cache/*/{digest[:2]}/{digest[:32]}-*"))

    assert cached(), "ingestion keeps the windows it decoded"
    assert client.delete(f"/v1/items/{item['id']}").status_code == 204
    assert_error(client.get(item["media_url"]), 404, "not_found")
    assert len(list((server.data_dir / "media").iterdir())) == len(stored) - 1
    assert cached() == []  # its decoded frames and sound do not outlive it
    for target in ("audio", "video"):
        hits = result_ids(search(client, {"text": "anything"}, target, k=1000))
        assert item["id"] not in hits


def test_an_insert_that_fails_leaves_no_media_file(
    client: httpx.Client, server: Server, e2e_database: str, tmp_path: Path
) -> None:
    """The media file goes in place inside the transaction that creates its row; when
    that insert fails (here a trigger refuses it: any database error at that point), the
    file goes too, at once, not at the next start-up. SQLite only: the trigger is SQLite
    SQL, and the path is the same code on both engines."""
    import sqlite3

    if e2e_database != "sqlite":
        pytest.skip("the refusing trigger is SQLite SQL; the code path is engine-independent")
    before = sorted(p.name for p in (server.data_dir / "media").iterdir())
    db = sqlite3.connect(server.data_dir / "db.sqlite", timeout=30)
    try:
        db.execute(
            "CREATE TRIGGER refuse_uploads BEFORE INSERT ON items WHEN NEW.kind = 'video' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        db.commit()
        clip = make_clip(tmp_path / "refused.mp4", "rgbtestsrc", 350)
        files = {"file": (clip.name, clip.read_bytes(), "application/octet-stream")}
        refused = httpx.Request("POST", f"{server.url}/v1/items?wait=true", files=files)
        # On one kept-alive connection: the 500 in the contract's shape, then the same
        # connection answers the next request (before, uvicorn closed it after every
        # 500, and a client still sending its upload could read a reset instead).
        host, port = server.url.removeprefix("http://").split(":")
        logged_before = server.log().count("unhandled error on POST /v1/items")
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            status, body = exchange(conn, refused)
            assert status == 500, body
            assert json.loads(body)["error"]["code"] == "internal_error"
            status, body = exchange(conn, httpx.Request("GET", f"{server.url}/healthz"))
            assert status == 200, body
        # Its traceback logged once, by the app's handler; uvicorn did not see it.
        assert server.log().count("unhandled error on POST /v1/items") == logged_before + 1
        assert "Exception in ASGI application" not in server.log()
    finally:
        db.execute("DROP TRIGGER IF EXISTS refuse_uploads")
        db.commit()
        db.close()
    assert sorted(p.name for p in (server.data_dir / "media").iterdir()) == before
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200


# -- errors and limits -----------------------------------------------------------------
def test_upload_limits_answer_413(
    client: httpx.Client, media: dict[str, Path], tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (3 * 1024 * 1024))  # over MMV_MAX_UPLOAD_MB=2
    assert_error(upload(client, big), 413, "too_large")
    err = assert_error(upload(client, media["long"]), 413, "too_long")
    assert err["detail"]["max_duration_s"] == 20
    err = assert_error(upload(client, media["big_picture"]), 413, "too_large")
    assert err["detail"]["max_pixels"] == 640 * 480


def test_bodies_over_the_cap_answer_413_whether_or_not_they_say_their_length(
    client: httpx.Client,
) -> None:
    json_header = {"content-type": "application/json"}
    huge = b'{"query": {"text": "' + b"a" * (5 * 1024 * 1024) + b'"}, "target": "audio"}'
    err = assert_error(
        client.post("/v1/search", content=huge, headers=json_header), 413, "too_large"
    )
    assert err["detail"]["max_bytes"] == 4 * 1024 * 1024

    def chunks(body: bytes) -> Iterator[bytes]:  # no Content-Length: chunked encoding
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    assert_error(
        client.post("/v1/search", content=chunks(huge), headers=json_header), 413, "too_large"
    )
    # An upload's many small fields, streamed: the upload's own cap counts what arrives.
    boundary = "capcapcap"
    field = b"x" * (900 * 1024)
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'.encode()
            + field
            + b"\r\n"
            for i in range(14)
        )
        + f"--{boundary}--\r\n".encode()
    )
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert_error(
        client.post("/v1/items", content=chunks(body), headers=multipart), 413, "too_large"
    )
    # A JSON route sent a multipart Content-Type is capped all the same: the route decides
    # what is an upload, not the client (such bodies were read whole, however large).
    for route in ("/v1/search", "/v1/items/text", "/v1/training/jobs"):
        for sent in (body, chunks(body)):
            assert_error(client.post(route, content=sent, headers=multipart), 413, "too_large")
    # A query text longer than a text item may be: refused before it is tokenised.
    long_query = {"query": {"text": "a " * 6000}, "target": "audio"}
    err = assert_error(client.post("/v1/search", json=long_query), 413, "too_large")
    assert err["detail"]["max_chars"] == 10_000
    assert client.get("/healthz").status_code == 200


def test_metadata_cannot_hold_nan_and_deep_nesting_is_bad_input(
    client: httpx.Client, media: dict[str, Path]
) -> None:
    # JSON has no NaN: stored, it would break every answer that shows the item.
    assert_error(upload(client, media["tone"], metadata='{"x": NaN}'), 422, "invalid_request")
    assert_error(upload(client, media["tone"], metadata='{"x": -Infinity}'), 422, "invalid_request")
    raw = b'{"text": "nan meta", "metadata": {"x": NaN}}'
    headers = {"content-type": "application/json"}
    assert_error(
        client.post("/v1/items/text", content=raw, headers=headers), 422, "invalid_request"
    )
    raw = b'{"query": {"vector": [Infinity], "space": "va"}, "target": "audio"}'
    assert_error(client.post("/v1/search", content=raw, headers=headers), 422, "invalid_request")
    deep = "[" * 100_000 + "]" * 100_000
    assert_error(upload(client, media["tone"], metadata=deep), 422, "invalid_request")
    listed = client.get("/v1/items", params={"limit": 100})
    assert listed.status_code == 200 and "nan meta" not in listed.text


def test_every_error_has_the_contract_shape(client: httpx.Client, media: dict[str, Path]) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.put("/v1/items"), 405, "method_not_allowed")
    json_header = {"content-type": "application/json"}
    assert_error(
        client.post("/v1/search", content=b"{not json", headers=json_header),
        422,
        "invalid_request",
    )
    assert_error(client.post("/v1/search", json={"query": {"text": "x"}}), 422, "invalid_request")
    assert_error(
        client.post("/v1/search", json={"query": {"colour": "x"}, "target": "audio"}),
        422, "invalid_request",
    )  # fmt: skip
    assert_error(
        client.post("/v1/search", json={"query": {"item_id": "nope"}, "target": "audio"}),
        404, "not_found",
    )  # fmt: skip
    assert_error(client.get("/v1/search", params={"target": "audio"}), 422, "invalid_request")
    assert_error(client.post("/v1/items/text", json={"text": ""}), 422, "invalid_request")
    assert_error(
        client.post("/v1/items/text", json={"text": "x", "metadata": {"a": {"b": 1}}}),
        422, "invalid_request",
    )  # fmt: skip
    assert_error(client.post("/v1/items", data={"transcript": "hi"}), 415, "unsupported_media")
    assert_error(
        client.post("/v1/items", files={"transcript": (None, "hi")}), 422, "invalid_request"
    )
    assert_error(
        client.post("/v1/items", content=b"raw", headers={"content-type": "video/mp4"}),
        415, "unsupported_media",
    )  # fmt: skip
    assert_error(upload(client, media["tone"], metadata="{not json"), 422, "invalid_request")
    assert_error(upload(client, media["tone"], metadata="[1, 2]"), 422, "invalid_request")
    assert_error(
        client.post("/v1/items", files={"file": ("x", b"", "video/mp4")}), 422, "invalid_request"
    )


def test_training_and_model_routes(client: httpx.Client) -> None:
    assert client.get("/v1/training/jobs").json() == {"jobs": [], "workers": []}
    # No worker runs beside this server: a job waits in the queue until cancelled.
    queued = client.post("/v1/training/jobs", json={})
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert job["status"] == "queued" and job["progress"]["step"] == 0
    assert job["request"] == {"init": "active", "steps": None, "activate": "auto"}
    assert RFC3339.match(job["created_at"]) and job["model_version"] is None
    assert client.get(f"/v1/training/jobs/{job['id']}").json()["status"] == "queued"
    assert [j["id"] for j in client.get("/v1/training/jobs").json()["jobs"]] == [job["id"]]
    cancelled = client.post(f"/v1/training/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_error(client.post(f"/v1/training/jobs/{job['id']}/cancel"), 409, "conflict")
    # No body at all is the defaults: every field has one (it was 422 "Field required").
    bare = client.post("/v1/training/jobs")
    assert bare.status_code == 202, bare.text
    assert bare.json()["request"] == {"init": "active", "steps": None, "activate": "auto"}
    assert client.post(f"/v1/training/jobs/{bare.json()['id']}/cancel").status_code == 200
    broken = client.post(
        "/v1/training/jobs", content=b'{"steps": 5', headers={"content-type": "application/json"}
    )  # said "1: JSON decode error" (the character position, as if a field's name)
    err = assert_error(broken, 422, "invalid_request")
    assert err["message"].startswith("the body is not valid JSON (at character")
    bad_steps = ({"steps": 0}, {"steps": 10_000_001}, {"steps": 2**64})
    for bad in ({"init": "nope"}, *bad_steps, {"activate": "maybe"}, {"extra": 1}):
        assert_error(client.post("/v1/training/jobs", json=bad), 422, "invalid_request")
    assert_error(client.get("/v1/training/jobs/nope"), 404, "not_found")
    assert_error(client.post("/v1/training/jobs/nope/cancel"), 404, "not_found")
    models = client.get("/v1/models").json()["models"]
    assert len(models) == 1 and models[0]["active"] is True and models[0]["state"] == "active"
    assert models[0]["config"]["name"] == "tiny" and models[0]["parent"] is None
    assert RFC3339.match(models[0]["created_at"])
    again = client.post(f"/v1/models/{models[0]['version']}/activate")
    assert again.status_code == 200 and again.json()["version"] == models[0]["version"]
    assert_error(client.post("/v1/models/nope/activate"), 404, "not_found")
    assert_error(client.delete(f"/v1/models/{models[0]['version']}"), 409, "conflict")
    assert_error(client.delete("/v1/models/nope"), 404, "not_found")


# -- operations ------------------------------------------------------------------------
def test_operations_endpoints(client: httpx.Client, items: dict[str, dict[str, Any]]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["device"] == "cpu" and body["reindex"] is None and body["model_version"]
    assert body["indexes"]["vat/audio"] >= 3 and body["indexes"]["va/video"] >= 3

    search(client, {"text": "warm"}, "audio")
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for needle in (
        'mmv_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/search"',
        'mmv_ingest_stage_seconds_count{stage="decode"}',
        'mmv_ingest_stage_seconds_count{stage="embed"}',
        'mmv_ingest_stage_seconds_count{stage="index"}',
        'mmv_search_stage_seconds_count{stage="embed"}',
        'mmv_search_stage_seconds_count{stage="index"}',
        'mmv_index_vectors{index="vat/audio"}',
        f'mmv_model_info{{version="{body["model_version"]}"}} 1.0',
        'mmv_items{status="ready"}',
    ):
        assert needle in text, needle

    r = client.get("/healthz", headers={"X-Request-ID": "trace-me-123"})
    assert r.headers["x-request-id"] == "trace-me-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 16

    spec = client.get("/openapi.json").json()
    for path, method in [
        ("/v1/items", "post"), ("/v1/items", "get"), ("/v1/items/text", "post"),
        ("/v1/items/{item_id}", "get"), ("/v1/items/{item_id}", "delete"),
        ("/v1/items/{item_id}/media", "get"), ("/v1/search", "post"), ("/v1/search", "get"),
        ("/v1/search/upload", "post"), ("/v1/training/jobs", "post"),
        ("/v1/training/jobs", "get"), ("/v1/training/jobs/{job_id}", "get"),
        ("/v1/training/jobs/{job_id}/cancel", "post"), ("/v1/models", "get"),
        ("/v1/models/{version}/activate", "post"), ("/v1/models/{version}", "delete"),
        ("/healthz", "get"), ("/readyz", "get"),
        ("/metrics", "get"),
    ]:  # fmt: skip
        assert method in spec["paths"][path], (path, method)
    upload_body = spec["paths"]["/v1/items"]["post"]["requestBody"]["content"]
    assert "file" in upload_body["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    # The page only at /, with its policy: /static/index.html had none, so another
    # site could frame it. Its scripts stay where the page loads them from.
    assert_error(client.get("/static/index.html"), 404, "not_found")
    script = client.get("/static/app.js")
    assert script.status_code == 200 and script.headers["x-content-type-options"] == "nosniff"
    # CORS is off unless configured: no allow-origin header for a foreign page.
    r = client.get("/healthz", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in r.headers
