"""OPTIMA: module-wise adaptive distillation of CoCa-style multimodal foundation models."""

__version__ = "0.1.0"
