"""Caption metrics: conformance with the official COCO caption demo on the fixture (both entry points,
which must agree exactly), SPICE skipping, tokenizer alignment, and bad input.

Each fixture evaluation starts METEOR's JVM, whose paraphrase tables alone take ~16 s of CPU; each
runs once per module, and the second one (the official demo path) only with the slow tests. The first scores
two sets with one JVM, as an evaluation job does (`reuse_meteor`)."""

import json
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from optima.errors import DataError
from optima.eval import caption_scores, coco_caption_scores
from optima.eval import captions as captions_module
from optima.eval.captions import CAPTION_METRICS, JavaNotFoundError, SpiceSkippedWarning

# one pytest-xdist worker for the whole module, so that each METEOR fixture evaluation runs once
pytestmark = pytest.mark.xdist_group("metrics_captions")

FIXTURE = Path(__file__).parent / "data" / "coco_caption"
EXPECTED = json.loads((FIXTURE / "expected_scores.json").read_text())


def _fixture_dicts():
    gt = json.loads((FIXTURE / "captions_gt.json").read_text())
    references = {}
    for ann in gt["annotations"]:  # annotation-file order, as COCO.imgToAnns keeps it
        references.setdefault(ann["image_id"], []).append(ann["caption"])
    results = json.loads((FIXTURE / "fakecap_results.json").read_text())
    predictions = {r["image_id"]: r["caption"] for r in results}
    return gt, references, predictions


@pytest.fixture(scope="module")
def dict_scores():
    """The fixture's scores as an evaluation job computes them: its METEOR JVM has already scored another set
    (here the first 100 images), so the exact match with the official demo's fresh scorer below also shows that
    a reused METEOR gives a fresh one's scores."""
    _, references, predictions = _fixture_dicts()
    captions_module._spice_warned = False
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, captions_module.reuse_meteor():
        warnings.simplefilter("always")
        first = list(references)[:100]
        caption_scores({i: references[i] for i in first}, {i: predictions[i] for i in first}, spice="never")
        scores = caption_scores(references, predictions, spice="auto")
    print(f"caption_scores on the 1000-image fixture: {time.perf_counter() - start:.1f} s wall")
    return scores, [w for w in caught if issubclass(w.category, SpiceSkippedWarning)]


class _FailingSpice:
    """A SPICE whose jar crashes (as it does without its CoreNLP models or with too little memory)."""

    def __init__(self):
        pass

    def compute_score(self, gts, res):
        raise subprocess.CalledProcessError(1, ["java", "-jar", "spice-1.0.jar"])

    def method(self):
        return "SPICE"


@pytest.fixture(scope="module")
def demo_scores():
    gt, _, _ = _fixture_dicts()
    # An extra annotated image without a result: the demo scores only result images, so it must
    # change nothing (CIDEr's document frequencies would move if its references were counted).
    gt["images"].append({"id": 1, "file_name": "extra.jpg"})
    gt["annotations"].append({"id": 999999, "image_id": 1, "caption": "a dog sitting on a red sofa"})
    from pycocoevalcap import eval as coco_eval

    # SPICE looks installed but its jar fails: the other metrics must still come back, with a warning.
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch.setattr(captions_module, "_spice_warned", False)
        patch.setattr(captions_module, "spice_status", lambda: (True, "ready"))
        patch.setattr(coco_eval, "Spice", _FailingSpice)
        start = time.perf_counter()
        scores = coco_caption_scores(gt, FIXTURE / "fakecap_results.json", spice="auto")
        print(f"coco_caption_scores on the 1000-image fixture: {time.perf_counter() - start:.1f} s wall")
    return scores, [str(w.message) for w in caught if issubclass(w.category, SpiceSkippedWarning)]


def test_caption_scores_match_official_demo_to_3_decimals(dict_scores):
    scores, _ = dict_scores
    for name in CAPTION_METRICS:
        assert f"{scores[name]:.3f}" == f"{EXPECTED['upstream_printed_3dp'][name]:.3f}", name
        # Deterministic given the tokenizer and the bundled jars: the full-precision local run.
        assert scores[name] == pytest.approx(EXPECTED["reproduced_locally_full_precision"][name], rel=1e-9), name
    assert list(scores)[: len(CAPTION_METRICS)] == list(CAPTION_METRICS)
    assert all(type(v) is float for v in scores.values())


def test_spice_runs_or_is_skipped_with_one_warning(dict_scores):
    scores, spice_warnings = dict_scores
    ready, _ = captions_module.spice_status()
    if ready:
        assert f"{scores['SPICE']:.3f}" == f"{EXPECTED['upstream_printed_3dp']['SPICE']:.3f}"
    else:
        assert "SPICE" not in scores
        assert len(spice_warnings) == 1 and "CoreNLP" in str(spice_warnings[0].message)


@pytest.mark.slow  # a second METEOR JVM start (~16 s of CPU) on top of the conformance run
def test_official_demo_path_agrees_exactly(dict_scores, demo_scores):
    scores, _ = dict_scores
    demo, spice_warnings = demo_scores
    assert set(demo) == set(CAPTION_METRICS)
    assert {name: scores[name] for name in CAPTION_METRICS} == demo
    assert len(spice_warnings) == 1 and "the SPICE jar failed" in spice_warnings[0]


