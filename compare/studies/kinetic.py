r"""Study ``kinetic``: a normalizing flow without kinetic cost is ill posed.

The otflow MFG minimises λ∫₀ᵀ∫½|v|²ρ + KL(ρ_T‖γ). For λ > 0 its minimiser is
unique (straight trajectories, the McCann interpolation to the W2-proximal
point of KL); with λ = 0 (FFJORD) every flow that pushes π to γ is optimal.

Neural side: the same 2D Gaussian data (case ``otflow-gaussian-2d``) and the
same common starting points x0 ~ π, K seeds of

- FFJORD (free-form velocity, no kinetic cost),
- the same free-form network with kinetic cost λ∫½|v|² (RNODE), λ in a sweep,
- OT-Flow (potential network, v = -∇Φ/λ) with λ = 1.

Measured per model: terminal fit (W2 of X_T to its target, moment-matched
Gaussian W2 and sample W2 with its noise floor), mean pairwise RMS path
distance and terminal-map distance across seeds, relative spread (std/mean)
of the path energy ½E∫|Ẋ|², and the RMS distance to the closed-form optimal
paths of the objective (for λ = 0 the λ → 0 limit: the OT paths to γ).

PDE side (1D otflow Gaussian, FD, small grid), λ → 0: W2(ρ_T, γ) from FD and
from the closed form → 0; the Newton iterations from a cold start (with the
solver's terminal-coupling continuation) grow until Newton fails; the
condition number of the objective restricted to affine maps x ↦ Ax + b
(which contain the minimiser) grows like 1/λ: a flat direction (rotations of
the near-γ terminal law) opens up — the direction along which the neural
seeds disagree.
"""

from __future__ import annotations

import math
import time

import numpy as np

import pde
from pde.exact import closed_form, mccann_gaussian, otflow_terminal_gaussian, w2_gaussian

from ..report import FigureSpec, Section, markdown_table
from ..wellposed import StudyOutput
from ._common import integrate_velocity, newton_count, pairwise_rms, path_energy, rms_distance, spread

FULL = dict(steps=300, batch=256, width=32, depth=2, nsteps=4, ot_width=16, lr_ffjord=1e-2, lr_otflow=2e-2,
            rnode_lams=(1.0, 0.1), n_paths=512, nt=20, seeds=3, snapshots=4,
            fd_lams=(1.0, 0.5, 0.25, 0.1, 0.05, 0.025, 0.01), fd_n=60, fd_nt=20,
            affine_lams=(1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001), device="cpu")
QUICK = dict(FULL, steps=80, batch=128, rnode_lams=(), n_paths=256, nt=10, fd_lams=(1.0, 0.25, 0.05), fd_n=40,
             fd_nt=12, affine_lams=(1.0, 0.1, 0.01, 0.001))


# --------------------------------------------------------------------- closed forms

def affine_objective(params: np.ndarray, lam: float, T: float, m0: np.ndarray, S0: np.ndarray) -> float:
    r"""The otflow objective over affine maps x ↦ Ax + b with straight paths (γ = N(0, I)).

    J(A, b) = λ/(2T) E|(A - I)X + b|² + KL(N(Am₀ + b, AS₀Aᵀ) ‖ N(0, I)), X ~ N(m₀, S₀);
    ``params`` = (A.ravel(), b). For Gaussian data the minimiser over all flows
    is such a map, so the curvature of J here is that of the full problem
    restricted to affine perturbations.
    """
    d = m0.size
    A = params[: d * d].reshape(d, d)
    b = params[d * d:]
    D = A - np.eye(d)
    kin = lam / (2.0 * T) * (float(((D @ m0 + b) ** 2).sum()) + float(np.trace(D @ S0 @ D.T)))
    mu = A @ m0 + b
    S = A @ S0 @ A.T
    sign, logdet = np.linalg.slogdet(S)
    if sign <= 0:
        return math.inf
    kl = 0.5 * (float(np.trace(S)) + float(mu @ mu) - d - logdet)
    return kin + kl


