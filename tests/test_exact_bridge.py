"""Bridge closed forms (Benamou–Brenier, ν = 0; Gaussian Schrödinger bridge, ν > 0) substituted into the PDEs.

The HJB and FP residuals use the independent central differences of
``test_exact`` (O(h²) until round-off); the end conditions ρ(0) = ρ₀,
ρ(T) = ρ₁ are checked on the densities; the kinetic energy is integrated in
time from the velocity field and the moments, independently of the closed
form's own formula, and checked against (λ/2T)·W₂² (ν = 0) and 2νλ·KL of
the static coupling (ν > 0, Girsanov).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from test_exact import HS, _assert_order, _grad, fp_residual, hjb_residual

import pde
from pde import exact

S0_2D = np.array([[0.5, 0.2], [0.2, 0.4]])
S1_2D = np.array([[0.3, -0.1], [-0.1, 0.6]])


def bridge_1d(nu):
    return pde.bridge(pde.Gaussian([-1.0], [[0.3]]), pde.Gaussian([1.5], [[0.6]]), domain=[[-8, 8]], T=1.3,
                      lam=0.7, nu=nu)


def bridge_2d(nu):
    return pde.bridge(pde.Gaussian([-1.5, 0.5], S0_2D), pde.Gaussian([1.5, -0.5], S1_2D), domain=[[-8, 8]] * 2,
                      T=0.9, lam=1.4, nu=nu)


CASES = {"bb-1d": lambda: bridge_1d(0.0), "bb-2d": lambda: bridge_2d(0.0),
         "sb-1d": lambda: bridge_1d(0.25), "sb-2d": lambda: bridge_2d(0.4),
         "sb-2d-trivial": lambda: pde.bridge(pde.Gaussian([0.3, -0.2], S0_2D), pde.Gaussian([0.3, -0.2], S0_2D),
                                             domain=[[-8, 8]] * 2, nu=0.5)}


@pytest.mark.parametrize("name", list(CASES))
def test_bridge_satisfies_hjb_and_fp(name, rng):
    problem = CASES[name]()
    cf = exact.closed_form(problem)
    expect = exact.BenamouBrenierGaussian if problem.nu == 0 else exact.SchrodingerBridgeGaussian
    assert isinstance(cf, expect)
    hjb, fp = [], []
    for h in HS:
        r1 = r2 = 0.0
        for t in (0.2 * problem.T, 0.55 * problem.T, 0.9 * problem.T):
            x = cf.law(t).sample(40, np.random.default_rng(7))
            r1 = max(r1, np.abs(hjb_residual(problem, cf.phi, x, t, h)).max())
            r2 = max(r2, np.abs(fp_residual(problem, cf.rho, cf.phi, x, t, h)).max() / cf.rho(x, t).max())
        hjb.append(r1)
        fp.append(r2)
    _assert_order(hjb)
    _assert_order(fp)
    # the residual is the central differences' truncation C·h² (C ≈ 50 for the third derivatives of
    # laws with std ≈ 0.45 in 2D): it must shrink by (h_max/h_min)² = 64 over the refinements
    for errs in (hjb, fp):
        assert errs[-1] < 5e-3 and errs[-1] < 1.2 * errs[0] * (HS[-1] / HS[0]) ** 2


@pytest.mark.parametrize("name", list(CASES))
def test_bridge_end_laws_and_velocity(name, rng):
    problem = CASES[name]()
    cf = exact.closed_form(problem)
    x = cf.law(0.5 * problem.T).sample(60, rng)
    np.testing.assert_allclose(cf.rho(x, 0.0), problem.rho0.pdf(x), rtol=1e-11)
    np.testing.assert_allclose(cf.rho(x, problem.T), problem.target.pdf(x), rtol=1e-11)
    t = 0.4 * problem.T
    errs = [np.abs(cf.velocity(x, t) + _grad(lambda y: cf.phi(y, t), x, h) / problem.lam).max() for h in HS]
    _assert_order(errs)


def _kinetic_energy_by_quadrature(cf, problem):
    """∫₀ᵀ (λ/2) E_ρt|v|² dt with v affine read off the velocity field and ρ_t's moments."""
    d = problem.dim
    z = np.zeros(d)

    def ke(t):
        m, S = cf.moments(t)
        G = np.stack([cf.velocity(np.eye(d)[j][None], t)[0] - cf.velocity(z[None], t)[0] for j in range(d)], axis=1)
        v0 = cf.velocity(z[None], t)[0]
        return 0.5 * problem.lam * (np.sum((G @ m + v0) ** 2) + np.trace(G @ S @ G.T))

    return integrate.quad(ke, 0, problem.T, epsabs=1e-13, epsrel=1e-13, limit=200)[0]


@pytest.mark.parametrize("make", [lambda: bridge_1d(0.0), lambda: bridge_2d(0.0)], ids=["1d", "2d"])
def test_benamou_brenier_kinetic_energy_is_lambda_w2_over_2T(make):
    problem = make()
    cf = exact.closed_form(problem)
    w2 = exact.w2_gaussian(problem.rho0.means[0], problem.rho0.covs[0], problem.target.means[0],
                           problem.target.covs[0])
    target = problem.lam * w2 / (2 * problem.T)
    assert abs(_kinetic_energy_by_quadrature(cf, problem) - target) < 1e-10
    assert abs(cf.kinetic_energy() - target) < 1e-12


