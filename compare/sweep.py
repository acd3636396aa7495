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
import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from pde.io import atomic_write, json_default

from .sweep_file import AXES, KINDS, SCHEMA, SweepError, SweepSpec, _read_record, _row_paths, load_sweep, parse_sweep
from .sweep_summary import summarize

__all__ = ["SweepSpec", "SweepError", "SweepResult", "load_sweep", "parse_sweep", "run_sweep", "summarize",
           "KINDS", "AXES", "EXECUTORS"]

EXECUTORS = ("serial", "process", "mpi")


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
        prev = _read_record(old)
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
