"""Continuous normalizing flows for otflow problems: OT-Flow (potential, kinetic + HJB penalty) and FFJORD."""

from __future__ import annotations


import torch


from ..integrate import rk4
from ..laws import TorchMixture, require_mixture
from ..nets import FLOW_STATE_EXTRA, MLPField, PotentialNet
from .base import NeuralModel

__all__ = ["OTFlow", "FFJORD", "potential_flow", "potential_flow_reference"]


# --------------------------------------------------------------------------
# OT-Flow
# --------------------------------------------------------------------------


def _potential_rhs(net: PotentialNet, t, x, lam: float, costs: bool):
    """Augmented OT-Flow dynamics for v = -∇Φ/λ.

    d/dt (x, ℓ, L, R) = (-∇Φ/λ, -ΔΦ/λ, |∇Φ|²/(2λ), |-∂tΦ + |∇Φ|²/(2λ)|):
    ℓ the log-determinant (∇·v), L the kinetic cost (λ/2)|v|², R the HJB
    residual of the MFG with ν = 0, F = 0.
    """
    _, g, lap = net.grad_lap(x, t, need_phi=False)
    gx, gt = g[:, :-1], g[:, -1]
    out = [-gx / lam, -lap / lam]
    if costs:
        kin = (gx * gx).sum(1) / (2.0 * lam)
        out += [kin, (kin - gt).abs()]
    return out


def potential_flow(net: PotentialNet, x: torch.Tensor, t0: float, t1: float, nsteps: int, lam: float) -> torch.Tensor:
    """RK4 of the OT-Flow augmented state on [t0, t1] (floats); returns (N, d+3) = (x, ℓ, L, R).

    Same dynamics as :func:`_potential_rhs` (tests check the two to round-off), through
    :meth:`PotentialNet.flow_rhs`: one state tensor with time as a column, parameter-only
    terms built once, -1/λ folded into the weights. That keeps the number of kernels per
    training step small, which bounds the speed of the GPU step.
    """
    d = x.shape[1]
    h = (t1 - t0) / nsteps
    pack = net.flow_pack(lam)
    ones = x.new_ones(x.shape[0], 1)
    y = torch.cat([x, x.new_zeros(x.shape[0], FLOW_STATE_EXTRA - 1), ones * t0], dim=1)
    for _ in range(nsteps):
        k1 = net.flow_rhs(y, pack, ones)
        k2 = net.flow_rhs(y.add(k1, alpha=0.5 * h), pack, ones)
        k3 = net.flow_rhs(y.add(k2, alpha=0.5 * h), pack, ones)
        k4 = net.flow_rhs(y.add(k3, alpha=h), pack, ones)
        y = y.add(k1.add(k2, alpha=2.0).add_(k3, alpha=2.0).add_(k4), alpha=h / 6.0)
    return torch.cat([y[:, :d], y[:, d + 1:d + 4]], dim=1)


def potential_flow_reference(net: PotentialNet, x: torch.Tensor, t0: float, t1: float, nsteps: int,
                             lam: float) -> torch.Tensor:
    """:func:`potential_flow` computed the plain way: RK4 over :func:`_potential_rhs` (grad_lap).

    The yardstick for the fused flow in the tests and the benchmarks; (N, d+3) = (x, ℓ, L, R).
    """
    z = x.new_zeros(x.shape[0])
    y = rk4(lambda t, s: _potential_rhs(net, t, s[0], lam, True), [x, z, z, z], z + t0, z + t1, nsteps)
    return torch.cat([y[0]] + [r[:, None] for r in y[1:]], 1)


