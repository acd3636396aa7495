"""``evaluate``: every metric between a truth and a model, as a table of per-metric functions.

Each entry of :data:`METRICS` is a function ``f(ctx) -> {name: series | reason}``:
a series (``{"t", "values", "description"[, "reasons"]}``, see
:func:`compare.metrics._common.series`) when the metric is computed, or a
string saying why it is not. A value missing at one time carries its reason
in the series' ``reasons``; a metric missing altogether is listed with its
reason in ``skipped``. Nothing is dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from pde.problem import MFGProblem
from pde.solution import MFGSolution

from ._common import DEFAULT_FLOOR, DEFAULT_KL_FLOOR, SCHEMA, _finite, select_times, series, time_key
from .divergences import hellinger, kl_divergence, l1_distance
from .fields import _hjb_summary, _score_of, gradient, hjb_residual, kinetic_energy, potential_error, score_error
from .helmholtz import nongradient_fraction
from .samples import energy_distance, path_kinetic_energy, path_straightness, sample_density, w2_samples
from .wasserstein import w2_1d, w2_grid

__all__ = ["evaluate", "METRICS"]


@dataclass
class Context:
    """What every metric function may read (and the ``info``/``summary`` it may add to)."""

    truth: MFGSolution
    model: MFGSolution
    problem: MFGProblem
    idx: np.ndarray
    midx: list
    tsel: np.ndarray
    floor: float
    kl_floor: float
    w2_max_nodes: int
    samples: list | None
    paths: tuple | None
    max_samples: int
    seed: int
    info: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def vol(self):
        return self.truth.cell_volume

    def model_rho(self, k_model: int):
        """(ρ_model at a level, None) or (None, why it cannot be used)."""
        q = self.model.rho[k_model]
        bad = int((~np.isfinite(q)).sum())
        if bad == q.size:
            return None, "the model's density is not finite at this time (not computed?)"
        if bad:
            return None, f"the model's density has {bad} non-finite values of {q.size} at this time"
        if not (q.sum() > 0):
            return None, "the model's density has no positive mass at this time"
        return q, None


def _per_time(ctx: Context, fn: Callable) -> tuple[list, dict]:
    """Values of ``fn(p, q)`` at each time where the model's density is usable, with reasons elsewhere."""
    vals, why = [], {}
    for k, km, tk in zip(ctx.idx, ctx.midx, ctx.tsel):
        q, reason = ctx.model_rho(km)
        if q is None:
            vals.append(None)
            why[time_key(tk)] = reason
        else:
            vals.append(fn(ctx.truth.rho[k], q))
    return vals, why


def _all_missing(vals) -> bool:
    return all(v is None for v in vals)


def _density_metrics(ctx: Context) -> dict:
    vol = ctx.vol
    l1, why = _per_time(ctx, lambda p, q: l1_distance(p, q, vol))
    if _all_missing(l1):
        reason = "the model's density is not usable at any measured time: " + "; ".join(sorted(set(why.values())))
        return {k: reason for k in ("l1", "tv", "hellinger", "kl_truth_model", "kl_model_truth", "mass_model")}
    out = {"l1": series(ctx.tsel, l1, "‖ρ_model - ρ_truth‖_L1", why),
           "tv": series(ctx.tsel, [None if v is None else 0.5 * v for v in l1], "total variation = L1/2", why)}
    for name, fn, desc in (
            ("hellinger", lambda p, q: hellinger(p, q, vol), "Hellinger distance in [0, 1]"),
            ("kl_truth_model", lambda p, q: kl_divergence(p, q, vol, ctx.kl_floor), "KL(ρ_truth ‖ ρ_model) with floor"),
            ("kl_model_truth", lambda p, q: kl_divergence(q, p, vol, ctx.kl_floor), "KL(ρ_model ‖ ρ_truth) with floor"),
            ("mass_model", lambda p, q: float(np.sum(q) * vol), "∫ρ_model")):
        vals, w = _per_time(ctx, fn)
        out[name] = series(ctx.tsel, vals, desc, w)
    return out


