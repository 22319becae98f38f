"""GPU memory of the pipeline's GPU jobs, estimated on the CPU (``scripts/memory_estimate.py``, docs/paper-scale.md).

A job's peak on one GPU is the sum of

* its **state**, counted: the float32 weights of every model it holds (a distillation job: the frozen teacher
  and the trained student), AdamW's two float32 moments and the float32 gradients of the trained parameters;
* what **one step allocates above that state**, measured: the CPU allocator's statistics (the torch profiler's
  memory events, which report every allocation and free of torch's CPU allocator) over one forward and
  backward of the job's real objective under bf16 autocast, at two micro-batches (the script: 2 and 3) with the gradients
  already allocated. Each phase (forward, backward) gets its own line through its two peaks, and the job's
  micro-batch (batch / GPUs / accumulation steps) takes the largest phase there (``StepFit``): which phase
  peaks can change between one example and sixteen, and one line through the whole step's peaks would
  then extrapolate from the wrong phase.
  This covers the activations kept for backward, the bf16 copies autocast makes of the weights, the loss
  kernels' transients (a few float32 copies of the 49,408-token logits for captions) and the teacher's
  outputs;
* what only a GPU job has, as allowances: PyTorch's foreach AdamW on CUDA allocates a temporary the size of
  the trained parameters during ``optimizer.step()`` (a phase without activations); DistributedDataParallel
  keeps gradient buckets the size of the gradients; the CUDA context and library workspaces
  (``CONTEXT_BYTES``); the caching allocator's fragmentation (``FRAGMENTATION``, a share of the peak).

The gradients are counted for the whole step although a step whose gradients were freed (the first
micro-batch) allocates them while it frees activations: the estimate is an upper bound, by at most the
gradients. ``tests/test_memory_estimate.py`` checks it against the measured peak of whole optimisation steps
of a scaled-down model on the CPU.
"""

from __future__ import annotations

import contextlib
import gc
import math
from dataclasses import dataclass, field

import torch

CONTEXT_BYTES = 1.0e9   # CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers (allowance)
FRAGMENTATION = 0.10    # caching-allocator reserve above the allocated peak (allowance)
GB = 1e9


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side logs every start and stop on file descriptor 2: silence it meanwhile."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# the two micro-batches a step is measured at: not 1, where the CPU's bf16 step takes another path (the CoCa-L
# distillation forward: 1.0 GB at 1 example, then 2.64, 2.82, 3.01 GB at 2, 3, 4), so a line through 1 and 2
# reads a one-time jump as a slope (docs/paper-scale.md)
SIZES = (2, 3)
PHASE = "memory-phase:"  # prefix of the record_function ranges that split a measured step into phases


def _allocation_events(fn) -> tuple[list[tuple[int, int]], dict[str, tuple[int, int]]]:
    """Run ``fn()`` under the profiler: its CPU allocations and frees as sorted (time, bytes) pairs, and the
    (start, end) times of every ``record_function(PHASE + name)`` range it opened."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    sizes: list[tuple[int, int]] = []
    windows: dict[str, tuple[int, int]] = {}

    def walk(node):
        if node.name.startswith(PHASE):
            windows[node.name[len(PHASE):]] = (node.start_time_ns, node.end_time_ns)
        if node.tag == torch._C._profiler._EventType.Allocation:
            fields = node.extra_fields
            if str(fields.device).startswith("cpu"):
                sizes.append((node.start_time_ns, int(fields.alloc_size)))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    return sorted(sizes), windows


def phase_peaks(fn) -> dict[str, int]:
    """The most bytes torch's CPU allocator held above its level at the start while ``fn()`` ran, per phase:
    each ``record_function(PHASE + name)`` range ``fn`` opens is a phase, ``"all"`` is the whole run (tensors
    freed during ``fn`` that existed before count negative, as they free memory)."""
    events, windows = _allocation_events(fn)
    peaks = {"all": 0, **{name: None for name in windows}}
    level = 0
    for time, size in events:
        level += size
        peaks["all"] = max(peaks["all"], level)
        for name, (start, end) in windows.items():
            if start <= time <= end:
                peaks[name] = level if peaks[name] is None else max(peaks[name], level)
    return {name: peak or 0 for name, peak in peaks.items()}


def allocated_peak(fn) -> int:
    """The most bytes torch's CPU allocator held above its level at the start while ``fn()`` ran."""
    return phase_peaks(fn)["all"]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def random_batch(task: str, n: int, image_size: int, context_length: int, vocab_size: int,
                 num_classes: int | None, seed: int = 0) -> dict:
    """``n`` random examples in the task's batch layout, every text token real (the most the token-averaged
    terms hold; memory does not depend on the values)."""
    from optima.tasks import get_task

    spec = get_task(task)
    g = torch.Generator().manual_seed(seed)
    batch = {"text": torch.randint(3, vocab_size, (n, context_length), generator=g), "index": torch.arange(n)}
    images = torch.randn(n, spec.images_per_example, 3, image_size, image_size, generator=g)
    if spec.images_per_example > 1:
        batch["images"] = images
    else:
        batch["image"] = images[:, 0]
    for k in range(n):  # the task's own target fields (labels, soft answer scores)
        item = {}
        spec.random_targets(item, int(torch.randint(0, num_classes or 2, (1,), generator=g)), num_classes)
        for key, value in item.items():
            batch.setdefault(key, []).append(value)
    for key in list(batch):
        if isinstance(batch[key], list):
            batch[key] = torch.stack([torch.as_tensor(v) for v in batch[key]])
    return batch


