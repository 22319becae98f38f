"""GPU memory of every GPU job of a config, estimated on the CPU, against the GPU its profile assumes.

    python scripts/memory_estimate.py --config config/paper.yaml              # every GPU rule, slurm profile
    python scripts/memory_estimate.py --config config/paper.yaml --tasks captions --rules finetune
    python scripts/memory_estimate.py --config config/paper.yaml --gpu "A100 80GB=85.1" --csv memory.csv

For each GPU rule of the workflow (``finetune`` per task, ``distill`` per task and method, ``evaluate`` of
the teacher and of a student per task) it builds the config's models (random weights: sizes do not depend
on them), counts their state and measures what one step allocates above it on the CPU at micro-batch 2 and 3
(``optima.distill.memory``: the CPU allocator's statistics under bf16 autocast), a line per phase of the step
(forward, backward) extrapolated to the job's micro-batch: batch / the rule's GPUs in the profile
(``set-resources``) / ``accumulation_steps``. The card is the profile's (its ``# GPU: NAME (N GB)`` line) unless ``--gpu NAME=GB`` says otherwise. A job fits when its
allocated peak plus 10 % fragmentation plus 1 GB of CUDA context is within the card. Exit status 1 when one
does not. At paper scale (coca_ViT-L-14) it takes about 8 minutes per task on 2 CPU cores.

Distillation is measured once per task with every loss term (task, KD, every module's layer losses: the
layerwise step) and every method is bounded by it (``--measure each`` measures each method's own terms:
slower); methods that pick one module per round hold a subset of those terms. Methods whose policy learns
from rewards also hold the probe (``distill.probe_*``). Evaluation runs one model per job
(``eval.group_by: run``); captions decode with ``eval.decode`` (beam search) at ``eval.batch_size``.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1e9


def profile_card(profile: Path) -> tuple[str, float]:
    """(name, bytes) of the GPU a profile assumes: its ``# GPU: NAME (N GB)`` comment line."""
    match = re.search(r"^#\s*GPU:\s*(.+?)\s*\((\d+(?:\.\d+)?)\s*GB\)", profile.read_text(), re.M)
    if not match:
        raise SystemExit(f"{profile}: no '# GPU: NAME (N GB)' line saying which card the profile assumes; "
                         "give --gpu NAME=GB")
    return match.group(1), float(match.group(2)) * GB


def rule_gpus(profile: dict, rule: str) -> int:
    return int((profile.get("set-resources") or {}).get(rule, {}).get("gpu", 1) or 1)


