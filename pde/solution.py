"""Solutions on a space-time grid and their file format (DESIGN §6).

File: ``.npz`` with arrays

- ``t``  (nt+1,)            time levels
- ``x``  (nx,) and, in 2D, ``y`` (ny,)   node coordinates (cell centres)
- ``rho`` (nt+1, nx[, ny])  density at the nodes
- ``phi`` (nt+1, nx[, ny])  potential at the nodes (NaN where a model has none)
- ``meta``  a JSON string: problem, method, grid, iterations, residual
  history, mass error, wall time, package versions, …
- optional extra arrays, e.g. ``score`` (nt+1, nx[, ny], d) or ``eta``.

Files are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .grid import Grid
from .io import read_npz, save_npz

__all__ = ["MFGSolution", "package_versions", "CORE_ARRAYS"]

CORE_ARRAYS = ("t", "x", "y", "rho", "phi", "meta")


def package_versions() -> dict:
    """Versions of the packages that matter for reproducing a result."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("numpy", "scipy", "numba", "torch", "dolfinx", "petsc4py", "ot"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


@dataclass
class MFGSolution:
    """ρ and φ on a space-time tensor grid, with metadata.

    Attributes:
        t: (nt+1,) time levels.
        axes: tuple of 1D node arrays, one per dimension.
        rho: (nt+1, *shape) densities.
        phi: (nt+1, *shape) potentials.
        meta: JSON-serialisable metadata.
        extras: further named arrays (``score``, ``eta``, …).
        status: "converged", "max_iter", "exact", "trained", …
    """

    t: np.ndarray
    axes: tuple
    rho: np.ndarray
    phi: np.ndarray
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    status: str = "converged"

    def __post_init__(self):
        self.t = np.asarray(self.t, dtype=float)
        self.axes = tuple(np.asarray(a, dtype=float) for a in self.axes)
        self.rho = np.asarray(self.rho, dtype=float)
        self.phi = np.asarray(self.phi, dtype=float)
        shape = (self.t.size,) + tuple(a.size for a in self.axes)
        for name in ("rho", "phi"):
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}; expected {shape} = (nt+1, *grid)")
        for name in self.extras:
            if name in CORE_ARRAYS:
                raise ValueError(f"extra array name {name!r} clashes with a core array {CORE_ARRAYS}")

    # -- geometry ------------------------------------------------------------

    @property
    def dim(self) -> int:
        return len(self.axes)

    @property
    def h(self) -> tuple:
        return tuple(float(a[1] - a[0]) for a in self.axes)

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.h))

    def grid(self) -> Grid:
        """The Grid these arrays live on (cell-centred nodes)."""
        g = self.meta.get("grid", {})
        dom = g.get("domain") or [[a[0] - (a[1] - a[0]) / 2, a[-1] + (a[1] - a[0]) / 2] for a in self.axes]
        return Grid(dom, [a.size for a in self.axes], self.t.size - 1, float(self.t[-1]), g.get("boundary", "reflecting"))

    def mass(self) -> np.ndarray:
        """∫ρ_t for every time level, shape (nt+1,)."""
        return self.rho.reshape(self.t.size, -1).sum(-1) * self.cell_volume

    def time_index(self, t: float) -> int:
        """Index of the time level nearest to ``t`` (must be within half a step)."""
        k = int(np.argmin(np.abs(self.t - t)))
        dt = self.t[1] - self.t[0] if self.t.size > 1 else 1.0
        if abs(self.t[k] - t) > 0.5 * dt + 1e-12:
            raise ValueError(f"t={t} is outside [{self.t[0]}, {self.t[-1]}]")
        return k

    # -- file format ---------------------------------------------------------

    def save(self, path) -> Path:
        """Write the ``.npz`` atomically (see the module docstring)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"solution file {path} must end in .npz")
        arrays = {"t": self.t, "x": self.axes[0], "rho": self.rho, "phi": self.phi}
        if self.dim == 2:
            arrays["y"] = self.axes[1]
        for k, v in self.extras.items():
            arrays[k] = np.asarray(v)
        meta = dict(self.meta)
        meta.setdefault("status", self.status)
        return save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path) -> "MFGSolution":
        """Read a solution written by :meth:`save` (no pickles)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such solution file")
        z = read_npz(path, "solution file")
        missing = [k for k in ("t", "x", "rho", "phi", "meta") if k not in z]
        if missing:
            raise ValueError(f"{path}: not an mfglab solution file (missing arrays {missing})")
        try:
            meta = json.loads(str(z["meta"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: cannot read solution file, its meta is not JSON ({exc})") from None
        axes = (z["x"], z["y"]) if "y" in z else (z["x"],)
        extras = {k: z[k] for k in set(z) - set(CORE_ARRAYS)}
        return cls(z["t"], axes, z["rho"], z["phi"], meta=meta, extras=extras, status=meta.get("status", "unknown"))

    def summary(self) -> str:
        m = self.mass()
        return (f"{self.meta.get('method', '?')} solution: status={self.status}, grid={[a.size for a in self.axes]}, "
                f"nt={self.t.size - 1}, mass error={np.max(np.abs(m - 1)):.2e}, min rho={self.rho.min():.2e}")
