"""Closed forms between two Gaussian laws: Benamou–Brenier (McCann interpolation, ν = 0) and the
Schrödinger bridge (ν > 0), the truths of the ``bridge`` family; also W₂ between Gaussians.

Split from :mod:`pde.exact` (which re-exports every name here) so that module keeps the
single-law closed forms; each flow is verified by substitution into HJB and FP in
``tests/test_exact.py`` and ``tests/test_exact_bridge.py``.
"""

from __future__ import annotations

import numpy as np

from .distributions import Gaussian, GaussianMixture
from .exact import ClosedForm, NoClosedForm, _single_gaussian
from .problem import MFGProblem

__all__ = ["w2_gaussian", "mccann_gaussian", "GaussianBridge", "BenamouBrenierGaussian", "SchrodingerBridgeGaussian",
           "schrodinger_bridge_map", "bridge_closed_form"]


# --------------------------------------------------------------------------
# Benamou–Brenier between Gaussians
# --------------------------------------------------------------------------


def _sqrtm_psd(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def w2_gaussian(m0, S0, m1, S1) -> float:
    """W₂² between N(m0, S0) and N(m1, S1): |m0-m1|² + tr(S0 + S1 - 2(S1^½ S0 S1^½)^½)."""
    m0, m1 = np.atleast_1d(np.asarray(m0, float)), np.atleast_1d(np.asarray(m1, float))
    S0, S1 = np.atleast_2d(np.asarray(S0, float)), np.atleast_2d(np.asarray(S1, float))
    r1 = _sqrtm_psd(S1)
    cross = _sqrtm_psd(r1 @ S0 @ r1)
    return float(((m0 - m1) ** 2).sum() + np.trace(S0 + S1 - 2.0 * cross))


class mccann_gaussian:
    """McCann interpolation between N(m0, S0) (t = 0) and N(m1, S1) (t = 1).

    The OT map is x ↦ m1 + M(x - m0) with M = S0^{-½}(S0^½ S1 S0^½)^½ S0^{-½};
    ρ_t = N(m_t, K_t S0 K_t), K_t = (1 - t)I + tM, and the velocity is
    v(x, t) = (M - I) K_t⁻¹ (x - m_t) + (m1 - m0) = -∇φ with the
    Benamou–Brenier potential solving -∂tφ + ½|∇φ|² = 0.
    """

    def __init__(self, m0, S0, m1, S1):
        self.m0 = np.atleast_1d(np.asarray(m0, float))
        self.m1 = np.atleast_1d(np.asarray(m1, float))
        self.S0 = np.atleast_2d(np.asarray(S0, float))
        self.S1 = np.atleast_2d(np.asarray(S1, float))
        r0 = _sqrtm_psd(self.S0)
        r0i = np.linalg.inv(r0)
        self.M = r0i @ _sqrtm_psd(r0 @ self.S1 @ r0) @ r0i
        self.d = self.m0.size

    def _K(self, t):
        return (1.0 - t) * np.eye(self.d) + t * self.M

    def moments(self, t: float):
        K = self._K(t)
        return (1.0 - t) * self.m0 + t * self.m1, K @ self.S0 @ K.T

    def law(self, t: float) -> GaussianMixture:
        m, S = self.moments(t)
        return Gaussian(m, S)

    def velocity(self, x, t: float):
        x = np.asarray(x, float)
        if self.d == 1 and (x.ndim == 0 or x.shape[-1] != 1):
            x = x[..., None]
        m = (1.0 - t) * self.m0 + t * self.m1
        G = (self.M - np.eye(self.d)) @ np.linalg.inv(self._K(t))
        return (x - m) @ G.T + (self.m1 - self.m0)

    def phi(self, x, t: float):
        """Potential with v = -∇φ, φ(m_t, t) = -|m1 - m0|² t / 2."""
        x = np.asarray(x, float)
        if self.d == 1 and (x.ndim == 0 or x.shape[-1] != 1):
            x = x[..., None]
        m = (1.0 - t) * self.m0 + t * self.m1
        G = (self.M - np.eye(self.d)) @ np.linalg.inv(self._K(t))
        G = 0.5 * (G + G.T)  # symmetric (M is SPD and commutes with K_t)
        y = x - m
        dm = self.m1 - self.m0
        # -∂tφ + ½|∇φ|² = 0 with ∇φ = -(G y + dm), Ġ = -G²: the y-free part is -½|dm|² t.
        return -0.5 * np.einsum("...i,ij,...j->...", y, G, y) - y @ dm - 0.5 * (dm @ dm) * t

    def w2sq(self) -> float:
        return w2_gaussian(self.m0, self.S0, self.m1, self.S1)


# --------------------------------------------------------------------------
# bridges between Gaussians: Benamou–Brenier (ν = 0), Schrödinger (ν > 0)
# --------------------------------------------------------------------------
#
# Both bridges from N(m₀, S₀) to N(m₁, S₁) on [0, T] are Gaussian flows of one
# form. With r = t/T, a symmetric positive definite A and P_r = (1 - r)I + rA:
#
#     m_t = (1 - r) m₀ + r m₁,    Σ_t = P_r S₀ P_r + 2νt P_r,
#     v*(x, t) = ṁ + K_t (x - m_t),   ṁ = (m₁ - m₀)/T,   K_t = (A - I) P_r⁻¹ / T,
#     φ(x, t) = -λ[½ yᵀK_t y + ṁ·y] + νλ log det P_r - λ|ṁ|² t/2,   y = x - m_t.
#
# Substituting: K̇ = -K² (the quadratic part of the HJB), ṁ constant (the linear
# part) and χ̇ = νλ tr K - λ|ṁ|²/2 (the constant part, tr K = d/dt log det P_r);
# the FP equation for Gaussians, Σ̇ = KΣ + ΣK + 2νI, holds because Σ_T = S₁ is
# exactly A S₀ A + 2νT A = S₁ (below). A = S₀⁻¹C, C = Cov(X₀, X_T), the cross
# covariance of the optimal static coupling: with v = 2νT the static problem is
# min E|X₀ - X_T|²/(2v) + I(X₀; X_T) (entropic OT, Girsanov), whose stationarity
# condition v S₀⁻¹C = S₁ - CᵀS₀⁻¹C has the solution (Bunne et al. 2023; Janati
# et al. 2020)
#
#     A = S₀^{-½} [½ (4 S₀^½ S₁ S₀^½ + v² I)^½ - (v/2) I] S₀^{-½}   (SPD),
#
# in 1D Cov = (√(v² + 4s₀²s₁²) - v)/2 (DESIGN §4). ν = 0 gives McCann's map
# A = M = S₀^{-½}(S₀^½ S₁ S₀^½)^½ S₀^{-½}. Kinetic energy (eigenvalues a_j of A):
#
#     ∫∫ (λ/2)|v*|²ρ = (λ/2T)[|m₁ - m₀|² + tr((A - I)S₀(A - I)) + v Σ_j (a_j - 1 - log a_j)],
#
# = (λ/2T)·W₂² for ν = 0, = 2νλ·KL(P‖R) for ν > 0 (R: Brownian motion of
# diffusion 2ν started at ρ₀).


class GaussianBridge(ClosedForm):
    """The Gaussian bridge flow of a map A from N(m0, S0) at t = 0 (see the block comment above).

    With A from :func:`schrodinger_bridge_map` it is the bridge to N(m1, S1);
    the FD planning route also uses it, for moment-matched Gaussians, as its
    starting point.
    """

    def __init__(self, m0, S0, m1, S1, T: float, nu: float, lam: float, A: np.ndarray, problem=None):
        self.problem = problem
        self.m0, self.m1 = np.atleast_1d(np.asarray(m0, float)), np.atleast_1d(np.asarray(m1, float))
        self.S0, self.S1 = np.atleast_2d(np.asarray(S0, float)), np.atleast_2d(np.asarray(S1, float))
        self.T, self.nu, self.lam = float(T), float(nu), float(lam)
        self.d = self.m0.size
        self.A = A
        self.a, self.Q = np.linalg.eigh(A)
        if np.any(self.a <= 0):
            raise NoClosedForm(f"the bridge map has a non-positive eigenvalue ({self.a.min():.3g})")
        self.mdot = (self.m1 - self.m0) / self.T

    def _x(self, x):
        x = np.asarray(x, dtype=float)
        if self.d == 1 and (x.ndim == 0 or x.shape[-1] != 1):
            x = x[..., None]
        return x

    def _p(self, t: float):
        """Eigenvalues of P_r = (1 - r)I + rA (common eigenbasis Q with A)."""
        r = t / self.T
        return (1.0 - r) + r * self.a

    def K(self, t: float) -> np.ndarray:
        """K_t = (A - I)P_r⁻¹/T (symmetric): v* = ṁ + K_t (x - m_t)."""
        return (self.Q * ((self.a - 1.0) / (self.T * self._p(t)))) @ self.Q.T

    def moments(self, t: float):
        r = t / self.T
        P = (self.Q * self._p(t)) @ self.Q.T
        S = P @ self.S0 @ P + 2.0 * self.nu * t * P
        return (1.0 - r) * self.m0 + r * self.m1, 0.5 * (S + S.T)

    def law(self, t: float) -> GaussianMixture:
        m, S = self.moments(t)
        return Gaussian(m, S)

    def coupling_cov(self) -> np.ndarray:
        """C = Cov(X₀, X_T) = S₀A of the optimal static coupling."""
        return self.S0 @ self.A

    def velocity(self, x, t: float):
        y = self._x(x) - self.moments(t)[0]
        return y @ self.K(t).T + self.mdot

    def phi(self, x, t: float):
        y = self._x(x) - self.moments(t)[0]
        quad = 0.5 * np.einsum("...i,ij,...j->...", y, self.K(t), y) + y @ self.mdot
        chi = self.nu * self.lam * float(np.log(self._p(t)).sum()) - 0.5 * self.lam * float(self.mdot @ self.mdot) * t
        return -self.lam * quad + chi

    def kinetic_energy(self) -> float:
        """∫₀ᵀ∫ (λ/2)|v*|²ρ dx dt (closed form, see the block comment)."""
        dm = self.m1 - self.m0
        B = self.A - np.eye(self.d)
        v = 2.0 * self.nu * self.T
        return float(self.lam / (2.0 * self.T) * (dm @ dm + np.trace(B @ self.S0 @ B)
                                                   + v * np.sum(self.a - 1.0 - np.log(self.a))))


class BenamouBrenierGaussian(GaussianBridge):
    """bridge, ν = 0: McCann's interpolation with the Hopf–Lax quadratic potential.

    A = M, the optimal map's matrix; ρ₀ = ρ₁ gives A = I and v* = 0 exactly.
    """

    def __init__(self, problem: MFGProblem):
        if problem.family != "bridge" or problem.nu != 0.0:
            raise NoClosedForm(f"BenamouBrenierGaussian is for the bridge family with nu = 0 (got {problem.family}, "
                               f"nu={problem.nu})")
        m0, S0 = _single_gaussian(problem.rho0, "rho0")
        m1, S1 = _single_gaussian(problem.target, "rho1 (the target)")
        A = np.eye(m0.size) if np.array_equal(S0, S1) else mccann_gaussian(m0, S0, m1, S1).M
        super().__init__(m0, S0, m1, S1, problem.T, 0.0, problem.lam, 0.5 * (A + A.T), problem)

    def w2sq(self) -> float:
        return w2_gaussian(self.m0, self.S0, self.m1, self.S1)


class SchrodingerBridgeGaussian(GaussianBridge):
    """bridge, ν > 0: the Gaussian Schrödinger bridge (Bunne, Hsieh, Cuturi & Krause 2023)."""

    def __init__(self, problem: MFGProblem):
        if problem.family != "bridge" or not problem.nu > 0.0:
            raise NoClosedForm(f"SchrodingerBridgeGaussian is for the bridge family with nu > 0 (got "
                               f"{problem.family}, nu={problem.nu})")
        m0, S0 = _single_gaussian(problem.rho0, "rho0")
        m1, S1 = _single_gaussian(problem.target, "rho1 (the target)")
        super().__init__(m0, S0, m1, S1, problem.T, problem.nu, problem.lam,
                         schrodinger_bridge_map(S0, S1, 2.0 * problem.nu * problem.T), problem)

    def static_kl(self) -> float:
        """KL(π‖R₀T) of the static coupling π against the reference's (X₀, X₀ + √v Z)."""
        d, v = self.d, 2.0 * self.nu * self.T
        C = self.coupling_cov()
        Sp = np.block([[self.S0, C], [C.T, self.S1]])
        Sr = np.block([[self.S0, self.S0], [self.S0, self.S0 + v * np.eye(d)]])
        dm = np.concatenate([np.zeros(d), self.m1 - self.m0])
        Sri = np.linalg.inv(Sr)
        return float(0.5 * (np.trace(Sri @ Sp) + dm @ Sri @ dm - 2 * d
                            + np.linalg.slogdet(Sr)[1] - np.linalg.slogdet(Sp)[1]))


def schrodinger_bridge_map(S0, S1, v: float) -> np.ndarray:
    """A = S₀^{-½}[½(4 S₀^½ S₁ S₀^½ + v² I)^½ - (v/2)I]S₀^{-½}, v = 2νT (see the block comment)."""
    S0, S1 = np.atleast_2d(np.asarray(S0, float)), np.atleast_2d(np.asarray(S1, float))
    d = S0.shape[0]
    r0 = _sqrtm_psd(S0)
    r0i = np.linalg.inv(r0)
    D = _sqrtm_psd(4.0 * r0 @ S1 @ r0 + v * v * np.eye(d))
    A = r0i @ (0.5 * D - 0.5 * v * np.eye(d)) @ r0i
    return 0.5 * (A + A.T)


def bridge_closed_form(problem: MFGProblem) -> GaussianBridge:
    """The Gaussian bridge of a ``bridge`` problem: Benamou–Brenier (ν = 0) or Schrödinger (ν > 0)."""
    return BenamouBrenierGaussian(problem) if problem.nu == 0.0 else SchrodingerBridgeGaussian(problem)
