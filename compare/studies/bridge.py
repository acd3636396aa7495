r"""Study ``bridge``: which flow-matching model moves mass along the optimal path between two given laws.

A bridge ρ₀ → ρ₁ with ν = 0 has one optimal path, McCann's interpolation, whose kinetic energy is
(λ/2T)W₂²(ρ₀, ρ₁) and whose velocity is a gradient (v = −∇φ/λ). Flow matching learns *a* velocity
whose marginal path goes from ρ₀ to ρ₁; which one depends on the coupling of the training pairs:

- I-CFM (independent coupling): the marginal velocity averages crossing straight lines; the path
  is not the geodesic, its kinetic energy exceeds (λ/2T)W₂² and its particle paths bend;
- OT-CFM (minibatch exact OT): the pairs approximate the Brenier plan, the path approaches
  McCann's; the kinetic energy approaches (λ/2T)W₂² from the minibatch bias;
- rectified flow (one reflow of I-CFM, same total budget): straighter paths than I-CFM, but
  the coupling it converges to is not the OT one (Liu et al. 2023): the energy drops, not to W₂²;
- SB-CFM on the ν > 0 bridge: its probability-flow velocity is checked on the marginal path of
  the Schrödinger bridge (its own closed form).

Everything is measured against the closed forms on the cases ``bridge-gaussian-2d`` and
``sb-gaussian-2d`` with the lab's metrics (:func:`compare.metrics.evaluate`): L1 of ρ_t at every
time level (the marginal path, not only its end), the kinetic energy of the learned ODE over
(λ/2T)W₂², the path straightness of the trajectories and the ρ-weighted non-gradient fraction of
the velocity. Same budget, same seeds, same batch for every model.
"""

from __future__ import annotations

import math
import time

import numpy as np

import pde

from ..report import FigureSpec, Section, fmt, markdown_table
from ..wellposed import StudyOutput

FULL = dict(budget=1500, seeds=3, n_particles=2000)
# quick: the truths on the cases' grids halved, 4 time levels, so that the evaluation is cheap
QUICK = dict(budget=150, seeds=2, n_particles=500)
MODELS_NU0 = ("cfm", "ot-cfm", "rectified")


