"""Solve a small named FE case and write its ``.npz`` (rank 0): the MPI check.

    mpirun -n 2 python -m pde.fe.mpicheck CASE OUT.npz [CASE OUT.npz ...]

runs the same solves as ``python -m pde.fe.mpicheck CASE OUT.npz ...``; the test
``tests/test_fe_mpi.py`` compares the two files. Cases: ``sgm2d`` (unstructured
gmsh rectangle, HJB Newton + FP; ``sgm2d-amg`` the same with ``sweeps.AMG``), ``otflow1d`` (space-time Newton),
``lq1d`` (outer SNES on the mean path), ``wgf-obstacle`` (linear FP).
"""

from __future__ import annotations

import sys

import numpy as np


def case(name: str):
    """(problem, solve_fe options) of a named check case."""
    import pde

    if name in ("sgm2d", "sgm2d-amg"):
        p = pde.sgm(pde.GaussianMixture([0.5, 0.5], [[-1.0, 1.0], [1.5, -1.0]], [np.eye(2) * 0.3, np.eye(2) * 0.5]),
                    domain=[[-6, 6], [-6, 6]], T=1.0)
        opts = {"mesh": "rectangle", "h": 0.5, "n": [32, 32], "nt": 10}
        if name == "sgm2d-amg":  # the multigrid preconditioner with reuse instead of the default one
            from .sweeps import AMG

            opts["ksp_options"] = dict(AMG)
        return p, opts
    if name == "otflow1d":
        p = pde.otflow(pde.Gaussian([1.5], [[0.25]]), domain=[[-6, 6]], T=1.0, nu=0.05)
        return p, {"n": 48, "nt": 12}
    if name == "lq1d":
        p = pde.lq(pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.5]], [[[0.3]], [[0.5]]]), domain=[[-6, 6]], T=1.0, nu=0.1)
        return p, {"n": 48, "nt": 12}
    if name == "wgf-obstacle":
        p = pde.wgf(pde.Gaussian([-3.0, 0.3], [[0.15, 0.0], [0.0, 0.15]]), domain=[[-6, 6], [-6, 6]], T=1.0)
        return p, {"mesh": "obstacle", "h": 0.5, "n": [32, 32], "nt": 10}
    raise ValueError(f"unknown case {name!r}; expected sgm2d, sgm2d-amg, otflow1d, lq1d or wgf-obstacle")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) % 2:
        print(__doc__)
        return 2
    from . import solve_fe

    for name, out in zip(argv[::2], argv[1::2]):
        p, opts = case(name)
        solve_fe(p, progress=False, npz_path=out, **opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
