"""`service.bulk_upload` against answers a real server gives only in rare moments (still
loading its model; the same bytes still processed after its wait), from a scripted HTTP
server on loopback; and a report left with a cut-off line. The whole import against a
real server is tests/e2e/test_e2e_bulk_upload.py."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import service.bulk_upload as bulk
from service.bulk_upload import Outcome, media_files, open_report, read_report


def not_ready(message: str) -> dict[str, Any]:
    return {"error": {"code": "not_ready", "message": message}}


STARTING = not_ready("starting: the model and its indexes are loading")  # /readyz's words
NO_MODEL = not_ready("no model is loaded (see the server log)")


class Script:
    """What the server answers: /readyz from a list (the last one repeats), every upload
    the same (`upload`), or from a list (`uploads_answered`, the last one repeats)."""

    def __init__(self, ready: list[tuple[int, dict[str, Any]]], upload: tuple[int, dict]) -> None:
        self.ready, self.upload = ready, upload
        self.uploads_answered: list[tuple[int, dict[str, Any] | str]] = []
        self.ready_asked = self.uploads = self.health_asked = 0
        self.healthy_for: int | None = None  # /healthz answers 200 this many times (None: ever)
        self.deleted: list[str] = []  # ids of DELETE /v1/items/{id}, answered 204


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script([(200, {})], (201, {"id": "item-1", "status": "ready"}))

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any] | str) -> None:
            html = isinstance(body, str)  # a proxy's own page
            data = body.encode() if html else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if html else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/readyz":
                step = min(script.ready_asked, len(script.ready) - 1)
                script.ready_asked += 1
                self._answer(*script.ready[step])
            else:
                script.health_asked += 1
                up = script.healthy_for is None or script.health_asked <= script.healthy_for
                self._answer(*((200, {"status": "ok"}) if up else (502, "<html>502</html>")))

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            script.uploads += 1
            answers = script.uploads_answered
            self._answer(*(answers[min(script.uploads, len(answers)) - 1] if answers
                           else script.upload))  # fmt: skip

        def do_DELETE(self) -> None:
            script.deleted.append(self.path.rsplit("/", 1)[-1])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    root.mkdir()
    (root / "talk.wav").write_bytes(b"RIFF" + bytes(64))
    return root


def test_a_server_still_loading_its_model_is_waited_for(
    scripted: tuple[str, Script], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its uploads were answered 503 until each file gave up (150 s) and was refused."""
    url, script = scripted
    monkeypatch.setattr(bulk, "READY_POLL_S", 0.01)
    script.ready = [(503, STARTING), (503, STARTING), (200, {"model_version": "v1"})]
    (outcome,) = bulk.run(folder, url, progress=False)
    assert outcome.status == "added" and script.ready_asked == 3 and script.uploads == 1


