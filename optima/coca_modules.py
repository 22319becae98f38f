"""The names of CoCa's three distillable modules, the bandit's arms: a leaf every package may import (where
each module lives inside a CoCa is ``optima.models.modules``)."""

MODULES = ("vision", "text", "multimodal")
