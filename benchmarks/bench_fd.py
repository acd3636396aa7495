"""FD solver benchmarks; writes the "fd" section of docs/benchmarks.md.

Run: ``python -m benchmarks.bench_fd [--quick]``. Ratios are against
baselines run in the same process (NumPy twins, the peer package
``mfgsolver`` when installed); absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import pde
from pde.problem import LocalCoupling


def _t(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_kernels(lines):
    from pde.fd import build_discretization
    from pde.fd import kernels as K
    from pde.fd import reference as R

    prob = pde.otflow(pde.Gaussian([0.5], [[0.5]]), domain=[[-5.5, 5.5]], nu=0.3)
    d = build_discretization(prob, n=400, nt=400)
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((d.nt + 1, d.N))
    rho = rng.random((d.nt + 1, d.N))
    src = rng.standard_normal((d.nt, d.N))
    oh, of = np.empty((d.nt, d.N)), np.empty((d.nt, d.N))
    args = (d.nbp, d.nbm, d.ih, d.bp, d.bm, d.dt, d.nu, d.lam)
    K.coupled_residual(phi, rho, src, *args, oh, of)  # compile / load cache
    reps = 5
    _, tk = _t(lambda: [K.coupled_residual(phi, rho, src, *args, oh, of) for _ in range(reps)])
    _, tn = _t(lambda: [R.coupled_residual_np(phi, rho, src, *args) for _ in range(reps)])
    d.stencil_jacobian_coo(phi, rho)
    _, tkj = _t(lambda: d.stencil_jacobian_coo(phi, rho))
    _, tnj = _t(lambda: R.coupled_jacobian_np(phi, rho, *args))
    lines.append("### Numba kernels vs NumPy twins (1D, 400 × 400 space-time nodes)\n")
    lines.append("| kernel | Numba [ms] | NumPy [ms] | speed-up |\n|---|---|---|---|")
    lines.append(f"| residual | {1e3 * tk / reps:.1f} | {1e3 * tn / reps:.1f} | {tn / tk:.0f}× |")
    lines.append(f"| Jacobian (COO) | {1e3 * tkj:.1f} | {1e3 * tnj:.1f} (CSR) | {tnj / tkj:.0f}× |\n")


def _sgm1d():
    return pde.sgm(pde.GaussianMixture([0.4, 0.6], [[-1.5], [1.0]], [[[0.25]], [[0.36]]]), domain=[[-6.0, 6.0]])


def bench_sizes(lines, quick):
    lines.append("### 1D Newton solves\n")
    lines.append("| problem | n | nt | unknowns | Newton its | wall [s] | compile [s] | solve or per-iteration [s] | mass error |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    sizes = [(125, 125), (250, 250), (500, 500)] + ([] if quick else [(1000, 1000)])
    unknowns, per_it = [], []
    for n, nt in sizes:
        sol, wall = _t(lambda: pde.solve(_sgm1d(), "fd", n=n, nt=nt, progress=False, sgm_eta=False))
        tm = sol.meta["timings"]
        # the game decouples: the initial backward-HJB/forward-FP sweep already solves it, so Newton
        # stops at iteration 0 (residual below tol); the cost measured is the whole solve
        pit = tm["solve_s"]
        unknowns.append(2 * n * nt)
        per_it.append(pit)
        lines.append(f"| sgm mixture | {n} | {nt} | {2 * n * nt:,} | {sol.meta['iterations']} | {wall:.2f} | "
                     f"{tm['compile_s']:.2f} | {pit:.3f} | {sol.meta['mass_error']:.1e} |")
    if len(unknowns) >= 3:
        slope = np.polyfit(np.log(unknowns), np.log(per_it), 1)[0]
        lines.append(f"\nCost growth (sgm rows): solve time ∝ unknowns^{slope:.2f} (target ≤ 1.3).\n")


class _TimeLimit(Exception):
    pass


def _limited(fn, seconds):
    """fn() stopped by SIGALRM after ``seconds`` (raises _TimeLimit); no limit when seconds is None."""
    import signal

    if not seconds:
        return fn()

    def _raise(signum, frame):
        raise _TimeLimit

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(int(seconds))
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _previous_path(n, nt):
    """Options that reproduce the solver before grid continuation and the banded Schur solver:
    coupling homotopy on the grid itself, SuperLU up to 20 000 unknowns, else block-triangular GMRES."""
    return {"nested": False, "linear_solver": "direct" if 2 * n * nt <= 20_000 else "gmres"}


def bench_otflow_1d(lines, quick, before_limit):
    """The default case (otflow-gaussian-1d) by the previous and the current default path, same process."""
    from compare.cases import get_case
    from pde.exact import closed_form

    case = get_case("otflow-gaussian-1d")
    prob = case.problem()
    cf = closed_form(prob)
    for ls in ("direct", "gmres", "auto"):  # compile / load every kernel outside the timings
        pde.solve(prob, "fd", n=50, nt=20, progress=False, linear_solver=ls, nested=False)
    pde.solve(prob, "fd", n=128, nt=64, progress=False)
    lines.append("### 1D otflow: previous vs current solver path\n")
    lines.append(f"Case `{case.name}` (π = N(1.5, 0.5²) → γ = N(0, 1), λ = T = 1, ν = 0, box [-6, 6]), tol = 1e-10, "
                 "both paths in this process (kernels compiled beforehand). *Previous*: options "
                 "`nested=False` and `linear_solver` = SuperLU (≤ 20 000 unknowns) or block-triangular GMRES, "
                 "i.e. the coupling homotopy on the grid itself as before; *current*: the defaults (grid "
                 "continuation from coarser grids, banded terminal-Schur CG). Newton iterations: all stages / "
                 "levels; for the current path also on the finest grid and the work in finest-grid iterations "
                 "(each level's iterations × its size). Walls: best of the repeats shown.\n")
    lines.append("| n | nt | previous: Newton its | previous: wall [s] | current: Newton its (finest, work) | "
                 "current: wall [s] | speed-up | L1(ρ_T) previous | L1(ρ_T) current | max Δρ | max Δφ |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    sizes = [(100, 50, 3), (200, 100, 2)] + ([] if quick else [(1000, 1000, 1)])
    for n, nt, reps in sizes:
        pts = prob.grid(n=n, nt=nt).points()

        def l1(sol):
            return float(np.abs(sol.rho[-1] - cf.rho(pts, prob.T)).sum() * sol.cell_volume)

        new, t_new = None, np.inf
        for _ in range(reps):
            sol, wall = _t(lambda: pde.solve(prob, "fd", n=n, nt=nt, progress=False))
            new, t_new = sol, min(t_new, wall)
        limit = before_limit if n * nt > 100_000 else None
        old, t_old, seen = None, np.inf, {"its": 0, "res": np.nan}

        def count(it, res, info):
            if it > 0:
                seen["its"] += 1
            seen["res"] = res

        for _ in range(reps):
            try:
                sol, wall = _t(lambda: _limited(lambda: pde.solve(prob, "fd", n=n, nt=nt, progress=count,
                                                                  **_previous_path(n, nt)), limit))
                old, t_old = sol, min(t_old, wall)
            except _TimeLimit:
                break
        m = new.meta
        if m.get("levels"):
            new_its = f"{m['total_newton_iterations']} ({m['levels'][-1]['iterations']}, {m['work']:.1f})"
        else:  # too small for a coarse level: the homotopy on the grid itself
            new_its = f"{m['total_newton_iterations']} (one grid: {m.get('continuation')})"
        if old is None:
            lines.append(f"| {n} | {nt} | > {seen['its']} (stopped, residual {seen['res']:.1e}) | > {limit} | "
                         f"{new_its} | {t_new:.2f} | > {limit / t_new:.0f}× | — | {l1(new):.4e} | — | — |")
        else:
            lines.append(f"| {n} | {nt} | {old.meta['total_newton_iterations']} | {t_old:.2f} | {new_its} | "
                         f"{t_new:.2f} | {t_old / t_new:.1f}× | {l1(old):.4e} | {l1(new):.4e} | "
                         f"{np.abs(old.rho - new.rho).max():.1e} | {np.abs(old.phi - new.phi).max():.1e} |")
        print(lines[-1], flush=True)
    lines.append("")


def bench_2d(lines, quick):
    n, nt = (64, 32) if quick else (128, 64)
    prob = pde.sgm(pde.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2) * 0.5, np.eye(2) * 0.6]),
                   domain=[[-5.0, 5.0]] * 2)
    sol, wall = _t(lambda: pde.solve(prob, "fd", n=n, nt=nt, progress=False, sgm_eta=False))
    its = max(1, sol.meta["iterations"])
    lines.append("### 2D\n")
    lines.append(f"sgm mixture, {n}×{n} nodes, {nt} steps ({2 * n * n * nt:,} unknowns): wall {wall:.1f} s, "
                 f"Newton iterations {sol.meta['iterations']}, time per iteration "
                 f"{(sol.meta['timings']['jacobian_s'] + sol.meta['timings']['linear_solve_s']) / its:.2f} s, "
                 f"mass error {sol.meta['mass_error']:.1e}.")
    n2, nt2 = (28, 6) if quick else (40, 10)
    prob2 = pde.otflow(pde.Gaussian([0.8, 0.0], [[0.64, 0.0], [0.0, 1.0]]), domain=[[-5.5, 5.5]] * 2)
    sol2, wall2 = _t(lambda: pde.solve(prob2, "fd", n=n2, nt=nt2, progress=False))
    lines.append(f"otflow Gaussian, {n2}×{n2}, {nt2} steps: wall {wall2:.1f} s, "
                 f"{len(sol2.meta['residual_history']) - 1} Newton iterations over all continuation stages "
                 f"({sol2.meta.get('continuation')}).\n")


def _peer_problem(kappa=1.0, nu=0.3):
    return pde.custom(pde.Gaussian([0.5], [[0.5]]), domain=[[-4.0, 4.0]], T=1.0, nu=nu,
                      coupling=LocalCoupling(lambda x, r, t: kappa * r, lambda x, r, t: kappa * np.ones_like(r)),
                      terminal=lambda x: 0.5 * (x[..., 0] - 1.0) ** 2, boundary="periodic")


def bench_peer(lines, quick):
    lines.append("### Peer: mfgsolver (policy iteration, NumPy/SciPy)\n")
    try:
        import mfgsolver
    except ImportError:
        lines.append("mfgsolver is not installed: peer comparison skipped (`pip install mfgsolver==0.4.4`).\n")
        print("mfgsolver not installed: skipping the peer comparison")
        return
    import contextlib
    import io

    n, nt = (100, 100) if quick else (200, 200)
    kappa, nu = 1.0, 0.3
    prob = _peer_problem(kappa, nu)
    grid = prob.grid(n=n, nt=nt)
    h = grid.h[0]
    lo, hi = grid.domain[0]

    class Peer(mfgsolver.MfgBase):
        # same periodic MFG: H = |p|²/2 - f, f = κ m, u(T) = (x-1)²/2, m0 = N(0.5, 0.5);
        # nodes shifted by h/2 so they coincide with the cell centres of pde.grid
        def M0_func(self, x):
            return prob.rho0.pdf(x[:, None])

        def UT_func(self, x):
            return 0.5 * (x - 1.0) ** 2

        def F1_func(self, m):
            return np.ones_like(m)

        def F2_func(self, m):
            return kappa * m

    ours, t_ours = _t(lambda: pde.solve(prob, "fd", n=n, nt=nt, progress=False, tol=1e-10))
    peer = Peer(nv=nu, x1=lo + h / 2, x2=hi + h / 2, Nx=n, Nt=nt, T=1.0, bc="periodic")
    with contextlib.redirect_stdout(io.StringIO()):
        _, t_peer = _t(lambda: peer.solve(maxit=30))
    assert np.allclose(peer.xs, grid.axes[0])
    d_rho = float(np.abs(peer.M[-1] - ours.rho[-1]).max())
    d_phi = float(np.abs(peer.U[0] - ours.phi[0]).max())
    lines.append(f"1D periodic viscous MFG (ν = {nu}, f = {kappa}ρ, g = (x-1)²/2), n = {n}, nt = {nt}, same grid:\n")
    lines.append("| solver | iterations | wall [s] |\n|---|---|---|")
    lines.append(f"| mfglab fd (Newton) | {ours.meta['iterations']} | {t_ours:.2f} |")
    lines.append(f"| mfgsolver 0.4.4 (policy iteration, 30 its) | 30 | {t_peer:.2f} |")
    lines.append(f"\nSpeed ratio {t_peer / t_ours:.1f}× (target ≥ 10×). Agreement: max|ρ_T - ρ_T^peer| = {d_rho:.2e}, "
                 f"max|φ_0 - u_0^peer| = {d_phi:.2e} (the peer's last policy-iteration residual: "
                 f"{peer.diff_M[-1]:.1e}).\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--before-limit", type=int, default=600,
                    help="seconds allowed to the previous otflow path at n = nt = 1000 (default 600)")
    args = ap.parse_args(argv)
    lines = [f"## FD solver (`python -m benchmarks.bench_fd{' --quick' if args.quick else ''}`)\n",
             f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores (shared), "
             f"{time.strftime('%Y-%m-%d')}.\n"]
    for fn in (bench_kernels, lambda l: bench_sizes(l, args.quick),
               lambda l: bench_otflow_1d(l, args.quick, args.before_limit), lambda l: bench_2d(l, args.quick),
               lambda l: bench_peer(l, args.quick)):
        fn(lines)
        print("\n".join(lines[-3:]), flush=True)
    from benchmarks._report import write_section

    path = write_section("fd", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
