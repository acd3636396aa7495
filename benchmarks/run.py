"""``make bench``: every benchmark in one go, each in its own process.

Each script writes its block of docs/benchmarks.md itself (ratios against a
baseline measured in the same process); this runner only sequences them and
reports which failed. ``--quick`` passes the scripts' smoke sizes through.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

#: module, extra arguments (full run), extra arguments (quick run)
BENCHMARKS = [
    ("benchmarks.bench_fd", [], ["--quick"]),
    ("benchmarks.bench_ot_entropic", [], ["--quick"]),
    ("benchmarks.bench_fe", [], ["--cells-per-dim", "40", "--nt", "20"]),
    ("benchmarks.bench_ot", [], ["--quick"]),
    ("benchmarks.bench_bridge", [], ["--quick"]),
    ("benchmarks.bench_sweep", [], ["--quick"]),
    ("benchmarks.bench_neural", ["--quick"], ["--quick", "--only", "speed"]),  # CPU sizes; GPU: make gpu-check
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    ap.add_argument("--only", nargs="*", default=None, help="module names to run (e.g. bench_fd)")
    args = ap.parse_args(argv)
    failed = []
    for mod, full, quick in BENCHMARKS:
        if args.only and mod.split(".")[-1] not in args.only:
            continue
        cmd = [sys.executable, "-m", mod, *(quick if args.quick else full)]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {mod}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(mod)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("results: docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
