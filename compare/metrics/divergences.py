"""Divergences between gridded densities: L1 (and TV), Hellinger, KL with a floor.

Densities are grid arrays on one cell-centred grid (integral ``h^d Σ_i``);
``p`` is the truth, ``q`` the model. See docs/compare.md for the floors.
"""

from __future__ import annotations

import math

import numpy as np

from ._common import DEFAULT_KL_FLOOR, _unit

__all__ = ["l1_distance", "hellinger", "kl_divergence"]


def l1_distance(p: np.ndarray, q: np.ndarray, cell_volume: float) -> float:
    """‖q - p‖₁ = h^d Σ|q_i - p_i| (no normalisation; TV = L1/2)."""
    return float(np.abs(np.asarray(q, float) - np.asarray(p, float)).sum() * cell_volume)


def hellinger(p: np.ndarray, q: np.ndarray, cell_volume: float) -> float:
    """H(p̂, q̂) = sqrt(½ h^d Σ (√p̂ - √q̂)²) of the unit-mass normalisations, in [0, 1]."""
    p, q = _unit(p, cell_volume, "p"), _unit(q, cell_volume, "q")
    h2 = 0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum() * cell_volume
    return float(math.sqrt(max(h2, 0.0)))


def kl_divergence(p: np.ndarray, q: np.ndarray, cell_volume: float, floor: float = DEFAULT_KL_FLOOR) -> float:
    """KL_ε(p̂‖q̂) = h^d Σ_{p̂>ε} p̂ log(p̂ / max(q̂, ε)), ε = floor · max p̂.

    p̂, q̂ are the unit-mass normalisations (negatives clipped to 0); the
    floor keeps the value finite where the second argument vanishes.
    """
    p, q = _unit(p, cell_volume, "p"), _unit(q, cell_volume, "q")
    eps = floor * p.max()
    # cells where p̂ itself is below the floor are dropped: together they add at most ε|Ω|/e
    m = p > eps
    return float((p[m] * (np.log(p[m]) - np.log(np.maximum(q[m], eps)))).sum() * cell_volume)
