"""GPU checks of the training loop: the CUDA-graph fast path against the eager path (`make gpu-check`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neural
import pde

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def prob2d():
    return pde.otflow(pde.eight_gaussians(), domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, lam=1.0, n=(32, 32), nt=4)


def test_cuda_graph_step_matches_eager_in_float64(prob2d):
    kw = dict(steps=20, seed=0, device="cuda", dtype="float64", progress=False, batch=1024, sync_every=5)
    fast = neural.train(prob2d, "otflow", fast=True, **kw)
    eager = neural.train(prob2d, "otflow", fast=False, **kw)
    assert fast.train_config["fast"] == "cuda-graph"
    assert eager.train_config["fast"] == "eager"
    # same kernels replayed: agreement to float64 round-off accumulated over 20 Adam steps
    np.testing.assert_allclose(fast.losses, eager.losses, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["hjb-sgm", "ffjord"])
def test_cuda_graph_captures_derivative_models(name):
    prob = pde.sgm(pde.eight_gaussians(), domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, beta=1.0, n=(24, 24), nt=2) \
        if name == "hjb-sgm" else pde.otflow(pde.Gaussian([1.0, 0.0], np.eye(2) * 0.5),
                                                  domain=[[-6.0, 6.0], [-6.0, 6.0]], n=(24, 24), nt=2)
    kw = dict(steps=12, seed=1, device="cuda", dtype="float64", progress=False, batch=256, sync_every=4)
    fast = neural.train(prob, name, fast=True, **kw)
    eager = neural.train(prob, name, fast=False, **kw)
    assert fast.train_config["fast"] == "cuda-graph"
    np.testing.assert_allclose(fast.losses, eager.losses, rtol=1e-9, atol=0)
    sol = neural.evaluate_on_grid(fast, nsteps=4)
    assert np.all(np.isfinite(sol.rho))


def test_resume_on_gpu_fast_path(tmp_path, monkeypatch, prob2d):
    kw = dict(steps=12, seed=2, device="cuda", dtype="float64", progress=False, batch=512, sync_every=4,
              ckpt_every=100)
    full = neural.train(prob2d, "otflow", out_dir=tmp_path / "a", **kw)
    orig = neural.OTFlow.draw

    def draw(self, n, rng, step):
        if step == 7:
            raise KeyboardInterrupt
        return orig(self, n, rng, step)

    monkeypatch.setattr(neural.OTFlow, "draw", draw)
    with pytest.raises(KeyboardInterrupt):
        neural.train(prob2d, "otflow", out_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(neural.OTFlow, "draw", orig)
    assert neural.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 7
    resumed = neural.train(prob2d, "otflow", out_dir=tmp_path / "b", **kw)
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-9, atol=0)


def test_missing_cuda_index_is_an_error():
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"cuda:{n}"):
        neural.resolve_device(f"cuda:{n}")
