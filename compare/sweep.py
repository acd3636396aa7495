r"""Sweeps: many ``verify`` / ``compare`` / ``converge`` runs from one file, on one or many machines.

A sweep file (TOML) names the runs to combine and the metrics to tabulate::

    [sweep]
    kind = "verify"                 # verify | compare | converge
    out = "out/sweep-demo"          # default: out/sweep-<file stem>, beside the working directory
    metrics = ["l1.at_T", "w2.at_T", "kinetic_ratio_model"]

    [axes]                          # the full product of these lists ...
    case = ["otflow-gaussian-1d", "sgm-mixture-1d"]
    seed = [0, 1, 2]
    budget = [100, 200]

    [[rows]]                        # ... times these explicit partial rows (optional)
    model = "otflow"

Each row of the product is one run with its own folder ``OUT/rows/<id>/``: ``report/`` (the
run's report folder), ``work/`` (its checkpoints, so an interrupted row resumes from its last
checkpoint) and ``row.json`` (written atomically once the report is complete: parameters, the
run's numbers, wall time, device, host). A row that raised leaves ``failed.json`` with its error
line instead; the other rows go on. All rows share the truth cache ``OUT/cache`` (or
``[sweep] cache``), which :mod:`compare.cache` keeps safe under concurrent writers.

A re-run of the same sweep skips the rows with a ``row.json``, skips the failed ones unless
``retry_failed``, and runs the others (resuming their training from the checkpoints). The
aggregate (``summary.{md,html,json,csv}``, ``rows.csv``, one figure per metric) is rebuilt
from every ``row.json`` after each run, so it is the same whether the rows ran in one go or in
several, serially, in processes or on MPI ranks (the rows' seeds are explicit).

Executors (:func:`run_sweep`): ``serial``; ``process`` (``concurrent.futures.ProcessPoolExecutor``,
spawned workers, ``threads`` torch/numba threads each so that ``jobs × threads`` ≤ cores); ``mpi``
(``mpi4py.futures.MPIPoolExecutor``: launch as ``mpiexec -n K python -m mpi4py.futures -m
compare.cli sweep FILE --executor mpi``, K − 1 workers, across nodes under SLURM/PBS). ``devices``
(``["cuda:0", "cuda:1"]``) gives each worker one device, round-robin over the workers.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from pde.io import atomic_write, json_default

__all__ = ["SweepSpec", "SweepError", "SweepResult", "load_sweep", "parse_sweep", "run_sweep", "summarize",
           "KINDS", "AXES", "EXECUTORS"]

SCHEMA = "mfglab.sweep/1"
KINDS = ("verify", "compare", "converge")
EXECUTORS = ("serial", "process", "mpi")

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
        return [p.stem] + [q.name for q in p.parents if q.name][:], fac

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


# --------------------------------------------------------------------- one row

_WORKER = {"device": None, "threads": 1, "label": "main"}


def _init_worker(threads: int, devices: Sequence[str] | None, counter=None) -> None:
    """Set torch and numba threads and pick this worker's device (round-robin over the workers)."""
    threads = int(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ["MFGLAB_TORCH_THREADS"] = str(threads)
    _WORKER["threads"] = threads
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):  # pragma: no cover
        pass
    index = 0
    if counter is not None:  # a multiprocessing.Value shared by the pool's workers
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        _WORKER["label"] = f"process {index}"
        _watch_parent()
    elif "mpi4py.MPI" in sys.modules:  # an MPI worker (never initialise MPI just to ask)
        try:
            from mpi4py import MPI

            if MPI.COMM_WORLD.size > 1:
                index = max(0, MPI.COMM_WORLD.rank - 1)
                _WORKER["label"] = f"rank {MPI.COMM_WORLD.rank}"
        except ImportError:
            pass
    _WORKER["device"] = devices[index % len(devices)] if devices else None


def _watch_parent(period: float = 1.0) -> None:
    """Exit this pool worker once its parent is gone (killed with -9) and no row is running.

    Without it an orphaned worker would wait forever for work on a queue nobody feeds; a row in
    progress is finished first (its report and row.json complete, so the re-run skips it).
    """
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(period)
            if os.getppid() != parent and not _WORKER.get("busy"):
                os._exit(0)

    threading.Thread(target=watch, name="mfglab-sweep-parent-watch", daemon=True).start()


def _flatten(d, prefix="") -> dict:
    out = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (bool, np.bool_)):
        pass
    elif isinstance(d, (int, float, np.integer, np.floating)):
        v = float(d)
        out[prefix[:-1]] = v if math.isfinite(v) else None
    return out


