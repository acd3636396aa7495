"""Report folders: ``report.md``, ``report.html``, PNG figures, ``metrics.json``, provenance.

:func:`write_report` builds the whole folder in a temporary sibling and
renames it into place, so a reader never sees a half-written report; an
existing folder is refused unless ``force=True``, and then replaced only
after the new one is complete (the old one is restored if the swap fails).

Layout (docs/compare.md has the details)::

    OUT/
      report.md          title, case, summary table, figures, sections, provenance
      report.html        the same, figures inline as base64 PNG
      metrics.json       {"schema", "title", "case", "metrics": <evaluate() result or None>, "sections", ...}
      provenance.json    versions, seed, git commit, host, CPU, GPU, command line, time
      fig_*.png          figures

Extra sections (convergence tables, well-posedness studies) are
:class:`Section` objects with markdown and :class:`FigureSpec` figures.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pde.io import default_mode, json_default

from .markdown import html_page, markdown_to_html

__all__ = ["Section", "FigureSpec", "write_report", "provenance", "fmt", "markdown_table", "markdown_to_html",
           "git_commit"]

REPORT_SCHEMA = "mfglab.report/1"


@dataclass
class FigureSpec:
    """A figure of a report: ``figure`` is a matplotlib Figure, PNG bytes or a PNG path."""

    name: str
    figure: Any
    caption: str = ""

    def png(self) -> bytes:
        f = self.figure
        if isinstance(f, (bytes, bytearray)):
            return bytes(f)
        if isinstance(f, (str, Path)):
            return Path(f).read_bytes()
        from .plots import figure_png

        return figure_png(f)


@dataclass
class Section:
    """A report section: a title, markdown text (tables allowed) and figures."""

    title: str
    markdown: str = ""
    figures: Sequence[FigureSpec] = field(default_factory=list)
    data: Mapping | None = None  # JSON-ready numbers stored in metrics.json under "sections"


# --------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------


def fmt(v, sig: int = 3) -> str:
    """A number with ``sig`` significant digits ('—' for None/NaN)."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return "—" if math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x == 0:
        return "0"
    return f"{x:.{sig}g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], sig: int = 3) -> str:
    """A pipe table; numbers formatted with ``sig`` significant digits."""
    def cell(v):
        return v if isinstance(v, str) else fmt(v, sig)

    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(v) for v in r) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------


def git_commit(path: Path | None = None) -> dict:
    """``git rev-parse HEAD`` of the repository holding the code (``"unknown"`` outside one)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.lower().startswith("model name"):
                return ln.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str:
    torch = sys.modules.get("torch")  # only ask torch when it is already loaded (importing it is slow)
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            return "none (torch sees no CUDA device)"
    exe = shutil.which("nvidia-smi")
    if exe:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=10)
            if r.returncode == 0 and r.stdout.strip():
                return ", ".join(r.stdout.strip().splitlines())
    return "none found"


def provenance(seed: int | None = None, extra: Mapping | None = None) -> dict:
    """What produced a result: versions, seed, git commit, host, CPU, GPU, command line, UTC time."""
    from pde.solution import package_versions

    import pde

    vers = package_versions()
    for mod in ("matplotlib", "ot", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            vers[mod] = getattr(m, "__version__", "?")
    vers["mfglab"] = getattr(pde, "__version__", "?")
    out = {
        "versions": vers,
        "seed": seed,
        "git": git_commit(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": _gpu_name(),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if extra:
        out.update(dict(extra))
    return out


# --------------------------------------------------------------------------
# the writer
# --------------------------------------------------------------------------


def _clean(o):
    """NaN/inf → None recursively (strict JSON)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def _metrics_table(result: Mapping) -> str:
    """Values per time, their max, and (with a truth-error estimate) the truth's own error beside each metric.

    A value at or below the truth's error at that time is marked † ("not
    resolved by this truth"); a value missing at some time is — and its
    reason is listed under the table.
    """
    times = result["times"]
    terr = result.get("truth_error") or {}
    est = terr.get("metrics", {})
    unres = terr.get("unresolved", {})
    header = ["metric"] + [f"t = {fmt(t)}" for t in times] + ["max"] + (["truth error (max)"] if terr else [])
    rows, notes = [], []
    for name, m in result["metrics"].items():
        vals = m["values"]
        fin = [v for v in vals if v is not None]
        marks = {round(t, 9) for t in unres.get(name, [])}
        cells = [fmt(v) + (" †" if round(t, 9) in marks else "") for t, v in zip(m["t"], vals)]
        row = [f"`{name}`"] + cells + [max(fin) if fin else None]
        if terr:
            ev = [v for v in est.get(name, {}).get("values", []) if v is not None]
            row.append(max(ev) if ev else "")
        rows.append(row)
        for t, why in (m.get("reasons") or {}).items():
            notes.append(f"`{name}` at t = {t}: {why}")
        for t, why in (m.get("notes") or {}).items():
            notes.append(f"`{name}` at t = {t}: {why}")
    out = markdown_table(header, rows)
    if terr:
        out += ("\n\nTruth error: " + terr.get("method", "") + ". † marks a model value at or below the truth's "
                "error at that time: **not resolved by this truth**.")
        for name, why in (terr.get("not_estimated") or {}).items():
            notes.append(f"`{name}`: truth error not estimated ({why})")
    if notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return out


