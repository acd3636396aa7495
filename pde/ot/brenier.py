"""Bridges with ν = 0 in 2D (Benamou–Brenier): the W₂ map between two given densities on the grid.

The map is T(x) = x − ∇φ(x) (the Brenier map, T = ∇u with u = |x|²/2 − φ convex); it pushes
ρ₀ to ρ₁ exactly when the second boundary value problem of the Monge–Ampère equation holds,

    ρ₀(x) = ρ₁(x − ∇φ(x)) · det(I − D²φ(x)),                                   (MA₁)

which is the JKO optimality condition of :mod:`pde.ot.monge_ampere` in the limit τ → ∞ (the
entropic factor exp((φ − |∇φ|²/2)/τ) tends to 1 and the reference γ becomes the fixed target
ρ₁). The same polish solves it: φ ← φ + σ(−Δ_N)⁻¹[(ρ₀ − ν)/(½(ρ₀ + ν) + ε)] with ν the right side
of (MA₁) normalised to discrete mass 1 (the constant mode of the Neumann Laplacian carries no
information and is dropped), from the exact map between the moment-matched Gaussians,

    T₀(x) = m₁ + A(x − m₀),   A = Σ₀^{-1/2}(Σ₀^{1/2} Σ₁ Σ₀^{1/2})^{1/2} Σ₀^{-1/2},

warm-started over the grid hierarchy of the JKO route (cubic prolongation). The derivatives are
φ's own centred differences, so (MA₁) is second order in h and exact for affine maps (Gaussian
data): there the polish only removes discretisation residue.

Time levels, for s = t/T: ρ_t = ((1 − s)id + sT)#ρ₀ by the Jacobian push of
:mod:`pde.ot.interpolate` (ρ₀ evaluated exactly at each node's preimage); at t = T the
target's nodal density (the push at s = 1 is reported as the marginal certificate). The MFG
potential (v = −∇φ_MFG/λ) is the Hopf–Lax solution from

    φ_MFG(·, T) = −(λ/T) φ^c,    φ^c(y) = min_x |x − y|²/2 − φ(x),

(the minimiser is x = T⁻¹(y) and ∇φ^c(T(x)) = −∇φ(x), so v(T(x), T) = (T(x) − x)/T), then the gauge of
:mod:`pde.ot.bridge`. Kinetic energy: (λ/2T) h² Σ ρ₀|∇φ|², the static W₂² of the map.

Certificates in ``meta``: the marginal error ‖ρ₀ − ν‖₁ of (MA₁) at which the polish stopped
(``marginal_error_1``), the L1 distance of the push at s = 1 to ρ₁ (``marginal_error_2``), the
iterations and timings per grid level, and ``status`` ("converged", or "accepted-on-stall" when the
polish stalled between ``tol`` and ``accept_tol``; above ``accept_tol`` it raises).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..solution import MFGSolution
from .bfm import OTConvergenceError, Preconditioner, prolong
from .interpolate import Displacement, PushStats, displacement
from .legendre import c_transform, hopf_lax
from .monge_ampere import ma_residual, polish
from .push import mirror_gradient

__all__ = ["brenier_start", "brenier_map", "solve_brenier_2d"]

#: polish tolerance on ‖ρ₀ − ν‖₁ (default) and the largest marginal error accepted from a stalled polish
TOL = 1e-7
ACCEPT_TOL = 3e-4
#: number of targets of the continuation fallback (:func:`_continuation`)
CONTINUATION_STEPS = 16


def _moments(r: np.ndarray, mesh: np.ndarray):
    w = r.reshape(-1) / r.sum()
    m = mesh @ w
    x = mesh - m[:, None]
    return m, (x * w) @ x.T


def _sqrtm(S: np.ndarray) -> np.ndarray:
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    return (V * np.sqrt(np.clip(lam, 0.0, None))) @ V.T


def brenier_start(r0: np.ndarray, r1: np.ndarray, axes: tuple) -> np.ndarray:
    """φ₀ with x − ∇φ₀ = T₀(x), the W₂ map between the Gaussians with the grid moments of r0 and r1."""
    d = len(axes)
    mesh = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(d, -1)
    m0, S0 = _moments(r0, mesh)
    m1, S1 = _moments(r1, mesh)
    R = _sqrtm(S0)
    Ri = np.linalg.inv(R)
    A = Ri @ _sqrtm(R @ S1 @ R) @ Ri
    A = 0.5 * (A + A.T)
    phi = 0.5 * np.einsum("in,ij,jn->n", mesh, np.eye(d) - A, mesh) + (A @ m0 - m1) @ mesh
    return phi.reshape(r0.shape)


def brenier_map(r0: np.ndarray, axes: tuple, log_rho1_fn, *, phi0=None, tol: float = TOL,
                accept_tol: float = ACCEPT_TOL, max_iter: int = 2000, progress=None):
    """Solve (MA₁) on one grid. Returns (φ, marginal L1, iterations, stalled, history).

    ``r0``: ρ₀ nodal, discrete mass 1; ``log_rho1_fn``: log ρ₁ on node stacks (d, *shape) (the exact law).
    Runs w = 1 and, when that stalls above accept_tol/3, the λ_min-weighted polish from the same start
    (as :func:`pde.ot.bfm.jko_step`), keeping the better.
    """
    h = tuple(float(a[1] - a[0]) for a in axes)
    pre = Preconditioner(r0.shape, h, 0.0)
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"))
    vol = float(np.prod(h))
    start = brenier_start(r0, np.exp(log_rho1_fn(mesh)), axes)
    if phi0 is not None:  # the prolonged coarse map, when its residual is the smaller
        phi0 = np.asarray(phi0, dtype=float)
        res = [vol * float(np.abs(r0 - ma_residual(p, mesh, h, log_rho1_fn, math.inf)[0]).sum()) for p in (start, phi0)]
        start = phi0 if res[1] < res[0] else start
    history: list = []
    phi, it, marg, stalled = polish(r0, start, axes, log_rho1_fn, math.inf, pre, tol, max_iter, history, progress)
    if marg > tol and marg > accept_tol / 3:
        phi_w, it_w, marg_w, stalled_w = polish(r0, start, axes, log_rho1_fn, math.inf, pre, tol, max_iter, history,
                                                progress, weighted=True)
        it += it_w
        if marg_w < marg:
            phi, marg, stalled = phi_w, marg_w, stalled_w
    if marg > tol and marg > accept_tol / 3:
        phi_c, marg_c, it_c, stalled_c = _continuation(r0, brenier_start(r0, np.exp(log_rho1_fn(mesh)), axes), axes,
                                                       log_rho1_fn, pre, tol, accept_tol, max_iter, history, progress)
        it += it_c
        if marg_c < marg:
            phi, marg, stalled = phi_c, marg_c, stalled_c
    return phi, marg, it, stalled, history


def _continuation(r0, phi, axes, log_rho1_fn, pre, tol, accept_tol, max_iter, history, progress):
    """Polish along the targets (1 − θ)G + θρ₁, θ = 1/K, …, 1 (G: the moment-matched Gaussian of ρ₁), each
    from the previous map. Measured on N(0, I) → eight Gaussians (docs/ot.md): the direct polish stalls at
    marginal errors 5e-2 to 0.5, the continuation reaches 8e-4 at 64² to 256²."""
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"))
    d = len(axes)
    r1 = np.exp(log_rho1_fn(mesh))
    m1, S1 = _moments(r1, mesh.reshape(d, -1))
    Si = np.linalg.inv(S1)
    logdet = float(np.linalg.slogdet(S1)[1])

    def log_g(P):
        x = P.reshape(d, -1) - m1[:, None]
        q = np.einsum("in,ij,jn->n", x, Si, x)
        return (-0.5 * q - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)).reshape(P.shape[1:])

    it = 0
    for th in np.linspace(0.0, 1.0, CONTINUATION_STEPS + 1)[1:]:
        if th < 1.0:
            def f(P, th=th):
                return np.logaddexp(math.log1p(-th) + log_g(P), math.log(th) + log_rho1_fn(P))
        else:
            f = log_rho1_fn
        best = None
        for weighted in (False, True):
            cand = polish(r0, phi, axes, f, math.inf, pre, tol, max_iter, history, progress, weighted=weighted)
            it += cand[1]
            if best is None or cand[2] < best[2]:
                best = cand
            if cand[2] <= accept_tol / 3:
                break
        phi, marg, stalled = best[0], best[2], best[3]
        history.append({"stage": "continuation", "theta": float(th), "marginal_l1": marg})
    return phi, marg, it, stalled


def solve_brenier_2d(problem, grid, r0, r1, tol, accept_tol, max_iter, progress, wall0, meta_fn, gauge_fn):
    """The 2D ν = 0 bridge on ``grid`` (module docstring); ``meta_fn``/``gauge_fn`` from :mod:`pde.ot.bridge`."""
    from .route import _law_fns, _levels, _restrict

    pdf0, _ = _law_fns(problem.rho0)
    _, lg1 = _law_fns(problem.target)
    shape = tuple(grid.n)
    t_s = time.perf_counter()
    levels, phi0, axes_prev, hist = [], None, None, []
    todo = _levels(shape)
    for lvl in todo:
        g = problem.grid(n=lvl, nt=1)
        mu = _restrict(r0, lvl)
        if phi0 is not None:
            phi0 = prolong(phi0, axes_prev, g.axes)
        t0 = time.perf_counter()
        phi, marg, it, stalled, h = brenier_map(mu, g.axes, lg1, phi0=phi0, tol=tol, accept_tol=accept_tol,
                                                max_iter=max_iter, progress=progress)
        hist.extend(e["marginal_l1"] for e in h if "marginal_l1" in e)
        levels.append({"n": list(lvl), "polish_iterations": it, "marginal_l1": marg, "stalled": stalled,
                       "wall_s": time.perf_counter() - t0})
        phi0, axes_prev = phi, g.axes
    solve_s = time.perf_counter() - t_s
    if marg > tol and not (stalled and marg <= accept_tol):
        why = (f"the polish stalled at {marg:.3e} > accept_tol = {accept_tol:g}; refine the grid or enlarge the box"
               if stalled else f"max_iter={max_iter} polish iterations were used before reaching tol; raise max_iter")
        raise OTConvergenceError(f"the 2D W2 map of the bridge did not converge: marginal error "
                                 f"‖rho0 − rho1(x − ∇φ)det(I − D²φ)‖₁ = {marg:.3e} > tol = {tol:g}: {why}", hist)
    accepted = marg > tol
    vol = float(np.prod(grid.h))
    gphi = mirror_gradient(phi, grid.h)
    kinetic = problem.lam / (2.0 * problem.T) * vol * float(np.sum(r0 * (gphi * gphi).sum(0)))
    t_l = time.perf_counter()
    disp = Displacement(phi, grid.axes)
    stats = PushStats()
    rho = np.empty((grid.nt + 1,) + shape)
    for k, t in enumerate(grid.t):
        rho[k], info = displacement(r0, phi, grid.axes, float(t) / problem.T, mu_fn=pdf0, disp=disp)
        stats.add(info, float(t), used=k < grid.nt)
    push_T = rho[-1].copy()
    rho[-1] = r1
    rho_s = time.perf_counter() - t_l
    t_p = time.perf_counter()
    gT = -(problem.lam / problem.T) * c_transform(phi, grid.axes, refine=True)
    phi_t = np.stack([hopf_lax(gT, grid.axes, (problem.T - float(t)) / problem.lam) for t in grid.t])
    phi_t = gauge_fn(phi_t, r1, grid)
    phi_s = time.perf_counter() - t_p
    status = "accepted-on-stall" if accepted else "converged"
    meta = meta_fn(problem, grid, rho, phi_t, r1, {
        "route": "brenier-map",
        "scheme": "W2 map by the second-order Monge-Ampere polish (rho0 = rho1(x - grad phi) det(I - D2 phi)) from the "
                  "moment-matched Gaussian map, warm-started over grid levels; displacement interpolation (Jacobian "
                  "push); Hopf-Lax potentials from -(lam/T) phi^c",
        "status": status, "accepted_on_stall": accepted,
        "convergence": (f"converged: marginal error {marg:.2e} <= tol {tol:g}" if not accepted else
                        f"accepted on stall: the polish stopped at marginal error {marg:.2e}, between tol {tol:g} and "
                        f"accept_tol {accept_tol:g}; about that much L1 error is added to rho"),
        "tol": tol, "accept_tol": accept_tol, "iterations": sum(lv["polish_iterations"] for lv in levels),
        "levels": levels, "residual_history": hist[:: max(1, len(hist) // 200)] + hist[-1:],
        "kinetic_energy": kinetic, "marginal_error_1": marg,
        "marginal_error_2": float(grid.integrate(np.abs(push_T - r1))), **stats.meta(),
        "timings": {"solve_s": solve_s, "rho_levels_s": rho_s, "phi_levels_s": phi_s,
                    "wall_s": time.perf_counter() - wall0},
    })
    return MFGSolution(grid.t, grid.axes, rho, phi_t, meta=meta, extras={"rho_push_T": push_T}, status=status)
