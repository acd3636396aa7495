"""Displacement interpolation ρ_s = ((1 − s)·id + s·T)#μ of a solved JKO step.

With T(x) = x − ∇φ(x), the intermediate map is T_s(x) = x − s∇φ(x), the
gradient of the convex |x|²/2 − sφ (a convex combination of |x|²/2 and
|x|²/2 − φ). Two push-forwards onto the grid:

- ``"jacobian"`` (default): for every node z, damped Newton's method on
  x − s∇φ(x) = z (∇φ and D²φ by centred differences, cubic splines between
  nodes; the Jacobian I − sD²φ is positive definite where |x|²/2 − φ is
  convex), with continuation in s, then ρ_s(z) = μ(x) / det(I − sD²φ(x)).
  Second order, exact for affine maps up to the spline of μ. Nodes whose
  preimage is not found or where the discrete potential is not convex (far
  tails and walls, where μ ≈ 0 leaves φ undetermined) get ρ_s = 0 and are
  counted in ``unresolved_nodes``;
- ``"cic"``: cloud-in-cell deposit of k^d particles per cell
  (:func:`pde.ot.push.push_cic`); mass exact by construction, but the lattice
  of equal-mass particles, deposited on a grid it is not commensurate with,
  leaves a moiré whose size is set by k alone, not by h (measured in
  docs/ot.md: L1 2.6e-2 at k = 3 on 64² to 256²).

Both are renormalised to discrete mass 1 (the Jacobian push carries an O(h²)
mass defect, reported as ``mass_before_normalisation``).
"""

from __future__ import annotations

import numpy as np

from .push import Interpolant, mirror_gradient, push_cic

__all__ = ["displacement", "PUSHES", "Displacement", "PushStats", "UNRESOLVED_MASS_MAX"]

PUSHES = ("jacobian", "cic")
#: a node's preimage counts as found when |x − s∇φ(x) − z| ≤ NEWTON_TOL·h
NEWTON_TOL = 1e-6
#: the largest (estimated) mass of unresolved nodes a returned time level may carry: a tenth of
#: the 1e-3 truth-error target (measured ≤ 1.5e-5 on the suite's cases, docs/ot.md)
UNRESOLVED_MASS_MAX = 1e-4


def _derivatives(phi: np.ndarray, h: tuple):
    up = np.pad(phi, 1, mode="symmetric")
    g = mirror_gradient(phi, h)
    if phi.ndim == 1:
        return g, ((up[2:] - 2 * up[1:-1] + up[:-2]) / h[0] ** 2,)
    c = up[1:-1, 1:-1]
    hxx = (up[2:, 1:-1] - 2 * c + up[:-2, 1:-1]) / h[0] ** 2
    hyy = (up[1:-1, 2:] - 2 * c + up[1:-1, :-2]) / h[1] ** 2
    hxy = (up[2:, 2:] - up[2:, :-2] - up[:-2, 2:] + up[:-2, :-2]) / (4 * h[0] * h[1])
    return g, (hxx, hyy, hxy)


