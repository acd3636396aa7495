"""Optional dependencies: tqdm (progress bar) may be missing on a bare GPU machine."""

from __future__ import annotations

import sys

try:  # pragma: no cover - depends on the environment
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None


class _PlainProgress:
    """Minimal stand-in for tqdm: prints a line every ~10% of the run."""

    def __init__(self, total, initial=0, desc="", disable=False, **_):
        self.total, self.n, self.desc, self.disable = total, initial, desc, disable
        self._every = max(1, total // 10)
        self._post = ""

    def update(self, k=1):
        self.n += k
        if not self.disable and (self.n % self._every == 0 or self.n == self.total):
            print(f"{self.desc}: {self.n}/{self.total} {self._post}", file=sys.stderr, flush=True)

    def set_postfix_str(self, s, refresh=True):
        self._post = s

    def close(self):
        pass


def progress(total: int, initial: int = 0, desc: str = "", disable: bool = False):
    if _tqdm is not None:
        return _tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True)
    return _PlainProgress(total, initial=initial, desc=desc, disable=disable)
