"""NLVR2 accuracy/consistency (the official script's numbers on the fixture) and SNLI-VE accuracy."""

import json
from pathlib import Path

import pytest

from optima.errors import DataError
from optima.eval import nlvr2_scores, read_nlvr2_predictions, snli_ve_scores
from optima.eval.classification import snli_ve_image_id, write_nlvr2_predictions

FIXTURES = Path(__file__).parent / "data"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def nlvr2_examples():
    return _jsonl(FIXTURES / "nlvr2" / "dev_sample.jsonl")


@pytest.fixture(scope="module")
def snli_ve_examples():
    return _jsonl(FIXTURES / "snli_ve" / "dev_sample.jsonl")


def test_nlvr2_all_true_matches_official_script(nlvr2_examples):
    predictions = read_nlvr2_predictions(FIXTURES / "nlvr2" / "predictions_all_true.csv")
    assert len(predictions) == 200
    assert nlvr2_scores(nlvr2_examples, predictions) == {"accuracy": 0.505, "consistency": 1 / 58}
    # Booleans are the same predictions.
    as_bools = {identifier: True for identifier in predictions}
    assert nlvr2_scores(nlvr2_examples, as_bools) == {"accuracy": 0.505, "consistency": 1 / 58}


def test_nlvr2_perfect_and_inverted(nlvr2_examples):
    truth = {e["identifier"]: e["label"] for e in nlvr2_examples}
    assert nlvr2_scores(nlvr2_examples, truth) == {"accuracy": 1.0, "consistency": 1.0}
    inverted = {i: "true" if label == "False" else "FALSE" for i, label in truth.items()}  # any case, as upstream
    assert nlvr2_scores(nlvr2_examples, inverted) == {"accuracy": 0.0, "consistency": 0.0}


def test_nlvr2_consistency_groups_by_sentence_across_image_pairs():
    examples = [
        {"identifier": "dev-1-0-0", "label": "True"},   # sentence dev-1--0, pair 0
        {"identifier": "dev-1-1-0", "label": "False"},  # sentence dev-1--0, pair 1
        {"identifier": "dev-1-0-1", "label": "True"},   # sentence dev-1--1
        {"identifier": "dev-2-3-0", "label": "False"},  # sentence dev-2--0
    ]
    predictions = {"dev-1-0-0": True, "dev-1-1-0": True, "dev-1-0-1": True, "dev-2-3-0": False}
    assert nlvr2_scores(examples, predictions) == {"accuracy": 0.75, "consistency": 2 / 3}


def test_nlvr2_predictions_csv_round_trip(tmp_path, nlvr2_examples):
    predictions = {e["identifier"]: i % 3 == 0 for i, e in enumerate(nlvr2_examples)}
    path = tmp_path / "predictions.csv"
    write_nlvr2_predictions(path, predictions)
    assert path.read_text().splitlines()[0] == "dev-850-0-0,True"
    loaded = read_nlvr2_predictions(path)
    assert nlvr2_scores(nlvr2_examples, loaded) == nlvr2_scores(nlvr2_examples, predictions)


def test_nlvr2_bad_input_names_the_culprit(tmp_path, nlvr2_examples):
    truth = {e["identifier"]: e["label"] for e in nlvr2_examples}
    with pytest.raises(DataError, match="not in the ground truth: 'dev-9999-0-0'"):
        nlvr2_scores(nlvr2_examples, {**truth, "dev-9999-0-0": "True"})
    with pytest.raises(DataError, match="no prediction for 1 identifier.*'dev-850-0-0'"):
        nlvr2_scores(nlvr2_examples, {i: p for i, p in truth.items() if i != "dev-850-0-0"})
    with pytest.raises(DataError, match="prediction for 'dev-850-0-0' is 'maybe'"):
        nlvr2_scores(nlvr2_examples, {**truth, "dev-850-0-0": "maybe"})
    with pytest.raises(DataError, match="ground truth is empty"):
        nlvr2_scores([], {})
    with pytest.raises(DataError, match="appears twice"):
        nlvr2_scores(nlvr2_examples + nlvr2_examples[:1], truth)
    with pytest.raises(DataError, match="'dev-1'"):
        nlvr2_scores([{"identifier": "dev-1", "label": "True"}], {"dev-1": True})
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("dev-850-0-0,True\n\ndev-850-2-0;False\n")
    with pytest.raises(DataError, match=r"bad.csv:3: expected 'identifier,True\|False'"):
        read_nlvr2_predictions(bad_csv)
    with pytest.raises(DataError, match="cannot read"):
        read_nlvr2_predictions(tmp_path / "absent.csv")