def main(argv=None) -> int:
    import yaml

    from optima.coca_modules import MODULES
    from optima.config import finetune_section, load_config, method_spec
    from optima.data.tokenizers import build_tokenizer
    from optima.distill import memory
    from optima.distill.objectives import TaskObjective
    from optima.distill.setup import build_objective
    from optima.models import create_coca
    from optima.tasks import create_task_model, get_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/paper.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--profile", default="workflow/profiles/slurm", help="Snakemake profile (GPUs per rule, card)")
    parser.add_argument("--gpu", default=None, metavar="NAME=GB", help="the card (default: the profile's)")
    parser.add_argument("--tasks", nargs="*", default=None, help="default: the config's tasks")
    parser.add_argument("--rules", nargs="*", default=["finetune", "distill", "evaluate"],
                        choices=["finetune", "distill", "evaluate"])
    parser.add_argument("--csv", default=None, help="also write the estimates to this CSV")
    parser.add_argument("--measure", choices=["largest", "each"], default="largest",
                        help="distillation: measure the step with every loss term once per task and bound every "
                             "method by it (largest, the default), or measure each method's own terms (each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs=2, default=list(memory.SIZES), metavar=("B1", "B2"),
                        help="the two micro-batches measured (default %(default)s, not 1: see "
                             "optima.distill.memory.SIZES); each phase of a step (forward, backward) gets its own "
                             "line through them (docs/paper-scale.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    sizes = tuple(args.sizes)
    profile_dir = Path(args.profile)
    profile = yaml.safe_load((profile_dir / "config.yaml").read_text()) or {}
    if args.gpu:
        name, _, size = args.gpu.partition("=")
        card_name, card = name.strip(), float(size) * GB
    else:
        card_name, card = profile_card(profile_dir / "config.yaml")
    section, data_cfg = config["distill"], config["data"]
    tokenizer = build_tokenizer(config)
    vocab, context = tokenizer.vocab_size, tokenizer.context_length
    tasks = args.tasks or list(config["tasks"])
    distill_rule = "distill" if section["group_by"] == "run" else "distill_task"
    eval_rules = ("evaluate_teacher", "evaluate_student") if config["eval"]["group_by"] == "run" else ("evaluate_task",) * 2
    print(f"memory estimate: {args.config}{' ' + ' '.join(args.overrides) if args.overrides else ''}; teacher "
          f"{config['model']['teacher']}; card: {card_name} ({card / GB:.1f} GB, {args.profile}); "
          f"bf16 autocast (runtime.precision {config['runtime']['precision']})", flush=True)

    torch.manual_seed(0)
    coca = create_coca(config["model"]["teacher"], vocab_size=vocab, context_length=context)
    estimates = []
    started = time.perf_counter()

    def log(message):
        print(f"  [{time.perf_counter() - started:5.0f} s] {message}", flush=True)

    for task in tasks:
        spec = get_task(task)
        num_classes = None if spec.captioning else (spec.fixed_classes or data_cfg["num_answers"])

        def make_batch(n, task=task, num_classes=num_classes):
            return memory.random_batch(task, n, data_cfg["image_size"], context, vocab, num_classes)

        coca.requires_grad_(True)
        coca.set_grad_checkpointing(False)
        teacher = create_task_model(task, coca, num_classes).train()
        n_teacher = sum(p.numel() for p in teacher.parameters())
        if "finetune" in args.rules:
            ft = finetune_section(config, task)
            gpus = rule_gpus(profile, "finetune")
            coca.set_grad_checkpointing(ft["grad_checkpointing"])
            step = memory.step_above_state(TaskObjective(teacher), make_batch, sizes=sizes)
            coca.set_grad_checkpointing(False)
            est = memory.training_estimate(
                "finetune", task, "teacher", trained=n_teacher, frozen=0, gpus=gpus, step=step,
                micro_batch=memory.micro_batch(ft["batch_size"], gpus, ft["accumulation_steps"]),
                accumulation=ft["accumulation_steps"],
                notes=f"batch {ft['batch_size']}" + (", grad checkpointing" if ft["grad_checkpointing"] else ""))
            estimates.append(est)
            log(f"finetune {task}: {step.per_example(est.micro_batch) / 1e6:.0f} MB per example "
                f"({step.phase_at(est.micro_batch)} peaks) -> {est.total / GB:.1f} GB")
        if "distill" in args.rules:
            from optima.bandits.registry import build_method_policy

            gpus = rule_gpus(profile, distill_rule)
            measured: dict = {}
            for name in section["run"]:
                method = method_spec(config, name)
                uses_probe = method["policy"] != "none" and (
                    build_method_policy(method, MODULES, 0)[0].uses_rewards or section["log_rewards"])
                # methods alike in memory share one measurement; --measure largest: every method is bounded by the
                # step with every term (KD and every module's layer losses: a superset of any method's)
                key = (method["kd_weight"] > 0, method["layer_weight"] > 0) if args.measure == "each" else (True, True)
                if key not in measured or (uses_probe and measured[key][2] is None):
                    torch.manual_seed(0)
                    kd_weight, layer_weight = (method["kd_weight"], method["layer_weight"]) if args.measure == "each" \
                        else (max(method["kd_weight"], 1.0), max(method["layer_weight"], 1.0))
                    objective, student, _ = build_objective(task, config, teacher, num_classes, kd_weight,
                                                            method["temperature"], layer_weight)
                    objective.train()
                    objective.active = tuple(MODULES)  # every module: the most a round's layer terms hold
                    trained = sum(p.numel() for p in objective.parameters())
                    step = measured[key][1] if key in measured else memory.step_above_state(objective, make_batch, sizes=sizes)
                    probe = floats = None
                    if uses_probe:  # the probe's forward (no gradients) and the teacher outputs it stores
                        probe = memory.inference_above_state(lambda b, o=objective: o.compute(b, tuple(MODULES)),
                                                             make_batch, sizes=sizes)
                        with torch.no_grad():
                            out = objective.teacher_outputs(make_batch(1), tuple(MODULES), need_logits=True)
                        floats = out["logits"].numel() + sum(v.numel() for v in out["features"].values())
                    measured[key] = (trained, step, probe, floats)
                    del objective, student
                trained, step, probe, floats = measured[key]
                chunk = section["probe_chunk"] or section["probe_size"]
                dtype_bytes = torch.finfo(getattr(torch, section["probe_dtype"])).bits / 8
                stored = {"cpu": chunk, "device": section["probe_size"], "recompute": 0}[section["probe_storage"]]
                est = memory.training_estimate(
                    "distill", task, name, trained=trained, frozen=n_teacher, gpus=gpus, step=step,
                    micro_batch=memory.micro_batch(section["batch_size"], gpus, section["accumulation_steps"]),
                    accumulation=section["accumulation_steps"],
                    probe=probe if uses_probe else None, probe_chunk=chunk,
                    probe_outputs=(floats or 0) * dtype_bytes * stored,
                    notes=f"batch {section['batch_size']}"
                    + (", grad checkpointing" if section["grad_checkpointing"] else "")
                    + (f", probe {section['probe_size']} in chunks of {chunk} ({section['probe_storage']})"
                       if uses_probe else ""))
                estimates.append(est)
                log(f"distill {task} {name}: {step.per_example(est.micro_batch) / 1e6:.0f} MB per example "
                    f"({step.phase_at(est.micro_batch)} peaks) -> {est.total / GB:.1f} GB")
        if "evaluate" in args.rules:
            decode = config["eval"]["decode"]
            batch_size = config["eval"]["batch_size"]
            torch.manual_seed(0)
            _, student, _ = build_objective(task, config, teacher, num_classes, 1.0, 2.0, 1.0)
            for rule, who, model in ((eval_rules[0], "teacher", teacher), (eval_rules[1], "student", student)):
                if spec.captioning:
                    from optima.models.decoding import generate_captions

                    def run(batch, model=model):
                        generate_captions(model, batch["image"], sot_id=tokenizer.sot_id, eot_id=tokenizer.eot_id,
                                          pad_id=tokenizer.pad_id, max_length=decode["max_length"],
                                          method=decode["method"], beam_size=decode["beam_size"],
                                          length_penalty=decode["length_penalty"], min_length=decode["min_length"])
                else:
                    def run(batch, model=model):
                        model(batch)["logits"].float().argmax(-1)
                forward = memory.evaluation_above_state(model, run, make_batch, sizes=sizes)
                caches = 0
                if spec.captioning:  # decoding's key/value caches, counted (the measured line misses them)
                    from optima.models.decoding import unwrap_coca

                    coca_of = unwrap_coca(model)
                    with torch.no_grad():
                        image_tokens = coca_of._encode_image(make_batch(1)["image"])[1].shape[1]
                    caches = memory.beam_cache_bytes(coca_of, image_tokens,
                                                     decode["beam_size"] if decode["method"] == "beam" else 1,
                                                     decode["max_length"])
                est = memory.inference_estimate(
                    rule, task, who, params=sum(p.numel() for p in model.parameters()), batch=batch_size,
                    forward=forward, caches_per_example=caches, notes=f"batch {batch_size}"
                    + (f", {decode['method']} search (beam {decode['beam_size']}, {decode['max_length']} tokens)"
                       if spec.captioning else ""))
                estimates.append(est)
                log(f"{rule} {task}: {est.total / GB:.1f} GB")
            del student
        coca.requires_grad_(True)

    print(f"\ncard: {card_name}, {card / GB:.1f} GB; a job needs its allocated peak + "
          f"{memory.FRAGMENTATION:.0%} fragmentation + {memory.CONTEXT_BYTES / GB:.1f} GB CUDA context; GB = 1e9 bytes\n")
    print("| rule | task | method | GPUs | micro-batch x steps | weights | AdamW + grads | step (activations, "
          "transients) | peak phase | allocated | needs | fits |")
    print("|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---|")
    rows = []
    for est in estimates:
        items = est.items
        fits = est.total <= card
        row = {"rule": est.rule, "task": est.task, "method": est.method, "gpus": est.gpus,
               "micro_batch": est.micro_batch, "accumulation_steps": est.accumulation,
               "weights_gb": items.get("weights", 0) / GB,
               "optimizer_gb": (items.get("adamw moments", 0) + items.get("gradients", 0)
                                + items.get("ddp buckets", 0)) / GB,
               "step_gb": (items.get("step", 0) or items.get("forward", 0) + items.get("key/value caches", 0)) / GB,
               "probe_gb": items.get("probe chunk", 0) / GB, "peak_phase": est.peak_phase,
               "allocated_gb": est.allocated / GB, "needs_gb": est.total / GB, "card": card_name,
               "card_gb": card / GB, "fits": fits, "notes": est.notes}
        rows.append(row)
        print(f"| {est.rule} | {est.task} | {est.method} | {est.gpus} | {est.micro_batch} x {est.accumulation} | "
              f"{row['weights_gb']:.2f} | {row['optimizer_gb']:.2f} | {row['step_gb']:.2f} | {est.peak_phase} | "
              f"{row['allocated_gb']:.1f} | {row['needs_gb']:.1f} | {'yes' if fits else '**NO**'} |")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    worst = max(rows, key=lambda r: r["needs_gb"])
    bad = [r for r in rows if not r["fits"]]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} GPU jobs fit the {card_name} ({card / GB:.1f} GB); the largest: "
          f"{worst['rule']} {worst['task']} {worst['method']} needs {worst['needs_gb']:.1f} GB")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
