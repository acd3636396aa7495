"""Linear solvers for the Newton system J δ = -F of the coupled scheme.

In the paired block order (HJB_k with φ^k, FP_k with ρ^{k+1}) the Jacobian is

    J = [ A  B ]     A  = ∂HJB/∂φ: block upper bidiagonal (backward in time)
        [ C  E ]     E  = ∂FP/∂ρ  = Aᵀ (up to the log-variable column scaling
                                       of the last level): block lower bidiagonal
                     C  = ∂FP/∂φ: block diagonal;  B = ∂HJB/∂ρ: block diagonal
                          (the coupling f' and the terminal g').

- ``direct``: SuperLU on the whole matrix (small grids, and the bordered LQ
  system with mean unknowns).
- ``gmres``: GMRES preconditioned by the block triangular P = [[A, 0], [C, E]],
  applied by one backward sweep (A) and one forward sweep (E) of N × N level
  solves whose LU factors are computed once per Newton step (E_k reuses the
  factors of D_k = A_kk by a transposed solve). P⁻¹J - I has rank at most the
  rank of B, so GMRES converges in a few iterations when the coupling is
  weak and in one when B = 0 (sgm, decoupled games).
- ``schur`` (:class:`TerminalSchurSolver`): 1D reflecting grids where B is
  only the terminal block -g'(ρ_T): exact tridiagonal sweeps plus CG on the
  N × N Schur complement for δρ_T, without assembling J.
"""

from __future__ import annotations

import inspect

import numpy as np
import scipy.sparse.linalg as spla

# SciPy renamed the relative tolerance ``tol`` of its Krylov solvers to ``rtol`` in 1.12 and removed
# ``tol`` in 1.14 (Debian 12 ships 1.10, Debian 13 1.15): pass whichever this SciPy takes.
_GMRES_RTOL = "rtol" if "rtol" in inspect.signature(spla.gmres).parameters else "tol"

__all__ = ["solve_direct", "BlockPreconditionedGMRES", "TerminalSchurSolver"]


def solve_direct(J, F):
    # SuperLU in the natural (time-interleaved, block-banded) order: measured
    # faster in 1D than COLAMD/MMD, whose orders cost more than they save here.
    return spla.spsolve(J, -F, permc_spec="NATURAL")


class BlockPreconditionedGMRES:
    """Solve J δ = -F by GMRES with the block triangular preconditioner above."""

    def __init__(self, disc, J, rtol: float):
        N, nt = disc.N, disc.nt
        self.N, self.nt = N, nt
        J = J.tocsr()
        self.J = J
        blk = lambda r, c: J[r * N:(r + 1) * N, c * N:(c + 1) * N]  # noqa: E731
        self.U = [blk(2 * k, 2 * k + 2) if k < nt - 1 else None for k in range(nt)]
        self.C = [blk(2 * k + 1, 2 * k) for k in range(nt)]
        self.L = [blk(2 * k + 1, 2 * k - 1) if k > 0 else None for k in range(nt)]
        self.luD = [spla.splu(blk(2 * k, 2 * k).tocsc(), permc_spec="COLAMD") for k in range(nt)]
        E_last = blk(2 * nt - 1, 2 * nt - 1)
        D_last = blk(2 * nt - 2, 2 * nt - 2)
        # E_k = D_kᵀ except where the last level carries ψ = log ρ (column scaling)
        self.luE_last = None
        if abs(E_last - D_last.T).max() > 0:
            self.luE_last = spla.splu(E_last.tocsc(), permc_spec="COLAMD")
        self.rtol = rtol
        self.iterations = 0

    def _precond(self, v):
        N, nt = self.N, self.nt
        v = v.reshape(nt, 2, N)
        x = np.empty((nt, N))
        y = np.empty((nt, N))
        for k in range(nt - 1, -1, -1):
            r = v[k, 0] if k == nt - 1 else v[k, 0] - self.U[k] @ x[k + 1]
            x[k] = self.luD[k].solve(r)
        for k in range(nt):
            r = v[k, 1] - self.C[k] @ x[k]
            if k > 0:
                r = r - self.L[k] @ y[k - 1]
            if k == nt - 1 and self.luE_last is not None:
                y[k] = self.luE_last.solve(r)
            else:
                y[k] = self.luD[k].solve(r, trans="T")
        return np.stack([x, y], axis=1).ravel()

    def solve(self, F):
        n = F.size
        M = spla.LinearOperator((n, n), matvec=self._precond, dtype=float)
        count = [0]

        def cb(_):
            count[0] += 1

        x0 = self._precond(-F)  # exact when B = 0
        if np.linalg.norm(self.J @ x0 + F) <= self.rtol * np.linalg.norm(F):
            self.iterations = 0
            return x0
        dx, info = spla.gmres(self.J, -F, x0=x0, M=M, atol=0.0, restart=60, maxiter=20,
                              callback=cb, callback_type="pr_norm", **{_GMRES_RTOL: self.rtol})
        self.iterations = count[0]
        if info != 0:
            # fall back on the exact solve rather than return an inexact step
            return solve_direct(self.J.tocsc(), F)
        return dx


