"""Plain NumPy twins of the Numba kernels in :mod:`pde.fd.kernels`.

Used only by the tests (kernel == twin to 1e-12) and by the benchmark
(kernel speed-up). Same arguments and outputs as the kernels, written with
whole-array operations and ``np.add.at`` for the transpose scatter, so that
they share no code path with the compiled loops.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coupled_residual_np", "coupled_jacobian_np", "level_operator_np", "jacobian_bands_1d_np",
           "terminal_coupled_sweeps_np", "fp_forward_sweep_np", "schur_band_riccati_np"]


def _diffs(phi, nbp, nbm, ih):
    """q1, q2 of shape (d, ..., N) for phi of shape (..., N)."""
    q1 = (phi[..., nbp] - phi[..., None, :]) * ih[:, None]
    q2 = (phi[..., None, :] - phi[..., nbm]) * ih[:, None]
    return np.moveaxis(q1, -2, 0), np.moveaxis(q2, -2, 0)


def coupled_residual_np(phi, rho, src, nbp, nbm, ih, bp, bm, dt, nu, lam):
    """Returns (res_hjb, res_fp), each (nt, N). See ``kernels.coupled_residual``."""
    nt, N = src.shape
    d = nbp.shape[0]
    P = phi[:nt]  # φ^k
    R = rho[1:]  # ρ^{k+1}
    q1, q2 = _diffs(P, nbp, nbm, ih)  # (d, nt, N)
    m1, m2 = np.minimum(q1, 0.0), np.maximum(q2, 0.0)
    bpe, bme = bp[:, None, :], bm[:, None, :]
    ham = (0.5 / lam * (m1**2 + m2**2) - bpe * q1 + bme * q2).sum(0)
    lap = ((q1 - q2) * ih[:, None, None]).sum(0)
    res_h = (P - phi[1:]) / dt - nu * lap + ham - src
    a1 = m1 / lam - bpe
    a2 = m2 / lam + bme
    res_f = (R - rho[:nt]) / dt
    for a in range(d):
        res_f = res_f - nu * (R[:, nbp[a]] - 2 * R + R[:, nbm[a]]) * ih[a] ** 2
        s1 = R * a1[a] * ih[a]
        s2 = R * a2[a] * ih[a]
        scatter = np.zeros_like(res_f)
        kk = np.arange(nt)[:, None]
        np.add.at(scatter, (np.broadcast_to(kk, (nt, N)), np.broadcast_to(nbp[a], (nt, N))), s1)
        np.add.at(scatter, (np.broadcast_to(kk, (nt, N)), np.broadcast_to(nbm[a], (nt, N))), -s2)
        res_f = res_f + scatter + (s2 - s1)
    return res_h, res_f


def coupled_jacobian_np(phi, rho, nbp, nbm, ih, bp, bm, dt, nu, lam):
    """The stencil Jacobian as a scipy CSR matrix (2 nt N square)."""
    import scipy.sparse as sp

    nt = phi.shape[0] - 1
    N = phi.shape[1]
    d = nbp.shape[0]
    rows, cols, vals = [], [], []

    def add(r, c, v):
        r, c, v = np.broadcast_arrays(np.asarray(r), np.asarray(c), np.asarray(v, dtype=float))
        rows.append(r.ravel())
        cols.append(c.ravel())
        vals.append(v.ravel())

    i = np.arange(N)
    for k in range(nt):
        bp_, br = 2 * k * N, 2 * k * N + N
        p, r = phi[k], rho[k + 1]
        diag = np.full(N, 1.0 / dt)
        if k < nt - 1:
            add(bp_ + i, bp_ + 2 * N + i, -1.0 / dt)
        if k > 0:
            add(br + i, br - 2 * N + i, -1.0 / dt)
        for a in range(d):
            h1 = ih[a]
            jp, jm = nbp[a], nbm[a]
            q1 = (p[jp] - p) * h1
            q2 = (p - p[jm]) * h1
            a1 = np.minimum(q1, 0.0) / lam - bp[a]
            a2 = np.maximum(q2, 0.0) / lam + bm[a]
            nl = nu * h1 * h1
            diag = diag + 2 * nl + (a2 - a1) * h1
            add(bp_ + i, bp_ + jp, -nl + a1 * h1)
            add(bp_ + i, bp_ + jm, -nl - a2 * h1)
            add(br + jp, br + i, -nl + a1 * h1)
            add(br + jm, br + i, -nl - a2 * h1)
            s1 = np.where(q1 < 0, r * h1 * h1 / lam, 0.0)
            s2 = np.where(q2 > 0, r * h1 * h1 / lam, 0.0)
            for rr, cc, sgn in ((jp, jp, 1), (jp, i, -1), (i, jp, -1), (i, i, 1)):
                add(br + rr, bp_ + cc, sgn * s1)
            for rr, cc, sgn in ((i, i, 1), (i, jm, -1), (jm, i, -1), (jm, jm, 1)):
                add(br + rr, bp_ + cc, sgn * s2)
        add(bp_ + i, bp_ + i, diag)
        add(br + i, br + i, diag)
    n = 2 * nt * N
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def level_operator_np(phi, nbp, nbm, ih, bp, bm, nu, lam):
    """Returns (ham, lap, M) with M = -νΔ_h + L(φ) as scipy CSR (N × N)."""
    import scipy.sparse as sp

    N = phi.shape[0]
    d = nbp.shape[0]
    i = np.arange(N)
    ham = np.zeros(N)
    lap = np.zeros(N)
    M = sp.csr_matrix((N, N))
    for a in range(d):
        h1 = ih[a]
        jp, jm = nbp[a], nbm[a]
        q1 = (phi[jp] - phi) * h1
        q2 = (phi - phi[jm]) * h1
        m1, m2 = np.minimum(q1, 0.0), np.maximum(q2, 0.0)
        ham += 0.5 / lam * (m1**2 + m2**2) - bp[a] * q1 + bm[a] * q2
        lap += (q1 - q2) * h1
        a1 = m1 / lam - bp[a]
        a2 = m2 / lam + bm[a]
        nl = nu * h1 * h1
        r = np.concatenate([i, i, i])
        c = np.concatenate([i, jp, jm])
        v = np.concatenate([2 * nl + (a2 - a1) * h1, -nl + a1 * h1, -nl - a2 * h1])
        M = M + sp.csr_matrix((v, (r, c)), shape=(N, N))
    return ham, lap, M


# ---------------------------------------------------------------------------
# 1D tridiagonal level blocks and the sweeps of the terminal-Schur solver
# ---------------------------------------------------------------------------


def _bands_of(M):
    """(3, N) bands [sub, diag, sup] of a tridiagonal sparse or dense N × N matrix (sub[0] = sup[-1] = 0)."""
    M = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
    N = M.shape[0]
    out = np.zeros((3, N))
    out[0, 1:] = np.diagonal(M, -1)
    out[1] = np.diagonal(M)
    out[2, :-1] = np.diagonal(M, 1)
    return out


def _tri(band):
    return np.diag(band[1]) + np.diag(band[0, 1:], -1) + np.diag(band[2, :-1], 1)


def jacobian_bands_1d_np(phi, rho, nbp, nbm, ih, bp, bm, dt, nu, lam):
    """(a_band, c_band): the blocks ∂HJB_k/∂φ^k and ∂FP_k/∂φ^k of ``dt * coupled_jacobian_np``."""
    nt = phi.shape[0] - 1
    N = phi.shape[1]
    J = (coupled_jacobian_np(phi, rho, nbp, nbm, ih, bp, bm, dt, nu, lam) * dt).tocsr()
    a = np.empty((nt, 3, N))
    c = np.empty((nt, 3, N))
    for k in range(nt):
        a[k] = _bands_of(J[2 * k * N:(2 * k + 1) * N, 2 * k * N:(2 * k + 1) * N])
        c[k] = _bands_of(J[(2 * k + 1) * N:(2 * k + 2) * N, 2 * k * N:(2 * k + 1) * N])
    return a, c


def _solve_band(band, rhs, transpose=False):
    from scipy.linalg import solve_banded

    up, mid, lo = band[2, :-1], band[1], band[0, 1:]
    if transpose:
        up, lo = lo, up
    ab = np.zeros((3, band.shape[1]))
    ab[0, 1:] = up
    ab[1] = mid
    ab[2, :-1] = lo
    return solve_banded((1, 1), ab, rhs)


def terminal_coupled_sweeps_np(a_band, c_band, ident, rh, rf):
    """(x, y) of ``kernels.terminal_coupled_sweeps`` with LAPACK's banded solver per level."""
    nt = rh.shape[0]
    x = np.empty_like(rh)
    y = np.empty_like(rf)
    for k in range(nt - 1, -1, -1):
        r = rh[k] - (ident * x[k + 1] if k < nt - 1 else 0.0)
        x[k] = _solve_band(a_band[k], r)
    for k in range(nt):
        r = rf[k] - _tri(c_band[k]) @ x[k] - (ident * y[k - 1] if k > 0 else 0.0)
        y[k] = _solve_band(a_band[k], r, transpose=True)
    return x, y


