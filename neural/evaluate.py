"""Trained models on the PDE grid, in the solution-file format of DESIGN §6."""

from __future__ import annotations

import time

import numpy as np
import torch

from pde.solution import MFGSolution, package_versions

from .models import NeuralModel
from .train import TrainResult

__all__ = ["evaluate_on_grid", "trajectories"]


def _unpack(model_or_result):
    if isinstance(model_or_result, TrainResult):
        return model_or_result.model, model_or_result
    if isinstance(model_or_result, NeuralModel):
        return model_or_result, None
    raise TypeError(f"expected a TrainResult or a neural model (got {type(model_or_result).__name__})")


def evaluate_on_grid(model_or_result, problem=None, n=None, nt=None, nsteps: int | None = None,
                     density: bool = True, chunk: int = 20000) -> MFGSolution:
    """Evaluate a trained model on the problem's grid.

    Returns an :class:`pde.MFGSolution` with

    - ``rho`` (nt+1, *grid): the model's density at each grid time — for the
      flows (otflow, ffjord, wgf) by integrating each node back to t = 0 and
      using the exact log-determinant, log ρ_t(x) = log ρ₀(x₀) - ∫₀ᵗ ∇·v; for
      the score models ρ_t = η_{T-t} by the probability-flow likelihood; for lq
      from a seeded particle simulation (cell averages of the exact last-step
      Gaussian transitions, see :class:`neural.NeuralLQ`);
    - ``phi`` (nt+1, *grid): the potential in the ``pde`` convention
      (v = -∇φ/λ), up to an additive constant per time: Φ for otflow/wgf/lq,
      -log ρ_t for the score models, NaN for ffjord (no potential);
    - extras ``velocity`` (nt+1, *grid, d) (the control v, pde convention)
      and, for score models, ``score`` (nt+1, *grid, d) = s_θ(x, T - t)
      (at t = T the score is taken at s = ε).

    Args:
        model_or_result: a :class:`TrainResult` or a model.
        problem: defaults to the one the model was built with.
        n, nt: grid overrides.
        nsteps: RK4 steps of the density integration (model default).
        density: skip the (costly) density when False (rho is then NaN).
    """
    model, result = _unpack(model_or_result)
    problem = problem if problem is not None else model.problem
    if problem.dim != model.d:
        raise ValueError(f"the problem is {problem.dim}-D but the model is {model.d}-D")
    grid = problem.grid(n=n, nt=nt)
    if abs(grid.T - model.T) > 1e-12:
        raise ValueError(f"the problem's horizon T={grid.T} differs from the model's T={model.T}")
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        rho, phi, extras = model.evaluate_grid(grid, nsteps=nsteps, chunk=chunk, density=density)
    finally:
        model.train(was_training)
    meta = {
        "method": f"neural:{model.name}",
        "model": model.name,
        "config": model.config,
        "problem": problem.describe(),
        "grid": grid.to_dict(),
        "phi_convention": "pde (v = -grad(phi)/lam), up to an additive constant per time"
        if model.name != "ffjord" else "none (free-form velocity: phi is NaN)",
        "density": (getattr(model, "density_method", "exact log-determinant along the flow")
                    if density else "not computed"),
        "eval_wall_time_s": time.perf_counter() - t0,
        "versions": package_versions(),
    }
    if result is not None:
        meta.update(train_steps=result.step, train_wall_time_s=result.wall_time, seed=result.seed,
                    device=result.device, dtype=result.dtype, train=result.train_config,
                    final_loss=float(result.losses[-1]) if len(result.losses) else None,
                    checkpoint=str(result.checkpoint) if result.checkpoint else None)
    return MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, extras=extras, status="trained")


def trajectories(model_or_result, x0, nt: int, substeps: int | None = None, seed: int | None = None) -> np.ndarray:
    """Particle paths of a trained flow, (nt+1, N, d), at t_j = jT/nt.

    For otflow/ffjord/wgf the paths follow dx/dt = v(x, t) from x0 ~ ρ₀; for the
    score models they follow the probability-flow ODE in generative time
    (x0 ~ η_T); for lq they are Euler–Maruyama paths of dX = -∇Φ/λ dt + √(2ν) dW
    (with noise when ν > 0; normals seeded by ``seed``, default the model's
    ``eval_seed``). ``substeps`` RK4 (EM) steps per interval (default: at least
    the model's own number of steps over [0, T]).
    """
    model, _ = _unpack(model_or_result)
    x0 = np.asarray(x0, dtype=float)
    if x0.ndim != 2 or x0.shape[1] != model.d:
        raise ValueError(f"x0 has shape {x0.shape}; expected (N, {model.d})")
    if int(nt) < 1:
        raise ValueError(f"nt={nt}; expected >= 1")
    with torch.no_grad():
        if seed is not None:
            return model.trajectories(x0, int(nt), substeps, seed=int(seed))
        return model.trajectories(x0, int(nt), substeps)
