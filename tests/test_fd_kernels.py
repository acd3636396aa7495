"""FD kernels: Numba == NumPy twin, exact adjointness, analytic Jacobian, no recompiles."""

from __future__ import annotations

import numpy as np
import pytest

import pde
from pde.fd import build_discretization
from pde.fd import _jit
from pde.fd import kernels as K
from pde.fd import reference as R

CASES = {
    "1d-reflecting": lambda: pde.otflow(pde.Gaussian([0.5], [[0.5]]), domain=[[-5.5, 5.5]], nu=0.3),
    "1d-periodic": lambda: pde.otflow(pde.Gaussian([0.5], [[0.5]]), domain=[[-5.5, 5.5]], nu=0.3, boundary="periodic"),
    "2d-reflecting": lambda: pde.sgm(pde.Gaussian([0.5, -0.3], [[0.5, 0.1], [0.1, 0.4]]), domain=[[-5, 5], [-5, 5]]),
    "2d-periodic": lambda: pde.otflow(pde.Gaussian([0.5, 0.0], [[0.5, 0.0], [0.0, 0.6]]), domain=[[-5.5, 5.5]] * 2,
                                      nu=0.2, boundary="periodic"),
}


def _state(name, rng):
    prob = CASES[name]()
    d = build_discretization(prob, n=12 if prob.dim == 1 else (7, 6), nt=5, check_resolution=False)
    # random state with both signs of every one-sided difference (exercises all upwind branches)
    phi = rng.standard_normal((d.nt + 1, d.N))
    rho = rng.random((d.nt + 1, d.N)) + 0.1
    src = rng.standard_normal((d.nt, d.N))
    return d, phi, rho, src


@pytest.mark.parametrize("name", sorted(CASES))
def test_residual_kernel_equals_numpy_twin(name, rng):
    d, phi, rho, src = _state(name, rng)
    args = (d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam)
    out_h, out_f = np.empty((d.nt, d.N)), np.empty((d.nt, d.N))
    K.coupled_residual(phi, rho, src, *args, out_h, out_f)
    ref_h, ref_f = R.coupled_residual_np(phi, rho, src, *args)
    # same arithmetic in another order: agreement to a few ulps of the O(1/(h²Δt)) terms
    scale = 1.0 + np.abs(ref_h).max() + np.abs(ref_f).max()
    assert np.abs(out_h - ref_h).max() <= 1e-12 * scale
    assert np.abs(out_f - ref_f).max() <= 1e-12 * scale


