r"""Flow-matching models for bridge problems (ρ(0) = ρ₀, ρ(T) = ρ₁): I-CFM, OT-CFM, SB-CFM and rectified flow.

Each learns a velocity field u_θ(x, t) on [0, T] by regression on a conditional path between
coupled endpoints (x₀, x₁) ~ π, with s = t/T ~ U(0, 1):

    loss = E |u_θ(x_s, sT) − u(x_s | x₀, x₁)|²,

the marginal of the conditional paths being a path from ρ₀ to ρ₁ whose velocity is the
conditional expectation of u (Lipman et al. 2023; Tong et al. 2024). The models differ by π
and the conditional path:

- ``cfm`` (independent coupling, π = ρ₀ ⊗ ρ₁): x_s = (1 − s)x₀ + s x₁, u = (x₁ − x₀)/T. Its
  marginal path is not the W₂ geodesic and its kinetic energy exceeds (λ/2T)W₂²;
- ``ot-cfm``: π the exact optimal coupling of the minibatch (POT ``ot.emd``, cost |x₀ − x₁|²,
  a permutation for equal batches), the same straight path. As the batch grows the coupling
  tends to the Brenier plan and the path to McCann's interpolation (the ν = 0 bridge truth);
- ``sb-cfm``: π the entropic coupling of the minibatch with the Schrödinger-bridge cost
  λ|x₀ − x₁|²/(2T) and regularisation ε = 2νλ (POT ``ot.sinkhorn_log``), and the Brownian-bridge
  path of the FP diffusion ν: x_t = (1 − s)x₀ + s x₁ + σ_t z, σ_t² = 2ν t(T − t)/T, with the
  conditional probability-flow velocity u = (x₁ − x₀)/T + (T − 2t)/(2t(T − t))·(x_t − μ_t).
  **Exposed velocity:** the probability-flow velocity of the bridge's marginal path,
  u = v − ν∇log ρ_t (v = −∇φ/λ the MFG drift). It carries ρ_t deterministically (so density,
  trajectories and L1 of ρ_t compare with the truth), but its kinetic energy is that of u, not of
  the SDE drift (which would also need the score; not learned here). s is drawn in [s_min, 1 − s_min]
  (s_min = 1e-3): the conditional velocity grows like s^{-1/2} at the ends.
  With ν = 0 it is ``ot-cfm`` (the error says so);
- ``rectified`` (one reflow, Liu et al. 2023): for the first ``base_steps`` steps an I-CFM
  ("1-rectified flow"); then a second field, initialised with the first's weights, is trained on the
  deterministic coupling (x₀, X₁(x₀)), X₁ the endpoint of the first field's ODE (RK4, ``nsteps``
  steps, computed in the loss without gradient). The exposed velocity is the second field once
  the reflow has started, the first before.

Every coupling is computed on the numpy batch in :meth:`draw` from the seeded generator, so a run
is reproducible and the loss (except ``rectified``'s ODE) has a fixed graph. φ is NaN on the grid
(no potential); ρ_t comes from backward characteristics of u (:meth:`NeuralModel.log_density`).

Hyper-parameters (all): width (64), depth (3), activation ("silu"), nsteps (16: RK4 steps of the
sampler and of the density); ``sb-cfm``: s_min (1e-3); ``rectified``: base_steps (required > 0).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..integrate import rk4
from ..nets import MLPField
from .base import NeuralModel

__all__ = ["ICFM", "OTCFM", "SBCFM", "RectifiedFlow", "exact_ot_pairing", "entropic_pairing"]


def exact_ot_pairing(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """The permutation j(i) of the exact OT plan between two equal minibatches (cost |x₀ − x₁|², POT ``emd``)."""
    import ot

    n = x0.shape[0]
    if x1.shape[0] != n:
        raise ValueError(f"exact_ot_pairing: batches of {n} and {x1.shape[0]} points; expected equal sizes")
    a = np.full(n, 1.0 / n)
    P = ot.emd(a, a, ot.dist(x0, x1, metric="sqeuclidean"), numItermax=1_000_000)
    return np.asarray(P.argmax(axis=1)).reshape(n)


def entropic_pairing(x0: np.ndarray, x1: np.ndarray, cost_scale: float, eps: float,
                     rng: np.random.Generator) -> np.ndarray:
    """j(i) drawn from the rows of the entropic plan min ⟨C, π⟩ − ε H(π), C = cost_scale·|x₀ − x₁|² (POT
    ``sinkhorn_log``, uniform marginals)."""
    import ot

    n = x0.shape[0]
    a = np.full(n, 1.0 / n)
    b = np.full(x1.shape[0], 1.0 / x1.shape[0])
    C = cost_scale * ot.dist(x0, x1, metric="sqeuclidean")
    P = np.asarray(ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-9))
    P = np.clip(P, 0.0, None)
    cdf = np.cumsum(P, axis=1)
    u = rng.random(n) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), x1.shape[0] - 1)


class _FlowMatching(NeuralModel):
    """Common part: the velocity network, its ODE, the straight-path loss."""

    families = ("bridge",)

    def __init__(self, problem, width: int = 64, depth: int = 3, activation: str = "silu", nsteps: int = 16,
                 **extra):
        super().__init__(problem, width=width, depth=depth, activation=activation, nsteps=nsteps, **extra)
        if isinstance(nsteps, bool) or not isinstance(nsteps, (int, np.integer)) or nsteps < 1:
            raise ValueError(f"nsteps={nsteps!r}; expected a positive integer")
        self.lam = float(problem.lam)
        self.nsteps = int(nsteps)
        self.net = MLPField(self.d, self.d, width, depth, activation)

    # the velocity exposed to evaluation (rectified switches fields)
    def field(self) -> MLPField:
        return self.net

    def velocity(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.field()(x, t)

    def rhs(self, t, x, costs: bool):
        v, div = self.field().divergence(x, t)
        out = [v, div]
        if costs:
            out.append(0.5 * self.lam * (v * v).sum(1))
        return out

    def potential(self, x, t):
        return torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device), self.velocity(x, t)

    def pairs(self, n: int, rng: np.random.Generator) -> tuple:
        """(x₀, x₁) of the model's coupling, numpy."""
        return self.problem.rho0.sample(n, rng), self.problem.target.sample(n, rng)

    def draw(self, n: int, rng: np.random.Generator, step: int) -> dict:
        x0, x1 = self.pairs(n, rng)
        return {"x0": x0, "x1": x1, "s": rng.random(n)}

    def loss(self, batch: dict, step: int = 0):
        x0, x1, s = batch["x0"], batch["x1"], batch["s"]
        xs = x0 + s[:, None] * (x1 - x0)
        u = (x1 - x0) / self.T
        fm = ((self.velocity(xs, s * self.T) - u) ** 2).sum(1).mean()
        return fm, {"fm": fm}

    def kinetic_energy(self, x0: np.ndarray, nsteps: int | None = None) -> float:
        """E ∫₀ᵀ (λ/2)|u(X_t, t)|² dt along the learned ODE from the points x0 (RK4)."""
        x = self._tensor(x0)
        z = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        with torch.no_grad():
            out = rk4(lambda t, y: [self.velocity(y[0], t), 0.5 * self.lam * (self.velocity(y[0], t) ** 2).sum(1)],
                      [x, z], z, z + self.T, nsteps or 2 * self.nsteps)
        return float(out[1].mean())


