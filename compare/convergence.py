"""Refinement studies: errors of a solver against the closed form as h and Δt shrink.

:func:`run_convergence` solves a case on ``levels`` grids, halving h and Δt
together (n and nt doubled per level), measures each solution against the
closed form sampled on the same grid (method ``"exact"``), and returns the
table, the fitted orders and a log-log figure; with ``out_dir`` it writes
the same report folder as ``verify`` (see :mod:`compare.report`).

Errors per level (``floor`` is the relative density floor of
:func:`compare.metrics.potential_error`):

- ``rho_l1_T``   ‖ρ_h(T) - ρ(T)‖_L1
- ``rho_l1_max`` max over time levels of ‖ρ_h(t) - ρ(t)‖_L1
- ``phi_T``      min_c ‖φ_h(T) - φ(T) - c‖_L2(ρ(T)) (potential modulo a constant)
- ``phi_max``    max over time levels of the same

The observed order is the least-squares slope of log(error) against log(h)
over all levels (:func:`fit_order`); the table also gives the order between
successive levels.

The truth here is the closed form sampled on each grid; its own error is
the mass it puts outside the box (``truth_error_l1``, the largest over the
time levels, from ``meta.mass_outside_box``) for the density errors and 0
for the potential errors. The table shows it beside the errors and marks
an L1 error at or below it with † ("not resolved by this truth").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

import pde
from pde.problem import MFGProblem

from .metrics import DEFAULT_FLOOR, l1_distance, potential_error
from .report import FigureSpec, Section, fmt, markdown_table, write_report

__all__ = ["fit_order", "convergence_table", "loglog", "run_convergence", "ConvergenceResult", "ERROR_NAMES"]

ERROR_NAMES = ("rho_l1_T", "rho_l1_max", "phi_T", "phi_max")
SCHEMA = "mfglab.convergence/1"


def fit_order(h: Sequence[float], err: Sequence[float]) -> float:
    """Least-squares slope p of log(err) = p log(h) + c over all refinements.

    Raises ValueError for fewer than two levels or non-positive/non-finite
    errors (a log-log fit needs positive numbers).
    """
    h = np.asarray(h, dtype=float)
    err = np.asarray(err, dtype=float)
    if h.shape != err.shape or h.size < 2:
        raise ValueError(f"fit_order needs at least two (h, error) pairs of equal length (got {h.size} and {err.size})")
    if not (np.all(np.isfinite(err)) and np.all(err > 0) and np.all(h > 0)):
        raise ValueError(f"fit_order needs positive finite h and errors (got h={h.tolist()}, err={err.tolist()})")
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])


def _pair_orders(h, err) -> list:
    out = [None]
    for i in range(1, len(h)):
        a, b = err[i - 1], err[i]
        if a is not None and b is not None and a > 0 and b > 0:
            out.append(math.log(b / a) / math.log(h[i] / h[i - 1]))
        else:
            out.append(None)
    return out


def convergence_table(rows: Sequence[Mapping], errors: Sequence[str] | None = None) -> str:
    """Markdown table: level, n, nt, h, Δt, then each error with the order between successive levels.

    ``rows`` are dicts with keys ``level, n, nt, h, dt`` and the error names.
    """
    if not rows:
        raise ValueError("convergence_table needs at least one row")
    errors = list(errors) if errors is not None else [k for k in ERROR_NAMES if k in rows[0]]
    hs = [r["h"] for r in rows]
    orders = {e: _pair_orders(hs, [r.get(e) for r in rows]) for e in errors}
    header = ["level", "n", "nt", "h", "Δt"]
    for e in errors:
        header += [e, "order"]
    has_te = "truth_error_l1" in rows[0]
    if has_te:
        header.append("truth error (L1)")
    body = []
    for i, r in enumerate(rows):
        n = r["n"]
        line = [str(r["level"]), "×".join(map(str, n)) if isinstance(n, (list, tuple)) else str(n), str(r["nt"]),
                r["h"], r["dt"]]
        te = r.get("truth_error_l1") or 0.0
        for e in errors:
            v = r.get(e)
            mark = " †" if e.startswith("rho_l1") and v is not None and te > 0 and v <= te else ""
            line += [fmt(v) + mark, fmt(orders[e][i], 3) if orders[e][i] is not None else ""]
        if has_te:
            line.append(te)
        body.append(line)
    return markdown_table(header, body)


def loglog(h, errors: Mapping[str, Sequence[float]], orders: Mapping[str, float] | None = None, title: str | None = None):
    """Log-log figure of errors vs h (see :func:`compare.plots.loglog_figure`)."""
    from .plots import loglog_figure

    return loglog_figure(h, errors, orders, suptitle=title or "convergence")


@dataclass
class ConvergenceResult:
    """Rows (one per level), fitted orders, markdown table, figure and JSON data."""

    case: str
    method: str
    rows: list
    orders: dict
    table: str
    figure: object
    data: dict = field(default_factory=dict)
    out_dir: Path | None = None


def _resolve_problem(case) -> tuple[str, MFGProblem, object]:
    if isinstance(case, MFGProblem):
        return case.name or case.family, case, None
    from .cases import get_case

    c = get_case(case)
    return c.name, c.build(), c


def run_convergence(case, method: str, levels: int, solve: Callable = pde.solve, out_dir=None, *,
                    n0=None, nt0: int | None = None, floor: float = DEFAULT_FLOOR, force: bool = False,
                    progress: bool = True, solver_options: Mapping | None = None) -> ConvergenceResult:
    """Refinement study of ``method`` on ``case`` against its closed form.

    Args:
        case: a case name, a :class:`~compare.cases.Case` or an MFGProblem
            (it needs a closed form: ``pde.closed_form`` must accept it).
        method: the solver method passed to ``solve`` (``"fd"``, ``"fe"``, …).
        levels: number of grids (≥ 3 for a meaningful fitted order).
        solve: ``solve(problem, method, **options) -> MFGSolution``.
        out_dir: if given, write a report folder there.
        n0, nt0: coarsest grid; default: the case's grid divided by
            2^(levels-1), so the finest level is the case's default grid.
        floor: relative density floor of the potential error.
        force: replace an existing ``out_dir``.
        progress: show a tqdm bar over levels.
        solver_options: extra keyword arguments of ``solve``.

    Returns:
        :class:`ConvergenceResult` (rows, orders fitted over all levels, table, figure, JSON data).
    """
    if int(levels) < 2:
        raise ValueError(f"levels={levels}; expected at least 2 (3 or more for a fitted order)")
    levels = int(levels)
    name, problem, case_obj = _resolve_problem(case)
    pde.closed_form(problem)  # raises NoClosedForm (naming why) before any solve
    d = problem.dim
    scale = 2 ** (levels - 1)
    if n0 is None:
        n0 = tuple(max(4, k // scale) for k in problem.n)
    n0 = tuple(int(k) for k in (n0 if np.ndim(n0) else (n0,) * d))
    nt0 = int(nt0) if nt0 is not None else max(2, problem.nt // scale)
    opts = dict(solver_options or {})

    rows = []
    it = range(levels)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"converge {name} ({method})", unit="level")
    for lev in it:
        n = tuple(k * 2**lev for k in n0)
        nt = nt0 * 2**lev
        pk = problem.with_grid(n=n, nt=nt)
        sol = solve(pk, method, **opts)
        ref = pde.solve(pk, "exact")
        if sol.rho.shape != ref.rho.shape:
            raise ValueError(f"level {lev}: the {method} solution has shape {sol.rho.shape}; expected {ref.rho.shape}")
        vol = ref.cell_volume
        l1 = [l1_distance(sol.rho[k], ref.rho[k], vol) for k in range(ref.t.size)]
        ph = [potential_error(sol.phi[k], ref.phi[k], ref.rho[k], floor)[0] for k in range(ref.t.size)]
        g = pk.grid()
        mo = ref.meta.get("mass_outside_box")
        rows.append({"level": lev, "n": list(n), "nt": nt, "h": max(g.h), "dt": g.dt,
                     "truth_error_l1": float(max(mo)) if mo else 0.0,
                     "rho_l1_T": l1[-1], "rho_l1_max": max(l1), "phi_T": ph[-1],
                     "phi_max": max(ph) if all(np.isfinite(ph)) else math.nan,
                     "iterations": sol.meta.get("iterations"), "wall_time_s": sol.meta.get("wall_time_s")})
    hs = [r["h"] for r in rows]
    orders = {}
    for e in ERROR_NAMES:
        vals = [r[e] for r in rows]
        try:
            orders[e] = fit_order(hs, vals)
        except ValueError:
            orders[e] = None  # zero or undefined errors: no slope
    table = convergence_table(rows)
    fig = loglog(hs, {e: [r[e] for r in rows] for e in ERROR_NAMES}, orders,
                 title=f"{name}: {method} vs closed form (h and Δt halved per level)")
    data = {"schema": SCHEMA, "case": name, "method": method, "levels": levels,
            "refinement": "n and nt doubled per level (h and Δt halved together)",
            "errors": {"rho_l1_T": "‖ρ_h(T) - ρ(T)‖_L1", "rho_l1_max": "max_t ‖ρ_h(t) - ρ(t)‖_L1",
                       "phi_T": "min_c ‖φ_h(T) - φ(T) - c‖_L2(ρ(T))", "phi_max": "max_t min_c ‖φ_h - φ - c‖_L2(ρ)"},
            "floor": floor, "rows": rows, "orders": orders}
    res = ConvergenceResult(name, method, rows, orders, table, fig, data)
    if out_dir is not None:
        md = [table, "", "Fitted orders (least squares over all levels): " +
              ", ".join(f"`{e}` {fmt(o)}" for e, o in orders.items()), "",
              "Errors are against the closed form sampled on the same grid; the potential error is taken "
              "modulo a constant and weighted by the exact density (docs/compare.md).", "",
              "Truth error: the closed form's own error is the mass it puts outside the box (`truth error (L1)`, "
              "the bound of the density errors it can resolve) and 0 for the potential errors; † marks an L1 error "
              "at or below it: **not resolved by this truth**."]
        sec = Section("Convergence", "\n".join(md),
                      [FigureSpec("fig_convergence.png", fig, "Errors vs h on log-log axes (Δt halved with h)")],
                      data=data)
        res.out_dir = write_report(out_dir, title=f"Convergence of {method} on {name}", case=case_obj,
                                   extra_sections=[sec], problem=problem, force=force)
    return res
