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

__all__ = ["coupled_residual", "coupled_jacobian", "level_operator", "jacobian_entries_per_node", "jacobian_bands_1d",
           "identity_block_value", "tridiag_factor", "terminal_coupled_sweeps", "terminal_response",
           "schur_band_riccati", "fp_forward_sweep"]


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


# ---------------------------------------------------------------------------
# 1D reflecting grids: the Jacobian as tridiagonal level blocks
# ---------------------------------------------------------------------------
#
# On a 1D grid with reflecting walls every N × N block of the Jacobian is
# tridiagonal. Stored per level as band arrays (nt, 3, N): [0] sub-diagonal
# M[i, i-1], [1] diagonal, [2] super-diagonal M[i, i+1] (entries outside the
# matrix are 0). The solver in pde.fd.linsolve eliminates the blocks level by
# level without ever forming the 2·nt·N sparse matrix.


@fd_jit(parallel=True)
def jacobian_bands_1d(phi, rho, nbp, nbm, ih, bp, bm, dt, nu, lam, a_band, c_band):
    """Tridiagonal blocks of the Δt-scaled stencil Jacobian (1D, reflecting walls).

    Same entries as ``dt * coupled_jacobian`` (the kernel above), summed per block:

    - ``a_band[k]``: ∂HJB_k/∂φ^k (= (∂FP_k/∂ρ^{k+1})ᵀ, the level matrix I + Δt M(φ^k));
    - ``c_band[k]``: ∂FP_k/∂φ^k (symmetric, positive semi-definite).

    The remaining stencil blocks are multiples of the identity:
    ∂HJB_k/∂φ^{k+1} = ∂FP_k/∂ρ^k = -Δt/Δt (see :func:`identity_block_value`).
    """
    nt = phi.shape[0] - 1
    N = phi.shape[1]
    inv_dt = 1.0 / dt
    inv_lam = 1.0 / lam
    h1 = ih[0]
    nl = nu * h1 * h1
    for k in prange(nt):
        A = a_band[k]
        C = c_band[k]
        for b in range(3):
            for i in range(N):
                A[b, i] = 0.0
                C[b, i] = 0.0
        for i in range(N):
            jp = nbp[0, i]
            jm = nbm[0, i]
            p = phi[k, i]
            r = rho[k + 1, i]
            q1 = (phi[k, jp] - p) * h1
            q2 = (p - phi[k, jm]) * h1
            a1 = min(q1, 0.0) * inv_lam - bp[0, i]
            a2 = max(q2, 0.0) * inv_lam + bm[0, i]
            A[1, i] += inv_dt + 2.0 * nl + (a2 - a1) * h1
            # column offset jp - i is +1, or 0 across a reflecting wall (jp = i)
            A[1 + jp - i, i] += -nl + a1 * h1
            A[1 + jm - i, i] += -nl - a2 * h1
            s1 = r * h1 * h1 * inv_lam if q1 < 0.0 else 0.0
            s2 = r * h1 * h1 * inv_lam if q2 > 0.0 else 0.0
            # the 2 × 2 blocks s1 [[1, -1], [-1, 1]] on (i, jp), s2 on (jm, i)
            C[1, jp] += s1
            C[1 + i - jp, jp] -= s1
            C[1 + jp - i, i] -= s1
            C[1, i] += s1 + s2
            C[1 + jm - i, i] -= s2
            C[1 + i - jm, jm] -= s2
            C[1, jm] += s2
        for b in range(3):
            for i in range(N):
                A[b, i] *= dt
                C[b, i] *= dt


def identity_block_value(dt: float) -> float:
    """The Δt-scaled entry of ∂HJB_k/∂φ^{k+1} and ∂FP_k/∂ρ^k: (-1/Δt)·Δt as the COO kernel rounds it."""
    return (-1.0 / dt) * dt


