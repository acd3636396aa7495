"""``DIR/model.npz`` for a model trained by ``mfglab train`` (through neural's public API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .export import model_file_from_solution

__all__ = ["write_trained_model_file"]


def write_trained_model_file(out_dir, problem_path, *, n_paths: int = 2000, seed: int = 0,
                             overrides: dict | None = None) -> Path:
    """Read ``DIR/solution.npz`` and the checkpoint, add trajectories from ρ₀, write ``DIR/model.npz``.

    The trajectories start from ``n_paths`` samples of ρ₀ drawn with
    ``numpy.random.default_rng(seed)`` and are recorded at the solution's
    time levels (``neural.trajectories``).
    """
    import neural
    import pde

    out = Path(out_dir)
    problem = pde.load_problem(problem_path, overrides={k: v for k, v in (overrides or {}).items() if v})
    sol = pde.MFGSolution.load(out / "solution.npz")
    result = neural.load(out, problem=problem)
    x0 = problem.rho0.sample(int(n_paths), np.random.default_rng(seed))
    paths = np.asarray(neural.trajectories(result, x0, sol.t.size - 1))
    mf = model_file_from_solution(sol, paths, {"name": result.model_name, "source": f"mfglab train {problem_path}",
                                               "seed": seed, "steps": result.step})
    return mf.save(out / "model.npz")
