"""Task models: one CoCa plus one task head, a single ``forward(batch) -> dict`` and ``loss(outputs, batch) -> dict``.

- ``captions``: CoCa's own caption head (the multimodal decoder's vocabulary projection), teacher
  forcing, cross-entropy over the real target tokens (padding ``pad_id`` ignored). Optionally CoCa's
  contrastive term too (``contrastive_weight``, 0 by default: the CoCa recipe fine-tunes captioning with
  the captioning loss only; pre-training uses 1.0 contrastive + 2.0 captioning).
- ``vqa``, ``snli_ve``, ``nlvr2`` (CoCa paper, appendix): image -> image encoder, text -> both text
  decoders with the full text (no token dropped), a 1-query attentional pooler over the multimodal
  decoder's output (padding masked), a linear classifier.
  ``vqa``: binary cross-entropy with the soft VQA targets ``answer_scores`` (min(#annotators / 3, 1)),
  summed over answers and averaged over questions (the usual VQA recipe, Teney et al. 2018; equals the
  per-element mean times the number of answers). ``snli_ve``: cross-entropy over 3 classes.
  ``nlvr2``: each (image, sentence) pair runs through the model separately; the two pooled vectors are
  concatenated, cross-entropy over 2 classes.

Batches (from ``optima.data``): ``image`` FloatTensor[B, 3, H, W] (nlvr2: ``images`` [B, 2, 3, H, W]),
``text`` LongTensor[B, L] (start token first, right-padded with 0), ``label`` LongTensor[B],
``answer_scores`` FloatTensor[B, num_answers] (vqa).

``forward(batch, tap_layers={"vision": [1, 3], ...})`` also returns ``features`` (hidden states keyed
``"<module>.<layer>"``) and ``feature_masks`` (per module, True at real tokens) captured in the same pass
(see ``optima.models.taps``), so a DDP-wrapped task model can be tapped through its ``forward``.
The task model's state dict is ``coca.*`` + ``head.*``.
"""

from __future__ import annotations

import copy
import os
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from open_clip.transformer import AttentionalPooler
from torch import nn
from torch.utils.checkpoint import checkpoint

from optima.errors import CheckpointError, ConfigError, DataError
from optima.models.checkpoint import WEIGHTS_FILE, read_record, write_checkpoint
from optima.models.factory import check_state_fits, coca_from_config, model_config, read_state_dict
from optima.models.modules import unwrap_model
from optima.runtime import at_least_float32


