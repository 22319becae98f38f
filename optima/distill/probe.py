"""The probe: a fixed held-out batch on which the policy's reward is measured.

``split_probe`` holds out **images**, not items: a caption item is an (image, caption) pair and the
other tasks ask several questions/hypotheses/statements about each image, so holding out items would
leave the probe's images in the training data. The probe takes one example per held-out image (two
images for NLVR2), and every item that shows a held-out image is removed from the training set of
every method, so all methods train on exactly the same examples. The draw depends only on the data
and ``distill.probe_seed``: the same probe for every method and seed of a task.

``Probe`` computes the teacher's outputs for the probe once and evaluates the distillation objective
on it without gradients.
"""

from __future__ import annotations

import time

import torch

from optima.config import MAX_PROBE_FRACTION, MODULES
from optima.errors import ConfigError


def split_probe(dataset, size: int, seed: int) -> tuple[list[int], list[int]]:
    """``(probe indices, training indices)``: ``size`` examples on distinct images, and every example
    that shows none of their images. ConfigError naming ``distill.probe_size`` when the probe would hold
    out more than ``MAX_PROBE_FRACTION`` of the training images."""
    keys = [tuple(dataset.image_keys(i)) for i in range(len(dataset))]
    n_images = len({key for item in keys for key in item})
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    held: set[str] = set()
    probe: list[int] = []
    for index in order:
        if len(probe) == size:
            break
        if held.isdisjoint(keys[index]):  # one probe example per image
            probe.append(index)
            held.update(keys[index])
    if len(probe) < size or len(held) > MAX_PROBE_FRACTION * n_images:
        raise ConfigError(
            f"distill.probe_size: a probe of {size} examples needs {size * max(len(k) for k in keys)} held-out "
            f"training images, but at most {MAX_PROBE_FRACTION:.0%} of the {n_images} training images may be "
            "held out; lower distill.probe_size")
    train = [i for i, item in enumerate(keys) if held.isdisjoint(item)]
    return sorted(probe), train


class Probe:
    """The distillation objective over all modules on a fixed batch, its teacher outputs computed once.

    ``seconds`` accumulates the wall time spent here (reported apart from training throughput).
    """

    def __init__(self, objective, batch: dict, runtime):
        self.objective = objective
        self.batch = batch
        self.runtime = runtime
        self.seconds = 0.0
        started = time.perf_counter()
        self.teacher_out = objective.teacher_outputs(batch, tuple(MODULES), need_logits=objective.kd_weight > 0)
        self.seconds += time.perf_counter() - started

    @torch.no_grad()
    def losses(self) -> dict[str, float]:
        started = time.perf_counter()
        self.objective.eval()
        try:
            with self.runtime.autocast():
                losses = self.objective.compute(self.batch, tuple(MODULES), teacher_out=self.teacher_out)
        finally:
            self.objective.train()
        values = {k: float(v) for k, v in losses.items()}
        self.seconds += time.perf_counter() - started
        return values
