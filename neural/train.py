"""One training loop for every model: devices, dtypes, seeds, checkpoints, guards, fast GPU path.

- Device: ``None``/"auto" → CUDA when available, else CPU; a device that does
  not exist is a clear error.
- Seeds: parameters are initialised under ``torch.manual_seed(seed)`` inside
  a forked RNG (the global RNG is untouched); batch ``k`` is drawn from
  ``numpy.random.default_rng([seed, k])``. A batch therefore depends only on
  (seed, step), which makes a resumed run take exactly the steps of an
  uninterrupted one (the Adam state is in the checkpoint).
- Checkpoints (``out_dir/checkpoint.pt``, :mod:`neural.checkpoint`) are written atomically and read
  with ``torch.load(weights_only=True)``; see :func:`load_checkpoint` for the
  format. Resuming continues from the saved step.
- NaN/Inf guard: a non-finite loss or gradient stops training with
  :class:`NonFiniteLossError`; the checkpoint on disk is the last good state.
- Fast path (``fast="auto"``: CUDA only): the whole step (loss, backward,
  Adam) is captured once as a CUDA graph and replayed; the losses are read
  back every ``sync_every`` steps. CPU runs eagerly.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pde.io import problem_from_dict, problem_to_dict

from ._compat import progress as _progress
from .checkpoint import CKPT_FORMAT, CKPT_NAME, CheckpointError, load_checkpoint, problem_difference, save_checkpoint
from .devices import _dtype_name, resolve_device, resolve_dtype
from .models import NeuralModel, get_model, model_spec
from .steps import EagerStep, GraphStep

__all__ = ["train", "TrainResult", "load", "load_checkpoint", "resolve_device", "resolve_dtype",
           "NonFiniteLossError", "CheckpointError", "problem_spec", "CKPT_FORMAT"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss or gradient."""


# --------------------------------------------------------------------------
# problems in checkpoints
# --------------------------------------------------------------------------


#: the problem-file dict of a problem (:func:`pde.io.problem_to_dict`); kept under its old name
problem_spec = problem_to_dict


# --------------------------------------------------------------------------
# results and checkpoints
# --------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns (and :func:`load` rebuilds).

    Attributes:
        model: the trained model (in eval mode).
        problem: the problem it was trained on.
        model_name: registry name.
        losses: (steps,) loss per step.
        parts: loss components per step, name → (steps,).
        wall_time: seconds of training (summed over resumed sessions).
        checkpoint: path of the checkpoint (None without ``out_dir``).
        step: number of completed steps.
        seed, device, dtype: as used.
        config: model hyper-parameters; train_config: batch, lr, fast path used.
    """

    model: NeuralModel
    problem: object
    model_name: str
    losses: np.ndarray
    parts: dict
    wall_time: float
    checkpoint: Path | None
    step: int
    seed: int
    device: str
    dtype: str
    config: dict
    train_config: dict = field(default_factory=dict)

    def summary(self) -> str:
        last = self.losses[-min(50, len(self.losses)):].mean() if len(self.losses) else float("nan")
        return (f"{self.model_name} on {self.problem.name or self.problem.family}: {self.step} steps, "
                f"mean loss of the last 50 steps {last:.4g}, {self.wall_time:.1f} s on {self.device} ({self.dtype})")


def _build(cls, problem, config, seed, dev, dt):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(problem, **config)
    return model.to(device=dev, dtype=dt)


def load(checkpoint, problem=None, device=None) -> TrainResult:
    """Rebuild a trained model from a checkpoint file (or a run directory holding one).

    Args:
        checkpoint: path of ``checkpoint.pt`` or of the directory containing it.
        problem: the problem (required for custom problems; otherwise read
            from the checkpoint and, when given, checked against it).
        device: as in :func:`train`.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CKPT_NAME
    ck = load_checkpoint(path)
    cls = get_model(ck["model"])
    if problem is None:
        if not ck.get("problem"):
            raise CheckpointError(f"{path}: the problem was built in Python (custom); pass problem=...")
        problem = problem_from_dict(json.loads(ck["problem"]), where=str(path))
    elif problem.family != "custom" and ck.get("problem_fingerprint") not in (None, problem.fingerprint()):
        raise CheckpointError(f"{path}: trained on another problem: {problem_difference(ck, problem)}")
    dev = resolve_device(device)
    dt = resolve_dtype(ck["dtype"])
    config = json.loads(ck["config"])
    model = _build(cls, problem, config, ck["seed"], dev, dt)
    try:
        model.load_state_dict(ck["state"])
    except RuntimeError as exc:  # PyTorch's text lists every missing, unexpected and mis-shaped tensor
        raise CheckpointError(f"{path}: weights do not fit model {ck['model']!r} with config {config}: {exc}") from None
    model.eval()
    parts = {k: v.numpy() for k, v in ck.get("parts", {}).items()}
    return TrainResult(model, problem, ck["model"], ck["losses"].numpy(), parts, float(ck.get("wall_time", 0.0)),
                       path, int(ck["step"]), int(ck["seed"]), str(dev), ck["dtype"], config,
                       json.loads(ck.get("train", "{}")))


