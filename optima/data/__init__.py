"""Data: the synthetic benchmark in the four official formats, loaders for those formats, tokenizers.

Modules: ``synthetic`` (generator; ``scenes`` and ``grammar`` are its pictures and language),
``formats`` (prepared layout, strict readers), ``official`` (layout from downloaded official files),
``tokenizers``, ``images``, ``datasets`` (one torch Dataset per format, ``build_dataset``), and
``prepare`` (the ``optima prepare`` verb). Nothing heavy is imported here, so ``optima --help`` stays fast.
"""
