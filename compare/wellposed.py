"""``mfglab wellposed STUDY``: what makes each generative model well or ill posed, with numbers.

Five studies (each in :mod:`compare.studies`), each writing the report folder
of ``verify`` (``report.md``/``report.html``, PNG figures, ``metrics.json``
with every number under ``"sections"``, ``provenance.json``):

- ``kinetic``   — a CNF without kinetic cost (FFJORD) against OT-Flow: terminal
  fits alike, trajectories not; the λ → 0 sweep on the PDE and neural sides;
- ``stability`` — perturb the data by ε: ‖Δρ‖, ‖Δφ‖ against ε for the FD truth
  (an empirical Lipschitz constant) and for trained OT-Flow models;
- ``score``     — the score equation is linear in disguise: nonlinear HJB vs
  linear Fokker–Planck route vs closed form; the conditioning of denoising
  score matching at small diffusion time and what the HJB regulariser changes;
- ``coupling``  — monotone (Lasry–Lions) coupling: one solution from every
  initial guess; aggregating coupling: two distinct equilibria;
- ``bridge``    — flow matching between two given laws: which coupling (independent,
  minibatch OT, reflow, entropic) learns the Benamou–Brenier path.

Python::

    from compare.wellposed import run_study
    path, data = run_study("kinetic", "out/wellposed-kinetic", quick=True)

docs/teaching.md walks through the mathematics, the commands and the numbers.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["STUDIES", "StudyOutput", "run_study", "add_parser", "UnknownStudy", "torch_threads"]

#: study name -> (module in compare.studies, one line)
STUDIES = {
    "kinetic": ("kinetic", "CNF without kinetic cost vs OT-Flow: trajectories across seeds; the λ → 0 sweep"),
    "stability": ("stability", "perturb the data by ε: ‖Δρ‖, ‖Δφ‖ vs ε for the FD truth and trained models"),
    "score": ("score", "sgm: nonlinear HJB vs linear FP vs exact score; DSM conditioning at small t; HJB regulariser"),
    "coupling": ("coupling", "monotone coupling: one solution from every guess; aggregating coupling: two equilibria"),
    "bridge": ("bridge", "flow matching (I-CFM, OT-CFM, rectified, SB-CFM) vs the bridge truth: kinetic vs W2, "
                         "L1 of rho_t, straightness"),
}


class UnknownStudy(ValueError):
    """A study name that is not registered (the message lists the valid ones)."""


@dataclass
class StudyOutput:
    """What a study returns before it is written: report text, sections, numbers."""

    title: str
    notes: str
    sections: list
    data: dict
    settings: dict = field(default_factory=dict)
    seed: int | None = 0


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run torch on ``n`` intra-op threads, restoring the previous setting.

    Small networks on a loaded 2-core machine train several times faster on one
    thread than on two (measured: 0.10 s against 2.1 s per FFJORD step when the
    machine was shared), so the studies default to one.
    """
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _study_module(name: str):
    if name not in STUDIES:
        raise UnknownStudy(f"unknown study {name!r}; expected one of: {', '.join(STUDIES)}")
    return importlib.import_module(f"compare.studies.{STUDIES[name][0]}")


def run_study(name: str, out_dir, *, quick: bool = False, seeds: int | None = None, force: bool = False,
              threads: int | None = 1, log: Callable = print, **options) -> tuple[Path, dict]:
    """Run study ``name`` and write its report folder; returns (path, data).

    Args:
        name: one of :data:`STUDIES`.
        out_dir: the report folder (refused if it exists, unless ``force``).
        quick: the reduced version (the tests run it).
        seeds: number of training seeds (the study's default when None).
        force: replace an existing folder (only once the new one is complete).
        threads: torch intra-op threads while the study runs (None: unchanged).
        options: study-specific overrides (see each module's ``run``).
    """
    from .report import Section, markdown_table, write_report

    mod = _study_module(name)
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"output folder {out} exists; pass --force to replace it")
    if seeds is not None and int(seeds) < 2:
        raise ValueError(f"seeds={seeds}; expected at least 2 (spreads across seeds need two or more)")
    t0 = time.perf_counter()
    with torch_threads(threads):
        res: StudyOutput = mod.run(quick=quick, seeds=seeds, log=log, **options)
    wall = time.perf_counter() - t0
    timing = Section("Run", markdown_table(["setting", "value"], [
        ["study", name], ["quick", str(bool(quick))], ["wall time (s)", wall],
        ["torch threads", str(threads)]] + [[k, str(v)] for k, v in res.settings.items()]),
        data={"wall_time_s": wall, "quick": bool(quick), "threads": threads, "settings": res.settings})
    path = write_report(out, title=res.title, notes=res.notes, extra_sections=list(res.sections) + [timing],
                        force=force, seed=res.seed,
                        extra_provenance={"study": name, "quick": bool(quick), "wall_time_s": wall,
                                          "settings": res.settings})
    log(f"wellposed {name}: report {path} ({wall:.0f} s)")
    data = dict(res.data)
    data["wall_time_s"] = wall
    return path, data


# --------------------------------------------------------------------- CLI

def add_parser(sub) -> None:
    """Register ``mfglab wellposed STUDY [--out DIR] [--quick] [--seeds K] [--force]``."""
    p = sub.add_parser("wellposed", help="well-posedness studies (kinetic, stability, score, coupling, bridge) → report",
                       description="Run a well-posedness study and write a report folder (report.md, report.html, "
                                   "figures, metrics.json, provenance). Studies: "
                                   + "; ".join(f"{k}: {v[1]}" for k, v in STUDIES.items()))
    p.add_argument("study", help=f"one of {', '.join(STUDIES)}")
    p.add_argument("--out", type=Path, default=None, help="report folder (default out/wellposed-STUDY)")
    p.add_argument("--quick", action="store_true", help="reduced version (about a minute)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default: the study's, 3)")
    p.add_argument("--device", default=None, help="training device for kinetic/score/stability/bridge: cpu (default), "
                                                   "cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a shared CPU)")
    p.add_argument("--force", action="store_true", help="replace the report folder if it exists")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    if args.study not in STUDIES:
        raise UnknownStudy(f"unknown study {args.study!r}; expected one of: {', '.join(STUDIES)}")
    out = args.out or Path("out") / f"wellposed-{args.study}"
    opts = {}
    if args.device is not None:
        if args.study == "coupling":
            raise ValueError("--device: the coupling study trains no model (FD only); leave --device out")
        opts["device"] = args.device
    path, _ = run_study(args.study, out, quick=args.quick, seeds=args.seeds, force=args.force,
                        threads=args.threads if args.threads > 0 else None, **opts)
    print(f"report: {path / 'report.html'} (or report.md)")
    return 0
