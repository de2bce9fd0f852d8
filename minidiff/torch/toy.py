"""The torch backend of the 2-D trainer (``minidiff.train``): a ``TorchMLP`` with the same initial
weights as the NumPy MLP, ``loss.backward()`` and ``torch.optim.AdamW``.  Importing
``minidiff.torch`` registers it, so ``ToyConfig(backend="torch")`` trains with it; the losses,
samplers and the run around them are the core's."""
from __future__ import annotations

import numpy as np
import torch

from ..checkpoint import flatten_params, unflatten_params
from ..methods import raw_to_model
from ..train import ToyBackend, register_toy_backend
from .loop import ema_into
from .mlp import TorchMLP


class TorchStepper:
    """One training step of a 2-D model on torch; ``state`` / ``load_state`` carry AdamW's moments
    and the consistency target through a checkpoint."""

    def __init__(self, cfg, params, objective, teacher=None):
        self.cfg, self.objective = cfg, objective
        self.model = TorchMLP.from_params(params)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.target = TorchMLP.from_params(params).requires_grad_(False) if objective.uses_target else None
        self.teacher_D = None
        if teacher is not None:
            t_params, t_config = teacher
            self.teacher_D = raw_to_model(TorchMLP.from_params(t_params).requires_grad_(False), t_config)

    def step(self, x0, draws, lr, mu=None):
        for group in self.opt.param_groups:
            group["lr"] = lr
        draws = {k: torch.from_numpy(np.asarray(v)) for k, v in draws.items()}
        loss = self.objective.loss(self.model, torch.from_numpy(x0), draws, self.target, self.teacher_D)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        if self.target is not None:
            ema_into(self.target, self.model, mu)
        return float(loss.detach())

    def params(self):
        return self.model.to_params()

    def state(self):
        """(arrays, JSON) of everything but the weights: AdamW's moments and steps, the target."""
        arrays = {}
        for i, p in enumerate(self.model.parameters()):
            for name, v in self.opt.state[p].items():
                arrays[f"torch_adamw.{i}.{name}"] = v.detach().cpu().numpy()
        if self.target is not None:
            arrays.update(flatten_params("target", self.target.to_params()))
        return arrays, {"optimizer": {"type": "torch.optim.AdamW"}}

    def load_state(self, arrays, state):
        with torch.no_grad():
            saved = TorchMLP.from_params(unflatten_params("params", arrays))
            for p, q in zip(self.model.parameters(), saved.parameters()):
                p.copy_(q)
        per_param = {}
        for key, v in arrays.items():
            if key.startswith("train.torch_adamw."):
                i, name = key.removeprefix("train.torch_adamw.").split(".", 1)
                per_param.setdefault(int(i), {})[name] = torch.from_numpy(np.array(v))
        self.opt.load_state_dict({"state": per_param, "param_groups": self.opt.state_dict()["param_groups"]})
        if self.target is not None:
            self.target = TorchMLP.from_params(unflatten_params("train.target", arrays)).requires_grad_(False)


register_toy_backend(ToyBackend("torch", TorchStepper, lambda params: TorchMLP.from_params(params, dtype=torch.float64),
                                torch.float64, torch.no_grad))
