"""The planning problem (bridge family): ρ at both ends given, φ(·, T) free up to a constant.

The scheme is that of :mod:`pde.fd.kernels` with b = 0, c = 0, F = 0:

    HJB_k  (φ^k - φ^{k+1})/Δt - νΔ_hφ^k + Ĥ(φ^k) = 0,                    k = 0..nt-1
    FP_k   (ρ^{k+1} - ρ^k)/Δt - νΔ_hρ^{k+1} + L(φ^k)ᵀρ^{k+1} = 0,         k = 0..nt-1

with ρ^0 = ρ₀ and ρ^{nt} = ρ₁ both data (nodal densities renormalised to
discrete mass 1) and φ^{nt} an unknown in place of a terminal condition.
Unknowns: φ^0..φ^{nt} and ρ^1..ρ^{nt-1}, in the time-interleaved layout of
:class:`~pde.fd.system.Discretization` with φ^{nt} in the slot that holds
ρ^{nt} there — 2·nt·N unknowns for the 2·nt·N equations. Two degeneracies
cancel: the HJB sees φ only through differences (φ + const is a solution),
and the FP rows sum to (h^dΣρ₁ - h^dΣρ₀)/Δt = 0 identically (one row is
implied by the others). The FP row of the last level at node 0 is therefore
replaced by a gauge, h^dΣρ₁φ^{nt} = 0, which makes the matrix nonsingular.
Residuals and the Jacobian come from the same Numba kernels as the other
families (the stencil Jacobian with the ρ^{nt} columns dropped and
∂HJB_{nt-1}/∂φ^{nt} = -I/Δt added).

Solver (:func:`reduced_newton`): Newton on ψ = φ^{nt} alone, with φ and ρ
re-solved by the backward HJB and forward FP sweeps at every trial
(:func:`shoot`), so ρ >= 0 with the mass of ρ₀ to round-off throughout, and
ρ^{nt}(ψ) = ρ₁ is what Newton solves; started from the Gaussian Schrödinger
bridge of the moment-matched laws (:meth:`PlanningSystem.initial_guess`).
``meta["terminal_mismatch"]`` reports max|ρ^{nt} - ρ₁| at the end.

ν = 0 is not covered: without diffusion the discrete densities have tails of
1e-20 and below where ρ(T) = ρ₁ does not determine φ(·, T) to working
precision (use the closed form, or a small ν).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import kernels as K
from .iterations import SUGGESTION, FDConvergenceError, armijo_backtrack, fp_forward, hjb_backward, make_progress
from .system import Discretization, NonFiniteError
from ..grid import kinetic_energy

__all__ = ["PlanningSystem", "solve_planning"]


class PlanningSystem:
    """The discrete planning system on a :class:`Discretization` (see module docstring).

    ``residual(U)``, ``jacobian(U)`` (CSC) and the layout of the unknowns; the
    all-at-once system that :func:`reduced_newton` takes its 2D steps from.
    """

    def __init__(self, disc: Discretization, rho1: np.ndarray):
        if disc.coupling[0] != "none" or np.any(disc.c != 0) or np.any(disc.bp != 0) or np.any(disc.bm != 0):
            raise ValueError("the planning system has b = 0, c = 0 and no running coupling")
        self.disc = disc
        self.rho1 = np.asarray(rho1, dtype=float).reshape(disc.N)
        self.N, self.nt, self.d, self.dt = disc.N, disc.nt, disc.d, disc.dt
        self.n_unknowns = 2 * self.nt * self.N
        self.grid = disc.grid
        # the replaced row (FP_{nt-1} at node 0) and the columns of φ^{nt}
        self.gauge_row = 2 * (self.nt - 1) * self.N + self.N
        self.last = slice(self.gauge_row, 2 * self.nt * self.N)
        # the gauge: h^d Σ ρ₁ φ^{nt} = 0 (weighted by ρ₁: the far tails, where φ(·, T) is barely
        # determined, must not move the constant of the bulk)
        self.gauge = disc.vol * self.rho1
        # SuperLU order: natural (block-banded) in 1D, COLAMD in 2D where the natural band is ~2N wide
        self.permc_spec = "NATURAL" if self.d == 1 else "COLAMD"

    # -- layout ----------------------------------------------------------------

    def unpack(self, U):
        """U -> (phi (nt+1, N), rho (nt+1, N)) with rho[0] = ρ₀, rho[nt] = ρ₁."""
        N, nt = self.N, self.nt
        blk = U.reshape(nt, 2, N)
        phi = np.empty((nt + 1, N))
        rho = np.empty((nt + 1, N))
        phi[:nt] = blk[:, 0]
        phi[nt] = blk[nt - 1, 1]
        rho[0] = self.disc.rho0
        rho[1:nt] = blk[: nt - 1, 1]
        rho[nt] = self.rho1
        return phi, rho

    def pack(self, phi, rho):
        """(phi, rho) of shape (nt+1, N) -> U (ρ^0, ρ^{nt} are data and not stored)."""
        nt = self.nt
        blk = np.empty((nt, 2, self.N))
        blk[:, 0] = phi[:nt]
        blk[: nt - 1, 1] = rho[1:nt]
        blk[nt - 1, 1] = phi[nt]
        return blk.ravel()

    def initial_guess(self):
        """The Gaussian Schrödinger bridge between the moment-matched Gaussians of ρ₀ and ρ₁ for φ, and the
        linear interpolation (1 - t/T)ρ₀ + (t/T)ρ₁ for ρ (positive, mass 1 at every level).

        φ = 0 would not do: the upwind FP flux does not depend on φ where its one-sided
        differences vanish, so the Newton matrix at φ = 0 is singular (no row sees φ^{nt}).
        """
        from ..exact import GaussianBridge, schrodinger_bridge_map

        d = self.disc
        moments = []
        for rho in (d.rho0, self.rho1):
            m = d.vol * rho @ d.pts
            y = d.pts - m
            moments += [m, d.vol * (y * rho[:, None]).T @ y]
        T = d.grid.T
        gb = GaussianBridge(*moments, T, d.nu, d.lam, schrodinger_bridge_map(moments[1], moments[3], 2 * d.nu * T))
        phi = np.stack([gb.phi(d.pts, t) for t in d.t])
        phi -= self.gauge @ phi[-1]
        rho = fp_forward(d, phi)
        rho[-1] = self.rho1
        return phi, rho

    # -- residual and Jacobian ---------------------------------------------------

    def equations(self, phi, rho):
        """Unscaled (res_hjb, res_fp), each (nt, N), of the scheme in the module docstring."""
        d = self.disc
        res_h = np.empty((self.nt, self.N))
        res_f = np.empty((self.nt, self.N))
        K.coupled_residual(phi, rho, d.c, d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam, res_h, res_f,
                           size=self.nt * self.N)
        return res_h, res_f

    def full_residual(self, U):
        """All 2·nt·N Δt-scaled equations, none replaced by the gauge (for certificates)."""
        res_h, res_f = self.equations(*self.unpack(U))
        return (np.stack([res_h, res_f], axis=1) * self.dt).ravel()

    def residual(self, U, check=True):
        """Δt-scaled residual with the gauge row (``gauge_row``: mean(φ^{nt}) = 0)."""
        F = self.full_residual(U)
        if check and not np.all(np.isfinite(F)):
            k = int(np.flatnonzero(~np.all(np.isfinite(F.reshape(self.nt, -1)), axis=1))[0])
            raise NonFiniteError(f"planning residual is NaN/Inf at time level {k} (t = {self.disc.t[k]:.4g})")
        F[self.gauge_row] = self.gauge @ U[self.last]
        return F

    def jacobian(self, U, rho_last=None, damping: float = 0.0, gauge=None):
        """∂F/∂U as scipy CSC (scaled like :meth:`residual`).

        ``rho_last``: the density level ρ^{nt} at which the FP_{nt-1} flux is linearised
        (default ρ₁); the reduced Newton passes ρ^{nt}(ψ) to get the exact derivative of
        ψ ↦ ρ^{nt}(ψ). ``damping`` λ_LM > 0 adds μ·∂FP_{nt-1}/∂ρ^{nt} on the columns of φ^{nt},
        μ = λ_LM·max_i Σ_k (∂FP_k/∂φ^k)_ii: the shift (J_ψ - μI) of :func:`reduced_newton`.
        ``gauge``: weights of the gauge row (default :attr:`gauge`). With damping it must be
        uniform: the FP rows then stay dependent (μ Σ_i δψ_i = 0), so dropping one loses nothing.
        """
        phi, rho = self.unpack(U)
        if rho_last is not None:
            rho[-1] = rho_last
        N, nt, dt = self.N, self.nt, self.dt
        rows, cols, vals = self.disc.stencil_jacobian_coo(phi, rho)
        vals = vals * dt
        in_last = (cols >= self.last.start) & (cols < self.last.stop)
        if damping > 0.0:
            # ρ^{nt}'s columns are φ^{nt}'s: keep the block ∂FP_{nt-1}/∂ρ^{nt} there, times μ
            node = cols % (2 * N)
            fp_phi = (rows // N) % 2 == 1
            fp_phi &= (cols // N) % 2 == 0
            fp_phi &= (rows // (2 * N) == cols // (2 * N)) & (rows % (2 * N) - N == node)
            diag = np.zeros(N)
            np.add.at(diag, node[fp_phi], vals[fp_phi])
            mu = damping * float(diag.max())
            vals = np.where(in_last, mu * vals, vals)
            keep = rows != self.gauge_row
        else:
            keep = ~in_last & (rows != self.gauge_row)
        # ρ^{nt} is data: without damping its columns are dropped; the gauge row is rebuilt below
        i = np.arange(N)
        last_h = 2 * (nt - 1) * N  # rows of HJB_{nt-1}
        R = [rows[keep], last_h + i, np.full(N, self.gauge_row)]
        C = [cols[keep], self.last.start + i, self.last.start + i]
        V = [vals[keep], np.full(N, K.identity_block_value(dt)), self.gauge if gauge is None else gauge]
        n = self.n_unknowns
        J = sp.csc_matrix((np.concatenate(V), (np.concatenate(R), np.concatenate(C))), shape=(n, n))
        J.eliminate_zeros()
        return J


def shoot(sysm: PlanningSystem, psi, hjb_tol: float = 1e-13):
    """φ(ψ) by the backward HJB sweep from φ^{nt} = ψ and ρ(ψ) by the forward FP sweep from ρ₀.

    Returns (phi, rho) of shape (nt+1, N): every HJB_k and FP_k, k < nt - 1, holds exactly
    (the HJB to ``hjb_tol``), ρ >= 0 with the mass of ρ₀; ρ[nt] - ρ₁ is the mismatch.
    """
    d = sysm.disc
    phi = hjb_backward(d, d.c, psi, tol=hjb_tol)
    return phi, fp_forward(d, phi)


def terminal_jacobian_1d(sysm: PlanningSystem, phi, rho) -> np.ndarray:
    """The N × N matrix ∂ρ^{nt}/∂ψ at (φ(ψ), ρ(ψ)) on a 1D reflecting grid, column by column.

    Column j is the terminal response of the linearised sweeps to δψ = e_j
    (:func:`~pde.fd.kernels.terminal_response` on the tridiagonal level blocks of
    :func:`~pde.fd.kernels.jacobian_bands_1d`), O(nt·N) each. It is -R of
    :class:`~pde.fd.linsolve.TerminalSchurSolver`: symmetric negative semi-definite,
    with the constants as null space.
    """
    d = sysm.disc
    nt, N = d.nt, d.N
    a_band, c_band = np.empty((nt, 3, N)), np.empty((nt, 3, N))
    K.jacobian_bands_1d(np.ascontiguousarray(phi), np.ascontiguousarray(rho), d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt,
                        d.nu, d.lam, a_band, c_band, size=nt * N)
    low, ipiv = np.empty((nt, N)), np.empty((nt, N))
    K.tridiag_factor(a_band, low, ipiv, size=nt * N)
    ident = K.identity_block_value(d.dt)
    x, yT, w = np.empty((nt, N)), np.empty(N), np.zeros(N)
    Jr = np.empty((N, N))
    for j in range(N):
        w[j] = 1.0
        K.terminal_response(a_band, low, ipiv, c_band, ident, w, x, yT)
        Jr[:, j] = yT
        w[j] = 0.0
    return Jr


def gauged_solve(Jr, b, gauge) -> np.ndarray:
    """δ with Jr δ = b + μ·1 and gauge·δ = 0 (bordered system; Jr has the constants as null space)."""
    N = Jr.shape[0]
    M = np.zeros((N + 1, N + 1))
    M[:N, :N] = Jr
    M[:N, N] = 1.0
    M[N, :N] = gauge
    return np.linalg.solve(M, np.concatenate([b, [0.0]]))[:N]


def _refined_solve(J, F, permc_spec: str, refinements: int = 3):
    """δ with J δ = -F by SuperLU plus iterative refinement (the planning matrix is badly scaled:
    its FP rows see φ only through ρ, 1e-20 and below in the tails)."""
    import scipy.sparse.linalg as spla

    lu = spla.splu(J.tocsc(), permc_spec=permc_spec)
    x = lu.solve(-F)
    for _ in range(refinements):
        x += lu.solve(-F - J @ x)
    return x


def reduced_newton(sysm: PlanningSystem, psi, tol: float, max_iter: int, progress=None, min_step: float = 1e-4,
                   damping: float = 1e-11):
    """Newton on ψ = φ^{nt} for ρ^{nt}(ψ) = ρ₁, with φ and ρ re-solved exactly by :func:`shoot` at every trial.

    Step: (J - μI) δψ = ρ₁ - ρ^{nt}(ψ) with the gauge, J = ∂ρ^{nt}/∂ψ (symmetric negative
    semi-definite, the constants as null space): in 1D from the dense N × N J
    (:func:`terminal_jacobian_1d`, bordered solve); in 2D as the ψ-part of the all-at-once
    Newton system of :class:`PlanningSystem` at (φ(ψ), ρ(ψ)) (equivalent, since the other rows
    hold there; μ enters as μ times the FP block of ρ^{nt}; SuperLU with COLAMD and iterative
    refinement). Armijo
    backtracking on ‖ρ^{nt} - ρ₁‖₂.

    The Levenberg–Marquardt shift μ = min(``damping``, max|ρ^{nt} - ρ₁|)·s (s: the largest
    diagonal entry of -J in 1D, its estimate Σ_k diag ∂FP_k/∂φ^k in 2D) bounds the step in the
    far tails, where J's entries are of the size of ρ (1e-20 and below) and undamped Newton
    asked for changes of ψ of 1e6 that no line search could follow; it vanishes with the
    mismatch. Re-solving instead of updating φ and ρ keeps ρ >= 0 and the HJB exact (the
    all-at-once iteration, whose ρ went negative in the tails, wandered instead of converging).
    Stops when max|ρ^{nt} - ρ₁| <= ``tol``. Returns (psi, phi, rho, history of max|ρ^{nt} - ρ₁|, info).
    """
    import time

    psi = np.array(psi, dtype=float)
    psi -= sysm.gauge @ psi
    phi, rho = shoot(sysm, psi)
    r = rho[-1] - sysm.rho1
    hist, steps = [float(np.abs(r).max())], []
    t_jac = t_lin = 0.0
    if progress:
        progress(0, hist[0], {"step": 0.0})
    for it in range(1, max_iter + 1):
        if hist[-1] <= tol:
            break
        t0 = time.perf_counter()
        lm = min(damping, hist[-1])
        if sysm.d == 1:
            J = terminal_jacobian_1d(sysm, phi, rho)
            mu = lm * float(np.abs(np.diag(J)).max())
            t1 = time.perf_counter()
            dpsi = gauged_solve(J - mu * np.eye(sysm.N), -r, sysm.gauge)
        else:
            rho_u = rho.copy()
            rho_u[-1] = sysm.rho1
            U = sysm.pack(phi, rho_u)
            # mean(δψ) = 0 (ψ is re-gauged below): with the uniform row the damping stays mass-neutral
            # (μ Σ δψ = 0) and dropping an FP row loses nothing. Pinning one value instead halves the
            # LU time at 32² × 8 but let the far-tail steps grow again and Newton stalled.
            J = sysm.jacobian(U, rho_last=rho[-1], damping=lm, gauge=np.full(sysm.N, 1.0 / sysm.N))
            F = sysm.residual(U, check=False)
            F[sysm.gauge_row] = 0.0
            t1 = time.perf_counter()
            dpsi = _refined_solve(J, F, sysm.permc_spec)[sysm.last]
        t2 = time.perf_counter()
        t_jac += t1 - t0
        t_lin += t2 - t1
        if not np.all(np.isfinite(dpsi)):
            raise NonFiniteError(f"planning Newton step {it}: the linear solve returned NaN/Inf")
        def trial(a):
            p_t = psi + a * dpsi
            p_t -= sysm.gauge @ p_t
            ph_t, rh_t = shoot(sysm, p_t)
            return (p_t, ph_t, rh_t), rh_t[-1] - sysm.rho1

        alpha, (state, r_t) = armijo_backtrack(trial, float(np.linalg.norm(r)), tol, 1.0, min_step,
                                               (NonFiniteError, FDConvergenceError))
        if alpha is None:
            raise FDConvergenceError(
                f"planning Newton stalled at iteration {it}: no step >= {min_step:g} reduces the terminal "
                f"mismatch (max |rho_T - rho1| = {hist[-1]:.3e}, history {[f'{h:.2e}' for h in hist]})", hist,
                SUGGESTION)
        psi_t, phi_t, rho_t = state
        psi, phi, rho, r = psi_t, phi_t, rho_t, r_t
        hist.append(float(np.abs(r).max()))
        steps.append(alpha)
        if progress:
            progress(it, hist[-1], {"step": alpha, "jac_s": t1 - t0, "lin_s": t2 - t1})
    if hist[-1] > tol:
        raise FDConvergenceError(f"planning Newton did not reach tol={tol:g} in {max_iter} iterations (max |rho_T - "
                                 f"rho1| = {hist[-1]:.3e}, history {[f'{h:.2e}' for h in hist]})", hist, SUGGESTION)
    return psi, phi, rho, hist, {"steps": steps, "iterations": len(hist) - 1, "jacobian_s": t_jac,
                                 "linear_solve_s": t_lin, "linear_solver": "dense terminal" if sysm.d == 1 else "direct"}


def solve_planning(problem, disc: Discretization, rho1: np.ndarray, tol: float, max_iter, progress, options):
    """Reduced Newton on the planning system; returns (phi, rho, info, extras, meta) like the other FD routes.

    ``tol`` applies to max|ρ^{nt} - ρ₁| (the FP rows of the last level, Δt-scaled, to
    first order). ``options``: ``initial_guess`` (phi, rho) of shape (nt+1, N): only its
    φ^{nt} is used (default: :meth:`PlanningSystem.initial_guess`).
    """
    from .driver import FDInputError

    if disc.nu <= 0.0:
        raise FDInputError(
            f"the FD planning route (bridge family) needs nu > 0 (got nu={disc.nu}); with nu = 0 the density tails "
            "leave phi(., T) undetermined in floating point — use method 'exact' (Gaussian laws) or a small nu > 0")
    if disc.grid.boundary != "reflecting":
        raise FDInputError("the FD planning route supports reflecting walls only")
    sysm = PlanningSystem(disc, rho1)
    init = options.get("initial_guess")
    phi0 = sysm.initial_guess()[0] if init is None else init[0]
    prog = make_progress(progress, "planning")
    psi, phi, rho, hist, info = reduced_newton(sysm, phi0[-1], tol, max_iter or 30, prog)
    rho_u = rho.copy()
    rho_u[-1] = sysm.rho1
    full = sysm.full_residual(sysm.pack(phi, rho_u))
    mismatch = rho[-1] - sysm.rho1
    info.update(residual_history=hist, total_newton_iterations=info["iterations"],
                final_residual=float(np.max(np.abs(full))), polish_change=0.0)
    meta = {
        "planning": "rho(0) = rho0 and rho(T) = rho1 imposed; phi(., T) unknown with sum(h^d rho1 phi(., T)) = 0; "
                    "reduced Newton on phi(., T), phi and rho re-solved by the HJB and FP sweeps",
        "terminal_mismatch": float(np.max(np.abs(mismatch))),
        "terminal_mismatch_l1": float(disc.vol * np.abs(mismatch).sum()),
        # J = ∫∫(λ/2)|∇φ/λ|²ρ on the returned levels (central differences, trapezoid in time)
        "kinetic_energy": kinetic_energy(disc.grid, rho.reshape((-1,) + disc.grid.shape),
                                         phi.reshape((-1,) + disc.grid.shape), problem.lam),
    }
    return phi, rho, info, {}, meta