@fd_jit(parallel=True)
def tridiag_factor(band, low, ipiv):
    """LU without pivoting of each tridiagonal level matrix band[k] (nt, 3, N).

    A = L U with L unit lower bidiagonal (multipliers ``low[k, i]`` at (i, i-1))
    and U upper bidiagonal (reciprocal pivots ``ipiv[k, i]``, super-diagonal
    band[k, 2]). Safe without pivoting for the level matrices I + Δt M(φ):
    M-matrices, strictly diagonally dominant by rows (their transposes by columns).
    """
    nt = band.shape[0]
    N = band.shape[2]
    for k in prange(nt):
        sub = band[k, 0]
        dia = band[k, 1]
        sup = band[k, 2]
        lo = low[k]
        ip = ipiv[k]
        # recurrences carried in scalars: a value re-read from memory adds a store-to-load
        # latency to every step of the chain (measured 2x slower)
        q = 1.0 / dia[0]
        ip[0] = q
        lo[0] = 0.0
        for i in range(1, N):
            m = sub[i] * q
            lo[i] = m
            q = 1.0 / (dia[i] - m * sup[i - 1])
            ip[i] = q


@fd_jit(parallel=False)
def terminal_coupled_sweeps(a_band, low, ipiv, c_band, ident, rh, rf, x, y):
    """Solve the stencil part of J δ = r by one backward and one forward sweep.

    With A_k = a_band[k] (factored by :func:`tridiag_factor` into low, ipiv),
    C_k = c_band[k] and the identity blocks ``ident``·I:

        backward  A_k x_k = rh_k - ident x_{k+1}            (k = nt-1 .. 0)
        forward   A_kᵀ y_k = rf_k - C_k x_k - ident y_{k-1}  (k = 0 .. nt-1)

    i.e. the block-triangular system [[A, 0], [C, Aᵀ]] (x = δφ^0..δφ^{nt-1},
    y = δρ^1..δρ^{nt}); terms coupling HJB to ρ (the terminal g') are moved to
    ``rh`` by the caller. Outputs x, y (nt, N).
    """
    nt = rh.shape[0]
    N = rh.shape[1]
    w = np.empty(N)
    for k in range(nt - 1, -1, -1):
        sup = a_band[k, 2]
        lo = low[k]
        ip = ipiv[k]
        r = rh[k]
        xk = x[k]
        # L w = r - ident x_{k+1}, then U x_k = w (scalar-carried recurrences)
        c = -ident if k < nt - 1 else 0.0
        xn = x[k + 1] if k < nt - 1 else r
        v = r[0] + c * xn[0]
        w[0] = v
        for i in range(1, N):
            v = r[i] + c * xn[i] - lo[i] * v
            w[i] = v
        v = w[N - 1] * ip[N - 1]
        xk[N - 1] = v
        for i in range(N - 2, -1, -1):
            v = (w[i] - sup[i] * v) * ip[i]
            xk[i] = v
    for k in range(nt):
        sup = a_band[k, 2]
        lo = low[k]
        ip = ipiv[k]
        cs = c_band[k, 0]
        cd = c_band[k, 1]
        cu = c_band[k, 2]
        xk = x[k]
        r = rf[k]
        yk = y[k]
        c = -ident if k > 0 else 0.0
        yp = y[k - 1] if k > 0 else r
        w[0] = r[0] + c * yp[0] - cd[0] * xk[0] - cu[0] * xk[1]
        for i in range(1, N - 1):
            w[i] = r[i] + c * yp[i] - cs[i] * xk[i - 1] - cd[i] * xk[i] - cu[i] * xk[i + 1]
        w[N - 1] = r[N - 1] + c * yp[N - 1] - cs[N - 1] * xk[N - 2] - cd[N - 1] * xk[N - 1]
        # Uᵀ v = w (lower bidiagonal: diagonal 1/ipiv, sub-diagonal sup[i-1]), then Lᵀ y = v
        v = w[0] * ip[0]
        w[0] = v
        for i in range(1, N):
            v = (w[i] - sup[i - 1] * v) * ip[i]
            w[i] = v
        yk[N - 1] = v
        for i in range(N - 2, -1, -1):
            v = w[i] - lo[i + 1] * v
            yk[i] = v


