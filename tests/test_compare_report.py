"""Report folders (atomic, refused when present, HTML inline figures), provenance, convergence machinery."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pde
from compare import convergence as CV
from compare import metrics as M
from compare import report as R
from compare.cases import get_case

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pair():
    case = get_case("otflow-gaussian-1d")
    p = case.problem(n=80, nt=8)
    truth = pde.solve(p, "exact")
    model = pde.solve(p.replace(lam=0.8), "exact")  # a different flow on the same grid
    res = M.evaluate(truth, model, p, times=[0.0, 0.5, 1.0])
    return case, p, truth, model, res


def test_full_report_layout_and_contents(tmp_path, pair):
    case, p, truth, model, res = pair
    rng = np.random.default_rng(0)
    traj = np.cumsum(rng.normal(scale=0.05, size=(9, 40, 1)), axis=0) + 1.5
    out = R.write_report(tmp_path / "rep", title="otflow 1D check", case=case, truth=truth, model=model,
                         metrics=res, training={"loss": np.linspace(2, 1, 30)}, trajectories=traj, seed=7, problem=p)
    files = sorted(f.name for f in out.iterdir())
    assert files == sorted(["report.md", "report.html", "metrics.json", "provenance.json", "fig_density.png",
                            "fig_potential.png", "fig_metrics.png", "fig_training.png", "fig_trajectories.png"])
    for f in out.glob("*.png"):
        assert f.read_bytes().startswith(PNG)
    md = (out / "report.md").read_text()
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / ref).exists()
    # numbers with 3 significant digits: the L1 at T appears exactly as fmt formats it
    assert R.fmt(res["metrics"]["l1"]["values"][-1]) in md
    html = (out / "report.html").read_text()
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 5 and all(base64.b64decode(s).startswith(PNG) for s in imgs)
    assert "<table>" in html and 'src="fig_' not in html  # self-contained
    data = json.loads((out / "metrics.json").read_text())  # strict JSON (NaN written as null)
    assert data["schema"] == R.REPORT_SCHEMA and data["metrics"]["schema"] == M.SCHEMA
    assert data["metrics"]["metrics"]["l1"]["values"] == pytest.approx(res["metrics"]["l1"]["values"])
    assert data["case"]["name"] == "otflow-gaussian-1d"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 7 and prov["hostname"] and prov["cpu"] and "numpy" in prov["versions"]
    # no temporary siblings are left behind
    assert [f.name for f in tmp_path.iterdir()] == ["rep"]


def test_existing_folder_is_refused_and_force_replaces_only_when_complete(tmp_path, pair):
    case, p, truth, model, res = pair
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="force"):
        R.write_report(out, title="x", extra_sections=[R.Section('s', 'text')])
    assert (out / "keep.txt").read_text() == "old"

    class Boom(RuntimeError):
        pass

    class BadFigure:
        def savefig(self, *a, **k):
            raise Boom("figure failed")

    bad = R.Section("broken", "text", [R.FigureSpec("fig_bad.png", BadFigure())])
    with pytest.raises(Boom):
        R.write_report(out, title="x", extra_sections=[bad], force=True)
    assert sorted(f.name for f in out.iterdir()) == ["keep.txt"]  # old report untouched
    assert [f.name for f in tmp_path.iterdir()] == ["rep"]  # temporary folder removed
    R.write_report(out, title="x", extra_sections=[R.Section('s', 'text')], force=True)
    assert not (out / "keep.txt").exists() and (out / "report.md").exists()


def test_truth_only_and_study_reports(tmp_path, pair):
    case, p, truth, model, res = pair
    out = R.write_report(tmp_path / "truth", title="truth only", truth=truth, times=[0.0, 1.0])
    assert (out / "fig_density.png").exists() and not (out / "fig_metrics.png").exists()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    table = R.markdown_table(["λ", "spread"], [[1.0, 0.012345], [0.1, 0.5]])
    sec = R.Section("Well-posedness", table, [R.FigureSpec("fig_study.png", fig, "spread vs λ")], data={"lam": [1, 0.1]})
    out = R.write_report(tmp_path / "study", title="a study", extra_sections=[sec])
    md = (out / "report.md").read_text()
    assert "| 1 | 0.0123 |" in md and "fig_study.png" in md
    assert json.loads((out / "metrics.json").read_text())["sections"] == {"Well-posedness": {"lam": [1, 0.1]}}


def test_fmt_and_markdown_to_html_escape():
    assert [R.fmt(v) for v in (0.000123456, 12345.6, 1.0, None, float("nan"), 3)] == \
        ["0.000123", "1.23e+04", "1", "—", "—", "3"]
    html = R.markdown_to_html("# T\n\n<script>alert(1)</script> `a<b`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- x\n- y")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<h1>T</h1>" in html and "<td>1</td>" in html and "<li>y</li>" in html and "<code>a&lt;b</code>" in html


def test_git_commit_inside_and_outside_a_repository(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert R.git_commit(REPO)["commit"] == head.stdout.strip()
    env_ceiling = os.environ.get("GIT_CEILING_DIRECTORIES")
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path.parent)  # keep git from finding a parent repository
    try:
        assert R.git_commit(tmp_path)["commit"] == "unknown"
    finally:
        if env_ceiling is None:
            del os.environ["GIT_CEILING_DIRECTORIES"]
        else:
            os.environ["GIT_CEILING_DIRECTORIES"] = env_ceiling


# ---------------------------------------------------------------- convergence


def test_fit_order_exact_slopes_and_bad_input():
    h = np.array([0.4, 0.2, 0.1, 0.05])
    assert CV.fit_order(h, 3.0 * h**2) == pytest.approx(2.0, abs=1e-12)
    assert CV.fit_order(h, 0.5 * h) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        CV.fit_order(h, [1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="at least two"):
        CV.fit_order([0.1], [0.2])


def _fake_first_order_solver(problem, method, **_):
    """The closed form plus perturbations of size h (so every error is O(h))."""
    sol = pde.solve(problem, "exact")
    h = problem.grid().h[0]
    x = sol.axes[0]
    rho = sol.rho * (1.0 + h * np.sin(x))  # relative perturbation: L1 error = h ∫ρ|sin x|
    phi = sol.phi + h * x**2  # not a constant: potential error = h · std_ρ(x²)
    return pde.MFGSolution(sol.t, sol.axes, rho, phi, meta={"method": method})


def test_run_convergence_recovers_a_known_first_order(tmp_path):
    res = CV.run_convergence("otflow-gaussian-1d", "fake", 3, solve=_fake_first_order_solver, n0=40, nt0=5,
                             progress=False, out_dir=tmp_path / "conv")
    assert [r["n"] for r in res.rows] == [[40], [80], [160]] and [r["nt"] for r in res.rows] == [5, 10, 20]
    for name in CV.ERROR_NAMES:
        # the perturbation is exactly linear in h; only the O(h²) midpoint-rule error of the norms remains
        assert res.orders[name] == pytest.approx(1.0, abs=0.05), name
    assert "| level |" in res.table and "order" in res.table
    data = json.loads((tmp_path / "conv" / "metrics.json").read_text())
    assert data["sections"]["Convergence"]["orders"]["rho_l1_T"] == pytest.approx(res.orders["rho_l1_T"])
    assert (tmp_path / "conv" / "fig_convergence.png").read_bytes().startswith(PNG)


def test_run_convergence_of_the_closed_form_itself_has_zero_error():
    res = CV.run_convergence("sgm-mixture-1d", "exact", 2, n0=30, nt0=4, progress=False)
    assert all(r[e] == 0.0 for r in res.rows for e in CV.ERROR_NAMES)
    assert all(o is None for o in res.orders.values())  # no slope through zero errors


def test_run_convergence_needs_a_closed_form():
    with pytest.raises(ValueError, match="closed form"):
        CV.run_convergence("otflow-mixture-2d", "fd", 3, progress=False)


def test_outputs_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    """Files and report folders renamed into place are as readable as anything else written here."""
    from pde.io import atomic_write, default_mode

    old = os.umask(0o022)
    try:
        f = atomic_write(tmp_path / "a.json", "{}")
        assert f.stat().st_mode & 0o777 == 0o644 == default_mode()
        from compare.report import write_report

        out = write_report(tmp_path / "rep", title="t")
        assert out.stat().st_mode & 0o777 == 0o755
        assert (out / "report.md").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
