"""`optima gpu-check`: the acceptance check of a GPU node before the paper-scale run (``scripts/gpu_check.sh``).

Every GPU rule of the config runs a few steps at the config's shapes, one job at a time, as its pipeline job
would: ``finetune`` (the teacher, per task, with ``finetune.grad_checkpointing`` and ``accumulation_steps``),
``distill`` (one student at a time, per task and method of ``distill.run``, its policy's rounds and probe
included: a round is the whole check, so the probe is measured at its start and end) and ``evaluate`` (the
teacher's predictions; captions decoded with ``eval.decode``). The models are the config's, randomly
initialised (time and memory do not depend on the weights). The data are real JPEG files: a small synthetic
image folder per task, re-encoded as JPEG at COCO's size (640 x 480), decoded by the training loader's worker
processes at every step (``runtime.num_workers``), as official data would be.

Each rank holds the per-GPU batch of the rule's job in the Snakemake profile (``set-resources``: a distillation
job's global batch is split over its GPUs); under ``torchrun`` every visible GPU runs every job data-parallel
(NCCL). A job **fails** when

* its peak memory (the allocator's reserved peak plus what CUDA holds outside it) exceeds the budget less
  ``--memory-margin``: the budget is the smaller of this GPU and the card the profile assumes (its
  ``# GPU:`` line), so a larger GPU still checks the profile's card; an out-of-memory error fails it too;
* a training job's achieved bf16 throughput (FLOPs counted by ``torch.utils.flop_counter`` on one step, per
  GPU, over the step time including any wait for data) is below ``--min-mfu`` of the card's dense bf16 peak
  (a run that fell back to float32 reaches a few per cent);
* a loss, a gradient norm or a logit is not finite.

It prints one line per job, then one summary line (``gpu-check: PASS ...`` or ``gpu-check: FAIL ...``), and
writes ``OUT/gpu_check.csv``. Exit status: 0 pass, 1 fail, 2 when no CUDA GPU is visible (one line, nothing
run). ``--device cpu`` runs the same check on the CPU against a stand-in budget (``--budget-gb``) and peak
(``--peak-tflops``), memory then measured with the CPU allocator's statistics (``optima.distill.memory``):
the tests check the thresholds this way.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

COLUMNS = ["rule", "task", "method", "gpus", "per_gpu_batch", "micro_batch", "accumulation_steps", "steps",
           "samples_per_s", "tflops_per_gpu", "mfu", "data_wait", "peak_mem_gb", "budget_gb", "loss", "status",
           "reason"]
JPEG_SIZE = (640, 480)  # COCO's typical image: what a loader worker decodes and resizes at paper scale


def add_arguments(parser) -> None:
    from optima.args import add_config_arguments

    add_config_arguments(parser, required=False, config_help="config (default: config/paper.yaml)",
                         threads_help="CPUs of this job (torch threads and data workers share them; under torchrun "
                                      "divided among the ranks)")
    parser.add_argument("--tasks", nargs="*", default=None, help="default: the config's tasks")
    parser.add_argument("--rules", nargs="*", default=["finetune", "distill", "evaluate"],
                        choices=["finetune", "distill", "evaluate"])
    parser.add_argument("--methods", nargs="*", default=None, help="distillation methods (default: distill.run)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per training job (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default %(default)s)")
    parser.add_argument("--images", type=int, default=None,
                        help="training images generated per task (default: what the probe and two batches need)")
    parser.add_argument("--out", default="results/gpu_check", help="folder for the CSV and the generated data")
    parser.add_argument("--profile", default="workflow/profiles/slurm",
                        help="Snakemake profile: GPUs per rule and the card it assumes (default %(default)s)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a stand-in run against --budget-gb and --peak-tflops (tests)")
    parser.add_argument("--budget-gb", type=float, default=None,
                        help="device memory budget in GB (default: the smaller of this GPU and the profile's card)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the device (default: by its name)")
    parser.add_argument("--min-mfu", type=float, default=0.20,
                        help="least achieved share of the bf16 peak for a training job (default %(default)s)")
    parser.add_argument("--memory-margin", type=float, default=0.05,
                        help="share of the budget kept free (default %(default)s)")
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=list(JPEG_SIZE), metavar=("W", "H"))


# ---------------------------------------------------------------------------------------------- the device
def no_gpu_line() -> str | None:
    """The one line to print when no CUDA GPU is visible (None when one is)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"gpu-check: no CUDA GPU visible (torch {torch.__version__}, {build}; no driver, no device or "
            "CUDA_VISIBLE_DEVICES empty): nothing was run. Run it on a GPU node (scripts/gpu_check.sh); the NVIDIA "
            "driver must support the wheel's CUDA (docs/paper-scale.md#gpus-drivers-and-cuda-builds)")