def test_reuse_meteor_starts_one_scorer_per_block_and_stops_it_at_the_end(monkeypatch):
    """Inside reuse_meteor() (an evaluation job) every call shares one METEOR scorer, nested blocks included, and
    it is stopped when the outer block ends; outside, each call starts and stops its own."""
    import gc

    import pycocoevalcap.meteor.meteor as meteor_module

    started, stopped = [], []

    class CountingMeteor:
        def __init__(self):
            started.append(id(self))

        def compute_score(self, gts, res):
            return 0.25, [0.25] * len(gts)

        def __del__(self):
            stopped.append(id(self))

    monkeypatch.setattr(meteor_module, "Meteor", CountingMeteor)
    gts, res = {1: ["a cat"]}, {1: ["a cat"]}
    with captions_module.reuse_meteor():
        assert captions_module._meteor_score(gts, res) == 0.25
        with captions_module.reuse_meteor():
            assert captions_module._meteor_score(gts, res) == 0.25
        assert captions_module._meteor_score(gts, res) == 0.25
        assert len(started) == 1 and stopped == []
    gc.collect()
    assert stopped == started
    captions_module._meteor_score(gts, res)
    captions_module._meteor_score(gts, res)
    gc.collect()
    assert len(started) == 3 and len(stopped) == 3


def test_failing_spice_jar_is_skipped_with_a_warning(monkeypatch):
    import pycocoevalcap.spice.spice as spice_module

    monkeypatch.setattr(captions_module, "_spice_warned", False)
    monkeypatch.setattr(spice_module, "Spice", _FailingSpice)
    with pytest.warns(SpiceSkippedWarning, match="the SPICE jar failed"):
        assert captions_module._run_spice({1: ["a cat"]}, {1: ["a cat"]}) is None


def test_spice_warning_is_issued_once_and_never_mode_is_silent(monkeypatch):
    monkeypatch.setattr(captions_module, "_spice_warned", False)
    monkeypatch.setattr(captions_module, "spice_status", lambda: (False, "no CoreNLP here"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert captions_module._spice_can_run("never") is False
        assert not caught
        assert captions_module._spice_can_run("auto") is False
        assert captions_module._spice_can_run("auto") is False
    assert [str(w.message).split(":")[1].strip() for w in caught] == ["no CoreNLP here. Pass spice='never' to silence this."]


def test_tokenizer_keeps_captions_aligned_with_their_images():
    tokenized = captions_module._tokenize({
        1: ["A dog.", ""],
        2: ["", "line\rbreak", "para\u2028graph", "  Two   CATS!  "],
        3: ["..."],
    })
    assert tokenized == {1: ["a dog", ""], 2: ["", "line break", "para graph", "two cats"], 3: [""]}


@pytest.mark.parametrize("references, predictions, message", [
    ({1: ["a cat"]}, {1: "a cat", 2: "a dog"}, "not in the ground truth: 2"),
    ({1: ["a cat"], 2: ["a dog"], 3: ["a cow"]}, {1: "a cat"}, "no prediction for 2 image id.*2, 3"),
    ({}, {}, "ground truth is empty"),
    ({1: ["a cat"]}, {}, "no predictions"),
    ({1: []}, {1: "a cat"}, "image id 1 needs at least one reference"),
    ({1: "a cat"}, {1: "a cat"}, "image id 1 needs a list of captions"),
    ({1: ["a cat"]}, {1: ["a cat"]}, "one string per image.*1"),
    ([("a cat",)], {1: "a cat"}, "dicts keyed by image id"),
])
def test_caption_bad_input_names_the_culprit(references, predictions, message):
    with pytest.raises(DataError, match=message):
        caption_scores(references, predictions, spice="never")


def test_unknown_spice_mode():
    with pytest.raises(DataError, match="spice='always'"):
        caption_scores({1: ["a cat"]}, {1: "a cat"}, spice="always")


def test_demo_path_bad_input_names_the_culprit(tmp_path):
    annotation_file = FIXTURE / "captions_gt.json"
    results = json.loads((FIXTURE / "fakecap_results.json").read_text())[:3]
    with pytest.raises(DataError, match="no reference caption in the annotation file: 123"):
        coco_caption_scores(annotation_file, results + [{"image_id": 123, "caption": "x"}])
    with pytest.raises(DataError, match=f"more than one caption for image id.*{results[0]['image_id']}"):
        coco_caption_scores(annotation_file, results + results[:1])
    with pytest.raises(DataError, match="record 1 is not"):
        coco_caption_scores(annotation_file, [results[0], {"image_id": 1}])
    with pytest.raises(DataError, match="non-empty list"):
        coco_caption_scores(annotation_file, [])
    with pytest.raises(DataError, match="annotation file not found"):
        coco_caption_scores(tmp_path / "absent.json", results)
    broken = tmp_path / "results.json"
    broken.write_text("[{")
    with pytest.raises(DataError, match="results.json: cannot read"):
        coco_caption_scores(annotation_file, broken)


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `java` anywhere
    with pytest.raises(JavaNotFoundError, match="caption metrics need Java"):
        caption_scores({1: ["a cat"]}, {1: "a cat"}, spice="never")
    results = json.loads((FIXTURE / "fakecap_results.json").read_text())[:2]
    with pytest.raises(JavaNotFoundError, match="install a Java runtime"):
        coco_caption_scores(FIXTURE / "captions_gt.json", results, spice="never")
