"""HJB residuals used as losses: the score equation (sgm) and the lq game's HJB equation."""

from __future__ import annotations

import torch

__all__ = ["score_hjb_residual", "lq_hjb_residual"]


def score_hjb_residual(score_fn, x: torch.Tensor, s: torch.Tensor, beta: float, create_graph: bool = True):
    r"""Residual of the score equation in forward time s (exact autograd, d ≤ 2).

    With u = log η and S = ∇u, the OU forward equation gives
    ∂_s u = (β/2)(d + x·∇u + Δu + |∇u|²), hence

        R = ∂_s S - (β/2) [∇(x·S) + ∇|S|² + ΔS]
          = ∂_s S - (β/2) [S + J_Sᵀx + 2 J_SᵀS + ΔS],

    J_S the Jacobian (J_S)_{ij} = ∂_j S_i and ΔS the componentwise Laplacian
    (equal to ∇(∇·S) for a gradient field). For β = 1:
    R = ∂_s S - ∇(½x·S + ½|S|²) - ½ΔS. The exact OU score makes R = 0.

    Args:
        score_fn: S(x, s) -> (N, d).
        x: (N, d), s: (N,).

    Returns:
        R, shape (N, d).
    """
    x = x.detach().requires_grad_(True) if not x.requires_grad else x
    s = s.detach().requires_grad_(True) if not s.requires_grad else s
    S = score_fn(x, s)
    d = x.shape[1]
    J = []
    dS = []
    for i in range(d):
        gx, gs = torch.autograd.grad(S[:, i].sum(), (x, s), create_graph=True)
        J.append(gx)
        dS.append(gs)
    J = torch.stack(J, dim=1)  # (N, d, d), J[:, i, j] = ∂_j S_i
    dS = torch.stack(dS, dim=1)  # (N, d)
    lap = []
    for i in range(d):
        li = 0.0
        for j in range(d):
            li = li + torch.autograd.grad(J[:, i, j].sum(), x, create_graph=create_graph, retain_graph=True)[0][:, j]
        lap.append(li)
    lap = torch.stack(lap, dim=1)
    JT_x = torch.einsum("nij,ni->nj", J, x)
    JT_S = torch.einsum("nij,ni->nj", J, S)
    return dS - 0.5 * beta * (S + JT_x + 2.0 * JT_S + lap)



def lq_hjb_residual(grad_lap, x: torch.Tensor, t, mbar: torch.Tensor, q: float, nu: float, lam: float):
    r"""HJB residual of the lq game for a potential with the ``grad_lap`` interface.

        R = -∂tΦ - νΔΦ + |∇Φ|²/(2λ) - (q/2)|x - m̄|²,

    the ``pde`` convention (φ solves -∂tφ - νΔφ + |∇φ|²/(2λ) = f, v* = -∇φ/λ).

    Args:
        grad_lap: Φ's ``grad_lap(x, t, need_lap, need_phi)`` (a PotentialNet or LQExactPotential).
        x: (N, d) points; t: (N,) times or a float; mbar: (d,) the population mean m̄(t).

    Returns:
        (R (N,), ∇_xΦ (N, d)).
    """
    _, g, lap = grad_lap(x, t, need_lap=True, need_phi=False)
    d = x.shape[1]
    gx, gt = g[:, :d], g[:, d]
    dev = x - mbar
    f = 0.5 * q * (dev * dev).sum(1)
    return -gt - nu * lap + (gx * gx).sum(1) / (2.0 * lam) - f, gx