def test_snli_ve_accuracy_overall_and_per_class(snli_ve_examples):
    gold = {e["pairID"]: e["gold_label"] for e in snli_ve_examples}
    assert snli_ve_scores(snli_ve_examples, gold) == {
        "accuracy": 1.0, "accuracy_entailment": 1.0, "accuracy_neutral": 1.0, "accuracy_contradiction": 1.0}
    # The fixture holds 6 entailment / 6 neutral / 4 contradiction pairs.
    all_entailment = {pair_id: "Entailment" for pair_id in gold}
    assert snli_ve_scores(snli_ve_examples, all_entailment) == {
        "accuracy": 6 / 16, "accuracy_entailment": 1.0, "accuracy_neutral": 0.0, "accuracy_contradiction": 0.0}


def test_snli_ve_accepts_every_image_key_spelling(snli_ve_examples):
    record = snli_ve_examples[0]
    assert snli_ve_image_id(record) == "2248275918"
    for key, value in [("Flikr30kID", "2248275918.jpg"), ("Flickr30kID", "2248275918")]:
        renamed = {k: v for k, v in record.items() if k != "Flickr30K_ID"} | {key: value}
        assert snli_ve_image_id(renamed) == "2248275918"
        assert snli_ve_scores([renamed], {record["pairID"]: "contradiction"})["accuracy"] == 1.0


def test_snli_ve_missing_class_has_no_key(snli_ve_examples):
    entailment_only = [e for e in snli_ve_examples if e["gold_label"] == "entailment"]
    scores = snli_ve_scores(entailment_only, {e["pairID"]: "neutral" for e in entailment_only})
    assert scores == {"accuracy": 0.0, "accuracy_entailment": 0.0}


def test_snli_ve_bad_input_names_the_culprit(snli_ve_examples):
    gold = {e["pairID"]: e["gold_label"] for e in snli_ve_examples}
    with pytest.raises(DataError, match="not in the ground truth: 'nope#1r1e'"):
        snli_ve_scores(snli_ve_examples, {**gold, "nope#1r1e": "neutral"})
    with pytest.raises(DataError, match="no prediction for 1 pairID.*'2248275918.jpg#2r1c'"):
        snli_ve_scores(snli_ve_examples, {p: g for p, g in gold.items() if p != "2248275918.jpg#2r1c"})
    with pytest.raises(DataError, match="prediction for '2248275918.jpg#2r1c' is 2"):
        snli_ve_scores(snli_ve_examples, {**gold, "2248275918.jpg#2r1c": 2})
    no_image = [{k: v for k, v in snli_ve_examples[0].items() if k != "Flickr30K_ID"}]
    with pytest.raises(DataError, match="no Flickr30k image id"):
        snli_ve_scores(no_image, {no_image[0]["pairID"]: "neutral"})
    unlabelled = [dict(snli_ve_examples[0], gold_label="-")]
    with pytest.raises(DataError, match="gold_label of '2248275918.jpg#2r1c' is '-'"):
        snli_ve_scores(unlabelled, {"2248275918.jpg#2r1c": "neutral"})
    with pytest.raises(DataError, match="there are no predictions"):
        snli_ve_scores(snli_ve_examples, {})