class ICFM(_FlowMatching):
    """I-CFM: independent coupling, straight conditional paths (module docstring)."""

    name = "cfm"


class OTCFM(_FlowMatching):
    """OT-CFM: the exact minibatch OT coupling (POT ``emd``), straight conditional paths (module docstring)."""

    name = "ot-cfm"

    def pairs(self, n, rng):
        x0, x1 = super().pairs(n, rng)
        return x0, x1[exact_ot_pairing(x0, x1)]


class SBCFM(_FlowMatching):
    """SB-CFM: the entropic minibatch coupling and the Brownian-bridge path of diffusion ν (module docstring)."""

    name = "sb-cfm"

    def __init__(self, problem, width: int = 64, depth: int = 3, activation: str = "silu", nsteps: int = 16,
                 s_min: float = 1e-3):
        if not problem.nu > 0:
            raise ValueError(f"sb-cfm needs a bridge with diffusion nu > 0 (got nu={problem.nu!r}); with nu = 0 the "
                             "Schrödinger bridge is the W2 geodesic: use ot-cfm")
        if not (isinstance(s_min, (int, float)) and 0 < s_min < 0.5):
            raise ValueError(f"s_min={s_min!r}; expected 0 < s_min < 0.5")
        super().__init__(problem, width, depth, activation, nsteps, s_min=s_min)
        self.nu = float(problem.nu)
        self.s_min = float(s_min)

    def pairs(self, n, rng):
        x0, x1 = super().pairs(n, rng)
        eps = 2.0 * self.nu * self.lam
        return x0, x1[entropic_pairing(x0, x1, self.lam / (2.0 * self.T), eps, rng)]

    def draw(self, n, rng, step):
        x0, x1 = self.pairs(n, rng)
        s = self.s_min + (1.0 - 2.0 * self.s_min) * rng.random(n)
        return {"x0": x0, "x1": x1, "s": s, "z": rng.standard_normal((n, self.d))}

    def loss(self, batch, step=0):
        x0, x1, s, z = batch["x0"], batch["x1"], batch["s"], batch["z"]
        T = self.T
        sig = torch.sqrt(2.0 * self.nu * T * s * (1.0 - s))[:, None]
        xs = x0 + s[:, None] * (x1 - x0) + sig * z
        # (T − 2t)/(2t(T − t))·σ_t z with t = sT
        u = (x1 - x0) / T + ((1.0 - 2.0 * s) / (2.0 * T * s * (1.0 - s)))[:, None] * sig * z
        fm = ((self.velocity(xs, s * T) - u) ** 2).sum(1).mean()
        return fm, {"fm": fm}


