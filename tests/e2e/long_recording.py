"""Long narrated recordings made of generated scenes, one after another, for the moment
tests and bench/moments.py: each scene is one corpus clip looped to `scene_s` seconds
(picture, sound and narration), and the recording's WebVTT transcript is the clips'
cues at their new times. Real files made by ffmpeg, so the service decodes them as it
decodes an upload.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.transcripts import Segment, Transcript, read_transcript


@dataclass(frozen=True)
class Scene:
    start_s: float
    end_s: float
    description: str
    clip_id: str


@dataclass(frozen=True)
class Recording:
    path: Path
    transcript: Path
    scenes: list[Scene]

    @property
    def duration_s(self) -> float:
        return self.scenes[-1].end_s


def distinct_scenes(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """n narrated clips whose narration is their own and whose first objects differ in
    shape and colour and whose backgrounds differ where they can: scenes a viewer tells
    apart."""
    chosen: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if row["kind"] != "clip" or not row.get("transcript") or not row.get("aligned"):
            continue
        first = row["attributes"]["objects"][0]
        key = (first["shape"], first["colour"])
        if key in seen:
            continue
        seen.add(key)
        chosen.append(row)
        if len(chosen) == n:
            return chosen
    raise ValueError(f"only {len(chosen)} distinct narrated scenes among {len(rows)} rows")


def make_recording(
    corpus: Path, rows: list[dict[str, Any]], out: Path, scene_s: float = 20.0
) -> Recording:
    """One mp4 (H.264 + AAC) of the clips in `rows`, each looped to `scene_s`, and its
    transcript (out.with_suffix('.vtt'))."""
    parts = out.parent / f"{out.stem}-parts"
    parts.mkdir(parents=True, exist_ok=True)
    scenes: list[Scene] = []
    cues: list[Segment] = []
    listing = []
    for n, row in enumerate(rows):
        clip = corpus / row["path"]
        part = parts / f"scene-{n:03d}.mp4"
        loops = math.ceil(scene_s / row["duration_s"])
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops - 1),
             "-i", str(clip), "-t", f"{scene_s}", "-c:v", "libx264", "-preset", "veryfast",
             "-pix_fmt", "yuv420p", "-r", "8", "-c:a", "aac", "-ar", "44100", "-ac", "1",
             str(part)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        start = n * scene_s
        scenes.append(Scene(start, start + scene_s, row["description"], row["id"]))
        said = read_transcript(corpus / row["transcript"])
        for k in range(loops):
            offset = start + k * row["duration_s"]
            for cue in said.segments:
                if offset + cue.start < start + scene_s:
                    end = min(offset + cue.end, start + scene_s)
                    cues.append(Segment(offset + cue.start, end, cue.text))
        listing.append(f"file '{part.name}'")
    (parts / "list.txt").write_text("\n".join(listing) + "\n")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
         "-i", str(parts / "list.txt"), "-c", "copy", "-movflags", "+faststart", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    transcript = out.with_suffix(".vtt")
    transcript.write_text(Transcript(cues).to_vtt())
    return Recording(out, transcript, scenes)


def covers(segment: dict[str, Any], scene: Scene, hop_s: float) -> bool:
    """The segment is the scene's stretch, within one hop: its middle lies in the scene
    or less than a hop outside it (the segment before or after the right one)."""
    middle = (segment["start_s"] + segment["end_s"]) / 2
    return scene.start_s - hop_s <= middle <= scene.end_s + hop_s
