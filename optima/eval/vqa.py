"""VQA v2 accuracy, reproducing the official evaluator (GT-Vision-Lab/VQA) answer by answer.

Two answer-processing variants exist in the wild, and they give different numbers:

* ``"official"``: GT-Vision-Lab/VQA HEAD a013f004 (2021-03, "Fixed processing answers bug").
  Both the prediction and the ten human answers are normalised (punctuation, digits, articles,
  contractions) only when the humans disagree (more than one distinct answer); otherwise the
  prediction must equal the (whitespace-stripped) human answer verbatim.
* ``"legacy"``: the evaluator before that commit, as copied into salesforce/LAVIS and used by most
  papers until 2021: the prediction is always fully normalised, the human answers get
  punctuation-only processing when they disagree.

The accuracy of one question is min(#humans that gave the answer / 3, 1) averaged over the ten
leave-one-human-out subsets; results are percentages rounded to 2 decimals like the official code.
The official evaluator requires a prediction for every question, so a missing prediction is an
error here too (as is a prediction for a question that is not in the annotations).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from optima.data.answers import clean_whitespace, normalize_answer, process_digit_article, process_punctuation
from optima.errors import DataError
from optima.eval._checks import check_same_ids, format_ids

PROCESSINGS = ("official", "legacy")

def question_accuracy(prediction: str, human_answers: list[str], processing: str = "official") -> float:
    """Accuracy of one predicted answer against the (ten) human answers, as a fraction in [0, 1]."""
    _check_processing(processing)
    if processing == "official":
        humans = [clean_whitespace(a) for a in human_answers]
        predicted = clean_whitespace(prediction)
        if len(set(humans)) > 1:
            humans = [process_digit_article(process_punctuation(a)) for a in humans]
            predicted = process_digit_article(process_punctuation(predicted))
    else:
        predicted = normalize_answer(prediction)
        humans = list(human_answers)
        if len(set(humans)) > 1:
            humans = [process_punctuation(a) for a in humans]
    matches = [h == predicted for h in humans]
    total = sum(matches)
    # Leave each human out in turn; upstream does it by dict inequality, which is the same thing
    # because every official answer record carries its own answer_id.
    per_subset = [min(1.0, float(total - left_out) / 3) for left_out in matches]
    return float(sum(per_subset)) / len(per_subset)


def vqa_question_accuracies(
    annotations: Mapping[str, Any],
    questions: Mapping[str, Any],
    predictions: Iterable[Mapping[str, Any]] | Mapping[Any, str],
    processing: str = "official",
) -> dict[Any, float]:
    """Per-question accuracy in percent, rounded to 2 decimals (the official ``evalQA``)."""
    return {qid: round(100 * acc, 2) for qid, (acc, _) in _evaluate(annotations, questions, predictions, processing).items()}


def vqa_question_type_scores(
    annotations: Mapping[str, Any],
    questions: Mapping[str, Any],
    predictions: Iterable[Mapping[str, Any]] | Mapping[Any, str],
    processing: str = "official",
) -> dict[str, float]:
    """VQA accuracy in percent per ``question_type`` of the annotations (the official evaluator's
    ``perQuestionType``), rounded to 2 decimals. Not part of the pipeline's metrics: it tells which kind of
    question separates two models (README: "What splits the VQA teachers")."""
    per_question = vqa_question_accuracies(annotations, questions, predictions, processing)
    records = _annotation_records(annotations)
    by_type: dict[str, list[float]] = {}
    for qid, acc in per_question.items():  # already percent with 2 decimals, as evalQA stores them
        by_type.setdefault(records[qid]["question_type"], []).append(acc)
    return {question_type: round(float(sum(accs)) / len(accs), 2) for question_type, accs in by_type.items()}


def vqa_scores(
    annotations: Mapping[str, Any],
    questions: Mapping[str, Any],
    predictions: Iterable[Mapping[str, Any]] | Mapping[Any, str],
    processing: str = "official",
) -> dict[str, float]:
    """VQA accuracy in percent: ``overall`` plus one key per answer type (``yes/no``, ``number``,
    ``other`` in VQA v2), each rounded to 2 decimals like the official evaluator.

    ``annotations`` and ``questions`` are the loaded official JSON files
    (``v2_mscoco_*_annotations.json``, ``v2_OpenEnded_mscoco_*_questions.json``); ``predictions`` is
    the official results list ``[{"question_id": ..., "answer": ...}]`` (a mapping question_id ->
    answer is accepted too). Every annotated question needs exactly one prediction.
    """
    per_question = _evaluate(annotations, questions, predictions, processing)
    accuracies = [acc for acc, _ in per_question.values()]
    scores = {"overall": round(100 * float(sum(accuracies)) / len(accuracies), 2)}
    by_type: dict[str, list[float]] = {}
    for acc, answer_type in per_question.values():
        by_type.setdefault(answer_type, []).append(acc)
    for answer_type, accs in by_type.items():
        if answer_type == "overall":
            raise DataError("VQA annotations: answer_type 'overall' would collide with the overall score key")
        scores[answer_type] = round(100 * float(sum(accs)) / len(accs), 2)
    return scores


def _check_processing(processing: str) -> None:
    if processing not in PROCESSINGS:
        raise DataError(f"VQA answer processing {processing!r} is not one of {', '.join(PROCESSINGS)}")


def _evaluate(annotations, questions, predictions, processing) -> dict[Any, tuple[float, str]]:
    """question_id -> (accuracy fraction, answer type), in annotation-file order (the official
    evaluator sums in that order, which can matter for the last rounded digit)."""
    _check_processing(processing)
    records = _annotation_records(annotations)
    _check_questions_match(records, questions)
    answers = _prediction_map(predictions)
    check_same_ids(records, answers, what="VQA predictions", truth_key="question_id",
                   unknown_hint=_string_id_hint(answers, records))
    return {
        qid: (question_accuracy(answers[qid], [a["answer"] for a in ann["answers"]], processing),
              ann["answer_type"])
        for qid, ann in records.items()
    }


def _annotation_records(annotations) -> dict[Any, Mapping[str, Any]]:
    if not isinstance(annotations, Mapping) or not isinstance(annotations.get("annotations"), list):
        raise DataError("VQA annotations: expected the loaded official annotation JSON "
                        "(a dict with an 'annotations' list)")
    records: dict[Any, Mapping[str, Any]] = {}
    for index, ann in enumerate(annotations["annotations"]):
        if not isinstance(ann, Mapping) or "question_id" not in ann:
            raise DataError(f"VQA annotations: record {index} has no question_id")
        qid = ann["question_id"]
        for key in ("answers", "answer_type"):
            if key not in ann:
                raise DataError(f"VQA annotations: question_id {qid!r} has no {key!r}")
        if not ann["answers"] or not all(isinstance(a, Mapping) and isinstance(a.get("answer"), str)
                                         for a in ann["answers"]):
            raise DataError(f"VQA annotations: question_id {qid!r} needs a non-empty 'answers' list "
                            "of {'answer': str, ...} records")
        if qid in records:
            raise DataError(f"VQA annotations: question_id {qid!r} appears twice")
        records[qid] = ann
    if not records:
        raise DataError("VQA annotations: the 'annotations' list is empty")
    return records


def _check_questions_match(records: Mapping[Any, Any], questions) -> None:
    if not isinstance(questions, Mapping) or not isinstance(questions.get("questions"), list):
        raise DataError("VQA questions: expected the loaded official question JSON "
                        "(a dict with a 'questions' list)")
    question_ids = set()
    for index, q in enumerate(questions["questions"]):
        if not isinstance(q, Mapping) or "question_id" not in q:
            raise DataError(f"VQA questions: record {index} has no question_id")
        question_ids.add(q["question_id"])
    unannotated = question_ids - set(records)
    unasked = set(records) - question_ids
    if unannotated or unasked:
        parts = []
        if unannotated:
            parts.append(f"{len(unannotated)} question(s) without annotation: {format_ids(unannotated)}")
        if unasked:
            parts.append(f"{len(unasked)} annotation(s) without question: {format_ids(unasked)}")
        raise DataError("VQA questions and annotations are not the same split: " + "; ".join(parts))


def _prediction_map(predictions) -> dict[Any, str]:
    if isinstance(predictions, Mapping):
        items = list(predictions.items())
    elif isinstance(predictions, (str, bytes)) or not isinstance(predictions, Iterable):
        raise DataError("VQA predictions: expected the official results list "
                        "[{'question_id': ..., 'answer': ...}] or a mapping question_id -> answer")
    else:
        items = []
        for index, entry in enumerate(predictions):
            if not isinstance(entry, Mapping) or "question_id" not in entry or "answer" not in entry:
                raise DataError(f"VQA predictions: entry {index} is not a "
                                "{'question_id': ..., 'answer': ...} record")
            items.append((entry["question_id"], entry["answer"]))
    answers: dict[Any, str] = {}
    for qid, answer in items:
        if not isinstance(answer, str):
            raise DataError(f"VQA predictions: the answer for question_id {qid!r} is "
                            f"{type(answer).__name__}, not a string")
        if qid in answers:
            raise DataError(f"VQA predictions: question_id {qid!r} is predicted twice")
        answers[qid] = answer
    return answers


def _string_id_hint(answers: Mapping[Any, str], records: Mapping[Any, Any]) -> str:
    truth_as_text = {str(qid) for qid in records}
    if any(isinstance(qid, str) and qid in truth_as_text for qid in answers if qid not in records):
        return " (question ids are compared with their type: these are strings, the annotations use integers)"
    return ""
