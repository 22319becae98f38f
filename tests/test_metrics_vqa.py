"""VQA accuracy: the fixture's numbers from the official evaluator (current and pre-2021 processing),
hand-computed cases, and bad input."""

import copy
import json
from pathlib import Path

import pytest

from optima.errors import DataError
from optima.eval import normalize_answer, vqa_scores
from optima.eval.vqa import question_accuracy, vqa_question_accuracies, vqa_question_type_scores

FIXTURE = Path(__file__).parent / "data" / "vqa"
VERSIONS = {
    "official": "official_HEAD_a013f0043c1e2cdc995922dfe257f7149aa9af06",
    "legacy": "official_pre_fix_a4f1afd59cfda2f1a7f7f720f40bfea2e338c6ad",
}


def _load(name):
    return json.loads((FIXTURE / name).read_text())


@pytest.fixture(scope="module")
def annotations():
    return _load("v2_mscoco_train2014_annotations.sample5.json")


@pytest.fixture(scope="module")
def questions():
    return _load("v2_OpenEnded_mscoco_train2014_questions.sample5.json")


@pytest.mark.parametrize("processing", ["official", "legacy"])
@pytest.mark.parametrize("predictions", ["predictions_clean", "predictions_tricky"])
def test_fixture_matches_official_evaluator(annotations, questions, processing, predictions):
    expected = _load("expected_accuracy_local.json")[VERSIONS[processing]][predictions]
    results = _load(f"{predictions}.json")
    scores = vqa_scores(annotations, questions, results, processing=processing)
    assert scores == {"overall": expected["accuracy"]["overall"], **expected["accuracy"]["perAnswerType"]}
    per_question = vqa_question_accuracies(annotations, questions, results, processing=processing)
    assert {str(qid): acc for qid, acc in per_question.items()} == expected["evalQA"]


@pytest.mark.parametrize("processing", ["official", "legacy"])
@pytest.mark.parametrize("predictions", ["predictions_clean", "predictions_tricky"])
def test_question_type_scores_match_official_evaluator(annotations, questions, processing, predictions):
    expected = _load("expected_accuracy_local.json")[VERSIONS[processing]][predictions]["accuracy"]["perQuestionType"]
    assert vqa_question_type_scores(annotations, questions, _load(f"{predictions}.json"), processing) == expected

def test_fixture_headline_numbers(annotations, questions):
    tricky = _load("predictions_tricky.json")
    assert vqa_scores(annotations, questions, tricky)["overall"] == 46.0  # default is the current evaluator
    assert vqa_scores(annotations, questions, tricky, processing="legacy")["overall"] == 86.0


@pytest.mark.parametrize("matching, expected", [(0, 0.0), (1, 30.0), (2, 60.0), (3, 90.0), (4, 100.0), (10, 100.0)])
def test_leave_one_out_accuracy_by_number_of_matching_humans(matching, expected):
    # k of 10 humans match: leaving a matching human out gives min((k-1)/3, 1), another min(k/3, 1).
    humans = ["cat"] * matching + ["dog", "bird", "cow", "fox", "owl", "pig", "elk", "ant", "bee", "emu"][: 10 - matching]
    for processing in ("official", "legacy"):
        assert round(100 * question_accuracy("cat", humans, processing), 2) == expected


def test_processing_variants_differ_where_documented():
    # Unanimous humans: the current evaluator compares verbatim, the legacy one normalises the prediction.
    assert question_accuracy("two", ["2"] * 10, "official") == 0.0
    assert question_accuracy("two", ["2"] * 10, "legacy") == 1.0
    assert question_accuracy("White", ["white"] * 10, "official") == 0.0
    assert question_accuracy("White", ["white"] * 10, "legacy") == 1.0
    # Disagreeing humans: both normalise the prediction; only the current one maps GT number words.
    mixed = ["two"] * 2 + ["2"] * 8
    assert question_accuracy("Two.", mixed, "official") == 1.0
    assert round(question_accuracy("Two.", mixed, "legacy"), 12) == 1.0  # 8 of the "2" still match
    assert question_accuracy("two", ["two"] * 9 + ["2"], "legacy") == pytest.approx(0.3)
    assert question_accuracy("two", ["two"] * 9 + ["2"], "official") == 1.0
    # Whitespace is always stripped.
    assert question_accuracy(" white\n", ["white"] * 10, "official") == 1.0