def decoder_hidden_states(decoder: nn.Module, image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
    """The multimodal decoder's output before the vocabulary projection, (B, T, width).

    Mirrors open_clip 3.3's ``MultimodalTransformer.forward`` (gradient checkpointing included) minus the
    final ``@ text_projection``, which would cost a (T x vocabulary) product the classifiers never use
    (tests pin the equality ``decoder(...) == decoder_hidden_states(...) @ text_projection``).
    """
    seq_len = text_embs.shape[1]
    if not decoder.batch_first:
        image_embs, text_embs = image_embs.permute(1, 0, 2), text_embs.permute(1, 0, 2)
    attn_mask = decoder.attn_mask[:seq_len, :seq_len]
    for resblock, cross_attn in zip(decoder.resblocks, decoder.cross_attn):
        if decoder.grad_checkpointing and not torch.jit.is_scripting():
            text_embs = checkpoint(resblock, text_embs, None, None, attn_mask, use_reentrant=False)
            text_embs = checkpoint(cross_attn, text_embs, image_embs, image_embs, None, use_reentrant=False)
        else:
            text_embs = resblock(text_embs, attn_mask=attn_mask)
            text_embs = cross_attn(text_embs, k_x=image_embs, v_x=image_embs)
    if not decoder.batch_first:
        text_embs = text_embs.permute(1, 0, 2)
    return decoder.ln_final(text_embs)


class MaskedAttentionalPooler(AttentionalPooler):
    """open_clip's attentional pooler with a key padding mask (True = ignore that position)."""

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn(q, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]


class ClassificationHead(nn.Module):
    """1-query attentional pooler on the multimodal decoder output, then a linear classifier over
    ``pairs`` concatenated pooled vectors."""

    def __init__(self, width: int, heads: int, num_classes: int, pairs: int = 1):
        super().__init__()
        self.pairs = pairs
        self.pooler = MaskedAttentionalPooler(width, width, n_head=heads, n_queries=1)
        self.classifier = nn.Linear(width * pairs, num_classes)

    def pool(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        pooled = self.pooler(hidden, key_padding_mask=padding)[:, 0]          # (N, width)
        return pooled.reshape(pooled.shape[0] // self.pairs, -1)              # (N / pairs, pairs * width)


def _require(batch: Mapping, key: str, task: str) -> torch.Tensor:
    if key not in batch:
        raise DataError(f"{task} batch lacks {key!r} (has: {', '.join(map(str, batch))})")
    return batch[key]


class TaskModel(nn.Module):
    """Base class: ``coca`` (a plain open_clip CoCa) + ``head``; subclasses implement one task."""

    task: str = ""

    def __init__(self, coca: nn.Module, head: nn.Module, num_classes: int | None, options: dict | None = None):
        super().__init__()
        self.coca = unwrap_model(coca)
        self.head = head
        self.num_classes = num_classes
        self.options = dict(options or {})

    @property
    def pad_id(self) -> int:
        return int(self.coca.pad_id)

    @property
    def config(self) -> dict:
        """What ``create_task_model`` needs to rebuild this task model around a CoCa."""
        return {"task": self.task, "num_classes": self.num_classes, "options": copy.deepcopy(self.options)}

    def inputs(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, texts) as the towers see them."""
        return _require(batch, "image", self.task), _require(batch, "text", self.task)

    def run_towers(self, batch: Mapping, vision: bool = True, text: bool = True) -> dict:
        """Only the image encoder and/or the unimodal text decoder (e.g. for the teacher's feature taps when
        neither logits nor multimodal features are needed)."""
        images, texts = self.inputs(batch)
        out = {}
        if vision:
            out["image_latent"], out["image_embs"] = self.coca.visual(images)
        if text:
            out["text_latent"], out["token_embs"] = self.coca.text(texts)
        return out

    def forward(self, batch: Mapping, tap_layers: Mapping[str, Iterable[int]] | None = None) -> dict:
        if not tap_layers:
            return self._forward(batch)
        from optima.models.taps import FeatureTaps

        with FeatureTaps(self.coca, tap_layers) as taps:
            outputs = self._forward(batch)
            outputs["features"] = dict(taps.features)
            outputs["feature_masks"] = taps.masks
        return outputs

    def _forward(self, batch: Mapping) -> dict:
        raise NotImplementedError

    def loss(self, outputs: Mapping, batch: Mapping) -> dict:
        raise NotImplementedError

    def loss_count(self, outputs: Mapping, batch: Mapping) -> int:
        """How many items ``loss`` averages over (to combine a loss computed in chunks exactly)."""
        raise NotImplementedError

    def item_counts(self, batch: Mapping) -> dict[str, int]:
        """What each loss term of ``batch`` averages over, from the batch alone (before any forward), so that
        gradient accumulation can weight micro-batches before their backward (``optima.distill.loop``):
        ``task`` (= ``loss_count``), ``kd`` (prediction KD: the same items as the task loss) and per CoCa module
        the positions its layer MSE averages over (``optima.models.taps`` masks: vision every token; text the
        real tokens and the appended CLS; multimodal the real tokens the decoder consumes).
        ``tests/test_loop.py`` pins these to the counts ``DistillationObjective.compute(counts=)`` reports."""
        raise NotImplementedError

    def _tower_counts(self, images: torch.Tensor, texts: torch.Tensor, decoder_tokens: int) -> dict[str, int]:
        visual = self.coca.visual
        patch = visual.conv1.kernel_size
        tokens = (images.shape[-2] // patch[0]) * (images.shape[-1] // patch[1])
        tokens += int(getattr(visual, "class_embedding", None) is not None)
        real = texts != self.pad_id
        return {"vision": int(images.shape[0]) * tokens,
                "text": int(real.sum()) + int(texts.shape[0]) * int(getattr(self.coca.text, "cls_emb", None) is not None),
                "multimodal": int(real[:, :decoder_tokens].sum())}


class CaptioningModel(TaskModel):
    task = "captions"

    def __init__(self, coca: nn.Module, caption_weight: float = 1.0, contrastive_weight: float = 0.0):
        super().__init__(coca, nn.Identity(), None,
                         {"caption_weight": float(caption_weight), "contrastive_weight": float(contrastive_weight)})

    def _forward(self, batch: Mapping) -> dict:
        images, texts = self.inputs(batch)
        out = self.coca(images, texts)
        return {"logits": out["logits"], "labels": out["labels"], "logits_mask": out["labels"] != self.pad_id,
                "image_features": out["image_features"], "text_features": out["text_features"],
                "logit_scale": out["logit_scale"]}

    def loss(self, outputs: Mapping, batch: Mapping) -> dict:
        caption = F.cross_entropy(at_least_float32(outputs["logits"]).transpose(1, 2), outputs["labels"],
                                  ignore_index=self.pad_id)
        losses = {"caption_loss": caption}
        total = self.options["caption_weight"] * caption
        if self.options["contrastive_weight"] > 0:
            from open_clip import ClipLoss

            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            clip_loss = ClipLoss(gather_with_grad=distributed,
                                 rank=torch.distributed.get_rank() if distributed else 0,
                                 world_size=torch.distributed.get_world_size() if distributed else 1)
            contrastive = clip_loss(at_least_float32(outputs["image_features"]), at_least_float32(outputs["text_features"]),
                                    at_least_float32(outputs["logit_scale"]))
            losses["contrastive_loss"] = contrastive
            total = total + self.options["contrastive_weight"] * contrastive
        losses["loss"] = total
        return losses

    def loss_count(self, outputs: Mapping, batch: Mapping) -> int:
        """How many items the task loss averages over: the real (non-padding) target tokens. Lets a loss
        computed in chunks be combined exactly (the probe); the contrastive term compares every pair in
        the batch, so a loss with it cannot be split."""
        if self.options["contrastive_weight"] > 0:
            raise ConfigError("distill.probe_chunk: a captioning loss with a contrastive term compares every "
                              "pair in the batch and cannot be computed in chunks; set distill.probe_chunk: null")
        return int((outputs["labels"] != self.pad_id).sum())

    def item_counts(self, batch: Mapping) -> dict[str, int]:
        """Teacher forcing: the decoder consumes tokens 0..L-2 and predicts 1..L-1 (open_clip's labels)."""
        if self.options["contrastive_weight"] > 0:
            raise ConfigError("accumulation_steps: a captioning loss with a contrastive term compares every pair in "
                              "the batch and cannot be split into micro-batches; set accumulation_steps: 1")
        images, texts = self.inputs(batch)
        tokens = int((texts[:, 1:] != self.pad_id).sum())
        return {"task": tokens, "kd": tokens, **self._tower_counts(images, texts, texts.shape[1] - 1)}


class ClassificationModel(TaskModel):
    """VQA, SNLI-VE and NLVR2 (``pairs=2``: two images per sentence)."""

    def __init__(self, task: str, coca: nn.Module, num_classes: int, pairs: int = 1, soft_targets: bool = False):
        """``pairs``: images per example, each (image, text) pair pooled apart and concatenated (NLVR2: 2);
        ``soft_targets``: binary cross-entropy on ``answer_scores`` (VQA) instead of cross-entropy on ``label``."""
        coca = unwrap_model(coca)
        heads = coca.text_decoder.cross_attn[0].attn.num_heads
        super().__init__(coca, ClassificationHead(coca.text_decoder.width, heads, num_classes, pairs), num_classes)
        self.task, self.pairs, self.soft_targets = task, pairs, soft_targets

    def inputs(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _require(batch, "text", self.task)
        if self.pairs == 1:
            return _require(batch, "image", self.task), texts
        images = _require(batch, "images", self.task)
        if images.dim() != 5 or images.shape[1] != self.pairs:
            raise DataError(f"{self.task} batch: 'images' must be [B, {self.pairs}, 3, H, W], got {list(images.shape)}")
        # pair order: (example 0, image 0), (example 0, image 1), (example 1, image 0), ...
        return images.flatten(0, 1), texts.repeat_interleave(self.pairs, dim=0)

    def _forward(self, batch: Mapping) -> dict:
        images, texts = self.inputs(batch)
        _, image_embs = self.coca.visual(images)
        _, token_embs = self.coca.text(texts)
        hidden = decoder_hidden_states(self.coca.text_decoder, image_embs, token_embs)
        pooled = self.head.pool(hidden, texts == self.pad_id)
        return {"logits": self.head.classifier(pooled), "pooled": pooled}

    def loss(self, outputs: Mapping, batch: Mapping) -> dict:
        logits = at_least_float32(outputs["logits"])
        if self.soft_targets:
            scores = _require(batch, "answer_scores", self.task).to(logits.dtype)
            if scores.shape != logits.shape:
                raise DataError(f"{self.task} batch: 'answer_scores' has shape {list(scores.shape)}, the model predicts "
                                f"{list(logits.shape)} ({self.num_classes} answers)")
            bce = F.binary_cross_entropy_with_logits(logits, scores, reduction="sum") / logits.shape[0]
            return {"loss": bce, "bce_loss": bce}
        labels = _require(batch, "label", self.task).long()
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise DataError(f"{self.task} batch: label {int(bad[0])} outside 0..{self.num_classes - 1}")
        ce = F.cross_entropy(logits, labels)
        return {"loss": ce, "ce_loss": ce}

    def loss_count(self, outputs: Mapping, batch: Mapping) -> int:
        """How many items the task loss averages over: the examples (VQA's BCE is summed over answers and
        averaged over questions; cross-entropy is averaged over examples)."""
        return int(outputs["logits"].shape[0])

    def item_counts(self, batch: Mapping) -> dict[str, int]:
        """Examples for the task loss and KD; NLVR2's two (image, sentence) pairs per example for the towers."""
        images, texts = self.inputs(batch)
        examples = int(_require(batch, "text", self.task).shape[0])
        return {"task": examples, "kd": examples, **self._tower_counts(images, texts, texts.shape[1])}


def save_task_model(task_model: TaskModel, run_dir: str | os.PathLike) -> None:
    """``model.safetensors`` (``coca.*`` + ``head.*``) and ``model_config.json`` (CoCa config + task)."""
    task_model = getattr(task_model, "module", task_model)
    recorded = model_config(task_model.coca)
    write_checkpoint(run_dir, task_model.state_dict(), {**recorded, "task": task_model.config})


def load_task_model_with(run_dir: str | os.PathLike, create_task_model) -> TaskModel:
    """The task model saved in ``run_dir``, built by ``create_task_model(task, coca, num_classes, **options)``
    (``optima.tasks.create_task_model``: the task registry decides the head) and loaded strictly."""
    from pathlib import Path

    record = read_record(run_dir)
    task = record.get("task")
    if not isinstance(task, dict) or "task" not in task:
        raise CheckpointError(f"{Path(run_dir) / 'model_config.json'}: holds a plain CoCa, not a task model "
                              "(load it with optima.models.load_model)")
    try:
        coca = coca_from_config(record["model_cfg"], record.get("name", "custom"))
        model = create_task_model(task["task"], coca, task.get("num_classes"), **task.get("options", {}))
    except ConfigError as exc:
        raise CheckpointError(f"{Path(run_dir) / 'model_config.json'}: {exc}") from None
    weights = Path(run_dir) / WEIGHTS_FILE
    state = read_state_dict(weights)
    check_state_fits(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    return model
