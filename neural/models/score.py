"""Score-based models with the OU/VP forward process: plain and HJB-regularised (DESIGN §3.2)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pde.grid import Grid

from ..integrate import rk4
from ..nets import MLPField, _as_time
from .base import NeuralModel, _np_logpdf
from .residuals import score_hjb_residual

__all__ = ["ScoreModel", "HJBScoreModel"]


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
