"""The GPU check's benchmark script runs end to end (tiny sizes, CPU): it cannot rot unseen between GPU runs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_neural_benchmark_runs_every_section(capsys):
    from benchmarks import bench_neural

    assert bench_neural.main(["--smoke", "--no-write", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for title in ("OT-Flow training speed", "OT-Flow time to L1 ≤ 0.05", "HJB-SGM vs SGM"):
        assert f"### neural: {title} (smoke)" in out
    assert "FAILED" not in out  # every timing variant ran
    # the fused training RHS issues fewer backend operations than the reference dynamics
    row = next(line for line in out.splitlines() if line.startswith("| float32 |"))
    ref_ops, fused_ops = (int(v) for v in row.split("|")[5].split("→"))
    assert fused_ops < 0.7 * ref_ops
