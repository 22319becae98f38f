"""Feature taps: capture the hidden states of chosen layers of chosen CoCa modules in one forward pass.

    with FeatureTaps(model, {"vision": [1, 3], "multimodal": [3]}) as taps:
        outputs = model(batch)
        taps.features["vision.3"]     # (B, 1 + patches, width), keyed "<module>.<layer index>"
        taps.masks["multimodal"]      # (B, T) bool, True at real (non-padding) tokens

Hooks go on the unwrapped open_clip CoCa (DDP ``.module``, ``torch.compile``, optima task models'
``.coca`` are looked through), only on the requested layers, and are removed on exit. A layer's hidden
state is the output of the block listed in ``optima.models.modules`` (multimodal: the cross-attention
block that ends decoder layer i). Each hook fires once per forward, also with gradient checkpointing:
recomputations that happen inside backward are ignored. Features keep their autograd graph unless
``detach=True``. ``clear()`` empties them between steps (a new forward also overwrites them).

Padding masks come from the token ids the text tower saw (captured by a pre-hook, so a model that
repeats or reshapes its text, like the NLVR2 head, gets the right masks):
- ``text``: (B, L + 1), the L tokens (False at padding) and the appended CLS token (True);
- ``multimodal``: (B, T) for the first T tokens the decoder consumed (T = L - 1 when captioning);
- ``vision``: all True (B, 1 + patches).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

import torch
from torch import nn

from optima.coca_modules import MODULES
from optima.errors import ConfigError
from optima.models.modules import layer_output_modules, unwrap_model


def _in_backward() -> bool:
    """True while autograd runs a backward pass (checkpointed blocks are recomputed there)."""
    graph_task_id = getattr(torch._C, "_current_graph_task_id", None)
    return graph_task_id is not None and graph_task_id() != -1


POOLER_KEY = "vision.pool"  # feature key of the vision module's attentional-pooler output tokens


def feature_key(module: str, layer: int) -> str:
    return f"{module}.{layer}"


def validate_layers(model: nn.Module, layers: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    """``layers`` with every module known and every index inside the model (ConfigError naming it)."""
    checked = {}
    for module, indices in layers.items():
        if module not in MODULES:
            raise ConfigError(f"feature taps: unknown module {module!r} (known: {', '.join(MODULES)})")
        available = len(layer_output_modules(model, module))
        indices = list(indices)
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < available:
                raise ConfigError(f"feature taps: {module} layer {index!r} does not exist "
                                  f"(the model's {module} module has {available} layers)")
        checked[module] = indices
    return checked


class FeatureTaps:
    def __init__(self, model: nn.Module, layers: Mapping[str, Iterable[int]], detach: bool = False,
                 pooler: bool = False):
        self.coca = unwrap_model(model)
        self.layers = {m: idx for m, idx in validate_layers(self.coca, layers).items() if idx}
        self.detach = detach
        self.pooler = pooler  # also capture the vision tower's output tokens (attentional pooler) as "vision.pool"
        self.features: dict[str, torch.Tensor] = {}
        self.calls: Counter[str] = Counter()  # hook firings per key since the last clear()
        self.pad_id = int(getattr(self.coca.text, "pad_id", getattr(self.coca, "pad_id", 0)))
        self._text: torch.Tensor | None = None
        self._handles: list = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def attach(self) -> "FeatureTaps":
        if self._handles:
            return self
        for module, indices in self.layers.items():
            blocks = layer_output_modules(self.coca, module)
            batch_first = self._batch_first(module)
            for index in indices:
                self._handles.append(blocks[index].register_forward_hook(
                    self._make_hook(feature_key(module, index), batch_first)))
        if self.pooler:
            self._handles.append(self.coca.visual.register_forward_hook(self._capture_pooler))
        if "text" in self.layers or "multimodal" in self.layers:
            self._handles.append(self.coca.text.register_forward_pre_hook(self._capture_text, with_kwargs=True))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.features.clear()
        self.calls.clear()
        self._text = None

    def __enter__(self) -> "FeatureTaps":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- hooks -------------------------------------------------------------------------------------
    def _batch_first(self, module: str) -> bool:
        container = {"vision": self.coca.visual.transformer, "text": self.coca.text.transformer,
                     "multimodal": self.coca.text_decoder}[module]
        return getattr(container, "batch_first", True)

    def _make_hook(self, key: str, batch_first: bool):
        def hook(_module, _inputs, output):
            if _in_backward():
                return
            hidden = output if batch_first else output.transpose(0, 1)
            self.features[key] = hidden.detach() if self.detach else hidden
            self.calls[key] += 1
        return hook

    def _capture_pooler(self, _module, _inputs, output):
        if _in_backward():
            return
        tokens = output[1] if isinstance(output, (tuple, list)) else None
        if tokens is None:
            raise ConfigError("feature taps: the vision tower returns no output tokens, so there is no "
                              "attentional pooler to match (set distill.vision_pooler: false)")

        self.features[POOLER_KEY] = tokens.detach() if self.detach else tokens
        self.calls[POOLER_KEY] += 1

    def _capture_text(self, _module, args, kwargs):
        if _in_backward():
            return None
        text = args[0] if args else kwargs.get("text")
        if isinstance(text, torch.Tensor):
            self._text = text.detach()
        return None

    # -- masks -------------------------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Per captured module, a bool (B, T) mask that is True at real tokens."""
        out = {}
        for module in self.layers:
            captured = [self.features[k] for k in (feature_key(module, i) for i in self.layers[module])
                        if k in self.features]
            if not captured:
                continue
            batch, length = captured[0].shape[:2]
            device = captured[0].device
            text = self._text
            if module == "vision" or text is None or text.shape[0] != batch:
                out[module] = torch.ones(batch, length, dtype=torch.bool, device=device)
            elif module == "text":
                real = text != self.pad_id
                cls = torch.ones(batch, length - real.shape[1], dtype=torch.bool, device=real.device)
                out[module] = torch.cat([real, cls], dim=1).to(device)
            else:
                out[module] = (text[:, :length] != self.pad_id).to(device)
        return out
