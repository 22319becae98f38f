"""GPU memory of one distillation job, estimated on the CPU (README, "Memory on one GPU").

    python scripts/memory_estimate.py                        # config/paper.yaml: CoCa ViT-L/14 + half-depth student
    python scripts/memory_estimate.py --task vqa --set distill.grad_checkpointing=true

Builds the config's teacher (random weights: sizes do not depend on them) and its student, counts their
parameters, and measures the **activations saved for backward** by one layerwise training step (every
module's layer MSE + KD + task loss, under bf16 autocast as on a GPU) with saved-tensor hooks at batch 1
and 2; the per-example slope times ``distill.batch_size`` (plus the batch-independent intercept, the bf16
weight copies autocast keeps) is the estimate. Also the teacher's per-example outputs (what the probe
stores) from one forward. Prints a table in GB (1e9 bytes). Parameters, gradients and AdamW's two
moments are float32 (16 bytes per trained parameter). Not counted: CUDA context (~0.5 GB), allocator
fragmentation, the transient of the loss kernels (log-softmax over 49,408 tokens: a few float32 copies of
the logits while the loss is computed).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def saved_bytes(fn, parameters) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn()`` runs (parameters excluded)."""
    skip = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def main(argv=None) -> int:
    from optima.config import MODULES, load_config
    from optima.distill.bench_step import RandomTaskData, _inputs
    from optima.distill.setup import build_objective
    from optima.distill.sampling import fixed_batch
    from optima.models import create_coca
    from optima.tasks import create_task_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/paper.yaml")
    parser.add_argument("--task", default="captions")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    section, batch_size = config["distill"], config["distill"]["batch_size"]
    probe_size, chunk = section["probe_size"], section["probe_chunk"] or section["probe_size"]
    dataset, vocab, context, num_classes = _inputs(args.task, config, None, 4, 0)
    assert isinstance(dataset, RandomTaskData)

    torch.manual_seed(0)
    coca = create_coca(config["model"]["teacher"], vocab_size=vocab, context_length=context)
    teacher = create_task_model(args.task, coca, num_classes)
    objective, student, _ = build_objective(args.task, config, teacher, num_classes, 1.0, 2.0, 1.0)
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_student = sum(p.numel() for p in objective.parameters())
    params = list(objective.parameters())

    def step_bytes(n: int) -> int:
        batch = fixed_batch(dataset, range(n))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return saved_bytes(lambda: objective.compute(batch, tuple(MODULES)), params)

    one, two = step_bytes(1), step_bytes(2)
    per_example, fixed = two - one, 2 * one - two
    with torch.no_grad():
        out = objective.teacher_outputs(fixed_batch(dataset, [0]), tuple(MODULES), need_logits=True)
    counts = {"logits": out["logits"].numel(), "features": sum(v.numel() for v in out["features"].values())}
    floats = counts["logits"] + counts["features"]

    gb = 1e9
    rows = [
        ("teacher parameters", f"{n_teacher / 1e6:.0f} M", n_teacher * 4 / gb, "float32, frozen (autocast runs bf16 matmuls)"),
        ("student parameters", f"{n_student / 1e6:.0f} M", n_student * 4 / gb, "float32 master weights"),
        ("student gradients", "", n_student * 4 / gb, "float32"),
        ("AdamW moments", "", n_student * 8 / gb, "2 x float32"),
        ("activations for backward", f"batch {batch_size}", (fixed + per_example * batch_size) / gb,
         f"{per_example / 1e6:.1f} MB per example + {fixed / gb:.2f} GB bf16 weight copies"
         + (", grad checkpointing" if section["grad_checkpointing"] else "")),
        ("teacher outputs of the batch", f"batch {batch_size}", floats * 2 * batch_size / gb,
         f"bf16; {counts['features'] / 1e6:.2f} M feature + {counts['logits'] / 1e6:.2f} M logit values per example"),
        ("probe teacher outputs, before", f"{probe_size} x fp32", floats * 4 * probe_size / gb, "all on the GPU"),
        ("probe teacher outputs, after", f"{chunk} x {section['probe_dtype']}",
         floats * torch.finfo(getattr(torch, section["probe_dtype"])).bits / 8
         * (chunk if section["probe_storage"] != "device" else probe_size) / gb,
         f"on the GPU ({section['probe_storage']} storage; host holds "
         f"{floats * torch.finfo(getattr(torch, section['probe_dtype'])).bits / 8 * probe_size / gb:.2f} GB)"
         if section['probe_storage'] == "cpu" else f"on the GPU ({section['probe_storage']})"),
    ]
    print(f"memory estimate: {args.config} {' '.join(args.overrides)}, task {args.task}, teacher "
          f"{config['model']['teacher']}, distill.batch_size {batch_size}, probe {probe_size} (chunk {chunk})")
    print("| item | size | GB | note |\n|---|---|---|---|")
    for name, size, value, note in rows:
        print(f"| {name} | {size} | {value:.2f} | {note} |")
    training = sum(r[2] for r in rows[:6])
    print(f"| training step total (before the probe) | | {training:.2f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
