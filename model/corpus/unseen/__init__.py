"""The unseen world: a second narrated-clip world the shipped model has never seen.

    python -m model.corpus unseen --out DIR [--seed S] [--combinations N] [--uploads N] [--tests N]

It exists to prove retraining from uploads: its clips are uploaded through the API and
searched, before and after retraining, with held-out clips and text queries.

The world has 48 things, 6 emblem shapes × 8 colours, each recognisable from its picture
alone, its sound alone and its narration:
- shapes: crescent, arrow, cross, heart, diamond, hexagon (picture.py draws them);
- colours: pink, teal, brown, white, black, lime, navy, cyan;
- sound: the shape fixes the timbre (crescent whistle, arrow twang, cross rattle, heart
  drum, diamond clang, hexagon honk; timbre.py) and the colour the pitch register: 8
  pitches equally spaced on the mel scale from 200 Hz (pink) to 3 kHz (cyan), over 5
  of the model's 64 mel bands apart, jittered ±4 % per clip;
- backgrounds: bricks, clouds, gradient, zigzag, grid (muted, with a random cast).
No shape, colour or sound word is a word of the corpus's world or of its narrations.

Clips of one thing differ in where and how the object moves (orbit, figure-eight,
swing, drift; speed, size, tilt, spin), the background, the pitch within the register,
the rhythm of its notes (the object pulses at each note), the narration's wording (8
templates, e.g. "Here the teal crescent is whistling.") and the espeak-ng voice, rate
and pitch. The narrator is mixed over the notes as in the corpus (effects ducked under
speech) and written as a WebVTT cue beside each clip. Clips are mp4 (h264 + aac, 96×96
at 8 fps, about 4 s, sound at 44.1 kHz) like any upload.

Layout of a world folder:
    uploads/upload-XXXXXXXX.mp4 + .vtt   clips to upload (opaque names)
    tests/test-XXXXXXXX.mp4 + .vtt       held-out query clips
    world.json                           things, files (thing and role of each) and
                                         2-3 text queries per thing (catalogue.py)

Everything is a pure function of (seed, combination, role, clip index): the same call
gives the same frames and sound (and, with ffmpeg's one-thread encoders, the same
bytes), and `combinations=12` gives the first 12 things of the fixed order, which covers
every shape and colour, with the same clips as the full world.
"""

from model.corpus.unseen.build import make_unseen_world
from model.corpus.unseen.catalogue import (
    UnseenWorld,
    WorldCombination,
    WorldFile,
    load_unseen_world,
)

__all__ = [
    "UnseenWorld",
    "WorldCombination",
    "WorldFile",
    "load_unseen_world",
    "make_unseen_world",
]
