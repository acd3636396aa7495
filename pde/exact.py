"""Closed-form solutions (DESIGN §4), with the sign conventions of §2.

Each closed form gives ρ(x, t), φ(x, t) and the optimal velocity
v*(x, t) = -∇φ/λ on points of shape (..., d), and the law ρ_t itself.
:func:`closed_form` picks the one that applies to a problem (or raises,
saying why none does); :func:`solve_exact` samples it on the problem's grid
as an :class:`~pde.solution.MFGSolution` (method ``"exact"``).

Formulas
--------
otflow, Gaussian data N(m₀, S₀) and reference N(m₁, S₁) with commuting
covariances, ν = 0, τ = T/λ. In a common eigenbasis, per direction
(s₀, s₁ standard deviations, m₀, m₁ means)::

    m_T = (m₀ s₁² + τ m₁)/(s₁² + τ)
    s_T = [s₀ s₁² + sqrt(s₀² s₁⁴ + 4 τ s₁² (s₁² + τ))] / (2 (s₁² + τ))

(for s₁ = 1: s_T = [s₀ + sqrt(s₀² + 4τ(1+τ))]/(2(1+τ)), DESIGN §4), and
ρ_t is McCann's interpolation (mean and std linear in t/T). With
g = 1 + log ρ_T - log γ = Σ_j (½A_j z_j² + B_j z_j + C_j) + 1, the HJB
-∂tφ + |∇φ|²/(2λ) = 0 has the exact solution

    φ = Σ_j [½ A_j r_j z_j² + B_j r_j z_j - B_j² (T - t) r_j / (2λ) + C_j] + 1,
    r_j(t) = 1 / (1 + A_j (T - t)/λ).

otflow with ν > 0 (same data, τ = T/λ, v = 2νT = τε, ε = 2νλ): the
problem is entropic OT with a KL penalty on the second marginal (DESIGN
"Static reformulations"); Gaussian couplings Y = αX + β + N(0, w) are optimal
and the problem separates per eigen-direction. With q = 1/τ + 1/s₁²,
stationarity of the static objective in (α, w) gives w = α v and

    q τ s₀² α² + (q τ v − s₀²) α − τ − v = 0   (positive root),  s_T = √(α² s₀² + α v),

m_T as for ν = 0 (the mean part does not see the noise), Cov(X₀, X_T) = α s₀².
ρ_t is the Schrödinger bridge marginal, r = t/T: mean (1−r) m₀ + r m_T,
variance (1−r)² s₀² + r² s_T² + 2r(1−r) α s₀² + v r(1−r). φ solves the
viscous HJB with the same quadratic terminal g: the quadratic and linear
coefficients are those of ν = 0 and the Laplacian adds
ν λ log(1 + A(T − t)/λ) per direction to the constant.

sgm: φ(x, t) = -log η(x, T - t), ρ_t = η_{T-t}, v* = β ∇log η(x, T - t),
with η_s the OU marginal of the data (exact for mixtures and the toys);
the constant running cost c = -βd/2 is kept so no further shift is needed.

wgf (reference N(m₁, S₁), ρ₀ = N(m₀, S₀)): with A = S₁⁻¹,
m(t) = m₁ + e^{-At}(m₀ - m₁), Σ(t) = S₁ + e^{-At}(S₀ - S₁)e^{-At};
the transport potential is φ = log(ρ_t/π) (velocity -∇φ).

bridge (ρ₀, ρ₁ Gaussian): Benamou–Brenier for ν = 0, the Gaussian
Schrödinger bridge for ν > 0; both in the block "bridges between Gaussians".

lq: φ = ½η(t)|x - m̄|² + χ(t), η' = η²/λ - q, η(T) = q_T,
χ' = -νdη, χ(T) = 0; m̄ is the (constant) mean of ρ₀. Each Gaussian
component of ρ₀ moves as μ_k(t) = m̄ + P(t)(μ_k - m̄),
Σ_k(t) = P(t)²(Σ_k + 2ν I ∫₀ᵗ P⁻²), P(t) = exp(-∫₀ᵗ η/λ).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import integrate, linalg

from .distributions import Distribution, Gaussian, GaussianMixture
from .problem import FixedTerminal, KLTerminal, LQCoupling, LQTerminal, MFGProblem
from .solution import MFGSolution, package_versions

__all__ = [
    "ClosedForm",
    "OTFlowGaussian",
    "OTFlowEntropicGaussian",
    "otflow_entropic_terminal_gaussian",
    "SGMExact",
    "WGFGaussian",
    "LQExact",
    "closed_form",
    "solve_exact",
    "otflow_terminal_gaussian",
    "w2_gaussian",
    "mccann_gaussian",
    "NoClosedForm",
    "GaussianBridge",
    "BenamouBrenierGaussian",
    "SchrodingerBridgeGaussian",
    "schrodinger_bridge_map",
    "bridge_closed_form",
]


class NoClosedForm(ValueError):
    """The problem has no closed form in mfglab (the message says why)."""


class ClosedForm:
    """Interface: ρ, φ, v* on points (..., d) at time t, and the law ρ_t."""

    problem: MFGProblem

    def law(self, t: float) -> Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def rho(self, x, t: float):
        return self.law(t).pdf(x)

    def phi(self, x, t: float):  # pragma: no cover - abstract
        raise NotImplementedError

    def velocity(self, x, t: float):  # pragma: no cover - abstract
        raise NotImplementedError


def _single_gaussian(law: Distribution, label: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(law, GaussianMixture) and law.n_components == 1):
        raise NoClosedForm(f"{label} must be a single Gaussian for this closed form (got {law!r})")
    return law.means[0].copy(), law.covs[0].copy()


def _common_eigenbasis(S0: np.ndarray, S1: np.ndarray) -> np.ndarray:
    """Orthogonal Q diagonalising both S0 and S1 (they must commute)."""
    if not np.allclose(S0 @ S1, S1 @ S0, atol=1e-12 * max(1.0, np.abs(S0).max() * np.abs(S1).max())):
        raise NoClosedForm("data and reference covariances do not commute; the Gaussian closed form needs a common eigenbasis")
    # A generic combination has the common eigenvectors (distinct eigenvalues).
    _, Q = np.linalg.eigh(S0 + math.pi * S1)
    return Q


def otflow_terminal_gaussian(m0, s0, m1, s1, tau):
    """Per-direction W2-proximal point of KL(·‖N(m1, s1²)) from N(m0, s0²).

    Minimises (m - m0)²/(2τ) + (s - s0)²/(2τ) + KL(N(m, s²)‖N(m1, s1²)).
    Arrays broadcast; returns (m_T, s_T).
    """
    m0, s0, m1, s1 = (np.asarray(v, dtype=float) for v in (m0, s0, m1, s1))
    v1 = s1 * s1
    mT = (m0 * v1 + tau * m1) / (v1 + tau)
    sT = (s0 * v1 + np.sqrt(s0 * s0 * v1 * v1 + 4.0 * tau * v1 * (v1 + tau))) / (2.0 * (v1 + tau))
    return mT, sT


class OTFlowGaussian(ClosedForm):
    """otflow with Gaussian data and reference, ν = 0 (see module docstring)."""

    def __init__(self, problem: MFGProblem):
        if problem.family != "otflow":
            raise NoClosedForm(f"OTFlowGaussian is for the otflow family (got {problem.family})")
        if problem.nu != 0.0:
            raise NoClosedForm(f"OTFlowGaussian needs nu = 0 (got nu={problem.nu}); nu > 0 is OTFlowEntropicGaussian")
        self.problem = problem
        m0, S0 = _single_gaussian(problem.rho0, "the data")
        m1, S1 = _single_gaussian(problem.reference, "the reference")
        Q = _common_eigenbasis(S0, S1)
        self.Q = Q
        self.lam = problem.lam
        self.T = problem.T
        tau = problem.T / problem.lam
        z0, z1 = Q.T @ m0, Q.T @ m1
        s0 = np.sqrt(np.diag(Q.T @ S0 @ Q))
        s1 = np.sqrt(np.diag(Q.T @ S1 @ Q))
        zT, sT = otflow_terminal_gaussian(z0, s0, z1, s1, tau)
        self.z0, self.s0, self.zT, self.sT, self.z1, self.s1 = z0, s0, zT, sT, z1, s1
        # g in eigen-coordinates: Σ_j ½A z² + B z + C, plus 1.
        self.A = 1.0 / s1**2 - 1.0 / sT**2
        self.B = zT / sT**2 - z1 / s1**2
        self.C = -(zT**2) / (2 * sT**2) + z1**2 / (2 * s1**2) + np.log(s1 / sT)
        if np.any(1.0 + self.A * self.T / self.lam <= 0):
            raise NoClosedForm("the quadratic HJB solution blows up before t = 0 (1 + A T/λ <= 0)")

    def _z(self, x):
        x = np.asarray(x, dtype=float)
        if self.problem.dim == 1 and (x.ndim == 0 or x.shape[-1] != 1):
            x = x[..., None]
        return x @ self.Q  # z = Qᵀ x, row-wise

    def moments(self, t: float):
        """Mean and covariance of ρ_t in the original coordinates."""
        a = t / self.T
        z = self.z0 + a * (self.zT - self.z0)
        s = self.s0 + a * (self.sT - self.s0)
        return self.Q @ z, self.Q @ np.diag(s**2) @ self.Q.T

    def law(self, t: float) -> GaussianMixture:
        m, S = self.moments(t)
        return Gaussian(m, S)

    def _r(self, t):
        return 1.0 / (1.0 + self.A * (self.T - t) / self.lam)

    def phi(self, x, t: float):
        z = self._z(x)
        r = self._r(t)
        terms = 0.5 * self.A * r * z**2 + self.B * r * z - self.B**2 * (self.T - t) * r / (2 * self.lam) + self.C
        return 1.0 + terms.sum(-1)

    def velocity(self, x, t: float):
        z = self._z(x)
        r = self._r(t)
        grad_z = self.A * r * z + self.B * r
        return -(grad_z @ self.Q.T) / self.lam

    def terminal_law(self) -> GaussianMixture:
        return self.law(self.T)


def otflow_entropic_terminal_gaussian(m0, s0, m1, s1, tau, v):
    """Per-direction entropic JKO step of KL(·‖N(m1, s1²)) from N(m0, s0²) (see module docstring).

    Minimises over Y = αX + β + N(0, w): (m − m0)²/(2τ) + [(α−1)² s0² + w]/(2τ) − (ε/2) log w
    + KL(N(m, α²s0² + w) ‖ N(m1, s1²)) with ε = v/τ. Arrays broadcast; returns (m_T, s_T, α).
    """
    m0, s0, m1, s1 = (np.asarray(x, dtype=float) for x in (m0, s0, m1, s1))
    mT, _ = otflow_terminal_gaussian(m0, s0, m1, s1, tau)
    q = 1.0 / tau + 1.0 / (s1 * s1)
    A2 = q * tau * s0 * s0
    A1 = q * tau * v - s0 * s0
    A0 = -(tau + v)
    alpha = (-A1 + np.sqrt(A1 * A1 - 4.0 * A2 * A0)) / (2.0 * A2)
    sT = np.sqrt(alpha * alpha * s0 * s0 + alpha * v)
    return mT, sT, alpha


class OTFlowEntropicGaussian(OTFlowGaussian):
    """otflow with Gaussian data and reference, ν > 0: the Schrödinger half-bridge (module docstring)."""

    def __init__(self, problem: MFGProblem):
        if problem.family != "otflow":
            raise NoClosedForm(f"OTFlowEntropicGaussian is for the otflow family (got {problem.family})")
        if not problem.nu > 0.0:
            raise NoClosedForm(f"OTFlowEntropicGaussian needs nu > 0 (got nu={problem.nu}); use OTFlowGaussian")
        self.problem = problem
        m0, S0 = _single_gaussian(problem.rho0, "the data")
        m1, S1 = _single_gaussian(problem.reference, "the reference")
        Q = _common_eigenbasis(S0, S1)
        self.Q, self.lam, self.T, self.nu = Q, problem.lam, problem.T, problem.nu
        tau = problem.T / problem.lam
        self.v = 2.0 * problem.nu * problem.T
        z0, z1 = Q.T @ m0, Q.T @ m1
        s0 = np.sqrt(np.diag(Q.T @ S0 @ Q))
        s1 = np.sqrt(np.diag(Q.T @ S1 @ Q))
        zT, sT, alpha = otflow_entropic_terminal_gaussian(z0, s0, z1, s1, tau, self.v)
        self.z0, self.s0, self.zT, self.sT, self.z1, self.s1, self.alpha = z0, s0, zT, sT, z1, s1, alpha
        self.A = 1.0 / s1**2 - 1.0 / sT**2
        self.B = zT / sT**2 - z1 / s1**2
        self.C = -(zT**2) / (2 * sT**2) + z1**2 / (2 * s1**2) + np.log(s1 / sT)
        if np.any(1.0 + self.A * self.T / self.lam <= 0):
            raise NoClosedForm("the quadratic HJB solution blows up before t = 0 (1 + A T/λ <= 0)")

    def moments(self, t: float):
        """Mean and covariance of the bridge marginal ρ_t in the original coordinates."""
        r = t / self.T
        z = self.z0 + r * (self.zT - self.z0)
        var = ((1 - r) ** 2 * self.s0**2 + r**2 * self.sT**2 + 2 * r * (1 - r) * self.alpha * self.s0**2
               + self.v * r * (1 - r))
        return self.Q @ z, self.Q @ np.diag(var) @ self.Q.T

    def phi(self, x, t: float):
        base = super().phi(x, t)
        return base + self.nu * self.lam * np.log1p(self.A * (self.T - t) / self.lam).sum()

    def probability_flow_velocity(self, x, t: float):
        """−∇φ/λ − ν∇log ρ_t: the velocity of the deterministic flow with the same marginals.

        :meth:`velocity` is the optimal control, the drift of the diffusion; an ODE
        model (a CNF) that reproduces ρ_t has this velocity instead.
        """
        return self.velocity(x, t) - self.nu * self.law(t).score(self._z(x) @ self.Q.T)


class SGMExact(ClosedForm):
    """sgm: φ = -log η(·, T - t), ρ_t = η_{T-t}, v* = β ∇log η."""

    def __init__(self, problem: MFGProblem):
        if problem.family != "sgm":
            raise NoClosedForm(f"SGMExact is for the sgm family (got {problem.family})")
        self.problem = problem
        self.beta = float(problem.params["beta"])
        self.data = problem.data
        self.T = problem.T

    def law(self, t: float) -> Distribution:
        s = self.T - t
        if s <= 0:
            return self.data
        return self.data.ou_marginal(s, self.beta)

    def phi(self, x, t: float):
        return -self.law(t).logpdf(x)

    def score(self, x, t: float):
        """∇log η(x, T - t)."""
        return self.law(t).score(x)

    def velocity(self, x, t: float):
        return self.beta * self.score(x, t)


class WGFGaussian(ClosedForm):
    """wgf of KL(·‖N(m₁, S₁)) from N(m₀, S₀) (see module docstring)."""

    def __init__(self, problem: MFGProblem):
        if problem.family != "wgf":
            raise NoClosedForm(f"WGFGaussian is for the wgf family (got {problem.family})")
        self.problem = problem
        self.m0, self.S0 = _single_gaussian(problem.rho0, "the initial law")
        self.m1, self.S1 = _single_gaussian(problem.reference, "the reference π")
        self.A = np.linalg.inv(self.S1)

    def moments(self, t: float):
        E = linalg.expm(-self.A * t)
        m = self.m1 + E @ (self.m0 - self.m1)
        S = self.S1 + E @ (self.S0 - self.S1) @ E.T
        return m, 0.5 * (S + S.T)

    def law(self, t: float) -> GaussianMixture:
        m, S = self.moments(t)
        return Gaussian(m, S)

    def phi(self, x, t: float):
        return self.law(t).logpdf(x) - self.problem.reference.logpdf(x)

    def velocity(self, x, t: float):
        return -(self.law(t).score(x) - self.problem.reference.score(x))


class LQExact(ClosedForm):
    """lq with a Gaussian-mixture ρ₀ (see module docstring)."""

    def __init__(self, problem: MFGProblem):
        if problem.family != "lq" and not isinstance(problem.coupling, LQCoupling):
            raise NoClosedForm(f"LQExact is for the lq family (got {problem.family})")
        if not isinstance(problem.rho0, GaussianMixture):
            raise NoClosedForm("the lq closed form needs a Gaussian-mixture initial law")
        if problem.drift is not None or problem.running_cost != 0.0:
            raise NoClosedForm("the lq closed form has b = 0 and c = 0")
        self.problem = problem
        self.q = problem.coupling.q
        self.qT = problem.terminal.qT
        self.lam, self.nu, self.T = problem.lam, problem.nu, problem.T
        self.mbar = problem.rho0.mean()
        self._var_cache: dict = {}

    def eta(self, t):
        """Riccati η(t): η' = η²/λ - q, η(T) = q_T."""
        t = np.asarray(t, dtype=float)
        q, qT, lam, T = self.q, self.qT, self.lam, self.T
        if q == 0.0:
            return qT / (1.0 + qT * (T - t) / lam)
        k = math.sqrt(q * lam)
        R = (qT - k) / (qT + k)
        E = np.exp(-2.0 * k * (T - t) / lam)
        return k * (1.0 + R * E) / (1.0 - R * E)

    def int_eta(self, t):
        """∫_t^T η(s) ds (closed form)."""
        t = np.asarray(t, dtype=float)
        q, qT, lam, T = self.q, self.qT, self.lam, self.T
        if q == 0.0:
            return lam * np.log1p(qT * (T - t) / lam)
        k = math.sqrt(q * lam)
        R = (qT - k) / (qT + k)
        E = np.exp(-2.0 * k * (T - t) / lam)
        return k * (T - t) - lam * np.log((1.0 - R) / (1.0 - R * E))

    def P(self, t):
        """exp(-∫₀ᵗ η/λ): the contraction of deviations from the mean."""
        return np.exp(-(self.int_eta(0.0) - self.int_eta(t)) / self.lam)

    def _noise_integral(self, t: float) -> float:
        if self.nu == 0.0 or t == 0.0:
            return 0.0
        key = float(t)
        if key not in self._var_cache:
            val, _ = integrate.quad(lambda s: float(self.P(s)) ** -2, 0.0, t, epsabs=1e-14, epsrel=1e-12)
            self._var_cache[key] = val
        return self._var_cache[key]

    def law(self, t: float) -> GaussianMixture:
        rho0 = self.problem.rho0
        P = float(self.P(t))
        d = rho0.dim
        means = self.mbar + P * (rho0.means - self.mbar)
        covs = P * P * (rho0.covs + 2.0 * self.nu * self._noise_integral(t) * np.eye(d))
        return GaussianMixture(rho0.weights, means, covs)

    def _x(self, x):
        x = np.asarray(x, dtype=float)
        if self.problem.dim == 1 and (x.ndim == 0 or x.shape[-1] != 1):
            x = x[..., None]
        return x

    def chi(self, t):
        """χ(t) = ν d ∫_t^T η."""
        return self.nu * self.problem.dim * self.int_eta(t)

    def phi(self, x, t: float):
        x = self._x(x)
        return 0.5 * self.eta(t) * ((x - self.mbar) ** 2).sum(-1) + self.chi(t)

    def velocity(self, x, t: float):
        x = self._x(x)
        return -self.eta(t) * (x - self.mbar) / self.lam