# --------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------


def _to_device(arrays: dict, dt, dev, step) -> dict:
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            bad = int((~np.isfinite(a)).sum())
            raise ValueError(f"training batch {k!r} at step {step} holds {bad} NaN/Inf value(s); "
                             "expected finite samples (check the data law)")
        t = torch.from_numpy(a).to(dtype=dt)
        if dev.type == "cuda":
            t = t.pin_memory().to(dev, non_blocking=True)
        out[k] = t
    return out


def train(problem, model: str = "otflow", steps: int = 1000, seed: int = 0, device=None, dtype="float32",
          out_dir=None, resume: bool = True, progress: bool = True, *, batch: int | None = None,
          lr: float | None = None, schedule: str = "cosine", fast="auto", ckpt_every: int | None = None,
          sync_every: int = 25, callback=None, callback_every: int = 100,
          **hparams) -> TrainResult:
    """Train a registered model on a problem.

    Args:
        problem: a :class:`pde.MFGProblem` of a family the model accepts.
        model: a name in :data:`neural.MODELS`.
        steps: total number of optimisation steps (a resumed run continues to it).
        seed: seeds the initial weights and every batch (see the module docstring).
        device: None/"auto", "cpu", "cuda", "cuda:N".
        dtype: "float32" (default) or "float64".
        out_dir: directory for ``checkpoint.pt`` (None: no checkpoint).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        progress: show a progress bar.
        batch, lr: batch size and Adam learning rate (model defaults).
        schedule: "cosine" (lr·(0.05 + 0.95·½(1 + cos πk/steps)) at step k; for wgf one cycle per
            JKO block) or "constant".
        fast: "auto" (CUDA graph on CUDA when the model allows it), True, False.
        ckpt_every: steps between checkpoints (default steps/10).
        sync_every: steps between host reads of the loss on the fast path.
        callback: ``callback(step, model) -> bool`` called every ``callback_every`` steps (its time is not
            counted in ``wall_time``); a true return value stops training there (checkpoint saved).
        **hparams: model hyper-parameters (see each model's docstring).

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteLossError: a NaN/Inf loss or gradient (the checkpoint keeps the last good state).
    """
    cls = get_model(model)
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps={steps!r}; expected an integer >= 1")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected a non-negative integer")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    spec = model_spec(model)
    defaults = {"batch": spec.batch, "lr": spec.lr}
    if batch is None:
        batch = defaults["batch"]
    elif isinstance(batch, (bool, np.bool_)) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch={batch!r}; expected an integer >= 1 (None: the model's default "
                         f"{defaults['batch']})")
    if lr is None:
        lr = defaults["lr"]
    elif (isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.floating, np.integer))
          or not (math.isfinite(lr) and lr > 0)):
        raise ValueError(f"lr={lr!r}; expected a finite learning rate > 0 (None: the model's default {defaults['lr']})")
    batch, lr = int(batch), float(lr)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule={schedule!r}; expected 'cosine' or 'constant'")
    ckpt = Path(out_dir) / CKPT_NAME if out_dir is not None else None
    ck = None
    if ckpt is not None and resume and ckpt.exists():
        ck = load_checkpoint(ckpt, expect_model=model)
        saved = json.loads(ck["config"])
        clash = {k: (saved.get(k), v) for k, v in hparams.items() if k in saved and saved[k] != v}
        if clash or int(ck["seed"]) != int(seed) or ck["dtype"] != _dtype_name(dt):
            raise CheckpointError(
                f"{ckpt}: cannot resume: the checkpoint was trained with different settings "
                f"(hyper-parameters saved vs given {clash}, seed {ck['seed']} vs {seed}, dtype {ck['dtype']} vs "
                f"{_dtype_name(dt)}); use another out_dir or resume=False")
        if problem.family != "custom" and ck.get("problem_fingerprint") != problem.fingerprint():
            raise CheckpointError(f"{ckpt}: cannot resume: it was trained on another problem "
                                  f"({problem_difference(ck, problem)}); use another out_dir or resume=False")
        hparams = {**saved, **hparams}
    if model == "wgf" and "steps_per_block" not in hparams:
        K = int(round(problem.T / float(problem.params["tau"])))
        hparams["steps_per_block"] = max(1, math.ceil(steps / max(K, 1)))
    net = _build(cls, problem, hparams, seed, dev, dt)
    config = dict(net.config)

    use_graph = dev.type == "cuda" and net.graph_safe and fast in ("auto", True)
    if fast is True and not use_graph:
        warnings.warn(f"fast path unavailable (device {dev}, model {model}); training eagerly", stacklevel=2)
    # a tensor lr lets the captured graph see schedule updates
    opt = torch.optim.Adam(net.parameters(), lr=torch.tensor(lr, device=dev) if use_graph else lr,
                           capturable=use_graph)

    def set_lr(k):
        pos, length = net.schedule_position(k, steps) if hasattr(net, "schedule_position") else (k, steps)
        f = 1.0 if schedule == "constant" else 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * pos / length))
        for g in opt.param_groups:
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(lr * f)
            else:
                g["lr"] = lr * f

    start, losses, parts_hist, wall0 = 0, [], {}, 0.0
    if ck is not None:
        try:
            net.load_state_dict(ck["state"])
            opt.load_state_dict(ck["optim"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{ckpt}: weights do not fit model {model!r}: {exc}") from None
        # the saved groups carry the saving run's lr type and capturable flag: restore this run's
        for g in opt.param_groups:
            g["capturable"] = use_graph
            lr_now = float(g["lr"])
            g["lr"] = torch.tensor(lr_now, device=dev) if use_graph else lr_now
        for st in opt.state.values():
            if "step" in st and torch.is_tensor(st["step"]):
                st["step"] = st["step"].to(device=dev if use_graph else "cpu", dtype=torch.float32)
        start = int(ck["step"])
        losses = ck["losses"].tolist()
        parts_hist = {k: v.tolist() for k, v in ck.get("parts", {}).items()}
        wall0 = float(ck.get("wall_time", 0.0))
    train_cfg = {"batch": batch, "lr": lr, "schedule": schedule, "fast": "cuda-graph" if use_graph else "eager"}
    ckpt_every = int(ckpt_every or max(1, steps // 10))
    net.train()

    def save(step_done, wall):
        if ckpt is not None:
            save_checkpoint(ckpt, net, opt, name=model, config=config, problem=problem, step=step_done,
                             losses=losses, parts=parts_hist, seed=seed, dtype=_dtype_name(dt),
                             train_cfg=train_cfg, wall_time=wall)

    eager = EagerStep(net, opt)
    graph = None
    pending = []  # (step, device record) not yet read back (fast path)
    last_saved = start
    bar = _progress(steps, initial=start, desc=f"train {model}", disable=not progress)
    t0 = time.perf_counter()
    step = start

    def flush():
        """Read pending losses; raise on a non-finite one (fast path)."""
        nonlocal pending
        if not pending:
            return 0
        count = len(pending)
        recs = torch.stack([r for _, r in pending]).cpu().numpy()
        names = graph.names
        for (k, _), r in zip(pending, recs):
            if not np.all(np.isfinite(r)):
                pending = []
                raise NonFiniteLossError(
                    f"non-finite loss at step {k} ({dict(zip(['loss'] + names, r.tolist()))}); training stopped. "
                    f"The last good checkpoint is {ckpt} (step {last_saved})" if ckpt else
                    f"non-finite loss at step {k}; training stopped (no out_dir, nothing saved)")
            losses.append(float(r[0]))
            for n, v in zip(names, r[1:]):
                parts_hist.setdefault(n, []).append(float(v))
        pending = []
        return count

    try:
        while step < steps:
            rng = np.random.default_rng([int(seed), int(step)])
            batch_t = _to_device(net.draw(batch, rng, step), dt, dev, step)
            set_lr(step)
            if hasattr(net, "on_step"):
                net.on_step(step)
            if use_graph and graph is None and step - start >= 3:
                try:
                    graph = GraphStep(net, opt, batch_t, step)
                except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
                    warnings.warn(f"CUDA-graph capture failed ({type(exc).__name__}: {exc}); training eagerly",
                                  stacklevel=2)
                    use_graph = False
                    train_cfg["fast"] = "eager (capture failed)"
                    torch.cuda.synchronize()
            if graph is not None:
                rec, names, _ = graph(batch_t, step)
                pending.append((step, rec))
                step += 1
                if len(pending) >= sync_every or step == steps or step % ckpt_every == 0:
                    bar.update(flush())
                    bar.set_postfix_str(f"loss {losses[-1]:.4g}")
            else:
                rec, names, ok = eager(batch_t, step)
                r = rec.cpu().numpy()
                if not ok:
                    msg = dict(zip(["loss"] + names, r.tolist()))
                    save(step, wall0 + time.perf_counter() - t0)  # the current weights are the last good ones
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {step} ({msg}); training stopped before the update. "
                        + (f"The last good state (step {step}) is saved in {ckpt}" if ckpt else
                           "No out_dir: nothing saved") + "; lower lr or check the data")
                losses.append(float(r[0]))
                for n, v in zip(names, r[1:]):
                    parts_hist.setdefault(n, []).append(float(v))
                step += 1
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix_str(f"loss {losses[-1]:.4g}")
            stop = False
            if callback is not None and step % callback_every == 0:
                if graph is not None:
                    bar.update(flush())
                tc = time.perf_counter()
                net.eval()
                stop = bool(callback(step, net))
                net.train()
                t0 += time.perf_counter() - tc  # callback time is not training time
            if ckpt is not None and (step % ckpt_every == 0 or step == steps or stop) and not pending:
                save(step, wall0 + time.perf_counter() - t0)
                last_saved = step
            if stop:
                break
    except KeyboardInterrupt:
        if graph is not None:
            torch.cuda.synchronize()
            flush()
        save(len(losses), wall0 + time.perf_counter() - t0)  # every completed step, all of them finite
        bar.close()
        raise
    finally:
        bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = wall0 + time.perf_counter() - t0
    net.eval()
    return TrainResult(net, problem, model, np.asarray(losses), {k: np.asarray(v) for k, v in parts_hist.items()},
                       wall, ckpt, step, int(seed), str(dev), _dtype_name(dt), config, train_cfg)