@fd_jit(parallel=False)
def _band_solve_t(sup, low, ipiv, src, dst):
    """dst = A⁻ᵀ src for a banded src (N, 2w+1) (row-band storage src[i, o] = S[i, i + o - w]),
    keeping only the band |i - j| <= w of the result (A⁻¹ decays geometrically away from the
    diagonal). A = L U factored by rows: multipliers low, reciprocal pivots ipiv, super-diagonal
    sup; Aᵀ = Uᵀ Lᵀ is solved by a forward pass (Uᵀ) and a backward pass (Lᵀ), each a recurrence
    over rows whose inner loop runs over the band."""
    N = src.shape[0]
    W = src.shape[1]
    for p in range(N):
        ip = ipiv[p]
        if p == 0:
            for o in range(W):
                dst[p, o] = src[p, o] * ip
        else:
            s_ = sup[p - 1]
            for o in range(W - 1):
                dst[p, o] = (src[p, o] - s_ * dst[p - 1, o + 1]) * ip
            dst[p, W - 1] = src[p, W - 1] * ip
    for p in range(N - 2, -1, -1):
        lo = low[p + 1]
        for o in range(1, W):
            dst[p, o] -= lo * dst[p + 1, o - 1]


_band_solve_t_nb = _band_solve_t.serial  # the compiled function, callable from other kernels


@fd_jit(parallel=False)
def schur_band_riccati(a_band, c_band, group, b, extra, compensate, yb):
    """Banded approximation of R = Σ_k Φ_kᵀ C_k Φ_k (see linsolve.TerminalSchurSolver).

    R is the end point of the recursion Y ← A_k⁻ᵀ (Y + C_k) A_k⁻¹, k = 0..nt-1
    (A_k = a_band[k], C_k = c_band[k], tridiagonal). Here ``group`` consecutive
    levels are merged into one implicit step (A' = I + Σ (A_k - I), C' = Σ C_k),
    the products are computed on the band |i - j| <= b + extra and Y is kept
    on |i - j| <= b. Output yb (N, 2b+1), row-band storage yb[i, o] = Y[i, i + o - b].
    """
    nt = a_band.shape[0]
    N = a_band.shape[2]
    w = b + extra
    W = 2 * w + 1
    sup = np.empty(N)
    low = np.empty(N)
    ipiv = np.empty(N)
    dia = np.empty(N)
    sub = np.empty(N)
    y = np.zeros((N, W))
    x = np.empty((N, W))
    xt = np.empty((N, W))
    k0 = 0
    while k0 < nt:
        k1 = min(nt, k0 + group)
        for i in range(N):
            sub[i] = 0.0
            dia[i] = 1.0
            sup[i] = 0.0
        for k in range(k0, k1):
            for i in range(N):
                sub[i] += a_band[k, 0, i]
                dia[i] += a_band[k, 1, i] - 1.0
                sup[i] += a_band[k, 2, i]
                y[i, w] += c_band[k, 1, i]
                y[i, w - 1] += c_band[k, 0, i]
                y[i, w + 1] += c_band[k, 2, i]
        # A' = L U (no pivoting: an M-matrix, diagonally dominant)
        piv = dia[0]
        ipiv[0] = 1.0 / piv
        low[0] = 0.0
        for i in range(1, N):
            m = sub[i] * ipiv[i - 1]
            low[i] = m
            piv = dia[i] - m * sup[i - 1]
            ipiv[i] = 1.0 / piv
        # X = A'⁻ᵀ Y;  Y A'⁻¹ = Xᵀ;  Y <- A'⁻ᵀ Xᵀ
        _band_solve_t_nb(sup, low, ipiv, y, x)
        for i in range(N):
            for o in range(W):
                j = i + o - w
                xt[i, o] = x[j, W - 1 - o] if 0 <= j < N else 0.0
        _band_solve_t_nb(sup, low, ipiv, xt, y)
        # keep the band b, symmetrised (exact arithmetic keeps Y symmetric); with
        # ``compensate`` the dropped entries of each row go to its diagonal as |y_ij|
        # (Gershgorin: the kept matrix then dominates the whole one, so it stays PSD)
        for i in range(N):
            for o in range(W):
                if o < w - b or o > w + b:
                    if compensate:
                        j = i + o - w
                        if 0 <= j < N:
                            y[i, w] += abs(y[i, o])
                    y[i, o] = 0.0
            for o in range(w + 1, w + b + 1):
                j = i + o - w
                if j < N:
                    v = 0.5 * (y[i, o] + y[j, W - 1 - o])
                    y[i, o] = v
                    y[j, W - 1 - o] = v
                else:
                    y[i, o] = 0.0
            for o in range(0, w):
                if i + o - w < 0:
                    y[i, o] = 0.0
        k0 = k1
    for i in range(N):
        for o in range(2 * b + 1):
            yb[i, o] = y[i, w - b + o]


