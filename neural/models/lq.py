"""The direct (stochastic-control) method for the linear-quadratic MFG (DESIGN §3.4)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pde.grid import Grid

from ..nets import PotentialNet
from .base import NeuralModel
from .residuals import lq_hjb_residual

__all__ = ["NeuralLQ"]


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
        from ..particles import apply_boundary

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
        from ..particles import mixture_cell_density

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
