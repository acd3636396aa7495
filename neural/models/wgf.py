"""Neural Wasserstein gradient flow: a JKO chain of OT-Flow blocks (DESIGN §3.3)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


from ..integrate import rk4
from ..laws import TorchMixture, require_mixture
from ..nets import PotentialNet
from .base import NeuralModel, _np_logpdf
from .flows import _potential_rhs, potential_flow

__all__ = ["NeuralWGF"]


class NeuralWGF(NeuralModel):
    r"""JKO chain of OT-Flow blocks for the gradient flow of KL(ρ‖π) (DESIGN §3.3).

    Block k (k = 0..K-1, K = T/τ) is an OT-Flow potential Φ_k on [0, τ] with
    λ = 1 and terminal cost KL(·‖π): it is trained, with the earlier blocks
    frozen, on samples of ρ₀ pushed through blocks 0..k-1, with the loss

        α_L ∫(1/2)|∇Φ_k|² dt + α_C (-log π(x_τ) - ℓ_τ) + α_R ∫|-∂tΦ_k + |∇Φ_k|²/2| dt

    (E log ρ_{kτ} is a constant of the block). Block k is trained during steps
    [k·S, (k+1)·S), S = ``steps_per_block``. On the grid, φ(x, t) = Φ_k(x, t - kτ)
    ≈ log(ρ_t/π) + const, v = -∇φ.

    Hyper-parameters: width (32), nlayers (2), rank, nsteps (4 RK4 steps per
    block), alpha_L, alpha_C, alpha_R (1), steps_per_block (set by train). Each block starts
    from the previous block's weights and runs its own learning-rate cycle.
    """

    name = "wgf"
    families = ("wgf",)
    graph_safe = False  # the active block changes with the step

    def __init__(self, problem, width: int = 32, nlayers: int = 2, rank: int | None = None, nsteps: int = 4,
                 alpha_L: float = 1.0, alpha_C: float = 1.0, alpha_R: float = 1.0, steps_per_block: int = 100):
        super().__init__(problem, width=width, nlayers=nlayers, rank=rank, nsteps=nsteps, alpha_L=alpha_L,
                         alpha_C=alpha_C, alpha_R=alpha_R, steps_per_block=steps_per_block)
        tau = float(problem.params["tau"])
        K = int(round(problem.T / tau))
        if K < 1 or abs(K * tau - problem.T) > 1e-9 * problem.T:
            raise ValueError(f"T={problem.T} is not a whole number of JKO steps tau={tau}; expected T = K·tau")
        if steps_per_block < 1:
            raise ValueError(f"steps_per_block={steps_per_block}; expected >= 1")
        self.tau, self.K = tau, K
        self.lam = 1.0
        self.blocks = nn.ModuleList([PotentialNet(self.d, width, nlayers, rank) for _ in range(K)])
        self.ref = TorchMixture(require_mixture(problem.reference, "reference π"))
        self.nsteps = int(nsteps)
        self.steps_per_block = int(steps_per_block)
        self.alpha = (float(alpha_L), float(alpha_C), float(alpha_R))

    def on_step(self, step: int) -> None:
        """Warm start: when block k ≥ 1 becomes active, it starts from block k-1's weights.

        Called by the training loop before each step; a function of the step only, so a
        resumed run repeats it exactly.
        """
        k = step // self.steps_per_block
        if 1 <= k < self.K and step % self.steps_per_block == 0:
            with torch.no_grad():
                self.blocks[k].load_state_dict(self.blocks[k - 1].state_dict())

    def schedule_position(self, step: int, steps: int) -> tuple:
        """(position, length) of the step in its block's learning-rate cycle."""
        k = self.active_block(step)
        length = self.steps_per_block if k < self.K - 1 else max(1, steps - k * self.steps_per_block)
        return step - k * self.steps_per_block, length

    def active_block(self, step: int) -> int:
        return min(step // self.steps_per_block, self.K - 1)

    def _push(self, x, k0: int, k1: int):
        """Push x through full blocks k0..k1-1 (forward in time)."""
        for k in range(k0, k1):
            z = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            x = rk4(lambda t, y, k=k: _potential_rhs(self.blocks[k], t, y[0], 1.0, False)[:1], [x], z, z + self.tau,
                    self.nsteps)[0]
        return x

    def loss(self, batch: dict, step: int = 0):
        k = self.active_block(step)
        x = batch["x"]
        with torch.no_grad():
            x = self._push(x, 0, k)
        y = potential_flow(self.blocks[k], x, 0.0, self.tau, self.nsteps, 1.0)
        d = self.d
        xT, ell, L, R = y[:, :d], y[:, d], y[:, d + 1], y[:, d + 2]
        nll = -self.ref.logpdf(xT) - ell
        aL, aC, aR = self.alpha
        parts = {"kinetic": L.mean(), "nll": nll.mean(), "hjb": R.mean(), "block": torch.full((), float(k), dtype=x.dtype, device=x.device)}
        return aL * parts["kinetic"] + aC * parts["nll"] + aR * parts["hjb"], parts

    def _locate(self, t: np.ndarray):
        k = np.minimum(np.floor(t / self.tau + 1e-9).astype(int), self.K - 1)
        return k, t - k * self.tau

    def log_density(self, x, t, nsteps):
        tn = t.detach().cpu().numpy()
        k, tl = self._locate(tn)
        logr = np.empty(tn.size)
        x0 = np.empty((tn.size, self.d))
        for kk in np.unique(k):
            idx = np.nonzero(k == kk)[0]
            xi = x[idx]
            tli = self._tensor(tl[idx])
            zero = torch.zeros_like(tli)
            acc = torch.zeros_like(tli)
            xi, a = rk4(lambda tt, y, kk=kk: _potential_rhs(self.blocks[kk], tt, y[0], 1.0, False), [xi, acc], tli,
                        zero, nsteps)
            acc = acc + a
            for j in range(kk - 1, -1, -1):
                xi, a = rk4(lambda tt, y, j=j: _potential_rhs(self.blocks[j], tt, y[0], 1.0, False),
                            [xi, torch.zeros_like(tli)], zero + self.tau, zero, nsteps)
                acc = acc + a
            xn = xi.detach().cpu().numpy().astype(float)
            x0[idx] = xn
            logr[idx] = _np_logpdf(self.problem.rho0, xn) + acc.detach().cpu().numpy()
        return logr, x0

    def potential(self, x, t):
        tn = t.detach().cpu().numpy()
        k, tl = self._locate(tn)
        phi = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        v = torch.empty_like(x)
        for kk in np.unique(k):
            idx = torch.as_tensor(np.nonzero(k == kk)[0], device=x.device)
            p, g, _ = self.blocks[kk].grad_lap(x[idx], self._tensor(tl[idx.cpu().numpy()]), need_lap=False)
            phi[idx] = p
            v[idx] = -g[:, :-1]
        return phi, v

    def rhs(self, t, x, costs: bool):
        """Velocity of the chained flow at global times t (N,)."""
        tn = t.detach().cpu().numpy()
        k, tl = self._locate(tn)
        v = torch.empty_like(x)
        dv = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for kk in np.unique(k):
            idx = torch.as_tensor(np.nonzero(k == kk)[0], device=x.device)
            out = _potential_rhs(self.blocks[kk], self._tensor(tl[idx.cpu().numpy()]), x[idx], 1.0, False)
            v[idx], dv[idx] = out[0], out[1]
        return [v, dv]

    def trajectories(self, x0, nt: int, substeps: int | None = None) -> np.ndarray:
        """Paths through the chain at t_j = jT/nt; steps never straddle a block boundary
        when nt is a multiple of K (otherwise the field jumps inside an RK4 step)."""
        return super().trajectories(x0, nt, substeps or max(1, math.ceil(self.nsteps * self.K / nt)))
