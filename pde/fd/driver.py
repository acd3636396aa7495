"""The FD driver: ``solve_fd``, problem -> discretisation -> solver -> :class:`~pde.solution.MFGSolution`.

It checks the grid (resolution, memory), builds the :class:`~pde.fd.system.Discretization`, and
drives the iterations of :mod:`pde.fd.iterations` (Newton, fixed point) through the homotopies
that make them converge: continuation in λ or ν, and grid continuation (coarse grids first, each
solution prolonged to the next). The wgf and sgm second routes live in :mod:`pde.fd.routes`.
About 520 lines: the grid checks and the homotopies share the option handling of ``solve_fd``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..distributions import GaussianMixture
from ..problem import (FixedTerminal, KLTerminal, LocalCoupling, LocalTerminal, LQCoupling, LQTerminal, MFGProblem,
                       NoCoupling, PlanningTerminal)
from ..grid import gradient as grid_gradient
from ..memory import check_memory
from ..solution import MFGSolution, package_versions
from . import _jit
from .iterations import (LINEAR_SOLVERS, FDConvergenceError, fixed_point, fp_forward, initial_guess, make_progress,
                      newton)
from .system import Discretization, NonFiniteError

__all__ = ["solve_fd", "build_discretization", "FDConvergenceError", "NonFiniteError", "FDInputError",
           "gradient", "SOLVERS", "nested_levels", "prolong"]

SOLVERS = ("newton", "fixed-point")

#: ε of the KL terminal g = 1 + log(ρ_T + ε) - log γ (density units; see docs/fd.md)
KL_FLOOR = 1e-4

#: nodes per standard deviation of the narrowest Gaussian component required
MIN_NODES_PER_STD = 2.0

#: peak resident bytes per space-time node N·(nt+1), by dimension, and a fixed part (compiled
#: kernels, SciPy/Numba runtime); measured on Newton solves with grid continuation (docs/fd.md, "Memory")
FD_BYTES_PER_NODE = {1: 300.0, 2: 800.0}
FD_BYTES_FIXED = 250e6


class FDInputError(ValueError):
    """Bad input to the FD solver (grid too coarse, incompatible step, …)."""


# ---------------------------------------------------------------------------
# problem -> arrays
# ---------------------------------------------------------------------------


def _check_resolution(problem: MFGProblem, grid) -> None:
    """Raise if h cannot resolve the narrowest Gaussian component of the laws."""
    sig = math.inf
    for law in (problem.rho0, problem.data, problem.reference, problem.target):
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
            "(to override: check_resolution=False in Python, --no-check-resolution on the command line)")


def memory_estimate(grid) -> float:
    """Estimated peak bytes of :func:`solve_fd` on ``grid`` (no allocation; see :data:`FD_BYTES_PER_NODE`)."""
    return FD_BYTES_FIXED + FD_BYTES_PER_NODE[grid.dim] * float(grid.size) * (grid.nt + 1)


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
    elif isinstance(term, PlanningTerminal):
        # ρ^{nt} = ρ₁ imposed (pde.fd.planning); no terminal cost
        terminal = ("planning", _discrete_density(term.target, pts, grid.cell_volume, "rho1 (the target)"))
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
    """Gradient of FD nodal values u (..., *shape) -> (..., *shape, d): :func:`pde.grid.gradient` with
    first-order one-sided differences at a reflecting wall (the order of the FD scheme itself)."""
    return grid_gradient(u, grid.axes, grid.boundary, edge_order=1)


# ---------------------------------------------------------------------------
# the solve
# ---------------------------------------------------------------------------


def _solve_coupled(disc: Discretization, solver: str, tol: float, max_iter, progress, initial=None,
                   continuation="auto", relaxation: float = 0.5, linear_solver: str = "auto", coarse=()):
    """Solve one discrete MFG; returns (phi, rho, info).

    ``coarse``: discretizations of the same problem on coarser grids (coarsest
    first) for the grid continuation of :func:`_grid_continuation`.
    """
    prog = make_progress(progress, solver)
    info: dict = {"solver": solver}
    if solver == "fixed-point":
        phi0, rho0 = (None, None) if initial is None else initial
        phi, rho, hist = fixed_point(disc, phi0, rho0, tol=tol, max_iter=max_iter or 500, relaxation=relaxation,
                                     progress=prog)
        info.update(iterations=len(hist) - 1, residual_history=hist)
        return phi, rho, info
    stats: dict = {}
    if coarse:
        U, hist, ninfo = _grid_continuation(list(coarse) + [disc], tol, max_iter or 30, prog, continuation,
                                            linear_solver, stats)
    else:
        U, hist, ninfo = _newton_or_continuation(disc, initial, tol, max_iter or 30, prog, continuation,
                                                 linear_solver, stats=stats)
    info.update(ninfo, residual_history=hist)
    info.setdefault("total_newton_iterations", info.get("iterations"))
    # totals over every Newton solve (continuation stages and grid levels, failed attempts included)
    info["jacobian_s"] = stats.get("jacobian_s", 0.0)
    info["linear_solve_s"] = stats.get("linear_solve_s", 0.0)
    info["krylov_iterations"] = stats.get("krylov_iterations", 0)
    phi, rho, _ = disc.unpack(U)
    # Polish: ρ = FP(φ) exactly. Each level solve is with an M-matrix, so the
    # substitutions add only non-negative terms: ρ >= 0 and mass to round-off.
    rho_p = fp_forward(disc, phi)
    info["polish_change"] = float(np.max(np.abs(rho_p - rho)))
    rho = rho_p
    phi[disc.nt] = disc.terminal_value(rho[disc.nt], (disc.vol * rho[disc.nt] @ disc.pts) if disc.dm else None)
    info["final_residual"] = float(np.max(np.abs(disc.residual(disc.pack(phi, rho)))))
    return phi, rho, info


def _newton_or_continuation(disc, initial, tol, max_iter, prog, continuation, linear_solver, label="newton",
                            stats=None):
    """Newton from ``initial`` (default: one fictitious-play sweep), continuation if that fails.

    Returns (U, history, info) like :func:`newton`.
    """
    skip_plain = disc.terminal[0] == "kl" and continuation == "auto" and initial is None
    if skip_plain:
        # the log terminal is far from the decoupled start: go straight to the
        # adaptive homotopy (first step s = 0.25: measured fewest total iterations),
        # which starts from the same sweep (g_0 = g(ρ₀))
        exc = FDConvergenceError("plain Newton skipped", [])
        U0 = None
    else:
        U0 = disc.pack(*(initial_guess(disc) if initial is None else initial))
        try:
            return newton(disc, U0, tol=tol, max_iter=max_iter, progress=prog, label=label,
                          linear_solver=linear_solver, stats=stats)
        except FDConvergenceError as e:
            if continuation in (None, False, "none"):
                raise
            exc = e
    if U0 is None and continuation not in ("coupling", "auto"):
        U0 = disc.pack(*initial_guess(disc))
    return _continuation(disc, U0, tol, max_iter, prog, continuation, exc, linear_solver, stats)


def _prolong_axis(u, xc, xf, axis):
    """Linear interpolation of u along ``axis`` from nodes xc to xf, extrapolating linearly past the ends."""
    idx = np.clip(np.searchsorted(xc, xf) - 1, 0, len(xc) - 2)
    w = (xf - xc[idx]) / (xc[idx + 1] - xc[idx])
    shape = [1] * u.ndim
    shape[axis] = len(xf)
    w = w.reshape(shape)
    u0 = np.take(u, idx, axis=axis)
    return u0 + w * (np.take(u, idx + 1, axis=axis) - u0)


def prolong(u, coarse_grid, fine_grid) -> np.ndarray:
    """Nodal values (nt_c+1, N_c) on ``coarse_grid`` -> (nt+1, N) on ``fine_grid`` (same box and T).

    Linear in t and along each axis (tensor product), extrapolated linearly into
    the half cells between the outer coarse and fine cell centres.
    """
    u = np.asarray(u, dtype=float).reshape((coarse_grid.nt + 1,) + tuple(coarse_grid.shape))
    u = _prolong_axis(u, np.asarray(coarse_grid.t), np.asarray(fine_grid.t), 0)
    for a in range(fine_grid.dim):
        u = _prolong_axis(u, np.asarray(coarse_grid.axes[a]), np.asarray(fine_grid.axes[a]), 1 + a)
    return u.reshape(fine_grid.nt + 1, -1)


#: grid continuation: coarsest level allowed (nodes per dimension, time steps)
NESTED_MIN_N = 64
NESTED_MIN_NT = 32


def nested_levels(problem: MFGProblem, grid, nested="auto") -> list:
    """The coarse grids (coarsest first) of the grid continuation for ``grid``.

    "auto"/True: halve n and nt while the coarse grid keeps >= NESTED_MIN_N
    nodes per dimension and >= NESTED_MIN_NT steps (below that the homotopy
    on the grid itself costs about as much). An int k: up to k halvings,
    whatever the size. Either way a coarse grid must resolve the data
    (h <= std/2, as :func:`build_discretization` checks). False/0: none.
    """
    if nested is False or nested is None or nested == 0:
        return []
    cap = None if (nested is True or nested == "auto") else int(nested)
    out = []
    g = grid
    while cap is None or len(out) < cap:
        n2 = tuple(k // 2 for k in g.n)
        nt2 = g.nt // 2
        if min(n2) < 2 or nt2 < 2 or (cap is None and (min(n2) < NESTED_MIN_N or nt2 < NESTED_MIN_NT)):
            break
        g2 = g.with_(n=n2, nt=nt2)
        try:
            _check_resolution(problem, g2)
        except FDInputError:
            break
        out.insert(0, g2)
        g = g2
    return out


def _grid_continuation(discs, tol, max_iter, prog, continuation, linear_solver, stats=None):
    """Nested iteration: solve on the coarsest grid (with continuation), then on each finer grid by
    Newton from the prolonged coarser solution (continuation on that grid only if Newton fails).

    Coarse levels stop at max(tol, 1e-5): their solutions only start the next
    level, whose own Newton iteration decides the answer. Returns (U, history,
    info) of the finest level, with ``info["levels"]`` listing each level's
    grid, iterations and seconds, and ``info["work"]`` the Newton iterations
    weighted by level size relative to the finest.
    """
    levels, hist_all = [], []
    U = None
    prev = None
    fine = discs[-1]
    for j, d in enumerate(discs):
        last = j == len(discs) - 1
        tol_j = tol if last else max(tol, 1e-5)
        t0 = time.perf_counter()
        label = f"grid {'x'.join(map(str, d.grid.n))}x{d.nt}"
        fallback, failed_its = False, 0
        if prev is None:
            U, hist, info = _newton_or_continuation(d, None, tol_j, max_iter, prog, continuation, linear_solver,
                                                    label, stats)
        else:
            pd, pU = prev
            phi_c = pd.unpack(pU)[0]
            # φ is prolonged, ρ recomputed by the forward FP sweep for that φ: consistent
            # with the transport of the fine φ (vacuum fronts included), positive, mass
            # exact. Measured: Newton then takes full steps from the first iteration, where
            # prolonging ρ as well left it wandering around the front of ρ_T for many damped steps.
            try:
                phi0 = prolong(phi_c, pd.grid, d.grid)
                U0 = d.pack(phi0, fp_forward(d, phi0))
                U, hist, info = newton(d, U0, tol=tol_j, max_iter=max_iter, progress=prog, label=label,
                                       diverge=20.0, linear_solver=linear_solver, stats=stats)
            except (FDConvergenceError, NonFiniteError) as exc:
                if continuation in (None, False, "none"):
                    raise
                fallback = True
                failed = list(getattr(exc, "history", []) or [])
                failed_its = max(0, len(failed) - 1)
                hist_all += failed
                U, hist, info = _newton_or_continuation(d, None, tol_j, max_iter, prog, continuation,
                                                        linear_solver, label, stats)
        its = info.get("total_newton_iterations", info.get("iterations")) + failed_its
        levels.append({"n": list(d.grid.n), "nt": d.nt, "iterations": its, "wall_s": time.perf_counter() - t0,
                       "continuation": info.get("continuation"), "fallback": fallback})
        hist_all += hist
        prev = (d, U)
    size = fine.nt * fine.N
    info = dict(info)
    info["levels"] = levels
    info["work"] = float(sum(lv["iterations"] * (lv["nt"] * np.prod(lv["n"])) / size for lv in levels))
    info["continuation"] = (f"grid ({len(discs)} levels, coarsest {'x'.join(map(str, discs[0].grid.n))}x"
                            f"{discs[0].nt}: {levels[0]['continuation'] or 'newton'})")
    info["last_stage_history"] = hist
    info["total_newton_iterations"] = int(sum(lv["iterations"] for lv in levels))
    return U, hist_all, info


def _continuation(disc, U0, tol, max_iter, prog, kind, first_exc, linear_solver="auto", stats=None):
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
        s, ds, stages = 0.0, 0.25, 0
        calls = 1 if first_exc.history else 0  # each Newton history starts with its initial residual
        while s < 1.0:
            calls += 1
            s_try = min(1.0, s + ds)
            sub = dataclasses.replace(disc, homotopy=s_try, g_start=g0) if s_try < 1.0 else disc
            try:
                U2, hist, info = newton(sub, U, tol=tol, max_iter=min(max_iter, 12), progress=prog,
                                        label=f"continuation s={s_try:.3g}", diverge=20.0,
                                        linear_solver=linear_solver, stats=stats)
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
        info["total_newton_iterations"] = len(hist_all) - calls
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
                                   label=f"continuation {kind}x{f:g}", linear_solver=linear_solver, stats=stats)
        except FDConvergenceError as exc:
            raise FDConvergenceError(f"Newton failed ({first_exc}) and continuation in {kind} failed at factor {f:g}: "
                                     f"{exc}", hist_all + exc.history, first_exc.suggestion) from None
        hist_all += hist
    info["continuation"] = kind
    info["last_stage_history"] = hist
    info["total_newton_iterations"] = len(hist_all) - len(factors) - (1 if first_exc.history else 0)
    return U, hist_all, info


def solve_fd(problem: MFGProblem, n=None, nt=None, solver: str = "newton", tol: float = 1e-10, max_iter=None,
             progress=True, **options) -> MFGSolution:
    """Solve ``problem`` with the monotone implicit FD scheme (see docs/fd.md).

    Args:
        problem: any family (otflow, sgm, wgf, lq, bridge with nu > 0, custom), 1D or 2D.
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
            nested ("auto"): grid continuation for a KL terminal: solve on grids
                halved in n and nt first and start each finer grid from the
                prolonged solution ("auto": coarse levels down to 64 nodes and 32
                steps; k: up to k coarse levels; False: none).
            linear_solver ("auto"|"schur"|"gmres"|"direct"): Newton's linear
                solver ("auto": "schur" for 1D reflecting games coupled only
                through the terminal cost, see docs/fd.md).
            relaxation (0.5): θ of the fixed-point method.
            wgf_routes (("fp", "jko")): which wgf routes to compute.
            jko_tau (problem.params["tau"]), jko_nt (steps per JKO sub-problem).
            sgm_eta (True): also solve the linear OU forward equation for η.
            max_memory (None): memory budget (bytes or "8G"); the solve is refused
                before allocating when :func:`memory_estimate` exceeds it (default:
                the memory available, see :mod:`pde.memory`).

    Returns:
        MFGSolution with rho, phi (nt+1, *shape), extras (sgm: ``score``,
        ``score_fp``, ``eta``; wgf: ``jko_t``, ``jko_rho``) and meta (see docs).

    Raises:
        FDConvergenceError (with ``.history``), NonFiniteError, FDInputError,
        MemoryLimitError (a ValueError: the grid does not fit in memory).
    """
    if solver not in SOLVERS:
        raise FDInputError(f"solver={solver!r}; expected one of {list(SOLVERS)}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise FDInputError(f"tol={tol!r}; expected a positive number")
    known = {"initial_guess", "check_resolution", "continuation", "relaxation", "wgf_routes", "jko_tau", "jko_nt",
             "sgm_eta", "kl_floor", "linear_solver", "nested", "max_memory"}
    unknown = set(options) - known
    if unknown:
        raise FDInputError(f"unknown option(s) {sorted(unknown)}; expected some of {sorted(known)}")
    grid0 = problem.grid(n=n, nt=nt)
    memory = check_memory(memory_estimate(grid0), f"the FD solve of {problem.name or problem.family} on "
                          f"n={list(grid0.n)}, nt={grid0.nt}", options.get("max_memory"))
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

    nested = options.get("nested", "auto")
    if not (nested is None or isinstance(nested, bool) or nested == "auto" or (isinstance(nested, int) and nested >= 0)):
        raise FDInputError(f"nested={nested!r}; expected 'auto', True, False or a number of coarse levels >= 0")
    linear_solver = options.get("linear_solver", "auto")
    if linear_solver not in LINEAR_SOLVERS:
        raise FDInputError(f"linear_solver={linear_solver!r}; expected one of {list(LINEAR_SOLVERS)}")
    if linear_solver == "schur" and not disc.terminal_coupled_1d:
        raise FDInputError("linear_solver='schur' needs a 1D grid with reflecting walls and the coupling only in the "
                           "terminal cost (no running coupling f, no mean-field moments)")
    coarse = []
    if (solver == "newton" and initial is None and disc.terminal[0] == "kl" and problem.family != "wgf"
            and options.get("continuation", "auto") == "auto"):
        coarse = [build_discretization(problem, g.n, g.nt, check_resolution=False, kl_floor=disc.kl_floor)
                  for g in nested_levels(problem, grid, nested)]

    if problem.family == "wgf":
        from .routes import solve_wgf

        phi, rho, info, extras, meta_extra = solve_wgf(problem, disc, solver, tol, max_iter, progress, options)
    elif disc.terminal[0] == "planning":
        from .planning import solve_planning

        if solver != "newton":
            raise FDInputError(f"solver={solver!r}: the planning problem (bridge family) is solved by Newton only")
        phi, rho, info, extras, meta_extra = solve_planning(problem, disc, disc.terminal[1], tol, max_iter, progress,
                                                            {"initial_guess": initial})
    else:
        phi, rho, info = _solve_coupled(disc, solver, tol, max_iter, progress, initial,
                                        options.get("continuation", "auto"), options.get("relaxation", 0.5),
                                        linear_solver, coarse)
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
        "memory": memory,
    }
    for key in ("continuation", "last_stage_history", "levels", "work", "total_newton_iterations", "linear_solver",
                "krylov_iterations"):
        if key in info:
            meta[key] = info[key]
    meta.update(meta_extra)
    return MFGSolution(grid.t, grid.axes, rho.reshape((grid.nt + 1,) + shape), phi.reshape((grid.nt + 1,) + shape),
                       meta=meta, extras=extras, status=status)
