"""The density a velocity implies, by backward characteristics; particle paths; grid fields as callables.

For a deterministic flow ``dX/dt = u(X, t)`` from ``X₀ ~ ρ₀`` the density
along a path obeys ``d log ρ/dt = −∇·u``, so for every node ``x`` and time
``t``

    ρ_t(x) = ρ₀(X₀) · exp(−∫₀ᵗ ∇·u(X_s, s) ds),   X_t = x,

with ``X_s`` traced back from ``(x, t)`` to ``s = 0``. Both ``X`` and the
integral are advanced by the classical RK4 scheme (one augmented state), so
the error is O(Δt⁴) in the step for smooth ``u``; it is far below the
discretisation error of any grid truth, unlike the first-order upwind
Fokker–Planck operator, whose numerical diffusion is O(h).

Grid fields (a velocity or score sampled on nodes) become callables through
:class:`GridField`: multilinear interpolation in (t, x[, y]) (second-order
accurate), and the divergence of a grid field by second-order central
differences on its own grid (one-sided second order at the ends),
interpolated the same way.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["log_density_by_characteristics", "flow_paths", "GridField", "fd_divergence"]


def _rk4_step(f, x, L, t, h):
    """One RK4 step of the augmented state (x, L) from t with step h."""
    k1x, k1l = f(x, t)
    k2x, k2l = f(x + 0.5 * h * k1x, t + 0.5 * h)
    k3x, k3l = f(x + 0.5 * h * k2x, t + 0.5 * h)
    k4x, k4l = f(x + h * k3x, t + h)
    return (x + h / 6.0 * (k1x + 2 * k2x + 2 * k3x + k4x),
            L + h / 6.0 * (k1l + 2 * k2l + 2 * k3l + k4l))


def log_density_by_characteristics(u: Callable, div_u: Callable, log_rho0: Callable, points: np.ndarray,
                                   times, T: float, steps: int = 32) -> np.ndarray:
    """log ρ_t at ``points`` (M, d) for each time in ``times``, by RK4 back to t = 0.

    Args:
        u: ``u(x (M, d), t float) -> (M, d)`` the flow velocity in generative time.
        div_u: ``div_u(x, t) -> (M,)`` its divergence.
        log_rho0: ``log_rho0(x) -> (M,)`` the initial log-density.
        points: (M, d) nodes.
        times: increasing times in [0, T].
        T: horizon.
        steps: at least this many RK4 steps over [0, T].

    When the times are evenly spaced from 0 (a truth's time levels), one
    sweep from the last time down to 0 carries every level at once: the
    nodes of level t_k join the sweep when it reaches t_k, so all rows share
    one time per call, with the step Δ = (t_{k+1} − t_k)/m, m = ⌈steps·Δt/T⌉
    (few large calls of the callables instead of one set per level).
    Otherwise each time is traced back on its own with ⌈steps·t/T⌉ equal steps.

    Returns:
        (len(times), M) log-densities (NaN where a value was not finite).
    """
    pts = np.asarray(points, dtype=float)
    tt = np.asarray(times, dtype=float)
    M = pts.shape[0]
    out = np.empty((tt.size, M))

    def f(x, t):
        dv = div_u(x, t)  # first: an adapter may keep the value it computed on the way (torch)
        return u(x, t), dv

    dts = np.diff(tt)
    if tt.size > 1 and abs(tt[0]) <= 1e-12 * max(1.0, T) and np.allclose(dts, dts[0], rtol=1e-9, atol=0):
        dt = float(dts[0])
        m = max(1, int(math.ceil(steps * dt / T - 1e-9)))
        h = -dt / m
        x = np.empty((0, pts.shape[1]))
        L = np.empty(0)
        with np.errstate(invalid="ignore", over="ignore"):
            for k in range(tt.size - 1, 0, -1):
                x = np.concatenate([x, pts])
                L = np.concatenate([L, np.zeros(M)])
                for j in range(m):
                    x, L = _rk4_step(f, x, L, tt[k] + j * h, h)
            # rows: level K first, then K-1, ..., 1; dL/ds = ∇·u, L(t) = 0  ⇒  L(0) = −∫₀ᵗ ∇·u ds
            res = (log_rho0(x) + L).reshape(tt.size - 1, M)
        out[1:] = res[::-1]
        out[0] = log_rho0(pts)
        return out
    for k, t in enumerate(tt):
        t = float(t)
        if t <= 0.0:
            out[k] = log_rho0(pts)
            continue
        n = max(1, int(math.ceil(steps * t / T - 1e-9)))
        h = -t / n
        x, L = pts.copy(), np.zeros(M)
        with np.errstate(invalid="ignore", over="ignore"):
            for j in range(n):
                x, L = _rk4_step(f, x, L, t + j * h, h)
            out[k] = log_rho0(x) + L
    return out


def flow_paths(u: Callable, x0: np.ndarray, times, T: float, steps: int = 32) -> np.ndarray:
    """Paths of ``dX/dt = u(X, t)`` from ``x0`` at ``times[0]``, recorded at each time: (K, N, d).

    Each interval gets ``max(1, ceil(steps·Δt/T))`` RK4 steps.
    """
    x = np.asarray(x0, dtype=float).copy()
    times = np.asarray(times, dtype=float)
    out = [x.copy()]
    zero = np.zeros(x.shape[0])

    def f(y, t):
        return u(y, t), zero

    with np.errstate(invalid="ignore", over="ignore"):
        for a, b in zip(times[:-1], times[1:]):
            n = max(1, int(math.ceil(steps * (b - a) / T - 1e-9)))
            h = (b - a) / n
            for j in range(n):
                x, _ = _rk4_step(f, x, zero, a + j * h, h)
            out.append(x.copy())
    return np.stack(out)


def fd_divergence(values: np.ndarray, axes) -> np.ndarray:
    """∇·F of a grid field (K, *grid, d) by second-order central differences (one-sided at the ends)."""
    d = len(axes)
    div = np.zeros(values.shape[:-1])
    for j, ax in enumerate(axes):
        div += np.gradient(values[..., j], float(ax[1] - ax[0]), axis=1 + j, edge_order=2)
    return div


class GridField:
    """A field sampled at times ``t`` (K,) on nodes ``axes`` as a callable ``f(x (M, d), t) -> (M, …)``.

    Multilinear interpolation in (t, x[, y]). A point outside the nodes'
    hull takes the value at the nearest point of the hull: a characteristic
    traced back from a node near the wall may leave the box, where ρ₀ holds
    less than the box's mass cut-off, and the model's grid is required to
    cover the truth's nodes, so this never replaces a value inside the
    truth's box. Times outside the file's range give NaN (nothing is
    invented in time). A single time level is constant in time.
    """

    def __init__(self, t, axes, values):
        from scipy.interpolate import RegularGridInterpolator

        self.t = np.asarray(t, dtype=float)
        self.axes = tuple(np.asarray(a, dtype=float) for a in axes)
        vals = np.asarray(values, dtype=float)
        self.single = self.t.size == 1
        grid = self.axes if self.single else (self.t,) + self.axes
        self._f = RegularGridInterpolator(grid, vals[0] if self.single else vals, method="linear",
                                          bounds_error=False, fill_value=np.nan)

    def __call__(self, x, t):
        x = np.asarray(x, dtype=float)
        x = np.stack([np.clip(x[:, j], a[0], a[-1]) for j, a in enumerate(self.axes)], axis=1)
        if self.single:
            return self._f(x)
        tt = np.full((x.shape[0], 1), float(t))
        return self._f(np.concatenate([tt, x], axis=1))