def affine_conditioning(lam: float, T: float, m0, S0) -> dict:
    """Eigenvalues of the Hessian of :func:`affine_objective` at its minimiser (closed form).

    The minimiser is the closed-form otflow map (checked: the gradient there is
    below 1e-6); the Hessian is by central differences (step 1e-4).
    """
    from scipy.optimize import minimize

    m0 = np.atleast_1d(np.asarray(m0, float))
    S0 = np.atleast_2d(np.asarray(S0, float))
    d = m0.size
    x0 = np.concatenate([np.eye(d).ravel(), np.zeros(d)])
    f = lambda p: affine_objective(p, lam, T, m0, S0)  # noqa: E731
    opt = minimize(f, x0, method="BFGS", options={"gtol": 1e-10, "maxiter": 2000})
    p = opt.x
    n = p.size
    h = 1e-4
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei = np.zeros(n)
            ej = np.zeros(n)
            ei[i] = h
            ej[j] = h
            H[i, j] = H[j, i] = (f(p + ei + ej) - f(p + ei - ej) - f(p - ei + ej) + f(p - ei - ej)) / (4 * h * h)
    ev = np.linalg.eigvalsh(0.5 * (H + H.T))
    g = np.array([(f(p + h * e) - f(p - h * e)) / (2 * h) for e in np.eye(n)])
    return {"lam": lam, "eig_min": float(ev[0]), "eig_max": float(ev[-1]), "condition": float(ev[-1] / ev[0]),
            "grad_norm": float(np.linalg.norm(g)), "objective": float(opt.fun)}


# --------------------------------------------------------------------- PDE side

def fd_sweep(lams, n: int, nt: int, log=print) -> list[dict]:
    """FD solves of the 1D otflow Gaussian problem (π = N(1.5, 0.5²), γ = N(0, 1)) for each λ, cold start."""
    from compare.metrics import w2_1d

    rows = []
    data = pde.Gaussian([1.5], [[0.25]])
    gamma = pde.Gaussian([0.0], [[1.0]])
    for lam in lams:
        prob = pde.otflow(data, domain=[[-5.0, 5.0]], T=1.0, lam=lam, nu=0.0, reference=gamma, n=(n,), nt=nt,
                          name=f"otflow-1d-lam{lam:g}")
        mT, sT = otflow_terminal_gaussian(1.5, 0.5, 0.0, 1.0, prob.T / lam)
        row = {"lam": lam, "w2_closed_form": math.sqrt(w2_gaussian([mT], [[sT * sT]], [0.0], [[1.0]]))}
        t0 = time.perf_counter()
        try:
            sol = pde.solve(prob, "fd", progress=False)
        except Exception as exc:  # FDConvergenceError and friends: the failure is the measurement
            row.update(converged=False, error=f"{type(exc).__name__}: {str(exc)[:160]}",
                       newton_iterations=len(getattr(exc, "history", []) or []), fd_s=time.perf_counter() - t0)
            log(f"  FD λ={lam:g}: no convergence ({type(exc).__name__})")
            rows.append(row)
            continue
        x = sol.axes[0]
        gam = gamma.pdf(x[:, None])
        row.update(converged=True, fd_s=time.perf_counter() - t0, newton_iterations=newton_count(sol.meta),
                   continuation=sol.meta.get("continuation"), final_residual=sol.meta.get("final_residual"),
                   w2_fd=w2_1d(sol.rho[-1], gam / (gam.sum() * (x[1] - x[0])), x))
        log(f"  FD λ={lam:g}: W2(ρ_T, γ) = {row['w2_fd']:.4f} (closed form {row['w2_closed_form']:.4f}), "
            f"{row['newton_iterations']} Newton iterations")
        rows.append(row)
    return rows


# --------------------------------------------------------------------- neural side