class TerminalSchurSolver:
    """Solve J δ = -F for a 1D game coupled only through the terminal cost.

    When the running cost does not depend on ρ, the only block coupling HJB to
    ρ is B = -diag(g'(ρ^{nt})) in the last HJB row. Given z = δρ^{nt}, the rest
    of the system is block triangular and is solved exactly by one backward
    and one forward sweep of tridiagonal level solves
    (:func:`~pde.fd.kernels.terminal_coupled_sweeps`, O(nt·N)); z itself solves
    the N × N Schur complement system

        (I + R G) z = y⁰_T,   G = diag(g') > 0,   R = Σ_k Φ_kᵀ C_k Φ_k,

    with Φ_k = A_k⁻¹ ⋯ A_{nt-1}⁻¹ the backward propagator and C_k = ∂FP_k/∂φ^k
    (symmetric positive semi-definite: the Hessian of ρ·Ĥ), and y⁰ the
    forward sweep for z = 0. Since the FP block is exactly Aᵀ, R is symmetric
    and u = G^{1/2} z solves the SPD system (I + G^{1/2} R G^{1/2}) u = G^{1/2} y⁰_T:
    preconditioned conjugate gradients on N unknowns, one sweep pair
    (:func:`~pde.fd.kernels.terminal_response`) per iteration, never forming
    the 2·nt·N matrix. The iteration stops on the residual of the whole
    linearised system, which is exactly G(z - y_T) in the last HJB row (every
    other row is solved exactly by the sweeps): ‖G(z - y_T)‖₂ <= rtol·‖F‖₂.

    Preconditioner: I + G^{1/2} R_b G^{1/2} with R_b a banded approximation
    of R (half-bandwidth ``precond_band``) from the recursion
    Y ← A_k⁻ᵀ (Y + C_k) A_k⁻¹ with ``precond_group`` levels merged per step
    (:func:`~pde.fd.kernels.schur_band_riccati`), factored by banded Cholesky.
    The condition number of the Schur complement grows like N² (stagnation
    points of the flow, where R ≈ T·C), so unpreconditioned CG needs O(N)
    iterations; measured on 1D otflow at nt = N = 1000: about 20 instead of 300.

    If g' is not positive everywhere (a non-convex terminal), GMRES on
    (I + R G) z = y⁰_T replaces CG.
    """

    def __init__(self, a_band, c_band, ident: float, gprime, rtol: float, max_iter: int = 500,
                 precond_band: int = 32, precond_group: int = None, precond_extra: int = None):
        from . import kernels as K

        self.a_band, self.c_band, self.ident = a_band, c_band, float(ident)
        nt, _, N = a_band.shape
        self.nt, self.N = nt, N
        self.low = np.empty((nt, N))
        self.ipiv = np.empty((nt, N))
        K.tridiag_factor(a_band, self.low, self.ipiv, size=nt * N)
        self.gp = np.asarray(gprime, dtype=float)
        self.rtol = rtol
        self.max_iter = max_iter
        self.iterations = 0
        self.converged = True
        self.precond_band = precond_band
        # products kept on b + extra: A⁻¹ decays fast away from the diagonal; b/4 gave the same
        # CG iterations as 2b at half the cost (1D otflow, N = 1000)
        self.precond_extra = precond_extra if precond_extra is not None else max(4, precond_band // 4)
        self.precond_group = precond_group if precond_group is not None else max(1, int(round(nt / 128)))
        self._x = np.empty((nt, N))
        self._y = np.empty((nt, N))

    def preconditioner(self, compensate: bool = False):
        """Banded Cholesky factor (cb, lower) of I + G^{1/2} R_b G^{1/2}, or None if not positive definite.

        ``compensate``: move the entries dropped from the band to the diagonal
        (keeps the approximation positive semi-definite, at some loss of accuracy).
        """
        import scipy.linalg as sla

        from . import kernels as K

        b = max(1, min(self.precond_band, self.N - 1))
        yb = np.empty((self.N, 2 * b + 1))
        K.schur_band_riccati(self.a_band, self.c_band, self.precond_group, b, self.precond_extra, compensate, yb)
        gs = np.sqrt(self.gp)
        ab = np.zeros((b + 1, self.N))
        for u in range(b + 1):
            # upper band storage: ab[b - u, i + u] = P[i, i + u]
            ab[b - u, u:] = gs[: self.N - u] * yb[: self.N - u, b + u] * gs[u:]
        ab[b] += 1.0
        try:
            return sla.cholesky_banded(ab, lower=False, check_finite=False), False
        except np.linalg.LinAlgError:
            return None

    def _sweeps(self, rh, rf):
        from . import kernels as K

        K.terminal_coupled_sweeps(self.a_band, self.low, self.ipiv, self.c_band, self.ident, rh, rf, self._x, self._y)
        return self._x, self._y

    def _R(self, w):
        """R w = -y_T of the sweeps driven by w in the last HJB row only."""
        from . import kernels as K

        yT = np.empty(self.N)
        K.terminal_response(self.a_band, self.low, self.ipiv, self.c_band, self.ident, np.ascontiguousarray(w),
                            self._x, yT)
        return -yT

    def solve(self, F):
        """δ with J δ ≈ -F (relative residual ``rtol``); F and δ in the unknown layout of the system."""
        nt, N = self.nt, self.N
        Fb = F.reshape(nt, 2, N)
        rh = -Fb[:, 0]
        rf = -Fb[:, 1]
        gp = self.gp
        atol = self.rtol * float(np.linalg.norm(F))
        yT0 = self._sweeps(rh, rf)[1][-1].copy()
        self.iterations = 0
        if np.any(gp != 0.0):
            z = self._cg(yT0, atol) if np.all(gp > 0.0) else self._gmres(yT0, atol)
            rh[-1] += gp * z
            self._sweeps(rh, rf)
        dU = np.empty((nt, 2, N))
        dU[:, 0] = self._x
        dU[:, 1] = self._y
        return dU.ravel()

    def _cg(self, yT0, atol):
        """PCG on (I + G^{1/2} R G^{1/2}) u = G^{1/2} y⁰_T; returns z = G^{-1/2} u."""
        import scipy.linalg as sla

        gs = np.sqrt(self.gp)
        u = np.zeros_like(yT0)
        r = gs * yT0
        res = float(np.linalg.norm(gs * r))
        if res <= atol:
            return u
        pc = self.preconditioner() if self.precond_band else None
        if pc is None and self.precond_band:
            # the banded truncation lost definiteness (steep g' in the tails): compensated version
            pc = self.preconditioner(compensate=True)
        prec = (lambda v: sla.cho_solve_banded(pc, v, check_finite=False)) if pc is not None else (lambda v: v)
        zr = prec(r)
        p = zr.copy()
        rz = float(r @ zr)
        best, best_u, since_best = res, u.copy(), 0
        it = 0
        while res > atol:
            if it >= self.max_iter or since_best >= 50:
                # round-off floor or too slow: return the best iterate; the line search of the
                # Newton iteration judges the step
                self.converged = False
                u = best_u
                break
            q = p + gs * self._R(gs * p)
            pq = float(p @ q)
            if not pq > 0.0:
                # not SPD in floating point (should not happen): solve without the symmetry
                self.iterations += it
                return self._gmres(yT0, atol)
            alpha = rz / pq
            u += alpha * p
            r -= alpha * q
            res = float(np.linalg.norm(gs * r))
            if res < best:
                best, since_best = res, 0
                best_u[:] = u
            else:
                since_best += 1
            zr = prec(r)
            rz_new = float(r @ zr)
            p = zr + (rz_new / rz) * p
            rz = rz_new
            it += 1
        self.iterations += it
        return u / gs

    def _gmres(self, yT0, atol):
        """GMRES on (I + R G) z = y⁰_T; stops on ‖G(z - y_T)‖ <= atol (bounded by max|g'| times its residual)."""
        gp = self.gp
        N = self.N
        op = spla.LinearOperator((N, N), matvec=lambda z: z + self._R(gp * z), dtype=float)
        count = [0]

        def cb(_):
            count[0] += 1

        scale = max(1.0, float(np.abs(gp).max()))
        kw = dict(atol=atol / scale, restart=min(N, 200), maxiter=max(1, self.max_iter // min(N, 200)), callback=cb,
                  callback_type="pr_norm")
        z, info = spla.gmres(op, yT0, **{_GMRES_RTOL: 0.0}, **kw)
        self.iterations += count[0]
        self.converged = info == 0
        return z
