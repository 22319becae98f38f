"""CoCa's three distillable modules as first-class objects.

One table (``MODULE_SPECS``) says where each module lives inside an open_clip ``CoCa``; every other
piece of the package (taps, student initialisation, per-module parameters, summaries) derives from it,
so "distil module m" is a lookup, never scattered string matching.

- ``vision``: the image encoder (patch embedding, ViT blocks) and its attentional poolers and projection.
  Layer i = ``visual.transformer.resblocks[i]``, hidden state (B, 1 + patches, vision width), CLS first.
- ``text``: the unimodal text decoder. Layer i = ``text.transformer.resblocks[i]``, hidden state
  (B, L + 1, width): the L text tokens, then the appended CLS token.
- ``multimodal``: the multimodal text decoder. open_clip splits each CoCa decoder layer into a causal
  self-attention block (``text_decoder.resblocks[i]``) and a cross-attention block
  (``text_decoder.cross_attn[i]``), each with its own MLP. **A layer is the pair** (self-attention
  block i, cross-attention block i), as in the CoCa paper's decoder layer; its hidden state is the
  cross-attention block's output, (B, T, width) with T = L - 1 when captioning (teacher forcing drops
  the last token) and T = L for the classification heads.

``logit_scale`` (and ``logit_bias`` if present) belong to no module ("other").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from optima.coca_modules import MODULES
from optima.errors import ConfigError


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    root: str                     # attribute path of the module's sub-tree; its parameters are "<root>.*"
    layer_lists: tuple[str, ...]  # ModuleLists whose i-th entries together form layer i
    output_list: str              # the list whose i-th entry outputs layer i's hidden state (hooked by taps)


MODULE_SPECS: dict[str, ModuleSpec] = {
    "vision": ModuleSpec("vision", "visual", ("visual.transformer.resblocks",), "visual.transformer.resblocks"),
    "text": ModuleSpec("text", "text", ("text.transformer.resblocks",), "text.transformer.resblocks"),
    "multimodal": ModuleSpec("multimodal", "text_decoder", ("text_decoder.resblocks", "text_decoder.cross_attn"),
                             "text_decoder.cross_attn"),
}
assert tuple(MODULE_SPECS) == MODULES


class DecoderLayer(nn.Module):
    """A view of one multimodal decoder layer: (self-attention block, cross-attention block).

    It holds references to the model's own blocks (it is not registered in the model), so
    ``state_dict``/``load_state_dict`` on it read and write the model's weights.
    """

    def __init__(self, self_attn: nn.Module, cross_attn: nn.Module):
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The open_clip CoCa inside ``model``: unwraps DDP (``.module``), ``torch.compile`` (``._orig_mod``)
    and optima task models (``.coca``)."""
    from open_clip import CoCa

    seen = 0
    while not isinstance(model, CoCa):
        for attribute in ("module", "_orig_mod", "coca"):
            inner = getattr(model, attribute, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            raise TypeError(f"expected an open_clip CoCa (or a wrapper of one), got {type(model).__name__}")
        seen += 1
        if seen > 8:
            raise TypeError("model wrappers nest too deeply")
    return model


def module_spec(name: str) -> ModuleSpec:
    try:
        return MODULE_SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown module {name!r} (known: {', '.join(MODULES)})") from None


def _layer_lists(model: nn.Module, name: str) -> list[nn.ModuleList]:
    coca = unwrap_model(model)
    return [coca.get_submodule(path) for path in module_spec(name).layer_lists]


def module_layers(model: nn.Module, name: str) -> list[nn.Module]:
    """The layers of module ``name``, in forward order (multimodal: ``DecoderLayer`` pairs)."""
    lists = _layer_lists(model, name)
    if len(lists) == 1:
        return list(lists[0])
    return [DecoderLayer(*blocks) for blocks in zip(*lists)]


def layer_output_modules(model: nn.Module, name: str) -> list[nn.Module]:
    """For each layer of module ``name``, the submodule whose forward output is that layer's hidden state."""
    return list(unwrap_model(model).get_submodule(module_spec(name).output_list))


def num_layers(model: nn.Module) -> dict[str, int]:
    return {name: len(_layer_lists(model, name)[0]) for name in MODULES}


def module_widths(model: nn.Module) -> dict[str, int]:
    """Hidden-state width of each module's layers."""
    coca = unwrap_model(model)
    return {"vision": coca.visual.transformer.width, "text": coca.text.transformer.width,
            "multimodal": coca.text_decoder.width}


def module_of_parameter(parameter_name: str) -> str | None:
    """The module that owns a CoCa parameter/buffer name (``None`` for logit_scale/logit_bias)."""
    for spec in MODULE_SPECS.values():
        if parameter_name.startswith(spec.root + "."):
            return spec.name
    return None


def module_named_parameters(model: nn.Module, name: str) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter of module ``name`` (vision includes the poolers and projection)."""
    spec = module_spec(name)
    return [(n, p) for n, p in unwrap_model(model).named_parameters() if n.startswith(spec.root + ".")]


def module_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    return [p for _, p in module_named_parameters(model, name)]


_LAYER_KEY = {
    spec.name: re.compile(r"^(" + "|".join(re.escape(p) for p in spec.layer_lists) + r")\.(\d+)\.(.+)$")
    for spec in MODULE_SPECS.values()
}


def parse_layer_key(key: str) -> tuple[str, str, int, str] | None:
    """``"text_decoder.cross_attn.3.mlp.c_fc.weight"`` -> ``("multimodal", "text_decoder.cross_attn", 3, "mlp.c_fc.weight")``;
    ``None`` for a state-dict key outside every layer (embeddings, poolers, projections, final norms)."""
    for name, pattern in _LAYER_KEY.items():
        match = pattern.match(key)
        if match:
            return name, match.group(1), int(match.group(2)), match.group(3)
    return None
