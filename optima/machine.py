"""Which CPU a run used, precisely enough to tell two machines apart (no torch import: publish uses it)."""

from __future__ import annotations

from pathlib import Path


def cpu_identity(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's model name with its family and model numbers, e.g. "AMD EPYC (family 26, model 2)".

    Virtual machines often report a bare "AMD EPYC" for several generations, whose math libraries choose
    different matrix kernels: the numbers tell them apart. None where /proc/cpuinfo is missing (not Linux)."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return None
    fields = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    numbers = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model")) if key in fields]
    if name and numbers:
        return f"{name} ({', '.join(numbers)})"
    return name
