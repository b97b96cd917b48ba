"""Pictures of a corpus for the docs: a contact sheet of clips and one clip's sound.

    python -m model.corpus sheet --corpus DIR --out docs/img

writes `corpus_sheet.png` (frames of several clips, each with its description and
narration) and `corpus_spectrogram.png` (one clip's frames over its log-mel
spectrogram, with the narration's cues and the object's hits marked). Media are decoded
with model.media and the spectrogram is the model's own front end at the tiny config's
settings, so the pictures show what the model is given.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from model.corpus import motion
from model.corpus.errors import CorpusError
from model.corpus.manifest import read_manifest
from model.corpus.world import scene_from_attributes
from model.transcripts import read_transcript

SHEET_FILE = "corpus_sheet.png"
SPECTROGRAM_FILE = "corpus_spectrogram.png"
SHEET_FPS = 2.0  # frames shown per second of clip


def pick_sheet_rows(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Clips that together show many motions, backgrounds and both object counts."""
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        attrs = row["attributes"]
        traits = {o["motion"] for o in attrs["objects"]} | {attrs["background"]}
        traits.add(f"objects={attrs['n_objects']}")
        if traits - seen:
            chosen.append(row)
            seen |= traits
        if len(chosen) == count:
            return chosen
    rest = [r for r in rows if r not in chosen]
    return chosen + rest[: count - len(chosen)]


def pick_spectrogram_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A narrated, aligned clip with one big bouncing object: hits and speech both show."""

    def score(row: dict[str, Any]) -> tuple[bool, bool, bool, bool]:
        objects = row["attributes"]["objects"]
        return (
            row["transcript"] is not None and row["aligned"],
            any(o["motion"] == "bouncing" for o in objects),
            len(objects) == 1,
            objects[0]["size"] == "big",
        )

    return max(rows, key=score)  # the first best in manifest order


def write_sheets(corpus_dir: str | Path, out_dir: str | Path, clips: int = 6) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    corpus = Path(corpus_dir)
    rows = read_manifest(corpus, kind="clip")
    if not rows:
        raise CorpusError(f"{corpus} has no clips to draw")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sheet = _contact_sheet(corpus, pick_sheet_rows(rows, clips), out / SHEET_FILE)
    spectrogram = _spectrogram(corpus, pick_spectrogram_row(rows), out / SPECTROGRAM_FILE)
    return [sheet, spectrogram]


def _frames(corpus: Path, row: dict[str, Any], count: int) -> np.ndarray:
    from model.media import decode_video

    return decode_video(corpus / row["path"], fps=SHEET_FPS, frames=count, size=112)


def _contact_sheet(corpus: Path, rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    columns = 8
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(columns * 1.3, len(rows) * 1.75), squeeze=False
    )
    for r, row in enumerate(rows):
        frames = _frames(corpus, row, columns)
        for c in range(columns):
            ax = axes[r][c]
            ax.imshow(frames[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == len(rows) - 1:
                ax.set_xlabel(f"{c / SHEET_FPS:.1f} s", fontsize=7)
        narration = row["narration"] or "(no narration)"
        if row["narration"] and not row["aligned"]:
            narration += f"  [misaligned: describes {row['attributes']['narration_of']}]"
        title = f"{row['id']} ({row['split']}): {row['description']}"
        axes[r][0].set_title(
            title + "\n" + textwrap.shorten(f"narration: {narration}", 150),
            loc="left",
            fontsize=7.5,
            x=0.0,
        )
    fig.suptitle("Corpus clips: frames at 2 fps, canonical description, narration", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.04, hspace=0.62, wspace=0.06)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _spectrogram(corpus: Path, row: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt
    import torch

    from model.audio_features import LogMelSpectrogram
    from model.config import load_config
    from model.media import decode_audio

    audio_config = load_config("tiny").audio
    waveform = decode_audio(corpus / row["path"], sample_rate=audio_config.sample_rate)
    with torch.no_grad():
        mel = LogMelSpectrogram(audio_config)(torch.from_numpy(waveform)[None])[0].numpy()
    duration = row["duration_s"]
    count = int(duration * SHEET_FPS)
    frames = _frames(corpus, row, count)

    fig = plt.figure(figsize=(11, 5.2))
    grid = fig.add_gridspec(2, count, height_ratios=[1, 2.6], hspace=0.08)
    for c in range(count):
        ax = fig.add_subplot(grid[0, c])
        ax.imshow(frames[c])
        ax.set_axis_off()
        ax.set_title(f"{c / SHEET_FPS:.1f} s", fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(
        mel.T,
        origin="lower",
        aspect="auto",
        extent=(0.0, len(waveform) / audio_config.sample_rate, 0, mel.shape[1]),
        cmap="magma",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"mel bin ({audio_config.n_mels} bins, {audio_config.sample_rate} Hz)")
    if row["transcript"]:
        for seg in read_transcript(corpus / row["transcript"]).segments:
            ax.axvspan(seg.start, seg.end, ymin=0.93, ymax=1.0, color="white", alpha=0.6)
            ax.text(seg.start, mel.shape[1] * 0.88, seg.text, fontsize=6.5, color="white")
    scene = scene_from_attributes(row["attributes"])
    for obj in scene.objects:
        for t in motion.hit_times(obj, duration):
            ax.axvline(t, ymax=0.85, color="cyan", linewidth=0.8, linestyle="--")
    objects = ", ".join(f"{o.size} {o.colour} {o.shape} {o.motion}" for o in scene.objects)
    fig.suptitle(
        f"{row['id']}: {objects} on {scene.background} — log-mel of its sound track; "
        "dashed: floor contacts from the manifest; white bars: narration cues (WebVTT)",
        fontsize=8.5,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