@fd_jit(parallel=False)
def fp_forward_sweep(a_band, low, ipiv, rho0, rho):
    """Forward FP with given level matrices: A_kᵀ ρ^{k+1} = ρ^k, k = 0..nt-1 (1D, tridiagonal).

    A_k = a_band[k] = I + Δt M(φ^k), factored by :func:`tridiag_factor`. The
    substitutions of an M-matrix add only non-negative terms: ρ >= 0 when ρ₀ >= 0.
    Output rho (nt+1, N), rho[0] = rho0.
    """
    nt = a_band.shape[0]
    N = a_band.shape[2]
    for i in range(N):
        rho[0, i] = rho0[i]
    for k in range(nt):
        sup = a_band[k, 2]
        lo = low[k]
        ip = ipiv[k]
        prev = rho[k]
        cur = rho[k + 1]
        # Uᵀ v = ρ^k, then Lᵀ ρ^{k+1} = v
        v = prev[0] * ip[0]
        cur[0] = v
        for i in range(1, N):
            v = (prev[i] - sup[i - 1] * v) * ip[i]
            cur[i] = v
        for i in range(N - 2, -1, -1):
            v = cur[i] - lo[i + 1] * v
            cur[i] = v


@fd_jit(parallel=False)
def terminal_response(a_band, low, ipiv, c_band, ident, wT, x, yT):
    """y_T of :func:`terminal_coupled_sweeps` for rh = (0, .., 0, wT), rf = 0.

    The matrix-vector product of the terminal Schur complement, with less
    memory traffic than the general sweeps: no right-hand sides are read and
    only two density levels are kept. x (nt, N) is workspace; output yT (N,).
    """
    nt = a_band.shape[0]
    N = a_band.shape[2]
    w = np.empty(N)
    ya = np.zeros(N)
    for k in range(nt - 1, -1, -1):
        sup = a_band[k, 2]
        lo = low[k]
        ip = ipiv[k]
        xk = x[k]
        # scalar-carried recurrences (see tridiag_factor)
        src = wT if k == nt - 1 else x[k + 1]
        c = 1.0 if k == nt - 1 else -ident
        v = c * src[0]
        w[0] = v
        for i in range(1, N):
            v = c * src[i] - lo[i] * v
            w[i] = v
        v = w[N - 1] * ip[N - 1]
        xk[N - 1] = v
        for i in range(N - 2, -1, -1):
            v = (w[i] - sup[i] * v) * ip[i]
            xk[i] = v
    for k in range(nt):
        sup = a_band[k, 2]
        lo = low[k]
        ip = ipiv[k]
        cd = c_band[k, 1]
        cu = c_band[k, 2]
        xk = x[k]
        # C_k is symmetric: sub-diagonal (i, i-1) = cu[i-1]
        v = (-ident * ya[0] - cd[0] * xk[0] - cu[0] * xk[1]) * ip[0]
        w[0] = v
        for i in range(1, N - 1):
            r = -ident * ya[i] - cu[i - 1] * xk[i - 1] - cd[i] * xk[i] - cu[i] * xk[i + 1]
            v = (r - sup[i - 1] * v) * ip[i]
            w[i] = v
        r = -ident * ya[N - 1] - cu[N - 2] * xk[N - 2] - cd[N - 1] * xk[N - 1]
        v = (r - sup[N - 2] * v) * ip[N - 1]
        ya[N - 1] = v
        for i in range(N - 2, -1, -1):
            v = w[i] - lo[i + 1] * v
            ya[i] = v
    for i in range(N):
        yT[i] = ya[i]
