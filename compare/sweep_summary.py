"""The aggregate of a sweep: ``summary.{md,html,json,csv}``, ``rows.csv`` and one figure per metric,
rebuilt from the rows' ``row.json`` files (so it does not depend on the executor or on how many
runs the sweep took)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from pde.io import atomic_write, json_default

from .sweep_file import AXES, SCHEMA, SweepSpec, _model_labels, _read_record, _row_paths

__all__ = ["summarize"]

def _group_key(params: Mapping) -> tuple:
    return tuple((k, json.dumps(v)) for k, v in params.items() if k != "seed")


def summarize(spec: SweepSpec, log: Callable = print) -> dict:
    """Rebuild ``summary.{json,md,html,csv}``, ``rows.csv`` and the figures from the rows' records."""
    out = spec.out
    records = []
    for r in spec.rows:
        p = _row_paths(out, r["id"])
        rec = _read_record(p["done"]) if p["done"].exists() else None
        if rec is None and p["failed"].exists():
            rec = _read_record(p["failed"])
        if rec is None:
            rec = {"id": r["id"], "params": r["params"], "status": "not run"}
        records.append(rec)
    varying = [k for k in AXES[spec.kind] if len({json.dumps(r["params"].get(k)) for r in spec.rows}) > 1]
    group_axes = [k for k in varying if k != "seed"]
    groups: dict = {}
    for r in records:
        groups.setdefault(_group_key({k: r["params"].get(k) for k in AXES[spec.kind] if k in r["params"]}), []).append(r)
    tables = {}
    for m in spec.metrics:
        rows = []
        for key, recs in groups.items():
            params = recs[0]["params"]
            vals = [rec.get("values", {}).get(m) for rec in recs if rec.get("status") == "done"]
            finite = np.array([v for v in vals if v is not None and math.isfinite(v)], float)
            st = {"n": int(finite.size), "rows": len(recs),
                  "mean": float(finite.mean()) if finite.size else None,
                  "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
                  "min": float(finite.min()) if finite.size else None,
                  "max": float(finite.max()) if finite.size else None,
                  "seeds": sorted(rec["params"].get("seed", 0) for rec in recs if rec.get("status") == "done"
                                  and rec.get("values", {}).get(m) is not None)}
            rows.append({"params": {k: v for k, v in params.items() if k != "seed"}, **st})
        tables[m] = rows
    summary = {"schema": SCHEMA, "kind": spec.kind, "title": spec.title, "metrics": spec.metrics,
               "axes": spec.axes, "varying": varying, "tables": tables,
               "rows": [{k: rec.get(k) for k in ("id", "params", "status", "values", "wall_s", "device", "worker",
                                                 "host", "report", "error")} for rec in records],
               "counts": {s: sum(rec.get("status") == s for rec in records) for s in ("done", "failed", "not run")},
               "model_labels": _model_labels([r["params"]["model"] for r in spec.rows]) if spec.kind == "compare" else {}}
    figures = _figures(spec, summary, group_axes)
    md = _summary_markdown(spec, summary, group_axes, figures)
    from .markdown import html_page

    page = html_page(spec.title or "mfglab sweep", md.replace("/report/report.md)", "/report/report.html)"), figures)
    for name, png in figures.items():
        atomic_write(out / name, png)
    atomic_write(out / "summary.md", md)
    atomic_write(out / "summary.html", page)
    from .report import _clean

    atomic_write(out / "summary.json", json.dumps(_clean(summary), indent=1, default=json_default, allow_nan=False))
    atomic_write(out / "summary.csv", _summary_csv(summary, group_axes))
    atomic_write(out / "rows.csv", _rows_csv(spec, records))
    return {"summary": summary, "records": records}


def _fmt_params(params: Mapping, keys, labels: Mapping | None = None) -> list:
    out = []
    for k in keys:
        v = params.get(k)
        if k == "model" and labels and v in labels:
            v = labels[v]
        if isinstance(v, list):
            v = "×".join(str(x) for x in v)
        if k == "model" and isinstance(v, str) and ("/" in v or "\\" in v):
            v = Path(v.split(":")[0]).name + ((":" + v.split(":")[-1]) if re.search(r"\.py:", v) else "")
        out.append("default" if v is None else str(v))
    return out


