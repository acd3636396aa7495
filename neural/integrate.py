"""Fixed-step integrators on augmented states and exact divergences.

States are lists of tensors whose first dimension is the batch N; the step
``h`` is a (N,) tensor so each sample may run over its own interval (the
grid evaluation integrates every (x, t_k) pair back to 0 in one batch).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["rk4", "divergence", "bcast"]


def bcast(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (N,) coefficient shaped to multiply ``like`` (N, ...)."""
    return c.reshape((-1,) + (1,) * (like.ndim - 1))


def rk4(f: Callable, state: Sequence[torch.Tensor], t0: torch.Tensor, t1: torch.Tensor, nsteps: int,
        record: bool = False):
    """Classical RK4 for y' = f(t, y) from t0 to t1 in ``nsteps`` equal steps.

    Args:
        f: f(t (N,), state list) -> list of derivatives (same shapes as state).
        state: initial state, list of tensors with leading dimension N.
        t0, t1: (N,) start and end times (t1 < t0 integrates backward).
        nsteps: number of steps ≥ 1.
        record: also return the list of first components at every step.

    Returns:
        the final state list (and the recorded first components if ``record``).
    """
    if nsteps < 1:
        raise ValueError(f"nsteps={nsteps}; expected at least one RK4 step")
    h = (t1 - t0) / nsteps
    y = list(state)
    t = t0
    path = [y[0]] if record else None
    for _ in range(nsteps):
        k1 = f(t, y)
        k2 = f(t + 0.5 * h, [a + bcast(0.5 * h, a) * k for a, k in zip(y, k1)])
        k3 = f(t + 0.5 * h, [a + bcast(0.5 * h, a) * k for a, k in zip(y, k2)])
        k4 = f(t + h, [a + bcast(h, a) * k for a, k in zip(y, k3)])
        y = [a + bcast(h / 6.0, a) * (p + 2.0 * q + 2.0 * r + s) for a, p, q, r, s in zip(y, k1, k2, k3, k4)]
        t = t + h
        if record:
            path.append(y[0])
    return (y, path) if record else y


def divergence(v: torch.Tensor, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Exact ∇·v = Σ_i ∂v_i/∂x_i by d backward passes (d = 1, 2: cheap), shape (N,)."""
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(x.shape[1]):
        gi = torch.autograd.grad(v[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[0]
        div = div + gi[:, i]
    return div
