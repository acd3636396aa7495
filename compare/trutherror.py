"""The truth's own error, beside every metric: which model errors a truth can resolve.

A model error below the truth's error cannot be told from the truth's; the
report marks it "not resolved by this truth". The estimate, in order of
preference:

1. the truth is the closed form (``exact``): its error is the box cut-off
   (``meta.mass_outside_box``) in each metric where it follows from that
   mass alone (:func:`exact_cutoff_error`), 0 for the potential and score;
2. the case has a closed form and the truth is another route: the same
   metric between the truth and the closed form (its actual error);
3. the case has another numerical route (fd vs fe): the same metric between
   the two routes (an estimate of the larger of the two errors);
4. otherwise the same route on the grid with n and nt halved, against the
   truth interpolated to that grid's nodes (fourth order); for a method of
   order p this is about (2^p − 1) times the truth's error: its size for
   the first-order FD.

Each gives a series per metric (the metrics of :data:`COMPARED`), written
under ``"truth_error"`` in the metrics dict, with ``"unresolved"``: per
metric, the times at which the model's value is at or below the estimate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import pde
from pde.solution import MFGSolution

from .metrics import evaluate

__all__ = ["truth_error_estimate", "mark_unresolved", "attach_truth_error", "COMPARED", "coarsen_solution",
           "exact_cutoff_error"]

#: metrics with a truth-error estimate (errors between two solutions of the same problem)
COMPARED = ("l1", "tv", "hellinger", "kl_truth_model", "kl_model_truth", "w2", "phi_l2", "phi_max", "score_l2",
            "score_l2_rel")


def _midpoints(f: np.ndarray, axis: int) -> np.ndarray:
    """Values between the node pairs (0, 1), (2, 3), … along ``axis``: 4-point (fourth-order) interpolation
    (−f_{k−1} + 9f_k + 9f_{k+1} − f_{k+2})/16, the mean of the pair at the two ends."""
    f = np.moveaxis(f, axis, -1)
    n = f.shape[-1]
    out = 0.5 * (f[..., 0::2] + f[..., 1::2])
    k = np.arange(2, n - 2, 2)
    if k.size:
        out[..., k // 2] = (-f[..., k - 1] + 9 * f[..., k] + 9 * f[..., k + 1] - f[..., k + 2]) / 16
    return np.moveaxis(out, -1, axis)


def coarsen_solution(sol: MFGSolution) -> MFGSolution | None:
    """ρ and φ at the nodes of the grid with n and nt halved (None when a count is odd).

    The coarse cell centres lie midway between fine nodes; the values there
    come from 4-point interpolation along each axis (error O(h⁴), so that
    the comparison measures the solver and not the sampling), every other
    time level is kept.
    """
    n = [a.size for a in sol.axes]
    nt = sol.t.size - 1
    if any(k % 2 for k in n) or nt % 2:
        return None

    def restrict(f):
        f = f[::2]
        with np.errstate(invalid="ignore", over="ignore"):
            for j in range(sol.dim):
                f = _midpoints(f, 1 + j)
        return f

    axes = tuple(a.reshape(-1, 2).mean(-1) for a in sol.axes)
    return MFGSolution(sol.t[::2], axes, restrict(sol.rho), restrict(sol.phi), meta=dict(sol.meta))


def exact_cutoff_error(m: float, times) -> dict:
    """The closed form's own error: only the box cut-off (mass ``m`` outside the box), metric by metric.

    Against the closed form on the whole space, the truth on the box (raw
    node values) has ``l1`` = m and ``tv`` = m/2; its box-normalised density
    p/(1 − m) has Bhattacharyya coefficient √(1 − m) with the closed form,
    so ``hellinger`` = √(1 − √(1 − m)) ≈ √(m/2), and ``kl_truth_model`` =
    −log(1 − m). ``kl_model_truth`` (infinite: the closed form has mass
    where the box truth has none) and ``w2`` (it depends on where outside
    the box that mass lies) are not estimated from m; the potential and
    score are exact at the nodes (0).
    """
    one = {"l1": m, "tv": m / 2, "hellinger": math.sqrt(max(0.0, 1.0 - math.sqrt(1.0 - m))),
           "kl_truth_model": -math.log1p(-m), "phi_l2": 0.0, "phi_max": 0.0, "score_l2": 0.0, "score_l2_rel": 0.0}
    vals = {k: {"t": list(times), "values": [v] * len(times)} for k, v in one.items()}
    return {"method": (f"closed form: the box cut-off (mass {m:.2g} outside): l1 = m, tv = m/2, hellinger = "
                       "√(1 − √(1 − m)), kl_truth_model = −log(1 − m), 0 for the potential and score; w2 and "
                       "kl_model_truth not estimated (they depend on where the outside mass lies)"),
            "metrics": vals,
            "not_estimated": {"w2": "depends on where outside the box the cut-off mass lies",
                              "kl_model_truth": "infinite for a truncated density (the floored value is not an "
                                                "error estimate)"}}


def _series_of(res: dict) -> dict:
    return {k: {"t": v["t"], "values": v["values"]} for k, v in res["metrics"].items() if k in COMPARED}


def truth_error_estimate(case, problem, method: str, truth: MFGSolution, times, *, work_dir=None,
                         solve=pde.solve, cache_dir=None) -> dict | None:
    """The estimate of the module docstring, or None (with nothing to compare).

    The second solves are cached in ``cache_dir`` (default ``work_dir/truth``; neither: not cached).
    """
    from .cache import cached_solve

    routes = list(case.truth) if case is not None else [method]
    tsel = [float(s) for s in times]

    def get(m, prob, **extra):
        opts = {**(case.options_for(m) if case is not None else {}), **extra}
        where = cache_dir if cache_dir is not None else (Path(work_dir) / "truth" if work_dir is not None else None)
        if where is None:
            return solve(prob, m, **opts)
        return cached_solve(prob, m, where, solve=solve, **opts).solution

    if method == "exact":
        mo = truth.meta.get("mass_outside_box")
        return exact_cutoff_error(float(max(mo)) if mo else 0.0, tsel)
    other = None
    try:
        if "exact" in routes:
            other, how = get("exact", problem), "the same metric between the truth and the closed form"
        else:
            for r in routes:
                if r != method:
                    try:
                        other, how = get(r, problem), f"the same metric between the `{method}` and `{r}` routes"
                        break
                    except ImportError:
                        continue
    except pde.exact.NoClosedForm:
        other = None
    if other is not None:
        res = evaluate(truth, other, problem, times=tsel)
        return {"method": how, "metrics": _series_of(res)}
    n = list(problem.n)
    if any(k % 2 for k in n) or problem.nt % 2:
        return {"method": f"none: no second route and the grid {n} × nt = {problem.nt} cannot be halved",
                "metrics": {}}
    coarse_p = problem.with_grid(n=[k // 2 for k in n], nt=problem.nt // 2)
    caveat = ""
    try:
        coarse = get(method, coarse_p)
    except ValueError as exc:
        if method != "fd" or "check_resolution" not in str(exc):
            return {"method": f"none: the `{method}` solve on the halved grid failed ({exc})", "metrics": {}}
        # the halved grid is below FD's resolution rule: solve anyway, the estimate is then pessimistic
        coarse = get(method, coarse_p, check_resolution=False)
        caveat = "; the halved grid is below FD's resolution rule (h ≤ std/2)"
    fine = coarsen_solution(truth)
    ts = [s for s in tsel if np.min(np.abs(fine.t - s)) <= 1e-9 * max(1.0, fine.t[-1])]
    if not ts:
        return {"method": f"none: no measured time {tsel} is a time level of the halved grid", "metrics": {}}
    off = [s for s in tsel if s not in ts]
    if off:
        caveat += f"; not estimated at t = {off} (not time levels of the halved grid)"
    res = evaluate(fine, coarse, coarse_p, times=ts)
    return {"method": (f"the same metric between the `{method}` truth on the grid halved "
                       f"({[k // 2 for k in n]} × nt = {problem.nt // 2}) and the truth at its nodes "
                       f"(about (2^p − 1) × the truth's error for order p){caveat}"),
            "metrics": _series_of(res)}


def mark_unresolved(metrics: dict, terr: dict | None) -> dict:
    """{metric: [times]} where the model's value is at or below the truth's error estimate."""
    out = {}
    if not terr:
        return out
    for name, est in terr.get("metrics", {}).items():
        m = metrics.get(name)
        if m is None:
            continue
        e_at = {round(t, 9): e for t, e in zip(est["t"], est["values"])}
        bad = []
        for t, v in zip(m["t"], m["values"]):
            e = e_at.get(round(t, 9))
            if v is not None and e is not None and math.isfinite(e) and e > 0 and v <= e:
                bad.append(t)
        if bad:
            out[name] = bad
    return out


def attach_truth_error(result: dict, terr: dict | None) -> dict:
    """Put the estimate and the unresolved marks into an :func:`~compare.metrics.evaluate` result."""
    if terr is not None:
        result["truth_error"] = {**terr, "unresolved": mark_unresolved(result["metrics"], terr)}
    return result
