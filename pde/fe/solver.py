"""P1 finite elements, implicit Euler, Newton on PETSc matrices: :func:`solve_fe`.

Discretisation (see :mod:`pde.fe.operators` for the operators):

    HJB, k = N-1..0:  M(φ^k - φ^{k+1})/Δt + A_L φ^k + Ĥ(φ^k) = M (f(ρ^{k+1}) + c(t_k)),   φ^N = g(ρ^N)
    FP,  k = 0..N-1:  M(ρ^{k+1} - ρ^k)/Δt + A(φ^k)ᵀ ρ^{k+1} = 0,                            ρ^0 = ρ₀ / Σ m ρ₀

with M = diag(m) the lumped P1 mass and A(φ) = A_L + DĤ(φ) the Jacobian of
the HJB space operator, so the FP is the exact adjoint of the linearised HJB.

Solvers:

- each backward HJB step is a Newton iteration (own loop; each Jacobian
  M/Δt + A(φ) is a PETSc AIJ matrix on the stiffness pattern, solved by a
  PETSc KSP, default GMRES + block-Jacobi/ILU(0));
- each FP step is one linear solve with (M/Δt + A(φ^k))ᵀ (an M-matrix);
- otflow (g = 1 + log ρ^N - log γ couples the ends) is solved all at once by
  Newton on the space-time system (:mod:`pde.fe.spacetime`: exact Jacobian,
  MUMPS LU, viscosity continuation);
- lq (the mean path m̄(t_k) couples the equations) is closed by a
  Jacobian-free Newton–Krylov iteration (PETSc SNES with a matrix-free,
  finite-difference Jacobian) on U = m̄: the residual is U - G(U), where G
  runs one backward HJB sweep and one forward FP sweep (``coupled="jfnk"``
  runs otflow this way too; it stalls for large τ = T/λ);
- sgm (g = -log π, no ρ-dependence) needs one sweep; wgf is the linear FP with
  ν = 1, b = ∇log π (no control) and φ = log(ρ/π).

Everything is distributed: vectors and matrices are PETSc objects over the
dof ownership of DOLFINx, so the same code runs under ``mpirun -n N``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..memory import check_memory
from ..problem import FixedTerminal, KLTerminal, LQCoupling, LQTerminal, MFGProblem, NoCoupling
from ..solution import MFGSolution, package_versions
from . import _dolfinx_adapter as A
from .operators import P1Operators

PETSc = A.PETSc
MPI = A.MPI

#: default PETSc options of the inner linear solves (prefix ``mfgfe_``) and the outer SNES (``mfgfe_outer_``)
DEFAULT_KSP = {"ksp_type": "gmres", "pc_type": "bjacobi", "sub_pc_type": "ilu", "ksp_rtol": 1e-13,
               "ksp_atol": 1e-15, "ksp_max_it": 500}

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
# mesh choice and checks
# --------------------------------------------------------------------------


def memory_estimate(dofs: float, nt: int, dim: int) -> float:
    """Estimated peak bytes of :func:`solve_fe` with ``dofs`` P1 dofs and ``nt`` steps."""
    return FE_BYTES_FIXED + FE_BYTES_PER_DOF * dofs + FE_BYTES_PER_NODE[dim] * dofs * (nt + 1)


def estimate_dofs(problem: MFGProblem, mesh=None, h=None, n=None):
    """P1 dofs of the mesh :func:`make_mesh` would build, without building it (None for a mesh file)."""
    spec = dict(problem.params.get("fe", {}) or {})
    kind = mesh if mesh is not None else spec.get("mesh", "box")
    h = spec.get("h") if h is None else h
    dom = problem.domain
    if not isinstance(h, (int, float)) or isinstance(h, bool) or not h > 0:
        h = None
    if kind == "box":
        cells = list(problem.grid(n=n).n) if h is None else [max(2, math.ceil((hi - lo) / h)) for lo, hi in dom]
        return float(np.prod([c + 1 for c in cells]))
    if isinstance(kind, str) and not Path(kind).suffix:
        hh = h if h is not None else max(problem.grid(n=n).h)
        vol = float(np.prod([hi - lo for lo, hi in dom]))
        # a quasi-uniform triangulation has about 2/sqrt(3) vertices per h² of area
        return vol / hh ** problem.dim * (1.0 if problem.dim == 1 else 2.0 / math.sqrt(3.0))
    return None


def make_mesh(problem: MFGProblem, comm, mesh=None, h=None, n=None):
    """Build or read the mesh for ``problem`` (see :func:`solve_fe`). Returns (mesh, info dict)."""
    import meshes

    spec = dict(problem.params.get("fe", {}) or {})
    kind = mesh if mesh is not None else spec.get("mesh", "box")
    if h is None:
        h = spec.get("h")
    if h is not None:
        h = meshes.check_size(h)
    d = problem.dim
    dom = problem.domain
    info = {"mesh": str(kind)}
    if not isinstance(kind, (str, Path)):
        raise TypeError(f"mesh={kind!r}; expected a name {list(meshes.KINDS)} or a path to a .msh/.xdmf file")
    if kind == "box":
        if h is None:
            cells = list(problem.grid(n=n).n)
        else:
            cells = [max(2, math.ceil((hi - lo) / h)) for lo, hi in dom]
        info["cells_per_dim"] = cells
        if d == 1:
            msh = A.create_interval(comm, cells[0], dom[0][0], dom[0][1])
        else:
            msh = A.create_rectangle(comm, [dom[0][0], dom[1][0]], [dom[0][1], dom[1][1]], cells)
        return msh, info
    if isinstance(kind, str) and kind in meshes.KINDS + ("interval",):
        if h is None:
            h = max(problem.grid(n=n).h)
        path = None
        err = None
        if comm.rank == 0:
            try:
                path = str(meshes.build("interval" if (d == 1 and kind == "rectangle") else kind, dom, h))
            except (ValueError, ImportError) as exc:
                err = str(exc)
        path, err = comm.bcast((path, err), root=0)
        if err is not None:
            raise ValueError(err)
        info["file"] = path
        return A.read_mesh(path, comm, gdim=d), info
    path = Path(kind)
    info["file"] = str(path)
    if h is not None:
        info["h_ignored"] = "the mesh file fixes the mesh size"
    return A.read_mesh(path, comm, gdim=d), info


def _rule(dim: int, level: int):
    """Composite rule on the reference cell: 2^level sub-intervals with 2-point Gauss (1D) or
    4^level sub-triangles with the edge-midpoint rule (2D, degree 2). Returns (barycentric
    coordinates (q, dim+1), weights (q,) summing to 1)."""
    k = 2**level
    if dim == 1:
        g = 0.5 / math.sqrt(3.0)
        x = np.concatenate([(j + 0.5 + np.array([-g, g])) / k for j in range(k)])
        return np.stack([1 - x, x], axis=1), np.full(x.size, 1.0 / x.size)
    pts = []
    for a in range(k):
        for b in range(k - a):
            # upward sub-triangle (a, b), (a+1, b), (a, b+1) and, if it fits, the downward one
            tris = [((a, b), (a + 1, b), (a, b + 1))]
            if a + b + 2 <= k:
                tris.append(((a + 1, b), (a + 1, b + 1), (a, b + 1)))
            for t in tris:
                v = np.array(t, dtype=float) / k
                pts += [0.5 * (v[0] + v[1]), 0.5 * (v[1] + v[2]), 0.5 * (v[0] + v[2])]
    xy = np.array(pts)
    bary = np.column_stack([1 - xy.sum(1), xy])
    return bary, np.full(len(pts), 1.0 / len(pts))


def _cell_quadrature(ops: P1Operators, cells: np.ndarray, fn, level: int = 0) -> float:
    """∫ fn over the owned cells with the composite rule :func:`_rule` of the given level."""
    X = ops.Xglob
    cells = ops.dl2g[cells]
    if cells.size == 0:
        return ops.comm.allreduce(0.0)
    V = X[cells]  # (c, dim+1, dim)
    if ops.dim == 1:
        vol = np.abs(V[:, 1, 0] - V[:, 0, 0])
    else:
        e1, e2 = V[:, 1] - V[:, 0], V[:, 2] - V[:, 0]
        vol = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1])
    bary, w = _rule(ops.dim, level)
    total = 0.0
    for b, wq in zip(bary, w):
        total += float((vol * fn(np.einsum("v,cvd->cd", b, V))).sum()) * wq
    return ops.comm.allreduce(total)


def check_mass_on_mesh(problem: MFGProblem, ops: P1Operators, cells: np.ndarray, tol: float) -> dict:
    """The mesh must hold ρ₀'s mass: on its bounding box (closed form) and on the mesh itself
    (cell quadrature of the density). Raises ValueError naming the missing mass."""
    comm = ops.comm
    lo = np.array([comm.allreduce(float(ops.X[:, k].min()), op=MPI.MIN) for k in range(ops.dim)])
    hi = np.array([comm.allreduce(float(ops.X[:, k].max()), op=MPI.MAX) for k in range(ops.dim)])
    bbox = tuple((float(a), float(b)) for a, b in zip(lo, hi))
    out_box = float(problem.rho0.mass_outside(bbox))
    box_txt = " × ".join(f"[{a:.3g}, {b:.3g}]" for a, b in bbox)
    if out_box > tol:
        raise ValueError(f"the mesh's bounding box {box_txt} cuts off {out_box:.3g} of rho0's mass; expected at most "
                         f"{tol:g} — use a larger mesh or domain")
    # refine the composite rule until it is converged well below tol, so that only mass the
    # mesh domain really misses (holes, curved walls) fails the check, not quadrature error
    q_prev = None
    for level in range(6):
        q = _cell_quadrature(ops, cells, problem.rho0.pdf, level)
        if q_prev is not None and abs(q - q_prev) < 0.1 * tol:
            break
        q_prev = q
    if abs(q - 1.0) > tol:
        raise ValueError(f"rho0 integrates to {q:.6g} on the mesh (cell quadrature; bounding box {box_txt}); expected 1 "
                         f"within {tol:g} — the mesh domain (holes, curved walls) does not contain the data's mass")
    return {"bbox": [list(b) for b in bbox], "rho0_mass_outside_bbox": out_box, "rho0_mass_on_mesh": q,
            "rho0_quadrature_level": level}


# --------------------------------------------------------------------------
# the time-marching core
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
        nu = problem.nu
        self.clin = ops.linear_weights(nu, problem.drift)
        self.Ldiag = ops.rowsum(self.clin)
        self.newton_tol, self.newton_maxit = newton_tol, newton_maxit
        self.progress = progress and ops.comm.rank == 0
        opts = PETSc.Options()
        for k, v in {**DEFAULT_KSP, **ksp_options}.items():
            if not opts.hasName("mfgfe_" + k):
                opts.setValue("mfgfe_" + k, v)
        self.ksp = PETSc.KSP().create(ops.comm)
        self.ksp.setOptionsPrefix("mfgfe_")
        self.ksp.setFromOptions()
        Xo = ops.X[: ops.nloc]
        self.c = [problem.c(Xo, float(t)) for t in self.t]
        self.stats = {"newton_iterations": 0, "newton_max_per_step": 0, "ksp_iterations": 0, "linear_solves": 0,
                      "hjb_sweeps": 0, "fp_sweeps": 0}

    # -- pieces ------------------------------------------------------------

    def _solve(self, M, rhs: np.ndarray, what: str) -> np.ndarray:
        b = self.ops.vec(rhs)
        x = b.duplicate()
        self.ksp.setOperators(M)
        self.ksp.solve(b, x)
        reason = self.ksp.getConvergedReason()
        its = self.ksp.getIterationNumber()
        self.stats["ksp_iterations"] += its
        self.stats["linear_solves"] += 1
        if reason < 0:
            raise FESolveError(f"{what}: the linear solver diverged (PETSc reason {reason} after {its} iterations); "
                               "try -mfgfe_pc_type lu or a smaller time step")
        out = x.array_r.copy()
        b.destroy(), x.destroy()
        return out

    def _edge_diff(self, phi_all):
        return phi_all[self.ops.ei] - phi_all[self.ops.ej]

    def jacobian(self, phi: np.ndarray):
        """M/Δt + A(φ) as a PETSc matrix (owned φ in)."""
        ops = self.ops
        off = -self.clin
        diag = ops.m / self.dt + self.Ldiag
        if self.control:
            dpos = np.maximum(self._edge_diff(ops.ghosted(phi)), 0.0)
            s = ops.wp * dpos / self.lam
            off = off - s
            diag = diag + ops.rowsum(s)
        return ops.matrix(off, diag)

    def hjb_residual(self, phi: np.ndarray, phi_next: np.ndarray, src: np.ndarray) -> np.ndarray:
        ops = self.ops
        diff = self._edge_diff(ops.ghosted(phi))
        R = ops.m * (phi - phi_next) / self.dt + ops.rowsum(self.clin * diff) - src
        if self.control:
            R += ops.rowsum(ops.wp * np.maximum(diff, 0.0) ** 2) / (2.0 * self.lam)
        return R

    def hjb_step(self, phi_next: np.ndarray, src: np.ndarray, k: int) -> np.ndarray:
        """Solve one implicit HJB step for φ^k by Newton (semismooth: Ĥ is piecewise quadratic)."""
        ops = self.ops
        phi = phi_next.copy()
        for it in range(self.newton_maxit + 1):
            R = self.hjb_residual(phi, phi_next, src)
            res = ops.max_abs(R / ops.m)
            if res <= self.newton_tol * max(1.0, ops.max_abs(phi)):
                self.stats["newton_iterations"] += it
                self.stats["newton_max_per_step"] = max(self.stats["newton_max_per_step"], it)
                return phi
            if it == self.newton_maxit:
                break
            J = self.jacobian(phi)
            phi = phi - self._solve(J, R, f"HJB Newton step {it} at t={self.t[k]:.4g}")
            J.destroy()
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
        fixed = None
        for k in range(self.nt):
            if phis is None:
                if fixed is None:
                    fixed = self.jacobian(np.zeros(ops.nloc))
                    fixed.transpose()
                MT = fixed
            else:
                MT = self.jacobian(phis[k])
                MT.transpose()
            rhos.append(self._solve(MT, ops.m * rhos[-1] / self.dt, f"FP step at t={self.t[k + 1]:.4g}"))
            if phis is not None:
                MT.destroy()
        if fixed is not None:
            fixed.destroy()
        self.stats["fp_sweeps"] += 1
        return rhos


# --------------------------------------------------------------------------
# couplings: the data U closed by the outer Newton iteration
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
# --------------------------------------------------------------------------


def _gather_global(ops: P1Operators, arrays: np.ndarray):
    """(nt+1, nloc) owned values → (nt+1, nglob) by global index, on rank 0 (None elsewhere)."""
    parts = ops.comm.gather((ops.l2g[: ops.nloc], arrays), root=0)
    if ops.comm.rank != 0:
        return None
    out = np.empty((arrays.shape[0], ops.nglob))
    for idx, vals in parts:
        out[:, idx] = vals
    return out


def _interpolation_matrix(Xg: np.ndarray, cells_g: np.ndarray, pts: np.ndarray):
    """Sparse P (npts × ndofs): P1 evaluation at ``pts``; rows of points outside the mesh are empty.

    Returns (P, inside mask)."""
    from scipy import sparse

    npts = pts.shape[0]
    if Xg.shape[1] == 1:
        order = np.argsort(Xg[:, 0])
        xs = Xg[order, 0]
        x = pts[:, 0]
        inside = (x >= xs[0] - 1e-12) & (x <= xs[-1] + 1e-12)
        j = np.clip(np.searchsorted(xs, x) - 1, 0, xs.size - 2)
        lam = np.clip((x - xs[j]) / (xs[j + 1] - xs[j]), 0.0, 1.0)
        rows = np.concatenate([np.arange(npts)] * 2)
        cols = np.concatenate([order[j], order[j + 1]])
        vals = np.concatenate([1 - lam, lam])
    else:
        from matplotlib.tri import Triangulation

        tri = Triangulation(Xg[:, 0], Xg[:, 1], cells_g)
        c = tri.get_trifinder()(pts[:, 0], pts[:, 1])
        inside = c >= 0
        ci = cells_g[c[inside]]
        p0, p1, p2 = Xg[ci[:, 0]], Xg[ci[:, 1]], Xg[ci[:, 2]]
        q = pts[inside]
        det = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])
        l1 = ((q[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1])) / det
        l2 = ((p1[:, 0] - p0[:, 0]) * (q[:, 1] - p0[:, 1]) - (q[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])) / det
        idx = np.flatnonzero(inside)
        rows = np.concatenate([idx] * 3)
        cols = np.concatenate([ci[:, 0], ci[:, 1], ci[:, 2]])
        vals = np.concatenate([1 - l1 - l2, l1, l2])
    keep = np.concatenate([inside, inside]) if Xg.shape[1] == 1 else np.ones(rows.size, bool)
    P = sparse.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(npts, Xg.shape[0]))
    return P, inside


def gather_mesh(ops: P1Operators, cells: np.ndarray):
    """Global dof coordinates and cells on rank 0 (None elsewhere)."""
    parts = ops.comm.gather(ops.dl2g[cells], root=0)
    if ops.comm.rank != 0:
        return None, None
    return ops.Xglob, np.concatenate(parts)


# --------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------


def solve_fe(problem: MFGProblem, n=None, nt=None, mesh=None, h=None, progress: bool = True, *,
             xdmf_path=None, npz_path=None, figure_path=None, comm=None, mass_tol: float = 1e-3,
             newton_tol: float = 1e-12, newton_maxit: int = 30, outer_rtol: float = 1e-9, outer_maxit: int = 30,
             ksp_options: dict | None = None, coupled: str = "spacetime", max_memory=None,
             **unknown) -> MFGSolution:
    """Solve ``problem`` with P1 finite elements (DOLFINx + PETSc); see the module docstring.

    Args:
        problem: otflow, sgm, wgf or lq (reflecting walls); custom problems with
            NoCoupling and a FixedTerminal also work.
        n, nt: the output grid ``problem.grid(n, nt)``; nt is also the number of
            implicit Euler steps, and with ``mesh="box"`` and no ``h`` the box
            mesh has n cells per dimension.
        mesh: "box" (DOLFINx structured mesh), "rectangle" (unstructured gmsh
            mesh of the box), "disc", "obstacle", or a path to a ``.msh``/``.xdmf``
            file; default ``problem.params["fe"]["mesh"]`` or "box".
        h: mesh size (default ``problem.params["fe"]["h"]`` or the grid spacing).
        progress: tqdm bars for the HJB sweeps (rank 0).
        xdmf_path: write ρ and φ (P1, every time level) as XDMF/HDF5 for ParaView.
        npz_path: write the solution ``.npz`` (rank 0 only, atomically).
        figure_path: PNG of ρ at t = 0, T/2, T on the mesh (2D) or curves (1D).
        comm: MPI communicator (default COMM_WORLD).
        mass_tol: allowed |∫ρ₀ - 1| on the mesh and mass outside its bounding box.
        newton_tol: HJB Newton tolerance on max |residual/m_i| (relative to max |φ|).
        outer_rtol, outer_maxit: SNES tolerance/iterations of the coupling Newton.
        ksp_options: PETSc options of the inner linear solves (prefix ``mfgfe_``;
            command-line ``-mfgfe_...`` options win).
        coupled: otflow only: "spacetime" (all-at-once Newton, default) or "jfnk"
            (SNES on the terminal cost; fragile for large τ = T/λ, kept for studies).
        max_memory: memory budget of the whole solve, all ranks together (bytes or
            "8G"; default the memory available on this machine, see :mod:`pde.memory`):
            a mesh and grid whose :func:`memory_estimate` exceeds it are refused
            before they are built.

    Returns:
        :class:`MFGSolution` sampled on the regular cell-centred grid (identical on
        every rank): ρ is P1-interpolated (0 outside the mesh), φ likewise (NaN
        outside the mesh); ``extras["inside"]`` marks grid nodes inside the mesh.
        ``meta`` holds the mesh, iteration counts, mass error (lumped FE mass),
        min ρ, timings and versions.
    """
    if coupled not in ("spacetime", "jfnk"):
        raise ValueError(f"coupled={coupled!r}; expected 'spacetime' or 'jfnk'")
    if unknown:
        raise TypeError(f"solve_fe() got unknown option(s) {sorted(unknown)}")
    if not isinstance(problem, MFGProblem):
        raise TypeError(f"problem must be an MFGProblem (got {type(problem).__name__})")
    if problem.boundary != "reflecting":
        raise ValueError(f"boundary={problem.boundary!r}; the FE solver implements reflecting walls only (use method 'fd' "
                         "for periodic boxes)")
    comm = comm or MPI.COMM_WORLD
    timings = {}
    t_start = time.perf_counter()
    grid = problem.grid(n=n, nt=nt)
    family = problem.family
    what = f"the FE solve of {problem.name or problem.family} with nt={grid.nt}"
    dofs = estimate_dofs(problem, mesh=mesh, h=h, n=n)
    if dofs is not None:  # before the mesh is built; a mesh file is checked once read
        check_memory(memory_estimate(dofs, grid.nt, problem.dim),
                     f"{what} on about {dofs:.3g} dofs", max_memory)

    t0 = time.perf_counter()
    msh, mesh_info = make_mesh(problem, comm, mesh=mesh, h=h, n=n)
    V = A.p1_space(msh)
    ops = P1Operators(V, comm, problem.dim)
    memory = check_memory(memory_estimate(ops.nglob, grid.nt, problem.dim),
                          f"{what} on {ops.nglob} dofs", max_memory)
    cells = A.cell_dofs(V)
    timings["mesh_and_assembly_s"] = time.perf_counter() - t0
    ncells = comm.allreduce(int(cells.shape[0]))
    # mesh size: the largest edge length
    hmax = comm.allreduce(float(np.sqrt((ops.e**2).sum(-1)).max()) if ops.e.size else 0.0, op=MPI.MAX)
    mass_info = check_mass_on_mesh(problem, ops, cells, mass_tol)

    # -- which equations -------------------------------------------------------
    wgf_route = family == "wgf"
    if wgf_route:
        control, coupling = False, None
    elif isinstance(problem.coupling, NoCoupling) and isinstance(problem.terminal, FixedTerminal):
        control, coupling = True, None
    elif isinstance(problem.coupling, NoCoupling) and isinstance(problem.terminal, KLTerminal):
        control, coupling = True, _KLCoupling(problem, ops)
    elif isinstance(problem.coupling, LQCoupling) and isinstance(problem.terminal, LQTerminal):
        control, coupling = True, None
    else:
        raise NotImplementedError(f"the FE solver handles otflow, sgm, wgf and lq (coupling {problem.coupling.kind!r}, "
                                  f"terminal {problem.terminal.kind!r} is not implemented)")
    core = _Core(problem, ops, grid.nt, control, ksp_options or {}, newton_tol, newton_maxit, progress)
    if isinstance(problem.coupling, LQCoupling):
        coupling = _MeanCoupling(problem, ops, grid.nt)

    Xo = ops.X[: ops.nloc]
    rho0 = problem.rho0.pdf(Xo)
    mass0 = ops.integral(rho0)
    rho0 = rho0 / mass0

    outer = {}
    t0 = time.perf_counter()
    if wgf_route:
        rhos = core.fp_sweep(rho0, None)
        logpi = problem.reference.logpdf(Xo)
        phis = []
        for r in rhos:
            floor = RHO_FLOOR * comm.allreduce(float(r.max()), op=MPI.MAX)
            phis.append(np.log(np.maximum(r, floor)) - logpi)
    elif coupling is None:
        g = np.asarray(problem.terminal.g(Xo), dtype=float)
        phis = core.hjb_sweep(g, lambda k: None)
        rhos = core.fp_sweep(rho0, phis)
    elif isinstance(coupling, _KLCoupling) and coupled == "spacetime":
        from .spacetime import SpaceTimeNewton

        st = SpaceTimeNewton(core, coupling, rho0, rtol=outer_rtol, maxit=outer_maxit)
        phis, rhos = st.split(st.solve_continuation(st.initial()))
        outer = st.stats
    else:
        phis, rhos, outer = _outer_newton(core, coupling, rho0, outer_rtol, outer_maxit)
    timings["solve_s"] = time.perf_counter() - t0

    # -- diagnostics -------------------------------------------------------------
    masses = np.array([ops.integral(r) for r in rhos])
    min_rho = min(ops.min(r) for r in rhos)
    meta = {
        "method": "fe",
        "problem": problem.describe(),
        "grid": grid.to_dict(),
        "fe": {
            **mesh_info, "cells": ncells, "dofs": ops.nglob, "edges": ops.n_edges, "h_max_edge": hmax,
            "obtuse_edges_negative_weight": ops.n_negative_weights, "element": "P1 Lagrange, lumped mass",
            "time_stepping": "implicit Euler", "dolfinx": A.version_string(), "mpi_ranks": comm.size,
            "scheme": "exponentially fitted edge diffusion-drift + upwind edge Hamiltonian; FP = transpose of "
                      "the linearised HJB",
            "route": "linear FP (nu=1, b=grad log pi), phi=log(rho/pi)" if wgf_route else
                     ("coupled: JFNK (SNES) on the coupling data" if coupling is not None else "HJB sweep then FP sweep"),
            "ksp": {**DEFAULT_KSP, **(ksp_options or {})},
            **mass_info,
        },
        "iterations": {**core.stats, **outer},
        "mass_error": float(np.abs(masses - 1.0).max()),
        "mass_history_first_last": [float(masses[0]), float(masses[-1])],
        "rho0_normalisation": mass0,
        "min_rho": float(min_rho),
        "timings": timings,
        "memory": memory,
        "versions": {**package_versions(), "dolfinx": A.version_string(), "petsc4py": PETSc.__version__
                     if hasattr(PETSc, "__version__") else "?"},
    }

    # -- outputs ----------------------------------------------------------------
    t0 = time.perf_counter()
    if xdmf_path is not None:
        w = A.XDMFWriter(V, xdmf_path, comm)
        for k, tk in enumerate(core.t):
            w.write("rho", rhos[k], tk)
            w.write("phi", phis[k], tk)
        meta["xdmf"] = str(w.close())
    R = _gather_global(ops, np.array(rhos))
    P_ = _gather_global(ops, np.array(phis))
    Xg, cells_g = gather_mesh(ops, cells)
    payload = None
    if comm.rank == 0:
        pts = grid.points().reshape(-1, problem.dim)
        Pm, inside = _interpolation_matrix(Xg, cells_g, pts)
        shape = (grid.nt + 1,) + grid.shape
        rho_g = (Pm @ R.T).T.reshape(shape)
        phi_g = (Pm @ P_.T).T.reshape(shape)
        phi_g[:, ~inside.reshape(grid.shape)] = np.nan
        payload = (rho_g, phi_g, inside.reshape(grid.shape))
        if figure_path is not None:
            meta["figure"] = str(plot_density(Xg, cells_g, R, core.t, figure_path, title=problem.name))
    rho_g, phi_g, inside = comm.bcast(payload, root=0)
    meta["figure"] = comm.bcast(meta.get("figure"), root=0)
    timings["output_s"] = time.perf_counter() - t0
    timings["wall_s"] = time.perf_counter() - t_start
    meta["timings"] = timings
    sol = MFGSolution(grid.t, grid.axes, rho_g, phi_g, meta=meta, extras={"inside": inside.astype(np.int8)},
                      status="converged")
    if npz_path is not None and comm.rank == 0:
        sol.save(npz_path)
    comm.barrier()
    return sol


def _outer_newton(core: _Core, coupling, rho0, rtol: float, maxit: int):
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


def plot_density(Xg: np.ndarray, cells_g: np.ndarray, R: np.ndarray, t: np.ndarray, path, title: str = "") -> Path:
    """PNG of ρ at t = 0, T/2, T (2D: on the mesh; 1D: curves). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    ks = [0, (t.size - 1) // 2, t.size - 1]
    path = Path(path)
    if Xg.shape[1] == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        o = np.argsort(Xg[:, 0])
        for k in ks:
            ax.plot(Xg[o, 0], R[k, o], label=f"t={t[k]:.3g}")
        ax.set_xlabel("x")
        ax.set_ylabel("rho")
        ax.legend()
    else:
        from matplotlib.tri import Triangulation

        tri = Triangulation(Xg[:, 0], Xg[:, 1], cells_g)
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
        vmax = float(R[ks].max())
        for ax, k in zip(axes, ks):
            im = ax.tripcolor(tri, R[k], shading="gouraud", vmin=0.0, vmax=vmax, cmap="viridis")
            ax.triplot(tri, lw=0.1, color="w", alpha=0.3)
            ax.set_aspect("equal")
            ax.set_title(f"t = {t[k]:.3g}")
        fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="rho")
    if title:
        fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
