"""Probability laws used as data, references and initial densities.

Every law has ``dim``, ``pdf``, ``logpdf``, ``score`` (∇ log p), seeded
``sample(n, rng)``, ``mass_outside(domain)`` (probability of leaving a box)
and ``ou_marginal(s, beta)``: the law of ``Y_s`` for the OU forward process
``dY = -β/2 Y ds + sqrt(β) dW`` started from it (DESIGN §3.2, §4).  The last
is exact for every law here, so the score-based family has closed forms on
the toys too.

Points are arrays of shape ``(..., d)``; densities come back with shape
``(...)`` and scores with shape ``(..., d)``.

The 2D toys are written as ``X = a·Y + σ·Z`` with ``Y`` the toy, ``Z`` a
standard normal and ``(a, σ) = (1, 0)`` for the toy itself, which is the
form the OU marginals take (``a = e^{-βs/2}``, ``σ² = 1 - e^{-βs}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import integrate, special

__all__ = [
    "Distribution",
    "GaussianMixture",
    "Gaussian",
    "Checkerboard",
    "Ring",
    "eight_gaussians",
    "TOYS",
    "make_toy",
    "from_dict",
]

_LOG2PI = math.log(2.0 * math.pi)


def _as_points(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if dim == 1 and (x.ndim == 0 or x.shape[-1] != 1):
        x = x[..., None]
    if x.shape[-1] != dim:
        raise ValueError(f"points have trailing size {x.shape[-1]}; expected the dimension {dim}")
    return x


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (got {type(rng).__name__}); "
            "use numpy.random.default_rng(seed) so runs are reproducible"
        )
    return rng


def _normalize_domain(domain, dim: int) -> np.ndarray:
    dom = np.asarray(domain, dtype=float)
    if dom.shape != (dim, 2):
        raise ValueError(f"domain has shape {dom.shape}; expected ({dim}, 2) = one [lo, hi] per dimension")
    return dom


class Distribution:
    """Base class: a probability law on R^d with analytic density."""

    dim: int

    def pdf(self, x):
        return np.exp(self.logpdf(x))

    def logpdf(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def mass_outside(self, domain) -> float:  # pragma: no cover
        raise NotImplementedError

    def ou_marginal(self, s: float, beta: float = 1.0) -> "Distribution":  # pragma: no cover
        raise NotImplementedError

    def mean(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def cov(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def support_box(self, tol: float = 1e-6) -> np.ndarray:
        """A box (dim, 2) outside which at most about ``tol`` of the mass lies.

        Used to tell users which domain they need; found by growing a box
        around the mean until :meth:`mass_outside` is below ``tol``.
        """
        m = self.mean()
        sd = np.sqrt(np.diag(self.cov()))
        for k in np.arange(2.0, 40.0, 0.25):
            box = np.stack([m - k * sd, m + k * sd], axis=1)
            if self.mass_outside(box) <= tol:
                return box
        return box

    def to_dict(self) -> dict:  # pragma: no cover
        raise NotImplementedError


# --------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------


def _ou_coefficients(s: float, beta: float) -> tuple[float, float]:
    if s < 0 or beta <= 0:
        raise ValueError(f"OU marginal needs s >= 0 and beta > 0 (got s={s}, beta={beta})")
    a = math.exp(-0.5 * beta * s)
    var = -math.expm1(-beta * s)  # 1 - e^{-βs}, accurate for small s
    return a, var


@dataclass(frozen=True, eq=False)
class GaussianMixture(Distribution):
    """Σ_k w_k N(μ_k, Σ_k) with full covariance matrices.

    Args:
        weights: (K,) non-negative, summing to one (within 1e-9).
        means: (K, d).
        covs: (K, d, d) symmetric positive definite.
    """

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    _chol: np.ndarray = field(init=False, repr=False)
    _prec: np.ndarray = field(init=False, repr=False)
    _logdet: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        w = np.atleast_1d(np.asarray(self.weights, dtype=float))
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"weights must be a non-empty list of numbers (got {self.weights!r})")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"weights must be finite and non-negative (got {w.tolist()})")
        if abs(w.sum() - 1.0) > 1e-9:
            raise ValueError(f"weights sum to {w.sum():.12g}; expected 1 within 1e-9 (got {w.tolist()})")
        mu = np.asarray(self.means, dtype=float)
        if mu.ndim == 1:
            mu = mu[:, None]
        if mu.shape[0] != w.size:
            raise ValueError(f"{mu.shape[0]} means for {w.size} weights; expected one mean per component")
        d = mu.shape[1]
        cov = np.asarray(self.covs, dtype=float)
        if cov.ndim == 1 and d == 1:
            cov = cov[:, None, None]
        if cov.shape != (w.size, d, d):
            raise ValueError(f"covs have shape {cov.shape}; expected ({w.size}, {d}, {d}) (full matrices)")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
            raise ValueError("means and covs must be finite")
        chol = np.empty_like(cov)
        for k in range(w.size):
            if not np.allclose(cov[k], cov[k].T, rtol=0, atol=1e-12 * max(1.0, np.abs(cov[k]).max())):
                raise ValueError(f"covariance {k} is not symmetric: {cov[k].tolist()}")
            ev = np.linalg.eigvalsh(cov[k])
            if ev.min() <= 0:
                raise ValueError(
                    f"covariance {k} = {cov[k].tolist()} is not positive definite "
                    f"(smallest eigenvalue {ev.min():.3g}); expected a symmetric positive-definite matrix"
                )
            chol[k] = np.linalg.cholesky(cov[k])
        prec = np.linalg.inv(cov)
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "covs", cov)
        object.__setattr__(self, "_chol", chol)
        object.__setattr__(self, "_prec", prec)
        object.__setattr__(self, "_logdet", logdet)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.weights.size

    def _component_logpdf(self, x: np.ndarray) -> np.ndarray:
        """log w_k + log N(x; μ_k, Σ_k), shape (..., K)."""
        diff = x[..., None, :] - self.means  # (..., K, d)
        maha = np.einsum("...ki,kij,...kj->...k", diff, self._prec, diff)
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        return logw - 0.5 * (maha + self._logdet + self.dim * _LOG2PI)

    def logpdf(self, x):
        x = _as_points(x, self.dim)
        return special.logsumexp(self._component_logpdf(x), axis=-1)

    def responsibilities(self, x) -> np.ndarray:
        """Posterior component probabilities, shape (..., K)."""
        x = _as_points(x, self.dim)
        lc = self._component_logpdf(x)
        return np.exp(lc - special.logsumexp(lc, axis=-1, keepdims=True))

    def score(self, x):
        """∇ log p = -Σ_k r_k(x) Σ_k^{-1} (x - μ_k)."""
        x = _as_points(x, self.dim)
        r = self.responsibilities(x)
        diff = x[..., None, :] - self.means
        comp = -np.einsum("kij,...kj->...ki", self._prec, diff)
        return np.einsum("...k,...ki->...i", r, comp)

    def laplacian_logpdf(self, x):
        """Δ log p (used by the score-equation residuals)."""
        x = _as_points(x, self.dim)
        r = self.responsibilities(x)
        diff = x[..., None, :] - self.means
        comp = -np.einsum("kij,...kj->...ki", self._prec, diff)  # per-component scores
        s = np.einsum("...k,...ki->...i", r, comp)
        # Δ log p = Σ r_k (tr(-P_k) + |s_k|²) - |s|²
        tr = -np.trace(self._prec, axis1=1, axis2=2)
        return np.einsum("...k,...k->...", r, tr + (comp**2).sum(-1)) - (s**2).sum(-1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rng = _check_rng(rng)
        n = int(n)
        comp = rng.choice(self.n_components, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dim))
        return self.means[comp] + np.einsum("nij,nj->ni", self._chol[comp], z)

    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def cov(self) -> np.ndarray:
        m = self.mean()
        diff = self.means - m
        return np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum("k,ki,kj->ij", self.weights, diff, diff)

    def mass_outside(self, domain) -> float:
        """P(X ∉ box), computed with erfc so tiny tails stay accurate."""
        dom = _normalize_domain(domain, self.dim)
        total = 0.0
        for w, mu, cov in zip(self.weights, self.means, self.covs):
            if w == 0:
                continue
            total += w * _gaussian_mass_outside(mu, cov, dom)
        return float(min(max(total, 0.0), 1.0))

    def ou_marginal(self, s: float, beta: float = 1.0) -> "GaussianMixture":
        """Exact: μ_k e^{-βs/2}, Σ_k e^{-βs} + (1 - e^{-βs}) I."""
        a, var = _ou_coefficients(s, beta)
        eye = np.eye(self.dim)
        return GaussianMixture(self.weights, self.means * a, self.covs * a * a + var * eye)

    def marginal(self, axis: int) -> "GaussianMixture":
        """One-dimensional marginal along ``axis``."""
        return GaussianMixture(self.weights, self.means[:, [axis]], self.covs[:, axis, axis][:, None, None])

    def to_dict(self) -> dict:
        return {
            "kind": "gaussian_mixture",
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covs": self.covs.tolist(),
        }

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, dim={self.dim})"


def Gaussian(mean, cov) -> GaussianMixture:
    """A single Gaussian N(mean, cov) (cov a matrix, or a scalar variance in 1D)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    cov = np.asarray(cov, dtype=float)
    if cov.ndim == 0:
        cov = cov * np.eye(mean.size)
    return GaussianMixture([1.0], mean[None, :], cov[None, :, :])