@pytest.mark.parametrize("make", [lambda: bridge_1d(0.25), lambda: bridge_2d(0.4)], ids=["1d", "2d"])
def test_schrodinger_bridge_kinetic_energy_is_girsanov_kl(make):
    """(λ/2)E∫|v|² = 2νλ KL(P‖R) = 2νλ KL(π‖R₀T): the dynamic energy from the static coupling."""
    problem = make()
    cf = exact.closed_form(problem)
    ke = _kinetic_energy_by_quadrature(cf, problem)
    assert abs(ke - cf.kinetic_energy()) < 1e-10
    assert abs(ke - 2 * problem.nu * problem.lam * cf.static_kl()) < 1e-10
    # strictly more than the inviscid bridge: the noise has to be steered too
    assert ke > problem.lam * exact.closed_form(problem.replace(nu=0.0)).w2sq() / (2 * problem.T)


def test_schrodinger_coupling_matches_design_1d_formula():
    """DESIGN §4: Cov(X₀, X_T) = (√(v² + 4s₀²s₁²) - v)/2 and the variance of ρ_t."""
    problem = bridge_1d(0.25)
    cf = exact.closed_form(problem)
    s0sq, s1sq, v = 0.3, 0.6, 2 * 0.25 * problem.T
    cov = (np.sqrt(v * v + 4 * s0sq * s1sq) - v) / 2
    assert np.isclose(cf.coupling_cov()[0, 0], cov, rtol=1e-14)
    for r in (0.1, 0.5, 0.8):
        var = (1 - r) ** 2 * s0sq + r * r * s1sq + 2 * r * (1 - r) * cov + v * r * (1 - r)
        m, S = cf.moments(r * problem.T)
        assert np.isclose(S[0, 0], var, rtol=1e-13)
        assert np.isclose(m[0], (1 - r) * -1.0 + r * 1.5, rtol=1e-14)


def test_schrodinger_coupling_is_stationary_for_the_static_problem_2d():
    """C minimises -tr(C)/v - ½ log det(S₁ - CᵀS₀⁻¹C) (entropic OT between Gaussians): zero gradient."""
    problem = bridge_2d(0.4)
    cf = exact.closed_form(problem)
    v = 2 * problem.nu * problem.T
    S0i = np.linalg.inv(S0_2D)

    def obj(C):
        return -np.trace(C) / v - 0.5 * np.linalg.slogdet(S1_2D - C.T @ S0i @ C)[1]

    C = cf.coupling_cov()
    h = 1e-5
    grad = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            E = np.zeros((2, 2))
            E[i, j] = h
            grad[i, j] = (obj(C + E) - obj(C - E)) / (2 * h)
    assert np.abs(grad).max() < 1e-8
    # a minimum, not a saddle: perturbations in every direction increase the objective
    rng = np.random.default_rng(3)
    for _ in range(20):
        E = 1e-3 * rng.standard_normal((2, 2))
        assert obj(C + E) > obj(C)


def test_trivial_bridge_without_diffusion_has_zero_velocity_exactly(rng):
    law = pde.Gaussian([0.3, -0.2], S0_2D)
    problem = pde.bridge(law, law, domain=[[-8, 8]] * 2, T=1.0, nu=0.0)
    cf = exact.closed_form(problem)
    x = 3 * rng.standard_normal((50, 2))
    for t in (0.0, 0.3, 0.77, 1.0):
        assert np.all(cf.velocity(x, t) == 0.0)
        assert np.all(cf.phi(x, t) == 0.0)
        np.testing.assert_array_equal(cf.moments(t)[1], S0_2D)
    assert cf.kinetic_energy() == 0.0


def test_trivial_bridge_with_diffusion_counters_the_spreading():
    """ρ₀ = ρ₁, ν > 0: the Schrödinger bridge is not at rest; it contracts against the diffusion."""
    law = pde.Gaussian([0.3], [[0.5]])
    problem = pde.bridge(law, law, domain=[[-8, 8]], T=1.0, nu=0.5)
    cf = exact.closed_form(problem)
    v = 2 * problem.nu * problem.T
    c = (np.sqrt(v * v + 4 * 0.25) - v) / 2
    var_mid = 0.25 * 0.5 + 0.25 * 0.5 + 0.5 * c + v * 0.25
    assert np.isclose(cf.moments(0.5)[1][0, 0], var_mid, rtol=1e-13) and var_mid > 0.5
    # at t = 0 the velocity points inward on both sides (at rest the law would spread, Σ̇ = 2ν > 0)
    x = np.array([[1.3], [-0.7]])
    v0 = cf.velocity(x, 0.0)[:, 0]
    assert v0[0] < 0 < v0[1]
    assert cf.kinetic_energy() > 0.1
    # and the law is back at ρ₁ = ρ₀ at t = T
    assert np.isclose(cf.moments(1.0)[1][0, 0], 0.5, rtol=1e-13)


def test_non_gaussian_bridge_has_no_closed_form():
    mix = pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [[[0.2]], [[0.2]]])
    problem = pde.bridge(mix, pde.Gaussian([0.0], [[1.0]]), domain=[[-8, 8]])
    with pytest.raises(exact.NoClosedForm, match="single Gaussian"):
        exact.closed_form(problem)


@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_solve_exact_samples_the_bridge_on_the_grid(nu):
    problem = pde.load_problem("examples/bridge_gaussian_2d.toml", overrides={"n": [48, 48], "nt": 8})
    problem = problem.replace(nu=nu)
    sol = pde.solve(problem, "exact")
    assert sol.meta["closed_form"] == ("BenamouBrenierGaussian" if nu == 0 else "SchrodingerBridgeGaussian")
    pts = problem.grid().points()
    np.testing.assert_allclose(sol.rho[0], problem.rho0.pdf(pts), rtol=1e-11)
    np.testing.assert_allclose(sol.rho[-1], problem.target.pdf(pts), rtol=1e-11)
    assert max(sol.meta["mass_outside_box"]) < 1e-6
