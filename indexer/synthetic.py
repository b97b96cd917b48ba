"""Vectors shaped like real embeddings, for tests and benchmarks: clusters on the sphere.

Uniform random vectors in 256-d have no neighbours worth finding (every cosine is ~0),
which makes every approximate index look broken. Real embeddings crowd around topics, so
these are drawn from a mixture of Gaussian clusters on the unit sphere: a centre per
cluster, points at about `cosine` from their centre, everything L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusteredSphere:
    """A fixed mixture of clusters; draw stored vectors and queries from the same one."""

    dim: int
    clusters: int
    cosine: float = 0.7  # cosine of a point to its cluster centre
    seed: int = 0

    def centres(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        centres = rng.standard_normal((self.clusters, self.dim)).astype(np.float32)
        return centres / np.linalg.norm(centres, axis=1, keepdims=True)

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        """n unit vectors: a random centre each, plus noise that puts them at ~cosine."""
        centres = self.centres()
        rng = np.random.default_rng(seed)
        # a unit centre plus N(0, s^2 I) noise has cosine ~ 1 / sqrt(1 + d s^2) to it
        sigma = np.float32(np.sqrt((1.0 / self.cosine**2 - 1.0) / self.dim))
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            which = rng.integers(0, self.clusters, stop - start)
            block = centres[which] + sigma * rng.standard_normal(
                (stop - start, self.dim), dtype=np.float32
            )
            out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out
