"""Real segment ("moment") embeddings for bench/search.py, and the fit of their spectrum.

The trained default model (`models/default`) embeds generated recordings: the corpus
generator's narrated clips (`model.corpus`, 4.5-7.5 s each), every clip decoded as
windows of the model's clip length (2 s) that tile it (ceil(duration / 2 s) windows,
uniformly spaced from 0 to the last full window), video and audio windows embedded
in S_va and S_vat. The clips, one after the other, are then read as one long
recording, and cut as the service cuts long media into moments: 10 s segments at a 5 s
hop, each the mean of the window embeddings whose centre falls inside it,
L2-normalised again: 2,398 real segments from 2,000 clips (3.3 h).

More segments than that (bench/search.py asks for 100k-1M) come from
`ResequencedSegments`: the same clips played in other random orders, each order cut
the same way. Runs of consecutive windows of the one fixed order, however jittered,
were tried first and are too easy: 360k of them sample the same 2,000 pairs of
neighbouring clips over and over (nearest-neighbour cosine 0.999; IVF reached recall
0.93 at nprobe = 1 at 100k, like the clustered set). A new order gives new pairs.

The window embeddings are cached in data/bench/ (ignored by git) with the sha256 of the
model's weights; a missing or stale cache is rebuilt (corpus generation, decoding and
embedding: several minutes on 2 cores, with progress on stderr).

Run alone, it prints the real segments' covariance spectrum and the power-law fit
lambda_i ~ (i + knee)^-alpha (and the pure power law, knee 0) that
`indexer.synthetic.DecayingSpectrum` takes its parameters from:

    .venv/bin/python bench/moment_vectors.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.synthetic import DecayingSpectrum, fit_spectrum

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "default"
CACHE_DIR = REPO / "data" / "bench"
CORPUS_CLIPS = 2000  # 2000 clips of ~6 s: ~3.3 h of recording, ~2,400 segments
CORPUS_SEED = 3  # the model was trained on seed 0's corpus: these clips are unseen
SEGMENT_S = 10.0
HOP_S = 5.0
MODALITIES = ("video", "audio")
SPACES = ("va", "vat")


@dataclass
class Windows:
    """Every window of the recording, in time order."""

    clip: np.ndarray  # int [W]: which clip
    centre_s: np.ndarray  # float [W]: window centre on the recording's time line
    embeddings: dict[str, np.ndarray]  # "video/vat" -> float32 [W, D], unit norm
    durations: np.ndarray  # float [C]: each clip's length, in recording order

    @property
    def recording_s(self) -> float:
        return float(self.durations.sum())


def _weights_sha256() -> str:
    digest = hashlib.sha256()
    with open(MODEL_DIR / "weights.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _embed_corpus(corpus: Path) -> dict[str, np.ndarray]:
    """Decode (two clips at a time) and embed (a batch of clips at a time) every clip's
    tiling windows; the arrays for the cache."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from model.checkpoint import load
    from model.corpus import read_manifest
    from model.embedding import embed_windows, freeze_for_inference, media_windows
    from model.media.windows import load_windows

    torch.set_num_threads(2)
    model = load(MODEL_DIR)
    freeze_for_inference(model)
    config = model.config
    clip_s = config.clip_seconds
    rows = read_manifest(corpus, kind="clip")
    durations = np.array([float(row["duration_s"]) for row in rows])
    offsets = np.concatenate([[0.0], np.cumsum(durations)[:-1]])

    def decode(i: int):  # -> model.media.windows.Windows
        n_windows = max(1, math.ceil(durations[i] / clip_s))
        return load_windows(corpus / rows[i]["path"], config, n_windows, parallel=1)

    clip_ids: list[np.ndarray] = []
    centres: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    batch = 64
    with ThreadPoolExecutor(max_workers=2) as pool:
        for first in range(0, len(rows), batch):
            chunk = list(range(first, min(len(rows), first + batch)))
            decoded = list(pool.map(decode, chunk))
            for modality in MODALITIES:
                x = np.concatenate([media_windows(w, modality) for w in decoded])
                owner = np.arange(len(x))
                for space, z in embed_windows(model, modality, x, owner, len(x)).items():
                    parts.setdefault(f"{modality}/{space}", []).append(z.astype(np.float32))
            for i, windows in zip(chunk, decoded, strict=True):
                clip_ids.append(np.full(len(windows), i))
                centres.append(offsets[i] + windows.starts_s + clip_s / 2)
            _log(
                f"  embedded {chunk[-1] + 1}/{len(rows)} clips "
                f"({sum(len(c) for c in clip_ids):,} windows, {time.perf_counter() - start:.0f} s)"
            )
    arrays = {key.replace("/", "__"): np.concatenate(p) for key, p in parts.items()}
    arrays["clip"] = np.concatenate(clip_ids)
    arrays["centre_s"] = np.concatenate(centres)
    arrays["durations"] = durations
    return arrays


