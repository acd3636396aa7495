"""PNG of an FE density on its mesh (``solve_fe(figure_path=...)``, ``mfglab solve --figure``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_density"]


def plot_density(Xg: np.ndarray, cells_g: np.ndarray, R: np.ndarray, t: np.ndarray, path, title: str = "") -> Path:
    """PNG of ρ at t = 0, T/2, T (2D: on the mesh; 1D: curves). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    ks = [0, (t.size - 1) // 2, t.size - 1]
    path = Path(path)
    if Xg.shape[1] == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        o = np.argsort(Xg[:, 0])
        for k in ks:
            ax.plot(Xg[o, 0], R[k, o], label=f"t={t[k]:.3g}")
        ax.set_xlabel("x")
        ax.set_ylabel("rho")
        ax.legend()
    else:
        from matplotlib.tri import Triangulation

        tri = Triangulation(Xg[:, 0], Xg[:, 1], cells_g)
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
        vmax = float(R[ks].max())
        for ax, k in zip(axes, ks):
            im = ax.tripcolor(tri, R[k], shading="gouraud", vmin=0.0, vmax=vmax, cmap="viridis")
            ax.triplot(tri, lw=0.1, color="w", alpha=0.3)
            ax.set_aspect("equal")
            ax.set_title(f"t = {t[k]:.3g}")
        fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="rho")
    if title:
        fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
