"""Figures for reports (matplotlib, Agg backend; every function returns a Figure).

- :func:`fields_figure`: truth vs model vs difference at several times, a
  colour scale shared between truth and model in each column (1D: curves).
- :func:`metrics_figure`: each metric of :func:`compare.metrics.evaluate` vs time.
- :func:`training_figure`: loss histories vs step.
- :func:`trajectories_figure`: particle paths (nt+1, N, d) over the truth.
- :func:`loglog_figure`: errors vs h with fitted slopes (convergence studies).

Axes carry x/y labels (the state coordinates are dimensionless, as in the
problem files) and each panel's title gives the time it shows.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pde.solution import MFGSolution  # noqa: E402

__all__ = ["fields_figure", "metrics_figure", "training_figure", "trajectories_figure", "loglog_figure",
           "figure_png"]

_LABEL = {"rho": "ρ (density)", "phi": "φ (potential)"}


def figure_png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (then closed)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _time_indices(sol: MFGSolution, times) -> list[int]:
    if times is None:
        times = np.linspace(sol.t[0], sol.t[-1], 5)
    return [int(np.argmin(np.abs(sol.t - s))) for s in times]


def _view_box(truth: MFGSolution, ks, floor: float = 1e-4, pad: float = 0.1):
    """Per-axis (lo, hi) around the nodes where any shown ρ_truth exceeds floor·max (the rest is empty box)."""
    mask = np.zeros(truth.rho.shape[1:], dtype=bool)
    for k in ks:
        r = truth.rho[k]
        mask |= r > floor * np.max(r)
    out = []
    for j, ax in enumerate(truth.axes):
        other = tuple(i for i in range(truth.dim) if i != j)
        hit = np.any(mask, axis=other) if other else mask
        h = ax[1] - ax[0]
        full = (ax[0] - h / 2, ax[-1] + h / 2)
        if not hit.any():
            out.append(full)
            continue
        lo, hi = ax[hit][0] - h / 2, ax[hit][-1] + h / 2
        w = hi - lo
        out.append((max(full[0], lo - pad * w), min(full[1], hi + pad * w)))
    return out


def _phi_aligned(truth: MFGSolution, model: MFGSolution | None, k: int, km: int | None, floor: float):
    """φ_truth and φ_model - c* on the region ρ_truth > floor·max (NaN elsewhere).

    c* is the ρ-weighted mean of φ_model - φ_truth: potentials are defined up
    to a constant, so the model is shifted onto the truth before plotting.
    """
    rho = truth.rho[k]
    m = (rho > floor * rho.max()) & np.isfinite(truth.phi[k])
    ft = np.where(m, truth.phi[k], np.nan)
    if model is None:
        return ft, None
    with np.errstate(invalid="ignore"):  # inf - inf where ρ underflows; masked below
        dlt = model.phi[km] - truth.phi[k]
    w = rho[m] / rho[m].sum()
    c = float((w * dlt[m]).sum())
    fm = np.where(m, model.phi[km] - c, np.nan)
    return ft, fm


def fields_figure(truth: MFGSolution, model: MFGSolution | None = None, times=None, field: str = "rho",
                  floor: float = 1e-3, suptitle: str | None = None, labels=("truth", "model")):
    """Truth (and model, and model - truth) at several times.

    1D: one column per time; top row the curves of truth and model, bottom
    row their difference. 2D: rows truth / model / difference, one column
    per time; truth and model share one colour scale per column, the
    difference has a symmetric diverging scale. For ``field="phi"`` the
    model is shifted by the ρ-weighted mean difference (potentials are
    defined up to a constant) and both are masked where ρ_truth ≤ floor·max.
    """
    if field not in ("rho", "phi"):
        raise ValueError(f"field={field!r}; expected 'rho' or 'phi'")
    ks = _time_indices(truth, times)
    kms = [int(np.argmin(np.abs(model.t - truth.t[k]))) for k in ks] if model is not None else [None] * len(ks)
    ncol = len(ks)

    def pair(k, km):
        if field == "rho":
            return truth.rho[k], (model.rho[km] if model is not None else None)
        return _phi_aligned(truth, model, k, km, floor)

    lab = _LABEL[field]
    if truth.dim == 1:
        x = truth.axes[0]
        nrow = 2 if model is not None else 1
        H = 2.6 * nrow + 0.5 + (0.3 if suptitle else 0.0)
        W = 3.0 * ncol + 0.5
        # margins in inches (a fixed layout: the constrained-layout solver costs seconds per figure)
        fig, axs = plt.subplots(nrow, ncol, figsize=(W, H), squeeze=False, sharex=True,
                                gridspec_kw=dict(left=0.8 / W, right=1 - 0.15 / W, bottom=0.55 / H,
                                                 top=1 - (0.4 + (0.3 if suptitle else 0.0)) / H,
                                                 wspace=0.3, hspace=0.35))
        for j, (k, km) in enumerate(zip(ks, kms)):
            ft, fm = pair(k, km)
            ax = axs[0, j]
            ax.plot(x, ft, "k-", lw=1.6, label=labels[0])
            if fm is not None:
                ax.plot(x, fm, "C1--", lw=1.4, label=labels[1])
            ax.set_title(f"t = {truth.t[k]:.3g}")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(lab)
                ax.legend(fontsize=8)
            if fm is not None:
                ax2 = axs[1, j]
                ax2.plot(x, fm - ft, "C3-", lw=1.2)
                ax2.axhline(0.0, color="0.5", lw=0.6)
                ax2.set_title(f"{labels[1]} − {labels[0]}, t = {truth.t[k]:.3g}", fontsize=9)
                ax2.grid(alpha=0.3)
                if j == 0:
                    ax2.set_ylabel("difference")
            axs[-1, j].set_xlabel("x")
        box = _view_box(truth, ks)
        for ax in axs.flat:
            ax.set_xlim(*box[0])
        if suptitle:
            fig.suptitle(suptitle)
        return fig

    x, y = truth.axes
    extent = [x[0] - (x[1] - x[0]) / 2, x[-1] + (x[1] - x[0]) / 2, y[0] - (y[1] - y[0]) / 2, y[-1] + (y[1] - y[0]) / 2]
    nrow = 3 if model is not None else 1
    fig, axs = plt.subplots(nrow, ncol, figsize=(2.9 * ncol + 0.6, 2.7 * nrow + 0.4), squeeze=False,
                            constrained_layout=True)
    rows = [labels[0], labels[1], f"{labels[1]} − {labels[0]}"]
    for j, (k, km) in enumerate(zip(ks, kms)):
        ft, fm = pair(k, km)
        vals = [ft] + ([fm] if fm is not None else [])
        finite = np.concatenate([v[np.isfinite(v)] for v in vals])
        vmin = 0.0 if field == "rho" else float(finite.min())
        vmax = float(finite.max())
        if vmax - vmin <= 1e-9 * max(1.0, abs(vmax)):  # a constant field: widen so it maps mid-scale
            vmin, vmax = vmin - 0.5 * max(1e-3, 1e-3 * abs(vmin)), vmax + 0.5 * max(1e-3, 1e-3 * abs(vmax))
        cmap = "viridis" if field == "rho" else "cividis"
        im = None
        for i, f in enumerate(vals):
            ax = axs[i, j]
            # imshow wants (row = y, column = x); arrays are indexed [x, y]
            im = ax.imshow(f.T, origin="lower", extent=extent, vmin=vmin, vmax=vmax, cmap=cmap, aspect="equal")
            ax.set_title(f"{rows[i]}, t = {truth.t[k]:.3g}", fontsize=9)
        fig.colorbar(im, ax=[axs[i, j] for i in range(len(vals))], shrink=0.85, label=lab if j == ncol - 1 else None)
        if fm is not None:
            dif = fm - ft
            a = float(np.nanmax(np.abs(dif))) if np.any(np.isfinite(dif)) else 1.0
            a = a if a > 0 else 1.0
            ax = axs[2, j]
            im = ax.imshow(dif.T, origin="lower", extent=extent, vmin=-a, vmax=a, cmap="RdBu_r", aspect="equal")
            ax.set_title(f"{rows[2]}, t = {truth.t[k]:.3g}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.85, label="difference" if j == ncol - 1 else None)
    box = _view_box(truth, ks)
    for ax in axs.flat:
        ax.set_xlim(*box[0])
        ax.set_ylim(*box[1])
    for ax in axs[-1, :]:
        ax.set_xlabel("x")
    for ax in axs[:, 0]:
        ax.set_ylabel("y")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


_NO_PLOT = {"tv", "mass_model", "score_l2_rel"}


def metrics_figure(result: Mapping, names: Sequence[str] | None = None, suptitle: str | None = None):
    """Each metric of an :func:`~compare.metrics.evaluate` result vs time.

    Sample-based W2 is drawn with its noise floor; the model's kinetic
    energy with the truth's; log scale where all values are positive.
    """
    mets = result["metrics"]
    if names is None:
        names = [n for n in mets if n not in _NO_PLOT and n not in ("w2_sample_floor", "kinetic_energy_truth",
                                                                     "hjb_residual_truth_l1", "energy_distance_floor",
                                                                     "nongradient_fraction_truth")]
    ncol = min(3, max(1, len(names)))
    nrow = math.ceil(len(names) / ncol)
    # a fixed layout: the constrained-layout solver costs seconds per figure on a small CPU
    H = 2.6 * nrow + 0.3 + (0.3 if suptitle else 0.0)
    W = 3.6 * ncol + 0.3
    fig, axs = plt.subplots(nrow, ncol, figsize=(W, H), squeeze=False,
                            gridspec_kw=dict(left=0.75 / W, right=1 - 0.15 / W, bottom=0.5 / H,
                                             top=1 - (0.35 + (0.3 if suptitle else 0.0)) / H, wspace=0.35, hspace=0.55))
    partner = {"w2_samples": ("w2_sample_floor", "noise floor"), "kinetic_energy_model": ("kinetic_energy_truth", "truth"),
               "hjb_residual_l1": ("hjb_residual_truth_l1", "truth (discretisation)"),
               "energy_distance": ("energy_distance_floor", "noise floor"),
               "nongradient_fraction": ("nongradient_fraction_truth", "truth (discretisation)")}
    for ax, name in zip(axs.flat, names):
        m = mets[name]
        t = np.asarray(m["t"], float)
        v = np.array([np.nan if u is None else u for u in m["values"]], float)
        ax.plot(t, v, "o-", color="C0", label="model" if name in partner else None)
        allv = [v]
        if name in partner and partner[name][0] in mets:
            p = mets[partner[name][0]]
            pv = np.array([np.nan if u is None else u for u in p["values"]], float)
            ax.plot(np.asarray(p["t"], float), pv, "s--", color="0.4", label=partner[name][1])
            allv.append(pv)
            ax.legend(fontsize=8)
        fin = np.concatenate([a[np.isfinite(a)] for a in allv])
        if fin.size and np.all(fin > 0) and fin.max() / fin.min() > 20:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    for ax in list(axs.flat)[len(names):]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def training_figure(history, suptitle: str | None = "training"):
    """Loss curves: ``history`` is a list of numbers or {name: list} (one value per step).

    Long histories are drawn faint with a running mean on top (window ≈ 1/50
    of the run); short ones with markers. Log scale when every value is positive.
    """
    if not isinstance(history, Mapping):
        history = {"loss": history}
    fig, ax = plt.subplots(figsize=(5.8, 3.6), constrained_layout=True)
    allpos = True
    for i, (name, vals) in enumerate(history.items()):
        v = np.asarray(vals, float).reshape(-1)
        if v.size == 0:
            continue
        steps = np.arange(1, v.size + 1)
        fin = np.isfinite(v)
        allpos &= bool(np.all(v[fin] > 0))
        if v.size > 200:
            w = max(2, v.size // 50)
            ax.plot(steps, v, lw=0.5, alpha=0.25, color=f"C{i}")
            run = np.convolve(np.where(fin, v, 0.0), np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1:], run, lw=1.4, color=f"C{i}", label=f"{name} (running mean of {w})")
        else:
            ax.plot(steps, v, "o-" if v.size <= 50 else "-", ms=3, lw=1.0, color=f"C{i}", label=name)
    if allpos:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if suptitle:
        ax.set_title(suptitle)
    return fig


def trajectories_figure(traj: np.ndarray, t: np.ndarray | None = None, truth: MFGSolution | None = None,
                        max_paths: int = 80, suptitle: str | None = "trajectories"):
    """Particle paths: ``traj`` has shape (nt+1, N, d).

    1D: x(t) against t over the truth density ρ(x, t) (if given). 2D: paths
    in the plane from ○ (t = 0) to × (t = T) over ρ_truth(T) in grey.
    """
    traj = np.asarray(traj, float)
    if traj.ndim != 3 or traj.shape[2] not in (1, 2):
        raise ValueError(f"trajectories have shape {traj.shape}; expected (nt+1, N, d) with d = 1 or 2")
    n_t, N, d = traj.shape
    if t is None:
        t = truth.t if (truth is not None and truth.t.size == n_t) else np.linspace(0.0, 1.0, n_t)
    sel = np.linspace(0, N - 1, min(N, max_paths)).astype(int)
    fig, ax = plt.subplots(figsize=(5.6, 4.4), constrained_layout=True)
    if d == 1:
        if truth is not None:
            x = truth.axes[0]
            im = ax.pcolormesh(truth.t, x, truth.rho.T, shading="nearest", cmap="Greys")
            fig.colorbar(im, ax=ax, label="ρ truth")
            ax.set_ylim(*_view_box(truth, range(truth.t.size))[0])
        ax.plot(t, traj[:, sel, 0], lw=0.7, alpha=0.6, color="C1")
        ax.set_xlabel("t")
        ax.set_ylabel("x")
    else:
        if truth is not None:
            x, y = truth.axes
            im = ax.pcolormesh(x, y, truth.rho[-1].T, shading="nearest", cmap="Greys", alpha=0.55)
            fig.colorbar(im, ax=ax, shrink=0.8, label=f"ρ truth at t = {truth.t[-1]:.3g}")
            box = _view_box(truth, [0, truth.t.size - 1])
            lo = np.minimum([b[0] for b in box], np.percentile(traj[:, sel].reshape(-1, 2), 0.5, axis=0))
            hi = np.maximum([b[1] for b in box], np.percentile(traj[:, sel].reshape(-1, 2), 99.5, axis=0))
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
        for i in sel:
            ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.6, alpha=0.6, color="C0")
        ax.plot(traj[0, sel, 0], traj[0, sel, 1], "o", ms=2.5, mfc="none", color="k", label=f"t = {t[0]:.3g}")
        ax.plot(traj[-1, sel, 0], traj[-1, sel, 1], "x", ms=3, color="C3", label=f"t = {t[-1]:.3g}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="upper right")
    if suptitle:
        ax.set_title(f"{suptitle} ({len(sel)} of {N} paths, t from {t[0]:.3g} to {t[-1]:.3g})", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def loglog_figure(h, errors: Mapping[str, Sequence[float]], orders: Mapping[str, float] | None = None,
                  xlabel: str = "h", suptitle: str | None = "convergence"):
    """Errors vs h on log-log axes, with the fitted order of each in the legend and a slope-1/2 guide."""
    h = np.asarray(h, float)
    fig, ax = plt.subplots(figsize=(5.4, 4.0), constrained_layout=True)
    for i, (name, err) in enumerate(errors.items()):
        e = np.asarray(err, float)
        lab = name if not orders or name not in orders or orders[name] is None else f"{name} (order {orders[name]:.2f})"
        ax.loglog(h, e, "o-", color=f"C{i}", label=lab)
    e0 = [np.asarray(e, float)[0] for e in errors.values() if np.isfinite(np.asarray(e, float)[0])]
    if e0:
        ref = float(np.exp(np.mean(np.log(np.maximum(e0, 1e-300)))))
        for p, ls in ((1, ":"), (2, "--")):
            ax.loglog(h, ref * (h / h[0]) ** p, color="0.6", ls=ls, lw=0.8, label=f"slope {p}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("error")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if suptitle:
        ax.set_title(suptitle)
    return fig
