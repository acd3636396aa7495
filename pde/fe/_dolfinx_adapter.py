"""The one place where ``pde`` touches DOLFINx.

Every DOLFINx call the FE solver makes goes through this module, so the API
differences between the versions users have live here and nowhere else:

========================  ==========================  ============================  ===========================
concern                   0.5 (Debian 12, apt)        0.9 (Debian 13 / conda)       0.10 (conda-forge)
========================  ==========================  ============================  ===========================
P1 space                  ``fem.FunctionSpace(mesh,   ``fem.functionspace(mesh,     same as 0.9
                          ("Lagrange", 1))``          ("Lagrange", 1))`` (the       
                                                      class no longer takes a tuple)
gmsh model → mesh         ``io.gmshio.model_to_mesh`` ``io.gmshio.model_to_mesh``   ``io.gmsh.model_to_mesh``
                          → (mesh, cell_tags,         → (mesh, cell_tags,           → ``MeshData`` named tuple
                          facet_tags); its            facet_tags)                   (``.mesh``, ...)
                          ``read_from_msh`` is
                          broken in 0.5.2
cell → dof table          ``dofmap.list`` is an       ``dofmap.list`` is a 2D       same as 0.9
                          ``AdjacencyList_int32``     numpy array
                          (``.array`` flat)
built-in meshes           ``create_interval(comm, n,  same call (adds ``dtype``)    same
                          [lo, hi])``,
                          ``create_rectangle(comm,
                          [p0, p1], [nx, ny])``
PETSc assembly            ``fem.petsc.assemble_matrix  same names                   same names (``fem.petsc``
                          / assemble_vector(form)``                                 must be imported
                                                                                    explicitly)
Function values           ``u.x.array`` (``u.vector``  ``u.x.array``                ``u.x.array``
                          is the PETSc Vec)           (``u.x.petsc_vec``)
XDMF                      ``io.XDMFFile(comm, path,   same                          same
                          "w").write_mesh/
                          write_function(u, t)``
PETSc external packages  ``PETSc.Sys.hasExternal     same                          same
(hypre, mumps)            Package(name)`` (petsc4py
                          3.18); older petsc4py:
                          try ``PC.setType``
``LinearProblem``         no prefix argument          optional                      ``petsc_options_prefix``
                                                                                    mandatory
========================  ==========================  ============================  ===========================

The solver itself only needs: a P1 space, the assembled stiffness matrix and
the lumped mass vector (PETSc objects, version independent from there on),
dof coordinates, the cell → dof table, the dof index map, mesh I/O and an
XDMF writer. It builds its nonlinear operators directly as PETSc matrices on
the stiffness sparsity pattern, so it never needs ``LinearProblem`` or
``NonlinearProblem`` (whose signatures changed most).

Importing this module raises :class:`ImportError` with install instructions
when DOLFINx (or petsc4py / mpi4py) is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

INSTALL_HINT = (
    "the finite-element solver (method 'fe') needs DOLFINx with petsc4py and mpi4py, which are not on PyPI. "
    "Install them with apt on Debian/Ubuntu (`sudo apt install python3-dolfinx python3-petsc4py python3-mpi4py "
    "python3-gmsh`, then create the venv with --system-site-packages) or with conda "
    "(`conda env create -f environment.yml && conda activate mfglab`)"
)

try:
    import dolfinx
    import dolfinx.fem
    import dolfinx.fem.petsc  # not imported by `import dolfinx.fem` in 0.10
    import dolfinx.io
    import dolfinx.mesh
    import ufl
    from mpi4py import MPI
    from petsc4py import PETSc
except ImportError as exc:  # pragma: no cover - exercised where DOLFINx is missing
    raise ImportError(f"{INSTALL_HINT} (import failed: {exc})") from exc

__all__ = [
    "MPI",
    "PETSc",
    "VERSION",
    "version_string",
    "p1_space",
    "create_interval",
    "create_rectangle",
    "read_mesh",
    "stiffness_and_lumped_mass",
    "cell_dofs",
    "dof_layout",
    "XDMFWriter",
    "has_petsc_package",
    "scalable_pc_options",
    "default_pc_options",
    "ILU_PC_OPTIONS",
    "ASM_ILU_PC_OPTIONS",
    "SERIAL_PC_OPTIONS",
    "PARALLEL_PC_OPTIONS",
    "AMG_MIN_RANKS",
]

VERSION = tuple(int(p) for p in dolfinx.__version__.split(".")[:2])


def version_string() -> str:
    return str(dolfinx.__version__)


def p1_space(mesh):
    """Continuous P1 Lagrange space on ``mesh``."""
    if hasattr(dolfinx.fem, "functionspace"):  # 0.7+ (0.9, 0.10)
        return dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    return dolfinx.fem.FunctionSpace(mesh, ("Lagrange", 1))  # 0.5


def create_interval(comm, n: int, lo: float, hi: float):
    """Uniform mesh of [lo, hi] with ``n`` cells (same call in 0.5–0.10)."""
    return dolfinx.mesh.create_interval(comm, int(n), [float(lo), float(hi)])


def create_rectangle(comm, lo, hi, n):
    """Uniform triangle mesh of the rectangle [lo, hi] with n = (nx, ny) squares, each cut
    along one diagonal ("right"): all angles ≤ π/2, so the P1 stiffness matrix is an M-matrix."""
    return dolfinx.mesh.create_rectangle(
        comm, [np.asarray(lo, float), np.asarray(hi, float)], [int(n[0]), int(n[1])],
        cell_type=dolfinx.mesh.CellType.triangle, diagonal=dolfinx.mesh.DiagonalType.right,
    )


def _read_msh(path: Path, comm, gdim: int):
    # 0.5.2's ``gmshio.read_from_msh`` is broken (it returns an undefined name), so
    # every version goes the same way: rank 0 merges the file into a gmsh model
    # and ``model_to_mesh`` distributes it (0.5/0.9: ``io.gmshio``, returns a
    # tuple; 0.10: ``io.gmsh``, returns ``MeshData``).
    import gmsh

    if VERSION >= (0, 10):
        from dolfinx.io import gmsh as gmsh_io
    else:
        from dolfinx.io import gmshio as gmsh_io
    err = None
    if comm.rank == 0:
        gmsh.initialize()
        gmsh.option.setNumber("General.Terminal", 0)
        try:
            gmsh.merge(str(path))
            if not gmsh.model.getPhysicalGroups(gdim):
                err = f"no physical group of dimension {gdim} (cells) in it — tag the domain, e.g. with meshes.generate"
        except Exception as exc:  # gmsh raises a bare Exception on unreadable files
            err = str(exc) or type(exc).__name__
    err = comm.bcast(err, root=0)
    try:
        if err is not None:
            raise ValueError(err)
        out = gmsh_io.model_to_mesh(gmsh.model, comm, 0, gdim=gdim)
    finally:
        if comm.rank == 0:
            gmsh.finalize()
    return out.mesh if hasattr(out, "mesh") else out[0]


def read_mesh(path, comm, gdim: int):
    """Read a mesh from a gmsh ``.msh`` or an XDMF file (mesh named "mesh").

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one
    that does not parse, naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mesh file {path} does not exist; expected a gmsh .msh or an XDMF (.xdmf) file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".msh":
            return _read_msh(path, comm, gdim)
        if suffix == ".xdmf":
            with dolfinx.io.XDMFFile(comm, str(path), "r") as fh:
                return fh.read_mesh(name="mesh")
    except Exception as exc:  # DOLFINx/gmsh raise RuntimeError, KeyError, ... on bad files
        raise ValueError(f"cannot read mesh file {path}: {type(exc).__name__}: {exc}") from None
    raise ValueError(f"mesh file {path} has suffix {suffix!r}; expected .msh (gmsh) or .xdmf")


