"""Field metrics on the grid: derivatives, potential error modulo a constant, score error,
kinetic energy and the HJB residual (DESIGN §2 signs)."""

from __future__ import annotations

import math

import numpy as np

from pde.grid import gradient
from pde.problem import LocalCoupling, LQCoupling, MFGProblem, NoCoupling
from pde.solution import MFGSolution

from ._common import DEFAULT_FLOOR, _mesh_points, _region, _vol

__all__ = ["gradient", "potential_error", "score_error", "kinetic_energy", "hjb_residual"]


def _laplacian_interior(f: np.ndarray, axes, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """3-point Laplacian on the trailing axes; returns (Δf, interior mask of the grid shape)."""
    d = len(axes)
    lap = np.zeros_like(f)
    shape = f.shape[f.ndim - d:]
    interior = np.ones(shape, dtype=bool)
    for j, ax in enumerate(axes):
        axis = f.ndim - d + j
        h = float(ax[1] - ax[0])
        lap += (np.roll(f, -1, axis=axis) - 2 * f + np.roll(f, 1, axis=axis)) / (h * h)
        if boundary != "periodic":
            sl = [slice(None)] * d
            sl[j] = 0
            interior[tuple(sl)] = False
            sl[j] = -1
            interior[tuple(sl)] = False
    return lap, interior


def _grad_interior(f: np.ndarray, axes, boundary: str) -> np.ndarray:
    """Central differences everywhere (the wrap at the ends is masked out by the caller)."""
    d = len(axes)
    out = []
    for j, ax in enumerate(axes):
        axis = f.ndim - d + j
        h = float(ax[1] - ax[0])
        out.append((np.roll(f, -1, axis=axis) - np.roll(f, 1, axis=axis)) / (2 * h))
    return np.stack(out, axis=-1)


def potential_error(phi_model: np.ndarray, phi_truth: np.ndarray, rho_truth: np.ndarray,
                    floor: float = DEFAULT_FLOOR) -> tuple[float, float]:
    """Potential error modulo a constant at one time.

    On R = {ρ > floor·max ρ}, with weights w = ρ/Σ_R ρ and δ = φ_m - φ_t:
    ``e₂ = sqrt(Σ w (δ - δ̄)²)`` (δ̄ = Σ wδ, the minimiser over constants of
    the w-weighted L2 error) and ``e_∞ = max_R |δ - δ̄|``.
    """
    m = _region(rho_truth, floor) & np.isfinite(phi_truth)
    w = rho_truth[m] / rho_truth[m].sum()
    with np.errstate(invalid="ignore"):  # inf - inf outside the region is not used
        dlt = (phi_model - phi_truth)[m]
    if not np.all(np.isfinite(dlt)):
        return math.nan, math.nan  # the model's potential is not finite where the truth has mass
    mean = float((w * dlt).sum())
    dev = dlt - mean
    return float(math.sqrt(max((w * dev * dev).sum(), 0.0))), float(np.abs(dev).max())


def score_error(s_model: np.ndarray, s_truth: np.ndarray, rho_truth: np.ndarray,
                floor: float = DEFAULT_FLOOR) -> tuple[float, float]:
    """‖s_m - s_t‖_{L²(w)} and the same divided by ‖s_t‖_{L²(w)}, w = ρ_t on R.

    s arrays have shape (*grid, d).
    """
    m = _region(rho_truth, floor)
    w = rho_truth[m] / rho_truth[m].sum()
    err = math.sqrt(max((w * ((s_model[m] - s_truth[m]) ** 2).sum(-1)).sum(), 0.0))
    ref = math.sqrt(max((w * (s_truth[m] ** 2).sum(-1)).sum(), 0.0))
    return float(err), float(err / ref) if ref > 0 else math.nan


def kinetic_energy(sol: MFGSolution, lam: float, boundary: str = "reflecting",
                   rho: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """K(t) = ∫ (λ/2)|v|² ρ dx with v = -∇φ/λ (or ``extras['velocity']``).

    ``rho`` (nt+1, *grid) replaces the solution's own density (for a model
    evaluated without one). Returns (K at every time level (nt+1,),
    ∫₀ᵀ K dt by the trapezoid rule).
    """
    vol = sol.cell_volume
    rho = np.asarray(sol.rho if rho is None else rho, dtype=float)
    if not np.all(np.isfinite(rho)):
        raise ValueError("the density weighting the kinetic energy is not finite; pass rho=")
    rho = np.clip(rho, 0.0, None)
    if "velocity" in sol.extras:
        v = np.asarray(sol.extras["velocity"], dtype=float)
    else:
        with np.errstate(invalid="ignore"):  # inf - inf where a potential is infinite (ρ = 0 there)
            v = -gradient(sol.phi, sol.axes, boundary) / lam
    # where ρ = 0 the (possibly infinite) potential carries no energy
    with np.errstate(invalid="ignore"):
        dens = np.where(rho > 0, (v**2).sum(-1) * rho, 0.0)
    K = 0.5 * lam * dens.reshape(sol.t.size, -1).sum(-1) * vol
    total = float(np.sum(0.5 * (K[1:] + K[:-1]) * np.diff(sol.t))) if sol.t.size > 1 else 0.0
    return K, total


def _coupling(problem: MFGProblem, pts: np.ndarray, rho: np.ndarray, t: float, vol: float) -> np.ndarray:
    cpl = problem.coupling
    if isinstance(cpl, NoCoupling):
        return np.zeros(pts.shape[:-1])
    if isinstance(cpl, LQCoupling):
        r = np.clip(rho, 0.0, None)
        mbar = (r[..., None] * pts).reshape(-1, pts.shape[-1]).sum(0) / r.sum()
        return 0.5 * cpl.q * ((pts - mbar) ** 2).sum(-1)
    if isinstance(cpl, LocalCoupling):
        return np.asarray(cpl.f(pts, rho, t), dtype=float)
    raise ValueError(f"coupling {type(cpl).__name__} is not supported by the HJB residual; expected "
                     "NoCoupling, LQCoupling or LocalCoupling")


def hjb_residual(phi: np.ndarray, rho: np.ndarray, t: np.ndarray, axes, problem: MFGProblem) -> tuple[np.ndarray, np.ndarray]:
    """R = -∂tφ - νΔφ - b·∇φ + |∇φ|²/(2λ) - f(x, ρ_t) - c(x, t) on the grid.

    Second-order central differences in x (3-point Laplacian) and in t
    (``np.gradient``, second-order one-sided at t = 0 and T). ρ enters only
    through the coupling f.

    Args:
        phi, rho: (nt+1, *grid).
        t: (nt+1,) time levels.
        axes: node arrays.

    Returns:
        (R of shape (nt+1, *grid), interior mask of shape grid): on a
        reflecting grid the end nodes of each axis are excluded.
    """
    phi = np.asarray(phi, dtype=float)
    t = np.asarray(t, dtype=float)
    if t.size < 3:
        raise ValueError(f"the HJB residual needs at least 3 time levels (got {t.size})")
    pts = _mesh_points(axes)
    vol = _vol(axes)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where a truth potential is infinite
        dphidt = np.gradient(phi, t, axis=0, edge_order=2)
        grad = _grad_interior(phi, axes, problem.boundary)
        lap, interior = _laplacian_interior(phi, axes, problem.boundary)
        b = problem.b(pts)
        R = -dphidt - problem.nu * lap - (b * grad).sum(-1) + (grad**2).sum(-1) / (2 * problem.lam)
    for k, tk in enumerate(t):
        R[k] -= _coupling(problem, pts, rho[k], float(tk), vol) + problem.c(pts, float(tk))
    return R, interior


def _hjb_summary(R: np.ndarray, interior: np.ndarray, rho_truth: np.ndarray, floor: float) -> tuple[float, float, int]:
    """(ρ-weighted L1, max, number of non-finite nodes) of a residual on the interior of R_t.

    The L1 and max are over the nodes where R is finite; the count of the
    others is returned so that the caller can say why they are missing
    (a truth potential may be infinite where ρ = 0, and a residual touching
    such a node is not finite) or refuse the value (a model's residual).
    """
    m = _region(rho_truth, floor) & interior
    fin = np.isfinite(R)
    bad = int((m & ~fin).sum())
    m &= fin
    if not m.any():
        return math.nan, math.nan, bad
    w = rho_truth[m] / rho_truth[m].sum()
    return float((w * np.abs(R[m])).sum()), float(np.abs(R[m]).max()), bad


def _score_of(sol: MFGSolution, boundary: str, floor: float) -> tuple[np.ndarray, str]:
    """The solution's score field (nt+1, *grid, d) and where it came from."""
    if "score" in sol.extras:
        return np.asarray(sol.extras["score"], dtype=float), "extras['score']"
    rho = np.clip(sol.rho, 0.0, None)
    tiny = np.finfo(float).tiny
    logr = np.log(np.maximum(rho, tiny))
    return gradient(logr, sol.axes, boundary), "central differences of log rho"
