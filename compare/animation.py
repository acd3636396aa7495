"""The truth-vs-model animation of a report: densities and particles over time (GIF; MP4 with ffmpeg).

1D: both densities as curves and the particles as a rug under them; 2D:
the truth and the model side by side on one colour scale per frame, the
particles over the model's panel. Frames are the truth's time levels
(at most ``max_frames``, evenly picked). The GIF is written with Pillow;
an MP4 is added only when ``ffmpeg`` is on the PATH.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation as mpl_animation  # noqa: E402

__all__ = ["write_animation"]


def _frames(truth, max_frames: int) -> np.ndarray:
    n = truth.t.size
    return np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))


def write_animation(folder, truth, model=None, trajectories=None, labels=("truth", "model"), *,
                    max_frames: int = 25, max_particles: int = 300, fps: int = 6, dpi: int = 70) -> list:
    """Write ``animation.gif`` (and ``animation.mp4`` with ffmpeg) into ``folder``; returns the file names."""
    folder = Path(folder)
    ks = _frames(truth, max_frames)
    paths = None
    if trajectories is not None:
        tr = np.asarray(trajectories, dtype=float)
        if tr.ndim == 3 and tr.shape[0] == truth.t.size:
            paths = tr[:, :max_particles]
    mrho = model.rho if model is not None and np.any(np.isfinite(model.rho)) else None
    d = truth.dim
    if d == 1:
        fig, ax = plt.subplots(figsize=(5.0, 3.2))
        x = truth.axes[0]
        top = np.nanmax([np.nanmax(truth.rho), np.nanmax(mrho) if mrho is not None else 0.0]) * 1.1
        (lt,) = ax.plot(x, truth.rho[0], "k-", label=labels[0])
        lm = ax.plot(x, mrho[0], "C0--", label=labels[1])[0] if mrho is not None else None
        rug = ax.plot([], [], "|", color="C3", ms=8, alpha=0.5, label="particles")[0] if paths is not None else None
        ax.set_ylim(-0.06 * top, top)
        ax.set_xlabel("x")
        ax.set_ylabel("ρ")
        ax.legend(fontsize=8, loc="upper right")
        title = ax.set_title("")

        def draw(k):
            lt.set_ydata(truth.rho[k])
            if lm is not None:
                lm.set_ydata(mrho[k])
            if rug is not None:
                rug.set_data(paths[k, :, 0], np.full(paths.shape[1], -0.03 * top))
            title.set_text(f"t = {truth.t[k]:.3g}")
            return [lt]
    else:
        ncol = 2 if mrho is not None else 1
        fig, axs = plt.subplots(1, ncol, figsize=(3.4 * ncol, 3.2), squeeze=False)
        axs = axs[0]
        ext = [truth.axes[0][0], truth.axes[0][-1], truth.axes[1][0], truth.axes[1][-1]]
        ims = []
        for ax, lab in zip(axs, labels):
            ims.append(ax.imshow(truth.rho[0].T, origin="lower", extent=ext, cmap="viridis", aspect="equal"))
            ax.set_title(lab, fontsize=9)
            ax.set_xlabel("x")
            ax.set_ylabel("y")
        sc = axs[-1].plot([], [], ".", color="w", ms=2, alpha=0.7)[0] if paths is not None else None
        title = fig.suptitle("")

        def draw(k):
            vmax = np.nanmax(truth.rho[k])
            ims[0].set_data(truth.rho[k].T)
            ims[0].set_clim(0, vmax)
            if mrho is not None:
                ims[1].set_data(np.nan_to_num(mrho[k]).T)
                ims[1].set_clim(0, vmax)
            if sc is not None:
                sc.set_data(paths[k, :, 0], paths[k, :, 1])
            title.set_text(f"t = {truth.t[k]:.3g}")
            return ims
    anim = mpl_animation.FuncAnimation(fig, draw, frames=list(ks), blit=False)
    out = ["animation.gif"]
    try:
        anim.save(folder / "animation.gif", writer=mpl_animation.PillowWriter(fps=fps), dpi=dpi)
        if shutil.which("ffmpeg"):
            anim.save(folder / "animation.mp4", writer=mpl_animation.FFMpegWriter(fps=fps), dpi=dpi)
            out.append("animation.mp4")
    finally:
        plt.close(fig)
    return out