def _row_paths(out: Path, rid: str) -> dict:
    base = out / "rows" / rid
    return {"dir": base, "report": base / "report", "work": base / "work", "done": base / "row.json",
            "failed": base / "failed.json"}


def _run_one(kind: str, params: dict, paths: dict, cache: Path, options: dict, device) -> tuple[dict, str, dict]:
    """Run the row; return (numbers, report path, facts about the run)."""
    if kind == "verify":
        from .verify import run_verify

        kw = {k: options[k] for k in ("n_samples", "times") if k in options}
        res = run_verify(params["case"], paths["report"], budget=params.get("budget"), seed=params.get("seed", 0),
                         device=device, truth_method=params.get("truth"), n=params.get("n"), nt=params.get("nt"),
                         force=True, work_dir=paths["work"], progress=False, model=params.get("model"),
                         animation=options.get("animation", False), truth_error=options.get("truth_error", True),
                         truth_cache=cache, **kw)
        return (_flatten(res.metrics.get("summary", {})), str(res.out_dir),
                {"truth_cached": bool(res.truth_cached), "truth_file": str(res.truth_path) if res.truth_path else None})
    if kind == "compare":
        from .comparison import run_compare

        kw = {k: options[k] for k in ("n_samples", "times") if k in options}
        res = run_compare(params["model"], paths["report"], case=params["case"], truth_method=params.get("truth"),
                          n=params.get("n"), nt=params.get("nt"), seed=params.get("seed", 0), force=True,
                          work_dir=paths["work"], animation=options.get("animation", False),
                          truth_error=options.get("truth_error", True), truth_cache=cache, **kw)
        return _flatten(res.metrics.get("summary", {})), str(res.out_dir), {}
    from .convergence import run_convergence

    method = params.get("method", "fd")
    res = run_convergence(params["case"], method, params.get("levels", 4), out_dir=paths["report"],
                          n0=params.get("n0"), nt0=params.get("nt0"), force=True, progress=False,
                          solver_options={"progress": False} if method in ("fd", "fe") else None)
    vals = {f"orders.{k}": (float(v) if v is not None else None) for k, v in res.orders.items()}
    for label, r in (("finest", res.rows[-1]), ("coarsest", res.rows[0])):
        vals.update({f"{label}.{k}": v for k, v in _flatten(r).items()})
    return vals, str(res.out_dir), {}