def _log_ndtr_diff(zl, zh):
    """log(Φ(zl) - Φ(zh)) for zl > zh, stable in both tails."""
    zl, zh = np.broadcast_arrays(np.asarray(zl, float), np.asarray(zh, float))
    upper = zh > 0  # both in the upper tail: use survival functions Φ(-z)
    a = np.where(upper, special.log_ndtr(-zh), special.log_ndtr(zl))
    b = np.where(upper, special.log_ndtr(-zl), special.log_ndtr(zh))
    with np.errstate(divide="ignore"):
        return a + np.log1p(-np.exp(b - a))


def _norm_sf(z):
    return 0.5 * special.erfc(z / math.sqrt(2.0))


def _gaussian_mass_outside(mu: np.ndarray, cov: np.ndarray, dom: np.ndarray) -> float:
    d = mu.size
    sd = np.sqrt(np.diag(cov))
    lo, hi = dom[:, 0], dom[:, 1]
    if d == 1:
        return float(_norm_sf((hi[0] - mu[0]) / sd[0]) + _norm_sf((mu[0] - lo[0]) / sd[0]))
    if d == 2:
        # P(X1 ∉ I1) + ∫_{I1} p(x1) P(X2 ∉ I2 | x1) dx1, each term with erfc.
        out1 = _norm_sf((hi[0] - mu[0]) / sd[0]) + _norm_sf((mu[0] - lo[0]) / sd[0])
        c = cov[0, 1] / cov[0, 0]
        csd = math.sqrt(max(cov[1, 1] - c * cov[0, 1], 0.0))

        def integrand(x1):
            p1 = math.exp(-0.5 * ((x1 - mu[0]) / sd[0]) ** 2) / (sd[0] * math.sqrt(2 * math.pi))
            m2 = mu[1] + c * (x1 - mu[0])
            if csd == 0.0:
                return p1 * float(m2 < lo[1] or m2 > hi[1])
            return p1 * (_norm_sf((hi[1] - m2) / csd) + _norm_sf((m2 - lo[1]) / csd))

        a = max(lo[0], mu[0] - 40 * sd[0])
        b = min(hi[0], mu[0] + 40 * sd[0])
        out2 = 0.0
        if b > a:
            out2, _ = integrate.quad(integrand, a, b, epsabs=1e-14, epsrel=1e-10, limit=200, points=[mu[0]] if a < mu[0] < b else None)
        return float(out1 + out2)
    # d > 2: union bound is an upper estimate; the solvers only use d <= 2.
    return float(sum(_norm_sf((hi[j] - mu[j]) / sd[j]) + _norm_sf((mu[j] - lo[j]) / sd[j]) for j in range(d)))


