"""Moments: a long narrated recording of distinct scenes, searched by its stretches.

Through the real server with the trained default model: a recording of eight generated
scenes one after another (20 s each, 160 s in all) is uploaded beside short distractor
clips. Each scene's description, as text -> video and text -> audio, must find the
recording at the segment that covers that scene. The same files in a server with
segments switched off (MMV_SEGMENT_S=0) rank the recording by its whole-file average
only: the figures printed show both. Then: every segment as a result (group: false), a
moment as the query (it finds the clip the scene was made from), a moment of a short
item, bad moments, and a delete that takes every segment with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_server import Server, running_server, wait_until
from long_recording import Recording, covers, distinct_scenes, make_recording

pytestmark = pytest.mark.slow

N_SCENES, N_DISTRACTORS, SCENE_S, HOP_S = 8, 12, 20.0, 5.0
SOURCE_CLIPS = 2  # the clips of the first scenes are uploaded on their own too


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recording, list, list]:
    from model.corpus import make_corpus, read_manifest

    root = tmp_path_factory.mktemp("moments")
    make_corpus(root / "corpus", 40, seed=20261206, workers=2, progress=False, n_audio=0,
                n_stills=0)  # fmt: skip
    rows = read_manifest(root / "corpus")
    scenes = distinct_scenes(rows, N_SCENES)
    recording = make_recording(root / "corpus", scenes, root / "recording.mp4", SCENE_S)
    used = {r["id"] for r in scenes}
    shown = {(r["attributes"]["objects"][0]["shape"], r["attributes"]["objects"][0]["colour"])
             for r in scenes}  # fmt: skip
    distractors = [
        r for r in rows
        if r["id"] not in used
        and (r["attributes"]["objects"][0]["shape"], r["attributes"]["objects"][0]["colour"])
        not in shown
    ][:N_DISTRACTORS]  # fmt: skip
    return root / "corpus", recording, scenes, distractors


def upload(c: httpx.Client, path: Path, transcript: Path | None) -> dict[str, Any]:
    data = {"transcript": transcript.read_text()} if transcript else {}
    r = c.post("/v1/items", params={"asr": "false"}, data=data,
               files={"file": (path.name, path.read_bytes())})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def load(server: Server, media: tuple, with_sources: bool) -> dict[str, str]:
    corpus, recording, scenes, distractors = media
    ids: dict[str, str] = {}
    with httpx.Client(base_url=server.url, timeout=600.0) as c:
        ids["recording"] = upload(c, recording.path, recording.transcript)["id"]
        extra = scenes[:SOURCE_CLIPS] if with_sources else []
        for row in [*distractors, *extra]:
            transcript = corpus / row["transcript"] if row.get("transcript") else None
            ids[row["id"]] = upload(c, corpus / row["path"], transcript)["id"]
    return ids


@pytest.fixture(scope="module")
def segmented(
    tmp_path_factory: pytest.TempPathFactory, trained_model: Path, media: tuple, e2e_database: str
) -> Iterator[tuple[Server, dict[str, str]]]:
    d = tmp_path_factory.mktemp("moments-on")
    with running_server(d / "data", trained_model, d / "server.log", MMV_WORKERS="2",
                        MMV_SEGMENT_S="10", MMV_SEGMENT_HOP_S=str(HOP_S)) as server:  # fmt: skip
        yield server, load(server, media, with_sources=True)


@pytest.fixture(scope="module")
def whole_only(
    tmp_path_factory: pytest.TempPathFactory, trained_model: Path, media: tuple, e2e_database: str
) -> Iterator[tuple[Server, dict[str, str]]]:
    d = tmp_path_factory.mktemp("moments-off")
    with running_server(d / "data", trained_model, d / "server.log", MMV_WORKERS="2",
                        MMV_SEGMENT_S="0") as server:  # fmt: skip
        yield server, load(server, media, with_sources=False)


def search(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/v1/search", json=body, timeout=60.0)
    assert r.status_code == 200, r.text
    return r.json()


# Retrieval quality over segments: the same on either engine; segments on PostgreSQL are
# stored, found and deleted by the other tests here (its whole-file server is soak only).
@pytest.mark.postgres_in_soak
def test_each_scene_is_found_at_its_stretch_and_the_whole_file_average_ranks_worse(
    segmented: tuple[Server, dict[str, str]],
    whole_only: tuple[Server, dict[str, str]],
    media: tuple,
) -> None:
    (server, ids), (plain, plain_ids) = segmented, whole_only
    recording: Recording = media[1]
    figures = []
    found = {"video": 0, "audio": 0}
    for n, scene in enumerate(recording.scenes):
        row = {"scene": n, "description": scene.description}
        for target in ("video", "audio"):
            body = {"query": {"text": scene.description}, "target": target, "k": 5}
            results = search(server, body)["results"]
            # The first scenes' own clips are stored too; they may come first.
            allowed = 1 + (n < SOURCE_CLIPS)
            rank = next(
                (i + 1 for i, r in enumerate(results) if r["item"]["id"] == ids["recording"]),
                None,
            )
            hit = results[rank - 1] if rank else None
            right = bool(
                rank and rank <= allowed and hit["segment"] and covers(hit["segment"], scene, HOP_S)
            )
            found[target] += right
            plain_results = search(plain, body)["results"]
            plain_rank = next(
                (i + 1 for i, r in enumerate(plain_results)
                 if r["item"]["id"] == plain_ids["recording"]), None,
            )  # fmt: skip
            row[target] = (rank, hit["segment"] if hit else None, right, plain_rank)
            if hit and hit["segment"] and right:
                assert hit["score"] >= max(r["score"] for r in results[rank:]) - 1e-6
        figures.append(row)
    print("\nscene | text->video: rank, segment, right | whole-file rank | text->audio: ...")
    for row in figures:
        print(row)
    print(f"right stretch: text->video {found['video']}/{N_SCENES}, "
          f"text->audio {found['audio']}/{N_SCENES}")  # fmt: skip
    assert found["video"] == N_SCENES
    assert found["audio"] >= N_SCENES - 2
    # By its whole-file average the recording ranks first for far fewer scenes.
    plain_first = sum(row[t][3] == 1 for row in figures for t in ("video", "audio"))
    assert plain_first < found["video"] + found["audio"] - 4


def test_every_segment_as_a_result_and_the_next_best_under_the_best(
    segmented: tuple[Server, dict[str, str]], media: tuple
) -> None:
    server, ids = segmented
    recording: Recording = media[1]
    scene = recording.scenes[4]
    grouped = search(server, {"query": {"text": scene.description}, "target": "video", "k": 10})
    assert len({r["item"]["id"] for r in grouped["results"]}) == len(grouped["results"])
    top = grouped["results"][0]
    assert top["item"]["id"] == ids["recording"] and top["segment"] is not None
    assert top["segment_text"]  # the narration said in that stretch
    scores = [m["score"] for m in top["more_segments"]]
    assert scores == sorted(scores, reverse=True) and all(s <= top["score"] for s in scores)
    every = search(server, {"query": {"text": scene.description}, "target": "video", "k": 10,
                            "group": False})  # fmt: skip
    mine = [r for r in every["results"] if r["item"]["id"] == ids["recording"]]
    # The contract: with group false a long item's whole-file match is a result beside its
    # segments' (once), where it ranks among them; the rest are distinct segments.
    stretches = [r for r in mine if r["segment"]]
    assert len(stretches) >= 2 and len(mine) - len(stretches) <= 1
    spans = [(r["segment"]["start_s"], r["segment"]["end_s"]) for r in stretches]
    assert len(set(spans)) == len(spans)
    got = httpx.get(f"{server.url}/v1/search", params={"q": scene.description, "target": "video",
                                                       "group": "false"}, timeout=60)  # fmt: skip
    assert got.status_code == 200 and got.json()["results"][0]["segment"] is not None


def test_a_moment_as_the_query_finds_the_clip_it_was_made_from(
    segmented: tuple[Server, dict[str, str]], media: tuple
) -> None:
    server, ids = segmented
    recording: Recording = media[1]
    scenes = media[2]
    for n in range(SOURCE_CLIPS):
        scene = recording.scenes[n]
        body = {"query": {"item_id": ids["recording"], "start_s": scene.start_s + 2,
                          "end_s": scene.end_s - 2}, "target": "video", "k": 3}  # fmt: skip
        results = search(server, body)["results"]
        assert results[0]["item"]["id"] == ids[scenes[n]["id"]], results
        # Stretches of the recording that overlap the query are not answers to it.
        for r in results:
            if r["item"]["id"] == ids["recording"] and r["segment"]:
                seg = r["segment"]
                assert seg["end_s"] <= scene.start_s + 2 or seg["start_s"] >= scene.end_s - 2


def test_bad_moments_are_told_apart(segmented: tuple[Server, dict[str, str]], media: tuple) -> None:
    server, ids = segmented
    clip_id = ids[media[2][0]["id"]]  # a short clip: its whole is its one moment
    ok = httpx.post(f"{server.url}/v1/search", timeout=60, json={
        "query": {"item_id": clip_id, "start_s": 0, "end_s": 3}, "target": "audio"})  # fmt: skip
    assert ok.status_code == 200, ok.text
    for query, status, words in [
        ({"item_id": ids["recording"], "start_s": 5}, 422, "both start_s and end_s"),
        ({"item_id": ids["recording"], "start_s": 9, "end_s": 3}, 422, "after start_s"),
        ({"item_id": ids["recording"], "start_s": 900, "end_s": 910}, 422, "past its end"),
        ({"item_id": "it_missing", "start_s": 1, "end_s": 2}, 404, "no item"),
    ]:
        r = httpx.post(f"{server.url}/v1/search", json={"query": query, "target": "video"},
                       timeout=60)  # fmt: skip
        assert r.status_code == status, r.text
        assert words in r.text


def test_deleting_the_recording_removes_every_segment(
    segmented: tuple[Server, dict[str, str]], media: tuple
) -> None:
    server, ids = segmented
    recording: Recording = media[1]
    before = httpx.get(f"{server.url}/readyz", timeout=10).json()
    r = httpx.delete(f"{server.url}/v1/items/{ids['recording']}", timeout=60)
    assert r.status_code == 204, r.text
    for scene in recording.scenes:
        results = search(server, {"query": {"text": scene.description}, "target": "audio",
                                  "k": 20, "group": False})["results"]  # fmt: skip
        assert all(r["item"]["id"] != ids["recording"] for r in results)
    after = httpx.get(f"{server.url}/readyz", timeout=10).json()["indexes"]
    segment_indexes = [name for name in before["indexes"] if name.endswith("_segments")]
    assert segment_indexes and all(before["indexes"][n] > 0 for n in segment_indexes)
    # Only the recording was long: with it gone, no segment is left in any index.
    assert all(after[n] == 0 for n in segment_indexes), after


def test_long_items_stored_before_moments_get_them_at_the_next_start(
    tmp_path: Path, trained_model: Path, media: tuple
) -> None:
    recording: Recording = media[1]
    data = tmp_path / "data"
    with running_server(data, trained_model, tmp_path / "before.log", MMV_SEGMENT_S="0") as s:
        with httpx.Client(base_url=s.url, timeout=600.0) as c:
            item = upload(c, recording.path, recording.transcript)
        assert httpx.get(f"{s.url}/readyz").json()["indexes"]["vat/video_segments"] == 0
    with running_server(data, trained_model, tmp_path / "after.log") as s:
        # 10 s segments every 5 s (one more where the encoded file runs a little over)
        spans = int((recording.duration_s - 10) / HOP_S) + 1
        wait_until(
            lambda: httpx.get(f"{s.url}/readyz").json()["indexes"]["vat/video_segments"] >= spans,
            120, "the recording's segments added in the background",
        )  # fmt: skip
        scene = recording.scenes[3]
        top = search(s, {"query": {"text": scene.description}, "target": "video"})["results"][0]
        assert top["item"]["id"] == item["id"] and covers(top["segment"], scene, HOP_S)
        assert top["segment_text"]  # cut with the transcript uploaded before
