"""The neural generative flows of the lab, each an optimal-control solver of an MFG.

Every model is an ``nn.Module`` built from an :class:`pde.MFGProblem` and
keyword hyper-parameters (its ``config``, saved in checkpoints), and offers

- ``draw(n, rng, step)``: the numpy arrays of one training batch (data from
  the ``pde`` laws and all random noise, so the loss itself is deterministic
  and the GPU step can be captured as a CUDA graph);
- ``loss(batch, step) -> (loss, parts)``;
- ``evaluate_grid(grid)``: ρ, φ (pde convention, v = -∇φ/λ) and extras on a grid;
- ``trajectories(x0, nt)`` (flows): particle paths (nt+1, N, d).

Sign convention: the potential is the MFG φ of ``pde``:
HJB -∂tφ - νΔφ - b·∇φ + |∇φ|²/(2λ) = f + c, v* = -∇φ/λ.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pde.grid import Grid

from .integrate import rk4
from .laws import TorchMixture, require_mixture
from .nets import FLOW_STATE_EXTRA, MLPField, PotentialNet, _as_time

__all__ = ["NeuralModel", "OTFlow", "FFJORD", "ScoreModel", "HJBScoreModel", "NeuralWGF", "NeuralLQ", "MODELS",
           "score_hjb_residual", "lq_hjb_residual", "get_model"]


def _check_family(problem, families, model):
    if problem.family not in families:
        raise ValueError(f"model {model!r} needs a problem of family {' or '.join(families)} "
                         f"(got family {problem.family!r})")


def _np_logpdf(law, x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.asarray(law.logpdf(x), dtype=float)


class NeuralModel(nn.Module):
    """Common interface (see the module docstring)."""

    name = "?"
    families: tuple = ()
    graph_safe = True  # the loss has a fixed graph: CUDA-graph capture allowed
    is_flow = True

    def __init__(self, problem, **config):
        super().__init__()
        _check_family(problem, self.families, self.name)
        self.problem = problem
        self.config = dict(config)
        self.d = problem.dim
        self.T = problem.T

    # -- data --------------------------------------------------------------
    def draw(self, n: int, rng: np.random.Generator, step: int) -> dict:
        """One batch: samples of ρ₀ (the problem's initial law)."""
        return {"x": self.problem.rho0.sample(n, rng)}

    def _ref(self) -> torch.Tensor:
        p = next(self.parameters())
        return p

    def _tensor(self, a) -> torch.Tensor:
        p = self._ref()
        return torch.as_tensor(np.asarray(a), dtype=p.dtype, device=p.device)

    # -- flows -------------------------------------------------------------
    def rhs(self, t, x, costs: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def log_density(self, x: torch.Tensor, t: torch.Tensor, nsteps: int) -> tuple:
        """log ρ_t(x) by integrating back to 0: log ρ_t(x) = log ρ₀(x₀) - ∫₀ᵗ ∇·v.

        Returns (log ρ (N,) numpy, x₀ (N, d) numpy).
        """
        def f(tt, y):
            return self.rhs(tt, y[0], costs=False)

        zero = torch.zeros_like(t)
        x0, acc = rk4(f, [x, torch.zeros_like(t)], t, zero, nsteps)
        x0n = x0.detach().cpu().numpy().astype(float)
        return _np_logpdf(self.problem.rho0, x0n) + acc.detach().cpu().numpy().astype(float), x0n

    def potential(self, x: torch.Tensor, t: torch.Tensor):
        """(φ (N,), v (N, d)) at per-sample times; φ is NaN for models without one."""
        raise NotImplementedError

    def evaluate_grid(self, grid: Grid, nsteps: int | None = None, chunk: int = 20000, density: bool = True) -> tuple:
        """ρ, φ and extras on a space-time grid (see :func:`neural.evaluate_on_grid`)."""
        nsteps = nsteps or max(2 * int(self.config.get("nsteps", 8)), 16)
        pts = grid.points().reshape(-1, self.d)
        tt = np.repeat(grid.t, pts.shape[0])
        xx = np.tile(pts, (grid.t.size, 1))
        logr = np.full(tt.size, np.nan)
        phi = np.full(tt.size, np.nan)
        vel = np.full((tt.size, self.d), np.nan)
        for a in range(0, tt.size, chunk):
            b = min(a + chunk, tt.size)
            x = self._tensor(xx[a:b])
            t = self._tensor(tt[a:b])
            with torch.no_grad():
                if density:
                    logr[a:b] = self.log_density(x, t, nsteps)[0]
                p, v = self.potential(x, t)
            phi[a:b] = p.detach().cpu().numpy()
            vel[a:b] = v.detach().cpu().numpy()
        shape = (grid.t.size,) + grid.shape
        rho = np.exp(logr).reshape(shape)
        return rho, phi.reshape(shape), {"velocity": vel.reshape(shape + (self.d,))}

    def trajectories(self, x0, nt: int, substeps: int | None = None) -> np.ndarray:
        """Particle paths X(t_j), t_j = jT/nt, from x0 (N, d); returns (nt+1, N, d)."""
        x = self._tensor(x0)
        sub = substeps or max(1, math.ceil(int(self.config.get("nsteps", 8)) / nt))
        out = [x.detach().cpu().numpy()]
        with torch.no_grad():
            for j in range(nt):
                ta = torch.full((x.shape[0],), j * self.T / nt, dtype=x.dtype, device=x.device)
                tb = torch.full_like(ta, (j + 1) * self.T / nt)
                x = rk4(lambda t, y: self.rhs(t, y[0], costs=False)[:1], [x], ta, tb, sub)[0]
                out.append(x.detach().cpu().numpy())
        return np.stack(out)


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


# --------------------------------------------------------------------------
# score-based models
# --------------------------------------------------------------------------


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


class ScoreModel(NeuralModel):
    r"""Score-based model with the OU/VP forward process (DESIGN §3.2).

    Forward: dY = -½βY ds + √β dW, Y₀ ~ π; Y_s = a_s Y₀ + σ_s Z,
    a_s = e^{-βs/2}, σ_s² = 1 - e^{-βs}. The network s_θ(x, s) = N_θ(x, s)/σ_s.

    Loss: denoising score matching with weight σ_s² (s ~ U(ε, T)),

        DSM = E |σ_s s_θ(Y_s, s) + Z|²,

    plus, for the HJB-regularised model, α_HJB E[σ_s^p |R(Y_s, s)|] with R the
    score-equation residual (:func:`score_hjb_residual`; p = ``hjb_power``
    makes the terms O(1) across s) and α_T E[½|s_θ(Y₀, ε)|² + ∇·s_θ(Y₀, ε)]
    (implicit score matching at s ≈ 0). α_HJB = α_T = 0 is the plain model.

    Samplers (generative time t = T - s, from the exact η_T = ``problem.rho0``):
    reverse Euler–Maruyama dX = [½βX + β s_θ] dt + √β dW and the
    probability-flow ODE dX/dt = ½βX + ½β s_θ (RK4). Likelihood: exact
    divergence along the probability-flow ODE.

    Hyper-parameters: width (64), depth (3), activation ("silu"), eps (1e-3),
    nsteps (64 sampler/ODE steps), alpha_hjb (0), alpha_T (0), hjb_power (3).
    """

    name = "sgm"
    families = ("sgm",)
    is_flow = False

    def __init__(self, problem, width: int = 64, depth: int = 3, activation: str = "silu", eps: float = 1e-3,
                 nsteps: int = 64, alpha_hjb: float = 0.0, alpha_T: float = 0.0, hjb_power: float = 3.0):
        super().__init__(problem, width=width, depth=depth, activation=activation, eps=eps, nsteps=nsteps,
                         alpha_hjb=alpha_hjb, alpha_T=alpha_T, hjb_power=hjb_power)
        if not (0 < eps < problem.T):
            raise ValueError(f"eps={eps}; expected 0 < eps < T={problem.T}")
        if alpha_hjb < 0 or alpha_T < 0:
            raise ValueError(f"alpha_hjb={alpha_hjb}, alpha_T={alpha_T}; expected non-negative weights")
        self.beta = float(problem.params["beta"])
        self.net = MLPField(self.d, self.d, width, depth, activation)
        self.eps = float(eps)
        self.nsteps = int(nsteps)
        self.alpha_hjb = float(alpha_hjb)
        self.alpha_T = float(alpha_T)
        self.hjb_power = float(hjb_power)

    def sigma(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(-self.beta * s))

    def score(self, x: torch.Tensor, s) -> torch.Tensor:
        """s_θ(x, s) ≈ ∇log η(x, s), (N, d)."""
        s = _as_time(s, x)
        return self.net(x, s) / self.sigma(s)[:, None]

    def draw(self, n: int, rng: np.random.Generator, step: int) -> dict:
        x0 = self.problem.data.sample(n, rng)
        s = self.eps + (self.T - self.eps) * rng.random(n)
        z = rng.standard_normal((n, self.d))
        return {"x": x0, "s": s, "z": z}

    def loss(self, batch: dict, step: int = 0):
        x0, s, z = batch["x"], batch["s"], batch["z"]
        a = torch.exp(-0.5 * self.beta * s)[:, None]
        sig = self.sigma(s)[:, None]
        xs = a * x0 + sig * z
        if self.alpha_hjb > 0:
            # one forward-derivative sweep gives the network output for DSM and the residual
            out, R = self.hjb_residual(xs, s)
        else:
            out = self.net(xs, s)
        dsm = ((out + z) ** 2).sum(1).mean()
        parts = {"dsm": dsm}
        loss = dsm
        if self.alpha_hjb > 0:
            hjb = (sig[:, 0] ** self.hjb_power * R.norm(dim=1)).mean()
            parts["hjb"] = hjb
            loss = loss + self.alpha_hjb * hjb
        if self.alpha_T > 0:
            se = torch.full_like(s, self.eps)
            f, Jx, _, _ = self.net.derivatives(x0, se, need_lap=False, need_t=False)
            sg = self.sigma(se)[:, None]
            S = f / sg
            div = Jx.diagonal(dim1=1, dim2=2).sum(1) / sg[:, 0]
            ism = (0.5 * (S * S).sum(1) + div).mean()
            parts["ism"] = ism
            loss = loss + self.alpha_T * ism
        return loss, parts

    def hjb_residual(self, x: torch.Tensor, s: torch.Tensor) -> tuple:
        """(N_θ(x, s), R) with R the score-equation residual of s_θ = N_θ/σ_s (see :func:`score_hjb_residual`).

        The derivatives come from one forward sweep (:meth:`MLPField.derivatives`) instead of
        d + d² autograd passes; the tests check both give the same R and parameter gradients.
        """
        b = self.beta
        s = _as_time(s, x)
        f, Jx, ft, lap = self.net.derivatives(x, s)
        sig = self.sigma(s)[:, None]
        dsig = (0.5 * b * torch.exp(-b * s))[:, None] / sig  # dσ_s/ds
        S = f / sig
        J = Jx / sig[:, :, None]  # J[n, j, i] = ∂_j S_i
        dS = ft / sig - f * (dsig / (sig * sig))
        JT_x = torch.bmm(J, x[:, :, None])[:, :, 0]  # Σ_i ∂_j S_i x_i
        JT_S = torch.bmm(J, S[:, :, None])[:, :, 0]
        return f, dS - 0.5 * b * (S + JT_x + 2.0 * JT_S + lap / sig)

    # -- generation and likelihood -----------------------------------------
    def sample(self, n: int, rng: np.random.Generator, method: str = "ode", nsteps: int | None = None,
               generator: torch.Generator | None = None) -> np.ndarray:
        """Generate n samples of ≈ π from η_T (exact) by the reverse SDE ("sde") or the ODE ("ode")."""
        if method not in ("ode", "sde"):
            raise ValueError(f"method={method!r}; expected 'ode' (probability flow) or 'sde' (reverse Euler–Maruyama)")
        nsteps = int(nsteps or self.nsteps)
        x = self._tensor(self.problem.rho0.sample(n, rng))
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(int(rng.integers(2**62)))
        b = self.beta
        with torch.no_grad():
            if method == "sde":
                h = (self.T - self.eps) / nsteps
                for k in range(nsteps):
                    s = self.T - k * h
                    drift = 0.5 * b * x + b * self.score(x, s)
                    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                    x = x + h * drift + math.sqrt(b * h) * noise
            else:
                sT = torch.full((n,), self.T, dtype=x.dtype, device=x.device)
                f = lambda s, y: [-(0.5 * b * y[0] + 0.5 * b * self.score(y[0], s))]  # noqa: E731  dx/ds
                x = rk4(f, [x], sT, torch.full_like(sT, self.eps), nsteps)[0]
        return x.cpu().numpy()

    def pf_rhs(self, s, x):
        """Probability-flow ODE in forward time: f = -½βx - ½β s_θ, and ∇·f (exact)."""
        s = _as_time(s, x)
        N, div = self.net.divergence(x, s)  # exact, forward-mode: no nested autograd
        sig = self.sigma(s)
        f = -0.5 * self.beta * (x + N / sig[:, None])
        dv = -0.5 * self.beta * (self.d + div / sig)
        return [f, dv]

    def log_density(self, x: torch.Tensor, s: torch.Tensor, nsteps: int) -> tuple:
        """log η_s(x) = log η_T(x_T) + ∫_s^T ∇·f dσ along the probability-flow ODE."""
        sT = torch.full_like(s, self.T)
        xT, acc = rk4(lambda ss, y: self.pf_rhs(ss, y[0]), [x, torch.zeros_like(s)], s, sT, nsteps)
        xTn = xT.detach().cpu().numpy().astype(float)
        return _np_logpdf(self.problem.rho0, xTn) + acc.detach().cpu().numpy().astype(float), xTn

    def evaluate_grid(self, grid: Grid, nsteps: int | None = None, chunk: int = 20000, density: bool = True) -> tuple:
        """ρ_t = model η_{T-t} (probability-flow likelihood), φ = -log ρ_t, score, velocity β s_θ."""
        nsteps = nsteps or self.nsteps
        pts = grid.points().reshape(-1, self.d)
        svals = np.maximum(self.T - grid.t, self.eps)
        ss = np.repeat(svals, pts.shape[0])
        xx = np.tile(pts, (grid.t.size, 1))
        logr = np.full(ss.size, np.nan)
        sc = np.empty((ss.size, self.d))
        for a in range(0, ss.size, chunk):
            b = min(a + chunk, ss.size)
            x, s = self._tensor(xx[a:b]), self._tensor(ss[a:b])
            with torch.no_grad():
                sc[a:b] = self.score(x, s).cpu().numpy()
                if density:
                    logr[a:b] = self.log_density(x, s, nsteps)[0]
        shape = (grid.t.size,) + grid.shape
        rho = np.exp(logr).reshape(shape)
        sc = sc.reshape(shape + (self.d,))
        return rho, -logr.reshape(shape), {"score": sc, "velocity": self.beta * sc}

    def trajectories(self, x0, nt: int, substeps: int | None = None) -> np.ndarray:
        """Probability-flow ODE paths in generative time t = T - s (s from T to ε); (nt+1, N, d)."""
        x = self._tensor(x0)
        sub = substeps or max(1, math.ceil(self.nsteps / nt))
        sgrid = np.linspace(self.T, self.eps, nt + 1)
        out = [x.cpu().numpy()]
        f = lambda s, y: [self.pf_rhs(s, y[0])[0]]  # noqa: E731
        with torch.no_grad():
            for j in range(nt):
                sa = torch.full((x.shape[0],), sgrid[j], dtype=x.dtype, device=x.device)
                x = rk4(f, [x], sa, torch.full_like(sa, sgrid[j + 1]), sub)[0]
                out.append(x.cpu().numpy())
        return np.stack(out)


class HJBScoreModel(ScoreModel):
    """The HJB-regularised score model: :class:`ScoreModel` with α_HJB = 1 by default."""

    name = "hjb-sgm"

    def __init__(self, problem, alpha_hjb: float = 1.0, **kw):
        super().__init__(problem, alpha_hjb=alpha_hjb, **kw)


# --------------------------------------------------------------------------
# neural Wasserstein gradient flow (JKO chain)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# linear-quadratic MFG: the direct (stochastic-control) method
# --------------------------------------------------------------------------


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


class NeuralLQ(NeuralModel):
    r"""Direct method for the potential lq game (DESIGN §3.4), ν ≥ 0.

    A potential Φ(x, t) (the OT-Flow :class:`PotentialNet`, which plays the MFG φ:
    v = -∇Φ/λ) drives a batch of particles X₀ ~ ρ₀ by Euler–Maruyama over ``nsteps``
    steps of Δt = T/nsteps,

        X_{k+1} = X_k - ∇Φ(X_k, t_k)/λ Δt + √(2νΔt) Z_k,   Z_k ~ N(0, I) (drawn in numpy),

    (mirrored at reflecting walls, wrapped on periodic boxes) and the loss is the
    mean-field control cost of the batch plus an optional HJB penalty:

        loss = (1/n) Σ_i { Σ_k [(λ/2)|v_k^i|² + (q/2)|X_k^i - m̄_k|²] Δt + (q_T/2)|X_N^i - m̄_N|² }
               + α_R (1/n) Σ_i Σ_k |R(X_k^i, t_k)| Δt,

    m̄_k the batch mean at step k (the mean-field term: (q/2)·the batch variance is F(ρ_k)
    with δF/δρ = f up to a constant, so the first line is J(ρ, v) of DESIGN §2 and its
    minimiser over feedback controls is the MFG equilibrium of this potential game), and
    R = -∂tΦ - νΔΦ + |∇Φ|²/(2λ) - (q/2)|x - m̄_k|² (:func:`lq_hjb_residual`).

    On the grid: φ = Φ (up to a constant per time), velocity = -∇Φ/λ, and ρ from
    ``eval_particles`` particles X₀ ~ ρ₀ simulated by Euler–Maruyama with
    S = ⌈eval_steps/nt⌉ steps of h = Δt_g/S per grid interval (normals seeded by
    ``eval_seed``). Given the particles at the start of the last step before grid time
    t_k, their law at t_k is exactly the mixture (1/N) Σ_i N(c_i, 2νh I), c_i = X_i + h v(X_i)
    (the EM step's Gaussian transition): ρ(·, t_k) is the cell average of this mixture
    (convolved with N(0, b²I), b = ``bandwidth``, default 0), folded into the box
    (:func:`neural.particles.mixture_cell_density`; ν = b = 0 gives the histogram).
    Mass is 1 to round-off. Biases: the EM time step (weak order 1, O(h)), and the cell
    average against point values, (h_x²/24)Δρ + O(h_x⁴); the Monte-Carlo error is
    ~ N^{-1/2}. ρ at t = 0 is ρ₀ on the nodes.

    Hyper-parameters: width (32), nlayers (2), rank, nsteps (40), alpha_R (0), alpha_T (0:
    weight of the terminal mismatch mean |Φ(X_N, T) - g(X_N)|), eval_particles (200000),
    eval_steps (64), eval_seed (0), bandwidth (0).
    """

    name = "lq"
    families = ("lq",)
    density_method = ("particles: cell averages of the exact Gaussian law of the last Euler-Maruyama step "
                      "given the simulated particles")

    def __init__(self, problem, width: int = 32, nlayers: int = 2, rank: int | None = None, nsteps: int = 40,
                 alpha_R: float = 0.0, alpha_T: float = 0.0, eval_particles: int = 200000, eval_steps: int = 64,
                 eval_seed: int = 0, bandwidth: float = 0.0):
        super().__init__(problem, width=width, nlayers=nlayers, rank=rank, nsteps=nsteps, alpha_R=alpha_R,
                         alpha_T=alpha_T, eval_particles=eval_particles, eval_steps=eval_steps, eval_seed=eval_seed,
                         bandwidth=bandwidth)
        if problem.drift is not None or not (isinstance(problem.running_cost, (int, float))
                                             and problem.running_cost == 0.0):
            raise ValueError("model 'lq' needs b = 0 and c = 0 (the lq family); got a drift or a running cost")
        for label, v, lo in (("nsteps", nsteps, 1), ("eval_particles", eval_particles, 2), ("eval_steps", eval_steps, 1)):
            if not (isinstance(v, (int, np.integer)) and v >= lo):
                raise ValueError(f"{label}={v!r}; expected an integer >= {lo}")
        if alpha_R < 0 or alpha_T < 0:
            raise ValueError(f"alpha_R={alpha_R}, alpha_T={alpha_T}; expected non-negative weights")
        if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth >= 0):
            raise ValueError(f"bandwidth={bandwidth!r}; expected a finite number >= 0")
        self.lam, self.nu = float(problem.lam), float(problem.nu)
        self.q, self.qT = float(problem.params["q"]), float(problem.params["qT"])
        self.net = PotentialNet(self.d, width, nlayers, rank)
        self.nsteps = int(nsteps)
        self.alpha_R, self.alpha_T = float(alpha_R), float(alpha_T)

    def _ref(self):
        # the network may be swapped for an analytic potential without parameters (tests)
        for p in self.parameters():
            return p
        return next(self.buffers())

    def draw(self, n: int, rng: np.random.Generator, step: int) -> dict:
        """X₀ ~ ρ₀ (n, d) and, for ν > 0, the Brownian increments' normals Z (nsteps, n, d)."""
        out = {"x": self.problem.rho0.sample(n, rng)}
        if self.nu > 0:
            out["z"] = rng.standard_normal((self.nsteps, n, self.d))
        return out

    def _boundary(self, x):
        from .particles import apply_boundary

        return apply_boundary(x, self.problem.domain, self.problem.boundary)

    def loss(self, batch: dict, step: int = 0):
        x = batch["x"]
        z = batch.get("z")
        n, d = x.shape
        dt = self.T / self.nsteps
        sq = math.sqrt(2.0 * self.nu * dt)
        need_res = self.alpha_R > 0
        kin = x.new_zeros(n)
        run = x.new_zeros(n)
        res = x.new_zeros(n)
        for k in range(self.nsteps):
            t = k * dt
            m = x.mean(0)
            if need_res:
                R, gx = lq_hjb_residual(self.net.grad_lap, x, t, m, self.q, self.nu, self.lam)
                res = res + R.abs() * dt
            else:
                gx = self.net.grad_lap(x, t, need_lap=False, need_phi=False)[1][:, :d]
            dev = x - m
            kin = kin + (gx * gx).sum(1) * (dt / (2.0 * self.lam))
            run = run + (dev * dev).sum(1) * (0.5 * self.q * dt)
            x = x - gx * (dt / self.lam)
            if z is not None:
                x = x + sq * z[k]
            x = self._boundary(x)
        devT = x - x.mean(0)
        gT = 0.5 * self.qT * (devT * devT).sum(1)
        parts = {"kinetic": kin.mean(), "coupling": run.mean(), "terminal": gT.mean()}
        loss = parts["kinetic"] + parts["coupling"] + parts["terminal"]
        if need_res:
            parts["hjb"] = res.mean()
            loss = loss + self.alpha_R * parts["hjb"]
        if self.alpha_T > 0:
            phiT = self.net.grad_lap(x, self.T, need_lap=False)[0]
            mis = (phiT - gT).abs().mean()
            parts["terminal_mismatch"] = mis
            loss = loss + self.alpha_T * mis
        return loss, parts

    def potential(self, x, t):
        phi, g, _ = self.net.grad_lap(x, t, need_lap=False)
        return phi, -g[:, :-1] / self.lam

    # -- particles ---------------------------------------------------------
    def _velocity(self, x, t: float, chunk: int = 20000):
        """v = -∇Φ(x, t)/λ in chunks (large batches are 2-3× slower per particle on a CPU)."""
        out = [-self.net.grad_lap(x[a:a + chunk], t, need_lap=False, need_phi=False)[1][:, :self.d] / self.lam
               for a in range(0, x.shape[0], chunk)]
        return torch.cat(out) if len(out) > 1 else out[0]

    def simulate(self, x0, times, substeps: int, seed: int, record_centres: bool = False):
        """Euler–Maruyama from x0 (N, d) through the increasing ``times`` (t₀ = times[0]).

        ``substeps`` EM steps per interval; the normals of step j come from
        ``default_rng([seed, j])``. Returns the positions at every time (len(times), N, d)
        and, with ``record_centres``, the centres X + hv(X) of the last step of every
        interval (entry 0 is x0): given them, the law of the positions is exactly
        N(centre, 2νh I) per particle (before the walls).
        """
        x = self._tensor(x0)
        out = [np.array(x0, dtype=float)]
        centres = [np.array(x0, dtype=float)]
        j = 0
        with torch.no_grad():
            for a in range(len(times) - 1):
                h = (times[a + 1] - times[a]) / substeps
                sq = math.sqrt(2.0 * self.nu * h)
                for s in range(substeps):
                    x = x + h * self._velocity(x, times[a] + s * h)
                    if record_centres and s == substeps - 1:
                        centres.append(self._boundary(x).cpu().numpy().astype(float))
                    if self.nu > 0:
                        zz = np.random.default_rng([int(seed), j]).standard_normal(tuple(x.shape))
                        x = x + sq * self._tensor(zz)
                    x = self._boundary(x)
                    j += 1
                out.append(x.cpu().numpy().astype(float))
        return (np.stack(out), np.stack(centres)) if record_centres else np.stack(out)

    def substeps(self, nt: int) -> int:
        """EM steps per grid interval: ⌈eval_steps/nt⌉."""
        return max(1, math.ceil(int(self.config.get("eval_steps", 64)) / int(nt)))

    def evaluate_grid(self, grid: Grid, nsteps: int | None = None, chunk: int = 20000, density: bool = True) -> tuple:
        """φ = Φ, velocity -∇Φ/λ on the nodes; ρ from the particle simulation (class docstring).

        ``nsteps`` overrides ``eval_steps`` (EM steps over [0, T], rounded up to a
        multiple of nt).
        """
        from .particles import mixture_cell_density

        pts = grid.points().reshape(-1, self.d)
        shape = (grid.t.size,) + grid.shape
        phi = np.empty((grid.t.size, pts.shape[0]))
        vel = np.empty((grid.t.size, pts.shape[0], self.d))
        for k, tk in enumerate(grid.t):
            for a in range(0, pts.shape[0], chunk):
                b = min(a + chunk, pts.shape[0])
                with torch.no_grad():
                    p, v = self.potential(self._tensor(pts[a:b]), float(tk))
                phi[k, a:b] = p.cpu().numpy()
                vel[k, a:b] = v.cpu().numpy()
        rho = np.full(shape, np.nan)
        if density:
            cfg = self.config
            N = int(cfg.get("eval_particles", 200000))
            seed = int(cfg.get("eval_seed", 0))
            nt = grid.t.size - 1
            sub = max(1, math.ceil(int(nsteps) / nt)) if nsteps else self.substeps(nt)
            x0 = self.problem.rho0.sample(N, np.random.default_rng([seed, 2**31]))
            x0 = np.asarray(self._boundary(x0), dtype=float)
            _, centres = self.simulate(x0, grid.t, sub, seed, record_centres=True)
            b = float(cfg.get("bandwidth") or 0.0)
            sigma = math.sqrt(2.0 * self.nu * grid.dt / sub + b * b)
            rho[0] = self.problem.rho0.pdf(grid.points())
            for k in range(1, grid.t.size):
                rho[k] = mixture_cell_density(centres[k], sigma, self.problem.domain, grid.shape, self.problem.boundary)
        return rho, phi.reshape(shape), {"velocity": vel.reshape(shape + (self.d,))}

    def trajectories(self, x0, nt: int, substeps: int | None = None, seed: int | None = None) -> np.ndarray:
        """Euler–Maruyama paths (with noise for ν > 0) at t_j = jT/nt from x0 (N, d); (nt+1, N, d).

        ``substeps`` per interval (default ⌈eval_steps/nt⌉); normals from
        ``default_rng([seed, j])``, seed default ``eval_seed``.
        """
        sub = substeps or self.substeps(nt)
        seed = int(self.config.get("eval_seed", 0)) if seed is None else int(seed)
        x0 = np.asarray(x0, dtype=float)
        return self.simulate(x0, np.linspace(0.0, self.T, nt + 1), sub, seed)


MODELS = {"otflow": OTFlow, "ffjord": FFJORD, "sgm": ScoreModel, "hjb-sgm": HJBScoreModel, "wgf": NeuralWGF, "lq": NeuralLQ}


def get_model(name: str):
    """The model class registered under ``name``; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]
