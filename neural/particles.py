"""Particles on a box and their density on the cell-centred grid (numpy).

- :func:`apply_boundary`: reflect (mirror at the walls) or wrap particles into the box.
- :func:`mixture_cell_density`: the cell averages of the Gaussian mixture
  (1/N) Σ_i N(c_i, σ² I) folded into the box, i.e. for node j with cell C_j

      ρ_j = (1/|C_j|) ∫_{C_j} (1/N) Σ_i K_σ(x - c_i) dx,

  where K_σ is folded at reflecting walls (mass leaving the box is mirrored back,
  as the reflected process does) or wrapped for periodic ones. Each particle's
  cell integrals are differences of the normal CDF over a band of ±(6σ + h) cells;
  the two tails beyond the band go into the band's end cells, so every particle
  carries mass exactly 1 and the grid mass h^d Σρ is 1 to round-off.
  σ = 0 gives the histogram (cell counts / (N h^d)).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.special import ndtr

__all__ = ["apply_boundary", "mixture_cell_density"]


def apply_boundary(x, domain, boundary: str):
    """Map positions into the box: mirror at reflecting walls, wrap for periodic ones.

    Works on numpy arrays and torch tensors of shape (N, d). One mirror is applied
    (a particle cannot cross a whole box in one step: the steps are far smaller).
    """
    if boundary not in ("reflecting", "periodic"):
        raise ValueError(f"boundary={boundary!r}; expected 'reflecting' or 'periodic'")
    is_np = isinstance(x, np.ndarray)
    cols = []
    for j, (lo, hi) in enumerate(domain):
        c = x[:, j]
        if boundary == "periodic":
            L = hi - lo
            c = lo + ((c - lo) % L)
        elif is_np:
            c = np.where(c < lo, 2 * lo - c, c)
            c = np.where(c > hi, 2 * hi - c, c)
        else:
            import torch

            c = torch.where(c < lo, 2 * lo - c, c)
            c = torch.where(c > hi, 2 * hi - c, c)
        cols.append(c)
    if is_np:
        return np.stack(cols, axis=1)
    import torch

    return torch.stack(cols, dim=1)


def _axis_weights(c: np.ndarray, lo: float, h: float, n: int, sigma: float, boundary: str):
    """Per-particle cell integrals along one axis: (rows, cols, weights) of an (N, n) sparse matrix."""
    N = c.size
    u = (c - lo) / h  # position in cell units; cell j is [j, j+1)
    if sigma <= 0.0:
        j = np.clip(np.floor(u).astype(np.int64), 0, n - 1) if boundary == "reflecting" else \
            np.floor(u).astype(np.int64) % n
        return np.arange(N), j, np.ones(N)
    s = sigma / h
    m = int(math.ceil(6.0 * s)) + 1
    j0 = np.floor(u).astype(np.int64) - m  # first cell of the band
    k = np.arange(2 * m + 2)
    edges = (j0[:, None] + k[None, :]) - u[:, None]  # cell edges relative to the centre, in cells
    cdf = ndtr(edges / s)
    cdf[:, 0] = 0.0  # the lower tail goes into the first band cell
    cdf[:, -1] = 1.0  # the upper tail into the last one
    w = np.diff(cdf, axis=1)  # (N, 2m+1), rows sum to 1 exactly up to round-off
    cols = j0[:, None] + k[None, :-1]
    if boundary == "periodic":
        cols = cols % n
    else:  # mirror the cell index at the walls (exact for cell-centred grids), as often as needed
        period = 2 * n
        cols = cols % period
        cols = np.where(cols >= n, period - 1 - cols, cols)
    rows = np.repeat(np.arange(N), 2 * m + 1)
    return rows, cols.ravel(), w.ravel()


def mixture_cell_density(centres: np.ndarray, sigma: float, domain, n, boundary: str = "reflecting") -> np.ndarray:
    """Cell averages of the folded mixture (1/N) Σ_i N(c_i, σ²I) on the cell-centred grid.

    Args:
        centres: (N, d) mixture centres, d = 1 or 2.
        sigma: kernel standard deviation (same in every direction); 0 gives the histogram.
        domain: [(lo, hi)] * d.
        n: nodes per dimension.
        boundary: "reflecting" (fold at the walls) or "periodic" (wrap).

    Returns:
        (n₁[, n₂]) density with h^d Σρ = 1 to round-off.
    """
    centres = np.asarray(centres, dtype=float)
    N, d = centres.shape
    if d not in (1, 2):
        raise ValueError(f"centres have d={d}; expected 1 or 2")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma={sigma}; expected a finite number >= 0")
    n = tuple(int(k) for k in n)
    mats = []
    vol = 1.0
    for j, ((lo, hi), nj) in enumerate(zip(domain, n)):
        h = (hi - lo) / nj
        vol *= h
        r, c, w = _axis_weights(centres[:, j], lo, h, nj, sigma, boundary)
        mats.append(sparse.csr_matrix((w, (r, c)), shape=(N, nj)))
    if d == 1:
        rho = np.asarray(mats[0].sum(axis=0)).ravel()
    else:  # isotropic kernel: the 2-D cell integral is the product of the 1-D ones
        rho = (mats[0].T @ mats[1]).toarray()
    return rho / (N * vol)
