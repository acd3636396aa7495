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

__all__ = ["PotentialNet", "MLPField", "logcosh", "FLOW_STATE_EXTRA"]

#: columns of the fused OT-Flow state after x: (spare, ℓ, L, R, t), see :meth:`PotentialNet.flow_rhs`
FLOW_STATE_EXTRA = 5


def logcosh(z: torch.Tensor) -> torch.Tensor:
    """log cosh z without overflow: |z| + log1p(e^{-2|z|}) - log 2."""
    a = z.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


class _ShiftedLogCosh(torch.autograd.Function):
    """ũ = log cosh z + log 2 = z + softplus(-2z) with the backward grad·tanh z, tanh z given.

    The training RHS already has tanh z, so the backward is one product instead of
    the autograd chain of abs/exp/log1p (fewer kernels per step on a GPU). softplus
    switches to the identity only above 50 (e^-50 is below float64 round-off; the
    default 20 would drop up to 2e-9 near z = -10).
    """

    @staticmethod
    def forward(ctx, z, th):
        ctx.save_for_backward(th)
        return torch.nn.functional.softplus(z * -2.0, threshold=50.0).add_(z)

    @staticmethod
    def backward(ctx, grad):
        (th,) = ctx.saved_tensors
        return grad * th, None


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

    # ------------------------------------------------------------------
    # fused training dynamics
    # ------------------------------------------------------------------
    def flow_pack(self, lam: float) -> dict:
        """Parameter-only quantities of :meth:`flow_rhs`, built once per trajectory batch.

        Everything the RHS needs that does not depend on the samples, with the factor
        -1/λ folded in (so the sweep yields v = -∇Φ/λ and -ΔΦ/λ directly), the log 2 of
        log cosh folded into the biases, and zero rows for the state columns that do not
        enter Φ. Differentiable: the loss gradient flows back to the weights through it.
        """
        d, m, h = self.d, self.width, self.h
        W0 = self.K0.weight  # (m, d+1)
        W0x, W0t = W0[:, :d], W0[:, d:]
        s = -1.0 / lam
        pad = W0.new_zeros(FLOW_STATE_EXTRA - 1, m)
        AtA = self.A.T @ self.A  # (d+1, d+1): As·A = s·AᵀA
        log2 = math.log(2.0)
        layers = []
        for i, layer in enumerate(self.layers, start=1):
            Wi = layer.weight
            # u_{i-1} = ũ_{i-1} - log2·(1 + (i-1)h): fold the offset into b_i
            b = layer.bias - (log2 * (1.0 + (i - 1) * h)) * Wi.sum(1)
            layers.append((Wi.T, b, h * Wi))
        W1 = self.layers[0].weight
        kvec = W0.new_zeros(d + 1)
        kvec[:d] = 0.5 * lam
        tvec = W0.new_zeros(d + 1)
        tvec[d] = lam
        return {
            "Wz0": torch.cat([W0x.T, pad, W0t.T], 0),  # (d+5, m): z0 = y·Wz0 + b0 reads x and t only
            "b0": self.K0.bias,
            "W0": W0,
            "G": torch.cat([AtA[:d], W0.new_zeros(FLOW_STATE_EXTRA - 1, d + 1), AtA[d:]], 0) * s,
            "bs": self.b * s,
            "ws": self.w * s,
            "c0": (W0x * W0x).sum(1),
            "nA": (self.A[:, :d] ** 2).sum() * s,
            # J₀_j = tanh(z0)·W0x[:, j], so K₁J₀_j = tanh(z0) @ (diag(W0x[:, j]) K₁ᵀ): one (m, d·m) matrix
            "P1": (W0x.T[:, :, None] * W1.T[None]).permute(1, 0, 2).reshape(m, d * m),
            "W0xT": W0x.T,
            "layers": layers,
            "hvec": W0.new_full((m,), h),
            "one": W0.new_ones(()),
            "kvec": kvec,
            "tvec": tvec,
        }

    def flow_rhs(self, y: torch.Tensor, pack: dict, ones: torch.Tensor) -> torch.Tensor:
        """d/dt of the fused OT-Flow state y = (x, spare, ℓ, L, R, t), shape (N, d+5).

        Returns (v, v_t, -ΔΦ/λ, (λ/2)|v|², |(λ/2)|v|² + λ v_t|, 1) with v = -∇_xΦ/λ and
        v_t = -∂tΦ/λ: the same dynamics as :meth:`grad_lap` in the flow of
        ``neural.models.potential_flow`` (the spare column integrates v_t and is unused; it
        keeps the state a single tensor with no slicing in the step). ``ones`` is (N, 1).
        """
        N, d, m = y.shape[0], self.d, self.width
        z = torch.addmm(pack["b0"], y, pack["Wz0"])
        th0 = torch.tanh(z)
        u = _ShiftedLogCosh.apply(z, th0)
        ths = [th0]
        L = len(pack["layers"])
        for i, (WT, b, _) in enumerate(pack["layers"], start=1):
            z = torch.addmm(b, u, WT)
            th = torch.tanh(z)
            ths.append(th)
            if i < L:
                u = torch.add(u, _ShiftedLogCosh.apply(z, th), alpha=self.h)
        # backward sweep, scaled by -1/λ through ws: gs[i] = -(∂Φ/∂u_i)/λ
        g = pack["ws"]
        gs = [g]
        for (_, _, hW), th in zip(reversed(pack["layers"]), reversed(ths[1:])):
            g = torch.addmm(g, th * g, hW)
            gs.append(g)
        gs.reverse()
        grad = torch.addmm(torch.addmm(pack["bs"], y, pack["G"]),
                           th0 * gs[0], pack["W0"])
        one = pack["one"]
        lap = torch.addmv(pack["nA"], torch.addcmul(one, th0, th0, value=-1.0) * gs[0], pack["c0"])
        KJ = th0 @ pack["P1"]  # (N, d·m): K₁J₀ for every direction
        J = None
        for i, (WT, _, _) in enumerate(pack["layers"], start=1):
            if i > 1:
                KJ = (J.reshape(N * d, m) @ WT).reshape(N, d * m)
            sq = (KJ * KJ).reshape(N, d, m).sum(1)
            coef = torch.addcmul(one, ths[i], ths[i], value=-1.0) * gs[i]
            lap = torch.addmv(lap, coef * sq, pack["hvec"])
            if i < L:  # J_i = J_{i-1} + h·tanh(z_i)·K_iJ_{i-1}
                if J is None:
                    J = th0[:, None, :] * pack["W0xT"][None]
                J = torch.addcmul(J, (self.h * ths[i])[:, None, :], KJ.reshape(N, d, m))
        kin = torch.mv(grad * grad, pack["kvec"])
        res = torch.addmv(kin, grad, pack["tvec"]).abs()
        return torch.cat([grad, lap[:, None], kin[:, None], res[:, None], ones], 1)


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
        self.activation = activation

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t), shape (N, out)."""
        return self.net(torch.cat([x, _as_time(t, x)[:, None]], dim=1))

    def _act_derivs(self, z: torch.Tensor, second: bool = True):
        """σ(z), σ'(z) and (when ``second``) σ''(z) of the activation, in closed form."""
        if not second and not (torch.is_grad_enabled() and z.requires_grad):
            # evaluation only (no weight gradients): the fused backward kernels give σ' in one pass
            one = z.new_ones(()).expand_as(z)
            if self.activation == "silu":
                return nn.functional.silu(z), torch.ops.aten.silu_backward(one, z), None
            if self.activation == "tanh":
                a = torch.tanh(z)
                return a, torch.ops.aten.tanh_backward(one, a), None
        if self.activation == "tanh":
            a = torch.tanh(z)
            d1 = torch.addcmul(torch.ones_like(a), a, a, value=-1.0)
            return a, d1, (-2.0 * a * d1 if second else None)
        sg = torch.sigmoid(z)
        if self.activation == "softplus":
            return nn.functional.softplus(z), sg, (sg * (1.0 - sg) if second else None)
        # SiLU h = z·sg: σ' = sg + h(1-sg), σ'' = sg(1-sg)(2 + z(1-2sg))
        h = z * sg
        om = 1.0 - sg
        d1 = torch.addcmul(sg, h, om)
        d2 = (sg * om) * (z * (om - sg) + 2.0) if second else None
        return h, d1, d2

    def derivatives(self, x: torch.Tensor, t, need_lap: bool = True, need_t: bool = True):
        """f and its first and second derivatives in one forward sweep (no double backward).

        Forward-mode propagation through the layers: with h the hidden state, J = ∂h/∂(x, t)
        and L = Σ_j ∂²h/∂x_j², a layer z = Wh + b, h' = σ(z) maps
        J ↦ σ'(z)·WJ and L ↦ σ''(z)·Σ_j (WJ)_j² + σ'(z)·WL.

        Returns:
            f (N, out); Jx (N, d, out) with Jx[n, j, i] = ∂f_i/∂x_j; ft (N, out) = ∂f/∂t, or None
            when ``need_t`` is False; lap (N, out) = Δ_x f, or None when ``need_lap`` is False.
        """
        d = self.d
        t = _as_time(t, x)
        k = d + 1 if need_t else d  # directions carried: x_1..x_d (and t)
        lin = [m for m in self.net if isinstance(m, nn.Linear)]
        W0 = lin[0].weight  # (m, d+1)
        z = torch.addmm(lin[0].bias, torch.cat([x, t[:, None]], 1), W0.T)
        h, s1, s2 = self._act_derivs(z, need_lap)
        J = s1[:, None, :] * W0[:, :k].T[None]  # (N, k, m): rows are ∂/∂x_1..x_d (, ∂/∂t)
        L = s2 * (W0[:, :d] ** 2).sum(1) if need_lap else None
        N, m = z.shape
        for layer in lin[1:-1]:
            WT = layer.weight.T
            z = torch.addmm(layer.bias, h, WT)
            Jz = (J.reshape(N * k, -1) @ WT).reshape(N, k, -1)
            h, s1, s2 = self._act_derivs(z, need_lap)
            if need_lap:
                L = torch.addcmul(s1 * (L @ WT), s2, (Jz[:, :d] ** 2).sum(1))
            J = s1[:, None, :] * Jz
        WT = lin[-1].weight.T
        f = torch.addmm(lin[-1].bias, h, WT)
        Jf = (J.reshape(N * k, -1) @ WT).reshape(N, k, -1)
        return f, Jf[:, :d], (Jf[:, d] if need_t else None), (L @ WT if need_lap else None)

    def divergence(self, x: torch.Tensor, t) -> tuple:
        """(f (N, d), ∇_x·f (N,)) for out = d, exact, from the forward Jacobian (no autograd)."""
        f, Jx, _, _ = self.derivatives(x, t, need_lap=False, need_t=False)
        return f, Jx.diagonal(dim1=1, dim2=2).sum(1)
