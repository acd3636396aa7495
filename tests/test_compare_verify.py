"""run_verify end to end with stand-in neural hooks (the real ones are exercised where they live)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

import pde
from compare.verify import run_verify


@dataclass
class FakeResult:
    problem: object
    losses: np.ndarray
    parts: dict = field(default_factory=dict)
    steps_run: int = 0


class Hooks:
    """A 'model' = the exact flow of the same problem with λ scaled by 0.8 (a known, wrong answer)."""

    def __init__(self):
        self.trained = []

    def train(self, problem, model, steps, seed, device, out_dir, progress):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.trained.append((model, steps, seed, out_dir))
        return FakeResult(problem, np.linspace(3.0, 1.0, steps), {"kinetic": np.full(steps, 0.3)}, steps)

    def evaluate(self, result, problem):
        return pde.solve(problem.replace(lam=0.8 * problem.lam), "exact")

    def trajectories(self, result, x0, nt):
        cf = pde.closed_form(result.problem.replace(lam=0.8 * result.problem.lam))
        t = np.linspace(0.0, result.problem.T, nt + 1)
        return np.stack([x0 + s * cf.velocity(x0, 0.0) for s in t])  # straight lines (ν = 0 optimal flow)


def test_run_verify_writes_the_report_and_reuses_the_truth(tmp_path):
    h = Hooks()
    kw = dict(budget=7, n=60, nt=8, n_samples=300, progress=False, times=[0.0, 0.5, 1.0], train=h.train, evaluate_model=h.evaluate,
              trajectories=h.trajectories, animation=False)
    r1 = run_verify("otflow-gaussian-1d", tmp_path / "rep", **kw)
    assert r1.truth_cached is False and r1.truth_path.exists()
    data = json.loads((r1.out_dir / "metrics.json").read_text())
    m = data["metrics"]["metrics"]
    assert data["case"]["name"] == "otflow-gaussian-1d" and data["metrics"]["times"] == [0.0, 0.5, 1.0]
    assert m["l1"]["values"][0] == pytest.approx(0.0, abs=1e-12)  # same data at t = 0
    assert m["l1"]["values"][-1] > 0.01  # a different λ moves the terminal law
    assert len(m["w2_samples"]["values"]) == 3  # samples from the trajectories
    assert (r1.out_dir / "fig_training.png").exists() and (r1.out_dir / "fig_trajectories.png").exists()
    assert h.trained[0][:3] == ("otflow", 7, 0)
    with pytest.raises(FileExistsError):
        run_verify("otflow-gaussian-1d", tmp_path / "rep", **kw)
    r2 = run_verify("otflow-gaussian-1d", tmp_path / "rep", force=True, **kw)
    assert r2.truth_cached is True  # resumed from the cache, not solved again
    assert r2.metrics["metrics"]["l1"]["values"] == r1.metrics["metrics"]["l1"]["values"]
    assert h.trained[1][3] == h.trained[0][3]  # same checkpoint folder: a re-run resumes training


def test_run_verify_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown case"):
        run_verify("no-such-case", tmp_path / "a")
    with pytest.raises(ValueError, match="truth route"):
        run_verify("otflow-mixture-2d", tmp_path / "b", truth_method="exact")
