"""The truth's own error, beside every metric: which model errors a truth can resolve.

A model error below the truth's error cannot be told from the truth's; the
report marks it "not resolved by this truth". The estimate, in order of
preference:

1. the truth is the closed form (``exact``): its error is the mass the
   closed form puts outside the box (the box cut-off, ``meta.mass_outside_box``)
   for the density metrics and 0 for the others;
2. the case has a closed form and the truth is another route: the same
   metric between the truth and the closed form (its actual error);
3. the case has another numerical route (fd vs fe): the same metric between
   the two routes (an estimate of the larger of the two errors);
4. otherwise the same route on the grid with n and nt halved, against the
   truth's cell averages on that coarser grid (a conservative estimate: for
   a method of order p it is about 2^p times the truth's error).

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

__all__ = ["truth_error_estimate", "mark_unresolved", "attach_truth_error", "COMPARED", "coarsen_solution"]

#: metrics with a truth-error estimate (errors between two solutions of the same problem)
COMPARED = ("l1", "tv", "hellinger", "kl_truth_model", "kl_model_truth", "w2", "phi_l2", "phi_max", "score_l2",
            "score_l2_rel")
_DENSITY = ("l1", "tv", "hellinger", "w2")


def coarsen_solution(sol: MFGSolution) -> MFGSolution | None:
    """Cell averages of ρ and φ on the grid with n and nt halved (None when a count is odd)."""
    n = [a.size for a in sol.axes]
    nt = sol.t.size - 1
    if any(k % 2 for k in n) or nt % 2:
        return None
    d = sol.dim

    def avg(f):
        f = f[::2]
        if d == 1:
            return f.reshape(f.shape[0], n[0] // 2, 2).mean(-1)
        return f.reshape(f.shape[0], n[0] // 2, 2, n[1] // 2, 2).mean(axis=(2, 4))

    axes = tuple(a.reshape(-1, 2).mean(-1) for a in sol.axes)
    with np.errstate(invalid="ignore"):
        return MFGSolution(sol.t[::2], axes, avg(sol.rho), avg(sol.phi), meta=dict(sol.meta))


def _series_of(res: dict) -> dict:
    return {k: {"t": v["t"], "values": v["values"]} for k, v in res["metrics"].items() if k in COMPARED}


def truth_error_estimate(case, problem, method: str, truth: MFGSolution, times, *, work_dir=None,
                         solve=pde.solve) -> dict | None:
    """The estimate of the module docstring, or None (with nothing to compare)."""
    from .cache import cached_solve

    routes = list(case.truth) if case is not None else [method]
    tsel = [float(s) for s in times]

    def get(m, prob):
        if work_dir is None:
            return solve(prob, m)
        return cached_solve(prob, m, Path(work_dir) / "truth", solve=solve).solution

    if method == "exact":
        mo = truth.meta.get("mass_outside_box")
        cut = float(max(mo)) if mo else 0.0
        vals = {k: {"t": tsel, "values": [cut if k in _DENSITY else 0.0] * len(tsel)} for k in COMPARED}
        return {"method": f"closed form: the mass outside the box ({cut:.2g}) for the density metrics, 0 otherwise",
                "metrics": vals}
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
    coarse = get(method, coarse_p)
    fine = coarsen_solution(truth)
    ts = [s for s in tsel if np.min(np.abs(fine.t - s)) <= 1e-9 * max(1.0, fine.t[-1])]
    res = evaluate(fine, coarse, coarse_p, times=ts)
    return {"method": (f"the same metric between the `{method}` truth on the grid halved "
                       f"({[k // 2 for k in n]} × nt = {problem.nt // 2}) and the truth's cell averages there "
                       "(conservative: about 2^p × the truth's error for order p)"),
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