@dataclass(frozen=True)
class StepFit:
    """What a measured step allocates above its state as a function of the micro-batch: per phase (forward,
    backward, ...) a line (fixed bytes, bytes per example) through two measured micro-batches.

    A step's peak is the largest of its phases' peaks, and which phase is largest can change with the
    micro-batch (a phase with a large fixed part, such as autocast's weight copies, wins at one example, the
    one holding the activations at sixteen). A single line through the step's overall peaks at 1 and 2
    examples then extrapolates from the wrong phase; a line per phase, maximised at the target micro-batch,
    does not, as long as each phase's own peak grows linearly."""

    lines: dict[str, tuple[float, float]]

    def phase_at(self, n: int) -> str:
        return max(self.lines, key=lambda name: self.lines[name][0] + self.lines[name][1] * n)

    def at(self, n: int) -> float:
        fixed, slope = self.lines[self.phase_at(n)]
        return fixed + slope * n

    def per_example(self, n: int) -> float:
        """Bytes per example of the phase that peaks at micro-batch ``n``."""
        return self.lines[self.phase_at(n)][1]


def _fit(sizes: tuple[int, int], peaks: list[dict[str, int]]) -> StepFit:
    """A line per phase through two (micro-batch, peak) points."""
    (b1, b2), (p1, p2) = sizes, peaks
    phases = [name for name in p1 if name != "all"] or ["all"]
    lines = {}
    for name in phases:
        slope = (p2[name] - p1[name]) / (b2 - b1)
        lines[name] = (p1[name] - slope * b1, slope)
    return StepFit(lines)


def measure(run, make_batch, sizes=SIZES, warm_up: bool = False) -> StepFit:
    """A line per phase through the peaks of ``run(make_batch(n))`` at the two micro-batches ``sizes`` (phases:
    the ``record_function(PHASE + name)`` ranges ``run`` opens; none: the whole run). The batch is made
    outside the measured window. ``warm_up``: one unmeasured run first."""
    if warm_up:
        run(make_batch(sizes[0]))
    peaks = []
    for n in sizes:
        batch = make_batch(n)
        peaks.append(phase_peaks(lambda batch=batch: run(batch)))
        del batch
    return _fit(tuple(sizes), peaks)


def step_above_state(objective, make_batch, dtype=torch.bfloat16, sizes=SIZES) -> StepFit:
    """What one forward + backward of ``objective`` allocates above its state, per phase, with every gradient
    allocated before it starts (as from the second micro-batch of an accumulated step on)."""
    from torch.profiler import record_function

    params = [p for p in objective.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)

    def run(batch):
        with record_function(PHASE + "forward"), torch.autocast("cpu", dtype=dtype):
            loss = objective(batch)["loss"]
        with record_function(PHASE + "backward"):
            loss.backward()

    # the unmeasured first run: the gradients it accumulates into are then tensors the profiler saw allocated (it
    # reports no free of a tensor allocated before it ran)
    fit = measure(run, make_batch, sizes, warm_up=True)
    for p in params:
        p.grad = None
    return fit


def inference_above_state(fn, make_batch, dtype=torch.bfloat16, sizes=SIZES) -> StepFit:
    """What ``fn(batch)`` allocates under no_grad and bf16 autocast (one phase)."""

    def run(batch):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            fn(batch)

    return measure(run, make_batch, sizes)


def evaluation_above_state(model, run, make_batch, dtype=torch.bfloat16, sizes=SIZES) -> StepFit:
    """What ``run(batch)`` allocates evaluating ``model`` held as ``optima evaluate`` holds a loaded model: in eval
    mode, its weights requiring grad, so autocast keeps a bf16 copy of every weight it casts for the whole batch
    (1.3 GB for coca_ViT-L-14); a frozen model would cast them anew per op and free them. ``model``'s flags are
    restored afterwards."""
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(True)
    try:
        return inference_above_state(run, make_batch, dtype, sizes)
    finally:
        model.train(training)
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)


