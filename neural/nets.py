"""Networks: the OT-Flow potential with exact derivatives, and plain MLP fields.

:class:`PotentialNet` is the OT-Flow potential (Onken et al., AAAI 2021)

    Φ(s) = wᵀ N(s) + ½ sᵀ (AᵀA) s + bᵀ s + c,        s = (x, t) ∈ R^{d+1},

with the ResNet N: u₀ = σ(K₀ s + b₀), u_i = u_{i-1} + h σ(K_i u_{i-1} + b_i)
(i = 1..M-1, h = 1/(M-1)), σ(z) = log cosh z (so σ' = tanh, σ'' = 1 - tanh²)
and A of rank r. Its gradient ∇_s Φ and the trace of its Hessian in x,
Δ_x Φ, are computed in closed form in one forward and one backward sweep
(no double backward): with g_i = ∂Φ/∂u_i (g_{M-1} = w,
g_{i-1} = g_i + h K_iᵀ(σ'(z_i) ⊙ g_i)) and the forward Jacobians
J_i = ∂u_i/∂x (J₀ = diag σ'(z₀) K₀E, J_i = J_{i-1} + h diag σ'(z_i) K_i J_{i-1}),

    Δ_x Φ = Σ_j (σ''(z₀) ⊙ g₀)·(K₀E)²_{:,j}
          + Σ_{i≥1} h Σ_j (σ''(z_i) ⊙ g_i)·(K_i J_{i-1})²_{:,j} + ‖A E‖_F²,

E the first d columns of the identity (the x-directions). Shapes: x (N, d),
t (N,), Φ (N,), ∇_sΦ (N, d+1) (last column ∂tΦ), Δ_xΦ (N,).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PotentialNet", "MLPField", "logcosh"]


def logcosh(z: torch.Tensor) -> torch.Tensor:
    """log cosh z without overflow: |z| + log1p(e^{-2|z|}) - log 2."""
    a = z.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


def _as_time(t, x: torch.Tensor) -> torch.Tensor:
    """Times as a (N,) tensor on x's device/dtype (a float broadcasts)."""
    if not torch.is_tensor(t):
        return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    t = t.to(dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    return t.reshape(x.shape[0])


class PotentialNet(nn.Module):
    """OT-Flow potential Φ(x, t) with analytic gradient and x-Laplacian.

    Args:
        d: space dimension.
        width: ResNet width m.
        nlayers: number of ResNet layers M ≥ 2 (the opening layer counts), OT-Flow's ``nTh``.
        rank: rank r of the quadratic term (default min(10, d + 1)).
    """

    def __init__(self, d: int, width: int = 32, nlayers: int = 2, rank: int | None = None):
        super().__init__()
        if nlayers < 2:
            raise ValueError(f"nlayers={nlayers}; expected at least 2 (an opening layer and one residual layer)")
        if width < 1 or d < 1:
            raise ValueError(f"width={width}, d={d}; expected positive integers")
        self.d = int(d)
        self.width = int(width)
        self.nlayers = int(nlayers)
        r = min(10, d + 1) if rank is None else int(rank)
        self.rank = r
        self.h = 1.0 / (nlayers - 1)
        self.K0 = nn.Linear(d + 1, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(nlayers - 1)])
        self.w = nn.Parameter(torch.ones(width))
        A = torch.empty(r, d + 1)
        nn.init.xavier_uniform_(A)
        self.A = nn.Parameter(A)
        self.b = nn.Parameter(torch.zeros(d + 1))
        self.c = nn.Parameter(torch.zeros(()))

    # ------------------------------------------------------------------
    def _forward_states(self, s):
        z0 = self.K0(s)
        u = logcosh(z0)
        zs = [z0]
        for layer in self.layers:
            z = layer(u)
            zs.append(z)
            u = u + self.h * logcosh(z)
        return zs, u

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Φ(x, t), shape (N,)."""
        s = torch.cat([x, _as_time(t, x)[:, None]], dim=1)
        _, u = self._forward_states(s)
        As = s @ self.A.T
        return u @ self.w + 0.5 * (As * As).sum(1) + s @ self.b + self.c

    def grad_lap(self, x: torch.Tensor, t, need_lap: bool = True, need_phi: bool = True):
        """Φ, ∇_sΦ = (∇_xΦ, ∂tΦ) and Δ_xΦ in closed form.

        Args:
            x: (N, d) points.
            t: (N,) times or a float.
            need_lap: skip the Laplacian (returns None) when False.
            need_phi: skip Φ itself (returns None) when False (the flows need only ∇Φ and ΔΦ).

        Returns:
            (Φ (N,) or None, grad (N, d+1), lap (N,) or None).
        """
        d = self.d
        s = torch.cat([x, _as_time(t, x)[:, None]], dim=1)
        zs, u = self._forward_states(s)
        As = s @ self.A.T
        phi = u @ self.w + 0.5 * (As * As).sum(1) + s @ self.b + self.c if need_phi else None
        tanhs = [torch.tanh(z) for z in zs]
        # backward sweep: g_i = ∂Φ_N/∂u_i
        g = self.w.expand_as(u)
        gs = [g]
        for layer, th in zip(reversed(self.layers), reversed(tanhs[1:])):
            g = g + self.h * (th * g) @ layer.weight
            gs.append(g)
        gs.reverse()  # gs[i] = ∂Φ_N/∂u_i, i = 0..M-1
        grad = (tanhs[0] * gs[0]) @ self.K0.weight + As @ self.A + self.b
        if not need_lap:
            return phi, grad, None
        K0x = self.K0.weight[:, :d]  # (m, d)
        lap = ((1.0 - tanhs[0] ** 2) * gs[0]) @ (K0x * K0x).sum(1)
        # J_j = ∂u/∂x_j, one (N, m) matrix per direction (d ≤ a few: plain matmuls, no batched copies)
        J = [tanhs[0] * K0x[:, j] for j in range(d)]
        for i, layer in enumerate(self.layers, start=1):
            KJ = [Jj @ layer.weight.T for Jj in J]
            sq = KJ[0] * KJ[0]
            for KJj in KJ[1:]:
                sq = sq + KJj * KJj
            coef = (1.0 - tanhs[i] ** 2) * gs[i]
            lap = lap + self.h * (coef * sq).sum(1)
            if i < len(self.layers):  # the last Jacobian is not needed
                th = self.h * tanhs[i]
                J = [Jj + th * KJj for Jj, KJj in zip(J, KJ)]
        Ax = self.A[:, :d]
        lap = lap + (Ax * Ax).sum()
        return phi, grad, lap


class MLPField(nn.Module):
    """A free-form field f(x, t): R^d × R → R^out, an MLP on the input (x, t).

    Smooth activations (tanh or SiLU) so the divergence and the second
    derivatives the HJB residual needs exist.

    Args:
        d: space dimension.
        out: output dimension (d for a velocity or a score).
        width: hidden width.
        depth: number of hidden layers.
        activation: "tanh", "silu" or "softplus".
    """

    _ACTS = {"tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus}

    def __init__(self, d: int, out: int | None = None, width: int = 64, depth: int = 3, activation: str = "silu"):
        super().__init__()
        if activation not in self._ACTS:
            raise ValueError(f"activation={activation!r}; expected one of {sorted(self._ACTS)}")
        if depth < 1 or width < 1:
            raise ValueError(f"width={width}, depth={depth}; expected positive integers")
        out = d if out is None else out
        dims = [d + 1] + [width] * depth
        mods = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), self._ACTS[activation]()]
        mods.append(nn.Linear(dims[-1], out))
        self.net = nn.Sequential(*mods)
        self.d = d

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t), shape (N, out)."""
        return self.net(torch.cat([x, _as_time(t, x)[:, None]], dim=1))
