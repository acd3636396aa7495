"""The time-marching core of the FE solver: backward HJB sweeps (Newton per step) and forward FP sweeps."""

from __future__ import annotations

import numpy as np

from ..problem import MFGProblem
from . import _dolfinx_adapter as A
from .operators import P1Operators

PETSc = A.PETSc
MPI = A.MPI

__all__ = ["DEFAULT_KSP", "BJACOBI_ILU", "ASM_ILU", "AMG", "RHO_FLOOR", "FESolveError", "default_ksp_options"]

#: PETSc options of the inner linear solves (prefix ``mfgfe_``) apart from the preconditioner: the
#: matrices M/Δt + A(φ) (HJB) and their transposes (FP) are non-symmetric, hence GMRES
_KSP_BASE = {"ksp_type": "gmres", "ksp_rtol": 1e-13, "ksp_atol": 1e-15, "ksp_max_it": 500}

#: block Jacobi, ILU(0) per rank, rebuilt for every solve (the former default): cheapest per iteration, but
#: its iterations double on 2 ranks (2789 → 6425 on the benchmark); pass it as ``ksp_options`` to compare
BJACOBI_ILU = dict(A.ILU_PC_OPTIONS)

#: additive Schwarz (overlap 1) with ILU(0) per subdomain: the block-Jacobi ILU(0) of one rank, with
#: iterations that grow far less with the ranks (benchmark, 2 ranks: 1.2x serial vs 2.3x); pass it as ``ksp_options``
ASM_ILU = dict(A.ASM_ILU_PC_OPTIONS)

#: algebraic multigrid (hypre BoomerAMG, else GAMG) with preconditioner reuse; pass it as ``ksp_options``
AMG = A.scalable_pc_options()


def default_ksp_options(comm=None) -> dict:
    """The default options of the inner solves: GMRES + the preconditioner
    :func:`pde.fe._dolfinx_adapter.default_pc_options` picks for ``comm``'s size."""
    return {**_KSP_BASE, **A.default_pc_options(comm)}


#: default PETSc options of the inner linear solves (prefix ``mfgfe_``), for this PETSc build
DEFAULT_KSP = default_ksp_options()

#: ``mfgfe_`` options this module put into PETSc's global options database, with the value set (so
#: that a later solve can tell them from the user's command-line / ``PETSC_OPTIONS`` ones and replace them)
_SET_HERE: dict = {}


def _apply_options(prefix: str, ksp_options: dict, comm) -> dict:
    """Put the inner-solve options under ``prefix`` into PETSc's options database.

    Precedence: command line / ``PETSC_OPTIONS`` (``-mfgfe_...``) > ``ksp_options``
    > the defaults. When the user chose a ``pc_type`` (either way) the default
    preconditioner's sub-options are left out. Returns the options in effect.
    """
    opts = PETSc.Options()
    for key in [k for k in _SET_HERE if k.startswith(prefix)]:  # left over from an earlier solve
        if opts.hasName(key) and opts.getString(key) == _SET_HERE[key]:  # not changed by the user since
            opts.delValue(key)
        del _SET_HERE[key]
    user_pc = "pc_type" in ksp_options or opts.hasName(prefix + "pc_type")
    wanted = {**_KSP_BASE, **({} if user_pc else A.default_pc_options(comm)), **ksp_options}
    effective = {}
    for k, v in wanted.items():
        if opts.hasName(prefix + k):
            effective[k] = opts.getString(prefix + k)
        else:
            opts.setValue(prefix + k, v)
            _SET_HERE[prefix + k] = opts.getString(prefix + k)
            effective[k] = v
    if user_pc and "pc_type" not in effective:
        effective["pc_type"] = opts.getString(prefix + "pc_type")
    return effective


#: density floor (relative to max ρ) inside log ρ for the KL terminal cost
RHO_FLOOR = 1e-12

#: peak resident bytes per space-time dof (dofs·(nt+1)) by dimension, per mesh dof, and a fixed part
#: (DOLFINx, PETSc, MPI); measured on the space-time Newton route, the largest (docs/fe.md, "Memory")
FE_BYTES_PER_NODE = {1: 1500.0, 2: 3000.0}
FE_BYTES_PER_DOF = 5000.0
FE_BYTES_FIXED = 400e6


class FESolveError(RuntimeError):
    """A Newton or linear solve of the FE solver failed (the message says which and why)."""


# --------------------------------------------------------------------------


