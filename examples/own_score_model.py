"""A score model trained with plain PyTorch (no mfglab), saved, then verified with `mfglab compare`.

The data is the 1D two-component mixture of the case ``sgm-mixture-1d``
(weights ½, ½; means −1, 1.5; variances 0.3, 0.5), noised by the OU process
dY = −½βY ds + √β dW (β = 1) up to s = T = 1. The network is trained by
denoising score matching, then saved twice:

- ``OUT/score_model.pt``: its weights (a state dict, loaded with
  ``weights_only=True`` by :func:`load` below);
- ``OUT/score_model.npz``: the model file of README "File formats", written
  with NumPy alone: the score on a grid at 41 noising times
  (``meta.time = "noising"``).

Then either of

    mfglab compare sgm-mixture-1d --model OUT/score_model.npz --out out/own-npz
    mfglab compare sgm-mixture-1d --model examples/own_score_model.py:load --out out/own-torch

measures it against the exact truth (the second runs :func:`load`, which
imports mfglab's ``compare`` to wrap the network with exact divergences;
``MFGLAB_SCORE_WEIGHTS`` names the weights file, default
``out/own-score/score_model.pt``).

    python examples/own_score_model.py --out out/own-score --steps 3000   # about a minute on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

BETA, T, EPS = 1.0, 1.0, 1e-3
WEIGHTS, MEANS, VARS = [0.5, 0.5], [-1.0, 1.5], [0.3, 0.5]


class ScoreNet(torch.nn.Module):
    """s_θ(x, s) = N_θ(x, s)/σ_s, σ_s² = 1 − e^{−βs} (the score of the noised data at noising time s)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.f = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                                     torch.nn.SiLU(), torch.nn.Linear(width, 1))

    def forward(self, x, s):
        sig = torch.sqrt(-torch.expm1(-BETA * s))[:, None]
        return self.f(torch.cat([x, s[:, None]], 1)) / sig


def sample_data(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(torch.tensor(WEIGHTS), n, replacement=True, generator=g)
    m, v = torch.tensor(MEANS)[k], torch.tensor(VARS)[k]
    return (m + v.sqrt() * torch.randn(n, generator=g))[:, None]


def train(steps: int, seed: int, batch: int = 512, lr: float = 2e-3) -> ScoreNet:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ScoreNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        x0 = sample_data(batch, g)
        s = EPS + (T - EPS) * torch.rand(batch, generator=g)
        z = torch.randn(batch, 1, generator=g)
        a = torch.exp(-0.5 * BETA * s)[:, None]
        sig = torch.sqrt(-torch.expm1(-BETA * s))[:, None]
        loss = ((sig * net(a * x0 + sig * z, s) + z) ** 2).mean()  # denoising score matching, weight σ²
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def save(net: ScoreNet, out: Path, nx: int = 241, ns: int = 41) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "score_model.pt")
    x = np.linspace(-6.0, 6.0, nx)
    s = np.linspace(0.0, T, ns)
    with torch.no_grad():
        score = np.stack([net(torch.tensor(x[:, None], dtype=torch.float32),
                              torch.full((nx,), max(si, EPS))).numpy() for si in s])  # (K, nx, 1)
    meta = {"format": "mfglab.model/1", "time": "noising", "T": T, "name": "own-score-net",
            "source": "examples/own_score_model.py (plain PyTorch)", "eps": EPS}
    tmp = out / ".score_model.npz.tmp"
    with open(tmp, "wb") as fh:  # written beside the target, then renamed: never half-written
        np.savez_compressed(fh, t=s, x=x, score=score, meta=np.array(json.dumps(meta)))
    os.replace(tmp, out / "score_model.npz")


def load(problem=None):
    """Factory for ``mfglab compare ... --model examples/own_score_model.py:load``."""
    from compare import Model

    net = ScoreNet()
    path = os.environ.get("MFGLAB_SCORE_WEIGHTS", "out/own-score/score_model.pt")
    net.load_state_dict(torch.load(path, weights_only=True))
    return Model.from_torch(net.double(), kind="score", time="noising", T=T, eps=EPS, name="own-score-net",
                            source=f"examples/own_score_model.py:load ({path})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/own-score"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = train(args.steps, args.seed)
    save(net, args.out)
    print(f"wrote {args.out / 'score_model.pt'} and {args.out / 'score_model.npz'}")
    print(f"next: mfglab compare sgm-mixture-1d --model {args.out / 'score_model.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
