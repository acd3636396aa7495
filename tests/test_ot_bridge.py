"""The ot route on the bridge family: Schrödinger bridges (ν > 0) and the 1D W₂ map (ν = 0).

Checks: the Gaussian closed forms (ρ_t, φ up to the constant, kinetic energy), the gauge shared with
the FD planning route, FD against ot on a mixture bridge (falling at FD's first order), the ν → 0
limit of the Schrödinger bridge against the ν = 0 map on a mixture, and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fitted_order

import pde
from pde import exact
from pde.ot import OTInputError
from pde.ot.entropic import EntropicInputError

MIX = pde.GaussianMixture([0.4, 0.6], [[-1.5], [1.0]], [[[0.2]], [[0.3]]])
G1 = pde.Gaussian([0.0], [[0.5]])


def _l1(sol, ref, k):
    return float(np.abs(sol.rho[k] - ref).sum() * np.prod(sol.h))


def _cf_l1(sol, cf, k):
    return _l1(sol, cf.rho(sol.grid().points(), sol.t[k]), k)


def gaussian_2d(nu, nt=8):
    return pde.bridge(pde.Gaussian([-1.0, 0.5], [[0.5, 0.2], [0.2, 0.3]]),
                      pde.Gaussian([1.0, -0.5], [[0.4, -0.25], [-0.25, 0.6]]), domain=[[-5, 5]] * 2, T=1.0, nu=nu,
                      nt=nt)


def gaussian_1d(nu, nt=8):
    return pde.bridge(pde.Gaussian([-1.0], [[0.3]]), pde.Gaussian([1.5], [[0.6]]), domain=[[-6, 6]], T=1.0, nu=nu,
                      nt=nt)


def _phi_spread(sol, cf, k):
    """Spread of φ − φ_exact where ρ_t ≥ 1e-3 max ρ_t (φ is free up to a constant)."""
    d = sol.phi[k] - cf.phi(sol.grid().points(), sol.t[k])
    w = sol.rho[k] >= 1e-3 * sol.rho[k].max()
    return float(np.ptp(d[w]))


@pytest.mark.parametrize("nu", [0.1, 0.02])
def test_schrodinger_bridge_2d_correlated_against_the_closed_form(nu):
    problem = gaussian_2d(nu)
    cf = exact.closed_form(problem)
    assert isinstance(cf, exact.SchrodingerBridgeGaussian)
    sol = pde.solve(problem, "ot", n=128)
    m = sol.meta
    assert m["method"] == "ot" and m["route"] == "schrodinger-bridge"
    for k in (2, 4, 6):  # T/4, T/2, 3T/4; target 1e-3, measured 1.3e-8 to 1.9e-8 (box-truncation floor)
        assert _cf_l1(sol, cf, k) < 1e-6, k
        assert _phi_spread(sol, cf, k) < 1e-5, k
    # kinetic energy ε KL(π‖R) against the closed form's: measured 4.7e-8 relative (the box floor)
    assert abs(m["kinetic_energy"] / cf.kinetic_energy() - 1.0) < 1e-6
    # the same from the returned arrays, ∫∫|∇φ|²ρ/(2λ) (central differences, trapezoid over nt = 8): 4e-5
    assert abs(m["kinetic_energy_from_levels"] / cf.kinetic_energy() - 1.0) < 5e-4
    assert m["marginal_error_1"] < 1e-12 and m["marginal_error_2"] <= m["tol"]
    assert m["mass_error"] < 1e-9 and m["min_rho"] >= 0.0 and m["terminal_l1"] <= 1e-9
    # the gauge of the FD planning route: h^d Σ ρ₁ φ(·, T) = 0
    r1 = cf.rho(sol.grid().points(), 1.0)
    r1 = r1 / sol.grid().integrate(r1)
    assert abs(float(sol.grid().integrate(r1 * sol.phi[-1]))) < 1e-12


@pytest.mark.parametrize("nu", [0.0, 0.1])
def test_1d_bridge_against_the_closed_form(nu):
    problem = gaussian_1d(nu)
    cf = exact.closed_form(problem)
    sol = pde.solve(problem, "ot", n=128)
    m = sol.meta
    assert m["route"] == ("monotone-rearrangement" if nu == 0 else "schrodinger-bridge")
    for k in (2, 4, 6):
        assert _cf_l1(sol, cf, k) < 1e-7, k  # measured 2e-9 to 6e-9
        assert _phi_spread(sol, cf, k) < 5e-6, k  # measured < 1e-6
    assert abs(m["kinetic_energy"] / cf.kinetic_energy() - 1.0) < 1e-6  # measured 1.5e-8 (ν = 0), 1.3e-8 (ν = 0.1)
    assert m["mass_error"] < 1e-12


def test_nu0_kinetic_energy_is_w2_squared():
    """ν = 0: (λ/2T)·W₂²(ρ₀, ρ₁) within 1e-3 relative (measured 1.5e-8)."""
    problem = pde.bridge(pde.Gaussian([-1.0], [[0.3]]), pde.Gaussian([1.5], [[0.6]]), domain=[[-6, 6]], T=2.0,
                         lam=0.5, nt=8)
    cf = exact.closed_form(problem)
    sol = pde.solve(problem, "ot", n=128)
    w2 = problem.lam / (2 * problem.T) * cf.w2sq()
    assert abs(sol.meta["kinetic_energy"] / w2 - 1.0) < 1e-6
    assert abs(sol.meta["kinetic_energy_from_levels"] / w2 - 1.0) < 1e-3
    # the map is the monotone rearrangement: T(x) = m₁ + s₁/s₀ (x − m₀) for Gaussians
    x, T = sol.extras["map_x"], sol.extras["map_T"]
    inner = np.abs(x + 1.0) < 3 * np.sqrt(0.3)
    np.testing.assert_allclose(T[inner], 1.5 + np.sqrt(0.6 / 0.3) * (x[inner] + 1.0), atol=1e-6)


def test_small_nu_schrodinger_bridge_tends_to_the_w2_geodesic_on_a_mixture():
    """Two independent routes on non-Gaussian data: the ν > 0 bridge against the ν = 0 map, O(ν) apart."""
    base = pde.solve(pde.bridge(G1, MIX, domain=[[-5, 5]], nt=8), "ot", n=400)
    errs, kin = [], []
    nus = (0.02, 0.01, 0.005)
    for nu in nus:
        s = pde.solve(pde.bridge(G1, MIX, domain=[[-5, 5]], nu=nu, nt=8), "ot", n=400)
        errs.append(_l1(s, base.rho[4], 4))
        kin.append(abs(s.meta["kinetic_energy"] - base.meta["kinetic_energy"]))
    # measured L1 at T/2 8.7e-3, 3.4e-3, 1.2e-3 (order 1.4); kinetic 5.7e-3, 3.0e-3, 1.5e-3 (order 0.9)
    assert fitted_order(nus, errs) > 0.9 and errs[-1] < 2e-3, errs
    assert fitted_order(nus, kin) > 0.8 and kin[-1] < 3e-3, kin


def test_fd_and_ot_agree_on_a_mixture_bridge_at_fd_order():
    problem = pde.bridge(G1, MIX, domain=[[-5, 5]], T=1.0, nu=0.2)
    hs, errs = [], []
    for n in (60, 120, 240):
        fd = pde.solve(problem, "fd", n=n, nt=n // 2, progress=False)
        ot = pde.solve(problem, "ot", n=n, nt=n // 2)
        hs.append(fd.h[0])
        errs.append(max(_l1(fd, ot.rho[k], k) for k in (n // 8, n // 4, 3 * n // 8)))
    # measured 3.2e-2, 1.7e-2, 8.6e-3: FD's first order (the ot levels are exact in time)
    assert fitted_order(hs, errs) > 0.85 and errs[-1] < 1.5e-2, errs


@pytest.mark.parametrize("dim", [1, 2])
def test_trivial_bridge_without_diffusion_is_at_rest_exactly(dim):
    law = pde.Gaussian([0.3] * dim, 0.4 * np.eye(dim))
    sol = pde.solve(pde.bridge(law, law, domain=[[-5, 5]] * dim, nt=4), "ot", n=32)
    r0 = law.pdf(sol.grid().points())
    r0 = r0 / sol.grid().integrate(r0)
    for k in range(5):
        assert np.array_equal(sol.rho[k], r0)
    assert np.all(sol.phi == 0.0) and sol.meta["kinetic_energy"] == 0.0


def test_unresolved_kernel_raises_naming_epsilon_nu_h():
    with pytest.raises(EntropicInputError, match=r"ε = 2νλ.*nu=0.0001.*h = "):
        pde.solve(gaussian_2d(1e-4), "ot", n=64)


def test_bad_options_raise():
    with pytest.raises(OTInputError, match="unknown option"):
        pde.solve(gaussian_1d(0.0), "ot", n=32, kernel="dense")
    with pytest.raises(OTInputError, match="tol="):
        pde.solve(gaussian_1d(0.1), "ot", n=32, tol=-1.0)
