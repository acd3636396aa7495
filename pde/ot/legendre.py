"""c-transforms for the quadratic cost as separable discrete Legendre transforms.

For the cost c(x, y) = |x − y|²/(2s) on a box,

    ψ^c(x) = min_y |x − y|²/(2s) − ψ(y) = |x|²/(2s) − F*(x)/s,   F(y) = |y|²/2 − s ψ(y),

with F*(p) = max_y p·y − F(y) the Legendre transform of F restricted to the
grid. In 2D the maximum separates: first along the second axis for every row,
H(y₁, p₂) = max_{y₂} p₂y₂ − F(y₁, y₂), then along the first axis,
F*(p₁, p₂) = max_{y₁} p₁y₁ + H(y₁, p₂).

Each 1D transform is computed in linear time (Lucet 1997): the maximiser of
p·y − F over the samples is a vertex of their lower convex hull, and as the
slopes p increase the vertex moves monotonically along the hull. The grid
maximum is then refined by the parabola through the maximiser and its two
neighbours: when it is convex, its own maximum lies within one cell of the
grid maximiser (the parabola interpolates the neighbours, whose values do not
exceed the maximum) and can only raise the value. This removes the O(h²)
sawtooth of the grid maximum (the transform of a smooth F is then accurate to
O(h³)), which matters because the maps and densities of the route are
derivatives of these transforms.

Kernels go through the project's jit policy (:mod:`pde.fd._jit`); each has a
NumPy twin here (``*_np``) that finds the maximiser by brute force, so the two
share no code path.
"""

from __future__ import annotations

import numpy as np

__all__ = ["legendre_rows", "legendre_rows_np", "legendre", "c_transform", "hopf_lax"]


def _jit(parallel=False):
    from ..fd._jit import fd_jit

    return fd_jit(parallel=parallel)


def _legendre_rows_impl(F, y0, hy, p0, hp, refine, out):
    """out[r, j] = max_i (p_j y_i − F[r, i]), refined (see module docstring).

    Args:
        F: (m, n) rows of samples at y_i = y0 + i·hy.
        p0, hp: slopes p_j = p0 + j·hp, j = 0..out.shape[1]−1.
        refine: apply the parabolic refinement (else the plain grid maximum).
        out: (m, n_p) output.
    """
    m, n = F.shape
    npp = out.shape[1]
    for r in range(m):
        hull = np.empty(n, dtype=np.int64)
        k = 0
        for i in range(n):
            # Andrew's monotone chain, lower hull: pop while the last turn is not convex
            while k >= 2:
                a = hull[k - 2]
                b = hull[k - 1]
                # slope(a, b) >= slope(b, i)  <=>  b is not strictly below the chord a–i
                if (F[r, b] - F[r, a]) * (i - b) >= (F[r, i] - F[r, b]) * (b - a):
                    k -= 1
                else:
                    break
            hull[k] = i
            k += 1
        v = 0
        for j in range(npp):
            p = p0 + j * hp
            # advance while the next hull edge is steeper than p (the maximiser moves right)
            while v < k - 1:
                a = hull[v]
                b = hull[v + 1]
                if (F[r, b] - F[r, a]) <= p * (b - a) * hy:
                    v += 1
                else:
                    break
            i = hull[v]
            best = p * (y0 + i * hy) - F[r, i]
            if refine and 0 < i < n - 1:
                d1 = (F[r, i + 1] - F[r, i - 1]) / (2.0 * hy)
                d2 = (F[r, i + 1] - 2.0 * F[r, i] + F[r, i - 1]) / (hy * hy)
                if d2 > 0.0:
                    dl = (p - d1) / d2
                    val = p * (y0 + i * hy + dl) - (F[r, i] + d1 * dl + 0.5 * d2 * dl * dl)
                    if val > best:
                        best = val
            out[r, j] = best
    return out


_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _jit(parallel=False)(_legendre_rows_impl)
    return _KERNEL


