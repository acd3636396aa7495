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

Files: this one is the entry point; :mod:`.mesh` (mesh choice, size and memory
estimates, mass checks), :mod:`.sweeps` (the HJB/FP time marching),
:mod:`.coupling` (coupling data and the outer Newton), :mod:`.spacetime`
(the all-at-once Newton), :mod:`.sampling` (P1 → regular grid), :mod:`.figure`.
"""

from __future__ import annotations

import time

import numpy as np

from ..memory import check_memory
from ..problem import FixedTerminal, KLTerminal, LQCoupling, LQTerminal, MFGProblem, NoCoupling
from ..solution import MFGSolution, package_versions
from . import _dolfinx_adapter as A
from .coupling import _KLCoupling, _MeanCoupling, outer_newton
from .figure import plot_density
from .mesh import check_mass_on_mesh, estimate_dofs, make_mesh, memory_estimate
from .operators import P1Operators
from .sampling import _gather_global, _interpolation_matrix, gather_mesh
from .sweeps import DEFAULT_KSP, RHO_FLOOR, FESolveError, _Core

PETSc = A.PETSc
MPI = A.MPI

# the pieces live in .mesh, .sweeps, .coupling, .sampling and .figure; these names stay importable from here
__all__ = ["solve_fe", "FESolveError", "DEFAULT_KSP", "RHO_FLOOR", "make_mesh", "check_mass_on_mesh",
           "memory_estimate", "estimate_dofs", "gather_mesh", "plot_density"]


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
            default GMRES + block-Jacobi/ILU(0) below 4 ranks and algebraic multigrid
            with reuse (hypre BoomerAMG, else GAMG; ``pde.fe.sweeps.AMG``) from 4 ranks
            on, see ``_dolfinx_adapter.default_pc_options``; a ``pc_type`` here drops the
            default's sub-options; ``pc_reuse``/``pc_reuse_growth``: PC reuse policy).
            Command-line / ``PETSC_OPTIONS`` ``-mfgfe_...`` options win over both.
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
    try:
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
            phis, rhos, outer = outer_newton(core, coupling, rho0, outer_rtol, outer_maxit)
        timings["solve_s"] = time.perf_counter() - t0
    finally:
        core.destroy()  # the KSP and the persistent matrices (PETSc objects are not freed by refcount alone)

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
            "ksp": core.ksp_options, "pc_type": core.pc_type,
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