def stiffness_and_lumped_mass(V):
    """Assemble K_ij = ∫∇ψ_j·∇ψ_i (PETSc AIJ, owned rows) and m_i = ∫ψ_i (owned entries).

    Returns (K, m) with m a numpy array of the owned dofs.
    """
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    K = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx))
    K.assemble()
    b = dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(v * ufl.dx))
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    m = b.array.copy()  # owned part (ghost contributions summed in)
    b.destroy()
    return K, m


def cell_dofs(V) -> np.ndarray:
    """(owned cells, vertices per cell) table of local dof indices."""
    mesh = V.mesh
    tdim = mesh.topology.dim
    ncells = mesh.topology.index_map(tdim).size_local
    lst = V.dofmap.list
    arr = np.asarray(lst.array if hasattr(lst, "array") else lst)  # 0.5: AdjacencyList; 0.9+: ndarray
    nv = tdim + 1
    return arr.reshape(-1, nv)[:ncells].astype(np.int64)


def dof_layout(V):
    """(n_owned, n_global, local→global array over owned+ghost dofs, dof coordinates (n_local, 3))."""
    imap = V.dofmap.index_map
    nloc = imap.size_local
    nall = nloc + imap.num_ghosts
    l2g = np.asarray(imap.local_to_global(np.arange(nall, dtype=np.int32)), dtype=np.int64)
    return nloc, int(imap.size_global), l2g, np.asarray(V.tabulate_dof_coordinates())


