"""Torch versions of the `pde` laws the losses need (differentiable, any dtype).

- :class:`TorchMixture`: log-density of a :class:`pde.GaussianMixture`
  (the reference γ of otflow, π of wgf) as a torch module.
- :func:`ou_mixture_score`: the exact score of the OU marginal of a Gaussian
  mixture, differentiable in x **and** in the forward time s, so that the
  score-HJB residual of the exact score can be evaluated (DESIGN §4):
  μ_k(s) = μ_k a, Σ_k(s) = a²Σ_k + (1 - a²) I, a = e^{-βs/2},
  ∇log η = Σ_k r_k(x, s) (-Σ_k(s)⁻¹ (x - μ_k(s))).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pde.distributions import GaussianMixture

__all__ = ["TorchMixture", "ou_mixture_score", "require_mixture", "LQExactPotential"]


def require_mixture(law, role: str) -> GaussianMixture:
    if not isinstance(law, GaussianMixture):
        raise ValueError(f"the {role} must be a Gaussian mixture for this model (got {type(law).__name__}); "
                         "its log-density enters the loss")
    return law


class TorchMixture(nn.Module):
    """log p(x) of Σ_k w_k N(μ_k, Σ_k); x (N, d) → (N,). Buffers are not saved."""

    def __init__(self, law: GaussianMixture):
        super().__init__()
        law = require_mixture(law, "law")
        with np.errstate(divide="ignore"):
            logw = np.log(law.weights)
        self.register_buffer("logw", torch.as_tensor(logw), persistent=False)
        self.register_buffer("means", torch.as_tensor(law.means), persistent=False)
        self.register_buffer("prec", torch.as_tensor(law._prec), persistent=False)
        self.register_buffer("logdet", torch.as_tensor(law._logdet), persistent=False)
        self.d = law.dim

    def logpdf(self, x: torch.Tensor) -> torch.Tensor:
        diff = x[:, None, :] - self.means.to(x.dtype)  # (N, K, d)
        maha = torch.einsum("nki,kij,nkj->nk", diff, self.prec.to(x.dtype), diff)
        comp = self.logw.to(x.dtype) - 0.5 * (maha + self.logdet.to(x.dtype) + self.d * math.log(2 * math.pi))
        return torch.logsumexp(comp, dim=1)


def ou_mixture_score(x: torch.Tensor, s: torch.Tensor, law: GaussianMixture, beta: float = 1.0) -> torch.Tensor:
    """Exact ∇_x log η(x, s) of the OU marginal of a Gaussian mixture.

    Args:
        x: (N, d) points.
        s: (N,) forward times (s > 0 or the data's covariances must be definite).
        law: the data π = Σ w_k N(μ_k, Σ_k).
        beta: the OU rate β.

    Returns:
        (N, d), differentiable in x and s.
    """
    law = require_mixture(law, "data")
    dt = x.dtype
    w = torch.as_tensor(law.weights, dtype=dt, device=x.device)
    mu = torch.as_tensor(law.means, dtype=dt, device=x.device)
    cov = torch.as_tensor(law.covs, dtype=dt, device=x.device)
    eye = torch.eye(x.shape[1], dtype=dt, device=x.device)
    a = torch.exp(-0.5 * beta * s)[:, None, None, None]  # (N, 1, 1, 1)
    S = a * a * cov[None] + (1.0 - a * a) * eye  # (N, K, d, d)
    P = torch.linalg.inv(S)
    diff = x[:, None, :] - a[..., 0] * mu[None]  # (N, K, d)
    comp_score = -torch.einsum("nkij,nkj->nki", P, diff)
    logc = torch.log(w) - 0.5 * (torch.einsum("nki,nki->nk", diff, -comp_score) + torch.logdet(S))
    r = torch.softmax(logc, dim=1)
    return torch.einsum("nk,nki->ni", r, comp_score)


class LQExactPotential(nn.Module):
    r"""The exact lq potential (``pde.exact.LQExact``) as a torch module with the
    :meth:`neural.PotentialNet.grad_lap` interface, so it can stand in for the network.

        φ(x, t) = ½η(t)|x - m̄|² + χ(t),   η' = η²/λ - q,  η(T) = q_T,   χ(t) = νd∫_t^T η,

    hence ∇_xφ = η(x - m̄), ∂tφ = ½(η²/λ - q)|x - m̄|² - νdη, Δ_xφ = dη, and
    -∂tφ - νΔφ + |∇φ|²/(2λ) = (q/2)|x - m̄|² = f exactly. η and χ come from
    ``LQExact`` (the derivatives above are analytic, so no autograd in t is needed).
    """

    def __init__(self, problem):
        super().__init__()
        from pde.exact import LQExact

        ex = LQExact(problem)
        self.q, self.qT, self.lam, self.nu, self.T = ex.q, ex.qT, ex.lam, ex.nu, ex.T
        self.d = problem.dim
        self._ex = ex
        self.register_buffer("mbar", torch.as_tensor(np.asarray(ex.mbar, dtype=float)), persistent=False)

    def eta(self, t: torch.Tensor) -> torch.Tensor:
        """Riccati η(t) of ``pde.exact.LQExact`` as a tensor like ``t``."""
        return torch.as_tensor(self._ex.eta(t.detach().cpu().numpy()), dtype=t.dtype, device=t.device)

    def grad_lap(self, x: torch.Tensor, t, need_lap: bool = True, need_phi: bool = True):
        """(φ (N,) or None, (∇_xφ, ∂tφ) (N, d+1), Δ_xφ (N,) or None), as PotentialNet.grad_lap."""
        if not torch.is_tensor(t):
            t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        t = t.to(dtype=x.dtype).reshape(-1).expand(x.shape[0])
        eta = self.eta(t)
        dev = x - self.mbar.to(x.dtype)
        r2 = (dev * dev).sum(1)
        gx = eta[:, None] * dev
        gt = 0.5 * (eta * eta / self.lam - self.q) * r2 - self.nu * self.d * eta
        phi = None
        if need_phi:
            chi = torch.as_tensor(self._ex.chi(t.detach().cpu().numpy()), dtype=x.dtype, device=x.device)
            phi = 0.5 * eta * r2 + chi
        lap = self.d * eta if need_lap else None
        return phi, torch.cat([gx, gt[:, None]], dim=1), lap
