"""One 8-row sweep under the three executors, side by side in one run.

Run: ``python -m benchmarks.bench_sweep [--quick]``.

The sweep is 2 cases (otflow-gaussian-1d, sgm-mixture-1d) × 2 budgets × 2 seeds of ``verify``
(no animation, no truth-error estimate). A warm-up run fills a shared truth cache and numba's
on-disk cache first, so that every executor does the same work: train, evaluate and report
each row. Each executor runs ``mfglab sweep`` in a fresh process and output folder:

- ``serial``;
- ``process --jobs 2`` (one torch/numba thread per worker);
- ``mpi``: ``mpirun -n 3 python -m mpi4py.futures -m compare.cli sweep ... --executor mpi``
  (one manager, two workers), where mpirun and mpi4py exist.

Reported per executor: wall time of the whole command (start-up, rows, summary), the sum of
the rows' own wall times, speed-up against serial, the busy fraction Σ rows / (wall × workers),
and the overhead per row, (wall × workers − Σ rows) / rows: process start-up, imports,
scheduling, idle workers at the end and the summary, spread over the rows. Per-row numbers
are checked identical across executors (they are seeded). Results: docs/benchmarks.md
(section ``sweep``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
[sweep]
kind = "verify"
metrics = ["l1.at_T", "w2.at_T"]
truth_error = false
cache = "{cache}"

[axes]
case = ["otflow-gaussian-1d", "sgm-mixture-1d"]
budget = {budgets}
seed = [0, 1]
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "MFGLAB_TORCH_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_mpi_yield_when_idle": "1"}


def _run(cmd, out: Path) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {res.returncode}: {res.stderr[-1500:]}")
    s = json.loads((out / "summary.json").read_text())
    rows = s["rows"]
    return {"wall": wall, "sum_rows": sum(r["wall_s"] for r in rows), "n": len(rows),
            "values": {r["id"]: r["values"] for r in rows}, "workers": sorted({r["worker"] for r in rows})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="budgets 3 and 6 instead of 100 and 200 (smoke run)")
    args = ap.parse_args(argv)
    budgets = "[3, 6]" if args.quick else "[100, 200]"
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        f = tmp / "bench.toml"
        f.write_text(SWEEP.format(cache=tmp / "cache", budgets=budgets))
        cli = [sys.executable, "-m", "compare.cli", "sweep", str(f)]
        _run(cli + ["--out", str(tmp / "warm")], tmp / "warm")  # truths, numba cache, page cache
        results = {}
        results["serial"] = (1, _run(cli + ["--out", str(tmp / "serial")], tmp / "serial"))
        results["process --jobs 2"] = (2, _run(cli + ["--out", str(tmp / "proc"), "--executor", "process",
                                                      "--jobs", "2"], tmp / "proc"))
        mpi_note = ""
        try:
            import mpi4py  # noqa: F401

            have_mpi = shutil.which("mpirun") is not None
        except ImportError:
            have_mpi = False
        if have_mpi:
            cmd = ["mpirun", "-n", "3", "--allow-run-as-root", "--oversubscribe", sys.executable, "-m",
                   "mpi4py.futures", "-m", "compare.cli", "sweep", str(f), "--out", str(tmp / "mpi"),
                   "--executor", "mpi"]
            results["mpi (mpirun -n 3)"] = (2, _run(cmd, tmp / "mpi"))
        else:
            mpi_note = "\n\nmpi: not measured (mpirun or mpi4py missing on this machine)."
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = results["serial"][1]
    same = all(r["values"] == base["values"] for _, r in results.values())
    lines = [f"## Sweep executors (`python -m benchmarks.bench_sweep{' --quick' if args.quick else ''}`)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other jobs (wall times are "
             f"upper bounds); {time.strftime('%Y-%m-%d')}. Sweep: 2 cases × budgets {budgets} × 2 seeds of "
             "`verify` (8 rows), truths from a pre-filled cache, one torch/numba thread per worker.", "",
             "| executor | workers | wall [s] | Σ row wall [s] | speed-up vs serial | busy fraction | "
             "overhead per row [s] |", "|---|---|---|---|---|---|---|"]
    for name, (k, r) in results.items():
        busy = r["sum_rows"] / (r["wall"] * k)
        over = (r["wall"] * k - r["sum_rows"]) / r["n"]
        lines.append(f"| {name} | {k} | {r['wall']:.1f} | {r['sum_rows']:.1f} | {base['wall'] / r['wall']:.2f} | "
                     f"{busy:.2f} | {over:.2f} |")
    lines += ["", f"Per-row metrics identical across the executors: **{'yes' if same else 'NO'}**." + mpi_note,
              "Σ row wall grows with the workers when two rows share the 2 cores with other jobs; the overhead "
              "per row includes the start-up of the command (imports: ≈ 3 s once per process) and the summary."]
    text = "\n".join(lines)
    print(text)
    sys.path.insert(0, str(ROOT))
    from benchmarks._report import write_section

    path = write_section("sweep", text)
    print(f"wrote {path}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