def load_windows_cached(n_clips: int = CORPUS_CLIPS, seed: int = CORPUS_SEED) -> Windows:
    """The recording's window embeddings, from the cache or rebuilt (minutes)."""
    sha = _weights_sha256()
    cache = CACHE_DIR / f"moment-windows-n{n_clips}-seed{seed}.npz"
    arrays: dict[str, np.ndarray] | None = None
    if cache.is_file():
        with np.load(cache) as stored:
            if str(stored["weights_sha256"]) == sha:
                arrays = {key: stored[key] for key in stored.files}
            else:
                _log(f"{cache}: made with other model weights; rebuilding")
    if arrays is None:
        from model.corpus import make_corpus

        corpus = CACHE_DIR / f"corpus-moments-n{n_clips}-seed{seed}"
        if not (corpus / "manifest.jsonl").is_file():
            _log(f"generating {n_clips} clips (seed {seed}) in {corpus} (a few minutes)")
            make_corpus(corpus, n_clips, seed, progress=True, n_audio=0, n_stills=0, overwrite=True)
        _log(f"embedding the clips of {corpus} with {MODEL_DIR} (a few minutes)")
        arrays = _embed_corpus(corpus)
        arrays["weights_sha256"] = np.array(sha)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        partial.replace(cache)
        _log(f"cached in {cache}")
    return Windows(
        clip=arrays["clip"],
        centre_s=arrays["centre_s"],
        embeddings={
            f"{m}/{s}": arrays[f"{m}__{s}"].astype(np.float32) for m in MODALITIES for s in SPACES
        },
        durations=arrays["durations"],
    )


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def segment_members(windows: Windows) -> list[np.ndarray]:
    """Per 10 s segment at a 5 s hop, the windows whose centre lies inside it."""
    starts = np.arange(0.0, max(windows.recording_s - SEGMENT_S, 0.0) + 1e-9, HOP_S)
    lo = np.searchsorted(windows.centre_s, starts, side="left")
    hi = np.searchsorted(windows.centre_s, starts + SEGMENT_S, side="left")
    return [np.arange(a, b) for a, b in zip(lo, hi, strict=True) if b > a]


def real_segments(windows: Windows, key: str) -> np.ndarray:
    """The recording's segment embeddings in one space: mean of its windows, re-normalised."""
    z = windows.embeddings[key].astype(np.float64)
    return _segment_means(z, windows.centre_s, 0.0, windows.recording_s)


def _segment_means(z: np.ndarray, centre_s: np.ndarray, first_s: float, end_s: float) -> np.ndarray:
    """Segments of SEGMENT_S every HOP_S from first_s: the mean of the windows (rows of z,
    in time order, centres centre_s) whose centre falls inside, L2-normalised."""
    starts = np.arange(first_s, max(end_s - SEGMENT_S, first_s) + 1e-9, HOP_S)
    lo = np.searchsorted(centre_s, starts, side="left")
    hi = np.searchsorted(centre_s, starts + SEGMENT_S, side="left")
    keep = hi > lo
    total = np.zeros((len(z) + 1, z.shape[1]))
    np.cumsum(z, axis=0, out=total[1:])
    return normalise(total[hi[keep]] - total[lo[keep]])


