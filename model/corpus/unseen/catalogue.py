"""world.json: the things of an unseen world, its files and the text queries for each.

Top level: generator, version, seed, counts, video (the clips' format), vocabulary,
narration (sentence templates, voices, espeak-ng version), query_templates, and

- combinations: one row per thing: id ("pink-crescent"), index, shape, colour, sound,
  register_hz and queries (["pink crescent whistle", "a crescent in pink that
  whistles", "whistling pink crescent"]);
- files: one row per clip: path ("uploads/upload-1a2b3c4d.mp4"), transcript (its .vtt),
  combination (a thing's id), role ("upload" or "test"), index, duration_s, narration
  (the spoken sentence), background, motion, pitch_hz and voice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.corpus.errors import ManifestError

WORLD_FILE = "world.json"


@dataclass(frozen=True)
class WorldCombination:
    """One thing of the world as world.json lists it."""

    id: str
    index: int
    shape: str
    colour: str
    sound: str
    register_hz: float
    queries: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "shape": self.shape,
            "colour": self.colour,
            "sound": self.sound,
            "register_hz": self.register_hz,
            "queries": list(self.queries),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> WorldCombination:
        return cls(
            id=row["id"],
            index=int(row["index"]),
            shape=row["shape"],
            colour=row["colour"],
            sound=row["sound"],
            register_hz=float(row["register_hz"]),
            queries=tuple(row["queries"]),
        )


@dataclass(frozen=True)
class WorldFile:
    """One clip: where it is (relative to the world's folder), what it shows, its role."""

    path: str
    transcript: str
    combination: str  # WorldCombination.id
    role: str  # "upload" or "test"
    index: int  # clip index within (combination, role)
    duration_s: float
    narration: str
    background: str
    motion: str
    pitch_hz: float
    voice: dict[str, Any] = field(hash=False)  # espeak-ng voice, words per minute, pitch

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "transcript": self.transcript,
            "combination": self.combination,
            "role": self.role,
            "index": self.index,
            "duration_s": self.duration_s,
            "narration": self.narration,
            "background": self.background,
            "motion": self.motion,
            "pitch_hz": self.pitch_hz,
            "voice": dict(self.voice),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> WorldFile:
        return cls(
            path=row["path"],
            transcript=row["transcript"],
            combination=row["combination"],
            role=row["role"],
            index=int(row["index"]),
            duration_s=float(row["duration_s"]),
            narration=row["narration"],
            background=row["background"],
            motion=row["motion"],
            pitch_hz=float(row["pitch_hz"]),
            voice=dict(row["voice"]),
        )


@dataclass(frozen=True)
class UnseenWorld:
    """A generated unseen world: its folder, things and files (see world.json)."""

    root: Path
    seed: int
    combinations: tuple[WorldCombination, ...]
    files: tuple[WorldFile, ...]
    info: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    seconds: float = field(default=0.0, compare=False)  # generation time; 0 when loaded

    @property
    def uploads(self) -> tuple[WorldFile, ...]:
        return tuple(f for f in self.files if f.role == "upload")

    @property
    def tests(self) -> tuple[WorldFile, ...]:
        return tuple(f for f in self.files if f.role == "test")

    def combination(self, combination_id: str) -> WorldCombination:
        for c in self.combinations:
            if c.id == combination_id:
                return c
        raise KeyError(combination_id)

    def queries(self) -> dict[str, tuple[str, ...]]:
        """combination id → the text queries a user would type for it."""
        return {c.id: c.queries for c in self.combinations}

    def path(self, item: WorldFile) -> Path:
        return self.root / item.path


def load_unseen_world(out: str | Path) -> UnseenWorld:
    """Read a world's world.json back."""
    root = Path(out)
    try:
        info = json.loads((root / WORLD_FILE).read_text())
        return UnseenWorld(
            root=root,
            seed=int(info["seed"]),
            combinations=tuple(WorldCombination.from_json(c) for c in info["combinations"]),
            files=tuple(WorldFile.from_json(f) for f in info["files"]),
            info=info,
        )
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{root} holds no unseen world ({WORLD_FILE} is missing); make one with "
            "`python -m model.corpus unseen --out DIR`"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"cannot read {root / WORLD_FILE}: {exc}") from exc