@pytest.mark.parametrize("name", sorted(CASES))
def test_jacobian_kernel_equals_numpy_twin(name, rng):
    import scipy.sparse as sp

    d, phi, rho, _ = _state(name, rng)
    rows, cols, vals = d.stencil_jacobian_coo(phi, rho)
    n = 2 * d.nt * d.N
    J = sp.csr_matrix((vals, (rows, cols)), shape=(n, n)).toarray()
    J_np = R.coupled_jacobian_np(phi, rho, d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam).toarray()
    assert np.abs(J - J_np).max() <= 1e-12 * (1.0 + np.abs(J_np).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_level_operator_equals_numpy_twin(name, rng):
    d, phi, _, _ = _state(name, rng)
    ham, lap, M = d.level_matrix(phi[0])
    ham_np, lap_np, M_np = R.level_operator_np(phi[0], d.nbp, d.nbm, d.ih, d.bp, d.bm, d.nu, d.lam)
    s = 1.0 + np.abs(M_np).max()
    assert np.abs(ham - ham_np).max() <= 1e-12 * s
    assert np.abs(lap - lap_np).max() <= 1e-12 * s
    assert np.abs((M - M_np).toarray()).max() <= 1e-12 * s


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp_block_is_exact_transpose_of_linearised_hjb(name, rng):
    """A_FP = ∂FP/∂ρ equals (∂HJB/∂φ)ᵀ entry by entry (pairing FP_k with φ^k)."""
    import scipy.sparse as sp

    d, phi, rho, _ = _state(name, rng)
    rows, cols, vals = d.stencil_jacobian_coo(phi, rho)
    n = 2 * d.nt * d.N
    J = sp.csr_matrix((vals, (rows, cols)), shape=(n, n)).toarray()
    iphi = (2 * np.arange(d.nt)[:, None] * d.N + np.arange(d.N)).ravel()
    irho = iphi + d.N
    J_hjb_phi = J[np.ix_(iphi, iphi)]
    A_fp = J[np.ix_(irho, irho)]
    # the same floating-point expressions; only duplicate COO entries at a reflecting
    # wall (neighbour = self) are summed in another order: a few ulps at most
    assert np.abs(A_fp - J_hjb_phi.T).max() <= 4 * np.finfo(float).eps * np.abs(A_fp).max()
    # and the columns of the FP operator sum to the discrete time derivative only (mass)
    colsum = A_fp.sum(0).reshape(d.nt, d.N)
    expect = np.full((d.nt, d.N), 1.0 / d.dt)
    expect[:-1] -= 1.0 / d.dt
    assert np.abs(colsum - expect).max() <= 1e-12 / d.dt * 10


def test_analytic_jacobian_matches_finite_differences(rng):
    """Full Jacobian (stencil + KL terminal + moments) vs central differences."""
    prob = pde.lq(pde.Gaussian([0.5], [[0.5]]), domain=[[-5, 5]], nu=0.2, q=1.5, qT=0.7)
    d = build_discretization(prob, n=10, nt=3, check_resolution=False)
    phi = rng.standard_normal((d.nt + 1, d.N))
    rho = rng.random((d.nt + 1, d.N)) + 0.1
    U = d.pack(phi, rho)
    J = d.jacobian(U).toarray()
    eps = 1e-6
    Jn = np.empty_like(J)
    for j in range(U.size):
        e = np.zeros(U.size)
        e[j] = eps
        Jn[:, j] = (d.residual(U + e) - d.residual(U - e)) / (2 * eps)
    # central differences: O(eps²) truncation + O(1e-16/eps) round-off; kinks of the
    # upwind min/max are not crossed by ±1e-6 for random data (gaps ≫ 1e-6)
    assert np.abs(J - Jn).max() <= 1e-6 * (1.0 + np.abs(J).max())


def test_parameter_sweep_does_not_recompile(rng):
    d, phi, rho, src = _state("1d-reflecting", rng)
    out_h, out_f = np.empty((d.nt, d.N)), np.empty((d.nt, d.N))
    K.coupled_residual(phi, rho, src, d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam, out_h, out_f)
    d.stencil_jacobian_coo(phi, rho)
    d.level_matrix(phi[0])
    before = _jit.compile_count()
    for nu, lam, dt in [(0.0, 1.0, 0.1), (0.5, 0.3, 0.01), (2.0, 7.0, 1e-3)]:
        K.coupled_residual(phi, rho, src, d.nbp, d.nbm, d.ih, d.bp, d.bm, dt, nu, lam, out_h, out_f)
        d2 = build_discretization(pde.otflow(pde.Gaussian([0.5], [[0.5]]), domain=[[-5.5, 5.5]], nu=nu, lam=lam),
                                  n=12, nt=5, check_resolution=False)
        d2.stencil_jacobian_coo(phi, rho)
        d2.level_matrix(phi[0])
    assert _jit.compile_count() == before


# ----------------------------------------------- 1D banded blocks and the terminal-Schur solver


def _state_1d(rng, nu=0.0, n=12, nt=5, homotopy=1.0):
    """A 1D reflecting KL-terminal system and a random state (both upwind branches, ρ > 0)."""
    import dataclasses

    prob = pde.otflow(pde.Gaussian([0.5], [[0.5]]), domain=[[-5.5, 5.5]], nu=nu)
    d = build_discretization(prob, n=n, nt=nt, check_resolution=False)
    if homotopy != 1.0:
        d = dataclasses.replace(d, homotopy=homotopy, g_start=rng.standard_normal(d.N))
    phi = rng.standard_normal((d.nt + 1, d.N))
    rho = rng.random((d.nt + 1, d.N)) + 0.1
    U = d.pack(phi, rho)
    phi, rho, _ = d.unpack(U)  # φ^{nt} = g(ρ^{nt}), ρ^0 = ρ₀: the state the system sees
    return d, U, phi, rho


def _tri(band):
    return np.diag(band[1]) + np.diag(band[0, 1:], -1) + np.diag(band[2, :-1], 1)


def _jacobian_from_bands(d, a, c, ident, gp):
    """The dense 2·nt·N Jacobian assembled from the level blocks of ``Discretization.jacobian_bands``."""
    N, nt = d.N, d.nt
    J = np.zeros((2 * nt * N, 2 * nt * N))
    blk = lambda r, col: (slice(r * N, (r + 1) * N), slice(col * N, (col + 1) * N))  # noqa: E731
    for k in range(nt):
        J[blk(2 * k, 2 * k)] = _tri(a[k])  # HJB_k / φ^k
        J[blk(2 * k + 1, 2 * k + 1)] = _tri(a[k]).T  # FP_k / ρ^{k+1}
        J[blk(2 * k + 1, 2 * k)] = _tri(c[k])  # FP_k / φ^k
        if k < nt - 1:
            J[blk(2 * k, 2 * k + 2)] = ident * np.eye(N)  # HJB_k / φ^{k+1}
        if k > 0:
            J[blk(2 * k + 1, 2 * k - 1)] = ident * np.eye(N)  # FP_k / ρ^k
    J[blk(2 * nt - 2, 2 * nt - 1)] = -np.diag(gp)  # HJB_{nt-1} / ρ^{nt}: -g'
    return J


@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_jacobian_bands_kernel_equals_numpy_twin_and_sparse_jacobian(nu, rng):
    d, U, phi, rho = _state_1d(rng, nu)
    a, c, ident, gp = d.jacobian_bands(U)
    a_np, c_np = R.jacobian_bands_1d_np(phi, rho, d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam)
    scale = 1.0 + np.abs(a_np).max() + np.abs(c_np).max()
    assert np.abs(a - a_np).max() <= 1e-12 * scale
    assert np.abs(c - c_np).max() <= 1e-12 * scale
    # entries outside the matrix stay 0, and ∂FP/∂φ is exactly symmetric (the sweeps rely on it)
    assert np.all(a[:, 0, 0] == 0) and np.all(a[:, 2, -1] == 0)
    assert np.array_equal(c[:, 0, 1:], c[:, 2, :-1])
    # the blocks are the whole Jacobian: nothing else couples the unknowns of this system
    J = d.jacobian(U).toarray()
    assert np.abs(_jacobian_from_bands(d, a, c, ident, gp) - J).max() <= 1e-12 * (1.0 + np.abs(J).max())


def test_jacobian_bands_refuses_systems_that_are_not_terminal_coupled():
    prob = pde.lq(pde.Gaussian([0.5], [[0.5]]), domain=[[-5, 5]], nu=0.2, q=1.5, qT=0.7)
    d = build_discretization(prob, n=10, nt=3, check_resolution=False)
    assert not d.terminal_coupled_1d
    with pytest.raises(ValueError, match="1D reflecting"):
        d.jacobian_bands(np.zeros(d.n_unknowns))
    periodic = build_discretization(CASES["1d-periodic"](), n=12, nt=3, check_resolution=False)
    assert not periodic.terminal_coupled_1d


def test_terminal_sweeps_kernel_equals_numpy_twin(rng):
    d, U, _, _ = _state_1d(rng, 0.3)
    a, c, ident, _ = d.jacobian_bands(U)
    low, ipiv = np.empty((d.nt, d.N)), np.empty((d.nt, d.N))
    K.tridiag_factor(a, low, ipiv)
    rh, rf = rng.standard_normal((2, d.nt, d.N))
    x, y = np.empty((d.nt, d.N)), np.empty((d.nt, d.N))
    K.terminal_coupled_sweeps(a, low, ipiv, c, ident, rh, rf, x, y)
    x_np, y_np = R.terminal_coupled_sweeps_np(a, c, ident, rh, rf)
    assert np.abs(x - x_np).max() <= 1e-12 * np.abs(x_np).max()
    assert np.abs(y - y_np).max() <= 1e-12 * np.abs(y_np).max()
    # the Schur matrix-vector kernel is the last level of the sweeps driven by the terminal row only
    wT = rng.standard_normal(d.N)
    rh0 = np.zeros_like(rh)
    rh0[-1] = wT
    K.terminal_coupled_sweeps(a, low, ipiv, c, ident, rh0, np.zeros_like(rf), x, y)
    yT = np.empty(d.N)
    K.terminal_response(a, low, ipiv, c, ident, wT, np.empty((d.nt, d.N)), yT)
    assert np.abs(yT - y[-1]).max() <= 1e-13 * np.abs(y[-1]).max()


def test_banded_fp_forward_equals_level_by_level_sweep(rng):
    from pde.fd.iterations import fp_forward

    d, _, phi, _ = _state_1d(rng, 0.3, n=16, nt=7)
    rho = fp_forward(d, phi)  # 1D reflecting: the Numba band kernel
    rho_ref = fp_forward(d, phi, nu=d.nu)  # an explicit ν takes the level-by-level path
    assert np.abs(rho - rho_ref).max() <= 1e-13 * np.abs(rho_ref).max()
    a, _ = R.jacobian_bands_1d_np(phi, np.zeros_like(phi), d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam)
    assert np.abs(rho - R.fp_forward_sweep_np(a, d.rho0)).max() <= 1e-13 * np.abs(rho).max()
    assert rho.min() >= 0.0
    assert np.abs(d.vol * rho.sum(1) - 1.0).max() <= 1e-13


def _from_band(yb):
    N, b = yb.shape[0], yb.shape[1] // 2
    Y = np.zeros((N, N))
    for o in range(2 * b + 1):
        for i in range(N):
            if 0 <= i + o - b < N:
                Y[i, i + o - b] = yb[i, o]
    return Y


@pytest.mark.parametrize("group", [1, 3])
def test_band_riccati_kernel_equals_numpy_twin(group, rng):
    d, U, _, _ = _state_1d(rng, 0.0, n=40, nt=9)
    a, c, _, _ = d.jacobian_bands(U)
    b = 4
    yb = np.empty((d.N, 2 * b + 1))
    # products kept on b + 12: A'⁻¹ decays fast away from the diagonal, what the kernel drops is round-off
    K.schur_band_riccati(a, c, group, b, 12, False, yb)
    ref = R.schur_band_riccati_np(a, c, group, b, 12)
    assert np.abs(yb - ref).max() <= 1e-10 * np.abs(ref).max()
    # with diagonal compensation the band matrix is symmetric positive semi-definite; the compensated
    # entries come from the edge of the computed band, where the truncated products are least accurate
    K.schur_band_riccati(a, c, group, b, 12, True, yb)
    ref = R.schur_band_riccati_np(a, c, group, b, 12, compensate=True)
    assert np.abs(yb - ref).max() <= 1e-4 * np.abs(ref).max()
    Y = _from_band(yb)
    assert np.array_equal(Y, Y.T)
    assert np.linalg.eigvalsh(Y).min() >= -1e-12 * np.abs(Y).max()


def _dense_solve(d, U, F):
    a, c, ident, gp = d.jacobian_bands(U)
    return np.linalg.solve(_jacobian_from_bands(d, a, c, ident, gp), -F)


@pytest.mark.parametrize("homotopy,band", [(1.0, 0), (1.0, 4), (0.5, 4)])
def test_terminal_schur_solver_equals_direct_solve(homotopy, band, rng):
    from pde.fd.linsolve import TerminalSchurSolver

    d, U, _, _ = _state_1d(rng, 0.0, n=30, nt=8, homotopy=homotopy)
    F = d.residual(U)
    ref = _dense_solve(d, U, F)
    ls = TerminalSchurSolver(*d.jacobian_bands(U), rtol=1e-13, precond_band=band)
    dU = ls.solve(F)
    assert ls.converged and ls.iterations > 0
    assert np.abs(dU - ref).max() <= 1e-9 * np.abs(ref).max()


def test_terminal_schur_solver_nonconvex_terminal_uses_gmres(rng):
    """g' of both signs: no SPD form, GMRES on the Schur complement; same solution."""
    from pde.fd.linsolve import TerminalSchurSolver

    d, U, _, _ = _state_1d(rng, 0.0, n=30, nt=8)
    a, c, ident, gp = d.jacobian_bands(U)
    gp = gp * np.where(np.arange(d.N) % 3 == 0, -0.5, 1.0)
    F = rng.standard_normal(d.n_unknowns)
    ref = np.linalg.solve(_jacobian_from_bands(d, a, c, ident, gp), -F)
    ls = TerminalSchurSolver(a, c, ident, gp, rtol=1e-13)
    dU = ls.solve(F)
    assert ls.converged
    assert np.abs(dU - ref).max() <= 1e-9 * np.abs(ref).max()


def test_banded_kernels_do_not_recompile_across_parameters(rng):
    from pde.fd.iterations import fp_forward

    d, U, phi, _ = _state_1d(rng, 0.3)
    d.jacobian_bands(U)
    fp_forward(d, phi)
    before = _jit.compile_count()
    for nu, lam in [(0.0, 1.0), (0.5, 0.3), (2.0, 7.0)]:
        d2 = build_discretization(pde.otflow(pde.Gaussian([0.5], [[0.5]]), domain=[[-5.5, 5.5]], nu=nu, lam=lam),
                                  n=12, nt=5, check_resolution=False)
        d2.jacobian_bands(U)
        fp_forward(d2, phi)
    assert _jit.compile_count() == before
