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


def _cell_weights(frac: np.ndarray, s: float, m: int) -> np.ndarray:
    """Cell integrals of N(f, s²) (cell units) over cells -m..m around the particle's cell.

    ``frac`` (N,) is the position inside the particle's cell, in [0, 1). Returns (N, 2m+1)
    rows summing to 1 (the tails beyond the band go into its end cells). For s ≥ 0.05 the
    rows are interpolated linearly in ``frac`` from a table of 2048 exact rows (interpolation
    error ≤ (1/2048)²/(8s²)·max|Φ''| < 1e-5, far below the Monte-Carlo error; rows of the
    table sum to 1, so interpolated rows do too); below, they are computed exactly.
    """
    k = np.arange(-m, m + 2, dtype=float)  # cell edges relative to the particle's cell

    def rows(f):
        cdf = ndtr((k[None, :] - f[:, None]) / s)
        cdf[:, 0], cdf[:, -1] = 0.0, 1.0
        return np.diff(cdf, axis=1)

    if s < 0.05:
        return rows(frac)
    ntab = 2048
    tab = rows(np.linspace(0.0, 1.0, ntab + 1))
    pos = frac * ntab
    i = np.minimum(pos.astype(np.int64), ntab - 1)
    a = (pos - i)[:, None]
    return tab[i] * (1.0 - a) + tab[i + 1] * a


def _fold(ext: np.ndarray, n: int, pad: int, axis: int, boundary: str) -> np.ndarray:
    """Fold an axis of length n + 2·pad (cells -pad..n+pad-1) back onto n cells: mirror at the walls
    (exact for cell-centred grids: cell -1-j is the image of cell j) or wrap (periodic)."""
    ext = np.moveaxis(ext, axis, 0)
    idx = np.arange(-pad, n + pad)
    if boundary == "periodic":
        idx = idx % n
    else:
        idx = idx % (2 * n)
        idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    out = np.zeros((n,) + ext.shape[1:])
    np.add.at(out, idx, ext)
    return np.moveaxis(out, 0, axis)


def _axis_entries(c: np.ndarray, lo: float, h: float, n: int, sigma: float):
    """(extended column index (N, B), weight (N, B), pad) of every particle along one axis."""
    u = (c - lo) / h  # position in cell units; cell j is [j, j+1)
    j = np.floor(u)
    frac = u - j
    j = j.astype(np.int64)
    if sigma <= 0.0:
        return j[:, None], np.ones((c.size, 1)), 0
    s = sigma / h
    m = int(math.ceil(6.0 * s))
    w = _cell_weights(frac, s, m)
    pad = m + 1
    cols = j[:, None] + np.arange(-m, m + 1)[None, :] + pad
    return cols, w, pad


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
    if boundary not in ("reflecting", "periodic"):
        raise ValueError(f"boundary={boundary!r}; expected 'reflecting' or 'periodic'")
    n = tuple(int(k) for k in n)
    ents, vol = [], 1.0
    for j, ((lo, hi), nj) in enumerate(zip(domain, n)):
        h = (hi - lo) / nj
        vol *= h
        cols, w, pad = _axis_entries(centres[:, j], lo, h, nj, sigma)
        # a particle outside the box (never, after apply_boundary) would fall outside the padding
        cols = np.clip(cols, 0, nj + 2 * pad - 1)
        ents.append((cols, w, pad, nj + 2 * pad))
    if d == 1:
        cols, w, pad, L = ents[0]
        ext = np.bincount(cols.ravel(), weights=w.ravel(), minlength=L)
        rho = _fold(ext, n[0], pad, 0, boundary)
    else:  # isotropic kernel: the 2-D cell integral is the product of the 1-D ones
        mats = []
        for cols, w, pad, L in ents:
            rows = np.repeat(np.arange(N), cols.shape[1])
            mats.append(sparse.csr_matrix((w.ravel(), (rows, cols.ravel())), shape=(N, L)))
        ext = (mats[0].T @ mats[1]).toarray()
        rho = _fold(_fold(ext, n[0], ents[0][2], 0, boundary), n[1], ents[1][2], 1, boundary)
    return rho / (N * vol)