def profile_settings(profile_dir: str) -> tuple[dict, tuple[str, float] | None]:
    """(the profile's config, (card name, bytes) of its ``# GPU:`` line or None)."""
    import re

    import yaml

    path = Path(profile_dir) / "config.yaml"
    if not path.is_file():
        return {}, None
    text = path.read_text()
    match = re.search(r"^#\s*GPU:\s*(.+?)\s*\((\d+(?:\.\d+)?)\s*GB\)", text, re.M)
    return yaml.safe_load(text) or {}, ((match.group(1), float(match.group(2)) * 1e9) if match else None)


def per_gpu_batch(batch_size: int, rule_gpus: int) -> int:
    """Examples one GPU holds per step in the profile's job (the global batch split over its GPUs)."""
    return math.ceil(batch_size / max(1, rule_gpus))


# ---------------------------------------------------------------------------------------------- the data
def generate_jpeg_data(task: str, config: dict, out: Path, train_images: int, size: tuple[int, int]) -> Path:
    """A prepared synthetic data set of ``task`` whose every image file holds a JPEG of ``size`` (the loaders
    decode by content): ``train_images`` training images, a few for validation and test."""
    import copy
    import json
    import shutil

    from PIL import Image

    from optima.data.formats import IMAGE_DIR
    from optima.data.prepare import prepare

    if (out / "prepared.json").is_file():  # reused when it has the images asked for
        made = json.loads((out / "prepared.json").read_text())
        if made.get("config", {}).get("synthetic", {}).get("images", {}).get("train") == train_images:
            return out
        shutil.rmtree(out)
    cfg = copy.deepcopy(config)
    cfg["data"]["source"] = "synthetic"
    synthetic = cfg["data"]["synthetic"]
    synthetic["image_size"] = 256
    synthetic["images"] = {"train": train_images, "val": 8, "test": 8}
    prepare(task, cfg, out)
    for path in sorted((out / IMAGE_DIR).iterdir()):
        with Image.open(path) as image:
            picture = image.convert("RGB").resize(size, Image.BILINEAR)
        tmp = path.with_name(f".{path.name}.tmp")
        picture.save(tmp, format="JPEG", quality=90)
        tmp.replace(path)
    return out


# ---------------------------------------------------------------------------------------------- one job
class Measure:
    """Peak memory of one job: CUDA allocator statistics, or on the CPU the allocator's profiled peak above the
    bytes held when it starts (``held``)."""

    def __init__(self, runtime, held_bytes: int = 0):
        import torch

        self.runtime, self.held = runtime, held_bytes
        self.cuda = runtime.device.type == "cuda"
        self.cpu_peak = 0
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def run(self, fn):
        if self.cuda:
            return fn()
        from optima.distill.memory import allocated_peak

        result = {}
        self.cpu_peak = max(self.cpu_peak, allocated_peak(lambda: result.setdefault("value", fn())))
        return result.get("value")

    def peak_bytes(self) -> float:
        import torch

        if not self.cuda:
            return float(self.held + self.cpu_peak)
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        outside = max(0, (total - free) - torch.cuda.memory_reserved())  # CUDA context, NCCL, other libraries
        return float(torch.cuda.max_memory_reserved() + outside)


