"""``solve_fd``: problem -> discretisation -> solver -> :class:`~pde.solution.MFGSolution`."""

from __future__ import annotations

import math
import time

import numpy as np

from ..distributions import GaussianMixture
from ..problem import (FixedTerminal, KLTerminal, LocalCoupling, LocalTerminal, LQCoupling, LQTerminal, MFGProblem,
                       NoCoupling)
from ..solution import MFGSolution, package_versions
from . import _jit
from .solvers import FDConvergenceError, fixed_point, fp_forward, initial_guess, make_progress, newton
from .system import Discretization, NonFiniteError

__all__ = ["solve_fd", "build_discretization", "FDConvergenceError", "NonFiniteError", "FDInputError",
           "gradient", "SOLVERS"]

SOLVERS = ("newton", "fixed-point")

#: ε of the KL terminal g = 1 + log(ρ_T + ε) - log γ (density units; see docs/fd.md)
KL_FLOOR = 1e-4

#: nodes per standard deviation of the narrowest Gaussian component required
MIN_NODES_PER_STD = 2.0


class FDInputError(ValueError):
    """Bad input to the FD solver (grid too coarse, incompatible step, …)."""


# ---------------------------------------------------------------------------
# problem -> arrays
# ---------------------------------------------------------------------------


def _check_resolution(problem: MFGProblem, grid) -> None:
    """Raise if h cannot resolve the narrowest Gaussian component of the laws."""
    sig = math.inf
    for law in (problem.rho0, problem.data, problem.reference):
        if isinstance(law, GaussianMixture):
            for C in law.covs:
                sig = min(sig, float(np.sqrt(np.linalg.eigvalsh(C).min())))
    if not math.isfinite(sig):
        return
    hmax = max(grid.h)
    if hmax > sig / MIN_NODES_PER_STD:
        need = [int(math.ceil((hi - lo) * MIN_NODES_PER_STD / sig)) for lo, hi in grid.domain]
        raise FDInputError(
            f"grid too coarse: h = {hmax:.3g} but the narrowest Gaussian component has std {sig:.3g}; the scheme needs "
            f"h <= std/{MIN_NODES_PER_STD:g} = {sig / MIN_NODES_PER_STD:.3g}, i.e. n >= {need} on this box "
            "(pass check_resolution=False to override)")


def _discrete_density(law, pts, vol, label: str) -> np.ndarray:
    rho = np.asarray(law.pdf(pts), dtype=float).reshape(-1)
    mass = vol * rho.sum()
    if not (np.all(np.isfinite(rho)) and mass > 0):
        raise FDInputError(f"{label} density is not finite/positive on the grid (discrete mass {mass!r})")
    # Renormalise to discrete mass 1 (the midpoint rule is exact only to O(h²)).
    return rho / mass


def build_discretization(problem: MFGProblem, n=None, nt=None, check_resolution: bool = True,
                         kl_floor: float = None) -> Discretization:
    """The arrays of the FD scheme for ``problem`` on its grid (overrides n, nt)."""
    grid = problem.grid(n=n, nt=nt)
    if check_resolution:
        _check_resolution(problem, grid)
    pts = grid.points().reshape(grid.size, grid.dim)
    b = problem.b(pts)
    c = np.stack([problem.c(pts, t) for t in grid.t[:-1]])
    rho0 = _discrete_density(problem.rho0, pts, grid.cell_volume, "rho0")
    term = problem.terminal
    if isinstance(term, KLTerminal):
        terminal = ("kl", np.asarray(term.reference.logpdf(pts), dtype=float).reshape(-1))
    elif isinstance(term, FixedTerminal):
        g = np.asarray(term.g(pts), dtype=float).reshape(-1)
        if not np.all(np.isfinite(g)):
            bad = int(np.flatnonzero(~np.isfinite(g))[0])
            raise NonFiniteError(f"terminal cost g is not finite at x = {pts[bad]} (for sgm, g = -log pi: the data "
                                 "density vanishes there); the HJB route needs g finite on the grid")
        terminal = ("fixed", g)
    elif isinstance(term, LocalTerminal):
        terminal = ("local", term.g, term.dgdrho)
    elif isinstance(term, LQTerminal):
        terminal = ("lq", float(term.qT))
    else:
        raise FDInputError(f"terminal cost {type(term).__name__} is not supported by the FD solver")
    cp = problem.coupling
    if isinstance(cp, NoCoupling):
        coupling = ("none",)
    elif isinstance(cp, LQCoupling):
        coupling = ("lq", float(cp.q))
    elif isinstance(cp, LocalCoupling):
        coupling = ("local", cp.f, cp.dfdrho)
    else:
        raise FDInputError(f"coupling {type(cp).__name__} is not supported by the FD solver")
    return Discretization(grid, problem.nu, problem.lam, b, c, rho0, terminal, coupling,
                          kl_floor=KL_FLOOR if kl_floor is None else float(kl_floor))


