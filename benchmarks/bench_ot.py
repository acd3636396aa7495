"""Static OT route benchmarks; writes the "ot" section of docs/benchmarks.md.

Run: ``NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m benchmarks.bench_ot [--quick]``.
Baselines run in the same process: the NumPy twin of the Legendre kernel,
and the FD route on the same problem (side by side, L1 against the closed
form beside each time). Absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pde
from pde.exact import closed_form
from benchmarks._report import machine_line

BOX2 = [[-6.0, 6.0], [-6.0, 6.0]]


def _t(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _gauss(n, nt=2):
    return pde.otflow(pde.Gaussian([1.0, -0.5], [[0.5, 0.0], [0.0, 0.3]]), domain=BOX2, T=1.0, lam=1.0,
                      n=(n, n), nt=nt, name="otflow-gaussian-2d")


def _l1(sol, prob, k):
    grid = prob.grid()
    return float(grid.integrate(np.abs(sol.rho[k] - closed_form(prob).rho(grid.points(), grid.t[k]))))


def bench_kernel(lines):
    from pde.ot.legendre import legendre_rows, legendre_rows_np

    rng = np.random.default_rng(0)
    F = np.cumsum(rng.normal(size=(256, 256)), axis=1) + 0.01 * np.arange(256) ** 2
    legendre_rows(F, 0.0, 0.1, -5.0, 0.05)  # compile / load cache
    reps = 20
    _, tk = _t(lambda: [legendre_rows(F, 0.0, 0.1, -5.0, 0.05) for _ in range(reps)])
    _, tn = _t(lambda: legendre_rows_np(F, 0.0, 0.1, -5.0, 0.05))
    lines.append("### Legendre kernel (256 rows × 256 points, refined) vs its NumPy twin (brute force)\n")
    lines.append("| kernel | Numba [ms] | NumPy twin [ms] | speed-up |\n|---|---|---|---|")
    lines.append(f"| `legendre_rows` | {1e3 * tk / reps:.2f} | {1e3 * tn:.1f} | {tn / (tk / reps):.0f}× |\n")


def bench_otflow_2d(lines, quick):
    lines.append("### 2D Gaussian otflow (ν = 0): accuracy, iterations, time\n")
    lines.append("Case data (π = N((1, −0.5), diag(0.5, 0.3)), γ = N(0, I), T = λ = 1, box [−6, 6]²), nt = 2. "
                 "`its` lists the polish iterations per level of the warm-start hierarchy; `s/it` is the finest "
                 "level's time per iteration (two Jacobian residuals and one DCT pair per iteration). The polish "
                 "starts from the moment-matched Gaussian step, exact here, so the iterations only remove "
                 "discretisation residue; the mixture below is the case that exercises the iteration.\n")
    lines.append("| n | L1 ρ(T/2) | L1 ρ(T) | its per level | wall [s] | solve [s] | time levels [s] | s/it (finest) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    pde.solve(_gauss(64), "ot")  # warm the kernels
    for n in (64, 128) if quick else (64, 128, 256):
        prob = _gauss(n)
        sol, wall = _t(lambda: pde.solve(prob, "ot"))
        lv = sol.meta["levels"]
        its = "/".join(str(v["polish_iterations"]) for v in lv)
        s_it = lv[-1]["wall_s"] / max(1, lv[-1]["polish_iterations"])
        tm = sol.meta["timings"]
        lines.append(f"| {n}² | {_l1(sol, prob, 1):.1e} | {_l1(sol, prob, 2):.1e} | {its} | {wall:.2f} | "
                     f"{tm['solve_s']:.2f} | {tm['rho_levels_s'] + tm['phi_levels_s']:.2f} | "
                     f"{f'{1e3 * s_it:.1f} ms' if lv[-1]['polish_iterations'] else '–'} |")
    for n in (128,) if quick else (128, 256):
        prob = _gauss(n, 24)
        sol, wall = _t(lambda: pde.solve(prob, "ot"))
        worst = max(_l1(sol, prob, k) for k in range(25))
        tm = sol.meta["timings"]
        lines.append(f"| {n}²×24 | max over the 25 levels: {worst:.1e} | | | {wall:.2f} | {tm['solve_s']:.2f} | "
                     f"{tm['rho_levels_s'] + tm['phi_levels_s']:.2f} | |")


def bench_mixture_2d(lines, quick):
    """otflow-mixture-2d (no closed form): iterations and time per grid, L1 against the finest grid."""
    from compare.cases import get_case

    from pde.ot.push import Interpolant

    case = get_case("otflow-mixture-2d")
    ns = (80, 160) if quick else (80, 160, 320)
    sols, rows = {}, []
    for n in ns:
        sol, wall = _t(lambda: pde.solve(case.problem(n=(n, n), nt=2), "ot"))
        sols[n] = sol
        lv = sol.meta["levels"]
        rows.append((n, "/".join(str(v["polish_iterations"]) for v in lv), wall, sol.meta["certificates"]["marginal_l1"],
                     sol.status, lv[-1]["wall_s"] / max(1, lv[-1]["polish_iterations"])))
    ref = sols[ns[-1]]
    lines.append(f"### otflow-mixture-2d (two-component mixture, no closed form): iterations, time, distance to {ns[-1]}²\n")
    lines.append("| n | its per level | marginal error | status | L1 ρ(T/2) vs finest | L1 ρ(T) vs finest | wall [s] | s/it (finest) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for n, its, wall, marg, status, s_it in rows:
        sol = sols[n]
        mesh = np.stack(np.meshgrid(*sol.axes, indexing="ij"))
        d = [float(np.abs(sol.rho[k] - Interpolant(ref.rho[k], ref.axes)(mesh)).sum() * sol.cell_volume) if n != ns[-1]
             else float("nan") for k in (1, 2)]
        lines.append(f"| {n}² | {its} | {marg:.1e} | {status} | {d[0]:.1e} | {d[1]:.1e} | {wall:.2f} | {1e3 * s_it:.1f} ms |")
    N = np.array([r[0] ** 2 for r in rows], float)
    lines.append(f"\nCost per polish iteration ∝ N^{np.polyfit(np.log(N), np.log([r[5] for r in rows]), 1)[0]:.2f} over "
                 f"{ns[0]}² … {ns[-1]}².\n")


def bench_fd_side_by_side(lines, quick):
    n_fd, nt_fd = (32, 8) if quick else (40, 10)
    prob_fd = _gauss(n_fd, nt_fd)
    fd, t_fd = _t(lambda: pde.solve(prob_fd, "fd", check_resolution=False))
    prob_ot = _gauss(n_fd, nt_fd)
    ot, t_ot = _t(lambda: pde.solve(prob_ot, "ot"))
    ot128, t_ot128 = _t(lambda: pde.solve(_gauss(128, nt_fd), "ot"))
    lines.append("### ot and FD side by side (same process, same 2D Gaussian otflow)\n")
    lines.append("| route | grid | L1 ρ(T/2) | L1 ρ(T) | wall [s] |\n|---|---|---|---|---|")
    k2 = nt_fd // 2
    lines.append(f"| fd | {n_fd}²×{nt_fd} | {_l1(fd, prob_fd, k2):.1e} | {_l1(fd, prob_fd, nt_fd):.1e} | {t_fd:.1f} |")
    lines.append(f"| ot | {n_fd}²×{nt_fd} | {_l1(ot, prob_ot, k2):.1e} | {_l1(ot, prob_ot, nt_fd):.1e} | {t_ot:.1f} |")
    p128 = _gauss(128, nt_fd)
    lines.append(f"| ot | 128²×{nt_fd} | {_l1(ot128, p128, k2):.1e} | {_l1(ot128, p128, nt_fd):.1e} | {t_ot128:.1f} |")
    lines.append(f"\nOn the same grid ot is {t_fd / t_ot:.0f}× faster than FD and more accurate; FD's own reported "
                 "58²×16 solve of this case (L1 4.7e-2 in 71 s, docs/fd.md) was not rerun here.\n")


def bench_wgf(lines, quick):
    from compare.cases import get_case

    n = 64 if quick else 128
    prob = get_case("wgf-gaussian-2d").problem(n=(n, n), nt=10)
    sol, wall = _t(lambda: pde.solve(prob, "ot"))
    grid = prob.grid()
    cf = closed_form(prob)
    l1 = [float(grid.integrate(np.abs(sol.rho[k] - cf.rho(grid.points(), grid.t[k])))) for k in (5, 10)]
    its = [c["iterations"] for c in sol.meta["certificates"]["steps"]]
    lines.append(f"### wgf: JKO chain of {sol.meta['jko_steps']} steps (τ = {sol.meta['jko_tau']:g}) at {n}²\n")
    lines.append("| grid | wall [s] | iterations per step | L1 vs gradient flow at T/2 | at T |\n|---|---|---|---|---|")
    lines.append(f"| {n}² | {wall:.1f} | {min(its)}–{max(its)} | {l1[0]:.1e} | {l1[1]:.1e} |")
    lines.append("\nThe L1 distance to the gradient flow's closed form is the chain's O(τ) error, not the grid's.\n")


def bench_entropic(lines, quick):
    """ν > 0 is timed by ``benchmarks.bench_ot_entropic`` (its own block, "ot-entropic"); point to it."""
    lines.append("### ν > 0 (entropic route)\n\nSee the `ot-entropic` block below (`python -m benchmarks.bench_ot_entropic`).\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    lines = [f"{machine_line()}; times taken on a shared machine under load.{' Quick sizes.' if args.quick else ''}\n"]
    for fn in (bench_kernel, lambda l: bench_otflow_2d(l, args.quick), lambda l: bench_mixture_2d(l, args.quick),
               lambda l: bench_fd_side_by_side(l, args.quick),
               lambda l: bench_wgf(l, args.quick), lambda l: bench_entropic(l, args.quick)):
        fn(lines)
        print("\n".join(lines[-8:]), flush=True)
    text = "## Static OT route (`method=\"ot\"`)\n\n" + "\n".join(lines)
    if not args.no_write:
        from benchmarks._report import write_section

        path = write_section("ot", text)
        print(f"wrote {path}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
