"""Caption decoding for open_clip's CoCa: batched greedy and beam search.

The image is encoded once per batch and reused at every step. By default the decoder keeps a
key/value cache for the self-attention of the text tower and of the multimodal decoder, and projects
the cross-attention keys/values of the image tokens once, so one step costs one token per layer
instead of a forward pass over the whole prefix. The cached step reproduces exactly what
``CoCa.forward(image, prefix, output_labels=False)["logits"][:, -1]`` computes, including the
text tower's padding mask (tokens equal to ``model.text.pad_id`` are masked as keys, with open_clip's
legacy or corrected CLS-mask offset), and falls back to that full forward for towers it does not
know (``use_cache=False`` forces the fallback).

Unlike ``CoCa.generate`` this needs no ``transformers``. Sequences that reach ``max_length``
without an end token are returned as they are (no end token is forced).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optima.errors import ConfigError
from optima.runtime import at_least_float32

METHODS = ("greedy", "beam")


# ----------------------------------------------------------------------------------------------
# Model access


def unwrap_coca(model: nn.Module) -> nn.Module:
    """The open_clip ``CoCa`` inside ``model`` (DDP ``.module``, ``torch.compile``, a task model's ``.coca``)."""
    from optima.models.modules import unwrap_model

    return unwrap_model(model)


def max_decoding_length(model: nn.Module) -> int:
    """Longest sequence (start token included) the model's position tables and masks allow."""
    coca = unwrap_coca(model)
    text_positions = coca.text.context_length  # the appended CLS token takes the extra position
    return min(text_positions, coca.text_decoder.context_length) + 1


def supports_kv_cache(model: nn.Module) -> bool:
    """Whether the cached step reproduces this CoCa exactly (plain causal open_clip blocks)."""
    from open_clip.transformer import ResidualAttentionBlock, TextTransformer

    coca = unwrap_coca(model)
    text, decoder = coca.text, coca.text_decoder
    if not isinstance(text, TextTransformer) or text.attn_mask is None or getattr(text, "use_pad_mask", False):
        return False  # an HF text tower or a bidirectional one: only the full forward is exact
    if not (text.transformer.batch_first and decoder.batch_first):
        return False
    blocks = [*text.transformer.resblocks, *decoder.resblocks, *decoder.cross_attn]
    return all(
        type(block) is ResidualAttentionBlock
        and isinstance(block.attn, nn.MultiheadAttention)
        and block.attn._qkv_same_embed_dim
        and block.attn.bias_k is None
        and not block.attn.add_zero_attn
        for block in blocks
    )


# ----------------------------------------------------------------------------------------------
# One decoding step: logits of the next token for every running sequence


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    rows, length, width = x.shape
    return x.view(rows, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    rows, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(rows, length, heads * head_dim)


def _attend(block: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    attn = block.attn
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    return F.linear(_merge_heads(out), attn.out_proj.weight, attn.out_proj.bias)


def _self_attention_step(block: nn.Module, x: torch.Tensor, cache: tuple | None, key_mask: torch.Tensor | None):
    """``ResidualAttentionBlock.forward`` for the newest position, attending to the cached keys."""
    attn = block.attn
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (_split_heads(t, attn.num_heads) for t in (q, k, v))
    if cache is not None:
        k = torch.cat([cache[0], k], dim=2)
        v = torch.cat([cache[1], v], dim=2)
    x = x + block.ls_1(_attend(block, q, k, v, key_mask))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, (k, v)


def _cross_attention_keys(block: nn.Module, image_embs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    attn = block.attn
    width = attn.embed_dim
    kv_input = block.ln_1_kv(image_embs)
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    k = F.linear(kv_input, weight[width : 2 * width], None if bias is None else bias[width : 2 * width])
    v = F.linear(kv_input, weight[2 * width :], None if bias is None else bias[2 * width :])
    return _split_heads(k, attn.num_heads), _split_heads(v, attn.num_heads)


def _cross_attention_step(block: nn.Module, x: torch.Tensor, keys: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    attn = block.attn
    width = attn.embed_dim
    bias = attn.in_proj_bias
    q = F.linear(block.ln_1(x), attn.in_proj_weight[:width], None if bias is None else bias[:width])
    x = x + block.ls_1(_attend(block, _split_heads(q, attn.num_heads), keys[0], keys[1], None))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x


class CachedStepper:
    """Next-token logits one position at a time, with key/value caches.

    ``step(tokens)`` appends one token to every running sequence and returns the logits that
    predict the following one; ``select(rows)`` keeps (and may repeat or reorder) running sequences,
    as beam search and the retirement of finished sequences need.
    """

    def __init__(self, coca: nn.Module, image_embs: torch.Tensor):
        self.text = coca.text
        self.decoder = coca.text_decoder
        self.dtype = self.text.transformer.get_cast_dtype()
        self.pad_id = self.text.pad_id
        # open_clip masks padding keys of the text tower only when a CLS token is appended (CoCa);
        # its legacy mask is shifted by one position (key j is valid iff token j-1 is not padding).
        self.pad_masking = self.text.cls_emb is not None
        self.shifted_mask = not getattr(self.text, "correct_cls_mask", False)
        self.cross_keys = [_cross_attention_keys(block, image_embs) for block in self.decoder.cross_attn]
        self.text_cache: list[tuple | None] = [None] * len(self.text.transformer.resblocks)
        self.decoder_cache: list[tuple | None] = [None] * len(self.decoder.resblocks)
        self.key_valid: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None
        self.position = 0

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        position = self.position
        x = self.text.token_embedding(tokens).to(self.dtype)[:, None]
        x = x + self.text.positional_embedding[position].to(self.dtype)
        key_mask = None
        if self.pad_masking:
            if not self.shifted_mask:
                valid = tokens != self.pad_id
            elif position == 0:
                valid = torch.ones_like(tokens, dtype=torch.bool)
            else:
                valid = self.previous != self.pad_id
            self.key_valid = valid[:, None] if self.key_valid is None else torch.cat([self.key_valid, valid[:, None]], dim=1)
            key_mask = self.key_valid[:, None, None, :]
        for index, block in enumerate(self.text.transformer.resblocks):
            x, self.text_cache[index] = _self_attention_step(block, x, self.text_cache[index], key_mask)
        # the multimodal decoder reads the text tower's tokens before its final LayerNorm
        for index, (block, cross) in enumerate(zip(self.decoder.resblocks, self.decoder.cross_attn)):
            x, self.decoder_cache[index] = _self_attention_step(block, x, self.decoder_cache[index], None)
            x = _cross_attention_step(cross, x, self.cross_keys[index])
        out = self.decoder.ln_final(x)
        if self.decoder.text_projection is not None:
            out = out @ self.decoder.text_projection
        self.previous = tokens
        self.position += 1
        return out[:, 0]

    def select(self, rows: torch.Tensor) -> None:
        pick = lambda pair: None if pair is None else (pair[0][rows], pair[1][rows])  # noqa: E731
        self.text_cache = [pick(pair) for pair in self.text_cache]
        self.decoder_cache = [pick(pair) for pair in self.decoder_cache]
        self.cross_keys = [pick(pair) for pair in self.cross_keys]
        if self.key_valid is not None:
            self.key_valid = self.key_valid[rows]
        if self.previous is not None:
            self.previous = self.previous[rows]


class FullForwardStepper:
    """Same interface as ``CachedStepper``: runs ``CoCa.forward`` over the whole prefix each step."""

    def __init__(self, coca: nn.Module, image_latent: torch.Tensor, image_embs: torch.Tensor):
        self.coca = coca
        self.image_latent, self.image_embs = image_latent, image_embs
        self.prefix: torch.Tensor | None = None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        column = tokens[:, None]
        self.prefix = column if self.prefix is None else torch.cat([self.prefix, column], dim=1)
        out = self.coca(None, self.prefix, image_latent=self.image_latent, image_embs=self.image_embs, output_labels=False)
        return out["logits"][:, -1]

    def select(self, rows: torch.Tensor) -> None:
        self.image_latent, self.image_embs = self.image_latent[rows], self.image_embs[rows]
        if self.prefix is not None:
            self.prefix = self.prefix[rows]


def _make_stepper(coca: nn.Module, images: torch.Tensor, use_cache: bool):
    image_latent, image_embs = coca._encode_image(images)
    if use_cache and supports_kv_cache(coca):
        return CachedStepper(coca, image_embs)
    return FullForwardStepper(coca, image_latent, image_embs)


# ----------------------------------------------------------------------------------------------
# Search


@contextmanager
def _eval_mode(module: nn.Module):
    """Eval mode and no autograd for the duration of decoding; restores the training flag."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def _check(coca: nn.Module, images: torch.Tensor, sot_id: int, eot_id: int, pad_id: int, max_length: int | None, min_length: int) -> int:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [batch, channels, height, width] tensor, got {getattr(images, 'shape', type(images))}")
    vocab_size = coca.text.vocab_size
    for name, value in (("sot_id", sot_id), ("eot_id", eot_id), ("pad_id", pad_id)):
        if not 0 <= int(value) < vocab_size:
            raise ConfigError(f"decoding: {name}={value} is outside the model's vocabulary (size {vocab_size})")
    limit = max_decoding_length(coca)
    if max_length is None:
        max_length = min(coca.text.context_length, coca.text_decoder.context_length)
    if not 2 <= max_length <= limit:
        raise ConfigError(f"decoding: max_length={max_length} must be between 2 and {limit} (the model's context length + 1)")
    if not 0 <= min_length < max_length:
        raise ConfigError(f"decoding: min_length={min_length} must be >= 0 and below max_length={max_length}")
    return int(max_length)


def greedy_search(
    model: nn.Module,
    images: torch.Tensor,
    sot_id: int,
    eot_id: int,
    pad_id: int = 0,
    max_length: int | None = None,
    min_length: int = 0,
    use_cache: bool = True,
) -> dict[str, torch.Tensor]:
    """Greedy decoding of a batch.

    Returns ``tokens`` [B, L] (start token first, ``pad_id`` after the end token, L <= max_length),
    ``log_probs`` [B] (sum over the generated tokens) and ``lengths`` [B] (tokens including start
    and end). The end token can be chosen only after ``min_length`` generated tokens.
    """
    coca = unwrap_coca(model)
    max_length = _check(coca, images, sot_id, eot_id, pad_id, max_length, min_length)
    with _eval_mode(coca):
        batch = images.shape[0]
        device = images.device
        stepper = _make_stepper(coca, images, use_cache)
        tokens = torch.full((batch, max_length), pad_id, dtype=torch.long, device=device)
        tokens[:, 0] = sot_id
        # scores in float32 whatever the model's dtype, float64 for a float64 model (as losses: at_least_float32)
        log_probs = torch.zeros(batch, dtype=_score_dtype(images), device=device)
        lengths = torch.full((batch,), max_length, dtype=torch.long, device=device)
        running = torch.arange(batch, device=device)  # image index of each row of the stepper
        current = tokens[:, 0]
        used = 1
        for position in range(1, max_length):
            logits = at_least_float32(stepper.step(current))
            if position - 1 < min_length:
                logits[:, eot_id] = float("-inf")
            chosen = logits.argmax(dim=-1)  # argmax of the logits themselves, as a reference would take
            log_probs[running] += torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0]
            tokens[running, position] = chosen
            used = position + 1
            ended = chosen == eot_id
            if ended.any():
                lengths[running[ended]] = position + 1
                keep = (~ended).nonzero()[:, 0]
                running, chosen = running[keep], chosen[keep]
                if running.numel() == 0:
                    break
                stepper.select(keep)
            current = chosen
    return {"tokens": tokens[:, :used], "log_probs": log_probs, "lengths": lengths}


def beam_search(
    model: nn.Module,
    images: torch.Tensor,
    sot_id: int,
    eot_id: int,
    pad_id: int = 0,
    max_length: int | None = None,
    beam_size: int = 3,
    length_penalty: float = 1.0,
    min_length: int = 0,
    use_cache: bool = True,
) -> dict[str, torch.Tensor]:
    """Beam search of a batch, every image's beams decoded together.

    A hypothesis's score is its summed log-probability divided by (generated tokens, end token
    included) ** ``length_penalty``. As in Hugging Face's beam search, each step expands the
    2 * beam_size best continuations; an end token among the beam_size best closes a hypothesis,
    and an image stops once it has beam_size closed hypotheses (early stopping) or reaches
    ``max_length`` (its open beams then count as hypotheses without an end token). With
    ``beam_size=1`` this is greedy decoding.

    Returns ``tokens`` [B, beam_size, L], ``scores`` [B, beam_size] (sorted, best first),
    ``log_probs`` [B, beam_size] and ``lengths`` [B, beam_size].
    """
    coca = unwrap_coca(model)
    max_length = _check(coca, images, sot_id, eot_id, pad_id, max_length, min_length)
    if beam_size < 1:
        raise ConfigError(f"decoding: beam_size={beam_size} must be at least 1")
    width = int(beam_size)
    with _eval_mode(coca):
        batch = images.shape[0]
        device = images.device
        stepper = _make_stepper(coca, images, use_cache)
        stepper.select(torch.arange(batch, device=device).repeat_interleave(width))
        running = torch.arange(batch, device=device)  # images still searching; width rows each
        sequences = torch.full((batch * width, 1), sot_id, dtype=torch.long, device=device)
        beam_log_probs = torch.zeros(batch, width, dtype=_score_dtype(images), device=device)
        beam_log_probs[:, 1:] = float("-inf")  # all beams start equal: expand only the first
        closed: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(batch)]
        for position in range(1, max_length):
            logits = at_least_float32(stepper.step(sequences[:, -1]))
            if position - 1 < min_length:
                logits[:, eot_id] = float("-inf")
            vocab = logits.shape[-1]
            candidates = (beam_log_probs.view(-1, 1) + torch.log_softmax(logits, dim=-1)).view(len(running), width * vocab)
            top_log_probs, top_index = candidates.topk(min(2 * width, width * vocab), dim=1)  # sorted
            top_beam, top_token = top_index // vocab, top_index % vocab
            is_end = top_token == eot_id
            for image_row, rank in (is_end[:, :width] & torch.isfinite(top_log_probs[:, :width])).nonzero().tolist():
                row = image_row * width + int(top_beam[image_row, rank])
                total = float(top_log_probs[image_row, rank])
                closed[int(running[image_row])].append(
                    (total / position**length_penalty, total, sequences[row].tolist() + [eot_id])
                )
            # continue with the best width continuations that do not end (2 * width candidates
            # hold at most width end tokens, so there are always enough)
            goes_on = ~is_end
            keep = goes_on & (goes_on.cumsum(dim=1) <= width)
            slots = keep.nonzero()[:, 1].view(len(running), width)
            beam_log_probs = top_log_probs.gather(1, slots)
            rows = (torch.arange(len(running), device=device)[:, None] * width + top_beam.gather(1, slots)).view(-1)
            sequences = torch.cat([sequences[rows], top_token.gather(1, slots).view(-1, 1)], dim=1)
            stepper.select(rows)
            finished = torch.tensor([len(closed[int(image)]) >= width for image in running], device=device)
            if finished.all():
                running = running[:0]
                break
            if position + 1 < max_length and finished.any():
                still = (~finished).nonzero()[:, 0]
                still_rows = (still[:, None] * width + torch.arange(width, device=device)).view(-1)
                running, beam_log_probs = running[still], beam_log_probs[still]
                sequences = sequences[still_rows]
                stepper.select(still_rows)
        # images that reached max_length: their open beams are hypotheses too
        generated = sequences.shape[1] - 1
        for image_row, image in enumerate(running.tolist()):
            if len(closed[image]) >= width:
                continue
            for beam in range(width):
                total = float(beam_log_probs[image_row, beam])
                if total != float("-inf"):
                    closed[image].append((total / generated**length_penalty, total, sequences[image_row * width + beam].tolist()))
        return _pack_hypotheses(closed, width, pad_id, device, beam_log_probs.dtype)


def _score_dtype(images: torch.Tensor) -> torch.dtype:
    """The dtype of decoding scores: that of ``at_least_float32`` on the model's inputs."""
    return torch.float64 if images.dtype == torch.float64 else torch.float32


def _pack_hypotheses(closed: list[list[tuple[float, float, list[int]]]], width: int, pad_id: int, device,
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    best = [sorted(hypotheses, key=lambda h: h[0], reverse=True)[:width] for hypotheses in closed]
    batch = len(best)
    length = max(len(h[2]) for hypotheses in best for h in hypotheses)
    tokens = torch.full((batch, width, length), pad_id, dtype=torch.long)
    scores = torch.full((batch, width), float("-inf"), dtype=dtype)
    log_probs = torch.full((batch, width), float("-inf"), dtype=dtype)
    lengths = torch.zeros((batch, width), dtype=torch.long)
    for image, hypotheses in enumerate(best):
        for rank, (score, total, sequence) in enumerate(hypotheses):
            tokens[image, rank, : len(sequence)] = torch.tensor(sequence)
            scores[image, rank], log_probs[image, rank], lengths[image, rank] = score, total, len(sequence)
    return {
        "tokens": tokens.to(device),
        "scores": scores.to(device),
        "log_probs": log_probs.to(device),
        "lengths": lengths.to(device),
    }


def generate_captions(
    model: nn.Module,
    images: torch.Tensor,
    sot_id: int,
    eot_id: int,
    pad_id: int = 0,
    max_length: int | None = None,
    method: str = "greedy",
    beam_size: int = 3,
    length_penalty: float = 1.0,
    min_length: int = 0,
    use_cache: bool = True,
) -> torch.LongTensor:
    """Caption token ids [B, L <= max_length]: start token first, ``pad_id`` after the end token.

    ``method`` is ``greedy`` or ``beam`` (the best of ``beam_size`` beams). ``max_length`` counts
    the start token; None means the model's context length. Accepts a CoCa, or a DDP / task model
    wrapping one; runs in eval mode without autograd and restores the training flag afterwards.
    """
    if method == "greedy":
        return greedy_search(model, images, sot_id, eot_id, pad_id, max_length, min_length, use_cache)["tokens"]
    if method == "beam":
        out = beam_search(model, images, sot_id, eot_id, pad_id, max_length, beam_size, length_penalty, min_length, use_cache)
        best = out["tokens"][:, 0]
        return best[:, : int(out["lengths"][:, 0].max())]
    raise ConfigError(f"decoding: unknown method {method!r} (expected one of {', '.join(METHODS)})")


def decode_texts(
    token_ids: torch.Tensor | Sequence[Sequence[int]],
    tokenizer: Any,
    sot_id: int | None = None,
    eot_id: int | None = None,
    pad_id: int | None = None,
) -> list[str]:
    """Caption strings from token ids: drops the start token, stops at the end token, skips padding.

    The ids default to the tokenizer's own (``sot_id``/``eot_id``/``pad_id`` as optima's tokenizers
    name them, or open_clip's ``sot_token_id``/``eot_token_id``); padding defaults to 0.
    """
    sot_id = _tokenizer_id(tokenizer, ("sot_id", "sot_token_id")) if sot_id is None else sot_id
    eot_id = _tokenizer_id(tokenizer, ("eot_id", "eot_token_id")) if eot_id is None else eot_id
    pad_id = _tokenizer_id(tokenizer, ("pad_id",), default=0) if pad_id is None else pad_id
    rows = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else [list(row) for row in token_ids]
    texts = []
    for row in rows:
        row = [int(token) for token in row]
        if row and sot_id is not None and row[0] == sot_id:
            row = row[1:]
        if eot_id is not None and eot_id in row:
            row = row[: row.index(eot_id)]
        texts.append(tokenizer.decode([token for token in row if token != pad_id]).strip())
    return texts


def _tokenizer_id(tokenizer: Any, names: tuple[str, ...], default: int | None = None) -> int | None:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return default
