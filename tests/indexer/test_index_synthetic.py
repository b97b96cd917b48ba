"""The benchmark's data generators: DecayingSpectrum is unit-norm, has no cluster
structure, and its spectrum decays as asked; fit_spectrum recovers a known law."""

from __future__ import annotations

import faiss
import numpy as np

from indexer.synthetic import ClusteredSphere, DecayingSpectrum, fit_spectrum


def kmeans_gain(x: np.ndarray, k: int = 60) -> float:
    """Share of the variance k-means with k centroids explains."""
    kmeans = faiss.Kmeans(x.shape[1], k, niter=20, seed=1)
    kmeans.train(x)
    distances, _ = kmeans.index.search(x, 1)
    return 1.0 - float(distances.mean()) / float(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())


def gaussian_twin(x: np.ndarray) -> np.ndarray:
    """Unit vectors from one Gaussian with x's mean and covariance: no clusters by design."""
    rng = np.random.default_rng(5)
    y = rng.multivariate_normal(x.mean(axis=0), np.cov(x.T), len(x)).astype(np.float32)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_unit_norm_deterministic_and_independent_of_chunks() -> None:
    gen = DecayingSpectrum(dim=48, seed=2)
    x = gen.sample(1000, seed=3)
    assert x.shape == (1000, 48) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x, gen.sample(1000, seed=3, chunk=300))
    assert not np.array_equal(x, gen.sample(1000, seed=4))
    basis = gen.basis()
    np.testing.assert_allclose(basis @ basis.T, np.eye(48), atol=1e-5)


def test_no_cluster_structure() -> None:
    """k-means finds no more structure in it than in a Gaussian of the same covariance;
    in the clustered mixture it finds much more (the statistic sees clusters)."""
    spectrum = DecayingSpectrum(dim=64).sample(4000, seed=1)
    clustered = ClusteredSphere(dim=64, clusters=60, seed=0).sample(4000, seed=1)
    assert kmeans_gain(spectrum) - kmeans_gain(gaussian_twin(spectrum)) < 0.05
    assert kmeans_gain(clustered) - kmeans_gain(gaussian_twin(clustered)) > 0.15
    # nearest-neighbour cosines spread smoothly: no step at a cluster's size
    scores, _ = faiss.knn(spectrum[:200], spectrum, 257, metric=faiss.METRIC_INNER_PRODUCT)
    curve = np.median(scores[:, [1, 4, 16, 64, 256]], axis=0)
    drops = -np.diff(curve)
    assert (drops > 0).all() and drops.max() < 3 * drops.min()


def test_spectrum_decays_as_asked() -> None:
    gen = DecayingSpectrum(dim=64)
    lam = gen.eigenvalues()
    assert np.isclose(lam.sum(), 1.0) and (np.diff(lam) < 0).all()
    x = gen.sample(20_000, seed=1)
    eig = np.linalg.eigvalsh(np.cov(x.T))[::-1]
    ratio = (eig / eig.sum())[:32] / lam[:32]  # L2 normalisation bends it a little
    assert ratio.min() > 0.85 and ratio.max() < 1.15, ratio
    # a pure power law (knee 0) is recovered by the fit the benchmark uses
    pure = DecayingSpectrum(dim=64, alpha=1.4, knee=0.0)
    alpha, knee, r2 = fit_spectrum(pure.eigenvalues())
    assert abs(alpha - 1.4) < 1e-6 and knee == 0.0 and r2 > 0.999
    eig = np.linalg.eigvalsh(np.cov(pure.sample(20_000, seed=1).T))
    alpha, knee, r2 = fit_spectrum(eig)
    assert abs(alpha - 1.4) < 0.1 and knee <= 2 and r2 > 0.99


def test_fit_recovers_a_knee() -> None:
    gen = DecayingSpectrum(dim=128, alpha=5.2, knee=40.0)
    alpha, knee, r2 = fit_spectrum(gen.eigenvalues())
    assert abs(alpha - 5.2) < 0.05 and abs(knee - 40.0) <= 0.5 and r2 > 0.9999
    # the pure power law fits a flat head badly: the reason the knee is there
    assert fit_spectrum(gen.eigenvalues(), knee=False)[2] < 0.95
