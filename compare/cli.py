"""The ``mfglab`` command line.

Subcommands (``mfglab SUBCOMMAND --help`` for options):

- ``cases``      list the named verification cases
- ``solve``      ground truth of a problem file (exact | fd | fe | ot) → solution .npz
- ``train``      train a neural flow on a problem file → checkpoint + solution .npz
- ``verify``     truth vs neural model on a named case → report folder
- ``compare``    truth vs any model (model file or module.py:factory) → report folder
- ``converge``   refinement study of a solver on a case → report folder
- ``wellposed``  well-posedness studies → report folder
- ``sweep``      many verify/compare/converge runs from a sweep file (serial, processes, MPI) → summary folder
- ``demo``       ``verify`` on the default case (what ``make demo`` runs)

Exit codes: 0 success, 1 a run that failed (non-convergence, NaN, …),
2 bad input (unknown names, malformed files, an output that exists).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """Bad input from the command line (exit code 2)."""


def _grid_overrides(args) -> dict:
    out = {}
    if getattr(args, "n", None):
        out["n"] = list(args.n)
    if getattr(args, "nt", None):
        out["nt"] = int(args.nt)
    return out


# --------------------------------------------------------------------- solve

def _add_solve(sub):
    p = sub.add_parser("solve", help="compute the ground truth of a problem file",
                       description="Solve a problem file with a ground-truth method and write the solution .npz "
                                   "(arrays t, x[, y], rho, phi, meta; see README 'File formats').")
    p.add_argument("problem", type=Path, help="problem file (TOML)")
    p.add_argument("--method", default="fd", help="exact | fd | fe | ot (default fd)")
    p.add_argument("--n", type=int, nargs="+", help="nodes per dimension (overrides [grid] n)")
    p.add_argument("--nt", type=int, help="time steps (overrides [grid] nt)")
    p.add_argument("--solver", default=None, help="fd: newton | fixed-point")
    p.add_argument("--tol", type=float, default=None, help="solver tolerance")
    p.add_argument("--max-iter", type=int, default=None, help="maximum solver iterations")
    p.add_argument("--mesh", default=None, help="fe: box | disc | obstacle | a mesh file")
    p.add_argument("--h", type=float, default=None, help="fe: mesh size")
    p.add_argument("--xdmf", type=Path, default=None, help="fe: also write XDMF for ParaView here")
    p.add_argument("--figure", type=Path, default=None, help="fe: also write a PNG of the density here")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget, e.g. 8G or inf (default: the memory available; a grid whose estimate "
                        "exceeds it is refused before the solve)")
    p.add_argument("--no-check-resolution", action="store_true",
                   help="fd: solve even when h cannot resolve the narrowest Gaussian component of the data")
    p.add_argument("--out", type=Path, required=True, help="solution file to write (.npz)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_run_solve)


def _progress_line(it, res, info=None):
    extra = ""
    if info:
        extra = "  " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
    print(f"  iter {it:3d}  residual {res:.3e}{extra}", flush=True)


def _run_solve(args) -> int:
    import pde

    if args.out.suffix != ".npz":
        raise CLIError(f"--out {args.out}: expected a file name ending in .npz")
    if args.out.exists() and not args.force:
        raise CLIError(f"--out {args.out} exists; pass --force to overwrite it")
    problem = pde.load_problem(args.problem, overrides=_grid_overrides(args))
    opts = {}
    for key in ("solver", "tol", "max_iter", "mesh", "h", "max_memory"):
        val = getattr(args, key)
        if val is not None:
            opts[key] = val
    if args.no_check_resolution:
        if args.method != "fd":
            raise CLIError("--no-check-resolution is an option of the FD solver; use it with --method fd")
        opts["check_resolution"] = False
    if args.method == "fe":
        # under mpirun every rank solves; rank 0 alone writes the files
        opts.update(xdmf_path=args.xdmf, figure_path=args.figure, npz_path=args.out)
    elif args.xdmf is not None or args.figure is not None:
        raise CLIError("--xdmf and --figure are finite-element outputs; use them with --method fe")
    if args.method != "exact":
        opts["progress"] = _progress_line
    rank0 = _mpi_rank() == 0
    if rank0:
        print(f"solving {args.problem} ({problem.family}, {problem.dim}D) with method {args.method}", flush=True)
    t0 = time.perf_counter()
    sol = pde.solve(problem, args.method, **opts)
    sol.meta.setdefault("wall_time_s", time.perf_counter() - t0)
    if args.method != "fe":
        sol.save(args.out)
    if rank0:
        print(sol.summary())
        print(f"wrote {args.out}")
    return 0


def _mpi_rank() -> int:
    """This process's MPI rank (0 without MPI or when mpi4py was never imported)."""
    mpi = sys.modules.get("mpi4py.MPI")
    return int(mpi.COMM_WORLD.rank) if mpi is not None else 0


# --------------------------------------------------------------------- cases

def _add_cases(sub):
    p = sub.add_parser("cases", help="list the named verification cases")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=_run_cases)


