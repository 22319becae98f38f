"""Distillation: feature taps (``taps``), losses (``losses``), objectives, the training loop and its verbs.

Kept import-free so ``optima --help`` and the CLI verb modules load without torch.
"""
