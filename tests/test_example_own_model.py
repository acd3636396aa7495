"""The worked example: a score model trained with plain PyTorch, saved, and compared (tiny size)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compare.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "own_score_model.py"


def test_the_example_does_not_import_mfglab_at_top_level():
    tree = ast.parse(SCRIPT.read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not top & {"pde", "neural", "compare"}


def test_example_trains_saves_and_is_compared_both_ways(tmp_path):
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "m"), "--steps", "40"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    args = ["--n", "60", "--nt", "6", "--no-animation", "--samples", "200", "--steps", "8", "--no-truth-error"]
    assert main(["compare", "sgm-mixture-1d", "--model", str(tmp_path / "m" / "score_model.npz"),
                 "--out", str(tmp_path / "a"), *args]) == 0
    os.environ["MFGLAB_SCORE_WEIGHTS"] = str(tmp_path / "m" / "score_model.pt")
    try:
        assert main(["compare", "sgm-mixture-1d", "--model", f"{SCRIPT}:load", "--out", str(tmp_path / "b"), *args]) == 0
    finally:
        del os.environ["MFGLAB_SCORE_WEIGHTS"]
    for d in ("a", "b"):
        m = json.loads((tmp_path / d / "metrics.json").read_text())["metrics"]
        assert m["metrics"]["score_l2"]["values"][0] is not None and m["metrics"]["l1"]["values"][2] is not None