class _Core:
    """Backward HJB sweeps (Newton) and forward FP sweeps on one mesh."""

    def __init__(self, problem: MFGProblem, ops: P1Operators, nt: int, control: bool, ksp_options: dict,
                 newton_tol: float, newton_maxit: int, progress: bool):
        self.p, self.ops, self.nt = problem, ops, nt
        self.dt = problem.T / nt
        self.t = np.linspace(0.0, problem.T, nt + 1)
        self.lam = problem.lam
        self.control = control
        self.set_nu(problem.nu)
        self.wp_lam = ops.wp / self.lam
        # one persistent matrix per operator family, refilled in place for every Newton step / FP step
        self._mats = {"hjb": ops.pattern_matrix(), "fp": ops.pattern_matrix()}
        self._bx = None
        self.newton_tol, self.newton_maxit = newton_tol, newton_maxit
        self.progress = progress and ops.comm.rank == 0
        self.ksp_options = _apply_options("mfgfe_", ksp_options, ops.comm)
        self.ksp = PETSc.KSP().create(ops.comm)
        self.ksp.setOptionsPrefix("mfgfe_")
        self.ksp.setFromOptions()
        # preconditioner reuse (see PC_REUSE_KEYS): at most ``pc_reuse`` solves per PC setup, a rebuild
        # after a solve that took more than ``pc_reuse_growth`` x the iterations of the first solve on
        # that setup, and always when the operator family changes (HJB M/dt + A  <->  FP its transpose)
        popts = PETSc.Options("mfgfe_")
        self.pc_reuse = max(1, int(popts.getInt("pc_reuse", 1)))
        self.pc_reuse_growth = float(popts.getReal("pc_reuse_growth", 1.5))
        self._pc = {"family": None, "uses": 0, "fresh_its": 0, "stale": True}
        pc = self.ksp.getPC()
        self.pc_type = pc.getType()
        if self.pc_type == "hypre":
            self.pc_type += "/" + pc.getHYPREType()
        Xo = ops.X[: ops.nloc]
        self.c = [problem.c(Xo, float(t)) for t in self.t]
        self.stats = {"newton_iterations": 0, "newton_max_per_step": 0, "ksp_iterations": 0, "linear_solves": 0,
                      "pc_setups": 0,
                      "hjb_sweeps": 0, "fp_sweeps": 0, "fp_clipped_min": 0.0}

    def set_nu(self, nu: float) -> None:
        """Viscosity ν: the linear weights c_ij of L, their row sums and the reversed weights c_ji."""
        p, ops = self.p, self.ops
        self.clin = ops.linear_weights(nu, p.drift)
        self.Ldiag = ops.rowsum(self.clin)
        self.crev = self.clin if p.drift is None else ops.linear_weights(nu, p.drift, reverse=True)

    def destroy(self) -> None:
        """Free the PETSc objects (the KSP and the persistent matrices)."""
        for M in self._mats.values():
            M.destroy()
        for v in self._bx or ():
            v.destroy()
        self.ksp.destroy()

    # -- pieces ------------------------------------------------------------

    def _solve(self, M, rhs: np.ndarray, what: str, family: str) -> np.ndarray:
        if self._bx is None:
            self._bx = (self.ops.vec(), self.ops.vec())  # right-hand side and solution, reused
        b, x = self._bx
        b.array[:] = rhs
        pc = self._pc
        rebuild = (self.pc_reuse == 1 or pc["stale"] or pc["family"] != family or pc["uses"] >= self.pc_reuse)
        # new values (the matrices are refilled in place) or a switch of operator make PETSc rebuild the PC
        # unless reuse is set
        self.ksp.getPC().setReusePreconditioner(not rebuild)  # petsc4py 3.18 has no KSP.setReuse...; same call
        self.ksp.setOperators(M)
        self.ksp.solve(b, x)
        reason = self.ksp.getConvergedReason()
        its = self.ksp.getIterationNumber()
        if rebuild:
            pc.update(family=family, uses=0, fresh_its=max(its, 1))
            self.stats["pc_setups"] += 1
        pc["uses"] += 1
        pc["stale"] = reason < 0 or its > self.pc_reuse_growth * pc["fresh_its"]
        self.stats["ksp_iterations"] += its
        self.stats["linear_solves"] += 1
        if reason < 0:
            raise FESolveError(f"{what}: the linear solver diverged (PETSc reason {reason} after {its} iterations); "
                               "try -mfgfe_pc_type lu or a smaller time step")
        return x.array_r.copy()

    def _edge_diff(self, phi: np.ndarray) -> np.ndarray:
        """φ_i - φ_j per edge ij (owned φ in; one ghost scatter)."""
        pa = self.ops.ghosted(phi)
        return pa[self.ops.ei] - pa[self.ops.ej]

    def _upwind(self, diff: np.ndarray) -> np.ndarray:
        """s_ij = w⁺_ij (φ_i - φ_j)⁺ / λ: minus the off-diagonal of DĤ(φ)."""
        return self.wp_lam * np.maximum(diff, 0.0)

    def _hjb_matrix(self, s):
        """M/Δt + A(φ) into the persistent HJB matrix, from s = :meth:`_upwind` (None: no control)."""
        mdt = self.ops.m / self.dt
        if s is None:
            return self._mats["hjb"].set(-self.clin, mdt + self.Ldiag)
        return self._mats["hjb"].set(-(self.clin + s), mdt + self.Ldiag + self.ops.rowsum(s))

    def _fp_matrix(self, diff):
        """(M/Δt + A(φ))ᵀ into the persistent FP matrix, assembled row-wise from the owned rows' edges:
        (Aᵀ)_ij = A_ji = -c_ji - w⁺_ij (φ_j - φ_i)⁺/λ, (Aᵀ)_ii = A_ii; ``diff`` None: no control."""
        ops = self.ops
        if diff is None:
            return self._mats["fp"].set(-self.crev, ops.m / self.dt + self.Ldiag)
        s_out = self._upwind(diff)
        s_in = self._upwind(-diff)
        return self._mats["fp"].set(-(self.crev + s_in), ops.m / self.dt + self.Ldiag + ops.rowsum(s_out))

    def jacobian(self, phi: np.ndarray):
        """M/Δt + A(φ) as a PETSc matrix (owned φ in): the persistent HJB matrix, valid until the next
        HJB update; do not destroy it."""
        return self._hjb_matrix(self._upwind(self._edge_diff(phi)) if self.control else None)

    def _hjb_residual(self, diff, s, phi, phi_next, src) -> np.ndarray:
        ops = self.ops
        # Σ_j c_ij d_ij + 1/(2λ) Σ_j w⁺_ij (d_ij⁺)² = Σ_j d_ij (c_ij + s_ij/2)
        flux = self.clin * diff if s is None else (self.clin + 0.5 * s) * diff
        return ops.m * (phi - phi_next) / self.dt + ops.rowsum(flux) - src

    def hjb_residual(self, phi: np.ndarray, phi_next: np.ndarray, src: np.ndarray) -> np.ndarray:
        diff = self._edge_diff(phi)
        return self._hjb_residual(diff, self._upwind(diff) if self.control else None, phi, phi_next, src)

    def hjb_step(self, phi_next: np.ndarray, src: np.ndarray, k: int) -> np.ndarray:
        """Solve one implicit HJB step for φ^k by Newton (semismooth: Ĥ is piecewise quadratic)."""
        ops = self.ops
        phi = phi_next.copy()
        for it in range(self.newton_maxit + 1):
            diff = self._edge_diff(phi)
            s = self._upwind(diff) if self.control else None  # shared by the residual and the Jacobian
            R = self._hjb_residual(diff, s, phi, phi_next, src)
            res, size = ops.max_abs_each(R / ops.m, phi)  # one reduction per Newton iteration
            if res <= self.newton_tol * max(1.0, size):
                self.stats["newton_iterations"] += it
                self.stats["newton_max_per_step"] = max(self.stats["newton_max_per_step"], it)
                return phi
            if it == self.newton_maxit:
                break
            J = self._hjb_matrix(s)
            phi = phi - self._solve(J, R, f"HJB Newton step {it} at t={self.t[k]:.4g}", "hjb")
        raise FESolveError(f"HJB Newton did not converge at t={self.t[k]:.4g}: residual {res:.3g} after "
                           f"{self.newton_maxit} iterations; expected <= {self.newton_tol:g} — reduce the time step")

    def hjb_sweep(self, g: np.ndarray, running) -> list:
        """φ^N = g, then k = N-1..0; ``running(k)`` gives f at step k (owned) or None."""
        phis = [None] * (self.nt + 1)
        phis[-1] = g
        steps = range(self.nt - 1, -1, -1)
        if self.progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="HJB (backward)", leave=False)
        for k in steps:
            f = running(k)
            src = self.ops.m * (self.c[k] + (0.0 if f is None else f))
            phis[k] = self.hjb_step(phis[k + 1], src, k)
        self.stats["hjb_sweeps"] += 1
        return phis

    def fp_sweep(self, rho0: np.ndarray, phis: list | None) -> list:
        """ρ^{k+1} = (M/Δt + A(φ^k)ᵀ)⁻¹ M ρ^k/Δt, k = 0..N-1 (phis None: no control)."""
        ops = self.ops
        rhos = [rho0]
        for k in range(self.nt):
            if phis is None:
                MT = self._fp_matrix(None) if k == 0 else self._mats["fp"].mat  # the same matrix every step
            else:
                MT = self._fp_matrix(self._edge_diff(phis[k]) if self.control else None)
            rho = self._solve(MT, ops.m * rhos[-1] / self.dt, f"FP step at t={self.t[k + 1]:.4g}", "fp")
            # M/Δt + A(φ)ᵀ is an M-matrix, so the exact step is ≥ 0; an iterate within rtol 1e-13 can dip
            # below 0 by round-off where ρ ~ 1e-100 (AMG: -4e-21 seen on the wgf box); setting those to 0
            # moves it towards the exact solution and changes the mass by less than the solver residual
            low = ops.min(rho)  # over all ranks, so the stats agree
            if low < 0.0:
                self.stats["fp_clipped_min"] = min(self.stats["fp_clipped_min"], low)
                np.maximum(rho, 0.0, out=rho)
            rhos.append(rho)
        self.stats["fp_sweeps"] += 1
        return rhos


# --------------------------------------------------------------------------
# couplings: the data U closed by the outer Newton iteration
