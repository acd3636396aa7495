"""Helpers shared by the studies: trajectory statistics, warm FD solves, seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np


def pairwise_rms(paths: list[np.ndarray]) -> tuple[float, float]:
    """Mean over seed pairs of the RMS path distance and of the RMS terminal distance.

    ``paths[k]`` has shape (nt+1, N, d), the same x0 for every k. The path
    distance is sqrt(mean over t and particles of |X_i - X_j|²) (uniform time
    levels); the terminal distance uses t = T only.
    """
    if len(paths) < 2:
        return math.nan, math.nan
    dp, dT = [], []
    for a, b in itertools.combinations(paths, 2):
        sq = ((a - b) ** 2).sum(-1)
        dp.append(math.sqrt(sq.mean()))
        dT.append(math.sqrt(sq[-1].mean()))
    return float(np.mean(dp)), float(np.mean(dT))


def path_energy(path: np.ndarray, T: float) -> float:
    """½ E ∫₀ᵀ |Ẋ|² dt from the discrete path (nt+1, N, d): ½ Σ_j |ΔX_j|²/Δt, averaged over particles.

    A lower bound of the continuous energy (Jensen on each interval); exact for straight paths at constant speed.
    """
    dt = T / (path.shape[0] - 1)
    return float(0.5 * (np.diff(path, axis=0) ** 2).sum(-1).sum(0).mean() / dt)


def rms_distance(a: np.ndarray, b: np.ndarray) -> float:
    """sqrt(mean over t and particles of |a - b|²) for paths (nt+1, N, d)."""
    return float(math.sqrt(((a - b) ** 2).sum(-1).mean()))


def integrate_velocity(velocity, x0: np.ndarray, T: float, nt: int, substeps: int = 8) -> np.ndarray:
    """Paths of dx/dt = velocity(x, t) from x0 (N, d) by RK4; returns (nt+1, N, d)."""
    x = np.array(x0, dtype=float)
    out = [x.copy()]
    h = T / (nt * substeps)
    t = 0.0
    for _ in range(nt):
        for _ in range(substeps):
            k1 = velocity(x, t)
            k2 = velocity(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = velocity(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = velocity(x + h * k3, t + h)
            x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        out.append(x.copy())
    return np.stack(out)


def spread(values) -> float:
    """Relative spread std/|mean| (sample std, ddof = 1) of a list of numbers."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return math.nan
    return float(v.std(ddof=1) / abs(v.mean()))


def newton_count(meta: dict) -> int:
    """Newton iterations of an FD solve, all continuation stages included."""
    hist = meta.get("residual_history") or []
    cont = meta.get("continuation") or ""
    if meta.get("levels"):  # grid continuation: the solver counts them over all levels
        return int(meta["total_newton_iterations"])
    if not hist:
        return int(meta.get("iterations") or 0)
    if isinstance(cont, str) and "stages" in cont:  # each stage's history starts with its initial residual
        return len(hist) - int(cont.split("(")[1].split()[0])
    return len(hist) - 1
