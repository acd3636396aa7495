"""The sweep file of ``mfglab sweep`` (TOML ``[sweep]``, ``[axes]``, ``[[rows]]``): parsing, validation
before any run, the expansion into rows with their ids, and where each row's files live on disk.

The format is documented in docs/sweep.md and :mod:`compare.sweep`.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

__all__ = ["SweepSpec", "SweepError", "load_sweep", "parse_sweep", "row_id", "KINDS", "AXES", "SCHEMA"]

SCHEMA = "mfglab.sweep/1"
KINDS = ("verify", "compare", "converge")

#: the axes of each kind, in the order they name a row; the first is required
AXES = {
    "verify": ("case", "model", "budget", "seed", "truth", "n", "nt"),
    "compare": ("case", "model", "seed", "truth", "n", "nt"),
    "converge": ("case", "method", "levels", "n0", "nt0"),
}
_REQUIRED = {"verify": ("case",), "compare": ("case", "model"), "converge": ("case",)}
_SWEEP_KEYS = ("kind", "out", "metrics", "cache", "n_samples", "times", "animation", "truth_error", "title")
_DEFAULT_METRICS = {
    "verify": ["l1.at_T", "l1.max", "w2.at_T"],
    "compare": ["l1.at_T", "l1.max", "w2.at_T"],
    "converge": ["orders.rho_l1_T", "finest.rho_l1_T", "finest.rho_l1_max"],
}
#: row-id prefixes of the axes (``b200``, ``s1``, ``n64x64`` ...)
_ID_PREFIX = {"case": "", "model": "", "budget": "b", "seed": "s", "truth": "", "n": "n", "nt": "nt",
              "method": "", "levels": "L", "n0": "n0-", "nt0": "nt0-"}


class SweepError(ValueError):
    """A sweep file or option that cannot be run (raised before any row starts)."""


# --------------------------------------------------------------------- the sweep file

@dataclass
class SweepSpec:
    """A validated sweep: its kind, output folder, metrics, options and expanded rows."""

    kind: str
    out: Path
    metrics: list
    rows: list  # [{"id": str, "params": {axis: value}}]
    cache: Path
    options: dict = field(default_factory=dict)  # n_samples, times, animation, truth_error
    title: str = ""
    source: str | None = None
    axes: dict = field(default_factory=dict)  # the axes as given (for the report)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "kind": self.kind, "out": str(self.out), "metrics": list(self.metrics),
                "cache": str(self.cache), "options": dict(self.options), "title": self.title, "source": self.source,
                "axes": self.axes, "rows": self.rows}


def load_sweep(path, out=None) -> SweepSpec:
    """Read and validate a sweep file (``out`` overrides ``[sweep] out``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such sweep file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    return parse_sweep(data, source=path, out=out)


def _where(source) -> str:
    return f"{source}: " if source is not None else ""


def parse_sweep(data: Mapping, source=None, out=None) -> SweepSpec:
    """Validate the parsed TOML ``data`` and expand its rows; every error names the key."""
    w = _where(source)
    unknown = sorted(set(data) - {"sweep", "axes", "rows"})
    if unknown:
        raise SweepError(f"{w}unknown table(s) {unknown}; expected [sweep], [axes] and [[rows]]")
    sw = data.get("sweep")
    if not isinstance(sw, Mapping):
        raise SweepError(f"{w}missing [sweep] table (with at least kind = \"verify\" | \"compare\" | \"converge\")")
    bad = sorted(set(sw) - set(_SWEEP_KEYS))
    if bad:
        raise SweepError(f"{w}[sweep]: unknown key(s) {bad}; expected some of {list(_SWEEP_KEYS)}")
    kind = sw.get("kind", "verify")
    if kind not in KINDS:
        raise SweepError(f"{w}[sweep] kind = {kind!r}; expected one of {list(KINDS)}")
    base = Path(source).resolve().parent if source is not None else Path.cwd()

    metrics = sw.get("metrics", _DEFAULT_METRICS[kind])
    if isinstance(metrics, str):
        metrics = [metrics]
    if (not isinstance(metrics, list) or not metrics
            or not all(isinstance(m, str) and re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", m) for m in metrics)):
        raise SweepError(f"{w}[sweep] metrics = {metrics!r}; expected a non-empty list of dotted names "
                         f"such as \"l1.at_T\" (keys of the run's metrics summary)")
    options = {"animation": False, "truth_error": True}
    for key, typ in (("animation", bool), ("truth_error", bool)):
        if key in sw:
            if not isinstance(sw[key], typ):
                raise SweepError(f"{w}[sweep] {key} = {sw[key]!r}; expected true or false")
            options[key] = sw[key]
    if "n_samples" in sw:
        v = sw["n_samples"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise SweepError(f"{w}[sweep] n_samples = {v!r}; expected an integer ≥ 2")
        options["n_samples"] = v
    if "times" in sw:
        v = sw["times"]
        if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in v):
            raise SweepError(f"{w}[sweep] times = {v!r}; expected a non-empty list of times in [0, T]")
        options["times"] = [float(x) for x in v]
    title = sw.get("title", "")
    if not isinstance(title, str):
        raise SweepError(f"{w}[sweep] title = {title!r}; expected a string")

    stem = Path(source).stem if source is not None else "sweep"
    if out is not None:
        out_dir = Path(out)
    elif "out" in sw:
        if not isinstance(sw["out"], str) or not sw["out"]:
            raise SweepError(f"{w}[sweep] out = {sw['out']!r}; expected a folder path")
        out_dir = Path(sw["out"])
        out_dir = out_dir if out_dir.is_absolute() else Path.cwd() / out_dir
    else:
        out_dir = Path("out") / f"sweep-{stem}"
    out_dir = out_dir.resolve()
    cache = sw.get("cache")
    if cache is not None and (not isinstance(cache, str) or not cache):
        raise SweepError(f"{w}[sweep] cache = {cache!r}; expected a folder path")
    cache_dir = (Path(cache) if Path(cache).is_absolute() else Path.cwd() / cache).resolve() if cache else out_dir / "cache"

    allowed = AXES[kind]
    axes = data.get("axes", {})
    if not isinstance(axes, Mapping):
        raise SweepError(f"{w}[axes] must be a table of lists")
    bad = sorted(set(axes) - set(allowed))
    if bad:
        raise SweepError(f"{w}[axes]: unknown axis {bad}; a {kind} sweep has the axes {list(allowed)}")
    for k, v in axes.items():
        if not isinstance(v, list):
            raise SweepError(f"{w}[axes] {k} = {v!r}; expected a list of values")
        if not v:
            raise SweepError(f"{w}[axes] {k} = []: an axis with no values gives no rows; give at least one value")
        for x in v:
            _check_value(kind, k, x, f"{w}[axes] {k}", base)
        if len({json.dumps(x) for x in v}) != len(v):
            raise SweepError(f"{w}[axes] {k} = {v!r}: repeated values")
    explicit = data.get("rows", [{}])
    if not isinstance(explicit, list) or not explicit or not all(isinstance(r, Mapping) for r in explicit):
        raise SweepError(f"{w}[[rows]] must be a non-empty array of tables")
    for i, r in enumerate(explicit):
        bad = sorted(set(r) - set(allowed))
        if bad:
            raise SweepError(f"{w}[[rows]] #{i + 1}: unknown key(s) {bad}; a {kind} sweep has the axes {list(allowed)}")
        both = sorted(set(r) & set(axes))
        if both:
            raise SweepError(f"{w}[[rows]] #{i + 1}: {both} also in [axes]; give each axis in one place")
        for k, x in r.items():
            _check_value(kind, k, x, f"{w}[[rows]] #{i + 1} {k}", base)

    names = [k for k in allowed if k in axes]
    combos = []
    for r in explicit:
        for combo in itertools.product(*(axes[k] for k in names)):
            params = {**dict(r), **dict(zip(names, combo))}
            params = {k: _normalise(kind, k, params[k], base) for k in allowed if k in params}
            missing = [k for k in _REQUIRED[kind] if k not in params]
            if missing:
                raise SweepError(f"{w}a {kind} row needs {missing} (in [axes] or in every [[rows]] table)")
            _check_row(kind, params, w)
            combos.append(params)
    labels = _model_labels([p["model"] for p in combos]) if kind == "compare" else None
    rows = [{"id": row_id(kind, p, labels), "params": p} for p in combos]
    ids = {}
    for r in rows:
        if r["id"] in ids:
            raise SweepError(f"{w}two rows have the same id {r['id']!r}: {ids[r['id']]} and {r['params']}")
        ids[r["id"]] = r["params"]
    return SweepSpec(kind, out_dir, list(metrics), rows, cache_dir, options, title,
                     str(Path(source).resolve()) if source is not None else None,
                     {k: axes[k] for k in names})


def _check_value(kind: str, key: str, x, where: str, base: Path) -> None:
    from .cases import CASES, model_names

    def need(ok, expected):
        if not ok:
            raise SweepError(f"{where} = {x!r}; expected {expected}")

    is_int = isinstance(x, int) and not isinstance(x, bool)
    if key == "case":
        need(isinstance(x, str), "a case name")
        if x not in CASES:
            raise SweepError(f"{where}: unknown case {x!r}; expected one of: {', '.join(CASES)}")
    elif key == "model" and kind == "verify":
        need(isinstance(x, str), "a model name")
        if x not in model_names():
            raise SweepError(f"{where}: unknown model {x!r}; expected one of: {', '.join(model_names())}")
    elif key == "model":  # compare: a model file or module.py:factory
        need(isinstance(x, str) and x, "a model file (.npz) or module.py:factory")
        file = x.split(":", 1)[0] if re.search(r"\.py:", x) else x
        p = Path(file) if Path(file).is_absolute() else base / file
        if not p.exists():
            raise SweepError(f"{where}: {p} does not exist; expected a model file (.npz) or module.py:factory")
    elif key in ("seed",):
        need(is_int and x >= 0, "an integer ≥ 0")
    elif key in ("budget",):
        need(is_int and x >= 1, "a positive number of training steps")
    elif key in ("truth", "method"):
        from .cases import TRUTH_ROUTES

        need(isinstance(x, str) and x in TRUTH_ROUTES, f"one of {list(TRUTH_ROUTES)}")
    elif key in ("n", "n0"):
        ok = (is_int and x >= 2) or (isinstance(x, list) and x and all(isinstance(k, int) and not isinstance(k, bool)
                                                                      and k >= 2 for k in x))
        need(ok, "nodes per dimension: an integer ≥ 2 or a list of them")
    elif key in ("nt", "nt0"):
        need(is_int and x >= 1, "a positive number of time steps")
    elif key == "levels":
        need(is_int and x >= 2, "an integer ≥ 2 (3 or more for a fitted order)")


def _normalise(kind: str, key: str, x, base: Path):
    if kind == "compare" and key == "model":
        if re.search(r"\.py:", x):
            file, fac = x.split(":", 1)
            return f"{Path(file) if Path(file).is_absolute() else (base / file).resolve()}:{fac}"
        return str(Path(x) if Path(x).is_absolute() else (base / x).resolve())
    if key in ("n", "n0") and isinstance(x, list):
        return [int(k) for k in x]
    return x


def _check_row(kind: str, params: dict, w: str) -> None:
    from .cases import get_case

    c = get_case(params["case"])
    route = params.get("truth") if kind != "converge" else None
    if route is not None and route not in c.truth:
        raise SweepError(f"{w}row {params}: case {c.name} has no truth route {route!r}; expected one of {list(c.truth)}")
    for k in ("n", "n0"):
        v = params.get(k)
        if isinstance(v, list):
            d = c.problem().dim
            if len(v) != d:
                raise SweepError(f"{w}row {params}: {k} = {v} has {len(v)} entries; case {c.name} is {d}-D")
    if kind == "converge":
        return
    try:
        problem = c.problem(n=params.get("n"), nt=params.get("nt"))
    except ValueError as exc:
        raise SweepError(f"{w}row {params}: {exc}") from None
    if kind == "verify":
        from neural.models.registry import get_model

        model = params.get("model") or c.model
        families = get_model(model).families
        if families and problem.family not in families:
            raise SweepError(f"{w}row {params}: model {model!r} trains on family {' or '.join(families)}, "
                             f"but case {c.name} is of family {problem.family!r}")


def _model_labels(specs) -> dict:
    """Short names of model files for row ids: the file's stem, with as many parent folders as it
    takes to tell the sweep's files apart (``model.npz`` files of different runs)."""
    specs = sorted(set(specs))

    def parts(spec):
        file, fac = (spec.rsplit(":", 1) if re.search(r"\.py:", spec) else (spec, None))
        p = Path(file)
        return [p.stem] + [q.name for q in p.parents if q.name], fac

    out = {}
    for depth in range(1, 64):
        labels = {}
        for spec in specs:
            ps, fac = parts(spec)
            labels[spec] = "-".join(reversed(ps[:depth])) + (f"-{fac}" if fac else "")
        if len(set(labels.values())) == len(specs):
            out = labels
            break
    return out or {spec: spec for spec in specs}


def row_id(kind: str, params: Mapping, labels: Mapping | None = None) -> str:
    """A readable, file-system-safe name of a row, from its parameters in axis order."""
    parts = []
    for k in AXES[kind]:
        if k not in params:
            continue
        v = params[k]
        if kind == "compare" and k == "model":
            v = (labels or {}).get(v) or _model_labels([str(v)])[str(v)]
        if isinstance(v, list):
            v = "x".join(str(x) for x in v)
        parts.append(f"{_ID_PREFIX[k]}{v}")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "__".join(parts))


# --------------------------------------------------------------------- a row on disk

def _row_paths(out: Path, rid: str) -> dict:
    base = out / "rows" / rid
    return {"dir": base, "report": base / "report", "work": base / "work", "done": base / "row.json",
            "failed": base / "failed.json"}


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("schema") == SCHEMA else None
