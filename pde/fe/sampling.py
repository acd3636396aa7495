"""From the distributed P1 solution to the regular cell-centred grid (rank 0 gathers and interpolates)."""

from __future__ import annotations

import numpy as np

from .operators import P1Operators

__all__ = ["gather_mesh"]

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
