"""otflow with ν > 0 as an entropic JKO step: Sinkhorn, then the Schrödinger system in time.

Reformulation (DESIGN "Static reformulations"; derivation in ``docs/ot.md, "ν > 0"``):
by Girsanov, (λ/2) E∫|v|² dt = 2νλ · KL(P‖R) for R the reflected Brownian
motion of diffusion ν started at ρ₀, so the MFG is

    min_π  ε KL(π ‖ ρ₀ ⊗ P_T) + KL(π₂ ‖ γ),   π₁ = ρ₀,   ε = 2νλ,

solved by :func:`pde.ot.sinkhorn.sinkhorn_neumann` (π = a P_T b). The time
levels are exact in time (the Schrödinger system)::

    ρ(·, t) = (P_t a) · (P_{T−t} b),        φ(·, t) = 1 − ε log(P_{T−t} b),

ψ = exp(−φ/ε) = e^{−1/ε} P_{T−t} b solves the backward heat equation
∂tψ + νΔψ = 0 (Cole–Hopf), so φ solves −∂tφ − νΔφ + |∇φ|²/(2λ) = 0 with
φ(·, T) = 1 − ε log b = 1 + log ρ_T − log γ = g(ρ_T) (the constant 1 as in
the closed forms and the FD route), and ρ solves the FP equation with
v = −∇φ/λ; reflecting walls make both P's Neumann semigroups.

Resolution: the grid must resolve the Gibbs kernel, σ = √(2νT) ≥ h
(:data:`MIN_KERNEL_CELLS`); see :func:`check_kernel_resolution`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..problem import KLTerminal, MFGProblem
from ..solution import MFGSolution, package_versions
from .heat import GAUSS_MIN_CELLS, HeatKernel
from .sinkhorn import SinkhornConvergenceError, sinkhorn_neumann

__all__ = ["solve_entropic", "check_kernel_resolution", "EntropicInputError", "MIN_KERNEL_CELLS",
           "schrodinger_levels", "SinkhornConvergenceError"]

#: smallest σ/h, σ = √(2νT), for which the grid resolves the heat kernel (docs/ot.md, "ν > 0")
MIN_KERNEL_CELLS = 1.0

_OPTIONS = ("kernel", "domain", "translation_invariant", "lse", "absorb", "relax", "progress", "check_resolution")


class EntropicInputError(ValueError):
    """The problem or the grid is outside what the entropic route covers (the message says why)."""


def check_kernel_resolution(nu: float, T: float, h: float) -> float:
    """σ/h with σ = √(2νT); raises :class:`EntropicInputError` when below :data:`MIN_KERNEL_CELLS`.

    The scalings a, b of the Gaussian step have widths of order σ as ν → 0
    (their variances are O(2νT) in the closed form), and the sampled kernel's
    mass error is 2·exp(−2π²(σ/h)²): 5e-9 at σ = h, 1.4e-2 at σ = h/2. Measured
    on the 1D Gaussian step at n = 128 (docs/ot.md, "ν > 0"): max L1(ρ_t) 8e-6 at
    σ = h, 3e-3 at 0.7h, 6e-2 at 0.5h, a blow-up at 0.4h.
    """
    cells = math.sqrt(2.0 * nu * T) / h
    if cells < MIN_KERNEL_CELLS:
        raise EntropicInputError(
            f"the heat kernel of the entropic step is not resolved: ε = 2νλ with nu={nu:g} gives a kernel width "
            f"sqrt(2 nu T) = {math.sqrt(2 * nu * T):.3g} < {MIN_KERNEL_CELLS:g}·h = {MIN_KERNEL_CELLS * h:.3g} "
            f"(h = {h:.3g}); use nu = 0 (the back-and-forth route of method 'ot') or a grid with "
            f"h <= {math.sqrt(2 * nu * T) / MIN_KERNEL_CELLS:.3g}")
    return cells


def _check_problem(problem: MFGProblem):
    if problem.family == "wgf":
        raise EntropicInputError(
            "the wgf family's JKO steps are otflow steps with nu = 0 (its nu = 1 is the gradient flow's own "
            "Laplacian, not a diffusion of the step); use the nu = 0 back-and-forth route")
    if problem.family != "otflow":
        raise EntropicInputError(f"the entropic route solves otflow problems with nu > 0 (got family "
                                 f"{problem.family!r}); use method 'fd' or 'fe' for it")
    if not isinstance(problem.terminal, KLTerminal):
        raise EntropicInputError(f"the entropic route needs the KL terminal cost (got {type(problem.terminal).__name__})")
    if not problem.nu > 0:
        raise EntropicInputError(f"nu={problem.nu}: the entropic route needs nu > 0; use the back-and-forth route")
    if problem.drift is not None or problem.running_cost != 0.0:
        raise EntropicInputError("the entropic route needs b = 0 and c = 0")


def schrodinger_levels(log_a, log_b, grid, nu: float, lam: float, lse: str = "numba", scaling: bool = True,
                       absorb: bool = True):
    """ρ and φ at every time level of ``grid`` from the converged scalings.

    ρ_t = (P_t a)(P_{T−t} b), φ_t = 1 − ε log P_{T−t} b, ε = 2νλ. With
    ``scaling`` the dense kernels act on a, b directly (they must be within the
    floating-point range), otherwise in the log domain.

    Returns:
        rho, phi: (nt+1, *shape); kinds: per level, the kernel kinds used for (P_t, P_{T−t}).
    """
    eps = 2.0 * nu * lam
    T = grid.T
    cache: dict = {}
    # the Gibbs kernel P_T is the sampled Gaussian down to the resolution limit: so are the levels' kernels
    min_cells = min(GAUSS_MIN_CELLS, math.sqrt(2.0 * nu * T) / max(grid.h))

    def heat(s):
        key = round(s / T, 14)
        if key not in cache:
            cache[key] = HeatKernel(grid, nu, s, lse=lse, min_cells=min_cells, absorb=absorb)
        return cache[key]

    if scaling:
        a, b = np.exp(log_a), np.exp(log_b)
    rho = np.empty((grid.nt + 1,) + tuple(grid.shape))
    phi = np.empty_like(rho)
    kinds = []
    for k, t in enumerate(grid.t):
        Pa, Pb = heat(t), heat(T - t)
        with np.errstate(divide="ignore"):
            la = np.log(Pa.apply(a)) if scaling else Pa.log_apply(log_a)
            lb = np.log(Pb.apply(b)) if scaling else Pb.log_apply(log_b)
        rho[k] = np.exp(la + lb)
        phi[k] = 1.0 - eps * lb
        kinds.append([Pa.kinds[0], Pb.kinds[0]])
    return rho, phi, kinds


def solve_entropic(problem: MFGProblem, n=None, nt=None, tol: float = 1e-10, max_iter: int = 20000,
                   **opts) -> MFGSolution:
    """otflow with ν > 0 on its grid by Sinkhorn and the Schrödinger system (module docstring).

    Args:
        problem: an otflow problem with ν > 0 (reflecting or periodic box).
        n, nt: grid overrides (nodes per dimension, time steps).
        tol: Sinkhorn tolerance on the second-marginal error (L1).
        max_iter: Sinkhorn iterations before :class:`SinkhornConvergenceError`.
        kernel: "dense" (default) or "dct".
        domain: "auto" (default), "scaling" or "log".
        translation_invariant: exact rescaling step (default True).
        lse: "numba" (default) or "numpy" log-sum-exp.
        absorb: log domain by absorption first (default True).
        relax: over-relaxation of the b-update (default 1).
        check_resolution: raise when σ = √(2νT) < h (default True).
        progress: accepted and ignored (the solve takes seconds).

    Returns:
        :class:`~pde.solution.MFGSolution` (method "ot", route "entropic").
    """
    wall0 = time.perf_counter()
    unknown = set(opts) - set(_OPTIONS)
    if unknown:
        raise EntropicInputError(f"unknown option(s) {sorted(unknown)} for the entropic route; expected {list(_OPTIONS)}")
    _check_problem(problem)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise EntropicInputError(f"tol={tol!r}; expected a number > 0")
    grid = problem.grid(n=n, nt=nt)
    h = max(grid.h)
    cells = math.sqrt(2.0 * problem.nu * problem.T) / h
    if opts.get("check_resolution", True):
        check_kernel_resolution(problem.nu, problem.T, h)
    pts = grid.points()
    rho0 = np.asarray(problem.rho0.pdf(pts), dtype=float)
    mass0 = grid.cell_volume * rho0.sum()
    if not (np.all(np.isfinite(rho0)) and mass0 > 0):
        raise EntropicInputError(f"rho0 is not finite/positive on the grid (discrete mass {mass0!r})")
    gamma = np.exp(np.asarray(problem.reference.logpdf(pts), dtype=float))
    lse = opts.get("lse", "numba")
    t_s = time.perf_counter()
    res = sinkhorn_neumann(rho0, gamma, grid, problem.T, problem.nu, problem.lam, balanced=False, tol=tol,
                           max_iter=max_iter, kernel=opts.get("kernel", "dense"), domain=opts.get("domain", "auto"),
                           translation_invariant=opts.get("translation_invariant", True), lse=lse,
                           absorb=opts.get("absorb", True), relax=opts.get("relax", 1.0))
    sink_s = time.perf_counter() - t_s
    info = res.info
    t_l = time.perf_counter()
    scaling = info["engine"] == "scaling" and np.max(np.abs(res.log_a)) < 640 and np.max(np.abs(res.log_b)) < 640
    rho, phi, kinds = schrodinger_levels(res.log_a, res.log_b, grid, problem.nu, problem.lam, lse=lse, scaling=scaling,
                                         absorb=opts.get("absorb", True))
    levels_s = time.perf_counter() - t_l
    mass = grid.integrate(rho)
    eps = info["epsilon"]
    hist = info.pop("history")
    n_local = sum(1 for k in kinds if any(kk.startswith("refined") for kk in k))
    wall = time.perf_counter() - wall0
    meta = {
        "method": "ot",
        "route": "entropic",
        "scheme": "semi-unbalanced Sinkhorn with the Neumann heat kernel (dense 1D per axis); time levels from "
                  "the Schrödinger system rho_t = (P_t a)(P_{T-t} b), phi_t = 1 - eps log P_{T-t} b",
        "problem": problem.describe(),
        "grid": grid.to_dict(),
        "iterations": info["iterations"],
        "residual_history": hist[:: max(1, len(hist) // 200)] + hist[-1:],
        "tol": tol,
        "epsilon": eps,
        "tau": problem.T / problem.lam,
        "h": list(grid.h),
        "heat_kernel": {
            "width_sqrt_2nuT": math.sqrt(2.0 * problem.nu * problem.T),
            "cells_per_width": cells,
            "min_cells_per_width": MIN_KERNEL_CELLS,
            "nyquist_damping": math.exp(-problem.nu * problem.T * (math.pi / h) ** 2),
            "sampled_mass_error_bound": 2.0 * math.exp(-2.0 * math.pi**2 * cells**2),
            "kind": info["kernel_kinds"],
            "gaussian_min_cells": GAUSS_MIN_CELLS,
            "levels_with_refined_kernel": n_local,
        },
        "sinkhorn": {k: info[k] for k in ("engine", "switched_to_log_at", "kernel", "exponent",
                                          "translation_invariant")},
        "marginal_error_1": info["marginal_error_1"],
        "marginal_error_2": info["marginal_error_2"],
        "optimality_residual": info["optimality_residual"],
        "primal_objective": info["primal"],
        "dual_objective": info["dual"],
        "primal_dual_gap": info["gap"],
        "kinetic_energy": info["kinetic"],
        "terminal_kl": info["terminal_kl"],
        "mass_error": float(np.max(np.abs(mass - 1.0))),
        "mass_error_per_level": [float(abs(m - 1.0)) for m in mass],
        "min_rho": float(rho.min()),
        "final_residual": hist[-1] if hist else None,
        "timings": {"sinkhorn_s": sink_s, "levels_s": levels_s, "wall_s": wall,
                    "per_iteration_s": sink_s / max(1, info["iterations"])},
        "versions": package_versions(),
    }
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, status="converged")
