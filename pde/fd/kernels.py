"""Numba kernels of the FD scheme: residual and analytic sparse Jacobian.

Notation (DESIGN §2). Nodes are flattened to ``i = 0..N-1``; for each
direction ``a`` the arrays ``nbp[a, i]`` / ``nbm[a, i]`` give the right / left
neighbour (the node itself across a reflecting wall, the wrapped node on a
periodic box), ``ih[a] = 1/h_a``. One-sided differences

    q1 = D⁺_a φ_i = (φ_nbp - φ_i)/h_a,      q2 = D⁻_a φ_i = (φ_i - φ_nbm)/h_a

(a reflecting wall gives q = 0: no flux). The monotone (Godunov/upwind)
discrete Hamiltonian of H(x, p) = -b·p + |p|²/(2λ) (the running cost c and
the coupling f are moved to the source ``src``) is

    Ĥ_i = Σ_a [ (min(q1, 0)² + max(q2, 0)²)/(2λ) - b⁺_a q1 + b⁻_a q2 ],

non-increasing in q1 and non-decreasing in q2 (b = b⁺ - b⁻, b^± ≥ 0). Its
derivatives a1 = ∂Ĥ/∂q1 = min(q1, 0)/λ - b⁺ ≤ 0 and a2 = ∂Ĥ/∂q2 =
max(q2, 0)/λ + b⁻ ≥ 0 define the linearised operator

    (L(φ) w)_i = Σ_a [a1 (w_nbp - w_i) + a2 (w_i - w_nbm)]/h_a ,

whose off-diagonal entries are ≤ 0 (an M-matrix with -νΔ_h and 1/Δt).

The scheme, k = 0..nt-1 (implicit Euler both ways, Achdou–Capuzzo-Dolcetta):

    HJB_k:  (φ^k - φ^{k+1})/Δt - ν Δ_h φ^k + Ĥ(φ^k) - src^k = 0
    FP_k:   (ρ^{k+1} - ρ^k)/Δt - ν Δ_h ρ^{k+1} + L(φ^k)ᵀ ρ^{k+1} = 0

with φ^{nt} = g(ρ^{nt}) and ρ^0 given. The FP operator is *exactly* the
transpose of ∂HJB/∂φ (pair FP_k with φ^k): 1ᵀ L(φ)ᵀ = (L(φ) 1)ᵀ = 0 gives
discrete mass conservation to round-off, and the M-matrix gives ρ ≥ 0.

Unknown layout of the coupled Newton system (time-interleaved so that the
matrix is block-banded): φ^k_i ↦ 2kN + i, ρ^{k+1}_i ↦ 2kN + N + i.

Every kernel has a plain NumPy twin in :mod:`pde.fd.reference` (tests only).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import fd_jit

__all__ = ["coupled_residual", "coupled_jacobian", "level_operator", "jacobian_entries_per_node"]


def jacobian_entries_per_node(d: int) -> int:
    """COO entries emitted per (time level, node) by :func:`coupled_jacobian`."""
    return 4 + 12 * d


@fd_jit(parallel=True)
def coupled_residual(phi, rho, src, nbp, nbm, ih, bp, bm, dt, nu, lam, out_h, out_f):
    """Residuals of HJB_k and FP_k for all k (see module docstring).

    Args:
        phi: (nt+1, N), phi[nt] already set to g(ρ^{nt}).
        rho: (nt+1, N), rho[0] = ρ₀.
        src: (nt, N) right-hand side c + f of HJB_k.
        nbp, nbm: (d, N) int64 neighbours; ih: (d,) inverse steps.
        bp, bm: (d, N) positive / negative parts of the drift b.
        dt, nu, lam: time step, diffusion, kinetic weight.
        out_h, out_f: (nt, N) outputs (overwritten).
    """
    nt = src.shape[0]
    N = src.shape[1]
    d = nbp.shape[0]
    inv_dt = 1.0 / dt
    inv_lam = 1.0 / lam
    for k in prange(nt):
        for i in range(N):
            out_f[k, i] = (rho[k + 1, i] - rho[k, i]) * inv_dt
        for i in range(N):
            p = phi[k, i]
            r = rho[k + 1, i]
            ham = 0.0
            lap_p = 0.0
            for a in range(d):
                jp = nbp[a, i]
                jm = nbm[a, i]
                h1 = ih[a]
                q1 = (phi[k, jp] - p) * h1
                q2 = (p - phi[k, jm]) * h1
                m1 = min(q1, 0.0)
                m2 = max(q2, 0.0)
                ham += 0.5 * inv_lam * (m1 * m1 + m2 * m2) - bp[a, i] * q1 + bm[a, i] * q2
                lap_p += (q1 - q2) * h1
                a1 = m1 * inv_lam - bp[a, i]
                a2 = m2 * inv_lam + bm[a, i]
                # FP: -ν Δρ (symmetric stencil) and the transpose of L(φ^k)
                out_f[k, i] -= nu * (rho[k + 1, jp] - 2.0 * r + rho[k + 1, jm]) * h1 * h1
                s1 = r * a1 * h1
                s2 = r * a2 * h1
                out_f[k, jp] += s1
                out_f[k, i] += s2 - s1
                out_f[k, jm] -= s2
            out_h[k, i] = (p - phi[k + 1, i]) * inv_dt - nu * lap_p + ham - src[k, i]


@fd_jit(parallel=True)
def coupled_jacobian(phi, rho, nbp, nbm, ih, bp, bm, dt, nu, lam, rows, cols, vals):
    """COO triplets of ∂(HJB, FP)/∂(φ^0..φ^{nt-1}, ρ^1..ρ^{nt}) (stencil part).

    Terminal (∂φ^{nt}/∂ρ^{nt}) and coupling (∂f/∂ρ) blocks are added by the
    caller. Emits exactly ``jacobian_entries_per_node(d)`` entries per
    (k, i), in a fixed order (zeros where a term is absent), so the pattern
    depends only on the grid. Arrays rows/cols (int64), vals (float64) have
    length nt·N·(4 + 12d).
    """
    nt = phi.shape[0] - 1
    N = phi.shape[1]
    d = nbp.shape[0]
    E = 4 + 12 * d
    inv_dt = 1.0 / dt
    inv_lam = 1.0 / lam
    for k in prange(nt):
        base_p = 2 * k * N  # rows/cols of φ^k and of HJB_k
        base_r = base_p + N  # rows/cols of ρ^{k+1} and of FP_k
        for i in range(N):
            e = (k * N + i) * E
            p = phi[k, i]
            r = rho[k + 1, i]
            diag = inv_dt
            # reserve slots: 0 HJB diag, 1 HJB φ^{k+1}, 2 FP diag, 3 FP ρ^k
            rows[e + 1] = base_p + i
            if k < nt - 1:
                cols[e + 1] = base_p + 2 * N + i
                vals[e + 1] = -inv_dt
            else:
                cols[e + 1] = base_p + i
                vals[e + 1] = 0.0
            rows[e + 3] = base_r + i
            if k > 0:
                cols[e + 3] = base_r - 2 * N + i
                vals[e + 3] = -inv_dt
            else:
                cols[e + 3] = base_r + i
                vals[e + 3] = 0.0
            o = e + 4
            for a in range(d):
                jp = nbp[a, i]
                jm = nbm[a, i]
                h1 = ih[a]
                q1 = (phi[k, jp] - p) * h1
                q2 = (p - phi[k, jm]) * h1
                a1 = min(q1, 0.0) * inv_lam - bp[a, i]
                a2 = max(q2, 0.0) * inv_lam + bm[a, i]
                nl = nu * h1 * h1
                diag += 2.0 * nl + (a2 - a1) * h1
                off_p = -nl + a1 * h1
                off_m = -nl - a2 * h1
                # HJB_k row i, columns φ^k_{jp}, φ^k_{jm}
                rows[o] = base_p + i
                cols[o] = base_p + jp
                vals[o] = off_p
                rows[o + 1] = base_p + i
                cols[o + 1] = base_p + jm
                vals[o + 1] = off_m
                # FP_k column ρ^{k+1}_i: the transpose entries
                rows[o + 2] = base_r + jp
                cols[o + 2] = base_r + i
                vals[o + 2] = off_p
                rows[o + 3] = base_r + jm
                cols[o + 3] = base_r + i
                vals[o + 3] = off_m
                # FP_k depends on φ^k through a1(q1), a2(q2)
                s1 = r * h1 * h1 * inv_lam if q1 < 0.0 else 0.0
                s2 = r * h1 * h1 * inv_lam if q2 > 0.0 else 0.0
                rows[o + 4] = base_r + jp
                cols[o + 4] = base_p + jp
                vals[o + 4] = s1
                rows[o + 5] = base_r + jp
                cols[o + 5] = base_p + i
                vals[o + 5] = -s1
                rows[o + 6] = base_r + i
                cols[o + 6] = base_p + jp
                vals[o + 6] = -s1
                rows[o + 7] = base_r + i
                cols[o + 7] = base_p + i
                vals[o + 7] = s1
                rows[o + 8] = base_r + i
                cols[o + 8] = base_p + i
                vals[o + 8] = s2
                rows[o + 9] = base_r + i
                cols[o + 9] = base_p + jm
                vals[o + 9] = -s2
                rows[o + 10] = base_r + jm
                cols[o + 10] = base_p + i
                vals[o + 10] = -s2
                rows[o + 11] = base_r + jm
                cols[o + 11] = base_p + jm
                vals[o + 11] = s2
                o += 12
            rows[e] = base_p + i
            cols[e] = base_p + i
            vals[e] = diag
            rows[e + 2] = base_r + i
            cols[e + 2] = base_r + i
            vals[e + 2] = diag


@fd_jit(parallel=False)
def level_operator(phi, nbp, nbm, ih, bp, bm, nu, lam, ham, lap, rows, cols, vals):
    """One time level: Ĥ(φ), Δ_hφ and the COO of M(φ) = -νΔ_h + L(φ).

    Used by the sequential sweeps (backward HJB by Newton per level, forward
    FP with Mᵀ) and the linear FP routes (φ = 0). Args as in
    :func:`coupled_residual` with phi of shape (N,); outputs ham, lap (N,),
    rows/cols/vals of length N·(1 + 2d).
    """
    N = phi.shape[0]
    d = nbp.shape[0]
    E = 1 + 2 * d
    inv_lam = 1.0 / lam
    for i in range(N):
        e = i * E
        p = phi[i]
        hsum = 0.0
        lsum = 0.0
        diag = 0.0
        for a in range(d):
            jp = nbp[a, i]
            jm = nbm[a, i]
            h1 = ih[a]
            q1 = (phi[jp] - p) * h1
            q2 = (p - phi[jm]) * h1
            m1 = min(q1, 0.0)
            m2 = max(q2, 0.0)
            hsum += 0.5 * inv_lam * (m1 * m1 + m2 * m2) - bp[a, i] * q1 + bm[a, i] * q2
            lsum += (q1 - q2) * h1
            a1 = m1 * inv_lam - bp[a, i]
            a2 = m2 * inv_lam + bm[a, i]
            nl = nu * h1 * h1
            diag += 2.0 * nl + (a2 - a1) * h1
            rows[e + 1 + 2 * a] = i
            cols[e + 1 + 2 * a] = jp
            vals[e + 1 + 2 * a] = -nl + a1 * h1
            rows[e + 2 + 2 * a] = i
            cols[e + 2 + 2 * a] = jm
            vals[e + 2 + 2 * a] = -nl - a2 * h1
        rows[e] = i
        cols[e] = i
        vals[e] = diag
        ham[i] = hsum
        lap[i] = lsum
