"""The ``mfglab`` command line.

Subcommands (``mfglab SUBCOMMAND --help`` for options):

- ``cases``      list the named verification cases
- ``solve``      ground truth of a problem file (exact | fd | fe) → solution .npz
- ``train``      train a neural flow on a problem file → checkpoint + solution .npz
- ``verify``     truth vs neural model on a named case → report folder
- ``converge``   refinement study of a solver on a case → report folder
- ``wellposed``  well-posedness studies → report folder
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
    p.add_argument("--method", default="fd", help="exact | fd | fe (default fd)")
    p.add_argument("--n", type=int, nargs="+", help="nodes per dimension (overrides [grid] n)")
    p.add_argument("--nt", type=int, help="time steps (overrides [grid] nt)")
    p.add_argument("--solver", default=None, help="fd: newton | fixed-point")
    p.add_argument("--tol", type=float, default=None, help="solver tolerance")
    p.add_argument("--max-iter", type=int, default=None, help="maximum solver iterations")
    p.add_argument("--mesh", default=None, help="fe: box | disc | obstacle | a mesh file")
    p.add_argument("--h", type=float, default=None, help="fe: mesh size")
    p.add_argument("--xdmf", type=Path, default=None, help="fe: also write XDMF for ParaView here")
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
    for key in ("solver", "tol", "max_iter", "mesh", "h"):
        val = getattr(args, key)
        if val is not None:
            opts[key] = val
    if args.xdmf is not None:
        opts["xdmf_path"] = args.xdmf
    if args.method != "exact":
        opts["progress"] = _progress_line
    print(f"solving {args.problem} ({problem.family}, {problem.dim}D) with method {args.method}", flush=True)
    t0 = time.perf_counter()
    sol = pde.solve(problem, args.method, **opts)
    sol.meta.setdefault("wall_time_s", time.perf_counter() - t0)
    sol.save(args.out)
    print(sol.summary())
    print(f"wrote {args.out}")
    return 0


# --------------------------------------------------------------------- demo (placeholder figure)

def _add_demo(sub):
    p = sub.add_parser("demo", help="run the main job on its default case")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    p.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from . import demo

    return demo.run(args.out, force=args.force)


# --------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfglab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    _add_solve(sub)
    _add_demo(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pde.io import ProblemFileError

    try:
        return int(args.func(args) or 0)
    except (CLIError, ProblemFileError, FileExistsError) as exc:
        print(f"mfglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfglab {args.command}: interrupted; outputs written so far are complete, re-run to resume",
              file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"mfglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"mfglab {args.command}: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
