"""Build open_clip CoCa models from named configs, with the traps of custom CoCa configs guarded.

Names resolve through open_clip's config registry, to which the packaged tiny configs
(``optima/models/model_configs/*.json``) are added, so ``coca_ViT-L-14`` and ``optima-tiny-teacher`` go
through the same path. Every model built here records its open_clip model config (``model_config``)
so a checkpoint can be rebuilt from ``model_config.json`` + ``model.safetensors`` alone.

Why not ``open_clip.create_model``: one instantiation path serves named configs, students derived from a
teacher and reloaded run directories alike, and weights are loaded through ``load_weights`` which
names the key and both shapes on a mismatch (open_clip would raise torch's long message, or silently
resize position embeddings). The instantiation itself is exactly open_clip's (``CoCa(**model_cfg)``).
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optima.coca_modules import MODULES
from optima.errors import CheckpointError, ConfigError

PACKAGED_MODELS = ("optima-tiny-teacher", "optima-tiny-student", "optima-nano-teacher", "optima-nano-student")
CONFIG_ATTRIBUTE = "optima_model_config"  # where a built model keeps {"name", "model_cfg"}

_registered = False


def register_model_configs() -> None:
    """Add the packaged tiny configs to open_clip's registry (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    directory = resources.files("optima").joinpath("models/model_configs")
    open_clip.add_model_config(Path(str(directory)))
    _registered = True


def list_coca_models() -> list[str]:
    """Names of every CoCa config open_clip knows (packaged tiny configs included)."""
    import open_clip

    register_model_configs()
    return [name for name in open_clip.list_models() if "multimodal_cfg" in (open_clip.get_model_config(name) or {})]


