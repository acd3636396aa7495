"""``mfglab train``: train a neural flow on a problem file, save the checkpoint and the grid solution.

    mfglab train PROBLEM.toml --model otflow|ffjord|sgm|hjb-sgm|wgf|lq --out DIR
                 [--device auto|cpu|cuda[:N]] [--steps N] [--seed S] [--dtype float32|float64]
                 [--batch B] [--lr LR] [--n N [N]] [--nt NT] [--set KEY=VALUE ...] [--no-resume]
                 [--no-density] [--quiet]

Writes ``DIR/checkpoint.pt`` (resumable: rerunning the command continues the
run) and ``DIR/solution.npz`` (the model on the problem's grid, DESIGN §6).
Also runnable as ``python -m neural.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_train_parser", "run_train", "main"]


def _hparam(text: str):
    """KEY=VALUE with VALUE a JSON literal (number, true/false, null) or a bare string; never evaluated."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r}; expected KEY=VALUE, e.g. --set width=64")
    key, val = text.split("=", 1)
    key = key.strip().replace("-", "_")
    try:
        value = json.loads(val)
    except json.JSONDecodeError:
        value = val
    return key, value


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an argparse ``subparsers`` object."""
    from .models import MODELS

    p = subparsers.add_parser("train", help="train a neural generative flow on a problem file",
                              description="Train a neural flow, save DIR/checkpoint.pt and DIR/solution.npz "
                                          "(the model evaluated on the problem's grid).")
    p.add_argument("problem", help="problem file (TOML)")
    p.add_argument("--model", default="otflow", choices=sorted(MODELS), help="model (default otflow)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and batches (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch", type=int, default=None, help="batch size (model default)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (model default)")
    p.add_argument("--n", type=int, nargs="+", default=None, help="evaluation grid nodes per dimension")
    p.add_argument("--nt", type=int, default=None, help="evaluation grid time steps")
    p.add_argument("--set", dest="hparams", type=_hparam, action="append", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameter, e.g. --set width=64 --set alpha_R=5")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--no-density", action="store_true", help="skip the density on the grid (rho = NaN)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    return p


def run_train(args) -> int:
    """Run the ``train`` sub-command; returns the exit status."""
    import pde

    from .evaluate import evaluate_on_grid
    from .train import CheckpointError, NonFiniteLossError, train

    out = Path(args.out)
    try:
        overrides = {"n": args.n, "nt": args.nt}
        problem = pde.load_problem(args.problem, overrides=overrides)
        result = train(problem, args.model, steps=args.steps, seed=args.seed, device=args.device, dtype=args.dtype,
                       out_dir=out, resume=not args.no_resume, progress=not args.quiet, batch=args.batch,
                       lr=args.lr, **dict(args.hparams))
        sol = evaluate_on_grid(result, problem, density=not args.no_density)
        path = sol.save(out / "solution.npz")
    except NonFiniteLossError as exc:  # a run that failed (README's exit codes)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: the checkpoint in {out} holds the completed steps; rerun to resume", file=sys.stderr)
        return 130
    print(result.summary())
    print(f"checkpoint: {result.checkpoint}\nsolution:   {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neural.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