# ---------------------------------------------------------------------------
# derived fields
# ---------------------------------------------------------------------------


def gradient(u: np.ndarray, grid) -> np.ndarray:
    """Centred-difference gradient of nodal values u (..., *shape) -> (..., *shape, d).

    One-sided (first order) next to a reflecting wall, wrapped on a periodic box.
    """
    d = grid.dim
    lead = u.ndim - d
    out = []
    for a in range(d):
        ax = lead + a
        h = grid.h[a]
        if grid.boundary == "periodic":
            g = (np.roll(u, -1, axis=ax) - np.roll(u, 1, axis=ax)) / (2 * h)
        else:
            g = np.gradient(u, h, axis=ax, edge_order=1)
        out.append(g)
    return np.stack(out, axis=-1)


# ---------------------------------------------------------------------------
# the solve
# ---------------------------------------------------------------------------


def _solve_coupled(disc: Discretization, solver: str, tol: float, max_iter, progress, initial=None,
                   continuation="auto", relaxation: float = 0.5):
    """Solve one discrete MFG; returns (phi, rho, info)."""
    prog = make_progress(progress, solver)
    info: dict = {"solver": solver}
    if solver == "fixed-point":
        phi0, rho0 = (None, None) if initial is None else initial
        phi, rho, hist = fixed_point(disc, phi0, rho0, tol=tol, max_iter=max_iter or 500, relaxation=relaxation,
                                     progress=prog)
        info.update(iterations=len(hist) - 1, residual_history=hist)
        return phi, rho, info
    if initial is None:
        phi0, rho0 = initial_guess(disc)
    else:
        phi0, rho0 = initial
    U0 = disc.pack(phi0, rho0)
    try:
        if disc.terminal[0] == "kl" and continuation == "auto" and initial is None:
            # the log terminal is far from the decoupled start: go straight to the
            # adaptive homotopy, whose first try is s = 1 (plain Newton)
            raise FDConvergenceError("plain Newton skipped", [])
        U, hist, ninfo = newton(disc, U0, tol=tol, max_iter=max_iter or 30, progress=prog)
        info.update(ninfo, residual_history=hist)
    except FDConvergenceError as exc:
        if continuation in (None, False, "none"):
            raise
        U, hist, ninfo = _continuation(disc, U0, tol, max_iter or 30, prog, continuation, exc)
        info.update(ninfo, residual_history=hist)
    phi, rho, _ = disc.unpack(U)
    # Polish: ρ = FP(φ) exactly. Each level solve is with an M-matrix, so the
    # substitutions add only non-negative terms: ρ >= 0 and mass to round-off.
    rho_p = fp_forward(disc, phi)
    info["polish_change"] = float(np.max(np.abs(rho_p - rho)))
    rho = rho_p
    phi[disc.nt] = disc.terminal_value(rho[disc.nt], (disc.vol * rho[disc.nt] @ disc.pts) if disc.dm else None)
    info["final_residual"] = float(np.max(np.abs(disc.residual(disc.pack(phi, rho)))))
    return phi, rho, info


