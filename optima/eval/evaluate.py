"""Evaluate a task model on one split of a prepared data set with the official metrics.

Predictions are produced in the official result formats (COCO caption results, the VQA results list,
NLVR2 identifier -> label, SNLI-VE pair id -> label) and scored by the functions in ``optima.eval``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from optima.runtime import to_device


def _loader(dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate)


@torch.no_grad()
def predict_labels(task_model, dataset, batch_size: int, device, autocast) -> tuple[list, torch.Tensor]:
    """(ids, predicted class indices) for a classification task, in dataset order."""
    from optima.tasks import get_task

    id_key = get_task(task_model.task).prediction_id
    ids, predictions = [], []
    for batch in tqdm(_loader(dataset, batch_size), desc=f"eval {task_model.task}", mininterval=2.0, leave=False):
        with autocast():
            logits = task_model(to_device(batch, device))["logits"]
        predictions.append(logits.float().argmax(dim=-1).cpu())
        values = batch[id_key]
        ids.extend(values.tolist() if isinstance(values, torch.Tensor) else list(values))
    return ids, torch.cat(predictions)


@torch.no_grad()
def predict_captions(task_model, dataset, tokenizer, batch_size: int, device, decode: dict, autocast) -> dict:
    """image_id -> generated caption."""
    from optima.models.decoding import decode_texts, generate_captions

    predictions = {}
    for batch in tqdm(_loader(dataset, batch_size), desc="eval captions (decoding)", mininterval=2.0, leave=False):
        with autocast():
            tokens = generate_captions(task_model, batch["image"].to(device), sot_id=tokenizer.sot_id,
                                       eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id,
                                       max_length=decode["max_length"], method=decode["method"],
                                       beam_size=decode["beam_size"], length_penalty=decode["length_penalty"],
                                       min_length=decode["min_length"])
        texts = decode_texts(tokens.cpu(), tokenizer, sot_id=tokenizer.sot_id, eot_id=tokenizer.eot_id,
                             pad_id=tokenizer.pad_id)
        for image_id, text in zip(batch["image_id"].tolist(), texts):
            predictions[image_id] = text
    return predictions


def evaluate(task_model, dataset, tokenizer, eval_cfg: dict, device, autocast,
             during_training: bool = False) -> dict[str, float]:
    """The task's official metrics (flat name -> value) of ``task_model`` on ``dataset``.

    ``during_training``: the validation at the end of a training verb, which leaves METEOR out unless
    ``eval.meteor_during_training`` is set (METEOR's JVM costs ~15 s of CPU per call); ``eval.meteor:
    false`` leaves it out everywhere (the default scale's time budget).
    """
    from optima.tasks import get_task

    task = get_task(task_model.task)
    was_training = task_model.training
    task_model.eval()
    try:
        batch_size = eval_cfg["batch_size"]
        if task.captioning:
            predictions = predict_captions(task_model, dataset, tokenizer, batch_size, device, eval_cfg["decode"],
                                           autocast)
            meteor = eval_cfg["meteor"] and (not during_training or eval_cfg["meteor_during_training"])
            return task.score_captions(dataset, predictions, eval_cfg, meteor)
        ids, labels = predict_labels(task_model, dataset, batch_size, device, autocast)
        return task.score(dataset, ids, labels, eval_cfg)
    finally:
        task_model.train(was_training)


def validation_set(task: str, data_dir, tokenizer, config: dict):
    """The task's validation split, as the training verbs score it at their end."""
    from optima.tasks import build_dataset

    data_cfg = config["data"]
    return build_dataset(task, data_dir, "val", tokenizer, data_cfg["image_size"], train=False,
                         cache_images=data_cfg["cache_images"])


def make_validator(task_model, task: str, data_dir, tokenizer, config: dict, runtime, val_set=None):
    """The validation-split evaluation a training verb runs at its end (and every ``eval_every``
    steps); None on ranks other than 0, which never evaluate. ``val_set``: one already loaded."""
    if not runtime.is_main:
        return None
    if val_set is None:
        val_set = validation_set(task, data_dir, tokenizer, config)

    def validate() -> dict:
        return evaluate(task_model, val_set, tokenizer, config["eval"], runtime.device, runtime.autocast,
                        during_training=True)

    return validate
