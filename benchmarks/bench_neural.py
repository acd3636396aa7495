"""Benchmarks of the neural flows (results go to docs/benchmarks.md).

    python -m benchmarks.bench_neural            # full sizes (meant for a GPU, < 5 min on an H100)
    python -m benchmarks.bench_neural --quick    # small sizes for a CPU
    python -m benchmarks.bench_neural --smoke    # tiny sizes: checks that every section runs (tests)

1. OT-Flow training speed in 2D (8 Gaussians → N(0, I)): batch 4096, 8 RK4
   steps, width 32, 2 ResNet layers (OT-Flow's toy defaults), float32 and
   float64, the CUDA-graph fast path against the eager path in the same run.
   Reference: OT-Flow's own toy trainer measured 148 ms/step (float32) and
   160 ms/step (float64) on an H100 80GB (torch 2.11).
2. Time until OT-Flow reaches L1(ρ_T, truth) ≤ 0.05 on a 2D Gaussian otflow
   case (closed form) and on the comparison suite's 2D Gaussian-mixture case
   `otflow-mixture-2d` (truth: the FD solution on the case grid).
3. HJB-regularised vs plain score model on the 2D checkerboard and
   8 Gaussians, same network, steps, batches (seeds 0, 1, 2): KL(η_ε‖ρ_θ) and
   Hellinger distance between the exact η_ε and the model density
   (probability-flow likelihood) on a grid, and the relative score error
   E|s_θ - ∇log η_s|²/E|∇log η_s|² over s.

Needs only torch, numpy, scipy (and the repository's ``pde`` and ``neural``).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import neural
import pde
from neural.models import potential_flow_reference
from neural.devices import resolve_device, resolve_dtype
from neural.steps import EagerStep, GraphStep
from neural.train import _to_device

from ._report import write_section


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def eight_gaussians_otflow():
    return pde.otflow(pde.eight_gaussians(), domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, lam=1.0, n=(64, 64), nt=8,
                      name="otflow-8gaussians-2d")


# --------------------------------------------------------------------------
# 1. OT-Flow step time
# --------------------------------------------------------------------------


class _ReferenceOTFlow(neural.OTFlow):
    """OT-Flow trained through the plain dynamics (RK4 over grad_lap): the in-process yardstick."""

    _flow = staticmethod(potential_flow_reference)


class _CountOps(TorchDispatchMode):
    """Counts the backend operations (views excluded): about one GPU kernel launch each."""

    _SKIP = {"detach", "empty", "empty_strided", "empty_like", "new_empty_strided", "_local_scalar_dense",
             "lift_fresh", "_record_function_enter_new", "_record_function_exit"}

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in self._SKIP:
            self.n += 1
        return func(*args, **(kwargs or {}))


def time_otflow_steps(dev, dtype, variant: str, batch: int, n_warm: int, n_time: int, seed: int = 0) -> tuple:
    """(seconds per full training step, backend ops per step) for variant "reference", "fused" or "graph".

    A step is batch draw + transfer + loss + backward + Adam update; "graph" replays the fused
    step as a CUDA graph.
    """
    prob = eight_gaussians_otflow()
    dt = resolve_dtype(dtype)
    cls = _ReferenceOTFlow if variant == "reference" else neural.OTFlow
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(prob, width=32, nlayers=2, nsteps=8).to(dev, dt)
    use_graph = variant == "graph"
    if use_graph:  # 3 eager steps, then the capture: all before the timed window
        n_warm = max(n_warm, 4)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-2, device=dev) if use_graph else 1e-2,
                           capturable=use_graph)
    eager = EagerStep(model, opt)
    step_fn = eager
    recs = []
    ops = None
    for k in range(n_warm + n_time):
        if k == n_warm:
            _sync(dev)
            t0 = time.perf_counter()
        b = _to_device(model.draw(batch, np.random.default_rng([seed, k]), k), dt, dev, k)
        if use_graph and step_fn is eager and k == 3:
            step_fn = GraphStep(model, opt, b, k)
        if k == 1 and not use_graph:  # count once, outside the timed steps
            with _CountOps() as c:
                recs.append(step_fn(b, k)[0])
            ops = c.n
            continue
        recs.append(step_fn(b, k)[0])
    _sync(dev)
    el = (time.perf_counter() - t0) / n_time
    if not all(bool(torch.isfinite(r).all()) for r in recs):
        raise FloatingPointError("non-finite loss in the timing run")
    return el, ops


def bench_speed(dev, mode: str) -> str:
    batch = {"full": 4096, "quick": 512, "smoke": 64}[mode]
    n_warm, n_time = {"full": (10, 100), "quick": (2, 5), "smoke": (2, 2)}[mode]
    quick = mode != "full"
    variants = ["reference", "fused"] + (["graph"] if dev.type == "cuda" else [])
    rows = []
    for dtype in ("float32", "float64"):
        row = {"dtype": dtype}
        for v in variants:
            try:
                row[v] = time_otflow_steps(dev, dtype, v, batch, n_warm, n_time)
            except Exception as exc:  # noqa: BLE001 - report, do not hide, a failure (a graph capture, say)
                print(f"{v} failed ({type(exc).__name__}: {exc})", file=sys.stderr)
                row[v] = (None, None)
        rows.append(row)
    ref = {"float32": 148.0, "float64": 160.0}

    def ms(t):
        return "FAILED" if t is None else f"{1e3 * t:.2f}"

    lines = [f"OT-Flow training step, 2D 8 Gaussians, batch {batch}, 8 RK4 steps, width 32, 2 ResNet layers, "
             f"Adam; device **{_device_name(dev)}**, torch {torch.__version__}. Step = batch draw + transfer + "
             f"loss + backward + update, mean over {n_time} steps after {n_warm} warm-up steps. *reference*: the "
             f"plain dynamics (RK4 over the analytic ∇Φ, ΔΦ); *fused*: the training RHS with parameter-only terms "
             f"hoisted and time as a state column (same numbers to round-off, tested); *graph*: the fused step "
             f"replayed as one CUDA graph (3 more warm-up steps and the capture before timing). Ops/step = "
             f"backend operations per step (≈ GPU kernel launches). Speed-up fused = reference/fused, speed-up "
             f"graph = fused eager/graph.", "",
             "| dtype | reference eager ms | fused eager ms | CUDA graph ms | ops/step ref → fused | "
             "speed-up fused | speed-up graph | best vs OT-Flow reference (H100) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        (tr, nr), (tf, nf) = r["reference"], r["fused"]
        tg = r.get("graph", (None, None))[0]
        best = min(t for t in (tr, tf, tg) if t is not None) if any(t is not None for t in (tr, tf, tg)) else None
        graph_txt = "n/a (CPU)" if dev.type != "cuda" else ms(tg)
        fr = "—" if tr is None or tf is None else f"{tr / tf:.2f}×"
        ge = "—" if tg is None or tf is None else f"{tf / tg:.1f}×"
        cmp_txt = ("— (not comparable: CPU / other batch)" if quick or dev.type != "cuda" or best is None else
                   f"{ref[r['dtype']] / (1e3 * best):.1f}× faster than {ref[r['dtype']]:.0f} ms")
        lines.append(f"| {r['dtype']} | {ms(tr)} | {ms(tf)} | {graph_txt} | {nr} → {nf} | {fr} | {ge} | {cmp_txt} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# 2. time to L1 ≤ 0.05
# --------------------------------------------------------------------------


def _time_to_l1(prob, grid, truth, dev, mode: str, label: str) -> list:
    """Train OT-Flow until L1(ρ_T, truth) ≤ 0.05 on ``grid`` (checked every 100 steps); report lines."""
    hist = []
    max_steps = {"full": 3000, "quick": 800, "smoke": 20}[mode]
    every = 10 if mode == "smoke" else 100

    def cb(step, model):
        rho, _, _ = model.evaluate_grid(grid, nsteps=16)
        l1 = float(grid.integrate(np.abs(rho[-1] - truth)))
        hist.append((step, l1))
        return l1 <= 0.05

    res = neural.train(prob, "otflow", steps=max_steps, seed=0, device=dev, progress=False,
                       batch={"full": 2048, "quick": 512, "smoke": 64}[mode], callback=cb, callback_every=every)
    hit = next(((s, l1) for s, l1 in hist if l1 <= 0.05), None)
    lines = [f"**{label}**, batch {res.train_config['batch']}, cosine lr over {max_steps} steps, L1 every {every} "
             f"steps (evaluation time excluded):"]
    if hit:
        lines.append(f"- reached L1 = {hit[1]:.4f} ≤ 0.05 at step {hit[0]} after **{res.wall_time:.1f} s** of training")
    else:
        lines.append(f"- did NOT reach L1 ≤ 0.05 within {max_steps} steps ({res.wall_time:.1f} s); "
                     f"best L1 = {min(l for _, l in hist):.4f}")
    lines.append("- L1 history (step: L1): " + ", ".join(f"{s}: {l1:.3f}" for s, l1 in hist))
    return lines


def bench_time_to_l1(dev, mode: str) -> str:
    from compare.cases import get_case

    data = pde.Gaussian([1.5, -1.0], [[0.5, 0.2], [0.2, 0.3]])
    prob = pde.otflow(data, domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, lam=1.0, n=(64, 64), nt=4,
                      name="otflow-gaussian-2d")
    grid = prob.grid(n=(64, 64), nt=1)
    exact = pde.closed_form(prob).rho(grid.points(), prob.T)
    lines = [f"OT-Flow (width 32, 2 layers, 8 RK4 steps) until L1(ρ_T, truth) ≤ 0.05, λ = 1, T = 1, seed 0; "
             f"device **{_device_name(dev)}**.", ""]
    lines += _time_to_l1(prob, grid, exact, dev, mode,
                         "2D Gaussian N((1.5,-1),[[0.5,0.2],[0.2,0.3]]) → N(0,I), truth = closed form on 64²")
    # the two-component mixture of the comparison suite: the truth is the FD solution (first order in h, Δt)
    mix = get_case("otflow-mixture-2d").problem()
    nt = 2 if mode == "smoke" else mix.nt
    t0 = time.perf_counter()
    sol = pde.solve(mix, "fd", n=mix.n, nt=nt, progress=False)
    t_fd = time.perf_counter() - t0
    mgrid = mix.grid(n=mix.n, nt=1)
    lines += [""] + _time_to_l1(mix, mgrid, sol.rho[-1], dev, mode,
                                f"2D two-component mixture (case `otflow-mixture-2d`) → N(0,I), truth = FD on "
                                f"{mix.n[0]}×{mix.n[1]}, nt = {nt} (solved in {t_fd:.0f} s on the host CPU; first order: "
                                f"on the Gaussian case at this grid the FD ρ_T is itself 0.047 from the closed form, "
                                f"docs/fd.md, so ≤ 0.05 against it is a loose target)")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# 3. HJB-SGM vs SGM
# --------------------------------------------------------------------------


def _score_errors(model, law, svals, n, rng, dev):
    out = []
    for s in svals:
        eta = law.ou_marginal(s, model.beta)
        x = eta.sample(n, rng)
        exact = eta.score(x)
        p = next(model.parameters())
        with torch.no_grad():
            sc = model.score(torch.as_tensor(x, dtype=p.dtype, device=dev), s).cpu().numpy().astype(float)
        out.append(float(np.mean(((sc - exact) ** 2).sum(1)) / np.mean((exact**2).sum(1))))
    return out


def _steps_for_budget(cases, dev, batch, budget_s, cap, seeds, floor=50, probe=40):
    """Equal step count for both models, sized so that all runs fit ``budget_s`` (timed on ``probe`` steps)."""
    prob = next(iter(cases.values()))
    per_step = 0.0
    for mname in ("sgm", "hjb-sgm"):
        r = neural.train(prob, mname, steps=probe, seed=99, device=dev, progress=False, batch=batch, width=64,
                         depth=3)
        per_step += r.wall_time / probe
    total_runs = len(cases) * len(seeds)
    return int(max(floor, min(cap, budget_s / (total_runs * per_step)))), per_step


def bench_sgm(dev, mode: str) -> str:
    batch = {"full": 2048, "quick": 256, "smoke": 64}[mode]
    n = {"full": 80, "quick": 40, "smoke": 12}[mode]
    seeds = (0,) if mode == "smoke" else (0, 1, 2)
    svals = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    cases = {
        "checkerboard": pde.sgm(pde.Checkerboard(), domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, beta=1.0,
                                n=(n, n), nt=1, name="sgm-checkerboard-2d"),
        "8gaussians": pde.sgm(pde.eight_gaussians(), domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, beta=1.0,
                              n=(n, n), nt=1, name="sgm-8gaussians-2d"),
    }
    budget, cap = {"full": (90.0, 2000), "quick": (120.0, 300), "smoke": (2.0, 5)}[mode]
    steps, per_pair = _steps_for_budget(cases, dev, batch, budget, cap, seeds, *((1, 4) if mode == "smoke" else ()))
    eps_eval = 0.01  # densities compared at s = 0.01 (the exact checkerboard law at s = 0 is discontinuous)
    rows = []
    for cname, prob in cases.items():
        grid = prob.grid(n=(n, n), nt=1)
        pts = grid.points().reshape(-1, 2)
        exact = prob.data.ou_marginal(eps_eval, 1.0).pdf(pts)
        for mname in ("sgm", "hjb-sgm"):
            for seed in seeds:
                res = neural.train(prob, mname, steps=steps, seed=seed, device=dev, progress=False, batch=batch,
                                   width=64, depth=3)
                m = res.model
                p = next(m.parameters())
                x = torch.as_tensor(pts, dtype=p.dtype, device=dev)
                s = torch.full((pts.shape[0],), eps_eval, dtype=p.dtype, device=dev)
                with torch.no_grad():  # the likelihood's divergence is forward-mode: no graph needed
                    logr = np.concatenate([m.log_density(x[a:a + 4096], s[a:a + 4096],
                                                         {"full": 48, "quick": 16, "smoke": 4}[mode])[0]
                                           for a in range(0, pts.shape[0], 4096)])
                rho = np.exp(logr)
                h = grid.cell_volume
                mask = exact > 0
                kl = float(np.sum(exact[mask] * (np.log(exact[mask]) - logr[mask])) * h)
                hell = float(np.sqrt(max(0.0, 0.5 * np.sum((np.sqrt(exact) - np.sqrt(rho)) ** 2) * h)))
                errs = _score_errors(m, prob.data, svals, 2000, np.random.default_rng(100 + seed), dev)
                rows.append({"case": cname, "model": mname, "seed": seed, "kl": kl, "hell": hell, "errs": errs,
                             "time": res.wall_time})
    lines = [f"Score models on 2D toys, β = 1, T = 1, {steps} steps, batch {batch}, MLP width 64 × 3 (SiLU), "
             f"Adam 2e-3 cosine, seeds {list(seeds)}; device **{_device_name(dev)}** (steps sized to the time budget "
             f"from a timing of {1e3 * per_pair:.1f} ms per sgm + hjb-sgm step pair). Same network, steps and "
             f"batches for both; hjb-sgm adds α_HJB = 1 × E[σ_s³|R|]. KL(η_ε‖ρ_θ) and Hellinger H(η_ε, ρ_θ) at "
             f"s = ε = {eps_eval} on a {n}² grid (ρ_θ by the probability-flow likelihood); relative score error "
             f"E|s_θ - ∇log η_s|² / E|∇log η_s|² on 2000 samples of η_s. Mean ± std over seeds.", "",
             "| case | model | KL | Hellinger | " + " | ".join(f"score err s={s}" for s in svals)
             + " | train s |", "|---" * (5 + len(svals)) + "|"]
    summary = []
    for cname in cases:
        means = {}
        for mname in ("sgm", "hjb-sgm"):
            r = [x for x in rows if x["case"] == cname and x["model"] == mname]
            kl = np.array([x["kl"] for x in r])
            he = np.array([x["hell"] for x in r])
            er = np.array([x["errs"] for x in r])
            tm = np.mean([x["time"] for x in r])
            means[mname] = (kl.mean(), he.mean(), er.mean(0))
            lines.append(f"| {cname} | {mname} | {kl.mean():.4f} ± {kl.std():.4f} | {he.mean():.4f} ± {he.std():.4f} | "
                         + " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in zip(er.mean(0), er.std(0))) + f" | {tm:.1f} |")
        win_kl = "hjb-sgm" if means["hjb-sgm"][0] < means["sgm"][0] else "sgm"
        win_he = "hjb-sgm" if means["hjb-sgm"][1] < means["sgm"][1] else "sgm"
        win_sc = "hjb-sgm" if means["hjb-sgm"][2].mean() < means["sgm"][2].mean() else "sgm"
        summary.append(f"- {cname}: lower KL: **{win_kl}**, lower Hellinger: **{win_he}**, "
                       f"lower mean score error: **{win_sc}**")
    return "\n".join(lines + [""] + summary)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_neural", description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes for a CPU")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: every section runs, numbers mean little")
    ap.add_argument("--device", default=None)
    ap.add_argument("--only", nargs="*", choices=["speed", "l1", "sgm"], default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in --quick/--smoke mode (default 1)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    if mode != "full":
        torch.set_num_threads(args.threads)  # a shared CPU: more threads only contend
    dev = resolve_device(args.device)
    tag = {"quick": f"{dev.type}-quick", "smoke": "smoke"}.get(mode, dev.type)
    todo = args.only or ["speed", "l1", "sgm"]
    t_all = time.perf_counter()
    for key, fn, title in (("speed", bench_speed, "OT-Flow training speed"),
                           ("l1", bench_time_to_l1, "OT-Flow time to L1 ≤ 0.05"),
                           ("sgm", bench_sgm, "HJB-SGM vs SGM")):
        if key not in todo:
            continue
        t0 = time.perf_counter()
        md = fn(dev, mode)
        md = f"### neural: {title} ({tag})\n\n{md}\n\n_run time {time.perf_counter() - t0:.0f} s_"
        print(md, "\n", flush=True)
        if not args.no_write and mode != "smoke":  # smoke numbers mean nothing: never recorded
            write_section(f"neural-{key}-{tag}", md)
    print(f"total {time.perf_counter() - t_all:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
