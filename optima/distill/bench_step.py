"""`optima bench step`: where a distillation step's time goes, per method, as ratios measured in one run.

For the config's teacher and student (randomly initialised: the time does not depend on the weights),
every method the config defines among ``finetune`` (the student alone), ``kd``, ``layerwise``,
``uniform`` and ``optima`` trains through the pipeline's own step (``optima.distill.loop``), with its
own policy, rounds and probe, and with the teacher targets the config's ``distill.teacher_cache``
gives it (computed once before timing, as the workflow's ``teacher_targets`` job does). The methods
are **interleaved**: every repeat runs one block of whole bandit rounds of each method in turn, so
drift of the machine's speed hits all alike. A block's time divided by its steps is one sample (it
includes the method's share of probe evaluation and bookkeeping); the table reports the median
sample per method, the ratios to ``layerwise`` and to ``finetune``, and per step the time spent in
the teacher (forward or cache lookup) and in the probe.

Inputs are the task's prepared data (``--data``) or, without it, random inputs of the config's shapes
(images, context length, answer vocabulary), so paper-scale shapes need no data. On a GPU it also
reports samples/s, peak memory and model FLOPs utilisation (FLOPs counted by
``torch.utils.flop_counter`` on one step; the peak from ``--peak-tflops`` or a known device). The peak
memory is that of a job training the method alone (the methods share the GPU here): what was allocated
before any method (teacher, cached targets) + the method's parameters, gradients, optimiser state and
probe + the most its steps allocated above that. ``scripts/gpu_check.sh`` runs it at paper scale.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

BENCH_METHODS = ("finetune", "kd", "layerwise", "uniform", "optima")
CSV_COLUMNS = ["method", "median_step_s", "ratio_to_layerwise", "ratio_to_student_alone", "teacher_s", "probe_s",
               "samples_per_s", "peak_mem_gb", "tflops_per_step", "mfu"]
# dense bf16 peak TFLOP/s by device name fragment (for MFU)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "V100": 125.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from optima.args import add_config_arguments

    add_config_arguments(parser, threads_help="torch CPU threads (default: 1, as a pipeline job)", threads_default=1)
    parser.add_argument("--task", default=None, help="task to time (default: vqa if the config runs it, else its first)")
    parser.add_argument("--data", default=None, help="prepared data of the task (default: random inputs of its shapes)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/step.csv"), help="CSV to write")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per method and repeat (rounded up to whole bandit rounds; "
                             "default: two rounds)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats first (default: %(default)s)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak TFLOP/s for MFU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", action="append", default=[], metavar="NAME",
                        help="also time this method of distill.methods (repeatable), e.g. an OPTIMA variant with "
                             "another reward or the oracle (default: finetune, kd, layerwise, uniform, optima)")


# ---------------------------------------------------------------------- inputs
class RandomTaskData:
    """Random examples in the layout the task's dataset yields (for timing only).

    Images are drawn when an item is read, from a generator seeded by (seed, index), so the pool costs no
    host memory however large it is (paper scale: 1,024 examples of 3 x 224 x 224, 0.62 GB as float32 if
    kept, twice that for NLVR2); the same index always gives the same image."""

    def __init__(self, task: str, n: int, image_size: int, context_length: int, vocab_size: int,
                 num_classes: int | None, seed: int):
        import torch

        from optima.tasks import get_task

        self.task, self.n, self.num_classes = get_task(task), n, num_classes
        self.seed, self.image_size = seed, image_size
        self.n_images = self.task.images_per_example
        g = torch.Generator().manual_seed(seed)
        self.texts = torch.randint(3, vocab_size, (n, context_length), generator=g)
        self.texts[:, context_length // 2:] = 0  # padded second half, like short sentences
        self.labels = torch.randint(0, num_classes or 2, (n,), generator=g)

    def image(self, index: int):
        """(images, 3, H, W) for example ``index``."""
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 1)
        return torch.randn(self.n_images, 3, self.image_size, self.image_size, generator=g)

    def __len__(self) -> int:
        return self.n

    def image_keys(self, index: int) -> tuple[str, ...]:
        return tuple(f"{index}/{k}" for k in range(self.n_images))

    def __getitem__(self, index: int) -> dict:
        item = {"text": self.texts[index], "index": index}
        images = self.image(index)
        if self.n_images > 1:
            item["images"] = images
        else:
            item["image"] = images[0]
        self.task.random_targets(item, int(self.labels[index]), self.num_classes)
        return item


def pool_size(batch_size: int, probe_size: int) -> int:
    """Examples of random inputs: enough that the probe holds out at most ``MAX_PROBE_FRACTION`` of the
    images and at least two batches train."""
    import math

    from optima.config import MAX_PROBE_FRACTION

    return max(math.ceil(probe_size / MAX_PROBE_FRACTION), probe_size + 2 * batch_size)


def _inputs(task: str, config: dict, data_dir, pool: int, seed: int):
    """(dataset, vocab_size, context_length, num_classes)."""
    from optima.tasks import get_task

    data_cfg = config["data"]
    if data_dir:
        from optima.data.tokenizers import load_tokenizer
        from optima.distill.setup import training_set

        tokenizer = load_tokenizer(data_dir)
        dataset = training_set(task, config, data_dir, tokenizer)
        return dataset, tokenizer.vocab_size, tokenizer.context_length, getattr(dataset, "num_classes", None)
    # the word tokenizer's vocabulary is the synthetic grammar's (~100 words); open_clip's BPE has 49,408
    vocab = 128 if data_cfg["tokenizer"] == "word" else 49408
    spec = get_task(task)
    num_classes = None if spec.captioning else (spec.fixed_classes or data_cfg["num_answers"])
    dataset = RandomTaskData(task, pool, data_cfg["image_size"], data_cfg["context_length"], vocab, num_classes, seed)
    return dataset, vocab, data_cfg["context_length"], num_classes


# ---------------------------------------------------------------------- one method's trainer
class MethodRunner:
    """A student of one method with its optimiser, policy rounds and probe, stepping through the loop's step."""

    def __init__(self, name, method, task, config, teacher, dataset, train_idx, probe_idx, targets, runtime, seed,
                 heldout_idx=()):
        import torch

        from optima.distill.optim import build_optimizer, build_scheduler
        from optima.distill.sampling import StepBatchSampler
        from optima.distill.setup import build_student

        torch.manual_seed(seed)
        section = config["distill"]
        self.name, self.runtime, self.dataset = name, runtime, dataset
        self.teacher_seconds = 0.0

        def attach(objective):
            objective.targets = targets

        built = build_student(task, method, config, teacher, dataset, probe_idx, runtime, seed, attach,
                              heldout_idx=heldout_idx, replay_counts=lambda source: [1000] * 3)  # timing only
        self.objective, self.callbacks, self.probe = built.objective, built.rounds, built.probe
        self._wrap_teacher()
        self.optimizer = build_optimizer(self.objective.named_parameters(), section["lr"], section["weight_decay"])
        self.scheduler = build_scheduler(self.optimizer, 0, 10 ** 9)
        self.grad_clip = section["grad_clip"]
        self.sampler = StepBatchSampler(len(train_idx), section["batch_size"], seed, 0, 10 ** 9)
        self.train_idx = train_idx
        self.step = 0
        self.peak_above_start = 0  # CUDA: the most a block allocated above what was allocated at its start
        self.peak_all = 0          # CUDA: the peak of everything allocated (every method's state together)
        self.objective.train()

    def _wrap_teacher(self):
        original = self.objective.teacher_outputs

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.teacher_seconds += time.perf_counter() - started

        self.objective.teacher_outputs = timed

    def batch(self):
        from optima.distill.sampling import fixed_batch
        from optima.runtime import to_device

        indices = [self.train_idx[i] for i in self.sampler.batch(self.step)]
        return to_device(fixed_batch(self.dataset, indices), self.runtime.device)

    def run_block(self, steps: int, batches: list) -> tuple[float, float, float]:
        """Train ``steps`` steps; (seconds per step, teacher seconds per step, probe seconds per step)."""
        from optima.distill.loop import optimisation_step

        import torch

        cuda = self.runtime.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.runtime.device)
            base = torch.cuda.memory_allocated(self.runtime.device)
        self.runtime.synchronize()
        teacher0, probe0 = self.teacher_seconds, self.callbacks.overhead_s if self.callbacks else 0.0
        started = time.perf_counter()
        for k in range(steps):
            if self.callbacks:
                self.callbacks.before_step(self.step)
            replaced = None
            if hasattr(self.callbacks, "replace_step"):  # the oracle trains every arm of the round itself
                replaced = self.callbacks.replace_step(self.step, batches[k % len(batches)],
                                                       self._context(batches, self.step - k))
            values, _, _ = replaced or optimisation_step(self.objective, self.objective, self.optimizer,
                                                         self.scheduler, batches[k % len(batches)], self.runtime,
                                                         self.grad_clip)
            if self.callbacks:
                self.callbacks.after_step(self.step, values)
            self.step += 1
        self.runtime.synchronize()
        elapsed = time.perf_counter() - started
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.runtime.device)
            self.peak_above_start = max(self.peak_above_start, peak - base)
            self.peak_all = max(self.peak_all, peak)
        probe = (self.callbacks.overhead_s if self.callbacks else 0.0) - probe0
        return elapsed / steps, (self.teacher_seconds - teacher0) / steps, probe / steps

    def _context(self, batches: list, first_step: int):
        from optima.distill.loop import optimisation_step
        from optima.distill.oracle import StepContext

        def train_step(batch):
            return optimisation_step(self.objective, self.objective, self.optimizer, self.scheduler, batch,
                                     self.runtime, self.grad_clip)

        return StepContext(self.objective, self.objective, self.optimizer, self.scheduler, self.runtime,
                           self.grad_clip, lambda values: None, lambda s: batches[(s - first_step) % len(batches)],
                           10 ** 9, train_step)

    def resident_bytes(self) -> int:
        """Device bytes this method keeps between steps: the trained parameters, their gradients, the
        optimiser's state, and the probe's inputs and stored teacher outputs (if on the device)."""
        import torch

        from optima.distill.probe import _map_tensors

        seen, total = set(), 0

        def add(tensor):
            nonlocal total
            if isinstance(tensor, torch.Tensor) and tensor.device == self.runtime.device:
                if tensor.data_ptr() not in seen:
                    seen.add(tensor.data_ptr())
                    total += tensor.numel() * tensor.element_size()
            return tensor

        for parameter in self.objective.parameters():
            add(parameter)
            add(parameter.grad)
        for state in self.optimizer.state.values():
            for value in state.values():
                add(value)
        if self.probe is not None:
            _map_tensors(self.probe.batch, add)
            for out in self.probe.stored or []:
                _map_tensors(out, add)
        return total

    def flops_per_step(self, batch) -> float:
        """Model FLOPs of one training step (forward and backward, teacher included), counted by torch."""
        from torch.utils.flop_counter import FlopCounterMode

        from optima.distill.loop import optimisation_step

        with FlopCounterMode(display=False) as counter:
            optimisation_step(self.objective, self.objective, self.optimizer, self.scheduler, batch, self.runtime,
                              self.grad_clip)
        return float(counter.get_total_flops())


