"""One verification run: truth (cached), model (trained or resumed), metrics, report.

:func:`run_verify` is the library side of ``mfglab verify CASE``:

1. the truth: the case's primary route (or ``truth_method``) on the case's
   grid, through :func:`compare.cache.cached_solve` (keyed by problem, grid,
   method, options), so a re-run does not solve again;
2. the model: ``train(problem, model, steps, seed, device, out_dir=WORK)``
   with checkpoints in a work folder outside the report, so an interrupted
   run resumes from its checkpoint;
3. the model on the truth's grid (``evaluate_model``), particle paths from
   samples of ρ₀ (``trajectories``), which also give the sample-based W2;
4. :func:`compare.metrics.evaluate` and :func:`compare.report.write_report`.

The neural hooks default to ``neural.train``, ``neural.evaluate_on_grid``
and ``neural.trajectories`` (imported only when used) and can be replaced
by any callables with the same signatures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import pde

from .cache import cached_solve
from .cases import get_case
from .metrics import evaluate, select_times
from .model import model_file_from_solution
from .report import write_report
from .trutherror import attach_truth_error, truth_error_estimate

__all__ = ["run_verify", "VerifyResult", "default_work_dir"]


@dataclass
class VerifyResult:
    """Where the report went and what it measured."""

    out_dir: Path
    metrics: dict
    truth_cached: bool
    truth_path: Path | None
    wall_time_s: float


def default_work_dir(out_dir) -> Path:
    """Caches and checkpoints live beside the report: ``OUT.work/`` (kept across runs)."""
    out = Path(out_dir).resolve()
    return out.parent / f"{out.name}.work"


def run_verify(case, out_dir, *, budget: int | None = None, seed: int = 0, device=None,
               truth_method: str | None = None, n=None, nt: int | None = None, force: bool = False,
               work_dir=None, n_samples: int = 2000, times=None, progress: bool = True,
               train: Callable | None = None, evaluate_model: Callable | None = None,
               trajectories: Callable | None = None, solve: Callable = pde.solve,
               model: str | None = None, animation: bool = True, truth_error: bool = True,
               truth_cache=None) -> VerifyResult:
    """Verify the case's neural model against its ground truth and write a report.

    Args:
        case: a case name or :class:`~compare.cases.Case`.
        out_dir: the report folder (refused if it exists, unless ``force``).
        budget: training steps (default: the case's budget).
        seed: seeds training and the samples.
        device: passed to ``train`` ("cpu", "cuda", None for automatic).
        truth_method: a truth route (default: the case's primary one).
        n, nt: grid overrides.
        force: replace an existing report folder (once the new one is complete).
        work_dir: truth cache and checkpoints (default ``OUT.work`` beside the report).
        n_samples: particles for trajectories and the sample-based W2.
        times: measurement times (default 5 evenly spread, 0 and T included).
        progress: progress bars.
        train, evaluate_model, trajectories: neural hooks (see the module docstring).
        solve: the truth solver (``pde.solve``).
        model: the neural model (default: the case's).
        animation: put the truth-vs-model animation in the report.
        truth_error: estimate the truth's own error beside each metric (:mod:`compare.trutherror`).
        truth_cache: folder of the truth cache (default ``work_dir/truth``); several runs may share one
            (:mod:`compare.cache` locks each entry).

    The report folder also holds ``model.npz`` (:mod:`compare.model.file`): the model on the truth's
    grid and its trajectories, so that ``mfglab compare CASE --model OUT/model.npz`` reproduces
    these metrics exactly.
    """
    t0 = time.perf_counter()
    c = get_case(case)
    out = Path(out_dir).resolve()
    if out.exists() and not force:
        # refuse before any expensive work
        raise FileExistsError(f"{out} exists; choose another folder or pass force=True (--force) to replace it")
    method = truth_method or c.primary_truth
    if method not in c.truth:
        raise ValueError(f"case {c.name}: truth route {method!r}; expected one of {list(c.truth)}")
    model_name = model or c.model
    steps = int(budget if budget is not None else c.budget)
    if steps < 1:
        raise ValueError(f"budget={budget}; expected a positive number of training steps")
    problem = c.problem(n=n, nt=nt)
    work = Path(work_dir) if work_dir is not None else default_work_dir(out)
    work.mkdir(parents=True, exist_ok=True)

    cache_dir = Path(truth_cache) if truth_cache is not None else work / "truth"
    cached = cached_solve(problem, method, cache_dir, solve=solve, **c.options_for(method))
    truth = cached.solution

    if train is None or evaluate_model is None or trajectories is None:
        import neural

        train = train or neural.train
        evaluate_model = evaluate_model or neural.evaluate_on_grid
        trajectories = trajectories or neural.trajectories
    ckpt_dir = work / f"train-{model_name}-seed{seed}"
    result = train(problem, model_name, steps=steps, seed=seed, device=device, out_dir=ckpt_dir, progress=progress)
    sol = evaluate_model(result, problem)

    rng = np.random.default_rng(seed)
    x0 = problem.rho0.sample(int(n_samples), rng)
    paths = np.asarray(trajectories(result, x0, problem.nt))
    idx, tsel = select_times(truth.t, times)
    on_levels = paths.shape[0] == truth.t.size
    samples = {float(t): paths[k] for k, t in zip(idx, tsel)} if on_levels else None
    res = evaluate(truth, sol, problem, times=tsel, samples=samples, paths=(truth.t, paths) if on_levels else None,
                   seed=seed)
    if truth_error:
        attach_truth_error(res, truth_error_estimate(c, problem, method, truth, tsel, work_dir=work, solve=solve,
                                                    cache_dir=cache_dir))
    mfile = model_file_from_solution(sol, paths if on_levels else None,
                                     {"name": model_name, "source": f"mfglab verify {c.name}", "seed": seed,
                                      "case": c.name, "steps": steps})

    losses = getattr(result, "losses", None)
    parts = getattr(result, "parts", None) or {}
    training = None
    if losses is not None and len(losses):
        training = {"loss": np.asarray(losses, float), **{k: np.asarray(v, float) for k, v in parts.items() if len(v)}}
    summary = getattr(result, "summary", None)
    notes = (f"Truth: `{method}` on the grid {list(problem.n)} × nt = {problem.nt}"
             f"{' (from the cache)' if cached.hit else ''}. Model: `{model_name}`, {steps} training steps, seed {seed}"
             + (f" — {summary()}" if callable(summary) else "") + ".")
    out_path = write_report(out, title=f"{c.name}: {model_name} vs {method} truth", case=c, truth=truth, model=sol,
                            metrics=res, training=training, trajectories=paths, force=force, seed=seed,
                            problem=problem, notes=notes, animation=animation, extra_files={"model.npz": mfile},
                            extra_provenance={"truth_cache": str(cached.path) if cached.path else None,
                                              "checkpoint_dir": str(ckpt_dir), "device_requested": device})
    return VerifyResult(out_path, res, cached.hit, cached.path, time.perf_counter() - t0)