def _continuation(disc, U0, tol, max_iter, prog, kind, first_exc):
    """Homotopy from an easier problem.

    - "coupling" (default for a KL terminal): g_s = s g(ρ_T) + (1 - s) g(ρ₀),
      s: 0 -> 1 with adaptive steps; s = 0 is decoupled (solved by one sweep).
    - "lam": λ·16, 8, 4, 2, 1 (shorter effective horizon T/λ);
    - "nu": extra viscosity decreasing to 0.
    """
    import dataclasses

    if kind == "auto":
        kind = "coupling" if disc.terminal[0] == "kl" else "lam"
    if kind not in ("lam", "nu", "coupling"):
        raise FDInputError(f"continuation={kind!r}; expected 'auto', 'coupling', 'lam', 'nu' or None")
    hist_all = list(first_exc.history)
    if kind == "coupling":
        if disc.terminal[0] != "kl":
            raise FDInputError("continuation='coupling' needs a KL terminal cost")
        g0 = disc.terminal_value(disc.rho0)
        d0 = dataclasses.replace(disc, homotopy=0.0, g_start=g0)
        U = d0.pack(*initial_guess(d0))
        s, ds, stages = 0.0, 1.0, 0
        while s < 1.0:
            s_try = min(1.0, s + ds)
            sub = dataclasses.replace(disc, homotopy=s_try, g_start=g0) if s_try < 1.0 else disc
            try:
                U2, hist, info = newton(sub, U, tol=tol, max_iter=min(max_iter, 12), progress=prog,
                                        label=f"continuation s={s_try:.3g}", diverge=20.0)
            except FDConvergenceError as exc:
                hist_all += exc.history
                ds *= 0.5
                if ds < 1e-3:
                    raise FDConvergenceError(f"Newton failed ({first_exc}) and continuation in the terminal coupling "
                                             f"stalled at s = {s:.4g}", hist_all, first_exc.suggestion) from None
                continue
            U, s = U2, s_try
            hist_all += hist
            stages += 1
            ds = min(2.0 * ds, 1.0)
        info["continuation"] = f"coupling ({stages} stages)"
        info["total_newton_iterations"] = len(hist_all) - stages
        info["last_stage_history"] = hist
        return U, hist_all, info
    factors = [16.0, 8.0, 4.0, 2.0, 1.0]
    U = U0
    for f in factors:
        if kind == "lam":
            sub = dataclasses.replace(disc, lam=disc.lam * f)
        else:
            sub = dataclasses.replace(disc, nu=disc.nu + (f - 1.0) * max(disc.nu, 0.05) / 15.0)
        try:
            U, hist, info = newton(sub, U, tol=tol if f == 1.0 else max(tol, 1e-8), max_iter=max_iter, progress=prog,
                                   label=f"continuation {kind}x{f:g}")
        except FDConvergenceError as exc:
            raise FDConvergenceError(f"Newton failed ({first_exc}) and continuation in {kind} failed at factor {f:g}: "
                                     f"{exc}", hist_all + exc.history, first_exc.suggestion) from None
        hist_all += hist
    info["continuation"] = kind
    info["last_stage_history"] = hist
    return U, hist_all, info


