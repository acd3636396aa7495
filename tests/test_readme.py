"""README's Python examples run as written (in a scratch folder holding a copy of examples/)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index]
    old = None
    if "import neural" in code:
        import torch

        # one intra-op thread, as the CLI and the other neural tests use: on the shared 2-core machine
        # two spin-waiting threads made the example's 20 steps take minutes instead of seconds
        old = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": f"readme_{index}"})  # noqa: S102
    finally:
        if old is not None:
            torch.set_num_threads(old)
    written = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "examples" not in p.parts]
    # every file the example says it writes is there
    for name in re.findall(r'(?:\.save\(|out_dir=)"([^"]+)"', code):
        assert any(w.startswith(name) for w in written), (name, written)
