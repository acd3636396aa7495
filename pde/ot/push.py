"""Push-forwards of grid densities by gradient maps, on cell-centred reflecting boxes.

A map of the route is S(y) = y − ∇ψ(y) for a potential ψ with |y|²/2 − ψ
convex. Two discretisations of a push-forward are provided:

- **Jacobian formula** (:func:`push_jacobian`): for the map T whose inverse is
  S, T#μ(y) = μ(S(y)) · det(I − D²ψ(y)), with ∇ψ and D²ψ by centred
  differences (mirror ghost cells: the Neumann wall) and μ at the off-grid
  points S(y) by a cubic spline of the grid density (or an exact callable).
  Second order where ψ is smooth; its discrete mass is 1 + O(h²).
- **Cloud-in-cell deposit** (:func:`push_cic`): every cell's mass is split into
  k^d sub-cell particles, each moved by T and deposited bilinearly on the four
  (two in 1D) nearest cell centres. Mass is conserved to round-off by
  construction (a particle beyond the outermost centres gives all its mass to
  the boundary cell: the wall reflects).

The route uses the Jacobian formula and renormalises the result (mass to
round-off); ``docs/ot.md`` records the measured orders of the two.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mirror_gradient", "hessian_det", "Interpolant", "push_jacobian", "push_cic", "cic_deposit", "cic_deposit_np"]


def _pad(u):
    return np.pad(u, 1, mode="symmetric")  # cell-centred mirror: the Neumann wall


def mirror_gradient(u: np.ndarray, h: tuple) -> np.ndarray:
    """Centred-difference gradient with mirror ghosts (the Neumann wall of the cell-centred grid, consistent with :func:`hessian_det`), shape (d, *u.shape); unlike :func:`pde.grid.gradient` it puts the wall half a cell beyond the end node."""
    up = _pad(u)
    if u.ndim == 1:
        return ((up[2:] - up[:-2]) / (2 * h[0]))[None]
    gx = (up[2:, 1:-1] - up[:-2, 1:-1]) / (2 * h[0])
    gy = (up[1:-1, 2:] - up[1:-1, :-2]) / (2 * h[1])
    return np.stack([gx, gy])


def hessian_det(u: np.ndarray, h: tuple) -> np.ndarray:
    """det(I − D²u) by centred second differences (mirror ghosts)."""
    up = _pad(u)
    if u.ndim == 1:
        return 1.0 - (up[2:] - 2 * up[1:-1] + up[:-2]) / h[0] ** 2
    c = up[1:-1, 1:-1]
    uxx = (up[2:, 1:-1] - 2 * c + up[:-2, 1:-1]) / h[0] ** 2
    uyy = (up[1:-1, 2:] - 2 * c + up[1:-1, :-2]) / h[1] ** 2
    uxy = (up[2:, 2:] - up[2:, :-2] - up[:-2, 2:] + up[:-2, :-2]) / (4 * h[0] * h[1])
    return (1.0 - uxx) * (1.0 - uyy) - uxy * uxy


class Interpolant:
    """Cubic-spline interpolant of grid values (mirror boundary), evaluated at points (d, ...)."""

    def __init__(self, values: np.ndarray, axes: tuple, order: int = 3):
        self.axes = axes
        self.order = order
        self.lo = np.array([a[0] for a in axes])
        self.h = np.array([a[1] - a[0] for a in axes])
        self.hi = np.array([a[-1] for a in axes])
        v = np.asarray(values, dtype=float)
        self.coef = ndimage.spline_filter(v, order=order, mode="mirror") if order > 1 else np.ascontiguousarray(v)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=float)
        shp = (len(self.axes),) + (1,) * (pts.ndim - 1)
        # clamp to the outermost centres (beyond them the walls hold no further information)
        idx = (np.clip(pts, self.lo.reshape(shp), self.hi.reshape(shp)) - self.lo.reshape(shp)) / self.h.reshape(shp)
        return ndimage.map_coordinates(self.coef, idx, order=self.order, mode="mirror", prefilter=False)


def push_jacobian(density, psi: np.ndarray, axes: tuple, h: tuple, grad=None) -> np.ndarray:
    """T#μ on the grid, for the map T = S⁻¹ with S(y) = y − ∇ψ(y) (see module docstring).

    Args:
        density: a callable on points (d, *shape) -> (*shape) giving μ (an :class:`Interpolant`
            or an exact density).
        psi: (*shape) potential of the inverse map.
        grad: optional precomputed :func:`mirror_gradient` of ψ.
    Returns:
        (*shape) pushed density, ≥ 0, not renormalised.
    """
    g = mirror_gradient(psi, h) if grad is None else grad
    pts = np.stack(np.meshgrid(*axes, indexing="ij")) - g
    det = np.clip(hessian_det(psi, h), 0.0, None)
    return np.clip(density(pts), 0.0, None) * det


# ---------------------------------------------------------------------------
# cloud-in-cell
# ---------------------------------------------------------------------------


def _cic1_impl(pos, mass, lo, h, out):
    """Deposit particles (N, 1) with masses (N,) linearly on the cell centres (out: (n0,) masses)."""
    n0 = out.shape[0]
    for p in range(pos.shape[0]):
        s = (pos[p, 0] - lo[0]) / h[0] - 0.5
        s = min(max(s, 0.0), n0 - 1.0)
        i = min(int(s), n0 - 2)
        w = s - i
        out[i] += (1.0 - w) * mass[p]
        out[i + 1] += w * mass[p]
    return out


def _cic2_impl(pos, mass, lo, h, out):
    """Deposit particles (N, 2) with masses (N,) bilinearly on the cell centres (out: (n0, n1) masses)."""
    n0 = out.shape[0]
    n1 = out.shape[1]
    for p in range(pos.shape[0]):
        s0 = (pos[p, 0] - lo[0]) / h[0] - 0.5
        s1 = (pos[p, 1] - lo[1]) / h[1] - 0.5
        s0 = min(max(s0, 0.0), n0 - 1.0)
        s1 = min(max(s1, 0.0), n1 - 1.0)
        i = min(int(s0), n0 - 2)
        j = min(int(s1), n1 - 2)
        w0 = s0 - i
        w1 = s1 - j
        m = mass[p]
        out[i, j] += (1.0 - w0) * (1.0 - w1) * m
        out[i + 1, j] += w0 * (1.0 - w1) * m
        out[i, j + 1] += (1.0 - w0) * w1 * m
        out[i + 1, j + 1] += w0 * w1 * m
    return out


_CIC: dict = {}


def cic_deposit(pos: np.ndarray, mass: np.ndarray, lo, h, shape) -> np.ndarray:
    """Masses deposited on the cell centres (Numba kernel), shape ``shape``."""
    d = len(shape)
    if d not in _CIC:
        from ..fd._jit import fd_jit

        _CIC[d] = fd_jit(parallel=False)(_cic1_impl if d == 1 else _cic2_impl)
    out = np.zeros(tuple(shape))
    return _CIC[d](np.ascontiguousarray(pos, dtype=float), np.ascontiguousarray(mass, dtype=float),
                   np.asarray(lo, dtype=float), np.asarray(h, dtype=float), out)


def cic_deposit_np(pos: np.ndarray, mass: np.ndarray, lo, h, shape) -> np.ndarray:
    """NumPy twin of :func:`cic_deposit` (``np.add.at`` scatter)."""
    pos = np.asarray(pos, dtype=float)
    d = pos.shape[1]
    lo, h = np.asarray(lo, float), np.asarray(h, float)
    n = np.asarray(shape)
    s = np.clip((pos - lo) / h - 0.5, 0.0, n - 1.0)
    i = np.minimum(np.floor(s).astype(int), n - 2)
    w = s - i
    out = np.zeros(tuple(shape))
    if d == 1:
        np.add.at(out, i[:, 0], (1 - w[:, 0]) * mass)
        np.add.at(out, i[:, 0] + 1, w[:, 0] * mass)
        return out
    for a in (0, 1):
        for b in (0, 1):
            wt = (w[:, 0] if a else 1 - w[:, 0]) * (w[:, 1] if b else 1 - w[:, 1])
            np.add.at(out, (i[:, 0] + a, i[:, 1] + b), wt * mass)
    return out


def push_cic(mu: np.ndarray, phi: np.ndarray, axes: tuple, h: tuple, k: int = 2, kernel: bool = True) -> np.ndarray:
    """T#μ for T(x) = x − ∇φ(x) by cloud-in-cell with k^d particles per cell (density, mass exact)."""
    d = mu.ndim
    g = mirror_gradient(phi, h)
    sub = (np.arange(k) + 0.5) / k - 0.5  # sub-cell offsets in units of h
    lo = np.array([a[0] - 0.5 * hh for a, hh in zip(axes, h)])
    if d == 1:
        x = (axes[0][:, None] + sub[None, :] * h[0]).ravel()
        gi = Interpolant(g[0], axes)(x[None])
        pos = (x - gi)[:, None]
        mass = np.repeat(mu * h[0] / k, k)
    else:
        xs = (axes[0][:, None] + sub[None, :] * h[0]).ravel()
        ys = (axes[1][:, None] + sub[None, :] * h[1]).ravel()
        X, Y = np.meshgrid(xs, ys, indexing="ij")
        pts = np.stack([X, Y])
        gx = Interpolant(g[0], axes)(pts)
        gy = Interpolant(g[1], axes)(pts)
        pos = np.stack([(X - gx).ravel(), (Y - gy).ravel()], axis=1)
        mass = np.repeat(np.repeat(mu, k, axis=0), k, axis=1).ravel() * (h[0] * h[1] / k**2)
    dep = (cic_deposit if kernel else cic_deposit_np)(pos, mass, lo, h, mu.shape)
    return dep / float(np.prod(h))
