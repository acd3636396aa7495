"""``mfglab sweep``: the same numbers under every executor, resumable after a kill, one safe truth cache.

The sweeps are 2 × 2 × 2 (case × budget × seed) verify runs on tiny budgets (3 and 6 steps),
so that each row takes a few seconds; what is checked is the bookkeeping, not the models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compare.sweep import SweepError, load_sweep, parse_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]

TINY = """
[sweep]
kind = "verify"
out = "{out}"
metrics = ["l1.at_T", "w2.at_T", "kinetic_ratio_model"]
truth_error = false
n_samples = 300
{extra}

[axes]
case = ["otflow-gaussian-1d", "sgm-mixture-1d"]
budget = {budgets}
seed = [0, 1]
"""


def _write(tmp_path, name="s.toml", out=None, budgets="[3, 6]", extra=""):
    out = out or tmp_path / "out"
    f = tmp_path / name
    f.write_text(TINY.format(out=out, budgets=budgets, extra=extra))
    return f


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_mpi_yield_when_idle": "1",
            "MFGLAB_TORCH_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "compare.cli", "sweep", *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=kw.get("timeout", 600))


def _numbers(out: Path):
    """Per-row values and the summary tables: what must not depend on the executor."""
    s = json.loads((out / "summary.json").read_text())
    rows = {r["id"]: (r["status"], r["values"]) for r in s["rows"]}
    return rows, s["tables"]


def _quiet(*a):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 2 × 2 × 2 sweep run serially in this process: (sweep file, output folder)."""
    tmp = tmp_path_factory.mktemp("sweep-ref")
    f = _write(tmp)
    res = run_sweep(load_sweep(f, out=tmp / "serial"), devices=["cpu"], log=_quiet)  # cpu also on GPU machines
    assert res.complete and len(res.ran) == 8
    return f, tmp / "serial", res


# --------------------------------------------------------------------- bad input

