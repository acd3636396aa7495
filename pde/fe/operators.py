"""Monotone P1 operators for the HJB–FP pair, as PETSc matrices.

Notation: ψ_i the P1 hat functions, m_i = ∫ψ_i (lumped mass),
K_ij = ∫∇ψ_j·∇ψ_i (stiffness), w_ij = -K_ij (i ≠ j) the edge weights,
e_ij = x_j - x_i, x_ij the edge midpoint. On a Delaunay mesh w_ij ≥ 0
(for P1 in 2D, w_ij = ½(cot α + cot β) with α, β the angles opposite the
edge), and the interior identity Σ_j w_ij e_ij e_ijᵀ = 2 m_i I makes the
edge sums below consistent with the PDE terms.

HJB, lumped, for the nodal values φ_i (row i, sums over edges ij):

    (L φ)_i = Σ_j c_ij (φ_i - φ_j),   c_ij = ν w_ij B(-a_ij),  a_ij = b(x_ij)·e_ij/ν
        ≈ m_i (-νΔφ - b·∇φ)(x_i)      (exponential fitting / EAFE; B(z) = z/(e^z - 1))
    Ĥ_i(φ) = 1/(2λ) Σ_j w⁺_ij ((φ_i - φ_j)⁺)²
        ≈ m_i |∇φ|²/(2λ)(x_i)        (upwind, Godunov-type, convex, monotone)

For ν = 0, c_ij = w_ij (b(x_ij)·e_ij)⁺ (the ν → 0 limit of the fitted weight).
The linearised HJB operator at φ is A(φ) = L + DĤ(φ) with

    DĤ(φ)_ii = 1/λ Σ_j w⁺_ij (φ_i - φ_j)⁺,   DĤ(φ)_ij = -1/λ w⁺_ij (φ_i - φ_j)⁺,

and the FP operator is exactly its transpose A(φ)ᵀ (so the discrete FP is
the adjoint of the linearised discrete HJB, DESIGN §7). A has zero row
sums, hence 1ᵀ A(φ)ᵀ ρ = 0: discrete mass Σ m_i ρ_i is conserved exactly
(to the linear-solver residual). A has non-positive off-diagonal entries
when all w_ij ≥ 0, so M/Δt + A(φ)ᵀ is a column diagonally dominant
Z-matrix, an M-matrix, and implicit Euler keeps ρ ≥ 0.

Consistency: L is second order where the mesh Péclet number is small; the
upwind Ĥ is exact on point-symmetric stencils (structured meshes, 1D) and
weakly (first-order, in a negative norm) consistent on unstructured ones.
"""

from __future__ import annotations

import numpy as np

from . import _dolfinx_adapter as A

PETSc = A.PETSc


def bernoulli(z: np.ndarray) -> np.ndarray:
    """B(z) = z/(e^z - 1), B(0) = 1, evaluated without cancellation or overflow."""
    z = np.asarray(z, dtype=float)
    out = np.ones_like(z)
    big = np.abs(z) > 1e-10
    with np.errstate(over="ignore"):
        out[big] = z[big] / np.expm1(z[big])
    small = ~big
    out[small] = 1.0 - 0.5 * z[small]
    return out