def beam_cache_bytes(coca, image_tokens: int, beam_size: int, max_length: int, dtype_bytes: int = 2) -> int:
    """Bytes per image of beam search's key/value caches (``optima.models.decoding.CachedStepper``) at their
    largest: every beam's cross-attention keys and values of the image tokens, projected once, and the
    self-attention caches of both text towers at ``max_length`` positions; twice, since reordering the beams
    (``select``) copies every cache before the old ones are freed. Counted, not measured: on the CPU the peak
    at a few images comes from a phase of fixed size (the captions teacher's evaluation grew 3.7 MB per image
    at 2 and 3 images, where these caches hold 35 MB), so a line through them misses the caches."""
    text, decoder = coca.text, coca.text_decoder
    positions = (len(decoder.cross_attn) * image_tokens + len(decoder.resblocks) * max_length) * decoder.width \
        + len(text.transformer.resblocks) * max_length * text.width
    return 2 * (2 * beam_size * dtype_bytes * positions)  # (keys + values) per beam; old and new copies


@dataclass
class JobEstimate:
    """One GPU job's memory on one GPU: ``items`` (name -> bytes) summed by phase."""

    rule: str
    task: str
    method: str
    gpus: int
    micro_batch: int
    accumulation: int
    items: dict[str, float] = field(default_factory=dict)
    phases: dict[str, list[str]] = field(default_factory=dict)  # phase -> the items alive in it
    notes: str = ""

    def phase_bytes(self, phase: str) -> float:
        return sum(self.items[name] for name in self.phases[phase])

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_bytes)

    @property
    def allocated(self) -> float:
        """The allocator's peak: the largest phase."""
        return self.phase_bytes(self.peak_phase)

    @property
    def total(self) -> float:
        """What the job needs of the card: the allocated peak plus fragmentation and the CUDA context."""
        return self.allocated * (1 + FRAGMENTATION) + CONTEXT_BYTES


def training_estimate(rule: str, task: str, method: str, *, trained: int, frozen: int, micro_batch: int,
                      accumulation: int, gpus: int, step: StepFit | tuple[float, float], cuda: bool = True,
                      probe: StepFit | tuple[float, float] | None = None, probe_chunk: int = 0,
                      probe_outputs: float = 0.0, notes: str = "") -> JobEstimate:
    """A training job: ``trained`` / ``frozen`` parameter counts (float32), ``step`` = (fixed, per-example) from
    ``step_above_state``, ``probe`` likewise from ``inference_above_state`` of the probe's objective with
    ``probe_outputs`` bytes of stored teacher outputs moved to the GPU per chunk. ``cuda=False``: a CPU
    run (no foreach temporary, no DDP buckets), for the tests' comparison with a measured CPU peak."""
    est = JobEstimate(rule, task, method, gpus, micro_batch, accumulation, notes=notes)
    items = est.items
    items["weights"] = 4.0 * (trained + frozen)
    items["adamw moments"] = 8.0 * trained
    items["gradients"] = 4.0 * trained
    state = ["weights", "adamw moments", "gradients"]
    if cuda and gpus > 1:
        items["ddp buckets"] = 4.0 * trained
        state.append("ddp buckets")
    items["step"] = _at(step, micro_batch)
    est.phases["forward/backward"] = state + ["step"]
    if cuda:
        items["adamw foreach temporary"] = 4.0 * trained
        est.phases["optimizer step"] = state + ["adamw foreach temporary"]
    if probe is not None:
        items["probe chunk"] = _at(probe, probe_chunk) + probe_outputs
        est.phases["probe"] = state + ["probe chunk"]
    return est


def inference_estimate(rule: str, task: str, method: str, *, params: int, batch: int,
                       forward: StepFit | tuple[float, float], caches_per_example: float = 0,
                       notes: str = "") -> JobEstimate:
    """``caches_per_example``: what decoding keeps per example beyond the measured line (``beam_cache_bytes``)."""
    est = JobEstimate(rule, task, method, 1, batch, 1, notes=notes)
    est.items["weights"] = 4.0 * params
    est.items["forward"] = _at(forward, batch)
    est.items["key/value caches"] = caches_per_example * batch
    est.phases["inference"] = ["weights", "forward", "key/value caches"]
    return est


def _at(fit, n: int) -> float:
    """Bytes at micro-batch ``n`` of a ``StepFit`` or of a plain (fixed, per-example) pair."""
    if isinstance(fit, StepFit):
        return fit.at(n)
    fixed, slope = fit
    return fixed + slope * n


def micro_batch(batch_size: int, gpus: int, accumulation: int) -> int:
    """Examples per micro-batch on one GPU: the global batch split over the processes, then the accumulation
    steps (the largest micro-batch when they do not divide evenly)."""
    return math.ceil(math.ceil(batch_size / max(gpus, 1)) / max(accumulation, 1))
