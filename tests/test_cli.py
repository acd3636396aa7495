"""The command line: exit codes, outputs and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import pde
from compare.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_solve_exact_writes_a_solution_file(tmp_path, capsys):
    out = tmp_path / "sol.npz"
    rc = main(["solve", str(ROOT / "examples/lq_mixture_1d.toml"), "--method", "exact", "--n", "64", "--nt", "8",
               "--out", str(out)])
    assert rc == 0
    sol = pde.MFGSolution.load(out)
    assert sol.rho.shape == (9, 64) and sol.meta["method"] == "exact"
    assert abs(sol.mass()[0] - 1) < 1e-6
    assert "wrote" in capsys.readouterr().out


def test_solve_refuses_to_overwrite_and_unknown_method(tmp_path, capsys):
    out = tmp_path / "sol.npz"
    out.write_bytes(b"keep")
    assert main(["solve", str(ROOT / "examples/lq_mixture_1d.toml"), "--method", "exact", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep"
    assert main(["solve", str(ROOT / "examples/lq_mixture_1d.toml"), "--method", "magic", "--out",
                 str(tmp_path / "b.npz")]) == 2
    assert "unknown method 'magic'; expected one of" in capsys.readouterr().err


def test_bad_problem_file_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("family = 'otflow'\nT = -1.0\ndomain = [[-6.0, 6.0]]\n[data]\nkind='gaussian_mixture'\n"
                   "weights=[1.0]\nmeans=[[0.0]]\ncovs=[[[1.0]]]\n")
    assert main(["solve", str(bad), "--method", "exact", "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "T=-1.0" in err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "compare.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "solve" in out.stdout