def _w2_grid(ctx: Context) -> dict:
    axes, d, truth = ctx.truth.axes, ctx.truth.dim, ctx.truth
    if d == 1:
        vals, why = _per_time(ctx, lambda p, q: w2_1d(p, q, axes[0], "histogram"))
        ctx.info["w2"] = {"method": "exact quantile functions of the histogram densities",
                          # each histogram is within W2 ≤ h of the density it samples (mass moved inside cells)
                          "discretisation_bound": 2.0 * truth.h[0]}
    else:
        infos = []

        def one(p, q):
            v, inf = w2_grid(p, q, axes, max_nodes=ctx.w2_max_nodes)
            infos.append(inf)
            return v

        vals, why = _per_time(ctx, one)
        if infos:
            ctx.info["w2"] = {"method": infos[0]["method"], "coarsen": infos[0]["coarsen"],
                              "coarsening_bound": infos[0]["coarsening_bound"],
                              # atoms at the nodes: each measure is within sqrt(d)·h/2 of the density it samples
                              "discretisation_bound": float(math.sqrt(d) * max(truth.h)),
                              "nodes": [i["nodes"] for i in infos],
                              "dropped_mass": max(i["dropped_mass"] for i in infos)}
    if _all_missing(vals):
        return {"w2": "the model's density is not usable at any measured time"}
    return {"w2": series(ctx.tsel, vals, "W2(ρ_truth, ρ_model) on the grid", why)}


def _sample_metrics(ctx: Context) -> dict:
    names = ("w2_samples", "w2_sample_floor", "energy_distance", "energy_distance_floor")
    if ctx.samples is None:
        return {k: "no model samples given" for k in names}
    rng = np.random.default_rng(ctx.seed)
    d = ctx.truth.dim
    res = {k: [] for k in names}
    why: dict = {}
    n_used = []
    for k, tk, X in zip(ctx.idx, ctx.tsel, ctx.samples):
        if X is None:
            why[time_key(tk)] = "the model has no samples at this time"
            for key in names:
                res[key].append(None)
            continue
        X = np.asarray(X, dtype=float).reshape(len(X), -1)
        if X.shape[1] != d:
            raise ValueError(f"samples at t={tk:.6g} have dimension {X.shape[1]}; expected {d}")
        bad = int((~np.all(np.isfinite(X), axis=1)).sum())
        if bad or X.shape[0] < 2:
            why[time_key(tk)] = (f"{bad} of {X.shape[0]} model samples are not finite at this time" if bad
                                 else f"{X.shape[0]} model sample at this time; expected at least 2")
            for key in names:
                res[key].append(None)
            continue
        if X.shape[0] > ctx.max_samples:
            X = X[rng.choice(X.shape[0], size=ctx.max_samples, replace=False)]
        N = X.shape[0]
        n_used.append(N)
        Y1 = sample_density(ctx.truth.rho[k], ctx.truth.axes, N, rng)
        Y2 = sample_density(ctx.truth.rho[k], ctx.truth.axes, N, rng)
        res["w2_samples"].append(w2_samples(X, Y1))
        res["w2_sample_floor"].append(w2_samples(Y1, Y2))
        res["energy_distance"].append(energy_distance(X, Y1))
        res["energy_distance_floor"].append(energy_distance(Y1, Y2))
    if not n_used:
        return {k: "no finite model samples at any measured time: " + "; ".join(sorted(set(why.values())))
                for k in names}
    ctx.info["w2_samples"] = {"n": int(max(n_used)), "n_given": int(max(len(x) for x in ctx.samples if x is not None)),
                              "seed": int(ctx.seed),
                              "truth_sampler": "histogram of ρ_truth (cell by mass, uniform inside the cell)"}
    desc = {"w2_samples": "W2(model samples, truth samples of the same size)",
            "w2_sample_floor": "W2 between two independent truth sample sets (noise floor)",
            "energy_distance": "energy distance D² = 2E|X-Y| - E|X-X'| - E|Y-Y'| (model vs truth samples)",
            "energy_distance_floor": "the energy distance between two independent truth sample sets (noise floor)"}
    return {k: series(ctx.tsel, res[k], desc[k], why) for k in names}


def _path_metrics(ctx: Context) -> dict:
    names = ("path_kinetic_energy", "path_straightness")
    if ctx.paths is None:
        return {k: "no paired samples (trajectories) given" for k in names}
    t, P = ctx.paths
    P = np.asarray(P, dtype=float)
    ok = np.all(np.isfinite(P), axis=(0, 2))
    if not ok.any():
        return {k: "no trajectory is finite at every time" for k in names}
    if not ok.all():
        ctx.info["paths_dropped"] = f"{int((~ok).sum())} of {ok.size} trajectories are not finite and were left out"
    P = P[:, ok]
    ctx.summary["path_kinetic_energy"] = _finite(path_kinetic_energy(P, t, ctx.problem.lam))
    ctx.summary["path_straightness"] = _finite(path_straightness(P, t))
    ctx.info["paths"] = {"n": int(P.shape[1]), "times": int(len(t)),
                         "kinetic": "(λ/2) mean over particles of Σ|Δx|²/Δt of the polygonal paths",
                         "straightness": "energy of straight constant-speed paths with the same endpoints / path energy"}
    return {}