# --------------------------------------------------------------------------
# 2D toys with analytic densities
# --------------------------------------------------------------------------


def eight_gaussians(radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)) -> GaussianMixture:
    """Eight equal Gaussians on a circle (the FFJORD '8gaussians' toy, same scale)."""
    ang = np.arange(8) * (np.pi / 4.0)
    means = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    covs = np.broadcast_to(std**2 * np.eye(2), (8, 2, 2)).copy()
    return GaussianMixture(np.full(8, 1.0 / 8.0), means, covs)


@dataclass(frozen=True, eq=False)
class Checkerboard(Distribution):
    """Uniform law on the 8 dark squares of a 4×4 board of cells of side ``cell``.

    The board covers [-2c, 2c]² (c = ``cell``); square (i, j) (i, j = 0..3)
    is dark when i + j is even. The density is 1/(8c²) on dark squares.
    ``a`` and ``sigma`` give the law of a·Y + σ·Z (an OU marginal), whose
    density is a product of normal CDF differences, exact to round-off.
    """

    cell: float = 1.0
    a: float = 1.0
    sigma: float = 0.0

    dim = 2

    def __post_init__(self):
        if not (self.cell > 0 and self.a > 0 and self.sigma >= 0):
            raise ValueError(f"Checkerboard needs cell > 0, a > 0, sigma >= 0 (got {self.cell}, {self.a}, {self.sigma})")

    def _squares(self) -> np.ndarray:
        c = self.cell
        sq = []
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    sq.append((-2 * c + i * c, -2 * c + (i + 1) * c, -2 * c + j * c, -2 * c + (j + 1) * c))
        return np.asarray(sq)  # (8, 4): x_lo, x_hi, y_lo, y_hi

    def pdf(self, x):
        x = _as_points(x, 2)
        sq = self._squares()
        area = self.cell**2
        if self.sigma == 0.0:
            y = x / self.a
            inside = np.zeros(x.shape[:-1], dtype=bool)
            for xl, xh, yl, yh in sq:
                inside |= (y[..., 0] >= xl) & (y[..., 0] < xh) & (y[..., 1] >= yl) & (y[..., 1] < yh)
            return inside / (8.0 * area * self.a**2)
        a, s = self.a, self.sigma
        tot = np.zeros(x.shape[:-1])
        for xl, xh, yl, yh in sq:
            px = special.ndtr((x[..., 0] - a * xl) / s) - special.ndtr((x[..., 0] - a * xh) / s)
            py = special.ndtr((x[..., 1] - a * yl) / s) - special.ndtr((x[..., 1] - a * yh) / s)
            tot += px * py
        return tot / (8.0 * area * a * a)

    def _log_factors(self, x):
        """Per square k: log P_k(x) = log[(Φ(z_lo) - Φ(z_hi)) per axis], and ∂/∂x of it.

        Computed in log space (log_ndtr of the tail that is small), so the
        density and the score stay accurate far from the board, where the
        plain CDF difference underflows.
        """
        a, s = self.a, self.sigma
        logs, grads = [], []
        for xl, xh, yl, yh in self._squares():
            lp = np.zeros(x.shape[:-1])
            g = np.zeros(x.shape)
            for j, (lo, hi) in enumerate(((xl, xh), (yl, yh))):
                zl = (x[..., j] - a * lo) / s  # zl > zh
                zh = (x[..., j] - a * hi) / s
                ld = _log_ndtr_diff(zl, zh)
                lp += ld
                logphi = lambda z: -0.5 * z * z - 0.5 * _LOG2PI  # noqa: E731
                g[..., j] = (np.exp(logphi(zl) - ld) - np.exp(logphi(zh) - ld)) / s
            logs.append(lp)
            grads.append(g)
        return np.stack(logs, -1), np.stack(grads, -2)  # (..., 8), (..., 8, 2)

    def logpdf(self, x):
        x = _as_points(x, 2)
        if self.sigma == 0.0:
            with np.errstate(divide="ignore"):
                return np.log(self.pdf(x))
        lk, _ = self._log_factors(x)
        return special.logsumexp(lk, axis=-1) - math.log(8.0 * self.cell**2 * self.a**2)

    def score(self, x):
        """∇ log p; zero inside the squares when σ = 0 (undefined on edges)."""
        x = _as_points(x, 2)
        if self.sigma == 0.0:
            return np.zeros_like(x)
        lk, gk = self._log_factors(x)
        w = np.exp(lk - special.logsumexp(lk, axis=-1, keepdims=True))
        return np.einsum("...k,...kj->...j", w, gk)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rng = _check_rng(rng)
        sq = self._squares()
        k = rng.integers(0, 8, size=n)
        u = rng.random((n, 2))
        y = np.stack([sq[k, 0] + u[:, 0] * self.cell, sq[k, 2] + u[:, 1] * self.cell], axis=1)
        out = self.a * y
        if self.sigma > 0:
            out = out + self.sigma * rng.standard_normal((n, 2))
        return out

    def mean(self) -> np.ndarray:
        return self.a * self._squares().reshape(8, 2, 2).mean(axis=2).mean(axis=0)

    def cov(self) -> np.ndarray:
        sq = self._squares()
        c = np.stack([(sq[:, 0] + sq[:, 1]) / 2, (sq[:, 2] + sq[:, 3]) / 2], axis=1)
        m = c.mean(axis=0)
        within = self.cell**2 / 12.0 * np.eye(2)
        between = ((c - m).T @ (c - m)) / 8.0
        return self.a**2 * (within + between) + self.sigma**2 * np.eye(2)

    def mass_outside(self, domain) -> float:
        dom = _normalize_domain(domain, 2)
        a, s = self.a, self.sigma
        inside = 0.0
        for xl, xh, yl, yh in self._squares():
            fr = []
            for (lo_, hi_), (l, h) in zip(dom, ((xl, xh), (yl, yh))):
                if s == 0.0:
                    fr.append(max(0.0, min(hi_, a * h) - max(lo_, a * l)) / (a * (h - l)))
                else:
                    # P(lo <= a·U + σZ <= hi), U uniform on [l, h]: integrate the normal CDF.
                    g = lambda u: (special.ndtr((hi_ - a * u) / s) - special.ndtr((lo_ - a * u) / s))  # noqa: E731
                    val, _ = integrate.quad(g, l, h, epsabs=1e-15, epsrel=1e-12)
                    fr.append(val / (h - l))
            inside += fr[0] * fr[1] / 8.0
        return float(max(0.0, 1.0 - inside))

    def ou_marginal(self, s: float, beta: float = 1.0) -> "Checkerboard":
        a, var = _ou_coefficients(s, beta)
        return Checkerboard(self.cell, self.a * a, math.sqrt(self.sigma**2 * a * a + var))

    def to_dict(self) -> dict:
        return {"kind": "checkerboard", "cell": self.cell, "a": self.a, "sigma": self.sigma}


