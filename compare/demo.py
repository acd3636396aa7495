"""``make demo``: the main job on its default case."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_PROBLEM = Path(__file__).resolve().parents[1] / "examples" / "otflow_gaussian_1d.toml"


def run(out: Path, force: bool = False) -> int:
    """Closed-form truth of the default problem: solution file and a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import pde

    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"output folder {out} exists; pass --force to replace it")
    problem = pde.load_problem(DEFAULT_PROBLEM)
    sol = pde.solve(problem, "exact")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        sol.save(tmp / "truth.npz")
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
        x = sol.axes[0]
        for k in np.linspace(0, sol.t.size - 1, 5).astype(int):
            ax[0].plot(x, sol.rho[k], label=f"t = {sol.t[k]:.2f}")
            ax[1].plot(x, sol.phi[k] - sol.phi[k][x.size // 2], label=f"t = {sol.t[k]:.2f}")
        ax[0].set(xlabel="x", ylabel="ρ(x, t)", title="density (closed form)")
        ax[1].set(xlabel="x", ylabel="φ(x, t) − φ(0, t)", title="potential (closed form)")
        ax[0].legend()
        fig.savefig(tmp / "truth.png", dpi=120)
        plt.close(fig)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"demo: {problem.name}: {sol.summary()}")
    print(f"demo: wrote {out}/truth.npz and {out}/truth.png")
    return 0
