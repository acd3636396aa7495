"""The iterations on a :class:`~pde.fd.system.Discretization` (the homotopies around them: :mod:`pde.fd.driver`).

- :func:`newton`: all-at-once Newton on the coupled space-time system with
  the analytic Jacobian, a linear solver chosen by
  :func:`resolve_linear_solver` (SuperLU, block-preconditioned GMRES or the
  banded terminal-Schur solver of :mod:`pde.fd.linsolve`), a backtracking
  line search on ‖F‖₂ and, for a KL terminal (log ρ_T), a
  fraction-to-the-boundary rule that keeps ρ_T > 0.
- :func:`hjb_backward` / :func:`fp_forward`: the decoupled sweeps. The
  backward HJB solves each level by Newton on the convex discrete
  Hamiltonian (= Howard's policy iteration, globally convergent); the forward
  FP solves (I/Δt + M(φ^k))ᵀ ρ^{k+1} = ρ^k/Δt, the transpose of the HJB
  level matrix.
- :func:`fixed_point`: the independent cross-check — damped fictitious play
  ρ ← (1-θ)ρ + θ FP(HJB(ρ)) built from the two sweeps.

Failures raise :class:`FDConvergenceError` carrying the residual history.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .linsolve import BlockPreconditionedGMRES, TerminalSchurSolver, solve_direct
from .system import Discretization, NonFiniteError

__all__ = ["FDConvergenceError", "armijo_backtrack", "newton", "fixed_point", "hjb_backward", "fp_forward", "make_progress",
           "initial_guess", "resolve_linear_solver", "LINEAR_SOLVERS"]


class FDConvergenceError(RuntimeError):
    """The FD solver did not converge. ``history`` holds the residuals."""

    def __init__(self, message: str, history, suggestion: str = ""):
        full = message + (f" — {suggestion}" if suggestion else "")
        super().__init__(full)
        self.history = list(history)
        self.suggestion = suggestion


SUGGESTION = ("try a finer grid (n, nt), continuation='lam' or 'nu' (solve an easier problem first), a smaller time "
              "step, or solver='fixed-point' to obtain a starting point for Newton")


def make_progress(progress, label: str):
    """Normalise ``progress`` (bool or callable(it, residual, info)) to a callable or None."""
    if progress is False or progress is None:
        return None
    if callable(progress):
        return progress

    def _line(it, res, info):
        extra = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        msg = f"[fd {label}] iter {it:3d}  residual {res:.3e}  {extra}"
        try:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except ImportError:  # pragma: no cover
            print(msg, file=sys.stderr, flush=True)

    return _line


def level_solve(disc: Discretization, A, rhs, transpose: bool = False):
    """Solve A x = rhs (or Aᵀ x = rhs) for one level matrix A = I/Δt + M (N × N, CSR).

    1D reflecting grids give a tridiagonal A: LAPACK's banded solver. Other
    grids: SuperLU with a fill-reducing column order.
    """
    if disc.d == 1 and disc.grid.boundary == "reflecting":
        from scipy.linalg import solve_banded

        up, mid, lo = A.diagonal(1), A.diagonal(0), A.diagonal(-1)
        if transpose:
            up, lo = lo, up
        ab = np.zeros((3, disc.N))
        ab[0, 1:] = up
        ab[1] = mid
        ab[2, :-1] = lo
        return solve_banded((1, 1), ab, rhs, check_finite=False)
    M = A.T if transpose else A
    return spla.spsolve(M.tocsc(), rhs, permc_spec="COLAMD")


# ---------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------


def hjb_backward(disc: Discretization, src, phiT, tol: float = 1e-12, max_iter: int = 50, b_parts=None):
    """Backward HJB given the source (nt, N) and terminal φ^{nt} (N,): returns (nt+1, N).

    Each level solves (φ - φ^{k+1})/Δt - νΔ_hφ + Ĥ(φ) = src^k by Newton
    started at φ^{k+1}; ``tol`` is on Δt·max|residual|.
    """
    nt, N, dt = disc.nt, disc.N, disc.dt
    eye = sp.identity(N, format="csr") / dt
    phi = np.empty((nt + 1, N))
    phi[nt] = phiT
    for k in range(nt - 1, -1, -1):
        p = phi[k + 1].copy()
        for it in range(max_iter):
            ham, lap, M = disc.level_matrix(p, b_parts)
            r = (p - phi[k + 1]) / dt - disc.nu * lap + ham - src[k]
            if not np.all(np.isfinite(r)):
                raise NonFiniteError(f"HJB residual is NaN/Inf at time level {k} (t = {disc.t[k]:.4g}) in the backward sweep")
            if dt * np.max(np.abs(r)) <= tol:
                break
            p = p + level_solve(disc, eye + M, -r)
        else:
            raise FDConvergenceError(f"backward HJB sweep: level {k} did not converge in {max_iter} Newton steps",
                                     [dt * np.max(np.abs(r))], SUGGESTION)
        phi[k] = p
    return phi


def fp_forward(disc: Discretization, phi, rho0=None, b_parts=None, nu=None):
    """Forward FP for given φ (nt+1, N): (I/Δt + M(φ^k))ᵀ ρ^{k+1} = ρ^k/Δt. Returns (nt+1, N).

    1D reflecting grids: all level matrices at once (Numba), solved by tridiagonal
    substitutions; otherwise level by level with :func:`level_solve`.
    """
    nt, N, dt = disc.nt, disc.N, disc.dt
    if disc.d == 1 and disc.grid.boundary == "reflecting" and b_parts is None and nu is None and N >= 2:
        from . import kernels as K

        a_band = np.empty((nt, 3, N))
        c_band = np.empty((nt, 3, N))
        phi = np.ascontiguousarray(phi, dtype=float)
        K.jacobian_bands_1d(phi, np.zeros_like(phi), disc.nbp, disc.nbm, disc.ih, disc.bp, disc.bm, dt, disc.nu,
                            disc.lam, a_band, c_band, size=nt * N)
        low, ipiv = np.empty((nt, N)), np.empty((nt, N))
        K.tridiag_factor(a_band, low, ipiv, size=nt * N)
        rho = np.empty((nt + 1, N))
        K.fp_forward_sweep(a_band, low, ipiv, np.asarray(disc.rho0 if rho0 is None else rho0, dtype=float), rho)
        if not np.all(np.isfinite(rho)):
            k = int(np.flatnonzero(~np.all(np.isfinite(rho), axis=1))[0])
            raise NonFiniteError(f"FP solution is NaN/Inf at time level {k} (t = {disc.t[k]:.4g})")
        return rho
    eye = sp.identity(N, format="csr") / dt
    rho = np.empty((nt + 1, N))
    rho[0] = disc.rho0 if rho0 is None else rho0
    for k in range(nt):
        _, _, M = disc.level_matrix(phi[k], b_parts, nu)
        rho[k + 1] = level_solve(disc, eye + M, rho[k] / dt, transpose=True)
        if not np.all(np.isfinite(rho[k + 1])):
            raise NonFiniteError(f"FP solution is NaN/Inf at time level {k + 1} (t = {disc.t[k + 1]:.4g})")
    return rho


def initial_guess(disc: Discretization, tol: float = 1e-12):
    """One fictitious-play sweep from ρ^k = ρ₀: φ = HJB(ρ₀), ρ = FP(φ)."""
    rho = np.repeat(disc.rho0[None], disc.nt + 1, axis=0)
    m = None
    if disc.dm:
        m = np.repeat((disc.vol * disc.rho0 @ disc.pts)[None], disc.nt + 1, axis=0)
    phi = hjb_backward(disc, disc.source(rho, m), disc.terminal_value(rho[-1], None if m is None else m[-1]), tol)
    return phi, fp_forward(disc, phi)


# ---------------------------------------------------------------------------
# Newton
# ---------------------------------------------------------------------------


LINEAR_SOLVERS = ("auto", "direct", "gmres", "schur")


def resolve_linear_solver(disc: Discretization, linear_solver: str = "auto") -> str:
    """The linear solver of the Newton steps: "direct" (SuperLU), "gmres" or "schur".

    "auto": "schur" when the game is coupled only through the terminal cost
    on a 1D reflecting grid (:class:`~pde.fd.linsolve.TerminalSchurSolver`,
    O(nt·N) per iteration); else GMRES with the block-triangular
    preconditioner in 2D and for large 1D systems without moment unknowns;
    else SuperLU.
    """
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver={linear_solver!r}; expected one of {list(LINEAR_SOLVERS)}")
    if linear_solver == "schur" and not disc.terminal_coupled_1d:
        raise ValueError("linear_solver='schur' needs a 1D reflecting grid with the coupling only in the terminal "
                         "cost (no running coupling f, no mean-field moments)")
    if linear_solver != "auto":
        return linear_solver
    if disc.terminal_coupled_1d:
        return "schur"
    if disc.dm == 0 and (disc.d == 2 or disc.n_unknowns > 20_000):
        return "gmres"
    return "direct"


def armijo_backtrack(trial, norm0: float, tol: float, alpha: float = 1.0, min_step: float = 1e-4,
                     errors=(NonFiniteError,)):
    """Halve α until ``trial(α) -> (state, residual)`` gives ‖residual‖₂ <= (1 - 1e-4 α)·norm0
    or max|residual| <= tol; a trial raising one of ``errors`` counts as a failure.

    Returns (α, (state, residual)), or (None, (None, None)) once α < ``min_step``.
    """
    while alpha >= min_step:
        try:
            state, res = trial(alpha)
            if np.linalg.norm(res) <= (1.0 - 1e-4 * alpha) * norm0 or np.max(np.abs(res)) <= tol:
                return alpha, (state, res)
        except errors:
            pass
        alpha *= 0.5
    return None, (None, None)


def newton(disc: Discretization, U0, tol: float = 1e-10, max_iter: int = 30, progress=None, label: str = "newton",
           min_step: float = 1e-4, diverge: float = None, linear_solver: str = "auto", stats: dict = None):
    """All-at-once Newton. Returns (U, history, info); raises FDConvergenceError.

    ``history`` lists Δt-scaled max-norm residuals, the first for U0.
    ``stats``: optional dict whose "jacobian_s", "linear_solve_s" and
    "krylov_iterations" are incremented as the iteration goes, so that callers
    running several Newton solves (continuation) can total them, failed ones included.
    """
    U = np.array(U0, dtype=float)
    F = disc.residual(U)
    res = float(np.max(np.abs(F)))
    hist, steps, gm_its, schur_its = [res], [], [], []
    kind = resolve_linear_solver(disc, linear_solver)
    t_lin = t_jac = 0.0
    kl = disc.terminal[0] == "kl"
    sl_T = slice(2 * (disc.nt - 1) * disc.N + disc.N, 2 * disc.nt * disc.N)
    if progress:
        progress(0, res, {"step": 0.0})
    for it in range(1, max_iter + 1):
        if res <= tol:
            break
        t0 = time.perf_counter()
        if kind == "schur":
            bands = disc.jacobian_bands(U)
        else:
            J = disc.jacobian(U)
        t1 = time.perf_counter()
        if kind == "schur":
            # preconditioner band: 32 (measured best trade-off at N = 1000), narrower on small
            # grids where building it would cost more than the CG iterations it saves
            ls = TerminalSchurSolver(*bands, rtol=max(1e-12, min(1e-4, 1e-2 * res)),
                                     precond_band=min(32, max(4, disc.N // 16)))
            dU = ls.solve(F)
            schur_its.append(ls.iterations)
        elif kind == "gmres":
            ls = BlockPreconditionedGMRES(disc, J, rtol=max(1e-12, min(1e-4, 1e-2 * res)))
            dU = ls.solve(F)
            gm_its.append(ls.iterations)
        else:
            dU = solve_direct(J, F)
        t2 = time.perf_counter()
        t_jac += t1 - t0
        t_lin += t2 - t1
        if stats is not None:
            stats["jacobian_s"] = stats.get("jacobian_s", 0.0) + (t1 - t0)
            stats["linear_solve_s"] = stats.get("linear_solve_s", 0.0) + (t2 - t1)
            if kind in ("schur", "gmres"):
                stats["krylov_iterations"] = stats.get("krylov_iterations", 0) + (schur_its or gm_its)[-1]
        if not np.all(np.isfinite(dU)):
            raise NonFiniteError(f"Newton step {it}: the linear solve returned NaN/Inf (singular Jacobian?)")
        alpha = 1.0
        if kl and not disc.log_terminal:  # keep ρ_T > 0 so that log ρ_T exists (fraction to the boundary)
            rT, dT = U[sl_T] + disc.kl_floor, dU[sl_T]
            neg = dT < 0
            if np.any(neg):
                alpha = min(1.0, 0.99 * float(np.min(rT[neg] / -dT[neg])))
        def trial(a, U=U, dU=dU):
            Ut = U + a * dU
            return Ut, disc.residual(Ut)

        alpha, (Ut, Ft) = armijo_backtrack(trial, float(np.linalg.norm(F)), tol, alpha, min_step)
        if alpha is None:
            raise FDConvergenceError(
                f"Newton stalled at iteration {it}: no step >= {min_step:g} reduces the residual "
                f"(residual {res:.3e}, history {[f'{h:.2e}' for h in hist]})", hist, SUGGESTION)
        U, F = Ut, Ft
        res = float(np.max(np.abs(F)))
        hist.append(res)
        steps.append(alpha)
        if diverge is not None and res > diverge * hist[0]:
            raise FDConvergenceError(f"Newton diverging at iteration {it} (residual {res:.3e})", hist, SUGGESTION)
        if progress:
            extra = {"krylov": (schur_its or gm_its)[-1]} if kind in ("schur", "gmres") else {}
            progress(it, res, {"step": alpha, "jac_s": t1 - t0, "lin_s": t2 - t1, **extra})
    if res > tol:
        raise FDConvergenceError(
            f"Newton did not reach tol={tol:g} in {max_iter} iterations (residual {res:.3e}, history "
            f"{[f'{h:.2e}' for h in hist]})", hist, SUGGESTION)
    return U, hist, {"steps": steps, "jacobian_s": t_jac, "linear_solve_s": t_lin, "iterations": len(hist) - 1,
                     "gmres_iterations": gm_its, "schur_iterations": schur_its, "linear_solver": kind}


def fixed_point(disc: Discretization, phi0=None, rho0=None, tol: float = 1e-10, max_iter: int = 500,
                relaxation: float = 0.5, progress=None):
    """Damped fictitious play: ρ ← (1-θ)ρ + θ FP(HJB(ρ)), θ = ``relaxation``.

    Converged when the coupled residual of (HJB(ρ), ρ) is ≤ tol (the same
    Δt-scaled max norm as :func:`newton`). Returns (phi, rho, history).
    """
    if rho0 is None:
        rho = np.repeat(disc.rho0[None], disc.nt + 1, axis=0)
    else:
        rho = np.array(rho0, dtype=float)
        rho[0] = disc.rho0
    hist = []
    for it in range(max_iter + 1):
        m = (disc.vol * rho @ disc.pts) if disc.dm else None
        phiT = disc.terminal_value(rho[-1], None if m is None else m[-1])
        if not np.all(np.isfinite(phiT)):
            raise NonFiniteError("terminal condition g(x, rho_T) is not finite in the fixed-point iteration")
        phi = hjb_backward(disc, disc.source(rho, m), phiT, tol=0.01 * tol)
        res = float(np.max(np.abs(disc.residual(disc.pack(phi, rho)))))
        hist.append(res)
        if progress:
            progress(it, res, {"relaxation": relaxation})
        if res <= tol:
            return phi, rho, hist
        rho_new = fp_forward(disc, phi)
        rho = (1.0 - relaxation) * rho + relaxation * rho_new
    raise FDConvergenceError(f"fixed-point iteration did not reach tol={tol:g} in {max_iter} iterations "
                             f"(residual {hist[-1]:.3e})", hist,
                             "lower the relaxation, raise max_iter, or use solver='newton'")
