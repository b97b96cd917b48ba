"""The unseen world (model/corpus/unseen) through the API: upload it, and measure how
well its held-out clips and text queries find it. Shared by the end-to-end training
test and bench/retrain.py.

Retrieval is judged by thing: a hit is right when it shows the query's thing (each
thing has several uploaded clips), so chance R@1 is 1 / (number of things).
- text → audio: each thing's text queries (`GET /v1/search`, target audio) against
  the sound of every uploaded clip;
- audio → video: each held-out clip's sound track, uploaded as a wav example
  (`POST /v1/search/upload`, target video), against the pictures of every uploaded clip.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from model.corpus.unseen import UnseenWorld


@dataclass
class UploadedWorld:
    world: UnseenWorld
    thing_of: dict[str, str]  # item id -> combination id


def upload_world(client: httpx.Client, world: UnseenWorld, clients: int = 4) -> UploadedWorld:
    """Upload every upload clip with its WebVTT transcript (wait=true); 201 each."""

    def one(item: Any) -> tuple[str, str]:
        with world.path(item).open("rb") as media, (world.root / item.transcript).open("rb") as vtt:
            r = client.post(
                "/v1/items",
                files={"file": (Path(item.path).name, media, "video/mp4"),
                       "transcript": ("t.vtt", vtt, "text/vtt")},
                timeout=120,
            )  # fmt: skip
        assert r.status_code in (200, 201), r.text
        return r.json()["id"], item.combination

    with ThreadPoolExecutor(clients) as pool:
        pairs = list(pool.map(one, world.uploads))
    return UploadedWorld(world, dict(pairs))


def audio_examples(world: UnseenWorld, out: Path) -> dict[Path, str]:
    """The held-out clips' sound tracks as wav files (an example of sound only)."""
    out.mkdir(parents=True, exist_ok=True)
    examples = {}
    for item in world.tests:
        wav = out / (Path(item.path).stem + ".wav")
        if not wav.is_file():
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-i", str(world.path(item)), "-vn", "-ac", "1",
                 str(wav)], check=True, timeout=60,
            )  # fmt: skip
        examples[wav] = item.combination
    return examples


def measure(
    client: httpx.Client, uploaded: UploadedWorld, examples: dict[Path, str]
) -> dict[str, Any]:
    """R@1 by thing for text → audio and audio → video, with what was compared."""
    versions: set[str] = set()
    right_text = 0
    queries = [(q, cid) for cid, qs in uploaded.world.queries().items() for q in qs]
    for text, cid in queries:
        r = client.get("/v1/search", params={"q": text, "target": "audio", "k": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        versions.add(body["model_version"])
        hits = body["results"]
        right_text += bool(hits) and uploaded.thing_of.get(hits[0]["item"]["id"]) == cid
    right_audio = 0
    for wav, cid in examples.items():
        with wav.open("rb") as fh:
            r = client.post(
                "/v1/search/upload",
                files={"file": (wav.name, fh, "audio/wav")},
                data={"target": "video", "k": "1"},
                timeout=60,
            )
        assert r.status_code == 200, r.text
        body = r.json()
        versions.add(body["model_version"])
        hits = body["results"]
        right_audio += bool(hits) and uploaded.thing_of.get(hits[0]["item"]["id"]) == cid
    things = len(uploaded.world.combinations)
    return {
        "text->audio R@1": right_text / len(queries),
        "audio->video R@1": right_audio / len(examples),
        "text queries": len(queries),
        "audio queries": len(examples),
        "candidates": len(uploaded.thing_of),
        "things": things,
        "chance R@1": 1 / things,
        "model_versions": sorted(versions),
    }
