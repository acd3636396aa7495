"""FE benchmark: 2D sgm on a DOLFINx box mesh, strong and weak scaling over MPI ranks.

    python -m benchmarks.bench_fe [--cells-per-dim 100] [--nt 100] [--ranks 2] [--repeat 2] [--quiet-wait 30]
                                  [--no-write]

Every run is a subprocess of this script (``mpirun -n R`` for R > 1) with the
same problem (sgm, two-component mixture on [-6, 6]², β = 1, T = 1) and the same
number of implicit Euler steps, for five preconditioners of the inner GMRES
solves: the default (``pde.fe._dolfinx_adapter.default_pc_options``: ILU(1) on
one rank, additive Schwarz with overlap 2 and ILU(1) per subdomain on 2 to
``AMG_MIN_RANKS`` − 1 ranks, each factorisation reused over up to 5 solves),
block-Jacobi/ILU(0) rebuilt for every solve (``pde.fe.sweeps.BJACOBI_ILU``),
additive Schwarz with overlap 1 and ILU(0) (``pde.fe.sweeps.ASM_ILU``),
algebraic multigrid with reuse (``pde.fe.sweeps.AMG``, the default from
``AMG_MIN_RANKS`` ranks on) and the same multigrid rebuilt for every solve.

* strong scaling: the mesh of ``--cells-per-dim`` n (2·n² right-angled
  triangles, 20 000 cells for n = 100) on 1, …, ``--ranks`` ranks; speed-up =
  serial wall / wall, against the same preconditioner serially and against
  the fastest serial configuration.
* weak scaling: cells ∝ ranks (n_R = round(n·√(R/R_max)), so the largest run is
  the strong-scaling mesh), the same nt; efficiency = serial wall / wall, both ways.

Each configuration runs ``--repeat`` times (wall times on a shared machine are
noisy; the tables give the fastest and list all; before each run the script
waits up to ``--quiet-wait`` seconds for other jobs to leave the cores idle and
records how many cores they kept busy); iteration counts are exact, serially
identical between repeats, in parallel dependent on the mesh partition. Per
run: wall time of the solve (mesh, assembly and output sampling excluded), HJB
Newton iterations, Krylov (GMRES) iterations, PC setups. Results are written to docs/benchmarks.md (section ``fe``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _problem():
    import numpy as np

    import pde

    return pde.sgm(pde.GaussianMixture([0.5, 0.5], [[-1.0, 1.0], [1.5, -1.0]], [np.eye(2) * 0.3, np.eye(2) * 0.5]),
                   domain=[[-6, 6], [-6, 6]], T=1.0)


#: the preconditioner configurations compared (name -> label)
CONFIGS = {"default": "default", "ilu": "block-Jacobi/ILU(0)", "asm": "ASM(overlap 1)/ILU(0)",
           "amg": "AMG, reused", "amg-rebuild": "AMG, rebuilt every solve"}


def _pc_options(pc: str) -> dict:
    from pde.fe.sweeps import AMG, ASM_ILU, BJACOBI_ILU

    if pc == "default":
        return {}
    if pc == "ilu":
        return dict(BJACOBI_ILU)
    if pc == "asm":
        return dict(ASM_ILU)
    if pc == "amg":
        return dict(AMG)
    return {k: v for k, v in AMG.items() if not k.startswith("pc_reuse")}  # amg-rebuild


def worker(n: int, nt: int, pc: str) -> dict:
    from mpi4py import MPI

    import pde
    from pde.fe import solve_fe

    p = _problem()
    s = solve_fe(p, n=[n, n], nt=nt, mesh="box", progress=False, ksp_options=_pc_options(pc))
    ex = pde.solve(p, "exact", n=[n, n], nt=nt)
    import numpy as np

    err = float(np.sqrt(s.cell_volume * ((s.rho - ex.rho) ** 2).sum((1, 2))).max())
    it = s.meta["iterations"]
    out = {"ranks": MPI.COMM_WORLD.size, "cells": s.meta["fe"]["cells"], "dofs": s.meta["fe"]["dofs"], "nt": nt,
           "solve_s": s.meta["timings"]["solve_s"], "setup_s": s.meta["timings"]["mesh_and_assembly_s"],
           "output_s": s.meta["timings"]["output_s"], "newton": it["newton_iterations"],
           "newton_max": it["newton_max_per_step"], "ksp": it["ksp_iterations"], "solves": it["linear_solves"],
           "pc_setups": it["pc_setups"], "config": pc,
           "mass_error": s.meta["mass_error"], "min_rho": s.meta["min_rho"], "rho_l2_error": err,
           "dolfinx": s.meta["fe"]["dolfinx"], "pc": s.meta["fe"]["pc_type"], "n": n}
    return out


def _busy_cores(sample_s: float = 1.0):
    """CPU cores kept busy (by other jobs: this script is idle meanwhile) over ``sample_s``, from
    /proc/stat; None where that file is missing."""
    import time

    def read():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    try:
        t0, i0 = read()
        time.sleep(sample_s)
        t1, i1 = read()
    except OSError:
        return None
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / max(1, t1 - t0))


def _wait_quiet(max_wait_s: float, threshold: float = 0.3):
    """Wait (up to ``max_wait_s``) until other jobs keep fewer than ``threshold`` cores busy; the load seen last."""
    import time

    t_end = time.monotonic() + max_wait_s
    while True:
        busy = _busy_cores()
        if busy is None or busy < threshold or time.monotonic() > t_end:
            return busy
        time.sleep(4.0)


def _run(ranks: int, n: int, nt: int, pc: str = "default") -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_fe", "--worker", "--cells-per-dim", str(n), "--nt", str(nt),
           "--pc", pc]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--allow-run-as-root", "--oversubscribe"] + cmd
    # yield instead of busy-polling while waiting for messages: on a shared, oversubscribed
    # machine a spinning rank steals the core its partner needs (measured 1.6x faster here)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMPI_MCA_mpi_yield_when_idle": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("BENCH ")][-1]
    return json.loads(line[6:])


_PC_NAMES = {"hypre/boomeramg": "hypre BoomerAMG", "gamg": "GAMG", "bjacobi": "block-Jacobi/ILU(0)"}


def _label(r) -> str:
    if r["config"] == "default":
        return ("ILU(1)" if r["pc"] == "bjacobi" else "ASM(overlap 2)/ILU(1)" if r["pc"] == "asm"
                else _PC_NAMES.get(r["pc"], r["pc"])) + ", reused ≤ 5 solves"
    if r["config"] in ("ilu", "asm"):
        return CONFIGS[r["config"]]
    return f"{_PC_NAMES.get(r['pc'], r['pc'])}, " + ("reused" if r["config"] == "amg" else "rebuilt every solve")


def _its(r) -> str:
    """Krylov iterations of the reported (fastest) run, and of the others where they differ."""
    others = [k for k in r["ksps"] if k != r["ksp"]]
    return f"{r['ksp']}" + (f" ({', '.join(map(str, others))})" if others else "")


def _table(rows: list, kind: str, default_of) -> list:
    word = "speed-up" if kind == "strong" else "efficiency"
    out = [f"| preconditioner | ranks | cells | dofs | solve wall (s), best | all runs (s) | time/step (ms) | "
           f"{word} vs same PC serial | {word} vs best serial | Newton its (max/step) | Krylov its | "
           "Krylov its vs same PC serial | PC setups | other jobs (cores busy) | mass error | ρ L2 error vs exact |",
           "|" + "---|" * 16]
    best_serial = min((b for b in rows if b["ranks"] == 1), key=lambda b: b["solve_s"])
    for r in rows:
        base = next(b for b in rows if b["ranks"] == 1 and b["config"] == r["config"])
        mark = " (default)" if default_of(r["ranks"]) == r["config"] else ""
        busy = "?" if r.get("busy") is None else f"{r['busy']:.1f}"  # sampled just before the reported run
        out.append(
            f"| {_label(r)}{mark} | {r['ranks']} | {r['cells']} | {r['dofs']} | {r['solve_s']:.2f} | "
            f"{', '.join(f'{w:.2f}' for w in r['walls'])} | {1e3 * r['solve_s'] / r['nt']:.1f} | "
            f"{base['solve_s'] / r['solve_s']:.2f} | {best_serial['solve_s'] / r['solve_s']:.2f} | "
            f"{r['newton']} ({r['newton_max']}) | {_its(r)} | {r['ksp'] / base['ksp']:.2f} | {r['pc_setups']} | "
            f"{busy} | "
            f"{r['mass_error']:.1e} | {r['rho_l2_error']:.2e} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells-per-dim", type=int, default=100)
    ap.add_argument("--nt", type=int, default=100)
    ap.add_argument("--ranks", type=int, default=2, help="largest number of MPI ranks (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest is reported (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="seconds to wait before each run for other jobs to leave the CPUs idle (default 30)")
    ap.add_argument("--pc", choices=list(CONFIGS), default="default", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        out = worker(a.cells_per_dim, a.nt, a.pc)
        from mpi4py import MPI

        if MPI.COMM_WORLD.rank == 0:
            print("BENCH " + json.dumps(out), flush=True)
        return 0
    n, nt = a.cells_per_dim, a.nt
    ranks = list(range(1, (a.ranks if shutil.which("mpirun") else 1) + 1))
    runs = {}

    def run(r, m, pc):
        if (r, m, pc) not in runs:
            reps = []
            for _ in range(max(1, a.repeat)):
                busy = _wait_quiet(a.quiet_wait)
                x = {**_run(r, m, nt, pc), "busy": busy}
                print(f"ranks {r} n {m} {pc} ({x['pc']}): {x['solve_s']:.2f} s, {x['ksp']} Krylov its, "
                      f"{x['pc_setups']} PC setups; other jobs {busy if busy is None else round(busy, 2)} cores",
                      flush=True)
                reps.append(x)
            # serial counts repeat exactly; in parallel the mesh partition of the graph partitioner may
            # differ between runs, and with it the counts, so all are kept
            best = min(reps, key=lambda x: x["solve_s"])
            runs[r, m, pc] = {**best, "walls": [x["solve_s"] for x in reps], "ksps": [x["ksp"] for x in reps]}
        return runs[r, m, pc]

    from pde.fe._dolfinx_adapter import AMG_MIN_RANKS

    def default_of(r):
        return "amg" if r >= AMG_MIN_RANKS else "default"

    weak_n = {r: max(2, round(n * (r / ranks[-1]) ** 0.5)) for r in ranks}
    strong, weak = [], []
    for pc in CONFIGS:
        strong += [run(r, n, pc) for r in ranks]
        weak += [run(r, weak_n[r], pc) for r in ranks]
    r0 = strong[0]
    lines = [
        f"FE (P1, DOLFINx {r0['dolfinx']}): sgm 2D mixture on [-6, 6]², box meshes, {nt} implicit Euler steps (one HJB "
        f"Newton sweep + one FP sweep, {r0['solves']} GMRES solves), GMRES rtol 1e-13. Inner preconditioners: "
        f"the default below {AMG_MIN_RANKS} ranks (ILU(1) on one rank, additive Schwarz with overlap 2 and ILU(1) "
        "per subdomain on more, each factorisation reused over up to 5 solves while a solve needs at most 1.5x "
        "the iterations of the first on it), block-Jacobi/ILU(0) and additive Schwarz with overlap 1 and "
        f"ILU(0) per subdomain, both rebuilt for every solve, algebraic multigrid "
        f"({_PC_NAMES.get(strong[-1]['pc'], strong[-1]['pc'])}) set up once and reused until a solve needs 1.5x the "
        f"iterations of the first one on it (the default from {AMG_MIN_RANKS} ranks on), and the same multigrid "
        f"rebuilt for every solve. Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
        f"shared with other jobs, so wall times are noisy: each configuration ran {max(1, a.repeat)} times, the "
        "fastest is reported and all are listed; before each run the script waited (up to "
        f"{a.quiet_wait:.0f} s) for the other jobs to leave the cores idle and records the cores they kept busy "
        "just before the reported run. Iteration counts are exact: serially identical between runs, on 2 "
        "ranks they depend on the mesh partition, which can differ between runs (other counts in brackets); "
        "`NUMBA_NUM_THREADS=1 python -m benchmarks.bench_fe`.",
        "",
        f"**Strong scaling** ({r0['cells']} cells / {r0['dofs']} dofs on every rank count):",
        "",
        *_table(strong, "strong", default_of),
        "",
        f"**Weak scaling** (cells ∝ ranks, about {weak[0]['cells'] // max(1, weak[0]['ranks'])} cells per rank; nt fixed):",
        "",
        *_table(weak, "weak", default_of),
    ]
    md = "\n".join(lines)
    print(md)
    if not a.no_write:
        from ._report import write_section

        print("written to", write_section("fe", md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
