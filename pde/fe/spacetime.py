"""All-at-once (space-time) Newton for the otflow system with the KL terminal cost.

The outer fixed point on the terminal cost (``outer_newton`` in
:mod:`pde.fe.coupling`) is cheap for the lq mean coupling (a few numbers per
time level) but badly conditioned for g = 1 + log ρ^N - log γ: the map from
g to ρ^N transports mass over O(1) distances and log ρ^N is set by tiny
densities in the tails. Here instead Newton runs on all unknowns at once,

    Z = (φ^0, …, φ^N, ρ^1, …, ρ^N),

with residuals (k = 0..N-1, owned rows; see :mod:`pde.fe.operators`)

    HJB_k = M(φ^k - φ^{k+1})/Δt + L φ^k + Ĥ(φ^k) - M c(t_k)
    TERM  = M(ρ^N - γ e^{φ^N - 1})          (⇔ φ^N = 1 + log ρ^N - log γ)
    FP_k  = M(ρ^{k+1} - ρ^k)/Δt + A(φ^k)ᵀ ρ^{k+1}

The terminal relation is imposed in its exponential form: Newton on
φ^N = g(ρ^N) itself meets g' = 1/ρ^N, ~1e12 in the tails, and stalls; the
exponential form has bounded derivatives and needs no density floor.
The exact Jacobian is a PETSc AIJ matrix of size (2N+1)·n_dofs whose blocks
are diagonal or have the stiffness pattern:

    ∂HJB_k/∂φ^k = M/Δt + A(φ^k),  ∂HJB_k/∂φ^{k+1} = -M/Δt,
    ∂TERM/∂ρ^N = M,  ∂TERM/∂φ^N = -M γ e^{φ^N - 1},
    ∂FP_k/∂ρ^{k+1} = M/Δt + A(φ^k)ᵀ,  ∂FP_k/∂ρ^k = -M/Δt,  ∂FP_k/∂φ^k = ∇²_φ(ρ^{k+1}·Ĥ)(φ^k)

(the last block is the graph Laplacian with weights w⁺_ij/λ times the upwind
density). Each Newton system is solved by a direct LU factorisation (MUMPS,
else SuperLU_dist; options prefix ``mfgfe_st_``), with a
backtracking line search on the residual norm. Row ownership follows the dof
ownership: rank r holds the rows of its dofs at every time level.
"""

from __future__ import annotations

import numpy as np

from . import _dolfinx_adapter as A

PETSc = A.PETSc
MPI = A.MPI