@pytest.mark.parametrize("text,match", [
    ("[sweep]\nkind='verify'\n[axes]\ncase=['nope']", r"unknown case 'nope'; expected one of: .*otflow-gaussian-1d"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d']\nmodel=['flowz']", r"unknown model 'flowz'; expected one of"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d']\nseed=[]", r"\[axes\] seed = \[\]: an axis with no values"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d']\nsede=[0]", r"unknown axis \['sede'\]"),
    ("[sweep]\nkinds='verify'\n[axes]\ncase=['otflow-gaussian-1d']", r"\[sweep\]: unknown key\(s\) \['kinds'\]"),
    ("[sweep]\nkind='train'\n[axes]\ncase=['otflow-gaussian-1d']", r"kind = 'train'; expected one of"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d']\nbudget=[0]", r"budget = 0; expected a positive number"),
    ("[sweep]\n[axes]\ncase='otflow-gaussian-1d'", r"case = 'otflow-gaussian-1d'; expected a list"),
    ("[sweep]\n[axes]\nseed=[0]", r"a verify row needs \['case'\]"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d']\ntruth=['fd', 'ot']", r"has no truth route 'ot'"),
    ("[sweep]\n[axes]\ncase=['bridge-gaussian-2d']\nmodel=['otflow']", r"model 'otflow' trains on family otflow"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d']\nn=[[32, 32]]", r"n = \[32, 32\] has 2 entries; case .* is 1-D"),
    ("[sweep]\nmetrics=['l1 at T']\n[axes]\ncase=['otflow-gaussian-1d']", r"metrics = \['l1 at T'\]; expected"),
    ("[sweep]\n[axes]\nseed=[0]\n[[rows]]\ncase='otflow-gaussian-1d'\nseed=1", r"\['seed'\] also in \[axes\]"),
    ("[sweep]\n[axes]\ncase=['otflow-gaussian-1d', 'otflow-gaussian-1d']", r"repeated values"),
    ("[sweep]\nkind='compare'\n[axes]\ncase=['otflow-gaussian-1d']\nmodel=['missing.npz']", r"missing.npz does not exist"),
])
def test_bad_sweep_file_is_refused_naming_the_key(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(SweepError, match=match):
        load_sweep(f, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_missing_gpu_and_a_bad_file_before_any_run(tmp_path):
    f = _write(tmp_path)
    import torch

    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU (cuda:0 on a CPU machine)
    res = _cli(f, "--devices", f"cpu,{missing}", "--executor", "process", "--jobs", "2")
    assert res.returncode == 2, res.stderr
    assert missing in res.stderr and "cuda" in res.stderr.lower()
    assert not (tmp_path / "out").exists()
    (tmp_path / "b.toml").write_text("[sweep]\n[axes]\ncase=['nope']\n")
    res = _cli(tmp_path / "b.toml")
    assert res.returncode == 2 and "unknown case 'nope'" in res.stderr
    res = _cli(f, "--dry-run")
    assert res.returncode == 0 and res.stdout.count("otflow-gaussian-1d__b") == 4, res.stdout
    assert not (tmp_path / "out").exists()


def test_rows_product_times_explicit_rows_and_ids():
    spec = parse_sweep({"sweep": {"kind": "verify"}, "axes": {"seed": [0, 1]},
                        "rows": [{"case": "otflow-gaussian-1d", "budget": 5},
                                 {"case": "sgm-mixture-1d", "n": [64], "nt": 20}]}, out="/tmp/x")
    assert [r["id"] for r in spec.rows] == ["otflow-gaussian-1d__b5__s0", "otflow-gaussian-1d__b5__s1",
                                            "sgm-mixture-1d__s0__n64__nt20", "sgm-mixture-1d__s1__n64__nt20"]
    assert spec.rows[2]["params"] == {"case": "sgm-mixture-1d", "seed": 0, "n": [64], "nt": 20}


# --------------------------------------------------------------------- executors agree

def test_serial_and_process_executors_give_the_same_numbers(tmp_path, reference):
    f, serial, a = reference
    b = run_sweep(load_sweep(f, out=tmp_path / "proc"), executor="process", jobs=2, devices=["cpu", "cpu"],
                  log=_quiet)
    assert b.complete and len(b.ran) == 8
    assert {r["device"] for r in b.records} == {"cpu"}  # the round-robin path of --devices
    ra, ta = _numbers(serial)
    rb, tb = _numbers(tmp_path / "proc")
    assert ra == rb  # bitwise: explicit seeds, one thread per worker
    assert ta == tb
    assert {r["worker"] for r in b.records} == {"process 0", "process 1"}
    for name in ("summary.md", "summary.html", "summary.csv", "rows.csv", "fig_l1_at_T.png"):
        assert (tmp_path / "proc" / name).stat().st_size > 0
    # the truths were solved once per case and shared through the cache
    assert sum(not r["truth_cached"] for r in a.records) == 2
    # a re-run does nothing and rebuilds the same summary
    c = run_sweep(load_sweep(f, out=serial), log=_quiet)
    assert c.ran == [] and len(c.skipped) == 8 and _numbers(serial) == (ra, ta)
    # mean ± std over the two seeds of a group, from the rows
    g = next(g for g in ta["l1.at_T"] if g["params"] == {"case": "sgm-mixture-1d", "budget": 6})
    vals = [ra[f"sgm-mixture-1d__b6__s{s}"][1]["l1.at_T"] for s in (0, 1)]
    assert g["mean"] == pytest.approx(sum(vals) / 2, rel=1e-15) and g["n"] == 2
    assert g["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5, rel=1e-12)


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed")
def test_mpi_executor_gives_the_same_numbers(tmp_path, reference):
    f, serial, _ = reference
    cmd = ["mpirun", "-n", "3", "--allow-run-as-root", "--oversubscribe", sys.executable, "-m", "mpi4py.futures",
           "-m", "compare.cli", "sweep", str(f), "--out", str(tmp_path / "mpi"), "--executor", "mpi", "--devices", "cpu"]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert _numbers(tmp_path / "mpi") == _numbers(serial)
    s = json.loads((tmp_path / "mpi" / "summary.json").read_text())
    assert {r["worker"] for r in s["rows"]} == {"rank 1", "rank 2"}


def test_mpi_executor_without_workers_is_refused(tmp_path):
    pytest.importorskip("mpi4py")
    res = _cli(_write(tmp_path), "--executor", "mpi")
    assert res.returncode == 2 and "mpiexec -n K python -m mpi4py.futures" in res.stderr


# --------------------------------------------------------------------- interruption and failures

def _workers(parent: int) -> list:
    """The pool's worker processes (spawned children running spawn_main; not the resource tracker)."""
    out = []
    for pid in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.append(int(pid))
    return out


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _done(out: Path) -> set:
    return {p.parent.name for p in (out / "rows").glob("*/row.json")}


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep")
@pytest.mark.parametrize("how", ["sigterm-parent", pytest.param("kill9-worker", marks=pytest.mark.slow)])
def test_interrupted_sweep_resumes_to_the_uninterrupted_summary(tmp_path, how, reference):
    f, ref, _ = reference
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "compare.cli", "sweep", str(f), "--out", str(out),
                             "--executor", "process", "--jobs", "2", "--devices", "cpu"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(_done(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    if how == "sigterm-parent":
        proc.send_signal(signal.SIGTERM)
    else:
        os.kill(workers[0], signal.SIGKILL)
    log, _ = proc.communicate(timeout=300)
    done_at_kill = _done(out)
    assert proc.returncode == (130 if how == "sigterm-parent" else 1), log
    assert len(done_at_kill) < 8, "the sweep finished before it was interrupted; the test checked nothing"
    deadline = time.time() + 20
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]  # no orphaned worker goes on writing
    res = run_sweep(load_sweep(f, out=out), devices=["cpu"], log=_quiet)
    assert res.complete
    assert set(res.skipped) == done_at_kill  # rows finished before the kill are not redone
    assert len(res.ran) == 8 - len(done_at_kill)
    assert _numbers(out) == _numbers(ref)


FACTORY = '''
class Broken:
    name = "broken"
def make(problem=None):
    raise RuntimeError("this model's weights are missing")
'''


def test_a_failed_row_is_recorded_and_retried_only_on_request(tmp_path):
    (tmp_path / "broken.py").write_text(FACTORY)
    f = tmp_path / "c.toml"
    f.write_text(f"""
[sweep]
kind = "compare"
out = "{tmp_path / 'out'}"
truth_error = false
[axes]
case = ["otflow-gaussian-1d"]
model = ["broken.py:make"]
seed = [0]
""")
    spec = load_sweep(f)
    res = run_sweep(spec, log=_quiet)
    assert not res.complete and res.failed == ["otflow-gaussian-1d__broken-make__s0"]
    rec = json.loads((tmp_path / "out" / "rows" / res.failed[0] / "failed.json").read_text())
    assert "weights are missing" in rec["error"]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["counts"] == {"done": 0, "failed": 1, "not run": 0}
    again = run_sweep(spec, log=_quiet)
    assert again.ran == [] and again.failed == res.failed
    retried = run_sweep(spec, retry_failed=True, log=_quiet)
    assert retried.ran == res.failed and retried.failed == res.failed
    assert _cli(f).returncode == 1


# --------------------------------------------------------------------- one cache, two sweeps

def test_two_sweeps_at_once_share_one_truth_cache(tmp_path):
    cache = tmp_path / "cache"
    extra = f'cache = "{cache}"'
    files = [_write(tmp_path, name=f"s{i}.toml", out=tmp_path / f"out{i}", budgets="[3]", extra=extra)
             for i in (0, 1)]
    procs = [subprocess.Popen([sys.executable, "-m", "compare.cli", "sweep", str(fi)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for fi in files]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    recs = [r for i in (0, 1) for r in json.loads((tmp_path / f"out{i}" / "summary.json").read_text())["rows"]]
    full = [json.loads(p.read_text()) for i in (0, 1) for p in (tmp_path / f"out{i}" / "rows").glob("*/row.json")]
    # two cases → two cache entries, each solved by exactly one of the 8 rows of the two sweeps
    assert sorted(p.name for p in cache.glob("*.npz")) == sorted({Path(r["truth_file"]).name for r in full})
    assert len(list(cache.glob("*.npz"))) == 2 and sum(not r["truth_cached"] for r in full) == 2
    assert not list(cache.glob(".*"))  # no temporary file left behind
    from pde.solution import MFGSolution

    for p in cache.glob("*.npz"):
        assert MFGSolution.load(p).meta["cache_key"] in p.name
    by_id = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r["values"])
    assert all(len(v) == 2 and v[0] == v[1] for v in by_id.values())


def test_readme_sweep_example_is_the_shipped_file_and_is_valid():
    import re

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```toml\n# examples/sweeps/budget.toml\n(.*?)```", readme, re.S).group(1)
    assert block == (ROOT / "examples" / "sweeps" / "budget.toml").read_text()
    spec = load_sweep(ROOT / "examples" / "sweeps" / "budget.toml", out="/nonexistent/out")
    assert len(spec.rows) == 12 and spec.metrics == ["l1.at_T", "w2.at_T", "kinetic_ratio_model"]


def test_shipped_hjb_sgm_sweep_is_valid():
    spec = load_sweep(ROOT / "examples" / "sweeps" / "hjb_sgm.toml", out="/nonexistent/out")
    assert len(spec.rows) == 36
    assert {r["params"]["model"] for r in spec.rows} == {"sgm", "hjb-sgm"}


def test_converge_sweep_tabulates_fitted_orders(tmp_path):
    """FD on the 1D Gaussian closed form: the sweep's order is the one `mfglab converge` fits (≈ 1)."""
    f = tmp_path / "c.toml"
    f.write_text(f"""
[sweep]
kind = "converge"
out = "{tmp_path / 'out'}"
metrics = ["orders.rho_l1_T", "finest.rho_l1_T"]
[axes]
case = ["otflow-gaussian-1d"]
method = ["fd"]
levels = [3]
n0 = [50]
nt0 = [10]
""")
    res = run_sweep(load_sweep(f), log=_quiet)
    assert res.complete
    from compare.convergence import run_convergence

    direct = run_convergence("otflow-gaussian-1d", "fd", 3, n0=50, nt0=10, progress=False)
    v = res.records[0]["values"]
    assert v["orders.rho_l1_T"] == direct.orders["rho_l1_T"]
    assert v["finest.rho_l1_T"] == direct.rows[-1]["rho_l1_T"]
    # first-order upwind FD (docs/fd.md); measured 0.91 (L1(T) 0.044, 0.023, 0.012 at n = 50, 100, 200)
    assert 0.7 < v["orders.rho_l1_T"] < 1.5


def test_rows_done_with_other_options_run_again(tmp_path):
    f = tmp_path / "o.toml"
    body = """
[sweep]
out = "{out}"
truth_error = false
n_samples = {n}
[axes]
case = ["otflow-gaussian-1d"]
budget = [3]
"""
    f.write_text(body.format(out=tmp_path / "out", n=200))
    a = run_sweep(load_sweep(f), log=_quiet)
    again = run_sweep(load_sweep(f), log=_quiet)
    assert a.ran == ["otflow-gaussian-1d__b3"] and again.ran == []
    f.write_text(body.format(out=tmp_path / "out", n=300))
    b = run_sweep(load_sweep(f), log=_quiet)
    assert b.ran == ["otflow-gaussian-1d__b3"] and b.records[0]["options"]["n_samples"] == 300


def test_compare_sweep_over_model_files_reproduces_the_verify_rows(tmp_path, reference):
    """Two model.npz files (same name, different folders) get distinct row ids, and `compare` of a
    verify row's model file gives that row's metrics again (the model file holds its trajectories)."""
    _, serial, _ = reference
    files = [serial / "rows" / f"otflow-gaussian-1d__b{b}__s0" / "report" / "model.npz" for b in (3, 6)]
    f = tmp_path / "c.toml"
    f.write_text(f"""
[sweep]
kind = "compare"
out = "{tmp_path / 'out'}"
truth_error = false
metrics = ["l1.at_T", "w2.at_T"]
[axes]
case = ["otflow-gaussian-1d"]
model = {json.dumps([str(p) for p in files])}
seed = [0]
""")
    res = run_sweep(load_sweep(f), log=_quiet)
    assert res.complete and len({r["id"] for r in res.records}) == 2
    ref = dict(_numbers(serial)[0])
    for rec, b in zip(res.records, (3, 6)):
        want = ref[f"otflow-gaussian-1d__b{b}__s0"][1]
        for m in ("l1.at_T", "w2.at_T"):
            assert rec["values"][m] == pytest.approx(want[m], rel=1e-12, abs=1e-15), (m, b)


@pytest.mark.gpu
def test_devices_give_each_worker_one_gpu(tmp_path):
    """--devices cuda:0[,cuda:1]: every row trains on the device of its worker, and says so."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (run `make gpu-check` on a GPU machine)")
    pytest.importorskip("matplotlib")
    pytest.importorskip("ot")
    devices = [f"cuda:{i}" for i in range(min(2, torch.cuda.device_count()))]
    f = tmp_path / "g.toml"
    f.write_text(f"""
[sweep]
out = "{tmp_path / 'out'}"
truth_error = false
n_samples = 300
[axes]
case = ["otflow-gaussian-1d"]
budget = [3]
seed = [0, 1]
""")
    res = run_sweep(load_sweep(f), executor="process", jobs=len(devices), devices=devices, log=_quiet)
    assert res.complete
    assert {r["device"] for r in res.records} <= set(devices)
