"""Sample metrics: W₂ between empirical measures, the energy distance, sampling a gridded density,
and the path metrics of paired samples (trajectories)."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist

__all__ = ["w2_samples", "energy_distance", "sample_density", "path_kinetic_energy", "path_straightness"]


def _two_sets(X, Y) -> tuple[np.ndarray, np.ndarray]:
    """Two sample sets as (N, d) and (M, d) float arrays of one dimension d."""
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    Y = Y[:, None] if Y.ndim == 1 else Y
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"sample sets have dimensions {X.shape[1]} and {Y.shape[1]}; expected equal")
    return X, Y


def w2_samples(X: np.ndarray, Y: np.ndarray) -> float:
    """W₂ between the empirical measures of two sample sets (N, d), (M, d).

    1D: exact through sorting (equal sizes) — otherwise ``ot.emd2``.
    """
    X, Y = _two_sets(X, Y)
    if X.shape[1] == 1 and X.shape[0] == Y.shape[0]:
        return float(math.sqrt(np.mean((np.sort(X[:, 0]) - np.sort(Y[:, 0])) ** 2)))
    import ot

    M = ot.dist(X, Y, metric="sqeuclidean")
    wa = np.full(X.shape[0], 1.0 / X.shape[0])
    wb = np.full(Y.shape[0], 1.0 / Y.shape[0])
    return float(math.sqrt(max(ot.emd2(wa, wb, M, numItermax=10_000_000), 0.0)))


def sample_density(p: np.ndarray, axes, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` points from a gridded density read as a histogram (cells uniform).

    Returns an array (n, d).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (got {type(rng).__name__})")
    axes = tuple(np.asarray(a, dtype=float) for a in axes)
    w = np.clip(np.asarray(p, float), 0.0, None).reshape(-1)
    w = w / w.sum()
    idx = rng.choice(w.size, size=int(n), p=w)
    sub = np.unravel_index(idx, np.shape(p))
    out = np.empty((int(n), len(axes)))
    for j, ax in enumerate(axes):
        h = ax[1] - ax[0]
        out[:, j] = ax[sub[j]] + (rng.random(int(n)) - 0.5) * h
    return out


def energy_distance(X: np.ndarray, Y: np.ndarray, chunk: int = 2048) -> float:
    """Energy distance ``D² = 2E|X − Y| − E|X − X'| − E|Y − Y'|`` of two sample sets (N, d), (M, d).

    The V-statistic (all pairs, the diagonal included): it is ≥ 0 and is 0
    only for identical empirical measures; for two independent sets of the
    same law it is O(1/N), which is why a report shows it beside the same
    statistic between two truth sets (its floor). Cost O(NM) in blocks of ``chunk``.
    """
    X, Y = _two_sets(X, Y)

    def mean_dist(A, B):
        tot = 0.0
        for a in range(0, A.shape[0], chunk):
            tot += float(cdist(A[a:a + chunk], B).sum())
        return tot / (A.shape[0] * B.shape[0])

    return float(max(2.0 * mean_dist(X, Y) - mean_dist(X, X) - mean_dist(Y, Y), 0.0))


def _check_paths(paths: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    paths = np.asarray(paths, dtype=float)
    t = np.asarray(t, dtype=float)
    if paths.ndim != 3 or paths.shape[0] != t.size or t.size < 2:
        raise ValueError(f"paths have shape {paths.shape} for {t.size} times; expected (K ≥ 2, N, d) with K = len(t)")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"path times {t.tolist()} are not increasing")
    return paths, t


def path_kinetic_energy(paths: np.ndarray, t: np.ndarray, lam: float = 1.0) -> float:
    """Kinetic energy of the polygonal paths, ``(λ/2)·mean_n Σ_k |x_{k+1} − x_k|²/(t_{k+1} − t_k)``.

    For particles following a velocity field this approximates
    ``∫₀ᵀ∫(λ/2)|v|²ρ dx dt`` from below (Jensen on each interval), with
    equality for paths of constant velocity on each interval.
    """
    paths, t = _check_paths(paths, t)
    dx = np.diff(paths, axis=0)
    dt = np.diff(t)
    return float(0.5 * lam * ((dx * dx).sum(-1) / dt[:, None]).sum(0).mean())


def path_straightness(paths: np.ndarray, t: np.ndarray) -> float:
    """``mean |x_K − x_0|² / ((t_K − t_0) · mean Σ_k |Δx_k|²/Δt_k)`` ∈ [0, 1].

    The ratio of the energy of straight constant-speed paths between the
    same endpoints to the energy of the given paths: 1 exactly when every
    path is a straight segment run at constant speed (optimal transport
    with ν = 0), smaller the more the paths bend or change speed.
    """
    paths, t = _check_paths(paths, t)
    dx = np.diff(paths, axis=0)
    dt = np.diff(t)
    e_path = float(((dx * dx).sum(-1) / dt[:, None]).sum(0).mean())
    disp = paths[-1] - paths[0]
    e_line = float((disp * disp).sum(-1).mean() / (t[-1] - t[0]))
    return e_line / e_path if e_path > 0 else math.nan