class RectifiedFlow(_FlowMatching):
    """One reflow of an I-CFM trained for ``base_steps`` steps first (module docstring)."""

    name = "rectified"
    graph_safe = False  # the loss switches fields at base_steps and integrates the first field's ODE

    def __init__(self, problem, width: int = 64, depth: int = 3, activation: str = "silu", nsteps: int = 16,
                 base_steps: int = 1000):
        if isinstance(base_steps, bool) or not isinstance(base_steps, (int, np.integer)) or base_steps < 1:
            raise ValueError(f"base_steps={base_steps!r}; expected a positive integer (the I-CFM steps before the "
                             "reflow)")
        super().__init__(problem, width, depth, activation, nsteps, base_steps=base_steps)
        self.base_steps = int(base_steps)
        self.reflow = MLPField(self.d, self.d, width, depth, activation)
        self.register_buffer("reflowed", torch.zeros((), dtype=torch.int64))

    def field(self):
        return self.reflow if int(self.reflowed) else self.net

    def endpoints(self, x0: torch.Tensor) -> torch.Tensor:
        """X₁(x₀): the first field's ODE from 0 to T (RK4, ``nsteps`` steps), without gradient."""
        z = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        with torch.no_grad():
            return rk4(lambda t, y: [self.net(y[0], t)], [x0], z, z + self.T, self.nsteps)[0]

    def on_step(self, step: int) -> None:
        """Start the reflow at ``base_steps``: the second field takes the first's weights (once; the flag is
        saved in checkpoints, so a resumed run does not copy again)."""
        if step >= self.base_steps and not int(self.reflowed):
            with torch.no_grad():
                self.reflow.load_state_dict(copy.deepcopy(self.net.state_dict()))
                self.reflowed.fill_(1)

    def loss(self, batch, step=0):
        if not int(self.reflowed):
            return super().loss(batch, step)
        x0, s = batch["x0"], batch["s"]
        x1 = self.endpoints(x0)
        xs = x0 + s[:, None] * (x1 - x0)
        fm = ((self.reflow(xs, s * self.T) - (x1 - x0) / self.T) ** 2).sum(1).mean()
        return fm, {"fm": fm}

