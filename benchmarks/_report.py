"""Write benchmark results into docs/benchmarks.md, one marked block per benchmark."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(name: str, markdown: str, path=DEFAULT) -> Path:
    """Replace the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` (append if absent), atomically."""
    path = Path(path)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end)
        if j < len(text) and text[j] == "\n":
            j += 1
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