class XDMFWriter:
    """Write P1 fields ρ, φ per time level to ``path`` (.xdmf + .h5) atomically.

    All ranks write into a temporary folder beside ``path``; on ``close`` rank
    0 moves both files into place (the .xdmf names the .h5 by file name, so
    they keep matching).
    """

    def __init__(self, V, path, comm):
        import tempfile

        self.V, self.comm = V, comm
        self.path = Path(path).with_suffix(".xdmf")
        tmp = None
        if comm.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{self.path.stem}.", dir=self.path.parent)
        self.tmpdir = Path(comm.bcast(tmp, root=0))
        self.fh = dolfinx.io.XDMFFile(comm, str(self.tmpdir / self.path.name), "w")
        self.fh.write_mesh(V.mesh)
        self.funcs = {}

    def write(self, name: str, owned_values: np.ndarray, t: float) -> None:
        if name not in self.funcs:
            f = dolfinx.fem.Function(self.V)
            f.name = name
            self.funcs[name] = f
        f = self.funcs[name]
        n = owned_values.size
        f.x.array[:n] = owned_values
        f.x.scatter_forward()
        self.fh.write_function(f, float(t))

    def close(self) -> Path:
        self.fh.close()
        self.comm.barrier()
        if self.comm.rank == 0:
            for src in self.tmpdir.iterdir():
                os.replace(src, self.path.parent / src.name)
            self.tmpdir.rmdir()
        self.comm.barrier()
        return self.path


def has_petsc_package(name: str) -> bool:
    """Whether this PETSc was built with the external package ``name`` (e.g. "hypre", "mumps").

    petsc4py 3.18 has ``PETSc.Sys.hasExternalPackage``; where it is missing, a PC
    of that type is created and the error caught (PETSc raises on an unknown type).
    """
    if hasattr(PETSc.Sys, "hasExternalPackage"):
        return bool(PETSc.Sys.hasExternalPackage(name))
    pc = PETSc.PC().create(PETSc.COMM_SELF)
    try:
        pc.setType(name)
        return True
    except PETSc.Error:
        return False
    finally:
        pc.destroy()


#: block Jacobi with ILU(0) per rank: the cheapest preconditioner per GMRES iteration, but its iteration
#: count grows with the number of ranks (blocks)
ILU_PC_OPTIONS = {"pc_type": "bjacobi", "sub_pc_type": "ilu"}

#: additive Schwarz with one layer of overlap, ILU(0) per (overlapping) subdomain: one rank = ILU(0);
#: on 2 ranks 1.2x the serial GMRES iterations on the FE benchmark where block-Jacobi needs 2.3x
ASM_ILU_PC_OPTIONS = {"pc_type": "asm", "pc_asm_overlap": 1, "sub_pc_type": "ilu"}

#: the default on one rank: ILU(1), one factorisation reused while a solve needs at most 1.5x the
#: iterations of the first one on it, for at most 5 solves (benchmark: 0.77 s, 2104 its, 98 setups,
#: against ILU(0) rebuilt every solve 0.85 s, 2789 its, 404 setups)
SERIAL_PC_OPTIONS = {"pc_type": "bjacobi", "sub_pc_type": "ilu", "sub_pc_factor_levels": 1,
                     "pc_reuse": 5, "pc_reuse_growth": 1.5}

#: the default on 2 .. AMG_MIN_RANKS - 1 ranks: additive Schwarz with overlap 2, ILU(1) per subdomain,
#: the same reuse (benchmark, 2 ranks: 0.50-0.61 s, 2336-3021 its = 1.11-1.44x the serial default's,
#: depending on the mesh partition)
PARALLEL_PC_OPTIONS = {"pc_type": "asm", "pc_asm_overlap": 2, "sub_pc_type": "ilu", "sub_pc_factor_levels": 1,
                       "pc_reuse": 5, "pc_reuse_growth": 1.5}

#: from this many MPI ranks on, the default inner preconditioner is algebraic multigrid (see default_pc_options)
AMG_MIN_RANKS = 4


