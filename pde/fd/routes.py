"""Second routes: the linear OU forward equation of sgm, the wgf FP solve and JKO chain."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..solution import MFGSolution  # noqa: F401  (type reference in docs)
from .iterations import fp_forward

__all__ = ["ou_forward", "sgm_extras", "solve_wgf", "jko_chain"]


def _parts(b):
    b = np.asarray(b, dtype=float)
    return np.ascontiguousarray(np.maximum(b, 0.0).T), np.ascontiguousarray(np.maximum(-b, 0.0).T)


def ou_forward(problem, disc):
    """η on the grid by the linear OU forward equation, in forward time s = T - t.

    ∂_s η = (β/2) Δη + ∇·((β/2) x η), η(0) = π (normalised on the grid),
    discretised by the same implicit upwind FP operator with φ = 0 and drift
    -βx/2. Returns eta (nt+1, N) indexed by the generative time level k
    (η at s = T - t_k).
    """
    beta = float(problem.params["beta"])
    pts = disc.pts
    pi = np.asarray(problem.data.pdf(pts), dtype=float).reshape(-1)
    pi = pi / (disc.vol * pi.sum())
    zero = np.zeros((disc.nt + 1, disc.N))
    eta_s = fp_forward(disc, zero, rho0=pi, b_parts=_parts(-0.5 * beta * pts), nu=0.5 * beta)
    return eta_s[::-1].copy()


def sgm_extras(problem, disc, phi, with_eta=True):
    """Scores from both routes: -∇φ (nonlinear HJB) and ∇log η (linear FP)."""
    from .driver import gradient

    grid = disc.grid
    shape = (grid.nt + 1,) + tuple(grid.shape)
    extras = {"score": -gradient(phi.reshape(shape), grid)}
    meta = {"score_route": "score = -grad phi (centred differences) from the nonlinear HJB"}
    if with_eta:
        eta = ou_forward(problem, disc)
        extras["eta"] = eta.reshape(shape)
        with np.errstate(divide="ignore"):
            extras["score_fp"] = gradient(np.log(np.maximum(eta, 1e-300)).reshape(shape), grid)
        meta["eta_route"] = "eta from the linear OU forward equation (same grid, same FP operator with phi = 0)"
        meta["eta_mass_error"] = float(np.max(np.abs(disc.vol * eta.sum(1) - 1.0)))
    return extras, meta


def jko_chain(problem, disc, tau: float, nt_inner: int, tol: float, max_iter, progress, solver="newton",
              linear_solver: str = "auto"):
    """JKO steps ρ_{j+1} = argmin KL(ρ‖π) + W₂²(ρ_j, ρ)/(2τ), each an otflow solve on [0, τ].

    Each step is the discrete otflow MFG on the same spatial grid, λ = 1,
    ν = 0, b = 0, reference π, with ``nt_inner`` implicit time steps.
    Returns (times (J+1,), rho (J+1, N), total Newton iterations).
    """
    from .driver import _solve_coupled

    nsteps = int(round(problem.T / tau))
    g_in = disc.grid.with_(nt=nt_inner, T=tau)
    logpi = np.asarray(problem.reference.logpdf(disc.pts), dtype=float).reshape(-1)
    rho = disc.rho0.copy()
    out = [rho]
    iters = 0
    for j in range(nsteps):
        sub = dataclasses.replace(disc, grid=g_in, nu=0.0, lam=1.0, b=np.zeros((disc.N, disc.d)),
                                  c=np.zeros((nt_inner, disc.N)), rho0=rho, terminal=("kl", logpi),
                                  coupling=("none",))
        _, r, info = _solve_coupled(sub, solver, tol, max_iter, progress, linear_solver=linear_solver)
        iters += info.get("iterations") or 0
        rho = r[-1]
        out.append(rho)
    return np.arange(nsteps + 1) * tau, np.stack(out), iters


def solve_wgf(problem, disc, solver, tol, max_iter, progress, options):
    """wgf: FP route ∂tρ = Δρ - ∇·(ρ∇log π) (φ ≡ 0 in the §2 form) and the JKO chain."""
    from .driver import FDInputError

    routes = tuple(options.get("wgf_routes", ("fp", "jko")))
    for r in routes:
        if r not in ("fp", "jko"):
            raise FDInputError(f"wgf_routes contains {r!r}; expected 'fp' and/or 'jko'")
    if "fp" not in routes:
        raise FDInputError("wgf_routes must include 'fp' (the solution's rho is the FP route)")
    zero = np.zeros((disc.nt + 1, disc.N))
    rho = fp_forward(disc, zero)
    logpi = np.asarray(problem.reference.logpdf(disc.pts), dtype=float).reshape(-1)
    # transport potential of the closed form: velocity -∇φ with φ = log(ρ/π)
    phi = np.log(np.maximum(rho, 1e-300)) - logpi
    info = {"iterations": 0, "residual_history": []}
    extras, meta = {}, {"wgf_route": "linear FP with phi = 0, nu = 1, b = grad log pi; phi = log(rho/pi)"}
    if "jko" in routes:
        tau = float(options.get("jko_tau", problem.params.get("tau", problem.T / 10)))
        ratio = problem.T / tau
        if abs(ratio - round(ratio)) > 1e-9 or tau <= 0:
            raise FDInputError(f"jko_tau={tau:g} must divide T={problem.T:g} into an integer number of JKO steps")
        nt_inner = options.get("jko_nt")
        if nt_inner is None:
            nt_inner = max(1, int(round(tau / disc.dt)))
        nt_inner = int(nt_inner)
        if nt_inner < 1:
            raise FDInputError(f"jko_nt={nt_inner}; expected at least one time step per JKO sub-problem")
        t_j, rho_j, iters = jko_chain(problem, disc, tau, nt_inner, tol, max_iter, progress, solver,
                                      options.get("linear_solver", "auto"))
        extras["jko_t"] = t_j
        extras["jko_rho"] = rho_j.reshape((t_j.size,) + tuple(disc.grid.shape))
        meta.update(jko_tau=tau, jko_nt=nt_inner, jko_steps=int(t_j.size - 1), jko_newton_iterations=iters)
        info["iterations"] = iters
    return phi, rho, info, extras, meta
