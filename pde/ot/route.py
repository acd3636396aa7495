"""``solve_ot``: the static optimal-transport route (method ``"ot"``) for otflow and wgf.

otflow, ν = 0 (DESIGN "Static reformulations"): ρ_T = argmin KL(ρ‖γ) +
W₂²(ρ₀, ρ)/(2τ), τ = T/λ, solved by :func:`pde.ot.bfm.jko_step` on a
hierarchy of grids (each level warm-started from the coarser one); then

- ρ_t = ((1 − t/T)·id + (t/T)·T)#ρ₀ (:mod:`pde.ot.interpolate`) for t < T,
  and ρ_T = γ e^{−ψ/τ}/Z, the dual's terminal density (on the mixture case
  it converges at second order, the push at t = T at first: docs/ot.md; the
  L1 distance between the two is the certificate ``terminal_l1_push_vs_dual``);
- φ(·, t) = min_y g(y) + λ|x − y|²/(2(T − t)) (Hopf–Lax, the refined
  c-transform of :mod:`pde.ot.legendre`), g = 1 + log ρ*_T − log γ with
  ρ*_T = γ e^{−ψ/τ}/Z the dual's terminal density: the viscosity solution of
  −∂tφ + |∇φ|²/(2λ) = 0 with v* = −∇φ/λ the straight-line velocity.

otflow, ν > 0: the entropic route (:mod:`pde.ot.entropic`).

bridge (ρ(0) = ρ₀, ρ(T) = ρ₁): :mod:`pde.ot.bridge` (balanced Sinkhorn and the
Schrödinger system for ν > 0, the monotone rearrangement for ν = 0 in 1D).

wgf: the JKO chain ρ_{j+1} = argmin KL(ρ‖π) + W₂²(ρ_j, ρ)/(2τ) with the
problem's τ (``params["tau"]``), each step warm-started from the previous
one; the time levels inside a step by displacement interpolation, and
φ = log(ρ_t/π) (the transport potential of the gradient flow, velocity −∇φ,
as in the closed form and the FD route). Extras ``jko_t``/``jko_rho`` hold
the chain itself.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..memory import check_memory
from ..problem import KLTerminal, MFGProblem
from ..solution import MFGSolution, package_versions
from .bfm import OTConvergenceError, jko_step, prolong
from .interpolate import PUSHES, Displacement, PushStats, displacement
from .legendre import hopf_lax

__all__ = ["solve_ot", "memory_estimate", "OTInputError", "OTConvergenceError", "COVERED", "OTHER_ROUTES"]

#: families this route solves
COVERED = ("otflow", "wgf", "bridge")
#: where the families it does not cover can go
OTHER_ROUTES = {"sgm": ("exact", "fd", "fe"), "lq": ("exact", "fd", "fe"), "custom": ("fd", "fe")}
#: coarsest grid of the warm-start hierarchy
MIN_LEVEL_N = 64
#: the support on which the optimality residual is measured: ρ_T ≥ SUPPORT·max ρ_T
SUPPORT = 1e-4


class OTInputError(ValueError):
    """Bad input to the ot route (family, grid, options)."""


def _grid_n(problem: MFGProblem, n) -> tuple:
    if n is None:
        return tuple(problem.n)
    raw = tuple(n) if np.ndim(n) else (n,) * problem.dim
    if len(raw) != problem.dim:
        raise OTInputError(f"n={list(raw)} has {len(raw)} entries; expected {problem.dim} (one per dimension)")
    out = []
    for k in raw:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 16:
            raise OTInputError(f"n={list(raw)}: each entry must be an integer >= 16 (got {k!r})")
        out.append(int(k))
    return tuple(out)


def memory_estimate(problem: MFGProblem, n=None, nt=None) -> int:
    """Bytes the ot route needs at grid ``n``, ``nt`` (default: the problem's): output arrays plus work arrays.

    ν = 0: ρ, φ at nt+1 levels, per-step potentials and densities and ~60 work arrays (splines, Newton,
    DCT). ν > 0 (entropic): the same arrays plus one dense heat-kernel matrix per axis and time level.
    """
    shape = _grid_n(problem, n)
    N = int(np.prod(shape))
    levels = (problem.nt if nt is None else int(nt)) + 1
    steps = int(round(problem.T / float(problem.params.get("tau", problem.T)))) if problem.family == "wgf" else 1
    nbytes = 8 * N * (2 * levels + 2 * (steps + 1) + 60)
    if problem.family in ("otflow", "bridge") and problem.nu > 0:
        nbytes += 8 * sum(k * k for k in shape) * (levels + 2)
    return int(nbytes)


def _with_memory(sol: MFGSolution, mem: dict) -> MFGSolution:
    sol.meta["memory"] = mem
    return sol


def _levels(shape: tuple) -> list:
    """Grid hierarchy: halve while every entry stays even and >= MIN_LEVEL_N."""
    out = [shape]
    while all(k % 2 == 0 and k // 2 >= MIN_LEVEL_N for k in out[-1]):
        out.append(tuple(k // 2 for k in out[-1]))
    return out[::-1]


def _restrict(u: np.ndarray, shape: tuple) -> np.ndarray:
    """Cell averages of a grid density on a grid coarser by a power of 2 (mass preserved)."""
    while u.shape != tuple(shape):
        if u.ndim == 1:
            u = 0.5 * (u[0::2] + u[1::2])
        else:
            u = 0.25 * (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2])
    return u


def _law_fns(law):
    """(pdf, logpdf) of a law on node stacks of shape (d, *shape)."""

    def pdf(P):
        return np.asarray(law.pdf(np.moveaxis(P, 0, -1)), dtype=float)

    def logpdf(P):
        return np.asarray(law.logpdf(np.moveaxis(P, 0, -1)), dtype=float)

    return pdf, logpdf


def _solve_step(problem, shape, mu_law, mu_grid, ref, tau, tol, accept_tol, max_iter, progress, history,
                bfm_iter=0):
    """One JKO step on ``shape`` by the warm-start hierarchy. Returns (result, levels).

    μ is ``mu_law`` sampled on each level, or the grid density ``mu_grid`` (on ``shape``) restricted
    to it. Only the finest level raises when it does not converge: a coarse level only starts the next.
    """
    _, lg_fn = _law_fns(ref)
    levels = []
    phi0 = None
    axes_prev = None
    todo = _levels(shape)
    res = None
    for k, lvl in enumerate(todo):
        g = problem.grid(n=lvl, nt=1)
        pts = g.points()
        if mu_grid is not None:
            mu = _restrict(mu_grid, lvl)
        else:
            mu = np.asarray(mu_law.pdf(pts), dtype=float)
            mu = mu / g.integrate(mu)
        lg = np.asarray(ref.logpdf(pts), dtype=float)
        if phi0 is not None and axes_prev is not None:
            phi0 = prolong(phi0, axes_prev, g.axes)
        t0 = time.perf_counter()
        res = jko_step(mu, g.axes, lg, tau, log_gamma_fn=lg_fn, phi0=phi0, tol=tol, accept_tol=accept_tol,
                       max_iter=max_iter, progress=progress, bfm_iter=bfm_iter if k == 0 else 0,
                       raise_on_fail=k == len(todo) - 1)
        levels.append({"n": list(lvl), "bfm_iterations": res.certificates["bfm_iterations"],
                       "polish_iterations": res.certificates["polish_iterations"],
                       "marginal_l1": res.certificates["marginal_l1"], "converged": res.certificates["converged"],
                       "accepted_on_stall": res.certificates["accepted_on_stall"], "wall_s": time.perf_counter() - t0})
        history.extend(h["marginal_l1"] for h in res.history if "marginal_l1" in h)
        phi0, axes_prev = res.phi, g.axes
    return res, levels


def _step_certificates(mu, res, axes, lg, tau, rho_T):
    """Primal value of ρ_T = T#μ, gap to the dual, optimality residual, mass and positivity."""
    from .push import mirror_gradient

    h = tuple(float(a[1] - a[0]) for a in axes)
    vol = float(np.prod(h))
    g = mirror_gradient(res.phi, h)
    transport = 0.5 * vol * float(np.sum(mu * (g * g).sum(0))) / tau  # W₂²/(2τ) of the map
    pos = rho_T > 0  # ρ_T: the push T#μ
    kl = vol * float(np.sum(np.where(pos, rho_T * (np.log(np.where(pos, rho_T, 1.0)) - lg), 0.0)))
    primal = kl + transport
    dual = res.certificates["dual"]
    support = res.rho > SUPPORT * res.rho.max()
    # log(ρ_T/γ) + ψ/τ is constant for the dual's ρ*; measured on the pushed ρ_T = T#μ
    dev = np.log(np.where(support & pos, rho_T, 1.0) / np.where(support & pos, res.rho, 1.0))
    dev = dev[support & pos]
    return {"dual": dual, "primal": primal, "gap": primal - dual, "relative_gap": (primal - dual) / max(1.0, abs(dual)),
            "marginal_l1": res.certificates["marginal_l1"], "terminal_l1_push_vs_dual": vol * float(np.abs(rho_T - res.rho).sum()),
            "optimality_residual": float(np.abs(dev - dev.mean()).max()) if dev.size else math.nan,
            "transport_cost": transport, "kl": kl, "iterations": res.iterations,
            "bfm_iterations": res.certificates["bfm_iterations"], "polish_iterations": res.certificates["polish_iterations"],
            "stalled": res.certificates["stalled"], "accepted_on_stall": res.certificates["accepted_on_stall"]}


def convergence_summary(steps: list, tol: float, accept_tol: float) -> dict:
    """How the JKO steps (their certificates, in order) were accepted, in words and as fields.

    ``status`` is "converged" when every step reached ``tol``, "accepted-on-stall" when some polish
    stalled between ``tol`` and ``accept_tol`` (the steps, by index, and their marginal errors are
    listed); a stall above ``accept_tol`` has already raised.
    """
    stalled = [(j, c["marginal_l1"]) for j, c in enumerate(steps) if c["accepted_on_stall"]]
    worst = max(c["marginal_l1"] for c in steps)
    if not stalled:
        text = f"converged: marginal error {worst:.2e} <= tol {tol:g}"
    else:
        which = ", ".join(f"step {j}: {m:.2e}" for j, m in stalled)
        text = (f"accepted on stall: the polish could not lower the marginal error below tol {tol:g} and it is "
                f"at most accept_tol {accept_tol:g} ({which}); the iteration adds about that much L1 error to rho")
    return {"status": "accepted-on-stall" if stalled else "converged", "convergence": text,
            "accepted_on_stall": bool(stalled), "stalled_steps": [j for j, _ in stalled],
            "max_marginal_l1": worst}


def solution_meta(problem, grid, rho, push, tol, accept_tol, stats, history, steps: list, fields: dict) -> dict:
    """The ``meta`` of an ot solution: the fields every ot solution has (with the
    :func:`convergence_summary` of the step certificates ``steps``), then ``fields``."""
    mass = grid.integrate(rho)
    return {"method": "ot", "problem": problem.describe(), "grid": grid.to_dict(), "residual_history": history,
            **convergence_summary(steps, tol, accept_tol),
            "tol": tol, "accept_tol": accept_tol, "mass_error": float(np.max(np.abs(mass - 1.0))),
            **stats.meta(), "min_rho": float(rho.min()),
            "push": push, "versions": package_versions(), **fields}


def _check(problem: MFGProblem, push: str, tol, max_iter):
    if not isinstance(problem, MFGProblem):
        raise TypeError(f"problem must be an MFGProblem (got {type(problem).__name__})")
    fam = problem.family
    if fam not in COVERED:
        routes = OTHER_ROUTES.get(fam, ("fd", "fe"))
        raise OTInputError(f"the ot route covers the families {list(COVERED)}; family {fam!r} is solved by the "
                           f"routes {list(routes)}")
    if not isinstance(problem.terminal, KLTerminal):
        raise OTInputError(f"the ot route needs a KL terminal cost (got {problem.terminal.kind!r}); use 'fd'")
    if problem.boundary != "reflecting":
        raise OTInputError(f"boundary={problem.boundary!r}: the ot route works on reflecting boxes; use 'fd' for "
                           "periodic ones")
    if push not in PUSHES:
        raise OTInputError(f"push={push!r}; expected one of {list(PUSHES)}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise OTInputError(f"tol={tol!r}; expected a positive number")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise OTInputError(f"max_iter={max_iter!r}; expected a positive integer")


def solve_ot(problem: MFGProblem, n=None, nt=None, tol: float | None = None, max_iter: int | None = None, *,
             accept_tol: float = 3e-4,
             push: str = "jacobian", progress=None, **options) -> MFGSolution:
    """Solve an otflow or wgf problem by the static OT route (see the module docstring).

    Args:
        problem: an otflow, wgf or bridge problem on a reflecting box (1D or 2D; bridges: :mod:`pde.ot.bridge`).
        n, nt: grid overrides (n: nodes per dimension, each >= 16).
        tol: ν = 0: marginal error ‖μ − S#ρ_T‖₁ at which a JKO step's polish stops (default 1e-6);
            ν > 0: the Sinkhorn tolerance of :func:`pde.ot.entropic.solve_entropic` (its default when None).
        accept_tol: the largest marginal error accepted from a polish that stalled above ``tol``
            (:func:`pde.ot.bfm.jko_step`); a larger one raises.
        max_iter: ν = 0: polish iterations per grid level and JKO step (default 2000); ν > 0: Sinkhorn
            iterations (the entropic route's default when None).
        push: ``"jacobian"`` or ``"cic"`` for the time levels (:mod:`pde.ot.interpolate`).
        progress: optional ``progress(it, residual, info)``.
        **options: ``max_memory`` (None): memory budget (bytes or "8G"; :func:`pde.memory.check_memory`),
            checked before anything is allocated; ``bfm_iter`` (0): back-and-forth ascent iterations on the coarsest level before
            the polish (:func:`pde.ot.bfm.jko_step`); when ν > 0 (otflow), passed to the entropic route.

    Returns:
        MFGSolution with rho, phi (nt+1, *shape) and certificates in ``meta`` (``docs/ot.md``).

    Raises:
        OTInputError, OTConvergenceError (with ``.history``).
    """
    max_memory = options.pop("max_memory", None)
    mem = None
    if isinstance(problem, MFGProblem):
        shape0 = _grid_n(problem, n)
        mem = check_memory(memory_estimate(problem, shape0, nt), f"the ot solve of {problem.family} on "
                           f"n={list(shape0)}, nt={problem.nt if nt is None else nt}", max_memory)
    if isinstance(problem, MFGProblem) and problem.family == "bridge":
        from .bridge import solve_bridge

        return _with_memory(solve_bridge(problem, n=n, nt=nt, tol=tol, max_iter=max_iter, accept_tol=accept_tol,
                                         progress=progress, **options), mem)
    if isinstance(problem, MFGProblem) and problem.family == "otflow" and problem.nu > 0:
        from .entropic import solve_entropic

        given = {k: v for k, v in (("tol", tol), ("max_iter", max_iter)) if v is not None}
        return _with_memory(solve_entropic(problem, n=n, nt=nt, progress=progress, **given, **options), mem)
    tol = 1e-6 if tol is None else tol
    max_iter = 2000 if max_iter is None else max_iter
    _check(problem, push, tol, max_iter)
    if not (isinstance(accept_tol, (int, float)) and math.isfinite(accept_tol) and accept_tol > 0):
        raise OTInputError(f"accept_tol={accept_tol!r}; expected a positive number")
    unknown = set(options) - {"bfm_iter"}
    if unknown:
        raise OTInputError(f"unknown option(s) {sorted(unknown)} for the ot route (nu = 0); expected some of "
                           "['bfm_iter']")
    bfm_iter = options.get("bfm_iter", 0)
    if isinstance(bfm_iter, bool) or not isinstance(bfm_iter, (int, np.integer)) or bfm_iter < 0:
        raise OTInputError(f"bfm_iter={bfm_iter!r}; expected an integer >= 0")
    wall0 = time.perf_counter()
    shape = _grid_n(problem, n)
    grid = problem.grid(n=shape, nt=nt)
    if problem.family == "wgf":
        from .wgf import solve_wgf_chain

        return _with_memory(solve_wgf_chain(problem, grid, tol, accept_tol, max_iter, push, progress, wall0, bfm_iter),
                            mem)
    tau = problem.T / problem.lam
    ref = problem.reference
    history: list = []
    res, levels = _solve_step(problem, shape, problem.rho0, None, ref, tau, tol, accept_tol, max_iter, progress,
                              history, bfm_iter)
    t_solve = time.perf_counter() - wall0
    pts = grid.points()
    mu = np.asarray(problem.rho0.pdf(pts), dtype=float)
    mu = mu / grid.integrate(mu)
    lg = np.asarray(ref.logpdf(pts), dtype=float)
    mu_fn, _ = _law_fns(problem.rho0)
    t1 = time.perf_counter()
    disp = Displacement(res.phi, grid.axes) if push == "jacobian" else None
    rho = np.empty((grid.nt + 1,) + shape)
    stats = PushStats()
    for k, t in enumerate(grid.t):
        rho[k], info = displacement(mu, res.phi, grid.axes, float(t) / problem.T, mu_fn=mu_fn, push=push, disp=disp)
        stats.add(info, float(t), used=k < grid.nt)  # the push at T is only the certificate's
    push_T = rho[-1].copy()
    rho[-1] = res.rho  # ρ_T = γ e^{−ψ/τ}/Z: measured second order where the push at s = 1 is first (docs/ot.md)
    t_rho = time.perf_counter() - t1
    t1 = time.perf_counter()
    g_T = 1.0 + np.log(res.rho) - lg
    phi = np.stack([hopf_lax(g_T, grid.axes, (problem.T - t) / problem.lam) for t in grid.t])
    t_phi = time.perf_counter() - t1
    cert = _step_certificates(mu, res, grid.axes, lg, tau, push_T)
    wall = time.perf_counter() - wall0
    meta = solution_meta(problem, grid, rho, push, tol, accept_tol, stats, history, [cert], {
        "scheme": "JKO step by the second-order Monge-Ampere polish of its dual (back-and-forth ascent on "
                  f"request); displacement interpolation ({push}); Hopf-Lax potentials",
        "tau": tau,
        "iterations": cert["iterations"],
        "certificates": cert,
        "levels": levels,
        "timings": {"solve_s": t_solve, "rho_levels_s": t_rho, "phi_levels_s": t_phi, "wall_s": wall},
    })
    return _with_memory(MFGSolution(grid.t, grid.axes, rho, phi, meta=meta, extras={"rho_push_T": push_T},
                                    status=meta["status"]), mem)
