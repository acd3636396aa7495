"""Bad input, row by row: each gets one line naming the file or value, exit 2 (bad input) or 1 (run failed).

The CLI rows call ``compare.cli.main(argv)`` in-process (an escaping exception would be a traceback, so
returning an exit code at all is the no-traceback check) and a few run the real console entry point in a
subprocess. Library rows check the exception type and its message.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import pde
from compare.cli import main
from pde.memory import MemoryLimitError, check_memory, parse_size

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"

OTFLOW_1D = """\
family = "otflow"
T = 1.0
domain = [[-6.0, 6.0]]
{extra}
[data]
kind = "gaussian_mixture"
weights = [1.0]
means = [[1.5]]
covs = [[[0.25]]]
[grid]
n = [{n}]
nt = {nt}
"""


def _file(tmp_path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _otflow(tmp_path, n=200, nt=20, extra="", name="p.toml") -> Path:
    return _file(tmp_path, OTFLOW_1D.format(n=n, nt=nt, extra=extra), name)


def _run(capsys, argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------------- the CLI table

def _rows(tmp_path):
    """(label, argv, exit code, substrings the one error line must hold)."""
    out = tmp_path / "s.npz"
    big = _otflow(tmp_path, n=200_000_000, nt=100, name="big.toml")
    bad_utf8 = tmp_path / "latin1.toml"
    bad_utf8.write_bytes(OTFLOW_1D.format(n=200, nt=20, extra='name = "caf\xe9"').encode("latin-1"))
    sgm_ignored = _file(tmp_path, """\
        family = "sgm"
        T = 1.0
        domain = [[-6.0, 6.0]]
        nu = 0.3
        lam = 5
        [data]
        kind = "gaussian_mixture"
        weights = [1.0]
        means = [[0.0]]
        covs = [[[1.0]]]
        """, "sgm_ignored.toml")
    wgf_tau = _file(tmp_path, (EX / "wgf_gaussian_2d.toml").read_text().replace("tau = 0.1", "tau = 0.3"),
                    "wgf_tau.toml")
    one_node = _otflow(tmp_path, n=1, nt=10, name="one_node.toml")
    coarse = _otflow(tmp_path, n=8, nt=10, name="coarse.toml")
    nan_lr = _otflow(tmp_path, n=64, nt=8, name="nan.toml")
    return [
        ("oversize grid, FD", ["solve", big, "--method", "fd", "--out", out], 2,
         ["n=[200000000]", "needs about", "available", "--max-memory"]),
        ("oversize grid, ot", ["solve", big, "--method", "ot", "--out", out], 2,
         ["ot solve", "n=[200000000]", "needs about", "available", "--max-memory"]),
        ("budget smaller than the estimate", ["solve", EX / "lq_mixture_1d.toml", "--max-memory", "1M", "--out", out],
         2, ["max_memory is 1 MB", "n=[400]"]),
        ("a budget that is not a size", ["solve", EX / "lq_mixture_1d.toml", "--max-memory", "lots", "--out", out], 2,
         ["max_memory='lots'", "'8G'"]),
        ("missing problem file", ["solve", tmp_path / "nope.toml", "--out", out], 2, ["nope.toml", "no such"]),
        ("non-UTF-8 problem file", ["solve", bad_utf8, "--out", out], 2, ["latin1.toml", "UTF-8", "0xe9"]),
        ("keys the family ignores", ["solve", sgm_ignored, "--method", "exact", "--out", out], 2,
         ["sgm_ignored.toml", "'lam'", "'nu'", "'sgm'", "['beta']"]),
        ("wgf tau not dividing T", ["solve", wgf_tau, "--method", "exact", "--out", out], 2,
         ["wgf_tau.toml", "tau=0.3", "does not divide T=1"]),
        ("a 1-node axis", ["solve", one_node, "--method", "exact", "--out", out], 2,
         ["one_node.toml", "n=[1]", "at least 3 nodes"]),
        ("FD grid too coarse names the CLI flag", ["solve", coarse, "--method", "fd", "--out", out], 2,
         ["grid too coarse", "--no-check-resolution"]),
        ("--no-check-resolution outside FD", ["solve", coarse, "--method", "exact", "--no-check-resolution", "--out",
                                              out], 2, ["--no-check-resolution", "--method fd"]),
        ("NaN training loss is a failed run", ["train", nan_lr, "--model", "otflow", "--steps", "3", "--quiet",
                                               "--set", "alpha_C=NaN", "--out", tmp_path / "run"], 1,
         ["non-finite loss", "step 0"]),
    ]


ROW_IDS = ["oversize-fd", "oversize-ot", "budget", "budget-text", "missing-file", "non-utf8", "ignored-keys", "wgf-tau", "one-node",
           "coarse-fd", "flag-outside-fd", "nan-loss"]


@pytest.mark.parametrize("row", range(len(ROW_IDS)), ids=ROW_IDS)
def test_cli_bad_input_table(row, tmp_path, capsys):
    label, argv, code, needles = _rows(tmp_path)[row]
    rc, err = _run(capsys, argv)
    line = _one_error_line(err) if code == 2 else err
    assert rc == code, f"{label}: exit {rc}, expected {code}: {err}"
    for s in needles:
        assert s in line, f"{label}: {s!r} missing from {line!r}"


def test_no_check_resolution_flag_lets_the_coarse_grid_solve(tmp_path, capsys):
    coarse = _otflow(tmp_path, n=8, nt=10)
    rc, _ = _run(capsys, ["solve", coarse, "--method", "fd", "--no-check-resolution", "--out", tmp_path / "s.npz"])
    assert rc == 0
    assert pde.MFGSolution.load(tmp_path / "s.npz").rho.shape == (11, 8)


def test_write_failure_is_a_failed_run(tmp_path, capsys, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "s.npz"))

    monkeypatch.setattr(np, "savez_compressed", full)
    rc, err = _run(capsys, ["solve", EX / "lq_mixture_1d.toml", "--method", "exact", "--n", "32", "--nt", "4",
                            "--out", tmp_path / "s.npz"])
    assert rc == 1
    line = _one_error_line(err)
    assert "No space left on device" in line and "s.npz" in line
    assert not (tmp_path / "s.npz").exists()


def test_missing_dolfinx_is_one_line_exit_2(tmp_path):
    """With DOLFINx unimportable (forced here), --method fe says what to install; real process, stderr read."""
    code = ("import sys; sys.modules['dolfinx'] = None; from compare.cli import main; "
            f"sys.exit(main(['solve', {str(EX / 'sgm_mixture_1d.toml')!r}, '--method', 'fe', '--out', "
            f"{str(tmp_path / 's.npz')!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    line = _one_error_line(res.stderr)
    assert "needs DOLFINx" in line and "apt" in line


def test_console_entry_point_non_utf8_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"family = \"otflow\"\xff\n")
    res = subprocess.run([sys.executable, "-m", "compare.cli", "solve", str(bad), "--out", str(tmp_path / "s.npz")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad.toml" in _one_error_line(res.stderr) and "0xff" in res.stderr


@pytest.mark.dolfinx
def test_fe_bad_input_rows(tmp_path, capsys):
    rc, err = _run(capsys, ["solve", EX / "otflow_gaussian_1d.toml", "--method", "fe", "--n", "20000000",
                            "--out", tmp_path / "s.npz"])
    assert rc == 2
    line = _one_error_line(err)
    assert "FE solve" in line and "needs about" in line and "--max-memory" in line
    rc, err = _run(capsys, ["solve", EX / "otflow_gaussian_1d.toml", "--method", "fe", "--mesh",
                            tmp_path / "missing.msh", "--out", tmp_path / "s.npz"])
    assert rc == 2
    line = _one_error_line(err)
    assert "missing.msh" in line and "does not exist" in line


# ----------------------------------------------------------------- refused up front

def _refusal_peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_oversize_fd_grid_is_refused_before_allocating(tmp_path):
    """The refusal comes before any grid-sized array: the traced peak is a few MB for a 1.6 GB axis."""
    prob = pde.load_problem(_otflow(tmp_path, n=200_000_000, nt=100))
    importlib.import_module("pde.fd")  # imports first, so that the trace sees only the solve

    assert _refusal_peak_bytes(lambda: pde.solve(prob, "fd", progress=False)) < 20e6


@pytest.mark.parametrize("nu", [0.0, 0.1])
def test_oversize_ot_grid_is_refused_before_allocating(tmp_path, nu):
    """Both ot routes (ν = 0 polish, ν > 0 Sinkhorn) are refused before any grid-sized array."""
    prob = pde.load_problem(_otflow(tmp_path, n=200_000_000, nt=100))
    if nu:
        prob = pde.otflow(prob.rho0, domain=prob.domain, nu=nu, n=prob.n, nt=prob.nt)
    importlib.import_module("pde.ot.route")
    importlib.import_module("pde.ot.entropic")

    assert _refusal_peak_bytes(lambda: pde.solve(prob, "ot")) < 20e6


def test_ot_records_its_memory_budget():
    prob = pde.otflow(pde.Gaussian([0.0], [[1.0]]), domain=[[-6, 6]], n=[64], nt=4)
    sol = pde.solve(prob, "ot", max_memory="1G")
    assert sol.meta["memory"]["budget"] == "max_memory" and 0 < sol.meta["memory"]["estimated_bytes"] < 1e9
    with pytest.raises(MemoryLimitError, match=r"ot solve of otflow on n=\[64\].*max_memory is 1 kB"):
        pde.solve(prob, "ot", max_memory="1K")


@pytest.mark.dolfinx
def test_oversize_fe_grid_is_refused_before_the_mesh(tmp_path):
    prob = pde.load_problem(_otflow(tmp_path, n=20_000_000, nt=100))
    importlib.import_module("pde.fe.solver")

    assert _refusal_peak_bytes(lambda: pde.solve(prob, "fe", progress=False)) < 20e6


def test_check_memory_budget_sources(monkeypatch):
    monkeypatch.delenv("MFGLAB_MAX_MEMORY", raising=False)
    info = check_memory(1.0, "a tiny solve")
    assert info["budget"] == "available" and info["budget_bytes"] > 1.0
    assert check_memory(4e9, "x", max_memory="8G")["budget_bytes"] == 8e9
    with pytest.raises(MemoryLimitError, match=r"x needs about 4 GB .*max_memory is 2 GB"):
        check_memory(4e9, "x", max_memory=2e9)
    monkeypatch.setenv("MFGLAB_MAX_MEMORY", "1GiB")
    with pytest.raises(MemoryLimitError, match="MFGLAB_MAX_MEMORY is 1.07 GB"):
        check_memory(4e9, "x")
    assert check_memory(4e9, "x", max_memory="inf")["budget"] == "max_memory"  # an explicit value wins
    assert parse_size("1.5 GiB") == 1.5 * 2**30 and parse_size(np.int64(10)) == 10.0
    for bad in ("-1G", "0", "12 parsecs", True):
        with pytest.raises(ValueError, match="max_memory="):
            parse_size(bad)


# ----------------------------------------------------------------- files

def test_truncated_solution_file_names_the_path(tmp_path):
    sol = pde.solve(pde.load_problem(EX / "lq_mixture_1d.toml", overrides={"n": [32], "nt": 4}), "exact")
    path = sol.save(tmp_path / "s.npz")
    raw = path.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=r"s\.npz: cannot read solution file, truncated"):
            pde.MFGSolution.load(path)


def test_truth_cache_resolves_a_truncated_file(tmp_path):
    from compare.cache import cached_solve

    prob = pde.load_problem(EX / "lq_mixture_1d.toml", overrides={"n": [32], "nt": 4})
    first = cached_solve(prob, "exact", tmp_path)
    raw = first.path.read_bytes()
    first.path.write_bytes(raw[: len(raw) // 2])
    again = cached_solve(prob, "exact", tmp_path)
    assert not again.hit and again.path == first.path
    np.testing.assert_array_equal(again.solution.rho, first.solution.rho)
    assert cached_solve(prob, "exact", tmp_path).hit  # and the replaced file reads back


# ----------------------------------------------------------------- values (library)

def test_numpy_scalars_accepted_and_bools_rejected():
    data = pde.Gaussian([1.5], 0.25)
    p = pde.otflow(data, domain=[[-6, 6]], T=np.float32(1), lam=np.int64(2), nu=np.float32(0), n=np.int64(64))
    assert (p.T, p.lam, p.nu, p.n) == (1.0, 2.0, 0.0, (64,)) and type(p.T) is float
    # (NumPy 2 writes np.True_ of type numpy.bool, NumPy 1 True of type numpy.bool_)
    for kw, text in (({"nu": True}, r"nu=True \(bool\)"), ({"lam": np.bool_(True)}, r"lam=\S*True\S* \(numpy\.bool_?\)"),
                     ({"T": "1"}, r"T='1' \(str\)")):
        with pytest.raises(ValueError, match=text):
            pde.lq(data, domain=[[-6, 6]], **kw)
    with pytest.raises(ValueError, match=r"q=True \(bool\)"):
        pde.lq(data, domain=[[-6, 6]], q=True)
    with pytest.raises(ValueError, match=r"T=-1.0; expected a finite number > 0"):
        pde.otflow(data, domain=[[-6, 6]], T=np.float32(-1))


def test_wgf_tau_checked_at_construction():
    data = pde.Gaussian([1.0], 0.5)
    with pytest.raises(ValueError, match=r"tau=0.3 does not divide T=1 .*tau=0.333333"):
        pde.wgf(data, domain=[[-6, 6]], T=1.0, tau=0.3)
    assert pde.wgf(data, domain=[[-6, 6]], T=1.0, tau=0.25).params["tau"] == 0.25


def test_train_rejects_zero_batch_and_lr():
    import neural

    prob = pde.load_problem(EX / "otflow_gaussian_1d.toml")
    with pytest.raises(ValueError, match=r"batch=0; expected an integer >= 1"):
        neural.train(prob, "otflow", steps=1, batch=0, progress=False)
    with pytest.raises(ValueError, match=r"lr=0; expected a finite learning rate > 0"):
        neural.train(prob, "otflow", steps=1, lr=0, progress=False)
    with pytest.raises(ValueError, match=r"lr=nan"):
        neural.train(prob, "otflow", steps=1, lr=float("nan"), progress=False)


def test_checkpoint_errors_say_what_differs(tmp_path):
    import torch

    import neural
    from neural.train import CheckpointError

    prob = pde.load_problem(EX / "otflow_gaussian_1d.toml")
    res = neural.train(prob, "otflow", steps=2, batch=16, progress=False, out_dir=tmp_path, width=8)
    other = pde.problem_from_dict({**pde.problem_to_dict(prob), "T": 2.0, "name": "longer"})
    with pytest.raises(CheckpointError, match=r"T: 1.0 in the checkpoint, 2.0 given"):
        neural.load(res.checkpoint, problem=other)
    with pytest.raises(CheckpointError, match=r"cannot resume: .*name: 'otflow-gaussian-1d' in the checkpoint, "
                                              r"'longer' given"):
        neural.train(other, "otflow", steps=3, batch=16, progress=False, out_dir=tmp_path, width=8)
    ck = torch.load(res.checkpoint, weights_only=True)
    ck["config"] = ck["config"].replace('"width": 8', '"width": 9')
    torch.save(ck, tmp_path / "wider.pt")
    with pytest.raises(CheckpointError) as info:
        neural.load(tmp_path / "wider.pt")
    # PyTorch's whole mismatch report, not its first line: every mis-shaped tensor is named
    assert str(info.value).count("size mismatch for") >= 2