@pytest.mark.parametrize("raw, normalised", [
    ("Two dogs.", "2 dogs"),
    ("The red one", "red 1"),
    ("dont", "don't"),
    ("1,000", "1000"),
    ("t-shirt", "t shirt"),
    ("What's up?", "what's up"),
    ("3.5", "3.5"),
    ("  yes\t", "yes"),
    ("an apple", "apple"),
    ("." * 40, "." * 8),  # upstream passes re.UNICODE (32) as the count of periods to strip
])
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def _synthetic(answers_by_type):
    annotations = {"annotations": []}
    questions = {"questions": []}
    for qid, (answer_type, humans) in enumerate(answers_by_type, start=1):
        annotations["annotations"].append({
            "question_id": qid, "image_id": 7, "question_type": "what", "answer_type": answer_type,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(humans)],
        })
        questions["questions"].append({"question_id": qid, "image_id": 7, "question": "?"})
    return annotations, questions


def test_rounding_and_answer_types_like_the_official_evaluator():
    annotations, questions = _synthetic([("other", ["a"] * 10), ("other", ["b"] * 10), ("number", ["3"] * 10)])
    predictions = [{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "x"},
                   {"question_id": 3, "answer": "4"}]
    assert vqa_scores(annotations, questions, predictions) == {"overall": 33.33, "other": 50.0, "number": 0.0}
    # A mapping question_id -> answer is the same thing.
    assert vqa_scores(annotations, questions, {1: "a", 2: "x", 3: "4"}) == {"overall": 33.33, "other": 50.0, "number": 0.0}


def test_inputs_are_not_modified(annotations, questions):
    before = copy.deepcopy(annotations)
    results = _load("predictions_tricky.json")
    results_before = copy.deepcopy(results)
    vqa_scores(annotations, questions, results)
    assert annotations == before and results == results_before


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.append({"question_id": 999, "answer": "x"}), "not in the ground truth: 999"),
    (lambda p: p.pop(), "no prediction for 1 question_id"),
    (lambda p: p.extend({"question_id": q, "answer": "x"} for q in (10, 9, 11)), r"3 prediction\(s\).*: 9, 10, 11$"),
    (lambda p: p.append(dict(p[0])), "predicted twice"),
    (lambda p: p.clear(), "no predictions"),
    (lambda p: p.__setitem__(0, {"question_id": 458752000}), "entry 0"),
    (lambda p: p.__setitem__(0, {"question_id": 458752000, "answer": 3}), "not a string"),
    (lambda p: p.__setitem__(0, {"question_id": "458752000", "answer": "net"}), "these are strings"),
])
def test_bad_predictions_name_the_culprit(annotations, questions, mutate, message):
    predictions = _load("predictions_clean.json")
    mutate(predictions)
    with pytest.raises(DataError, match=message):
        vqa_scores(annotations, questions, predictions)


def test_missing_prediction_names_the_question(annotations, questions):
    predictions = [p for p in _load("predictions_clean.json") if p["question_id"] != 262146000]
    with pytest.raises(DataError, match="262146000"):
        vqa_scores(annotations, questions, predictions)


def test_bad_ground_truth_is_reported(annotations, questions):
    predictions = _load("predictions_clean.json")
    with pytest.raises(DataError, match="annotation JSON"):
        vqa_scores(annotations["annotations"], questions, predictions)
    with pytest.raises(DataError, match="question JSON"):
        vqa_scores(annotations, questions["questions"], predictions)
    fewer_questions = dict(questions, questions=questions["questions"][:-1])
    with pytest.raises(DataError, match="annotation.s. without question: 262146000"):
        vqa_scores(annotations, fewer_questions, predictions)
    with pytest.raises(DataError, match="annotations' list is empty"):
        vqa_scores(dict(annotations, annotations=[]), dict(questions, questions=[]), predictions)
    no_answers = copy.deepcopy(annotations)
    no_answers["annotations"][1]["answers"] = []
    with pytest.raises(DataError, match="458752001"):
        vqa_scores(no_answers, questions, predictions)
    with pytest.raises(DataError, match="processing 'lavis'"):
        vqa_scores(annotations, questions, predictions, processing="lavis")