class Displacement:
    """Precomputed splines of ∇φ and D²φ for repeated ρ_s evaluations."""

    def __init__(self, phi: np.ndarray, axes: tuple, newton_iter: int = 12):
        self.axes = axes
        self.h = tuple(float(a[1] - a[0]) for a in axes)
        self.phi = phi
        g, H = _derivatives(phi, self.h)
        self.g = [Interpolant(gi, axes) for gi in g]
        self.H = [Interpolant(Hi, axes) for Hi in H]
        self.H1 = [Interpolant(Hi, axes, order=1) for Hi in H]  # Newton's Jacobian only: speed, not accuracy
        self.mesh = np.stack(np.meshgrid(*axes, indexing="ij"))
        self.lo = np.array([a[0] for a in axes]).reshape((-1,) + (1,) * phi.ndim)
        self.hi = np.array([a[-1] for a in axes]).reshape((-1,) + (1,) * phi.ndim)
        self.newton_iter = newton_iter
        self._last = None

    def _residual(self, x, s, z):
        return x - s * np.stack([gi(x) for gi in self.g]) - z

    def _jac(self, x, s, H=None):
        """Entries of I − sD²φ(x): (a,) in 1D, (a, b, c) in 2D, and the determinant."""
        H = self.H if H is None else H
        if len(self.axes) == 1:
            a = 1.0 - s * H[0](x)
            return (a,), a
        hxx, hyy, hxy = (Hi(x) for Hi in H)
        a, b, c = 1.0 - s * hxx, 1.0 - s * hyy, -s * hxy
        return (a, b, c), a * b - c * c

    def _newton(self, x, s, z):
        """Damped Newton on x − s∇φ(x) = z from x (per node: the step halves until |r| decreases).

        Works on the nodes not yet solved (|r| > 1e-13 h) and stops when an iteration improves none.
        """
        d = len(self.axes)
        shape = x.shape[1:]
        X = x.reshape(d, -1).copy()
        Z = z.reshape(d, -1)
        R = self._residual(X, s, Z)
        NR = np.sqrt((R * R).sum(0))
        stop = 1e-10 * max(self.h)
        live = np.ones(NR.shape, dtype=bool)  # nodes still converging (frozen when Newton stops contracting)
        for _ in range(self.newton_iter):
            act = np.flatnonzero((NR > stop) & live)
            if act.size == 0:
                break
            xa, ra, na, za = X[:, act], R[:, act], NR[act], Z[:, act]
            J, det = self._jac(xa, s, self.H1)
            det = np.where(det > 1e-12, det, 1e-12)
            if d == 1:
                dx = ra / det
            else:
                a, b, c = J
                dx = np.stack([(b * ra[0] - c * ra[1]) / det, (a * ra[1] - c * ra[0]) / det])
            lo, hi = self.lo.reshape(d, 1), self.hi.reshape(d, 1)
            xt = np.clip(xa - dx, lo, hi)
            rt = self._residual(xt, s, za)
            nt = np.sqrt((rt * rt).sum(0))
            lam = 1.0
            for _ in range(3):  # halve the step where the residual did not fall (only those nodes)
                bad = np.flatnonzero(nt >= na)
                if bad.size == 0:
                    break
                lam *= 0.5
                xb = np.clip(xa[:, bad] - lam * dx[:, bad], lo, hi)
                rb = self._residual(xb, s, za[:, bad])
                xt[:, bad], rt[:, bad], nt[bad] = xb, rb, np.sqrt((rb * rb).sum(0))
            take = nt < na
            if not take.any():
                break
            live[act[~take]] = False
            live[act[nt > 0.9 * na]] = False  # not contracting: walls and tails where φ is not convex
            X[:, act[take]] = xt[:, take]
            R[:, act[take]] = rt[:, take]
            NR[act[take]] = nt[take]
        return X.reshape((d,) + shape), float(NR.max())

    def preimage(self, s: float):
        """x with x − s∇φ(x) = z for every node z, and det(I − sD²φ(x)); Newton residual (max).

        Continuation in s: the preimage at the last solved s' ≤ s (or z at s = 0) starts
        Newton's method for s, in increments of at most 0.25.
        """
        z = self.mesh
        s0, x = self._last if self._last is not None and self._last[0] <= s else (0.0, z.copy())
        res = 0.0
        while s0 < s:
            s1 = min(s, s0 + 0.25)
            x, res = self._newton(x, s1, z)
            s0 = s1
        self._last = (s, x)
        _, det = self._jac(x, s)
        r = self._residual(x, s, z)
        ok = (np.sqrt((r * r).sum(0)) <= NEWTON_TOL * max(self.h)) & (det > 0)
        return x, det, ok


