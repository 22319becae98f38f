"""Evaluate a task model on one split of a prepared data set with the official metrics.

Predictions are produced in the official result formats (COCO caption results, the VQA results list,
NLVR2 identifier -> label, SNLI-VE pair id -> label) and scored by the functions in ``optima.eval``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from optima.distill.sampling import to_device


def _loader(dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate)


@torch.no_grad()
def predict_labels(task_model, dataset, batch_size: int, device, autocast) -> tuple[list, torch.Tensor]:
    """(ids, predicted class indices) for a classification task, in dataset order."""
    id_key = {"vqa": "question_id", "snli_ve": "pair_id", "nlvr2": "identifier"}[task_model.task]
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
    from optima.eval.decoding import decode_texts, generate_captions

    predictions = {}
    for batch in tqdm(_loader(dataset, batch_size), desc="eval captions (decoding)", mininterval=2.0, leave=False):
        with autocast():
            tokens = generate_captions(task_model, batch["image"].to(device), sot_id=tokenizer.sot_id,
                                       eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id,
                                       max_length=decode.get("max_length", 24), method=decode.get("method", "greedy"),
                                       beam_size=decode.get("beam_size", 3),
                                       length_penalty=decode.get("length_penalty", 1.0),
                                       min_length=decode.get("min_length", 0))
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
    from optima import eval as metrics

    task = task_model.task
    was_training = task_model.training
    task_model.eval()
    try:
        batch_size = eval_cfg.get("batch_size", 128)
        if task == "captions":
            predictions = predict_captions(task_model, dataset, tokenizer, batch_size, device,
                                           eval_cfg.get("decode", {}), autocast)
            meteor = eval_cfg.get("meteor", True) and (not during_training
                                                         or eval_cfg.get("meteor_during_training", False))
            return metrics.caption_scores(dataset.references(), predictions, spice=eval_cfg.get("spice", "auto"),
                                          meteor=meteor)
        ids, labels = predict_labels(task_model, dataset, batch_size, device, autocast)
        if task == "vqa":
            results = [{"question_id": qid, "answer": dataset.answers[int(k)]} for qid, k in zip(ids, labels)]
            return metrics.vqa_scores(dataset.annotations, dataset.questions, results,
                                      processing=eval_cfg.get("vqa_answer_processing", "official"))
        if task == "snli_ve":
            predictions = {pid: dataset.label_names[int(k)] for pid, k in zip(ids, labels)}
            return metrics.snli_ve_scores(dataset.examples, predictions)
        if task == "nlvr2":
            predictions = {ident: ("True" if int(k) == 1 else "False") for ident, k in zip(ids, labels)}
            return metrics.nlvr2_scores(dataset.examples, predictions)
        raise ValueError(f"unknown task {task!r}")
    finally:
        task_model.train(was_training)
