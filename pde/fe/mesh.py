"""The FE mesh: choose or read it, size it (dofs and memory, before building), check that it holds ρ₀'s mass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..problem import MFGProblem
from . import _dolfinx_adapter as A
from .operators import P1Operators

MPI = A.MPI

__all__ = ["make_mesh", "check_mass_on_mesh", "estimate_dofs", "memory_estimate", "FE_BYTES_PER_NODE",
           "FE_BYTES_PER_DOF", "FE_BYTES_FIXED"]

#: peak resident bytes per space-time dof (dofs·(nt+1)) by dimension, per mesh dof, and a fixed part
#: (DOLFINx, PETSc, MPI); measured on the space-time Newton route, the largest (docs/fe.md, "Memory")
FE_BYTES_PER_NODE = {1: 5000.0, 2: 3000.0}
FE_BYTES_PER_DOF = 5000.0
FE_BYTES_FIXED = 400e6


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