@dataclass(frozen=True, eq=False)
class Ring(Distribution):
    """Ring of radius R: density ∝ exp(-(|y| - R)² / (2 w²)) on R².

    With ``a``, ``sigma``: the law of a·Y + σ·Z, whose density is radial,

        η(ρ) = ∫₀^∞ p_Y(r) r e^{-(ρ - a r)²/(2σ²)} I0e(a r ρ/σ²) dr / σ²,   ρ = |x|,

    evaluated in log space by composite Gauss–Legendre quadrature in r on a
    table of radii, then interpolated by cubic Hermite splines with the exact
    derivative (relative error ~1e-10 on the default table).
    """

    radius: float = 2.0
    width: float = 0.2
    a: float = 1.0
    sigma: float = 0.0
    _norm: float = field(init=False, repr=False)

    dim = 2

    def __post_init__(self):
        if not (self.radius > 0 and self.width > 0 and self.a > 0 and self.sigma >= 0):
            raise ValueError(
                f"Ring needs radius > 0, width > 0, a > 0, sigma >= 0 (got {self.radius}, {self.width}, {self.a}, {self.sigma})"
            )
        R, w = self.radius, self.width
        # ∫_0^∞ r exp(-(r-R)²/(2w²)) dr = w² e^{-R²/2w²} + R w sqrt(π/2) (1 + erf(R/(w√2)))
        radial = w * w * math.exp(-R * R / (2 * w * w)) + R * w * math.sqrt(math.pi / 2) * (1 + math.erf(R / (w * math.sqrt(2))))
        object.__setattr__(self, "_norm", 2 * math.pi * radial)

    def _radial_nodes(self):
        R, w = self.radius, self.width
        lo, hi = max(0.0, R - 12 * w), R + 12 * w
        scale = w if self.sigma == 0 else min(w, self.sigma / self.a)
        n_panels = int(min(400, max(16, 0.5 * (hi - lo) / scale)))
        xg, wg = np.polynomial.legendre.leggauss(16)
        edges = np.linspace(lo, hi, n_panels + 1)
        mid = 0.5 * (edges[1:] + edges[:-1])
        half = 0.5 * (edges[1:] - edges[:-1])
        r = (mid[:, None] + half[:, None] * xg[None, :]).ravel()
        wr = (half[:, None] * wg[None, :]).ravel()
        return r, wr

    def _base_pdf_r(self, r):
        return np.exp(-((r - self.radius) ** 2) / (2 * self.width**2)) / self._norm

    def _rho_max(self) -> float:
        return self.a * (self.radius + 12 * self.width) + 40 * self.sigma

    def _log_smoothed(self, rho):
        """log η(ρ) and d log η/dρ by quadrature (stable in the tails)."""
        a, s2 = self.a, self.sigma**2
        r, wr = self._radial_nodes()
        rr = np.asarray(rho, dtype=float)[..., None]
        z = a * r * rr / s2
        logbase = -((r - self.radius) ** 2) / (2 * self.width**2) + np.log(r * wr / (self._norm * s2))
        with np.errstate(divide="ignore"):
            logterm = logbase - ((rr - a * r) ** 2) / (2 * s2) + np.log(special.i0e(z))
        logeta = special.logsumexp(logterm, axis=-1)
        wts = np.exp(logterm - logeta[..., None])
        # d/dρ log[e^{-(ρ-ar)²/2s²} i0e(arρ/s²)] = -ρ/s² + (ar/s²) i1e/i0e
        ratio = special.i1e(z) / special.i0e(z)
        dlog = (wts * (-rr / s2 + a * r / s2 * ratio)).sum(-1)
        return logeta, dlog

    def _table(self):
        tab = self.__dict__.get("_tab")
        if tab is None:
            from scipy.interpolate import CubicHermiteSpline

            rmax = self._rho_max()
            step = min(self.sigma, self.a * self.width) / 8.0
            n = int(min(20001, max(2001, rmax / step)))
            grid = np.linspace(0.0, rmax, n)
            le, dl = self._log_smoothed(grid)
            tab = CubicHermiteSpline(grid, le, dl)
            object.__setattr__(self, "_tab", tab)
        return tab

    def _log_radial(self, rho):
        """log η and d log η/dρ at radii ρ (table inside, quadrature beyond)."""
        rho = np.asarray(rho, dtype=float)
        tab = self._table()
        le = tab(np.minimum(rho, tab.x[-1]))
        dl = tab(np.minimum(rho, tab.x[-1]), 1)
        far = rho > tab.x[-1]
        if np.any(far):
            le_f, dl_f = self._log_smoothed(rho[far])
            le = np.where(far, 0.0, le)
            dl = np.where(far, 0.0, dl)
            le[far], dl[far] = le_f, dl_f
        return le, dl

    def logpdf(self, x):
        x = _as_points(x, 2)
        rho = np.linalg.norm(x, axis=-1)
        if self.sigma == 0.0:
            return -((rho / self.a - self.radius) ** 2) / (2 * self.width**2) - math.log(self._norm * self.a**2)
        return self._log_radial(rho)[0]

    def pdf(self, x):
        return np.exp(self.logpdf(x))

    def score(self, x):
        x = _as_points(x, 2)
        rho = np.linalg.norm(x, axis=-1)
        safe = np.where(rho > 0, rho, 1.0)
        if self.sigma == 0.0:
            dlog = -(rho / self.a - self.radius) / (self.width**2 * self.a)
        else:
            dlog = self._log_radial(rho)[1]
        return np.where(rho[..., None] > 0, dlog[..., None] * x / safe[..., None], 0.0)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rng = _check_rng(rng)
        # Rejection from N(R, w²) on r > 0 with acceptance ∝ r (bounded by R + 12w).
        out = np.empty(0)
        rmax = self.radius + 12 * self.width
        while out.size < n:
            m = 2 * (n - out.size) + 16
            r = self.radius + self.width * rng.standard_normal(m)
            keep = (r > 0) & (rng.random(m) * rmax < r)
            out = np.concatenate([out, r[keep]])
        r = out[:n]
        th = rng.random(n) * 2 * math.pi
        y = np.stack([r * np.cos(th), r * np.sin(th)], axis=1)
        res = self.a * y
        if self.sigma > 0:
            res = res + self.sigma * rng.standard_normal((n, 2))
        return res

    def mean(self) -> np.ndarray:
        return np.zeros(2)

    def cov(self) -> np.ndarray:
        r, wr = self._radial_nodes()
        er2 = float((self._base_pdf_r(r) * r**3 * wr).sum() * 2 * math.pi)
        return (self.a**2 * er2 / 2 + self.sigma**2) * np.eye(2)

    def radial_sf(self, rho) -> np.ndarray:
        """P(|X| > ρ), exact (erfc for σ = 0, a noncentral χ² mixture otherwise)."""
        rho = np.asarray(rho, dtype=float)
        if self.sigma == 0.0:
            R, w = self.radius, self.width
            u = rho / self.a
            val = w * w * np.exp(-((u - R) ** 2) / (2 * w * w)) + R * w * math.sqrt(math.pi / 2) * special.erfc(
                (u - R) / (w * math.sqrt(2)))
            return np.clip(2 * math.pi * val / self._norm, 0.0, 1.0)
        from scipy.stats import ncx2

        r, wr = self._radial_nodes()
        wts = self._base_pdf_r(r) * r * wr * 2 * math.pi
        sf = ncx2.sf((rho[..., None] / self.sigma) ** 2, 2, (self.a * r / self.sigma) ** 2)
        return np.clip((wts * sf).sum(-1), 0.0, 1.0)

    def mass_outside(self, domain) -> float:
        """P(X ∉ box) = (1/2π) ∫ P(|X| > R(θ)) dθ, R(θ) the box's radius along θ.

        Exact for a box around the origin (the law is radial): Gauss–Legendre
        in θ between the corner angles, where R(θ) is smooth.
        """
        dom = _normalize_domain(domain, 2)
        if np.any(dom[:, 0] >= 0) or np.any(dom[:, 1] <= 0):
            return 1.0 - _midpoint_mass(self, dom)
        (x0, x1), (y0, y1) = dom
        corners = np.sort(np.mod(np.arctan2([y0, y0, y1, y1], [x0, x1, x0, x1]), 2 * math.pi))
        edges = np.concatenate([corners, [corners[0] + 2 * math.pi]])
        xg, wg = np.polynomial.legendre.leggauss(64)
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            th = 0.5 * (lo + hi) + 0.5 * (hi - lo) * xg
            c, s_ = np.cos(th), np.sin(th)
            with np.errstate(divide="ignore"):
                rx = np.where(c > 0, x1 / c, np.where(c < 0, x0 / c, np.inf))
                ry = np.where(s_ > 0, y1 / s_, np.where(s_ < 0, y0 / s_, np.inf))
            total += 0.5 * (hi - lo) * (wg * self.radial_sf(np.minimum(rx, ry))).sum()
        return float(min(max(total / (2 * math.pi), 0.0), 1.0))

    def ou_marginal(self, s: float, beta: float = 1.0) -> "Ring":
        a, var = _ou_coefficients(s, beta)
        return Ring(self.radius, self.width, self.a * a, math.sqrt(self.sigma**2 * a * a + var))

    def to_dict(self) -> dict:
        return {"kind": "ring", "radius": self.radius, "width": self.width, "a": self.a, "sigma": self.sigma}