@dataclass(frozen=True)
class ResequencedSegments:
    """As many segments as asked, from the real window embeddings of the corpus clips.

    Each draw is one more recording made of the same clips played in another order:
    a random permutation of the clips, the recording's segment grid shifted by a random
    offset in [0, HOP_S), and then exactly the real segments' procedure (10 s every 5 s,
    the mean of the window embeddings whose centre falls inside, L2-normalised). As the
    windows are embedded clip by clip, these are the segment embeddings the model would
    give such a recording. A 10 s segment spans 2-3 clips of 4.5-7.5 s, so segments of
    different recordings mix different clips; about 2,400 segments per recording. The
    content is still the corpus's 2,000 clips: each appears in n / 2,400 recordings."""

    windows: Windows
    key: str  # "video/vat" ...

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        w = self.windows
        z = w.embeddings[self.key].astype(np.float64)
        clips = len(w.durations)
        clip_start = np.concatenate([[0.0], np.cumsum(w.durations)[:-1]])
        local = w.centre_s - clip_start[w.clip]  # window centre within its clip
        first = np.searchsorted(w.clip, np.arange(clips), side="left")
        count = np.searchsorted(w.clip, np.arange(clips), side="right") - first
        parts: list[np.ndarray] = []
        made = 0
        while made < n:
            order = rng.permutation(clips)
            start = np.concatenate([[0.0], np.cumsum(w.durations[order])[:-1]])
            rows = np.concatenate([np.arange(first[c], first[c] + count[c]) for c in order])
            position = np.repeat(start, count[order])  # each window's clip start
            centres = position + local[rows]
            part = _segment_means(z[rows], centres, rng.uniform(0, HOP_S), w.recording_s)
            parts.append(part[: n - made])
            made += len(parts[-1])
        return np.concatenate(parts)


def spectrum(vectors: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of the centred vectors, largest first."""
    centred = vectors - vectors.mean(axis=0)
    return np.linalg.eigvalsh(centred.T @ centred / (len(vectors) - 1))[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="same run (it is short once cached)")
    parser.parse_args()
    windows = load_windows_cached()
    members = segment_members(windows)
    counts = np.array([len(m) for m in members])
    print(
        f"recording: {windows.recording_s / 3600:.2f} h from {int(windows.clip.max()) + 1} "
        f"clips, {len(windows.centre_s):,} windows, {len(members):,} segments of "
        f"{SEGMENT_S:g} s at a {HOP_S:g} s hop ({counts.min()}-{counts.max()} windows, "
        f"mean {counts.mean():.1f})"
    )
    print(
        "| vectors | d | alpha, knee: (i + knee)^-alpha | r^2 | pure i^-alpha | r^2 | "
        "lambda_1 share | top-10 share | dims for 90% | participation ratio | mean norm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in windows.embeddings:
        for what, vectors in (
            ("segments", real_segments(windows, key)),
            ("windows", windows.embeddings[key]),
        ):
            eig = spectrum(vectors)
            alpha, knee, r2 = fit_spectrum(eig)
            pure, _, pure_r2 = fit_spectrum(eig, knee=False)
            share = np.cumsum(eig) / eig.sum()
            print(
                f"| {key} {what} ({len(vectors):,}) | {vectors.shape[1]} | {alpha:.2f}, "
                f"{knee:g} | {r2:.3f} | {pure:.2f} | {pure_r2:.3f} | {share[0]:.3f} | "
                f"{share[9]:.2f} | {int(np.searchsorted(share, 0.9)) + 1} | "
                f"{eig.sum() ** 2 / (eig**2).sum():.1f} | "
                f"{np.linalg.norm(vectors.mean(axis=0)):.2f} |"
            )
    generated = DecayingSpectrum(256)
    eig = spectrum(generated.sample(50_000, 1))
    alpha, knee, r2 = fit_spectrum(eig)
    print(
        f"\nindexer.synthetic.DecayingSpectrum(256) (alpha {generated.alpha:g}, knee "
        f"{generated.knee:g}), 50,000 samples: fit alpha {alpha:.2f}, knee {knee:g} "
        f"(r^2 {r2:.3f}), participation ratio {eig.sum() ** 2 / (eig**2).sum():.1f}"
    )


if __name__ == "__main__":
    main()
