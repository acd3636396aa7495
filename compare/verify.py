"""``mfglab verify``: PDE truth against a neural flow on a named case.

Pipeline (each stage resumable):

1. **truth** — solve the case's problem with its primary truth route
   (``exact``, ``fd`` or ``fe``), cached in ``CACHE/truth-<hash>.npz`` where
   the hash covers the problem, the grid and the route;
2. **model** — train the case's default neural model (or ``--model``) with a
   checkpoint in ``CACHE/model-<hash>/``; an interrupted run resumes from the
   last checkpoint, a finished one is loaded instead of retrained;
3. **evaluate** — the model on the truth's grid (ρ, φ, score, velocity),
   metrics at ≥ 5 times (:func:`compare.metrics.evaluate`), trajectories;
4. **report** — a folder with ``report.md``/``report.html``, figures,
   ``metrics.json`` and provenance, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

import pde

from .cases import get_case

__all__ = ["run_verify", "cached_truth", "DEFAULT_CACHE"]

DEFAULT_CACHE = Path(".mfglab-cache")


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_truth(problem, route: str, cache_dir: Path = DEFAULT_CACHE, log=print) -> pde.MFGSolution:
    """Solve ``problem`` with ``route`` once; later calls load the cached file."""
    key = _hash(problem.fingerprint(), route, list(problem.n), problem.nt)
    path = Path(cache_dir) / f"truth-{route}-{key}.npz"
    if path.exists():
        try:
            sol = pde.MFGSolution.load(path)
            log(f"truth: loaded {path}")
            return sol
        except ValueError as exc:  # a damaged cache entry is recomputed, not trusted
            log(f"truth: ignoring unreadable cache {path} ({exc})")
    log(f"truth: solving with {route} on grid {list(problem.n)} × {problem.nt} steps")
    opts = {} if route == "exact" else {"progress": False}
    sol = pde.solve(problem, route, **opts)
    sol.save(path)
    return sol


def run_verify(case_name: str, out_dir, *, model: str | None = None, budget: int | None = None,
               device: str | None = None, seed: int = 0, force: bool = False,
               cache_dir: Path = DEFAULT_CACHE, truth_route: str | None = None, progress: bool = True,
               log=print) -> Path:
    """Run the verification pipeline on a registered case; returns the report folder."""
    import neural

    from . import metrics as M
    from .report import Section, write_report

    case = get_case(case_name)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"output folder {out_dir} exists; pass --force to replace it")
    problem = case.problem()
    route = truth_route or case.primary_truth
    if route not in case.truth:
        raise ValueError(f"truth route {route!r} is not available for case {case.name}; expected one of {list(case.truth)}")
    model_name = model or case.model
    steps = int(budget or case.budget)
    t0 = time.perf_counter()
    truth = cached_truth(problem, route, cache_dir, log=log)
    t_truth = time.perf_counter() - t0

    ckpt_dir = Path(cache_dir) / f"model-{model_name}-{_hash(problem.fingerprint(), model_name, seed)}"
    log(f"model: training {model_name} for {steps} steps (checkpoints in {ckpt_dir})")
    t1 = time.perf_counter()
    result = neural.train(problem, model=model_name, steps=steps, seed=seed, device=device, out_dir=ckpt_dir,
                          resume=True, progress=progress)
    t_train = time.perf_counter() - t1
    log(f"model: {result.summary()}")

    t2 = time.perf_counter()
    sol = neural.evaluate_on_grid(result, problem, n=problem.n, nt=problem.nt)
    samples = None
    traj = None
    rng = np.random.default_rng(seed)
    if model_name in ("otflow", "ffjord", "wgf"):
        x0 = problem.rho0.sample(256, rng)
        traj = neural.trajectories(result, x0, problem.nt)
    res = M.evaluate(truth, sol, problem, samples=samples, seed=seed)
    t_eval = time.perf_counter() - t2

    timing = {"truth_s": t_truth, "train_s": t_train, "evaluate_s": t_eval, "total_s": time.perf_counter() - t0,
              "train_steps": int(result.step), "device": result.device}
    notes = (f"Case **{case.name}**: {case.description}. Truth route: `{route}`"
             f"{' (from cache)' if t_truth < 0.5 and route != 'exact' else ''}; model `{model_name}` trained for "
             f"{result.step} steps on {result.device} ({result.dtype}), seed {seed}.")
    timing_md = "| stage | seconds |\n|---|---|\n" + "\n".join(
        f"| {k[:-2]} | {v:.3g} |" for k, v in timing.items() if k.endswith("_s"))
    losses = {"total": np.asarray(result.losses).tolist()}
    for k, v in (result.parts or {}).items():
        losses[k] = np.asarray(v).tolist()
    path = write_report(out_dir, title=f"mfglab verify: {case.name}", case=case, truth=truth, model=sol, metrics=res,
                        training=losses, trajectories=traj, force=force, seed=seed, problem=problem, notes=notes,
                        extra_sections=[Section("Timings", timing_md)],
                        extra_provenance={"timing": timing, "truth_route": route, "model": model_name,
                                          "checkpoint": str(result.checkpoint) if result.checkpoint else None},
                        labels=(f"truth ({route})", f"model ({model_name})"))
    log(f"report: {path}")
    return path
