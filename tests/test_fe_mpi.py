"""The FE solver under ``mpirun -n 2`` gives the serial answer to solver tolerance.

Runs ``python -m pde.fe.mpicheck`` in a subprocess under mpirun (three cases:
sgm on an unstructured 2D gmsh mesh — partition-boundary ghosts — with the default
preconditioner and with multigrid, and otflow in 1D — the distributed space-time Newton) and compares with serial solves in
this process. About 20 s on a 2-core machine, so it stays in the default run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.dolfinx, pytest.mark.mpi]

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed")
def test_mpirun_two_ranks_matches_serial(tmp_path):
    from pde import MFGSolution
    from pde.fe import solve_fe
    from pde.fe.mpicheck import case

    cases = ["sgm2d", "sgm2d-amg", "otflow1d"]
    args = []
    for c in cases:
        args += [c, str(tmp_path / f"{c}.mpi.npz")]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_mpi_yield_when_idle": "1"}
    cmd = ["mpirun", "-n", "2", "--allow-run-as-root", "--oversubscribe", sys.executable, "-m", "pde.fe.mpicheck", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for c in cases:
        par = MFGSolution.load(tmp_path / f"{c}.mpi.npz")
        assert par.meta["fe"]["mpi_ranks"] == 2
        p, opts = case(c)
        ser = solve_fe(p, progress=False, **opts)
        assert ser.meta["fe"]["mpi_ranks"] == 1
        # same mesh, same equations; only the order of floating-point sums and the
        # Krylov iterates differ: agreement to the linear-solver tolerance (1e-13 rel.)
        # amplified by at most nt steps stays far below 1e-9
        assert np.abs(par.rho - ser.rho).max() < 1e-9
        mask = ser.rho > 1e-8  # φ = log-type quantities in empty tails carry no information
        assert np.abs(par.phi - ser.phi)[mask].max() < 1e-8
        assert par.meta["mass_error"] < 1e-11
        its = {k: (par.meta["iterations"][k], ser.meta["iterations"][k]) for k in ("ksp_iterations", "pc_setups")}
        if c == "sgm2d":  # the defaults: ILU(1) serially, ASM(overlap 2)/ILU(1) on 2 ranks, both reused
            assert ser.meta["fe"]["pc_type"] == "bjacobi" and par.meta["fe"]["pc_type"] == "asm"
            kp, ks = its["ksp_iterations"]
            # the bound on the Krylov iterations across ranks: 1.3x (measured 365/357 here, 2400/2104 on the benchmark)
            assert kp <= 1.3 * ks, its
        if c == "sgm2d-amg":  # multigrid, reused: its Krylov iterations stay flat across ranks (the issue's
            # bound 1.3x; measured 372/354 = 1.05 here, 2001/2004 on the benchmark)
            assert par.meta["fe"]["pc_type"] == ser.meta["fe"]["pc_type"] != "bjacobi"
            kp, ks = its["ksp_iterations"]
            assert kp <= 1.3 * ks, its
            assert kp / ks < 1.3
            assert its["pc_setups"][0] < par.meta["iterations"]["linear_solves"] / 2, its
