"""Bridges (mean-field planning, ρ(0) = ρ₀, ρ(T) = ρ₁) by the static OT route.

ν > 0 (the Schrödinger bridge): by Girsanov, as for otflow (``docs/ot.md``,
"ν > 0"), the problem is the balanced entropic OT problem

    min_π  ε KL(π ‖ ρ₀ ⊗ P_T),   π₁ = ρ₀,  π₂ = ρ₁,   ε = 2νλ,

solved by :func:`pde.ot.sinkhorn.sinkhorn_neumann` with ``balanced=True``
(π = a P_T b); the time levels are the Schrödinger system of
:func:`pde.ot.entropic.schrodinger_levels`, ρ_t = (P_t a)(P_{T−t} b) and
φ_t = 1 − ε log P_{T−t} b + c, exact in time.

ν = 0 (Benamou–Brenier), 2D: the W₂ map by the Monge–Ampère polish of :mod:`pde.ot.brenier`.

ν = 0 (Benamou–Brenier), 1D: the W₂ map is the monotone rearrangement
T = F₁⁻¹ ∘ F₀ (cumulative distribution functions of the laws, on a fine
auxiliary grid; each inverse taken from the nearer tail so that both tails
keep their relative precision). On the straight paths x ↦ (1 − s)x + sT(x),
s = t/T, the density is the harmonic combination

    ρ_t((1 − s)x + sT(x)) = 1 / ((1 − s)/ρ₀(x) + s/ρ₁(T(x)))

(the Jacobian of the path is (1 − s) + sT'(x) and T' = ρ₀/ρ₁∘T), evaluated
with the laws' own densities at the preimage of every node. The potential is
the Hopf–Lax formula from φ(·, T) = −(λ/T)∫(y − T⁻¹(y))dy,

    φ(z, t) = min_y φ(y, T) + λ|z − y|²/(2(T − t)),

evaluated at its minimiser y = T(x), x the preimage of z (the endpoint of the
straight path through z).

Gauge: φ(·, T) is determined up to a constant; every route fixes it as the FD
planning route does, h^d Σ ρ₁ φ(·, T) = 0 with ρ₁ the nodal density normalised
to discrete mass 1.

The trivial bridge ρ₀ = ρ₁ (equal nodal samples) with ν = 0 returns ρ_t = ρ₀
and φ = 0 exactly (v = 0); with ν > 0 it is a genuine Schrödinger bridge (the
law spreads and is brought back) and is solved as any other.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..solution import MFGSolution, package_versions
from ..grid import kinetic_energy

__all__ = ["solve_bridge", "monotone_map", "FINE_MIN"]

#: smallest number of points of the auxiliary grid of the 1D monotone rearrangement
FINE_MIN = 2**16 + 1
#: how many auxiliary points per grid cell at least
FINE_PER_CELL = 64

_SB_OPTIONS = ("kernel", "domain", "lse", "absorb", "relax", "check_resolution")
_GAUGE = "h^d sum(rho1 * phi(., T)) = 0 (rho1: nodal density of the target, discrete mass 1), as the FD planning route"


def _pdf(law, pts):
    return np.asarray(law.pdf(pts), dtype=float)


def _nodal(law, grid, label):
    from .route import OTInputError

    r = _pdf(law, grid.points())
    mass = grid.integrate(r)
    if not (np.all(np.isfinite(r)) and r.min() >= 0 and mass > 0):
        raise OTInputError(f"{label} is not finite and positive on the grid (discrete mass {mass!r})")
    return r / mass, float(mass)


def _gauge(phi, rho1, grid):
    c = float(grid.integrate(rho1 * phi[-1]))
    return phi - c


def _meta(problem, grid, rho, phi, rho1, fields):
    mass = grid.integrate(rho)
    return {"method": "ot", "problem": problem.describe(), "grid": grid.to_dict(), "gauge": _GAUGE,
            "mass_error": float(np.max(np.abs(mass - 1.0))), "min_rho": float(rho.min()),
            "terminal_l1": float(grid.integrate(np.abs(rho[-1] - rho1))),
            "kinetic_energy_from_levels": kinetic_energy(grid, rho, phi, problem.lam),
            "versions": package_versions(), **fields}


def _trivial(problem, grid, r0, wall0):
    rho = np.broadcast_to(r0, (grid.nt + 1,) + r0.shape).copy()
    phi = np.zeros_like(rho)
    meta = _meta(problem, grid, rho, phi, r0, {
        "route": "trivial-bridge", "scheme": "rho0 = rho1 on the grid and nu = 0: zero velocity, rho_t = rho0, phi = 0",
        "iterations": 0, "kinetic_energy": 0.0, "marginal_error_1": 0.0, "marginal_error_2": 0.0,
        "timings": {"wall_s": time.perf_counter() - wall0}})
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, status="converged")


def _schrodinger(problem, grid, r0, r1, tol, max_iter, opts, wall0):
    from .entropic import check_kernel_resolution, schrodinger_levels
    from .heat import GAUSS_MIN_CELLS
    from .sinkhorn import sinkhorn_neumann

    h = max(grid.h)
    cells = math.sqrt(2.0 * problem.nu * problem.T) / h
    if opts.get("check_resolution", True):
        check_kernel_resolution(problem.nu, problem.T, h)
    lse = opts.get("lse", "numba")
    t_s = time.perf_counter()
    res = sinkhorn_neumann(r0, r1, grid, problem.T, problem.nu, problem.lam, balanced=True, tol=tol,
                           max_iter=max_iter, kernel=opts.get("kernel", "dense"), domain=opts.get("domain", "auto"),
                           lse=lse, absorb=opts.get("absorb", True), relax=opts.get("relax", 1.0))
    sink_s = time.perf_counter() - t_s
    info = res.info
    t_l = time.perf_counter()
    scaling = info["engine"] == "scaling" and np.max(np.abs(res.log_a)) < 640 and np.max(np.abs(res.log_b)) < 640
    rho, phi, kinds = schrodinger_levels(res.log_a, res.log_b, grid, problem.nu, problem.lam, lse=lse,
                                         scaling=scaling, absorb=opts.get("absorb", True))
    phi = _gauge(phi, r1, grid)
    levels_s = time.perf_counter() - t_l
    hist = info.pop("history")
    mass = grid.integrate(rho)
    meta = _meta(problem, grid, rho, phi, r1, {
        "route": "schrodinger-bridge",
        "scheme": "balanced Sinkhorn with the Neumann heat kernel (dense 1D per axis); time levels from the "
                  "Schrödinger system rho_t = (P_t a)(P_{T-t} b), phi_t = 1 - eps log P_{T-t} b + const",
        "iterations": info["iterations"], "tol": tol,
        "residual_history": hist[:: max(1, len(hist) // 200)] + hist[-1:], "final_residual": hist[-1] if hist else None,
        "epsilon": info["epsilon"], "h": list(grid.h),
        "marginal_error_1": info["marginal_error_1"], "marginal_error_2": info["marginal_error_2"],
        "primal_objective": info["primal"], "dual_objective": info["dual"], "primal_dual_gap": info["gap"],
        "kinetic_energy": info["kinetic"],
        "mass_error_per_level": [float(abs(m - 1.0)) for m in mass],
        "heat_kernel": {"width_sqrt_2nuT": math.sqrt(2.0 * problem.nu * problem.T), "cells_per_width": cells,
                        "kind": info["kernel_kinds"], "gaussian_min_cells": GAUSS_MIN_CELLS,
                        "levels_with_refined_kernel": sum(1 for k in kinds if any(s.startswith("refined") for s in k))},
        "sinkhorn": {k: info[k] for k in ("engine", "switched_to_log_at", "kernel")},
        "timings": {"sinkhorn_s": sink_s, "levels_s": levels_s, "wall_s": time.perf_counter() - wall0},
    })
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, status="converged")


def _cdfs(p, x):
    """Normalised cumulative and survival functions of the samples p on x (trapezoid)."""
    inc = 0.5 * (p[1:] + p[:-1]) * np.diff(x)
    F = np.concatenate([[0.0], np.cumsum(inc)])
    S = np.concatenate([np.cumsum(inc[::-1])[::-1], [0.0]])
    tot = F[-1]
    return F / tot, S / tot, tot


def _inverse(Fa, Sa, Fb, Sb, x):
    """x ↦ F_b⁻¹(F_a(x)) on the auxiliary grid x, each value from the nearer tail."""
    lower = Fa <= 0.5
    out = np.empty_like(x)
    out[lower] = np.interp(Fa[lower], Fb, x)
    out[~lower] = np.interp(-Sa[~lower], -Sb, x)
    return out


def monotone_map(law0, law1, lo: float, hi: float, m: int = FINE_MIN):
    """The 1D monotone rearrangement on [lo, hi]: (x, T(x), T⁻¹(x), ρ₀(x), ρ₁(x), masses) on m points."""
    x = np.linspace(lo, hi, m)
    p0, p1 = _pdf(law0, x[:, None]), _pdf(law1, x[:, None])
    F0, S0, m0 = _cdfs(p0, x)
    F1, S1, m1 = _cdfs(p1, x)
    return x, _inverse(F0, S0, F1, S1, x), _inverse(F1, S1, F0, S0, x), p0 / m0, p1 / m1


def _monotone(problem, grid, r0, r1, wall0):
    lo, hi = grid.domain[0]
    n = grid.n[0]
    lam, T = problem.lam, problem.T
    t_s = time.perf_counter()
    xf, Tf, Tinv, p0, p1 = monotone_map(problem.rho0, problem.target, lo, hi, max(FINE_MIN, FINE_PER_CELL * n + 1))
    # φ(·, T) = −(λ/T)∫(y − T⁻¹(y))dy on the auxiliary grid
    dv = xf - Tinv
    phiT = -(lam / T) * np.concatenate([[0.0], np.cumsum(0.5 * (dv[1:] + dv[:-1]) * np.diff(xf))])
    kinetic = lam / (2.0 * T) * float(np.sum(0.5 * ((Tf - xf) ** 2 * p0)[1:] + 0.5 * ((Tf - xf) ** 2 * p0)[:-1])
                                      * (xf[1] - xf[0]))
    solve_s = time.perf_counter() - t_s
    z = grid.axes[0]
    rho = np.empty((grid.nt + 1, n))
    phi = np.empty_like(rho)
    unresolved, defect = 0, 0.0
    for k, t in enumerate(grid.t):
        s = float(t) / T
        zf = (1.0 - s) * xf + s * Tf
        inside = (z >= zf[0]) & (z <= zf[-1])
        unresolved = max(unresolved, int((~inside).sum()))
        xs = np.interp(z, zf, xf)
        ys = np.interp(xs, xf, Tf)
        a = np.interp(xs, xf, p0)
        b = np.interp(ys, xf, p1)
        if s == 0.0:
            rk = _pdf(problem.rho0, z[:, None])
        elif s == 1.0:
            rk = _pdf(problem.target, z[:, None])
        else:
            # exact densities at the preimage and its image (interpolated ones lose the tails)
            a = _pdf(problem.rho0, xs[:, None])
            b = _pdf(problem.target, ys[:, None])
            with np.errstate(divide="ignore"):
                rk = np.where((a > 0) & (b > 0), 1.0 / ((1.0 - s) / np.where(a > 0, a, 1.0) + s / np.where(b > 0, b, 1.0)),
                              0.0)
        rk = np.where(inside, rk, 0.0)
        mass = float(grid.integrate(rk))
        defect = max(defect, abs(mass - 1.0))
        rho[k] = rk / mass
        gT = np.interp(ys, xf, phiT)
        phi[k] = gT if s == 1.0 else gT + lam * (z - ys) ** 2 / (2.0 * (T - float(t)))
    phi = _gauge(phi, r1, grid)
    meta = _meta(problem, grid, rho, phi, r1, {
        "route": "monotone-rearrangement",
        "scheme": "W2 map T = F1^-1 o F0 on an auxiliary grid; rho_t on the straight paths by the Jacobian of the "
                  "path at each node's preimage; Hopf-Lax potential at its minimiser",
        "iterations": 0, "auxiliary_points": int(xf.size), "kinetic_energy": kinetic,
        "marginal_error_1": 0.0, "marginal_error_2": float(grid.integrate(np.abs(rho[-1] - r1))),
        "push_mass_defect": defect, "unresolved_nodes": unresolved,
        "timings": {"solve_s": solve_s, "wall_s": time.perf_counter() - wall0},
    })
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, extras={"map_x": xf, "map_T": Tf},
                       status="converged")


def solve_bridge(problem, n=None, nt=None, tol: float | None = None, max_iter: int | None = None, *,
                 accept_tol: float | None = None, progress=None, **opts) -> MFGSolution:
    """A bridge problem by the static route (module docstring); called by :func:`pde.ot.solve_ot`.

    Args:
        problem: a ``bridge`` problem on a reflecting box.
        n, nt: grid overrides.
        tol, max_iter: ν > 0: Sinkhorn tolerance on ∫|π₂ − ρ₁| (default 1e-10) and iterations (20000);
            ν = 0 in 2D: the polish tolerance on the Monge–Ampère marginal error (default
            :data:`pde.ot.brenier.TOL`) and its iterations per grid level (2000); unused in 1D (the map is direct).
        **opts: ν > 0: ``kernel``, ``domain``, ``lse``, ``absorb``, ``relax``, ``check_resolution``
            as for :func:`pde.ot.entropic.solve_entropic`.
        accept_tol: ν = 0 in 2D: the largest marginal error accepted from a stalled polish (default
            :data:`pde.ot.brenier.ACCEPT_TOL`).
        progress: ν = 0 in 2D: optional ``progress(it, residual, info)`` of the polish.

    Raises:
        OTInputError: periodic box, unknown option, data not positive on the grid; EntropicInputError: the kernel is not resolved (σ = √(2νT) < h);
        SinkhornConvergenceError: Sinkhorn did not reach ``tol``; OTConvergenceError: the 2D W₂ map did not.
    """
    from .route import OTInputError, _grid_n

    wall0 = time.perf_counter()
    if problem.boundary != "reflecting":
        raise OTInputError(f"boundary={problem.boundary!r}: the ot route solves bridges on reflecting boxes")
    allowed = _SB_OPTIONS if problem.nu > 0 else ("check_resolution",)  # ν = 0: no kernel to resolve
    unknown = set(opts) - set(allowed)
    if unknown:
        raise OTInputError(f"unknown option(s) {sorted(unknown)} for the ot route on a bridge with nu = {problem.nu:g}; "
                           f"expected some of {list(allowed)}")
    from .brenier import ACCEPT_TOL, TOL

    map2d = problem.nu == 0 and problem.dim == 2
    tol = (TOL if map2d else 1e-10) if tol is None else tol
    max_iter = (2000 if map2d else 20000) if max_iter is None else max_iter
    accept_tol = ACCEPT_TOL if accept_tol is None else accept_tol
    if not (isinstance(accept_tol, (int, float)) and math.isfinite(accept_tol) and accept_tol > 0):
        raise OTInputError(f"accept_tol={accept_tol!r}; expected a positive number")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise OTInputError(f"tol={tol!r}; expected a positive number")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise OTInputError(f"max_iter={max_iter!r}; expected a positive integer")
    grid = problem.grid(n=_grid_n(problem, n), nt=nt)
    r0, _ = _nodal(problem.rho0, grid, "rho0")
    r1, _ = _nodal(problem.target, grid, "rho1 (the target)")
    if problem.nu == 0:
        opts.pop("check_resolution", None)
    if problem.nu > 0:
        return _schrodinger(problem, grid, r0, r1, tol, max_iter, opts, wall0)
    if np.array_equal(r0, r1):
        return _trivial(problem, grid, r0, wall0)
    if problem.dim == 1:
        return _monotone(problem, grid, r0, r1, wall0)
    from .brenier import solve_brenier_2d

    return solve_brenier_2d(problem, grid, r0, r1, tol, accept_tol, max_iter, progress, wall0, _meta, _gauge)
