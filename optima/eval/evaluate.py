"""Evaluate a task model on one split of a prepared data set with the official metrics.

Predictions are produced in the official result formats (COCO caption results, the VQA results list,
NLVR2 identifier -> label, SNLI-VE pair id -> label) and scored by the functions in ``optima.eval``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from optima.errors import TrainingError
from optima.runtime import to_device


def _loader(dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate)


def nonfinite_parameter(model) -> str | None:
    """The name of the first parameter of ``model`` holding a NaN or an infinity (None: all finite). Buffers are
    not weights (an attention mask holds -inf by design)."""
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return name
    return None


def _check_logits(logits: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise TrainingError(f"the model's {what} are not finite ({bad} of {logits.numel()} values NaN or infinite): "
                            "its weights diverged; it cannot be scored")


@torch.no_grad()
def check_finite_model(task_model, dataset, tokenizer, device, autocast, batch_size: int = 8) -> None:
    """TrainingError unless ``task_model``'s weights are finite and its logits on the first batch of ``dataset``
    are (a diverged model would otherwise get plausible metrics: argmax of NaN logits is class 0)."""
    from optima.tasks import get_task

    name = nonfinite_parameter(task_model)
    if name is not None:
        raise TrainingError(f"the model's weight {name!r} is not finite (NaN or infinite): its training diverged; "
                            "it cannot be scored")
    if len(dataset) == 0:
        return
    was_training = task_model.training
    task_model.eval()
    try:
        batch = to_device(next(iter(_loader(dataset, min(batch_size, len(dataset))))), device)
        with autocast():
            if get_task(task_model.task).captioning:  # the next-token logits after the start token
                images = batch["image"]
                prefix = torch.full((images.shape[0], 1), tokenizer.sot_id, dtype=torch.long, device=images.device)
                logits = task_model.coca(images, prefix, output_labels=False)["logits"]
            else:
                logits = task_model(batch)["logits"]
        _check_logits(logits.float(), "logits")
    finally:
        task_model.train(was_training)


@torch.no_grad()
def predict_labels(task_model, dataset, batch_size: int, device, autocast) -> tuple[list, torch.Tensor]:
    """(ids, predicted class indices) for a classification task, in dataset order."""
    from optima.tasks import get_task

    id_key = get_task(task_model.task).prediction_id
    ids, predictions = [], []
    for batch in tqdm(_loader(dataset, batch_size), desc=f"eval {task_model.task}", mininterval=2.0, leave=False):
        with autocast():
            logits = task_model(to_device(batch, device))["logits"]
        _check_logits(logits.float(), "logits")
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
    check_finite_model(task_model, dataset, tokenizer, device, autocast)  # a diverged model gets no metrics
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


def check_images(dataset) -> None:
    """Decode every image ``dataset`` shows once (kept when it caches images): a corrupt one fails now, naming its
    file (DataError), not when the split is first scored (after training, for the validation split)."""
    loader = getattr(dataset, "load_image", None)
    if loader is None or not hasattr(dataset, "image_keys"):
        return
    seen = set()
    for index in range(len(dataset)):
        for path in dataset.image_keys(index):
            if path not in seen:
                seen.add(path)
                loader.pixels(path)


def validation_set(task: str, data_dir, tokenizer, config: dict):
    """The task's validation split, as the training verbs score it at their end; every image decoded once
    before any training (``check_images``)."""
    from optima.tasks import build_dataset

    data_cfg = config["data"]
    dataset = build_dataset(task, data_dir, "val", tokenizer, data_cfg["image_size"], train=False,
                            cache_images=data_cfg["cache_images"])
    check_images(dataset)
    return dataset


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