def _run_cases(args) -> int:
    from .cases import format_cases, list_cases

    if args.json:
        import json

        print(json.dumps([c.to_dict() for c in list_cases()], indent=2))
    else:
        print(format_cases())
    return 0


# --------------------------------------------------------------------- verify / demo

def _add_verify(sub):
    p = sub.add_parser("verify", help="PDE truth vs a neural flow on a named case → report folder",
                       description="Solve the case's truth (cached), train or resume its neural model "
                                   "(checkpointed), measure both at several times and write a report folder: "
                                   "report.md, report.html, figures, metrics.json, provenance.")
    p.add_argument("case", help="case name (see `mfglab cases`)")
    p.add_argument("--model", default=None, help="neural model (default: the case's)")
    p.add_argument("--budget", type=int, default=None, help="training steps (default: the case's)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truth", default=None, help="truth route: exact | fd | fe | ot (default: the case's first)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default out/verify-CASE)")
    p.add_argument("--work", type=Path, default=None,
                   help="truth cache and training checkpoints (default: OUT.work beside the report)")
    p.add_argument("--force", action="store_true", help="replace the report folder if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-animation", action="store_true", help="leave the animation out of the report (quicker)")
    p.set_defaults(func=_run_verify)


def _run_verify(args) -> int:
    from .verify import run_verify

    out = args.out or Path("out") / f"verify-{args.case}"
    res = run_verify(args.case, out, model=args.model, budget=args.budget, device=args.device, seed=args.seed,
                     force=args.force, work_dir=args.work, truth_method=args.truth, progress=not args.quiet,
                     animation=not args.no_animation)
    print(f"verify: report written to {res.out_dir} ({res.wall_time_s:.0f} s); model file {res.out_dir / 'model.npz'}")
    return 0


def _add_compare(sub):
    p = sub.add_parser(
        "compare", help="PDE truth vs any generative model (a model file, or your Python code) → report folder",
        description="Measure a model trained anywhere against the lab's truth and write the same report folder as "
                    "`verify` (report.md/html, figures, animation, metrics.json, provenance), with a section saying "
                    "which metric came from what. The model is a model file (.npz, README 'File formats') or "
                    "module.py:factory — the latter IMPORTS AND RUNS that Python file (your explicit choice; "
                    "model and problem files are never run). Truth: a case (solved and cached as in `verify`) or "
                    "--problem P.toml --truth TRUTH.npz.")
    p.add_argument("case", nargs="?", default=None, help="case name (see `mfglab cases`); or give --problem")
    p.add_argument("--model", required=True,
                   help="model file MODEL.npz, or module.py:factory (runs that file's factory() → compare.Model)")
    p.add_argument("--truth", default=None,
                   help="with a case: the truth route exact | fd | fe | ... (default: the case's first); "
                        "with --problem: the truth solution file TRUTH.npz")
    p.add_argument("--problem", type=Path, default=None, help="problem file (TOML) of --truth TRUTH.npz")
    p.add_argument("--n", type=int, nargs="+", help="case grid: nodes per dimension")
    p.add_argument("--nt", type=int, help="case grid: time steps")
    p.add_argument("--times", type=float, nargs="+", default=None, help="measurement times (default 5 in [0, T])")
    p.add_argument("--steps", type=int, default=32, help="RK4 steps over [0, T] of characteristics and paths")
    p.add_argument("--samples", type=int, default=2000, help="particles moved by the model's velocity (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="report folder (default out/compare-CASE)")
    p.add_argument("--work", type=Path, default=None, help="truth cache (default: OUT.work beside the report)")
    p.add_argument("--force", action="store_true", help="replace the report folder if it exists")
    p.add_argument("--no-animation", action="store_true", help="leave the animation out of the report (quicker)")
    p.add_argument("--no-truth-error", action="store_true", help="skip the truth's own error estimate")
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
    from .comparison import run_compare

    if (args.case is None) == (args.problem is None):
        raise CLIError("give either a case name or --problem P.toml --truth TRUTH.npz")
    common = dict(times=args.times, steps=args.steps, n_samples=args.samples, seed=args.seed, force=args.force,
                  work_dir=args.work, animation=not args.no_animation, truth_error=not args.no_truth_error)
    if args.case is not None:
        out = args.out or Path("out") / f"compare-{args.case}"
        res = run_compare(args.model, out, case=args.case, truth_method=args.truth, n=args.n, nt=args.nt, **common)
    else:
        import pde

        if args.truth is None or not args.truth.endswith(".npz"):
            raise CLIError(f"--problem needs --truth TRUTH.npz (got {args.truth!r})")
        if args.out is None:
            raise CLIError("--problem needs --out DIR")
        problem = pde.load_problem(args.problem)
        truth = pde.MFGSolution.load(args.truth)
        res = run_compare(args.model, args.out, problem=problem, truth=truth, **common)
    print(f"compare: report written to {res.out_dir} ({res.wall_time_s:.0f} s)")
    for k, v in res.not_derived.items():
        print(f"  not derived: {k}: {v}")
    return 0


def _add_demo(sub):
    from .cases import DEFAULT_CASE

    p = sub.add_parser("demo", help=f"run `verify` on the default case ({DEFAULT_CASE})")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="report folder (default out/demo)")
    p.add_argument("--force", action="store_true", help="replace the report folder if it exists")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .cases import DEFAULT_CASE
    from .verify import run_verify

    force = args.force or args.out == Path("out/demo")  # the default demo folder is always refreshed
    res = run_verify(DEFAULT_CASE, args.out, force=force)
    print(f"demo: {DEFAULT_CASE} verified in {res.wall_time_s:.0f} s")
    print(f"demo: open {res.out_dir / 'report.html'} (or report.md in the same folder)")
    return 0


