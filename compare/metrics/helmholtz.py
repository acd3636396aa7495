"""The non-gradient part of a velocity field: a ρ-weighted Helmholtz split on the cell-centred grid.

An MFG-optimal control is a gradient, ``v* = −∇φ/λ``. Any velocity ``v``
splits as ``v = ∇ψ + w`` with ``∇·(ρ w) = 0`` and no flux through the
walls: ``∇ψ`` moves the density exactly as ``v`` does (``∂tρ`` is
unchanged) with the least kinetic energy, and ``w`` only stirs it. The
split is orthogonal in ``L²(ρ)``, so the kinetic energies add,
``∫ρ|v|² = ∫ρ|∇ψ|² + ∫ρ|w|²``, and

    nongradient fraction = ∫ρ|w|² / ∫ρ|v|²  ∈ [0, 1]

is a model-agnostic measure of how far a flow is from any MFG solution
(0 for every optimal flow; the energy of a divergence-free stirring of a
density that it leaves invariant counts entirely).

Discretisation (finite volumes on the cell-centred grid, reflecting box):
ψ at the nodes; on each interior face between nodes ``i`` and ``i+1`` the
face density ``ρ_f = (ρ_i + ρ_{i+1})/2``, the flux ``(ρv)_f`` = the mean of
the two nodal fluxes, and ``∂ψ_f = (ψ_{i+1} − ψ_i)/h``; wall faces carry no
flux. ψ solves the Neumann problem ``Σ_faces (ρ_f ∂ψ_f − (ρv)_f)·n = 0`` per
cell (a weighted 5-point Laplacian; one sparse LU per time level, ψ pinned
at one node because constants are its null space). With
``v_f = (ρv)_f/ρ_f`` and ``w_f = v_f − ∂ψ_f``, summation by parts makes the
discrete split exactly orthogonal: ``Σ ρ_f v_f² = Σ ρ_f ∂ψ_f² + Σ ρ_f w_f²``.
The weighted operator is used instead of the plain Neumann Poisson (DCT)
solve because only the ρ-weighted split is orthogonal in the kinetic
energy; for a gradient field the fraction is O(h²) (the discretisation
floor, reported for the truth). In 1D every field is a gradient in this
sense (the flux is fixed by the divergence) and the fraction is 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nongradient_fraction"]


def _face_index(shape, j):
    """Flat indices of the two nodes of every interior face normal to axis j."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    lo = [slice(None)] * len(shape)
    hi = [slice(None)] * len(shape)
    lo[j] = slice(0, -1)
    hi[j] = slice(1, None)
    return idx[tuple(lo)].ravel(), idx[tuple(hi)].ravel()


def nongradient_fraction(v: np.ndarray, rho: np.ndarray, axes, rel_reg: float = 1e-10) -> tuple[float, float]:
    """(fraction, total face energy Σ ρ_f v_f² h^d) of one velocity field at one time.

    Args:
        v: (*grid, d) velocity at the nodes.
        rho: (*grid,) the density that ``v`` transports (negatives clipped).
        axes: the node arrays.
        rel_reg: ``rel_reg · max ρ`` is added to every face density so that
            cells where ρ underflows to 0 stay connected (the split of the
            energy there is not affected: it carries ρ ≈ 0).

    Returns:
        The fraction of kinetic energy in the non-gradient part and the
        total energy it is a fraction of (NaN, 0 for a zero field).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    axes = tuple(np.asarray(a, float) for a in axes)
    shape = tuple(a.size for a in axes)
    d = len(axes)
    v = np.asarray(v, dtype=float)
    rho = np.clip(np.asarray(rho, dtype=float), 0.0, None)
    if v.shape != shape + (d,) or rho.shape != shape:
        raise ValueError(f"velocity {v.shape} and density {rho.shape}; expected {shape + (d,)} and {shape}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(rho))):
        raise ValueError("the velocity or the density is not finite; the Helmholtz split needs finite fields")
    N = rho.size
    r = rho.ravel()
    reg = rel_reg * float(r.max()) if r.max() > 0 else rel_reg
    vol = float(np.prod([a[1] - a[0] for a in axes]))
    rows, cols, vals = [], [], []
    rhs = np.zeros(N)
    faces = []
    for j, ax in enumerate(axes):
        h = float(ax[1] - ax[0])
        a, b = _face_index(shape, j)
        rf = 0.5 * (r[a] + r[b]) + reg
        flux = 0.5 * (r[a] * v.reshape(N, d)[a, j] + r[b] * v.reshape(N, d)[b, j])
        # A ψ = -∇·(ρ∇ψ) (cell a's +face, cell b's -face); the right side is -∇·(ρv)
        np.add.at(rhs, a, -flux / h)
        np.add.at(rhs, b, flux / h)
        c = rf / (h * h)
        rows += [a, a, b, b]
        cols += [a, b, b, a]
        vals += [c, -c, c, -c]
        faces.append((a, b, h, rf, flux))
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(N, N))
    pin = int(np.argmax(r))
    A = A.tolil()
    A[pin, :] = 0.0
    A[pin, pin] = 1.0
    rhs[pin] = 0.0
    psi = splu(A.tocsc()).solve(rhs)
    e_grad = e_w = 0.0
    for a, b, h, rf, flux in faces:
        dpsi = (psi[b] - psi[a]) / h
        vf = flux / rf
        w = vf - dpsi
        e_grad += float((rf * dpsi * dpsi).sum())
        e_w += float((rf * w * w).sum())
    tot = (e_grad + e_w) * vol
    if tot <= 0:
        return float("nan"), 0.0
    return e_w * vol / tot, tot
