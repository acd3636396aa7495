"""The neural generative flows of the lab, each an optimal-control solver of an MFG: the common interface.

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

from ..integrate import rk4

__all__ = ["NeuralModel"]


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