def legendre_rows(F, y0: float, hy: float, p0: float, hp: float, n_p: int | None = None,
                  refine: bool = True) -> np.ndarray:
    """Discrete Legendre transform of every row of F (Numba kernel; see module docstring)."""
    F = np.ascontiguousarray(F, dtype=float)
    out = np.empty((F.shape[0], F.shape[1] if n_p is None else int(n_p)))
    return _kernel()(F, float(y0), float(hy), float(p0), float(hp), bool(refine), out)


def legendre_rows_np(F, y0: float, hy: float, p0: float, hp: float, n_p: int | None = None,
                     refine: bool = True) -> np.ndarray:
    """NumPy twin of :func:`legendre_rows`: brute-force maximiser, then the same refinement."""
    F = np.asarray(F, dtype=float)
    m, n = F.shape
    y = y0 + hy * np.arange(n)
    p = p0 + hp * np.arange(n if n_p is None else int(n_p))
    vals = p[None, :, None] * y[None, None, :] - F[:, None, :]  # (m, n_p, n)
    i = np.argmax(vals, axis=-1)
    best = np.take_along_axis(vals, i[..., None], -1)[..., 0]
    inner = (i > 0) & (i < n - 1) & bool(refine)
    ic = np.clip(i, 1, n - 2)
    rows = np.arange(m)[:, None]
    fm, f0, fp = F[rows, ic - 1], F[rows, ic], F[rows, ic + 1]
    d1 = (fp - fm) / (2 * hy)
    d2 = (fp - 2 * f0 + fm) / hy**2
    ok = inner & (d2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dl = np.where(ok, (p[None, :] - d1) / np.where(ok, d2, 1.0), 0.0)
    val = p[None, :] * (y[ic] + dl) - (f0 + d1 * dl + 0.5 * d2 * dl**2)
    return np.where(ok & (val > best), val, best)


def legendre(F: np.ndarray, axes: tuple, kernel: bool = True, refine: bool = True) -> np.ndarray:
    """F*(p) = max_y p·y − F(y) over the grid ``axes``, slopes p on the same grid (1D or 2D)."""
    base = legendre_rows if kernel else legendre_rows_np

    def rows(A, y0, hy, p0, hp):
        return base(A, y0, hy, p0, hp, refine=refine)

    F = np.asarray(F, dtype=float)
    if F.ndim == 1:
        a = axes[0]
        return rows(F[None, :], a[0], a[1] - a[0], a[0], a[1] - a[0])[0]
    if F.ndim != 2:
        raise ValueError(f"legendre: F has {F.ndim} dimensions; expected 1 or 2")
    a0, a1 = axes
    H = rows(F, a1[0], a1[1] - a1[0], a1[0], a1[1] - a1[0])  # H(y1, p2)
    G = rows(np.ascontiguousarray((-H).T), a0[0], a0[1] - a0[0], a0[0], a0[1] - a0[0])  # (p2, p1)
    return G.T


def _sq(axes: tuple) -> np.ndarray:
    if len(axes) == 1:
        return 0.5 * axes[0] ** 2
    return 0.5 * (axes[0][:, None] ** 2 + axes[1][None, :] ** 2)


def c_transform(psi: np.ndarray, axes: tuple, s: float = 1.0, kernel: bool = True, refine: bool = True) -> np.ndarray:
    """ψ^c(x) = min_y |x − y|²/(2s) − ψ(y) on the grid (x and y on the same cell-centred grid).

    ``refine=False`` gives the exact grid minimum, for which ψ^{ccc} = ψ^c holds exactly (the
    discrete duality the back-and-forth ascent relies on); ``refine=True`` the O(h³) values.
    """
    if not s > 0:
        raise ValueError(f"c_transform: s={s!r}; expected s > 0")
    q = _sq(axes)
    return (q - legendre(q - s * np.asarray(psi, dtype=float), axes, kernel, refine)) / s


def hopf_lax(g: np.ndarray, axes: tuple, s: float, kernel: bool = True) -> np.ndarray:
    """u(x) = min_y g(y) + |x − y|²/(2s): the viscosity solution of ∂_s u + |∇u|²/2 = 0 at time s."""
    if s == 0:
        return np.array(g, dtype=float)
    return c_transform(-np.asarray(g, dtype=float), axes, s, kernel)