def _problem(base, lam: float):
    return pde.otflow(base.data, domain=[list(d) for d in base.domain], T=base.T, lam=lam, nu=0.0,
                      reference=base.reference, n=base.n, nt=base.nt, name=f"{base.name}-lam{lam:g}")


def _train_group(label, model, prob, hp, lr, cfg, seeds, x0, log):
    import neural

    paths, stats, snaps = [], [], []
    every = max(1, cfg["steps"] // cfg["snapshots"])
    for seed in range(seeds):
        t0 = time.perf_counter()
        snap = {}

        def cb(step, net, snap=snap):
            # paths during training (callback time is not training time); the last one is taken after training
            if step < cfg["steps"]:
                snap[int(step)] = neural.trajectories(net, x0, cfg["nt"])
            return False

        res = neural.train(prob, model, steps=cfg["steps"], seed=seed, batch=cfg["batch"], lr=lr, progress=False,
                           device=cfg["device"], callback=cb, callback_every=every, **hp)
        paths.append(neural.trajectories(res, x0, cfg["nt"]))
        snap[int(cfg["steps"])] = paths[-1]
        snaps.append(snap)
        stats.append({"seed": seed, "loss_last": float(np.mean(res.losses[-20:])), "train_s": time.perf_counter() - t0})
        log(f"  {label} seed {seed}: loss {stats[-1]['loss_last']:.4f} ({stats[-1]['train_s']:.0f} s)")
    steps = sorted(set.intersection(*(set(sn) for sn in snaps)))
    history = {"steps": steps, "pairwise_path_rms": [pairwise_rms([sn[k] for sn in snaps])[0] for k in steps]}
    return paths, stats, history


def _measure(label, paths, stats, target, ref_paths, T, rng_seed, history=None):
    from compare.metrics import w2_samples

    rng = np.random.default_rng(rng_seed)
    N = paths[0].shape[1]
    tm, tS = target.mean(), target.cov()
    Y1, Y2 = target.sample(N, rng), target.sample(N, rng)
    floor = w2_samples(Y1, Y2)
    fits, fits_g, energies, dref = [], [], [], []
    for p in paths:
        XT = p[-1]
        fits.append(w2_samples(XT, Y1))
        fits_g.append(math.sqrt(max(w2_gaussian(XT.mean(0), np.cov(XT.T), tm, tS), 0.0)))
        energies.append(path_energy(p, T))
        dref.append(rms_distance(p, ref_paths))
    dpath, dterm = pairwise_rms(paths)
    return {"history": history, "label": label, "seeds": len(paths), "w2_terminal_samples": fits, "w2_sample_floor": floor,
            "w2_terminal_gaussian": fits_g, "energy": energies, "energy_spread": spread(energies),
            "energy_optimal": 0.5 * w2_gaussian(paths[0][0].mean(0), np.cov(paths[0][0].T), tm, tS) / T,
            "pairwise_path_rms": dpath, "pairwise_terminal_rms": dterm, "rms_to_optimal_paths": dref,
            "training": stats}


def run(quick: bool = False, seeds: int | None = None, log=print, **options) -> StudyOutput:
    """Run the study (see the module docstring); ``options`` override entries of FULL/QUICK."""
    from compare.cases import get_case

    cfg = dict(QUICK if quick else FULL)
    bad = set(options) - set(cfg)
    if bad:
        raise ValueError(f"unknown option(s) {sorted(bad)} for the kinetic study; expected some of {sorted(cfg)}")
    cfg.update(options)
    K = int(seeds or cfg["seeds"])
    base = get_case("otflow-gaussian-2d").problem()
    T = base.T
    x0 = base.rho0.sample(cfg["n_paths"], np.random.default_rng(12345))
    m0, S0 = base.rho0.mean(), base.rho0.cov()
    gamma = base.reference
    ot_limit = mccann_gaussian(m0, S0, gamma.mean(), gamma.cov())  # λ → 0: OT paths from π to γ
    ref_lim = integrate_velocity(lambda x, t: ot_limit.velocity(x, t / T) / T, x0, T, cfg["nt"])

    groups = []
    hp_ff = dict(width=cfg["width"], depth=cfg["depth"], nsteps=cfg["nsteps"])
    log(f"kinetic: {K} seeds × {cfg['steps']} steps per model")
    paths, st, hist = _train_group("FFJORD (λ = 0)", "ffjord", base, dict(hp_ff, alpha_L=0.0), cfg["lr_ffjord"], cfg,
                                   K, x0, log)
    groups.append(dict(_measure("FFJORD, no kinetic cost", paths, st, gamma, ref_lim, T, 7, hist), model="ffjord",
                       lam=0.0, paths=paths, ref=ref_lim))
    for lam in cfg["rnode_lams"]:
        prob = _problem(base, lam)
        cf = closed_form(prob)
        ref = integrate_velocity(cf.velocity, x0, T, cfg["nt"])
        paths, st, hist = _train_group(f"free-form + kinetic λ={lam:g}", "ffjord", prob, dict(hp_ff, alpha_L=1.0),
                                       cfg["lr_ffjord"], cfg, K, x0, log)
        groups.append(dict(_measure(f"free-form + kinetic, λ = {lam:g}", paths, st, cf.law(T), ref, T, 7, hist),
                           model="ffjord+kinetic", lam=lam, paths=paths, ref=ref))
    prob1 = _problem(base, 1.0)
    cf1 = closed_form(prob1)
    ref1 = integrate_velocity(cf1.velocity, x0, T, cfg["nt"])
    paths, st, hist = _train_group("OT-Flow λ=1", "otflow", prob1, dict(width=cfg["ot_width"], nsteps=cfg["nsteps"]),
                                   cfg["lr_otflow"], cfg, K, x0, log)
    groups.append(dict(_measure("OT-Flow, λ = 1", paths, st, cf1.law(T), ref1, T, 7, hist), model="otflow", lam=1.0,
                       paths=paths, ref=ref1))

    log("kinetic: PDE side (FD, 1D otflow Gaussian)")
    fd_rows = fd_sweep(cfg["fd_lams"], cfg["fd_n"], cfg["fd_nt"], log)
    aff = [affine_conditioning(lam, T, m0, S0) for lam in cfg["affine_lams"]]
    lam_fit = np.array([a["lam"] for a in aff])
    cond_slope = float(np.polyfit(np.log(lam_fit), np.log([a["condition"] for a in aff]), 1)[0])

    ff, ot = groups[0], groups[-1]
    ratio_path = ff["pairwise_path_rms"] / ot["pairwise_path_rms"]
    ratio_term = ff["pairwise_terminal_rms"] / ot["pairwise_terminal_rms"]

    # ---- table
    rows = []
    for g in groups:
        rows.append([g["label"], f"{np.mean(g['w2_terminal_gaussian']):.3g} ± {np.std(g['w2_terminal_gaussian']):.2g}",
                     f"{np.mean(g['w2_terminal_samples']):.3g} (floor {g['w2_sample_floor']:.3g})",
                     g["pairwise_path_rms"], g["pairwise_terminal_rms"],
                     f"{np.mean(g['energy']):.3g} (opt {g['energy_optimal']:.3g})", g["energy_spread"],
                     float(np.mean(g["rms_to_optimal_paths"]))])
    table = markdown_table(["model", "W2(X_T, target) Gaussian", "W2 samples", "pairwise path RMS",
                            "pairwise X_T RMS", "path energy ½E∫‖Ẋ‖²", "energy std/mean",
                            "RMS to optimal paths"], rows)
    fd_table = markdown_table(
        ["λ", "W2(ρ_T, γ) FD", "W2(ρ_T, γ) closed form", "Newton iterations (cold)", "FD converged",
         "affine-objective condition"],
        [[r["lam"], r.get("w2_fd"), r["w2_closed_form"], r["newton_iterations"], str(r["converged"]),
          _nearest(aff, r["lam"])] for r in fd_rows])
    aff_table = markdown_table(["λ", "Hessian eig min", "eig max", "condition"],
                               [[a["lam"], a["eig_min"], a["eig_max"], a["condition"]] for a in aff])
    steps_h = groups[0]["history"]["steps"]
    hist_table = markdown_table(["model"] + [f"step {k}" for k in steps_h],
                                [[g["label"]] + list(g["history"]["pairwise_path_rms"]) for g in groups])
    md = (f"Data: case `otflow-gaussian-2d` (π = N((1, -0.5), diag(0.5, 0.3)), γ = N(0, I), T = 1); {K} seeds per "
          f"model, {cfg['steps']} Adam steps, batch {cfg['batch']}, {cfg['n_paths']} common starting points, "
          f"{cfg['nt']} time levels. Targets: γ for FFJORD (λ = 0 minimises KL alone), the closed-form ρ_T otherwise. "
          "Optimal paths: the closed-form straight lines of each λ (for FFJORD the λ → 0 limit, the OT paths to γ).\n\n"
          + table +
          f"\n\n**FFJORD's seeds disagree {ratio_path:.1f}× more than OT-Flow's along the paths and "
          f"{ratio_term:.1f}× more at t = T** (pairwise RMS), while both fit their terminal law.\n\n"
          "Pairwise path RMS across seeds during training (the same starting points; the learning rate decays "
          "on a cosine schedule, so every spread shrinks late in training — compare the models at equal steps):\n\n" + hist_table)
    sec1 = Section("Trajectories across seeds", md,
                   [FigureSpec("fig_kinetic.png", _figure(groups, fd_rows, aff, cfg),
                               "Top: paths of 3 seeds from the same 24 starting points (one colour per seed), "
                               "closed-form optimal paths dashed. Bottom: the λ → 0 sweep.")],
                   data={"groups": [{k: v for k, v in g.items() if k not in ("paths", "ref")} for g in groups],
                         "ratio_path_ffjord_over_otflow": ratio_path, "ratio_terminal_ffjord_over_otflow": ratio_term})
    sec2 = Section("λ → 0 on the PDE side", (
        "1D otflow, π = N(1.5, 0.5²), γ = N(0, 1), FD on [-5, 5] with "
        f"n = {cfg['fd_n']}, nt = {cfg['fd_nt']}, Newton from the solver's default start (terminal-coupling "
        "continuation). W2 between the FD ρ_T and γ on the grid (exact 1D quantile formula) against the closed form.\n\n"
        + fd_table +
        "\n\nThe objective restricted to affine maps (closed form, 2D data of the neural runs): the smallest Hessian "
        f"eigenvalue → 0 and the condition number grows like λ^{cond_slope:.2f}.\n\n" + aff_table),
        data={"fd": fd_rows, "affine": aff, "affine_condition_slope": cond_slope})
    notes = ("A continuous normalizing flow trained by likelihood alone (FFJORD, λ = 0) has no unique minimiser: "
             "any flow pushing π to γ is optimal. The kinetic cost λ∫½|v|² (OT-Flow, RNODE) selects one, the "
             "straight-line McCann interpolation to the W2-proximal point of KL(·‖γ).")
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    settings["seeds"] = K
    data = {"groups": sec1.data["groups"], "ratio_path": ratio_path, "ratio_terminal": ratio_term, "fd": fd_rows,
            "affine": aff, "affine_condition_slope": cond_slope}
    return StudyOutput("mfglab wellposed: kinetic cost (CNF without kinetic cost vs OT-Flow)", notes, [sec1, sec2],
                       data, settings, seed=0)


def _nearest(aff, lam):
    for a in aff:
        if abs(a["lam"] - lam) < 1e-12:
            return a["condition"]
    return None


def _figure(groups, fd_rows, aff, cfg):
    import matplotlib.pyplot as plt

    ncol = max(len(groups), 4)
    fig, axes = plt.subplots(2, ncol, figsize=(3.6 * ncol, 7.2), constrained_layout=True)
    sel = np.arange(24)
    for ax, g in zip(axes[0], groups):
        for k, p in enumerate(g["paths"][:3]):
            for i in sel:
                ax.plot(p[:, i, 0], p[:, i, 1], color=f"C{k}", lw=0.7, alpha=0.8)
            ax.plot(p[-1, sel, 0], p[-1, sel, 1], "x", color=f"C{k}", ms=3)
        p0 = g["paths"][0]
        for i in sel:
            ax.plot(g["ref"][:, i, 0], g["ref"][:, i, 1], "k--", lw=0.6, alpha=0.6)
        ax.plot(p0[0, sel, 0], p0[0, sel, 1], "o", mfc="none", color="k", ms=3)
        ax.set_title(f"{g['label']}\npath RMS across seeds {g['pairwise_path_rms']:.3f}", fontsize=9)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    for ax in axes[0][len(groups):]:
        ax.axis("off")
    ax = axes[1][0]
    lam = [r["lam"] for r in fd_rows]
    ax.loglog(lam, [r["w2_closed_form"] for r in fd_rows], "k-", label="closed form")
    ok = [r for r in fd_rows if r["converged"]]
    ax.loglog([r["lam"] for r in ok], [r["w2_fd"] for r in ok], "o", color="C0", label="FD")
    ax.set_xlabel("λ")
    ax.set_ylabel("W2(ρ_T, γ)")
    ax.set_title("terminal law → γ as λ → 0 (1D)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax = axes[1][1]
    ax.semilogx(lam, [r["newton_iterations"] for r in fd_rows], "s-", color="C1", label="Newton iterations (cold)")
    for r in fd_rows:
        if not r["converged"]:
            ax.annotate("no convergence", (r["lam"], r["newton_iterations"]), fontsize=8, color="C3")
    ax.set_xlabel("λ")
    ax.set_ylabel("Newton iterations")
    ax2 = ax.twinx()
    ax2.loglog([a["lam"] for a in aff], [a["condition"] for a in aff], "^--", color="C2")
    ax2.set_ylabel("condition (affine objective)", color="C2")
    ax.set_title("FD Newton iterations; conditioning", fontsize=9)
    ax.grid(alpha=0.3)
    ax = axes[1][2]
    gl = [g for g in groups if g["model"] != "otflow"]
    lam_plot = [g["lam"] if g["lam"] > 0 else min([x["lam"] for x in gl if x["lam"] > 0] + [1.0]) / 10 for g in gl]
    ax.semilogx(lam_plot, [g["pairwise_path_rms"] for g in gl], "o-", color="C0", label="free-form net")
    ax.semilogx([1.0], [groups[-1]["pairwise_path_rms"]], "D", color="C3", label="OT-Flow λ = 1")
    ax.set_xticks(lam_plot)
    ax.set_xticklabels([f"{g['lam']:g}" if g["lam"] > 0 else "0 (FFJORD)" for g in gl], fontsize=8)
    ax.set_xlabel("λ")
    ax.set_ylabel("pairwise path RMS across seeds")
    ax.set_title("neural: spread across seeds", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1][3]
    for k, g in enumerate(groups):
        hst = g.get("history")
        if hst and hst["steps"]:
            ax.plot(hst["steps"], hst["pairwise_path_rms"], "o-", color=f"C{k}", label=g["label"])
    ax.set_xlabel("training step")
    ax.set_ylabel("pairwise path RMS across seeds")
    ax.set_title("spread across seeds during training", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for ax in axes[1][4:]:
        ax.axis("off")
    return fig