def _summary_scalars(result: Mapping) -> str:
    rows = [[f"`{k}`", v] for k, v in result.get("summary", {}).items() if not isinstance(v, Mapping)]
    return markdown_table(["quantity", "value"], rows) if rows else ""


def _case_block(case) -> tuple[str, dict | None]:
    if case is None:
        return "", None
    if isinstance(case, str):
        from .cases import get_case

        case = get_case(case)
    if hasattr(case, "to_dict"):
        d = case.to_dict()
    elif isinstance(case, Mapping):
        d = dict(case)
    else:
        raise TypeError(f"case must be a Case, a case name or a dict (got {type(case).__name__})")
    lines = [f"**{d.get('name', '')}** — {d.get('description', '')}", ""]
    lines.append(markdown_table(["field", "value"], [[k, json.dumps(v) if not isinstance(v, str) else v]
                                                     for k, v in d.items() if k not in ("name", "description")]))
    return "\n".join(lines), d


def write_report(out_dir, *, title: str, case=None, truth=None, model=None, metrics: Mapping | None = None,
                 training=None, trajectories=None, extra_sections: Sequence[Section] | None = None,
                 force: bool = False, seed: int | None = None, problem=None, times=None,
                 notes: str | None = None, extra_provenance: Mapping | None = None,
                 labels=("truth", "model"), animation: bool = False, extra_files: Mapping | None = None) -> Path:
    """Write a report folder atomically and return its path.

    Args:
        out_dir: the folder to create (refused if it exists, unless ``force``).
        title: report title.
        case: a :class:`~compare.cases.Case`, a case name, a dict, or None.
        truth, model: :class:`~pde.solution.MFGSolution` (model may be None
            for truth-only reports; both None for study reports).
        metrics: the result of :func:`compare.metrics.evaluate`, or None.
        training: loss history (list, or {name: list}) for a training-curve figure.
        trajectories: particle paths (nt+1, N, d) for a trajectory figure.
        extra_sections: further :class:`Section` objects (tables, figures).
        force: replace an existing folder (only once the new one is complete).
        seed: recorded in the provenance.
        problem: an :class:`~pde.problem.MFGProblem` whose description is recorded.
        times: times of the field figures (default: the metric times, else 5).
        notes: markdown shown after the title.
        extra_provenance: further provenance entries.
        labels: names of the two solutions in figures.
        animation: add ``animation.gif`` (truth vs model density and the
            particles over time; also ``animation.mp4`` when ffmpeg is on the
            PATH), shown in report.html.
        extra_files: {file name: object with ``save(path)``} written into the
            folder (e.g. the ``model.npz`` of verify).
    """
    out = Path(out_dir).resolve()
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; choose another folder or pass force=True (--force) to replace it")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; refusing to replace it")
    from . import plots

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp makes 0700: the report gets the usual permissions
    try:
        figs: list[FigureSpec] = []
        sections_md: list[str] = []
        if times is None and metrics is not None:
            times = metrics.get("times")
        if truth is not None:
            cap = (f"{labels[0]}, {labels[1]} and their difference at {len(times) if times is not None else 5} times; "
                   f"{labels[0]} and {labels[1]} share one colour scale per time") if model is not None else "truth density"
            figs.append(FigureSpec("fig_density.png", plots.fields_figure(truth, model, times, "rho", labels=labels),
                                   "Density ρ: " + cap))
            has_phi = not np.all(np.isnan(truth.phi)) and (model is None or not np.all(np.isnan(model.phi)))
            if has_phi:
                figs.append(FigureSpec("fig_potential.png", plots.fields_figure(truth, model, times, "phi", labels=labels),
                                       "Potential φ where ρ_truth > 1e-3·max (the model shifted by the ρ-weighted "
                                       "mean difference: potentials are defined up to a constant)"))
        if metrics is not None:
            figs.append(FigureSpec("fig_metrics.png", plots.metrics_figure(metrics), "Metrics vs time"))
        if training is not None:
            figs.append(FigureSpec("fig_training.png", plots.training_figure(training), "Training losses"))
        if trajectories is not None:
            figs.append(FigureSpec("fig_trajectories.png", plots.trajectories_figure(trajectories, truth=truth),
                                   "Model trajectories over the truth"))
        for sec in extra_sections or []:
            figs.extend(sec.figures)
        names = [f.name for f in figs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"figure names {dup} are used twice; expected unique file names")
        for f in figs:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+\.png", f.name):
                raise ValueError(f"figure name {f.name!r}; expected a plain file name ending in .png")
        pngs = {}
        for f in figs:
            data = f.png()
            (tmp / f.name).write_bytes(data)
            pngs[f.name] = data

        anim_md = []
        if animation and truth is not None:
            from .animation import write_animation

            files = write_animation(tmp, truth, model, trajectories, labels=labels)
            for f in files:
                anim_md.append(f"![animation: {labels[0]} vs {labels[1]} density and particles over time]({f})"
                               if f.endswith(".gif") else f"MP4 version: [{f}]({f})")
                if f.endswith(".gif"):
                    pngs[f] = (tmp / f).read_bytes()
        for fname, obj in (extra_files or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", fname):
                raise ValueError(f"extra file name {fname!r}; expected a plain file name")
            obj.save(tmp / fname)

        prov = provenance(seed, extra_provenance)
        case_md, case_d = _case_block(case)
        md = [f"# {title}", ""]
        if notes:
            md += [notes, ""]
        if case_md:
            md += ["## Case", "", case_md, ""]
        if metrics is not None:
            md += ["## Metrics", "",
                   "Values at each measured time (3 significant digits; — where undefined). "
                   "Definitions and floors: docs/compare.md.", "", _metrics_table(metrics), ""]
            sc = _summary_scalars(metrics)
            if sc:
                md += [sc, ""]
            if metrics.get("skipped"):
                md += ["Not measured: " + "; ".join(f"`{k}` ({v})" for k, v in metrics["skipped"].items()), ""]
        std = [f for f in figs if not any(f in s.figures for s in (extra_sections or []))]
        if std or anim_md:
            md += ["## Figures", ""]
            for f in std:
                md += [f"![{f.caption or f.name}]({f.name})", ""]
            for line in anim_md:
                md += [line, ""]
        for sec in extra_sections or []:
            md += [f"## {sec.title}", ""]
            if sec.markdown:
                md += [sec.markdown.strip(), ""]
            for f in sec.figures:
                md += [f"![{f.caption or f.name}]({f.name})", ""]
        if problem is not None:
            md += ["## Problem", "", "```", json.dumps(_clean(problem.describe()), indent=1, default=json_default), "```", ""]
        md += ["## Provenance", "", markdown_table(["", ""], [
            ["git commit", f"{prov['git']['commit']}" + (" (uncommitted changes)" if prov["git"].get("dirty") else "")],
            ["seed", str(prov["seed"])], ["host", prov["hostname"]], ["CPU", f"{prov['cpu']} ({prov['cpu_count']} cores)"],
            ["GPU", prov["gpu"]], ["created (UTC)", prov["utc"]],
            ["versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if k != "platform")],
        ]), ""]
        md_text = "\n".join(md)
        (tmp / "report.md").write_text(md_text, encoding="utf-8")
        (tmp / "report.html").write_text(html_page(title, md_text, pngs), encoding="utf-8")
        payload = {
            "schema": REPORT_SCHEMA,
            "title": title,
            "case": case_d,
            "metrics": metrics,
            "sections": {s.title: s.data for s in (extra_sections or []) if s.data is not None},
            "figures": [{"file": f.name, "caption": f.caption} for f in figs],
            "problem": problem.describe() if problem is not None else None,
            "truth_meta": truth.meta if truth is not None else None,
            "model_meta": model.meta if model is not None else None,
        }
        (tmp / "metrics.json").write_text(json.dumps(_clean(payload), indent=1, default=json_default,
                                                     allow_nan=False), encoding="utf-8")
        (tmp / "provenance.json").write_text(json.dumps(_clean(prov), indent=1, default=json_default), encoding="utf-8")
        _swap_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path, force: bool) -> None:
    """Rename ``tmp`` to ``out``; with force, park the old folder aside and delete it only after success."""
    if not out.exists():
        os.rename(tmp, out)  # atomic on POSIX: the folder appears complete or not at all
        return
    if not force:
        raise FileExistsError(f"{out} appeared while the report was written; refusing to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the previous report back
        raise
    shutil.rmtree(old, ignore_errors=True)
