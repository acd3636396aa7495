"""verify / converge / demo end to end with the real solvers and neural models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compare.cases import list_cases
from compare.cli import main
from compare.verify import run_verify

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks on a shared 2-core CPU (see README)
    yield
    torch.set_num_threads(old)


def test_verify_with_a_real_model_on_a_tiny_budget(tmp_path):
    res = run_verify("otflow-gaussian-1d", tmp_path / "rep", budget=10, n=80, nt=10, n_samples=200, progress=False,
                     animation=False)
    data = json.loads((res.out_dir / "metrics.json").read_text())
    m = data["metrics"]["metrics"]
    assert data["metrics"]["schema"] == "mfglab.metrics/2"
    assert data["metrics"]["times"][0] == 0.0 and data["metrics"]["times"][-1] == 1.0
    # the flow's density at t = 0 is ρ0 itself (exact log-determinant, no transport yet)
    assert m["l1"]["values"][0] < 1e-6
    # after 10 steps the terminal law is still far from the truth (an untrained flow's grid
    # density need not even have mass 1, so L1 may exceed 2), but it is measured and finite
    assert np.isfinite(m["l1"]["values"][-1]) and m["l1"]["values"][-1] > 1e-3
    assert all(np.isfinite(v) for v in m["mass_model"]["values"])
    assert all(np.isfinite(v) for v in m["hellinger"]["values"])
    prov = json.loads((res.out_dir / "provenance.json").read_text())
    assert "versions" in json.dumps(prov) and prov.get("seed") == 0
    # a re-run resumes: same checkpoint, no retraining, same numbers
    res2 = run_verify("otflow-gaussian-1d", tmp_path / "rep", budget=10, n=80, nt=10, n_samples=200,
                      progress=False, force=True, animation=False)
    assert res2.truth_cached
    assert res2.metrics["metrics"]["l1"]["values"] == res.metrics["metrics"]["l1"]["values"]
    # the trained model's file, compared on its own, gives verify's numbers exactly
    assert main(["compare", "otflow-gaussian-1d", "--model", str(res2.out_dir / "model.npz"), "--n", "80", "--nt", "10",
                 "--out", str(tmp_path / "cmp"), "--work", str(tmp_path / "rep.work"), "--no-animation"]) == 0
    again = json.loads((tmp_path / "cmp" / "metrics.json").read_text())["metrics"]
    assert again["metrics"] == res2.metrics["metrics"] and again["summary"] == res2.metrics["summary"]


def test_cli_verify_refuses_an_existing_folder_and_unknown_case(tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["verify", "otflow-gaussian-1d", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["verify", "no-such-case", "--out", str(tmp_path / "x")]) == 2
    assert "unknown case 'no-such-case'; expected one of" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("case", [c.name for c in list_cases()])
def test_verify_runs_on_every_case(case, tmp_path):
    """Every registered case, its primary truth and its default model, on a small budget."""
    c = next(c for c in list_cases() if c.name == case)
    if "fe" in c.truth[:1]:
        pytest.importorskip("dolfinx")
    res = run_verify(case, tmp_path / case, budget=min(c.budget, 40), n_samples=300, progress=False)
    m = json.loads((res.out_dir / "metrics.json").read_text())["metrics"]
    assert len(m["times"]) >= 5
    vals = [v for v in m["metrics"]["l1"]["values"] if v is not None]
    assert vals and all(0 <= v <= 2 for v in vals)


@pytest.mark.slow
def test_converge_shows_first_order_for_fd_on_otflow(tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(["converge", "otflow-gaussian-1d", "--method", "fd", "--levels", "3", "--n0", "50", "--nt0", "20",
                 "--out", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    orders = data["sections"]["Convergence"]["orders"]  # the report layout of docs/compare.md
    assert orders["rho_l1_T"] > 0.8  # the scheme is first order (declared); observed ≈ 0.94 in docs/fd.md


@pytest.mark.slow
def test_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert (out / "report.html").exists() and (out / "metrics.json").exists()
    assert "report.html" in capsys.readouterr().out
