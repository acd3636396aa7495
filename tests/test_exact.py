"""Closed forms of DESIGN §4 substituted into the continuous PDEs of §2.

Derivatives are taken by central finite differences with step h in x and t,
independently of the closed forms' own gradients, so the residuals must fall
as O(h²) (the truncation order of the central differences) until round-off
(≈ eps·|φ|/h² ≈ 1e-11 at the smallest h used here). This pins the sign
conventions every solver is then checked against.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fitted_order
from scipy import integrate, optimize

import pde
from pde import exact

HS = [4e-2, 2e-2, 1e-2, 5e-3]


def _grad(fun, x, h):
    """Central-difference gradient of fun(points) -> (...), shape (..., d)."""
    d = x.shape[-1]
    out = np.empty(x.shape)
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        out[..., j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return out


def _lap(fun, x, h):
    d = x.shape[-1]
    f0 = fun(x)
    out = np.zeros(x.shape[:-1])
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        out += (fun(x + e) - 2 * f0 + fun(x - e)) / h**2
    return out


def _div(vfun, x, h):
    d = x.shape[-1]
    out = np.zeros(x.shape[:-1])
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        out += (vfun(x + e)[..., j] - vfun(x - e)[..., j]) / (2 * h)
    return out


def hjb_residual(problem, phi, x, t, h, f=None):
    """-∂tφ - νΔφ - b·∇φ + |∇φ|²/(2λ) - f - c at points x, time t."""
    P = lambda y: phi(y, t)  # noqa: E731
    dt_phi = (phi(x, t + h) - phi(x, t - h)) / (2 * h)
    g = _grad(P, x, h)
    res = -dt_phi - problem.nu * _lap(P, x, h) - (problem.b(x) * g).sum(-1) + (g**2).sum(-1) / (2 * problem.lam)
    res -= problem.c(x, t)
    if f is not None:
        res -= f(x, t)
    return res


def fp_residual(problem, rho, phi, x, t, h, nu=None, drift=None):
    """∂tρ - νΔρ + ∇·(ρ (b - ∇φ/λ)) with ∇φ by finite differences."""
    nu = problem.nu if nu is None else nu
    b = problem.b if drift is None else drift
    R = lambda y: rho(y, t)  # noqa: E731

    def flux(y):
        v = b(y)
        if phi is not None:
            v = v - _grad(lambda z: phi(z, t), y, h) / problem.lam
        return rho(y, t)[..., None] * v

    dt_rho = (rho(x, t + h) - rho(x, t - h)) / (2 * h)
    return dt_rho - nu * _lap(R, x, h) + _div(flux, x, h)


def _points(law, n, rng):
    return law.sample(n, rng)


def _assert_order(errs, order=2.0, tol=0.25, floor=1e-9):
    errs = np.asarray(errs)
    if errs.max() < floor:  # exact to round-off at every h
        return
    p = fitted_order(HS, np.maximum(errs, 1e-300))
    assert p > order - tol, f"observed order {p:.2f} (errors {errs}); expected {order}"


# ----------------------------------------------------------------- problems

def otflow_1d():
    return pde.otflow(pde.Gaussian([1.5], 0.25), domain=[[-6, 6]], T=1.0, lam=0.7)


def otflow_2d():
    S0 = np.array([[0.6, 0.2], [0.2, 0.4]])
    return pde.otflow(pde.Gaussian([1.0, -0.5], S0), domain=[[-7, 7], [-7, 7]], T=1.3, lam=1.0)


def sgm_1d():
    data = pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.5]], [[[0.3]], [[0.5]]])
    return pde.sgm(data, domain=[[-7, 7]], T=1.0, beta=1.5)


def sgm_2d():
    data = pde.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]],
                               [[[0.3, 0.1], [0.1, 0.2]], [[0.4, -0.1], [-0.1, 0.5]]])
    return pde.sgm(data, domain=[[-7, 7], [-7, 7]], T=0.8, beta=1.0)


def lq_1d(nu=0.2):
    data = pde.GaussianMixture([0.4, 0.6], [[-1.0], [1.2]], [[[0.3]], [[0.2]]])
    return pde.lq(data, domain=[[-7, 7]], T=1.0, q=1.3, qT=0.7, nu=nu, lam=0.8)


def lq_2d():
    data = pde.Gaussian([0.5, -0.3], [[0.4, 0.1], [0.1, 0.3]])
    return pde.lq(data, domain=[[-7, 7], [-7, 7]], T=1.0, q=0.5, qT=2.0, nu=0.1, lam=1.0)


def otflow_entropic_1d():
    ref = pde.Gaussian([-0.3], 1.4**2)
    return pde.otflow(pde.Gaussian([1.5], 0.25), domain=[[-8, 8]], T=1.0, lam=0.7, nu=0.15, reference=ref)


def otflow_entropic_2d():
    S0 = np.array([[0.6, 0.2], [0.2, 0.4]])
    return pde.otflow(pde.Gaussian([1.0, -0.5], S0), domain=[[-7, 7], [-7, 7]], T=1.3, lam=1.0, nu=0.1)


MFG_CASES = {
    "otflow-1d": otflow_1d, "otflow-2d": otflow_2d,
    "otflow-entropic-1d": otflow_entropic_1d, "otflow-entropic-2d": otflow_entropic_2d, "sgm-1d": sgm_1d, "sgm-2d": sgm_2d,
    "lq-1d": lq_1d, "lq-1d-nu0": lambda: lq_1d(0.0), "lq-2d": lq_2d,
}


def _coupling(problem, cf):
    if problem.family == "lq":
        q, mbar = problem.params["q"], problem.rho0.mean()
        return lambda x, t: 0.5 * q * ((x - mbar) ** 2).sum(-1)
    return None


@pytest.mark.parametrize("name", list(MFG_CASES))
def test_closed_form_satisfies_hjb_and_fp(name, rng):
    problem = MFG_CASES[name]()
    cf = exact.closed_form(problem)
    f = _coupling(problem, cf)
    x = _points(problem.rho0, 40, rng)
    hjb, fp = [], []
    for h in HS:
        r1 = r2 = 0.0
        for t in (0.25 * problem.T, 0.6 * problem.T):
            r1 = max(r1, np.abs(hjb_residual(problem, cf.phi, x, t, h, f)).max())
            # relative to the density scale, so 1D and 2D read alike
            r2 = max(r2, np.abs(fp_residual(problem, cf.rho, cf.phi, x, t, h)).max() / cf.rho(x, t).max())
        hjb.append(r1)
        fp.append(r2)
    _assert_order(hjb)
    _assert_order(fp)
    assert hjb[-1] < 1e-3 and fp[-1] < 1e-3  # O(h²) with h = 5e-3 and O(1) derivatives


@pytest.mark.parametrize("name", list(MFG_CASES))
def test_velocity_is_minus_grad_phi_over_lambda(name, rng):
    problem = MFG_CASES[name]()
    cf = exact.closed_form(problem)
    x = _points(problem.rho0, 30, rng)
    t = 0.4 * problem.T
    errs = [np.abs(cf.velocity(x, t) + _grad(lambda y: cf.phi(y, t), x, h) / problem.lam).max() for h in HS]
    _assert_order(errs)


@pytest.mark.parametrize("name", list(MFG_CASES))
def test_initial_and_terminal_conditions(name, rng):
    problem = MFG_CASES[name]()
    cf = exact.closed_form(problem)
    x = _points(problem.rho0, 50, rng)
    np.testing.assert_allclose(cf.rho(x, 0.0), problem.rho0.pdf(x), rtol=1e-12, atol=1e-300)
    T = problem.T
    if problem.family == "otflow":
        law_T = cf.law(T)
        g = 1.0 + law_T.logpdf(x) - problem.reference.logpdf(x)
    elif problem.family == "sgm":
        g = -problem.data.logpdf(x)
    else:
        g = 0.5 * problem.params["qT"] * ((x - problem.rho0.mean()) ** 2).sum(-1)
    np.testing.assert_allclose(cf.phi(x, T), g, rtol=1e-12, atol=1e-12)


def test_otflow_terminal_law_minimises_the_proximal_functional():
    """Independent check of m_T, s_T: minimise KL + W2²/(2τ) over Gaussians numerically."""
    m0, s0, m1, s1, tau = 1.5, 0.5, -0.3, 1.4, 0.7

    def J(p):
        m, log_s = p
        s = np.exp(log_s)
        kl = np.log(s1 / s) + (s * s + (m - m1) ** 2) / (2 * s1 * s1) - 0.5
        return kl + ((m - m0) ** 2 + (s - s0) ** 2) / (2 * tau)

    res = optimize.minimize(J, [0.0, 0.0], method="BFGS", options={"gtol": 1e-12})
    mT, sT = exact.otflow_terminal_gaussian(m0, s0, m1, s1, tau)
    assert abs(res.x[0] - mT) < 1e-6 and abs(np.exp(res.x[1]) - sT) < 1e-6
    # DESIGN §4 form for the standard reference
    mT, sT = exact.otflow_terminal_gaussian(m0, s0, 0.0, 1.0, tau)
    assert np.isclose(mT, m0 / (1 + tau), rtol=1e-14)
    assert np.isclose(sT, (s0 + np.sqrt(s0**2 + 4 * tau * (1 + tau))) / (2 * (1 + tau)), rtol=1e-14)


def test_otflow_kinetic_energy_equals_lambda_w2_over_2T():
    """Along the closed form, ∫∫ (λ/2)|v|²ρ = λ W₂²(ρ0, ρT)/(2T) (constant-speed geodesic)."""
    problem = otflow_2d()
    cf = exact.closed_form(problem)
    rng = np.random.default_rng(0)
    # E_ρt |v|² with v affine: exact by Gaussian quadrature in t and a large sample in x would be noisy;
    # use moments instead: v = -(G x + c)/λ, E|v|² = |G m + c|²/λ² + tr(G S Gᵀ)/λ².
    d = problem.dim

    def ke(t):
        m, S = cf.moments(t)
        G = np.stack([cf.velocity(np.eye(d)[j], t) - cf.velocity(np.zeros(d), t) for j in range(d)], axis=1)
        v0 = cf.velocity(np.zeros(d), t)
        return 0.5 * problem.lam * (np.sum((G @ m + v0) ** 2) + np.trace(G @ S @ G.T))

    total, _ = integrate.quad(ke, 0, problem.T, epsabs=1e-13, epsrel=1e-12)
    m0, S0 = cf.moments(0.0)
    mT, ST = cf.moments(problem.T)
    assert abs(total - problem.lam * exact.w2_gaussian(m0, S0, mT, ST) / (2 * problem.T)) < 1e-10
    del rng


def test_otflow_gaussian_class_rejects_viscosity():
    problem = pde.otflow(pde.Gaussian([0.0], 1.0), domain=[[-8, 8]], nu=0.1)
    with pytest.raises(ValueError, match="nu = 0"):
        exact.OTFlowGaussian(problem)
    assert type(exact.closed_form(problem)).__name__ == "OTFlowEntropicGaussian"
    assert type(exact.closed_form(problem.replace(nu=0.0))).__name__ == "OTFlowGaussian"


def _gauss_kl(m, S, m1, S1):
    """KL(N(m, S) ‖ N(m1, S1)) in d dimensions."""
    d = m.size
    S1i = np.linalg.inv(S1)
    dm = m - m1
    return 0.5 * (np.trace(S1i @ S) + dm @ S1i @ dm - d + np.log(np.linalg.det(S1) / np.linalg.det(S)))


def _entropic_static_objective(p, m0, S0, m1, S1, tau, v):
    """ε KL(π ‖ ρ₀ ⊗ N(x, vI)) + KL(π₂ ‖ γ) for the coupling Y = A X + b + N(0, W), ε = v/τ.

    p packs A (d², row-major), b (d) and the Cholesky factor of W (lower triangle, log diagonal).
    """
    d = m0.size
    A = p[: d * d].reshape(d, d)
    b = p[d * d: d * d + d]
    Lw = np.zeros((d, d))
    Lw[np.tril_indices(d)] = p[d * d + d:]
    Lw[np.diag_indices(d)] = np.exp(np.diag(Lw))
    W = Lw @ Lw.T
    eps = v / tau
    Ai = A - np.eye(d)
    drift = Ai @ m0 + b
    e_sq = drift @ drift + np.trace(Ai @ S0 @ Ai.T)
    kl_cond = 0.5 * (np.trace(W) / v - d - np.log(np.linalg.det(W / v)) + e_sq / v)
    mT, ST = A @ m0 + b, A @ S0 @ A.T + W
    return eps * kl_cond + _gauss_kl(mT, ST, m1, S1), mT, ST


@pytest.mark.parametrize("name", ["otflow-entropic-1d", "otflow-entropic-2d"])
def test_entropic_terminal_law_minimises_the_static_objective(name):
    """ρ_T of the ν > 0 closed form against a direct minimisation over all Gaussian couplings.

    In 2D the coupling is searched with a full matrix A and covariance W, so the
    per-eigen-direction reduction of the closed form is checked too.
    """
    problem = MFG_CASES[name]()
    cf = exact.closed_form(problem)
    m0, S0 = problem.rho0.means[0], problem.rho0.covs[0]
    m1, S1 = problem.reference.means[0], problem.reference.covs[0]
    tau, v = problem.T / problem.lam, 2 * problem.nu * problem.T
    d = problem.dim
    p0 = np.concatenate([np.eye(d).ravel(), np.zeros(d), np.zeros(d * (d + 1) // 2)])
    res = optimize.minimize(lambda p: _entropic_static_objective(p, m0, S0, m1, S1, tau, v)[0], p0, method="BFGS",
                            options={"gtol": 1e-11, "maxiter": 2000})
    _, mT, ST = _entropic_static_objective(res.x, m0, S0, m1, S1, tau, v)
    m_cf, S_cf = cf.moments(problem.T)
    assert np.abs(mT - m_cf).max() < 1e-6 and np.abs(ST - S_cf).max() < 1e-6
    # the entropic step tends to the ν = 0 step as ν → 0
    zT, sT, _ = exact.otflow_entropic_terminal_gaussian(cf.z0, cf.s0, cf.z1, cf.s1, tau, 1e-12)
    z0T, s0T = exact.otflow_terminal_gaussian(cf.z0, cf.s0, cf.z1, cf.s1, tau)
    np.testing.assert_allclose(sT, s0T, rtol=1e-9)
    np.testing.assert_allclose(zT, z0T, rtol=1e-12)


@pytest.mark.parametrize("name", ["otflow-entropic-1d", "otflow-entropic-2d"])
def test_entropic_probability_flow_transports_the_marginals(name, rng):
    """∂tρ + ∇·(ρ v_pf) = 0 for v_pf = −∇φ/λ − ν∇log ρ_t (no diffusion term)."""
    problem = MFG_CASES[name]()
    cf = exact.closed_form(problem)
    x = _points(problem.rho0, 30, rng)
    t = 0.4 * problem.T
    errs = [np.abs(fp_residual(problem, cf.rho, None, x, t, h, nu=0.0,
                               drift=lambda y: cf.probability_flow_velocity(y, t))).max() / cf.rho(x, t).max()
            for h in HS]
    _assert_order(errs)
    assert errs[-1] < 1e-3


def test_entropic_bridge_marginal_matches_design_formula():
    """ρ_t of the ν > 0 closed form is the Schrödinger bridge between ρ₀ and ρ_T (DESIGN §4, 1D)."""
    problem = otflow_entropic_1d()
    cf = exact.closed_form(problem)
    s0, sT, v = cf.s0[0], cf.sT[0], cf.v
    cov = (np.sqrt(v * v + 4 * s0**2 * sT**2) - v) / 2  # DESIGN §4 bridge covariance between ρ₀ and ρ_T
    assert abs(cov - cf.alpha[0] * s0**2) < 1e-12
    r = 0.3
    var = (1 - r) ** 2 * s0**2 + r**2 * sT**2 + 2 * r * (1 - r) * cov + v * r * (1 - r)
    assert abs(cf.moments(r * problem.T)[1][0, 0] - var) < 1e-12


# ------------------------------------------------------------------ OU / sgm

@pytest.mark.parametrize("law", [
    pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.5]], [[[0.3]], [[0.5]]]),
    pde.eight_gaussians(),
    pde.Checkerboard(),
    pde.Ring(radius=2.0, width=0.3),
], ids=["mixture-1d", "8gaussians", "checkerboard", "ring"])
def test_ou_marginals_solve_the_ou_fokker_planck_equation(law, rng):
    """∂sη = ∇·(β/2 x η) + β/2 Δη for the exact OU marginals (β = 1.3)."""
    beta = 1.3
    s = 0.5
    x = law.ou_marginal(s, beta).sample(30, rng)
    eta = lambda y, s_: law.ou_marginal(s_, beta).pdf(y)  # noqa: E731
    errs = []
    for h in HS:
        ds = (eta(x, s + h) - eta(x, s - h)) / (2 * h)
        rhs = _div(lambda y: 0.5 * beta * y * eta(y, s)[..., None], x, h) + 0.5 * beta * _lap(lambda y: eta(y, s), x, h)
        errs.append(np.abs(ds - rhs).max() / eta(x, s).max())
    _assert_order(errs, floor=1e-8)
    assert errs[-1] < 1e-4


@pytest.mark.parametrize("law", [
    pde.GaussianMixture([0.2, 0.8], [[-1.0, 0.0], [1.0, 1.0]], [[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.2]]]),
    pde.Checkerboard().ou_marginal(0.3),
    pde.Ring(radius=2.0, width=0.3).ou_marginal(0.3),
    pde.Ring(radius=2.0, width=0.3),
], ids=["mixture-2d", "checkerboard-ou", "ring-ou", "ring"])
def test_scores_are_gradients_of_logpdf(law, rng):
    x = law.sample(40, rng)
    errs = [np.abs(law.score(x) - _grad(law.logpdf, x, h)).max() for h in HS]
    _assert_order(errs, floor=1e-8)


def test_mixture_laplacian_of_logpdf(rng):
    law = sgm_2d().data
    x = law.sample(30, rng)
    errs = [np.abs(law.laplacian_logpdf(x) - _lap(law.logpdf, x, h)).max() for h in HS]
    _assert_order(errs, floor=1e-7)


def test_sgm_score_extra_and_phi_agree(rng):
    """In the sgm closed form, the score is -∇φ (λ = 1/β, v = β·score)."""
    problem = sgm_1d()
    cf = exact.closed_form(problem)
    x = problem.rho0.sample(20, rng)
    for t in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(cf.velocity(x, t), problem.params["beta"] * cf.score(x, t), rtol=1e-14)


# ------------------------------------------------------------------ WGF

def test_wgf_gaussian_solves_the_gradient_flow_pde(rng):
    """∂tρ = Δρ - ∇·(ρ ∇log π), and equivalently ∂tρ + ∇·(ρ(-∇ log(ρ/π))) = 0."""
    problem = pde.wgf(pde.Gaussian([1.5, -1.0], [[0.5, 0.2], [0.2, 0.3]]), domain=[[-7, 7], [-7, 7]],
                      reference=pde.Gaussian([0.3, 0.2], [[1.5, 0.3], [0.3, 0.8]]), T=1.0)
    cf = exact.closed_form(problem)
    x = problem.rho0.sample(30, rng)
    e1, e2 = [], []
    for h in HS:
        r1 = r2 = 0.0
        for t in (0.3, 0.7):
            scale = cf.rho(x, t).max()
            r1 = max(r1, np.abs(fp_residual(problem, cf.rho, None, x, t, h, nu=1.0)).max() / scale)
            # continuity equation with v = -∇φ, φ = log(ρ/π), no diffusion, no drift
            r2 = max(r2, np.abs(fp_residual(problem.replace(nu=0.0, drift=None), cf.rho, cf.phi, x, t, h)).max() / scale)
        e1.append(r1)
        e2.append(r2)
    _assert_order(e1)
    _assert_order(e2)
    # DESIGN §4 form for π = N(0, I)
    p2 = pde.wgf(pde.Gaussian([1.0, 0.5], [[0.5, 0.1], [0.1, 0.3]]), domain=[[-7, 7], [-7, 7]])
    m, S = exact.closed_form(p2).moments(0.8)
    np.testing.assert_allclose(m, np.array([1.0, 0.5]) * np.exp(-0.8), rtol=1e-13)
    np.testing.assert_allclose(S, np.eye(2) + (np.array([[0.5, 0.1], [0.1, 0.3]]) - np.eye(2)) * np.exp(-1.6), rtol=1e-12)


# ------------------------------------------------------------------ LQ

def test_lq_riccati_and_design_variance_ode():
    """η solves η' = η²/λ - q with η(T) = q_T; the variance solves s' = -2ηs/λ + 2ν."""
    problem = pde.lq(pde.Gaussian([0.3], 0.4), domain=[[-7, 7]], q=1.3, qT=0.7, nu=0.25, lam=1.0, T=1.5)
    cf = exact.closed_form(problem)
    sol = integrate.solve_ivp(lambda t, y: [y[0] ** 2 / problem.lam - 1.3], (1.5, 0.0), [0.7], rtol=1e-12, atol=1e-14,
                              dense_output=True)
    ts = np.linspace(0, 1.5, 7)
    np.testing.assert_allclose(cf.eta(ts), sol.sol(ts)[0], rtol=1e-9)
    var = integrate.solve_ivp(lambda t, y: [-2 * cf.eta(t) * y[0] / problem.lam + 2 * 0.25], (0.0, 1.5), [0.4],
                              rtol=1e-12, atol=1e-14, dense_output=True)
    for t in ts:
        np.testing.assert_allclose(cf.law(t).covs[0, 0, 0], var.sol(t)[0], rtol=1e-8)
    # the mean stays put (the game is symmetric about m̄)
    np.testing.assert_allclose(cf.law(1.5).mean(), [0.3], atol=1e-14)
    # q = 0 branch: η = q_T / (1 + q_T (T - t)/λ)
    p0 = pde.lq(pde.Gaussian([0.0], 0.4), domain=[[-7, 7]], q=0.0, qT=0.7, lam=2.0)
    np.testing.assert_allclose(exact.closed_form(p0).eta(0.0), 0.7 / (1 + 0.7 / 2.0), rtol=1e-14)


# ------------------------------------------------------------------ McCann / Benamou-Brenier

def test_mccann_interpolation_is_a_benamou_brenier_geodesic(rng):
    m0, S0 = np.array([1.0, -0.5]), np.array([[0.6, 0.2], [0.2, 0.4]])
    m1, S1 = np.array([-0.5, 0.8]), np.array([[1.2, -0.3], [-0.3, 0.7]])
    mc = exact.mccann_gaussian(m0, S0, m1, S1)
    np.testing.assert_allclose(mc.moments(1.0)[1], S1, rtol=1e-12, atol=1e-13)
    unit = pde.otflow(pde.Gaussian(m0, S0), domain=[[-8, 8], [-8, 8]], lam=1.0)  # ν = 0, b = 0, c = 0, λ = 1
    x = mc.law(0.5).sample(30, rng)
    hjb = [np.abs(hjb_residual(unit, mc.phi, x, 0.5, h)).max() for h in HS]
    fp = [np.abs(fp_residual(unit, lambda y, t: mc.law(t).pdf(y), mc.phi, x, 0.5, h)).max() for h in HS]
    _assert_order(hjb)
    _assert_order(fp)
    # kinetic energy of the geodesic on [0, 1] is W2²
    def ke(t):
        m, S = mc.moments(t)
        G = np.stack([mc.velocity(np.eye(2)[j], t) - mc.velocity(np.zeros(2), t) for j in range(2)], axis=1)
        v0 = mc.velocity(np.zeros(2), t)
        return np.sum((G @ m + v0) ** 2) + np.trace(G @ S @ G.T)

    total, _ = integrate.quad(ke, 0, 1, epsabs=1e-13, epsrel=1e-12)
    assert abs(total - mc.w2sq()) < 1e-10


def test_w2_gaussian_matches_1d_formula():
    assert np.isclose(exact.w2_gaussian([1.0], [[4.0]], [0.0], [[1.0]]), 1.0 + (2.0 - 1.0) ** 2, rtol=1e-14)


def test_solve_exact_samples_the_closed_form_on_the_grid(tmp_path):
    problem = pde.load_problem("examples/otflow_gaussian_1d.toml", overrides={"n": [200], "nt": 20})
    sol = pde.solve(problem, "exact")
    assert sol.rho.shape == (21, 200)
    assert np.abs(sol.mass() - 1).max() < 1e-9  # midpoint rule on a resolved Gaussian
    path = sol.save(tmp_path / "exact.npz")
    back = pde.MFGSolution.load(path)
    np.testing.assert_array_equal(back.rho, sol.rho)
    assert back.meta["method"] == "exact" and back.meta["problem"]["family"] == "otflow"
