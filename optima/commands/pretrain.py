"""`optima pretrain`: the teacher's starting point.

``pretrain.mode: train`` (config/smoke.yaml): pre-train the tiny CoCa from scratch on the captions data with
CoCa's own objective, ``contrastive_weight x contrastive + caption_weight x captioning`` (open_clip's CoCaLoss);
``model.pretrained`` is not read. ``pretrain.mode: load``: load ``model.pretrained`` instead: open_clip's
pretrained weights (paper scale) or a committed pre-trained run directory (params.yaml, config/claims.yaml).
"""

from __future__ import annotations

from optima.args import add_run_arguments


def add_arguments(parser) -> None:
    add_run_arguments(parser, data_help="prepared captions data (images + COCO captions + tokenizer.json)")


def build_objective(coca, section: dict, runtime):
    import torch
    from open_clip.loss import CoCaLoss

    class CoCaPretrainObjective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = coca
            self.criterion = CoCaLoss(caption_loss_weight=section["caption_weight"],
                                      clip_loss_weight=section["contrastive_weight"], pad_id=0,
                                      rank=runtime.rank, world_size=runtime.world_size)

        def forward(self, batch):
            out = self.model(batch["image"], batch["text"])
            terms = self.criterion(out["image_features"], out["text_features"], out["logits"], out["labels"],
                                   out["logit_scale"], output_dict=True)
            total = terms["contrastive_loss"] + terms["caption_loss"]
            return {"loss": total, **terms}

    return CoCaPretrainObjective()


def run(args) -> int:
    from optima.config import config_hash
    from optima.tasks import build_dataset
    from optima.data.tokenizers import load_tokenizer
    from optima.args import setup
    from optima.runs import claim_run_dir, finish_run
    from optima.distill.loop import TrainSpec, fit
    from optima.runtime import seed_everything, shutdown
    from optima.distill.trainlog import TrainLog
    from optima.models import create_coca, save_model

    config, runtime = setup(args)
    section, model_cfg = config["pretrain"], config["model"]
    seed = config["seed"]
    run_info = {"task": None, "method": "pretrain", "seed": seed, "role": "pretrain"}
    fingerprint = {"verb": "pretrain", "pretrain": section, "model": model_cfg, "seed": seed,
                   "data": config_hash(config["data"]), "world_size": runtime.world_size}
    # the run directory: checked, locked while this runs, cleared under --force
    with claim_run_dir(args.out, runtime, run_info, fingerprint, args.force):
        seed_everything(seed)
        tokenizer = load_tokenizer(args.data)
        pretrained = model_cfg["pretrained"] if section["mode"] == "load" else None  # train: from scratch, one key away
        if model_cfg["pretrained"] and pretrained is None:
            print(f"optima pretrain: pretrain.mode: train pre-trains from scratch; model.pretrained "
                  f"({model_cfg['pretrained']}) is not loaded", flush=True)
        coca, model_config = create_coca(model_cfg["teacher"], vocab_size=tokenizer.vocab_size,
                                         context_length=tokenizer.context_length,
                                         pretrained=pretrained, return_config=True)
        if section["mode"] == "load" or section["steps"] == 0:
            log = TrainLog()
        else:
            dataset = build_dataset("captions", args.data, "train", tokenizer, config["data"]["image_size"],
                                    train=True, cache_images=config["data"]["cache_images"])
            if section["grad_checkpointing"]:  # block activations recomputed in backward
                coca.set_grad_checkpointing(True)
            objective = build_objective(coca, section, runtime)
            log = fit(objective, dataset, TrainSpec.from_config(section), runtime, args.out, seed, fingerprint,
                      num_workers=config["runtime"]["num_workers"], desc="pretrain")
        finish_run(args.out, runtime, lambda d: save_model(coca.cpu(), d, model_config), log, config,
                   {**run_info, "fingerprint": fingerprint}, metrics=None)
    shutdown(runtime)
    return 0
