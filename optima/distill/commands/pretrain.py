"""`optima pretrain`: the teacher's starting point.

Default scale (``pretrain.mode: train``): train the tiny CoCa on the captions data with CoCa's own
objective, ``contrastive_weight x contrastive + caption_weight x captioning`` (open_clip's CoCaLoss).
Paper scale (``pretrain.mode: load``): load open_clip's pretrained weights (``model.pretrained``) instead.
"""

from __future__ import annotations

from optima.distill.commands.common import add_common_arguments


def add_arguments(parser) -> None:
    add_common_arguments(parser, data_help="prepared captions data (images + COCO captions + tokenizer.json)")


def build_objective(coca, section: dict, runtime):
    import torch
    from open_clip.loss import CoCaLoss

    class CoCaPretrainObjective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = coca
            self.criterion = CoCaLoss(caption_loss_weight=section.get("caption_weight", 2.0),
                                      clip_loss_weight=section.get("contrastive_weight", 1.0), pad_id=0,
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
    from optima.data.datasets import build_dataset
    from optima.data.tokenizers import load_tokenizer
    from optima.distill.commands.common import finish_run, setup
    from optima.distill.loop import TrainSpec, fit
    from optima.distill.runtime import seed_everything, shutdown
    from optima.distill.trainlog import TrainLog
    from optima.models import create_coca, save_model

    config, runtime = setup(args)
    section, model_cfg = config["pretrain"], config["model"]
    seed = config["seed"]
    seed_everything(seed)
    tokenizer = load_tokenizer(args.data)
    coca, model_config = create_coca(model_cfg["teacher"], vocab_size=tokenizer.vocab_size,
                                     context_length=tokenizer.context_length,
                                     pretrained=model_cfg.get("pretrained"), return_config=True)
    run_info = {"task": None, "method": "pretrain", "seed": seed, "role": "pretrain"}
    if section.get("mode", "train") == "load" or section["steps"] == 0:
        log = TrainLog()
    else:
        dataset = build_dataset("captions", args.data, "train", tokenizer, config["data"]["image_size"],
                                train=True, cache_images=config["data"].get("cache_images", True))
        objective = build_objective(coca, section, runtime)
        fingerprint = {"verb": "pretrain", "pretrain": section, "model": model_cfg, "seed": seed,
                       "data": config_hash(config["data"]), "world_size": runtime.world_size}
        log = fit(objective, dataset, TrainSpec.from_config(section), runtime, args.out, seed, fingerprint,
                  num_workers=config["runtime"].get("num_workers", 0), desc="pretrain")
    finish_run(args.out, runtime, lambda d: save_model(coca.cpu(), d, model_config), log, config, run_info,
               metrics=None)
    shutdown(runtime)
    return 0