def _potential_metrics(ctx: Context) -> dict:
    if np.all(np.isnan(ctx.model.phi)):
        return {k: "the model has no potential (NaN)" for k in ("phi_l2", "phi_max")}
    if np.all(np.isnan(ctx.truth.phi)):
        return {k: "the truth has no potential (NaN)" for k in ("phi_l2", "phi_max")}
    e2, emax, why = [], [], {}
    for k, km, tk in zip(ctx.idx, ctx.midx, ctx.tsel):
        a, b = potential_error(ctx.model.phi[km], ctx.truth.phi[k], ctx.truth.rho[k], ctx.floor)
        if not (math.isfinite(a) and math.isfinite(b)):
            why[time_key(tk)] = "the model's potential is not finite where the truth has mass"
        e2.append(a)
        emax.append(b)
    return {"phi_l2": series(ctx.tsel, e2, "min_c ‖φ_model - φ_truth - c‖_L2(ρ_truth) on R_t", why),
            "phi_max": series(ctx.tsel, emax, "max_R |φ_model - φ_truth - c*|", why)}


def _score_metrics(ctx: Context) -> dict:
    truth, model = ctx.truth, ctx.model
    if "score" not in truth.extras and "score" not in model.extras:
        return {k: "neither solution carries a score" for k in ("score_l2", "score_l2_rel")}
    bnd = ctx.problem.boundary
    if "score" not in model.extras and not np.all(np.isfinite(model.rho[ctx.midx])):
        return {k: "the model has no score and no finite density to differentiate" for k in ("score_l2", "score_l2_rel")}
    st, src_t = _score_of(truth, bnd, ctx.floor)
    sm, src_m = _score_of(model, bnd, ctx.floor)
    err, rel, why = [], [], {}
    for k, km, tk in zip(ctx.idx, ctx.midx, ctx.tsel):
        a, b = score_error(sm[km], st[k], truth.rho[k], ctx.floor)
        if not math.isfinite(a):
            why[time_key(tk)] = "the model's score is not finite where the truth has mass"
        elif not math.isfinite(b):
            why[time_key(tk)] = "the truth's score vanishes (relative error undefined)"
        err.append(a)
        rel.append(b)
    ctx.info["score"] = {"truth": src_t, "model": src_m}
    return {"score_l2": series(ctx.tsel, err, "‖s_model - s_truth‖_L2(ρ_truth) on R_t", why),
            "score_l2_rel": series(ctx.tsel, rel, "score_l2 / ‖s_truth‖_L2(ρ_truth)", why)}


def _model_rho_all(ctx: Context) -> bool:
    return bool(np.all(np.isfinite(ctx.model.rho)))


def _kinetic(ctx: Context) -> dict:
    truth, model, problem = ctx.truth, ctx.model, ctx.problem
    out: dict = {}
    has_phi = not np.all(np.isnan(model.phi))
    if has_phi or "velocity" in model.extras:
        if _model_rho_all(ctx):
            Km, Kmt = kinetic_energy(model, problem.lam, problem.boundary)
            ctx.info["kinetic_energy_model"] = "weighted by the model's density"
        elif model.t.size == truth.t.size and np.allclose(model.t, truth.t):
            Km, Kmt = kinetic_energy(model, problem.lam, problem.boundary, rho=truth.rho)
            ctx.info["kinetic_energy_model"] = ("weighted by the truth's density (the model's is not finite "
                                                "at every level)")
        else:
            Km = None
            out["kinetic_energy_model"] = ("the model's density is not finite at every level and its time "
                                           "levels differ from the truth's: the energy cannot be weighted")
        if Km is not None:
            out["kinetic_energy_model"] = series(ctx.tsel, Km[ctx.midx], "∫(λ/2)|v|²ρ dx of the model")
            ctx.summary["kinetic_energy_model_total"] = _finite(Kmt)
    else:
        out["kinetic_energy_model"] = "the model has neither a potential nor a velocity"
    if not np.all(np.isnan(truth.phi)):
        Kt, Ktt = kinetic_energy(truth, problem.lam, problem.boundary)
        out["kinetic_energy_truth"] = series(ctx.tsel, Kt[ctx.idx], "∫(λ/2)|v|²ρ dx of the truth")
        ctx.summary["kinetic_energy_truth_total"] = _finite(Ktt)
    else:
        out["kinetic_energy_truth"] = "the truth has no potential (NaN)"
    return out


