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
"""

from __future__ import annotations

import inspect

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

# SciPy renamed gmres's relative tolerance ``tol`` to ``rtol`` in 1.12 and removed ``tol`` in 1.14
# (Debian 12 ships 1.10, Debian 13 1.15): pass whichever this SciPy takes.
_GMRES_RTOL = "rtol" if "rtol" in inspect.signature(spla.gmres).parameters else "tol"

__all__ = ["solve_direct", "BlockPreconditionedGMRES"]


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
