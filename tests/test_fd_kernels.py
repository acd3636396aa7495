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
