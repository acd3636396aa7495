"""One optimisation step: eager (with a finiteness guard before the update) or captured as a CUDA graph."""

from __future__ import annotations

import torch

__all__ = ["EagerStep", "GraphStep"]


def _grads_finite(params) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack(norms)).all())


class EagerStep:
    """loss → backward → (guard) → Adam step, with a finiteness check before the update."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, batch, step):
        self.opt.zero_grad(set_to_none=True)
        loss, parts = self.model.loss(batch, step)
        loss.backward()
        rec = torch.stack([loss.detach()] + [v.detach() for v in parts.values()])
        ok = bool(torch.isfinite(rec).all()) and _grads_finite(self.params)
        if ok:
            self.opt.step()
        return rec, list(parts), ok


class GraphStep:
    """The whole step captured as a CUDA graph (static inputs, capturable Adam)."""

    def __init__(self, model, opt, batch, step, warmup: int = 3):
        self.model, self.opt = model, opt
        self.static = {k: v.clone() for k, v in batch.items()}
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(warmup):  # autograd/cuBLAS initialisation on a side stream
                opt.zero_grad(set_to_none=True)
                loss, parts = model.loss(self.static, step)
                loss.backward()
        torch.cuda.current_stream().wait_stream(s)
        opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            loss, parts = model.loss(self.static, step)
            loss.backward()
            opt.step()
            self.rec = torch.stack([loss.detach()] + [v.detach() for v in parts.values()])
        self.names = list(parts)

    def __call__(self, batch, step):
        for k, v in batch.items():
            self.static[k].copy_(v, non_blocking=True)
        self.graph.replay()
        return self.rec.clone(), self.names, None