def _kinetic_bound(ctx: Context) -> dict:
    truth, model, problem = ctx.truth, ctx.model, ctx.problem
    if not (problem.nu == 0.0 and problem.drift is None):
        return {"kinetic_bound": "the Benamou–Brenier bound applies to nu = 0 and b = 0"}
    q0, r0 = ctx.model_rho(0)
    qT, rT = ctx.model_rho(model.t.size - 1)
    if q0 is None or qT is None:
        return {"kinetic_bound": f"the model's density at t = 0 or T is not usable ({r0 or rT})"}
    T = float(truth.t[-1] - truth.t[0])
    axes = truth.axes
    if truth.dim == 1:
        w_t = w2_1d(truth.rho[0], truth.rho[-1], axes[0])
        w_m = w2_1d(q0, qT, axes[0])
    else:
        w_t = w2_grid(truth.rho[0], truth.rho[-1], axes, max_nodes=ctx.w2_max_nodes)[0]
        w_m = w2_grid(q0, qT, axes, max_nodes=ctx.w2_max_nodes)[0]
    ctx.summary["kinetic_bound_truth"] = _finite(problem.lam * w_t**2 / (2 * T))
    ctx.summary["kinetic_bound_model"] = _finite(problem.lam * w_m**2 / (2 * T))
    Kmt = ctx.summary.get("kinetic_energy_model_total")
    if Kmt is not None and ctx.summary["kinetic_bound_model"]:
        ctx.summary["kinetic_ratio_model"] = _finite(Kmt / ctx.summary["kinetic_bound_model"])
    ctx.info["kinetic_bound"] = "Benamou–Brenier: ∫₀ᵀ∫(λ/2)|v|²ρ ≥ λ W₂²(ρ₀, ρ_T)/(2T), equality for the optimal flow"
    return {}


def _nongradient(ctx: Context) -> dict:
    truth, model, problem = ctx.truth, ctx.model, ctx.problem
    out: dict = {}
    if truth.dim == 1:
        return {"nongradient_fraction": "in 1D every velocity on an interval with no-flux walls is a gradient "
                                        "(the flux is fixed by the divergence): the fraction is 0"}
    if "velocity" not in model.extras:
        out["nongradient_fraction"] = ("the model's control is -∇φ/λ by construction (a gradient)"
                                       if not np.all(np.isnan(model.phi)) else "the model has no velocity")
    else:
        v = np.asarray(model.extras["velocity"], dtype=float)
        own = _model_rho_all(ctx)
        vals, why = [], {}
        for k, km, tk in zip(ctx.idx, ctx.midx, ctx.tsel):
            rho = model.rho[km] if own else truth.rho[k]
            if not np.all(np.isfinite(v[km])):
                vals.append(None)
                why[time_key(tk)] = "the model's velocity is not finite at this time"
                continue
            vals.append(nongradient_fraction(v[km], rho, truth.axes)[0])
        out["nongradient_fraction"] = series(ctx.tsel, vals, "∫ρ|w|²/∫ρ|v|² of the divergence-free part w of the "
                                             "model's control (ρ-weighted Helmholtz split)", why)
        ctx.info["nongradient_fraction"] = ("split of the control v (pde convention) weighted by the "
                                            + ("model's" if own else "truth's") + " density")
    if not np.all(np.isnan(truth.phi)):
        with np.errstate(invalid="ignore"):
            vt = -gradient(truth.phi, truth.axes, problem.boundary) / problem.lam
        vals, why = [], {}
        for k, tk in zip(ctx.idx, ctx.tsel):
            if not np.all(np.isfinite(vt[k])):
                vals.append(None)
                why[time_key(tk)] = "the truth's potential is not finite everywhere at this time"
            else:
                vals.append(nongradient_fraction(vt[k], truth.rho[k], truth.axes)[0])
        out["nongradient_fraction_truth"] = series(ctx.tsel, vals, "the same for the truth's -∇φ/λ by central "
                                                   "differences (discretisation floor; 0 in exact arithmetic)", why)
    return out