class OTFlow(NeuralModel):
    r"""OT-Flow CNF: v = -∇Φ/λ with the OT-Flow potential, RK4 of (x, ℓ, L, R).

    Loss (per sample x₀ ~ ρ₀, integrated over [0, T]):

        α_L ∫(λ/2)|v|² dt + α_C (-log γ(x_T) - ℓ_T) + α_R ∫|-∂tΦ + |∇Φ|²/(2λ)| dt.

    With α_L = α_C = 1 this is the MFG objective ∫∫L ρ + KL(ρ_T‖γ) up to the
    constant E log ρ₀; the HJB penalty vanishes at the optimum.

    Hyper-parameters: width (32), nlayers (2), rank (min(10, d+1)),
    nsteps (8 RK4 steps), alpha_L (1), alpha_C (1), alpha_R (1).
    """

    name = "otflow"
    families = ("otflow",)
    _flow = staticmethod(potential_flow)  # the training dynamics (benchmarks swap in the reference)

    def __init__(self, problem, width: int = 32, nlayers: int = 2, rank: int | None = None, nsteps: int = 8,
                 alpha_L: float = 1.0, alpha_C: float = 1.0, alpha_R: float = 1.0):
        super().__init__(problem, width=width, nlayers=nlayers, rank=rank, nsteps=nsteps, alpha_L=alpha_L,
                         alpha_C=alpha_C, alpha_R=alpha_R)
        if problem.nu != 0.0:
            raise ValueError(f"OT-Flow is a deterministic flow and needs nu = 0 (got nu={problem.nu})")
        self.lam = problem.lam
        self.net = PotentialNet(self.d, width, nlayers, rank)
        self.ref = TorchMixture(require_mixture(problem.reference, "reference γ"))
        self.nsteps = int(nsteps)
        self.alpha = (float(alpha_L), float(alpha_C), float(alpha_R))

    def rhs(self, t, x, costs: bool):
        return _potential_rhs(self.net, t, x, self.lam, costs)

    def loss(self, batch: dict, step: int = 0):
        x = batch["x"]
        y = self._flow(self.net, x, 0.0, self.T, self.nsteps, self.lam)
        d = self.d
        xT, ell, L, R = y[:, :d], y[:, d], y[:, d + 1], y[:, d + 2]
        nll = -self.ref.logpdf(xT) - ell
        aL, aC, aR = self.alpha
        parts = {"kinetic": L.mean(), "nll": nll.mean(), "hjb": R.mean()}
        return aL * parts["kinetic"] + aC * parts["nll"] + aR * parts["hjb"], parts

    def potential(self, x, t):
        phi, g, _ = self.net.grad_lap(x, t, need_lap=False)
        return phi, -g[:, :-1] / self.lam


# --------------------------------------------------------------------------
# free-form CNF (FFJORD)
# --------------------------------------------------------------------------


class FFJORD(NeuralModel):
    r"""Free-form CNF: an MLP velocity v(x, t), exact divergence from the forward Jacobian.

    Loss: α_C (-log γ(x_T) - ∫∇·v dt) + α_L ∫(λ/2)|v|² dt, α_L = 0 by default:
    without kinetic cost every map pushing ρ₀ to γ is optimal (ill-posed).
    No potential: φ is NaN on the grid.

    Hyper-parameters: width (64), depth (3), activation ("tanh"), nsteps (8),
    alpha_C (1), alpha_L (0).
    """

    name = "ffjord"
    families = ("otflow",)

    def __init__(self, problem, width: int = 64, depth: int = 3, activation: str = "tanh", nsteps: int = 8,
                 alpha_C: float = 1.0, alpha_L: float = 0.0):
        super().__init__(problem, width=width, depth=depth, activation=activation, nsteps=nsteps,
                         alpha_C=alpha_C, alpha_L=alpha_L)
        self.lam = problem.lam
        self.net = MLPField(self.d, self.d, width, depth, activation)
        self.ref = TorchMixture(require_mixture(problem.reference, "reference γ"))
        self.nsteps = int(nsteps)
        self.alpha = (float(alpha_C), float(alpha_L))

    def rhs(self, t, x, costs: bool):
        v, div = self.net.divergence(x, t)  # exact, forward-mode: no nested autograd
        out = [v, div]
        if costs:
            out.append(0.5 * self.lam * (v * v).sum(1))
        return out

    def loss(self, batch: dict, step: int = 0):
        x = batch["x"]
        z = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        xT, ell, L = rk4(lambda t, y: self.rhs(t, y[0], True), [x, z, z], z, z + self.T, self.nsteps)
        nll = -self.ref.logpdf(xT) - ell
        aC, aL = self.alpha
        parts = {"nll": nll.mean(), "kinetic": L.mean()}
        return aC * parts["nll"] + aL * parts["kinetic"], parts

    def potential(self, x, t):
        v = self.net(x, t)
        return torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device), v