def run_row(kind: str, row: Mapping, out: str, cache: str, options: Mapping, device=None) -> dict:
    """Run one row and write its ``row.json`` (or ``failed.json``); return the record.

    Called in the executor's workers; never raises for an error of the run itself (the record
    says ``"status": "failed"`` with the error line), only for an interruption.
    """
    out = Path(out)
    paths = _row_paths(out, row["id"])
    paths["dir"].mkdir(parents=True, exist_ok=True)
    dev = device if device is not None else _WORKER["device"]
    t0 = time.perf_counter()
    rec = {"schema": SCHEMA, "id": row["id"], "kind": kind, "params": dict(row["params"]), "options": dict(options),
           "device": _device_label(dev),
           "worker": _WORKER["label"], "host": socket.gethostname(), "pid": os.getpid(),
           "threads": _WORKER["threads"], "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _WORKER["busy"] = True
    try:
        try:
            values, report, facts = _run_one(kind, dict(row["params"]), paths, Path(cache), dict(options), dev)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the row failed; the sweep goes on
            rec.update(status="failed", wall_s=time.perf_counter() - t0,
                       error=f"{type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}")
            atomic_write(paths["failed"], json.dumps(rec, indent=1, default=json_default))
            return rec
        rec.update(status="done", wall_s=time.perf_counter() - t0, values=values, **facts,
                   report=os.path.relpath(Path(report) / ("report.md"), out))
        paths["failed"].unlink(missing_ok=True)
        atomic_write(paths["done"], json.dumps(rec, indent=1, default=json_default, allow_nan=False))
        return rec
    finally:
        _WORKER["busy"] = False


def _device_label(dev) -> str:
    """The device a row trains on: the one given, else what ``auto`` resolves to here."""
    if dev is not None:
        return str(dev)
    try:
        import torch

        return "auto: " + ("cuda" if torch.cuda.is_available() else "cpu")
    except ImportError:  # pragma: no cover
        return "auto"


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("schema") == SCHEMA else None


# --------------------------------------------------------------------- running a sweep

@dataclass
class SweepResult:
    """Where the summary went, the row records, and what this run did."""

    out_dir: Path
    records: list
    ran: list  # ids run now
    skipped: list  # ids already done
    failed: list  # ids whose record says failed (now or before)
    interrupted: list  # ids not run because a worker died
    wall_time_s: float
    summary: dict

    @property
    def complete(self) -> bool:
        return not self.failed and not self.interrupted


def check_devices(devices: Sequence[str] | None) -> list | None:
    """Validate a device list before any row starts (a missing GPU is an error naming it)."""
    if not devices:
        return None
    from neural.devices import resolve_device

    out = []
    for d in devices:
        d = str(d).strip()
        if not d:
            raise SweepError(f"devices={list(devices)}: an empty name; expected cpu, cuda or cuda:N")
        try:
            resolve_device(d)
        except ValueError as exc:
            raise SweepError(f"--devices {','.join(devices)}: {exc}") from None
        out.append(d)
    return out


def run_sweep(spec: SweepSpec, *, executor: str = "serial", jobs: int | None = None, devices=None,
              threads: int = 1, retry_failed: bool = False, log: Callable = print) -> SweepResult:
    """Run the rows of ``spec`` that are not done yet, then rebuild the summary.

    Args:
        spec: from :func:`load_sweep`.
        executor: ``serial``, ``process`` or ``mpi`` (see the module docstring).
        jobs: worker processes of ``process`` (default: cores // threads, at least 1).
        devices: torch devices, one per worker round-robin (default: each run's automatic choice).
        threads: torch and numba threads per worker.
        retry_failed: run the rows that failed in an earlier run again.
        log: progress lines.
    """
    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise SweepError(f"executor={executor!r}; expected one of {list(EXECUTORS)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SweepError(f"threads={threads!r}; expected a positive integer")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise SweepError(f"jobs={jobs!r}; expected a positive integer")
    if jobs is not None and executor != "process":
        raise SweepError(f"jobs={jobs} is for --executor process (mpi: the number of ranks of mpiexec)")
    devices = check_devices(devices)
    mpi_size = None
    if executor == "mpi":
        try:
            from mpi4py import MPI
        except ImportError:
            raise SweepError("--executor mpi needs mpi4py (pip install mpi4py)") from None
        mpi_size = MPI.COMM_WORLD.size
        if mpi_size < 2:
            raise SweepError("--executor mpi runs on the workers of `mpiexec -n K python -m mpi4py.futures -m "
                             "compare.cli sweep FILE --executor mpi` (K ≥ 2: one manager, K − 1 workers); "
                             "this process has no MPI workers")

    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    spec_json = json.dumps(spec.to_dict(), indent=1, default=json_default)
    old = out / "sweep.json"
    if old.exists():
        prev = _read_record_any(old)
        if prev is not None and (prev.get("kind") != spec.kind or prev.get("rows") != json.loads(spec_json)["rows"]):
            log(f"sweep: {out} held another sweep's rows; rows of this one are added beside them "
                "(the summary lists this sweep's rows only)")
    atomic_write(old, spec_json)

    todo, skipped, failed_before = [], [], []
    for r in spec.rows:
        p = _row_paths(out, r["id"])
        done = _read_record(p["done"]) if p["done"].exists() else None
        if done is not None and done.get("status") == "done" and done.get("params") == r["params"]:
            if done.get("options") == json.loads(json.dumps(spec.options)):
                skipped.append(r["id"])
                continue
            log(f"  {r['id']}: done before with other [sweep] options ({done.get('options')}); running it again")
            p["done"].unlink()
        if p["failed"].exists() and not retry_failed:
            failed_before.append(r["id"])
            continue
        todo.append(r)
    log(f"sweep: {len(spec.rows)} rows ({spec.kind}); {len(skipped)} done before, "
        f"{len(failed_before)} failed before{' (not retried: --retry-failed runs them)' if failed_before else ''}, "
        f"{len(todo)} to run with executor {executor}")
    ran, interrupted = [], []
    args = (spec.kind, str(out), str(spec.cache), spec.options)
    progress = _Progress(len(todo), log)
    if todo:
        with _sigterm_as_interrupt():
            if executor == "serial":
                _init_worker(threads, devices)
                for r in todo:
                    rec = run_row(args[0], r, *args[1:])
                    ran.append(r["id"])
                    progress.done(rec)
            else:
                ran, interrupted = _run_pool(executor, todo, args, jobs, threads, devices, progress, log)
    result = summarize(spec, log=log)
    recs = result["records"]
    failed = [r["id"] for r in recs if r.get("status") == "failed"]
    res = SweepResult(out, recs, ran, skipped, failed, interrupted, time.perf_counter() - t0, result["summary"])
    msg = (f"sweep: {sum(r.get('status') == 'done' for r in recs)}/{len(spec.rows)} rows done"
           + (f", {len(failed)} failed" if failed else "") + (f", {len(interrupted)} interrupted" if interrupted else "")
           + f"; summary in {out / 'summary.md'} ({res.wall_time_s:.0f} s)")
    log(msg)
    return res


def _read_record_any(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _Progress:
    def __init__(self, total: int, log):
        self.total, self.n, self.t0, self.log = total, 0, time.perf_counter(), log

    def done(self, rec: Mapping) -> None:
        self.n += 1
        el = time.perf_counter() - self.t0
        eta = el / self.n * (self.total - self.n)
        what = "done" if rec.get("status") == "done" else f"FAILED ({rec.get('error', '?')})"
        self.log(f"  [{self.n}/{self.total}] {rec['id']} {what} in {rec.get('wall_s', 0):.1f} s "
                 f"on {rec.get('worker', '?')} ({rec.get('device')}); elapsed {el:.0f} s, ~{eta:.0f} s left")


def _run_pool(executor, todo, args, jobs, threads, devices, progress, log):
    import concurrent.futures as cf

    ran, interrupted = [], []
    if executor == "process":
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork of a process holding torch/numba threads
        counter = ctx.Value("i", 0)
        n = jobs or max(1, (os.cpu_count() or 1) // threads)
        pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                                      initargs=(threads, devices, counter))
        log(f"sweep: {n} worker processes × {threads} thread(s)")
    else:
        from mpi4py import MPI
        from mpi4py.futures import MPIPoolExecutor

        pool = MPIPoolExecutor(initializer=_init_worker, initargs=(threads, devices))
        log(f"sweep: {MPI.COMM_WORLD.size - 1} MPI workers × {threads} thread(s)")
    futures = {}
    try:
        futures = {pool.submit(run_row, args[0], r, *args[1:]): r["id"] for r in todo}
        for fut in cf.as_completed(futures):
            rid = futures[fut]
            try:
                rec = fut.result()
            except cf.BrokenExecutor as exc:  # a worker died (kill -9, out of memory): the pool is broken
                interrupted.append(rid)
                log(f"  {rid}: not completed ({type(exc).__name__}: a worker died); the re-run resumes it")
                continue
            except Exception as exc:  # pragma: no cover - run_row records the row's errors itself
                interrupted.append(rid)
                log(f"  {rid}: not completed ({type(exc).__name__}: {exc})")
                continue
            ran.append(rid)
            progress.done(rec)
    except KeyboardInterrupt:
        for f in futures:
            f.cancel()
        _terminate(pool, executor)
        raise
    pool.shutdown(wait=True)
    return ran, interrupted


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``scancel``, ``kill``) stops the sweep like Ctrl-C: workers ended, rows resume on the re-run."""
    if not _main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _terminate(pool, executor: str) -> None:
    """Stop the workers now (their rows resume from their checkpoints on the re-run)."""
    if executor == "process":
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
    else:
        pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------- the summary

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


# --------------------------------------------------------------------- CLI

def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="many verify/compare/converge runs from a sweep file → summary folder",
                       description="Run every row of a sweep file (TOML: [sweep], [axes], [[rows]]; docs/sweep.md) "
                                   "with its own report folder, sharing the truth cache; re-runs skip finished "
                                   "rows and resume interrupted ones; writes summary.md/html/json/csv, rows.csv "
                                   "and one figure per metric.")
    p.add_argument("file", type=Path, help="the sweep file (.toml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: [sweep] out, else out/sweep-STEM)")
    p.add_argument("--executor", choices=EXECUTORS, default="serial",
                   help="serial (default); process (local worker processes, --jobs); mpi (under "
                        "`mpiexec -n K python -m mpi4py.futures -m compare.cli sweep ...`)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes of --executor process "
                                                          "(default: cores // --threads)")
    p.add_argument("--threads", type=int, default=1, help="torch/numba threads per worker (default 1)")
    p.add_argument("--devices", default=None, help="comma-separated torch devices, one per worker round-robin "
                                                   "(e.g. cuda:0,cuda:1; default: each run's automatic choice)")
    p.add_argument("--retry-failed", action="store_true", help="run the rows that failed before again")
    p.add_argument("--dry-run", action="store_true", help="validate the file and list its rows; run nothing")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    spec = load_sweep(args.file, out=args.out)
    devices = [d for d in args.devices.split(",")] if args.devices else None
    if args.dry_run:
        check_devices(devices)
        print(f"sweep {args.file}: {len(spec.rows)} {spec.kind} rows → {spec.out}")
        for r in spec.rows:
            print(f"  {r['id']}")
        return 0
    res = run_sweep(spec, executor=args.executor, jobs=args.jobs, devices=devices, threads=args.threads,
                    retry_failed=args.retry_failed, log=lambda s: print(s, flush=True))
    return 0 if res.complete else 1