def _summary_markdown(spec, summary, group_axes, figures) -> str:
    from .report import fmt, markdown_table

    c = summary["counts"]
    title = spec.title or f"mfglab sweep: {spec.kind}"
    md = [f"# {title}", "",
          f"{len(summary['rows'])} rows ({spec.kind}): {c['done']} done, {c['failed']} failed, {c['not run']} not run. "
          "Each table: mean ± std (ddof = 1) with min and max over the seeds of each group; "
          "`n` counts the rows with a finite value.", ""]
    md += ["## Axes", "", markdown_table(["axis", "values"], [[k, ", ".join(_fmt_params({k: v}, [k])[0] for v in vs)]
                                                              for k, vs in spec.axes.items()] or [["—", "—"]]), ""]
    keys = group_axes or [k for k in AXES[spec.kind] if k != "seed" and any(k in r["params"] for r in spec.rows)][:2]
    for m in spec.metrics:
        md += [f"## `{m}`", ""]
        rows = []
        for g in summary["tables"][m]:
            ms = "—" if g["mean"] is None else (fmt(g["mean"]) + (f" ± {fmt(g['std'])}" if g["std"] is not None else ""))
            rows.append(_fmt_params(g["params"], keys, summary.get("model_labels")) + [ms, fmt(g["min"]), fmt(g["max"]), f"{g['n']}/{g['rows']}"])
        md += [markdown_table(keys + ["mean ± std", "min", "max", "n"], rows), ""]
        fig = f"fig_{_safe(m)}.png"
        if fig in figures:
            md += [f"![{m} per group]({fig})", ""]
    md += ["## Rows", ""]
    rows = []
    for r in summary["rows"]:
        link = f"[report]({r['report']})" if r.get("report") else "—"
        vals = [fmt((r.get("values") or {}).get(m)) for m in spec.metrics]
        status = r["status"] if r["status"] != "failed" else f"failed: {r.get('error', '')[:160]}"
        rows.append([f"`{r['id']}`", status] + vals + [fmt(r.get("wall_s")), str(r.get("device") or "—"),
                                                       str(r.get("worker") or "—"), link])
    md += [markdown_table(["row", "status"] + [f"`{m}`" for m in spec.metrics] + ["wall s", "device", "worker",
                                                                                 "report"], rows), ""]
    return "\n".join(md)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _figures(spec, summary, group_axes) -> dict:
    """One figure per metric: against the budget, else against h (with fitted orders), where they vary."""
    x_axis = "budget" if "budget" in group_axes else ("n" if "n" in group_axes else None)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .convergence import fit_order

    if x_axis is None:
        return _group_figures(spec, summary, group_axes, plt)
    figs = {}
    others = [k for k in group_axes if k not in (x_axis, "nt")]
    for m in spec.metrics:
        lines: dict = {}
        for g in summary["tables"][m]:
            if g["mean"] is None:
                continue
            x = g["params"].get(x_axis)
            if x_axis == "n":
                x = _grid_h(g["params"])
                if x is None:
                    continue
            label = ", ".join(_fmt_params(g["params"], others, summary.get("model_labels"))) or m
            lines.setdefault(label, []).append((float(x), g["mean"], g["std"] or 0.0, g["min"], g["max"]))
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6.0, 4.0))
        for label, pts in sorted(lines.items()):
            pts.sort()
            xs, ys, sd = (np.array([p[i] for p in pts]) for i in range(3))
            lab = label
            if x_axis == "n" and len(xs) >= 2 and np.all(ys > 0):
                try:
                    lab += f" (order {fit_order(xs, ys):.2f})"
                except ValueError:
                    pass
            ax.errorbar(xs, ys, yerr=sd if np.any(sd > 0) else None, marker="o", capsize=3, label=lab)
        ax.set_xscale("log")
        if all(p[1] > 0 for pts in lines.values() for p in pts):
            ax.set_yscale("log")
        ax.set_xlabel("training steps (budget)" if x_axis == "budget" else "h")
        ax.set_ylabel(m)
        ax.set_title(f"{m}: mean ± std over seeds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        figs[f"fig_{_safe(m)}.png"] = _png(fig, plt)
    return figs


def _group_figures(spec, summary, group_axes, plt) -> dict:
    """Neither budget nor grid varies: per metric, every row's value by group, with mean ± std."""
    figs = {}
    rows = [r for r in summary["rows"] if r.get("status") == "done"]
    for m in spec.metrics:
        groups = [g for g in summary["tables"][m] if g["mean"] is not None]
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 2), 4.0))
        labels = []
        for i, g in enumerate(groups):
            labels.append("\n".join(_fmt_params(g["params"], group_axes, summary.get("model_labels"))) or m)
            vals = [(r.get("values") or {}).get(m) for r in rows
                    if {k: v for k, v in r["params"].items() if k != "seed"} == g["params"]]
            vals = [v for v in vals if v is not None]
            ax.plot([i] * len(vals), vals, "o", color="0.6", ms=4, zorder=1)
            ax.errorbar([i], [g["mean"]], yerr=[g["std"] or 0.0], fmt="s", color="C0", capsize=4, zorder=2)
        ax.set_xticks(range(len(groups)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(m)
        ax.set_title(f"{m}: rows (grey) and mean ± std over seeds")
        ax.grid(True, axis="y", alpha=0.3)
        figs[f"fig_{_safe(m)}.png"] = _png(fig, plt)
    return figs


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _grid_h(params: Mapping):
    from .cases import get_case

    try:
        p = get_case(params["case"]).problem(n=params.get("n"), nt=params.get("nt"))
    except (ValueError, KeyError):
        return None
    return float(max(p.grid().h))


def _summary_csv(summary, group_axes) -> str:
    buf = io.StringIO()
    axes = [k for k in AXES[summary["kind"]] if k != "seed"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric"] + axes + ["n_values", "n_rows", "mean", "std", "min", "max", "seeds"])
    for m, rows in summary["tables"].items():
        for g in rows:
            w.writerow([m] + [_csv(g["params"].get(k)) for k in axes]
                       + [g["n"], g["rows"]] + [_csv(g[k]) for k in ("mean", "std", "min", "max")]
                       + [" ".join(str(s) for s in g["seeds"])])
    return buf.getvalue()


def _rows_csv(spec, records) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    axes = list(AXES[spec.kind])
    w.writerow(["id", "status"] + axes + list(spec.metrics) + ["wall_s", "device", "worker", "host", "report", "error"])
    for r in records:
        vals = r.get("values") or {}
        w.writerow([r["id"], r.get("status")] + [_csv(r["params"].get(k)) for k in axes]
                   + [_csv(vals.get(m)) for m in spec.metrics]
                   + [_csv(r.get(k)) for k in ("wall_s", "device", "worker", "host", "report", "error")])
    return buf.getvalue()


def _csv(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)