def test_a_server_without_a_model_stops_the_run_before_any_upload(
    scripted: tuple[str, Script], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, script = scripted
    script.ready = [(503, NO_MODEL)]
    assert bulk.main([str(folder), "--url", url, "--quiet"]) == 2
    assert "no model is loaded" in capsys.readouterr().err
    assert script.uploads == 0


def test_bytes_still_processed_after_the_servers_wait_are_not_taken_as_stored(
    scripted: tuple[str, Script], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same bytes, sent by a killed earlier run, still processed when the server's
    wait ends (200, status processing): recorded as stored, the file was skipped by
    every later run even when that processing failed."""
    url, script = scripted
    script.upload = (200, {"id": "item-1", "status": "processing"})
    report = tmp_path / "report.jsonl"
    args = [str(folder), "--url", url, "--quiet", "--report", str(report)]
    assert bulk.main(args) == 1
    out = capsys.readouterr().out
    assert "1 files: 0 added, 0 already stored, 0 skipped" in out and "1 still processing" in out
    assert read_report(report)["talk.wav"].status == "processing"
    script.upload = (200, {"id": "item-1", "status": "ready"})
    assert bulk.main(args) == 0  # sent again, and stored by now
    assert script.uploads == 2 and read_report(report)["talk.wav"].status == "already"


def test_a_report_line_cut_off_by_a_kill_does_not_swallow_the_next_runs_first(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report.jsonl"
    first = json.dumps(Outcome("a.wav", "added", 1, 1, "item-a").__dict__)
    report.write_text(first + '\n{"path": "b.wav", "sta')  # killed mid-write
    with open_report(report) as written:
        written.write(json.dumps(Outcome("b.wav", "added", 2, 2, "item-b").__dict__) + "\n")
    found = read_report(report)
    assert sorted(found) == ["a.wav", "b.wav"] and found["b.wav"].item_id == "item-b"
    with open_report(report) as written:  # a whole last line is left as it is
        pass
    assert report.read_text().count("\n") == 3


def test_a_proxys_busy_answers_are_waited_out_not_taken_for_refusals(
    scripted: tuple[str, Script], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind HAProxy (compose.postgres.yaml): its 503 while the replicas start (no
    Retry-After, not the API's error) stopped the whole run, and a 504 or a 429 refused
    the file, which the server went on to store."""
    url, script = scripted
    monkeypatch.setattr(bulk, "PROXY_WAIT_S", 0.0)
    monkeypatch.setattr(bulk, "_retry_after", lambda _response: 0.0)
    page = "<html><body><h1>503 Service Unavailable</h1></body></html>"
    script.uploads_answered = [
        (503, page), (502, page.replace("503", "502")), (504, page.replace("503", "504")),
        (429, {"error": {"code": "overloaded", "message": "too many"}}),
        (200, {"id": "item-1", "status": "ready"}),
    ]  # fmt: skip
    (outcome,) = bulk.run(folder, url, progress=False)
    assert outcome.status == "already" and script.uploads == 5


def test_a_proxy_with_nothing_behind_it_stops_the_run(
    scripted: tuple[str, Script], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file waited out 30 of the proxy's 502s (minutes each) and was refused."""
    url, script = scripted
    monkeypatch.setattr(bulk, "PROXY_WAIT_S", 0.0)
    monkeypatch.setattr(bulk, "BUSY_TRIES", 2)
    script.uploads_answered = [(502, "<html>502 Bad Gateway</html>")]
    script.healthy_for = 1  # the run's first look; then the proxy has nothing behind it
    with pytest.raises(bulk.ServerUnreachable, match="502"):
        bulk.run(folder, url, progress=False)


def test_a_changed_file_replaces_only_the_item_this_import_added(
    scripted: tuple[str, Script], tmp_path: Path
) -> None:
    """The item of a file's earlier bytes is deleted once its new bytes are stored: not
    bytes the import found stored (a web upload's), not another folder's under the same
    report, not with --keep-replaced, and not forgotten when an upload's answer broke."""
    url, script = scripted
    library, report = tmp_path / "library", tmp_path / "report.jsonl"
    library.mkdir()

    def write(name: str, data: bytes, root: Path = library) -> None:
        path = root / name
        path.write_bytes(b"RIFF" + data)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))

    def run(answers: list[tuple[int, Any]], root: Path = library, **kw: Any) -> list[str]:
        script.uploads, script.uploads_answered = 0, answers
        outcomes = bulk.run(root, url, jobs=1, report=report, progress=False, **kw)
        return [o.status for o in outcomes]

    write("a.wav", b"1")
    write("b.wav", b"1")
    assert run([(201, {"id": "A1", "status": "ready"}), (200, {"id": "B1", "status": "ready"})]) \
        == ["added", "already"]  # fmt: skip
    write("a.wav", b"2")
    write("b.wav", b"2")
    assert run([(201, {"id": "A2", "status": "ready"}), (201, {"id": "B2", "status": "ready"})]) \
        == ["added", "added"]  # fmt: skip
    assert script.deleted == ["A1"]  # B1 was there before the import: someone else's

    other = tmp_path / "other"
    other.mkdir()
    write("a.wav", b"other", other)  # the same report, another folder, the same name
    assert run([(201, {"id": "X1", "status": "ready"})], other) == ["added"]
    assert script.deleted == ["A1"]

    write("a.wav", b"3")
    assert run([(201, {"id": "A3", "status": "ready"})], replace_changed=False) \
        == ["added", "skipped"]  # fmt: skip
    assert script.deleted == ["A1"]

    write("a.wav", b"4")
    assert run([(200, {"status": "ready"})]) == ["refused", "skipped"]  # an answer without id
    assert script.deleted == ["A1"]
    assert run([(201, {"id": "A4", "status": "ready"})]) == ["added", "skipped"]
    assert script.deleted == ["A1", "A3"]  # remembered across the broken answer
    assert read_report(report, os.path.realpath(library))["a.wav"].replaces == []


def test_no_links_leaves_out_files_and_transcripts_linked_from_elsewhere(tmp_path: Path) -> None:
    """`--no-links` stopped linked folders only: `clip.txt -> ~/.aws/credentials` in a
    folder from someone else became the clip's transcript, readable by any read key."""
    library, outside = tmp_path / "library", tmp_path / "home"
    library.mkdir()
    outside.mkdir()
    (outside / "credentials").write_text("secret")
    (outside / "far.wav").write_bytes(b"RIFF")
    (library / "clip.wav").write_bytes(b"RIFF")
    (library / "clip.txt").symlink_to(outside / "credentials")
    (library / "far.wav").symlink_to(outside / "far.wav")
    (library / "near.wav").symlink_to(library / "clip.wav")  # inside: the same file
    (library / "near.txt").write_text("spoken words")
    found = dict(media_files(library, follow_links=False))
    assert found == {library / "clip.wav": None, library / "near.wav": library / "near.txt"}
    followed = dict(media_files(library))
    assert followed[library / "clip.wav"] == library / "clip.txt"
    assert library / "far.wav" in followed