# --------------------------------------------------------------------- converge

def _add_converge(sub):
    p = sub.add_parser("converge", help="refinement study of a solver on a case → report folder",
                       description="Solve the case on K grids (h and Δt halved per level), measure errors "
                                   "against the closed form, fit orders; writes a table, a log-log figure and JSON.")
    p.add_argument("case", help="case name with a closed form (see `mfglab cases`)")
    p.add_argument("--method", default="fd", help="fd | fe (default fd)")
    p.add_argument("--levels", type=int, default=4, help="number of grids (default 4)")
    p.add_argument("--n0", type=int, nargs="+", default=None, help="coarsest nodes per dimension")
    p.add_argument("--nt0", type=int, default=None, help="coarsest number of time steps")
    p.add_argument("--out", type=Path, default=None, help="report folder (default out/converge-CASE-METHOD)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_run_converge)


def _run_converge(args) -> int:
    from .convergence import run_convergence

    out = args.out or Path("out") / f"converge-{args.case}-{args.method}"
    if out.exists() and not args.force:
        raise CLIError(f"output folder {out} exists; pass --force to replace it")
    res = run_convergence(args.case, args.method, args.levels, out_dir=out, n0=args.n0, nt0=args.nt0,
                          force=args.force)
    print(res.table)
    print("fitted orders: " + ", ".join(f"{k} {v:.2f}" for k, v in res.orders.items() if v is not None))
    print(f"report: {out}")
    return 0


# --------------------------------------------------------------------- train (neural)

def _add_train(sub):
    from neural.cli import add_train_parser

    p = add_train_parser(sub)
    p.description = (p.description or "") + " Also writes DIR/model.npz (the model file, README 'File formats')."
    p.add_argument("--paths", type=int, default=2000, help="trajectories stored in DIR/model.npz (default 2000)")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from neural.cli import run_train

    rc = run_train(args)
    if rc == 0:
        from .model.trained import write_trained_model_file

        path = write_trained_model_file(args.out, args.problem, n_paths=args.paths, seed=args.seed,
                                        overrides={"n": args.n, "nt": args.nt})
        print(f"model file: {path}")
    return rc


def _add_wellposed(sub): from .wellposed import add_parser; add_parser(sub)  # noqa: E704


def _add_sweep(sub): from .sweep import add_parser; add_parser(sub)  # noqa: E704


# --------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfglab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    _add_cases(sub)
    _add_solve(sub)
    _add_train(sub)
    _add_verify(sub)
    _add_compare(sub)
    _add_converge(sub)
    _add_demo(sub)
    _add_wellposed(sub)
    _add_sweep(sub)
    return parser


_TORCH_COMMANDS = ("train", "verify", "demo", "wellposed", "compare", "sweep")


def _set_torch_threads() -> None:
    """One intra-op thread by default (``MFGLAB_TORCH_THREADS`` overrides).

    The networks here are small (width 32–64, batch ≈ 1000): measured on the
    2-core machine with other work running, one thread trains OT-Flow at
    0.36 s/step and two threads at 2.2 s/step (spin-waiting threads that are
    descheduled stall every parallel region).
    """
    import os

    raw = os.environ.get("MFGLAB_TORCH_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise CLIError(f"MFGLAB_TORCH_THREADS={raw!r}; expected a positive integer") from None
    if n < 1:
        raise CLIError(f"MFGLAB_TORCH_THREADS={raw!r}; expected a positive integer")
    import torch

    torch.set_num_threads(n)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pde.io import ProblemFileError

    from pde.exact import NoClosedForm

    from .cases import UnknownCase
    from .model import ModelFileError

    try:
        if args.command in _TORCH_COMMANDS:
            _set_torch_threads()
        return int(args.func(args) or 0)
    except (CLIError, ProblemFileError, FileExistsError, UnknownCase, NoClosedForm, ModelFileError) as exc:
        print(f"mfglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfglab {args.command}: interrupted; outputs written so far are complete, re-run to resume",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, IsADirectoryError, ImportError) as exc:
        # bad values, missing input files (mesh, checkpoint), an optional stack (DOLFINx) not installed
        print(f"mfglab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"mfglab {args.command}: failed: out of memory (pass a smaller grid or --max-memory)", file=sys.stderr)
        return 1
    except (RuntimeError, FloatingPointError, OSError) as exc:
        # non-convergence, NaN, PETSc errors; OSError: a write that failed (disk full, permissions)
        print(f"mfglab {args.command}: failed: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (OSError: with its file name)."""
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc):
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
