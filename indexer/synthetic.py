"""Vectors shaped like real embeddings, for tests and benchmarks.

Uniform random vectors in 256-d have no neighbours worth finding (every cosine is ~0),
which makes every approximate index look broken. Two shapes instead:

- `ClusteredSphere`: real embeddings crowd around topics, so a mixture of Gaussian
  clusters on the unit sphere: a centre per cluster, points at about `cosine` from their
  centre, everything L2-normalised. Tight clusters are easy for an inverted file.
- `DecayingSpectrum`: no cluster structure at all, one Gaussian whose covariance
  eigenvalues decay like those of the trained model's embeddings (a power law with a
  flat head), in a random orthogonal basis, L2-normalised. The harder case.
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


# The spectrum of the trained default model's segment embeddings: models/default, S_vat
# (128-d), video, 2,398 segments of 10 s at a 5 s hop of 3.3 h of generated recordings
# (bench/moment_vectors.py, 2026-12-06). lambda_i ~ (i + 57.5)^-6.18 fits its largest
# 96 eigenvalues with r^2 = 0.993 (a flat head of ~30 dimensions, then a tail falling
# like i^-3 around i = 64); a pure power law fits them with r^2 = 0.855 only (alpha
# 1.71), and would put half the variance in the first direction (the real one: 6%).
# Sampled in 256-d and normalised: participation ratio 26 (real S_vat segments: 29,
# S_va: 20), 90% of the variance in 34 directions (real: 32 and 21).
SPECTRUM_ALPHA = 6.18
SPECTRUM_KNEE = 57.5


def fit_spectrum(
    eigenvalues: np.ndarray, fraction: float = 0.75, knee: bool = True
) -> tuple[float, float, float]:
    """(alpha, knee, r^2) of log lambda_i = c - alpha log(i + knee), least squares over
    the largest `fraction` of the eigenvalues, and only those above 1e-6 of the first
    (the last ones of a learned embedding drop off faster, and a covariance estimated
    from a few thousand vectors gets its smallest eigenvalues least right). The knee is
    searched in steps of 0.5 up to 4x that range; knee=False: a pure power law i^-alpha."""
    eig = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    # and never past the numerically zero ones (a space of lower rank than its dimension)
    top = max(3, min(int(fraction * len(eig)), int((eig > 1e-6 * eig[0]).sum())))
    i = np.arange(1, top + 1, dtype=np.float64)
    y = np.log(np.maximum(eig[:top], 1e-300))
    best = (np.inf, 0.0, 0.0)
    for k in np.arange(0.0, 4.0 * top, 0.5) if knee else (0.0,):
        x = np.log(i + k)
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - (slope * x + intercept)
        sse = float(residual @ residual)
        if sse < best[0]:
            best = (sse, -float(slope), float(k))
    sse, alpha, k = best
    return alpha, k, 1.0 - sse / float(((y - y.mean()) ** 2).sum())


@dataclass(frozen=True)
class DecayingSpectrum:
    """Unit vectors with no cluster structure: x ~ N(0, U diag(lambda) U^T), normalised.

    lambda_i ~ (i + knee)^-alpha (knee=0: a pure power law i^-alpha), U a random
    orthogonal basis fixed by `seed`. Stored vectors and queries come from the same one."""

    dim: int
    alpha: float = SPECTRUM_ALPHA
    knee: float = SPECTRUM_KNEE
    seed: int = 0

    def eigenvalues(self) -> np.ndarray:
        """The covariance's eigenvalues before normalisation, largest first, summing to 1."""
        lam = (np.arange(1, self.dim + 1) + self.knee) ** -self.alpha
        return lam / lam.sum()

    def basis(self) -> np.ndarray:
        """A random orthogonal matrix (QR of a Gaussian one, signs fixed: Haar)."""
        rng = np.random.default_rng(self.seed)
        q, r = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        return (q * np.sign(np.diag(r))).astype(np.float32)

    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        """n unit vectors, drawn in chunks so a million never needs more than one."""
        scale = np.sqrt(self.eigenvalues()).astype(np.float32)
        basis_t = self.basis().T.astype(np.float64)
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            z = rng.standard_normal((stop - start, self.dim), dtype=np.float32) * scale
            # In float64, cast once: BLAS sums a row in an order that depends on how many
            # rows it is given, and float32 showed it (1 ulp in a quarter of them).
            block = z.astype(np.float64) @ basis_t
            out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out