def fp_forward_sweep_np(a_band, rho0):
    """ρ of ``kernels.fp_forward_sweep``: A_kᵀ ρ^{k+1} = ρ^k level by level."""
    nt = a_band.shape[0]
    rho = np.empty((nt + 1, a_band.shape[2]))
    rho[0] = rho0
    for k in range(nt):
        rho[k + 1] = _solve_band(a_band[k], rho[k], transpose=True)
    return rho


def schur_band_riccati_np(a_band, c_band, group, b, extra, compensate=False):
    """Dense version of ``kernels.schur_band_riccati``: exact products, then truncation to |i - j| <= b
    (with ``compensate``, the dropped entries with |i - j| <= b + extra of each row added to its
    diagonal as |y_ij|, like the kernel, which computes the products on that band only).

    Returns the band (N, 2b+1), row-band storage out[i, o] = Y[i, i + o - b].
    """
    nt, _, N = a_band.shape
    eye = np.eye(N)
    i, j = np.indices((N, N))
    keep = np.abs(i - j) <= b
    computed = np.abs(i - j) <= b + extra
    Y = np.zeros((N, N))
    for k0 in range(0, nt, group):
        ks = range(k0, min(nt, k0 + group))
        A = eye + sum(_tri(a_band[k]) - eye for k in ks)
        Y = Y + sum(_tri(c_band[k]) for k in ks)
        Ainv = np.linalg.inv(A)
        Z = Ainv.T @ Y @ Ainv
        Z = 0.5 * (Z + Z.T)
        Y = np.where(keep, Z, 0.0)
        if compensate:
            Y[np.diag_indices(N)] += np.where(computed & ~keep, np.abs(Z), 0.0).sum(1)
    out = np.zeros((N, 2 * b + 1))
    for o in range(2 * b + 1):
        jj = np.arange(N) + o - b
        ok = (jj >= 0) & (jj < N)
        out[ok, o] = Y[np.arange(N)[ok], jj[ok]]
    return out