def solve_fd(problem: MFGProblem, n=None, nt=None, solver: str = "newton", tol: float = 1e-10, max_iter=None,
             progress=True, **options) -> MFGSolution:
    """Solve ``problem`` with the monotone implicit FD scheme (see docs/fd.md).

    Args:
        problem: any family (otflow, sgm, wgf, lq, custom), 1D or 2D.
        n, nt: grid overrides (nodes per dimension, time steps).
        solver: "newton" (all-at-once) or "fixed-point" (damped fictitious play).
        tol: Δt-scaled max-norm residual at which the solver stops.
        max_iter: iteration cap (30 Newton / 500 fixed-point by default).
        progress: True (one line per iteration on stderr), False, or a callable
            ``(iteration: int, residual: float, info: dict)``.
        **options:
            initial_guess: (phi, rho) arrays (nt+1, *shape) to start from.
            check_resolution (True): refuse grids with h > std/2 of the data.
            continuation ("auto"|"lam"|"nu"|None): homotopy when Newton fails.
            relaxation (0.5): θ of the fixed-point method.
            wgf_routes (("fp", "jko")): which wgf routes to compute.
            jko_tau (problem.params["tau"]), jko_nt (steps per JKO sub-problem).
            sgm_eta (True): also solve the linear OU forward equation for η.

    Returns:
        MFGSolution with rho, phi (nt+1, *shape), extras (sgm: ``score``,
        ``score_fp``, ``eta``; wgf: ``jko_t``, ``jko_rho``) and meta (see docs).

    Raises:
        FDConvergenceError (with ``.history``), NonFiniteError, FDInputError.
    """
    if solver not in SOLVERS:
        raise FDInputError(f"solver={solver!r}; expected one of {list(SOLVERS)}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise FDInputError(f"tol={tol!r}; expected a positive number")
    known = {"initial_guess", "check_resolution", "continuation", "relaxation", "wgf_routes", "jko_tau", "jko_nt",
             "sgm_eta", "kl_floor"}
    unknown = set(options) - known
    if unknown:
        raise FDInputError(f"unknown option(s) {sorted(unknown)}; expected some of {sorted(known)}")
    wall0 = time.perf_counter()
    comp0 = _jit.compile_seconds()
    disc = build_discretization(problem, n, nt, options.get("check_resolution", True), options.get("kl_floor", KL_FLOOR))
    grid = disc.grid
    shape = grid.shape
    extras: dict = {}
    meta_extra: dict = {}
    initial = options.get("initial_guess")
    if initial is not None:
        phi_i, rho_i = (np.asarray(a, dtype=float) for a in initial)
        want = (grid.nt + 1,) + tuple(shape)
        for name, arr in (("phi", phi_i), ("rho", rho_i)):
            if arr.shape != want:
                raise FDInputError(f"initial_guess {name} has shape {arr.shape}; expected {want} = (nt+1, *grid)")
        initial = (phi_i.reshape(grid.nt + 1, -1), rho_i.reshape(grid.nt + 1, -1))

    if problem.family == "wgf":
        from .routes import solve_wgf

        phi, rho, info, extras, meta_extra = solve_wgf(problem, disc, solver, tol, max_iter, progress, options)
    else:
        phi, rho, info = _solve_coupled(disc, solver, tol, max_iter, progress, initial,
                                        options.get("continuation", "auto"), options.get("relaxation", 0.5))
        if problem.family == "sgm":
            from .routes import sgm_extras

            extras, meta_extra = sgm_extras(problem, disc, phi, options.get("sgm_eta", True))
    wall = time.perf_counter() - wall0
    compile_s = _jit.compile_seconds() - comp0
    mass = disc.vol * rho.sum(1)
    status = "converged"
    meta = {
        "method": "fd",
        "solver": solver,
        "scheme": "implicit Euler, Godunov upwind Hamiltonian, centred Laplacian, FP = transpose of linearised HJB",
        "problem": problem.describe(),
        "grid": grid.to_dict(),
        "iterations": info.get("iterations"),
        "residual_history": info.get("residual_history"),
        "tol": tol,
        "mass_error": float(np.max(np.abs(mass - 1.0))),
        "min_rho": float(rho.min()),
        "final_residual": info.get("final_residual"),
        "polish_change": info.get("polish_change"),
        "timings": {"compile_s": compile_s, "solve_s": wall - compile_s, "wall_s": wall,
                    "jacobian_s": info.get("jacobian_s"), "linear_solve_s": info.get("linear_solve_s")},
        "versions": package_versions(),
        "kl_floor": disc.kl_floor if disc.terminal[0] == "kl" else None,
    }
    for key in ("continuation", "last_stage_history"):
        if key in info:
            meta[key] = info[key]
    meta.update(meta_extra)
    return MFGSolution(grid.t, grid.axes, rho.reshape((grid.nt + 1,) + shape), phi.reshape((grid.nt + 1,) + shape),
                       meta=meta, extras=extras, status=status)
