"""AdamW with decoupled weight decay, linear warm-up, then a decay of the learning rate: cosine to zero (the CoCa
recipe, the default), or (``lr_schedule``) cosine or linear to a floor, or constant, so that late bandit rounds
still carry weight (``lr_floor``: the floor as a fraction of the peak)."""

from __future__ import annotations

import math
from typing import Iterable

import torch


def param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, embeddings, logit scale and other 1-d tensors (as open_clip)."""
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name or "cls_emb" in name
        (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(named_params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(named_params, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)


SCHEDULES = ("cosine", "linear", "constant")


def warmup_cosine(warmup_steps: int, total_steps: int, schedule: str = "cosine", floor: float = 0.0):
    """The learning-rate factor of a step: linear warm-up, then ``schedule`` from 1 down to ``floor``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "constant":
            return 1.0
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
        return floor + (1.0 - floor) * decay

    return factor


def build_scheduler(optimizer, warmup_steps: int, total_steps: int, schedule: str = "cosine",
                    floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, schedule, floor))