_WGF_REASON = ("wgf: φ = log(ρ_t/π) is the velocity potential of the gradient flow, which solves no HJB "
               "of the MFG form over [0, T] (each JKO step does, on [0, τ])")


def _hjb(ctx: Context) -> dict:
    truth, model, problem = ctx.truth, ctx.model, ctx.problem
    names = ("hjb_residual_l1", "hjb_residual_max", "hjb_residual_truth_l1")
    if problem.family == "wgf":
        return {k: _WGF_REASON for k in names}
    out: dict = {}
    if np.all(np.isnan(model.phi)):
        out["hjb_residual_l1"] = out["hjb_residual_max"] = "the model has no potential"
    elif model.t.size < 3:
        out["hjb_residual_l1"] = out["hjb_residual_max"] = f"the model has {model.t.size} time levels; expected ≥ 3"
    else:
        # the coupling f(x, ρ) uses the model's own density (the truth's when the model has none)
        rho_c = model.rho if _model_rho_all(ctx) else truth.rho
        R, interior = hjb_residual(model.phi, rho_c, model.t, truth.axes, problem)
        l1, mx, why = [], [], {}
        for k, km, tk in zip(ctx.idx, ctx.midx, ctx.tsel):
            a, b, bad = _hjb_summary(R[km], interior, truth.rho[k], ctx.floor)
            if bad:
                a = b = None
                why[time_key(tk)] = (f"the model's HJB residual is not finite at {bad} interior nodes where "
                                     f"ρ_truth > {ctx.floor:g}·max (its φ is not finite there or at a neighbour)")
            l1.append(a)
            mx.append(b)
        out["hjb_residual_l1"] = series(ctx.tsel, l1, "ρ_truth-weighted L1 of the HJB residual on R_t", why)
        out["hjb_residual_max"] = series(ctx.tsel, mx, "max of |HJB residual| on R_t", why)
    if np.all(np.isnan(truth.phi)) or truth.t.size < 3:
        out["hjb_residual_truth_l1"] = "the truth has no potential on ≥ 3 time levels"
    else:
        R, interior = hjb_residual(truth.phi, truth.rho, truth.t, truth.axes, problem)
        vals, left = [], {}
        for k, tk in zip(ctx.idx, ctx.tsel):
            a, _, bad = _hjb_summary(R[k], interior, truth.rho[k], ctx.floor)
            vals.append(a)
            if bad:
                left[time_key(tk)] = (f"{bad} nodes of R_t with a non-finite truth residual (its φ is infinite at "
                                      "a neighbour, where ρ = 0) are left out")
        s = series(ctx.tsel, vals, "the same residual of the truth (discretisation floor)")
        if left:
            s["notes"] = left
        out["hjb_residual_truth_l1"] = s
    return out


#: the table: each function returns {metric name: series or reason}; the order is the report's
METRICS: tuple = (_density_metrics, _w2_grid, _sample_metrics, _path_metrics, _potential_metrics, _score_metrics,
                  _kinetic, _kinetic_bound, _nongradient, _hjb)


def _check_same_grid(truth: MFGSolution, model: MFGSolution) -> None:
    if truth.dim != model.dim:
        raise ValueError(f"truth is {truth.dim}-D but the model is {model.dim}-D; expected the same grid")
    for j, (a, b) in enumerate(zip(truth.axes, model.axes)):
        if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9 * max(1.0, np.abs(a).max())):
            raise ValueError(f"axis {j}: truth has {a.size} nodes on [{a[0]:.6g}, {a[-1]:.6g}], the model "
                             f"{b.size} on [{b[0]:.6g}, {b[-1]:.6g}]; expected the same cell-centred nodes")


def _model_index(model: MFGSolution, tk: float) -> int:
    k = int(np.argmin(np.abs(model.t - tk)))
    if abs(model.t[k] - tk) > 1e-9 * max(1.0, abs(model.t[-1])):
        raise ValueError(f"the model has no time level at t={tk:.6g} (nearest {model.t[k]:.6g}); "
                         "evaluate the model on the truth's time levels")
    return k