def _measure(case_name: str, model: str, budget: int, seed: int, n_particles: int, device, truth, problem, log):
    import neural

    from ..metrics import evaluate

    extra = {"base_steps": budget // 2} if model == "rectified" else {}
    t0 = time.perf_counter()
    res = neural.train(problem, model, steps=budget, seed=seed, device=device, progress=False, **extra)
    train_s = time.perf_counter() - t0
    sol = neural.evaluate_on_grid(res, problem)
    x0 = problem.rho0.sample(n_particles, np.random.default_rng(1000 + seed))
    paths = np.asarray(neural.trajectories(res, x0, problem.nt))
    ev = evaluate(truth, sol, problem, times=truth.t, paths=(truth.t, paths), seed=seed)
    m, s = ev["metrics"], ev["summary"]
    ke = res.model.kinetic_energy(x0)
    ng = [v for v in (m.get("nongradient_fraction", {}).get("values") or []) if v is not None]
    out = {"model": model, "seed": seed, "train_s": train_s, "kinetic_energy": ke,
           "l1": [float(v) if v is not None else math.nan for v in m["l1"]["values"]], "t": [float(t) for t in m["l1"]["t"]],
           "straightness": s.get("path_straightness"), "nongradient_fraction": float(np.max(ng)) if ng else math.nan}
    log(f"  {case_name} {model} seed {seed}: L1(T/2) {out['l1'][len(out['l1']) // 2]:.3g}, kinetic {ke:.4g}, "
        f"{train_s:.1f} s")
    return out


def _stats(v):
    v = np.asarray([x for x in v if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


#: (case, models, label); the truth is the case's primary route (closed form, or ot for the eight Gaussians)
GROUPS = (("bridge-gaussian-2d", MODELS_NU0, "ν = 0, Gaussians: vs Benamou–Brenier (closed form)"),
          ("bridge-8gaussians-2d", MODELS_NU0, "ν = 0, N(0, I) → eight Gaussians: vs the ot route"),
          ("sb-gaussian-2d", ("sb-cfm",), "ν = 0.1, Gaussians: vs the Schrödinger bridge (closed form)"))


def _truth(case, quick):
    from pde import exact

    problem = case.problem(n=tuple(k // 2 for k in case.problem().n), nt=4) if quick else case.problem()
    method = case.primary_truth
    truth = pde.solve(problem, method, **case.options_for(method))
    if problem.nu == 0:
        w2 = (problem.lam / (2 * problem.T) * exact.closed_form(problem).w2sq() if method == "exact"
              else float(truth.meta["kinetic_energy"]))
    else:
        w2 = math.nan  # the probability-flow energy is not the one the Schrödinger bridge minimises
    return problem, truth, w2


def run(quick: bool = False, seeds: int | None = None, log=print, device=None, budget: int | None = None,
        cases=None):
    """The study (module docstring); ``budget``: training steps per model (default 1500, quick 150);
    ``cases``: a subset of the case names of :data:`GROUPS` (default all)."""
    from ..cases import get_case

    cfg = dict(QUICK if quick else FULL)
    if seeds is not None:
        cfg["seeds"] = int(seeds)
    if budget is not None:
        if int(budget) < 2:
            raise ValueError(f"budget={budget}; expected at least 2 training steps (rectified splits it in two)")
        cfg["budget"] = int(budget)
    header = ["model", "kinetic / (λ/2T)W₂²", "max_t L1(ρ_t)", "L1(ρ_T/2)", "L1(ρ_T)", "straightness",
              "non-gradient fraction", "train s"]
    data, text = {}, []
    names = [g[0] for g in GROUPS]
    if cases is not None and (not cases or set(cases) - set(names)):
        raise ValueError(f"cases={list(cases)!r}; expected a non-empty subset of {names}")
    for name, models, label in GROUPS:
        if cases is not None and name not in cases:
            continue
        case = get_case(name)
        problem, truth, w2 = _truth(case, quick)
        runs = {m: [_measure(name, m, cfg["budget"], s, cfg["n_particles"], device, truth, problem, log)
                    for s in range(cfg["seeds"])] for m in models}
        rows, summary = [], {}
        for model, rs in runs.items():
            cols = {"kinetic_ratio": _stats([r["kinetic_energy"] / w2 for r in rs]),
                    "l1_max": _stats([max(r["l1"][1:]) for r in rs]),
                    "l1_mid": _stats([r["l1"][len(r["l1"]) // 2] for r in rs]),
                    "l1_end": _stats([r["l1"][-1] for r in rs]),
                    "straightness": _stats([r["straightness"] for r in rs]),
                    "nongradient_fraction": _stats([r["nongradient_fraction"] for r in rs]),
                    "train_s": _stats([r["train_s"] for r in rs])}
            summary[model] = cols

            def pm(k, cols=cols):
                m, sd = cols[k]
                return "—" if not math.isfinite(m) else f"{fmt(m)} ± {fmt(sd)}"

            rows.append([model] + [pm(k) for k in ("kinetic_ratio", "l1_max", "l1_mid", "l1_end", "straightness",
                                                   "nongradient_fraction", "train_s")])
        data[name] = {"label": label, "truth": case.primary_truth, "grid": {"n": list(problem.n), "nt": problem.nt},
                      "w2_kinetic": w2, "runs": runs, "summary": summary}
        text.append(f"**{label}** — `{name}`, truth `{case.primary_truth}` on {list(problem.n)} × nt = {problem.nt}"
                    + (f", (λ/2T)W₂² = {w2:.5g}" if math.isfinite(w2) else "") + ".\n\n" + markdown_table(header, rows))
    intro = (f"{cfg['budget']} training steps per model (rectified: half as I-CFM, half reflow), batch 256, seeds "
             f"0–{cfg['seeds'] - 1}; mean ± std over seeds. Straightness: |X_T − X_0|² / (T ∫|Ẋ|²dt) averaged over "
             "particles (1 for straight paths at constant speed). sb-cfm's kinetic ratio is not shown: its velocity "
             "is the probability flow, not the SDE drift whose energy the Schrödinger bridge minimises.")
    sec = Section("Flow matching against the bridge truth", intro + "\n\n" + "\n\n".join(text),
                  [FigureSpec("fig_bridge_l1.png", _figure(data), "L1(ρ_t) along the marginal path, per model "
                              "(mean over seeds; band: min–max)")], data=data)
    notes = ("Which coupling makes flow matching learn the optimal (Benamou–Brenier) path: kinetic energy against "
             "W₂², L1 of ρ_t at every time, straightness and the non-gradient part of the learned velocity.")
    return StudyOutput("mfglab wellposed: flow matching and the bridge truth", notes, [sec], data,
                       settings={"budget": cfg["budget"], "seeds": cfg["seeds"], "n_particles": cfg["n_particles"]},
                       seed=0)


def _figure(data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, len(data), figsize=(5.5 * len(data), 4), constrained_layout=True, squeeze=False)
    ax = ax[0]
    for k, group in enumerate(data.values()):
        title = group["label"]
        for model, runs in group["runs"].items():
            t = np.asarray(runs[0]["t"])
            L = np.asarray([r["l1"] for r in runs])
            ax[k].plot(t, L.mean(0), marker="o", label=model)
            ax[k].fill_between(t, L.min(0), L.max(0), alpha=0.2)
        ax[k].set_xlabel("t")
        ax[k].set_ylabel("L1(ρ_t model, ρ_t truth)")
        ax[k].set_title(title, fontsize=9)
        ax[k].legend()
    return fig
