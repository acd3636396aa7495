"""Bridge benchmarks (ρ(0) = ρ₀, ρ(T) = ρ₁): the ot route against FD planning; writes the "bridge" block of
docs/benchmarks.md.

Run: ``NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m benchmarks.bench_bridge [--quick]``.

ν = 0.3 (the 2D Schrödinger bridge of tests/test_fd_bridge.py): FD planning (Newton on φ(·, T) over
the HJB/FP sweeps, first order) at its affordable grids and ot (balanced Sinkhorn, exact in time) at
32² … 256², both against the closed form, in one process; the ratio is the FD time over the time ot
needs for an error at least as small. ν = 0 (``bridge-gaussian-2d`` and ``bridge-8gaussians-2d``): ot
only (the FD route covers ν > 0). Absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pde
import pde.fd.iterations
from benchmarks._report import machine_line
from compare.cases import get_case
from pde import exact


def _max_l1(sol, problem):
    cf = exact.closed_form(problem)
    pts = sol.grid().points()
    return max(float(np.abs(sol.rho[k] - cf.rho(pts, t)).sum() * np.prod(sol.h)) for k, t in enumerate(sol.t)
               if 0 < k < sol.t.size - 1)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _sb_problem():
    """The 2D Schrödinger bridge of tests/test_fd_bridge.py (ν = 0.3; correlated Gaussians, box ±4.5)."""
    S0 = np.array([[0.5, 0.15], [0.15, 0.45]])
    S1 = np.array([[0.45, -0.1], [-0.1, 0.55]])
    return pde.bridge(pde.Gaussian([-0.7, 0.3], S0), pde.Gaussian([0.7, -0.3], S1), domain=[[-4.5, 4.5]] * 2,
                      T=1.0, nu=0.3, name="sb-correlated-2d")


def bench_schrodinger(lines, quick):
    base = _sb_problem()
    nt = 8
    fd_sizes = [24] if quick else [24, 32, 40]
    ot_sizes = [32, 64] if quick else [32, 64, 128, 256]
    # FD's 2D Newton stalls near max|ρ(T) − ρ₁| ~ 1e-6 (docs/fd.md): tol 1e-5, four orders below its L1 error
    fd_tol = 1e-5
    lines.append(f"### Schrödinger bridge (ν = 0.3, correlated Gaussians on [−4.5, 4.5]², nt = {nt}): "
                 f"FD planning (tol {fd_tol:g} on max|ρ(T) − ρ₁|) vs ot, both against the closed form\n")
    lines.append("| route | n² | wall [s] | max L1(ρ_t) over interior levels | status |")
    lines.append("|---|---|---|---|---|")
    try:  # compile the FD kernels (a coarse grid may stall: only the compilation matters here)
        pde.solve(base.with_grid(n=(16, 16), nt=2), "fd", tol=fd_tol, check_resolution=False, progress=False)
    except pde.fd.iterations.FDConvergenceError:
        pass
    pde.solve(base.with_grid(n=(32, 32), nt=2), "ot")
    fd = []
    for n in fd_sizes:
        p = base.with_grid(n=(n, n), nt=nt)
        try:
            sol, wall = _timed(lambda: pde.solve(p, "fd", tol=fd_tol, check_resolution=False, progress=False))
        except pde.fd.iterations.FDConvergenceError as exc:
            lines.append(f"| fd | {n}² | — | — | did not converge: {str(exc)[:100]} |")
            print(lines[-1], flush=True)
            continue
        err = _max_l1(sol, p)
        fd.append((n, wall, err))
        lines.append(f"| fd | {n}² | {wall:.1f} | {err:.2e} | {sol.status} |")
        print(lines[-1], flush=True)
    ot = []
    for n in ot_sizes:
        p = base.with_grid(n=(n, n), nt=nt)
        sol, wall = _timed(lambda: pde.solve(p, "ot"))
        err = _max_l1(sol, p)
        ot.append((n, wall, err))
        lines.append(f"| ot | {n}² | {wall:.2f} | {err:.2e} | {sol.status} |")
        print(lines[-1], flush=True)
    if not fd:
        lines.append("\nNo FD grid converged: no equal-accuracy comparison.\n")
        return
    if len(fd) > 1:
        order = np.polyfit(np.log([1.0 / f[0] for f in fd]), np.log([f[2] for f in fd]), 1)[0]
        lines.append(f"\nFD's observed order over {[f[0] for f in fd]}: {order:.2f}.")
    n_fd, t_fd, e_fd = fd[-1]
    better = [o for o in ot if o[2] <= e_fd]
    if better:
        n_ot, t_ot, e_ot = min(better, key=lambda o: o[1])
        lines.append(f"\nAt equal accuracy: FD's finest grid here ({n_fd}², L1 {e_fd:.1e}) took {t_fd:.1f} s; ot "
                     f"reaches {e_ot:.1e} at {n_ot}² in {t_ot:.2f} s, **{t_fd / t_ot:.0f}× faster** for a smaller "
                     f"error. At 128² and 256² ot sits at the box's floor; FD would need an h about "
                     f"{e_fd / max(ot[-1][2], 1e-300):.0e} times smaller, at first order, to match it.\n")
    else:
        lines.append("\nNo ot grid reached FD's error (unexpected: see the table).\n")


def bench_brenier(lines, quick):
    sizes = [128] if quick else [128, 256]
    lines.append("### ν = 0 bridges by ot (the Brenier map; no FD route for ν = 0)\n")
    lines.append("| case | n² | wall [s] | status | marginal error | push at T vs ρ₁ | max L1(ρ_t) vs closed form | "
                 "kinetic / (λ/2T)W₂² − 1 |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name in ("bridge-gaussian-2d", "bridge-8gaussians-2d"):
        case = get_case(name)
        for n in sizes:
            p = case.problem(n=(n, n))  # the case's time levels (nt = 8 and 4)
            sol, wall = _timed(lambda: pde.solve(p, "ot", **case.options_for("ot")))
            m = sol.meta
            if name == "bridge-gaussian-2d":
                l1 = f"{_max_l1(sol, p):.1e}"
                w2 = p.lam / (2 * p.T) * exact.closed_form(p).w2sq()
                ke = f"{m['kinetic_energy'] / w2 - 1:.1e}"
            else:
                l1, ke = "no closed form", "—"
            lines.append(f"| `{name}` | {n}² | {wall:.2f} | {sol.status} | {m['marginal_error_1']:.1e} | "
                         f"{m['marginal_error_2']:.1e} | {l1} | {ke} |")
            print(lines[-1], flush=True)
    lines.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    lines = [f"## Bridges: ot vs FD planning (`python -m benchmarks.bench_bridge{' --quick' if args.quick else ''}`)\n",
             f"{machine_line()}, shared with other jobs, so times are upper bounds; {time.strftime('%Y-%m-%d')}.\n"]
    for fn in (bench_schrodinger, bench_brenier):
        fn(lines, args.quick)
    text = "\n".join(lines)
    if args.no_write:
        print(text)
        return 0
    from benchmarks._report import write_section

    path = write_section("bridge", text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