def train_steps(model, objective, dataset, runtime, batch_per_gpu: int, accumulation: int, steps: int, warmup: int,
                lr: float, grad_clip, num_workers: int, seed: int, callbacks=None) -> dict:
    """``warmup + steps`` optimisation steps through the loop's own step and loader; per-rank timing of the
    timed steps (data wait apart from compute; the callbacks' probe outside both) and FLOPs of one step."""
    from torch.utils.flop_counter import FlopCounterMode

    from optima.distill.loop import optimisation_step
    from optima.distill.optim import build_optimizer, build_scheduler
    from optima.distill.sampling import training_loader
    from optima.errors import TrainingError
    from optima.runtime import to_device

    optimizer = build_optimizer(objective.named_parameters(), lr, 0.1)
    scheduler = build_scheduler(optimizer, 0, warmup + steps)
    total = warmup + steps
    loader = training_loader(dataset, batch_per_gpu * runtime.world_size, seed, 0, total, runtime.rank,
                             runtime.world_size, runtime.loader_workers(num_workers))
    losses, waits, computes, flops = [], [], [], 0

    def check(values):
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise TrainingError(f"loss not finite: {bad}")

    iterator = iter(loader)
    for step in range(total):
        start = time.perf_counter()
        batch = to_device(next(iterator), runtime.device)
        runtime.synchronize()
        fetched = time.perf_counter()
        if callbacks is not None:
            callbacks.before_step(step)
        runtime.synchronize()
        begun = time.perf_counter()
        if step == 0:
            with FlopCounterMode(display=False) as counter:
                values, norm, _ = optimisation_step(model, objective, optimizer, scheduler, batch, runtime,
                                                    grad_clip, check=check, accumulation_steps=accumulation)
            flops = counter.get_total_flops()
        else:
            values, norm, _ = optimisation_step(model, objective, optimizer, scheduler, batch, runtime, grad_clip,
                                                check=check, accumulation_steps=accumulation)
        runtime.synchronize()
        done = time.perf_counter()
        if not math.isfinite(float(norm)):
            raise TrainingError(f"gradient norm not finite at step {step}")
        if callbacks is not None:
            callbacks.after_step(step, values)
        losses.append(values["loss"])
        if step >= warmup:
            waits.append(fetched - start)
            computes.append(done - begun)
        del batch
    del optimizer
    return {"losses": losses, "wait": sum(waits), "compute": sum(computes), "steps": len(computes), "flops": flops}


def _row(rule, task, method, runtime, batch, micro, accumulation, result, measure, budget, peak_tflops) -> dict:
    seconds = result["wait"] + result["compute"]
    step_s = seconds / max(result["steps"], 1)
    tflops = result["flops"] / step_s / 1e12 if step_s > 0 else 0.0
    return {"rule": rule, "task": task, "method": method, "gpus": runtime.world_size, "per_gpu_batch": batch,
            "micro_batch": micro, "accumulation_steps": accumulation, "steps": result["steps"],
            "samples_per_s": round(batch * runtime.world_size / step_s, 2) if step_s > 0 else 0.0,
            "tflops_per_gpu": round(tflops, 4), "mfu": round(tflops / peak_tflops, 4) if peak_tflops else None,
            "data_wait": round(result["wait"] / seconds, 3) if seconds > 0 else 0.0,
            "peak_mem_gb": round(measure.peak_bytes() / 1e9, 3), "budget_gb": round(budget / 1e9, 3),
            "loss": round(result["losses"][-1], 5) if result["losses"] else None}


def worst_over_ranks(row: dict, runtime) -> dict:
    """Under torchrun: the largest peak memory and data wait, the lowest throughput of any rank (every rank
    records the same jobs in the same order)."""
    if not runtime.distributed:
        return row
    import torch
    import torch.distributed as dist

    highest, lowest = ("peak_mem_gb", "data_wait"), ("samples_per_s", "tflops_per_gpu", "mfu")
    values = {}
    for keys, op in ((highest, dist.ReduceOp.MAX), (lowest, dist.ReduceOp.MIN)):
        tensor = torch.tensor([float(row.get(k) if row.get(k) is not None else math.nan) for k in keys],
                              dtype=torch.float64, device=runtime.device)
        dist.all_reduce(tensor, op=op)
        values.update(zip(keys, tensor.tolist()))
    failed = torch.tensor([1.0 if row.get("reason") else 0.0], device=runtime.device)
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    out = {**row, **{k: (None if math.isnan(v) else round(v, 4)) for k, v in values.items()}}
    if failed.item() and not out.get("reason"):
        out["reason"] = "failed on another rank"
    return out


