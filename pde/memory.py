"""Refuse a solve that cannot fit in memory, before it allocates anything.

Every route estimates the bytes it will hold at its peak and calls
:func:`check_memory` first. Without the check, a grid too large for the
machine (say ``n = [200000000]`` in 1D) allocates until the kernel kills the
process, minutes later and with nothing said.

The budget is the memory available now (``MemAvailable`` of
``/proc/meminfo``, lowered by a cgroup limit when one is set) unless the
caller passes ``max_memory`` (bytes, or a text such as ``"8G"``, ``"512MiB"``;
``"inf"`` disables the check) or the environment sets ``MFGLAB_MAX_MEMORY``
(same syntax; an explicit ``max_memory`` wins). ``mfglab solve --max-memory``
passes the option; for the other subcommands (``verify``, ``converge``, …)
the environment variable reaches every solve they run.

The estimates are calibrated peak resident sizes (see docs/fd.md, docs/fe.md
"Memory"), accurate to a factor of about two: they exist to refuse the
hopeless grid at once, not to predict the last megabyte.
"""

from __future__ import annotations

import math
import os
import re

__all__ = ["MemoryLimitError", "check_memory", "available_memory", "parse_size", "format_size"]


class MemoryLimitError(ValueError):
    """The estimated memory of a solve exceeds the budget (bad input: the grid is too large)."""


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(value) -> float:
    """Bytes from a number or a text ``"8G"``, ``"1.5 GiB"``, ``"512M"``, ``"inf"``.

    Decimal units (k, M, G, T = 10³, 10⁶, …) and binary ones (KiB, MiB, GiB,
    TiB). Raises ValueError naming the value otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"max_memory={value!r}; expected a size in bytes or a text such as '8G' or '512MiB'")
    if isinstance(value, (int, float)) or hasattr(value, "__float__") and not isinstance(value, str):
        out = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|inf)\s*([A-Za-z]*)\s*", value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"max_memory={value!r}; expected a size such as '8G', '512MiB' or 'inf'")
        out = float(m.group(1)) * _UNITS[unit]
    else:
        raise ValueError(f"max_memory={value!r}; expected a size in bytes or a text such as '8G' or '512MiB'")
    if not out > 0:
        raise ValueError(f"max_memory={value!r}; expected a size > 0")
    return out


def format_size(nbytes: float) -> str:
    """``1.23 GB`` style (decimal units)."""
    if not math.isfinite(nbytes):
        return "unlimited"
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= f:
            return f"{nbytes / f:.3g} {unit}"
    return f"{nbytes:.0f} B"


def _cgroup_room() -> float:
    """Bytes left under a cgroup (v2 or v1) memory limit; inf when none is set."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as fh:
                lim = fh.read().strip()
            with open(usage) as fh:
                used = float(fh.read().strip())
        except (OSError, ValueError):
            continue
        if lim == "max" or not lim.isdigit() or float(lim) >= 2**60:
            return math.inf
        return max(float(lim) - used, 0.0)
    return math.inf


def available_memory() -> float:
    """Bytes this process can still allocate without swapping (inf when it cannot be told)."""
    avail = math.inf
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) * 1024
                    break
    except OSError:
        try:
            avail = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    return min(avail, _cgroup_room())


def check_memory(nbytes: float, what: str, max_memory=None) -> dict:
    """Raise :class:`MemoryLimitError` when ``nbytes`` exceeds the budget.

    Args:
        nbytes: the caller's estimate of its peak memory (bytes).
        what: what is being sized, for the message, e.g.
            ``"the FD solve of otflow on n=[200000000], nt=100"``.
        max_memory: the budget (bytes or a text, see :func:`parse_size`);
            None: ``MFGLAB_MAX_MEMORY`` when set, else the memory available
            now (:func:`available_memory`).

    Returns:
        ``{"estimated_bytes", "budget_bytes", "budget"}`` for the solution's
        metadata ("budget" says where the budget came from).
    """
    if max_memory is None and os.environ.get("MFGLAB_MAX_MEMORY"):
        budget, source = parse_size(os.environ["MFGLAB_MAX_MEMORY"]), "MFGLAB_MAX_MEMORY"
    elif max_memory is None:
        budget, source = available_memory(), "available"
    else:
        budget, source = parse_size(max_memory), "max_memory"
    if nbytes > budget:
        if source == "available":
            room = f"this machine has {format_size(budget)} available"
        else:
            room = f"{source} is {format_size(budget)}"
        raise MemoryLimitError(
            f"{what} needs about {format_size(nbytes)} (estimated); {room} — use a smaller grid, or raise the "
            "limit with --max-memory SIZE on the command line (max_memory=... in Python; 'inf' disables the check)")
    return {"estimated_bytes": float(nbytes), "budget_bytes": float(budget), "budget": source}
