"""The couplings' data U (terminal cost for otflow, mean path for lq) and the outer Newton (JFNK) that closes them."""

from __future__ import annotations

import numpy as np

from . import _dolfinx_adapter as A
from .sweeps import RHO_FLOOR, FESolveError, _Core

PETSc = A.PETSc
MPI = A.MPI

__all__ = ["outer_newton"]

# --------------------------------------------------------------------------


class _KLCoupling:
    """otflow: U = g = 1 + log ρ^N - log γ at the owned nodes."""

    def __init__(self, problem, ops):
        self.ops = ops
        Xo = ops.X[: ops.nloc]
        self.logref = problem.reference.logpdf(Xo)
        self.nloc_U = ops.nloc
        # residual weight sqrt(m_i (ρ₀ + γ)/2): the fixed point matters where there is mass;
        # in the far tails log ρ^N is set by round-off-sized densities and would dominate an
        # unweighted norm (Newton's direction does not depend on this fixed scaling, the line
        # search and the stopping test do)
        w = ops.m * 0.5 * (problem.rho0.pdf(Xo) + problem.reference.pdf(Xo))
        w = w / ops.comm.allreduce(float(w.sum()))
        self.weight = np.sqrt(np.maximum(w, 1e-3 * ops.comm.allreduce(float(w.max()), op=MPI.MAX)))

    def initial(self, rho0):
        return self.image([rho0])

    def terminal(self, U):
        return U

    def running(self, U, k):
        return None

    def floor_value(self, r):
        return RHO_FLOOR * self.ops.comm.allreduce(float(r.max()) if r.size else 0.0, op=MPI.MAX)

    def image(self, rhos):
        r = rhos[-1]
        return 1.0 + np.log(np.maximum(r, self.floor_value(r))) - self.logref


class _MeanCoupling:
    """lq: U = the mean path m̄(t_k), k = 0..N (held on rank 0)."""

    weight = 1.0

    def __init__(self, problem, ops, nt):
        self.ops, self.nt, self.d = ops, nt, problem.dim
        self.q, self.qT = problem.coupling.q, problem.terminal.qT
        self.nloc_U = (nt + 1) * self.d if ops.comm.rank == 0 else 0
        self.Xo = ops.X[: ops.nloc]

    def _path(self, U):
        return self.ops.comm.bcast(U.reshape(self.nt + 1, self.d) if self.ops.comm.rank == 0 else None, root=0)

    def initial(self, rho0):
        return self.image([rho0] * (self.nt + 1))

    def terminal(self, U):
        mbar = self._path(U)[-1]
        return 0.5 * self.qT * ((self.Xo - mbar) ** 2).sum(-1)

    def running(self, U, k):
        mbar = self._path(U)[k + 1]  # f(ρ^{k+1}) in HJB step k
        return 0.5 * self.q * ((self.Xo - mbar) ** 2).sum(-1)

    def image(self, rhos):
        ops = self.ops
        means = np.array([[ops.integral(r * self.Xo[:, j]) for j in range(self.d)] for r in rhos])
        return means.ravel() if ops.comm.rank == 0 else np.zeros(0)


# --------------------------------------------------------------------------
# output: sampling on the regular grid


def outer_newton(core: _Core, coupling, rho0, rtol: float, maxit: int):
    """JFNK (PETSc SNES, matrix-free FD Jacobian, GMRES) on R(U) = U - G(U)."""
    comm = core.ops.comm
    state = {"evals": 0}

    def G(U):
        phis = core.hjb_sweep(coupling.terminal(U), lambda k: coupling.running(U, k))
        rhos = core.fp_sweep(rho0, phis)
        state["evals"] += 1
        return phis, rhos

    def residual(snes, X, F):
        # SNES hands X locked for reading (PETSc >= 3.19 enforces it): read-only access
        U = X.array_r.copy()
        _, rhos = G(U)
        F.array[:] = coupling.weight * (U - coupling.image(rhos))

    nU = coupling.nloc_U
    X = PETSc.Vec().createMPI((nU, PETSc.DECIDE), comm=comm)
    X.array[:] = coupling.initial(rho0)
    F = X.duplicate()
    snes = PETSc.SNES().create(comm)
    snes.setOptionsPrefix("mfgfe_outer_")
    snes.setFunction(residual, F)
    snes.setUseMF(True)
    snes.getKSP().setType("gmres")
    snes.getKSP().getPC().setType("none")
    snes.getKSP().setTolerances(rtol=1e-4, max_it=100)
    snes.setMaxLinearSolveFailures(maxit)
    snes.setTolerances(rtol=rtol, atol=1e-11, max_it=maxit)
    hist = []
    snes.setMonitor(lambda s, it, fnorm: hist.append(float(fnorm)))
    snes.setFromOptions()
    snes.solve(None, X)
    reason = snes.getConvergedReason()
    its = snes.getIterationNumber()
    lits = snes.getLinearSolveIterations()
    if reason < 0:
        raise FESolveError(f"the coupling Newton (SNES) failed: PETSc reason {reason} after {its} iterations, residual "
                           f"history {hist}; try a smaller time step or a finer mesh")
    phis, rhos = G(X.array_r.copy())
    X.destroy(), F.destroy(), snes.destroy()
    return phis, rhos, {"outer_newton_iterations": its, "outer_gmres_iterations": lits,
                        "outer_residual_history": hist, "coupling_sweeps": state["evals"]}
