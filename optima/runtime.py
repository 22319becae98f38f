"""Where and how a training verb runs: device, precision, threads, seeds, and torch.distributed.

Every training verb runs unchanged under ``torchrun --nproc-per-node N``: torchrun sets RANK,
WORLD_SIZE and LOCAL_RANK, and :func:`init_runtime` joins the process group (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    precision: str = "fp32"  # fp32 | bf16
    cpus: int | None = None  # CPUs of this process: the job's --threads, shared by the ranks torchrun starts

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def loader_workers(self, configured: int) -> int:
        """Data-loading worker processes for this process: ``runtime.num_workers``, at most its CPUs less one
        (the training process's own thread), so that ranks x (threads + workers) stays within the job's CPUs;
        torch's threads in this process are cut to the CPUs the workers leave (each worker runs one)."""
        if self.cpus is None or configured <= 0:
            return configured
        workers = min(configured, self.cpus - 1)
        torch.set_num_threads(max(1, self.cpus - workers))
        return workers

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def broadcast_object(self, obj, src: int = 0):
        """Send a picklable object from ``src`` to every rank (the policy's choice, made on rank 0)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item() / self.world_size)


def all_reduce_mean_dict(runtime: "Runtime", values: dict[str, float]) -> dict[str, float]:
    """Mean over ranks of a dict of floats (logged losses are global-batch means, like a 1-process run)."""
    if not runtime.distributed:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {k: float(v) / runtime.world_size for k, v in zip(keys, tensor.tolist())}


def init_runtime(device: str = "auto", precision: str = "auto", threads: int | None = None) -> Runtime:
    cpus = None
    if threads:
        # one job per core under `snakemake --cores all`: never let torch grab every core, nor more
        # threads than this machine has (dvc.yaml is generated once for any machine); under torchrun the
        # job's threads (its CPU allocation) are shared by the ranks it starts on this node
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        cpus = max(1, min(int(threads), cores) // ranks)
        torch.set_num_threads(cpus)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        from optima.errors import ConfigError

        raise ConfigError("runtime.device: cuda, but torch finds no CUDA GPU on this machine (no driver, no device, "
                          "or CUDA_VISIBLE_DEVICES empty): set runtime.device: auto or cpu, or run it on a GPU node")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if precision == "auto":
        precision = "bf16" if use_cuda else "fp32"
    return Runtime(device=dev, rank=rank, world_size=world_size, local_rank=local_rank, precision=precision, cpus=cpus)


def runtime_from_config(config: dict, threads: int | None = None) -> Runtime:
    """The runtime a verb's config asks for (``runtime.device``, ``runtime.precision``)."""
    return init_runtime(config["runtime"]["device"], config["runtime"]["precision"], threads)


def to_device(batch, device):
    """A batch (tensor, or dict of them) on ``device``; anything else passes through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 whatever the autocast dtype, and in float64 when the inputs are (the tests
    that check exact identities, such as chunked == whole, run in float64)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random generator a run uses, for bit-for-bit resume."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