class SpaceTimeNewton:
    """Newton on Z = (φ^0..φ^N, ρ^1..ρ^N) for the KL terminal (see the module docstring)."""

    def __init__(self, core, coupling, rho0, rtol: float = 1e-10, maxit: int = 40):
        self.core, self.cp, self.rho0 = core, coupling, rho0
        ops = core.ops
        self.ops = ops
        self.N = N = core.nt
        self.rtol, self.maxit = rtol, maxit
        comm = ops.comm
        # rank r owns the (2N+1)·nloc_r consecutive rows starting at (2N+1)·start_r;
        # block b of dof (owner r, local i) has index (2N+1)·start_r + b·nloc_r + i
        self.nb = 2 * N + 1
        nlocs = np.array(comm.allgather(ops.nloc))
        starts = np.concatenate([[0], np.cumsum(nlocs)[:-1]])
        self.nloc = n = ops.nloc
        self.nST_loc = self.nb * n
        self.nST = self.nb * ops.nglob
        cols = np.asarray(ops.cols, dtype=np.int64)
        own = np.searchsorted(starts, cols, side="right") - 1
        self.col_base = self.nb * starts[own] + (cols - starts[own])
        self.col_stride = nlocs[own]
        self.row_base = self.nb * starts[comm.rank]
        self.prow = np.repeat(np.arange(n), np.diff(np.asarray(ops.indptr, dtype=np.int64)))
        self.ref = np.exp(coupling.logref)
        self.set_nu(core.p.nu)
        opts = PETSc.Options()
        # the Jacobian is a saddle-point matrix: LU needs pivoting, which PETSc's native
        # LU lacks (zero pivots at 160 cells); MUMPS (or SuperLU_dist) pivots and runs in parallel
        defaults = {"ksp_type": "preonly", "pc_type": "lu"}
        for pkg in ("mumps", "superlu_dist"):
            if A.has_petsc_package(pkg):
                defaults["pc_factor_mat_solver_type"] = pkg
                if pkg == "mumps":
                    defaults["mat_mumps_icntl_14"] = 200  # workspace +200%: pivoting fills in (2D failed at +20%)
                break
        for k, v in defaults.items():
            if not opts.hasName("mfgfe_st_" + k):
                opts.setValue("mfgfe_st_" + k, v)
        self.ksp = PETSc.KSP().create(comm)
        self.ksp.setOptionsPrefix("mfgfe_st_")
        self.ksp.setFromOptions()
        self.stats = {"spacetime_newton_iterations": 0, "spacetime_linesearch_cuts": 0, "spacetime_unknowns": self.nST,
                      "spacetime_residual_history": []}

    def set_nu(self, nu: float) -> None:
        """Use viscosity ν (continuation): linear weights c_ij and the reverse weights c_ji."""
        self.nu = nu
        self.core.set_nu(nu)
        self.crev = self.core.crev

    def solve_continuation(self, Z0, nu_start: float = 0.1, factor: float = 0.25):
        """Newton at ν_0 = max(ν, nu_start), then ν_j = ν_0·factor^j, …, ν (warm starts).

        Newton for the first-order system (ν → 0) from a cold start stalls in
        damped steps; a viscous solution is a good initial guess for a less
        viscous one.
        """
        target = self.core.p.nu
        nus = [max(target, nu_start)]
        while nus[-1] > target:
            nxt = nus[-1] * factor
            nus.append(nxt if nxt > max(target, 1e-3) else target)
        Z = Z0
        stages = []
        maxit = self.maxit
        for j, nu in enumerate(nus):
            self.set_nu(nu)
            # the cold start takes damped steps whose number grows with the mesh (25 at
            # 80 cells, ~40 at 160); the warm-started stages converge in 3-6
            self.maxit = 4 * maxit if j == 0 else maxit
            try:
                Z = self.solve(Z)
            finally:
                self.maxit = maxit
            stages.append({"nu": nu, "newton_iterations": self.stats["spacetime_newton_iterations"]})
        self.stats["viscosity_continuation"] = stages
        self.stats["spacetime_newton_iterations"] = sum(st["newton_iterations"] for st in stages)
        return Z

    # -- layout ---------------------------------------------------------------

    def split(self, Z):
        n, N = self.nloc, self.N
        phis = [Z[k * n:(k + 1) * n] for k in range(N + 1)]
        rhos = [self.rho0] + [Z[(N + 1 + k) * n:(N + 2 + k) * n] for k in range(N)]
        return phis, rhos

    def initial(self):
        """φ ≡ 1 (the potential if ρ_T were γ), ρ^k = ρ₀."""
        return np.concatenate([np.ones(self.nloc)] * (self.N + 1) + [self.rho0] * self.N)

    # -- residual ---------------------------------------------------------------

    def _expterm(self, phiN):
        return self.ref * np.exp(np.minimum(phiN - 1.0, 700.0))

    def _fp_apply(self, phi, rho):
        """A(φ)ᵀρ, row-wise with ghosts."""
        ops, core = self.ops, self.core
        pa, ra = ops.ghosted(phi), ops.ghosted(rho)
        d = pa[ops.ei] - pa[ops.ej]
        s_out = ops.wp * np.maximum(d, 0.0) / core.lam
        s_in = ops.wp * np.maximum(-d, 0.0) / core.lam
        return ra[: ops.nloc] * (core.Ldiag + ops.rowsum(s_out)) - ops.rowsum(ra[ops.ej] * (self.crev + s_in))

    def residual(self, Z):
        core, ops, N, n = self.core, self.ops, self.N, self.nloc
        phis, rhos = self.split(Z)
        out = np.empty_like(Z)
        for k in range(N):
            out[k * n:(k + 1) * n] = core.hjb_residual(phis[k], phis[k + 1], ops.m * core.c[k])
        out[N * n:(N + 1) * n] = ops.m * (rhos[N] - self._expterm(phis[N]))
        for k in range(N):
            out[(N + 1 + k) * n:(N + 2 + k) * n] = (ops.m * (rhos[k + 1] - rhos[k]) / core.dt
                                                    + self._fp_apply(phis[k], rhos[k + 1]))
        return out

    # -- Jacobian -----------------------------------------------------------------

    def jacobian(self, Z):
        core, ops, N, n = self.core, self.ops, self.N, self.nloc
        phis, rhos = self.split(Z)
        rows_l, cols_g, vals = [], [], []
        mdt = ops.m / core.dt
        ar = np.arange(n)

        def diag_block(rb, cb, v):
            rows_l.append(rb * n + ar)
            cols_g.append(self.row_base + cb * n + ar)
            vals.append(v)

        def pattern_block(rb, cb, off, diag):
            v = np.empty(ops.nnz)
            v[ops.off_pos] = off
            v[ops.diag_pos] = diag
            rows_l.append(rb * n + self.prow)
            cols_g.append(self.col_base + cb * self.col_stride)
            vals.append(v)

        for k in range(N):
            pa = ops.ghosted(phis[k])
            d = pa[ops.ei] - pa[ops.ej]
            s_out = ops.wp * np.maximum(d, 0.0) / core.lam
            s_in = ops.wp * np.maximum(-d, 0.0) / core.lam
            Adiag = mdt + core.Ldiag + ops.rowsum(s_out)
            pattern_block(k, k, -core.clin - s_out, Adiag)           # HJB_k / φ^k
            diag_block(k, k + 1, -mdt)                                # HJB_k / φ^{k+1}
            pattern_block(N + 1 + k, N + 1 + k, -self.crev - s_in, Adiag)  # FP_k / ρ^{k+1}
            if k > 0:
                diag_block(N + 1 + k, N + k, -mdt)                    # FP_k / ρ^k
            ra = ops.ghosted(rhos[k + 1])
            hw = (ra[ops.ei] * (d > 0) + ra[ops.ej] * (d < 0)) * ops.wp / core.lam
            pattern_block(N + 1 + k, k, -hw, ops.rowsum(hw))          # FP_k / φ^k
        diag_block(N, 2 * N, ops.m.copy())                            # TERM / ρ^N
        diag_block(N, N, -ops.m * self._expterm(phis[N]))             # TERM / φ^N
        r = np.concatenate(rows_l)
        c = np.concatenate(cols_g)
        v = np.concatenate(vals)
        order = np.lexsort((c, r))
        r, c, v = r[order], c[order], v[order]
        ip = np.zeros(self.nST_loc + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=self.nST_loc), out=ip[1:])
        J = PETSc.Mat().createAIJ(size=((self.nST_loc, self.nST), (self.nST_loc, self.nST)),
                                  csr=(ip.astype(PETSc.IntType), c.astype(PETSc.IntType), v), comm=ops.comm)
        J.assemble()
        return J

    # -- Newton ---------------------------------------------------------------------

    def norm(self, R):
        with np.errstate(over="ignore", invalid="ignore"):
            v = float(self.ops.comm.allreduce(float(R @ R)))
        return float(np.sqrt(v)) if np.isfinite(v) else np.inf

    def solve(self, Z0):
        from .sweeps import FESolveError

        Z = Z0.copy()
        R = self.residual(Z)
        r0 = rn = self.norm(R)
        hist = self.stats["spacetime_residual_history"]
        hist.append(rn)
        self.stats["spacetime_newton_iterations"] = 0
        for it in range(self.maxit + 1):
            if rn <= self.rtol * r0 or rn < 1e-14:
                self.stats["spacetime_newton_iterations"] = it
                return Z
            if it == self.maxit:
                break
            J = self.jacobian(Z)
            b = PETSc.Vec().createMPI((self.nST_loc, self.nST), comm=self.ops.comm)
            x = b.duplicate()
            b.array[:] = R
            self.ksp.setOperators(J)
            self.ksp.solve(b, x)
            reason = self.ksp.getConvergedReason()
            dZ = x.array_r.copy()
            J.destroy(), b.destroy(), x.destroy()
            if reason < 0:
                raise FESolveError(f"space-time Newton: the linear solve failed (PETSc reason {reason})")
            step = 1.0
            while True:  # backtracking (Armijo on ‖R‖)
                Zt = Z - step * dZ
                Rt = self.residual(Zt)
                rt = self.norm(Rt)
                if rt <= (1 - 1e-4 * step) * rn or step < 1e-6:
                    break
                step *= 0.5
                self.stats["spacetime_linesearch_cuts"] += 1
            Z, R, rn = Zt, Rt, rt
            hist.append(rn)
        raise FESolveError(f"space-time Newton did not converge in {self.maxit} iterations: residual history "
                           f"{[float(f'{h:.3g}') for h in hist]}")