class P1Operators:
    """The stiffness pattern, edge data and lumped masses of a P1 space, distributed.

    Attributes:
        nloc, nglob: owned and global number of dofs.
        X: (nloc + ghosts, d) dof coordinates (owned first, then ghosts: all
            off-process columns of the owned stiffness rows).
        Xglob: (nglob, d) all dof coordinates by global index.
        dl2g: DOLFINx's local → global dof map (for cell tables).
        m: (nloc,) lumped masses of the owned dofs.
        ei, ej: (E,) local indices of the edge ends (ei owned; ej owned or ghost),
            one entry per off-diagonal stiffness entry of an owned row.
        w: (E,) edge weights -K_ij.
    """

    def __init__(self, V, comm, dim: int):
        self.V, self.comm, self.dim = V, comm, dim
        K, m = A.stiffness_and_lumped_mass(V)
        nloc, nglob, dl2g, Xd = A.dof_layout(V)
        self.nloc, self.nglob, self.dl2g = nloc, nglob, dl2g
        start = int(dl2g[0]) if nloc else 0
        # every rank gets all dof coordinates (one allgather): the stiffness rows of
        # owned dofs can reference dofs that DOLFINx's ghost layer does not hold
        # (vertex neighbours across a partition with facet ghosting), so the local
        # numbering here is owned dofs + every off-process column of K, not DOLFINx's.
        parts = comm.allgather((dl2g[:nloc], Xd[:nloc, :dim]))
        self.Xglob = np.empty((nglob, dim))
        for idx, x in parts:
            self.Xglob[idx] = x
        self.m = m
        indptr, cols, vals = K.getValuesCSR()
        K.destroy()
        cols64 = np.asarray(cols, dtype=np.int64)
        ghosts = np.unique(cols64[(cols64 < start) | (cols64 >= start + nloc)])
        l2g = np.concatenate([np.arange(start, start + nloc, dtype=np.int64), ghosts])
        self.l2g = l2g
        self.X = X = self.Xglob[l2g]
        cl = np.where((cols64 >= start) & (cols64 < start + nloc), cols64 - start,
                      nloc + np.searchsorted(ghosts, cols64))
        rows = np.repeat(np.arange(nloc), np.diff(indptr))
        off = cl != rows
        self.indptr, self.cols = indptr, cols
        self.nnz = len(cols)
        self.diag_pos = np.flatnonzero(~off)
        if self.diag_pos.size != nloc:
            raise RuntimeError("stiffness pattern lacks a diagonal entry in some row")
        self.off_pos = np.flatnonzero(off)
        self.ei, self.ej = rows[off], cl[off]
        self.w = -np.asarray(vals, dtype=float)[off]
        self.wp = np.maximum(self.w, 0.0)
        scale = np.abs(self.w).max() if self.w.size else 1.0
        self.n_negative_weights = int(comm.allreduce(int((self.w < -1e-10 * scale).sum())))
        self.n_edges = int(comm.allreduce(int(self.w.size))) // 2
        self.e = self.X[self.ej] - self.X[self.ei]
        self.xmid = 0.5 * (self.X[self.ei] + self.X[self.ej])
        self._g = PETSc.Vec().createGhost(l2g[nloc:].astype(PETSc.IntType), size=(nloc, nglob), comm=comm)
        self.m_all = self.ghosted(m)
        self.total_volume = comm.allreduce(float(m.sum()))

    # -- vectors -------------------------------------------------------------

    def ghosted(self, owned: np.ndarray) -> np.ndarray:
        """Owned values → owned + ghost values (one forward scatter)."""
        self._g.array[:] = owned
        self._g.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
        with self._g.localForm() as loc:
            return loc.array_r.copy()

    def vec(self, owned: np.ndarray | None = None):
        v = PETSc.Vec().createMPI((self.nloc, self.nglob), comm=self.comm)
        if owned is not None:
            v.array[:] = owned
        return v

    def integral(self, owned: np.ndarray) -> float:
        """Σ m_i u_i over all ranks (lumped quadrature)."""
        return self.comm.allreduce(float(self.m @ owned))

    def max_abs(self, owned: np.ndarray) -> float:
        return self.comm.allreduce(float(np.abs(owned).max()) if owned.size else 0.0, op=A.MPI.MAX)

    def max_abs_each(self, *owned: np.ndarray) -> np.ndarray:
        """max |u| over all ranks for each of several arrays, in one reduction."""
        loc = np.array([float(np.abs(u).max()) if u.size else 0.0 for u in owned])
        out = np.empty_like(loc)
        self.comm.Allreduce(loc, out, op=A.MPI.MAX)
        return out

    def min(self, owned: np.ndarray) -> float:
        return self.comm.allreduce(float(owned.min()) if owned.size else np.inf, op=A.MPI.MIN)

    # -- matrices ------------------------------------------------------------

    def pattern_matrix(self) -> "PatternMatrix":
        """A persistent AIJ matrix on the stiffness pattern whose values are rewritten in place."""
        return PatternMatrix(self)

    def matrix(self, offvals: np.ndarray, diagvals: np.ndarray):
        """A new AIJ matrix on the stiffness pattern from per-edge and diagonal values (the caller
        destroys it); for repeated solves, :meth:`pattern_matrix` avoids building one each time."""
        v = np.empty(self.nnz)
        v[self.off_pos] = offvals
        v[self.diag_pos] = diagvals
        M = PETSc.Mat().createAIJ(size=((self.nloc, self.nglob), (self.nloc, self.nglob)),
                                  csr=(self.indptr, self.cols, v), comm=self.comm)
        M.assemble()
        return M

    def rowsum(self, edgevals: np.ndarray) -> np.ndarray:
        return np.bincount(self.ei, weights=edgevals, minlength=self.nloc)

    def linear_weights(self, nu: float, drift, reverse: bool = False) -> np.ndarray:
        """Edge weights c_ij of L ≈ m(-νΔ - b·∇) (see the module docstring); ``reverse``: the weights
        c_ji of the reversed edges (the entries of Lᵀ in the owned rows), computed locally from the
        same floating-point operations as on the rank that owns j, so they equal its c_ji exactly."""
        if drift is None:
            return nu * self.w
        be = np.einsum("ed,ed->e", np.asarray(drift(self.xmid), dtype=float).reshape(self.e.shape), self.e)
        if reverse:
            be = -be  # b(x_ij)·e_ji, exactly
        if nu == 0.0:
            return self.w * np.maximum(be, 0.0)
        return nu * self.w * bernoulli(-be / nu)


