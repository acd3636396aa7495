"""Training checkpoints: the file format, atomic writes, validated reads, and errors that say what differs.

The problem is stored as its problem-file dict (:func:`pde.io.problem_to_dict`), so a checkpoint
rebuilds its problem through the same reader as a TOML file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pde.io import atomic_path, problem_to_dict

__all__ = ["CKPT_FORMAT", "CKPT_VERSION", "CKPT_NAME", "CheckpointError", "load_checkpoint", "save_checkpoint",
           "problem_difference"]

CKPT_FORMAT = "mfglab.neural.checkpoint"
CKPT_VERSION = 1
CKPT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, another model, another problem)."""


def save_checkpoint(path: Path, model, opt, *, name, config, problem, step, losses, parts, seed, dtype, train_cfg,
                     wall_time):
    spec = problem_to_dict(problem)
    obj = {
        "format": CKPT_FORMAT,
        "version": CKPT_VERSION,
        "model": name,
        "config": json.dumps(config, sort_keys=True),
        "problem": json.dumps(spec) if spec is not None else "",
        "problem_fingerprint": problem.fingerprint(),
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optim": opt.state_dict() if opt is not None else {},
        "step": int(step),
        "losses": torch.as_tensor(np.asarray(losses, dtype=np.float64)),
        "parts": {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in parts.items()},
        "seed": int(seed),
        "dtype": dtype,
        "train": json.dumps(train_cfg, sort_keys=True),
        "wall_time": float(wall_time),
        "torch": str(torch.__version__),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return path


def load_checkpoint(path, expect_model: str | None = None, map_location="cpu") -> dict:
    """Read and validate a checkpoint written by :func:`train`.

    Format: a dict with keys ``format`` (= "mfglab.neural.checkpoint"),
    ``version``, ``model`` (registry name), ``config`` (JSON hyper-parameters),
    ``problem`` (JSON problem-file dict, "" for custom problems),
    ``problem_fingerprint``, ``state`` (model state_dict), ``optim`` (Adam
    state_dict), ``step``, ``losses``/``parts`` (float64 tensors), ``seed``,
    ``dtype``, ``train`` (JSON: batch, lr), ``wall_time``, ``torch``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: corrupt file, not a checkpoint, or another model.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for damaged files
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unpickler error" in ln), lines[0] if lines else "")
        raise CheckpointError(f"{path}: corrupted or not a torch checkpoint readable with weights_only=True "
                              f"({type(exc).__name__}: {why})") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path}: not an mfglab neural checkpoint (expected format {CKPT_FORMAT!r})")
    if ck.get("version") != CKPT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ck.get('version')!r}; expected {CKPT_VERSION}")
    missing = [k for k in ("model", "config", "state", "step", "losses", "seed", "dtype") if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    if expect_model is not None and ck["model"] != expect_model:
        raise CheckpointError(f"{path}: checkpoint holds model {ck['model']!r}; expected {expect_model!r}")
    return ck


def problem_difference(ck: dict, problem) -> str:
    """Which problem-file fields differ between the checkpoint's problem and ``problem``."""
    saved = json.loads(ck["problem"]) if ck.get("problem") else None
    given = problem_to_dict(problem)
    if saved is None or given is None:
        return (f"fingerprint {ck.get('problem_fingerprint')} in the checkpoint, {problem.fingerprint()} given; "
                "the fields cannot be compared (a law without a problem-file form)")
    keys = sorted(set(saved) | set(given))
    diff = [f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, {given.get(k, '(absent)')!r} given"
            for k in keys if saved.get(k) != given.get(k)]
    return "; ".join(diff) if diff else f"fingerprints {ck.get('problem_fingerprint')} vs {problem.fingerprint()}"