def scalable_pc_options(comm=None) -> dict:
    """PETSc options (without prefix) of an algebraic multigrid preconditioner whose
    iteration count does not grow with the number of MPI ranks, set up once and
    reused over many solves.

    hypre BoomerAMG where this PETSc has hypre, with its default (Falgout)
    coarsening: on the FE benchmark (sgm 2D, 10 201 dofs, 404 solves) it keeps
    the GMRES iterations flat from 1 to 2 ranks (1506 → 1524, rebuilt every
    solve), whereas HMIS coarsening with ext+i interpolation let them grow 1.4×.
    Otherwise PETSc's own GAMG (always built in): smoothed aggregation with
    Richardson/SOR smoothers, because the matrices M/Δt + A(φ) are non-symmetric
    (upwind) M-matrices and the default Chebyshev/Jacobi smoother needs
    eigenvalue estimates that do not suit them (4705 vs 1544 iterations).

    Rebuilding the hierarchy for every solve made AMG 4× slower than ILU(0)
    serially; 54 % of it was the setup (7 ms per solve). Hence ``pc_reuse``
    (read by ``pde.fe.sweeps``): one setup serves the solves until one needs
    more than ``pc_reuse_growth`` = 1.5× the iterations of the first solve on
    it, or the operator changes from HJB to FP. Measured: 34 setups instead of
    404, 2004 instead of 1506 iterations, serial 5.9 → 3.9 s (ILU(0): 0.94 s);
    GAMG 12.4 → 4.4 s. (``-pc_gamg_reuse_interpolation`` did nothing when each
    solve got a new matrix object; the sweeps now refill one persistent matrix
    per operator, not re-measured for GAMG.)
    ``comm`` is accepted for symmetry with :func:`default_pc_options`.
    """
    reuse = {"pc_reuse": 1000, "pc_reuse_growth": 1.5}
    if has_petsc_package("hypre"):
        return {"pc_type": "hypre", "pc_hypre_type": "boomeramg", **reuse}
    return {"pc_type": "gamg", "pc_gamg_type": "agg", "pc_gamg_agg_nsmooths": 1, "pc_gamg_threshold": 0.0,
            "mg_levels_ksp_type": "richardson", "mg_levels_pc_type": "sor", **reuse}


def default_pc_options(comm=None) -> dict:
    """The default preconditioner of the FE inner GMRES solves on ``comm``:
    ILU(1) on one rank (:data:`SERIAL_PC_OPTIONS`), additive Schwarz with
    overlap 2 and ILU(1) per subdomain on 2 to :data:`AMG_MIN_RANKS` − 1 ranks
    (:data:`PARALLEL_PC_OPTIONS`), algebraic multigrid with reuse
    (:func:`scalable_pc_options`) from there on; each factorisation serves up
    to 5 solves while they need at most 1.5× the iterations of the first.

    Measured on the FE benchmark (sgm 2D, 20 000 cells, 100 steps, 404 GMRES
    solves at rtol 1e-13; docs/benchmarks.md, section ``fe``), on a 2-core
    machine shared with other jobs (best of 3; Krylov counts on 2 ranks
    depend on the mesh partition):

    =============================  =========================  =========================
    preconditioner                 1 rank: wall, Krylov its   2 ranks: wall, Krylov its
    =============================  =========================  =========================
    block-Jacobi/ILU(0)            0.85 s, 2789               0.80 s, 6353–6425
    ILU(1), reuse ≤ 5 (default)    0.77 s, 2104               —
    ASM(1)/ILU(0)                  1.16 s, 2789               0.79 s, 3999
    ASM(2)/ILU(1), reuse ≤ 5       —                          0.53 s, 2487–3005 (default)
    BoomerAMG, reused              3.75 s, 2004               2.38 s, 2001
    =============================  =========================  =========================

    The matrices M/Δt + A(φ) are dominated by the mass term (Δt/h² ≈ 0.7), so
    incomplete factorisations need only 5–7 iterations per solve; block-Jacobi
    loses the coupling across the rank boundary (with *exact* LU blocks it
    still needs 6358 iterations on 2 ranks), overlap restores it. One
    BoomerAMG V-cycle costs as much as ~15 ILU(0) applications (1.2 vs
    0.08 ms): AMG keeps its iteration count flat (2001/2004) but loses on wall
    time at 1 and 2 ranks even with reuse. The switch to AMG at
    :data:`AMG_MIN_RANKS` = 4 is a forecast, not a measurement (the machine
    has 2 cores). Override with ``-mfgfe_pc_type`` (and its sub-options) in
    ``PETSC_OPTIONS`` / on the command line or ``ksp_options={"pc_type": ...}``;
    ``-mfgfe_pc_reuse 1`` rebuilds the preconditioner for every solve.
    """
    size = 1 if comm is None else comm.size
    if size >= AMG_MIN_RANKS:
        return scalable_pc_options(comm)
    return dict(SERIAL_PC_OPTIONS if size == 1 else PARALLEL_PC_OPTIONS)