class PatternMatrix:
    """An AIJ matrix on the stiffness pattern of ``ops`` that is built once and refilled in place.

    PETSc stores an MPI AIJ matrix as two sequential CSR blocks per rank, the owned columns
    ("diagonal" block, local column indices) and the ghost columns ("off-diagonal" block). The
    matrix is created on NumPy arrays of both (``MatCreateMPIAIJWithSplitArrays``;
    ``MatCreateSeqAIJWithArrays`` on one rank), which PETSc uses without copying, so :meth:`set`
    writes the new values straight into PETSc's storage (two gathers, no communication, no
    insertion, no preallocation) and then reassembles, which marks the values as changed: a
    preconditioner set up on the old values is rebuilt by the next solve (with the same nonzero
    pattern, e.g. ILU's symbolic factorisation is kept) unless reuse is on.
    """

    def __init__(self, ops: P1Operators):
        self.ops = ops
        comm, nloc = ops.comm, ops.nloc
        start = int(ops.l2g[0]) if nloc else 0
        cols = np.asarray(ops.cols, dtype=np.int64)
        rows = np.repeat(np.arange(nloc), np.diff(np.asarray(ops.indptr, dtype=np.int64)))
        own = (cols >= start) & (cols < start + nloc)
        # where each CSR position takes its value from: [offvals (E), diagvals (nloc)]
        src = np.empty(ops.nnz, dtype=np.int64)
        src[ops.off_pos] = np.arange(ops.off_pos.size)
        src[ops.diag_pos] = ops.off_pos.size + np.arange(nloc)
        self._buf = np.empty(ops.nnz)
        IT = PETSc.IntType

        def block(sel):
            ip = np.zeros(nloc + 1, dtype=IT)
            np.cumsum(np.bincount(rows[sel], minlength=nloc), out=ip[1:])
            return ip, np.zeros(sel.size, dtype=PETSc.ScalarType), src[sel]

        pd = np.flatnonzero(own)
        di, self._vd, self._sd = block(pd)
        dj = (cols[pd] - start).astype(IT)
        sizes = ((nloc, ops.nglob), (nloc, ops.nglob))
        if comm.size == 1:
            self._vo = None
            self.mat = PETSc.Mat().createAIJWithArrays(sizes, (di, dj, self._vd), comm=comm)
        else:
            po = np.flatnonzero(~own)
            oi, self._vo, self._so = block(po)
            oj = cols[po].astype(IT)  # global column indices; PETSc renumbers them in place
            self.mat = PETSc.Mat().createAIJWithArrays(sizes, ((di, dj, self._vd), (oi, oj, self._vo)), comm=comm)
        self._keep = (di, dj) if comm.size == 1 else (di, dj, oi, oj)  # PETSc uses these arrays
        self.mat.setOption(PETSc.Mat.Option.NEW_NONZERO_LOCATION_ERR, True)
        self.mat.assemble()

    def set(self, offvals: np.ndarray, diagvals: np.ndarray):
        """Write per-edge and diagonal values (as for :meth:`P1Operators.matrix`); returns the matrix."""
        ne = offvals.size
        self._buf[:ne] = offvals
        self._buf[ne:] = diagvals
        np.take(self._buf, self._sd, out=self._vd)
        if self._vo is not None:
            np.take(self._buf, self._so, out=self._vo)
        self.mat.assemble()  # values changed: new object state, cached diagonal data invalidated
        return self.mat

    def destroy(self) -> None:
        self.mat.destroy()
