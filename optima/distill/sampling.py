"""Batches as a pure function of (seed, step, rank): resuming at step s needs no data-loader state.

Each epoch is a fresh permutation drawn from ``seed`` and the epoch number; the global batch of a step
is split across ranks (the distributed equivalent of a DistributedSampler with drop_last).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler, default_collate


class StepBatchSampler(Sampler[list[int]]):
    """``batch_size`` is the global batch: each of ``world_size`` ranks gets ``batch_size / world_size``
    examples, so a run on N processes sees exactly the batches of a single-process run."""

    def __init__(self, dataset_size: int, batch_size: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        global_batch = batch_size
        batch_size = global_batch // world_size
        if dataset_size < global_batch:
            raise ValueError(f"dataset of {dataset_size} examples is smaller than one global batch ({global_batch})")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.total_steps = total_steps
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = dataset_size // global_batch
        self._epoch, self._perm = -1, None

    def batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.dataset_size, generator=generator)
        start = (index * self.world_size + self.rank) * self.batch_size
        return self._perm[start:start + self.batch_size].tolist()

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def training_loader(dataset, batch_size: int, seed: int, start_step: int, total_steps: int,
                    rank: int = 0, world_size: int = 1, num_workers: int = 0) -> DataLoader:
    sampler = StepBatchSampler(len(dataset), batch_size, seed, start_step, total_steps, rank, world_size)
    # own generator: the loader's worker base seed must not consume the global RNG (dropout), or a
    # resumed run would diverge from an uninterrupted one
    generator = torch.Generator().manual_seed(seed * 7919 + start_step)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=default_collate,
                      generator=generator)


def fixed_batch(dataset, indices) -> dict:
    return default_collate([dataset[i] for i in indices])
