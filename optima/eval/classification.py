"""Accuracy metrics of the two classification tasks: NLVR2 (accuracy and consistency, as the official
``nlvr2/eval/metrics.py`` computes them) and SNLI-VE (3-way accuracy, overall and per gold class)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optima.errors import DataError
from optima.eval._checks import check_same_ids

SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")
# The SNLI-VE generator wrote the image id under three spellings over its history (see the fixture's
# SOURCE.md); records with any of them are accepted.
SNLI_VE_IMAGE_KEYS = ("Flickr30K_ID", "Flikr30kID", "Flickr30kID")


def nlvr2_scores(examples: Iterable[Mapping[str, Any]], predictions: Mapping[str, Any]) -> dict[str, float]:
    """``{"accuracy", "consistency"}`` as fractions, exactly as the official script computes them.

    ``examples``: the NLVR2 JSON-lines records (``identifier``, ``label`` "True"/"False");
    ``predictions``: identifier -> predicted label, a bool or the strings "True"/"False" (any case).
    Consistency is the fraction of sentences (identifier with the pair id blanked, which groups the
    examples that share one sentence) whose examples are all predicted correctly.
    """
    labels: dict[str, bool] = {}
    for index, example in enumerate(examples):
        if not isinstance(example, Mapping) or "identifier" not in example or "label" not in example:
            raise DataError(f"NLVR2 examples: record {index} has no 'identifier' or no 'label'")
        identifier = example["identifier"]
        if identifier in labels:
            raise DataError(f"NLVR2 examples: identifier {identifier!r} appears twice")
        labels[identifier] = _as_bool(example["label"], f"NLVR2 examples: label of {identifier!r}")
    check_same_ids(labels, predictions, what="NLVR2 predictions", truth_key="identifier")

    num_correct = 0.0
    all_correct: dict[str, bool] = {}
    for identifier, label in labels.items():
        sentence = _nlvr2_sentence_key(identifier)
        correct = _as_bool(predictions[identifier], f"NLVR2 predictions: prediction for {identifier!r}") == label
        num_correct += correct
        all_correct[sentence] = all_correct.get(sentence, True) and correct
    return {
        "accuracy": num_correct / len(labels),
        "consistency": float(sum(all_correct.values())) / len(all_correct),
    }


def read_nlvr2_predictions(path: str | Path) -> dict[str, str]:
    """Read the official predictions CSV (one ``identifier,True|False`` line per example, no header)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise DataError(f"cannot read NLVR2 predictions {path}: {error}") from error
    predictions: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != 2 or not fields[0]:
            raise DataError(f"{path}:{number}: expected 'identifier,True|False', got {line!r}")
        identifier, prediction = fields
        _as_bool(prediction, f"{path}:{number}: prediction")
        if identifier in predictions:
            raise DataError(f"{path}:{number}: identifier {identifier!r} appears twice")
        predictions[identifier] = prediction
    return predictions


def write_nlvr2_predictions(path: str | Path, predictions: Mapping[str, Any]) -> None:
    """Write predictions in the official CSV format (atomically), e.g. for a test-P submission."""
    from optima.io import atomic_write_text

    lines = [f"{identifier},{_as_bool(p, f'prediction for {identifier!r}')}" for identifier, p in predictions.items()]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def snli_ve_scores(examples: Iterable[Mapping[str, Any]], predictions: Mapping[str, str]) -> dict[str, float]:
    """SNLI-VE accuracy as fractions: ``accuracy`` and ``accuracy_<class>`` for each gold class
    (the recall of that class; a class with no example in ``examples`` gets no key).

    ``examples``: SNLI-VE JSON-lines records; ``predictions``: ``pairID`` -> predicted label
    (``entailment``/``neutral``/``contradiction``, any case). ``pairID`` is the key because it is
    the one field unique per example (an image has many hypotheses, a caption several).
    """
    gold: dict[str, str] = {}
    for index, example in enumerate(examples):
        if not isinstance(example, Mapping) or "pairID" not in example or "gold_label" not in example:
            raise DataError(f"SNLI-VE examples: record {index} has no 'pairID' or no 'gold_label'")
        pair_id = example["pairID"]
        snli_ve_image_id(example, where=f"SNLI-VE examples: pairID {pair_id!r}")
        if pair_id in gold:
            raise DataError(f"SNLI-VE examples: pairID {pair_id!r} appears twice")
        gold[pair_id] = _snli_ve_label(example["gold_label"], f"SNLI-VE examples: gold_label of {pair_id!r}")
    check_same_ids(gold, predictions, what="SNLI-VE predictions", truth_key="pairID")

    correct = {pair_id: _snli_ve_label(predictions[pair_id], f"SNLI-VE predictions: prediction for {pair_id!r}")
               == label for pair_id, label in gold.items()}
    scores = {"accuracy": sum(correct.values()) / len(correct)}
    for label in SNLI_VE_LABELS:
        of_label = [correct[p] for p, g in gold.items() if g == label]
        if of_label:
            scores[f"accuracy_{label}"] = sum(of_label) / len(of_label)
    return scores


def snli_ve_image_id(record: Mapping[str, Any], where: str = "SNLI-VE record") -> str:
    """The Flickr30k image id of an SNLI-VE record, whichever key spelling it uses, without ``.jpg``."""
    for key in SNLI_VE_IMAGE_KEYS:
        if key in record:
            image_id = str(record[key])
            return image_id[: -len(".jpg")] if image_id.endswith(".jpg") else image_id
    raise DataError(f"{where}: no Flickr30k image id (expected one of {', '.join(SNLI_VE_IMAGE_KEYS)})")


def _nlvr2_sentence_key(identifier: str) -> str:
    parts = str(identifier).split("-")
    if len(parts) < 4:
        raise DataError(f"NLVR2 identifier {identifier!r} is not 'split-set_id-pair_id-sentence_id'")
    parts[2] = ""
    return "-".join(parts)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    # bool, numpy.bool_ or a 0/1 integer (a predicted class index); floats are not labels.
    if not isinstance(value, (str, float)):
        try:
            if value in (True, False):
                return bool(value)
        except (TypeError, ValueError, RuntimeError):  # arrays/tensors with several elements
            pass
    raise DataError(f"{where} is {value!r}, not True/False")


def _snli_ve_label(value: Any, where: str) -> str:
    label = value.strip().lower() if isinstance(value, str) else None
    if label not in SNLI_VE_LABELS:
        raise DataError(f"{where} is {value!r}, not one of {', '.join(SNLI_VE_LABELS)}")
    return label