def judge(row: dict, budget: float, margin: float, min_mfu: float, training: bool) -> dict:
    """PASS or FAIL with the reasons: memory within the budget less the margin, a training job's throughput at
    least ``min_mfu`` of the peak, a finite loss."""
    reasons = [] if not row.get("reason") else [row["reason"]]
    if row.get("peak_mem_gb") is not None and row["peak_mem_gb"] * 1e9 > budget * (1 - margin):
        reasons.append(f"peak memory {row['peak_mem_gb']:.2f} GB > {(1 - margin):.0%} of the {budget / 1e9:.2f} GB "
                       "budget")
    if training and row.get("mfu") is not None and row["mfu"] < min_mfu:
        reasons.append(f"{row['mfu']:.1%} of the bf16 peak < {min_mfu:.0%}"
                       + (f" (data wait {row['data_wait']:.0%} of the time)" if row.get("data_wait", 0) > 0.2 else ""))
    if row.get("loss") is not None and not math.isfinite(row["loss"]):
        reasons.append("loss not finite")
    return {**row, "status": "FAIL" if reasons else "PASS", "reason": "; ".join(reasons)}


# ---------------------------------------------------------------------------------------------- the verb
def run(args) -> int:
    if args.device == "cuda":
        line = no_gpu_line()
        if line is not None:
            print(line, flush=True)
            return 2
    import contextlib
    import copy
    import csv
    import gc

    import torch

    from optima.config import MAX_PROBE_FRACTION, finetune_section, load_config, method_spec
    from optima.data.tokenizers import load_tokenizer
    from optima.distill.bench_step import PEAK_TFLOPS
    from optima.distill.memory import tensor_bytes
    from optima.distill.objectives import TaskObjective
    from optima.distill.probe import split_held_out
    from optima.distill.setup import build_student, training_set
    from optima.errors import ConfigError, OptimaError
    from optima.models import create_coca
    from optima.runtime import init_runtime, seed_everything, shutdown
    from optima.tasks import build_dataset, create_task_model, get_task

    config = load_config(args.config or "config/paper.yaml", args.overrides)
    runtime = init_runtime(args.device, config["runtime"]["precision"], args.threads)
    profile, card = profile_settings(args.profile)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(runtime.device)
        device_name, device_bytes = props.name, float(props.total_memory)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)
        if peak is None:
            raise ConfigError(f"gpu-check: no bf16 peak known for {device_name!r}: give --peak-tflops")
        budget = min([device_bytes] + ([args.budget_gb * 1e9] if args.budget_gb else [card[1]] if card else []))
        budget_note = (f"the profile's {card[0]}" if card and budget == card[1] and not args.budget_gb
                       else device_name if budget == device_bytes else "--budget-gb")
    else:
        if not (args.budget_gb and args.peak_tflops):
            raise ConfigError("gpu-check --device cpu: give the stand-in --budget-gb and --peak-tflops")
        device_name, budget, peak, budget_note = "CPU stand-in", args.budget_gb * 1e9, args.peak_tflops, "--budget-gb"
    resources = profile.get("set-resources") or {}

    def gpus_of(rule):
        return int((resources.get(rule) or {}).get("gpu", 1) or 1)

    out = Path(args.out)
    tasks = args.tasks or list(config["tasks"])
    section = config["distill"]
    distill_rule = "distill" if section["group_by"] == "run" else "distill_task"
    methods = args.methods or list(section["run"])
    total_steps = args.warmup + args.steps
    if runtime.is_main:
        print(f"gpu-check: {runtime.world_size} x {device_name}, torch {torch.__version__}"
              f"{', CUDA ' + str(torch.version.cuda) if args.device == 'cuda' else ''}; {args.config or 'config/paper.yaml'}"
              f" ({config['model']['teacher']}, {config['runtime']['precision']}); budget {budget / 1e9:.1f} GB "
              f"({budget_note}), bf16 peak {peak:g} TFLOP/s, training jobs need >= {args.min_mfu:.0%} of it", flush=True)
    rows: list[dict] = []

    def record(row, training):
        row = judge(worst_over_ranks(row, runtime), budget, args.memory_margin, args.min_mfu, training)
        rows.append(row)
        if runtime.is_main:
            mfu = f", {row['mfu']:.1%} of peak" if row.get("mfu") is not None and training else ""
            print(f"gpu-check: {row['status']} {row['rule']} {row['task']} {row['method']}: {row['samples_per_s']} "
                  f"samples/s{mfu}, peak {row['peak_mem_gb']} GB, data wait {row['data_wait']:.0%}"
                  f"{' -- ' + row['reason'] if row['reason'] else ''}", flush=True)

    def failed(rule, task, method, exc):
        reason = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else f"{type(exc).__name__}: {exc}"
        row = {"rule": rule, "task": task, "method": method, "gpus": runtime.world_size, "steps": 0,
               "samples_per_s": 0.0, "data_wait": 0.0, "peak_mem_gb": None, "budget_gb": round(budget / 1e9, 3),
               "reason": reason.splitlines()[0][:300]}
        record(row, training=False)

    def free():
        gc.collect()
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()

    workers = config["runtime"]["num_workers"]
    for task in tasks:
        spec = get_task(task)
        batches = [per_gpu_batch(finetune_section(config, task)["batch_size"], gpus_of("finetune")),
                   per_gpu_batch(section["batch_size"], gpus_of(distill_rule))]
        per_example = spec.images_per_example  # NLVR2: two images per example
        need = per_example * max(math.ceil((section["probe_size"] + section["heldout_size"]) / MAX_PROBE_FRACTION) + 8,
                                 2 * max(batches) * runtime.world_size)
        images = args.images or need
        data_dir = out / "data" / task
        if runtime.is_main:
            generate_jpeg_data(task, config, data_dir, images, tuple(args.jpeg_size))
        runtime.barrier()
        tokenizer = load_tokenizer(data_dir)
        full_train = training_set(task, config, data_dir, tokenizer)
        num_classes = getattr(full_train, "num_classes", None)
        seed_everything(0)
        coca = create_coca(config["model"]["teacher"], vocab_size=tokenizer.vocab_size,
                           context_length=tokenizer.context_length)

        if "finetune" in args.rules:
            ft = finetune_section(config, task)
            batch, accumulation = batches[0], ft["accumulation_steps"]
            try:
                teacher = create_task_model(task, copy.deepcopy(coca), num_classes).to(runtime.device).train()
                if ft["grad_checkpointing"]:
                    teacher.coca.set_grad_checkpointing(True)
                objective = TaskObjective(teacher)
                model = _ddp(objective, runtime)
                measure = Measure(runtime, tensor_bytes(objective.parameters()))
                result = measure.run(functools.partial(train_steps, model, objective, full_train, runtime, batch,
                                                       accumulation, args.steps, args.warmup, ft["lr"],
                                                       ft["grad_clip"], workers, 0))
                record(_row("finetune", task, "teacher", runtime, batch, math.ceil(batch / accumulation),
                            accumulation, result, measure, budget, peak), training=True)
            except (torch.OutOfMemoryError, OptimaError, RuntimeError) as exc:
                failed("finetune", task, "teacher", exc)
            with contextlib.suppress(NameError):
                del model, objective, teacher
            free()

        if "distill" in args.rules or "evaluate" in args.rules:
            teacher = create_task_model(task, coca, num_classes).to(runtime.device).eval()
        if "distill" in args.rules:
            from torch.utils.data import Subset

            batch, accumulation = batches[1], section["accumulation_steps"]
            try:
                probe_idx, heldout_idx, train_idx = split_held_out(full_train, section["probe_size"],
                                                                   section["heldout_size"], section["probe_seed"])
            except OptimaError as exc:
                for name in methods:
                    failed("distill", task, name, exc)
                methods_here = []
            else:
                methods_here = methods
                train_set = Subset(full_train, train_idx)
            for name in methods_here:  # one student at a time, freed before the next
                try:
                    method = {**method_spec(config, name), "round_steps": total_steps}  # one round: probe at both ends
                    seed_everything(0)
                    built = build_student(task, method, config, teacher, full_train, probe_idx, runtime, 0,
                                          heldout_idx=heldout_idx)
                    objective = built.objective
                    model = _ddp(objective, runtime)
                    measure = Measure(runtime, tensor_bytes(list(objective.parameters())
                                                            + list(teacher.parameters())))
                    result = measure.run(lambda: train_steps(model, objective, train_set, runtime, batch, accumulation,
                                                             args.steps, args.warmup, section["lr"],
                                                             section["grad_clip"], workers, 0, built.rounds))
                    record(_row("distill", task, name, runtime, batch, math.ceil(batch / accumulation), accumulation,
                                result, measure, budget, peak), training=True)
                except (torch.OutOfMemoryError, OptimaError, RuntimeError) as exc:
                    failed("distill", task, name, exc)
                with contextlib.suppress(NameError):
                    del model, objective, built
                free()
        if "evaluate" in args.rules:
            try:
                row = _evaluate(task, spec, teacher, data_dir, tokenizer, config, runtime, budget, Measure,
                                build_dataset, tensor_bytes)
                record(row, training=False)
            except (torch.OutOfMemoryError, OptimaError, RuntimeError) as exc:
                failed("evaluate", task, "teacher", exc)
        with contextlib.suppress(NameError):
            del teacher
        del coca, full_train
        free()

    failures = [r for r in rows if r["status"] == "FAIL"]
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "gpu_check.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        where = f"{runtime.world_size} x {device_name}"
        if failures:
            listed = "; ".join(f"{r['rule']} {r['task']} {r['method']} ({r['reason']})" for r in failures[:4])
            more = f"; and {len(failures) - 4} more" if len(failures) > 4 else ""
            print(f"gpu-check: FAIL {len(failures)} of {len(rows)} jobs on {where}: {listed}{more}; "
                  f"table in {out / 'gpu_check.csv'}", flush=True)
        else:
            print(f"gpu-check: PASS {len(rows)} of {len(rows)} jobs on {where} (peak memory within "
                  f"{1 - args.memory_margin:.0%} of {budget / 1e9:.1f} GB, training >= {args.min_mfu:.0%} of "
                  f"{peak:g} TFLOP/s, finite losses); table in {out / 'gpu_check.csv'}", flush=True)
    shutdown(runtime)
    return 1 if failures else 0


