"""``train_log.csv``: one row per logged step (and per bandit-round end), a fixed set of columns."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from optima.coca_modules import MODULES
from optima.io import atomic_write_text, output_error

COLUMNS = [
    "step", "lr", "loss", "task_loss", "kd_loss", "layer_loss",
    "layer_loss_vision", "layer_loss_text", "layer_loss_multimodal",
    "contrastive_loss", "caption_loss",
    "arm", "round", "reward", "probe_before", "probe_loss", "probe_task_before", "probe_task_loss",
    "train_first", "train_last", "grad_norm", "examples_per_s", "elapsed_s", "probe_s",
    # the reward decomposition, the held-out reward and the oracle's candidates (optima.distill.rounds, .oracle)
    *(f"term_{t}_{when}" for t in ("task", "kd", *MODULES) for when in ("before", "after")),
    "heldout_before", "heldout_after", *(f"oracle_{m}" for m in MODULES),
]
# columns that depend on the machine's speed, not on the computation (left out of identity checks);
# examples_per_s excludes the probe's time, probe_s is the probe's cumulative time
TIMING_COLUMNS = ("examples_per_s", "elapsed_s", "probe_s")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(float(value))
    return str(value)


class TrainLog:
    """Rows are kept in memory (they go into every checkpoint) and mirrored to a live file."""

    def __init__(self, live_path: str | Path | None = None):
        self.rows: list[dict] = []
        self.live_path = Path(live_path) if live_path else None
        self._live = None

    def append(self, **values) -> None:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise KeyError(f"train_log: unknown column(s) {sorted(unknown)}")
        row = {c: _fmt(values.get(c)) for c in COLUMNS}
        self.rows.append(row)
        if self.live_path is not None:
            try:
                if self._live is None:
                    self._live = open(self.live_path, "w", newline="")
                    self._live.write(",".join(COLUMNS) + "\n")
                self._live.write(",".join(row[c] for c in COLUMNS) + "\n")
                self._live.flush()
            except OSError as exc:  # a full disk or a read-only folder: say so, naming the file
                raise output_error(self.live_path, exc) from None

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    def restore(self, csv_text: str) -> None:
        self.rows = list(csv.DictReader(io.StringIO(csv_text)))
        if self.live_path is not None:
            self.close()
            try:
                self.live_path.write_text(csv_text)
                self._live = open(self.live_path, "a", newline="")
            except OSError as exc:
                raise output_error(self.live_path, exc) from None

    def write(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_csv())

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None