def run(args: argparse.Namespace) -> int:
    import torch

    from optima.args import setup
    from optima.config import method_spec
    from optima.distill.probe import split_held_out
    from optima.distill.targets import DTYPES, TeacherTargets, cache_options, compute_targets, estimate_bytes
    from optima.errors import ConfigError
    from optima.io import atomic_write_text
    from optima.models import create_coca
    from optima.tasks import create_task_model

    config, runtime = setup(args)
    task = args.task or ("vqa" if "vqa" in config["tasks"] else config["tasks"][0])
    section = config["distill"]
    names = [name for name in BENCH_METHODS if name in section["methods"]]
    names += [name for name in args.method if name not in names]
    if "finetune" not in names or "layerwise" not in names:
        raise ConfigError(f"{args.config}: optima bench step needs the methods 'finetune' and 'layerwise' in "
                          f"distill.methods (defined: {', '.join(section['methods'])})")
    methods = {name: method_spec(config, name) for name in names}
    round_steps = max(m["round_steps"] for m in methods.values())
    steps = args.steps or 2 * round_steps
    steps = -(-steps // round_steps) * round_steps  # whole rounds, so every block pays its share of the probe
    batch_size = section["batch_size"]
    # the probe may hold out at most MAX_PROBE_FRACTION of the images (one example per image) and a
    # batch must remain: the smallest pool that allows both (paper: 256 / 0.25 = 1,024 examples)
    pool = pool_size(batch_size, section["probe_size"] + section["heldout_size"])
    dataset, vocab, context_length, num_classes = _inputs(task, config, args.data, pool, args.seed)

    torch.manual_seed(args.seed)
    coca = create_coca(config["model"]["teacher"], vocab_size=vocab, context_length=context_length)
    teacher = create_task_model(task, coca, num_classes).to(runtime.device)
    probe_idx, heldout_idx, train_idx = split_held_out(dataset, section["probe_size"], section["heldout_size"],
                                                       section["probe_seed"])

    targets, cache = None, cache_options(section)
    if cache["mode"] != "never":
        from optima.distill.setup import build_objective

        builder, _, _ = build_objective(task, config, teacher, num_classes, 1.0, 1.0, 1.0)
        builder.to(runtime.device).eval()
        dtype = DTYPES[cache["dtype"]]
        size, _ = estimate_bytes(builder, dataset, dtype)
        if size / 1e9 <= float(cache["max_gb"]):
            with torch.no_grad(), runtime.autocast():
                tensors, rows = compute_targets(builder, dataset, dtype, int(cache["batch_size"]), progress=False)
            targets = TeacherTargets(tensors, rows, runtime.device)
    print(f"optima bench step: {args.config}, task {task}, {len(names)} methods, {steps} steps x {args.repeats} "
          f"interleaved repeats, batch {batch_size}, {torch.get_num_threads()} thread(s), device {runtime.device}, "
          f"teacher targets {'cached (' + cache['dtype'] + ')' if targets else 'on the fly'}", flush=True)

    shared_bytes = torch.cuda.memory_allocated(runtime.device) if runtime.device.type == "cuda" else 0
    runners = {name: MethodRunner(name, method, task, config, teacher, dataset, train_idx, probe_idx, targets,
                                  runtime, args.seed, heldout_idx) for name, method in methods.items()}
    samples = {name: [] for name in names}
    for repeat in range(args.warmup + args.repeats):
        for name, runner in runners.items():
            block = [runner.batch()]  # one fixed batch per block: data loading is not timed
            per_step = runner.run_block(steps, block)
            if repeat >= args.warmup:
                samples[name].append(per_step)

    flops = {}
    if runtime.device.type == "cuda":
        for name, runner in runners.items():
            flops[name] = runner.flops_per_step(runner.batch())
        torch.cuda.synchronize()
    peak = args.peak_tflops
    if peak is None and runtime.device.type == "cuda":
        device_name = torch.cuda.get_device_name(runtime.device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)

    rows = []
    median = {name: statistics.median(s[0] for s in samples[name]) for name in names}
    for name in names:
        step_s = median[name]
        row = {"method": name, "median_step_s": step_s, "ratio_to_layerwise": step_s / median["layerwise"],
               "ratio_to_student_alone": step_s / median["finetune"],
               "teacher_s": statistics.median(s[1] for s in samples[name]),
               "probe_s": statistics.median(s[2] for s in samples[name]),
               "samples_per_s": batch_size / step_s, "peak_mem_gb": None, "tflops_per_step": None, "mfu": None}
        if runtime.device.type == "cuda":
            # the methods share one GPU here; the peak of a job that trains this method alone is what was
            # allocated before any method (teacher, cached targets) + this method's resident state + the
            # most one of its blocks allocated above its start
            runner = runners[name]
            row["peak_mem_gb"] = (shared_bytes + runner.resident_bytes() + runner.peak_above_start) / 1e9
            row["tflops_per_step"] = flops[name] / 1e12
            if peak:
                row["mfu"] = flops[name] / step_s / (peak * 1e12)
        rows.append(row)
    text = _table(rows)
    print(text)
    if runtime.device.type == "cuda":
        together = max(r.peak_all for r in runners.values()) / 1e9
        print(f"peak_mem_gb: a job training that method alone (teacher and cached targets {shared_bytes / 1e9:.2f} GB "
              f"+ its student, gradients, optimiser state and probe + its steps' peak); all {len(runners)} methods "
              f"held together here peaked at {together:.2f} GB")
    atomic_write_text(args.out, _csv(rows))
    atomic_write_text(args.out.with_suffix(".md"), text + "\n")
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}")
    return 0


def _fmt(value, digits=4) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(CSV_COLUMNS) + " |", "|---" * len(CSV_COLUMNS) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in CSV_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if row[c] is None else row[c]) for c in CSV_COLUMNS} for row in rows)
    return buffer.getvalue()
