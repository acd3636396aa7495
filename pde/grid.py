"""Space-time tensor grids shared by the FD solver, closed forms and compare.

Convention (both boundary kinds): **cell-centred** nodes. Each axis
[lo, hi] is cut into ``n`` cells of width ``h = (hi - lo)/n`` and the node
is the cell centre ``x_i = lo + (i + 1/2) h``. The discrete integral is
``h^d Σ_i ρ_i`` (midpoint rule, second order), so a reflecting (no-flux)
wall sits on a cell face and a periodic box identifies ``lo`` with ``hi``.
Time levels are ``t_k = k Δt``, ``k = 0..nt``, ``Δt = T/nt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["Grid", "BOUNDARIES", "gradient"]

BOUNDARIES = ("reflecting", "periodic")


@dataclass(frozen=True)
class Grid:
    """A tensor grid on a box times [0, T].

    Attributes:
        domain: ((lo, hi), ...) per dimension.
        n: nodes (= cells) per dimension.
        nt: number of time steps.
        T: final time.
        boundary: "reflecting" or "periodic".
    """

    domain: tuple
    n: tuple
    nt: int
    T: float
    boundary: str = "reflecting"

    def __post_init__(self):
        dom = tuple((float(lo), float(hi)) for lo, hi in self.domain)
        n = tuple(int(k) for k in (self.n if np.ndim(self.n) else (self.n,) * len(dom)))
        if len(n) != len(dom):
            raise ValueError(f"grid n={list(n)} has {len(n)} entries; expected one per dimension ({len(dom)})")
        for lo, hi in dom:
            if not hi > lo:
                raise ValueError(f"domain interval [{lo}, {hi}] is empty; expected lo < hi")
        for k in n:
            if k < 3:
                raise ValueError(f"grid n={list(n)}: each dimension needs at least 3 nodes")
        if int(self.nt) < 1:
            raise ValueError(f"nt={self.nt}; expected at least one time step")
        if not self.T > 0:
            raise ValueError(f"T={self.T}; expected T > 0")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary={self.boundary!r}; expected one of {list(BOUNDARIES)}")
        object.__setattr__(self, "domain", dom)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "nt", int(self.nt))
        object.__setattr__(self, "T", float(self.T))

    @property
    def dim(self) -> int:
        return len(self.n)

    @property
    def shape(self) -> tuple:
        return self.n

    @property
    def size(self) -> int:
        return int(np.prod(self.n))

    @property
    def h(self) -> tuple:
        return tuple((hi - lo) / k for (lo, hi), k in zip(self.domain, self.n))

    @property
    def dt(self) -> float:
        return self.T / self.nt

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.h))

    @cached_property
    def axes(self) -> tuple:
        return tuple(lo + (np.arange(k) + 0.5) * hk for (lo, _), k, hk in zip(self.domain, self.n, self.h))

    @cached_property
    def t(self) -> np.ndarray:
        return np.linspace(0.0, self.T, self.nt + 1)

    def mesh(self) -> tuple:
        """Coordinate arrays, each of shape ``self.shape`` (``indexing='ij'``)."""
        return tuple(np.meshgrid(*self.axes, indexing="ij"))

    def points(self) -> np.ndarray:
        """Nodes as an array of shape ``(*self.shape, d)``."""
        return np.stack(self.mesh(), axis=-1)

    def integrate(self, f: np.ndarray) -> np.ndarray:
        """h^d Σ over the trailing ``dim`` axes (the discrete integral)."""
        f = np.asarray(f)
        return f.reshape(f.shape[: f.ndim - self.dim] + (-1,)).sum(-1) * self.cell_volume

    def with_(self, **changes) -> "Grid":
        from dataclasses import replace

        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "domain": [list(d) for d in self.domain],
            "n": list(self.n),
            "nt": self.nt,
            "T": self.T,
            "boundary": self.boundary,
            "h": list(self.h),
            "dt": self.dt,
            "nodes": "cell-centred",
        }


def gradient(f: np.ndarray, axes, boundary: str = "reflecting", edge_order: int = 2) -> np.ndarray:
    """Nodal gradient of ``f`` on its trailing ``len(axes)`` axes: (…, *shape) → (…, *shape, d).

    Central differences inside; a periodic box wraps, a reflecting one takes one-sided differences
    of order ``edge_order`` (1 or 2, as :func:`numpy.gradient`) at the two end nodes of each axis.
    """
    d = len(axes)
    out = []
    for j, ax in enumerate(axes):
        axis = f.ndim - d + j
        h = float(ax[1] - ax[0])
        if boundary == "periodic":
            out.append((np.roll(f, -1, axis=axis) - np.roll(f, 1, axis=axis)) / (2 * h))
        else:
            out.append(np.gradient(f, h, axis=axis, edge_order=edge_order))
    return np.stack(out, axis=-1)


def kinetic_energy(grid: Grid, rho: np.ndarray, phi: np.ndarray, lam: float) -> float:
    """∫₀ᵀ∫ |∇φ|²ρ/(2λ) dx dt of time levels ``rho``, ``phi`` of shape (nt+1, *grid.shape).

    The value of J = ∫∫(λ/2)|v|²ρ for the feedback v = −∇φ/λ: central differences in space
    (second-order one-sided at reflecting walls), the trapezoid rule in time.
    """
    per = []
    for k in range(rho.shape[0]):
        g = gradient(phi[k], grid.axes, grid.boundary)
        per.append(float(grid.integrate((g * g).sum(-1) * rho[k])) / (2.0 * lam))
    per = np.asarray(per)
    return float(np.sum(0.5 * (per[1:] + per[:-1]) * np.diff(grid.t)))
