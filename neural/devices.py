"""Devices and dtypes of training: ``None``/"auto" → CUDA when available, else CPU; clear errors otherwise."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device=None) -> torch.device:
    """``None``/"auto" → cuda if available else cpu; validate anything else."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device={device!r} is not a device name; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda}); use device='cpu' or 'auto'")
        n = torch.cuda.device_count()
        idx = 0 if dev.index is None else dev.index
        if idx >= n:
            raise ValueError(f"device={device!r} does not exist; this machine has {n} CUDA device(s): "
                             f"{', '.join(f'cuda:{i}' for i in range(n))}")
        return torch.device("cuda", idx)
    raise ValueError(f"device={device!r} is not supported; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


_DTYPES = {"float32": torch.float32, "float": torch.float32, "single": torch.float32,
           "float64": torch.float64, "double": torch.float64}


def resolve_dtype(dtype) -> torch.dtype:
    if dtype in (torch.float32, torch.float64):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype={dtype!r}; expected 'float32' or 'float64'")


def _dtype_name(dt: torch.dtype) -> str:
    return "float64" if dt == torch.float64 else "float32"
