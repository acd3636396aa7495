"""Shared test configuration: markers and the helpers every test file uses."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def _has(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


HAS_DOLFINX = _has("dolfinx")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    skip_fe = pytest.mark.skip(reason="DOLFINx is not installed (see README: conda or apt)")
    skip_gpu = pytest.mark.skip(reason="no CUDA device (run `make gpu-check` on a GPU machine)")
    cuda = None
    for item in items:
        if "dolfinx" in item.keywords and not HAS_DOLFINX:
            item.add_marker(skip_fe)
        if "gpu" in item.keywords:
            if cuda is None:
                cuda = _has_cuda()
            if not cuda:
                item.add_marker(skip_gpu)


def fitted_order(h, err) -> float:
    """Slope of log(err) against log(h), least squares over all refinements."""
    h, err = np.asarray(h, float), np.asarray(err, float)
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