def _unresolved_mass(rho: np.ndarray, ok: np.ndarray, vol: float) -> float:
    """Upper estimate of the mass the unresolved nodes would carry: h^d Σ over them of the largest
    resolved ρ in their 3^d neighbourhood (0 where they lie in the empty tails)."""
    if ok.all():
        return 0.0
    from scipy.ndimage import maximum_filter

    return vol * float(maximum_filter(rho, size=3, mode="nearest")[~ok].sum())


def displacement(mu: np.ndarray, phi: np.ndarray, axes: tuple, s: float, *, mu_fn=None, push: str = "jacobian",
                 cic_particles: int = 3, disp: Displacement | None = None):
    """ρ_s on the grid (mass 1) and diagnostics {mass_before_normalisation, unresolved_nodes, unresolved_mass}.

    Args:
        mu: (*shape) initial density on the grid.
        phi: (*shape) potential of the step's map T = id − ∇φ.
        s: interpolation parameter in [0, 1] (s = t/T).
        mu_fn: μ on points (d, *shape) (exact initial law); default: cubic spline of ``mu``.
        push: ``"jacobian"`` or ``"cic"`` (see module docstring).
        disp: a :class:`Displacement` of ``phi`` to reuse across times.
    """
    if push not in PUSHES:
        raise ValueError(f"push={push!r}; expected one of {list(PUSHES)}")
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"s={s}; expected an interpolation parameter in [0, 1]")
    h = tuple(float(a[1] - a[0]) for a in axes)
    vol = float(np.prod(h))
    if s == 0.0:
        return mu / (vol * mu.sum()), {"mass_before_normalisation": vol * float(mu.sum()), "unresolved_nodes": 0,
                                       "unresolved_mass": 0.0}
    if push == "cic":
        rho = push_cic(mu, s * phi, axes, h, k=cic_particles)
        info = {"unresolved_nodes": 0, "unresolved_mass": 0.0}
    else:
        d = disp if disp is not None else Displacement(phi, axes)
        x, det, ok = d.preimage(s)
        f = mu_fn if mu_fn is not None else Interpolant(mu, axes)
        rho = np.where(ok, np.clip(f(x), 0.0, None) / np.where(ok, det, 1.0), 0.0)
        info = {"unresolved_nodes": int((~ok).sum()), "unresolved_mass": _unresolved_mass(rho, ok, vol)}
    m = vol * float(rho.sum())
    info["mass_before_normalisation"] = m
    return rho / m, info


class PushStats:
    """The push diagnostics of the time levels a solution returns, kept as their maxima.

    ``add`` raises :class:`pde.ot.bfm.OTConvergenceError` when a returned level's unresolved nodes
    may carry more than :data:`UNRESOLVED_MASS_MAX` of mass (the renormalisation would spread that
    error silently); a level that is only a certificate (``used=False``) is recorded apart.
    """

    def __init__(self):
        self.nodes = 0
        self.mass = 0.0
        self.defect = 0.0
        self.certificate_mass = 0.0

    def add(self, info: dict, t: float, used: bool = True) -> None:
        if not used:
            self.certificate_mass = max(self.certificate_mass, info["unresolved_mass"])
            return
        self.nodes = max(self.nodes, info["unresolved_nodes"])
        self.mass = max(self.mass, info["unresolved_mass"])
        self.defect = max(self.defect, abs(info["mass_before_normalisation"] - 1.0))
        if info["unresolved_mass"] > UNRESOLVED_MASS_MAX:
            from .bfm import OTConvergenceError

            raise OTConvergenceError(
                f"displacement push at t={t:g}: nodes without a preimage (or where the discrete potential is "
                f"not convex) may carry {info['unresolved_mass']:.2e} of mass > {UNRESOLVED_MASS_MAX:g} "
                f"({info['unresolved_nodes']} nodes); refine the grid, or use push='cic'", [info])

    def meta(self) -> dict:
        return {"push_mass_defect": self.defect, "unresolved_nodes": self.nodes, "unresolved_mass": self.mass,
                "push_T_unresolved_mass": self.certificate_mass}
