"""`mfglab compare`: reproduces verify's metrics from verify's model.npz; problem+truth files; module:factory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_compare_verify import Hooks

import pde
from compare.cli import main
from compare.verify import run_verify


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())["metrics"]


def test_compare_of_verify_model_file_reproduces_verify_metrics_exactly(tmp_path):
    h = Hooks()
    kw = dict(budget=5, n=60, nt=8, n_samples=200, progress=False, times=[0.0, 0.5, 1.0], train=h.train,
              evaluate_model=h.evaluate, trajectories=h.trajectories, animation=False)
    r = run_verify("otflow-gaussian-1d", tmp_path / "v", **kw)
    assert (r.out_dir / "model.npz").exists()
    rc = main(["compare", "otflow-gaussian-1d", "--model", str(r.out_dir / "model.npz"), "--n", "60", "--nt", "8",
               "--times", "0", "0.5", "1", "--out", str(tmp_path / "c"), "--no-animation"])
    assert rc == 0
    a, b = _metrics(tmp_path / "v"), _metrics(tmp_path / "c")
    assert a["metrics"] == b["metrics"]
    assert a["summary"] == b["summary"]
    assert a["truth_error"] == b["truth_error"]
    assert "path_kinetic_energy" in a["summary"]
    md = (tmp_path / "c" / "report.md").read_text()
    assert "## Derivation" in md and "truth error (max)" in md


def test_compare_with_problem_and_truth_files_and_a_python_factory(tmp_path):
    p = pde.load_problem("examples/otflow_gaussian_1d.toml", {"n": [80], "nt": 8})
    s = pde.solve(p, "exact")
    s.save(tmp_path / "truth.npz")
    # the truth file's grid is the one measured on; the problem file gives ν, λ, b and ρ₀
    (tmp_path / "prob.toml").write_text(open("examples/otflow_gaussian_1d.toml").read())
    (tmp_path / "mymodel.py").write_text(textwrap.dedent("""
        import pde
        from compare import Model

        def make(problem):
            cf = pde.closed_form(problem.replace(lam=0.8))
            return Model(velocity=cf.velocity, name="lam0.8")
    """))
    out = tmp_path / "rep"
    rc = main(["compare", "--problem", str(tmp_path / "prob.toml"), "--truth", str(tmp_path / "truth.npz"),
               "--model", f"{tmp_path / 'mymodel.py'}:make", "--out", str(out), "--no-animation", "--samples", "200"])
    assert rc == 0
    m = _metrics(out)
    assert m["metrics"]["l1"]["values"][-1] > 0.01 and "backward characteristics" in json.dumps(
        json.loads((out / "metrics.json").read_text())["sections"])


def test_compare_bad_inputs_exit_2_with_the_path(tmp_path, capsys):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(b"PK\x03\x04 truncated")
    rc = main(["compare", "otflow-gaussian-1d", "--model", str(cut), "--n", "40", "--nt", "4",
               "--out", str(tmp_path / "x"), "--no-animation"])
    assert rc == 2 and "cut.npz" in capsys.readouterr().err
    rc = main(["compare", "otflow-gaussian-1d", "--model", "nothing.txt", "--out", str(tmp_path / "y")])
    assert rc == 2 and "expected a model file" in capsys.readouterr().err
    rc = main(["compare", "--model", str(cut)])
    assert rc == 2 and "either a case name" in capsys.readouterr().err


def test_compare_help_says_factory_runs_code():
    out = subprocess.run([sys.executable, "-m", "compare.cli", "compare", "--help"], capture_output=True, text=True)
    assert "RUNS" in out.stdout.replace("\n", " ")


def test_report_animation_is_written_and_inlined(tmp_path):
    p = pde.load_problem("examples/otflow_gaussian_1d.toml", {"n": [40], "nt": 4})
    s = pde.solve(p, "exact")
    from compare import Model
    from compare.comparison import run_compare

    cf = pde.closed_form(p)
    run_compare(Model(velocity=cf.velocity), tmp_path / "a", problem=p, truth=s, n_samples=30, steps=4)
    assert (tmp_path / "a" / "animation.gif").stat().st_size > 1000
    assert "data:image/gif;base64" in (tmp_path / "a" / "report.html").read_text()


def test_mfglab_train_writes_a_model_file_that_compare_reads(tmp_path):
    pytest.importorskip("torch")
    run = tmp_path / "run"
    assert main(["train", "examples/otflow_gaussian_1d.toml", "--model", "otflow", "--out", str(run), "--steps", "3",
                 "--n", "40", "--nt", "4", "--quiet", "--paths", "50"]) == 0
    from compare.model import ModelFile

    mf = ModelFile.load(run / "model.npz")
    assert mf.meta["paired"] and mf.samples.shape == (5, 50, 1) and mf.meta["velocity"] == "control"
    sol = pde.MFGSolution.load(run / "solution.npz")
    assert (mf.rho == sol.rho).all()
    assert main(["compare", "otflow-gaussian-1d", "--model", str(run / "model.npz"), "--n", "40", "--nt", "4",
                 "--truth", "exact", "--out", str(tmp_path / "c"), "--no-animation", "--no-truth-error"]) == 0


@pytest.mark.parametrize("body, says", [
    ("def factory():\n    raise ZeroDivisionError('kaboom')\n", "factory() raised ZeroDivisionError: kaboom"),
    ("import nonexistent_pkg_xyz\n", "raised ModuleNotFoundError"),
    ("import numpy as np\nfrom compare import Model\n"
     "def factory():\n    return Model(velocity=lambda x, t: np.zeros((3, 7)))\n",
     "the model's velocity(x of shape"),
])
def test_a_failing_user_factory_or_callable_is_one_line_exit_1(tmp_path, capsys, body, says):
    (tmp_path / "user.py").write_text(body)
    rc = main(["compare", "otflow-gaussian-1d", "--model", f"{tmp_path / 'user.py'}:factory", "--n", "40", "--nt", "4",
               "--no-animation", "--no-truth-error", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "returned shape (3, 7)" in err or "velocity" not in says


def test_a_1d_vector_callable_returning_a_flat_array_is_read_as_a_column():
    from compare.model import Model

    m = Model(velocity=lambda x, t: 2.0 * x[:, 0])
    x = np.linspace(-1, 1, 5)[:, None]
    np.testing.assert_array_equal(m.velocity(x, 0.5), 2.0 * x)  # not a (5, 5) broadcast


def test_a_model_file_that_does_not_fit_the_case_is_named_in_one_line_exit_2(tmp_path, capsys):
    from compare.model import ModelFile

    bad = tmp_path / "late.npz"
    ModelFile([0.0, 2.0], {}, samples=np.zeros((2, 10, 1))).save(bad)
    rc = main(["compare", "otflow-gaussian-1d", "--model", str(bad), "--n", "40", "--nt", "4", "--no-animation",
               "--no-truth-error", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "late.npz: the model's times span [0, 2]" in err and len(err.strip().splitlines()) == 1