def _samples_at(samples, tsel, T: float, d: int) -> list:
    """The model's samples at each measured time (None where a mapping has no entry at that time)."""
    if isinstance(samples, Mapping):
        out = []
        for tk in tsel:
            key = min(samples, key=lambda s: abs(float(s) - tk)) if samples else None
            if key is None or abs(float(key) - tk) > 1e-9 * max(1.0, T):
                out.append(None)
            else:
                out.append(np.asarray(samples[key], dtype=float))
        if all(x is None for x in out):
            raise ValueError(f"samples have no entry at any measured time {[float(t) for t in tsel]}; "
                             f"their times are {sorted(map(float, samples))}")
        return out
    arr = np.asarray(samples, dtype=float)
    if arr.ndim != 3 or arr.shape[0] != len(tsel) or arr.shape[2] != d:
        raise ValueError(f"samples have shape {arr.shape}; expected ({len(tsel)}, N, {d}) for times {list(tsel)}")
    return list(arr)


def _summarise(metrics: dict, T: float) -> dict:
    """max/mean over the finite values, the value at T (None unless T was measured) and at the last time."""
    out = {}
    for name, m in metrics.items():
        vals = [v for v in m["values"] if v is not None]
        at_T = m["values"][-1] if abs(m["t"][-1] - T) <= 1e-9 * max(1.0, abs(T)) else None
        out[name] = {"at_T": at_T, "t_last": m["t"][-1], "at_last": m["values"][-1],
                     "max": _finite(max(vals)) if vals else None,
                     "mean": _finite(float(np.mean(vals))) if vals else None}
    return out


def evaluate(truth: MFGSolution, model: MFGSolution, problem: MFGProblem, times=None, *,
             n_times: int = 5, floor: float = DEFAULT_FLOOR, kl_floor: float = DEFAULT_KL_FLOOR,
             w2_max_nodes: int = 2500, samples=None, paths=None, max_samples: int = 2000, seed: int = 0) -> dict:
    """Measure ``model`` against ``truth`` at several times.

    Args:
        truth: the ground truth on the problem's grid.
        model: the model's ρ (and φ, or NaN where it has none) on the same
            nodes; it must have a level at each chosen time. Optional extras
            ``score`` (nt+1, *grid, d) and ``velocity`` (nt+1, *grid, d) (the
            control v of DESIGN §2).
        problem: the MFG (ν, λ, b, c, f for the HJB residual and energy).
        times: times to measure at (snapped to the truth's levels); default
            ``n_times`` evenly spread in [0, T], 0 and T included.
        floor: relative density floor of the comparison region R_t.
        kl_floor: relative KL floor ε (see :func:`kl_divergence`).
        w2_max_nodes: largest number of grid atoms passed to ``ot.emd2`` (2D).
        samples: model samples at the chosen times: a mapping {t: (N, d)} or
            an array (len(times), N, d); then W2 and the energy distance from
            samples, each with its sample-noise floor, are reported.
        paths: paired samples ``(t (K,), X (K, N, d))`` (trajectories): the
            kinetic energy of the polygonal paths and their straightness.
        max_samples: larger sample sets are subsampled (without replacement)
            to this size, since ``ot.emd2`` costs O(N³); the size used is reported.
        seed: seed of the truth samples used for the sample-based metrics.

    Returns:
        A JSON-ready dict ``{"schema", "times", "metrics": {name: {"t",
        "values", "description"[, "reasons"]}}, "summary": {...}, "info": {...},
        "skipped": {name: reason}}`` (NaN is written as None, with a reason).
    """
    if not isinstance(truth, MFGSolution) or not isinstance(model, MFGSolution):
        raise TypeError("truth and model must be MFGSolution objects")
    _check_same_grid(truth, model)
    idx, tsel = select_times(truth.t, times, n_times)
    midx = [_model_index(model, tk) for tk in tsel]
    smp = _samples_at(samples, tsel, float(truth.t[-1]), truth.dim) if samples is not None else None
    pth = None
    if paths is not None:
        pt, px = paths
        pth = (np.asarray(pt, float), np.asarray(px, float))
    ctx = Context(truth, model, problem, idx, midx, tsel, floor, kl_floor, w2_max_nodes, smp, pth,
                  max_samples, seed)
    ctx.info.update({"floor": floor, "kl_floor": kl_floor, "boundary": problem.boundary,
                     "grid": [a.size for a in truth.axes]})
    metrics: dict = {}
    skipped: dict = {}
    for fn in METRICS:
        for name, res in fn(ctx).items():
            if isinstance(res, str):
                skipped[name] = res
            else:
                metrics[name] = res
    summary = dict(ctx.summary)
    summary.update(_summarise(metrics, float(truth.t[-1])))
    return {"schema": SCHEMA, "times": [float(s) for s in tsel], "metrics": metrics, "summary": summary,
            "info": ctx.info, "skipped": skipped}