def get_coca_config(name: str, vocab_size: int | None = None, context_length: int | None = None) -> dict:
    """The open_clip model config of ``name`` with the text vocabulary / context length overridden.

    The overrides apply to both text decoders (the unimodal tower embeds the tokens, the multimodal
    decoder predicts them and its causal mask spans the context).
    """
    import open_clip

    register_model_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None or "multimodal_cfg" not in cfg:
        known = ", ".join(list_coca_models())
        what = "not a CoCa config" if cfg is not None else "unknown model"
        raise ConfigError(f"model.teacher: {what} {name!r} (known CoCa configs: {known})")
    cfg = copy.deepcopy(cfg)
    for key, value in (("vocab_size", vocab_size), ("context_length", context_length)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise ConfigError(f"{name}: {key} must be an integer >= 2, got {value!r}")
        cfg["text_cfg"][key] = value
        cfg["multimodal_cfg"][key] = value
    cfg["custom_text"] = True  # CoCa is open_clip's custom-text family; keeps the dict a valid open_clip config
    return cfg


def check_coca_config(cfg: dict, source: str) -> None:
    """Reject configs that open_clip's CoCa accepts but cannot run (known traps), naming the key."""
    embed_dim = cfg.get("embed_dim")
    vision, text, multimodal = (cfg.get(k) or {} for k in ("vision_cfg", "text_cfg", "multimodal_cfg"))
    from open_clip.coca_model import MultimodalCfg
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    text_width = text.get("width", CLIPTextCfg.width)
    mm_width = multimodal.get("width", MultimodalCfg.width)
    if mm_width != embed_dim:
        raise ConfigError(
            f"{source}: multimodal_cfg.width ({mm_width}) must equal embed_dim ({embed_dim}): open_clip's CoCa "
            "cross-attends to image tokens of width embed_dim (a mismatch fails later as a LayerNorm shape error)")
    if text_width != mm_width:
        raise ConfigError(
            f"{source}: text_cfg.width ({text_width}) must equal multimodal_cfg.width ({mm_width}): the multimodal "
            "decoder consumes the unimodal decoder's token embeddings")
    if not vision.get("attentional_pool") or not vision.get("output_tokens") or not text.get("embed_cls") \
            or not text.get("output_tokens"):
        raise ConfigError(f"{source}: a CoCa config needs vision_cfg.attentional_pool, vision_cfg.output_tokens, "
                          "text_cfg.embed_cls and text_cfg.output_tokens set to true")
    queries = vision.get("attn_pooler_queries", CLIPVisionCfg.attn_pooler_queries)
    if queries < 2:
        raise ConfigError(f"{source}: vision_cfg.attn_pooler_queries must be >= 2 (query 0 is the contrastive "
                          f"embedding, the rest are the image tokens the decoder attends to), got {queries}")
    if vision.get("width", CLIPVisionCfg.width) % vision.get("head_width", CLIPVisionCfg.head_width):
        raise ConfigError(f"{source}: vision_cfg.width must be a multiple of vision_cfg.head_width")
    for key, sub in (("text_cfg", text), ("multimodal_cfg", multimodal)):
        if sub.get("width", 512) % sub.get("heads", 8):
            raise ConfigError(f"{source}: {key}.width must be a multiple of {key}.heads")
    if text.get("vocab_size") != multimodal.get("vocab_size", text.get("vocab_size")):
        raise ConfigError(f"{source}: text_cfg.vocab_size and multimodal_cfg.vocab_size differ")


def initialise_multimodal_decoder(coca: nn.Module) -> None:
    """The initialisation open_clip intends for the multimodal decoder but never runs.

    ``MultimodalTransformer.init_parameters`` refers to a ``.transformer`` attribute it does not have
    and is never called, so ``text_decoder.text_projection`` stays ``torch.empty`` (arbitrary memory:
    NaNs, denormals that slow CPUs down by orders of magnitude). Same distributions as open_clip's text tower.
    """
    decoder = coca.text_decoder
    width, layers = decoder.width, decoder.layers
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    attn_std, fc_std = width ** -0.5, (2 * width) ** -0.5
    with torch.no_grad():
        for block in list(decoder.resblocks) + list(decoder.cross_attn):
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        if decoder.text_projection is not None:
            nn.init.normal_(decoder.text_projection, std=width ** -0.5)


def coca_from_config(model_cfg: dict, name: str = "custom") -> nn.Module:
    """Instantiate an open_clip ``CoCa`` from an open_clip model config dict (randomly initialised)."""
    import open_clip
    from open_clip.model import set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg
    from dataclasses import asdict

    check_coca_config(model_cfg, name)
    kwargs = {k: copy.deepcopy(v) for k, v in model_cfg.items() if k != "custom_text"}
    try:
        coca = open_clip.CoCa(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{name}: not a valid open_clip CoCa config: {exc}") from None
    initialise_multimodal_decoder(coca)
    preprocess = asdict(PreprocessCfg())
    preprocess["size"] = coca.visual.image_size
    set_model_preprocess_cfg(coca, preprocess)
    setattr(coca, CONFIG_ATTRIBUTE, {"name": name, "model_cfg": copy.deepcopy(model_cfg)})
    return coca


def model_config(model: nn.Module) -> dict:
    """The open_clip model config a model was built from (``{"name", "model_cfg"}``)."""
    from optima.models.modules import unwrap_model

    recorded = getattr(unwrap_model(model), CONFIG_ATTRIBUTE, None)
    if recorded is None:
        raise ConfigError("this CoCa was not built by optima.models (no recorded model config); "
                          "build it with create_coca/coca_from_config/load_model")
    return copy.deepcopy(recorded)


# -- weights ---------------------------------------------------------------------------------------

def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no downloads, read as huggingface_hub reads it: 1, ON, YES or TRUE (any
    case) is set; 0, an empty value or anything else is not."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def pretrained_download_hint(cfg: dict) -> str:
    """What to download, and where open_clip looks for it, for one pretrained tag's config."""
    offline = "HF_HUB_OFFLINE is set, so nothing is downloaded: " if hub_offline() else ""
    hub = cfg.get("hf_hub") or ""
    if hub:
        from huggingface_hub import constants

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        filename = filename or "open_clip_pytorch_model.bin"
        return (f"{offline}download it once on a machine with network into the Hugging Face cache "
                f"{constants.HF_HUB_CACHE} (set HF_HUB_CACHE to share one): "
                f"`HF_HUB_OFFLINE=0 hf download {repo} {filename}` (or `huggingface-cli download ...`), "
                f"or point model.pretrained at a local copy of the weights file")
    url = cfg.get("url") or ""
    cache = os.path.expanduser("~/.cache/clip")
    return (f"{offline}download {url} into {cache}/ once on a machine with network, "
            f"or point model.pretrained at a local copy of the weights file")


def resolve_checkpoint(pretrained: str, name: str) -> str:
    """A local weights file for ``pretrained``: a file, a run directory, or an open_clip tag (downloaded)."""
    import open_clip

    path = Path(pretrained)
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{path}: run directory has no model.safetensors")
        return str(weights)
    if path.is_file():
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags:
        cfg = open_clip.get_pretrained_cfg(name, pretrained)
        try:
            return open_clip.download_pretrained(cfg)
        except Exception as exc:  # network, hub, cache: one clear line saying what to fetch and where
            raise CheckpointError(f"{name}: could not fetch open_clip pretrained weights {pretrained!r}: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                                  f"{pretrained_download_hint(cfg)}") from None
    known = f"open_clip tags for {name}: {', '.join(tags)}" if tags else f"open_clip has no pretrained tags for {name}"
    raise CheckpointError(f"model.pretrained: {pretrained!r} is neither an existing file or run directory nor a "
                          f"pretrained tag ({known})")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors without pickle; open_clip ``.pt/.bin`` through torch's
    restricted ``weights_only`` loader. ``module.`` (DDP) prefixes are stripped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            from open_clip.factory import load_state_dict  # not re-exported at the top level in 3.3

            state = load_state_dict(str(path), weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable weights file: {type(exc).__name__}: {exc}") from None
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return dict(state)


def coca_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CoCa part of a state dict: a task model's ``coca.*`` tensors lose their prefix."""
    if any(k.startswith("coca.") for k in state):
        return {k[len("coca."):]: v for k, v in state.items() if k.startswith("coca.")}
    return state


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the first key whose presence or shape does not fit ``model``."""
    expected = model.state_dict()
    mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if mismatched:
        key, got, want = mismatched[0]
        more = f" (and {len(mismatched) - 1} more mismatched tensor(s))" if len(mismatched) > 1 else ""
        raise CheckpointError(f"{source}: tensor {key!r} has shape {list(got)} in the checkpoint but "
                              f"{list(want)} in the model{more}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{source}: checkpoint lacks {len(missing)} tensor(s) of the model, first {missing[0]!r}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise CheckpointError(f"{source}: checkpoint has {len(unexpected)} tensor(s) the model does not, "
                              f"first {unexpected[0]!r}")


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    check_state_fits(model, state, source)
    model.load_state_dict(state, strict=True)


def create_coca(name: str, vocab_size: int | None = None, context_length: int | None = None,
                pretrained: str | None = None, return_config: bool = False):
    """A CoCa built from the named open_clip config (packaged tiny configs included).

    ``pretrained``: an open_clip pretrained tag (downloaded by open_clip), a weights file
    (``.safetensors``; open_clip ``.pt/.bin``) or a run directory holding ``model.safetensors``
    (a task model's ``coca.*`` weights are used). ``None``: random initialisation (seeded by the caller).
    ``vocab_size``/``context_length`` override both text decoders' config (the word tokenizer).

    Returns the model, or ``(model, model_config)`` with ``return_config`` (what ``save_model`` records).
    """
    import open_clip

    cfg = get_coca_config(name, vocab_size, context_length)
    path = resolve_checkpoint(str(pretrained), name) if pretrained else None  # fail before building
    coca = coca_from_config(cfg, name)
    if path is not None:
        load_weights(coca, coca_state(read_state_dict(path)), path)
        if str(pretrained) in open_clip.list_pretrained_tags_by_model(name):
            from open_clip.model import get_model_preprocess_cfg, set_model_preprocess_cfg
            from open_clip.transform import merge_preprocess_dict

            tag_cfg = open_clip.get_pretrained_cfg(name, str(pretrained))
            set_model_preprocess_cfg(coca, merge_preprocess_dict(get_model_preprocess_cfg(coca), tag_cfg))
    return (coca, model_config(coca)) if return_config else coca


def model_summary(model: nn.Module) -> dict[str, Any]:
    """``{"parameters": {vision, text, multimodal, other, total}, "layers": {...}, "widths": {...}}``."""
    from optima.models.modules import module_of_parameter, module_widths, num_layers, unwrap_model

    coca = unwrap_model(model)
    counts = {name: 0 for name in (*MODULES, "other")}
    for name, parameter in coca.named_parameters():
        counts[module_of_parameter(name) or "other"] += parameter.numel()
    counts["total"] = sum(counts.values())
    return {"parameters": counts, "layers": num_layers(coca), "widths": module_widths(coca)}

