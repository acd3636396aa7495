r"""Study ``coupling``: monotone couplings give one equilibrium, aggregating ones several.

1D custom MFG on [-3, 3]: ρ₀ = N(0, 0.4²) (symmetric), ν = 0.3, λ = 1, T = 1,
terminal cost g(x) = -(e^{-2(x-1)²} + e^{-2(x+1)²}) (two symmetric wells at ±1)
and the local coupling f(x, ρ) = ±κρ.

- **Monotone** f = +κρ (crowd aversion, ∂f/∂ρ > 0, Lasry–Lions): the
  equilibrium is unique. Newton started from several initial guesses (the
  solver's default, the left- and right-biased equilibria of the aggregating
  problem, a zero guess, random perturbations) converges to one solution:
  the pairwise differences are at the solver's tolerance.
- **Aggregating** f = -κρ (∂f/∂ρ < 0): Lasry–Lions' argument fails, and
  the symmetric data carries three equilibria: all agents to the left well,
  all to the right well, or a symmetric split. The biased equilibria are
  reached by a homotopy (a tilt δx of g, κ increased from 0, then the tilt
  removed); every reported equilibrium is a Newton solve of the *untilted*
  problem with residual at tolerance, and the left one is the mirror image of
  the right one (a certificate independent of the solver).

The Lasry–Lions quantity ∫∫(f(ρ₁) - f(ρ₂))(ρ₁ - ρ₂) dx dt, which must be
> 0 for two distinct equilibria of a monotone game to exist and so rules them
out, is reported for the aggregating pair: it is negative.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

import pde
from pde.problem import LocalCoupling

from ..report import FigureSpec, Section, markdown_table
from ..wellposed import StudyOutput

FULL = dict(n=120, nt=60, kappa=4.0, nu=0.3, tilt=0.3, tol=1e-10, random_guesses=2)
QUICK = dict(FULL, n=60, nt=30, random_guesses=1)


def _g(x):
    x = np.asarray(x, float)[..., 0]
    return -(np.exp(-2.0 * (x - 1.0) ** 2) + np.exp(-2.0 * (x + 1.0) ** 2))


def make_problem(kappa: float, sign: float, nu: float, n: int, nt: int, tilt: float = 0.0):
    """The custom problem with f = sign·κρ and terminal g(x) + tilt·x."""
    k = float(sign) * float(kappa)
    cp = LocalCoupling(lambda x, r, t: k * r, lambda x, r, t: k * np.ones_like(r), name=f"{k:g}*rho")

    def g(x):
        return _g(x) + tilt * np.asarray(x, float)[..., 0]

    return pde.custom(pde.Gaussian([0.0], [[0.16]]), domain=[[-3.0, 3.0]], T=1.0, nu=nu, lam=1.0, coupling=cp,
                      terminal=g, n=(n,), nt=nt, name=f"coupling-{'mono' if sign > 0 else 'agg'}")


def _solve(prob, tol, guess=None):
    kw = {"initial_guess": guess} if guess is not None else {}
    return pde.solve(prob, "fd", progress=False, tol=tol, **kw)


def biased_equilibrium(cfg, side: int, log=print):
    """Homotopy to the equilibrium biased to one side (side = +1: tilt +δx, i.e. the left well)."""
    its = 0
    guess = None
    stages = [(k, side * cfg["tilt"]) for k in np.linspace(0.0, cfg["kappa"], 5)]
    stages += [(cfg["kappa"], side * cfg["tilt"] * f) for f in (0.5, 0.25, 0.0)]
    for k, tl in stages:
        sol = _solve(make_problem(k, -1.0, cfg["nu"], cfg["n"], cfg["nt"], tl), cfg["tol"], guess)
        its += int(sol.meta.get("iterations") or 0)
        guess = (sol.phi, sol.rho)
    # the last stage has tilt 0: it is a Newton solve of the untilted aggregating problem
    return sol, its


def _mean_T(sol):
    x = sol.axes[0]
    return float((sol.rho[-1] * x).sum() * (x[1] - x[0]))


def run(quick: bool = False, seeds: int | None = None, log=print, **options) -> StudyOutput:
    """Run the study (see the module docstring); ``options`` override entries of FULL/QUICK. No training: seeds unused."""
    cfg = dict(QUICK if quick else FULL)
    bad = set(options) - set(cfg)
    if bad:
        raise ValueError(f"unknown option(s) {sorted(bad)} for the coupling study; expected some of {sorted(cfg)}")
    cfg.update(options)
    tol = cfg["tol"]
    log(f"coupling: aggregating f = -{cfg['kappa']:g}ρ, homotopies to the left and right equilibria")
    t0 = time.perf_counter()
    left, its_l = biased_equilibrium(cfg, +1, log)
    right, its_r = biased_equilibrium(cfg, -1, log)
    agg = make_problem(cfg["kappa"], -1.0, cfg["nu"], cfg["n"], cfg["nt"])
    sym = _solve(agg, tol)
    t_agg = time.perf_counter() - t0
    x = agg.grid().axes[0]
    h = float(x[1] - x[0])
    dt = agg.T / cfg["nt"]
    eqs = {"left": left, "right": right, "symmetric (default guess)": sym}
    eq_rows = []
    for name, s in eqs.items():
        eq_rows.append({"equilibrium": name, "final_residual": s.meta["final_residual"], "mean_T": _mean_T(s),
                        "iterations_last_solve": s.meta.get("iterations"), "mass_error": s.meta.get("mass_error")})
    pairs = []
    for (na, a), (nb, b) in itertools.combinations(eqs.items(), 2):
        drho = np.abs(a.rho - b.rho)
        pairs.append({"a": na, "b": nb, "l1_rho_T": float(drho[-1].sum() * h), "max_rho": float(drho.max()),
                      "lasry_lions": float(-cfg["kappa"] * ((a.rho - b.rho) ** 2).sum() * h * dt)})
    mirror = float(np.abs(left.rho - right.rho[:, ::-1]).max())
    log(f"  left mean {_mean_T(left):+.4f}, right {_mean_T(right):+.4f}, symmetric {_mean_T(sym):+.4f}; "
        f"mirror defect {mirror:.2e}")

    log(f"coupling: monotone f = +{cfg['kappa']:g}ρ from several initial guesses")
    mono = make_problem(cfg["kappa"], +1.0, cfg["nu"], cfg["n"], cfg["nt"])
    guesses = {"default": None, "left equilibrium (aggregating)": (left.phi, left.rho),
               "right equilibrium (aggregating)": (right.phi, right.rho),
               "zero potential, ρ₀ at all times": (np.zeros_like(left.phi), np.repeat(left.rho[:1], cfg["nt"] + 1, 0))}
    rng = np.random.default_rng(0)
    for i in range(cfg["random_guesses"]):
        pert = rng.standard_normal(left.phi.shape) * 0.5
        guesses[f"random perturbation {i + 1}"] = (sym.phi + pert, sym.rho)
    msols = {}
    for name, gs in guesses.items():
        s = _solve(mono, tol, gs)
        msols[name] = s
        log(f"  guess {name}: {s.meta.get('iterations')} Newton iterations, residual {s.meta['final_residual']:.2e}")
    ref = msols["default"]
    mono_rows = []
    for name, s in msols.items():
        dphi = s.phi - ref.phi
        mono_rows.append({"guess": name, "iterations": s.meta.get("iterations"), "final_residual": s.meta["final_residual"],
                          "max_drho": float(np.abs(s.rho - ref.rho).max()),
                          "max_dphi": float(np.abs(dphi - dphi.mean()).max()), "mean_T": _mean_T(s)})
    max_mono = max(max(r["max_drho"], r["max_dphi"]) for r in mono_rows)

    t1 = markdown_table(["equilibrium", "mean of ρ_T", "final residual", "Newton its (last solve)", "mass error"],
                        [[r["equilibrium"], r["mean_T"], r["final_residual"], r["iterations_last_solve"],
                          r["mass_error"]] for r in eq_rows])
    t2 = markdown_table(["pair", "‖ρ_T,a − ρ_T,b‖₁", "max abs(ρ_a − ρ_b)", "∫∫(f(ρ_a) − f(ρ_b))(ρ_a − ρ_b)"],
                        [[f"{p['a']} / {p['b']}", p["l1_rho_T"], p["max_rho"], p["lasry_lions"]] for p in pairs])
    t3 = markdown_table(["initial guess", "Newton its", "final residual", "max abs(Δρ) vs default", "max abs(Δφ − c) vs default",
                         "mean of ρ_T"],
                        [[r["guess"], r["iterations"], r["final_residual"], r["max_drho"], r["max_dphi"], r["mean_T"]]
                         for r in mono_rows])
    setup = (f"Custom 1D problem on [-3, 3], n = {cfg['n']}, nt = {cfg['nt']}: ρ₀ = N(0, 0.4²), ν = {cfg['nu']}, λ = 1, "
             "T = 1, g(x) = −(e^{−2(x−1)²} + e^{−2(x+1)²}), f = ±κρ with "
             f"κ = {cfg['kappa']}. Newton tolerance {tol:g} (Δt-scaled max-norm residual).")
    secA = Section("Aggregating coupling f = −κρ: three equilibria", setup + (
        "\n\nLeft and right equilibria: homotopy with a tilt ±" f"{cfg['tilt']}x of g and κ raised from 0, then the "
        "tilt removed; the last solve of each is Newton on the untilted problem. Symmetric: the solver's default start.\n\n"
        + t1 + "\n\n" + t2 +
        f"\n\nThe left equilibrium is the mirror image of the right one to {mirror:.1e} (max over x, t): "
        "the symmetry of the data, checked independently of the solver. The Lasry–Lions integral is negative: "
        "the uniqueness argument needs it positive."),
        [FigureSpec("fig_coupling.png", _figure(eqs, msols, x),
                    "Top: ρ(x, t) of the left, symmetric and right equilibria of the aggregating game. Bottom left: "
                    "terminal densities; bottom right: the monotone game's terminal densities from every initial "
                    "guess (one curve).")],
        data={"equilibria": eq_rows, "pairs": pairs, "mirror_defect": mirror, "homotopy_iterations": [its_l, its_r],
              "seconds": t_agg})
    secB = Section("Monotone coupling f = +κρ: one solution from every initial guess", (
        "The same problem with the sign of the coupling flipped, Newton from each initial guess (the guesses include "
        "the two asymmetric equilibria of the aggregating game).\n\n" + t3 +
        f"\n\nLargest difference between any two solutions: {max_mono:.1e} (potentials compared modulo a constant)."),
        data={"runs": mono_rows, "max_difference": max_mono})
    notes = ("Lasry–Lions: if f is monotone (∫(f(ρ₁) − f(ρ₂))(ρ₁ − ρ₂) ≥ 0) the MFG has at most one solution. "
             "Crowd aversion is monotone; aggregation is not, and symmetric data then carries several equilibria.")
    data = {"equilibria": eq_rows, "pairs": pairs, "mirror_defect": mirror, "monotone": mono_rows,
            "monotone_max_difference": max_mono, "tol": tol}
    return StudyOutput("mfglab wellposed: monotone vs aggregating couplings", notes, [secA, secB], data,
                       dict(cfg), seed=None)


def _figure(eqs, msols, x):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7), constrained_layout=True)
    gs = fig.add_gridspec(2, 6)
    vmax = max(float(s.rho.max()) for s in eqs.values())
    for j, (name, s) in enumerate(eqs.items()):
        ax = fig.add_subplot(gs[0, 2 * j:2 * j + 2])
        im = ax.pcolormesh(s.t, x, s.rho.T, shading="nearest", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"aggregating: {name}\nmean of ρ_T = {_mean_T(s):+.3f}", fontsize=9)
        ax.set_xlabel("t")
        ax.set_ylabel("x")
    fig.colorbar(im, ax=ax, label="ρ")
    ax = fig.add_subplot(gs[1, :3])
    for name, s in eqs.items():
        ax.plot(x, s.rho[-1], label=name)
    ax.plot(x, next(iter(eqs.values())).rho[0], "k:", label="ρ₀")
    ax.set_xlabel("x")
    ax.set_ylabel("ρ_T")
    ax.set_title("aggregating f = −κρ: terminal densities", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(gs[1, 3:])
    for k, (name, s) in enumerate(msols.items()):
        ax.plot(x, s.rho[-1], lw=2.5 - 0.3 * k, ls=["-", "--", ":", "-.", "-", "--"][k % 6], label=name)
    ax.set_xlabel("x")
    ax.set_ylabel("ρ_T")
    ax.set_title("monotone f = +κρ: every initial guess", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
