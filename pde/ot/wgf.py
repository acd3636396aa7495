"""The wgf family by the JKO chain of the ot route.

ρ_{j+1} = argmin KL(ρ‖π) + W₂²(ρ_j, ρ)/(2τ), j = 0..J−1, J = T/τ with the
problem's τ (``params["tau"]``): each step is :func:`pde.ot.bfm.jko_step`
with reference π on the warm-start hierarchy of grids, starting from the
moment-matched Gaussian step of :func:`pde.ot.bfm.gaussian_start` (measured
on ``wgf-gaussian-2d`` at 64²: starting a step from the previous step's
potential stalls the polish at a marginal error of 3e-3; from the Gaussian
start every step reaches 1e-7). ρ_{j+1} is the dual's density π e^{−ψ/τ}/Z (positive
everywhere), so the next step's μ has a smooth logarithm.

The chain approximates the gradient flow ∂tρ = ∇·(ρ∇log(ρ/π)) to O(τ); the
problem's time levels inside step j come from the displacement interpolation
of that step (s = (t − jτ)/τ), and φ = log(ρ_t/π) is the transport potential
of the gradient flow (velocity −∇φ), as in the closed form and the FD route.
"""

from __future__ import annotations

import time

import numpy as np

from ..solution import MFGSolution
from .interpolate import Displacement, PushStats, displacement
from .push import Interpolant

__all__ = ["solve_wgf_chain"]


def solve_wgf_chain(problem, grid, tol, accept_tol, max_iter, push, progress, wall0, bfm_iter=0) -> MFGSolution:
    from .route import OTInputError, _law_fns, _solve_step, _step_certificates, solution_meta

    tau = float(problem.params.get("tau", problem.T / 10))
    ratio = problem.T / tau
    J = int(round(ratio))
    if abs(ratio - J) > 1e-9 or J < 1:
        raise OTInputError(f"the JKO step tau={tau:g} must divide T={problem.T:g} into an integer number of steps")
    shape = tuple(grid.shape)
    pts = grid.points()
    ref = problem.reference
    lg = np.asarray(ref.logpdf(pts), dtype=float)
    mu = np.asarray(problem.rho0.pdf(pts), dtype=float)
    mu = mu / grid.integrate(mu)
    mu_fn0, _ = _law_fns(problem.rho0)
    chain = [mu]
    phis, certs, levels_all, history = [], [], [], []
    t_steps = []
    for j in range(J):
        t0 = time.perf_counter()
        res, levels = _solve_step(problem, shape, problem.rho0, chain[-1] if j else None, ref, tau, tol, accept_tol,
                                  max_iter, progress, history, bfm_iter if j == 0 else 0)
        phis.append(res.phi)
        certs.append(_step_certificates(chain[-1], res, grid.axes, lg, tau, res.rho))
        levels_all.append(levels)
        chain.append(res.rho)
        t_steps.append(time.perf_counter() - t0)
    t_solve = time.perf_counter() - wall0
    t1 = time.perf_counter()
    rho = np.empty((grid.nt + 1,) + shape)
    stats = PushStats()
    disps = {}
    for k, t in enumerate(grid.t):
        j = min(int(np.floor(t / tau + 1e-9)), J - 1)
        s = min(max((t - j * tau) / tau, 0.0), 1.0)
        if s == 0.0:
            rho[k] = chain[j]
            continue
        if s >= 1.0 - 1e-12:
            rho[k] = chain[j + 1]
            continue
        if push == "jacobian" and j not in disps:
            disps[j] = Displacement(phis[j], grid.axes)
        fn = mu_fn0 if j == 0 else Interpolant(np.log(chain[j]), grid.axes)
        mu_fn = fn if j == 0 else (lambda P, f=fn: np.exp(f(P)))
        rho[k], info = displacement(chain[j], phis[j], grid.axes, s, mu_fn=mu_fn, push=push, disp=disps.get(j))
        stats.add(info, float(t))
    phi = np.log(np.maximum(rho, 1e-300)) - lg
    t_rho = time.perf_counter() - t1
    wall = time.perf_counter() - wall0
    meta = solution_meta(problem, grid, rho, push, tol, accept_tol, stats, history, certs, {
        "scheme": f"JKO chain of {J} steps (tau = {tau:g}), each by the ot route's JKO step; displacement "
                  f"interpolation ({push}) inside a step; phi = log(rho/pi)",
        "wgf_route": "JKO chain (O(tau) approximation of the gradient flow)",
        "jko_tau": tau,
        "jko_steps": J,
        "iterations": int(sum(c["iterations"] for c in certs)),
        "certificates": {"steps": certs, "max_marginal_l1": max(c["marginal_l1"] for c in certs),
                         "max_relative_gap": max(abs(c["relative_gap"]) for c in certs)},
        "levels": levels_all,
        "timings": {"solve_s": t_solve, "step_s": t_steps, "rho_levels_s": t_rho, "wall_s": wall},
    })
    extras = {"jko_t": np.arange(J + 1) * tau, "jko_rho": np.stack(chain)}
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, extras=extras, status=meta["status"])