def closed_form(problem: MFGProblem) -> ClosedForm:
    """The closed form that applies to ``problem``; raises NoClosedForm otherwise."""
    fam = problem.family
    if fam == "otflow" and isinstance(problem.terminal, KLTerminal):
        return OTFlowEntropicGaussian(problem) if problem.nu > 0 else OTFlowGaussian(problem)
    if fam == "sgm" and isinstance(problem.terminal, FixedTerminal):
        return SGMExact(problem)
    if fam == "wgf":
        return WGFGaussian(problem)
    if fam == "lq" and isinstance(problem.terminal, LQTerminal):
        return LQExact(problem)
    if fam == "bridge":
        return bridge_closed_form(problem)
    raise NoClosedForm(f"no closed form for family {fam!r}; closed forms exist for otflow (Gaussian, ν ≥ 0), "
                       "sgm (any data law here), wgf (Gaussian), lq (Gaussian mixture) and bridge (Gaussian)")


def solve_exact(problem: MFGProblem, n=None, nt=None, **_ignored) -> MFGSolution:
    """Sample the closed form on the problem's grid (method ``"exact"``)."""
    t0 = time.perf_counter()
    cf = closed_form(problem)
    grid = problem.grid(n=n, nt=nt)
    pts = grid.points()
    rho = np.stack([cf.rho(pts, t) for t in grid.t])
    phi = np.stack([cf.phi(pts, t) for t in grid.t])
    extras = {}
    if isinstance(cf, SGMExact):
        extras["score"] = np.stack([cf.score(pts, t) for t in grid.t])
    meta = {
        "method": "exact",
        "closed_form": type(cf).__name__,
        "problem": problem.describe(),
        "grid": grid.to_dict(),
        "mass_outside_box": [float(cf.law(t).mass_outside(grid.domain)) for t in grid.t]
        if isinstance(cf.law(0.0), GaussianMixture) else None,
        "wall_time_s": time.perf_counter() - t0,
        "versions": package_versions(),
    }
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, extras=extras, status="exact")


# the two-law closed forms live in pde/exact_bridge.py; re-exported here (imported last: it builds on ClosedForm)
from .exact_bridge import (BenamouBrenierGaussian, GaussianBridge, SchrodingerBridgeGaussian,  # noqa: E402
                           bridge_closed_form, mccann_gaussian, schrodinger_bridge_map, w2_gaussian)