def _midpoint_mass(law: Distribution, dom: np.ndarray, n: int = 600) -> float:
    axes = [lo + (np.arange(n) + 0.5) * (hi - lo) / n for lo, hi in dom]
    vol = float(np.prod([(hi - lo) / n for lo, hi in dom]))
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return float(law.pdf(pts).sum() * vol)


TOYS: dict[str, Callable[..., Distribution]] = {
    "checkerboard": Checkerboard,
    "eight_gaussians": eight_gaussians,
    "ring": Ring,
}


def make_toy(name: str, **params) -> Distribution:
    """Build a named 2D toy; an unknown name lists the valid ones."""
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; expected one of {sorted(TOYS)} or 'gaussian_mixture'")
    return TOYS[name](**params)


def from_dict(spec: dict, where: str = "distribution") -> Distribution:
    """Build a law from a problem-file table (see README, 'Problem file')."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind is None:
        raise ValueError(f"{where}: missing key 'kind' (expected 'gaussian_mixture' or one of {sorted(TOYS)})")
    if kind == "gaussian_mixture":
        missing = [k for k in ("weights", "means", "covs") if k not in spec]
        if missing:
            raise ValueError(f"{where}: gaussian_mixture needs keys {missing}")
        extra = sorted(set(spec) - {"weights", "means", "covs"})
        if extra:
            raise ValueError(f"{where}: unknown keys {extra} for gaussian_mixture; expected weights, means, covs")
        try:
            return GaussianMixture(spec["weights"], spec["means"], spec["covs"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if kind not in TOYS:
        raise ValueError(f"{where}: unknown kind {kind!r}; expected 'gaussian_mixture' or one of {sorted(TOYS)}")
    try:
        return TOYS[kind](**spec)
    except TypeError as exc:
        raise ValueError(f"{where}: bad parameters for toy {kind!r}: {exc}") from None