def _ddp(objective, runtime):
    if not runtime.distributed:
        return objective
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(objective, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
                                   else None, find_unused_parameters=True)


def _evaluate(task, spec, teacher, data_dir, tokenizer, config, runtime, budget, Measure, build_dataset,
              tensor_bytes) -> dict:
    """The teacher's predictions on the generated validation split at ``eval.batch_size`` (per rank: an
    evaluation job is one process), through the evaluation code (decoding for captions)."""
    from optima.eval.evaluate import predict_captions, predict_labels

    eval_cfg = config["eval"]
    dataset = build_dataset(task, data_dir, "val", tokenizer, config["data"]["image_size"], train=False,
                            cache_images=False)
    batch = eval_cfg["batch_size"]
    measure = Measure(runtime, tensor_bytes(teacher.parameters()))
    start = time.perf_counter()
    if spec.captioning:
        measure.run(lambda: predict_captions(teacher, dataset, tokenizer, batch, runtime.device, eval_cfg["decode"],
                                             runtime.autocast))
    else:
        measure.run(lambda: predict_labels(teacher, dataset, batch, runtime.device, runtime.autocast))
    runtime.synchronize()
    seconds = time.perf_counter() - start
    return {"rule": "evaluate", "task": task, "method": "teacher", "gpus": runtime.world_size, "per_gpu_batch": batch,
            "micro_batch": batch, "accumulation_steps": 1, "steps": math.ceil(len(dataset) / batch),
            "samples_per_s": round(len(dataset) / seconds, 2), "tflops_per_gpu": None, "mfu": None, "data_wait": 0.0,
            "peak_mem_gb": round(measure.peak_bytes() / 1e9, 3), "budget_gb": round(budget / 1e9, 3), "loss": None}
